//! Circuit breaking: DestinationRule `trafficPolicy.connectionPool` limits, as Envoy's
//! cluster-wide circuit-breaker thresholds.
//!
//! A [`CircuitBreaker`] holds the counters of one destination (host, subset, port), summed over
//! all of its endpoints, as Envoy's `ResourceManager` does for a cluster. It lives in the
//! destination's [`ClusterState`](crate::snapshot::ClusterState), so it survives reloads; the
//! limits ([`CircuitLimits`]) are read from the current config at each call, so a reload that
//! changes a limit applies to the next admission while the counters stay.
//!
//! | Istio field | counts | beyond the limit |
//! |---|---|---|
//! | `connectionPool.http.http2MaxRequests` | requests in flight ([`RequestGuard`]) | `Error::Overflow` (503 `UO`) at once |
//! | `connectionPool.http.http1MaxPendingRequests` | requests waiting for a connection ([`PendingGuard`]) | `Error::Overflow` (503 `UO`) at once |
//! | `connectionPool.tcp.maxConnections` | open connections, all endpoints ([`ConnectionGuard`]) | the request waits as pending ([`CircuitBreaker::wait_for_connection_slot`]) |
//! | `connectionPool.http.maxRetries` | retries in flight ([`RetryGuard`]) | the retry is not made |
//!
//! Each limit defaults to Envoy's (as Istio configures it) 2^32-1, i.e. unlimited, when absent;
//! as Istio does, an explicit `0` (or a negative value, which validation rejects) is treated as
//! absent. Every count is released by dropping its RAII guard.
//!
//! [`CircuitBreakerLayer`] admits each request that the router sent to a cluster, and keeps
//! it counted until its response body ends (Envoy counts the stream until it completes), or the
//! response future or body is dropped.
//!
//! Difference from Envoy: Envoy counts a request toward `http2MaxRequests` only once it is
//! attached to a connection, and toward `http1MaxPendingRequests` while it waits for one. Here
//! the layer counts the whole request as in flight, pending time included, so
//! [`requests`](CircuitBreaker::requests) already includes
//! [`pending`](CircuitBreaker::pending): a retry budget's "active + pending" is `requests()`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::sync::Notify;
use tower::{Layer, Service};

use crate::body::{self, MeshBody};
use crate::config::destination_rule::ConnectionPoolSettings;
use crate::error::{BoxError, Error};
use crate::route::RouteDecision;
use crate::snapshot::{Cluster, ClusterKey, Target};

/// Envoy's default for every threshold as Istio configures it: 2^32-1 (unlimited).
pub const UNLIMITED: u64 = u32::MAX as u64;

/// The Istio field names, as carried by [`Error::Overflow`]'s `limit`.
pub mod field {
    /// `connectionPool.http.http2MaxRequests`.
    pub const MAX_REQUESTS: &str = "connectionPool.http.http2MaxRequests";
    /// `connectionPool.http.http1MaxPendingRequests`.
    pub const MAX_PENDING: &str = "connectionPool.http.http1MaxPendingRequests";
    /// `connectionPool.tcp.maxConnections`.
    pub const MAX_CONNECTIONS: &str = "connectionPool.tcp.maxConnections";
    /// `connectionPool.http.maxRetries`.
    pub const MAX_RETRIES: &str = "connectionPool.http.maxRetries";
}

/// The four thresholds of a destination, read from its DestinationRule `connectionPool`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitLimits {
    /// `tcp.maxConnections`: connections to the destination, all endpoints together. Envoy's
    /// default (as Istio sets it): 2^32-1.
    pub max_connections: u64,
    /// `http.http1MaxPendingRequests`: requests waiting for a connection. Default 2^32-1.
    pub max_pending_requests: u64,
    /// `http.http2MaxRequests`: requests in flight. Default 2^32-1.
    pub max_requests: u64,
    /// `http.maxRetries`: retries in flight. Default 2^32-1. (When a DestinationRule
    /// `retryBudget` is set, Envoy uses the budget instead: the caller then does not ask
    /// [`CircuitBreaker::try_retry`].)
    pub max_retries: u64,
}

impl Default for CircuitLimits {
    fn default() -> Self {
        CircuitLimits {
            max_connections: UNLIMITED,
            max_pending_requests: UNLIMITED,
            max_requests: UNLIMITED,
            max_retries: UNLIMITED,
        }
    }
}

impl CircuitLimits {
    /// The limits of `connectionPool` (`None`: all unlimited). As Istio does
    /// (`applyConnectionPool`), a field that is absent, `0` or negative keeps Envoy's
    /// default of 2^32-1.
    pub fn from_pool(pool: Option<&ConnectionPoolSettings>) -> Self {
        fn limit(v: Option<i32>) -> u64 {
            match v {
                Some(n) if n > 0 => u64::from(n.unsigned_abs()),
                _ => UNLIMITED,
            }
        }
        let tcp = pool.and_then(|p| p.tcp.as_ref());
        let http = pool.and_then(|p| p.http.as_ref());
        CircuitLimits {
            max_connections: limit(tcp.and_then(|t| t.max_connections)),
            max_pending_requests: limit(http.and_then(|h| h.http1_max_pending_requests)),
            max_requests: limit(http.and_then(|h| h.http2_max_requests)),
            max_retries: limit(http.and_then(|h| h.max_retries)),
        }
    }

    /// The limits of `cluster`'s merged policy.
    pub fn of(cluster: &Cluster) -> Self {
        Self::from_pool(cluster.policy().connection_pool.as_ref())
    }
}

/// A threshold was reached: which one. Turn it into the response with
/// [`into_error`](Refused::into_error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// The Istio field whose limit was reached (one of [`field`]).
    pub limit: &'static str,
}

impl Refused {
    /// `Error::Overflow` for the destination `key` (503, flag `UO`).
    pub fn into_error(self, key: &ClusterKey) -> Error {
        Error::Overflow {
            host: key.host.clone(),
            subset: key.subset.clone(),
            limit: self.limit,
        }
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} reached", self.limit)
    }
}

/// How many admissions each threshold refused since the state was created (Envoy's
/// `upstream_rq_pending_overflow`, `upstream_cx_overflow`, `upstream_rq_retry_overflow`, and
/// the `max_requests` overflow).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OverflowCounts {
    /// Refused by `http2MaxRequests`.
    pub requests: u64,
    /// Refused by `http1MaxPendingRequests`.
    pub pending: u64,
    /// Connection attempts refused by `maxConnections` (the request then waited as pending).
    pub connections: u64,
    /// Retries not made because of `maxRetries`.
    pub retries: u64,
}

#[derive(Debug, Default)]
struct Inner {
    requests: AtomicU64,
    pending: AtomicU64,
    connections: AtomicU64,
    retries: AtomicU64,
    overflow_requests: AtomicU64,
    overflow_pending: AtomicU64,
    overflow_connections: AtomicU64,
    overflow_retries: AtomicU64,
    /// Woken (one waiter) each time a connection slot is released.
    connection_released: Notify,
}

/// Takes one unit of `counter` if it is below `max`.
fn acquire(counter: &AtomicU64, max: u64) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .is_ok()
}

fn release(counter: &AtomicU64) {
    // Never below zero, even if a guard were dropped twice (it cannot be).
    let _ = counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
}

/// The circuit-breaker counters of one destination ([module docs](self)).
///
/// Cheap to clone (an `Arc`); clones share the counters. `Default + Send + Sync`: the per
/// destination state keeps one and every call takes the current [`CircuitLimits`].
#[derive(Clone, Default)]
pub struct CircuitBreaker {
    inner: Arc<Inner>,
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("requests", &self.requests())
            .field("pending", &self.pending())
            .field("connections", &self.connections())
            .field("retries", &self.retries())
            .finish()
    }
}

impl CircuitBreaker {
    /// Fresh counters (all zero).
    pub fn new() -> Self {
        Self::default()
    }

    /// Admits a request in flight under `http2MaxRequests`: a guard that counts it until
    /// dropped, or `Refused` (the caller answers 503 `UO` at once) when `limits.max_requests`
    /// requests are already in flight.
    pub fn try_request(&self, limits: &CircuitLimits) -> Result<RequestGuard, Refused> {
        if acquire(&self.inner.requests, limits.max_requests) {
            Ok(RequestGuard(self.guard()))
        } else {
            self.inner.overflow_requests.fetch_add(1, Ordering::Relaxed);
            Err(Refused {
                limit: field::MAX_REQUESTS,
            })
        }
    }

    /// Admits a request into the queue of requests waiting for a connection, under
    /// `http1MaxPendingRequests`: a guard that counts it until dropped (drop it once the
    /// request has a connection), or `Refused` (503 `UO` at once) when the queue is full.
    pub fn try_pending(&self, limits: &CircuitLimits) -> Result<PendingGuard, Refused> {
        if acquire(&self.inner.pending, limits.max_pending_requests) {
            Ok(PendingGuard(self.guard()))
        } else {
            self.inner.overflow_pending.fetch_add(1, Ordering::Relaxed);
            Err(Refused {
                limit: field::MAX_PENDING,
            })
        }
    }

    /// Whether `other` is a handle to the same counters.
    pub fn same_as(&self, other: &CircuitBreaker) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// A slot for one new connection to any endpoint of the destination, under
    /// `tcp.maxConnections`: a guard the pool keeps as long as the connection is open, or
    /// `None` when the destination already has `limits.max_connections` connections (the
    /// request should then reuse a connection or wait: see
    /// [`wait_for_connection_slot`](Self::wait_for_connection_slot)).
    pub fn try_open_connection(&self, limits: &CircuitLimits) -> Option<ConnectionGuard> {
        if acquire(&self.inner.connections, limits.max_connections) {
            Some(ConnectionGuard(self.guard()))
        } else {
            self.inner
                .overflow_connections
                .fetch_add(1, Ordering::Relaxed);
            None
        }
    }

    /// A slot for one new connection, waiting for one to be released when the destination is
    /// at `tcp.maxConnections`. While it waits, the request counts as pending
    /// (`http1MaxPendingRequests`): when the pending queue is full it is refused at once
    /// (503 `UO`). Nothing queues without bound; the wait itself is bounded by the caller's
    /// timeouts (drop the future to give up, which releases the pending count).
    ///
    /// A pool that can also serve the request on a connection that becomes idle should
    /// instead hold a [`PendingGuard`] and race [`try_open_connection`](Self::try_open_connection)
    /// after [`connection_released`](Self::connection_released) against its own idle
    /// notification.
    pub async fn wait_for_connection_slot(
        &self,
        limits: &CircuitLimits,
    ) -> Result<ConnectionGuard, Refused> {
        if let Some(guard) = self.try_open_connection(limits) {
            return Ok(guard);
        }
        let _pending = self.try_pending(limits)?;
        loop {
            let notified = self.inner.connection_released.notified();
            tokio::pin!(notified);
            // Register before trying, so a release between the try and the await is not lost.
            notified.as_mut().enable();
            if acquire(&self.inner.connections, limits.max_connections) {
                return Ok(ConnectionGuard(self.guard()));
            }
            notified.await;
        }
    }

    /// Resolves when a connection slot is released (wakes one waiter per release).
    pub async fn connection_released(&self) {
        self.inner.connection_released.notified().await;
    }

    /// Admits one retry under `http.maxRetries`: a guard counting it until dropped (hold it
    /// for the retry's whole try), or `None`: the retry is not made and the caller returns the
    /// original response or error, as Envoy does (`upstream_rq_retry_overflow`).
    pub fn try_retry(&self, limits: &CircuitLimits) -> Option<RetryGuard> {
        if acquire(&self.inner.retries, limits.max_retries) {
            Some(RetryGuard(self.guard()))
        } else {
            self.inner.overflow_retries.fetch_add(1, Ordering::Relaxed);
            None
        }
    }

    /// Requests in flight (admitted by [`try_request`](Self::try_request), pending included).
    pub fn requests(&self) -> u64 {
        self.inner.requests.load(Ordering::Acquire)
    }

    /// Requests waiting for a connection.
    pub fn pending(&self) -> u64 {
        self.inner.pending.load(Ordering::Acquire)
    }

    /// Open connections (slots held) to the destination.
    pub fn connections(&self) -> u64 {
        self.inner.connections.load(Ordering::Acquire)
    }

    /// Retries in flight.
    pub fn retries(&self) -> u64 {
        self.inner.retries.load(Ordering::Acquire)
    }

    /// Refusals by each threshold so far.
    pub fn overflows(&self) -> OverflowCounts {
        OverflowCounts {
            requests: self.inner.overflow_requests.load(Ordering::Relaxed),
            pending: self.inner.overflow_pending.load(Ordering::Relaxed),
            connections: self.inner.overflow_connections.load(Ordering::Relaxed),
            retries: self.inner.overflow_retries.load(Ordering::Relaxed),
        }
    }

    fn guard(&self) -> Arc<Inner> {
        Arc::clone(&self.inner)
    }
}

macro_rules! guard {
    ($(#[$doc:meta])* $name:ident, $counter:ident $(, $after:ident)?) => {
        $(#[$doc])*
        #[must_use = "the count is released when the guard is dropped"]
        pub struct $name(Arc<Inner>);

        impl Drop for $name {
            fn drop(&mut self) {
                release(&self.0.$counter);
                $(self.0.$after.notify_one();)?
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(stringify!($name))
            }
        }
    };
}

guard!(
    /// One request in flight (`http2MaxRequests`); released on drop.
    RequestGuard, requests
);
guard!(
    /// One request waiting for a connection (`http1MaxPendingRequests`); released on drop.
    PendingGuard, pending
);
guard!(
    /// One connection open to the destination (`tcp.maxConnections`); released on drop, which
    /// wakes one request waiting for a slot.
    ConnectionGuard, connections, connection_released
);
guard!(
    /// One retry in flight (`http.maxRetries`); released on drop.
    RetryGuard, retries
);

// ---------------------------------------------------------------------------------------------
// Layer
// ---------------------------------------------------------------------------------------------

/// Finds the [`CircuitBreaker`] of a cluster (the lead's stack reads it from the cluster's
/// state: `|c| Some(c.state().circuit_breaker.clone())`).
pub type BreakerLookup = Arc<dyn Fn(&Cluster) -> Option<CircuitBreaker> + Send + Sync>;

/// Admits each routed request under its destination's `http2MaxRequests` and keeps it
/// counted until the response body ends ([module docs](self)).
///
/// Requests without a [`RouteDecision`], to a passthrough target, or to a cluster the lookup
/// has no breaker for, pass unchecked. A refused request is answered with
/// `Err(Error::Overflow { limit: "connectionPool.http.http2MaxRequests", .. })` (503 `UO`)
/// without reaching the inner service.
#[derive(Clone)]
pub struct CircuitBreakerLayer {
    lookup: BreakerLookup,
}

impl fmt::Debug for CircuitBreakerLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerLayer")
            .finish_non_exhaustive()
    }
}

impl CircuitBreakerLayer {
    /// A layer finding each cluster's breaker with `lookup`.
    pub fn new(
        lookup: impl Fn(&Cluster) -> Option<CircuitBreaker> + Send + Sync + 'static,
    ) -> Self {
        CircuitBreakerLayer {
            lookup: Arc::new(lookup),
        }
    }
}

impl<S> Layer<S> for CircuitBreakerLayer {
    type Service = CircuitBreakerService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreakerService {
            lookup: Arc::clone(&self.lookup),
            inner,
        }
    }
}

/// The service of [`CircuitBreakerLayer`].
#[derive(Clone)]
pub struct CircuitBreakerService<S> {
    lookup: BreakerLookup,
    inner: S,
}

impl<S: fmt::Debug> fmt::Debug for CircuitBreakerService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S> Service<Request<MeshBody>> for CircuitBreakerService<S>
where
    S: Service<Request<MeshBody>, Response = Response<MeshBody>, Error = Error>,
{
    type Response = Response<MeshBody>;
    type Error = Error;
    type Future = CircuitFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<MeshBody>) -> Self::Future {
        let cluster = match req.extensions().get::<RouteDecision>().map(|d| d.target()) {
            Some(Target::Cluster(cluster)) => Some(&**cluster),
            _ => None,
        };
        let breaker = cluster.and_then(|c| (self.lookup)(c));
        let guard = match (cluster, breaker) {
            (Some(cluster), Some(breaker)) => {
                match breaker.try_request(&CircuitLimits::of(cluster)) {
                    Ok(guard) => Some(guard),
                    Err(refused) => {
                        return CircuitFuture {
                            inner: None,
                            guard: None,
                            refused: Some(refused.into_error(cluster.key())),
                        };
                    }
                }
            }
            _ => None,
        };
        CircuitFuture {
            inner: Some(self.inner.call(req)),
            guard,
            refused: None,
        }
    }
}

pin_project! {
    /// The future of [`CircuitBreakerService`]: holds the request's [`RequestGuard`] and hands
    /// it to the response body.
    pub struct CircuitFuture<F> {
        #[pin]
        inner: Option<F>,
        guard: Option<RequestGuard>,
        refused: Option<Error>,
    }
}

impl<F> Future for CircuitFuture<F>
where
    F: Future<Output = Result<Response<MeshBody>, Error>>,
{
    type Output = Result<Response<MeshBody>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Some(err) = this.refused.take() {
            return Poll::Ready(Err(err));
        }
        let Some(inner) = this.inner.as_pin_mut() else {
            // Polled after completion: answer as a broken inner service would.
            return Poll::Ready(Err(Error::Other(
                "CircuitFuture polled after completion".into(),
            )));
        };
        let result = ready!(inner.poll(cx));
        let guard = this.guard.take();
        Poll::Ready(result.map(|resp| match guard {
            Some(guard) if !resp.body().is_end_stream() => resp.map(|b| {
                body::boxed(GuardedBody {
                    inner: b,
                    guard: Some(guard),
                })
            }),
            // No guard, or the body has already ended: the guard drops here.
            _ => resp,
        }))
    }
}

pin_project! {
    /// A response body that keeps its request counted until it ends (or is dropped).
    struct GuardedBody {
        #[pin]
        inner: MeshBody,
        guard: Option<RequestGuard>,
    }
}

impl Body for GuardedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        match &frame {
            Some(Ok(_)) => {}
            // The end, or an error (the stream is over either way).
            None | Some(Err(_)) => {
                this.guard.take();
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::time::Duration;

    use http::StatusCode;
    use http_body_util::{BodyExt, StreamBody};
    use tokio::sync::mpsc;
    use tower::ServiceExt;

    use crate::Mesh;
    use crate::config::destination_rule::{HttpSettings, TcpSettings};
    use crate::route::RouteLayer;

    fn limits(connections: u64, pending: u64, requests: u64, retries: u64) -> CircuitLimits {
        CircuitLimits {
            max_connections: connections,
            max_pending_requests: pending,
            max_requests: requests,
            max_retries: retries,
        }
    }

    /// Yields (letting spawned tasks run) until `cond` holds; fails after many rounds.
    async fn until(cond: impl Fn() -> bool) {
        for _ in 0..10_000 {
            if cond() {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("condition never reached");
    }

    #[test]
    fn limits_default_to_unlimited_and_zero_means_absent() {
        assert_eq!(CircuitLimits::from_pool(None), CircuitLimits::default());
        assert_eq!(CircuitLimits::default().max_requests, 4_294_967_295);
        let pool = ConnectionPoolSettings {
            tcp: Some(TcpSettings {
                max_connections: Some(7),
                ..TcpSettings::default()
            }),
            http: Some(HttpSettings {
                http1_max_pending_requests: Some(0),
                http2_max_requests: Some(3),
                max_retries: Some(-1),
                ..HttpSettings::default()
            }),
        };
        assert_eq!(
            CircuitLimits::from_pool(Some(&pool)),
            limits(7, UNLIMITED, 3, UNLIMITED)
        );
    }

    #[test]
    fn in_flight_cap_refuses_the_next_request_at_once_and_releases_on_drop() {
        let cb = CircuitBreaker::new();
        let l = limits(UNLIMITED, UNLIMITED, 2, UNLIMITED);
        let a = cb.try_request(&l);
        let b = cb.try_request(&l);
        assert!(a.is_ok() && b.is_ok());
        assert_eq!(cb.requests(), 2);
        let refused = cb.try_request(&l).err();
        assert_eq!(refused.map(|r| r.limit), Some(field::MAX_REQUESTS));
        assert_eq!(cb.overflows().requests, 1);
        drop(a);
        assert_eq!(cb.requests(), 1);
        assert!(cb.try_request(&l).is_ok(), "a released slot is reusable");
        // The temporary guard above dropped at once.
        assert_eq!(cb.requests(), 1);
        let err = Refused {
            limit: field::MAX_REQUESTS,
        }
        .into_error(&ClusterKey::new("h", Some(Arc::from("v1")), 80));
        assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(err.flags().to_string(), "UO");
        assert!(matches!(err, Error::Overflow { limit, .. } if limit == field::MAX_REQUESTS));
    }

    #[test]
    fn pending_cap_refuses_at_once() {
        let cb = CircuitBreaker::new();
        let l = limits(UNLIMITED, 1, UNLIMITED, UNLIMITED);
        let p = cb.try_pending(&l);
        assert!(p.is_ok());
        assert_eq!(
            cb.try_pending(&l).err().map(|r| r.limit),
            Some(field::MAX_PENDING)
        );
        drop(p);
        assert_eq!(cb.pending(), 0);
        assert!(cb.try_pending(&l).is_ok());
        assert_eq!(cb.overflows().pending, 1);
    }

    #[test]
    fn retry_cap_refuses_the_retry() {
        let cb = CircuitBreaker::new();
        let l = limits(UNLIMITED, UNLIMITED, UNLIMITED, 1);
        let r = cb.try_retry(&l);
        assert!(r.is_some());
        assert!(cb.try_retry(&l).is_none());
        assert_eq!(cb.retries(), 1);
        assert_eq!(cb.overflows().retries, 1);
        drop(r);
        assert!(cb.try_retry(&l).is_some());
        assert_eq!(cb.retries(), 0);
    }

    #[test]
    fn a_lowered_limit_applies_to_the_next_admission_and_counts_survive() {
        let cb = CircuitBreaker::new();
        let _g: Vec<_> = (0..3)
            .filter_map(|_| cb.try_request(&CircuitLimits::default()).ok())
            .collect();
        assert_eq!(cb.requests(), 3);
        // A reload lowers http2MaxRequests to 2: new requests are refused until below it.
        assert!(
            cb.try_request(&limits(UNLIMITED, UNLIMITED, 2, UNLIMITED))
                .is_err()
        );
        // A clone shares the counters.
        assert_eq!(cb.clone().requests(), 3);
    }

    #[tokio::test]
    async fn connection_cap_makes_requests_wait_as_pending() {
        let cb = CircuitBreaker::new();
        let l = limits(1, 1, UNLIMITED, UNLIMITED);
        let first = cb.try_open_connection(&l);
        assert!(first.is_some());
        assert!(cb.try_open_connection(&l).is_none());
        assert_eq!(cb.overflows().connections, 1);

        // A second request waits for a slot, counted as pending.
        let waiter = {
            let cb = cb.clone();
            tokio::spawn(async move { cb.wait_for_connection_slot(&l).await })
        };
        until(|| cb.pending() == 1).await;
        assert!(!waiter.is_finished());
        // A third finds the pending queue full: refused at once.
        let third = cb.wait_for_connection_slot(&l).await;
        assert_eq!(third.err().map(|r| r.limit), Some(field::MAX_PENDING));

        // The first connection closes: the waiter gets the slot and leaves the queue.
        drop(first);
        let got = waiter.await.ok().and_then(Result::ok);
        assert!(got.is_some());
        assert_eq!(cb.connections(), 1);
        assert_eq!(cb.pending(), 0);
        drop(got);
        assert_eq!(cb.connections(), 0);
    }

    #[tokio::test]
    async fn a_cancelled_waiter_releases_its_pending_count() {
        let cb = CircuitBreaker::new();
        let l = limits(1, 2, UNLIMITED, UNLIMITED);
        let first = cb.try_open_connection(&l);
        let spawn_waiter = || {
            let cb = cb.clone();
            tokio::spawn(async move { cb.wait_for_connection_slot(&l).await.is_ok() })
        };
        let a = spawn_waiter();
        until(|| cb.pending() == 1).await;
        let b = spawn_waiter();
        until(|| cb.pending() == 2).await;
        a.abort();
        assert!(a.await.is_err());
        assert_eq!(cb.pending(), 1);
        drop(first);
        assert_eq!(b.await.ok(), Some(true));
        assert_eq!(cb.pending(), 0);
    }

    // --- the layer, over a routed request -------------------------------------------------

    const CONFIG: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: my-app, namespace: default}
spec:
  hosts: [my-app.default.svc.cluster.local]
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.1}, {address: 127.0.0.2}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: my-app, namespace: default}
spec:
  host: my-app.default.svc.cluster.local
  trafficPolicy:
    connectionPool:
      http: {http2MaxRequests: 2}
"#;

    type Breakers = Arc<Mutex<HashMap<ClusterKey, CircuitBreaker>>>;

    /// A layer whose breakers live in a side table (the lead's will live in ClusterState).
    fn layer_with_table() -> (CircuitBreakerLayer, Breakers) {
        let table: Breakers = Arc::default();
        let t = Arc::clone(&table);
        let layer = CircuitBreakerLayer::new(move |c: &Cluster| {
            let mut map = t.lock().ok()?;
            Some(map.entry(c.key().clone()).or_default().clone())
        });
        (layer, table)
    }

    fn breaker(table: &Breakers) -> CircuitBreaker {
        let map = table.lock().expect("lock");
        map.values().next().cloned().expect("one breaker")
    }

    fn request() -> Request<MeshBody> {
        Request::builder()
            .uri("http://my-app.default.svc.cluster.local/")
            .body(body::empty())
            .expect("valid request")
    }

    /// Answers each request with a streaming body whose sender is handed to the test.
    fn streaming_inner(
        senders: mpsc::UnboundedSender<mpsc::Sender<Result<Frame<Bytes>, BoxError>>>,
    ) -> impl Service<
        Request<MeshBody>,
        Response = Response<MeshBody>,
        Error = Error,
        Future = impl Future<Output = Result<Response<MeshBody>, Error>> + Send,
    > + Clone
    + Send {
        tower::service_fn(move |_req: Request<MeshBody>| {
            let senders = senders.clone();
            async move {
                let (tx, rx) = mpsc::channel(4);
                let _ = senders.send(tx);
                let stream = futures_stream(rx);
                Ok::<_, Error>(Response::new(body::boxed(StreamBody::new(stream))))
            }
        })
    }

    /// A `Stream` over an mpsc receiver, without tokio-stream.
    fn futures_stream(
        rx: mpsc::Receiver<Result<Frame<Bytes>, BoxError>>,
    ) -> impl futures_core::Stream<Item = Result<Frame<Bytes>, BoxError>> + Send {
        struct Rx(mpsc::Receiver<Result<Frame<Bytes>, BoxError>>);
        impl futures_core::Stream for Rx {
            type Item = Result<Frame<Bytes>, BoxError>;
            fn poll_next(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
            ) -> Poll<Option<Self::Item>> {
                self.0.poll_recv(cx)
            }
        }
        Rx(rx)
    }

    #[tokio::test]
    async fn layer_caps_in_flight_requests_until_the_body_ends() {
        let mesh = Mesh::builder()
            .config_str("cb.yaml", CONFIG)
            .build()
            .expect("valid config");
        let (senders_tx, mut senders) = mpsc::unbounded_channel();
        let (layer, table) = layer_with_table();
        let mut svc = RouteLayer::new(mesh).layer(layer.layer(streaming_inner(senders_tx)));

        let r1 = svc.ready().await.expect("ready").call(request()).await;
        let r2 = svc.ready().await.expect("ready").call(request()).await;
        let (Ok(r1), Ok(r2)) = (r1, r2);
        assert_eq!(r1.status(), StatusCode::OK);
        assert_eq!(r2.status(), StatusCode::OK);
        let cb = breaker(&table);
        assert_eq!(
            cb.requests(),
            2,
            "responses started, bodies still streaming"
        );

        // A third request is refused at once with 503 UO, and never reaches the inner service.
        let r3 = svc.ready().await.expect("ready").call(request()).await;
        let Ok(r3) = r3;
        assert_eq!(r3.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r3.headers()["x-tower-mesh-flag"], "UO");
        let tx1 = senders.recv().await.expect("first body");
        let tx2 = senders.recv().await.expect("second body");
        assert!(
            senders.try_recv().is_err(),
            "the refused request was not sent"
        );

        // The first body ends: its slot is released when the end is read.
        let mut b1 = r1.into_body();
        tx1.send(Ok(Frame::data(Bytes::from_static(b"x"))))
            .await
            .expect("send");
        drop(tx1);
        let frame = b1.frame().await;
        assert!(matches!(frame, Some(Ok(_))));
        assert_eq!(cb.requests(), 2, "still streaming after a data frame");
        assert!(b1.frame().await.is_none());
        assert_eq!(cb.requests(), 1, "released at body end");

        // The second body is dropped unread: released too.
        drop(r2);
        drop(tx2);
        assert_eq!(cb.requests(), 0);
        let r4 = svc.ready().await.expect("ready").call(request()).await;
        assert!(matches!(r4, Ok(r) if r.status() == StatusCode::OK));
    }

    #[tokio::test]
    async fn layer_releases_on_error_and_on_a_body_already_ended() {
        let mesh = Mesh::builder()
            .config_str("cb.yaml", CONFIG)
            .build()
            .expect("valid config");
        let (layer, table) = layer_with_table();
        let calls = Arc::new(AtomicU64::new(0));
        let c = Arc::clone(&calls);
        let inner = tower::service_fn(move |_req: Request<MeshBody>| {
            let n = c.fetch_add(1, Ordering::SeqCst);
            async move {
                if n.is_multiple_of(2) {
                    Err(Error::UpstreamReset {
                        reason: crate::error::ResetReason::ConnectionFailure,
                        transport_failure: None,
                    })
                } else {
                    Ok(Response::new(body::empty()))
                }
            }
        });
        let mut svc = RouteLayer::new(mesh).layer(layer.layer(inner));
        for i in 0..6 {
            let resp = svc.ready().await.expect("ready").call(request()).await;
            let Ok(resp) = resp;
            let want = if i % 2 == 0 { 503 } else { 200 };
            assert_eq!(resp.status().as_u16(), want);
            assert_ne!(
                resp.headers()
                    .get("x-tower-mesh-flag")
                    .map(|v| v.as_bytes()),
                Some(&b"UO"[..]),
                "never an overflow: every request was released"
            );
        }
        assert_eq!(calls.load(Ordering::SeqCst), 6);
        assert_eq!(breaker(&table).requests(), 0);
    }

    #[tokio::test]
    async fn dropping_the_response_future_releases_the_request() {
        let mesh = Mesh::builder()
            .config_str("cb.yaml", CONFIG)
            .build()
            .expect("valid config");
        let (layer, table) = layer_with_table();
        let inner = tower::service_fn(|_req: Request<MeshBody>| {
            std::future::pending::<Result<Response<MeshBody>, Error>>()
        });
        let mut svc = RouteLayer::new(mesh).layer(layer.layer(inner));
        let fut = svc.ready().await.expect("ready").call(request());
        let timed_out = tokio::time::timeout(Duration::from_millis(20), fut).await;
        assert!(timed_out.is_err());
        assert_eq!(breaker(&table).requests(), 0);
    }
}
