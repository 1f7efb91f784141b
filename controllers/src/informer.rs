//! One watch per kind, shared by every controller: a reflector store plus a fan-out of every
//! change (deletes included) to the controllers that asked for it.
//!
//! kube-runtime's shared streams forward applied objects only; controllers here also need
//! deletes (a deleted pod makes its ReplicaSet create a replacement), so the informer
//! forwards both.

use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

/// A shared watch of one kind.
pub struct Informer<K: Resource<DynamicType = ()> + Clone + 'static> {
    store: Store<K>,
    writer: Mutex<Option<reflector::store::Writer<K>>>,
    subscribers: Arc<Mutex<Vec<mpsc::UnboundedSender<Arc<K>>>>>,
    health: Arc<WatchHealth>,
}

/// Whether an informer's view is current: counts full lists, and says whether the watch is
/// down (failed and not yet listed again).
#[derive(Debug, Default)]
pub struct WatchHealth {
    lists: AtomicU64,
    down: AtomicBool,
}

impl WatchHealth {
    /// How many full lists completed (the first, and one after every watch failure).
    pub fn lists(&self) -> u64 {
        self.lists.load(Ordering::SeqCst)
    }

    /// Whether the store is current: listed at least once and the watch not failed since.
    pub fn live(&self) -> bool {
        self.lists() > 0 && !self.down.load(Ordering::SeqCst)
    }
}

impl<K> Informer<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    /// An informer (not yet running).
    pub fn new() -> Self {
        let (store, writer) = reflector::store();
        Self {
            store,
            writer: Mutex::new(Some(writer)),
            subscribers: Arc::new(Mutex::new(Vec::new())),
            health: Arc::new(WatchHealth::default()),
        }
    }

    /// Whether the store is current ([`WatchHealth`]).
    pub fn health(&self) -> Arc<WatchHealth> {
        self.health.clone()
    }

    /// The store (filled once the informer runs).
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// A stream of every known object, then of every change or deletion.
    pub fn subscribe(&self) -> UnboundedReceiverStream<Arc<K>> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut subs = self.subscribers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // A late subscriber first hears of everything already known.
        for obj in self.store.state() {
            let _ = tx.send(obj);
        }
        subs.push(tx);
        UnboundedReceiverStream::new(rx)
    }

    /// Run the watch until the process stops (the watcher retries with backoff forever).
    pub fn run(&self, api: Api<K>) -> impl std::future::Future<Output = ()> + Send + 'static {
        let writer = self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        let subscribers = self.subscribers.clone();
        let health = self.health.clone();
        async move {
            let Some(mut writer) = writer else { return };
            // managedFields are never read by a controller and are a large part of each object:
            // not keeping them in the stores saves memory. (A write of a cached object without
            // managedFields leaves the stored ones alone, as in Kubernetes.)
            let stream = watcher(api, watcher::Config::default())
                .default_backoff()
                .modify(|o| o.meta_mut().managed_fields = None);
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                let event = match event {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::warn!(kind = %K::kind(&()), error = %e, "watch failed; retrying");
                        health.down.store(true, Ordering::SeqCst);
                        continue;
                    }
                };
                writer.apply_watcher_event(&event);
                if matches!(event, watcher::Event::InitDone) {
                    health.down.store(false, Ordering::SeqCst);
                    health.lists.fetch_add(1, Ordering::SeqCst);
                }
                let obj = match &event {
                    watcher::Event::Apply(o) | watcher::Event::Delete(o) | watcher::Event::InitApply(o) => o,
                    _ => continue,
                };
                tracing::trace!(kind = %K::kind(&()), "informer event");
                let obj = Arc::new(obj.clone());
                let mut subs = subscribers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                subs.retain(|tx| tx.send(obj.clone()).is_ok());
            }
        }
    }
}

impl<K> Default for Informer<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    fn default() -> Self {
        Self::new()
    }
}
