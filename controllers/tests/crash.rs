//! Crash safety of the real binary: two `ferry-controllers` processes (only the Lease holder
//! acts); the leader is killed with SIGKILL in the middle of a 20-replica rollout; the other
//! takes over; the rollout completes with the surge/unavailable bounds holding at every pod watch
//! event, no ReplicaSet duplicated and no pod orphaned. A test-only "fake kubelet" marks pods
//! Ready through pods/status (there is no nodelet yet).

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Result};
use ferry_testkit::Cluster;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(kubeconfig: &std::path::Path, identity: &str) -> Result<Proc> {
    Ok(Proc(
        Command::new(env!("CARGO_BIN_EXE_ferry-controllers"))
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--identity", identity])
            .args(["--leader-elect-lease-duration", "2s", "--leader-elect-renew-deadline", "1500ms"])
            .args(["--leader-elect-retry-period", "200ms"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    ))
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn holder(client: &kube::Client) -> Result<Option<String>> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    Ok(leases.get_opt("ferry-controllers").await?.and_then(|l| l.spec).and_then(|s| s.holder_identity))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_rollout_of_20_replicas() -> Result<()> {
    let cluster = Cluster::start().await?;
    let client = cluster.client().await?;
    let kc = cluster.kubeconfig();
    // Fake kubelet: Ready ~100 ms after a pod shows up, so the rollout takes a while.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let kubelet = {
        let pods = pods.clone();
        tokio::spawn(async move {
            loop {
                if let Ok(list) = pods.list(&ListParams::default()).await {
                    for p in list.items.iter().filter(|p| !ready(p) && p.metadata.deletion_timestamp.is_none()) {
                        let now = jiff::Timestamp::now().to_string();
                        let st = json!({"status": {"phase": "Running", "conditions": [
                            {"type": "Ready", "status": "True", "lastTransitionTime": now}]}});
                        let _ = pods.patch_status(&p.name_any(), &PatchParams::default(), &Patch::Merge(&st)).await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let mut procs: HashMap<String, Proc> = HashMap::new();
    procs.insert("a".into(), spawn(&kc, "a")?);
    procs.insert("b".into(), spawn(&kc, "b")?);

    let api: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "big"},
        "spec": {"replicas": 20, "selector": {"matchLabels": {"app": "big"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {"metadata": {"labels": {"app": "big"}}, "spec": {"containers": [{"name": "c", "image": "v1"}]}}}
    }))?;
    api.create(&PostParams::default(), &d).await?;
    let wait_done = |image: &'static str| {
        let api = api.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
            loop {
                let d = api.get("big").await?;
                let s = d.status.clone().unwrap_or_default();
                let img = d.spec.template.spec.as_ref().and_then(|s| s.containers[0].image.clone());
                if img.as_deref() == Some(image)
                    && s.observed_generation >= d.metadata.generation
                    && s.updated_replicas == Some(20)
                    && s.replicas == Some(20)
                    && s.available_replicas == Some(20)
                {
                    return Ok::<(), anyhow::Error>(());
                }
                if tokio::time::Instant::now() > deadline {
                    bail!("rollout to {image} did not complete: {s:?}");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    wait_done("v1").await?;

    let list = pods.list(&ListParams::default()).await?;
    let mut state: HashMap<String, Pod> = list.items.into_iter().map(|p| (p.name_any(), p)).collect();
    let rv = list.metadata.resource_version.unwrap_or_default();
    let mut stream = pods.watch(&WatchParams::default().timeout(120), &rv).await?.boxed();
    api.patch(
        "big",
        &PatchParams::default(),
        &Patch::Strategic(&json!({"spec": {"template": {"spec": {
        "containers": [{"name": "c", "image": "v2"}]}}}})),
    )
    .await?;
    let mut killed = false;
    let mut killed_id = String::new();
    let done = async {
        while let Some(ev) = stream.next().await {
            match ev? {
                WatchEvent::Added(p) | WatchEvent::Modified(p) => {
                    state.insert(p.name_any(), p);
                }
                WatchEvent::Deleted(p) => {
                    state.remove(&p.name_any());
                }
                _ => continue,
            }
            let live: Vec<&Pod> = state.values().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
            let n_ready = live.iter().filter(|p| ready(p)).count();
            assert!(n_ready >= 20, "ready pods {n_ready} < 20");
            assert!(state.len() <= 21, "total pods {} > 21", state.len());
            let updated = live
                .iter()
                .filter(|p| p.spec.as_ref().is_some_and(|s| s.containers[0].image.as_deref() == Some("v2")))
                .count();
            if !killed && updated >= 5 {
                // SIGKILL the leader mid-rollout, then start it again.
                if let Some(id) = holder(&client).await? {
                    if let Some(mut p) = procs.remove(&id) {
                        p.0.kill()?;
                        let _ = p.0.wait();
                        killed = true;
                        killed_id = id.clone();
                        eprintln!("killed leader {id} with {updated} pods updated");
                        // Restarted under a new identity, so the other process must take over.
                        let again = format!("{id}-restarted");
                        procs.insert(again.clone(), spawn(&kc, &again)?);
                    }
                }
            }
            if updated == 20 && state.len() == 20 && n_ready == 20 {
                eprintln!("rollout complete; new leader {:?}", holder(&client).await?);
                return Ok::<(), anyhow::Error>(());
            }
        }
        bail!("watch ended before the rollout finished")
    };
    tokio::time::timeout(Duration::from_secs(120), done).await??;
    assert!(killed, "the leader was never killed");
    let leader = holder(&client).await?;
    // Whoever leads now, it is not the killed process.
    assert!(leader.as_deref().is_some_and(|l| l != killed_id), "leader {leader:?}, killed {killed_id}");
    wait_done("v2").await?;
    let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let rs_list = rss.list(&ListParams::default()).await?.items;
    assert_eq!(rs_list.len(), 2, "no duplicated ReplicaSet");
    let new_uid = rs_list.iter().find(|r| r.spec.replicas == Some(20)).and_then(|r| r.uid()).unwrap_or_default();
    for p in pods.list(&ListParams::default()).await?.items {
        assert!(
            p.owner_references().iter().any(|r| r.controller == Some(true) && r.uid == new_uid),
            "pod {} not owned by the new ReplicaSet",
            p.name_any()
        );
    }
    kubelet.abort();
    Ok(())
}
