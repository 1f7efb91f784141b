//! Strategic merge patch (`application/strategic-merge-patch+json`) for the built-in kinds Ferry serves.
//!
//! Follows apimachinery's `pkg/util/strategicpatch` as the API server applies it (`MergeParallelList` and
//! `IgnoreUnmatchedNulls` on):
//! - maps merge recursively and `null` deletes a member;
//! - lists are replaced unless the schema gives them the `merge` patch strategy. Lists of objects then merge
//!   element-wise by their merge key, lists of scalars merge as sets;
//! - directives: `$patch: replace | delete | merge`, `$retainKeys`, `$setElementOrder/<list>` and
//!   `$deleteFromPrimitiveList/<list>`.
//!
//! Element order follows apimachinery too: without `$setElementOrder`, items named in the patch that the live list
//! does not have come *before* the live items (so a new container is prepended). kubectl apply always sends
//! `$setElementOrder`, which fixes the final order.
//!
//! The merge keys and strategies are upstream's `patchStrategy` / `patchMergeKey` struct tags (the OpenAPI
//! `x-kubernetes-patch-strategy` / `x-kubernetes-patch-merge-key`), kept as a small type table in [`lookup`].
//! A `$setElementOrder/<list>` for a list the table does not know makes that list a merge list, with the merge
//! key read off the order list, because clients only send the directive for merge lists.

use serde_json::{Map, Value};

const PATCH: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ORDER: &str = "$setElementOrder/";
const DELETE_FROM: &str = "$deleteFromPrimitiveList/";

/// Why a strategic merge patch was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmpError {
    /// The kind has no strategic-merge schema here. The API server answers 415 UnsupportedMediaType, as Kubernetes
    /// does for custom resources.
    #[error("strategic merge patch is not supported for {api_version}, Kind={kind}")]
    UnsupportedKind {
        /// The object's `apiVersion`.
        api_version: String,
        /// The object's `kind`.
        kind: String,
    },
    /// The patch document is malformed: not an object, a bad directive, or a list element without its merge key.
    /// The API server answers 400 BadRequest.
    #[error("invalid strategic merge patch at {path}: {reason}")]
    Malformed {
        /// Where in the document, e.g. `.spec.template.spec.containers`.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A well-formed patch that cannot be applied to this object (mixed or nested list element types, a merge
    /// list of objects without a merge key). The API server answers 422 Unprocessable Entity.
    #[error("strategic merge patch does not apply at {path}: {reason}")]
    Unprocessable {
        /// Where in the document.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

impl SmpError {
    /// The HTTP status the API server answers with: 415, 400 or 422.
    pub fn status_code(&self) -> u16 {
        match self {
            SmpError::UnsupportedKind { .. } => 415,
            SmpError::Malformed { .. } => 400,
            SmpError::Unprocessable { .. } => 422,
        }
    }
}

fn malformed(path: &str, reason: impl Into<String>) -> SmpError {
    SmpError::Malformed { path: display_path(path), reason: reason.into() }
}

fn unprocessable(path: &str, reason: impl Into<String>) -> SmpError {
    SmpError::Unprocessable { path: display_path(path), reason: reason.into() }
}

fn display_path(path: &str) -> String {
    if path.is_empty() {
        ".".to_owned()
    } else {
        path.to_owned()
    }
}

type Result<T> = std::result::Result<T, SmpError>;

/// Applies a strategic merge patch to `target` (the current object, as JSON) for the given kind.
///
/// On error `target` is left unchanged. Kinds outside Ferry's built-in set give [`SmpError::UnsupportedKind`].
pub fn strategic_merge_patch(api_version: &str, kind: &str, target: &mut Value, patch: &Value) -> Result<()> {
    let root = root_type(api_version, kind)
        .ok_or_else(|| SmpError::UnsupportedKind { api_version: api_version.to_owned(), kind: kind.to_owned() })?;
    let patch = patch.as_object().ok_or_else(|| malformed("", "the patch must be a JSON object"))?;
    let base = match target {
        Value::Object(map) => map.clone(),
        _ => return Err(unprocessable("", "the target object is not a JSON object")),
    };
    *target = Value::Object(merge_map(base, patch, Some(root), "")?);
    Ok(())
}

/// A struct type whose fields carry patch metadata; anything else merges with the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    /// Kinds with no patch metadata of their own beyond `metadata`.
    Plain,
    Pod,
    Service,
    Node,
    Namespace,
    /// Deployment and ReplicaSet.
    Workload,
    ServiceAccount,
    ObjectMeta,
    WorkloadSpec,
    PodTemplateSpec,
    PodSpec,
    Container,
    PodStatus,
    ServiceSpec,
    NodeSpec,
    NodeStatus,
    /// A status whose only patch metadata is `conditions` merged by `type`.
    Conditions,
}

fn root_type(api_version: &str, kind: &str) -> Option<Ty> {
    Some(match (api_version, kind) {
        ("v1", "Pod") => Ty::Pod,
        ("v1", "Service") => Ty::Service,
        ("v1", "Node") => Ty::Node,
        ("v1", "Namespace") => Ty::Namespace,
        ("v1", "ServiceAccount") => Ty::ServiceAccount,
        ("v1", "Endpoints" | "ConfigMap" | "Secret" | "Event") => Ty::Plain,
        ("apps/v1", "Deployment" | "ReplicaSet") => Ty::Workload,
        ("coordination.k8s.io/v1", "Lease") | ("events.k8s.io/v1", "Event") => Ty::Plain,
        _ => return None,
    })
}

/// Patch metadata of one field: list strategy, merge key and the field's own type.
#[derive(Debug, Clone, Copy, Default)]
struct Field<'k> {
    /// Patch strategy `merge` (only meaningful for lists).
    merge: bool,
    /// Merge key for lists of objects; `None` for lists of scalars.
    key: Option<&'k str>,
    /// The field's type (for a list, its element type) when it has patch metadata inside.
    ty: Option<Ty>,
}

/// Upstream `patchStrategy` / `patchMergeKey` tags of the types reachable from Ferry's built-in kinds.
fn lookup(parent: Option<Ty>, name: &str) -> Field<'static> {
    use Ty::*;
    let of = |ty| Field { ty: Some(ty), ..Field::default() };
    let merge = |key| Field { merge: true, key, ty: None };
    let Some(parent) = parent else { return Field::default() };
    match (parent, name) {
        (Plain | Pod | Service | Node | Namespace | Workload | ServiceAccount | PodTemplateSpec, "metadata") => {
            of(ObjectMeta)
        }
        (ObjectMeta, "finalizers") => merge(None),
        (ObjectMeta, "ownerReferences") => merge(Some("uid")),
        (Pod | PodTemplateSpec, "spec") => of(PodSpec),
        (Pod, "status") => of(PodStatus),
        (Workload, "spec") => of(WorkloadSpec),
        (WorkloadSpec, "template") => of(PodTemplateSpec),
        (Workload | Service | Namespace, "status") => of(Conditions),
        (Service, "spec") => of(ServiceSpec),
        (ServiceSpec, "ports") => merge(Some("port")),
        (Node, "spec") => of(NodeSpec),
        (Node, "status") => of(NodeStatus),
        (NodeSpec, "podCIDRs") => merge(None),
        (ServiceAccount, "secrets") => merge(Some("name")),
        (PodSpec, "containers" | "initContainers" | "ephemeralContainers") => {
            Field { ty: Some(Container), ..merge(Some("name")) }
        }
        (PodSpec, "volumes" | "imagePullSecrets" | "schedulingGates" | "resourceClaims") => merge(Some("name")),
        (PodSpec, "hostAliases") => merge(Some("ip")),
        (PodSpec, "topologySpreadConstraints") => merge(Some("topologyKey")),
        (Container, "ports") => merge(Some("containerPort")),
        (Container, "env") => merge(Some("name")),
        (Container, "volumeMounts") => merge(Some("mountPath")),
        (Container, "volumeDevices") => merge(Some("devicePath")),
        (PodStatus | NodeStatus | Conditions, "conditions") => merge(Some("type")),
        (PodStatus, "podIPs" | "hostIPs") => merge(Some("ip")),
        (PodStatus, "resourceClaimStatuses") => merge(Some("name")),
        (NodeStatus, "addresses") => merge(Some("type")),
        _ => Field::default(),
    }
}

fn is_directive(key: &str) -> bool {
    key == PATCH || key == RETAIN_KEYS || key.starts_with(SET_ORDER) || key.starts_with(DELETE_FROM)
}

fn is_delete(map: &Map<String, Value>) -> bool {
    map.get(PATCH).and_then(Value::as_str) == Some("delete")
}

fn child_path(path: &str, key: &str) -> String {
    format!("{path}.{key}")
}

/// Merges `patch` into the map `orig` of type `ty`.
fn merge_map(
    mut orig: Map<String, Value>,
    patch: &Map<String, Value>,
    ty: Option<Ty>,
    path: &str,
) -> Result<Map<String, Value>> {
    match patch.get(PATCH).map(|d| (d, d.as_str())) {
        None | Some((_, Some("merge"))) => {}
        Some((_, Some("replace"))) => orig = Map::new(),
        Some((_, Some("delete"))) => return Ok(Map::new()),
        Some((d, _)) => return Err(malformed(path, format!("unknown $patch directive {d}"))),
    }

    if let Some(keys) = patch.get(RETAIN_KEYS) {
        let keys = keys
            .as_array()
            .filter(|keys| keys.iter().all(Value::is_string))
            .ok_or_else(|| malformed(path, "$retainKeys must be a list of field names"))?;
        let keep = |k: &str| keys.iter().any(|v| v.as_str() == Some(k));
        if let Some((k, _)) = patch.iter().find(|(k, v)| !v.is_null() && !is_directive(k) && !keep(k)) {
            return Err(malformed(path, format!("field {k:?} is set but not listed in $retainKeys")));
        }
        orig.retain(|k, _| keep(k));
    }

    // `$setElementOrder/<list>`: merge that list now and put it in the given order.
    let mut ordered: Vec<&str> = Vec::new();
    for (key, order) in patch {
        let Some(name) = key.strip_prefix(SET_ORDER) else { continue };
        let sub = child_path(path, name);
        let order = order.as_array().ok_or_else(|| malformed(&sub, format!("{key} must be a list")))?;
        let field = infer_merge_list(lookup(ty, name), order);
        let patch_list = match patch.get(name) {
            None => None,
            Some(Value::Array(list)) => Some(list),
            Some(_) => return Err(malformed(&sub, format!("{key} is given but {name} is not a list"))),
        };
        let orig_list = match orig.remove(name) {
            None => None,
            Some(Value::Array(list)) => Some(list),
            Some(_) => return Err(unprocessable(&sub, "the current value is not a list")),
        };
        if let Some(list) = patch_list {
            validate_order(list, order, field.key, &sub)?;
        }
        let server = orig_list.clone().unwrap_or_default();
        let merged = match (orig_list, patch_list) {
            (None, None) => continue,
            (Some(list), None) => list,
            (list, Some(patch_list)) => merge_list_value(list.unwrap_or_default(), patch_list, field, &sub)?,
        };
        orig.insert(name.to_owned(), Value::Array(reorder(merged, order, &server, field.key)));
        ordered.push(name);
    }

    let mut deletions = Vec::new();
    for (key, value) in patch {
        if key == PATCH || key == RETAIN_KEYS || key.starts_with(SET_ORDER) || ordered.contains(&key.as_str()) {
            continue;
        }
        if let Some(name) = key.strip_prefix(DELETE_FROM) {
            deletions.push((name, value));
            continue;
        }
        if value.is_null() {
            orig.remove(key);
            continue;
        }
        let sub = child_path(path, key);
        let merged = merge_value(orig.remove(key), value, lookup(ty, key), &sub)?;
        if let Some(merged) = merged {
            orig.insert(key.clone(), merged);
        }
    }

    // `$deleteFromPrimitiveList/<list>` runs last, after any additions to the same list.
    for (name, values) in deletions {
        let values = values
            .as_array()
            .ok_or_else(|| malformed(&child_path(path, name), format!("{DELETE_FROM}{name} must be a list")))?;
        if let Some(Value::Array(list)) = orig.get_mut(name) {
            list.retain(|v| !values.contains(v));
        }
    }
    Ok(orig)
}

/// A `$setElementOrder` list names a merge list; when the schema does not know it, take the merge key from it.
fn infer_merge_list<'k>(field: Field<'k>, order: &'k [Value]) -> Field<'k> {
    if field.merge {
        return field;
    }
    let key = match order.first() {
        Some(Value::Object(first)) if first.len() == 1 => first.keys().next().map(String::as_str),
        _ => None,
    };
    Field { merge: true, key, ty: field.ty }
}

/// Merges one patch value into the current value (`None` if absent); `None` out means "leave the field absent".
fn merge_value(orig: Option<Value>, patch: &Value, field: Field<'_>, path: &str) -> Result<Option<Value>> {
    Ok(Some(match patch {
        Value::Object(p) => {
            if orig.is_none() && is_delete(p) {
                return Ok(None);
            }
            let base = match orig {
                Some(Value::Object(map)) => map,
                _ => Map::new(),
            };
            Value::Object(merge_map(base, p, field.ty, path)?)
        }
        Value::Array(p) => {
            let base = match orig {
                Some(Value::Array(list)) => list,
                _ => Vec::new(),
            };
            Value::Array(merge_list_value(base, p, field, path)?)
        }
        other => other.clone(),
    }))
}

/// Merges a list according to its strategy: element-wise for `merge`, otherwise the patch replaces it.
fn merge_list_value(orig: Vec<Value>, patch: &[Value], field: Field<'_>, path: &str) -> Result<Vec<Value>> {
    if field.merge {
        merge_list(orig, patch, field, path)
    } else {
        Ok(patch.iter().filter_map(clean).collect())
    }
}

/// A patch value as a plain value: directives and `null` members dropped (what the API server stores).
fn clean(value: &Value) -> Option<Value> {
    match value {
        Value::Object(map) => {
            if is_delete(map) || (map.len() == 1 && map.contains_key(PATCH)) {
                return None;
            }
            let members = map.iter().filter(|(k, v)| !v.is_null() && !is_directive(k));
            Some(Value::Object(members.filter_map(|(k, v)| Some((k.clone(), clean(v)?))).collect()))
        }
        Value::Array(list) => Some(Value::Array(list.iter().filter_map(clean).collect())),
        other => Some(other.clone()),
    }
}

/// Merges a list with patch strategy `merge`.
fn merge_list(orig: Vec<Value>, patch: &[Value], field: Field<'_>, path: &str) -> Result<Vec<Value>> {
    let Some(first) = orig.iter().chain(patch).next() else { return Ok(orig) };
    let of_maps = first.is_object();
    if orig.iter().chain(patch).any(|v| v.is_array() || v.is_object() != of_maps) {
        return Err(unprocessable(path, "list elements must all be objects or all be scalars (no lists of lists)"));
    }
    if !of_maps {
        let mut merged = orig.clone();
        for v in patch {
            if !merged.contains(v) {
                merged.push(v.clone());
            }
        }
        return Ok(reorder(merged, patch, &orig, None));
    }
    let Some(key) = field.key else {
        return Err(unprocessable(path, "cannot merge a list of objects without a merge key"));
    };

    // Special elements first: `$patch: delete` removes by merge key, `$patch: replace` drops the live list.
    let mut list = orig;
    let mut items = Vec::new();
    for element in patch.iter().filter_map(Value::as_object) {
        let Some(directive) = element.get(PATCH) else {
            items.push(element);
            continue;
        };
        match directive.as_str() {
            Some("delete") => {
                let value = element.get(key).ok_or_else(|| no_merge_key(path, key))?;
                list.retain(|v| v.get(key) != Some(value));
            }
            Some("replace") => list.clear(),
            Some("merge") if element.contains_key(key) => items.push(element),
            Some("merge") => {}
            _ => return Err(malformed(path, format!("unknown $patch directive {directive}"))),
        }
    }
    let server = list.clone();
    for item in items {
        let value = item.get(key).ok_or_else(|| no_merge_key(path, key))?;
        match list.iter_mut().find(|v| v.get(key) == Some(value)) {
            Some(slot) => {
                let base = match std::mem::take(slot) {
                    Value::Object(map) => map,
                    _ => Map::new(),
                };
                *slot = Value::Object(merge_map(base, item, field.ty, path)?);
            }
            None => list.push(Value::Object(merge_map(Map::new(), item, field.ty, path)?)),
        }
    }
    Ok(reorder(list, patch, &server, Some(key)))
}

fn no_merge_key(path: &str, key: &str) -> SmpError {
    malformed(path, format!("a list element does not have the merge key {key:?}"))
}

/// What identifies a list element: its merge key's value, or the scalar itself.
fn ident<'a>(value: &'a Value, key: Option<&str>) -> Option<&'a Value> {
    match key {
        Some(key) => value.get(key),
        None => Some(value),
    }
}

fn position(list: &[Value], value: &Value, key: Option<&str>) -> Option<usize> {
    let id = ident(value, key)?;
    list.iter().position(|v| ident(v, key) == Some(id))
}

/// apimachinery's `normalizeElementOrder`: the items named in `order` are sorted by it, the others keep the
/// `server` (live list) order, and the two runs are interleaved where the live list relates them.
fn reorder(merged: Vec<Value>, order: &[Value], server: &[Value], key: Option<&str>) -> Vec<Value> {
    let (mut named, mut rest): (Vec<_>, Vec<_>) = merged.into_iter().partition(|v| position(order, v, key).is_some());
    named.sort_by_key(|v| position(order, v, key));
    rest.sort_by_key(|v| position(server, v, key).unwrap_or(usize::MAX));
    let (mut rest, mut named) = (rest.into_iter().peekable(), named.into_iter().peekable());
    let mut out = Vec::new();
    loop {
        let take_rest = match (rest.peek(), named.peek()) {
            (Some(r), Some(n)) => {
                matches!((position(server, r, key), position(server, n, key)), (Some(a), Some(b)) if a < b)
            }
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return out,
        };
        out.extend(if take_rest { rest.next() } else { named.next() });
    }
}

/// The patch list's plain elements must appear in `$setElementOrder`, in the same relative order.
fn validate_order(patch: &[Value], order: &[Value], key: Option<&str>, path: &str) -> Result<()> {
    let mut remaining = order.iter();
    for element in patch.iter().filter(|v| v.get(PATCH).is_none()) {
        let id = ident(element, key).ok_or_else(|| no_merge_key(path, key.unwrap_or_default()))?;
        if !remaining.any(|v| ident(v, key) == Some(id)) {
            return Err(malformed(path, format!("the patch list does not match its {SET_ORDER} list")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn apply(api_version: &str, kind: &str, mut target: Value, patch: Value) -> Value {
        strategic_merge_patch(api_version, kind, &mut target, &patch).expect("patch applies");
        target
    }

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web", "tier": "front"}},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "containers": [
                            {"name": "app", "image": "app:v1",
                             "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                             "ports": [{"containerPort": 8080, "protocol": "TCP"}, {"containerPort": 9090, "protocol": "TCP"}]},
                            {"name": "sidecar", "image": "proxy:v1"}
                        ],
                        "tolerations": [{"key": "a", "operator": "Exists"}]
                    }
                }
            }
        })
    }

    #[test]
    fn strategic_kubectl_apply_edit_of_deployment() {
        // What `kubectl apply` sends after changing app's image, adding env C between A and B and
        // removing port 9090.
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "app"}, {"name": "sidecar"}],
            "containers": [{
                "name": "app", "image": "app:v2",
                "$setElementOrder/env": [{"name": "A"}, {"name": "C"}, {"name": "B"}],
                "env": [{"name": "C", "value": "3"}],
                "$setElementOrder/ports": [{"containerPort": 8080}],
                "ports": [{"$patch": "delete", "containerPort": 9090}]
            }]
        }}}});
        let mut want = deployment();
        want["spec"]["template"]["spec"]["containers"][0] = json!({
            "name": "app", "image": "app:v2",
            "env": [{"name": "A", "value": "1"}, {"name": "C", "value": "3"}, {"name": "B", "value": "2"}],
            "ports": [{"containerPort": 8080, "protocol": "TCP"}]
        });
        assert_eq!(apply("apps/v1", "Deployment", deployment(), patch), want);
    }

    #[test]
    fn strategic_kubectl_apply_adds_and_removes_containers_in_order() {
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "init"}, {"name": "app"}, {"name": "logger"}],
            "containers": [
                {"name": "init", "image": "busybox"},
                {"name": "logger", "image": "fluent:1"},
                {"$patch": "delete", "name": "sidecar"}
            ]
        }}}});
        let mut want = deployment();
        want["spec"]["template"]["spec"]["containers"] = json!([
            {"name": "init", "image": "busybox"},
            deployment()["spec"]["template"]["spec"]["containers"][0].clone(),
            {"name": "logger", "image": "fluent:1"}
        ]);
        assert_eq!(apply("apps/v1", "Deployment", deployment(), patch), want);
    }

    #[test]
    fn strategic_rollout_restart_annotation() {
        let patch = json!({"spec": {"template": {"metadata": {"annotations": {
            "kubectl.kubernetes.io/restartedAt": "2024-05-01T10:00:00Z"
        }}}}});
        let mut want = deployment();
        want["spec"]["template"]["metadata"] = json!({
            "labels": {"app": "web"},
            "annotations": {"kubectl.kubernetes.io/restartedAt": "2024-05-01T10:00:00Z"}
        });
        assert_eq!(apply("apps/v1", "Deployment", deployment(), patch), want);
    }

    #[test]
    fn strategic_retain_keys_switches_strategy_to_recreate() {
        let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": null}}});
        let mut want = deployment();
        want["spec"]["strategy"] = json!({"type": "Recreate"});
        assert_eq!(apply("apps/v1", "Deployment", deployment(), patch), want);

        // A field set in the patch but missing from $retainKeys is a bad request.
        let bad = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": {}}}});
        let err = strategic_merge_patch("apps/v1", "Deployment", &mut deployment(), &bad).expect_err("rejected");
        assert_eq!(err.status_code(), 400);
    }

    #[test]
    fn strategic_volume_source_switch_with_retain_keys() {
        let pod = json!({"spec": {"volumes": [{"name": "data", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "c"}}]}});
        let patch = json!({"spec": {
            "$setElementOrder/volumes": [{"name": "data"}, {"name": "cfg"}],
            "volumes": [{"$retainKeys": ["name", "persistentVolumeClaim"], "name": "data",
                         "persistentVolumeClaim": {"claimName": "pvc"}, "emptyDir": null}]
        }});
        let want = json!({"spec": {"volumes": [
            {"name": "data", "persistentVolumeClaim": {"claimName": "pvc"}},
            {"name": "cfg", "configMap": {"name": "c"}}
        ]}});
        assert_eq!(apply("v1", "Pod", pod, patch), want);
    }

    #[test]
    fn strategic_finalizers_merge_as_set() {
        let cm = json!({"metadata": {"name": "c", "finalizers": ["a", "b"]}});
        // Without $setElementOrder new items go first, as in apimachinery.
        let got = apply("v1", "ConfigMap", cm.clone(), json!({"metadata": {"finalizers": ["c", "a"]}}));
        assert_eq!(got, json!({"metadata": {"name": "c", "finalizers": ["c", "a", "b"]}}));
        // kubectl apply's patch also sets the order.
        let patch = json!({"metadata": {"$setElementOrder/finalizers": ["a", "b", "c"], "finalizers": ["c"]}});
        assert_eq!(
            apply("v1", "ConfigMap", cm, patch),
            json!({"metadata": {"name": "c", "finalizers": ["a", "b", "c"]}})
        );
    }

    #[test]
    fn strategic_delete_from_primitive_list() {
        let cm = json!({"metadata": {"name": "c", "finalizers": ["a", "b", "c"]}});
        let patch = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b"]}});
        assert_eq!(
            apply("v1", "Secret", cm.clone(), patch),
            json!({"metadata": {"name": "c", "finalizers": ["a", "c"]}})
        );
        let patch = json!({"metadata": {
            "$setElementOrder/finalizers": ["c", "a"], "$deleteFromPrimitiveList/finalizers": ["b"]
        }});
        assert_eq!(apply("v1", "Secret", cm, patch), json!({"metadata": {"name": "c", "finalizers": ["c", "a"]}}));
    }

    #[test]
    fn strategic_service_ports_merge_by_port() {
        let svc = json!({"spec": {"type": "ClusterIP", "ports": [
            {"name": "http", "port": 80, "targetPort": 8080},
            {"name": "https", "port": 443, "targetPort": 8443}
        ]}});
        let patch = json!({"spec": {"ports": [{"port": 80, "targetPort": 9090}, {"name": "metrics", "port": 9100}]}});
        let want = json!({"spec": {"type": "ClusterIP", "ports": [
            {"name": "http", "port": 80, "targetPort": 9090},
            {"name": "metrics", "port": 9100},
            {"name": "https", "port": 443, "targetPort": 8443}
        ]}});
        assert_eq!(apply("v1", "Service", svc, patch), want);
    }

    #[test]
    fn strategic_replace_directives() {
        let patch = json!({
            "metadata": {"labels": {"$patch": "replace", "only": "this"}},
            "spec": {"template": {"spec": {"containers": [{"$patch": "replace"}, {"name": "solo", "image": "solo:1"}]}}}
        });
        let mut want = deployment();
        want["metadata"]["labels"] = json!({"only": "this"});
        want["spec"]["template"]["spec"]["containers"] = json!([{"name": "solo", "image": "solo:1"}]);
        assert_eq!(apply("apps/v1", "Deployment", deployment(), patch), want);
    }

    #[test]
    fn strategic_null_deletes_and_lists_without_strategy_replace() {
        let patch = json!({
            "metadata": {"labels": {"tier": null, "missing": null}},
            "spec": {"replicas": null, "template": {"spec": {"tolerations": [{"key": "b", "operator": "Exists", "effect": null}]}}}
        });
        let mut want = deployment();
        want["metadata"]["labels"] = json!({"app": "web"});
        want["spec"].as_object_mut().expect("map").remove("replicas");
        want["spec"]["template"]["spec"]["tolerations"] = json!([{"key": "b", "operator": "Exists"}]);
        assert_eq!(apply("apps/v1", "Deployment", deployment(), patch), want);
    }

    #[test]
    fn strategic_status_conditions_merge_by_type() {
        let node = json!({"status": {
            "conditions": [{"type": "Ready", "status": "False"}, {"type": "DiskPressure", "status": "False"}],
            "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]
        }});
        let patch = json!({"status": {
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
            "addresses": [{"type": "Hostname", "address": "n1"}]
        }});
        let want = json!({"status": {
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}, {"type": "DiskPressure", "status": "False"}],
            "addresses": [{"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "10.0.0.1"}]
        }});
        assert_eq!(apply("v1", "Node", node, patch), want);
    }

    #[test]
    fn strategic_new_fields_drop_directives_and_nulls() {
        let patch = json!({"spec": {"containers": [
            {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}, {"name": "Y", "$patch": "delete"}], "args": null}
        ]}});
        let want = json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}]}
        ]}});
        assert_eq!(apply("v1", "Pod", json!({"metadata": {"name": "p"}}), patch), want);
    }

    #[test]
    fn strategic_set_element_order_makes_unknown_list_a_merge_list() {
        // A list the schema table does not know: the order directive implies a merge list keyed by `holder`.
        let lease = json!({"spec": {"holders": [{"holder": "a", "weight": 1}, {"holder": "b", "weight": 2}]}});
        let patch = json!({"spec": {
            "$setElementOrder/holders": [{"holder": "b"}, {"holder": "c"}],
            "holders": [{"holder": "c", "weight": 3}, {"holder": "a", "$patch": "delete"}]
        }});
        let want = json!({"spec": {"holders": [{"holder": "b", "weight": 2}, {"holder": "c", "weight": 3}]}});
        assert_eq!(apply("coordination.k8s.io/v1", "Lease", lease, patch), want);
    }

    #[test]
    fn strategic_errors() {
        let mut target = json!({"metadata": {"name": "x"}});
        let err = strategic_merge_patch("example.com/v1", "Widget", &mut target, &json!({})).expect_err("unsupported");
        assert_eq!(err, SmpError::UnsupportedKind { api_version: "example.com/v1".into(), kind: "Widget".into() });
        assert_eq!(err.status_code(), 415);

        for bad in [
            json!([]),
            json!({"metadata": {"$patch": "explode"}}),
            json!({"spec": {"ports": [{"name": "no-port"}]}}),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": "a"}}),
            json!({"spec": {"$setElementOrder/ports": [{"port": 1}], "ports": [{"port": 2}]}}),
        ] {
            let err = strategic_merge_patch("v1", "Service", &mut target, &bad).expect_err("malformed");
            assert_eq!(err.status_code(), 400, "{bad}: {err}");
        }
        let mixed = json!({"metadata": {"finalizers": [{"a": 1}]}});
        let mut with_finalizers = json!({"metadata": {"finalizers": ["x"]}});
        let err = strategic_merge_patch("v1", "Pod", &mut with_finalizers, &mixed).expect_err("mixed");
        assert_eq!(err.status_code(), 422);
        assert_eq!(with_finalizers, json!({"metadata": {"finalizers": ["x"]}}), "target untouched on error");
        assert_eq!(target, json!({"metadata": {"name": "x"}}));
    }
}
