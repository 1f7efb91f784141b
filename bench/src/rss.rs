//! Memory: resident set sizes from `/proc`, and a real `ferry-apiserver` child process to
//! measure without the benchmark's own allocations mixed in.

use crate::fixture::NAMESPACE;
use crate::stats::{measure, Sample};
use anyhow::{bail, ensure, Context, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Resident and peak resident memory of a process, in KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rss {
    /// `VmRSS`.
    pub current_kib: u64,
    /// `VmHWM` (peak).
    pub peak_kib: u64,
}

impl Rss {
    /// Read `/proc/<pid>/status` (`None` = this process).
    pub fn of(pid: Option<u32>) -> Result<Self> {
        let path = match pid {
            Some(p) => format!("/proc/{p}/status"),
            None => "/proc/self/status".into(),
        };
        let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let field = |name: &str| -> Result<u64> {
            let line = status.lines().find(|l| l.starts_with(name)).with_context(|| format!("{path} has no {name}"))?;
            let kib = line.split_whitespace().nth(1).with_context(|| format!("malformed line {line:?}"))?;
            kib.parse().with_context(|| format!("malformed line {line:?}"))
        };
        Ok(Self { current_kib: field("VmRSS:")?, peak_kib: field("VmHWM:")? })
    }
}

/// A child process, killed (and reaped) on drop.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `ferry-apiserver` child process; killed on drop.
pub struct ChildServer {
    // Declared before `_dir`: the process dies before its data dir is removed.
    process: Process,
    _dir: tempfile::TempDir,
    /// Admin client for it.
    pub client: kube::Client,
}

impl ChildServer {
    /// Start `bin` against `etcd_url` on a free port and wait until `/readyz` says ok.
    pub async fn start(bin: &Path, etcd_url: &str) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("ferry-bench-apiserver-").tempdir()?;
        let port = ferry_testkit::free_port()?;
        let log = std::fs::File::create(dir.path().join("apiserver.log"))?;
        let child = Command::new(bin)
            .args(["--secure-port", &port.to_string(), "--etcd-servers", etcd_url, "--etcd-compaction-interval", "0"])
            .arg("--data-dir")
            .arg(dir.path())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut process = Process(child);
        let client = wait_ready(&mut process.0, dir.path()).await?;
        Ok(Self { process, _dir: dir, client })
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.process.0.id()
    }
}

/// Poll until the server in `dir` answers `/readyz` with 200 (60 s at most).
async fn wait_ready(child: &mut Child, dir: &Path) -> Result<kube::Client> {
    let kubeconfig = dir.join("admin.kubeconfig");
    let log = || std::fs::read_to_string(dir.join("apiserver.log")).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::from("no admin.kubeconfig yet");
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            bail!("ferry-apiserver exited with {status}:\n{}", log());
        }
        if kubeconfig.exists() {
            match ready(&kubeconfig).await {
                Ok(client) => return Ok(client),
                Err(e) => last = format!("{e:#}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("ferry-apiserver did not become ready within 60 s ({last}):\n{}", log())
}

async fn ready(kubeconfig: &Path) -> Result<kube::Client> {
    let client = ferry_testkit::client_from(kubeconfig).await?;
    let (code, body) = ferry_testkit::raw(&client, "GET", "/readyz", None, Vec::new()).await?;
    ensure!(code == 200, "/readyz answered {code}: {}", String::from_utf8_lossy(&body));
    Ok(client)
}

/// What the separate server process measured.
pub struct ChildResult {
    /// Memory once ready (cache loaded), before any list.
    pub rss_ready: Rss,
    /// Memory after one full list (the cache is warm): the number the target is about.
    pub rss: Rss,
    /// Memory after `concurrent` more full lists at once.
    pub rss_concurrent: Rss,
    /// How many lists ran at once for `rss_concurrent`.
    pub concurrent: usize,
    /// Full typed lists through the separate process (after the warm-up).
    pub list: Sample,
    /// Seconds from spawn to ready.
    pub startup: Duration,
}

/// Start the real server, list all pods once (warm-up) and read its RSS; time `lists` more
/// full lists; then run `concurrent` full lists at once and read the RSS again.
pub async fn measure_child(
    bin: &Path,
    etcd_url: &str,
    expected: usize,
    lists: usize,
    concurrent: usize,
) -> Result<ChildResult> {
    let started = Instant::now();
    let server = ChildServer::start(bin, etcd_url).await?;
    let startup = started.elapsed();
    let rss_ready = Rss::of(Some(server.pid()))?;
    let api: Api<Pod> = Api::namespaced(server.client.clone(), NAMESPACE);
    let n = api.list(&ListParams::default()).await?.items.len();
    ensure!(n == expected, "the child server listed {n} pods, expected {expected}");
    let rss = Rss::of(Some(server.pid()))?;
    let list = measure(1, lists, Duration::from_secs(120), move |_| {
        let api = api.clone();
        async move {
            api.list(&ListParams::default()).await?;
            Ok(())
        }
    })
    .await?;
    // Raw GETs: only the server's memory matters here, not the client's decoding.
    let client = server.client.clone();
    measure(concurrent, concurrent, Duration::from_secs(120), move |_| {
        let client = client.clone();
        async move {
            let path = format!("/api/v1/namespaces/{NAMESPACE}/pods");
            let (code, _) = ferry_testkit::raw(&client, "GET", &path, None, Vec::new()).await?;
            ensure!(code == 200, "list answered {code}");
            Ok(())
        }
    })
    .await?;
    let rss_concurrent = Rss::of(Some(server.pid()))?;
    drop(server);
    Ok(ChildResult { rss_ready, rss, rss_concurrent, concurrent, list, startup })
}

/// Where the `ferry-apiserver` binary is: `$CARGO_TARGET_DIR/release/`, else next to this one.
pub fn default_apiserver_bin() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        let p = PathBuf::from(dir).join("release").join("ferry-apiserver");
        if p.exists() {
            return Ok(p);
        }
    }
    let exe = std::env::current_exe().context("locating the benchmark binary")?;
    let p = exe.with_file_name("ferry-apiserver");
    ensure!(p.exists(), "no ferry-apiserver next to {} (build it or pass --apiserver-bin)", exe.display());
    Ok(p)
}
