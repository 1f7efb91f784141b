//! The scheduler's view of the cluster: nodes with precomputed accounting, and every pod bound
//! (or assumed bound) to a node.
//!
//! Fed incrementally by watch events (`apply_node`, `apply_pod`, deletions). A pod the
//! scheduler has just bound is *assumed*: it counts against its node at once, before the watch
//! shows it back, so consecutive decisions see each other. Nothing here clones pod lists per
//! decision: [`NodeInfo`] keeps running sums, and pods are shared as `Arc<PodInfo>`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod, PodAffinityTerm, Taint, WeightedPodAffinityTerm};

use crate::index::{PodsByLabel, TermIndex};
use crate::plugins::Term;
use crate::resources::{node_allocatable, pod_requests, PodRequests, Resources};
use ferry_api::selector::LabelSelector;

/// The zone label used for default spreading.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// The hostname label.
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// `namespace/name`.
pub fn pod_key(pod: &Pod) -> String {
    format!("{}/{}", pod.metadata.namespace.as_deref().unwrap_or(""), pod.metadata.name.as_deref().unwrap_or(""))
}

/// A host port a pod uses: (protocol, host IP, port).
pub type HostPort = (String, String, i32);

/// What the scheduler needs to know about a pod, computed once per pod version.
#[derive(Debug, Clone, Default)]
pub struct PodInfo {
    /// `namespace/name`.
    pub key: String,
    /// Namespace.
    pub namespace: String,
    /// `metadata.uid`.
    pub uid: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Resolved `spec.priority` (0 when unset).
    pub priority: i32,
    /// `spec.preemptionPolicy` is `Never`.
    pub never_preempt: bool,
    /// Effective requests.
    pub requests: PodRequests,
    /// Host ports in use.
    pub host_ports: Vec<HostPort>,
    /// `spec.nodeName` (empty when unbound).
    pub node_name: String,
    /// UID of the controlling owner (ReplicaSet, StatefulSet, …), for default spreading.
    pub owner_uid: Option<String>,
    /// Required pod affinity terms.
    pub required_affinity: Vec<PodAffinityTerm>,
    /// Required pod anti-affinity terms.
    pub required_anti_affinity: Vec<PodAffinityTerm>,
    /// Preferred pod affinity terms.
    pub preferred_affinity: Vec<WeightedPodAffinityTerm>,
    /// Preferred pod anti-affinity terms.
    pub preferred_anti_affinity: Vec<WeightedPodAffinityTerm>,
    /// Has a deletionTimestamp.
    pub terminating: bool,
    /// The required anti-affinity terms, compiled once (they filter incoming pods).
    pub required_anti_terms: Vec<Term>,
    /// The preferred terms, compiled once, weight negative for anti-affinity (they score
    /// incoming pods).
    pub preferred_terms: Vec<Term>,
}

impl PodInfo {
    /// Derives the scheduler's view of a pod.
    pub fn new(pod: &Pod) -> PodInfo {
        let spec = pod.spec.as_ref();
        let requests = spec.map(pod_requests).unwrap_or_default();
        let mut host_ports = Vec::new();
        if let Some(spec) = spec {
            for c in spec.containers.iter().chain(spec.init_containers.iter().flatten()) {
                for p in c.ports.iter().flatten() {
                    if let Some(hp) = p.host_port.filter(|hp| *hp > 0) {
                        let proto = p.protocol.clone().unwrap_or_else(|| "TCP".into());
                        let ip = p.host_ip.clone().filter(|ip| !ip.is_empty()).unwrap_or_else(|| "0.0.0.0".into());
                        host_ports.push((proto, ip, hp));
                    }
                }
            }
        }
        let affinity = spec.and_then(|s| s.affinity.as_ref());
        let pa = affinity.and_then(|a| a.pod_affinity.as_ref());
        let paa = affinity.and_then(|a| a.pod_anti_affinity.as_ref());
        let owner_uid =
            pod.metadata.owner_references.iter().flatten().find(|o| o.controller == Some(true)).map(|o| o.uid.clone());
        PodInfo {
            key: pod_key(pod),
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            priority: spec.and_then(|s| s.priority).unwrap_or(0),
            never_preempt: spec.and_then(|s| s.preemption_policy.as_deref()) == Some("Never"),
            requests,
            host_ports,
            node_name: spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
            owner_uid,
            required_affinity: pa
                .and_then(|a| a.required_during_scheduling_ignored_during_execution.clone())
                .unwrap_or_default(),
            required_anti_affinity: paa
                .and_then(|a| a.required_during_scheduling_ignored_during_execution.clone())
                .unwrap_or_default(),
            preferred_affinity: pa
                .and_then(|a| a.preferred_during_scheduling_ignored_during_execution.clone())
                .unwrap_or_default(),
            preferred_anti_affinity: paa
                .and_then(|a| a.preferred_during_scheduling_ignored_during_execution.clone())
                .unwrap_or_default(),
            terminating: pod.metadata.deletion_timestamp.is_some(),
            required_anti_terms: Vec::new(),
            preferred_terms: Vec::new(),
        }
        .compile_terms()
    }

    fn compile_terms(mut self) -> PodInfo {
        let ns = &self.namespace;
        self.required_anti_terms = self.required_anti_affinity.iter().map(|t| Term::new(t, ns, 1)).collect();
        let weighted =
            |t: &WeightedPodAffinityTerm, sign: i64| Term::new(&t.pod_affinity_term, ns, sign * i64::from(t.weight));
        self.preferred_terms = self
            .preferred_affinity
            .iter()
            .map(|t| weighted(t, 1))
            .chain(self.preferred_anti_affinity.iter().map(|t| weighted(t, -1)))
            .collect();
        self
    }

    /// Whether the pod has any inter-pod (anti-)affinity terms.
    pub fn has_affinity(&self) -> bool {
        !(self.required_affinity.is_empty()
            && self.required_anti_affinity.is_empty()
            && self.preferred_affinity.is_empty()
            && self.preferred_anti_affinity.is_empty())
    }
}

/// A node with running sums of what is placed on it.
#[derive(Debug, Clone, Default)]
pub struct NodeInfo {
    /// Node name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Taints.
    pub taints: Vec<Taint>,
    /// `spec.unschedulable` (cordoned).
    pub unschedulable: bool,
    /// Allocatable resources.
    pub allocatable: Resources,
    /// Allocatable pod count.
    pub allowed_pods: i64,
    /// Sum of exact requests of the pods here.
    pub requested: Resources,
    /// Sum of non-zero requests (for scoring).
    pub non_zero_requested: Resources,
    /// Pods on the node (bound or assumed).
    pub pods: Vec<Arc<PodInfo>>,
    /// Host ports used by the pods here.
    pub used_ports: Vec<HostPort>,
    /// Whether a Node object exists (pods may arrive before their node).
    pub exists: bool,
}

impl NodeInfo {
    fn set_node(&mut self, node: &Node) {
        let (alloc, pods) = node_allocatable(node);
        let spec = node.spec.as_ref();
        self.name = node.metadata.name.clone().unwrap_or_default();
        self.labels = node.metadata.labels.clone().unwrap_or_default();
        self.taints = spec.and_then(|s| s.taints.clone()).unwrap_or_default();
        self.unschedulable = spec.and_then(|s| s.unschedulable).unwrap_or(false);
        self.allocatable = alloc;
        self.allowed_pods = pods;
        self.exists = true;
    }

    /// Adds a pod's accounting.
    pub fn add_pod(&mut self, pod: Arc<PodInfo>) {
        self.requested.add(&pod.requests.exact);
        self.non_zero_requested.add(&pod.requests.non_zero);
        self.used_ports.extend(pod.host_ports.iter().cloned());
        self.pods.push(pod);
    }

    /// Removes a pod's accounting (by key); returns whether it was there.
    pub fn remove_pod(&mut self, key: &str) -> bool {
        let Some(i) = self.pods.iter().position(|p| p.key == key) else { return false };
        let pod = self.pods.swap_remove(i);
        self.requested.sub(&pod.requests.exact);
        self.non_zero_requested.sub(&pod.requests.non_zero);
        for hp in &pod.host_ports {
            if let Some(j) = self.used_ports.iter().position(|u| u == hp) {
                self.used_ports.swap_remove(j);
            }
        }
        true
    }

    /// A node info built from a Node object alone (tests, benchmarks).
    pub fn from_node(node: &Node) -> NodeInfo {
        let mut n = NodeInfo::default();
        n.set_node(node);
        n
    }
}

/// Placed pods with one of their terms and their node (see [`Cache::anti_terms_selecting`]).
pub type TermsSelecting<'a> = Box<dyn Iterator<Item = (&'a Arc<PodInfo>, &'a Term, &'a NodeInfo)> + 'a>;

/// Nodes and placed pods.
#[derive(Debug, Default)]
pub struct Cache {
    /// Node records: existing nodes, and nodes pods are bound to before (or after) their Node
    /// object exists. A vector, so a scheduling cycle sweeps memory in order instead of
    /// probing a hash map per node; freed slots are reused.
    slots: Vec<NodeInfo>,
    /// Slot of each node by name.
    slot_of: HashMap<String, usize>,
    /// Free slots.
    free: Vec<usize>,
    /// Slots of existing nodes in a stable order (for sampling with a rotating start).
    order: Vec<usize>,
    /// Placed pods by key.
    pods: HashMap<String, Arc<PodInfo>>,
    /// Keys of pods assumed bound but not yet seen bound.
    assumed: HashSet<String>,
    /// Pods placed per controlling owner and node, for default spreading.
    by_owner: HashMap<String, HashMap<String, u32>>,
    /// Number of placed pods with inter-pod affinity terms.
    affinity_pods: usize,
    /// Placed pods by label, for selectors.
    by_label: PodsByLabel,
    /// Placed pods' required anti-affinity terms, by what they select.
    anti_terms: TermIndex,
    /// Placed pods' preferred (anti-)affinity terms, by what they select.
    preferred_terms: TermIndex,
    /// Pending pods nominated to a node by preemption, per node.
    nominated: HashMap<String, Vec<Arc<PodInfo>>>,
    /// Node each nominated pod waits for.
    nominated_node: HashMap<String, String>,
}

impl Cache {
    /// An empty cache.
    pub fn new() -> Cache {
        Cache::default()
    }

    /// Adds or updates a node; returns whether anything scheduling depends on changed
    /// (new node, labels, taints, cordon, allocatable).
    pub fn apply_node(&mut self, node: &Node) -> bool {
        let i = self.slot(node.metadata.name.as_deref().unwrap_or_default());
        let info = &mut self.slots[i];
        let is_new = !info.exists;
        if is_new {
            self.order.push(i);
        }
        let before =
            (info.labels.clone(), info.taints.clone(), info.unschedulable, info.allocatable, info.allowed_pods);
        info.set_node(node);
        is_new
            || before
                != (info.labels.clone(), info.taints.clone(), info.unschedulable, info.allocatable, info.allowed_pods)
    }

    /// Removes a node (its pods stay accounted until they are deleted).
    pub fn delete_node(&mut self, name: &str) {
        let Some(&i) = self.slot_of.get(name) else { return };
        self.slots[i].exists = false;
        self.order.retain(|s| *s != i);
        if self.slots[i].pods.is_empty() {
            self.release(i);
        }
    }

    /// The slot of a node record, made if missing.
    fn slot(&mut self, name: &str) -> usize {
        if let Some(&i) = self.slot_of.get(name) {
            return i;
        }
        let info = NodeInfo { name: name.to_string(), ..NodeInfo::default() };
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i] = info;
                i
            }
            None => {
                self.slots.push(info);
                self.slots.len() - 1
            }
        };
        self.slot_of.insert(name.to_string(), i);
        i
    }

    /// Frees the slot of a node that no longer exists and has no pods.
    fn release(&mut self, i: usize) {
        let gone = std::mem::take(&mut self.slots[i]);
        self.slot_of.remove(&gone.name);
        self.free.push(i);
    }

    /// Replaces the whole node set (after a relist).
    pub fn replace_nodes(&mut self, nodes: &[Node]) {
        let names: HashSet<&str> = nodes.iter().filter_map(|n| n.metadata.name.as_deref()).collect();
        let gone: Vec<String> = self.nodes().map(|n| n.name.clone()).filter(|n| !names.contains(n.as_str())).collect();
        for n in gone {
            self.delete_node(&n);
        }
        for n in nodes {
            self.apply_node(n);
        }
    }

    /// Applies a pod from the watch: bound, non-terminal pods are placed; others removed
    /// (unless assumed and the watch has not caught up yet).
    pub fn apply_pod(&mut self, pod: &Pod) {
        let key = pod_key(pod);
        let bound = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some_and(|n| !n.is_empty());
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        let terminal = matches!(phase, Some("Succeeded" | "Failed"));
        if bound && !terminal {
            self.assumed.remove(&key);
            self.clear_nomination(&key);
            self.place(Arc::new(PodInfo::new(pod)));
        } else if terminal || !self.assumed.contains(&key) {
            self.assumed.remove(&key);
            self.remove_pod(&key);
        }
    }

    /// Removes a deleted pod.
    pub fn delete_pod(&mut self, key: &str) {
        self.assumed.remove(key);
        self.clear_nomination(key);
        self.remove_pod(key);
    }

    /// Replaces all pods (after a relist); assumed pods not in the list are kept.
    pub fn replace_pods(&mut self, pods: &[Pod]) {
        let keys: HashSet<String> = pods.iter().map(pod_key).collect();
        let gone: Vec<String> =
            self.pods.keys().filter(|k| !keys.contains(*k) && !self.assumed.contains(*k)).cloned().collect();
        for k in gone {
            self.remove_pod(&k);
        }
        for p in pods {
            self.apply_pod(p);
        }
    }

    /// Counts a pod against `node` before the API server confirms the binding.
    pub fn assume(&mut self, pod: &PodInfo, node: &str) {
        self.clear_nomination(&pod.key);
        let mut info = pod.clone();
        info.node_name = node.to_string();
        self.assumed.insert(info.key.clone());
        self.place(Arc::new(info));
    }

    /// Undoes [`assume`](Self::assume) after a failed binding.
    pub fn forget(&mut self, key: &str) {
        if self.assumed.remove(key) {
            self.remove_pod(key);
        }
    }

    /// Whether a pod is assumed (bound by us, not yet seen).
    pub fn is_assumed(&self, key: &str) -> bool {
        self.assumed.contains(key)
    }

    /// Whether a pod is placed (bound or assumed).
    pub fn is_placed(&self, key: &str) -> bool {
        self.pods.contains_key(key)
    }

    fn place(&mut self, pod: Arc<PodInfo>) {
        self.remove_pod(&pod.key);
        if pod.has_affinity() {
            self.affinity_pods += 1;
        }
        if let Some(owner) = &pod.owner_uid {
            *self.by_owner.entry(owner.clone()).or_default().entry(pod.node_name.clone()).or_default() += 1;
        }
        self.by_label.insert(&pod);
        self.anti_terms.insert(&pod, &pod.required_anti_terms);
        self.preferred_terms.insert(&pod, &pod.preferred_terms);
        let i = self.slot(&pod.node_name);
        self.slots[i].add_pod(pod.clone());
        self.pods.insert(pod.key.clone(), pod);
    }

    fn remove_pod(&mut self, key: &str) {
        let Some(pod) = self.pods.remove(key) else { return };
        self.by_label.remove(&pod);
        self.anti_terms.remove(&pod, &pod.required_anti_terms);
        self.preferred_terms.remove(&pod, &pod.preferred_terms);
        if pod.has_affinity() {
            self.affinity_pods -= 1;
        }
        if let Some(owner) = &pod.owner_uid {
            if let Some(m) = self.by_owner.get_mut(owner) {
                if let Some(c) = m.get_mut(&pod.node_name) {
                    *c -= 1;
                    if *c == 0 {
                        m.remove(&pod.node_name);
                    }
                }
                if m.is_empty() {
                    self.by_owner.remove(owner);
                }
            }
        }
        if let Some(&i) = self.slot_of.get(&pod.node_name) {
            let node = &mut self.slots[i];
            node.remove_pod(key);
            if !node.exists && node.pods.is_empty() {
                self.release(i);
            }
        }
    }

    /// A node by name (existing nodes only).
    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.slot_of.get(name).map(|i| &self.slots[*i]).filter(|n| n.exists)
    }

    /// The `i`-th existing node in stable order.
    pub fn nth_node(&self, i: usize) -> Option<&NodeInfo> {
        self.order.get(i).map(|s| &self.slots[*s])
    }

    /// Number of existing nodes.
    pub fn node_count(&self) -> usize {
        self.order.len()
    }

    /// All existing nodes, in stable order.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeInfo> + '_ {
        self.order.iter().map(|s| &self.slots[*s])
    }

    /// A placed pod.
    pub fn pod(&self, key: &str) -> Option<&Arc<PodInfo>> {
        self.pods.get(key)
    }

    /// Number of placed pods.
    pub fn pod_count(&self) -> usize {
        self.pods.len()
    }

    /// Placed pods that `selector` may select, on existing nodes, with their node. A superset
    /// narrowed by the label index: evaluate the selector on each.
    pub fn pods_selected_by<'a>(
        &'a self,
        selector: &'a LabelSelector,
    ) -> impl Iterator<Item = (&'a Arc<PodInfo>, &'a NodeInfo)> + 'a {
        let pods: Box<dyn Iterator<Item = &'a Arc<PodInfo>> + 'a> = match self.by_label.candidates(selector) {
            Some(narrowed) => Box::new(narrowed),
            None => Box::new(self.pods.values()),
        };
        pods.filter_map(|p| Some((p, self.node(&p.node_name)?)))
    }

    /// Placed pods (on existing nodes, with their node) whose required anti-affinity terms may
    /// select a pod with `labels`, one item per term: evaluate the term on each.
    pub fn anti_terms_selecting<'a>(&'a self, labels: &'a BTreeMap<String, String>) -> TermsSelecting<'a> {
        self.terms_selecting(&self.anti_terms, |p| &p.required_anti_terms, labels)
    }

    /// Like [`Cache::anti_terms_selecting`], for the placed pods' preferred terms.
    pub fn preferred_terms_selecting<'a>(&'a self, labels: &'a BTreeMap<String, String>) -> TermsSelecting<'a> {
        self.terms_selecting(&self.preferred_terms, |p| &p.preferred_terms, labels)
    }

    fn terms_selecting<'a>(
        &'a self,
        index: &'a TermIndex,
        terms: fn(&PodInfo) -> &[Term],
        labels: &'a BTreeMap<String, String>,
    ) -> TermsSelecting<'a> {
        Box::new(
            index.candidates(labels).filter_map(move |(p, i)| Some((p, terms(p).get(i)?, self.node(&p.node_name)?))),
        )
    }

    /// Placed pods per node of one controlling owner.
    pub fn owner_counts(&self, owner: &str) -> Option<&HashMap<String, u32>> {
        self.by_owner.get(owner)
    }

    /// Records (or clears, when empty) the node a pending pod was nominated to.
    pub fn nominate(&mut self, pod: &PodInfo, node: &str) {
        self.clear_nomination(&pod.key);
        if node.is_empty() {
            return;
        }
        self.nominated_node.insert(pod.key.clone(), node.to_string());
        self.nominated.entry(node.to_string()).or_default().push(Arc::new(pod.clone()));
    }

    /// Drops a pod's nomination (bound or deleted).
    pub fn clear_nomination(&mut self, key: &str) {
        if let Some(node) = self.nominated_node.remove(key) {
            if let Some(list) = self.nominated.get_mut(&node) {
                list.retain(|p| p.key != key);
                if list.is_empty() {
                    self.nominated.remove(&node);
                }
            }
        }
    }

    /// Pending pods nominated to a node.
    pub fn nominated_on(&self, node: &str) -> &[Arc<PodInfo>] {
        if self.nominated.is_empty() {
            return &[]; // the common case, without hashing the name
        }
        self.nominated.get(node).map_or(&[], Vec::as_slice)
    }

    /// Whether any placed pod has inter-pod affinity terms.
    pub fn any_affinity_pods(&self) -> bool {
        self.affinity_pods > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn node(name: &str, cpu: &str) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {HOSTNAME_LABEL: name}},
            "status": {"allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"}}
        }))
        .expect("node")
    }

    fn pod(name: &str, node: &str, cpu: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": node, "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]}
        }))
        .expect("pod")
    }

    #[test]
    fn accounting_follows_pod_events() {
        let mut c = Cache::new();
        c.apply_node(&node("n1", "2"));
        c.apply_pod(&pod("a", "n1", "500m"));
        c.apply_pod(&pod("a", "n1", "500m"));
        assert_eq!(c.node("n1").map(|n| n.requested.milli_cpu), Some(500));
        c.apply_pod(&pod("b", "n1", "1"));
        assert_eq!(c.node("n1").map(|n| (n.requested.milli_cpu, n.pods.len())), Some((1500, 2)));
        c.delete_pod("default/a");
        assert_eq!(c.node("n1").map(|n| n.requested.milli_cpu), Some(1000));
    }

    #[test]
    fn assumed_pods_survive_stale_unbound_events_and_forget_undoes() {
        let mut c = Cache::new();
        c.apply_node(&node("n1", "2"));
        let p = pod("a", "", "1");
        c.assume(&PodInfo::new(&p), "n1");
        c.apply_pod(&p); // stale, unbound version from the watch
        assert_eq!(c.node("n1").map(|n| n.requested.milli_cpu), Some(1000));
        c.forget("default/a");
        assert_eq!(c.node("n1").map(|n| n.requested.milli_cpu), Some(0));
        c.assume(&PodInfo::new(&p), "n1");
        c.apply_pod(&pod("a", "n1", "1"));
        assert!(!c.is_assumed("default/a"));
        assert_eq!(c.node("n1").map(|n| n.pods.len()), Some(1));
    }

    #[test]
    fn pods_before_their_node_are_kept() {
        let mut c = Cache::new();
        c.apply_pod(&pod("a", "n1", "1"));
        assert!(c.node("n1").is_none());
        c.apply_node(&node("n1", "2"));
        assert_eq!(c.node("n1").map(|n| n.requested.milli_cpu), Some(1000));
        c.delete_node("n1");
        assert!(c.node("n1").is_none());
        assert_eq!(c.node_count(), 0);
    }
}
