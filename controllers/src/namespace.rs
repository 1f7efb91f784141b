//! The Namespace controller: empty a terminating namespace, then let it go.
//!
//! While a namespace has a deletionTimestamp (the API server shows phase `Terminating` and
//! refuses new content), every namespaced kind found through discovery is listed in it and
//! whatever is still there is deleted (background cascade). Once nothing is left, the
//! `kubernetes` finalizer is removed through `namespaces/{name}/finalize`, and the API server
//! deletes the namespace.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, DynamicObject, ListParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};

use crate::events::{Recorder, WARNING};

/// Errors of one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("{0}")]
    Kube(#[from] kube::Error),
    /// The finalize body could not be encoded.
    #[error("encoding: {0}")]
    Encode(#[from] serde_json::Error),
}

/// What the reconciler needs.
pub struct Context {
    /// Client.
    pub client: kube::Client,
    /// Events.
    pub recorder: Recorder,
    /// How long to wait before looking again at a namespace that still has content.
    pub recheck: Duration,
}

/// Run until `shutdown` resolves.
pub async fn run(client: kube::Client, shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static) {
    let ctx = Arc::new(Context {
        client: client.clone(),
        recorder: Recorder::new(client.clone(), "namespace-controller"),
        recheck: Duration::from_secs(1),
    });
    Controller::new(Api::<Namespace>::all(client), watcher::Config::default())
        .graceful_shutdown_on(shutdown)
        .run(
            reconcile,
            |ns, e, _| {
                tracing::warn!(namespace = %ns.name_any(), error = %e, "namespace reconcile failed; retrying");
                Action::requeue(Duration::from_secs(1))
            },
            ctx,
        )
        .for_each(|_| async {})
        .await;
}

/// Reconcile one namespace.
pub async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Context>) -> Result<Action, Error> {
    if ns.metadata.deletion_timestamp.is_none() {
        return Ok(Action::await_change());
    }
    let finalizers = ns.spec.as_ref().and_then(|s| s.finalizers.clone()).unwrap_or_default();
    if !finalizers.iter().any(|f| f == "kubernetes") {
        return Ok(Action::await_change());
    }
    let name = ns.name_any();
    let kinds = crate::gc::discover(&ctx.client).await?;
    let mut remaining = 0usize;
    for kind in kinds.iter().filter(|k| k.namespaced) {
        let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &name, &kind.ar);
        let list = match api.list(&ListParams::default()).await {
            Ok(l) => l,
            Err(e) if crate::util::api_code(&e) == Some(404) => continue,
            Err(e) => return Err(e.into()),
        };
        for obj in list.items {
            remaining += 1;
            tracing::debug!(namespace = %name, kind = %kind.ar.kind, object = %obj.name_any(), "namespace content left");
            if obj.metadata.deletion_timestamp.is_some() {
                continue;
            }
            match api.delete(&obj.name_any(), &DeleteParams::background()).await {
                Ok(_) => {}
                Err(e) if crate::util::api_code(&e) == Some(404) => {}
                Err(e) => {
                    ctx.recorder.record(
                        ns.as_ref(),
                        WARNING,
                        "NamespaceContentDeletionFailed",
                        format!("failed to delete {} {}: {e}", kind.ar.kind, obj.name_any()),
                    );
                    return Err(e.into());
                }
            }
        }
    }
    if remaining > 0 {
        return Ok(Action::requeue(ctx.recheck));
    }
    let mut body = (*ns).clone();
    body.spec.get_or_insert_with(Default::default).finalizers =
        Some(finalizers.into_iter().filter(|f| f != "kubernetes").collect());
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    tracing::debug!(namespace = %name, "namespace empty; finalizing");
    match api.replace_subresource("finalize", &name, &PostParams::default(), &body).await {
        Ok(_) => {}
        Err(e) if matches!(crate::util::api_code(&e), Some(404) | Some(409)) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Action::await_change())
}
