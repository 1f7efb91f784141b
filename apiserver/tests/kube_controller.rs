//! A third-party controller written the way kube-rs users write them — `kube_runtime::Controller`, server-side
//! apply for what it owns, the `finalizer` helper for cleanup — runs against Ferry unchanged, reconciles to the
//! right state, and goes quiet when nothing changes (its writes are counted from the API server's metrics).
//!
//! The controller mirrors ConfigMaps labelled `mirror.ferry.dev/enabled=true` into `<name>-mirror`, owned by
//! the source through a controller ownerReference, and deletes the mirror when the source goes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use ferry_testkit::Cluster;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{finalizer, Event};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;

const FINALIZER: &str = "mirror.ferry.dev/cleanup";
const MANAGER: &str = "mirror-controller";

#[derive(Debug, thiserror::Error)]
enum Error {
    #[error("kube: {0}")]
    Kube(#[from] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(#[from] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("object has no namespace")]
    NoNamespace,
    #[error("object has no uid yet")]
    NoUid,
}

struct Ctx {
    client: kube::Client,
    reconciles: AtomicUsize,
}

fn mirror_name(source: &ConfigMap) -> String {
    format!("{}-mirror", source.name_any())
}

async fn reconcile(source: Arc<ConfigMap>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    ctx.reconciles.fetch_add(1, Ordering::SeqCst);
    let ns = source.namespace().ok_or(Error::NoNamespace)?;
    let sources: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    let mirrors = sources.clone();
    finalizer(&sources, FINALIZER, source, |event| async move {
        match event {
            Event::Apply(source) => {
                let owner = source.controller_owner_ref(&()).ok_or(Error::NoUid)?;
                let mirror = json!({
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {
                        "name": mirror_name(&source),
                        "labels": {"mirror.ferry.dev/owned": "true"},
                        "ownerReferences": [owner],
                    },
                    "data": source.data.clone().unwrap_or_default(),
                });
                mirrors
                    .patch(&mirror_name(&source), &PatchParams::apply(MANAGER).force(), &Patch::Apply(&mirror))
                    .await?;
                Ok(Action::await_change())
            }
            Event::Cleanup(source) => {
                match mirrors.delete(&mirror_name(&source), &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
                Ok(Action::await_change())
            }
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

fn error_policy(_: Arc<ConfigMap>, _: &Error, _: Arc<Ctx>) -> Action {
    Action::requeue(Duration::from_millis(200))
}

/// Writes (create, update, patch, delete) to configmaps so far, from the API server's `/metrics`.
async fn configmap_writes(c: &Cluster) -> Result<u64> {
    let (code, body) = c.raw("GET", "/metrics", None, Vec::new()).await?;
    if code != 200 {
        bail!("/metrics answered {code}");
    }
    let text = String::from_utf8_lossy(&body).into_owned();
    let mut total = 0;
    for line in text.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
        let writes = ["create", "update", "patch", "delete"].iter().any(|v| line.contains(&format!("verb=\"{v}\"")));
        if writes && line.contains("resource=\"configmaps\"") {
            total += line.rsplit(' ').next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    Ok(total)
}

async fn eventually<T>(what: &str, mut probe: impl AsyncFnMut() -> Result<Option<T>>) -> Result<T> {
    for _ in 0..200 {
        if let Some(v) = probe().await? {
            return Ok(v);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("timed out waiting for {what}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_runtime_controller_with_apply_and_finalizer() -> Result<()> {
    let c = Cluster::start().await?;
    let client = c.client().await?;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let ctx = Arc::new(Ctx { client: client.clone(), reconciles: AtomicUsize::new(0) });
    let controller = Controller::new(cms.clone(), watcher::Config::default().labels("mirror.ferry.dev/enabled=true"))
        .owns(cms.clone(), watcher::Config::default().labels("mirror.ferry.dev/owned=true"))
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|_| async {});
    let controller = tokio::spawn(controller);

    let source: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "settings", "labels": {"mirror.ferry.dev/enabled": "true"}},
        "data": {"color": "blue"}
    }))?;
    cms.create(&PostParams::default(), &source).await?;
    let mirror = eventually("the mirror", async || {
        Ok(cms.get_opt("settings-mirror").await?.filter(|m| m.data.as_ref().and_then(|d| d.get("color")).is_some()))
    })
    .await?;
    assert_eq!(mirror.data.as_ref().and_then(|d| d.get("color")).map(String::as_str), Some("blue"));
    let owner = &mirror.owner_references()[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str(), owner.controller), ("ConfigMap", "settings", Some(true)));
    let fields = mirror.managed_fields();
    assert_eq!(fields.len(), 1, "{fields:?}");
    assert_eq!((fields[0].manager.as_deref(), fields[0].operation.as_deref()), (Some(MANAGER), Some("Apply")));
    let src = cms.get("settings").await?;
    assert_eq!(src.finalizers(), [FINALIZER]);

    // A change to the source reaches the mirror; a removed key is pruned by server-side apply.
    cms.patch("settings", &PatchParams::default(), &Patch::Merge(json!({"data": {"color": null, "size": "xl"}})))
        .await?;
    eventually("the updated mirror", async || {
        let m = cms.get("settings-mirror").await?;
        let d = m.data.unwrap_or_default();
        Ok((d.get("size").map(String::as_str) == Some("xl") && !d.contains_key("color")).then_some(()))
    })
    .await?;

    // Settled: no more writes and no more reconciles while nothing changes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let writes = configmap_writes(&c).await?;
    let reconciles = ctx.reconciles.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(configmap_writes(&c).await?, writes, "the controller keeps writing while nothing changes");
    assert_eq!(ctx.reconciles.load(Ordering::SeqCst), reconciles, "the controller keeps reconciling");
    // Two creates/patches by the test, and per change one apply of the mirror plus the finalizer's patch.
    assert!(writes <= 6, "{writes} configmap writes for two changes");

    // Deleting the source runs the cleanup: the mirror goes, then the finalizer, then the source.
    cms.delete("settings", &DeleteParams::default()).await?;
    eventually("the source and mirror to go", async || {
        Ok((cms.get_opt("settings").await?.is_none() && cms.get_opt("settings-mirror").await?.is_none()).then_some(()))
    })
    .await?;
    controller.abort();
    Ok(())
}
