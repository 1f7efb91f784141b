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
        let _ =
            ferry_controllers::run(client, Config { leader, concurrency: 4, nodes: Default::default() }, stop).await;
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
    // restart stamped the template, as kubectl does.
    let d = api.get("web").await?;
    let stamped = d.spec.template.metadata.as_ref().and_then(|m| m.annotations.as_ref());
    assert!(stamped.is_some_and(|a| a.contains_key("kubectl.kubernetes.io/restartedAt")), "{stamped:?}");
    // Revision 1 became 3 on undo; revision 2 is still busybox:2.
    let rev2 =
        ok(run_kubectl(&bin, &kc, &["rollout", "history", "deployment/web", "--revision=2"]).await?, "history 2")?;
    assert!(rev2.contains("busybox:2"), "{rev2}");
    let hist = ok(run_kubectl(&bin, &kc, &["rollout", "history", "deployment/web"]).await?, "rollout history")?;
    let revs: Vec<&str> =
        hist.lines().filter_map(|l| l.split_whitespace().next()).filter(|w| w.parse::<u32>().is_ok()).collect();
    // (undo reused revision 1's ReplicaSet rather than creating a copy, as Kubernetes does.)
    assert_eq!(revs, ["2", "3", "4"], "{hist}");
    ok(run_kubectl(&bin, &kc, &["rollout", "undo", "deployment/web", "--to-revision=2"]).await?, "undo --to-revision")?;
    ok(run_kubectl(&bin, &kc, &["rollout", "status", "deployment/web", "--timeout=60s"]).await?, "status undo 2")?;
    let d = wait_complete(&api, "web", Duration::from_secs(30)).await?;
    assert_eq!(d.spec.template.spec.as_ref().and_then(|s| s.containers[0].image.as_deref()), Some("busybox:2"));
    assert_eq!(d.annotations().get("deployment.kubernetes.io/revision").map(String::as_str), Some("5"));
    // pause / resume: nothing rolls out in between.
    ok(run_kubectl(&bin, &kc, &["rollout", "pause", "deployment/web"]).await?, "rollout pause")?;
    ok(run_kubectl(&bin, &kc, &["set", "image", "deployment/web", "c=busybox:3"]).await?, "set image paused")?;
    eventually("paused deployment observed", || async {
        let d = api.get("web").await?;
        Ok(d.status.as_ref().and_then(|s| s.observed_generation) == d.metadata.generation)
    })
    .await?;
    let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let images = || async {
        Ok::<_, anyhow::Error>(
            rss.list(&ListParams::default().labels("app=web"))
                .await?
                .items
                .iter()
                .filter_map(|r| r.spec.template.as_ref()?.spec.as_ref()?.containers[0].image.clone())
                .collect::<Vec<_>>(),
        )
    };
    assert!(!images().await?.iter().any(|i| i == "busybox:3"), "a ReplicaSet was created while paused");
    ok(run_kubectl(&bin, &kc, &["rollout", "resume", "deployment/web"]).await?, "rollout resume")?;
    ok(run_kubectl(&bin, &kc, &["rollout", "status", "deployment/web", "--timeout=60s"]).await?, "status resumed")?;
    assert!(images().await?.iter().any(|i| i == "busybox:3"));

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
    // (It still holds the orphaned ReplicaSet "keep" and its two pods, and the service account.)
    nss.delete("team", &DeleteParams::default()).await?;
    if let Some(ns) = nss.get_opt("team").await? {
        let phase = ns.status.and_then(|s| s.phase);
        assert_eq!(phase.as_deref(), Some("Terminating"));
    }
    let err = api.create(&PostParams::default(), &deployment("late", 1, json!(1), json!(0))?).await;
    assert!(matches!(err, Err(kube::Error::Api(ref s)) if s.code == 403), "{err:?}");
    eventually("namespace gone", || async { Ok(nss.get_opt("team").await?.is_none()) }).await?;
    assert!(api.list(&ListParams::default()).await?.items.is_empty());
    assert!(rss.list(&ListParams::default()).await?.items.is_empty(), "ReplicaSets left behind");
    assert!(pods.list(&ListParams::default()).await?.items.is_empty(), "pods left behind");
    assert!(sas.list(&ListParams::default()).await?.items.is_empty(), "service accounts left behind");
    stop.cancel();
    Ok(())
}

fn image(p: &Pod) -> Option<&str> {
    p.spec.as_ref().and_then(|s| s.containers.first()).and_then(|c| c.image.as_deref())
}

fn set_image(image: &str) -> serde_json::Value {
    json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": image}]}}}})
}

/// Everything a test needs: the cluster, an admin client, the controllers and the fake kubelet
/// in `default` (stopped when dropped).
struct Env {
    cluster: Cluster,
    client: kube::Client,
    stop: CancellationToken,
    _tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn env() -> Result<Env> {
    let cluster = Cluster::start().await?;
    let client = cluster.client().await?;
    let stop = CancellationToken::new();
    let tasks =
        vec![fake_kubelet(client.clone(), "default", stop.clone()), start_controllers(client.clone(), stop.clone())];
    Ok(Env { cluster, client, stop, _tasks: tasks })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_removes_every_old_pod_before_creating_a_new_one() -> Result<()> {
    let env = env().await?;
    let api: Api<Deployment> = Api::namespaced(env.client.clone(), "default");
    let mut d = deployment("rc", 3, json!(1), json!(0))?;
    d.spec.strategy = Some(serde_json::from_value(json!({"type": "Recreate"}))?);
    api.create(&PostParams::default(), &d).await?;
    wait_complete(&api, "rc", Duration::from_secs(30)).await?;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), "default");
    let list = pods.list(&ListParams::default()).await?;
    let mut state: HashMap<String, Pod> = list.items.into_iter().map(|p| (p.name_any(), p)).collect();
    let rv = list.metadata.resource_version.unwrap_or_default();
    let mut stream = pods.watch(&WatchParams::default().timeout(60), &rv).await?.boxed();
    api.patch("rc", &PatchParams::default(), &Patch::Strategic(&set_image("busybox:2"))).await?;
    let mut saw_zero = false;
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
            // Terminating old pods still count: Recreate waits until they are gone.
            let old = state.values().filter(|p| image(p) == Some("busybox:1")).count();
            let new: Vec<&Pod> = state.values().filter(|p| image(p) == Some("busybox:2")).collect();
            assert!(old == 0 || new.is_empty(), "{} new pod(s) while {old} old pod(s) remain", new.len());
            saw_zero |= state.is_empty();
            if new.len() == 3 && old == 0 && new.iter().all(|p| pod_ready(p)) {
                return Ok::<(), anyhow::Error>(());
            }
        }
        bail!("watch ended before the rollout finished")
    };
    tokio::time::timeout(Duration::from_secs(60), done).await??;
    assert!(saw_zero, "Recreate must pass through zero pods");
    let d = wait_complete(&api, "rc", Duration::from_secs(30)).await?;
    assert_eq!(d.annotations().get("deployment.kubernetes.io/revision").map(String::as_str), Some("2"));
    Ok(())
}

fn progressing_reason(d: &Deployment) -> Option<String> {
    d.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_.as_deref() == Some("Progressing"))
        .and_then(|c| c.reason.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_deployment_scales_but_does_not_roll_out_until_resumed() -> Result<()> {
    let env = env().await?;
    let api: Api<Deployment> = Api::namespaced(env.client.clone(), "default");
    let rss: Api<ReplicaSet> = Api::namespaced(env.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), "default");
    api.create(&PostParams::default(), &deployment("pz", 2, json!(1), json!(0))?).await?;
    wait_complete(&api, "pz", Duration::from_secs(30)).await?;
    api.patch("pz", &PatchParams::default(), &Patch::Merge(&json!({"spec": {"paused": true}}))).await?;
    api.patch("pz", &PatchParams::default(), &Patch::Strategic(&set_image("busybox:2"))).await?;
    // The controller has seen the new template (observedGeneration) and reports the pause.
    eventually("paused condition", || async {
        let d = api.get("pz").await?;
        let seen = d.status.as_ref().and_then(|s| s.observed_generation) == d.metadata.generation;
        Ok(seen && progressing_reason(&d).as_deref() == Some("DeploymentPaused"))
    })
    .await?;
    // Scaling a paused Deployment still works, with the old template.
    api.patch("pz", &PatchParams::default(), &Patch::Merge(&json!({"spec": {"replicas": 3}}))).await?;
    eventually("paused scale-up", || async {
        let d = api.get("pz").await?;
        Ok(d.status.as_ref().and_then(|s| s.available_replicas) == Some(3)
            && d.status.as_ref().and_then(|s| s.observed_generation) == d.metadata.generation)
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rs_list = rss.list(&ListParams::default().labels("app=pz")).await?.items;
    assert_eq!(rs_list.len(), 1, "no new ReplicaSet while paused");
    let live = pods.list(&ListParams::default().labels("app=pz")).await?.items;
    assert_eq!(live.len(), 3);
    assert!(live.iter().all(|p| image(p) == Some("busybox:1")), "no pod of the new template while paused");
    let d = api.get("pz").await?;
    assert_eq!(d.annotations().get("deployment.kubernetes.io/revision").map(String::as_str), Some("1"));

    api.patch("pz", &PatchParams::default(), &Patch::Merge(&json!({"spec": {"paused": false}}))).await?;
    let d = wait_complete(&api, "pz", Duration::from_secs(30)).await?;
    assert_eq!(d.annotations().get("deployment.kubernetes.io/revision").map(String::as_str), Some("2"));
    let live = pods.list(&ListParams::default().labels("app=pz")).await?.items;
    assert_eq!(live.len(), 3);
    assert!(live.iter().all(|p| image(p) == Some("busybox:2")), "resumed rollout finished");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revision_history_limit_deletes_the_oldest_replica_sets() -> Result<()> {
    let env = env().await?;
    let api: Api<Deployment> = Api::namespaced(env.client.clone(), "default");
    let rss: Api<ReplicaSet> = Api::namespaced(env.client.clone(), "default");
    let mut d = deployment("hist", 1, json!(1), json!(0))?;
    d.spec.revision_history_limit = Some(1);
    api.create(&PostParams::default(), &d).await?;
    wait_complete(&api, "hist", Duration::from_secs(30)).await?;
    for img in ["busybox:2", "busybox:3", "busybox:4"] {
        api.patch("hist", &PatchParams::default(), &Patch::Strategic(&set_image(img))).await?;
        wait_complete(&api, "hist", Duration::from_secs(30)).await?;
    }
    let revisions = || async {
        let mut revs: Vec<String> = rss
            .list(&ListParams::default().labels("app=hist"))
            .await?
            .items
            .iter()
            .filter_map(|rs| rs.annotations().get("deployment.kubernetes.io/revision").cloned())
            .collect();
        revs.sort();
        Ok::<_, anyhow::Error>(revs)
    };
    eventually("history cleanup", || async { Ok(revisions().await?.len() == 2) }).await?;
    // The current ReplicaSet plus the newest old one.
    assert_eq!(revisions().await?, ["3", "4"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_failure_condition_when_pods_cannot_be_created() -> Result<()> {
    use k8s_openapi::api::core::v1::Event;
    let env = env().await?;
    let api: Api<Deployment> = Api::namespaced(env.client.clone(), "default");
    let rss: Api<ReplicaSet> = Api::namespaced(env.client.clone(), "default");
    // A valid template whose pods the API server rejects at creation (as Kubernetes does):
    // nodeName together with schedulingGates.
    let mut d = deployment("fail", 2, json!(1), json!(0))?;
    d.spec.progress_deadline_seconds = Some(600);
    if let Some(spec) = d.spec.template.spec.as_mut() {
        spec.node_name = Some("n1".into());
        spec.scheduling_gates = Some(vec![serde_json::from_value(json!({"name": "example.com/wait"}))?]);
    }
    api.create(&PostParams::default(), &d).await?;
    type Cond = (Option<String>, Option<String>, Option<String>);
    let failure =
        |conds: Option<Vec<Cond>>| conds.and_then(|c| c.into_iter().find(|c| c.0.as_deref() == Some("ReplicaFailure")));
    eventually("ReplicaFailure on the ReplicaSet and the Deployment", || async {
        let rs = rss.list(&ListParams::default().labels("app=fail")).await?.items;
        let rs_cond = failure(
            rs.first()
                .and_then(|r| r.status.clone())
                .and_then(|s| s.conditions)
                .map(|c| c.into_iter().map(|c| (c.type_, c.status, c.reason)).collect()),
        );
        let d = api.get("fail").await?;
        let d_cond = failure(
            d.status.and_then(|s| s.conditions).map(|c| c.into_iter().map(|c| (c.type_, c.status, c.reason)).collect()),
        );
        let want =
            Some((Some("ReplicaFailure".to_string()), Some("True".to_string()), Some("FailedCreate".to_string())));
        Ok(rs_cond == want && d_cond == want)
    })
    .await?;
    let events: Api<Event> = Api::namespaced(env.client.clone(), "default");
    eventually("FailedCreate event", || async {
        Ok(events.list(&ListParams::default()).await?.items.iter().any(|e| {
            e.reason.as_deref() == Some("FailedCreate")
                && e.type_.as_deref() == Some("Warning")
                && e.involved_object.kind.as_deref() == Some("ReplicaSet")
        }))
    })
    .await?;
    // Retries back off: far fewer than one failed create per 100 ms.
    let before = events.list(&ListParams::default()).await?.items.len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = events.list(&ListParams::default()).await?.items.len();
    assert!(after - before <= 3, "{} events in 3 s: retries do not back off", after - before);

    // A fixed template rolls out and the condition clears.
    let fix = json!({"spec": {"template": {"spec": {"nodeName": null, "schedulingGates": null}}}});
    api.patch("fail", &PatchParams::default(), &Patch::Merge(&fix)).await?;
    wait_complete(&api, "fail", Duration::from_secs(30)).await?;
    eventually("ReplicaFailure cleared", || async {
        let d = api.get("fail").await?;
        let conds = d.status.and_then(|s| s.conditions).unwrap_or_default();
        Ok(!conds.iter().any(|c| c.type_.as_deref() == Some("ReplicaFailure")))
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_ready_seconds_delays_availability() -> Result<()> {
    let env = env().await?;
    let api: Api<Deployment> = Api::namespaced(env.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), "default");
    let mut d = deployment("mr", 2, json!(1), json!(0))?;
    d.spec.min_ready_seconds = Some(3);
    api.create(&PostParams::default(), &d).await?;
    let mut lagged = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let d = api.get("mr").await?;
        let s = d.status.clone().unwrap_or_default();
        if s.ready_replicas == Some(2) && s.available_replicas.unwrap_or(0) < 2 {
            lagged = true;
        }
        if s.available_replicas == Some(2) {
            // Available means Ready for at least minReadySeconds.
            let now = jiff::Timestamp::now();
            for p in pods.list(&ListParams::default().labels("app=mr")).await?.items {
                let since = p
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
                    .and_then(|c| c.last_transition_time.as_ref())
                    .map(|t| t.0);
                let since = since.ok_or_else(|| anyhow::anyhow!("pod {} has no Ready time", p.name_any()))?;
                assert!(now.as_second() - since.as_second() >= 3, "available before minReadySeconds");
            }
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never available: {s:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(lagged, "availableReplicas never lagged readyReplicas");
    wait_complete(&api, "mr", Duration::from_secs(30)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_for_scaling_and_pod_creates_and_deletes() -> Result<()> {
    use k8s_openapi::api::core::v1::Event;
    let env = env().await?;
    let api: Api<Deployment> = Api::namespaced(env.client.clone(), "default");
    api.create(&PostParams::default(), &deployment("ev", 2, json!(1), json!(0))?).await?;
    wait_complete(&api, "ev", Duration::from_secs(30)).await?;
    api.patch("ev", &PatchParams::default(), &Patch::Merge(&json!({"spec": {"replicas": 1}}))).await?;
    wait_complete(&api, "ev", Duration::from_secs(30)).await?;
    let events: Api<Event> = Api::namespaced(env.client.clone(), "default");
    let has = |list: &[Event], reason: &str, kind: &str, prefix: &str| {
        list.iter().any(|e| {
            e.reason.as_deref() == Some(reason)
                && e.type_.as_deref() == Some("Normal")
                && e.involved_object.kind.as_deref() == Some(kind)
                && e.involved_object.name.as_deref().is_some_and(|n| n.starts_with("ev"))
                && e.message.as_deref().is_some_and(|m| m.starts_with(prefix))
        })
    };
    eventually("events", || async {
        let list = events.list(&ListParams::default()).await?.items;
        Ok(has(&list, "ScalingReplicaSet", "Deployment", "Scaled up replica set ev-")
            && has(&list, "ScalingReplicaSet", "Deployment", "Scaled down replica set ev-")
            && has(&list, "SuccessfulCreate", "ReplicaSet", "Created pod: ev-")
            && has(&list, "SuccessfulDelete", "ReplicaSet", "Deleted pod: ev-"))
    })
    .await?;
    Ok(())
}

/// Mutating requests by (verb, resource) from the API server's `apiserver_request_total`.
fn writes(metrics: &str) -> std::collections::BTreeMap<(String, String), u64> {
    let mut out = std::collections::BTreeMap::new();
    for line in metrics.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
        let Some((labels, value)) = line.split_once("} ") else { continue };
        let label = |name: &str| {
            labels.split(&format!("{name}=\"")).nth(1).and_then(|r| r.split('"').next()).unwrap_or("").to_string()
        };
        let verb = label("verb");
        if !matches!(verb.as_str(), "POST" | "PUT" | "PATCH" | "DELETE" | "DELETECOLLECTION") {
            continue;
        }
        let n: f64 = value.trim().parse().unwrap_or(0.0);
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let n = n as u64;
        *out.entry((verb, label("resource"))).or_insert(0) += n;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_settled_deployments_write_nothing_for_a_minute() -> Result<()> {
    let env = env().await?;
    let api: Api<Deployment> = Api::namespaced(env.client.clone(), "default");
    for i in 0..50 {
        api.create(&PostParams::default(), &deployment(&format!("idle-{i}"), 2, json!("25%"), json!("25%"))?).await?;
    }
    for i in 0..50 {
        wait_complete(&api, &format!("idle-{i}"), Duration::from_secs(120)).await?;
    }
    // Events are posted in the background; let the last ones land before counting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let secs: u64 = std::env::var("FERRY_IDLE_CHECK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    let read = || async {
        let (code, body) = env.cluster.raw("GET", "/metrics", None, Vec::new()).await?;
        anyhow::ensure!(code == 200, "GET /metrics: {code}");
        Ok::<_, anyhow::Error>(writes(&String::from_utf8_lossy(&body)))
    };
    let before = read().await?;
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let after = read().await?;
    let mut lease_writes = 0;
    let mut other = Vec::new();
    for (key, n) in &after {
        let d = n - before.get(key).copied().unwrap_or(0);
        if d == 0 {
            continue;
        }
        // Leader-election Lease renewals are writes by design (every retry period).
        if key.1 == "leases" {
            lease_writes += d;
        } else {
            other.push(format!("{} {}: {d}", key.0, key.1));
        }
    }
    assert!(other.is_empty(), "writes to the API server while idle for {secs} s: {other:?}");
    // The counter is live: the leader renewed its Lease meanwhile.
    assert!(lease_writes > 0, "no Lease renewals counted in {secs} s");
    Ok(())
}
