//! Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`) decoded to JSON.
//!
//! client-go based tools (`kubectl create configmap|secret|deployment|namespace …`) send built-in objects in
//! Kubernetes' protobuf encoding: the 4-byte magic `k8s\0`, then a `runtime.Unknown` message holding the
//! `TypeMeta` (apiVersion, kind) and the object's own protobuf bytes. Kubernetes' .proto files name every field
//! by its JSON name, so the tables in [`table`] (generated from them by `scripts/gen-protobuf-schema.py`) turn
//! the wire format into the same JSON a JSON client would have sent, which then goes through the usual
//! admission.
//!
//! JSON forms follow apimachinery's custom marshalling: `Time` as RFC 3339 seconds (zero time → absent),
//! `MicroTime` with microseconds, `Quantity` and `IntOrString` as their scalar, `RawExtension` and `FieldsV1`
//! as embedded JSON, `bytes` as base64. Go always encodes non-pointer fields; their zero values are dropped
//! where Go's JSON `omitempty` would drop them (the table knows which fields those are), while a pointer
//! field's explicit `0`, `false` or `""` is kept.
//! Unknown tags are skipped, as Go's decoder does. Responses stay JSON; clients accept it.

mod table;

use base64::Engine as _;
use serde_json::{Map, Value};

/// The prefix of every Kubernetes protobuf document.
pub const MAGIC: &[u8] = b"k8s\0";

/// Why a protobuf body could not be decoded. The API server answers 400, or 415 for a kind it has no table
/// for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// Not a Kubernetes protobuf document, or a malformed one.
    #[error("the request body is not valid Kubernetes protobuf: {0}")]
    Malformed(String),
    /// A kind without a protobuf table here.
    #[error("protobuf is not supported for {api_version}, Kind={kind}; send application/json")]
    UnsupportedKind {
        /// The document's apiVersion.
        api_version: String,
        /// The document's kind.
        kind: String,
    },
}

fn malformed(msg: impl Into<String>) -> ProtoError {
    ProtoError::Malformed(msg.into())
}

/// A message's fields, sorted by tag.
#[derive(Debug)]
pub(crate) struct Message {
    name: &'static str,
    fields: &'static [Field],
}

/// One field of a message.
#[derive(Debug)]
pub(crate) struct Field {
    tag: u32,
    name: &'static str,
    shape: Shape,
    kind: Kind,
    /// Go's JSON encoding drops this field's zero value (a non-pointer scalar with `omitempty`).
    omit_zero: bool,
}

/// Singular, repeated, or a `map<string, V>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    Single,
    Repeated,
    Map,
}

/// A field's type.
#[derive(Debug)]
pub(crate) enum Kind {
    String,
    Bytes,
    Bool,
    Int32,
    Int64,
    Message(&'static Message),
    Time,
    MicroTime,
    RawJson,
    Quantity,
    IntOrString,
}

/// Decode a `k8s\0`-prefixed protobuf document into its JSON form, with `apiVersion` and `kind` set.
pub fn decode(body: &[u8]) -> Result<Value, ProtoError> {
    let inner = body.strip_prefix(MAGIC).ok_or_else(|| malformed("missing the k8s\\0 prefix"))?;
    let (mut api_version, mut kind, mut raw, mut encoding) = (String::new(), String::new(), &[][..], String::new());
    let mut r = Reader::new(inner);
    while let Some((tag, wire)) = r.key()? {
        match (tag, wire) {
            (1, 2) => {
                let mut tm = Reader::new(r.bytes()?);
                while let Some((t, w)) = tm.key()? {
                    match (t, w) {
                        (1, 2) => api_version = tm.string()?,
                        (2, 2) => kind = tm.string()?,
                        _ => tm.skip(w)?,
                    }
                }
            }
            (2, 2) => raw = r.bytes()?,
            (3, 2) => encoding = r.string()?,
            _ => r.skip(wire)?,
        }
    }
    if !encoding.is_empty() {
        return Err(malformed(format!("content encoding {encoding:?} is not supported")));
    }
    let root = table::ROOTS
        .iter()
        // DeleteOptions is registered in every group version.
        .find(|(v, k, _)| *k == kind && (*v == api_version || kind == "DeleteOptions"))
        .map(|(_, _, m)| *m)
        .ok_or(ProtoError::UnsupportedKind { api_version: api_version.clone(), kind: kind.clone() })?;
    let mut obj = message(raw, root)?;
    obj.insert("apiVersion".into(), Value::String(api_version));
    obj.insert("kind".into(), Value::String(kind));
    Ok(Value::Object(obj))
}

fn message(bytes: &[u8], msg: &'static Message) -> Result<Map<String, Value>, ProtoError> {
    let mut out = Map::new();
    let mut r = Reader::new(bytes);
    while let Some((tag, wire)) = r.key()? {
        let Ok(i) = msg.fields.binary_search_by_key(&tag, |f| f.tag) else {
            r.skip(wire)?;
            continue;
        };
        let f = &msg.fields[i];
        match f.shape {
            Shape::Single => {
                let v = value(&mut r, wire, &f.kind, msg, f)?;
                let zero = match &v {
                    Value::Null => true,
                    Value::String(s) => s.is_empty(),
                    Value::Bool(b) => !b,
                    Value::Number(n) => n.as_i64() == Some(0),
                    _ => false,
                };
                if v.is_null() || (zero && f.omit_zero) {
                    out.remove(f.name);
                } else {
                    out.insert(f.name.into(), v);
                }
            }
            Shape::Repeated => {
                let list = out.entry(f.name).or_insert_with(|| Value::Array(Vec::new()));
                let Value::Array(list) = list else { return Err(malformed(format!("{}.{}", msg.name, f.name))) };
                if wire == 2 && is_packable(&f.kind) {
                    let mut packed = Reader::new(r.bytes()?);
                    while !packed.done() {
                        list.push(value(&mut packed, 0, &f.kind, msg, f)?);
                    }
                } else {
                    list.push(value(&mut r, wire, &f.kind, msg, f)?);
                }
            }
            Shape::Map => {
                expect_wire(wire, 2, msg, f)?;
                let mut entry = Reader::new(r.bytes()?);
                let (mut key, mut val) = (String::new(), None);
                while let Some((t, w)) = entry.key()? {
                    match t {
                        1 => key = entry.string()?,
                        2 => val = Some(value(&mut entry, w, &f.kind, msg, f)?),
                        _ => entry.skip(w)?,
                    }
                }
                let val = match val {
                    Some(v) => v,
                    None => zero(&f.kind),
                };
                let map = out.entry(f.name).or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(m) = map {
                    m.insert(key, val);
                }
            }
        }
    }
    Ok(out)
}

/// The JSON of a map value the encoder left out (its zero value).
fn zero(kind: &Kind) -> Value {
    match kind {
        Kind::String | Kind::Bytes | Kind::Quantity => Value::String(String::new()),
        Kind::Bool => Value::Bool(false),
        Kind::Int32 | Kind::Int64 => Value::from(0),
        Kind::Message(_) => Value::Object(Map::new()),
        _ => Value::Null,
    }
}

fn is_packable(kind: &Kind) -> bool {
    matches!(kind, Kind::Bool | Kind::Int32 | Kind::Int64)
}

fn expect_wire(got: u8, want: u8, msg: &Message, f: &Field) -> Result<(), ProtoError> {
    if got == want {
        Ok(())
    } else {
        Err(malformed(format!("{}.{}: wire type {got}, expected {want}", msg.name, f.name)))
    }
}

fn value(r: &mut Reader<'_>, wire: u8, kind: &Kind, msg: &Message, f: &Field) -> Result<Value, ProtoError> {
    Ok(match kind {
        Kind::Bool => {
            expect_wire(wire, 0, msg, f)?;
            Value::Bool(r.varint()? != 0)
        }
        Kind::Int32 => {
            expect_wire(wire, 0, msg, f)?;
            Value::from(r.varint()? as i64 as i32)
        }
        Kind::Int64 => {
            expect_wire(wire, 0, msg, f)?;
            Value::from(r.varint()? as i64)
        }
        Kind::String => {
            expect_wire(wire, 2, msg, f)?;
            Value::String(r.string()?)
        }
        Kind::Bytes => {
            expect_wire(wire, 2, msg, f)?;
            Value::String(base64::engine::general_purpose::STANDARD.encode(r.bytes()?))
        }
        Kind::Message(m) => {
            expect_wire(wire, 2, msg, f)?;
            Value::Object(message(r.bytes()?, m)?)
        }
        special => {
            expect_wire(wire, 2, msg, f)?;
            special_value(r.bytes()?, special)?
        }
    })
}

/// The apimachinery types with a JSON form of their own.
fn special_value(bytes: &[u8], kind: &Kind) -> Result<Value, ProtoError> {
    let mut ints = [0i64; 4];
    let mut strs = [String::new(), String::new(), String::new(), String::new()];
    let mut raw: &[u8] = &[];
    let mut r = Reader::new(bytes);
    while let Some((tag, wire)) = r.key()? {
        let i = tag as usize;
        match wire {
            0 if i < 4 => ints[i] = r.varint()? as i64,
            2 if i == 1 && matches!(kind, Kind::RawJson) => raw = r.bytes()?,
            2 if i < 4 => strs[i] = r.string()?,
            _ => r.skip(wire)?,
        }
    }
    Ok(match kind {
        Kind::Time | Kind::MicroTime => {
            let (secs, nanos) = (ints[1], ints[2]);
            if secs == 0 && nanos == 0 {
                return Ok(Value::Null);
            }
            let t = chrono::DateTime::from_timestamp(secs, nanos.clamp(0, 999_999_999) as u32)
                .ok_or_else(|| malformed(format!("time out of range: {secs}s")))?;
            let format = if matches!(kind, Kind::Time) { "%Y-%m-%dT%H:%M:%SZ" } else { "%Y-%m-%dT%H:%M:%S%.6fZ" };
            Value::String(t.format(format).to_string())
        }
        Kind::Quantity => Value::String(std::mem::take(&mut strs[1])),
        Kind::IntOrString => match ints[1] {
            0 => Value::from(ints[2] as i32),
            _ => Value::String(std::mem::take(&mut strs[3])),
        },
        Kind::RawJson if raw.is_empty() => Value::Null,
        Kind::RawJson => {
            serde_json::from_slice(raw).map_err(|e| malformed(format!("embedded JSON is not valid: {e}")))?
        }
        _ => Value::Null,
    })
}

/// A cursor over protobuf wire data.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    fn done(&self) -> bool {
        self.buf.is_empty()
    }

    fn varint(&mut self) -> Result<u64, ProtoError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let (&b, rest) = self.buf.split_first().ok_or_else(|| malformed("truncated varint"))?;
            self.buf = rest;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(malformed("varint longer than 10 bytes"))
    }

    /// The next field key: (tag, wire type), or `None` at the end.
    fn key(&mut self) -> Result<Option<(u32, u8)>, ProtoError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let k = self.varint()?;
        let tag = u32::try_from(k >> 3).map_err(|_| malformed("field tag out of range"))?;
        if tag == 0 {
            return Err(malformed("field tag 0"));
        }
        Ok(Some((tag, (k & 7) as u8)))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtoError> {
        if n > self.buf.len() {
            return Err(malformed("truncated field"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn bytes(&mut self) -> Result<&'a [u8], ProtoError> {
        let n = usize::try_from(self.varint()?).map_err(|_| malformed("length out of range"))?;
        self.take(n)
    }

    fn string(&mut self) -> Result<String, ProtoError> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| malformed("a string field is not valid UTF-8"))
    }

    fn skip(&mut self, wire: u8) -> Result<(), ProtoError> {
        match wire {
            0 => self.varint().map(drop),
            1 => self.take(8).map(drop),
            2 => self.bytes().map(drop),
            5 => self.take(4).map(drop),
            w => Err(malformed(format!("unsupported wire type {w}"))),
        }
    }
}

#[cfg(test)]
mod tests;
