//! Expectations: what a controller wrote and has not yet seen in its cache.
//!
//! A ReplicaSet that just created three pods must not create them again because its pod cache
//! has not caught up. Kubernetes counts adds/deletes seen by event handlers; here the
//! controller remembers the names it created and the UIDs it deleted, and an expectation is met
//! once the cache shows all the creates and none of the deletes. Expectations expire (as in
//! Kubernetes) so a lost event can never wedge a controller for good.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Outstanding writes of one controlled object.
#[derive(Debug, Clone)]
struct Pending {
    creates: HashSet<String>,
    deletes: HashSet<String>,
    since: Instant,
}

/// Expectations keyed by controller key (`namespace/name`).
#[derive(Debug)]
pub struct Expectations {
    pending: Mutex<HashMap<String, Pending>>,
    ttl: Duration,
}

impl Default for Expectations {
    fn default() -> Self {
        Self::new(Duration::from_secs(300))
    }
}

impl Expectations {
    /// Expectations that expire after `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self { pending: Mutex::new(HashMap::new()), ttl }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Expect `names` to appear (created) and `uids` to disappear (deleted).
    pub fn expect(&self, key: &str, created_names: Vec<String>, deleted_uids: Vec<String>) {
        if created_names.is_empty() && deleted_uids.is_empty() {
            return;
        }
        let mut map = self.lock();
        let p = map.entry(key.to_string()).or_insert_with(|| Pending {
            creates: HashSet::new(),
            deletes: HashSet::new(),
            since: Instant::now(),
        });
        p.creates.extend(created_names);
        p.deletes.extend(deleted_uids);
        p.since = Instant::now();
    }

    /// Whether the cache has caught up: `present_name` says whether a created object is in the
    /// cache, `present_uid` whether a deleted one still is.
    pub fn satisfied(
        &self,
        key: &str,
        present_name: impl Fn(&str) -> bool,
        present_uid: impl Fn(&str) -> bool,
    ) -> bool {
        let mut map = self.lock();
        let Some(p) = map.get_mut(key) else { return true };
        p.creates.retain(|n| !present_name(n));
        p.deletes.retain(|u| present_uid(u));
        if (p.creates.is_empty() && p.deletes.is_empty()) || p.since.elapsed() > self.ttl {
            map.remove(key);
            return true;
        }
        false
    }

    /// Forget everything about `key` (the object is gone).
    pub fn forget(&self, key: &str) {
        self.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn met_when_cache_catches_up_or_expired() {
        let e = Expectations::new(Duration::from_secs(10));
        assert!(e.satisfied("ns/a", |_| false, |_| false));
        e.expect("ns/a", vec!["p1".into(), "p2".into()], vec!["u1".into()]);
        assert!(!e.satisfied("ns/a", |n| n == "p1", |_| true));
        assert!(!e.satisfied("ns/a", |n| n == "p2", |_| true));
        assert!(e.satisfied("ns/a", |_| false, |_| false));
        e.expect("ns/a", vec!["p3".into()], vec![]);
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(e.satisfied("ns/a", |_| false, |_| false));
    }
}
