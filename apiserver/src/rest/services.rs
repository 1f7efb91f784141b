//! ClusterIPs and NodePorts for Services.
//!
//! Each allocated address or port is a key in etcd (`/registry/ferry.dev/serviceips/<ip>`,
//! `/registry/ferry.dev/nodeports/<port>`) that the Service's own create, update or delete
//! claims or releases *in the same transaction* ([`Side`]): two Services can never hold the same
//! IP, and nothing leaks when a write fails or the server crashes half-way. A requested IP or port
//! that is out of range or taken is a 422; a random pick that loses a race is retried.
//!
//! As Kubernetes does, an update that leaves the allocated values out keeps them, a change of type
//! away from NodePort/LoadBalancer (or to ExternalName) drops the ports (or IP) it no longer needs,
//! and the first address of the range is left for the `kubernetes` Service.

use super::Api;
use crate::error::{ApiError, Result};
use crate::storage::Side;
use ferry_api::{FieldError, ResourceInfo};
use rand::Rng;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

const IP_PREFIX: &str = "/registry/ferry.dev/serviceips/";
const PORT_PREFIX: &str = "/registry/ferry.dev/nodeports/";

/// Where ClusterIPs and NodePorts come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRanges {
    base: u32,
    prefix: u8,
    node_ports: RangeInclusive<u16>,
}

impl Default for ServiceRanges {
    fn default() -> Self {
        Self { base: u32::from(Ipv4Addr::new(10, 96, 0, 0)), prefix: 12, node_ports: 30000..=32767 }
    }
}

impl ServiceRanges {
    /// Parse an IPv4 CIDR (`10.96.0.0/12`, at most /30) and a port range (`30000-32767`).
    pub fn parse(cidr: &str, node_ports: &str) -> std::result::Result<Self, String> {
        let (ip, len) = cidr.split_once('/').ok_or_else(|| format!("service CIDR {cidr:?} is not a CIDR"))?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| format!("service CIDR {cidr:?}: only IPv4 ranges are supported"))?;
        let prefix: u8 = len
            .parse()
            .ok()
            .filter(|p| (8..=30).contains(p))
            .ok_or_else(|| format!("service CIDR {cidr:?}: the prefix length must be between 8 and 30"))?;
        let mask = u32::MAX << (32 - prefix);
        let base = u32::from(ip) & mask;
        let (lo, hi) =
            node_ports.split_once('-').ok_or_else(|| format!("node port range {node_ports:?} is not LOW-HIGH"))?;
        let (lo, hi): (u16, u16) = match (lo.trim().parse(), hi.trim().parse()) {
            (Ok(lo), Ok(hi)) if lo > 0 && lo <= hi => (lo, hi),
            _ => return Err(format!("node port range {node_ports:?} is not LOW-HIGH with 0 < LOW <= HIGH")),
        };
        Ok(Self { base, prefix, node_ports: lo..=hi })
    }

    fn cidr(&self) -> String {
        format!("{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }

    /// Usable addresses: not the network or broadcast address.
    fn usable(&self) -> RangeInclusive<u32> {
        let size = 1u32 << (32 - self.prefix);
        self.base + 1..=self.base + size - 2
    }

    fn contains(&self, ip: &str) -> bool {
        ip.parse::<Ipv4Addr>().is_ok_and(|ip| self.usable().contains(&u32::from(ip)))
    }

    fn port_range(&self) -> String {
        format!("{}-{}", self.node_ports.start(), self.node_ports.end())
    }
}

fn ty(svc: &Value) -> &str {
    svc.pointer("/spec/type").and_then(Value::as_str).unwrap_or("ClusterIP")
}

fn cluster_ip(svc: &Value) -> &str {
    svc.pointer("/spec/clusterIPs/0")
        .or_else(|| svc.pointer("/spec/clusterIP"))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn needs_ip(svc: &Value) -> bool {
    ty(svc) != "ExternalName" && cluster_ip(svc) != "None"
}

fn needs_node_ports(svc: &Value) -> bool {
    match ty(svc) {
        "NodePort" => true,
        "LoadBalancer" => svc.pointer("/spec/allocateLoadBalancerNodePorts").and_then(Value::as_bool) != Some(false),
        _ => false,
    }
}

fn port_key(p: &Value) -> (i64, String) {
    (p["port"].as_i64().unwrap_or_default(), p["protocol"].as_str().unwrap_or("TCP").to_owned())
}

fn node_port(p: &Value) -> Option<u16> {
    p.get("nodePort").and_then(Value::as_u64).and_then(|n| u16::try_from(n).ok()).filter(|n| *n > 0)
}

/// The IPs and ports a stored Service holds.
fn held(svc: &Value) -> (Vec<String>, Vec<u16>) {
    let ip = cluster_ip(svc);
    let ips = if ip.is_empty() || ip == "None" { Vec::new() } else { vec![ip.to_owned()] };
    let mut ports: Vec<u16> =
        svc.pointer("/spec/ports").and_then(Value::as_array).into_iter().flatten().filter_map(node_port).collect();
    ports.sort_unstable();
    ports.dedup();
    (ips, ports)
}

/// Before admission of an update: keep the allocated values a client left out, and drop those the new
/// type no longer uses (Kubernetes' `patchAllocatedValues` and `dropTypeDependentFields`).
pub(super) fn prepare_update(candidate: &mut Value, old: &Value) {
    let Some(spec) = candidate.get_mut("spec").and_then(Value::as_object_mut) else { return };
    let old_ip = cluster_ip(old).to_owned();
    let new_type = spec.get("type").and_then(Value::as_str).unwrap_or("ClusterIP").to_owned();
    let ip_unset = spec.get("clusterIP").and_then(Value::as_str).is_none_or(str::is_empty)
        && spec.get("clusterIPs").and_then(Value::as_array).is_none_or(Vec::is_empty);
    if new_type == "ExternalName" {
        if spec.get("clusterIP").and_then(Value::as_str) == Some(old_ip.as_str()) {
            for k in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
                spec.remove(k);
            }
        }
    } else if ip_unset && !old_ip.is_empty() {
        for k in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
            if let Some(v) = old.pointer(&format!("/spec/{k}")) {
                spec.insert(k.into(), v.clone());
            }
        }
    }
    // Fields only external or LoadBalancer Services have go with the type, unless the client changed them.
    let external = matches!(new_type.as_str(), "NodePort" | "LoadBalancer")
        || spec.get("externalIPs").and_then(Value::as_array).is_some_and(|ips| !ips.is_empty());
    let mut dependent = Vec::new();
    if !external {
        dependent.push("externalTrafficPolicy");
    }
    if new_type != "LoadBalancer" {
        dependent.extend(["allocateLoadBalancerNodePorts", "loadBalancerClass", "healthCheckNodePort"]);
    }
    for k in dependent {
        if spec.contains_key(k) && spec.get(k) == old.pointer(&format!("/spec/{k}")) {
            spec.remove(k);
        }
    }
    let keep_ports = needs_node_ports(candidate);
    let old_ports: Vec<&Value> = old.pointer("/spec/ports").and_then(Value::as_array).into_iter().flatten().collect();
    let Some(ports) = candidate.pointer_mut("/spec/ports").and_then(Value::as_array_mut) else { return };
    for p in ports.iter_mut() {
        let previous = old_ports.iter().find(|o| port_key(o) == port_key(p)).and_then(|o| node_port(o));
        match (keep_ports, node_port(p), previous) {
            (true, None, Some(n)) => p["nodePort"] = n.into(),
            (false, Some(n), Some(o)) if n == o => {
                if let Some(m) = p.as_object_mut() {
                    m.remove("nodePort");
                }
            }
            _ => {}
        }
    }
}

impl Api {
    /// Make sure `default/kubernetes` exists as in Kubernetes: a ClusterIP Service on the range's first
    /// address, port 443 (`https`) → `port`, with Endpoints and an EndpointSlice naming `ip`. Pods reach
    /// the API server through it (in-cluster clients read `KUBERNETES_SERVICE_HOST`). A loopback `ip`
    /// cannot be an endpoint (pods could not reach it; validation refuses it, as in Kubernetes), so then
    /// only the Service is made.
    pub async fn ensure_kubernetes_service(&self, ip: std::net::IpAddr, port: u16) -> Result<()> {
        use super::write::{FieldValidation, Mode, Track, Update};
        let first = Ipv4Addr::from(*self.options.service_ranges.usable().start()).to_string();
        let lookup = |group: &str, version: &str, plural: &str| {
            self.table.lookup(group, version, plural).ok_or_else(|| ApiError::internal(format!("no {plural} resource")))
        };
        let labels = json!({"component": "apiserver", "provider": "kubernetes"});
        let service = json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kubernetes", "namespace": "default", "labels": labels},
            "spec": {"type": "ClusterIP", "clusterIP": first,
                "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]}});
        let family = if ip.is_ipv4() { "IPv4" } else { "IPv6" };
        let endpoints = json!({"apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
            "subsets": [{"addresses": [{"ip": ip.to_string()}], "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}]});
        let slice = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "kubernetes", "namespace": "default",
                "labels": {"kubernetes.io/service-name": "kubernetes", "endpointslice.kubernetes.io/managed-by": "ferry-apiserver"}},
            "addressType": family,
            "endpoints": [{"addresses": [ip.to_string()], "conditions": {"ready": true}}],
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}]});
        let mut objects = vec![(lookup("", "v1", "services")?, service, &["spec"][..])];
        if ip.is_loopback() {
            tracing::info!(%ip, "the advertise address is loopback: the kubernetes Service gets no endpoints");
        } else {
            objects.push((lookup("", "v1", "endpoints")?, endpoints, &["subsets"][..]));
            objects.push((
                lookup("discovery.k8s.io", "v1", "endpointslices")?,
                slice,
                &["addressType", "endpoints", "ports"][..],
            ));
        }
        for (res, obj, fields) in objects {
            match self
                .create_object(res, Some("default"), obj.clone(), FieldValidation::Strict, false, Track::Off)
                .await
            {
                Ok(_) => {}
                Err(e) if e.reason == "AlreadyExists" => {
                    if res.kind == "Service" {
                        continue; // its IP never changes; the port may be edited by users like any Service
                    }
                    let update = Update {
                        res,
                        namespace: Some("default"),
                        name: "kubernetes",
                        mode: Mode::Internal,
                        validation: FieldValidation::Ignore,
                        dry_run: false,
                        track: Track::Off,
                    };
                    self.update_loop(update, |cur| {
                        let mut next = cur.clone();
                        for f in fields {
                            next[*f] = obj[*f].clone();
                        }
                        Ok(next)
                    })
                    .await?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// After admission: allocate the ClusterIP and NodePorts `svc` needs and does not hold yet, and
    /// return the keys to claim and release with its write (`old`: the stored Service on update).
    pub(super) async fn allocate_service(
        &self,
        res: &ResourceInfo,
        name: &str,
        svc: &mut Value,
        old: Option<&Value>,
    ) -> Result<Allocation> {
        let ranges = &self.options.service_ranges;
        let owner = json!({"namespace": svc.pointer("/metadata/namespace"), "name": name}).to_string().into_bytes();
        let (old_ips, old_ports) = old.map(held).unwrap_or_default();
        let mut requested = Vec::new();
        let invalid = |e: FieldError| ApiError::invalid(res, name, vec![e]);

        if needs_ip(svc) {
            let ip = cluster_ip(svc).to_owned();
            if ip.is_empty() {
                let taken = self.taken(IP_PREFIX).await?;
                let usable = ranges.usable();
                // The first address is the `kubernetes` Service's.
                let (lo, hi) = (usable.start() + 1, *usable.end());
                let pick = pick_free(lo, hi, |n| taken.contains(&Ipv4Addr::from(n).to_string())).ok_or_else(|| {
                    ApiError::invalid(
                        res,
                        name,
                        vec![FieldError::internal("spec.clusterIPs", "failed to allocate a serviceIP: range is full")],
                    )
                })?;
                let ip = Ipv4Addr::from(pick).to_string();
                let spec = &mut svc["spec"];
                spec["clusterIP"] = Value::String(ip.clone());
                spec["clusterIPs"] = json!([ip]);
            } else if !old_ips.contains(&ip) {
                if !ranges.contains(&ip) {
                    return Err(invalid(FieldError::invalid(
                        "spec.clusterIPs[0]",
                        ip.as_str(),
                        format!(
                            "failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {}",
                            ranges.cidr()
                        ),
                    )));
                }
                requested.push((
                    format!("{IP_PREFIX}{ip}"),
                    FieldError::invalid(
                        "spec.clusterIPs[0]",
                        ip.clone(),
                        format!("failed to allocate IP {ip}: provided IP is already allocated"),
                    ),
                ));
            }
            let spec = &mut svc["spec"];
            if spec.get("ipFamilies").is_none() {
                spec["ipFamilies"] = json!(["IPv4"]);
            }
            if spec.get("ipFamilyPolicy").is_none() {
                spec["ipFamilyPolicy"] = json!("SingleStack");
            }
        }

        if needs_node_ports(svc) {
            let mut taken: Option<HashSet<String>> = None;
            let mut chosen: HashSet<u16> = HashSet::new();
            let count = svc.pointer("/spec/ports").and_then(Value::as_array).map_or(0, Vec::len);
            for i in 0..count {
                let port = &svc["spec"]["ports"][i];
                match node_port(port) {
                    Some(n) => {
                        chosen.insert(n);
                        if old_ports.contains(&n) {
                            continue;
                        }
                        let field = format!("spec.ports[{i}].nodePort");
                        if !ranges.node_ports.contains(&n) {
                            return Err(invalid(FieldError::invalid(
                                field,
                                n,
                                format!(
                                    "provided port is not in the valid range. The range of valid ports is {}",
                                    ranges.port_range()
                                ),
                            )));
                        }
                        requested.push((
                            format!("{PORT_PREFIX}{n}"),
                            FieldError::invalid(field, n, "provided port is already allocated"),
                        ));
                    }
                    None => {
                        if taken.is_none() {
                            taken = Some(self.taken(PORT_PREFIX).await?);
                        }
                        let held = taken.as_ref().map_or_else(HashSet::new, Clone::clone);
                        let (lo, hi) = (u32::from(*ranges.node_ports.start()), u32::from(*ranges.node_ports.end()));
                        let pick = pick_free(lo, hi, |n| {
                            let n = n as u16;
                            held.contains(&n.to_string()) || chosen.contains(&n)
                        })
                        .ok_or_else(|| {
                            ApiError::invalid(
                                res,
                                name,
                                vec![FieldError::internal(
                                    format!("spec.ports[{i}].nodePort"),
                                    "failed to allocate a nodePort: range is full",
                                )],
                            )
                        })?;
                        let n = pick as u16;
                        chosen.insert(n);
                        svc["spec"]["ports"][i]["nodePort"] = n.into();
                    }
                }
            }
        }

        let (ips, ports) = held(svc);
        let mut side = Side::default();
        side.claim.extend(
            ips.iter().filter(|ip| !old_ips.contains(ip)).map(|ip| (format!("{IP_PREFIX}{ip}"), owner.clone())),
        );
        side.claim.extend(
            ports.iter().filter(|p| !old_ports.contains(p)).map(|p| (format!("{PORT_PREFIX}{p}"), owner.clone())),
        );
        side.release.extend(old_ips.iter().filter(|ip| !ips.contains(ip)).map(|ip| format!("{IP_PREFIX}{ip}")));
        side.release.extend(old_ports.iter().filter(|p| !ports.contains(p)).map(|p| format!("{PORT_PREFIX}{p}")));
        Ok(Allocation { side, requested })
    }

    /// Names under an allocation prefix that are taken.
    async fn taken(&self, prefix: &str) -> Result<HashSet<String>> {
        let keys =
            self.store.keys(prefix).await.map_err(|e| ApiError::unavailable(format!("storage is unavailable: {e}")))?;
        Ok(keys.into_iter().filter_map(|k| k.strip_prefix(prefix).map(str::to_owned)).collect())
    }
}

/// What a Service's write claims and releases.
pub(super) struct Allocation {
    /// Keys to claim and release in the write's transaction.
    pub side: Side,
    /// Claims the client asked for by value, with the error to report if one is taken.
    requested: Vec<(String, FieldError)>,
}

impl Allocation {
    /// The error for a claim that lost: the client's requested value is taken (422), or `None` when a
    /// random pick collided and the write should be retried.
    pub(super) fn conflict(&self, res: &ResourceInfo, name: &str, key: &str) -> Option<ApiError> {
        self.requested.iter().find(|(k, _)| k == key).map(|(_, e)| ApiError::invalid(res, name, vec![e.clone()]))
    }
}

/// The keys a stored Service holds, to release when it goes.
pub(super) fn releases(svc: &Value) -> Side {
    let (ips, ports) = held(svc);
    let release = ips
        .iter()
        .map(|ip| format!("{IP_PREFIX}{ip}"))
        .chain(ports.iter().map(|p| format!("{PORT_PREFIX}{p}")))
        .collect();
    Side { release, ..Default::default() }
}

/// A random number in `lo..=hi` for which `taken` is false: random probes first, then a scan from a
/// random start, so a nearly full range still finds its last free value and a full one ends.
fn pick_free(lo: u32, hi: u32, taken: impl Fn(u32) -> bool) -> Option<u32> {
    if lo > hi {
        return None;
    }
    let mut rng = rand::rng();
    for _ in 0..32 {
        let n = rng.random_range(lo..=hi);
        if !taken(n) {
            return Some(n);
        }
    }
    let size = hi - lo + 1;
    let start = rng.random_range(0..size);
    (0..size).map(|i| lo + (start + i) % size).find(|n| !taken(*n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let r = ServiceRanges::parse("10.0.0.9/29", "30000-30002").expect("parse");
        assert_eq!(r.cidr(), "10.0.0.8/29");
        assert_eq!(r.usable(), u32::from(Ipv4Addr::new(10, 0, 0, 9))..=u32::from(Ipv4Addr::new(10, 0, 0, 14)));
        assert!(r.contains("10.0.0.14") && !r.contains("10.0.0.15") && !r.contains("10.0.0.8") && !r.contains("x"));
        for bad in [
            ("10.0.0.0", "1-2"),
            ("10.0.0.0/31", "1-2"),
            ("::/64", "1-2"),
            ("10.0.0.0/24", "5-1"),
            ("10.0.0.0/24", "0-1"),
        ] {
            assert!(ServiceRanges::parse(bad.0, bad.1).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn picks_the_last_free_value_and_stops_when_full() {
        assert_eq!(pick_free(1, 10, |n| n != 7), Some(7));
        assert_eq!(pick_free(1, 10, |_| true), None);
        assert_eq!(pick_free(5, 4, |_| false), None);
    }

    #[test]
    fn updates_keep_and_drop_allocated_values() {
        let old = json!({"spec": {"type": "NodePort", "clusterIP": "10.96.0.5", "clusterIPs": ["10.96.0.5"],
            "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080}]}});
        let mut new = json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}]}});
        prepare_update(&mut new, &old);
        assert_eq!(new["spec"]["clusterIP"], "10.96.0.5");
        assert_eq!(new["spec"]["ports"][0]["nodePort"], 30080);
        let mut to_cluster_ip = old.clone();
        to_cluster_ip["spec"]["type"] = json!("ClusterIP");
        prepare_update(&mut to_cluster_ip, &old);
        assert!(to_cluster_ip["spec"]["ports"][0].get("nodePort").is_none());
        assert_eq!(held(&old), (vec!["10.96.0.5".to_owned()], vec![30080]));
        assert_eq!(releases(&old).release.len(), 2);
    }
}
