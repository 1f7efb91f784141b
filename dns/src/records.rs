//! The cluster zone's records, computed from Services, EndpointSlices and Pods (no I/O).
//!
//! What CoreDNS's `kubernetes` plugin answers, per the Kubernetes DNS specification
//! (kubernetes/dns `docs/specification.md`):
//! - `<svc>.<ns>.svc.<domain>`: A/AAAA with the ClusterIPs; for a headless Service, one per ready
//!   endpoint address (all addresses with `publishNotReadyAddresses`); CNAME for ExternalName.
//! - `<endpoint>.<svc>.<ns>.svc.<domain>` for headless endpoints: the endpoint's hostname, else its
//!   address with dashes.
//! - `_<port>._<proto>.<svc>.<ns>.svc.<domain>`: SRV for each named port, to the Service name (or
//!   to each endpoint name for headless Services).
//! - `<a-b-c-d>.<ns>.pod.<domain>`: A for pods that have that IP in that namespace (verified).

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::collections::BTreeSet;
use std::net::IpAddr;

/// What a name resolves to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Data {
    /// An address (A or AAAA).
    Addr(IpAddr),
    /// A service record: port and target name (fully qualified, trailing dot).
    Srv { port: u16, target: String },
    /// An alias (fully qualified, trailing dot).
    Cname(String),
}

/// One record: a fully qualified name (lower case, trailing dot) and its data.
pub type Record = (String, Data);

/// The records of the zone `domain` (e.g. `cluster.local`) for these objects, sorted, without duplicates.
pub fn zone_records<'a>(
    domain: &str,
    services: impl IntoIterator<Item = &'a Service>,
    slices: &[&EndpointSlice],
    pods: impl IntoIterator<Item = &'a Pod>,
) -> Vec<Record> {
    let mut out = BTreeSet::new();
    for svc in services {
        service_records(domain, svc, slices, &mut out);
    }
    for pod in pods {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let ips = pod.status.as_ref().and_then(|s| s.pod_ips.as_ref());
        for ip in ips.into_iter().flatten().filter_map(|p| p.ip.parse::<IpAddr>().ok()) {
            out.insert((format!("{}.{ns}.pod.{domain}.", dashed(ip)), Data::Addr(ip)));
        }
    }
    out.into_iter().collect()
}

/// An address as a DNS label: `10.0.0.5` → `10-0-0-5`, `fd00::1` → `fd00--1`.
fn dashed(ip: IpAddr) -> String {
    ip.to_string().replace(['.', ':'], "-")
}

fn service_records(domain: &str, svc: &Service, slices: &[&EndpointSlice], out: &mut BTreeSet<Record>) {
    let (Some(name), Some(spec)) = (svc.metadata.name.as_deref(), svc.spec.as_ref()) else { return };
    let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
    let base = format!("{name}.{ns}.svc.{domain}.");
    if spec.type_.as_deref() == Some("ExternalName") {
        if let Some(target) = spec.external_name.as_deref().filter(|t| !t.is_empty()) {
            let target =
                if target.ends_with('.') { target.to_lowercase() } else { format!("{}.", target.to_lowercase()) };
            out.insert((base, Data::Cname(target)));
        }
        return;
    }
    let ports: Vec<(String, String, u16)> = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            let name = p.name.as_deref().filter(|n| !n.is_empty())?;
            let proto = p.protocol.as_deref().unwrap_or("TCP").to_lowercase();
            Some((name.to_owned(), proto, u16::try_from(p.port).ok()?))
        })
        .collect();
    let ips: Vec<IpAddr> =
        spec.cluster_ips.iter().flatten().chain(spec.cluster_ip.iter()).filter_map(|ip| ip.parse().ok()).collect();
    if !ips.is_empty() {
        for ip in ips {
            out.insert((base.clone(), Data::Addr(ip)));
        }
        for (port_name, proto, port) in &ports {
            out.insert((format!("_{port_name}._{proto}.{base}"), Data::Srv { port: *port, target: base.clone() }));
        }
        return;
    }
    // Headless: the endpoints themselves.
    let publish_not_ready = spec.publish_not_ready_addresses == Some(true);
    for slice in slices.iter().filter(|s| {
        s.metadata.namespace.as_deref() == Some(ns)
            && s.metadata.labels.as_ref().and_then(|l| l.get("kubernetes.io/service-name")).map(String::as_str)
                == Some(name)
    }) {
        for ep in slice.endpoints.iter().flatten() {
            let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            if !ready && !publish_not_ready {
                continue;
            }
            for ip in ep.addresses.iter().filter_map(|a| a.parse::<IpAddr>().ok()) {
                let label = ep.hostname.clone().unwrap_or_else(|| dashed(ip));
                let endpoint = format!("{label}.{base}");
                out.insert((base.clone(), Data::Addr(ip)));
                out.insert((endpoint.clone(), Data::Addr(ip)));
                for (port_name, proto, _) in &ports {
                    // The endpoint's own port for this name, else the Service's.
                    let port = slice
                        .ports
                        .iter()
                        .flatten()
                        .find(|p| p.name.as_deref() == Some(port_name.as_str()))
                        .and_then(|p| p.port)
                        .and_then(|p| u16::try_from(p).ok());
                    if let Some(port) = port {
                        out.insert((
                            format!("_{port_name}._{proto}.{base}"),
                            Data::Srv { port, target: endpoint.clone() },
                        ));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse<T: k8s_openapi::serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).expect("valid object")
    }

    #[test]
    fn services_headless_external_and_pods() {
        let web: Service = parse(json!({"metadata": {"name": "web", "namespace": "shop"},
            "spec": {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                "ports": [{"name": "http", "port": 80, "protocol": "TCP"}, {"port": 81}]}}));
        let db: Service = parse(json!({"metadata": {"name": "db", "namespace": "shop"},
            "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}}));
        let ext: Service = parse(json!({"metadata": {"name": "ext", "namespace": "shop"},
            "spec": {"type": "ExternalName", "externalName": "Example.COM"}}));
        let slice: EndpointSlice = parse(json!({"metadata": {"name": "db-1", "namespace": "shop",
            "labels": {"kubernetes.io/service-name": "db"}},
        "addressType": "IPv4",
        "ports": [{"name": "pg", "port": 5433, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": ["10.244.0.7"], "hostname": "db-0", "conditions": {"ready": true}},
            {"addresses": ["10.244.0.8"], "conditions": {"ready": false}},
            {"addresses": ["10.244.0.9"]}
        ]}));
        let pod: Pod = parse(json!({"metadata": {"name": "p", "namespace": "shop"},
            "status": {"podIP": "10.244.0.7", "podIPs": [{"ip": "10.244.0.7"}]}}));
        let records = zone_records("cluster.local", [&web, &db, &ext], &[&slice], [&pod]);
        let addr = |s: &str| Data::Addr(s.parse().expect("ip"));
        let want: Vec<Record> = vec![
            ("10-244-0-7.shop.pod.cluster.local.".into(), addr("10.244.0.7")),
            ("10-244-0-9.db.shop.svc.cluster.local.".into(), addr("10.244.0.9")),
            (
                "_http._tcp.web.shop.svc.cluster.local.".into(),
                Data::Srv { port: 80, target: "web.shop.svc.cluster.local.".into() },
            ),
            (
                "_pg._tcp.db.shop.svc.cluster.local.".into(),
                Data::Srv { port: 5433, target: "10-244-0-9.db.shop.svc.cluster.local.".into() },
            ),
            (
                "_pg._tcp.db.shop.svc.cluster.local.".into(),
                Data::Srv { port: 5433, target: "db-0.db.shop.svc.cluster.local.".into() },
            ),
            ("db-0.db.shop.svc.cluster.local.".into(), addr("10.244.0.7")),
            ("db.shop.svc.cluster.local.".into(), addr("10.244.0.7")),
            ("db.shop.svc.cluster.local.".into(), addr("10.244.0.9")),
            ("ext.shop.svc.cluster.local.".into(), Data::Cname("example.com.".into())),
            ("web.shop.svc.cluster.local.".into(), addr("10.96.0.10")),
        ];
        assert_eq!(records, want);
    }
}
