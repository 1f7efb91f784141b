//! Prometheus metrics: requests by verb, resource and code; latency; registered watchers; writes
//! by user (who changed what: e.g. that only the leading controller manager writes).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    verb: String,
    resource: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    verb: String,
    resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WriteLabels {
    user: String,
    verb: String,
    resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResourceLabels {
    resource: String,
}

/// The API server's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<LatencyLabels, Histogram>,
    watchers: Family<ResourceLabels, Gauge>,
    writes: Family<WriteLabels, Counter>,
}

/// Decrements the watcher gauge when dropped.
pub struct WatcherGuard(Gauge);

impl Drop for WatcherGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Register all metrics.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<LatencyLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
        });
        let watchers = Family::<ResourceLabels, Gauge>::default();
        registry.register("apiserver_request", "Requests by verb, resource and HTTP code", requests.clone());
        registry.register(
            "apiserver_request_duration_seconds",
            "Request latency by verb and resource (watches: until the stream starts)",
            latency.clone(),
        );
        registry.register("apiserver_registered_watchers", "Open watches by resource", watchers.clone());
        let writes = Family::<WriteLabels, Counter>::default();
        registry.register(
            "apiserver_write_requests_by_user",
            "Mutating requests (POST, PUT, PATCH, DELETE, DELETECOLLECTION) by authenticated user, verb and resource",
            writes.clone(),
        );
        Self { registry, requests, latency, watchers, writes }
    }

    /// Count one finished request.
    pub fn observe(&self, verb: &str, resource: &str, code: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels { verb: verb.into(), resource: resource.into(), code: code.to_string() })
            .inc();
        self.latency
            .get_or_create(&LatencyLabels { verb: verb.into(), resource: resource.into() })
            .observe(elapsed.as_secs_f64());
    }

    /// Count a mutating request by `user` (other verbs are ignored).
    pub fn observe_write(&self, user: &str, verb: &str, resource: &str) {
        if matches!(verb, "POST" | "PUT" | "PATCH" | "DELETE" | "DELETECOLLECTION") {
            self.writes
                .get_or_create(&WriteLabels { user: user.into(), verb: verb.into(), resource: resource.into() })
                .inc();
        }
    }

    /// Count an open watch until the guard drops.
    pub fn watcher_guard(&self, res: &ferry_api::ResourceInfo) -> WatcherGuard {
        let g = self.watchers.get_or_create(&ResourceLabels { resource: res.plural.into() }).clone();
        g.inc();
        WatcherGuard(g)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_requests() {
        let m = Metrics::new();
        m.observe("GET", "pods", 200, Duration::from_millis(3));
        let mut out = String::new();
        let r = prometheus_client::encoding::text::encode(&mut out, &m.registry);
        println!("{r:?}");
        let text = m.render();
        assert!(text.contains("apiserver_request_total{verb=\"GET\",resource=\"pods\",code=\"200\"} 1"), "{text}");
        assert!(text.contains("apiserver_request_duration_seconds_bucket"), "{text}");
    }

    #[test]
    fn counts_writes_by_user() {
        let m = Metrics::new();
        m.observe_write("ctrl-a", "PUT", "replicasets");
        m.observe_write("ctrl-a", "GET", "replicasets");
        m.observe_write("ctrl-a", "WATCH", "pods");
        let text = m.render();
        assert!(
            text.contains(
                "apiserver_write_requests_by_user_total{user=\"ctrl-a\",verb=\"PUT\",resource=\"replicasets\"} 1"
            ),
            "{text}"
        );
        assert!(!text.contains("user=\"ctrl-a\",verb=\"GET\""), "{text}");
        assert!(!text.contains("user=\"ctrl-a\",verb=\"WATCH\""), "{text}");
    }
}
