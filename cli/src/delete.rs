//! `ferry delete`: by manifest or by type and names/selector; waits until the objects are gone.

use crate::manifest::Doc;
use crate::resolve::{self, Resource};
use anyhow::{bail, Result};
use kube::api::{DeleteParams, ListParams, PropagationPolicy};
use std::time::{Duration, Instant};

/// What to delete.
pub enum Target<'a> {
    /// Every object of these manifests.
    Docs(&'a [Doc]),
    /// Objects of a type, by name or selector.
    Named { kind: &'a str, names: &'a [String], selector: Option<&'a str> },
}

/// Delete, print one line per object, and (with `wait`) wait until every object is gone.
pub async fn delete(
    client: &kube::Client,
    target: Target<'_>,
    namespace: &str,
    cascade: &str,
    wait: Option<Duration>,
    ignore_not_found: bool,
) -> Result<()> {
    let resources = resolve::discover(client).await?;
    let mut objects: Vec<(&Resource, String, String)> = Vec::new();
    match target {
        Target::Docs(docs) => {
            for d in docs {
                let r = resolve::by_kind(
                    &resources,
                    d.object["apiVersion"].as_str().unwrap_or_default(),
                    d.object["kind"].as_str().unwrap_or_default(),
                )?;
                let ns = d.object.pointer("/metadata/namespace").and_then(|v| v.as_str()).unwrap_or(namespace);
                let name = d.object.pointer("/metadata/name").and_then(|v| v.as_str()).unwrap_or_default();
                objects.push((r, ns.to_string(), name.to_string()));
            }
        }
        Target::Named { kind, names, selector } => {
            let r = resolve::by_name(&resources, kind)?;
            for n in names {
                objects.push((r, namespace.to_string(), n.clone()));
            }
            if let Some(sel) = selector {
                let list = r.api(client, Some(namespace)).list(&ListParams::default().labels(sel)).await?;
                for o in list.items {
                    objects.push((
                        r,
                        o.metadata.namespace.unwrap_or_else(|| namespace.to_string()),
                        o.metadata.name.unwrap_or_default(),
                    ));
                }
            }
            if names.is_empty() && selector.is_none() {
                bail!("resource(s) were provided, but no name was specified");
            }
        }
    }
    let propagation = match cascade {
        "background" | "true" => PropagationPolicy::Background,
        "foreground" => PropagationPolicy::Foreground,
        "orphan" | "false" => PropagationPolicy::Orphan,
        other => bail!("invalid --cascade {other:?}: must be background, foreground or orphan"),
    };
    let params = DeleteParams { propagation_policy: Some(propagation), ..Default::default() };
    let mut failed = 0;
    let mut pending = Vec::new();
    for (r, ns, name) in &objects {
        match r.api(client, Some(ns)).delete(name, &params).await {
            Ok(_) => {
                println!("{} \"{name}\" deleted", r.display());
                pending.push((*r, ns.clone(), name.clone()));
            }
            Err(kube::Error::Api(s)) if s.code == 404 && ignore_not_found => {}
            Err(e) => {
                failed += 1;
                eprintln!("{}", crate::error::describe(&e.into()));
            }
        }
    }
    if let Some(timeout) = wait {
        let deadline = Instant::now() + timeout;
        for (r, ns, name) in pending {
            while r.api(client, Some(&ns)).get_opt(&name).await?.is_some() {
                if Instant::now() > deadline {
                    bail!("timed out waiting for {}/{name} to be deleted", r.display());
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} objects could not be deleted", objects.len());
    }
    Ok(())
}
