//! ConfigMap and Secret validation (`ValidateConfigMap`, `ValidateSecret` and their updates).

use super::meta::{validate_object_meta, validate_object_meta_update};
use super::names::{is_config_map_key, name_is_dns1123_subdomain};
use super::FIELD_IMMUTABLE;
use crate::FieldError;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::ByteString;
use std::collections::BTreeMap;

/// Maximum total size of a ConfigMap's or Secret's data (1 MiB).
pub const MAX_DATA_SIZE: usize = 1024 * 1024;

const IMMUTABLE_WHEN_SET: &str = "field is immutable when `immutable` is set";

/// Invalid keys in a data map, reported at `{path}[{key}]`.
fn validate_keys<'a>(keys: impl Iterator<Item = &'a String>, path: &str) -> Vec<FieldError> {
    keys.flat_map(|key| {
        is_config_map_key(key).into_iter().map(move |m| FieldError::invalid(format!("{path}[{key}]"), key, m))
    })
    .collect()
}

/// Validates a ConfigMap: valid keys, no key in both data and binaryData, at most 1 MiB; an
/// immutable ConfigMap's data may not change.
pub(super) fn config_map(new: &ConfigMap, old: Option<&ConfigMap>) -> Vec<FieldError> {
    let mut errs = validate_object_meta(&new.metadata, true, name_is_dns1123_subdomain, "metadata");
    let data = new.data.as_ref();
    let binary = new.binary_data.as_ref();
    errs.extend(validate_keys(data.into_iter().flat_map(BTreeMap::keys), "data"));
    for key in data.into_iter().flat_map(BTreeMap::keys) {
        if binary.is_some_and(|b| b.contains_key(key)) {
            errs.push(FieldError::invalid(format!("data[{key}]"), key, "duplicate of key present in binaryData"));
        }
    }
    errs.extend(validate_keys(binary.into_iter().flat_map(BTreeMap::keys), "binaryData"));
    let size: usize = data.into_iter().flatten().map(|(_, v)| v.len()).sum::<usize>()
        + binary.into_iter().flatten().map(|(_, v)| v.0.len()).sum::<usize>();
    if size > MAX_DATA_SIZE {
        errs.push(FieldError::too_long("[]", MAX_DATA_SIZE));
    }
    if let Some(old) = old {
        errs.extend(validate_object_meta_update(&new.metadata, &old.metadata, "metadata"));
        if old.immutable == Some(true) {
            if new.immutable != Some(true) {
                errs.push(FieldError::forbidden("immutable", IMMUTABLE_WHEN_SET));
            }
            if non_empty(&new.data) != non_empty(&old.data) {
                errs.push(FieldError::forbidden("data", IMMUTABLE_WHEN_SET));
            }
            if non_empty(&new.binary_data) != non_empty(&old.binary_data) {
                errs.push(FieldError::forbidden("binaryData", IMMUTABLE_WHEN_SET));
            }
        }
    }
    errs
}

/// A map, treating an empty one like an absent one.
fn non_empty<V>(map: &Option<BTreeMap<String, V>>) -> Option<&BTreeMap<String, V>> {
    map.as_ref().filter(|m| !m.is_empty())
}

/// Validates a Secret: valid keys, at most 1 MiB, the keys its type requires; on update the
/// type may not change and an immutable Secret's data may not change.
pub(super) fn secret(new: &Secret, old: Option<&Secret>) -> Vec<FieldError> {
    let mut errs = validate_object_meta(&new.metadata, true, name_is_dns1123_subdomain, "metadata");
    let empty = BTreeMap::new();
    let data = new.data.as_ref().unwrap_or(&empty);
    errs.extend(validate_keys(data.keys(), "data"));
    if data.values().map(|v| v.0.len()).sum::<usize>() > MAX_DATA_SIZE {
        errs.push(FieldError::too_long("data", MAX_DATA_SIZE));
    }
    errs.extend(validate_secret_type(new, data));
    if let Some(old) = old {
        errs.extend(validate_object_meta_update(&new.metadata, &old.metadata, "metadata"));
        let (new_type, old_type) = (new.type_.as_deref().unwrap_or_default(), old.type_.as_deref().unwrap_or_default());
        if new_type != old_type {
            errs.push(FieldError::invalid("type", new_type, FIELD_IMMUTABLE));
        }
        if old.immutable == Some(true) {
            if new.immutable != Some(true) {
                errs.push(FieldError::forbidden("immutable", IMMUTABLE_WHEN_SET));
            }
            if non_empty(&new.data) != non_empty(&old.data) {
                errs.push(FieldError::forbidden("data", IMMUTABLE_WHEN_SET));
            }
        }
    }
    errs
}

/// The data keys (or annotation) each built-in Secret type requires.
fn validate_secret_type(secret: &Secret, data: &BTreeMap<String, ByteString>) -> Vec<FieldError> {
    let required = |key: &str| FieldError::required(format!("data[{key}]"), "");
    let has = |key: &str| data.contains_key(key);
    match secret.type_.as_deref().unwrap_or_default() {
        "kubernetes.io/service-account-token" => {
            let key = "kubernetes.io/service-account.name";
            let named = secret.metadata.annotations.as_ref().and_then(|a| a.get(key)).is_some_and(|n| !n.is_empty());
            if named {
                Vec::new()
            } else {
                vec![FieldError::required(format!("metadata.annotations[{key}]"), "")]
            }
        }
        "kubernetes.io/dockercfg" => json_key(data, ".dockercfg"),
        "kubernetes.io/dockerconfigjson" => json_key(data, ".dockerconfigjson"),
        "kubernetes.io/basic-auth" if !has("username") && !has("password") => {
            vec![required("username"), required("password")]
        }
        "kubernetes.io/ssh-auth" if data.get("ssh-privatekey").is_none_or(|v| v.0.is_empty()) => {
            vec![required("ssh-privatekey")]
        }
        "kubernetes.io/tls" => ["tls.crt", "tls.key"].into_iter().filter(|k| !has(k)).map(required).collect(),
        _ => Vec::new(),
    }
}

/// `key` must be present and hold a JSON object.
fn json_key(data: &BTreeMap<String, ByteString>, key: &str) -> Vec<FieldError> {
    let path = format!("data[{key}]");
    match data.get(key) {
        None => vec![FieldError::required(path, "")],
        Some(bytes) => match serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&bytes.0) {
            Ok(_) => Vec::new(),
            Err(e) => vec![FieldError::invalid(path, "<secret contents redacted>", e.to_string())],
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CauseType;
    use serde_json::json;

    fn cm(v: serde_json::Value) -> ConfigMap {
        let mut obj = json!({"metadata": {"name": "cfg", "namespace": "default"}});
        if let (Some(o), Some(extra)) = (obj.as_object_mut(), v.as_object()) {
            o.extend(extra.clone());
        }
        serde_json::from_value(obj).unwrap()
    }

    fn sec(v: serde_json::Value) -> Secret {
        let mut obj = json!({"metadata": {"name": "s", "namespace": "default"}, "type": "Opaque"});
        if let (Some(o), Some(extra)) = (obj.as_object_mut(), v.as_object()) {
            o.extend(extra.clone());
        }
        serde_json::from_value(obj).unwrap()
    }

    fn fields(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(|e| format!("{} {:?}", e.field, e.cause)).collect()
    }

    #[test]
    fn config_maps() {
        assert!(config_map(
            &cm(json!({"data": {"app.conf": "x", "KEY_1": "y"}, "binaryData": {"b.bin": "AAE="}})),
            None
        )
        .is_empty());
        let errs = config_map(
            &cm(json!({"data": {"a/b": "x", "dup": "y"}, "binaryData": {"dup": "AA==", "..": "AA=="}})),
            None,
        );
        assert_eq!(fields(&errs), ["data[a/b] Invalid", "data[dup] Invalid", "binaryData[..] Invalid"]);
        assert_eq!(errs[1].detail, "duplicate of key present in binaryData");
        let big = "x".repeat(MAX_DATA_SIZE + 1);
        let errs = config_map(&cm(json!({"data": {"big": big}})), None);
        assert_eq!(errs[0].to_string(), "[]: Too long: may not be more than 1048576 bytes");
    }

    #[test]
    fn immutable_config_maps() {
        let old = cm(json!({"immutable": true, "data": {"a": "1"}}));
        assert!(config_map(&old, Some(&old)).is_empty());
        let changed = cm(json!({"data": {"a": "2"}, "binaryData": {"b": "AA=="}}));
        assert_eq!(
            fields(&config_map(&changed, Some(&old))),
            ["immutable Forbidden", "data Forbidden", "binaryData Forbidden"]
        );
        let mutable_old = cm(json!({"data": {"a": "1"}}));
        assert!(config_map(&changed, Some(&mutable_old)).is_empty());
    }

    #[test]
    fn secrets() {
        assert!(secret(&sec(json!({"data": {"password": "cGFzcw=="}})), None).is_empty());
        let errs = secret(&sec(json!({"data": {"bad key": "AA=="}})), None);
        assert_eq!(fields(&errs), ["data[bad key] Invalid"]);
        let tls = secret(&sec(json!({"type": "kubernetes.io/tls", "data": {"tls.crt": "AA=="}})), None);
        assert_eq!(fields(&tls), ["data[tls.key] Required"]);
        let basic = secret(&sec(json!({"type": "kubernetes.io/basic-auth"})), None);
        assert_eq!(fields(&basic), ["data[username] Required", "data[password] Required"]);
        assert!(secret(&sec(json!({"type": "kubernetes.io/basic-auth", "data": {"password": ""}})), None).is_empty());
        let ssh = secret(&sec(json!({"type": "kubernetes.io/ssh-auth", "data": {"ssh-privatekey": ""}})), None);
        assert_eq!(fields(&ssh), ["data[ssh-privatekey] Required"]);
        let docker = secret(
            &sec(json!({"type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": "bm90IGpzb24="}})),
            None,
        );
        assert_eq!(fields(&docker), ["data[.dockerconfigjson] Invalid"]);
        assert_eq!(docker[0].value.as_deref(), Some("\"<secret contents redacted>\""));
        let docker_ok =
            sec(json!({"type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": "eyJhdXRocyI6e319"}}));
        assert!(secret(&docker_ok, None).is_empty());
        let sa = secret(&sec(json!({"type": "kubernetes.io/service-account-token"})), None);
        assert_eq!(fields(&sa), ["metadata.annotations[kubernetes.io/service-account.name] Required"]);
        let big = base64_len_bytes(MAX_DATA_SIZE + 1);
        let errs = secret(&sec(json!({"data": {"big": big}})), None);
        assert_eq!(errs[0].cause, CauseType::TooLong);
    }

    /// Base64 of `n` zero bytes.
    fn base64_len_bytes(n: usize) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(vec![0u8; n])
    }

    #[test]
    fn secret_updates() {
        let old = sec(json!({"immutable": true, "data": {"a": "AA=="}}));
        assert!(secret(&old, Some(&old)).is_empty());
        let retyped = sec(
            json!({"type": "kubernetes.io/basic-auth", "immutable": true, "data": {"a": "AA==", "username": "AA=="}}),
        );
        let errs = secret(&retyped, Some(&old));
        assert_eq!(fields(&errs), ["type Invalid", "data Forbidden"]);
        assert_eq!(errs[0].detail, FIELD_IMMUTABLE);
        let unfrozen = sec(json!({"data": {"a": "AA=="}}));
        assert_eq!(fields(&secret(&unfrozen, Some(&old))), ["immutable Forbidden"]);
    }
}
