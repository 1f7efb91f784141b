//! The `ferry-nodelet` binary: runs a simulated node against a real API server, and refuses
//! bad flags with a one-line error.

use anyhow::{bail, Context, Result};
use ferry_testkit::Cluster;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, PostParams};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn nodelet() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ferry-nodelet"))
}

#[tokio::test(flavor = "multi_thread")]
async fn simulated_node_from_the_binary() -> Result<()> {
    let cluster = Cluster::start().await?;
    let client = cluster.client().await?;
    let root = tempfile::tempdir()?;
    let _child = Killed(
        nodelet()
            .args(["--runtime", "simulated", "--node-name", "bin-1", "--node-ip", "127.0.0.1"])
            .args(["--node-labels", "tier=test", "--lease-renew-seconds", "1"])
            .arg("--kubeconfig")
            .arg(cluster.kubeconfig())
            .arg("--root-dir")
            .arg(root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting ferry-nodelet")?,
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "b1"},
        "spec": {"nodeName": "bin-1", "containers": [{"name": "c", "image": "busybox:test"}]}
    }))?;
    pods.create(&PostParams::default(), &pod).await?;
    let nodes: Api<Node> = Api::all(client.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let node = nodes.get_opt("bin-1").await?;
        let p = pods.get("b1").await?;
        let running = p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
        if let (Some(node), true) = (node, running) {
            let labels = node.metadata.labels.unwrap_or_default();
            assert_eq!(labels.get("tier").map(String::as_str), Some("test"));
            assert_eq!(p.status.and_then(|s| s.host_ip).as_deref(), Some("127.0.0.1"));
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("node bin-1 and pod b1 did not come up");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn bad_flags_get_one_line_errors() -> Result<()> {
    let root = tempfile::tempdir()?;
    let kubeconfig = root.path().join("missing.kubeconfig");
    let run = |extra: &[&str]| -> Result<(bool, String)> {
        let out = nodelet()
            .args(["--runtime", "simulated", "--node-name", "x"])
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--root-dir")
            .arg(root.path())
            .args(extra)
            .output()?;
        Ok((out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned()))
    };
    let (ok, err) = run(&["--node-ip", "127.0.0.1", "--node-labels", "nolabel"])?;
    assert!(!ok);
    assert_eq!(err.trim(), "ferry-nodelet: --node-labels: \"nolabel\" is not key=value");
    let (ok, err) = run(&["--node-ip", "127.0.0.1"])?;
    assert!(!ok);
    assert!(err.trim().starts_with("ferry-nodelet: reading kubeconfig"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let (ok, err) = run(&["--node-ip", "not-an-ip"])?;
    assert!(!ok);
    assert!(err.contains("invalid value 'not-an-ip'"), "{err}");
    Ok(())
}
