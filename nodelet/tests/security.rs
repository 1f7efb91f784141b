//! securityContext and hostPort on real containerd + runc + CNI (portmap): what the process
//! inside sees (`id`, a read-only root, capability sets, no_new_privs, fsGroup on an emptyDir),
//! and a hostPort reachable on the node that is gone again when the pod is deleted.

mod common;

use anyhow::{bail, Context, Result};
use ferry_nodelet::machine::Machine;
use ferry_nodelet::runtime::containerd::{Containerd, NAMESPACE};
use ferry_nodelet::runtime::pods_containerd::ContainerdRuntime;
use ferry_nodelet::{Config, Nodelet};
use ferry_testkit::Cluster;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn running(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

/// Wait until the container's log has its `done` line; returns the log.
async fn log_of(root: &Path, pod: &Pod) -> Result<String> {
    let uid = pod.metadata.uid.clone().context("uid")?;
    let path = root.join(format!("nodelet/pods/{uid}/logs/c/0.log"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let log = std::fs::read_to_string(&path).unwrap_or_default();
        if log.contains("done") {
            return Ok(log);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{}: no 'done' line in {log:?}", path.display());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of a `/proc/self/status` line the container printed (`CapEff:\t...`).
fn field<'a>(log: &'a str, name: &str) -> &'a str {
    log.lines().find_map(|l| l.strip_prefix(name)).map(str::trim).unwrap_or("")
}

const REPORT: &str = "echo uid=$(id -u) gid=$(id -g) groups=$(id -G); \
    if touch /rootfile 2>/dev/null; then echo root=rw; else echo root=ro; fi; \
    touch /data/f && echo datagroup=$(stat -c %g /data/f); \
    grep -E '^(CapEff|CapBnd|NoNewPrivs):' /proc/self/status; echo done; exec sleep 3600";

fn pod(name: &str, pod_sc: serde_json::Value, c_sc: serde_json::Value) -> Result<Pod> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"nodeName": "sec-1", "terminationGracePeriodSeconds": 1, "securityContext": pod_sc,
                 "volumes": [{"name": "data", "emptyDir": {}}],
                 "containers": [{"name": "c", "image": "ferry/busybox:test", "command": ["sh", "-c", REPORT],
                                 "securityContext": c_sc, "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}
    }))?)
}

async fn http_get(addr: &str) -> Result<String> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    Ok(out)
}

#[tokio::test(flavor = "multi_thread")]
async fn security_context_and_host_ports() -> Result<()> {
    ferry_testkit::init();
    let cluster = Cluster::start().await?;
    let client = cluster.client().await?;
    let daemon = ferry_testkit::Containerd::start().await?;
    let root = tempfile::tempdir()?;
    let archive = root.path().join("bb.tar");
    ferry_testkit::busybox_image_archive(&archive, "docker.io/ferry/busybox:test")?;
    Containerd::connect(&daemon.socket, NAMESPACE).await?.import_archive(&archive).await?;

    let u = std::process::id() ^ 0x5a5a;
    let bridge = ferry_testkit::LinkGuard(format!("fs{:x}", u & 0xffffff));
    let subnet = format!("10.{}.{}.0/24", 100 + (u % 50), (u >> 8) % 256);
    let config = common::runtime_config(root.path(), &bridge, &subnet);
    let runtime = Arc::new(
        ContainerdRuntime::new(Containerd::connect(&daemon.socket, NAMESPACE).await?, config)
            .with_client(client.clone()),
    );
    let mut nc = Config::new("sec-1", root.path().to_path_buf());
    nc.pod_cidr = Some(subnet);
    let machine = Machine::probe(root.path(), Some([127, 0, 0, 1].into()))?;
    let mut nodelet = Nodelet::new(client.clone(), nc, machine, runtime);
    nodelet.resync_period = Duration::from_millis(500);
    let task = tokio::spawn(nodelet.run());
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let host_port = ferry_testkit::free_port()?;

    let result = async {
        // Pod-level user, groups and fsGroup; the container overrides the user, makes its root
        // read-only, forbids escalation and keeps only NET_BIND_SERVICE.
        let secure = pod(
            "secure",
            json!({"runAsUser": 1000, "runAsGroup": 3000, "supplementalGroups": [4000], "fsGroup": 2000}),
            json!({"runAsUser": 1001, "readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false,
                   "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}),
        )?;
        let defaults = pod("defaults", json!({}), json!({}))?;
        let privileged = pod("privileged", json!({}), json!({"privileged": true}))?;
        let mut rogue = pod("rogue", json!({"runAsNonRoot": true}), json!({}))?;
        if let Some(c) = rogue.spec.as_mut().map(|s| &mut s.containers[0]) {
            c.command = Some(vec!["sleep".into(), "3600".into()]);
        }
        for p in [&secure, &defaults, &privileged, &rogue] {
            pods.create(&PostParams::default(), p).await?;
        }

        let p = ferry_testkit::wait_pod(&pods, "secure", "Running", running).await?;
        let log = log_of(root.path(), &p).await?;
        assert!(log.contains("uid=1001 gid=3000 groups="), "{log}");
        let groups = log.lines().find_map(|l| l.split_once("groups=")).map(|(_, g)| g).unwrap_or("");
        let mut groups: Vec<&str> = groups.split_whitespace().collect();
        groups.sort();
        assert_eq!(groups, ["2000", "3000", "4000"], "{log}");
        assert!(log.contains("root=ro"), "{log}");
        assert!(log.contains("datagroup=2000"), "{log}");
        assert_eq!(field(&log, "CapBnd:"), "0000000000000400", "{log}");
        assert_eq!(field(&log, "CapEff:"), "0000000000000000", "{log}");
        assert_eq!(field(&log, "NoNewPrivs:"), "1", "{log}");

        // Root with containerd's default capability set, a writable root, escalation allowed.
        let p = ferry_testkit::wait_pod(&pods, "defaults", "Running", running).await?;
        let log = log_of(root.path(), &p).await?;
        assert!(log.contains("uid=0 gid=0") && log.contains("root=rw"), "{log}");
        assert_eq!(field(&log, "CapEff:"), "00000000a80425fb", "{log}");
        assert_eq!(field(&log, "NoNewPrivs:"), "0", "{log}");

        // Privileged: every capability (CAP_SYS_ADMIN is bit 21).
        let p = ferry_testkit::wait_pod(&pods, "privileged", "Running", running).await?;
        let log = log_of(root.path(), &p).await?;
        let eff = u64::from_str_radix(field(&log, "CapEff:"), 16).unwrap_or(0);
        let status = std::fs::read_to_string("/proc/self/status")?;
        let ours = status.lines().find_map(|l| l.strip_prefix("CapBnd:")).map(str::trim).unwrap_or("");
        let ours = u64::from_str_radix(ours, 16).unwrap_or(0);
        assert!(eff == ours && eff & (1 << 21) != 0, "{log} (the test's bounding set: {ours:x})");

        // runAsNonRoot with an image that runs as root: refused with a config error.
        let p = ferry_testkit::wait_pod(&pods, "rogue", "CreateContainerConfigError", |p| {
            p.status.as_ref().and_then(|s| s.container_statuses.as_ref()).and_then(|c| c.first()).is_some_and(|c| {
                c.state.as_ref().and_then(|s| s.waiting.as_ref()).and_then(|w| w.reason.as_deref())
                    == Some("CreateContainerConfigError")
            })
        })
        .await?;
        assert!(format!("{:?}", p.status).contains("runAsNonRoot"), "{:?}", p.status);

        // hostPort: the pod's httpd on 8080 answers on the node's port, through portmap.
        let web: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web"},
            "spec": {"nodeName": "sec-1", "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "c", "image": "ferry/busybox:test",
                        "command": ["sh", "-c", "echo via-host-port > /tmp/index.html; exec httpd -f -p 8080 -h /tmp"],
                        "ports": [{"containerPort": 8080, "hostPort": host_port}]}]}
        }))?;
        pods.create(&PostParams::default(), &web).await?;
        ferry_testkit::wait_pod(&pods, "web", "Running", running).await?;
        let addr = format!("127.0.0.1:{host_port}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            match http_get(&addr).await {
                Ok(b) if b.contains("via-host-port") => break,
                other if tokio::time::Instant::now() > deadline => bail!("hostPort {addr}: {other:?}"),
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        pods.delete("web", &Default::default()).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while pods.get_opt("web").await?.is_some() {
            if tokio::time::Instant::now() > deadline {
                bail!("pod web was not removed");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let nat = std::process::Command::new("iptables").args(["-t", "nat", "-S"]).output()?;
        let rules = String::from_utf8_lossy(&nat.stdout);
        assert!(!rules.contains(&format!("--dport {host_port} ")), "portmap rules left behind:\n{rules}");
        Ok::<(), anyhow::Error>(())
    }
    .await;
    let result = result.with_context(|| format!("containerd log:\n{}", daemon.log()));
    for p in ["secure", "defaults", "privileged", "rogue", "web"] {
        let _ = pods.delete(p, &Default::default()).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !pods.list(&ListParams::default()).await.map(|l| l.items.is_empty()).unwrap_or(true)
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    task.abort();
    result
}

#[tokio::test(flavor = "multi_thread")]
async fn pod_cidr_comes_from_the_node_first() -> Result<()> {
    use ferry_nodelet::node::{pod_cidr, NodeError};
    use k8s_openapi::api::core::v1::Node;
    ferry_testkit::init();
    let cluster = Cluster::start().await?;
    let client = cluster.client().await?;
    // No Node yet: the flag.
    assert_eq!(pod_cidr(&client, "cidr-1", Some("10.1.0.0/24")).await?, "10.1.0.0/24");
    assert!(matches!(pod_cidr(&client, "cidr-1", None).await, Err(NodeError::NoPodCidr(_))));
    // A Node with spec.podCIDR (an allocator or the admin set it): that one, whatever the flag says.
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node =
        serde_json::from_value(json!({"metadata": {"name": "cidr-1"}, "spec": {"podCIDR": "10.9.0.0/24"}}))?;
    nodes.create(&PostParams::default(), &node).await?;
    assert_eq!(pod_cidr(&client, "cidr-1", Some("10.1.0.0/24")).await?, "10.9.0.0/24");
    assert_eq!(pod_cidr(&client, "cidr-1", None).await?, "10.9.0.0/24");
    Ok(())
}
