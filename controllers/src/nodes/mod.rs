//! Self-healing when nodes fail: the node lifecycle controller (heartbeats → Ready=Unknown and
//! the not-ready/unreachable/unschedulable taints), taint-based eviction with Kubernetes'
//! brakes, pod garbage collection and node IPAM.
//!
//! Like Kubernetes' node lifecycle controller this is a periodic monitor over informer stores
//! rather than a per-object reconcile: health is a function of time passing without
//! heartbeats, which no watch event announces. Heartbeats are observed on the local clock (a
//! Lease's renewTime or the Ready condition's lastHeartbeatTime *changing*), so clock skew
//! between nodes and the controller does not matter; after a controller restart every node
//! gets a fresh grace period. The decisions live in [`logic`] (no I/O).

pub mod logic;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::{Api, ResourceExt};
use serde_json::json;
use tokio::time::Instant;

use crate::events::{Recorder, NORMAL, WARNING};
use crate::informer::Informer;
use crate::informer::WatchHealth;
use logic::{Brakes, Health, Heartbeats, TolerationClock};

/// Settings (kube-controller-manager's flags of the same names).
#[derive(Clone, Debug)]
pub struct Config {
    /// `--node-monitor-grace-period`: no heartbeat for this long → Ready=Unknown (50 s).
    pub grace_period: Duration,
    /// `--node-monitor-period`: how often node health is checked (5 s).
    pub monitor_period: Duration,
    /// How often pods on NoExecute-tainted nodes are checked (1 s).
    pub eviction_period: Duration,
    /// Eviction rates and zone thresholds.
    pub brakes: Brakes,
    /// `--cluster-cidr`: when set, every Node without `spec.podCIDR` gets the next free /24.
    pub cluster_cidr: Option<String>,
    /// `--terminated-pod-gc-threshold`: finished pods kept before the oldest are deleted (12500).
    pub terminated_pod_gc_threshold: usize,
    /// How often the pod garbage collector runs (20 s).
    pub pod_gc_period: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            grace_period: Duration::from_secs(50),
            monitor_period: Duration::from_secs(5),
            eviction_period: Duration::from_secs(1),
            brakes: Brakes::default(),
            cluster_cidr: None,
            terminated_pod_gc_threshold: 12500,
            pod_gc_period: Duration::from_secs(20),
        }
    }
}

/// Run the node lifecycle controller, taint eviction, pod GC and IPAM until the future is dropped.
pub async fn run(client: kube::Client, pods: &Informer<Pod>, config: Config) {
    let nodes = Informer::<Node>::new();
    let leases = Informer::<Lease>::new();
    let watches = futures::future::join(
        nodes.run(Api::all(client.clone())),
        leases.run(Api::namespaced(client.clone(), "kube-node-lease")),
    );
    let work = async {
        let _ = futures::future::join3(
            nodes.store().wait_until_ready(),
            leases.store().wait_until_ready(),
            pods.store().wait_until_ready(),
        )
        .await;
        let ipam = match config.cluster_cidr.as_deref().map(Ipam::new).transpose() {
            Ok(ipam) => ipam,
            Err(e) => {
                tracing::error!(error = %e, "node IPAM disabled");
                None
            }
        };
        let mut c = Monitor {
            client: client.clone(),
            nodes: nodes.store(),
            leases: leases.store(),
            pods: pods.store(),
            config: config.clone(),
            recorder: Recorder::new(client.clone(), "node-controller"),
            heartbeats: Heartbeats::default(),
            views: [nodes.health(), leases.health()],
            lists_seen: 0,
            tolerations: TolerationClock::default(),
            limiters: HashMap::new(),
            all_disrupted: false,
            evicted: HashSet::new(),
            missing_since: HashMap::new(),
            ipam,
        };
        let mut monitor = tokio::time::interval(config.monitor_period);
        let mut evict = tokio::time::interval(config.eviction_period);
        let mut gc = tokio::time::interval(config.pod_gc_period);
        for i in [&mut monitor, &mut evict, &mut gc] {
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        loop {
            tokio::select! {
                _ = monitor.tick() => c.monitor().await,
                _ = evict.tick() => c.evict().await,
                _ = gc.tick() => c.pod_gc().await,
            }
        }
    };
    tokio::select! {
        _ = watches => {}
        _ = work => {}
    }
}

/// A token bucket of one token: one eviction (new NoExecute taint) per `1/rate` seconds.
#[derive(Debug, Default)]
struct Limiter {
    next: Option<Instant>,
}

impl Limiter {
    fn try_take(&mut self, now: Instant, rate: f64) -> bool {
        if rate <= 0.0 {
            return false;
        }
        if self.next.is_some_and(|n| now < n) {
            return false;
        }
        self.next = Some(now + Duration::from_secs_f64(1.0 / rate));
        true
    }
}

struct Monitor {
    client: kube::Client,
    nodes: Store<Node>,
    leases: Store<Lease>,
    pods: Store<Pod>,
    config: Config,
    recorder: Recorder,
    /// Per node: the last heartbeat seen (lease renewTime + Ready heartbeat) and when it changed.
    heartbeats: Heartbeats,
    /// The node and lease watches: heartbeats are judged only while both are current.
    views: [Arc<WatchHealth>; 2],
    /// Full lists of both watches seen at the last monitor pass.
    lists_seen: u64,
    /// When each pod's toleration window started.
    tolerations: TolerationClock,
    limiters: HashMap<String, Limiter>,
    /// Every zone fully disrupted at the last monitor pass: evict nothing.
    all_disrupted: bool,
    /// Pods this process already asked to delete (uid).
    evicted: HashSet<String>,
    /// Pods bound to nodes that do not exist, and since when (uid).
    missing_since: HashMap<String, Instant>,
    ipam: Option<Ipam>,
}

impl Monitor {
    fn heartbeat(&self, node: &Node) -> String {
        let name = node.name_any();
        let lease = self
            .leases
            .state()
            .into_iter()
            .find(|l| l.name_any() == name)
            .and_then(|l| l.spec.as_ref().and_then(|s| s.renew_time.as_ref()).map(|t| t.0.to_string()))
            .unwrap_or_default();
        let cond = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
            .and_then(|c| c.last_heartbeat_time.as_ref())
            .map(|t| t.0.to_string())
            .unwrap_or_default();
        format!("{lease}|{cond}")
    }

    async fn monitor(&mut self) {
        let now = Instant::now();
        let nodes = self.nodes.state();
        let mut healths: Vec<(Arc<Node>, Health)> = Vec::with_capacity(nodes.len());
        // Heartbeats the controller could not see (its watches were down: the API server or
        // etcd restarted) are no sign of dead nodes: judge nothing while a watch is down, and
        // give every node a fresh grace period once both listed again.
        if !self.views.iter().all(|v| v.live()) {
            return;
        }
        let lists: u64 = self.views.iter().map(|v| v.lists()).sum();
        if lists != self.lists_seen {
            if self.lists_seen != 0 {
                tracing::info!("node and lease watches listed again: every node gets a fresh grace period");
            }
            self.heartbeats.restart_all(now);
            self.lists_seen = lists;
        }
        let names: HashSet<String> = nodes.iter().map(|n| n.name_any()).collect();
        self.heartbeats.retain(&names);
        for node in nodes {
            let beat = self.heartbeat(&node);
            let since = self.heartbeats.observe(&node.name_any(), &beat, now);
            let h = logic::health(&node, since, self.config.grace_period);
            healths.push((node, h));
        }
        let zones = logic::zone_counts(healths.iter().map(|(n, h)| (n.as_ref(), *h)));
        let threshold = self.config.brakes.unhealthy_zone_threshold;
        let states: BTreeMap<&String, logic::ZoneState> =
            zones.iter().map(|(z, (ok, bad))| (z, logic::zone_state(*ok, *bad, threshold))).collect();
        let all_disrupted = !states.is_empty() && states.values().all(|s| *s == logic::ZoneState::FullDisruption);
        if all_disrupted && !self.all_disrupted {
            tracing::warn!("every node is unhealthy: the control plane is the likely problem; evicting nothing");
        }
        self.all_disrupted = all_disrupted;

        let ts = jiff::Timestamp::now();
        for (node, h) in &healths {
            let name = node.name_any();
            if *h == Health::Unknown && logic::ready_status(node).as_deref() != Some("Unknown") {
                self.mark_unknown(node, ts).await;
            }
            let zone = logic::zone(node);
            let (ok, bad) = zones.get(&zone).copied().unwrap_or_default();
            let state = states.get(&zone).copied().unwrap_or(logic::ZoneState::Normal);
            let rate = self.config.brakes.rate(state, ok + bad, all_disrupted);
            let braked = logic::desired_taints(node, *h, false, ts);
            let mut want = logic::desired_taints(node, *h, true, ts);
            // `braked` lacks exactly the NoExecute taints that would be new: they need a token.
            if want.len() != braked.len() && !self.limiters.entry(zone.clone()).or_default().try_take(now, rate) {
                want = braked;
            }
            if all_disrupted {
                want.retain(|t| {
                    !(t.effect == "NoExecute" && (t.key == logic::UNREACHABLE || t.key == logic::NOT_READY))
                });
            }
            if logic::taints_differ(node, &want) {
                let patch = json!({"spec": {"taints": want}});
                match Api::<Node>::all(self.client.clone())
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => tracing::info!(node = %name, health = ?h, "node taints updated"),
                    Err(e) => tracing::warn!(node = %name, error = %e, "updating node taints failed"),
                }
            }
            if let Some(ipam) = &mut self.ipam {
                ipam.ensure(&self.client, &self.recorder, node, &self.nodes).await;
            }
        }
    }

    /// Ready, MemoryPressure, DiskPressure, PIDPressure → Unknown (`NodeStatusUnknown`), and
    /// the node's pods → Ready=False, as Kubernetes does when a kubelet goes silent.
    async fn mark_unknown(&self, node: &Node, now: jiff::Timestamp) {
        let name = node.name_any();
        let mut conditions = node.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
        for t in ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"] {
            if !conditions.iter().any(|c| c.type_ == t) {
                conditions.push(k8s_openapi::api::core::v1::NodeCondition { type_: t.into(), ..Default::default() });
            }
        }
        for c in conditions
            .iter_mut()
            .filter(|c| matches!(c.type_.as_str(), "Ready" | "MemoryPressure" | "DiskPressure" | "PIDPressure"))
        {
            if c.status != "Unknown" {
                c.last_transition_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now));
            }
            c.status = "Unknown".into();
            c.reason = Some("NodeStatusUnknown".into());
            c.message = Some("Kubelet stopped posting node status.".into());
        }
        let patch = json!({"status": {"conditions": conditions}});
        match Api::<Node>::all(self.client.clone())
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                tracing::warn!(node = %name, "no heartbeat within the grace period: Ready=Unknown");
                self.recorder.record(node, NORMAL, "NodeNotReady", format!("Node {name} status is now: NodeNotReady"));
            }
            Err(e) => tracing::warn!(node = %name, error = %e, "marking the node Unknown failed"),
        }
        for pod in self
            .pods
            .state()
            .into_iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(name.as_str()))
        {
            let ready = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"));
            if ready.is_some_and(|c| c.status == "False") {
                continue;
            }
            let patch = json!({"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "NodeNotReady",
                "lastTransitionTime": now.to_string()}]}});
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
            match api.patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Strategic(&patch)).await {
                Ok(_) => self.recorder.record(pod.as_ref(), WARNING, "NodeNotReady", "Node is not ready".into()),
                Err(e) => tracing::warn!(pod = %pod.name_any(), error = %e, "marking the pod not ready failed"),
            }
        }
    }

    /// Taint-based eviction: delete pods that do not tolerate their node's NoExecute taints, or
    /// whose tolerationSeconds ran out.
    async fn evict(&mut self) {
        if self.all_disrupted || !self.views.iter().all(|v| v.live()) {
            return;
        }
        let now = Instant::now();
        let tainted: HashMap<String, Vec<k8s_openapi::api::core::v1::Taint>> = self
            .nodes
            .state()
            .iter()
            .filter_map(|n| {
                let ts: Vec<_> =
                    n.spec.as_ref()?.taints.clone()?.into_iter().filter(|t| t.effect == "NoExecute").collect();
                (!ts.is_empty()).then(|| (n.name_any(), ts))
            })
            .collect();
        if tainted.is_empty() {
            self.evicted.clear();
            self.tolerations.retain(&HashSet::new());
            return;
        }
        let mut on_tainted = HashSet::new();
        for pod in self.pods.state() {
            let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) else { continue };
            let Some(taints) = tainted.get(node) else { continue };
            let uid = pod.uid().unwrap_or_default();
            if pod.metadata.deletion_timestamp.is_some() || self.evicted.contains(&uid) {
                continue;
            }
            on_tainted.insert(uid.clone());
            if !self.tolerations.due(&uid, logic::eviction(&pod, taints), now) {
                continue;
            }
            let ns = pod.namespace().unwrap_or_default();
            let name = pod.name_any();
            let dp = DeleteParams {
                preconditions: Some(kube::api::Preconditions { uid: Some(uid.clone()), resource_version: None }),
                ..Default::default()
            };
            match Api::<Pod>::namespaced(self.client.clone(), &ns).delete(&name, &dp).await {
                Ok(_) => {
                    tracing::info!(pod = %format!("{ns}/{name}"), node, "taint eviction");
                    self.recorder.record(
                        pod.as_ref(),
                        NORMAL,
                        "TaintManagerEviction",
                        format!("Marking for deletion Pod {ns}/{name}"),
                    );
                    self.evicted.insert(uid);
                }
                Err(e) if crate::util::api_code(&e) == Some(404) || crate::util::api_code(&e) == Some(409) => {
                    self.evicted.insert(uid);
                }
                Err(e) => tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "taint eviction failed"),
            }
        }
        self.tolerations.retain(&on_tainted);
    }

    /// Pod GC: pods bound to nodes that no longer exist (force-deleted, also when stuck
    /// terminating), unscheduled pods that are terminating, and finished pods beyond the threshold.
    async fn pod_gc(&mut self) {
        let now = Instant::now();
        let nodes: HashSet<String> = self.nodes.state().iter().map(|n| n.name_any()).collect();
        let pods = self.pods.state();
        let uids: HashSet<String> = pods.iter().filter_map(|p| p.uid()).collect();
        self.missing_since.retain(|u, _| uids.contains(u));
        let force = DeleteParams { grace_period_seconds: Some(0), ..Default::default() };
        for pod in &pods {
            let uid = pod.uid().unwrap_or_default();
            let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
            let orphaned = match &node {
                Some(n) if !nodes.contains(n) => {
                    // The node must stay missing for a whole GC period and in a live read too.
                    let since = *self.missing_since.entry(uid.clone()).or_insert(now);
                    now.saturating_duration_since(since) >= self.config.pod_gc_period
                        && matches!(Api::<Node>::all(self.client.clone()).get_opt(n).await, Ok(None))
                }
                Some(_) => {
                    self.missing_since.remove(&uid);
                    false
                }
                None => pod.metadata.deletion_timestamp.is_some(),
            };
            if orphaned {
                self.force_delete(pod, &force, "PodGC: node gone").await;
            }
        }
        let mut finished: Vec<&Arc<Pod>> = pods
            .iter()
            .filter(|p| matches!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed")))
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        if finished.len() > self.config.terminated_pod_gc_threshold {
            finished.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
            let extra = finished.len() - self.config.terminated_pod_gc_threshold;
            for pod in finished.into_iter().take(extra) {
                self.force_delete(pod, &DeleteParams::default(), "PodGC: terminated pods over the threshold").await;
            }
        }
    }

    async fn force_delete(&self, pod: &Pod, dp: &DeleteParams, why: &str) {
        let ns = pod.namespace().unwrap_or_default();
        let name = pod.name_any();
        match Api::<Pod>::namespaced(self.client.clone(), &ns).delete(&name, dp).await {
            Ok(_) => tracing::info!(pod = %format!("{ns}/{name}"), "{why}"),
            Err(e) if crate::util::api_code(&e) == Some(404) => {}
            Err(e) => tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "pod GC delete failed"),
        }
    }
}

/// Node IPAM: /24s of the cluster CIDR handed to nodes without `spec.podCIDR`.
#[derive(Debug)]
pub struct Ipam {
    base: u32,
    count: u32,
    warned: HashSet<String>,
    /// Allocations written but maybe not yet seen in the store (node → CIDR), so one pass
    /// over several new nodes never hands out a block twice.
    pending: HashMap<String, String>,
}

impl Ipam {
    /// An allocator over `cidr` (IPv4, prefix /8 to /24).
    pub fn new(cidr: &str) -> Result<Self, String> {
        let net: ipnet::Ipv4Net =
            cidr.parse().map_err(|_| format!("--cluster-cidr {cidr:?} is not an IPv4 network like 10.244.0.0/16"))?;
        let prefix = u32::from(net.prefix_len());
        if !(8..=24).contains(&prefix) {
            return Err(format!("--cluster-cidr {cidr:?}: the prefix must be /8 to /24 (nodes get /24s)"));
        }
        Ok(Self {
            base: u32::from(net.network()),
            count: 1 << (24 - prefix),
            warned: HashSet::new(),
            pending: HashMap::new(),
        })
    }

    /// The lowest /24 not in `used`.
    pub fn next_free(&self, used: &HashSet<String>) -> Option<String> {
        (0..self.count).map(|i| format!("{}/24", Ipv4Addr::from(self.base + (i << 8)))).find(|c| !used.contains(c))
    }

    async fn ensure(&mut self, client: &kube::Client, recorder: &Recorder, node: &Node, all: &Store<Node>) {
        let name = node.name_any();
        if node.spec.as_ref().and_then(|s| s.pod_cidr.as_deref()).is_some_and(|c| !c.is_empty()) {
            self.pending.remove(&name);
            return;
        }
        if self.pending.contains_key(&name) {
            return;
        }
        let nodes = all.state();
        let names: HashSet<String> = nodes.iter().map(|n| n.name_any()).collect();
        self.pending.retain(|n, _| names.contains(n));
        let used: HashSet<String> = nodes
            .iter()
            .filter_map(|n| n.spec.as_ref().and_then(|s| s.pod_cidr.clone()))
            .chain(self.pending.values().cloned())
            .collect();
        let Some(cidr) = self.next_free(&used) else {
            if self.warned.insert(name.clone()) {
                recorder.record(
                    node,
                    WARNING,
                    "CIDRNotAvailable",
                    format!("Node {name} status is now: CIDRNotAvailable"),
                );
            }
            return;
        };
        let patch = json!({"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}});
        match Api::<Node>::all(client.clone()).patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => {
                tracing::info!(node = %name, %cidr, "pod CIDR allocated");
                self.pending.insert(name.clone(), cidr.clone());
                recorder.record(node, NORMAL, "CIDRAssignmentSucceeded", format!("Node {name} got pod CIDR {cidr}"));
            }
            Err(e) => tracing::warn!(node = %name, error = %e, "allocating a pod CIDR failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipam_hands_out_the_lowest_free_block() -> Result<(), String> {
        let ipam = Ipam::new("10.244.0.0/22")?;
        let mut used = HashSet::new();
        assert_eq!(ipam.next_free(&used).as_deref(), Some("10.244.0.0/24"));
        used.insert("10.244.0.0/24".to_owned());
        used.insert("10.244.2.0/24".to_owned());
        assert_eq!(ipam.next_free(&used).as_deref(), Some("10.244.1.0/24"));
        used.insert("10.244.1.0/24".to_owned());
        used.insert("10.244.3.0/24".to_owned());
        assert_eq!(ipam.next_free(&used), None);
        assert!(Ipam::new("10.0.0.0/25").is_err());
        assert!(Ipam::new("nope").is_err());
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn limiter_allows_one_per_period_and_none_at_rate_zero() {
        let mut l = Limiter::default();
        let t0 = Instant::now();
        assert!(l.try_take(t0, 0.1));
        assert!(!l.try_take(t0 + Duration::from_secs(9), 0.1));
        assert!(l.try_take(t0 + Duration::from_secs(10), 0.1));
        let mut z = Limiter::default();
        assert!(!z.try_take(t0, 0.0));
    }

    #[tokio::test(start_paused = true)]
    async fn zone_rates_space_new_evictions_on_the_monotonic_clock() {
        // A zone over the unhealthy threshold in a large cluster: the secondary rate, 0.01/s.
        let brakes = Brakes::default();
        let rate = brakes.rate(logic::ZoneState::PartialDisruption, 100, false);
        assert_eq!(rate, brakes.secondary_eviction_rate);
        let mut l = Limiter::default();
        let mut taken = Vec::new();
        let start = Instant::now();
        // Ten nodes fail at once; the monitor asks every 5 s for 10 minutes.
        for _ in 0..120 {
            if l.try_take(Instant::now(), rate) {
                taken.push(start.elapsed().as_secs());
            }
            tokio::time::advance(Duration::from_secs(5)).await;
        }
        assert_eq!(taken, [0, 100, 200, 300, 400, 500], "one new NoExecute taint per 1/rate seconds");
        // The same zone in a small cluster: no new NoExecute taints at all.
        assert_eq!(brakes.rate(logic::ZoneState::PartialDisruption, 10, false), 0.0);
    }
}
