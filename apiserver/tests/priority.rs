//! scheduling.k8s.io/v1 PriorityClass and pod priority admission, as Kubernetes does them:
//! built-in system classes, validation, a single globalDefault, and spec.priority resolved from
//! spec.priorityClassName on pod create.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use ferry_testkit::Cluster;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{json, Value};

const JSON: Option<&str> = Some("application/json");
const CLASSES: &str = "/apis/scheduling.k8s.io/v1/priorityclasses";
const PODS: &str = "/api/v1/namespaces/default/pods";

fn pod(name: &str, spec: Value) -> Vec<u8> {
    let mut spec = spec;
    spec["containers"] = json!([{"name": "c", "image": "busybox"}]);
    serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}))
        .unwrap_or_default()
}

fn class(name: &str, extra: Value) -> Vec<u8> {
    let mut v = json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": name}});
    if let (Value::Object(v), Value::Object(extra)) = (&mut v, extra) {
        v.extend(extra);
    }
    serde_json::to_vec(&v).unwrap_or_default()
}

#[tokio::test]
async fn priority_classes_and_admission() -> Result<()> {
    let c = Cluster::start().await?;
    let client = c.client().await?;
    let classes: Api<PriorityClass> = Api::all(client.clone());

    // Built in, and protected.
    for (name, value) in [("system-cluster-critical", 2_000_000_000), ("system-node-critical", 2_000_001_000)] {
        let pc = classes.get(name).await.with_context(|| format!("{name} exists"))?;
        ensure!(pc.value == Some(value) && pc.preemption_policy.as_deref() == Some("PreemptLowerPriority"));
    }
    let (code, s) = c.raw_json("DELETE", &format!("{CLASSES}/system-node-critical"), None, Vec::new()).await?;
    ensure!(code == 403, "{s}");
    ensure!(
        s["message"]
            == "priorityclasses.scheduling.k8s.io \"system-node-critical\" is forbidden: this is a system priority class and cannot be deleted",
        "{s}"
    );

    // Validation.
    let (code, s) = c.raw_json("POST", CLASSES, JSON, class("too-high", json!({"value": 1_000_000_001}))).await?;
    ensure!(code == 422 && s["details"]["causes"][0]["field"] == "value", "{s}");
    ensure!(
        s["message"]
            .as_str()
            .is_some_and(|m| m.contains("maximum allowed value of a user defined priority is 1000000000")),
        "{s}"
    );
    let (code, s) = c.raw_json("POST", CLASSES, JSON, class("system-mine", json!({"value": 5}))).await?;
    ensure!(code == 422 && s["details"]["causes"][0]["field"] == "metadata.name", "{s}");
    let (code, s) =
        c.raw_json("POST", CLASSES, JSON, class("odd", json!({"value": 5, "preemptionPolicy": "Sometimes"}))).await?;
    ensure!(code == 422 && s["details"]["causes"][0]["field"] == "preemptionPolicy", "{s}");
    let (code, s) = c.raw_json("POST", CLASSES, JSON, class("high", json!({"value": 1000}))).await?;
    ensure!(code == 201 && s["preemptionPolicy"] == "PreemptLowerPriority", "{s}");
    let (code, s) = c
        .raw_json(
            "PATCH",
            &format!("{CLASSES}/high"),
            Some("application/merge-patch+json"),
            serde_json::to_vec(&json!({"value": 2000}))?,
        )
        .await?;
    ensure!(code == 422 && s["details"]["causes"][0]["field"] == "value", "value is immutable: {s}");
    let (code, _) = c
        .raw_json(
            "PATCH",
            &format!("{CLASSES}/high"),
            Some("application/merge-patch+json"),
            serde_json::to_vec(&json!({"description": "for important work"}))?,
        )
        .await?;
    ensure!(code == 200);
    let (code, _) =
        c.raw_json("POST", CLASSES, JSON, class("polite", json!({"value": 50, "preemptionPolicy": "Never"}))).await?;
    ensure!(code == 201);

    // Table columns, as kubectl prints them.
    let (code, t) = c.get_accept(&format!("{CLASSES}/high"), "application/json;as=Table;v=v1;g=meta.k8s.io").await?;
    ensure!(code == 200, "{t}");
    let names: Vec<&str> =
        t["columnDefinitions"].as_array().into_iter().flatten().filter_map(|c| c["name"].as_str()).collect();
    ensure!(names == ["Name", "Value", "Global-Default", "Age", "PreemptionPolicy"], "{names:?}");
    ensure!(t["rows"][0]["cells"][1] == 1000 && t["rows"][0]["cells"][2] == false, "{t}");

    // Pods: the class resolves to priority and preemption policy; no class means 0.
    let (code, p) = c.raw_json("POST", PODS, JSON, pod("important", json!({"priorityClassName": "high"}))).await?;
    ensure!(
        code == 201 && p["spec"]["priority"] == 1000 && p["spec"]["preemptionPolicy"] == "PreemptLowerPriority",
        "{p}"
    );
    let (code, p) = c.raw_json("POST", PODS, JSON, pod("waits", json!({"priorityClassName": "polite"}))).await?;
    ensure!(code == 201 && p["spec"]["priority"] == 50 && p["spec"]["preemptionPolicy"] == "Never", "{p}");
    let (code, p) = c.raw_json("POST", PODS, JSON, pod("plain", json!({}))).await?;
    ensure!(code == 201 && p["spec"]["priority"] == 0 && p["spec"].get("priorityClassName").is_none(), "{p}");
    let (code, p) =
        c.raw_json("POST", PODS, JSON, pod("critical", json!({"priorityClassName": "system-node-critical"}))).await?;
    ensure!(code == 201 && p["spec"]["priority"] == 2_000_001_000, "{p}");
    let (code, p) =
        c.raw_json("POST", PODS, JSON, pod("agrees", json!({"priorityClassName": "high", "priority": 1000}))).await?;
    ensure!(code == 201, "a matching priority is accepted: {p}");

    // Refusals, with Kubernetes' messages.
    let (code, s) = c.raw_json("POST", PODS, JSON, pod("lost", json!({"priorityClassName": "nope"}))).await?;
    ensure!(code == 403 && s["reason"] == "Forbidden", "{s}");
    ensure!(s["message"] == "pods \"lost\" is forbidden: no PriorityClass with name nope was found", "{s}");
    let (code, s) =
        c.raw_json("POST", PODS, JSON, pod("liar", json!({"priorityClassName": "high", "priority": 5}))).await?;
    ensure!(code == 403, "{s}");
    ensure!(
        s["message"]
            == "pods \"liar\" is forbidden: the integer value of priority (5) must not be provided in pod spec; priority admission controller computed 1000 from the given PriorityClass name",
        "{s}"
    );
    let (code, s) = c.raw_json("POST", PODS, JSON, pod("self-made", json!({"priority": 7}))).await?;
    ensure!(code == 403 && s["message"].as_str().is_some_and(|m| m.contains("computed 0")), "{s}");
    let (code, s) = c
        .raw_json(
            "POST",
            PODS,
            JSON,
            pod("pushy", json!({"priorityClassName": "polite", "preemptionPolicy": "PreemptLowerPriority"})),
        )
        .await?;
    ensure!(code == 403, "{s}");
    ensure!(
        s["message"].as_str().is_some_and(|m| m.ends_with("the string value of PreemptionPolicy (PreemptLowerPriority) must not be provided in pod spec; priority admission controller computed Never from the given PriorityClass name")),
        "{s}"
    );

    // Updates keep the admitted priority (a client that leaves it out does not clear it).
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut important = pods.get("important").await?;
    if let Some(spec) = important.spec.as_mut() {
        spec.priority = None;
        spec.preemption_policy = None;
    }
    important.metadata.labels = Some([("touched".to_string(), "yes".to_string())].into());
    let updated = pods.replace("important", &PostParams::default(), &important).await?;
    ensure!(updated.spec.and_then(|s| s.priority) == Some(1000));

    // One globalDefault: it applies to pods naming no class; a second one is refused.
    let (code, s) =
        c.raw_json("POST", CLASSES, JSON, class("normal", json!({"value": 10, "globalDefault": true}))).await?;
    ensure!(code == 201, "{s}");
    let (code, s) =
        c.raw_json("POST", CLASSES, JSON, class("other", json!({"value": 20, "globalDefault": true}))).await?;
    ensure!(code == 403, "{s}");
    ensure!(
        s["message"]
            == "priorityclasses.scheduling.k8s.io \"other\" is forbidden: PriorityClass normal is already marked as default. Only one default can exist",
        "{s}"
    );
    let (code, s) = c
        .raw_json(
            "PATCH",
            &format!("{CLASSES}/high"),
            Some("application/merge-patch+json"),
            serde_json::to_vec(&json!({"globalDefault": true}))?,
        )
        .await?;
    ensure!(code == 403, "marking a second default on update: {s}");
    // The default is read from the watch cache, like upstream's lister: allow it to catch up.
    let mut got = Value::Null;
    for i in 0..50 {
        let name = format!("defaulted-{i}");
        let (code, p) = c.raw_json("POST", PODS, JSON, pod(&name, json!({}))).await?;
        ensure!(code == 201, "{p}");
        got = p;
        if got["spec"]["priority"] == 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ensure!(got["spec"]["priority"] == 10 && got["spec"]["priorityClassName"] == "normal", "{got}");
    classes.delete("normal", &DeleteParams::default()).await?;
    Ok(())
}
