//! Discovery documents: `/api`, `/apis` (legacy and aggregated v2), `/api/v1`,
//! `/apis/<group>[/<version>]` and `/version`, all generated from the resource table.

use ferry_api::resources::VERBS;
use ferry_api::{ResourceInfo, ResourceTable, Subresource};
use serde_json::{json, Value};

/// Content type of an aggregated discovery response.
pub const AGGREGATED_V2: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
/// Content type of the v2beta1 form.
pub const AGGREGATED_V2BETA1: &str = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList";

/// Which aggregated format the client accepts, if any, in its order of preference.
pub fn aggregated_format(accept: &str) -> Option<&'static str> {
    for part in accept.split(',') {
        let p: String = part.chars().filter(|c| !c.is_whitespace()).collect();
        if p.contains("as=APIGroupDiscoveryList") && p.contains("g=apidiscovery.k8s.io") {
            if p.contains("v=v2beta1") {
                return Some(AGGREGATED_V2BETA1);
            }
            if p.contains("v=v2") {
                return Some(AGGREGATED_V2);
            }
        }
    }
    None
}

fn subresource_verbs(sub: Subresource) -> Vec<&'static str> {
    match sub {
        Subresource::Status | Subresource::Scale => vec!["get", "patch", "update"],
        Subresource::Binding => vec!["create"],
        Subresource::Finalize => vec!["update"],
        Subresource::Log => vec!["get"],
        Subresource::Exec => vec!["create", "get"],
    }
}

fn subresource_kind(res: &ResourceInfo, sub: Subresource) -> (String, String, String) {
    match sub {
        Subresource::Scale => ("autoscaling".into(), "v1".into(), "Scale".into()),
        Subresource::Binding => (String::new(), "v1".into(), "Binding".into()),
        Subresource::Exec => (String::new(), "v1".into(), "PodExecOptions".into()),
        _ => (res.group.into(), res.version.into(), res.kind.into()),
    }
}

/// `/api`: APIVersions.
pub fn legacy_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn group_entry(group: &str, versions: &[&str]) -> Value {
    let versions: Vec<Value> =
        versions.iter().map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v})).collect();
    json!({"name": group, "versions": versions, "preferredVersion": versions.first().cloned().unwrap_or(Value::Null)})
}

/// `/apis`: APIGroupList.
pub fn group_list(table: &ResourceTable) -> Value {
    let groups: Vec<Value> = table.groups().iter().map(|(g, vs)| group_entry(g, vs)).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/<group>`: APIGroup.
pub fn group(table: &ResourceTable, name: &str) -> Option<Value> {
    let (g, vs) = table.groups().into_iter().find(|(g, _)| *g == name)?;
    let mut v = group_entry(g, &vs);
    v["kind"] = "APIGroup".into();
    v["apiVersion"] = "v1".into();
    Some(v)
}

/// `/api/v1` or `/apis/<group>/<version>`: APIResourceList.
pub fn resource_list(table: &ResourceTable, group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for r in table.in_group_version(group, version) {
        let mut entry = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": VERBS,
        });
        if !r.short_names.is_empty() {
            entry["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            entry["categories"] = json!(r.categories);
        }
        resources.push(entry);
        for sub in r.subresources {
            let (g, v, k) = subresource_kind(r, *sub);
            let mut e = json!({
                "name": format!("{}/{}", r.plural, sub.name()),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": k,
                "verbs": subresource_verbs(*sub),
            });
            if *sub == Subresource::Scale {
                e["group"] = g.into();
                e["version"] = v.into();
            }
            resources.push(e);
        }
    }
    if resources.is_empty() {
        return None;
    }
    let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    Some(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}))
}

fn aggregated_resource(r: &ResourceInfo) -> Value {
    let subresources: Vec<Value> = r
        .subresources
        .iter()
        .map(|s| {
            let (g, v, k) = subresource_kind(r, *s);
            json!({"subresource": s.name(), "responseKind": {"group": g, "version": v, "kind": k}, "verbs": subresource_verbs(*s)})
        })
        .collect();
    let mut e = json!({
        "resource": r.plural,
        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": r.singular,
        "verbs": VERBS,
    });
    if !r.short_names.is_empty() {
        e["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        e["categories"] = json!(r.categories);
    }
    if !subresources.is_empty() {
        e["subresources"] = Value::Array(subresources);
    }
    e
}

fn aggregated_group(table: &ResourceTable, group: &str, versions: &[&str]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| {
            let resources: Vec<Value> = table.in_group_version(group, v).map(aggregated_resource).collect();
            json!({"version": v, "resources": resources, "freshness": "Current"})
        })
        .collect();
    json!({"metadata": {"name": group, "creationTimestamp": null}, "versions": versions})
}

/// Aggregated discovery for `/api` (core only) or `/apis` (all groups).
pub fn aggregated(table: &ResourceTable, legacy: bool, content_type: &str) -> Value {
    let api_version =
        if content_type == AGGREGATED_V2BETA1 { "apidiscovery.k8s.io/v2beta1" } else { "apidiscovery.k8s.io/v2" };
    let items: Vec<Value> = if legacy {
        vec![aggregated_group(table, "", &["v1"])]
    } else {
        table.groups().iter().map(|(g, vs)| aggregated_group(table, g, vs)).collect()
    };
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": api_version, "metadata": {}, "items": items})
}

/// `/version`.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "37",
        "gitVersion": format!("v1.37.0-ferry.{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": option_env!("FERRY_GIT_COMMIT").unwrap_or("unknown"),
        "gitTreeState": "clean",
        "buildDate": option_env!("FERRY_BUILD_DATE").unwrap_or("1970-01-01T00:00:00Z"),
        "goVersion": "n/a (rust)",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, if cfg!(target_arch = "x86_64") { "amd64" } else { std::env::consts::ARCH }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_subresource_names_autoscaling() {
        let t = ResourceTable::builtin();
        let list = resource_list(&t, "apps", "v1").expect("apps/v1");
        let scale = list["resources"]
            .as_array()
            .expect("array")
            .iter()
            .find(|r| r["name"] == "deployments/scale")
            .expect("scale");
        assert_eq!(scale["group"], "autoscaling");
        assert_eq!(scale["kind"], "Scale");
        let core = resource_list(&t, "", "v1").expect("v1");
        let pods = core["resources"].as_array().expect("array").iter().find(|r| r["name"] == "pods").expect("pods");
        assert_eq!(pods["shortNames"], json!(["po"]));
        assert_eq!(pods["categories"], json!(["all"]));
    }

    #[test]
    fn accept_negotiation() {
        let kubectl = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(aggregated_format(kubectl), Some(AGGREGATED_V2));
        assert_eq!(aggregated_format("application/json"), None);
    }

    #[test]
    fn groups_listed_once() {
        let t = ResourceTable::builtin();
        let g = group_list(&t);
        let names: Vec<&str> =
            g["groups"].as_array().expect("array").iter().filter_map(|g| g["name"].as_str()).collect();
        assert_eq!(
            names,
            vec!["apps", "coordination.k8s.io", "discovery.k8s.io", "events.k8s.io", "scheduling.k8s.io"]
        );
        assert!(version().as_object().expect("object").len() == 9);
    }
}
