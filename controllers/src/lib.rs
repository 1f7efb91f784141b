//! Ferry's controllers: everything that turns declared state into more objects.
//!
//! Start with [`run`]: it waits to become leader ([`leader`], a coordination.k8s.io Lease), then
//! starts one watch per kind ([`informer`]) shared by every controller, and the controllers,
//! each a `kube_runtime::Controller` (watch → store → debounced queue → idempotent reconcile):
//!
//! * [`replicaset`] — pods for ReplicaSets (adoption, expectations, deletion ranking, status);
//! * [`deployment`] — ReplicaSets for Deployments (RollingUpdate / Recreate, revisions,
//!   rollback, pause, proportional scaling, conditions, progress deadline);
//! * [`gc`] — ownerReferences cascade (background, foreground, orphan);
//! * [`namespace`] — empties terminating namespaces and finalizes them;
//! * [`serviceaccount`] — a `default` ServiceAccount per namespace.
//!
//! [`events`] records core/v1 Events; [`expectations`] keeps the ReplicaSet controller from
//! acting twice on a stale cache. No controller writes when desired equals stored state.

pub mod deployment;
pub mod events;
pub mod expectations;
pub mod gc;
pub mod informer;
pub mod leader;
pub mod namespace;
pub mod replicaset;
pub mod serviceaccount;
pub mod util;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::Api;
use tokio_util::sync::CancellationToken;

pub use leader::{LeaderConfig, LeaderElector};

/// How the controller manager runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Leader election.
    pub leader: LeaderConfig,
    /// Concurrent reconciles per controller (0 = unlimited).
    pub concurrency: u16,
}

/// Why [`run`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Another candidate took the Lease, or it could not be renewed in time.
    #[error("leader election lost")]
    LeadershipLost,
}

/// Become leader, then run every controller until `shutdown` is cancelled (`Ok`) or
/// leadership is lost (`Err`; the caller must stop: Kubernetes' controller manager exits).
pub async fn run(client: kube::Client, config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    let mut elector = LeaderElector::new(client.clone(), config.leader.clone());
    tokio::select! {
        _ = elector.acquire() => {}
        _ = shutdown.cancelled() => return Ok(()),
    }
    let result = tokio::select! {
        _ = controllers(client, config.concurrency, shutdown.clone()) => Ok(()),
        _ = elector.hold() => Err(Error::LeadershipLost),
        _ = shutdown.cancelled() => Ok(()),
    };
    if result.is_ok() {
        elector.release().await;
    }
    result
}

/// Run every controller (no leader election). Never returns on its own.
pub async fn controllers(client: kube::Client, concurrency: u16, shutdown: CancellationToken) {
    let pods = informer::Informer::<Pod>::new();
    let replica_sets = informer::Informer::<ReplicaSet>::new();
    let deployments = informer::Informer::<Deployment>::new();
    let namespaces = informer::Informer::<Namespace>::new();
    let accounts = informer::Informer::<ServiceAccount>::new();
    let watches = futures::future::join5(
        pods.run(Api::all(client.clone())),
        replica_sets.run(Api::all(client.clone())),
        deployments.run(Api::all(client.clone())),
        namespaces.run(Api::all(client.clone())),
        accounts.run(Api::all(client.clone())),
    );
    let stop = || shutdown.clone().cancelled_owned();
    let work = async {
        // Never act on a partial cache: a ReplicaSet that sees half its pods would overshoot.
        let _ = futures::future::join5(
            pods.store().wait_until_ready(),
            replica_sets.store().wait_until_ready(),
            deployments.store().wait_until_ready(),
            namespaces.store().wait_until_ready(),
            accounts.store().wait_until_ready(),
        )
        .await;
        tracing::info!("caches synced; controllers starting");
        let gc = async {
            loop {
                match gc::discover(&client).await {
                    Ok(kinds) => return gc::run(client.clone(), kinds).await,
                    Err(e) => tracing::warn!(error = %e, "discovery failed; garbage collector waits"),
                }
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            }
        };
        futures::future::join5(
            replicaset::run(client.clone(), &replica_sets, &pods, concurrency, stop()),
            deployment::run(client.clone(), &deployments, &replica_sets, &pods, concurrency, stop()),
            namespace::run(client.clone(), stop()),
            serviceaccount::run(client.clone(), &namespaces, &accounts, stop()),
            gc,
        )
        .await;
    };
    tokio::select! {
        _ = watches => {}
        _ = work => {}
        _ = shutdown.cancelled() => {}
    }
}
