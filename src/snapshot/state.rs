//! The state registry: per-destination state that must outlive a config reload.
//!
//! A [`Snapshot`](crate::snapshot::Snapshot) is immutable and replaced whole on every reload,
//! but some state belongs to the traffic, not to the config: the round-robin position, and in
//! later layers circuit-breaker counters, outlier-detection statistics, EWMA latencies and
//! retry budgets. That state lives here, keyed by [`ClusterKey`] (host, subset, port). A
//! compile asks the registry for the state of every cluster it builds
//! ([`StateRegistry::cluster`]): a key that existed before gets the same `Arc`, so a reload
//! that keeps a destination keeps its state; after the new snapshot is published,
//! [`StateRegistry::retain`] drops the state of keys that no longer exist.
//!
//! The registry is only touched while compiling (a short, synchronous lock); requests reach
//! their cluster's state through the snapshot, without locking.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// A destination as Envoy's cluster names it: `outbound|<port>|<subset>|<host>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClusterKey {
    /// The service host (an FQDN, or the ServiceEntry host as written).
    pub host: Arc<str>,
    /// The DestinationRule subset; `None` for the whole service.
    pub subset: Option<Arc<str>>,
    /// The service port.
    pub port: u16,
}

impl ClusterKey {
    /// A key for `host`, `subset` and `port`.
    pub fn new(host: impl Into<Arc<str>>, subset: Option<Arc<str>>, port: u16) -> Self {
        ClusterKey {
            host: host.into(),
            subset,
            port,
        }
    }
}

impl fmt::Display for ClusterKey {
    /// Envoy's cluster name, `outbound|80|v1|my-app.default.svc.cluster.local`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "outbound|{}|{}|{}",
            self.port,
            self.subset.as_deref().unwrap_or(""),
            self.host
        )
    }
}

/// The state of one cluster that survives reloads.
///
/// Counters are atomics and the detectors take short, synchronous locks: layers update them
/// per request without holding anything across an `.await`.
#[derive(Debug, Default)]
pub struct ClusterState {
    next: AtomicUsize,
    requests: AtomicU64,
    /// The cluster-wide circuit-breaker counters (DestinationRule `connectionPool`).
    pub circuit_breaker: crate::resilience::circuit::CircuitBreaker,
    /// Passive health of the cluster's endpoints (DestinationRule `outlierDetection`).
    pub outlier: crate::resilience::outlier::OutlierDetector,
    /// Load-balancer state: cursors, requests in flight per endpoint, hash tables.
    pub lb: crate::balance::LbState,
    /// Retries in flight against the DestinationRule `retryBudget`.
    pub retry_budget: crate::resilience::retry::RetryBudgetState,
    /// The pools of the cluster's endpoints, remembered to skip the pool registry's lock.
    pools: crate::pool::PoolCache,
}

impl ClusterState {
    /// The next round-robin position (wrapping), for choosing among `n` endpoints.
    pub fn next_index(&self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        self.next.fetch_add(1, Ordering::Relaxed) % n
    }

    /// The memo of the cluster's endpoint pools.
    pub(crate) fn pool_cache(&self) -> &crate::pool::PoolCache {
        &self.pools
    }

    /// Counts a request sent to the cluster.
    pub fn record_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests sent to the cluster since its state was created (across reloads).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

/// The registry of [`ClusterState`], shared by every snapshot a [`Mesh`](crate::Mesh) compiles.
#[derive(Debug, Default)]
pub struct StateRegistry {
    clusters: Mutex<HashMap<ClusterKey, Arc<ClusterState>>>,
}

impl StateRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The state of `key`: the existing one, or a fresh one.
    pub fn cluster(&self, key: &ClusterKey) -> Arc<ClusterState> {
        let mut map = self.clusters.lock().unwrap_or_else(PoisonError::into_inner);
        map.entry(key.clone()).or_default().clone()
    }

    /// Drops the state of every key not in `live` (called after a new snapshot is published).
    /// Returns how many were dropped.
    pub fn retain(&self, live: &HashSet<ClusterKey>) -> usize {
        let mut map = self.clusters.lock().unwrap_or_else(PoisonError::into_inner);
        let before = map.len();
        map.retain(|k, _| live.contains(k));
        before - map.len()
    }

    /// The number of clusters with state.
    pub fn len(&self) -> usize {
        self.clusters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no cluster has state.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(host: &str, subset: Option<&str>, port: u16) -> ClusterKey {
        ClusterKey::new(host, subset.map(Arc::from), port)
    }

    #[test]
    fn state_of_a_kept_key_survives_and_others_are_dropped() {
        let reg = StateRegistry::new();
        let a = reg.cluster(&key("a", Some("v1"), 80));
        a.record_request();
        let _b = reg.cluster(&key("b", None, 80));
        assert_eq!(reg.len(), 2);

        let live: HashSet<_> = [key("a", Some("v1"), 80)].into_iter().collect();
        assert_eq!(reg.retain(&live), 1);
        let again = reg.cluster(&key("a", Some("v1"), 80));
        assert!(Arc::ptr_eq(&a, &again));
        assert_eq!(again.requests(), 1);
        // A different port or subset is a different cluster.
        assert!(!Arc::ptr_eq(&a, &reg.cluster(&key("a", Some("v1"), 81))));
        assert!(!Arc::ptr_eq(&a, &reg.cluster(&key("a", None, 80))));
    }

    #[test]
    fn round_robin_cycles_and_tolerates_zero() {
        let s = ClusterState::default();
        let picks: Vec<_> = (0..6).map(|_| s.next_index(3)).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        assert_eq!(s.next_index(0), 0);
    }

    #[test]
    fn key_displays_as_envoy_cluster_name() {
        assert_eq!(
            key("my-app.default.svc.cluster.local", Some("v1"), 80).to_string(),
            "outbound|80|v1|my-app.default.svc.cluster.local"
        );
        assert_eq!(key("x", None, 9).to_string(), "outbound|9||x");
    }
}
