//! Self-healing when nodes fail, end to end: two real `ferry-nodelet` processes (distinct node
//! names, containerd namespaces, pod CIDRs and bridges) on one private containerd, plus etcd, the
//! API server, `ferry-controllers` and `ferry-scheduler`, with the timings shortened by flags.
//!
//! Node `a` runs in the host's network namespace; node `b` runs inside a network namespace this
//! test creates, joined to the host by a veth pair on a private /30 the test picks. The API server
//! listens on the host end of that veth (a local address: the test's traffic never leaves the
//! machine), so both nodes, the controllers and the test reach it there. Cutting node `b` off is
//! `ip link set <host end> down`; its pods live in pod namespaces behind a bridge inside its
//! network namespace.
//!
//! Every timing assertion is made against the configured values: `--node-monitor-grace-period`
//! ([`GRACE`]) and the API server's default not-ready/unreachable `tolerationSeconds`
//! ([`TOLERATION`]). The tests run one at a time (their timings must not compete for the CPU).

use anyhow::{bail, Context, Result};
use ferry_nodelet::runtime::containerd::Containerd;
use ferry_testkit::Cluster;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{Api, ListParams, PostParams};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::time::Instant;

/// `--node-monitor-grace-period` of the controllers.
const GRACE: Duration = Duration::from_secs(5);
/// `--node-monitor-period` of the controllers.
const MONITOR: &str = "250ms";
/// The API server's default tolerationSeconds for not-ready and unreachable.
const TOLERATION: u64 = 3;
/// `--lease-renew-seconds` of the nodelets (their silence threshold is three of these).
const RENEW_SECONDS: u64 = 1;
/// The Deployment's replicas.
const REPLICAS: usize = 4;
const IMAGE: &str = "docker.io/ferry/busybox:test";

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Why this machine cannot run the test, if it cannot.
fn missing_prerequisites() -> Option<String> {
    let mut missing: Vec<String> = ["etcd", "containerd", "runc", "ip", "nsenter"]
        .into_iter()
        .filter(|b| which(b).is_none())
        .map(str::to_string)
        .collect();
    if !Path::new("/usr/lib/cni/bridge").is_file() {
        missing.push("/usr/lib/cni/bridge".into());
    }
    if !nix::unistd::geteuid().is_root() {
        missing.push("root".into());
    }
    (!missing.is_empty()).then(|| missing.join(", "))
}

/// True when the test must be skipped (outside CI only; in CI a missing prerequisite fails).
fn skip() -> bool {
    match missing_prerequisites() {
        None => false,
        Some(m) => {
            assert!(std::env::var_os("CI").is_none(), "CI must run the node failure tests as root with: {m}");
            eprintln!("skipping: the node failure tests need {m}");
            true
        }
    }
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A daemon binary of this workspace (next to ferry-nodelet); built if this test runs alone.
fn daemon(name: &str) -> Result<PathBuf> {
    let nodelet = PathBuf::from(env!("CARGO_BIN_EXE_ferry-nodelet"));
    let dir = nodelet.parent().context("ferry-nodelet has no directory")?;
    if ["ferry-controllers", "ferry-scheduler"].iter().any(|d| !dir.join(d).is_file()) {
        let ok = Command::new(env!("CARGO"))
            .args(["build", "--bins", "-p", "ferry-controllers", "-p", "ferry-scheduler"])
            .status()?
            .success();
        anyhow::ensure!(ok, "building ferry-controllers and ferry-scheduler failed");
    }
    Ok(dir.join(name))
}

fn unique() -> u32 {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(7);
    n ^ std::process::id().rotate_left(16)
}

fn sh(args: &[&str]) -> Result<()> {
    let out = Command::new(args[0]).args(&args[1..]).output().with_context(|| format!("running {args:?}"))?;
    if !out.status.success() {
        bail!("{args:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// A process the test started: SIGCONT and SIGKILL on drop, so a failing test leaves none behind.
struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &str, mut cmd: Command, logs: &Path) -> Result<Self> {
        let log = logs.join(format!("{name}.log"));
        let file = std::fs::File::create(&log)?;
        let child = cmd
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Proc { name: name.to_string(), child, log })
    }

    fn signal(&self, sig: Signal) -> Result<()> {
        let pid = i32::try_from(self.child.id()).context("pid out of range")?;
        kill(Pid::from_raw(pid), sig).with_context(|| format!("sending {sig} to {}", self.name))
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.signal(Signal::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The test's network namespace and veth pair; deleted on drop (which removes both veth ends
/// and whatever bridge and veths a nodelet created inside).
struct Net {
    netns: String,
    host_if: String,
    host_ip: Ipv4Addr,
    ns_ip: Ipv4Addr,
    /// Pod CIDRs of node a and node b.
    pod_cidrs: [String; 2],
}

impl Net {
    /// Pick 10.X.Y.0/30 for the veth and the next two /24s for pods, none of which the host
    /// uses, then create the namespace and the pair.
    fn create(u: u32) -> Result<Self> {
        let used = {
            let a = Command::new("ip").args(["-4", "-o", "addr"]).output()?;
            let r = Command::new("ip").args(["-4", "route"]).output()?;
            format!("{}{}", String::from_utf8_lossy(&a.stdout), String::from_utf8_lossy(&r.stdout))
        };
        let free = (0..64u32)
            .map(|i| (160 + (u.wrapping_add(i) % 40) as u8, (((u >> 8).wrapping_add(i * 7)) % 84 * 3) as u8))
            .find(|(x, y)| (0..3).all(|k| !used.contains(&format!("10.{x}.{}.", y + k))))
            .context("no free 10.x.y.0/22 for the test network")?;
        let (x, y) = free;
        let tag = format!("{:06x}", u & 0xff_ffff);
        let net = Net {
            netns: format!("fynf{tag}"),
            host_if: format!("fyh{tag}"),
            host_ip: Ipv4Addr::new(10, x, y, 1),
            ns_ip: Ipv4Addr::new(10, x, y, 2),
            pod_cidrs: [format!("10.{x}.{}.0/24", y + 1), format!("10.{x}.{}.0/24", y + 2)],
        };
        let ns_if = format!("fyn{tag}");
        sh(&["ip", "netns", "add", &net.netns])?;
        sh(&["ip", "link", "add", &net.host_if, "type", "veth", "peer", "name", &ns_if, "netns", &net.netns])?;
        sh(&["ip", "addr", "add", &format!("{}/30", net.host_ip), "dev", &net.host_if])?;
        sh(&["ip", "link", "set", &net.host_if, "up"])?;
        sh(&["ip", "-n", &net.netns, "addr", "add", &format!("{}/30", net.ns_ip), "dev", &ns_if])?;
        sh(&["ip", "-n", &net.netns, "link", "set", &ns_if, "up"])?;
        sh(&["ip", "-n", &net.netns, "link", "set", "lo", "up"])?;
        Ok(net)
    }

    fn link(&self, up: bool) -> Result<()> {
        sh(&["ip", "link", "set", &self.host_if, if up { "up" } else { "down" }])
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.netns]).status();
        let _ = Command::new("ip").args(["link", "delete", &self.host_if]).stderr(Stdio::null()).status();
    }
}

/// One nodelet.
struct NodeProc {
    name: String,
    ctrd_ns: String,
    bridge: String,
    pod_cidr: String,
    root: PathBuf,
    /// The network namespace it runs in (None: the host's).
    netns: Option<String>,
    proc: Option<Proc>,
}

impl NodeProc {
    /// `nsenter --net` keeps the mount namespace, so the pod namespaces the nodelet creates under
    /// /run/netns are visible to containerd and runc.
    fn command(&self, args: &[&str]) -> Command {
        let nodelet = env!("CARGO_BIN_EXE_ferry-nodelet");
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}")).arg("--").arg(nodelet);
                c
            }
            None => Command::new(nodelet),
        };
        cmd.args(["--containerd-namespace", &self.ctrd_ns, "--pod-cidr", &self.pod_cidr, "--cni-bridge", &self.bridge])
            .arg("--root-dir")
            .arg(&self.root)
            .args(args);
        cmd
    }

    fn proc(&self) -> Result<&Proc> {
        self.proc.as_ref().context("nodelet not running")
    }
}

/// The whole cluster; dropping it stops everything and removes what it created.
struct Env {
    nodes: Vec<NodeProc>,
    others: Vec<Proc>,
    ctrd: Option<ferry_testkit::Containerd>,
    cluster: Cluster,
    client: kube::Client,
    net: Option<Net>,
    _dir: tempfile::TempDir,
}

impl Drop for Env {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.proc.take();
        }
        self.others.clear();
        if let Some(ctrd) = &self.ctrd {
            let socket = ctrd.socket.display().to_string();
            for n in &self.nodes {
                let out = n.command(&["--containerd-address", &socket, "teardown", "--grace-seconds", "0"]).output();
                if let Ok(o) = out {
                    if !o.status.success() {
                        eprintln!("teardown of {}: {}", n.name, String::from_utf8_lossy(&o.stderr).trim());
                    }
                }
            }
        }
        self.ctrd.take();
        self.net.take();
    }
}

impl Env {
    async fn start() -> Result<Self> {
        let u = unique();
        let net = Net::create(u)?;
        let host_ip = net.host_ip;
        let cluster = Cluster::start_with(|c| {
            c.bind_address = host_ip.into();
            c.rest.default_not_ready_toleration_seconds = TOLERATION as i64;
            c.rest.default_unreachable_toleration_seconds = TOLERATION as i64;
        })
        .await?;
        let client = cluster.client().await?;
        let dir = tempfile::Builder::new().prefix("ferry-nodefail-").tempdir()?;
        let logs = dir.path().join("logs");
        std::fs::create_dir_all(&logs)?;
        let ctrd = ferry_testkit::Containerd::start().await?;
        let archive = dir.path().join("bb.tar");
        ferry_testkit::busybox_image_archive(&archive, IMAGE)?;
        let tag = format!("{:06x}", u & 0xff_ffff);
        let mut env = Env { nodes: Vec::new(), others: Vec::new(), ctrd: None, cluster, client, net: None, _dir: dir };
        let kubeconfig = env.cluster.kubeconfig();
        let mut controllers = Command::new(daemon("ferry-controllers")?);
        controllers
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["--node-monitor-grace-period", &format!("{}s", GRACE.as_secs())])
            .args(["--node-monitor-period", MONITOR, "--metrics-bind-address", "0"]);
        env.others.push(Proc::spawn("controllers", controllers, &logs)?);
        let mut scheduler = Command::new(daemon("ferry-scheduler")?);
        scheduler.arg("--kubeconfig").arg(&kubeconfig).args(["--bind-address", "127.0.0.1:0"]);
        env.others.push(Proc::spawn("scheduler", scheduler, &logs)?);

        for (i, (name, netns, ip)) in
            [("a", None, host_ip), ("b", Some(net.netns.clone()), net.ns_ip)].into_iter().enumerate()
        {
            let node_name = format!("nf-{name}");
            let ctrd_ns = format!("nf{name}{tag}");
            Containerd::connect(&ctrd.socket, &ctrd_ns).await?.import_archive(&archive).await?;
            let (_, pki) = env.cluster.node_credentials(&node_name, &[ip.to_string()])?;
            let mut node = NodeProc {
                name: node_name.clone(),
                ctrd_ns,
                bridge: format!("fy{name}{tag}"),
                pod_cidr: net.pod_cidrs[i].clone(),
                root: env._dir.path().join(&node_name),
                netns,
                proc: None,
            };
            let cmd = node.command(&[
                "--kubeconfig",
                &pki.join("kubeconfig").display().to_string(),
                "--node-name",
                &node_name,
                "--node-ip",
                &ip.to_string(),
                "--containerd-address",
                &ctrd.socket.display().to_string(),
                "--lease-renew-seconds",
                &RENEW_SECONDS.to_string(),
            ]);
            node.proc = Some(Proc::spawn(&node_name, cmd, &logs)?);
            env.nodes.push(node);
        }
        env.ctrd = Some(ctrd);
        env.net = Some(net);
        let nodes: Api<Node> = Api::all(env.client.clone());
        until("both nodes Ready", Duration::from_secs(60), || async {
            let list = nodes.list(&ListParams::default()).await?;
            Ok((list.items.len() == 2 && list.items.iter().all(|n| ready(n).as_deref() == Some("True"))).then_some(()))
        })
        .await
        .map_err(|e| e.context(env.logs()))?;
        Ok(env)
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for p in self.others.iter().chain(self.nodes.iter().filter_map(|n| n.proc.as_ref())) {
            out.push_str(&format!("--- {} ---\n{}\n", p.name, p.log_tail()));
        }
        out
    }

    fn node(&self, name: &str) -> Result<&NodeProc> {
        self.nodes.iter().find(|n| n.name == name).with_context(|| format!("no node {name}"))
    }

    /// UIDs of the pods with containers in containerd, per node.
    async fn containerd_pods(&self, node: &str) -> Result<BTreeSet<String>> {
        let ctrd = self.ctrd.as_ref().context("containerd is gone")?;
        let n = self.node(node)?;
        Ok(Containerd::connect(&ctrd.socket, &n.ctrd_ns).await?.pod_uids().await?)
    }

    /// Create the Deployment (spread over both nodes) and wait until every replica runs.
    async fn deploy(&self) -> Result<Vec<Pod>> {
        let d: Deployment = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web"},
            "spec": {
                "replicas": REPLICAS,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "terminationGracePeriodSeconds": 2,
                        "topologySpreadConstraints": [{
                            "maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                            "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": {"matchLabels": {"app": "web"}}
                        }],
                        "containers": [{
                            "name": "c", "image": IMAGE,
                            "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
                        }]
                    }
                }
            }
        }))?;
        Api::<Deployment>::namespaced(self.client.clone(), "default").create(&PostParams::default(), &d).await?;
        let pods = self.running_pods(REPLICAS, Duration::from_secs(60)).await?;
        for node in ["nf-a", "nf-b"] {
            anyhow::ensure!(
                pods.iter().any(|p| node_of(p) == node),
                "the spread put no pod on {node}: {:?}",
                pods.iter().map(node_of).collect::<Vec<_>>()
            );
        }
        Ok(pods)
    }

    /// The Deployment's pods: not terminating, Running.
    async fn web_pods(&self) -> Result<(Vec<Pod>, Vec<Pod>)> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), "default");
        let all = pods.list(&ListParams::default().labels("app=web")).await?.items;
        Ok(all.into_iter().partition(|p| {
            p.metadata.deletion_timestamp.is_none()
                && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        }))
    }

    async fn running_pods(&self, count: usize, limit: Duration) -> Result<Vec<Pod>> {
        until(&format!("{count} running pods"), limit, || async {
            let (running, _) = self.web_pods().await?;
            Ok((running.len() == count).then_some(running))
        })
        .await
        .map_err(|e| e.context(self.logs()))
    }

    async fn lease_renew_time(&self, node: &str) -> Result<Option<String>> {
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), "kube-node-lease");
        Ok(leases.get(node).await?.spec.and_then(|s| s.renew_time).map(|t| t.0.to_string()))
    }

    /// The shared scenario of a node that goes silent (`silence`) and comes back (`heal`):
    /// Unknown within grace ± 2 s, pods replaced on the other node after grace + toleration
    /// ± 5 s, and after healing the old pods' containers gone before the node heartbeats again,
    /// exactly the replica count running and no pod running twice.
    async fn silent_node_scenario(
        &self,
        victim: &str,
        silence: impl FnOnce() -> Result<()>,
        heal: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        let other = if victim == "nf-a" { "nf-b" } else { "nf-a" };
        let before = self.deploy().await?;
        let old: BTreeSet<String> =
            before.iter().filter(|p| node_of(p) == victim).filter_map(|p| p.metadata.uid.clone()).collect();
        let on_victim = self.containerd_pods(victim).await?;
        assert!(old.is_subset(&on_victim), "containerd runs the victim's pods: {old:?} ⊆ {on_victim:?}");

        let nodes: Api<Node> = Api::all(self.client.clone());
        silence()?;
        let t0 = Instant::now();
        until(&format!("{victim} Unknown"), GRACE * 3, || async {
            Ok((ready(&nodes.get(victim).await?).as_deref() == Some("Unknown")).then_some(()))
        })
        .await?;
        let unknown_after = t0.elapsed();
        eprintln!("{victim}: Ready=Unknown after {unknown_after:?} (grace {GRACE:?})");
        assert!(
            unknown_after.abs_diff(GRACE) <= Duration::from_secs(2),
            "Unknown after {unknown_after:?}, expected grace {GRACE:?} ± 2 s"
        );

        // Evicted (marked for deletion) after grace + toleration, replaced on the other node.
        let expected = GRACE + Duration::from_secs(TOLERATION);
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), "default");
        let evicted_at = std::cell::Cell::new(None);
        let replaced_after = until("replacements running on the other node", expected * 3, || async {
            if evicted_at.get().is_none() {
                let all = pods.list(&ListParams::default().labels("app=web")).await?.items;
                let gone = all
                    .iter()
                    .filter(|p| p.metadata.uid.as_ref().is_some_and(|u| old.contains(u)))
                    .all(|p| p.metadata.deletion_timestamp.is_some());
                if gone {
                    evicted_at.set(Some(t0.elapsed()));
                }
            }
            let (running, _) = self.web_pods().await?;
            Ok((running.len() == REPLICAS && running.iter().all(|p| node_of(p) == other)).then(|| t0.elapsed()))
        })
        .await
        .map_err(|e| e.context(self.logs()))?;
        let evicted_after = evicted_at.get().context("the replacements ran before the old pods were evicted")?;
        eprintln!(
            "{victim}: pods evicted after {evicted_after:?}, replaced on {other} after {replaced_after:?} \
             (grace + toleration {expected:?})"
        );
        for (what, t) in [("evicted", evicted_after), ("replaced", replaced_after)] {
            assert!(
                t.abs_diff(expected) <= Duration::from_secs(5),
                "{what} after {t:?}, expected grace + toleration {expected:?} ± 5 s"
            );
        }
        let events: Api<Event> = Api::namespaced(self.client.clone(), "default");
        let reasons: Vec<String> =
            events.list(&ListParams::default()).await?.items.into_iter().filter_map(|e| e.reason).collect();
        for r in ["NodeNotReady", "TaintManagerEviction"] {
            assert!(reasons.iter().any(|x| x == r), "an event {r}: {reasons:?}");
        }

        // Back: the old pods' containers go before the node heartbeats again.
        let renewed_before = self.lease_renew_time(victim).await?;
        heal()?;
        let t1 = Instant::now();
        until("the old pods' containers gone", Duration::from_secs(30), || async {
            // Lease first, containerd second: a renewal seen while old containers still exist
            // means the node heartbeat before it stopped them.
            let renewed = self.lease_renew_time(victim).await? != renewed_before;
            let left: BTreeSet<String> = self.containerd_pods(victim).await?.intersection(&old).cloned().collect();
            assert!(
                !renewed || left.is_empty(),
                "{victim} renewed its lease while containers of evicted pods remained: {left:?}"
            );
            Ok((renewed && left.is_empty()).then_some(()))
        })
        .await
        .map_err(|e| e.context(self.logs()))?;
        eprintln!("{victim}: old containers removed and lease renewed {:?} after healing", t1.elapsed());
        until(&format!("a NodeReady event for {victim}"), Duration::from_secs(30), || async {
            let list = events.list(&ListParams::default()).await?.items;
            Ok(list
                .iter()
                .any(|e| e.reason.as_deref() == Some("NodeReady") && e.involved_object.name.as_deref() == Some(victim))
                .then_some(()))
        })
        .await?;
        let log = std::fs::read_to_string(&self.node(victim)?.proc()?.log)?;
        assert!(log.contains("pods resynced after the silence"), "{victim} resynced before heartbeating:\n{log}");
        until(&format!("{victim} Ready again, untainted"), Duration::from_secs(30), || async {
            let n = nodes.get(victim).await?;
            let tainted = n.spec.as_ref().and_then(|s| s.taints.as_ref()).is_some_and(|t| !t.is_empty());
            Ok((ready(&n).as_deref() == Some("True") && !tainted).then_some(()))
        })
        .await
        .map_err(|e| e.context(self.logs()))?;
        // The evicted pods are gone from the API, exactly REPLICAS run, and containerd holds
        // exactly those pods across both nodes: none runs twice.
        let (running, rest) = until("only the replacements left", Duration::from_secs(30), || async {
            let (running, rest) = self.web_pods().await?;
            Ok(rest.is_empty().then_some((running, rest)))
        })
        .await
        .map_err(|e| e.context(self.logs()))?;
        assert!(rest.is_empty());
        assert_eq!(running.len(), REPLICAS, "exactly the replica count runs");
        let want: BTreeSet<String> = running.iter().filter_map(|p| p.metadata.uid.clone()).collect();
        let mut have = self.containerd_pods("nf-a").await?;
        have.extend(self.containerd_pods("nf-b").await?);
        assert_eq!(have, want, "containerd runs exactly the Deployment's current pods");
        Ok(())
    }
}

fn node_of(p: &Pod) -> String {
    p.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default()
}

fn ready(n: &Node) -> Option<String> {
    n.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready").map(|c| c.status.clone())
}

async fn until<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + limit;
    loop {
        match f().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) if Instant::now() > deadline => return Err(e.context(format!("waiting for {what}"))),
            Err(_) => {}
        }
        if Instant::now() > deadline {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigstop_one_nodelet_pods_move_and_come_back_clean() -> Result<()> {
    if skip() {
        return Ok(());
    }
    let _serial = SERIAL.lock().await;
    let env = Env::start().await?;
    let victim = env.node("nf-a")?.proc()?;
    env.silent_node_scenario("nf-a", || victim.signal(Signal::SIGSTOP), || victim.signal(Signal::SIGCONT)).await
}

#[tokio::test(flavor = "multi_thread")]
async fn partitioned_nodelet_pods_move_and_none_runs_twice_after_healing() -> Result<()> {
    if skip() {
        return Ok(());
    }
    let _serial = SERIAL.lock().await;
    let env = Env::start().await?;
    let net = env.net.as_ref().context("no test network")?;
    env.silent_node_scenario("nf-b", || net.link(false), || net.link(true)).await
}

/// Pods of the Deployment and whether any is marked for deletion.
async fn snapshot(env: &Env) -> Result<(BTreeSet<String>, bool)> {
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), "default");
    let all = pods.list(&ListParams::default().labels("app=web")).await?.items;
    Ok((
        all.iter().filter_map(|p| p.metadata.uid.clone()).collect(),
        all.iter().any(|p| p.metadata.deletion_timestamp.is_some()),
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn every_nodelet_stopped_evicts_nothing() -> Result<()> {
    if skip() {
        return Ok(());
    }
    let _serial = SERIAL.lock().await;
    let env = Env::start().await?;
    let before: BTreeSet<String> = env.deploy().await?.iter().filter_map(|p| p.metadata.uid.clone()).collect();
    for n in &env.nodes {
        n.proc()?.signal(Signal::SIGSTOP)?;
    }
    let t0 = Instant::now();
    let nodes: Api<Node> = Api::all(env.client.clone());
    // Well past grace + toleration: both nodes Unknown, yet no pod is deleted or replaced.
    let watch_for = GRACE + Duration::from_secs(TOLERATION) * 2 + Duration::from_secs(4);
    let mut both_unknown = None;
    while t0.elapsed() < watch_for {
        let (uids, deleting) = snapshot(&env).await?;
        assert!(!deleting && uids == before, "a pod was evicted or replaced while every node was down");
        let list = nodes.list(&ListParams::default()).await?.items;
        if both_unknown.is_none() && list.iter().all(|n| ready(n).as_deref() == Some("Unknown")) {
            both_unknown = Some(t0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let both_unknown = both_unknown.context("the nodes never went Unknown")?;
    eprintln!("both nodes Unknown after {both_unknown:?} (grace {GRACE:?}); no eviction in {watch_for:?}");
    assert!(both_unknown.abs_diff(GRACE) <= Duration::from_secs(2), "Unknown after {both_unknown:?}");
    for n in &env.nodes {
        n.proc()?.signal(Signal::SIGCONT)?;
    }
    until("both nodes Ready again", Duration::from_secs(30), || async {
        let list = nodes.list(&ListParams::default()).await?.items;
        Ok(list.iter().all(|n| ready(n).as_deref() == Some("True")).then_some(()))
    })
    .await
    .map_err(|e| e.context(env.logs()))?;
    let running = env.running_pods(REPLICAS, Duration::from_secs(30)).await?;
    let after: BTreeSet<String> = running.iter().filter_map(|p| p.metadata.uid.clone()).collect();
    assert_eq!(after, before, "the same pods run after the nodes came back");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn control_plane_restart_marks_no_node_and_evicts_nothing() -> Result<()> {
    if skip() {
        return Ok(());
    }
    let _serial = SERIAL.lock().await;
    let mut env = Env::start().await?;
    let before: BTreeSet<String> = env.deploy().await?.iter().filter_map(|p| p.metadata.uid.clone()).collect();
    let nodes: Api<Node> = Api::all(env.client.clone());
    let transitions = |list: &[Node]| -> Vec<String> {
        list.iter()
            .filter_map(|n| n.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready").cloned())
            .map(|c| format!("{}@{:?}", c.status, c.last_transition_time.map(|t| t.0.to_string())))
            .collect()
    };
    let ready_before = transitions(&nodes.list(&ListParams::default()).await?.items);

    // Stop the API server and kill etcd for longer than the grace period, then start both
    // again on the same data dirs and ports: the controllers could not see any heartbeat
    // meanwhile, which must not count against the nodes.
    let outage = GRACE + Duration::from_secs(2);
    env.cluster.stop_server().await;
    env.cluster.etcd.kill();
    tokio::time::sleep(outage).await;
    env.cluster.etcd.restart().await?;
    env.cluster.restart_server().await?;
    eprintln!("API server and etcd down for {outage:?} (grace {GRACE:?})");
    let t0 = Instant::now();
    let watch_for = GRACE + Duration::from_secs(TOLERATION) * 2 + Duration::from_secs(2);
    while t0.elapsed() < watch_for {
        if let (Ok(list), Ok((uids, deleting))) = (nodes.list(&ListParams::default()).await, snapshot(&env).await) {
            let states: Vec<Option<String>> = list.items.iter().map(ready).collect();
            assert!(states.iter().all(|s| s.as_deref() == Some("True")), "a node left Ready: {states:?}");
            assert!(!deleting && uids == before, "a pod was evicted or replaced after the restart");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ready_after = transitions(&nodes.list(&ListParams::default()).await?.items);
    assert_eq!(ready_after, ready_before, "no Ready transition happened (a brief Unknown would show)");
    let events: Api<Event> = Api::namespaced(env.client.clone(), "default");
    let bad: Vec<String> = events
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .filter(|r| r == "NodeNotReady" || r == "TaintManagerEviction")
        .collect();
    assert!(bad.is_empty(), "events after the restart: {bad:?}");
    let running = env.running_pods(REPLICAS, Duration::from_secs(10)).await?;
    assert_eq!(running.len(), REPLICAS);
    Ok(())
}
