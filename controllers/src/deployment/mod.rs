//! The Deployment controller: ReplicaSets per template, rolled out RollingUpdate or Recreate.
//!
//! One reconcile follows kube-controller-manager's `syncDeployment`:
//! claim ReplicaSets (adopt/release) → if deleting, status only → paused conditions →
//! paused or a pure scaling event: `sync` (proportional scaling, history cleanup, status) →
//! otherwise `rollout_rolling` / `rollout_recreate`, each ending in `sync_rollout_status`
//! (conditions Available / Progressing with Kubernetes' reasons and messages, including
//! ProgressDeadlineExceeded). Every write carries the resourceVersion read, and nothing is
//! written when the desired state equals what is stored.
//!
//! One deliberate strengthening over Kubernetes: before growing the new ReplicaSet, pods of a
//! ReplicaSet whose scale-down is still in flight count (`status.replicas` over `spec.replicas`),
//! and availability is counted only up to `spec.replicas` until the ReplicaSet controller has
//! observed a new spec, so the surge and unavailability bounds hold at every observed moment.

pub mod util;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, ResourceExt};

use self::util as du;
use self::util::reason;
use crate::events::{Recorder, NORMAL};
use crate::informer::Informer;
use crate::util::{self as cu, Matcher};

/// Errors of one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("{0}")]
    Kube(#[from] kube::Error),
    /// A ReplicaSet name is taken by a different template; the collision count was bumped.
    #[error("hash collision for ReplicaSet {0}")]
    Collision(String),
}

/// What the reconciler needs.
pub struct Context {
    /// Client for writes.
    pub client: kube::Client,
    /// All ReplicaSets.
    pub replica_sets: Store<ReplicaSet>,
    /// All pods (Recreate waits for old pods to go).
    pub pods: Store<Pod>,
    /// Events.
    pub recorder: Recorder,
}

/// Run the controller until `shutdown` resolves.
pub async fn run(
    client: kube::Client,
    deployments: &Informer<Deployment>,
    replica_sets: &Informer<ReplicaSet>,
    pods: &Informer<Pod>,
    concurrency: u16,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let ctx = Arc::new(Context {
        client: client.clone(),
        replica_sets: replica_sets.store(),
        pods: pods.store(),
        recorder: Recorder::new(client, "deployment-controller"),
    });
    let d_store = deployments.store();
    let (for_rs, for_pod) = (d_store.clone(), d_store.clone());
    let rs_store = replica_sets.store();
    Controller::for_shared_stream(deployments.subscribe(), d_store)
        .watches_shared_stream(replica_sets.subscribe(), move |rs: Arc<ReplicaSet>| rs_owners(&for_rs, &rs))
        .watches_shared_stream(pods.subscribe(), move |pod: Arc<Pod>| {
            // Only Recreate needs pod events (old pods gone); map pod → ReplicaSet → Deployment.
            let ns = pod.namespace().unwrap_or_default();
            cu::controller_ref(&pod.metadata)
                .filter(|r| r.kind == "ReplicaSet")
                .and_then(|r| rs_store.get(&ObjectRef::new(&r.name).within(&ns)))
                .and_then(|rs| cu::controller_ref(&rs.metadata).map(|r| r.name.clone()))
                .and_then(|d| for_pod.get(&ObjectRef::new(&d).within(&ns)))
                .filter(|d| du::is_recreate(d))
                .map(|d| ObjectRef::from_obj(d.as_ref()))
        })
        .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}

fn rs_owners(store: &Store<Deployment>, rs: &ReplicaSet) -> Vec<ObjectRef<Deployment>> {
    let ns = rs.namespace().unwrap_or_default();
    if let Some(r) = cu::controller_ref(&rs.metadata) {
        if r.kind == "Deployment" {
            return vec![ObjectRef::new(&r.name).within(&ns)];
        }
        return Vec::new();
    }
    store
        .state()
        .iter()
        .filter(|d| d.namespace().as_deref() == Some(ns.as_str()))
        .filter(|d| Matcher::new(Some(&d.spec.selector)).matches(rs.labels()))
        .map(|d| ObjectRef::from_obj(d.as_ref()))
        .collect()
}

fn error_policy(_d: Arc<Deployment>, e: &Error, _ctx: Arc<Context>) -> Action {
    tracing::debug!(error = %e, "deployment reconcile failed; retrying");
    Action::requeue(Duration::from_millis(500))
}

/// One reconcile's working state: the Deployment and its ReplicaSets as last written.
struct Rollout<'a> {
    ctx: &'a Context,
    d: Deployment,
    rs_api: Api<ReplicaSet>,
    d_api: Api<Deployment>,
}

/// Reconcile one Deployment.
pub async fn reconcile(d: Arc<Deployment>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = d.namespace().unwrap_or_default();
    tracing::debug!(deployment = %d.name_any(), namespace = %ns, "reconciling deployment");
    let mut s = Rollout {
        ctx: &ctx,
        d: (*d).clone(),
        rs_api: Api::namespaced(ctx.client.clone(), &ns),
        d_api: Api::namespaced(ctx.client.clone(), &ns),
    };
    let selector = Matcher::new(Some(&d.spec.selector));
    if !selector.is_valid() {
        return Ok(Action::await_change());
    }
    let rs_list = s.claim(&selector).await?;
    if s.d.metadata.deletion_timestamp.is_some() {
        let (new_rs, old) = s.split(rs_list);
        s.sync_status(new_rs.as_ref(), &old, false).await?;
        return Ok(Action::await_change());
    }
    s.check_paused_conditions().await?;
    let paused = s.d.spec.paused.unwrap_or(false);
    if paused || s.is_scaling_event(&rs_list) {
        s.sync(rs_list, paused).await?;
    } else if du::is_recreate(&s.d) {
        s.rollout_recreate(rs_list).await?;
    } else {
        s.rollout_rolling(rs_list).await?;
    }
    Ok(s.requeue_stuck())
}

impl Rollout<'_> {
    fn name(&self) -> String {
        self.d.name_any()
    }

    /// Adopt matching orphans, release owned ReplicaSets that stopped matching.
    async fn claim(&self, selector: &Matcher) -> Result<Vec<ReplicaSet>, Error> {
        let ns = self.d.namespace();
        let uid = self.d.uid().unwrap_or_default();
        let deleting = self.d.metadata.deletion_timestamp.is_some();
        let mut out = Vec::new();
        for rs in self.ctx.replica_sets.state() {
            if rs.namespace() != ns {
                continue;
            }
            match cu::controller_ref(&rs.metadata) {
                Some(r) if r.uid == uid => {
                    if selector.matches(rs.labels()) || deleting {
                        out.push((*rs).clone());
                    } else {
                        cu::release(&self.rs_api, rs.as_ref(), &uid).await?;
                    }
                }
                None if !deleting && rs.metadata.deletion_timestamp.is_none() && selector.matches(rs.labels()) => {
                    if let Some(adopted) = cu::adopt(&self.rs_api, rs.as_ref(), &self.d).await? {
                        out.push(adopted);
                    }
                }
                _ => {}
            }
        }
        out.sort_by(|a, b| {
            let t = |r: &ReplicaSet| r.metadata.creation_timestamp.as_ref().map(|t| t.0);
            t(a).cmp(&t(b)).then_with(|| a.name_any().cmp(&b.name_any()))
        });
        Ok(out)
    }

    /// (new ReplicaSet, old ones): the oldest ReplicaSet whose template equals the Deployment's.
    fn split(&self, rs_list: Vec<ReplicaSet>) -> (Option<ReplicaSet>, Vec<ReplicaSet>) {
        let template = self.d.spec.template.clone();
        let idx = rs_list
            .iter()
            .position(|rs| rs.spec.template.as_ref().is_some_and(|t| du::equal_ignore_hash(t, &template)));
        let mut old = rs_list;
        let new_rs = idx.map(|i| old.remove(i));
        (new_rs, old)
    }

    async fn check_paused_conditions(&mut self) -> Result<(), Error> {
        if !du::has_progress_deadline(&self.d) {
            return Ok(());
        }
        let mut status = self.d.status.clone().unwrap_or_default();
        let cond = du::condition(&status, "Progressing");
        if cond.is_some_and(|c| c.reason.as_deref() == Some(reason::TIMED_OUT)) {
            return Ok(());
        }
        let paused_cond = cond.is_some_and(|c| c.reason.as_deref() == Some(reason::PAUSED));
        let paused = self.d.spec.paused.unwrap_or(false);
        if paused && !paused_cond {
            du::set_condition(
                &mut status,
                du::new_condition("Progressing", "Unknown", reason::PAUSED, "Deployment is paused".into()),
            );
        } else if !paused && paused_cond {
            du::set_condition(
                &mut status,
                du::new_condition("Progressing", "Unknown", reason::RESUMED, "Deployment is resumed".into()),
            );
        } else {
            return Ok(());
        }
        let mut d = self.d.clone();
        d.status = Some(status);
        self.write_status(d).await
    }

    async fn write_status(&mut self, d: Deployment) -> Result<(), Error> {
        self.d = self.d_api.replace_status(&self.name(), &PostParams::default(), &d).await?;
        Ok(())
    }

    /// A replica count changed without a template change (annotations disagree).
    fn is_scaling_event(&self, rs_list: &[ReplicaSet]) -> bool {
        let (new_rs, old) = self.split(Vec::from(rs_list));
        let want = du::replicas(&self.d);
        new_rs
            .iter()
            .chain(old.iter())
            .filter(|rs| du::rs_replicas(rs) > 0)
            .any(|rs| du::int_annotation(rs, du::DESIRED_REPLICAS).is_some_and(|v| v != want))
    }

    /// Find or create the new ReplicaSet and bring revisions in line.
    async fn new_and_old(
        &mut self,
        rs_list: Vec<ReplicaSet>,
        create: bool,
    ) -> Result<(Option<ReplicaSet>, Vec<ReplicaSet>), Error> {
        let (existing, old) = self.split(rs_list);
        let max_old = old.iter().map(|rs| du::revision(rs.metadata.annotations.as_ref())).max().unwrap_or(0);
        let new_revision = max_old + 1;
        if let Some(rs) = existing {
            let mut copy = rs.clone();
            let annotations_changed = du::set_new_rs_annotations(&self.d, &mut copy, new_revision, true);
            let min_ready = self.d.spec.min_ready_seconds;
            let spec = &mut copy.spec;
            let min_ready_changed = spec.min_ready_seconds != min_ready;
            spec.min_ready_seconds = min_ready;
            let rs = if annotations_changed || min_ready_changed {
                self.rs_api.replace(&copy.name_any(), &PostParams::default(), &copy).await?
            } else {
                rs
            };
            let mut d = self.d.clone();
            let rev = rs.metadata.annotations.as_ref().and_then(|a| a.get(du::REVISION)).cloned();
            let mut needs = set_deployment_revision(&mut d, rev);
            let status = d.status.get_or_insert_with(DeploymentStatus::default);
            if du::has_progress_deadline(&self.d) && du::condition(status, "Progressing").is_none() {
                du::set_condition(
                    status,
                    du::new_condition(
                        "Progressing",
                        "True",
                        reason::FOUND_NEW_RS,
                        format!("Found new replica set \"{}\"", rs.name_any()),
                    ),
                );
                needs = true;
            }
            if needs {
                self.write_status(d).await?;
            }
            return Ok((Some(rs), old));
        }
        if !create {
            return Ok((None, old));
        }
        let spec = self.d.spec.clone();
        let collision = self.d.status.as_ref().and_then(|s| s.collision_count);
        let hash = du::template_hash(&spec.template, collision);
        let mut template = spec.template.clone();
        template
            .metadata
            .get_or_insert_with(ObjectMeta::default)
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(du::POD_TEMPLATE_HASH.into(), hash.clone());
        let mut selector = spec.selector.clone();
        selector.match_labels.get_or_insert_with(BTreeMap::new).insert(du::POD_TEMPLATE_HASH.into(), hash.clone());
        let name = format!("{}-{}", self.name(), hash);
        let mut rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: self.d.namespace(),
                labels: template.metadata.as_ref().and_then(|m| m.labels.clone()),
                owner_references: Some(vec![cu::owner_ref(&self.d)]),
                ..Default::default()
            },
            spec: ReplicaSetSpec {
                replicas: Some(0),
                min_ready_seconds: spec.min_ready_seconds,
                selector: LabelSelector { ..selector },
                template: Some(template),
            },
            status: None,
        };
        let mut all = old.clone();
        all.push(rs.clone());
        let count = new_rs_new_replicas(&self.d, &all, &rs);
        rs.spec.replicas = Some(count);
        du::set_new_rs_annotations(&self.d, &mut rs, new_revision, false);
        let created = match self.rs_api.create(&PostParams::default(), &rs).await {
            Ok(c) => c,
            Err(e) if cu::api_code(&e) == Some(409) => {
                // Someone (an earlier run of this controller) created it: use it if it is ours
                // and has our template, else bump the collision count and try another name.
                if let Some(existing) = self.rs_api.get_opt(&name).await? {
                    let ours =
                        cu::controller_ref(&existing.metadata).is_some_and(|r| Some(&r.uid) == self.d.uid().as_ref());
                    let same =
                        existing.spec.template.as_ref().is_some_and(|t| du::equal_ignore_hash(t, &spec.template));
                    if ours && same {
                        return Ok((Some(existing), old));
                    }
                }
                let mut d = self.d.clone();
                let status = d.status.get_or_insert_with(DeploymentStatus::default);
                status.collision_count = Some(status.collision_count.unwrap_or(0) + 1);
                self.write_status(d).await?;
                return Err(Error::Collision(name));
            }
            Err(e) => return Err(e.into()),
        };
        if count > 0 {
            self.ctx.recorder.record(
                &self.d,
                NORMAL,
                "ScalingReplicaSet",
                format!("Scaled up replica set {name} from 0 to {count}"),
            );
        }
        let mut d = self.d.clone();
        set_deployment_revision(&mut d, Some(new_revision.to_string()));
        if du::has_progress_deadline(&self.d) {
            du::set_condition(
                d.status.get_or_insert_with(DeploymentStatus::default),
                du::new_condition(
                    "Progressing",
                    "True",
                    reason::NEW_RS_CREATED,
                    format!("Created new replica set \"{name}\""),
                ),
            );
        }
        self.write_status(d).await?;
        Ok((Some(created), old))
    }

    /// Scale a ReplicaSet (and refresh its replica annotations). Returns the stored object.
    async fn scale_rs(&mut self, rs: &ReplicaSet, to: i32, op: Option<&str>) -> Result<(bool, ReplicaSet), Error> {
        let from = du::rs_replicas(rs);
        let mut copy = rs.clone();
        let want = du::replicas(&self.d);
        let ann = du::set_replicas_annotations(&mut copy, want, want + du::max_surge(&self.d));
        if from == to && !ann {
            return Ok((false, rs.clone()));
        }
        copy.spec.replicas = Some(to);
        let stored = self.rs_api.replace(&rs.name_any(), &PostParams::default(), &copy).await?;
        if from != to {
            let op = op.unwrap_or(if from < to { "up" } else { "down" });
            self.ctx.recorder.record(
                &self.d,
                NORMAL,
                "ScalingReplicaSet",
                format!("Scaled {op} replica set {} from {from} to {to}", rs.name_any()),
            );
        }
        Ok((from != to, stored))
    }

    async fn rollout_rolling(&mut self, rs_list: Vec<ReplicaSet>) -> Result<(), Error> {
        let (new_rs, mut old) = self.new_and_old(rs_list, true).await?;
        let Some(mut new_rs) = new_rs else { return Ok(()) };
        // Scale up the new ReplicaSet.
        let want = du::replicas(&self.d);
        let cur = du::rs_replicas(&new_rs);
        if cur != want {
            let target = if cur > want {
                want
            } else {
                let mut all = old.clone();
                all.push(new_rs.clone());
                new_rs_new_replicas(&self.d, &all, &new_rs)
            };
            let (scaled, stored) = self.scale_rs(&new_rs, target, None).await?;
            new_rs = stored;
            if scaled {
                return self.sync_rollout_status(Some(&new_rs), &old).await;
            }
        }
        // Scale down old ReplicaSets.
        if self.reconcile_old(&mut old, &new_rs).await? {
            return self.sync_rollout_status(Some(&new_rs), &old).await;
        }
        let status = self.d.status.clone().unwrap_or_default();
        if du::deployment_complete(&self.d, &status) {
            self.cleanup(&old).await?;
        }
        self.sync_rollout_status(Some(&new_rs), &old).await
    }

    /// Kubernetes' reconcileOldReplicaSets. Returns whether anything was scaled down.
    async fn reconcile_old(&mut self, old: &mut [ReplicaSet], new_rs: &ReplicaSet) -> Result<bool, Error> {
        let old_pods: i32 = old.iter().map(du::rs_replicas).sum();
        if old_pods == 0 {
            return Ok(false);
        }
        let all_pods: i32 = old_pods + du::rs_replicas(new_rs);
        let want = du::replicas(&self.d);
        let min_available = want - du::max_unavailable(&self.d);
        let new_unavailable = du::rs_replicas(new_rs) - du::rs_available_safe(new_rs);
        let max_scaled_down = all_pods - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return Ok(false);
        }
        // Clean up unhealthy old replicas first (oldest ReplicaSets first).
        let mut cleaned = 0;
        for rs in old.iter_mut() {
            if cleaned >= max_scaled_down {
                break;
            }
            let (spec, avail) = (du::rs_replicas(rs), du::rs_available_safe(rs));
            if spec == 0 || spec == avail {
                continue;
            }
            let n = (max_scaled_down - cleaned).min(spec - avail);
            let (_, stored) = self.scale_rs(rs, spec - n, None).await?;
            *rs = stored;
            cleaned += n;
        }
        // Then scale down while availability allows.
        let available: i32 = old.iter().map(du::rs_available_safe).sum::<i32>() + du::rs_available_safe(new_rs);
        let mut scaled = 0;
        if available > min_available {
            let total = available - min_available;
            for rs in old.iter_mut() {
                if scaled >= total {
                    break;
                }
                let spec = du::rs_replicas(rs);
                if spec == 0 {
                    continue;
                }
                let n = spec.min(total - scaled);
                let (_, stored) = self.scale_rs(rs, spec - n, None).await?;
                *rs = stored;
                scaled += n;
            }
        }
        Ok(cleaned + scaled > 0)
    }

    async fn rollout_recreate(&mut self, rs_list: Vec<ReplicaSet>) -> Result<(), Error> {
        let (mut new_rs, mut old) = self.new_and_old(rs_list, false).await?;
        // Scale down all old ReplicaSets.
        let mut scaled = false;
        for rs in old.iter_mut().filter(|rs| du::rs_replicas(rs) > 0) {
            let (s, stored) = self.scale_rs(rs, 0, None).await?;
            *rs = stored;
            scaled |= s;
        }
        if scaled || self.old_pods_running(&old) {
            return self.sync_rollout_status(new_rs.as_ref(), &old).await;
        }
        if new_rs.is_none() {
            let mut list = old.clone();
            list.extend(new_rs.take());
            let (n, o) = self.new_and_old(list, true).await?;
            new_rs = n;
            old = o;
        }
        if let Some(rs) = new_rs.as_mut() {
            let want = du::replicas(&self.d);
            let (_, stored) = self.scale_rs(rs, want, None).await?;
            *rs = stored;
        }
        let status = self.d.status.clone().unwrap_or_default();
        if du::deployment_complete(&self.d, &status) {
            self.cleanup(&old).await?;
        }
        self.sync_rollout_status(new_rs.as_ref(), &old).await
    }

    /// Whether any pod of an old ReplicaSet still exists (Recreate waits for them).
    fn old_pods_running(&self, old: &[ReplicaSet]) -> bool {
        if old.iter().any(|rs| du::rs_status_replicas(rs) > 0) {
            return true;
        }
        let uids: Vec<String> = old.iter().filter_map(|rs| rs.uid()).collect();
        let ns = self.d.namespace();
        self.ctx.pods.state().iter().any(|p| {
            p.namespace() == ns && cu::controller_ref(&p.metadata).is_some_and(|r| uids.contains(&r.uid)) && {
                let phase = p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("");
                p.metadata.deletion_timestamp.is_some() || (phase != "Succeeded" && phase != "Failed")
            }
        })
    }

    /// Paused or scaling: proportional scaling, history cleanup when paused, status.
    async fn sync(&mut self, rs_list: Vec<ReplicaSet>, paused: bool) -> Result<(), Error> {
        let (new_rs, mut old) = self.new_and_old(rs_list, false).await?;
        let mut new_rs = new_rs;
        self.scale(&mut new_rs, &mut old).await?;
        if paused {
            self.cleanup(&old).await?;
        }
        self.sync_status(new_rs.as_ref(), &old, false).await
    }

    /// Kubernetes' `scale`: one active ReplicaSet takes all; else proportional.
    async fn scale(&mut self, new_rs: &mut Option<ReplicaSet>, old: &mut [ReplicaSet]) -> Result<(), Error> {
        let want = du::replicas(&self.d);
        let mut all: Vec<ReplicaSet> = old.to_vec();
        all.extend(new_rs.clone());
        let active: Vec<usize> = (0..all.len()).filter(|&i| du::rs_replicas(&all[i]) > 0).collect();
        let target_idx = match active.len() {
            0 if new_rs.is_some() => Some(all.len() - 1),
            0 if !old.is_empty() => {
                // The newest old ReplicaSet.
                (0..old.len()).max_by_key(|&i| old[i].metadata.creation_timestamp.as_ref().map(|t| t.0))
            }
            1 => Some(active[0]),
            _ => None,
        };
        if let Some(i) = target_idx {
            if du::rs_replicas(&all[i]) != want {
                let (_, stored) = self.scale_rs(&all[i], want, None).await?;
                all[i] = stored;
            }
        } else if let Some(n) = new_rs.as_ref().filter(|n| {
            du::rs_replicas(n) == want
                && du::int_annotation(n, du::DESIRED_REPLICAS) == Some(want)
                && du::rs_available(n) == want
        }) {
            let _ = n;
            for i in 0..all.len() - 1 {
                if du::rs_replicas(&all[i]) > 0 {
                    let (_, stored) = self.scale_rs(&all[i], 0, None).await?;
                    all[i] = stored;
                }
            }
        } else if !du::is_recreate(&self.d) {
            let all_replicas: i32 = active.iter().map(|&i| du::rs_replicas(&all[i])).sum();
            let allowed = if want > 0 { want + du::max_surge(&self.d) } else { 0 };
            let to_add = allowed - all_replicas;
            let mut order = active.clone();
            let created = |i: usize| all[i].metadata.creation_timestamp.as_ref().map(|t| t.0);
            if to_add > 0 {
                // Larger first; newer first on ties.
                order.sort_by(|&a, &b| {
                    du::rs_replicas(&all[b]).cmp(&du::rs_replicas(&all[a])).then(created(b).cmp(&created(a)))
                });
            } else if to_add < 0 {
                // Larger first; older first on ties.
                order.sort_by(|&a, &b| {
                    du::rs_replicas(&all[b]).cmp(&du::rs_replicas(&all[a])).then(created(a).cmp(&created(b)))
                });
            }
            let op = if to_add > 0 { "up" } else { "down" };
            let mut added = 0;
            let mut sizes: BTreeMap<usize, i32> = BTreeMap::new();
            for &i in &order {
                let cur = du::rs_replicas(&all[i]);
                if to_add != 0 {
                    let p = proportion(&self.d, &all[i], to_add, added);
                    sizes.insert(i, cur + p);
                    added += p;
                } else {
                    sizes.insert(i, cur);
                }
            }
            if let (Some(&first), true) = (order.first(), to_add != 0) {
                let v = sizes.get(&first).copied().unwrap_or(0) + to_add - added;
                sizes.insert(first, v.max(0));
            }
            for &i in &order {
                let (_, stored) = self.scale_rs(&all[i], sizes.get(&i).copied().unwrap_or(0), Some(op)).await?;
                all[i] = stored;
            }
        }
        if new_rs.is_some() {
            *new_rs = all.pop();
        }
        old.clone_from_slice(&all[..old.len()]);
        Ok(())
    }

    /// Delete old ReplicaSets beyond revisionHistoryLimit (scaled to zero and settled only).
    async fn cleanup(&mut self, old: &[ReplicaSet]) -> Result<(), Error> {
        let Some(limit) = self.d.spec.revision_history_limit else { return Ok(()) };
        let mut cleanable: Vec<&ReplicaSet> =
            old.iter().filter(|rs| rs.metadata.deletion_timestamp.is_none()).collect();
        let diff = i32::try_from(cleanable.len()).unwrap_or(i32::MAX) - limit;
        if diff <= 0 {
            return Ok(());
        }
        cleanable.sort_by_key(|rs| {
            (du::revision(rs.metadata.annotations.as_ref()), rs.metadata.creation_timestamp.as_ref().map(|t| t.0))
        });
        for rs in cleanable.into_iter().take(usize::try_from(diff).unwrap_or(0)) {
            let observed = rs.status.as_ref().and_then(|s| s.observed_generation).unwrap_or(0);
            if du::rs_status_replicas(rs) != 0
                || du::rs_replicas(rs) != 0
                || rs.metadata.generation.unwrap_or(0) > observed
            {
                continue;
            }
            let dp = DeleteParams {
                preconditions: Some(Preconditions { uid: rs.uid(), resource_version: None }),
                ..Default::default()
            };
            match self.rs_api.delete(&rs.name_any(), &dp).await {
                Ok(_) => {}
                Err(e) if matches!(cu::api_code(&e), Some(404) | Some(409)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn calculate_status(&self, new_rs: Option<&ReplicaSet>, old: &[ReplicaSet]) -> DeploymentStatus {
        let all: Vec<&ReplicaSet> = old.iter().chain(new_rs).collect();
        let available: i32 = all.iter().map(|rs| du::rs_available(rs)).sum();
        let total_spec: i32 = all.iter().map(|rs| du::rs_replicas(rs)).sum();
        let ready: i32 = all.iter().map(|rs| rs.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0)).sum();
        let mut status = self.d.status.clone().unwrap_or_default();
        status.observed_generation = self.d.metadata.generation;
        status.replicas = Some(all.iter().map(|rs| du::rs_status_replicas(rs)).sum());
        status.updated_replicas = Some(new_rs.map_or(0, du::rs_status_replicas));
        status.ready_replicas = Some(ready);
        status.available_replicas = Some(available);
        status.unavailable_replicas = Some((total_spec - available).max(0));
        if available >= du::replicas(&self.d) - du::max_unavailable(&self.d) {
            du::set_condition(
                &mut status,
                du::new_condition(
                    "Available",
                    "True",
                    reason::MINIMUM_REPLICAS_AVAILABLE,
                    "Deployment has minimum availability.".into(),
                ),
            );
        } else {
            du::set_condition(
                &mut status,
                du::new_condition(
                    "Available",
                    "False",
                    reason::MINIMUM_REPLICAS_UNAVAILABLE,
                    "Deployment does not have minimum availability.".into(),
                ),
            );
        }
        status
    }

    /// Status for paused/scaling/deleting Deployments (no progress estimation).
    async fn sync_status(&mut self, new_rs: Option<&ReplicaSet>, old: &[ReplicaSet], _: bool) -> Result<(), Error> {
        let status = self.calculate_status(new_rs, old);
        self.write_if_changed(status).await
    }

    async fn write_if_changed(&mut self, status: DeploymentStatus) -> Result<(), Error> {
        if self.d.status.as_ref() == Some(&status) {
            return Ok(());
        }
        let mut d = self.d.clone();
        d.status = Some(status);
        self.write_status(d).await
    }

    /// Status plus Progressing estimation, Kubernetes' syncRolloutStatus.
    async fn sync_rollout_status(&mut self, new_rs: Option<&ReplicaSet>, old: &[ReplicaSet]) -> Result<(), Error> {
        let mut status = self.calculate_status(new_rs, old);
        if !du::has_progress_deadline(&self.d) {
            du::remove_condition(&mut status, "Progressing");
        }
        let current = self.d.status.as_ref().and_then(|s| du::condition(s, "Progressing")).cloned();
        let complete_before = status.replicas == status.updated_replicas
            && current.as_ref().is_some_and(|c| c.reason.as_deref() == Some(reason::NEW_RS_AVAILABLE));
        if du::has_progress_deadline(&self.d) && !complete_before {
            let name = self.name();
            if du::deployment_complete(&self.d, &status) {
                let msg = match new_rs {
                    Some(rs) => format!("ReplicaSet \"{}\" has successfully progressed.", rs.name_any()),
                    None => format!("Deployment \"{name}\" has successfully progressed."),
                };
                du::set_condition(&mut status, du::new_condition("Progressing", "True", reason::NEW_RS_AVAILABLE, msg));
            } else if du::deployment_progressing(&self.d, &status) {
                let msg = match new_rs {
                    Some(rs) => format!("ReplicaSet \"{}\" is progressing.", rs.name_any()),
                    None => format!("Deployment \"{name}\" is progressing."),
                };
                let mut c = du::new_condition("Progressing", "True", reason::RS_UPDATED, msg);
                if let Some(cur) = &current {
                    if cur.status.as_deref() == Some("True") {
                        c.last_transition_time = cur.last_transition_time.clone();
                    }
                    du::remove_condition(&mut status, "Progressing");
                }
                du::set_condition(&mut status, c);
            } else if du::deployment_timed_out(&self.d, &status, jiff::Timestamp::now()) {
                let msg = match new_rs {
                    Some(rs) => format!("ReplicaSet \"{}\" has timed out progressing.", rs.name_any()),
                    None => format!("Deployment \"{name}\" has timed out progressing."),
                };
                du::set_condition(&mut status, du::new_condition("Progressing", "False", reason::TIMED_OUT, msg));
            }
        }
        // ReplicaFailure from the ReplicaSets (the new one's first).
        let failure = new_rs
            .into_iter()
            .chain(old.iter())
            .filter_map(|rs| {
                rs.status
                    .as_ref()?
                    .conditions
                    .as_ref()?
                    .iter()
                    .find(|c| c.type_.as_deref() == Some("ReplicaFailure"))
                    .cloned()
            })
            .next();
        match failure {
            Some(c) => du::set_condition(
                &mut status,
                k8s_openapi::api::apps::v1::DeploymentCondition {
                    type_: c.type_,
                    status: c.status,
                    reason: c.reason,
                    message: c.message,
                    last_update_time: c.last_transition_time.clone(),
                    last_transition_time: c.last_transition_time,
                },
            ),
            None => du::remove_condition(&mut status, "ReplicaFailure"),
        }
        self.write_if_changed(status).await
    }

    /// When to look again for a rollout that may run into its progress deadline.
    fn requeue_stuck(&self) -> Action {
        let status = self.d.status.clone().unwrap_or_default();
        let Some(cond) = du::condition(&status, "Progressing") else { return Action::await_change() };
        if !du::has_progress_deadline(&self.d)
            || du::deployment_complete(&self.d, &status)
            || cond.reason.as_deref() == Some(reason::TIMED_OUT)
            || cond.reason.as_deref() == Some(reason::NEW_RS_AVAILABLE)
            || self.d.spec.paused.unwrap_or(false)
        {
            return Action::await_change();
        }
        let deadline = i64::from(self.d.spec.progress_deadline_seconds.unwrap_or(600));
        let from = cond.last_update_time.as_ref().map_or(0, |t| t.0.as_second());
        let left = from + deadline - jiff::Timestamp::now().as_second();
        Action::requeue(Duration::from_secs(u64::try_from(left.max(1)).unwrap_or(1)))
    }
}

/// Set the Deployment's revision annotation; returns whether it changed.
fn set_deployment_revision(d: &mut Deployment, rev: Option<String>) -> bool {
    let Some(rev) = rev else { return false };
    let a = d.metadata.annotations.get_or_insert_with(BTreeMap::new);
    if a.get(du::REVISION) == Some(&rev) {
        return false;
    }
    a.insert(du::REVISION.into(), rev);
    true
}

/// How many replicas the new ReplicaSet may have now (Kubernetes' NewRSNewReplicas).
pub fn new_rs_new_replicas(d: &Deployment, all: &[ReplicaSet], new_rs: &ReplicaSet) -> i32 {
    let want = du::replicas(d);
    if du::is_recreate(d) {
        return want;
    }
    let surge = du::max_surge(d);
    let current: i32 = all.iter().map(du::rs_pods_upper_bound).sum();
    let max_total = want + surge;
    if current >= max_total {
        return du::rs_replicas(new_rs);
    }
    let up = (max_total - current).min(want - du::rs_replicas(new_rs)).max(0);
    du::rs_replicas(new_rs) + up
}

/// Kubernetes' GetReplicaSetProportion.
fn proportion(d: &Deployment, rs: &ReplicaSet, to_add: i32, added: i32) -> i32 {
    if du::rs_replicas(rs) == 0 || to_add == 0 || to_add == added {
        return 0;
    }
    let fraction = {
        let want = du::replicas(d);
        if want == 0 {
            -du::rs_replicas(rs)
        } else {
            let dep = want + du::max_surge(d);
            let annotated = du::int_annotation(rs, du::MAX_REPLICAS)
                .unwrap_or_else(|| d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0));
            if annotated == 0 {
                0
            } else {
                let size = f64::from(du::rs_replicas(rs)) * f64::from(dep) / f64::from(annotated);
                #[allow(clippy::cast_possible_truncation)]
                let rounded = size.round() as i32;
                rounded - du::rs_replicas(rs)
            }
        }
    };
    let allowed = to_add - added;
    if to_add > 0 {
        fraction.min(allowed)
    } else {
        fraction.max(allowed)
    }
}
