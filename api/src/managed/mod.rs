//! Field management: `metadata.managedFields` and server-side apply.
//!
//! Follows sigs.k8s.io/structured-merge-diff as the Kubernetes API server uses it (`merge.Updater`):
//! - every write records which *manager* (the `fieldManager` query parameter, or the client's User-Agent
//!   prefix) set which fields. An update or patch gives its manager the fields it changed and takes them
//!   from everyone else ([`track_update`]);
//! - an apply ([`apply`]) merges the applied configuration into the live object by the kind's merge schema
//!   (structs and maps field by field, map lists by their key fields, sets by value, everything else whole),
//!   makes the applied fields the manager's whole set, removes fields it applied last time and no longer
//!   applies unless another manager owns them, and refuses to change a field another manager owns (a
//!   conflict) unless forced, in which case that manager loses the field.
//!
//! The merge schema per kind is [`schema`], generated from k8s-openapi. Paths are the `FieldsV1` elements
//! (`f:`, `k:`, `v:`) in a [`FieldSet`]. The server-owned fields Kubernetes never tracks (`apiVersion`, `kind`,
//! `metadata.name`, `uid`, `resourceVersion`, …) are left out of every set, and so is `status` on the main
//! endpoint of a kind with a status subresource, or everything but `status` on that subresource.
//!
//! Simplifications against structured-merge-diff, none of which the clients Ferry targets rely on: one
//! apiVersion per kind (no conversion of sets between versions); no cap on the number of update managers; a
//! `null` in an applied configuration is treated as absent.

mod fieldset;
mod schema;
mod schema_table;

pub use fieldset::{display_path, FieldSet};
use schema::{item_key, Ty};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashSet};

/// Which part of an object a write may touch, for field tracking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The whole object (kinds without a status subresource).
    Whole,
    /// The main endpoint of a kind with a status subresource: `status` is not tracked.
    Main,
    /// The `status` subresource: only `status` is tracked.
    Status,
}

/// Who writes, and how.
#[derive(Debug, Clone, Copy)]
pub struct Writer<'a> {
    /// The field manager.
    pub manager: &'a str,
    /// `apiVersion` of the kind.
    pub api_version: &'a str,
    /// The kind.
    pub kind: &'a str,
    /// The subresource written through (`status`), if any.
    pub subresource: Option<&'a str>,
    /// What is tracked.
    pub scope: Scope,
    /// The current time, RFC 3339, for the entry's `time`.
    pub now: &'a str,
}

/// One field-ownership conflict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The other manager, as Kubernetes prints it: `"kubectl-client-side-apply" using apps/v1`.
    pub manager: String,
    /// The field, e.g. `.spec.replicas`.
    pub field: String,
}

/// Why an apply failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// Fields the applied configuration would change are owned by other managers (HTTP 409).
    #[error("{}", conflict_message(.0))]
    Conflicts(Vec<Conflict>),
    /// The configuration cannot be applied (HTTP 422): a map-list item without its key, duplicate keys, a
    /// `metadata.managedFields` in the configuration.
    #[error("{0}")]
    Invalid(String),
    /// No merge schema for this kind (HTTP 415).
    #[error("server-side apply is not supported for {0}")]
    Unsupported(String),
}

fn conflict_message(conflicts: &[Conflict]) -> String {
    if let [c] = conflicts {
        return format!("Apply failed with 1 conflict: conflict with {}: {}", c.manager, c.field);
    }
    let mut by_manager: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for c in conflicts {
        by_manager.entry(&c.manager).or_default().push(&c.field);
    }
    let mut s = format!("Apply failed with {} conflicts: conflicts with", conflicts.len());
    if by_manager.len() == 1 {
        for (m, fields) in &by_manager {
            s.push_str(&format!(" {m}:"));
            for f in fields {
                s.push_str(&format!("\n- {f}"));
            }
        }
    } else {
        for (m, fields) in &by_manager {
            s.push_str(&format!("\n{m}:"));
            for f in fields {
                s.push_str(&format!("\n- {f}"));
            }
        }
    }
    s
}

/// Whether Ferry has a merge schema for this kind.
pub fn supports(api_version: &str, kind: &str) -> bool {
    schema::root(api_version, kind).is_some()
}

// ---------------------------------------------------------------------------------------------------------
// managedFields entries

#[derive(Debug, Clone, PartialEq)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    time: Option<String>,
    subresource: String,
    fields: FieldSet,
}

impl Entry {
    fn is(&self, w: &Writer<'_>, operation: &str) -> bool {
        self.manager == w.manager
            && self.operation == operation
            && self.subresource == w.subresource.unwrap_or_default()
            && (operation == "Apply" || self.api_version == w.api_version)
    }

    /// The manager as conflicts name it.
    fn display(&self) -> String {
        if self.operation == "Update" {
            format!("{:?} using {}", self.manager, self.api_version)
        } else {
            format!("{:?}", self.manager)
        }
    }

    fn parse(v: &Value) -> Result<Entry, String> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        let operation = s("operation").unwrap_or_default();
        if operation != "Apply" && operation != "Update" {
            return Err(format!("operation must be Apply or Update, not {operation:?}"));
        }
        if s("fieldsType").is_some_and(|t| t != "FieldsV1") {
            return Err("fieldsType must be FieldsV1".into());
        }
        let fields = match v.get("fieldsV1") {
            Some(f) => FieldSet::from_fields_v1(f)?,
            None => FieldSet::default(),
        };
        Ok(Entry {
            manager: s("manager").unwrap_or_default(),
            operation,
            api_version: s("apiVersion").unwrap_or_default(),
            time: s("time"),
            subresource: s("subresource").unwrap_or_default(),
            fields,
        })
    }

    fn encode(&self) -> Value {
        let mut m = Map::new();
        m.insert("manager".into(), self.manager.clone().into());
        m.insert("operation".into(), self.operation.clone().into());
        m.insert("apiVersion".into(), self.api_version.clone().into());
        if let Some(t) = &self.time {
            m.insert("time".into(), t.clone().into());
        }
        m.insert("fieldsType".into(), "FieldsV1".into());
        m.insert("fieldsV1".into(), self.fields.to_fields_v1());
        if !self.subresource.is_empty() {
            m.insert("subresource".into(), self.subresource.clone().into());
        }
        Value::Object(m)
    }
}

/// The entries of `obj`'s `metadata.managedFields`; entries Ferry cannot read are dropped, as Kubernetes
/// resets unreadable managed fields rather than failing the write.
fn entries(obj: &Value) -> Vec<Entry> {
    match obj.pointer("/metadata/managedFields").and_then(Value::as_array) {
        Some(list) => {
            let parsed: Result<Vec<Entry>, String> = list.iter().map(Entry::parse).collect();
            parsed.unwrap_or_default()
        }
        None => Vec::new(),
    }
}

fn store_entries(obj: &mut Value, mut list: Vec<Entry>) {
    list.retain(|e| !e.fields.is_empty());
    list.sort_by(|a, b| {
        (a.operation.as_str(), a.time.as_deref(), a.manager.as_str(), a.api_version.as_str(), a.subresource.as_str())
            .cmp(&(
                b.operation.as_str(),
                b.time.as_deref(),
                b.manager.as_str(),
                b.api_version.as_str(),
                b.subresource.as_str(),
            ))
    });
    let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else { return };
    if list.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".into(), Value::Array(list.iter().map(Entry::encode).collect()));
    }
}

fn new_entry(w: &Writer<'_>, operation: &str) -> Entry {
    Entry {
        manager: w.manager.to_owned(),
        operation: operation.to_owned(),
        api_version: w.api_version.to_owned(),
        time: Some(w.now.to_owned()),
        subresource: w.subresource.unwrap_or_default().to_owned(),
        fields: FieldSet::default(),
    }
}

/// Remove the fields no manager ever owns, and what `scope` excludes, from a set of a whole object.
fn untracked_removed(mut set: FieldSet, scope: Scope) -> FieldSet {
    set.remove_child("f:apiVersion");
    set.remove_child("f:kind");
    match scope {
        Scope::Whole => {}
        Scope::Main => set.remove_child("f:status"),
        Scope::Status => {
            let status = set.child("f:status").cloned().unwrap_or_default();
            set = FieldSet::default();
            set.insert("f:status".into(), status);
        }
    }
    if let Some(meta) = set.child("f:metadata") {
        let mut meta = meta.clone();
        for f in [
            "name",
            "namespace",
            "creationTimestamp",
            "selfLink",
            "uid",
            "generation",
            "managedFields",
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ] {
            meta.remove_child(&format!("f:{f}"));
        }
        set.remove_child("f:metadata");
        set.insert("f:metadata".into(), meta);
    }
    set
}

// ---------------------------------------------------------------------------------------------------------
// Walking values by schema

/// The set of fields present in `v` (the node for `v` itself), as an apply owns them.
fn fields_of(v: &Value, ty: &'static Ty) -> FieldSet {
    fields(v, ty, false)
}

/// The set of fields in `v` as an update that adds `v` owns them: a map or list that appears is owned as a
/// whole too (`.`), as in Kubernetes, where they are absent until set. Structs are not: Kubernetes compares
/// against typed zero values, in which most structs are already present.
fn added(v: &Value, ty: &'static Ty) -> FieldSet {
    fields(v, ty, true)
}

fn fields(v: &Value, ty: &'static Ty, added: bool) -> FieldSet {
    let mut node = FieldSet::default();
    if added && matches!(ty, Ty::Map(_) | Ty::Set | Ty::MapList(..)) && !v.is_null() {
        node.set_member();
    }
    match (ty, v) {
        (Ty::Struct(_) | Ty::Map(_), Value::Object(m)) => {
            for (k, child) in m {
                if !child.is_null() {
                    node.insert(format!("f:{k}"), fields(child, ty.member(k), added));
                }
            }
        }
        (Ty::Set, Value::Array(items)) => {
            for item in items {
                node.child_mut(format!("v:{item}")).set_member();
            }
        }
        (Ty::MapList(keys, item_ty), Value::Array(items)) => match keyed(keys, items) {
            Some(keyed) => {
                for (key, item) in keyed {
                    let mut child = fields(item, item_ty, added);
                    if matches!(item_ty, Ty::Atomic) {
                        child = FieldSet::default();
                    }
                    child.set_member();
                    node.insert(format!("k:{key}"), child);
                }
            }
            None => node.set_member(),
        },
        _ => {}
    }
    if node.is_empty() {
        node.set_member();
    }
    node
}

/// Items of a map list with their keys; `None` if an item has no key.
fn keyed<'v>(keys: &[schema::Key], items: &'v [Value]) -> Option<Vec<(String, &'v Value)>> {
    items.iter().map(|i| item_key(keys, i).map(|k| (k, i))).collect()
}

/// Check an applied configuration: every map-list item has its keys, and no key repeats.
fn check_applicable(v: &Value, ty: &'static Ty, path: &mut Vec<String>) -> Result<(), ApplyError> {
    match (ty, v) {
        (Ty::Struct(_) | Ty::Map(_), Value::Object(m)) => {
            for (k, child) in m {
                path.push(format!("f:{k}"));
                check_applicable(child, ty.member(k), path)?;
                path.pop();
            }
        }
        (Ty::MapList(keys, item_ty), Value::Array(items)) => {
            let mut seen = HashSet::new();
            for (i, item) in items.iter().enumerate() {
                let Some(key) = item_key(keys, item) else {
                    let missing = keys
                        .iter()
                        .find(|k| k.default.is_none() && item.get(k.name).is_none_or(Value::is_null))
                        .map_or("", |k| k.name);
                    return Err(ApplyError::Invalid(format!(
                        "{}: element {i}: associative list with keys has an element that omits key field {missing:?} (and doesn't have default value)",
                        display_path(path)
                    )));
                };
                if !seen.insert(key.clone()) {
                    path.push(format!("k:{key}"));
                    let shown = display_path(path);
                    path.pop();
                    return Err(ApplyError::Invalid(format!(
                        "{}: duplicate entries for key {}",
                        display_path(path),
                        shown.rsplit_once('[').map_or(shown.as_str(), |(_, k)| k).trim_end_matches(']')
                    )));
                }
                path.push(format!("k:{key}"));
                check_applicable(item, item_ty, path)?;
                path.pop();
            }
        }
        _ => {}
    }
    Ok(())
}

/// Fields that differ between two versions of a value: `changed` (added or modified, paths in `new`) and
/// `removed` (paths only in `old`).
#[derive(Default)]
struct Diff {
    changed: FieldSet,
    removed: FieldSet,
}

fn diff(old: Option<&Value>, new: Option<&Value>, ty: &'static Ty) -> Diff {
    let old = old.filter(|v| !v.is_null());
    let new = new.filter(|v| !v.is_null());
    match (old, new) {
        (None, None) => Diff::default(),
        (None, Some(n)) => Diff { changed: added(n, ty), removed: FieldSet::default() },
        (Some(o), None) => Diff { changed: FieldSet::default(), removed: fields_of(o, ty) },
        (Some(o), Some(n)) if o == n => Diff::default(),
        (Some(o), Some(n)) => {
            let mut d = Diff::default();
            match (ty, o, n) {
                (Ty::Struct(_) | Ty::Map(_), Value::Object(om), Value::Object(nm)) => {
                    for k in om.keys().chain(nm.keys().filter(|k| !om.contains_key(*k))) {
                        let sub = diff(om.get(k), nm.get(k), ty.member(k));
                        d.changed.insert(format!("f:{k}"), sub.changed);
                        d.removed.insert(format!("f:{k}"), sub.removed);
                    }
                }
                (Ty::Set, Value::Array(oa), Value::Array(na)) => {
                    for v in na.iter().filter(|v| !oa.contains(v)) {
                        d.changed.child_mut(format!("v:{v}")).set_member();
                    }
                    for v in oa.iter().filter(|v| !na.contains(v)) {
                        d.removed.child_mut(format!("v:{v}")).set_member();
                    }
                }
                (Ty::MapList(keys, item_ty), Value::Array(oa), Value::Array(na)) => {
                    match (keyed(keys, oa), keyed(keys, na)) {
                        (Some(ok), Some(nk)) => {
                            let old_items: BTreeMap<&str, &Value> = ok.iter().map(|(k, v)| (k.as_str(), *v)).collect();
                            let new_items: BTreeMap<&str, &Value> = nk.iter().map(|(k, v)| (k.as_str(), *v)).collect();
                            for (k, nv) in &new_items {
                                let element = format!("k:{k}");
                                match old_items.get(k) {
                                    None => {
                                        let mut c = added(nv, item_ty);
                                        if matches!(item_ty, Ty::Atomic) {
                                            c = FieldSet::default();
                                        }
                                        c.set_member();
                                        d.changed.insert(element, c);
                                    }
                                    Some(ov) if matches!(item_ty, Ty::Atomic) => {
                                        if ov != nv {
                                            d.changed.child_mut(element).set_member();
                                        }
                                    }
                                    Some(ov) => {
                                        let sub = diff(Some(ov), Some(nv), item_ty);
                                        d.changed.insert(element.clone(), sub.changed);
                                        d.removed.insert(element, sub.removed);
                                    }
                                }
                            }
                            for k in old_items.keys().filter(|k| !new_items.contains_key(*k)) {
                                d.removed.child_mut(format!("k:{k}")).set_member();
                            }
                        }
                        _ => d.changed.set_member(),
                    }
                }
                _ => d.changed.set_member(),
            }
            if d.changed.is_empty() && d.removed.is_empty() {
                // Different, but not field by field (e.g. {} against a value): the node itself changed.
                d.changed.set_member();
            }
            d
        }
    }
}

/// Merge an applied configuration into a live value.
fn merge(live: &Value, config: &Value, ty: &'static Ty) -> Value {
    match (ty, live, config) {
        (_, _, Value::Null) => live.clone(),
        (Ty::Struct(_) | Ty::Map(_), Value::Object(l), Value::Object(c)) => {
            let mut out = l.clone();
            for (k, cv) in c {
                if cv.is_null() {
                    continue;
                }
                let merged = match l.get(k) {
                    Some(lv) => merge(lv, cv, ty.member(k)),
                    None => cv.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Ty::Set, Value::Array(l), Value::Array(c)) => {
            let mut out = l.clone();
            for v in c {
                if !out.contains(v) {
                    out.push(v.clone());
                }
            }
            Value::Array(out)
        }
        (Ty::MapList(keys, item_ty), Value::Array(l), Value::Array(c)) => match (keyed(keys, l), keyed(keys, c)) {
            (Some(lk), Some(ck)) => {
                let mut out: Vec<Value> = Vec::with_capacity(l.len() + c.len());
                let config_items: BTreeMap<&str, &Value> = ck.iter().map(|(k, v)| (k.as_str(), *v)).collect();
                let live_keys: HashSet<&str> = lk.iter().map(|(k, _)| k.as_str()).collect();
                for (k, lv) in &lk {
                    match config_items.get(k.as_str()) {
                        Some(cv) => out.push(merge(lv, cv, item_ty)),
                        None => out.push((*lv).clone()),
                    }
                }
                for (k, cv) in &ck {
                    if !live_keys.contains(k.as_str()) {
                        out.push((*cv).clone());
                    }
                }
                Value::Array(out)
            }
            _ => config.clone(),
        },
        _ => config.clone(),
    }
}

/// Remove the paths in `set` from `v`. Maps and structs emptied by the removal go too.
fn remove(v: &mut Value, set: &FieldSet, ty: &'static Ty) {
    for (element, sub) in set.children() {
        let Some((kind, rest)) = element.split_once(':') else { continue };
        match (kind, &mut *v) {
            ("f", Value::Object(m)) => {
                if sub.is_member() {
                    m.remove(rest);
                } else if let Some(child) = m.get_mut(rest) {
                    let was_empty = is_empty_container(child);
                    remove(child, sub, ty.member(rest));
                    if !was_empty && is_empty_container(child) {
                        m.remove(rest);
                    }
                }
            }
            ("k", Value::Array(items)) => {
                let Ty::MapList(keys, item_ty) = ty else { continue };
                if sub.is_member() {
                    items.retain(|i| item_key(keys, i).as_deref() != Some(rest));
                } else if let Some(item) = items.iter_mut().find(|i| item_key(keys, i).as_deref() == Some(rest)) {
                    // An item that stays keeps the fields that identify it.
                    let mut sub = sub.clone();
                    for k in keys.iter() {
                        sub.remove_child(&format!("f:{}", k.name));
                    }
                    remove(item, &sub, item_ty);
                }
            }
            ("v", Value::Array(items)) => {
                if let Ok(value) = serde_json::from_str::<Value>(rest) {
                    items.retain(|i| *i != value);
                }
            }
            _ => {}
        }
    }
}

fn is_empty_container(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// Restrict an applied configuration to what `scope` lets it touch.
fn scoped_config(config: &Value, scope: Scope) -> Value {
    let mut c = config.clone();
    if let Value::Object(m) = &mut c {
        match scope {
            Scope::Whole => {}
            Scope::Main => {
                m.remove("status");
            }
            Scope::Status => m.retain(|k, _| matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status")),
        }
        if scope == Scope::Status {
            if let Some(Value::Object(meta)) = m.get_mut("metadata") {
                meta.retain(|k, _| matches!(k.as_str(), "name" | "namespace"));
            }
        }
    }
    c
}

// ---------------------------------------------------------------------------------------------------------
// The two operations

/// Server-side apply `config` (the applied configuration, already parsed) onto `live` (`None`: the object
/// does not exist yet). Returns the merged object with its `metadata.managedFields` updated; the caller
/// still runs defaulting and validation on it.
pub fn apply(live: Option<&Value>, config: &Value, w: &Writer<'_>, force: bool) -> Result<Value, ApplyError> {
    let ty = schema::root(w.api_version, w.kind)
        .ok_or_else(|| ApplyError::Unsupported(format!("{}, Kind={}", w.api_version, w.kind)))?;
    if !config.is_object() {
        return Err(ApplyError::Invalid("the applied configuration must be an object".into()));
    }
    if config.pointer("/metadata/managedFields").is_some_and(|m| !m.is_null()) {
        return Err(ApplyError::Invalid("metadata.managedFields must be nil".into()));
    }
    check_applicable(config, ty, &mut Vec::new())?;
    let config = scoped_config(config, w.scope);
    let empty = json!({});
    let live_value = live.unwrap_or(&empty);
    let mut managers = live.map(entries).unwrap_or_default();
    let mine = managers.iter().position(|e| e.is(w, "Apply"));
    let last = mine.map(|i| managers[i].fields.clone()).unwrap_or_default();
    let applied = untracked_removed(fields_of(&config, ty), w.scope);
    match mine {
        Some(i) => {
            if managers[i].fields != applied {
                managers[i].time = Some(w.now.to_owned());
            }
            managers[i].fields = applied.clone();
        }
        None => {
            let mut e = new_entry(w, "Apply");
            e.fields = applied.clone();
            managers.push(e);
        }
    }
    let mut merged = merge(live_value, &config, ty);
    // Prune what this manager applied before, no longer applies, and nobody else owns.
    if !last.is_empty() {
        let owned = managers.iter().fold(FieldSet::default(), |acc, e| acc.union(&e.fields));
        let mut gone = last.difference(&owned);
        gone.spare_owned(&owned);
        remove(&mut merged, &gone, ty);
    }
    let d = diff(Some(live_value), Some(&merged), ty);
    let changed = untracked_removed(d.changed, w.scope);
    let removed = untracked_removed(d.removed, w.scope);
    let mut conflicts = Vec::new();
    for e in managers.iter_mut().filter(|e| !e.is(w, "Apply")) {
        let clash = e.fields.intersection(&changed);
        if !clash.is_empty() {
            if force {
                e.fields = e.fields.difference(&clash);
            } else {
                conflicts
                    .extend(clash.paths().iter().map(|p| Conflict { manager: e.display(), field: display_path(p) }));
            }
        }
        e.fields = e.fields.difference(&removed);
    }
    if !conflicts.is_empty() {
        return Err(ApplyError::Conflicts(conflicts));
    }
    if merged.get("metadata").is_none() {
        merged["metadata"] = json!({});
    }
    store_entries(&mut merged, managers);
    Ok(merged)
}

/// Record an update (create, replace, patch) by `w` of `old` (`None` for a create) into `new`: the writer
/// gets the fields it changed, every other manager loses them. A client may replace the managed fields by
/// sending different ones (a single empty entry clears them); sending none, or the same, keeps them.
pub fn track_update(old: Option<&Value>, new: &mut Value, w: &Writer<'_>) {
    let Some(ty) = schema::root(w.api_version, w.kind) else { return };
    let sent = new.pointer("/metadata/managedFields").cloned();
    let old_mf = old.and_then(|o| o.pointer("/metadata/managedFields")).cloned();
    let mut managers = match &sent {
        Some(Value::Array(list)) if list.len() == 1 && list[0].as_object().is_some_and(Map::is_empty) => Vec::new(),
        Some(Value::Array(list)) if !list.is_empty() && sent != old_mf => entries(new),
        _ => old.map(entries).unwrap_or_default(),
    };
    let d = diff(old, Some(new), ty);
    let changed = untracked_removed(d.changed, w.scope);
    let removed = untracked_removed(d.removed, w.scope);
    let lost = changed.union(&removed);
    let mut found = false;
    for e in managers.iter_mut() {
        if e.is(w, "Update") {
            found = true;
            let fields = e.fields.difference(&removed).union(&changed);
            if fields != e.fields {
                e.fields = fields;
                e.time = Some(w.now.to_owned());
            }
        } else {
            e.fields = e.fields.difference(&lost);
        }
    }
    if !found && !changed.is_empty() {
        let mut e = new_entry(w, "Update");
        e.fields = changed;
        managers.push(e);
    }
    store_entries(new, managers);
}

#[cfg(test)]
mod tests;
