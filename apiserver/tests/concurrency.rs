//! Optimistic concurrency: N clients doing read-modify-write on one object.

use anyhow::Result;
use ferry_testkit::Cluster;
use serde_json::{json, Value};

const CM: &str = "/api/v1/namespaces/default/configmaps";

#[tokio::test]
async fn concurrent_increments_lose_nothing() -> Result<()> {
    let c = Cluster::start().await?;
    let cm = json!({"metadata": {"name": "counter"}, "data": {"n": "0"}});
    let (code, _) = c.raw_json("POST", CM, Some("application/json"), serde_json::to_vec(&cm)?).await?;
    assert_eq!(code, 201);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let client = c.client().await?;
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut conflicts) = (0u64, 0u64);
            for _ in 0..25 {
                let (_, bytes) = ferry_testkit::raw(&client, "GET", &format!("{CM}/counter"), None, Vec::new()).await?;
                let mut obj: Value = serde_json::from_slice(&bytes)?;
                let n: u64 = obj["data"]["n"].as_str().unwrap_or("0").parse()?;
                obj["data"]["n"] = json!((n + 1).to_string());
                let (code, bytes) = ferry_testkit::raw(
                    &client,
                    "PUT",
                    &format!("{CM}/counter"),
                    Some("application/json"),
                    serde_json::to_vec(&obj)?,
                )
                .await?;
                match code {
                    200 => ok += 1,
                    409 => {
                        let status: Value = serde_json::from_slice(&bytes)?;
                        assert_eq!(status["reason"], "Conflict");
                        conflicts += 1;
                    }
                    other => anyhow::bail!("unexpected {other}: {}", String::from_utf8_lossy(&bytes)),
                }
            }
            anyhow::Ok((ok, conflicts))
        }));
    }
    let (mut ok, mut conflicts) = (0, 0);
    for t in tasks {
        let (o, c) = t.await??;
        ok += o;
        conflicts += c;
    }
    let (_, fin) = c.raw_json("GET", &format!("{CM}/counter"), None, Vec::new()).await?;
    let n: u64 = fin["data"]["n"].as_str().unwrap_or("0").parse()?;
    assert_eq!(n, ok, "final value equals the number of successful updates");
    assert_eq!(ok + conflicts, 200);
    assert!(ok > 0);
    Ok(())
}

/// Patches that do not name a resourceVersion never fail with 409: the server re-applies them to
/// the newest object (Kubernetes' GuaranteedUpdate); one that names a stale version does fail.
#[tokio::test]
async fn concurrent_patches_without_resource_version_all_apply() -> Result<()> {
    let c = Cluster::start().await?;
    let cm = json!({"metadata": {"name": "labels"}, "data": {}});
    let (code, _) = c.raw_json("POST", CM, Some("application/json"), serde_json::to_vec(&cm)?).await?;
    assert_eq!(code, 201);
    let mut tasks = Vec::new();
    for t in 0..8 {
        let client = c.client().await?;
        tasks.push(tokio::spawn(async move {
            for i in 0..10 {
                let patch = json!({"metadata": {"labels": {format!("l{t}-{i}"): "x"}}});
                let (code, bytes) = ferry_testkit::raw(
                    &client,
                    "PATCH",
                    &format!("{CM}/labels"),
                    Some("application/merge-patch+json"),
                    serde_json::to_vec(&patch)?,
                )
                .await?;
                anyhow::ensure!(code == 200, "patch answered {code}: {}", String::from_utf8_lossy(&bytes));
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let (_, fin) = c.raw_json("GET", &format!("{CM}/labels"), None, Vec::new()).await?;
    let labels = fin["metadata"]["labels"].as_object().map(|m| m.len()).unwrap_or(0);
    assert_eq!(labels, 80, "every patch applied: {fin}");

    let stale = json!({"metadata": {"resourceVersion": "1", "labels": {"late": "x"}}});
    let (code, status) = c
        .raw_json("PATCH", &format!("{CM}/labels"), Some("application/merge-patch+json"), serde_json::to_vec(&stale)?)
        .await?;
    assert_eq!(code, 409, "{status}");
    assert_eq!(status["reason"], "Conflict");
    Ok(())
}
