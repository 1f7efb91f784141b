//! A first end-to-end check of the harness: etcd + API server + kube client.

use ferry_testkit::Cluster;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};

#[tokio::test]
async fn creates_and_reads_a_configmap() -> anyhow::Result<()> {
    let cluster = Cluster::start().await?;
    let client = cluster.client().await?;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let cm: ConfigMap = serde_json::from_value(serde_json::json!({"metadata": {"name": "x"}, "data": {"a": "b"}}))?;
    let created = cms.create(&PostParams::default(), &cm).await?;
    let rv: i64 = created.metadata.resource_version.clone().unwrap_or_default().parse()?;
    assert!(rv > 0);
    let got = cms.get("x").await?;
    assert_eq!(got.data, cm.data);
    assert_eq!(got.metadata.uid, created.metadata.uid);
    Ok(())
}
