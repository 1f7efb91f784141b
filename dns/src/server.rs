//! The DNS server: reflectors of Services, EndpointSlices and Pods feed an in-memory authoritative zone
//! served by hickory-server over UDP and TCP.
//!
//! Every change (debounced) recomputes the zone's records from the reflector stores and swaps them in
//! whole, with a new SOA serial; queries never see a half-updated zone. Names outside the cluster domain
//! are forwarded to upstream resolvers (the host's, or given ones), or refused when there are none.

use crate::records::{zone_records, Data};
use futures::StreamExt;
use hickory_server::net::runtime::TokioRuntimeProvider;
use hickory_server::proto::rr::rdata::{A, AAAA, CNAME, SOA, SRV};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordSet, RrKey};
use hickory_server::resolver::config::NameServerConfig;
use hickory_server::store::forwarder::{ForwardConfig, ForwardZoneHandler};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};
use hickory_server::Server;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::Notify;
use tokio::task::JoinSet;

/// How the server runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// The cluster domain, e.g. `cluster.local`.
    pub domain: String,
    /// Addresses to serve on (UDP and TCP each); port 0 picks a free port.
    pub listen: Vec<SocketAddr>,
    /// TTL of every answer, in seconds.
    pub ttl: u32,
    /// How long to gather changes before rebuilding the zone.
    pub debounce: Duration,
    /// Where names outside the cluster domain go.
    pub upstream: Upstream,
}

/// Resolvers for names outside the cluster domain.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Upstream {
    /// None: such queries are refused.
    #[default]
    None,
    /// The host's resolvers (`/etc/resolv.conf`).
    System,
    /// These servers (port 53, UDP and TCP).
    Servers(Vec<IpAddr>),
}

impl std::str::FromStr for Upstream {
    type Err = String;

    /// `none`, `system`, or a comma-separated list of IP addresses.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" | "" => Ok(Upstream::None),
            "system" => Ok(Upstream::System),
            list => list
                .split(',')
                .map(|ip| ip.trim().parse::<IpAddr>().map_err(|_| format!("{ip:?} is not an IP address")))
                .collect::<Result<Vec<_>, _>>()
                .map(Upstream::Servers),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            domain: "cluster.local".into(),
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 53))],
            ttl: 5,
            debounce: Duration::from_millis(20),
            upstream: Upstream::None,
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The cluster domain is not a valid DNS name.
    #[error("invalid cluster domain {0:?}")]
    Domain(String),
    /// The upstream resolvers could not be set up.
    #[error("upstream resolvers: {0}")]
    Upstream(String),
    /// A listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A running server.
pub struct Running {
    /// The bound addresses (UDP and TCP share each one).
    pub addrs: Vec<SocketAddr>,
    tasks: JoinSet<()>,
    server: Server<Catalog>,
}

impl Running {
    /// Stop serving.
    pub async fn shutdown(mut self) {
        self.tasks.abort_all();
        let _ = self.server.shutdown_gracefully().await;
    }

    /// Serve until a background task ends (the API watches end only if the client is dropped).
    pub async fn wait(mut self) {
        let _ = self.tasks.join_next().await;
        let _ = self.server.shutdown_gracefully().await;
    }
}

type Zone = InMemoryZoneHandler<TokioRuntimeProvider>;

/// Watch the API, wait for the first complete view, then serve the cluster zone.
pub async fn start(client: kube::Client, config: Config) -> Result<Running, Error> {
    let origin = Name::from_ascii(format!("{}.", config.domain.trim_end_matches('.')))
        .map_err(|_| Error::Domain(config.domain.clone()))?;
    let changed = Arc::new(Notify::new());
    let mut tasks = JoinSet::new();
    let services = reflect(&mut tasks, Api::<Service>::all(client.clone()), changed.clone(), |s| {
        s.metadata.managed_fields = None;
    });
    let slices = reflect(&mut tasks, Api::<EndpointSlice>::all(client.clone()), changed.clone(), |s| {
        s.metadata.managed_fields = None;
    });
    let pods = reflect(&mut tasks, Api::<Pod>::all(client), changed.clone(), |p| {
        // Only the namespace and the IPs matter here.
        p.spec = None;
        p.metadata.managed_fields = None;
        p.metadata.annotations = None;
        p.metadata.labels = None;
        if let Some(s) = p.status.as_mut() {
            *s = k8s_openapi::api::core::v1::PodStatus { pod_ips: s.pod_ips.take(), ..Default::default() };
        }
    });
    for ready in [services.wait_until_ready().await, slices.wait_until_ready().await, pods.wait_until_ready().await] {
        if ready.is_err() {
            tracing::warn!("a reflector closed before its first sync");
        }
    }

    let zone = Arc::new(Zone::empty(origin.clone(), ZoneType::Primary, AxfrPolicy::Deny));
    let view = View { origin: origin.clone(), domain: config.domain.trim_end_matches('.').to_owned(), ttl: config.ttl };
    let mut serial = 1u32;
    view.install(&zone, &services, &slices, &pods, serial).await;
    {
        let zone = zone.clone();
        let debounce = config.debounce;
        tasks.spawn(async move {
            loop {
                changed.notified().await;
                tokio::time::sleep(debounce).await;
                serial = serial.wrapping_add(1);
                view.install(&zone, &services, &slices, &pods, serial).await;
            }
        });
    }

    let mut catalog = Catalog::new();
    catalog.upsert(LowerName::from(&origin), vec![zone]);
    let forwarder = match &config.upstream {
        Upstream::None => None,
        Upstream::System => {
            Some(ForwardZoneHandler::builder(TokioRuntimeProvider::default()).map_err(Error::Upstream)?)
        }
        Upstream::Servers(ips) => Some(ForwardZoneHandler::builder_tokio(ForwardConfig {
            name_servers: ips.iter().map(|ip| NameServerConfig::udp_and_tcp(*ip)).collect(),
            options: None,
        })),
    };
    if let Some(builder) = forwarder {
        let handler = builder.build().map_err(Error::Upstream)?;
        catalog.upsert(LowerName::from(Name::root()), vec![Arc::new(handler)]);
    }
    let mut server = Server::new(catalog);
    let mut addrs = Vec::new();
    for addr in &config.listen {
        let udp = UdpSocket::bind(addr).await.map_err(|source| Error::Listen { addr: *addr, source })?;
        let bound = udp.local_addr().map_err(|source| Error::Listen { addr: *addr, source })?;
        let tcp = TcpListener::bind(bound).await.map_err(|source| Error::Listen { addr: bound, source })?;
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 64 * 1024);
        addrs.push(bound);
    }
    Ok(Running { addrs, tasks, server })
}

/// A reflector for `api` whose events poke `changed`; `trim` drops what the zone does not need.
fn reflect<K>(
    tasks: &mut JoinSet<()>,
    api: Api<K>,
    changed: Arc<Notify>,
    trim: impl FnMut(&mut K) + Send + 'static,
) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + k8s_openapi::serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()).modify(trim))
        .default_backoff()
        .touched_objects();
    tasks.spawn(async move {
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            if let Err(e) = event {
                tracing::warn!(error = %e, "watch error; retrying");
            }
            changed.notify_one();
        }
    });
    reader
}

/// Turns the stores into the zone's record sets.
struct View {
    origin: Name,
    domain: String,
    ttl: u32,
}

impl View {
    async fn install(
        &self,
        zone: &Zone,
        services: &Store<Service>,
        slices: &Store<EndpointSlice>,
        pods: &Store<Pod>,
        serial: u32,
    ) {
        let services = services.state();
        let slices = slices.state();
        let pods = pods.state();
        let slice_refs: Vec<&EndpointSlice> = slices.iter().map(AsRef::as_ref).collect();
        let records =
            zone_records(&self.domain, services.iter().map(AsRef::as_ref), &slice_refs, pods.iter().map(AsRef::as_ref));
        let mut sets: BTreeMap<RrKey, RecordSet> = BTreeMap::new();
        let soa = SOA::new(
            Name::from_ascii(format!("ns.dns.{}", self.origin)).unwrap_or_else(|_| self.origin.clone()),
            Name::from_ascii(format!("hostmaster.{}", self.origin)).unwrap_or_else(|_| self.origin.clone()),
            serial,
            7200,
            1800,
            86400,
            self.ttl,
        );
        let mut add = |name: Name, rdata: RData| {
            let rtype = rdata.record_type();
            let key = RrKey::new(LowerName::from(&name), rtype);
            let set = sets.entry(key).or_insert_with(|| RecordSet::new(name.clone(), rtype, serial));
            set.insert(Record::from_rdata(name, self.ttl, rdata), serial);
        };
        add(self.origin.clone(), RData::SOA(soa));
        for (name, data) in records {
            let Ok(name) = Name::from_ascii(&name) else { continue };
            let rdata = match data {
                Data::Addr(IpAddr::V4(ip)) => RData::A(A(ip)),
                Data::Addr(IpAddr::V6(ip)) => RData::AAAA(AAAA(ip)),
                Data::Srv { port, target } => match Name::from_ascii(&target) {
                    Ok(t) => RData::SRV(SRV::new(0, 100, port, t)),
                    Err(_) => continue,
                },
                Data::Cname(target) => match Name::from_ascii(&target) {
                    Ok(t) => RData::CNAME(CNAME(t)),
                    Err(_) => continue,
                },
            };
            add(name, rdata);
        }
        let count = sets.len();
        *zone.records_mut().await = sets.into_iter().map(|(k, v)| (k, Arc::new(v))).collect();
        tracing::debug!(serial, rrsets = count, "zone updated");
    }
}
