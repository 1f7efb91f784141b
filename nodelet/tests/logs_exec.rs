//! Logs, exec, exec probes and preStop exec on real containerd, through the API server, with the
//! nodelet running on its own node credentials and serving its HTTPS endpoint: stock kubectl
//! (`logs`, `logs -f`, `--previous`, `exec`, `exec -i`), kube-rs, the official Python client,
//! and the endpoint refusing anyone but the API server.

mod common;

use anyhow::{bail, Context, Result};
use ferry_nodelet::machine::Machine;
use ferry_nodelet::runtime::containerd::{Containerd, NAMESPACE};
use ferry_nodelet::runtime::pods_containerd::ContainerdRuntime;
use ferry_nodelet::server::{ServerConfig, APISERVER_CLIENT_USER};
use ferry_nodelet::{Config, Nodelet};
use ferry_testkit::Cluster;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, AttachParams, DeleteParams, LogParams, PostParams};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

const NODE: &str = "io-1";

fn unique() -> u32 {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(7);
    n ^ std::process::id() ^ 0x5a5a5a
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn restarts(p: &Pod) -> i32 {
    p.status.as_ref().and_then(|s| s.container_statuses.as_ref()).and_then(|c| c.first()).map_or(0, |c| c.restart_count)
}

/// The stock kubectl the test suite provisions (scripts/lib.sh), if present.
fn kubectl_bin() -> Option<PathBuf> {
    let venv = match std::env::var_os("FERRY_VENV") {
        Some(v) => PathBuf::from(v),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".cache/ferry/venv"),
    };
    Some(venv.join("bin/kubectl")).filter(|p| p.is_file())
}

fn venv_python() -> Option<PathBuf> {
    let venv = match std::env::var_os("FERRY_VENV") {
        Some(v) => PathBuf::from(v),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".cache/ferry/venv"),
    };
    Some(venv.join("bin/python")).filter(|p| p.is_file())
}

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

async fn run(program: &Path, args: &[&str], stdin: Option<&str>) -> Result<Out> {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = cmd.spawn().with_context(|| format!("running {}", program.display()))?;
    if let (Some(input), Some(mut w)) = (stdin, child.stdin.take()) {
        w.write_all(input.as_bytes()).await?;
        drop(w);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .with_context(|| format!("{} {args:?} timed out", program.display()))??;
    Ok(Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Send `GET path` to the nodelet endpoint with `tls`; the raw response (or the error).
async fn nodelet_get(addr: std::net::SocketAddr, tls: rustls::ClientConfig, path: &str) -> Result<String> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1")?;
    let mut s = tokio_rustls::TlsConnector::from(Arc::new(tls)).connect(name, tcp).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn client_tls(ca_pem: &str, identity: Option<(String, String)>) -> Result<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca_pem.as_bytes())?)?;
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    Ok(match identity {
        Some((cert, key)) => builder.with_client_auth_cert(
            vec![CertificateDer::from_pem_slice(cert.as_bytes())?],
            PrivateKeyDer::from_pem_slice(key.as_bytes())?,
        )?,
        None => builder.with_no_client_auth(),
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_exec_probes_and_prestop() -> Result<()> {
    let cluster = Cluster::start().await?;
    let admin = cluster.client().await?;
    let (creds, node_dir) = cluster.node_credentials(NODE, &["127.0.0.1".to_string()])?;
    let node_client = ferry_testkit::client_from(&node_dir.join("kubeconfig")).await?;

    let daemon = ferry_testkit::Containerd::start().await?;
    let root = tempfile::tempdir()?;
    let archive = root.path().join("bb.tar");
    ferry_testkit::busybox_image_archive(&archive, "docker.io/ferry/busybox:test")?;
    Containerd::connect(&daemon.socket, NAMESPACE).await?.import_archive(&archive).await?;
    let u = unique();
    let bridge = ferry_testkit::LinkGuard(format!("fy{:x}", u & 0xffffff));
    let subnet = format!("10.{}.{}.0/24", 200 + (u % 50), (u >> 8) % 256);
    let config = common::runtime_config(root.path(), &bridge, &subnet);
    let runtime = Arc::new(
        ContainerdRuntime::new(Containerd::connect(&daemon.socket, NAMESPACE).await?, config)
            .with_client(node_client.clone())
            .with_log_driver(env!("CARGO_BIN_EXE_ferry-nodelet").into()),
    );
    let mut nc = Config::new(NODE, root.path().to_path_buf());
    nc.pod_cidr = Some(subnet);
    let machine = Machine::probe(root.path(), Some([127, 0, 0, 1].into()))?;
    let server = ServerConfig {
        addr: "127.0.0.1:0".parse()?,
        cert_pem: creds.serving_cert_pem.clone(),
        key_pem: creds.serving_key_pem.clone(),
        client_ca_pem: creds.ca_cert_pem.clone(),
        allowed_users: vec![APISERVER_CLIENT_USER.to_string()],
    };
    let mut nodelet = Nodelet::new(node_client.clone(), nc, machine, runtime).with_server(server);
    nodelet.resync_period = Duration::from_millis(500);
    let task = tokio::spawn(nodelet.run());

    // The Node (registered with the node's own credentials) publishes the endpoint's port.
    let nodes: Api<Node> = Api::all(admin.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let port = loop {
        let port = nodes
            .get_opt(NODE)
            .await?
            .and_then(|n| n.status)
            .and_then(|s| s.daemon_endpoints)
            .and_then(|d| d.kubelet_endpoint)
            .map_or(0, |e| e.port);
        if port > 0 {
            break port;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("node {NODE} does not publish its endpoint port");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let endpoint: std::net::SocketAddr = format!("127.0.0.1:{port}").parse()?;

    // A node's credentials write its own Node and Lease, never another node's or anything else.
    let node_nodes: Api<Node> = Api::all(node_client.clone());
    let other: Node = serde_json::from_value(serde_json::json!({"metadata": {"name": "someone-else"}}))?;
    nodes.create(&PostParams::default(), &other).await?;
    let label = serde_json::json!({"metadata": {"labels": {"x": "y"}}});
    let err = node_nodes
        .patch("someone-else", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&label))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 403 && s.message.contains("cannot modify node")),
        "{err:?}"
    );
    node_nodes.patch(NODE, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&label)).await?;
    let err = node_nodes.delete(NODE, &DeleteParams::default()).await.unwrap_err();
    assert!(matches!(&err, kube::Error::Api(s) if s.code == 403), "{err:?}");
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(node_client.clone(), "default");
    let cm = serde_json::from_value(serde_json::json!({"metadata": {"name": "from-node"}}))?;
    let err = cms.create(&PostParams::default(), &cm).await.unwrap_err();
    assert!(matches!(&err, kube::Error::Api(s) if s.code == 403), "{err:?}");
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(node_client.clone(), "kube-node-lease");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while leases.get_opt(NODE).await?.is_none() {
        if tokio::time::Instant::now() > deadline {
            bail!("the node's Lease was not written with its credentials");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Only the API server's identity may call the nodelet.
    let pki = &cluster.server.as_ref().context("server")?.pki;
    let as_api =
        client_tls(&creds.ca_cert_pem, Some(pki.issue_client_cert(APISERVER_CLIENT_USER, &["system:masters"])?))?;
    assert!(nodelet_get(endpoint, as_api, "/healthz").await?.starts_with("HTTP/1.1 200"));
    let as_admin = client_tls(&creds.ca_cert_pem, Some(pki.issue_client_cert("ferry-admin", &["system:masters"])?))?;
    let answer = nodelet_get(endpoint, as_admin, "/containerLogs/default/talker/c").await?;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    let anonymous = nodelet_get(endpoint, client_tls(&creds.ca_cert_pem, None)?, "/healthz").await;
    assert!(anonymous.as_ref().map_or(true, |a| !a.contains(" 200 ")), "{anonymous:?}");
    let other_ca = tempfile::tempdir()?;
    let stranger = ferry_apiserver::pki::Pki::load_or_create(other_ca.path(), &[], "https://127.0.0.1:1")?
        .issue_client_cert(APISERVER_CLIENT_USER, &["system:masters"])?;
    let forged = nodelet_get(endpoint, client_tls(&creds.ca_cert_pem, Some(stranger))?, "/healthz").await;
    assert!(forged.as_ref().map_or(true, |a| !a.contains(" 200 ")), "{forged:?}");

    let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
    let hostdir = tempfile::tempdir()?;
    let spec = |name: &str, extra: serde_json::Value| -> Result<Pod> {
        let mut p = serde_json::json!({
            "metadata": {"name": name},
            "spec": {"nodeName": NODE, "terminationGracePeriodSeconds": 5, "containers": [{"name": "c", "image": "ferry/busybox:test"}]}
        });
        json_merge(&mut p["spec"], extra);
        Ok(serde_json::from_value(p)?)
    };
    pods.create(&PostParams::default(), &spec("talker", serde_json::json!({"containers": [{"name": "c", "image": "ferry/busybox:test",
        "command": ["sh", "-c", "echo line-1; sleep 0.2; echo err-1 >&2; i=0; while true; do i=$((i+1)); echo tick-$i; sleep 0.3; done"]}]}))?).await?;
    pods.create(&PostParams::default(), &spec("crasher", serde_json::json!({"containers": [{"name": "c", "image": "ferry/busybox:test",
        "command": ["sh", "-c", "n=$(cat /d/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /d/n; echo instance-$n; sleep 0.5; exit 1"],
        "volumeMounts": [{"name": "d", "mountPath": "/d"}]}], "volumes": [{"name": "d", "emptyDir": {}}]}))?).await?;
    pods.create(&PostParams::default(), &spec("probed", serde_json::json!({"containers": [{"name": "c", "image": "ferry/busybox:test",
        "command": ["sh", "-c", "while true; do sleep 0.2; done"],
        "readinessProbe": {"exec": {"command": ["test", "-f", "/tmp/ready"]}, "periodSeconds": 1},
        "livenessProbe": {"exec": {"command": ["sh", "-c", "test ! -f /tmp/die"]}, "periodSeconds": 1, "failureThreshold": 1}}]}))?).await?;
    pods.create(
        &PostParams::default(),
        &spec(
            "stopper",
            serde_json::json!({"containers": [{"name": "c", "image": "ferry/busybox:test",
        "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.2; done"],
        "lifecycle": {"preStop": {"exec": {"command": ["sh", "-c", "echo prestop-ran > /host/marker"]}}},
        "volumeMounts": [{"name": "host", "mountPath": "/host"}]}],
        "volumes": [{"name": "host", "hostPath": {"path": hostdir.path()}}]}),
        )?,
    )
    .await?;
    for name in ["talker", "stopper"] {
        ferry_testkit::wait_pod(&pods, name, "Ready", ready).await?;
    }

    // kube-rs: logs and exec (WebSocket v5, falling back to v4).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let logs = loop {
        let logs = pods.logs("talker", &LogParams::default()).await?;
        if logs.contains("tick-2\n") || tokio::time::Instant::now() > deadline {
            break logs;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // stdout and stderr are separate pipes: only lines written apart in time have a fixed order.
    assert!(
        logs.starts_with("line-1\n")
            && logs.contains("line-1\n")
            && logs.contains("err-1\n")
            && logs.contains("tick-1\n"),
        "{logs}"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let tail =
        pods.logs("talker", &LogParams { tail_lines: Some(1), timestamps: true, ..LogParams::default() }).await?;
    assert_eq!(tail.lines().count(), 1, "{tail}");
    let (ts, rest) = tail.trim_end().split_once(' ').context("timestamp")?;
    assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok() && rest.starts_with("tick-"), "{tail}");
    let limited = pods.logs("talker", &LogParams { limit_bytes: Some(4), ..LogParams::default() }).await?;
    assert_eq!(limited, "line");
    let since = pods.logs("talker", &LogParams { since_seconds: Some(1), ..LogParams::default() }).await?;
    assert!(!since.contains("line-1") && since.contains("tick-"), "{since}");
    let mut follow = Box::pin(pods.log_stream("talker", &LogParams { follow: true, ..LogParams::default() }).await?);
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let last_before: u32 = logs.lines().filter_map(|l| l.strip_prefix("tick-")?.parse().ok()).max().unwrap_or(0);
    while !seen.contains(&format!("tick-{}\n", last_before + 3)) {
        let mut line = String::new();
        tokio::time::timeout_at(deadline, futures::AsyncBufReadExt::read_line(&mut follow, &mut line))
            .await
            .context("logs -f stalled")??;
        seen.push_str(&line);
    }
    drop(follow);
    let mut attached = pods
        .exec("talker", ["sh", "-c", "echo hi; echo oops >&2; exit 7"], &AttachParams::default().stderr(true))
        .await?;
    let mut out = String::new();
    attached.stdout().context("stdout")?.read_to_string(&mut out).await?;
    let status = attached.take_status().context("status")?.await.context("no status")?;
    assert_eq!(out, "hi\n");
    assert_eq!(status.status.as_deref(), Some("Failure"));
    assert_eq!(status.reason.as_deref(), Some("NonZeroExitCode"));
    let causes = status.details.and_then(|d| d.causes).unwrap_or_default();
    assert_eq!(causes.first().and_then(|c| c.message.as_deref()), Some("7"));

    // A terminal, resized by the client.
    let mut term =
        pods.exec("talker", ["sh", "-c", "sleep 1; tty; stty size"], &AttachParams::interactive_tty()).await?;
    let mut resize = term.terminal_size().context("terminal size sender")?;
    futures::SinkExt::send(&mut resize, kube::api::TerminalSize { width: 100, height: 30 }).await?;
    let mut out = String::new();
    term.stdout().context("tty stdout")?.read_to_string(&mut out).await?;
    let status = term.take_status().context("status")?.await.context("no status")?;
    assert_eq!(status.status.as_deref(), Some("Success"), "{status:?}");
    assert!(out.starts_with("/dev/pts/") && out.contains("30 100"), "{out:?}");

    // A node cannot exec into pods, not even its own.
    let node_pods: Api<Pod> = Api::namespaced(node_client.clone(), "default");
    let err = node_pods.logs("talker", &LogParams::default()).await.unwrap_err();
    assert!(matches!(&err, kube::Error::Api(s) if s.code == 403), "{err:?}");

    // Errors as Kubernetes words them.
    let err = pods.logs("nosuch", &LogParams::default()).await.unwrap_err();
    assert!(matches!(&err, kube::Error::Api(s) if s.code == 404), "{err:?}");
    let err =
        pods.logs("talker", &LogParams { container: Some("nope".into()), ..LogParams::default() }).await.unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 400 && s.message == "container nope is not valid for pod talker"),
        "{err:?}"
    );
    let err = pods.logs("talker", &LogParams { previous: true, ..LogParams::default() }).await.unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 400 && s.message.contains("previous terminated container")),
        "{err:?}"
    );

    // Exec probes: readiness waits for a file that `exec` creates; liveness restarts the container.
    let probed = pods.get("probed").await?;
    assert!(!ready(&probed), "readiness passed before the file existed");
    let run_in = |name: &'static str, command: &'static [&'static str]| {
        let pods = pods.clone();
        async move {
            let mut p = pods.exec(name, command.iter().copied(), &AttachParams::default()).await?;
            // kube-rs wants the status taken before join.
            let status = p.take_status().context("status")?;
            p.join().await?;
            let status = status.await.context("no status")?;
            anyhow::ensure!(status.status.as_deref() == Some("Success"), "{command:?}: {status:?}");
            anyhow::Ok(())
        }
    };
    run_in("probed", &["touch", "/tmp/ready"]).await?;
    ferry_testkit::wait_pod(&pods, "probed", "Ready after the readiness file exists", ready).await?;
    run_in("probed", &["touch", "/tmp/die"]).await?;
    ferry_testkit::wait_pod(&pods, "probed", "restarted by the liveness probe", |p| restarts(p) >= 1).await?;

    // Stock kubectl.
    if let Some(kubectl) = kubectl_bin() {
        let kc = cluster.kubeconfig();
        let kc = kc.to_str().context("kubeconfig path")?;
        let k = |args: &[&str]| {
            [&["--kubeconfig", kc][..], args].concat().iter().map(|s| s.to_string()).collect::<Vec<_>>()
        };
        let kube = |args: Vec<String>, stdin: Option<&'static str>| {
            let kubectl = kubectl.clone();
            async move {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                run(&kubectl, &args, stdin).await
            }
        };
        let out = kube(k(&["logs", "talker"]), None).await?;
        assert!(out.code == Some(0) && out.stdout.contains("line-1\n"), "{} {}", out.stdout, out.stderr);
        let out = kube(k(&["exec", "talker", "--", "sh", "-c", "echo hi; exit 7"]), None).await?;
        assert_eq!((out.code, out.stdout.as_str()), (Some(7), "hi\n"), "{}", out.stderr);
        let out = kube(k(&["exec", "-i", "talker", "--", "cat"]), Some("data\nmore\n")).await?;
        assert_eq!((out.code, out.stdout.as_str()), (Some(0), "data\nmore\n"), "{}", out.stderr);
        let out = kube(k(&["logs", "nosuch"]), None).await?;
        assert!(out.code != Some(0) && out.stderr.contains("NotFound"), "{}", out.stderr);
        // logs -f streams new lines as they are written.
        let mut child = tokio::process::Command::new(&kubectl)
            .args(k(&["logs", "-f", "talker"]))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let mut lines = tokio::io::BufReader::new(child.stdout.take().context("stdout")?).lines();
        let current: u32 = pods
            .logs("talker", &LogParams { tail_lines: Some(1), ..LogParams::default() })
            .await?
            .trim()
            .strip_prefix("tick-")
            .and_then(|n| n.parse().ok())
            .context("tick")?;
        let want = format!("tick-{}", current + 3);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let line =
                tokio::time::timeout_at(deadline, lines.next_line()).await.context("kubectl logs -f stalled")??;
            if line.as_deref() == Some(want.as_str()) {
                break;
            }
            if line.is_none() {
                bail!("kubectl logs -f ended early");
            }
        }
        child.kill().await?;
        // --previous after a restart.
        ferry_testkit::wait_pod(&pods, "crasher", "restarted", |p| restarts(p) >= 2).await?;
        let prev = kube(k(&["logs", "crasher", "--previous"]), None).await?;
        let cur = kube(k(&["logs", "crasher"]), None).await?;
        let n = |s: &str| s.trim().strip_prefix("instance-").and_then(|n| n.parse::<u32>().ok());
        match (n(&prev.stdout), n(&cur.stdout)) {
            (Some(p), Some(c)) if p < c => {}
            other => bail!("--previous {:?} / current {:?}: {other:?} ({})", prev.stdout, cur.stdout, prev.stderr),
        }
    } else {
        assert!(std::env::var_os("CI").is_none(), "the stock kubectl must exist in CI");
        eprintln!("notice: no stock kubectl in the venv; skipping its part");
    }

    // The official Python client (v4.channel.k8s.io).
    if let Some(python) = venv_python() {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/exec_logs.py");
        let kc = cluster.kubeconfig();
        let args = [script.to_str().context("path")?, kc.to_str().context("path")?, "default", "talker"];
        let out = run(&python, &args, None).await?;
        assert!(out.code == Some(0) && out.stdout.contains("PASS"), "{}\n{}", out.stdout, out.stderr);
    } else {
        assert!(std::env::var_os("CI").is_none(), "the venv python must exist in CI");
    }

    // preStop runs before the container is stopped.
    pods.delete("stopper", &DeleteParams::default()).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while pods.get_opt("stopper").await?.is_some() {
        if tokio::time::Instant::now() > deadline {
            bail!("stopper was not deleted");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let marker = std::fs::read_to_string(hostdir.path().join("marker")).context("the preStop hook did not run")?;
    assert_eq!(marker, "prestop-ran\n");

    for name in ["talker", "crasher", "probed"] {
        pods.delete(name, &DeleteParams { grace_period_seconds: Some(1), ..DeleteParams::default() }).await?;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !pods.list(&Default::default()).await?.items.is_empty() {
        if tokio::time::Instant::now() > deadline {
            bail!("pods were not removed");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    task.abort();
    Ok(())
}

/// Merge `extra` into `base` (objects recursively; anything else replaced).
fn json_merge(base: &mut serde_json::Value, extra: serde_json::Value) {
    match (base, extra) {
        (serde_json::Value::Object(b), serde_json::Value::Object(e)) => {
            for (k, v) in e {
                json_merge(b.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (b, e) => *b = e,
    }
}
