//! `ferry-bench-nodelet`: pod startup latency on real containerd, beside its floor.
//!
//! One private etcd + in-process API server, one private containerd with the busybox test image
//! imported, and a real `ferry-nodelet` child process (release build) running the node. Then:
//! - the floor: what the nodelet cannot avoid, done directly and one at a time — a network
//!   namespace, CNI ADD (loopback + bridge/host-local), and containerd's snapshot prepare,
//!   container create, task create and task start of the same container;
//! - pod startup latency: pods are created at a fixed rate (30 at 1/s, then 100 at 5/s) and a
//!   watch records when each is first seen Running (create call → Running event);
//! - the nodelet's resident memory with the 30 pods running.
//!
//! Prints a Markdown report on stdout; progress goes to stderr.

use anyhow::{bail, Context, Result};
use clap::Parser;
use containerd_client::services::v1::container::Runtime as CtrRuntime;
use containerd_client::services::v1::snapshots::{PrepareSnapshotRequest, RemoveSnapshotRequest};
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest, DeleteTaskRequest, KillRequest,
    StartRequest, WaitRequest,
};
use containerd_client::tonic::Request;
use ferry_nodelet::runtime::cni::{self, CniConfig};
use ferry_testkit::Cluster;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Nodelet pod startup benchmark.
#[derive(Parser, Debug)]
struct Args {
    /// The `ferry-nodelet` binary to run (a release build).
    #[arg(long)]
    nodelet_bin: PathBuf,
    /// Floor samples (netns + CNI + container create/start, one at a time).
    #[arg(long, default_value_t = 30)]
    floor_samples: usize,
    /// The slow run: pods and pods per second.
    #[arg(long, default_value_t = 30)]
    slow_pods: usize,
    #[arg(long, default_value_t = 1.0)]
    slow_rate: f64,
    /// The fast run: pods and pods per second.
    #[arg(long, default_value_t = 100)]
    fast_pods: usize,
    #[arg(long, default_value_t = 5.0)]
    fast_rate: f64,
}

const NS: &str = "ferry";
const IMAGE: &str = "docker.io/ferry/busybox:bench";

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1000.0)
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS")?;
    line.split_whitespace().nth(1).context("VmRSS")?.parse().context("VmRSS")
}

fn req<T>(msg: T) -> Result<Request<T>> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert("containerd-namespace", NS.parse()?);
    Ok(r)
}

/// The floor: netns + CNI + containerd create/start of the busybox container, timed; then torn down.
async fn floor_once(
    client: &containerd_client::Client,
    cni_config: &CniConfig,
    chain_id: &str,
    i: usize,
) -> Result<Duration> {
    let id = format!("floor-{i}-{}", std::process::id());
    let netns = format!("ferry-{id}");
    let start = Instant::now();
    cni::create_netns(&netns).await?;
    cni_config.add(&id, &netns).await?;
    let mut spec = serde_json::to_value(oci_spec::runtime::Spec::default())?;
    spec["process"]["args"] = json!(["sleep", "3600"]);
    spec["process"]["env"] = json!(["PATH=/bin"]);
    spec["root"] = json!({"path": "rootfs", "readonly": false});
    if let Some(nss) = spec["linux"]["namespaces"].as_array_mut() {
        nss.retain(|n| n["type"] != "cgroup");
        for n in nss.iter_mut() {
            if n["type"] == "network" {
                n["path"] = json!(cni::netns_path(&netns));
            }
        }
    }
    spec["linux"]["cgroupsPath"] = json!(format!("/ferry-bench/{id}"));
    let mounts = client
        .snapshots()
        .prepare(req(PrepareSnapshotRequest {
            snapshotter: "overlayfs".into(),
            key: id.clone(),
            parent: chain_id.into(),
            labels: HashMap::new(),
        })?)
        .await?
        .into_inner()
        .mounts;
    let container = Container {
        id: id.clone(),
        image: IMAGE.into(),
        runtime: Some(CtrRuntime { name: "io.containerd.runc.v2".into(), options: None }),
        spec: Some(prost_types::Any {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".into(),
            value: serde_json::to_vec(&spec)?,
        }),
        snapshotter: "overlayfs".into(),
        snapshot_key: id.clone(),
        ..Container::default()
    };
    client.containers().create(req(CreateContainerRequest { container: Some(container) })?).await?;
    let task = CreateTaskRequest { container_id: id.clone(), rootfs: mounts, ..CreateTaskRequest::default() };
    client.tasks().create(req(task)?).await?;
    client.tasks().start(req(StartRequest { container_id: id.clone(), exec_id: String::new() })?).await?;
    let took = start.elapsed();

    let kill = KillRequest { container_id: id.clone(), exec_id: String::new(), signal: 9, all: true };
    client.tasks().kill(req(kill)?).await?;
    let _ = client.tasks().wait(req(WaitRequest { container_id: id.clone(), exec_id: String::new() })?).await;
    client.tasks().delete(req(DeleteTaskRequest { container_id: id.clone() })?).await?;
    client.containers().delete(req(DeleteContainerRequest { id: id.clone() })?).await?;
    // containerd's garbage collector may have taken the unreferenced snapshot already.
    let rm = RemoveSnapshotRequest { snapshotter: "overlayfs".into(), key: id.clone() };
    let _ = client.snapshots().remove(req(rm)?).await;
    cni_config.del(&id, &netns).await?;
    cni::delete_netns(&netns).await?;
    for root in ["/sys/fs/cgroup/ferry-bench", "/sys/fs/cgroup/memory/ferry-bench"] {
        let _ = std::fs::remove_dir(Path::new(root).join(&id));
    }
    Ok(took)
}

fn bench_pod(name: &str) -> Result<Pod> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"nodeName": "bench-1", "terminationGracePeriodSeconds": 0,
                 "containers": [{"name": "c", "image": IMAGE, "command": ["sleep", "3600"]}]}
    }))?)
}

/// Create `n` pods at `rate` per second; the latency of each from its create call to the watch
/// seeing it Running.
async fn run_phase(
    pods: &Api<Pod>,
    seen: &Arc<Mutex<HashMap<String, Instant>>>,
    prefix: &str,
    n: usize,
    rate: f64,
) -> Result<Vec<Duration>> {
    let start = Instant::now();
    let mut created = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..n {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        let name = format!("{prefix}-{i}");
        let pod = bench_pod(&name)?;
        let api = pods.clone();
        created.push((name, Instant::now()));
        tasks.push(tokio::spawn(async move { api.create(&PostParams::default(), &pod).await }));
    }
    for t in tasks {
        t.await??;
    }
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let done = {
            let seen = seen.lock().map_err(|_| anyhow::anyhow!("lock"))?;
            created.iter().filter(|(n, _)| seen.contains_key(n)).count()
        };
        if done == n {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {done} of {n} pods became Running");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = seen.lock().map_err(|_| anyhow::anyhow!("lock"))?;
    let mut out: Vec<(Duration, &str)> = created
        .iter()
        .filter_map(|(n, t)| seen.get(n).map(|r| (r.saturating_duration_since(*t), n.as_str())))
        .collect();
    out.sort();
    // Where the tail is (which pods, in creation order) says more than the percentile.
    let slowest: Vec<String> = out.iter().rev().take(5).map(|(d, n)| format!("{n} {} ms", d.as_millis())).collect();
    eprintln!("slowest: {}", slowest.join(", "));
    Ok(out.into_iter().map(|(d, _)| d).collect())
}

/// Wait until the nodelet has removed every pod directory under `pods_dir` (its last step of
/// tearing a pod down), then two more seconds for the kernel's asynchronous netns cleanup.
async fn settle(pods_dir: &std::path::Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::fs::read_dir(pods_dir).map(|d| d.count()).unwrap_or(0) > 0 {
        if Instant::now() > deadline {
            bail!("the nodelet did not finish tearing pods down within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(())
}

async fn delete_all(pods: &Api<Pod>) -> Result<()> {
    for p in pods.list(&ListParams::default()).await?.items {
        let name = p.metadata.name.unwrap_or_default();
        let _ = pods.delete(&name, &DeleteParams::default()).await;
    }
    let deadline = Instant::now() + Duration::from_secs(180);
    while !pods.list(&ListParams::default()).await?.items.is_empty() {
        if Instant::now() > deadline {
            bail!("pods were not removed within 180 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

fn row(what: &str, s: &[Duration]) -> String {
    format!(
        "| {what} | {} | {} | {} | {} |",
        s.len(),
        ms(percentile(s, 50.0)),
        ms(percentile(s, 99.0)),
        ms(percentile(s, 100.0))
    )
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    ferry_testkit::init();
    eprintln!("== starting etcd, the API server and containerd");
    let cluster = Cluster::start().await?;
    let client = cluster.client().await?;
    let daemon = ferry_testkit::Containerd::start().await?;
    let work = tempfile::Builder::new().prefix("ferry-bench-nodelet-").tempdir()?;
    let archive = work.path().join("bb.tar");
    let chain_id = ferry_testkit::busybox_image_archive(&archive, IMAGE)?;
    ferry_nodelet::runtime::containerd::Containerd::connect(&daemon.socket, NS).await?.import_archive(&archive).await?;

    // The floor, on a bridge and subnet of its own.
    eprintln!("== floor: {} × netns + CNI + container create/start", args.floor_samples);
    let pid = std::process::id();
    let floor_bridge = ferry_testkit::LinkGuard(format!("fbf{:x}", pid & 0xffffff));
    let floor_cni = CniConfig {
        bin_dir: "/usr/lib/cni".into(),
        bridge: floor_bridge.0.clone(),
        pod_cidr: format!("10.251.{}.0/24", pid % 256),
        ipam_dir: work.path().join("floor-ipam"),
    };
    let ctrd = containerd_client::Client::from_path(&daemon.socket).await?;
    let mut floor = Vec::new();
    for i in 0..args.floor_samples {
        floor.push(floor_once(&ctrd, &floor_cni, &chain_id, i).await.with_context(|| daemon.log())?);
    }
    floor.sort();

    // The nodelet as its own process.
    eprintln!("== starting ferry-nodelet");
    let bridge = ferry_testkit::LinkGuard(format!("fbn{:x}", pid & 0xffffff));
    let log_path = work.path().join("nodelet.log");
    let child = Command::new(&args.nodelet_bin)
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig())
        .args(["--node-name", "bench-1", "--node-ip", "127.0.0.1", "--cni-bridge", &bridge.0])
        .args(["--pod-cidr", &format!("10.252.{}.0/24", pid % 256)])
        .arg("--containerd-address")
        .arg(&daemon.socket)
        .arg("--root-dir")
        .arg(work.path().join("nodelet"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path)?)
        .spawn()
        .with_context(|| format!("starting {}", args.nodelet_bin.display()))?;
    let nodelet = Process(child);
    let nodes: Api<Node> = Api::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    while nodes.get_opt("bench-1").await?.is_none() {
        if Instant::now() > deadline {
            bail!("the nodelet did not register:\n{}", std::fs::read_to_string(&log_path).unwrap_or_default());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let idle_rss = rss_kib(nodelet.0.id())?;

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let watch = {
        let (api, seen) = (pods.clone(), seen.clone());
        tokio::spawn(async move {
            let mut stream = watcher(api, watcher::Config::default()).boxed();
            while let Some(ev) = stream.next().await {
                let now = Instant::now();
                let pods = match ev {
                    Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => vec![p],
                    _ => continue,
                };
                for p in pods {
                    if p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") {
                        if let (Some(name), Ok(mut seen)) = (p.metadata.name.clone(), seen.lock()) {
                            seen.entry(name).or_insert(now);
                        }
                    }
                }
            }
        })
    };

    eprintln!("== {} pods at {}/s", args.slow_pods, args.slow_rate);
    let slow = run_phase(&pods, &seen, "slow", args.slow_pods, args.slow_rate).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_running = rss_kib(nodelet.0.id())?;
    eprintln!("== deleting");
    delete_all(&pods).await?;
    // The pods are gone from the API before the node has finished tearing them down (CNI DEL,
    // netns removal, which the kernel completes asynchronously). Pods created meanwhile wait
    // for that (measured: the first five of the fast run took 0.4–1 s): let the node settle so
    // the fast run measures startup, not the previous run's teardown.
    settle(&work.path().join("nodelet/pods")).await?;
    eprintln!("== {} pods at {}/s", args.fast_pods, args.fast_rate);
    let fast = run_phase(&pods, &seen, "fast", args.fast_pods, args.fast_rate).await?;
    let rss_fast = rss_kib(nodelet.0.id())?;
    eprintln!("== deleting");
    delete_all(&pods).await?;
    // And let the node finish before it is stopped, so no pod's netns outlives the benchmark.
    settle(&work.path().join("nodelet/pods")).await?;
    watch.abort();
    drop(nodelet);

    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name").map(|m| m.trim_start_matches([' ', '\t', ':']).to_string()))
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "Machine: {cores} cores ({cpu}); load average at the end: {}\n",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    println!("| Measure | n | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|");
    println!("{}", row("Floor: netns + CNI ADD + containerd prepare/create/task create/start (one at a time)", &floor));
    println!(
        "{}",
        row(&format!("Pod create → Running (watch), {} pods at {}/s", args.slow_pods, args.slow_rate), &slow)
    );
    println!(
        "{}",
        row(&format!("Pod create → Running (watch), {} pods at {}/s", args.fast_pods, args.fast_rate), &fast)
    );
    let f99 = percentile(&floor, 99.0).as_secs_f64();
    println!(
        "\np99 / floor p99: {:.1}× ({} pods at {}/s), {:.1}× ({} pods at {}/s)",
        percentile(&slow, 99.0).as_secs_f64() / f99,
        args.slow_pods,
        args.slow_rate,
        percentile(&fast, 99.0).as_secs_f64() / f99,
        args.fast_pods,
        args.fast_rate
    );
    println!(
        "\nferry-nodelet RSS: {:.1} MB idle (node registered), {:.1} MB with {} pods running, {:.1} MB with {} pods running",
        idle_rss as f64 / 1024.0,
        rss_running as f64 / 1024.0,
        args.slow_pods,
        rss_fast as f64 / 1024.0,
        args.fast_pods
    );
    Ok(())
}
