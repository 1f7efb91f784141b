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

fn kubectl() -> Option<std::path::PathBuf> {
    let mut dirs: Vec<std::path::PathBuf> =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.insert(0, std::path::Path::new(&home).join(".cache/ferry/venv/bin"));
    }
    dirs.into_iter().map(|d| d.join("kubectl")).find(|p| p.is_file())
}

async fn run_kubectl(
    bin: &std::path::Path,
    kubeconfig: &std::path::Path,
    args: &[&str],
) -> Result<(Option<i32>, String, String)> {
    let out = tokio::time::timeout(
        Duration::from_secs(90),
        tokio::process::Command::new(bin).arg("--kubeconfig").arg(kubeconfig).args(args).kill_on_drop(true).output(),
    )
    .await??;
    Ok((
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_kubectl_rollout_status_history_undo_restart_scale() -> Result<()> {
    let Some(bin) = kubectl() else {
        assert!(std::env::var_os("CI").is_none(), "kubectl must be available in CI");
        return Ok(());
    };
    let cluster = Cluster::start().await?;
    let kc = cluster.kubeconfig();
    let client = cluster.client().await?;
    let stop = CancellationToken::new();
    let _kubelet = fake_kubelet(client.clone(), "default", stop.clone());
    let _ctrl = start_controllers(client.clone(), stop.clone());
    let api: Api<Deployment> = Api::namespaced(client.clone(), "default");
    api.create(&PostParams::default(), &deployment("web", 3, json!(1), json!(0))?).await?;
    let ok = |r: (Option<i32>, String, String), what: &str| -> Result<String> {
        if r.0 != Some(0) {
            bail!("kubectl {what}: exit {:?}\n{}\n{}", r.0, r.1, r.2);
        }
        Ok(r.1)
    };
    let out =
        ok(run_kubectl(&bin, &kc, &["rollout", "status", "deployment/web", "--timeout=60s"]).await?, "rollout status")?;
    assert!(out.contains("successfully rolled out"), "{out}");
    ok(
        run_kubectl(&bin, &kc, &["annotate", "deployment/web", "kubernetes.io/change-cause=image 2"]).await?,
        "annotate",
    )?;
    ok(run_kubectl(&bin, &kc, &["set", "image", "deployment/web", "c=busybox:2"]).await?, "set image")?;
    ok(run_kubectl(&bin, &kc, &["rollout", "status", "deployment/web", "--timeout=60s"]).await?, "rollout status 2")?;
    let hist = ok(run_kubectl(&bin, &kc, &["rollout", "history", "deployment/web"]).await?, "rollout history")?;
    assert!(hist.lines().any(|l| l.trim_start().starts_with('1')), "{hist}");
    assert!(hist.lines().any(|l| l.trim_start().starts_with('2') && l.contains("image 2")), "{hist}");
    ok(run_kubectl(&bin, &kc, &["rollout", "undo", "deployment/web"]).await?, "rollout undo")?;
    ok(
        run_kubectl(&bin, &kc, &["rollout", "status", "deployment/web", "--timeout=60s"]).await?,
        "rollout status undo",
    )?;
    let d = api.get("web").await?;
    assert_eq!(d.spec.template.spec.as_ref().and_then(|s| s.containers[0].image.as_deref()), Some("busybox:1"));
    assert_eq!(d.annotations().get("deployment.kubernetes.io/revision").map(String::as_str), Some("3"));
    ok(run_kubectl(&bin, &kc, &["rollout", "restart", "deployment/web"]).await?, "rollout restart")?;
    ok(
        run_kubectl(&bin, &kc, &["rollout", "status", "deployment/web", "--timeout=60s"]).await?,
        "rollout status restart",
    )?;
    let d = wait_complete(&api, "web", Duration::from_secs(30)).await?;
    assert_eq!(d.annotations().get("deployment.kubernetes.io/revision").map(String::as_str), Some("4"));
    ok(run_kubectl(&bin, &kc, &["scale", "deployment/web", "--replicas=5"]).await?, "scale")?;
    ok(
        run_kubectl(&bin, &kc, &["rollout", "status", "deployment/web", "--timeout=60s"]).await?,
        "rollout status scale",
    )?;
    assert_eq!(
        wait_complete(&api, "web", Duration::from_secs(30)).await?.status.and_then(|s| s.ready_replicas),
        Some(5)
    );

    // No kubelet in this namespace: the rollout stalls and the deadline is reported.
    let ns: k8s_openapi::api::core::v1::Namespace = serde_json::from_value(json!({"metadata": {"name": "slow"}}))?;
    Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await?;
    let slow: Api<Deployment> = Api::namespaced(client.clone(), "slow");
    let mut stuck = deployment("stuck", 2, json!(1), json!(0))?;
    stuck.spec.progress_deadline_seconds = Some(2);
    slow.create(&PostParams::default(), &stuck).await?;
    let r = run_kubectl(&bin, &kc, &["rollout", "status", "-n", "slow", "deployment/stuck", "--timeout=60s"]).await?;
    assert_ne!(r.0, Some(0), "rollout status must fail: {r:?}");
    assert!(r.2.contains("exceeded its progress deadline"), "{r:?}");
    let d = slow.get("stuck").await?;
    let cond = d
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_.as_deref() == Some("Progressing")).cloned());
    assert_eq!(cond.as_ref().and_then(|c| c.reason.as_deref()), Some("ProgressDeadlineExceeded"));
    assert_eq!(cond.as_ref().and_then(|c| c.status.as_deref()), Some("False"));
    stop.cancel();
    Ok(())
}

async fn eventually<F, Fut>(what: &str, mut f: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if f().await? {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreground_orphan_namespace_and_service_accounts() -> Result<()> {
    use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
    use kube::api::DeleteParams;
    let cluster = Cluster::start().await?;
    let client = cluster.client().await?;
    let stop = CancellationToken::new();
    let _ctrl = start_controllers(client.clone(), stop.clone());
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "team"}}))?).await?;
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), "team");
    eventually("default service account", || async { Ok(sas.get_opt("default").await?.is_some()) }).await?;
    let _kubelet = fake_kubelet(client.clone(), "team", stop.clone());
    let api: Api<Deployment> = Api::namespaced(client.clone(), "team");
    let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), "team");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "team");

    // Orphan: the ReplicaSet and its pods stay, without an owner.
    api.create(&PostParams::default(), &deployment("keep", 2, json!(1), json!(0))?).await?;
    wait_complete(&api, "keep", Duration::from_secs(30)).await?;
    api.delete("keep", &DeleteParams::orphan()).await?;
    eventually("orphaned deployment gone", || async { Ok(api.get_opt("keep").await?.is_none()) }).await?;
    let left = rss.list(&ListParams::default().labels("app=keep")).await?.items;
    assert_eq!(left.len(), 1);
    assert!(left[0].owner_references().is_empty(), "owner reference must be removed");
    assert_eq!(pods.list(&ListParams::default().labels("app=keep")).await?.items.len(), 2);

    // Foreground: the Deployment stays (foregroundDeletion) until ReplicaSets and pods are gone.
    api.create(&PostParams::default(), &deployment("fg", 2, json!(1), json!(0))?).await?;
    wait_complete(&api, "fg", Duration::from_secs(30)).await?;
    let d = api.delete("fg", &DeleteParams::foreground()).await?;
    assert!(d.left().is_some_and(|d| d.finalizers().iter().any(|f| f == "foregroundDeletion")));
    eventually("foreground deletion", || async {
        let d = api.get_opt("fg").await?;
        let r = rss.list(&ListParams::default().labels("app=fg")).await?.items.len();
        let p = pods.list(&ListParams::default().labels("app=fg")).await?.items.len();
        // The owner may only go once the dependents are gone.
        if d.is_none() {
            assert_eq!((r, p), (0, 0), "owner deleted before its dependents");
        }
        Ok(d.is_none())
    })
    .await?;

    // Namespace deletion: Terminating, new content refused, everything deleted, then it goes.
    nss.delete("team", &DeleteParams::default()).await?;
    let err = api.create(&PostParams::default(), &deployment("late", 1, json!(1), json!(0))?).await;
    assert!(matches!(err, Err(kube::Error::Api(ref s)) if s.code == 403), "{err:?}");
    eventually("namespace gone", || async { Ok(nss.get_opt("team").await?.is_none()) }).await?;
    stop.cancel();
    Ok(())
}
