//! The scheduling queue: pending pods in three places, as in kube-scheduler.
//!
//! * **active**: ready to try, highest priority first, then oldest first;
//! * **backoff**: failed recently; waits 1 s, 2 s, 4 s … up to 10 s (doubling per attempt);
//! * **unschedulable**: fit nowhere; waits for a relevant cluster change ([`Queue::move_all`]
//!   on node add/update or pod deletion) or the periodic flush ([`Queue::flush_unschedulable`]).
//!
//! A pod being scheduled is *in flight*; if a cluster change arrives meanwhile, a failure sends it
//! to backoff rather than unschedulable, so the change is not missed.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::cache::pod_key;

/// Backoff bounds.
#[derive(Debug, Clone, Copy)]
pub struct BackoffConfig {
    /// First backoff.
    pub initial: Duration,
    /// Cap.
    pub max: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig { initial: Duration::from_secs(1), max: Duration::from_secs(10) }
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Entry {
    priority: i32,
    seq: u64,
    key: String,
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        self.priority.cmp(&other.priority).then_with(|| other.seq.cmp(&self.seq))
    }
}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Active,
    Backoff(Instant),
    Unschedulable(Instant),
    InFlight { moved: bool },
}

#[derive(Debug)]
struct Item {
    pod: Arc<Pod>,
    place: Place,
    attempts: u32,
    seq: u64,
}

#[derive(Debug, Default)]
struct Inner {
    items: HashMap<String, Item>,
    active: BinaryHeap<Entry>,
    seq: u64,
    closed: bool,
}

/// Queue depths, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Depths {
    /// Ready to schedule.
    pub active: usize,
    /// Waiting out a backoff.
    pub backoff: usize,
    /// Waiting for a cluster change.
    pub unschedulable: usize,
}

/// The scheduling queue.
#[derive(Debug, Default)]
pub struct Queue {
    inner: Mutex<Inner>,
    notify: Notify,
    backoff: BackoffConfig,
}

fn priority(pod: &Pod) -> i32 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

impl Queue {
    /// An empty queue.
    pub fn new(backoff: BackoffConfig) -> Queue {
        Queue { inner: Mutex::default(), notify: Notify::new(), backoff }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn backoff_for(&self, attempts: u32) -> Duration {
        let shift = attempts.saturating_sub(1).min(16);
        self.backoff.initial.saturating_mul(1 << shift).min(self.backoff.max)
    }

    fn activate(inner: &mut Inner, key: &str) {
        if let Some(item) = inner.items.get_mut(key) {
            item.place = Place::Active;
            let entry = Entry { priority: priority(&item.pod), seq: item.seq, key: key.to_string() };
            inner.active.push(entry);
        }
    }

    /// Adds a pending pod or updates it. A new pod goes to active; an updated unschedulable pod
    /// is retried (the update may have made it schedulable).
    pub fn add(&self, pod: Pod) {
        let key = pod_key(&pod);
        let mut inner = self.lock();
        let now = Instant::now();
        let backoff_until = |attempts: u32, since: Instant| since + self.backoff_for(attempts);
        match inner.items.get_mut(&key) {
            Some(item) => {
                let prio_changed = priority(&item.pod) != priority(&pod);
                item.pod = Arc::new(pod);
                match item.place {
                    Place::Unschedulable(since) => {
                        let until = backoff_until(item.attempts, since);
                        if until > now {
                            item.place = Place::Backoff(until);
                        } else {
                            Self::activate(&mut inner, &key);
                        }
                    }
                    Place::Active if prio_changed => Self::activate(&mut inner, &key),
                    _ => {}
                }
            }
            None => {
                inner.seq += 1;
                let seq = inner.seq;
                inner.items.insert(key.clone(), Item { pod: Arc::new(pod), place: Place::Active, attempts: 0, seq });
                Self::activate(&mut inner, &key);
            }
        }
        drop(inner);
        self.notify.notify_one();
    }

    /// Forgets a pod (deleted, or bound by someone else).
    pub fn delete(&self, key: &str) {
        self.lock().items.remove(key);
    }

    /// Whether the queue knows the pod.
    pub fn contains(&self, key: &str) -> bool {
        self.lock().items.contains_key(key)
    }

    /// Waits for the next pod to schedule; `None` once closed. The pod is in flight until
    /// [`done`](Self::done), [`unschedulable`](Self::unschedulable) or
    /// [`backoff`](Self::backoff).
    pub async fn pop(&self) -> Option<(Arc<Pod>, u32)> {
        loop {
            let wake = {
                let mut inner = self.lock();
                if inner.closed {
                    return None;
                }
                let now = Instant::now();
                let mut next_wake: Option<Instant> = None;
                let ready: Vec<String> = inner
                    .items
                    .iter()
                    .filter_map(|(k, i)| match i.place {
                        Place::Backoff(t) if t <= now => Some(k.clone()),
                        Place::Backoff(t) => {
                            next_wake = Some(next_wake.map_or(t, |w| w.min(t)));
                            None
                        }
                        _ => None,
                    })
                    .collect();
                for k in ready {
                    Self::activate(&mut inner, &k);
                }
                while let Some(e) = inner.active.pop() {
                    let Some(item) = inner.items.get_mut(&e.key) else { continue };
                    if item.place != Place::Active || item.seq != e.seq || priority(&item.pod) != e.priority {
                        continue;
                    }
                    item.place = Place::InFlight { moved: false };
                    return Some((item.pod.clone(), item.attempts));
                }
                next_wake
            };
            match wake {
                Some(t) => {
                    tokio::select! {
                        _ = self.notify.notified() => {}
                        _ = tokio::time::sleep_until(t) => {}
                    }
                }
                None => self.notify.notified().await,
            }
        }
    }

    /// The in-flight pod was bound (or handed off): forget it.
    pub fn done(&self, key: &str) {
        self.lock().items.remove(key);
    }

    /// The in-flight pod fits nowhere: park it until a cluster change (or back off, if a change
    /// arrived while it was in flight).
    pub fn unschedulable(&self, key: &str) {
        let mut inner = self.lock();
        let now = Instant::now();
        let Some(item) = inner.items.get_mut(key) else { return };
        item.attempts += 1;
        item.place = match item.place {
            Place::InFlight { moved: true } => Place::Backoff(now + self.backoff_for(item.attempts)),
            _ => Place::Unschedulable(now),
        };
        drop(inner);
        self.notify.notify_one();
    }

    /// The in-flight pod hit an error (e.g. a failed binding): retry after a backoff.
    pub fn backoff(&self, key: &str) {
        let mut inner = self.lock();
        let now = Instant::now();
        let Some(item) = inner.items.get_mut(key) else { return };
        item.attempts += 1;
        item.place = Place::Backoff(now + self.backoff_for(item.attempts));
        drop(inner);
        self.notify.notify_one();
    }

    /// A relevant cluster change: unschedulable pods go to backoff (if their backoff has not
    /// expired) or active; in-flight pods remember it.
    pub fn move_all(&self) {
        self.move_where(|_| true);
    }

    /// Periodic flush: pods unschedulable for longer than `max_age` are retried.
    pub fn flush_unschedulable(&self, max_age: Duration) {
        let now = Instant::now();
        self.move_where(|since| now.duration_since(since) >= max_age);
    }

    fn move_where(&self, pred: impl Fn(Instant) -> bool) {
        let mut inner = self.lock();
        let now = Instant::now();
        let mut to_activate = Vec::new();
        for (k, item) in inner.items.iter_mut() {
            match item.place {
                Place::Unschedulable(since) if pred(since) => {
                    let until = since + self.backoff_for(item.attempts);
                    if until > now {
                        item.place = Place::Backoff(until);
                    } else {
                        to_activate.push(k.clone());
                    }
                }
                Place::InFlight { .. } => item.place = Place::InFlight { moved: true },
                _ => {}
            }
        }
        for k in to_activate {
            Self::activate(&mut inner, &k);
        }
        drop(inner);
        self.notify.notify_one();
    }

    /// Current depths.
    pub fn depths(&self) -> Depths {
        let inner = self.lock();
        let mut d = Depths::default();
        for item in inner.items.values() {
            match item.place {
                Place::Active => d.active += 1,
                Place::Backoff(_) => d.backoff += 1,
                Place::Unschedulable(_) => d.unschedulable += 1,
                Place::InFlight { .. } => {}
            }
        }
        d
    }

    /// Wakes waiters and makes `pop` return `None`.
    pub fn close(&self) {
        self.lock().closed = true;
        self.notify.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, prio: i32) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"priority": prio, "containers": [{"name": "c"}]}
        }))
        .expect("pod")
    }

    async fn next(q: &Queue) -> String {
        let (p, _) = q.pop().await.expect("pod");
        pod_key(&p)
    }

    #[tokio::test(start_paused = true)]
    async fn active_by_priority_then_age() {
        let q = Queue::new(BackoffConfig::default());
        q.add(pod("low-old", 1));
        q.add(pod("high", 10));
        q.add(pod("low-new", 1));
        assert_eq!(next(&q).await, "default/high");
        assert_eq!(next(&q).await, "default/low-old");
        assert_eq!(next(&q).await, "default/low-new");
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_doubles_up_to_the_cap() {
        let q = Queue::new(BackoffConfig::default());
        assert_eq!(q.backoff_for(1), Duration::from_secs(1));
        assert_eq!(q.backoff_for(2), Duration::from_secs(2));
        assert_eq!(q.backoff_for(4), Duration::from_secs(8));
        assert_eq!(q.backoff_for(5), Duration::from_secs(10));
        assert_eq!(q.backoff_for(50), Duration::from_secs(10));
        q.add(pod("a", 0));
        let key = next(&q).await;
        let start = Instant::now();
        q.backoff(&key);
        assert_eq!(q.depths().backoff, 1);
        assert_eq!(next(&q).await, key);
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        q.backoff(&key);
        let start = Instant::now();
        let (_, attempts) = q.pop().await.expect("pod");
        assert_eq!((start.elapsed(), attempts), (Duration::from_secs(2), 2));
    }

    #[tokio::test(start_paused = true)]
    async fn unschedulable_waits_for_a_change_or_the_flush() {
        let q = Queue::new(BackoffConfig::default());
        q.add(pod("a", 0));
        let key = next(&q).await;
        q.unschedulable(&key);
        assert_eq!(q.depths(), Depths { active: 0, backoff: 0, unschedulable: 1 });
        let waited = tokio::time::timeout(Duration::from_secs(30), q.pop()).await;
        assert!(waited.is_err(), "an unschedulable pod is not retried on its own");
        q.move_all();
        assert_eq!(next(&q).await, key);
        q.unschedulable(&key);
        q.flush_unschedulable(Duration::from_secs(60));
        assert_eq!(q.depths().unschedulable, 1);
        tokio::time::advance(Duration::from_secs(61)).await;
        q.flush_unschedulable(Duration::from_secs(60));
        assert_eq!(next(&q).await, key);
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_during_the_attempt_sends_the_pod_to_backoff() {
        let q = Queue::new(BackoffConfig::default());
        q.add(pod("a", 0));
        let key = next(&q).await;
        q.move_all();
        q.unschedulable(&key);
        assert_eq!(q.depths().backoff, 1);
        assert_eq!(next(&q).await, key);
    }

    #[tokio::test(start_paused = true)]
    async fn updates_and_deletes() {
        let q = Queue::new(BackoffConfig::default());
        q.add(pod("a", 0));
        q.add(pod("b", 0));
        q.add(pod("a", 5)); // priority raised while waiting
        assert_eq!(next(&q).await, "default/a");
        q.delete("default/b");
        assert!(!q.contains("default/b"));
        q.done("default/a");
        assert!(tokio::time::timeout(Duration::from_secs(5), q.pop()).await.is_err());
        q.close();
        assert!(q.pop().await.is_none());
    }
}
