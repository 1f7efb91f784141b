//! ReplicaSet and Deployment validation (`pkg/apis/apps/validation`).

use super::meta::{
    go_selector, label_selector_is_empty, label_selector_matches, validate_label_selector, validate_object_meta,
    validate_object_meta_update,
};
use super::names::{is_valid_percent, name_is_dns1123_subdomain};
use super::pod::validate_pod_template;
use super::{go_string_map, int_or_string, non_negative, FIELD_IMMUTABLE};
use crate::FieldError;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStrategy, ReplicaSet, RollingUpdateDeployment};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Validates a ReplicaSet on create or update.
pub(super) fn replica_set(new: &ReplicaSet, old: Option<&ReplicaSet>) -> Vec<FieldError> {
    let mut errs = validate_object_meta(&new.metadata, true, name_is_dns1123_subdomain, "metadata");
    let spec = &new.spec;
    errs.extend(non_negative(spec.replicas.map(i64::from), "spec.replicas"));
    errs.extend(non_negative(spec.min_ready_seconds.map(i64::from), "spec.minReadySeconds"));
    let selector_ok = validate_selector(&spec.selector, &mut errs);
    match &spec.template {
        None => errs.push(FieldError::required("spec.template", "")),
        Some(template) => errs.extend(validate_template(template, &spec.selector, selector_ok)),
    }
    if let Some(old) = old {
        errs.extend(validate_object_meta_update(&new.metadata, &old.metadata, "metadata"));
        errs.extend(selector_immutable(&spec.selector, &old.spec.selector));
    }
    errs
}

/// Validates a Deployment on create or update.
pub(super) fn deployment(new: &Deployment, old: Option<&Deployment>) -> Vec<FieldError> {
    let mut errs = validate_object_meta(&new.metadata, true, name_is_dns1123_subdomain, "metadata");
    let spec = &new.spec;
    errs.extend(non_negative(spec.replicas.map(i64::from), "spec.replicas"));
    let selector_ok = validate_selector(&spec.selector, &mut errs);
    errs.extend(validate_template(&spec.template, &spec.selector, selector_ok));
    errs.extend(validate_strategy(spec.strategy.as_ref()));
    errs.extend(non_negative(spec.min_ready_seconds.map(i64::from), "spec.minReadySeconds"));
    errs.extend(non_negative(spec.revision_history_limit.map(i64::from), "spec.revisionHistoryLimit"));
    if let Some(deadline) = spec.progress_deadline_seconds {
        errs.extend(non_negative(Some(deadline.into()), "spec.progressDeadlineSeconds"));
        if deadline <= spec.min_ready_seconds.unwrap_or(0) {
            errs.push(FieldError::invalid(
                "spec.progressDeadlineSeconds",
                deadline,
                "must be greater than minReadySeconds",
            ));
        }
    }
    if let Some(old) = old {
        errs.extend(validate_object_meta_update(&new.metadata, &old.metadata, "metadata"));
        errs.extend(selector_immutable(&spec.selector, &old.spec.selector));
    }
    errs
}

/// The selector must be present, syntactically valid and non-empty; returns whether it can be
/// used to match the template.
///
/// A selector without `matchLabels` and `matchExpressions` decodes the same whether it was
/// omitted or written as `{}`; it is reported as missing, the common mistake.
fn validate_selector(selector: &LabelSelector, errs: &mut Vec<FieldError>) -> bool {
    if selector.match_labels.is_none() && selector.match_expressions.is_none() {
        errs.push(FieldError::required("spec.selector", ""));
        return false;
    }
    let syntax = validate_label_selector(selector, "spec.selector");
    let ok = syntax.is_empty();
    errs.extend(syntax);
    if label_selector_is_empty(selector) {
        errs.push(FieldError::invalid(
            "spec.selector",
            go_selector(selector),
            "empty selector is invalid for deployment",
        ));
    }
    if !ok {
        errs.push(FieldError::invalid("spec.selector", go_selector(selector), "invalid label selector"));
    }
    ok
}

/// The template must match the selector, be a valid pod template, restart Always and have no
/// active deadline (`ValidatePodTemplateSpecForReplicaSet`).
fn validate_template(template: &PodTemplateSpec, selector: &LabelSelector, selector_ok: bool) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let labels = template.metadata.as_ref().and_then(|m| m.labels.as_ref());
    if selector_ok && !label_selector_is_empty(selector) && !label_selector_matches(selector, labels) {
        errs.push(FieldError::invalid(
            "spec.template.metadata.labels",
            go_string_map(labels),
            "`selector` does not match template `labels`",
        ));
    }
    errs.extend(validate_pod_template(template, "spec.template"));
    let spec = template.spec.as_ref();
    let restart_policy = spec.and_then(|s| s.restart_policy.as_deref()).unwrap_or_default();
    if restart_policy != "Always" {
        errs.push(FieldError::not_supported("spec.template.spec.restartPolicy", restart_policy, &["Always"]));
    }
    if let Some(deadline) = spec.and_then(|s| s.active_deadline_seconds) {
        errs.push(FieldError::invalid(
            "spec.template.spec.activeDeadlineSeconds",
            deadline,
            "activeDeadlineSeconds in ReplicaSet is not Supported",
        ));
    }
    errs
}

/// On update the selector may not change (apps/v1).
fn selector_immutable(new: &LabelSelector, old: &LabelSelector) -> Option<FieldError> {
    (old != new).then(|| FieldError::invalid("spec.selector", go_selector(new), FIELD_IMMUTABLE))
}

/// The strategy is Recreate (without rollingUpdate) or RollingUpdate with valid parameters.
fn validate_strategy(strategy: Option<&DeploymentStrategy>) -> Vec<FieldError> {
    let strategy_type = strategy.and_then(|s| s.type_.as_deref()).unwrap_or_default();
    let rolling_update = strategy.and_then(|s| s.rolling_update.as_ref());
    match strategy_type {
        "Recreate" if rolling_update.is_some() => vec![FieldError::forbidden(
            "spec.strategy.rollingUpdate",
            "may not be specified when strategy `type` is 'Recreate'",
        )],
        "Recreate" => Vec::new(),
        "RollingUpdate" => match rolling_update {
            None => {
                vec![FieldError::required("spec.strategy.rollingUpdate", "this should be defaulted and never be nil")]
            }
            Some(ru) => validate_rolling_update(ru),
        },
        other => vec![FieldError::not_supported("spec.strategy.type", other, &["Recreate", "RollingUpdate"])],
    }
}

fn validate_rolling_update(ru: &RollingUpdateDeployment) -> Vec<FieldError> {
    let zero = IntOrString::Int(0);
    let max_unavailable = ru.max_unavailable.as_ref().unwrap_or(&zero);
    let max_surge = ru.max_surge.as_ref().unwrap_or(&zero);
    let unavailable_path = "spec.strategy.rollingUpdate.maxUnavailable";
    let mut errs = positive_int_or_percent(max_unavailable, unavailable_path);
    errs.extend(positive_int_or_percent(max_surge, "spec.strategy.rollingUpdate.maxSurge"));
    if int_or_percent_value(max_unavailable) == 0 && int_or_percent_value(max_surge) == 0 {
        errs.push(FieldError::invalid(
            unavailable_path,
            int_or_string(max_unavailable),
            "may not be 0 when `maxSurge` is 0",
        ));
    }
    if percent_value(max_unavailable).is_some_and(|p| p > 100) {
        errs.push(FieldError::invalid(
            unavailable_path,
            int_or_string(max_unavailable),
            "must not be greater than 100%",
        ));
    }
    errs
}

/// An int ≥ 0 or a percentage string like `25%`.
fn positive_int_or_percent(value: &IntOrString, path: &str) -> Vec<FieldError> {
    match value {
        IntOrString::String(s) => {
            is_valid_percent(s).into_iter().map(|m| FieldError::invalid(path, int_or_string(value), m)).collect()
        }
        IntOrString::Int(i) => non_negative(Some((*i).into()), path).into_iter().collect(),
    }
}

fn percent_value(value: &IntOrString) -> Option<i64> {
    match value {
        IntOrString::String(s) if is_valid_percent(s).is_empty() => s.trim_end_matches('%').parse().ok(),
        _ => None,
    }
}

/// The number in an int or percentage (`25%` → 25); invalid strings count as 0, like Go.
fn int_or_percent_value(value: &IntOrString) -> i64 {
    match value {
        IntOrString::Int(i) => (*i).into(),
        IntOrString::String(_) => percent_value(value).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CauseType;
    use serde_json::{json, Value};

    fn template() -> Value {
        json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {
                "restartPolicy": "Always", "dnsPolicy": "ClusterFirst", "terminationGracePeriodSeconds": 30,
                "containers": [{"name": "web", "image": "nginx", "imagePullPolicy": "Always", "terminationMessagePolicy": "File"}]
            }
        })
    }

    fn deploy(spec: Value) -> Deployment {
        let mut base = json!({
            "replicas": 1, "selector": {"matchLabels": {"app": "web"}}, "template": template(),
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600
        });
        if let (Some(b), Some(s)) = (base.as_object_mut(), spec.as_object()) {
            b.extend(s.clone());
        }
        serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "default"}, "spec": base})).unwrap()
    }

    fn rs(spec: Value) -> ReplicaSet {
        let mut base = json!({"replicas": 1, "selector": {"matchLabels": {"app": "web"}}, "template": template()});
        if let (Some(b), Some(s)) = (base.as_object_mut(), spec.as_object()) {
            b.extend(s.clone());
        }
        serde_json::from_value(json!({"metadata": {"name": "web-abc", "namespace": "default"}, "spec": base})).unwrap()
    }

    fn fields(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(|e| format!("{} {:?}", e.field, e.cause)).collect()
    }

    #[test]
    fn valid_objects() {
        assert!(deployment(&deploy(json!({})), None).is_empty());
        assert!(deployment(&deploy(json!({"strategy": {"type": "Recreate"}})), None).is_empty());
        assert!(replica_set(&rs(json!({})), None).is_empty());
        let exprs =
            json!({"selector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "api"]}]}});
        assert!(replica_set(&rs(exprs), None).is_empty());
    }

    #[test]
    fn selector_rules() {
        let errs = deployment(&deploy(json!({"selector": {"matchLabels": {"app": "other"}}})), None);
        assert_eq!(
            errs[0].to_string(),
            "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"web\"}: `selector` does not match template `labels`"
        );
        let errs = deployment(&deploy(json!({"selector": {}})), None);
        assert_eq!(fields(&errs), ["spec.selector Required"]);
        let errs = deployment(&deploy(json!({"selector": {"matchLabels": {}}})), None);
        assert_eq!(fields(&errs), ["spec.selector Invalid"]);
        assert_eq!(errs[0].detail, "empty selector is invalid for deployment");
        let errs =
            replica_set(&rs(json!({"selector": {"matchExpressions": [{"key": "app", "operator": "Near"}]}})), None);
        assert_eq!(fields(&errs), ["spec.selector.matchExpressions[0].operator Invalid", "spec.selector Invalid"]);
        let no_spec: Deployment = serde_json::from_value(json!({"metadata": {"name": "d"}})).unwrap();
        assert_eq!(
            fields(&deployment(&no_spec, None)),
            [
                "spec.selector Required",
                "spec.template.spec.terminationGracePeriodSeconds Required",
                "spec.template.spec.containers Required",
                "spec.template.spec.restartPolicy Required",
                "spec.template.spec.dnsPolicy Required",
                "spec.template.spec.restartPolicy NotSupported",
                "spec.strategy.type NotSupported",
            ]
        );
        let no_template = rs(json!({"template": null}));
        assert_eq!(fields(&replica_set(&no_template, None)), ["spec.template Required"]);
    }

    #[test]
    fn counts_and_template_rules() {
        let mut t = template();
        t["spec"]["restartPolicy"] = json!("Never");
        t["spec"]["activeDeadlineSeconds"] = json!(10);
        let errs = replica_set(&rs(json!({"replicas": -1, "minReadySeconds": -1, "template": t})), None);
        assert_eq!(
            fields(&errs),
            [
                "spec.replicas Invalid",
                "spec.minReadySeconds Invalid",
                "spec.template.spec.restartPolicy NotSupported",
                "spec.template.spec.activeDeadlineSeconds Invalid",
            ]
        );
        assert_eq!(errs[0].to_string(), "spec.replicas: Invalid value: -1: must be greater than or equal to 0");
        let mut t = template();
        t["spec"]["containers"] = json!([]);
        let errs =
            deployment(&deploy(json!({"template": t, "revisionHistoryLimit": -1, "minReadySeconds": 600})), None);
        assert_eq!(
            fields(&errs),
            [
                "spec.template.spec.containers Required",
                "spec.revisionHistoryLimit Invalid",
                "spec.progressDeadlineSeconds Invalid"
            ]
        );
        assert_eq!(
            errs[2].to_string(),
            "spec.progressDeadlineSeconds: Invalid value: 600: must be greater than minReadySeconds"
        );
    }

    #[test]
    fn strategies() {
        let both_zero = deploy(
            json!({"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}}}),
        );
        let errs = deployment(&both_zero, None);
        assert_eq!(errs.len(), 1);
        assert_eq!(
            errs[0].to_string(),
            "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 0: may not be 0 when `maxSurge` is 0"
        );
        let pct_zero = deploy(
            json!({"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "0%", "maxUnavailable": 0}}}),
        );
        assert_eq!(deployment(&pct_zero, None).len(), 1);
        let bad = deploy(
            json!({"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "x", "maxUnavailable": "150%"}}}),
        );
        let errs = deployment(&bad, None);
        assert_eq!(
            fields(&errs),
            ["spec.strategy.rollingUpdate.maxSurge Invalid", "spec.strategy.rollingUpdate.maxUnavailable Invalid"]
        );
        assert_eq!(errs[1].detail, "must not be greater than 100%");
        let negative = deploy(
            json!({"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": -1, "maxUnavailable": 1}}}),
        );
        assert_eq!(deployment(&negative, None)[0].detail, "must be greater than or equal to 0");
        let recreate = deploy(json!({"strategy": {"type": "Recreate", "rollingUpdate": {}}}));
        assert_eq!(deployment(&recreate, None)[0].cause, CauseType::Forbidden);
        let unknown = deploy(json!({"strategy": {"type": "BlueGreen"}}));
        assert_eq!(
            deployment(&unknown, None)[0].to_string(),
            "spec.strategy.type: Unsupported value: \"BlueGreen\": supported values: \"Recreate\", \"RollingUpdate\""
        );
        let missing = deploy(json!({"strategy": {"type": "RollingUpdate"}}));
        assert_eq!(deployment(&missing, None)[0].cause, CauseType::Required);
    }

    #[test]
    fn selector_is_immutable() {
        let old = deploy(json!({}));
        let mut t = template();
        t["metadata"]["labels"]["tier"] = json!("fe");
        let new = deploy(json!({"selector": {"matchLabels": {"app": "web", "tier": "fe"}}, "template": t}));
        let errs = deployment(&new, Some(&old));
        assert_eq!(fields(&errs), ["spec.selector Invalid"]);
        assert_eq!(errs[0].detail, FIELD_IMMUTABLE);
        assert!(deployment(&old, Some(&old)).is_empty());
        let old_rs = rs(json!({}));
        let new_rs = rs(json!({"selector": {"matchLabels": {"app": "web", "x": "y"}}}));
        assert!(replica_set(&new_rs, Some(&old_rs)).iter().any(|e| e.detail == FIELD_IMMUTABLE));
    }
}
