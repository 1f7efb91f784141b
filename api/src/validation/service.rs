//! Service and Endpoints validation (`ValidateService`, `ValidateServiceUpdate`,
//! `ValidateEndpoints`).

use super::container::{one_of, validate_port_num_or_name, SUPPORTED_PROTOCOLS};
use super::meta::{validate_labels, validate_object_meta, validate_object_meta_update};
use super::names::{
    is_dns1123_label, is_dns1123_subdomain, is_qualified_name, is_valid_port_num, name_is_dns1035_label,
    name_is_dns1123_subdomain, INVALID_IP_ERROR,
};
use super::{go_string_slice, Raw};
use crate::FieldError;
use k8s_openapi::api::core::v1::{EndpointAddress, EndpointPort, Endpoints, Service, ServicePort, ServiceSpec};
use std::borrow::Cow;
use std::collections::HashSet;
use std::net::IpAddr;

const SERVICE_TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
/// Longest ClientIP session affinity timeout: one day.
const MAX_CLIENT_IP_AFFINITY_SECONDS: i32 = 86400;

/// Validates a Service on create or update.
pub(super) fn service(new: &Service, old: Option<&Service>) -> Vec<FieldError> {
    let mut errs = validate_object_meta(&new.metadata, true, name_is_dns1035_label, "metadata");
    let spec = new.spec.as_ref().map_or_else(|| Cow::Owned(ServiceSpec::default()), Cow::Borrowed);
    errs.extend(validate_service_spec(&spec));
    if let Some(old) = old {
        errs.extend(validate_object_meta_update(&new.metadata, &old.metadata, "metadata"));
        errs.extend(cluster_ip_immutable(&spec, old.spec.as_ref()));
    }
    errs
}

/// The primary cluster IP: `clusterIPs[0]`, else `clusterIP`.
fn primary_cluster_ip(spec: &ServiceSpec) -> &str {
    spec.cluster_ips.as_ref().and_then(|ips| ips.first()).or(spec.cluster_ip.as_ref()).map_or("", String::as_str)
}

fn is_headless(spec: &ServiceSpec) -> bool {
    primary_cluster_ip(spec) == "None"
}

fn service_type(spec: &ServiceSpec) -> &str {
    spec.type_.as_deref().unwrap_or_default()
}

/// Reachable from outside the cluster: NodePort, LoadBalancer, or ClusterIP with external IPs.
pub(crate) fn externally_accessible(spec: &ServiceSpec) -> bool {
    match service_type(spec) {
        "NodePort" | "LoadBalancer" => true,
        "ClusterIP" => spec.external_ips.as_ref().is_some_and(|ips| !ips.is_empty()),
        _ => false,
    }
}

fn validate_service_spec(spec: &ServiceSpec) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let ports = spec.ports.as_deref().unwrap_or_default();
    let ty = service_type(spec);
    if ports.is_empty() && !is_headless(spec) && ty != "ExternalName" {
        errs.push(FieldError::required("spec.ports", ""));
    }
    errs.extend(validate_type_specifics(spec));
    let mut names = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        errs.extend(validate_service_port(port, ports.len() > 1, &mut names, &format!("spec.ports[{i}]")));
    }
    if spec.selector.is_some() {
        errs.extend(validate_labels(spec.selector.as_ref(), "spec.selector"));
    }
    errs.extend(validate_session_affinity(spec));
    errs.extend(validate_cluster_ips(spec));
    for (i, ip) in spec.external_ips.iter().flatten().enumerate() {
        if ip.parse::<IpAddr>().is_err() {
            errs.push(FieldError::invalid(format!("spec.externalIPs[{i}]"), ip, INVALID_IP_ERROR));
        }
    }
    errs.extend(one_of(spec.type_.as_deref(), SERVICE_TYPES, "spec.type"));
    errs.extend(validate_node_ports(spec, ports));
    errs.extend(validate_duplicate_ports(ports));
    if spec.allocate_load_balancer_node_ports.is_some() && ty != "LoadBalancer" {
        errs.push(FieldError::forbidden(
            "spec.allocateLoadBalancerNodePorts",
            "may only be used when `type` is 'LoadBalancer'",
        ));
    }
    if spec.load_balancer_source_ranges.as_ref().is_some_and(|r| !r.is_empty()) && ty != "LoadBalancer" {
        errs.push(FieldError::forbidden(
            "spec.LoadBalancerSourceRanges",
            "may only be used when `type` is 'LoadBalancer'",
        ));
    }
    errs.extend(validate_traffic_policies(spec));
    errs
}

/// Headless LoadBalancer/NodePort services are invalid; ExternalName services need a DNS name
/// and no cluster IPs.
fn validate_type_specifics(spec: &ServiceSpec) -> Vec<FieldError> {
    let mut errs = Vec::new();
    match service_type(spec) {
        ty @ ("LoadBalancer" | "NodePort") if is_headless(spec) => {
            errs.push(FieldError::invalid(
                "spec.clusterIPs[0]",
                "None",
                format!("may not be set to 'None' for {ty} services"),
            ));
        }
        "ExternalName" => {
            if !primary_cluster_ip(spec).is_empty() {
                errs.push(FieldError::forbidden("spec.clusterIPs", "may not be set for ExternalName services"));
            }
            if spec.ip_families.as_ref().is_some_and(|f| !f.is_empty()) {
                errs.push(FieldError::forbidden("spec.ipFamilies", "may not be set for ExternalName services"));
            }
            if spec.ip_family_policy.is_some() {
                errs.push(FieldError::forbidden("spec.ipFamilyPolicy", "may not be set for ExternalName services"));
            }
            let name = spec.external_name.as_deref().unwrap_or_default();
            let cname = name.strip_suffix('.').unwrap_or(name);
            if cname.is_empty() {
                errs.push(FieldError::required("spec.externalName", ""));
            } else {
                errs.extend(
                    is_dns1123_subdomain(cname).into_iter().map(|m| FieldError::invalid("spec.externalName", cname, m)),
                );
            }
        }
        _ => {}
    }
    errs
}

/// One service port: name (required when there are several, unique DNS label), port number,
/// protocol, target port and appProtocol.
fn validate_service_port<'a>(
    port: &'a ServicePort,
    require_name: bool,
    names: &mut HashSet<&'a str>,
    path: &str,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = port.name.as_deref().unwrap_or_default();
    if require_name && name.is_empty() {
        errs.push(FieldError::required(format!("{path}.name"), ""));
    } else if !name.is_empty() {
        errs.extend(is_dns1123_label(name).into_iter().map(|m| FieldError::invalid(format!("{path}.name"), name, m)));
        if !names.insert(name) {
            errs.push(FieldError::duplicate(format!("{path}.name"), name));
        }
    }
    errs.extend(
        is_valid_port_num(port.port.into())
            .into_iter()
            .map(|m| FieldError::invalid(format!("{path}.port"), port.port, m)),
    );
    errs.extend(one_of(port.protocol.as_deref(), SUPPORTED_PROTOCOLS, &format!("{path}.protocol")));
    if let Some(target) = &port.target_port {
        errs.extend(validate_port_num_or_name(target, &format!("{path}.targetPort")));
    }
    if let Some(app_protocol) = &port.app_protocol {
        let p = format!("{path}.appProtocol");
        errs.extend(is_qualified_name(app_protocol).into_iter().map(|m| FieldError::invalid(&p, app_protocol, m)));
    }
    errs
}

fn validate_session_affinity(spec: &ServiceSpec) -> Vec<FieldError> {
    let affinity = spec.session_affinity.as_deref();
    let mut errs: Vec<FieldError> =
        one_of(affinity, &["ClientIP", "None"], "spec.sessionAffinity").into_iter().collect();
    let config_path = "spec.sessionAffinityConfig";
    match affinity {
        Some("ClientIP") => {
            let required = "when session affinity type is ClientIP";
            let client_ip = spec.session_affinity_config.as_ref().and_then(|c| c.client_ip.as_ref());
            match (spec.session_affinity_config.as_ref(), client_ip, client_ip.and_then(|c| c.timeout_seconds)) {
                (None, _, _) => errs.push(FieldError::required(config_path, required)),
                (Some(_), None, _) => errs.push(FieldError::required(format!("{config_path}.clientIP"), required)),
                (_, Some(_), None) => {
                    errs.push(FieldError::required(format!("{config_path}.clientIP.timeoutSeconds"), required))
                }
                (_, _, Some(t)) if t <= 0 || t > MAX_CLIENT_IP_AFFINITY_SECONDS => errs.push(FieldError::invalid(
                    format!("{config_path}.clientIP.timeoutSeconds"),
                    t,
                    format!("must be greater than 0 and less than {MAX_CLIENT_IP_AFFINITY_SECONDS}"),
                )),
                _ => {}
            }
        }
        Some("None") if spec.session_affinity_config.is_some() => {
            errs.push(FieldError::forbidden(config_path, "must not be set when session affinity is None"));
        }
        _ => {}
    }
    errs
}

/// Cluster IPs are IPs (or `None`), at most two, and `clusterIPs[0]` agrees with `clusterIP`.
fn validate_cluster_ips(spec: &ServiceSpec) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let cluster_ip = spec.cluster_ip.as_deref().unwrap_or_default();
    let cluster_ips = spec.cluster_ips.as_deref().unwrap_or_default();
    if !cluster_ip.is_empty() && cluster_ip != "None" && cluster_ip.parse::<IpAddr>().is_err() {
        errs.push(FieldError::invalid("spec.clusterIP", cluster_ip, INVALID_IP_ERROR));
    }
    if let Some(first) = cluster_ips.first() {
        if !cluster_ip.is_empty() && first != cluster_ip {
            errs.push(FieldError::invalid(
                "spec.clusterIPs",
                go_string_slice(cluster_ips),
                "first value must match `clusterIP`",
            ));
        }
    }
    if cluster_ips.len() > 2 {
        errs.push(FieldError::invalid("spec.clusterIPs", go_string_slice(cluster_ips), "may only hold up to 2 values"));
    }
    for (i, ip) in cluster_ips.iter().enumerate() {
        let none_ok = i == 0 && cluster_ips.len() == 1;
        if !(ip == "None" && none_ok) && ip.parse::<IpAddr>().is_err() {
            errs.push(FieldError::invalid(format!("spec.clusterIPs[{i}]"), ip, INVALID_IP_ERROR));
        }
    }
    errs
}

/// Node ports are only for NodePort/LoadBalancer services and are unique per protocol.
fn validate_node_ports(spec: &ServiceSpec, ports: &[ServicePort]) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut seen = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let Some(node_port) = port.node_port.filter(|p| *p != 0) else { continue };
        let path = format!("spec.ports[{i}].nodePort");
        if service_type(spec) == "ClusterIP" {
            errs.push(FieldError::forbidden(&path, "may not be used when `type` is 'ClusterIP'"));
        }
        errs.extend(is_valid_port_num(node_port.into()).into_iter().map(|m| FieldError::invalid(&path, node_port, m)));
        if !seen.insert((port.protocol.as_deref().unwrap_or_default(), node_port)) {
            errs.push(FieldError::duplicate(&path, node_port));
        }
    }
    errs
}

/// (protocol, port) pairs are unique.
fn validate_duplicate_ports(ports: &[ServicePort]) -> Vec<FieldError> {
    let mut seen = HashSet::new();
    let mut errs = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let protocol = port.protocol.as_deref().unwrap_or_default();
        if !seen.insert((protocol, port.port)) {
            let value = Raw(format!("core.ServicePort{{Name:\"\", Protocol:{protocol:?}, Port:{}}}", port.port));
            errs.push(FieldError::duplicate(format!("spec.ports[{i}]"), value));
        }
    }
    errs
}

/// externalTrafficPolicy only (and always) for externally accessible services; internal
/// traffic policy always for ClusterIP/NodePort/LoadBalancer; trafficDistribution known.
fn validate_traffic_policies(spec: &ServiceSpec) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let external = spec.external_traffic_policy.as_deref().unwrap_or_default();
    if externally_accessible(spec) {
        errs.extend(one_of(Some(external), &["Cluster", "Local"], "spec.externalTrafficPolicy"));
    } else if !external.is_empty() {
        errs.push(FieldError::invalid(
            "spec.externalTrafficPolicy",
            external,
            "may only be set for externally-accessible services",
        ));
    }
    let needs_health_check = service_type(spec) == "LoadBalancer" && external == "Local";
    let health_port = spec.health_check_node_port.unwrap_or(0);
    if !needs_health_check && health_port != 0 {
        errs.push(FieldError::invalid(
            "spec.healthCheckNodePort",
            health_port,
            "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'",
        ));
    }
    match spec.internal_traffic_policy.as_deref() {
        None if matches!(service_type(spec), "ClusterIP" | "NodePort" | "LoadBalancer") => {
            errs.push(FieldError::required("spec.internalTrafficPolicy", ""));
        }
        Some(policy) if !matches!(policy, "Cluster" | "Local") => {
            errs.push(FieldError::not_supported("spec.internalTrafficPolicy", policy, &["Cluster", "Local"]));
        }
        _ => {}
    }
    if let Some(distribution) = spec.traffic_distribution.as_deref() {
        const DISTRIBUTIONS: &[&str] = &["PreferClose", "PreferSameNode", "PreferSameZone"];
        if !DISTRIBUTIONS.contains(&distribution) {
            errs.push(FieldError::not_supported("spec.trafficDistribution", distribution, DISTRIBUTIONS));
        }
    }
    errs
}

/// Once set, the primary cluster IP may not change (allocation and clearing are the API
/// server's business; changes to or from ExternalName are allowed).
fn cluster_ip_immutable(new: &ServiceSpec, old: Option<&ServiceSpec>) -> Option<FieldError> {
    let old = old?;
    if service_type(new) == "ExternalName" || service_type(old) == "ExternalName" {
        return None;
    }
    let (new_ip, old_ip) = (primary_cluster_ip(new), primary_cluster_ip(old));
    (!old_ip.is_empty() && !new_ip.is_empty() && new_ip != old_ip).then(|| {
        let ips = new.cluster_ips.clone().unwrap_or_else(|| vec![new_ip.to_string()]);
        FieldError::invalid("spec.clusterIPs[0]", go_string_slice(&ips), "may not change once set")
    })
}

/// Validates Endpoints: metadata and each subset's addresses and ports.
pub(super) fn endpoints(new: &Endpoints, old: Option<&Endpoints>) -> Vec<FieldError> {
    let mut errs = validate_object_meta(&new.metadata, true, name_is_dns1123_subdomain, "metadata");
    for (i, subset) in new.subsets.iter().flatten().enumerate() {
        let s_path = format!("subsets[{i}]");
        let addresses = subset.addresses.as_deref().unwrap_or_default();
        let not_ready = subset.not_ready_addresses.as_deref().unwrap_or_default();
        if addresses.is_empty() && not_ready.is_empty() {
            errs.push(FieldError::required(&s_path, "must specify `addresses` or `notReadyAddresses`"));
        }
        for (j, address) in addresses.iter().enumerate() {
            errs.extend(validate_endpoint_address(address, &format!("{s_path}.addresses[{j}]")));
        }
        for (j, address) in not_ready.iter().enumerate() {
            errs.extend(validate_endpoint_address(address, &format!("{s_path}.notReadyAddresses[{j}]")));
        }
        let ports = subset.ports.as_deref().unwrap_or_default();
        for (j, port) in ports.iter().enumerate() {
            errs.extend(validate_endpoint_port(port, ports.len() > 1, &format!("{s_path}.ports[{j}]")));
        }
    }
    if let Some(old) = old {
        errs.extend(validate_object_meta_update(&new.metadata, &old.metadata, "metadata"));
    }
    errs
}

/// An endpoint IP must be a real unicast address: not unspecified, loopback or link-local.
fn validate_endpoint_address(address: &EndpointAddress, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let ip_path = format!("{path}.ip");
    match address.ip.parse::<IpAddr>() {
        Err(_) => errs.push(FieldError::invalid(&ip_path, &address.ip, INVALID_IP_ERROR)),
        Ok(ip) => errs.extend(
            special_ip_problems(ip, &address.ip).into_iter().map(|m| FieldError::invalid(&ip_path, &address.ip, m)),
        ),
    }
    if let Some(hostname) = address.hostname.as_deref().filter(|h| !h.is_empty()) {
        let p = format!("{path}.hostname");
        errs.extend(is_dns1123_label(hostname).into_iter().map(|m| FieldError::invalid(&p, hostname, m)));
    }
    if let Some(node) = address.node_name.as_deref() {
        let p = format!("{path}.nodeName");
        errs.extend(is_dns1123_subdomain(node).into_iter().map(|m| FieldError::invalid(&p, node, m)));
    }
    errs
}

/// Why `ip` (written as `text`) cannot be an endpoint.
fn special_ip_problems(ip: IpAddr, text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if ip.is_unspecified() {
        problems.push(format!("may not be unspecified ({text})"));
    }
    if ip.is_loopback() {
        problems.push("may not be in the loopback range (127.0.0.0/8, ::1/128)".to_string());
    }
    let (link_local, link_local_multicast) = match ip {
        IpAddr::V4(v4) => (v4.is_link_local(), v4.octets()[..3] == [224, 0, 0]),
        IpAddr::V6(v6) => ((v6.segments()[0] & 0xffc0) == 0xfe80, (v6.segments()[0] & 0xff0f) == 0xff02),
    };
    if link_local {
        problems.push("may not be in the link-local range (169.254.0.0/16, fe80::/10)".to_string());
    }
    if link_local_multicast {
        problems.push("may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)".to_string());
    }
    problems
}

fn validate_endpoint_port(port: &EndpointPort, require_name: bool, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = port.name.as_deref().unwrap_or_default();
    if require_name && name.is_empty() {
        errs.push(FieldError::required(format!("{path}.name"), ""));
    } else if !name.is_empty() {
        errs.extend(is_dns1123_label(name).into_iter().map(|m| FieldError::invalid(format!("{path}.name"), name, m)));
    }
    errs.extend(
        is_valid_port_num(port.port.into())
            .into_iter()
            .map(|m| FieldError::invalid(format!("{path}.port"), port.port, m)),
    );
    errs.extend(one_of(port.protocol.as_deref(), SUPPORTED_PROTOCOLS, &format!("{path}.protocol")));
    if let Some(app_protocol) = &port.app_protocol {
        let p = format!("{path}.appProtocol");
        errs.extend(is_qualified_name(app_protocol).into_iter().map(|m| FieldError::invalid(&p, app_protocol, m)));
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CauseType;
    use serde_json::{json, Value};

    /// A Service as it looks after defaulting, with `spec` merged over the defaults.
    fn svc(spec: Value) -> Service {
        let mut base = json!({
            "type": "ClusterIP", "sessionAffinity": "None", "internalTrafficPolicy": "Cluster",
            "selector": {"app": "web"}, "ports": [{"port": 80, "protocol": "TCP", "targetPort": 8080}]
        });
        if let (Some(b), Some(s)) = (base.as_object_mut(), spec.as_object()) {
            b.extend(s.clone());
        }
        serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "default"}, "spec": base})).unwrap()
    }

    fn fields(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(|e| format!("{} {:?}", e.field, e.cause)).collect()
    }

    #[test]
    fn valid_services() {
        assert!(service(&svc(json!({})), None).is_empty());
        assert!(service(&svc(json!({"clusterIP": "None", "ports": null})), None).is_empty());
        let node_port = json!({"type": "NodePort", "externalTrafficPolicy": "Cluster",
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http", "nodePort": 30080},
                      {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53}]});
        assert!(service(&svc(node_port), None).is_empty());
        let lb = json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local", "healthCheckNodePort": 32000,
            "allocateLoadBalancerNodePorts": true, "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"]});
        assert!(service(&svc(lb), None).is_empty());
        let ext = json!({"type": "ExternalName", "externalName": "db.example.com.", "ports": null, "internalTrafficPolicy": null});
        assert!(service(&svc(ext), None).is_empty());
        let affinity =
            json!({"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 10800}}});
        assert!(service(&svc(affinity), None).is_empty());
    }

    #[test]
    fn name_must_be_dns1035() {
        let mut s = svc(json!({}));
        s.metadata.name = Some("1web".into());
        assert_eq!(fields(&service(&s, None)), ["metadata.name Invalid"]);
    }

    #[test]
    fn ports() {
        assert_eq!(fields(&service(&svc(json!({"ports": []})), None)), ["spec.ports Required"]);
        let errs = service(
            &svc(json!({"ports": [
                {"port": 0, "protocol": "ICMP", "targetPort": 0},
                {"name": "Web", "port": 80, "protocol": "TCP", "targetPort": "Bad--"},
                {"name": "a", "port": 80, "protocol": "TCP", "nodePort": 30000, "appProtocol": "a/b/c"},
                {"name": "a", "port": 81, "protocol": "TCP"}
            ]})),
            None,
        );
        assert_eq!(
            fields(&errs),
            [
                "spec.ports[0].name Required",
                "spec.ports[0].port Invalid",
                "spec.ports[0].protocol NotSupported",
                "spec.ports[0].targetPort Invalid",
                "spec.ports[1].name Invalid",
                "spec.ports[1].targetPort Invalid",
                "spec.ports[1].targetPort Invalid",
                "spec.ports[1].targetPort Invalid",
                "spec.ports[2].appProtocol Invalid",
                "spec.ports[3].name Duplicate",
                "spec.ports[2].nodePort Forbidden",
                "spec.ports[2] Duplicate",
            ]
        );
        assert_eq!(
            errs[2].to_string(),
            "spec.ports[0].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\""
        );
        assert_eq!(errs[11].value.as_deref(), Some("core.ServicePort{Name:\"\", Protocol:\"TCP\", Port:80}"));
    }

    #[test]
    fn types_and_policies() {
        let errs = service(&svc(json!({"type": "Magic"})), None);
        assert_eq!(errs[0].to_string(), "spec.type: Unsupported value: \"Magic\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"");
        let errs = service(&svc(json!({"type": "NodePort", "clusterIP": "None"})), None);
        assert_eq!(fields(&errs), ["spec.clusterIPs[0] Invalid", "spec.externalTrafficPolicy Required"]);
        let errs = service(
            &svc(
                json!({"type": "ExternalName", "externalName": "", "clusterIP": "10.0.0.1", "internalTrafficPolicy": null}),
            ),
            None,
        );
        assert_eq!(fields(&errs), ["spec.clusterIPs Forbidden", "spec.externalName Required"]);
        let errs = service(
            &svc(
                json!({"externalTrafficPolicy": "Local", "internalTrafficPolicy": "Nearby", "healthCheckNodePort": 3}),
            ),
            None,
        );
        assert_eq!(
            fields(&errs),
            [
                "spec.externalTrafficPolicy Invalid",
                "spec.healthCheckNodePort Invalid",
                "spec.internalTrafficPolicy NotSupported"
            ]
        );
        let errs = service(&svc(json!({"internalTrafficPolicy": null, "allocateLoadBalancerNodePorts": true})), None);
        assert_eq!(
            fields(&errs),
            ["spec.allocateLoadBalancerNodePorts Forbidden", "spec.internalTrafficPolicy Required"]
        );
        let errs = service(&svc(json!({"sessionAffinity": "Sticky"})), None);
        assert_eq!(errs[0].cause, CauseType::NotSupported);
        let errs = service(
            &svc(json!({"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 0}}})),
            None,
        );
        assert_eq!(errs[0].detail, "must be greater than 0 and less than 86400");
        let errs = service(&svc(json!({"sessionAffinityConfig": {}})), None);
        assert_eq!(
            errs[0].to_string(),
            "spec.sessionAffinityConfig: Forbidden: must not be set when session affinity is None"
        );
    }

    #[test]
    fn cluster_ips() {
        let errs = service(
            &svc(json!({"clusterIP": "10.0.0.300", "clusterIPs": ["10.0.0.1"], "externalIPs": ["nope"]})),
            None,
        );
        assert_eq!(
            fields(&errs),
            [
                "spec.clusterIP Invalid",
                "spec.clusterIPs Invalid",
                "spec.externalIPs[0] Invalid",
                "spec.externalTrafficPolicy Required"
            ]
        );
        let old = svc(json!({"clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.1"]}));
        let same = old.clone();
        assert!(service(&same, Some(&old)).is_empty());
        let cleared = svc(json!({}));
        assert!(service(&cleared, Some(&old)).is_empty());
        let moved = svc(json!({"clusterIP": "10.0.0.2", "clusterIPs": ["10.0.0.2"]}));
        let errs = service(&moved, Some(&old));
        assert_eq!(
            errs[0].to_string(),
            "spec.clusterIPs[0]: Invalid value: []string{\"10.0.0.2\"}: may not change once set"
        );
        let to_external =
            svc(json!({"type": "ExternalName", "externalName": "x.example", "internalTrafficPolicy": null}));
        assert!(service(&to_external, Some(&old)).is_empty());
    }

    #[test]
    fn endpoints_rules() {
        let ep = |subsets: Value| -> Endpoints {
            serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "default"}, "subsets": subsets}))
                .unwrap()
        };
        let ok = ep(json!([{"addresses": [{"ip": "10.244.1.5", "nodeName": "n1", "hostname": "web-0"}],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}, {"name": "dns", "port": 53, "protocol": "UDP"}]}]));
        assert!(endpoints(&ok, None).is_empty());
        assert!(endpoints(&ep(json!(null)), None).is_empty());
        let bad = ep(json!([
            {"ports": [{"port": 0, "protocol": "TCP"}]},
            {"addresses": [{"ip": "127.0.0.1"}, {"ip": "x"}, {"ip": "169.254.1.1", "hostname": "A"}],
             "notReadyAddresses": [{"ip": "0.0.0.0"}],
             "ports": [{"port": 80, "protocol": "TCP"}, {"name": "b", "port": 81, "protocol": "ICMP"}]}
        ]));
        assert_eq!(
            fields(&endpoints(&bad, None)),
            [
                "subsets[0] Required",
                "subsets[0].ports[0].port Invalid",
                "subsets[1].addresses[0].ip Invalid",
                "subsets[1].addresses[1].ip Invalid",
                "subsets[1].addresses[2].ip Invalid",
                "subsets[1].addresses[2].hostname Invalid",
                "subsets[1].notReadyAddresses[0].ip Invalid",
                "subsets[1].ports[0].name Required",
                "subsets[1].ports[1].protocol NotSupported",
            ]
        );
        let errs = endpoints(&bad, None);
        assert_eq!(errs[2].detail, "may not be in the loopback range (127.0.0.0/8, ::1/128)");
        assert_eq!(errs[6].detail, "may not be unspecified (0.0.0.0)");
        assert!(special_ip_problems("fe80::1".parse().unwrap(), "fe80::1")[0].contains("link-local range"));
        assert!(special_ip_problems("ff02::1".parse().unwrap(), "ff02::1")[0].contains("multicast"));
        assert!(special_ip_problems("224.0.0.5".parse().unwrap(), "224.0.0.5")[0].contains("multicast"));
    }
}
