//! Validation, as the Kubernetes API server applies it after defaulting.
//!
//! One function per kind; `old` is the stored object on update. The rules and messages follow
//! kubernetes/kubernetes `pkg/apis/core/validation`, `pkg/apis/apps/validation` and
//! apimachinery's ObjectMeta, name and label validation. The reusable building blocks (name
//! and label checks, ObjectMeta, label selectors, quantities) are public so the API server can
//! apply them to selectors and generateName as well.

mod apps;
mod cluster;
mod config;
mod container;
mod discovery;
mod events;
pub mod meta;
pub mod names;
mod pod;
pub mod quantity;
pub mod scheduling;
mod service;
mod volume;

pub use meta::{
    label_selector_is_empty, label_selector_matches, validate_annotations, validate_label_selector, validate_labels,
    validate_object_meta, validate_object_meta_update,
};
pub use names::{
    is_config_map_key, is_dns1035_label, is_dns1123_label, is_dns1123_subdomain, is_qualified_name,
    is_valid_label_value, is_valid_port_name, is_valid_port_num, NameRule,
};
pub use pod::{validate_pod_spec, validate_pod_template};

use crate::FieldError;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Endpoints, Event, Namespace, Node, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event as EventV1;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;
use std::fmt;

/// `must be greater than or equal to 0`.
pub(crate) const IS_NEGATIVE_ERROR: &str = "must be greater than or equal to 0";
/// `field is immutable`.
pub(crate) const FIELD_IMMUTABLE: &str = "field is immutable";

/// A value printed verbatim in a [`FieldError`]: numbers the way Go's `%v` prints them, or a
/// preformatted Go literal such as `map[string]string{"app":"web"}`.
pub(crate) struct Raw(pub String);

impl fmt::Debug for Raw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Renders a string map as Go's `%#v` does: `map[string]string{"a":"b", "c":"d"}`.
pub(crate) fn go_string_map(map: Option<&BTreeMap<String, String>>) -> Raw {
    match map {
        None => Raw("map[string]string(nil)".to_string()),
        Some(m) => {
            let entries: Vec<String> = m.iter().map(|(k, v)| format!("{k:?}:{v:?}")).collect();
            Raw(format!("map[string]string{{{}}}", entries.join(", ")))
        }
    }
}

/// Renders a string list as Go's `%#v` does: `[]string{"a", "b"}`.
pub(crate) fn go_string_slice(items: &[String]) -> Raw {
    let entries: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
    Raw(format!("[]string{{{}}}", entries.join(", ")))
}

/// Renders an IntOrString the way Kubernetes prints it in errors (`25%`, `3`).
pub(crate) fn int_or_string(value: &IntOrString) -> Raw {
    match value {
        IntOrString::Int(i) => Raw(i.to_string()),
        IntOrString::String(s) => Raw(s.clone()),
    }
}

/// `value` must be ≥ 0.
pub(crate) fn non_negative(value: Option<i64>, path: &str) -> Option<FieldError> {
    value.filter(|v| *v < 0).map(|v| FieldError::invalid(path, v, IS_NEGATIVE_ERROR))
}

/// Validate a Namespace.
pub fn namespace(new: &Namespace, old: Option<&Namespace>) -> Vec<FieldError> {
    cluster::namespace(new, old)
}
/// Validate a Node.
pub fn node(new: &Node, old: Option<&Node>) -> Vec<FieldError> {
    cluster::node(new, old)
}
/// Validate a Pod.
pub fn pod(new: &Pod, old: Option<&Pod>) -> Vec<FieldError> {
    pod::pod(new, old)
}
/// Validate a Service.
pub fn service(new: &Service, old: Option<&Service>) -> Vec<FieldError> {
    service::service(new, old)
}
/// Validate a Endpoints.
pub fn endpoints(new: &Endpoints, old: Option<&Endpoints>) -> Vec<FieldError> {
    service::endpoints(new, old)
}
/// Validate a ConfigMap.
pub fn config_map(new: &ConfigMap, old: Option<&ConfigMap>) -> Vec<FieldError> {
    config::config_map(new, old)
}
/// Validate a Secret.
pub fn secret(new: &Secret, old: Option<&Secret>) -> Vec<FieldError> {
    config::secret(new, old)
}
/// Validate a core/v1 Event.
pub fn event(new: &Event, old: Option<&Event>) -> Vec<FieldError> {
    events::event(new, old)
}
/// Validate a ServiceAccount.
pub fn service_account(new: &ServiceAccount, old: Option<&ServiceAccount>) -> Vec<FieldError> {
    cluster::service_account(new, old)
}
/// Validate a ReplicaSet.
pub fn replica_set(new: &ReplicaSet, old: Option<&ReplicaSet>) -> Vec<FieldError> {
    apps::replica_set(new, old)
}
/// Validate a Deployment.
pub fn deployment(new: &Deployment, old: Option<&Deployment>) -> Vec<FieldError> {
    apps::deployment(new, old)
}
/// Validate a Lease.
pub fn lease(new: &Lease, old: Option<&Lease>) -> Vec<FieldError> {
    cluster::lease(new, old)
}
/// Validate a discovery.k8s.io/v1 EndpointSlice.
pub fn endpoint_slice(new: &EndpointSlice, old: Option<&EndpointSlice>) -> Vec<FieldError> {
    discovery::endpoint_slice(new, old)
}
/// Validate a scheduling.k8s.io/v1 PriorityClass.
pub fn priority_class(new: &PriorityClass, old: Option<&PriorityClass>) -> Vec<FieldError> {
    scheduling::priority_class(new, old)
}
/// Validate a events.k8s.io/v1 Event.
pub fn events_v1_event(new: &EventV1, old: Option<&EventV1>) -> Vec<FieldError> {
    events::events_v1_event(new, old)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_renderings() {
        let m: BTreeMap<String, String> = [("b", "2"), ("a", "1")].map(|(k, v)| (k.into(), v.into())).into();
        assert_eq!(format!("{:?}", go_string_map(Some(&m))), r#"map[string]string{"a":"1", "b":"2"}"#);
        assert_eq!(format!("{:?}", go_string_map(None)), "map[string]string(nil)");
        assert_eq!(format!("{:?}", go_string_slice(&["x".into(), "y".into()])), r#"[]string{"x", "y"}"#);
        assert_eq!(format!("{:?}", int_or_string(&IntOrString::String("25%".into()))), "25%");
        assert_eq!(format!("{:?}", int_or_string(&IntOrString::Int(0))), "0");
        assert_eq!(
            non_negative(Some(-2), "x").map(|e| e.to_string()).as_deref(),
            Some("x: Invalid value: -2: must be greater than or equal to 0")
        );
        assert!(non_negative(Some(0), "x").is_none());
        assert!(non_negative(None, "x").is_none());
    }
}
