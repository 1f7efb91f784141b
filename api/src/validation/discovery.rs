//! EndpointSlice validation (`pkg/apis/discovery/validation`).

use super::container::SUPPORTED_PROTOCOLS;
use super::meta::{validate_label_name, validate_object_meta, validate_object_meta_update};
use super::names::{is_dns1123_label, is_dns1123_subdomain, is_qualified_name, name_is_dns1123_subdomain};
use crate::FieldError;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};
use std::collections::HashSet;
use std::net::IpAddr;

const ADDRESS_TYPES: &[&str] = &["FQDN", "IPv4", "IPv6"];
const MAX_ENDPOINTS: usize = 1000;
const MAX_ADDRESSES: usize = 100;
const MAX_PORTS: usize = 20000;

/// Validates an EndpointSlice on create or update; `addressType` is immutable.
pub(super) fn endpoint_slice(new: &EndpointSlice, old: Option<&EndpointSlice>) -> Vec<FieldError> {
    let mut errs = validate_object_meta(&new.metadata, true, name_is_dns1123_subdomain, "metadata");
    let address_type = new.address_type.as_str();
    if address_type.is_empty() {
        errs.push(FieldError::required("addressType", ""));
    } else if !ADDRESS_TYPES.contains(&address_type) {
        errs.push(FieldError::not_supported("addressType", address_type, ADDRESS_TYPES));
    }
    let endpoints = new.endpoints.as_deref().unwrap_or_default();
    if endpoints.len() > MAX_ENDPOINTS {
        errs.push(FieldError::too_many("endpoints", endpoints.len(), MAX_ENDPOINTS));
    }
    for (i, e) in endpoints.iter().enumerate() {
        errs.extend(validate_endpoint(e, address_type, &format!("endpoints[{i}]")));
    }
    let ports = new.ports.as_deref().unwrap_or_default();
    if ports.len() > MAX_PORTS {
        errs.push(FieldError::too_many("ports", ports.len(), MAX_PORTS));
    }
    let mut names = HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        errs.extend(validate_port(p, &format!("ports[{i}]"), &mut names));
    }
    if let Some(old) = old {
        errs.extend(validate_object_meta_update(&new.metadata, &old.metadata, "metadata"));
        if new.address_type != old.address_type {
            errs.push(FieldError::invalid("addressType", new.address_type.as_str(), "field is immutable"));
        }
    }
    errs
}

fn validate_endpoint(e: &Endpoint, address_type: &str, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let field = format!("{path}.addresses");
    if e.addresses.is_empty() {
        errs.push(FieldError::required(&field, "must contain at least 1 address"));
    } else if e.addresses.len() > MAX_ADDRESSES {
        errs.push(FieldError::too_many(&field, e.addresses.len(), MAX_ADDRESSES));
    }
    for (i, a) in e.addresses.iter().enumerate() {
        let at = format!("{field}[{i}]");
        let problems: Vec<String> = match address_type {
            "IPv4" => match a.parse::<IpAddr>() {
                Ok(IpAddr::V4(_)) => Vec::new(),
                _ => vec!["must be a valid IPv4 address".into()],
            },
            "IPv6" => match a.parse::<IpAddr>() {
                Ok(IpAddr::V6(_)) => Vec::new(),
                _ => vec!["must be a valid IPv6 address".into()],
            },
            "FQDN" => is_dns1123_subdomain(a),
            _ => Vec::new(),
        };
        errs.extend(problems.into_iter().map(|p| FieldError::invalid(&at, a.as_str(), p)));
    }
    if let Some(h) = e.hostname.as_deref() {
        for p in is_dns1123_label(h) {
            errs.push(FieldError::invalid(format!("{path}.hostname"), h, p));
        }
    }
    if let Some(n) = e.node_name.as_deref() {
        for p in is_dns1123_subdomain(n) {
            errs.push(FieldError::invalid(format!("{path}.nodeName"), n, p));
        }
    }
    for (k, v) in e.deprecated_topology.iter().flatten() {
        errs.extend(validate_label_name(k, &format!("{path}.deprecatedTopology")));
        if v.len() > 63 {
            errs.push(FieldError::invalid(
                format!("{path}.deprecatedTopology"),
                v.as_str(),
                "must be no more than 63 characters",
            ));
        }
    }
    errs
}

fn validate_port(p: &EndpointPort, path: &str, names: &mut HashSet<String>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = p.name.as_deref().unwrap_or_default();
    if !name.is_empty() {
        for problem in is_dns1123_label(name) {
            errs.push(FieldError::invalid(format!("{path}.name"), name, problem));
        }
    }
    if !names.insert(name.to_owned()) {
        errs.push(FieldError::duplicate(format!("{path}.name"), name));
    }
    match p.protocol.as_deref() {
        None => errs.push(FieldError::required(format!("{path}.protocol"), "")),
        Some(proto) if !SUPPORTED_PROTOCOLS.contains(&proto) => {
            errs.push(FieldError::not_supported(format!("{path}.protocol"), proto, SUPPORTED_PROTOCOLS))
        }
        _ => {}
    }
    if let Some(port) = p.port {
        if !(0..=65535).contains(&port) {
            errs.push(FieldError::invalid(format!("{path}.port"), port, "must be between 0 and 65535, inclusive"));
        }
    }
    if let Some(ap) = p.app_protocol.as_deref() {
        for problem in is_qualified_name(ap) {
            errs.push(FieldError::invalid(format!("{path}.appProtocol"), ap, problem));
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn slice(v: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(v).expect("slice")
    }

    #[test]
    fn valid_and_invalid_slices() {
        let ok = slice(json!({"metadata": {"name": "web-abc", "namespace": "default"}, "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": true}, "nodeName": "n1"}],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}));
        assert!(endpoint_slice(&ok, None).is_empty(), "{:?}", endpoint_slice(&ok, None));
        let bad = slice(json!({"metadata": {"name": "web-abc", "namespace": "default"}, "addressType": "IPv4",
            "endpoints": [{"addresses": ["fd00::1"]}, {"addresses": []}],
            "ports": [{"name": "Http", "port": 70000, "protocol": "TCP"}, {"name": "Http", "protocol": "ICMP"}]}));
        let errs: Vec<String> = endpoint_slice(&bad, None).iter().map(ToString::to_string).collect();
        for want in [
            "endpoints[0].addresses[0]: Invalid value: \"fd00::1\": must be a valid IPv4 address",
            "endpoints[1].addresses: Required value: must contain at least 1 address",
            "ports[0].port: Invalid value: 70000: must be between 0 and 65535, inclusive",
            "ports[1].name: Duplicate value: \"Http\"",
            "ports[1].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
        ] {
            assert!(errs.iter().any(|e| e == want), "{want} not in {errs:#?}");
        }
        let mut changed = ok.clone();
        changed.address_type = "IPv6".into();
        changed.endpoints = None;
        let errs: Vec<String> = endpoint_slice(&changed, Some(&ok)).iter().map(ToString::to_string).collect();
        assert_eq!(errs, ["addressType: Invalid value: \"IPv6\": field is immutable"]);
    }
}
