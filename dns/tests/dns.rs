//! ferry-dns against a real API server: records follow Services, EndpointSlices and Pods within a second,
//! over UDP and TCP, with NXDOMAIN for unknown names and REFUSED outside the cluster domain.

use anyhow::{bail, Result};
use ferry_testkit::Cluster;
use hickory_server::proto::op::{Message, Query, ResponseCode};
use hickory_server::proto::rr::{Name, RData, RecordType};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn ask_udp(server: SocketAddr, name: &str, rtype: RecordType) -> Result<Message> {
    let mut msg = Message::query();
    msg.metadata.id = rand_id();
    msg.metadata.recursion_desired = true; // as libc resolvers send it
    msg.add_query(Query::query(Name::from_ascii(name)?, rtype));
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    sock.send_to(&msg.to_vec()?, server).await?;
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf)).await??;
    Ok(Message::from_vec(&buf[..n])?)
}

async fn ask_tcp(server: SocketAddr, name: &str, rtype: RecordType) -> Result<Message> {
    let mut msg = Message::query();
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(Name::from_ascii(name)?, rtype));
    let bytes = msg.to_vec()?;
    let mut stream = tokio::net::TcpStream::connect(server).await?;
    stream.write_all(&(bytes.len() as u16).to_be_bytes()).await?;
    stream.write_all(&bytes).await?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await?;
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    stream.read_exact(&mut buf).await?;
    Ok(Message::from_vec(&buf)?)
}

fn rand_id() -> u16 {
    (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos()) & 0xffff) as u16
}

/// The answers as text: `A 10.96.0.10`, `SRV 80 web.…`, `CNAME example.com.`.
fn answers(m: &Message) -> Vec<String> {
    let mut out: Vec<String> = m
        .answers
        .iter()
        .map(|r| match &r.data {
            RData::A(a) => format!("A {}", a.0),
            RData::AAAA(a) => format!("AAAA {}", a.0),
            RData::SRV(s) => format!("SRV {} {}", s.port, s.target),
            RData::CNAME(c) => format!("CNAME {}", c.0),
            other => format!("{other:?}"),
        })
        .collect();
    out.sort();
    out
}

/// Ask until the answers are `want` (within 1 s of the change, checked every 20 ms).
async fn until(server: SocketAddr, name: &str, rtype: RecordType, want: &[&str]) -> Result<()> {
    let start = tokio::time::Instant::now();
    let mut last = Vec::new();
    while start.elapsed() < Duration::from_secs(1) {
        last = answers(&ask_udp(server, name, rtype).await?);
        if last == want {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("{name} {rtype}: still {last:?} after 1 s, want {want:?}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_dns_follows_the_api() -> Result<()> {
    let c = Cluster::start().await?;
    let client = c.client().await?;
    let config = ferry_dns::Config { listen: vec!["127.0.0.1:0".parse()?], ..Default::default() };
    let dns = ferry_dns::start(client.clone(), config).await?;
    let server = dns.addrs[0];

    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let svc: Service = serde_json::from_value(json!({"metadata": {"name": "web"}, "spec": {"clusterIP": "10.96.0.10",
        "ports": [{"name": "http", "port": 80}, {"name": "dns", "port": 53, "protocol": "UDP"}]}}))?;
    services.create(&PostParams::default(), &svc).await?;
    until(server, "web.default.svc.cluster.local.", RecordType::A, &["A 10.96.0.10"]).await?;
    until(
        server,
        "_http._tcp.web.default.svc.cluster.local.",
        RecordType::SRV,
        &["SRV 80 web.default.svc.cluster.local."],
    )
    .await?;
    until(
        server,
        "_dns._udp.web.default.svc.cluster.local.",
        RecordType::SRV,
        &["SRV 53 web.default.svc.cluster.local."],
    )
    .await?;
    let tcp = ask_tcp(server, "web.default.svc.cluster.local.", RecordType::A).await?;
    assert_eq!(answers(&tcp), ["A 10.96.0.10"], "TCP answers too");

    // Unknown names in the zone: NXDOMAIN, authoritative. Outside it: refused.
    let nx = ask_udp(server, "nope.default.svc.cluster.local.", RecordType::A).await?;
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    assert!(nx.metadata.authoritative);
    let out = ask_udp(server, "example.com.", RecordType::A).await?;
    assert_eq!(out.metadata.response_code, ResponseCode::Refused);

    // Headless: ready endpoints, their names, SRV per endpoint; readiness changes follow.
    let headless: Service = serde_json::from_value(
        json!({"metadata": {"name": "db"}, "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}}),
    )?;
    services.create(&PostParams::default(), &headless).await?;
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "db-x", "labels": {"kubernetes.io/service-name": "db"}},
        "addressType": "IPv4",
        "ports": [{"name": "pg", "port": 5432}],
        "endpoints": [
            {"addresses": ["10.244.1.7"], "hostname": "db-0", "conditions": {"ready": true}},
            {"addresses": ["10.244.1.8"], "conditions": {"ready": false}}
        ]
    }))?;
    slices.create(&PostParams::default(), &slice).await?;
    until(server, "db.default.svc.cluster.local.", RecordType::A, &["A 10.244.1.7"]).await?;
    until(server, "db-0.db.default.svc.cluster.local.", RecordType::A, &["A 10.244.1.7"]).await?;
    until(
        server,
        "_pg._tcp.db.default.svc.cluster.local.",
        RecordType::SRV,
        &["SRV 5432 db-0.db.default.svc.cluster.local."],
    )
    .await?;
    slices
        .patch(
            "db-x",
            &PatchParams::default(),
            &Patch::Json::<()>(serde_json::from_value(
                json!([{"op": "replace", "path": "/endpoints/1/conditions/ready", "value": true}]),
            )?),
        )
        .await?;
    until(server, "db.default.svc.cluster.local.", RecordType::A, &["A 10.244.1.7", "A 10.244.1.8"]).await?;

    // ExternalName and pods.
    let ext: Service = serde_json::from_value(
        json!({"metadata": {"name": "ext"}, "spec": {"type": "ExternalName", "externalName": "db.example.com"}}),
    )?;
    services.create(&PostParams::default(), &ext).await?;
    until(server, "ext.default.svc.cluster.local.", RecordType::CNAME, &["CNAME db.example.com."]).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}),
    )?;
    pods.create(&PostParams::default(), &pod).await?;
    pods.patch_status(
        "p",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"podIP": "10.244.1.9", "podIPs": [{"ip": "10.244.1.9"}]}})),
    )
    .await?;
    until(server, "10-244-1-9.default.pod.cluster.local.", RecordType::A, &["A 10.244.1.9"]).await?;
    let unknown = ask_udp(server, "10-244-1-10.default.pod.cluster.local.", RecordType::A).await?;
    assert_eq!(unknown.metadata.response_code, ResponseCode::NXDomain, "pod names are verified");

    // Deleting the Service removes its names.
    services.delete("web", &DeleteParams::default()).await?;
    until(server, "web.default.svc.cluster.local.", RecordType::A, &[]).await?;
    dns.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_names_go_upstream() -> Result<()> {
    let c = Cluster::start().await?;
    let client = c.client().await?;
    // The "upstream" is another ferry-dns for the domain upstream.test, on a private loopback address and
    // port 53 (forwarders always use port 53). Binding port 53 needs root, as in CI.
    let ip: std::net::IpAddr = format!("127.53.{}.{}", std::process::id() % 250 + 1, rand_id() % 250 + 1).parse()?;
    let upstream_cfg = ferry_dns::Config {
        domain: "upstream.test".into(),
        listen: vec![SocketAddr::new(ip, 53)],
        ..Default::default()
    };
    let upstream = match ferry_dns::start(client.clone(), upstream_cfg).await {
        Ok(u) => u,
        Err(e) => {
            assert!(std::env::var_os("CI").is_none(), "CI runs as root and must bind port 53: {e}");
            println!("skipping: {e}");
            return Ok(());
        }
    };
    let cfg = ferry_dns::Config {
        listen: vec!["127.0.0.1:0".parse()?],
        upstream: ferry_dns::Upstream::Servers(vec![ip]),
        ..Default::default()
    };
    let dns = ferry_dns::start(client.clone(), cfg).await?;
    let services: Api<Service> = Api::namespaced(client, "default");
    let svc: Service = serde_json::from_value(
        json!({"metadata": {"name": "api"}, "spec": {"clusterIP": "10.96.0.20", "ports": [{"port": 443}]}}),
    )?;
    services.create(&PostParams::default(), &svc).await?;
    until(dns.addrs[0], "api.default.svc.cluster.local.", RecordType::A, &["A 10.96.0.20"]).await?;
    let start = tokio::time::Instant::now();
    loop {
        let m = ask_udp(dns.addrs[0], "api.default.svc.upstream.test.", RecordType::A).await?;
        if answers(&m) == ["A 10.96.0.20"] {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(3), "not forwarded: {m:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    dns.shutdown().await;
    upstream.shutdown().await;
    Ok(())
}
