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

#[tokio::test(flavor = "multi_thread")]
async fn imports_an_oci_archive_and_unpacks_it() -> Result<()> {
    let daemon = ferry_testkit::Containerd::start().await?;
    let dir = tempfile::tempdir()?;
    let archive = dir.path().join("busybox.tar");
    let diff_id = ferry_testkit::busybox_image_archive(&archive, "docker.io/ferry/busybox:test")?;
    let c = Containerd::connect(&daemon.socket, NAMESPACE).await?;
    assert_eq!(c.image_digest("ferry/busybox:test").await?, None);
    let names = c.import_archive(&archive).await.map_err(|e| anyhow::anyhow!("{e}\n{}", daemon.log()))?;
    assert_eq!(names, ["docker.io/ferry/busybox:test"]);
    let digest = c.image_digest("ferry/busybox:test").await?;
    assert!(digest.as_deref().is_some_and(|d| d.starts_with("sha256:")), "{digest:?}");
    // One layer: its chain ID is its diff ID, and the snapshot is there.
    assert!(c.has_snapshot(&diff_id).await?);
    let snapshots = daemon.dir().join("root/io.containerd.snapshotter.v1.overlayfs/snapshots");
    let unpacked = std::fs::read_dir(&snapshots)?
        .filter_map(|e| e.ok())
        .any(|e| e.path().join("fs/bin/busybox").metadata().is_ok_and(|m| m.len() > 100_000));
    assert!(unpacked, "no snapshot under {} holds bin/busybox", snapshots.display());
    // Importing again is fine and changes nothing.
    assert_eq!(c.import_archive(&archive).await?, names);
    assert_eq!(c.image_digest("ferry/busybox:test").await?, digest);

    // A file that is no image archive gets a clear error.
    let bogus = dir.path().join("bogus.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&bogus)?);
    let mut h = tar::Header::new_gnu();
    h.set_size(2);
    h.set_mode(0o644);
    b.append_data(&mut h, "hello.txt", &b"hi"[..])?;
    b.finish()?;
    drop(b);
    let err = c.import_archive(&bogus).await.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("not an image archive"), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn image_import_command() -> Result<()> {
    let daemon = ferry_testkit::Containerd::start().await?;
    let dir = tempfile::tempdir()?;
    let archive = dir.path().join("bb.tar");
    ferry_testkit::busybox_image_archive(&archive, "busybox:cli")?;
    let run = |path: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_ferry-nodelet"))
            .args(["image", "import"])
            .arg(path)
            .arg("--containerd-address")
            .arg(&daemon.socket)
            .output()
    };
    let out = run(&archive)?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "imported docker.io/library/busybox:cli");
    let out = run(&dir.path().join("missing.tar"))?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("ferry-nodelet: importing") && err.trim().lines().count() == 1, "{err}");
    Ok(())
}
