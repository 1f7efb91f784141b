//! Container probes (liveness, readiness, startup) with Kubernetes' timing: initial delay,
//! period, timeout, success and failure thresholds. httpGet and tcpSocket probes run from the
//! node against the pod IP; exec probes are not supported yet (they count as passing, and a
//! warning is logged once).

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

/// Running state of one probe of one container instance.
#[derive(Clone, Debug, Default)]
pub struct ProbeState {
    /// When the probe last ran.
    pub last_run: Option<Instant>,
    /// Consecutive successes.
    pub successes: i32,
    /// Consecutive failures.
    pub failures: i32,
    /// The probe's verdict so far (thresholds applied).
    pub passing: bool,
}

/// What a probe run decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not due yet (initial delay or period).
    NotDue,
    /// Ran; `passing` after thresholds.
    Ran {
        /// The verdict after thresholds.
        passing: bool,
    },
}

/// Seconds from an optional field with a Kubernetes default.
fn secs(v: Option<i32>, default: i32) -> Duration {
    Duration::from_secs(v.unwrap_or(default).max(0) as u64)
}

/// The period of a probe (for scheduling the next sync).
pub fn period(p: &Probe) -> Duration {
    secs(p.period_seconds, 10).max(Duration::from_secs(1))
}

/// Run `probe` if due; `started` is when the container started.
pub async fn run(
    probe: &Probe,
    state: &mut ProbeState,
    started: Instant,
    pod_ip: &str,
    container: &Container,
) -> Verdict {
    let now = Instant::now();
    if now < started + secs(probe.initial_delay_seconds, 0) {
        return Verdict::NotDue;
    }
    if state.last_run.is_some_and(|t| now < t + period(probe)) {
        return Verdict::NotDue;
    }
    state.last_run = Some(now);
    let timeout = secs(probe.timeout_seconds, 1).max(Duration::from_secs(1));
    let ok = check(probe, pod_ip, container, timeout).await;
    if ok {
        state.successes += 1;
        state.failures = 0;
        if state.successes >= probe.success_threshold.unwrap_or(1).max(1) {
            state.passing = true;
        }
    } else {
        state.failures += 1;
        state.successes = 0;
        if state.failures >= probe.failure_threshold.unwrap_or(3).max(1) {
            state.passing = false;
        }
    }
    Verdict::Ran { passing: state.passing }
}

fn port(p: &IntOrString, container: &Container) -> Option<u16> {
    match p {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|cp| cp.name.as_deref() == Some(name.as_str()))
            .and_then(|cp| u16::try_from(cp.container_port).ok()),
    }
}

async fn check(probe: &Probe, pod_ip: &str, container: &Container, timeout: Duration) -> bool {
    if let Some(tcp) = &probe.tcp_socket {
        let Some(port) = port(&tcp.port, container) else { return false };
        let host = tcp.host.clone().unwrap_or_else(|| pod_ip.to_string());
        return matches!(
            tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host.as_str(), port))).await,
            Ok(Ok(_))
        );
    }
    if let Some(http) = &probe.http_get {
        let Some(port) = port(&http.port, container) else { return false };
        let host = http.host.clone().unwrap_or_else(|| pod_ip.to_string());
        let path = http.path.clone().unwrap_or_else(|| "/".into());
        let fut = async {
            let mut s = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            let mut req = format!("GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\nUser-Agent: ferry-probe\r\n");
            for h in http.http_headers.iter().flatten() {
                req.push_str(&format!("{}: {}\r\n", h.name, h.value));
            }
            req.push_str("\r\n");
            s.write_all(req.as_bytes()).await?;
            let mut head = vec![0u8; 32];
            let n = s.read(&mut head).await?;
            Ok::<_, std::io::Error>(String::from_utf8_lossy(&head[..n]).into_owned())
        };
        return match tokio::time::timeout(timeout, fut).await {
            Ok(Ok(head)) => head
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse::<u16>().ok())
                .is_some_and(|c| (200..400).contains(&c)),
            _ => false,
        };
    }
    if probe.exec.is_some() {
        tracing::warn!(container = %container.name, "exec probes are not supported yet; treating as passing");
        return true;
    }
    if probe.grpc.is_some() {
        tracing::warn!(container = %container.name, "gRPC probes are not supported yet; treating as passing");
        return true;
    }
    false
}
