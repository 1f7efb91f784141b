//! Latency samples, percentiles, and a bounded concurrent runner that collects them.

use anyhow::{Context, Result};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// Latencies of one kind of operation, sorted, plus the wall time the run took.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    sorted: Vec<Duration>,
    /// Wall-clock time of the whole run (for throughput).
    pub wall: Duration,
}

impl Sample {
    /// A sample from unsorted latencies.
    pub fn new(mut latencies: Vec<Duration>, wall: Duration) -> Self {
        latencies.sort_unstable();
        Self { sorted: latencies, wall }
    }

    /// Several runs pooled into one (wall times add up).
    pub fn pooled(parts: &[&Sample]) -> Self {
        let all = parts.iter().flat_map(|s| s.sorted.iter().copied()).collect();
        Self::new(all, parts.iter().map(|s| s.wall).sum())
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    /// Nearest-rank percentile `p` (0–100); zero for an empty sample.
    pub fn percentile(&self, p: f64) -> Duration {
        if self.sorted.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * self.sorted.len() as f64).ceil() as usize;
        self.sorted[rank.clamp(1, self.sorted.len()) - 1]
    }

    /// Median.
    pub fn p50(&self) -> Duration {
        self.percentile(50.0)
    }

    /// 99th percentile.
    pub fn p99(&self) -> Duration {
        self.percentile(99.0)
    }

    /// Slowest operation.
    pub fn max(&self) -> Duration {
        self.sorted.last().copied().unwrap_or_default()
    }

    /// Operations per second over the wall time.
    pub fn throughput(&self) -> f64 {
        let secs = self.wall.as_secs_f64();
        if secs > 0.0 {
            self.len() as f64 / secs
        } else {
            0.0
        }
    }
}

/// Milliseconds with two decimals, for tables.
pub fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// Run `op(0..count)` on `concurrency` tasks and time each call. Stops early (with fewer
/// samples) once `time_limit` has passed; the first failing call fails the run.
pub async fn measure<F, Fut>(concurrency: usize, count: usize, time_limit: Duration, op: F) -> Result<Sample>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + time_limit;
    let mut workers = JoinSet::new();
    for _ in 0..concurrency.clamp(1, count.max(1)) {
        let (op, next) = (op.clone(), next.clone());
        workers.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count || Instant::now() > deadline {
                    return Ok::<_, anyhow::Error>(latencies);
                }
                let t = Instant::now();
                op(i).await.with_context(|| format!("operation #{i}"))?;
                latencies.push(t.elapsed());
            }
        });
    }
    let mut all = Vec::with_capacity(count);
    while let Some(done) = workers.join_next().await {
        all.extend(done.context("a benchmark worker panicked")??);
    }
    Ok(Sample::new(all, start.elapsed()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let s = Sample::new((1..=100).rev().map(Duration::from_millis).collect(), Duration::from_secs(2));
        assert_eq!(s.p50(), Duration::from_millis(50));
        assert_eq!(s.p99(), Duration::from_millis(99));
        assert_eq!(s.max(), Duration::from_millis(100));
        assert_eq!(s.percentile(0.0), Duration::from_millis(1));
        assert!((s.throughput() - 50.0).abs() < 1e-9);
        assert_eq!(Sample::default().p99(), Duration::ZERO);
    }
}
