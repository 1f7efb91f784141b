//! Pod volume validation (`ValidateVolumes` and the sources Ferry can run).

use super::names::{is_dns1123_label, name_is_dns1123_subdomain};
use super::quantity::parse_quantity;
use crate::FieldError;
use k8s_openapi::api::core::v1::{DownwardAPIVolumeFile, KeyToPath, Volume};
use std::collections::BTreeMap;

/// `defaultMode`/`mode` out of range.
const FILE_MODE_ERROR: &str = "must be a number between 0 and 0777 (octal), both inclusive";

/// The valid volumes of a pod by name, for checking volume mounts.
pub(super) type Volumes<'a> = BTreeMap<&'a str, &'a Volume>;

/// Validates the pod's volumes (names are unique DNS labels, each has exactly one source) and
/// returns the valid ones by name.
pub(super) fn validate_volumes<'a>(volumes: &'a [Volume], path: &str) -> (Volumes<'a>, Vec<FieldError>) {
    let mut valid = Volumes::new();
    let mut errs = Vec::new();
    for (i, volume) in volumes.iter().enumerate() {
        let vol_path = format!("{path}[{i}]");
        let name_path = format!("{vol_path}.name");
        let mut vol_errs = validate_volume_source(volume, &vol_path);
        if volume.name.is_empty() {
            vol_errs.push(FieldError::required(&name_path, ""));
        } else {
            vol_errs.extend(
                is_dns1123_label(&volume.name).into_iter().map(|m| FieldError::invalid(&name_path, &volume.name, m)),
            );
        }
        if valid.contains_key(volume.name.as_str()) {
            vol_errs.push(FieldError::duplicate(&name_path, &volume.name));
        }
        if vol_errs.is_empty() {
            valid.insert(volume.name.as_str(), volume);
        }
        errs.extend(vol_errs);
    }
    (valid, errs)
}

/// The JSON names of the volume sources that are set, in Kubernetes' checking order.
fn set_sources(v: &Volume) -> Vec<&'static str> {
    let sources = [
        ("emptyDir", v.empty_dir.is_some()),
        ("hostPath", v.host_path.is_some()),
        ("gitRepo", v.git_repo.is_some()),
        ("gcePersistentDisk", v.gce_persistent_disk.is_some()),
        ("awsElasticBlockStore", v.aws_elastic_block_store.is_some()),
        ("secret", v.secret.is_some()),
        ("nfs", v.nfs.is_some()),
        ("iscsi", v.iscsi.is_some()),
        ("glusterfs", v.glusterfs.is_some()),
        ("flocker", v.flocker.is_some()),
        ("persistentVolumeClaim", v.persistent_volume_claim.is_some()),
        ("rbd", v.rbd.is_some()),
        ("cinder", v.cinder.is_some()),
        ("cephfs", v.cephfs.is_some()),
        ("quobyte", v.quobyte.is_some()),
        ("downwardAPI", v.downward_api.is_some()),
        ("fc", v.fc.is_some()),
        ("flexVolume", v.flex_volume.is_some()),
        ("configMap", v.config_map.is_some()),
        ("azureFile", v.azure_file.is_some()),
        ("vsphereVolume", v.vsphere_volume.is_some()),
        ("photonPersistentDisk", v.photon_persistent_disk.is_some()),
        ("portworxVolume", v.portworx_volume.is_some()),
        ("azureDisk", v.azure_disk.is_some()),
        ("storageos", v.storageos.is_some()),
        ("projected", v.projected.is_some()),
        ("scaleIO", v.scale_io.is_some()),
        ("csi", v.csi.is_some()),
        ("ephemeral", v.ephemeral.is_some()),
        ("image", v.image.is_some()),
    ];
    sources.iter().filter(|(_, set)| *set).map(|(name, _)| *name).collect()
}

/// Exactly one source must be set; the first one is checked in detail.
fn validate_volume_source(v: &Volume, path: &str) -> Vec<FieldError> {
    let sources = set_sources(v);
    let mut errs: Vec<FieldError> = sources
        .iter()
        .skip(1)
        .map(|s| FieldError::forbidden(format!("{path}.{s}"), "may not specify more than 1 volume type"))
        .collect();
    match sources.first() {
        None => errs.push(FieldError::required(path, "must specify a volume type")),
        Some(first) => errs.extend(validate_source_details(v, first, &format!("{path}.{first}"))),
    }
    errs
}

fn validate_source_details(v: &Volume, source: &str, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    match source {
        "emptyDir" => {
            let limit = v.empty_dir.as_ref().and_then(|e| e.size_limit.as_ref());
            if limit.is_some_and(|q| parse_quantity(&q.0).is_none_or(|q| q.is_negative())) {
                errs.push(FieldError::forbidden(
                    format!("{path}.sizeLimit"),
                    "SizeLimit field must be a valid resource quantity",
                ));
            }
        }
        "hostPath" => {
            if let Some(host_path) = &v.host_path {
                if host_path.path.is_empty() {
                    errs.push(FieldError::required(format!("{path}.path"), ""));
                } else {
                    errs.extend(no_backsteps(&host_path.path, &format!("{path}.path")));
                }
            }
        }
        "secret" => {
            if let Some(secret) = &v.secret {
                if secret.secret_name.as_deref().unwrap_or_default().is_empty() {
                    errs.push(FieldError::required(format!("{path}.secretName"), ""));
                }
                errs.extend(file_mode(secret.default_mode, &format!("{path}.defaultMode")));
                errs.extend(key_to_paths(secret.items.as_deref().unwrap_or_default(), &format!("{path}.items")));
            }
        }
        "configMap" => {
            if let Some(config_map) = &v.config_map {
                if config_map.name.is_empty() {
                    errs.push(FieldError::required(format!("{path}.name"), ""));
                }
                errs.extend(file_mode(config_map.default_mode, &format!("{path}.defaultMode")));
                errs.extend(key_to_paths(config_map.items.as_deref().unwrap_or_default(), &format!("{path}.items")));
            }
        }
        "persistentVolumeClaim" if v.persistent_volume_claim.as_ref().is_some_and(|c| c.claim_name.is_empty()) => {
            errs.push(FieldError::required(format!("{path}.claimName"), ""));
        }
        "nfs" => {
            if let Some(nfs) = &v.nfs {
                if nfs.server.is_empty() {
                    errs.push(FieldError::required(format!("{path}.server"), ""));
                }
                if nfs.path.is_empty() {
                    errs.push(FieldError::required(format!("{path}.path"), ""));
                }
                if !nfs.path.starts_with('/') {
                    errs.push(FieldError::invalid(format!("{path}.path"), &nfs.path, "must be an absolute path"));
                }
            }
        }
        "downwardAPI" => {
            if let Some(downward) = &v.downward_api {
                errs.extend(file_mode(downward.default_mode, &format!("{path}.defaultMode")));
                for (i, file) in downward.items.iter().flatten().enumerate() {
                    errs.extend(downward_api_file(file, &format!("{path}.items[{i}]")));
                }
            }
        }
        "projected" => {
            if let Some(projected) = &v.projected {
                errs.extend(file_mode(projected.default_mode, &format!("{path}.defaultMode")));
                for (i, source) in projected.sources.iter().flatten().enumerate() {
                    let src_path = format!("{path}.sources[{i}]");
                    if source.secret.as_ref().is_some_and(|s| s.name.is_empty()) {
                        errs.push(FieldError::required(format!("{src_path}.secret.name"), ""));
                    }
                    if source.config_map.as_ref().is_some_and(|c| c.name.is_empty()) {
                        errs.push(FieldError::required(format!("{src_path}.configMap.name"), ""));
                    }
                    if let Some(token) = &source.service_account_token {
                        if token.path.is_empty() {
                            errs.push(FieldError::required(format!("{src_path}.serviceAccountToken.path"), ""));
                        }
                    }
                }
            }
        }
        "image" if v.image.as_ref().is_some_and(|i| i.reference.as_deref().unwrap_or_default().is_empty()) => {
            errs.push(FieldError::required(format!("{path}.reference"), ""));
        }
        _ => {}
    }
    errs
}

/// A file mode must be within 0..=0o777.
fn file_mode(mode: Option<i32>, path: &str) -> Option<FieldError> {
    mode.filter(|m| !(0..=0o777).contains(m)).map(|m| FieldError::invalid(path, m, FILE_MODE_ERROR))
}

fn key_to_paths(items: &[KeyToPath], path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let item_path = format!("{path}[{i}]");
        if item.key.is_empty() {
            errs.push(FieldError::required(format!("{item_path}.key"), ""));
        }
        if item.path.is_empty() {
            errs.push(FieldError::required(format!("{item_path}.path"), ""));
        }
        errs.extend(local_non_reserved_path(&item.path, &format!("{item_path}.path")));
        errs.extend(file_mode(item.mode, &format!("{item_path}.mode")));
    }
    errs
}

fn downward_api_file(file: &DownwardAPIVolumeFile, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if file.path.is_empty() {
        errs.push(FieldError::required(format!("{path}.path"), ""));
    }
    errs.extend(local_non_reserved_path(&file.path, &format!("{path}.path")));
    match (&file.field_ref, &file.resource_field_ref) {
        (Some(_), Some(_)) => errs.push(FieldError::invalid(
            path,
            "resource",
            "fieldRef and resourceFieldRef can not be specified simultaneously",
        )),
        (None, None) => errs.push(FieldError::required(path, "one of fieldRef and resourceFieldRef is required")),
        _ => {}
    }
    errs.extend(file_mode(file.mode, &format!("{path}.mode")));
    errs
}

/// A path that may not contain a `..` element.
pub(super) fn no_backsteps(target: &str, path: &str) -> Option<FieldError> {
    target.split('/').any(|part| part == "..").then(|| FieldError::invalid(path, target, "must not contain '..'"))
}

/// A relative path without `..` elements.
pub(super) fn local_descending_path(target: &str, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if target.starts_with('/') {
        errs.push(FieldError::invalid(path, target, "must be a relative path"));
    }
    errs.extend(no_backsteps(target, path));
    errs
}

/// A relative path without `..` elements that also does not start with `..`.
fn local_non_reserved_path(target: &str, path: &str) -> Vec<FieldError> {
    let mut errs = local_descending_path(target, path);
    if target.starts_with("..") {
        errs.push(FieldError::invalid(path, target, "must not start with '..'"));
    }
    errs
}

/// A configMap/secret name referenced from a pod: a DNS subdomain.
pub(super) fn referenced_name(name: &str, path: &str) -> Vec<FieldError> {
    name_is_dns1123_subdomain(name, false).into_iter().map(|m| FieldError::invalid(path, name, m)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CauseType;
    use serde_json::json;

    fn volumes(v: serde_json::Value) -> Vec<Volume> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn valid_volumes() {
        let vols = volumes(json!([
            {"name": "data", "emptyDir": {}},
            {"name": "cfg", "configMap": {"name": "app", "defaultMode": 420, "items": [{"key": "a", "path": "dir/a"}]}},
            {"name": "sec", "secret": {"secretName": "s"}},
            {"name": "host", "hostPath": {"path": "/var/log"}},
            {"name": "claim", "persistentVolumeClaim": {"claimName": "pvc"}},
            {"name": "info", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
            {"name": "proj", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}}
        ]));
        let (valid, errs) = validate_volumes(&vols, "spec.volumes");
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(valid.len(), 7);
    }

    #[test]
    fn names_and_sources() {
        let vols = volumes(json!([
            {"name": "", "emptyDir": {}},
            {"name": "Bad_Name", "emptyDir": {}},
            {"name": "a", "emptyDir": {}},
            {"name": "a", "emptyDir": {}},
            {"name": "none"},
            {"name": "two", "emptyDir": {}, "hostPath": {"path": "/x"}}
        ]));
        let (valid, errs) = validate_volumes(&vols, "spec.volumes");
        let rendered: Vec<String> = errs.iter().map(|e| format!("{} {:?}", e.field, e.cause)).collect();
        assert_eq!(
            rendered,
            [
                "spec.volumes[0].name Required",
                "spec.volumes[1].name Invalid",
                "spec.volumes[3].name Duplicate",
                "spec.volumes[4] Required",
                "spec.volumes[5].hostPath Forbidden",
            ]
        );
        assert_eq!(errs[3].detail, "must specify a volume type");
        assert_eq!(errs[4].detail, "may not specify more than 1 volume type");
        assert_eq!(valid.keys().copied().collect::<Vec<_>>(), ["a"]);
    }

    #[test]
    fn source_details() {
        let vols = volumes(json!([
            {"name": "a", "configMap": {"name": "", "defaultMode": 512, "items": [{"key": "", "path": "../x"}]}},
            {"name": "b", "secret": {}},
            {"name": "c", "hostPath": {"path": ""}},
            {"name": "d", "persistentVolumeClaim": {"claimName": ""}},
            {"name": "e", "nfs": {"server": "", "path": "rel"}},
            {"name": "f", "downwardAPI": {"items": [{"path": "/abs"}]}},
            {"name": "g", "emptyDir": {"sizeLimit": "-1Gi"}}
        ]));
        let (_, errs) = validate_volumes(&vols, "spec.volumes");
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.volumes[0].configMap.name",
                "spec.volumes[0].configMap.defaultMode",
                "spec.volumes[0].configMap.items[0].key",
                "spec.volumes[0].configMap.items[0].path",
                "spec.volumes[0].configMap.items[0].path",
                "spec.volumes[1].secret.secretName",
                "spec.volumes[2].hostPath.path",
                "spec.volumes[3].persistentVolumeClaim.claimName",
                "spec.volumes[4].nfs.server",
                "spec.volumes[4].nfs.path",
                "spec.volumes[5].downwardAPI.items[0].path",
                "spec.volumes[5].downwardAPI.items[0]",
                "spec.volumes[6].emptyDir.sizeLimit",
            ]
        );
        assert_eq!(errs[1].to_string(), "spec.volumes[0].configMap.defaultMode: Invalid value: 512: must be a number between 0 and 0777 (octal), both inclusive");
        assert_eq!(errs[3].detail, "must not contain '..'");
        assert_eq!(errs[4].detail, "must not start with '..'");
        assert_eq!(errs[9].detail, "must be an absolute path");
        assert_eq!(errs[11].cause, CauseType::Required);
    }

    #[test]
    fn path_helpers() {
        assert!(local_descending_path("a/b", "p").is_empty());
        assert_eq!(local_descending_path("/a/../b", "p").len(), 2);
        assert!(no_backsteps("a..b", "p").is_none());
        assert_eq!(referenced_name("Bad", "p").len(), 1);
        assert!(referenced_name("good.name", "p").is_empty());
    }
}
