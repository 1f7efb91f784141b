//! The cluster's TLS material: CA, serving certificate, admin identity and admin kubeconfig.
//!
//! [`Pki::load_or_create`] runs once at start. The first start creates `DATA_DIR/pki/`:
//!
//! | file | what |
//! |---|---|
//! | `ca.crt`, `ca.key` | self-signed cluster CA, CN `ferry-ca`, 10 years |
//! | `apiserver.crt`, `apiserver.key` | serving certificate, 1 year |
//! | `admin.crt`, `admin.key` | client certificate `CN=ferry-admin, O=system:masters`, 1 year |
//!
//! and `DATA_DIR/admin.kubeconfig`. Later starts reuse the CA. A serving or admin certificate is
//! issued again only when it is missing, unreadable, not valid for the CA, expires within
//! [`RENEW_BEFORE`], or (serving) does not cover every requested host name; the kubeconfig is
//! rewritten when its server URL, CA or client certificate is out of date. Files are written
//! atomically (temporary file + rename); private keys and the kubeconfig get mode 0600.
//!
//! Keys are ECDSA P-256. The TLS stack is rustls with the `ring` provider, chosen explicitly.

use std::fs;
use std::io;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData as _, SigningKey as _,
};
use rustls::client::danger::ServerCertVerifier as _;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

/// Common name of the cluster CA.
pub const CA_COMMON_NAME: &str = "ferry-ca";
/// User name of the admin client certificate.
pub const ADMIN_USER: &str = "ferry-admin";
/// Group of the admin client certificate (bound to `cluster-admin`, as in Kubernetes).
pub const ADMIN_GROUP: &str = "system:masters";
/// User the API server presents to nodelets (as kube-apiserver's `--kubelet-client-certificate`).
/// Nodelets accept only this identity, signed by the cluster CA, on their HTTPS endpoint.
pub const KUBELET_CLIENT_USER: &str = "ferry-apiserver-kubelet-client";
/// Group of node identities (`system:node:<name>`), as in Kubernetes.
pub const NODES_GROUP: &str = "system:nodes";
/// Name of the cluster and the context in generated kubeconfigs.
pub const KUBECONFIG_CLUSTER: &str = "ferry";
/// A serving or admin certificate that expires within this is issued again at start.
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

const CA_VALIDITY_DAYS: i64 = 3650;
const LEAF_VALIDITY_DAYS: i64 = 365;
/// Names a Kubernetes API server's certificate carries so in-cluster clients can reach it.
const IN_CLUSTER_NAMES: [&str; 4] =
    ["kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"];

/// Errors creating, loading or using the cluster's TLS material.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Reading or writing a file failed.
    #[error("cannot access {}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A file does not hold the PEM certificate or PKCS#8 key expected.
    #[error("invalid PEM data in {}: {reason}", path.display())]
    InvalidPem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The CA certificate exists but its private key does not, so nothing can be signed.
    #[error("{} exists but its private key {} is missing", cert.display(), key.display())]
    MissingCaKey {
        /// The CA certificate.
        cert: PathBuf,
        /// The missing key.
        key: PathBuf,
    },
    /// A requested host is neither an IP address nor a valid DNS name.
    #[error("invalid host name or address {0:?} for the serving certificate")]
    InvalidHost(String),
    /// A certificate subject name is empty.
    #[error("a certificate's common name must not be empty")]
    EmptyCommonName,
    /// Generating a key or certificate failed.
    #[error("cannot generate {what}")]
    Generate {
        /// What was being generated.
        what: String,
        /// The underlying error.
        #[source]
        source: rcgen::Error,
    },
    /// A certificate produced by rcgen could not be re-encoded (a bug).
    #[error("malformed DER in a generated certificate")]
    MalformedDer,
    /// Building a certificate verifier failed.
    #[error("cannot build a certificate verifier")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// Building the rustls server configuration failed.
    #[error("cannot build the TLS server configuration")]
    Tls(#[from] rustls::Error),
    /// Serializing a kubeconfig failed.
    #[error("cannot render kubeconfig {}", path.display())]
    Kubeconfig {
        /// The kubeconfig file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: serde_yaml::Error,
    },
}

/// The cluster CA plus the API server's TLS configuration.
#[derive(Debug)]
pub struct Pki {
    /// `DATA_DIR/pki`.
    pub dir: PathBuf,
    /// `DATA_DIR/admin.kubeconfig`.
    pub admin_kubeconfig: PathBuf,
    /// The CA certificate (PEM), for clients to trust.
    pub ca_cert_pem: String,
    /// Serving configuration: ALPN `h2` and `http/1.1`; clients may present a certificate signed
    /// by the CA (read it with [`crate::auth::user_from_client_cert`]) or none at all.
    pub server_config: Arc<ServerConfig>,
    /// Client configuration for calls to nodelets: trusts the cluster CA (nodelet serving
    /// certificates are issued by it, see [`Pki::issue_node_credentials`]) and presents a
    /// [`KUBELET_CLIENT_USER`] certificate issued at each start (kept in memory only).
    pub kubelet_client_config: Arc<rustls::ClientConfig>,
    ca: Issuer<'static, KeyPair>,
}

/// What a node needs: its client identity for the API, a serving certificate for its HTTPS
/// endpoint and the CA (to trust the API server and to verify the API server's calls).
#[derive(Debug, Clone)]
pub struct NodeCredentials {
    /// `system:node:<name>`.
    pub user: String,
    /// Client certificate (`CN=system:node:<name>, O=system:nodes`), PEM.
    pub client_cert_pem: String,
    /// Its PKCS#8 key, PEM.
    pub client_key_pem: String,
    /// Serving certificate for the node's addresses and names, PEM.
    pub serving_cert_pem: String,
    /// Its key, PEM.
    pub serving_key_pem: String,
    /// The cluster CA, PEM.
    pub ca_cert_pem: String,
}

impl NodeCredentials {
    /// Writes `kubeconfig` (for `server_url`), `ca.crt`, `nodelet.crt` and `nodelet.key` into
    /// `dir` (keys and kubeconfig mode 0600).
    pub fn write(&self, dir: &Path, server_url: &str) -> Result<(), PkiError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        write_kubeconfig(
            &dir.join("kubeconfig"),
            server_url,
            &self.ca_cert_pem,
            &self.client_cert_pem,
            &self.client_key_pem,
            &self.user,
        )?;
        write_atomic(&dir.join("ca.crt"), &self.ca_cert_pem, 0o644)?;
        write_atomic(&dir.join("nodelet.crt"), &self.serving_cert_pem, 0o644)?;
        write_atomic(&dir.join("nodelet.key"), &self.serving_key_pem, 0o600)
    }
}

impl Pki {
    /// Loads the TLS material under `data_dir`, creating whatever is missing or stale (see the
    /// module docs). `hosts` are extra IP addresses or DNS names the serving certificate must
    /// cover (e.g. the bind address; unspecified addresses such as `0.0.0.0` are ignored);
    /// `server_url` goes into `admin.kubeconfig`.
    pub fn load_or_create(data_dir: &Path, hosts: &[String], server_url: &str) -> Result<Pki, PkiError> {
        let dir = data_dir.join("pki");
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(io_err(&dir))?;
        let (ca_cert_pem, ca_key, ca_created) = load_or_create_ca(&dir)?;
        let ca_path = dir.join("ca.crt");
        let ca_der = cert_der(&ca_cert_pem, &ca_path)?;
        let ca = Issuer::from_ca_cert_pem(&ca_cert_pem, ca_key)
            .map_err(|source| PkiError::InvalidPem { path: ca_path, reason: source.to_string() })?;

        let provider = crypto_provider();
        let mut roots = RootCertStore::empty();
        roots.add(ca_der)?;
        let roots = Arc::new(roots);
        let client_verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .allow_unauthenticated()
            .build()?;
        let server_verifier = WebPkiServerVerifier::builder_with_provider(roots, provider.clone()).build()?;
        let renew_at = UnixTime::since_unix_epoch(Duration::from_secs(UnixTime::now().as_secs()) + RENEW_BEFORE);

        let names = serving_names(hosts)?;
        let valid_for_names = |der: &CertificateDer<'_>| {
            names.iter().all(|name| server_verifier.verify_server_cert(der, &[], name, &[], renew_at).is_ok())
        };
        let (server_cert, server_key) = match load_leaf(&dir, "apiserver", ca_created, valid_for_names)? {
            Some(pair) => pair,
            None => {
                let sans = names.iter().map(|n| n.to_str().into_owned()).collect();
                let pair = issue_serving(&ca, "ferry-apiserver", sans)?;
                store_leaf(&dir, "apiserver", &pair)?;
                tracing::info!(dir = %dir.display(), "issued API server serving certificate");
                pair
            }
        };

        let admin_ok = |der: &CertificateDer<'_>| client_verifier.verify_client_cert(der, &[], renew_at).is_ok();
        let (admin_cert, admin_key) = match load_leaf(&dir, "admin", ca_created, admin_ok)? {
            Some(pair) => pair,
            None => {
                let pair = issue_client(&ca, ADMIN_USER, &[ADMIN_GROUP])?;
                store_leaf(&dir, "admin", &pair)?;
                tracing::info!(dir = %dir.display(), "issued admin client certificate");
                pair
            }
        };

        let admin_kubeconfig = data_dir.join("admin.kubeconfig");
        if !kubeconfig_is_current(&admin_kubeconfig, server_url, &ca_cert_pem, &admin_cert) {
            write_kubeconfig(&admin_kubeconfig, server_url, &ca_cert_pem, &admin_cert, &admin_key, ADMIN_USER)?;
            tracing::info!(path = %admin_kubeconfig.display(), server_url, "wrote admin kubeconfig");
        }

        let server_key_path = dir.join("apiserver.key");
        let mut server_config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(
                vec![cert_der(&server_cert, &dir.join("apiserver.crt"))?],
                key_der(&server_key, &server_key_path)?,
            )?;
        server_config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];

        let (kc_cert, kc_key) = issue_client(&ca, KUBELET_CLIENT_USER, &[ADMIN_GROUP])?;
        let mut node_roots = RootCertStore::empty();
        node_roots.add(cert_der(&ca_cert_pem, &dir.join("ca.crt"))?)?;
        let kubelet_client_config = rustls::ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(node_roots)
            .with_client_auth_cert(
                vec![cert_der(&kc_cert, Path::new("<kubelet client certificate>"))?],
                key_der(&kc_key, Path::new("<kubelet client key>"))?,
            )?;
        Ok(Pki {
            dir,
            admin_kubeconfig,
            ca_cert_pem,
            server_config: Arc::new(server_config),
            kubelet_client_config: Arc::new(kubelet_client_config),
            ca,
        })
    }

    /// Issues a client certificate signed by the cluster CA, valid for one year, for user
    /// `common_name` in `groups` (one `O` attribute each, as Kubernetes expects).
    /// Returns `(certificate PEM, PKCS#8 private key PEM)`.
    pub fn issue_client_cert(&self, common_name: &str, groups: &[&str]) -> Result<(String, String), PkiError> {
        issue_client(&self.ca, common_name, groups)
    }

    /// Credentials for node `node`: client certificate `system:node:<node>` in `system:nodes`
    /// and a serving certificate for `hosts` (IP addresses or DNS names; the node name is
    /// added), both signed by the cluster CA and valid for one year.
    pub fn issue_node_credentials(&self, node: &str, hosts: &[String]) -> Result<NodeCredentials, PkiError> {
        node_credentials(&self.ca, &self.ca_cert_pem, node, hosts)
    }
}

/// [`Pki::issue_node_credentials`] with the CA of an existing `DATA_DIR/pki` (for
/// `ferry-apiserver node-credentials`, which must not touch the server's own files).
pub fn issue_node_credentials_from(data_dir: &Path, node: &str, hosts: &[String]) -> Result<NodeCredentials, PkiError> {
    let dir = data_dir.join("pki");
    let (cert_path, key_path) = (dir.join("ca.crt"), dir.join("ca.key"));
    let cert = read_optional(&cert_path)?.ok_or_else(|| PkiError::Io {
        path: cert_path.clone(),
        source: io::Error::new(io::ErrorKind::NotFound, "no cluster CA (start ferry-apiserver once first)"),
    })?;
    let key =
        read_optional(&key_path)?.ok_or(PkiError::MissingCaKey { cert: cert_path.clone(), key: key_path.clone() })?;
    let ca = Issuer::from_ca_cert_pem(&cert, parse_key(&key, &key_path)?)
        .map_err(|source| PkiError::InvalidPem { path: cert_path, reason: source.to_string() })?;
    node_credentials(&ca, &cert, node, hosts)
}

fn node_credentials(
    ca: &Issuer<'_, KeyPair>,
    ca_cert_pem: &str,
    node: &str,
    hosts: &[String],
) -> Result<NodeCredentials, PkiError> {
    {
        if node.is_empty() {
            return Err(PkiError::EmptyCommonName);
        }
        let user = format!("system:node:{node}");
        let (client_cert_pem, client_key_pem) = issue_client(ca, &user, &[NODES_GROUP])?;
        let mut sans: Vec<String> = Vec::new();
        for h in hosts.iter().map(String::as_str).chain([node]) {
            let h = h.trim().trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
            ServerName::try_from(h.clone()).map_err(|_| PkiError::InvalidHost(h.clone()))?;
            if !sans.contains(&h) {
                sans.push(h);
            }
        }
        let (serving_cert_pem, serving_key_pem) = issue_serving(ca, &user, sans)?;
        Ok(NodeCredentials {
            user,
            client_cert_pem,
            client_key_pem,
            serving_cert_pem,
            serving_key_pem,
            ca_cert_pem: ca_cert_pem.to_string(),
        })
    }
}

/// Writes a standard kubeconfig to `path` (mode 0600, atomically): cluster and context `ferry`
/// at `server_url` trusting `ca_pem`, and user `user` authenticating with `cert_pem`/`key_pem`.
pub fn write_kubeconfig(
    path: &Path,
    server_url: &str,
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
    user: &str,
) -> Result<(), PkiError> {
    let b64 = |pem: &str| base64::engine::general_purpose::STANDARD.encode(pem);
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": KUBECONFIG_CLUSTER,
            "cluster": { "server": server_url, "certificate-authority-data": b64(ca_pem) },
        }],
        "users": [{
            "name": user,
            "user": {
                "client-certificate-data": b64(cert_pem),
                "client-key-data": b64(key_pem),
            },
        }],
        "contexts": [{
            "name": KUBECONFIG_CLUSTER,
            "context": { "cluster": KUBECONFIG_CLUSTER, "user": user },
        }],
        "current-context": KUBECONFIG_CLUSTER,
        "preferences": {},
    });
    let yaml =
        serde_yaml::to_string(&config).map_err(|source| PkiError::Kubeconfig { path: path.to_owned(), source })?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    write_atomic(path, &yaml, 0o600)
}

/// Whether the kubeconfig at `path` already points at `server_url` with this CA and client cert.
fn kubeconfig_is_current(path: &Path, server_url: &str, ca_pem: &str, cert_pem: &str) -> bool {
    let Ok(text) = fs::read_to_string(path) else {
        return false;
    };
    let Ok(config) = serde_yaml::from_str::<serde_yaml::Value>(&text) else {
        return false;
    };
    let b64 = |pem: &str| base64::engine::general_purpose::STANDARD.encode(pem);
    let cluster = &config["clusters"][0]["cluster"];
    cluster["server"].as_str() == Some(server_url)
        && cluster["certificate-authority-data"].as_str() == Some(b64(ca_pem).as_str())
        && config["users"][0]["user"]["client-certificate-data"].as_str() == Some(b64(cert_pem).as_str())
}

/// Loads `ca.crt`/`ca.key`, or creates both when neither exists (also when only the key does:
/// that is a first start interrupted before anything was signed). The flag says "created".
fn load_or_create_ca(dir: &Path) -> Result<(String, KeyPair, bool), PkiError> {
    let (cert_path, key_path) = (dir.join("ca.crt"), dir.join("ca.key"));
    match (read_optional(&cert_path)?, read_optional(&key_path)?) {
        (Some(cert), Some(key)) => Ok((cert, parse_key(&key, &key_path)?, false)),
        (Some(_), None) => Err(PkiError::MissingCaKey { cert: cert_path, key: key_path }),
        (None, _) => {
            let key = generate_key("CA key")?;
            let mut params = CertificateParams::default();
            params.distinguished_name = DistinguishedName::new();
            params.distinguished_name.push(DnType::CommonName, CA_COMMON_NAME);
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages =
                vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
            set_validity(&mut params, CA_VALIDITY_DAYS);
            let cert = params.self_signed(&key).map_err(gen_err("CA certificate"))?;
            // Key first: a crash in between leaves a key without a certificate, which is redone.
            write_atomic(&key_path, &key.serialize_pem(), 0o600)?;
            write_atomic(&cert_path, &cert.pem(), 0o644)?;
            tracing::info!(dir = %dir.display(), "created cluster CA");
            Ok((cert.pem(), key, true))
        }
    }
}

/// Loads `NAME.crt`/`NAME.key` if both exist, match each other and pass `valid`; `None` means
/// "issue a new pair". After a new CA (`ca_created`) existing pairs are never reused.
fn load_leaf(
    dir: &Path,
    name: &str,
    ca_created: bool,
    valid: impl Fn(&CertificateDer<'_>) -> bool,
) -> Result<Option<(String, String)>, PkiError> {
    if ca_created {
        return Ok(None);
    }
    let (cert_path, key_path) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
    let (Some(cert), Some(key)) = (read_optional(&cert_path)?, read_optional(&key_path)?) else {
        return Ok(None);
    };
    let usable = match (cert_der(&cert, &cert_path), KeyPair::from_pem(&key)) {
        (Ok(der), Ok(pair)) => {
            let key_matches = x509_parser::parse_x509_certificate(&der)
                .is_ok_and(|(_, x)| x.public_key().raw == pair.subject_public_key_info());
            key_matches && valid(&der)
        }
        _ => false,
    };
    if !usable {
        tracing::warn!(cert = %cert_path.display(), "certificate is stale or invalid; issuing a new one");
    }
    Ok(usable.then_some((cert, key)))
}

fn store_leaf(dir: &Path, name: &str, (cert, key): &(String, String)) -> Result<(), PkiError> {
    write_atomic(&dir.join(format!("{name}.key")), key, 0o600)?;
    write_atomic(&dir.join(format!("{name}.crt")), cert, 0o644)
}

/// The serving certificate's names: loopback, the machine's host name, the in-cluster
/// `kubernetes.default…` names and `hosts`, deduplicated.
fn serving_names(hosts: &[String]) -> Result<Vec<ServerName<'static>>, PkiError> {
    let mut names: Vec<ServerName<'static>> = ["localhost", "127.0.0.1", "::1"]
        .into_iter()
        .chain(IN_CLUSTER_NAMES)
        .filter_map(|n| ServerName::try_from(n).ok())
        .collect();
    names.extend(machine_hostname().and_then(|h| ServerName::try_from(h).ok()));
    for host in hosts {
        let host = host.trim().trim_start_matches('[').trim_end_matches(']');
        let name =
            ServerName::try_from(host.to_ascii_lowercase()).map_err(|_| PkiError::InvalidHost(host.to_owned()))?;
        if !matches!(&name, ServerName::IpAddress(ip) if std::net::IpAddr::from(*ip).is_unspecified()) {
            names.push(name);
        }
    }
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.to_str().into_owned()));
    Ok(names)
}

fn machine_hostname() -> Option<String> {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| fs::read_to_string(p).ok())
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
}

fn issue_serving(ca: &Issuer<'_, KeyPair>, cn: &str, sans: Vec<String>) -> Result<(String, String), PkiError> {
    let key = generate_key("serving key")?;
    let mut params = CertificateParams::new(sans).map_err(gen_err("serving certificate"))?;
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, LEAF_VALIDITY_DAYS);
    let cert = params.signed_by(&key, ca).map_err(gen_err("serving certificate"))?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn issue_client(ca: &Issuer<'_, KeyPair>, common_name: &str, groups: &[&str]) -> Result<(String, String), PkiError> {
    if common_name.is_empty() {
        return Err(PkiError::EmptyCommonName);
    }
    let what = || format!("client certificate for {common_name:?}");
    let key = generate_key("client key")?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, LEAF_VALIDITY_DAYS);
    let cert = params.signed_by(&key, ca).map_err(|source| PkiError::Generate { what: what(), source })?;
    // rcgen keeps one value per attribute type, but Kubernetes reads every `O` as a group:
    // put the subject in ourselves and sign again.
    let der = replace_subject(cert.der(), &subject_der(common_name, groups), ca.key()).map_err(|err| match err {
        DerError::Malformed => PkiError::MalformedDer,
        DerError::Sign(source) => PkiError::Generate { what: what(), source },
    })?;
    Ok((certificate_pem(&der), key.serialize_pem()))
}

fn certificate_pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem + "-----END CERTIFICATE-----\n"
}

/// DER `Name` with one RDN per group (`O`, OID 2.5.4.10) followed by the common name (`CN`,
/// OID 2.5.4.3), each a UTF8String, in the order Go's `pkix.Name` writes them.
fn subject_der(common_name: &str, groups: &[&str]) -> Vec<u8> {
    let rdn = |oid_last: u8, value: &str| {
        let oid = der_tlv(0x06, &[0x55, 0x04, oid_last]);
        let attr = der_tlv(0x30, &[oid, der_tlv(0x0c, value.as_bytes())].concat());
        der_tlv(0x31, &attr)
    };
    let rdns: Vec<u8> =
        groups.iter().map(|g| rdn(0x0a, g)).chain([rdn(0x03, common_name)]).collect::<Vec<_>>().concat();
    der_tlv(0x30, &rdns)
}

enum DerError {
    Malformed,
    Sign(rcgen::Error),
}

/// Returns `cert` with its subject replaced by `subject` (DER `Name`), re-signed with `key`
/// using the signature algorithm `cert` already names.
fn replace_subject(cert: &[u8], subject: &[u8], key: &KeyPair) -> Result<Vec<u8>, DerError> {
    let (header, total) = der_header(cert).ok_or(DerError::Malformed)?;
    let body = cert.get(header..total).ok_or(DerError::Malformed)?;
    let (tbs_header, tbs_total) = der_header(body).ok_or(DerError::Malformed)?;
    let (tbs, rest) = body.split_at_checked(tbs_total).ok_or(DerError::Malformed)?;
    let alg_len = der_header(rest).ok_or(DerError::Malformed)?.1;
    let alg = rest.get(..alg_len).ok_or(DerError::Malformed)?;
    // TBSCertificate: [0] version, serial, signature, issuer, validity, subject, …
    let mut start = tbs_header;
    for _ in 0..5 {
        start += der_header(tbs.get(start..).ok_or(DerError::Malformed)?).ok_or(DerError::Malformed)?.1;
    }
    let end = start + der_header(tbs.get(start..).ok_or(DerError::Malformed)?).ok_or(DerError::Malformed)?.1;
    let (head, tail) =
        (tbs.get(tbs_header..start).ok_or(DerError::Malformed)?, tbs.get(end..).ok_or(DerError::Malformed)?);
    let new_tbs = der_tlv(0x30, &[head, subject, tail].concat());
    let signature = key.sign(&new_tbs).map_err(DerError::Sign)?;
    let bits = der_tlv(0x03, &[&[0][..], &signature].concat());
    Ok(der_tlv(0x30, &[new_tbs.as_slice(), alg, &bits].concat()))
}

/// `(header length, total length)` of the DER element at the start of `der`.
fn der_header(der: &[u8]) -> Option<(usize, usize)> {
    let first = usize::from(*der.get(1)?);
    let (header, len) = if first < 0x80 {
        (2, first)
    } else {
        let n = first & 0x7f;
        let bytes = der.get(2..2 + n).filter(|_| n <= 4)?;
        (2 + n, bytes.iter().fold(0, |acc, b| acc << 8 | usize::from(*b)))
    };
    let total = header.checked_add(len)?;
    (total <= der.len()).then_some((header, total))
}

/// A DER element with `tag` and `content`.
fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let len = content.len().to_be_bytes();
    let skip = len.iter().take_while(|b| **b == 0).count();
    let mut out = vec![tag];
    match content.len() {
        n if n < 0x80 => out.push(len[len.len() - 1]),
        _ => {
            out.push(0x80 | (len.len() - skip) as u8);
            out.extend_from_slice(&len[skip..]);
        }
    }
    out.extend_from_slice(content);
    out
}

/// Validity from yesterday (clock skew) to `days` from now.
fn set_validity(params: &mut CertificateParams, days: i64) {
    let ymd = |d: chrono::NaiveDate| {
        use chrono::Datelike as _;
        // Month and day come from a valid date, so the conversions and rcgen's checks hold.
        rcgen::date_time_ymd(d.year(), d.month() as u8, d.day() as u8)
    };
    let today = chrono::Utc::now().date_naive();
    params.not_before = ymd(today - chrono::Days::new(1));
    params.not_after = ymd(today + chrono::Days::new(days.unsigned_abs()));
}

fn generate_key(what: &str) -> Result<KeyPair, PkiError> {
    KeyPair::generate().map_err(gen_err(what))
}

fn gen_err(what: &str) -> impl FnOnce(rcgen::Error) -> PkiError + '_ {
    move |source| PkiError::Generate { what: what.to_owned(), source }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> PkiError + '_ {
    move |source| PkiError::Io { path: path.to_owned(), source }
}

fn read_optional(path: &Path) -> Result<Option<String>, PkiError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(PkiError::Io { path: path.to_owned(), source }),
    }
}

/// Writes `contents` to a temporary file with `mode`, then renames it over `path`.
fn write_atomic(path: &Path, contents: &str, mode: u32) -> Result<(), PkiError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp).map_err(io_err(&tmp))?;
    file.write_all(contents.as_bytes()).and_then(|()| file.sync_all()).map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))
}

fn parse_key(pem: &str, path: &Path) -> Result<KeyPair, PkiError> {
    KeyPair::from_pem(pem).map_err(|err| PkiError::InvalidPem { path: path.to_owned(), reason: err.to_string() })
}

/// The first certificate in `pem`.
fn cert_der(pem: &str, path: &Path) -> Result<CertificateDer<'static>, PkiError> {
    let invalid = |reason: String| PkiError::InvalidPem { path: path.to_owned(), reason };
    rustls_pemfile::certs(&mut pem.as_bytes())
        .next()
        .ok_or_else(|| invalid("no CERTIFICATE block".into()))?
        .map_err(|err| invalid(err.to_string()))
}

fn key_der(pem: &str, path: &Path) -> Result<PrivateKeyDer<'static>, PkiError> {
    Ok(PrivatePkcs8KeyDer::from(parse_key(pem, path)?.serialize_der()).into())
}

/// The `ring` provider, as used for every TLS configuration in this module.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{user_from_client_cert, UserInfo};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    fn load(dir: &Path, url: &str) -> Pki {
        Pki::load_or_create(dir, &["10.1.2.3".into(), "0.0.0.0".into()], url).unwrap()
    }

    fn der_of(pem: &str) -> CertificateDer<'static> {
        rustls_pemfile::certs(&mut pem.as_bytes()).next().unwrap().unwrap()
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn creates_then_reuses_files() {
        let tmp = tempfile::tempdir().unwrap();
        let first = load(tmp.path(), "https://127.0.0.1:6443");
        for file in ["ca", "apiserver", "admin"] {
            assert_eq!(mode(&first.dir.join(format!("{file}.key"))), 0o600);
            assert!(first.dir.join(format!("{file}.crt")).is_file());
        }
        assert_eq!(mode(&first.admin_kubeconfig), 0o600);
        let serving = fs::read_to_string(first.dir.join("apiserver.crt")).unwrap();
        let kubeconfig = fs::read_to_string(&first.admin_kubeconfig).unwrap();

        let second = load(tmp.path(), "https://127.0.0.1:6443");
        assert_eq!(second.ca_cert_pem, first.ca_cert_pem);
        assert_eq!(fs::read_to_string(second.dir.join("apiserver.crt")).unwrap(), serving);
        assert_eq!(fs::read_to_string(&second.admin_kubeconfig).unwrap(), kubeconfig);

        // A missing serving certificate is issued again by the same CA.
        fs::remove_file(first.dir.join("apiserver.crt")).unwrap();
        let third = load(tmp.path(), "https://127.0.0.1:6443");
        assert_eq!(third.ca_cert_pem, first.ca_cert_pem);
        assert_ne!(fs::read_to_string(third.dir.join("apiserver.crt")).unwrap(), serving);

        // A new host name gets a new serving certificate.
        Pki::load_or_create(tmp.path(), &["api.example.test".into()], "https://x").unwrap();
        let pem = fs::read_to_string(first.dir.join("apiserver.crt")).unwrap();
        let der = der_of(&pem);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let sans = format!("{:?}", cert.subject_alternative_name().unwrap());
        assert!(sans.contains("api.example.test"), "{sans}");
    }

    #[test]
    fn ca_certificate_without_key_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let pki = load(tmp.path(), "https://127.0.0.1:6443");
        fs::remove_file(pki.dir.join("ca.key")).unwrap();
        let err = Pki::load_or_create(tmp.path(), &[], "https://x").unwrap_err();
        assert!(matches!(err, PkiError::MissingCaKey { .. }), "{err}");
    }

    #[test]
    fn invalid_host_is_rejected() {
        let tmp = tempfile::tempdir().unwrap();
        let err = Pki::load_or_create(tmp.path(), &["bad host!".into()], "https://x").unwrap_err();
        assert!(matches!(err, PkiError::InvalidHost(_)), "{err}");
    }

    #[test]
    fn kubeconfig_has_expected_fields_and_follows_server_url() {
        let tmp = tempfile::tempdir().unwrap();
        let pki = load(tmp.path(), "https://127.0.0.1:6443");
        let read = || -> serde_yaml::Value {
            serde_yaml::from_str(&fs::read_to_string(&pki.admin_kubeconfig).unwrap()).unwrap()
        };
        let config = read();
        let b64 = base64::engine::general_purpose::STANDARD;
        assert_eq!(config["kind"].as_str(), Some("Config"));
        assert_eq!(config["current-context"].as_str(), Some("ferry"));
        assert_eq!(config["contexts"][0]["name"].as_str(), Some("ferry"));
        assert_eq!(config["contexts"][0]["context"]["user"].as_str(), Some(ADMIN_USER));
        assert_eq!(config["users"][0]["name"].as_str(), Some(ADMIN_USER));
        let cluster = &config["clusters"][0];
        assert_eq!(cluster["name"].as_str(), Some("ferry"));
        assert_eq!(cluster["cluster"]["server"].as_str(), Some("https://127.0.0.1:6443"));
        let ca = b64.decode(cluster["cluster"]["certificate-authority-data"].as_str().unwrap()).unwrap();
        assert_eq!(String::from_utf8(ca).unwrap(), pki.ca_cert_pem);
        let user = &config["users"][0]["user"];
        let cert = b64.decode(user["client-certificate-data"].as_str().unwrap()).unwrap();
        let user_info = user_from_client_cert(&der_of(std::str::from_utf8(&cert).unwrap()));
        assert_eq!(user_info.map(|u| u.groups), Some(vec![ADMIN_GROUP.to_owned(), "system:authenticated".to_owned()]));
        let key = b64.decode(user["client-key-data"].as_str().unwrap()).unwrap();
        assert!(String::from_utf8(key).unwrap().contains("PRIVATE KEY"));

        drop(load(tmp.path(), "https://10.1.2.3:7443"));
        let config = read();
        assert_eq!(config["clusters"][0]["cluster"]["server"].as_str(), Some("https://10.1.2.3:7443"));
        // Same admin credentials as before.
        assert_eq!(config["users"], read()["users"]);
    }

    #[test]
    fn issued_client_certs_carry_user_and_groups() {
        let tmp = tempfile::tempdir().unwrap();
        let pki = load(tmp.path(), "https://127.0.0.1:6443");
        let long = "long-group-name-".repeat(20);
        let cases: [(&str, Vec<&str>); 3] =
            [("alice", vec![]), ("system:node:n1", vec!["system:nodes"]), ("bob", vec!["dev", "ops", &long])];
        for (name, groups) in cases {
            let (cert, key) = pki.issue_client_cert(name, &groups).unwrap();
            assert!(KeyPair::from_pem(&key).is_ok());
            let user = user_from_client_cert(&der_of(&cert)).unwrap();
            let mut expected: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
            expected.push("system:authenticated".into());
            assert_eq!(user, UserInfo { name: name.into(), uid: String::new(), groups: expected });
        }
        assert!(matches!(pki.issue_client_cert("", &[]), Err(PkiError::EmptyCommonName)));
    }

    /// Runs a TLS handshake over an in-memory pipe; returns the user the server sees (if any)
    /// and the negotiated ALPN protocol.
    async fn handshake(
        pki: &Pki,
        server_name: &str,
        client_cert: Option<(String, String)>,
    ) -> (Option<UserInfo>, Option<Vec<u8>>) {
        let mut roots = RootCertStore::empty();
        roots.add(der_of(&pki.ca_cert_pem)).unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let mut config = match client_cert {
            Some((cert, key)) => {
                builder.with_client_auth_cert(vec![der_of(&cert)], key_der(&key, Path::new("k")).unwrap()).unwrap()
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let acceptor = tokio_rustls::TlsAcceptor::from(pki.server_config.clone());
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let name = ServerName::try_from(server_name.to_owned()).unwrap();
        let server = tokio::spawn(async move {
            let mut tls = acceptor.accept(server_io).await.unwrap();
            let mut buf = [0; 4];
            tls.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"ping");
            let (_, conn) = tls.get_ref();
            let user = conn.peer_certificates().and_then(|certs| user_from_client_cert(certs.first()?));
            (user, conn.alpn_protocol().map(<[u8]>::to_vec))
        });
        let mut tls = connector.connect(name, client_io).await.unwrap();
        tls.write_all(b"ping").await.unwrap();
        tls.flush().await.unwrap();
        let seen = server.await.unwrap();
        drop(tls);
        seen
    }

    #[tokio::test]
    async fn tls_handshake_with_and_without_client_cert() {
        let tmp = tempfile::tempdir().unwrap();
        let pki = load(tmp.path(), "https://127.0.0.1:6443");
        let admin = (
            fs::read_to_string(pki.dir.join("admin.crt")).unwrap(),
            fs::read_to_string(pki.dir.join("admin.key")).unwrap(),
        );
        let (user, alpn) = handshake(&pki, "localhost", Some(admin)).await;
        assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
        let user = user.unwrap();
        assert_eq!(user.name, ADMIN_USER);
        assert_eq!(user.groups, [ADMIN_GROUP, "system:authenticated"]);

        let issued = pki.issue_client_cert("carol", &["a", "b"]).unwrap();
        let (user, _) = handshake(&pki, "10.1.2.3", Some(issued)).await;
        assert_eq!(user.unwrap().groups, ["a", "b", "system:authenticated"]);

        let (user, _) = handshake(&pki, "::1", None).await;
        assert_eq!(user, None);
    }

    #[test]
    fn der_lengths_round_trip() {
        for len in [0, 1, 127, 128, 255, 256, 70_000] {
            let tlv = der_tlv(0x04, &vec![7; len]);
            assert_eq!(der_header(&tlv).map(|(h, t)| t - h), Some(len));
            assert_eq!(der_header(&tlv).map(|(_, t)| t), Some(tlv.len()));
        }
        assert_eq!(der_header(&[0x30, 0x82, 0x01]), None);
        assert_eq!(der_header(&[0x30, 0x05, 0x00]), None);
    }
}
