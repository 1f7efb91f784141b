//! Patches: JSON merge patch (RFC 7386) and JSON Patch (RFC 6902).
//!
//! [`json_patch`] follows RFC 6902 with the one quirk of evanphx/json-patch (the library the
//! Kubernetes API server uses) that stock clients rely on: a `test` whose value is `null`
//! succeeds against an object member that does not exist. kube-runtime's `finalizer()` helper
//! sends `test /metadata/finalizers null` before adding the first finalizer.
//!
//! Errors split the way the API server maps them: [`PatchError::Malformed`] (the body is not a
//! valid patch, HTTP 400) versus [`PatchError::TestFailed`] / [`PatchError::OperationFailed`]
//! (a valid patch that does not apply to this object, HTTP 422).

use serde_json::{Map, Value};

/// Why a JSON Patch was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The patch document is not a valid JSON Patch (not an array of well-formed operations).
    /// The API server answers 400 BadRequest.
    #[error("invalid JSON patch: {}{reason}", index.map(|i| format!("operation {i}: ")).unwrap_or_default())]
    Malformed {
        /// The (0-based) index of the offending operation, when one is to blame.
        index: Option<usize>,
        /// What is wrong.
        reason: String,
    },
    /// A `test` operation found a different value. The API server answers 422.
    #[error("testing value {path} failed")]
    TestFailed {
        /// The (0-based) index of the operation.
        index: usize,
        /// The JSON pointer tested.
        path: String,
    },
    /// An operation could not be applied, e.g. a missing path or an out-of-range index.
    /// The API server answers 422.
    #[error("{op} operation does not apply: {reason}: {path:?}")]
    OperationFailed {
        /// The (0-based) index of the operation.
        index: usize,
        /// The operation name (`add`, `remove`, `replace`, `move`, `copy`, `test`).
        op: &'static str,
        /// The operation's `path` (or `from`, when that is what failed).
        path: String,
        /// What went wrong.
        reason: String,
    },
}

impl PatchError {
    /// Whether the patch itself is malformed (400) rather than inapplicable to the target (422).
    pub fn is_malformed(&self) -> bool {
        matches!(self, PatchError::Malformed { .. })
    }
}

/// Applies an RFC 7386 JSON merge patch: objects merge recursively, `null` deletes a member,
/// anything else (including arrays) replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    ::json_patch::merge(target, patch);
}

/// Applies an RFC 6902 JSON Patch (`patch` must be an array of operations) atomically: on error
/// `target` is left unchanged. A `test` with value `null` succeeds when the tested object member
/// is absent (evanphx/json-patch behaviour); `add` accepts `-` as "append" on arrays.
pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), PatchError> {
    let ops = parse_patch(patch)?;
    let mut doc = target.clone();
    for (index, op) in ops.iter().enumerate() {
        apply_op(&mut doc, index, op)?;
    }
    *target = doc;
    Ok(())
}

/// One decoded operation.
#[derive(Debug)]
enum Op<'a> {
    Add { path: Pointer, value: &'a Value },
    Remove { path: Pointer },
    Replace { path: Pointer, value: &'a Value },
    Move { from: Pointer, path: Pointer },
    Copy { from: Pointer, path: Pointer },
    Test { path: Pointer, value: &'a Value },
}

/// A parsed JSON pointer (RFC 6901): its original text and unescaped reference tokens.
#[derive(Debug, Clone)]
struct Pointer {
    text: String,
    tokens: Vec<String>,
}

impl Pointer {
    fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Ok(Pointer { text: String::new(), tokens: Vec::new() });
        }
        let Some(rest) = text.strip_prefix('/') else {
            return Err(format!("JSON pointer {text:?} must be empty or start with '/'"));
        };
        let tokens = rest.split('/').map(|t| unescape_token(t, text)).collect::<Result<Vec<_>, _>>()?;
        Ok(Pointer { text: text.to_string(), tokens })
    }

    /// Whether `self` is a proper prefix of `other` (other points inside self).
    fn is_proper_prefix_of(&self, other: &Pointer) -> bool {
        self.tokens.len() < other.tokens.len() && other.tokens.starts_with(&self.tokens)
    }
}

fn unescape_token(token: &str, pointer: &str) -> Result<String, String> {
    if !token.contains('~') {
        return Ok(token.to_string());
    }
    let mut out = String::with_capacity(token.len());
    let mut chars = token.chars();
    while let Some(c) = chars.next() {
        if c != '~' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('0') => out.push('~'),
            Some('1') => out.push('/'),
            _ => return Err(format!("JSON pointer {pointer:?} has an invalid '~' escape")),
        }
    }
    Ok(out)
}

fn parse_patch(patch: &Value) -> Result<Vec<Op<'_>>, PatchError> {
    let Value::Array(items) = patch else {
        return Err(PatchError::Malformed {
            index: None,
            reason: "a JSON patch must be an array of operations".to_string(),
        });
    };
    items
        .iter()
        .enumerate()
        .map(|(index, item)| parse_op(item).map_err(|reason| PatchError::Malformed { index: Some(index), reason }))
        .collect()
}

fn parse_op(item: &Value) -> Result<Op<'_>, String> {
    let Value::Object(obj) = item else {
        return Err("an operation must be a JSON object".to_string());
    };
    let op = match obj.get("op") {
        Some(Value::String(op)) => op.as_str(),
        Some(_) => return Err("\"op\" must be a string".to_string()),
        None => return Err("missing \"op\"".to_string()),
    };
    let pointer = |field: &str| -> Result<Pointer, String> {
        match obj.get(field) {
            Some(Value::String(p)) => Pointer::parse(p),
            Some(_) => Err(format!("{op}: {field:?} must be a string")),
            None => Err(format!("{op}: missing {field:?}")),
        }
    };
    let value =
        |field: &str| -> Result<&Value, String> { obj.get(field).ok_or_else(|| format!("{op}: missing {field:?}")) };
    Ok(match op {
        "add" => Op::Add { path: pointer("path")?, value: value("value")? },
        "remove" => Op::Remove { path: pointer("path")? },
        "replace" => Op::Replace { path: pointer("path")?, value: value("value")? },
        "move" => Op::Move { from: pointer("from")?, path: pointer("path")? },
        "copy" => Op::Copy { from: pointer("from")?, path: pointer("path")? },
        "test" => Op::Test { path: pointer("path")?, value: value("value")? },
        other => return Err(format!("unknown op {other:?}")),
    })
}

fn apply_op(doc: &mut Value, index: usize, op: &Op<'_>) -> Result<(), PatchError> {
    let fail = |op: &'static str, path: &Pointer, reason: String| PatchError::OperationFailed {
        index,
        op,
        path: path.text.clone(),
        reason,
    };
    match op {
        Op::Add { path, value } => add(doc, &path.tokens, (*value).clone()).map_err(|r| fail("add", path, r)),
        Op::Remove { path } => remove(doc, &path.tokens).map(drop).map_err(|r| fail("remove", path, r)),
        Op::Replace { path, value } => {
            replace(doc, &path.tokens, (*value).clone()).map_err(|r| fail("replace", path, r))
        }
        Op::Move { from, path } => {
            if from.tokens == path.tokens {
                // A no-op, but `from` must still exist.
                return get(doc, &from.tokens).map(drop).map_err(|r| fail("move", from, r));
            }
            if from.is_proper_prefix_of(path) {
                return Err(fail("move", path, format!("cannot move {:?} into its own child", from.text)));
            }
            let value = remove(doc, &from.tokens).map_err(|r| fail("move", from, r))?;
            add(doc, &path.tokens, value).map_err(|r| fail("move", path, r))
        }
        Op::Copy { from, path } => {
            let value = get(doc, &from.tokens).map_err(|r| fail("copy", from, r))?.clone();
            add(doc, &path.tokens, value).map_err(|r| fail("copy", path, r))
        }
        Op::Test { path, value } => {
            let test_failed = || PatchError::TestFailed { index, path: path.text.clone() };
            match lookup_for_test(doc, &path.tokens) {
                Err(reason) => Err(fail("test", path, reason)),
                // evanphx/json-patch: a missing member tests equal to null.
                Ok(None) if value.is_null() => Ok(()),
                Ok(None) => Err(test_failed()),
                Ok(Some(actual)) if json_equal(actual, value) => Ok(()),
                Ok(Some(_)) => Err(test_failed()),
            }
        }
    }
}

/// Parses an array index token: `0` or digits without a leading zero.
fn array_index(token: &str) -> Result<usize, String> {
    let valid =
        !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit()) && (token == "0" || !token.starts_with('0'));
    if !valid {
        return Err(format!("invalid array index {token:?}"));
    }
    token.parse::<usize>().map_err(|_| format!("invalid array index {token:?}"))
}

fn get<'v>(doc: &'v Value, tokens: &[String]) -> Result<&'v Value, String> {
    let mut cur = doc;
    for token in tokens {
        cur = match cur {
            Value::Object(map) => map.get(token).ok_or("doc is missing path")?,
            Value::Array(items) => {
                let i = array_index(token)?;
                items.get(i).ok_or_else(|| format!("index {i} out of range"))?
            }
            _ => return Err("doc is missing path".to_string()),
        };
    }
    Ok(cur)
}

/// The parent container of the last token, which must exist.
fn parent_mut<'v>(doc: &'v mut Value, tokens: &[String]) -> Result<&'v mut Value, String> {
    let mut cur = doc;
    for token in tokens {
        cur = match cur {
            Value::Object(map) => map.get_mut(token).ok_or("doc is missing path")?,
            Value::Array(items) => {
                let i = array_index(token)?;
                items.get_mut(i).ok_or_else(|| format!("index {i} out of range"))?
            }
            _ => return Err("doc is missing path".to_string()),
        };
    }
    Ok(cur)
}

/// For `test`: `Ok(None)` when the parent is an object without the member (or the member is
/// `null`), an error when the parent is missing or an array index is out of range.
fn lookup_for_test<'v>(doc: &'v Value, tokens: &[String]) -> Result<Option<&'v Value>, String> {
    let Some((last, parents)) = tokens.split_last() else {
        return Ok(Some(doc));
    };
    match get(doc, parents)? {
        Value::Object(map) => Ok(map.get(last).filter(|v| !v.is_null())),
        parent @ Value::Array(_) => get(parent, std::slice::from_ref(last)).map(Some),
        _ => Err("doc is missing path".to_string()),
    }
}

fn add(doc: &mut Value, tokens: &[String], value: Value) -> Result<(), String> {
    let Some((last, parents)) = tokens.split_last() else {
        *doc = value;
        return Ok(());
    };
    match parent_mut(doc, parents)? {
        Value::Object(map) => {
            map.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(items) => {
            if last == "-" {
                items.push(value);
                return Ok(());
            }
            let i = array_index(last)?;
            if i > items.len() {
                return Err(format!("index {i} out of range"));
            }
            items.insert(i, value);
            Ok(())
        }
        _ => Err("doc is missing path".to_string()),
    }
}

fn remove(doc: &mut Value, tokens: &[String]) -> Result<Value, String> {
    let Some((last, parents)) = tokens.split_last() else {
        return Err("cannot remove the whole document".to_string());
    };
    match parent_mut(doc, parents)? {
        Value::Object(map) => map.remove(last).ok_or_else(|| "doc is missing path".to_string()),
        Value::Array(items) => {
            let i = array_index(last)?;
            if i >= items.len() {
                return Err(format!("index {i} out of range"));
            }
            Ok(items.remove(i))
        }
        _ => Err("doc is missing path".to_string()),
    }
}

fn replace(doc: &mut Value, tokens: &[String], value: Value) -> Result<(), String> {
    let Some((last, parents)) = tokens.split_last() else {
        *doc = value;
        return Ok(());
    };
    let slot = match parent_mut(doc, parents)? {
        Value::Object(map) => map.get_mut(last).ok_or("doc is missing key")?,
        Value::Array(items) => {
            let i = array_index(last)?;
            items.get_mut(i).ok_or_else(|| format!("index {i} out of range"))?
        }
        _ => return Err("doc is missing path".to_string()),
    };
    *slot = value;
    Ok(())
}

/// JSON equality where numbers compare by value (`1` equals `1.0`), as Go's decoding does.
fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
                x == y
            } else if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
                x == y
            } else {
                x.as_f64() == y.as_f64()
            }
        }
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_equal(a, b)),
        (Value::Object(x), Value::Object(y)) => objects_equal(x, y),
        _ => a == b,
    }
}

fn objects_equal(x: &Map<String, Value>, y: &Map<String, Value>) -> bool {
    x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn apply(doc: Value, patch: Value) -> Result<Value, PatchError> {
        let mut doc = doc;
        let before = doc.clone();
        let result = json_patch(&mut doc, &patch);
        match result {
            Ok(()) => Ok(doc),
            Err(e) => {
                assert_eq!(doc, before, "a failed patch must leave the target unchanged");
                Err(e)
            }
        }
    }

    #[test]
    fn rfc6902_appendix_a() {
        // A.1 add an object member
        assert_eq!(
            apply(json!({"foo": "bar"}), json!([{"op": "add", "path": "/baz", "value": "qux"}])).unwrap(),
            json!({"baz": "qux", "foo": "bar"})
        );
        // A.2 add an array element
        assert_eq!(
            apply(json!({"foo": ["bar", "baz"]}), json!([{"op": "add", "path": "/foo/1", "value": "qux"}])).unwrap(),
            json!({"foo": ["bar", "qux", "baz"]})
        );
        // A.3 remove an object member
        assert_eq!(
            apply(json!({"baz": "qux", "foo": "bar"}), json!([{"op": "remove", "path": "/baz"}])).unwrap(),
            json!({"foo": "bar"})
        );
        // A.4 remove an array element
        assert_eq!(
            apply(json!({"foo": ["bar", "qux", "baz"]}), json!([{"op": "remove", "path": "/foo/1"}])).unwrap(),
            json!({"foo": ["bar", "baz"]})
        );
        // A.5 replace a value
        assert_eq!(
            apply(json!({"baz": "qux", "foo": "bar"}), json!([{"op": "replace", "path": "/baz", "value": "boo"}]))
                .unwrap(),
            json!({"baz": "boo", "foo": "bar"})
        );
        // A.6 move a value
        assert_eq!(
            apply(
                json!({"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"}}),
                json!([{"op": "move", "from": "/foo/waldo", "path": "/qux/thud"}])
            )
            .unwrap(),
            json!({"foo": {"bar": "baz"}, "qux": {"corge": "grault", "thud": "fred"}})
        );
        // A.7 move an array element
        assert_eq!(
            apply(
                json!({"foo": ["all", "grass", "cows", "eat"]}),
                json!([{"op": "move", "from": "/foo/1", "path": "/foo/3"}])
            )
            .unwrap(),
            json!({"foo": ["all", "cows", "eat", "grass"]})
        );
        // A.8 test a value: success
        assert_eq!(
            apply(
                json!({"baz": "qux", "foo": ["a", 2, "c"]}),
                json!([
                    {"op": "test", "path": "/baz", "value": "qux"},
                    {"op": "test", "path": "/foo/1", "value": 2}
                ])
            )
            .unwrap(),
            json!({"baz": "qux", "foo": ["a", 2, "c"]})
        );
        // A.9 test a value: error
        assert_eq!(
            apply(json!({"baz": "qux"}), json!([{"op": "test", "path": "/baz", "value": "bar"}])).unwrap_err(),
            PatchError::TestFailed { index: 0, path: "/baz".into() }
        );
        // A.10 add a nested member object
        assert_eq!(
            apply(json!({"foo": "bar"}), json!([{"op": "add", "path": "/child", "value": {"grandchild": {}}}]))
                .unwrap(),
            json!({"foo": "bar", "child": {"grandchild": {}}})
        );
        // A.11 ignore unrecognized elements
        assert_eq!(
            apply(json!({"foo": "bar"}), json!([{"op": "add", "path": "/baz", "value": "qux", "xyz": 123}])).unwrap(),
            json!({"foo": "bar", "baz": "qux"})
        );
        // A.12 add to a nonexistent target
        let err = apply(json!({"foo": "bar"}), json!([{"op": "add", "path": "/baz/bat", "value": "qux"}])).unwrap_err();
        assert!(matches!(err, PatchError::OperationFailed { index: 0, op: "add", .. }), "{err:?}");
        assert!(!err.is_malformed());
        // A.14 ~ escape ordering
        assert_eq!(
            apply(json!({"/": 9, "~1": 10}), json!([{"op": "test", "path": "/~01", "value": 10}])).unwrap(),
            json!({"/": 9, "~1": 10})
        );
        // A.15 comparing strings and numbers
        assert!(matches!(
            apply(json!({"/": 9, "~1": 10}), json!([{"op": "test", "path": "/~01", "value": "10"}])),
            Err(PatchError::TestFailed { .. })
        ));
        // A.16 adding an array value
        assert_eq!(
            apply(json!({"foo": ["bar"]}), json!([{"op": "add", "path": "/foo/-", "value": ["abc", "def"]}])).unwrap(),
            json!({"foo": ["bar", ["abc", "def"]]})
        );
    }

    #[test]
    fn copy_and_root_and_misc() {
        assert_eq!(
            apply(json!({"a": {"b": [1]}}), json!([{"op": "copy", "from": "/a/b", "path": "/c"}])).unwrap(),
            json!({"a": {"b": [1]}, "c": [1]})
        );
        assert_eq!(
            apply(json!({"a": [1, 2]}), json!([{"op": "copy", "from": "/a/0", "path": "/a/-"}])).unwrap(),
            json!({"a": [1, 2, 1]})
        );
        assert_eq!(apply(json!({"a": 1}), json!([{"op": "replace", "path": "", "value": [1]}])).unwrap(), json!([1]));
        assert_eq!(
            apply(json!({"a": 1}), json!([{"op": "add", "path": "", "value": {"b": 2}}])).unwrap(),
            json!({"b": 2})
        );
        assert_eq!(apply(json!({"a": 1}), json!([])).unwrap(), json!({"a": 1}));
        // add to the end by explicit index, add replaces an existing member
        assert_eq!(
            apply(
                json!({"a": [1], "b": 1}),
                json!([
                    {"op": "add", "path": "/a/1", "value": 2},
                    {"op": "add", "path": "/b", "value": 3}
                ])
            )
            .unwrap(),
            json!({"a": [1, 2], "b": 3})
        );
        // move onto itself is a no-op; into its own child fails
        assert_eq!(
            apply(json!({"a": {"b": 1}}), json!([{"op": "move", "from": "/a", "path": "/a"}])).unwrap(),
            json!({"a": {"b": 1}})
        );
        assert!(matches!(
            apply(json!({"a": {"b": 1}}), json!([{"op": "move", "from": "/a", "path": "/a/c"}])),
            Err(PatchError::OperationFailed { op: "move", .. })
        ));
        // test compares numbers by value and whole structures
        assert!(apply(json!({"n": 1}), json!([{"op": "test", "path": "/n", "value": 1.0}])).is_ok());
        assert!(apply(
            json!({"o": {"a": [1, {"b": 2}]}}),
            json!([{"op": "test", "path": "/o", "value": {"a": [1, {"b": 2}]}}])
        )
        .is_ok());
        assert!(apply(json!({"a": 1}), json!([{"op": "test", "path": "", "value": {"a": 1}}])).is_ok());
    }

    #[test]
    fn operation_failures_are_422_and_atomic() {
        let doc = json!({"a": [1, 2], "o": {"k": "v"}});
        let failing = [
            json!([{"op": "remove", "path": "/missing"}]),
            json!([{"op": "remove", "path": "/a/2"}]),
            json!([{"op": "remove", "path": "/a/-"}]),
            json!([{"op": "replace", "path": "/missing", "value": 1}]),
            json!([{"op": "replace", "path": "/a/5", "value": 1}]),
            json!([{"op": "add", "path": "/a/3", "value": 1}]),
            json!([{"op": "add", "path": "/a/01", "value": 1}]),
            json!([{"op": "add", "path": "/a/x", "value": 1}]),
            json!([{"op": "add", "path": "/o/k/deeper", "value": 1}]),
            json!([{"op": "move", "from": "/missing", "path": "/b"}]),
            json!([{"op": "copy", "from": "/missing", "path": "/b"}]),
            json!([{"op": "remove", "path": ""}]),
            // the first op succeeds, the second fails: nothing is applied
            json!([{"op": "add", "path": "/new", "value": 1}, {"op": "test", "path": "/o/k", "value": "w"}]),
            // test null on a missing *parent* or an out-of-range index still fails
            json!([{"op": "test", "path": "/missing/x", "value": null}]),
            json!([{"op": "test", "path": "/a/7", "value": null}]),
        ];
        for patch in failing {
            let err = apply(doc.clone(), patch.clone()).unwrap_err();
            assert!(!err.is_malformed(), "{patch}: {err}");
        }
        let err = apply(doc.clone(), json!([{"op": "remove", "path": "/missing"}])).unwrap_err();
        assert_eq!(err.to_string(), "remove operation does not apply: doc is missing path: \"/missing\"");
        let err =
            apply(doc, json!([{"op": "add", "path": "/x", "value": 1}, {"op": "test", "path": "/o/k", "value": 1}]))
                .unwrap_err();
        assert_eq!(err, PatchError::TestFailed { index: 1, path: "/o/k".into() });
        assert_eq!(err.to_string(), "testing value /o/k failed");
    }

    #[test]
    fn malformed_patches_are_400() {
        let cases = [
            json!({"op": "add", "path": "/a", "value": 1}),
            json!("x"),
            json!([1]),
            json!([{"path": "/a"}]),
            json!([{"op": 1, "path": "/a"}]),
            json!([{"op": "frobnicate", "path": "/a"}]),
            json!([{"op": "add", "value": 1}]),
            json!([{"op": "add", "path": "/a"}]),
            json!([{"op": "add", "path": 3, "value": 1}]),
            json!([{"op": "add", "path": "a", "value": 1}]),
            json!([{"op": "add", "path": "/a~2", "value": 1}]),
            json!([{"op": "replace", "path": "/a"}]),
            json!([{"op": "test", "path": "/a"}]),
            json!([{"op": "move", "path": "/a"}]),
            json!([{"op": "copy", "from": "/a"}]),
            json!([{"op": "remove", "path": "/a"}, {"op": "remove"}]),
        ];
        for patch in cases {
            let mut doc = json!({"a": 1});
            let err = json_patch(&mut doc, &patch).unwrap_err();
            assert!(err.is_malformed(), "{patch}: {err:?}");
            assert_eq!(doc, json!({"a": 1}));
        }
        let mut doc = json!({});
        assert_eq!(
            json_patch(&mut doc, &json!([{"op": "remove", "path": "/a"}, {"op": "nope", "path": "/a"}])).unwrap_err(),
            PatchError::Malformed { index: Some(1), reason: "unknown op \"nope\"".into() }
        );
        assert_eq!(
            json_patch(&mut doc, &json!({})).unwrap_err().to_string(),
            "invalid JSON patch: a JSON patch must be an array of operations"
        );
        assert_eq!(
            json_patch(&mut doc, &json!([{"op": "add", "path": "/a"}])).unwrap_err().to_string(),
            "invalid JSON patch: operation 0: add: missing \"value\""
        );
    }

    #[test]
    fn test_null_against_missing_member_succeeds() {
        let doc = json!({"metadata": {"name": "x"}});
        assert!(apply(doc.clone(), json!([{"op": "test", "path": "/metadata/finalizers", "value": null}])).is_ok());
        // ... and against a present null
        assert!(apply(json!({"a": null}), json!([{"op": "test", "path": "/a", "value": null}])).is_ok());
        // but not against a present non-null value
        assert!(matches!(
            apply(json!({"a": []}), json!([{"op": "test", "path": "/a", "value": null}])),
            Err(PatchError::TestFailed { .. })
        ));
        // and a non-null test against a missing member fails
        assert!(matches!(
            apply(doc, json!([{"op": "test", "path": "/metadata/finalizers", "value": []}])),
            Err(PatchError::TestFailed { .. })
        ));
    }

    #[test]
    fn kube_runtime_finalizer_patches() {
        // Adding the first finalizer.
        let obj = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm", "namespace": "default"}});
        let patched = apply(
            obj.clone(),
            json!([
                {"op": "test", "path": "/metadata/finalizers", "value": null},
                {"op": "add", "path": "/metadata/finalizers", "value": ["x"]}
            ]),
        )
        .unwrap();
        assert_eq!(patched["metadata"]["finalizers"], json!(["x"]));

        // Adding another finalizer: test the full array, append with `-`.
        let patched = apply(
            patched,
            json!([
                {"op": "test", "path": "/metadata/finalizers", "value": ["x"]},
                {"op": "add", "path": "/metadata/finalizers/-", "value": "y"}
            ]),
        )
        .unwrap();
        assert_eq!(patched["metadata"]["finalizers"], json!(["x", "y"]));

        // Removing a finalizer.
        let removal = json!([
            {"op": "test", "path": "/metadata/finalizers/0", "value": "x"},
            {"op": "remove", "path": "/metadata/finalizers/0"}
        ]);
        let patched = apply(patched, removal.clone()).unwrap();
        assert_eq!(patched["metadata"]["finalizers"], json!(["y"]));
        // Replaying the removal against the changed object fails the test (422).
        assert_eq!(
            apply(patched, removal.clone()).unwrap_err(),
            PatchError::TestFailed { index: 0, path: "/metadata/finalizers/0".into() }
        );
        // A concurrent writer already added finalizers: the null test fails.
        let err = apply(
            json!({"metadata": {"finalizers": ["z"]}}),
            json!([
                {"op": "test", "path": "/metadata/finalizers", "value": null},
                {"op": "add", "path": "/metadata/finalizers", "value": ["x"]}
            ]),
        )
        .unwrap_err();
        assert!(matches!(err, PatchError::TestFailed { index: 0, .. }));
        // Removing from an object without finalizers fails rather than succeeding silently.
        assert!(apply(obj, removal).is_err());
    }

    #[test]
    fn merge_patch_rfc7386() {
        // RFC 7386 appendix A test cases.
        let cases = [
            (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
            (json!({"a": "b"}), json!({"b": "c"}), json!({"a": "b", "b": "c"})),
            (json!({"a": "b"}), json!({"a": null}), json!({})),
            (json!({"a": "b", "b": "c"}), json!({"a": null}), json!({"b": "c"})),
            (json!({"a": ["b"]}), json!({"a": "c"}), json!({"a": "c"})),
            (json!({"a": "c"}), json!({"a": ["b"]}), json!({"a": ["b"]})),
            (json!({"a": {"b": "c"}}), json!({"a": {"b": "d", "c": null}}), json!({"a": {"b": "d"}})),
            (json!({"a": [{"b": "c"}]}), json!({"a": [1]}), json!({"a": [1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a": "b"}), json!(["c"]), json!(["c"])),
            (json!({"a": "foo"}), json!(null), json!(null)),
            (json!({"a": "foo"}), json!("bar"), json!("bar")),
            (json!({"e": null}), json!({"a": 1}), json!({"e": null, "a": 1})),
            (json!([1, 2]), json!({"a": "b", "c": null}), json!({"a": "b"})),
            (json!({}), json!({"a": {"bb": {"ccc": null}}}), json!({"a": {"bb": {}}})),
        ];
        for (target, patch, want) in cases {
            let mut doc = target.clone();
            merge_patch(&mut doc, &patch);
            assert_eq!(doc, want, "{target} + {patch}");
        }
    }
}
