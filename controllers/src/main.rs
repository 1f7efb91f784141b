//! `ferry-controllers`: the controller manager binary (thin; see the library).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use ferry_controllers::{Config, LeaderConfig};
use tokio_util::sync::CancellationToken;

/// Ferry's controllers (ReplicaSet, Deployment, garbage collector, Namespace, ServiceAccount).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Kubeconfig of the API server (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// This process's identity in the leader election (default: hostname + random suffix).
    #[arg(long)]
    identity: Option<String>,
    /// Namespace of the leader-election Lease.
    #[arg(long, default_value = "kube-system")]
    leader_elect_resource_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "ferry-controllers")]
    leader_elect_resource_name: String,
    /// How long a Lease holds without renewal (e.g. 15s, 500ms).
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    leader_elect_lease_duration: Duration,
    /// How long the leader tries to renew before giving up.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    leader_elect_renew_deadline: Duration,
    /// How often candidates retry and the leader renews.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    leader_elect_retry_period: Duration,
    /// Concurrent reconciles per controller.
    #[arg(long, default_value_t = 5)]
    concurrent_syncs: u16,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.find(|c: char| !c.is_ascii_digit() && c != '.').map_or((s, "s"), |i| s.split_at(i));
    let n: f64 = num.parse().map_err(|_| format!("invalid duration {s:?} (examples: 15s, 500ms, 1m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("invalid duration unit in {s:?} (use ms, s or m)")),
    };
    if !secs.is_finite() || secs <= 0.0 {
        return Err(format!("duration {s:?} must be positive"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("ferry-controllers: {e:#}");
        std::process::exit(1);
    }
}

async fn run() -> Result<()> {
    let args = Args::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    anyhow::ensure!(
        args.leader_elect_renew_deadline < args.leader_elect_lease_duration,
        "--leader-elect-renew-deadline must be shorter than --leader-elect-lease-duration"
    );
    anyhow::ensure!(
        args.leader_elect_retry_period < args.leader_elect_renew_deadline,
        "--leader-elect-retry-period must be shorter than --leader-elect-renew-deadline"
    );
    let client = match &args.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .context("loading kubeconfig")?;
            kube::Client::try_from(cfg).context("building the API client")?
        }
        None => kube::Client::try_default().await.context("loading the default kubeconfig")?,
    };
    let host = std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "ferry".into());
    let identity = args.identity.unwrap_or_else(|| format!("{host}_{}", uuid::Uuid::new_v4()));
    let mut leader = LeaderConfig::new(identity);
    leader.namespace = args.leader_elect_resource_namespace;
    leader.name = args.leader_elect_resource_name;
    leader.lease_duration = args.leader_elect_lease_duration;
    leader.renew_deadline = args.leader_elect_renew_deadline;
    leader.retry_period = args.leader_elect_retry_period;
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        on_signal.cancel();
    });
    tracing::info!(identity = %leader.identity, "ferry-controllers starting; waiting for leadership");
    ferry_controllers::run(client, Config { leader, concurrency: args.concurrent_syncs }, shutdown)
        .await
        .context("stopping")?;
    Ok(())
}
