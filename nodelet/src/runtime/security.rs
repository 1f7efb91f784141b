//! A container's `securityContext` (with the pod's as defaults; the container's wins) applied
//! to its OCI runtime spec: user and groups, read-only root filesystem, capabilities,
//! privileged mode and `no_new_privs`, as containerd's CRI plugin does it.

use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::{json, Value};

/// containerd's default capability set for containers (what Kubernetes pods get).
pub const DEFAULT_CAPABILITIES: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability, by number.
const ALL_CAPABILITIES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// "All" capabilities: those in this process's bounding set (as containerd's `cap.Current()`;
/// a nodelet inside a restricted container cannot hand out more than it has).
fn kernel_capabilities() -> Vec<&'static str> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let bounding = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(u64::MAX);
    ALL_CAPABILITIES.iter().enumerate().filter(|(i, _)| bounding & (1 << i) != 0).map(|(_, c)| *c).collect()
}

/// `NET_ADMIN` / `CAP_NET_ADMIN` → `CAP_NET_ADMIN`; unknown names are errors.
fn cap_name(name: &str) -> Result<String, String> {
    let full = if name.to_ascii_uppercase().starts_with("CAP_") {
        name.to_ascii_uppercase()
    } else {
        format!("CAP_{}", name.to_ascii_uppercase())
    };
    if ALL_CAPABILITIES.contains(&full.as_str()) {
        Ok(full)
    } else {
        Err(format!("unknown capability {name:?}"))
    }
}

/// The capability set after `add` and `drop` (either may say `ALL`), starting from the default.
pub fn capabilities(add: &[String], drop: &[String]) -> Result<Vec<String>, String> {
    let is_all = |l: &[String]| l.iter().any(|c| c.eq_ignore_ascii_case("ALL"));
    let mut caps: Vec<String> = if is_all(add) {
        kernel_capabilities().into_iter().map(String::from).collect()
    } else {
        DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()).collect()
    };
    if is_all(drop) {
        caps.clear();
    } else {
        for d in drop {
            let d = cap_name(d)?;
            caps.retain(|c| *c != d);
        }
    }
    if !is_all(add) {
        for a in add {
            let a = cap_name(a)?;
            if !caps.contains(&a) {
                caps.push(a);
            }
        }
    }
    Ok(caps)
}

/// `"1000"` or `"1000:50"` → (uid, gid); names are not resolved (None).
fn numeric_user(user: &str) -> Option<(i64, Option<i64>)> {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let uid = u.parse().ok()?;
    let gid = match g {
        Some(g) => Some(g.parse().ok()?),
        None => None,
    };
    Some((uid, gid))
}

/// Apply the pod's and container's security context to `spec` (an OCI runtime spec as JSON).
/// `image_user` is the image config's `User`. Errors are configuration errors
/// (CreateContainerConfigError).
pub fn apply(spec: &mut Value, pod: &Pod, c: &Container, image_user: Option<&str>) -> Result<(), String> {
    let psc = pod.spec.as_ref().and_then(|s| s.security_context.clone()).unwrap_or_default();
    let csc = c.security_context.clone().unwrap_or_default();
    let image = match image_user {
        Some(u) => Some(numeric_user(u).ok_or_else(|| {
            format!("image user {u:?} is not numeric (user names in images are not supported; set runAsUser)")
        })?),
        None => None,
    };
    let uid = csc.run_as_user.or(psc.run_as_user).or(image.map(|(u, _)| u)).unwrap_or(0);
    let gid = csc.run_as_group.or(psc.run_as_group).or(image.and_then(|(_, g)| g)).unwrap_or(0);
    if csc.run_as_non_root.or(psc.run_as_non_root).unwrap_or(false) && uid == 0 {
        return Err(format!("container {} has runAsNonRoot and would run as root (uid 0)", c.name));
    }
    let mut groups: Vec<i64> = psc.supplemental_groups.clone().unwrap_or_default();
    if let Some(fs) = psc.fs_group {
        groups.push(fs);
    }
    groups.retain(|g| *g != gid);
    groups.dedup();
    for id in [uid, gid].iter().chain(&groups) {
        if !(0..=u32::MAX as i64).contains(id) {
            return Err(format!("container {}: user or group id {id} out of range", c.name));
        }
    }
    spec["process"]["user"] = json!({"uid": uid, "gid": gid, "additionalGids": groups});

    if csc.read_only_root_filesystem.unwrap_or(false) {
        spec["root"]["readonly"] = json!(true);
    }
    let privileged = csc.privileged.unwrap_or(false);
    let add = csc.capabilities.as_ref().and_then(|k| k.add.clone()).unwrap_or_default();
    let drop = csc.capabilities.as_ref().and_then(|k| k.drop.clone()).unwrap_or_default();
    let caps: Vec<String> = if privileged {
        kernel_capabilities().into_iter().map(String::from).collect()
    } else {
        capabilities(&add, &drop).map_err(|e| format!("container {}: {e}", c.name))?
    };
    spec["process"]["capabilities"] =
        json!({"bounding": caps, "effective": caps, "permitted": caps, "inheritable": [], "ambient": []});
    // Kubernetes: privilege escalation is allowed unless said otherwise (and always when privileged).
    let no_new_privs = !privileged && csc.allow_privilege_escalation == Some(false);
    spec["process"]["noNewPrivileges"] = json!(no_new_privs);
    if privileged {
        if let Some(linux) = spec["linux"].as_object_mut() {
            linux.remove("maskedPaths");
            linux.remove("readonlyPaths");
        }
        spec["linux"]["resources"]["devices"] = json!([{"allow": true, "access": "rwm"}]);
        for m in spec["mounts"].as_array_mut().into_iter().flatten() {
            if m["type"] == "sysfs" || m["destination"] == "/sys/fs/cgroup" {
                if let Some(opts) = m["options"].as_array_mut() {
                    opts.retain(|o| o != "ro");
                    opts.push(json!("rw"));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod_and_container(pod_sc: Value, c_sc: Value) -> (Pod, Container) {
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {
            "securityContext": pod_sc, "containers": [{"name": "c", "image": "x", "securityContext": c_sc}]
        }}))
        .unwrap_or_default();
        let c = pod.spec.as_ref().map(|s| s.containers[0].clone()).unwrap_or_default();
        (pod, c)
    }

    fn base() -> Value {
        serde_json::to_value(oci_spec::runtime::Spec::default()).unwrap_or_default()
    }

    #[test]
    fn container_wins_over_pod() {
        let (pod, c) = pod_and_container(
            json!({"runAsUser": 1000, "runAsGroup": 2000, "supplementalGroups": [5, 6], "fsGroup": 7}),
            json!({"runAsUser": 1001, "readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false}),
        );
        let mut spec = base();
        assert_eq!(apply(&mut spec, &pod, &c, Some("1:1")), Ok(()));
        assert_eq!(spec["process"]["user"], json!({"uid": 1001, "gid": 2000, "additionalGids": [5, 6, 7]}));
        assert_eq!(spec["root"]["readonly"], true);
        assert_eq!(spec["process"]["noNewPrivileges"], true);
    }

    #[test]
    fn image_user_is_the_default() {
        let (pod, c) = pod_and_container(json!({}), json!({}));
        let mut spec = base();
        assert_eq!(apply(&mut spec, &pod, &c, Some("65534:65534")), Ok(()));
        assert_eq!(spec["process"]["user"]["uid"], 65534);
        assert_eq!(spec["process"]["user"]["gid"], 65534);
        assert_eq!(spec["process"]["noNewPrivileges"], false);
        assert!(apply(&mut base(), &pod, &c, Some("www")).is_err());
        let (pod, c) = pod_and_container(json!({"runAsNonRoot": true}), json!({}));
        assert!(apply(&mut base(), &pod, &c, None).unwrap_err().contains("runAsNonRoot"));
    }

    #[test]
    fn capabilities_add_and_drop() {
        let caps = capabilities(&["NET_ADMIN".into()], &["chown".into(), "CAP_KILL".into()]).unwrap_or_default();
        assert!(caps.contains(&"CAP_NET_ADMIN".to_string()));
        assert!(!caps.contains(&"CAP_CHOWN".to_string()) && !caps.contains(&"CAP_KILL".to_string()));
        assert!(caps.contains(&"CAP_SETUID".to_string()));
        assert_eq!(
            capabilities(&["NET_BIND_SERVICE".into()], &["ALL".into()]),
            Ok(vec!["CAP_NET_BIND_SERVICE".into()])
        );
        assert!(capabilities(&["ALL".into()], &[]).unwrap_or_default().contains(&"CAP_SYS_ADMIN".to_string()));
        assert!(capabilities(&["MAGIC".into()], &[]).is_err());
    }

    #[test]
    fn privileged_gets_everything() {
        let (pod, c) = pod_and_container(json!({}), json!({"privileged": true, "allowPrivilegeEscalation": false}));
        let mut spec = base();
        assert_eq!(apply(&mut spec, &pod, &c, None), Ok(()));
        let caps = spec["process"]["capabilities"]["bounding"].as_array().cloned().unwrap_or_default();
        assert!(caps.contains(&json!("CAP_SYS_ADMIN")));
        assert_eq!(spec["process"]["noNewPrivileges"], false);
        assert!(spec["linux"].get("maskedPaths").is_none());
    }
}
