//! Per-node plugins: they look at the pod and one node only.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm, PodSpec, Taint, Toleration};

use super::{PodCtx, Reason};
use crate::cache::NodeInfo;

/// NodeName: a pod naming a node in `spec.nodeName` fits only there (pods the scheduler sees
/// are unbound, but a pod may be created with a nominated name by other tooling).
pub fn node_name(pod: &PodCtx<'_>, node: &NodeInfo) -> Result<(), Reason> {
    match pod.spec.node_name.as_deref() {
        Some(n) if !n.is_empty() && n != node.name => Err(Reason::NodeName),
        _ => Ok(()),
    }
}

/// NodeUnschedulable: cordoned nodes take only pods tolerating
/// `node.kubernetes.io/unschedulable:NoSchedule`.
pub fn unschedulable(pod: &PodCtx<'_>, node: &NodeInfo) -> Result<(), Reason> {
    if !node.unschedulable {
        return Ok(());
    }
    let taint =
        Taint { key: "node.kubernetes.io/unschedulable".into(), effect: "NoSchedule".into(), ..Taint::default() };
    if pod.tolerations.iter().any(|t| tolerates(t, &taint)) {
        Ok(())
    } else {
        Err(Reason::Unschedulable)
    }
}

/// NodeResourcesFit: every requested resource and the pod count fit in what is left.
/// Reports every insufficient resource, as Kubernetes does.
pub fn resources_fit(pod: &PodCtx<'_>, node: &NodeInfo, out: &mut Vec<Reason>) {
    fits(&pod.info.requests.exact, node, out);
}

/// The resource check behind [`resources_fit`], shared with preemption.
pub fn fits(req: &crate::resources::Resources, node: &NodeInfo, out: &mut Vec<Reason>) {
    if node.pods.len() as i64 + 1 > node.allowed_pods {
        out.push(Reason::TooManyPods);
    }
    let (a, u) = (&node.allocatable, &node.requested);
    if req.milli_cpu > 0 && req.milli_cpu > a.milli_cpu - u.milli_cpu {
        out.push(Reason::Insufficient("cpu"));
    }
    if req.memory > 0 && req.memory > a.memory - u.memory {
        out.push(Reason::Insufficient("memory"));
    }
    if req.ephemeral_storage > 0 && req.ephemeral_storage > a.ephemeral_storage - u.ephemeral_storage {
        out.push(Reason::Insufficient("ephemeral-storage"));
    }
}

/// NodePorts: no requested host port (protocol, IP, port) may collide; `0.0.0.0` collides
/// with every IP.
pub fn node_ports(pod: &PodCtx<'_>, node: &NodeInfo) -> Result<(), Reason> {
    for (proto, ip, port) in &pod.info.host_ports {
        let clash = node
            .used_ports
            .iter()
            .any(|(p2, ip2, port2)| port == port2 && proto == p2 && (ip == ip2 || ip == "0.0.0.0" || ip2 == "0.0.0.0"));
        if clash {
            return Err(Reason::NodePorts);
        }
    }
    Ok(())
}

/// NodeAffinity (filter): `spec.nodeSelector` and required node affinity.
pub fn node_affinity(pod: &PodCtx<'_>, node: &NodeInfo) -> Result<(), Reason> {
    if matches_node_selector_and_affinity(pod.spec, &node.name, &node.labels) {
        Ok(())
    } else {
        Err(Reason::NodeAffinity)
    }
}

/// Whether a node satisfies a pod's nodeSelector and required node affinity.
pub fn matches_node_selector_and_affinity(spec: &PodSpec, name: &str, labels: &BTreeMap<String, String>) -> bool {
    if let Some(sel) = &spec.node_selector {
        if !sel.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            return false;
        }
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| na.required_during_scheduling_ignored_during_execution.as_ref());
    match required {
        // Terms are ORed; an empty term list matches nothing (Kubernetes).
        Some(r) => r.node_selector_terms.iter().any(|t| term_matches(t, name, labels)),
        None => true,
    }
}

/// Whether one node selector term (ANDed expressions and fields) matches. An empty term
/// matches nothing.
pub fn term_matches(t: &NodeSelectorTerm, name: &str, labels: &BTreeMap<String, String>) -> bool {
    let exprs = t.match_expressions.as_deref().unwrap_or_default();
    let fields = t.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs.iter().all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
        && fields.iter().all(|r| r.key == "metadata.name" && requirement_matches(r, Some(name)))
}

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    let number = |s: &str| s.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (value.and_then(number), values.first().and_then(|b| number(b))) else {
                return false;
            };
            if r.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

/// NodeAffinity (score): sum of the weights of matching preferred terms.
pub fn node_affinity_score(pod: &PodCtx<'_>, node: &NodeInfo) -> i64 {
    let preferred = pod
        .spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| na.preferred_during_scheduling_ignored_during_execution.as_ref());
    preferred.map_or(0, |p| {
        p.iter().filter(|t| term_matches(&t.preference, &node.name, &node.labels)).map(|t| i64::from(t.weight)).sum()
    })
}

pub use ferry_api::taints::tolerates;

/// TaintToleration (filter): every NoSchedule/NoExecute taint must be tolerated.
pub fn taint_toleration(pod: &PodCtx<'_>, node: &NodeInfo) -> Result<(), Reason> {
    for taint in &node.taints {
        if matches!(taint.effect.as_str(), "NoSchedule" | "NoExecute")
            && !pod.tolerations.iter().any(|t| tolerates(t, taint))
        {
            return Err(Reason::Taint { key: taint.key.clone(), value: taint.value.clone().unwrap_or_default() });
        }
    }
    Ok(())
}

/// TaintToleration (score, raw): the number of PreferNoSchedule taints not tolerated — fewer is
/// better (the framework reverses it).
pub fn intolerable_prefer_no_schedule(pod: &PodCtx<'_>, node: &NodeInfo) -> i64 {
    let tolerations: Vec<&Toleration> = pod
        .tolerations
        .iter()
        .filter(|t| t.effect.as_deref().is_none_or(|e| e.is_empty() || e == "PreferNoSchedule"))
        .collect();
    node.taints
        .iter()
        .filter(|taint| taint.effect == "PreferNoSchedule" && !tolerations.iter().any(|t| tolerates(t, taint)))
        .count() as i64
}

/// NodeResourcesFit with the LeastAllocated strategy: the share of cpu and memory left free
/// after placing the pod, 0–100, equally weighted.
pub fn least_allocated(pod: &PodCtx<'_>, node: &NodeInfo) -> i64 {
    let req = &pod.info.requests.non_zero;
    let used = &node.non_zero_requested;
    let free = |cap: i64, requested: i64| -> i64 {
        if cap <= 0 || requested > cap {
            return 0;
        }
        (cap - requested) * 100 / cap
    };
    let cpu = free(node.allocatable.milli_cpu, used.milli_cpu.saturating_add(req.milli_cpu));
    let mem = free(node.allocatable.memory, used.memory.saturating_add(req.memory));
    (cpu + mem) / 2
}

/// NodeResourcesBalancedAllocation: 100 × (1 − standard deviation of the cpu and memory
/// fractions after placing the pod).
pub fn balanced_allocation(pod: &PodCtx<'_>, node: &NodeInfo) -> i64 {
    let req = &pod.info.requests.non_zero;
    let used = &node.non_zero_requested;
    let frac = |used: i64, cap: i64| -> f64 {
        if cap <= 0 {
            return 1.0;
        }
        (used as f64 / cap as f64).min(1.0)
    };
    let c = frac(used.milli_cpu.saturating_add(req.milli_cpu), node.allocatable.milli_cpu);
    let m = frac(used.memory.saturating_add(req.memory), node.allocatable.memory);
    let std = (c - m).abs() / 2.0;
    ((1.0 - std) * 100.0) as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testutil::{node, node_with, pod};
    use crate::plugins::PodCtx;
    use serde_json::json;

    fn info(extra: serde_json::Value) -> NodeInfo {
        node_with(node("n1", extra), &[])
    }

    #[test]
    fn node_name_filter() {
        let p = pod("p", json!({"spec": {"nodeName": "n2"}}));
        let ctx = PodCtx::new(&p).expect("ctx");
        assert_eq!(node_name(&ctx, &info(json!({}))), Err(Reason::NodeName));
        let p = pod("p", json!({}));
        assert_eq!(node_name(&PodCtx::new(&p).expect("ctx"), &info(json!({}))), Ok(()));
    }

    #[test]
    fn cordoned_nodes_reject_unless_tolerated() {
        let n = info(json!({"spec": {"unschedulable": true}}));
        let p = pod("p", json!({}));
        assert_eq!(unschedulable(&PodCtx::new(&p).expect("ctx"), &n), Err(Reason::Unschedulable));
        let p = pod(
            "p",
            json!({"spec": {"tolerations": [{"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}]}}),
        );
        assert_eq!(unschedulable(&PodCtx::new(&p).expect("ctx"), &n), Ok(()));
    }

    #[test]
    fn resources_fit_reports_every_shortage_and_pod_count() {
        let existing = pod(
            "e",
            json!({"spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "3", "memory": "1Gi"}}}]}}),
        );
        let n = node_with(node("n1", json!({"status": {"allocatable": {"pods": "1"}}})), &[existing]);
        let p = pod(
            "p",
            json!({"spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "2", "memory": "8Gi", "ephemeral-storage": "1Gi"}}}]}}),
        );
        let mut out = Vec::new();
        resources_fit(&PodCtx::new(&p).expect("ctx"), &n, &mut out);
        assert_eq!(out, vec![Reason::TooManyPods, Reason::Insufficient("cpu"), Reason::Insufficient("memory")]);
        let small = pod("p", json!({"spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "1"}}}]}}));
        let n = node_with(
            node("n1", json!({})),
            &[pod("e", json!({"spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "3"}}}]}}))],
        );
        let mut out = Vec::new();
        resources_fit(&PodCtx::new(&small).expect("ctx"), &n, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn host_ports_collide_by_protocol_ip_and_port() {
        let with_port = |name: &str, port: i32, ip: &str, proto: &str| {
            pod(
                name,
                json!({"spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": port, "hostIP": ip, "protocol": proto}]}]}}),
            )
        };
        let n = node_with(node("n1", json!({})), &[with_port("e", 8080, "10.0.0.1", "TCP")]);
        let check = |p: &k8s_openapi::api::core::v1::Pod| node_ports(&PodCtx::new(p).expect("ctx"), &n);
        assert_eq!(check(&with_port("p", 8080, "0.0.0.0", "TCP")), Err(Reason::NodePorts));
        assert_eq!(check(&with_port("p", 8080, "10.0.0.1", "TCP")), Err(Reason::NodePorts));
        assert_eq!(check(&with_port("p", 8080, "10.0.0.2", "TCP")), Ok(()));
        assert_eq!(check(&with_port("p", 8080, "10.0.0.1", "UDP")), Ok(()));
        assert_eq!(check(&with_port("p", 8081, "10.0.0.1", "TCP")), Ok(()));
    }

    #[test]
    fn node_selector_and_every_affinity_operator() {
        let n = info(json!({"metadata": {"labels": {"disk": "ssd", "gen": "5", "zone": "a"}}}));
        let expr = |key: &str, op: &str, values: serde_json::Value| {
            let p = pod(
                "p",
                json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [{"key": key, "operator": op, "values": values}]}]}}}}}),
            );
            node_affinity(&PodCtx::new(&p).expect("ctx"), &n).is_ok()
        };
        assert!(expr("disk", "In", json!(["ssd", "hdd"])));
        assert!(!expr("disk", "In", json!(["hdd"])));
        assert!(expr("disk", "NotIn", json!(["hdd"])));
        assert!(!expr("disk", "NotIn", json!(["ssd"])));
        assert!(expr("disk", "Exists", json!(null)));
        assert!(!expr("gpu", "Exists", json!(null)));
        assert!(expr("gpu", "DoesNotExist", json!(null)));
        assert!(expr("gen", "Gt", json!(["4"])));
        assert!(!expr("gen", "Gt", json!(["5"])));
        assert!(expr("gen", "Lt", json!(["6"])));
        assert!(!expr("disk", "Lt", json!(["6"])));
        let sel = |v: serde_json::Value| {
            let p = pod("p", json!({"spec": {"nodeSelector": v}}));
            node_affinity(&PodCtx::new(&p).expect("ctx"), &n).is_ok()
        };
        assert!(sel(json!({"disk": "ssd", "zone": "a"})));
        assert!(!sel(json!({"disk": "ssd", "zone": "b"})));
        let fields = pod(
            "p",
            json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n2"]}]},
                                      {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}]}}}}}),
        );
        assert!(node_affinity(&PodCtx::new(&fields).expect("ctx"), &n).is_ok());
    }

    #[test]
    fn preferred_node_affinity_sums_weights() {
        let n = info(json!({"metadata": {"labels": {"disk": "ssd"}}}));
        let p = pod(
            "p",
            json!({"spec": {"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 5, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}},
                {"weight": 7, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["hdd"]}]}},
                {"weight": 3, "preference": {"matchExpressions": [{"key": "disk", "operator": "Exists"}]}}
            ]}}}}),
        );
        assert_eq!(node_affinity_score(&PodCtx::new(&p).expect("ctx"), &n), 8);
    }

    #[test]
    fn taints_and_tolerations() {
        let n = info(json!({"spec": {"taints": [
            {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"},
            {"key": "soft", "value": "x", "effect": "PreferNoSchedule"}
        ]}}));
        let p = pod("p", json!({}));
        let ctx = PodCtx::new(&p).expect("ctx");
        assert_eq!(taint_toleration(&ctx, &n), Err(Reason::Taint { key: "dedicated".into(), value: "gpu".into() }));
        assert_eq!(intolerable_prefer_no_schedule(&ctx, &n), 1);
        assert_eq!(
            Reason::Taint { key: "dedicated".into(), value: "gpu".into() }.to_string(),
            "node(s) had untolerated taint {dedicated: gpu}"
        );
        let p = pod("p", json!({"spec": {"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu"}]}}));
        assert_eq!(taint_toleration(&PodCtx::new(&p).expect("ctx"), &n), Ok(()));
        let p = pod("p", json!({"spec": {"tolerations": [{"key": "dedicated", "value": "cpu"}]}}));
        assert!(taint_toleration(&PodCtx::new(&p).expect("ctx"), &n).is_err());
        let p = pod("p", json!({"spec": {"tolerations": [{"operator": "Exists"}]}}));
        let ctx = PodCtx::new(&p).expect("ctx");
        assert_eq!(taint_toleration(&ctx, &n), Ok(()));
        assert_eq!(intolerable_prefer_no_schedule(&ctx, &n), 0);
        let p = pod(
            "p",
            json!({"spec": {"tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoExecute"}]}}),
        );
        assert!(taint_toleration(&PodCtx::new(&p).expect("ctx"), &n).is_err());
        let exec = info(json!({"spec": {"taints": [{"key": "k", "effect": "NoExecute"}]}}));
        let p = pod("p", json!({}));
        assert!(taint_toleration(&PodCtx::new(&p).expect("ctx"), &exec).is_err());
    }

    #[test]
    fn least_allocated_prefers_emptier_nodes_and_balanced_prefers_even_use() {
        let big = |cpu: &str, mem: &str| {
            pod(
                "e",
                json!({"spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu, "memory": mem}}}]}}),
            )
        };
        let empty = node_with(node("a", json!({})), &[]);
        let busy = node_with(node("b", json!({})), &[big("3", "6Gi")]);
        let skewed = node_with(node("c", json!({})), &[big("3", "1Gi")]);
        let p = big("500m", "1Gi");
        let ctx = PodCtx::new(&p).expect("ctx");
        assert!(least_allocated(&ctx, &empty) > least_allocated(&ctx, &busy));
        assert_eq!(least_allocated(&ctx, &empty), (((4000 - 500) * 100 / 4000) + 87) / 2);
        assert!(balanced_allocation(&ctx, &busy) > balanced_allocation(&ctx, &skewed));
    }
}
