//! `ferry-bench-dns`: how fast cluster DNS follows the API, at 1,000 Services and 10,000 endpoints.
//!
//! One private etcd and an in-process API server hold 1,000 Services (every tenth headless) and one
//! EndpointSlice of 10 endpoints per Service. An in-process ferry-dns serves them on 127.0.0.1. Then:
//! - Service creation → its name answers: create a Service, ask for its A record every 2 ms until it
//!   answers (50 samples, one at a time);
//! - endpoint change → answer: replace an endpoint address of a headless Service's slice, ask until the
//!   new address answers (50 samples);
//! - the cost of one zone rebuild (all records from all objects), timed in the benchmark process.
//!
//! Prints a Markdown report on stdout.

use anyhow::{bail, Context, Result};
use clap::Parser;
use ferry_dns::records::zone_records;
use ferry_testkit::Cluster;
use futures::StreamExt;
use hickory_server::proto::op::{Message, Query};
use hickory_server::proto::rr::{Name, RData, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

/// Cluster DNS benchmark.
#[derive(Parser, Debug)]
struct Args {
    /// Services to create before measuring.
    #[arg(long, default_value_t = 1000)]
    services: usize,
    /// Endpoints per Service (one EndpointSlice each).
    #[arg(long, default_value_t = 10)]
    endpoints: usize,
    /// Samples per measurement.
    #[arg(long, default_value_t = 50)]
    samples: usize,
}

const NS: &str = "default";

fn slice_for(name: &str, i: usize, endpoints: usize, bump: usize) -> Result<EndpointSlice> {
    let eps: Vec<_> = (0..endpoints)
        .map(|e| {
            let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 128, 0, 0)) + (i * 64 + e + bump) as u32);
            json!({"addresses": [ip.to_string()], "conditions": {"ready": true}})
        })
        .collect();
    Ok(serde_json::from_value(json!({
        "metadata": {"name": format!("{name}-x"), "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080}],
        "endpoints": eps,
    }))?)
}

fn service(name: &str, headless: bool) -> Result<Service> {
    let mut spec = json!({"ports": [{"name": "http", "port": 80, "targetPort": 8080}]});
    if headless {
        spec["clusterIP"] = json!("None");
    }
    Ok(serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec}))?)
}

async fn ask(server: SocketAddr, name: &str) -> Result<Vec<String>> {
    let mut msg = Message::query();
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(Name::from_ascii(name)?, RecordType::A));
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    sock.send_to(&msg.to_vec()?, server).await?;
    let mut buf = vec![0u8; 8192];
    let (n, _) = tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf)).await??;
    let reply = Message::from_vec(&buf[..n])?;
    Ok(reply
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect())
}

/// Time until `name` answers with a set containing `want` (or any answer when `want` is None).
async fn until_answer(server: SocketAddr, name: &str, want: Option<&str>, start: Instant) -> Result<Duration> {
    loop {
        let got = ask(server, name).await?;
        let ok = match want {
            Some(w) => got.iter().any(|a| a == w),
            None => !got.is_empty(),
        };
        if ok {
            return Ok(start.elapsed());
        }
        if start.elapsed() > Duration::from_secs(10) {
            bail!("{name} did not answer {want:?} within 10 s (last {got:?})");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

fn row(what: &str, mut xs: Vec<Duration>) -> String {
    xs.sort();
    format!(
        "| {what} | {} | {:.1} | {:.1} | {:.1} |",
        xs.len(),
        percentile(&xs, 0.5),
        percentile(&xs, 0.99),
        xs.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    )
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    eprintln!("[ferry-bench-dns] starting etcd and an in-process API server");
    let cluster = Cluster::start().await?;
    let client = cluster.client().await?;
    let services: Api<Service> = Api::namespaced(client.clone(), NS);
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NS);

    eprintln!("[ferry-bench-dns] creating {} services with {} endpoints each", args.services, args.endpoints);
    let fill = futures::stream::iter(0..args.services)
        .map(|i| {
            let (services, slices) = (services.clone(), slices.clone());
            let endpoints = args.endpoints;
            async move {
                let name = format!("svc-{i}");
                services.create(&PostParams::default(), &service(&name, i % 10 == 0)?).await?;
                slices.create(&PostParams::default(), &slice_for(&name, i, endpoints, 0)?).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    fill.into_iter().collect::<Result<Vec<_>>>().context("filling the cluster")?;

    let started = Instant::now();
    let dns = ferry_dns::start(
        client.clone(),
        ferry_dns::Config { listen: vec!["127.0.0.1:0".parse()?], ..Default::default() },
    )
    .await?;
    let first_sync = started.elapsed();
    let server = dns.addrs[0];
    until_answer(server, &format!("svc-1.{NS}.svc.cluster.local."), None, Instant::now()).await?;

    // The cost of one full rebuild, from the same objects.
    let all_services = services.list(&ListParams::default()).await?.items;
    let all_slices = slices.list(&ListParams::default()).await?.items;
    let slice_refs: Vec<&EndpointSlice> = all_slices.iter().collect();
    let mut rebuilds = Vec::new();
    let mut records = 0;
    for _ in 0..20 {
        let t = Instant::now();
        records = zone_records("cluster.local", all_services.iter(), &slice_refs, std::iter::empty()).len();
        rebuilds.push(t.elapsed());
    }

    eprintln!("[ferry-bench-dns] measuring service creation → answer");
    let mut create = Vec::new();
    for s in 0..args.samples {
        let name = format!("new-{s}");
        let t = Instant::now();
        services.create(&PostParams::default(), &service(&name, false)?).await?;
        create.push(until_answer(server, &format!("{name}.{NS}.svc.cluster.local."), None, t).await?);
    }

    eprintln!("[ferry-bench-dns] measuring endpoint change → answer");
    let mut change = Vec::new();
    for s in 0..args.samples {
        let i = (s * 10) % args.services; // headless ones
        let name = format!("svc-{i}");
        let bump = 32 + s % 16;
        let next = slice_for(&name, i, args.endpoints, bump)?;
        let want = next
            .endpoints
            .as_ref()
            .and_then(|e| e.last())
            .and_then(|e| e.addresses.first())
            .cloned()
            .unwrap_or_default();
        let t = Instant::now();
        slices
            .patch(&format!("{name}-x"), &PatchParams::default(), &Patch::Merge(json!({"endpoints": next.endpoints})))
            .await?;
        change.push(until_answer(server, &format!("{name}.{NS}.svc.cluster.local."), Some(&want), t).await?);
    }
    dns.shutdown().await;

    println!("## Cluster DNS (`ferry-bench-dns`)\n");
    println!(
        "{} Services ({} headless), {} endpoints in {} EndpointSlices; {} records in the zone. \
         First complete view and zone: {:.0} ms after start.\n",
        args.services,
        args.services / 10,
        args.services * args.endpoints,
        args.services,
        records,
        first_sync.as_secs_f64() * 1000.0
    );
    println!("| Measure | n | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|");
    println!("{}", row("Service created → its name answers (API write included)", create));
    println!("{}", row("Endpoint address changed → new address answers (API write included)", change));
    println!("{}", row("Zone rebuild from all objects (in process)", rebuilds));
    Ok(())
}
