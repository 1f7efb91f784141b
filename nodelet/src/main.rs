//! `ferry-nodelet`: parse flags, run the node agent (or a subcommand).

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use ferry_nodelet::proxy::{self, Proxy, ProxyConfig};
use ferry_nodelet::runtime::cni::CniConfig;
use ferry_nodelet::runtime::containerd::{self, Containerd};
use ferry_nodelet::runtime::pods_containerd::{ContainerdConfig, ContainerdRuntime, BACKOFF_START};
use ferry_nodelet::runtime::pull::RegistryConfig;
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
    /// containerd namespace holding this node's images and containers (one per node when
    /// several nodelets share a containerd).
    #[arg(long, global = true, default_value = containerd::NAMESPACE)]
    containerd_namespace: String,
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
    /// Pull a registry's images from a mirror: REGISTRY=MIRROR (docker.io=127.0.0.1:5000); repeatable.
    #[arg(long = "registry-mirror")]
    registry_mirrors: Vec<String>,
    /// A registry (or mirror) host[:port] spoken to over plain HTTP; repeatable.
    #[arg(long = "insecure-registry")]
    insecure_registries: Vec<String>,
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
    /// With the simulated runtime: host this many nodes, named `<node-name>-<i>` (like kwok).
    #[arg(long)]
    simulated_nodes: Option<usize>,
    /// Serving certificate (PEM) of the HTTPS endpoint for logs and exec; without it no
    /// endpoint is served. `ferry-apiserver node-credentials` writes one (nodelet.crt).
    #[arg(long, requires_all = ["tls_private_key_file", "client_ca_file"])]
    tls_cert_file: Option<PathBuf>,
    /// Private key (PEM) of the serving certificate.
    #[arg(long)]
    tls_private_key_file: Option<PathBuf>,
    /// CA (PEM) that signed the API server's client certificate (the cluster CA).
    #[arg(long)]
    client_ca_file: Option<PathBuf>,
    /// Address of the HTTPS endpoint.
    #[arg(long, default_value = "0.0.0.0")]
    address: IpAddr,
    /// Port of the HTTPS endpoint.
    #[arg(long, default_value_t = ferry_nodelet::server::DEFAULT_PORT)]
    port: u16,
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
    /// Stop and remove every pod this node runs (containers, tasks, snapshots, netns, CNI
    /// addresses, cgroups) and the node's bridge; what `ferry down` runs for each node.
    Teardown {
        /// Seconds each container gets between SIGTERM and SIGKILL.
        #[arg(long, default_value_t = 5)]
        grace_seconds: u64,
    },
    /// (Run by containerd's shim, not by hand.) Copy a container's stdout and stderr (fds 3
    /// and 4) into FILE in CRI log format.
    #[command(hide = true)]
    LogDriver {
        /// The log file.
        file: PathBuf,
    },
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
    if let Some(Cmd::LogDriver { file }) = &args.command {
        return match ferry_nodelet::server::logs::run_driver(file) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ferry-nodelet log-driver: {}: {e}", file.display());
                std::process::ExitCode::FAILURE
            }
        };
    }
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
    match &args.command {
        Some(Cmd::Image(ImageCmd::Import { archive })) => {
            let c = Containerd::connect(&args.containerd_address, &args.containerd_namespace).await?;
            for name in c.import_archive(archive).await.with_context(|| format!("importing {}", archive.display()))? {
                println!("imported {name}");
            }
            return Ok(());
        }
        Some(Cmd::Teardown { grace_seconds }) => return teardown(&args, Duration::from_secs(*grace_seconds)).await,
        Some(Cmd::LogDriver { .. } | Cmd::Proxy(_)) | None => {}
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
    // Three missed renewals (or a clock jump as long): resync pods before heartbeating again.
    config.silence_threshold = config.lease_renew_interval * 3;
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
    let server = match (&args.tls_cert_file, &args.tls_private_key_file, &args.client_ca_file) {
        (Some(cert), Some(key), Some(ca)) => {
            let read = |p: &PathBuf| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
            Some(ferry_nodelet::server::ServerConfig {
                addr: std::net::SocketAddr::new(args.address, args.port),
                cert_pem: read(cert)?,
                key_pem: read(key)?,
                client_ca_pem: read(ca)?,
                allowed_users: vec![ferry_nodelet::server::APISERVER_CLIENT_USER.to_string()],
            })
        }
        _ => None,
    };

    let nodelet = match args.runtime {
        RuntimeKind::Simulated => {
            let sim = SimulatedConfig {
                start_delay: Duration::from_millis(args.simulated_start_delay_ms),
                ..SimulatedConfig::default()
            };
            if args.proxy_mode == ProxyMode::Nftables {
                bail!("--proxy-mode nftables needs --runtime containerd");
            }
            if let Some(count) = args.simulated_nodes {
                return run_many_simulated(&client, &config, count, sim).await;
            }
            Nodelet::simulated(client, config, machine.ip, sim)
        }
        RuntimeKind::Containerd => {
            let mut registries = RegistryConfig::default();
            for m in &args.registry_mirrors {
                registries.add_mirror(m).map_err(anyhow::Error::msg)?;
            }
            registries.insecure = args.insecure_registries.clone();
            // The Node's spec.podCIDR (set by whoever allocates CIDRs) wins over the flag.
            let pod_cidr = ferry_nodelet::node::pod_cidr(&client, &config.node_name, config.pod_cidr.as_deref())
                .await
                .context("finding the node's pod CIDR")?;
            config.pod_cidr = Some(pod_cidr.clone());
            let pod_net: ipnet::Ipv4Net =
                pod_cidr.parse().with_context(|| format!("pod CIDR {pod_cidr:?} is not an IPv4 CIDR"))?;
            let ctrd = Containerd::connect(&args.containerd_address, &args.containerd_namespace).await?;
            let rc = runtime_config(&args, pod_cidr, machine.ip);
            let mut runtime = ContainerdRuntime::new(ctrd, rc)
                .with_client(client.clone())
                .with_registries(registries)
                .with_log_driver(std::env::current_exe().context("locating the ferry-nodelet binary")?);
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
    let nodelet = match server {
        Some(s) => nodelet.with_server(s),
        None => nodelet,
    };
    tokio::select! {
        r = nodelet.run() => r.context("nodelet")?,
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; stopping"),
    }
    Ok(())
}

fn runtime_config(args: &Args, pod_cidr: String, host_ip: IpAddr) -> ContainerdConfig {
    ContainerdConfig {
        root_dir: args.root_dir.clone(),
        cni: CniConfig {
            bin_dir: args.cni_bin_dir.clone(),
            bridge: args.cni_bridge.clone(),
            pod_cidr,
            ipam_dir: args.root_dir.join("cni"),
        },
        host_ip: host_ip.to_string(),
        backoff_start: BACKOFF_START,
    }
}

/// `ferry-nodelet teardown`: remove every pod of this node from the machine, then its bridge.
async fn teardown(args: &Args, grace: Duration) -> anyhow::Result<()> {
    use ferry_nodelet::runtime::Runtime;
    let ctrd = Containerd::connect(&args.containerd_address, &args.containerd_namespace).await?;
    // CNI DEL only needs the network's name and IPAM directory; the range is not consulted.
    let pod_cidr = args.pod_cidr.clone().unwrap_or_else(|| "10.0.0.0/24".to_owned());
    let runtime = ContainerdRuntime::new(ctrd, runtime_config(args, pod_cidr, IpAddr::from([127, 0, 0, 1])));
    let uids = runtime.list_pods().await.context("listing pods")?;
    let results = futures::future::join_all(uids.iter().map(|uid| runtime.kill_pod(uid, grace))).await;
    let mut failed = 0;
    for (uid, r) in uids.iter().zip(results) {
        if let Err(e) = r {
            eprintln!("ferry-nodelet: removing pod {uid}: {e}");
            failed += 1;
        }
    }
    let link = std::process::Command::new("ip").args(["link", "delete", &args.cni_bridge]).output();
    if let Ok(out) = link {
        let err = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() && !err.contains("Cannot find device") {
            eprintln!("ferry-nodelet: deleting bridge {}: {}", args.cni_bridge, err.trim());
            failed += 1;
        }
    }
    println!("removed {} pod(s)", uids.len() - failed.min(uids.len()));
    if failed > 0 {
        bail!("{failed} item(s) could not be removed");
    }
    Ok(())
}

/// `--runtime simulated --simulated-nodes N`: N simulated nodes in this process until interrupted.
async fn run_many_simulated(
    client: &kube::Client,
    template: &Config,
    count: usize,
    sim: SimulatedConfig,
) -> anyhow::Result<()> {
    if count == 0 {
        bail!("--simulated-nodes must be at least 1");
    }
    let nodes = ferry_nodelet::run_simulated_nodes(
        client,
        &template.node_name,
        count,
        |c| {
            c.labels.extend(template.labels.clone());
            c.zone.clone_from(&template.zone);
            c.max_pods = template.max_pods;
            c.lease_renew_interval = template.lease_renew_interval;
            c.status_report_interval = template.status_report_interval;
        },
        sim,
    );
    let first_failure = futures::future::select_all(nodes);
    tokio::select! {
        (r, i, _) = first_failure => match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(anyhow::Error::new(e).context(format!("simulated node {i}"))),
            Err(e) => Err(anyhow::Error::new(e).context(format!("simulated node {i}"))),
        },
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}
