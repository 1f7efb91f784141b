//! core/v1 and events.k8s.io/v1 Event validation (`pkg/apis/core/validation/events.go`).
//!
//! Both API versions share the legacy rules; events.k8s.io/v1 adds strict rules on create and
//! makes most fields immutable on update. Field paths use the internal (core/v1) field names,
//! as Kubernetes reports them.

use super::meta::{validate_object_meta, validate_object_meta_update};
use super::names::{is_dns1123_subdomain, is_qualified_name, name_is_dns1123_subdomain, name_is_path_segment};
use super::FIELD_IMMUTABLE;
use crate::FieldError;
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::api::events::v1::Event as EventV1;

const REPORTING_INSTANCE_LENGTH_LIMIT: usize = 128;
const ACTION_LENGTH_LIMIT: usize = 128;
const REASON_LENGTH_LIMIT: usize = 128;
const NOTE_LENGTH_LIMIT: usize = 1024;

/// The fields the legacy rules look at, whichever API version the event came in.
struct LegacyView<'a> {
    namespace: &'a str,
    involved_namespace: &'a str,
    has_event_time: bool,
    reporting_controller: &'a str,
    reporting_instance: &'a str,
    action: &'a str,
    reason: &'a str,
    message: &'a str,
}

fn text(value: Option<&String>) -> &str {
    value.map_or("", String::as_str)
}

/// The rules every event must pass: the involved object's namespace agrees with the event's,
/// and new-style events (with eventTime) carry reporting controller, instance, action and reason.
fn validate_legacy(e: &LegacyView<'_>, reporting_field: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mismatch =
        || FieldError::invalid("involvedObject.namespace", e.involved_namespace, "does not match event.namespace");
    if !e.has_event_time {
        let ok = if e.involved_namespace.is_empty() {
            e.namespace.is_empty() || e.namespace == "default"
        } else {
            e.namespace == e.involved_namespace
        };
        if !ok {
            errs.push(mismatch());
        }
    } else {
        if e.involved_namespace.is_empty() && e.namespace != "default" && e.namespace != "kube-system" {
            errs.push(mismatch());
        }
        if e.reporting_controller.is_empty() {
            errs.push(FieldError::required(reporting_field, ""));
        } else {
            let msgs = is_qualified_name(e.reporting_controller);
            errs.extend(msgs.into_iter().map(|m| FieldError::invalid(reporting_field, e.reporting_controller, m)));
        }
        let required = [
            ("reportingInstance", e.reporting_instance, REPORTING_INSTANCE_LENGTH_LIMIT),
            ("action", e.action, ACTION_LENGTH_LIMIT),
            ("reason", e.reason, REASON_LENGTH_LIMIT),
        ];
        for (field, value, limit) in required {
            if value.is_empty() {
                errs.push(FieldError::required(field, ""));
            }
            if value.len() > limit {
                errs.push(FieldError::invalid(field, "", format!("can have at most {limit} characters")));
            }
        }
        if e.message.len() > NOTE_LENGTH_LIMIT {
            errs.push(FieldError::invalid("message", "", format!("can have at most {NOTE_LENGTH_LIMIT} characters")));
        }
    }
    if !e.namespace.is_empty() {
        errs.extend(
            is_dns1123_subdomain(e.namespace).into_iter().map(|m| FieldError::invalid("namespace", e.namespace, m)),
        );
    }
    errs
}

/// Validates a core/v1 Event: its metadata (the name only needs to be a valid path segment) and
/// the legacy rules.
pub(super) fn event(new: &Event, old: Option<&Event>) -> Vec<FieldError> {
    let mut errs = validate_object_meta(&new.metadata, true, name_is_path_segment, "metadata");
    let view = LegacyView {
        namespace: text(new.metadata.namespace.as_ref()),
        involved_namespace: text(new.involved_object.namespace.as_ref()),
        has_event_time: new.event_time.is_some(),
        reporting_controller: text(new.reporting_component.as_ref()),
        reporting_instance: text(new.reporting_instance.as_ref()),
        action: text(new.action.as_ref()),
        reason: text(new.reason.as_ref()),
        message: text(new.message.as_ref()),
    };
    errs.extend(validate_legacy(&view, "reportingComponent"));
    if let Some(old) = old {
        errs.extend(validate_object_meta_update(&new.metadata, &old.metadata, "metadata"));
    }
    errs
}

/// Validates an events.k8s.io/v1 Event: legacy rules plus, on create, a DNS-subdomain name, an
/// eventTime, a Normal/Warning type and no deprecated fields; on update, most fields are
/// immutable.
pub(super) fn events_v1_event(new: &EventV1, old: Option<&EventV1>) -> Vec<FieldError> {
    let view = LegacyView {
        namespace: text(new.metadata.namespace.as_ref()),
        involved_namespace: text(new.regarding.as_ref().and_then(|r| r.namespace.as_ref())),
        has_event_time: new.event_time.is_some(),
        reporting_controller: text(new.reporting_controller.as_ref()),
        reporting_instance: text(new.reporting_instance.as_ref()),
        action: text(new.action.as_ref()),
        reason: text(new.reason.as_ref()),
        message: text(new.note.as_ref()),
    };
    let mut errs = validate_legacy(&view, "reportingController");
    if new.series.as_ref().is_some_and(|s| s.count < 2) {
        errs.push(FieldError::invalid("series.count", "", "should be at least 2"));
    }
    match old {
        None => {
            errs.extend(validate_object_meta(&new.metadata, true, name_is_dns1123_subdomain, "metadata"));
            errs.extend(validate_v1_create(new));
        }
        Some(old) => {
            errs.extend(validate_object_meta_update(&new.metadata, &old.metadata, "metadata"));
            errs.extend(validate_v1_immutable(new, old));
        }
    }
    errs
}

fn validate_v1_create(e: &EventV1) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if e.event_time.is_none() {
        errs.push(FieldError::required("eventTime", ""));
    }
    let event_type = text(e.type_.as_ref());
    if event_type != "Normal" && event_type != "Warning" {
        errs.push(FieldError::invalid("type", "", format!("has invalid value: {event_type}")));
    }
    let deprecated = [
        ("firstTimestamp", e.deprecated_first_timestamp.is_some()),
        ("lastTimestamp", e.deprecated_last_timestamp.is_some()),
        ("count", e.deprecated_count.is_some_and(|c| c != 0)),
        ("source", e.deprecated_source.as_ref().is_some_and(|s| s.component.is_some() || s.host.is_some())),
    ];
    for (field, _) in deprecated.iter().filter(|(_, set)| *set) {
        errs.push(FieldError::invalid(*field, "", "needs to be unset"));
    }
    errs
}

fn validate_v1_immutable(new: &EventV1, old: &EventV1) -> Vec<FieldError> {
    let immutable = |field: &str, changed: bool| {
        changed.then(|| FieldError::invalid(field, super::Raw("...".into()), FIELD_IMMUTABLE))
    };
    [
        immutable("involvedObject", new.regarding != old.regarding),
        immutable("reason", new.reason != old.reason),
        immutable("message", new.note != old.note),
        immutable("source", new.deprecated_source != old.deprecated_source),
        immutable("firstTimestamp", new.deprecated_first_timestamp != old.deprecated_first_timestamp),
        immutable("lastTimestamp", new.deprecated_last_timestamp != old.deprecated_last_timestamp),
        immutable("count", new.deprecated_count != old.deprecated_count),
        immutable("type", new.type_ != old.type_),
        immutable("eventTime", new.event_time != old.event_time),
        immutable("action", new.action != old.action),
        immutable("related", new.related != old.related),
        immutable("reportingController", new.reporting_controller != old.reporting_controller),
        immutable("reportingInstance", new.reporting_instance != old.reporting_instance),
    ]
    .into_iter()
    .flatten()
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn fields(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(|e| format!("{} {:?}", e.field, e.cause)).collect()
    }

    fn core(v: Value) -> Event {
        let mut obj = json!({"metadata": {"name": "web.17a8", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default"}, "reason": "Started", "message": "ok"});
        if let (Some(o), Some(extra)) = (obj.as_object_mut(), v.as_object()) {
            o.extend(extra.clone());
        }
        serde_json::from_value(obj).unwrap()
    }

    fn v1(v: Value) -> EventV1 {
        let mut obj = json!({
            "metadata": {"name": "web.17a8", "namespace": "default"},
            "eventTime": "2026-01-01T00:00:00.000000Z", "reportingController": "ferry.dev/deployment-controller",
            "reportingInstance": "ctrl-1", "action": "Scale", "reason": "ScalingReplicaSet", "type": "Normal",
            "regarding": {"kind": "Deployment", "name": "web", "namespace": "default"}, "note": "scaled up"
        });
        if let (Some(o), Some(extra)) = (obj.as_object_mut(), v.as_object()) {
            o.extend(extra.clone());
        }
        serde_json::from_value(obj).unwrap()
    }

    #[test]
    fn core_events() {
        assert!(event(&core(json!({})), None).is_empty());
        let cluster_scoped = core(json!({"involvedObject": {"kind": "Node", "name": "n1"}}));
        assert!(event(&cluster_scoped, None).is_empty());
        let mismatch = core(json!({"involvedObject": {"kind": "Pod", "name": "web", "namespace": "other"}}));
        assert_eq!(
            event(&mismatch, None)[0].to_string(),
            "involvedObject.namespace: Invalid value: \"other\": does not match event.namespace"
        );
        let mut bad_name = core(json!({}));
        bad_name.metadata.name = Some("a/b".into());
        assert_eq!(event(&bad_name, None)[0].detail, "may not contain '/'");
        let new_style = core(
            json!({"eventTime": "2026-01-01T00:00:00.000000Z", "reportingComponent": "", "action": "x".repeat(129)}),
        );
        assert_eq!(
            fields(&event(&new_style, None)),
            ["reportingComponent Required", "reportingInstance Required", "action Invalid"]
        );
    }

    #[test]
    fn v1_events() {
        assert!(events_v1_event(&v1(json!({})), None).is_empty());
        let bad = v1(json!({
            "eventTime": null, "type": "Info", "reportingController": "bad controller",
            "deprecatedCount": 3, "deprecatedSource": {"component": "x"}, "series": {"count": 1, "lastObservedTime": "2026-01-01T00:00:00.000000Z"}
        }));
        assert_eq!(
            fields(&events_v1_event(&bad, None)),
            ["series.count Invalid", "eventTime Required", "type Invalid", "count Invalid", "source Invalid"]
        );
        let bad_new_style = v1(
            json!({"reportingController": "bad controller", "reportingInstance": "", "regarding": {"kind": "Pod", "name": "p"}, "metadata": {"name": "Bad Name", "namespace": "team"}}),
        );
        assert_eq!(
            fields(&events_v1_event(&bad_new_style, None)),
            [
                "involvedObject.namespace Invalid",
                "reportingController Invalid",
                "reportingInstance Required",
                "metadata.name Invalid"
            ]
        );
    }

    #[test]
    fn v1_updates() {
        let old = v1(json!({}));
        let series = v1(json!({"series": {"count": 2, "lastObservedTime": "2026-01-01T00:01:00.000000Z"}}));
        assert!(events_v1_event(&series, Some(&old)).is_empty());
        let changed = v1(json!({"note": "different", "reason": "Other"}));
        assert_eq!(fields(&events_v1_event(&changed, Some(&old))), ["reason Invalid", "message Invalid"]);
    }
}
