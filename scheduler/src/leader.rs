//! Leader election on a `coordination.k8s.io/v1` Lease, as kube-scheduler does: the holder
//! renews `renewTime`; a candidate takes the lease over once `renewTime + leaseDurationSeconds`
//! has passed. Every write is a compare-and-swap on the lease's resourceVersion, so two
//! candidates can never both win.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};

/// Which lease, who we are, and the timings.
#[derive(Debug, Clone)]
pub struct LeaderConfig {
    /// Lease namespace.
    pub namespace: String,
    /// Lease name.
    pub name: String,
    /// Our identity (hostname + a random suffix).
    pub identity: String,
    /// How long a lease is valid without renewal.
    pub lease_duration: Duration,
    /// How often the holder renews (and a candidate retries).
    pub retry_period: Duration,
}

impl LeaderConfig {
    /// kube-scheduler's defaults: 15 s lease, 2 s retry, lease `kube-system/kube-scheduler`.
    pub fn new(identity: impl Into<String>) -> LeaderConfig {
        LeaderConfig {
            namespace: "kube-system".into(),
            name: "kube-scheduler".into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            retry_period: Duration::from_secs(2),
        }
    }
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// One acquire-or-renew round: `Ok(true)` if we hold the lease afterwards.
pub async fn try_acquire_or_renew(api: &Api<Lease>, cfg: &LeaderConfig) -> Result<bool, kube::Error> {
    let now = MicroTime(Timestamp::now());
    let secs = i32::try_from(cfg.lease_duration.as_secs()).unwrap_or(i32::MAX);
    let current = match api.get(&cfg.name).await {
        Ok(l) => l,
        Err(e) if is_not_found(&e) => {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(cfg.name.clone()), ..ObjectMeta::default() },
                spec: Some(LeaseSpec {
                    holder_identity: Some(cfg.identity.clone()),
                    lease_duration_seconds: Some(secs),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(e) if is_conflict(&e) => Ok(false),
                Err(e) => Err(e),
            };
        }
        Err(e) => return Err(e),
    };
    let spec = current.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.clone().unwrap_or_default();
    let ours = holder == cfg.identity;
    let expired = match (&spec.renew_time, spec.lease_duration_seconds) {
        (Some(t), Some(d)) => t.0.checked_add(SignedDuration::from_secs(i64::from(d))).map_or(true, |e| e < now.0),
        _ => true,
    };
    if !ours && !holder.is_empty() && !expired {
        return Ok(false);
    }
    let mut next = current;
    let mut s = spec;
    if !ours {
        s.acquire_time = Some(now.clone());
        s.lease_transitions = Some(s.lease_transitions.unwrap_or(0) + 1);
    }
    s.holder_identity = Some(cfg.identity.clone());
    s.lease_duration_seconds = Some(secs);
    s.renew_time = Some(now);
    next.spec = Some(s);
    match api.replace(&cfg.name, &PostParams::default(), &next).await {
        Ok(_) => Ok(true),
        Err(e) if is_conflict(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Waits until we hold the lease.
pub async fn acquire(client: kube::Client, cfg: &LeaderConfig) {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    loop {
        match try_acquire_or_renew(&api, cfg).await {
            Ok(true) => {
                tracing::info!(identity = %cfg.identity, lease = %cfg.name, "became leader");
                return;
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "leader election"),
        }
        tokio::time::sleep(cfg.retry_period).await;
    }
}

/// Keeps renewing; returns when the lease could not be renewed within its duration (leadership
/// lost — the caller must stop scheduling).
pub async fn hold(client: kube::Client, cfg: &LeaderConfig) {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    let mut last_ok = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(cfg.retry_period).await;
        match try_acquire_or_renew(&api, cfg).await {
            Ok(true) => last_ok = tokio::time::Instant::now(),
            Ok(false) => {
                tracing::error!(identity = %cfg.identity, "lost the lease to another scheduler");
                return;
            }
            Err(e) => tracing::warn!(error = %e, "renewing the lease"),
        }
        // Stop a little before the lease could be taken over.
        if last_ok.elapsed() + cfg.retry_period >= cfg.lease_duration {
            tracing::error!(identity = %cfg.identity, "could not renew the lease in time");
            return;
        }
    }
}
