//! `ferry-bench-proxy`: how fast the nodelet's service proxy follows the API, at 1,000 Services
//! and 10,000 endpoints, with the real kernel (nftables).
//!
//! One private etcd and an in-process API server hold `--services` Services (every other one a
//! NodePort) in the benchmark range 198.18.0.0/16, each with one EndpointSlice of `--endpoints`
//! ready endpoints in 198.19.0.0/16 (addresses nobody uses; NodePorts answer only on 192.0.2.1,
//! which is not local: the rules never match real traffic). The proxy runs in-process and owns its
//! own table `ferry-bench<pid>`, removed at the end (also on failure). Then:
//! - the first sync (whole table, from listed caches) and the cost of rendering the rule set;
//! - endpoint change → rules in effect: replace one endpoint of a slice, wait until a sync that
//!   has the new endpoint's chain has returned from `nft -f` (checked with `nft list chain`);
//! - the duration of each of those syncs (compute + render + one nft transaction).
//!
//! Prints a Markdown report on stdout.

use anyhow::{bail, Context, Result};
use clap::Parser;
use ferry_nodelet::proxy::{model, nftables, Nft, Proxy, ProxyConfig};
use ferry_testkit::Cluster;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Service proxy benchmark.
#[derive(Parser, Debug)]
struct Args {
    /// Services to create before measuring.
    #[arg(long, default_value_t = 1000)]
    services: usize,
    /// Endpoints per Service (one EndpointSlice each).
    #[arg(long, default_value_t = 10)]
    endpoints: usize,
    /// Samples of endpoint change → rules.
    #[arg(long, default_value_t = 50)]
    samples: usize,
}

const NS: &str = "default";

fn endpoint_ip(i: usize, e: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 19, 0, 0)) + (i * 64 + e) as u32)
}

fn slice_for(name: &str, i: usize, endpoints: usize, bump: usize) -> Result<EndpointSlice> {
    let eps: Vec<_> = (0..endpoints)
        .map(|e| {
            let e = if e + 1 == endpoints { e + bump } else { e };
            json!({"addresses": [endpoint_ip(i, e).to_string()], "conditions": {"ready": true}})
        })
        .collect();
    Ok(serde_json::from_value(json!({
        "metadata": {"name": format!("{name}-x"), "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": eps,
    }))?)
}

fn service(name: &str, node_port: bool) -> Result<Service> {
    let mut spec = json!({"ports": [{"name": "http", "port": 80, "targetPort": 8080}]});
    if node_port {
        spec["type"] = json!("NodePort");
    }
    Ok(serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec}))?)
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

/// The benchmark's table, removed on drop.
struct Table(String);

impl Drop for Table {
    fn drop(&mut self) {
        let _ = std::process::Command::new("nft")
            .args(["delete", "table", "ip", &self.0])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

fn chain_exists(table: &str, chain: &str) -> bool {
    std::process::Command::new("nft")
        .args(["list", "chain", "ip", table, chain])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    eprintln!("[ferry-bench-proxy] starting etcd and an in-process API server");
    let cluster = Cluster::start_with(|c| {
        c.rest.service_ranges = ferry_apiserver::rest::ServiceRanges::parse("198.18.0.0/16", "30000-32767")
            .unwrap_or_else(|e| panic!("service range: {e}"));
    })
    .await?;
    let client = cluster.client().await?;
    let services: Api<Service> = Api::namespaced(client.clone(), NS);
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NS);

    eprintln!("[ferry-bench-proxy] creating {} services with {} endpoints each", args.services, args.endpoints);
    let fill = futures::stream::iter(0..args.services)
        .map(|i| {
            let (services, slices) = (services.clone(), slices.clone());
            let endpoints = args.endpoints;
            async move {
                let name = format!("svc-{i}");
                services.create(&PostParams::default(), &service(&name, i % 2 == 0)?).await?;
                slices.create(&PostParams::default(), &slice_for(&name, i, endpoints, 0)?).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    fill.into_iter().collect::<Result<Vec<_>>>().context("filling the cluster")?;

    // Rendering alone, from the same objects.
    let all_services: Vec<_> = services.list(&ListParams::default()).await?.items.into_iter().map(Arc::new).collect();
    let all_slices: Vec<_> = slices.list(&ListParams::default()).await?.items.into_iter().map(Arc::new).collect();
    let table = Table(format!("ferry-bench{}", std::process::id()));
    let mut config = ProxyConfig::new(table.0.clone());
    config.nodeport_addresses = vec!["192.0.2.1/32".parse()?];
    config.cluster_cidrs = vec!["198.19.0.0/16".parse()?];
    let mut renders = Vec::new();
    let mut script_bytes = 0;
    for _ in 0..10 {
        let t = Instant::now();
        let ports = model::build(&all_services, &all_slices);
        script_bytes = nftables::render(&config, &ports).script(None).len();
        renders.push(t.elapsed());
    }

    let proxy = Proxy::new(config, Arc::new(Nft::default()));
    let mut reports = proxy.reports();
    let started = Instant::now();
    let task = tokio::spawn(proxy.run(client.clone()));
    reports.wait_for(|r| r.syncs >= 1).await?;
    let first_sync = started.elapsed();
    let first = reports.borrow().clone();

    eprintln!("[ferry-bench-proxy] measuring endpoint change → rules in effect");
    let mut change = Vec::new();
    let mut sync_times = Vec::new();
    for s in 0..args.samples {
        let i = (s * 37) % args.services;
        let name = format!("svc-{i}");
        let bump = 1 + s % 16;
        let next = slice_for(&name, i, args.endpoints, bump)?;
        let new_ep = SocketAddrV4::new(endpoint_ip(i, args.endpoints - 1 + bump), 8080);
        let chain = nftables::endpoint_chain(&format!("{NS}/{name}:http"), &new_ep);
        let t = Instant::now();
        slices
            .patch(&format!("{name}-x"), &PatchParams::default(), &Patch::Merge(json!({"endpoints": next.endpoints})))
            .await?;
        loop {
            tokio::time::timeout(Duration::from_secs(10), reports.changed()).await.context("no sync within 10 s")??;
            let at = t.elapsed();
            let r = reports.borrow_and_update().clone();
            if chain_exists(&table.0, &chain) {
                change.push(at);
                sync_times.push(r.duration);
                break;
            }
            if t.elapsed() > Duration::from_secs(10) {
                bail!("chain {chain} did not appear within 10 s");
            }
        }
    }
    task.abort();

    println!("## Service proxy (nftables), {} services × {} endpoints\n", args.services, args.endpoints);
    println!(
        "{} service ports, {} endpoints programmed; the rule set is {} KiB of `nft -f` input.\n",
        first.service_ports,
        first.endpoints,
        script_bytes / 1024
    );
    println!("| measurement | samples | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|");
    println!("{}", row("compute + render the rule set (no kernel)", renders));
    println!("{}", row("first sync after start (lists + whole-table replace)", vec![first_sync]));
    println!("{}", row("first sync: compute + render + `nft -f`", vec![first.duration]));
    println!("{}", row("endpoint change → rules in effect", change));
    println!("{}", row("sync after an endpoint change: compute + render + `nft -f`", sync_times));
    drop(table);
    Ok(())
}
