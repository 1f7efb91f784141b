//! `ferry-bench-controllers`: how fast and how big `ferry-controllers` is.
//!
//! One private etcd and an in-process API server; the real `ferry-controllers` binary as a child
//! process (leader election on, as in production); a "kubelet" in this process that marks every
//! new pod Ready through pods/status as soon as its watch sees it. Then:
//! - rollout: a Deployment of `--replicas` (default strategy, 25 % surge / 25 % unavailable);
//!   time from the template change (PATCH answered) to rollout complete as `kubectl rollout
//!   status` defines it (observedGeneration, updated = replicas = available), `--rollouts` times;
//! - reconcile latency, object change → controller write, both seen through watches:
//!   a ReplicaSet's `spec.replicas` + 1 (PATCH answered) → its new pod's ADDED event, and a
//!   Deployment's `spec.replicas` + 1 → its ReplicaSet's MODIFIED event with the new count
//!   (`--samples` each, one at a time);
//! - memory: `VmRSS` / `VmHWM` of the controller process at start (caches synced, no objects) and
//!   with `--deployments` settled Deployments of one pod each.
//!
//! Prints a Markdown report on stdout; progress on stderr.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use ferry_testkit::Cluster;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::{wait::await_condition, watcher, WatchStreamExt};
use kube::ResourceExt;
use serde_json::json;

/// Controller benchmark.
#[derive(Parser, Debug)]
struct Args {
    /// The `ferry-controllers` binary to measure.
    #[arg(long)]
    controllers_bin: PathBuf,
    /// Replicas of the rolled-out Deployment.
    #[arg(long, default_value_t = 100)]
    replicas: i32,
    /// Template changes to time.
    #[arg(long, default_value_t = 3)]
    rollouts: usize,
    /// Samples per latency measurement.
    #[arg(long, default_value_t = 100)]
    samples: usize,
    /// Deployments (one pod each) for the memory measurement.
    #[arg(long, default_value_t = 1000)]
    deployments: usize,
}

const NS: &str = "default";

/// A child process, killed (and reaped) on drop.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `VmRSS` and `VmHWM` of a process, in KiB.
fn rss(pid: u32) -> Result<(u64, u64)> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let field = |name: &str| -> Result<u64> {
        let line = status.lines().find(|l| l.starts_with(name)).with_context(|| format!("{path} has no {name}"))?;
        let kib = line.split_whitespace().nth(1).with_context(|| format!("malformed line {line:?}"))?;
        kib.parse().with_context(|| format!("malformed line {line:?}"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

fn mib(kib: u64) -> String {
    #[allow(clippy::cast_precision_loss)]
    let m = kib as f64 / 1024.0;
    format!("{m:.1} MiB")
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Marks every pod Ready as soon as the watch sees it (up to 32 status writes at once).
fn kubelet(client: kube::Client) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let api: Api<Pod> = Api::all(client.clone());
        let limit = Arc::new(tokio::sync::Semaphore::new(32));
        let stream = watcher(api, watcher::Config::default()).default_backoff().applied_objects();
        futures::pin_mut!(stream);
        while let Some(ev) = stream.next().await {
            let Ok(p) = ev else { continue };
            if ready(&p) || p.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let Ok(permit) = limit.clone().acquire_owned().await else { return };
            let pods: Api<Pod> = Api::namespaced(client.clone(), &p.namespace().unwrap_or_default());
            tokio::spawn(async move {
                let now = jiff::Timestamp::now().to_string();
                let st = json!({"status": {"phase": "Running", "conditions": [
                    {"type": "Ready", "status": "True", "lastTransitionTime": now}]}});
                let _ = pods.patch_status(&p.name_any(), &PatchParams::default(), &Patch::Merge(&st)).await;
                drop(permit);
            });
        }
    })
}

fn deployment(name: &str, replicas: i32, image: &str) -> Result<Deployment> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": image}]}}}
    }))?)
}

/// `kubectl rollout status`'s notion of done.
fn complete(d: Option<&Deployment>) -> bool {
    let Some(d) = d else { return false };
    let Some(s) = &d.status else { return false };
    let want = d.spec.replicas.unwrap_or(1);
    s.observed_generation >= d.metadata.generation
        && s.updated_replicas == Some(want)
        && s.replicas == Some(want)
        && s.available_replicas == Some(want)
}

async fn wait_complete(api: &Api<Deployment>, name: &str, limit: Duration) -> Result<()> {
    tokio::time::timeout(limit, await_condition(api.clone(), name, complete))
        .await
        .with_context(|| format!("deployment {name} did not complete within {limit:?}"))??;
    Ok(())
}

fn start_controllers(bin: &Path, kubeconfig: &Path, log: &Path) -> Result<Process> {
    let log = std::fs::File::create(log)?;
    let child = Command::new(bin)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--identity", "bench", "--metrics-bind-address", "0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    Ok(Process(child))
}

/// A merge patch, retried on 409: under concurrent status writes the API server can answer a
/// patch with Conflict (seen in this benchmark; the patch carries no resourceVersion).
async fn patch_retrying<K>(api: &Api<K>, name: &str, patch: &serde_json::Value) -> Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    for _ in 0..10 {
        match api.patch(name, &PatchParams::default(), &Patch::Merge(patch)).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => eprintln!("  409 on PATCH {name}; retrying"),
            Err(e) => return Err(e.into()),
        }
    }
    bail!("PATCH {name}: 409 ten times")
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("ferry-bench-controllers: {e:#}");
        std::process::exit(1);
    }
}

async fn run() -> Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.replicas > 0 && args.samples > 0, "--replicas and --samples must be positive");
    let cluster = Cluster::start().await?;
    let client = cluster.client().await?;
    let dir = tempfile::Builder::new().prefix("ferry-bench-controllers-").tempdir()?;
    let log = dir.path().join("controllers.log");
    let controllers = start_controllers(&args.controllers_bin, &cluster.kubeconfig(), &log)?;
    let pid = controllers.0.id();
    let _kubelet = kubelet(client.clone());
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);

    // Warm up: one small Deployment proves leadership, synced caches and the kubelet.
    deployments.create(&PostParams::default(), &deployment("warmup", 1, "v1")?).await?;
    wait_complete(&deployments, "warmup", Duration::from_secs(60)).await?;
    let (rss_start, _) = rss(pid)?;

    // 1. Rollouts.
    eprintln!("rollout of {} replicas ×{}", args.replicas, args.rollouts);
    deployments.create(&PostParams::default(), &deployment("roll", args.replicas, "v1")?).await?;
    let started = Instant::now();
    wait_complete(&deployments, "roll", Duration::from_secs(300)).await?;
    let first = started.elapsed();
    let mut rollouts = Vec::new();
    for r in 0..args.rollouts {
        let image = format!("v{}", r + 2);
        let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": image}]}}}});
        let t0 = Instant::now();
        deployments.patch("roll", &PatchParams::default(), &Patch::Strategic(&patch)).await?;
        wait_complete(&deployments, "roll", Duration::from_secs(300)).await?;
        rollouts.push(t0.elapsed());
        eprintln!("  rollout {}: {}", r + 1, ms(t0.elapsed()));
    }
    deployments.delete("roll", &Default::default()).await?;

    // 2. Latency: ReplicaSet scale → pod created.
    eprintln!("reconcile latency, {} samples each", args.samples);
    let rs: ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": "lat"},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "lat"}},
            "template": {"metadata": {"labels": {"app": "lat"}}, "spec": {"containers": [{"name": "c", "image": "v1"}]}}}
    }))?;
    replica_sets.create(&PostParams::default(), &rs).await?;
    let list = pods.list(&ListParams::default().labels("app=lat")).await?;
    let rv = list.metadata.resource_version.unwrap_or_default();
    let mut pod_events = pods.watch(&WatchParams::default().labels("app=lat").timeout(290), &rv).await?.boxed();
    let mut rs_to_pod = Vec::new();
    for i in 1..=args.samples {
        let t0 = Instant::now();
        let scale = json!({"spec": {"replicas": i}});
        patch_retrying(&replica_sets, "lat", &scale).await?;
        loop {
            match tokio::time::timeout(Duration::from_secs(30), pod_events.try_next()).await {
                Err(_) => bail!("no pod created within 30 s for sample {i}"),
                Ok(Err(e)) => return Err(e.into()),
                Ok(Ok(None)) => bail!("pod watch ended"),
                Ok(Ok(Some(WatchEvent::Added(_)))) => break,
                Ok(Ok(Some(_))) => {}
            }
        }
        rs_to_pod.push(t0.elapsed());
    }
    drop(pod_events);
    replica_sets.delete("lat", &Default::default()).await?;

    // Deployment scale → ReplicaSet updated.
    deployments.create(&PostParams::default(), &deployment("latd", 0, "v1")?).await?;
    let rs_name = loop {
        let list = replica_sets.list(&ListParams::default().labels("app=latd")).await?;
        if let Some(rs) = list.items.first() {
            break rs.name_any();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let list = replica_sets.list(&ListParams::default().labels("app=latd")).await?;
    let rv = list.metadata.resource_version.unwrap_or_default();
    let params = WatchParams::default().fields(&format!("metadata.name={rs_name}")).timeout(290);
    let mut rs_events = replica_sets.watch(&params, &rv).await?.boxed();
    let mut d_to_rs = Vec::new();
    for i in 1..=args.samples {
        let want = i32::try_from(i)?;
        let t0 = Instant::now();
        patch_retrying(&deployments, "latd", &json!({"spec": {"replicas": want}})).await?;
        loop {
            match tokio::time::timeout(Duration::from_secs(30), rs_events.try_next()).await {
                Err(_) => bail!("ReplicaSet not scaled within 30 s for sample {i}"),
                Ok(Err(e)) => return Err(e.into()),
                Ok(Ok(None)) => bail!("ReplicaSet watch ended"),
                Ok(Ok(Some(WatchEvent::Modified(rs)))) if rs.spec.replicas == Some(want) => break,
                Ok(Ok(Some(_))) => {}
            }
        }
        d_to_rs.push(t0.elapsed());
    }
    drop(rs_events);
    deployments.delete("latd", &Default::default()).await?;
    deployments.delete("warmup", &Default::default()).await?;
    // Let the cascades finish so the memory measurement starts from the Deployments below only.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !pods.list(&ListParams::default()).await?.items.is_empty() {
        if Instant::now() > deadline {
            bail!("pods of the earlier measurements are not gone after 120 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // 3. Memory with many Deployments.
    eprintln!("{} Deployments", args.deployments);
    let t0 = Instant::now();
    let names: Vec<String> = (0..args.deployments).map(|i| format!("d-{i:04}")).collect();
    futures::stream::iter(names.iter().map(|n| {
        let api = deployments.clone();
        async move { api.create(&PostParams::default(), &deployment(n, 1, "v1")?).await.map_err(anyhow::Error::from) }
    }))
    .buffer_unordered(16)
    .try_collect::<Vec<_>>()
    .await?;
    let created = t0.elapsed();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let list = deployments.list(&ListParams::default()).await?.items;
        let done = list.iter().filter(|d| complete(Some(d))).count();
        if done >= args.deployments {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {done} of {} Deployments settled after 600 s", args.deployments);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let settled = t0.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (rss_many, hwm) = rss(pid)?;

    rs_to_pod.sort();
    d_to_rs.sort();
    let mut sorted_rollouts = rollouts.clone();
    sorted_rollouts.sort();
    println!("### Controllers (`ferry-bench-controllers`)\n");
    println!("| measurement | result |");
    println!("|---|---|");
    println!("| first rollout, {} replicas from nothing | {} |", args.replicas, ms(first));
    let each: Vec<String> = rollouts.iter().map(|d| ms(*d)).collect();
    println!(
        "| template change → rollout complete, {} replicas (median of {}) | {} (each: {}) |",
        args.replicas,
        rollouts.len(),
        ms(percentile(&sorted_rollouts, 0.5)),
        each.join(", ")
    );
    println!(
        "| ReplicaSet replicas +1 → pod ADDED (p50 / p99 / max, {} samples) | {} / {} / {} |",
        rs_to_pod.len(),
        ms(percentile(&rs_to_pod, 0.5)),
        ms(percentile(&rs_to_pod, 0.99)),
        ms(percentile(&rs_to_pod, 1.0))
    );
    println!(
        "| Deployment replicas +1 → ReplicaSet MODIFIED (p50 / p99 / max, {} samples) | {} / {} / {} |",
        d_to_rs.len(),
        ms(percentile(&d_to_rs, 0.5)),
        ms(percentile(&d_to_rs, 0.99)),
        ms(percentile(&d_to_rs, 1.0))
    );
    println!("| controller RSS, caches synced, 1 Deployment | {} |", mib(rss_start));
    println!(
        "| {} Deployments created (16 at a time) / all settled (1 pod each, Ready) | {} / {} |",
        args.deployments,
        ms(created),
        ms(settled)
    );
    println!(
        "| controller RSS with {} settled Deployments (VmRSS / VmHWM) | {} / {} |",
        args.deployments,
        mib(rss_many),
        mib(hwm)
    );
    drop(controllers);
    Ok(())
}
