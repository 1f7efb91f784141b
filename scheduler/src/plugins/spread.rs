//! PodTopologySpread: `topologySpreadConstraints` (DoNotSchedule filters, ScheduleAnyway
//! scores), and default spreading of a controller's pods across nodes and zones when the pod
//! declares no constraints of its own.

use std::collections::HashMap;

use ferry_api::selector::{LabelOperator, LabelRequirement, LabelSelector};
use k8s_openapi::api::core::v1::TopologySpreadConstraint;

use super::node::{matches_node_selector_and_affinity, tolerates};
use super::{PodCtx, Reason};
use crate::cache::{Cache, NodeInfo, ZONE_LABEL};

/// One constraint with its counts per domain.
#[derive(Debug)]
struct Counted {
    key: String,
    max_skew: i64,
    self_match: bool,
    counts: HashMap<String, i64>,
    min: i64,
}

/// Counts for the pod's constraints of one kind (hard or soft).
#[derive(Debug, Default)]
pub struct State {
    constraints: Vec<Counted>,
}

impl State {
    /// Whether there is nothing to check.
    pub fn is_empty(&self) -> bool {
        self.constraints.is_empty()
    }
}

fn selector_for(pod: &PodCtx<'_>, c: &TopologySpreadConstraint) -> Option<LabelSelector> {
    let base = LabelSelector::from_k8s(c.label_selector.as_ref()?).ok()?;
    let mut reqs = base.requirements().to_vec();
    for key in c.match_label_keys.iter().flatten() {
        if let Some(v) = pod.info.labels.get(key) {
            reqs.extend(LabelRequirement::new(key.clone(), LabelOperator::In, [v.clone()]).ok());
        }
    }
    Some(LabelSelector::from_requirements(reqs))
}

fn eligible(pod: &PodCtx<'_>, c: &TopologySpreadConstraint, node: &NodeInfo) -> bool {
    if !node.labels.contains_key(&c.topology_key) {
        return false;
    }
    if c.node_affinity_policy.as_deref() != Some("Ignore")
        && !matches_node_selector_and_affinity(pod.spec, &node.name, &node.labels)
    {
        return false;
    }
    if c.node_taints_policy.as_deref() == Some("Honor") {
        let untolerated = node.taints.iter().any(|t| {
            matches!(t.effect.as_str(), "NoSchedule" | "NoExecute")
                && !pod.tolerations.iter().any(|tol| tolerates(tol, t))
        });
        if untolerated {
            return false;
        }
    }
    true
}

/// Counts matching pods per domain for the constraints with `when` (`DoNotSchedule` or
/// `ScheduleAnyway`).
pub fn prepare(pod: &PodCtx<'_>, cache: &Cache, when: &str) -> State {
    let mut state = State::default();
    let Some(constraints) = pod.spec.topology_spread_constraints.as_ref() else { return state };
    for c in constraints.iter().filter(|c| c.when_unsatisfiable == when) {
        let Some(selector) = selector_for(pod, c) else { continue };
        // Every domain of an eligible node counts, with or without matching pods.
        let mut counts: HashMap<String, i64> = HashMap::new();
        for node in cache.nodes().filter(|n| eligible(pod, c, n)) {
            if let Some(v) = node.labels.get(&c.topology_key).filter(|v| !counts.contains_key(*v)) {
                counts.insert(v.clone(), 0);
            }
        }
        for (p, node) in cache.pods_selected_by(&selector) {
            let matching = !p.terminating
                && p.key != pod.info.key
                && p.namespace == pod.info.namespace
                && selector.matches(&p.labels);
            if matching && eligible(pod, c, node) {
                if let Some(n) = node.labels.get(&c.topology_key).and_then(|v| counts.get_mut(v)) {
                    *n += 1;
                }
            }
        }
        let mut min = counts.values().copied().min().unwrap_or(0);
        if c.min_domains.is_some_and(|m| (counts.len() as i64) < i64::from(m)) {
            min = 0;
        }
        state.constraints.push(Counted {
            key: c.topology_key.clone(),
            max_skew: i64::from(c.max_skew),
            self_match: selector.matches(&pod.info.labels),
            counts,
            min,
        });
    }
    state
}

/// DoNotSchedule filter: placing the pod must keep every constraint's skew within maxSkew.
pub fn filter(s: &State, node: &NodeInfo) -> Result<(), Reason> {
    for c in &s.constraints {
        let Some(v) = node.labels.get(&c.key) else { return Err(Reason::SpreadMissingLabel) };
        let count = c.counts.get(v).copied().unwrap_or(0);
        if count + i64::from(c.self_match) - c.min > c.max_skew {
            return Err(Reason::Spread);
        }
    }
    Ok(())
}

/// ScheduleAnyway score (raw, lower is better): matching pods in the node's domains, each
/// constraint weighted by log(domains + 2) as Kubernetes does.
pub fn score(s: &State, node: &NodeInfo) -> i64 {
    s.constraints
        .iter()
        .map(|c| {
            let weight = ((c.counts.len() + 2) as f64).ln();
            let n = node.labels.get(&c.key).and_then(|v| c.counts.get(v)).copied().unwrap_or(0);
            (n as f64 * weight * 100.0) as i64
        })
        .sum()
}

/// Default spreading state: where the pod's controller already has pods, per node and zone.
#[derive(Debug, Default)]
pub struct DefaultSpread {
    by_node: HashMap<String, u32>,
    by_zone: HashMap<String, u32>,
}

impl DefaultSpread {
    /// Whether all nodes would score the same.
    pub fn is_empty(&self) -> bool {
        self.by_node.is_empty()
    }
}

/// Prepares default spreading for a pod with a controlling owner and no spread constraints.
pub fn prepare_default(pod: &PodCtx<'_>, cache: &Cache) -> DefaultSpread {
    let mut s = DefaultSpread::default();
    if pod.spec.topology_spread_constraints.as_ref().is_some_and(|c| !c.is_empty()) {
        return s;
    }
    let Some(owner) = pod.info.owner_uid.as_deref() else { return s };
    let Some(counts) = cache.owner_counts(owner) else { return s };
    for (node, n) in counts {
        s.by_node.insert(node.clone(), *n);
        if let Some(zone) = cache.node(node).and_then(|i| i.labels.get(ZONE_LABEL)) {
            *s.by_zone.entry(zone.clone()).or_default() += n;
        }
    }
    s
}

/// Default spreading score (raw, lower is better): the controller's pods on the node plus,
/// weighted double, in the node's zone.
pub fn default_score(s: &DefaultSpread, node: &NodeInfo) -> i64 {
    let on_node = i64::from(s.by_node.get(&node.name).copied().unwrap_or(0));
    let in_zone = node.labels.get(ZONE_LABEL).and_then(|z| s.by_zone.get(z)).copied().unwrap_or(0);
    on_node + 2 * i64::from(in_zone)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testutil::{node, pod};
    use k8s_openapi::api::core::v1::Pod;
    use serde_json::json;

    fn cluster(placed: &[(&str, Pod)]) -> Cache {
        let mut c = Cache::new();
        for (i, zone) in ["a", "a", "b", "c"].iter().enumerate() {
            let labels = if i == 3 { json!({"other": "x"}) } else { json!({ZONE_LABEL: zone}) };
            c.apply_node(&node(&format!("n{i}"), json!({"metadata": {"labels": labels}})));
        }
        for (n, p) in placed {
            let mut p = p.clone();
            p.spec.as_mut().expect("spec").node_name = Some(n.to_string());
            c.apply_pod(&p);
        }
        c
    }

    fn app(name: &str) -> Pod {
        pod(name, json!({"metadata": {"labels": {"app": "web"}}}))
    }

    fn spread(when: &str, skew: i32) -> Pod {
        pod(
            "new",
            json!({"metadata": {"labels": {"app": "web"}}, "spec": {"topologySpreadConstraints": [
                {"maxSkew": skew, "topologyKey": ZONE_LABEL, "whenUnsatisfiable": when,
                 "labelSelector": {"matchLabels": {"app": "web"}}}]}}),
        )
    }

    #[test]
    fn do_not_schedule_keeps_skew() {
        let c = cluster(&[("n0", app("a")), ("n1", app("b"))]);
        let p = spread("DoNotSchedule", 1);
        let ctx = PodCtx::new(&p).expect("ctx");
        let s = prepare(&ctx, &c, "DoNotSchedule");
        let res: Vec<_> = c.nodes().map(|n| filter(&s, n)).collect();
        assert_eq!(res, vec![Err(Reason::Spread), Err(Reason::Spread), Ok(()), Err(Reason::SpreadMissingLabel)]);
        let p = spread("DoNotSchedule", 3);
        let ctx = PodCtx::new(&p).expect("ctx");
        let s = prepare(&ctx, &c, "DoNotSchedule");
        assert!(filter(&s, c.node("n0").expect("n0")).is_ok());
        // Soft constraints are not filters.
        assert!(prepare(&ctx, &c, "ScheduleAnyway").is_empty());
    }

    #[test]
    fn min_domains_treats_missing_domains_as_zero() {
        let c = cluster(&[("n0", app("a")), ("n2", app("b"))]);
        let mut p = spread("DoNotSchedule", 1);
        let ctx = PodCtx::new(&p).expect("ctx");
        assert!(filter(&prepare(&ctx, &c, "DoNotSchedule"), c.node("n0").expect("n0")).is_ok());
        if let Some(cs) = p.spec.as_mut().and_then(|s| s.topology_spread_constraints.as_mut()) {
            cs[0].min_domains = Some(3);
        }
        let ctx = PodCtx::new(&p).expect("ctx");
        assert_eq!(filter(&prepare(&ctx, &c, "DoNotSchedule"), c.node("n0").expect("n0")), Err(Reason::Spread));
    }

    #[test]
    fn schedule_anyway_scores_emptier_domains_lower() {
        let c = cluster(&[("n0", app("a")), ("n1", app("b"))]);
        let p = spread("ScheduleAnyway", 1);
        let ctx = PodCtx::new(&p).expect("ctx");
        let s = prepare(&ctx, &c, "ScheduleAnyway");
        assert!(score(&s, c.node("n0").expect("n0")) > score(&s, c.node("n2").expect("n2")));
        assert_eq!(score(&s, c.node("n2").expect("n2")), 0);
    }

    #[test]
    fn default_spreading_counts_controller_pods_by_node_and_zone() {
        let owned = |name: &str| {
            pod(
                name,
                json!({"metadata": {"ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "rs-1", "controller": true}]}}),
            )
        };
        let c = cluster(&[("n0", owned("a")), ("n1", owned("b")), ("n1", owned("c"))]);
        let p = owned("new");
        let ctx = PodCtx::new(&p).expect("ctx");
        let s = prepare_default(&ctx, &c);
        let scores: Vec<i64> = c.nodes().map(|n| default_score(&s, n)).collect();
        assert_eq!(scores, vec![1 + 6, 2 + 6, 0, 0]);
        let lone = pod("x", json!({}));
        assert!(prepare_default(&PodCtx::new(&lone).expect("ctx"), &c).is_empty());
    }
}
