//! Per-endpoint connection pools on hyper's low-level client connections.
//!
//! Istio's sidecar keeps connection pools per upstream host *and* per transport socket
//! (plaintext, mTLS with a given identity): two destinations that reach one IP with
//! different TLS settings never share a connection. hyper-util's pooled client keys on the
//! authority alone and cannot express that, nor the DestinationRule `connectionPool` limits,
//! so tower-mesh keeps its own pools on `hyper::client::conn`:
//!
//! - a [`Pool`] holds the connections to one [`PoolKey`] (endpoint address, [`TlsPolicy`],
//!   [`UpstreamProtocol`]) and sends requests over them ([`Pool::send`]);
//! - [`Pools`] is the registry of pools, shared by every destination;
//! - a [`Connect`] is the connector slot: [`TcpConnector`] (the default) opens plaintext TCP,
//!   [`TlsConnector`](crate::tls::TlsConnector) originates (m)TLS.
//!
//! ```no_run
//! # async fn demo() -> Result<(), tower_mesh::error::Error> {
//! use tower_mesh::pool::{PoolKey, PoolSettings, Pools, TlsPolicy, UpstreamProtocol};
//!
//! let pools = Pools::default(); // plaintext TCP
//! let key = PoolKey {
//!     addr: "10.0.0.7:9080".parse().expect("an address"),
//!     tls: TlsPolicy::Plaintext,
//!     protocol: UpstreamProtocol::Http1,
//!     cluster: None,
//! };
//! let pool = pools.get(&key, &PoolSettings::default());
//! let req = http::Request::get("http://reviews.default.svc.cluster.local:9080/health")
//!     .body(tower_mesh::body::empty())
//!     .expect("a valid request");
//! let resp = pool.send(req).await?;
//! assert!(resp.status().is_success());
//! # Ok(()) }
//! ```

mod body;
mod client;
mod connect;
mod reset;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

pub use client::Pool;
pub use connect::{
    Connect, ConnectFuture, ConnectTarget, Connected, Io, TcpConnector, TlsPolicy, UpstreamProtocol,
};

use crate::config::destination_rule::ConnectionPoolSettings;

/// What a [`Pool`] is for: one endpoint reached with one TLS policy and one protocol.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// The endpoint's address (a registry endpoint, or the resolved authority of a
    /// `resolution: NONE` ServiceEntry).
    pub addr: SocketAddr,
    /// The TLS to originate (DestinationRule `trafficPolicy.tls`; default: plaintext here,
    /// auto mTLS once the security issue lands).
    pub tls: TlsPolicy,
    /// The protocol to speak (from the Service port's protocol; default HTTP/1.1).
    pub protocol: UpstreamProtocol,
    /// The cluster (host, subset, port) the pool serves, as Envoy keeps connection pools per
    /// cluster: two subsets (or a subset and its whole service) with different
    /// `connectionPool` settings for one endpoint get separate pools. `None` for traffic
    /// outside any cluster (passthrough).
    pub cluster: Option<crate::snapshot::ClusterKey>,
}

/// The limits and timeouts of a [`Pool`], from a DestinationRule `trafficPolicy.connectionPool`
/// ([`PoolSettings::from_connection_pool`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSettings {
    /// At most this many HTTP/1.1 connections in this pool (one endpoint); requests beyond
    /// wait for one to come free. `None` is unbounded; `Some(0)` is treated as 1. HTTP/2
    /// always uses one connection. The mesh leaves it `None` and bounds
    /// `connectionPool.tcp.maxConnections` cluster-wide with
    /// [`connection_limit`](Self::connection_limit) instead, as Envoy does.
    pub max_http1_connections: Option<usize>,
    /// The cluster-wide connection budget this pool's HTTP/1.1 connections count against
    /// (DestinationRule `connectionPool.tcp.maxConnections`, summed over the cluster's
    /// endpoints, Envoy's threshold): a new connection waits for a free one as a pending
    /// request (bounded by `http1MaxPendingRequests`, beyond which it is 503 `UO`).
    pub connection_limit: Option<ConnectionLimit>,
    /// `connectionPool.http.maxRequestsPerConnection`: a connection that served this many
    /// requests is closed. `None` or `Some(0)` (Istio's default) is unlimited; 1 disables
    /// keep-alive.
    pub max_requests_per_connection: Option<u32>,
    /// `connectionPool.http.idleTimeout` (or `tcp.idleTimeout`): an idle connection is closed
    /// after this long. Istio's default is 1 h; zero disables it.
    pub idle_timeout: Duration,
    /// `connectionPool.tcp.connectTimeout`: the connect (including any TLS handshake the
    /// connector does) must finish within this. Istio's default is 10 s.
    pub connect_timeout: Duration,
}

/// A cluster's connection budget, shared by the pools of its endpoints.
#[derive(Debug, Clone)]
pub struct ConnectionLimit {
    /// The cluster's circuit breaker (its connection and pending counters).
    pub breaker: crate::resilience::circuit::CircuitBreaker,
    /// Its limits (`maxConnections`, `http1MaxPendingRequests`).
    pub limits: crate::resilience::circuit::CircuitLimits,
    /// The cluster, for the overflow error.
    pub cluster: crate::snapshot::ClusterKey,
}

impl PartialEq for ConnectionLimit {
    fn eq(&self, other: &Self) -> bool {
        self.breaker.same_as(&other.breaker)
            && self.limits == other.limits
            && self.cluster == other.cluster
    }
}

impl Eq for ConnectionLimit {}

/// Istio's default `connectionPool.tcp.connectTimeout`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Istio's default `connectionPool.http.idleTimeout`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

impl Default for PoolSettings {
    /// Istio's defaults: unlimited connections and requests per connection, 1 h idle timeout,
    /// 10 s connect timeout.
    fn default() -> Self {
        PoolSettings {
            max_http1_connections: None,
            connection_limit: None,
            max_requests_per_connection: None,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }
}

impl PoolSettings {
    /// The settings a DestinationRule `connectionPool` gives (`None`: Istio's defaults).
    ///
    /// `tcp.maxConnections` → [`max_http1_connections`](Self::max_http1_connections) (a
    /// negative value, which validation rejects, counts as unset);
    /// `http.maxRequestsPerConnection` → [`max_requests_per_connection`](Self::max_requests_per_connection);
    /// `http.idleTimeout`, else `tcp.idleTimeout`, → [`idle_timeout`](Self::idle_timeout);
    /// `tcp.connectTimeout` → [`connect_timeout`](Self::connect_timeout).
    pub fn from_connection_pool(pool: Option<&ConnectionPoolSettings>) -> PoolSettings {
        let mut settings = PoolSettings::default();
        let Some(pool) = pool else { return settings };
        if let Some(tcp) = &pool.tcp {
            settings.max_http1_connections =
                tcp.max_connections.and_then(|n| usize::try_from(n).ok());
            if let Some(t) = tcp.connect_timeout {
                settings.connect_timeout = t;
            }
            if let Some(t) = tcp.idle_timeout {
                settings.idle_timeout = t;
            }
        }
        if let Some(http) = &pool.http {
            settings.max_requests_per_connection = http
                .max_requests_per_connection
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| *n > 0);
            if let Some(t) = http.idle_timeout {
                settings.idle_timeout = t;
            }
        }
        settings
    }
}

/// A snapshot of a [`Pool`]'s state, for tests and circuit breaking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolStats {
    /// Open connections (HTTP/1.1: connecting, busy and idle; HTTP/2: 0 or 1).
    pub connections: usize,
    /// Idle HTTP/1.1 connections.
    pub idle: usize,
    /// Requests sent and not finished (their response body not yet ended or dropped).
    pub in_flight: usize,
    /// Requests waiting for an HTTP/1.1 connection to come free (Istio's
    /// `http1MaxPendingRequests` counts these).
    pub pending: usize,
}

/// Endpoints a [`PoolCache`] remembers at most (beyond, lookups go through the registry).
const POOL_CACHE_CAP: usize = 64;

/// A destination's memo of the pools of its endpoints ([`Pools::get_cached`]): weak
/// references, so a pool lives only as long as [`Pools`] (or a request) holds it.
#[derive(Default)]
pub(crate) struct PoolCache {
    entries: arc_swap::ArcSwap<Vec<CachedPool>>,
}

impl std::fmt::Debug for PoolCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolCache")
            .field("len", &self.entries.load().len())
            .finish()
    }
}

#[derive(Clone)]
struct CachedPool {
    /// The registry the pool came from (identity only).
    owner: std::sync::Weak<PoolsInner>,
    addr: SocketAddr,
    protocol: UpstreamProtocol,
    pool: std::sync::Weak<Pool>,
}

/// `a == b`, by pointer first (a cluster's pools keep the key's strings they were made
/// with).
fn same_cluster(a: &crate::snapshot::ClusterKey, b: &crate::snapshot::ClusterKey) -> bool {
    let same = |x: &Arc<str>, y: &Arc<str>| Arc::ptr_eq(x, y) || x == y;
    a.port == b.port
        && same(&a.host, &b.host)
        && match (&a.subset, &b.subset) {
            (None, None) => true,
            (Some(x), Some(y)) => same(x, y),
            _ => false,
        }
}

/// The registry of [`Pool`]s, one per [`PoolKey`], sharing one [`Connect`].
///
/// Cheap to clone (an `Arc` inside). Pools survive config reloads: a reload calls
/// [`Pools::retain`] with the keys still in use.
#[derive(Clone)]
pub struct Pools {
    inner: Arc<PoolsInner>,
}

struct PoolsInner {
    connector: Arc<dyn Connect>,
    pools: Mutex<HashMap<PoolKey, Arc<Pool>>>,
}

impl std::fmt::Debug for Pools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pools").field("len", &self.len()).finish()
    }
}

impl Default for Pools {
    /// Pools connecting with [`TcpConnector`] (plaintext).
    fn default() -> Self {
        Pools::new(Arc::new(TcpConnector))
    }
}

impl Pools {
    /// An empty registry whose pools connect with `connector`.
    pub fn new(connector: Arc<dyn Connect>) -> Pools {
        Pools {
            inner: Arc::new(PoolsInner {
                connector,
                pools: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The pool for `key`, created with `settings` if there is none. A pool whose settings
    /// differ from `settings` (a DestinationRule changed) is replaced by a new one; requests
    /// still using the old one finish on it.
    pub fn get(&self, key: &PoolKey, settings: &PoolSettings) -> Arc<Pool> {
        let mut pools = self.lock();
        if let Some(pool) = pools.get(key)
            && pool.settings() == settings
        {
            return pool.clone();
        }
        let pool = Arc::new(Pool::new(
            key.clone(),
            settings.clone(),
            self.inner.connector.clone(),
        ));
        // The replaced pool (if any) is dropped after the lock, with the guard.
        let old = pools.insert(key.clone(), pool.clone());
        drop(pools);
        if let Some(old) = &old {
            old.retire();
        }
        drop(old);
        pool
    }

    /// [`get`](Self::get) of the key of `addr`, `tls`, `protocol` and `cluster`, through
    /// `cache`, a destination's memo of its endpoints' pools: a hit (same `Pools`, same key,
    /// same settings, pool still held here) takes no lock, hashes nothing and builds no key;
    /// a miss falls back to `get` and remembers its answer.
    pub(crate) fn get_cached(
        &self,
        cache: &PoolCache,
        (addr, tls, protocol): (SocketAddr, TlsPolicy, UpstreamProtocol),
        cluster: &crate::snapshot::ClusterKey,
        settings: &PoolSettings,
    ) -> Arc<Pool> {
        let owner = Arc::as_ptr(&self.inner);
        {
            let entries = cache.entries.load();
            if let Some(pool) = entries
                .iter()
                .find(|e| e.addr == addr && e.protocol == protocol)
                .filter(|e| std::ptr::eq(e.owner.as_ptr(), owner))
                .and_then(|e| e.pool.upgrade())
                && !pool.is_retired()
                && pool.key().tls == tls
                && pool
                    .key()
                    .cluster
                    .as_ref()
                    .is_some_and(|c| same_cluster(c, cluster))
                && pool.settings() == settings
            {
                return pool;
            }
        }
        let key = &PoolKey {
            addr,
            tls,
            protocol,
            cluster: Some(cluster.clone()),
        };
        let pool = self.get(key, settings);
        let entry = CachedPool {
            owner: Arc::downgrade(&self.inner),
            addr: key.addr,
            protocol: key.protocol,
            pool: Arc::downgrade(&pool),
        };
        cache.entries.rcu(|old| {
            let mut next: Vec<CachedPool> = old
                .iter()
                .filter(|e| {
                    !(e.addr == entry.addr && e.protocol == entry.protocol)
                        && e.pool.strong_count() > 0
                })
                .cloned()
                .collect();
            if next.len() < POOL_CACHE_CAP {
                next.push(entry.clone());
            }
            next
        });
        pool
    }

    /// Keeps the pools whose key `keep` accepts and drops the others (their idle connections
    /// close; requests in flight finish).
    pub fn retain(&self, keep: impl Fn(&PoolKey) -> bool) {
        let removed: Vec<Arc<Pool>> = {
            let mut pools = self.lock();
            let gone: Vec<PoolKey> = pools.keys().filter(|k| !keep(k)).cloned().collect();
            gone.iter().filter_map(|k| pools.remove(k)).collect()
        };
        for pool in &removed {
            pool.retire();
        }
        drop(removed);
    }

    /// The number of pools.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether there are no pools.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PoolKey, Arc<Pool>>> {
        self.inner
            .pools
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}
