//! The decisions of the node lifecycle controller, without I/O: a node's health from its
//! heartbeats, the taints that health calls for, the eviction brakes per zone, and when a pod
//! on a NoExecute-tainted node must go.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod, Taint, Toleration};

/// `node.kubernetes.io/not-ready`: the nodelet reports Ready=False.
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
/// `node.kubernetes.io/unreachable`: the nodelet stopped heartbeating (Ready=Unknown).
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// `node.kubernetes.io/unschedulable`: the node is cordoned.
pub const UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
/// The zone label.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// What the controller concludes about a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// Heartbeating and Ready=True.
    Ready,
    /// Heartbeating and Ready=False (or no Ready condition yet).
    NotReady,
    /// No heartbeat within the grace period (Ready=Unknown).
    Unknown,
}

impl Health {
    /// Whether the node counts as unhealthy for the zone's disruption state.
    pub fn unhealthy(self) -> bool {
        self != Health::Ready
    }
}

/// The node's health: `Unknown` once the last heartbeat (observed on the local clock) is older
/// than `grace`, else what its Ready condition says.
pub fn health(node: &Node, since_heartbeat: Duration, grace: Duration) -> Health {
    if since_heartbeat > grace {
        return Health::Unknown;
    }
    match ready_status(node).as_deref() {
        Some("True") => Health::Ready,
        Some("Unknown") => Health::Unknown,
        _ => Health::NotReady,
    }
}

/// The status of the node's Ready condition.
pub fn ready_status(node: &Node) -> Option<String> {
    node.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready").map(|c| c.status.clone())
}

fn taint(key: &str, effect: &str) -> Taint {
    Taint { key: key.to_owned(), effect: effect.to_owned(), value: None, time_added: None }
}

fn ours(t: &Taint) -> bool {
    matches!(t.key.as_str(), NOT_READY | UNREACHABLE | UNSCHEDULABLE)
}

/// The taints the node should carry: its own (others') taints, plus ours for `health` and
/// cordon. `allow_no_execute` says whether a *new* NoExecute taint may be added now (the
/// eviction brakes); a NoExecute taint the node already has for the same condition is kept.
/// Taints already present keep their `timeAdded`; new ones get `now`.
pub fn desired_taints(node: &Node, health: Health, allow_no_execute: bool, now: jiff::Timestamp) -> Vec<Taint> {
    let current: Vec<Taint> = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
    let mut want: Vec<Taint> = current.iter().filter(|t| !ours(t)).cloned().collect();
    let mut ours_wanted = Vec::new();
    match health {
        Health::Ready => {}
        Health::NotReady => {
            ours_wanted.push(taint(NOT_READY, "NoSchedule"));
            ours_wanted.push(taint(NOT_READY, "NoExecute"));
        }
        Health::Unknown => {
            ours_wanted.push(taint(UNREACHABLE, "NoSchedule"));
            ours_wanted.push(taint(UNREACHABLE, "NoExecute"));
        }
    }
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        ours_wanted.push(taint(UNSCHEDULABLE, "NoSchedule"));
    }
    for t in ours_wanted {
        let existing = current.iter().find(|c| c.key == t.key && c.effect == t.effect);
        match existing {
            Some(e) => want.push(e.clone()),
            None if t.effect == "NoExecute" && !allow_no_execute => {}
            None => {
                want.push(Taint { time_added: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now)), ..t })
            }
        }
    }
    want
}

/// Whether `want` differs from the node's taints (ignoring order).
pub fn taints_differ(node: &Node, want: &[Taint]) -> bool {
    let current: Vec<Taint> = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
    let key = |t: &Taint| (t.key.clone(), t.effect.clone(), t.value.clone());
    let mut a: Vec<_> = current.iter().map(key).collect();
    let mut b: Vec<_> = want.iter().map(key).collect();
    a.sort();
    b.sort();
    a != b
}

/// The state of one zone, as Kubernetes' node lifecycle controller computes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZoneState {
    /// Mostly healthy: the normal eviction rate.
    Normal,
    /// More than `unhealthy_threshold` of the nodes (and more than two) are unhealthy.
    PartialDisruption,
    /// No node of the zone is healthy.
    FullDisruption,
}

/// The zone's state from its healthy and unhealthy node counts.
pub fn zone_state(healthy: usize, unhealthy: usize, unhealthy_threshold: f64) -> ZoneState {
    if healthy == 0 && unhealthy > 0 {
        ZoneState::FullDisruption
    } else if unhealthy > 2 && unhealthy as f64 / (healthy + unhealthy) as f64 >= unhealthy_threshold {
        ZoneState::PartialDisruption
    } else {
        ZoneState::Normal
    }
}

/// The eviction brakes' settings.
#[derive(Clone, Copy, Debug)]
pub struct Brakes {
    /// Nodes per second whose pods may be evicted (NoExecute taints added) in a normal zone.
    pub eviction_rate: f64,
    /// The rate in a partially disrupted zone of more than `large_cluster_threshold` nodes.
    pub secondary_eviction_rate: f64,
    /// Fraction of unhealthy nodes at which a zone counts as partially disrupted.
    pub unhealthy_zone_threshold: f64,
    /// Zones of at most this many nodes stop evicting when partially disrupted.
    pub large_cluster_threshold: usize,
}

impl Default for Brakes {
    fn default() -> Self {
        Self {
            eviction_rate: 0.1,
            secondary_eviction_rate: 0.01,
            unhealthy_zone_threshold: 0.55,
            large_cluster_threshold: 50,
        }
    }
}

impl Brakes {
    /// Evictions per second for a zone of `size` nodes in `state`, given whether every zone of
    /// the cluster is fully disrupted (then nothing is evicted: the control plane, not the nodes,
    /// is the likely problem).
    pub fn rate(&self, state: ZoneState, size: usize, all_disrupted: bool) -> f64 {
        if all_disrupted {
            return 0.0;
        }
        match state {
            ZoneState::Normal | ZoneState::FullDisruption => self.eviction_rate,
            ZoneState::PartialDisruption if size > self.large_cluster_threshold => self.secondary_eviction_rate,
            ZoneState::PartialDisruption => 0.0,
        }
    }
}

/// Zone of a node (`""` when unlabelled).
pub fn zone(node: &Node) -> String {
    node.metadata.labels.as_ref().and_then(|l| l.get(ZONE_LABEL).cloned()).unwrap_or_default()
}

/// Per zone: (healthy, unhealthy) node counts.
pub fn zone_counts<'a>(nodes: impl Iterator<Item = (&'a Node, Health)>) -> BTreeMap<String, (usize, usize)> {
    let mut out: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for (node, h) in nodes {
        let e = out.entry(zone(node)).or_default();
        if h.unhealthy() {
            e.1 += 1;
        } else {
            e.0 += 1;
        }
    }
    out
}

pub use ferry_api::taints::tolerates;

/// When a pod on a node with these taints must be evicted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Eviction {
    /// It tolerates every NoExecute taint forever (or there is none).
    Never,
    /// A NoExecute taint it does not tolerate: now.
    Now,
    /// Every NoExecute taint is tolerated, the shortest for this long.
    After(std::time::Duration),
}

/// Kubernetes' taint manager rule: untolerated NoExecute → now; otherwise the shortest
/// `tolerationSeconds` over the tolerations used; none bounded → never. The window counts
/// from when the controller first found the pod on the tainted node ([`TolerationClock`]),
/// as Kubernetes' taint manager counts from when it scheduled the eviction.
pub fn eviction(pod: &Pod, taints: &[Taint]) -> Eviction {
    let tolerations: &[Toleration] = pod.spec.as_ref().and_then(|s| s.tolerations.as_deref()).unwrap_or_default();
    let mut shortest: Option<i64> = None;
    for t in taints.iter().filter(|t| t.effect == "NoExecute") {
        let used: Vec<&Toleration> = tolerations.iter().filter(|tol| tolerates(tol, t)).collect();
        if used.is_empty() {
            return Eviction::Now;
        }
        // Unbounded if any tolerating toleration has no tolerationSeconds.
        if used.iter().any(|tol| tol.toleration_seconds.is_none()) {
            continue;
        }
        let secs = used.iter().filter_map(|tol| tol.toleration_seconds).min().unwrap_or(0).max(0);
        shortest = Some(shortest.map_or(secs, |s| s.min(secs)));
    }
    shortest.map_or(Eviction::Never, |s| Eviction::After(std::time::Duration::from_secs(s.unsigned_abs())))
}

/// When each pod's toleration window started, on the controller's monotonic clock: the first
/// pass that found it on a NoExecute-tainted node with a bounded toleration. A pod whose node
/// loses the taints (the node recovered) starts a fresh window next time.
#[derive(Debug, Default)]
pub struct TolerationClock {
    started: std::collections::HashMap<String, tokio::time::Instant>,
}

impl TolerationClock {
    /// Whether pod `uid` must go now, given its [`eviction`] rule.
    pub fn due(&mut self, uid: &str, rule: Eviction, now: tokio::time::Instant) -> bool {
        match rule {
            Eviction::Never => {
                self.started.remove(uid);
                false
            }
            Eviction::Now => true,
            Eviction::After(window) => {
                let start = *self.started.entry(uid.to_owned()).or_insert(now);
                now.saturating_duration_since(start) >= window
            }
        }
    }

    /// Forget pods not in `live` (no longer on a tainted node, deleted).
    pub fn retain(&mut self, live: &std::collections::HashSet<String>) {
        self.started.retain(|uid, _| live.contains(uid));
    }
}

/// The last heartbeat seen per node and when it changed, on the controller's monotonic clock
/// (so clock skew between nodes and the controller does not matter). A node seen for the first
/// time — also after a controller restart — gets a fresh grace period.
#[derive(Debug, Default)]
pub struct Heartbeats {
    observed: std::collections::HashMap<String, (String, tokio::time::Instant)>,
}

impl Heartbeats {
    /// Record node `name`'s heartbeat token `beat` (Lease renewTime, Ready heartbeat time) as
    /// seen at `now`; returns how long it has not changed.
    pub fn observe(&mut self, name: &str, beat: &str, now: tokio::time::Instant) -> std::time::Duration {
        let entry = self.observed.entry(name.to_owned()).or_insert_with(|| (beat.to_owned(), now));
        if entry.0 != beat {
            *entry = (beat.to_owned(), now);
        }
        now.saturating_duration_since(entry.1)
    }

    /// Every node's silence starts over now: the controller could not see heartbeats (its
    /// watches were down, e.g. while the API server or etcd restarted).
    pub fn restart_all(&mut self, now: tokio::time::Instant) {
        for v in self.observed.values_mut() {
            v.1 = now;
        }
    }

    /// Forget nodes not in `names`.
    pub fn retain(&mut self, names: &std::collections::HashSet<String>) {
        self.observed.retain(|n, _| names.contains(n));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(ready: &str, taints: serde_json::Value, unschedulable: bool) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": "n"},
            "spec": {"taints": taints, "unschedulable": unschedulable},
            "status": {"conditions": [{"type": "Ready", "status": ready}]},
        }))
        .expect("node")
    }

    fn keys(ts: &[Taint]) -> Vec<String> {
        let mut v: Vec<String> = ts.iter().map(|t| format!("{}:{}", t.key, t.effect)).collect();
        v.sort();
        v
    }

    #[test]
    fn health_follows_heartbeats_then_the_ready_condition() {
        let grace = Duration::from_secs(50);
        assert_eq!(health(&node("True", json!([]), false), Duration::from_secs(10), grace), Health::Ready);
        assert_eq!(health(&node("True", json!([]), false), Duration::from_secs(51), grace), Health::Unknown);
        assert_eq!(health(&node("False", json!([]), false), Duration::from_secs(1), grace), Health::NotReady);
    }

    #[test]
    fn taints_for_health_and_cordon_keep_foreign_taints() {
        let now = jiff::Timestamp::UNIX_EPOCH;
        let n = node("Unknown", json!([{"key": "team", "value": "a", "effect": "NoSchedule"}]), true);
        let want = desired_taints(&n, Health::Unknown, true, now);
        assert_eq!(
            keys(&want),
            [
                "node.kubernetes.io/unreachable:NoExecute",
                "node.kubernetes.io/unreachable:NoSchedule",
                "node.kubernetes.io/unschedulable:NoSchedule",
                "team:NoSchedule"
            ]
        );
        // The brakes hold back a new NoExecute taint, not the NoSchedule one.
        let held = desired_taints(&n, Health::Unknown, false, now);
        assert!(!keys(&held).contains(&"node.kubernetes.io/unreachable:NoExecute".to_owned()));
        assert!(keys(&held).contains(&"node.kubernetes.io/unreachable:NoSchedule".to_owned()));
        // Recovery removes ours, keeps the foreign one.
        let tainted = node("True", serde_json::to_value(&want).expect("json"), false);
        assert_eq!(keys(&desired_taints(&tainted, Health::Ready, true, now)), ["team:NoSchedule"]);
        assert!(taints_differ(&tainted, &desired_taints(&tainted, Health::Ready, true, now)));
        assert!(!taints_differ(&tainted, &want));
    }

    #[test]
    fn existing_no_execute_taints_keep_their_time_even_when_braked() {
        let n = node(
            "Unknown",
            json!([{"key": UNREACHABLE, "effect": "NoExecute", "timeAdded": "2026-01-01T00:00:00Z"}]),
            false,
        );
        let want = desired_taints(&n, Health::Unknown, false, jiff::Timestamp::now());
        let kept = want.iter().find(|t| t.effect == "NoExecute").expect("kept");
        assert_eq!(kept.time_added.as_ref().map(|t| t.0.to_string()).as_deref(), Some("2026-01-01T00:00:00Z"));
    }

    #[test]
    fn zone_states_and_rates() {
        let b = Brakes::default();
        assert_eq!(zone_state(10, 0, 0.55), ZoneState::Normal);
        assert_eq!(zone_state(1, 2, 0.55), ZoneState::Normal, "two unhealthy nodes never count as disruption");
        assert_eq!(zone_state(2, 3, 0.55), ZoneState::PartialDisruption);
        assert_eq!(zone_state(0, 1, 0.55), ZoneState::FullDisruption);
        assert_eq!(b.rate(ZoneState::Normal, 3, false), 0.1);
        assert_eq!(b.rate(ZoneState::PartialDisruption, 100, false), 0.01);
        assert_eq!(b.rate(ZoneState::PartialDisruption, 10, false), 0.0, "small clusters stop");
        assert_eq!(b.rate(ZoneState::FullDisruption, 3, false), 0.1, "one dead zone among healthy ones");
        assert_eq!(b.rate(ZoneState::Normal, 3, true), 0.0, "everything down: evict nothing");
    }

    fn pod(tolerations: serde_json::Value) -> Pod {
        serde_json::from_value(
            json!({"metadata": {"name": "p"}, "spec": {"containers": [], "tolerations": tolerations}}),
        )
        .expect("pod")
    }

    #[test]
    fn eviction_windows_follow_tolerations() {
        let t = Taint { key: UNREACHABLE.into(), effect: "NoExecute".into(), value: None, time_added: None };
        assert_eq!(eviction(&pod(json!([])), std::slice::from_ref(&t)), Eviction::Now);
        let bounded =
            pod(json!([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30}]));
        assert_eq!(eviction(&bounded, std::slice::from_ref(&t)), Eviction::After(Duration::from_secs(30)));
        let two = pod(json!([
            {"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30},
            {"key": NOT_READY, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}
        ]));
        let not_ready = Taint { key: NOT_READY.into(), ..t.clone() };
        assert_eq!(eviction(&two, &[t.clone(), not_ready]), Eviction::After(Duration::from_secs(5)), "the shortest");
        let forever = pod(json!([{"operator": "Exists"}]));
        assert_eq!(eviction(&forever, std::slice::from_ref(&t)), Eviction::Never);
        let other = pod(json!([{"key": NOT_READY, "operator": "Exists", "effect": "NoExecute"}]));
        assert_eq!(eviction(&other, std::slice::from_ref(&t)), Eviction::Now);
        let no_schedule = Taint { effect: "NoSchedule".into(), ..t };
        assert_eq!(eviction(&pod(json!([])), &[no_schedule]), Eviction::Never, "only NoExecute evicts");
    }

    #[tokio::test(start_paused = true)]
    async fn toleration_windows_count_from_first_sight_on_the_monotonic_clock() {
        let mut clock = TolerationClock::default();
        let window = Eviction::After(Duration::from_secs(300));
        let t0 = tokio::time::Instant::now();
        assert!(!clock.due("p", window, t0));
        tokio::time::advance(Duration::from_millis(299_999)).await;
        assert!(!clock.due("p", window, tokio::time::Instant::now()), "one millisecond early");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(clock.due("p", window, tokio::time::Instant::now()), "exactly tolerationSeconds after first sight");
        // The node recovers (the pod is no longer on a tainted node), then fails again: a fresh window.
        clock.retain(&std::collections::HashSet::new());
        assert!(!clock.due("p", window, tokio::time::Instant::now()));
        tokio::time::advance(Duration::from_secs(299)).await;
        assert!(!clock.due("p", window, tokio::time::Instant::now()));
        // A shorter toleration later (a second taint) counts from the same start.
        assert!(clock.due("p", Eviction::After(Duration::from_secs(10)), tokio::time::Instant::now()));
        assert!(clock.due("q", Eviction::Now, tokio::time::Instant::now()), "untolerated: at once");
        assert!(!clock.due("r", Eviction::Never, tokio::time::Instant::now()), "tolerated forever");
    }

    #[tokio::test(start_paused = true)]
    async fn grace_counts_from_the_last_changed_heartbeat() {
        let grace = Duration::from_secs(50);
        let ready = node("True", json!([]), false);
        let mut beats = Heartbeats::default();
        let now = tokio::time::Instant::now;
        assert_eq!(beats.observe("n", "r1", now()), Duration::ZERO, "first sight: a fresh grace period");
        // Renewals every 10 s keep it healthy however long it runs.
        for i in 2..20 {
            tokio::time::advance(Duration::from_secs(10)).await;
            let since = beats.observe("n", &format!("r{i}"), now());
            assert_eq!(health(&ready, since, grace), Health::Ready);
        }
        // Silent: the same token for exactly the grace period is still Ready, a moment more is Unknown.
        tokio::time::advance(grace).await;
        assert_eq!(health(&ready, beats.observe("n", "r19", now()), grace), Health::Ready);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(health(&ready, beats.observe("n", "r19", now()), grace), Health::Unknown);
        // The controller's own view was cut off (API server restart): everyone starts over.
        beats.restart_all(now());
        tokio::time::advance(Duration::from_secs(49)).await;
        assert_eq!(health(&ready, beats.observe("n", "r19", now()), grace), Health::Ready);
        // A node that was forgotten (deleted and re-created) gets a fresh grace period.
        beats.retain(&std::collections::HashSet::new());
        tokio::time::advance(Duration::from_secs(100)).await;
        assert_eq!(beats.observe("n", "r19", now()), Duration::ZERO);
    }

    #[test]
    fn toleration_matching() {
        let t = Taint { key: "k".into(), value: Some("v".into()), effect: "NoExecute".into(), time_added: None };
        let tol = |v: serde_json::Value| -> Toleration { serde_json::from_value(v).expect("toleration") };
        assert!(tolerates(&tol(json!({"key": "k", "value": "v"})), &t));
        assert!(!tolerates(&tol(json!({"key": "k", "value": "w"})), &t));
        assert!(tolerates(&tol(json!({"key": "k", "operator": "Exists", "effect": "NoExecute"})), &t));
        assert!(!tolerates(&tol(json!({"key": "k", "operator": "Exists", "effect": "NoSchedule"})), &t));
        assert!(tolerates(&tol(json!({"operator": "Exists"})), &t));
        assert!(!tolerates(&tol(json!({"value": "v"})), &t), "Equal needs a key");
    }
}
