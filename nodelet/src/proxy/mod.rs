//! The service proxy: makes ClusterIPs and NodePorts work on this node, like kube-proxy in its
//! nftables mode.
//!
//! Flow: kube-runtime reflectors keep every Service and EndpointSlice; any change wakes the sync
//! loop ([`Proxy::run`]), which computes the service ports ([`model::build`]), renders the whole
//! rule set ([`nftables::render`]) and, when it differs from what is installed (or a periodic
//! resync is due), installs it with one `nft -f` transaction ([`Syncer`]). The table belongs
//! to Ferry alone (`ferry` by default, [`ProxyConfig::table`]); nothing else is touched.
//!
//! Restarts: the table outlives the nodelet. A starting proxy leaves it in place until both
//! caches have listed, then replaces it atomically — traffic keeps flowing through the old
//! rules meanwhile. [`cleanup`] removes the table (`ferry-nodelet proxy cleanup`).

pub mod model;
pub mod netfilter;
pub mod nftables;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use tokio::sync::{watch, Notify};

pub use netfilter::{Netfilter, NetfilterError, Nft};

/// How the proxy runs.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// The nftables table (family `ip`) Ferry owns.
    pub table: String,
    /// Addresses NodePorts answer on; empty: every local address except loopback.
    pub nodeport_addresses: Vec<Ipv4Net>,
    /// Pod address ranges: traffic to a ClusterIP from outside them is masqueraded so replies
    /// come back through this node. Empty: only hairpin and NodePort traffic is masqueraded.
    pub cluster_cidrs: Vec<Ipv4Net>,
    /// Masquerade all service traffic (for nodes without `br_netfilter`, where replies between
    /// pods on one bridge would bypass conntrack).
    pub masquerade_all: bool,
    /// Shortest time between two syncs (changes in between are batched).
    pub min_sync_interval: Duration,
    /// The rule set is re-installed this often even without changes (repairs outside edits).
    pub resync_interval: Duration,
}

impl ProxyConfig {
    /// Defaults, for a table of this name.
    pub fn new(table: impl Into<String>) -> Self {
        ProxyConfig {
            table: table.into(),
            nodeport_addresses: Vec::new(),
            cluster_cidrs: Vec::new(),
            masquerade_all: false,
            min_sync_interval: Duration::from_millis(50),
            resync_interval: Duration::from_secs(300),
        }
    }
}

/// What the last sync did.
#[derive(Clone, Debug, Default)]
pub struct SyncReport {
    /// Successful installs so far.
    pub syncs: u64,
    /// Service ports programmed.
    pub service_ports: usize,
    /// Endpoints programmed.
    pub endpoints: usize,
    /// Time to compute, render and install the last rule set.
    pub duration: Duration,
    /// Whether the last install replaced the whole table.
    pub full: bool,
}

/// Installs rule sets, remembering the last one (for incremental updates and no-op detection).
pub struct Syncer {
    netfilter: Arc<dyn Netfilter>,
    config: ProxyConfig,
    installed: Option<nftables::Ruleset>,
    last_install: Option<Instant>,
}

/// What [`Syncer::sync`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The kernel already had this rule set.
    Unchanged,
    /// The whole table was replaced.
    Replaced,
    /// Only what changed was sent.
    Updated,
}

impl Syncer {
    /// A syncer that has installed nothing yet (its first install replaces the table).
    pub fn new(config: ProxyConfig, netfilter: Arc<dyn Netfilter>) -> Self {
        Syncer { netfilter, config, installed: None, last_install: None }
    }

    /// Install the rule set for `ports` unless it is already installed and no resync is due (a
    /// resync rewrites every chain, repairing edits made behind the proxy's back).
    /// A failure forgets what is installed, so the next sync replaces the whole table.
    pub async fn sync(&mut self, ports: &[model::ServicePort]) -> Result<Outcome, NetfilterError> {
        let rules = nftables::render(&self.config, ports);
        let resync_due = self.last_install.is_none_or(|t| t.elapsed() >= self.config.resync_interval);
        if !resync_due && self.installed.as_ref() == Some(&rules) {
            return Ok(Outcome::Unchanged);
        }
        let script = match &self.installed {
            Some(prev) if resync_due => rules.resync_script(prev),
            prev => rules.script(prev.as_ref()),
        };
        let outcome = if self.installed.is_some() { Outcome::Updated } else { Outcome::Replaced };
        self.installed = None;
        self.netfilter.apply(&script).await?;
        self.installed = Some(rules);
        self.last_install = Some(Instant::now());
        Ok(outcome)
    }
}

/// The service proxy of one node.
pub struct Proxy {
    config: ProxyConfig,
    netfilter: Arc<dyn Netfilter>,
    report: watch::Sender<SyncReport>,
}

impl Proxy {
    /// A proxy installing through `netfilter`.
    pub fn new(config: ProxyConfig, netfilter: Arc<dyn Netfilter>) -> Self {
        Proxy { config, netfilter, report: watch::channel(SyncReport::default()).0 }
    }

    /// Reports of every successful sync (for tests, benchmarks and metrics).
    pub fn reports(&self) -> watch::Receiver<SyncReport> {
        self.report.subscribe()
    }

    /// Watch Services and EndpointSlices and keep the rules in step, until the task is dropped.
    pub async fn run(self, client: kube::Client) {
        let wake = Arc::new(Notify::new());
        let (services, services_w) = reflector::store::<Service>();
        let (slices, slices_w) = reflector::store::<EndpointSlice>();
        let follow_services = follow(Api::all(client.clone()), services_w, wake.clone());
        let follow_slices = follow(Api::all(client), slices_w, wake.clone());
        let sync = self.sync_loop(services, slices, wake);
        tokio::join!(follow_services, follow_slices, sync);
    }

    async fn sync_loop(&self, services: Store<Service>, slices: Store<EndpointSlice>, wake: Arc<Notify>) {
        // Keep the old rules until both caches are complete: a partial view would drop services.
        let _ = tokio::join!(services.wait_until_ready(), slices.wait_until_ready());
        let mut syncer = Syncer::new(self.config.clone(), self.netfilter.clone());
        loop {
            let started = Instant::now();
            let ports = model::build(&services.state(), &slices.state());
            let retry = match syncer.sync(&ports).await {
                Ok(Outcome::Unchanged) => false,
                Ok(outcome) => {
                    let duration = started.elapsed();
                    tracing::debug!(table = %self.config.table, ports = ports.len(), ?duration, ?outcome, "service rules installed");
                    self.report.send_modify(|r| {
                        r.syncs += 1;
                        r.service_ports = ports.len();
                        r.endpoints = ports.iter().map(|p| p.endpoints.len()).sum();
                        r.duration = duration;
                        r.full = outcome == Outcome::Replaced;
                    });
                    false
                }
                Err(e) => {
                    tracing::warn!(table = %self.config.table, error = %e, "installing service rules failed; retrying");
                    true
                }
            };
            tokio::time::sleep(self.config.min_sync_interval).await;
            let wait = if retry { Duration::from_secs(1) } else { self.config.resync_interval };
            let _ = tokio::time::timeout(wait, wake.notified()).await;
        }
    }
}

/// Follow one kind into a store, waking the sync loop on every change.
async fn follow<K>(api: Api<K>, writer: reflector::store::Writer<K>, wake: Arc<Notify>)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + k8s_openapi::serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let stream = watcher(api, watcher::Config::default()).default_backoff().reflect(writer);
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
            Ok(_) => wake.notify_one(),
            Err(e) => tracing::warn!(error = %e, "proxy watch failed; retrying"),
        }
    }
}

/// Remove every rule of the proxy (the whole table). Succeeds when there is none.
pub async fn cleanup(netfilter: &dyn Netfilter, table: &str) -> Result<(), NetfilterError> {
    netfilter.apply(&nftables::cleanup_script(table)).await
}

#[cfg(test)]
mod tests {
    use super::model::{Protocol, ServicePort};
    use super::netfilter::Recorder;
    use super::*;

    fn port(eps: &[&str]) -> ServicePort {
        ServicePort {
            id: "default/web:http".into(),
            protocol: Protocol::Tcp,
            cluster_ips: vec!["10.96.0.5".parse().expect("ip")],
            port: 80,
            node_port: None,
            affinity_seconds: Some(30),
            endpoints: eps.iter().map(|e| e.parse().expect("ep")).collect(),
        }
    }

    #[tokio::test]
    async fn replaces_first_then_updates_and_skips_no_ops() {
        let rec = Arc::new(Recorder::default());
        let mut s = Syncer::new(ProxyConfig::new("t"), rec.clone());
        assert_eq!(s.sync(&[port(&["10.0.0.1:80"])]).await.ok(), Some(Outcome::Replaced));
        assert_eq!(s.sync(&[port(&["10.0.0.1:80"])]).await.ok(), Some(Outcome::Unchanged));
        assert_eq!(s.sync(&[port(&["10.0.0.1:80", "10.0.0.2:80"])]).await.ok(), Some(Outcome::Updated));
        let scripts = rec.scripts();
        assert_eq!(scripts.len(), 2);
        assert!(scripts[0].contains("delete table ip t\n"));
        assert!(scripts[1].contains("add rule ip t ep-") && !scripts[1].contains("delete table"));
        // A failure makes the next install a full replacement.
        *rec.fail_next.lock().expect("lock") = 1;
        assert!(s.sync(&[port(&["10.0.0.2:80"])]).await.is_err());
        assert_eq!(s.sync(&[port(&["10.0.0.2:80"])]).await.ok(), Some(Outcome::Replaced));
    }

    #[tokio::test]
    async fn resyncs_when_due() {
        let rec = Arc::new(Recorder::default());
        let mut config = ProxyConfig::new("t");
        config.resync_interval = Duration::ZERO;
        let mut s = Syncer::new(config, rec.clone());
        let _ = s.sync(&[]).await;
        assert_eq!(s.sync(&[]).await.ok(), Some(Outcome::Updated));
        let scripts = rec.scripts();
        assert_eq!(scripts.len(), 2);
        assert!(scripts[1].starts_with("add table ip t\nflush table ip t\ntable ip t {"), "{}", scripts[1]);
    }

    /// The scripts against the real kernel, in a table of this test's own: a full install, an
    /// incremental one that drops an endpoint (its chain and affinity set deleted in the same
    /// transaction, the other set keeping its entries), then cleanup.
    #[tokio::test]
    async fn real_nft_transactions() {
        let table = format!("ferry-ut{}", std::process::id());
        struct Cleanup(String);
        impl Drop for Cleanup {
            fn drop(&mut self) {
                let _ = std::process::Command::new("nft").args(["delete", "table", "ip", &self.0]).status();
            }
        }
        let _guard = Cleanup(table.clone());
        let nft: Arc<dyn Netfilter> = Arc::new(Nft::default());
        let mut s = Syncer::new(ProxyConfig::new(table.clone()), nft.clone());
        let two = port(&["10.0.0.1:80", "10.0.0.2:80"]);
        s.sync(std::slice::from_ref(&two)).await.expect("full install");
        let ep1 = "10.0.0.1:80".parse().expect("ep");
        let set1 = nftables::render(&ProxyConfig::new(table.clone()), std::slice::from_ref(&two))
            .sets
            .into_keys()
            .find(|n| n.starts_with(&nftables::endpoint_chain(&two.id, &ep1).replace("ep-", "aff-")))
            .expect("affinity set");
        nft.apply(&format!("add element ip {table} {set1} {{ 192.0.2.7 }}\n")).await.expect("add element");
        s.sync(&[port(&["10.0.0.1:80"])]).await.expect("incremental install");
        let out = std::process::Command::new("nft").args(["list", "table", "ip", &table]).output().expect("nft list");
        let listing = String::from_utf8_lossy(&out.stdout);
        assert!(listing.contains("192.0.2.7"), "affinity entries survive an update:\n{listing}");
        assert!(!listing.contains("10.0.0.2:80"), "the dropped endpoint's chain is gone:\n{listing}");
        assert!(listing.contains("dnat to 10.0.0.1:80"));
        cleanup(nft.as_ref(), &table).await.expect("cleanup");
        cleanup(nft.as_ref(), &table).await.expect("cleanup twice");
        let out = std::process::Command::new("nft").args(["list", "table", "ip", &table]).output().expect("nft list");
        assert!(!out.status.success(), "table removed");
    }
}
