//! The running scheduler: informers → cache and queue → decision loop → binder.
//!
//! * Two kube-runtime watchers (nodes, pods) feed the [`Cache`] incrementally and put pending
//!   pods whose `spec.schedulerName` is ours into the [`Queue`].
//! * The decision loop pops one pod at a time, runs the [`Framework`] under the cache lock,
//!   *assumes* the pod on the chosen node and hands the binding to a background task (bounded
//!   concurrency), so the next decision already sees this one.
//! * A pod that fits nowhere may preempt ([`preemption`]); either way it gets
//!   `PodScheduled=False` / `Unschedulable` with Kubernetes' message and a FailedScheduling
//!   event, and waits in the unschedulable queue for a relevant change.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Resource;
use serde_json::json;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::Instant;

use crate::cache::{pod_key, Cache, PodInfo};
use crate::framework::Framework;
use crate::leader::{self, LeaderConfig};
use crate::metrics::Metrics;
use crate::plugins::PodCtx;
use crate::preemption::{self, NoPreemption};
use crate::queue::{BackoffConfig, Queue};

/// The scheduler name Ferry's scheduler answers to.
pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";

/// Errors that stop the scheduler.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Another instance holds (or took) the lease.
    #[error("lost leadership")]
    LostLeadership,
    /// An informer stopped for good.
    #[error("{0} informer stopped")]
    InformerStopped(&'static str),
}

/// Tunables.
#[derive(Debug, Clone)]
pub struct Config {
    /// Pods with this `spec.schedulerName` are ours.
    pub scheduler_name: String,
    /// Backoff bounds for failed attempts.
    pub backoff: BackoffConfig,
    /// How often unschedulable pods are checked for the flush.
    pub flush_interval: Duration,
    /// How long a pod stays unschedulable without any relevant change before it is retried.
    pub unschedulable_timeout: Duration,
    /// `None`: Kubernetes' adaptive node sampling.
    pub percentage_of_nodes_to_score: Option<u32>,
    /// Bindings in flight at once.
    pub bind_concurrency: usize,
    /// Whether to publish Scheduled / FailedScheduling / Preempted events.
    pub events: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            scheduler_name: DEFAULT_SCHEDULER_NAME.into(),
            backoff: BackoffConfig::default(),
            flush_interval: Duration::from_secs(30),
            unschedulable_timeout: Duration::from_secs(300),
            percentage_of_nodes_to_score: None,
            bind_concurrency: 64,
            events: true,
        }
    }
}

struct EventReq {
    reference: ObjectReference,
    type_: EventType,
    reason: &'static str,
    note: String,
}

/// The scheduler.
pub struct Scheduler {
    client: kube::Client,
    config: Config,
    cache: Arc<Mutex<Cache>>,
    queue: Arc<Queue>,
    metrics: Arc<Metrics>,
    framework: Framework,
    events: Option<mpsc::Sender<EventReq>>,
    bind_slots: Arc<Semaphore>,
}

fn lock(cache: &Mutex<Cache>) -> MutexGuard<'_, Cache> {
    cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn is_ours(pod: &Pod, name: &str) -> bool {
    pod.spec.as_ref().and_then(|s| s.scheduler_name.as_deref()).unwrap_or(DEFAULT_SCHEDULER_NAME) == name
}

fn is_bound(pod: &Pod) -> bool {
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some_and(|n| !n.is_empty())
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

fn nominated(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.nominated_node_name.as_deref()).unwrap_or_default()
}

impl Scheduler {
    /// A scheduler using `client` for everything.
    pub fn new(client: kube::Client, config: Config, metrics: Arc<Metrics>) -> Scheduler {
        let mut framework = Framework::new();
        framework.percentage_of_nodes_to_score = config.percentage_of_nodes_to_score;
        Scheduler {
            client,
            cache: Arc::new(Mutex::new(Cache::new())),
            queue: Arc::new(Queue::new(config.backoff)),
            metrics,
            framework,
            events: None,
            bind_slots: Arc::new(Semaphore::new(config.bind_concurrency.max(1))),
            config,
        }
    }

    /// Runs with leader election: waits for the lease, then schedules until it is lost.
    pub async fn run_with_leader(self, lease: LeaderConfig) -> Result<(), Error> {
        leader::acquire(self.client.clone(), &lease).await;
        let client = self.client.clone();
        tokio::select! {
            r = self.run() => r,
            _ = leader::hold(client, &lease) => Err(Error::LostLeadership),
        }
    }

    /// Runs the informers and the decision loop; returns only on a fatal error.
    pub async fn run(mut self) -> Result<(), Error> {
        let mut tasks = tokio::task::JoinSet::new();
        if self.config.events {
            let (tx, rx) = mpsc::channel(1000);
            self.events = Some(tx);
            tasks.spawn(event_worker(self.client.clone(), rx));
        }
        let (nodes_synced_tx, mut nodes_synced) = watch::channel(false);
        let (pods_synced_tx, mut pods_synced) = watch::channel(false);
        tasks.spawn(node_informer(self.client.clone(), self.cache.clone(), self.queue.clone(), nodes_synced_tx));
        tasks.spawn(pod_informer(
            self.client.clone(),
            self.cache.clone(),
            self.queue.clone(),
            self.config.scheduler_name.clone(),
            pods_synced_tx,
        ));
        tasks.spawn(housekeeping(self.queue.clone(), self.metrics.clone(), self.config.clone()));
        let synced = async {
            let _ = nodes_synced.wait_for(|s| *s).await;
            let _ = pods_synced.wait_for(|s| *s).await;
        };
        tokio::select! {
            _ = synced => {}
            Some(_) = tasks.join_next() => return Err(Error::InformerStopped("node or pod")),
        }
        tracing::info!(nodes = lock(&self.cache).node_count(), "caches synced; scheduling");
        loop {
            tokio::select! {
                next = self.queue.pop() => {
                    let Some((pod, attempts)) = next else { return Ok(()) };
                    self.schedule_one(pod, attempts).await;
                }
                Some(_) = tasks.join_next() => return Err(Error::InformerStopped("node or pod")),
            }
        }
    }

    async fn schedule_one(&mut self, pod: Arc<Pod>, _attempts: u32) {
        let key = pod_key(&pod);
        let Some(ctx) = PodCtx::new(&pod) else {
            self.queue.done(&key);
            return;
        };
        let started = Instant::now();
        let outcome = {
            let mut cache = lock(&self.cache);
            if cache.is_placed(&key) {
                self.queue.done(&key);
                return;
            }
            match self.framework.schedule(&ctx, &cache) {
                Ok(d) => {
                    cache.assume(&ctx.info, &d.node);
                    Ok(d.node)
                }
                Err(fit) => {
                    let pre = preemption::preempt(&ctx, &cache, &fit);
                    if let Ok(p) = &pre {
                        cache.nominate(&ctx.info, &p.node);
                    }
                    Err((fit, pre))
                }
            }
        };
        let took = started.elapsed();
        match outcome {
            Ok(node) => {
                self.metrics.attempt("scheduled", took);
                let Ok(permit) = self.bind_slots.clone().acquire_owned().await else { return };
                let (client, cache, queue, metrics, events) = (
                    self.client.clone(),
                    self.cache.clone(),
                    self.queue.clone(),
                    self.metrics.clone(),
                    self.events.clone(),
                );
                tokio::spawn(async move {
                    bind(client, &cache, &queue, &metrics, events.as_ref(), &pod, &node, started).await;
                    drop(permit);
                });
            }
            Err((fit, pre)) => {
                self.metrics.attempt("unschedulable", took);
                let mut message = fit.to_string();
                let mut nominate = None;
                match pre {
                    Ok(p) => {
                        self.metrics.preempted(p.victims.len());
                        nominate = Some(p.node.clone());
                        self.evict(&ctx.info, &p).await;
                    }
                    Err(NoPreemption::NoVictims) if fit.num_nodes > 0 => {
                        message = format!("{message} {}", preemption::message(&fit));
                    }
                    Err(NoPreemption::PolicyNever) => {
                        message = format!("{message} preemption: not eligible due to preemptionPolicy=Never.");
                    }
                    Err(NoPreemption::VictimsTerminating) => {
                        message = format!(
                            "{message} preemption: not eligible due to a terminating pod on the nominated node."
                        );
                    }
                    Err(_) => {}
                }
                self.queue.unschedulable(&key);
                let (client, events) = (self.client.clone(), self.events.clone());
                tokio::spawn(async move {
                    mark_unschedulable(client, events.as_ref(), &pod, &message, nominate.as_deref()).await;
                });
            }
        }
    }

    async fn evict(&self, preemptor: &PodInfo, p: &preemption::Preemption) {
        for v in &p.victims {
            let (ns, name) = v.key.split_once('/').unwrap_or(("", &v.key));
            let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
            let dp = DeleteParams {
                preconditions: Some(kube::api::Preconditions { uid: Some(v.uid.clone()), resource_version: None }),
                ..DeleteParams::default()
            };
            match api.delete(name, &dp).await {
                Ok(_) => tracing::info!(victim = %v.key, preemptor = %preemptor.key, node = %p.node, "preempted"),
                Err(e) => tracing::warn!(victim = %v.key, error = %e, "preemption delete failed"),
            }
            if let Some(tx) = &self.events {
                let reference = ObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    namespace: Some(ns.to_string()),
                    name: Some(name.to_string()),
                    uid: Some(v.uid.clone()),
                    ..ObjectReference::default()
                };
                let _ = tx.try_send(EventReq {
                    reference,
                    type_: EventType::Normal,
                    reason: "Preempted",
                    note: format!("Preempted by pod {} on node {}", preemptor.uid, p.node),
                });
            }
        }
    }
}

#[allow(clippy::too_many_arguments)] // the shared handles a detached binding task needs
async fn bind(
    client: kube::Client,
    cache: &Mutex<Cache>,
    queue: &Queue,
    metrics: &Metrics,
    events: Option<&mpsc::Sender<EventReq>>,
    pod: &Pod,
    node: &str,
    started: Instant,
) {
    let key = pod_key(pod);
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client, ns);
    let body = json!({
        "apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": name, "namespace": ns, "uid": pod.metadata.uid},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node}
    });
    let t = Instant::now();
    let res = api.create_subresource::<_, serde_json::Value>("binding", name, &PostParams::default(), &body).await;
    metrics.binding(t.elapsed());
    match res {
        Ok(_) => {
            metrics.scheduled(started.elapsed());
            queue.done(&key);
            if let Some(tx) = events {
                let _ = tx.try_send(EventReq {
                    reference: pod.object_ref(&()),
                    type_: EventType::Normal,
                    reason: "Scheduled",
                    note: format!("Successfully assigned {ns}/{name} to {node}"),
                });
            }
        }
        Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {
            // Bound by someone else (or a previous instance of us), or gone: the watch will
            // bring the truth.
            tracing::info!(pod = %key, reason = %s.message, "binding rejected");
            lock(cache).forget(&key);
            queue.done(&key);
            metrics.attempt("error", Duration::ZERO);
        }
        Err(e) => {
            tracing::warn!(pod = %key, error = %e, "binding failed; backing off");
            lock(cache).forget(&key);
            queue.backoff(&key);
            metrics.attempt("error", Duration::ZERO);
        }
    }
}

async fn mark_unschedulable(
    client: kube::Client,
    events: Option<&mpsc::Sender<EventReq>>,
    pod: &Pod,
    message: &str,
    nominate: Option<&str>,
) {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let current = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"));
    let same = current.is_some_and(|c| {
        c.status == "False" && c.reason.as_deref() == Some("Unschedulable") && c.message.as_deref() == Some(message)
    });
    if !same || nominate.is_some_and(|n| n != nominated(pod)) {
        let mut status = json!({"conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message,
            "lastProbeTime": null, "lastTransitionTime": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        }]});
        if let Some(n) = nominate {
            status["nominatedNodeName"] = json!(n);
        }
        let api: Api<Pod> = Api::namespaced(client, ns);
        let patch = json!({"status": status});
        if let Err(e) = api.patch_status(name, &PatchParams::default(), &Patch::Strategic(&patch)).await {
            tracing::debug!(pod = %name, error = %e, "cannot update PodScheduled condition");
        }
    }
    if let Some(tx) = events {
        let _ = tx.try_send(EventReq {
            reference: pod.object_ref(&()),
            type_: EventType::Warning,
            reason: "FailedScheduling",
            note: message.to_string(),
        });
    }
}

async fn event_worker(client: kube::Client, mut rx: mpsc::Receiver<EventReq>) {
    let recorder = Recorder::new(client, Reporter { controller: DEFAULT_SCHEDULER_NAME.into(), instance: None });
    while let Some(ev) = rx.recv().await {
        let e = KubeEvent {
            type_: ev.type_,
            reason: ev.reason.into(),
            note: Some(ev.note.chars().take(1024).collect()),
            action: "Scheduling".into(),
            secondary: None,
        };
        if let Err(err) = recorder.publish(&e, &ev.reference).await {
            tracing::debug!(error = %err, "cannot publish event");
        }
    }
}

fn watcher_config() -> watcher::Config {
    watcher::Config::default()
}

async fn node_informer(client: kube::Client, cache: Arc<Mutex<Cache>>, queue: Arc<Queue>, synced: watch::Sender<bool>) {
    let api: Api<Node> = Api::all(client);
    let mut stream = watcher::watcher(api, watcher_config()).default_backoff().boxed();
    let mut buffer = Vec::new();
    while let Some(ev) = stream.next().await {
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                tracing::warn!(error = %e, "node watch");
                continue;
            }
        };
        match ev {
            Event::Apply(n) => {
                if lock(&cache).apply_node(&n) {
                    queue.move_all();
                }
            }
            Event::Delete(n) => lock(&cache).delete_node(n.metadata.name.as_deref().unwrap_or_default()),
            Event::Init => buffer.clear(),
            Event::InitApply(n) => buffer.push(n),
            Event::InitDone => {
                lock(&cache).replace_nodes(&std::mem::take(&mut buffer));
                queue.move_all();
                let _ = synced.send(true);
            }
        }
    }
}

fn apply_pod(cache: &Mutex<Cache>, queue: &Queue, name: &str, pod: Pod) {
    let key = pod_key(&pod);
    let mut cache = lock(cache);
    cache.apply_pod(&pod);
    if is_bound(&pod) || is_terminal(&pod) || pod.metadata.deletion_timestamp.is_some() || !is_ours(&pod, name) {
        cache.clear_nomination(&key);
        queue.delete(&key);
        return;
    }
    if cache.is_placed(&key) {
        return; // assumed; the bound version is on its way
    }
    cache.nominate(&PodInfo::new(&pod), nominated(&pod));
    drop(cache);
    queue.add(pod);
}

async fn pod_informer(
    client: kube::Client,
    cache: Arc<Mutex<Cache>>,
    queue: Arc<Queue>,
    name: String,
    synced: watch::Sender<bool>,
) {
    let api: Api<Pod> = Api::all(client);
    let mut stream = watcher::watcher(api, watcher_config()).default_backoff().boxed();
    let mut buffer = Vec::new();
    loop {
        let ev = match stream.try_next().await {
            Ok(Some(ev)) => ev,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "pod watch");
                continue;
            }
        };
        match ev {
            Event::Apply(p) => apply_pod(&cache, &queue, &name, p),
            Event::Delete(p) => {
                let key = pod_key(&p);
                let was_placed = {
                    let mut c = lock(&cache);
                    let placed = c.is_placed(&key);
                    c.delete_pod(&key);
                    placed
                };
                queue.delete(&key);
                if was_placed {
                    queue.move_all();
                }
            }
            Event::Init => buffer.clear(),
            Event::InitApply(p) => buffer.push(p),
            Event::InitDone => {
                let pods = std::mem::take(&mut buffer);
                lock(&cache).replace_pods(&pods);
                for p in pods {
                    apply_pod(&cache, &queue, &name, p);
                }
                let _ = synced.send(true);
            }
        }
    }
}

async fn housekeeping(queue: Arc<Queue>, metrics: Arc<Metrics>, config: Config) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_flush = Instant::now();
    loop {
        tick.tick().await;
        metrics.set_depths(queue.depths());
        if last_flush.elapsed() >= config.flush_interval {
            queue.flush_unschedulable(config.unschedulable_timeout);
            last_flush = Instant::now();
        }
    }
}
