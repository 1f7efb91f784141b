//! Deployment arithmetic and bookkeeping, as Kubernetes' `deployment/util` defines it:
//! surge/unavailable fenceposts, template hashing, revisions, replica annotations, conditions.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Label (and selector key) that ties a ReplicaSet to one template.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// Revision of a Deployment / ReplicaSet.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// Deployment replicas when the ReplicaSet was last scaled.
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// Deployment replicas + maxSurge when the ReplicaSet was last scaled.
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
/// Revision history kept on a ReplicaSet that was rolled back to.
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";

/// Condition reasons, exactly as Kubernetes spells them.
pub mod reason {
    /// Available=True.
    pub const MINIMUM_REPLICAS_AVAILABLE: &str = "MinimumReplicasAvailable";
    /// Available=False.
    pub const MINIMUM_REPLICAS_UNAVAILABLE: &str = "MinimumReplicasUnavailable";
    /// Progressing=True, a new ReplicaSet was created.
    pub const NEW_RS_CREATED: &str = "NewReplicaSetCreated";
    /// Progressing=True, an existing ReplicaSet matches the template.
    pub const FOUND_NEW_RS: &str = "FoundNewReplicaSet";
    /// Progressing=True, the rollout made progress.
    pub const RS_UPDATED: &str = "ReplicaSetUpdated";
    /// Progressing=True, the rollout is complete.
    pub const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
    /// Progressing=False, no progress within progressDeadlineSeconds.
    pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";
    /// Progressing=Unknown, paused.
    pub const PAUSED: &str = "DeploymentPaused";
    /// Progressing=Unknown, resumed.
    pub const RESUMED: &str = "DeploymentResumed";
}

/// Annotations never copied from a Deployment to its ReplicaSets.
fn skip_copy(key: &str) -> bool {
    matches!(
        key,
        "kubectl.kubernetes.io/last-applied-configuration"
            | REVISION
            | REVISION_HISTORY
            | DESIRED_REPLICAS
            | MAX_REPLICAS
            | "deprecated.deployment.rollback.to"
    )
}

/// `IntOrString` scaled against `total`: percentages round up or down.
pub fn scaled_value(v: Option<&IntOrString>, total: i32, round_up: bool) -> i32 {
    match v {
        None => 0,
        Some(IntOrString::Int(i)) => *i,
        Some(IntOrString::String(s)) => {
            let pct: i64 = s.trim_end_matches('%').parse().unwrap_or(0);
            let prod = pct * i64::from(total);
            let v = if round_up { (prod + 99).div_euclid(100) } else { prod.div_euclid(100) };
            i32::try_from(v).unwrap_or(0)
        }
    }
}

/// (maxSurge, maxUnavailable) for `d`; both zero is impossible (unavailable becomes 1).
pub fn fenceposts(d: &Deployment) -> (i32, i32) {
    let replicas = replicas(d);
    let rolling = d.spec.strategy.as_ref().and_then(|s| s.rolling_update.as_ref());
    let surge = scaled_value(rolling.and_then(|r| r.max_surge.as_ref()), replicas, true);
    let unavailable = scaled_value(rolling.and_then(|r| r.max_unavailable.as_ref()), replicas, false);
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

/// Whether `d` uses the Recreate strategy.
pub fn is_recreate(d: &Deployment) -> bool {
    Some(&d.spec).and_then(|s| s.strategy.as_ref()).and_then(|s| s.type_.as_deref()) == Some("Recreate")
}

/// maxSurge (0 for Recreate).
pub fn max_surge(d: &Deployment) -> i32 {
    if is_recreate(d) {
        0
    } else {
        fenceposts(d).0
    }
}

/// maxUnavailable, at most `replicas` (0 for Recreate or zero replicas).
pub fn max_unavailable(d: &Deployment) -> i32 {
    let r = replicas(d);
    if is_recreate(d) || r == 0 {
        return 0;
    }
    fenceposts(d).1.min(r)
}

/// `spec.replicas` (default 1).
pub fn replicas(d: &Deployment) -> i32 {
    d.spec.replicas.unwrap_or(1)
}

/// A ReplicaSet's `spec.replicas`.
pub fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.replicas.unwrap_or(1)
}

/// A ReplicaSet's `status.replicas`.
pub fn rs_status_replicas(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().map_or(0, |s| s.replicas)
}

/// A ReplicaSet's `status.availableReplicas`.
pub fn rs_available(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0)
}

/// Available pods, counted conservatively: while the ReplicaSet controller has not yet seen a
/// new spec, at most `spec.replicas` of the reported available pods are counted.
pub fn rs_available_safe(rs: &ReplicaSet) -> i32 {
    let observed = rs.status.as_ref().and_then(|s| s.observed_generation).unwrap_or(0);
    if observed < rs.metadata.generation.unwrap_or(0) {
        rs_available(rs).min(rs_replicas(rs))
    } else {
        rs_available(rs)
    }
}

/// Pods a ReplicaSet may have right now: its spec, or more while a scale-down is in flight.
pub fn rs_pods_upper_bound(rs: &ReplicaSet) -> i32 {
    rs_replicas(rs).max(rs_status_replicas(rs))
}

/// The template with the pod-template-hash label removed, for comparisons.
fn without_hash(t: &PodTemplateSpec) -> serde_json::Value {
    let mut t = t.clone();
    if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove(POD_TEMPLATE_HASH);
    }
    serde_json::to_value(t).unwrap_or_default()
}

/// Whether two templates are equal apart from the pod-template-hash label.
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    without_hash(a) == without_hash(b)
}

/// The pod-template-hash of a template: FNV-32a over its JSON (and the collision count),
/// spelled with Kubernetes' safe alphabet.
pub fn template_hash(t: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut h: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    feed(&serde_json::to_vec(&without_hash(t)).unwrap_or_default());
    if let Some(c) = collision_count {
        feed(&c.to_le_bytes());
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string().bytes().map(|b| char::from(ALPHABET[usize::from(b) % ALPHABET.len()])).collect()
}

/// The revision annotation of an object (0 when absent or unparseable).
pub fn revision(annotations: Option<&BTreeMap<String, String>>) -> i64 {
    annotations.and_then(|a| a.get(REVISION)).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Copy the Deployment's annotations (except the controller's own) onto a ReplicaSet, set the
/// revision, and (for a new ReplicaSet) the replica annotations. Returns whether anything changed.
pub fn set_new_rs_annotations(d: &Deployment, rs: &mut ReplicaSet, new_revision: i64, exists: bool) -> bool {
    let mut changed = false;
    let annotations = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    for (k, v) in d.metadata.annotations.iter().flatten() {
        if skip_copy(k) || annotations.get(k) == Some(v) {
            continue;
        }
        annotations.insert(k.clone(), v.clone());
        changed = true;
    }
    let old = annotations.get(REVISION).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
    if old < new_revision {
        annotations.insert(REVISION.into(), new_revision.to_string());
        changed = true;
    }
    if !exists && set_replicas_annotations(rs, replicas(d), replicas(d) + max_surge(d)) {
        changed = true;
    }
    changed
}

/// Set desired/max replicas annotations; returns whether they changed.
pub fn set_replicas_annotations(rs: &mut ReplicaSet, desired: i32, max: i32) -> bool {
    let a = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    let mut changed = false;
    for (k, v) in [(DESIRED_REPLICAS, desired), (MAX_REPLICAS, max)] {
        if a.get(k) != Some(&v.to_string()) {
            a.insert(k.into(), v.to_string());
            changed = true;
        }
    }
    changed
}

/// An integer annotation of a ReplicaSet.
pub fn int_annotation(rs: &ReplicaSet, key: &str) -> Option<i32> {
    rs.metadata.annotations.as_ref()?.get(key)?.parse().ok()
}

/// Whether the Deployment has a progress deadline.
pub fn has_progress_deadline(d: &Deployment) -> bool {
    d.spec.progress_deadline_seconds.is_some_and(|s| s != i32::MAX)
}

/// The condition of `type_`, if present.
pub fn condition<'a>(s: &'a DeploymentStatus, type_: &str) -> Option<&'a DeploymentCondition> {
    s.conditions.as_ref()?.iter().find(|c| c.type_.as_deref() == Some(type_))
}

/// A new condition stamped now.
pub fn new_condition(type_: &str, status: &str, reason: &str, message: String) -> DeploymentCondition {
    let now = Time(jiff::Timestamp::now());
    DeploymentCondition {
        type_: Some(type_.into()),
        status: Some(status.into()),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(now.clone()),
        last_transition_time: Some(now),
    }
}

/// Set a condition; same status and reason leaves it alone; same status keeps the transition time.
pub fn set_condition(s: &mut DeploymentStatus, mut c: DeploymentCondition) {
    if let Some(cur) = condition(s, c.type_.as_deref().unwrap_or_default()) {
        if cur.status == c.status && cur.reason == c.reason {
            return;
        }
        if cur.status == c.status {
            c.last_transition_time = cur.last_transition_time.clone();
        }
    }
    remove_condition(s, c.type_.clone().unwrap_or_default().as_str());
    s.conditions.get_or_insert_with(Vec::new).push(c);
}

/// Remove a condition.
pub fn remove_condition(s: &mut DeploymentStatus, type_: &str) {
    if let Some(conds) = s.conditions.as_mut() {
        conds.retain(|c| c.type_.as_deref() != Some(type_));
    }
}

/// Whether the rollout described by `status` is complete for `d`.
pub fn deployment_complete(d: &Deployment, s: &DeploymentStatus) -> bool {
    let r = replicas(d);
    s.updated_replicas == Some(r)
        && s.replicas == Some(r)
        && s.available_replicas == Some(r)
        && s.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
}

/// Whether `new` shows progress over the stored status.
pub fn deployment_progressing(d: &Deployment, new: &DeploymentStatus) -> bool {
    let old = d.status.clone().unwrap_or_default();
    let z = |v: Option<i32>| v.unwrap_or(0);
    let old_old = z(old.replicas) - z(old.updated_replicas);
    let new_old = z(new.replicas) - z(new.updated_replicas);
    z(new.updated_replicas) > z(old.updated_replicas)
        || new_old < old_old
        || z(new.ready_replicas) > z(old.ready_replicas)
        || z(new.available_replicas) > z(old.available_replicas)
}

/// Whether the rollout has gone `progressDeadlineSeconds` without progress.
pub fn deployment_timed_out(d: &Deployment, s: &DeploymentStatus, now: jiff::Timestamp) -> bool {
    if !has_progress_deadline(d) {
        return false;
    }
    let Some(c) = condition(s, "Progressing") else { return false };
    match c.reason.as_deref() {
        Some(reason::NEW_RS_AVAILABLE) => false,
        Some(reason::TIMED_OUT) => true,
        _ => {
            let deadline = i64::from(d.spec.progress_deadline_seconds.unwrap_or(600));
            c.last_update_time.as_ref().is_some_and(|t| t.0.as_second() + deadline < now.as_second())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deploy(replicas: i32, surge: serde_json::Value, unavailable: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({"metadata": {"name": "d"}, "spec": {
            "replicas": replicas, "selector": {"matchLabels": {"a": "b"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}},
            "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}
        }}))
        .unwrap_or_default()
    }

    #[test]
    fn rounding_is_surge_up_unavailable_down() {
        assert_eq!(fenceposts(&deploy(10, json!("25%"), json!("25%"))), (3, 2));
        assert_eq!(fenceposts(&deploy(3, json!("10%"), json!("10%"))), (1, 0));
        assert_eq!(fenceposts(&deploy(4, json!(0), json!(0))), (0, 1));
        assert_eq!(fenceposts(&deploy(5, json!(1), json!(0))), (1, 0));
        assert_eq!(max_unavailable(&deploy(2, json!(0), json!(5))), 2);
    }

    #[test]
    fn hash_ignores_the_hash_label_and_uses_the_safe_alphabet() {
        let d = deploy(1, json!(1), json!(0));
        let t = d.spec.template.clone();
        let mut labelled = t.clone();
        labelled
            .metadata
            .get_or_insert_default()
            .labels
            .get_or_insert_default()
            .insert(POD_TEMPLATE_HASH.into(), "x".into());
        assert_eq!(template_hash(&t, None), template_hash(&labelled, None));
        assert_ne!(template_hash(&t, None), template_hash(&t, Some(1)));
        assert!(template_hash(&t, None).chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
        assert!(equal_ignore_hash(&t, &labelled));
    }

    #[test]
    fn conditions_keep_transition_time() {
        let mut s = DeploymentStatus::default();
        let mut first = new_condition("Progressing", "True", reason::RS_UPDATED, "a".into());
        first.last_transition_time = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        set_condition(&mut s, first);
        set_condition(&mut s, new_condition("Progressing", "True", reason::NEW_RS_AVAILABLE, "b".into()));
        let c = condition(&s, "Progressing").cloned().unwrap_or_else(|| new_condition("x", "x", "x", String::new()));
        assert_eq!(c.reason.as_deref(), Some(reason::NEW_RS_AVAILABLE));
        assert_eq!(c.last_transition_time, Some(Time(jiff::Timestamp::UNIX_EPOCH)));
        assert_eq!(s.conditions.as_ref().map(Vec::len), Some(1));
    }
}
