//! Image import: an OCI image layout or `docker save` archive into containerd's content store,
//! an image record per tag, and the layers unpacked into snapshots (so containers can start
//! from the image without a registry).
//!
//! Everything is written under a containerd lease, so garbage collection cannot take blobs
//! before the image record and the GC labels reference them.

use super::containerd::{Containerd, ContainerdError};
use containerd_client::services::v1::snapshots::{CommitSnapshotRequest, PrepareSnapshotRequest, StatSnapshotRequest};
use containerd_client::services::v1::CreateRequest as CreateLeaseRequest;
use containerd_client::services::v1::{
    ApplyRequest, CreateImageRequest, DeleteRequest, GetImageRequest, Image, Info, UpdateImageRequest, UpdateRequest,
    WriteAction, WriteContentRequest,
};
use containerd_client::tonic::{Code, Request};
use containerd_client::types::Descriptor;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

pub(super) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(super) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(super) const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub(super) const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
const CHUNK: usize = 1 << 20;

/// Errors importing an image archive.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The archive could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The archive.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The archive is not a valid OCI layout or docker-save archive.
    #[error("{0}")]
    Invalid(String),
    /// containerd refused something.
    #[error(transparent)]
    Containerd(#[from] ContainerdError),
}

fn invalid(msg: impl Into<String>) -> ImageError {
    ImageError::Invalid(msg.into())
}

/// One image found in an archive.
#[derive(Debug)]
struct Found {
    /// Full reference (docker.io/library/busybox:latest).
    name: String,
    /// The manifest's descriptor.
    manifest: Descriptor,
}

/// `busybox` → `docker.io/library/busybox:latest`, as containerd and the kubelet name images.
pub fn normalize_reference(reference: &str) -> String {
    let (first, rest) = reference.split_once('/').unwrap_or(("", reference));
    let is_host = !first.is_empty() && (first.contains('.') || first.contains(':') || first == "localhost");
    let mut name = match (is_host, first.is_empty()) {
        (true, _) => reference.to_string(),
        (false, true) => format!("docker.io/library/{rest}"),
        (false, false) => format!("docker.io/{reference}"),
    };
    let last = name.rsplit('/').next().unwrap_or("");
    if !last.contains(':') && !last.contains('@') {
        name.push_str(":latest");
    }
    name
}

pub(super) fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

/// The uncompressed layer digests (`rootfs.diff_ids`) of an image config.
pub fn diff_ids(config: &Value) -> Vec<String> {
    config["rootfs"]["diff_ids"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d.as_str().map(str::to_string))
        .collect()
}

/// The chain IDs of a stack of layer diff IDs (OCI image spec).
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => sha256_digest(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

fn descriptor(media_type: &str, data: &[u8]) -> Descriptor {
    Descriptor {
        media_type: media_type.into(),
        digest: sha256_digest(data),
        size: data.len() as i64,
        annotations: HashMap::new(),
    }
}

/// Read every regular file of a tar archive into memory.
fn read_tar(path: &Path) -> Result<HashMap<String, Vec<u8>>, ImageError> {
    let rd = |source| ImageError::Read { path: path.display().to_string(), source };
    let file = std::fs::File::open(path).map_err(rd)?;
    let mut archive = tar::Archive::new(file);
    let mut files = HashMap::new();
    for entry in archive.entries().map_err(rd)? {
        let mut entry = entry.map_err(rd)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry.path().map_err(rd)?.to_string_lossy().trim_start_matches("./").to_string();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).map_err(rd)?;
        files.insert(name, data);
    }
    Ok(files)
}

fn parse_json(what: &str, data: &[u8]) -> Result<Value, ImageError> {
    serde_json::from_slice(data).map_err(|e| invalid(format!("{what} is not valid JSON: {e}")))
}

/// Blobs by digest plus the images of the archive.
struct Archive {
    blobs: HashMap<String, (String, Vec<u8>)>,
    images: Vec<Found>,
}

fn parse_archive(files: HashMap<String, Vec<u8>>) -> Result<Archive, ImageError> {
    if let Some(index) = files.get("index.json") {
        return parse_oci(&files, &parse_json("index.json", index)?);
    }
    if let Some(manifest) = files.get("manifest.json") {
        return parse_docker(&files, &parse_json("manifest.json", manifest)?);
    }
    Err(invalid("not an image archive: neither index.json (OCI layout) nor manifest.json (docker save) found"))
}

fn oci_blob<'a>(files: &'a HashMap<String, Vec<u8>>, digest: &str) -> Result<&'a Vec<u8>, ImageError> {
    let (algo, hex) = digest.split_once(':').ok_or_else(|| invalid(format!("bad digest {digest:?}")))?;
    let data = files
        .get(&format!("blobs/{algo}/{hex}"))
        .ok_or_else(|| invalid(format!("blob {digest} is missing from the archive")))?;
    if algo == "sha256" && sha256_digest(data) != digest {
        return Err(invalid(format!("blob {digest} does not match its digest")));
    }
    Ok(data)
}

fn parse_oci(files: &HashMap<String, Vec<u8>>, index: &Value) -> Result<Archive, ImageError> {
    let mut blobs = HashMap::new();
    // Every blob of the layout goes in; the manifests reference what they need.
    for (name, data) in files {
        if let Some(hex) = name.strip_prefix("blobs/sha256/") {
            blobs.insert(format!("sha256:{hex}"), (String::new(), data.clone()));
        }
    }
    let mut images = Vec::new();
    for m in index["manifests"].as_array().into_iter().flatten() {
        let annotations = &m["annotations"];
        let name = annotations["io.containerd.image.name"]
            .as_str()
            .or_else(|| annotations["org.opencontainers.image.ref.name"].as_str());
        let Some(name) = name else { continue };
        let mut desc = Descriptor {
            media_type: m["mediaType"].as_str().unwrap_or(OCI_MANIFEST).into(),
            digest: m["digest"].as_str().ok_or_else(|| invalid("index.json: manifest without digest"))?.into(),
            size: m["size"].as_i64().unwrap_or(0),
            annotations: HashMap::new(),
        };
        // An index (multi-platform) inside: pick this platform's manifest.
        if desc.media_type == OCI_INDEX || desc.media_type == DOCKER_LIST {
            let inner = parse_json(&desc.digest, oci_blob(files, &desc.digest)?)?;
            let arch = crate::machine::go_arch(std::env::consts::ARCH);
            let pick = inner["manifests"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|m| m["platform"]["architecture"] == arch && m["platform"]["os"] == "linux")
                .ok_or_else(|| invalid(format!("{name}: no manifest for linux/{arch}")))?;
            desc = Descriptor {
                media_type: pick["mediaType"].as_str().unwrap_or(OCI_MANIFEST).into(),
                digest: pick["digest"].as_str().unwrap_or_default().into(),
                size: pick["size"].as_i64().unwrap_or(0),
                annotations: HashMap::new(),
            };
        }
        oci_blob(files, &desc.digest)?;
        images.push(Found { name: normalize_reference(name), manifest: desc });
    }
    if images.is_empty() {
        return Err(invalid(
            "index.json names no image (no io.containerd.image.name or org.opencontainers.image.ref.name)",
        ));
    }
    Ok(Archive { blobs, images })
}

fn parse_docker(files: &HashMap<String, Vec<u8>>, manifest: &Value) -> Result<Archive, ImageError> {
    let mut blobs = HashMap::new();
    let mut images = Vec::new();
    let entries = manifest.as_array().ok_or_else(|| invalid("manifest.json is not a list"))?;
    for entry in entries {
        let file = |key: &str| -> Result<&Vec<u8>, ImageError> {
            let name = key;
            files.get(name).ok_or_else(|| invalid(format!("manifest.json names {name}, which is missing")))
        };
        let config_path = entry["Config"].as_str().ok_or_else(|| invalid("manifest.json: entry without Config"))?;
        let config = file(config_path)?;
        let config_desc = descriptor(DOCKER_CONFIG, config);
        blobs.insert(config_desc.digest.clone(), (DOCKER_CONFIG.to_string(), config.clone()));
        let mut layers = Vec::new();
        for l in entry["Layers"].as_array().into_iter().flatten() {
            let path = l.as_str().ok_or_else(|| invalid("manifest.json: a layer is not a path"))?;
            let data = file(path)?;
            let media = if data.starts_with(&[0x1f, 0x8b]) { DOCKER_LAYER_GZIP } else { DOCKER_LAYER };
            let d = descriptor(media, data);
            blobs.insert(d.digest.clone(), (media.to_string(), data.clone()));
            layers.push(serde_json::json!({"mediaType": media, "digest": d.digest, "size": d.size}));
        }
        let m = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG, "digest": config_desc.digest, "size": config_desc.size},
            "layers": layers,
        });
        let m_bytes = serde_json::to_vec(&m).map_err(|e| invalid(e.to_string()))?;
        let m_desc = descriptor(DOCKER_MANIFEST, &m_bytes);
        blobs.insert(m_desc.digest.clone(), (DOCKER_MANIFEST.to_string(), m_bytes));
        for tag in entry["RepoTags"].as_array().into_iter().flatten().filter_map(Value::as_str) {
            images.push(Found { name: normalize_reference(tag), manifest: m_desc.clone() });
        }
    }
    if images.is_empty() {
        return Err(invalid("manifest.json names no tagged image (RepoTags is empty)"));
    }
    Ok(Archive { blobs, images })
}

impl Containerd {
    pub(super) fn request<T>(&self, msg: T, lease: &str) -> Result<Request<T>, ContainerdError> {
        let mut req = self.request_ns(msg)?;
        let value = lease.parse().map_err(|_| ContainerdError::Invalid(format!("lease id {lease:?}")))?;
        req.metadata_mut().insert("containerd-lease", value);
        Ok(req)
    }

    /// Import an OCI layout or docker-save archive; returns the image names created or updated.
    pub async fn import_archive(&self, path: &Path) -> Result<Vec<String>, ImageError> {
        let owned = path.to_path_buf();
        let files = tokio::task::spawn_blocking(move || read_tar(&owned))
            .await
            .map_err(|e| invalid(format!("reading the archive: {e}")))??;
        let archive = parse_archive(files)?;
        let lease = format!("ferry-import-{}", uuid_like());
        let mut leases = self.client.leases();
        leases
            .create(self.request_ns(CreateLeaseRequest { id: lease.clone(), labels: HashMap::new() })?)
            .await
            .map_err(|status| ContainerdError::Call { call: "Leases.Create", status })?;
        let result = self.import_with_lease(&archive, &lease).await;
        let _ = leases.delete(self.request_ns(DeleteRequest { id: lease.clone(), sync: false })?).await;
        result
    }

    async fn import_with_lease(&self, archive: &Archive, lease: &str) -> Result<Vec<String>, ImageError> {
        let mut names = Vec::new();
        for img in &archive.images {
            let blob =
                |d: &str| archive.blobs.get(d).map(|(_, b)| b).ok_or_else(|| invalid(format!("blob {d} missing")));
            let manifest = parse_json(&img.manifest.digest, blob(&img.manifest.digest)?)?;
            let config_digest =
                manifest["config"]["digest"].as_str().ok_or_else(|| invalid("manifest without config"))?.to_string();
            let layers: Vec<Descriptor> = manifest["layers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|l| Descriptor {
                    media_type: l["mediaType"].as_str().unwrap_or_default().into(),
                    digest: l["digest"].as_str().unwrap_or_default().into(),
                    size: l["size"].as_i64().unwrap_or(0),
                    annotations: HashMap::new(),
                })
                .collect();
            let config = parse_json(&config_digest, blob(&config_digest)?)?;
            let diff_ids = diff_ids(&config);
            if diff_ids.len() != layers.len() {
                return Err(invalid(format!("{}: {} layers but {} diff_ids", img.name, layers.len(), diff_ids.len())));
            }
            for l in &layers {
                self.write_blob(&l.digest, blob(&l.digest)?, HashMap::new(), lease).await?;
            }
            self.write_blob(&config_digest, blob(&config_digest)?, HashMap::new(), lease).await?;
            let mut refs = HashMap::from([("containerd.io/gc.ref.content.config".to_string(), config_digest.clone())]);
            for (i, l) in layers.iter().enumerate() {
                refs.insert(format!("containerd.io/gc.ref.content.l.{i}"), l.digest.clone());
            }
            self.write_blob(&img.manifest.digest, blob(&img.manifest.digest)?, refs, lease).await?;
            let chains = chain_ids(&diff_ids);
            self.unpack(&layers, &chains, lease).await?;
            if let Some(top) = chains.last() {
                self.label_content(&config_digest, &format!("containerd.io/gc.ref.snapshot.{}", self.snapshotter), top)
                    .await?;
            }
            self.put_image(&img.name, &img.manifest, lease).await?;
            names.push(img.name.clone());
        }
        Ok(names)
    }

    /// Write one blob (idempotent: an existing digest is fine).
    pub(super) async fn write_blob(
        &self,
        digest: &str,
        data: &[u8],
        labels: HashMap<String, String>,
        lease: &str,
    ) -> Result<(), ContainerdError> {
        let r#ref = format!("ferry-{digest}");
        let total = data.len() as i64;
        let mut msgs: Vec<WriteContentRequest> = data
            .chunks(CHUNK)
            .enumerate()
            .map(|(i, chunk)| WriteContentRequest {
                action: WriteAction::Write as i32,
                r#ref: r#ref.clone(),
                total,
                expected: digest.into(),
                offset: (i * CHUNK) as i64,
                data: chunk.to_vec(),
                labels: HashMap::new(),
            })
            .collect();
        msgs.push(WriteContentRequest {
            action: WriteAction::Commit as i32,
            r#ref,
            total,
            expected: digest.into(),
            offset: total,
            data: Vec::new(),
            labels: labels.clone(),
        });
        let stream = futures::stream::iter(msgs);
        let result = async {
            let mut responses = self.client.content().write(self.request(stream, lease)?).await?.into_inner();
            while responses.message().await?.is_some() {}
            Ok::<(), ContainerdError>(())
        }
        .await;
        match result {
            Ok(()) => Ok(()),
            Err(ContainerdError::Call { status, .. }) if status.code() == Code::AlreadyExists => {
                if labels.is_empty() {
                    return Ok(());
                }
                for (k, v) in labels {
                    self.label_content(digest, &k, &v).await?;
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    pub(super) async fn label_content(&self, digest: &str, key: &str, value: &str) -> Result<(), ContainerdError> {
        let req = UpdateRequest {
            info: Some(Info {
                digest: digest.into(),
                labels: HashMap::from([(key.to_string(), value.to_string())]),
                ..Info::default()
            }),
            update_mask: Some(prost_types::FieldMask { paths: vec![format!("labels.{key}")] }),
        };
        self.client
            .content()
            .update(self.request_ns(req)?)
            .await
            .map_err(|status| ContainerdError::Call { call: "Content.Update", status })?;
        Ok(())
    }

    /// Unpack layers into committed snapshots named by chain ID (skipping those present).
    pub(super) async fn unpack(
        &self,
        layers: &[Descriptor],
        chains: &[String],
        lease: &str,
    ) -> Result<(), ContainerdError> {
        let mut snapshots = self.client.snapshots();
        for (i, (layer, chain)) in layers.iter().zip(chains).enumerate() {
            let stat = StatSnapshotRequest { snapshotter: self.snapshotter.clone(), key: chain.clone() };
            if snapshots.stat(self.request_ns(stat)?).await.is_ok() {
                continue;
            }
            let key = format!("extract-{}-{chain}", uuid_like());
            let parent = if i == 0 { String::new() } else { chains[i - 1].clone() };
            let prepared = snapshots
                .prepare(self.request(
                    PrepareSnapshotRequest {
                        snapshotter: self.snapshotter.clone(),
                        key: key.clone(),
                        parent,
                        labels: HashMap::new(),
                    },
                    lease,
                )?)
                .await
                .map_err(|status| ContainerdError::Call { call: "Snapshots.Prepare", status })?
                .into_inner();
            let apply = ApplyRequest {
                diff: Some(layer.clone()),
                mounts: prepared.mounts,
                payloads: HashMap::new(),
                sync_fs: false,
            };
            self.client
                .diff()
                .apply(self.request(apply, lease)?)
                .await
                .map_err(|status| ContainerdError::Call { call: "Diff.Apply", status })?;
            let commit = CommitSnapshotRequest {
                snapshotter: self.snapshotter.clone(),
                name: chain.clone(),
                key,
                labels: HashMap::new(),
            };
            match snapshots.commit(self.request(commit, lease)?).await {
                Ok(_) => {}
                Err(status) if status.code() == Code::AlreadyExists => {}
                Err(status) => return Err(ContainerdError::Call { call: "Snapshots.Commit", status }),
            }
        }
        Ok(())
    }

    pub(super) async fn put_image(&self, name: &str, target: &Descriptor, lease: &str) -> Result<(), ContainerdError> {
        let image = Image { name: name.into(), target: Some(target.clone()), ..Image::default() };
        let mut images = self.client.images();
        match images
            .create(self.request(CreateImageRequest { image: Some(image.clone()), ..Default::default() }, lease)?)
            .await
        {
            Ok(_) => Ok(()),
            Err(status) if status.code() == Code::AlreadyExists => {
                let req = UpdateImageRequest {
                    image: Some(image),
                    update_mask: Some(prost_types::FieldMask { paths: vec!["target".into()] }),
                    ..Default::default()
                };
                images
                    .update(self.request(req, lease)?)
                    .await
                    .map_err(|status| ContainerdError::Call { call: "Images.Update", status })?;
                Ok(())
            }
            Err(status) => Err(ContainerdError::Call { call: "Images.Create", status }),
        }
    }

    /// The manifest digest of an image, if containerd has it.
    pub async fn image_digest(&self, name: &str) -> Result<Option<String>, ContainerdError> {
        match self.client.images().get(self.request_ns(GetImageRequest { name: normalize_reference(name) })?).await {
            Ok(resp) => Ok(resp.into_inner().image.and_then(|i| i.target).map(|t| t.digest)),
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(ContainerdError::Call { call: "Images.Get", status }),
        }
    }

    /// Whether a committed snapshot with this name (a chain ID) exists.
    pub async fn has_snapshot(&self, name: &str) -> Result<bool, ContainerdError> {
        let stat = StatSnapshotRequest { snapshotter: self.snapshotter.clone(), key: name.into() };
        match self.client.snapshots().stat(self.request_ns(stat)?).await {
            Ok(_) => Ok(true),
            Err(status) if status.code() == Code::NotFound => Ok(false),
            Err(status) => Err(ContainerdError::Call { call: "Snapshots.Stat", status }),
        }
    }
}

/// A random hex id for leases and snapshot keys.
pub(super) fn uuid_like() -> String {
    let mut h = Sha256::new();
    h.update(format!("{:?}{:?}", std::time::SystemTime::now(), std::thread::current().id()).as_bytes());
    h.update(std::process::id().to_le_bytes());
    format!("{:x}", h.finalize())[..16].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_normalized() {
        assert_eq!(normalize_reference("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(normalize_reference("ferry/busybox:test"), "docker.io/ferry/busybox:test");
        assert_eq!(normalize_reference("127.0.0.1:5000/bb:1"), "127.0.0.1:5000/bb:1");
        assert_eq!(normalize_reference("localhost/bb"), "localhost/bb:latest");
        assert_eq!(normalize_reference("quay.io/a/b@sha256:00"), "quay.io/a/b@sha256:00");
    }

    #[test]
    fn chain_ids_follow_the_spec() {
        let ids = chain_ids(&["sha256:a".into(), "sha256:b".into()]);
        assert_eq!(ids[0], "sha256:a");
        assert_eq!(ids[1], sha256_digest(b"sha256:a sha256:b"));
    }

    #[test]
    fn bad_archives_are_refused() {
        assert!(matches!(parse_archive(HashMap::new()), Err(ImageError::Invalid(_))));
        let files = HashMap::from([("manifest.json".to_string(), b"[{\"Config\": \"c.json\"}]".to_vec())]);
        let err = parse_archive(files).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("c.json, which is missing"), "{err}");
    }
}
