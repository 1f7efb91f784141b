//! Integration: API server + etcd + the controllers in-process, no nodelet. A small "fake
//! kubelet" task in this test marks new pods Ready through the pods/status subresource.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{bail, Result};
use ferry_controllers::{Config, LeaderConfig};
use ferry_testkit::Cluster;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// Marks every pod Ready (and Running) shortly after it appears: the test's stand-in kubelet.
fn fake_kubelet(client: kube::Client, ns: &str, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    let api: Api<Pod> = Api::namespaced(client, ns);
    tokio::spawn(async move {
        loop {
            if stop.is_cancelled() {
                return;
            }
            if let Ok(list) = api.list(&ListParams::default()).await {
                for p in list.items {
                    let ready = p
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                    if ready || p.metadata.deletion_timestamp.is_some() {
                        continue;
                    }
                    let now = jiff::Timestamp::now().to_string();
                    let status = json!({"status": {"phase": "Running", "conditions": [
                        {"type": "Ready", "status": "True", "lastTransitionTime": now}]}});
                    let _ = api.patch_status(&p.name_any(), &PatchParams::default(), &Patch::Merge(&status)).await;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

fn start_controllers(client: kube::Client, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    let mut leader = LeaderConfig::new("test");
    leader.lease_duration = Duration::from_secs(3);
    leader.renew_deadline = Duration::from_secs(2);
    leader.retry_period = Duration::from_millis(200);
    tokio::spawn(async move {
        let _ = ferry_controllers::run(client, Config { leader, concurrency: 4 }, stop).await;
    })
}

fn deployment(
    name: &str,
    replicas: i32,
    surge: serde_json::Value,
    unavailable: serde_json::Value,
) -> Result<Deployment> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}},
            "template": {"metadata": {"labels": {"app": name}},
                         "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}
        }
    }))?)
}

async fn wait_complete(api: &Api<Deployment>, name: &str, timeout: Duration) -> Result<Deployment> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let d = api.get(name).await?;
        let want = d.spec.replicas.unwrap_or(1);
        if let Some(s) = &d.status {
            let progressed = s.conditions.iter().flatten().any(|c| {
                c.type_.as_deref() == Some("Progressing") && c.reason.as_deref() == Some("NewReplicaSetAvailable")
            });
            if s.observed_generation >= d.metadata.generation
                && s.updated_replicas == Some(want)
                && s.replicas == Some(want)
                && s.available_replicas == Some(want)
                && progressed
            {
                return Ok(d);
            }
        }
        if tokio::time::Instant::now() > deadline {
            bail!("deployment {name} did not complete: {:?}", d.status);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Roll a new template out and check every pod watch event against the bounds.
async fn rollout_with_bounds(surge: i32, unavailable: i32, replicas: i32) -> Result<()> {
    let cluster = Cluster::start().await?;
    let client = cluster.client().await?;
    let stop = CancellationToken::new();
    let _kubelet = fake_kubelet(client.clone(), "default", stop.clone());
    let _ctrl = start_controllers(client.clone(), stop.clone());
    let api: Api<Deployment> = Api::namespaced(client.clone(), "default");
    api.create(&PostParams::default(), &deployment("web", replicas, json!(surge), json!(unavailable))?).await?;
    wait_complete(&api, "web", Duration::from_secs(30)).await?;

    // Watch pods from now on and track ready/total at every event.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let list = pods.list(&ListParams::default()).await?;
    let mut state: HashMap<String, Pod> = list.items.into_iter().map(|p| (p.name_any(), p)).collect();
    let rv = list.metadata.resource_version.unwrap_or_default();
    let mut stream = pods.watch(&WatchParams::default().timeout(60), &rv).await?.boxed();
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox:2"}]}}}});
    api.patch("web", &PatchParams::default(), &Patch::Strategic(&patch)).await?;
    let (min_ready, max_total) = (replicas - unavailable, replicas + surge);
    let mut events = 0;
    let done = async {
        while let Some(ev) = stream.next().await {
            match ev? {
                WatchEvent::Added(p) | WatchEvent::Modified(p) => {
                    state.insert(p.name_any(), p);
                }
                WatchEvent::Deleted(p) => {
                    state.remove(&p.name_any());
                }
                _ => continue,
            }
            events += 1;
            let live: Vec<&Pod> = state.values().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
            let ready = live.iter().filter(|p| pod_ready(p)).count();
            let total = state.len();
            assert!(ready as i32 >= min_ready, "ready pods {ready} < {min_ready} after event {events}");
            assert!(total as i32 <= max_total, "total pods {total} > {max_total} after event {events}");
            let updated = live
                .iter()
                .filter(|p| p.spec.as_ref().is_some_and(|s| s.containers[0].image.as_deref() == Some("busybox:2")))
                .count();
            if updated as i32 == replicas && total as i32 == replicas && ready as i32 == replicas {
                return Ok::<(), anyhow::Error>(());
            }
        }
        bail!("watch ended before the rollout finished")
    };
    tokio::time::timeout(Duration::from_secs(60), done).await??;
    let d = wait_complete(&api, "web", Duration::from_secs(30)).await?;
    assert_eq!(d.annotations().get("deployment.kubernetes.io/revision").map(String::as_str), Some("2"));
    let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let list = rss.list(&ListParams::default()).await?;
    assert_eq!(list.items.len(), 2, "one old and one new ReplicaSet");
    assert!(events > 0);
    stop.cancel();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_surge_one_unavailable_zero_holds_bounds_at_every_event() -> Result<()> {
    rollout_with_bounds(1, 0, 5).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_surge_zero_unavailable_one_holds_bounds_at_every_event() -> Result<()> {
    rollout_with_bounds(0, 1, 4).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_adopt_release_and_cascade() -> Result<()> {
    let cluster = Cluster::start().await?;
    let client = cluster.client().await?;
    let stop = CancellationToken::new();
    let _kubelet = fake_kubelet(client.clone(), "default", stop.clone());
    let _ctrl = start_controllers(client.clone(), stop.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    // An orphan matching a ReplicaSet's selector is adopted, and counts toward its replicas.
    let orphan: Pod = serde_json::from_value(json!({"metadata": {"name": "orphan", "labels": {"app": "solo"}},
        "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}))?;
    pods.create(&PostParams::default(), &orphan).await?;
    let rs: ReplicaSet = serde_json::from_value(json!({"metadata": {"name": "solo"}, "spec": {"replicas": 2,
        "selector": {"matchLabels": {"app": "solo"}},
        "template": {"metadata": {"labels": {"app": "solo"}}, "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}}}))?;
    let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    rss.create(&PostParams::default(), &rs).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let solo = pods.list(&ListParams::default().labels("app=solo")).await?.items;
        let adopted = pods.get("orphan").await?.owner_references().iter().any(|r| r.name == "solo");
        let status = rss.get("solo").await?.status.and_then(|s| s.ready_replicas);
        if adopted && solo.len() == 2 && status == Some(2) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "orphan not adopted: {} pods", solo.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let api: Api<Deployment> = Api::namespaced(client.clone(), "default");
    api.create(&PostParams::default(), &deployment("api", 3, json!(1), json!(0))?).await?;
    wait_complete(&api, "api", Duration::from_secs(30)).await?;
    // Scale up and down.
    for n in [6, 2] {
        api.patch("api", &PatchParams::default(), &Patch::Merge(&json!({"spec": {"replicas": n}}))).await?;
        wait_complete(&api, "api", Duration::from_secs(30)).await?;
        let live = pods.list(&ListParams::default().labels("app=api")).await?.items;
        assert_eq!(live.len(), n as usize);
    }
    // Release: relabel a pod; the ReplicaSet lets it go and makes a replacement.
    let victim = pods.list(&ListParams::default().labels("app=api")).await?.items[0].name_any();
    pods.patch(&victim, &PatchParams::default(), &Patch::Merge(&json!({"metadata": {"labels": {"app": "debug"}}})))
        .await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let p = pods.get(&victim).await?;
        let owned = p.owner_references().iter().any(|r| r.controller == Some(true));
        let count = pods.list(&ListParams::default().labels("app=api")).await?.items.len();
        if !owned && count == 2 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "pod not released / not replaced");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Background cascade: delete the Deployment; ReplicaSets and pods go.
    api.delete("api", &Default::default()).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = rss.list(&ListParams::default().labels("app=api")).await?.items.len();
        let p = pods.list(&ListParams::default().labels("app=api")).await?.items.len();
        if r == 0 && p == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "cascade incomplete: {r} replicasets, {p} pods");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    Ok(())
}
