//! End to end through a real API server and etcd: pods get bound by the running scheduler.

use std::time::Duration;

use anyhow::{Context, Result};
use ferry_scheduler::metrics::Metrics;
use ferry_scheduler::{Config, Scheduler};
use ferry_testkit::Cluster;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, PostParams};
use serde_json::json;

async fn wait_bound(pods: &Api<Pod>, name: &str) -> Result<String> {
    for _ in 0..200 {
        let p = pods.get(name).await?;
        if let Some(n) = p.spec.and_then(|s| s.node_name).filter(|n| !n.is_empty()) {
            return Ok(n);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("pod {name} was not bound")
}

#[tokio::test(flavor = "multi_thread")]
async fn binds_to_the_fitting_node_and_reports_unschedulable() -> Result<()> {
    let cluster = Cluster::start().await?;
    let client = cluster.client().await?;
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    for (name, cpu) in [("small", "1"), ("big", "4")] {
        let n: Node = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "status": {"allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"}}
        }))?;
        nodes.create(&PostParams::default(), &n).await?;
    }
    let config = Config { events: false, ..Config::default() };
    let task = tokio::spawn(Scheduler::new(client.clone(), config, std::sync::Arc::new(Metrics::new())).run());
    let mk = |name: &str, cpu: &str| -> Result<Pod> {
        Ok(serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": cpu}}}]}
        }))?)
    };
    pods.create(&PostParams::default(), &mk("needs-3", "3")?).await?;
    assert_eq!(wait_bound(&pods, "needs-3").await?, "big");
    pods.create(&PostParams::default(), &mk("needs-8", "8")?).await?;
    let mut message = String::new();
    for _ in 0..200 {
        let p = pods.get("needs-8").await?;
        let cond =
            p.status.and_then(|s| s.conditions).and_then(|cs| cs.into_iter().find(|c| c.type_ == "PodScheduled"));
        if let Some(c) = cond.filter(|c| c.reason.as_deref() == Some("Unschedulable")) {
            message = c.message.context("message")?;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(message.starts_with("0/2 nodes are available: 2 Insufficient cpu."), "{message}");
    // A new node big enough makes it schedulable.
    let n: Node = serde_json::from_value(json!({
        "metadata": {"name": "huge"}, "status": {"allocatable": {"cpu": "16", "memory": "8Gi", "pods": "110"}}
    }))?;
    nodes.create(&PostParams::default(), &n).await?;
    assert_eq!(wait_bound(&pods, "needs-8").await?, "huge");
    task.abort();
    Ok(())
}
