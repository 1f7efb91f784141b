//! `ferry up --detach` / `ferry down` with the real binaries: the API answers, a second `up` is refused,
//! `down` leaves no process behind, and `up` again on the same data dir keeps the objects.

mod common;

use anyhow::Result;
use common::{ferry, which, Down, Up};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use std::process::{Command, Output};

/// Whether to skip for want of etcd (never in CI); builds the daemons `ferry up` runs otherwise.
fn skip_or_prepare() -> Result<bool> {
    if which("etcd").is_none() {
        assert!(std::env::var_os("CI").is_none(), "etcd must be installed in CI");
        println!("etcd not installed: skipping");
        return Ok(true);
    }
    common::ensure_daemons(&["ferry-apiserver", "ferry-dns"], &["ferry-apiserver", "ferry-dns"])?;
    Ok(false)
}

fn run(args: &[&str]) -> Result<Output> {
    Ok(Command::new(ferry()).args(args).env_remove("KUBECONFIG").output()?)
}

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(needle) {
            out.push(format!("{}: {cmd}", entry.file_name().to_string_lossy()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_down_up_keeps_the_cluster() -> Result<()> {
    if skip_or_prepare()? {
        return Ok(());
    }
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("cluster");
    let data_s = data.to_string_lossy().into_owned();
    let up = Up::new(&data_s)?;
    // No node: this test is about the control plane; ci_pipeline.rs runs one.
    let up_args = up.args(&["--nodes", "0"]);
    let _guard = Down(data_s.clone());

    let out = run(&up_args)?;
    assert!(out.status.success(), "ferry up: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("export KUBECONFIG={data_s}/admin.kubeconfig")), "{stdout}");

    let client = ferry_cli::client::from_kubeconfig(&data.join("admin.kubeconfig"), None).await?;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let cm: ConfigMap = serde_json::from_value(serde_json::json!({"metadata": {"name": "keep"}, "data": {"a": "1"}}))?;
    cms.create(&PostParams::default(), &cm).await?;

    let again = run(&up_args)?;
    assert_eq!(again.status.code(), Some(1));
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.starts_with("error: a cluster is already running from") && err.lines().count() == 1, "{err}");

    let out = run(&["down", "--data-dir", &data_s])?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(processes_mentioning(&data_s), Vec::<String>::new(), "nothing of the cluster keeps running");
    let out = run(&["down", "--data-dir", &data_s])?;
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("no cluster is running"));

    // Again, this time also writing ~/.kube/config (HOME is a temp dir here).
    let home = tmp.path().join("home");
    let mut again_args = up_args.clone();
    again_args.push("--write-kubeconfig");
    let out = Command::new(ferry()).args(&again_args).env("HOME", &home).env_remove("KUBECONFIG").output()?;
    assert!(out.status.success(), "ferry up again: {}", String::from_utf8_lossy(&out.stderr));
    let written = std::fs::read_to_string(home.join(".kube/config"))?;
    assert!(
        written.contains("current-context: ferry")
            && written.contains(&format!("server: https://127.0.0.1:{}", up.api)),
        "{written}"
    );
    let view = Command::new(ferry()).args(["config", "view"]).env("HOME", &home).env_remove("KUBECONFIG").output()?;
    let view = String::from_utf8_lossy(&view.stdout);
    assert!(view.contains("client-key-data: DATA+OMITTED"), "{view}");
    let client = ferry_cli::client::from_kubeconfig(&data.join("admin.kubeconfig"), None).await?;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let kept = cms.get("keep").await?;
    assert_eq!(kept.data.and_then(|d| d.get("a").cloned()).as_deref(), Some("1"), "objects survive down/up");
    let out = run(&["down", "--data-dir", &data_s])?;
    assert!(out.status.success());
    assert_eq!(processes_mentioning(&data_s), Vec::<String>::new());
    Ok(())
}

#[test]
fn bad_input_is_one_line_and_exit_1() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let file = tmp.path().join("file");
    std::fs::write(&file, "x")?;
    // The data dir is a file: a clear error, not a panic.
    let out = run(&["up", "--data-dir", &file.to_string_lossy()])?;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: creating ") && err.trim_end().lines().count() == 1, "{err}");
    let out = run(&["up", "--api-port", "notaport"])?;
    assert_eq!(out.status.code(), Some(2), "clap rejects bad flags");
    Ok(())
}

/// A cluster that cannot get ready (its API port is taken) is stopped in order by the supervisor
/// it ran under: `ferry up --detach` exits 1 naming the timeout, and no process of it remains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_that_cannot_start_leaves_nothing_running() -> Result<()> {
    if skip_or_prepare()? {
        return Ok(());
    }
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("cluster");
    let data_s = data.to_string_lossy().into_owned();
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let up = Up { api: taken.local_addr()?.port().to_string(), ..Up::new(&data_s)? };
    let _down = Down(data_s.clone());
    let out = run(&up.args(&["--nodes", "0", "--timeout", "5"]))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not ready within 5 s"), "{stderr}");
    // etcd had started before the API server failed: it must be gone with the supervisor.
    let log = std::fs::read_to_string(data.join("logs/ferry.log")).unwrap_or_default();
    assert!(log.contains("stopping"), "the supervisor stopped what it started: {log}");
    assert_eq!(processes_mentioning(&data_s), Vec::<String>::new(), "nothing of the cluster runs");
    drop(taken);
    Ok(())
}
