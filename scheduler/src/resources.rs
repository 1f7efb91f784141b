//! Resource accounting: what a pod requests and what a node can hold, as plain integers.
//!
//! CPU is counted in millicores and memory/ephemeral storage in bytes (Kubernetes'
//! `MilliValue` / `Value`, rounded up). A pod's effective request follows Kubernetes: the
//! larger of (sum of app containers + restartable init containers) and, for each ordinary
//! init container, its own request plus the sidecars started before it; plus `spec.overhead`.

use std::collections::BTreeMap;

use ferry_api::validation::quantity::parse_quantity;
use k8s_openapi::api::core::v1::{Container, Node, PodSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// Default cpu request (millicores) assumed for scoring when a container requests none.
pub const DEFAULT_MILLI_CPU: i64 = 100;
/// Default memory request (bytes) assumed for scoring when a container requests none.
pub const DEFAULT_MEMORY: i64 = 200 * 1024 * 1024;

/// An amount of each resource the scheduler accounts for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    /// Millicores.
    pub milli_cpu: i64,
    /// Bytes.
    pub memory: i64,
    /// Bytes.
    pub ephemeral_storage: i64,
}

impl Resources {
    /// Component-wise sum (saturating).
    pub fn add(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.saturating_add(other.milli_cpu);
        self.memory = self.memory.saturating_add(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.saturating_add(other.ephemeral_storage);
    }

    /// Component-wise difference (saturating).
    pub fn sub(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.saturating_sub(other.milli_cpu);
        self.memory = self.memory.saturating_sub(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.saturating_sub(other.ephemeral_storage);
    }

    /// Component-wise maximum.
    pub fn max(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.max(other.milli_cpu);
        self.memory = self.memory.max(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(other.ephemeral_storage);
    }

    /// Reads cpu, memory and ephemeral-storage from a resource list; unparsable quantities count
    /// as zero (the API server has validated them already).
    pub fn from_list(list: Option<&BTreeMap<String, Quantity>>) -> Resources {
        let mut r = Resources::default();
        if let Some(list) = list {
            for (name, q) in list {
                let Some(q) = parse_quantity(&q.0) else { continue };
                match name.as_str() {
                    "cpu" => r.milli_cpu = q.milli_value(),
                    "memory" => r.memory = q.value(),
                    "ephemeral-storage" => r.ephemeral_storage = q.value(),
                    _ => {}
                }
            }
        }
        r
    }
}

/// What a pod asks for: the exact request (for fit) and the request with Kubernetes' non-zero
/// defaults (for scoring, so empty pods still spread).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PodRequests {
    /// Effective request used by the fit filter.
    pub exact: Resources,
    /// Request with defaults for containers that ask for no cpu/memory, used by scores.
    pub non_zero: Resources,
}

fn container_requests(c: &Container) -> (Resources, Resources) {
    let req = c.resources.as_ref().and_then(|r| r.requests.as_ref());
    let exact = Resources::from_list(req);
    let mut non_zero = exact;
    let has = |k: &str| req.is_some_and(|m| m.contains_key(k));
    if !has("cpu") {
        non_zero.milli_cpu = DEFAULT_MILLI_CPU;
    }
    if !has("memory") {
        non_zero.memory = DEFAULT_MEMORY;
    }
    (exact, non_zero)
}

/// The effective requests of a pod spec, computed the way Kubernetes' `PodRequests` does.
pub fn pod_requests(spec: &PodSpec) -> PodRequests {
    let mut exact = Resources::default();
    let mut non_zero = Resources::default();
    for c in &spec.containers {
        let (e, n) = container_requests(c);
        exact.add(&e);
        non_zero.add(&n);
    }
    // Init containers: restartable ones (sidecars) keep running and add to everything after
    // them; an ordinary one needs its own request on top of the sidecars started so far.
    let mut sidecars = (Resources::default(), Resources::default());
    let mut init_peak = (Resources::default(), Resources::default());
    for c in spec.init_containers.iter().flatten() {
        let (e, n) = container_requests(c);
        if c.restart_policy.as_deref() == Some("Always") {
            sidecars.0.add(&e);
            sidecars.1.add(&n);
            init_peak.0.max(&sidecars.0);
            init_peak.1.max(&sidecars.1);
        } else {
            let mut pe = e;
            pe.add(&sidecars.0);
            let mut pn = n;
            pn.add(&sidecars.1);
            init_peak.0.max(&pe);
            init_peak.1.max(&pn);
        }
    }
    exact.add(&sidecars.0);
    non_zero.add(&sidecars.1);
    exact.max(&init_peak.0);
    non_zero.max(&init_peak.1);
    let overhead = Resources::from_list(spec.overhead.as_ref());
    exact.add(&overhead);
    non_zero.add(&overhead);
    PodRequests { exact, non_zero }
}

/// A node's allocatable resources and pod capacity (allocatable, else capacity).
pub fn node_allocatable(node: &Node) -> (Resources, i64) {
    let status = node.status.as_ref();
    let list = status.and_then(|s| s.allocatable.as_ref()).or_else(|| status.and_then(|s| s.capacity.as_ref()));
    let pods = list.and_then(|l| l.get("pods")).and_then(|q| parse_quantity(&q.0)).map_or(0, |q| q.value());
    (Resources::from_list(list), pods)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: serde_json::Value) -> PodSpec {
        serde_json::from_value(v).expect("valid pod spec")
    }

    #[test]
    fn sums_containers_and_takes_init_maximum() {
        let s = spec(json!({
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "1Gi"}}},
                {"name": "b", "resources": {"requests": {"cpu": "200m", "memory": "1Gi"}}}
            ],
            "initContainers": [
                {"name": "i1", "resources": {"requests": {"cpu": "1", "memory": "100Mi"}}},
                {"name": "i2", "resources": {"requests": {"cpu": "50m", "memory": "3Gi"}}}
            ]
        }));
        let r = pod_requests(&s).exact;
        assert_eq!(r.milli_cpu, 1000);
        assert_eq!(r.memory, 3 << 30);
    }

    #[test]
    fn sidecars_add_to_later_init_containers_and_app_containers() {
        let s = spec(json!({
            "containers": [{"name": "a", "resources": {"requests": {"cpu": "100m"}}}],
            "initContainers": [
                {"name": "side", "restartPolicy": "Always", "resources": {"requests": {"cpu": "200m"}}},
                {"name": "i", "resources": {"requests": {"cpu": "500m"}}}
            ],
            "overhead": {"cpu": "10m"}
        }));
        let r = pod_requests(&s).exact;
        // max(100 + 200, 500 + 200) + overhead
        assert_eq!(r.milli_cpu, 710);
    }

    #[test]
    fn non_zero_defaults_apply_only_to_scoring() {
        let s = spec(json!({"containers": [{"name": "a"}]}));
        let r = pod_requests(&s);
        assert_eq!(r.exact, Resources::default());
        assert_eq!(r.non_zero.milli_cpu, DEFAULT_MILLI_CPU);
        assert_eq!(r.non_zero.memory, DEFAULT_MEMORY);
    }

    #[test]
    fn node_allocatable_falls_back_to_capacity() {
        let n: Node = serde_json::from_value(json!({
            "metadata": {"name": "n"},
            "status": {"capacity": {"cpu": "2", "memory": "4Gi", "pods": "110", "ephemeral-storage": "10Gi"}}
        }))
        .expect("node");
        let (r, pods) = node_allocatable(&n);
        assert_eq!((r.milli_cpu, r.memory, r.ephemeral_storage, pods), (2000, 4 << 30, 10 << 30, 110));
    }
}
