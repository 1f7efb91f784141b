//! Small helpers shared by the controllers: selectors, controller references, pod state.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::api::{Patch, PatchParams};
use kube::core::{Selector, SelectorExt};
use kube::{Api, Resource, ResourceExt};

/// A label selector that can be matched; an invalid or empty selector matches nothing
/// (controllers never act on "select everything").
#[derive(Debug, Clone)]
pub struct Matcher(Option<Selector>);

impl Matcher {
    /// Compile `sel`.
    pub fn new(sel: Option<&LabelSelector>) -> Self {
        let compiled = sel.and_then(|s| {
            let empty = s.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
                && s.match_expressions.as_ref().is_none_or(Vec::is_empty);
            if empty {
                None
            } else {
                Selector::try_from(s.clone()).ok()
            }
        });
        Self(compiled)
    }

    /// Whether `labels` match.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.as_ref().is_some_and(|s| s.matches(labels))
    }

    /// Whether the selector is usable (non-empty and valid).
    pub fn is_valid(&self) -> bool {
        self.0.is_some()
    }
}

/// The controller reference of `meta`, if any.
pub fn controller_ref(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references.as_ref()?.iter().find(|r| r.controller == Some(true))
}

/// A controller owner reference pointing at `owner` (blockOwnerDeletion set, as Kubernetes does).
pub fn owner_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.name_any(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// `namespace/name` of an object.
pub fn key<K: Resource>(obj: &K) -> String {
    format!(
        "{}/{}",
        obj.meta().namespace.as_deref().unwrap_or_default(),
        obj.meta().name.as_deref().unwrap_or_default()
    )
}

/// Whether the pod counts as active: not terminal and not being deleted.
pub fn pod_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("");
    pod.metadata.deletion_timestamp.is_none() && phase != "Succeeded" && phase != "Failed"
}

/// When the pod's Ready condition turned true, if it is Ready.
pub fn pod_ready_since(pod: &Pod) -> Option<Option<jiff::Timestamp>> {
    let conds = pod.status.as_ref()?.conditions.as_ref()?;
    let ready = conds.iter().find(|c| c.type_ == "Ready")?;
    (ready.status == "True").then(|| ready.last_transition_time.as_ref().map(|t| t.0))
}

/// Whether the pod is Ready.
pub fn pod_ready(pod: &Pod) -> bool {
    pod_ready_since(pod).is_some()
}

/// Whether the pod has been Ready for at least `min_ready_seconds` at `now`.
pub fn pod_available(pod: &Pod, min_ready_seconds: i32, now: jiff::Timestamp) -> bool {
    match pod_ready_since(pod) {
        None => false,
        Some(_) if min_ready_seconds <= 0 => true,
        Some(None) => false,
        Some(Some(since)) => since.as_second() + i64::from(min_ready_seconds) <= now.as_second(),
    }
}

/// Seconds until the pod becomes available (for a requeue), if it is Ready but not yet available.
pub fn seconds_until_available(pod: &Pod, min_ready_seconds: i32, now: jiff::Timestamp) -> Option<i64> {
    match pod_ready_since(pod) {
        Some(Some(since)) if min_ready_seconds > 0 => {
            let left = since.as_second() + i64::from(min_ready_seconds) - now.as_second();
            (left > 0).then_some(left)
        }
        _ => None,
    }
}

/// A Kubernetes-style error from the API server, if that is what `e` is.
pub fn api_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// Write `refs` as the ownerReferences of `obj`, only if they are still what we saw (a JSON
/// patch testing the uid and the current list). `Ok(None)` when the object changed or went.
async fn set_owner_refs<K>(api: &Api<K>, obj: &K, refs: Vec<OwnerReference>) -> Result<Option<K>, kube::Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let current = obj.meta().owner_references.clone();
    let patch: json_patch::Patch = serde_json::from_value(serde_json::json!([
        {"op": "test", "path": "/metadata/uid", "value": obj.meta().uid},
        {"op": "test", "path": "/metadata/ownerReferences", "value": current},
        {"op": "add", "path": "/metadata/ownerReferences", "value": refs},
    ]))
    .map_err(kube::Error::SerdeError)?;
    match api.patch(&obj.name_any(), &PatchParams::default(), &Patch::Json::<()>(patch)).await {
        Ok(o) => Ok(Some(o)),
        Err(e) if matches!(api_code(&e), Some(404) | Some(409) | Some(422)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Adopt an orphan: add a controller reference to `owner`.
pub async fn adopt<K, O>(api: &Api<K>, obj: &K, owner: &O) -> Result<Option<K>, kube::Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    O: Resource<DynamicType = ()>,
{
    let mut refs = obj.meta().owner_references.clone().unwrap_or_default();
    refs.push(owner_ref(owner));
    set_owner_refs(api, obj, refs).await
}

/// Release an object: remove the references to `owner_uid`.
pub async fn release<K>(api: &Api<K>, obj: &K, owner_uid: &str) -> Result<Option<K>, kube::Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let refs =
        obj.meta().owner_references.clone().unwrap_or_default().into_iter().filter(|r| r.uid != owner_uid).collect();
    set_owner_refs(api, obj, refs).await
}
