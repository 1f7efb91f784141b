//! ObjectMeta, labels, annotations, owner references, finalizers and label selectors, as in
//! apimachinery's `pkg/api/validation` and `pkg/apis/meta/v1/validation`.

use super::names::{is_qualified_name, is_valid_label_value, name_is_dns1123_label, NameRule};
use super::{go_string_map, go_string_slice, Raw};
use crate::FieldError;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use std::collections::BTreeMap;

/// Maximum total size of all annotation keys and values on one object (256 KiB).
pub const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;

/// Finalizer names that need no domain prefix.
const STANDARD_FINALIZERS: &[&str] = &["kubernetes", "orphan", "foregroundDeletion"];

/// Validates an object's metadata on create or update: name (with `name_rule`), namespace,
/// generation, labels, annotations, owner references and finalizers. `path` is where the
/// metadata sits (`metadata`, or `spec.template.metadata`).
///
/// For a `namespaced` kind the namespace must be a DNS label when set (the API server fills it
/// in from the URL); a cluster-scoped kind may not have one.
pub fn validate_object_meta(meta: &ObjectMeta, namespaced: bool, name_rule: NameRule, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(generate_name) = meta.generate_name.as_deref().filter(|g| !g.is_empty()) {
        for msg in name_rule(generate_name, true) {
            errs.push(FieldError::invalid(format!("{path}.generateName"), generate_name, msg));
        }
    }
    match meta.name.as_deref().filter(|n| !n.is_empty()) {
        None => errs.push(FieldError::required(format!("{path}.name"), "name or generateName is required")),
        Some(name) => {
            for msg in name_rule(name, false) {
                errs.push(FieldError::invalid(format!("{path}.name"), name, msg));
            }
        }
    }
    if let Some(ns) = meta.namespace.as_deref().filter(|n| !n.is_empty()) {
        if namespaced {
            for msg in name_is_dns1123_label(ns, false) {
                errs.push(FieldError::invalid(format!("{path}.namespace"), ns, msg));
            }
        } else {
            errs.push(FieldError::forbidden(format!("{path}.namespace"), "not allowed on this type"));
        }
    }
    if let Some(generation) = meta.generation.filter(|g| *g < 0) {
        errs.push(FieldError::invalid(format!("{path}.generation"), generation, super::IS_NEGATIVE_ERROR));
    }
    errs.extend(validate_labels(meta.labels.as_ref(), &format!("{path}.labels")));
    errs.extend(validate_annotations(meta.annotations.as_ref(), &format!("{path}.annotations")));
    errs.extend(validate_owner_references(
        meta.owner_references.as_deref().unwrap_or_default(),
        &format!("{path}.ownerReferences"),
    ));
    errs.extend(validate_finalizers(meta.finalizers.as_deref().unwrap_or_default(), &format!("{path}.finalizers")));
    errs
}

/// Checks on metadata that only apply to updates: no finalizers may be added once the object
/// is being deleted, and generation may not go backwards. (Immutability of name, namespace,
/// uid and creationTimestamp is enforced by the API server itself.)
pub fn validate_object_meta_update(new: &ObjectMeta, old: &ObjectMeta, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if old.deletion_timestamp.is_some() {
        let old_finalizers = old.finalizers.as_deref().unwrap_or_default();
        let added: Vec<String> =
            new.finalizers.iter().flatten().filter(|f| !old_finalizers.contains(f)).cloned().collect();
        if !added.is_empty() {
            let list = go_string_slice(&added);
            errs.push(FieldError::forbidden(
                format!("{path}.finalizers"),
                format!("no new finalizers can be added if the object is being deleted, found new finalizers {list:?}"),
            ));
        }
    }
    if let (Some(new_gen), Some(old_gen)) = (new.generation, old.generation) {
        if new_gen < old_gen {
            errs.push(FieldError::invalid(format!("{path}.generation"), new_gen, "must not be decremented"));
        }
    }
    errs
}

/// Validates a label map (also used for selectors and nodeSelector): keys must be qualified
/// names, values valid label values. Errors are reported on `path` itself, like Kubernetes.
pub fn validate_labels(labels: Option<&BTreeMap<String, String>>, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (key, value) in labels.into_iter().flatten() {
        errs.extend(validate_label_name(key, path));
        for msg in is_valid_label_value(value) {
            errs.push(FieldError::invalid(path, value, msg));
        }
    }
    errs
}

/// Validates one label key (a qualified name) at `path`.
pub fn validate_label_name(key: &str, path: &str) -> Vec<FieldError> {
    is_qualified_name(key).into_iter().map(|msg| FieldError::invalid(path, key, msg)).collect()
}

/// Validates annotations: keys are qualified names (case-insensitively) and keys plus values
/// total at most 256 KiB.
pub fn validate_annotations(annotations: Option<&BTreeMap<String, String>>, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut total = 0usize;
    for (key, value) in annotations.into_iter().flatten() {
        for msg in is_qualified_name(&key.to_lowercase()) {
            errs.push(FieldError::invalid(path, key, msg));
        }
        total += key.len() + value.len();
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT {
        errs.push(FieldError::too_long(path, TOTAL_ANNOTATION_SIZE_LIMIT));
    }
    errs
}

/// Validates owner references: apiVersion (with a version), kind, name and uid are required,
/// core/v1 Events may not own anything, and at most one reference may be the controller.
pub fn validate_owner_references(refs: &[OwnerReference], path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut first_controller: Option<String> = None;
    for r in refs {
        errs.extend(validate_owner_reference(r, path));
        if r.controller == Some(true) {
            let current = format!("{}/{}", r.kind, r.name);
            match &first_controller {
                Some(first) => errs.push(FieldError::invalid(
                    path,
                    Raw(format!("{} references", refs.len())),
                    format!("Only one reference can have Controller set to true. Found \"true\" in references for {first} and {current}"),
                )),
                None => first_controller = Some(current),
            }
        }
    }
    errs
}

fn validate_owner_reference(r: &OwnerReference, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let (group, version) = match r.api_version.split_once('/') {
        Some((group, version)) => (group, version),
        None => ("", r.api_version.as_str()),
    };
    if version.is_empty() {
        errs.push(FieldError::invalid(format!("{path}.apiVersion"), &r.api_version, "version must not be empty"));
    }
    if r.kind.is_empty() {
        errs.push(FieldError::invalid(format!("{path}.kind"), &r.kind, "must not be empty"));
    }
    if r.name.is_empty() {
        errs.push(FieldError::invalid(format!("{path}.name"), &r.name, "must not be empty"));
    }
    if r.uid.is_empty() {
        errs.push(FieldError::invalid(format!("{path}.uid"), &r.uid, "must not be empty"));
    }
    if group.is_empty() && version == "v1" && r.kind == "Event" {
        errs.push(FieldError::invalid(
            path,
            Raw(format!("{}/{}", r.kind, r.name)),
            "/v1, Kind=Event is disallowed from being an owner",
        ));
    }
    errs
}

/// Validates finalizer names: qualified names, and names without a domain prefix must be one
/// of the standard finalizers (`kubernetes`, `orphan`, `foregroundDeletion`); `orphan` and
/// `foregroundDeletion` are mutually exclusive.
pub fn validate_finalizers(finalizers: &[String], path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, finalizer) in finalizers.iter().enumerate() {
        errs.extend(validate_finalizer_name(finalizer, path, &format!("{path}[{i}]")));
    }
    let has = |name: &str| finalizers.iter().any(|f| f == name);
    if has("orphan") && has("foregroundDeletion") {
        errs.push(FieldError::invalid(
            path,
            go_string_slice(finalizers),
            "finalizer orphan and foregroundDeletion cannot be both set",
        ));
    }
    errs
}

/// Validates one finalizer name; `list_path` is where the qualified-name error goes (the list,
/// as apimachinery reports it) and `item_path` where the standard-name error goes.
pub fn validate_finalizer_name(name: &str, list_path: &str, item_path: &str) -> Vec<FieldError> {
    let mut errs: Vec<FieldError> =
        is_qualified_name(name).into_iter().map(|msg| FieldError::invalid(list_path, name, msg)).collect();
    if !name.contains('/') && !STANDARD_FINALIZERS.contains(&name) {
        errs.push(FieldError::invalid(
            item_path,
            name,
            "name is neither a standard finalizer name nor is it fully qualified",
        ));
    }
    errs
}

/// Validates a label selector's syntax: matchLabels as labels, and each matchExpressions entry
/// with a known operator, values present exactly when the operator needs them, a qualified key
/// and valid values.
pub fn validate_label_selector(selector: &LabelSelector, path: &str) -> Vec<FieldError> {
    let mut errs = validate_labels(selector.match_labels.as_ref(), &format!("{path}.matchLabels"));
    for (i, req) in selector.match_expressions.iter().flatten().enumerate() {
        let req_path = format!("{path}.matchExpressions[{i}]");
        let values = req.values.as_deref().unwrap_or_default();
        match req.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => errs.push(FieldError::required(
                format!("{req_path}.values"),
                "must be specified when `operator` is 'In' or 'NotIn'",
            )),
            "Exists" | "DoesNotExist" if !values.is_empty() => errs.push(FieldError::forbidden(
                format!("{req_path}.values"),
                "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => {
                errs.push(FieldError::invalid(format!("{req_path}.operator"), other, "not a valid selector operator"))
            }
        }
        errs.extend(validate_label_name(&req.key, &format!("{req_path}.key")));
        for (j, value) in values.iter().enumerate() {
            for msg in is_valid_label_value(value) {
                errs.push(FieldError::invalid(format!("{req_path}.values[{j}]"), value, msg));
            }
        }
    }
    errs
}

/// Whether a selector has no requirements at all (matches everything).
pub fn label_selector_is_empty(selector: &LabelSelector) -> bool {
    selector.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
        && selector.match_expressions.as_ref().is_none_or(Vec::is_empty)
}

/// Whether `labels` satisfy every requirement of `selector`. Unknown operators never match.
pub fn label_selector_matches(selector: &LabelSelector, labels: Option<&BTreeMap<String, String>>) -> bool {
    let get = |key: &str| labels.and_then(|l| l.get(key));
    let labels_ok = selector.match_labels.iter().flatten().all(|(k, v)| get(k) == Some(v));
    let exprs_ok = selector.match_expressions.iter().flatten().all(|req| {
        let values = req.values.as_deref().unwrap_or_default();
        let value = get(&req.key);
        match req.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    labels_ok && exprs_ok
}

/// Renders a selector roughly as Go's `%#v` would, for error values.
pub(crate) fn go_selector(selector: &LabelSelector) -> Raw {
    let labels = go_string_map(selector.match_labels.as_ref());
    let exprs = selector.match_expressions.as_ref().map_or(0, Vec::len);
    Raw(format!("&v1.LabelSelector{{MatchLabels:{labels:?}, MatchExpressions:[{exprs} requirements]}}"))
}

#[cfg(test)]
mod tests {
    use super::super::names::name_is_dns1123_subdomain;
    use super::*;
    use crate::CauseType;
    use serde_json::json;

    fn meta(v: serde_json::Value) -> ObjectMeta {
        serde_json::from_value(v).unwrap()
    }

    fn check(v: serde_json::Value) -> Vec<FieldError> {
        validate_object_meta(&meta(v), true, name_is_dns1123_subdomain, "metadata")
    }

    #[test]
    fn minimal_metadata_is_valid() {
        assert!(check(json!({"name": "web", "namespace": "default"})).is_empty());
        assert!(check(json!({"name": "web"})).is_empty());
        let full = json!({
            "name": "web.example", "namespace": "team-a", "generateName": "web-",
            "labels": {"app.kubernetes.io/name": "web", "tier": ""},
            "annotations": {"Example.com/Note": "anything at all"},
            "finalizers": ["example.com/cleanup", "kubernetes"],
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u1", "controller": true}]
        });
        assert!(check(full).is_empty());
    }

    #[test]
    fn name_rules() {
        let errs = check(json!({}));
        assert_eq!(errs[0].to_string(), "metadata.name: Required value: name or generateName is required");
        let errs = check(json!({"name": "Web"}));
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "metadata.name");
        assert_eq!(errs[0].cause, CauseType::Invalid);
        let errs = check(json!({"name": "web", "generateName": "Web-"}));
        assert_eq!(errs[0].field, "metadata.generateName");
        let errs = check(json!({"name": "web", "namespace": "My_NS"}));
        assert_eq!(errs[0].field, "metadata.namespace");
        let errs = validate_object_meta(
            &meta(json!({"name": "n1", "namespace": "x"})),
            false,
            name_is_dns1123_subdomain,
            "metadata",
        );
        assert_eq!(errs[0].to_string(), "metadata.namespace: Forbidden: not allowed on this type");
        let errs = check(json!({"name": "web", "generation": -1}));
        assert_eq!(errs[0].to_string(), "metadata.generation: Invalid value: -1: must be greater than or equal to 0");
    }

    #[test]
    fn labels_and_annotations() {
        let errs = check(json!({"name": "w", "labels": {"bad key": "ok", "ok": "bad value"}}));
        assert_eq!(errs.len(), 2);
        assert!(errs.iter().all(|e| e.field == "metadata.labels" && e.cause == CauseType::Invalid));
        assert_eq!(errs[0].value.as_deref(), Some("\"bad key\""));
        assert_eq!(errs[1].value.as_deref(), Some("\"bad value\""));
        let errs = check(json!({"name": "w", "annotations": {"a/b/c": "x"}}));
        assert_eq!(errs[0].field, "metadata.annotations");
        let big = "x".repeat(TOTAL_ANNOTATION_SIZE_LIMIT);
        let errs = check(json!({"name": "w", "annotations": {"k": big}}));
        assert_eq!(errs[0].to_string(), "metadata.annotations: Too long: may not be more than 262144 bytes");
    }

    #[test]
    fn owner_references() {
        let errs =
            check(json!({"name": "w", "ownerReferences": [{"apiVersion": "", "kind": "", "name": "", "uid": ""}]}));
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "metadata.ownerReferences.apiVersion",
                "metadata.ownerReferences.kind",
                "metadata.ownerReferences.name",
                "metadata.ownerReferences.uid"
            ]
        );
        assert_eq!(errs[0].detail, "version must not be empty");
        let two = json!({"name": "w", "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "a", "uid": "1", "controller": true},
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "b", "uid": "2", "controller": true}
        ]});
        let errs = check(two);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "metadata.ownerReferences");
        assert!(errs[0].detail.ends_with("references for ReplicaSet/a and ReplicaSet/b"));
        let event =
            json!({"name": "w", "ownerReferences": [{"apiVersion": "v1", "kind": "Event", "name": "e", "uid": "1"}]});
        assert!(check(event)[0].detail.contains("is disallowed from being an owner"));
    }

    #[test]
    fn finalizers() {
        let errs = check(json!({"name": "w", "finalizers": ["cleanup"]}));
        assert_eq!(
            errs[0].to_string(),
            "metadata.finalizers[0]: Invalid value: \"cleanup\": name is neither a standard finalizer name nor is it fully qualified"
        );
        let errs = check(json!({"name": "w", "finalizers": ["example.com/bad name"]}));
        assert_eq!(errs[0].field, "metadata.finalizers");
        let errs = check(json!({"name": "w", "finalizers": ["orphan", "foregroundDeletion"]}));
        assert_eq!(errs.len(), 1);
        assert!(errs[0].detail.contains("cannot be both set"));
    }

    #[test]
    fn update_rules() {
        let old = meta(
            json!({"name": "w", "deletionTimestamp": "2026-01-01T00:00:00Z", "finalizers": ["a.io/x"], "generation": 3}),
        );
        let new = meta(json!({"name": "w", "finalizers": ["a.io/x", "a.io/y"], "generation": 2}));
        let errs = validate_object_meta_update(&new, &old, "metadata");
        assert_eq!(errs.len(), 2);
        assert_eq!(errs[0].cause, CauseType::Forbidden);
        assert!(errs[0].detail.ends_with("found new finalizers []string{\"a.io/y\"}"));
        assert_eq!(errs[1].to_string(), "metadata.generation: Invalid value: 2: must not be decremented");
        assert!(validate_object_meta_update(&old, &old, "metadata").is_empty());
    }

    #[test]
    fn selectors() {
        let sel: LabelSelector = serde_json::from_value(json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["fe", "be"]},
                {"key": "canary", "operator": "DoesNotExist"},
                {"key": "env", "operator": "NotIn", "values": ["prod"]},
                {"key": "app", "operator": "Exists"}
            ]
        }))
        .unwrap();
        assert!(validate_label_selector(&sel, "spec.selector").is_empty());
        let labels: BTreeMap<String, String> =
            [("app", "web"), ("tier", "fe")].map(|(k, v)| (k.into(), v.into())).into();
        assert!(label_selector_matches(&sel, Some(&labels)));
        let mut canary = labels.clone();
        canary.insert("canary".into(), "1".into());
        assert!(!label_selector_matches(&sel, Some(&canary)));
        assert!(!label_selector_matches(&sel, None));
        assert!(!label_selector_is_empty(&sel));
        assert!(label_selector_is_empty(&LabelSelector::default()));

        let bad: LabelSelector = serde_json::from_value(json!({"matchExpressions": [
            {"key": "a", "operator": "In"},
            {"key": "b", "operator": "Exists", "values": ["x"]},
            {"key": "c", "operator": "Near"},
            {"key": "bad key", "operator": "NotIn", "values": ["bad value"]}
        ]}))
        .unwrap();
        let errs = validate_label_selector(&bad, "spec.selector");
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.selector.matchExpressions[0].values",
                "spec.selector.matchExpressions[1].values",
                "spec.selector.matchExpressions[2].operator",
                "spec.selector.matchExpressions[3].key",
                "spec.selector.matchExpressions[3].values[0]"
            ]
        );
        assert_eq!(errs[0].cause, CauseType::Required);
        assert_eq!(errs[1].cause, CauseType::Forbidden);
    }
}
