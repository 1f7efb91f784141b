//! Nodelet settings.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// How a nodelet runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// The Node's name.
    pub node_name: String,
    /// Extra labels for the Node (beside kubernetes.io/hostname, os and arch).
    pub labels: BTreeMap<String, String>,
    /// `topology.kubernetes.io/zone`, if set.
    pub zone: Option<String>,
    /// The node's pod CIDR, written to `spec.podCIDR` when registering.
    pub pod_cidr: Option<String>,
    /// Pods this node accepts (capacity `pods`).
    pub max_pods: u32,
    /// CPU kept for the system, in millicores (capacity − reserved = allocatable).
    pub reserved_cpu_millis: u64,
    /// Memory kept for the system, in bytes (also covers the eviction threshold).
    pub reserved_memory_bytes: u64,
    /// Ephemeral storage kept for the system, in bytes.
    pub reserved_ephemeral_bytes: u64,
    /// The Lease's `leaseDurationSeconds`.
    pub lease_duration: Duration,
    /// How often the Lease is renewed.
    pub lease_renew_interval: Duration,
    /// No heartbeat reached the API server for longer than this (renewals failed, or the
    /// process was stopped): resync pods before the next heartbeat ([`crate::recovery`]).
    pub silence_threshold: Duration,
    /// How long a resync may take before the heartbeat is skipped and retried.
    pub resync_timeout: Duration,
    /// How often node status is recomputed (and written if it changed).
    pub status_check_interval: Duration,
    /// Longest time between two node status writes even when nothing changed.
    pub status_report_interval: Duration,
    /// Directory for the nodelet's state (its filesystem is the ephemeral storage).
    pub root_dir: PathBuf,
    /// Port of the nodelet's HTTPS endpoint ([`crate::server`]), published in the Node's
    /// `status.daemonEndpoints.kubeletEndpoint.Port`; `None` when it does not serve one.
    pub server_port: Option<u16>,
}

impl Config {
    /// Defaults as the kubelet has them, for a node with this name.
    pub fn new(node_name: impl Into<String>, root_dir: PathBuf) -> Self {
        Config {
            node_name: node_name.into(),
            labels: BTreeMap::new(),
            zone: None,
            pod_cidr: None,
            max_pods: 110,
            reserved_cpu_millis: 0,
            reserved_memory_bytes: 100 << 20,
            reserved_ephemeral_bytes: 0,
            lease_duration: Duration::from_secs(40),
            lease_renew_interval: Duration::from_secs(10),
            silence_threshold: Duration::from_secs(30),
            resync_timeout: Duration::from_secs(30),
            status_check_interval: Duration::from_secs(10),
            status_report_interval: Duration::from_secs(300),
            root_dir,
            server_port: None,
        }
    }
}
