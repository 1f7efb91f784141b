//! Leader election on a `coordination.k8s.io/v1` Lease, the way client-go's leaderelection does it.
//!
//! A candidate tries every `retry_period` to acquire the Lease: it takes it when the Lease does not
//! exist, when it already holds it, or when the holder has not renewed it for `lease_duration`
//! (measured on the candidate's own clock from when it last saw the record change, so clock skew
//! between machines does not matter). Writes carry the resourceVersion read, so two candidates
//! cannot both win. The leader renews every `retry_period`; when it cannot renew within
//! `renew_deadline` it has lost leadership and must stop acting (the process exits).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::Api;
use tokio::time::Instant;

/// Leader election settings.
#[derive(Clone, Debug)]
pub struct LeaderConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This candidate's identity (holderIdentity).
    pub identity: String,
    /// How long a Lease is valid after its last renewal.
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before giving up.
    pub renew_deadline: Duration,
    /// How often candidates retry and the leader renews.
    pub retry_period: Duration,
}

impl LeaderConfig {
    /// Kubernetes' defaults: 15 s lease, 10 s renew deadline, 2 s retry period.
    pub fn new(identity: impl Into<String>) -> Self {
        Self {
            namespace: "kube-system".into(),
            name: "ferry-controllers".into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// What the last observation of the Lease was, and when (local clock) it changed.
#[derive(Default)]
struct Observed {
    record: Option<(Option<String>, Option<MicroTime>, Option<String>)>,
    at: Option<Instant>,
}

/// A Lease-based leader elector.
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaderConfig,
    observed: Observed,
}

fn now_micro() -> MicroTime {
    MicroTime(jiff::Timestamp::now())
}

impl LeaderElector {
    /// An elector for `config` using `client`.
    pub fn new(client: kube::Client, config: LeaderConfig) -> Self {
        Self { api: Api::namespaced(client, &config.namespace), config, observed: Observed::default() }
    }

    /// This candidate's identity.
    pub fn identity(&self) -> &str {
        &self.config.identity
    }

    /// Block until this candidate holds the Lease.
    pub async fn acquire(&mut self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    tracing::info!(identity = %self.config.identity, lease = %self.config.name, "acquired leadership");
                    return;
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election: cannot read or write the Lease"),
            }
            tokio::time::sleep(self.config.retry_period).await;
        }
    }

    /// Keep renewing; returns when leadership is lost (no successful renewal within the renew deadline).
    pub async fn hold(&mut self) {
        let mut last_renew = Instant::now();
        loop {
            tokio::time::sleep(self.config.retry_period).await;
            match tokio::time::timeout(self.config.renew_deadline, self.try_acquire_or_renew()).await {
                Ok(Ok(true)) => last_renew = Instant::now(),
                Ok(Ok(false)) => {
                    tracing::error!(identity = %self.config.identity, "leader election lost: another candidate holds the Lease");
                    return;
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "leader election: renewal failed"),
                Err(_) => tracing::warn!("leader election: renewal timed out"),
            }
            if last_renew.elapsed() >= self.config.renew_deadline {
                tracing::error!(identity = %self.config.identity, "leader election lost: could not renew within the deadline");
                return;
            }
        }
    }

    /// Give the Lease up (on orderly shutdown) so another candidate takes over at once.
    pub async fn release(&mut self) {
        if let Ok(Some(mut lease)) = self.api.get_opt(&self.config.name).await {
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            if spec.holder_identity.as_deref() == Some(self.config.identity.as_str()) {
                spec.holder_identity = None;
                spec.lease_duration_seconds = Some(1);
                spec.renew_time = Some(now_micro());
                let _ = self.api.replace(&self.config.name, &PostParams::default(), &lease).await;
            }
        }
    }

    /// One attempt: `Ok(true)` when this candidate holds the Lease afterwards.
    async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let secs = i32::try_from(self.config.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX);
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.config.identity.clone()),
                    lease_duration_seconds: Some(secs),
                    acquire_time: Some(now_micro()),
                    renew_time: Some(now_micro()),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let record = (spec.holder_identity.clone(), spec.renew_time.clone(), lease.metadata.resource_version.clone());
        if self.observed.record.as_ref() != Some(&record) {
            self.observed.record = Some(record);
            self.observed.at = Some(Instant::now());
        }
        let mine = spec.holder_identity.as_deref() == Some(self.config.identity.as_str());
        let held = spec.holder_identity.as_deref().is_some_and(|h| !h.is_empty());
        let their_duration =
            Duration::from_secs(u64::try_from(spec.lease_duration_seconds.unwrap_or(secs)).unwrap_or(0));
        let expired = self.observed.at.is_none_or(|at| at.elapsed() > their_duration);
        if !mine && held && !expired {
            return Ok(false);
        }
        let new_spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if !mine {
            new_spec.acquire_time = Some(now_micro());
            new_spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        new_spec.holder_identity = Some(self.config.identity.clone());
        new_spec.lease_duration_seconds = Some(secs);
        new_spec.renew_time = Some(now_micro());
        match self.api.replace(&self.config.name, &PostParams::default(), &lease).await {
            Ok(updated) => {
                let s = updated.spec.unwrap_or_default();
                self.observed.record = Some((s.holder_identity, s.renew_time, updated.metadata.resource_version));
                self.observed.at = Some(Instant::now());
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }
}
