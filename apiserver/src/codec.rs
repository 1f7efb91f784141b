//! How objects are laid out in etcd and turned into response bytes.
//!
//! Objects are stored as compact JSON with `metadata` as the first key and without
//! `metadata.resourceVersion` (the resourceVersion *is* the etcd `mod_revision`, known only
//! after the write). Serving an object splices `"resourceVersion":"<rev>"` in right after
//! `{"metadata":{` — a copy, not a parse — so lists and watch events are cheap.

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

const PREFIX: &[u8] = b"{\"metadata\":{";

/// Why stored bytes could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("stored object at {key} is not valid JSON: {source}")]
pub struct CorruptObject {
    /// etcd key.
    pub key: String,
    /// Parse error.
    #[source]
    pub source: serde_json::Error,
}

/// Encode an object for storage: `metadata` first, no resourceVersion.
pub fn encode(obj: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    out.extend_from_slice(b"{\"metadata\":");
    let empty = Map::new();
    let meta = obj.get("metadata").and_then(Value::as_object).unwrap_or(&empty);
    write_entries(&mut out, meta.iter().filter(|(k, _)| k.as_str() != "resourceVersion"));
    if let Value::Object(map) = obj {
        for (k, v) in map.iter().filter(|(k, _)| k.as_str() != "metadata") {
            out.push(b',');
            write_key(&mut out, k);
            write_json(&mut out, v);
        }
    }
    out.push(b'}');
    out
}

/// `{"k":v,…}` of `entries`, without building a map for them.
fn write_entries<'a>(out: &mut Vec<u8>, entries: impl Iterator<Item = (&'a String, &'a Value)>) {
    out.push(b'{');
    for (i, (k, v)) in entries.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_key(out, k);
        write_json(out, v);
    }
    out.push(b'}');
}

/// `"k":`, escaped as JSON.
fn write_key(out: &mut Vec<u8>, k: &str) {
    // Serialising a string into a Vec cannot fail.
    if serde_json::to_writer(&mut *out, k).is_err() {
        out.extend_from_slice(b"\"\"");
    }
    out.push(b':');
}

fn write_json(out: &mut Vec<u8>, v: &Value) {
    // Serialising a `Value` into a Vec cannot fail (all keys are strings).
    if serde_json::to_writer(&mut *out, v).is_err() {
        out.extend_from_slice(b"null");
    }
}

/// Serve stored bytes with `metadata.resourceVersion` set to `rev`.
pub fn with_resource_version(stored: &[u8], rev: i64) -> Bytes {
    let mut out = BytesMut::with_capacity(stored.len() + 32);
    write_with_resource_version(&mut out, stored, rev);
    out.freeze()
}

/// Like [`with_resource_version`], appending to `out`.
pub fn write_with_resource_version(out: &mut BytesMut, stored: &[u8], rev: i64) {
    if stored.starts_with(PREFIX) {
        out.put_slice(PREFIX);
        out.put_slice(b"\"resourceVersion\":\"");
        out.put_slice(rev.to_string().as_bytes());
        out.put_u8(b'"');
        let rest = &stored[PREFIX.len()..];
        if !rest.starts_with(b"}") {
            out.put_u8(b',');
        }
        out.put_slice(rest);
        return;
    }
    // Written by something else: take the slow path.
    match serde_json::from_slice::<Value>(stored) {
        Ok(mut v) => {
            set_resource_version(&mut v, rev);
            out.put_slice(&encode_value(&v));
        }
        Err(_) => out.put_slice(stored),
    }
}

/// Decode stored bytes into a `Value` with resourceVersion set.
pub fn decode(key: &str, stored: &[u8], rev: i64) -> Result<Value, CorruptObject> {
    let mut v: Value =
        serde_json::from_slice(stored).map_err(|source| CorruptObject { key: key.to_string(), source })?;
    set_resource_version(&mut v, rev);
    Ok(v)
}

/// Set `metadata.resourceVersion`.
pub fn set_resource_version(v: &mut Value, rev: i64) {
    if let Value::Object(map) = v {
        let meta = map.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(m) = meta {
            m.insert("resourceVersion".into(), Value::String(rev.to_string()));
        }
    }
}

/// Compact JSON of a value.
pub fn encode_value(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_json(&mut out, v);
    out
}

/// The parts of an object that selectors look at, extracted once per stored version.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selectable {
    /// metadata.name
    pub name: String,
    /// metadata.namespace
    pub namespace: String,
    /// metadata.labels
    pub labels: BTreeMap<String, String>,
    /// Values of the resource's selectable fields, in table order.
    pub fields: Vec<(&'static str, String)>,
}

impl Selectable {
    /// Extract from a decoded object; `fields` comes from the resource table.
    pub fn extract(obj: &Value, fields: &[(&'static str, &'static [&'static str])]) -> Self {
        let meta = &obj["metadata"];
        let labels = match meta.get("labels") {
            Some(Value::Object(m)) => {
                m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect()
            }
            _ => BTreeMap::new(),
        };
        let fields = fields
            .iter()
            .map(|(name, path)| {
                let mut cur = obj;
                for seg in *path {
                    cur = cur.get(seg).unwrap_or(&Value::Null);
                }
                let value = match cur {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                };
                (*name, value)
            })
            .collect();
        Self {
            name: meta["name"].as_str().unwrap_or_default().to_string(),
            namespace: meta["namespace"].as_str().unwrap_or_default().to_string(),
            labels,
            fields,
        }
    }

    /// Extract straight from stored bytes without building a JSON tree: the document is
    /// scanned into borrowed raw values and only `metadata` and the selectable fields are
    /// decoded. Falls back to a full parse for unusual documents (escaped keys).
    pub fn from_stored(raw: &[u8], fields: &[(&'static str, &'static [&'static str])]) -> Self {
        match Self::from_raw(raw, fields) {
            Some(s) => s,
            None => match serde_json::from_slice::<Value>(raw) {
                Ok(v) => Self::extract(&v, fields),
                Err(_) => Self::default(),
            },
        }
    }

    fn from_raw(raw: &[u8], fields: &[(&'static str, &'static [&'static str])]) -> Option<Self> {
        use serde_json::value::RawValue;
        use std::collections::HashMap;
        type RawMap<'a> = HashMap<&'a str, &'a RawValue>;

        #[derive(serde::Deserialize, Default)]
        #[serde(default)]
        struct Meta {
            name: Option<String>,
            namespace: Option<String>,
            labels: Option<BTreeMap<String, String>>,
        }

        let top: RawMap<'_> = serde_json::from_slice(raw).ok()?;
        let meta: Meta = match top.get("metadata") {
            Some(m) => serde_json::from_str(m.get()).ok()?,
            None => Meta::default(),
        };
        // Second-level maps, parsed once per top-level key that a field needs.
        let mut nested: HashMap<&str, Option<RawMap<'_>>> = HashMap::new();
        let mut values = Vec::with_capacity(fields.len());
        for (field, path) in fields {
            let leaf: Option<&RawValue> = match path {
                [one] => top.get(one).copied(),
                [first, second] => {
                    let map = nested
                        .entry(first)
                        .or_insert_with(|| top.get(first).and_then(|v| serde_json::from_str(v.get()).ok()));
                    map.as_ref().and_then(|m| m.get(second).copied())
                }
                _ => return None,
            };
            let value = match leaf.map(|l| serde_json::from_str::<Value>(l.get())) {
                None | Some(Ok(Value::Null)) => String::new(),
                Some(Ok(Value::String(s))) => s,
                Some(Ok(other)) => other.to_string(),
                Some(Err(_)) => return None,
            };
            values.push((*field, value));
        }
        Some(Self {
            name: meta.name.unwrap_or_default(),
            namespace: meta.namespace.unwrap_or_default(),
            labels: meta.labels.unwrap_or_default(),
            fields: values,
        })
    }

    /// The value of a selectable field (`""` when unset).
    pub fn field(&self, name: &str) -> Option<String> {
        match name {
            "metadata.name" => Some(self.name.clone()),
            "metadata.namespace" => Some(self.namespace.clone()),
            _ => self.fields.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn splices_resource_version() {
        let obj = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "resourceVersion": "5"}, "data": {"a": "b"}});
        let stored = encode(&obj);
        assert!(stored.starts_with(PREFIX));
        assert!(!String::from_utf8_lossy(&stored).contains("resourceVersion"));
        let served: Value = serde_json::from_slice(&with_resource_version(&stored, 42)).expect("json");
        assert_eq!(served["metadata"]["resourceVersion"], "42");
        assert_eq!(served["metadata"]["name"], "x");
        assert_eq!(served["data"]["a"], "b");
        assert_eq!(served["kind"], "ConfigMap");
    }

    #[test]
    fn encode_is_compact_json_without_the_resource_version() {
        let obj = json!({"metadata": {"annotations": {"a\"b": "\u{1}"}, "resourceVersion": "9", "uid": "u"},
            "spec": {"x": [1, {"y": null}]}, "a\\z": true});
        let stored = encode(&obj);
        let mut expected = obj.clone();
        expected["metadata"].as_object_mut().map(|m| m.remove("resourceVersion"));
        assert_eq!(serde_json::from_slice::<Value>(&stored).expect("json"), expected);
        assert!(!stored.contains(&b' '));
        assert_eq!(encode(&json!({"metadata": 3})), br#"{"metadata":{}}"#);
    }

    #[test]
    fn splices_into_empty_metadata_and_foreign_layouts() {
        let stored = encode(&json!({"kind": "X"}));
        let served: Value = serde_json::from_slice(&with_resource_version(&stored, 7)).expect("json");
        assert_eq!(served["metadata"]["resourceVersion"], "7");
        let foreign = br#"{"kind":"X","metadata":{"name":"a"}}"#;
        let served: Value = serde_json::from_slice(&with_resource_version(foreign, 8)).expect("json");
        assert_eq!(served["metadata"]["resourceVersion"], "8");
        assert_eq!(served["metadata"]["name"], "a");
    }

    #[test]
    fn extracts_selectable_fields() {
        let obj = json!({"metadata": {"name": "p", "namespace": "ns", "labels": {"app": "web"}}, "spec": {"nodeName": "n1", "hostNetwork": true}});
        let s = Selectable::extract(
            &obj,
            &[
                ("spec.nodeName", &["spec", "nodeName"]),
                ("spec.hostNetwork", &["spec", "hostNetwork"]),
                ("status.phase", &["status", "phase"]),
            ],
        );
        assert_eq!(s.field("spec.nodeName").as_deref(), Some("n1"));
        assert_eq!(s.field("spec.hostNetwork").as_deref(), Some("true"));
        assert_eq!(s.field("status.phase").as_deref(), Some(""));
        assert_eq!(s.field("metadata.namespace").as_deref(), Some("ns"));
        assert_eq!(s.labels.get("app").map(String::as_str), Some("web"));
        let fields: &[(&str, &[&str])] = &[
            ("spec.nodeName", &["spec", "nodeName"]),
            ("spec.hostNetwork", &["spec", "hostNetwork"]),
            ("status.phase", &["status", "phase"]),
        ];
        let raw = encode(&obj);
        assert_eq!(Selectable::from_stored(&raw, fields), Selectable::extract(&obj, fields));
        let event = json!({"metadata": {"name": "e"}, "involvedObject": {"name": "p"}, "reason": "Started"});
        let fields: &[(&str, &[&str])] =
            &[("involvedObject.name", &["involvedObject", "name"]), ("reason", &["reason"])];
        let s = Selectable::from_stored(&encode(&event), fields);
        assert_eq!(
            (s.field("involvedObject.name").as_deref(), s.field("reason").as_deref()),
            (Some("p"), Some("Started"))
        );
    }
}
