//! The nodelet against a real API server + etcd, with the simulated runtime: node
//! registration, Lease renewal, pod status, graceful deletion, and many nodes in one process.

use anyhow::{bail, Context, Result};
use ferry_nodelet::runtime::simulated::SimulatedConfig;
use ferry_nodelet::{Config, Nodelet};
use ferry_testkit::Cluster;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, PostParams};
use std::future::Future;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

async fn eventually<T, F, Fut>(what: &str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut last_err = None;
    loop {
        match f().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out waiting for {what} (last error: {last_err:?})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn fast_config(name: &str) -> Config {
    let mut config = Config::new(name, std::env::temp_dir());
    config.lease_renew_interval = Duration::from_millis(300);
    config.status_check_interval = Duration::from_millis(300);
    config.pod_cidr = Some("10.88.0.0/24".into());
    config.zone = Some("zone-a".into());
    config
}

fn pod(name: &str, node: &str) -> Result<Pod> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "nodeName": node,
            "initContainers": [{"name": "init", "image": "busybox:test"}],
            "containers": [{"name": "web", "image": "busybox:test"}, {"name": "side", "image": "busybox:test"}]
        }
    }))?)
}

fn condition(pod: &Pod, type_: &str) -> Option<String> {
    pod.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == type_).map(|c| c.status.clone())
}

#[tokio::test(flavor = "multi_thread")]
async fn registers_heartbeats_and_runs_pods() -> Result<()> {
    let cluster = Cluster::start().await?;
    let client = cluster.client().await?;
    let sim = SimulatedConfig { start_delay: Duration::from_millis(500), ..SimulatedConfig::default() };
    let mut nodelet = Nodelet::simulated(client.clone(), fast_config("sim-1"), [192, 168, 7, 7].into(), sim);
    nodelet.resync_period = Duration::from_millis(200);
    let task = tokio::spawn(nodelet.run());

    // The Node: labels, capacity/allocatable, addresses, nodeInfo, conditions.
    let nodes: Api<Node> = Api::all(client.clone());
    let node = eventually("node sim-1 Ready", || async {
        let n = nodes.get_opt("sim-1").await?;
        Ok(n.filter(|n| {
            n.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        }))
    })
    .await?;
    let labels = node.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get("kubernetes.io/hostname").map(String::as_str), Some("sim-1"));
    assert_eq!(labels.get("kubernetes.io/os").map(String::as_str), Some("linux"));
    assert_eq!(labels.get("topology.kubernetes.io/zone").map(String::as_str), Some("zone-a"));
    assert_eq!(node.spec.as_ref().and_then(|s| s.pod_cidr.as_deref()), Some("10.88.0.0/24"));
    let status = node.status.clone().context("node status")?;
    assert_eq!(status.capacity.as_ref().context("capacity")?["pods"].0, "110");
    assert_eq!(
        status.allocatable.as_ref().context("allocatable")?["memory"].0,
        format!("{}Ki", (32u64 << 20) - 102_400)
    );
    let info = status.node_info.context("nodeInfo")?;
    assert!(info.container_runtime_version.starts_with("simulated://"), "{info:?}");
    let addrs: Vec<_> = status.addresses.iter().flatten().map(|a| (a.type_.as_str(), a.address.as_str())).collect();
    assert_eq!(addrs, [("InternalIP", "192.168.7.7"), ("Hostname", "sim-1")]);
    let types: Vec<_> = status.conditions.iter().flatten().map(|c| c.type_.as_str()).collect();
    assert_eq!(types, ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready"]);

    // The Lease is owned by the Node and renewed.
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let first = eventually("lease", || async { Ok(leases.get_opt("sim-1").await?) }).await?;
    let owner = first.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(
        owner.first().map(|o| (o.kind.as_str(), o.uid.as_str())),
        Some(("Node", node.metadata.uid.as_deref().unwrap_or("")))
    );
    let spec = first.spec.clone().context("lease spec")?;
    assert_eq!(spec.holder_identity.as_deref(), Some("sim-1"));
    assert_eq!(spec.lease_duration_seconds, Some(40));
    let renewed = eventually("lease renewal", || async {
        let l = leases.get("sim-1").await?;
        let t = l.spec.as_ref().and_then(|s| s.renew_time.clone());
        Ok((t != spec.renew_time).then_some(t))
    })
    .await?;
    assert!(renewed > spec.renew_time);

    // A pod bound to the node: Pending (ContainerCreating) first, then Running and Ready.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.create(&PostParams::default(), &pod("p1", "sim-1")?).await?;
    let running = eventually("p1 Running", || async {
        let p = pods.get("p1").await?;
        Ok((p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")).then_some(p))
    })
    .await?;
    let st = running.status.clone().context("status")?;
    assert_eq!(condition(&running, "Ready").as_deref(), Some("True"));
    assert_eq!(condition(&running, "ContainersReady").as_deref(), Some("True"));
    assert_eq!(condition(&running, "Initialized").as_deref(), Some("True"));
    assert_eq!(condition(&running, "PodScheduled").as_deref(), Some("True"));
    assert_eq!(st.host_ip.as_deref(), Some("192.168.7.7"));
    assert_eq!(st.pod_ip.as_deref(), Some("10.244.0.2"));
    assert!(st.start_time.is_some());
    let cs = st.container_statuses.clone().unwrap_or_default();
    assert_eq!(cs.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["web", "side"]);
    assert!(cs.iter().all(|c| c.ready && c.state.as_ref().is_some_and(|s| s.running.is_some())), "{cs:?}");
    let init = st.init_container_statuses.clone().unwrap_or_default();
    assert_eq!(
        init.first().and_then(|c| c.state.as_ref()?.terminated.as_ref()?.reason.clone()).as_deref(),
        Some("Completed")
    );

    // Nothing changes, so nothing is written: the resourceVersion holds over many resyncs.
    let rv = running.metadata.resource_version.clone();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(pods.get("p1").await?.metadata.resource_version, rv, "status written without a change");

    // Deleting a running bound pod is graceful; the nodelet stops it and removes it.
    pods.delete("p1", &DeleteParams::default()).await?;
    eventually("p1 gone", || async { Ok(pods.get_opt("p1").await?.is_none().then_some(())) }).await?;

    task.abort();
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn many_simulated_nodes_in_one_process() -> Result<()> {
    let cluster = Cluster::start().await?;
    let client = cluster.client().await?;
    let tasks = ferry_nodelet::run_simulated_nodes(
        &client,
        "kwok",
        20,
        |c| c.status_check_interval = Duration::from_millis(500),
        SimulatedConfig::default(),
    );
    let nodes: Api<Node> = Api::all(client.clone());
    eventually("20 nodes", || async {
        let list = nodes.list(&Default::default()).await?;
        Ok((list.items.len() == 20).then_some(()))
    })
    .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    for i in 0..20 {
        pods.create(&PostParams::default(), &pod(&format!("p{i}"), &format!("kwok-{i}"))?).await?;
    }
    let ips = eventually("20 pods Running", || async {
        let list = pods.list(&Default::default()).await?;
        let running: Vec<_> = list
            .items
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .filter_map(|p| p.status.as_ref()?.pod_ip.clone())
            .collect();
        Ok((running.len() == 20).then_some(running))
    })
    .await?;
    // Each node hands out addresses from its own range.
    let unique: std::collections::HashSet<_> = ips.iter().collect();
    assert_eq!(unique.len(), 20, "{ips:?}");
    for t in tasks {
        t.abort();
    }
    Ok(())
}

/// The pod workers' side of recovery: a resync answers only once the runtime holds exactly the
/// pods bound to the node in a fresh list — a pod deleted without the node hearing of it (here:
/// removed from etcd while the API server was down) and a runtime leftover are both gone.
#[tokio::test(flavor = "multi_thread")]
async fn resync_removes_pods_the_node_missed_before_answering() -> Result<()> {
    use ferry_nodelet::recovery::{ChannelResync, Resync};
    use ferry_nodelet::runtime::simulated::SimulatedRuntime;
    use ferry_nodelet::runtime::Runtime;
    use std::collections::BTreeSet;
    use std::sync::Arc;

    let mut cluster = Cluster::start().await?;
    let client = cluster.client().await?;
    let runtime = Arc::new(SimulatedRuntime::new(SimulatedConfig::default()));
    let (resync, requests) = ChannelResync::new(Duration::from_secs(10));
    let config = ferry_nodelet::pods::PodConfig {
        node_name: "rs-1".into(),
        host_ip: "10.0.0.1".into(),
        resync_period: Duration::from_millis(300),
        resync_timeout: Duration::from_secs(10),
    };
    let workers = tokio::spawn(ferry_nodelet::pods::run(client.clone(), runtime.clone(), config, requests));
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut uids = BTreeSet::new();
    for name in ["keep", "missed"] {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"nodeName": "rs-1", "containers": [{"name": "c", "image": "busybox:test"}]}
        }))?;
        uids.insert(pods.create(&PostParams::default(), &pod).await?.metadata.uid.context("uid")?);
    }
    let runtime_pods =
        || async { Ok::<_, anyhow::Error>(runtime.list_pods().await?.into_iter().collect::<BTreeSet<_>>()) };
    eventually("both pods in the runtime", || async { Ok((runtime_pods().await? == uids).then_some(())) }).await?;
    let keep = pods.get("keep").await?.metadata.uid.context("uid")?;

    // A leftover the API never had, and a deletion the node never hears of.
    let ghost: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "ghost", "namespace": "default", "uid": "ghost-uid"},
        "spec": {"nodeName": "rs-1", "containers": [{"name": "c", "image": "busybox:test"}]}
    }))?;
    runtime.sync_pod(&ghost).await?;
    cluster.stop_server().await;
    let mut etcd = cluster.etcd.client().await?;
    let keys = etcd.get("/registry/", Some(etcd_client::GetOptions::new().with_prefix().with_keys_only())).await?;
    let key = keys
        .kvs()
        .iter()
        .filter_map(|kv| kv.key_str().ok())
        .find(|k| k.ends_with("/pods/default/missed"))
        .context("the pod's etcd key")?
        .to_string();
    etcd.delete(key, None).await?;
    cluster.restart_server().await?;

    let deadline = tokio::time::Instant::now() + WAIT;
    while let Err(e) = resync.resync().await {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "resync never succeeded: {e}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Answered: nothing but the listed pod is left, right now (no waiting).
    assert_eq!(runtime_pods().await?, BTreeSet::from([keep]));
    workers.abort();
    Ok(())
}
