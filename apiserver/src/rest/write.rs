//! create, update, patch, delete, deletecollection — and the update loop they share.

use super::services;
use super::{parse_body, Api, Reply, Request};
use crate::codec;
use crate::error::{from_storage, ApiError, Result};
use crate::filter::Filter;
pub(crate) use crate::request::FieldValidation;
use crate::storage::{Kv, Side, StorageError};
use ferry_api::kinds::AdmitError;
use ferry_api::managed;
use ferry_api::resources::{GenerationPolicy, StatusPolicy};
use ferry_api::{FieldError, ResourceInfo};
use serde_json::{json, Map, Value};

fn is_service(res: &ResourceInfo) -> bool {
    res.group.is_empty() && res.kind == "Service"
}

/// Namespaces that always exist.
pub const DEFAULT_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// How a candidate object is reconciled with the stored one before validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The main endpoint: server-owned metadata and status come from the stored object.
    Main,
    /// `/status`: only `.status` comes from the candidate.
    Status,
    /// Server-side mutations (scale, finalize): the candidate is already complete.
    Internal,
    /// `pods/binding`: sets `spec.nodeName` and the PodScheduled condition of an admitted pod.
    /// Like Internal, but without admission: nothing the client sent reaches the object but a
    /// node name, and Kubernetes' binding too writes straight to storage. (The scheduler's hot
    /// path: admission would decode, validate and re-encode the whole pod twice per binding.)
    Binding,
}

/// Which object an update targets, and how.
#[derive(Clone, Copy)]
pub(crate) struct Update<'a> {
    pub res: &'static ResourceInfo,
    pub namespace: Option<&'a str>,
    pub name: &'a str,
    pub mode: Mode,
    pub validation: FieldValidation,
    pub dry_run: bool,
    pub track: Track<'a>,
}

/// How a write is recorded in `metadata.managedFields`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Track<'a> {
    /// Not at all (the server's own mutations: binding, finalize, deletion bookkeeping).
    Off,
    /// An update by `manager`: it owns what it changed (`subresource`: written through `/status` or `/scale`).
    Update { manager: &'a str, subresource: Option<&'static str> },
    /// A server-side apply: the candidate already carries its managed fields.
    Applied,
}

impl Track<'_> {
    /// The writer to record, if this write is tracked and the kind has a merge schema here.
    fn writer<'w>(&'w self, res: &'w ResourceInfo, api_version: &'w str, now: &'w str) -> Option<managed::Writer<'w>> {
        let Track::Update { manager, subresource } = self else { return None };
        if res.storage_group != res.group && !(res.group.is_empty() && res.storage_group == "core") {
            return None; // served through another group's storage (events.k8s.io): tracked by the owner
        }
        Some(managed::Writer {
            manager,
            api_version,
            kind: res.kind,
            subresource: *subresource,
            scope: scope(res, *subresource),
            now,
        })
    }
}

/// What field tracking covers for a write through `subresource`.
fn scope(res: &ResourceInfo, subresource: Option<&str>) -> managed::Scope {
    match subresource {
        Some("status") => managed::Scope::Status,
        _ if res.has_status_subresource() => managed::Scope::Main,
        _ => managed::Scope::Whole,
    }
}

/// The outcome of a write.
pub(super) struct Written {
    /// The object as served, with its new resourceVersion.
    pub object: Value,
    /// Warnings for the client.
    pub warnings: Vec<String>,
}

pub(super) fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

pub(super) fn meta(v: &Value) -> &Map<String, Value> {
    static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    v.get("metadata").and_then(Value::as_object).unwrap_or_else(|| EMPTY.get_or_init(Map::new))
}

pub(super) fn meta_mut(v: &mut Value) -> &mut Map<String, Value> {
    if !v.get("metadata").is_some_and(Value::is_object) {
        v["metadata"] = Value::Object(Map::new());
    }
    match v.get_mut("metadata") {
        Some(Value::Object(m)) => m,
        _ => unreachable!("metadata was just made an object"),
    }
}

pub(super) fn meta_str<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    meta(v).get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn finalizers(v: &Value) -> Vec<String> {
    meta(v)
        .get("finalizers")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|f| f.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

fn namespace_finalizers(v: &Value) -> usize {
    v.pointer("/spec/finalizers").and_then(Value::as_array).map_or(0, Vec::len)
}

/// Check and default apiVersion/kind of a body.
fn check_type(res: &ResourceInfo, obj: &mut Value) -> Result<()> {
    let api_version = res.api_version();
    match obj.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => obj["apiVersion"] = Value::String(api_version),
        Some(v) if v == api_version => {}
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({api_version})"
            )))
        }
    }
    match obj.get("kind").and_then(Value::as_str) {
        None | Some("") => obj["kind"] = Value::String(res.kind.to_string()),
        Some(k) if k == res.kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                res.kind
            )))
        }
    }
    Ok(())
}

/// Reject metadata fields of the wrong JSON type before anything reads them (Kubernetes fails
/// such bodies in decoding, with a 400).
fn check_meta_types(res: &ResourceInfo, obj: &Value) -> Result<()> {
    let Some(meta) = obj.get("metadata") else { return Ok(()) };
    let bad = |what: &str| {
        ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: {what}",
            res.kind, res.version, res.kind
        ))
    };
    let Some(m) = meta.as_object() else {
        return Err(bad("metadata must be an object"));
    };
    for key in ["name", "generateName", "namespace", "resourceVersion", "uid"] {
        if m.get(key).is_some_and(|v| !v.is_string() && !v.is_null()) {
            return Err(bad(&format!("metadata.{key} must be a string")));
        }
    }
    Ok(())
}

/// Check the namespace in a body against the URL, defaulting it.
fn check_namespace(res: &ResourceInfo, obj: &mut Value, url_ns: Option<&str>) -> Result<()> {
    let m = meta_mut(obj);
    match (res.namespaced, url_ns) {
        (true, Some(ns)) => match m.get("namespace").and_then(Value::as_str) {
            None | Some("") => {
                m.insert("namespace".into(), Value::String(ns.into()));
            }
            Some(b) if b == ns => {}
            Some(_) => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ))
            }
        },
        (true, None) => return Err(ApiError::bad_request("a namespace is required for namespaced resources")),
        (false, _) => {
            m.remove("namespace");
        }
    }
    Ok(())
}

fn random_suffix() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

fn strict_error(res: &ResourceInfo, unknown: &[String]) -> ApiError {
    let list: Vec<String> = unknown.iter().map(|f| format!("unknown field \"{f}\"")).collect();
    ApiError::bad_request(format!(
        "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
        res.kind,
        res.version,
        res.kind,
        list.join(", ")
    ))
}

/// Run typed admission and apply `fieldValidation`.
fn admit(
    res: &ResourceInfo,
    name: &str,
    obj: Value,
    old: Option<&Value>,
    validation: FieldValidation,
) -> Result<(Value, Vec<String>)> {
    let admitted = res.ops.admit(obj, old).map_err(|e| match e {
        AdmitError::Decode(m) => ApiError::bad_request(m),
        AdmitError::Invalid(causes) => ApiError::invalid(res, name, causes),
    })?;
    let warnings = match validation {
        FieldValidation::Strict if !admitted.unknown_fields.is_empty() => {
            return Err(strict_error(res, &admitted.unknown_fields))
        }
        FieldValidation::Warn => admitted.unknown_fields.iter().map(|f| format!("unknown field \"{f}\"")).collect(),
        _ => Vec::new(),
    };
    Ok((admitted.object, warnings))
}

/// Whether `new` differs from `old` where generation is tracked.
fn generation_changed(policy: GenerationPolicy, old: &Value, new: &Value) -> bool {
    fn spec(v: &Value) -> Option<&Value> {
        v.get("spec").filter(|s| !s.is_null())
    }
    match policy {
        GenerationPolicy::None => false,
        GenerationPolicy::Spec => spec(old) != spec(new),
        GenerationPolicy::SpecAndAnnotations => {
            spec(old) != spec(new) || meta(old).get("annotations") != meta(new).get("annotations")
        }
    }
}

/// Kubernetes' DefaultTolerationSeconds admission: a pod that does not tolerate the `not-ready` or
/// `unreachable` NoExecute taints gets a toleration for it with these seconds, so its pods move off a
/// failed node after a while rather than at once.
fn add_default_tolerations(pod: &mut Value, not_ready: i64, unreachable: i64) {
    let tolerates = |tols: &[Value], key: &str| {
        tols.iter().any(|t| {
            let effect = t["effect"].as_str().unwrap_or("");
            let k = t["key"].as_str().unwrap_or("");
            let exists_any = k.is_empty() && t["operator"].as_str() == Some("Exists");
            (effect.is_empty() || effect == "NoExecute") && (k == key || exists_any)
        })
    };
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else { return };
    let mut tols = spec.get("tolerations").and_then(Value::as_array).cloned().unwrap_or_default();
    let before = tols.len();
    for (key, seconds) in [("node.kubernetes.io/not-ready", not_ready), ("node.kubernetes.io/unreachable", unreachable)]
    {
        if !tolerates(&tols, key) {
            tols.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": seconds}));
        }
    }
    if tols.len() != before {
        spec.insert("tolerations".into(), Value::Array(tols));
    }
}

/// QoS class of a pod, as the kubelet computes it.
fn qos_class(pod: &Value) -> &'static str {
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .filter_map(|k| pod.pointer(&format!("/spec/{k}")).and_then(Value::as_array))
        .flatten()
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in containers {
        let requests = c.pointer("/resources/requests").and_then(Value::as_object);
        let limits = c.pointer("/resources/limits").and_then(Value::as_object);
        for r in ["cpu", "memory"] {
            let req = requests.and_then(|m| m.get(r));
            let lim = limits.and_then(|m| m.get(r));
            any |= req.is_some() || lim.is_some();
            match (req, lim) {
                (_, None) => guaranteed = false,
                (Some(q), Some(l)) if q != l => guaranteed = false,
                _ => {}
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

/// Options of a delete, from the DeleteOptions body and the query.
#[derive(Debug, Default, Clone)]
pub(super) struct DeleteOptions {
    grace: Option<i64>,
    propagation: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    dry_run: bool,
}

impl DeleteOptions {
    pub(super) fn parse(req: &Request<'_>) -> Result<Self> {
        let q = &req.query;
        let mut o = DeleteOptions {
            grace: q.grace_period_seconds,
            propagation: q.propagation_policy.clone(),
            dry_run: q.dry_run,
            ..Default::default()
        };
        if q.orphan_dependents == Some(true) && o.propagation.is_none() {
            o.propagation = Some("Orphan".into());
        }
        if !req.body.is_empty() {
            let body = parse_body(req.content_type, &req.body)?;
            if let Some(g) = body.get("gracePeriodSeconds").and_then(Value::as_i64) {
                o.grace = Some(g);
            }
            if let Some(p) = body.get("propagationPolicy").and_then(Value::as_str) {
                o.propagation = Some(p.to_string());
            }
            if body.get("orphanDependents").and_then(Value::as_bool) == Some(true) && o.propagation.is_none() {
                o.propagation = Some("Orphan".into());
            }
            o.uid = body.pointer("/preconditions/uid").and_then(Value::as_str).map(str::to_string);
            o.resource_version =
                body.pointer("/preconditions/resourceVersion").and_then(Value::as_str).map(str::to_string);
            if let Some(d) = body.get("dryRun").and_then(Value::as_array) {
                o.dry_run |= d.iter().any(|v| v == "All");
            }
        }
        if let Some(p) = &o.propagation {
            if !["Foreground", "Background", "Orphan"].contains(&p.as_str()) {
                return Err(ApiError::bad_request(format!(
                    "DeleteOptions.propagationPolicy: Unsupported value: {p:?}: supported values: \"Foreground\", \"Background\", \"Orphan\""
                )));
            }
        }
        if o.grace.is_some_and(|g| g < 0) {
            o.grace = Some(0);
        }
        Ok(o)
    }
}

/// What a delete did.
pub(super) enum Deleted {
    /// The object is gone; its last state (resourceVersion = deletion revision).
    Gone(Value),
    /// Deletion is pending (finalizers, graceful termination); the object as now stored.
    Pending(Value),
}

/// How long one update keeps retrying compare-and-swap races before answering 409.
const UPDATE_BUDGET: std::time::Duration = std::time::Duration::from_secs(10);

impl Api {
    /// How long objects of `res` live after their last write: Events expire (`--event-ttl`), as in
    /// Kubernetes; everything else stays.
    fn ttl(&self, res: &ResourceInfo) -> Option<std::time::Duration> {
        (res.storage_group == "core" && res.storage_plural == "events").then_some(self.options.event_ttl).flatten()
    }

    /// Read, mutate, validate and compare-and-swap one object, retrying on conflicts; a
    /// resourceVersion the mutation leaves on the object must match the stored one (409 if not).
    ///
    /// The first attempt starts from the watch cache's copy (no etcd read); a failed
    /// compare-and-swap returns etcd's current value, which the next attempt uses. Decisions
    /// that a stale copy could get wrong — a pinned resourceVersion that does not match, or a
    /// no-op update — are confirmed against etcd first.
    pub(super) async fn update_loop(
        &self,
        u: Update<'_>,
        mut mutate: impl FnMut(&Value) -> Result<Value>,
    ) -> Result<Written> {
        let Update { res, namespace, name, mode, validation, dry_run, track } = u;
        let api_version = res.api_version();
        let key = res.key(namespace, name);
        let mut next: Option<Kv> =
            self.cache.get(res, &key).1.map(|o| Kv { key: key.clone(), value: o.raw.clone(), mod_revision: o.rev });
        let mut from_etcd = false;
        // Like GuaranteedUpdate: no fixed number of attempts (each lost race means someone
        // else's write went in), but a time budget so a pathological hot key answers 409.
        let deadline = std::time::Instant::now() + UPDATE_BUDGET;
        while std::time::Instant::now() < deadline {
            let kv = match next.take() {
                Some(kv) => kv,
                None => {
                    from_etcd = true;
                    let kv = self.store.get(&key).await.map_err(|e| from_storage(res, name, e))?;
                    kv.ok_or_else(|| ApiError::not_found(res, name))?
                }
            };
            let stored =
                codec::decode(&key, &kv.value, kv.mod_revision).map_err(|e| ApiError::internal(e.to_string()))?;
            // Most kinds are served as stored: no copy of the whole object then.
            let served;
            let current = match res.ops.served_as_stored() {
                true => &stored,
                false => {
                    served = res.ops.to_served(stored.clone());
                    &served
                }
            };
            let mut candidate = mutate(current)?;
            if let Some(rv) = meta_str(&candidate, "resourceVersion") {
                if rv != kv.mod_revision.to_string() {
                    if from_etcd {
                        return Err(ApiError::conflict(res, name));
                    }
                    continue; // the cached copy may be behind the client: ask etcd
                }
            }
            check_type(res, &mut candidate)?;
            check_meta_types(res, &candidate)?;
            self.reconcile_with_stored(res, name, namespace, mode, current, &mut candidate)?;
            let allocates = is_service(res) && mode != Mode::Status;
            if allocates && mode == Mode::Main {
                services::prepare_update(&mut candidate, current);
            }
            match (res.group, res.kind) {
                ("", "Pod") => super::priority::preserve_pod_priority(&mut candidate, &stored),
                ("scheduling.k8s.io", "PriorityClass") => self.check_single_default(res, &candidate).await?,
                _ => {}
            }
            let (mut object, warnings) = match mode {
                Mode::Binding => (candidate, Vec::new()),
                Mode::Internal => admit(res, name, candidate, None, validation)?,
                Mode::Main | Mode::Status => admit(res, name, candidate, Some(&stored), validation)?,
            };
            if res.generation != GenerationPolicy::None {
                let old_gen = meta(&stored).get("generation").and_then(Value::as_i64).unwrap_or(1);
                let changed = mode != Mode::Status && generation_changed(res.generation, &stored, &object);
                let gen = if changed { old_gen + 1 } else { old_gen };
                meta_mut(&mut object).insert("generation".into(), gen.into());
            }
            if let Some(w) = track.writer(res, &api_version, &now()) {
                managed::track_update(Some(&stored), &mut object, &w);
            }
            let allocation = match allocates {
                true => Some(self.allocate_service(res, name, &mut object, Some(&stored)).await?),
                false => None,
            };
            // Kubernetes deletes during update once a terminating object has no finalizers
            // left and no grace period running (pods in graceful termination stay).
            let terminating = meta(&object).contains_key("deletionTimestamp")
                && meta(&object).get("deletionGracePeriodSeconds").and_then(Value::as_i64).unwrap_or(0) == 0;
            let result = if terminating && finalizers(&object).is_empty() && namespace_finalizers(&object) == 0 {
                if dry_run {
                    return Ok(Written { object: current.clone(), warnings });
                }
                // The last finalizer is gone: the object goes, with what it held.
                let side = if is_service(res) { services::releases(&stored) } else { Side::default() };
                self.store.delete(&key, kv.mod_revision, &side).await
            } else {
                let bytes = codec::encode(&object);
                if bytes == kv.value || dry_run {
                    if !from_etcd && !dry_run {
                        continue; // confirm "nothing changed" against etcd, not a cached copy
                    }
                    // Nothing changed: no write, same resourceVersion.
                    codec::set_resource_version(&mut object, kv.mod_revision);
                    return Ok(Written { object: res.ops.to_served(object), warnings });
                }
                let mut side = allocation.as_ref().map(|a| a.side.clone()).unwrap_or_default();
                side.ttl = self.ttl(res);
                self.store.update(&key, bytes, kv.mod_revision, &side).await
            };
            match result {
                Ok(rev) => {
                    codec::set_resource_version(&mut object, rev);
                    return Ok(Written { object: res.ops.to_served(object), warnings });
                }
                // Someone wrote meanwhile: mutate the latest copy again, as Kubernetes'
                // GuaranteedUpdate does. A client-pinned resourceVersion (PUT body, or a patch
                // that sets one) no longer matches it, and the check above answers 409; a patch
                // without one simply applies to the newer object.
                Err(StorageError::Conflict { current: Some(latest), .. }) => {
                    next = Some(*latest);
                    from_etcd = true;
                }
                Err(StorageError::Claimed(k)) => {
                    if let Some(e) = allocation.as_ref().and_then(|a| a.conflict(res, name, &k)) {
                        return Err(e);
                    }
                    // A random pick lost a race: pick again.
                }
                Err(e) => return Err(from_storage(res, name, e)),
            }
        }
        Err(ApiError::conflict_msg(res, name, "too many concurrent updates; please retry"))
    }

    /// Bring server-owned parts of `candidate` in line with the stored object.
    fn reconcile_with_stored(
        &self,
        res: &ResourceInfo,
        name: &str,
        namespace: Option<&str>,
        mode: Mode,
        current: &Value,
        candidate: &mut Value,
    ) -> Result<()> {
        if mode == Mode::Status {
            let status = candidate.get("status").cloned();
            let managed_fields = candidate.pointer("/metadata/managedFields").cloned();
            // Kubernetes' Deployment status strategy keeps spec and labels only, so the
            // deployment controller records the revision annotation with its status write.
            let annotations = (res.generation == GenerationPolicy::SpecAndAnnotations)
                .then(|| meta(candidate).get("annotations").cloned())
                .flatten();
            *candidate = current.clone();
            if let Some(mf) = managed_fields {
                meta_mut(candidate).insert("managedFields".into(), mf);
            }
            match annotations {
                Some(a) => {
                    meta_mut(candidate).insert("annotations".into(), a);
                }
                None if res.generation == GenerationPolicy::SpecAndAnnotations => {
                    meta_mut(candidate).remove("annotations");
                }
                None => {}
            }
            match status {
                Some(s) => candidate["status"] = s,
                None => {
                    if let Value::Object(m) = candidate {
                        m.remove("status");
                    }
                }
            }
            return Ok(());
        }
        match meta_str(candidate, "name") {
            None => {
                meta_mut(candidate).insert("name".into(), Value::String(name.into()));
            }
            Some(n) if n == name => {}
            Some(n) => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )))
            }
        }
        check_namespace(res, candidate, namespace)?;
        let old_meta = meta(current);
        let m = meta_mut(candidate);
        for key in ["uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation"] {
            match old_meta.get(key) {
                Some(v) => m.insert(key.into(), v.clone()),
                None => m.remove(key),
            };
        }
        m.remove("resourceVersion");
        if old_meta.contains_key("deletionTimestamp") {
            let old: Vec<String> = finalizers(current);
            let added: Vec<String> = finalizers(candidate).into_iter().filter(|f| !old.contains(f)).collect();
            if !added.is_empty() {
                return Err(ApiError::invalid(
                    res,
                    name,
                    vec![FieldError::forbidden(
                        "metadata.finalizers",
                        format!("no new finalizers can be added if the object is being deleted, found new finalizers {added:?}"),
                    )],
                ));
            }
        }
        if mode == Mode::Main && res.has_status_subresource() {
            match current.get("status") {
                Some(s) => candidate["status"] = s.clone(),
                None => {
                    if let Value::Object(m) = candidate {
                        m.remove("status");
                    }
                }
            }
        }
        if mode == Mode::Main && res.kind == "Namespace" && res.group.is_empty() {
            candidate["spec"]["finalizers"] = current.pointer("/spec/finalizers").cloned().unwrap_or(json!([]));
        }
        Ok(())
    }

    /// Make sure a namespaced create goes to an existing, live namespace. Returns the
    /// namespace's key and revision, which the create then requires unchanged, so a namespace
    /// that starts terminating meanwhile cannot receive new objects. `live` skips the cache.
    async fn check_namespace_open(
        &self,
        res: &ResourceInfo,
        name: &str,
        namespace: &str,
        live: bool,
    ) -> Result<(String, i64)> {
        let ns_res = self.table.lookup("", "v1", "namespaces").ok_or_else(|| ApiError::internal("no namespaces"))?;
        let key = ns_res.key(None, namespace);
        let cached = if live { None } else { self.cache.get(ns_res, &key).1 };
        let (terminating, rev) = match cached {
            Some(obj) => (obj.sel.field("status.phase").as_deref() == Some("Terminating"), obj.rev),
            None => match self.store.get(&key).await.map_err(|e| from_storage(ns_res, namespace, e))? {
                Some(kv) => {
                    let phase = crate::codec::Selectable::from_stored(&kv.value, ns_res.fields).field("status.phase");
                    (phase.as_deref() == Some("Terminating"), kv.mod_revision)
                }
                None => return Err(ApiError::not_found(ns_res, namespace)),
            },
        };
        if terminating {
            return Err(ApiError::namespace_terminating(res, name, namespace));
        }
        Ok((key, rev))
    }

    /// POST: create an object.
    pub(super) async fn create(&self, req: &Request<'_>) -> Result<Reply> {
        let t = &req.target;
        let body = parse_body(req.content_type, &req.body)?;
        let track = Track::Update { manager: req.manager(), subresource: None };
        let written = self
            .create_object(t.res, t.namespace.as_deref(), body, req.query.field_validation, req.query.dry_run, track)
            .await?;
        let mut reply = Reply::value(201, &written.object);
        reply.warnings = written.warnings;
        Ok(reply)
    }

    /// Create `obj` (served form) in `namespace`.
    pub(super) async fn create_object(
        &self,
        res: &'static ResourceInfo,
        namespace: Option<&str>,
        mut obj: Value,
        validation: FieldValidation,
        dry_run: bool,
        track: Track<'_>,
    ) -> Result<Written> {
        check_type(res, &mut obj)?;
        check_meta_types(res, &obj)?;
        check_namespace(res, &mut obj, namespace)?;
        if meta_str(&obj, "resourceVersion").is_some() {
            return Err(ApiError::bad_request("resourceVersion should not be set on objects to be created"));
        }
        let generate = meta_str(&obj, "generateName").map(str::to_string);
        let fixed = meta_str(&obj, "name").map(str::to_string);
        if fixed.is_none() && generate.is_none() {
            return Err(ApiError::invalid(
                res,
                "",
                vec![FieldError::required("metadata.name", "name or generateName is required")],
            ));
        }
        let mut guard = match (namespace, res.namespaced) {
            (Some(ns), true) => {
                Some(self.check_namespace_open(res, fixed.as_deref().unwrap_or_default(), ns, false).await?)
            }
            _ => None,
        };
        {
            let m = meta_mut(&mut obj);
            m.insert("uid".into(), Value::String(uuid::Uuid::new_v4().to_string()));
            m.insert("creationTimestamp".into(), Value::String(now()));
            for key in ["deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"] {
                m.remove(key);
            }
            if res.generation != GenerationPolicy::None {
                m.insert("generation".into(), 1.into());
            } else {
                m.remove("generation");
            }
        }
        if res.status == StatusPolicy::ResetOnCreate {
            if let Value::Object(m) = &mut obj {
                m.remove("status");
            }
        }
        match (res.group, res.kind) {
            ("", "Pod") => {
                self.admit_pod_priority(res, &mut obj).await?;
                obj["status"] = json!({"phase": "Pending", "qosClass": qos_class(&obj)});
                add_default_tolerations(
                    &mut obj,
                    self.options.default_not_ready_toleration_seconds,
                    self.options.default_unreachable_toleration_seconds,
                );
            }
            ("", "Namespace") => obj["status"] = json!({"phase": "Active"}),
            ("scheduling.k8s.io", "PriorityClass") => self.check_single_default(res, &obj).await?,
            _ => {}
        }
        // Try a few generated names on collision, as Kubernetes' clients would have to.
        for attempt in 0..5 {
            let name = match (&fixed, &generate) {
                (Some(n), _) => n.clone(),
                (None, Some(prefix)) => format!("{prefix}{}", random_suffix()),
                (None, None) => unreachable!("checked above"),
            };
            meta_mut(&mut obj).insert("name".into(), Value::String(name.clone()));
            let (mut object, warnings) = admit(res, &name, obj.clone(), None, validation)?;
            let api_version = res.api_version();
            if let Some(w) = track.writer(res, &api_version, &now()) {
                managed::track_update(None, &mut object, &w);
            }
            let allocation = match is_service(res) {
                true => Some(self.allocate_service(res, &name, &mut object, None).await?),
                false => None,
            };
            if dry_run {
                return Ok(Written { object: res.ops.to_served(object), warnings });
            }
            let key = res.key(namespace, &name);
            let guard_ref = guard.as_ref().map(|(k, r)| (k.as_str(), *r));
            let mut side = allocation.as_ref().map(|a| a.side.clone()).unwrap_or_default();
            side.ttl = self.ttl(res);
            match self.store.create(&key, codec::encode(&object), guard_ref, &side).await {
                Ok(rev) => {
                    codec::set_resource_version(&mut object, rev);
                    return Ok(Written { object: res.ops.to_served(object), warnings });
                }
                Err(StorageError::AlreadyExists(_)) if fixed.is_none() && attempt < 4 => continue,
                Err(StorageError::Claimed(k)) => {
                    if let Some(e) = allocation.as_ref().and_then(|a| a.conflict(res, &name, &k)) {
                        return Err(e);
                    }
                    // A random pick lost a race: pick again.
                }
                Err(StorageError::GuardChanged(_)) if attempt < 4 => {
                    // The namespace changed since the cache saw it: look again, in etcd.
                    if let Some(ns) = namespace {
                        guard = Some(self.check_namespace_open(res, &name, ns, true).await?);
                    }
                }
                Err(e) => return Err(from_storage(res, &name, e)),
            }
        }
        // Every attempt collided (generated names, or allocations lost to concurrent creates).
        let name = fixed.or(generate).unwrap_or_default();
        Err(ApiError::conflict_msg(res, &name, "too many concurrent creates collided; please retry"))
    }

    /// PUT: replace an object.
    pub(super) async fn update(&self, req: &Request<'_>) -> Result<Reply> {
        let body = parse_body(req.content_type, &req.body)?;
        let written =
            self.update_loop(req.update(Mode::Main, req.query.field_validation), |_| Ok(body.clone())).await?;
        let mut reply = Reply::value(200, &written.object);
        reply.warnings = written.warnings;
        Ok(reply)
    }

    /// PATCH: merge patch or JSON patch onto the stored object.
    pub(super) async fn patch(&self, req: &Request<'_>) -> Result<Reply> {
        self.patch_with_mode(req, Mode::Main).await
    }

    pub(super) async fn patch_with_mode(&self, req: &Request<'_>, mode: Mode) -> Result<Reply> {
        let patch = Patch::parse(req.content_type, &req.body)?;
        if let Patch::Apply(config) = &patch {
            return self.apply(req, mode, config).await;
        }
        if req.query.force {
            return Err(ApiError::invalid_patch_options(FieldError::forbidden(
                "force",
                "may not be specified for non-apply patch",
            )));
        }
        let written = self.update_loop(req.update(mode, req.query.field_validation), |cur| patch.apply(cur)).await?;
        let mut reply = Reply::value(200, &written.object);
        reply.warnings = written.warnings;
        Ok(reply)
    }

    /// PATCH with `application/apply-patch+yaml`: server-side apply, creating the object if it is missing.
    async fn apply(&self, req: &Request<'_>, mode: Mode, config: &Value) -> Result<Reply> {
        let t = &req.target;
        let res = t.res;
        let name = t.name.as_deref().unwrap_or_default();
        let Some(manager) = req.query.field_manager.as_deref() else {
            return Err(ApiError::invalid_patch_options(FieldError::required(
                "fieldManager",
                "is required for apply patch",
            )));
        };
        if manager.len() > 128 {
            return Err(ApiError::invalid_patch_options(FieldError::too_long("fieldManager", 128)));
        }
        let api_version = res.api_version();
        let subresource = (mode == Mode::Status).then_some("status");
        let now = now();
        let writer = managed::Writer {
            manager,
            api_version: &api_version,
            kind: res.kind,
            subresource,
            scope: scope(res, subresource),
            now: &now,
        };
        if !managed::supports(&api_version, res.kind) {
            return Err(ApiError::unsupported_patch(res.kind));
        }
        let force = req.query.force;
        let to_api = |e: managed::ApplyError| match e {
            managed::ApplyError::Conflicts(c) => {
                let message = managed::ApplyError::Conflicts(c.clone()).to_string();
                ApiError::apply_conflict(&c, message)
            }
            managed::ApplyError::Invalid(m) => ApiError::unprocessable(m),
            managed::ApplyError::Unsupported(_) => ApiError::unsupported_patch(res.kind),
        };
        let mut update = req.update(mode, req.query.field_validation);
        update.track = Track::Applied;
        for _ in 0..3 {
            match self
                .update_loop(update, |cur| managed::apply(Some(cur), config, &writer, force).map_err(to_api))
                .await
            {
                Ok(written) => {
                    let mut reply = Reply::value(200, &written.object);
                    reply.warnings = written.warnings;
                    return Ok(reply);
                }
                Err(e) if e.code == 404 && mode == Mode::Main => {}
                Err(e) => return Err(e),
            }
            // Apply creates what is missing.
            let mut obj = managed::apply(None, config, &writer, force).map_err(to_api)?;
            match meta_str(&obj, "name") {
                None => {
                    meta_mut(&mut obj).insert("name".into(), Value::String(name.into()));
                }
                Some(n) if n == name => {}
                Some(n) => {
                    return Err(ApiError::bad_request(format!(
                        "the name of the object ({n}) does not match the name on the URL ({name})"
                    )))
                }
            }
            if obj.get("apiVersion").is_none() {
                obj["apiVersion"] = Value::String(api_version.clone());
            }
            if obj.get("kind").is_none() {
                obj["kind"] = Value::String(res.kind.into());
            }
            let created = self
                .create_object(
                    res,
                    t.namespace.as_deref(),
                    obj,
                    req.query.field_validation,
                    req.query.dry_run,
                    Track::Applied,
                )
                .await;
            match created {
                Ok(written) => {
                    let mut reply = Reply::value(201, &written.object);
                    reply.warnings = written.warnings;
                    return Ok(reply);
                }
                Err(e) if e.reason == "AlreadyExists" => continue, // created meanwhile: apply onto it
                Err(e) => return Err(e),
            }
        }
        Err(ApiError::conflict_msg(res, name, "the object was created and deleted concurrently; please retry"))
    }

    /// DELETE one object.
    pub(super) async fn delete(&self, req: &Request<'_>) -> Result<Reply> {
        let t = &req.target;
        let res = t.res;
        let name = t.name.as_deref().unwrap_or_default();
        let opts = DeleteOptions::parse(req)?;
        match self.delete_object(res, t.namespace.as_deref(), name, &opts).await? {
            Deleted::Pending(obj) => Ok(Reply::value(200, &obj)),
            Deleted::Gone(obj) if res.returns_deleted_object => Ok(Reply::value(200, &obj)),
            Deleted::Gone(obj) => {
                let mut details = json!({"name": name, "kind": res.plural});
                if !res.group.is_empty() {
                    details["group"] = Value::String(res.group.into());
                }
                if let Some(uid) = meta_str(&obj, "uid") {
                    details["uid"] = Value::String(uid.into());
                }
                Ok(Reply::value(
                    200,
                    &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}),
                ))
            }
        }
    }

    /// Delete one object honouring finalizers, graceful termination and propagation policy.
    pub(super) async fn delete_object(
        &self,
        res: &'static ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<Deleted> {
        if res.kind == "PriorityClass" && super::priority::is_system_class(name) {
            return Err(super::priority::system_class_delete_error(res, name));
        }
        let key = res.key(namespace, name);
        for _ in 0..16 {
            let kv = self.store.get(&key).await.map_err(|e| from_storage(res, name, e))?;
            let kv = kv.ok_or_else(|| ApiError::not_found(res, name))?;
            let stored =
                codec::decode(&key, &kv.value, kv.mod_revision).map_err(|e| ApiError::internal(e.to_string()))?;
            if let Some(uid) = &opts.uid {
                if meta_str(&stored, "uid") != Some(uid.as_str()) {
                    return Err(ApiError::conflict_msg(
                        res,
                        name,
                        &format!(
                            "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                            meta_str(&stored, "uid").unwrap_or_default()
                        ),
                    ));
                }
            }
            if let Some(rv) = &opts.resource_version {
                if *rv != kv.mod_revision.to_string() {
                    return Err(ApiError::conflict_msg(res, name, &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                        kv.mod_revision
                    )));
                }
            }
            let pinned = opts.resource_version.is_some();
            let mut next = stored.clone();
            let is_pod = res.group.is_empty() && res.kind == "Pod";
            let already = meta(&stored).contains_key("deletionTimestamp");
            let mut fins = finalizers(&stored);
            match opts.propagation.as_deref() {
                Some("Foreground") if !fins.iter().any(|f| f == "foregroundDeletion") => {
                    fins.push("foregroundDeletion".into())
                }
                Some("Orphan") if !fins.iter().any(|f| f == "orphan") => fins.push("orphan".into()),
                _ => {}
            }
            let grace = if is_pod { self.pod_grace(&stored, opts) } else { 0 };
            let pending = !fins.is_empty() || grace > 0 || namespace_finalizers(&stored) > 0;
            if pending {
                if already && fins == finalizers(&stored) && (!is_pod || grace > 0) {
                    return Ok(Deleted::Pending(res.ops.to_served(stored)));
                }
                let m = meta_mut(&mut next);
                if !already || is_pod {
                    let at = chrono::Utc::now() + chrono::Duration::seconds(grace);
                    m.insert("deletionTimestamp".into(), Value::String(at.format("%Y-%m-%dT%H:%M:%SZ").to_string()));
                    m.insert("deletionGracePeriodSeconds".into(), grace.into());
                }
                m.insert("finalizers".into(), json!(fins));
                if res.kind == "Namespace" && res.group.is_empty() {
                    next["status"]["phase"] = Value::String("Terminating".into());
                }
                if opts.dry_run {
                    return Ok(Deleted::Pending(res.ops.to_served(next)));
                }
                let bytes = codec::encode(&next);
                let side = Side { ttl: self.ttl(res), ..Default::default() };
                match self.store.update(&key, bytes, kv.mod_revision, &side).await {
                    Ok(rev) => {
                        codec::set_resource_version(&mut next, rev);
                        return Ok(Deleted::Pending(res.ops.to_served(next)));
                    }
                    Err(StorageError::Conflict { .. }) if !pinned => continue,
                    Err(e) => return Err(from_storage(res, name, e)),
                }
            }
            if opts.dry_run {
                return Ok(Deleted::Gone(res.ops.to_served(stored)));
            }
            let side = if is_service(res) { services::releases(&stored) } else { Side::default() };
            match self.store.delete(&key, kv.mod_revision, &side).await {
                Ok(rev) => {
                    codec::set_resource_version(&mut next, rev);
                    return Ok(Deleted::Gone(res.ops.to_served(next)));
                }
                Err(StorageError::Conflict { .. }) if !pinned => continue,
                Err(e) => return Err(from_storage(res, name, e)),
            }
        }
        Err(ApiError::conflict_msg(res, name, "too many concurrent updates; please retry"))
    }

    /// Grace period for deleting a pod: immediate unless it is bound to a node and running.
    fn pod_grace(&self, pod: &Value, opts: &DeleteOptions) -> i64 {
        let bound = pod.pointer("/spec/nodeName").and_then(Value::as_str).is_some_and(|n| !n.is_empty());
        let phase = pod.pointer("/status/phase").and_then(Value::as_str).unwrap_or("");
        if !bound || phase == "Succeeded" || phase == "Failed" {
            return 0;
        }
        let default = pod.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_i64).unwrap_or(30);
        let grace = opts.grace.unwrap_or(default);
        let current = meta(pod).get("deletionGracePeriodSeconds").and_then(Value::as_i64);
        // A second delete may shorten the grace period, never lengthen it.
        current.map_or(grace, |c| c.min(grace)).max(0)
    }

    /// DELETE a collection: every object matching the selectors.
    pub(super) async fn delete_collection(&self, req: &Request<'_>) -> Result<Reply> {
        let t = &req.target;
        let res = t.res;
        let opts = DeleteOptions::parse(req)?;
        let filter = Filter::new(t, &req.query)?;
        self.cache.wait_fresh().await.map_err(|e| ApiError::unavailable(e.to_string()))?;
        let snap = self.cache.snapshot(res, &filter.prefix, None);
        let mut deleted = Vec::new();
        for obj in snap.objects.iter().filter(|o| filter.matches(o)) {
            let ns = (!obj.sel.namespace.is_empty()).then_some(obj.sel.namespace.as_str());
            match self.delete_object(res, ns, &obj.sel.name, &opts).await {
                Ok(_) => deleted.push(obj.clone()),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Reply {
            code: 200,
            body: super::read::list_body(res, self.cache.revision(), None, deleted),
            warnings: Vec::new(),
        })
    }
}

/// Kubernetes' cap on JSON patch operations.
const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;

/// A parsed PATCH body.
pub(super) enum Patch {
    /// RFC 7386.
    Merge(Value),
    /// RFC 6902.
    Json(Value),
    /// Kubernetes strategic merge patch (built-in kinds).
    Strategic(Value),
    /// Server-side apply: the applied configuration.
    Apply(Value),
}

impl Patch {
    pub(super) fn parse(content_type: &str, body: &[u8]) -> Result<Self> {
        let mime = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        let parse = || -> Result<Value> {
            serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("the patch is not valid JSON: {e}")))
        };
        match mime.as_str() {
            "application/merge-patch+json" => {
                let v = parse()?;
                if !v.is_object() {
                    return Err(ApiError::bad_request("a merge patch must be a JSON object"));
                }
                Ok(Patch::Merge(v))
            }
            "application/strategic-merge-patch+json" => {
                let v = parse()?;
                if !v.is_object() {
                    return Err(ApiError::bad_request("a strategic merge patch must be a JSON object"));
                }
                Ok(Patch::Strategic(v))
            }
            "application/json-patch+json" => {
                let v = parse()?;
                match v.as_array() {
                    None => return Err(ApiError::bad_request("a JSON patch must be a JSON array of operations")),
                    Some(ops) if ops.len() > MAX_JSON_PATCH_OPERATIONS => {
                        return Err(ApiError::too_large_msg(format!(
                            "The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPERATIONS}, got {}",
                            ops.len()
                        )))
                    }
                    Some(_) => {}
                }
                Ok(Patch::Json(v))
            }
            "application/apply-patch+yaml" => {
                let v: Value = serde_yaml::from_slice(body)
                    .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
                if !v.is_object() {
                    return Err(ApiError::bad_request("the applied configuration must be a YAML or JSON object"));
                }
                Ok(Patch::Apply(v))
            }
            other => Err(ApiError::unsupported_media_type(other)),
        }
    }

    pub(super) fn apply(&self, current: &Value) -> Result<Value> {
        let mut v = current.clone();
        match self {
            Patch::Merge(p) => ferry_api::patch::merge_patch(&mut v, p),
            // A Scale has no lists, so a strategic merge is a plain merge (as in Kubernetes).
            Patch::Strategic(p) if current["kind"] == "Scale" => ferry_api::patch::merge_patch(&mut v, p),
            Patch::Strategic(p) => {
                let api_version = current["apiVersion"].as_str().unwrap_or_default().to_string();
                let kind = current["kind"].as_str().unwrap_or_default().to_string();
                ferry_api::strategic::strategic_merge_patch(&api_version, &kind, &mut v, p).map_err(|e| {
                    match e.status_code() {
                        415 => ApiError::unsupported_patch(&kind),
                        400 => ApiError::bad_request(e.to_string()),
                        _ => ApiError::unprocessable(e.to_string()),
                    }
                })?
            }
            Patch::Apply(_) => return Err(ApiError::unsupported_media_type("application/apply-patch+yaml")),
            Patch::Json(p) => ferry_api::patch::json_patch(&mut v, p).map_err(|e| {
                if e.is_malformed() {
                    ApiError::bad_request(e.to_string())
                } else {
                    ApiError::unprocessable(format!(
                        "the server rejected our request due to an error in our request: {e}"
                    ))
                }
            })?,
        }
        Ok(v)
    }
}

/// Create the namespaces that must always exist; safe with several API servers.
pub async fn ensure_default_namespaces(api: &Api) -> Result<()> {
    let res = api.table.lookup("", "v1", "namespaces").ok_or_else(|| ApiError::internal("no namespaces"))?;
    for ns in DEFAULT_NAMESPACES {
        let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        if api.create_if_missing(res, obj).await? {
            tracing::info!(namespace = ns, "created namespace");
        }
    }
    Ok(())
}

impl Api {
    /// Create a built-in object the server keeps (a default namespace, a system PriorityClass)
    /// unless it exists already (an earlier start or another API server made it): whether it
    /// was created now.
    pub(super) async fn create_if_missing(&self, res: &'static ResourceInfo, obj: Value) -> Result<bool> {
        match self.create_object(res, None, obj, FieldValidation::Strict, false, Track::Off).await {
            Ok(_) => Ok(true),
            Err(e) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_tolerations() {
        let mut pod = json!({"spec": {"containers": []}});
        add_default_tolerations(&mut pod, 300, 120);
        assert_eq!(
            pod["spec"]["tolerations"],
            json!([
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 120}
            ])
        );
        let mut own = json!({"spec": {"tolerations": [{"key": "node.kubernetes.io/unreachable", "operator": "Exists",
            "effect": "NoExecute", "tolerationSeconds": 5}]}});
        add_default_tolerations(&mut own, 300, 300);
        assert_eq!(
            own["spec"]["tolerations"].as_array().map(Vec::len),
            Some(2),
            "its own unreachable toleration stays"
        );
        assert_eq!(own["spec"]["tolerations"][0]["tolerationSeconds"], 5);
        let mut all = json!({"spec": {"tolerations": [{"operator": "Exists"}]}});
        add_default_tolerations(&mut all, 300, 300);
        assert_eq!(all["spec"]["tolerations"].as_array().map(Vec::len), Some(1), "tolerating everything is enough");
    }

    #[test]
    fn qos_classes() {
        let best = json!({"spec": {"containers": [{"name": "a"}]}});
        assert_eq!(qos_class(&best), "BestEffort");
        let g = json!({"spec": {"containers": [{"name": "a", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "1", "memory": "1Gi"}}}]}});
        assert_eq!(qos_class(&g), "Guaranteed");
        let b = json!({"spec": {"containers": [{"name": "a", "resources": {"requests": {"cpu": "1"}}}]}});
        assert_eq!(qos_class(&b), "Burstable");
    }

    #[test]
    fn generation_rules() {
        let a = json!({"metadata": {"annotations": {"x": "1"}}, "spec": {"replicas": 1}});
        let b = json!({"metadata": {"annotations": {"x": "2"}}, "spec": {"replicas": 1}});
        assert!(!generation_changed(GenerationPolicy::Spec, &a, &b));
        assert!(generation_changed(GenerationPolicy::SpecAndAnnotations, &a, &b));
        let c = json!({"metadata": {}, "spec": {"replicas": 2}});
        assert!(generation_changed(GenerationPolicy::Spec, &a, &c));
        assert!(!generation_changed(GenerationPolicy::None, &a, &c));
    }
}
