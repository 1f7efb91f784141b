//! Indexes of the cache's placed pods, so the cluster-wide plugins (inter-pod affinity, topology
//! spread) visit the pods and terms that can match instead of every pod in the cluster.
//!
//! Both indexes narrow by one equality requirement (`k=v`, `k==v` or `k in (…)`) of a label
//! selector; callers still evaluate the whole selector (and namespaces) on what they get back. A
//! selector without such a requirement (`k notin …`, `!k`, `k`, or empty) falls back to all pods.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use ferry_api::selector::{LabelOperator, LabelRequirement, LabelSelector};

use crate::cache::PodInfo;
use crate::plugins::Term;

/// label key → label value → entries.
type ByLabel<K> = HashMap<String, HashMap<String, HashMap<K, Arc<PodInfo>>>>;

fn is_equality(r: &LabelRequirement) -> bool {
    matches!(r.operator(), LabelOperator::Equals | LabelOperator::DoubleEquals | LabelOperator::In)
}

fn insert<K: std::hash::Hash + Eq>(map: &mut ByLabel<K>, key: &str, value: &str, id: K, pod: &Arc<PodInfo>) {
    map.entry(key.to_string()).or_default().entry(value.to_string()).or_default().insert(id, pod.clone());
}

fn remove<K: std::hash::Hash + Eq>(map: &mut ByLabel<K>, key: &str, value: &str, id: &K) {
    let Some(values) = map.get_mut(key) else { return };
    if let Some(entries) = values.get_mut(value) {
        entries.remove(id);
        if entries.is_empty() {
            values.remove(value);
        }
    }
    if values.is_empty() {
        map.remove(key);
    }
}

/// Placed pods by label.
#[derive(Debug, Default)]
pub struct PodsByLabel {
    by_label: ByLabel<String>,
}

impl PodsByLabel {
    /// Adds a placed pod under each of its labels.
    pub fn insert(&mut self, pod: &Arc<PodInfo>) {
        for (k, v) in &pod.labels {
            insert(&mut self.by_label, k, v, pod.key.clone(), pod);
        }
    }

    /// Removes a pod added with [`PodsByLabel::insert`].
    pub fn remove(&mut self, pod: &PodInfo) {
        for (k, v) in &pod.labels {
            remove(&mut self.by_label, k, v, &pod.key);
        }
    }

    /// How many pods carry `key` with one of `values`.
    fn count(&self, r: &LabelRequirement) -> usize {
        let Some(values) = self.by_label.get(r.key()) else { return 0 };
        distinct(r.values()).filter_map(|v| values.get(v)).map(HashMap::len).sum()
    }

    /// The pods `selector` may select (a superset: evaluate the selector on each), or `None` if
    /// the selector has no equality requirement to narrow by.
    pub fn candidates<'a>(&'a self, selector: &'a LabelSelector) -> Option<impl Iterator<Item = &'a Arc<PodInfo>>> {
        let narrowest = selector.requirements().iter().filter(|r| is_equality(r)).min_by_key(|r| self.count(r))?;
        let values = self.by_label.get(narrowest.key());
        Some(distinct(narrowest.values()).filter_map(move |v| values.and_then(|m| m.get(v))).flat_map(HashMap::values))
    }
}

/// `values` without repeats (`in (a, a)` must not visit a's pods twice).
fn distinct(values: &[String]) -> impl Iterator<Item = &String> {
    values.iter().enumerate().filter(|(i, v)| !values[..*i].contains(v)).map(|(_, v)| v)
}

/// Terms of placed pods that select *incoming* pods (required anti-affinity, preferred terms),
/// each indexed under one equality requirement of its selector, so an incoming pod visits only
/// terms that can select it.
#[derive(Debug, Default)]
pub struct TermIndex {
    /// Entries are keyed by (pod key, index of the term in the pod's list).
    by_label: ByLabel<(String, usize)>,
    /// Terms without an equality requirement: visited for every incoming pod.
    rest: HashMap<(String, usize), Arc<PodInfo>>,
}

/// Where each term is indexed: its position, and the equality requirement it is filed under
/// (`None`: the catch-all list). Terms without a selector select nothing and are left out.
fn placements(terms: &[Term]) -> impl Iterator<Item = (usize, Option<&LabelRequirement>)> {
    terms
        .iter()
        .enumerate()
        .filter_map(|(i, t)| Some((i, t.selector.as_ref()?.requirements().iter().find(|r| is_equality(r)))))
}

impl TermIndex {
    /// Adds the pod's `terms` (its list as [`TermIndex::candidates`] will report indexes into).
    pub fn insert(&mut self, pod: &Arc<PodInfo>, terms: &[Term]) {
        for (i, filed) in placements(terms) {
            let id = (pod.key.clone(), i);
            match filed {
                Some(r) => distinct(r.values()).for_each(|v| insert(&mut self.by_label, r.key(), v, id.clone(), pod)),
                None => {
                    self.rest.insert(id, pod.clone());
                }
            }
        }
    }

    /// Removes what [`TermIndex::insert`] added for the same pod and terms.
    pub fn remove(&mut self, pod: &PodInfo, terms: &[Term]) {
        for (i, filed) in placements(terms) {
            let id = (pod.key.clone(), i);
            match filed {
                Some(r) => distinct(r.values()).for_each(|v| remove(&mut self.by_label, r.key(), v, &id)),
                None => {
                    self.rest.remove(&id);
                }
            }
        }
    }

    /// The (placed pod, index of its term) pairs whose term may select a pod with `labels`,
    /// each at most once; evaluate the term on each.
    pub fn candidates<'a>(
        &'a self,
        labels: &'a BTreeMap<String, String>,
    ) -> impl Iterator<Item = (&'a Arc<PodInfo>, usize)> + 'a {
        // A term is indexed under one key, and the pod has one value for it: no repeats.
        labels
            .iter()
            .filter_map(|(k, v)| self.by_label.get(k)?.get(v))
            .flat_map(HashMap::iter)
            .chain(self.rest.iter())
            .map(|((_, i), pod)| (pod, *i))
    }

    /// Whether no placed pod has such terms.
    pub fn is_empty(&self) -> bool {
        self.by_label.is_empty() && self.rest.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testutil::pod;
    use k8s_openapi::api::core::v1::PodAffinityTerm;
    use serde_json::json;

    fn placed(name: &str, labels: serde_json::Value) -> Arc<PodInfo> {
        Arc::new(PodInfo::new(&pod(name, json!({"metadata": {"labels": labels}}))))
    }

    fn term(selector: serde_json::Value) -> Term {
        let t: PodAffinityTerm =
            serde_json::from_value(json!({"labelSelector": selector, "topologyKey": "zone"})).expect("term");
        Term::new(&t, "default", 1)
    }

    fn names<'a>(pods: impl Iterator<Item = &'a Arc<PodInfo>>) -> Vec<String> {
        let mut v: Vec<String> = pods.map(|p| p.key.clone()).collect();
        v.sort();
        v
    }

    #[test]
    fn pods_by_label_narrows_by_the_rarest_equality_requirement() {
        let mut idx = PodsByLabel::default();
        let pods = [
            placed("a", json!({"app": "web", "tier": "front"})),
            placed("b", json!({"app": "web", "tier": "back"})),
            placed("c", json!({"app": "db", "tier": "back"})),
        ];
        for p in &pods {
            idx.insert(p);
        }
        let sel = LabelSelector::parse("tier=back,app=db").expect("selector");
        assert_eq!(names(idx.candidates(&sel).expect("narrowed")), ["default/c"]);
        let sel = LabelSelector::parse("app in (web, web, db)").expect("selector");
        assert_eq!(names(idx.candidates(&sel).expect("narrowed")), ["default/a", "default/b", "default/c"]);
        let sel = LabelSelector::parse("app=cache").expect("selector");
        assert_eq!(idx.candidates(&sel).expect("narrowed").count(), 0);
        for unnarrowed in ["app notin (web)", "app", "!app", ""] {
            let sel = LabelSelector::parse(unnarrowed).expect("selector");
            assert!(idx.candidates(&sel).is_none(), "{unnarrowed}");
        }
        idx.remove(&pods[0]);
        idx.remove(&pods[1]);
        idx.remove(&pods[2]);
        assert!(idx.by_label.is_empty());
    }

    #[test]
    fn term_index_yields_each_term_that_may_select_once() {
        let mut idx = TermIndex::default();
        let owner = placed("owner", json!({}));
        let terms = vec![
            term(json!({"matchLabels": {"app": "web"}})),
            term(json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "api"]}]})),
            term(json!({"matchExpressions": [{"key": "app", "operator": "Exists"}]})),
            term(json!({"matchLabels": {"app": "db"}})),
        ];
        idx.insert(&owner, &terms);
        // Terms with no selector select nothing and are not indexed.
        let none = Term { selector: None, ..terms[0].clone() };
        idx.insert(&placed("other", json!({})), &[none]);
        let web: BTreeMap<String, String> = [("app".to_string(), "web".to_string())].into();
        let mut got: Vec<usize> = idx.candidates(&web).map(|(_, i)| i).collect();
        got.sort();
        assert_eq!(got, [0, 1, 2]);
        let unlabelled = BTreeMap::new();
        assert_eq!(idx.candidates(&unlabelled).map(|(_, i)| i).collect::<Vec<_>>(), [2]);
        idx.remove(&owner, &terms);
        assert!(idx.is_empty());
    }

    /// A selector over keys a/b and values x/y/z, in the label selector syntax.
    fn selector_strategy() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let key = prop_oneof![Just("a"), Just("b")];
        let value = prop_oneof![Just("x"), Just("y"), Just("z")];
        let req = (0..5usize, key, value.clone(), value).prop_map(|(op, k, v, w)| match op {
            0 => format!("{k}={v}"),
            1 => format!("{k} in ({v},{w})"),
            2 => format!("{k} notin ({v})"),
            3 => k.to_string(),
            _ => format!("!{k}"),
        });
        proptest::collection::vec(req, 0..3).prop_map(|r| r.join(","))
    }

    fn labels_strategy() -> impl proptest::strategy::Strategy<Value = BTreeMap<String, String>> {
        use proptest::prelude::*;
        let value = prop_oneof![Just(None), Just(Some("x")), Just(Some("y")), Just(Some("z"))];
        (value.clone(), value).prop_map(|(a, b)| {
            [("a", a), ("b", b)].into_iter().filter_map(|(k, v)| Some((k.to_string(), v?.to_string()))).collect()
        })
    }

    proptest::proptest! {
        /// Narrowing never loses a match: what the indexes return, filtered by the selector or
        /// term, is exactly what a scan of every placed pod finds, and no term comes twice.
        #[test]
        fn indexes_find_exactly_what_a_full_scan_finds(
            pods in proptest::collection::vec((labels_strategy(), proptest::collection::vec(selector_strategy(), 0..3)), 0..12),
            removed in proptest::collection::vec(proptest::bool::ANY, 12),
            selectors in proptest::collection::vec(selector_strategy(), 1..4),
            incoming in labels_strategy(),
        ) {
            let (mut by_label, mut terms) = (PodsByLabel::default(), TermIndex::default());
            let mut placed: Vec<(Arc<PodInfo>, Vec<Term>)> = Vec::new();
            for (i, (labels, sels)) in pods.iter().enumerate() {
                let p = Arc::new(PodInfo { key: format!("p{i}"), labels: labels.clone(), ..PodInfo::default() });
                let t: Vec<Term> = sels.iter().map(|s| Term {
                    selector: Some(LabelSelector::parse(s).expect("selector")),
                    namespaces: None,
                    topology_key: "zone".into(),
                    weight: 1,
                }).collect();
                by_label.insert(&p);
                terms.insert(&p, &t);
                placed.push((p, t));
            }
            for (i, (p, t)) in placed.iter().enumerate() {
                if removed[i] {
                    by_label.remove(p);
                    terms.remove(p, t);
                }
            }
            let live: Vec<&(Arc<PodInfo>, Vec<Term>)> =
                placed.iter().enumerate().filter(|(i, _)| !removed[*i]).map(|(_, x)| x).collect();
            for s in &selectors {
                let sel = LabelSelector::parse(s).expect("selector");
                let mut want: Vec<String> =
                    live.iter().filter(|(p, _)| sel.matches(&p.labels)).map(|(p, _)| p.key.clone()).collect();
                want.sort();
                if let Some(candidates) = by_label.candidates(&sel) {
                    let mut got: Vec<String> =
                        candidates.filter(|p| sel.matches(&p.labels)).map(|p| p.key.clone()).collect();
                    got.sort();
                    proptest::prop_assert_eq!(got, want, "selector {:?}", s);
                };
            }
            let mut want: Vec<(String, usize)> = live
                .iter()
                .flat_map(|(p, t)| t.iter().enumerate().map(move |(i, t)| (p, i, t)))
                .filter(|(_, _, t)| t.matches("default", &incoming))
                .map(|(p, i, _)| (p.key.clone(), i))
                .collect();
            want.sort();
            let mut got: Vec<(String, usize)> = terms
                .candidates(&incoming)
                .filter(|(p, i)| live.iter().any(|(q, t)| q.key == p.key && t[*i].matches("default", &incoming)))
                .map(|(p, i)| (p.key.clone(), i))
                .collect();
            got.sort();
            let mut unique = got.clone();
            unique.dedup();
            proptest::prop_assert_eq!(&unique, &got, "a term came twice");
            proptest::prop_assert_eq!(got, want);
        }
    }
}
