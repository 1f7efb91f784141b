//! Watch semantics: replay from a resourceVersion, selectors entering and leaving, 410 after
//! compaction, bookmarks, streaming initial events, and kube-rs reflectors across compaction and
//! an API server restart.

use anyhow::Result;
use ferry_testkit::{Cluster, RawWatch};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{reflector, watcher, WatchStreamExt};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

const CM: &str = "/api/v1/namespaces/default/configmaps";
const JSON: Option<&str> = Some("application/json");
const MERGE: Option<&str> = Some("application/merge-patch+json");
const T: Duration = Duration::from_secs(10);

fn body(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("serialize")
}

fn rv(v: &Value) -> i64 {
    v["metadata"]["resourceVersion"].as_str().and_then(|s| s.parse().ok()).expect("resourceVersion")
}

fn name(v: &Value) -> String {
    v["object"]["metadata"]["name"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn replay_from_resource_version_matches_final_list() -> Result<()> {
    let c = Cluster::start().await?;
    let (_, list) = c.raw_json("GET", CM, None, Vec::new()).await?;
    let start = rv(&list);
    // Concurrent writers: creates, updates and deletes interleaved.
    let mut tasks = Vec::new();
    for w in 0..4 {
        let client = c.client().await?;
        tasks.push(tokio::spawn(async move {
            for i in 0..15 {
                let n = format!("w{w}-{i}");
                let cm = json!({"metadata": {"name": n}, "data": {"v": "0"}});
                ferry_testkit::raw(&client, "POST", CM, JSON, body(&cm)).await?;
                if i % 3 == 0 {
                    ferry_testkit::raw(
                        &client,
                        "PATCH",
                        &format!("{CM}/{n}"),
                        MERGE,
                        body(&json!({"data": {"v": "1"}})),
                    )
                    .await?;
                }
                if i % 5 == 0 {
                    ferry_testkit::raw(&client, "DELETE", &format!("{CM}/{n}"), None, Vec::new()).await?;
                }
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let (_, end) = c.raw_json("GET", CM, None, Vec::new()).await?;
    let end_rv = rv(&end);

    let mut w = RawWatch::start(&c.client().await?, &format!("{CM}?watch=true&resourceVersion={start}")).await?;
    assert_eq!(w.status, 200);
    let mut state: BTreeMap<String, i64> = BTreeMap::new();
    let mut last = start;
    let events = w.until(T, |ev| rv(&ev["object"]) >= end_rv).await?;
    for ev in &events {
        let r = rv(&ev["object"]);
        assert!(r > last, "revisions strictly increase: {r} after {last}");
        last = r;
        match ev["type"].as_str() {
            Some("ADDED") => assert!(state.insert(name(ev), r).is_none(), "ADDED twice: {ev}"),
            Some("MODIFIED") => assert!(state.insert(name(ev), r).is_some(), "MODIFIED before ADDED: {ev}"),
            Some("DELETED") => assert!(state.remove(&name(ev)).is_some(), "DELETED unknown: {ev}"),
            other => panic!("unexpected event type {other:?}"),
        }
    }
    let listed: BTreeMap<String, i64> = end["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| (i["metadata"]["name"].as_str().unwrap_or_default().to_string(), rv(i)))
        .collect();
    assert_eq!(state, listed, "the replayed watch must end where the list is");
    // 60 creates, 20 updates, 12 deletes.
    assert_eq!(events.len(), 92);
    Ok(())
}

#[tokio::test]
async fn watch_without_resource_version_starts_with_current_state() -> Result<()> {
    let c = Cluster::start().await?;
    for n in ["a", "b"] {
        c.raw_json("POST", CM, JSON, body(&json!({"metadata": {"name": n}}))).await?;
    }
    let mut w = RawWatch::start(&c.client().await?, &format!("{CM}?watch=1")).await?;
    let first = w.until(T, |ev| name(ev) == "b").await?;
    assert_eq!(
        first.iter().map(|e| (e["type"].as_str().unwrap_or(""), name(e))).collect::<Vec<_>>(),
        vec![("ADDED", "a".into()), ("ADDED", "b".into())]
    );
    c.raw_json("DELETE", &format!("{CM}/a"), None, Vec::new()).await?;
    let ev = w.next(T).await?.expect("event");
    assert_eq!((ev["type"].as_str(), name(&ev).as_str()), (Some("DELETED"), "a"));
    Ok(())
}

#[tokio::test]
async fn selectors_turn_changes_into_added_and_deleted() -> Result<()> {
    let c = Cluster::start().await?;
    let client = c.client().await?;
    let mut w = RawWatch::start(&client, &format!("{CM}?watch=true&labelSelector=tier%3Dfront")).await?;
    c.raw_json("POST", CM, JSON, body(&json!({"metadata": {"name": "x", "labels": {"tier": "back"}}}))).await?;
    c.raw_json("PATCH", &format!("{CM}/x"), MERGE, body(&json!({"metadata": {"labels": {"tier": "front"}}}))).await?;
    c.raw_json("PATCH", &format!("{CM}/x"), MERGE, body(&json!({"data": {"k": "v"}}))).await?;
    c.raw_json("PATCH", &format!("{CM}/x"), MERGE, body(&json!({"metadata": {"labels": {"tier": "gone"}}}))).await?;
    let evs = w.until(T, |ev| ev["type"] == "DELETED").await?;
    let types: Vec<&str> = evs.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(types, vec!["ADDED", "MODIFIED", "DELETED"]);
    // The DELETED carries the last matching state at the revision it left.
    assert_eq!(evs[2]["object"]["metadata"]["labels"]["tier"], "front");
    assert!(rv(&evs[2]["object"]) > rv(&evs[1]["object"]));
    Ok(())
}

#[tokio::test]
async fn compacted_resource_version_gets_410_in_stream() -> Result<()> {
    let c = Cluster::start().await?;
    let (_, first) = c.raw_json("POST", CM, JSON, body(&json!({"metadata": {"name": "a"}}))).await?;
    let old = rv(&first);
    for i in 0..5 {
        c.raw_json("PATCH", &format!("{CM}/a"), MERGE, body(&json!({"data": {"i": i.to_string()}}))).await?;
    }
    let mut etcd = c.etcd.client().await?;
    let current = etcd.get("/x", None).await?.header().map(|h| h.revision()).unwrap_or_default();
    etcd.compact(current, None).await?;
    let mut w = RawWatch::start(&c.client().await?, &format!("{CM}?watch=true&resourceVersion={old}")).await?;
    assert_eq!(w.status, 200, "a stale watch starts fine and reports the error in-stream");
    let ev = w.next(T).await?.expect("an ERROR event");
    assert_eq!(ev["type"], "ERROR");
    assert_eq!(ev["object"]["kind"], "Status");
    assert_eq!(ev["object"]["code"], 410);
    assert_eq!(ev["object"]["reason"], "Expired");
    assert!(w.next(T).await?.is_none(), "the stream closes after the error");
    // A client relists and watches from the list's revision: everything is fine again.
    let (_, relist) = c.raw_json("GET", CM, None, Vec::new()).await?;
    assert!(rv(&relist) >= current);
    let mut ok =
        RawWatch::start(&c.client().await?, &format!("{CM}?watch=true&resourceVersion={}", rv(&relist))).await?;
    c.raw_json("PATCH", &format!("{CM}/a"), MERGE, body(&json!({"data": {"i": "x"}}))).await?;
    let ev = ok.next(T).await?.expect("event");
    assert_eq!(ev["type"], "MODIFIED", "{ev}");
    Ok(())
}

#[tokio::test]
async fn bookmarks_and_streaming_initial_events() -> Result<()> {
    let c = Cluster::start_with(|cfg| cfg.rest.bookmark_interval = Duration::from_millis(100)).await?;
    c.raw_json("POST", CM, JSON, body(&json!({"metadata": {"name": "a"}}))).await?;
    let client = c.client().await?;
    let mut w = RawWatch::start(
        &client,
        &format!("{CM}?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true"),
    )
    .await?;
    let evs = w.until(T, |ev| ev["type"] == "BOOKMARK").await?;
    assert_eq!(evs[0]["type"], "ADDED");
    let end = evs.last().expect("bookmark");
    assert_eq!(end["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"], "true");
    assert_eq!((end["object"]["kind"].as_str(), end["object"]["apiVersion"].as_str()), (Some("ConfigMap"), Some("v1")));
    // Later a plain progress bookmark follows once something moves.
    c.raw_json("POST", "/api/v1/namespaces/default/secrets", JSON, body(&json!({"metadata": {"name": "s"}}))).await?;
    let ev = w.until(T, |ev| ev["type"] == "BOOKMARK").await?;
    assert!(ev.last().is_some_and(|b| b["object"]["metadata"].get("annotations").is_none()));

    // sendInitialEvents without resourceVersionMatch is rejected, not ignored.
    let (code, e) = c.raw_json("GET", &format!("{CM}?watch=true&sendInitialEvents=true"), None, Vec::new()).await?;
    assert_eq!(code, 422, "{e}");
    let (code, _) = c.raw_json("GET", &format!("{CM}?sendInitialEvents=true"), None, Vec::new()).await?;
    assert_eq!(code, 422);
    Ok(())
}

async fn converge(store: &reflector::Store<Pod>, want: &[String]) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut have: Vec<String> = store.state().iter().filter_map(|p| p.metadata.name.clone()).collect();
        have.sort();
        if have == want {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("reflector has {have:?}, want {want:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn kube_reflector_converges_across_compaction_and_restart() -> Result<()> {
    let mut c = Cluster::start().await?;
    let pods = "/api/v1/namespaces/default/pods";
    let pod = |n: &str| json!({"metadata": {"name": n}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    c.raw_json("POST", pods, JSON, body(&pod("p0"))).await?;

    let api: kube::Api<Pod> = kube::Api::namespaced(c.client().await?, "default");
    let (reader, writer) = reflector::store();
    let stream = reflector(writer, watcher(api, watcher::Config::default()).default_backoff()).touched_objects();
    let task = tokio::spawn(async move {
        let mut s = std::pin::pin!(stream);
        // Errors (the server is away for a while) are yielded, not fatal: keep polling.
        while s.next().await.is_some() {}
    });
    converge(&reader, &["p0".into()]).await?;

    for n in ["p1", "p2", "p3"] {
        c.raw_json("POST", pods, JSON, body(&pod(n))).await?;
    }
    c.raw_json("DELETE", &format!("{pods}/p0"), None, Vec::new()).await?;
    converge(&reader, &["p1".into(), "p2".into(), "p3".into()]).await?;

    // Restart the API server and compact etcd while it is down: the watcher's resourceVersion
    // is now gone, so it must relist.
    c.stop_server().await;
    let mut etcd = c.etcd.client().await?;
    etcd.put("/unrelated", "x", None).await?;
    let current = etcd.get("/unrelated", None).await?.header().map(|h| h.revision()).unwrap_or_default();
    etcd.compact(current, None).await?;
    c.restart_server().await?;
    c.raw_json("DELETE", &format!("{pods}/p1"), None, Vec::new()).await?;
    c.raw_json("POST", pods, JSON, body(&pod("p4"))).await?;
    converge(&reader, &["p2".into(), "p3".into(), "p4".into()]).await?;
    task.abort();
    Ok(())
}
