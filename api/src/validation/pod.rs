//! Pod, pod spec and pod template validation (`ValidatePodSpec`, `ValidatePodTemplateSpec`,
//! `ValidatePodCreate`, `ValidatePodUpdate`).

use super::container::{
    one_of, positive_int32, validate_containers, validate_containers_only_for_pod, validate_init_containers,
};
use super::meta::{
    validate_annotations, validate_label_name, validate_labels, validate_object_meta, validate_object_meta_update,
};
use super::names::{
    is_dns1123_label, is_dns1123_subdomain, is_dns1123_subdomain_with_underscore, is_qualified_name,
    is_valid_label_value, name_is_dns1123_subdomain, INVALID_IP_ERROR,
};
use super::non_negative;
use super::volume::validate_volumes;
use crate::FieldError;
use k8s_openapi::api::core::v1::{Pod, PodSpec, PodTemplateSpec, Toleration};
use serde_json::Value;
use std::borrow::Cow;
use std::collections::HashSet;
use std::net::IpAddr;

/// The fields a pod update may change, as Kubernetes lists them.
const UPDATABLE_POD_SPEC_FIELDS: &[&str] = &[
    "`spec.containers[*].image`",
    "`spec.initContainers[*].image`",
    "`spec.activeDeadlineSeconds`",
    "`spec.tolerations` (only additions to existing tolerations)",
    "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
];

/// At most this many changed fields are listed in the "pod updates may not change" error.
const MAX_DIFF_LINES: usize = 20;

const MAX_DNS_NAMESERVERS: usize = 3;
const MAX_DNS_SEARCH_PATHS: usize = 32;
const MAX_DNS_SEARCH_LIST_CHARS: usize = 2048;

fn spec_or_default(spec: Option<&PodSpec>) -> Cow<'_, PodSpec> {
    spec.map_or_else(|| Cow::Owned(PodSpec::default()), Cow::Borrowed)
}

/// Validates a Pod on create (`old` is `None`) or update.
pub(super) fn pod(new: &Pod, old: Option<&Pod>) -> Vec<FieldError> {
    let spec = spec_or_default(new.spec.as_ref());
    let mut errs = validate_object_meta(&new.metadata, true, name_is_dns1123_subdomain, "metadata");
    errs.extend(validate_pod_spec(&spec, "spec", true));
    errs.extend(validate_containers_only_for_pod(&spec.containers, "spec.containers"));
    errs.extend(validate_containers_only_for_pod(
        spec.init_containers.as_deref().unwrap_or_default(),
        "spec.initContainers",
    ));
    errs.extend(service_account_token_needs_service_account(&spec));
    match old {
        None => errs.extend(validate_pod_create(&spec)),
        Some(old) => {
            errs.extend(validate_object_meta_update(&new.metadata, &old.metadata, "metadata"));
            // Kubernetes applies defaults when it reads the stored object, so a pod stored
            // before a default existed still compares equal to its defaulted update.
            let mut old = old.clone();
            crate::defaults::pod(&mut old);
            errs.extend(validate_pod_update(&spec, &spec_or_default(old.spec.as_ref())));
        }
    }
    errs
}

/// Projected service account tokens need a service account.
fn service_account_token_needs_service_account(spec: &PodSpec) -> Vec<FieldError> {
    if !spec.service_account_name.as_deref().unwrap_or_default().is_empty() {
        return Vec::new();
    }
    let mut errs = Vec::new();
    for (i, volume) in spec.volumes.iter().flatten().enumerate() {
        let sources = volume.projected.as_ref().and_then(|p| p.sources.as_ref());
        for (j, source) in sources.into_iter().flatten().enumerate() {
            if source.service_account_token.is_some() {
                errs.push(FieldError::forbidden(
                    format!("spec.volumes[{i}].projected.sources[{j}].serviceAccountToken"),
                    "must not be specified when serviceAccountName is not set",
                ));
            }
        }
    }
    errs
}

fn validate_pod_create(spec: &PodSpec) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if spec.ephemeral_containers.as_ref().is_some_and(|e| !e.is_empty()) {
        errs.push(FieldError::forbidden("spec.ephemeralContainers", "cannot be set on create"));
    }
    let gated = spec.scheduling_gates.as_ref().is_some_and(|g| !g.is_empty());
    if gated && !spec.node_name.as_deref().unwrap_or_default().is_empty() {
        errs.push(FieldError::forbidden("spec.nodeName", "cannot be set until all schedulingGates have been cleared"));
    }
    errs
}

/// Validates a pod template embedded at `path` (e.g. `spec.template`): its labels and
/// annotations, its pod spec (at `{path}.spec`), and no ephemeral containers.
pub fn validate_pod_template(template: &PodTemplateSpec, path: &str) -> Vec<FieldError> {
    let meta = template.metadata.as_ref();
    let mut errs = validate_labels(meta.and_then(|m| m.labels.as_ref()), &format!("{path}.labels"));
    errs.extend(validate_annotations(meta.and_then(|m| m.annotations.as_ref()), &format!("{path}.annotations")));
    let spec = spec_or_default(template.spec.as_ref());
    errs.extend(validate_pod_spec(&spec, &format!("{path}.spec"), false));
    if spec.ephemeral_containers.as_ref().is_some_and(|e| !e.is_empty()) {
        errs.push(FieldError::forbidden(
            format!("{path}.spec.ephemeralContainers"),
            "ephemeral containers not allowed in pod template",
        ));
    }
    errs
}

/// Validates a pod spec at `path`. `is_pod` is true for a Pod's own spec (stricter host-port
/// rules under hostNetwork) and false for templates.
pub fn validate_pod_spec(spec: &PodSpec, path: &str, is_pod: bool) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let grace_path = format!("{path}.terminationGracePeriodSeconds");
    match spec.termination_grace_period_seconds {
        None => errs.push(FieldError::required(&grace_path, "")),
        Some(grace) => errs.extend(non_negative(Some(grace), &grace_path)),
    }
    let (volumes, volume_errs) =
        validate_volumes(spec.volumes.as_deref().unwrap_or_default(), &format!("{path}.volumes"));
    errs.extend(volume_errs);
    let grace = spec.termination_grace_period_seconds;
    errs.extend(validate_containers(&spec.containers, &volumes, grace, &format!("{path}.containers")));
    let init = spec.init_containers.as_deref().unwrap_or_default();
    errs.extend(validate_init_containers(init, &spec.containers, &volumes, grace, &format!("{path}.initContainers")));
    errs.extend(validate_host_network_ports(spec, path, is_pod));
    errs.extend(one_of(
        spec.restart_policy.as_deref(),
        &["Always", "OnFailure", "Never"],
        &format!("{path}.restartPolicy"),
    ));
    errs.extend(one_of(
        spec.dns_policy.as_deref(),
        &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
        &format!("{path}.dnsPolicy"),
    ));
    errs.extend(validate_labels(spec.node_selector.as_ref(), &format!("{path}.nodeSelector")));
    errs.extend(validate_dns_config(spec, &format!("{path}.dnsConfig")));
    errs.extend(validate_gates(spec, path));
    errs.extend(validate_names(spec, path));
    if let Some(deadline) = spec.active_deadline_seconds {
        errs.extend(positive_int32(deadline, &format!("{path}.activeDeadlineSeconds")));
    }
    errs.extend(validate_tolerations(spec.tolerations.as_deref().unwrap_or_default(), &format!("{path}.tolerations")));
    for (i, alias) in spec.host_aliases.iter().flatten().enumerate() {
        if alias.ip.parse::<IpAddr>().is_err() {
            errs.push(FieldError::invalid(format!("{path}.hostAliases[{i}].ip"), &alias.ip, INVALID_IP_ERROR));
        }
        for (j, host) in alias.hostnames.iter().flatten().enumerate() {
            let host_path = format!("{path}.hostAliases[{i}].hostnames[{j}]");
            errs.extend(is_dns1123_subdomain(host).into_iter().map(|m| FieldError::invalid(&host_path, host, m)));
        }
    }
    if let Some(policy) = spec.preemption_policy.as_deref() {
        errs.extend(one_of(Some(policy), &["PreemptLowerPriority", "Never"], &format!("{path}.preemptionPolicy")));
    }
    errs
}

/// With hostNetwork, host ports must equal container ports (templates may leave them 0).
fn validate_host_network_ports(spec: &PodSpec, path: &str, is_pod: bool) -> Vec<FieldError> {
    if spec.host_network != Some(true) {
        return Vec::new();
    }
    let mut errs = Vec::new();
    for (i, c) in spec.containers.iter().enumerate() {
        for (j, port) in c.ports.iter().flatten().enumerate() {
            let host_port = port.host_port.unwrap_or(0);
            if (is_pod || host_port != 0) && host_port != port.container_port {
                errs.push(FieldError::invalid(
                    format!("{path}.containers[{i}].ports[{j}].hostPort"),
                    host_port,
                    "must match `containerPort` when `hostNetwork` is true",
                ));
            }
        }
    }
    errs
}

/// Object names the spec refers to: service account, node, priority class, hostname and
/// subdomain.
fn validate_names(spec: &PodSpec, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let subdomains = [
        ("serviceAccountName", spec.service_account_name.as_deref()),
        ("nodeName", spec.node_name.as_deref()),
        ("priorityClassName", spec.priority_class_name.as_deref()),
    ];
    for (field, value) in subdomains {
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            let f_path = format!("{path}.{field}");
            errs.extend(is_dns1123_subdomain(value).into_iter().map(|m| FieldError::invalid(&f_path, value, m)));
        }
    }
    let labels = [("hostname", spec.hostname.as_deref()), ("subdomain", spec.subdomain.as_deref())];
    for (field, value) in labels {
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            let f_path = format!("{path}.{field}");
            errs.extend(is_dns1123_label(value).into_iter().map(|m| FieldError::invalid(&f_path, value, m)));
        }
    }
    errs
}

/// Readiness gate condition types and scheduling gate names are qualified names; scheduling
/// gates are unique.
fn validate_gates(spec: &PodSpec, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, gate) in spec.readiness_gates.iter().flatten().enumerate() {
        let g_path = format!("{path}.readinessGates[{i}].conditionType");
        errs.extend(
            is_qualified_name(&gate.condition_type)
                .into_iter()
                .map(|m| FieldError::invalid(&g_path, &gate.condition_type, m)),
        );
    }
    let mut seen = HashSet::new();
    for (i, gate) in spec.scheduling_gates.iter().flatten().enumerate() {
        let g_path = format!("{path}.schedulingGates[{i}]");
        errs.extend(is_qualified_name(&gate.name).into_iter().map(|m| FieldError::invalid(&g_path, &gate.name, m)));
        if !seen.insert(gate.name.as_str()) {
            errs.push(FieldError::duplicate(&g_path, &gate.name));
        }
    }
    errs
}

/// `dnsPolicy: None` needs a dnsConfig with nameservers; nameservers are IPs, searches are
/// domains, within libc's limits.
fn validate_dns_config(spec: &PodSpec, path: &str) -> Vec<FieldError> {
    let none_policy = spec.dns_policy.as_deref() == Some("None");
    let Some(config) = &spec.dns_config else {
        return if none_policy {
            vec![FieldError::required(path, "must provide `dnsConfig` when `dnsPolicy` is None")]
        } else {
            Vec::new()
        };
    };
    let nameservers = config.nameservers.as_deref().unwrap_or_default();
    if none_policy && nameservers.is_empty() {
        return vec![FieldError::required(
            format!("{path}.nameservers"),
            "must provide at least one DNS nameserver when `dnsPolicy` is None",
        )];
    }
    let mut errs = Vec::new();
    if nameservers.len() > MAX_DNS_NAMESERVERS {
        errs.push(FieldError::invalid(
            format!("{path}.nameservers"),
            super::go_string_slice(nameservers),
            format!("must not have more than {MAX_DNS_NAMESERVERS} nameservers"),
        ));
    }
    for (i, ns) in nameservers.iter().enumerate() {
        if ns.parse::<IpAddr>().is_err() {
            errs.push(FieldError::invalid(format!("{path}.nameservers[{i}]"), ns, INVALID_IP_ERROR));
        }
    }
    let searches = config.searches.as_deref().unwrap_or_default();
    if searches.len() > MAX_DNS_SEARCH_PATHS {
        errs.push(FieldError::invalid(
            format!("{path}.searches"),
            super::go_string_slice(searches),
            format!("must not have more than {MAX_DNS_SEARCH_PATHS} search paths"),
        ));
    }
    if searches.join(" ").len() > MAX_DNS_SEARCH_LIST_CHARS {
        errs.push(FieldError::invalid(
            format!("{path}.searches"),
            super::go_string_slice(searches),
            format!(
                "must not have more than {MAX_DNS_SEARCH_LIST_CHARS} characters (including spaces) in the search list"
            ),
        ));
    }
    for (i, search) in searches.iter().enumerate().filter(|(_, s)| s.as_str() != ".") {
        let trimmed = search.strip_suffix('.').unwrap_or(search);
        let s_path = format!("{path}.searches[{i}]");
        errs.extend(
            is_dns1123_subdomain_with_underscore(trimmed).into_iter().map(|m| FieldError::invalid(&s_path, trimmed, m)),
        );
    }
    for (i, option) in config.options.iter().flatten().enumerate() {
        if option.name.as_deref().unwrap_or_default().is_empty() {
            errs.push(FieldError::required(format!("{path}.options[{i}]"), "must not be empty"));
        }
    }
    errs
}

/// Validates tolerations (`ValidateTolerations`).
pub(super) fn validate_tolerations(tolerations: &[Toleration], path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, t) in tolerations.iter().enumerate() {
        let t_path = format!("{path}[{i}]");
        let key = t.key.as_deref().unwrap_or_default();
        let operator = t.operator.as_deref().unwrap_or_default();
        let value = t.value.as_deref().unwrap_or_default();
        let effect = t.effect.as_deref().unwrap_or_default();
        if !key.is_empty() {
            errs.extend(validate_label_name(key, &format!("{t_path}.key")));
        }
        if key.is_empty() && operator != "Exists" {
            errs.push(FieldError::invalid(
                format!("{t_path}.operator"),
                operator,
                "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            ));
        }
        if t.toleration_seconds.is_some() && effect != "NoExecute" {
            errs.push(FieldError::invalid(
                format!("{t_path}.effect"),
                effect,
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            ));
        }
        match operator {
            "Equal" | "" => {
                let msgs = is_valid_label_value(value);
                if !msgs.is_empty() {
                    errs.push(FieldError::invalid(format!("{t_path}.operator"), value, msgs.join(";")));
                }
            }
            "Exists" if !value.is_empty() => errs.push(FieldError::invalid(
                format!("{t_path}.operator"),
                value,
                "value must be empty when `operator` is 'Exists'",
            )),
            "Exists" => {}
            other => errs.push(FieldError::not_supported(format!("{t_path}.operator"), other, &["Equal", "Exists"])),
        }
        if !effect.is_empty() {
            errs.extend(validate_taint_effect(effect, &format!("{t_path}.effect")));
        }
    }
    errs
}

/// A taint effect must be NoSchedule, PreferNoSchedule or NoExecute.
pub(super) fn validate_taint_effect(effect: &str, path: &str) -> Option<FieldError> {
    one_of(Some(effect), &["NoSchedule", "PreferNoSchedule", "NoExecute"], path)
}

/// Update rules: containers may not be added or removed, images stay set, activeDeadlineSeconds
/// may only shrink, tolerations may only be added, scheduling gates only removed, and nothing
/// else in the spec may change.
fn validate_pod_update(new: &PodSpec, old: &PodSpec) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let init_len = |spec: &PodSpec| spec.init_containers.as_ref().map_or(0, Vec::len);
    let lists = [
        ("spec.containers", new.containers.len(), old.containers.len()),
        ("spec.initContainers", init_len(new), init_len(old)),
    ];
    for (path, new_len, old_len) in lists {
        if new_len != old_len {
            errs.push(FieldError::forbidden(path, "pod updates may not add or remove containers"));
            return errs;
        }
    }
    if let Some(err) = validate_active_deadline_update(new.active_deadline_seconds, old.active_deadline_seconds) {
        errs.push(err);
        return errs;
    }
    errs.extend(validate_only_added_tolerations(
        new.tolerations.as_deref().unwrap_or_default(),
        old.tolerations.as_deref().unwrap_or_default(),
    ));
    errs.extend(validate_only_removed_scheduling_gates(new, old));
    let munged = munge_updatable_fields(new, old);
    let diff = spec_diff(old, &munged);
    if !diff.is_empty() {
        let detail = format!(
            "pod updates may not change fields other than {}\n{}",
            UPDATABLE_POD_SPEC_FIELDS.join(","),
            diff.join("\n")
        );
        errs.push(FieldError::forbidden("spec", detail));
    }
    errs
}

fn validate_active_deadline_update(new: Option<i64>, old: Option<i64>) -> Option<FieldError> {
    let path = "spec.activeDeadlineSeconds";
    match (new, old) {
        (Some(n), _) if !(0..=i64::from(i32::MAX)).contains(&n) => {
            Some(FieldError::invalid(path, n, super::names::inclusive_range_error(0, i32::MAX.into())))
        }
        (Some(n), Some(o)) if o < n => {
            Some(FieldError::invalid(path, n, "must be less than or equal to previous value"))
        }
        (None, Some(_)) => Some(FieldError::invalid(
            path,
            super::Raw("null".into()),
            "must not update from a positive integer to nil value",
        )),
        _ => None,
    }
}

/// Every old toleration must still be present (its tolerationSeconds may change).
fn validate_only_added_tolerations(new: &[Toleration], old: &[Toleration]) -> Option<FieldError> {
    let same_but_seconds = |a: &Toleration, b: &Toleration| {
        a.key == b.key && a.operator == b.operator && a.value == b.value && a.effect == b.effect
    };
    let kept = old.iter().all(|o| new.iter().any(|n| same_but_seconds(o, n)));
    (!kept).then(|| {
        FieldError::forbidden(
            "spec.tolerations",
            "existing toleration can not be modified except its tolerationSeconds",
        )
    })
}

fn validate_only_removed_scheduling_gates(new: &PodSpec, old: &PodSpec) -> Vec<FieldError> {
    let old_gates: HashSet<&str> = old.scheduling_gates.iter().flatten().map(|g| g.name.as_str()).collect();
    new.scheduling_gates
        .iter()
        .flatten()
        .enumerate()
        .filter(|(_, g)| !old_gates.contains(g.name.as_str()))
        .map(|(i, g)| {
            FieldError::forbidden(
                format!("spec.schedulingGates[{i}].name"),
                format!("only deletion is allowed, but found new scheduling gate '{}'", g.name),
            )
        })
        .collect()
}

/// A copy of `new` with the fields a pod update may change taken from `old`.
fn munge_updatable_fields(new: &PodSpec, old: &PodSpec) -> PodSpec {
    let mut munged = new.clone();
    for (c, o) in munged.containers.iter_mut().zip(&old.containers) {
        c.image.clone_from(&o.image);
    }
    if let (Some(cs), Some(os)) = (munged.init_containers.as_mut(), old.init_containers.as_ref()) {
        for (c, o) in cs.iter_mut().zip(os) {
            c.image.clone_from(&o.image);
        }
    }
    munged.active_deadline_seconds = old.active_deadline_seconds;
    munged.tolerations.clone_from(&old.tolerations);
    munged.scheduling_gates.clone_from(&old.scheduling_gates);
    if old.termination_grace_period_seconds.is_some_and(|g| g < 0) && munged.termination_grace_period_seconds == Some(1)
    {
        munged.termination_grace_period_seconds = old.termination_grace_period_seconds;
    }
    munged
}

/// The differences between two pod specs, one `path: old -> new` line per changed field,
/// ignoring the difference between absent, null and empty values.
fn spec_diff(old: &PodSpec, new: &PodSpec) -> Vec<String> {
    let (Ok(old), Ok(new)) = (serde_json::to_value(old), serde_json::to_value(new)) else {
        return vec!["  (spec could not be compared)".to_string()];
    };
    let mut out = Vec::new();
    diff_values(&normalize(old), &normalize(new), "spec", &mut out);
    if out.len() > MAX_DIFF_LINES {
        let more = out.len() - MAX_DIFF_LINES;
        out.truncate(MAX_DIFF_LINES);
        out.push(format!("  ... and {more} more"));
    }
    out
}

/// Drops nulls, empty lists and empty objects, recursively.
fn normalize(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            Value::Object(map.into_iter().map(|(k, v)| (k, normalize(v))).filter(|(_, v)| !is_empty_value(v)).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(normalize).collect()),
        other => other,
    }
}

fn is_empty_value(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

fn diff_values(old: &Value, new: &Value, path: &str, out: &mut Vec<String>) {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let keys: std::collections::BTreeSet<&String> = o.keys().chain(n.keys()).collect();
            for key in keys {
                let (ov, nv) = (o.get(key).unwrap_or(&Value::Null), n.get(key).unwrap_or(&Value::Null));
                diff_values(ov, nv, &format!("{path}.{key}"), out);
            }
        }
        (Value::Array(o), Value::Array(n)) if o.len() == n.len() => {
            for (i, (ov, nv)) in o.iter().zip(n).enumerate() {
                diff_values(ov, nv, &format!("{path}[{i}]"), out);
            }
        }
        _ if old != new => out.push(format!("  {path}: {old} -> {new}")),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CauseType;
    use serde_json::json;

    /// A pod as it looks after defaulting, with `spec` merged over the defaults.
    fn pod_json(spec: Value) -> Value {
        let mut base = json!({
            "restartPolicy": "Always", "dnsPolicy": "ClusterFirst", "terminationGracePeriodSeconds": 30,
            "schedulerName": "default-scheduler", "securityContext": {}, "serviceAccountName": "default",
            "containers": [{"name": "app", "image": "nginx", "imagePullPolicy": "Always",
                "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"}]
        });
        if let (Some(b), Some(s)) = (base.as_object_mut(), spec.as_object()) {
            b.extend(s.clone());
        }
        json!({"metadata": {"name": "web", "namespace": "default"}, "spec": base})
    }

    fn make(spec: Value) -> Pod {
        serde_json::from_value(pod_json(spec)).unwrap()
    }

    fn fields(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(|e| format!("{} {:?}", e.field, e.cause)).collect()
    }

    #[test]
    fn minimal_pod_is_valid() {
        assert!(pod(&make(json!({})), None).is_empty());
    }

    #[test]
    fn missing_spec_reports_required_fields() {
        let p: Pod = serde_json::from_value(json!({"metadata": {"name": "web"}})).unwrap();
        assert_eq!(
            fields(&pod(&p, None)),
            [
                "spec.terminationGracePeriodSeconds Required",
                "spec.containers Required",
                "spec.restartPolicy Required",
                "spec.dnsPolicy Required"
            ]
        );
    }

    #[test]
    fn pod_level_fields() {
        let p = make(json!({
            "restartPolicy": "Sometimes", "dnsPolicy": "Cluster", "terminationGracePeriodSeconds": -1,
            "nodeSelector": {"disk type": "ssd"}, "serviceAccountName": "Bad_SA", "nodeName": "node_1",
            "activeDeadlineSeconds": 0, "hostname": "a.b", "priorityClassName": "high",
            "preemptionPolicy": "Maybe", "readinessGates": [{"conditionType": "bad/type/x"}],
            "schedulingGates": [{"name": "example.com/wait"}, {"name": "example.com/wait"}],
            "hostAliases": [{"ip": "not-an-ip", "hostnames": ["ok.example", "Bad"]}]
        }));
        assert_eq!(
            fields(&pod(&p, None)),
            [
                "spec.terminationGracePeriodSeconds Invalid",
                "spec.restartPolicy NotSupported",
                "spec.dnsPolicy NotSupported",
                "spec.nodeSelector Invalid",
                "spec.readinessGates[0].conditionType Invalid",
                "spec.schedulingGates[1] Duplicate",
                "spec.serviceAccountName Invalid",
                "spec.nodeName Invalid",
                "spec.hostname Invalid",
                "spec.activeDeadlineSeconds Invalid",
                "spec.hostAliases[0].ip Invalid",
                "spec.hostAliases[0].hostnames[1] Invalid",
                "spec.preemptionPolicy NotSupported",
                "spec.nodeName Forbidden",
            ]
        );
        assert_eq!(
            pod(&p, None)[2].to_string(),
            "spec.dnsPolicy: Unsupported value: \"Cluster\": supported values: \"ClusterFirstWithHostNet\", \"ClusterFirst\", \"Default\", \"None\""
        );
    }

    #[test]
    fn dns_config() {
        let errs = pod(&make(json!({"dnsPolicy": "None"})), None);
        assert_eq!(
            errs[0].to_string(),
            "spec.dnsConfig: Required value: must provide `dnsConfig` when `dnsPolicy` is None"
        );
        let errs = pod(&make(json!({"dnsPolicy": "None", "dnsConfig": {}})), None);
        assert_eq!(errs[0].field, "spec.dnsConfig.nameservers");
        let ok = make(
            json!({"dnsPolicy": "None", "dnsConfig": {"nameservers": ["10.0.0.10"], "searches": ["svc.cluster.local.", "."], "options": [{"name": "ndots", "value": "2"}]}}),
        );
        assert!(pod(&ok, None).is_empty());
        let bad = make(
            json!({"dnsConfig": {"nameservers": ["1.1.1.1", "2.2.2.2", "3.3.3.3", "x"], "searches": ["Bad"], "options": [{}]}}),
        );
        assert_eq!(
            fields(&pod(&bad, None)),
            [
                "spec.dnsConfig.nameservers Invalid",
                "spec.dnsConfig.nameservers[3] Invalid",
                "spec.dnsConfig.searches[0] Invalid",
                "spec.dnsConfig.options[0] Required",
            ]
        );
    }

    #[test]
    fn host_network_ports() {
        let spec = |host_port: i32| {
            json!({"hostNetwork": true, "containers": [{"name": "app", "image": "nginx", "imagePullPolicy": "Always",
                "terminationMessagePolicy": "File", "ports": [{"containerPort": 80, "hostPort": host_port, "protocol": "TCP"}]}]})
        };
        assert!(pod(&make(spec(80)), None).is_empty());
        let errs = pod(&make(spec(8080)), None);
        assert_eq!(errs[0].to_string(), "spec.containers[0].ports[0].hostPort: Invalid value: 8080: must match `containerPort` when `hostNetwork` is true");
        let template_spec: PodSpec = serde_json::from_value(pod_json(spec(0))["spec"].clone()).unwrap();
        assert!(validate_pod_spec(&template_spec, "spec.template.spec", false).is_empty());
    }

    #[test]
    fn tolerations() {
        let p = make(json!({"tolerations": [
            {"operator": "Exists"},
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            {"key": "k", "value": "v", "effect": "NoSchedule"},
            {"operator": "Equal", "value": "v"},
            {"key": "k", "tolerationSeconds": 5, "effect": "NoSchedule"},
            {"key": "k", "operator": "Exists", "value": "v"},
            {"key": "k", "operator": "Lt"},
            {"key": "bad key", "effect": "Never"},
            {"key": "k", "value": "bad value"}
        ]}));
        assert_eq!(
            fields(&pod(&p, None)),
            [
                "spec.tolerations[3].operator Invalid",
                "spec.tolerations[4].effect Invalid",
                "spec.tolerations[5].operator Invalid",
                "spec.tolerations[6].operator NotSupported",
                "spec.tolerations[7].key Invalid",
                "spec.tolerations[7].effect NotSupported",
                "spec.tolerations[8].operator Invalid",
            ]
        );
    }

    #[test]
    fn create_only_rules() {
        let p = make(json!({
            "ephemeralContainers": [{"name": "debug", "image": "busybox"}],
            "nodeName": "n1", "schedulingGates": [{"name": "example.com/gate"}],
            "volumes": [{"name": "token", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]}}],
            "serviceAccountName": ""
        }));
        assert_eq!(
            fields(&pod(&p, None)),
            [
                "spec.volumes[0].projected.sources[0].serviceAccountToken Forbidden",
                "spec.ephemeralContainers Forbidden",
                "spec.nodeName Forbidden",
            ]
        );
        let p = make(
            json!({"containers": [{"name": "app", "image": "nginx ", "imagePullPolicy": "Always", "terminationMessagePolicy": "File"}]}),
        );
        assert_eq!(pod(&p, None)[0].detail, "must not have leading or trailing whitespace");
    }

    #[test]
    fn template() {
        let template: PodTemplateSpec = serde_json::from_value(json!({
            "metadata": {"labels": {"app": "web", "bad key": "x"}, "annotations": {"a/b/c": "x"}},
            "spec": pod_json(json!({"ephemeralContainers": [{"name": "d", "image": "busybox"}]}))["spec"].clone()
        }))
        .unwrap();
        assert_eq!(
            fields(&validate_pod_template(&template, "spec.template")),
            [
                "spec.template.labels Invalid",
                "spec.template.annotations Invalid",
                "spec.template.spec.ephemeralContainers Forbidden"
            ]
        );
    }

    /// A pod as the API server would store it (fully defaulted).
    fn defaulted(spec: Value) -> Pod {
        let mut p = make(spec);
        crate::defaults::pod(&mut p);
        p
    }

    #[test]
    fn updates() {
        let old = make(
            json!({"activeDeadlineSeconds": 100, "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 10}]}),
        );
        let allowed = defaulted(json!({
            "activeDeadlineSeconds": 50,
            "containers": [{"name": "app", "image": "nginx:2", "imagePullPolicy": "Always", "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"}],
            "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 20}, {"key": "new", "operator": "Exists"}]
        }));
        assert!(pod(&allowed, Some(&old)).is_empty(), "{:?}", pod(&allowed, Some(&old)));

        let mut changed = allowed.clone();
        if let Some(spec) = changed.spec.as_mut() {
            spec.node_name = Some("n2".into());
            spec.containers[0].env = Some(Vec::new());
        }
        let errs = pod(&changed, Some(&old));
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].cause, CauseType::Forbidden);
        assert_eq!(errs[0].field, "spec");
        assert!(errs[0].detail.starts_with("pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)\n"));
        assert!(errs[0].detail.ends_with("  spec.nodeName: null -> \"n2\""), "{}", errs[0].detail);

        let more = defaulted(json!({"activeDeadlineSeconds": 200}));
        assert_eq!(pod(&more, Some(&old))[0].detail, "must be less than or equal to previous value");
        let unset = defaulted(json!({"tolerations": [{"key": "k", "operator": "Exists", "effect": "NoExecute"}]}));
        assert_eq!(pod(&unset, Some(&old))[0].detail, "must not update from a positive integer to nil value");
        let dropped = defaulted(json!({"activeDeadlineSeconds": 100}));
        assert_eq!(
            pod(&dropped, Some(&old))[0].to_string(),
            "spec.tolerations: Forbidden: existing toleration can not be modified except its tolerationSeconds"
        );

        let two = make(
            json!({"activeDeadlineSeconds": 100, "tolerations": old.spec.as_ref().and_then(|s| s.tolerations.clone()),
            "containers": [{"name": "a", "image": "x", "imagePullPolicy": "Always", "terminationMessagePolicy": "File"},
                           {"name": "b", "image": "x", "imagePullPolicy": "Always", "terminationMessagePolicy": "File"}]}),
        );
        assert_eq!(
            pod(&two, Some(&old))[0].to_string(),
            "spec.containers: Forbidden: pod updates may not add or remove containers"
        );

        let gated_old = defaulted(json!({"schedulingGates": [{"name": "example.com/a"}]}));
        let gated_new = defaulted(json!({"schedulingGates": [{"name": "example.com/b"}]}));
        assert_eq!(pod(&gated_new, Some(&gated_old))[0].field, "spec.schedulingGates[0].name");
        let ungated = defaulted(json!({}));
        assert!(pod(&ungated, Some(&gated_old)).is_empty());
    }

    #[test]
    fn stored_pods_are_compared_after_defaulting() {
        let raw: Pod = serde_json::from_value(
            json!({"metadata": {"name": "web"}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}),
        )
        .unwrap();
        let mut defaulted = raw.clone();
        crate::defaults::pod(&mut defaulted);
        assert!(pod(&defaulted, Some(&raw)).is_empty());
    }

    #[test]
    fn diff_ignores_empty_values() {
        let a: PodSpec =
            serde_json::from_value(json!({"containers": [{"name": "a", "env": []}], "volumes": null})).unwrap();
        let b: PodSpec = serde_json::from_value(json!({"containers": [{"name": "a"}]})).unwrap();
        assert!(spec_diff(&a, &b).is_empty());
        let c: PodSpec = serde_json::from_value(json!({"containers": [{"name": "b"}]})).unwrap();
        assert_eq!(spec_diff(&a, &c), ["  spec.containers[0].name: \"a\" -> \"b\""]);
    }
}
