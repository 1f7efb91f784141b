//! Image pulls from OCI / Docker registries into containerd's content store, then unpacked
//! into snapshots the same way archive imports are ([`super::image`]).
//!
//! The distribution protocol (token auth, manifests, blobs) is `oci-client`'s. The nodelet
//! picks the linux/<arch> manifest of a multi-platform index itself (containerd needs the
//! exact manifest bytes), streams layers straight into containerd (nothing is held in memory),
//! skips blobs containerd already has, and writes everything under a lease so containerd's
//! garbage collector cannot take half an image.
//!
//! Credentials come from the pod's `imagePullSecrets` (`kubernetes.io/dockerconfigjson` and
//! `kubernetes.io/dockercfg`); every credential whose registry matches is tried in order, as
//! the kubelet does, and anonymous access when none matches. [`RegistryConfig`] maps
//! registries to mirrors and lists registries spoken to over plain HTTP.

use super::containerd::{Containerd, ContainerdError};
use super::image::{
    chain_ids, diff_ids, normalize_reference, sha256_digest, uuid_like, DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX,
    OCI_MANIFEST,
};
use base64::Engine;
use containerd_client::services::v1::CreateRequest as CreateLeaseRequest;
use containerd_client::services::v1::{AbortRequest, DeleteRequest, InfoRequest, WriteAction, WriteContentRequest};
use containerd_client::tonic::Code;
use containerd_client::types::Descriptor;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the nodelet reaches registries.
#[derive(Clone, Debug, Default)]
pub struct RegistryConfig {
    /// Registry host → mirror host (`docker.io` → `127.0.0.1:5000`): pulls of that registry's
    /// images go to the mirror.
    pub mirrors: BTreeMap<String, String>,
    /// Hosts (`host[:port]`, registries or mirrors) spoken to over plain HTTP.
    pub insecure: Vec<String>,
}

impl RegistryConfig {
    /// Parse a `--registry-mirror REGISTRY=MIRROR` flag value.
    pub fn add_mirror(&mut self, flag: &str) -> Result<(), String> {
        let Some((registry, mirror)) = flag.split_once('=') else {
            return Err(format!("--registry-mirror {flag:?}: expected REGISTRY=MIRROR (docker.io=127.0.0.1:5000)"));
        };
        let (registry, mirror) = (host_of(registry), host_of(mirror));
        if registry.is_empty() || mirror.is_empty() {
            return Err(format!("--registry-mirror {flag:?}: empty registry or mirror"));
        }
        self.mirrors.insert(registry, mirror);
        Ok(())
    }
}

/// Errors pulling an image.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The reference cannot be parsed (the pod shows InvalidImageName).
    #[error("Failed to apply default image tag {reference:?}: couldn't parse image name {reference:?}: {detail}")]
    InvalidName {
        /// The image as written in the pod.
        reference: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The registry refused or could not be reached, or sent something unusable.
    #[error("failed to pull image {reference:?}: {detail}")]
    Registry {
        /// The image.
        reference: String,
        /// The cause.
        detail: String,
    },
    /// containerd refused something.
    #[error("failed to pull image: {0}")]
    Containerd(#[from] ContainerdError),
}

/// `https://index.docker.io/v1/` → `docker.io`; `host:5000/path` → `host:5000`.
fn host_of(s: &str) -> String {
    let s = s.trim();
    let s = s.strip_prefix("https://").or_else(|| s.strip_prefix("http://")).unwrap_or(s);
    let host = s.split('/').next().unwrap_or("").to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".into(),
        _ => host,
    }
}

/// Parse an image reference as the pod names it (`busybox`, `host:5000/app:v1`, `x@sha256:…`).
pub fn parse_reference(image: &str) -> Result<Reference, PullError> {
    let invalid = |detail: String| PullError::InvalidName { reference: image.to_string(), detail };
    if image.is_empty() || image.trim() != image {
        return Err(invalid("empty or padded with spaces".into()));
    }
    normalize_reference(image).parse::<Reference>().map_err(|e| invalid(e.to_string()))
}

fn auth_of(entry: &Value) -> Option<RegistryAuth> {
    if let (Some(u), Some(p)) = (entry["username"].as_str(), entry["password"].as_str()) {
        if !u.is_empty() {
            return Some(RegistryAuth::Basic(u.into(), p.into()));
        }
    }
    if let Some(encoded) = entry["auth"].as_str().filter(|a| !a.is_empty()) {
        let decoded = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (u, p) = text.split_once(':')?;
        return Some(RegistryAuth::Basic(u.into(), p.into()));
    }
    entry["registrytoken"].as_str().or(entry["identitytoken"].as_str()).map(|t| RegistryAuth::Bearer(t.into()))
}

/// The credentials pull secrets hold for `registry` (in secret order), as the kubelet
/// reads `.dockerconfigjson` (`{"auths": {HOST: …}}`) and `.dockercfg` (`{HOST: …}`).
/// Secrets of other types and unreadable entries are skipped.
pub fn credentials_for(secrets: &[Secret], registry: &str) -> Vec<RegistryAuth> {
    let want = host_of(registry);
    let mut out = Vec::new();
    for s in secrets {
        let data = s.data.clone().unwrap_or_default();
        let entries = match s.type_.as_deref() {
            Some("kubernetes.io/dockerconfigjson") => data
                .get(".dockerconfigjson")
                .and_then(|b| serde_json::from_slice::<Value>(&b.0).ok())
                .map(|v| v["auths"].clone()),
            Some("kubernetes.io/dockercfg") => {
                data.get(".dockercfg").and_then(|b| serde_json::from_slice::<Value>(&b.0).ok())
            }
            _ => None,
        };
        for (host, entry) in entries.as_ref().and_then(Value::as_object).into_iter().flatten() {
            if host_of(host) == want {
                if let Some(a) = auth_of(entry) {
                    out.push(a);
                }
            }
        }
    }
    out
}

/// The manifest of `index` for linux on this machine's architecture.
fn pick_platform(index: &Value) -> Option<(String, String)> {
    let arch = crate::machine::go_arch(std::env::consts::ARCH);
    index["manifests"]
        .as_array()?
        .iter()
        .find(|m| m["platform"]["os"] == "linux" && m["platform"]["architecture"] == arch)
        .and_then(|m| {
            Some((m["digest"].as_str()?.to_string(), m["mediaType"].as_str().unwrap_or(OCI_MANIFEST).to_string()))
        })
}

const ACCEPT: [&str; 4] = [OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX, DOCKER_LIST];

/// Serializes pulls of the same image, so concurrent pods download it once.
#[derive(Default)]
pub struct PullLocks(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl PullLocks {
    /// The lock for one image name.
    pub fn get(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        g.retain(|_, l| Arc::strong_count(l) > 1);
        g.entry(name.to_string()).or_default().clone()
    }
}

impl Containerd {
    /// Pull `image` (as a pod names it) with the first credential that works (anonymous when
    /// `auths` is empty), store and unpack it; returns the image name containerd holds it under.
    pub async fn pull_image(
        &self,
        image: &str,
        auths: &[RegistryAuth],
        registries: &RegistryConfig,
    ) -> Result<String, PullError> {
        let name = normalize_reference(image);
        let mut reference = parse_reference(image)?;
        if let Some(mirror) = registries.mirrors.get(&host_of(reference.registry())) {
            reference.set_mirror_registry(mirror.clone());
        }
        let client = Client::new(ClientConfig {
            protocol: ClientProtocol::HttpsExcept(registries.insecure.clone()),
            platform_resolver: None,
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(60)),
            user_agent: "ferry-nodelet",
            ..ClientConfig::default()
        });
        let anonymous = [RegistryAuth::Anonymous];
        let auths = if auths.is_empty() { &anonymous[..] } else { auths };
        let mut last = None;
        for auth in auths {
            match self.pull_with(&client, &reference, auth, &name).await {
                Ok(()) => return Ok(name),
                Err(e @ PullError::Registry { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| PullError::Registry { reference: image.into(), detail: "no credentials".into() }))
    }

    async fn pull_with(
        &self,
        client: &Client,
        reference: &Reference,
        auth: &RegistryAuth,
        name: &str,
    ) -> Result<(), PullError> {
        let registry_err = |detail: String| PullError::Registry { reference: name.to_string(), detail };
        let (mut bytes, mut digest) =
            client.pull_manifest_raw(reference, auth, &ACCEPT).await.map_err(|e| registry_err(e.to_string()))?;
        let mut manifest: Value =
            serde_json::from_slice(&bytes).map_err(|e| registry_err(format!("manifest is not JSON: {e}")))?;
        let mut media_type = manifest["mediaType"].as_str().unwrap_or(OCI_MANIFEST).to_string();
        if manifest.get("manifests").is_some() || media_type == OCI_INDEX || media_type == DOCKER_LIST {
            let arch = crate::machine::go_arch(std::env::consts::ARCH);
            let (want, mt) =
                pick_platform(&manifest).ok_or_else(|| registry_err(format!("no manifest for linux/{arch}")))?;
            let by_digest = reference.clone_with_digest(want.clone());
            (bytes, digest) =
                client.pull_manifest_raw(&by_digest, auth, &ACCEPT).await.map_err(|e| registry_err(e.to_string()))?;
            if sha256_digest(&bytes) != want {
                return Err(registry_err(format!("manifest {want} does not match its digest")));
            }
            manifest =
                serde_json::from_slice(&bytes).map_err(|e| registry_err(format!("manifest is not JSON: {e}")))?;
            media_type = manifest["mediaType"].as_str().unwrap_or(&mt).to_string();
        }
        if digest.is_empty() || !digest.starts_with("sha256:") || sha256_digest(&bytes) != digest {
            digest = sha256_digest(&bytes);
        }
        let config_desc =
            descriptor_of(&manifest["config"]).ok_or_else(|| registry_err("manifest without config".into()))?;
        let layers: Vec<OciDescriptor> =
            manifest["layers"].as_array().into_iter().flatten().filter_map(descriptor_of).collect();

        let lease = format!("ferry-pull-{}", uuid_like());
        let mut leases = self.client.leases();
        leases
            .create(self.request_ns(CreateLeaseRequest { id: lease.clone(), labels: HashMap::new() })?)
            .await
            .map_err(|status| ContainerdError::Call { call: "Leases.Create", status })?;
        let result = async {
            let mut config = Vec::new();
            client
                .pull_blob(reference, &config_desc, &mut config)
                .await
                .map_err(|e| registry_err(format!("config {}: {e}", config_desc.digest)))?;
            let config_json: Value =
                serde_json::from_slice(&config).map_err(|e| registry_err(format!("config is not JSON: {e}")))?;
            let diff_ids = diff_ids(&config_json);
            if diff_ids.len() != layers.len() {
                return Err(registry_err(format!("{} layers but {} diff_ids", layers.len(), diff_ids.len())));
            }
            for layer in &layers {
                if self.has_content(&layer.digest).await? {
                    continue;
                }
                let stream = client
                    .pull_blob_stream(reference, layer)
                    .await
                    .map_err(|e| registry_err(format!("layer {}: {e}", layer.digest)))?;
                self.write_blob_stream(&layer.digest, layer.size, stream.stream, &lease).await.map_err(
                    |e| match e {
                        StreamError::Download(d) => registry_err(format!("layer {}: {d}", layer.digest)),
                        StreamError::Containerd(c) => PullError::Containerd(c),
                    },
                )?;
            }
            self.write_blob(&config_desc.digest, &config, HashMap::new(), &lease).await?;
            let mut refs =
                HashMap::from([("containerd.io/gc.ref.content.config".to_string(), config_desc.digest.clone())]);
            for (i, l) in layers.iter().enumerate() {
                refs.insert(format!("containerd.io/gc.ref.content.l.{i}"), l.digest.clone());
            }
            self.write_blob(&digest, &bytes, refs, &lease).await?;
            let descs: Vec<Descriptor> = layers
                .iter()
                .map(|l| Descriptor {
                    media_type: l.media_type.clone(),
                    digest: l.digest.clone(),
                    size: l.size,
                    annotations: HashMap::new(),
                })
                .collect();
            let chains = chain_ids(&diff_ids);
            self.unpack(&descs, &chains, &lease).await?;
            if let Some(top) = chains.last() {
                let key = format!("containerd.io/gc.ref.snapshot.{}", self.snapshotter);
                self.label_content(&config_desc.digest, &key, top).await?;
            }
            let target = Descriptor {
                media_type,
                digest: digest.clone(),
                size: bytes.len() as i64,
                annotations: HashMap::new(),
            };
            self.put_image(name, &target, &lease).await?;
            Ok(())
        }
        .await;
        let _ = leases.delete(self.request_ns(DeleteRequest { id: lease, sync: false })?).await;
        result
    }

    /// Drop a partial content write.
    async fn abort_write(&self, r#ref: &str) {
        if let Ok(req) = self.request_ns(AbortRequest { r#ref: r#ref.to_string() }) {
            let _ = self.client.content().abort(req).await;
        }
    }

    /// Whether the content store has a blob.
    async fn has_content(&self, digest: &str) -> Result<bool, ContainerdError> {
        match self.client.content().info(self.request_ns(InfoRequest { digest: digest.into() })?).await {
            Ok(_) => Ok(true),
            Err(status) if status.code() == Code::NotFound => Ok(false),
            Err(status) => Err(ContainerdError::Call { call: "Content.Info", status }),
        }
    }

    /// Stream a blob into the content store (containerd checks size and digest at commit).
    async fn write_blob_stream(
        &self,
        digest: &str,
        size: i64,
        stream: futures::stream::BoxStream<'static, Result<bytes::Bytes, std::io::Error>>,
        lease: &str,
    ) -> Result<(), StreamError> {
        let r#ref = format!("ferry-pull-{}-{digest}", uuid_like());
        // The download feeds the write RPC through a channel: chunks as they arrive, then the
        // commit; after a download error the channel closes early and the error is kept.
        let (tx, rx) = tokio::sync::mpsc::channel::<WriteContentRequest>(4);
        let message = |action: WriteAction, offset: i64, data: Vec<u8>| WriteContentRequest {
            action: action as i32,
            r#ref: r#ref.clone(),
            total: size,
            expected: digest.to_string(),
            offset,
            data,
            labels: HashMap::new(),
        };
        let feed = async move {
            let mut stream = stream;
            let mut offset = 0i64;
            while let Some(chunk) = stream.next().await {
                let data = chunk.map_err(|e| e.to_string())?;
                let len = data.len() as i64;
                if tx.send(message(WriteAction::Write, offset, data.to_vec())).await.is_err() {
                    return Ok(());
                }
                offset += len;
            }
            let _ = tx.send(message(WriteAction::Commit, offset, Vec::new())).await;
            Ok::<(), String>(())
        };
        let rpc = async {
            let writes = tokio_stream::wrappers::ReceiverStream::new(rx);
            let mut responses = self.client.content().write(self.request(writes, lease)?).await?.into_inner();
            while responses.message().await?.is_some() {}
            Ok::<(), ContainerdError>(())
        };
        let (download, result) = tokio::join!(feed, rpc);
        let download = download.err();
        match (result, download) {
            (_, Some(d)) => {
                self.abort_write(&r#ref).await;
                Err(StreamError::Download(d))
            }
            (Ok(()), None) => Ok(()),
            (Err(ContainerdError::Call { status, .. }), None) if status.code() == Code::AlreadyExists => Ok(()),
            (Err(e), None) => {
                self.abort_write(&r#ref).await;
                Err(StreamError::Containerd(e))
            }
        }
    }
}

enum StreamError {
    Download(String),
    Containerd(ContainerdError),
}

fn descriptor_of(v: &Value) -> Option<OciDescriptor> {
    Some(OciDescriptor {
        media_type: v["mediaType"].as_str().unwrap_or_default().to_string(),
        digest: v["digest"].as_str()?.to_string(),
        size: v["size"].as_i64().unwrap_or(0),
        ..OciDescriptor::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn secret(kind: &str, key: &str, json: Value) -> Secret {
        Secret {
            type_: Some(kind.into()),
            data: Some(BTreeMap::from([(key.to_string(), ByteString(serde_json::to_vec(&json).unwrap_or_default()))])),
            ..Secret::default()
        }
    }

    #[test]
    fn hosts_are_normalized() {
        assert_eq!(host_of("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(host_of("Registry.example.com:5000/path"), "registry.example.com:5000");
        assert_eq!(host_of("http://127.0.0.1:5000"), "127.0.0.1:5000");
    }

    #[test]
    fn pull_secrets_give_matching_credentials_in_order() {
        let b64 = base64::engine::general_purpose::STANDARD.encode("alice:pw1");
        let s1 = secret(
            "kubernetes.io/dockerconfigjson",
            ".dockerconfigjson",
            serde_json::json!({"auths": {
                "https://index.docker.io/v1/": {"auth": b64},
                "other.example:5000": {"username": "x", "password": "y"}
            }}),
        );
        let s2 = secret(
            "kubernetes.io/dockercfg",
            ".dockercfg",
            serde_json::json!({"docker.io": {"username": "bob", "password": "pw2"}}),
        );
        let opaque =
            secret("Opaque", ".dockerconfigjson", serde_json::json!({"auths": {"docker.io": {"auth": "eDp5"}}}));
        let got = credentials_for(&[s1.clone(), opaque, s2], "docker.io");
        assert_eq!(
            got,
            vec![RegistryAuth::Basic("alice".into(), "pw1".into()), RegistryAuth::Basic("bob".into(), "pw2".into())]
        );
        assert_eq!(
            credentials_for(std::slice::from_ref(&s1), "other.example:5000"),
            vec![RegistryAuth::Basic("x".into(), "y".into())]
        );
        assert!(credentials_for(&[s1], "quay.io").is_empty());
    }

    #[test]
    fn references_parse_or_are_invalid() {
        let r = parse_reference("127.0.0.1:5000/ferry/busybox:v1").map_err(|e| e.to_string());
        assert_eq!(r.as_ref().map(|r| r.registry().to_string()), Ok("127.0.0.1:5000".to_string()));
        assert_eq!(r.as_ref().map(|r| r.repository().to_string()), Ok("ferry/busybox".to_string()));
        assert_eq!(parse_reference("busybox").map(|r| r.repository().to_string()).ok(), Some("library/busybox".into()));
        for bad in ["", "UPPER/Case:1", "a b", "x:::y", " busybox"] {
            assert!(matches!(parse_reference(bad), Err(PullError::InvalidName { .. })), "{bad:?}");
        }
    }

    #[test]
    fn mirrors_parse() {
        let mut r = RegistryConfig::default();
        assert!(r.add_mirror("docker.io=http://127.0.0.1:5000").is_ok());
        assert_eq!(r.mirrors.get("docker.io").map(String::as_str), Some("127.0.0.1:5000"));
        assert!(r.add_mirror("nonsense").is_err());
    }

    #[test]
    fn index_picks_this_platform() {
        let arch = crate::machine::go_arch(std::env::consts::ARCH);
        let index = serde_json::json!({"manifests": [
            {"digest": "sha256:win", "platform": {"os": "windows", "architecture": arch}},
            {"digest": "sha256:other", "platform": {"os": "linux", "architecture": "s390x"}},
            {"digest": "sha256:me", "mediaType": DOCKER_MANIFEST, "platform": {"os": "linux", "architecture": arch}},
        ]});
        assert_eq!(pick_platform(&index), Some(("sha256:me".into(), DOCKER_MANIFEST.into())));
        assert_eq!(pick_platform(&serde_json::json!({"manifests": []})), None);
    }
}
