//! Pod workers: one task per pod bound to this node, fed by a watch on
//! `spec.nodeName=<node>`. Each worker drives the [`Runtime`] toward the pod's spec, writes
//! the pod's status when it changes, and on deletion stops the pod within its grace period
//! and then removes it from the API with `gracePeriodSeconds=0`, as the kubelet does.

use crate::runtime::{pod_key, Runtime};
use crate::status;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::watcher;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Settings of the pod workers.
#[derive(Clone, Debug)]
pub struct PodConfig {
    /// This node's name (the watch selects `spec.nodeName=<node>`).
    pub node_name: String,
    /// The node's address, reported as the pods' hostIP.
    pub host_ip: String,
    /// How often a pod is synced when nothing happens (the kubelet's sync frequency).
    pub resync_period: Duration,
    /// A resync after a silence waits for pods marked for deletion to stop if what remains of
    /// their grace period is at most this (longer ones stop in the background).
    pub resync_timeout: Duration,
}

/// A pod worker: its inbox and its task.
struct Worker {
    tx: watch::Sender<Option<Pod>>,
    /// Becomes true (or closed) when the worker ended: its pod is stopped and released.
    done: watch::Receiver<bool>,
}

impl Worker {
    fn finished(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut done = self.done.clone();
        async move {
            let _ = done.wait_for(|d| *d).await;
        }
    }
}

/// Watch the pods bound to this node and keep one worker per pod until the watch ends.
///
/// A request on `resync` (see [`crate::recovery`]) drops the watch and starts a fresh one: its
/// initial LIST is the truth. Workers of pods missing from it are retired (the pod was deleted
/// or replaced while this node was cut off; its containers are stopped and removed), the
/// runtime's leftovers are removed, and only then is the request answered. Events still
/// buffered in the old watch are dropped with it, and the UIDs of retired pods are never
/// started again (a pod's UID cannot come back).
pub async fn run(
    client: kube::Client,
    runtime: Arc<dyn Runtime>,
    config: PodConfig,
    mut resync: tokio::sync::mpsc::Receiver<crate::recovery::ResyncRequest>,
) {
    let api: Api<Pod> = Api::all(client.clone());
    let wc = watcher::Config::default().fields(&format!("spec.nodeName={}", config.node_name));
    let mut stream = watcher(api.clone(), wc.clone()).boxed();
    let mut workers: HashMap<String, Worker> = HashMap::new();
    let mut listing: HashSet<String> = HashSet::new();
    let mut retired: HashSet<String> = HashSet::new();
    let mut cleaned_up = false;
    let mut waiting: Option<crate::recovery::ResyncRequest> = None;
    let mut resync_open = true;
    loop {
        let event = tokio::select! {
            req = resync.recv(), if resync_open => {
                match req {
                    Some(req) => {
                        tracing::info!(node = %config.node_name, "resync requested: relisting the node's pods");
                        stream = watcher(api.clone(), wc.clone()).boxed();
                        waiting = Some(req);
                    }
                    None => resync_open = false,
                }
                continue;
            }
            event = stream.next() => event,
        };
        let Some(event) = event else { break };
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(node = %config.node_name, error = %e, "pod watch failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        workers.retain(|_, w| !w.tx.is_closed());
        match event {
            watcher::Event::Init => listing.clear(),
            watcher::Event::InitApply(pod) => {
                if let Some(uid) = pod.metadata.uid.clone() {
                    listing.insert(uid);
                }
                dispatch(&mut workers, &retired, &client, &runtime, &config, pod);
            }
            watcher::Event::InitDone => {
                // Pods that vanished while the watch was down: stop them.
                let mut stopping = Vec::new();
                for (uid, w) in &workers {
                    if !listing.contains(uid) {
                        tracing::info!(node = %config.node_name, %uid, "pod no longer bound to this node; stopping it");
                        retired.insert(uid.clone());
                        let _ = w.tx.send(None);
                        stopping.push(w.finished());
                    } else if waiting.is_some()
                        && w.tx.borrow().as_ref().and_then(remaining_grace).is_some_and(|g| g <= config.resync_timeout)
                    {
                        // Marked for deletion (maybe while this node was cut off; its
                        // replacement may run elsewhere already): it stops within what remains
                        // of its grace period, and the resync waits for that.
                        stopping.push(w.finished());
                    }
                }
                if retired.len() > 10_000 {
                    retired.clear();
                }
                if !cleaned_up || waiting.is_some() {
                    cleaned_up = true;
                    // What the runtime holds for pods that are neither listed nor have a worker
                    // (retired workers stop their own pods), decided now: a pod that arrives
                    // later is not a leftover.
                    let leftovers: Vec<String> = match runtime.list_pods().await {
                        Ok(uids) => {
                            uids.into_iter().filter(|u| !listing.contains(u) && !workers.contains_key(u)).collect()
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "listing the runtime's pods failed");
                            Vec::new()
                        }
                    };
                    let (runtime, config, done) = (runtime.clone(), config.clone(), waiting.take());
                    // Off the event loop: the watch keeps being served while pods stop.
                    tokio::spawn(async move {
                        futures::future::join_all(stopping).await;
                        clean_up_leftovers(&runtime, &config, leftovers).await;
                        if let Some(done) = done {
                            let _ = done.send(());
                        }
                    });
                }
            }
            watcher::Event::Apply(pod) => dispatch(&mut workers, &retired, &client, &runtime, &config, pod),
            watcher::Event::Delete(pod) => {
                if let Some(w) = pod.metadata.uid.as_ref().and_then(|uid| workers.get(uid)) {
                    let _ = w.tx.send(None);
                }
            }
        }
    }
}

/// Release what the runtime still holds for pods the API no longer has (after a restart or a
/// silence).
async fn clean_up_leftovers(runtime: &Arc<dyn Runtime>, config: &PodConfig, leftovers: Vec<String>) {
    for uid in leftovers {
        tracing::info!(node = %config.node_name, %uid, "removing leftovers of a pod that no longer exists");
        if let Err(e) = runtime.kill_pod(&uid, Duration::ZERO).await {
            tracing::warn!(%uid, error = %e, "cleaning up a leftover pod failed");
        }
    }
}

fn dispatch(
    workers: &mut HashMap<String, Worker>,
    retired: &HashSet<String>,
    client: &kube::Client,
    runtime: &Arc<dyn Runtime>,
    config: &PodConfig,
    pod: Pod,
) {
    let Some(uid) = pod.metadata.uid.clone() else { return };
    if retired.contains(&uid) {
        return;
    }
    if let Some(w) = workers.get(&uid) {
        let _ = w.tx.send(Some(pod));
        return;
    }
    let (tx, rx) = watch::channel(Some(pod));
    let (done_tx, done) = watch::channel(false);
    let (client, runtime, config, id) = (client.clone(), runtime.clone(), config.clone(), uid.clone());
    tokio::spawn(async move {
        worker(client, runtime, config, id, rx).await;
        let _ = done_tx.send(true);
    });
    workers.insert(uid, Worker { tx, done });
}

/// The life of one pod on this node.
async fn worker(
    client: kube::Client,
    runtime: Arc<dyn Runtime>,
    config: PodConfig,
    uid: String,
    mut rx: watch::Receiver<Option<Pod>>,
) {
    let mut last_written: Option<PodStatus> = None;
    let mut failures = 0u32;
    loop {
        let pod = rx.borrow_and_update().clone();
        let Some(pod) = pod else {
            // Gone from the API (deleted without us, or the node lost it): stop right away.
            if let Err(e) = runtime.kill_pod(&uid, Duration::ZERO).await {
                tracing::warn!(%uid, error = %e, "stopping a removed pod failed");
            }
            return;
        };
        let key = pod_key(&pod);
        let wait = if pod.metadata.deletion_timestamp.is_some() {
            match terminate(&client, runtime.as_ref(), &pod, &uid).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(pod = %key, error = %e, "terminating the pod failed; retrying");
                    failures += 1;
                    backoff(failures)
                }
            }
        } else {
            match runtime.sync_pod(&pod).await {
                Ok(state) => {
                    failures = 0;
                    let desired = status::owned(&status::pod_status(&pod, &state, &config.host_ip, Timestamp::now()));
                    let current = status::owned(&pod.status.clone().unwrap_or_default());
                    if desired != current && last_written.as_ref() != Some(&desired) {
                        match write_status(&client, &pod, &desired).await {
                            Ok(()) => last_written = Some(desired),
                            Err(e) => tracing::warn!(pod = %key, error = %e, "writing pod status failed"),
                        }
                    }
                    state.resync_after.unwrap_or(config.resync_period).min(config.resync_period)
                }
                Err(e) => {
                    tracing::warn!(pod = %key, error = %e, "syncing the pod failed");
                    failures += 1;
                    backoff(failures)
                }
            }
        };
        // Sleep until the resync is due or the pod changes in a way that matters: the echo of
        // our own status write (only status and resourceVersion differ) does not wake the worker.
        let synced = pod;
        let due = tokio::time::Instant::now() + wait;
        loop {
            tokio::select! {
                changed = rx.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    if rx.borrow().as_ref().is_none_or(|p| !same_but_status(p, &synced)) {
                        break;
                    }
                }
                _ = tokio::time::sleep_until(due) => break,
            }
        }
    }
}

/// Whether two versions of a pod differ at most in status and server-maintained metadata.
fn same_but_status(a: &Pod, b: &Pod) -> bool {
    let (ma, mb) = (&a.metadata, &b.metadata);
    a.spec == b.spec
        && ma.deletion_timestamp == mb.deletion_timestamp
        && ma.deletion_grace_period_seconds == mb.deletion_grace_period_seconds
        && ma.labels == mb.labels
        && ma.annotations == mb.annotations
        && ma.uid == mb.uid
}

fn backoff(failures: u32) -> Duration {
    Duration::from_millis(200u64.saturating_mul(1 << failures.min(8))).min(Duration::from_secs(30))
}

async fn write_status(client: &kube::Client, pod: &Pod, status: &PodStatus) -> Result<(), kube::Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), pod.metadata.namespace.as_deref().unwrap_or("default"));
    let body = serde_json::json!({ "status": status });
    api.patch_status(pod.metadata.name.as_deref().unwrap_or_default(), &PatchParams::default(), &Patch::Merge(&body))
        .await?;
    Ok(())
}

/// What remains of a deleted pod's grace period: its deletion time (deletion + grace period)
/// minus now, with a second of slack for the API's whole-second timestamps; zero once passed.
/// `None` if the pod is not being deleted.
fn remaining_grace(pod: &Pod) -> Option<Duration> {
    let at = pod.metadata.deletion_timestamp.as_ref()?.0.as_second().saturating_add(1);
    Some(Duration::from_secs(u64::try_from(at.saturating_sub(Timestamp::now().as_second())).unwrap_or(0)))
}

/// Stop the pod within its grace period, then remove it from the API. The grace period counts
/// from the deletion, not from when this node saw it: a pod deleted while the node was cut off
/// gets only what remains (its replacement may already run elsewhere).
async fn terminate(client: &kube::Client, runtime: &dyn Runtime, pod: &Pod, uid: &str) -> Result<(), String> {
    let full = Duration::from_secs(pod.metadata.deletion_grace_period_seconds.unwrap_or(30).max(0) as u64);
    let grace = remaining_grace(pod).map_or(full, |r| r.min(full));
    runtime.pod_terminating(pod);
    runtime.kill_pod(uid, grace).await.map_err(|e| e.to_string())?;
    let api: Api<Pod> = Api::namespaced(client.clone(), pod.metadata.namespace.as_deref().unwrap_or("default"));
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions { uid: Some(uid.to_string()), resource_version: None }),
        ..DeleteParams::default()
    };
    match api.delete(pod.metadata.name.as_deref().unwrap_or_default(), &params).await {
        Ok(_) => Ok(()),
        // Already gone, or a new pod of the same name: our pod is gone either way.
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}
