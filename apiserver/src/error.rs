//! API errors and their one conversion to a Kubernetes `Status`.
//!
//! Every non-2xx response body is built by [`ApiError::to_status`]; handlers return
//! `Result<_, ApiError>` and never write error bodies themselves.

use ferry_api::{FieldError, ResourceInfo};
use serde_json::{json, Value};

/// An error answered to the client as a `Status` object.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// Machine-readable reason (`NotFound`, `Conflict`, …).
    pub reason: &'static str,
    /// Human-readable message.
    pub message: String,
    /// `details` of the Status, when there are any.
    pub details: Option<Box<Details>>,
}

/// `Status.details`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Details {
    /// Object name.
    pub name: String,
    /// API group.
    pub group: String,
    /// Resource (plural) or kind, as Kubernetes reports it for this error.
    pub kind: String,
    /// Field causes.
    pub causes: Vec<FieldError>,
    /// Extra causes that are not field errors: (reason, message, field).
    pub other_causes: Vec<(String, String, String)>,
    /// Seconds a client should wait before retrying.
    pub retry_after_seconds: Option<u32>,
}

/// Result alias for handlers.
pub type Result<T, E = ApiError> = std::result::Result<T, E>;

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self { code, reason, message: message.into(), details: None }
    }

    fn with_details(mut self, res: &ResourceInfo, name: &str) -> Self {
        self.details = Some(Box::new(Details {
            name: name.into(),
            group: res.group.into(),
            kind: res.plural.into(),
            ..Default::default()
        }));
        self
    }

    /// 404 for an object.
    pub fn not_found(res: &ResourceInfo, name: &str) -> Self {
        Self::new(404, "NotFound", format!("{} \"{name}\" not found", res.qualified_name())).with_details(res, name)
    }

    /// 404 for a path that names no resource.
    pub fn no_route(path: &str) -> Self {
        Self::new(404, "NotFound", format!("the server could not find the requested resource ({path})"))
    }

    /// 409 on create.
    pub fn already_exists(res: &ResourceInfo, name: &str) -> Self {
        Self::new(409, "AlreadyExists", format!("{} \"{name}\" already exists", res.qualified_name()))
            .with_details(res, name)
    }

    /// 409 on a stale resourceVersion.
    pub fn conflict(res: &ResourceInfo, name: &str) -> Self {
        Self::conflict_msg(
            res,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 409 with a custom explanation.
    pub fn conflict_msg(res: &ResourceInfo, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {} \"{name}\": {why}", res.qualified_name()),
        )
        .with_details(res, name)
    }

    /// 422 with field causes.
    pub fn invalid(res: &ResourceInfo, name: &str, causes: Vec<FieldError>) -> Self {
        let list: Vec<String> = causes.iter().map(ToString::to_string).collect();
        let joined = if list.len() == 1 { list.join("") } else { format!("[{}]", list.join(", ")) };
        let message = format!("{} \"{name}\" is invalid: {joined}", res.qualified_kind());
        Self {
            code: 422,
            reason: "Invalid",
            message,
            details: Some(Box::new(Details {
                name: name.into(),
                group: res.group.into(),
                kind: res.kind.into(),
                causes,
                ..Default::default()
            })),
        }
    }

    /// 422 for invalid query parameters (`ListOptions`).
    pub fn invalid_params(_res: &ResourceInfo, field: &str, detail: &str) -> Self {
        let cause = FieldError::forbidden(field, detail);
        let mut e = Self::new(422, "Invalid", format!("ListOptions.meta.k8s.io \"\" is invalid: {cause}"));
        e.details = Some(Box::new(Details {
            group: "meta.k8s.io".into(),
            kind: "ListOptions".into(),
            causes: vec![cause],
            ..Default::default()
        }));
        e
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 401.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// 403.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }

    /// 403 for writes into a terminating namespace.
    pub fn namespace_terminating(res: &ResourceInfo, name: &str, namespace: &str) -> Self {
        Self::new(
            403,
            "Forbidden",
            format!(
                "{} \"{name}\" is forbidden: unable to create new content in namespace {namespace} because it is being terminated",
                res.qualified_name()
            ),
        )
        .with_details(res, name)
    }

    /// 405.
    pub fn method_not_allowed(what: &str) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource ({what})"),
        )
    }

    /// 406.
    pub fn not_acceptable(accept: &str) -> Self {
        Self::new(
            406,
            "NotAcceptable",
            format!("the server was unable to respond with a content type that the client supports ({accept})"),
        )
    }

    /// 410 for a watch, list or continue token that is too old.
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// 413.
    pub fn too_large(limit: usize) -> Self {
        Self::new(413, "RequestEntityTooLarge", format!("Request entity too large: limit is {limit}"))
    }

    /// 413 with a specific message.
    pub fn too_large_msg(message: impl Into<String>) -> Self {
        Self::new(413, "RequestEntityTooLarge", message)
    }

    /// 422 without field causes (e.g. a JSON patch whose test failed).
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(422, "Invalid", message)
    }

    /// 415.
    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(415, "UnsupportedMediaType", format!("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/merge-patch+json, application/json-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml, application/vnd.kubernetes.protobuf (got {content_type:?})"))
    }

    /// 415 with a specific explanation.
    pub fn unsupported_media_type_msg(message: impl Into<String>) -> Self {
        Self::new(415, "UnsupportedMediaType", message)
    }

    /// 415 for a strategic merge patch on a kind that has no strategic merge schema.
    pub fn unsupported_patch(kind: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format - strategic merge patch is not supported for {kind}; use application/merge-patch+json or application/json-patch+json"),
        )
    }

    /// 409 for a server-side apply whose fields other managers own (`errors.NewApplyConflict`): one
    /// `FieldManagerConflict` cause per field.
    pub fn apply_conflict(conflicts: &[ferry_api::managed::Conflict], message: String) -> Self {
        let mut e = Self::new(409, "Conflict", message);
        e.details = Some(Box::new(Details {
            other_causes: conflicts
                .iter()
                .map(|c| ("FieldManagerConflict".to_owned(), format!("conflict with {}", c.manager), c.field.clone()))
                .collect(),
            ..Default::default()
        }));
        e
    }

    /// 422 for invalid `PatchOptions` (a missing `fieldManager` on apply, `force` on another patch type).
    pub fn invalid_patch_options(cause: FieldError) -> Self {
        let mut e = Self::new(422, "Invalid", format!("PatchOptions.meta.k8s.io \"\" is invalid: {cause}"));
        e.details = Some(Box::new(Details {
            group: "meta.k8s.io".into(),
            kind: "PatchOptions".into(),
            causes: vec![cause],
            ..Default::default()
        }));
        e
    }

    /// 429.
    pub fn too_many_requests(message: impl Into<String>, retry_after: u32) -> Self {
        let mut e = Self::new(429, "TooManyRequests", message);
        e.details = Some(Box::new(Details { retry_after_seconds: Some(retry_after), ..Default::default() }));
        e
    }

    /// 500 for failures that are not the client's fault.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", format!("Internal error occurred: {}", message.into()))
    }

    /// 503 (etcd unavailable and the like).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "ServiceUnavailable", message)
    }

    /// 504.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(504, "Timeout", message)
    }

    /// The `Status` object for this error.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            let mut details = serde_json::Map::new();
            if !d.name.is_empty() {
                details.insert("name".into(), d.name.clone().into());
            }
            if !d.group.is_empty() {
                details.insert("group".into(), d.group.clone().into());
            }
            if !d.kind.is_empty() {
                details.insert("kind".into(), d.kind.clone().into());
            }
            let mut causes: Vec<Value> = d
                .causes
                .iter()
                .map(|c| json!({"reason": c.cause.reason(), "message": c.message(), "field": c.field}))
                .collect();
            causes.extend(d.other_causes.iter().map(|(r, m, f)| json!({"reason": r, "message": m, "field": f})));
            if !causes.is_empty() {
                details.insert("causes".into(), Value::Array(causes));
            }
            if let Some(s) = d.retry_after_seconds {
                details.insert("retryAfterSeconds".into(), s.into());
            }
            status["details"] = Value::Object(details);
        }
        status
    }
}

/// Map a storage error for an object to the API error Kubernetes would return.
pub fn from_storage(res: &ResourceInfo, name: &str, e: crate::storage::StorageError) -> ApiError {
    use crate::storage::StorageError as S;
    match e {
        S::AlreadyExists(_) => ApiError::already_exists(res, name),
        S::NotFound(_) => ApiError::not_found(res, name),
        S::Conflict { .. } | S::GuardChanged(_) => ApiError::conflict(res, name),
        S::Claimed(key) => ApiError::conflict_msg(res, name, &format!("{key} is already allocated; please retry")),
        S::Compacted(rev) => ApiError::expired(format!("The resourceVersion {rev} is too old")),
        S::Timeout(d) => ApiError::unavailable(format!("storage is unavailable: etcd did not answer within {d:?}")),
        S::Etcd(e) => {
            tracing::warn!(error = %e, "etcd request failed");
            ApiError::unavailable(format!("storage is unavailable: {e}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_status_has_causes() {
        let t = ferry_api::ResourceTable::builtin();
        let res = t.by_kind("apps/v1", "Deployment").expect("deployments");
        let e = ApiError::invalid(
            res,
            "web",
            vec![FieldError::invalid("spec.replicas", -1, "must be greater than or equal to 0")],
        );
        let s = e.to_status();
        assert_eq!(s["code"], 422);
        assert_eq!(
            s["message"],
            "Deployment.apps \"web\" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0"
        );
        assert_eq!(s["details"]["causes"][0]["field"], "spec.replicas");
        assert_eq!(s["details"]["causes"][0]["reason"], "FieldValueInvalid");
        assert_eq!(s["details"]["kind"], "Deployment");
    }

    #[test]
    fn not_found_matches_kubernetes() {
        let t = ferry_api::ResourceTable::builtin();
        let res = t.lookup("apps", "v1", "deployments").expect("deployments");
        let s = ApiError::not_found(res, "x").to_status();
        assert_eq!(s["message"], "deployments.apps \"x\" not found");
        assert_eq!(s["details"]["kind"], "deployments");
        assert_eq!(s["details"]["group"], "apps");
    }
}
