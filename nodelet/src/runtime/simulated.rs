//! A runtime without containers, for scheduler and control-plane tests (like kwok).
//!
//! Every pod gets an address from a private range (or the node's pod CIDR), its init
//! containers complete and its app containers are "running" once the configured start
//! delay has passed. Nothing crashes. One process can host many simulated nodes, each with
//! its own [`SimulatedRuntime`].

use super::{now_seconds, pod_key, ContainerState, PodState, Runtime, RuntimeError, State, Terminated};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Settings of a simulated runtime.
#[derive(Clone, Debug)]
pub struct SimulatedConfig {
    /// Time from the first sync of a pod until its containers run.
    pub start_delay: Duration,
    /// First address of the pod range; pods get consecutive addresses after it.
    pub pod_net: Ipv4Addr,
    /// How many addresses the range has.
    pub pod_net_size: u32,
}

impl Default for SimulatedConfig {
    fn default() -> Self {
        SimulatedConfig { start_delay: Duration::ZERO, pod_net: Ipv4Addr::new(10, 244, 0, 0), pod_net_size: 256 }
    }
}

struct SimPod {
    created: Instant,
    started_at: Option<Timestamp>,
    ip: Ipv4Addr,
}

/// The simulated runtime of one node.
pub struct SimulatedRuntime {
    config: SimulatedConfig,
    pods: Mutex<HashMap<String, SimPod>>,
}

impl SimulatedRuntime {
    /// A runtime with these settings.
    pub fn new(config: SimulatedConfig) -> Self {
        SimulatedRuntime { config, pods: Mutex::new(HashMap::new()) }
    }

    fn allocate(&self, pods: &HashMap<String, SimPod>) -> Option<Ipv4Addr> {
        let base = u32::from(self.config.pod_net);
        // .0 is the network, .1 the gateway, as the bridge plugin would have it.
        (2..self.config.pod_net_size.saturating_sub(1))
            .map(|i| Ipv4Addr::from(base.wrapping_add(i)))
            .find(|ip| !pods.values().any(|p| p.ip == *ip))
    }
}

#[async_trait::async_trait]
impl Runtime for SimulatedRuntime {
    async fn version(&self) -> Result<String, RuntimeError> {
        Ok(format!("simulated://{}", env!("CARGO_PKG_VERSION")))
    }

    async fn sync_pod(&self, pod: &Pod) -> Result<PodState, RuntimeError> {
        let uid = pod
            .metadata
            .uid
            .clone()
            .ok_or_else(|| RuntimeError::InvalidPod { pod: pod_key(pod), what: "no metadata.uid".into() })?;
        let spec =
            pod.spec.as_ref().ok_or_else(|| RuntimeError::InvalidPod { pod: pod_key(pod), what: "no spec".into() })?;
        let mut pods = self.pods.lock().map_err(|_| RuntimeError::Backend("state lock poisoned".into()))?;
        if !pods.contains_key(&uid) {
            let ip = self
                .allocate(&pods)
                .ok_or_else(|| RuntimeError::Backend("no free address in the simulated pod range".into()))?;
            pods.insert(uid.clone(), SimPod { created: Instant::now(), started_at: None, ip });
        }
        let Some(sim) = pods.get_mut(&uid) else {
            return Err(RuntimeError::Backend("pod vanished".into()));
        };
        let elapsed = sim.created.elapsed();
        let started = elapsed >= self.config.start_delay;
        if started && sim.started_at.is_none() {
            sim.started_at = Some(now_seconds());
        }
        let id = |name: &str| Some(format!("simulated://{uid}-{name}"));
        let image_id = |image: &Option<String>| image.clone().unwrap_or_default();
        let init_containers = spec
            .init_containers
            .iter()
            .flatten()
            .filter(|_| started)
            .map(|c| ContainerState {
                name: c.name.clone(),
                container_id: id(&c.name),
                image_id: image_id(&c.image),
                state: State::Terminated(Terminated {
                    exit_code: 0,
                    reason: "Completed".into(),
                    message: None,
                    started_at: sim.started_at,
                    finished_at: sim.started_at,
                }),
                last_terminated: None,
                restart_count: 0,
                ready: false,
            })
            .collect();
        let containers = spec
            .containers
            .iter()
            .map(|c| ContainerState {
                name: c.name.clone(),
                container_id: started.then(|| id(&c.name)).flatten(),
                image_id: image_id(&c.image),
                state: match sim.started_at {
                    Some(at) => State::Running { started_at: at },
                    None => State::Waiting { reason: "ContainerCreating".into(), message: None },
                },
                last_terminated: None,
                restart_count: 0,
                ready: started,
            })
            .collect();
        Ok(PodState {
            pod_ips: vec![sim.ip.to_string()],
            init_containers,
            containers,
            resync_after: (!started).then(|| self.config.start_delay.saturating_sub(elapsed)),
        })
    }

    async fn kill_pod(&self, uid: &str, _grace: Duration) -> Result<(), RuntimeError> {
        self.pods.lock().map_err(|_| RuntimeError::Backend("state lock poisoned".into()))?.remove(uid);
        Ok(())
    }

    async fn list_pods(&self) -> Result<Vec<String>, RuntimeError> {
        Ok(self.pods.lock().map_err(|_| RuntimeError::Backend("state lock poisoned".into()))?.keys().cloned().collect())
    }
}
