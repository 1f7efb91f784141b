//! Preemption: when a pod fits nowhere, find one node where evicting strictly lower-priority
//! pods makes room, with the smallest victim set.
//!
//! Per candidate node (one whose failures eviction could fix): remove every lower-priority pod,
//! check the pod fits, then give back ("reprieve") victims from the highest priority down
//! while it still fits. Among nodes, prefer the lowest highest-victim priority, then the
//! smallest sum of victim priorities, then the fewest victims (Kubernetes' order).

use std::sync::Arc;

use crate::cache::{Cache, NodeInfo, PodInfo};
use crate::framework::{run_filters, CycleState, FitError};
use crate::plugins::PodCtx;

/// The chosen node and the pods to evict there.
#[derive(Debug, Clone)]
pub struct Preemption {
    /// Node to nominate.
    pub node: String,
    /// Pods to delete.
    pub victims: Vec<Arc<PodInfo>>,
}

/// Why preemption did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoPreemption {
    /// `preemptionPolicy: Never`.
    PolicyNever,
    /// Earlier victims on the nominated node are still terminating: wait for them.
    VictimsTerminating,
    /// No node would fit even after evicting every lower-priority pod.
    NoVictims,
}

fn fits(pod: &PodCtx<'_>, state: &CycleState, node: &NodeInfo) -> bool {
    let mut reasons = Vec::new();
    run_filters(pod, state, node, &mut reasons);
    reasons.is_empty()
}

/// Finds the victims for one node, if evicting lower-priority pods there can make room.
pub fn victims_on(pod: &PodCtx<'_>, state: &CycleState, node: &NodeInfo) -> Option<Vec<Arc<PodInfo>>> {
    let prio = pod.info.priority;
    let mut sim = node.clone();
    let mut candidates: Vec<Arc<PodInfo>> =
        node.pods.iter().filter(|p| p.priority < prio && !p.terminating).cloned().collect();
    if candidates.is_empty() {
        return None;
    }
    for v in &candidates {
        sim.remove_pod(&v.key);
    }
    if !fits(pod, state, &sim) {
        return None;
    }
    // Reprieve the most important first.
    candidates.sort_by(|a, b| b.priority.cmp(&a.priority).then_with(|| a.key.cmp(&b.key)));
    let mut victims = Vec::new();
    for v in candidates {
        sim.add_pod(v.clone());
        if !fits(pod, state, &sim) {
            sim.remove_pod(&v.key);
            victims.push(v);
        }
    }
    Some(victims)
}

/// Chooses a node and victims for a pod that fits nowhere.
pub fn preempt(pod: &PodCtx<'_>, cache: &Cache, fit: &FitError) -> Result<Preemption, NoPreemption> {
    if pod.info.never_preempt {
        return Err(NoPreemption::PolicyNever);
    }
    // Already nominated and lower-priority pods there are still going away: wait.
    let nominated = pod.pod.status.as_ref().and_then(|s| s.nominated_node_name.as_deref()).unwrap_or_default();
    if let Some(node) = cache.node(nominated) {
        if node.pods.iter().any(|p| p.terminating && p.priority < pod.info.priority) {
            return Err(NoPreemption::VictimsTerminating);
        }
    }
    let state = CycleState::new(pod, cache);
    let mut best: Option<((i32, i64, usize), Preemption)> = None;
    for node in cache.nodes() {
        let resolvable = fit.reasons.get(&node.name).is_none_or(|rs| rs.iter().all(|r| !r.unresolvable()));
        if !resolvable {
            continue;
        }
        let Some(victims) = victims_on(pod, &state, node) else { continue };
        if victims.is_empty() {
            continue;
        }
        let max = victims.iter().map(|v| v.priority).max().unwrap_or(i32::MIN);
        let sum: i64 = victims.iter().map(|v| i64::from(v.priority)).sum();
        let rank = (max, sum, victims.len());
        if best.as_ref().is_none_or(|(r, _)| rank < *r) {
            best = Some((rank, Preemption { node: node.name.clone(), victims }));
        }
    }
    best.map(|(_, p)| p).ok_or(NoPreemption::NoVictims)
}

/// The preemption part of an Unschedulable message: `preemption: 0/3 nodes are available: 2 No
/// preemption victims found for incoming pod, 1 Preemption is not helpful for scheduling.`
pub fn message(fit: &FitError) -> String {
    let (mut helpless, mut none) = (0, 0);
    for reasons in fit.reasons.values() {
        if reasons.iter().any(|r| r.unresolvable()) {
            helpless += 1;
        } else {
            none += 1;
        }
    }
    let mut parts = Vec::new();
    if none > 0 {
        parts.push(format!("{none} No preemption victims found for incoming pod"));
    }
    if helpless > 0 {
        parts.push(format!("{helpless} Preemption is not helpful for scheduling"));
    }
    parts.sort();
    format!("preemption: 0/{} nodes are available: {}.", fit.num_nodes, parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::Framework;
    use crate::plugins::testutil::{node, pod};
    use serde_json::json;

    fn prio_pod(name: &str, prio: i32, cpu: &str) -> k8s_openapi::api::core::v1::Pod {
        pod(
            name,
            json!({"spec": {"priority": prio, "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]}}),
        )
    }

    fn place(c: &mut Cache, node: &str, p: k8s_openapi::api::core::v1::Pod) {
        let mut p = p;
        p.spec.as_mut().expect("spec").node_name = Some(node.into());
        c.apply_pod(&p);
    }

    fn attempt(c: &Cache, p: &k8s_openapi::api::core::v1::Pod) -> Result<Preemption, NoPreemption> {
        let ctx = PodCtx::new(p).expect("ctx");
        let fit = Framework::new().schedule(&ctx, c).expect_err("fits nowhere");
        preempt(&ctx, c, &fit)
    }

    #[test]
    fn picks_the_node_with_the_fewest_lowest_priority_victims() {
        let mut c = Cache::new();
        c.apply_node(&node("a", json!({})));
        c.apply_node(&node("b", json!({})));
        // a: two 2-cpu pods of priority 1; b: one 3-cpu and one 1-cpu pod of priority 1.
        place(&mut c, "a", prio_pod("a1", 1, "2"));
        place(&mut c, "a", prio_pod("a2", 1, "2"));
        place(&mut c, "b", prio_pod("b1", 1, "3"));
        place(&mut c, "b", prio_pod("b2", 1, "1"));
        let p = prio_pod("p", 10, "3");
        let got = attempt(&c, &p).expect("preempts");
        assert_eq!(got.node, "b");
        assert_eq!(got.victims.iter().map(|v| v.key.as_str()).collect::<Vec<_>>(), vec!["default/b1"]);
    }

    #[test]
    fn prefers_lower_priority_victims_and_never_equal_or_higher() {
        let mut c = Cache::new();
        c.apply_node(&node("a", json!({})));
        c.apply_node(&node("b", json!({})));
        place(&mut c, "a", prio_pod("a1", 5, "4"));
        place(&mut c, "b", prio_pod("b1", 2, "4"));
        let got = attempt(&c, &prio_pod("p", 10, "2")).expect("preempts");
        assert_eq!((got.node.as_str(), got.victims[0].key.as_str()), ("b", "default/b1"));
        // Only equal or higher priority pods: nothing to do.
        assert!(matches!(attempt(&c, &prio_pod("p", 2, "2")), Err(NoPreemption::NoVictims)));
        let never = pod(
            "p",
            json!({"spec": {"priority": 10, "preemptionPolicy": "Never", "containers": [
            {"name": "c", "resources": {"requests": {"cpu": "2"}}}]}}),
        );
        assert!(matches!(attempt(&c, &never), Err(NoPreemption::PolicyNever)));
    }

    #[test]
    fn unresolvable_nodes_are_skipped_and_message_says_so() {
        let mut c = Cache::new();
        c.apply_node(&node("a", json!({"spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}})));
        c.apply_node(&node("b", json!({})));
        place(&mut c, "a", prio_pod("a1", 1, "4"));
        place(&mut c, "b", prio_pod("b1", 20, "4"));
        let p = prio_pod("p", 10, "2");
        let ctx = PodCtx::new(&p).expect("ctx");
        let fit = Framework::new().schedule(&ctx, &c).expect_err("fits nowhere");
        assert!(matches!(preempt(&ctx, &c, &fit), Err(NoPreemption::NoVictims)));
        assert_eq!(
            message(&fit),
            "preemption: 0/2 nodes are available: 1 No preemption victims found for incoming pod, 1 Preemption is not helpful for scheduling."
        );
    }
}
