//! `ferry up` / `ferry down`: a whole single-machine cluster under one data directory.
//!
//! `ferry up` supervises the components as child processes in dependency order, each started
//! once the one before is ready: a private etcd; a private containerd (config, root under
//! `<data>/containerd`, socket and state under `/run/ferry/<id>`); `ferry-apiserver`; then, when
//! installed next to `ferry`, `ferry-dns`, `ferry-controllers`, `ferry-scheduler`; and one
//! `ferry-nodelet` per node (`--nodes`, each with its own name, containerd namespace, pod /24 of
//! `--cluster-cidr` and bridge) plus one nodelet hosting `--simulated-nodes`. A component that
//! exits is restarted with exponential backoff (1 s doubling to 30 s, reset after a minute of
//! uptime). Logs go to `<data>/logs/<name>.log`; `<data>/ferry.pid` names the supervisor;
//! `<data>/nodes.json` lists the containerd nodes (for `ferry image import`). With `--detach` the
//! supervisor runs in the background in its own process group and `ferry up` returns once the
//! API is ready and every node is Ready.
//!
//! Node 1's nodelet also runs the service proxy (nftables table `ferry-<id>`; one proxy per
//! kernel is enough, however many nodes share it). `ferry-dns` answers on 127.0.0.1 and, for
//! pods, on the cluster DNS address (see [`dns`]), which the nodelets put in pods' resolv.conf.
//!
//! `ferry down` stops the supervisor, which stops its children last started first and, before
//! containerd, removes the proxy's table and runs `ferry-nodelet teardown` for each node (pods'
//! containers, netns, CNI addresses, the bridge); then anything left (a supervisor that was
//! killed) is swept. A start that fails half way, or is cancelled by SIGTERM, stops what did
//! start the same way. The same data dir brings the same cluster back with its objects.

mod dns;

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};
use tokio::sync::watch;

/// Where and how the cluster runs.
#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    /// Data directory (etcd data, certificates, kubeconfig, logs).
    #[arg(long, env = "FERRY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// HTTPS port of the API server.
    #[arg(long, default_value_t = 6443)]
    pub api_port: u16,
    /// etcd client port.
    #[arg(long, default_value_t = 2479)]
    pub etcd_port: u16,
    /// etcd peer port (default: the client port + 1).
    #[arg(long)]
    pub etcd_peer_port: Option<u16>,
    /// Port of the cluster DNS server on 127.0.0.1 (UDP and TCP).
    #[arg(long, default_value_t = 10053)]
    pub dns_port: u16,
    /// Directory with the Ferry daemons (default: next to `ferry`, then PATH).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Return once the cluster is ready, leaving it running in the background.
    #[arg(long)]
    pub detach: bool,
    /// Also merge the cluster into ~/.kube/config (or $KUBECONFIG) as context `ferry`, made current.
    #[arg(long)]
    pub write_kubeconfig: bool,
    /// Nodes that run pods on containerd (one nodelet each, sharing one containerd; needs root).
    #[arg(long, default_value_t = 1)]
    pub nodes: usize,
    /// Simulated nodes (no containers, like kwok), hosted by one nodelet process.
    #[arg(long, default_value_t = 0)]
    pub simulated_nodes: usize,
    /// The nodes' address (InternalIP, where the API server reaches their logs/exec endpoint).
    /// Loopback by default: a local cluster exposes nothing on the network.
    #[arg(long, default_value = "127.0.0.1")]
    pub node_ip: std::net::IpAddr,
    /// Port of node 1's logs/exec endpoint; node i uses this + i - 1.
    #[arg(long, default_value_t = 10250)]
    pub nodelet_port: u16,
    /// Pod address range: node i gets the i-th /24 in it (the first /24 is left unused).
    #[arg(long, default_value = "10.244.0.0/16")]
    pub cluster_cidr: String,
    /// Service ClusterIP range; its 10th address is the cluster DNS (Service kube-system/kube-dns).
    /// Two clusters on one machine need distinct ranges.
    #[arg(long, default_value = "10.96.0.0/12")]
    pub service_cidr: String,
    /// The cluster's DNS domain.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Seconds to wait for readiness.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    /// Internal: run as the background supervisor of `--detach`.
    #[arg(long, hide = true)]
    pub supervise: bool,
}

/// The data directory: `--data-dir`, else `$XDG_DATA_HOME/ferry`, else `~/.local/share/ferry`.
pub fn data_dir(arg: Option<&Path>) -> Result<PathBuf> {
    if let Some(d) = arg {
        return Ok(d.to_path_buf());
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return Ok(PathBuf::from(x).join("ferry"));
    }
    let home = std::env::var_os("HOME").context("HOME is not set; pass --data-dir")?;
    Ok(PathBuf::from(home).join(".local/share/ferry"))
}

fn pid_file(data: &Path) -> PathBuf {
    data.join("ferry.pid")
}

/// The admin kubeconfig the API server writes into the data dir.
pub fn kubeconfig(data: &Path) -> PathBuf {
    data.join("admin.kubeconfig")
}

/// The supervisor's pid, if one is running from this data dir (a stale pid file is removed).
fn running_pid(data: &Path) -> Option<Pid> {
    let text = std::fs::read_to_string(pid_file(data)).ok()?;
    let pid = Pid::from_raw(text.trim().parse().ok()?);
    if kill(pid, None).is_ok() {
        Some(pid)
    } else {
        let _ = std::fs::remove_file(pid_file(data));
        None
    }
}

/// Find a program: in `--bin-dir`, next to this executable, then on PATH.
fn find(bin_dir: Option<&Path>, name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    dirs.extend(bin_dir.map(Path::to_path_buf));
    if let Some(d) = std::env::current_exe().ok().and_then(|p| p.parent().map(Path::to_path_buf)) {
        dirs.push(d);
    }
    dirs.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()));
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// One supervised process.
#[derive(Debug, Clone)]
struct Component {
    name: &'static str,
    program: PathBuf,
    args: Vec<OsString>,
}

fn args(list: &[&dyn AsRef<std::ffi::OsStr>]) -> Vec<OsString> {
    list.iter().map(|a| a.as_ref().to_os_string()).collect()
}

/// `ferry up`.
pub async fn up(a: UpArgs) -> Result<()> {
    let data = data_dir(a.data_dir.as_deref())?;
    std::fs::create_dir_all(data.join("logs")).with_context(|| format!("creating {}", data.display()))?;
    if !a.supervise {
        if let Some(pid) = running_pid(&data) {
            bail!("a cluster is already running from {} (pid {pid}); run `ferry down` first", data.display());
        }
    }
    node_subnets(&a.cluster_cidr, a.nodes)?;
    dns::address(&a.service_cidr)?;
    if a.nodes > 0 && !nix::unistd::geteuid().is_root() {
        bail!(
            "running pods needs root (network namespaces, CNI, containerd); run as root, \
             or pass --nodes 0 (with --simulated-nodes N for a cluster without containers)"
        );
    }
    if a.detach {
        return detach(&a, &data).await;
    }
    supervise(&a, &data).await
}

/// The /24 pod subnets of `count` nodes inside `cidr` (an IPv4 network of at most /23): the
/// first /24 stays unused, node i (1-based) gets the i-th.
pub fn node_subnets(cidr: &str, count: usize) -> Result<Vec<String>> {
    let net: ipnet::Ipv4Net = cidr
        .parse()
        .map_err(|_| anyhow::anyhow!("--cluster-cidr {cidr:?} is not an IPv4 network like 10.244.0.0/16"))?;
    let prefix = u32::from(net.prefix_len());
    if !(8..=23).contains(&prefix) {
        bail!("--cluster-cidr {cidr:?}: the prefix must be between /8 and /23 (each node takes a /24)");
    }
    let base = u32::from(net.network());
    let available = (1usize << (24 - prefix)) - 1;
    if count > available {
        bail!("--cluster-cidr {cidr:?} has room for {available} nodes, not {count}");
    }
    Ok((1..=count).map(|i| format!("{}/24", std::net::Ipv4Addr::from(base + ((i as u32) << 8)))).collect())
}

/// A short id of the data directory, so that two clusters on one machine get distinct bridge
/// names and runtime directories (FNV-1a of the canonical path).
pub fn cluster_id(data: &Path) -> String {
    let path = std::fs::canonicalize(data).unwrap_or_else(|_| data.to_path_buf());
    let hash = path
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(*b)).wrapping_mul(0x0100_0193));
    format!("{:06x}", hash & 0xff_ffff)
}

/// One node of the cluster that runs pods on the shared containerd.
#[derive(Debug, Clone)]
struct NodeSpec {
    name: String,
    namespace: String,
    bridge: String,
    pod_cidr: String,
    root: PathBuf,
    port: u16,
    /// The nftables table of the service proxy: node 1 runs the machine's one proxy.
    proxy_table: Option<String>,
}

fn node_specs(a: &UpArgs, data: &Path) -> Result<Vec<NodeSpec>> {
    let id = cluster_id(data);
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "ferry".to_owned())
        .to_lowercase();
    let subnets = node_subnets(&a.cluster_cidr, a.nodes)?;
    Ok(subnets
        .into_iter()
        .enumerate()
        .map(|(i, pod_cidr)| {
            let n = i + 1;
            let name = if n == 1 { host.clone() } else { format!("{host}-{n}") };
            NodeSpec {
                namespace: format!("ferry-{n}"),
                bridge: format!("fy{id}n{n}"),
                root: data.join("nodes").join(&name),
                port: a.nodelet_port.saturating_add(i as u16),
                proxy_table: (i == 0).then(|| proxy_table(&id)),
                name,
                pod_cidr,
            }
        })
        .collect())
}

/// `<data>/nodes.json`: the containerd nodes of the running cluster, for `ferry image import`.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct NodeRecord {
    name: String,
    containerd_address: PathBuf,
    containerd_namespace: String,
}

fn write_record(data: &Path, nodes: &[NodeSpec]) -> Result<()> {
    let socket = containerd_socket(data);
    let record: Vec<NodeRecord> = nodes
        .iter()
        .map(|n| NodeRecord {
            name: n.name.clone(),
            containerd_address: socket.clone(),
            containerd_namespace: n.namespace.clone(),
        })
        .collect();
    std::fs::write(data.join("nodes.json"), serde_json::to_vec_pretty(&record)?).context("writing nodes.json")
}

/// `ferry image import ARCHIVE`: load an OCI or `docker save` archive into the containerd
/// namespace of every node of the local cluster (through `ferry-nodelet image import`).
pub async fn image_import(data_arg: Option<&Path>, bin_dir: Option<&Path>, archive: &Path) -> Result<()> {
    let data = data_dir(data_arg)?;
    if running_pid(&data).is_none() {
        bail!("no cluster is running from {}; start one with `ferry up`", data.display());
    }
    if !archive.is_file() {
        bail!("{}: no such file", archive.display());
    }
    let text = std::fs::read_to_string(data.join("nodes.json")).unwrap_or_else(|_| "[]".to_owned());
    let nodes: Vec<NodeRecord> = serde_json::from_str(&text).context("reading nodes.json")?;
    if nodes.is_empty() {
        bail!("the cluster in {} has no containerd nodes (started with --nodes 0)", data.display());
    }
    let nodelet = find(bin_dir, "ferry-nodelet").context("ferry-nodelet not found next to ferry or on PATH")?;
    for n in &nodes {
        let out = Command::new(&nodelet)
            .arg("--containerd-address")
            .arg(&n.containerd_address)
            .arg("--containerd-namespace")
            .arg(&n.containerd_namespace)
            .args(["image", "import"])
            .arg(archive)
            .output()
            .await
            .context("running ferry-nodelet image import")?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            let reason = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("failed");
            bail!("node {}: {}", n.name, reason.trim_start_matches("ferry-nodelet: "));
        }
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            println!("{}: {line}", n.name);
        }
    }
    Ok(())
}

/// The service proxy's nftables table in a cluster with this id.
fn proxy_table(id: &str) -> String {
    format!("ferry-{id}")
}

/// containerd's runtime directory: short (socket paths are limited to 108 bytes) and on tmpfs.
fn containerd_run_dir(data: &Path) -> PathBuf {
    PathBuf::from("/run/ferry").join(cluster_id(data))
}

/// containerd's socket in a cluster started from `data`.
pub fn containerd_socket(data: &Path) -> PathBuf {
    containerd_run_dir(data).join("containerd.sock")
}

/// containerd's configuration: everything under the data dir and the runtime dir, CRI off.
fn containerd_config(data: &Path) -> String {
    let run = containerd_run_dir(data);
    let q = |p: PathBuf| format!("{:?}", p.display().to_string());
    format!(
        "version = 2\nroot = {}\nstate = {}\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
         [grpc]\n  address = {}\n[ttrpc]\n  address = {}\n[debug]\n  address = \"\"\n  level = \"warn\"\n\
         [metrics]\n  address = \"\"\n[plugins.\"io.containerd.internal.v1.opt\"]\n  path = {}\n",
        q(data.join("containerd/root")),
        q(run.join("state")),
        q(run.join("containerd.sock")),
        q(run.join("containerd.sock.ttrpc")),
        q(data.join("containerd/opt")),
    )
}

/// Start the supervisor in the background and wait until the API is ready.
async fn detach(a: &UpArgs, data: &Path) -> Result<()> {
    let exe = std::env::current_exe().context("locating the ferry executable")?;
    let log = std::fs::File::create(data.join("logs/ferry.log")).context("creating logs/ferry.log")?;
    let mut cmd = Command::new(exe);
    cmd.arg("up")
        .arg("--supervise")
        .arg("--data-dir")
        .arg(data)
        .args(["--api-port", &a.api_port.to_string()])
        .args(["--etcd-port", &a.etcd_port.to_string()])
        .args(["--etcd-peer-port", &peer_port(a).to_string()])
        .args(["--dns-port", &a.dns_port.to_string()])
        .args(["--nodes", &a.nodes.to_string()])
        .args(["--simulated-nodes", &a.simulated_nodes.to_string()])
        .args(["--cluster-cidr", &a.cluster_cidr])
        .args(["--service-cidr", &a.service_cidr])
        .args(["--cluster-domain", &a.cluster_domain])
        .args(["--node-ip", &a.node_ip.to_string()])
        .args(["--nodelet-port", &a.nodelet_port.to_string()])
        .args(["--timeout", &a.timeout.to_string()]);
    if let Some(b) = &a.bin_dir {
        cmd.arg("--bin-dir").arg(b);
    }
    cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log).process_group(0);
    let mut child = cmd.spawn().context("starting the background supervisor")?;
    let deadline = Instant::now() + Duration::from_secs(a.timeout);
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("the cluster did not start ({status}); see {}", data.join("logs/ferry.log").display());
        }
        if std::fs::read_to_string(data.join("ready")).is_ok_and(|s| s.trim() == child.id().unwrap_or(0).to_string()) {
            break;
        }
        if Instant::now() > deadline {
            stop_supervisor(&mut child, data).await;
            bail!("the cluster was not ready within {} s; see {}", a.timeout, data.join("logs").display());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    print_next_steps(data, a);
    Ok(())
}

/// Stop a supervisor that did not get ready: on SIGTERM it stops what it started, in order
/// (pods removed before containerd); one that hangs is killed with its process group and swept.
async fn stop_supervisor(child: &mut Child, data: &Path) {
    let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) else { return };
    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    if tokio::time::timeout(Duration::from_secs(90), child.wait()).await.is_err() {
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        sweep(data);
    }
}

fn peer_port(a: &UpArgs) -> u16 {
    a.etcd_peer_port.unwrap_or(a.etcd_port.wrapping_add(1))
}

fn print_next_steps(data: &Path, a: &UpArgs) {
    let kc = kubeconfig(data);
    if a.write_kubeconfig {
        match crate::config::file(None).and_then(|target| Ok((crate::config::merge_into(&target, &kc)?, target))) {
            Ok((context, target)) => println!("Context {context:?} written to {} and made current.", target.display()),
            Err(e) => eprintln!("warning: could not write the kubeconfig: {e:#}"),
        }
    }
    let pods_dns = match dns::address(&a.service_cidr) {
        Ok(ip) if a.nodes > 0 => format!(" (pods: {ip})"),
        _ => String::new(),
    };
    println!(
        "Ferry is up: API server https://127.0.0.1:{}, cluster DNS 127.0.0.1:{}{pods_dns}",
        a.api_port, a.dns_port
    );
    println!("  export KUBECONFIG={}", kc.display());
    println!("  kubectl get namespaces");
    println!("Logs: {}   Stop: ferry down{}", data.join("logs").display(), data_flag(a));
}

fn data_flag(a: &UpArgs) -> String {
    a.data_dir.as_ref().map(|d| format!(" --data-dir {}", d.display())).unwrap_or_default()
}

/// Run the components until SIGINT/SIGTERM, then stop them.
async fn supervise(a: &UpArgs, data: &Path) -> Result<()> {
    std::fs::write(pid_file(data), std::process::id().to_string()).context("writing the pid file")?;
    let _ = std::fs::remove_file(data.join("ready"));
    let result = run_components(a, data).await;
    let _ = std::fs::remove_file(data.join("ready"));
    let _ = std::fs::remove_file(pid_file(data));
    result
}

async fn run_components(a: &UpArgs, data: &Path) -> Result<()> {
    let mut running: Vec<Supervised> = Vec::new();
    // Commands that remove the nodes' pods from the machine, run before containerd stops.
    let mut teardowns: Vec<Component> = Vec::new();
    // SIGTERM / Ctrl-C while starting (`ferry down`, or `--detach` giving up) stops too.
    let started = tokio::select! {
        r = start_components(a, data, &mut running, &mut teardowns) => r,
        () = shutdown_signal() => Err(anyhow::anyhow!("stopped while starting")),
    };
    let started = started.and_then(|()| {
        std::fs::write(data.join("ready"), std::process::id().to_string()).context("writing the ready marker")
    });
    if started.is_ok() {
        if !a.supervise {
            print_next_steps(data, a);
        }
        let names: Vec<&str> = running.iter().map(|r| r.name).collect();
        eprintln!("ferry: running {}", names.join(", "));
        shutdown_signal().await;
    }
    // Also when starting failed half way: what did start must not outlive the supervisor.
    eprintln!("ferry: stopping");
    // Last started, first stopped; the nodes' pods are removed while containerd still runs.
    for r in running.into_iter().rev() {
        if r.name == "containerd" {
            for t in &teardowns {
                run_teardown(t, data).await;
            }
            let _ = std::fs::remove_dir_all(data.join("nodes"));
        }
        let _ = r.stop.send(true);
        let _ = r.task.await;
    }
    if a.nodes > 0 {
        let _ = std::fs::remove_dir_all(containerd_run_dir(data));
    }
    dns::delete_link(&dns::link(&cluster_id(data)));
    started
}

/// Start the components in dependency order, each once the one before is ready, into `running`.
async fn start_components(
    a: &UpArgs,
    data: &Path,
    running: &mut Vec<Supervised>,
    teardowns: &mut Vec<Component>,
) -> Result<()> {
    let bin = a.bin_dir.as_deref();
    let etcd = find(bin, "etcd").context("etcd is not installed (apt install etcd-server)")?;
    let apiserver = find(bin, "ferry-apiserver").context("ferry-apiserver not found next to ferry or on PATH")?;
    let kc = kubeconfig(data);

    let etcd_url = format!("http://127.0.0.1:{}", a.etcd_port);
    let peer_url = format!("http://127.0.0.1:{}", peer_port(a));
    let etcd_c = Component {
        name: "etcd",
        program: etcd,
        args: args(&[
            &"--name",
            &"ferry",
            &"--data-dir",
            &data.join("etcd"),
            &"--listen-client-urls",
            &etcd_url,
            &"--advertise-client-urls",
            &etcd_url,
            &"--listen-peer-urls",
            &peer_url,
            &"--initial-advertise-peer-urls",
            &peer_url,
            &"--initial-cluster",
            &format!("ferry={peer_url}"),
            &"--log-level",
            &"warn",
        ]),
    };
    running.push(start(etcd_c, data));
    wait_etcd(&etcd_url, a.timeout).await?;

    let nodes = node_specs(a, data)?;
    write_record(data, &nodes)?;
    if !nodes.is_empty() {
        let containerd = find(bin, "containerd").context("containerd is not installed (apt install containerd)")?;
        std::fs::create_dir_all(containerd_run_dir(data)).context("creating /run/ferry")?;
        std::fs::create_dir_all(data.join("containerd")).context("creating the containerd dir")?;
        let config = data.join("containerd/config.toml");
        std::fs::write(&config, containerd_config(data)).context("writing containerd's config")?;
        let c = Component { name: "containerd", program: containerd, args: args(&[&"--config", &config]) };
        running.push(start(c, data));
        wait_socket(&containerd_socket(data), a.timeout).await?;
    }

    let api_c = Component {
        name: "apiserver",
        program: apiserver,
        args: args(&[
            &"--etcd-servers",
            &etcd_url,
            &"--data-dir",
            &data,
            &"--secure-port",
            &a.api_port.to_string(),
            &"--service-cluster-ip-range",
            &a.service_cidr,
        ]),
    };
    running.push(start(api_c, data));
    wait_api(&kc, a.timeout).await?;

    // Cluster DNS: on 127.0.0.1 for the host and, when there are pods to serve, on the cluster
    // DNS address (on a link of this cluster's) for them.
    let dns_link = dns::link(&cluster_id(data));
    let mut cluster_dns: Option<std::net::Ipv4Addr> = None;
    if let Some(program) = find(bin, "ferry-dns") {
        let mut listen = format!("127.0.0.1:{}", a.dns_port);
        if !nodes.is_empty() {
            let ip = dns::address(&a.service_cidr)?;
            dns::add_link(&dns_link, ip)?;
            let client = crate::client::from_kubeconfig(&kc, None).await?;
            dns::publish(client, ip).await?;
            listen.push_str(&format!(",{ip}:53"));
            cluster_dns = Some(ip);
        }
        let c = Component {
            name: "dns",
            program,
            args: args(&[&"--kubeconfig", &kc, &"--listen", &listen, &"--cluster-domain", &a.cluster_domain]),
        };
        running.push(start(c, data));
    }
    for (name, program) in [("controllers", "ferry-controllers"), ("scheduler", "ferry-scheduler")] {
        if let Some(p) = find(bin, program) {
            let c = Component { name, program: p, args: args(&[&"--kubeconfig", &kc]) };
            running.push(start(c, data));
        }
    }
    let mut expected_nodes: Vec<String> = Vec::new();
    if !nodes.is_empty() || a.simulated_nodes > 0 {
        let nodelet = find(bin, "ferry-nodelet").context("ferry-nodelet not found next to ferry or on PATH")?;
        let socket = containerd_socket(data);
        for node in &nodes {
            std::fs::create_dir_all(&node.root).with_context(|| format!("creating {}", node.root.display()))?;
            let pki = node_credentials(bin, data, node, a).await?;
            let mut c = Component {
                name: leak(format!("nodelet-{}", node.name)),
                program: nodelet.clone(),
                args: args(&[
                    &"--kubeconfig",
                    &pki.join("kubeconfig"),
                    &"--node-name",
                    &node.name,
                    &"--node-ip",
                    &a.node_ip.to_string(),
                    &"--tls-cert-file",
                    &pki.join("nodelet.crt"),
                    &"--tls-private-key-file",
                    &pki.join("nodelet.key"),
                    &"--client-ca-file",
                    &pki.join("ca.crt"),
                    &"--address",
                    &a.node_ip.to_string(),
                    &"--port",
                    &node.port.to_string(),
                ]),
            };
            c.args.extend(node_runtime_args(node, &socket));
            if let Some(ip) = cluster_dns {
                c.args.extend(args(&[&"--cluster-dns", &ip.to_string(), &"--cluster-domain", &a.cluster_domain]));
            }
            if let Some(table) = &node.proxy_table {
                c.args.extend(args(&[
                    &"--proxy-mode",
                    &"nftables",
                    &"--proxy-table",
                    table,
                    &"--cluster-cidr",
                    &a.cluster_cidr,
                ]));
                teardowns.push(Component { args: args(&[&"--proxy-table", table, &"proxy", &"cleanup"]), ..c.clone() });
            }
            teardowns.push(Component { args: teardown_args(node, &socket), ..c.clone() });
            running.push(start(c, data));
            expected_nodes.push(node.name.clone());
        }
        if a.simulated_nodes > 0 {
            let c = Component {
                name: "nodelet-simulated",
                program: nodelet,
                args: args(&[
                    &"--kubeconfig",
                    &kc,
                    &"--runtime",
                    &"simulated",
                    &"--node-name",
                    &"sim",
                    &"--root-dir",
                    &data.join("nodes/simulated"),
                    &"--simulated-nodes",
                    &a.simulated_nodes.to_string(),
                ]),
            };
            running.push(start(c, data));
            expected_nodes.extend((0..a.simulated_nodes).map(|i| format!("sim-{i}")));
        }
        wait_nodes(&kc, &expected_nodes, a.timeout).await?;
    }
    Ok(())
}

/// The node's own credentials (client certificate `system:node:<name>`, serving certificate for
/// its address), issued from the cluster CA by `ferry-apiserver node-credentials`.
async fn node_credentials(bin: Option<&Path>, data: &Path, node: &NodeSpec, a: &UpArgs) -> Result<PathBuf> {
    let apiserver = find(bin, "ferry-apiserver").context("ferry-apiserver not found next to ferry or on PATH")?;
    let out_dir = node.root.join("pki");
    let out = Command::new(apiserver)
        .arg("node-credentials")
        .arg("--data-dir")
        .arg(data)
        .args(["--node", &node.name, "--address", &a.node_ip.to_string()])
        .args(["--server", &format!("https://127.0.0.1:{}", a.api_port)])
        .arg("--out")
        .arg(&out_dir)
        .stdin(Stdio::null())
        .output()
        .await
        .context("running ferry-apiserver node-credentials")?;
    if !out.status.success() {
        bail!("issuing credentials for node {}: {}", node.name, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(out_dir)
}

/// The flags that place a node's pods: its root dir, containerd, pod CIDR and bridge.
fn node_runtime_args(node: &NodeSpec, socket: &Path) -> Vec<OsString> {
    args(&[
        &"--root-dir",
        &node.root,
        &"--containerd-address",
        &socket,
        &"--containerd-namespace",
        &node.namespace,
        &"--pod-cidr",
        &node.pod_cidr,
        &"--cni-bridge",
        &node.bridge,
    ])
}

fn teardown_args(node: &NodeSpec, socket: &Path) -> Vec<OsString> {
    let mut a = node_runtime_args(node, socket);
    a.push("teardown".into());
    a
}

/// Run one node's teardown, its output appended to the node's log.
async fn run_teardown(c: &Component, data: &Path) {
    let log_path = data.join("logs").join(format!("{}.log", c.name));
    match spawn(c, &log_path) {
        Ok(mut child) => match tokio::time::timeout(Duration::from_secs(60), child.wait()).await {
            Ok(Ok(status)) if status.success() => {}
            Ok(Ok(status)) => {
                eprintln!("ferry: removing the pods of {} failed ({status}); see {}", c.name, log_path.display())
            }
            Ok(Err(e)) => eprintln!("ferry: removing the pods of {}: {e}", c.name),
            Err(_) => {
                eprintln!("ferry: removing the pods of {} took over 60 s; giving up", c.name);
                let _ = child.kill().await;
            }
        },
        Err(e) => eprintln!("ferry: cannot remove the pods of {}: {e:#}", c.name),
    }
}

/// Component names live as long as the supervisor; a handful of node names are leaked once.
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

async fn wait_socket(path: &Path, timeout: u64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(timeout);
    while tokio::net::UnixStream::connect(path).await.is_err() {
        if Instant::now() > deadline {
            bail!("containerd did not come up at {} within {timeout} s (see logs/containerd.log)", path.display());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Wait until every node in `names` is registered and Ready.
async fn wait_nodes(kubeconfig: &Path, names: &[String], timeout: u64) -> Result<()> {
    use k8s_openapi::api::core::v1::Node;
    let client = crate::client::from_kubeconfig(kubeconfig, None).await?;
    let api: kube::Api<Node> = kube::Api::all(client);
    let deadline = Instant::now() + Duration::from_secs(timeout);
    loop {
        let ready: std::collections::BTreeSet<String> = match api.list(&Default::default()).await {
            Ok(list) => list
                .items
                .into_iter()
                .filter(|n| {
                    n.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
                })
                .filter_map(|n| n.metadata.name)
                .collect(),
            Err(_) => Default::default(),
        };
        let missing: Vec<&str> = names.iter().filter(|n| !ready.contains(*n)).map(String::as_str).collect();
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("node(s) {} not Ready within {timeout} s (see logs/nodelet-*.log)", missing.join(", "));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A component under supervision and the switch that stops it.
struct Supervised {
    name: &'static str,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

fn start(c: Component, data: &Path) -> Supervised {
    let (stop, stop_rx) = watch::channel(false);
    let name = c.name;
    Supervised { name, stop, task: supervise_one(c, data, stop_rx) }
}

/// Keep one component running until `stop` turns true, restarting it with backoff.
fn supervise_one(c: Component, data: &Path, mut stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
    let log_path = data.join("logs").join(format!("{}.log", c.name));
    tokio::spawn(async move {
        let mut backoff = Duration::from_secs(1);
        loop {
            let started = Instant::now();
            let mut child = match spawn(&c, &log_path) {
                Ok(child) => child,
                Err(e) => {
                    eprintln!("ferry: cannot start {}: {e:#}", c.name);
                    if sleep_or_stop(&mut stop, backoff).await {
                        return;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    continue;
                }
            };
            tokio::select! {
                status = child.wait() => {
                    let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
                    if started.elapsed() > Duration::from_secs(60) {
                        backoff = Duration::from_secs(1);
                    }
                    eprintln!("ferry: {} exited ({status}); restarting in {} s", c.name, backoff.as_secs());
                    if sleep_or_stop(&mut stop, backoff).await {
                        return;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
                _ = stopped(&mut stop) => {
                    terminate(&mut child, c.name).await;
                    return;
                }
            }
        }
    })
}

fn spawn(c: &Component, log_path: &Path) -> Result<Child> {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log_path)?;
    let child = Command::new(&c.program)
        .args(&c.args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("running {}", c.program.display()))?;
    Ok(child)
}

/// Sleep for `d`; true if asked to stop meanwhile.
async fn sleep_or_stop(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = stopped(stop) => true,
    }
}

/// Resolves once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await.is_ok();
}

/// SIGTERM, then SIGKILL after 10 s.
async fn terminate(child: &mut Child, name: &str) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    if tokio::time::timeout(Duration::from_secs(10), child.wait()).await.is_err() {
        eprintln!("ferry: {name} did not stop within 10 s; killing it");
        let _ = child.kill().await;
    }
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

async fn wait_etcd(url: &str, timeout: u64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(timeout);
    loop {
        let ok = match etcd_client::Client::connect([url], None).await {
            Ok(mut c) => c.status().await.is_ok(),
            Err(_) => false,
        };
        if ok {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("etcd did not become ready within {timeout} s (see logs/etcd.log)");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_api(kubeconfig: &Path, timeout: u64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(timeout);
    loop {
        if api_ready(kubeconfig).await {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the API server did not become ready within {timeout} s (see logs/apiserver.log)");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn api_ready(kubeconfig: &Path) -> bool {
    let Ok(client) = crate::client::from_kubeconfig(kubeconfig, None).await else { return false };
    let Ok(req) = http::Request::get("/readyz").body(Vec::new()) else { return false };
    client.request_text(req).await.is_ok_and(|t| t.trim() == "ok")
}

/// `ferry down`.
pub async fn down(data_arg: Option<&Path>, timeout: u64) -> Result<()> {
    let data = data_dir(data_arg)?;
    let Some(pid) = running_pid(&data) else {
        sweep(&data);
        println!("no cluster is running from {}", data.display());
        return Ok(());
    };
    kill(pid, Signal::SIGTERM).with_context(|| format!("signalling the supervisor (pid {pid})"))?;
    let deadline = Instant::now() + Duration::from_secs(timeout);
    while kill(pid, None).is_ok() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Whatever is left of the process group (a supervisor that hung, children it could not stop).
    let _ = killpg(pid, Signal::SIGKILL);
    sweep(&data);
    let _ = std::fs::remove_file(pid_file(&data));
    let _ = std::fs::remove_file(data.join("ready"));
    println!("Ferry is down ({})", data.display());
    Ok(())
}

/// Remove what a supervisor that could not finish its shutdown (killed, timed out) leaves on the
/// machine: containerd shims of this cluster and their containers, mounts under the data and
/// runtime dirs, the pods' network namespaces and the nodes' bridges. A no-op after a clean stop.
fn sweep(data: &Path) {
    let run_dir = containerd_run_dir(data);
    let run_s = run_dir.display().to_string();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let cmd = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains("containerd-shim") && cmd.contains(&run_s) {
            kill_tree(pid);
        }
    }
    // Only what this cluster's containerd mounts: never anything else under the data dir.
    let data_s = data.join("containerd").display().to_string();
    if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
        let mut points: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|m| m.starts_with(&data_s) || m.starts_with(&run_s))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            let _ = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    for node in std::fs::read_dir(data.join("nodes")).into_iter().flatten().flatten() {
        for pod in std::fs::read_dir(node.path().join("pods")).into_iter().flatten().flatten() {
            let netns = format!("ferry-{}", pod.file_name().to_string_lossy());
            let _ = std::process::Command::new("ip").args(["netns", "delete", &netns]).output();
        }
    }
    let id = cluster_id(data);
    let _ = std::process::Command::new("nft").args(["delete", "table", "ip", &proxy_table(&id)]).output();
    for link in std::fs::read_dir("/sys/class/net").into_iter().flatten().flatten() {
        let name = link.file_name().to_string_lossy().into_owned();
        if name.starts_with(&format!("fy{id}n")) || name == dns::link(&id) {
            let _ = std::process::Command::new("ip").args(["link", "delete", &name]).output();
        }
    }
    let _ = std::fs::remove_dir_all(&run_dir);
}

/// SIGKILL a process and everything under it, children first.
fn kill_tree(pid: i32) {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    for child in children.split_whitespace().filter_map(|c| c.parse::<i32>().ok()) {
        kill_tree(child);
    }
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
}
