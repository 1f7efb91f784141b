//! `ferry-nodelet`: parse flags, run the node agent (or a subcommand).

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use ferry_nodelet::proxy::{self, Proxy, ProxyConfig};
use ferry_nodelet::runtime::cni::CniConfig;
use ferry_nodelet::runtime::containerd::{self, Containerd};
use ferry_nodelet::runtime::pods_containerd::{ContainerdConfig, ContainerdRuntime, BACKOFF_START};
use ferry_nodelet::runtime::resolv::ClusterDns;
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
    /// The cluster DNS server(s) pods use (ClusterFirst), e.g. the kube-dns Service's ClusterIP.
    #[arg(long, value_delimiter = ',')]
    cluster_dns: Vec<std::net::Ipv4Addr>,
    /// The cluster domain in pods' DNS search path.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// Service proxy: program nftables (needs the containerd runtime), or none.
    #[arg(long, value_enum, default_value_t = ProxyMode::None)]
    proxy_mode: ProxyMode,
    /// The nftables table the service proxy owns.
    #[arg(long, global = true, default_value = "ferry")]
    proxy_table: String,
    /// Pod address ranges; service traffic from outside them is masqueraded (default: the pod CIDR).
    #[arg(long, value_delimiter = ',')]
    cluster_cidr: Vec<ipnet::Ipv4Net>,
    /// Addresses NodePorts answer on (default: every local address but loopback).
    #[arg(long, value_delimiter = ',')]
    nodeport_addresses: Vec<ipnet::Ipv4Net>,
    /// Masquerade all service traffic (for hosts without br_netfilter).
    #[arg(long)]
    masquerade_all: bool,
    /// Start delay of pods on the simulated runtime, in milliseconds.
    #[arg(long, default_value_t = 0)]
    simulated_start_delay_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ProxyMode {
    Nftables,
    None,
}

#[derive(clap::Subcommand, Debug)]
enum Cmd {
    /// Work with images in containerd.
    #[command(subcommand)]
    Image(ImageCmd),
    /// The service proxy.
    #[command(subcommand)]
    Proxy(ProxyCmd),
}

#[derive(clap::Subcommand, Debug)]
enum ProxyCmd {
    /// Remove every rule the service proxy installed (its nftables table).
    Cleanup,
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
    if let Some(Cmd::Proxy(ProxyCmd::Cleanup)) = &args.command {
        proxy::cleanup(&proxy::Nft::default(), &args.proxy_table)
            .await
            .with_context(|| format!("removing nftables table ip {}", args.proxy_table))?;
        println!("removed the service proxy's rules (table ip {})", args.proxy_table);
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
            if args.proxy_mode == ProxyMode::Nftables {
                bail!("--proxy-mode nftables needs --runtime containerd");
            }
            Nodelet::simulated(client, config, machine.ip, sim)
        }
        RuntimeKind::Containerd => {
            let Some(pod_cidr) = config.pod_cidr.clone() else {
                bail!("--pod-cidr is required with --runtime containerd")
            };
            let pod_net: ipnet::Ipv4Net =
                pod_cidr.parse().with_context(|| format!("--pod-cidr {pod_cidr:?} is not an IPv4 CIDR"))?;
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
            let mut runtime = ContainerdRuntime::new(ctrd, rc).with_client(client.clone());
            if !args.cluster_dns.is_empty() {
                runtime = runtime.with_cluster_dns(ClusterDns {
                    servers: args.cluster_dns.iter().map(ToString::to_string).collect(),
                    domain: args.cluster_domain.clone(),
                });
            }
            let nodelet = Nodelet::new(client, config, machine, Arc::new(runtime));
            if args.proxy_mode == ProxyMode::Nftables {
                let mut pc = ProxyConfig::new(args.proxy_table.clone());
                pc.cluster_cidrs = if args.cluster_cidr.is_empty() { vec![pod_net] } else { args.cluster_cidr.clone() };
                pc.nodeport_addresses = args.nodeport_addresses.clone();
                pc.masquerade_all = args.masquerade_all;
                nodelet.with_proxy(Proxy::new(pc, Arc::new(proxy::Nft::default())))
            } else {
                nodelet
            }
        }
    };
    tokio::select! {
        r = nodelet.run() => r.context("nodelet")?,
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; stopping"),
    }
    Ok(())
}
