//! `ferry-bench-apiserver`: how fast Ferry's API server is, next to the etcd it stands on.
//!
//! One run, one private etcd, everything on 127.0.0.1:
//! 1. the **floor** — create / get / update / range straight against etcd ([`floor`]);
//! 2. the same operations **through the API server** with kube-rs ([`api`]);
//! 3. **lists of 10,000 pods**, unpaged and paged ([`api::big_list`]);
//! 4. **watch delivery** latency to many watchers ([`watch`]);
//! 5. **memory** of a real `ferry-apiserver` process holding 10,000 pods ([`rss`]).
//!
//! The report is Markdown, printed to stdout (and written to `--out`); progress goes to stderr.

mod api;
mod fixture;
mod floor;
mod report;
mod rss;
mod stats;
mod watch;

use anyhow::{ensure, Context, Result};
use clap::Parser;
use etcd_client::GetOptions;
use std::path::PathBuf;
use std::time::Duration;

/// Benchmark Ferry's API server against a direct-etcd floor and print a Markdown report.
#[derive(Parser, Debug)]
#[command(name = "ferry-bench-apiserver", version)]
pub struct Args {
    /// Concurrent clients for the operation phases.
    #[arg(short = 'c', long, default_value_t = 16)]
    pub concurrency: usize,
    /// Operations per kind (create, get, update) in the floor and API phases.
    #[arg(short = 'n', long, default_value_t = 2000)]
    pub ops: usize,
    /// Lists (and etcd ranges) in the operation phases; each returns all `--ops` pods.
    #[arg(long)]
    pub list_ops: Option<usize>,
    /// Pods stored for the large-list and memory phases.
    #[arg(long, default_value_t = 10_000)]
    pub list_pods: usize,
    /// Timed large lists of each kind.
    #[arg(long, default_value_t = 20)]
    pub list_rounds: usize,
    /// Page size of the paged large list.
    #[arg(long, default_value_t = 500)]
    pub page_size: u32,
    /// Concurrent creates while filling up to `--list-pods`.
    #[arg(long, default_value_t = 64)]
    pub fill_concurrency: usize,
    /// Watchers in the watch phase.
    #[arg(short = 'w', long, default_value_t = 100)]
    pub watchers: usize,
    /// Pod updates per second in the watch phase.
    #[arg(short = 'r', long, default_value_t = 500)]
    pub rate: u32,
    /// Seconds of updates in the watch phase.
    #[arg(short = 'd', long, default_value_t = 10)]
    pub seconds: u32,
    /// Writer tasks in the watch phase (each owns `--watch-pods / --writers` pods).
    #[arg(long, default_value_t = 16)]
    pub writers: usize,
    /// Pods updated round robin in the watch phase.
    #[arg(long, default_value_t = 160)]
    pub watch_pods: usize,
    /// The `ferry-apiserver` binary for the memory phase
    /// (default: `$CARGO_TARGET_DIR/release/ferry-apiserver`, else next to this binary).
    #[arg(long)]
    pub apiserver_bin: Option<PathBuf>,
    /// Also write the report to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Upper bound on any one measured phase, in seconds.
    #[arg(long, default_value_t = 300)]
    pub phase_timeout: u64,
}

/// Everything one run measured.
pub struct Results {
    /// Machine and software description.
    pub machine: report::Machine,
    /// Size of one pod as the client submits it, in bytes.
    pub submitted_bytes: usize,
    /// Size of one pod as the API server stores it (and the floor writes it), in bytes.
    pub pod_bytes: usize,
    /// Direct etcd.
    pub floor: floor::Floor,
    /// Through the API server.
    pub api: api::ApiOps,
    /// Creating pods up to `--list-pods`.
    pub fill: stats::Sample,
    /// Direct etcd range of all pods (the large list's floor).
    pub big_range: stats::Sample,
    /// Large lists.
    pub big_list: api::BigList,
    /// Memory of this process after the list phase.
    pub self_rss: rss::Rss,
    /// The separate server process.
    pub child: rss::ChildResult,
    /// Watch delivery.
    pub watch: watch::WatchResult,
}

fn progress(msg: &str) {
    eprintln!("[ferry-bench] {msg}");
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    // Logs go to stderr so stdout carries only the report.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
    ferry_testkit::init();
    ensure!(args.ops > 0 && args.ops <= args.list_pods, "--ops must be between 1 and --list-pods");
    ensure!(args.watch_pods > 0 && args.watch_pods <= args.list_pods, "--watch-pods must be between 1 and --list-pods");
    let apiserver_bin = match &args.apiserver_bin {
        Some(p) => p.clone(),
        None => rss::default_apiserver_bin()?,
    };

    let results = run(&args, &apiserver_bin).await?;
    let text = report::render(&args, &results);
    println!("{text}");
    if let Some(out) = &args.out {
        std::fs::write(out, &text).with_context(|| format!("writing {}", out.display()))?;
        progress(&format!("report written to {}", out.display()));
    }
    Ok(())
}

async fn run(args: &Args, apiserver_bin: &std::path::Path) -> Result<Results> {
    let limit = Duration::from_secs(args.phase_timeout);
    let (c, n) = (args.concurrency, args.ops);
    let list_ops = args.list_ops.unwrap_or(n);

    progress("starting etcd and an in-process API server");
    let mut cluster = ferry_testkit::Cluster::start_with(|config: &mut ferry_apiserver::Config| {
        // No compaction while measuring: paging and watches never hit 410.
        config.compaction_interval = None;
    })
    .await?;
    let client = cluster.client().await?;
    let etcd = cluster.etcd.client().await?;
    let machine = report::Machine::probe(&etcd).await?;

    let value = stored_pod(&client, &etcd).await?;

    progress(&format!("floor: {n} etcd creates/gets/updates and {list_ops} ranges at concurrency {c}"));
    let floor = floor::run(&etcd, value.clone(), c, n, list_ops, limit).await?;

    progress(&format!("API: {n} creates/gets/replaces and {list_ops} lists at concurrency {c}"));
    let api = api::run(&client, c, n, list_ops, limit).await?;

    progress(&format!("filling up to {} pods at concurrency {}", args.list_pods, args.fill_concurrency));
    let fill = api::fill(&client, n, args.list_pods, args.fill_concurrency, limit).await?;

    progress(&format!("timing {} lists of {} pods each way", args.list_rounds, args.list_pods));
    let big_range = big_range(&etcd, args.list_pods, args.list_rounds, limit).await?;
    let big_list = api::big_list(&client, args.list_pods, args.list_rounds, args.page_size, limit).await?;
    let self_rss = rss::Rss::of(None)?;

    progress(&format!("memory: starting {} against the same etcd", apiserver_bin.display()));
    let child = rss::measure_child(apiserver_bin, &cluster.etcd.url, args.list_pods, 5, 8).await?;

    progress(&format!("watch: {} watchers, {} updates/s for {} s", args.watchers, args.rate, args.seconds));
    let settings = watch::Settings {
        watchers: args.watchers,
        rate: args.rate,
        seconds: args.seconds,
        writers: args.writers,
        pods: args.watch_pods,
    };
    let watch = watch::run(&client, &settings).await?;
    cluster.stop_server().await;

    Ok(Results {
        machine,
        submitted_bytes: fixture::pod_json(0).to_string().len(),
        pod_bytes: value.len(),
        floor,
        api,
        fill,
        big_range,
        big_list,
        self_rss,
        child,
        watch,
    })
}

/// Create one pod through the API server, read the bytes it stored from etcd, delete it:
/// the floor writes exactly these bytes, so both sides move the same amount of data.
async fn stored_pod(client: &kube::Client, etcd: &etcd_client::Client) -> Result<bytes::Bytes> {
    let api: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::namespaced(client.clone(), fixture::NAMESPACE);
    let mut pod = fixture::pod(0)?;
    pod.metadata.name = Some("bench-probe".into());
    api.create(&Default::default(), &pod).await.context("creating the probe pod")?;
    let key = format!("/registry/core/pods/{}/bench-probe", fixture::NAMESPACE);
    let stored = etcd.kv_client().get(key.as_str(), None).await?;
    let value = stored.kvs().first().map(|kv| bytes::Bytes::copy_from_slice(kv.value()));
    api.delete("bench-probe", &Default::default()).await.context("deleting the probe pod")?;
    value.with_context(|| format!("{key} is not in etcd"))
}

/// Time `rounds` etcd range reads of every stored pod: the floor under a large list.
async fn big_range(
    etcd: &etcd_client::Client,
    expected: usize,
    rounds: usize,
    limit: Duration,
) -> Result<stats::Sample> {
    let kv = etcd.kv_client().max_decoding_message_size(512 << 20);
    stats::measure(1, rounds, limit, move |_| {
        let mut kv = kv.clone();
        async move {
            let prefix = format!("/registry/core/pods/{}/", fixture::NAMESPACE);
            let end = ferry_apiserver::storage::prefix_end(&prefix);
            let resp = kv.get(prefix, Some(GetOptions::new().with_range(end))).await?;
            ensure!(resp.kvs().len() == expected, "range returned {} pods, expected {expected}", resp.kvs().len());
            Ok(())
        }
    })
    .await
    .context("etcd range of all pods")
}
