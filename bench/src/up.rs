//! `ferry-bench-up`: how fast `ferry up` gives a working cluster, and what it costs in memory.
//!
//! Starts `ferry up --detach` (one containerd node) on free ports under a temporary data dir and
//! measures: start → API `/readyz` ok (polled every 10 ms), start → `ferry up` returned (every
//! node Ready), the image import of the demo's busybox image, and `ferry apply` of
//! `manifests/demo.yaml` → every demo pod Running and Ready (polled every 20 ms). Resident memory
//! (VmRSS) of every component is read from `/proc` once the cluster has idled for a while, and
//! again with the demo running. Then `ferry down`. Needs root, etcd and containerd.
//!
//! Prints a Markdown report on stdout.

use anyhow::{bail, ensure, Context, Result};
use clap::Parser;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `ferry up` benchmark.
#[derive(Parser, Debug)]
struct Args {
    /// Directory with release builds of ferry and its daemons.
    #[arg(long)]
    bin_dir: PathBuf,
    /// The demo manifests.
    #[arg(long, default_value = "manifests/demo.yaml")]
    demo: PathBuf,
    /// Seconds the cluster idles before the idle memory is read.
    #[arg(long, default_value_t = 15)]
    idle_seconds: u64,
    /// Runs (each a fresh data dir); the report shows each and the median.
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

/// The control plane, as the issue counts it.
const CONTROL_PLANE: [&str; 3] = ["ferry-apiserver", "ferry-controllers", "ferry-scheduler"];

#[derive(Debug, Default)]
struct Run {
    api_ready: Duration,
    nodes_ready: Duration,
    import: Duration,
    demo_running: Duration,
    up_to_demo: Duration,
    idle_kib: BTreeMap<String, u64>,
    demo_kib: BTreeMap<String, u64>,
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// VmRSS in KiB of every process whose command line mentions `needle`, by program name (summed).
fn rss_by_program(needle: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let args: Vec<String> =
            cmd.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).filter(|a| !a.is_empty()).collect();
        if !args.iter().any(|a| a.contains(needle)) {
            continue;
        }
        let Some(program) =
            args.first().and_then(|p| Path::new(p).file_name()).map(|p| p.to_string_lossy().into_owned())
        else {
            continue;
        };
        if program == "ferry" || program.starts_with("ferry-bench") {
            continue; // the supervisor and this benchmark
        }
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        let kib = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|k| k.parse::<u64>().ok())
            .unwrap_or(0);
        *out.entry(program).or_insert(0) += kib;
    }
    out
}

fn ferry(args: &Args) -> PathBuf {
    args.bin_dir.join("ferry")
}

fn run_ok(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd.stdin(Stdio::null()).output().with_context(|| format!("running {what}"))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    ensure!(out.status.success(), "{what} failed: {text}");
    Ok(text)
}

async fn api_ready(kubeconfig: &Path) -> bool {
    let Ok(kc) = kube::config::Kubeconfig::read_from(kubeconfig) else { return false };
    let Ok(config) = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await else { return false };
    let Ok(client) = kube::Client::try_from(config) else { return false };
    let Ok(req) = http::Request::get("/readyz").body(Vec::new()) else { return false };
    client.request_text(req).await.is_ok_and(|t| t.trim() == "ok")
}

async fn one_run(args: &Args, i: usize, archive: &Path) -> Result<Run> {
    let tmp = tempfile::Builder::new().prefix("ferry-bench-up-").tempdir_in("/tmp")?;
    let data = tmp.path().join("cluster");
    let data_s = data.to_string_lossy().into_owned();
    let kubeconfig = data.join("admin.kubeconfig");
    let ports = [free_port()?, free_port()?, free_port()?, free_port()?].map(|p| p.to_string());
    let cidr = format!("10.{}.0.0/16", 150 + i % 50);
    let mut run = Run::default();

    let start = Instant::now();
    let up = tokio::process::Command::new(ferry(args))
        .args(["up", "--detach", "--data-dir", &data_s, "--api-port", &ports[0], "--etcd-port", &ports[1]])
        .args(["--etcd-peer-port", &ports[2], "--dns-port", &ports[3], "--nodes", "1", "--cluster-cidr", &cidr])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting ferry up")?;
    let _down = Down(ferry(args), data_s.clone());
    while !api_ready(&kubeconfig).await {
        if start.elapsed() > Duration::from_secs(60) {
            bail!("the API was not ready within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    run.api_ready = start.elapsed();
    let out = up.wait_with_output().await?;
    ensure!(out.status.success(), "ferry up failed: {}", String::from_utf8_lossy(&out.stderr));
    run.nodes_ready = start.elapsed();

    let t = Instant::now();
    run_ok(Command::new(ferry(args)).arg("image").arg("import").arg(archive).args(["--data-dir", &data_s]), "import")?;
    run.import = t.elapsed();

    let t = Instant::now();
    run_ok(
        Command::new(ferry(args)).arg("--kubeconfig").arg(&kubeconfig).arg("apply").arg("-f").arg(&args.demo),
        "ferry apply",
    )?;
    let kc = kube::config::Kubeconfig::read_from(&kubeconfig)?;
    let client = kube::Client::try_from(kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?)?;
    let pods: Api<Pod> = Api::namespaced(client, "demo");
    loop {
        let list = pods.list(&ListParams::default().labels("app=web")).await?;
        let ready = list
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| {
                p.status.as_ref().is_some_and(|s| {
                    s.phase.as_deref() == Some("Running")
                        && s.conditions.iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True")
                })
            })
            .count();
        if ready >= 2 {
            break;
        }
        if t.elapsed() > Duration::from_secs(120) {
            bail!("the demo pods were not Running within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    run.demo_running = t.elapsed();
    run.up_to_demo = start.elapsed();
    run.demo_kib = rss_by_program(&data_s);

    // Idle memory: delete the demo, let the cluster settle.
    run_ok(
        Command::new(ferry(args)).arg("--kubeconfig").arg(&kubeconfig).args([
            "delete",
            "namespace",
            "demo",
            "--wait=true",
        ]),
        "ferry delete namespace",
    )?;
    tokio::time::sleep(Duration::from_secs(args.idle_seconds)).await;
    run.idle_kib = rss_by_program(&data_s);
    Ok(run)
}

/// `ferry down` on drop, so a failed run leaves nothing behind.
struct Down(PathBuf, String);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = Command::new(&self.0).args(["down", "--data-dir", &self.1]).output();
    }
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn control_plane(m: &BTreeMap<String, u64>) -> u64 {
    CONTROL_PLANE.iter().filter_map(|p| m.get(*p)).sum()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    ensure!(nix_is_root(), "ferry-bench-up needs root (it runs a node)");
    let dir = tempfile::tempdir()?;
    let archive = dir.path().join("busybox.tar");
    ferry_testkit::busybox_image_archive(&archive, "busybox:1.36")?;
    let mut runs = Vec::new();
    for i in 0..args.runs.max(1) {
        eprintln!("run {}/{}", i + 1, args.runs.max(1));
        runs.push(one_run(&args, i, &archive).await?);
    }
    println!("## `ferry up`\n");
    println!("One containerd node, binaries from {}, {} runs (median last).\n", args.bin_dir.display(), runs.len());
    println!("| run | API ready | node Ready (`up --detach` returns) | image import | apply → demo Running | `up` → demo Running |");
    println!("|---|---|---|---|---|---|");
    for (i, r) in runs.iter().enumerate() {
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            i + 1,
            ms(r.api_ready),
            ms(r.nodes_ready),
            ms(r.import),
            ms(r.demo_running),
            ms(r.up_to_demo)
        );
    }
    let med = |f: fn(&Run) -> Duration| median(runs.iter().map(f).collect());
    println!(
        "| median | {} | {} | {} | {} | {} |\n",
        ms(med(|r| r.api_ready)),
        ms(med(|r| r.nodes_ready)),
        ms(med(|r| r.import)),
        ms(med(|r| r.demo_running)),
        ms(med(|r| r.up_to_demo))
    );
    let Some(last) = runs.last() else { return Ok(()) };
    println!("Resident memory (VmRSS) of the last run:\n");
    println!("| process | idle | with the demo |");
    println!("|---|---|---|");
    let names: std::collections::BTreeSet<&String> = last.idle_kib.keys().chain(last.demo_kib.keys()).collect();
    for n in names {
        println!(
            "| {n} | {} | {} |",
            mib(last.idle_kib.get(n).copied().unwrap_or(0)),
            mib(last.demo_kib.get(n).copied().unwrap_or(0))
        );
    }
    println!(
        "| **control plane** ({}) | **{}** | **{}** |",
        CONTROL_PLANE.join(" + "),
        mib(control_plane(&last.idle_kib)),
        mib(control_plane(&last.demo_kib))
    );
    println!();
    Ok(())
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}
