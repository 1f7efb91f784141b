//! The merge schema server-side apply walks: how each field of a served kind merges.
//!
//! The table itself ([`super::schema_table`]) is generated from k8s-openapi by `scripts/gen-ssa-schema.py`.

use serde_json::Value;

/// How a value merges and how its ownership is tracked.
#[derive(Debug)]
pub(crate) enum Ty {
    /// Replaced as a whole; owned as one leaf (scalars, atomic lists, maps and structs).
    Atomic,
    /// A struct whose fields are owned one by one (`f:<field>`).
    Struct(&'static Struct),
    /// A map whose entries are owned one by one (`f:<key>`), each of the given type.
    Map(&'static Ty),
    /// A list of scalars with set semantics (`v:<value>`).
    Set,
    /// A list of objects identified by key fields (`k:{"name":"x"}`), each item of the given type.
    MapList(&'static [Key], &'static Ty),
}

/// A key field of a map list.
#[derive(Debug)]
pub(crate) struct Key {
    /// The field's JSON name.
    pub name: &'static str,
    /// Its default as JSON text, used when an item omits it (Kubernetes' `protocol: TCP`).
    pub default: Option<&'static str>,
}

/// A struct type: its fields sorted by JSON name.
#[derive(Debug)]
pub(crate) struct Struct {
    /// The type's name, for messages.
    #[allow(dead_code)]
    pub name: &'static str,
    /// `(json name, type)`, sorted by name.
    pub fields: &'static [(&'static str, Ty)],
}

impl Struct {
    /// The type of field `name`; unknown fields (which validation reports) are atomic.
    pub(crate) fn field(&self, name: &str) -> &'static Ty {
        match self.fields.binary_search_by(|(n, _)| (*n).cmp(name)) {
            Ok(i) => &self.fields[i].1,
            Err(_) => &Ty::Atomic,
        }
    }
}

impl Ty {
    /// The type of member `name` of a value of this type (struct field or map entry).
    pub(crate) fn member(&self, name: &str) -> &'static Ty {
        match self {
            Ty::Struct(s) => s.field(name),
            Ty::Map(t) => t,
            _ => &Ty::Atomic,
        }
    }
}

/// The root type of a served kind.
pub(crate) fn root(api_version: &str, kind: &str) -> Option<&'static Ty> {
    static ROOT_TYS: std::sync::OnceLock<Vec<(&'static str, &'static str, Ty)>> = std::sync::OnceLock::new();
    let roots =
        ROOT_TYS.get_or_init(|| super::schema_table::ROOTS.iter().map(|(v, k, s)| (*v, *k, Ty::Struct(s))).collect());
    roots.iter().find(|(v, k, _)| *v == api_version && *k == kind).map(|(_, _, t)| t)
}

/// The key of a map-list item as the JSON text used in `k:` path elements: the key fields in name order, a
/// missing key filled from its default. `None` when a key without default is missing or the item is not an
/// object.
pub(crate) fn item_key(keys: &[Key], item: &Value) -> Option<String> {
    let obj = item.as_object()?;
    let mut pairs: Vec<(&str, Value)> = Vec::with_capacity(keys.len());
    for k in keys {
        let v = match obj.get(k.name) {
            Some(v) if !v.is_null() => v.clone(),
            _ => serde_json::from_str(k.default?).ok()?,
        };
        pairs.push((k.name, v));
    }
    pairs.sort_by(|a, b| a.0.cmp(b.0));
    let map: serde_json::Map<String, Value> = pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    Some(Value::Object(map).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_struct_lists_fields_sorted() {
        fn check(ty: &'static Ty, seen: &mut Vec<*const Struct>) {
            match ty {
                Ty::Struct(s) => {
                    let p = *s as *const Struct;
                    if seen.contains(&p) {
                        return;
                    }
                    seen.push(p);
                    assert!(s.fields.windows(2).all(|w| w[0].0 < w[1].0), "{} unsorted", s.name);
                    for (_, t) in s.fields {
                        check(t, seen);
                    }
                }
                Ty::Map(t) | Ty::MapList(_, t) => check(t, seen),
                _ => {}
            }
        }
        let mut seen = Vec::new();
        for (v, k, _) in super::super::schema_table::ROOTS {
            check(root(v, k).expect("root"), &mut seen);
        }
        assert!(seen.len() > 100);
    }

    #[test]
    fn upstream_list_types() {
        let pod = root("v1", "Pod").expect("pod");
        let pod_spec = pod.member("spec");
        let Ty::MapList(keys, container) = pod_spec.member("containers") else { panic!("containers") };
        assert_eq!(keys[0].name, "name");
        let Ty::MapList(keys, _) = container.member("ports") else { panic!("ports") };
        let names: Vec<_> = keys.iter().map(|k| k.name).collect();
        assert_eq!(names, ["containerPort", "protocol"]);
        assert_eq!(
            item_key(keys, &json!({"containerPort": 80})).as_deref(),
            Some(r#"{"containerPort":80,"protocol":"TCP"}"#)
        );
        assert_eq!(item_key(keys, &json!({"name": "x"})), None);
        assert!(matches!(pod_spec.member("tolerations"), Ty::Atomic));
        assert!(matches!(pod_spec.member("nodeSelector"), Ty::Atomic));
        let Ty::MapList(keys, _) = pod_spec.member("topologySpreadConstraints") else { panic!("tsc") };
        assert_eq!(keys.len(), 2);
        let meta = pod.member("metadata");
        assert!(matches!(meta.member("finalizers"), Ty::Set));
        assert!(matches!(meta.member("labels"), Ty::Map(_)));
        let dep = root("apps/v1", "Deployment").expect("deployment").member("spec");
        assert!(matches!(dep.member("selector"), Ty::Atomic));
        assert!(matches!(dep.member("template").member("spec"), Ty::Struct(_)));
    }
}
