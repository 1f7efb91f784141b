//! Priorities and preemption end to end: PriorityClasses resolved by the API server's priority
//! admission, the scheduler choosing the smallest set of lowest-priority victims, deleting them
//! gracefully, nominating the node, and binding once the victims are gone; plus the
//! FailedScheduling / Scheduled / Preempted events.

mod common;

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use common::{container, on_node, Env};
use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

fn with_class(class: &str, cpu: &str, node: Option<&str>) -> serde_json::Value {
    let mut v = json!({"spec": {"priorityClassName": class, "containers": [container(cpu, "")]}});
    if let Some(n) = node {
        common::merge(&mut v, on_node(n));
    }
    v
}

async fn terminating(env: &Env, name: &str) -> Result<bool> {
    Ok(env.pods.get(name).await?.metadata.deletion_timestamp.is_some())
}

async fn nominated(env: &Env, name: &str) -> Result<Option<String>> {
    Ok(env.pods.get(name).await?.status.and_then(|s| s.nominated_node_name))
}

async fn events_for(env: &Env, name: &str) -> Result<Vec<(String, String)>> {
    let events: Api<Event> = Api::namespaced(env.client.clone(), "default");
    Ok(events
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(name))
        .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
        .collect())
}

async fn wait_event(env: &Env, name: &str, reason: &str) -> Result<String> {
    for _ in 0..200 {
        if let Some((_, m)) = events_for(env, name).await?.into_iter().find(|(r, _)| r == reason) {
            return Ok(m);
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    anyhow::bail!("no {reason} event for {name}")
}

#[tokio::test(flavor = "multi_thread")]
async fn preemption_end_to_end() -> Result<()> {
    let mut env = Env::start().await?;
    let classes: Api<PriorityClass> = Api::all(env.client.clone());
    for (name, value, policy) in [
        ("low", 100, "PreemptLowerPriority"),
        ("mid", 500, "PreemptLowerPriority"),
        ("high", 1000, "PreemptLowerPriority"),
        ("polite", 1000, "Never"),
    ] {
        let pc: PriorityClass =
            serde_json::from_value(json!({"metadata": {"name": name}, "value": value, "preemptionPolicy": policy}))?;
        classes.create(&PostParams::default(), &pc).await?;
    }
    env.start_scheduler(common::test_config());

    // p1 holds three low pods (1 + 1 + 2 cpu); p2 an equal-priority pod and a mid one.
    env.node("p1", "pre", "4", "8Gi", json!({})).await?;
    env.node("p2", "pre", "4", "8Gi", json!({})).await?;
    for (name, class, cpu, node) in [
        ("a", "low", "1", "p1"),
        ("b", "low", "1", "p1"),
        ("c", "low", "2", "p1"),
        ("d", "high", "2", "p2"),
        ("e", "mid", "2", "p2"),
    ] {
        ensure!(env.place(name, "pre", with_class(class, cpu, Some(node))).await? == node);
    }
    let a = env.pods.get("a").await?;
    ensure!(a.spec.as_ref().and_then(|s| s.priority) == Some(100), "priority admission resolved the class");

    // The boss needs 2 cpu: evicting c alone on p1 is the smallest, lowest-priority choice.
    env.pod("boss", "pre", with_class("high", "2", None)).await?;
    let mut seen = None;
    for _ in 0..300 {
        seen = nominated(&env, "boss").await?;
        if seen.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    ensure!(seen.as_deref() == Some("p1"), "nominatedNodeName {seen:?}");
    ensure!(terminating(&env, "c").await?, "victim c is terminating");
    for other in ["a", "b", "d", "e"] {
        ensure!(!terminating(&env, other).await?, "{other} must not be preempted");
    }
    // The victim is still terminating (graceful deletion): the boss waits for it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    ensure!(env.pods.get("boss").await?.spec.and_then(|s| s.node_name).is_none(), "bound before the victim left");
    wait_event(&env, "c", "Preempted").await?;
    // What the nodelet does once the containers are gone: the victim leaves, the boss binds.
    env.delete_now("c").await?;
    ensure!(env.bound("boss").await? == "p1");
    let scheduled = wait_event(&env, "boss", "Scheduled").await?;
    ensure!(scheduled == "Successfully assigned default/boss to p1", "{scheduled}");

    // Equal priority is never preempted.
    env.node("q1", "eq", "2", "8Gi", json!({})).await?;
    env.place("g", "eq", with_class("high", "2", None)).await?;
    let msg = env.refused("peer", "eq", with_class("high", "2", None), &["1 Insufficient cpu"]).await?;
    ensure!(msg.contains("preemption: ") && msg.contains("No preemption victims found for incoming pod"), "{msg}");
    let failed = wait_event(&env, "peer", "FailedScheduling").await?;
    ensure!(failed == msg, "event {failed:?} vs condition {msg:?}");
    // A lower-priority pod does not preempt either.
    env.refused("junior", "eq", with_class("low", "1", None), &["1 Insufficient cpu"]).await?;

    // preemptionPolicy Never: waits instead of evicting.
    env.node("r1", "never", "2", "8Gi", json!({})).await?;
    env.place("h", "never", with_class("low", "2", None)).await?;
    env.refused(
        "polite-pod",
        "never",
        with_class("polite", "2", None),
        &["1 Insufficient cpu", "preemption: not eligible due to preemptionPolicy=Never."],
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for name in ["g", "h"] {
        ensure!(!terminating(&env, name).await?, "{name} must not be preempted");
    }
    ensure!(nominated(&env, "peer").await?.is_none() && nominated(&env, "polite-pod").await?.is_none());
    let polite: Pod = env.pods.get("polite-pod").await?;
    ensure!(polite.spec.context("spec")?.preemption_policy.as_deref() == Some("Never"));
    Ok(())
}
