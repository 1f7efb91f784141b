//! [`ContainerdRuntime`]: pods on containerd. Each pod gets a network namespace with CNI
//! ([`super::cni`]), its own `/etc/hosts`, `/etc/resolv.conf` and `/etc/hostname` under
//! `<root>/pods/<uid>/`, and one containerd container + task per pod container (all joining
//! the pod's network namespace), started from an imported image's unpacked snapshot, with
//! stdout/stderr to `<root>/pods/<uid>/logs/<container>/<restart>.log` (shim `file://` URI).
//! Exited containers are restarted per restartPolicy with Kubernetes' backoff (immediately,
//! then 10 s doubling to 5 min; CrashLoopBackOff while waiting).

use super::cni::{self, CniConfig};
use super::containerd::{Containerd, ContainerdError, POD_UID_LABEL};
use super::image::normalize_reference;
use super::probe::{self, ProbeState};
use super::pull::{self, PullLocks, RegistryConfig};
use super::security;
use super::{now_seconds, pod_key, ContainerState, PodState, Runtime, RuntimeError, State, Terminated};
use containerd_client::services::v1::container::Runtime as CtrRuntime;
use containerd_client::services::v1::snapshots::{MountsRequest, PrepareSnapshotRequest, RemoveSnapshotRequest};
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest, DeleteTaskRequest, GetImageRequest,
    GetRequest, KillRequest, ListContainersRequest, ReadContentRequest, StartRequest,
};
use containerd_client::tonic::Code;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use k8s_openapi::jiff::Timestamp;
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

const NAME_LABEL: &str = "io.ferry.container-name";
const RESTARTS_LABEL: &str = "io.ferry.restart-count";
const IMAGE_ID_LABEL: &str = "io.ferry.image-id";
/// Kubernetes' initial crash backoff.
pub const BACKOFF_START: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

impl From<ContainerdError> for RuntimeError {
    fn from(e: ContainerdError) -> Self {
        RuntimeError::Backend(e.to_string())
    }
}

impl From<cni::CniError> for RuntimeError {
    fn from(e: cni::CniError) -> Self {
        RuntimeError::Backend(e.to_string())
    }
}

/// Settings of the containerd runtime.
#[derive(Clone, Debug)]
pub struct ContainerdConfig {
    /// Where pod directories (hosts, resolv.conf, logs) live.
    pub root_dir: PathBuf,
    /// Pod networking.
    pub cni: CniConfig,
    /// The node's address (the pod IP of hostNetwork pods).
    pub host_ip: String,
    /// Backoff before the second restart (doubling up to 5 min); Kubernetes uses 10 s.
    pub backoff_start: Duration,
}

#[derive(Default)]
struct ContainerMemo {
    last: Option<Terminated>,
    restarts: i32,
    restart_at: Option<Instant>,
    delay: Duration,
    started_at: Option<Timestamp>,
    /// When this nodelet first saw the current instance running (probe delays count from here).
    seen_running: Option<Instant>,
    liveness: ProbeState,
    readiness: ProbeState,
    startup: ProbeState,
    /// Image pull backoff (the kubelet's: 10 s doubling to 5 min).
    pull_delay: Duration,
    pull_retry_at: Option<Instant>,
}

#[derive(Default)]
struct PodMemo {
    ips: Vec<String>,
    containers: HashMap<String, ContainerMemo>,
    /// preStop exec hooks by container, from the last synced spec (run by `kill_pod`).
    pre_stop: Vec<(String, Vec<String>)>,
}

/// Pods on containerd.
pub struct ContainerdRuntime {
    ctrd: Arc<Containerd>,
    client: Option<kube::Client>,
    config: ContainerdConfig,
    /// The `ferry-nodelet` binary, run by the shim as each container's log driver.
    log_driver: Option<PathBuf>,
    pods: Mutex<HashMap<String, PodMemo>>,
    registries: RegistryConfig,
    pull_locks: PullLocks,
    recorder: std::sync::OnceLock<kube::runtime::events::Recorder>,
    /// Image configs by manifest digest (read once, not at every container start).
    image_cache: Mutex<HashMap<String, Arc<ImageInfo>>>,
    cluster_dns: Option<super::resolv::ClusterDns>,
}

struct ImageInfo {
    chain_id: String,
    image_id: String,
    env: Vec<String>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    workdir: Option<String>,
    /// The image config's `User` (`uid`, `uid:gid`, or a name).
    user: Option<String>,
}

fn waiting(reason: &str, message: String) -> State {
    State::Waiting { reason: reason.into(), message: Some(message) }
}

fn netns_name(uid: &str) -> String {
    format!("ferry-{uid}")
}

fn container_id(uid: &str, name: &str) -> String {
    format!("{uid}-{name}")
}

fn ts(t: &Option<prost_types::Timestamp>) -> Option<Timestamp> {
    t.as_ref().and_then(|t| Timestamp::from_second(t.seconds).ok()).filter(|t| t.as_second() > 0)
}

impl ContainerdRuntime {
    /// A runtime on this containerd connection.
    pub fn new(ctrd: Containerd, config: ContainerdConfig) -> Self {
        ContainerdRuntime {
            ctrd: Arc::new(ctrd),
            client: None,
            config,
            log_driver: None,
            pods: Mutex::new(HashMap::new()),
            registries: RegistryConfig::default(),
            pull_locks: PullLocks::default(),
            recorder: std::sync::OnceLock::new(),
            image_cache: Mutex::new(HashMap::new()),
            cluster_dns: None,
        }
    }

    /// Write container logs in CRI format (timestamps) through `ferry-nodelet log-driver`, the
    /// binary at `nodelet` ([`crate::server::logs`]); without it logs are raw `file://` copies.
    pub fn with_log_driver(mut self, nodelet: PathBuf) -> Self {
        self.log_driver = Some(nodelet);
        self
    }
    /// Pull images through these mirrors and insecure registries.
    pub fn with_registries(mut self, registries: RegistryConfig) -> Self {
        self.registries = registries;
        self
    }

    /// Record an Event about the pod (as the kubelet: Pulling, Pulled, Failed, BackOff), in the
    /// background; without an API client, nothing.
    fn event(&self, pod: &Pod, warning: bool, reason: &str, note: String) {
        use kube::runtime::events::{Event, EventType, Recorder, Reporter};
        let Some(client) = &self.client else { return };
        let recorder = self.recorder.get_or_init(|| {
            let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
            Recorder::new(client.clone(), Reporter { controller: "kubelet".into(), instance: node })
        });
        let recorder = recorder.clone();
        let reference = k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: pod.metadata.name.clone(),
            namespace: pod.metadata.namespace.clone(),
            uid: pod.metadata.uid.clone(),
            ..Default::default()
        };
        let ev = Event {
            type_: if warning { EventType::Warning } else { EventType::Normal },
            reason: reason.into(),
            note: Some(note),
            action: reason.into(),
            secondary: None,
        };
        tokio::spawn(async move {
            if let Err(e) = recorder.publish(&ev, &reference).await {
                tracing::debug!(error = %e, "recording an event failed");
            }
        });
    }

    /// Read ConfigMaps and Secrets (env `valueFrom`/`envFrom`, volumes) with this client.
    pub fn with_client(mut self, client: kube::Client) -> Self {
        self.client = Some(client);
        self
    }

    /// Point pods at the cluster DNS (their resolv.conf, see [`super::resolv`]).
    pub fn with_cluster_dns(mut self, dns: super::resolv::ClusterDns) -> Self {
        self.cluster_dns = Some(dns);
        self
    }

    async fn config_data(
        &self,
        pod: &Pod,
        kind: &str,
        name: &str,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>, RuntimeError> {
        let Some(client) = &self.client else {
            return Err(RuntimeError::Backend("no API client to read ConfigMaps and Secrets".into()));
        };
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let err = |e: kube::Error| RuntimeError::Backend(format!("reading {kind} {ns}/{name}: {e}"));
        if kind == "ConfigMap" {
            let api: kube::Api<ConfigMap> = kube::Api::namespaced(client.clone(), ns);
            let Some(cm) = api.get_opt(name).await.map_err(err)? else { return Ok(None) };
            let mut out: BTreeMap<String, Vec<u8>> =
                cm.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
            out.extend(cm.binary_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)));
            Ok(Some(out))
        } else {
            let api: kube::Api<Secret> = kube::Api::namespaced(client.clone(), ns);
            let Some(s) = api.get_opt(name).await.map_err(err)? else { return Ok(None) };
            let mut out: BTreeMap<String, Vec<u8>> =
                s.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
            out.extend(s.string_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())));
            Ok(Some(out))
        }
    }

    /// The container's environment: image env, then envFrom, then env (valueFrom resolved).
    async fn environment(
        &self,
        pod: &Pod,
        c: &k8s_openapi::api::core::v1::Container,
        image: &ImageInfo,
        pod_ip: &str,
    ) -> Result<Vec<String>, RuntimeError> {
        let bad = |w: String| RuntimeError::InvalidPod { pod: pod_key(pod), what: w };
        let mut env: Vec<(String, String)> =
            image.env.iter().filter_map(|e| e.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut set = |k: String, v: String| {
            env.retain(|(x, _)| *x != k);
            env.push((k, v));
        };
        for from in c.env_from.iter().flatten() {
            let prefix = from.prefix.clone().unwrap_or_default();
            let (kind, name, optional) = if let Some(r) = &from.config_map_ref {
                ("ConfigMap", r.name.clone(), r.optional.unwrap_or(false))
            } else if let Some(r) = &from.secret_ref {
                ("Secret", r.name.clone(), r.optional.unwrap_or(false))
            } else {
                continue;
            };
            match self.config_data(pod, kind, &name).await? {
                Some(data) => {
                    for (k, v) in data {
                        set(format!("{prefix}{k}"), String::from_utf8_lossy(&v).into_owned());
                    }
                }
                None if optional => {}
                None => return Err(bad(format!("{kind} {name:?} not found"))),
            }
        }
        for e in c.env.iter().flatten() {
            let value = if let Some(v) = &e.value {
                v.clone()
            } else if let Some(from) = &e.value_from {
                if let Some(r) = &from.config_map_key_ref {
                    let data = self.config_data(pod, "ConfigMap", &r.name).await?;
                    match data.and_then(|d| d.get(&r.key).cloned()) {
                        Some(v) => String::from_utf8_lossy(&v).into_owned(),
                        None if r.optional.unwrap_or(false) => continue,
                        None => return Err(bad(format!("couldn't find key {} in ConfigMap {}", r.key, r.name))),
                    }
                } else if let Some(r) = &from.secret_key_ref {
                    let data = self.config_data(pod, "Secret", &r.name).await?;
                    match data.and_then(|d| d.get(&r.key).cloned()) {
                        Some(v) => String::from_utf8_lossy(&v).into_owned(),
                        None if r.optional.unwrap_or(false) => continue,
                        None => return Err(bad(format!("couldn't find key {} in Secret {}", r.key, r.name))),
                    }
                } else if let Some(f) = &from.field_ref {
                    let m = &pod.metadata;
                    match f.field_path.as_str() {
                        "metadata.name" => m.name.clone().unwrap_or_default(),
                        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
                        "metadata.uid" => m.uid.clone().unwrap_or_default(),
                        "spec.nodeName" => pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default(),
                        "spec.serviceAccountName" => {
                            pod.spec.as_ref().and_then(|s| s.service_account_name.clone()).unwrap_or_default()
                        }
                        "status.podIP" => pod_ip.to_string(),
                        "status.hostIP" => pod.status.as_ref().and_then(|s| s.host_ip.clone()).unwrap_or_default(),
                        other => return Err(bad(format!("unsupported fieldRef {other}"))),
                    }
                } else {
                    return Err(bad(format!("env {}: unsupported valueFrom", e.name)));
                }
            } else {
                String::new()
            };
            set(e.name.clone(), value);
        }
        set("HOSTNAME".into(), pod.metadata.name.clone().unwrap_or_default());
        Ok(env.into_iter().map(|(k, v)| format!("{k}={v}")).collect())
    }

    /// Materialize the pod's volumes under the pod dir; returns name → host path.
    async fn volumes(&self, pod: &Pod, uid: &str) -> Result<HashMap<String, PathBuf>, RuntimeError> {
        let bad = |w: String| RuntimeError::InvalidPod { pod: pod_key(pod), what: w };
        let io = |e: std::io::Error| RuntimeError::Backend(format!("volume: {e}"));
        let mut out = HashMap::new();
        for v in pod.spec.as_ref().and_then(|s| s.volumes.clone()).unwrap_or_default() {
            let dir = self.pod_dir(uid).join("volumes").join(&v.name);
            if let Some(h) = &v.host_path {
                out.insert(v.name.clone(), PathBuf::from(&h.path));
                continue;
            }
            let (kind, name, items, optional) = if let Some(cm) = &v.config_map {
                ("ConfigMap", cm.name.clone(), cm.items.clone(), cm.optional.unwrap_or(false))
            } else if let Some(s) = &v.secret {
                ("Secret", s.secret_name.clone().unwrap_or_default(), s.items.clone(), s.optional.unwrap_or(false))
            } else if v.empty_dir.is_some() {
                std::fs::create_dir_all(&dir).map_err(io)?;
                // World-writable as the kubelet makes it; with fsGroup also owned by that group
                // (setgid, so files created inside inherit it).
                use std::os::unix::fs::PermissionsExt;
                let mut mode = 0o777;
                if let Some(gid) = pod.spec.as_ref().and_then(|s| s.security_context.as_ref()).and_then(|s| s.fs_group)
                {
                    let gid = u32::try_from(gid).map_err(|_| bad(format!("fsGroup {gid} out of range")))?;
                    std::os::unix::fs::chown(&dir, None, Some(gid)).map_err(io)?;
                    mode = 0o2777;
                }
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).map_err(io)?;
                out.insert(v.name.clone(), dir);
                continue;
            } else {
                return Err(bad(format!(
                    "volume {}: only emptyDir, configMap, secret and hostPath are supported",
                    v.name
                )));
            };
            std::fs::create_dir_all(&dir).map_err(io)?;
            match self.config_data(pod, kind, &name).await? {
                Some(data) => {
                    for (k, val) in &data {
                        let path = match &items {
                            Some(items) => match items.iter().find(|i| &i.key == k) {
                                Some(i) => i.path.clone(),
                                None => continue,
                            },
                            None => k.clone(),
                        };
                        if path.contains("..") || path.starts_with('/') {
                            return Err(bad(format!("volume {}: bad item path {path:?}", v.name)));
                        }
                        let target = dir.join(&path);
                        if let Some(parent) = target.parent() {
                            std::fs::create_dir_all(parent).map_err(io)?;
                        }
                        std::fs::write(target, val).map_err(io)?;
                    }
                }
                None if optional => {}
                None => return Err(bad(format!("{kind} {name:?} for volume {} not found", v.name))),
            }
            out.insert(v.name.clone(), dir);
        }
        Ok(out)
    }

    fn memo<T>(&self, f: impl FnOnce(&mut HashMap<String, PodMemo>) -> T) -> Result<T, RuntimeError> {
        let mut g = self.pods.lock().map_err(|_| RuntimeError::Backend("state lock poisoned".into()))?;
        Ok(f(&mut g))
    }

    fn exec_dir(&self) -> PathBuf {
        self.config.root_dir.join("exec")
    }

    fn pod_dir(&self, uid: &str) -> PathBuf {
        self.config.root_dir.join("pods").join(uid)
    }

    async fn read_blob(&self, digest: &str) -> Result<Vec<u8>, ContainerdError> {
        let req = ReadContentRequest { digest: digest.into(), offset: 0, size: 0 };
        let mut stream = self.ctrd.client.content().read(self.ctrd.request_ns(req)?).await?.into_inner();
        let mut out = Vec::new();
        while let Some(chunk) = stream.message().await? {
            out.extend_from_slice(&chunk.data);
        }
        Ok(out)
    }

    async fn image(&self, reference: &str) -> Result<Option<Arc<ImageInfo>>, RuntimeError> {
        let name = normalize_reference(reference);
        let got = self.ctrd.client.images().get(self.ctrd.request_ns(GetImageRequest { name })?).await;
        let image = match got {
            Ok(r) => r.into_inner().image,
            Err(s) if s.code() == Code::NotFound => return Ok(None),
            Err(s) => return Err(ContainerdError::from(s).into()),
        };
        let Some(target) = image.and_then(|i| i.target) else { return Ok(None) };
        if let Some(info) = self.image_cache.lock().ok().and_then(|c| c.get(&target.digest).cloned()) {
            return Ok(Some(info));
        }
        let bad = |w: &str| RuntimeError::Backend(format!("image {reference}: {w}"));
        let manifest: serde_json::Value =
            serde_json::from_slice(&self.read_blob(&target.digest).await?).map_err(|_| bad("bad manifest"))?;
        let config_digest = manifest["config"]["digest"].as_str().ok_or_else(|| bad("no config"))?.to_string();
        let config: serde_json::Value =
            serde_json::from_slice(&self.read_blob(&config_digest).await?).map_err(|_| bad("bad config"))?;
        let diff_ids: Vec<String> = config["rootfs"]["diff_ids"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d.as_str().map(str::to_string))
            .collect();
        let chain_id = super::image::chain_ids(&diff_ids).pop().ok_or_else(|| bad("no layers"))?;
        let strs = |v: &serde_json::Value| -> Vec<String> {
            v.as_array().into_iter().flatten().filter_map(|s| s.as_str().map(str::to_string)).collect()
        };
        let c = &config["config"];
        let info = Arc::new(ImageInfo {
            chain_id,
            image_id: config_digest,
            env: strs(&c["Env"]),
            entrypoint: strs(&c["Entrypoint"]),
            cmd: strs(&c["Cmd"]),
            workdir: c["WorkingDir"].as_str().filter(|w| !w.is_empty()).map(str::to_string),
            user: c["User"].as_str().filter(|u| !u.is_empty()).map(str::to_string),
        });
        if let Ok(mut c) = self.image_cache.lock() {
            c.insert(target.digest.clone(), info.clone());
        }
        Ok(Some(info))
    }

    /// Make the container's image present as its imagePullPolicy says (pulling with the pod's
    /// imagePullSecrets, with the kubelet's pull backoff); the waiting state when it is not.
    async fn ensure_image(
        &self,
        pod: &Pod,
        uid: &str,
        c: &k8s_openapi::api::core::v1::Container,
        resync: &mut Option<Duration>,
    ) -> Result<Result<Arc<ImageInfo>, State>, RuntimeError> {
        let image = c.image.as_deref().unwrap_or_default();
        let reference = match pull::parse_reference(image) {
            Ok(r) => r,
            Err(e) => {
                self.event(pod, true, "InspectFailed", e.to_string());
                return Ok(Err(waiting("InvalidImageName", e.to_string())));
            }
        };
        let policy = c
            .image_pull_policy
            .clone()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| ferry_api::defaults::default_pull_policy(image).into());
        let present = self.image(image).await?;
        match (policy.as_str(), present) {
            ("Never" | "IfNotPresent", Some(info)) => return Ok(Ok(info)),
            ("Never", None) => {
                let msg = format!("Container image \"{image}\" is not present with pull policy of Never");
                self.event(pod, true, "ErrImageNeverPull", msg.clone());
                return Ok(Err(waiting("ErrImageNeverPull", msg)));
            }
            _ => {}
        }
        let retry_at = self.memo(|m| {
            m.entry(uid.to_string()).or_default().containers.entry(c.name.clone()).or_default().pull_retry_at
        })?;
        if let Some(left) = retry_at.and_then(|at| at.checked_duration_since(Instant::now())).filter(|d| !d.is_zero()) {
            *resync = Some(resync.map_or(left, |r| r.min(left)));
            let msg = format!("Back-off pulling image \"{image}\"");
            self.event(pod, false, "BackOff", msg.clone());
            return Ok(Err(waiting("ImagePullBackOff", msg)));
        }
        let secrets = self.pull_secrets(pod).await;
        let auths = pull::credentials_for(&secrets, reference.registry());
        let lock = self.pull_locks.get(&normalize_reference(image));
        let _pulling = lock.lock().await;
        // Another pod may have pulled it while this one waited.
        if policy != "Always" {
            if let Some(info) = self.image(image).await? {
                return Ok(Ok(info));
            }
        }
        self.event(pod, false, "Pulling", format!("Pulling image \"{image}\""));
        let started = Instant::now();
        match self.ctrd.pull_image(image, &auths, &self.registries).await {
            Ok(_) => {
                self.memo(|m| {
                    let cm = m.entry(uid.to_string()).or_default().containers.entry(c.name.clone()).or_default();
                    cm.pull_delay = Duration::ZERO;
                    cm.pull_retry_at = None;
                })?;
                let took = started.elapsed();
                self.event(pod, false, "Pulled", format!("Successfully pulled image \"{image}\" in {took:?}"));
                match self.image(image).await? {
                    Some(info) => Ok(Ok(info)),
                    None => Ok(Err(waiting("ErrImagePull", format!("image {image} vanished after its pull")))),
                }
            }
            Err(e) => {
                let start = self.config.backoff_start;
                let delay = self.memo(|m| {
                    let cm = m.entry(uid.to_string()).or_default().containers.entry(c.name.clone()).or_default();
                    cm.pull_delay = if cm.pull_delay.is_zero() { start } else { (cm.pull_delay * 2).min(BACKOFF_MAX) };
                    cm.pull_retry_at = Some(Instant::now() + cm.pull_delay);
                    cm.pull_delay
                })?;
                // Look again before the retry: the status turns to ImagePullBackOff meanwhile.
                let again = (delay / 2).min(Duration::from_secs(1));
                *resync = Some(resync.map_or(again, |r| r.min(again)));
                let reason =
                    if matches!(e, pull::PullError::InvalidName { .. }) { "InvalidImageName" } else { "ErrImagePull" };
                self.event(pod, true, "Failed", e.to_string());
                tracing::info!(pod = %pod_key(pod), image, error = %e, "image pull failed");
                Ok(Err(waiting(reason, e.to_string())))
            }
        }
    }

    /// The pod's imagePullSecrets that exist (missing ones are skipped, as the kubelet does).
    async fn pull_secrets(&self, pod: &Pod) -> Vec<Secret> {
        let Some(client) = &self.client else { return Vec::new() };
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let api: kube::Api<Secret> = kube::Api::namespaced(client.clone(), ns);
        let mut out = Vec::new();
        for r in pod.spec.as_ref().and_then(|s| s.image_pull_secrets.clone()).unwrap_or_default() {
            match api.get_opt(&r.name).await {
                Ok(Some(s)) => out.push(s),
                Ok(None) => tracing::warn!(pod = %pod_key(pod), secret = %r.name, "image pull secret not found"),
                Err(e) => {
                    tracing::warn!(pod = %pod_key(pod), secret = %r.name, error = %e, "reading an image pull secret failed")
                }
            }
        }
        out
    }

    /// netns + CNI + the pod's /etc files; returns the pod IPs.
    async fn ensure_sandbox(&self, pod: &Pod, uid: &str) -> Result<Vec<String>, RuntimeError> {
        let known = self.memo(|m| m.get(uid).map(|p| p.ips.clone()).unwrap_or_default())?;
        if !known.is_empty() {
            return Ok(known);
        }
        let dir = self.pod_dir(uid);
        let ip_file = dir.join("ips");
        let host_network = pod.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false);
        let ips = match std::fs::read_to_string(&ip_file) {
            Ok(s) if !s.trim().is_empty() => s.lines().map(str::to_string).collect(),
            _ => {
                let io = |e: std::io::Error| RuntimeError::Backend(format!("pod dir {}: {e}", dir.display()));
                std::fs::create_dir_all(&dir).map_err(io)?;
                let ips = if host_network {
                    vec![self.config.host_ip.clone()]
                } else {
                    let ns = netns_name(uid);
                    cni::create_netns(&ns).await?;
                    let ports = cni::host_ports(pod);
                    if !ports.is_empty() {
                        // Kept for the DEL, which needs the same mappings.
                        let json = serde_json::to_vec(&ports).map_err(|e| RuntimeError::Backend(e.to_string()))?;
                        std::fs::write(dir.join("ports.json"), json).map_err(io)?;
                    }
                    self.config.cni.add_with_ports(uid, &ns, &ports).await?
                };
                let name = pod.metadata.name.clone().unwrap_or_default();
                let ip = ips.first().cloned().unwrap_or_default();
                std::fs::write(dir.join("hostname"), format!("{name}\n")).map_err(io)?;
                std::fs::write(
                    dir.join("hosts"),
                    format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{ip}\t{name}\n"),
                )
                .map_err(io)?;
                let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
                let resolv = super::resolv::resolv_conf(pod, &host_resolv, self.cluster_dns.as_ref());
                std::fs::write(dir.join("resolv.conf"), resolv).map_err(io)?;
                std::fs::write(&ip_file, ips.join("\n")).map_err(io)?;
                ips
            }
        };
        self.memo(|m| m.entry(uid.to_string()).or_default().ips = ips.clone())?;
        Ok(ips)
    }

    fn spec(
        &self,
        pod: &Pod,
        uid: &str,
        c: &k8s_openapi::api::core::v1::Container,
        image: &ImageInfo,
        env: Vec<String>,
        volumes: &HashMap<String, PathBuf>,
    ) -> Result<Vec<u8>, RuntimeError> {
        let bad = |w: String| RuntimeError::InvalidPod { pod: pod_key(pod), what: w };
        let mut spec = serde_json::to_value(oci_spec::runtime::Spec::default()).map_err(|e| bad(e.to_string()))?;
        let args: Vec<String> = match (&c.command, &c.args) {
            (Some(cmd), Some(a)) => cmd.iter().chain(a).cloned().collect(),
            (Some(cmd), None) => cmd.clone(),
            (None, Some(a)) => image.entrypoint.iter().chain(a).cloned().collect(),
            (None, None) => image.entrypoint.iter().chain(&image.cmd).cloned().collect(),
        };
        if args.is_empty() {
            return Err(bad(format!("container {}: no command and the image has none", c.name)));
        }
        let name = pod.metadata.name.clone().unwrap_or_default();
        spec["process"]["args"] = serde_json::json!(args);
        spec["process"]["env"] = serde_json::json!(env);
        spec["process"]["cwd"] =
            serde_json::json!(c.working_dir.clone().or(image.workdir.clone()).unwrap_or("/".into()));
        spec["process"]["terminal"] = serde_json::json!(false);
        spec["hostname"] = serde_json::json!(name);
        spec["root"] = serde_json::json!({"path": "rootfs", "readonly": false});
        let dir = self.pod_dir(uid);
        if let Some(mounts) = spec["mounts"].as_array_mut() {
            for (file, target) in
                [("hosts", "/etc/hosts"), ("resolv.conf", "/etc/resolv.conf"), ("hostname", "/etc/hostname")]
            {
                mounts.push(serde_json::json!({
                    "destination": target, "type": "bind",
                    "source": dir.join(file), "options": ["rbind", "rw"],
                }));
            }
            for m in c.volume_mounts.iter().flatten() {
                let source = volumes
                    .get(&m.name)
                    .ok_or_else(|| bad(format!("volumeMount {}: no volume of that name", m.name)))?;
                let source = match &m.sub_path {
                    Some(sp) if !sp.is_empty() && !sp.contains("..") => source.join(sp),
                    _ => source.clone(),
                };
                let ro = if m.read_only.unwrap_or(false) { "ro" } else { "rw" };
                mounts.push(serde_json::json!({
                    "destination": m.mount_path, "type": "bind", "source": source, "options": ["rbind", ro],
                }));
            }
        }
        let host_network = pod.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false);
        if host_network {
            // The host's network and host name.
            if let Some(o) = spec.as_object_mut() {
                o.remove("hostname");
            }
        }
        if let Some(nss) = spec["linux"]["namespaces"].as_array_mut() {
            nss.retain(|n| n["type"] != "cgroup");
            if host_network {
                nss.retain(|n| n["type"] != "network" && n["type"] != "uts");
            }
            for n in nss.iter_mut() {
                if n["type"] == "network" {
                    n["path"] = serde_json::json!(cni::netns_path(&netns_name(uid)));
                }
            }
        }
        spec["linux"]["cgroupsPath"] = serde_json::json!(format!("/ferry/{uid}/{}", c.name));
        let resources = c.resources.clone().unwrap_or_default();
        let quantity = |map: &Option<
            std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
        >,
                        key: &str| {
            map.as_ref()
                .and_then(|m| m.get(key))
                .map(|q| {
                    ferry_api::validation::quantity::parse_quantity(&q.0)
                        .ok_or_else(|| bad(format!("container {}: bad quantity {key}={}", c.name, q.0)))
                })
                .transpose()
        };
        let non_negative = |n: i64| n.max(0).unsigned_abs();
        if let Some(mem) = quantity(&resources.limits, "memory")? {
            let bytes = non_negative(mem.value());
            spec["linux"]["resources"]["memory"] = serde_json::json!({"limit": bytes, "swap": bytes});
        }
        let request_cpu = quantity(&resources.requests, "cpu")?.or(quantity(&resources.limits, "cpu")?);
        let mut cpu = serde_json::Map::new();
        // Kubernetes: shares = millicores * 1024 / 1000 (min 2); quota = limit over a 100 ms period.
        let shares = request_cpu.map(|q| non_negative(q.milli_value()).saturating_mul(1024) / 1000).unwrap_or(2).max(2);
        cpu.insert("shares".into(), shares.into());
        if let Some(limit) = quantity(&resources.limits, "cpu")? {
            let quota = non_negative(limit.milli_value()).saturating_mul(100).max(1000);
            cpu.insert("quota".into(), quota.into());
            cpu.insert("period".into(), 100_000u64.into());
        }
        spec["linux"]["resources"]["cpu"] = serde_json::Value::Object(cpu);
        security::apply(&mut spec, pod, c, image.user.as_deref()).map_err(bad)?;
        serde_json::to_vec(&spec).map_err(|e| bad(e.to_string()))
    }

    async fn start_container(
        &self,
        pod: &Pod,
        uid: &str,
        c: &k8s_openapi::api::core::v1::Container,
        image: &ImageInfo,
        restarts: i32,
    ) -> Result<Option<Timestamp>, RuntimeError> {
        let id = container_id(uid, &c.name);
        let pod_ip = self.memo(|m| m.get(uid).and_then(|p| p.ips.first().cloned()).unwrap_or_default())?;
        let env = self.environment(pod, c, image, &pod_ip).await?;
        let volumes = self.volumes(pod, uid).await?;
        let spec = self.spec(pod, uid, c, image, env, &volumes)?;
        let snapshotter = self.ctrd.snapshotter.clone();
        let mounts = match self
            .ctrd
            .client
            .snapshots()
            .prepare(self.ctrd.request_ns(PrepareSnapshotRequest {
                snapshotter: snapshotter.clone(),
                key: id.clone(),
                parent: image.chain_id.clone(),
                labels: HashMap::new(),
            })?)
            .await
        {
            Ok(r) => r.into_inner().mounts,
            Err(s) if s.code() == Code::AlreadyExists => {
                let req = MountsRequest { snapshotter: snapshotter.clone(), key: id.clone() };
                self.ctrd
                    .client
                    .snapshots()
                    .mounts(self.ctrd.request_ns(req)?)
                    .await
                    .map_err(ContainerdError::from)?
                    .into_inner()
                    .mounts
            }
            Err(s) => return Err(ContainerdError::from(s).into()),
        };
        let labels = HashMap::from([
            (POD_UID_LABEL.to_string(), uid.to_string()),
            (NAME_LABEL.to_string(), c.name.clone()),
            (RESTARTS_LABEL.to_string(), restarts.to_string()),
            (IMAGE_ID_LABEL.to_string(), image.image_id.clone()),
        ]);
        let container = Container {
            id: id.clone(),
            labels,
            image: normalize_reference(c.image.as_deref().unwrap_or_default()),
            runtime: Some(CtrRuntime { name: "io.containerd.runc.v2".into(), options: None }),
            spec: Some(prost_types::Any {
                type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".into(),
                value: spec,
            }),
            snapshotter,
            snapshot_key: id.clone(),
            ..Container::default()
        };
        let created = self
            .ctrd
            .client
            .containers()
            .create(self.ctrd.request_ns(CreateContainerRequest { container: Some(container) })?)
            .await;
        let created_at = match created {
            Ok(r) => r.into_inner().container.and_then(|c| ts(&c.created_at)),
            Err(s) if s.code() == Code::AlreadyExists => None,
            Err(s) => return Err(ContainerdError::from(s).into()),
        };
        let log_dir = self.pod_dir(uid).join("logs").join(&c.name);
        std::fs::create_dir_all(&log_dir).map_err(|e| RuntimeError::Backend(format!("log dir: {e}")))?;
        let log_file = log_dir.join(format!("{restarts}.log"));
        let log = match &self.log_driver {
            Some(driver) => crate::server::logs::driver_uri(driver, &log_file),
            None => format!("file://{}", log_file.display()),
        };
        let task = CreateTaskRequest {
            container_id: id.clone(),
            rootfs: mounts,
            stdout: log.clone(),
            stderr: log,
            ..CreateTaskRequest::default()
        };
        self.ctrd.client.tasks().create(self.ctrd.request_ns(task)?).await.map_err(ContainerdError::from)?;
        self.ctrd
            .client
            .tasks()
            .start(self.ctrd.request_ns(StartRequest { container_id: id, exec_id: String::new() })?)
            .await
            .map_err(ContainerdError::from)?;
        // The container's creation time is its start time: a restarted nodelet reads the same.
        Ok(created_at)
    }

    /// Remove a container's task, container and snapshot (idempotent).
    async fn remove_container(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        let tasks = || self.ctrd.client.tasks();
        let get = |id: &str| GetRequest { container_id: id.into(), exec_id: String::new() };
        if let Ok(r) = tasks().get(self.ctrd.request_ns(get(id))?).await {
            let running = r.into_inner().process.is_some_and(|p| p.status == 2);
            if running {
                let kill =
                    |sig: u32| KillRequest { container_id: id.into(), exec_id: String::new(), signal: sig, all: true };
                let _ = tasks().kill(self.ctrd.request_ns(kill(15))?).await;
                let deadline = Instant::now() + grace;
                loop {
                    let still = tasks()
                        .get(self.ctrd.request_ns(get(id))?)
                        .await
                        .map(|r| r.into_inner().process.is_some_and(|p| p.status == 2))
                        .unwrap_or(false);
                    if !still {
                        break;
                    }
                    if Instant::now() >= deadline {
                        let _ = tasks().kill(self.ctrd.request_ns(kill(9))?).await;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        if Instant::now() >= deadline + Duration::from_secs(10) {
                            break;
                        }
                    } else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
            match tasks().delete(self.ctrd.request_ns(DeleteTaskRequest { container_id: id.into() })?).await {
                Ok(_) => {}
                Err(s) if s.code() == Code::NotFound => {}
                Err(s) => return Err(ContainerdError::from(s).into()),
            }
        }
        match self
            .ctrd
            .client
            .containers()
            .delete(self.ctrd.request_ns(DeleteContainerRequest { id: id.into() })?)
            .await
        {
            Ok(_) => {}
            Err(s) if s.code() == Code::NotFound => {}
            Err(s) => return Err(ContainerdError::from(s).into()),
        }
        let rm = RemoveSnapshotRequest { snapshotter: self.ctrd.snapshotter.clone(), key: id.into() };
        match self.ctrd.client.snapshots().remove(self.ctrd.request_ns(rm)?).await {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Ok(()),
            Err(s) => Err(ContainerdError::from(s).into()),
        }
    }

    async fn pod_containers(&self, uid: &str) -> Result<Vec<Container>, RuntimeError> {
        let req = ListContainersRequest { filters: vec![format!("labels.\"{POD_UID_LABEL}\"=={uid}")] };
        let list =
            self.ctrd.client.containers().list(self.ctrd.request_ns(req)?).await.map_err(ContainerdError::from)?;
        Ok(list.into_inner().containers)
    }
}

impl ContainerdRuntime {
    /// One container (init or app) one step toward its spec; what it is now.
    #[allow(clippy::too_many_arguments)]
    async fn sync_container(
        &self,
        pod: &Pod,
        uid: &str,
        c: &k8s_openapi::api::core::v1::Container,
        policy: &str,
        existing: &[Container],
        resync: &mut Option<Duration>,
        init: bool,
    ) -> Result<ContainerState, RuntimeError> {
        let id = container_id(uid, &c.name);
        let mut image_id = String::new();
        let have = existing.iter().find(|x| x.id == id);
        if let Some(x) = have {
            image_id = x.labels.get(IMAGE_ID_LABEL).cloned().unwrap_or_default();
        }
        // Adopt what containerd runs (restart count from the container's label).
        if let Some(x) = have {
            let restarts = x.labels.get(RESTARTS_LABEL).and_then(|r| r.parse().ok()).unwrap_or(0);
            let created = ts(&x.created_at);
            self.memo(|m| {
                let cm = m.entry(uid.to_string()).or_default().containers.entry(c.name.clone()).or_default();
                cm.restarts = cm.restarts.max(restarts);
                if cm.started_at.is_none() {
                    cm.started_at = created;
                }
            })?;
        }
        let task = match have {
            Some(_) => match self
                .ctrd
                .client
                .tasks()
                .get(self.ctrd.request_ns(GetRequest { container_id: id.clone(), exec_id: String::new() })?)
                .await
            {
                Ok(r) => r.into_inner().process,
                Err(s) if s.code() == Code::NotFound => None,
                Err(s) => return Err(ContainerdError::from(s).into()),
            },
            None => None,
        };
        let (restarts, last, restart_at, started_at) = self.memo(|m| {
            let cm = m.entry(uid.to_string()).or_default().containers.entry(c.name.clone()).or_default();
            (cm.restarts, cm.last.clone(), cm.restart_at, cm.started_at)
        })?;
        let state = match task {
            Some(p) if p.status == 2 || p.status == 1 => {
                if self.probe(uid, c, resync).await? {
                    State::Running { started_at: started_at.unwrap_or_else(now_seconds) }
                } else {
                    // Liveness or startup probe failed: kill it; the next sync restarts it.
                    let kill = KillRequest { container_id: id.clone(), exec_id: String::new(), signal: 9, all: true };
                    let _ = self.ctrd.client.tasks().kill(self.ctrd.request_ns(kill)?).await;
                    *resync = Some(Duration::from_millis(200));
                    State::Running { started_at: started_at.unwrap_or_else(now_seconds) }
                }
            }
            Some(p) if p.status == 3 => {
                let exit = p.exit_status as i32;
                let reason = if exit == 0 {
                    "Completed"
                } else if oom_killed(uid, &c.name) {
                    "OOMKilled"
                } else {
                    "Error"
                };
                let t = Terminated {
                    exit_code: exit,
                    reason: reason.into(),
                    message: None,
                    started_at,
                    finished_at: ts(&p.exited_at).or(Some(now_seconds())),
                };
                let restart = if init {
                    policy != "Never" && exit != 0
                } else {
                    policy == "Always" || (policy == "OnFailure" && exit != 0)
                };
                if restart {
                    self.remove_container(&id, Duration::ZERO).await?;
                    let backoff_start = self.config.backoff_start;
                    let wait = self.memo(|m| {
                        let cm = m.entry(uid.to_string()).or_default().containers.entry(c.name.clone()).or_default();
                        cm.last = Some(t.clone());
                        // Immediately the first time, then 10 s doubling up to 5 min.
                        cm.delay = if cm.restarts == 0 && cm.delay.is_zero() {
                            Duration::ZERO
                        } else if cm.delay.is_zero() {
                            backoff_start
                        } else {
                            (cm.delay * 2).min(BACKOFF_MAX)
                        };
                        cm.restart_at = Some(Instant::now() + cm.delay);
                        cm.started_at = None;
                        cm.delay
                    })?;
                    *resync = Some(resync.map_or(wait, |r| r.min(wait)));
                    State::Waiting {
                        reason: "CrashLoopBackOff".into(),
                        message: Some(format!(
                            "back-off {}s restarting failed container={} pod={}",
                            wait.as_secs(),
                            c.name,
                            pod.metadata.name.clone().unwrap_or_default()
                        )),
                    }
                } else {
                    State::Terminated(t)
                }
            }
            _ => {
                // No task: start one unless backing off.
                if restart_at.is_some_and(|at| at > Instant::now()) {
                    let left = restart_at.map(|at| at - Instant::now()).unwrap_or_default();
                    *resync = Some(resync.map_or(left, |r| r.min(left)));
                    State::Waiting { reason: "CrashLoopBackOff".into(), message: None }
                } else {
                    match self.ensure_image(pod, uid, c, resync).await? {
                        Err(waiting) => waiting,
                        Ok(image) => {
                            image_id = image.image_id.clone();
                            if have.is_some() {
                                self.remove_container(&id, Duration::ZERO).await?;
                            }
                            let restarts = if last.is_some() { restarts + 1 } else { restarts };
                            match self.start_container(pod, uid, c, &image, restarts).await {
                                Ok(created_at) => {
                                    let now = created_at.unwrap_or_else(now_seconds);
                                    self.memo(|m| {
                                        let cm = m
                                            .entry(uid.to_string())
                                            .or_default()
                                            .containers
                                            .entry(c.name.clone())
                                            .or_default();
                                        cm.restarts = restarts;
                                        cm.restart_at = None;
                                        cm.started_at = Some(now);
                                    })?;
                                    State::Running { started_at: now }
                                }
                                // Bad configuration (missing ConfigMap key, ...): wait and retry.
                                Err(RuntimeError::InvalidPod { what, .. }) => {
                                    let _ = self.remove_container(&id, Duration::ZERO).await;
                                    *resync = Some(Duration::from_secs(1));
                                    State::Waiting { reason: "CreateContainerConfigError".into(), message: Some(what) }
                                }
                                Err(e) => return Err(e),
                            }
                        }
                    }
                }
            }
        };
        let (restarts, last) = self.memo(|m| {
            let cm = m.entry(uid.to_string()).or_default().containers.entry(c.name.clone()).or_default();
            (cm.restarts, cm.last.clone())
        })?;
        let running = matches!(state, State::Running { .. });
        let ready = self.memo(|m| {
            let cm = m.entry(uid.to_string()).or_default().containers.entry(c.name.clone()).or_default();
            if !running {
                // A new instance starts its probes from scratch.
                cm.seen_running = None;
                cm.liveness = ProbeState::default();
                cm.readiness = ProbeState::default();
                cm.startup = ProbeState::default();
            }
            let started = c.startup_probe.is_none() || cm.startup.passing;
            started && (c.readiness_probe.is_none() || cm.readiness.passing)
        })?;
        Ok(ContainerState {
            name: c.name.clone(),
            container_id: Some(format!("containerd://{id}")),
            image_id,
            state,
            last_terminated: last,
            restart_count: restarts,
            ready: running && ready,
        })
    }
}

impl ContainerdRuntime {
    /// Run the container's due probes; false when liveness or startup says to restart it.
    async fn probe(
        &self,
        uid: &str,
        c: &k8s_openapi::api::core::v1::Container,
        resync: &mut Option<Duration>,
    ) -> Result<bool, RuntimeError> {
        if c.liveness_probe.is_none() && c.readiness_probe.is_none() && c.startup_probe.is_none() {
            return Ok(true);
        }
        let (ip, mut cm_states, seen) = self.memo(|m| {
            let pm = m.entry(uid.to_string()).or_default();
            let ip = pm.ips.first().cloned().unwrap_or_default();
            let cm = pm.containers.entry(c.name.clone()).or_default();
            let seen = *cm.seen_running.get_or_insert_with(Instant::now);
            (ip, (cm.liveness.clone(), cm.readiness.clone(), cm.startup.clone()), seen)
        })?;
        let exec = super::exec::ContainerExec::new(self.ctrd.clone(), container_id(uid, &c.name), self.exec_dir());
        let mut alive = true;
        let mut next = Duration::from_secs(10);
        if let Some(p) = &c.startup_probe {
            next = next.min(probe::period(p));
            if !cm_states.2.passing {
                if let probe::Verdict::Ran { .. } = probe::run(p, &mut cm_states.2, seen, &ip, c, &exec).await {
                    let threshold = p.failure_threshold.unwrap_or(3).max(1);
                    if !cm_states.2.passing && cm_states.2.failures >= threshold {
                        alive = false;
                    }
                }
            }
        }
        let started = c.startup_probe.is_none() || cm_states.2.passing;
        if started {
            if let Some(p) = &c.liveness_probe {
                next = next.min(probe::period(p));
                if cm_states.0.last_run.is_none() {
                    cm_states.0.passing = true;
                }
                if let probe::Verdict::Ran { passing: false } =
                    probe::run(p, &mut cm_states.0, seen, &ip, c, &exec).await
                {
                    alive = false;
                }
            }
            if let Some(p) = &c.readiness_probe {
                next = next.min(probe::period(p));
                probe::run(p, &mut cm_states.1, seen, &ip, c, &exec).await;
            }
        }
        *resync = Some(resync.map_or(next, |r| r.min(next)));
        self.memo(|m| {
            let cm = m.entry(uid.to_string()).or_default().containers.entry(c.name.clone()).or_default();
            (cm.liveness, cm.readiness, cm.startup) = cm_states;
        })?;
        Ok(alive)
    }
}

/// Whether the kernel OOM-killed a process in the container's memory cgroup (v1 or v2).
fn oom_killed(uid: &str, name: &str) -> bool {
    let v1 = format!("/sys/fs/cgroup/memory/ferry/{uid}/{name}/memory.oom_control");
    let v2 = format!("/sys/fs/cgroup/ferry/{uid}/{name}/memory.events");
    [v1, v2].iter().any(|path| {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .any(|l| l.strip_prefix("oom_kill ").and_then(|n| n.trim().parse::<u64>().ok()).is_some_and(|n| n > 0))
    })
}

/// runc removes a container's cgroup but not the pod's parent (`/ferry/<uid>`): remove it in
/// every hierarchy (cgroup v1 controllers and the v2 root). Only empty cgroups can go.
fn remove_pod_cgroups(uid: &str) {
    let root = std::path::Path::new("/sys/fs/cgroup");
    let _ = std::fs::remove_dir(root.join("ferry").join(uid));
    if let Ok(rd) = std::fs::read_dir(root) {
        for e in rd.filter_map(|e| e.ok()) {
            let _ = std::fs::remove_dir(e.path().join("ferry").join(uid));
        }
    }
}

#[async_trait::async_trait]
impl Runtime for ContainerdRuntime {
    async fn version(&self) -> Result<String, RuntimeError> {
        Ok(self.ctrd.version().await?)
    }

    async fn sync_pod(&self, pod: &Pod) -> Result<PodState, RuntimeError> {
        let uid = pod
            .metadata
            .uid
            .clone()
            .ok_or_else(|| RuntimeError::InvalidPod { pod: pod_key(pod), what: "no uid".into() })?;
        let spec =
            pod.spec.clone().ok_or_else(|| RuntimeError::InvalidPod { pod: pod_key(pod), what: "no spec".into() })?;
        let policy = spec.restart_policy.clone().unwrap_or_else(|| "Always".into());
        let pre_stop = super::exec::pre_stop_hooks(&spec);
        self.memo(|m| m.entry(uid.clone()).or_default().pre_stop = pre_stop)?;
        let pod_ips = self.ensure_sandbox(pod, &uid).await?;
        let existing = self.pod_containers(&uid).await?;
        let mut out = Vec::new();
        let mut resync: Option<Duration> = None;
        let mut init_containers = Vec::new();
        let mut initialized = true;
        for c in spec.init_containers.iter().flatten() {
            let st = self.sync_container(pod, &uid, c, &policy, &existing, &mut resync, true).await?;
            let done = matches!(&st.state, State::Terminated(t) if t.exit_code == 0);
            init_containers.push(st);
            if !done {
                initialized = false;
                break;
            }
        }
        for c in spec.containers.iter().filter(|_| initialized) {
            let st = self.sync_container(pod, &uid, c, &policy, &existing, &mut resync, false).await?;
            out.push(st);
        }
        Ok(PodState {
            pod_ips,
            init_containers,
            containers: out,
            resync_after: resync.or(Some(Duration::from_secs(1))),
        })
    }

    async fn kill_pod(&self, uid: &str, grace: Duration) -> Result<(), RuntimeError> {
        let started = Instant::now();
        let hooks = self.memo(|m| m.get(uid).map(|p| p.pre_stop.clone()).unwrap_or_default())?;
        if !grace.is_zero() && !hooks.is_empty() {
            let runs = hooks.into_iter().map(|(name, command)| {
                let exec =
                    super::exec::ContainerExec::new(self.ctrd.clone(), container_id(uid, &name), self.exec_dir());
                async move {
                    use super::probe::ExecRunner as _;
                    if let Err(e) = exec.run(&command, grace).await {
                        tracing::warn!(pod = uid, container = %name, error = %e, "preStop hook failed");
                    }
                }
            });
            futures::future::join_all(runs).await;
        }
        // What is left of the grace period after the hooks; at least 2 s, as the kubelet does.
        let grace =
            if grace.is_zero() { grace } else { grace.saturating_sub(started.elapsed()).max(Duration::from_secs(2)) };
        for c in self.pod_containers(uid).await? {
            self.remove_container(&c.id, grace).await?;
        }
        let ns = netns_name(uid);
        if cni::netns_path(&ns).exists() {
            let ports: Vec<cni::PortMapping> = std::fs::read(self.pod_dir(uid).join("ports.json"))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default();
            self.config.cni.del_ports(uid, &ns, &ports).await?;
            self.config.cni.del(uid, &ns).await?;
            cni::delete_netns(&ns).await?;
        }
        remove_pod_cgroups(uid);
        let dir = self.pod_dir(uid);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .map_err(|e| RuntimeError::Backend(format!("removing {}: {e}", dir.display())))?;
        }
        self.memo(|m| m.remove(uid))?;
        Ok(())
    }

    fn pod_terminating(&self, pod: &Pod) {
        if let (Some(uid), Some(spec)) = (&pod.metadata.uid, &pod.spec) {
            let hooks = super::exec::pre_stop_hooks(spec);
            let _ = self.memo(|m| m.entry(uid.clone()).or_default().pre_stop = hooks);
        }
    }

    fn log_file(&self, uid: &str, name: &str, previous: bool) -> Option<PathBuf> {
        crate::server::logs::instance_file(&self.pod_dir(uid).join("logs").join(name), previous)
    }

    async fn container_running(&self, uid: &str, name: &str) -> bool {
        let req = GetRequest { container_id: container_id(uid, name), exec_id: String::new() };
        let Ok(req) = self.ctrd.request_ns(req) else { return false };
        match self.ctrd.client.tasks().get(req).await {
            Ok(r) => r.into_inner().process.is_some_and(|p| p.status == 2 || p.status == 1),
            Err(_) => false,
        }
    }

    async fn exec(
        &self,
        uid: &str,
        name: &str,
        spec: super::exec::ExecSpec,
    ) -> Result<super::exec::ExecProcess, RuntimeError> {
        super::exec::exec_in_container(self.ctrd.clone(), &container_id(uid, name), spec, &self.exec_dir()).await
    }

    async fn list_pods(&self) -> Result<Vec<String>, RuntimeError> {
        let mut uids: std::collections::BTreeSet<String> = self.ctrd.pod_uids().await?;
        if let Ok(rd) = std::fs::read_dir(self.config.root_dir.join("pods")) {
            uids.extend(rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()));
        }
        Ok(uids.into_iter().collect())
    }
}
