//! `ferry-bench-scheduler`: how fast Ferry's scheduler places pods, and what it costs.
//!
//! 1. **Decisions in-process** (no API round trip): a [`Cache`] of `--nodes` plain Node objects
//!    and `--pods` pods placed one after the other — filter, score, assume — as the running
//!    scheduler does under its cache lock. Once with plain pods (requests only) and once with
//!    constraints on every pod (required node affinity, a DoNotSchedule zone spread, preferred
//!    anti-affinity between replicas, a controller owner for default spreading).
//! 2. **End to end** through a private etcd, the API server and the real `ferry-scheduler`
//!    process: the raw etcd write ceiling first (the binding's compare-and-put transaction on
//!    pod-sized values, at the scheduler's binding concurrency), then `--pods` pending pods
//!    bound by a freshly started scheduler (one etcd write per binding), then `--pods` more
//!    created while it runs (create → bound: two writes per pod).
//! 3. **Memory** of that scheduler process with `--nodes` nodes and `--pods` pods.
//!
//! The report is Markdown on stdout (and `--out`); progress goes to stderr.

#[allow(dead_code)] // shared with ferry-bench-apiserver; not every helper is used here
mod stats;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::Parser;
use etcd_client::{Compare, CompareOp, EventType, GetOptions, Txn, TxnOp, WatchOptions};
use ferry_scheduler::cache::Cache;
use ferry_scheduler::framework::Framework;
use ferry_scheduler::plugins::PodCtx;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, PostParams};
use serde_json::json;
use stats::{measure, ms, Sample};

/// Benchmark Ferry's scheduler and print a Markdown report.
#[derive(Parser, Debug)]
#[command(name = "ferry-bench-scheduler", version)]
struct Args {
    /// Nodes (plain Node objects, 10 zones).
    #[arg(long, default_value_t = 5000)]
    nodes: usize,
    /// Pods per phase.
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
    /// Concurrency of the etcd ceiling, the pod creates, and the scheduler's bindings.
    #[arg(short = 'c', long, default_value_t = 64)]
    concurrency: usize,
    /// The `ferry-scheduler` binary (default: next to this one).
    #[arg(long)]
    scheduler_bin: Option<PathBuf>,
    /// Only the in-process decision phase.
    #[arg(long, conflicts_with = "end_to_end_only")]
    decisions_only: bool,
    /// Only the end-to-end phase (and memory).
    #[arg(long)]
    end_to_end_only: bool,
    /// Also write the report to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

fn progress(msg: &str) {
    eprintln!("[ferry-bench-scheduler] {msg}");
}

const ZONES: usize = 10;
const REPLICA_SETS: usize = 100;

fn node(i: usize) -> Result<Node> {
    let name = format!("node-{i:05}");
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
            "topology.kubernetes.io/zone": format!("zone-{}", i % ZONES)}},
        "status": {
            "capacity": {"cpu": "32", "memory": "128Gi", "pods": "110", "ephemeral-storage": "500Gi"},
            "allocatable": {"cpu": "32", "memory": "128Gi", "pods": "110", "ephemeral-storage": "500Gi"},
            "conditions": [{"type": "Ready", "status": "True"}]
        }
    }))?)
}

fn pod(prefix: &str, i: usize, constrained: bool) -> Result<Pod> {
    let mut p = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("{prefix}-{i:05}"), "namespace": "default", "uid": format!("uid-{prefix}-{i}")},
        "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10",
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]}
    });
    if constrained {
        let app = format!("app-{}", i % REPLICA_SETS);
        let zones: Vec<String> = (0..ZONES).map(|z| format!("zone-{z}")).collect();
        p["metadata"]["labels"] = json!({"app": app});
        p["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": app,
            "uid": format!("rs-{}", i % REPLICA_SETS), "controller": true}]);
        p["spec"]["affinity"] = json!({
            "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "In", "values": zones}]}]}},
            "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100,
                "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": "kubernetes.io/hostname"}}]}
        });
        p["spec"]["topologySpreadConstraints"] = json!([{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": app}}}]);
    }
    Ok(serde_json::from_value(p)?)
}

/// One in-process run: decisions per second and per-decision latencies.
struct Decisions {
    sample: Sample,
    failed: usize,
    max_pods_on_a_node: usize,
}

fn decisions(nodes: usize, pods: usize, constrained: bool) -> Result<Decisions> {
    let mut cache = Cache::new();
    for i in 0..nodes {
        cache.apply_node(&node(i)?);
    }
    let pods: Vec<Pod> = (0..pods).map(|i| pod("p", i, constrained)).collect::<Result<_>>()?;
    let mut fw = Framework::new();
    let mut latencies = Vec::with_capacity(pods.len());
    let mut failed = 0;
    let start = Instant::now();
    for p in &pods {
        let t = Instant::now();
        let ctx = PodCtx::new(p).context("pod without spec")?;
        match fw.schedule(&ctx, &cache) {
            Ok(d) => cache.assume(&ctx.info, &d.node),
            Err(_) => failed += 1,
        }
        latencies.push(t.elapsed());
    }
    let wall = start.elapsed();
    let max_pods_on_a_node = cache.nodes().map(|n| n.pods.len()).max().unwrap_or(0);
    Ok(Decisions { sample: Sample::new(latencies, wall), failed, max_pods_on_a_node })
}

/// Resident and peak resident memory of a process, in KiB.
fn rss_of(pid: u32) -> Result<(u64, u64)> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let field = |name: &str| -> Result<u64> {
        let line = status.lines().find(|l| l.starts_with(name)).with_context(|| format!("{path} has no {name}"))?;
        line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).with_context(|| format!("malformed {line:?}"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// CPU time (user + system, all threads) a process has used so far; `None` = this process.
fn cpu_of(pid: Option<u32>) -> Result<Duration> {
    let path = pid.map_or_else(|| "/proc/self/stat".to_string(), |p| format!("/proc/{p}/stat"));
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The command name (field 2) may hold spaces; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).with_context(|| format!("malformed {path}"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<u64> {
        fields.get(i).and_then(|v| v.parse().ok()).with_context(|| format!("malformed {path}"))
    };
    // /proc counts in USER_HZ, which Linux fixes at 100 per second.
    Ok(Duration::from_millis((ticks(11)? + ticks(12)?) * 10))
}

/// CPU used by etcd, this process (API server and benchmark clients) and the scheduler.
#[derive(Clone, Copy, Default)]
struct Cpu {
    etcd: Duration,
    bench: Duration,
    scheduler: Duration,
}

impl Cpu {
    fn now(etcd: u32, scheduler: Option<u32>) -> Result<Cpu> {
        Ok(Cpu {
            etcd: cpu_of(Some(etcd))?,
            bench: cpu_of(None)?,
            scheduler: scheduler.map(|p| cpu_of(Some(p))).transpose()?.unwrap_or_default(),
        })
    }

    /// CPU per operation between `self` (start) and `end`, in µs: (etcd, this process, scheduler).
    fn per_op(&self, end: &Cpu, ops: usize) -> (f64, f64, f64) {
        let us = |a: Duration, b: Duration| b.saturating_sub(a).as_secs_f64() * 1e6 / ops.max(1) as f64;
        (us(self.etcd, end.etcd), us(self.bench, end.bench), us(self.scheduler, end.scheduler))
    }
}

/// The scheduler child process; killed on drop.
struct SchedulerProcess(Child);

impl Drop for SchedulerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Watches pods in etcd and records when each got its node. Straight from etcd rather than
/// through the API, so the measuring costs the API server nothing (no extra watcher to serve).
struct BindWatch {
    bound: Arc<Mutex<HashMap<String, Instant>>>,
    task: tokio::task::JoinHandle<()>,
}

/// The one field of a stored pod the watch looks at.
#[derive(serde::Deserialize)]
struct StoredPod {
    #[serde(default)]
    spec: StoredSpec,
}

#[derive(serde::Deserialize, Default)]
struct StoredSpec {
    #[serde(default, rename = "nodeName")]
    node_name: Option<String>,
}

impl BindWatch {
    async fn start(etcd: &etcd_client::Client, prefix: &str) -> Result<BindWatch> {
        let now = etcd.kv_client().get(prefix, Some(GetOptions::new().with_count_only())).await?;
        let rev = now.header().map(|h| h.revision()).context("etcd answered without a header")?;
        let opts = WatchOptions::new().with_prefix().with_start_revision(rev + 1);
        let mut stream = etcd.watch_client().watch(prefix, Some(opts)).await?;
        let bound: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let (b, prefix) = (bound.clone(), prefix.to_string());
        let task = tokio::spawn(async move {
            while let Ok(Some(resp)) = stream.message().await {
                let now = Instant::now();
                let mut b = b.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                for kv in resp.events().iter().filter(|e| e.event_type() == EventType::Put).filter_map(|e| e.kv()) {
                    let Ok(pod) = serde_json::from_slice::<StoredPod>(kv.value()) else { continue };
                    if pod.spec.node_name.is_some_and(|n| !n.is_empty()) {
                        let name = String::from_utf8_lossy(kv.key());
                        b.entry(name.trim_start_matches(prefix.as_str()).to_string()).or_insert(now);
                    }
                }
            }
        });
        Ok(BindWatch { bound, task })
    }

    /// Waits until every pod named `{prefix}-…` of `count` is bound; returns (first, last) bind times.
    async fn wait(&self, prefix: &str, count: usize, limit: Duration) -> Result<(Instant, Instant)> {
        let deadline = Instant::now() + limit;
        loop {
            let times: Vec<Instant> = {
                let b = self.bound.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                b.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(_, t)| *t).collect()
            };
            if times.len() >= count {
                let first = times.iter().min().copied().context("no binds")?;
                let last = times.iter().max().copied().context("no binds")?;
                return Ok((first, last));
            }
            if Instant::now() > deadline {
                bail!("only {} of {count} {prefix} pods bound within {limit:?}", times.len());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for BindWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct EndToEnd {
    etcd_create: Sample,
    etcd_update: Sample,
    nodes: Sample,
    creates: Sample,
    scheduler_start_to_last_bind: Duration,
    bind_window: Duration,
    rss_kib: (u64, u64),
    create_to_bound: Duration,
    creates_running: Sample,
    pod_bytes: usize,
    /// GET /version through the same client: an API request with nothing to do.
    version: Sample,
    /// CPU µs per operation (etcd, API server + benchmark, scheduler): the ceiling's
    /// compare-and-put, a GET /version, a binding, and a pod created and bound while the
    /// scheduler runs.
    cpu: [(f64, f64, f64); 4],
}

async fn end_to_end(args: &Args, bin: &Path) -> Result<(EndToEnd, String)> {
    let limit = Duration::from_secs(600);
    let c = args.concurrency;
    progress("starting etcd and an in-process API server");
    let cluster = ferry_testkit::Cluster::start_with(|config: &mut ferry_apiserver::Config| {
        config.compaction_interval = None;
    })
    .await?;
    let client = cluster.client().await?;
    let etcd = cluster.etcd.client().await?;
    let etcd_version =
        etcd.maintenance_client().status().await.map(|s| s.version().to_string()).unwrap_or_else(|_| "unknown".into());
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let nodes: Api<Node> = Api::all(client.clone());

    // The bytes of one stored pending pod: the ceiling writes exactly these.
    pods.create(&PostParams::default(), &pod("probe", 0, false)?).await?;
    let stored = etcd.kv_client().get("/registry/core/pods/default/probe-00000", None).await?;
    let value = stored.kvs().first().map(|kv| kv.value().to_vec()).context("probe pod not in etcd")?;
    let pod_bytes = value.len();

    progress(&format!("etcd ceiling: {} create and {} update transactions at concurrency {c}", args.pods, args.pods));
    let kv = etcd.kv_client();
    let revs: Arc<Vec<std::sync::atomic::AtomicI64>> =
        Arc::new((0..args.pods).map(|_| std::sync::atomic::AtomicI64::new(0)).collect());
    let key = |i: usize| format!("/bench/ceiling/pods/default/p-{i:05}");
    let (k, r, v) = (kv.clone(), revs.clone(), value.clone());
    let etcd_create = measure(c, args.pods, limit, move |i| {
        let (mut kv, revs, value) = (k.clone(), r.clone(), v.clone());
        async move {
            let key = key(i);
            let txn = Txn::new()
                .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key.as_str(), value, None)]);
            let resp = kv.txn(txn).await?;
            ensure!(resp.succeeded(), "{key} exists");
            revs[i].store(resp.header().map(|h| h.revision()).unwrap_or(0), std::sync::atomic::Ordering::Relaxed);
            Ok(())
        }
    })
    .await?;
    let etcd_pid = cluster.etcd.pid();
    let before = Cpu::now(etcd_pid, None)?;
    let (k, r, v) = (kv.clone(), revs.clone(), value.clone());
    let etcd_update = measure(c, args.pods, limit, move |i| {
        let (mut kv, revs, value) = (k.clone(), r.clone(), v.clone());
        async move {
            let key = key(i);
            let rev = revs[i].load(std::sync::atomic::Ordering::Relaxed);
            let txn = Txn::new()
                .when([Compare::mod_revision(key.as_str(), CompareOp::Equal, rev)])
                .and_then([TxnOp::put(key.as_str(), value, None)]);
            ensure!(kv.txn(txn).await?.succeeded(), "{key} changed");
            Ok(())
        }
    })
    .await?;
    let cpu_ceiling = before.per_op(&Cpu::now(etcd_pid, None)?, args.pods);

    // The floor of any API call: an HTTPS request the server answers without etcd.
    progress(&format!("{} GET /version requests at concurrency {c}", args.pods));
    let before = Cpu::now(etcd_pid, None)?;
    let k = client.clone();
    let version = measure(c, args.pods, limit, move |_| {
        let k = k.clone();
        async move {
            k.apiserver_version().await?;
            Ok(())
        }
    })
    .await?;
    let cpu_request = before.per_op(&Cpu::now(etcd_pid, None)?, args.pods);

    progress(&format!("creating {} nodes", args.nodes));
    let n = nodes.clone();
    let node_sample = measure(c, args.nodes, limit, move |i| {
        let n = n.clone();
        async move {
            n.create(&PostParams::default(), &node(i)?).await?;
            Ok(())
        }
    })
    .await?;

    progress(&format!("creating {} pending pods (no scheduler running)", args.pods));
    let p = pods.clone();
    let creates = measure(c, args.pods, limit, move |i| {
        let p = p.clone();
        async move {
            p.create(&PostParams::default(), &pod("pending", i, false)?).await?;
            Ok(())
        }
    })
    .await?;

    let watch = BindWatch::start(&etcd, "/registry/core/pods/default/").await?;
    progress(&format!("starting {} and waiting for all {} pods to be bound", bin.display(), args.pods));
    let metrics_port = ferry_testkit::free_port()?;
    let log_dir = tempfile::Builder::new().prefix("ferry-bench-scheduler-").tempdir()?;
    let log = std::fs::File::create(log_dir.path().join("scheduler.log"))?;
    let (started, before) = (Instant::now(), Cpu::now(etcd_pid, None)?);
    let child = Command::new(bin)
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig())
        .args(["--leader-elect", "false", "--no-events", "--bind-address", &format!("127.0.0.1:{metrics_port}")])
        .args(["--bind-concurrency", &c.to_string()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let process = SchedulerProcess(child);
    let scheduler_pid = Some(process.0.id());
    let (first, last) = watch
        .wait("pending-", args.pods, limit)
        .await
        .with_context(|| std::fs::read_to_string(log_dir.path().join("scheduler.log")).unwrap_or_default())?;
    // The scheduler's CPU from its start: its list and sync count against the bindings.
    let cpu_binding = before.per_op(&Cpu::now(etcd_pid, scheduler_pid)?, args.pods);
    let scheduler_start_to_last_bind = last - started;
    let bind_window = last - first;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_kib = rss_of(process.0.id())?;

    progress(&format!("creating {} more pods while the scheduler runs", args.pods));
    let p = pods.clone();
    let (create_start, before) = (Instant::now(), Cpu::now(etcd_pid, scheduler_pid)?);
    let creates_running = measure(c, args.pods, limit, move |i| {
        let p = p.clone();
        async move {
            p.create(&PostParams::default(), &pod("running", i, false)?).await?;
            Ok(())
        }
    })
    .await?;
    let (_, last) = watch.wait("running-", args.pods, limit).await?;
    let create_to_bound = last - create_start;
    let cpu_running = before.per_op(&Cpu::now(etcd_pid, scheduler_pid)?, args.pods);
    drop(process);
    Ok((
        EndToEnd {
            etcd_create,
            etcd_update,
            nodes: node_sample,
            creates,
            scheduler_start_to_last_bind,
            bind_window,
            rss_kib,
            create_to_bound,
            creates_running,
            pod_bytes,
            version,
            cpu: [cpu_ceiling, cpu_request, cpu_binding, cpu_running],
        },
        etcd_version,
    ))
}

fn machine() -> String {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown".to_string(), |(_, v)| v.trim().to_string());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_kib: u64 = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let kernel = read("/proc/sys/kernel/osrelease").trim().to_string();
    format!("{cpus} CPUs ({model}), {} MB RAM, Linux {kernel}", mem_kib / 1024)
}

fn per_sec(n: usize, d: Duration) -> f64 {
    if d.is_zero() {
        0.0
    } else {
        n as f64 / d.as_secs_f64()
    }
}

/// Phase 1: decisions in-process, plain and constrained, as a Markdown table into `out`.
fn decision_phase(args: &Args, out: &mut String) -> Result<()> {
    progress(&format!("decisions: {} nodes, {} plain pods", args.nodes, args.pods));
    let plain = decisions(args.nodes, args.pods, false)?;
    progress(&format!("decisions: {} nodes, {} constrained pods", args.nodes, args.pods));
    let constrained = decisions(args.nodes, args.pods, true)?;
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!("### Decisions in-process ({} nodes, {} pods, no API round trip)", args.nodes, args.pods));
    line(String::new());
    line("| Pods | Decisions/s | p50 ms | p99 ms | max ms | Unschedulable | Most pods on a node |".into());
    line("|---|---:|---:|---:|---:|---:|---:|".into());
    for (what, d) in [("plain (requests only)", &plain), ("affinity + spread + owner", &constrained)] {
        line(format!(
            "| {what} | {:.0} | {} | {} | {} | {} | {} |",
            d.sample.throughput(),
            ms(d.sample.p50()),
            ms(d.sample.p99()),
            ms(d.sample.max()),
            d.failed,
            d.max_pods_on_a_node
        ));
    }
    line(String::new());
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
    ferry_testkit::init();
    ensure!(args.nodes > 0 && args.pods > 0 && args.concurrency > 0, "--nodes, --pods and -c must be positive");
    let bin = match &args.scheduler_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("ferry-scheduler"),
    };
    if !args.decisions_only {
        ensure!(bin.exists(), "{} not found (build it, or pass --scheduler-bin)", bin.display());
    }

    let mut out = String::new();
    let line = |out: &mut String, s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(&mut out, "## Scheduler".into());
    line(&mut out, String::new());
    line(&mut out, format!("Machine: {}. Command: `./scripts/bench scheduler` (release build).", machine()));
    line(&mut out, String::new());

    if !args.end_to_end_only {
        decision_phase(&args, &mut out)?;
    }

    if !args.decisions_only {
        let (e, etcd_version) = end_to_end(&args, &bin).await?;
        let c = args.concurrency;
        line(
            &mut out,
            format!(
                "### End to end (etcd {etcd_version}, in-process API server, `ferry-scheduler` process, {} nodes, concurrency {c})",
                args.nodes
            ),
        );
        line(&mut out, String::new());
        line(&mut out, "| Measurement | Count | Rate (/s) | Notes |".into());
        line(&mut out, "|---|---:|---:|---|".into());
        let ceiling = e.etcd_update.throughput();
        let rows = [
            (
                "etcd ceiling: compare-and-put txn (a binding's write)",
                e.etcd_update.len(),
                ceiling,
                format!("{} B values, p50 {} ms", e.pod_bytes, ms(e.etcd_update.p50())),
            ),
            (
                "etcd ceiling: create txn",
                e.etcd_create.len(),
                e.etcd_create.throughput(),
                format!("p50 {} ms", ms(e.etcd_create.p50())),
            ),
            (
                "GET /version through the API (no etcd)",
                e.version.len(),
                e.version.throughput(),
                format!("p50 {} ms", ms(e.version.p50())),
            ),
            ("node creates through the API", e.nodes.len(), e.nodes.throughput(), String::new()),
            ("pod creates through the API (no scheduler)", e.creates.len(), e.creates.throughput(), String::new()),
            (
                "**bindings: pending pods → all bound** (first to last bind)",
                args.pods,
                per_sec(args.pods, e.bind_window),
                format!(
                    "{:.0} % of the etcd ceiling; {:.1} s from process start (incl. list/sync) to last bind",
                    100.0 * per_sec(args.pods, e.bind_window) / ceiling.max(f64::MIN_POSITIVE),
                    e.scheduler_start_to_last_bind.as_secs_f64()
                ),
            ),
            (
                "**create → bound** while the scheduler runs",
                args.pods,
                per_sec(args.pods, e.create_to_bound),
                format!(
                    "two writes per pod: {:.0} % of half the ceiling; creates alone ran at {:.0}/s",
                    100.0 * per_sec(args.pods, e.create_to_bound) / (ceiling / 2.0).max(f64::MIN_POSITIVE),
                    e.creates_running.throughput()
                ),
            ),
        ];
        for (what, n, rate, notes) in rows {
            line(&mut out, format!("| {what} | {n} | {rate:.0} | {notes} |"));
        }
        line(&mut out, String::new());
        line(
            &mut out,
            "CPU per operation, µs (from `/proc/<pid>/stat`; the benchmark process holds the API server):".into(),
        );
        line(&mut out, String::new());
        line(&mut out, "| Operation | etcd | API server + benchmark | scheduler | total |".into());
        line(&mut out, "|---|---:|---:|---:|---:|".into());
        let what = [
            "etcd ceiling: one compare-and-put (benchmark = the etcd client)",
            "GET /version: TLS + HTTP on both ends, nothing else",
            "binding a pending pod (scheduler start-up included)",
            "creating and binding a pod while the scheduler runs",
        ];
        for (what, (etcd, bench, sched)) in what.iter().zip(e.cpu) {
            line(&mut out, format!("| {what} | {etcd:.0} | {bench:.0} | {sched:.0} | {:.0} |", etcd + bench + sched));
        }
        line(&mut out, String::new());
        line(
            &mut out,
            format!(
                "Scheduler memory with {} nodes and {} pods bound: RSS {:.1} MB, peak {:.1} MB.",
                args.nodes,
                args.pods,
                e.rss_kib.0 as f64 / 1024.0,
                e.rss_kib.1 as f64 / 1024.0
            ),
        );
    }
    println!("{out}");
    if let Some(path) = &args.out {
        std::fs::write(path, &out).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
