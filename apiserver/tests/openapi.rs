//! OpenAPI v3: the documents stock kubectl reads for `--validate=strict` and `explain`.

use std::path::Path;

use anyhow::Result;
use ferry_testkit::Cluster;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_v3_documents_describe_every_kind() -> Result<()> {
    let c = Cluster::start().await?;
    let (code, index) = c.raw_json("GET", "/openapi/v3", None, Vec::new()).await?;
    assert_eq!(code, 200, "{index}");
    let paths = index["paths"].as_object().expect("paths");
    for gv in
        ["api/v1", "apis/apps/v1", "apis/coordination.k8s.io/v1", "apis/events.k8s.io/v1", "apis/scheduling.k8s.io/v1"]
    {
        assert!(paths.contains_key(gv), "{gv} missing from {index}");
    }
    let table = ferry_api::ResourceTable::builtin();
    let mut docs = std::collections::BTreeMap::new();
    for (gv, entry) in paths {
        let url = entry["serverRelativeURL"].as_str().expect("serverRelativeURL");
        assert!(url.starts_with(&format!("/openapi/v3/{gv}?hash=")), "{url}");
        let (code, doc) = c.raw_json("GET", url, None, Vec::new()).await?;
        assert_eq!(code, 200, "{url}: {doc}");
        assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
        docs.insert(gv.clone(), doc);
    }
    for r in table.all() {
        let gv =
            if r.group.is_empty() { format!("api/{}", r.version) } else { format!("apis/{}/{}", r.group, r.version) };
        let doc = &docs[&gv];
        let want = serde_json::json!({"group": r.group, "version": r.version, "kind": r.kind});
        let patches: Vec<&Value> = doc["paths"]
            .as_object()
            .expect("paths")
            .values()
            .filter_map(|p| p.get("patch"))
            .filter(|op| op["x-kubernetes-group-version-kind"] == want)
            .collect();
        assert!(!patches.is_empty(), "no PATCH operation for {want}");
        for op in patches {
            let names: Vec<&str> =
                op["parameters"].as_array().expect("parameters").iter().filter_map(|p| p["name"].as_str()).collect();
            for n in ["fieldValidation", "fieldManager", "force", "dryRun"] {
                assert!(names.contains(&n), "{want}: PATCH lacks {n}");
            }
            for ct in [
                "application/json-patch+json",
                "application/merge-patch+json",
                "application/strategic-merge-patch+json",
                "application/apply-patch+yaml",
            ] {
                assert!(op["requestBody"]["content"][ct].is_object(), "{want}: PATCH lacks {ct}");
            }
        }
        // Every schema reference resolves inside the document.
        let text = doc.to_string();
        for piece in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = piece.split('"').next().unwrap_or_default();
            assert!(doc["components"]["schemas"][name].is_object(), "{gv}: dangling $ref {name}");
        }
        assert!(!text.contains("#/$defs/"), "{gv}: JSON Schema refs left");
    }
    let apps = &docs["apis/apps/v1"];
    let deploy = &apps["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"];
    assert_eq!(
        deploy["x-kubernetes-group-version-kind"][0],
        serde_json::json!({"group":"apps","version":"v1","kind":"Deployment"})
    );
    assert!(apps["components"]["schemas"]["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"].is_object());
    assert!(apps["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["get"].is_object());
    assert!(apps["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments"]["post"].is_object());

    let (code, v) = c.raw_json("GET", "/openapi/v3/apis/nope/v1", None, Vec::new()).await?;
    assert_eq!(code, 404, "{v}");
    assert_eq!(v["kind"], "Status");

    kubectl_end_to_end(&c).await
}

const GOOD: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: default
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  strategy:
    type: RollingUpdate
    rollingUpdate: {maxSurge: 1}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1.27
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: default
data:
  a: b
";

const UNKNOWN_FIELD: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: typo
  namespace: default
spec:
  replicaz: 1
  selector:
    matchLabels: {app: typo}
  template:
    metadata:
      labels: {app: typo}
    spec:
      containers:
      - name: web
        image: nginx:1.27
";

fn kubectl_on_path() -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join("kubectl")).find(|p| p.is_file())
}

async fn kubectl(kubectl: &Path, c: &Cluster, cache: &Path, args: &[&str]) -> Result<(bool, String)> {
    let out = tokio::process::Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(c.kubeconfig())
        .arg("--cache-dir")
        .arg(cache)
        .args(args)
        .output()
        .await?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Ok((out.status.success(), text))
}

async fn kubectl_end_to_end(c: &Cluster) -> Result<()> {
    let Some(bin) = kubectl_on_path() else {
        // CI installs a stock kubectl (scripts/test → ensure_clients); there it must run.
        assert!(std::env::var_os("CI").is_none(), "kubectl must be on PATH in CI");
        println!("kubectl is not on PATH: skipping the kubectl apply/explain checks");
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let cache = dir.path().join("cache");
    let good = dir.path().join("good.yaml");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&good, GOOD)?;
    std::fs::write(&bad, UNKNOWN_FIELD)?;
    let good = good.to_string_lossy().into_owned();
    let bad = bad.to_string_lossy().into_owned();

    // Default --validate=strict: kubectl checks the OpenAPI v3 document, then sends
    // fieldValidation=Strict.
    let (ok, out) = kubectl(&bin, c, &cache, &["apply", "-f", &good, "-v=6"]).await?;
    assert!(ok, "kubectl apply failed: {out}");
    assert!(out.contains("/openapi/v3/apis/apps/v1?hash="), "kubectl did not read the v3 document: {out}");
    assert!(!out.contains("/openapi/v2"), "kubectl fell back to OpenAPI v2: {out}");
    assert!(out.contains("fieldValidation=Strict"), "kubectl did not send fieldValidation=Strict: {out}");
    assert!(out.contains("deployment.apps/web created"), "{out}");
    assert!(out.contains("configmap/settings created"), "{out}");
    // A second apply goes through the client-side apply patch path.
    std::fs::write(&good, GOOD.replace("replicas: 2", "replicas: 3"))?;
    let (ok, out) = kubectl(&bin, c, &cache, &["apply", "-f", &good]).await?;
    assert!(ok, "second kubectl apply failed: {out}");
    assert!(out.contains("deployment.apps/web configured"), "{out}");
    let (ok, out) = kubectl(&bin, c, &cache, &["get", "deployment", "web", "-o", "jsonpath={.spec.replicas}"]).await?;
    assert!(ok && out.trim() == "3", "{out}");

    let (ok, out) = kubectl(&bin, c, &cache, &["apply", "-f", &bad]).await?;
    assert!(!ok, "apply with an unknown field succeeded: {out}");
    assert!(out.contains("replicaz"), "error does not name the field: {out}");

    let (ok, out) = kubectl(&bin, c, &cache, &["explain", "deployment.spec.strategy"]).await?;
    assert!(ok, "kubectl explain failed: {out}");
    assert!(out.contains("rollingUpdate"), "{out}");
    for (what, field) in [("pods.spec.containers", "imagePullPolicy"), ("lease.spec", "holderIdentity")] {
        let (ok, out) = kubectl(&bin, c, &cache, &["explain", what]).await?;
        assert!(ok && out.contains(field), "kubectl explain {what}: {out}");
    }
    Ok(())
}
