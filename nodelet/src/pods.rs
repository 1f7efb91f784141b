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
}

/// Watch the pods bound to this node and keep one worker per pod until the watch ends.
pub async fn run(client: kube::Client, runtime: Arc<dyn Runtime>, config: PodConfig) {
    let api: Api<Pod> = Api::all(client.clone());
    let wc = watcher::Config::default().fields(&format!("spec.nodeName={}", config.node_name));
    let mut stream = watcher(api, wc).boxed();
    let mut workers: HashMap<String, watch::Sender<Option<Pod>>> = HashMap::new();
    let mut listing: HashSet<String> = HashSet::new();
    let mut cleaned_up = false;
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(node = %config.node_name, error = %e, "pod watch failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        workers.retain(|_, tx| !tx.is_closed());
        match event {
            watcher::Event::Init => listing.clear(),
            watcher::Event::InitApply(pod) => {
                if let Some(uid) = pod.metadata.uid.clone() {
                    listing.insert(uid);
                }
                dispatch(&mut workers, &client, &runtime, &config, pod);
            }
            watcher::Event::InitDone => {
                // Pods that vanished while the watch was down: stop them.
                for (uid, tx) in &workers {
                    if !listing.contains(uid) {
                        let _ = tx.send(None);
                    }
                }
                if !cleaned_up {
                    cleaned_up = true;
                    clean_up_leftovers(&runtime, &config, &listing).await;
                }
            }
            watcher::Event::Apply(pod) => dispatch(&mut workers, &client, &runtime, &config, pod),
            watcher::Event::Delete(pod) => {
                if let Some(tx) = pod.metadata.uid.as_ref().and_then(|uid| workers.get(uid)) {
                    let _ = tx.send(None);
                }
            }
        }
    }
}

/// Release what the runtime still holds for pods the API no longer has (after a restart).
async fn clean_up_leftovers(runtime: &Arc<dyn Runtime>, config: &PodConfig, known: &HashSet<String>) {
    match runtime.list_pods().await {
        Ok(uids) => {
            for uid in uids.into_iter().filter(|u| !known.contains(u)) {
                tracing::info!(node = %config.node_name, %uid, "removing leftovers of a pod that no longer exists");
                if let Err(e) = runtime.kill_pod(&uid, Duration::ZERO).await {
                    tracing::warn!(%uid, error = %e, "cleaning up a leftover pod failed");
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "listing the runtime's pods failed"),
    }
}

fn dispatch(
    workers: &mut HashMap<String, watch::Sender<Option<Pod>>>,
    client: &kube::Client,
    runtime: &Arc<dyn Runtime>,
    config: &PodConfig,
    pod: Pod,
) {
    let Some(uid) = pod.metadata.uid.clone() else { return };
    if let Some(tx) = workers.get(&uid) {
        let _ = tx.send(Some(pod));
        return;
    }
    let (tx, rx) = watch::channel(Some(pod));
    workers.insert(uid.clone(), tx);
    tokio::spawn(worker(client.clone(), runtime.clone(), config.clone(), uid, rx));
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
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(wait) => {}
        }
    }
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

/// Stop the pod within its grace period, then remove it from the API.
async fn terminate(client: &kube::Client, runtime: &dyn Runtime, pod: &Pod, uid: &str) -> Result<(), String> {
    let grace = pod.metadata.deletion_grace_period_seconds.unwrap_or(30).max(0) as u64;
    runtime.kill_pod(uid, Duration::from_secs(grace)).await.map_err(|e| e.to_string())?;
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
