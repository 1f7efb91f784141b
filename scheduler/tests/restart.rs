//! Restarting the scheduler in the middle of a burst neither binds a pod twice nor loses one;
//! the API server refuses a second binding with 409; pods for another scheduler are left alone.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, ensure, Result};
use common::Env;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;

const NODES: usize = 4;
const PER_NODE: usize = 30;
const PODS: usize = NODES * PER_NODE;

async fn bound_count(env: &Env) -> Result<usize> {
    let pods = env.pods.list(&ListParams::default().labels("burst=yes")).await?;
    Ok(pods.items.iter().filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some()).count())
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_mid_burst_neither_double_binds_nor_loses() -> Result<()> {
    let mut env = Env::start().await?;
    // Exactly room for the burst: a lost pod stays pending, a double count overfills a node.
    for i in 0..NODES {
        env.node(
            &format!("n{i}"),
            "burst",
            "64",
            "64Gi",
            json!({"status": {"allocatable": {"pods": PER_NODE.to_string()}}}),
        )
        .await?;
    }
    // Every change of every pod's nodeName, from the start.
    let rv = env.pods.list(&ListParams::default()).await?.metadata.resource_version.unwrap_or_default();
    let mut stream = env.pods.watch(&WatchParams::default(), &rv).await?.boxed();
    let changes: Arc<Mutex<HashMap<String, Vec<String>>>> = Arc::default();
    let recorder = {
        let changes = changes.clone();
        tokio::spawn(async move {
            while let Some(Ok(ev)) = stream.next().await {
                if let WatchEvent::Added(p) | WatchEvent::Modified(p) = ev {
                    let name = p.metadata.name.clone().unwrap_or_default();
                    let node = p.spec.and_then(|s| s.node_name).unwrap_or_default();
                    let mut changes = changes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    let seen = changes.entry(name).or_default();
                    if seen.last() != Some(&node) {
                        seen.push(node);
                    }
                }
            }
        })
    };

    let other: Pod = serde_json::from_value(json!({"metadata": {"name": "for-someone-else"},
        "spec": {"schedulerName": "other-scheduler", "containers": [{"name": "c", "image": "busybox"}]}}))?;
    env.pods.create(&PostParams::default(), &other).await?;

    env.start_scheduler(common::test_config());
    let creator = {
        let pods = env.pods.clone();
        tokio::spawn(async move {
            let mut creates = futures::stream::iter(0..PODS)
                .map(|i| {
                    let pods = pods.clone();
                    async move {
                        let p: Pod = serde_json::from_value(json!({
                            "metadata": {"name": format!("burst-{i:03}"), "labels": {"burst": "yes"}},
                            "spec": {"nodeSelector": {"group": "burst"}, "containers": [{"name": "c", "image": "busybox"}]}
                        }))?;
                        pods.create(&PostParams::default(), &p).await?;
                        anyhow::Ok(())
                    }
                })
                .buffer_unordered(8);
            while let Some(r) = creates.next().await {
                r?;
            }
            anyhow::Ok(())
        })
    };
    // Kill the scheduler once part of the burst is bound, and start a fresh one.
    let mut killed = false;
    for _ in 0..600 {
        if bound_count(&env).await? >= PODS / 4 {
            env.start_scheduler(common::test_config());
            killed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    ensure!(killed, "the first scheduler never bound a quarter of the burst");
    creator.await??;
    let mut done = false;
    for _ in 0..600 {
        if bound_count(&env).await? == PODS {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !done {
        bail!("only {} of {PODS} pods bound after the restart", bound_count(&env).await?);
    }
    let pods = env.pods.list(&ListParams::default().labels("burst=yes")).await?.items;
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for p in &pods {
        *per_node.entry(p.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default()).or_default() += 1;
    }
    ensure!(per_node.values().all(|n| *n == PER_NODE), "uneven or overfilled nodes: {per_node:?}");

    // A second binding of a bound pod is refused by the API server.
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "burst-000"},
        "target": {"apiVersion": "v1", "kind": "Node", "name": "n0"}});
    let (code, status) = env
        .cluster
        .raw_json(
            "POST",
            "/api/v1/namespaces/default/pods/burst-000/binding",
            Some("application/json"),
            serde_json::to_vec(&binding)?,
        )
        .await?;
    ensure!(code == 409 && status["reason"] == "Conflict", "{code} {status}");

    // The pod for another scheduler was never touched.
    let other = env.pods.get("for-someone-else").await?;
    ensure!(other.spec.and_then(|s| s.node_name).is_none(), "bound by the wrong scheduler");
    let conditions = other.status.and_then(|s| s.conditions).unwrap_or_default();
    ensure!(conditions.iter().all(|c| c.type_ != "PodScheduled"), "{conditions:?}");

    // No pod ever changed node: bound once, for good.
    tokio::time::sleep(Duration::from_millis(200)).await;
    recorder.abort();
    let changes = changes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    ensure!(changes.len() > PODS, "the watch saw {} pods", changes.len());
    for (name, history) in changes.iter() {
        let nodes: Vec<&String> = history.iter().filter(|n| !n.is_empty()).collect();
        ensure!(
            nodes.len() <= 1 && history.last().is_some_and(|n| !n.is_empty()) == name.starts_with("burst-"),
            "{name}: {history:?}"
        );
    }
    Ok(())
}
