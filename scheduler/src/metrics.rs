//! Prometheus metrics and the `/metrics` + `/healthz` HTTP endpoint.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::queue::Depths;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    queue: String,
}

/// The scheduler's metrics.
pub struct Metrics {
    registry: Registry,
    attempts: Family<ResultLabels, Counter>,
    attempt_latency: Family<ResultLabels, Histogram>,
    binding_latency: Histogram,
    e2e_latency: Histogram,
    pending: Family<QueueLabels, Gauge>,
    preemption_victims: Counter,
    preemption_attempts: Counter,
}

fn buckets() -> Histogram {
    Histogram::new([0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0])
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers all metrics.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let attempts = Family::<ResultLabels, Counter>::default();
        let attempt_latency = Family::<ResultLabels, Histogram>::new_with_constructor(buckets);
        let binding_latency = buckets();
        let e2e_latency = buckets();
        let pending = Family::<QueueLabels, Gauge>::default();
        let preemption_victims = Counter::default();
        let preemption_attempts = Counter::default();
        registry.register(
            "scheduler_schedule_attempts",
            "Scheduling attempts by result (scheduled, unschedulable, error)",
            attempts.clone(),
        );
        registry.register(
            "scheduler_scheduling_attempt_duration_seconds",
            "Time of one scheduling decision (filter + score), by result",
            attempt_latency.clone(),
        );
        registry.register(
            "scheduler_binding_duration_seconds",
            "Time of the binding call to the API server",
            binding_latency.clone(),
        );
        registry.register(
            "scheduler_pod_scheduling_duration_seconds",
            "Time from a pod's first attempt until it was bound",
            e2e_latency.clone(),
        );
        registry.register(
            "scheduler_pending_pods",
            "Pending pods by queue (active, backoff, unschedulable)",
            pending.clone(),
        );
        registry.register("scheduler_preemption_victims", "Pods evicted by preemption", preemption_victims.clone());
        registry.register("scheduler_preemption_attempts", "Preemption attempts", preemption_attempts.clone());
        Metrics {
            registry,
            attempts,
            attempt_latency,
            binding_latency,
            e2e_latency,
            pending,
            preemption_victims,
            preemption_attempts,
        }
    }

    /// Counts one attempt and its decision time.
    pub fn attempt(&self, result: &str, took: Duration) {
        let l = ResultLabels { result: result.to_string() };
        self.attempts.get_or_create(&l).inc();
        self.attempt_latency.get_or_create(&l).observe(took.as_secs_f64());
    }

    /// Records a binding call.
    pub fn binding(&self, took: Duration) {
        self.binding_latency.observe(took.as_secs_f64());
    }

    /// Records the time from first attempt to bound.
    pub fn scheduled(&self, took: Duration) {
        self.e2e_latency.observe(took.as_secs_f64());
    }

    /// Records a preemption.
    pub fn preempted(&self, victims: usize) {
        self.preemption_attempts.inc();
        self.preemption_victims.inc_by(victims as u64);
    }

    /// Sets the queue depth gauges.
    pub fn set_depths(&self, d: Depths) {
        for (q, n) in [("active", d.active), ("backoff", d.backoff), ("unschedulable", d.unschedulable)] {
            self.pending.get_or_create(&QueueLabels { queue: q.to_string() }).set(n as i64);
        }
    }

    /// Number of attempts with a result so far.
    pub fn attempts(&self, result: &str) -> u64 {
        self.attempts.get_or_create(&ResultLabels { result: result.to_string() }).get()
    }

    /// Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Serves `/metrics` and `/healthz` on an already bound listener until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let metrics = metrics.clone();
                async move {
                    let (code, ctype, body) = match req.uri().path() {
                        "/metrics" => (200, "text/plain; version=0.0.4", metrics.encode()),
                        "/healthz" | "/livez" | "/readyz" => (200, "text/plain", "ok".to_string()),
                        _ => (404, "text/plain", "not found".to_string()),
                    };
                    let resp = http::Response::builder()
                        .status(code)
                        .header("content-type", ctype)
                        .body(Full::new(Bytes::from(body)))
                        .unwrap_or_default();
                    Ok::<_, Infallible>(resp)
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// Binds the metrics address.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_attempts_and_depths() {
        let m = Metrics::new();
        m.attempt("scheduled", Duration::from_millis(1));
        m.set_depths(Depths { active: 2, backoff: 1, unschedulable: 3 });
        let text = m.encode();
        assert!(text.contains("scheduler_schedule_attempts_total{result=\"scheduled\"} 1"), "{text}");
        assert!(text.contains("scheduler_pending_pods{queue=\"unschedulable\"} 3"), "{text}");
        assert_eq!(m.attempts("scheduled"), 1);
    }
}
