//! Test support for Ferry's integration tests.
//!
//! * [`Etcd`] starts a private etcd (temporary data dir, free ports) and kills it on drop.
//! * [`Cluster`] adds an in-process `ferry-apiserver` on a free port with its own data dir,
//!   and hands out a `kube::Client` (admin) and raw HTTP helpers for bad-input tests.
//!
//! * [`Containerd`] starts a private containerd (temporary root, state and socket, its own
//!   config file) and kills it on drop; the nodelet's tests run pods on it.
//! * [`Registry`] starts Debian's `docker-registry` (the CNCF distribution registry) on a free
//!   loopback port with temporary storage, for image pull tests.
//! * [`busybox_image_archive`] builds an OCI image archive from the machine's busybox-static
//!   (no registry or internet needed).
//!
//! Everything listens on 127.0.0.1 only and is cleaned up on drop, also when a test fails.

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::BodyExt;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (racy by nature; good enough for tests).
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding a probe socket")?;
    Ok(l.local_addr()?.port())
}

/// Install the rustls crypto provider and a test log subscriber (idempotent).
pub fn init() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
}

/// A private etcd process.
pub struct Etcd {
    child: Child,
    /// Client URL, `http://127.0.0.1:<port>`.
    pub url: String,
    peer_url: String,
    dir: tempfile::TempDir,
}

impl Etcd {
    /// Start etcd on free ports with a temporary data dir and wait until it answers.
    ///
    /// A port found free can be taken before etcd binds it (by another test's etcd, or as the
    /// local port of some connection); then etcd exits at once and this tries other ports.
    pub async fn start() -> Result<Self> {
        let mut attempt = 1;
        loop {
            let dir = tempfile::Builder::new().prefix("ferry-etcd-").tempdir()?;
            let (client, peer) = (free_port()?, free_port()?);
            let url = format!("http://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let child = Self::spawn(dir.path(), &url, &peer_url)?;
            let mut etcd = Etcd { child, url, peer_url, dir };
            match etcd.wait_ready().await {
                Ok(()) => return Ok(etcd),
                Err(e) if attempt < 5 && etcd.log().contains("address already in use") => {
                    tracing::debug!(error = %e, attempt, "etcd's port was taken; trying others");
                    etcd.kill();
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }

    fn spawn(dir: &Path, url: &str, peer_url: &str) -> Result<Child> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("etcd.log"))?;
        Command::new(etcd_binary())
            .arg("--name=test")
            .arg(format!("--data-dir={}", dir.join("data").display()))
            .arg(format!("--listen-client-urls={url}"))
            .arg(format!("--advertise-client-urls={url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=test={peer_url}"))
            .arg("--log-level=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting etcd (is etcd-server installed?)")
    }

    /// Kill etcd and start it again on the same data dir and ports; waits until it answers.
    pub async fn restart(&mut self) -> Result<()> {
        self.kill();
        self.child = Self::spawn(self.dir.path(), &self.url, &self.peer_url)?;
        self.wait_ready().await
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut c) = etcd_client::Client::connect([self.url.as_str()], None).await {
                if c.get("/probe", None).await.is_ok() {
                    return Ok(());
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!("etcd exited ({status}) before it was ready at {}:\n{}", self.url, self.log());
            }
            if Instant::now() > deadline {
                bail!("etcd did not become ready at {}:\n{}", self.url, self.log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The etcd process id (e.g. to read its CPU time or memory from `/proc`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A direct etcd client (for compaction and raw checks).
    pub async fn client(&self) -> Result<etcd_client::Client> {
        Ok(etcd_client::Client::connect([self.url.as_str()], None).await?)
    }

    /// Stop etcd (SIGKILL) without removing its data, e.g. to test unavailability.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A network link a test created (its CNI bridge, a veth), deleted on drop.
pub struct LinkGuard(pub String);

impl Drop for LinkGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).status();
    }
}

/// Poll pod `name` every 100 ms until `pred` holds, for at most 60 s; the error names `what`
/// and the pod's last status.
pub async fn wait_pod(
    pods: &kube::Api<k8s_openapi::api::core::v1::Pod>,
    name: &str,
    what: &str,
    pred: impl Fn(&k8s_openapi::api::core::v1::Pod) -> bool,
) -> Result<k8s_openapi::api::core::v1::Pod> {
    wait_pod_every(pods, name, what, Duration::from_millis(100), pred).await
}

/// [`wait_pod`], polling every `every` (for tests that time what they wait for).
pub async fn wait_pod_every(
    pods: &kube::Api<k8s_openapi::api::core::v1::Pod>,
    name: &str,
    what: &str,
    every: Duration,
    pred: impl Fn(&k8s_openapi::api::core::v1::Pod) -> bool,
) -> Result<k8s_openapi::api::core::v1::Pod> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(p) = pods.get_opt(name).await? {
            if pred(&p) {
                return Ok(p);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("timed out waiting for {name}: {what}; last status {:?}", p.status);
            }
        } else if tokio::time::Instant::now() > deadline {
            bail!("timed out waiting for {name}: {what}; pod is gone");
        }
        tokio::time::sleep(every).await;
    }
}

/// A private containerd process: root, state, socket and config in one temporary directory.
pub struct Containerd {
    child: Child,
    /// The gRPC socket.
    pub socket: PathBuf,
    dir: tempfile::TempDir,
}

impl Containerd {
    /// Start containerd with a config written here (CRI plugin off, everything under a temp dir)
    /// and wait until its socket accepts connections.
    pub async fn start() -> Result<Self> {
        // Unix socket paths must stay short (108 bytes), so the directory lives in /tmp.
        let dir = tempfile::Builder::new().prefix("ferry-ctrd-").tempdir_in("/tmp")?;
        let root = dir.path().join("root");
        let state = dir.path().join("state");
        let socket = dir.path().join("c.sock");
        let config = format!(
            "version = 2\n\
             root = {root:?}\n\
             state = {state:?}\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = {socket:?}\n\
             [ttrpc]\n  address = {ttrpc:?}\n\
             [debug]\n  address = \"\"\n  level = \"warn\"\n\
             [metrics]\n  address = \"\"\n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n  path = {opt:?}\n",
            root = root.display().to_string(),
            state = state.display().to_string(),
            socket = socket.display().to_string(),
            ttrpc = dir.path().join("c.sock.ttrpc").display().to_string(),
            opt = dir.path().join("opt").display().to_string(),
        );
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, config)?;
        let log = std::fs::File::create(dir.path().join("containerd.log"))?;
        let child = Command::new(containerd_binary())
            .arg("--config")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting containerd (is the containerd package installed?)")?;
        let c = Containerd { child, socket, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::UnixStream::connect(&c.socket).await.is_err() {
            if Instant::now() > deadline {
                bail!("containerd did not come up at {}:\n{}", c.socket.display(), c.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(c)
    }

    /// containerd's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// The temporary directory holding root, state and socket.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Pods' network namespaces outlive their containers: note the ones this daemon's
        // containers joined (a test that failed never tore its pods down) to remove them below.
        let netns = bundle_netns(&self.dir.path().join("state"));
        // Shims outlive containerd: kill this daemon's shims and their containers first.
        kill_shims(&self.socket);
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Shims of tasks still running die with their containers; unmount what containerd
        // may have left mounted under its root so the temp dir can be removed.
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
            let root = self.dir.path().display().to_string();
            let mut points: Vec<&str> =
                mounts.lines().filter_map(|l| l.split_whitespace().nth(1)).filter(|m| m.starts_with(&root)).collect();
            points.sort_by_key(|p| std::cmp::Reverse(p.len()));
            for p in points {
                let _ = Command::new("umount").arg("-l").arg(p).status();
            }
        }
        for path in netns.iter().filter(|p| p.exists()) {
            if let Some(name) = path.file_name() {
                let _ = Command::new("ip").arg("netns").arg("delete").arg(name).status();
            }
        }
    }
}

/// The named network namespaces (`/run/netns/…`) that the containers of the containerd with
/// this state dir joined, read from the OCI specs of its task bundles.
fn bundle_netns(state: &Path) -> std::collections::BTreeSet<PathBuf> {
    let mut found = std::collections::BTreeSet::new();
    let tasks = state.join("io.containerd.runtime.v2.task");
    for namespace in std::fs::read_dir(tasks).into_iter().flatten().flatten() {
        for bundle in std::fs::read_dir(namespace.path()).into_iter().flatten().flatten() {
            let Ok(text) = std::fs::read(bundle.path().join("config.json")) else { continue };
            let Ok(spec) = serde_json::from_slice::<serde_json::Value>(&text) else { continue };
            let namespaces = spec.pointer("/linux/namespaces").and_then(serde_json::Value::as_array);
            for n in namespaces.into_iter().flatten().filter(|n| n["type"] == "network") {
                if let Some(path) = n["path"].as_str().filter(|p| p.starts_with("/run/netns/")) {
                    found.insert(PathBuf::from(path));
                }
            }
        }
    }
    found
}

/// A private OCI registry (Debian's `docker-registry`, plain HTTP, no auth) on 127.0.0.1.
pub struct Registry {
    child: Child,
    /// `127.0.0.1:<port>`: the registry host as image references name it.
    pub host: String,
    dir: tempfile::TempDir,
}

impl Registry {
    /// Start it with a generated config and temporary storage; wait until `/v2/` answers.
    pub async fn start() -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("ferry-registry-").tempdir()?;
        let port = free_port()?;
        let host = format!("127.0.0.1:{port}");
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n\
             http:\n  addr: {host}\n",
            root = dir.path().join("storage").display(),
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config)?;
        let log = std::fs::File::create(dir.path().join("registry.log"))?;
        let binary = std::env::var_os("FERRY_REGISTRY").map(PathBuf::from).unwrap_or_else(|| "docker-registry".into());
        let child = Command::new(binary)
            .arg("serve")
            .arg(&config_path)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting docker-registry (is the docker-registry package installed?)")?;
        let r = Registry { child, host, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut s) = tokio::net::TcpStream::connect(&r.host).await {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let req = format!("GET /v2/ HTTP/1.0\r\nHost: {}\r\n\r\n", r.host);
                let mut out = String::new();
                if s.write_all(req.as_bytes()).await.is_ok()
                    && s.read_to_string(&mut out).await.is_ok()
                    && out.starts_with("HTTP/1.0 200")
                {
                    return Ok(r);
                }
            }
            if Instant::now() > deadline {
                bail!("docker-registry did not come up on {}:\n{}", r.host, r.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The registry's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Build an OCI image layout archive at `path` with one layer: `/bin/busybox` (Debian's
/// busybox-static) with a symlink per applet, `/etc/passwd` and `/etc/group`, and empty
/// `/tmp`, `/proc`, `/sys`, `/dev`. `name` is the image reference stored in the index
/// (`io.containerd.image.name`). Returns the layer's diff ID.
pub fn busybox_image_archive(path: &Path, name: &str) -> Result<String> {
    use sha2::{Digest, Sha256};
    let busybox_path = std::env::var_os("FERRY_BUSYBOX").map(PathBuf::from).unwrap_or_else(|| "/bin/busybox".into());
    let busybox = std::fs::read(&busybox_path)
        .with_context(|| format!("reading {} (is busybox-static installed?)", busybox_path.display()))?;
    let list = Command::new(&busybox_path).arg("--list").output().context("busybox --list")?;
    let applets = String::from_utf8_lossy(&list.stdout).into_owned();

    let mut layer = tar::Builder::new(Vec::new());
    let header = |kind: tar::EntryType, mode: u32, size: u64| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h
    };
    for dir in ["bin", "etc", "tmp", "proc", "sys", "dev", "root", "var", "var/www"] {
        let mut h = header(tar::EntryType::Directory, if dir == "tmp" { 0o1777 } else { 0o755 }, 0);
        layer.append_data(&mut h, dir, std::io::empty())?;
    }
    let mut h = header(tar::EntryType::Regular, 0o755, busybox.len() as u64);
    layer.append_data(&mut h, "bin/busybox", busybox.as_slice())?;
    for applet in applets.lines().map(str::trim).filter(|a| !a.is_empty() && *a != "busybox") {
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        layer.append_link(&mut h, format!("bin/{applet}"), "busybox")?;
    }
    for (file, text) in [
        ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"),
        ("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
    ] {
        let mut h = header(tar::EntryType::Regular, 0o644, text.len() as u64);
        layer.append_data(&mut h, file, text.as_bytes())?;
    }
    let layer = layer.into_inner()?;
    let digest = |data: &[u8]| format!("sha256:{:x}", Sha256::digest(data));
    let diff_id = digest(&layer);
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": arch, "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }))?;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": diff_id, "size": layer.len()}],
    }))?;
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest(&manifest), "size": manifest.len(),
            "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": name},
        }],
    }))?;
    let mut out = tar::Builder::new(std::fs::File::create(path)?);
    let mut put = |name: String, data: &[u8]| -> Result<()> {
        let mut h = header(tar::EntryType::Regular, 0o644, data.len() as u64);
        out.append_data(&mut h, name, data)?;
        Ok(())
    };
    put("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    put("index.json".into(), &index)?;
    for blob in [&layer, &config, &manifest] {
        let d = digest(blob);
        put(format!("blobs/sha256/{}", d.trim_start_matches("sha256:")), blob)?;
    }
    out.finish()?;
    Ok(diff_id)
}

/// SIGKILL every containerd shim serving `socket`, and the processes under it.
fn kill_shims(socket: &Path) {
    let needle = socket.display().to_string();
    let Ok(procs) = std::fs::read_dir("/proc") else { return };
    for p in procs.filter_map(|e| e.ok()) {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<u32>() else { continue };
        let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains("containerd-shim") && cmdline.contains(&needle) {
            kill_tree(pid);
        }
    }
}

fn kill_tree(pid: u32) {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    for child in children.split_whitespace().filter_map(|c| c.parse::<u32>().ok()) {
        kill_tree(child);
    }
    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
}

fn containerd_binary() -> PathBuf {
    std::env::var_os("FERRY_CONTAINERD").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("containerd"))
}

fn etcd_binary() -> PathBuf {
    std::env::var_os("FERRY_ETCD").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("etcd"))
}

/// etcd plus an in-process API server.
pub struct Cluster {
    /// The etcd behind the server.
    pub etcd: Etcd,
    /// The running server (None while stopped).
    pub server: Option<ferry_apiserver::Running>,
    /// The server's data dir.
    pub data_dir: tempfile::TempDir,
    /// The configuration it was started with.
    pub config: ferry_apiserver::Config,
}

impl Cluster {
    /// Start etcd and an API server with default settings.
    pub async fn start() -> Result<Self> {
        Self::start_with(|_| {}).await
    }

    /// Start with a chance to adjust the server configuration.
    pub async fn start_with(adjust: impl FnOnce(&mut ferry_apiserver::Config)) -> Result<Self> {
        init();
        let etcd = Etcd::start().await?;
        let data_dir = tempfile::Builder::new().prefix("ferry-apiserver-").tempdir()?;
        let mut config = ferry_apiserver::Config::new(vec![etcd.url.clone()], data_dir.path().to_path_buf());
        config.secure_port = 0;
        config.compaction_interval = None;
        config.shutdown_grace = Duration::from_secs(2);
        adjust(&mut config);
        let server = ferry_apiserver::start(config.clone()).await.context("starting the API server")?;
        // Restarts reuse the port, so clients (and their kubeconfig) keep working.
        config.secure_port = server.addr.port();
        Ok(Self { etcd, server: Some(server), data_dir, config })
    }

    /// Stop the API server (etcd keeps running).
    pub async fn stop_server(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
    }

    /// (Re)start the API server on the same port and data dir.
    pub async fn restart_server(&mut self) -> Result<()> {
        self.stop_server().await;
        let config = self.config.clone();
        self.server = Some(ferry_apiserver::start(config).await.context("restarting the API server")?);
        Ok(())
    }

    /// Path of the admin kubeconfig.
    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir.path().join("admin.kubeconfig")
    }

    /// An admin `kube::Client`.
    pub async fn client(&self) -> Result<kube::Client> {
        client_from(&self.kubeconfig()).await
    }

    /// An admin client that does not retry 429/503/504, so tests see those answers.
    pub async fn raw_client(&self) -> Result<kube::Client> {
        let kc = kube::config::Kubeconfig::read_from(self.kubeconfig())?;
        let mut config = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await?;
        config.default_retry = false;
        Ok(kube::Client::try_from(config)?)
    }

    /// Send a raw request as admin (no retries); returns the status code and body.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<Vec<u8>>,
    ) -> Result<(u16, Bytes)> {
        raw(&self.raw_client().await?, method, path, content_type, body.into()).await
    }

    /// Send a raw request and parse the body as JSON.
    pub async fn raw_json(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<Vec<u8>>,
    ) -> Result<(u16, serde_json::Value)> {
        let (code, bytes) = self.raw(method, path, content_type, body).await?;
        let v = serde_json::from_slice(&bytes)
            .with_context(|| format!("body of {method} {path} is not JSON: {}", String::from_utf8_lossy(&bytes)))?;
        Ok((code, v))
    }
}

impl Cluster {
    /// Mint credentials for node `node` serving on `hosts` and write them into
    /// `<data dir>/nodes/<node>/` (`kubeconfig`, `ca.crt`, `nodelet.crt`, `nodelet.key`); returns
    /// the credentials and that directory.
    pub fn node_credentials(
        &self,
        node: &str,
        hosts: &[String],
    ) -> Result<(ferry_apiserver::pki::NodeCredentials, PathBuf)> {
        let server = self.server.as_ref().context("the API server is not running")?;
        let creds = server.pki.issue_node_credentials(node, hosts)?;
        let dir = self.data_dir.path().join("nodes").join(node);
        creds.write(&dir, &format!("https://{}", server.addr))?;
        Ok((creds, dir))
    }

    /// GET with an `Accept` header (e.g. Table output), parsed as JSON.
    pub async fn get_accept(&self, path: &str, accept: &str) -> Result<(u16, serde_json::Value)> {
        let req = http::Request::builder()
            .method("GET")
            .uri(path)
            .header(http::header::ACCEPT, accept)
            .body(kube::client::Body::from(Vec::new()))?;
        let resp = self.raw_client().await?.send(req).await?;
        let code = resp.status().as_u16();
        let bytes = resp.into_body().collect().await?.to_bytes();
        Ok((code, serde_json::from_slice(&bytes)?))
    }
}

/// A `kube::Client` from a kubeconfig file.
pub async fn client_from(path: &Path) -> Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(path)?;
    let config = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

/// Send a raw request with a `kube::Client`.
pub async fn raw(
    client: &kube::Client,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> Result<(u16, Bytes)> {
    let mut req = http::Request::builder().method(method).uri(path);
    if let Some(ct) = content_type {
        req = req.header(http::header::CONTENT_TYPE, ct);
    }
    let req = req.body(kube::client::Body::from(body))?;
    let resp = client.send(req).await?;
    let code = resp.status().as_u16();
    let bytes = resp.into_body().collect().await?.to_bytes();
    Ok((code, bytes))
}

/// A raw watch stream: newline-delimited JSON events.
pub struct RawWatch {
    body: kube::client::Body,
    buf: Vec<u8>,
    /// HTTP status of the watch response.
    pub status: u16,
}

impl RawWatch {
    /// Start a watch with a raw GET (the path must include `watch=true`).
    pub async fn start(client: &kube::Client, path: &str) -> Result<Self> {
        let req = http::Request::builder().method("GET").uri(path).body(kube::client::Body::from(Vec::new()))?;
        let resp = client.send(req).await?;
        Ok(Self { status: resp.status().as_u16(), body: resp.into_body(), buf: Vec::new() })
    }

    /// The next event, or `None` when the server closed the stream. Fails after `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Result<Option<serde_json::Value>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                let v = serde_json::from_slice(&line[..line.len() - 1])
                    .with_context(|| format!("watch line is not JSON: {}", String::from_utf8_lossy(&line)))?;
                return Ok(Some(v));
            }
            let frame = tokio::time::timeout_at(deadline, self.body.frame())
                .await
                .context("timed out waiting for a watch event")?;
            match frame {
                None => return Ok(None),
                Some(f) => {
                    if let Ok(data) = f?.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }

    /// Collect events until `pred` holds for the last one (or fail after `timeout`).
    pub async fn until(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&serde_json::Value) -> bool,
    ) -> Result<Vec<serde_json::Value>> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await? {
                Some(ev) => {
                    let done = pred(&ev);
                    out.push(ev);
                    if done {
                        return Ok(out);
                    }
                }
                None => bail!("watch closed before the condition held; got {out:?}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_netns_reads_the_network_namespace_paths_of_task_bundles() -> Result<()> {
        let state = tempfile::tempdir()?;
        let bundle = |ns: &str, id: &str, spec: serde_json::Value| -> Result<()> {
            let dir = state.path().join("io.containerd.runtime.v2.task").join(ns).join(id);
            std::fs::create_dir_all(&dir)?;
            std::fs::write(dir.join("config.json"), serde_json::to_vec(&spec)?)?;
            Ok(())
        };
        let joined = |path: &str| serde_json::json!({"linux": {"namespaces": [{"type": "pid"}, {"type": "network", "path": path}]}});
        bundle("k8s", "a", joined("/run/netns/ferry-1"))?;
        bundle("k8s", "b", joined("/run/netns/ferry-1"))?;
        bundle("other", "c", joined("/run/netns/ferry-2"))?;
        bundle("k8s", "host", serde_json::json!({"linux": {"namespaces": [{"type": "pid"}]}}))?;
        bundle("k8s", "elsewhere", joined("/proc/1/ns/net"))?;
        let found: Vec<PathBuf> = bundle_netns(state.path()).into_iter().collect();
        assert_eq!(found, vec![PathBuf::from("/run/netns/ferry-1"), PathBuf::from("/run/netns/ferry-2")]);
        assert!(bundle_netns(&state.path().join("missing")).is_empty());
        Ok(())
    }
}
