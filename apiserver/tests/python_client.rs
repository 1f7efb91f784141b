//! The official Python client (`kubernetes` from PyPI) against Ferry: CRUD, strategic merge
//! patch, selectors, watch, scale and errors for every served kind (`python/client_e2e.py`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use ferry_testkit::Cluster;

/// The venv python that CI provisions (scripts/lib.sh `ensure_clients`), if it can import the
/// client.
async fn venv_python() -> Option<PathBuf> {
    let venv = match std::env::var_os("FERRY_VENV") {
        Some(v) => PathBuf::from(v),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".cache/ferry/venv"),
    };
    let python = venv.join("bin/python");
    if !python.is_file() {
        return None;
    }
    let status = tokio::process::Command::new(&python)
        .args(["-c", "import kubernetes"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .ok()?;
    status.success().then_some(python)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_end_to_end() -> Result<()> {
    let Some(python) = venv_python().await else {
        assert!(std::env::var_os("CI").is_none(), "the venv python with `kubernetes` must exist in CI");
        eprintln!("notice: no venv python with the `kubernetes` package; skipping the Python client test");
        return Ok(());
    };
    let cluster = Cluster::start().await?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/client_e2e.py");
    let mut cmd = tokio::process::Command::new(&python);
    cmd.arg(&script).arg(cluster.kubeconfig()).env("PYTHONUNBUFFERED", "1").kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .map_err(|_| anyhow::anyhow!("{} timed out after 120 s", script.display()))??;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "client_e2e.py failed ({}):\n{text}", out.status);
    assert!(text.contains("PASS: all checks passed"), "{text}");
    println!("{text}");
    Ok(())
}
