//! Shared helpers for the scheduler's integration tests: a cluster (etcd + API server) with a
//! scheduler running in-process, and short-hands for nodes and pods.
//!
//! Checks in one cluster stay independent by giving every check its own group of nodes
//! (label `group`) and a `nodeSelector` on that label in every pod.

#![allow(dead_code)] // each test binary uses a different subset

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ferry_scheduler::metrics::Metrics;
use ferry_scheduler::{Config, Scheduler};
use ferry_testkit::Cluster;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{json, Value};
use tokio::task::JoinHandle;

/// Merges `b` into `a` (objects recursively; anything else replaces).
pub fn merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

/// A container with requests (empty strings are left out).
pub fn container(cpu: &str, memory: &str) -> Value {
    let mut requests = serde_json::Map::new();
    if !cpu.is_empty() {
        requests.insert("cpu".into(), json!(cpu));
    }
    if !memory.is_empty() {
        requests.insert("memory".into(), json!(memory));
    }
    json!({"name": "c", "image": "busybox", "resources": {"requests": requests}})
}

/// An init container named `init` requesting `cpu`.
pub fn init_container(cpu: &str) -> Value {
    json!({"name": "init", "image": "busybox", "resources": {"requests": {"cpu": cpu}}})
}

/// `spec.affinity.nodeAffinity` requiring the node named `node` (as DaemonSets do).
pub fn on_node(node: &str) -> Value {
    json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]
    }}}}})
}

/// A test environment: the cluster, clients, and the scheduler task.
pub struct Env {
    pub cluster: Cluster,
    pub client: kube::Client,
    pub pods: Api<Pod>,
    pub nodes: Api<Node>,
    pub scheduler: Option<JoinHandle<Result<(), ferry_scheduler::Error>>>,
}

/// A scheduler configuration with short timers for tests.
pub fn test_config() -> Config {
    Config {
        backoff: ferry_scheduler::queue::BackoffConfig {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(500),
        },
        ..Config::default()
    }
}

impl Env {
    /// Starts etcd and the API server (no scheduler yet).
    pub async fn start() -> Result<Env> {
        let cluster = Cluster::start().await?;
        let client = cluster.client().await?;
        Ok(Env {
            pods: Api::namespaced(client.clone(), "default"),
            nodes: Api::all(client.clone()),
            client,
            cluster,
            scheduler: None,
        })
    }

    /// Starts (or restarts) the scheduler in-process.
    pub fn start_scheduler(&mut self, config: Config) {
        if let Some(old) = self.scheduler.take() {
            old.abort();
        }
        let scheduler = Scheduler::new(self.client.clone(), config, Arc::new(Metrics::new()));
        self.scheduler = Some(tokio::spawn(scheduler.run()));
    }

    /// Creates a node in `group` with `cpu`, `memory` and 110 pods, plus `extra` merged in.
    pub async fn node(&self, name: &str, group: &str, cpu: &str, memory: &str, extra: Value) -> Result<()> {
        let mut n = json!({
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "group": group}},
            "status": {"allocatable": {"cpu": cpu, "memory": memory, "pods": "110", "ephemeral-storage": "100Gi"},
                       "capacity": {"cpu": cpu, "memory": memory, "pods": "110", "ephemeral-storage": "100Gi"}}
        });
        merge(&mut n, extra);
        let n: Node = serde_json::from_value(n)?;
        self.nodes.create(&PostParams::default(), &n).await.with_context(|| format!("creating node {name}"))?;
        Ok(())
    }

    /// Creates a pod restricted to `group` (a nodeSelector), with `extra` merged in.
    pub async fn pod(&self, name: &str, group: &str, extra: Value) -> Result<()> {
        let mut p = json!({
            "metadata": {"name": name},
            "spec": {"containers": [container("", "")], "nodeSelector": {"group": group}}
        });
        merge(&mut p, extra);
        let p: Pod = serde_json::from_value(p)?;
        self.pods.create(&PostParams::default(), &p).await.with_context(|| format!("creating pod {name}"))?;
        Ok(())
    }

    /// Waits until the pod is bound; returns its node.
    pub async fn bound(&self, name: &str) -> Result<String> {
        for _ in 0..300 {
            let p = self.pods.get(name).await?;
            if let Some(n) = p.spec.and_then(|s| s.node_name).filter(|n| !n.is_empty()) {
                return Ok(n);
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        bail!("pod {name} was not bound")
    }

    /// Creates a pod and waits for its node.
    pub async fn place(&self, name: &str, group: &str, extra: Value) -> Result<String> {
        self.pod(name, group, extra).await?;
        self.bound(name).await
    }

    /// Waits for `PodScheduled=False/Unschedulable`; returns the message.
    pub async fn unschedulable(&self, name: &str) -> Result<String> {
        for _ in 0..300 {
            let p = self.pods.get(name).await?;
            if p.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some_and(|n| !n.is_empty()) {
                bail!("pod {name} was bound, expected unschedulable");
            }
            let cond =
                p.status.and_then(|s| s.conditions).and_then(|cs| cs.into_iter().find(|c| c.type_ == "PodScheduled"));
            if let Some(c) = cond.filter(|c| c.reason.as_deref() == Some("Unschedulable")) {
                return c.message.context("Unschedulable without message");
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        bail!("pod {name} never became Unschedulable")
    }

    /// Creates a pod and expects it unschedulable with a message containing every part.
    pub async fn refused(&self, name: &str, group: &str, extra: Value, parts: &[&str]) -> Result<String> {
        self.pod(name, group, extra).await?;
        let message = self.unschedulable(name).await?;
        for part in parts {
            if !message.contains(part) {
                bail!("pod {name}: message {message:?} lacks {part:?}");
            }
        }
        Ok(message)
    }

    /// Deletes a pod at once (as a nodelet does once its containers are gone).
    pub async fn delete_now(&self, name: &str) -> Result<()> {
        self.pods.delete(name, &DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::default() }).await?;
        Ok(())
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(s) = self.scheduler.take() {
            s.abort();
        }
    }
}
