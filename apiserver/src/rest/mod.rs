//! Generic REST handlers, driven by the resource table.
//!
//! [`Api::handle`] takes a parsed [`Target`] plus the method, query, headers and body, and
//! dispatches to `read` (get, list), `watch`, `write` (create, update, patch, delete,
//! deletecollection) or `subresource` (status, scale, binding, finalize). Every handler returns
//! a [`Reply`] or an [`ApiError`]; the server turns either into an HTTP response.

mod priority;
pub mod proxy;
mod read;
mod services;
mod subresource;
mod watch;
mod write;

use crate::cache::WatchCache;
use crate::codec;
use crate::error::{ApiError, Result};
use crate::metrics::Metrics;
use crate::request::{Query, Target};
use crate::storage::Store;
use bytes::Bytes;
use ferry_api::{ResourceInfo, ResourceTable, Subresource};
use http::Method;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use priority::ensure_system_priority_classes;
pub use services::ServiceRanges;
pub use write::ensure_default_namespaces;

/// Tunables of the REST layer.
#[derive(Debug, Clone)]
pub struct RestOptions {
    /// Minimum interval between BOOKMARK events on one watch.
    pub bookmark_interval: Duration,
    /// Watch duration when the client sets no `timeoutSeconds`.
    pub default_watch_timeout: Duration,
    /// Where Services' ClusterIPs and NodePorts come from.
    pub service_ranges: ServiceRanges,
    /// How long Events live after their last write (None: forever).
    pub event_ttl: Option<Duration>,
    /// `tolerationSeconds` of the `node.kubernetes.io/not-ready` NoExecute toleration added to pods
    /// that have none (Kubernetes' DefaultTolerationSeconds admission).
    pub default_not_ready_toleration_seconds: i64,
    /// The same for `node.kubernetes.io/unreachable`.
    pub default_unreachable_toleration_seconds: i64,
}

impl Default for RestOptions {
    fn default() -> Self {
        Self {
            bookmark_interval: Duration::from_secs(10),
            default_watch_timeout: Duration::from_secs(1800),
            service_ranges: ServiceRanges::default(),
            event_ttl: Some(Duration::from_secs(3600)),
            default_not_ready_toleration_seconds: 300,
            default_unreachable_toleration_seconds: 300,
        }
    }
}

/// Everything the handlers share.
pub struct Api {
    /// The served resources.
    pub table: ResourceTable,
    /// etcd.
    pub store: Store,
    /// The watch cache.
    pub cache: Arc<WatchCache>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Tunables.
    pub options: RestOptions,
    /// Cancelled when the server shuts down (ends watches).
    pub shutdown: CancellationToken,
}

/// A response body.
pub enum Body {
    /// A complete JSON document.
    Full(Bytes),
    /// A stream of newline-delimited JSON watch events.
    Stream(mpsc::Receiver<Bytes>),
}

/// A successful response.
pub struct Reply {
    /// HTTP status code.
    pub code: u16,
    /// The body.
    pub body: Body,
    /// `Warning` headers (`299 - "…"`).
    pub warnings: Vec<String>,
}

impl Reply {
    /// A JSON reply.
    pub fn json(code: u16, body: impl Into<Bytes>) -> Self {
        Self { code, body: Body::Full(body.into()), warnings: Vec::new() }
    }

    /// A JSON reply from a value.
    pub fn value(code: u16, v: &Value) -> Self {
        Self::json(code, codec::encode_value(v))
    }
}

/// The request as the handlers see it.
pub struct Request<'a> {
    /// HTTP method.
    pub method: &'a Method,
    /// What it targets.
    pub target: Target,
    /// Query parameters.
    pub query: Query,
    /// `Content-Type` (may be empty).
    pub content_type: &'a str,
    /// Whether the client asked for `meta.k8s.io` Table output, and with which `includeObject`.
    pub table: Option<TableOptions>,
    /// Body bytes (already size-limited).
    pub body: Bytes,
    /// `User-Agent` (may be empty); its prefix names the field manager when the query does not.
    pub user_agent: &'a str,
}

impl Request<'_> {
    /// The update this request makes to its target object.
    pub(crate) fn update(&self, mode: write::Mode, validation: crate::request::FieldValidation) -> write::Update<'_> {
        let track = match mode {
            write::Mode::Main => write::Track::Update { manager: self.manager(), subresource: None },
            write::Mode::Status => write::Track::Update { manager: self.manager(), subresource: Some("status") },
            write::Mode::Internal | write::Mode::Binding => write::Track::Off,
        };
        write::Update {
            res: self.target.res,
            namespace: self.target.namespace.as_deref(),
            name: self.target.name.as_deref().unwrap_or_default(),
            mode,
            validation,
            dry_run: self.query.dry_run,
            track,
        }
    }

    /// The field manager of this write: `fieldManager`, else the User-Agent up to its first `/`, as
    /// Kubernetes does (`kubectl/v1.37.0 (linux/amd64) …` → `kubectl`).
    pub(crate) fn manager(&self) -> &str {
        match &self.query.field_manager {
            Some(m) => m,
            None => match self.user_agent.split('/').next() {
                Some(p) if !p.is_empty() => p,
                _ => "unknown",
            },
        }
    }
}

/// A request for Table output (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableOptions {
    /// `includeObject`: `None`, `Metadata` (default) or `Object`.
    pub include_object: &'static str,
}

impl TableOptions {
    /// From the Accept header and the `includeObject` query parameter. A Table is chosen when
    /// the client lists it first (kubectl puts it before `application/json`).
    pub fn negotiate(accept: &str, include_object: Option<&str>) -> Result<Option<Self>> {
        let first = accept.split(',').next().unwrap_or("");
        let p: String = first.chars().filter(|c| !c.is_whitespace()).collect();
        if !(p.contains("as=Table") && p.contains("g=meta.k8s.io")) {
            return Ok(None);
        }
        let include_object = match include_object.unwrap_or("Metadata") {
            "None" => "None",
            "Metadata" | "" => "Metadata",
            "Object" => "Object",
            other => {
                return Err(ApiError::bad_request(format!(
                    "includeObject must be one of \"None\", \"Metadata\" or \"Object\", got {other:?}"
                )))
            }
        };
        Ok(Some(Self { include_object }))
    }

    /// Render served objects as a Table.
    pub fn render(
        &self,
        res: &ResourceInfo,
        objects: &[Value],
        rev: &str,
        next: Option<&str>,
        with_headers: bool,
    ) -> Value {
        ferry_api::table::table(
            res.group,
            res.plural,
            objects,
            rev,
            next,
            self.include_object,
            with_headers,
            chrono::Utc::now(),
        )
    }
}

/// The verb label for metrics, Kubernetes style.
pub fn verb(method: &Method, target: &Target, query: &Query) -> &'static str {
    match *method {
        Method::GET if query.watch => "WATCH",
        Method::GET if target.name.is_none() => "LIST",
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE if target.name.is_none() => "DELETECOLLECTION",
        Method::DELETE => "DELETE",
        _ => "OTHER",
    }
}

impl Api {
    /// Handle a resource request.
    pub async fn handle(&self, req: Request<'_>) -> Result<Reply> {
        let t = &req.target;
        match (req.method.clone(), t.name.is_some(), t.sub) {
            (Method::GET, false, None) if req.query.watch => self.watch(&req).await,
            (Method::GET, false, None) => self.list(&req).await,
            (Method::GET, true, None) if req.query.watch => self.watch(&req).await,
            (Method::GET, true, None) => self.get(&req).await,
            (Method::POST, false, None) => self.create(&req).await,
            (Method::PUT, true, None) => self.update(&req).await,
            (Method::PATCH, true, None) => self.patch(&req).await,
            (Method::DELETE, true, None) => self.delete(&req).await,
            (Method::DELETE, false, None) => self.delete_collection(&req).await,
            (Method::GET, true, Some(Subresource::Status)) => self.get(&req).await,
            (Method::PUT, true, Some(Subresource::Status)) => self.update_status(&req).await,
            (Method::PATCH, true, Some(Subresource::Status)) => self.patch_status(&req).await,
            (Method::GET, true, Some(Subresource::Scale)) => self.get_scale(&req).await,
            (Method::PUT, true, Some(Subresource::Scale)) => self.update_scale(&req).await,
            (Method::PATCH, true, Some(Subresource::Scale)) => self.patch_scale(&req).await,
            (Method::POST, true, Some(Subresource::Binding)) => self.bind(&req).await,
            (Method::PUT, true, Some(Subresource::Finalize)) => self.finalize(&req).await,
            (m, _, sub) => Err(ApiError::method_not_allowed(&format!(
                "{m} {}{}",
                t.res.plural,
                sub.map(|s| format!("/{}", s.name())).unwrap_or_default()
            ))),
        }
    }

    /// Serve stored bytes of `res` at revision `rev` in the resource's served form.
    pub fn served_bytes(res: &ResourceInfo, raw: &[u8], rev: i64) -> Bytes {
        if res.ops.served_as_stored() {
            return codec::with_resource_version(raw, rev);
        }
        match codec::decode("", raw, rev) {
            Ok(v) => codec::encode_value(&res.ops.to_served(v)).into(),
            Err(_) => codec::with_resource_version(raw, rev),
        }
    }

    /// Decode stored bytes into the served form.
    pub fn served_value(res: &ResourceInfo, key: &str, raw: &[u8], rev: i64) -> Result<Value> {
        let v = codec::decode(key, raw, rev).map_err(|e| ApiError::internal(e.to_string()))?;
        Ok(res.ops.to_served(v))
    }
}

/// Parse a JSON (or YAML) request body into a JSON object.
pub fn parse_body(content_type: &str, body: &[u8]) -> Result<Value> {
    let mime = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let value: Value = match mime.as_str() {
        "" | "application/json" | "*/*" => serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?,
        "application/yaml" | "application/x-yaml" | "text/yaml" => serde_yaml::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("the request body is not valid YAML: {e}")))?,
        "application/vnd.kubernetes.protobuf" => ferry_api::protobuf::decode(body).map_err(|e| match e {
            ferry_api::protobuf::ProtoError::UnsupportedKind { .. } => {
                ApiError::unsupported_media_type_msg(e.to_string())
            }
            ferry_api::protobuf::ProtoError::Malformed(_) => ApiError::bad_request(e.to_string()),
        })?,
        other => return Err(ApiError::unsupported_media_type(other)),
    };
    if !value.is_object() {
        return Err(ApiError::bad_request("the request body must be a JSON object"));
    }
    Ok(value)
}
