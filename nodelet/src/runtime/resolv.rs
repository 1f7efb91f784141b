//! A pod's `/etc/resolv.conf`, as the kubelet writes it for each `dnsPolicy`.
//!
//! `ClusterFirst` (the default; also `ClusterFirstWithHostNet` for hostNetwork pods) with a
//! cluster DNS configured: `search <ns>.svc.<domain> svc.<domain> <domain>` followed by the
//! host's search domains, the cluster DNS servers, `options ndots:5`. `Default` (and
//! `ClusterFirst` for hostNetwork pods, or without a cluster DNS): the host's nameservers and
//! search domains. `None`: only what `dnsConfig` says. `dnsConfig` is merged on top in every case.

use k8s_openapi::api::core::v1::Pod;

/// The cluster DNS the nodelet points pods at (the kubelet's `--cluster-dns`/`--cluster-domain`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterDns {
    /// Nameserver addresses (the kube-dns Service's ClusterIP).
    pub servers: Vec<String>,
    /// The cluster domain, e.g. `cluster.local`.
    pub domain: String,
}

/// The resolv.conf text for `pod`, given the host's resolv.conf.
pub fn resolv_conf(pod: &Pod, host: &str, dns: Option<&ClusterDns>) -> String {
    let spec = pod.spec.as_ref();
    let policy = spec.and_then(|s| s.dns_policy.as_deref()).unwrap_or("ClusterFirst");
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let host_servers: Vec<String> = host
        .lines()
        .filter_map(|l| l.strip_prefix("nameserver"))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect();
    let host_search: Vec<String> = host
        .lines()
        .filter_map(|l| l.strip_prefix("search").or_else(|| l.strip_prefix("domain")))
        .flat_map(|v| v.split_whitespace().map(str::to_string))
        .collect();
    let cluster = match (policy, dns) {
        ("ClusterFirstWithHostNet", Some(d)) => Some(d),
        ("ClusterFirst", Some(d)) if !host_network => Some(d),
        _ => None,
    };
    let (mut servers, mut search, mut options): (Vec<String>, Vec<String>, Vec<String>) = match (policy, cluster) {
        ("None", _) => (Vec::new(), Vec::new(), Vec::new()),
        (_, Some(d)) => {
            let mut search = vec![format!("{ns}.svc.{}", d.domain), format!("svc.{}", d.domain), d.domain.clone()];
            search.extend(host_search);
            (d.servers.clone(), search, vec!["ndots:5".into()])
        }
        _ => (host_servers, host_search, Vec::new()),
    };
    if let Some(cfg) = spec.and_then(|s| s.dns_config.as_ref()) {
        servers.extend(cfg.nameservers.iter().flatten().cloned());
        search.extend(cfg.searches.iter().flatten().cloned());
        for o in cfg.options.iter().flatten() {
            let Some(name) = o.name.as_deref() else { continue };
            options.retain(|x| x.split(':').next() != Some(name));
            options.push(match &o.value {
                Some(v) => format!("{name}:{v}"),
                None => name.to_string(),
            });
        }
    }
    let mut seen = std::collections::HashSet::new();
    search.retain(|s| seen.insert(s.clone()));
    servers.truncate(3); // what the resolver reads
    search.truncate(32);
    let mut out = String::new();
    if !search.is_empty() {
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    for s in servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if !options.is_empty() {
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const HOST: &str = "# generated\nnameserver 192.0.2.53\nsearch corp.example\noptions edns0\n";

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "shop"}, "spec": spec})).expect("pod")
    }

    fn dns() -> ClusterDns {
        ClusterDns { servers: vec!["10.96.0.10".into()], domain: "cluster.local".into() }
    }

    #[test]
    fn cluster_first() {
        let p = pod(json!({"containers": []}));
        assert_eq!(
            resolv_conf(&p, HOST, Some(&dns())),
            "search shop.svc.cluster.local svc.cluster.local cluster.local corp.example\nnameserver 10.96.0.10\noptions ndots:5\n"
        );
    }

    #[test]
    fn host_network_default_and_no_cluster_dns() {
        let host_like = "search corp.example\nnameserver 192.0.2.53\n";
        let hn = pod(json!({"containers": [], "hostNetwork": true}));
        assert_eq!(resolv_conf(&hn, HOST, Some(&dns())), host_like);
        let hn2 = pod(json!({"containers": [], "hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet"}));
        assert!(resolv_conf(&hn2, HOST, Some(&dns())).contains("nameserver 10.96.0.10"));
        let d = pod(json!({"containers": [], "dnsPolicy": "Default"}));
        assert_eq!(resolv_conf(&d, HOST, Some(&dns())), host_like);
        assert_eq!(resolv_conf(&pod(json!({"containers": []})), HOST, None), host_like);
    }

    #[test]
    fn none_and_dns_config() {
        let p = pod(json!({"containers": [], "dnsPolicy": "None", "dnsConfig": {
            "nameservers": ["1.1.1.1"], "searches": ["a.example"], "options": [{"name": "ndots", "value": "2"}, {"name": "rotate"}]}}));
        assert_eq!(
            resolv_conf(&p, HOST, Some(&dns())),
            "search a.example\nnameserver 1.1.1.1\noptions ndots:2 rotate\n"
        );
        let merged = pod(json!({"containers": [], "dnsConfig": {"options": [{"name": "ndots", "value": "1"}]}}));
        assert!(resolv_conf(&merged, HOST, Some(&dns())).ends_with("options ndots:1\n"));
    }
}
