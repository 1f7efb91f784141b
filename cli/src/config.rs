//! `ferry config view|use-context` and merging the local cluster into `~/.kube/config`.

use anyhow::{bail, Context, Result};
use kube::config::{Kubeconfig, NamedAuthInfo, NamedCluster, NamedContext};
use std::path::{Path, PathBuf};

/// The kubeconfig file commands that modify it write to: `--kubeconfig`, else the first of
/// `$KUBECONFIG`, else `~/.kube/config`.
pub fn file(arg: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = arg {
        return Ok(p.to_path_buf());
    }
    if let Some(first) = std::env::var_os("KUBECONFIG").and_then(|v| std::env::split_paths(&v).next()) {
        if !first.as_os_str().is_empty() {
            return Ok(first);
        }
    }
    let home = std::env::var_os("HOME").context("HOME is not set; pass --kubeconfig")?;
    Ok(PathBuf::from(home).join(".kube/config"))
}

fn read(path: &Path) -> Result<Kubeconfig> {
    Kubeconfig::read_from(path).with_context(|| format!("reading {}", path.display()))
}

fn write(path: &Path, kc: &Kubeconfig) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = serde_yaml::to_string(kc)?;
    let tmp = path.with_extension("ferry-tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}

/// `config view`: the kubeconfig in use, secrets shown as kubectl shows them unless `raw`.
pub fn view(arg: Option<&Path>, raw: bool) -> Result<()> {
    let kc = match arg {
        Some(p) => read(p)?,
        None => Kubeconfig::read().context("reading the kubeconfig")?,
    };
    let mut v = serde_json::to_value(&kc)?;
    if !raw {
        for c in v["clusters"].as_array_mut().into_iter().flatten() {
            if c.pointer("/cluster/certificate-authority-data").is_some() {
                c["cluster"]["certificate-authority-data"] = "DATA+OMITTED".into();
            }
        }
        for u in v["users"].as_array_mut().into_iter().flatten() {
            for k in ["client-certificate-data", "client-key-data"] {
                if u.pointer(&format!("/user/{k}")).is_some() {
                    u["user"][k] = "DATA+OMITTED".into();
                }
            }
            if u.pointer("/user/token").is_some() {
                u["user"]["token"] = "REDACTED".into();
            }
        }
    }
    print!("{}", serde_yaml::to_string(&v)?);
    Ok(())
}

/// `config use-context NAME`.
pub fn use_context(arg: Option<&Path>, name: &str) -> Result<()> {
    let path = file(arg)?;
    let mut kc = read(&path)?;
    if !kc.contexts.iter().any(|c| c.name == name) {
        bail!("no context exists with the name: {name:?}");
    }
    kc.current_context = Some(name.to_string());
    write(&path, &kc)?;
    println!("Switched to context \"{name}\".");
    Ok(())
}

/// Merge the cluster, user and context of `source` into `target` (replacing same-named entries) and
/// make its context current.
pub fn merge_into(target: &Path, source: &Path) -> Result<String> {
    let src = read(source)?;
    let mut kc = if target.is_file() { read(target)? } else { Kubeconfig::default() };
    let context = src.current_context.clone().context("the cluster's kubeconfig has no current context")?;
    fn replace<T>(list: &mut Vec<T>, new: Vec<T>, name: impl Fn(&T) -> &str) {
        for n in new {
            list.retain(|x| name(x) != name(&n));
            list.push(n);
        }
    }
    replace(&mut kc.clusters, src.clusters, |c: &NamedCluster| &c.name);
    replace(&mut kc.auth_infos, src.auth_infos, |a: &NamedAuthInfo| &a.name);
    replace(&mut kc.contexts, src.contexts, |c: &NamedContext| &c.name);
    kc.current_context = Some(context.clone());
    if kc.api_version.is_none() {
        kc.api_version = Some("v1".into());
        kc.kind = Some("Config".into());
    }
    write(target, &kc)?;
    Ok(context)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "apiVersion: v1\nkind: Config\nclusters:\n- name: ferry\n  cluster: {server: 'https://127.0.0.1:1'}\nusers:\n- name: ferry-admin\n  user: {token: t}\ncontexts:\n- name: ferry\n  context: {cluster: ferry, user: ferry-admin}\ncurrent-context: ferry\n";
    const B: &str = "apiVersion: v1\nkind: Config\nclusters:\n- name: other\n  cluster: {server: 'https://127.0.0.1:2'}\n- name: ferry\n  cluster: {server: 'https://old'}\nusers: []\ncontexts:\n- name: other\n  context: {cluster: other, user: x}\ncurrent-context: other\n";

    #[test]
    fn merge_and_switch() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, A)?;
        std::fs::write(&b, B)?;
        assert_eq!(merge_into(&b, &a)?, "ferry");
        let kc = read(&b)?;
        assert_eq!(kc.current_context.as_deref(), Some("ferry"));
        assert_eq!(kc.clusters.len(), 2, "same-named entries are replaced");
        let ferry = kc
            .clusters
            .iter()
            .find(|c| c.name == "ferry")
            .and_then(|c| c.cluster.as_ref())
            .and_then(|c| c.server.clone());
        assert_eq!(ferry.as_deref(), Some("https://127.0.0.1:1"));
        use_context(Some(&b), "other")?;
        assert_eq!(read(&b)?.current_context.as_deref(), Some("other"));
        assert!(use_context(Some(&b), "missing").is_err());
        let fresh = dir.path().join("new/config");
        merge_into(&fresh, &a)?;
        assert_eq!(read(&fresh)?.contexts.len(), 1, "a missing target file is created");
        Ok(())
    }
}
