//! One scheduling decision: filter nodes, score the feasible ones, pick the best.
//!
//! Like kube-scheduler, large clusters are sampled: filtering stops once enough feasible nodes
//! are found (adaptive percentage: 50 % minus 1 % per 125 nodes, at least 5 % and 100 nodes),
//! and the next cycle starts where this one stopped so every node gets its turn.

use std::collections::BTreeMap;
use std::fmt;

use crate::cache::{Cache, NodeInfo};
use crate::plugins::{interpod, node, spread, PodCtx, Reason};

/// Default score weights (kube-scheduler's default profile).
const W_LEAST: i64 = 1;
const W_BALANCED: i64 = 1;
const W_NODE_AFFINITY: i64 = 2;
const W_TAINT: i64 = 3;
const W_INTERPOD: i64 = 2;
const W_SPREAD: i64 = 2;

/// The outcome of a successful decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The chosen node.
    pub node: String,
    /// Nodes the filters ran on.
    pub evaluated: usize,
    /// Nodes that passed.
    pub feasible: usize,
}

/// Why a pod fits nowhere: per node, the reasons the first failing filter gave.
#[derive(Debug, Clone, Default)]
pub struct FitError {
    /// Nodes considered.
    pub num_nodes: usize,
    /// Failing nodes and why.
    pub reasons: BTreeMap<String, Vec<Reason>>,
}

impl FitError {
    /// Reasons counted over nodes, as `"N reason"` strings sorted like Kubernetes sorts them.
    fn histogram(&self, f: impl Fn(&Reason) -> String) -> Vec<String> {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for reasons in self.reasons.values() {
            for r in reasons {
                *counts.entry(f(r)).or_default() += 1;
            }
        }
        let mut out: Vec<String> = counts.into_iter().map(|(r, n)| format!("{n} {r}")).collect();
        out.sort();
        out
    }
}

impl fmt::Display for FitError {
    /// `0/3 nodes are available: 2 Insufficient cpu, 1 node(s) had untolerated taint {a: b}.`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.num_nodes == 0 {
            return f.write_str("no nodes available to schedule pods");
        }
        write!(f, "0/{} nodes are available: {}.", self.num_nodes, self.histogram(Reason::to_string).join(", "))
    }
}

/// Filter-and-score engine; holds the rotating start index between cycles.
#[derive(Debug, Default)]
pub struct Framework {
    next_start: usize,
    /// Percentage of nodes to find feasible before scoring; `None` is Kubernetes' adaptive
    /// default, `Some(100)` checks every node.
    pub percentage_of_nodes_to_score: Option<u32>,
}

fn num_feasible_to_find(n: usize, pct: Option<u32>) -> usize {
    if n < 100 || pct.is_some_and(|p| p >= 100) {
        return n;
    }
    let pct = pct.filter(|p| *p > 0).map_or_else(|| (50 - (n / 125) as i64).max(5) as usize, |p| p as usize);
    (n * pct / 100).max(100).min(n)
}

/// Per-cycle state of the cluster-wide plugins.
pub struct CycleState {
    interpod: interpod::FilterState,
    hard_spread: spread::State,
}

impl CycleState {
    /// Runs the pre-filter passes for a pod.
    pub fn new(pod: &PodCtx<'_>, cache: &Cache) -> CycleState {
        CycleState {
            interpod: interpod::prefilter(pod, cache),
            hard_spread: spread::prepare(pod, cache, "DoNotSchedule"),
        }
    }
}

/// Runs every filter on one node; `out` receives the first failing plugin's reasons.
pub fn run_filters(pod: &PodCtx<'_>, state: &CycleState, n: &NodeInfo, out: &mut Vec<Reason>) {
    let single = [
        node::unschedulable(pod, n),
        node::node_name(pod, n),
        node::taint_toleration(pod, n),
        node::node_affinity(pod, n),
        node::node_ports(pod, n),
    ];
    for r in single {
        if let Err(e) = r {
            out.push(e);
            return;
        }
    }
    node::resources_fit(pod, n, out);
    if !out.is_empty() {
        return;
    }
    if !state.hard_spread.is_empty() {
        if let Err(e) = spread::filter(&state.hard_spread, n) {
            out.push(e);
            return;
        }
    }
    if let Err(e) = interpod::filter(&state.interpod, pod, n) {
        out.push(e);
    }
}

impl Framework {
    /// A framework with Kubernetes' adaptive sampling.
    pub fn new() -> Framework {
        Framework::default()
    }

    /// Chooses a node for the pod, or explains why none fits.
    pub fn schedule(&mut self, pod: &PodCtx<'_>, cache: &Cache) -> Result<Decision, FitError> {
        let n = cache.node_count();
        if n == 0 {
            return Err(FitError::default());
        }
        let state = CycleState::new(pod, cache);
        let want = num_feasible_to_find(n, self.percentage_of_nodes_to_score);
        let start = self.next_start % n;
        let mut feasible: Vec<&NodeInfo> = Vec::with_capacity(want.min(1024));
        let mut failed = FitError { num_nodes: n, reasons: BTreeMap::new() };
        let mut reasons = Vec::new();
        let mut evaluated = 0;
        for i in 0..n {
            let Some(info) = cache.nth_node((start + i) % n) else { continue };
            evaluated += 1;
            reasons.clear();
            // Pods nominated here by preemption with at least our priority keep their room.
            let noms = cache.nominated_on(&info.name);
            if noms.iter().any(|p| p.key != pod.info.key && p.priority >= pod.info.priority) {
                let mut with = info.clone();
                for p in noms.iter().filter(|p| p.key != pod.info.key && p.priority >= pod.info.priority) {
                    with.add_pod(p.clone());
                }
                run_filters(pod, &state, &with, &mut reasons);
            } else {
                run_filters(pod, &state, info, &mut reasons);
            }
            if reasons.is_empty() {
                feasible.push(info);
                if feasible.len() >= want {
                    break;
                }
            } else {
                failed.reasons.insert(info.name.clone(), reasons.clone());
            }
        }
        self.next_start = (start + evaluated) % n;
        if feasible.is_empty() {
            return Err(failed);
        }
        let best = if feasible.len() == 1 { feasible[0] } else { self.best(pod, cache, &feasible) };
        Ok(Decision { node: best.name.clone(), evaluated, feasible: feasible.len() })
    }

    fn best<'c>(&self, pod: &PodCtx<'_>, cache: &Cache, nodes: &[&'c NodeInfo]) -> &'c NodeInfo {
        let ip = interpod::prescore(pod, cache);
        let soft = spread::prepare(pod, cache, "ScheduleAnyway");
        let dflt = spread::prepare_default(pod, cache);
        let raw: Vec<[i64; 7]> = nodes
            .iter()
            .map(|n| {
                [
                    node::least_allocated(pod, n),
                    node::balanced_allocation(pod, n),
                    node::node_affinity_score(pod, n),
                    node::intolerable_prefer_no_schedule(pod, n),
                    if interpod::score_is_flat(&ip) { 0 } else { interpod::score(&ip, n) },
                    if soft.is_empty() { 0 } else { spread::score(&soft, n) },
                    if dflt.is_empty() { 0 } else { spread::default_score(&dflt, n) },
                ]
            })
            .collect();
        let (mut min, mut max) = ([i64::MAX; 7], [i64::MIN; 7]);
        for r in &raw {
            for k in 0..7 {
                min[k] = min[k].min(r[k]);
                max[k] = max[k].max(r[k]);
            }
        }
        let lower_better = |x: i64, k: usize| if max[k] > 0 { (max[k] + min[k] - x) * 100 / max[k] } else { 100 };
        let mut best = 0;
        let mut best_score = i64::MIN;
        for (i, r) in raw.iter().enumerate() {
            let affinity = if max[2] > 0 { r[2] * 100 / max[2] } else { 0 };
            let taint = if max[3] > 0 { 100 - r[3] * 100 / max[3] } else { 100 };
            let interpod = if max[4] > min[4] { (r[4] - min[4]) * 100 / (max[4] - min[4]) } else { 0 };
            let total = W_LEAST * r[0]
                + W_BALANCED * r[1]
                + W_NODE_AFFINITY * affinity
                + W_TAINT * taint
                + W_INTERPOD * interpod
                + W_SPREAD * lower_better(r[5], 5)
                + W_SPREAD * lower_better(r[6], 6);
            if total > best_score {
                best_score = total;
                best = i;
            }
        }
        nodes[best]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testutil::{node, pod};
    use serde_json::json;

    #[test]
    fn message_has_kubernetes_form() {
        let mut c = Cache::new();
        c.apply_node(&node("n1", json!({"status": {"allocatable": {"cpu": "1"}}})));
        c.apply_node(&node("n2", json!({"status": {"allocatable": {"cpu": "1"}}})));
        c.apply_node(&node("n3", json!({"spec": {"taints": [{"key": "a", "value": "b", "effect": "NoSchedule"}]}})));
        let p = pod("p", json!({"spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "2"}}}]}}));
        let ctx = PodCtx::new(&p).expect("ctx");
        let err = Framework::new().schedule(&ctx, &c).expect_err("fits nowhere");
        assert_eq!(
            err.to_string(),
            "0/3 nodes are available: 1 node(s) had untolerated taint {a: b}, 2 Insufficient cpu."
        );
        assert_eq!(FitError::default().to_string(), "no nodes available to schedule pods");
    }

    #[test]
    fn picks_the_best_scored_feasible_node() {
        let mut c = Cache::new();
        c.apply_node(&node("busy", json!({})));
        c.apply_node(&node("free", json!({})));
        c.apply_node(&node("soft", json!({"spec": {"taints": [{"key": "k", "effect": "PreferNoSchedule"}]}})));
        let mut hog =
            pod("hog", json!({"spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "3"}}}]}}));
        hog.spec.as_mut().expect("spec").node_name = Some("busy".into());
        c.apply_pod(&hog);
        let p = pod("p", json!({}));
        let d = Framework::new().schedule(&PodCtx::new(&p).expect("ctx"), &c).expect("fits");
        assert_eq!(d.node, "free");
        assert_eq!((d.evaluated, d.feasible), (3, 3));
    }

    #[test]
    fn sampling_finds_enough_nodes_and_rotates() {
        assert_eq!(num_feasible_to_find(50, None), 50);
        assert_eq!(num_feasible_to_find(5000, None), 500);
        assert_eq!(num_feasible_to_find(1000, None), 420);
        assert_eq!(num_feasible_to_find(200, Some(10)), 100);
        assert_eq!(num_feasible_to_find(5000, Some(100)), 5000);
        let mut c = Cache::new();
        for i in 0..300 {
            c.apply_node(&node(&format!("n{i:03}"), json!({})));
        }
        let p = pod("p", json!({}));
        let ctx = PodCtx::new(&p).expect("ctx");
        let mut f = Framework::new();
        let d = f.schedule(&ctx, &c).expect("fits");
        assert_eq!(d.evaluated, num_feasible_to_find(300, None));
        assert_eq!(f.next_start, d.evaluated);
    }
}
