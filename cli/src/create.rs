//! `ferry create`: POST objects from manifests, or build common ones from flags (namespace, configmap,
//! secret generic, deployment), as kubectl's generators do.

use crate::manifest::Doc;
use crate::resolve;
use anyhow::{bail, Context, Result};
use kube::api::PostParams;
use kube::core::DynamicObject;
use serde_json::{json, Map, Value};

/// Create every document; one `kind/name created` line each; fail after trying all if any failed.
pub async fn create(client: &kube::Client, docs: &[Doc], namespace: &str) -> Result<()> {
    let resources = resolve::discover(client).await?;
    let mut failed = 0;
    for doc in docs {
        let result = async {
            let r = resolve::by_kind(
                &resources,
                doc.object["apiVersion"].as_str().unwrap_or_default(),
                doc.object["kind"].as_str().unwrap_or_default(),
            )?;
            let ns = doc.object.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or(namespace);
            let obj: DynamicObject = serde_json::from_value(doc.object.clone())?;
            let made = r.api(client, Some(ns)).create(&PostParams::default(), &obj).await?;
            anyhow::Ok(format!("{}/{} created", r.display(), made.metadata.name.unwrap_or_default()))
        }
        .await;
        match result {
            Ok(line) => println!("{line}"),
            Err(e) => {
                failed += 1;
                eprintln!("error: {} document {}: {}", doc.source, doc.index, crate::error::describe(&e));
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} objects could not be created", docs.len());
    }
    Ok(())
}

/// `key=value` pairs from `--from-literal` flags.
fn literals(pairs: &[String]) -> Result<Map<String, Value>> {
    let mut m = Map::new();
    for p in pairs {
        let (k, v) = p.split_once('=').with_context(|| format!("invalid literal source {p:?}, expected key=value"))?;
        m.insert(k.to_string(), Value::String(v.to_string()));
    }
    Ok(m)
}

/// The object a `create <generator>` builds.
pub fn generate(
    what: &str,
    name: &str,
    namespace: &str,
    image: Option<&str>,
    replicas: i64,
    literal: &[String],
) -> Result<Value> {
    Ok(match what {
        "namespace" | "ns" => json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
        "configmap" | "cm" => json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace}, "data": literals(literal)?}),
        "secret" => json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "namespace": namespace}, "stringData": literals(literal)?}),
        "deployment" | "deploy" => {
            let Some(image) = image else { bail!("required flag(s) \"image\" not set") };
            let container = image.rsplit('/').next().unwrap_or(image).split([':', '@']).next().unwrap_or(name);
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
                "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name}},
                        "spec": {"containers": [{"name": container, "image": image}]}}}})
        }
        other => bail!("unknown generator {other:?}: use namespace, configmap, secret or deployment"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generators() -> Result<()> {
        let d = generate("deployment", "web", "ci", Some("registry.local/team/nginx:1.27"), 2, &[])?;
        assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["name"], "nginx");
        assert_eq!(d["spec"]["replicas"], 2);
        let cm = generate("configmap", "c", "ci", None, 1, &["a=1".into(), "b=x=y".into()])?;
        assert_eq!(cm["data"], json!({"a": "1", "b": "x=y"}));
        assert!(generate("configmap", "c", "ci", None, 1, &["nokey".into()]).is_err());
        assert!(generate("deployment", "web", "ci", None, 1, &[]).is_err());
        assert!(generate("widget", "w", "ci", None, 1, &[]).is_err());
        Ok(())
    }
}
