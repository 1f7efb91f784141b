//! Prometheus metrics of the controllers and the `/metrics` + `/healthz` endpoint.
//!
//! * `ferry_controller_reconcile_total{controller,result}` — reconciles by controller and
//!   result (`success` / `error`);
//! * `ferry_controller_reconcile_duration_seconds{controller}` — reconcile latency;
//! * `ferry_controller_queue_depth{controller}` — objects waiting for a reconcile: changed since
//!   their last reconcile started (Kubernetes' workqueue depth: a key counts once however often
//!   it changed; requeues scheduled for later are not counted until they fire);
//! * `ferry_controller_leader` — 1 while this process holds the leader Lease, else 0.
//!
//! The metrics are process-wide ([`global`]), like Go's default Prometheus registry: every
//! controller of the process reports into the same registry.

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response};
use kube::runtime::controller::Action;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    controller: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabels {
    controller: String,
}

/// The process's controller metrics.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ResultLabels, Counter>,
    latency: Family<ControllerLabels, Histogram>,
    depth: Family<ControllerLabels, Gauge>,
    leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let reconciles = Family::<ResultLabels, Counter>::default();
        let latency = Family::<ControllerLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
        });
        let depth = Family::<ControllerLabels, Gauge>::default();
        let leader = Gauge::default();
        registry.register("ferry_controller_reconcile", "Reconciles by controller and result", reconciles.clone());
        registry.register(
            "ferry_controller_reconcile_duration_seconds",
            "Reconcile latency by controller",
            latency.clone(),
        );
        registry.register(
            "ferry_controller_queue_depth",
            "Objects changed since their last reconcile started, by controller",
            depth.clone(),
        );
        registry.register("ferry_controller_leader", "1 while this process holds the leader Lease", leader.clone());
        Self { registry, reconciles, latency, depth, leader }
    }

    /// Set the leader gauge.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// The per-controller handle.
    pub fn controller(&self, name: &str) -> Arc<ControllerMetrics> {
        // One statement per metric: `get_or_create` returns a guard that must be dropped before
        // the family is touched again.
        let labels = ControllerLabels { controller: name.into() };
        let result = |r: &str| ResultLabels { controller: name.into(), result: r.into() };
        let success = self.reconciles.get_or_create(&result("success")).clone();
        let error = self.reconciles.get_or_create(&result("error")).clone();
        let latency = self.latency.get_or_create(&labels).clone();
        let depth = self.depth.get_or_create(&labels).clone();
        Arc::new(ControllerMetrics { success, error, latency, depth, pending: Mutex::new(HashSet::new()) })
    }

    /// Render in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// The process-wide metrics.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// One controller's metrics.
pub struct ControllerMetrics {
    success: Counter,
    error: Counter,
    latency: Histogram,
    depth: Gauge,
    pending: Mutex<HashSet<String>>,
}

impl ControllerMetrics {
    fn pending(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// An object (by key) changed: it waits for a reconcile.
    pub fn triggered(&self, key: String) {
        let mut p = self.pending();
        if p.insert(key) {
            self.depth.set(i64::try_from(p.len()).unwrap_or(i64::MAX));
        }
    }

    /// A reconcile of `key` starts.
    pub fn started(&self, key: &str) {
        let mut p = self.pending();
        if p.remove(key) {
            self.depth.set(i64::try_from(p.len()).unwrap_or(i64::MAX));
        }
    }

    /// Set the depth directly (for a controller with its own queue).
    pub fn set_depth(&self, depth: usize) {
        self.depth.set(i64::try_from(depth).unwrap_or(i64::MAX));
    }

    /// A reconcile that began at `started` finished.
    pub fn finished(&self, ok: bool, started: Instant) {
        self.latency.observe(started.elapsed().as_secs_f64());
        if ok {
            self.success.inc();
        } else {
            self.error.inc();
        }
    }

    /// Run `reconcile` for `obj`, counted and timed.
    pub async fn reconcile<K, C, E, F, Fut>(
        self: Arc<Self>,
        obj: Arc<K>,
        ctx: Arc<C>,
        reconcile: F,
    ) -> Result<Action, E>
    where
        K: kube::Resource,
        F: FnOnce(Arc<K>, Arc<C>) -> Fut,
        Fut: std::future::Future<Output = Result<Action, E>>,
    {
        self.started(&key_of(obj.as_ref()));
        let start = Instant::now();
        let result = reconcile(obj, ctx).await;
        self.finished(result.is_ok(), start);
        result
    }
}

/// `namespace/name` (or `name`) of an object, the queue key.
pub fn key_of<K: kube::Resource>(obj: &K) -> String {
    let m = obj.meta();
    let name = m.name.as_deref().unwrap_or_default();
    match m.namespace.as_deref() {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    }
}

/// `namespace/name` of an object reference.
pub fn key_of_ref<K: kube::Resource>(r: &kube::runtime::reflector::ObjectRef<K>) -> String
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    match r.namespace.as_deref() {
        Some(ns) => format!("{ns}/{}", r.name),
        None => r.name.clone(),
    }
}

/// Errors of the metrics endpoint.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Bind `addr` and serve `GET /metrics` and `GET /healthz` until `shutdown` is cancelled.
/// Returns the bound address (port 0 picks a free one) and the serving task.
pub async fn serve(
    addr: SocketAddr,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), ServeError> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| ServeError::Bind { addr, source })?;
    let bound = listener.local_addr().map_err(|source| ServeError::Bind { addr, source })?;
    let task = tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                r = listener.accept() => match r {
                    Ok((s, _)) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "metrics endpoint: accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = shutdown.cancelled() => return,
            };
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let service = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                    Ok::<_, Infallible>(respond(req.method(), req.uri().path()))
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    });
    Ok((bound, task))
}

fn respond(method: &hyper::Method, path: &str) -> Response<Full<Bytes>> {
    let (code, ctype, body) = match (method, path) {
        (&hyper::Method::GET, "/metrics") => (200, "text/plain; version=0.0.4; charset=utf-8", global().render()),
        (&hyper::Method::GET, "/healthz" | "/livez" | "/readyz") => (200, "text/plain; charset=utf-8", "ok".into()),
        (&hyper::Method::GET, _) => (404, "text/plain; charset=utf-8", "404 page not found\n".into()),
        _ => (405, "text/plain; charset=utf-8", "method not allowed\n".into()),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = hyper::StatusCode::from_u16(code).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = hyper::header::HeaderValue::from_str(ctype) {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_depth_counts_each_key_once_until_its_reconcile_starts() {
        let m = Metrics::new();
        let c = m.controller("replicaset");
        c.triggered("ns/a".into());
        c.triggered("ns/a".into());
        c.triggered("ns/b".into());
        assert!(m.render().contains("ferry_controller_queue_depth{controller=\"replicaset\"} 2"), "{}", m.render());
        c.started("ns/a");
        assert!(m.render().contains("ferry_controller_queue_depth{controller=\"replicaset\"} 1"));
        c.finished(true, Instant::now());
        c.finished(false, Instant::now());
        let text = m.render();
        assert!(
            text.contains("ferry_controller_reconcile_total{controller=\"replicaset\",result=\"success\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("ferry_controller_reconcile_total{controller=\"replicaset\",result=\"error\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("ferry_controller_reconcile_duration_seconds_count{controller=\"replicaset\"} 2"),
            "{text}"
        );
        m.set_leader(true);
        assert!(m.render().contains("ferry_controller_leader 1"));
    }

    #[tokio::test]
    async fn serves_metrics_and_healthz() -> Result<(), Box<dyn std::error::Error>> {
        let stop = CancellationToken::new();
        let (addr, task) = serve("127.0.0.1:0".parse()?, stop.clone()).await?;
        global().controller("test-endpoint").finished(true, Instant::now());
        let get = |path: &'static str| async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(addr).await?;
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await?;
            let mut out = String::new();
            s.read_to_string(&mut out).await?;
            Ok::<_, std::io::Error>(out)
        };
        let health = get("/healthz").await?;
        assert!(health.starts_with("HTTP/1.1 200") && health.ends_with("ok"), "{health}");
        let metrics = get("/metrics").await?;
        assert!(
            metrics.contains("ferry_controller_reconcile_total{controller=\"test-endpoint\",result=\"success\"} 1"),
            "{metrics}"
        );
        assert!(get("/nope").await?.starts_with("HTTP/1.1 404"));
        stop.cancel();
        task.await?;
        Ok(())
    }
}
