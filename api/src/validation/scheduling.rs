//! scheduling.k8s.io/v1 PriorityClass validation (kubernetes `pkg/apis/scheduling/validation`).

use super::meta::{validate_object_meta, validate_object_meta_update};
use super::names::name_is_dns1123_subdomain;
use crate::FieldError;
use k8s_openapi::api::scheduling::v1::PriorityClass;

/// Names with this prefix are reserved for the built-in classes.
pub const SYSTEM_PRIORITY_CLASS_PREFIX: &str = "system-";
/// The largest value a user-defined class may have.
pub const HIGHEST_USER_DEFINABLE_PRIORITY: i32 = 1_000_000_000;
/// `system-cluster-critical`'s value.
pub const SYSTEM_CRITICAL_PRIORITY: i32 = 2 * HIGHEST_USER_DEFINABLE_PRIORITY;
/// The built-in classes the API server creates at startup: (name, value, description).
pub const SYSTEM_PRIORITY_CLASSES: [(&str, i32, &str); 2] = [
    (
        "system-node-critical",
        SYSTEM_CRITICAL_PRIORITY + 1000,
        "Used for system critical pods that must not be moved from their current node.",
    ),
    (
        "system-cluster-critical",
        SYSTEM_CRITICAL_PRIORITY,
        "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.",
    ),
];

/// Whether `(name, value, global_default)` is exactly one of the built-in classes; the error
/// says what differs.
pub fn is_known_system_priority_class(name: &str, value: i32, global_default: bool) -> Result<(), String> {
    let Some((known, known_value, _)) = SYSTEM_PRIORITY_CLASSES.iter().find(|(n, _, _)| *n == name) else {
        return Err(format!("{name} is not a known system priority class"));
    };
    if *known_value != value {
        return Err(format!("value of {known} PriorityClass must be {known_value}"));
    }
    if global_default {
        return Err(format!("globalDefault of {known} PriorityClass must be false"));
    }
    Ok(())
}

/// Validates a PriorityClass: a DNS-subdomain name, reserved `system-` names, the user-defined
/// ceiling, the preemption policy; on update value and preemptionPolicy are immutable.
pub(super) fn priority_class(new: &PriorityClass, old: Option<&PriorityClass>) -> Vec<FieldError> {
    let mut errs = validate_object_meta(&new.metadata, false, name_is_dns1123_subdomain, "metadata");
    let name = new.metadata.name.as_deref().unwrap_or_default();
    if name.starts_with(SYSTEM_PRIORITY_CLASS_PREFIX) {
        if let Err(e) =
            is_known_system_priority_class(name, new.value.unwrap_or(0), new.global_default.unwrap_or(false))
        {
            errs.push(FieldError::forbidden(
                "metadata.name",
                format!(
                    "priority class names with '{SYSTEM_PRIORITY_CLASS_PREFIX}' prefix are reserved for system use only. error: {e}"
                ),
            ));
        }
    } else if new.value.unwrap_or(0) > HIGHEST_USER_DEFINABLE_PRIORITY {
        errs.push(FieldError::forbidden(
            "value",
            format!("maximum allowed value of a user defined priority is {HIGHEST_USER_DEFINABLE_PRIORITY}"),
        ));
    }
    if let Some(policy) = new.preemption_policy.as_deref() {
        if !matches!(policy, "PreemptLowerPriority" | "Never") {
            errs.push(FieldError::not_supported("preemptionPolicy", policy, &["Never", "PreemptLowerPriority"]));
        }
    }
    if let Some(old) = old {
        errs.extend(validate_object_meta_update(&new.metadata, &old.metadata, "metadata"));
        if new.value != old.value {
            errs.push(FieldError::forbidden("value", "may not be changed in an update."));
        }
        if new.preemption_policy != old.preemption_policy {
            errs.push(FieldError::invalid(
                "preemptionPolicy",
                new.preemption_policy.as_deref().unwrap_or_default(),
                super::FIELD_IMMUTABLE,
            ));
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pc(v: serde_json::Value) -> PriorityClass {
        serde_json::from_value(v).expect("priority class")
    }

    fn fields(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(|e| format!("{} {:?}", e.field, e.cause)).collect()
    }

    #[test]
    fn user_classes() {
        assert!(priority_class(&pc(json!({"metadata": {"name": "high"}, "value": 1_000_000_000})), None).is_empty());
        let too_high = priority_class(&pc(json!({"metadata": {"name": "high"}, "value": 1_000_000_001})), None);
        assert_eq!(fields(&too_high), ["value Forbidden"]);
        assert_eq!(too_high[0].detail, "maximum allowed value of a user defined priority is 1000000000");
        let bad_policy = pc(json!({"metadata": {"name": "x"}, "value": 1, "preemptionPolicy": "Sometimes"}));
        assert_eq!(fields(&priority_class(&bad_policy, None)), ["preemptionPolicy NotSupported"]);
        let bad_name = pc(json!({"metadata": {"name": "Bad_Name"}, "value": 1}));
        assert_eq!(fields(&priority_class(&bad_name, None)), ["metadata.name Invalid"]);
    }

    #[test]
    fn system_names_are_reserved() {
        let ok = pc(json!({"metadata": {"name": "system-node-critical"}, "value": 2_000_001_000}));
        assert!(priority_class(&ok, None).is_empty());
        let other = priority_class(&pc(json!({"metadata": {"name": "system-mine"}, "value": 5})), None);
        assert_eq!(fields(&other), ["metadata.name Forbidden"]);
        assert_eq!(
            other[0].detail,
            "priority class names with 'system-' prefix are reserved for system use only. error: system-mine is not a known system priority class"
        );
        let wrong = pc(json!({"metadata": {"name": "system-cluster-critical"}, "value": 5}));
        assert!(priority_class(&wrong, None)[0]
            .detail
            .ends_with("value of system-cluster-critical PriorityClass must be 2000000000"));
        let default =
            pc(json!({"metadata": {"name": "system-cluster-critical"}, "value": 2_000_000_000, "globalDefault": true}));
        assert!(priority_class(&default, None)[0]
            .detail
            .ends_with("globalDefault of system-cluster-critical PriorityClass must be false"));
    }

    #[test]
    fn value_and_policy_are_immutable() {
        let old =
            pc(json!({"metadata": {"name": "x", "resourceVersion": "1"}, "value": 1, "preemptionPolicy": "Never"}));
        let new = pc(
            json!({"metadata": {"name": "x", "resourceVersion": "1"}, "value": 2, "preemptionPolicy": "PreemptLowerPriority"}),
        );
        assert_eq!(fields(&priority_class(&new, Some(&old))), ["value Forbidden", "preemptionPolicy Invalid"]);
        let same = pc(
            json!({"metadata": {"name": "x", "resourceVersion": "1"}, "value": 1, "preemptionPolicy": "Never", "description": "d"}),
        );
        assert!(priority_class(&same, Some(&old)).is_empty());
    }
}
