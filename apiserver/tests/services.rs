//! ClusterIP and NodePort allocation: unique under concurrency, requested values honoured or refused,
//! released on delete and on type changes, a full range is a clear error.

use anyhow::Result;
use ferry_apiserver::rest::ServiceRanges;
use ferry_testkit::Cluster;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{json, Value};
use std::collections::HashSet;

fn service(name: &str, spec: Value) -> Result<Service> {
    let mut spec = spec;
    if spec.get("ports").is_none() {
        spec["ports"] = json!([{"port": 80}]);
    }
    Ok(serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec}))?)
}

fn ip(s: &Service) -> String {
    s.spec.as_ref().and_then(|s| s.cluster_ip.clone()).unwrap_or_default()
}

async fn create_err(api: &Api<Service>, svc: &Service) -> kube::core::Status {
    match api.create(&PostParams::default(), svc).await {
        Err(kube::Error::Api(e)) => *e,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_get_distinct_cluster_ips() -> Result<()> {
    let c = Cluster::start().await?;
    let api: Api<Service> = Api::namespaced(c.client().await?, "default");
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let api = api.clone();
            tokio::spawn(async move {
                let svc = service(&format!("s{i}"), json!({}))?;
                anyhow::Ok(api.create(&PostParams::default(), &svc).await?)
            })
        })
        .collect();
    let mut ips = HashSet::new();
    for t in tasks {
        let svc = t.await??;
        let ip = ip(&svc);
        assert!(ip.starts_with("10.") && ip != "10.96.0.1", "{ip}");
        let spec = svc.spec.as_ref().expect("spec");
        assert_eq!(spec.cluster_ips.as_deref(), Some(&[ip.clone()][..]));
        assert_eq!(spec.ip_families.as_deref(), Some(&["IPv4".to_owned()][..]));
        ips.insert(ip);
    }
    assert_eq!(ips.len(), 200, "every Service has its own ClusterIP");

    // A requested IP that is in use: 422. One outside the range: 422. A free one: granted.
    let taken = ips.iter().next().cloned().unwrap_or_default();
    let e = create_err(&api, &service("dup", json!({"clusterIP": taken}))?).await;
    assert_eq!(e.code, 422);
    assert!(e.message.contains("provided IP is already allocated"), "{}", e.message);
    let e = create_err(&api, &service("far", json!({"clusterIP": "192.168.1.1"}))?).await;
    assert_eq!(e.code, 422);
    assert_eq!(
        e.message,
        "Service \"far\" is invalid: spec.clusterIPs[0]: Invalid value: \"192.168.1.1\": failed to allocate IP \
         192.168.1.1: the provided IP (192.168.1.1) is not in the valid range. The range of valid IPs is 10.96.0.0/12"
    );
    // The first address is the `kubernetes` Service's, as in Kubernetes.
    let kubernetes = api.get("kubernetes").await?;
    assert_eq!(ip(&kubernetes), "10.96.0.1");
    let port = serde_json::to_value(&kubernetes)?["spec"]["ports"][0].clone();
    assert_eq!((port["name"].as_str(), port["port"].as_i64()), (Some("https"), Some(443)));
    // The test server listens on loopback, which cannot be an endpoint: no Endpoints then.
    let eps: Api<k8s_openapi::api::core::v1::Endpoints> = Api::namespaced(c.client().await?, "default");
    assert!(eps.get_opt("kubernetes").await?.is_none());
    let e = create_err(&api, &service("first", json!({"clusterIP": "10.96.0.1"}))?).await;
    assert!(e.message.contains("provided IP is already allocated"), "{}", e.message);
    let free = (2..250).map(|n| format!("10.96.0.{n}")).find(|c| !ips.contains(c)).expect("a free address");
    let mine = api.create(&PostParams::default(), &service("mine", json!({"clusterIP": free}))?).await?;
    assert_eq!(ip(&mine), free);

    // Deleting releases: the same IP can be requested again.
    api.delete("mine", &DeleteParams::default()).await?;
    let again = api.create(&PostParams::default(), &service("again", json!({"clusterIP": free}))?).await?;
    assert_eq!(ip(&again), free);

    // Headless Services hold no IP; updates keep the IP even when the client leaves it out.
    let headless = api.create(&PostParams::default(), &service("hl", json!({"clusterIP": "None"}))?).await?;
    assert_eq!(ip(&headless), "None");
    let mut replaced = service("again", json!({"ports": [{"port": 81}]}))?;
    replaced.metadata.resource_version = again.metadata.resource_version.clone();
    let replaced = api.replace("again", &PostParams::default(), &replaced).await?;
    assert_eq!(ip(&replaced), free);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_ports_and_full_ranges() -> Result<()> {
    let c = Cluster::start_with(|cfg| {
        cfg.rest.service_ranges = ServiceRanges::parse("10.0.0.0/29", "30000-30002").expect("ranges");
    })
    .await?;
    let api: Api<Service> = Api::namespaced(c.client().await?, "default");

    // A /29 has 6 usable addresses; the first is kept for the `kubernetes` Service: 5 to hand out.
    for i in 0..5 {
        api.create(&PostParams::default(), &service(&format!("s{i}"), json!({}))?).await?;
    }
    let e = create_err(&api, &service("s5", json!({}))?).await;
    assert_eq!(e.code, 422);
    assert!(
        e.message.contains("spec.clusterIPs: Internal error: failed to allocate a serviceIP: range is full"),
        "{}",
        e.message
    );
    assert!(api.get_opt("s5").await?.is_none(), "nothing stored");
    for name in ["s4", "s3", "s2"] {
        api.delete(name, &DeleteParams::default()).await?;
    }

    // NodePorts: allocated, requested, out of range, taken, and released by a type change.
    let np = api
        .create(
            &PostParams::default(),
            &service(
                "np",
                json!({"type": "NodePort", "ports": [{"name": "http", "port": 80}, {"name": "https", "port": 443}]}),
            )?,
        )
        .await?;
    let ports: Vec<i32> =
        np.spec.as_ref().and_then(|s| s.ports.clone()).unwrap_or_default().iter().filter_map(|p| p.node_port).collect();
    assert_eq!(ports.len(), 2);
    assert!(ports.iter().all(|p| (30000..=30002).contains(p)) && ports[0] != ports[1], "{ports:?}");
    let free = (30000..=30002).find(|p| !ports.contains(p)).expect("one left");
    let e =
        create_err(&api, &service("np2", json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": ports[0]}]}))?)
            .await;
    assert_eq!(e.code, 422);
    assert!(
        e.message.contains("spec.ports[0].nodePort: Invalid value")
            && e.message.contains("provided port is already allocated"),
        "{}",
        e.message
    );
    let e =
        create_err(&api, &service("np3", json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 80}]}))?).await;
    assert!(
        e.message.contains("spec.ports[0].nodePort: Invalid value: 80: provided port is not in the valid range. The range of valid ports is 30000-30002"),
        "{}",
        e.message
    );
    // np2 takes the last port; a third NodePort Service finds the range full.
    api.create(
        &PostParams::default(),
        &service("np2", json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": free}]}))?,
    )
    .await?;
    let e = create_err(&api, &service("np4", json!({"type": "NodePort"}))?).await;
    assert!(e.message.contains("failed to allocate a nodePort: range is full"), "{}", e.message);

    // np becomes a ClusterIP Service (as kubectl apply would patch it): its node ports are released.
    let patched =
        api.patch("np", &PatchParams::default(), &Patch::Strategic(json!({"spec": {"type": "ClusterIP"}}))).await?;
    assert!(patched
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default()
        .iter()
        .all(|p| p.node_port.is_none()));
    let np4 = api.create(&PostParams::default(), &service("np4", json!({"type": "NodePort"}))?).await?;
    let got = np4.spec.as_ref().and_then(|s| s.ports.as_ref()).and_then(|p| p[0].node_port).expect("node port");
    assert!(ports.contains(&got), "{got} comes from the released ones {ports:?}");
    Ok(())
}

#[tokio::test]
async fn endpoint_slices_are_served() -> Result<()> {
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use kube::api::ListParams;
    let c = Cluster::start().await?;
    let api: Api<EndpointSlice> = Api::namespaced(c.client().await?, "default");
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "web-abc12", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.244.0.5"], "conditions": {"ready": true}, "nodeName": "n1"}],
        "ports": [{"name": "http", "port": 8080}]
    }))?;
    let created = api.create(&PostParams::default(), &slice).await?;
    let ports = created.ports.clone().unwrap_or_default();
    assert_eq!(ports[0].protocol.as_deref(), Some("TCP"), "defaulted");
    let listed = api.list(&ListParams::default().labels("kubernetes.io/service-name=web")).await?;
    assert_eq!(listed.items.len(), 1);
    let mut bad = slice.clone();
    bad.metadata.name = Some("bad".into());
    bad.endpoints = Some(serde_json::from_value(json!([{"addresses": ["not-an-ip"]}]))?);
    match api.create(&PostParams::default(), &bad).await {
        Err(kube::Error::Api(e)) => {
            assert_eq!(e.code, 422);
            assert!(e.message.contains("endpoints[0].addresses[0]: Invalid value: \"not-an-ip\""), "{}", e.message);
        }
        other => panic!("expected 422, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn the_kubernetes_service_points_at_the_api_server() -> Result<()> {
    use k8s_openapi::api::core::v1::Endpoints;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    // Stored only: nothing is sent to this address.
    let mut c = Cluster::start_with(|cfg| cfg.advertise_address = Some("192.0.2.10".parse().expect("ip"))).await?;
    // A restart finds them and keeps them (the update path, a no-op here).
    c.restart_server().await?;
    let client = c.client().await?;
    let svc = Api::<Service>::namespaced(client.clone(), "default").get("kubernetes").await?;
    assert_eq!(ip(&svc), "10.96.0.1");
    let target = serde_json::to_value(&svc)?["spec"]["ports"][0]["targetPort"].clone();
    let ep = serde_json::to_value(Api::<Endpoints>::namespaced(client.clone(), "default").get("kubernetes").await?)?;
    assert_eq!(ep["subsets"][0]["addresses"][0]["ip"], "192.0.2.10");
    assert_eq!(ep["subsets"][0]["ports"][0]["port"], target);
    let slice = Api::<EndpointSlice>::namespaced(client, "default").get("kubernetes").await?;
    assert_eq!(slice.endpoints.unwrap_or_default()[0].addresses, ["192.0.2.10"]);
    Ok(())
}
