//! Integration: the Endpoints and EndpointSlice controllers against etcd + the API server, with
//! pods whose status the test writes (no nodelet).

use std::time::Duration;

use anyhow::{bail, Result};
use ferry_controllers::{Config, LeaderConfig};
use ferry_testkit::Cluster;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

fn start_controllers(client: kube::Client, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    let mut leader = LeaderConfig::new("test");
    leader.lease_duration = Duration::from_secs(3);
    leader.renew_deadline = Duration::from_secs(2);
    leader.retry_period = Duration::from_millis(200);
    tokio::spawn(async move {
        let _ =
            ferry_controllers::run(client, Config { leader, concurrency: 4, nodes: Default::default() }, stop).await;
    })
}

/// A pod with an `http` container port (its number varies per pod) and a status set by the test.
async fn make_pod(api: &Api<Pod>, name: &str, port: i32, ip: &str, ready: bool) -> Result<()> {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox",
            "ports": [{"name": "http", "containerPort": port}]}]}
    }))?;
    api.create(&PostParams::default(), &pod).await?;
    set_status(api, name, ip, ready).await
}

async fn set_status(api: &Api<Pod>, name: &str, ip: &str, ready: bool) -> Result<()> {
    let status = json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await?;
    Ok(())
}

async fn eventually<T>(what: &str, mut f: impl AsyncFnMut() -> Result<Option<T>>) -> Result<T> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f().await? {
            return Ok(v);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn slice_summary(s: &EndpointSlice) -> Vec<(String, bool, bool, bool)> {
    let mut out: Vec<_> = s
        .endpoints
        .iter()
        .flatten()
        .map(|e| {
            let c = e.conditions.clone().unwrap_or_default();
            (
                e.addresses[0].clone(),
                c.ready.unwrap_or(false),
                c.serving.unwrap_or(false),
                c.terminating.unwrap_or(false),
            )
        })
        .collect();
    out.sort();
    out
}

async fn slices_of(api: &Api<EndpointSlice>, svc: &str) -> Result<Vec<EndpointSlice>> {
    let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={svc}"));
    Ok(api.list(&lp).await?.items)
}

#[tokio::test(flavor = "multi_thread")]
async fn endpoints_and_slices_follow_pods() -> Result<()> {
    let cluster = Cluster::start().await?;
    let client = cluster.client().await?;
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let task = start_controllers(client.clone(), stop.clone());

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let eps: Api<Endpoints> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");

    make_pod(&pods, "a", 8080, "10.1.0.1", true).await?;
    make_pod(&pods, "b", 9090, "10.1.0.2", true).await?;
    make_pod(&pods, "c", 8080, "10.1.0.3", false).await?;
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "web", "labels": {"team": "a"}},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}
    }))?;
    let svc = services.create(&PostParams::default(), &svc).await?;

    // Endpoints: per-pod named ports give two subsets; c is not ready.
    let ep = eventually("endpoints with 3 pods", async || {
        let Some(ep) = eps.get_opt("web").await? else { return Ok(None) };
        let n: usize = ep
            .subsets
            .iter()
            .flatten()
            .map(|s| s.addresses.as_ref().map_or(0, Vec::len) + s.not_ready_addresses.as_ref().map_or(0, Vec::len))
            .sum();
        Ok((n == 3).then_some(ep))
    })
    .await?;
    let subsets = ep.subsets.clone().unwrap_or_default();
    let mut by_port: Vec<(i32, Vec<String>, Vec<String>)> = subsets
        .iter()
        .map(|s| {
            let ips = |l: &Option<Vec<k8s_openapi::api::core::v1::EndpointAddress>>| {
                l.iter().flatten().map(|a| a.ip.clone()).collect::<Vec<_>>()
            };
            (s.ports.as_ref().map_or(0, |p| p[0].port), ips(&s.addresses), ips(&s.not_ready_addresses))
        })
        .collect();
    by_port.sort();
    assert_eq!(
        by_port,
        vec![
            (8080, vec!["10.1.0.1".to_string()], vec!["10.1.0.3".to_string()]),
            (9090, vec!["10.1.0.2".to_string()], vec![]),
        ]
    );
    assert_eq!(ep.labels().get("team").map(String::as_str), Some("a"));

    // EndpointSlices: one per port set, labelled, owned by the Service.
    let got = eventually("two slices", async || {
        let s = slices_of(&slices, "web").await?;
        let n: usize = s.iter().map(|s| s.endpoints.as_ref().map_or(0, Vec::len)).sum();
        Ok((s.len() == 2 && n == 3).then_some(s))
    })
    .await?;
    for s in &got {
        assert_eq!(
            s.labels().get("endpointslice.kubernetes.io/managed-by").map(String::as_str),
            Some("endpointslice-controller.k8s.io")
        );
        assert_eq!(s.address_type, "IPv4");
        let or = &s.owner_references()[0];
        assert_eq!((or.kind.as_str(), or.name.as_str(), or.controller), ("Service", "web", Some(true)));
        assert_eq!(Some(&or.uid), svc.metadata.uid.as_ref());
        assert!(s.name_any().starts_with("web-"));
    }
    let port_of = |s: &EndpointSlice| s.ports.as_ref().and_then(|p| p[0].port).unwrap_or(0);
    let s8080 = got.iter().find(|s| port_of(s) == 8080).cloned().expect("8080 slice");
    assert_eq!(
        slice_summary(&s8080),
        vec![("10.1.0.1".into(), true, true, false), ("10.1.0.3".into(), false, false, false)]
    );

    // No writes when nothing changed: a pod annotation does not touch Endpoints or slices.
    let (ep_rv, slice_rvs) = (
        ep.resource_version(),
        got.iter().map(|s| (s.name_any(), s.resource_version())).collect::<std::collections::BTreeMap<_, _>>(),
    );
    pods.patch("a", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"annotations": {"x": "1"}}}))).await?;
    // c turns ready: that must show (and proves the annotation event was processed before it).
    set_status(&pods, "c", "10.1.0.3", true).await?;
    eventually("c ready in its slice", async || {
        let s = slices_of(&slices, "web").await?;
        Ok(s.iter().any(|s| slice_summary(s).contains(&("10.1.0.3".into(), true, true, false))).then_some(()))
    })
    .await?;
    let after = slices_of(&slices, "web").await?;
    let s9090 = after.iter().find(|s| port_of(s) == 9090).expect("9090 slice");
    assert_eq!(slice_rvs.get(&s9090.name_any()), Some(&s9090.resource_version()), "untouched slice not rewritten");
    assert!(after.iter().any(|s| s.name_any() == s8080.name_any()), "the slice is updated in place");
    assert_ne!(eps.get("web").await?.resource_version(), ep_rv);

    // A terminating pod (graceful deletion on a node) is serving + terminating, not ready.
    pods.delete("a", &DeleteParams::default()).await?;
    eventually("a terminating", async || {
        let s = slices_of(&slices, "web").await?;
        Ok(s.iter().any(|s| slice_summary(s).contains(&("10.1.0.1".into(), false, true, true))).then_some(()))
    })
    .await?;
    eventually("a gone from Endpoints", async || {
        let ep = eps.get("web").await?;
        let has = ep.subsets.iter().flatten().flat_map(|s| s.addresses.iter().flatten()).any(|a| a.ip == "10.1.0.1");
        Ok((!has).then_some(()))
    })
    .await?;

    // A pod whose labels stop matching leaves.
    pods.patch("b", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"app": "other"}}}))).await?;
    eventually("b left", async || {
        let s = slices_of(&slices, "web").await?;
        let has = s.iter().any(|s| slice_summary(s).iter().any(|e| e.0 == "10.1.0.2"));
        let ep = eps.get("web").await?;
        let in_ep = ep.subsets.iter().flatten().flat_map(|s| s.addresses.iter().flatten()).any(|a| a.ip == "10.1.0.2");
        Ok((!has && !in_ep).then_some(()))
    })
    .await?;

    // Deleting the Service removes its Endpoints (controller) and slices (garbage collector).
    services.delete("web", &DeleteParams::default()).await?;
    eventually("endpoints and slices gone", async || {
        Ok((eps.get_opt("web").await?.is_none() && slices_of(&slices, "web").await?.is_empty()).then_some(()))
    })
    .await?;

    stop.cancel();
    let _ = task.await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn selectorless_services_are_left_alone_and_empty_ones_get_a_placeholder() -> Result<()> {
    let cluster = Cluster::start().await?;
    let client = cluster.client().await?;
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let task = start_controllers(client.clone(), stop.clone());
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let eps: Api<Endpoints> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");

    let manual: Service = serde_json::from_value(json!({
        "metadata": {"name": "manual"}, "spec": {"ports": [{"port": 53, "protocol": "UDP"}]}
    }))?;
    services.create(&PostParams::default(), &manual).await?;
    let mine: Endpoints = serde_json::from_value(json!({
        "metadata": {"name": "manual"}, "subsets": [{"addresses": [{"ip": "10.9.9.9"}], "ports": [{"port": 53, "protocol": "UDP"}]}]
    }))?;
    eps.create(&PostParams::default(), &mine).await?;
    let empty: Service = serde_json::from_value(json!({
        "metadata": {"name": "empty"}, "spec": {"selector": {"app": "none"}, "ports": [{"port": 80}]}
    }))?;
    services.create(&PostParams::default(), &empty).await?;

    let placeholder = eventually("placeholder slice", async || {
        let s = slices_of(&slices, "empty").await?;
        Ok((s.len() == 1).then(|| s[0].clone()))
    })
    .await?;
    assert!(placeholder.endpoints.as_ref().is_none_or(Vec::is_empty));
    let ep = eventually("empty Endpoints", async || eps.get_opt("empty").await.map_err(Into::into)).await?;
    assert!(ep.subsets.as_ref().is_none_or(Vec::is_empty));
    // The controllers never touched the selector-less Service's Endpoints, nor made slices for it.
    let kept = eps.get("manual").await?;
    assert_eq!(kept.subsets.as_ref().map(|s| s[0].addresses.as_ref().map(Vec::len)), Some(Some(1)));
    assert!(slices_of(&slices, "manual").await?.is_empty());
    // And writes nothing more while nothing changes.
    let rv = placeholder.resource_version();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(slices_of(&slices, "empty").await?[0].resource_version(), rv);

    stop.cancel();
    let _ = task.await;
    Ok(())
}
