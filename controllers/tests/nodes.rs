//! Integration: node lifecycle, taint eviction, pod GC and IPAM with simulated nodelets (their
//! Lease heartbeats are real API writes) against etcd + the API server, timings shortened by
//! configuration and every timing assertion made against the configured values.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use ferry_controllers::nodes::logic::{Brakes, UNREACHABLE};
use ferry_controllers::{Config, LeaderConfig};
use ferry_nodelet::runtime::simulated::SimulatedConfig;
use ferry_testkit::Cluster;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::PostParams;
use kube::Api;
use serde_json::json;
use tokio_util::sync::CancellationToken;

const GRACE: Duration = Duration::from_secs(3);
const MONITOR: Duration = Duration::from_millis(200);
const TOLERATION_SECONDS: u64 = 2;

fn start_controllers(client: kube::Client, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    let mut leader = LeaderConfig::new("test");
    leader.lease_duration = Duration::from_secs(3);
    leader.renew_deadline = Duration::from_secs(2);
    leader.retry_period = Duration::from_millis(200);
    let nodes = ferry_controllers::nodes::Config {
        grace_period: GRACE,
        monitor_period: MONITOR,
        eviction_period: Duration::from_millis(200),
        brakes: Brakes { eviction_rate: 10.0, ..Brakes::default() },
        cluster_cidr: Some("10.77.0.0/16".into()),
        pod_gc_period: Duration::from_secs(1),
        ..Default::default()
    };
    tokio::spawn(async move {
        let _ = ferry_controllers::run(client, Config { leader, concurrency: 4, nodes }, stop).await;
    })
}

fn sim_nodes(
    client: &kube::Client,
    prefix: &str,
    count: usize,
) -> Vec<tokio::task::JoinHandle<Result<(), ferry_nodelet::NodeletError>>> {
    ferry_nodelet::run_simulated_nodes(
        client,
        prefix,
        count,
        |c| {
            c.lease_renew_interval = Duration::from_millis(300);
            c.status_check_interval = Duration::from_millis(300);
            c.pod_cidr = None; // node IPAM hands them out
        },
        SimulatedConfig::default(),
    )
}

fn pod(name: &str, node: &str, tolerations: serde_json::Value) -> Result<Pod> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"nodeName": node, "tolerations": tolerations, "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "c", "image": "busybox"}]},
    }))?)
}

async fn until<T>(what: &str, limit: Duration, mut f: impl AsyncFnMut() -> Result<Option<T>>) -> Result<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ready(n: &Node) -> Option<String> {
    ferry_controllers::nodes::logic::ready_status(n)
}

fn has_taint(n: &Node, key: &str, effect: &str) -> bool {
    n.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|ts| ts.iter().any(|t| t.key == key && t.effect == effect))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_node_goes_unknown_its_pods_are_evicted_and_it_recovers() -> Result<()> {
    let cluster = Cluster::start().await?;
    let client = cluster.client().await?;
    let stop = CancellationToken::new();
    let _ctrl = start_controllers(client.clone(), stop.clone());
    let mut sims = sim_nodes(&client, "sim", 2);
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");

    // IPAM: both nodes get distinct /24s of the cluster CIDR.
    let cidrs = until("pod CIDRs", Duration::from_secs(20), async || {
        let list = nodes.list(&Default::default()).await?;
        let c: Vec<String> = list.items.iter().filter_map(|n| n.spec.as_ref()?.pod_cidr.clone()).collect();
        Ok((c.len() == 2 && list.items.iter().all(|n| ready(n).as_deref() == Some("True"))).then_some(c))
    })
    .await?;
    assert_ne!(cidrs[0], cidrs[1]);
    assert!(cidrs.iter().all(|c| c.starts_with("10.77.") && c.ends_with(".0/24")), "{cidrs:?}");

    let pp = PostParams::default();
    let unreachable = |secs: Option<u64>| {
        let mut t = json!({"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute"});
        if let Some(s) = secs {
            t["tolerationSeconds"] = json!(s);
        }
        json!([t])
    };
    pods.create(&pp, &pod("short", "sim-0", unreachable(Some(TOLERATION_SECONDS)))?).await?;
    pods.create(&pp, &pod("forever", "sim-0", unreachable(None))?).await?;
    pods.create(&pp, &pod("elsewhere", "sim-1", json!([]))?).await?;
    pods.create(&pp, &pod("ghost", "no-such-node", json!([]))?).await?;

    // Pod GC: a pod bound to a node that does not exist is force-deleted.
    until("ghost pod removed", Duration::from_secs(15), async || {
        Ok(pods.get_opt("ghost").await?.is_none().then_some(()))
    })
    .await?;

    // Silence sim-0 (its nodelet stops: no more Lease renewals).
    sims.remove(0).abort();
    let silenced = Instant::now();
    until("sim-0 Unknown", GRACE + Duration::from_secs(5), async || {
        Ok(nodes.get("sim-0").await.ok().filter(|n| ready(n).as_deref() == Some("Unknown")).map(|_| ()))
    })
    .await?;
    let unknown_after = silenced.elapsed();
    // The last renewal was up to one renew interval before the abort.
    assert!(unknown_after + Duration::from_millis(300) >= GRACE, "not before the grace period: {unknown_after:?}");
    assert!(unknown_after <= GRACE + Duration::from_secs(2), "within grace ± 2 s: {unknown_after:?}");
    // The taints follow in the same monitor pass.
    until("sim-0 tainted", MONITOR * 5, async || {
        let n = nodes.get("sim-0").await?;
        Ok((has_taint(&n, UNREACHABLE, "NoExecute") && has_taint(&n, UNREACHABLE, "NoSchedule")).then_some(()))
    })
    .await?;

    until("short evicted", Duration::from_secs(TOLERATION_SECONDS + 5), async || {
        Ok(pods.get_opt("short").await?.filter(|p| p.metadata.deletion_timestamp.is_some()).map(|_| ()))
    })
    .await?;
    let evicted_after = silenced.elapsed();
    let expected = GRACE + Duration::from_secs(TOLERATION_SECONDS);
    // timeAdded has whole-second precision (as in Kubernetes), and the last renewal was up to
    // one renew interval before the abort.
    assert!(
        evicted_after + Duration::from_millis(1300) >= expected,
        "not before grace + toleration: {evicted_after:?}"
    );
    assert!(evicted_after <= expected + Duration::from_secs(5), "within grace + toleration ± 5 s: {evicted_after:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(pods.get("forever").await?.metadata.deletion_timestamp.is_none(), "tolerated forever: stays");
    assert!(pods.get("elsewhere").await?.metadata.deletion_timestamp.is_none(), "a healthy node's pod stays");
    let sim1 = nodes.get("sim-1").await?;
    assert_eq!(ready(&sim1).as_deref(), Some("True"));
    assert!(!has_taint(&sim1, UNREACHABLE, "NoExecute"));

    // sim-0 comes back: Ready again, our taints gone, the evicted pod finishes terminating.
    let _back = sim_nodes(&client, "sim", 1);
    until("sim-0 recovered", Duration::from_secs(15), async || {
        let n = nodes.get("sim-0").await?;
        Ok((ready(&n).as_deref() == Some("True")
            && !has_taint(&n, UNREACHABLE, "NoExecute")
            && !has_taint(&n, UNREACHABLE, "NoSchedule"))
        .then_some(()))
    })
    .await?;
    until("short gone", Duration::from_secs(15), async || Ok(pods.get_opt("short").await?.is_none().then_some(())))
        .await?;
    stop.cancel();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_node_is_down_nothing_is_evicted() -> Result<()> {
    let cluster = Cluster::start().await?;
    let client = cluster.client().await?;
    let stop = CancellationToken::new();
    let _ctrl = start_controllers(client.clone(), stop.clone());
    let sims = sim_nodes(&client, "all", 2);
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    until("nodes Ready", Duration::from_secs(20), async || {
        let list = nodes.list(&Default::default()).await?;
        Ok((list.items.len() == 2 && list.items.iter().all(|n| ready(n).as_deref() == Some("True"))).then_some(()))
    })
    .await?;
    pods.create(&PostParams::default(), &pod("p", "all-0", json!([]))?).await?;
    for s in sims {
        s.abort();
    }
    until("both Unknown", GRACE + Duration::from_secs(5), async || {
        let list = nodes.list(&Default::default()).await?;
        Ok(list.items.iter().all(|n| ready(n).as_deref() == Some("Unknown")).then_some(()))
    })
    .await?;
    // Evictions would start with a NoExecute taint; none may come while every node is down.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(pods.get("p").await?.metadata.deletion_timestamp.is_none(), "no eviction when every node is down");
    for n in nodes.list(&Default::default()).await?.items {
        assert!(!has_taint(&n, UNREACHABLE, "NoExecute"), "no NoExecute taint: {:?}", n.spec);
        assert!(has_taint(&n, UNREACHABLE, "NoSchedule"), "NoSchedule still marks them: {:?}", n.spec);
    }
    stop.cancel();
    Ok(())
}
