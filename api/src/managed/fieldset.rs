//! Sets of field paths, and their `FieldsV1` wire form.
//!
//! A path is a sequence of elements, written as `FieldsV1` writes them: `f:<field>` (a struct field or map
//! key), `k:<json>` (a map-list item by its key fields), `v:<json>` (a set element) and `i:<index>` (an atomic
//! list position, only ever read). The set is a tree: a node is a *member* when its own path is in the set — a
//! leaf, or `".": {}` next to children when the item itself is owned as well as some of its fields.

use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// A set of field paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet {
    member: bool,
    children: BTreeMap<String, FieldSet>,
}

impl FieldSet {
    /// Whether the set has no paths.
    pub fn is_empty(&self) -> bool {
        !self.member && self.children.is_empty()
    }

    /// The child node for `element`, created if missing.
    pub(crate) fn child_mut(&mut self, element: String) -> &mut FieldSet {
        self.children.entry(element).or_default()
    }

    /// The child node for `element`.
    pub(crate) fn child(&self, element: &str) -> Option<&FieldSet> {
        self.children.get(element)
    }

    /// Whether this node itself is in the set.
    pub(crate) fn is_member(&self) -> bool {
        self.member
    }

    /// Mark this node as in the set.
    pub(crate) fn set_member(&mut self) {
        self.member = true;
    }

    /// Keep, in this set of fields to remove, the nodes below which `owned` has fields: such a node is not
    /// removed whole, only its unowned descendants are.
    pub(crate) fn spare_owned(&mut self, owned: &FieldSet) {
        for (k, child) in self.children.iter_mut() {
            if let Some(o) = owned.children.get(k) {
                if !o.children.is_empty() {
                    child.member = false;
                    child.spare_owned(o);
                }
            }
        }
    }

    /// Add a child subtree (dropped when empty).
    pub(crate) fn insert(&mut self, element: String, set: FieldSet) {
        if !set.is_empty() {
            self.children.insert(element, set);
        }
    }

    /// Drop a child subtree.
    pub(crate) fn remove_child(&mut self, element: &str) {
        self.children.remove(element);
    }

    /// The child elements.
    pub(crate) fn children(&self) -> impl Iterator<Item = (&String, &FieldSet)> {
        self.children.iter()
    }

    /// `self ∪ other`.
    pub fn union(&self, other: &FieldSet) -> FieldSet {
        let mut out = self.clone();
        out.union_with(other);
        out
    }

    fn union_with(&mut self, other: &FieldSet) {
        self.member |= other.member;
        for (k, v) in &other.children {
            self.children.entry(k.clone()).or_default().union_with(v);
        }
    }

    /// `self ∖ other`.
    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet { member: self.member && !other.member, children: BTreeMap::new() };
        for (k, v) in &self.children {
            match other.children.get(k) {
                Some(o) => out.insert(k.clone(), v.difference(o)),
                None => out.insert(k.clone(), v.clone()),
            }
        }
        out
    }

    /// `self ∩ other`.
    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet { member: self.member && other.member, children: BTreeMap::new() };
        for (k, v) in &self.children {
            if let Some(o) = other.children.get(k) {
                out.insert(k.clone(), v.intersection(o));
            }
        }
        out
    }

    /// Every path in the set, as element lists.
    pub fn paths(&self) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        let mut prefix = Vec::new();
        self.collect_paths(&mut prefix, &mut out);
        out
    }

    fn collect_paths(&self, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        if self.member {
            out.push(prefix.clone());
        }
        for (k, v) in &self.children {
            prefix.push(k.clone());
            v.collect_paths(prefix, out);
            prefix.pop();
        }
    }

    /// The `FieldsV1` JSON form.
    pub fn to_fields_v1(&self) -> Value {
        let mut m = Map::new();
        if self.member && !self.children.is_empty() {
            m.insert(".".into(), Value::Object(Map::new()));
        }
        for (k, v) in &self.children {
            m.insert(k.clone(), v.to_fields_v1());
        }
        Value::Object(m)
    }

    /// Parse the `FieldsV1` JSON form.
    pub fn from_fields_v1(v: &Value) -> Result<FieldSet, String> {
        let obj = v.as_object().ok_or("fieldsV1 must be a JSON object")?;
        let mut out = FieldSet::default();
        if obj.is_empty() {
            out.member = true;
            return Ok(out);
        }
        for (k, child) in obj {
            if k == "." {
                out.member = true;
                continue;
            }
            let valid = match k.split_once(':') {
                Some(("f", _)) | Some(("k", _)) | Some(("v", _)) => true,
                Some(("i", n)) => n.parse::<usize>().is_ok(),
                _ => false,
            };
            if !valid {
                return Err(format!("invalid path element {k:?}"));
            }
            out.insert(k.clone(), FieldSet::from_fields_v1(child)?);
        }
        Ok(out)
    }
}

/// A path the way Kubernetes prints it in conflicts: `.spec.containers[name="app"].image`.
pub fn display_path(elements: &[String]) -> String {
    let mut s = String::new();
    for e in elements {
        match e.split_once(':') {
            Some(("f", name)) => {
                s.push('.');
                s.push_str(name);
            }
            Some(("k", json)) => {
                let parts: Vec<String> = match serde_json::from_str::<Map<String, Value>>(json) {
                    Ok(m) => m.iter().map(|(k, v)| format!("{k}={v}")).collect(),
                    Err(_) => vec![json.to_owned()],
                };
                s.push('[');
                s.push_str(&parts.join(","));
                s.push(']');
            }
            Some(("v", json)) => {
                s.push_str("[=");
                s.push_str(json);
                s.push(']');
            }
            Some(("i", n)) => {
                s.push('[');
                s.push_str(n);
                s.push(']');
            }
            _ => s.push_str(e),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_v1_round_trip() {
        let v = json!({
            "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
            "f:spec": {"f:containers": {"k:{\"name\":\"app\"}": {".": {}, "f:image": {}, "f:name": {}}}}
        });
        let s = FieldSet::from_fields_v1(&v).expect("parse");
        assert_eq!(s.to_fields_v1(), v);
        let paths: Vec<String> = s.paths().iter().map(|p| display_path(p)).collect();
        assert_eq!(
            paths,
            [
                ".metadata.labels",
                ".metadata.labels.app",
                ".spec.containers[name=\"app\"]",
                ".spec.containers[name=\"app\"].image",
                ".spec.containers[name=\"app\"].name"
            ]
        );
        assert!(FieldSet::from_fields_v1(&json!({"x:y": {}})).is_err());
        assert!(FieldSet::from_fields_v1(&json!([])).is_err());
    }

    #[test]
    fn set_algebra() {
        let a = FieldSet::from_fields_v1(&json!({"f:a": {}, "f:b": {"f:c": {}, "f:d": {}}})).expect("a");
        let b = FieldSet::from_fields_v1(&json!({"f:b": {"f:c": {}}, "f:e": {}})).expect("b");
        assert_eq!(a.intersection(&b).to_fields_v1(), json!({"f:b": {"f:c": {}}}));
        assert_eq!(a.difference(&b).to_fields_v1(), json!({"f:a": {}, "f:b": {"f:d": {}}}));
        assert_eq!(a.union(&b).to_fields_v1(), json!({"f:a": {}, "f:b": {"f:c": {}, "f:d": {}}, "f:e": {}}));
        assert!(a.difference(&a).is_empty());
    }
}
