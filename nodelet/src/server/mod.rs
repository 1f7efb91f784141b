//! The nodelet's HTTPS endpoint (the kubelet's port 10250), which the API server proxies
//! `pods/{name}/log` and `pods/{name}/exec` to.
//!
//! * TLS with the node's serving certificate, issued by the cluster CA together with the node's
//!   client identity (`ferry-apiserver node-credentials`); the API server verifies it against
//!   the CA and the node's address, so no one can pose as the node.
//! * Every caller must present a client certificate signed by the cluster CA whose common name
//!   is one of [`ServerConfig::allowed_users`] (default: the API server's kubelet-client identity,
//!   [`APISERVER_CLIENT_USER`]); anything else gets 401/403 (no certificate: the handshake fails).
//! * `GET /containerLogs/{namespace}/{pod}/{container}` with `follow`, `tailLines`,
//!   `sinceSeconds`, `sinceTime`, `timestamps`, `previous`, `limitBytes` ([`logs`]).
//! * `GET /exec/{namespace}/{pod}/{container}?command=…&stdin&stdout&stderr&tty` upgraded to a
//!   WebSocket with the `v5.channel.k8s.io` or `v4.channel.k8s.io` subprotocol ([`exec`]).
//! * `GET /healthz`.

pub mod exec;
pub mod logs;

use crate::runtime::Runtime;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// The identity the API server presents (`ferry_apiserver::pki::KUBELET_CLIENT_USER`).
pub const APISERVER_CLIENT_USER: &str = "ferry-apiserver-kubelet-client";
/// The kubelet's default port.
pub const DEFAULT_PORT: u16 = 10250;

/// How the endpoint listens and whom it trusts.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Listen address (port 0: any free port; the bound port is published in the Node).
    pub addr: SocketAddr,
    /// Serving certificate chain, PEM.
    pub cert_pem: String,
    /// Its private key, PEM.
    pub key_pem: String,
    /// CA that signs callers' client certificates, PEM.
    pub client_ca_pem: String,
    /// Client certificate common names allowed to call.
    pub allowed_users: Vec<String>,
}

/// Errors starting the endpoint.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Bad TLS material.
    #[error("nodelet server TLS: {0}")]
    Tls(String),
    /// Cannot listen.
    #[error("nodelet server: cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
}

pub(crate) type Body = BoxBody<Bytes, Infallible>;

struct Shared {
    client: kube::Client,
    node_name: String,
    runtime: Arc<dyn Runtime>,
    allowed_users: Vec<String>,
}

fn tls_config(cfg: &ServerConfig) -> Result<rustls::ServerConfig, ServerError> {
    let err = |what: &str| {
        let what = what.to_string();
        move |e: &dyn std::fmt::Display| ServerError::Tls(format!("{what}: {e}"))
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cfg.cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| err("serving certificate")(&e))?;
    if certs.is_empty() {
        return Err(ServerError::Tls("serving certificate: no certificate in PEM".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(cfg.key_pem.as_bytes()).map_err(|e| err("serving key")(&e))?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(cfg.client_ca_pem.as_bytes()) {
        let ca = ca.map_err(|e| err("client CA")(&e))?;
        roots.add(ca).map_err(|e| err("client CA")(&e))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| err("client CA")(&e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err("protocol versions")(&e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| err("serving certificate")(&e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Bind the endpoint; returns the bound address and the serving task (runs until dropped/aborted).
pub async fn start(
    cfg: &ServerConfig,
    client: kube::Client,
    node_name: String,
    runtime: Arc<dyn Runtime>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), ServerError> {
    let acceptor = TlsAcceptor::from(Arc::new(tls_config(cfg)?));
    let listener = TcpListener::bind(cfg.addr).await.map_err(|source| ServerError::Bind { addr: cfg.addr, source })?;
    let addr = listener.local_addr().map_err(|source| ServerError::Bind { addr: cfg.addr, source })?;
    let shared = Arc::new(Shared { client, node_name, runtime, allowed_users: cfg.allowed_users.clone() });
    tracing::info!(%addr, "nodelet HTTPS endpoint listening");
    let task = tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let (acceptor, shared) = (acceptor.clone(), shared.clone());
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
                let user =
                    tls.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(|c| common_name(c.as_ref()));
                let service = hyper::service::service_fn(move |req| {
                    let (shared, user) = (shared.clone(), user.clone());
                    async move { Ok::<_, Infallible>(handle(shared, user, req).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .with_upgrades();
                if let Err(e) = conn.await {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            });
        }
    });
    Ok((addr, task))
}

fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?.as_str().ok()?.to_string();
    Some(cn)
}

/// A plain-text response.
pub(crate) fn text(code: StatusCode, msg: impl Into<String>) -> Response<Body> {
    let mut msg = msg.into();
    if !msg.ends_with('\n') {
        msg.push('\n');
    }
    let mut resp = Response::new(Full::new(Bytes::from(msg)).boxed());
    *resp.status_mut() = code;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

/// A streaming plain-text response fed by `rx`.
pub(crate) fn streaming(rx: tokio::sync::mpsc::Receiver<Bytes>) -> Response<Body> {
    use futures::StreamExt as _;
    let stream = tokio_stream_from(rx).map(|b| Ok::<_, Infallible>(Frame::data(b)));
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

fn tokio_stream_from(mut rx: tokio::sync::mpsc::Receiver<Bytes>) -> impl futures::Stream<Item = Bytes> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

async fn handle(shared: Arc<Shared>, user: Option<String>, req: Request<Incoming>) -> Response<Body> {
    let Some(user) = user else { return text(StatusCode::UNAUTHORIZED, "Unauthorized") };
    if !shared.allowed_users.contains(&user) {
        tracing::warn!(%user, path = %req.uri().path(), "rejected a caller that is not the API server");
        return text(StatusCode::FORBIDDEN, format!("Forbidden (user={user})"));
    }
    let path = req.uri().path().to_string();
    let query: Vec<(String, String)> =
        req.uri().query().map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (req.method(), segments.as_slice()) {
        (&Method::GET, ["healthz"]) => text(StatusCode::OK, "ok"),
        (&Method::GET, ["containerLogs", ns, pod, container]) => {
            let target = match shared.target(ns, pod, container).await {
                Ok(t) => t,
                Err((code, msg)) => return text(code, msg),
            };
            logs_response(&shared, &target, &query).await
        }
        (&Method::GET | &Method::POST, ["exec", ns, pod, container]) => {
            let target = match shared.target(ns, pod, container).await {
                Ok(t) => t,
                Err((code, msg)) => return text(code, msg),
            };
            exec::handle(shared.runtime.clone(), target, &query, req).await
        }
        _ => text(StatusCode::NOT_FOUND, format!("404 page not found: {path}")),
    }
}

/// A container of a pod on this node.
pub(crate) struct Target {
    pub(crate) uid: String,
    pub(crate) pod: String,
    pub(crate) container: String,
}

impl Shared {
    async fn target(&self, ns: &str, pod: &str, container: &str) -> Result<Target, (StatusCode, String)> {
        let api: kube::Api<Pod> = kube::Api::namespaced(self.client.clone(), ns);
        let p = match api.get_opt(pod).await {
            Ok(Some(p)) => p,
            Ok(None) => return Err((StatusCode::NOT_FOUND, format!("pod {ns}/{pod} not found"))),
            Err(e) => return Err((StatusCode::SERVICE_UNAVAILABLE, format!("reading pod {ns}/{pod}: {e}"))),
        };
        let spec = p.spec.unwrap_or_default();
        if spec.node_name.as_deref() != Some(self.node_name.as_str()) {
            return Err((StatusCode::NOT_FOUND, format!("pod {ns}/{pod} is not on node {}", self.node_name)));
        }
        let known = spec.containers.iter().chain(spec.init_containers.iter().flatten()).any(|c| c.name == container);
        if !known {
            return Err((StatusCode::NOT_FOUND, format!("container {container} is not valid for pod {pod}")));
        }
        Ok(Target { uid: p.metadata.uid.unwrap_or_default(), pod: pod.to_string(), container: container.to_string() })
    }
}

pub(crate) fn flag(query: &[(String, String)], name: &str) -> bool {
    query.iter().any(|(k, v)| k == name && matches!(v.as_str(), "" | "1" | "true" | "True" | "TRUE" | "t" | "T"))
}

fn value<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

async fn logs_response(shared: &Shared, target: &Target, query: &[(String, String)]) -> Response<Body> {
    let bad = |m: String| text(StatusCode::BAD_REQUEST, m);
    let number = |name: &str| -> Result<Option<i64>, String> {
        value(query, name).map(|v| v.parse::<i64>().map_err(|_| format!("{name}: invalid value {v:?}"))).transpose()
    };
    let (tail, limit, since_seconds) = match (number("tailLines"), number("limitBytes"), number("sinceSeconds")) {
        (Ok(t), Ok(l), Ok(s)) => (t, l, s),
        (Err(m), _, _) | (_, Err(m), _) | (_, _, Err(m)) => return bad(m),
    };
    let since_time = match value(query, "sinceTime").map(chrono::DateTime::parse_from_rfc3339).transpose() {
        Ok(t) => t.map(|t| t.with_timezone(&chrono::Utc)),
        Err(e) => return bad(format!("sinceTime: {e}")),
    };
    let since = since_seconds.map(|s| chrono::Utc::now() - chrono::Duration::seconds(s.max(0))).or(since_time);
    let opts = logs::LogOptions {
        timestamps: flag(query, "timestamps"),
        since,
        tail_lines: tail.map(|t| t.max(0) as u64),
        limit_bytes: limit.map(|l| l.max(0) as u64),
        follow: flag(query, "follow"),
    };
    let previous = flag(query, "previous");
    let Some(file) = shared.runtime.log_file(&target.uid, &target.container, previous) else {
        let msg = if previous {
            format!("previous terminated container \"{}\" in pod \"{}\" not found", target.container, target.pod)
        } else {
            format!("container \"{}\" in pod \"{}\" is waiting to start", target.container, target.pod)
        };
        return bad(msg);
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let runtime = shared.runtime.clone();
    let (uid, name) = (target.uid.clone(), target.container.clone());
    tokio::spawn(async move {
        let follow = opts.follow && !previous;
        if let Err(e) = logs::stream_file(&file, opts, follow, tx, || {
            let (runtime, uid, name, file) = (runtime.clone(), uid.clone(), name.clone(), file.clone());
            async move {
                // Stop following once the container stopped or a newer instance took over.
                runtime.container_running(&uid, &name).await
                    && runtime.log_file(&uid, &name, false).is_none_or(|f| f == file)
            }
        })
        .await
        {
            tracing::debug!(error = %e, "log stream ended");
        }
    });
    streaming(rx)
}
