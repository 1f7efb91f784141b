//! The nodelet's containerd connection against a real containerd started by the test.

use anyhow::Result;
use ferry_nodelet::runtime::containerd::{Containerd, NAMESPACE};

#[tokio::test(flavor = "multi_thread")]
async fn talks_to_a_private_containerd() -> Result<()> {
    let daemon = ferry_testkit::Containerd::start().await?;
    let c = Containerd::connect(&daemon.socket, NAMESPACE).await?;
    let version = c.version().await?;
    assert!(version.starts_with("containerd://1."), "{version}");
    assert!(c.pod_uids().await?.is_empty());
    Ok(())
}
