//! Verbs that change one field of existing objects: `scale`, `set image`, `label`, `annotate`,
//! `cordon` / `uncordon`.

use crate::resolve::{self, Resource};
use anyhow::{bail, Result};
use kube::api::{Patch, PatchParams};
use serde_json::{json, Map, Value};

async fn resolved<'a>(resources: &'a [Resource], kind: &str) -> Result<&'a Resource> {
    resolve::by_name(resources, kind)
}

/// `scale TYPE/NAME --replicas N` through the `scale` subresource.
pub async fn scale(client: &kube::Client, namespace: &str, kind: &str, names: &[String], replicas: i64) -> Result<()> {
    let resources = resolve::discover(client).await?;
    let r = resolved(&resources, kind).await?;
    if replicas < 0 {
        bail!("The --replicas=COUNT flag is required, and COUNT must be greater than or equal to 0");
    }
    for name in names {
        let api = r.api(client, Some(namespace));
        api.patch_scale(name, &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": replicas}}))).await?;
        println!("{}/{name} scaled", r.display());
    }
    Ok(())
}

/// `set image TYPE/NAME CONTAINER=IMAGE…` on a pod template (or a pod).
pub async fn set_image(client: &kube::Client, namespace: &str, kind: &str, name: &str, pairs: &[String]) -> Result<()> {
    let resources = resolve::discover(client).await?;
    let r = resolved(&resources, kind).await?;
    let api = r.api(client, Some(namespace));
    let obj = api.get(name).await?;
    let spec_path = if r.kind == "Pod" { "/spec" } else { "/spec/template/spec" };
    let containers: Vec<String> = obj
        .data
        .pointer(&format!("{spec_path}/containers"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect();
    let mut updates = Vec::new();
    for pair in pairs {
        let Some((container, image)) = pair.split_once('=') else { bail!("{pair:?} is not CONTAINER=IMAGE") };
        let targets: Vec<&String> = if container == "*" {
            containers.iter().collect()
        } else {
            match containers.iter().find(|c| *c == container) {
                Some(c) => vec![c],
                None => bail!("unable to find container named {container:?}"),
            }
        };
        updates.extend(targets.into_iter().map(|c| json!({"name": c, "image": image})));
    }
    let mut patch = json!({});
    let inner = json!({"containers": updates});
    if r.kind == "Pod" {
        patch["spec"] = inner;
    } else {
        patch["spec"] = json!({"template": {"spec": inner}});
    }
    api.patch(name, &PatchParams::default(), &Patch::Strategic(patch)).await?;
    println!("{}/{name} image updated", r.display());
    Ok(())
}

/// `label` / `annotate`: `key=value` sets, `key-` removes; an existing different value needs `overwrite`.
pub async fn meta_map(
    client: &kube::Client,
    namespace: &str,
    kind: &str,
    name: &str,
    changes: &[String],
    overwrite: bool,
    field: &str,
) -> Result<()> {
    let resources = resolve::discover(client).await?;
    let r = resolved(&resources, kind).await?;
    let api = r.api(client, Some(namespace));
    let obj = api.get(name).await?;
    let current = if field == "labels" { obj.metadata.labels.clone() } else { obj.metadata.annotations.clone() }
        .unwrap_or_default();
    let mut set = Map::new();
    for c in changes {
        if let Some(key) = c.strip_suffix('-') {
            set.insert(key.to_string(), Value::Null);
        } else if let Some((k, v)) = c.split_once('=') {
            if let Some(old) = current.get(k) {
                if old != v && !overwrite {
                    bail!("'{k}' already has a value ({old}), and --overwrite is false");
                }
            }
            set.insert(k.to_string(), Value::String(v.to_string()));
        } else {
            bail!("invalid {field} change {c:?}: use key=value or key-");
        }
    }
    let patch = json!({"metadata": {field: set}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(patch)).await?;
    println!("{}/{name} {}", r.display(), if field == "labels" { "labeled" } else { "annotated" });
    Ok(())
}

/// `cordon` / `uncordon` a node.
pub async fn cordon(client: &kube::Client, name: &str, unschedulable: bool) -> Result<()> {
    use k8s_openapi::api::core::v1::Node;
    let api: kube::Api<Node> = kube::Api::all(client.clone());
    let node = api.get(name).await?;
    let word = if unschedulable { "cordoned" } else { "uncordoned" };
    if node.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false) == unschedulable {
        println!("node/{name} already {word}");
        return Ok(());
    }
    api.patch(name, &PatchParams::default(), &Patch::Merge(json!({"spec": {"unschedulable": unschedulable}}))).await?;
    println!("node/{name} {word}");
    Ok(())
}
