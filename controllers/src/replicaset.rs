//! The ReplicaSet controller: keep `spec.replicas` active pods matching the selector.
//!
//! Flow per reconcile (as kube-controller-manager's replicaset controller):
//! 1. claim pods: adopt orphans that match the selector, release owned pods that stopped
//!    matching (JSON patches with a `test` on the current ownerReferences, so a concurrent
//!    writer is never overwritten);
//! 2. if the expectations from earlier writes are met, create or delete the difference —
//!    creates in slow-start batches (1, 2, 4, …), deletes picked by Kubernetes' ranking
//!    (unscheduled, pending, not ready, … newest first);
//! 3. write status (replicas, fullyLabeled, ready, available with minReadySeconds,
//!    observedGeneration, ReplicaFailure) only when it differs from what is stored.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, ResourceExt};

use crate::events::{Recorder, NORMAL, WARNING};
use crate::expectations::Expectations;
use crate::informer::Informer;
use crate::util::{self, Matcher};

/// Most pods created or deleted in one reconcile (Kubernetes' burstReplicas).
const BURST_REPLICAS: usize = 500;

/// Errors of one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("{0}")]
    Kube(#[from] kube::Error),
}

/// What the reconciler needs.
pub struct Context {
    /// Client for writes.
    pub client: kube::Client,
    /// All pods.
    pub pods: Store<Pod>,
    /// Pods created/deleted and not yet seen.
    pub expectations: Expectations,
    /// Events.
    pub recorder: Recorder,
}

/// Run the controller until `shutdown` resolves.
pub async fn run(
    client: kube::Client,
    rs: &Informer<ReplicaSet>,
    pods: &Informer<Pod>,
    concurrency: u16,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let rs_store = rs.store();
    let ctx = Arc::new(Context {
        client: client.clone(),
        pods: pods.store(),
        expectations: Expectations::default(),
        recorder: Recorder::new(client, "replicaset-controller"),
    });
    let mapper_store = rs_store.clone();
    Controller::for_shared_stream(rs.subscribe(), rs_store)
        .watches_shared_stream(pods.subscribe(), move |pod: Arc<Pod>| pod_owners(&mapper_store, &pod))
        .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}

/// Which ReplicaSets care about a pod: its controller, or (for an orphan) every matching one.
fn pod_owners(store: &Store<ReplicaSet>, pod: &Pod) -> Vec<ObjectRef<ReplicaSet>> {
    let ns = pod.namespace().unwrap_or_default();
    if let Some(r) = util::controller_ref(&pod.metadata) {
        if r.kind == "ReplicaSet" && r.api_version == "apps/v1" {
            return vec![ObjectRef::new(&r.name).within(&ns)];
        }
        return Vec::new();
    }
    let labels = pod.labels();
    store
        .state()
        .iter()
        .filter(|rs| rs.namespace().as_deref() == Some(ns.as_str()))
        .filter(|rs| Matcher::new(Some(&rs.spec.selector)).matches(labels))
        .map(|rs| ObjectRef::from_obj(rs.as_ref()))
        .collect()
}

fn error_policy(_rs: Arc<ReplicaSet>, e: &Error, _ctx: Arc<Context>) -> Action {
    tracing::debug!(error = %e, "replicaset reconcile failed; retrying");
    Action::requeue(Duration::from_millis(500))
}

/// Reconcile one ReplicaSet.
pub async fn reconcile(rs: Arc<ReplicaSet>, ctx: Arc<Context>) -> Result<Action, Error> {
    let key = util::key(rs.as_ref());
    let ns = rs.namespace().unwrap_or_default();
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let spec = rs.spec.clone();
    let selector = Matcher::new(Some(&spec.selector));
    let uid = rs.uid().unwrap_or_default();
    let deleting = rs.metadata.deletion_timestamp.is_some();

    // 1. Claim.
    let all: Vec<Arc<Pod>> = ctx.pods.state().into_iter().filter(|p| p.namespace().as_deref() == Some(&ns)).collect();
    let mut owned: Vec<Arc<Pod>> = Vec::new();
    for pod in all.iter().filter(|p| util::pod_active(p)) {
        match util::controller_ref(&pod.metadata) {
            Some(r) if r.uid == uid => {
                if selector.matches(pod.labels()) || deleting {
                    owned.push(pod.clone());
                } else {
                    util::release(&pods_api, pod.as_ref(), &uid).await?;
                }
            }
            Some(_) => {}
            None if !deleting
                && selector.matches(pod.labels())
                && util::adopt(&pods_api, pod.as_ref(), rs.as_ref()).await?.is_some() =>
            {
                owned.push(pod.clone());
            }
            None => {}
        }
    }

    // 2. Manage.
    let replicas = usize::try_from(spec.replicas.unwrap_or(1).max(0)).unwrap_or(0);
    let names: std::collections::HashSet<&str> = all.iter().filter_map(|p| p.metadata.name.as_deref()).collect();
    let uids: std::collections::HashSet<&str> = all.iter().filter_map(|p| p.metadata.uid.as_deref()).collect();
    let synced = ctx.expectations.satisfied(&key, |n| names.contains(n), |u| uids.contains(u));
    let mut manage_err: Option<(String, String)> = None;
    if synced && !deleting {
        if let Err((reason, e)) = manage(&ctx, rs.as_ref(), &pods_api, &owned, replicas, &key).await {
            manage_err = Some((reason, e.to_string()));
        }
    }

    // 3. Status.
    let now = jiff::Timestamp::now();
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let template_labels = spec.template.as_ref().and_then(|t| t.metadata.as_ref()).and_then(|m| m.labels.clone());
    let fully_labeled = owned
        .iter()
        .filter(|p| template_labels.as_ref().is_none_or(|t| t.iter().all(|(k, v)| p.labels().get(k) == Some(v))))
        .count();
    let ready = owned.iter().filter(|p| util::pod_ready(p)).count();
    let available = owned.iter().filter(|p| util::pod_available(p, min_ready, now)).count();
    let old = rs.status.clone().unwrap_or_default();
    let mut conditions = old.conditions.clone().unwrap_or_default();
    let failure = conditions.iter().position(|c| c.type_.as_deref() == Some("ReplicaFailure"));
    match (&manage_err, failure) {
        (Some((reason, msg)), None) => conditions.push(ReplicaSetCondition {
            type_: Some("ReplicaFailure".into()),
            status: Some("True".into()),
            reason: Some(reason.clone()),
            message: Some(msg.clone()),
            last_transition_time: Some(Time(now)),
        }),
        (None, Some(i)) => {
            conditions.remove(i);
        }
        _ => {}
    }
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    let status = ReplicaSetStatus {
        replicas: count(owned.len()),
        fully_labeled_replicas: Some(count(fully_labeled)),
        ready_replicas: Some(count(ready)),
        available_replicas: Some(count(available)),
        observed_generation: rs.metadata.generation.or(old.observed_generation),
        conditions: (!conditions.is_empty()).then_some(conditions),
        terminating_replicas: old.terminating_replicas,
    };
    if normalize(&status) != normalize(&old) {
        let rs_api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
        let mut updated = (*rs).clone();
        updated.status = Some(status);
        match rs_api.replace_status(&rs.name_any(), &PostParams::default(), &updated).await {
            Ok(_) => {}
            Err(e) if util::api_code(&e) == Some(404) => return Ok(Action::await_change()),
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(e) = manage_err {
        tracing::debug!(rs = %key, error = %e.1, "replicaset manage failed");
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    if !synced {
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    if ready != available {
        let next = owned.iter().filter_map(|p| util::seconds_until_available(p, min_ready, now)).min().unwrap_or(1);
        return Ok(Action::requeue(Duration::from_secs(u64::try_from(next.max(1)).unwrap_or(1))));
    }
    Ok(Action::await_change())
}

/// Status with absent counters read as zero, so "unset" and "0" compare equal.
fn normalize(s: &ReplicaSetStatus) -> ReplicaSetStatus {
    let mut s = s.clone();
    for f in [&mut s.fully_labeled_replicas, &mut s.ready_replicas, &mut s.available_replicas] {
        if f.is_none() {
            *f = Some(0);
        }
    }
    if s.conditions.as_ref().is_some_and(Vec::is_empty) {
        s.conditions = None;
    }
    s
}

/// Create or delete pods to reach `replicas`. Errors carry the ReplicaFailure reason.
async fn manage(
    ctx: &Context,
    rs: &ReplicaSet,
    api: &Api<Pod>,
    owned: &[Arc<Pod>],
    replicas: usize,
    key: &str,
) -> Result<(), (String, kube::Error)> {
    if owned.len() < replicas {
        let want = (replicas - owned.len()).min(BURST_REPLICAS);
        let template = pod_from_template(rs);
        let mut remaining = want;
        let mut batch = 1;
        while remaining > 0 {
            let n = batch.min(remaining);
            let pp = PostParams::default();
            let results = futures::future::join_all((0..n).map(|_| api.create(&pp, &template))).await;
            let mut created = Vec::new();
            let mut failed = None;
            for r in results {
                match r {
                    Ok(p) => {
                        let name = p.name_any();
                        ctx.recorder.record(rs, NORMAL, "SuccessfulCreate", format!("Created pod: {name}"));
                        created.push(name);
                    }
                    Err(e) => failed = Some(e),
                }
            }
            ctx.expectations.expect(key, created, Vec::new());
            if let Some(e) = failed {
                ctx.recorder.record(rs, WARNING, "FailedCreate", format!("Error creating: {e}"));
                return Err(("FailedCreate".into(), e));
            }
            remaining -= n;
            batch *= 2;
        }
    } else if owned.len() > replicas {
        let n = (owned.len() - replicas).min(BURST_REPLICAS);
        let victims = pods_to_delete(owned, n);
        let uids: Vec<String> = victims.iter().filter_map(|p| p.metadata.uid.clone()).collect();
        ctx.expectations.expect(key, Vec::new(), uids);
        let results = futures::future::join_all(victims.iter().map(|p| {
            let dp = DeleteParams {
                preconditions: Some(Preconditions { uid: p.metadata.uid.clone(), resource_version: None }),
                ..Default::default()
            };
            let name = p.name_any();
            async move { (name.clone(), api.delete(&name, &dp).await) }
        }))
        .await;
        let mut failed = None;
        for (name, r) in results {
            match r {
                Ok(_) => ctx.recorder.record(rs, NORMAL, "SuccessfulDelete", format!("Deleted pod: {name}")),
                Err(e) if matches!(util::api_code(&e), Some(404) | Some(409)) => {}
                Err(e) => {
                    ctx.recorder.record(rs, WARNING, "FailedDelete", format!("Error deleting: {e}"));
                    failed = Some(e);
                }
            }
        }
        if let Some(e) = failed {
            return Err(("FailedDelete".into(), e));
        }
    }
    Ok(())
}

/// A new pod for `rs`: the template's labels, annotations and spec, a controller reference.
pub fn pod_from_template(rs: &ReplicaSet) -> Pod {
    let template = rs.spec.template.clone().unwrap_or_default();
    let tmeta = template.metadata.unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", rs.name_any())),
            namespace: rs.namespace(),
            labels: tmeta.labels,
            annotations: tmeta.annotations,
            finalizers: tmeta.finalizers,
            owner_references: Some(vec![util::owner_ref(rs)]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    }
}

/// Pick `n` pods to delete, Kubernetes' way (ActivePodsWithRanks).
pub fn pods_to_delete(pods: &[Arc<Pod>], n: usize) -> Vec<Arc<Pod>> {
    let mut on_node: HashMap<&str, usize> = HashMap::new();
    for p in pods {
        if let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.as_deref()).filter(|n| !n.is_empty()) {
            *on_node.entry(node).or_default() += 1;
        }
    }
    let rank = |p: &Pod| {
        p.spec.as_ref().and_then(|s| s.node_name.as_deref()).and_then(|n| on_node.get(n).copied()).unwrap_or(0)
    };
    let mut sorted: Vec<Arc<Pod>> = pods.to_vec();
    sorted.sort_by(|a, b| delete_order(a, b, rank(a), rank(b)));
    sorted.truncate(n);
    sorted
}

fn phase_rank(p: &Pod) -> u8 {
    match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") | None => 0,
        Some("Unknown") => 1,
        Some("Running") => 2,
        _ => 3,
    }
}

fn restarts(p: &Pod) -> i32 {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| c.restart_count).max().unwrap_or(0))
        .unwrap_or(0)
}

/// `Less` means "delete first".
fn delete_order(a: &Pod, b: &Pod, rank_a: usize, rank_b: usize) -> Ordering {
    let assigned = |p: &Pod| p.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some_and(|n| !n.is_empty());
    assigned(a)
        .cmp(&assigned(b))
        .then(phase_rank(a).cmp(&phase_rank(b)))
        .then(util::pod_ready(a).cmp(&util::pod_ready(b)))
        .then(rank_b.cmp(&rank_a))
        .then_with(|| {
            // Ready for a shorter time first.
            match (util::pod_ready_since(a).flatten(), util::pod_ready_since(b).flatten()) {
                (Some(x), Some(y)) => y.cmp(&x),
                _ => Ordering::Equal,
            }
        })
        .then(restarts(b).cmp(&restarts(a)))
        .then_with(|| {
            // Newer first.
            let t = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
            t(b).cmp(&t(a))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, node: Option<&str>, phase: &str, ready: bool, created: i64) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "creationTimestamp": jiff::Timestamp::from_second(created).unwrap_or_default().to_string()},
                "spec": {"nodeName": node, "containers": []},
                "status": {"phase": phase, "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]},
            }))
            .unwrap_or_default(),
        )
    }

    #[test]
    fn deletion_ranking_follows_kubernetes() {
        let pods = vec![
            pod("running-ready-old", Some("n1"), "Running", true, 100),
            pod("running-ready-new", Some("n1"), "Running", true, 200),
            pod("unscheduled", None, "Pending", false, 50),
            pod("pending", Some("n2"), "Pending", false, 60),
            pod("running-notready", Some("n2"), "Running", false, 70),
        ];
        let order: Vec<String> = pods_to_delete(&pods, 5).iter().map(|p| p.name_any()).collect();
        assert_eq!(order, ["unscheduled", "pending", "running-notready", "running-ready-new", "running-ready-old"]);
        assert_eq!(pods_to_delete(&pods, 2).len(), 2);
    }
}
