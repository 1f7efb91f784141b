//! InterPodAffinity: required affinity / anti-affinity (filter) and preferred terms (score).
//!
//! Once per scheduling cycle, counts per topology domain are built (`PreFilter`/`PreScore` in
//! Kubernetes' terms) from the placed pods the pod's terms can select and the placed pods whose
//! terms can select the pod — both found through the cache's indexes, not by visiting every pod;
//! per-node checks are then map lookups.

use std::collections::{BTreeMap, HashMap};

use super::{PodCtx, Reason, Term};
use crate::cache::{Cache, NodeInfo};

/// Counts for the required terms of one scheduling cycle.
#[derive(Debug, Default)]
pub struct FilterState {
    /// Per required affinity term: matching pods per topology value.
    affinity: Vec<HashMap<String, u32>>,
    /// Per required anti-affinity term: matching pods per topology value.
    anti: Vec<HashMap<String, u32>>,
    /// Domains where an existing pod's required anti-affinity selects the incoming pod.
    existing_anti: Domains,
    /// Whether the incoming pod matches all of its own affinity terms.
    self_match: bool,
}

/// Computes the counts for `pod` against the placed pods its terms (and their terms) can select.
pub fn prefilter(pod: &PodCtx<'_>, cache: &Cache) -> FilterState {
    let mut s = FilterState {
        affinity: vec![HashMap::new(); pod.affinity.len()],
        anti: vec![HashMap::new(); pod.anti_affinity.len()],
        ..FilterState::default()
    };
    s.self_match = pod.affinity.iter().all(|t| t.matches(&pod.info.namespace, &pod.info.labels));
    count(&pod.affinity, &mut s.affinity, pod, cache);
    count(&pod.anti_affinity, &mut s.anti, pod, cache);
    for (existing, t, node) in cache.anti_terms_selecting(&pod.info.labels) {
        if existing.key != pod.info.key && t.matches(&pod.info.namespace, &pod.info.labels) {
            s.existing_anti.add(&t.topology_key, &node.labels, 1);
        }
    }
    s
}

/// Per term, the placed pods it selects per value of its topology key.
fn count(terms: &[Term], counts: &mut [HashMap<String, u32>], pod: &PodCtx<'_>, cache: &Cache) {
    for (t, c) in terms.iter().zip(counts.iter_mut()) {
        let Some(selector) = &t.selector else { continue };
        for (existing, node) in cache.pods_selected_by(selector) {
            if existing.key != pod.info.key && t.matches(&existing.namespace, &existing.labels) {
                if let Some(v) = node.labels.get(&t.topology_key) {
                    *c.entry(v.clone()).or_default() += 1;
                }
            }
        }
    }
}

/// The filter proper.
pub fn filter(s: &FilterState, pod: &PodCtx<'_>, node: &NodeInfo) -> Result<(), Reason> {
    if s.existing_anti.on(node) > 0 {
        return Err(Reason::ExistingAntiAffinity);
    }
    for (t, counts) in pod.anti_affinity.iter().zip(&s.anti) {
        if node.labels.get(&t.topology_key).is_some_and(|v| counts.get(v).is_some_and(|n| *n > 0)) {
            return Err(Reason::PodAntiAffinity);
        }
    }
    if pod.affinity.is_empty() {
        return Ok(());
    }
    let mut pods_exist = true;
    for (t, counts) in pod.affinity.iter().zip(&s.affinity) {
        let Some(v) = node.labels.get(&t.topology_key) else { return Err(Reason::PodAffinity) };
        if counts.get(v).is_none_or(|n| *n == 0) {
            pods_exist = false;
        }
    }
    if pods_exist {
        return Ok(());
    }
    // The first pod of a group that selects itself may go anywhere.
    let none_anywhere = s.affinity.iter().all(HashMap::is_empty);
    if none_anywhere && s.self_match {
        Ok(())
    } else {
        Err(Reason::PodAffinity)
    }
}

/// Sums per topology domain, grouped by topology key: a node's lookup costs one probe per
/// key, not a scan of every domain (thousands with `kubernetes.io/hostname`).
#[derive(Debug, Default)]
struct Domains(HashMap<String, HashMap<String, i64>>);

impl Domains {
    /// Adds `w` to the node's domain of `key` (nodes without the label have none).
    fn add(&mut self, key: &str, labels: &BTreeMap<String, String>, w: i64) {
        let Some(value) = labels.get(key) else { return };
        if !self.0.contains_key(key) {
            self.0.insert(key.to_string(), HashMap::new());
        }
        let Some(values) = self.0.get_mut(key) else { return };
        match values.get_mut(value) {
            Some(sum) => *sum += w,
            None => {
                values.insert(value.clone(), w);
            }
        }
    }

    /// The sum over the node's domains.
    fn on(&self, node: &NodeInfo) -> i64 {
        self.0.iter().filter_map(|(k, values)| node.labels.get(k).and_then(|v| values.get(v))).sum()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Per topology domain weights for the preferred terms of one cycle.
#[derive(Debug, Default)]
pub struct ScoreState {
    domains: Domains,
}

/// Sums, per topology domain, the weights of the pod's preferred terms matching placed pods
/// and of placed pods' preferred terms matching the pod (anti-affinity counts negative).
pub fn prescore(pod: &PodCtx<'_>, cache: &Cache) -> ScoreState {
    let mut s = ScoreState::default();
    let own = !(pod.preferred_affinity.is_empty() && pod.preferred_anti_affinity.is_empty());
    if !own && !cache.any_affinity_pods() {
        return s;
    }
    let d = &mut s.domains;
    for (terms, sign) in [(&pod.preferred_affinity, 1), (&pod.preferred_anti_affinity, -1)] {
        for t in terms {
            let Some(selector) = &t.selector else { continue };
            for (existing, node) in cache.pods_selected_by(selector) {
                if t.matches(&existing.namespace, &existing.labels) {
                    d.add(&t.topology_key, &node.labels, sign * t.weight);
                }
            }
        }
    }
    for (_, t, node) in cache.preferred_terms_selecting(&pod.info.labels) {
        if t.matches(&pod.info.namespace, &pod.info.labels) {
            d.add(&t.topology_key, &node.labels, t.weight);
        }
    }
    s
}

/// Raw score of one node (may be negative; the framework normalizes min..max to 0..100).
pub fn score(s: &ScoreState, node: &NodeInfo) -> i64 {
    s.domains.on(node)
}

/// Whether the state would score every node the same.
pub fn score_is_flat(s: &ScoreState) -> bool {
    s.domains.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testutil::{node, pod};
    use k8s_openapi::api::core::v1::Pod;
    use serde_json::json;

    fn cluster(placed: &[(&str, Pod)]) -> Cache {
        let mut c = Cache::new();
        for (i, zone) in ["a", "a", "b"].iter().enumerate() {
            c.apply_node(&node(&format!("n{i}"), json!({"metadata": {"labels": {"zone": zone}}})));
        }
        for (n, p) in placed {
            let mut p = p.clone();
            p.spec.as_mut().expect("spec").node_name = Some(n.to_string());
            c.apply_pod(&p);
        }
        c
    }

    fn term(kind: &str, app: &str, key: &str) -> serde_json::Value {
        json!({"spec": {"affinity": {kind: {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": key}]}}}})
    }

    fn feasible(c: &Cache, p: &Pod) -> Vec<String> {
        let ctx = PodCtx::new(p).expect("ctx");
        let s = prefilter(&ctx, c);
        c.nodes().filter(|n| filter(&s, &ctx, n).is_ok()).map(|n| n.name.clone()).collect()
    }

    #[test]
    fn required_affinity_follows_the_topology_domain() {
        let db = pod("db", json!({"metadata": {"labels": {"app": "db"}}}));
        let c = cluster(&[("n2", db)]);
        let mut web = pod("web", term("podAffinity", "db", "zone"));
        assert_eq!(feasible(&c, &web), vec!["n2"]);
        web = pod("web", term("podAffinity", "db", "kubernetes.io/hostname"));
        assert_eq!(feasible(&c, &web), vec!["n2"]);
        let lonely = pod("web", term("podAffinity", "cache", "zone"));
        assert!(feasible(&c, &lonely).is_empty());
        let ctx_p = pod("web", term("podAffinity", "cache", "zone"));
        let ctx = PodCtx::new(&ctx_p).expect("ctx");
        assert_eq!(filter(&prefilter(&ctx, &c), &ctx, c.node("n0").expect("n0")), Err(Reason::PodAffinity));
        // The first pod of a self-selecting group may go anywhere.
        let mut first = pod("first", term("podAffinity", "cache", "zone"));
        first.metadata.labels = Some([("app".to_string(), "cache".to_string())].into());
        assert_eq!(feasible(&c, &first).len(), 3);
    }

    #[test]
    fn required_anti_affinity_both_ways() {
        let db = pod("db", json!({"metadata": {"labels": {"app": "db"}}}));
        let c = cluster(&[("n0", db)]);
        let web = pod("web", term("podAntiAffinity", "db", "zone"));
        assert_eq!(feasible(&c, &web), vec!["n2"]);
        let ctx = PodCtx::new(&web).expect("ctx");
        assert_eq!(filter(&prefilter(&ctx, &c), &ctx, c.node("n1").expect("n1")), Err(Reason::PodAntiAffinity));
        // An existing pod's anti-affinity keeps matching pods out of its domain.
        let mut guard = pod("guard", term("podAntiAffinity", "web", "kubernetes.io/hostname"));
        guard.metadata.labels = Some([("app".to_string(), "guard".to_string())].into());
        let c = cluster(&[("n1", guard)]);
        let web = pod("web", json!({"metadata": {"labels": {"app": "web"}}}));
        assert_eq!(feasible(&c, &web), vec!["n0", "n2"]);
        let ctx = PodCtx::new(&web).expect("ctx");
        assert_eq!(filter(&prefilter(&ctx, &c), &ctx, c.node("n1").expect("n1")), Err(Reason::ExistingAntiAffinity));
    }

    #[test]
    fn preferred_terms_score_domains() {
        let db = pod("db", json!({"metadata": {"labels": {"app": "db"}}}));
        let c = cluster(&[("n2", db)]);
        let web = pod(
            "web",
            json!({"spec": {"affinity": {"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 10, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "zone"}}]}}}}),
        );
        let ctx = PodCtx::new(&web).expect("ctx");
        let s = prescore(&ctx, &c);
        let scores: Vec<i64> = c.nodes().map(|n| score(&s, n)).collect();
        assert_eq!(scores, vec![0, 0, 10]);
        let shy = pod(
            "shy",
            json!({"spec": {"affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 4, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "zone"}}]}}}}),
        );
        let ctx = PodCtx::new(&shy).expect("ctx");
        let s = prescore(&ctx, &c);
        assert_eq!(c.nodes().map(|n| score(&s, n)).collect::<Vec<_>>(), vec![0, 0, -4]);
    }
}
