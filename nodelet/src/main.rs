//! `ferry-nodelet`: parse flags, run the node agent (or a subcommand).

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use ferry_nodelet::runtime::cni::CniConfig;
use ferry_nodelet::runtime::containerd::{self, Containerd};
use ferry_nodelet::runtime::pods_containerd::{ContainerdConfig, ContainerdRuntime, BACKOFF_START};
use ferry_nodelet::runtime::simulated::SimulatedConfig;
use ferry_nodelet::{machine::Machine, Config, Nodelet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum RuntimeKind {
    Containerd,
    Simulated,
}

/// Ferry's node agent.
#[derive(Parser, Debug)]
#[command(name = "ferry-nodelet", version)]
struct Args {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// Kubeconfig with this node's credentials.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// The Node's name (default: the host name).
    #[arg(long)]
    node_name: Option<String>,
    /// Which runtime runs the pods.
    #[arg(long, value_enum, default_value_t = RuntimeKind::Containerd)]
    runtime: RuntimeKind,
    /// containerd's socket.
    #[arg(long, global = true, default_value = "/run/containerd/containerd.sock")]
    containerd_address: PathBuf,
    /// Directory for the nodelet's state.
    #[arg(long, default_value = "/var/lib/ferry-nodelet")]
    root_dir: PathBuf,
    /// The node's pod CIDR (used when the Node has no spec.podCIDR).
    #[arg(long)]
    pod_cidr: Option<String>,
    /// The node's address (default: the first non-loopback IPv4 address).
    #[arg(long)]
    node_ip: Option<IpAddr>,
    /// topology.kubernetes.io/zone label.
    #[arg(long)]
    zone: Option<String>,
    /// Extra node labels, key=value, comma separated.
    #[arg(long, value_delimiter = ',')]
    node_labels: Vec<String>,
    /// Maximum pods on this node.
    #[arg(long, default_value_t = 110)]
    max_pods: u32,
    /// CPU reserved for the system, in millicores.
    #[arg(long, default_value_t = 0)]
    reserved_cpu_millis: u64,
    /// Memory reserved for the system, in MiB.
    #[arg(long, default_value_t = 100)]
    reserved_memory_mib: u64,
    /// Seconds between Lease renewals.
    #[arg(long, default_value_t = 10)]
    lease_renew_seconds: u64,
    /// Seconds between full node status writes when nothing changed.
    #[arg(long, default_value_t = 300)]
    status_report_seconds: u64,
    /// Directory of the CNI plugin binaries.
    #[arg(long, default_value = "/usr/lib/cni")]
    cni_bin_dir: PathBuf,
    /// Linux bridge the pods attach to.
    #[arg(long, default_value = "ferry0")]
    cni_bridge: String,
    /// Start delay of pods on the simulated runtime, in milliseconds.
    #[arg(long, default_value_t = 0)]
    simulated_start_delay_ms: u64,
}

#[derive(clap::Subcommand, Debug)]
enum Cmd {
    /// Work with images in containerd.
    #[command(subcommand)]
    Image(ImageCmd),
}

#[derive(clap::Subcommand, Debug)]
enum ImageCmd {
    /// Load an OCI image layout or `docker save` archive into containerd (and unpack it).
    Import {
        /// The archive (tar).
        archive: PathBuf,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferry-nodelet: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    if let Some(Cmd::Image(ImageCmd::Import { archive })) = &args.command {
        let c = Containerd::connect(&args.containerd_address, containerd::NAMESPACE).await?;
        for name in c.import_archive(archive).await.with_context(|| format!("importing {}", archive.display()))? {
            println!("imported {name}");
        }
        return Ok(());
    }
    let Some(kubeconfig) = args.kubeconfig.clone() else { bail!("--kubeconfig (or KUBECONFIG) is required") };
    let _ = rustls::crypto::ring::default_provider().install_default();

    std::fs::create_dir_all(&args.root_dir).with_context(|| format!("creating {}", args.root_dir.display()))?;
    let machine = Machine::probe(&args.root_dir, args.node_ip).context("reading machine facts")?;
    let name = args.node_name.clone().unwrap_or_else(|| machine.hostname.clone());
    let mut config = Config::new(name, args.root_dir.clone());
    config.pod_cidr = args.pod_cidr.clone();
    config.zone = args.zone.clone();
    config.max_pods = args.max_pods;
    config.reserved_cpu_millis = args.reserved_cpu_millis;
    config.reserved_memory_bytes = args.reserved_memory_mib << 20;
    config.lease_renew_interval = Duration::from_secs(args.lease_renew_seconds.max(1));
    config.status_report_interval = Duration::from_secs(args.status_report_seconds.max(1));
    for kv in &args.node_labels {
        let Some((k, v)) = kv.split_once('=') else { bail!("--node-labels: {kv:?} is not key=value") };
        config.labels.insert(k.to_string(), v.to_string());
    }

    let kc = kube::config::Kubeconfig::read_from(&kubeconfig)
        .with_context(|| format!("reading kubeconfig {}", kubeconfig.display()))?;
    let kconfig = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .context("loading kubeconfig")?;
    let client = kube::Client::try_from(kconfig).context("building the API client")?;

    let nodelet = match args.runtime {
        RuntimeKind::Simulated => {
            let sim = SimulatedConfig {
                start_delay: Duration::from_millis(args.simulated_start_delay_ms),
                ..SimulatedConfig::default()
            };
            Nodelet::simulated(client, config, machine.ip, sim)
        }
        RuntimeKind::Containerd => {
            let Some(pod_cidr) = config.pod_cidr.clone() else {
                bail!("--pod-cidr is required with --runtime containerd")
            };
            let ctrd = Containerd::connect(&args.containerd_address, containerd::NAMESPACE).await?;
            let rc = ContainerdConfig {
                root_dir: args.root_dir.clone(),
                cni: CniConfig {
                    bin_dir: args.cni_bin_dir.clone(),
                    bridge: args.cni_bridge.clone(),
                    pod_cidr,
                    ipam_dir: args.root_dir.join("cni"),
                },
                host_ip: machine.ip.to_string(),
                backoff_start: BACKOFF_START,
            };
            Nodelet::new(
                client.clone(),
                config,
                machine,
                Arc::new(ContainerdRuntime::new(ctrd, rc).with_client(client)),
            )
        }
    };
    tokio::select! {
        r = nodelet.run() => r.context("nodelet")?,
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; stopping"),
    }
    Ok(())
}
