//! Configuration of `ferry-apiserver`.

use crate::rest::RestOptions;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything the server needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// etcd endpoints, `http://host:port`.
    pub etcd_servers: Vec<String>,
    /// Where `pki/` and `admin.kubeconfig` live.
    pub data_dir: PathBuf,
    /// Address to listen on.
    pub bind_address: IpAddr,
    /// Port to listen on (0 = any free port).
    pub secure_port: u16,
    /// Address pods use to reach this server (the `kubernetes` Service's endpoint); default: the
    /// bind address, or 127.0.0.1 when binding every address.
    pub advertise_address: Option<IpAddr>,
    /// Extra names or addresses for the serving certificate.
    pub extra_sans: Vec<String>,
    /// Static bearer tokens (Kubernetes token file format).
    pub token_auth_file: Option<PathBuf>,
    /// How often to compact etcd history (None = never).
    pub compaction_interval: Option<Duration>,
    /// Events kept per resource by the watch cache.
    pub watch_history: usize,
    /// Largest accepted request body.
    pub max_request_bytes: usize,
    /// How long in-flight requests get on shutdown.
    pub shutdown_grace: Duration,
    /// REST tunables.
    pub rest: RestOptions,
}

impl Config {
    /// Defaults for a data dir and etcd endpoints.
    pub fn new(etcd_servers: Vec<String>, data_dir: PathBuf) -> Self {
        Self {
            etcd_servers,
            data_dir,
            bind_address: IpAddr::from([127, 0, 0, 1]),
            secure_port: 6443,
            advertise_address: None,
            extra_sans: Vec::new(),
            token_auth_file: None,
            compaction_interval: Some(Duration::from_secs(300)),
            watch_history: crate::cache::DEFAULT_HISTORY,
            max_request_bytes: 3 * 1024 * 1024,
            shutdown_grace: Duration::from_secs(10),
            rest: RestOptions::default(),
        }
    }
}
