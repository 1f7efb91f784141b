//! End to end with a stock kubectl: discovery, apply/re-apply, get in every output format,
//! scale/patch/label/annotate, watch, explain, diff, delete and the errors users see.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result};
use ferry_testkit::Cluster;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

const NS: &str = "shop";

const MANIFEST: &str = "\
apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: shop-config
  namespace: shop
  labels: {app: shop}
data:
  color: blue
---
apiVersion: v1
kind: Secret
metadata:
  name: shop-secret
  namespace: shop
type: Opaque
stringData:
  password: hunter2
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: shop
  namespace: shop
  labels: {app: shop}
spec:
  replicas: 2
  selector:
    matchLabels: {app: shop}
  strategy:
    type: RollingUpdate
    rollingUpdate: {maxSurge: 1}
  template:
    metadata:
      labels: {app: shop}
    spec:
      containers:
      - name: web
        image: nginx:1.27
        env:
        - name: MODE
          value: prod
        ports:
        - containerPort: 80
          name: http
        - containerPort: 443
          name: https
      - name: sidecar
        image: busybox:1.36
        command: [sleep, infinity]
        env:
        - name: SIDE
          value: car
        ports:
        - containerPort: 9000
          name: metrics
---
apiVersion: v1
kind: Service
metadata:
  name: shop
  namespace: shop
  labels: {app: shop}
spec:
  selector: {app: shop}
  ports:
  - name: http
    port: 80
    targetPort: 80
";

/// The manifest after the edit: web image bumped, an env var added, replicas 4, port 443 gone.
fn edited() -> String {
    let out = MANIFEST
        .replace("replicas: 2", "replicas: 4")
        .replace("image: nginx:1.27", "image: nginx:1.28")
        .replace(
            "          value: prod\n",
            "          value: prod\n        - name: LOG_LEVEL\n          value: debug\n",
        )
        .replace("        - containerPort: 443\n          name: https\n", "");
    assert_ne!(out, MANIFEST);
    out
}

const UNKNOWN_FIELD: &str = "\
apiVersion: v1
kind: ConfigMap
metadata:
  name: typo-config
  namespace: shop
data:
  a: b
colour: red
";

const BAD_NAME: &str = "\
apiVersion: v1
kind: ConfigMap
metadata:
  name: Bad_Name
  namespace: shop
data:
  a: b
";

fn kubectl_on_path() -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join("kubectl")).find(|p| p.is_file())
}

/// What one kubectl run left behind.
struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {:?}\n--- stdout\n{}--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
    cache: PathBuf,
}

impl Kubectl {
    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.bin);
        cmd.arg("--kubeconfig").arg(&self.kubeconfig).arg("--cache-dir").arg(&self.cache).args(args);
        cmd.stdin(Stdio::null()).kill_on_drop(true);
        cmd
    }

    async fn run(&self, args: &[&str]) -> Result<Out> {
        let out = tokio::time::timeout(Duration::from_secs(60), self.command(args).output())
            .await
            .with_context(|| format!("kubectl {args:?} timed out"))??;
        Ok(Out {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Run and require exit 0; returns stdout.
    async fn ok(&self, args: &[&str]) -> Result<String> {
        let out = self.run(args).await?;
        assert_eq!(out.code, Some(0), "kubectl {args:?}: {out}");
        Ok(out.stdout)
    }

    async fn json(&self, args: &[&str]) -> Result<Value> {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let text = self.ok(&all).await?;
        serde_json::from_str(&text).with_context(|| format!("kubectl {args:?} -o json: {text}"))
    }
}

fn header(table: &str) -> Vec<&str> {
    table.lines().next().unwrap_or_default().split_whitespace().collect()
}

fn container<'a>(deploy: &'a Value, name: &str) -> &'a Value {
    deploy["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name} in {deploy}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_kubectl_end_to_end() -> Result<()> {
    let Some(bin) = kubectl_on_path() else {
        // CI installs a stock kubectl (scripts/test → ensure_clients); there it must run.
        assert!(std::env::var_os("CI").is_none(), "kubectl must be on PATH in CI");
        println!("kubectl is not on PATH: skipping the kubectl end-to-end test");
        return Ok(());
    };
    let c = Cluster::start().await?;
    let dir = tempfile::tempdir()?;
    let k = Kubectl { bin, kubeconfig: c.kubeconfig(), cache: dir.path().join("cache") };
    let manifest = dir.path().join("shop.yaml");
    std::fs::write(&manifest, MANIFEST)?;
    let manifest = manifest.to_string_lossy().into_owned();

    discovery(&k).await?;
    apply_and_reapply(&k, &manifest).await?;
    server_side_apply(&k, dir.path(), &manifest).await?;
    get_outputs(&k).await?;
    mutate(&k).await?;
    create_verbs(&k).await?;
    watch(&k, &c).await?;
    explain_and_diff(&k, &manifest).await?;
    bad_input(&k, dir.path()).await?;
    delete(&k, &manifest).await?;
    Ok(())
}

/// 1. `version` and `api-resources`.
async fn discovery(k: &Kubectl) -> Result<()> {
    let out = k.ok(&["version"]).await?;
    // The expected outputs are those of the stock kubectl 1.37 that scripts/test installs.
    assert!(
        out.contains("Client Version: v1.37"),
        "put the stock kubectl 1.37 first on PATH ($HOME/.cache/ferry/venv/bin): {out}"
    );
    let server = out.lines().find(|l| l.starts_with("Server Version: v")).unwrap_or_else(|| panic!("{out}"));
    assert!(server.len() > "Server Version: v".len(), "{out}");
    let v = k.json(&["version"]).await?;
    assert!(v["serverVersion"]["gitVersion"].as_str().is_some_and(|s| s.starts_with('v')), "{v}");

    let out = k.ok(&["api-resources"]).await?;
    assert_eq!(header(&out), ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"], "{out}");
    let rows: Vec<Vec<&str>> = out.lines().skip(1).map(|l| l.split_whitespace().collect()).collect();
    for want in [
        ["deployments", "deploy", "apps/v1", "true", "Deployment"],
        ["pods", "po", "v1", "true", "Pod"],
        ["services", "svc", "v1", "true", "Service"],
        ["configmaps", "cm", "v1", "true", "ConfigMap"],
        ["namespaces", "ns", "v1", "false", "Namespace"],
    ] {
        assert!(rows.iter().any(|r| r == &want), "{want:?} not in {out}");
    }
    assert!(rows.iter().any(|r| r == &["secrets", "v1", "true", "Secret"]), "{out}");
    let out = k.ok(&["api-resources", "--api-group=apps", "-o", "name"]).await?;
    assert!(out.lines().any(|l| l == "deployments.apps"), "{out}");
    Ok(())
}

/// 2. Multi-document apply, then a re-apply of an edited manifest.
async fn apply_and_reapply(k: &Kubectl, manifest: &str) -> Result<()> {
    let out = k.ok(&["apply", "-f", manifest]).await?;
    for line in [
        "namespace/shop created",
        "configmap/shop-config created",
        "secret/shop-secret created",
        "deployment.apps/shop created",
        "service/shop created",
    ] {
        assert!(out.lines().any(|l| l == line), "{line:?} missing: {out}");
    }
    let secret = k.json(&["-n", NS, "get", "secret", "shop-secret"]).await?;
    assert_eq!(secret["data"]["password"], "aHVudGVyMg==", "{secret}");
    assert!(secret.get("stringData").is_none(), "{secret}");

    std::fs::write(manifest, edited())?;
    let out = k.ok(&["apply", "-f", manifest]).await?;
    // The Secret reads "configured" as with Kubernetes: stringData is never stored, so kubectl's
    // three-way patch always re-sends it.
    for line in [
        "namespace/shop unchanged",
        "configmap/shop-config unchanged",
        "secret/shop-secret configured",
        "deployment.apps/shop configured",
        "service/shop unchanged",
    ] {
        assert!(out.lines().any(|l| l == line), "{line:?} missing: {out}");
    }
    assert_eq!(out.lines().count(), 5, "{out}");
    let svc = k.json(&["-n", NS, "get", "service", "shop"]).await?;
    assert_eq!(
        svc["spec"]["ports"],
        serde_json::json!([{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 80}]),
        "{svc}"
    );

    let d = k.json(&["-n", NS, "get", "deployment", "shop"]).await?;
    assert_eq!(d["spec"]["replicas"], 4, "{d}");
    let web = container(&d, "web");
    assert_eq!(web["image"], "nginx:1.28", "{web}");
    assert_eq!(
        web["env"],
        serde_json::json!([{"name": "MODE", "value": "prod"}, {"name": "LOG_LEVEL", "value": "debug"}]),
        "{web}"
    );
    // The removed port is gone (kubectl sends `$patch: delete` for it, keyed by containerPort,
    // because the OpenAPI schema carries the patch merge keys).
    let ports = web["ports"].as_array().expect("ports");
    assert_eq!(ports.len(), 1, "{web}");
    assert!(ports.iter().any(|p| p["containerPort"] == 80 && p["name"] == "http"), "{web}");
    let side = container(&d, "sidecar");
    assert_eq!(side["image"], "busybox:1.36", "{side}");
    assert_eq!(side["command"], serde_json::json!(["sleep", "infinity"]), "{side}");
    assert_eq!(side["env"], serde_json::json!([{"name": "SIDE", "value": "car"}]), "{side}");
    assert_eq!(side["ports"][0]["containerPort"], 9000, "{side}");
    assert_eq!(side["ports"].as_array().map(Vec::len), Some(1), "{side}");
    assert_eq!(d["spec"]["template"]["spec"]["containers"].as_array().map(Vec::len), Some(2), "{d}");
    // The last-applied annotation now holds the edited manifest.
    let last = d["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
        .as_str()
        .unwrap_or_else(|| panic!("no last-applied annotation: {d}"));
    assert!(last.contains("nginx:1.28") && !last.contains("443"), "{last}");
    Ok(())
}

const SSA_MANIFEST: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: ssa
  namespace: shop
  labels: {app: ssa, team: blue}
spec:
  replicas: 2
  selector:
    matchLabels: {app: ssa}
  template:
    metadata:
      labels: {app: ssa}
    spec:
      containers:
      - name: app
        image: nginx:1.27
        ports:
        - containerPort: 80
        - containerPort: 8080
";

fn owner_of_replicas(d: &Value) -> Vec<String> {
    d["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["fieldsV1"]["f:spec"].get("f:replicas").is_some())
        .map(|e| e["manager"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// 2b. `apply --server-side`: create, a conflict between two field managers, `--force-conflicts`, pruning of
/// what a manager stops applying, and moving the client-side-applied manifest to server-side apply.
async fn server_side_apply(k: &Kubectl, dir: &Path, manifest: &str) -> Result<()> {
    let file = dir.join("ssa.yaml");
    std::fs::write(&file, SSA_MANIFEST)?;
    let file = file.to_string_lossy().into_owned();
    let out = k.ok(&["apply", "--server-side", "-f", &file]).await?;
    assert_eq!(out.trim(), "deployment.apps/ssa serverside-applied", "{out}");
    let d = k.json(&["-n", NS, "get", "deploy", "ssa", "--show-managed-fields"]).await?;
    assert_eq!(owner_of_replicas(&d), ["kubectl"], "{d}");
    assert_eq!(d["metadata"]["managedFields"][0]["operation"], "Apply", "{d}");

    // A second manager wants 5 replicas: refused, with kubectl's conflict message.
    let other = dir.join("ssa-other.yaml");
    std::fs::write(
        &other,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: ssa, namespace: shop}\nspec: {replicas: 5}\n",
    )?;
    let other = other.to_string_lossy().into_owned();
    let out = k.run(&["apply", "--server-side", "--field-manager=autoscaler", "-f", &other]).await?;
    assert_ne!(out.code, Some(0), "{out}");
    assert!(out.stderr.contains("Apply failed with 1 conflict: conflict with \"kubectl\": .spec.replicas"), "{out}");
    assert!(out.stderr.contains("--force-conflicts"), "kubectl prints its hint: {out}");
    let d = k.json(&["-n", NS, "get", "deploy", "ssa"]).await?;
    assert_eq!(d["spec"]["replicas"], 2, "{d}");

    // Forced, the second manager takes replicas over.
    let out =
        k.ok(&["apply", "--server-side", "--field-manager=autoscaler", "--force-conflicts", "-f", &other]).await?;
    assert_eq!(out.trim(), "deployment.apps/ssa serverside-applied", "{out}");
    let d = k.json(&["-n", NS, "get", "deploy", "ssa", "--show-managed-fields"]).await?;
    assert_eq!(d["spec"]["replicas"], 5, "{d}");
    assert_eq!(owner_of_replicas(&d), ["autoscaler"], "{d}");

    // The first manager drops replicas, a label and a port from its manifest: the label and port go,
    // replicas stay (another manager owns them).
    let trimmed = SSA_MANIFEST
        .replace("  replicas: 2\n", "")
        .replace(", team: blue", "")
        .replace("        - containerPort: 8080\n", "");
    std::fs::write(&file, trimmed)?;
    k.ok(&["apply", "--server-side", "-f", &file]).await?;
    let d = k.json(&["-n", NS, "get", "deploy", "ssa"]).await?;
    assert_eq!(d["spec"]["replicas"], 5, "{d}");
    assert_eq!(d["metadata"]["labels"], serde_json::json!({"app": "ssa"}), "{d}");
    assert_eq!(container(&d, "app")["ports"], serde_json::json!([{"containerPort": 80, "protocol": "TCP"}]), "{d}");
    k.ok(&["-n", NS, "delete", "deploy", "ssa"]).await?;

    // The client-side-applied shop manifest moves to server-side apply without conflicts, and keeps
    // working with both.
    let out = k.ok(&["apply", "--server-side", "-f", manifest]).await?;
    assert!(out.lines().any(|l| l == "deployment.apps/shop serverside-applied"), "{out}");
    let out = k.ok(&["apply", "-f", manifest]).await?;
    assert!(out.lines().any(|l| l.starts_with("deployment.apps/shop ")), "{out}");
    Ok(())
}

/// 2c. `kubectl create <kind>`: client-go sends these bodies as Kubernetes protobuf.
async fn create_verbs(k: &Kubectl) -> Result<()> {
    assert_eq!(k.ok(&["create", "namespace", "made"]).await?.trim(), "namespace/made created");
    let out = k
        .ok(&["-n", "made", "create", "configmap", "cfg", "--from-literal=color=blue", "--from-literal=empty="])
        .await?;
    assert_eq!(out.trim(), "configmap/cfg created");
    let cm = k.json(&["-n", "made", "get", "cm", "cfg"]).await?;
    assert_eq!(cm["data"], serde_json::json!({"color": "blue", "empty": ""}), "{cm}");
    assert!(cm["metadata"].get("generateName").is_none(), "{cm}");
    assert!(cm["metadata"]["creationTimestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{cm}");

    k.ok(&["-n", "made", "create", "secret", "generic", "pw", "--from-literal=password=hunter2"]).await?;
    let secret = k.json(&["-n", "made", "get", "secret", "pw"]).await?;
    assert_eq!(secret["data"]["password"], "aHVudGVyMg==", "{secret}");
    assert_eq!(secret["type"], "Opaque", "{secret}");

    let out = k
        .ok(&["-n", "made", "create", "deployment", "api", "--image=nginx:1.27", "--replicas=0", "--port=8080"])
        .await?;
    assert_eq!(out.trim(), "deployment.apps/api created");
    let d = k.json(&["-n", "made", "get", "deploy", "api"]).await?;
    assert_eq!(d["spec"]["replicas"], 0, "an explicit 0 survives: {d}");
    let c = container(&d, "nginx");
    assert_eq!(c["image"], "nginx:1.27", "{d}");
    assert_eq!(c["ports"], serde_json::json!([{"containerPort": 8080, "protocol": "TCP"}]), "{d}");
    assert_eq!(d["spec"]["selector"]["matchLabels"], serde_json::json!({"app": "api"}), "{d}");
    // Go's omitempty zeros that protobuf carries are not stored (Kubernetes would not show them).
    assert!(c.get("stdin").is_none() && d["spec"].get("paused").is_none(), "{d}");
    assert!(d["spec"]["template"]["metadata"].get("generation").is_none(), "{d}");

    let out = k.ok(&["-n", "made", "create", "service", "clusterip", "api", "--tcp=80:8080"]).await?;
    assert_eq!(out.trim(), "service/api created");
    let svc = k.json(&["-n", "made", "get", "svc", "api"]).await?;
    assert_eq!(svc["spec"]["ports"][0]["port"], 80, "{svc}");
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 8080, "{svc}");

    // Bad input through the same path: an invalid name is the usual 422, and nothing is stored.
    let out = k.run(&["-n", "made", "create", "configmap", "Bad_Name"]).await?;
    assert_ne!(out.code, Some(0), "{out}");
    assert!(out.stderr.contains("ConfigMap \"Bad_Name\" is invalid: metadata.name: Invalid value"), "{out}");
    k.ok(&["delete", "namespace", "made", "--wait=false"]).await?;
    Ok(())
}

/// 3. `get` in Table, yaml, json and wide output, with label and field selectors and `-A`.
async fn get_outputs(k: &Kubectl) -> Result<()> {
    let out = k.ok(&["-n", NS, "get", "deployments"]).await?;
    assert_eq!(header(&out), ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"], "{out}");
    let row: Vec<&str> = out.lines().nth(1).unwrap_or_default().split_whitespace().collect();
    assert_eq!(row.first(), Some(&"shop"), "{out}");
    assert_eq!(row.get(1), Some(&"0/4"), "{out}");

    let out = k.ok(&["-n", NS, "get", "deploy", "shop", "-o", "yaml"]).await?;
    assert!(out.starts_with("apiVersion: apps/v1\nkind: Deployment\n"), "{out}");
    assert!(out.contains("  name: shop\n") && out.contains("image: nginx:1.28"), "{out}");

    let v = k.json(&["-n", NS, "get", "deploy"]).await?;
    assert_eq!(v["kind"], "List", "{v}");
    assert_eq!(v["items"][0]["metadata"]["name"], "shop", "{v}");
    assert_eq!(v["items"][0]["kind"], "Deployment", "{v}");

    let out = k.ok(&["-n", NS, "get", "deploy", "-o", "wide"]).await?;
    assert_eq!(
        header(&out),
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE", "CONTAINERS", "IMAGES", "SELECTOR"],
        "{out}"
    );
    let line = out.lines().nth(1).unwrap_or_default();
    assert!(
        line.contains("web,sidecar") && line.contains("nginx:1.28,busybox:1.36") && line.contains("app=shop"),
        "{out}"
    );

    // Label selector: the ConfigMap is labelled, the Secret is not.
    let out = k.ok(&["-n", NS, "get", "cm,secret,svc,deploy", "-l", "app=shop", "-o", "name"]).await?;
    let mut names: Vec<&str> = out.lines().collect();
    names.sort_unstable();
    assert_eq!(names, ["configmap/shop-config", "deployment.apps/shop", "service/shop"], "{out}");
    let out = k.run(&["-n", NS, "get", "cm", "-l", "app=nope"]).await?;
    assert_eq!(out.code, Some(0), "{out}");
    assert!(out.stderr.contains("No resources found in shop namespace."), "{out}");

    let out = k.ok(&["get", "configmaps", "-A"]).await?;
    assert_eq!(header(&out), ["NAMESPACE", "NAME", "DATA", "AGE"], "{out}");
    let row = out.lines().map(|l| l.split_whitespace().collect::<Vec<_>>()).find(|r| r.get(1) == Some(&"shop-config"));
    let row = row.unwrap_or_else(|| panic!("shop-config missing: {out}"));
    assert_eq!(row[0], "shop", "{out}");
    assert_eq!(row[2], "1", "{out}");

    let out = k.ok(&["get", "namespaces", "--field-selector", "metadata.name=shop", "-o", "name"]).await?;
    assert_eq!(out.trim(), "namespace/shop", "{out}");
    let out = k.ok(&["-n", NS, "get", "cm", "--field-selector", "metadata.name=shop-config", "-o", "name"]).await?;
    assert_eq!(out.trim(), "configmap/shop-config", "{out}");
    let out = k.ok(&["get", "cm", "-A", "--field-selector", "metadata.namespace=shop", "-o", "name"]).await?;
    assert!(out.lines().all(|l| l.starts_with("configmap/")) && out.contains("configmap/shop-config"), "{out}");
    Ok(())
}

/// 4. `scale`, the three patch types, `label` and `annotate`.
async fn mutate(k: &Kubectl) -> Result<()> {
    let out = k.ok(&["-n", NS, "scale", "deploy/shop", "--replicas=5"]).await?;
    assert_eq!(out.trim(), "deployment.apps/shop scaled", "{out}");
    let d = k.json(&["-n", NS, "get", "deploy", "shop"]).await?;
    assert_eq!(d["spec"]["replicas"], 5, "{d}");

    let out =
        k.ok(&["-n", NS, "patch", "cm", "shop-config", "--type=merge", "-p", r#"{"data":{"size":"xl"}}"#]).await?;
    assert_eq!(out.trim(), "configmap/shop-config patched", "{out}");
    let out = k
        .ok(&[
            "-n",
            NS,
            "patch",
            "cm",
            "shop-config",
            "--type=json",
            "-p",
            r#"[{"op":"replace","path":"/data/color","value":"green"}]"#,
        ])
        .await?;
    assert_eq!(out.trim(), "configmap/shop-config patched", "{out}");
    let cm = k.json(&["-n", NS, "get", "cm", "shop-config"]).await?;
    assert_eq!(cm["data"], serde_json::json!({"color": "green", "size": "xl"}), "{cm}");

    // Strategic merge: containers merge by name, so the sidecar is untouched.
    let out = k
        .ok(&[
            "-n",
            NS,
            "patch",
            "deploy",
            "shop",
            "--type=strategic",
            "-p",
            r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"nginx:1.29"}]}}}}"#,
        ])
        .await?;
    assert_eq!(out.trim(), "deployment.apps/shop patched", "{out}");
    let d = k.json(&["-n", NS, "get", "deploy", "shop"]).await?;
    assert_eq!(container(&d, "web")["image"], "nginx:1.29", "{d}");
    assert_eq!(container(&d, "sidecar")["image"], "busybox:1.36", "{d}");
    assert_eq!(container(&d, "web")["env"][1]["name"], "LOG_LEVEL", "{d}");
    // A JSON patch that does not apply is refused.
    let out = k
        .run(&["-n", NS, "patch", "cm", "shop-config", "--type=json", "-p", r#"[{"op":"remove","path":"/data/nope"}]"#])
        .await?;
    assert_eq!(out.code, Some(1), "{out}");

    let out = k.ok(&["-n", NS, "label", "cm", "shop-config", "tier=backend"]).await?;
    assert_eq!(out.trim(), "configmap/shop-config labeled", "{out}");
    let out = k.run(&["-n", NS, "label", "cm", "shop-config", "tier=frontend"]).await?;
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("already has a value (backend)") && out.stderr.contains("--overwrite"), "{out}");
    let out = k.ok(&["-n", NS, "label", "cm", "shop-config", "tier=frontend", "--overwrite"]).await?;
    assert_eq!(out.trim(), "configmap/shop-config labeled", "{out}");
    let out = k.ok(&["-n", NS, "annotate", "cm", "shop-config", "owner=team-a"]).await?;
    assert_eq!(out.trim(), "configmap/shop-config annotated", "{out}");
    let cm = k.json(&["-n", NS, "get", "cm", "shop-config"]).await?;
    assert_eq!(cm["metadata"]["labels"], serde_json::json!({"app": "shop", "tier": "frontend"}), "{cm}");
    assert_eq!(cm["metadata"]["annotations"]["owner"], "team-a", "{cm}");
    let out = k.ok(&["-n", NS, "get", "cm", "-l", "tier=frontend", "-o", "name"]).await?;
    assert_eq!(out.trim(), "configmap/shop-config", "{out}");
    // Removing a label with the `key-` form.
    k.ok(&["-n", NS, "label", "cm", "shop-config", "tier-"]).await?;
    let cm = k.json(&["-n", NS, "get", "cm", "shop-config"]).await?;
    assert_eq!(cm["metadata"]["labels"], serde_json::json!({"app": "shop"}), "{cm}");
    Ok(())
}

/// 5. `get -w` sees a change another client makes.
async fn watch(k: &Kubectl, c: &Cluster) -> Result<()> {
    let mut child = k
        .command(&["-n", NS, "get", "cm", "shop-config", "-w", "--output-watch-events", "-o", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut seen = String::new();
    let mut patched = false;
    let found = loop {
        let line = tokio::time::timeout_at(deadline, lines.next_line()).await;
        let Ok(line) = line else { break false };
        let Some(line) = line? else { break false };
        seen.push_str(&line);
        seen.push('\n');
        // One compact JSON event per line. The initial state arrives first (ADDED); then change
        // the object through the API.
        let Ok(ev) = serde_json::from_str::<Value>(&line) else { continue };
        if !patched && ev["type"] == "ADDED" && ev["object"]["metadata"]["name"] == "shop-config" {
            let (code, v) = c
                .raw_json(
                    "PATCH",
                    &format!("/api/v1/namespaces/{NS}/configmaps/shop-config"),
                    Some("application/merge-patch+json"),
                    br#"{"data":{"watched":"yes"}}"#.to_vec(),
                )
                .await?;
            assert_eq!(code, 200, "{v}");
            patched = true;
        }
        if patched && ev["type"] == "MODIFIED" && ev["object"]["data"]["watched"] == "yes" {
            assert_eq!(ev["object"]["data"]["color"], "green", "{ev}");
            break true;
        }
    };
    child.start_kill()?;
    let status = child.wait().await?;
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        tokio::io::AsyncReadExt::read_to_string(&mut e, &mut stderr).await?;
    }
    assert!(found, "kubectl get -w did not show the change (patched={patched}, {status}): {seen}\n{stderr}");

    // The plain form: `-o name` prints one line per event.
    let mut child =
        k.command(&["-n", NS, "get", "cm", "-w", "-o", "name"]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn()?;
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await??;
    assert!(first.as_deref().is_some_and(|l| l.starts_with("configmap/")), "{first:?}");
    let (code, v) = c
        .raw_json(
            "POST",
            &format!("/api/v1/namespaces/{NS}/configmaps"),
            Some("application/json"),
            serde_json::to_vec(&serde_json::json!({"metadata": {"name": "watch-new"}, "data": {"x": "y"}}))?,
        )
        .await?;
    assert_eq!(code, 201, "{v}");
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(l) = lines.next_line().await? {
            if l == "configmap/watch-new" {
                return Ok::<_, anyhow::Error>(true);
            }
        }
        Ok(false)
    })
    .await??;
    child.start_kill()?;
    child.wait().await?;
    assert!(found, "kubectl get -w -o name did not show configmap/watch-new");
    Ok(())
}

/// 6. `explain` and `diff`.
async fn explain_and_diff(k: &Kubectl, manifest: &str) -> Result<()> {
    let out = k.ok(&["explain", "deployment.spec.strategy"]).await?;
    assert!(out.contains("KIND:       Deployment") && out.contains("GROUP:      apps"), "{out}");
    assert!(out.contains("FIELD: strategy <DeploymentStrategy>"), "{out}");
    assert!(out.contains("rollingUpdate\t<RollingUpdateDeployment>"), "{out}");

    assert!(Path::new("/usr/bin/diff").exists(), "kubectl diff needs /usr/bin/diff");
    // The stored Deployment was scaled and patched since the last apply: diff shows the way back.
    let out = k.run(&["diff", "-f", manifest]).await?;
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stdout.contains("-  replicas: 5") && out.stdout.contains("+  replicas: 4"), "{out}");
    assert!(
        out.stdout.contains("-        image: nginx:1.29") && out.stdout.contains("+        image: nginx:1.28"),
        "{out}"
    );
    // Server dry-run: nothing changed.
    let d = k.json(&["-n", NS, "get", "deploy", "shop"]).await?;
    assert_eq!(d["spec"]["replicas"], 5, "{d}");
    // Re-applying makes the diff empty.
    k.ok(&["apply", "-f", manifest]).await?;
    let out = k.run(&["diff", "-f", manifest]).await?;
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(out.stdout, "", "{out}");
    Ok(())
}

/// 8. An unknown field and an invalid name are refused, and nothing is stored.
async fn bad_input(k: &Kubectl, dir: &Path) -> Result<()> {
    let unknown = dir.join("unknown.yaml");
    std::fs::write(&unknown, UNKNOWN_FIELD)?;
    let out = k.run(&["apply", "-f", &unknown.to_string_lossy()]).await?;
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("strict decoding error") && out.stderr.contains("unknown field \"colour\""), "{out}");

    let bad = dir.join("bad-name.yaml");
    std::fs::write(&bad, BAD_NAME)?;
    let out = k.run(&["apply", "-f", &bad.to_string_lossy()]).await?;
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("ConfigMap \"Bad_Name\" is invalid"), "{out}");
    assert!(out.stderr.contains("metadata.name: Invalid value: \"Bad_Name\""), "{out}");

    for name in ["typo-config", "Bad_Name"] {
        let out = k.run(&["-n", NS, "get", "cm", name]).await?;
        assert_eq!(out.code, Some(1), "{out}");
        assert!(out.stderr.contains("NotFound") || out.stderr.contains("not found"), "{out}");
    }
    let out = k.ok(&["-n", NS, "get", "cm", "-o", "name"]).await?;
    assert!(!out.contains("typo") && !out.contains("Bad_Name"), "{out}");
    Ok(())
}

/// 7. `delete -f` and `delete --wait`.
async fn delete(k: &Kubectl, manifest: &str) -> Result<()> {
    let out = k.ok(&["-n", NS, "delete", "cm", "watch-new", "--wait"]).await?;
    assert_eq!(out.trim(), "configmap \"watch-new\" deleted from shop namespace", "{out}");
    let out = k.run(&["-n", NS, "get", "cm", "watch-new"]).await?;
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("configmaps \"watch-new\" not found"), "{out}");

    // --wait=false: Ferry has no namespace controller yet, so the Namespace stays Terminating
    // (spec.finalizers ["kubernetes"]) and the default --wait=true never returns.
    let out = k.ok(&["delete", "-f", manifest, "--wait=false"]).await?;
    for line in [
        "configmap \"shop-config\" deleted",
        "secret \"shop-secret\" deleted",
        "deployment.apps \"shop\" deleted",
        "service \"shop\" deleted",
    ] {
        assert!(out.contains(line), "{line:?} missing: {out}");
    }
    assert!(out.contains("namespace \"shop\" deleted"), "{out}");
    let ns = k.json(&["get", "namespace", "shop"]).await?;
    assert_eq!(ns["status"]["phase"], "Terminating", "{ns}");
    assert!(ns["metadata"]["deletionTimestamp"].is_string(), "{ns}");
    for what in ["deploy/shop", "svc/shop", "secret/shop-secret", "cm/shop-config"] {
        let out = k.run(&["-n", NS, "get", what]).await?;
        assert_eq!(out.code, Some(1), "{what}: {out}");
        assert!(out.stderr.contains("not found"), "{what}: {out}");
    }
    Ok(())
}
