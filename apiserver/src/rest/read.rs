//! get and list.

use super::{Api, Body, Reply, Request};
use crate::cache::{CacheError, CachedObject};
use crate::error::{from_storage, ApiError, Result};
use crate::filter::Filter;
use base64::Engine;
use bytes::{BufMut, BytesMut};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// A `continue` token: the revision the list started at and the next key.
#[derive(Serialize, Deserialize)]
struct ContinueToken {
    v: String,
    rv: i64,
    start: String,
}

fn encode_continue(rv: i64, start: String) -> String {
    let json = serde_json::json!({"v": "meta.k8s.io/v1", "rv": rv, "start": start}).to_string();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

fn decode_continue(token: &str, prefix: &str) -> Result<ContinueToken> {
    let bad = || {
        ApiError::bad_request(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        )
    };
    let raw =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token.trim_end_matches('=')).map_err(|_| bad())?;
    let t: ContinueToken = serde_json::from_slice(&raw).map_err(|_| bad())?;
    if t.v != "meta.k8s.io/v1" || t.rv <= 0 || !t.start.starts_with(prefix) {
        return Err(bad());
    }
    Ok(t)
}

/// How to read a list, from resourceVersion / resourceVersionMatch / continue.
enum ReadAt {
    /// Consistent read: the latest state.
    Latest,
    /// Any state not older than this (0 = any).
    NotOlderThan(i64),
    /// Exactly this revision, from etcd.
    Exact(i64),
}

fn parse_rv(s: &str) -> Result<i64> {
    s.parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .ok_or_else(|| ApiError::bad_request(format!("invalid resource version: {s:?}")))
}

impl Api {
    /// GET one object (quorum read from etcd; `resourceVersion=0` may be served from cache).
    pub(super) async fn get(&self, req: &Request<'_>) -> Result<Reply> {
        let t = &req.target;
        let res = t.res;
        let name = t.name.as_deref().unwrap_or_default();
        let key = res.key(t.namespace.as_deref(), name);
        if req.query.resource_version.as_deref() == Some("0") {
            let (_, obj) = self.cache.get(res, &key);
            let obj = obj.ok_or_else(|| ApiError::not_found(res, name))?;
            return Ok(Reply::json(200, Self::served_bytes(res, &obj.raw, obj.rev)));
        }
        let kv = self.store.get(&key).await.map_err(|e| from_storage(res, name, e))?;
        let kv = kv.ok_or_else(|| ApiError::not_found(res, name))?;
        if let Some(table) = req.table {
            let obj = Self::served_value(res, &key, &kv.value, kv.mod_revision)?;
            return Ok(Reply::value(200, &table.render(res, &[obj], &kv.mod_revision.to_string(), None, true)));
        }
        Ok(Reply::json(200, Self::served_bytes(res, &kv.value, kv.mod_revision)))
    }

    /// LIST, from the watch cache where possible, from etcd for exact and continued reads.
    pub(super) async fn list(&self, req: &Request<'_>) -> Result<Reply> {
        let q = &req.query;
        let res = req.target.res;
        let filter = Filter::new(&req.target, q)?;
        if q.send_initial_events.is_some() {
            return Err(ApiError::invalid_params(res, "sendInitialEvents", "sendInitialEvents is forbidden for list"));
        }
        let limit = q.limit.map(|l| l as usize);
        let (read_at, start) = match &q.continue_token {
            Some(token) => {
                if q.resource_version.as_deref().is_some_and(|rv| rv != "0") {
                    return Err(ApiError::bad_request(
                        "specifying resource version is not allowed when using continue",
                    ));
                }
                let t = decode_continue(token, &filter.prefix)?;
                (ReadAt::Exact(t.rv), Some(t.start))
            }
            None => {
                let rv = q.resource_version.as_deref();
                let read_at = match (rv, q.resource_version_match.as_deref()) {
                    (None, None) => ReadAt::Latest,
                    (None, Some(m)) => {
                        return Err(ApiError::bad_request(format!(
                            "resourceVersionMatch {m:?} is forbidden unless resourceVersion is provided"
                        )))
                    }
                    (Some(rv), None | Some("NotOlderThan")) if limit.is_none() || rv == "0" => {
                        ReadAt::NotOlderThan(parse_rv(rv)?)
                    }
                    (Some(rv), Some("NotOlderThan")) => ReadAt::NotOlderThan(parse_rv(rv)?),
                    (Some(rv), None | Some("Exact")) => {
                        let n = parse_rv(rv)?;
                        if n == 0 {
                            return Err(ApiError::bad_request("resourceVersionMatch \"Exact\" is forbidden for resourceVersion \"0\""));
                        }
                        ReadAt::Exact(n)
                    }
                    (Some(_), Some(other)) => {
                        return Err(ApiError::bad_request(format!(
                            "unsupported resourceVersionMatch {other:?}: supported values are \"Exact\" and \"NotOlderThan\""
                        )))
                    }
                };
                (read_at, None)
            }
        };

        let snapshot_rev = match read_at {
            ReadAt::Latest => match self.cache.wait_fresh().await {
                Ok(_) => None,
                Err(e) => {
                    tracing::debug!(error = %e, "cache not fresh; listing from etcd");
                    Some(0)
                }
            },
            ReadAt::NotOlderThan(0) => None,
            ReadAt::NotOlderThan(n) => match self.cache.wait_for(n).await {
                Ok(_) => None,
                Err(CacheError::TooNew { requested, current }) => {
                    return Err(ApiError::timeout(format!(
                        "Too large resource version: {requested}, current: {current}"
                    )))
                }
                Err(e) => return Err(ApiError::unavailable(e.to_string())),
            },
            ReadAt::Exact(n) if self.cache.revision() == n => None,
            ReadAt::Exact(n) => Some(n),
        };

        let (rev, items, more) = match snapshot_rev {
            None => {
                let snap = self.cache.snapshot(res, &filter.prefix, start.as_deref());
                let (items, more) = take_page(snap.objects.into_iter(), &filter, limit);
                (snap.rev, items, more)
            }
            Some(at) => self.list_from_etcd(req, &filter, start, at, limit).await?,
        };
        let next = more.as_ref().map(|last| encode_continue(rev, format!("{last}\u{0}")));
        if let Some(table) = req.table {
            let objects =
                items.iter().map(|o| Self::served_value(res, &o.key, &o.raw, o.rev)).collect::<Result<Vec<_>>>()?;
            return Ok(Reply::value(200, &table.render(res, &objects, &rev.to_string(), next.as_deref(), true)));
        }
        Ok(Reply { code: 200, body: list_body(res, rev, next, items), warnings: Vec::new() })
    }

    async fn list_from_etcd(
        &self,
        req: &Request<'_>,
        filter: &Filter,
        mut start: Option<String>,
        at: i64,
        limit: Option<usize>,
    ) -> Result<(i64, Vec<Arc<CachedObject>>, Option<String>)> {
        let res = req.target.res;
        let mut items = Vec::new();
        let mut rev = at;
        loop {
            let want = limit.map(|l| (l - items.len()) as i64 + 1).unwrap_or(0);
            let page = self.store.list(&filter.prefix, start.as_deref(), rev, want).await.map_err(|e| match e {
                crate::storage::StorageError::Compacted(_) => ApiError::expired(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                ),
                e => from_storage(res, "", e),
            })?;
            rev = page.revision.max(rev);
            if at > 0 {
                rev = at;
            }
            let got = page.kvs.len();
            let last_key = page.kvs.last().map(|kv| kv.key.clone());
            for kv in page.kvs {
                let obj = CachedObject::from_stored(kv, res);
                if filter.matches(&obj) {
                    items.push(Arc::new(obj));
                }
            }
            if let Some(l) = limit {
                if items.len() > l {
                    // One more match than asked for: the page is full and more follow.
                    items.truncate(l);
                    let last = items.last().map(|o| o.key.clone());
                    return Ok((rev, items, last));
                }
            }
            if !page.more || got == 0 {
                return Ok((rev, items, None));
            }
            start = last_key.map(|k| format!("{k}\u{0}"));
        }
    }
}

/// Lists larger than this are streamed in chunks of about this size, so a large list never
/// sits in memory twice (once cached, once rendered).
const LIST_CHUNK: usize = 256 * 1024;

/// The body of a list response: one buffer when small, a chunked stream when large.
pub(super) fn list_body(
    res: &'static ferry_api::ResourceInfo,
    rev: i64,
    next: Option<String>,
    items: Vec<Arc<CachedObject>>,
) -> Body {
    let size: usize = items.iter().map(|o| o.raw.len() + 32).sum();
    if size <= LIST_CHUNK {
        let mut out = BytesMut::with_capacity(size + 256);
        write_list_head(&mut out, res, rev, next.as_deref());
        for (i, obj) in items.iter().enumerate() {
            write_item(&mut out, res, obj, i == 0);
        }
        out.put_slice(b"]}");
        return Body::Full(out.freeze());
    }
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        let mut out = BytesMut::with_capacity(LIST_CHUNK + 4096);
        write_list_head(&mut out, res, rev, next.as_deref());
        for (i, obj) in items.iter().enumerate() {
            write_item(&mut out, res, obj, i == 0);
            if out.len() >= LIST_CHUNK {
                let chunk = std::mem::replace(&mut out, BytesMut::with_capacity(LIST_CHUNK + 4096));
                if tx.send(chunk.freeze()).await.is_err() {
                    return; // client went away
                }
            }
        }
        out.put_slice(b"]}");
        let _ = tx.send(out.freeze()).await;
    });
    Body::Stream(rx)
}

fn write_list_head(out: &mut BytesMut, res: &ferry_api::ResourceInfo, rev: i64, next: Option<&str>) {
    out.put_slice(b"{\"kind\":");
    out.put_slice(serde_json::Value::String(res.list_kind()).to_string().as_bytes());
    out.put_slice(b",\"apiVersion\":");
    out.put_slice(serde_json::Value::String(res.api_version()).to_string().as_bytes());
    out.put_slice(b",\"metadata\":{\"resourceVersion\":\"");
    out.put_slice(rev.to_string().as_bytes());
    out.put_u8(b'"');
    if let Some(next) = next {
        out.put_slice(b",\"continue\":\"");
        out.put_slice(next.as_bytes());
        out.put_u8(b'"');
    }
    out.put_slice(b"},\"items\":[");
}

fn write_item(out: &mut BytesMut, res: &ferry_api::ResourceInfo, obj: &CachedObject, first: bool) {
    if !first {
        out.put_u8(b',');
    }
    if res.ops.served_as_stored() {
        crate::codec::write_with_resource_version(out, &obj.raw, obj.rev);
    } else {
        out.put_slice(&Api::served_bytes(res, &obj.raw, obj.rev));
    }
}

/// Take up to `limit` matching objects; returns the items and, when more match, the last key.
fn take_page(
    objects: impl Iterator<Item = Arc<CachedObject>>,
    filter: &Filter,
    limit: Option<usize>,
) -> (Vec<Arc<CachedObject>>, Option<String>) {
    let mut items = Vec::new();
    for obj in objects.filter(|o| filter.matches(o)) {
        if limit.is_some_and(|l| items.len() == l) {
            let last = items.last().map(|o: &Arc<CachedObject>| o.key.clone());
            return (items, last);
        }
        items.push(obj);
    }
    (items, None)
}
