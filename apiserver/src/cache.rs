//! The watch cache: one etcd watch on `/registry/` keeps an in-memory copy of every resource,
//! and serves lists and watches to any number of clients.
//!
//! * **State.** For each resource prefix the cache holds the current objects (stored bytes plus
//!   the fields selectors need) and a bounded history of recent events. One lock guards all of
//!   it together with the revision the cache is complete up to, so a reader sees one
//!   consistent revision across resources.
//! * **Freshness.** A consistent read first asks etcd for its current revision, then waits
//!   until the cache has caught up (nudging etcd with a progress request), like Kubernetes'
//!   consistent reads from cache.
//! * **Fan-out.** Each resource has a broadcast channel of events and progress marks. A watch
//!   replays history after its resourceVersion and then follows the channel; replay and
//!   subscription happen under the same lock, so nothing is missed or repeated. A watcher too
//!   slow to keep up is closed; it resumes from its last resourceVersion like any client.

use crate::codec::Selectable;
use crate::storage::{Kv, StorageError, Store};
use bytes::Bytes;
use etcd_client::EventType;
use ferry_api::{ResourceInfo, ResourceTable};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Events kept per resource for watches that resume from an older resourceVersion.
pub const DEFAULT_HISTORY: usize = 10_000;
const CHANNEL_CAPACITY: usize = 8_192;

/// A key under the watched prefix that belongs to no resource. Writing it produces an event
/// that arrives after every earlier one, which tells a lagging cache it has caught up.
const PROGRESS_KEY: &str = "/registry/ferry.dev/progress";

/// How long a reader waits for the cache to catch up by itself before asking for a marker.
const NATURAL_CATCH_UP: Duration = Duration::from_millis(50);

/// One stored version of one object.
#[derive(Debug)]
pub struct CachedObject {
    /// etcd key.
    pub key: String,
    /// Stored bytes (no resourceVersion).
    pub raw: Bytes,
    /// mod_revision.
    pub rev: i64,
    /// What selectors look at.
    pub sel: Selectable,
}

impl CachedObject {
    /// Build from a stored key-value of `res`.
    pub fn from_stored(kv: Kv, res: &ResourceInfo) -> Self {
        let sel = Selectable::from_stored(&kv.value, res.fields);
        Self { key: kv.key, raw: kv.value, rev: kv.mod_revision, sel }
    }
}

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Created or updated.
    Put,
    /// Deleted.
    Delete,
}

/// One change, as watchers see it.
#[derive(Debug)]
pub struct CacheEvent {
    /// Revision of the change.
    pub rev: i64,
    /// Put or delete.
    pub change: Change,
    /// New state (put) or last state (delete).
    pub object: Arc<CachedObject>,
    /// Previous state, if any.
    pub prev: Option<Arc<CachedObject>>,
}

/// What a resource's broadcast channel carries.
#[derive(Debug, Clone)]
pub enum Message {
    /// A change.
    Event(Arc<CacheEvent>),
    /// The cache is complete up to this revision (for bookmarks).
    Progress(i64),
}

struct ResourceState {
    res: &'static ResourceInfo,
    objects: BTreeMap<String, Arc<CachedObject>>,
    history: VecDeque<Arc<CacheEvent>>,
    /// History holds every event with a revision above this.
    floor: i64,
    tx: broadcast::Sender<Message>,
}

struct State {
    /// The cache reflects etcd exactly as of this revision.
    rev: i64,
    resources: HashMap<String, ResourceState>,
    history_limit: usize,
}

/// Why the cache could not answer.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The requested revision is older than the cache's history.
    #[error("too old resource version: {requested} ({oldest})")]
    TooOld {
        /// Requested resourceVersion.
        requested: i64,
        /// Oldest resourceVersion still served.
        oldest: i64,
    },
    /// The cache did not reach the requested revision in time.
    #[error("Too large resource version: {requested}, current: {current}")]
    TooNew {
        /// Requested resourceVersion.
        requested: i64,
        /// Revision the cache has reached.
        current: i64,
    },
    /// etcd could not be asked.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// A consistent copy of the matching objects of one resource.
pub struct Snapshot {
    /// The revision the snapshot reflects.
    pub rev: i64,
    /// Objects in key order.
    pub objects: Vec<Arc<CachedObject>>,
}

/// A watch subscription: replayed history, then live messages.
pub struct Subscription {
    /// Revision the subscription starts after.
    pub rev: i64,
    /// Objects to send as ADDED first (initial-events watches); empty otherwise.
    pub initial: Vec<Arc<CachedObject>>,
    /// History events after `rev`, to send before live ones.
    pub replay: Vec<Arc<CacheEvent>>,
    /// Live messages.
    pub rx: broadcast::Receiver<Message>,
}

/// The shared watch cache.
pub struct WatchCache {
    state: RwLock<State>,
    rev_tx: watch::Sender<i64>,
    progress_tx: mpsc::Sender<()>,
    progress_rx: tokio::sync::Mutex<Option<mpsc::Receiver<()>>>,
    store: Store,
    fresh_timeout: Duration,
}

fn resource_prefix(key: &str) -> Option<&str> {
    // "/registry/<group>/<resource>/..." → "/registry/<group>/<resource>/"
    let rest = key.strip_prefix("/registry/")?;
    let mut slashes = rest.match_indices('/');
    slashes.next()?;
    let (second, _) = slashes.next()?;
    Some(&key[..("/registry/".len() + second + 1)])
}

impl WatchCache {
    /// Create an empty cache for every resource of `table`; [`WatchCache::run`] fills it.
    pub fn new(table: &ResourceTable, store: Store, history_limit: usize) -> Arc<Self> {
        let mut resources = HashMap::new();
        for res in table.all() {
            resources.entry(res.key_prefix()).or_insert_with(|| ResourceState {
                res,
                objects: BTreeMap::new(),
                history: VecDeque::new(),
                floor: 0,
                tx: broadcast::channel(CHANNEL_CAPACITY).0,
            });
        }
        let (progress_tx, progress_rx) = mpsc::channel(16);
        Arc::new(Self {
            state: RwLock::new(State { rev: 0, resources, history_limit }),
            rev_tx: watch::channel(0).0,
            progress_tx,
            progress_rx: tokio::sync::Mutex::new(Some(progress_rx)),
            store,
            fresh_timeout: Duration::from_secs(5),
        })
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The revision the cache has reached (0 until the first load).
    pub fn revision(&self) -> i64 {
        *self.rev_tx.borrow()
    }

    /// Whether the initial load is done.
    pub fn is_ready(&self) -> bool {
        self.revision() > 0
    }

    /// Load everything, then follow etcd until `shutdown`. Reconnects on errors; relists
    /// (closing all watchers) only if etcd compacted past the cache.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let Some(mut progress_rx) = self.progress_rx.lock().await.take() else {
            tracing::error!("watch cache started twice");
            return;
        };
        let mut backoff = Duration::from_millis(100);
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            let start = self.revision();
            let result = if start == 0 { self.load().await } else { Ok(()) };
            let stream = match result {
                Ok(()) => self.store.watch("/registry/", self.revision() + 1).await,
                Err(e) => Err(e),
            };
            let mut stream = match stream {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "watch cache cannot reach etcd; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            backoff = Duration::from_millis(100);
            let mut last_progress = 0;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = ticker.tick() => {
                        let rev = self.revision();
                        if rev != last_progress {
                            last_progress = rev;
                            self.broadcast_progress(rev);
                        }
                    }
                    Some(()) = progress_rx.recv() => {
                        // Drain queued requests: one marker write serves them all.
                        while progress_rx.try_recv().is_ok() {}
                        let store = self.store.clone();
                        tokio::spawn(async move {
                            if let Err(e) = store.put(PROGRESS_KEY, b"").await {
                                tracing::debug!(error = %e, "cannot write the progress marker");
                            }
                        });
                    }
                    msg = stream.message() => match msg {
                        Ok(Some(resp)) => {
                            if resp.canceled() {
                                if resp.compact_revision() > 0 {
                                    tracing::warn!(compacted = resp.compact_revision(), "watch cache fell behind compaction; relisting");
                                    self.reset();
                                } else {
                                    tracing::warn!(reason = resp.cancel_reason(), "etcd cancelled the watch");
                                }
                                break;
                            }
                            self.apply(&resp);
                        }
                        Ok(None) => {
                            tracing::warn!("etcd closed the watch stream; reconnecting");
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "etcd watch failed; reconnecting");
                            break;
                        }
                    }
                }
            }
        }
    }

    async fn load(&self) -> Result<(), StorageError> {
        let page = self.store.list("/registry/", None, 0, 0).await?;
        let mut state = self.write();
        for r in state.resources.values_mut() {
            r.objects.clear();
            r.history.clear();
            r.floor = page.revision;
        }
        let mut count = 0usize;
        for kv in page.kvs {
            let Some(prefix) = resource_prefix(&kv.key) else { continue };
            if let Some(r) = state.resources.get_mut(prefix) {
                let obj = CachedObject::from_stored(kv, r.res);
                r.objects.insert(obj.key.clone(), Arc::new(obj));
                count += 1;
            }
        }
        state.rev = page.revision;
        drop(state);
        tracing::info!(revision = page.revision, objects = count, "watch cache loaded");
        self.rev_tx.send_replace(page.revision);
        Ok(())
    }

    /// Forget everything and close every watcher; the next [`WatchCache::run`] loop relists.
    fn reset(&self) {
        let mut state = self.write();
        for r in state.resources.values_mut() {
            r.tx = broadcast::channel(CHANNEL_CAPACITY).0;
        }
        state.rev = 0;
        drop(state);
        self.rev_tx.send_replace(0);
    }

    fn apply(&self, resp: &etcd_client::WatchResponse) {
        let events = resp.events();
        let mut state = self.write();
        let limit = state.history_limit;
        let mut rev = state.rev;
        for ev in events {
            let Some(kv) = ev.kv() else { continue };
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            rev = rev.max(kv.mod_revision());
            let Some(prefix) = resource_prefix(&key) else { continue };
            let Some(r) = state.resources.get_mut(prefix) else { continue };
            let prev = r.objects.get(&key).cloned();
            let event = match ev.event_type() {
                EventType::Put => {
                    let obj = Arc::new(CachedObject::from_stored(Kv::from(kv.clone()), r.res));
                    r.objects.insert(key, obj.clone());
                    CacheEvent { rev: kv.mod_revision(), change: Change::Put, object: obj, prev }
                }
                EventType::Delete => {
                    r.objects.remove(&key);
                    // The cache loaded every object and saw every write since, so it holds the
                    // deleted object's last state; a key it never saw has nothing to report.
                    let Some(last) = prev.clone() else {
                        tracing::debug!(key, "delete of an object the watch cache never saw");
                        continue;
                    };
                    CacheEvent { rev: kv.mod_revision(), change: Change::Delete, object: last, prev }
                }
            };
            let event = Arc::new(event);
            r.history.push_back(event.clone());
            while r.history.len() > limit {
                if let Some(old) = r.history.pop_front() {
                    r.floor = old.rev;
                }
            }
            // No receivers is fine.
            let _ = r.tx.send(Message::Event(event));
        }
        // A progress notification of our own watcher (sent only once it has caught up) says
        // everything up to the header revision was delivered. On-demand progress responses
        // (watch id -1) are ignored: etcd before 3.4.24 may send them ahead of pending events.
        if events.is_empty() && !resp.created() && resp.watch_id() >= 0 {
            if let Some(h) = resp.header() {
                rev = rev.max(h.revision());
            }
        }
        if rev > state.rev {
            state.rev = rev;
            drop(state);
            self.rev_tx.send_replace(rev);
        }
    }

    fn broadcast_progress(&self, rev: i64) {
        let state = self.read();
        for r in state.resources.values() {
            let _ = r.tx.send(Message::Progress(rev));
        }
    }

    /// Note that etcd compacted up to `rev`: history at or below it can no longer be served.
    pub fn compacted(&self, rev: i64) {
        let mut state = self.write();
        for r in state.resources.values_mut() {
            while r.history.front().is_some_and(|e| e.rev <= rev) {
                r.history.pop_front();
            }
            r.floor = r.floor.max(rev);
        }
    }

    /// Wait until the cache reflects at least `rev`.
    pub async fn wait_for(&self, rev: i64) -> Result<i64, CacheError> {
        let mut rx = self.rev_tx.subscribe();
        let current = *rx.borrow();
        if current >= rev && current > 0 {
            return Ok(current);
        }
        let reached = tokio::time::timeout(self.fresh_timeout, async {
            let reach = |r: &i64| *r >= rev && *r > 0;
            if let Ok(r) = tokio::time::timeout(NATURAL_CATCH_UP, rx.wait_for(reach)).await {
                return r.map(|r| *r);
            }
            // Still behind: the missing revisions may belong to keys outside the cache, or be
            // in flight. A marker write flushes them through the watch.
            let _ = self.progress_tx.try_send(());
            rx.wait_for(reach).await.map(|r| *r)
        })
        .await;
        match reached {
            Ok(Ok(r)) => Ok(r),
            _ => Err(CacheError::TooNew { requested: rev, current: self.revision() }),
        }
    }

    /// Wait until the cache reflects everything etcd had when this was called.
    pub async fn wait_fresh(&self) -> Result<i64, CacheError> {
        let current = self.store.current_revision().await?;
        self.wait_for(current).await
    }

    /// Fail with [`CacheError::TooOld`] if etcd has compacted revision `rev + 1`.
    async fn check_not_compacted(&self, rev: i64) -> Result<(), CacheError> {
        match self.store.list("/ferry/revision-probe/", None, rev + 1, 1).await {
            Ok(_) => Ok(()),
            Err(StorageError::Compacted(_)) => Err(CacheError::TooOld { requested: rev, oldest: self.revision() }),
            Err(e) => Err(e.into()),
        }
    }

    /// Current objects of `res` under `prefix` (a namespace prefix or the resource prefix),
    /// starting at key `start`, as of the cache's revision.
    pub fn snapshot(&self, res: &ResourceInfo, prefix: &str, start: Option<&str>) -> Snapshot {
        let state = self.read();
        let objects = match state.resources.get(&res.key_prefix()) {
            Some(r) => {
                let from = start.unwrap_or(prefix).to_string();
                r.objects.range(from..).take_while(|(k, _)| k.starts_with(prefix)).map(|(_, o)| o.clone()).collect()
            }
            None => Vec::new(),
        };
        Snapshot { rev: state.rev, objects }
    }

    /// One object, as of the cache's revision.
    pub fn get(&self, res: &ResourceInfo, key: &str) -> (i64, Option<Arc<CachedObject>>) {
        let state = self.read();
        let obj = state.resources.get(&res.key_prefix()).and_then(|r| r.objects.get(key).cloned());
        (state.rev, obj)
    }

    /// Subscribe to changes of `res` after revision `from`.
    pub async fn watch_from(&self, res: &ResourceInfo, from: i64) -> Result<Subscription, CacheError> {
        self.wait_for(from).await?;
        if from < self.revision() {
            self.check_not_compacted(from).await?;
        }
        let state = self.read();
        let r =
            state.resources.get(&res.key_prefix()).ok_or(CacheError::TooOld { requested: from, oldest: state.rev })?;
        if from < r.floor {
            return Err(CacheError::TooOld { requested: from, oldest: r.floor });
        }
        let replay = r.history.iter().filter(|e| e.rev > from).cloned().collect();
        Ok(Subscription { rev: from, initial: Vec::new(), replay, rx: r.tx.subscribe() })
    }

    /// Subscribe with the current state as initial events (watch without resourceVersion, or
    /// `sendInitialEvents`). `min_rev` is the revision the state must not be older than.
    pub async fn watch_with_initial(
        &self,
        res: &ResourceInfo,
        prefix: &str,
        min_rev: Option<i64>,
    ) -> Result<Subscription, CacheError> {
        match min_rev {
            Some(rev) => self.wait_for(rev).await?,
            None => self.wait_fresh().await?,
        };
        let state = self.read();
        let r =
            state.resources.get(&res.key_prefix()).ok_or(CacheError::TooNew { requested: 0, current: state.rev })?;
        let initial = r
            .objects
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, o)| o.clone())
            .collect();
        Ok(Subscription { rev: state.rev, initial, replay: Vec::new(), rx: r.tx.subscribe() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_resource_prefix() {
        assert_eq!(resource_prefix("/registry/core/pods/default/web"), Some("/registry/core/pods/"));
        assert_eq!(resource_prefix("/registry/core/nodes/n1"), Some("/registry/core/nodes/"));
        assert_eq!(resource_prefix("/registry/core"), None);
        assert_eq!(resource_prefix("/other/x/y"), None);
    }
}
