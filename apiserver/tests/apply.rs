//! Server-side apply and managed fields, through kube-rs and raw HTTP, against etcd.

use anyhow::Result;
use ferry_testkit::Cluster;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{json, Value};

const APPLY: Option<&str> = Some("application/apply-patch+yaml");

fn deployment(image: &str, replicas: i64, ports: Value) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web", "tier": "front"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": image, "ports": ports}]}
            }
        }
    })
}

fn managers(obj: &Value) -> Vec<String> {
    obj["metadata"]["managedFields"]
        .as_array()
        .map(|l| {
            l.iter()
                .map(|e| {
                    format!(
                        "{}/{}{}",
                        e["manager"].as_str().unwrap_or_default(),
                        e["operation"].as_str().unwrap_or_default(),
                        e["subresource"].as_str().map(|s| format!("/{s}")).unwrap_or_default()
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn apply_creates_updates_prunes_and_detects_conflicts() -> Result<()> {
    let c = Cluster::start().await?;
    let api: Api<Deployment> = Api::namespaced(c.client().await?, "default");
    let pp = PatchParams::apply("ci");

    // Apply creates the object.
    let d = api
        .patch(
            "web",
            &pp,
            &Patch::Apply(deployment("nginx:1.25", 2, json!([{"containerPort": 80}, {"containerPort": 443}]))),
        )
        .await?;
    let v = serde_json::to_value(&d)?;
    assert_eq!(managers(&v), ["ci/Apply"]);
    assert_eq!(v["spec"]["strategy"]["type"], "RollingUpdate", "defaults applied after the merge");
    assert_eq!(v["metadata"]["generation"], 1);

    // Re-applying the same configuration writes nothing.
    let again = api
        .patch(
            "web",
            &pp,
            &Patch::Apply(deployment("nginx:1.25", 2, json!([{"containerPort": 80}, {"containerPort": 443}]))),
        )
        .await?;
    assert_eq!(again.metadata.resource_version, d.metadata.resource_version);

    // Dropping a port and a label removes them; the image changes.
    let mut cfg = deployment("nginx:1.26", 2, json!([{"containerPort": 80}]));
    cfg["metadata"]["labels"] = json!({"app": "web"});
    let d = serde_json::to_value(api.patch("web", &pp, &Patch::Apply(&cfg)).await?)?;
    assert_eq!(d["metadata"]["labels"], json!({"app": "web"}));
    let container = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "nginx:1.26");
    assert_eq!(container["ports"], json!([{"containerPort": 80, "protocol": "TCP"}]));
    assert_eq!(d["metadata"]["generation"], 2);

    // Someone else scales through the scale subresource: they own spec.replicas now.
    let (code, _) = c
        .raw_json(
            "PATCH",
            "/apis/apps/v1/namespaces/default/deployments/web/scale?fieldManager=hpa",
            Some("application/merge-patch+json"),
            serde_json::to_vec(&json!({"spec": {"replicas": 4}}))?,
        )
        .await?;
    assert_eq!(code, 200);
    let (_, d) = c.raw_json("GET", "/apis/apps/v1/namespaces/default/deployments/web", None, Vec::new()).await?;
    assert_eq!(managers(&d), ["ci/Apply", "hpa/Update/scale"]);

    // Applying replicas: 2 again is a conflict, with Kubernetes' message and causes.
    let (code, status) = c
        .raw_json(
            "PATCH",
            "/apis/apps/v1/namespaces/default/deployments/web?fieldManager=ci",
            APPLY,
            serde_json::to_vec(&cfg)?,
        )
        .await?;
    assert_eq!(code, 409, "{status}");
    assert_eq!(status["reason"], "Conflict");
    assert_eq!(status["message"], "Apply failed with 1 conflict: conflict with \"hpa\" using apps/v1: .spec.replicas");
    assert_eq!(
        status["details"]["causes"],
        json!([{"reason": "FieldManagerConflict", "message": "conflict with \"hpa\" using apps/v1", "field": ".spec.replicas"}])
    );
    let (_, d) = c.raw_json("GET", "/apis/apps/v1/namespaces/default/deployments/web", None, Vec::new()).await?;
    assert_eq!(d["spec"]["replicas"], 4, "a conflict changes nothing");

    // Leaving replicas out of the configuration is how an applier yields it: no conflict.
    let mut yielded = cfg.clone();
    yielded["spec"].as_object_mut().expect("spec").remove("replicas");
    let d = serde_json::to_value(api.patch("web", &pp, &Patch::Apply(&yielded)).await?)?;
    assert_eq!(d["spec"]["replicas"], 4, "the other manager's value stays");

    // Forcing takes the field over.
    let forced = PatchParams::apply("ci").force();
    let d = serde_json::to_value(api.patch("web", &forced, &Patch::Apply(&cfg)).await?)?;
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(managers(&d), ["ci/Apply"]);
    Ok(())
}

#[tokio::test]
async fn apply_on_status_and_bad_requests() -> Result<()> {
    let c = Cluster::start().await?;
    let client = c.client().await?;
    let api: Api<Deployment> = Api::namespaced(client.clone(), "default");
    api.patch("web", &PatchParams::apply("ci"), &Patch::Apply(deployment("nginx", 1, json!([])))).await?;

    // Status through apply: only status changes; the controller's entry names the subresource.
    let status = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 7},
        "status": {"replicas": 1, "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"}]}});
    let d = api.patch_status("web", &PatchParams::apply("ctrl").force(), &Patch::Apply(&status)).await?;
    let v = serde_json::to_value(&d)?;
    assert_eq!(v["spec"]["replicas"], 1);
    assert_eq!(v["status"]["replicas"], 1);
    assert_eq!(managers(&v), ["ci/Apply", "ctrl/Apply/status"]);
    // The main endpoint ignores status in an apply.
    let mut cfg = deployment("nginx", 1, json!([]));
    cfg["status"] = json!({"replicas": 9});
    let d = serde_json::to_value(api.patch("web", &PatchParams::apply("ci"), &Patch::Apply(&cfg)).await?)?;
    assert_eq!(d["status"]["replicas"], 1);

    // YAML bodies work (kubectl sends JSON, other tools YAML).
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: y\ndata:\n  a: \"1\"\n";
    let (code, v) = c
        .raw_json("PATCH", "/api/v1/namespaces/default/configmaps/y?fieldManager=tool", APPLY, yaml.as_bytes().to_vec())
        .await?;
    assert_eq!(code, 201, "{v}");
    assert_eq!(v["data"]["a"], "1");

    for (path, body, code, needle) in [
        (
            "/api/v1/namespaces/default/configmaps/y",
            yaml.as_bytes().to_vec(),
            422,
            "fieldManager: Required value: is required for apply patch",
        ),
        ("/api/v1/namespaces/default/configmaps/y?fieldManager=t", b"a: [".to_vec(), 400, "error decoding YAML"),
        (
            "/api/v1/namespaces/default/configmaps/y?fieldManager=t",
            b"- 1".to_vec(),
            400,
            "must be a YAML or JSON object",
        ),
        (
            "/api/v1/namespaces/default/configmaps/y?fieldManager=t",
            serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "other"}}))?,
            400,
            "does not match the name on the URL",
        ),
        (
            "/api/v1/namespaces/default/configmaps/y?fieldManager=t",
            serde_json::to_vec(
                &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "y", "managedFields": [{"manager": "x"}]}}),
            )?,
            422,
            "metadata.managedFields must be nil",
        ),
        (
            "/api/v1/namespaces/default/pods/p?fieldManager=t",
            serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                "spec": {"containers": [{"image": "x"}]}}))?,
            422,
            "omits key field \"name\"",
        ),
    ] {
        let (got, v) = c.raw_json("PATCH", path, APPLY, body).await?;
        assert_eq!(got, code, "{path}: {v}");
        assert_eq!(v["kind"], "Status");
        assert!(v["message"].as_str().is_some_and(|m| m.contains(needle)), "{v}");
    }
    let (code, v) = c
        .raw_json(
            "PATCH",
            "/api/v1/namespaces/default/configmaps/y?force=true",
            Some("application/merge-patch+json"),
            b"{}".to_vec(),
        )
        .await?;
    assert_eq!(code, 422, "{v}");
    assert!(v["message"].as_str().is_some_and(|m| m.contains("force: Forbidden")), "{v}");
    let (code, _) = c.raw_json("GET", "/api/v1/namespaces/default/pods/p", None, Vec::new()).await?;
    assert_eq!(code, 404, "nothing from a failed apply is stored");
    Ok(())
}

#[tokio::test]
async fn every_write_records_its_manager() -> Result<()> {
    let c = Cluster::start().await?;
    let api: Api<ConfigMap> = Api::namespaced(c.client().await?, "default");
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "m"}, "data": {"a": "1"}}))?;
    api.create(&PostParams { field_manager: Some("creator".into()), ..Default::default() }, &cm).await?;
    let patched = api
        .patch(
            "m",
            &PatchParams { field_manager: Some("patcher".into()), ..Default::default() },
            &Patch::Merge(json!({"data": {"b": "2"}})),
        )
        .await?;
    let v = serde_json::to_value(&patched)?;
    assert_eq!(managers(&v), ["creator/Update", "patcher/Update"]);
    let mf = &v["metadata"]["managedFields"];
    assert_eq!(mf[0]["fieldsV1"], json!({"f:data": {".": {}, "f:a": {}}}));
    assert_eq!(mf[1]["fieldsV1"], json!({"f:data": {"f:b": {}}}));
    assert_eq!(mf[1]["apiVersion"], "v1");
    assert!(mf[1]["time"].as_str().is_some_and(|t| t.ends_with('Z')));

    // Without fieldManager, the User-Agent's prefix names the manager.
    let (code, v) = c
        .raw_json(
            "PATCH",
            "/api/v1/namespaces/default/configmaps/m",
            Some("application/merge-patch+json"),
            br#"{"data":{"a":"3"}}"#.to_vec(),
        )
        .await?;
    assert_eq!(code, 200, "{v}");
    let names = managers(&v);
    assert_eq!(names.len(), 3, "{names:?}");
    let ua = names.iter().find(|n| !n.starts_with("creator") && !n.starts_with("patcher")).expect("ua manager");
    assert!(!ua.contains(' ') && ua.ends_with("/Update"), "{ua}");
    assert_eq!(
        v["metadata"]["managedFields"][0]["fieldsV1"],
        json!({"f:data": {}}),
        "creator lost data.a but still owns the map"
    );

    // A single empty entry clears managed fields.
    let (code, v) = c
        .raw_json(
            "PATCH",
            "/api/v1/namespaces/default/configmaps/m",
            Some("application/merge-patch+json"),
            br#"{"metadata":{"managedFields":[{}]}}"#.to_vec(),
        )
        .await?;
    assert_eq!(code, 200, "{v}");
    assert!(v["metadata"].get("managedFields").is_none(), "{v}");
    Ok(())
}
