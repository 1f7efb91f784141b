//! `ferry rollout status`: wait for a Deployment's rollout, with kubectl's messages and exit codes.

use anyhow::{bail, Result};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::runtime::watcher;
use kube::Api;
use std::time::Duration;

/// Where a rollout stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Still going, with kubectl's message.
    Waiting(String),
    /// Done.
    Done(String),
    /// The Deployment exceeded its progress deadline.
    Failed(String),
}

/// kubectl's `DeploymentStatusViewer`: the state of a rollout from the Deployment alone.
pub fn progress(d: &Deployment) -> Progress {
    let name = d.metadata.name.as_deref().unwrap_or_default();
    let generation = d.metadata.generation.unwrap_or(0);
    let Some(status) = d.status.as_ref() else {
        return Progress::Waiting("Waiting for deployment spec update to be observed...".into());
    };
    if generation > status.observed_generation.unwrap_or(0) {
        return Progress::Waiting("Waiting for deployment spec update to be observed...".into());
    }
    let deadline_exceeded =
        status.conditions.iter().flatten().any(|c| {
            c.type_.as_deref() == Some("Progressing") && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
        });
    if deadline_exceeded {
        return Progress::Failed(format!("deployment {name:?} exceeded its progress deadline"));
    }
    let want = d.spec.replicas.unwrap_or(1);
    let updated = status.updated_replicas.unwrap_or(0);
    let replicas = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if updated < want {
        return Progress::Waiting(format!(
            "Waiting for deployment {name:?} rollout to finish: {updated} out of {want} new replicas have been updated..."
        ));
    }
    if replicas > updated {
        return Progress::Waiting(format!(
            "Waiting for deployment {name:?} rollout to finish: {} old replicas are pending termination...",
            replicas - updated
        ));
    }
    if available < updated {
        return Progress::Waiting(format!(
            "Waiting for deployment {name:?} rollout to finish: {available} of {updated} updated replicas are available..."
        ));
    }
    Progress::Done(format!("deployment {name:?} successfully rolled out"))
}

/// Watch until the rollout is done (exit 0), fails (error) or `timeout` passes (error).
pub async fn status(client: &kube::Client, namespace: &str, name: &str, timeout: Option<Duration>) -> Result<()> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    if api.get_opt(name).await?.is_none() {
        bail!("deployments.apps {name:?} not found");
    }
    let watch = async {
        let stream = watcher::watch_object(api, name);
        futures::pin_mut!(stream);
        let mut last = String::new();
        // On a terminal one live line is rewritten; otherwise each change is its own plain line.
        let live = std::io::IsTerminal::is_terminal(&std::io::stdout());
        while let Some(event) = stream.next().await {
            let Some(d) = event? else { bail!("deployments.apps {name:?} was deleted") };
            match progress(&d) {
                Progress::Waiting(msg) => {
                    if msg != last {
                        if live {
                            print!("\r\x1b[2K{msg}");
                            let _ = std::io::Write::flush(&mut std::io::stdout());
                        } else {
                            println!("{msg}");
                        }
                        last = msg;
                    }
                }
                Progress::Done(msg) => {
                    if live && !last.is_empty() {
                        print!("\r\x1b[2K");
                    }
                    println!("{msg}");
                    return Ok(());
                }
                Progress::Failed(msg) => {
                    if live && !last.is_empty() {
                        println!();
                    }
                    bail!("{msg}")
                }
            }
        }
        bail!("the watch ended")
    };
    match timeout {
        Some(t) => match tokio::time::timeout(t, watch).await {
            Ok(r) => r,
            Err(_) => bail!("timed out waiting for the condition"),
        },
        None => watch.await,
    }
}

/// ReplicaSets a Deployment controls, with their revision numbers, oldest first.
async fn revisions(
    client: &kube::Client,
    namespace: &str,
    d: &Deployment,
) -> Result<Vec<(i64, k8s_openapi::api::apps::v1::ReplicaSet)>> {
    use k8s_openapi::api::apps::v1::ReplicaSet;
    let uid = d.metadata.uid.clone().unwrap_or_default();
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), namespace);
    let mut out: Vec<(i64, ReplicaSet)> = sets
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .filter(|rs| rs.metadata.owner_references.iter().flatten().any(|o| o.uid == uid && o.controller == Some(true)))
        .filter_map(|rs| {
            let rev = rs.metadata.annotations.as_ref()?.get(REVISION)?.parse::<i64>().ok()?;
            Some((rev, rs))
        })
        .collect();
    out.sort_by_key(|(rev, _)| *rev);
    Ok(out)
}

const REVISION: &str = "deployment.kubernetes.io/revision";
const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";

async fn deployment(client: &kube::Client, namespace: &str, name: &str) -> Result<(Api<Deployment>, Deployment)> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    match api.get_opt(name).await? {
        Some(d) => Ok((api, d)),
        None => bail!("deployments.apps {name:?} not found"),
    }
}

/// `rollout history`: the revisions and their change causes.
pub async fn history(client: &kube::Client, namespace: &str, name: &str) -> Result<()> {
    let (_, d) = deployment(client, namespace, name).await?;
    println!("deployment.apps/{name} ");
    println!("REVISION  CHANGE-CAUSE");
    for (rev, rs) in revisions(client, namespace, &d).await? {
        let cause = rs.metadata.annotations.as_ref().and_then(|a| a.get(CHANGE_CAUSE)).map_or("<none>", String::as_str);
        println!("{rev:<10}{cause}");
    }
    println!();
    Ok(())
}

/// Annotations of a ReplicaSet that a rollback does not copy back (kubectl's `annotationsToSkip`).
const SKIPPED: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    "deployment.kubernetes.io/revision-history",
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
    "deprecated.deployment.rollback.to",
];

/// `rollout undo [--to-revision N]`: put a previous revision's template back.
pub async fn undo(client: &kube::Client, namespace: &str, name: &str, to_revision: i64) -> Result<()> {
    let (api, d) = deployment(client, namespace, name).await?;
    if d.spec.paused == Some(true) {
        bail!("you cannot rollback a paused deployment; resume it first with 'ferry rollout resume deployment/{name}' and try again");
    }
    let revs = revisions(client, namespace, &d).await?;
    let target = if to_revision == 0 {
        let current = revs.last().map_or(0, |(r, _)| *r);
        revs.iter().rev().find(|(r, _)| *r < current)
    } else {
        revs.iter().find(|(r, _)| *r == to_revision)
    };
    let Some((rev, rs)) = target else {
        if to_revision == 0 {
            bail!("no rollout history found for deployment {name:?}");
        }
        bail!("unable to find specified revision {to_revision} in history");
    };
    let mut template = rs.spec.template.clone().unwrap_or_default();
    if let Some(labels) = template.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove("pod-template-hash");
    }
    if Some(&template) == Some(&d.spec.template) {
        println!("deployment.apps/{name} skipped rollback (current template already matches revision {rev})");
        return Ok(());
    }
    let mut annotations = d.metadata.annotations.clone().unwrap_or_default();
    for (k, v) in rs.metadata.annotations.iter().flatten() {
        if !SKIPPED.contains(&k.as_str()) {
            annotations.insert(k.clone(), v.clone());
        }
    }
    let patch = serde_json::json!([
        {"op": "replace", "path": "/spec/template", "value": template},
        {"op": "replace", "path": "/metadata/annotations", "value": annotations},
    ]);
    let patch: json_patch::Patch = serde_json::from_value(patch)?;
    api.patch(name, &kube::api::PatchParams::default(), &kube::api::Patch::Json::<()>(patch)).await?;
    println!("deployment.apps/{name} rolled back");
    Ok(())
}

/// `rollout restart`: a new rollout with the same template (the `restartedAt` annotation).
pub async fn restart(client: &kube::Client, namespace: &str, name: &str) -> Result<()> {
    let (api, d) = deployment(client, namespace, name).await?;
    if d.spec.paused == Some(true) {
        bail!("can't restart paused deployment (run rollout resume first)");
    }
    let now = k8s_openapi::jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let patch = serde_json::json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": now}}}}});
    api.patch(name, &kube::api::PatchParams::default(), &kube::api::Patch::Strategic(patch)).await?;
    println!("deployment.apps/{name} restarted");
    Ok(())
}

/// `rollout pause` / `rollout resume`.
pub async fn set_paused(client: &kube::Client, namespace: &str, name: &str, paused: bool) -> Result<()> {
    let (api, d) = deployment(client, namespace, name).await?;
    let word = if paused { "paused" } else { "resumed" };
    if d.spec.paused.unwrap_or(false) == paused {
        bail!("deployments.apps {name:?} is not {}", if paused { "resumed" } else { "paused" });
    }
    let patch = serde_json::json!({"spec": {"paused": paused}});
    api.patch(name, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(patch)).await?;
    println!("deployment.apps/{name} {word}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn d(v: serde_json::Value) -> Deployment {
        serde_json::from_value(v).expect("deployment")
    }

    #[test]
    fn messages_match_kubectl() {
        let base = |status: serde_json::Value| {
            d(
                json!({"metadata": {"name": "web", "generation": 2}, "spec": {"replicas": 3, "selector": {}, "template": {}},
                "status": status}),
            )
        };
        assert_eq!(
            progress(&base(json!({"observedGeneration": 1}))),
            Progress::Waiting("Waiting for deployment spec update to be observed...".into())
        );
        assert_eq!(
            progress(&base(json!({"observedGeneration": 2, "replicas": 4, "updatedReplicas": 1}))),
            Progress::Waiting(
                "Waiting for deployment \"web\" rollout to finish: 1 out of 3 new replicas have been updated...".into()
            )
        );
        assert_eq!(
            progress(&base(json!({"observedGeneration": 2, "replicas": 4, "updatedReplicas": 3}))),
            Progress::Waiting(
                "Waiting for deployment \"web\" rollout to finish: 1 old replicas are pending termination...".into()
            )
        );
        assert_eq!(
            progress(&base(
                json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 2})
            )),
            Progress::Waiting(
                "Waiting for deployment \"web\" rollout to finish: 2 of 3 updated replicas are available...".into()
            )
        );
        assert_eq!(
            progress(&base(
                json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3})
            )),
            Progress::Done("deployment \"web\" successfully rolled out".into())
        );
        let failed = base(json!({"observedGeneration": 2, "conditions": [
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]}));
        assert_eq!(progress(&failed), Progress::Failed("deployment \"web\" exceeded its progress deadline".into()));
    }
}
