//! Pod priority, as kube-apiserver's `Priority` admission plugin and PriorityClass registry do it
//! (kubernetes `plugin/pkg/admission/priority`, `pkg/registry/scheduling/priorityclass`):
//!
//! * on pod create, `spec.priorityClassName` resolves to `spec.priority` and
//!   `spec.preemptionPolicy`; with no class named, the `globalDefault` class (lowest value if a
//!   race made several) or priority 0; an unknown class, or a priority / policy the client set
//!   that disagrees with the class, is 403 Forbidden;
//! * on pod update, a priority the client left out is kept;
//! * at most one PriorityClass may be `globalDefault` (403 for a second one);
//! * the built-in `system-node-critical` and `system-cluster-critical` are created at startup
//!   and cannot be deleted.
//!
//! Classes are read from the watch cache, like upstream's informer-backed lister; a named class
//! the cache does not hold yet is looked up in etcd before the pod is refused.

use super::Api;
use crate::codec;
use crate::error::{from_storage, ApiError, Result};
use ferry_api::validation::scheduling::SYSTEM_PRIORITY_CLASSES;
use ferry_api::ResourceInfo;
use serde_json::{json, Value};

/// What a pod takes from its class.
#[derive(Debug, Clone, PartialEq)]
struct Class {
    name: String,
    value: i64,
    preemption_policy: Option<String>,
    global_default: bool,
}

impl Class {
    fn from_json(v: &Value) -> Class {
        Class {
            name: v["metadata"]["name"].as_str().unwrap_or_default().to_string(),
            value: v["value"].as_i64().unwrap_or(0),
            preemption_policy: v["preemptionPolicy"].as_str().map(str::to_string),
            global_default: v["globalDefault"].as_bool().unwrap_or(false),
        }
    }
}

fn forbidden(res: &ResourceInfo, name: &str, why: impl std::fmt::Display) -> ApiError {
    ApiError::forbidden(format!("{} \"{name}\" is forbidden: {why}", res.qualified_name()))
}

/// Whether `name` is one of the built-in classes.
pub(super) fn is_system_class(name: &str) -> bool {
    SYSTEM_PRIORITY_CLASSES.iter().any(|(n, _, _)| *n == name)
}

/// The refusal to delete a built-in class.
pub(super) fn system_class_delete_error(res: &ResourceInfo, name: &str) -> ApiError {
    forbidden(res, name, "this is a system priority class and cannot be deleted")
}

/// On pod update: keep the priority and preemption policy admission set on create when the
/// client's object leaves them out (validation rejects any other change).
pub(super) fn preserve_pod_priority(candidate: &mut Value, stored: &Value) {
    let Some(spec) = candidate.get_mut("spec").and_then(Value::as_object_mut) else { return };
    for field in ["priority", "preemptionPolicy"] {
        let old = &stored["spec"][field];
        if spec.get(field).is_none_or(Value::is_null) && !old.is_null() {
            spec.insert(field.to_string(), old.clone());
        }
    }
}

impl Api {
    fn priority_classes(&self) -> Result<&'static ResourceInfo> {
        self.table
            .lookup("scheduling.k8s.io", "v1", "priorityclasses")
            .ok_or_else(|| ApiError::internal("no priorityclasses resource"))
    }

    /// All classes the watch cache holds.
    fn cached_classes(&self) -> Result<Vec<Class>> {
        let res = self.priority_classes()?;
        let snapshot = self.cache.snapshot(res, &res.key_prefix(), None);
        Ok(snapshot
            .objects
            .iter()
            .filter_map(|o| serde_json::from_slice(&o.raw).ok())
            .map(|v| Class::from_json(&v))
            .collect())
    }

    /// The class marked `globalDefault` (the lowest value if several are).
    fn default_class(&self) -> Result<Option<Class>> {
        Ok(self.cached_classes()?.into_iter().filter(|c| c.global_default).min_by_key(|c| c.value))
    }

    /// One class by name: the cache, then etcd.
    async fn class(&self, name: &str) -> Result<Option<Class>> {
        let res = self.priority_classes()?;
        let key = res.key(None, name);
        if let Some(o) = self.cache.get(res, &key).1 {
            if let Ok(v) = serde_json::from_slice::<Value>(&o.raw) {
                return Ok(Some(Class::from_json(&v)));
            }
        }
        match self.store.get(&key).await.map_err(|e| from_storage(res, name, e))? {
            Some(kv) => {
                let v =
                    codec::decode(&key, &kv.value, kv.mod_revision).map_err(|e| ApiError::internal(e.to_string()))?;
                Ok(Some(Class::from_json(&v)))
            }
            None => Ok(None),
        }
    }

    /// Priority admission of a pod being created (`obj` is the pod as the client sent it).
    pub(super) async fn admit_pod_priority(&self, res: &ResourceInfo, obj: &mut Value) -> Result<()> {
        let pod_name = obj["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else { return Ok(()) };
        let named = spec.get("priorityClassName").and_then(Value::as_str).unwrap_or_default().to_string();
        let class = if named.is_empty() {
            self.default_class()?
        } else {
            match self.class(&named).await? {
                Some(c) => Some(c),
                None => return Err(forbidden(res, &pod_name, format!("no PriorityClass with name {named} was found"))),
            }
        };
        let value = class.as_ref().map_or(0, |c| c.value);
        if let Some(given) = spec.get("priority").and_then(Value::as_i64) {
            if given != value {
                return Err(forbidden(
                    res,
                    &pod_name,
                    format!(
                        "the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {value} from the given PriorityClass name"
                    ),
                ));
            }
        }
        spec.insert("priority".into(), json!(value));
        let Some(class) = class else { return Ok(()) };
        spec.insert("priorityClassName".into(), json!(class.name));
        if let Some(policy) = class.preemption_policy {
            if let Some(given) = spec.get("preemptionPolicy").and_then(Value::as_str).filter(|g| *g != policy) {
                return Err(forbidden(
                    res,
                    &pod_name,
                    format!(
                        "the string value of PreemptionPolicy ({given}) must not be provided in pod spec; priority admission controller computed {policy} from the given PriorityClass name"
                    ),
                ));
            }
            spec.insert("preemptionPolicy".into(), json!(policy));
        }
        Ok(())
    }

    /// Refuses a second `globalDefault` class (`obj` is the class being created or updated).
    /// Reads etcd, not the watch cache, so a default created a moment ago is always seen.
    pub(super) async fn check_single_default(&self, res: &ResourceInfo, obj: &Value) -> Result<()> {
        if !obj["globalDefault"].as_bool().unwrap_or(false) {
            return Ok(());
        }
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        let prefix = res.key_prefix();
        let page = self.store.list(&prefix, None, 0, 0).await.map_err(|e| from_storage(res, name, e))?;
        let existing = page
            .kvs
            .iter()
            .filter_map(|kv| codec::decode(&kv.key, &kv.value, kv.mod_revision).ok())
            .map(|v| Class::from_json(&v))
            .filter(|c| c.global_default)
            .min_by_key(|c| c.value);
        match existing {
            Some(existing) if existing.name != name => Err(forbidden(
                res,
                name,
                format!("PriorityClass {} is already marked as default. Only one default can exist", existing.name),
            )),
            _ => Ok(()),
        }
    }
}

/// Creates the built-in PriorityClasses that are missing (kube-apiserver's
/// `scheduling/bootstrap-system-priority-classes` post-start hook).
pub async fn ensure_system_priority_classes(api: &Api) -> Result<()> {
    let res = api.priority_classes()?;
    for (name, value, description) in SYSTEM_PRIORITY_CLASSES {
        let obj = json!({
            "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
            "metadata": {"name": name}, "value": value, "description": description,
        });
        if api.create_if_missing(res, obj).await? {
            tracing::info!(priority_class = name, "created priority class");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_keeps_admitted_priority() {
        let stored = json!({"spec": {"priority": 7, "preemptionPolicy": "Never", "priorityClassName": "c"}});
        let mut candidate = json!({"spec": {"priorityClassName": "c"}});
        preserve_pod_priority(&mut candidate, &stored);
        assert_eq!(candidate["spec"]["priority"], 7);
        assert_eq!(candidate["spec"]["preemptionPolicy"], "Never");
        let mut changed = json!({"spec": {"priority": 9}});
        preserve_pod_priority(&mut changed, &stored);
        assert_eq!(changed["spec"]["priority"], 9, "a change is left for validation to refuse");
    }

    #[test]
    fn system_classes() {
        assert!(is_system_class("system-node-critical") && is_system_class("system-cluster-critical"));
        assert!(!is_system_class("system-other"));
    }
}
