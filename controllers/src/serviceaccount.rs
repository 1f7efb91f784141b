//! The ServiceAccount controller: a `default` ServiceAccount in every active namespace
//! (recreated if deleted).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, ResourceExt};

use crate::informer::Informer;

/// Errors of one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("{0}")]
    Kube(#[from] kube::Error),
}

/// What the reconciler needs.
pub struct Context {
    /// Client.
    pub client: kube::Client,
    /// All ServiceAccounts.
    pub accounts: Store<ServiceAccount>,
}

/// Run until `shutdown` resolves.
pub async fn run(
    client: kube::Client,
    namespaces: &Informer<Namespace>,
    accounts: &Informer<ServiceAccount>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let ctx = Arc::new(Context { client, accounts: accounts.store() });
    Controller::for_shared_stream(namespaces.subscribe(), namespaces.store())
        .watches_shared_stream(accounts.subscribe(), |sa: Arc<ServiceAccount>| {
            (sa.name_any() == "default").then(|| ObjectRef::new(&sa.namespace().unwrap_or_default()))
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, |_, _, _| Action::requeue(Duration::from_secs(1)), ctx)
        .for_each(|_| async {})
        .await;
}

/// Reconcile one namespace.
pub async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Context>) -> Result<Action, Error> {
    let terminating = ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
    if ns.metadata.deletion_timestamp.is_some() || terminating {
        return Ok(Action::await_change());
    }
    let name = ns.name_any();
    if ctx.accounts.get(&ObjectRef::new("default").within(&name)).is_some() {
        return Ok(Action::await_change());
    }
    let sa = ServiceAccount {
        metadata: ObjectMeta { name: Some("default".into()), namespace: Some(name.clone()), ..Default::default() },
        ..Default::default()
    };
    match Api::<ServiceAccount>::namespaced(ctx.client.clone(), &name).create(&PostParams::default(), &sa).await {
        Ok(_) => Ok(Action::await_change()),
        Err(e) if matches!(crate::util::api_code(&e), Some(409) | Some(403) | Some(404)) => Ok(Action::await_change()),
        Err(e) => Err(e.into()),
    }
}
