//! Discovery through kube-rs (legacy and aggregated) and the raw documents stock clients read.

use anyhow::Result;
use ferry_testkit::Cluster;
use kube::discovery::{Discovery, Scope};

#[tokio::test]
async fn kube_discovery_sees_every_kind() -> Result<()> {
    let c = Cluster::start().await?;
    let client = c.client().await?;
    for discovery in
        [Discovery::new(client.clone()).run().await?, Discovery::new(client.clone()).run_aggregated().await?]
    {
        let find = |group: &str, kind: &str| {
            discovery
                .groups()
                .filter(|g| g.name() == group)
                .flat_map(|g| g.recommended_resources())
                .find(|(ar, _)| ar.kind == kind)
        };
        for (group, kind, namespaced) in [
            ("", "Pod", true),
            ("", "Namespace", false),
            ("", "Node", false),
            ("", "Service", true),
            ("", "Endpoints", true),
            ("", "ConfigMap", true),
            ("", "Secret", true),
            ("", "Event", true),
            ("", "ServiceAccount", true),
            ("apps", "Deployment", true),
            ("apps", "ReplicaSet", true),
            ("coordination.k8s.io", "Lease", true),
            ("events.k8s.io", "Event", true),
            ("scheduling.k8s.io", "PriorityClass", false),
        ] {
            let (ar, caps) = find(group, kind).unwrap_or_else(|| panic!("{group}/{kind} not discovered"));
            assert_eq!(caps.scope == Scope::Namespaced, namespaced, "{kind}");
            assert!(caps.supports_operation(kube::discovery::verbs::WATCH), "{kind} watchable");
            assert!(!ar.plural.is_empty());
        }
    }
    let (code, v) = c.raw_json("GET", "/version", None, Vec::new()).await?;
    assert_eq!(code, 200);
    for f in
        ["major", "minor", "gitVersion", "gitCommit", "gitTreeState", "buildDate", "goVersion", "compiler", "platform"]
    {
        assert!(v[f].is_string(), "/version lacks {f}: {v}");
    }
    let (_, apps) = c.raw_json("GET", "/apis/apps/v1", None, Vec::new()).await?;
    let scale = apps["resources"].as_array().into_iter().flatten().find(|r| r["name"] == "deployments/scale").cloned();
    let scale = scale.expect("deployments/scale listed");
    assert_eq!(
        (scale["group"].as_str(), scale["version"].as_str(), scale["kind"].as_str()),
        (Some("autoscaling"), Some("v1"), Some("Scale"))
    );
    let (_, api) = c.raw_json("GET", "/api", None, Vec::new()).await?;
    assert_eq!(api["kind"], "APIVersions");
    assert!(api["serverAddressByClientCIDRs"].is_array());
    Ok(())
}
