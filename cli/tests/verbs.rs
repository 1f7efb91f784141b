//! The kubectl-like verbs of the real `ferry` binary against a real API server + etcd: apply (created /
//! unchanged / configured), get (table, -o name/json), rollout status (done, deadline exceeded, timeout),
//! delete, and the errors users see (YAML syntax, server rejections, unknown types, unreachable servers).

use anyhow::Result;
use ferry_testkit::Cluster;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use std::path::Path;
use std::process::Output;

struct Ferry {
    kubeconfig: std::path::PathBuf,
}

impl Ferry {
    async fn run(&self, args: &[&str]) -> Result<Output> {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_ferry"));
        cmd.arg("--kubeconfig").arg(&self.kubeconfig).args(args).env_remove("KUBECONFIG");
        Ok(tokio::time::timeout(std::time::Duration::from_secs(60), cmd.output()).await??)
    }

    async fn ok(&self, args: &[&str]) -> Result<String> {
        let out = self.run(args).await?;
        assert!(out.status.success(), "ferry {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Run, expect exit 1 and a single-line error; return it.
    async fn fails(&self, args: &[&str]) -> Result<String> {
        let out = self.run(args).await?;
        assert_eq!(out.status.code(), Some(1), "ferry {args:?} should fail: {out:?}");
        Ok(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

const APP: &str = "\
apiVersion: v1
kind: Namespace
metadata: {name: ci}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: ci}
data: {color: blue}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: ci}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: 'nginx:1.27'}]
";

fn write(dir: &Path, name: &str, text: &str) -> Result<String> {
    let p = dir.join(name);
    std::fs::write(&p, text)?;
    Ok(p.to_string_lossy().into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verbs_against_a_real_server() -> Result<()> {
    let c = Cluster::start().await?;
    let f = Ferry { kubeconfig: c.kubeconfig() };
    let dir = tempfile::tempdir()?;
    let app = write(dir.path(), "app.yaml", APP)?;

    let out = f.ok(&["apply", "-f", &app]).await?;
    assert_eq!(out, "namespace/ci created\nconfigmap/settings created\ndeployment.apps/web created\n");
    let out = f.ok(&["apply", "-f", &app]).await?;
    assert_eq!(out, "namespace/ci unchanged\nconfigmap/settings unchanged\ndeployment.apps/web unchanged\n");
    write(dir.path(), "app.yaml", &APP.replace("nginx:1.27", "nginx:1.28"))?;
    let out = f.ok(&["apply", "-f", dir.path().to_str().unwrap_or_default()]).await?;
    assert!(out.contains("deployment.apps/web configured\n") && out.contains("configmap/settings unchanged"), "{out}");

    // get: the server's columns, names, JSON.
    let out = f.ok(&["-n", "ci", "get", "deploy"]).await?;
    let header: Vec<&str> = out.lines().next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"], "{out}");
    assert!(out.lines().nth(1).is_some_and(|l| l.starts_with("web ")), "{out}");
    assert_eq!(f.ok(&["-n", "ci", "get", "configmaps", "-o", "name"]).await?, "configmap/settings\n");
    let one: serde_json::Value =
        serde_json::from_str(&f.ok(&["-n", "ci", "get", "cm", "settings", "-o", "json"]).await?)?;
    assert_eq!(one["data"]["color"], "blue");
    assert_eq!(one["kind"], "ConfigMap");
    let all = f.ok(&["get", "ns", "-o", "name"]).await?;
    assert!(all.lines().any(|l| l == "namespace/ci"), "{all}");
    let out = f.run(&["-n", "ci", "get", "pods"]).await?;
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr), "No resources found in ci namespace.\n");

    // rollout status, with the Deployment's status written as a controller would.
    let deps: Api<Deployment> = Api::namespaced(c.client().await?, "ci");
    let gen = deps.get("web").await?.metadata.generation.unwrap_or(1);
    let err = f.fails(&["-n", "ci", "rollout", "status", "deployment/web", "--timeout", "1s"]).await?;
    assert_eq!(err, "error: timed out waiting for the condition\n");
    let status = json!({"status": {"observedGeneration": gen, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2,
        "readyReplicas": 2}});
    deps.patch_status("web", &PatchParams::default(), &Patch::Merge(&status)).await?;
    let out = f.ok(&["-n", "ci", "rollout", "status", "deploy/web", "--timeout", "10s"]).await?;
    assert_eq!(out, "deployment \"web\" successfully rolled out\n");
    // apply --wait returns once the (unchanged) Deployment is rolled out; wait --for=condition.
    let out = f.ok(&["apply", "-f", &app, "--wait", "--timeout", "10s"]).await?;
    assert!(out.ends_with("deployment \"web\" successfully rolled out\n"), "{out}");
    let err = f.fails(&["-n", "ci", "wait", "deploy/web", "--for=condition=Available", "--timeout", "1s"]).await?;
    assert!(err.starts_with("error: timed out waiting for the condition"), "{err}");
    let available = json!({"status": {"conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"}]}});
    deps.patch_status("web", &PatchParams::default(), &Patch::Merge(&available)).await?;
    assert_eq!(
        f.ok(&["-n", "ci", "wait", "deploy/web", "--for=condition=Available", "--timeout", "10s"]).await?,
        "deployment.apps/web condition met\n"
    );
    let names = f
        .ok(&["-n", "ci", "get", "deploy", "-o", "jsonpath={.items[*].metadata.name} {.items[*].spec.replicas}"])
        .await?;
    assert_eq!(names, "web 2");

    let failed = json!({"status": {"conditions": [{"type": "Progressing", "status": "False",
        "reason": "ProgressDeadlineExceeded", "message": "ReplicaSet \"web-1\" has timed out progressing."}]}});
    deps.patch_status("web", &PatchParams::default(), &Patch::Merge(&failed)).await?;
    let err = f.fails(&["-n", "ci", "rollout", "status", "deployment", "web"]).await?;
    assert_eq!(err, "error: deployment \"web\" exceeded its progress deadline\n");

    // Errors users see: one line, exit 1, nothing stored.
    let bad =
        write(dir.path(), "bad.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ok}\n---\nkind: [oops\n")?;
    let err = f.fails(&["apply", "-f", &bad]).await?;
    assert!(err.starts_with(&format!("error: {bad}: document 2: line ")), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let invalid = write(
        dir.path(),
        "invalid.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: Bad_Name, namespace: ci}\n",
    )?;
    let err = f.fails(&["apply", "-f", &invalid]).await?;
    assert!(err.contains("Error from server (Invalid): ConfigMap \"Bad_Name\" is invalid: metadata.name"), "{err}");
    let err = f.fails(&["get", "widgets"]).await?;
    assert_eq!(err, "error: the server doesn't have a resource type \"widgets\"\n");
    let err = f.fails(&["-n", "ci", "get", "cm", "missing"]).await?;
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("not found"), "{err}");

    // get -w: the table, then a row per change made by another client.
    let mut watch = tokio::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("--kubeconfig")
        .arg(&f.kubeconfig)
        .args(["-n", "ci", "get", "cm", "-w"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(watch.stdout.take().expect("stdout")));
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), lines.next_line()).await??;
    assert!(first.is_some_and(|l| l.starts_with("NAME")), "the table header comes first");
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), lines.next_line()).await??; // the existing row
    f.ok(&[
        "-n",
        "ci",
        "apply",
        "-f",
        &write(dir.path(), "extra.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: extra, namespace: ci}\n")?,
    ])
    .await?;
    let row = tokio::time::timeout(std::time::Duration::from_secs(10), lines.next_line()).await??;
    assert!(row.is_some_and(|l| l.starts_with("extra ")), "the new object's row follows");
    watch.kill().await?;

    // delete waits until the objects are gone (the namespace stays Terminating until a namespace
    // controller empties it, so that one is not waited for).
    assert_eq!(f.ok(&["-n", "ci", "delete", "cm", "settings"]).await?, "configmap \"settings\" deleted\n");
    assert_eq!(f.ok(&["-n", "ci", "wait", "cm/settings", "--for=delete"]).await?, "configmap/settings condition met\n");
    let out = f.ok(&["delete", "-f", &app, "--wait=false", "--ignore-not-found"]).await?;
    assert!(out.contains("deployment.apps \"web\" deleted") && out.contains("namespace \"ci\" deleted"), "{out}");
    assert!(deps.get_opt("web").await?.is_none());

    // An unreachable server: one clear line.
    drop(c);
    let err = f.fails(&["get", "ns"]).await?;
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: "), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_and_rollout_verbs() -> Result<()> {
    use k8s_openapi::api::apps::v1::ReplicaSet;
    use k8s_openapi::api::core::v1::Node;
    use kube::api::PostParams;
    let c = Cluster::start().await?;
    let f = Ferry { kubeconfig: c.kubeconfig() };
    let client = c.client().await?;
    let dir = tempfile::tempdir()?;
    let app = write(dir.path(), "app.yaml", APP)?;
    f.ok(&["apply", "-f", &app]).await?;
    let deps: Api<Deployment> = Api::namespaced(client.clone(), "ci");

    assert_eq!(f.ok(&["-n", "ci", "scale", "deploy/web", "--replicas", "5"]).await?, "deployment.apps/web scaled\n");
    assert_eq!(deps.get("web").await?.spec.replicas, Some(5));
    assert_eq!(
        f.ok(&["-n", "ci", "set", "image", "deployment/web", "web=nginx:1.29"]).await?,
        "deployment.apps/web image updated\n"
    );
    let d = deps.get("web").await?;
    assert_eq!(d.spec.template.spec.as_ref().map(|s| s.containers[0].image.clone()), Some(Some("nginx:1.29".into())));
    let err = f.fails(&["-n", "ci", "set", "image", "deployment/web", "nope=x"]).await?;
    assert_eq!(err, "error: unable to find container named \"nope\"\n");

    assert_eq!(f.ok(&["-n", "ci", "label", "deploy", "web", "team=a"]).await?, "deployment.apps/web labeled\n");
    let err = f.fails(&["-n", "ci", "label", "deploy/web", "team=b"]).await?;
    assert_eq!(err, "error: 'team' already has a value (a), and --overwrite is false\n");
    f.ok(&["-n", "ci", "label", "deploy/web", "team=b", "--overwrite"]).await?;
    assert_eq!(deps.get("web").await?.metadata.labels.and_then(|l| l.get("team").cloned()).as_deref(), Some("b"));
    f.ok(&["-n", "ci", "label", "deploy/web", "team-"]).await?;
    assert!(deps.get("web").await?.metadata.labels.is_none_or(|l| !l.contains_key("team")));
    assert_eq!(f.ok(&["-n", "ci", "annotate", "deploy/web", "note=hi"]).await?, "deployment.apps/web annotated\n");

    assert_eq!(f.ok(&["-n", "ci", "rollout", "restart", "deploy/web"]).await?, "deployment.apps/web restarted\n");
    let d = deps.get("web").await?;
    let restarted = d
        .spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get("kubectl.kubernetes.io/restartedAt").cloned());
    assert!(restarted.is_some_and(|t| t.ends_with('Z')), "{d:?}");
    assert_eq!(f.ok(&["-n", "ci", "rollout", "pause", "deploy/web"]).await?, "deployment.apps/web paused\n");
    let err = f.fails(&["-n", "ci", "rollout", "undo", "deploy/web"]).await?;
    assert!(err.contains("you cannot rollback a paused deployment"), "{err}");
    assert_eq!(f.ok(&["-n", "ci", "rollout", "resume", "deploy/web"]).await?, "deployment.apps/web resumed\n");

    // History and undo read the ReplicaSets a deployment controller keeps; write two as it would.
    let d = deps.get("web").await?;
    let uid = d.metadata.uid.clone().unwrap_or_default();
    let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), "ci");
    for (rev, image, hash) in [(1, "nginx:1.27", "aaa"), (2, "nginx:1.29", "bbb")] {
        let rs: ReplicaSet = serde_json::from_value(json!({
            "metadata": {"name": format!("web-{hash}"), "annotations": {"deployment.kubernetes.io/revision": rev.to_string(),
                "kubernetes.io/change-cause": format!("image {image}")},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": uid, "controller": true}]},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "web", "pod-template-hash": hash}},
                "template": {"metadata": {"labels": {"app": "web", "pod-template-hash": hash}},
                    "spec": {"containers": [{"name": "web", "image": image}]}}}
        }))?;
        rss.create(&PostParams::default(), &rs).await?;
    }
    let out = f.ok(&["-n", "ci", "rollout", "history", "deploy/web"]).await?;
    assert_eq!(
        out,
        "deployment.apps/web \nREVISION  CHANGE-CAUSE\n1         image nginx:1.27\n2         image nginx:1.29\n\n"
    );
    assert_eq!(f.ok(&["-n", "ci", "rollout", "undo", "deploy/web"]).await?, "deployment.apps/web rolled back\n");
    let d = deps.get("web").await?;
    let spec = d.spec.template.spec.clone().unwrap_or_default();
    assert_eq!(spec.containers[0].image.as_deref(), Some("nginx:1.27"));
    let labels = d.spec.template.metadata.and_then(|m| m.labels).unwrap_or_default();
    assert!(!labels.contains_key("pod-template-hash"), "{labels:?}");
    let err = f.fails(&["-n", "ci", "rollout", "undo", "deploy/web", "--to-revision", "9"]).await?;
    assert_eq!(err, "error: unable to find specified revision 9 in history\n");

    // describe: the fields that matter, and the object's events.
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), "ci");
    let event = json!({"metadata": {"name": "web.1"}, "involvedObject": {"kind": "Deployment", "name": "web", "namespace": "ci",
        "apiVersion": "apps/v1"}, "reason": "ScalingReplicaSet", "message": "Scaled up replica set web-aaa to 2",
        "type": "Normal", "source": {"component": "deployment-controller"}, "count": 1});
    events.create(&PostParams::default(), &serde_json::from_value(event)?).await?;
    let out = f.ok(&["-n", "ci", "describe", "deploy/web"]).await?;
    for want in [
        "Name:                   web\n",
        "Namespace:              ci\n",
        "Selector:               app=web\n",
        "StrategyType:           RollingUpdate\n",
        "RollingUpdateStrategy:  25% max unavailable, 25% max surge\n",
        "Image:        nginx:1.27",
        "Events:\n",
        "ScalingReplicaSet",
        "deployment-controller",
        "Scaled up replica set web-aaa to 2",
    ] {
        assert!(out.contains(want), "{want:?} not in:\n{out}");
    }
    assert!(out.contains("Replicas:               5 desired | "), "{out}");

    // create: from flags (as kubectl's generators) and from files; AlreadyExists is the server's error.
    assert_eq!(f.ok(&["create", "namespace", "made"]).await?, "namespace/made created\n");
    assert_eq!(
        f.ok(&["-n", "made", "create", "deployment", "api", "--image", "nginx:1.27", "--replicas", "0"]).await?,
        "deployment.apps/api created\n"
    );
    assert_eq!(
        f.ok(&["-n", "made", "create", "secret", "generic", "pw", "--from-literal", "p=hunter2"]).await?,
        "secret/pw created\n"
    );
    let err = f.fails(&["create", "namespace", "made"]).await?;
    assert!(err.contains("Error from server (AlreadyExists): namespaces \"made\" already exists"), "{err}");

    // Nodes.
    let nodes: Api<Node> = Api::all(client);
    nodes.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "n1"}}))?).await?;
    assert_eq!(f.ok(&["cordon", "n1"]).await?, "node/n1 cordoned\n");
    assert_eq!(f.ok(&["cordon", "n1"]).await?, "node/n1 already cordoned\n");
    assert_eq!(f.ok(&["uncordon", "n1"]).await?, "node/n1 uncordoned\n");
    let out = f.ok(&["describe", "node", "n1"]).await?;
    assert!(
        out.starts_with("Name:                   n1\n") && out.contains("Unschedulable:          false\n"),
        "{out}"
    );

    let v = f.ok(&["version"]).await?;
    assert!(v.starts_with("Client Version: v") && v.contains("\nServer Version: v1.37"), "{v}");
    let completion = f.ok(&["completion", "bash"]).await?;
    assert!(completion.contains("_ferry()"), "bash completion defines its function");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_node_shows_conditions_and_events() -> Result<()> {
    use k8s_openapi::api::core::v1::{Event, Node};
    use kube::api::PostParams;
    let c = Cluster::start().await?;
    let client = c.client().await?;
    let f = Ferry { kubeconfig: c.kubeconfig() };
    let nodes: Api<Node> = Api::all(client.clone());
    for name in ["w1", "w2"] {
        nodes.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": name}}))?).await?;
    }
    let status = json!({"status": {"conditions": [
        {"type": "MemoryPressure", "status": "Unknown", "reason": "NodeStatusUnknown",
         "message": "Kubelet stopped posting node status.",
         "lastHeartbeatTime": "2026-11-23T18:00:00Z", "lastTransitionTime": "2026-11-23T18:00:50Z"},
        {"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown",
         "message": "Kubelet stopped posting node status.",
         "lastHeartbeatTime": "2026-11-23T18:00:00Z", "lastTransitionTime": "2026-11-23T18:00:50Z"}
    ]}});
    nodes.patch_status("w1", &PatchParams::default(), &Patch::Merge(&status)).await?;
    // Node events live in `default`; one about another node must not show.
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    for (name, node, reason, from, message, at) in [
        ("w1.b", "w1", "NodeReady", "nodelet", "Node w1 status is now: NodeReady", "2026-11-23T18:01:00Z"),
        (
            "w1.a",
            "w1",
            "NodeNotReady",
            "node-controller",
            "Node w1 status is now: NodeNotReady",
            "2026-11-23T18:00:50Z",
        ),
        (
            "w2.a",
            "w2",
            "NodeNotReady",
            "node-controller",
            "Node w2 status is now: NodeNotReady",
            "2026-11-23T18:00:50Z",
        ),
    ] {
        let e = json!({"metadata": {"name": name}, "involvedObject": {"kind": "Node", "name": node, "apiVersion": "v1"},
            "reason": reason, "message": message, "type": "Normal", "source": {"component": from}, "count": 1,
            "firstTimestamp": at, "lastTimestamp": at});
        events.create(&PostParams::default(), &serde_json::from_value(e)?).await?;
    }
    let out = f.ok(&["describe", "node", "w1"]).await?;
    let lines: Vec<&str> = out.lines().collect();
    let at = |prefix: &str| lines.iter().position(|l| l.trim_start().starts_with(prefix));
    let header = at("Type ").map(|i| lines[i]).unwrap_or_default();
    for col in ["Type", "Status", "LastHeartbeatTime", "LastTransitionTime", "Reason", "Message"] {
        assert!(header.contains(col), "{col} in the conditions header:\n{out}");
    }
    let ready = at("Ready ").map(|i| lines[i]).unwrap_or_default();
    for want in [
        "Unknown",
        "Mon, 23 Nov 2026 18:00:00 +0000",
        "Mon, 23 Nov 2026 18:00:50 +0000",
        "NodeStatusUnknown",
        "Kubelet stopped posting node status.",
    ] {
        assert!(ready.contains(want), "{want:?} in the Ready row:\n{out}");
    }
    // Columns line up under the header (kubectl's table layout).
    let col = |line: &str, word: &str| line.find(word);
    assert_eq!(col(header, "LastTransitionTime"), col(ready, "Mon, 23 Nov 2026 18:00:50"), "{out}");
    assert!(at("MemoryPressure").is_some(), "{out}");
    // Events, oldest first, only this node's.
    let not_ready = out.find("NodeNotReady").unwrap_or(usize::MAX);
    let back = out.find("NodeReady ").or_else(|| out.find("NodeReady\t")).unwrap_or(0);
    assert!(out.contains("Events:\n") && not_ready < back, "events oldest first:\n{out}");
    assert!(out.contains("node-controller") && out.contains("nodelet"), "{out}");
    assert!(out.contains("Node w1 status is now: NodeReady") && !out.contains("w2"), "{out}");
    // A node without conditions or events says so.
    let out = f.ok(&["describe", "node", "w2"]).await?;
    assert!(out.contains("Conditions:             <none>\n"), "{out}");
    assert!(out.contains("Node w2 status is now: NodeNotReady"), "{out}");
    Ok(())
}
