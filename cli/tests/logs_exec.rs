//! `ferry logs` and `ferry exec` (the real binary) against a pod on real containerd, through the API
//! server and the nodelet's HTTPS endpoint.

use anyhow::{bail, Result};
use ferry_nodelet::machine::Machine;
use ferry_nodelet::runtime::cni::CniConfig;
use ferry_nodelet::runtime::containerd::{Containerd, NAMESPACE};
use ferry_nodelet::runtime::pods_containerd::{ContainerdConfig, ContainerdRuntime};
use ferry_nodelet::server::{ServerConfig, APISERVER_CLIENT_USER};
use ferry_nodelet::{Config, Nodelet};
use ferry_testkit::Cluster;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

async fn ferry(
    kubeconfig: &std::path::Path,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<(Option<i32>, String, String)> {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_ferry"));
    cmd.arg("--kubeconfig").arg(kubeconfig).args(args).env_remove("KUBECONFIG").kill_on_drop(true);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = cmd.spawn()?;
    if let (Some(input), Some(mut w)) = (stdin, child.stdin.take()) {
        w.write_all(input.as_bytes()).await?;
    }
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await??;
    Ok((
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn ferry_logs_and_exec() -> Result<()> {
    let cluster = Cluster::start().await?;
    let admin = cluster.client().await?;
    let (creds, node_dir) = cluster.node_credentials("cli-1", &["127.0.0.1".to_string()])?;
    let node_client = ferry_testkit::client_from(&node_dir.join("kubeconfig")).await?;
    let daemon = ferry_testkit::Containerd::start().await?;
    let root = tempfile::tempdir()?;
    let archive = root.path().join("bb.tar");
    ferry_testkit::busybox_image_archive(&archive, "docker.io/ferry/busybox:test")?;
    Containerd::connect(&daemon.socket, NAMESPACE).await?.import_archive(&archive).await?;
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.subsec_nanos() ^ std::process::id();
    let bridge = ferry_testkit::LinkGuard(format!("fy{:x}", (n ^ 0x00c1c1) & 0xffffff));
    let subnet = format!("10.{}.{}.0/24", 200 + (n % 50), (n >> 8) % 256);
    let config = ContainerdConfig {
        root_dir: root.path().join("nodelet"),
        cni: CniConfig {
            bin_dir: "/usr/lib/cni".into(),
            bridge: bridge.0.clone(),
            pod_cidr: subnet.clone(),
            ipam_dir: root.path().join("ipam"),
        },
        host_ip: "127.0.0.1".into(),
        backoff_start: Duration::from_secs(1),
    };
    // No log driver binary here: raw `file://` logs, served line by line without timestamps.
    let runtime = Arc::new(
        ContainerdRuntime::new(Containerd::connect(&daemon.socket, NAMESPACE).await?, config)
            .with_client(node_client.clone()),
    );
    let mut nc = Config::new("cli-1", root.path().to_path_buf());
    nc.pod_cidr = Some(subnet);
    let server = ServerConfig {
        addr: "127.0.0.1:0".parse()?,
        cert_pem: creds.serving_cert_pem.clone(),
        key_pem: creds.serving_key_pem.clone(),
        client_ca_pem: creds.ca_cert_pem.clone(),
        allowed_users: vec![APISERVER_CLIENT_USER.to_string()],
    };
    let machine = Machine::probe(root.path(), Some([127, 0, 0, 1].into()))?;
    let mut nodelet = Nodelet::new(node_client, nc, machine, runtime).with_server(server);
    nodelet.resync_period = Duration::from_millis(500);
    let task = tokio::spawn(nodelet.run());

    let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "echo"},
        "spec": {"nodeName": "cli-1", "terminationGracePeriodSeconds": 1, "containers": [{
            "name": "c", "image": "ferry/busybox:test",
            "command": ["sh", "-c", "echo first; echo second; while true; do sleep 0.2; done"]}]}
    }))?;
    pods.create(&PostParams::default(), &pod).await?;
    let kc = cluster.kubeconfig();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (code, out, _) = ferry(&kc, &["logs", "echo"], None).await?;
        if code == Some(0) && out == "first\nsecond\n" {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("ferry logs never showed the output: {out:?}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (code, out, err) = ferry(&kc, &["logs", "pod/echo", "--tail", "1", "-c", "c"], None).await?;
    assert_eq!((code, out.as_str()), (Some(0), "second\n"), "{err}");
    let (code, out, err) =
        ferry(&kc, &["exec", "echo", "--", "sh", "-c", "echo hi; echo err >&2; exit 7"], None).await?;
    assert_eq!((code, out.as_str(), err.as_str()), (Some(7), "hi\n", "err\n"));
    let (code, out, err) = ferry(&kc, &["exec", "-i", "echo", "--", "cat"], Some("through\nstdin\n")).await?;
    assert_eq!((code, out.as_str()), (Some(0), "through\nstdin\n"), "{err}");
    let (code, _, err) = ferry(&kc, &["logs", "nosuch"], None).await?;
    assert_eq!(code, Some(1));
    assert!(err.contains("Error from server (NotFound)") || err.contains("not found"), "{err}");
    let (code, _, err) = ferry(&kc, &["exec", "echo", "-c", "nope", "--", "true"], None).await?;
    assert_eq!(code, Some(1));
    assert!(err.contains("container nope is not valid for pod echo"), "{err}");

    pods.delete("echo", &DeleteParams::default()).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while pods.get_opt("echo").await?.is_some() {
        if tokio::time::Instant::now() > deadline {
            bail!("echo was not removed");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    task.abort();
    drop(daemon);
    Ok(())
}
