//! The container runtime behind the nodelet.
//!
//! [`Runtime`] is what the pod workers drive: make a pod's containers match its spec one step
//! at a time ([`Runtime::sync_pod`]), stop and release a pod ([`Runtime::kill_pod`]), and list
//! what the runtime holds so a restarted nodelet can adopt or clean up ([`Runtime::list_pods`]).
//! Implementations: [`simulated::SimulatedRuntime`] (no containers; kwok-like).

pub mod cni;
pub mod containerd;
pub mod exec;
pub mod image;
pub mod pods_containerd;
pub mod probe;
pub mod pull;
pub mod resolv;
pub mod security;
pub mod simulated;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use std::time::Duration;

/// Errors from a runtime.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The pod object lacks something the runtime needs.
    #[error("pod {pod}: {what}")]
    InvalidPod {
        /// namespace/name.
        pod: String,
        /// What is missing or wrong.
        what: String,
    },
    /// The runtime itself failed.
    #[error("runtime: {0}")]
    Backend(String),
}

/// The state of one container as the runtime sees it.
#[derive(Clone, Debug, PartialEq)]
pub enum State {
    /// Not running yet (or waiting for a restart); reason as in Kubernetes (ContainerCreating,
    /// CrashLoopBackOff, ErrImagePull, ...).
    Waiting {
        /// Machine-readable reason.
        reason: String,
        /// Human-readable detail.
        message: Option<String>,
    },
    /// Running since `started_at`.
    Running {
        /// When the process started.
        started_at: Timestamp,
    },
    /// Exited.
    Terminated(Terminated),
}

/// How a container instance ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Terminated {
    /// Exit code of the process.
    pub exit_code: i32,
    /// Completed, Error, OOMKilled, ...
    pub reason: String,
    /// Detail, if any.
    pub message: Option<String>,
    /// When it started.
    pub started_at: Option<Timestamp>,
    /// When it ended.
    pub finished_at: Option<Timestamp>,
}

/// One container of a pod, as reported by the runtime.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerState {
    /// Container name from the pod spec.
    pub name: String,
    /// `<runtime>://<id>` of the current instance, if one was created.
    pub container_id: Option<String>,
    /// The resolved image reference (digest) the container runs.
    pub image_id: String,
    /// Current state.
    pub state: State,
    /// How the previous instance ended.
    pub last_terminated: Option<Terminated>,
    /// How many times the container was restarted.
    pub restart_count: i32,
    /// Whether the container passes readiness (running and, if it has a readiness probe, passing it).
    pub ready: bool,
}

/// A pod as the runtime sees it.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct PodState {
    /// The pod's IP addresses (empty until the sandbox has one).
    pub pod_ips: Vec<String>,
    /// Init containers in spec order (those that were started so far).
    pub init_containers: Vec<ContainerState>,
    /// App containers in spec order (those that were created so far).
    pub containers: Vec<ContainerState>,
    /// When the runtime wants to be asked again even if nothing changes in the API.
    pub resync_after: Option<Duration>,
}

/// A container runtime the nodelet drives.
#[async_trait::async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// `<name>://<version>` for the Node's `nodeInfo.containerRuntimeVersion`.
    async fn version(&self) -> Result<String, RuntimeError>;

    /// Move the pod one step toward its spec (sandbox, images, init containers in order, app
    /// containers, restarts with backoff) and report what is there. Must be idempotent.
    async fn sync_pod(&self, pod: &Pod) -> Result<PodState, RuntimeError>;

    /// Stop the pod's containers (SIGTERM, then SIGKILL after `grace`) and release everything
    /// the pod holds (containers, sandbox, addresses). Idempotent; unknown UIDs are fine.
    async fn kill_pod(&self, uid: &str, grace: Duration) -> Result<(), RuntimeError>;

    /// UIDs of all pods the runtime currently holds anything for.
    async fn list_pods(&self) -> Result<Vec<String>, RuntimeError>;

    /// The pod is being deleted; [`Runtime::kill_pod`] follows. Lets a runtime take what it
    /// needs from the spec (preStop hooks), also when this nodelet never synced the pod.
    fn pod_terminating(&self, _pod: &Pod) {}

    /// The log file of container `name` of pod `uid` (CRI format, see [`crate::server::logs`]):
    /// the current instance's, or with `previous` the one before it. `None` if there is none.
    fn log_file(&self, _uid: &str, _name: &str, _previous: bool) -> Option<std::path::PathBuf> {
        None
    }

    /// Whether container `name` of pod `uid` has a running process (ends `follow` of its log).
    async fn container_running(&self, _uid: &str, _name: &str) -> bool {
        false
    }

    /// Start `spec.command` inside container `name` of pod `uid` (as `kubectl exec` does).
    async fn exec(&self, uid: &str, name: &str, _spec: exec::ExecSpec) -> Result<exec::ExecProcess, RuntimeError> {
        Err(RuntimeError::Backend(format!("this runtime cannot exec in pod {uid} container {name}")))
    }
}

/// `namespace/name` of a pod, for messages.
pub fn pod_key(pod: &Pod) -> String {
    format!("{}/{}", pod.metadata.namespace.as_deref().unwrap_or(""), pod.metadata.name.as_deref().unwrap_or(""))
}

/// The current time with whole seconds, as the API stores it (so comparisons survive a round trip).
pub fn now_seconds() -> Timestamp {
    let now = Timestamp::now();
    Timestamp::from_second(now.as_second()).unwrap_or(now)
}
