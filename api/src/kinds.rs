//! Typed behaviour of each kind: decode from JSON into the `k8s-openapi` type, apply defaults,
//! validate, and encode back to the storage form — plus unknown-field detection for
//! `fieldValidation=Strict|Warn`.
//!
//! The API server handles every object as `serde_json::Value`; it calls
//! [`KindOps::admit`] once per write, which is the only place a body meets its typed schema.

use crate::{defaults, validation, FieldError};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Endpoints, Event, Namespace, Node, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event as EventV1;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};
use std::marker::PhantomData;

/// Why a body could not be admitted.
#[derive(Debug, thiserror::Error)]
pub enum AdmitError {
    /// The body does not decode into the kind (wrong types, bad apiVersion/kind): 400.
    #[error("{0}")]
    Decode(String),
    /// The object decodes but breaks validation rules: 422 with causes.
    #[error("invalid object")]
    Invalid(Vec<FieldError>),
}

/// The result of admitting a body.
#[derive(Debug)]
pub struct Admitted {
    /// The defaulted object in storage form (what goes to etcd, minus resourceVersion).
    pub object: Value,
    /// Fields of the input that the schema does not know, as dotted paths.
    pub unknown_fields: Vec<String>,
}

/// Typed behaviour of one kind, object-safe so the resource table can hold it.
pub trait KindOps: Send + Sync {
    /// Decode `body` (served form), apply defaults, validate against `old` (storage form, for
    /// updates), and return the storage form.
    fn admit(&self, body: Value, old: Option<&Value>) -> Result<Admitted, AdmitError>;

    /// Convert a stored object to the served form of this resource (identity except where two
    /// API groups share one store).
    fn to_served(&self, stored: Value) -> Value {
        stored
    }

    /// Whether [`KindOps::to_served`] is the identity (lets hot paths serve stored bytes as is).
    fn served_as_stored(&self) -> bool {
        true
    }
}

/// Per-kind rules over the typed object; implemented below by delegating to [`defaults`] and
/// [`validation`].
pub trait Rules: Sized + Serialize + DeserializeOwned + k8s_openapi::Resource {
    /// Fill in defaults the way Kubernetes does.
    fn apply_defaults(&mut self);
    /// Validate; `old` is the stored object on update.
    fn validate(&self, old: Option<&Self>) -> Vec<FieldError>;
}

macro_rules! rules {
    ($ty:ty, $f:ident) => {
        impl Rules for $ty {
            fn apply_defaults(&mut self) {
                defaults::$f(self)
            }
            fn validate(&self, old: Option<&Self>) -> Vec<FieldError> {
                validation::$f(self, old)
            }
        }
    };
}

rules!(Namespace, namespace);
rules!(Node, node);
rules!(Pod, pod);
rules!(Service, service);
rules!(Endpoints, endpoints);
rules!(ConfigMap, config_map);
rules!(Secret, secret);
rules!(Event, event);
rules!(ServiceAccount, service_account);
rules!(ReplicaSet, replica_set);
rules!(Deployment, deployment);
rules!(Lease, lease);
rules!(EndpointSlice, endpoint_slice);
rules!(EventV1, events_v1_event);
rules!(PriorityClass, priority_class);

/// [`KindOps`] for a kind whose served form is its storage form.
pub struct Typed<K>(PhantomData<fn() -> K>);

impl<K: Rules> Typed<K> {
    const fn new() -> Self {
        Self(PhantomData)
    }
}

fn decode<K: Rules>(body: &Value) -> Result<K, AdmitError> {
    K::deserialize(body).map_err(|e| {
        AdmitError::Decode(format!("{} in version \"{}\" cannot be handled as a {}: {e}", K::KIND, K::VERSION, K::KIND))
    })
}

fn encode<K: Rules>(obj: &K) -> Result<Value, AdmitError> {
    serde_json::to_value(obj).map_err(|e| AdmitError::Decode(format!("cannot encode {}: {e}", K::KIND)))
}

fn admit_typed<K: Rules>(body: Value, old: Option<&Value>) -> Result<(K, Admitted), AdmitError> {
    let mut obj: K = decode(&body)?;
    let mut round = encode(&obj)?;
    let mut unknown_fields = Vec::new();
    unknown(&body, &round, &mut String::new(), &mut unknown_fields);
    obj.apply_defaults();
    let old = match old {
        Some(v) => Some(decode::<K>(v)?),
        None => None,
    };
    let errors = obj.validate(old.as_ref());
    if !errors.is_empty() {
        return Err(AdmitError::Invalid(errors));
    }
    round = encode(&obj)?;
    prune_empty_metadata(&mut round);
    Ok((obj, Admitted { object: round, unknown_fields }))
}

impl<K: Rules> KindOps for Typed<K> {
    fn admit(&self, body: Value, old: Option<&Value>) -> Result<Admitted, AdmitError> {
        admit_typed::<K>(body, old).map(|(_, a)| a)
    }
}

/// Remove empty `metadata` lists and maps, which Kubernetes omits (`omitempty`): clients such
/// as kube-runtime's finalizer helper rely on an absent `finalizers` key.
pub fn prune_empty_metadata(obj: &mut Value) {
    if let Some(Value::Object(meta)) = obj.get_mut("metadata") {
        for key in ["labels", "annotations", "finalizers", "ownerReferences", "managedFields"] {
            let empty = match meta.get(key) {
                Some(Value::Array(a)) => a.is_empty(),
                Some(Value::Object(m)) => m.is_empty(),
                Some(Value::Null) => true,
                _ => false,
            };
            if empty {
                meta.remove(key);
            }
        }
    }
}

/// Collect paths present in `input` but dropped by the typed round trip (`output`).
fn unknown(input: &Value, output: &Value, path: &mut String, out: &mut Vec<String>) {
    match (input, output) {
        (Value::Object(i), Value::Object(o)) => {
            for (k, v) in i {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
                match o.get(k) {
                    Some(ov) => unknown(v, ov, path, out),
                    None if v.is_null() => {}
                    // A free-form map (labels, data, …) keeps every key, so a missing key
                    // here means the schema has no such field.
                    None => out.push(path.clone()),
                }
                path.truncate(len);
            }
        }
        (Value::Array(i), Value::Array(o)) => {
            for (idx, (iv, ov)) in i.iter().zip(o.iter()).enumerate() {
                let len = path.len();
                path.push_str(&format!("[{idx}]"));
                unknown(iv, ov, path, out);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

/// events.k8s.io/v1 Event, stored as a core/v1 Event.
pub struct EventsV1;

/// (events.k8s.io/v1 name, core/v1 name) for fields whose names differ.
const EVENT_RENAMES: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

fn rename(obj: Map<String, Value>, to_core: bool, api_version: &str) -> Value {
    let mut out = Map::new();
    for (k, v) in obj {
        let key = EVENT_RENAMES
            .iter()
            .find_map(|(v1, core)| match to_core {
                true if *v1 == k => Some(core.to_string()),
                false if *core == k => Some(v1.to_string()),
                _ => None,
            })
            .unwrap_or(k);
        out.insert(key, v);
    }
    out.insert("apiVersion".into(), Value::String(api_version.into()));
    out.insert("kind".into(), Value::String("Event".into()));
    Value::Object(out)
}

impl KindOps for EventsV1 {
    fn admit(&self, body: Value, old: Option<&Value>) -> Result<Admitted, AdmitError> {
        let old_v1 = old.map(|o| self.to_served(o.clone()));
        let (_, admitted) = admit_typed::<EventV1>(body, old_v1.as_ref())?;
        let object = match admitted.object {
            Value::Object(m) => rename(m, true, "v1"),
            other => other,
        };
        Ok(Admitted { object, unknown_fields: admitted.unknown_fields })
    }

    fn to_served(&self, stored: Value) -> Value {
        match stored {
            Value::Object(m) => rename(m, false, "events.k8s.io/v1"),
            other => other,
        }
    }

    fn served_as_stored(&self) -> bool {
        false
    }
}

/// Namespace.
pub static NAMESPACE: Typed<Namespace> = Typed::new();
/// Node.
pub static NODE: Typed<Node> = Typed::new();
/// Pod.
pub static POD: Typed<Pod> = Typed::new();
/// Service.
pub static SERVICE: Typed<Service> = Typed::new();
/// Endpoints.
pub static ENDPOINTS: Typed<Endpoints> = Typed::new();
/// ConfigMap.
pub static CONFIG_MAP: Typed<ConfigMap> = Typed::new();
/// Secret.
pub static SECRET: Typed<Secret> = Typed::new();
/// core/v1 Event.
pub static EVENT: Typed<Event> = Typed::new();
/// ServiceAccount.
pub static SERVICE_ACCOUNT: Typed<ServiceAccount> = Typed::new();
/// ReplicaSet.
pub static REPLICA_SET: Typed<ReplicaSet> = Typed::new();
/// Deployment.
pub static DEPLOYMENT: Typed<Deployment> = Typed::new();
/// Lease.
pub static LEASE: Typed<Lease> = Typed::new();
/// EndpointSlice.
pub static ENDPOINT_SLICE: Typed<EndpointSlice> = Typed::new();
/// PriorityClass.
pub static PRIORITY_CLASS: Typed<PriorityClass> = Typed::new();
/// events.k8s.io/v1 Event.
pub static EVENTS_V1_EVENT: EventsV1 = EventsV1;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_unknown_fields() {
        let body = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "x", "labels": {"a": "b"}, "bogus": 1},
            "data": {"k": "v"},
            "extra": {"deep": true}
        });
        let a = CONFIG_MAP.admit(body, None).expect("admit");
        assert_eq!(a.unknown_fields, vec!["extra".to_string(), "metadata.bogus".to_string()]);
        assert_eq!(a.object["data"]["k"], "v");
        assert!(a.object.get("extra").is_none());
    }

    #[test]
    fn unknown_fields_in_lists_are_indexed() {
        let body = json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "busybox", "imagePullPolice": "Never"}]}
        });
        let a = POD.admit(body, None).expect("admit");
        assert_eq!(a.unknown_fields, vec!["spec.containers[0].imagePullPolice".to_string()]);
    }

    #[test]
    fn wrong_types_are_decode_errors() {
        let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": 5}});
        let err = CONFIG_MAP.admit(body, None).expect_err("must fail");
        assert!(matches!(err, AdmitError::Decode(m) if m.contains("cannot be handled as a ConfigMap")));
    }

    #[test]
    fn events_v1_round_trip_through_core_storage() {
        let body = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "e1", "namespace": "default"},
            "eventTime": "2026-01-01T00:00:00.000000Z",
            "reportingController": "ferry/test", "reportingInstance": "i1",
            "action": "Test", "reason": "Tested", "type": "Normal",
            "regarding": {"kind": "Pod", "name": "p", "namespace": "default"},
            "note": "hello"
        });
        let stored = EVENTS_V1_EVENT.admit(body, None).expect("admit").object;
        assert_eq!(stored["apiVersion"], "v1");
        assert_eq!(stored["message"], "hello");
        assert_eq!(stored["involvedObject"]["name"], "p");
        assert_eq!(stored["reportingComponent"], "ferry/test");
        let served = EVENTS_V1_EVENT.to_served(stored);
        assert_eq!(served["apiVersion"], "events.k8s.io/v1");
        assert_eq!(served["note"], "hello");
        assert_eq!(served["regarding"]["kind"], "Pod");
    }

    #[test]
    fn empty_finalizers_are_omitted() {
        let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "finalizers": []}});
        let a = CONFIG_MAP.admit(body, None).expect("admit");
        assert!(a.object["metadata"].get("finalizers").is_none());
    }
}
