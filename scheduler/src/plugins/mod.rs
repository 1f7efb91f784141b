//! Filter and score plugins.
//!
//! * [`node`]: node name, unschedulable, resources fit, node ports, node affinity/selector,
//!   taints and tolerations; least-allocated and balanced-allocation scores.
//! * [`interpod`]: required and preferred inter-pod affinity and anti-affinity.
//! * [`spread`]: topology spread constraints (DoNotSchedule filter, ScheduleAnyway score) and
//!   default spreading of a controller's pods across nodes and zones.
//!
//! Filters report a [`Reason`] worded like Kubernetes', so the Unschedulable message reads the
//! same. Scores return raw values that [`crate::framework`] normalizes to 0–100 per plugin and
//! weighs like kube-scheduler's defaults.

pub mod interpod;
pub mod node;
pub mod spread;

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use ferry_api::selector::LabelSelector;
use k8s_openapi::api::core::v1::{Pod, PodAffinityTerm, PodSpec, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as metav1;

use crate::cache::PodInfo;

/// Why a node cannot take a pod, worded as Kubernetes words it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// `spec.nodeName` names another node.
    NodeName,
    /// The node is cordoned.
    Unschedulable,
    /// Not enough of a resource.
    Insufficient(&'static str),
    /// The node's pod count is full.
    TooManyPods,
    /// nodeSelector / required node affinity does not match.
    NodeAffinity,
    /// A NoSchedule/NoExecute taint the pod does not tolerate.
    Taint {
        /// Taint key.
        key: String,
        /// Taint value.
        value: String,
    },
    /// A host port is taken.
    NodePorts,
    /// Required pod affinity not satisfied.
    PodAffinity,
    /// The pod's required anti-affinity is violated.
    PodAntiAffinity,
    /// An existing pod's required anti-affinity rejects the pod.
    ExistingAntiAffinity,
    /// A DoNotSchedule topology spread constraint would be violated.
    Spread,
    /// The node lacks a topology key label a constraint needs.
    SpreadMissingLabel,
}

impl Reason {
    /// Whether evicting pods from the node could never help (Kubernetes'
    /// `UnschedulableAndUnresolvable`).
    pub fn unresolvable(&self) -> bool {
        matches!(
            self,
            Reason::NodeName
                | Reason::Unschedulable
                | Reason::NodeAffinity
                | Reason::Taint { .. }
                | Reason::PodAffinity
                | Reason::SpreadMissingLabel
        )
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NodeName => f.write_str("node(s) didn't match the requested node name"),
            Reason::Unschedulable => f.write_str("node(s) were unschedulable"),
            Reason::Insufficient(r) => write!(f, "Insufficient {r}"),
            Reason::TooManyPods => f.write_str("Too many pods"),
            Reason::NodeAffinity => f.write_str("node(s) didn't match Pod's node affinity/selector"),
            Reason::Taint { key, value } => write!(f, "node(s) had untolerated taint {{{key}: {value}}}"),
            Reason::NodePorts => f.write_str("node(s) didn't have free ports for the requested pod ports"),
            Reason::PodAffinity => f.write_str("node(s) didn't match pod affinity rules"),
            Reason::PodAntiAffinity => f.write_str("node(s) didn't match pod anti-affinity rules"),
            Reason::ExistingAntiAffinity => f.write_str("node(s) didn't satisfy existing pods anti-affinity rules"),
            Reason::Spread => f.write_str("node(s) didn't match pod topology spread constraints"),
            Reason::SpreadMissingLabel => {
                f.write_str("node(s) didn't match pod topology spread constraints (missing required label)")
            }
        }
    }
}

/// A pod affinity term with its selector parsed once.
#[derive(Debug, Clone)]
pub struct Term {
    /// `None`: the term's selector was absent and matches nothing.
    pub selector: Option<LabelSelector>,
    /// Namespaces the term looks in; `None` means all namespaces.
    pub namespaces: Option<HashSet<String>>,
    /// Node label naming the topology domain.
    pub topology_key: String,
    /// Weight (preferred terms; 1 for required ones).
    pub weight: i64,
}

impl Term {
    /// Compiles a term for a pod in `namespace`. An empty `namespaceSelector` means all
    /// namespaces; a non-empty one cannot be evaluated without namespace labels and is treated
    /// as "the listed namespaces, else the pod's own".
    pub fn new(t: &PodAffinityTerm, namespace: &str, weight: i64) -> Term {
        let selector = t.label_selector.as_ref().and_then(|s| LabelSelector::from_k8s(s).ok());
        let all = t.namespace_selector.as_ref().is_some_and(is_empty_selector);
        let namespaces = if all {
            None
        } else {
            let listed: HashSet<String> = t.namespaces.iter().flatten().cloned().collect();
            Some(if listed.is_empty() { HashSet::from([namespace.to_string()]) } else { listed })
        };
        Term { selector, namespaces, topology_key: t.topology_key.clone(), weight }
    }

    /// Whether a pod is selected by the term.
    pub fn matches(&self, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
        self.namespaces.as_ref().is_none_or(|ns| ns.contains(namespace))
            && self.selector.as_ref().is_some_and(|s| s.matches(labels))
    }
}

fn is_empty_selector(s: &metav1::LabelSelector) -> bool {
    s.match_labels.as_ref().is_none_or(|m| m.is_empty()) && s.match_expressions.as_ref().is_none_or(|e| e.is_empty())
}

/// The pod being scheduled, with everything plugins need precomputed.
pub struct PodCtx<'a> {
    /// The pod.
    pub pod: &'a Pod,
    /// Its spec.
    pub spec: &'a PodSpec,
    /// Derived info (requests, ports, terms).
    pub info: PodInfo,
    /// Tolerations.
    pub tolerations: &'a [Toleration],
    /// Required affinity terms, compiled.
    pub affinity: Vec<Term>,
    /// Required anti-affinity terms, compiled.
    pub anti_affinity: Vec<Term>,
    /// Preferred affinity terms, compiled.
    pub preferred_affinity: Vec<Term>,
    /// Preferred anti-affinity terms, compiled.
    pub preferred_anti_affinity: Vec<Term>,
}

impl<'a> PodCtx<'a> {
    /// Precomputes what plugins need; `None` if the pod has no spec.
    pub fn new(pod: &'a Pod) -> Option<PodCtx<'a>> {
        let spec = pod.spec.as_ref()?;
        let info = PodInfo::new(pod);
        let ns = info.namespace.clone();
        let compile = |terms: &[PodAffinityTerm]| terms.iter().map(|t| Term::new(t, &ns, 1)).collect::<Vec<_>>();
        let compile_weighted = |terms: &[k8s_openapi::api::core::v1::WeightedPodAffinityTerm]| {
            terms.iter().map(|t| Term::new(&t.pod_affinity_term, &ns, i64::from(t.weight))).collect::<Vec<_>>()
        };
        Some(PodCtx {
            pod,
            spec,
            tolerations: spec.tolerations.as_deref().unwrap_or_default(),
            affinity: compile(&info.required_affinity),
            anti_affinity: compile(&info.required_anti_affinity),
            preferred_affinity: compile_weighted(&info.preferred_affinity),
            preferred_anti_affinity: compile_weighted(&info.preferred_anti_affinity),
            info,
        })
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    use k8s_openapi::api::core::v1::{Node, Pod};
    use serde_json::{json, Value};

    use crate::cache::{NodeInfo, PodInfo, HOSTNAME_LABEL};
    use std::sync::Arc;

    pub fn node(name: &str, extra: Value) -> Node {
        let mut v = json!({
            "metadata": {"name": name, "labels": {HOSTNAME_LABEL: name}},
            "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110", "ephemeral-storage": "100Gi"}}
        });
        merge(&mut v, extra);
        serde_json::from_value(v).expect("node")
    }

    pub fn pod(name: &str, extra: Value) -> Pod {
        let mut v = json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
            "spec": {"containers": [{"name": "c"}]}
        });
        merge(&mut v, extra);
        serde_json::from_value(v).expect("pod")
    }

    pub fn node_with(n: Node, pods: &[Pod]) -> NodeInfo {
        let mut info = NodeInfo::from_node(&n);
        for p in pods {
            let mut pi = PodInfo::new(p);
            pi.node_name = info.name.clone();
            info.add_pod(Arc::new(pi));
        }
        info
    }

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
}
