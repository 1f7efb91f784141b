//! etcd storage: keys, revisions and optimistic concurrency.
//!
//! Every write is one etcd transaction. Create succeeds only when the key has never been
//! written (`create_revision == 0`); update and delete only when `mod_revision` still equals
//! the revision the caller read. The returned revision becomes the object's resourceVersion.

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, KvClient, PutOptions, Txn, TxnOp, TxnOpResponse,
    WatchOptions, WatchStream,
};
use std::time::Duration;

/// Storage failures.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The key already exists (create).
    #[error("key {0} already exists")]
    AlreadyExists(String),
    /// The key does not exist.
    #[error("key {0} not found")]
    NotFound(String),
    /// The key changed since it was read.
    #[error("key {key} was modified (now at revision {current:?})")]
    Conflict {
        /// etcd key.
        key: String,
        /// The current value and mod revision, when the key still exists.
        current: Option<Box<Kv>>,
    },
    /// A guard key changed since it was read (see [`Store::create`]).
    #[error("guard key {0} changed")]
    GuardChanged(String),
    /// A key the write meant to claim exists already.
    #[error("key {0} is already claimed")]
    Claimed(String),
    /// The requested revision has been compacted.
    #[error("revision {0} has been compacted")]
    Compacted(i64),
    /// etcd is unreachable or failed.
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    /// etcd did not answer in time.
    #[error("etcd did not answer within {0:?}")]
    Timeout(Duration),
}

/// Result alias for storage operations.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// One stored value.
#[derive(Debug, Clone, PartialEq)]
pub struct Kv {
    /// etcd key.
    pub key: String,
    /// Stored bytes (see [`crate::codec`]).
    pub value: bytes::Bytes,
    /// etcd mod_revision: the object's resourceVersion.
    pub mod_revision: i64,
}

impl From<etcd_client::KeyValue> for Kv {
    fn from(kv: etcd_client::KeyValue) -> Self {
        let mod_revision = kv.mod_revision();
        let (key, value) = kv.into_key_value();
        Kv { key: String::from_utf8_lossy(&key).into_owned(), value: value.into(), mod_revision }
    }
}

/// A page of a range read.
#[derive(Debug)]
pub struct Page {
    /// Values in key order.
    pub kvs: Vec<Kv>,
    /// The revision the read was served at.
    pub revision: i64,
    /// Whether more keys follow.
    pub more: bool,
}

/// Handle on etcd; cheap to clone.
/// Keys a write claims (creates, failing if any exists) or releases (deletes) in the same transaction as
/// the object itself: how Services hold their ClusterIPs and NodePorts.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Side {
    /// Keys to create, with their values; the write fails with [`StorageError::Claimed`] if one exists.
    pub claim: Vec<(String, Vec<u8>)>,
    /// Keys to delete.
    pub release: Vec<String>,
    /// Let the object expire this long after the write (an etcd lease; Events).
    pub ttl: Option<Duration>,
}

impl Side {
    /// No side effects.
    pub const NONE: &'static Side = &Side { claim: Vec::new(), release: Vec::new(), ttl: None };

    fn compares(&self) -> impl Iterator<Item = Compare> + '_ {
        self.claim.iter().map(|(k, _)| Compare::create_revision(k.as_str(), CompareOp::Equal, 0))
    }

    fn ops(&self) -> impl Iterator<Item = TxnOp> + '_ {
        self.claim
            .iter()
            .map(|(k, v)| TxnOp::put(k.as_str(), v.clone(), None))
            .chain(self.release.iter().map(|k| TxnOp::delete(k.as_str(), None)))
    }

    fn probes(&self) -> impl Iterator<Item = TxnOp> + '_ {
        self.claim.iter().map(|(k, _)| TxnOp::get(k.as_str(), Some(GetOptions::new().with_keys_only())))
    }

    /// The first claimed key that exists, from the failure branch's probes after the first `skip`.
    fn taken(&self, responses: &[TxnOpResponse], skip: usize) -> Option<String> {
        responses.iter().skip(skip).zip(&self.claim).find_map(|(r, (k, _))| match r {
            TxnOpResponse::Get(g) if !g.kvs().is_empty() => Some(k.clone()),
            _ => None,
        })
    }
}

#[derive(Clone)]
pub struct Store {
    client: Client,
    kv: KvClient,
    lease: std::sync::Arc<tokio::sync::Mutex<Option<Lease>>>,
}

/// A granted lease, reused by writes for a while (as Kubernetes' lease manager does) so that a burst of
/// expiring objects does not cost one lease each.
#[derive(Debug, Clone, Copy)]
struct Lease {
    id: i64,
    granted: std::time::Instant,
    ttl: Duration,
}

/// How long a granted lease is reused: 5 % of the TTL, at most a minute (Kubernetes' lease manager). The
/// lease is granted for the TTL plus this, so every object lives at least the requested TTL.
fn lease_reuse(ttl: Duration) -> Duration {
    (ttl / 20).min(Duration::from_secs(60))
}

const MAX_MESSAGE: usize = 512 * 1024 * 1024;

/// How long one etcd request may take. A client with no reachable endpoint would otherwise
/// wait for one forever.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

async fn bounded<T>(fut: impl std::future::Future<Output = Result<T, etcd_client::Error>>) -> Result<T> {
    match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
        Ok(r) => r.map_err(StorageError::from),
        Err(_) => Err(StorageError::Timeout(REQUEST_TIMEOUT)),
    }
}

/// The end of the key range that starts with `prefix`.
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn is_compacted(e: &etcd_client::Error) -> bool {
    e.to_string().contains("required revision has been compacted")
}

impl Store {
    /// Connect to the given etcd endpoints (`http://host:port`).
    pub async fn connect(endpoints: &[String]) -> Result<Self> {
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(30))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(true);
        let client = Client::connect(endpoints, Some(options)).await?;
        let kv = client.kv_client().max_decoding_message_size(MAX_MESSAGE).max_encoding_message_size(MAX_MESSAGE);
        Ok(Self { client, kv, lease: Default::default() })
    }

    /// Read one key; `None` when absent.
    pub async fn get(&self, key: &str) -> Result<Option<Kv>> {
        let mut resp = bounded(self.kv.clone().get(key, None)).await?;
        Ok(resp.take_kvs().into_iter().next().map(Kv::from))
    }

    /// The current revision of the store (a quorum read).
    pub async fn current_revision(&self) -> Result<i64> {
        let resp =
            bounded(self.kv.clone().get("/ferry/revision-probe", Some(GetOptions::new().with_count_only()))).await?;
        Ok(resp.header().map(|h| h.revision()).unwrap_or_default())
    }

    /// Range-read keys under `prefix`, starting at `start` (inclusive; defaults to the prefix),
    /// at `revision` (0 = latest), at most `limit` keys (0 = all).
    pub async fn list(&self, prefix: &str, start: Option<&str>, revision: i64, limit: i64) -> Result<Page> {
        let from = start.unwrap_or(prefix);
        let mut opts = GetOptions::new().with_range(prefix_end(prefix));
        if revision > 0 {
            opts = opts.with_revision(revision);
        }
        if limit > 0 {
            opts = opts.with_limit(limit);
        }
        let mut resp = match bounded(self.kv.clone().get(from, Some(opts))).await {
            Ok(r) => r,
            Err(StorageError::Etcd(e)) if is_compacted(&e) => return Err(StorageError::Compacted(revision)),
            Err(e) => return Err(e),
        };
        let revision = resp.header().map(|h| h.revision()).unwrap_or(revision);
        let more = resp.more();
        Ok(Page { kvs: resp.take_kvs().into_iter().map(Kv::from).collect(), revision, more })
    }

    /// Write `key` unconditionally (for markers, never for objects).
    pub async fn put(&self, key: &str, value: &[u8]) -> Result<i64> {
        let resp = bounded(self.kv.clone().put(key, value.to_vec(), None)).await?;
        Ok(resp.header().map(|h| h.revision()).unwrap_or_default())
    }

    /// Create `key`; fails with [`StorageError::AlreadyExists`] if it exists. With a guard
    /// `(key, mod_revision)`, the create also requires that key unchanged (e.g. the namespace
    /// an object goes into), else [`StorageError::GuardChanged`]. `side` keys are claimed and
    /// released in the same transaction ([`StorageError::Claimed`]). Returns the revision.
    pub async fn create(&self, key: &str, value: Vec<u8>, guard: Option<(&str, i64)>, side: &Side) -> Result<i64> {
        let mut when = vec![Compare::create_revision(key, CompareOp::Equal, 0)];
        if let Some((gk, rev)) = guard {
            when.push(Compare::mod_revision(gk, CompareOp::Equal, rev));
        }
        when.extend(side.compares());
        let mut then = vec![TxnOp::put(key, value, self.put_options(side).await?)];
        then.extend(side.ops());
        let mut otherwise = vec![TxnOp::get(key, Some(GetOptions::new().with_keys_only()))];
        otherwise.extend(side.probes());
        let txn = Txn::new().when(when).and_then(then).or_else(otherwise);
        let resp = bounded(self.kv.clone().txn(txn)).await?;
        if resp.succeeded() {
            return Ok(resp.header().map(|h| h.revision()).unwrap_or_default());
        }
        let responses = resp.op_responses();
        if matches!(responses.first(), Some(TxnOpResponse::Get(g)) if !g.kvs().is_empty()) {
            return Err(StorageError::AlreadyExists(key.to_string()));
        }
        if let Some(taken) = side.taken(&responses, 1) {
            return Err(StorageError::Claimed(taken));
        }
        match guard {
            Some((gk, _)) => Err(StorageError::GuardChanged(gk.to_string())),
            None => Err(StorageError::AlreadyExists(key.to_string())),
        }
    }

    /// Replace `key` if its mod_revision is still `expected`, else [`StorageError::Conflict`] with the
    /// current value (or [`StorageError::NotFound`]). Returns the revision.
    pub async fn update(&self, key: &str, value: Vec<u8>, expected: i64, side: &Side) -> Result<i64> {
        self.write(key, Some(value), expected, side).await
    }

    /// Delete `key` if its mod_revision is still `expected`, as [`Store::update`]. Returns the revision.
    pub async fn delete(&self, key: &str, expected: i64, side: &Side) -> Result<i64> {
        self.write(key, None, expected, side).await
    }

    /// Put (`Some`) or delete (`None`) `key` if its mod_revision is still `expected`.
    async fn write(&self, key: &str, value: Option<Vec<u8>>, expected: i64, side: &Side) -> Result<i64> {
        let mut when = vec![Compare::mod_revision(key, CompareOp::Equal, expected)];
        when.extend(side.compares());
        let mut then = vec![match value {
            Some(v) => TxnOp::put(key, v, self.put_options(side).await?),
            None => TxnOp::delete(key, None),
        }];
        then.extend(side.ops());
        let mut otherwise = vec![TxnOp::get(key, None)];
        otherwise.extend(side.probes());
        let txn = Txn::new().when(when).and_then(then).or_else(otherwise);
        let resp = bounded(self.kv.clone().txn(txn)).await?;
        if resp.succeeded() {
            return Ok(resp.header().map(|h| h.revision()).unwrap_or_default());
        }
        let responses = resp.op_responses();
        let unchanged = matches!(responses.first(), Some(TxnOpResponse::Get(g))
            if g.kvs().first().is_some_and(|kv| kv.mod_revision() == expected));
        if unchanged {
            if let Some(taken) = side.taken(&responses, 1) {
                return Err(StorageError::Claimed(taken));
            }
        }
        Err(conflict(key, responses))
    }

    /// The lease a write with `ttl` attaches its key to.
    async fn lease_for(&self, ttl: Duration) -> Result<i64> {
        let mut current = self.lease.lock().await;
        if let Some(l) = *current {
            if l.ttl == ttl && l.granted.elapsed() < lease_reuse(ttl) {
                return Ok(l.id);
            }
        }
        let seconds = i64::try_from((ttl + lease_reuse(ttl)).as_secs()).unwrap_or(i64::MAX).max(1);
        let granted = bounded(self.client.clone().lease_grant(seconds, None)).await?;
        *current = Some(Lease { id: granted.id(), granted: std::time::Instant::now(), ttl });
        Ok(granted.id())
    }

    async fn put_options(&self, side: &Side) -> Result<Option<PutOptions>> {
        Ok(match side.ttl {
            Some(ttl) => Some(PutOptions::new().with_lease(self.lease_for(ttl).await?)),
            None => None,
        })
    }

    /// Keys under `prefix` (values not read).
    pub async fn keys(&self, prefix: &str) -> Result<Vec<String>> {
        let opts = GetOptions::new().with_range(prefix_end(prefix)).with_keys_only();
        let resp = bounded(self.kv.clone().get(prefix, Some(opts))).await?;
        Ok(resp.kvs().iter().map(|kv| String::from_utf8_lossy(kv.key()).into_owned()).collect())
    }

    /// Compact history up to `revision`.
    pub async fn compact(&self, revision: i64) -> Result<()> {
        match bounded(self.client.clone().compact(revision, None)).await {
            Ok(_) => Ok(()),
            Err(StorageError::Etcd(e)) if is_compacted(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Open a watch on `prefix` from `start_revision` (inclusive), with progress notifications.
    /// Without previous values: the watch cache holds them, and etcd would pay a range read per
    /// event to attach them (about a third of its CPU per update).
    pub async fn watch(&self, prefix: &str, start_revision: i64) -> Result<WatchStream> {
        let opts = WatchOptions::new().with_prefix().with_progress_notify().with_start_revision(start_revision);
        bounded(self.client.watch_client().max_decoding_message_size(MAX_MESSAGE).watch(prefix, Some(opts))).await
    }
}

fn conflict(key: &str, responses: Vec<TxnOpResponse>) -> StorageError {
    let current = responses.into_iter().find_map(|r| match r {
        TxnOpResponse::Get(mut g) => g.take_kvs().into_iter().next().map(|kv| Box::new(Kv::from(kv))),
        _ => None,
    });
    match current {
        None => StorageError::NotFound(key.to_string()),
        Some(kv) => StorageError::Conflict { key: key.to_string(), current: Some(kv) },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_last_byte() {
        assert_eq!(prefix_end("/registry/core/pods/"), b"/registry/core/pods0".to_vec());
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80".to_vec());
    }
}
