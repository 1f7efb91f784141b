//! Watch delivery: W watchers on the pods of the namespace, writers replacing pods at a fixed
//! rate with the send time in an annotation; every watcher records receive − send time.

use crate::fixture::{self, NAMESPACE};
use crate::stats::Sample;
use anyhow::{ensure, Context, Result};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use serde::Deserialize;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

const SENT: &str = "bench.ferry.dev/sent-ns";
const SEQ: &str = "bench.ferry.dev/seq";

/// What a watcher decodes of each event: only the two stamp annotations, so the client's own
/// decoding cost (the bench shares the machine with the server) stays small.
#[derive(Clone, Deserialize)]
struct Stamped {
    metadata: StampMeta,
}

#[derive(Clone, Deserialize)]
struct StampMeta {
    annotations: Option<Stamps>,
}

#[derive(Clone, Deserialize)]
struct Stamps {
    #[serde(rename = "bench.ferry.dev/sent-ns")]
    sent: Option<String>,
    #[serde(rename = "bench.ferry.dev/seq")]
    seq: Option<String>,
}

/// Settings of the watch phase.
pub struct Settings {
    /// Number of watchers.
    pub watchers: usize,
    /// Writes per second.
    pub rate: u32,
    /// Seconds of writing.
    pub seconds: u32,
    /// Writer tasks (each owns its pods, so writes never conflict).
    pub writers: usize,
    /// Pods the writers update, round robin.
    pub pods: usize,
}

/// What the watch phase measured.
pub struct WatchResult {
    /// receive − send over all watcher × event pairs.
    pub delivery: Sample,
    /// Latency of the writes themselves (PUT round trip).
    pub writes: Sample,
    /// Events sent.
    pub sent: usize,
    /// Achieved write rate (events / second).
    pub rate: f64,
    /// Watchers that saw every event.
    pub complete: usize,
    /// Number of watchers.
    pub watchers: usize,
    /// Why incomplete watchers stopped (deduplicated, with counts).
    pub problems: Vec<String>,
}

fn now_nanos() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default()
}

/// One watcher's outcome.
struct Seen {
    latencies: Vec<Duration>,
    distinct: usize,
    problem: Option<String>,
}

/// Watch from `rv` until `total` distinct events were seen or `deadline` passes.
async fn watcher(
    client: kube::Client,
    rv: String,
    total: usize,
    deadline: Instant,
    ready: mpsc::Sender<()>,
) -> Result<Seen> {
    let secs = deadline.saturating_duration_since(Instant::now()).as_secs().clamp(10, 290) as u32;
    let req = kube::core::Request::new(format!("/api/v1/namespaces/{NAMESPACE}/pods"))
        .watch(&WatchParams::default().timeout(secs), &rv)
        .context("building the watch request")?;
    let stream = client.request_events::<Stamped>(req).await.context("opening a watch")?;
    let _ = ready.send(()).await;
    let mut stream = std::pin::pin!(stream);
    let mut seen = vec![false; total];
    let (mut latencies, mut distinct) = (Vec::with_capacity(total), 0);
    let mut problem = None;
    while distinct < total {
        let next = tokio::time::timeout_at(deadline.into(), stream.next()).await;
        let received = now_nanos();
        let event = match next {
            Err(_) => Some("timed out before seeing every event".to_string()),
            Ok(None) => Some("the server ended the watch".to_string()),
            Ok(Some(Err(e))) => Some(format!("watch failed: {e}")),
            Ok(Some(Ok(WatchEvent::Error(status)))) => Some(format!("ERROR event: {}", status.message)),
            Ok(Some(Ok(WatchEvent::Modified(pod)))) => {
                let stamps = pod.metadata.annotations;
                let sent = stamps.as_ref().and_then(|s| s.sent.as_deref()?.parse::<u128>().ok());
                let seq = stamps.as_ref().and_then(|s| s.seq.as_deref()?.parse::<usize>().ok());
                if let (Some(sent), Some(seq)) = (sent, seq) {
                    if seq < total && !seen[seq] {
                        seen[seq] = true;
                        distinct += 1;
                        let nanos = u64::try_from(received.saturating_sub(sent)).unwrap_or(u64::MAX);
                        latencies.push(Duration::from_nanos(nanos));
                    }
                }
                None
            }
            Ok(Some(Ok(_))) => None,
        };
        if event.is_some() {
            problem = event;
            break;
        }
    }
    Ok(Seen { latencies, distinct, problem })
}

/// The schedule all writers share: event `s` is due at `start + s/rate`.
#[derive(Clone, Copy)]
struct Pace {
    writers: usize,
    total: usize,
    rate: u32,
    start: tokio::time::Instant,
    deadline: Instant,
}

/// Writer `k`: sends events `k, k+writers, …` (< `total`) on schedule, each a replace of one
/// of its own pods carrying the stamps.
async fn writer(api: Api<Pod>, mut own: Vec<Pod>, k: usize, pace: Pace) -> Result<Vec<Duration>> {
    ensure!(!own.is_empty(), "writer {k} has no pods");
    let mut latencies = Vec::with_capacity(pace.total / pace.writers + 1);
    for (j, seq) in (k..pace.total).step_by(pace.writers).enumerate() {
        if Instant::now() > pace.deadline {
            break;
        }
        tokio::time::sleep_until(pace.start + Duration::from_secs_f64(seq as f64 / f64::from(pace.rate))).await;
        let slot = j % own.len();
        let pod = &mut own[slot];
        let name = pod.metadata.name.clone().context("pod without a name")?;
        let annotations = pod.metadata.annotations.get_or_insert_default();
        annotations.insert(SEQ.into(), seq.to_string());
        annotations.insert(SENT.into(), now_nanos().to_string());
        let t = Instant::now();
        own[slot] =
            api.replace(&name, &PostParams::default(), &own[slot]).await.with_context(|| format!("updating {name}"))?;
        latencies.push(t.elapsed());
    }
    Ok(latencies)
}

/// Run the watch phase against pods `0..settings.pods` (they must exist).
pub async fn run(client: &kube::Client, s: &Settings) -> Result<WatchResult> {
    let api: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let total = (s.rate as usize) * (s.seconds as usize);
    let writers = s.writers.clamp(1, s.pods.max(1));
    let mut own: Vec<Vec<Pod>> = vec![Vec::new(); writers];
    for i in 0..s.pods {
        own[i % writers].push(api.get(&fixture::name(i)).await.with_context(|| format!("reading pod {i}"))?);
    }

    // Watch from "now": the resourceVersion of a (cheap) list.
    let rv = api.list(&ListParams::default().limit(1)).await?.metadata.resource_version.context("list without rv")?;
    let deadline = Instant::now() + Duration::from_secs(u64::from(s.seconds) + 60);
    let (ready_tx, mut ready_rx) = mpsc::channel(s.watchers.max(1));
    let mut watchers = JoinSet::new();
    for _ in 0..s.watchers {
        watchers.spawn(watcher(client.clone(), rv.clone(), total, deadline, ready_tx.clone()));
    }
    drop(ready_tx);
    for opened in 0..s.watchers {
        let got = tokio::time::timeout(Duration::from_secs(30), ready_rx.recv()).await;
        ensure!(matches!(got, Ok(Some(()))), "only {opened} of {} watches opened", s.watchers);
    }

    let began = Instant::now();
    let pace = Pace { writers, total, rate: s.rate.max(1), start: tokio::time::Instant::now(), deadline };
    let mut writer_tasks = JoinSet::new();
    for (k, pods) in own.into_iter().enumerate() {
        writer_tasks.spawn(writer(api.clone(), pods, k, pace));
    }
    let mut write_latencies = Vec::with_capacity(total);
    while let Some(done) = writer_tasks.join_next().await {
        write_latencies.extend(done.context("a writer panicked")??);
    }
    let write_wall = began.elapsed();
    let sent = write_latencies.len();

    let (mut delivery, mut complete, mut problems) = (Vec::new(), 0, Vec::<(String, usize)>::new());
    while let Some(done) = watchers.join_next().await {
        let seen = done.context("a watcher panicked")??;
        delivery.extend(seen.latencies);
        if seen.distinct == total {
            complete += 1;
        } else {
            let why = seen.problem.unwrap_or_else(|| "stopped early".into());
            let why = format!("{why} (saw {} of {total})", seen.distinct);
            match problems.iter_mut().find(|(p, _)| *p == why) {
                Some((_, n)) => *n += 1,
                None => problems.push((why, 1)),
            }
        }
    }
    Ok(WatchResult {
        delivery: Sample::new(delivery, write_wall),
        writes: Sample::new(write_latencies, write_wall),
        sent,
        rate: sent as f64 / write_wall.as_secs_f64().max(1e-9),
        complete,
        watchers: s.watchers,
        problems: problems.into_iter().map(|(p, n)| format!("{n} watcher(s): {p}")).collect(),
    })
}
