//! Pods on real containerd + runc + CNI (bridge, host-local, loopback), with the API server and
//! etcd, and an image built from busybox-static and imported by the test.

mod common;

use anyhow::{bail, Context, Result};
use ferry_nodelet::machine::Machine;
use ferry_nodelet::runtime::cni;
use ferry_nodelet::runtime::containerd::{Containerd, NAMESPACE};
use ferry_nodelet::runtime::pods_containerd::ContainerdRuntime;
use ferry_nodelet::{Config, Nodelet};
use ferry_testkit::Cluster;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{Api, DeleteParams, PostParams};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn http_get(ip: &str, port: u16, path: &str) -> Result<String> {
    let mut s = tokio::net::TcpStream::connect((ip, port)).await?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {ip}\r\n\r\n").as_bytes()).await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    Ok(out)
}

fn unique() -> u32 {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(7);
    n ^ std::process::id()
}

#[tokio::test(flavor = "multi_thread")]
async fn pods_run_on_containerd() -> Result<()> {
    let cluster = Cluster::start().await?;
    let client = cluster.client().await?;
    let daemon = ferry_testkit::Containerd::start().await?;
    let root = tempfile::tempdir()?;
    let archive = root.path().join("bb.tar");
    ferry_testkit::busybox_image_archive(&archive, "docker.io/ferry/busybox:test")?;
    let ctrd = Containerd::connect(&daemon.socket, NAMESPACE).await?;
    ctrd.import_archive(&archive).await?;

    let u = unique();
    let bridge = ferry_testkit::LinkGuard(format!("fy{:x}", u & 0xffffff));
    let subnet = format!("10.{}.{}.0/24", 200 + (u % 50), (u >> 8) % 256);
    let ipam_dir = root.path().join("ipam");
    let config = common::runtime_config(root.path(), &bridge, &subnet);
    let runtime = Arc::new(
        ContainerdRuntime::new(Containerd::connect(&daemon.socket, NAMESPACE).await?, config)
            .with_client(client.clone()),
    );
    let mut nc = Config::new("ctr-1", root.path().to_path_buf());
    nc.pod_cidr = Some(subnet.clone());
    let machine = Machine::probe(root.path(), Some([127, 0, 0, 1].into()))?;
    let mut nodelet = Nodelet::new(client.clone(), nc, machine, runtime.clone());
    nodelet.resync_period = Duration::from_millis(500);
    let task = tokio::spawn(nodelet.run());

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-config"}, "data": {"greeting": "ferry", "page.txt": "from-volume"}
        }))?,
    )
    .await?;
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({
                "metadata": {"name": "web-secret"}, "stringData": {"token": "s3cret"}
            }))?,
        )
        .await?;
    let web: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web"},
        "spec": {
            "nodeName": "ctr-1",
            "terminationGracePeriodSeconds": 2,
            "containers": [
                {"name": "httpd", "image": "ferry/busybox:test",
                 "command": ["sh", "-c", "echo hello-$GREETING-$TOKEN-$POD_NAME-$(cat /etc/cfg/page.txt)-$(cat /work/init.txt) > /var/www/index.html; exec httpd -f -p 8080 -h /var/www"],
                 "env": [
                    {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "web-config", "key": "greeting"}}},
                    {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "web-secret", "key": "token"}}},
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
                 ],
                 "volumeMounts": [{"name": "cfg", "mountPath": "/etc/cfg", "readOnly": true}, {"name": "work", "mountPath": "/work"}]},
                {"name": "client", "image": "ferry/busybox:test",
                 "command": ["sh", "-c", "while true; do wget -q -O - http://127.0.0.1:8080/index.html; sleep 0.5; done"]}
            ],
            "initContainers": [
                {"name": "first", "image": "ferry/busybox:test", "command": ["sh", "-c", "echo from > /work/init.txt"],
                 "volumeMounts": [{"name": "work", "mountPath": "/work"}]},
                {"name": "second", "image": "ferry/busybox:test", "command": ["sh", "-c", "sed -i s/from/from-init/ /work/init.txt"],
                 "volumeMounts": [{"name": "work", "mountPath": "/work"}]}
            ],
            "volumes": [{"name": "cfg", "configMap": {"name": "web-config"}}, {"name": "work", "emptyDir": {}}]
        }
    }))?;
    pods.create(&PostParams::default(), &web).await?;
    let running = ferry_testkit::wait_pod(&pods, "web", "Ready", |p| {
        p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    })
    .await
    .with_context(|| daemon.log())?;
    let ip = running.status.as_ref().and_then(|s| s.pod_ip.clone()).context("podIP")?;
    let uid = running.metadata.uid.clone().context("uid")?;
    assert!(ip.starts_with(&subnet[..subnet.len() - 4]), "{ip} not in {subnet}");
    let inits = running.status.as_ref().and_then(|s| s.init_container_statuses.clone()).unwrap_or_default();
    let reasons: Vec<_> = inits
        .iter()
        .map(|c| {
            c.state.as_ref().and_then(|s| s.terminated.as_ref()).and_then(|t| t.reason.clone()).unwrap_or_default()
        })
        .collect();
    assert_eq!(reasons, ["Completed", "Completed"]);

    // Reachable on the pod IP from the host.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let body = loop {
        match http_get(&ip, 8080, "/index.html").await {
            Ok(b) if b.contains("hello-ferry-s3cret-web-from-volume-from-init") => break b,
            other if tokio::time::Instant::now() > deadline => bail!("httpd on {ip}: {other:?}"),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    assert!(body.starts_with("HTTP/1.") && body.contains("200"), "{body}");

    // The second container reached the first over localhost: its log shows the page.
    let log = root.path().join(format!("nodelet/pods/{uid}/logs/client/0.log"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("hello-ferry") {
        if tokio::time::Instant::now() > deadline {
            bail!("client log {} never showed the page", log.display());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A crashing container restarts with backoff and shows CrashLoopBackOff.
    let crash: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "crash"},
        "spec": {"nodeName": "ctr-1", "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "c", "image": "ferry/busybox:test", "command": ["sh", "-c", "echo boom; exit 3"]}]}
    }))?;
    pods.create(&PostParams::default(), &crash).await?;
    let looping = ferry_testkit::wait_pod(&pods, "crash", "CrashLoopBackOff after 2 restarts", |p| {
        p.status.as_ref().and_then(|s| s.container_statuses.as_ref()).and_then(|c| c.first()).is_some_and(|c| {
            c.restart_count >= 2
                && c.state.as_ref().and_then(|s| s.waiting.as_ref()).and_then(|w| w.reason.as_deref())
                    == Some("CrashLoopBackOff")
        })
    })
    .await?;
    let cs = looping.status.as_ref().and_then(|s| s.container_statuses.clone()).unwrap_or_default();
    let last = cs[0].last_state.as_ref().and_then(|l| l.terminated.as_ref()).context("lastState")?;
    assert_eq!((last.exit_code, last.reason.as_deref()), (3, Some("Error")));
    assert_eq!(looping.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Running"));

    // A hostNetwork pod has no netns of its own: it serves on the host's loopback.
    let port = ferry_testkit::free_port()?;
    let hostnet: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "hostnet"},
        "spec": {"nodeName": "ctr-1", "hostNetwork": true, "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "web", "image": "ferry/busybox:test",
                                 "command": ["sh", "-c", format!("echo on-host > /var/www/index.html; exec httpd -f -p 127.0.0.1:{port} -h /var/www")]}]}
    }))?;
    pods.create(&PostParams::default(), &hostnet).await?;
    let hp = ferry_testkit::wait_pod(&pods, "hostnet", "Running", |p| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
    })
    .await?;
    assert_eq!(hp.status.as_ref().and_then(|s| s.pod_ip.as_deref()), Some("127.0.0.1"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match http_get("127.0.0.1", port, "/index.html").await {
            Ok(b) if b.contains("on-host") => break,
            other if tokio::time::Instant::now() > deadline => bail!("hostNetwork httpd: {other:?}"),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    let hp_uid = hp.metadata.uid.clone().unwrap_or_default();
    assert!(!cni::netns_path(&format!("ferry-{hp_uid}")).exists());

    // Readiness gates Ready (httpGet against a file the test controls); a failing liveness
    // probe (tcpSocket on a closed port) restarts its container.
    let www = root.path().join("www");
    std::fs::create_dir_all(&www)?;
    let probed: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "probed"},
        "spec": {"nodeName": "ctr-1", "terminationGracePeriodSeconds": 1,
                 "containers": [
                    {"name": "web", "image": "ferry/busybox:test", "command": ["httpd", "-f", "-p", "8080", "-h", "/www"],
                     "ports": [{"name": "http", "containerPort": 8080}],
                     "readinessProbe": {"httpGet": {"path": "/ready.html", "port": "http"}, "periodSeconds": 1, "failureThreshold": 1},
                     "volumeMounts": [{"name": "www", "mountPath": "/www"}]},
                    {"name": "dead", "image": "ferry/busybox:test", "command": ["sleep", "3600"],
                     "livenessProbe": {"tcpSocket": {"port": 9999}, "periodSeconds": 1, "failureThreshold": 1}}
                 ],
                 "volumes": [{"name": "www", "hostPath": {"path": www}}]}
    }))?;
    pods.create(&PostParams::default(), &probed).await?;
    let container = |p: &Pod, name: &str| {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|c| c.iter().find(|c| c.name == name).cloned())
    };
    let restarted = ferry_testkit::wait_pod(&pods, "probed", "liveness restart while web runs unready", |p| {
        let web = container(p, "web");
        let dead = container(p, "dead");
        web.is_some_and(|w| w.state.as_ref().is_some_and(|s| s.running.is_some()) && !w.ready)
            && dead.is_some_and(|d| d.restart_count >= 1)
    })
    .await?;
    let ready_cond = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready").map(|c| c.status.clone()))
    };
    assert_eq!(ready_cond(&restarted).as_deref(), Some("False"));
    std::fs::write(www.join("ready.html"), "ok")?;
    ferry_testkit::wait_pod(&pods, "probed", "web ready", |p| container(p, "web").is_some_and(|w| w.ready)).await?;
    std::fs::remove_file(www.join("ready.html"))?;
    ferry_testkit::wait_pod(&pods, "probed", "web unready again", |p| container(p, "web").is_some_and(|w| !w.ready))
        .await?;

    // Graceful termination: SIGTERM reaches a container that handles it; one that ignores it
    // is killed after the grace period; both pods are then removed from the API.
    let out = root.path().join("out");
    std::fs::create_dir_all(&out)?;
    for (name, script) in [
        ("polite", "trap 'echo got-term > /out/term; exit 0' TERM; echo up > /out/up; while true; do sleep 0.2; done"),
        ("stubborn", "trap '' TERM; while true; do sleep 0.2; done"),
    ] {
        let p: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"nodeName": "ctr-1", "terminationGracePeriodSeconds": 2,
                     "containers": [{"name": "c", "image": "ferry/busybox:test", "command": ["sh", "-c", script],
                                     "volumeMounts": [{"name": "out", "mountPath": "/out"}]}],
                     "volumes": [{"name": "out", "hostPath": {"path": out}}]}
        }))?;
        pods.create(&PostParams::default(), &p).await?;
        ferry_testkit::wait_pod(&pods, name, "Ready", ready).await?;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !out.join("up").exists() {
        if tokio::time::Instant::now() > deadline {
            bail!("polite container never started its loop");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for name in ["polite", "stubborn"] {
        let deleted = pods.delete(name, &DeleteParams::default()).await?;
        // Bound and running: the API server only marks it; the nodelet finishes the job.
        assert!(deleted.is_left(), "{name} was removed before the nodelet stopped it");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while pods.get_opt("polite").await?.is_some() || pods.get_opt("stubborn").await?.is_some() {
        if tokio::time::Instant::now() > deadline {
            bail!("terminating pods not removed");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(std::fs::read_to_string(out.join("term"))?.trim(), "got-term");

    // Deleting leaves no container, task, snapshot, netns or IP allocation behind.
    for name in ["web", "crash", "probed", "hostnet"] {
        pods.delete(name, &DeleteParams::default()).await?;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !pods.list(&Default::default()).await?.items.is_empty() {
        if tokio::time::Instant::now() > deadline {
            bail!("pods not removed");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(ctrd.pod_uids().await?.is_empty(), "containers left behind");
    assert!(!ctrd.has_snapshot(&format!("{uid}-httpd")).await?, "snapshot left behind");
    assert!(!cni::netns_path(&format!("ferry-{uid}")).exists(), "netns left behind");
    let allocations: Vec<_> = std::fs::read_dir(ipam_dir.join("ferry"))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("10."))
        .collect();
    assert!(allocations.is_empty(), "IP allocations left: {allocations:?}");
    let cgroups: Vec<_> = std::fs::read_dir("/sys/fs/cgroup")?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("ferry").join(&uid))
        .filter(|p| p.exists())
        .collect();
    assert!(cgroups.is_empty(), "cgroups left: {cgroups:?}");
    task.abort();
    Ok(())
}

struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// (restartCount, startedAt) of each pod's first container.
fn snapshot(list: &[Pod]) -> Vec<(String, i32, String)> {
    let mut out: Vec<_> = list
        .iter()
        .map(|p| {
            let cs = p.status.as_ref().and_then(|s| s.container_statuses.as_ref()).and_then(|c| c.first());
            (
                p.metadata.name.clone().unwrap_or_default(),
                cs.map(|c| c.restart_count).unwrap_or(-1),
                format!(
                    "{:?}",
                    cs.and_then(|c| c.state.as_ref()).and_then(|s| s.running.as_ref()).map(|r| &r.started_at)
                ),
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_and_restart_keeps_pods_running() -> Result<()> {
    let cluster = Cluster::start().await?;
    let client = cluster.client().await?;
    let daemon = ferry_testkit::Containerd::start().await?;
    let root = tempfile::tempdir()?;
    let archive = root.path().join("bb.tar");
    ferry_testkit::busybox_image_archive(&archive, "docker.io/ferry/busybox:test")?;
    let ctrd = Containerd::connect(&daemon.socket, NAMESPACE).await?;
    ctrd.import_archive(&archive).await?;
    let u = unique().wrapping_add(0x5a5a5a);
    let bridge = ferry_testkit::LinkGuard(format!("fy{:x}", u & 0xffffff));
    let subnet = format!("10.{}.{}.0/24", 200 + (u % 50), (u >> 8) % 256);
    let node_root = root.path().join("nodelet");
    let spawn = || -> Result<Killed> {
        Ok(Killed(
            std::process::Command::new(env!("CARGO_BIN_EXE_ferry-nodelet"))
                .args(["--runtime", "containerd", "--node-name", "ctr-r", "--node-ip", "127.0.0.1"])
                .args(["--pod-cidr", &subnet, "--cni-bridge", &bridge.0])
                .arg("--containerd-address")
                .arg(&daemon.socket)
                .arg("--kubeconfig")
                .arg(cluster.kubeconfig())
                .arg("--root-dir")
                .arg(&node_root)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()?,
        ))
    };
    let mut nodelet = spawn()?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    for i in 0..10 {
        let p: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("s{i}")},
            "spec": {"nodeName": "ctr-r", "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "c", "image": "ferry/busybox:test", "command": ["sleep", "3600"]}]}
        }))?;
        pods.create(&PostParams::default(), &p).await?;
    }
    let wait_all = |n: usize| {
        let pods = pods.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
            loop {
                let list = pods.list(&Default::default()).await?.items;
                if list.len() == n && list.iter().all(ready) {
                    return Ok::<_, anyhow::Error>(list);
                }
                if tokio::time::Instant::now() > deadline {
                    bail!("pods not all Ready: {:?}", snapshot(&list));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let before = snapshot(&wait_all(10).await?);
    assert!(before.iter().all(|(_, restarts, started)| *restarts == 0 && started != "None"), "{before:?}");

    // kill -9; meanwhile one pod is force-deleted from the API.
    nodelet.0.kill()?;
    nodelet.0.wait()?;
    let gone = pods.get("s9").await?.metadata.uid.context("uid")?;
    pods.delete("s9", &DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::default() }).await?;
    nodelet = spawn()?;

    // The nodelet adopts what runs: same restart counts and start times, all still Ready,
    // and the force-deleted pod's leftovers are removed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while ctrd.pod_uids().await?.contains(&gone) || cni::netns_path(&format!("ferry-{gone}")).exists() {
        if tokio::time::Instant::now() > deadline {
            bail!("leftovers of the deleted pod were not cleaned up");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Give the restarted nodelet a few sync rounds to (wrongly) change anything.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = snapshot(&wait_all(9).await?);
    let expected: Vec<_> = before.into_iter().filter(|(n, _, _)| n != "s9").collect();
    assert_eq!(after, expected);

    for i in 0..9 {
        pods.delete(&format!("s{i}"), &DeleteParams::default()).await?;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !pods.list(&Default::default()).await?.items.is_empty() {
        if tokio::time::Instant::now() > deadline {
            bail!("pods not removed");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(ctrd.pod_uids().await?.is_empty());
    drop(nodelet);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_hog_is_oom_killed() -> Result<()> {
    let cluster = Cluster::start().await?;
    let client = cluster.client().await?;
    let daemon = ferry_testkit::Containerd::start().await?;
    let root = tempfile::tempdir()?;
    let archive = root.path().join("bb.tar");
    ferry_testkit::busybox_image_archive(&archive, "docker.io/ferry/busybox:test")?;
    let ctrd = Containerd::connect(&daemon.socket, NAMESPACE).await?;
    ctrd.import_archive(&archive).await?;
    let u = unique().wrapping_add(0x3c3c3c);
    let bridge = ferry_testkit::LinkGuard(format!("fy{:x}", u & 0xffffff));
    let subnet = format!("10.{}.{}.0/24", 200 + (u % 50), (u >> 8) % 256);
    let config = common::runtime_config(root.path(), &bridge, &subnet);
    let runtime = Arc::new(
        ContainerdRuntime::new(Containerd::connect(&daemon.socket, NAMESPACE).await?, config)
            .with_client(client.clone()),
    );
    let machine = Machine::probe(root.path(), Some([127, 0, 0, 1].into()))?;
    let mut nodelet = Nodelet::new(client.clone(), Config::new("ctr-oom", root.path().to_path_buf()), machine, runtime);
    nodelet.resync_period = Duration::from_millis(500);
    let task = tokio::spawn(nodelet.run());
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let hog: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "hog"},
        "spec": {"nodeName": "ctr-oom", "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "c", "image": "ferry/busybox:test",
                                 "command": ["sh", "-c", "x=aaaaaaaaaaaaaaaa; while true; do x=$x$x; done"],
                                 "resources": {"limits": {"memory": "32Mi", "cpu": "500m"}}}]}
    }))?;
    pods.create(&PostParams::default(), &hog).await?;
    let failed = ferry_testkit::wait_pod(&pods, "hog", "Failed", |p| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed")
    })
    .await?;
    let cs = failed.status.as_ref().and_then(|s| s.container_statuses.clone()).unwrap_or_default();
    let t = cs.first().and_then(|c| c.state.as_ref()).and_then(|s| s.terminated.clone()).context("terminated")?;
    assert_eq!((t.exit_code, t.reason.as_deref()), (137, Some("OOMKilled")));
    pods.delete("hog", &DeleteParams::default()).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while pods.get_opt("hog").await?.is_some() {
        if tokio::time::Instant::now() > deadline {
            bail!("hog not removed");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A terminal pod goes from the API at once; the nodelet then removes its container.
    while !ctrd.pod_uids().await?.is_empty() {
        if tokio::time::Instant::now() > deadline {
            bail!("the hog's container was not removed");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    task.abort();
    Ok(())
}
