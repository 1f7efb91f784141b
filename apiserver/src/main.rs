//! `ferry-apiserver`: parse flags, start the server, stop on SIGINT/SIGTERM.

use anyhow::Context;
use clap::Parser;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Ferry's Kubernetes-compatible API server.
#[derive(Parser, Debug)]
#[command(name = "ferry-apiserver", version, subcommand_negates_reqs = true)]
struct Args {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// etcd endpoints, comma separated (http://host:port).
    #[arg(long, value_delimiter = ',', required = true)]
    etcd_servers: Vec<String>,
    /// Directory for TLS material and the admin kubeconfig.
    #[arg(long, required = true)]
    data_dir: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    bind_address: IpAddr,
    /// HTTPS port.
    #[arg(long, default_value_t = 6443)]
    secure_port: u16,
    /// Address pods reach this server on (default: the bind address).
    #[arg(long)]
    advertise_address: Option<IpAddr>,
    /// Extra host names or IPs for the serving certificate, comma separated.
    #[arg(long, value_delimiter = ',')]
    tls_san: Vec<String>,
    /// Static bearer token file (token,user,uid,"group1,group2").
    #[arg(long)]
    token_auth_file: Option<PathBuf>,
    /// Seconds between etcd compactions (0 disables).
    #[arg(long, default_value_t = 300)]
    etcd_compaction_interval: u64,
    /// IPv4 range Services' ClusterIPs come from.
    #[arg(long, default_value = "10.96.0.0/12")]
    service_cluster_ip_range: String,
    /// Port range NodePorts come from (LOW-HIGH).
    #[arg(long, default_value = "30000-32767")]
    service_node_port_range: String,
    /// Seconds Events are kept after their last update (0: forever).
    #[arg(long, default_value_t = 3600)]
    event_ttl: u64,
    /// tolerationSeconds of the not-ready NoExecute toleration added to pods without one.
    #[arg(long, default_value_t = 300)]
    default_not_ready_toleration_seconds: i64,
    /// tolerationSeconds of the unreachable NoExecute toleration added to pods without one.
    #[arg(long, default_value_t = 300)]
    default_unreachable_toleration_seconds: i64,
    /// Log as JSON.
    #[arg(long)]
    log_json: bool,
}

#[derive(clap::Subcommand, Debug)]
enum Cmd {
    /// Issue a node's credentials from the cluster CA in DATA_DIR/pki: a kubeconfig with the
    /// client certificate `system:node:NODE` (group system:nodes) and the serving certificate of
    /// the nodelet's HTTPS endpoint. Writes OUT/{kubeconfig,ca.crt,nodelet.crt,nodelet.key}.
    NodeCredentials {
        /// The API server's data directory (holds pki/ca.crt and pki/ca.key).
        #[arg(long)]
        data_dir: PathBuf,
        /// The node's name.
        #[arg(long)]
        node: String,
        /// Addresses or DNS names the nodelet is reached on (its InternalIP), comma separated.
        #[arg(long, value_delimiter = ',', required = true)]
        address: Vec<String>,
        /// The API server URL for the kubeconfig.
        #[arg(long)]
        server: String,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Cmd::NodeCredentials { data_dir, node, address, server, out }) = &args.command {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let creds = ferry_apiserver::pki::issue_node_credentials_from(data_dir, node, address)
            .with_context(|| format!("issuing node credentials from {}", data_dir.join("pki").display()))?;
        creds.write(out, server).with_context(|| format!("writing {}", out.display()))?;
        println!("wrote {} credentials to {}", creds.user, out.display());
        return Ok(());
    }
    let Some(data_dir) = args.data_dir.clone() else { anyhow::bail!("--data-dir is required") };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    if args.log_json {
        tracing_subscriber::fmt().with_env_filter(filter).json().init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let mut config = ferry_apiserver::Config::new(args.etcd_servers, data_dir);
    config.rest.service_ranges =
        ferry_apiserver::rest::ServiceRanges::parse(&args.service_cluster_ip_range, &args.service_node_port_range)
            .map_err(anyhow::Error::msg)?;
    config.bind_address = args.bind_address;
    config.secure_port = args.secure_port;
    config.advertise_address = args.advertise_address;
    config.extra_sans = args.tls_san;
    config.token_auth_file = args.token_auth_file;
    config.rest.default_not_ready_toleration_seconds = args.default_not_ready_toleration_seconds;
    config.rest.default_unreachable_toleration_seconds = args.default_unreachable_toleration_seconds;
    config.rest.event_ttl = (args.event_ttl > 0).then(|| Duration::from_secs(args.event_ttl));
    config.compaction_interval =
        (args.etcd_compaction_interval > 0).then(|| Duration::from_secs(args.etcd_compaction_interval));
    let server = ferry_apiserver::start(config).await.context("starting ferry-apiserver")?;
    println!("ferry-apiserver listening on https://{}", server.addr);
    println!("admin kubeconfig: {}", server.admin_kubeconfig.display());
    shutdown_signal().await;
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
