//! Images pulled from a real registry (Debian's docker-registry on 127.0.0.1, started by the
//! test) into a private containerd: the busybox test image is pushed with oci-client, pods run
//! from it (directly, through a mirror, and from a multi-platform index), and a missing image
//! shows ErrImagePull then ImagePullBackOff, or ErrImageNeverPull, without disturbing a pod
//! already running on the node.

mod common;

use anyhow::{bail, Context, Result};
use ferry_nodelet::machine::Machine;
use ferry_nodelet::runtime::containerd::{Containerd, NAMESPACE};
use ferry_nodelet::runtime::pods_containerd::ContainerdRuntime;
use ferry_nodelet::runtime::pull::RegistryConfig;
use ferry_nodelet::{Config, Nodelet};
use ferry_testkit::Cluster;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams, PostParams};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

fn digest(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

/// The layer and config of the testkit's OCI archive.
fn read_archive(path: &Path) -> Result<(Vec<u8>, Value)> {
    let mut files = HashMap::new();
    let mut archive = tar::Archive::new(std::fs::File::open(path)?);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let name = entry.path()?.to_string_lossy().into_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data)?;
        files.insert(name, data);
    }
    let blob = |d: &str| files.get(&format!("blobs/sha256/{}", d.trim_start_matches("sha256:"))).cloned();
    let index: Value = serde_json::from_slice(files.get("index.json").context("index.json")?)?;
    let manifest: Value =
        serde_json::from_slice(&blob(index["manifests"][0]["digest"].as_str().context("digest")?).context("m")?)?;
    let config = serde_json::from_slice(&blob(manifest["config"]["digest"].as_str().context("c")?).context("c")?)?;
    let layer = blob(manifest["layers"][0]["digest"].as_str().context("l")?).context("layer")?;
    Ok((layer, config))
}

/// Push one image (layer + config) by the registry API; returns the manifest's (digest, size).
async fn push(client: &Client, reference: &str, layer: &[u8], config: &Value) -> Result<(String, usize)> {
    let r: Reference = reference.parse()?;
    client.auth(&r, &RegistryAuth::Anonymous, RegistryOperation::Push).await?;
    let config = serde_json::to_vec(config)?;
    client.push_blob(&r, layer.to_vec(), &digest(layer)).await?;
    client.push_blob(&r, config.clone(), &digest(&config)).await?;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest(layer), "size": layer.len()}],
    }))?;
    let ct = http::HeaderValue::from_static("application/vnd.oci.image.manifest.v1+json");
    client.push_manifest_raw(&r, manifest.clone(), ct).await?;
    Ok((digest(&manifest), manifest.len()))
}

fn waiting_reason(p: &Pod) -> Option<String> {
    let cs = p.status.as_ref()?.container_statuses.as_ref()?.first()?;
    cs.state.as_ref()?.waiting.as_ref()?.reason.clone()
}

fn waiting_message(p: &Pod) -> String {
    let cs = p.status.as_ref().and_then(|s| s.container_statuses.as_ref()).and_then(|c| c.first());
    cs.and_then(|c| c.state.as_ref()?.waiting.as_ref()?.message.clone()).unwrap_or_default()
}

fn running(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

fn pod(name: &str, image: &str, extra: Value) -> Result<Pod> {
    let mut container = json!({"name": "c", "image": image, "command": ["sh", "-c", "exec sleep 3600"]});
    if let (Some(c), Some(e)) = (container.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"nodeName": "reg-1", "terminationGracePeriodSeconds": 1, "containers": [container]}
    }))?)
}

#[tokio::test(flavor = "multi_thread")]
async fn images_are_pulled_from_a_registry() -> Result<()> {
    ferry_testkit::init();
    let cluster = Cluster::start().await?;
    let client = cluster.client().await?;
    let registry = ferry_testkit::Registry::start().await?;
    let daemon = ferry_testkit::Containerd::start().await?;
    let root = tempfile::tempdir()?;
    let host = registry.host.clone();

    // The busybox image: imported from its archive (for the pod that must not be disturbed)
    // and pushed to the registry under three names, plus a two-platform index.
    let archive = root.path().join("bb.tar");
    ferry_testkit::busybox_image_archive(&archive, "docker.io/ferry/busybox:local")?;
    Containerd::connect(&daemon.socket, NAMESPACE).await?.import_archive(&archive).await?;
    let (layer, image_config) = read_archive(&archive)?;
    let oci = Client::new(ClientConfig { protocol: ClientProtocol::Http, ..ClientConfig::default() });
    push(&oci, &format!("{host}/ferry/busybox:v1"), &layer, &image_config).await.context(registry.log())?;
    push(&oci, &format!("{host}/mirrored/busybox:v2"), &layer, &image_config).await?;
    let arch = ferry_nodelet::machine::go_arch(std::env::consts::ARCH);
    let mut mine = image_config.clone();
    mine["config"]["Env"] = json!(["PATH=/bin", "PICKED=linux-native"]);
    let mut other = image_config.clone();
    other["architecture"] = json!("s390x");
    other["config"]["Env"] = json!(["PATH=/bin", "PICKED=s390x"]);
    let (d_other, s_other) = push(&oci, &format!("{host}/ferry/multi:s390x"), &layer, &other).await?;
    let (d_mine, s_mine) = push(&oci, &format!("{host}/ferry/multi:native"), &layer, &mine).await?;
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d_other, "size": s_other,
             "platform": {"os": "linux", "architecture": "s390x"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d_mine, "size": s_mine,
             "platform": {"os": "linux", "architecture": arch}},
        ],
    }))?;
    let r: Reference = format!("{host}/ferry/multi:v1").parse()?;
    let ct = http::HeaderValue::from_static("application/vnd.oci.image.index.v1+json");
    oci.push_manifest_raw(&r, index, ct).await?;

    // A nodelet whose runtime speaks plain HTTP to the registry and mirrors quay.io to it.
    let u = std::process::id();
    let bridge = ferry_testkit::LinkGuard(format!("fr{:x}", u & 0xffffff));
    let subnet = format!("10.{}.{}.0/24", 150 + (u % 50), (u >> 8) % 256);
    let mut registries = RegistryConfig { insecure: vec![host.clone()], ..RegistryConfig::default() };
    registries.add_mirror(&format!("quay.io={host}")).map_err(anyhow::Error::msg)?;
    let config = common::runtime_config(root.path(), &bridge, &subnet);
    let runtime = Arc::new(
        ContainerdRuntime::new(Containerd::connect(&daemon.socket, NAMESPACE).await?, config)
            .with_client(client.clone())
            .with_registries(registries),
    );
    let mut nc = Config::new("reg-1", root.path().to_path_buf());
    nc.pod_cidr = Some(subnet);
    let machine = Machine::probe(root.path(), Some([127, 0, 0, 1].into()))?;
    let mut nodelet = Nodelet::new(client.clone(), nc, machine, runtime);
    nodelet.resync_period = Duration::from_millis(500);
    let task = tokio::spawn(nodelet.run());
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");

    let result = async {
        // A pod from the imported image runs first; nothing below may disturb it.
        pods.create(&PostParams::default(), &pod("steady", "ferry/busybox:local", json!({}))?).await?;
        let steady = ferry_testkit::wait_pod(&pods, "steady", "Running", running).await?;
        let steady_id = steady.status.as_ref().and_then(|s| s.container_statuses.clone()).unwrap_or_default()[0]
            .container_id
            .clone();

        // Pulled from the registry (tagged: IfNotPresent by default).
        let image = format!("{host}/ferry/busybox:v1");
        pods.create(&PostParams::default(), &pod("pulled", &image, json!({}))?).await?;
        let p = ferry_testkit::wait_pod(&pods, "pulled", "Running", running).await?;
        let spec_policy = p.spec.as_ref().map(|s| s.containers[0].image_pull_policy.clone());
        assert_eq!(spec_policy, Some(Some("IfNotPresent".into())));
        let cs = p.status.as_ref().and_then(|s| s.container_statuses.clone()).unwrap_or_default();
        assert_eq!(cs[0].image_id, digest(&serde_json::to_vec(&image_config)?));

        // Through the mirror: quay.io/mirrored/busybox:v2 comes from the local registry.
        pods.create(&PostParams::default(), &pod("mirrored", "quay.io/mirrored/busybox:v2", json!({}))?).await?;
        ferry_testkit::wait_pod(&pods, "mirrored", "Running", running).await?;

        // A multi-platform index: the linux/<this arch> manifest is the one that runs.
        let check = json!({"command": ["sh", "-c", "test \"$PICKED\" = linux-native"]});
        let mut multi = pod("multi", &format!("{host}/ferry/multi:v1"), check)?;
        if let Some(s) = multi.spec.as_mut() {
            s.restart_policy = Some("Never".into());
        }
        pods.create(&PostParams::default(), &multi).await?;
        ferry_testkit::wait_pod(&pods, "multi", "Succeeded", |p| {
            p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded")
        })
        .await?;

        // A nonexistent image: ErrImagePull with the registry's error, then ImagePullBackOff.
        let missing = format!("{host}/ferry/nonexistent:v1");
        pods.create(&PostParams::default(), &pod("missing", &missing, json!({}))?).await?;
        let p = ferry_testkit::wait_pod(&pods, "missing", "ErrImagePull", |p| {
            waiting_reason(p).as_deref() == Some("ErrImagePull")
        })
        .await?;
        let msg = waiting_message(&p);
        assert!(msg.contains("ferry/nonexistent") && msg.to_lowercase().contains("unknown"), "{msg}");
        let p = ferry_testkit::wait_pod(&pods, "missing", "ImagePullBackOff", |p| {
            waiting_reason(p).as_deref() == Some("ImagePullBackOff")
        })
        .await?;
        assert!(waiting_message(&p).contains("Back-off pulling image"), "{:?}", p.status);
        assert_eq!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Pending"));
        // ... and back to ErrImagePull when the backoff ends and the pull fails again.
        ferry_testkit::wait_pod(&pods, "missing", "ErrImagePull again", |p| {
            waiting_reason(p).as_deref() == Some("ErrImagePull")
        })
        .await?;

        // Policy Never with a missing image: ErrImageNeverPull, no pull attempted.
        let never = json!({"imagePullPolicy": "Never"});
        pods.create(&PostParams::default(), &pod("never", &format!("{host}/ferry/absent:v1"), never)?).await?;
        let p = ferry_testkit::wait_pod(&pods, "never", "ErrImageNeverPull", |p| {
            waiting_reason(p).as_deref() == Some("ErrImageNeverPull")
        })
        .await?;
        assert!(waiting_message(&p).contains("is not present with pull policy of Never"), "{:?}", p.status);

        // An image name that cannot be parsed: InvalidImageName.
        pods.create(&PostParams::default(), &pod("badname", "Bad/Name:x", json!({}))?).await?;
        ferry_testkit::wait_pod(&pods, "badname", "InvalidImageName", |p| {
            waiting_reason(p).as_deref() == Some("InvalidImageName")
        })
        .await?;

        // The pod that was running all along is untouched.
        let s = pods.get("steady").await?;
        let cs = s.status.as_ref().and_then(|s| s.container_statuses.clone()).unwrap_or_default();
        assert!(running(&s) && cs[0].restart_count == 0 && cs[0].container_id == steady_id, "{:?}", s.status);

        // The kubelet's events: Pulling/Pulled for the pulled image, Failed/BackOff for the missing one.
        let events: Api<Event> = Api::namespaced(client.clone(), "default");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let list = events.list(&ListParams::default()).await?;
            let has = |obj: &str, reason: &str| {
                list.items
                    .iter()
                    .any(|e| e.involved_object.name.as_deref() == Some(obj) && e.reason.as_deref() == Some(reason))
            };
            if has("pulled", "Pulling")
                && has("pulled", "Pulled")
                && has("missing", "Failed")
                && has("missing", "BackOff")
            {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                let seen: Vec<_> =
                    list.items.iter().map(|e| (e.involved_object.name.clone(), e.reason.clone())).collect();
                bail!("missing pull events; saw {seen:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok::<(), anyhow::Error>(())
    }
    .await;
    let result =
        result.with_context(|| format!("containerd log:\n{}\nregistry log:\n{}", daemon.log(), registry.log()));
    for p in ["steady", "pulled", "mirrored", "multi", "missing", "never", "badname"] {
        let _ = pods.delete(p, &Default::default()).await;
    }
    // Let the nodelet stop what it runs before containerd goes away.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !pods.list(&ListParams::default()).await.map(|l| l.items.is_empty()).unwrap_or(true)
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    task.abort();
    result
}
