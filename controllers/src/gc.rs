//! The garbage collector: ownerReferences cascade, like kube-controller-manager's.
//!
//! It watches every listable, deletable kind found through discovery and keeps only a graph of
//! metadata (uid → owners, finalizers, deleting; owner → dependents). A work queue of uids is
//! processed one at a time:
//! * an object whose owners are all gone is deleted (background cascade);
//! * an object with some live owners loses references to gone owners;
//! * an owner with the `orphan` finalizer: its dependents lose their reference to it, then the
//!   finalizer goes;
//! * an owner with the `foregroundDeletion` finalizer: its dependents are deleted (foreground
//!   again if they have dependents themselves); the finalizer goes once no dependent with
//!   `blockOwnerDeletion` is left.
//!
//! An owner missing from the graph is looked up live before anything is deleted, so a lagging
//! watch never causes a wrong deletion.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, Preconditions, PropagationPolicy};
use kube::discovery::{verbs, ApiCapabilities, ApiResource, Discovery, Scope};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, ResourceExt};
use serde_json::json;
use tokio::sync::mpsc;

const ORPHAN: &str = "orphan";
const FOREGROUND: &str = "foregroundDeletion";

/// A watched kind.
#[derive(Clone, Debug)]
pub struct Kind {
    /// Group/version/kind/plural.
    pub ar: ApiResource,
    /// Namespaced or not.
    pub namespaced: bool,
}

/// Every listable, watchable, deletable kind the API server serves (Events excluded: they are
/// never owners and churn a lot).
pub async fn discover(client: &kube::Client) -> Result<Vec<Kind>, kube::Error> {
    let discovery = Discovery::new(client.clone()).run().await?;
    let mut out: Vec<Kind> = Vec::new();
    let mut seen = HashSet::new();
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            if !usable(&caps) || ar.plural == "events" || !seen.insert((ar.group.clone(), ar.plural.clone())) {
                continue;
            }
            out.push(Kind { namespaced: caps.scope == Scope::Namespaced, ar });
        }
    }
    Ok(out)
}

fn usable(caps: &ApiCapabilities) -> bool {
    [verbs::LIST, verbs::WATCH, verbs::DELETE].iter().all(|v| caps.supports_operation(v))
}

#[derive(Clone, Debug)]
struct Node {
    kind: usize,
    namespace: Option<String>,
    name: String,
    owners: Vec<OwnerReference>,
    finalizers: Vec<String>,
    deleting: bool,
}

#[derive(Default)]
struct Graph {
    nodes: HashMap<String, Node>,
    dependents: HashMap<String, HashSet<String>>,
}

impl Graph {
    fn insert(&mut self, uid: &str, node: Node) -> Vec<String> {
        let mut touched: Vec<String> = Vec::new();
        if let Some(old) = self.nodes.get(uid) {
            for o in &old.owners {
                if let Some(d) = self.dependents.get_mut(&o.uid) {
                    d.remove(uid);
                }
                touched.push(o.uid.clone());
            }
        }
        for o in &node.owners {
            self.dependents.entry(o.uid.clone()).or_default().insert(uid.to_string());
            touched.push(o.uid.clone());
        }
        self.nodes.insert(uid.to_string(), node);
        touched
    }

    /// Remove a node; returns (its owners, its dependents).
    fn remove(&mut self, uid: &str) -> (Vec<String>, Vec<String>) {
        let owners = match self.nodes.remove(uid) {
            Some(n) => n.owners.iter().map(|o| o.uid.clone()).collect::<Vec<_>>(),
            None => Vec::new(),
        };
        for o in &owners {
            if let Some(d) = self.dependents.get_mut(o) {
                d.remove(uid);
                if d.is_empty() {
                    self.dependents.remove(o);
                }
            }
        }
        let deps = self.dependents.get(uid).map(|d| d.iter().cloned().collect()).unwrap_or_default();
        (owners, deps)
    }
}

/// Shared state of the collector.
struct Gc {
    client: kube::Client,
    kinds: Vec<Kind>,
    graph: Mutex<Graph>,
    queue: mpsc::UnboundedSender<String>,
}

impl Gc {
    fn graph(&self) -> std::sync::MutexGuard<'_, Graph> {
        self.graph.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn enqueue(&self, uid: String) {
        let _ = self.queue.send(uid);
    }

    fn api(&self, kind: usize, namespace: Option<&str>) -> Option<Api<DynamicObject>> {
        let k = self.kinds.get(kind)?;
        Some(match (k.namespaced, namespace) {
            (true, Some(ns)) => Api::namespaced_with(self.client.clone(), ns, &k.ar),
            _ => Api::all_with(self.client.clone(), &k.ar),
        })
    }

    fn observe(&self, kind: usize, obj: &DynamicObject) {
        let Some(uid) = obj.uid() else { return };
        let node = Node {
            kind,
            namespace: obj.namespace(),
            name: obj.name_any(),
            owners: obj.metadata.owner_references.clone().unwrap_or_default(),
            finalizers: obj.finalizers().to_vec(),
            deleting: obj.metadata.deletion_timestamp.is_some(),
        };
        let interesting = !node.owners.is_empty() || node.deleting;
        let touched = self.graph().insert(&uid, node);
        for o in touched {
            if self.graph().nodes.get(&o).is_some_and(|n| n.deleting) {
                self.enqueue(o);
            }
        }
        if interesting {
            self.enqueue(uid);
        }
    }

    fn forget(&self, uid: &str) {
        let (owners, deps) = self.graph().remove(uid);
        for u in owners.into_iter().chain(deps) {
            self.enqueue(u);
        }
    }
}

/// Run the collector until the future is dropped.
pub async fn run(client: kube::Client, kinds: Vec<Kind>) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let gc =
        Arc::new(Gc { client: client.clone(), kinds: kinds.clone(), graph: Mutex::new(Graph::default()), queue: tx });
    let (synced_tx, mut synced_rx) = mpsc::unbounded_channel::<usize>();
    let mut watches = Vec::new();
    for (i, k) in kinds.iter().enumerate() {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &k.ar);
        let gc = gc.clone();
        let synced = synced_tx.clone();
        watches.push(tokio::spawn(async move {
            let stream = watcher(api, watcher::Config::default()).default_backoff();
            futures::pin_mut!(stream);
            let mut seen: Option<HashSet<String>> = None;
            while let Some(ev) = stream.next().await {
                match ev {
                    Ok(watcher::Event::Apply(o)) => gc.observe(i, &o),
                    Ok(watcher::Event::Delete(o)) => {
                        if let Some(uid) = o.uid() {
                            gc.forget(&uid);
                        }
                    }
                    Ok(watcher::Event::Init) => seen = Some(HashSet::new()),
                    Ok(watcher::Event::InitApply(o)) => {
                        if let (Some(s), Some(uid)) = (seen.as_mut(), o.uid()) {
                            s.insert(uid);
                        }
                        gc.observe(i, &o);
                    }
                    Ok(watcher::Event::InitDone) => {
                        let seen = seen.take().unwrap_or_default();
                        let gone: Vec<String> = gc
                            .graph()
                            .nodes
                            .iter()
                            .filter(|(uid, n)| n.kind == i && !seen.contains(*uid))
                            .map(|(uid, _)| uid.clone())
                            .collect();
                        for uid in gone {
                            gc.forget(&uid);
                        }
                        let _ = synced.send(i);
                    }
                    Err(e) => tracing::debug!(kind = %gc.kinds[i].ar.kind, error = %e, "gc watch failed; retrying"),
                }
            }
        }));
    }
    drop(synced_tx);
    // Act only once every kind has been listed once (or after a generous wait).
    let mut pending: HashSet<usize> = (0..kinds.len()).collect();
    let wait = tokio::time::sleep(Duration::from_secs(30));
    tokio::pin!(wait);
    while !pending.is_empty() {
        tokio::select! {
            Some(i) = synced_rx.recv() => { pending.remove(&i); }
            _ = &mut wait => break,
        }
    }
    let _guard = AbortOnDrop(watches);
    while let Some(uid) = rx.recv().await {
        if let Err(e) = process(&gc, &uid).await {
            tracing::debug!(uid, error = %e, "gc: retrying");
            let gc = gc.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(500)).await;
                gc.enqueue(uid);
            });
        }
    }
}

struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for h in &self.0 {
            h.abort();
        }
    }
}

#[derive(PartialEq)]
enum OwnerState {
    Solid,
    Dangling,
    Waiting,
}

async fn owner_state(gc: &Gc, node: &Node, r: &OwnerReference) -> Result<OwnerState, kube::Error> {
    if let Some(owner) = gc.graph().nodes.get(&r.uid) {
        return Ok(if owner.deleting && owner.finalizers.iter().any(|f| f == FOREGROUND) {
            OwnerState::Waiting
        } else {
            OwnerState::Solid
        });
    }
    // Not in the graph: ask the API server, as Kubernetes does before deleting anything.
    let (group, version) = match r.api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", r.api_version.as_str()),
    };
    let Some(kind) =
        gc.kinds.iter().position(|k| k.ar.group == group && k.ar.version == version && k.ar.kind == r.kind)
    else {
        // A kind we cannot look up: never delete on a guess.
        return Ok(OwnerState::Solid);
    };
    let Some(api) = gc.api(kind, node.namespace.as_deref()) else { return Ok(OwnerState::Solid) };
    match api.get_opt(&r.name).await? {
        Some(o) if o.uid().as_deref() == Some(r.uid.as_str()) => {
            Ok(if o.metadata.deletion_timestamp.is_some() && o.finalizers().iter().any(|f| f == FOREGROUND) {
                OwnerState::Waiting
            } else {
                OwnerState::Solid
            })
        }
        _ => Ok(OwnerState::Dangling),
    }
}

async fn process(gc: &Gc, uid: &str) -> Result<(), kube::Error> {
    let Some(node) = gc.graph().nodes.get(uid).cloned() else { return Ok(()) };
    let Some(api) = gc.api(node.kind, node.namespace.as_deref()) else { return Ok(()) };
    if node.deleting {
        if node.finalizers.iter().any(|f| f == ORPHAN) {
            let deps: Vec<(String, Node)> = dependents(gc, uid);
            for (_, dep) in deps {
                if let Some(dep_api) = gc.api(dep.kind, dep.namespace.as_deref()) {
                    let refs: Vec<_> = dep.owners.iter().filter(|o| o.uid != uid).cloned().collect();
                    patch_owner_refs(&dep_api, &dep, refs).await?;
                }
            }
            return remove_finalizer(&api, uid, &node, ORPHAN).await;
        }
        if node.finalizers.iter().any(|f| f == FOREGROUND) {
            let deps = dependents(gc, uid);
            let mut blocking = 0;
            for (dep_uid, dep) in &deps {
                let blocks = dep.owners.iter().any(|o| o.uid == uid && o.block_owner_deletion == Some(true));
                if blocks {
                    blocking += 1;
                }
                if !dep.deleting {
                    let has_deps = gc.graph().dependents.get(dep_uid).is_some_and(|d| !d.is_empty());
                    delete(
                        gc,
                        dep_uid,
                        dep,
                        if has_deps { PropagationPolicy::Foreground } else { PropagationPolicy::Background },
                    )
                    .await?;
                }
            }
            if blocking == 0 {
                return remove_finalizer(&api, uid, &node, FOREGROUND).await;
            }
        }
        return Ok(());
    }
    if node.owners.is_empty() {
        return Ok(());
    }
    let mut solid = 0;
    let mut gone = Vec::new();
    let mut waiting = 0;
    for r in &node.owners {
        match owner_state(gc, &node, r).await? {
            OwnerState::Solid => solid += 1,
            OwnerState::Dangling => gone.push(r.uid.clone()),
            OwnerState::Waiting => {
                waiting += 1;
                gone.push(r.uid.clone());
            }
        }
    }
    if solid > 0 {
        if !gone.is_empty() {
            let refs: Vec<_> = node.owners.iter().filter(|o| !gone.contains(&o.uid)).cloned().collect();
            patch_owner_refs(&api, &node, refs).await?;
        }
        return Ok(());
    }
    let has_deps = gc.graph().dependents.get(uid).is_some_and(|d| !d.is_empty());
    let policy = if node.finalizers.iter().any(|f| f == ORPHAN) {
        PropagationPolicy::Orphan
    } else if node.finalizers.iter().any(|f| f == FOREGROUND) || (waiting > 0 && has_deps) {
        PropagationPolicy::Foreground
    } else {
        PropagationPolicy::Background
    };
    delete(gc, uid, &node, policy).await
}

fn dependents(gc: &Gc, uid: &str) -> Vec<(String, Node)> {
    let g = gc.graph();
    g.dependents
        .get(uid)
        .map(|d| d.iter().filter_map(|u| g.nodes.get(u).map(|n| (u.clone(), n.clone()))).collect())
        .unwrap_or_default()
}

async fn delete(gc: &Gc, uid: &str, node: &Node, policy: PropagationPolicy) -> Result<(), kube::Error> {
    let Some(api) = gc.api(node.kind, node.namespace.as_deref()) else { return Ok(()) };
    let dp = DeleteParams {
        propagation_policy: Some(policy),
        preconditions: Some(Preconditions { uid: Some(uid.to_string()), resource_version: None }),
        ..Default::default()
    };
    tracing::debug!(name = %node.name, kind = %gc.kinds[node.kind].ar.kind, "gc: deleting");
    match api.delete(&node.name, &dp).await {
        Ok(_) => Ok(()),
        Err(e) if matches!(crate::util::api_code(&e), Some(404) | Some(409)) => Ok(()),
        Err(e) => Err(e),
    }
}

async fn patch_owner_refs(api: &Api<DynamicObject>, node: &Node, refs: Vec<OwnerReference>) -> Result<(), kube::Error> {
    let patch: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/ownerReferences", "value": node.owners},
        {"op": "add", "path": "/metadata/ownerReferences", "value": refs},
    ]))
    .map_err(kube::Error::SerdeError)?;
    match api.patch(&node.name, &PatchParams::default(), &Patch::Json::<()>(patch)).await {
        Ok(_) => Ok(()),
        Err(e) if crate::util::api_code(&e) == Some(404) => Ok(()),
        Err(e) => Err(e),
    }
}

async fn remove_finalizer(api: &Api<DynamicObject>, uid: &str, node: &Node, f: &str) -> Result<(), kube::Error> {
    let left: Vec<&String> = node.finalizers.iter().filter(|x| x.as_str() != f).collect();
    let patch: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/uid", "value": uid},
        {"op": "test", "path": "/metadata/finalizers", "value": node.finalizers},
        {"op": "add", "path": "/metadata/finalizers", "value": left},
    ]))
    .map_err(kube::Error::SerdeError)?;
    match api.patch(&node.name, &PatchParams::default(), &Patch::Json::<()>(patch)).await {
        Ok(_) => Ok(()),
        Err(e) if crate::util::api_code(&e) == Some(404) => Ok(()),
        Err(e) => Err(e),
    }
}
