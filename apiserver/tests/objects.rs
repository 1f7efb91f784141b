//! Object semantics against a real etcd: create/update conflicts, resource versions,
//! generation, the status split, finalizers, namespaces, subresources and paging.

use anyhow::Result;
use ferry_testkit::Cluster;
use serde_json::{json, Value};

const CM: &str = "/api/v1/namespaces/default/configmaps";
const DEPLOY: &str = "/apis/apps/v1/namespaces/default/deployments";
const JSON: Option<&str> = Some("application/json");
const MERGE: Option<&str> = Some("application/merge-patch+json");

fn body(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("serialize")
}

fn rv(v: &Value) -> i64 {
    v["metadata"]["resourceVersion"].as_str().and_then(|s| s.parse().ok()).expect("resourceVersion")
}

fn deployment(name: &str, replicas: i64) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}}
        }
    })
}

#[tokio::test]
async fn create_update_conflict_and_delete() -> Result<()> {
    let c = Cluster::start().await?;
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": "1"}});
    let (code, created) = c.raw_json("POST", CM, JSON, body(&cm)).await?;
    assert_eq!(code, 201, "{created}");
    assert!(created["metadata"]["uid"].as_str().is_some_and(|u| !u.is_empty()));
    assert!(created["metadata"]["creationTimestamp"].is_string());
    let rv1 = rv(&created);

    let (code, dup) = c.raw_json("POST", CM, JSON, body(&cm)).await?;
    assert_eq!((code, dup["reason"].as_str()), (409, Some("AlreadyExists")), "{dup}");
    assert_eq!(dup["kind"], "Status");

    let mut update = created.clone();
    update["data"]["k"] = json!("2");
    let (code, updated) = c.raw_json("PUT", &format!("{CM}/a"), JSON, body(&update)).await?;
    assert_eq!(code, 200, "{updated}");
    assert!(rv(&updated) > rv1);
    assert_eq!(updated["metadata"]["uid"], created["metadata"]["uid"]);

    // The same stale body again: the object has moved on.
    let (code, stale) = c.raw_json("PUT", &format!("{CM}/a"), JSON, body(&update)).await?;
    assert_eq!((code, stale["reason"].as_str()), (409, Some("Conflict")), "{stale}");
    assert!(stale["message"].as_str().unwrap_or("").contains("the object has been modified"));

    // An update that changes nothing writes nothing.
    let (_, same) = c.raw_json("PUT", &format!("{CM}/a"), JSON, body(&updated)).await?;
    assert_eq!(rv(&same), rv(&updated));

    let (code, status) = c.raw_json("DELETE", &format!("{CM}/a"), None, Vec::new()).await?;
    assert_eq!((code, status["status"].as_str()), (200, Some("Success")), "{status}");
    assert_eq!(status["details"]["uid"], created["metadata"]["uid"]);
    let (code, gone) = c.raw_json("GET", &format!("{CM}/a"), None, Vec::new()).await?;
    assert_eq!((code, gone["reason"].as_str()), (404, Some("NotFound")));
    assert_eq!(gone["message"], "configmaps \"a\" not found");
    Ok(())
}

#[tokio::test]
async fn generation_and_status_split() -> Result<()> {
    let c = Cluster::start().await?;
    let mut d = deployment("web", 2);
    d["status"] = json!({"replicas": 7});
    let (code, created) = c.raw_json("POST", DEPLOY, JSON, body(&d)).await?;
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["metadata"]["generation"], 1);
    assert!(
        created.get("status").is_none() || created["status"].get("replicas").is_none(),
        "status reset on create: {created}"
    );
    // Defaults were applied.
    assert_eq!(created["spec"]["strategy"]["type"], "RollingUpdate");
    assert_eq!(created["spec"]["revisionHistoryLimit"], 10);

    // Spec change bumps generation; status sent on the main endpoint is ignored.
    let patch = json!({"spec": {"replicas": 3}, "status": {"replicas": 99}});
    let (_, patched) = c.raw_json("PATCH", &format!("{DEPLOY}/web"), MERGE, body(&patch)).await?;
    assert_eq!(patched["metadata"]["generation"], 2);
    assert!(patched["status"].get("replicas").is_none(), "{patched}");

    // Label change: no bump. Annotation change on a Deployment: bump (as Kubernetes does).
    let (_, labelled) = c
        .raw_json("PATCH", &format!("{DEPLOY}/web"), MERGE, body(&json!({"metadata": {"labels": {"x": "y"}}})))
        .await?;
    assert_eq!(labelled["metadata"]["generation"], 2);
    let (_, annotated) = c
        .raw_json("PATCH", &format!("{DEPLOY}/web"), MERGE, body(&json!({"metadata": {"annotations": {"x": "y"}}})))
        .await?;
    assert_eq!(annotated["metadata"]["generation"], 3);

    // /status writes status only, and never bump generation.
    let mut st = annotated.clone();
    st["spec"]["replicas"] = json!(50);
    st["status"] = json!({"replicas": 3, "observedGeneration": 3});
    let (code, after) = c.raw_json("PUT", &format!("{DEPLOY}/web/status"), JSON, body(&st)).await?;
    assert_eq!(code, 200, "{after}");
    assert_eq!(after["status"]["replicas"], 3);
    assert_eq!(after["spec"]["replicas"], 3);
    assert_eq!(after["metadata"]["generation"], 3);
    let (_, st2) = c
        .raw_json("PATCH", &format!("{DEPLOY}/web/status"), MERGE, body(&json!({"status": {"readyReplicas": 1}})))
        .await?;
    assert_eq!(st2["status"]["readyReplicas"], 1);
    assert_eq!(st2["status"]["replicas"], 3);
    Ok(())
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() -> Result<()> {
    let c = Cluster::start().await?;
    let cm = json!({"metadata": {"name": "f", "finalizers": ["example.com/hold"]}, "data": {}});
    let (code, _) = c.raw_json("POST", CM, JSON, body(&cm)).await?;
    assert_eq!(code, 201);
    let (code, deleting) = c.raw_json("DELETE", &format!("{CM}/f"), None, Vec::new()).await?;
    assert_eq!(code, 200);
    assert!(deleting["metadata"]["deletionTimestamp"].is_string(), "{deleting}");
    let (code, still) = c.raw_json("GET", &format!("{CM}/f"), None, Vec::new()).await?;
    assert_eq!(code, 200, "object must stay while finalizers remain");
    // No new finalizers on a terminating object.
    let add = json!({"metadata": {"finalizers": ["example.com/hold", "example.com/more"]}});
    let (code, refused) = c.raw_json("PATCH", &format!("{CM}/f"), MERGE, body(&add)).await?;
    assert_eq!(code, 422, "{refused}");
    // Removing the last finalizer deletes it.
    let json_patch = json!([{"op": "test", "path": "/metadata/finalizers/0", "value": "example.com/hold"}, {"op": "remove", "path": "/metadata/finalizers/0"}]);
    let (code, last) =
        c.raw_json("PATCH", &format!("{CM}/f"), Some("application/json-patch+json"), body(&json_patch)).await?;
    assert_eq!(code, 200, "{last}");
    assert!(rv(&last) > rv(&still));
    let (code, _) = c.raw_json("GET", &format!("{CM}/f"), None, Vec::new()).await?;
    assert_eq!(code, 404);
    Ok(())
}

#[tokio::test]
async fn propagation_policies_add_gc_finalizers() -> Result<()> {
    let c = Cluster::start().await?;
    for (name, policy, finalizer) in [("fg", "Foreground", "foregroundDeletion"), ("or", "Orphan", "orphan")] {
        let (code, _) = c.raw_json("POST", DEPLOY, JSON, body(&deployment(name, 1))).await?;
        assert_eq!(code, 201);
        let opts = json!({"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": policy});
        let (code, obj) = c.raw_json("DELETE", &format!("{DEPLOY}/{name}"), JSON, body(&opts)).await?;
        assert_eq!(code, 200, "{obj}");
        assert_eq!(obj["metadata"]["finalizers"], json!([finalizer]), "{obj}");
        assert!(obj["metadata"]["deletionTimestamp"].is_string());
    }
    // Preconditions.
    let (_, d) = c.raw_json("POST", DEPLOY, JSON, body(&deployment("pre", 1))).await?;
    let opts = json!({"preconditions": {"uid": "not-the-uid"}});
    let (code, e) = c.raw_json("DELETE", &format!("{DEPLOY}/pre"), JSON, body(&opts)).await?;
    assert_eq!(code, 409, "{e}");
    let opts =
        json!({"preconditions": {"uid": d["metadata"]["uid"], "resourceVersion": d["metadata"]["resourceVersion"]}});
    let (code, _) = c.raw_json("DELETE", &format!("{DEPLOY}/pre"), JSON, body(&opts)).await?;
    assert_eq!(code, 200);
    Ok(())
}

#[tokio::test]
async fn namespaces_exist_and_terminate() -> Result<()> {
    let c = Cluster::start().await?;
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let (code, v) = c.raw_json("GET", &format!("/api/v1/namespaces/{ns}"), None, Vec::new()).await?;
        assert_eq!((code, v["status"]["phase"].as_str()), (200, Some("Active")), "{ns}: {v}");
    }
    let cm = json!({"metadata": {"name": "x"}});
    let (code, e) = c.raw_json("POST", "/api/v1/namespaces/nope/configmaps", JSON, body(&cm)).await?;
    assert_eq!((code, e["message"].as_str()), (404, Some("namespaces \"nope\" not found")), "{e}");

    let (code, _) =
        c.raw_json("POST", "/api/v1/namespaces", JSON, body(&json!({"metadata": {"name": "team"}}))).await?;
    assert_eq!(code, 201);
    let (code, ns) = c.raw_json("DELETE", "/api/v1/namespaces/team", None, Vec::new()).await?;
    assert_eq!(code, 200);
    assert_eq!(ns["status"]["phase"], "Terminating", "{ns}");
    let (code, e) = c.raw_json("POST", "/api/v1/namespaces/team/configmaps", JSON, body(&cm)).await?;
    assert_eq!(code, 403, "{e}");
    assert!(e["message"].as_str().unwrap_or("").contains("because it is being terminated"));
    // The namespace controller's last step: clear spec.finalizers through /finalize.
    let mut fin = ns.clone();
    fin["spec"]["finalizers"] = json!([]);
    let (code, _) = c.raw_json("PUT", "/api/v1/namespaces/team/finalize", JSON, body(&fin)).await?;
    assert_eq!(code, 200);
    let (code, _) = c.raw_json("GET", "/api/v1/namespaces/team", None, Vec::new()).await?;
    assert_eq!(code, 404);
    Ok(())
}

#[tokio::test]
async fn scale_and_binding_subresources() -> Result<()> {
    let c = Cluster::start().await?;
    c.raw_json("POST", DEPLOY, JSON, body(&deployment("web", 2))).await?;
    let (code, scale) = c.raw_json("GET", &format!("{DEPLOY}/web/scale"), None, Vec::new()).await?;
    assert_eq!(code, 200);
    assert_eq!((scale["kind"].as_str(), scale["apiVersion"].as_str()), (Some("Scale"), Some("autoscaling/v1")));
    assert_eq!(scale["spec"]["replicas"], 2);
    assert_eq!(scale["status"]["selector"], "app=web");
    let (code, scaled) =
        c.raw_json("PATCH", &format!("{DEPLOY}/web/scale"), MERGE, body(&json!({"spec": {"replicas": 5}}))).await?;
    assert_eq!((code, scaled["spec"]["replicas"].as_i64()), (200, Some(5)));
    let (code, e) =
        c.raw_json("PATCH", &format!("{DEPLOY}/web/scale"), MERGE, body(&json!({"spec": {"replicas": -1}}))).await?;
    assert_eq!(code, 422, "{e}");
    let (_, d) = c.raw_json("GET", &format!("{DEPLOY}/web"), None, Vec::new()).await?;
    assert_eq!((d["spec"]["replicas"].as_i64(), d["metadata"]["generation"].as_i64()), (Some(5), Some(2)));

    let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    let (code, created) = c.raw_json("POST", "/api/v1/namespaces/default/pods", JSON, body(&pod)).await?;
    assert_eq!(code, 201);
    assert_eq!(created["status"]["phase"], "Pending");
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"}, "target": {"kind": "Node", "name": "n1"}});
    let (code, _) = c.raw_json("POST", "/api/v1/namespaces/default/pods/p/binding", JSON, body(&binding)).await?;
    assert_eq!(code, 201);
    let (code, e) = c.raw_json("POST", "/api/v1/namespaces/default/pods/p/binding", JSON, body(&binding)).await?;
    assert_eq!(code, 409, "{e}");
    let (_, bound) = c.raw_json("GET", "/api/v1/namespaces/default/pods/p", None, Vec::new()).await?;
    assert_eq!(bound["spec"]["nodeName"], "n1");
    assert!(bound["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "PodScheduled" && c["status"] == "True")));
    let (_, by_node) = c.raw_json("GET", "/api/v1/pods?fieldSelector=spec.nodeName%3Dn1", None, Vec::new()).await?;
    assert_eq!(by_node["items"].as_array().map(Vec::len), Some(1));
    Ok(())
}

#[tokio::test]
async fn paging_is_consistent_while_objects_change() -> Result<()> {
    let c = Cluster::start().await?;
    for i in 0..25 {
        let cm = json!({"metadata": {"name": format!("cm-{i:02}"), "labels": {"parity": if i % 2 == 0 { "even" } else { "odd" }}}});
        let (code, v) = c.raw_json("POST", CM, JSON, body(&cm)).await?;
        assert_eq!(code, 201, "{v}");
    }
    let (_, first) = c.raw_json("GET", &format!("{CM}?limit=10"), None, Vec::new()).await?;
    let list_rv = rv(&first);
    let mut names: Vec<String> = first["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["metadata"]["name"].as_str().map(String::from))
        .collect();
    let mut token = first["metadata"]["continue"].as_str().map(String::from);
    assert!(token.is_some(), "{first}");
    // Changes after the first page must not show up in later pages.
    c.raw_json("POST", CM, JSON, body(&json!({"metadata": {"name": "cm-zz-late"}}))).await?;
    c.raw_json("DELETE", &format!("{CM}/cm-24"), None, Vec::new()).await?;
    while let Some(t) = token {
        let (code, page) = c.raw_json("GET", &format!("{CM}?limit=10&continue={t}"), None, Vec::new()).await?;
        assert_eq!(code, 200, "{page}");
        assert_eq!(rv(&page), list_rv, "every page reports the first page's revision");
        names.extend(
            page["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i["metadata"]["name"].as_str().map(String::from)),
        );
        token = page["metadata"]["continue"].as_str().filter(|s| !s.is_empty()).map(String::from);
    }
    let expected: Vec<String> = (0..25).map(|i| format!("cm-{i:02}")).collect();
    assert_eq!(names, expected);

    let (_, even) = c.raw_json("GET", &format!("{CM}?labelSelector=parity%3Deven&limit=5"), None, Vec::new()).await?;
    assert_eq!(even["items"].as_array().map(Vec::len), Some(5));
    let (_, notin) = c.raw_json("GET", &format!("{CM}?labelSelector=parity+notin+(even)"), None, Vec::new()).await?;
    // 12 odd ones plus the unlabelled late one.
    assert_eq!(notin["items"].as_array().map(Vec::len), Some(13), "{notin}");
    let (_, exists) = c.raw_json("GET", &format!("{CM}?labelSelector=parity"), None, Vec::new()).await?;
    assert_eq!(exists["items"].as_array().map(Vec::len), Some(24));
    let (_, by_name) =
        c.raw_json("GET", &format!("{CM}?fieldSelector=metadata.name%3Dcm-03"), None, Vec::new()).await?;
    assert_eq!(by_name["items"][0]["metadata"]["name"], "cm-03");
    let (_, all_ns) =
        c.raw_json("GET", "/api/v1/configmaps?fieldSelector=metadata.namespace%21%3Ddefault", None, Vec::new()).await?;
    assert_eq!(all_ns["items"].as_array().map(Vec::len), Some(0));
    assert_eq!(all_ns["kind"], "ConfigMapList");
    Ok(())
}

#[tokio::test]
async fn generate_name_and_dry_run() -> Result<()> {
    let c = Cluster::start().await?;
    let cm = json!({"metadata": {"generateName": "gen-"}});
    let (code, a) = c.raw_json("POST", CM, JSON, body(&cm)).await?;
    assert_eq!(code, 201);
    let name = a["metadata"]["name"].as_str().unwrap_or_default().to_string();
    assert!(name.starts_with("gen-") && name.len() == 9, "{name}");
    let (code, dry) =
        c.raw_json("POST", &format!("{CM}?dryRun=All"), JSON, body(&json!({"metadata": {"name": "dry"}}))).await?;
    assert_eq!(code, 201, "{dry}");
    let (code, _) = c.raw_json("GET", &format!("{CM}/dry"), None, Vec::new()).await?;
    assert_eq!(code, 404, "dry run must not store anything");
    Ok(())
}

#[tokio::test]
async fn events_are_served_in_both_groups() -> Result<()> {
    let c = Cluster::start().await?;
    let ev = json!({
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": "e1", "namespace": "default"},
        "eventTime": "2026-01-01T00:00:00.000000Z", "reportingController": "ferry/test", "reportingInstance": "t",
        "action": "Testing", "reason": "Tested", "type": "Normal", "note": "hello",
        "regarding": {"kind": "Pod", "name": "p", "namespace": "default"}
    });
    let (code, created) =
        c.raw_json("POST", "/apis/events.k8s.io/v1/namespaces/default/events", JSON, body(&ev)).await?;
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["note"], "hello");
    let (_, core) = c
        .raw_json("GET", "/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3Dp", None, Vec::new())
        .await?;
    assert_eq!(core["items"][0]["message"], "hello", "{core}");
    assert_eq!(core["items"][0]["involvedObject"]["kind"], "Pod");
    Ok(())
}

#[tokio::test]
async fn two_api_servers_share_one_etcd() -> Result<()> {
    let c = Cluster::start().await?;
    let first = c.server.as_ref().map(|s| s.addr).expect("running");
    let mut config = c.config.clone();
    config.secure_port = 0;
    let second = ferry_apiserver::start(config).await?;
    let kc = kube::config::Kubeconfig::read_from(c.kubeconfig())?;
    let mut kconf = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    kconf.cluster_url = format!("https://127.0.0.1:{}", first.port()).parse()?;
    let one = kube::Client::try_from(kconf.clone())?;
    kconf.cluster_url = format!("https://127.0.0.1:{}", second.addr.port()).parse()?;
    let two = kube::Client::try_from(kconf)?;

    let mut w = ferry_testkit::RawWatch::start(&two, &format!("{CM}?watch=true")).await?;
    let cm = json!({"metadata": {"name": "shared"}, "data": {"v": "1"}});
    let (code, _) = ferry_testkit::raw(&one, "POST", CM, JSON, body(&cm)).await?;
    assert_eq!(code, 201);
    let ev = w.next(std::time::Duration::from_secs(10)).await?.expect("event");
    assert_eq!((ev["type"].as_str(), ev["object"]["metadata"]["name"].as_str()), (Some("ADDED"), Some("shared")));
    // A write through the second server is seen by the first, and conflicts span both.
    let (_, got) = ferry_testkit::raw(&two, "GET", &format!("{CM}/shared"), None, Vec::new()).await?;
    let got: Value = serde_json::from_slice(&got)?;
    let mut a = got.clone();
    a["data"]["v"] = json!("2");
    let (code, _) = ferry_testkit::raw(&two, "PUT", &format!("{CM}/shared"), JSON, body(&a)).await?;
    assert_eq!(code, 200);
    let mut b = got.clone();
    b["data"]["v"] = json!("3");
    let (code, _) = ferry_testkit::raw(&one, "PUT", &format!("{CM}/shared"), JSON, body(&b)).await?;
    assert_eq!(code, 409, "a stale resourceVersion conflicts whichever server took the first write");
    let (_, now) = ferry_testkit::raw(&one, "GET", &format!("{CM}/shared"), None, Vec::new()).await?;
    let now: Value = serde_json::from_slice(&now)?;
    assert_eq!(now["data"]["v"], "2");
    second.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn strategic_merge_patch_merges_containers_by_name() -> Result<()> {
    let c = Cluster::start().await?;
    let mut d = deployment("smp", 1);
    d["spec"]["template"]["spec"]["containers"] = json!([
        {"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"}]},
        {"name": "sidecar", "image": "side:1"}
    ]);
    let (code, _) = c.raw_json("POST", DEPLOY, JSON, body(&d)).await?;
    assert_eq!(code, 201);
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "app:2", "env": [{"name": "B", "value": "2"}]}]}}}});
    let smp = Some("application/strategic-merge-patch+json");
    let (code, patched) = c.raw_json("PATCH", &format!("{DEPLOY}/smp"), smp, body(&patch)).await?;
    assert_eq!(code, 200, "{patched}");
    let containers = &patched["spec"]["template"]["spec"]["containers"];
    assert_eq!(containers.as_array().map(Vec::len), Some(2), "{containers}");
    let app = containers.as_array().into_iter().flatten().find(|c| c["name"] == "app").cloned().unwrap_or_default();
    assert_eq!(app["image"], "app:2");
    let env: Vec<&str> = app["env"].as_array().into_iter().flatten().filter_map(|e| e["name"].as_str()).collect();
    assert_eq!(env.len(), 2, "env merged by name: {env:?}");
    assert_eq!(patched["metadata"]["generation"], 2);
    let (code, _) = c.raw_json("PATCH", &format!("{DEPLOY}/smp"), smp, b"[1]".to_vec()).await?;
    assert_eq!(code, 400);
    Ok(())
}

#[tokio::test]
async fn table_output_for_kubectl() -> Result<()> {
    let c = Cluster::start().await?;
    c.raw_json("POST", DEPLOY, JSON, body(&deployment("web", 3))).await?;
    let accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
    let (code, t) = c.get_accept(DEPLOY, accept).await?;
    assert_eq!(code, 200, "{t}");
    assert_eq!((t["kind"].as_str(), t["apiVersion"].as_str()), (Some("Table"), Some("meta.k8s.io/v1")));
    let names: Vec<&str> =
        t["columnDefinitions"].as_array().into_iter().flatten().filter_map(|c| c["name"].as_str()).collect();
    assert_eq!(&names[..5], &["Name", "Ready", "Up-to-date", "Available", "Age"]);
    assert_eq!(t["rows"][0]["cells"][0], "web");
    assert_eq!(t["rows"][0]["cells"][1], "0/3");
    assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    assert_eq!(t["rows"][0]["object"]["metadata"]["name"], "web");
    let (code, one) = c.get_accept(&format!("{DEPLOY}/web"), accept).await?;
    assert_eq!((code, one["rows"].as_array().map(Vec::len)), (200, Some(1)));
    // Without the Table Accept header the same request is a plain list.
    let (_, plain) = c.get_accept(DEPLOY, "application/json").await?;
    assert_eq!(plain["kind"], "DeploymentList");
    Ok(())
}

#[tokio::test]
async fn delete_collection_by_selector() -> Result<()> {
    let c = Cluster::start().await?;
    for (n, tier) in [("a", "web"), ("b", "web"), ("c", "db")] {
        c.raw_json("POST", CM, JSON, body(&json!({"metadata": {"name": n, "labels": {"tier": tier}}}))).await?;
    }
    let (code, deleted) = c.raw_json("DELETE", &format!("{CM}?labelSelector=tier%3Dweb"), None, Vec::new()).await?;
    assert_eq!(code, 200, "{deleted}");
    assert_eq!(deleted["kind"], "ConfigMapList");
    let names: Vec<&str> =
        deleted["items"].as_array().into_iter().flatten().filter_map(|i| i["metadata"]["name"].as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    let (_, left) = c.raw_json("GET", CM, None, Vec::new()).await?;
    let names: Vec<&str> =
        left["items"].as_array().into_iter().flatten().filter_map(|i| i["metadata"]["name"].as_str()).collect();
    assert_eq!(names, ["c"]);
    Ok(())
}

#[tokio::test]
async fn events_expire_after_their_ttl() -> Result<()> {
    use k8s_openapi::api::core::v1::Event;
    let c =
        ferry_testkit::Cluster::start_with(|cfg| cfg.rest.event_ttl = Some(std::time::Duration::from_secs(2))).await?;
    let client = c.client().await?;
    let events: kube::Api<Event> = kube::Api::namespaced(client.clone(), "default");
    let cms: kube::Api<k8s_openapi::api::core::v1::ConfigMap> = kube::Api::namespaced(client, "default");
    let ev: Event = serde_json::from_value(serde_json::json!({"metadata": {"name": "e1"},
        "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"}, "reason": "Test", "message": "m"}))?;
    events.create(&Default::default(), &ev).await?;
    let cm: k8s_openapi::api::core::v1::ConfigMap =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "stays"}}))?;
    cms.create(&Default::default(), &cm).await?;
    assert!(events.get_opt("e1").await?.is_some());
    // etcd expires the event's lease; the watch cache and every reader then see it gone.
    let mut gone = false;
    for _ in 0..100 {
        if events.get_opt("e1").await?.is_none() {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(gone, "the event outlived its TTL by more than 8 s");
    assert!(events.list(&Default::default()).await?.items.is_empty());
    assert!(cms.get_opt("stays").await?.is_some(), "other kinds do not expire");
    Ok(())
}
