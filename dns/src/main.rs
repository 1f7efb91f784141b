//! `ferry-dns`: serve the cluster DNS zone until SIGINT/SIGTERM.

use anyhow::Context;
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Ferry's cluster DNS server.
#[derive(Parser, Debug)]
#[command(name = "ferry-dns", version)]
struct Args {
    /// Kubeconfig to reach the API server (default: $KUBECONFIG, ~/.kube/config, in-cluster).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Addresses to serve on (UDP and TCP), comma separated.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:53")]
    listen: Vec<SocketAddr>,
    /// The cluster domain.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// Resolvers for other names: `system` (/etc/resolv.conf), `none`, or IP addresses, comma separated.
    #[arg(long, default_value = "system")]
    upstream: ferry_dns::Upstream,
    /// TTL of answers, in seconds.
    #[arg(long, default_value_t = 5)]
    ttl: u32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let client = match &args.kubeconfig {
        Some(path) => {
            let kc =
                kube::config::Kubeconfig::read_from(path).with_context(|| format!("reading {}", path.display()))?;
            let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
            kube::Client::try_from(cfg)?
        }
        None => kube::Client::try_default().await.context("no kubeconfig found; pass --kubeconfig")?,
    };
    let config = ferry_dns::Config {
        domain: args.cluster_domain,
        listen: args.listen,
        ttl: args.ttl,
        upstream: args.upstream,
        ..Default::default()
    };
    let running = ferry_dns::start(client, config).await?;
    for a in &running.addrs {
        println!("ferry-dns serving on {a} (udp, tcp)");
    }
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate() => {}
    }
    running.shutdown().await;
    Ok(())
}

async fn terminate() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}
