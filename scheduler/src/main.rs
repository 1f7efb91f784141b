//! `ferry-scheduler`: binds pending pods to nodes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use ferry_scheduler::leader::LeaderConfig;
use ferry_scheduler::metrics::{self, Metrics};
use ferry_scheduler::{Config, Scheduler};

/// Ferry's scheduler.
#[derive(Parser, Debug)]
#[command(name = "ferry-scheduler", version)]
struct Args {
    /// Kubeconfig of the cluster (else KUBECONFIG / in-cluster).
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Address for /metrics and /healthz.
    #[arg(long, default_value = "127.0.0.1:10251")]
    bind_address: SocketAddr,
    /// Take part in leader election (a Lease in kube-system).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Name of the Lease.
    #[arg(long, default_value = "kube-scheduler")]
    leader_elect_resource_name: String,
    /// Percentage of nodes to find feasible before scoring (0: adaptive, like Kubernetes).
    #[arg(long, default_value_t = 0)]
    percentage_of_nodes_to_score: u32,
    /// Bindings in flight at once.
    #[arg(long, default_value_t = 64)]
    bind_concurrency: usize,
    /// Do not publish Scheduled/FailedScheduling events.
    #[arg(long)]
    no_events: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    let client = match &args.kubeconfig {
        Some(path) => {
            let kc =
                kube::config::Kubeconfig::read_from(path).with_context(|| format!("reading {}", path.display()))?;
            let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .context("loading kubeconfig")?;
            kube::Client::try_from(cfg).context("building client")?
        }
        None => kube::Client::try_default().await.context("no kubeconfig (use --kubeconfig)")?,
    };
    let metrics = Arc::new(Metrics::new());
    let listener = metrics::bind(args.bind_address).await.with_context(|| format!("binding {}", args.bind_address))?;
    tokio::spawn(metrics::serve(listener, metrics.clone()));
    let config = Config {
        percentage_of_nodes_to_score: Some(args.percentage_of_nodes_to_score).filter(|p| *p > 0),
        events: !args.no_events,
        bind_concurrency: args.bind_concurrency.max(1),
        ..Config::default()
    };
    let scheduler = Scheduler::new(client, config, metrics);
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "ferry-scheduler".into());
    let identity = format!("{host}_{}", std::process::id());
    let run = async {
        if args.leader_elect {
            let mut lease = LeaderConfig::new(identity);
            lease.name = args.leader_elect_resource_name.clone();
            scheduler.run_with_leader(lease).await
        } else {
            scheduler.run().await
        }
    };
    tokio::select! {
        r = run => r.context("scheduler stopped")?,
        _ = tokio::signal::ctrl_c() => {
            tracing::info!("interrupted; stopping");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    Ok(())
}
