//! Container validation: names, images, ports, env, volume mounts, resources, probes and
//! lifecycle handlers (`validateContainers`, `validateInitContainers` and friends).

use super::meta::validate_label_name;
use super::names::{
    inclusive_range_error, is_config_map_key, is_dns1123_label, is_env_var_name, is_http_header_name,
    is_qualified_name, is_valid_port_name, is_valid_port_num, name_is_dns1123_subdomain,
};
use super::quantity::{parse_quantity, Quantity, QUANTITY_FORMAT_ERROR};
use super::volume::{local_descending_path, referenced_name, Volumes};
use super::{int_or_string, non_negative, IS_NEGATIVE_ERROR};
use crate::FieldError;
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvFromSource, EnvVar, HTTPGetAction, Lifecycle, LifecycleHandler, ObjectFieldSelector,
    Probe, ResourceRequirements, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as QuantityString;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::{BTreeMap, HashSet};

/// Protocols a port may use, sorted as Kubernetes lists them.
pub(super) const SUPPORTED_PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];

/// Field paths a downward-API env var may reference (besides subscripted labels/annotations).
const ENV_FIELD_PATHS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
];

/// Container resources a downward-API env var may reference (besides hugepages).
const ENV_RESOURCE_FIELDS: &[&str] = &[
    "limits.cpu",
    "limits.ephemeral-storage",
    "limits.memory",
    "requests.cpu",
    "requests.ephemeral-storage",
    "requests.memory",
];

const PROBE_SET_ON_INIT: &str = "may not be set for init containers without restartPolicy=Always";

/// Validates the regular containers of a pod spec.
pub(super) fn validate_containers(
    containers: &[Container],
    volumes: &Volumes<'_>,
    grace_period: Option<i64>,
    path: &str,
) -> Vec<FieldError> {
    if containers.is_empty() {
        return vec![FieldError::required(path, "")];
    }
    let mut errs = Vec::new();
    let mut names = HashSet::new();
    for (i, c) in containers.iter().enumerate() {
        let c_path = format!("{path}[{i}]");
        errs.extend(validate_container_common(c, volumes, &c_path));
        if !names.insert(c.name.as_str()) {
            errs.push(FieldError::duplicate(format!("{c_path}.name"), &c.name));
        }
        errs.extend(validate_probes_and_lifecycle(c, grace_period, &c_path));
        if c.restart_policy.is_some() {
            errs.push(FieldError::forbidden(
                format!("{c_path}.restartPolicy"),
                "may not be set for non-init containers",
            ));
        }
    }
    errs.extend(host_port_conflicts(containers.iter().enumerate(), path));
    errs
}

/// Validates init containers; names must be unique across init and regular containers. Only
/// restartable ("sidecar") init containers may have probes and lifecycle hooks.
pub(super) fn validate_init_containers(
    init_containers: &[Container],
    containers: &[Container],
    volumes: &Volumes<'_>,
    grace_period: Option<i64>,
    path: &str,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut names: HashSet<&str> = containers.iter().map(|c| c.name.as_str()).collect();
    for (i, c) in init_containers.iter().enumerate() {
        let c_path = format!("{path}[{i}]");
        errs.extend(validate_container_common(c, volumes, &c_path));
        let restart_always = match c.restart_policy.as_deref() {
            None => false,
            Some("Always") => true,
            Some(other) => {
                errs.push(FieldError::not_supported(format!("{c_path}.restartPolicy"), other, &["Always"]));
                false
            }
        };
        if names.contains(c.name.as_str()) {
            errs.push(FieldError::duplicate(format!("{c_path}.name"), &c.name));
        } else if !c.name.is_empty() {
            names.insert(c.name.as_str());
        }
        errs.extend(host_port_conflicts(std::iter::once((i, c)), path));
        if restart_always {
            errs.extend(validate_probes_and_lifecycle(c, grace_period, &c_path));
        } else {
            let forbidden = [
                ("lifecycle", c.lifecycle.is_some()),
                ("livenessProbe", c.liveness_probe.is_some()),
                ("readinessProbe", c.readiness_probe.is_some()),
                ("startupProbe", c.startup_probe.is_some()),
            ];
            for (field, _) in forbidden.iter().filter(|(_, set)| *set) {
                errs.push(FieldError::forbidden(format!("{c_path}.{field}"), PROBE_SET_ON_INIT));
            }
        }
    }
    errs
}

/// Pod-only (not template) container checks: no whitespace around the image.
pub(super) fn validate_containers_only_for_pod(containers: &[Container], path: &str) -> Vec<FieldError> {
    containers
        .iter()
        .enumerate()
        .filter_map(|(i, c)| {
            let image = c.image.as_deref().unwrap_or_default();
            (image.trim() != image).then(|| {
                FieldError::invalid(format!("{path}[{i}].image"), image, "must not have leading or trailing whitespace")
            })
        })
        .collect()
}

/// Checks shared by all containers: name, image, termination message policy, ports, env,
/// volume mounts, pull policy and resources.
fn validate_container_common(c: &Container, volumes: &Volumes<'_>, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name_path = format!("{path}.name");
    if c.name.is_empty() {
        errs.push(FieldError::required(&name_path, ""));
    } else {
        errs.extend(is_dns1123_label(&c.name).into_iter().map(|m| FieldError::invalid(&name_path, &c.name, m)));
    }
    if c.image.as_deref().unwrap_or_default().is_empty() {
        errs.push(FieldError::required(format!("{path}.image"), ""));
    }
    errs.extend(one_of(
        c.termination_message_policy.as_deref(),
        &["File", "FallbackToLogsOnError"],
        &format!("{path}.terminationMessagePolicy"),
    ));
    errs.extend(validate_container_ports(c.ports.as_deref().unwrap_or_default(), &format!("{path}.ports")));
    errs.extend(validate_env(c.env.as_deref().unwrap_or_default(), &format!("{path}.env")));
    errs.extend(validate_env_from(c.env_from.as_deref().unwrap_or_default(), &format!("{path}.envFrom")));
    errs.extend(validate_volume_mounts(
        c.volume_mounts.as_deref().unwrap_or_default(),
        volumes,
        &format!("{path}.volumeMounts"),
    ));
    errs.extend(one_of(
        c.image_pull_policy.as_deref(),
        &["Always", "IfNotPresent", "Never"],
        &format!("{path}.imagePullPolicy"),
    ));
    if let Some(resources) = &c.resources {
        errs.extend(validate_resource_requirements(resources, &format!("{path}.resources")));
    }
    errs
}

/// A required enum-like string: Required when empty, NotSupported when unknown.
pub(super) fn one_of(value: Option<&str>, supported: &[&str], path: &str) -> Option<FieldError> {
    match value.unwrap_or_default() {
        "" => Some(FieldError::required(path, "")),
        v if supported.contains(&v) => None,
        v => Some(FieldError::not_supported(path, v, supported)),
    }
}

/// Validates container ports: unique valid names, port numbers and protocol.
fn validate_container_ports(ports: &[ContainerPort], path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut names = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let p_path = format!("{path}[{i}]");
        if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty()) {
            let msgs = is_valid_port_name(name);
            if !msgs.is_empty() {
                errs.extend(msgs.into_iter().map(|m| FieldError::invalid(format!("{p_path}.name"), name, m)));
            } else if !names.insert(name) {
                errs.push(FieldError::duplicate(format!("{p_path}.name"), name));
            }
        }
        if port.container_port == 0 {
            errs.push(FieldError::required(format!("{p_path}.containerPort"), ""));
        } else {
            errs.extend(
                is_valid_port_num(port.container_port.into())
                    .into_iter()
                    .map(|m| FieldError::invalid(format!("{p_path}.containerPort"), port.container_port, m)),
            );
        }
        if let Some(host_port) = port.host_port.filter(|p| *p != 0) {
            errs.extend(
                is_valid_port_num(host_port.into())
                    .into_iter()
                    .map(|m| FieldError::invalid(format!("{p_path}.hostPort"), host_port, m)),
            );
        }
        errs.extend(one_of(port.protocol.as_deref(), SUPPORTED_PROTOCOLS, &format!("{p_path}.protocol")));
    }
    errs
}

/// Host ports (protocol, host IP, port) may not collide across the given containers.
fn host_port_conflicts<'a>(containers: impl Iterator<Item = (usize, &'a Container)>, path: &str) -> Vec<FieldError> {
    let mut seen = HashSet::new();
    let mut errs = Vec::new();
    for (i, c) in containers {
        for (j, port) in c.ports.iter().flatten().enumerate() {
            let Some(host_port) = port.host_port.filter(|p| *p != 0) else { continue };
            let key = format!(
                "{}/{}/{host_port}",
                port.protocol.as_deref().unwrap_or_default(),
                port.host_ip.as_deref().unwrap_or_default()
            );
            if !seen.insert(key.clone()) {
                errs.push(FieldError::duplicate(format!("{path}[{i}].ports[{j}].hostPort"), key));
            }
        }
    }
    errs
}

/// Validates env vars: names present and valid, and `valueFrom` with exactly one source.
fn validate_env(vars: &[EnvVar], path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, var) in vars.iter().enumerate() {
        let v_path = format!("{path}[{i}]");
        if var.name.is_empty() {
            errs.push(FieldError::required(format!("{v_path}.name"), ""));
        } else {
            errs.extend(
                is_env_var_name(&var.name)
                    .into_iter()
                    .map(|m| FieldError::invalid(format!("{v_path}.name"), &var.name, m)),
            );
        }
        errs.extend(validate_env_value_from(var, &format!("{v_path}.valueFrom")));
    }
    errs
}

fn validate_env_value_from(var: &EnvVar, path: &str) -> Vec<FieldError> {
    let Some(from) = &var.value_from else { return Vec::new() };
    let mut errs = Vec::new();
    let mut sources = 0;
    if let Some(field_ref) = &from.field_ref {
        sources += 1;
        errs.extend(validate_object_field_selector(field_ref, &format!("{path}.fieldRef")));
    }
    if let Some(resource_ref) = &from.resource_field_ref {
        sources += 1;
        let res = resource_ref.resource.as_str();
        if res.is_empty() {
            errs.push(FieldError::required(format!("{path}.resourceFieldRef.resource"), ""));
        } else if !ENV_RESOURCE_FIELDS.contains(&res)
            && !res.starts_with("requests.hugepages-")
            && !res.starts_with("limits.hugepages-")
        {
            errs.push(FieldError::not_supported(format!("{path}.resourceFieldRef.resource"), res, ENV_RESOURCE_FIELDS));
        }
    }
    if let Some(key_ref) = &from.config_map_key_ref {
        sources += 1;
        errs.extend(validate_key_selector(&key_ref.name, &key_ref.key, &format!("{path}.configMapKeyRef")));
    }
    if let Some(key_ref) = &from.secret_key_ref {
        sources += 1;
        errs.extend(validate_key_selector(&key_ref.name, &key_ref.key, &format!("{path}.secretKeyRef")));
    }
    if from.file_key_ref.is_some() {
        sources += 1;
    }
    let detail = if sources == 0 {
        Some("must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`")
    } else if !var.value.as_deref().unwrap_or_default().is_empty() {
        Some("may not be specified when `value` is not empty")
    } else if sources > 1 {
        Some("may not have more than one field specified at a time")
    } else {
        None
    };
    errs.extend(detail.map(|d| FieldError::invalid(path, "", d)));
    errs
}

fn validate_object_field_selector(sel: &ObjectFieldSelector, path: &str) -> Vec<FieldError> {
    if sel.api_version.as_deref().unwrap_or_default().is_empty() {
        return vec![FieldError::required(format!("{path}.apiVersion"), "")];
    }
    if sel.field_path.is_empty() {
        return vec![FieldError::required(format!("{path}.fieldPath"), "")];
    }
    let subscripted = |prefix: &str| {
        sel.field_path
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix("['"))
            .and_then(|rest| rest.strip_suffix("']"))
    };
    if let Some(key) = subscripted("metadata.annotations") {
        return is_qualified_name(&key.to_lowercase()).into_iter().map(|m| FieldError::invalid(path, key, m)).collect();
    }
    if let Some(key) = subscripted("metadata.labels") {
        return validate_label_name(key, path);
    }
    if ENV_FIELD_PATHS.contains(&sel.field_path.as_str()) {
        Vec::new()
    } else {
        vec![FieldError::not_supported(format!("{path}.fieldPath"), &sel.field_path, ENV_FIELD_PATHS)]
    }
}

fn validate_key_selector(name: &str, key: &str, path: &str) -> Vec<FieldError> {
    let mut errs = referenced_name(name, &format!("{path}.name"));
    if key.is_empty() {
        errs.push(FieldError::required(format!("{path}.key"), ""));
    } else {
        errs.extend(is_config_map_key(key).into_iter().map(|m| FieldError::invalid(format!("{path}.key"), key, m)));
    }
    errs
}

/// Validates envFrom: a valid prefix and exactly one of configMapRef and secretRef, naming a
/// valid object.
fn validate_env_from(sources: &[EnvFromSource], path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, source) in sources.iter().enumerate() {
        let s_path = format!("{path}[{i}]");
        if let Some(prefix) = source.prefix.as_deref().filter(|p| !p.is_empty()) {
            errs.extend(
                is_env_var_name(prefix).into_iter().map(|m| FieldError::invalid(format!("{s_path}.prefix"), prefix, m)),
            );
        }
        let refs = [
            ("configMapRef", source.config_map_ref.as_ref().map(|r| r.name.as_str())),
            ("secretRef", source.secret_ref.as_ref().map(|r| r.name.as_str())),
        ];
        for (field, name) in refs {
            let Some(name) = name else { continue };
            let name_path = format!("{s_path}.{field}.name");
            if name.is_empty() {
                errs.push(FieldError::required(name_path, ""));
            } else {
                errs.extend(
                    name_is_dns1123_subdomain(name, true).into_iter().map(|m| FieldError::invalid(&name_path, name, m)),
                );
            }
        }
        match refs.iter().filter(|(_, name)| name.is_some()).count() {
            0 => errs.push(FieldError::invalid(&s_path, "", "must specify one of: `configMapRef` or `secretRef`")),
            1 => {}
            _ => errs.push(FieldError::invalid(&s_path, "", "may not have more than one field specified at a time")),
        }
    }
    errs
}

/// Validates volume mounts: each names an existing volume, has a unique mount path and safe
/// sub-paths.
fn validate_volume_mounts(mounts: &[VolumeMount], volumes: &Volumes<'_>, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut mount_points = HashSet::new();
    for (i, mount) in mounts.iter().enumerate() {
        let m_path = format!("{path}[{i}]");
        if mount.name.is_empty() {
            errs.push(FieldError::required(format!("{m_path}.name"), ""));
        }
        if !volumes.contains_key(mount.name.as_str()) {
            errs.push(FieldError::invalid(format!("{m_path}.name"), &mount.name, "not found"));
        }
        if mount.mount_path.is_empty() {
            errs.push(FieldError::required(format!("{m_path}.mountPath"), ""));
        }
        if !mount_points.insert(mount.mount_path.as_str()) {
            errs.push(FieldError::invalid(format!("{m_path}.mountPath"), &mount.mount_path, "must be unique"));
        }
        let sub_path = mount.sub_path.as_deref().unwrap_or_default();
        let sub_path_expr = mount.sub_path_expr.as_deref().unwrap_or_default();
        if !sub_path.is_empty() {
            errs.extend(local_descending_path(sub_path, &format!("{m_path}.subPath")));
        }
        if !sub_path_expr.is_empty() {
            if !sub_path.is_empty() {
                errs.push(FieldError::invalid(
                    format!("{m_path}.subPathExpr"),
                    sub_path_expr,
                    "subPathExpr and subPath are mutually exclusive",
                ));
            }
            errs.extend(local_descending_path(sub_path_expr, &format!("{m_path}.subPathExpr")));
        }
    }
    errs
}

/// Whether requests may be below limits for this resource (native, non-hugepages resources).
fn is_overcommit_allowed(name: &str) -> bool {
    let native = !name.contains('/') || name.contains("kubernetes.io/");
    native && !name.starts_with("hugepages-")
}

fn validate_container_resource_name(name: &str, path: &str) -> Vec<FieldError> {
    if name.contains('/') {
        return validate_label_name(name, path);
    }
    let standard = matches!(name, "cpu" | "memory" | "ephemeral-storage") || name.starts_with("hugepages-");
    if standard {
        Vec::new()
    } else {
        vec![FieldError::invalid(path, name, "must be a standard resource for containers")]
    }
}

/// Parses one resource quantity, reporting a malformed, negative or (for extended resources)
/// fractional value.
fn validate_resource_quantity(name: &str, value: &QuantityString, path: &str) -> (Option<Quantity>, Vec<FieldError>) {
    let Some(parsed) = parse_quantity(&value.0) else {
        return (None, vec![FieldError::invalid(path, &value.0, QUANTITY_FORMAT_ERROR)]);
    };
    if parsed.is_negative() {
        return (Some(parsed), vec![FieldError::invalid(path, &value.0, IS_NEGATIVE_ERROR)]);
    }
    if !is_overcommit_allowed(name) && !name.starts_with("hugepages-") && !parsed.is_integer() {
        return (Some(parsed), vec![FieldError::invalid(path, &value.0, "must be an integer")]);
    }
    (Some(parsed), Vec::new())
}

/// Validates container resources: resource names, quantities, and that requests do not exceed
/// limits (and equal them for resources that cannot be overcommitted).
pub(super) fn validate_resource_requirements(res: &ResourceRequirements, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let lim_path = format!("{path}.limits");
    let req_path = format!("{path}.requests");
    let empty = BTreeMap::new();
    let limits = res.limits.as_ref().unwrap_or(&empty);
    let mut parsed_limits = BTreeMap::new();
    for (name, value) in limits {
        let key_path = format!("{lim_path}[{name}]");
        errs.extend(validate_container_resource_name(name, &key_path));
        let (parsed, q_errs) = validate_resource_quantity(name, value, &key_path);
        errs.extend(q_errs);
        if let Some(parsed) = parsed {
            parsed_limits.insert(name.as_str(), parsed);
        }
    }
    for (name, value) in res.requests.iter().flatten() {
        let key_path = format!("{req_path}[{name}]");
        errs.extend(validate_container_resource_name(name, &key_path));
        let (parsed, q_errs) = validate_resource_quantity(name, value, &key_path);
        errs.extend(q_errs);
        match (limits.get(name), parsed, parsed_limits.get(name.as_str())) {
            (Some(limit), Some(request), Some(limit_q)) => {
                if request != *limit_q && !is_overcommit_allowed(name) {
                    let detail = format!("must be equal to {name} limit of {}", limit.0);
                    errs.push(FieldError::invalid(&req_path, &value.0, detail));
                } else if request > *limit_q {
                    let detail = format!("must be less than or equal to {name} limit of {}", limit.0);
                    errs.push(FieldError::invalid(&req_path, &value.0, detail));
                }
            }
            (None, _, _) if !is_overcommit_allowed(name) => {
                errs.push(FieldError::required(&lim_path, "Limit must be set for non overcommitable resources"));
            }
            _ => {}
        }
    }
    errs
}

/// Which probe is being validated; they differ in small rules.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ProbeKind {
    Liveness,
    Readiness,
    Startup,
}

fn validate_probes_and_lifecycle(c: &Container, grace_period: Option<i64>, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(lifecycle) = &c.lifecycle {
        errs.extend(validate_lifecycle(lifecycle, grace_period, &format!("{path}.lifecycle")));
    }
    let probes = [
        (ProbeKind::Liveness, &c.liveness_probe, "livenessProbe"),
        (ProbeKind::Readiness, &c.readiness_probe, "readinessProbe"),
        (ProbeKind::Startup, &c.startup_probe, "startupProbe"),
    ];
    for (kind, probe, field) in probes {
        if let Some(probe) = probe {
            errs.extend(validate_probe(probe, kind, &format!("{path}.{field}")));
        }
    }
    errs
}

fn validate_probe(probe: &Probe, kind: ProbeKind, path: &str) -> Vec<FieldError> {
    let handlers = Handlers {
        exec: probe.exec.as_ref().map(|e| e.command.as_deref().unwrap_or_default()),
        http_get: probe.http_get.as_ref(),
        tcp_socket: probe.tcp_socket.as_ref().map(|t| &t.port),
        grpc: probe.grpc.as_ref().map(|g| g.port),
        sleep: None,
    };
    let mut errs = validate_handlers(&handlers, None, path);
    let fields = [
        ("initialDelaySeconds", probe.initial_delay_seconds),
        ("timeoutSeconds", probe.timeout_seconds),
        ("periodSeconds", probe.period_seconds),
        ("successThreshold", probe.success_threshold),
        ("failureThreshold", probe.failure_threshold),
    ];
    for (field, value) in fields {
        errs.extend(non_negative(value.map(i64::from), &format!("{path}.{field}")));
    }
    if let Some(grace) = probe.termination_grace_period_seconds {
        if kind == ProbeKind::Readiness {
            errs.push(FieldError::invalid(
                format!("{path}.terminationGracePeriodSeconds"),
                grace,
                "must not be set for readinessProbes",
            ));
        } else if grace <= 0 {
            errs.push(FieldError::invalid(
                format!("{path}.terminationGracePeriodSeconds"),
                grace,
                "must be greater than 0",
            ));
        }
    }
    let success = probe.success_threshold.unwrap_or(0);
    if kind != ProbeKind::Readiness && success != 1 {
        errs.push(FieldError::invalid(format!("{path}.successThreshold"), success, "must be 1"));
    }
    errs
}

fn validate_lifecycle(lifecycle: &Lifecycle, grace_period: Option<i64>, path: &str) -> Vec<FieldError> {
    let hooks = [(&lifecycle.post_start, "postStart"), (&lifecycle.pre_stop, "preStop")];
    let mut errs = Vec::new();
    for (hook, field) in hooks {
        if let Some(handler) = hook {
            errs.extend(validate_handlers(&lifecycle_handlers(handler), grace_period, &format!("{path}.{field}")));
        }
    }
    errs
}

fn lifecycle_handlers(h: &LifecycleHandler) -> Handlers<'_> {
    Handlers {
        exec: h.exec.as_ref().map(|e| e.command.as_deref().unwrap_or_default()),
        http_get: h.http_get.as_ref(),
        tcp_socket: h.tcp_socket.as_ref().map(|t| &t.port),
        grpc: None,
        sleep: h.sleep.as_ref().map(|s| s.seconds),
    }
}

/// The handler fields of a probe or lifecycle hook; exactly one must be set.
struct Handlers<'a> {
    exec: Option<&'a [String]>,
    http_get: Option<&'a HTTPGetAction>,
    tcp_socket: Option<&'a IntOrString>,
    grpc: Option<i32>,
    sleep: Option<i64>,
}

fn validate_handlers(h: &Handlers<'_>, grace_period: Option<i64>, path: &str) -> Vec<FieldError> {
    let set = [
        ("exec", h.exec.is_some()),
        ("httpGet", h.http_get.is_some()),
        ("tcpSocket", h.tcp_socket.is_some()),
        ("grpc", h.grpc.is_some()),
        ("sleep", h.sleep.is_some()),
    ];
    let mut set_names = set.iter().filter(|(_, s)| *s).map(|(n, _)| *n);
    let Some(first) = set_names.next() else {
        return vec![FieldError::required(path, "must specify a handler type")];
    };
    let mut errs: Vec<FieldError> = set_names
        .map(|n| FieldError::forbidden(format!("{path}.{n}"), "may not specify more than 1 handler type"))
        .collect();
    let h_path = format!("{path}.{first}");
    match first {
        "exec" if h.exec.is_some_and(<[String]>::is_empty) => {
            errs.push(FieldError::required(format!("{h_path}.command"), ""))
        }
        "httpGet" => errs.extend(h.http_get.map(|g| validate_http_get(g, &h_path)).unwrap_or_default()),
        "tcpSocket" => errs
            .extend(h.tcp_socket.map(|p| validate_port_num_or_name(p, &format!("{h_path}.port"))).unwrap_or_default()),
        "grpc" => errs.extend(
            h.grpc
                .map(|p| validate_port_num_or_name(&IntOrString::Int(p), &format!("{h_path}.port")))
                .unwrap_or_default(),
        ),
        "sleep" => {
            if let (Some(seconds), Some(grace)) = (h.sleep, grace_period) {
                if seconds < 0 || seconds > grace {
                    let detail = format!("must be non-negative and less than terminationGracePeriodSeconds ({grace})");
                    errs.push(FieldError::invalid(&h_path, seconds, detail));
                }
            }
        }
        _ => {}
    }
    errs
}

fn validate_http_get(get: &HTTPGetAction, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if get.path.as_deref().unwrap_or_default().is_empty() {
        errs.push(FieldError::required(format!("{path}.path"), ""));
    }
    errs.extend(validate_port_num_or_name(&get.port, &format!("{path}.port")));
    let scheme = get.scheme.as_deref().unwrap_or_default();
    if !matches!(scheme, "HTTP" | "HTTPS") {
        errs.push(FieldError::not_supported(format!("{path}.scheme"), scheme, &["HTTP", "HTTPS"]));
    }
    for header in get.http_headers.iter().flatten() {
        errs.extend(
            is_http_header_name(&header.name)
                .into_iter()
                .map(|m| FieldError::invalid(format!("{path}.httpHeaders"), &header.name, m)),
        );
    }
    errs
}

/// A port given as a number (1..65535) or an IANA service name.
pub(super) fn validate_port_num_or_name(port: &IntOrString, path: &str) -> Vec<FieldError> {
    let msgs = match port {
        IntOrString::Int(n) => is_valid_port_num((*n).into()),
        IntOrString::String(name) => is_valid_port_name(name),
    };
    msgs.into_iter().map(|m| FieldError::invalid(path, int_or_string_value(port), m)).collect()
}

/// How Kubernetes prints a port value: numbers bare, names quoted.
fn int_or_string_value(port: &IntOrString) -> super::Raw {
    match port {
        IntOrString::Int(_) => int_or_string(port),
        IntOrString::String(s) => super::Raw(format!("{s:?}")),
    }
}

/// `activeDeadlineSeconds` and similar: 1..=i32::MAX.
pub(super) fn positive_int32(value: i64, path: &str) -> Option<FieldError> {
    (!(1..=i64::from(i32::MAX)).contains(&value))
        .then(|| FieldError::invalid(path, value, inclusive_range_error(1, i32::MAX.into())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CauseType;
    use k8s_openapi::api::core::v1::Volume;
    use serde_json::json;

    fn containers(v: serde_json::Value) -> Vec<Container> {
        serde_json::from_value(v).unwrap()
    }

    /// A container as it looks after defaulting, merged with `extra`.
    fn ctr(extra: serde_json::Value) -> serde_json::Value {
        let mut base = json!({
            "name": "app", "image": "nginx:1.27", "imagePullPolicy": "IfNotPresent",
            "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"
        });
        if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        base
    }

    fn no_volumes() -> Volumes<'static> {
        Volumes::new()
    }

    fn check(list: serde_json::Value) -> Vec<FieldError> {
        validate_containers(&containers(list), &no_volumes(), Some(30), "spec.containers")
    }

    fn fields(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(|e| format!("{} {:?}", e.field, e.cause)).collect()
    }

    #[test]
    fn valid_container() {
        let full = ctr(json!({
            "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP"}, {"containerPort": 53, "protocol": "UDP", "hostPort": 53}],
            "env": [
                {"name": "A", "value": "1"},
                {"name": "POD", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}},
                {"name": "APP", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.labels['app']"}}},
                {"name": "K", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "k"}}},
                {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}}
            ],
            "envFrom": [{"prefix": "X_", "secretRef": {"name": "s"}}],
            "resources": {"limits": {"cpu": "1", "memory": "1Gi", "example.com/gpu": "2"}, "requests": {"cpu": "100m", "memory": "512Mi", "example.com/gpu": "2"}},
            "livenessProbe": {"httpGet": {"path": "/", "port": "http", "scheme": "HTTP"}, "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3},
            "readinessProbe": {"tcpSocket": {"port": 80}, "successThreshold": 3},
            "startupProbe": {"grpc": {"port": 9000}, "successThreshold": 1},
            "lifecycle": {"preStop": {"sleep": {"seconds": 5}}, "postStart": {"exec": {"command": ["true"]}}}
        }));
        let errs = check(json!([full, ctr(json!({"name": "side"}))]));
        assert!(errs.is_empty(), "{errs:?}");
    }

    #[test]
    fn names_images_and_policies() {
        assert_eq!(check(json!([]))[0].to_string(), "spec.containers: Required value");
        let errs = check(json!([
            ctr(json!({"name": "", "image": ""})),
            ctr(json!({"name": "Bad.Name", "imagePullPolicy": "Sometimes", "terminationMessagePolicy": ""})),
            ctr(json!({"name": "app"})),
            ctr(json!({"name": "app", "restartPolicy": "Always"}))
        ]));
        assert_eq!(
            fields(&errs),
            [
                "spec.containers[0].name Required",
                "spec.containers[0].image Required",
                "spec.containers[1].name Invalid",
                "spec.containers[1].terminationMessagePolicy Required",
                "spec.containers[1].imagePullPolicy NotSupported",
                "spec.containers[3].name Duplicate",
                "spec.containers[3].restartPolicy Forbidden",
            ]
        );
        assert_eq!(
            errs[4].to_string(),
            "spec.containers[1].imagePullPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"IfNotPresent\", \"Never\""
        );
    }

    #[test]
    fn ports() {
        let errs = check(json!([ctr(json!({"ports": [
            {"containerPort": 0, "protocol": "TCP"},
            {"containerPort": 70000, "protocol": "ICMP", "name": "web"},
            {"containerPort": 81, "protocol": "TCP", "name": "web"},
            {"containerPort": 82, "name": "8080", "hostPort": -1, "protocol": "TCP"},
            {"containerPort": 83, "protocol": "TCP", "hostPort": 8080},
            {"containerPort": 84, "protocol": "TCP", "hostPort": 8080}
        ]}))]));
        assert_eq!(
            fields(&errs),
            [
                "spec.containers[0].ports[0].containerPort Required",
                "spec.containers[0].ports[1].containerPort Invalid",
                "spec.containers[0].ports[1].protocol NotSupported",
                "spec.containers[0].ports[2].name Duplicate",
                "spec.containers[0].ports[3].name Invalid",
                "spec.containers[0].ports[3].hostPort Invalid",
                "spec.containers[0].ports[5].hostPort Duplicate",
            ]
        );
        assert_eq!(
            errs[1].to_string(),
            "spec.containers[0].ports[1].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive"
        );
        assert_eq!(errs[6].value.as_deref(), Some("\"TCP//8080\""));
    }

    #[test]
    fn env() {
        let errs = check(json!([ctr(json!({"env": [
            {"name": ""},
            {"name": "A=B"},
            {"name": "X", "valueFrom": {}},
            {"name": "Y", "value": "v", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
            {"name": "Z", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}, "configMapKeyRef": {"name": "c", "key": "k"}}},
            {"name": "F", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "spec.bogus"}}},
            {"name": "K", "valueFrom": {"configMapKeyRef": {"name": "Bad", "key": ""}}}
        ], "envFrom": [{}, {"configMapRef": {"name": ""}}]}))]));
        assert_eq!(
            fields(&errs),
            [
                "spec.containers[0].env[0].name Required",
                "spec.containers[0].env[1].name Invalid",
                "spec.containers[0].env[2].valueFrom Invalid",
                "spec.containers[0].env[3].valueFrom Invalid",
                "spec.containers[0].env[4].valueFrom Invalid",
                "spec.containers[0].env[5].valueFrom.fieldRef.fieldPath NotSupported",
                "spec.containers[0].env[6].valueFrom.configMapKeyRef.name Invalid",
                "spec.containers[0].env[6].valueFrom.configMapKeyRef.key Required",
                "spec.containers[0].envFrom[0] Invalid",
                "spec.containers[0].envFrom[1].configMapRef.name Required",
            ]
        );
        assert!(errs[2].detail.starts_with("must specify one of: `fieldRef`"));
        assert_eq!(errs[3].detail, "may not be specified when `value` is not empty");
        assert_eq!(errs[4].detail, "may not have more than one field specified at a time");
    }

    #[test]
    fn volume_mounts() {
        let vols: Vec<Volume> = serde_json::from_value(json!([{"name": "data", "emptyDir": {}}])).unwrap();
        let volumes: Volumes<'_> = vols.iter().map(|v| (v.name.as_str(), v)).collect();
        let list = containers(json!([ctr(json!({"volumeMounts": [
            {"name": "data", "mountPath": "/data", "subPath": "x"},
            {"name": "nope", "mountPath": "/data"},
            {"name": "", "mountPath": ""},
            {"name": "data", "mountPath": "/y", "subPath": "../up", "subPathExpr": "$(X)"}
        ]}))]));
        let errs = validate_containers(&list, &volumes, Some(30), "spec.containers");
        assert_eq!(
            fields(&errs),
            [
                "spec.containers[0].volumeMounts[1].name Invalid",
                "spec.containers[0].volumeMounts[1].mountPath Invalid",
                "spec.containers[0].volumeMounts[2].name Required",
                "spec.containers[0].volumeMounts[2].name Invalid",
                "spec.containers[0].volumeMounts[2].mountPath Required",
                "spec.containers[0].volumeMounts[3].subPath Invalid",
                "spec.containers[0].volumeMounts[3].subPathExpr Invalid",
            ]
        );
        assert_eq!(errs[0].to_string(), "spec.containers[0].volumeMounts[1].name: Invalid value: \"nope\": not found");
        assert_eq!(errs[1].detail, "must be unique");
    }

    #[test]
    fn resources() {
        let errs = check(json!([ctr(json!({"resources": {
            "limits": {"cpu": "500m", "memory": "1Gi", "example.com/gpu": "1", "bogus": "1"},
            "requests": {"cpu": "1", "memory": "-1", "example.com/gpu": "2", "example.com/fpga": "1.5", "nvidia.com/x": "abc"}
        }}))]));
        assert_eq!(
            fields(&errs),
            [
                "spec.containers[0].resources.limits[bogus] Invalid",
                "spec.containers[0].resources.requests Invalid",
                "spec.containers[0].resources.requests[example.com/fpga] Invalid",
                "spec.containers[0].resources.limits Required",
                "spec.containers[0].resources.requests Invalid",
                "spec.containers[0].resources.requests[memory] Invalid",
                "spec.containers[0].resources.requests[nvidia.com/x] Invalid",
                "spec.containers[0].resources.limits Required",
            ]
        );
        assert_eq!(errs[0].detail, "must be a standard resource for containers");
        assert_eq!(errs[1].to_string(), "spec.containers[0].resources.requests: Invalid value: \"1\": must be less than or equal to cpu limit of 500m");
        assert_eq!(errs[2].detail, "must be an integer");
        assert_eq!(errs[3].detail, "Limit must be set for non overcommitable resources");
        assert_eq!(errs[4].detail, "must be equal to example.com/gpu limit of 1");
        assert_eq!(errs[5].detail, IS_NEGATIVE_ERROR);
        assert_eq!(errs[6].detail, QUANTITY_FORMAT_ERROR);
    }

    #[test]
    fn probes_and_lifecycle() {
        let errs = check(json!([ctr(json!({
            "livenessProbe": {"successThreshold": 2, "timeoutSeconds": -1},
            "readinessProbe": {"exec": {}, "httpGet": {"port": 80, "path": "/", "scheme": "HTTP"}, "terminationGracePeriodSeconds": 5},
            "startupProbe": {"httpGet": {"port": "B", "path": "", "scheme": "FTP", "httpHeaders": [{"name": "a b", "value": "x"}]}, "successThreshold": 1},
            "lifecycle": {"preStop": {"sleep": {"seconds": 60}}, "postStart": {}}
        }))]));
        assert_eq!(
            fields(&errs),
            [
                "spec.containers[0].lifecycle.postStart Required",
                "spec.containers[0].lifecycle.preStop.sleep Invalid",
                "spec.containers[0].livenessProbe Required",
                "spec.containers[0].livenessProbe.timeoutSeconds Invalid",
                "spec.containers[0].livenessProbe.successThreshold Invalid",
                "spec.containers[0].readinessProbe.httpGet Forbidden",
                "spec.containers[0].readinessProbe.exec.command Required",
                "spec.containers[0].readinessProbe.terminationGracePeriodSeconds Invalid",
                "spec.containers[0].startupProbe.httpGet.path Required",
                "spec.containers[0].startupProbe.httpGet.port Invalid",
                "spec.containers[0].startupProbe.httpGet.port Invalid",
                "spec.containers[0].startupProbe.httpGet.scheme NotSupported",
                "spec.containers[0].startupProbe.httpGet.httpHeaders Invalid",
            ]
        );
        assert_eq!(errs[1].detail, "must be non-negative and less than terminationGracePeriodSeconds (30)");
        assert_eq!(
            errs[4].to_string(),
            "spec.containers[0].livenessProbe.successThreshold: Invalid value: 2: must be 1"
        );
    }

    #[test]
    fn init_containers() {
        let regular = containers(json!([ctr(json!({"name": "app"}))]));
        let init = containers(json!([
            ctr(json!({"name": "app"})),
            ctr(json!({"name": "setup", "readinessProbe": {"tcpSocket": {"port": 1}}})),
            ctr(json!({"name": "side", "restartPolicy": "Always", "readinessProbe": {"tcpSocket": {"port": 1}}})),
            ctr(json!({"name": "odd", "restartPolicy": "Never"})),
            ctr(json!({"name": "setup"}))
        ]));
        let errs = validate_init_containers(&init, &regular, &no_volumes(), Some(30), "spec.initContainers");
        assert_eq!(
            fields(&errs),
            [
                "spec.initContainers[0].name Duplicate",
                "spec.initContainers[1].readinessProbe Forbidden",
                "spec.initContainers[3].restartPolicy NotSupported",
                "spec.initContainers[4].name Duplicate",
            ]
        );
        assert_eq!(errs[1].detail, PROBE_SET_ON_INIT);
        assert_eq!(errs[0].cause, CauseType::Duplicate);
    }

    #[test]
    fn pod_only_and_helpers() {
        let list = containers(json!([ctr(json!({"image": " nginx"}))]));
        assert_eq!(validate_containers_only_for_pod(&list, "spec.containers")[0].field, "spec.containers[0].image");
        assert_eq!(
            positive_int32(0, "x").map(|e| e.detail),
            Some("must be between 1 and 2147483647, inclusive".to_string())
        );
        assert!(positive_int32(5, "x").is_none());
        assert_eq!(
            validate_port_num_or_name(&IntOrString::String("HTTP".into()), "p")[0].value.as_deref(),
            Some("\"HTTP\"")
        );
        assert_eq!(validate_port_num_or_name(&IntOrString::Int(0), "p")[0].value.as_deref(), Some("0"));
        assert!(one_of(Some("TCP"), SUPPORTED_PROTOCOLS, "p").is_none());
        assert!(is_overcommit_allowed("cpu") && is_overcommit_allowed("kubernetes.io/x"));
        assert!(!is_overcommit_allowed("hugepages-2Mi") && !is_overcommit_allowed("example.com/gpu"));
    }
}
