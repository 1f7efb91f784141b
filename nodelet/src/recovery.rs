//! Coming back after a silence: a nodelet that was cut off from the API server (a network
//! partition) or frozen (SIGSTOP, a suspended VM) may have had its pods evicted and replaced
//! elsewhere meanwhile. Before it says "I am alive" again it must stop those pods, or a
//! Deployment's pod runs twice; Kubernetes' kubelet likewise syncs pods before posting Ready.
//!
//! Every heartbeat write (Lease renewal, node status) goes through one [`Gate`]. The gate
//! remembers when the last heartbeat reached the API server, on the monotonic clock. When that
//! is longer ago than the threshold — renewals kept failing, or the clock jumped between two
//! ticks because the process did not run — the gate first asks the pod workers to resync
//! ([`Resync`]): a fresh LIST of the pods bound to this node, workers of pods missing from it
//! retired (their containers stopped and removed), runtime leftovers removed. Only when that
//! finished does the heartbeat go out; if it fails (the API server is still unreachable) the
//! heartbeat is skipped and the next one tries again.

use std::future::Future;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio::time::Instant;

/// Why a heartbeat was not written.
#[derive(Debug, thiserror::Error)]
pub enum GateError<E> {
    /// The pods could not be resynced after a silence; no heartbeat until they are.
    #[error("silent for {silent:?}; resyncing pods before heartbeating failed: {reason}")]
    Resync {
        /// How long no heartbeat reached the API server.
        silent: Duration,
        /// What went wrong.
        reason: String,
    },
    /// The heartbeat write itself failed.
    #[error(transparent)]
    Write(E),
    /// The heartbeat write did not finish in time (a partition makes requests hang).
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// Reconciles the runtime's pods against the pods bound to this node in the API.
#[async_trait::async_trait]
pub trait Resync: Send + Sync {
    /// Relist the node's pods, stop and remove local pods that are not among them, and return
    /// once that is done.
    async fn resync(&self) -> Result<(), String>;
}

/// The pod workers' side of a resync request: answer `done` once local pods match a fresh list.
pub type ResyncRequest = oneshot::Sender<()>;

/// Asks the pod workers ([`crate::pods::run`]) to resync over a channel and waits for the answer.
pub struct ChannelResync {
    tx: mpsc::Sender<ResyncRequest>,
    timeout: Duration,
}

impl ChannelResync {
    /// A requester and the receiver to hand to [`crate::pods::run`]; a resync not answered
    /// within `timeout` counts as failed.
    pub fn new(timeout: Duration) -> (Self, mpsc::Receiver<ResyncRequest>) {
        let (tx, rx) = mpsc::channel(4);
        (ChannelResync { tx, timeout }, rx)
    }
}

#[async_trait::async_trait]
impl Resync for ChannelResync {
    async fn resync(&self) -> Result<(), String> {
        let (done, answer) = oneshot::channel();
        self.tx.send(done).await.map_err(|_| "the pod workers are not running".to_string())?;
        match tokio::time::timeout(self.timeout, answer).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err("the pod workers dropped the request (a newer one replaced it)".into()),
            Err(_) => Err(format!("no fresh pod list within {:?}", self.timeout)),
        }
    }
}

/// The gate every heartbeat passes (see the module docs).
pub struct Gate<R> {
    resync: R,
    threshold: Duration,
    /// When a heartbeat last reached the API server (or the last resync finished).
    last_ok: Mutex<Instant>,
}

impl<R: Resync> Gate<R> {
    /// A gate that resyncs after `threshold` without a successful heartbeat; the node just
    /// registered, so the clock starts now.
    pub fn new(resync: R, threshold: Duration) -> Self {
        Gate { resync, threshold, last_ok: Mutex::new(Instant::now()) }
    }

    /// Write one heartbeat: first resync if the last one is older than the threshold, then run
    /// `write` (given at most the threshold to finish). Heartbeats are serialized, so a Lease renewal and a status write racing after
    /// a silence resync once and both go out after it.
    pub async fn heartbeat<T, E>(&self, write: impl Future<Output = Result<T, E>>) -> Result<T, GateError<E>> {
        let mut last_ok = self.last_ok.lock().await;
        let silent = last_ok.elapsed();
        if silent > self.threshold {
            tracing::warn!(?silent, "no heartbeat reached the API server for too long; resyncing pods first");
            self.resync.resync().await.map_err(|reason| GateError::Resync { silent, reason })?;
            tracing::info!("pods resynced after the silence; heartbeating again");
            *last_ok = Instant::now();
        }
        let started = Instant::now();
        let out = tokio::time::timeout(self.threshold, write)
            .await
            .map_err(|_| GateError::Timeout(self.threshold))?
            .map_err(GateError::Write)?;
        // A write that only got through after a silence (the process was stopped while it was
        // in flight) does not vouch for the pods: the next heartbeat resyncs first.
        if started.elapsed() <= self.threshold {
            *last_ok = Instant::now();
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex as StdMutex};

    /// Records the order of resyncs and writes; resyncs fail while `fail` is set.
    #[derive(Clone, Default)]
    struct Log {
        events: Arc<StdMutex<Vec<&'static str>>>,
        fail: Arc<AtomicBool>,
    }

    impl Log {
        fn push(&self, e: &'static str) {
            if let Ok(mut v) = self.events.lock() {
                v.push(e);
            }
        }
        fn take(&self) -> Vec<&'static str> {
            self.events.lock().map(|mut v| std::mem::take(&mut *v)).unwrap_or_default()
        }
    }

    #[async_trait::async_trait]
    impl Resync for Log {
        async fn resync(&self) -> Result<(), String> {
            // A resync takes a while (a LIST, stopping containers): writes must wait for it.
            tokio::time::sleep(Duration::from_millis(500)).await;
            if self.fail.load(Ordering::SeqCst) {
                self.push("resync failed");
                return Err("unreachable".into());
            }
            self.push("resync");
            Ok(())
        }
    }

    async fn write(log: &Log, what: &'static str, ok: bool) -> Result<(), &'static str> {
        if ok {
            log.push(what);
            Ok(())
        } else {
            log.push("write failed");
            Err("connection refused")
        }
    }

    const THRESHOLD: Duration = Duration::from_secs(30);

    #[tokio::test(start_paused = true)]
    async fn heartbeats_within_the_threshold_do_not_resync() {
        let log = Log::default();
        let gate = Gate::new(log.clone(), THRESHOLD);
        for _ in 0..5 {
            tokio::time::advance(Duration::from_secs(10)).await;
            assert!(gate.heartbeat(write(&log, "lease", true)).await.is_ok());
        }
        // Exactly the threshold is not yet a silence.
        tokio::time::advance(THRESHOLD).await;
        assert!(gate.heartbeat(write(&log, "lease", true)).await.is_ok());
        assert_eq!(log.take(), ["lease"; 6]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_clock_jump_resyncs_before_the_next_heartbeat() {
        let log = Log::default();
        let gate = Gate::new(log.clone(), THRESHOLD);
        assert!(gate.heartbeat(write(&log, "lease", true)).await.is_ok());
        // SIGSTOP for longer than the threshold: the next tick sees the monotonic clock jumped.
        tokio::time::advance(THRESHOLD + Duration::from_millis(1)).await;
        assert!(gate.heartbeat(write(&log, "lease", true)).await.is_ok());
        assert!(gate.heartbeat(write(&log, "status", true)).await.is_ok());
        assert_eq!(log.take(), ["lease", "resync", "lease", "status"]);
    }

    #[tokio::test(start_paused = true)]
    async fn failing_renewals_then_recovery_resync_once_and_nothing_is_written_before() {
        let log = Log::default();
        let gate = Gate::new(log.clone(), THRESHOLD);
        // Partitioned: every renewal fails; within the threshold they are plain failed writes.
        for _ in 0..3 {
            tokio::time::advance(Duration::from_secs(10)).await;
            assert!(matches!(gate.heartbeat(write(&log, "lease", false)).await, Err(GateError::Write(_))));
        }
        assert_eq!(log.take(), ["write failed"; 3]);
        // Past the threshold while still cut off: the resync fails, and no write is attempted.
        log.fail.store(true, Ordering::SeqCst);
        tokio::time::advance(Duration::from_secs(10)).await;
        match gate.heartbeat(write(&log, "lease", true)).await {
            Err(GateError::Resync { silent, .. }) => assert_eq!(silent, Duration::from_secs(40)),
            other => panic!("expected a failed resync, got {other:?}"),
        }
        assert_eq!(log.take(), ["resync failed"]);
        // Healed: the lease renewal and a status write race; one resync, then both writes.
        log.fail.store(false, Ordering::SeqCst);
        tokio::time::advance(Duration::from_secs(10)).await;
        let (a, b) =
            tokio::join!(gate.heartbeat(write(&log, "lease", true)), gate.heartbeat(write(&log, "status", true)));
        assert!(a.is_ok() && b.is_ok());
        let events = log.take();
        assert_eq!(events.first(), Some(&"resync"), "{events:?}");
        assert_eq!(events.len(), 3, "{events:?}");
        // Fresh again: no further resync.
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(gate.heartbeat(write(&log, "lease", true)).await.is_ok());
        assert_eq!(log.take(), ["lease"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_write_times_out_and_the_next_heartbeat_resyncs() {
        let log = Log::default();
        let gate = Gate::new(log.clone(), THRESHOLD);
        let hung = async {
            std::future::pending::<()>().await;
            Ok::<(), &str>(())
        };
        assert!(matches!(gate.heartbeat(hung).await, Err(GateError::Timeout(t)) if t == THRESHOLD));
        // The next tick, a renew interval later.
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(gate.heartbeat(write(&log, "lease", true)).await.is_ok());
        assert_eq!(log.take(), ["resync", "lease"]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unanswered_channel_resync_times_out() {
        let (resync, mut rx) = ChannelResync::new(Duration::from_secs(5));
        let keep = tokio::spawn(async move {
            // Receive the request but never answer (the list keeps failing).
            let req = rx.recv().await;
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(req);
        });
        let err = resync.resync().await.err().unwrap_or_default();
        assert!(err.contains("no fresh pod list within 5s"), "{err}");
        keep.abort();
    }
}
