//! Cluster DNS that pods of a `ferry up` cluster can reach.
//!
//! Pods cannot reach the host's 127.0.0.1, so `ferry-dns` also listens on the cluster DNS
//! address — the 10th address of the service range, as kubeadm picks it — bound to a link
//! `fy<id>dns` that belongs to the cluster (the way NodeLocal DNSCache binds its address to a
//! dummy link; a bridge without ports does the same and, unlike `dummy`, needs no kernel module
//! that containers may lack — CNI's bridge plugin needs bridges anyway). A
//! selector-less Service `kube-system/kube-dns` holds that address, so the API server never gives
//! it to another Service, and an EndpointSlice and Endpoints point at the address itself: the
//! service proxy's DNAT for it changes nothing and packets from pods are delivered to
//! `ferry-dns` on the host. The nodelets write the address into pods' `/etc/resolv.conf`.

use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;
use std::net::Ipv4Addr;
use std::path::Path;

/// Field manager of the objects `ferry up` keeps.
const MANAGER: &str = "ferry-up";

/// The cluster DNS address in `service_cidr`: its 10th address.
pub fn address(service_cidr: &str) -> Result<Ipv4Addr> {
    let net: ipnet::Ipv4Net = service_cidr
        .parse()
        .map_err(|_| anyhow::anyhow!("--service-cidr {service_cidr:?} is not an IPv4 network like 10.96.0.0/12"))?;
    if net.prefix_len() > 28 {
        bail!("--service-cidr {service_cidr:?} is too small: at most /28");
    }
    Ok(Ipv4Addr::from(u32::from(net.network()) + 10))
}

/// The link that carries the cluster DNS address of the cluster with this id.
pub fn link(id: &str) -> String {
    format!("fy{id}dns")
}

/// Create the link `name` holding `ip`, replacing one left by an earlier run.
pub fn add_link(name: &str, ip: Ipv4Addr) -> Result<()> {
    delete_link(name);
    ip_cmd(&["link", "add", name, "type", "bridge"])?;
    ip_cmd(&["addr", "add", &format!("{ip}/32"), "dev", name])?;
    ip_cmd(&["link", "set", name, "up"])
}

/// Remove the link `name` if it exists.
pub fn delete_link(name: &str) {
    if Path::new("/sys/class/net").join(name).exists() {
        let _ = std::process::Command::new("ip").args(["link", "delete", name]).output();
    }
}

fn ip_cmd(args: &[&str]) -> Result<()> {
    let out = std::process::Command::new("ip").args(args).output().context("running ip (apt install iproute2)")?;
    if !out.status.success() {
        bail!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Publish the `kube-system/kube-dns` Service, EndpointSlice and Endpoints for `ip`.
pub async fn publish(client: kube::Client, ip: Ipv4Addr) -> Result<()> {
    let ns = "kube-system";
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let pp = PatchParams::apply(MANAGER).force();
    // The address of a Service cannot change: a cluster restarted with another service range
    // gets the Service anew.
    if let Some(old) = services.get_opt("kube-dns").await.context("reading the kube-dns Service")? {
        let old_ip = old.spec.and_then(|s| s.cluster_ip).unwrap_or_default();
        if old_ip != ip.to_string() {
            services.delete("kube-dns", &DeleteParams::default()).await.context("replacing the kube-dns Service")?;
        }
    }
    let labels =
        json!({"k8s-app": "kube-dns", "kubernetes.io/name": "FerryDNS", "kubernetes.io/cluster-service": "true"});
    let service = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kube-dns", "namespace": ns, "labels": labels},
        "spec": {"clusterIP": ip.to_string(), "ports": [
            {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
        ]},
    });
    services.patch("kube-dns", &pp, &Patch::Apply(&service)).await.context("publishing the kube-dns Service")?;
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kube-dns-ferry", "namespace": ns, "labels": {
            "kubernetes.io/service-name": "kube-dns",
            "endpointslice.kubernetes.io/managed-by": MANAGER,
        }},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip.to_string()], "conditions": {"ready": true, "serving": true}}],
        "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "dns-tcp", "port": 53, "protocol": "TCP"}],
    });
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    slices
        .patch("kube-dns-ferry", &pp, &Patch::Apply(&slice))
        .await
        .context("publishing the kube-dns EndpointSlice")?;
    let endpoints = json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "kube-dns", "namespace": ns, "labels": labels},
        "subsets": [{"addresses": [{"ip": ip.to_string()}], "ports": [
            {"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
        ]}],
    });
    let eps: Api<Endpoints> = Api::namespaced(client, ns);
    eps.patch("kube-dns", &pp, &Patch::Apply(&endpoints)).await.context("publishing the kube-dns Endpoints")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tenth_address_of_the_service_range() {
        assert_eq!(address("10.96.0.0/12").ok(), Some(Ipv4Addr::new(10, 96, 0, 10)));
        assert_eq!(address("10.100.7.0/24").ok(), Some(Ipv4Addr::new(10, 100, 7, 10)));
        // Host bits are ignored, as for any CIDR.
        assert_eq!(address("10.100.7.99/24").ok(), Some(Ipv4Addr::new(10, 100, 7, 10)));
        assert!(address("10.100.7.0/29").is_err());
        assert!(address("fd00::/108").is_err());
        assert!(address("nonsense").is_err());
    }

    #[test]
    fn link_names_fit_in_ifnamsiz() {
        assert!(link("abcdef").len() < 16);
    }
}
