//! `ferry up` / `ferry down`: a whole single-machine cluster under one data directory.
//!
//! `ferry up` supervises the components as child processes — a private etcd, `ferry-apiserver`,
//! `ferry-dns` and, when they are installed next to `ferry`, the other Ferry daemons — in dependency
//! order, each started once the one before is ready, each restarted with exponential backoff (1 s
//! doubling to 30 s, reset after a minute of uptime) if it exits. Logs go to `<data>/logs/<name>.log`;
//! `<data>/ferry.pid` names the supervisor. With `--detach` the supervisor runs in the background in
//! its own process group and `ferry up` returns once the API is ready. `ferry down` stops the
//! supervisor (which stops its children, last started first) and, if anything is left, the whole
//! process group. The same data dir brings the same cluster back.

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};
use tokio::sync::watch;

/// Where and how the cluster runs.
#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    /// Data directory (etcd data, certificates, kubeconfig, logs).
    #[arg(long, env = "FERRY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// HTTPS port of the API server.
    #[arg(long, default_value_t = 6443)]
    pub api_port: u16,
    /// etcd client port.
    #[arg(long, default_value_t = 2479)]
    pub etcd_port: u16,
    /// etcd peer port (default: the client port + 1).
    #[arg(long)]
    pub etcd_peer_port: Option<u16>,
    /// Port of the cluster DNS server on 127.0.0.1 (UDP and TCP).
    #[arg(long, default_value_t = 10053)]
    pub dns_port: u16,
    /// Directory with the Ferry daemons (default: next to `ferry`, then PATH).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Return once the cluster is ready, leaving it running in the background.
    #[arg(long)]
    pub detach: bool,
    /// Also merge the cluster into ~/.kube/config (or $KUBECONFIG) as context `ferry`, made current.
    #[arg(long)]
    pub write_kubeconfig: bool,
    /// Seconds to wait for readiness.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    /// Internal: run as the background supervisor of `--detach`.
    #[arg(long, hide = true)]
    pub supervise: bool,
}

/// The data directory: `--data-dir`, else `$XDG_DATA_HOME/ferry`, else `~/.local/share/ferry`.
pub fn data_dir(arg: Option<&Path>) -> Result<PathBuf> {
    if let Some(d) = arg {
        return Ok(d.to_path_buf());
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return Ok(PathBuf::from(x).join("ferry"));
    }
    let home = std::env::var_os("HOME").context("HOME is not set; pass --data-dir")?;
    Ok(PathBuf::from(home).join(".local/share/ferry"))
}

fn pid_file(data: &Path) -> PathBuf {
    data.join("ferry.pid")
}

/// The admin kubeconfig the API server writes into the data dir.
pub fn kubeconfig(data: &Path) -> PathBuf {
    data.join("admin.kubeconfig")
}

/// The supervisor's pid, if one is running from this data dir (a stale pid file is removed).
fn running_pid(data: &Path) -> Option<Pid> {
    let text = std::fs::read_to_string(pid_file(data)).ok()?;
    let pid = Pid::from_raw(text.trim().parse().ok()?);
    if kill(pid, None).is_ok() {
        Some(pid)
    } else {
        let _ = std::fs::remove_file(pid_file(data));
        None
    }
}

/// Find a program: in `--bin-dir`, next to this executable, then on PATH.
fn find(bin_dir: Option<&Path>, name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    dirs.extend(bin_dir.map(Path::to_path_buf));
    if let Some(d) = std::env::current_exe().ok().and_then(|p| p.parent().map(Path::to_path_buf)) {
        dirs.push(d);
    }
    dirs.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()));
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// One supervised process.
#[derive(Debug, Clone)]
struct Component {
    name: &'static str,
    program: PathBuf,
    args: Vec<OsString>,
}

fn args(list: &[&dyn AsRef<std::ffi::OsStr>]) -> Vec<OsString> {
    list.iter().map(|a| a.as_ref().to_os_string()).collect()
}

/// `ferry up`.
pub async fn up(a: UpArgs) -> Result<()> {
    let data = data_dir(a.data_dir.as_deref())?;
    std::fs::create_dir_all(data.join("logs")).with_context(|| format!("creating {}", data.display()))?;
    if !a.supervise {
        if let Some(pid) = running_pid(&data) {
            bail!("a cluster is already running from {} (pid {pid}); run `ferry down` first", data.display());
        }
    }
    if a.detach {
        return detach(&a, &data).await;
    }
    supervise(&a, &data).await
}

/// Start the supervisor in the background and wait until the API is ready.
async fn detach(a: &UpArgs, data: &Path) -> Result<()> {
    let exe = std::env::current_exe().context("locating the ferry executable")?;
    let log = std::fs::File::create(data.join("logs/ferry.log")).context("creating logs/ferry.log")?;
    let mut cmd = Command::new(exe);
    cmd.arg("up")
        .arg("--supervise")
        .arg("--data-dir")
        .arg(data)
        .args(["--api-port", &a.api_port.to_string()])
        .args(["--etcd-port", &a.etcd_port.to_string()])
        .args(["--etcd-peer-port", &peer_port(a).to_string()])
        .args(["--dns-port", &a.dns_port.to_string()])
        .args(["--timeout", &a.timeout.to_string()]);
    if let Some(b) = &a.bin_dir {
        cmd.arg("--bin-dir").arg(b);
    }
    cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log).process_group(0);
    let mut child = cmd.spawn().context("starting the background supervisor")?;
    let deadline = Instant::now() + Duration::from_secs(a.timeout);
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("the cluster did not start ({status}); see {}", data.join("logs/ferry.log").display());
        }
        if std::fs::read_to_string(data.join("ready")).is_ok_and(|s| s.trim() == child.id().unwrap_or(0).to_string()) {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.start_kill();
            bail!("the cluster was not ready within {} s; see {}", a.timeout, data.join("logs").display());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    print_next_steps(data, a);
    Ok(())
}

fn peer_port(a: &UpArgs) -> u16 {
    a.etcd_peer_port.unwrap_or(a.etcd_port.wrapping_add(1))
}

fn print_next_steps(data: &Path, a: &UpArgs) {
    let kc = kubeconfig(data);
    if a.write_kubeconfig {
        match crate::config::file(None).and_then(|target| Ok((crate::config::merge_into(&target, &kc)?, target))) {
            Ok((context, target)) => println!("Context {context:?} written to {} and made current.", target.display()),
            Err(e) => eprintln!("warning: could not write the kubeconfig: {e:#}"),
        }
    }
    println!("Ferry is up: API server https://127.0.0.1:{}, cluster DNS 127.0.0.1:{}", a.api_port, a.dns_port);
    println!("  export KUBECONFIG={}", kc.display());
    println!("  kubectl get namespaces");
    println!("Logs: {}   Stop: ferry down{}", data.join("logs").display(), data_flag(a));
}

fn data_flag(a: &UpArgs) -> String {
    a.data_dir.as_ref().map(|d| format!(" --data-dir {}", d.display())).unwrap_or_default()
}

/// Run the components until SIGINT/SIGTERM, then stop them.
async fn supervise(a: &UpArgs, data: &Path) -> Result<()> {
    std::fs::write(pid_file(data), std::process::id().to_string()).context("writing the pid file")?;
    let _ = std::fs::remove_file(data.join("ready"));
    let result = run_components(a, data).await;
    let _ = std::fs::remove_file(data.join("ready"));
    let _ = std::fs::remove_file(pid_file(data));
    result
}

async fn run_components(a: &UpArgs, data: &Path) -> Result<()> {
    let bin = a.bin_dir.as_deref();
    let etcd = find(bin, "etcd").context("etcd is not installed (apt install etcd-server)")?;
    let apiserver = find(bin, "ferry-apiserver").context("ferry-apiserver not found next to ferry or on PATH")?;
    let kc = kubeconfig(data);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut running: Vec<(&'static str, tokio::task::JoinHandle<()>)> = Vec::new();

    let etcd_url = format!("http://127.0.0.1:{}", a.etcd_port);
    let peer_url = format!("http://127.0.0.1:{}", peer_port(a));
    let etcd_c = Component {
        name: "etcd",
        program: etcd,
        args: args(&[
            &"--name",
            &"ferry",
            &"--data-dir",
            &data.join("etcd"),
            &"--listen-client-urls",
            &etcd_url,
            &"--advertise-client-urls",
            &etcd_url,
            &"--listen-peer-urls",
            &peer_url,
            &"--initial-advertise-peer-urls",
            &peer_url,
            &"--initial-cluster",
            &format!("ferry={peer_url}"),
            &"--log-level",
            &"warn",
        ]),
    };
    running.push(("etcd", supervise_one(etcd_c, data, stop_rx.clone())));
    wait_etcd(&etcd_url, a.timeout).await?;

    let api_c = Component {
        name: "apiserver",
        program: apiserver,
        args: args(&[&"--etcd-servers", &etcd_url, &"--data-dir", &data, &"--secure-port", &a.api_port.to_string()]),
    };
    running.push(("apiserver", supervise_one(api_c, data, stop_rx.clone())));
    wait_api(&kc, a.timeout).await?;

    if let Some(dns) = find(bin, "ferry-dns") {
        let c = Component {
            name: "dns",
            program: dns,
            args: args(&[&"--kubeconfig", &kc, &"--listen", &format!("127.0.0.1:{}", a.dns_port)]),
        };
        running.push(("dns", supervise_one(c, data, stop_rx.clone())));
    }
    for (name, program) in [("controllers", "ferry-controllers"), ("scheduler", "ferry-scheduler")] {
        if let Some(p) = find(bin, program) {
            let c = Component { name, program: p, args: args(&[&"--kubeconfig", &kc]) };
            running.push((name, supervise_one(c, data, stop_rx.clone())));
        }
    }
    std::fs::write(data.join("ready"), std::process::id().to_string()).context("writing the ready marker")?;
    if !a.supervise {
        print_next_steps(data, a);
    }
    let names: Vec<&str> = running.iter().map(|(n, _)| *n).collect();
    eprintln!("ferry: running {}", names.join(", "));

    shutdown_signal().await;
    eprintln!("ferry: stopping");
    let _ = stop_tx.send(true);
    // Last started, first stopped.
    for (_, task) in running.into_iter().rev() {
        let _ = task.await;
    }
    Ok(())
}

/// Keep one component running until `stop` turns true, restarting it with backoff.
fn supervise_one(c: Component, data: &Path, mut stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
    let log_path = data.join("logs").join(format!("{}.log", c.name));
    tokio::spawn(async move {
        let mut backoff = Duration::from_secs(1);
        loop {
            let started = Instant::now();
            let mut child = match spawn(&c, &log_path) {
                Ok(child) => child,
                Err(e) => {
                    eprintln!("ferry: cannot start {}: {e:#}", c.name);
                    if sleep_or_stop(&mut stop, backoff).await {
                        return;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    continue;
                }
            };
            tokio::select! {
                status = child.wait() => {
                    let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
                    if started.elapsed() > Duration::from_secs(60) {
                        backoff = Duration::from_secs(1);
                    }
                    eprintln!("ferry: {} exited ({status}); restarting in {} s", c.name, backoff.as_secs());
                    if sleep_or_stop(&mut stop, backoff).await {
                        return;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
                _ = stopped(&mut stop) => {
                    terminate(&mut child, c.name).await;
                    return;
                }
            }
        }
    })
}

fn spawn(c: &Component, log_path: &Path) -> Result<Child> {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log_path)?;
    let child = Command::new(&c.program)
        .args(&c.args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("running {}", c.program.display()))?;
    Ok(child)
}

/// Sleep for `d`; true if asked to stop meanwhile.
async fn sleep_or_stop(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = stopped(stop) => true,
    }
}

/// Resolves once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await.is_ok();
}

/// SIGTERM, then SIGKILL after 10 s.
async fn terminate(child: &mut Child, name: &str) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    if tokio::time::timeout(Duration::from_secs(10), child.wait()).await.is_err() {
        eprintln!("ferry: {name} did not stop within 10 s; killing it");
        let _ = child.kill().await;
    }
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

async fn wait_etcd(url: &str, timeout: u64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(timeout);
    loop {
        let ok = match etcd_client::Client::connect([url], None).await {
            Ok(mut c) => c.status().await.is_ok(),
            Err(_) => false,
        };
        if ok {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("etcd did not become ready within {timeout} s (see logs/etcd.log)");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_api(kubeconfig: &Path, timeout: u64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(timeout);
    loop {
        if api_ready(kubeconfig).await {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the API server did not become ready within {timeout} s (see logs/apiserver.log)");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn api_ready(kubeconfig: &Path) -> bool {
    let Ok(client) = crate::client::from_kubeconfig(kubeconfig, None).await else { return false };
    let Ok(req) = http::Request::get("/readyz").body(Vec::new()) else { return false };
    client.request_text(req).await.is_ok_and(|t| t.trim() == "ok")
}

/// `ferry down`.
pub async fn down(data_arg: Option<&Path>, timeout: u64) -> Result<()> {
    let data = data_dir(data_arg)?;
    let Some(pid) = running_pid(&data) else {
        println!("no cluster is running from {}", data.display());
        return Ok(());
    };
    kill(pid, Signal::SIGTERM).with_context(|| format!("signalling the supervisor (pid {pid})"))?;
    let deadline = Instant::now() + Duration::from_secs(timeout);
    while kill(pid, None).is_ok() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Whatever is left of the process group (a supervisor that hung, children it could not stop).
    let _ = killpg(pid, Signal::SIGKILL);
    let _ = std::fs::remove_file(pid_file(&data));
    let _ = std::fs::remove_file(data.join("ready"));
    println!("Ferry is down ({})", data.display());
    Ok(())
}
