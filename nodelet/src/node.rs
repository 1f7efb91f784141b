//! The Node object and its heartbeats: registration, the Lease in `kube-node-lease`, and
//! node status written when it changes or every `status_report_interval`.

use crate::config::Config;
use crate::machine::{Machine, Pressure};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus, NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use std::collections::BTreeMap;

/// The namespace holding node heartbeat Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";

/// Errors talking to the API about the Node and its Lease.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// An API call failed.
    #[error("{what}: {source}")]
    Api {
        /// What the nodelet was doing.
        what: String,
        /// The client error.
        source: kube::Error,
    },
    /// Neither the Node nor the flag names a pod CIDR.
    #[error("node {0} has no spec.podCIDR and --pod-cidr is not set")]
    NoPodCidr(String),
}

fn api_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> NodeError {
    let what = what.into();
    move |source| NodeError::Api { what, source }
}

/// The Node object this nodelet registers (status included).
pub fn build_node(
    config: &Config,
    machine: &Machine,
    runtime_version: &str,
    pressure: Pressure,
    now: Timestamp,
) -> Node {
    let mut labels = BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), config.node_name.clone()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        ("kubernetes.io/arch".to_string(), machine.arch.clone()),
        ("beta.kubernetes.io/os".to_string(), "linux".to_string()),
        ("beta.kubernetes.io/arch".to_string(), machine.arch.clone()),
    ]);
    if let Some(zone) = &config.zone {
        labels.insert("topology.kubernetes.io/zone".into(), zone.clone());
    }
    labels.extend(config.labels.clone());
    Node {
        metadata: ObjectMeta { name: Some(config.node_name.clone()), labels: Some(labels), ..ObjectMeta::default() },
        spec: Some(NodeSpec {
            pod_cidr: config.pod_cidr.clone(),
            pod_cidrs: config.pod_cidr.clone().map(|c| vec![c]),
            ..NodeSpec::default()
        }),
        status: Some(node_status(config, machine, runtime_version, pressure, now, None)),
    }
}

/// Node status: capacity from the machine, allocatable = capacity − reservations, conditions.
/// Transition times are kept from `old` where a condition did not change.
pub fn node_status(
    config: &Config,
    machine: &Machine,
    runtime_version: &str,
    pressure: Pressure,
    now: Timestamp,
    old: Option<&NodeStatus>,
) -> NodeStatus {
    let cpu_millis = machine.cpus.saturating_mul(1000);
    let capacity = BTreeMap::from([
        ("cpu".to_string(), Quantity(machine.cpus.to_string())),
        ("memory".to_string(), bytes_quantity(machine.memory_bytes)),
        ("ephemeral-storage".to_string(), bytes_quantity(machine.ephemeral_bytes)),
        ("pods".to_string(), Quantity(config.max_pods.to_string())),
    ]);
    let alloc_cpu = cpu_millis.saturating_sub(config.reserved_cpu_millis);
    let allocatable = BTreeMap::from([
        (
            "cpu".to_string(),
            Quantity(if alloc_cpu % 1000 == 0 { (alloc_cpu / 1000).to_string() } else { format!("{alloc_cpu}m") }),
        ),
        ("memory".to_string(), bytes_quantity(machine.memory_bytes.saturating_sub(config.reserved_memory_bytes))),
        (
            "ephemeral-storage".to_string(),
            bytes_quantity(machine.ephemeral_bytes.saturating_sub(config.reserved_ephemeral_bytes)),
        ),
        ("pods".to_string(), Quantity(config.max_pods.to_string())),
    ]);
    let old_conditions = old.and_then(|s| s.conditions.clone()).unwrap_or_default();
    let cond = |type_: &str, status: bool, reason: &str, message: &str| {
        let status = if status { "True" } else { "False" };
        let transition = old_conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .and_then(|c| c.last_transition_time.clone())
            .unwrap_or(Time(now));
        NodeCondition {
            type_: type_.into(),
            status: status.into(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            last_heartbeat_time: Some(Time(now)),
            last_transition_time: Some(transition),
        }
    };
    let conditions = vec![
        if pressure.memory {
            cond("MemoryPressure", true, "KubeletHasInsufficientMemory", "nodelet has insufficient memory available")
        } else {
            cond("MemoryPressure", false, "KubeletHasSufficientMemory", "nodelet has sufficient memory available")
        },
        if pressure.disk {
            cond("DiskPressure", true, "KubeletHasDiskPressure", "nodelet has disk pressure")
        } else {
            cond("DiskPressure", false, "KubeletHasNoDiskPressure", "nodelet has no disk pressure")
        },
        if pressure.pid {
            cond("PIDPressure", true, "KubeletHasInsufficientPID", "nodelet has insufficient PID available")
        } else {
            cond("PIDPressure", false, "KubeletHasSufficientPID", "nodelet has sufficient PID available")
        },
        cond("Ready", true, "KubeletReady", "nodelet is posting ready status"),
    ];
    NodeStatus {
        capacity: Some(capacity),
        allocatable: Some(allocatable),
        conditions: Some(conditions),
        addresses: Some(vec![
            NodeAddress { type_: "InternalIP".into(), address: machine.ip.to_string() },
            NodeAddress { type_: "Hostname".into(), address: config.node_name.clone() },
        ]),
        node_info: Some(NodeSystemInfo {
            architecture: machine.arch.clone(),
            boot_id: machine.boot_id.clone(),
            container_runtime_version: runtime_version.to_string(),
            kernel_version: machine.kernel_version.clone(),
            kube_proxy_version: String::new(),
            kubelet_version: format!("v1.35.0-ferry.{}", env!("CARGO_PKG_VERSION")),
            machine_id: machine.machine_id.clone(),
            operating_system: "linux".into(),
            os_image: machine.os_image.clone(),
            system_uuid: machine.machine_id.clone(),
            swap: None,
            ..NodeSystemInfo::default()
        }),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: config
                .server_port
                .map(|port| k8s_openapi::api::core::v1::DaemonEndpoint { port: i32::from(port) }),
        }),
        ..NodeStatus::default()
    }
}

/// Whether two statuses differ in anything but heartbeat times.
pub fn status_changed(a: &NodeStatus, b: &NodeStatus) -> bool {
    let strip = |s: &NodeStatus| {
        let mut s = s.clone();
        for c in s.conditions.iter_mut().flatten() {
            c.last_heartbeat_time = None;
        }
        s
    };
    strip(a) != strip(b)
}

/// Bytes as a Kubernetes quantity: `Ki` when whole kibibytes (as the kubelet reports memory).
fn bytes_quantity(bytes: u64) -> Quantity {
    if bytes % 1024 == 0 {
        Quantity(format!("{}Ki", bytes / 1024))
    } else {
        Quantity(bytes.to_string())
    }
}

/// The node's pod CIDR: the existing Node's `spec.podCIDR` when set (a CIDR allocator or the
/// admin wrote it), else `fallback` (the `--pod-cidr` flag, also written to a new Node).
pub async fn pod_cidr(client: &kube::Client, name: &str, fallback: Option<&str>) -> Result<String, NodeError> {
    let api: Api<Node> = Api::all(client.clone());
    let node = api.get_opt(name).await.map_err(api_err(format!("reading node {name}")))?;
    let from_node = node.and_then(|n| n.spec).and_then(|s| s.pod_cidr).filter(|c| !c.is_empty());
    from_node.or(fallback.map(str::to_string)).ok_or_else(|| NodeError::NoPodCidr(name.to_string()))
}

/// Create the Node, or adopt an existing one (labels merged, podCIDR set if empty, status replaced).
pub async fn register(client: &kube::Client, node: &Node) -> Result<Node, NodeError> {
    let api: Api<Node> = Api::all(client.clone());
    let name = node.metadata.name.clone().unwrap_or_default();
    match api.create(&PostParams::default(), node).await {
        Ok(mut created) => {
            // Creating ignores status (it is a subresource): write it now.
            created.status = node.status.clone();
            let status = serde_json::json!({ "status": node.status });
            api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                .await
                .map_err(api_err(format!("writing the status of node {name}")))
        }
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let existing = api.get(&name).await.map_err(api_err(format!("reading node {name}")))?;
            let mut patch = serde_json::json!({ "metadata": { "labels": node.metadata.labels } });
            let has_cidr = existing.spec.as_ref().and_then(|s| s.pod_cidr.as_ref()).is_some_and(|c| !c.is_empty());
            if !has_cidr {
                if let Some(spec) = &node.spec {
                    patch["spec"] = serde_json::json!({ "podCIDR": spec.pod_cidr, "podCIDRs": spec.pod_cidrs });
                }
            }
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(api_err(format!("updating node {name}")))?;
            let status = serde_json::json!({ "status": node.status });
            api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                .await
                .map_err(api_err(format!("writing the status of node {name}")))
        }
        Err(e) => Err(api_err(format!("registering node {name}"))(e)),
    }
}

/// Write node status (merge patch of the whole status).
pub async fn post_status(client: &kube::Client, name: &str, status: &NodeStatus) -> Result<Node, NodeError> {
    let api: Api<Node> = Api::all(client.clone());
    let body = serde_json::json!({ "status": status });
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&body))
        .await
        .map_err(api_err(format!("writing the status of node {name}")))
}

/// Create or renew the node's Lease (holder = node name, owned by the Node).
pub async fn renew_lease(client: &kube::Client, config: &Config, node_uid: Option<&str>) -> Result<Lease, NodeError> {
    let api: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let name = &config.node_name;
    let now = MicroTime(Timestamp::now());
    let existing = api.get_opt(name).await.map_err(api_err(format!("reading lease {name}")))?;
    match existing {
        Some(mut lease) => {
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            spec.holder_identity = Some(name.clone());
            spec.lease_duration_seconds = Some(config.lease_duration.as_secs() as i32);
            spec.renew_time = Some(now);
            api.replace(name, &PostParams::default(), &lease).await.map_err(api_err(format!("renewing lease {name}")))
        }
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(LEASE_NAMESPACE.into()),
                    owner_references: node_uid.map(|uid| {
                        vec![OwnerReference {
                            api_version: "v1".into(),
                            kind: "Node".into(),
                            name: name.clone(),
                            uid: uid.into(),
                            ..OwnerReference::default()
                        }]
                    }),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(name.clone()),
                    lease_duration_seconds: Some(config.lease_duration.as_secs() as i32),
                    renew_time: Some(now),
                    ..LeaseSpec::default()
                }),
            };
            api.create(&PostParams::default(), &lease).await.map_err(api_err(format!("creating lease {name}")))
        }
    }
}

/// The status of a node status's Ready condition.
pub fn ready_status(status: &NodeStatus) -> Option<&str> {
    status.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready").map(|c| c.status.as_str())
}

/// Record an Event about this Node (in `default`, where Kubernetes keeps node events), e.g.
/// `NodeReady` when the nodelet reports Ready again after the node controller marked it Unknown.
pub async fn record_event(
    client: &kube::Client,
    config: &Config,
    node_uid: Option<&str>,
    reason: &str,
    message: String,
) -> Result<(), NodeError> {
    use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
    let now = Timestamp::now();
    let name = &config.node_name;
    let event = Event {
        metadata: ObjectMeta {
            name: Some(format!("{name}.{:x}", now.as_nanosecond())),
            namespace: Some("default".into()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(name.clone()),
            uid: node_uid.map(str::to_string),
            ..ObjectReference::default()
        },
        reason: Some(reason.into()),
        message: Some(message),
        type_: Some("Normal".into()),
        source: Some(EventSource { component: Some("nodelet".into()), host: Some(name.clone()) }),
        reporting_component: Some("nodelet".into()),
        reporting_instance: Some(name.clone()),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        count: Some(1),
        ..Event::default()
    };
    Api::<k8s_openapi::api::core::v1::Event>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &event)
        .await
        .map_err(api_err(format!("recording event {reason} for node {name}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn allocatable_is_capacity_minus_reservations() {
        let mut config = Config::new("n1", PathBuf::from("/"));
        config.reserved_cpu_millis = 500;
        config.reserved_memory_bytes = 1 << 30;
        config.zone = Some("z1".into());
        let machine = Machine::simulated("n1", [10, 0, 0, 1].into());
        let node = build_node(&config, &machine, "simulated://0.1.0", Pressure::default(), Timestamp::now());
        let st = node.status.expect("status");
        let cap = st.capacity.expect("capacity");
        let alloc = st.allocatable.expect("allocatable");
        assert_eq!(cap["cpu"].0, "8");
        assert_eq!(alloc["cpu"].0, "7500m");
        assert_eq!(cap["memory"].0, format!("{}Ki", 32u64 << 20));
        assert_eq!(alloc["memory"].0, format!("{}Ki", 31u64 << 20));
        assert_eq!(cap["pods"].0, "110");
        let labels = node.metadata.labels.expect("labels");
        assert_eq!(labels["kubernetes.io/hostname"], "n1");
        assert_eq!(labels["topology.kubernetes.io/zone"], "z1");
        let types: Vec<_> = st.conditions.iter().flatten().map(|c| (c.type_.as_str(), c.status.as_str())).collect();
        assert_eq!(
            types,
            [("MemoryPressure", "False"), ("DiskPressure", "False"), ("PIDPressure", "False"), ("Ready", "True")]
        );
    }

    #[test]
    fn heartbeat_alone_is_no_change() {
        let config = Config::new("n1", PathBuf::from("/"));
        let machine = Machine::simulated("n1", [10, 0, 0, 1].into());
        let t1 = Timestamp::from_second(1_800_000_000).expect("ts");
        let t2 = Timestamp::from_second(1_800_000_060).expect("ts");
        let a = node_status(&config, &machine, "x", Pressure::default(), t1, None);
        let b = node_status(&config, &machine, "x", Pressure::default(), t2, Some(&a));
        assert!(!status_changed(&a, &b));
        let c = node_status(&config, &machine, "x", Pressure { memory: true, ..Pressure::default() }, t2, Some(&a));
        assert!(status_changed(&a, &c));
        let mp = c.conditions.iter().flatten().find(|c| c.type_ == "MemoryPressure").expect("cond");
        assert_eq!(mp.last_transition_time, Some(Time(t2)));
        let ready = c.conditions.iter().flatten().find(|c| c.type_ == "Ready").expect("cond");
        assert_eq!(ready.last_transition_time, Some(Time(t1)));
    }
}
