//! Defaulting, as the Kubernetes API server applies it on decode.
//!
//! One function per kind; [`crate::kinds`] calls them before validation, on create and on
//! update. The rules follow kubernetes/kubernetes `pkg/apis/core/v1/defaults.go` and
//! `pkg/apis/apps/v1/defaults.go`, plus the parts of the admission plugins every cluster runs
//! on pods (ServiceAccount, Priority, DefaultTolerationSeconds) that only fill in fields.
//!
//! Go treats an empty string or a zero number in a non-pointer field as unset, so those
//! defaults also replace `Some("")` / `Some(0)` here; pointer fields keep an explicit zero.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentStrategy, ReplicaSet, RollingUpdateDeployment};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ClientIPConfig, ConfigMap, Container, ContainerPort, EndpointPort, Endpoints, EnvVar, Event, HTTPGetAction,
    Lifecycle, Namespace, NamespaceSpec, NamespaceStatus, Node, Pod, PodSecurityContext, PodSpec, PodTemplateSpec,
    Probe, Secret, Service, ServiceAccount, SessionAffinityConfig, Toleration, Volume,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event as EventV1;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::ByteString;

/// Default grace period for pod termination, in seconds.
pub const DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS: i64 = 30;
/// Default file mode for configMap, secret, downwardAPI and projected volumes (0644).
pub const DEFAULT_VOLUME_MODE: i32 = 0o644;
/// How long pods tolerate `not-ready`/`unreachable` node taints before eviction, in seconds.
pub const DEFAULT_NOT_READY_TOLERATION_SECONDS: i64 = 300;
/// Default ClientIP session affinity timeout: three hours.
pub const DEFAULT_CLIENT_IP_AFFINITY_SECONDS: i32 = 10800;

/// Sets a string that Go would consider unset (absent or empty).
fn set_str(field: &mut Option<String>, value: &str) {
    if field.as_deref().is_none_or(str::is_empty) {
        *field = Some(value.to_string());
    }
}

/// Sets a number that Go would consider unset (absent or zero).
fn set_nonzero(field: &mut Option<i32>, value: i32) {
    if field.is_none_or(|v| v == 0) {
        *field = Some(value);
    }
}

/// The pull policy Kubernetes picks when none is given: `Always` for images tagged `latest`
/// or with neither tag nor digest, `IfNotPresent` otherwise.
pub fn default_pull_policy(image: &str) -> &'static str {
    if image.is_empty() {
        return "IfNotPresent";
    }
    let (name, digest) = match image.split_once('@') {
        Some((name, _)) => (name, true),
        None => (image, false),
    };
    let last_segment = name.rsplit('/').next().unwrap_or(name);
    match last_segment.split_once(':').map(|(_, tag)| tag) {
        Some("latest") => "Always",
        Some(_) => "IfNotPresent",
        None if digest => "IfNotPresent",
        None => "Always",
    }
}

/// Namespace defaults: the `kubernetes.io/metadata.name` label, the `kubernetes` finalizer
/// when no finalizers are given, and phase Active.
pub fn namespace(ns: &mut Namespace) {
    if let Some(name) = ns.metadata.name.clone().filter(|n| !n.is_empty()) {
        ns.metadata.labels.get_or_insert_with(Default::default).insert("kubernetes.io/metadata.name".to_string(), name);
    }
    let spec = ns.spec.get_or_insert_with(NamespaceSpec::default);
    if spec.finalizers.is_none() {
        spec.finalizers = Some(vec!["kubernetes".to_string()]);
    }
    set_str(&mut ns.status.get_or_insert_with(NamespaceStatus::default).phase, "Active");
}

/// Node defaults: allocatable defaults to capacity.
pub fn node(n: &mut Node) {
    if let Some(status) = n.status.as_mut() {
        if status.allocatable.is_none() {
            status.allocatable.clone_from(&status.capacity);
        }
    }
}

/// Pod defaults: the pod spec defaults, plus what Kubernetes only does for pods (not
/// templates): enableServiceLinks, requests from limits, host ports under hostNetwork, the
/// `default` service account, priority 0 and the not-ready/unreachable tolerations.
pub fn pod(p: &mut Pod) {
    let spec = p.spec.get_or_insert_with(PodSpec::default);
    pod_spec(spec);
    spec.enable_service_links.get_or_insert(true);
    for c in spec.containers.iter_mut().chain(spec.init_containers.iter_mut().flatten()) {
        requests_from_limits(c);
    }
    if spec.host_network == Some(true) {
        for c in spec.containers.iter_mut().chain(spec.init_containers.iter_mut().flatten()) {
            for port in c.ports.iter_mut().flatten() {
                if port.host_port.is_none_or(|p| p == 0) {
                    port.host_port = Some(port.container_port);
                }
            }
        }
    }
    sync_service_account(spec, Some("default"));
    default_priority(spec);
    default_tolerations(spec.tolerations.get_or_insert_with(Vec::new));
}

/// Defaults shared by pods and pod templates (`SetDefaults_PodSpec` and the defaults of
/// everything inside a pod spec).
fn pod_spec(spec: &mut PodSpec) {
    set_str(&mut spec.dns_policy, "ClusterFirst");
    set_str(&mut spec.restart_policy, "Always");
    spec.security_context.get_or_insert_with(PodSecurityContext::default);
    spec.termination_grace_period_seconds.get_or_insert(DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS);
    set_str(&mut spec.scheduler_name, "default-scheduler");
    for c in spec.containers.iter_mut().chain(spec.init_containers.iter_mut().flatten()) {
        container(c);
    }
    for c in spec.ephemeral_containers.iter_mut().flatten() {
        set_str(&mut c.image_pull_policy, default_pull_policy(c.image.as_deref().unwrap_or_default()));
        set_str(&mut c.termination_message_path, "/dev/termination-log");
        set_str(&mut c.termination_message_policy, "File");
        c.ports.iter_mut().flatten().for_each(container_port);
        c.env.iter_mut().flatten().for_each(env_var);
        for probe in [&mut c.liveness_probe, &mut c.readiness_probe, &mut c.startup_probe].into_iter().flatten() {
            self::probe(probe);
        }
        c.lifecycle.iter_mut().for_each(lifecycle);
    }
    for v in spec.volumes.iter_mut().flatten() {
        volume(v);
    }
    sync_service_account(spec, None);
}

/// `serviceAccount` is the deprecated alias of `serviceAccountName`: fill the name from the
/// alias, then (for pods) with `fallback`, and mirror the name back into the alias.
fn sync_service_account(spec: &mut PodSpec, fallback: Option<&str>) {
    if spec.service_account_name.as_deref().is_none_or(str::is_empty) {
        spec.service_account_name = spec.service_account.clone().filter(|s| !s.is_empty());
    }
    if let Some(fallback) = fallback {
        set_str(&mut spec.service_account_name, fallback);
    }
    if spec.service_account_name.as_deref().is_some_and(|s| !s.is_empty()) {
        spec.service_account.clone_from(&spec.service_account_name);
    }
}

/// What the Priority admission plugin fills in when no PriorityClass lookup is needed: the
/// built-in system classes, or priority 0 when no class is named.
fn default_priority(spec: &mut PodSpec) {
    let priority = match spec.priority_class_name.as_deref().unwrap_or_default() {
        "" => 0,
        "system-cluster-critical" => 2_000_000_000,
        "system-node-critical" => 2_000_001_000,
        _ => return,
    };
    spec.priority.get_or_insert(priority);
    set_str(&mut spec.preemption_policy, "PreemptLowerPriority");
}

/// The tolerations the DefaultTolerationSeconds admission plugin adds unless the pod already
/// tolerates the not-ready/unreachable NoExecute taints.
fn default_tolerations(tolerations: &mut Vec<Toleration>) {
    for key in ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"] {
        let tolerated = tolerations.iter().any(|t| {
            let t_key = t.key.as_deref().unwrap_or_default();
            let effect = t.effect.as_deref().unwrap_or_default();
            (t_key == key || t_key.is_empty()) && (effect == "NoExecute" || effect.is_empty())
        });
        if !tolerated {
            tolerations.push(Toleration {
                key: Some(key.to_string()),
                operator: Some("Exists".to_string()),
                effect: Some("NoExecute".to_string()),
                toleration_seconds: Some(DEFAULT_NOT_READY_TOLERATION_SECONDS),
                value: None,
            });
        }
    }
}

/// Container defaults: pull policy, termination message, port protocols, probes, lifecycle
/// handlers and downward-API env vars.
fn container(c: &mut Container) {
    set_str(&mut c.image_pull_policy, default_pull_policy(c.image.as_deref().unwrap_or_default()));
    set_str(&mut c.termination_message_path, "/dev/termination-log");
    set_str(&mut c.termination_message_policy, "File");
    c.ports.iter_mut().flatten().for_each(container_port);
    c.env.iter_mut().flatten().for_each(env_var);
    for probe in [&mut c.liveness_probe, &mut c.readiness_probe, &mut c.startup_probe].into_iter().flatten() {
        self::probe(probe);
    }
    c.lifecycle.iter_mut().for_each(lifecycle);
}

/// Pods (not templates) default missing requests to their limits.
fn requests_from_limits(c: &mut Container) {
    let Some(resources) = c.resources.as_mut() else { return };
    let Some(limits) = resources.limits.as_ref() else { return };
    let requests = resources.requests.get_or_insert_with(Default::default);
    for (name, value) in limits {
        requests.entry(name.clone()).or_insert_with(|| value.clone());
    }
}

fn container_port(port: &mut ContainerPort) {
    set_str(&mut port.protocol, "TCP");
}

fn env_var(var: &mut EnvVar) {
    if let Some(field_ref) = var.value_from.as_mut().and_then(|v| v.field_ref.as_mut()) {
        set_str(&mut field_ref.api_version, "v1");
    }
}

/// Probe defaults: 1s timeout, 10s period, success 1, failure 3, HTTP GET defaults.
fn probe(p: &mut Probe) {
    set_nonzero(&mut p.timeout_seconds, 1);
    set_nonzero(&mut p.period_seconds, 10);
    set_nonzero(&mut p.success_threshold, 1);
    set_nonzero(&mut p.failure_threshold, 3);
    p.http_get.iter_mut().for_each(http_get);
    if let Some(grpc) = p.grpc.as_mut() {
        grpc.service.get_or_insert_with(String::new);
    }
}

fn lifecycle(l: &mut Lifecycle) {
    for handler in [&mut l.post_start, &mut l.pre_stop].into_iter().flatten() {
        handler.http_get.iter_mut().for_each(http_get);
    }
}

fn http_get(get: &mut HTTPGetAction) {
    set_str(&mut get.path, "/");
    set_str(&mut get.scheme, "HTTP");
}

/// Volume defaults: a volume without a source is an emptyDir; file modes default to 0644;
/// service account tokens expire after an hour; downward-API field refs use v1.
fn volume(v: &mut Volume) {
    let has_source = serde_json::to_value(&*v).ok().and_then(|j| j.as_object().map(|o| o.len() > 1)).unwrap_or(true);
    if !has_source {
        v.empty_dir = Some(Default::default());
    }
    if let Some(secret) = v.secret.as_mut() {
        secret.default_mode.get_or_insert(DEFAULT_VOLUME_MODE);
    }
    if let Some(config_map) = v.config_map.as_mut() {
        config_map.default_mode.get_or_insert(DEFAULT_VOLUME_MODE);
    }
    if let Some(downward) = v.downward_api.as_mut() {
        downward.default_mode.get_or_insert(DEFAULT_VOLUME_MODE);
        for item in downward.items.iter_mut().flatten() {
            item.field_ref.iter_mut().for_each(|f| set_str(&mut f.api_version, "v1"));
        }
    }
    if let Some(projected) = v.projected.as_mut() {
        projected.default_mode.get_or_insert(DEFAULT_VOLUME_MODE);
        for source in projected.sources.iter_mut().flatten() {
            if let Some(token) = source.service_account_token.as_mut() {
                token.expiration_seconds.get_or_insert(3600);
            }
            let items = source.downward_api.iter_mut().flat_map(|d| d.items.iter_mut().flatten());
            for item in items {
                item.field_ref.iter_mut().for_each(|f| set_str(&mut f.api_version, "v1"));
            }
        }
    }
    if let Some(host_path) = v.host_path.as_mut() {
        host_path.type_.get_or_insert_with(String::new);
    }
    if let Some(image) = v.image.as_mut() {
        let policy = default_pull_policy(image.reference.as_deref().unwrap_or_default());
        set_str(&mut image.pull_policy, policy);
    }
}

/// Defaults for a workload's pod template: the pod spec defaults (a template always has a
/// spec).
fn pod_template(template: &mut PodTemplateSpec) {
    pod_spec(template.spec.get_or_insert_with(PodSpec::default));
}

/// Service defaults: type ClusterIP, sessionAffinity None, TCP ports targeting their own port,
/// traffic policies Cluster, and for LoadBalancers node port allocation on.
pub fn service(s: &mut Service) {
    let Some(spec) = s.spec.as_mut() else { return };
    set_str(&mut spec.session_affinity, "None");
    if spec.session_affinity.as_deref() == Some("None") {
        spec.session_affinity_config = None;
    }
    if spec.session_affinity.as_deref() == Some("ClientIP") {
        let timeout =
            spec.session_affinity_config.as_ref().and_then(|c| c.client_ip.as_ref()).and_then(|c| c.timeout_seconds);
        if timeout.is_none() {
            spec.session_affinity_config = Some(SessionAffinityConfig {
                client_ip: Some(ClientIPConfig { timeout_seconds: Some(DEFAULT_CLIENT_IP_AFFINITY_SECONDS) }),
            });
        }
    }
    set_str(&mut spec.type_, "ClusterIP");
    for port in spec.ports.iter_mut().flatten() {
        set_str(&mut port.protocol, "TCP");
        let unset = match &port.target_port {
            None => true,
            Some(IntOrString::Int(0)) => true,
            Some(IntOrString::String(s)) => s.is_empty(),
            Some(IntOrString::Int(_)) => false,
        };
        if unset {
            port.target_port = Some(IntOrString::Int(port.port));
        }
    }
    let service_type = spec.type_.clone().unwrap_or_default();
    let has_external_ips = spec.external_ips.as_ref().is_some_and(|ips| !ips.is_empty());
    let externally_accessible = matches!(service_type.as_str(), "NodePort" | "LoadBalancer")
        || (service_type == "ClusterIP" && has_external_ips);
    if externally_accessible {
        set_str(&mut spec.external_traffic_policy, "Cluster");
    }
    if spec.internal_traffic_policy.is_none()
        && matches!(service_type.as_str(), "ClusterIP" | "NodePort" | "LoadBalancer")
    {
        spec.internal_traffic_policy = Some("Cluster".to_string());
    }
    if service_type == "LoadBalancer" {
        spec.allocate_load_balancer_node_ports.get_or_insert(true);
    }
}

/// Endpoints defaults: port protocol TCP.
pub fn endpoints(e: &mut Endpoints) {
    let ports = e.subsets.iter_mut().flatten().flat_map(|s| s.ports.iter_mut().flatten());
    ports.for_each(|p: &mut EndpointPort| set_str(&mut p.protocol, "TCP"));
}

/// ConfigMap defaults: none.
pub fn config_map(_c: &mut ConfigMap) {}

/// Secret defaults: type Opaque, and `stringData` merged into `data` (as the v1 conversion
/// does; stringData wins on conflicts and is not stored).
pub fn secret(s: &mut Secret) {
    set_str(&mut s.type_, "Opaque");
    if let Some(string_data) = s.string_data.take() {
        let data = s.data.get_or_insert_with(Default::default);
        for (key, value) in string_data {
            data.insert(key, ByteString(value.into_bytes()));
        }
    }
}

/// core/v1 Event defaults: none.
pub fn event(_e: &mut Event) {}
/// ServiceAccount defaults: none.
pub fn service_account(_s: &mut ServiceAccount) {}

/// ReplicaSet defaults: one replica; template defaults.
pub fn replica_set(r: &mut ReplicaSet) {
    let spec = &mut r.spec;
    spec.replicas.get_or_insert(1);
    if let Some(template) = spec.template.as_mut() {
        pod_template(template);
    }
}

/// Deployment defaults: one replica, RollingUpdate with 25% surge and unavailability, ten old
/// ReplicaSets kept, a 600s progress deadline; template defaults.
pub fn deployment(d: &mut Deployment) {
    let spec = &mut d.spec;
    spec.replicas.get_or_insert(1);
    let strategy = spec.strategy.get_or_insert_with(DeploymentStrategy::default);
    set_str(&mut strategy.type_, "RollingUpdate");
    if strategy.type_.as_deref() == Some("RollingUpdate") {
        let rolling = strategy.rolling_update.get_or_insert_with(RollingUpdateDeployment::default);
        rolling.max_unavailable.get_or_insert_with(|| IntOrString::String("25%".to_string()));
        rolling.max_surge.get_or_insert_with(|| IntOrString::String("25%".to_string()));
    }
    spec.revision_history_limit.get_or_insert(10);
    spec.progress_deadline_seconds.get_or_insert(600);
    pod_template(&mut spec.template);
}

/// EndpointSlice defaults: port protocol TCP and name "" (`SetDefaults_EndpointPort`).
pub fn endpoint_slice(e: &mut EndpointSlice) {
    for p in e.ports.iter_mut().flatten() {
        set_str(&mut p.protocol, "TCP");
        if p.name.is_none() {
            p.name = Some(String::new());
        }
    }
}

/// Lease defaults: none.
pub fn lease(_l: &mut Lease) {}
/// PriorityClass defaults: preemptionPolicy PreemptLowerPriority (`SetDefaults_PriorityClass`).
pub fn priority_class(pc: &mut PriorityClass) {
    set_str(&mut pc.preemption_policy, "PreemptLowerPriority");
}
/// events.k8s.io/v1 Event defaults: none.
pub fn events_v1_event(_e: &mut EventV1) {}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn defaulted_pod(v: Value) -> Value {
        let mut p: Pod = serde_json::from_value(v).unwrap();
        pod(&mut p);
        serde_json::to_value(&p).unwrap()
    }

    #[test]
    fn pull_policies() {
        assert_eq!(default_pull_policy("nginx"), "Always");
        assert_eq!(default_pull_policy("nginx:latest"), "Always");
        assert_eq!(default_pull_policy("nginx:1.27"), "IfNotPresent");
        assert_eq!(default_pull_policy("localhost:5000/nginx"), "Always");
        assert_eq!(default_pull_policy("localhost:5000/nginx:1"), "IfNotPresent");
        assert_eq!(default_pull_policy("nginx@sha256:abc"), "IfNotPresent");
        assert_eq!(default_pull_policy("nginx:latest@sha256:abc"), "Always");
        assert_eq!(default_pull_policy(""), "IfNotPresent");
    }

    #[test]
    fn minimal_pod() {
        let p = defaulted_pod(
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}),
        );
        let expected = json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {
                "containers": [{"name": "c", "image": "busybox", "imagePullPolicy": "Always",
                    "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"}],
                "dnsPolicy": "ClusterFirst", "enableServiceLinks": true, "preemptionPolicy": "PreemptLowerPriority",
                "priority": 0, "restartPolicy": "Always", "schedulerName": "default-scheduler", "securityContext": {},
                "serviceAccount": "default", "serviceAccountName": "default", "terminationGracePeriodSeconds": 30,
                "tolerations": [
                    {"effect": "NoExecute", "key": "node.kubernetes.io/not-ready", "operator": "Exists", "tolerationSeconds": 300},
                    {"effect": "NoExecute", "key": "node.kubernetes.io/unreachable", "operator": "Exists", "tolerationSeconds": 300}
                ]
            }
        });
        assert_eq!(p, expected);
    }

    #[test]
    fn pod_without_spec_gets_one() {
        let p = defaulted_pod(json!({"metadata": {"name": "p"}}));
        assert_eq!(p["spec"]["restartPolicy"], "Always");
        assert_eq!(p["spec"]["containers"], json!([]));
    }

    #[test]
    fn explicit_values_are_kept() {
        let p = defaulted_pod(json!({"metadata": {"name": "p"}, "spec": {
            "restartPolicy": "Never", "dnsPolicy": "Default", "terminationGracePeriodSeconds": 0, "enableServiceLinks": false,
            "schedulerName": "mine", "serviceAccount": "legacy", "priorityClassName": "system-node-critical",
            "tolerations": [{"operator": "Exists"}],
            "containers": [{"name": "c", "image": "busybox", "imagePullPolicy": "Never", "terminationMessagePolicy": "FallbackToLogsOnError"}]
        }}));
        let spec = &p["spec"];
        assert_eq!(spec["restartPolicy"], "Never");
        assert_eq!(spec["dnsPolicy"], "Default");
        assert_eq!(spec["terminationGracePeriodSeconds"], 0);
        assert_eq!(spec["enableServiceLinks"], false);
        assert_eq!(spec["schedulerName"], "mine");
        assert_eq!(spec["serviceAccountName"], "legacy");
        assert_eq!(spec["serviceAccount"], "legacy");
        assert_eq!(spec["priority"], 2_000_001_000);
        assert_eq!(spec["tolerations"], json!([{"operator": "Exists"}]));
        assert_eq!(spec["containers"][0]["imagePullPolicy"], "Never");
        assert_eq!(spec["containers"][0]["terminationMessagePolicy"], "FallbackToLogsOnError");
        let custom =
            defaulted_pod(json!({"metadata": {"name": "p"}, "spec": {"priorityClassName": "high", "containers": []}}));
        assert!(custom["spec"].get("priority").is_none());
    }

    #[test]
    fn container_details() {
        let p = defaulted_pod(json!({"metadata": {"name": "p"}, "spec": {
            "hostNetwork": true,
            "containers": [{"name": "c", "image": "app:v1",
                "ports": [{"containerPort": 80}, {"containerPort": 53, "protocol": "UDP", "hostPort": 5353}],
                "env": [{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                "resources": {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "500m"}},
                "livenessProbe": {"httpGet": {"port": 80}, "periodSeconds": 0},
                "readinessProbe": {"grpc": {"port": 9000}, "failureThreshold": 5},
                "lifecycle": {"preStop": {"httpGet": {"port": 80, "path": "/stop"}}}
            }],
            "initContainers": [{"name": "i", "image": "init:latest", "resources": {"limits": {"cpu": "1"}}}]
        }}));
        let c = &p["spec"]["containers"][0];
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
        assert_eq!(
            c["ports"],
            json!([
                {"containerPort": 80, "hostPort": 80, "protocol": "TCP"},
                {"containerPort": 53, "hostPort": 5353, "protocol": "UDP"}
            ])
        );
        assert_eq!(c["env"][0]["valueFrom"]["fieldRef"]["apiVersion"], "v1");
        assert_eq!(c["resources"]["requests"], json!({"cpu": "500m", "memory": "1Gi"}));
        assert_eq!(
            c["livenessProbe"],
            json!({"httpGet": {"port": 80, "path": "/", "scheme": "HTTP"}, "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3})
        );
        assert_eq!(c["readinessProbe"]["failureThreshold"], 5);
        assert_eq!(c["readinessProbe"]["grpc"]["service"], "");
        assert_eq!(c["lifecycle"]["preStop"]["httpGet"], json!({"port": 80, "path": "/stop", "scheme": "HTTP"}));
        let i = &p["spec"]["initContainers"][0];
        assert_eq!(i["imagePullPolicy"], "Always");
        assert_eq!(i["resources"]["requests"], json!({"cpu": "1"}));
    }

    #[test]
    fn volumes() {
        let p = defaulted_pod(json!({"metadata": {"name": "p"}, "spec": {"containers": [], "volumes": [
            {"name": "scratch"},
            {"name": "cfg", "configMap": {"name": "c"}},
            {"name": "sec", "secret": {"secretName": "s", "defaultMode": 256}},
            {"name": "info", "downwardAPI": {"items": [{"path": "n", "fieldRef": {"fieldPath": "metadata.name"}}]}},
            {"name": "token", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]}},
            {"name": "host", "hostPath": {"path": "/var"}}
        ]}}));
        let v = &p["spec"]["volumes"];
        assert_eq!(v[0], json!({"name": "scratch", "emptyDir": {}}));
        assert_eq!(v[1]["configMap"]["defaultMode"], 420);
        assert_eq!(v[2]["secret"]["defaultMode"], 256);
        assert_eq!(
            v[3]["downwardAPI"],
            json!({"defaultMode": 420, "items": [{"path": "n", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}]})
        );
        assert_eq!(
            v[4]["projected"],
            json!({"defaultMode": 420, "sources": [{"serviceAccountToken": {"path": "t", "expirationSeconds": 3600}}]})
        );
        assert_eq!(v[5]["hostPath"], json!({"path": "/var", "type": ""}));
    }

    #[test]
    fn tolerations_are_not_duplicated() {
        let p = defaulted_pod(json!({"metadata": {"name": "p"}, "spec": {"containers": [], "tolerations": [
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 60}
        ]}}));
        let tolerations = p["spec"]["tolerations"].as_array().unwrap();
        assert_eq!(tolerations.len(), 2);
        assert_eq!(tolerations[0]["tolerationSeconds"], 60);
        assert_eq!(tolerations[1]["key"], "node.kubernetes.io/not-ready");
    }

    #[test]
    fn deployments() {
        let mut d: Deployment = serde_json::from_value(json!({"metadata": {"name": "d"}, "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}
        }}))
        .unwrap();
        deployment(&mut d);
        let v = serde_json::to_value(&d).unwrap();
        let spec = &v["spec"];
        assert_eq!(spec["replicas"], 1);
        assert_eq!(
            spec["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}})
        );
        assert_eq!(spec["revisionHistoryLimit"], 10);
        assert_eq!(spec["progressDeadlineSeconds"], 600);
        let t = &spec["template"]["spec"];
        assert_eq!(t["restartPolicy"], "Always");
        assert_eq!(t["securityContext"], json!({}));
        assert_eq!(t["containers"][0]["imagePullPolicy"], "Always");
        assert!(t.get("enableServiceLinks").is_none(), "pod-only default");
        assert!(t.get("serviceAccountName").is_none(), "pod-only default");
        assert!(t.get("tolerations").is_none(), "pod-only default");

        let mut recreate: Deployment = serde_json::from_value(json!({"metadata": {"name": "d"}, "spec": {
            "replicas": 0, "strategy": {"type": "Recreate"}, "selector": {}, "template": {}
        }}))
        .unwrap();
        deployment(&mut recreate);
        let v = serde_json::to_value(&recreate).unwrap();
        assert_eq!(v["spec"]["replicas"], 0);
        assert_eq!(v["spec"]["strategy"], json!({"type": "Recreate"}));
        assert_eq!(v["spec"]["template"]["spec"]["dnsPolicy"], "ClusterFirst");

        let mut partial: Deployment = serde_json::from_value(json!({"metadata": {"name": "d"}, "spec": {
            "strategy": {"rollingUpdate": {"maxSurge": 1}}, "selector": {}, "template": {}
        }}))
        .unwrap();
        deployment(&mut partial);
        let v = serde_json::to_value(&partial).unwrap();
        assert_eq!(
            v["spec"]["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": "25%"}})
        );
    }

    #[test]
    fn replica_sets() {
        let mut r: ReplicaSet = serde_json::from_value(json!({"metadata": {"name": "r"}, "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"spec": {"containers": [{"name": "c", "image": "nginx:1", "ports": [{"containerPort": 80}]}]}}
        }}))
        .unwrap();
        replica_set(&mut r);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["spec"]["replicas"], 1);
        assert_eq!(v["spec"]["template"]["spec"]["containers"][0]["ports"][0]["protocol"], "TCP");
        assert_eq!(v["spec"]["template"]["spec"]["terminationGracePeriodSeconds"], 30);
    }

    #[test]
    fn services() {
        let mut s: Service = serde_json::from_value(json!({"metadata": {"name": "s"}, "spec": {
            "selector": {"app": "web"},
            "ports": [{"port": 80}, {"port": 53, "protocol": "UDP", "targetPort": "dns"}, {"port": 81, "targetPort": 0}]
        }}))
        .unwrap();
        service(&mut s);
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(
            v["spec"],
            json!({
                "selector": {"app": "web"}, "type": "ClusterIP", "sessionAffinity": "None", "internalTrafficPolicy": "Cluster",
                "ports": [
                    {"port": 80, "protocol": "TCP", "targetPort": 80},
                    {"port": 53, "protocol": "UDP", "targetPort": "dns"},
                    {"port": 81, "protocol": "TCP", "targetPort": 81}
                ]
            })
        );

        let mut lb: Service = serde_json::from_value(json!({"metadata": {"name": "s"}, "spec": {"type": "LoadBalancer", "sessionAffinity": "ClientIP", "ports": [{"port": 443}]}})).unwrap();
        service(&mut lb);
        let spec = lb.spec.unwrap_or_default();
        assert_eq!(spec.external_traffic_policy.as_deref(), Some("Cluster"));
        assert_eq!(spec.allocate_load_balancer_node_ports, Some(true));
        assert_eq!(spec.session_affinity_config.and_then(|c| c.client_ip).and_then(|c| c.timeout_seconds), Some(10800));

        let mut ext: Service = serde_json::from_value(
            json!({"metadata": {"name": "s"}, "spec": {"type": "ExternalName", "externalName": "x.example"}}),
        )
        .unwrap();
        service(&mut ext);
        let spec = ext.spec.unwrap_or_default();
        assert!(spec.internal_traffic_policy.is_none());
        assert!(spec.external_traffic_policy.is_none());

        let mut external_ips: Service = serde_json::from_value(
            json!({"metadata": {"name": "s"}, "spec": {"externalIPs": ["1.2.3.4"], "sessionAffinityConfig": {}}}),
        )
        .unwrap();
        service(&mut external_ips);
        let spec = external_ips.spec.unwrap_or_default();
        assert_eq!(spec.external_traffic_policy.as_deref(), Some("Cluster"));
        assert!(spec.session_affinity_config.is_none());
    }

    #[test]
    fn secrets_and_namespaces_and_others() {
        let mut s: Secret = serde_json::from_value(
            json!({"metadata": {"name": "s"}, "data": {"a": "YQ==", "b": "Yg=="}, "stringData": {"b": "B", "c": "C"}}),
        )
        .unwrap();
        secret(&mut s);
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["type"], "Opaque");
        assert_eq!(v["data"], json!({"a": "YQ==", "b": "Qg==", "c": "Qw=="}));
        assert!(v.get("stringData").is_none());

        let mut ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "team-a"}})).unwrap();
        namespace(&mut ns);
        let v = serde_json::to_value(&ns).unwrap();
        assert_eq!(v["metadata"]["labels"], json!({"kubernetes.io/metadata.name": "team-a"}));
        assert_eq!(v["spec"], json!({"finalizers": ["kubernetes"]}));
        assert_eq!(v["status"], json!({"phase": "Active"}));
        let mut finalized: Namespace = serde_json::from_value(
            json!({"metadata": {"name": "x"}, "spec": {"finalizers": []}, "status": {"phase": "Terminating"}}),
        )
        .unwrap();
        namespace(&mut finalized);
        let v = serde_json::to_value(&finalized).unwrap();
        assert_eq!(v["spec"], json!({"finalizers": []}));
        assert_eq!(v["status"]["phase"], "Terminating");

        let mut n: Node =
            serde_json::from_value(json!({"metadata": {"name": "n"}, "status": {"capacity": {"cpu": "4"}}})).unwrap();
        node(&mut n);
        assert_eq!(serde_json::to_value(&n).unwrap()["status"]["allocatable"], json!({"cpu": "4"}));

        let mut e: Endpoints =
            serde_json::from_value(json!({"metadata": {"name": "e"}, "subsets": [{"ports": [{"port": 80}]}]})).unwrap();
        endpoints(&mut e);
        assert_eq!(serde_json::to_value(&e).unwrap()["subsets"][0]["ports"][0]["protocol"], "TCP");
    }
}
