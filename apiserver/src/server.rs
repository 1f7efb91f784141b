//! The HTTPS server: TLS (rustls) with client certificates, authentication, routing, body
//! limits, metrics, health endpoints and graceful shutdown.

use crate::auth::{bearer_token, TokenAuthenticator, UserInfo};
use crate::cache::WatchCache;
use crate::config::Config;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::pki::{Pki, PkiError};
use crate::request::{route, Query, Route};
use crate::rest::{self, Api, Body as ReplyBody, Reply};
use crate::storage::{StorageError, Store};
use crate::{discovery, request};
use bytes::Bytes;
use ferry_api::{ResourceTable, Subresource};
use futures::StreamExt;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// TLS material could not be loaded or created.
    #[error("pki: {0}")]
    Pki(#[from] PkiError),
    /// The token file is invalid.
    #[error("token file: {0}")]
    Tokens(#[from] crate::auth::AuthError),
    /// etcd could not be reached.
    #[error("etcd: {0}")]
    Storage(#[from] StorageError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The default namespaces could not be created.
    #[error("bootstrap: {0}")]
    Bootstrap(#[from] ApiError),
}

type Body = BoxBody<Bytes, Infallible>;

/// A running API server.
pub struct Running {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// Path of the admin kubeconfig.
    pub admin_kubeconfig: std::path::PathBuf,
    /// The cluster CA certificate (PEM).
    pub ca_cert_pem: String,
    /// The PKI, to issue more client certificates.
    pub pki: Arc<Pki>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stop accepting, let in-flight requests finish (up to the grace period), end watches.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
    }

    /// Wait until the server stops by itself (it doesn't, unless the token is cancelled).
    pub fn token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

struct Shared {
    api: Api,
    node_proxy: rest::proxy::NodeProxy,
    tokens: TokenAuthenticator,
    max_body: usize,
    server_address: String,
}

/// Start the API server: connect to etcd, load TLS material, bootstrap, listen.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let addr = SocketAddr::new(config.bind_address, config.secure_port);
    let listener = TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind { addr, source })?;
    let host = if addr.ip().is_unspecified() { "127.0.0.1".to_string() } else { addr.ip().to_string() };
    let server_url = if addr.is_ipv6() {
        format!("https://[{host}]:{}", addr.port())
    } else {
        format!("https://{host}:{}", addr.port())
    };
    let mut hosts = config.extra_sans.clone();
    hosts.push(addr.ip().to_string());
    let pki = Arc::new(Pki::load_or_create(&config.data_dir, &hosts, &server_url)?);
    let tokens = match &config.token_auth_file {
        Some(path) => TokenAuthenticator::from_file(path)?,
        None => TokenAuthenticator::empty(),
    };

    let store = Store::connect(&config.etcd_servers).await?;
    let table = ResourceTable::builtin();
    let shutdown = CancellationToken::new();
    let cache = WatchCache::new(&table, store.clone(), config.watch_history);
    let mut tasks = vec![tokio::spawn(cache.clone().run(shutdown.clone()))];
    let api = Api {
        table,
        store: store.clone(),
        cache: cache.clone(),
        metrics: Arc::new(Metrics::new()),
        options: config.rest.clone(),
        shutdown: shutdown.clone(),
    };
    // etcd may still be starting (a supervisor starts both at once): retry for a while.
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Err(e) = bootstrap(&api).await {
        if Instant::now() > deadline || (e.code != 503 && e.code != 504) {
            shutdown.cancel();
            return Err(e.into());
        }
        tracing::warn!(error = %e, "cannot bootstrap yet; waiting for etcd");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let advertise = config.advertise_address.unwrap_or(if addr.ip().is_unspecified() {
        std::net::IpAddr::from([127, 0, 0, 1])
    } else {
        addr.ip()
    });
    if let Err(e) = api.ensure_kubernetes_service(advertise, addr.port()).await {
        tracing::warn!(error = %e, "could not create the kubernetes Service; it is retried on the next start");
    }
    if let Some(every) = config.compaction_interval {
        tasks.push(tokio::spawn(compact_loop(store, cache, every, shutdown.clone())));
    }
    let shared = Arc::new(Shared {
        api,
        node_proxy: rest::proxy::NodeProxy { tls: pki.kubelet_client_config.clone() },
        tokens,
        max_body: config.max_request_bytes,
        server_address: format!("{}:{}", host, addr.port()),
    });
    let acceptor = TlsAcceptor::from(pki.server_config.clone());
    tasks.push(tokio::spawn(serve(listener, acceptor, shared, shutdown.clone(), config.shutdown_grace)));
    tracing::info!(%addr, kubeconfig = %pki.admin_kubeconfig.display(), "ferry-apiserver listening");
    Ok(Running {
        addr,
        admin_kubeconfig: pki.admin_kubeconfig.clone(),
        ca_cert_pem: pki.ca_cert_pem.clone(),
        pki,
        shutdown,
        tasks,
    })
}

/// Objects that always exist: the default namespaces and the system PriorityClasses.
async fn bootstrap(api: &Api) -> Result<(), ApiError> {
    rest::ensure_default_namespaces(api).await?;
    rest::ensure_system_priority_classes(api).await
}

/// Compact etcd to the revision seen one interval ago, as kube-apiserver does.
async fn compact_loop(store: Store, cache: Arc<WatchCache>, every: Duration, shutdown: CancellationToken) {
    let mut previous: Option<i64> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        if let Some(rev) = previous {
            match store.compact(rev).await {
                Ok(()) => {
                    tracing::debug!(revision = rev, "compacted etcd");
                    cache.compacted(rev);
                }
                Err(e) => tracing::warn!(error = %e, "etcd compaction failed"),
            }
        }
        match store.current_revision().await {
            Ok(rev) => previous = Some(rev),
            Err(e) => tracing::warn!(error = %e, "cannot read etcd revision"),
        }
    }
}

async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let graceful = GracefulShutdown::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let shared = shared.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let cert_user = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .and_then(|c| crate::auth::user_from_client_cert(c.as_ref()));
            let service = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                let user = cert_user.clone();
                async move { Ok::<_, Infallible>(handle(shared, user, req).await) }
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!("some connections did not finish within the shutdown grace period");
    }
}

fn full(code: u16, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(Full::new(body.into()).boxed());
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    resp
}

fn error_response(e: &ApiError) -> Response<Body> {
    full(e.code, "application/json", crate::codec::encode_value(&e.to_status()))
}

fn json_response(v: &serde_json::Value) -> Response<Body> {
    full(200, "application/json", crate::codec::encode_value(v))
}

fn reply_response(reply: Reply) -> Response<Body> {
    let mut resp = match reply.body {
        ReplyBody::Full(b) => full(reply.code, "application/json", b),
        ReplyBody::Stream(rx) => {
            let stream = ReceiverStream::new(rx).map(|b| Ok::<_, Infallible>(Frame::data(b)));
            let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
            *r.status_mut() = StatusCode::from_u16(reply.code).unwrap_or(StatusCode::OK);
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
    };
    for w in reply.warnings {
        let escaped = w.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(v) = HeaderValue::from_str(&format!("299 - \"{escaped}\"")) {
            resp.headers_mut().append(header::WARNING, v);
        }
    }
    resp
}

fn authenticate(shared: &Shared, cert_user: Option<UserInfo>, req: &Request<Incoming>) -> Option<UserInfo> {
    if let Some(token) = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(bearer_token) {
        // A presented token must be valid, even alongside a certificate.
        return shared.tokens.authenticate(token);
    }
    cert_user
}

async fn handle(shared: Arc<Shared>, cert_user: Option<UserInfo>, req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let api = &shared.api;
    let routed = route(&api.table, &path);
    if let Ok(Route::Health(probe)) = &routed {
        return health(&shared, probe).await;
    }
    let Some(user) = authenticate(&shared, cert_user, &req) else {
        api.metrics.observe("OTHER", "", 401, started.elapsed());
        return error_response(&ApiError::unauthorized());
    };
    let (verb, resource, resp) = match routed {
        Err(e) => ("OTHER", String::new(), error_response(&e)),
        Ok(Route::Resource(target)) => {
            let query = match Query::parse(req.uri().query()) {
                Ok(q) => q,
                Err(e) => return error_response(&e),
            };
            let verb = rest::verb(&method, &target, &query);
            let resource = match target.sub {
                Some(s) => format!("{}/{}", target.res.plural, s.name()),
                None => target.res.plural.to_string(),
            };
            let resp = handle_resource(&shared, &user, req, target, query).await;
            (verb, resource, resp)
        }
        Ok(other) => ("GET", String::new(), handle_meta(&shared, &method, &req, other)),
    };
    let code = resp.status().as_u16();
    api.metrics.observe(verb, &resource, code, started.elapsed());
    api.metrics.observe_write(&user.name, verb, &resource);
    tracing::debug!(user = %user.name, %method, %path, code, elapsed_us = started.elapsed().as_micros() as u64, "request");
    resp
}

async fn handle_resource(
    shared: &Shared,
    user: &UserInfo,
    req: Request<Incoming>,
    target: request::Target,
    query: Query,
) -> Response<Body> {
    let method = req.method().clone();
    let node = crate::authz::node_name(user);
    if let (Some(node), Some(Subresource::Log | Subresource::Exec)) = (node, target.sub) {
        if let Err(e) = crate::authz::check_node(&shared.api, user, node, &method, &target, None).await {
            return error_response(&e);
        }
    }
    match (target.sub, &method) {
        (Some(Subresource::Log), &Method::GET) => {
            let query = req.uri().query().map(str::to_string);
            return shared
                .node_proxy
                .log(&shared.api, &target, query.as_deref())
                .await
                .unwrap_or_else(|e| error_response(&e));
        }
        (Some(Subresource::Exec), &Method::GET | &Method::POST) => {
            return shared.node_proxy.exec(&shared.api, &target, req).await.unwrap_or_else(|e| error_response(&e));
        }
        (Some(sub @ (Subresource::Log | Subresource::Exec)), m) => {
            return error_response(&ApiError::method_not_allowed(&format!("{m} pods/{}", sub.name())));
        }
        _ => {}
    }
    let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let accept = req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let user_agent = req.headers().get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let declared =
        req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > shared.max_body) {
        drain(req.into_body()).await;
        return error_response(&ApiError::too_large(shared.max_body));
    }
    let mut incoming = req.into_body();
    let body = match Limited::new(&mut incoming, shared.max_body).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                drain(incoming).await;
                return error_response(&ApiError::too_large(shared.max_body));
            }
            return error_response(&ApiError::bad_request(format!("failed to read the request body: {e}")));
        }
    };
    if let Some(node) = node {
        let body_name = (method == Method::POST && target.name.is_none())
            .then(|| serde_json::from_slice::<serde_json::Value>(&body).ok())
            .flatten()
            .and_then(|v| v.pointer("/metadata/name").and_then(|n| n.as_str()).map(str::to_string));
        if let Err(e) = crate::authz::check_node(&shared.api, user, node, &method, &target, body_name.as_deref()).await
        {
            return error_response(&e);
        }
    }
    let table = match rest::TableOptions::negotiate(&accept, query.include_object.as_deref()) {
        Ok(t) => t,
        Err(e) => return error_response(&e),
    };
    let request = rest::Request {
        method: &method,
        target,
        query,
        content_type: &content_type,
        table,
        body,
        user_agent: &user_agent,
    };
    match shared.api.handle(request).await {
        Ok(reply) => reply_response(reply),
        Err(e) => error_response(&e),
    }
}

/// Read and discard what is left of a rejected body (up to 64 MiB, for at most 10 s), so the client sees the
/// 413 rather than a connection reset while it is still sending.
async fn drain(mut body: Incoming) {
    const CAP: usize = 64 << 20;
    let mut seen = 0usize;
    let read = async {
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, |d| d.len());
            if seen > CAP {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), read).await;
}

fn handle_meta(shared: &Shared, method: &Method, req: &Request<Incoming>, route: Route) -> Response<Body> {
    if method != Method::GET {
        return error_response(&ApiError::method_not_allowed(req.uri().path()));
    }
    let accept = req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let table = &shared.api.table;
    match route {
        Route::LegacyRoot | Route::GroupsRoot => {
            let legacy = matches!(route, Route::LegacyRoot);
            if let Some(ct) = discovery::aggregated_format(accept) {
                let body = crate::codec::encode_value(&discovery::aggregated(table, legacy, ct));
                let mut resp = full(200, ct, body);
                resp.headers_mut().insert(header::VARY, HeaderValue::from_static("Accept"));
                return resp;
            }
            if legacy {
                json_response(&discovery::legacy_versions(&shared.server_address))
            } else {
                json_response(&discovery::group_list(table))
            }
        }
        Route::Group(g) => match discovery::group(table, &g) {
            Some(v) => json_response(&v),
            None => error_response(&ApiError::no_route(req.uri().path())),
        },
        Route::GroupVersion(g, v) => match discovery::resource_list(table, &g, &v) {
            Some(list) => json_response(&list),
            None => error_response(&ApiError::no_route(req.uri().path())),
        },
        Route::Version => json_response(&discovery::version()),
        Route::Metrics => full(200, "text/plain; version=0.0.4; charset=utf-8", shared.api.metrics.render()),
        Route::OpenApi(path) => match crate::openapi::v3(table) {
            Ok(docs) => match path {
                None => full(200, "application/json", docs.index()),
                Some(p) => match docs.document(&p) {
                    Some(doc) => full(200, "application/json", doc),
                    None => error_response(&ApiError::no_route(req.uri().path())),
                },
            },
            Err(e) => error_response(&ApiError::internal(e.to_string())),
        },
        Route::Health(_) | Route::Resource(_) => error_response(&ApiError::no_route(req.uri().path())),
    }
}

async fn health(shared: &Shared, probe: &str) -> Response<Body> {
    if probe != "readyz" {
        return full(200, "text/plain; charset=utf-8", "ok");
    }
    if !shared.api.cache.is_ready() {
        return full(503, "text/plain; charset=utf-8", "[-]watch-cache failed: not loaded yet\nreadyz check failed\n");
    }
    match tokio::time::timeout(Duration::from_secs(2), shared.api.store.current_revision()).await {
        Ok(Ok(_)) => full(200, "text/plain; charset=utf-8", "ok"),
        Ok(Err(e)) => full(503, "text/plain; charset=utf-8", format!("[-]etcd failed: {e}\nreadyz check failed\n")),
        Err(_) => full(503, "text/plain; charset=utf-8", "[-]etcd failed: timed out\nreadyz check failed\n"),
    }
}
