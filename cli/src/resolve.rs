//! Which API resource a name on the command line means (`po`, `pods`, `pod`, `Pod`, `deployments.apps`),
//! from the server's discovery documents — the same ones kubectl reads.

use anyhow::{bail, Context, Result};
use kube::core::{ApiResource, DynamicObject};
use kube::Api;
use serde_json::Value;

/// One served resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// API group (`""` for core).
    pub group: String,
    /// Version.
    pub version: String,
    /// Kind.
    pub kind: String,
    /// Plural (URL) name.
    pub plural: String,
    /// Singular name.
    pub singular: String,
    /// Short names.
    pub short_names: Vec<String>,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
}

impl Resource {
    /// `group/version`, or `version` for core.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// How kubectl names objects of this resource: `deployment.apps`, `pod`.
    pub fn display(&self) -> String {
        let kind = self.kind.to_lowercase();
        if self.group.is_empty() {
            kind
        } else {
            format!("{kind}.{}", self.group)
        }
    }

    /// kube-rs's description of the resource.
    pub fn api_resource(&self) -> ApiResource {
        ApiResource {
            group: self.group.clone(),
            version: self.version.clone(),
            api_version: self.api_version(),
            kind: self.kind.clone(),
            plural: self.plural.clone(),
        }
    }

    /// A dynamic API for this resource: in `namespace` when namespaced, else cluster-wide.
    pub fn api(&self, client: &kube::Client, namespace: Option<&str>) -> Api<DynamicObject> {
        let ar = self.api_resource();
        match (self.namespaced, namespace) {
            (true, Some(ns)) => Api::namespaced_with(client.clone(), ns, &ar),
            _ => Api::all_with(client.clone(), &ar),
        }
    }
}

async fn get_json(client: &kube::Client, path: &str) -> Result<Value> {
    let req = http::Request::get(path).body(Vec::new())?;
    let text = client.request_text(req).await.with_context(|| format!("reading {path}"))?;
    serde_json::from_str(&text).with_context(|| format!("{path} is not JSON"))
}

/// Every resource the server serves (preferred versions; no subresources).
pub async fn discover(client: &kube::Client) -> Result<Vec<Resource>> {
    let mut lists = vec![("".to_string(), get_json(client, "/api/v1").await?)];
    let groups = get_json(client, "/apis").await?;
    for g in groups["groups"].as_array().into_iter().flatten() {
        let name = g["name"].as_str().unwrap_or_default().to_string();
        let Some(gv) = g.pointer("/preferredVersion/groupVersion").and_then(Value::as_str) else { continue };
        lists.push((name, get_json(client, &format!("/apis/{gv}")).await?));
    }
    let mut out = Vec::new();
    for (group, list) in lists {
        let gv = list["groupVersion"].as_str().unwrap_or_default();
        let version = gv.rsplit('/').next().unwrap_or(gv).to_string();
        for r in list["resources"].as_array().into_iter().flatten() {
            let plural = r["name"].as_str().unwrap_or_default();
            if plural.contains('/') {
                continue;
            }
            out.push(Resource {
                group: group.clone(),
                version: version.clone(),
                kind: r["kind"].as_str().unwrap_or_default().to_string(),
                plural: plural.to_string(),
                singular: r["singularName"].as_str().unwrap_or_default().to_string(),
                short_names: r["shortNames"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect(),
                namespaced: r["namespaced"].as_bool().unwrap_or(false),
            });
        }
    }
    Ok(out)
}

/// The resource a command-line type names; `name.group` narrows to a group.
pub fn by_name<'a>(all: &'a [Resource], name: &str) -> Result<&'a Resource> {
    let (name, group) = match name.split_once('.') {
        Some((n, g)) => (n, Some(g)),
        None => (name, None),
    };
    let lower = name.to_lowercase();
    let matches = |r: &&Resource| {
        group.is_none_or(|g| r.group == g || r.group.starts_with(&format!("{g}.")))
            && (r.plural == lower
                || r.singular == lower
                || r.kind.to_lowercase() == lower
                || r.short_names.contains(&lower))
    };
    // Core and apps first, as kubectl prefers them for ambiguous names (events).
    let mut found: Vec<&Resource> = all.iter().filter(matches).collect();
    found.sort_by_key(|r| (!r.group.is_empty(), r.group != "apps"));
    match found.first() {
        Some(r) => Ok(r),
        None => bail!("the server doesn't have a resource type \"{name}\""),
    }
}

/// The resource of an object's `apiVersion` and `kind`.
pub fn by_kind<'a>(all: &'a [Resource], api_version: &str, kind: &str) -> Result<&'a Resource> {
    all.iter()
        .find(|r| r.api_version() == api_version && r.kind == kind)
        .or_else(|| {
            let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
            all.iter().find(|r| r.group == group && r.kind == kind)
        })
        .with_context(|| format!("no matches for kind \"{kind}\" in version \"{api_version}\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(group: &str, kind: &str, plural: &str, short: &[&str]) -> Resource {
        Resource {
            group: group.into(),
            version: "v1".into(),
            kind: kind.into(),
            plural: plural.into(),
            singular: kind.to_lowercase(),
            short_names: short.iter().map(|s| s.to_string()).collect(),
            namespaced: true,
        }
    }

    #[test]
    fn names_resolve_like_kubectl() -> Result<()> {
        let all = vec![
            r("", "Pod", "pods", &["po"]),
            r("apps", "Deployment", "deployments", &["deploy"]),
            r("events.k8s.io", "Event", "events", &[]),
            r("", "Event", "events", &["ev"]),
        ];
        for n in ["po", "pods", "pod", "Pod"] {
            assert_eq!(by_name(&all, n)?.plural, "pods");
        }
        assert_eq!(by_name(&all, "deploy")?.group, "apps");
        assert_eq!(by_name(&all, "deployments.apps")?.display(), "deployment.apps");
        assert_eq!(by_name(&all, "events")?.group, "", "core wins");
        assert_eq!(by_name(&all, "events.events.k8s.io")?.group, "events.k8s.io");
        assert_eq!(by_name(&all, "events.events")?.group, "events.k8s.io");
        assert_eq!(
            by_name(&all, "widgets").map_err(|e| e.to_string()).err().as_deref(),
            Some("the server doesn't have a resource type \"widgets\"")
        );
        assert_eq!(by_kind(&all, "apps/v1", "Deployment")?.plural, "deployments");
        assert!(by_kind(&all, "example.com/v1", "Widget").is_err());
        Ok(())
    }
}
