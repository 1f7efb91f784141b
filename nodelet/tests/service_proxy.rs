//! Services end to end: real containerd + runc + CNI, the API server on etcd, the Endpoints and
//! EndpointSlice controllers, ferry-dns, and the `ferry-nodelet` binary with its nftables
//! service proxy. Three busybox httpd pods behind a NodePort Service; a client pod fetches
//! `http://web` (short name → cluster DNS → ClusterIP) in a loop and prints who answered.
//!
//! Isolation: this test's own bridge, pod subnet, service range and nftables table (removed by
//! a guard, also on failure); NodePorts answer only on this test's bridge address; traffic only
//! to that bridge, the pods and loopback.

use anyhow::{bail, Context, Result};
use ferry_nodelet::runtime::containerd::{Containerd, NAMESPACE};
use ferry_testkit::Cluster;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, PostParams};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// How often pods are polled: this test times how fast traffic follows pod changes.
const POLL: Duration = Duration::from_millis(25);

/// This test's nftables table, removed on drop (only this one: other tables are not touched).
struct Table(String);

impl Drop for Table {
    fn drop(&mut self) {
        let _ = std::process::Command::new("nft")
            .args(["delete", "table", "ip", &self.0])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// The nodelet process, killed on drop.
struct Nodelet(std::process::Child);

impl Drop for Nodelet {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn unique() -> u32 {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(7);
    n ^ std::process::id()
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn http_get(ip: &str, port: u16) -> Result<String> {
    let mut s = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect((ip, port))).await??;
    s.write_all(format!("GET / HTTP/1.0\r\nHost: {ip}\r\n\r\n").as_bytes()).await?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_string(&mut out)).await??;
    Ok(out.lines().last().unwrap_or_default().trim().to_string())
}

/// Follows the client's log file, stamping each line with the time it was read.
struct ClientLog {
    path: PathBuf,
    read: usize,
    lines: Vec<(Instant, String)>,
    partial: String,
}

/// The content of a CRI-format log line (`<time> <stream> <P|F> <content>`, what the nodelet's
/// log driver writes); other lines as they are.
fn cri_content(line: &str) -> &str {
    let mut parts = line.splitn(4, ' ');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(_), Some("stdout" | "stderr"), Some("P" | "F"), Some(content)) => content,
        _ => line,
    }
}

impl ClientLog {
    fn poll(&mut self) {
        let Ok(data) = std::fs::read(&self.path) else { return };
        if data.len() <= self.read {
            return;
        }
        let now = Instant::now();
        self.partial.push_str(&String::from_utf8_lossy(&data[self.read..]));
        self.read = data.len();
        while let Some(i) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=i).collect();
            self.lines.push((now, cri_content(line.trim()).to_string()));
        }
    }

    /// Poll for `d`, every 20 ms.
    async fn follow(&mut self, d: Duration) {
        let end = Instant::now() + d;
        while Instant::now() < end {
            self.poll();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.poll();
    }

    /// Poll until `pred` holds for a line read after `since`; returns when that line was read.
    async fn until(&mut self, since: Instant, what: &str, pred: impl Fn(&str) -> bool) -> Result<Instant> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            self.poll();
            if let Some((t, _)) = self.lines.iter().find(|(t, l)| *t >= since && pred(l)) {
                return Ok(*t);
            }
            if Instant::now() > deadline {
                let tail: Vec<_> = self.lines.iter().rev().take(10).map(|(_, l)| l.clone()).collect();
                bail!("timed out waiting for the client to see {what}; last lines {tail:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn since(&self, t: Instant) -> impl Iterator<Item = &(Instant, String)> {
        self.lines.iter().filter(move |(at, _)| *at >= t)
    }
}

/// The client's loop: `wget http://web` (the short name, resolved by the libc resolver through
/// the resolv.conf search path and the cluster DNS, then the Service's ClusterIP), one line per
/// request. (busybox-static's `wget -T` crashes; `timeout` bounds a request instead.)
const CLIENT_LOOP: &str =
    "while true; do echo \"$(timeout 2 wget -q -O - http://web 2>&1 || echo FAIL)\"; sleep 0.02; done";

fn web_pod(name: &str, www: &Path) -> Result<Pod> {
    Ok(serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {"nodeName": "svc-node", "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "httpd", "image": "ferry/busybox:test",
                    "command": ["httpd", "-f", "-p", "8080", "-h", "/www"],
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "readinessProbe": {"httpGet": {"path": "/ready.html", "port": "http"}, "periodSeconds": 1, "failureThreshold": 1},
                    "volumeMounts": [{"name": "www", "mountPath": "/www"}]}],
                 "volumes": [{"name": "www", "hostPath": {"path": www}}]}
    }))?)
}

#[tokio::test(flavor = "multi_thread")]
async fn services_balance_follow_readiness_and_survive_restarts() -> Result<()> {
    let u = unique();
    let service_range = format!("10.{}.{}.0/24", 100 + (u % 50), (u >> 8) % 256);
    let range = service_range.clone();
    let cluster = Cluster::start_with(move |c| {
        c.rest.service_ranges = ferry_apiserver::rest::ServiceRanges::parse(&range, "30000-32767")
            .unwrap_or_else(|e| panic!("service range: {e}"));
    })
    .await?;
    let client = cluster.client().await?;
    let daemon = ferry_testkit::Containerd::start().await?;
    let root = tempfile::tempdir()?;
    let archive = root.path().join("bb.tar");
    ferry_testkit::busybox_image_archive(&archive, "docker.io/ferry/busybox:test")?;
    Containerd::connect(&daemon.socket, NAMESPACE).await?.import_archive(&archive).await?;

    let bridge = ferry_testkit::LinkGuard(format!("fy{:x}", (u >> 4) & 0xffffff));
    let (a, b) = (200 + ((u >> 3) % 50), (u >> 11) % 256);
    let subnet = format!("10.{a}.{b}.0/24");
    let bridge_ip = format!("10.{a}.{b}.1");
    let table = Table(format!("ferry-e2e{:x}", u & 0xffffff));
    let base = service_range.trim_end_matches(".0/24");
    let dns_ip = format!("{base}.10");

    // The controllers (Endpoints, EndpointSlices and the rest) in-process.
    let stop = CancellationToken::new();
    let _stop_guard = stop.clone().drop_guard();
    tokio::spawn(ferry_controllers::controllers(client.clone(), 4, stop.clone()));

    let node_root = root.path().join("nodelet");
    let spawn = || -> Result<Nodelet> {
        Ok(Nodelet(
            std::process::Command::new(env!("CARGO_BIN_EXE_ferry-nodelet"))
                .args(["--runtime", "containerd", "--node-name", "svc-node", "--node-ip", "127.0.0.1"])
                .args(["--pod-cidr", &subnet, "--cni-bridge", &bridge.0])
                .args(["--cluster-dns", &dns_ip, "--proxy-mode", "nftables", "--proxy-table", &table.0])
                .args(["--nodeport-addresses", &format!("{bridge_ip}/32")])
                .arg("--containerd-address")
                .arg(&daemon.socket)
                .arg("--kubeconfig")
                .arg(cluster.kubeconfig())
                .arg("--root-dir")
                .arg(&node_root)
                .env("RUST_LOG", "warn")
                .stdout(std::process::Stdio::null())
                .spawn()?,
        ))
    };
    let mut nodelet = spawn()?;

    // Three backends, each serving its own name; readiness is a file the test controls.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let www = |name: &str| -> Result<PathBuf> {
        let dir = root.path().join(format!("www-{name}"));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("index.html"), format!("{name}\n"))?;
        std::fs::write(dir.join("ready.html"), "ok")?;
        Ok(dir)
    };
    for name in ["web-0", "web-1", "web-2"] {
        pods.create(&PostParams::default(), &web_pod(name, &www(name)?)?).await?;
    }
    for name in ["web-0", "web-1", "web-2"] {
        ferry_testkit::wait_pod_every(&pods, name, "Ready", POLL, ready).await?;
    }

    // Cluster DNS on this test's bridge address, behind a kube-dns Service (no selector, a
    // hand-written EndpointSlice) at the address the nodelet gives pods as nameserver.
    let dns = ferry_dns::start(
        client.clone(),
        ferry_dns::Config { listen: vec![format!("{bridge_ip}:0").parse()?], ..ferry_dns::Config::default() },
    )
    .await?;
    let dns_port = dns.addrs.first().context("dns address")?.port();
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    services
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({
                "metadata": {"name": "kube-dns"},
                "spec": {"clusterIP": dns_ip, "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]}
            }))?,
        )
        .await?;
    Api::<EndpointSlice>::namespaced(client.clone(), "default")
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({
                "metadata": {"name": "kube-dns-host", "labels": {"kubernetes.io/service-name": "kube-dns", "endpointslice.kubernetes.io/managed-by": "e2e"}},
                "addressType": "IPv4",
                "ports": [{"name": "dns", "port": dns_port, "protocol": "UDP"}, {"name": "dns-tcp", "port": dns_port, "protocol": "TCP"}],
                "endpoints": [{"addresses": [bridge_ip], "conditions": {"ready": true}}]
            }))?,
        )
        .await?;
    let web = services
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({
                "metadata": {"name": "web"},
                "spec": {"type": "NodePort", "selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}
            }))?,
        )
        .await?;
    let node_port = web
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .and_then(|p| p[0].node_port)
        .and_then(|p| u16::try_from(p).ok())
        .context("nodePort")?;

    // The client: `wget http://web` in a loop, one line per request (the body, or FAIL).
    let client_pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "client"},
        "spec": {"nodeName": "svc-node", "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "client", "image": "ferry/busybox:test", "command": ["sh", "-c",
                    CLIENT_LOOP]}]}
    }))?;
    let client_pod = pods.create(&PostParams::default(), &client_pod).await?;
    let uid = client_pod.metadata.uid.clone().context("uid")?;
    let resolv = node_root.join("pods").join(&uid).join("resolv.conf");
    let mut log = ClientLog {
        path: node_root.join("pods").join(&uid).join("logs").join("client").join("0.log"),
        read: 0,
        lines: Vec::new(),
        partial: String::new(),
    };

    // 60 requests to http://web reach all three backends.
    let start = Instant::now();
    log.until(start, "a backend", |l| l.starts_with("web-"))
        .await
        .with_context(|| format!("resolv.conf: {:?}", std::fs::read_to_string(&resolv).unwrap_or_default()))?;
    let first = log.lines.iter().position(|(_, l)| l.starts_with("web-")).unwrap_or(0);
    while log.lines.len() < first + 60 {
        log.follow(Duration::from_millis(100)).await;
    }
    let sixty: Vec<&str> = log.lines[first..first + 60].iter().map(|(_, l)| l.as_str()).collect();
    let mut seen: Vec<&str> = sixty.clone();
    seen.sort();
    seen.dedup();
    assert_eq!(seen, vec!["web-0", "web-1", "web-2"], "60 requests: {sixty:?}");
    let text = std::fs::read_to_string(&resolv)?;
    assert!(text.contains("search default.svc.cluster.local svc.cluster.local cluster.local"), "{text}");
    assert!(text.contains(&format!("nameserver {dns_ip}")), "{text}");

    // From the host, the NodePort on this test's bridge address reaches them too.
    let mut from_host = std::collections::BTreeSet::new();
    for _ in 0..60 {
        from_host.insert(http_get(&bridge_ip, node_port).await?);
    }
    assert_eq!(from_host.into_iter().collect::<Vec<_>>(), vec!["web-0", "web-1", "web-2"]);

    // web-0 turns not-ready: it stops receiving traffic.
    std::fs::remove_file(root.path().join("www-web-0").join("ready.html"))?;
    ferry_testkit::wait_pod_every(&pods, "web-0", "not Ready", POLL, |p| !ready(p)).await?;
    let unready_at = Instant::now();
    log.follow(Duration::from_secs(3)).await;
    let last_web0 = log.since(unready_at).filter(|(_, l)| l == "web-0").map(|(t, _)| *t).max();
    let stop_unready = last_web0.map_or(Duration::ZERO, |t| t - unready_at);
    let late: Vec<_> = log.since(unready_at + Duration::from_secs(2)).filter(|(_, l)| l == "web-0").collect();
    assert!(late.is_empty(), "web-0 still served {} requests more than 2 s after turning not-ready", late.len());

    // web-1 is deleted: it stops receiving traffic.
    pods.delete("web-1", &DeleteParams::default()).await?;
    let deleted_at = Instant::now();
    log.follow(Duration::from_secs(3)).await;
    let last_web1 = log.since(deleted_at).filter(|(_, l)| l == "web-1").map(|(t, _)| *t).max();
    let stop_deleted = last_web1.map_or(Duration::ZERO, |t| t - deleted_at);
    let late: Vec<_> = log.since(deleted_at + Duration::from_secs(2)).filter(|(_, l)| l == "web-1").collect();
    assert!(late.is_empty(), "web-1 still served {} requests more than 2 s after its deletion", late.len());

    // A new ready pod starts receiving traffic.
    pods.create(&PostParams::default(), &web_pod("web-3", &www("web-3")?)?).await?;
    ferry_testkit::wait_pod_every(&pods, "web-3", "Ready", POLL, ready).await?;
    let ready_at = Instant::now();
    let first_web3 = log.until(ready_at - Duration::from_millis(500), "web-3", |l| l == "web-3").await?;
    let start_new = first_web3.saturating_duration_since(ready_at);
    assert!(start_new <= Duration::from_secs(2), "web-3 got its first request {start_new:?} after turning Ready");

    // kill -9 and restart of the nodelet: the rules stay, traffic never stops for > 1 s.
    let before_kill = Instant::now();
    log.follow(Duration::from_millis(500)).await;
    nodelet.0.kill()?;
    nodelet.0.wait()?;
    log.follow(Duration::from_millis(1500)).await;
    nodelet = spawn()?;
    log.follow(Duration::from_secs(5)).await;
    let ok: Vec<Instant> = log.since(before_kill).filter(|(_, l)| l.starts_with("web-")).map(|(t, _)| *t).collect();
    let gap = ok.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(Duration::MAX);
    let failures = log.since(before_kill).filter(|(_, l)| !l.starts_with("web-")).count();
    assert!(ok.len() > 20, "too few answers around the restart: {}", ok.len());
    assert!(gap <= Duration::from_secs(1), "longest gap between answers around the restart: {gap:?}");
    assert_eq!(failures, 0, "requests failed around the restart");
    let served: std::collections::BTreeSet<&str> =
        log.since(before_kill).map(|(_, l)| l.as_str()).filter(|l| l.starts_with("web-")).collect();
    assert_eq!(served.into_iter().collect::<Vec<_>>(), vec!["web-2", "web-3"]);
    eprintln!(
        "service e2e: not-ready → last request {stop_unready:?}; deleted → last request {stop_deleted:?}; \
         new pod Ready → first request {start_new:?}; longest gap across the nodelet restart {gap:?}"
    );

    // Remove the pods while the nodelet runs (their netns, cgroups and containers go with them).
    for name in ["web-0", "web-2", "web-3", "client"] {
        pods.delete(name, &DeleteParams::default()).await?;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while !pods.list(&Default::default()).await?.items.is_empty() {
        if Instant::now() > deadline {
            bail!("pods not removed");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // `ferry-nodelet proxy cleanup` removes every rule of this table.
    drop(nodelet);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferry-nodelet"))
        .args(["proxy", "cleanup", "--proxy-table", &table.0])
        .output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listed = std::process::Command::new("nft").args(["list", "table", "ip", &table.0]).output()?;
    assert!(!listed.status.success(), "table still there after cleanup");

    // Leave nothing behind: pods (their netns and containers) go with containerd's guard.
    dns.shutdown().await;
    stop.cancel();
    Ok(())
}
