//! watch: newline-delimited JSON events from the watch cache.

use super::{Api, Body, Reply, Request};
use crate::cache::{CacheError, CacheEvent, CachedObject, Change, Message, Subscription};
use crate::error::{ApiError, Result};
use crate::filter::Filter;
use bytes::{BufMut, Bytes, BytesMut};
use ferry_api::ResourceInfo;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;

/// How a watch starts.
enum Start {
    /// Current state as ADDED events, then changes. `min_rev`: state not older than this
    /// (None = consistent read). `bookmark_end`: finish the initial events with the
    /// `k8s.io/initial-events-end` bookmark.
    Initial { min_rev: Option<i64>, bookmark_end: bool },
    /// Changes after this revision.
    From(i64),
}

fn line(kind: &str, object: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(object.len() + 32);
    out.put_slice(b"{\"type\":\"");
    out.put_slice(kind.as_bytes());
    out.put_slice(b"\",\"object\":");
    out.put_slice(object);
    out.put_slice(b"}\n");
    out.freeze()
}

fn bookmark(res: &ResourceInfo, rev: i64, initial_end: bool) -> Bytes {
    let mut meta = serde_json::json!({"resourceVersion": rev.to_string()});
    if initial_end {
        meta["annotations"] = serde_json::json!({"k8s.io/initial-events-end": "true"});
    }
    let obj = serde_json::json!({"kind": res.kind, "apiVersion": res.api_version(), "metadata": meta});
    line("BOOKMARK", obj.to_string().as_bytes())
}

/// The in-stream error for a resourceVersion that is too old.
fn expired_line(message: &str) -> Bytes {
    line("ERROR", ApiError::expired(message).to_status().to_string().as_bytes())
}

impl Api {
    /// WATCH a collection (or one object through `fieldSelector=metadata.name=…`).
    pub(super) async fn watch(&self, req: &Request<'_>) -> Result<Reply> {
        let q = &req.query;
        let target = &req.target;
        let res = target.res;
        let mut query = q.clone();
        if let Some(name) = &target.name {
            // GET …/pods/x?watch=true is the legacy single-object watch.
            let by_name = format!("metadata.name={name}");
            query.field_selector = Some(match &q.field_selector {
                Some(f) => format!("{f},{by_name}"),
                None => by_name,
            });
        }
        let mut all = target.clone();
        all.name = None;
        let filter = Filter::new(&all, &query)?;
        let rv = q.resource_version.as_deref();
        let start = match q.send_initial_events {
            Some(send) => {
                if q.resource_version_match.as_deref() != Some("NotOlderThan") {
                    return Err(ApiError::invalid_params(
                        res,
                        "resourceVersionMatch",
                        "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
                    ));
                }
                if !q.allow_bookmarks {
                    return Err(ApiError::invalid_params(
                        res,
                        "allowWatchBookmarks",
                        "sendInitialEvents requires setting allowWatchBookmarks to true",
                    ));
                }
                let min_rev = rv.map(parse_watch_rv).transpose()?;
                match (send, min_rev) {
                    (true, min_rev) => Start::Initial { min_rev, bookmark_end: true },
                    (false, Some(rev)) => Start::From(rev),
                    (false, None) => Start::From(self.fresh_revision().await?),
                }
            }
            None if q.resource_version_match.is_some() => {
                return Err(ApiError::invalid_params(
                    res,
                    "resourceVersionMatch",
                    "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
                ));
            }
            None => match rv {
                None => Start::Initial { min_rev: None, bookmark_end: false },
                Some("0") => Start::Initial { min_rev: Some(0), bookmark_end: false },
                Some(s) => Start::From(parse_watch_rv(s)?),
            },
        };
        let timeout = q.timeout_seconds.map(Duration::from_secs).unwrap_or(self.options.default_watch_timeout);

        let (tx, rx) = mpsc::channel::<Bytes>(256);
        let subscription = match start {
            Start::Initial { min_rev, bookmark_end } => {
                self.cache.watch_with_initial(res, &filter.prefix, min_rev).await.map(|s| (s, bookmark_end))
            }
            Start::From(rev) => self.cache.watch_from(res, rev).await.map(|s| (s, false)),
        };
        let (sub, bookmark_end) = match subscription {
            Ok(s) => s,
            Err(CacheError::TooOld { requested, oldest }) => {
                // Kubernetes answers a stale resourceVersion with 200 and one ERROR event.
                let _ = tx.try_send(expired_line(&format!("too old resource version: {requested} ({oldest})")));
                return Ok(Reply { code: 200, body: Body::Stream(rx), warnings: Vec::new() });
            }
            Err(CacheError::TooNew { requested, current }) => {
                return Err(ApiError::timeout(format!("Too large resource version: {requested}, current: {current}")))
            }
            Err(CacheError::Storage(e)) => return Err(ApiError::unavailable(format!("storage is unavailable: {e}"))),
        };
        let watcher = Watcher {
            res,
            filter,
            tx,
            bookmarks: q.allow_bookmarks,
            bookmark_interval: self.options.bookmark_interval,
            last_bookmark: Instant::now(),
            table: req.table,
            table_headers_sent: std::sync::atomic::AtomicBool::new(false),
        };
        let shutdown = self.shutdown.clone();
        let gauge = self.metrics.watcher_guard(res);
        tokio::spawn(async move {
            let _gauge = gauge;
            tokio::select! {
                _ = watcher.run(sub, bookmark_end) => {}
                _ = tokio::time::sleep(timeout) => {}
                _ = shutdown.cancelled() => {}
            }
        });
        Ok(Reply { code: 200, body: Body::Stream(rx), warnings: Vec::new() })
    }
}

impl Api {
    async fn fresh_revision(&self) -> Result<i64> {
        self.cache.wait_fresh().await.map_err(|e| ApiError::timeout(e.to_string()))
    }
}

fn parse_watch_rv(s: &str) -> Result<i64> {
    s.parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .ok_or_else(|| ApiError::bad_request(format!("invalid resource version: {s:?}")))
}

struct Watcher {
    res: &'static ResourceInfo,
    filter: Filter,
    tx: mpsc::Sender<Bytes>,
    bookmarks: bool,
    bookmark_interval: Duration,
    last_bookmark: Instant,
    /// Send each object as a one-row Table (kubectl get -w).
    table: Option<super::TableOptions>,
    /// Only the first Table event carries column definitions.
    table_headers_sent: std::sync::atomic::AtomicBool,
}

/// The client went away or fell too far behind: stop.
struct Closed;

impl Watcher {
    async fn send(&self, b: Bytes) -> Result<(), Closed> {
        self.tx.send(b).await.map_err(|_| Closed)
    }

    fn object(&self, obj: &CachedObject, rev: i64) -> Bytes {
        let bytes = Api::served_bytes(self.res, &obj.raw, rev);
        let Some(table) = self.table else { return bytes };
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(&bytes) else { return bytes };
        let headers = !self.table_headers_sent.swap(true, std::sync::atomic::Ordering::Relaxed);
        let t = table.render(self.res, &[value], &rev.to_string(), None, headers);
        crate::codec::encode_value(&t).into()
    }

    async fn run(mut self, sub: Subscription, bookmark_end: bool) {
        let _ = self.run_inner(sub, bookmark_end).await;
    }

    async fn run_inner(&mut self, sub: Subscription, bookmark_end: bool) -> Result<(), Closed> {
        let Subscription { rev, initial, replay, mut rx } = sub;
        for obj in initial.iter().filter(|o| self.filter.matches(o)) {
            self.send(line("ADDED", &self.object(obj, obj.rev))).await?;
        }
        if bookmark_end {
            self.send(bookmark(self.res, rev, true)).await?;
            self.last_bookmark = Instant::now();
        }
        for ev in &replay {
            self.event(ev).await?;
        }
        loop {
            match rx.recv().await {
                Ok(Message::Event(ev)) => self.event(&ev).await?,
                Ok(Message::Progress(rev)) => {
                    if self.bookmarks && self.last_bookmark.elapsed() >= self.bookmark_interval {
                        self.send(bookmark(self.res, rev, false)).await?;
                        self.last_bookmark = Instant::now();
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::info!(resource = self.res.plural, skipped = n, "closing a watch that fell behind");
                    return Err(Closed);
                }
                Err(broadcast::error::RecvError::Closed) => return Err(Closed),
            }
        }
    }

    async fn event(&self, ev: &Arc<CacheEvent>) -> Result<(), Closed> {
        let now = self.filter.matches(&ev.object);
        match ev.change {
            Change::Delete if now => self.send(line("DELETED", &self.object(&ev.object, ev.rev))).await,
            Change::Delete => Ok(()),
            Change::Put => {
                let before = ev.prev.as_ref().is_some_and(|p| self.filter.matches(p));
                match (before, now) {
                    (true, true) => self.send(line("MODIFIED", &self.object(&ev.object, ev.rev))).await,
                    (false, true) => self.send(line("ADDED", &self.object(&ev.object, ev.rev))).await,
                    (true, false) => {
                        // Left the selector: DELETED with its last matching state at this revision.
                        let prev = ev.prev.as_ref().map(|p| self.object(p, ev.rev)).unwrap_or_default();
                        self.send(line("DELETED", &prev)).await
                    }
                    (false, false) => Ok(()),
                }
            }
        }
    }
}
