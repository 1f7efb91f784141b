//! Node restriction: what a node's identity (`system:node:<name>` in `system:nodes`) may write.
//!
//! Ferry has no general authorizer (RBAC) yet: every authenticated user may do everything —
//! except nodes, which get the write side of Kubernetes' Node authorizer and NodeRestriction
//! admission, so a compromised node cannot touch the rest of the cluster:
//!
//! * its own Node (create, update, patch, status) and nothing about other Nodes;
//! * its own Lease in `kube-node-lease`;
//! * `pods/status` and deletion of pods bound to it (checked against the stored pod);
//! * Events (create, update, patch);
//! * no other writes, and no `pods/exec` or `pods/log`.
//!
//! Reads are not restricted yet (Kubernetes limits a node to the Secrets and ConfigMaps its pods
//! reference).

use crate::auth::UserInfo;
use crate::error::{ApiError, Result};
use crate::request::Target;
use crate::rest::Api;
use ferry_api::Subresource;
use http::Method;

/// Group of node identities.
pub const NODES_GROUP: &str = "system:nodes";

/// The node a user is, if it is one.
pub fn node_name(user: &UserInfo) -> Option<&str> {
    let name = user.name.strip_prefix("system:node:")?;
    (user.groups.iter().any(|g| g == NODES_GROUP) && !name.is_empty()).then_some(name)
}

fn forbidden(user: &UserInfo, verb: &str, target: &Target, name: &str, why: &str) -> ApiError {
    let group = if target.res.group.is_empty() { "\"\"".to_string() } else { format!("{:?}", target.res.group) };
    let resource = match target.sub {
        Some(s) => format!("{}/{}", target.res.plural, s.name()),
        None => target.res.plural.to_string(),
    };
    let scope = match &target.namespace {
        Some(ns) => format!("in the namespace {ns:?}"),
        None => "at the cluster scope".to_string(),
    };
    let subject =
        if name.is_empty() { target.res.plural.to_string() } else { format!("{} {name:?}", target.res.plural) };
    ApiError::forbidden(format!(
        "{subject} is forbidden: User {:?} cannot {verb} resource {resource:?} in API group {group} {scope}: {why}",
        user.name
    ))
}

fn verb(method: &Method) -> &'static str {
    match *method {
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "get",
    }
}

/// Check a request by a node identity; `body_name` is `metadata.name` of a create's body.
pub async fn check_node(
    api: &Api,
    user: &UserInfo,
    node: &str,
    method: &Method,
    target: &Target,
    body_name: Option<&str>,
) -> Result<()> {
    let name = target.name.as_deref().or(body_name).unwrap_or("");
    let verb = verb(method);
    let plural = target.res.plural;
    let group = target.res.group;
    match target.sub {
        Some(Subresource::Log | Subresource::Exec) => {
            return Err(forbidden(user, verb, target, name, "nodes cannot read logs of or exec into pods"))
        }
        _ if *method == Method::GET => return Ok(()),
        _ => {}
    }
    match (group, plural) {
        ("", "nodes") if name == node && *method != Method::DELETE => Ok(()),
        ("", "nodes") => {
            Err(forbidden(user, verb, target, name, &format!("node {node:?} cannot modify node {name:?}")))
        }
        ("coordination.k8s.io", "leases")
            if target.namespace.as_deref() == Some("kube-node-lease") && name == node && *method != Method::DELETE =>
        {
            Ok(())
        }
        ("", "events") | ("events.k8s.io", "events") if *method != Method::DELETE => Ok(()),
        ("", "pods")
            if target.name.is_some() && (target.sub == Some(Subresource::Status) || *method == Method::DELETE) =>
        {
            let key = target.res.key(target.namespace.as_deref(), name);
            let stored = api.store.get(&key).await.map_err(|e| crate::error::from_storage(target.res, name, e))?;
            let Some(kv) = stored else { return Err(ApiError::not_found(target.res, name)) };
            let pod: serde_json::Value = serde_json::from_slice(&kv.value).unwrap_or_default();
            if pod.pointer("/spec/nodeName").and_then(|n| n.as_str()) == Some(node) {
                Ok(())
            } else {
                Err(forbidden(user, verb, target, name, &format!("pod is not bound to node {node:?}")))
            }
        }
        _ => Err(forbidden(user, verb, target, name, "nodes may only write their Node, Lease, pod status and events")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_identities() {
        let u = |name: &str, groups: &[&str]| UserInfo {
            name: name.into(),
            uid: String::new(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        };
        assert_eq!(node_name(&u("system:node:n1", &["system:nodes"])), Some("n1"));
        assert_eq!(node_name(&u("system:node:n1", &["other"])), None);
        assert_eq!(node_name(&u("system:node:", &["system:nodes"])), None);
        assert_eq!(node_name(&u("ferry-admin", &["system:masters"])), None);
    }
}
