//! The floor: the same four operations straight against etcd, the way the API server's
//! storage layer issues them, under a prefix the API server does not watch.

use crate::fixture;
use crate::stats::{measure, Sample};
use anyhow::{ensure, Context, Result};
use bytes::Bytes;
use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const PREFIX: &str = "/bench/floor/pods/default/";

/// Latencies of the direct-etcd operations.
pub struct Floor {
    /// Transaction `create_revision == 0` → put.
    pub create: Sample,
    /// Single-key get.
    pub get: Sample,
    /// Transaction `mod_revision == rev` → put.
    pub update: Sample,
    /// Range over every key (values included).
    pub range: Sample,
}

fn key(i: usize) -> String {
    format!("{PREFIX}{}", fixture::name(i))
}

/// Run the floor with `concurrency` workers: `count` creates, gets and updates, and
/// `ranges` full ranges. Every value is `value` (a pod as the API server stored it).
pub async fn run(
    client: &etcd_client::Client,
    value: Bytes,
    concurrency: usize,
    count: usize,
    ranges: usize,
    limit: Duration,
) -> Result<Floor> {
    let kv = client.kv_client().max_decoding_message_size(512 << 20);
    let revs: Arc<Vec<AtomicI64>> = Arc::new((0..count).map(|_| AtomicI64::new(0)).collect());

    let (c, r, v) = (kv.clone(), revs.clone(), value.clone());
    let create = measure(concurrency, count, limit, move |i| {
        let (mut kv, revs, value) = (c.clone(), r.clone(), v.clone());
        async move {
            let k = key(i);
            let txn = Txn::new()
                .when([Compare::create_revision(k.as_str(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(k.as_str(), value.to_vec(), None)]);
            let resp = kv.txn(txn).await?;
            ensure!(resp.succeeded(), "{k} already exists");
            let rev = resp.header().map(|h| h.revision()).context("txn response without header")?;
            revs[i].store(rev, Ordering::Relaxed);
            Ok(())
        }
    })
    .await
    .context("etcd create")?;
    let created = create.len();

    let c = kv.clone();
    let get = measure(concurrency, created, limit, move |i| {
        let mut kv = c.clone();
        async move {
            let resp = kv.get(key(i), None).await?;
            ensure!(resp.kvs().len() == 1, "{} is missing", key(i));
            Ok(())
        }
    })
    .await
    .context("etcd get")?;

    let (c, r, v) = (kv.clone(), revs.clone(), value);
    let update = measure(concurrency, created, limit, move |i| {
        let (mut kv, revs, value) = (c.clone(), r.clone(), v.clone());
        async move {
            let k = key(i);
            let expected = revs[i].load(Ordering::Relaxed);
            let txn = Txn::new()
                .when([Compare::mod_revision(k.as_str(), CompareOp::Equal, expected)])
                .and_then([TxnOp::put(k.as_str(), value.to_vec(), None)])
                .or_else([TxnOp::get(k.as_str(), None)]);
            let resp = kv.txn(txn).await?;
            ensure!(resp.succeeded(), "{k} changed under the benchmark");
            revs[i].store(resp.header().map(|h| h.revision()).unwrap_or_default(), Ordering::Relaxed);
            Ok(())
        }
    })
    .await
    .context("etcd update")?;

    let c = kv.clone();
    let range = measure(concurrency, ranges, limit, move |_| {
        let mut kv = c.clone();
        async move {
            let end = ferry_apiserver::storage::prefix_end(PREFIX);
            let resp = kv.get(PREFIX, Some(GetOptions::new().with_range(end))).await?;
            ensure!(resp.kvs().len() == created, "range returned {} keys, expected {created}", resp.kvs().len());
            Ok(())
        }
    })
    .await
    .context("etcd range")?;

    Ok(Floor { create, get, update, range })
}
