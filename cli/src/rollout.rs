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
        while let Some(event) = stream.next().await {
            let Some(d) = event? else { bail!("deployments.apps {name:?} was deleted") };
            match progress(&d) {
                Progress::Waiting(msg) => {
                    if msg != last {
                        println!("{msg}");
                        last = msg;
                    }
                }
                Progress::Done(msg) => {
                    println!("{msg}");
                    return Ok(());
                }
                Progress::Failed(msg) => bail!("{msg}"),
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
