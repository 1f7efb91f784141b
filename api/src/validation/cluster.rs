//! Namespace, Node, ServiceAccount and Lease validation.

use super::meta::{validate_finalizer_name, validate_label_name, validate_object_meta, validate_object_meta_update};
use super::names::{is_valid_cidr, is_valid_label_value, name_is_dns1123_label, name_is_dns1123_subdomain};
use super::pod::validate_taint_effect;
use super::{non_negative, Raw};
use crate::FieldError;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, ServiceAccount, Taint};
use std::collections::HashSet;

/// Validates a Namespace: a DNS-label name and valid spec finalizers.
pub(super) fn namespace(new: &Namespace, old: Option<&Namespace>) -> Vec<FieldError> {
    let mut errs = validate_object_meta(&new.metadata, false, name_is_dns1123_label, "metadata");
    let finalizers = new.spec.as_ref().and_then(|s| s.finalizers.as_deref()).unwrap_or_default();
    for finalizer in finalizers {
        errs.extend(validate_finalizer_name(finalizer, "spec.finalizers", "spec.finalizers"));
    }
    if let Some(old) = old {
        errs.extend(validate_object_meta_update(&new.metadata, &old.metadata, "metadata"));
    }
    errs
}

/// Validates a Node: name, taints and pod CIDRs; on update podCIDRs and providerID may only
/// go from unset to set.
pub(super) fn node(new: &Node, old: Option<&Node>) -> Vec<FieldError> {
    let mut errs = validate_object_meta(&new.metadata, false, name_is_dns1123_subdomain, "metadata");
    let spec = new.spec.as_ref();
    errs.extend(validate_taints(spec.and_then(|s| s.taints.as_deref()).unwrap_or_default(), "spec.taints"));
    let pod_cidrs = spec.and_then(|s| s.pod_cidrs.as_deref()).unwrap_or_default();
    for (i, cidr) in pod_cidrs.iter().enumerate() {
        errs.extend(
            is_valid_cidr(cidr).into_iter().map(|m| FieldError::invalid(format!("spec.podCIDRs[{i}]"), cidr, m)),
        );
    }
    if pod_cidrs.len() > 2 {
        errs.push(FieldError::invalid(
            "spec.podCIDRs",
            super::go_string_slice(pod_cidrs),
            "may specify no more than one CIDR for each IP family",
        ));
    }
    if let Some(old) = old {
        errs.extend(validate_object_meta_update(&new.metadata, &old.metadata, "metadata"));
        let old_spec = old.spec.as_ref();
        let old_cidrs = old_spec.and_then(|s| s.pod_cidrs.as_deref()).unwrap_or_default();
        if !old_cidrs.is_empty() && old_cidrs != pod_cidrs {
            errs.push(FieldError::forbidden(
                "spec.podCIDRs",
                "node updates may not change podCIDR except from \"\" to valid",
            ));
        }
        let provider = |s: Option<&k8s_openapi::api::core::v1::NodeSpec>| {
            s.and_then(|s| s.provider_id.clone()).unwrap_or_default()
        };
        let (new_provider, old_provider) = (provider(spec), provider(old_spec));
        if !old_provider.is_empty() && old_provider != new_provider {
            errs.push(FieldError::forbidden(
                "spec.providerID",
                "node updates may not change providerID except from \"\" to valid",
            ));
        }
    }
    errs
}

/// Taints: qualified keys, label values, a known effect, unique by (key, effect).
fn validate_taints(taints: &[Taint], path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut seen = HashSet::new();
    for (i, taint) in taints.iter().enumerate() {
        let t_path = format!("{path}[{i}]");
        errs.extend(validate_label_name(&taint.key, &format!("{t_path}.key")));
        let value = taint.value.as_deref().unwrap_or_default();
        let msgs = is_valid_label_value(value);
        if !msgs.is_empty() {
            errs.push(FieldError::invalid(format!("{t_path}.value"), value, msgs.join(";")));
        }
        errs.extend(validate_taint_effect(&taint.effect, &format!("{t_path}.effect")));
        if !seen.insert((taint.key.as_str(), taint.effect.as_str())) {
            let mut dup = FieldError::duplicate(&t_path, Raw(format!("{}={}:{}", taint.key, value, taint.effect)));
            dup.detail = "taints must be unique by key and effect pair".to_string();
            errs.push(dup);
        }
    }
    errs
}

/// Validates a ServiceAccount: its metadata.
pub(super) fn service_account(new: &ServiceAccount, old: Option<&ServiceAccount>) -> Vec<FieldError> {
    let mut errs = validate_object_meta(&new.metadata, true, name_is_dns1123_subdomain, "metadata");
    if let Some(old) = old {
        errs.extend(validate_object_meta_update(&new.metadata, &old.metadata, "metadata"));
    }
    errs
}

/// Validates a Lease: positive duration, non-negative transitions, and a preferred holder only
/// together with a strategy.
pub(super) fn lease(new: &Lease, old: Option<&Lease>) -> Vec<FieldError> {
    let mut errs = validate_object_meta(&new.metadata, true, name_is_dns1123_subdomain, "metadata");
    if let Some(spec) = &new.spec {
        if let Some(duration) = spec.lease_duration_seconds.filter(|d| *d <= 0) {
            errs.push(FieldError::invalid("spec.leaseDurationSeconds", duration, "must be greater than 0"));
        }
        errs.extend(non_negative(spec.lease_transitions.map(i64::from), "spec.leaseTransitions"));
        let has_strategy = spec.strategy.as_deref().is_some_and(|s| !s.is_empty());
        if let Some(strategy) = spec.strategy.as_deref() {
            errs.extend(super::container::one_of(Some(strategy), &["OldestEmulationVersion"], "spec.strategy"));
        }
        if spec.preferred_holder.as_deref().is_some_and(|h| !h.is_empty()) && !has_strategy {
            errs.push(FieldError::forbidden("spec.preferredHolder", "may only be specified if `strategy` is defined"));
        }
    }
    if let Some(old) = old {
        errs.extend(validate_object_meta_update(&new.metadata, &old.metadata, "metadata"));
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CauseType;
    use serde_json::json;

    fn fields(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(|e| format!("{} {:?}", e.field, e.cause)).collect()
    }

    #[test]
    fn namespaces() {
        let ok: Namespace =
            serde_json::from_value(json!({"metadata": {"name": "team-a"}, "spec": {"finalizers": ["kubernetes"]}}))
                .unwrap();
        assert!(namespace(&ok, None).is_empty());
        assert!(namespace(&ok, Some(&ok)).is_empty());
        let bad: Namespace = serde_json::from_value(
            json!({"metadata": {"name": "team.a", "namespace": "x"}, "spec": {"finalizers": ["custom"]}}),
        )
        .unwrap();
        assert_eq!(
            fields(&namespace(&bad, None)),
            ["metadata.name Invalid", "metadata.namespace Forbidden", "spec.finalizers Invalid"]
        );
        assert_eq!(namespace(&bad, None)[0].detail, "must not contain dots");
    }

    #[test]
    fn nodes() {
        let ok: Node = serde_json::from_value(json!({"metadata": {"name": "node-1.example"}, "spec": {
            "podCIDRs": ["10.244.1.0/24", "fd00:1::/64"], "providerID": "ferry://node-1",
            "taints": [{"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}, {"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}]
        }}))
        .unwrap();
        assert!(node(&ok, None).is_empty());
        assert!(node(&ok, Some(&ok)).is_empty());
        let bad: Node = serde_json::from_value(json!({"metadata": {"name": "Node_1"}, "spec": {
            "podCIDRs": ["10.244.1.0/33"],
            "taints": [{"key": "bad key", "value": "bad value", "effect": "Sometimes"}, {"key": "k", "effect": ""}, {"key": "k", "effect": ""}]
        }}))
        .unwrap();
        assert_eq!(
            fields(&node(&bad, None)),
            [
                "metadata.name Invalid",
                "spec.taints[0].key Invalid",
                "spec.taints[0].value Invalid",
                "spec.taints[0].effect NotSupported",
                "spec.taints[1].effect Required",
                "spec.taints[2].effect Required",
                "spec.taints[2] Duplicate",
                "spec.podCIDRs[0] Invalid",
            ]
        );
        assert_eq!(node(&bad, None)[6].detail, "taints must be unique by key and effect pair");
        let mut moved = ok.clone();
        if let Some(spec) = moved.spec.as_mut() {
            spec.pod_cidrs = Some(vec!["10.244.2.0/24".into()]);
            spec.provider_id = Some("other".into());
        }
        assert_eq!(fields(&node(&moved, Some(&ok))), ["spec.podCIDRs Forbidden", "spec.providerID Forbidden"]);
        assert!(node(&ok, Some(&moved)).iter().all(|e| e.cause == CauseType::Forbidden));
    }

    #[test]
    fn service_accounts() {
        let ok: ServiceAccount =
            serde_json::from_value(json!({"metadata": {"name": "default", "namespace": "default"}})).unwrap();
        assert!(service_account(&ok, None).is_empty());
        let bad: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "Default"}})).unwrap();
        assert_eq!(fields(&service_account(&bad, None)), ["metadata.name Invalid"]);
    }

    #[test]
    fn leases() {
        let ok: Lease =
            serde_json::from_value(json!({"metadata": {"name": "kube-scheduler", "namespace": "kube-system"},
            "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15, "leaseTransitions": 0}}))
            .unwrap();
        assert!(lease(&ok, None).is_empty());
        let bad: Lease = serde_json::from_value(json!({"metadata": {"name": "l"},
            "spec": {"leaseDurationSeconds": 0, "leaseTransitions": -1, "preferredHolder": "b"}}))
        .unwrap();
        assert_eq!(
            fields(&lease(&bad, None)),
            ["spec.leaseDurationSeconds Invalid", "spec.leaseTransitions Invalid", "spec.preferredHolder Forbidden"]
        );
        let strategy: Lease = serde_json::from_value(
            json!({"metadata": {"name": "l"}, "spec": {"strategy": "Newest", "preferredHolder": "b"}}),
        )
        .unwrap();
        assert_eq!(fields(&lease(&strategy, None)), ["spec.strategy NotSupported"]);
    }
}
