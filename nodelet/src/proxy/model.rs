//! What the proxy programs, computed from Services and EndpointSlices: one [`ServicePort`] per
//! (Service, port) with its virtual addresses and the endpoints traffic may go to.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label naming a slice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A transport protocol, as nftables spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    /// From a Kubernetes protocol name (default TCP); `None` for an unknown one.
    pub fn parse(p: Option<&str>) -> Option<Protocol> {
        match p.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// nftables' name.
    pub fn nft(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// One port of one Service, ready to be programmed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    /// `namespace/name:port-name` (or `:port-number` for an unnamed port); names its chains.
    pub id: String,
    /// Protocol.
    pub protocol: Protocol,
    /// The Service's IPv4 ClusterIPs.
    pub cluster_ips: Vec<Ipv4Addr>,
    /// The Service port.
    pub port: u16,
    /// The NodePort, for NodePort and LoadBalancer Services.
    pub node_port: Option<u16>,
    /// ClientIP session affinity timeout in seconds, if the Service asks for it.
    pub affinity_seconds: Option<u32>,
    /// Where traffic goes (sorted): ready endpoints, or — when none is ready — the serving
    /// terminating ones (Kubernetes' terminating-endpoint fallback). Empty: traffic is rejected.
    pub endpoints: Vec<SocketAddrV4>,
}

fn v4(ip: &str) -> Option<Ipv4Addr> {
    ip.parse().ok()
}

/// Build the service ports from the current Services and EndpointSlices (any manager: slices
/// written by hand for Services without a selector count too). Sorted by id.
pub fn build(services: &[Arc<Service>], slices: &[Arc<EndpointSlice>]) -> Vec<ServicePort> {
    let mut by_service: BTreeMap<(String, String), Vec<&EndpointSlice>> = BTreeMap::new();
    for s in slices {
        if s.address_type != "IPv4" {
            continue;
        }
        let (Some(ns), Some(svc)) =
            (s.metadata.namespace.clone(), s.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)).cloned())
        else {
            continue;
        };
        by_service.entry((ns, svc)).or_default().push(s);
    }
    let mut out = Vec::new();
    for svc in services {
        let (Some(ns), Some(name), Some(spec)) = (&svc.metadata.namespace, &svc.metadata.name, &svc.spec) else {
            continue;
        };
        let kind = spec.type_.as_deref().unwrap_or("ClusterIP");
        if kind == "ExternalName" {
            continue;
        }
        let mut cluster_ips: Vec<Ipv4Addr> = spec.cluster_ips.iter().flatten().filter_map(|ip| v4(ip)).collect();
        if cluster_ips.is_empty() {
            cluster_ips.extend(spec.cluster_ip.as_deref().and_then(v4));
        }
        if cluster_ips.is_empty() {
            continue; // headless (or not yet allocated): DNS answers with pod IPs, nothing to proxy
        }
        let affinity_seconds = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .and_then(|t| u32::try_from(t).ok())
                .filter(|t| *t > 0)
                .unwrap_or(10_800)
        });
        let svc_slices = by_service.get(&(ns.clone(), name.clone()));
        for sp in spec.ports.iter().flatten() {
            let Some(protocol) = Protocol::parse(sp.protocol.as_deref()) else { continue };
            let Ok(port) = u16::try_from(sp.port) else { continue };
            let port_name = sp.name.clone().unwrap_or_default();
            let (mut ready, mut fallback) = (BTreeSet::new(), BTreeSet::new());
            for slice in svc_slices.into_iter().flatten() {
                let Some(target) = slice.ports.iter().flatten().find(|p| {
                    p.name.clone().unwrap_or_default() == port_name
                        && Protocol::parse(p.protocol.as_deref()) == Some(protocol)
                }) else {
                    continue;
                };
                let Some(tport) = target.port.and_then(|p| u16::try_from(p).ok()).filter(|p| *p > 0) else {
                    continue;
                };
                for ep in slice.endpoints.iter().flatten() {
                    let c = ep.conditions.clone().unwrap_or_default();
                    for ip in ep.addresses.iter().filter_map(|a| v4(a)) {
                        let addr = SocketAddrV4::new(ip, tport);
                        // A missing condition means ready (the API's documented default).
                        if c.ready.unwrap_or(true) {
                            ready.insert(addr);
                        } else if c.serving.unwrap_or(false) && c.terminating.unwrap_or(false) {
                            fallback.insert(addr);
                        }
                    }
                }
            }
            let endpoints = if ready.is_empty() { fallback } else { ready };
            let id =
                if port_name.is_empty() { format!("{ns}/{name}:{port}") } else { format!("{ns}/{name}:{port_name}") };
            let node_port = matches!(kind, "NodePort" | "LoadBalancer")
                .then(|| sp.node_port.and_then(|p| u16::try_from(p).ok()))
                .flatten()
                .filter(|p| *p > 0);
            out.push(ServicePort {
                id,
                protocol,
                cluster_ips: cluster_ips.clone(),
                port,
                node_port,
                affinity_seconds,
                endpoints: endpoints.into_iter().collect(),
            });
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(v: serde_json::Value) -> Arc<Service> {
        Arc::new(serde_json::from_value(v).expect("service"))
    }

    fn slice(v: serde_json::Value) -> Arc<EndpointSlice> {
        Arc::new(serde_json::from_value(v).expect("slice"))
    }

    #[test]
    fn ready_endpoints_named_ports_and_fallback() {
        let services = [
            svc(json!({"metadata": {"name": "web", "namespace": "default"}, "spec": {
                "type": "NodePort", "clusterIP": "10.96.0.5", "clusterIPs": ["10.96.0.5"],
                "sessionAffinity": "ClientIP",
                "ports": [{"name": "http", "port": 80, "nodePort": 30080}, {"name": "dns", "port": 53, "protocol": "UDP"}]}})),
            svc(
                json!({"metadata": {"name": "headless", "namespace": "default"}, "spec": {"clusterIP": "None", "ports": [{"port": 1}]}}),
            ),
            svc(
                json!({"metadata": {"name": "old", "namespace": "default"}, "spec": {"clusterIP": "10.96.0.6", "ports": [{"port": 81}]}}),
            ),
        ];
        let slices = [
            slice(
                json!({"metadata": {"name": "web-a", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                "endpoints": [
                    {"addresses": ["10.1.0.2"], "conditions": {"ready": true}},
                    {"addresses": ["10.1.0.1"]},
                    {"addresses": ["10.1.0.3"], "conditions": {"ready": false, "serving": false}}]}),
            ),
            slice(
                json!({"metadata": {"name": "web-b", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": 9090, "protocol": "TCP"}],
                "endpoints": [{"addresses": ["10.1.0.9"], "conditions": {"ready": true}}]}),
            ),
            slice(
                json!({"metadata": {"name": "old-a", "namespace": "default", "labels": {"kubernetes.io/service-name": "old"}},
                "addressType": "IPv4", "ports": [{"name": "", "port": 8081}],
                "endpoints": [
                    {"addresses": ["10.1.0.7"], "conditions": {"ready": false, "serving": true, "terminating": true}},
                    {"addresses": ["10.1.0.8"], "conditions": {"ready": false, "serving": false, "terminating": true}}]}),
            ),
        ];
        let ports = build(&services, &slices);
        let ids: Vec<_> = ports.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, vec!["default/old:81", "default/web:dns", "default/web:http"]);
        let http = &ports[2];
        let eps: Vec<String> = http.endpoints.iter().map(ToString::to_string).collect();
        assert_eq!(eps, vec!["10.1.0.1:8080", "10.1.0.2:8080", "10.1.0.9:9090"]);
        assert_eq!((http.node_port, http.affinity_seconds), (Some(30080), Some(10_800)));
        assert!(ports[1].endpoints.is_empty(), "no slice has the dns port");
        assert_eq!(ports[1].protocol, Protocol::Udp);
        assert_eq!(ports[1].node_port, None);
        let old: Vec<String> = ports[0].endpoints.iter().map(ToString::to_string).collect();
        assert_eq!(old, vec!["10.1.0.7:8081"], "only serving terminating endpoints when none is ready");
    }
}
