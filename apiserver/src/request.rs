//! Parsing a request into what it asks for: which resource, namespace, name, subresource,
//! and the query parameters Kubernetes defines. No I/O; the REST handlers act on the result.

use crate::error::{ApiError, Result};
use ferry_api::{ResourceInfo, ResourceTable, Subresource};

/// Where a request goes.
#[derive(Debug)]
pub enum Route {
    /// `/api`
    LegacyRoot,
    /// `/apis`
    GroupsRoot,
    /// `/apis/<group>`
    Group(String),
    /// `/api/v1` or `/apis/<group>/<version>`
    GroupVersion(String, String),
    /// `/version`
    Version,
    /// `/healthz`, `/livez`, `/readyz` (with the probe name).
    Health(&'static str),
    /// `/metrics`
    Metrics,
    /// `/openapi/v3` (`None`) or a group/version document under it (`Some("apis/apps/v1")`).
    OpenApi(Option<String>),
    /// A resource endpoint.
    Resource(Target),
}

/// A resource endpoint.
#[derive(Debug, Clone)]
pub struct Target {
    /// The resource.
    pub res: &'static ResourceInfo,
    /// Namespace from the URL, if any.
    pub namespace: Option<String>,
    /// Object name from the URL, if any.
    pub name: Option<String>,
    /// Subresource, if any.
    pub sub: Option<Subresource>,
}

fn segments(path: &str) -> Vec<&str> {
    path.split('/').filter(|s| !s.is_empty()).collect()
}

/// Parse a URL path.
pub fn route(table: &ResourceTable, path: &str) -> Result<Route> {
    let segs = segments(path);
    let no_route = || ApiError::no_route(path);
    match segs.as_slice() {
        ["api"] => Ok(Route::LegacyRoot),
        ["apis"] => Ok(Route::GroupsRoot),
        ["version"] => Ok(Route::Version),
        ["healthz", ..] => Ok(Route::Health("healthz")),
        ["livez", ..] => Ok(Route::Health("livez")),
        ["readyz", ..] => Ok(Route::Health("readyz")),
        ["metrics"] => Ok(Route::Metrics),
        ["openapi", "v3"] => Ok(Route::OpenApi(None)),
        ["openapi", "v3", rest @ ..] => Ok(Route::OpenApi(Some(rest.join("/")))),
        ["apis", group] => Ok(Route::Group(group.to_string())),
        ["api", version] => Ok(Route::GroupVersion(String::new(), version.to_string())),
        ["apis", group, version] => Ok(Route::GroupVersion(group.to_string(), version.to_string())),
        ["api", version, rest @ ..] => resource(table, "", version, rest).ok_or_else(no_route).map(Route::Resource),
        ["apis", group, version, rest @ ..] => {
            resource(table, group, version, rest).ok_or_else(no_route).map(Route::Resource)
        }
        _ => Err(no_route()),
    }
}

fn resource(table: &ResourceTable, group: &str, version: &str, rest: &[&str]) -> Option<Target> {
    let target = |plural: &str, ns: Option<&str>, name: Option<&str>, sub: Option<&str>| -> Option<Target> {
        let res = table.lookup(group, version, plural)?;
        let sub = match sub {
            Some(s) => Some(Subresource::from_name(s).filter(|s| res.has(*s))?),
            None => None,
        };
        if ns.is_some() && !res.namespaced {
            return None;
        }
        Some(Target { res, namespace: ns.map(str::to_string), name: name.map(str::to_string), sub })
    };
    match rest {
        // Namespace subresources look like namespaced resources: /api/v1/namespaces/x/status.
        ["namespaces", name, sub @ ("status" | "finalize")] if group.is_empty() => {
            target("namespaces", None, Some(name), Some(sub))
        }
        ["namespaces", ns, plural] => target(plural, Some(ns), None, None),
        ["namespaces", ns, plural, name] => target(plural, Some(ns), Some(name), None),
        ["namespaces", ns, plural, name, sub] => target(plural, Some(ns), Some(name), Some(sub)),
        [plural] => target(plural, None, None, None),
        [plural, name] => target(plural, None, Some(name), None),
        [plural, name, sub] => target(plural, None, Some(name), Some(sub)),
        _ => None,
    }
}

/// Parse a Go-style boolean (`strconv.ParseBool`): what the Python client's `True` needs.
pub fn parse_bool(name: &str, v: &str) -> Result<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(ApiError::bad_request(format!("invalid boolean value {v:?} for query parameter {name}"))),
    }
}

/// How unknown fields in a body are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    /// Drop them silently.
    Ignore,
    /// Drop them and warn (the default).
    #[default]
    Warn,
    /// Reject the request.
    Strict,
}

/// The query parameters Kubernetes defines, parsed and checked.
#[derive(Debug, Default, Clone)]
pub struct Query {
    /// `watch`
    pub watch: bool,
    /// `labelSelector`
    pub label_selector: Option<String>,
    /// `fieldSelector`
    pub field_selector: Option<String>,
    /// `resourceVersion`
    pub resource_version: Option<String>,
    /// `resourceVersionMatch`
    pub resource_version_match: Option<String>,
    /// `limit`
    pub limit: Option<i64>,
    /// `continue`
    pub continue_token: Option<String>,
    /// `timeoutSeconds`
    pub timeout_seconds: Option<u64>,
    /// `allowWatchBookmarks`
    pub allow_bookmarks: bool,
    /// `sendInitialEvents`
    pub send_initial_events: Option<bool>,
    /// `dryRun=All`
    pub dry_run: bool,
    /// `fieldManager`
    pub field_manager: Option<String>,
    /// `fieldValidation`
    pub field_validation: FieldValidation,
    /// `force`
    pub force: bool,
    /// `gracePeriodSeconds`
    pub grace_period_seconds: Option<i64>,
    /// `propagationPolicy`
    pub propagation_policy: Option<String>,
    /// `orphanDependents`
    pub orphan_dependents: Option<bool>,
    /// `pretty`
    pub pretty: bool,
    /// `includeObject` (Table output)
    pub include_object: Option<String>,
}

impl Query {
    /// Parse a raw query string.
    pub fn parse(raw: Option<&str>) -> Result<Self> {
        let mut q = Query::default();
        let Some(raw) = raw else { return Ok(q) };
        for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
            let v = v.into_owned();
            match k.as_ref() {
                "watch" => q.watch = parse_bool("watch", &v)?,
                "labelSelector" => q.label_selector = Some(v).filter(|s| !s.is_empty()),
                "fieldSelector" => q.field_selector = Some(v).filter(|s| !s.is_empty()),
                "resourceVersion" => q.resource_version = Some(v).filter(|s| !s.is_empty()),
                "resourceVersionMatch" => q.resource_version_match = Some(v).filter(|s| !s.is_empty()),
                "limit" => {
                    let n: i64 = v.parse().map_err(|_| ApiError::bad_request(format!("invalid limit {v:?}")))?;
                    q.limit = Some(n).filter(|n| *n > 0);
                }
                "continue" => q.continue_token = Some(v).filter(|s| !s.is_empty()),
                "timeoutSeconds" => {
                    q.timeout_seconds =
                        Some(v.parse().map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds {v:?}")))?)
                }
                "allowWatchBookmarks" => q.allow_bookmarks = parse_bool("allowWatchBookmarks", &v)?,
                "sendInitialEvents" => q.send_initial_events = Some(parse_bool("sendInitialEvents", &v)?),
                "dryRun" => match v.as_str() {
                    "All" => q.dry_run = true,
                    "" => {}
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "unsupported dryRun value {other:?}: only \"All\" is supported"
                        )))
                    }
                },
                "fieldManager" => q.field_manager = Some(v).filter(|s| !s.is_empty()),
                "fieldValidation" => {
                    q.field_validation = match v.as_str() {
                        "Ignore" => FieldValidation::Ignore,
                        "Warn" | "" => FieldValidation::Warn,
                        "Strict" => FieldValidation::Strict,
                        other => {
                            return Err(ApiError::bad_request(format!(
                                "fieldValidation must be one of \"Ignore\", \"Warn\", or \"Strict\", got {other:?}"
                            )))
                        }
                    }
                }
                "force" => q.force = parse_bool("force", &v)?,
                "gracePeriodSeconds" => {
                    q.grace_period_seconds = Some(
                        v.parse().map_err(|_| ApiError::bad_request(format!("invalid gracePeriodSeconds {v:?}")))?,
                    )
                }
                "propagationPolicy" => q.propagation_policy = Some(v).filter(|s| !s.is_empty()),
                "orphanDependents" => q.orphan_dependents = Some(parse_bool("orphanDependents", &v)?),
                "pretty" => q.pretty = parse_bool("pretty", &v).unwrap_or(false),
                "includeObject" => q.include_object = Some(v),
                // Unknown parameters are ignored, as Kubernetes does.
                _ => {}
            }
        }
        Ok(q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(path: &str) -> Target {
        match route(&ResourceTable::builtin(), path) {
            Ok(Route::Resource(t)) => t,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn routes_openapi() {
        let table = ResourceTable::builtin();
        assert!(matches!(route(&table, "/openapi/v3"), Ok(Route::OpenApi(None))));
        assert!(
            matches!(route(&table, "/openapi/v3/apis/apps/v1"), Ok(Route::OpenApi(Some(p))) if p == "apis/apps/v1")
        );
        assert!(route(&table, "/openapi/v2").is_err());
    }

    #[test]
    fn routes_resources() {
        let t = target("/api/v1/namespaces/default/pods/web/status");
        assert_eq!(
            (t.res.plural, t.namespace.as_deref(), t.name.as_deref(), t.sub),
            ("pods", Some("default"), Some("web"), Some(Subresource::Status))
        );
        let t = target("/apis/apps/v1/deployments");
        assert_eq!((t.res.plural, t.namespace, t.name), ("deployments", None, None));
        let t = target("/api/v1/namespaces/kube-system");
        assert_eq!((t.res.plural, t.name.as_deref()), ("namespaces", Some("kube-system")));
        let t = target("/api/v1/namespaces/x/finalize");
        assert_eq!((t.res.plural, t.name.as_deref(), t.sub), ("namespaces", Some("x"), Some(Subresource::Finalize)));
        let t = target("/api/v1/nodes/n1/status");
        assert_eq!((t.res.plural, t.name.as_deref(), t.sub), ("nodes", Some("n1"), Some(Subresource::Status)));
        let t = target("/apis/apps/v1/namespaces/d/deployments/web/scale");
        assert_eq!(t.sub, Some(Subresource::Scale));
    }

    #[test]
    fn rejects_unknown_paths() {
        let t = ResourceTable::builtin();
        for path in [
            "/api/v1/widgets",
            "/apis/apps/v2/deployments",
            "/api/v1/namespaces/x/nodes/n",
            "/api/v1/configmaps/x/scale",
            "/nope",
        ] {
            let err = route(&t, path).expect_err(path);
            assert_eq!(err.code, 404, "{path}");
        }
    }

    #[test]
    fn parses_query() {
        let q = Query::parse(Some(
            "watch=True&labelSelector=app%3Dweb&limit=500&allowWatchBookmarks=1&fieldValidation=Strict",
        ))
        .expect("parse");
        assert!(q.watch && q.allow_bookmarks);
        assert_eq!(q.label_selector.as_deref(), Some("app=web"));
        assert_eq!(q.limit, Some(500));
        assert_eq!(q.field_validation, FieldValidation::Strict);
        assert_eq!(Query::parse(Some("watch=maybe")).expect_err("bad bool").code, 400);
        assert_eq!(Query::parse(Some("limit=x")).expect_err("bad limit").code, 400);
    }
}
