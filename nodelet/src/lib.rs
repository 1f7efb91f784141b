//! `ferry-nodelet`: Ferry's node agent.
//!
//! Where to start:
//! * [`Nodelet::run`] wires everything for one node: registration and heartbeats ([`node`]),
//!   and the pod workers ([`pods`]) that drive a [`runtime::Runtime`].
//! * [`server`] is the HTTPS endpoint (port 10250) the API server proxies `kubectl logs` and
//!   `kubectl exec` to; [`runtime::exec`] runs processes in containers (exec, probes, preStop).
//! * [`machine`] reads capacity and system facts; [`status`] turns what the runtime reports
//!   into pod status (phase, conditions, container statuses).
//! * [`runtime::simulated`] is a runtime without containers; [`run_simulated_nodes`] hosts many
//!   simulated nodes in one process (like kwok), for scheduler and controller tests.
//! * [`recovery`]: after a partition or a stop, local pods are resynced against a fresh list
//!   before the node heartbeats again.
//! * [`proxy`] is the service proxy (ClusterIP/NodePort → endpoints with nftables), enabled
//!   with [`Nodelet::with_proxy`].

pub mod config;
pub mod machine;
pub mod node;
pub mod pods;
pub mod proxy;
pub mod recovery;
pub mod runtime;
pub mod server;
pub mod status;

pub use config::Config;

use k8s_openapi::jiff::Timestamp;
use machine::{Machine, Pressure};
use runtime::simulated::{SimulatedConfig, SimulatedRuntime};
use runtime::Runtime;
use std::sync::Arc;
use std::time::Duration;

/// Errors that stop a nodelet.
#[derive(Debug, thiserror::Error)]
pub enum NodeletError {
    /// Registering the node failed.
    #[error(transparent)]
    Node(#[from] node::NodeError),
    /// The runtime failed at start.
    #[error(transparent)]
    Runtime(#[from] runtime::RuntimeError),
    /// The HTTPS endpoint could not start.
    #[error(transparent)]
    Server(#[from] server::ServerError),
}

/// One node agent: a Node in the API and the runtime that runs its pods.
pub struct Nodelet {
    client: kube::Client,
    config: Config,
    machine: Machine,
    runtime: Arc<dyn Runtime>,
    /// Observe memory/disk/PID pressure on this machine (off for simulated nodes).
    observe_pressure: bool,
    /// How often a pod is synced when nothing happens.
    pub resync_period: Duration,
    /// The HTTPS endpoint for logs and exec ([`server`]), if it serves one.
    server: Option<server::ServerConfig>,
    /// The service proxy, if this nodelet runs one.
    proxy: Option<proxy::Proxy>,
}

impl Nodelet {
    /// A nodelet for a real machine.
    pub fn new(client: kube::Client, config: Config, machine: Machine, runtime: Arc<dyn Runtime>) -> Self {
        Nodelet {
            client,
            config,
            machine,
            runtime,
            observe_pressure: true,
            resync_period: Duration::from_secs(10),
            server: None,
            proxy: None,
        }
    }

    /// A simulated node: made-up machine, no pressure observation, simulated runtime.
    pub fn simulated(client: kube::Client, config: Config, ip: std::net::IpAddr, sim: SimulatedConfig) -> Self {
        let machine = Machine::simulated(&config.node_name, ip);
        let runtime = Arc::new(SimulatedRuntime::new(sim));
        Nodelet {
            client,
            config,
            machine,
            runtime,
            observe_pressure: false,
            resync_period: Duration::from_secs(10),
            server: None,
            proxy: None,
        }
    }

    /// Serve logs and exec on an HTTPS endpoint (its port goes into the Node's status).
    pub fn with_server(mut self, server: server::ServerConfig) -> Self {
        self.server = Some(server);
        self
    }

    /// Also run the service proxy.
    pub fn with_proxy(mut self, proxy: proxy::Proxy) -> Self {
        self.proxy = Some(proxy);
        self
    }

    fn pressure(&self) -> Pressure {
        if !self.observe_pressure {
            return Pressure::default();
        }
        machine::observe_pressure(&self.config.root_dir).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "observing resource pressure failed");
            Pressure::default()
        })
    }

    /// Register the node, then heartbeat and run pods until the task is dropped.
    /// Fails only if the first registration fails.
    pub async fn run(mut self) -> Result<(), NodeletError> {
        let service_proxy = {
            let (proxy, client) = (self.proxy.take(), self.client.clone());
            async move {
                match proxy {
                    Some(p) => p.run(client).await,
                    None => std::future::pending().await,
                }
            }
        };
        let version = self.runtime.version().await?;
        let _server = match &self.server {
            Some(cfg) => {
                let (addr, task) =
                    server::start(cfg, self.client.clone(), self.config.node_name.clone(), self.runtime.clone())
                        .await?;
                self.config.server_port = Some(addr.port());
                Some(AbortOnDrop(task))
            }
            None => None,
        };
        let n = node::build_node(&self.config, &self.machine, &version, self.pressure(), Timestamp::now());
        let registered = node::register(&self.client, &n).await?;
        tracing::info!(node = %self.config.node_name, "node registered");
        let uid = registered.metadata.uid.clone();

        let (resync, resync_rx) = recovery::ChannelResync::new(self.config.resync_timeout);
        let gate = recovery::Gate::new(resync, self.config.silence_threshold);
        let lease = async {
            let (client, config) = (&self.client, &self.config);
            let mut tick = tokio::time::interval(config.lease_renew_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = gate.heartbeat(node::renew_lease(client, config, uid.as_deref())).await {
                    tracing::warn!(node = %config.node_name, error = %e, "renewing the node lease failed");
                }
            }
        };
        let pods = pods::run(
            self.client.clone(),
            self.runtime.clone(),
            pods::PodConfig {
                node_name: self.config.node_name.clone(),
                host_ip: self.machine.ip.to_string(),
                resync_period: self.resync_period,
                resync_timeout: self.config.resync_timeout,
            },
            resync_rx,
        );
        let status = self.status_loop(&gate, registered.status.unwrap_or_default(), version, uid.as_deref());
        tokio::join!(lease, pods, status, service_proxy);
        Ok(())
    }

    /// Recompute node status every `status_check_interval`; write it when it differs from what
    /// the API has (the node controller may have set Ready=Unknown meanwhile) or when
    /// `status_report_interval` has passed since the last write.
    async fn status_loop<R: recovery::Resync>(
        &self,
        gate: &recovery::Gate<R>,
        mut last: k8s_openapi::api::core::v1::NodeStatus,
        version: String,
        uid: Option<&str>,
    ) {
        let mut last_write = tokio::time::Instant::now();
        let mut tick = tokio::time::interval(self.config.status_check_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(self.client.clone());
        loop {
            tick.tick().await;
            // Compare with the API's conditions, as the kubelet does: the node controller may have
            // written them (Ready=Unknown while this node was silent).
            match tokio::time::timeout(self.config.status_check_interval, nodes.get_opt(&self.config.node_name))
                .await
                .unwrap_or(Ok(None))
            {
                Ok(Some(n)) => {
                    if let Some(conditions) = n.status.and_then(|s| s.conditions) {
                        last.conditions = Some(conditions);
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::debug!(node = %self.config.node_name, error = %e, "reading the node failed"),
            }
            let next = node::node_status(
                &self.config,
                &self.machine,
                &version,
                self.pressure(),
                Timestamp::now(),
                Some(&last),
            );
            if node::status_changed(&last, &next) || last_write.elapsed() >= self.config.status_report_interval {
                match gate.heartbeat(node::post_status(&self.client, &self.config.node_name, &next)).await {
                    Ok(_) => {
                        if node::ready_status(&last) != Some("True") && node::ready_status(&next) == Some("True") {
                            let name = &self.config.node_name;
                            let msg = format!("Node {name} status is now: NodeReady");
                            if let Err(e) = node::record_event(&self.client, &self.config, uid, "NodeReady", msg).await
                            {
                                tracing::warn!(node = %name, error = %e, "recording an event failed");
                            }
                        }
                        last = next;
                        last_write = tokio::time::Instant::now();
                    }
                    Err(e) => tracing::warn!(node = %self.config.node_name, error = %e, "writing node status failed"),
                }
            }
        }
    }
}

/// Run `count` simulated nodes named `<prefix>-<i>` in this process (like kwok). Each gets
/// its own runtime and a /24 of 10.<i/256>.<i%256>.0 inside 10.0.0.0/8 for pod addresses.
/// The returned handles run until aborted.
pub fn run_simulated_nodes(
    client: &kube::Client,
    prefix: &str,
    count: usize,
    adjust: impl Fn(&mut Config),
    sim: SimulatedConfig,
) -> Vec<tokio::task::JoinHandle<Result<(), NodeletError>>> {
    (0..count)
        .map(|i| {
            let name = format!("{prefix}-{i}");
            let mut config = Config::new(name.clone(), std::env::temp_dir());
            let (hi, lo) = (((i / 256) % 256) as u8, (i % 256) as u8);
            config.pod_cidr = Some(format!("10.{hi}.{lo}.0/24"));
            adjust(&mut config);
            let sim =
                SimulatedConfig { pod_net: std::net::Ipv4Addr::new(10, hi, lo, 0), pod_net_size: 256, ..sim.clone() };
            let node = Nodelet::simulated(client.clone(), config, std::net::IpAddr::from([192, 168, hi, lo]), sim);
            tokio::spawn(node.run())
        })
        .collect()
}

/// Aborts a task when dropped (the HTTPS endpoint lives as long as [`Nodelet::run`]).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
