//! The benchmark's pod: what a Deployment's pod typically looks like (two containers with
//! env, ports, resources and a probe; labels; annotations): about 1.5 KB of JSON as submitted,
//! about 2.5 KB once the API server has added its defaults.

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Value};

/// Namespace every benchmark pod lives in.
pub const NAMESPACE: &str = "default";

/// Name of pod number `i`.
pub fn name(i: usize) -> String {
    format!("bench-{i:05}")
}

/// The pod as a client would submit it.
pub fn pod_json(i: usize) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name(i),
            "namespace": NAMESPACE,
            "labels": {
                "app": "web",
                "tier": "frontend",
                "release": "stable",
                "pod-template-hash": "5d8f7c9b6d",
                "bench-shard": (i % 16).to_string(),
            },
            "annotations": {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": "9090",
                "deployment.kubernetes.io/revision": "7",
            },
        },
        "spec": {
            "containers": [
                {
                    "name": "web",
                    "image": "registry.example.com/team/web:1.27.3",
                    "args": ["--listen=:8080", "--metrics-listen=:9090", "--log-level=info"],
                    "ports": [
                        {"name": "http", "containerPort": 8080, "protocol": "TCP"},
                        {"name": "metrics", "containerPort": 9090, "protocol": "TCP"},
                    ],
                    "env": [
                        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                        {"name": "LOG_FORMAT", "value": "json"},
                        {"name": "CACHE_SIZE_MB", "value": "256"},
                    ],
                    "resources": {
                        "requests": {"cpu": "250m", "memory": "256Mi"},
                        "limits": {"cpu": "1", "memory": "512Mi"},
                    },
                    "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 5},
                },
                {
                    "name": "log-shipper",
                    "image": "registry.example.com/infra/log-shipper:2.4.0",
                    "args": ["--output=tcp://logs.example.com:5140"],
                    "ports": [{"name": "admin", "containerPort": 9901, "protocol": "TCP"}],
                    "env": [
                        {"name": "SHIPPER_BUFFER", "value": "8MiB"},
                        {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                    ],
                    "resources": {
                        "requests": {"cpu": "50m", "memory": "64Mi"},
                        "limits": {"cpu": "200m", "memory": "128Mi"},
                    },
                },
            ],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
        },
    })
}

/// The pod as a typed object, for `kube::Api<Pod>`.
pub fn pod(i: usize) -> Result<Pod> {
    serde_json::from_value(pod_json(i)).context("the benchmark pod fixture is not a valid Pod")
}
