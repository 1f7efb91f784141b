//! `ferry apply`: server-side apply of every object in the manifests, as field manager `ferry`.

use crate::manifest::Doc;
use crate::resolve::{self, Resource};
use anyhow::{bail, Result};
use kube::api::{Patch, PatchParams};
use kube::core::DynamicObject;

/// What happened to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It did not exist.
    Created,
    /// It changed.
    Configured,
    /// Nothing changed (same resourceVersion).
    Unchanged,
}

impl Outcome {
    fn word(self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Configured => "configured",
            Outcome::Unchanged => "unchanged",
        }
    }
}

/// Apply one object; returns its resource and what happened.
pub async fn apply_one<'r>(
    client: &kube::Client,
    resources: &'r [Resource],
    doc: &Doc,
    namespace: &str,
    params: &PatchParams,
) -> Result<(&'r Resource, String, Outcome)> {
    let api_version = doc.object["apiVersion"].as_str().unwrap_or_default();
    let kind = doc.object["kind"].as_str().unwrap_or_default();
    let r = resolve::by_kind(resources, api_version, kind)?;
    let name = doc.object.pointer("/metadata/name").and_then(|v| v.as_str()).unwrap_or_default().to_string();
    let ns = doc.object.pointer("/metadata/namespace").and_then(|v| v.as_str()).unwrap_or(namespace);
    let api = r.api(client, Some(ns));
    let before = api.get_opt(&name).await?;
    let after: DynamicObject = api.patch(&name, params, &Patch::Apply(&doc.object)).await?;
    let outcome = match before {
        None => Outcome::Created,
        Some(b) if b.metadata.resource_version == after.metadata.resource_version => Outcome::Unchanged,
        Some(_) => Outcome::Configured,
    };
    Ok((r, name, outcome))
}

/// Apply every document; print one line per object; fail (after trying all) if any failed.
pub async fn apply(client: &kube::Client, docs: &[Doc], namespace: &str, force: bool, dry_run: bool) -> Result<()> {
    let resources = resolve::discover(client).await?;
    let mut params = PatchParams::apply("ferry");
    params.force = force;
    params.dry_run = dry_run;
    let mut failed = 0;
    for doc in docs {
        match apply_one(client, &resources, doc, namespace, &params).await {
            Ok((r, name, outcome)) => {
                let suffix = if dry_run { " (server dry run)" } else { "" };
                println!("{}/{name} {}{suffix}", r.display(), outcome.word());
            }
            Err(e) => {
                failed += 1;
                eprintln!("error: {} document {}: {}", doc.source, doc.index, crate::error::describe(&e));
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} objects could not be applied", docs.len());
    }
    Ok(())
}
