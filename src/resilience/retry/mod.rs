//! Retries (VirtualService `http[].retries`), retry budgets (DestinationRule
//! `trafficPolicy.retryBudget`), request-body replay and the route timeout.
//!
//! - [`RetryPolicy`]: a route's `retries`, or Istio's default when absent, parsed once per
//!   request into plain data; [`RetryOn`] is the `retryOn` vocabulary and its classification
//!   of one try's [`Outcome`].
//! - [`RetryLayer`] / [`RetryService`]: tries a request again while its policy says so, each
//!   try with a replayed body ([`ReplayBody`]), a [`TryContext`] for previous-host avoidance,
//!   `perTryTimeout`, and [`Backoff`] between tries; retries pass a [`RetryGate`] first
//!   ([`BudgetGate`] enforces `retryBudget`).
//! - [`TimeoutLayer`] / [`TimeoutService`]: the route's `timeout` over the whole call.
//!
//! As in Envoy, the layers stack `TimeoutLayer → RetryLayer → (circuit breaker, balancer,
//! pool)`: the route timeout covers every try and backoff; `perTryTimeout` covers one try.
//!
//! ```
//! use tower_mesh::resilience::retry::{Outcome, RetryPolicy};
//! use tower_mesh::config::virtual_service::HttpRetry;
//! use http::{HeaderMap, StatusCode};
//!
//! // No `retries` on the route: Istio's default, 2 retries, 503 not among them.
//! let policy = RetryPolicy::from_route(None, false);
//! assert_eq!(policy.attempts(), 2);
//! let headers = HeaderMap::new();
//! let unavailable = Outcome::Response { status: StatusCode::SERVICE_UNAVAILABLE, headers: &headers };
//! assert!(!policy.should_retry(unavailable));
//!
//! let retries = HttpRetry { attempts: Some(3), retry_on: "5xx".into(), ..Default::default() };
//! let policy = RetryPolicy::from_route(Some(&retries), false);
//! assert!(policy.should_retry(unavailable));
//! ```

pub mod backoff;
pub mod budget;
pub mod replay;
pub mod retry_on;
pub mod timeout;

#[cfg(test)]
mod tests;

pub use backoff::{Backoff, DEFAULT_BASE as DEFAULT_BACKOFF_BASE, Jitter};
pub use budget::{
    DEFAULT_MIN_RETRY_CONCURRENCY, DEFAULT_PERCENT, RetryBudgetState, RetryCount, RetryRefused,
    TryCount,
};
pub use replay::{DEFAULT_REPLAY_LIMIT, ReplayBody};
pub use retry_on::{ISTIO_DEFAULT_RETRY_ON, Outcome, RetryCondition, RetryOn, RetryOnError};
pub use timeout::{TimeoutFuture, TimeoutLayer, TimeoutService, effective_timeout, grpc_timeout};

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use http::request::Parts;
use http::{Request, Response};
use http_body::Body;
use tower::{Layer, Service, ServiceExt};

use crate::body::{self, MeshBody};
use crate::config::virtual_service::HttpRetry;
use crate::error::{Error, ResponseFlag, ResponseFlags};
use crate::route::RouteDecision;
use crate::snapshot::{Cluster, ClusterKey, ClusterState, Target};

// ---------------------------------------------------------------------------------------------
// Policy
// ---------------------------------------------------------------------------------------------

/// Istio's default number of retries when a route has no `retries` (mesh
/// `defaultHttpRetryPolicy.attempts`).
pub const ISTIO_DEFAULT_ATTEMPTS: u32 = 2;

/// A route's retry policy as plain data: what Istio's `retry.ConvertPolicy` hands Envoy.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RetryPolicy {
    attempts: u32,
    retry_on: RetryOn,
    per_try_timeout: Option<Duration>,
    backoff: Backoff,
    ignore_previous_hosts: bool,
    retry_remote_localities: bool,
}

impl RetryPolicy {
    /// The policy of a route whose `retries` is `retries`:
    ///
    /// - absent: Istio's default, `attempts: 2` on
    ///   `connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes` with no
    ///   status codes ([`ISTIO_DEFAULT_RETRY_ON`]);
    /// - `attempts` absent or `0`: retries disabled (the other fields are then ignored, as
    ///   Istio's validation requires them unset);
    /// - `retryOn` empty: the default list; otherwise parsed ([`RetryOn::parse_lenient`]);
    /// - `perTryTimeout`: absent = none (bounded by the route timeout);
    /// - `backoff`: base interval, Envoy's 25 ms when absent, capped at 10 × base;
    /// - `retryIgnorePreviousHosts`: absent = on, except off when the destination uses
    ///   consistent hashing (`consistent_hash`); an explicit value wins either way;
    /// - `retryRemoteLocalities`: absent = off; carried to the balancer in [`TryContext`].
    pub fn from_route(retries: Option<&HttpRetry>, consistent_hash: bool) -> Self {
        let Some(r) = retries else {
            return RetryPolicy {
                attempts: ISTIO_DEFAULT_ATTEMPTS,
                retry_on: RetryOn::istio_default(),
                per_try_timeout: None,
                backoff: Backoff::default(),
                ignore_previous_hosts: !consistent_hash,
                retry_remote_localities: false,
            };
        };
        let attempts = r.attempts.and_then(|a| u32::try_from(a).ok()).unwrap_or(0);
        if attempts == 0 {
            return Self::disabled();
        }
        RetryPolicy {
            attempts,
            retry_on: RetryOn::parse_lenient(&r.retry_on),
            per_try_timeout: r.per_try_timeout.filter(|t| !t.is_zero()),
            backoff: Backoff::new(r.backoff.unwrap_or(backoff::DEFAULT_BASE)),
            ignore_previous_hosts: r.retry_ignore_previous_hosts.unwrap_or(!consistent_hash),
            retry_remote_localities: r.retry_remote_localities.unwrap_or(false),
        }
    }

    /// No retries (`attempts: 0`).
    pub fn disabled() -> Self {
        RetryPolicy {
            attempts: 0,
            retry_on: RetryOn::none(),
            per_try_timeout: None,
            backoff: Backoff::default(),
            ignore_previous_hosts: false,
            retry_remote_localities: false,
        }
    }

    /// Retries after the first try (`attempts`).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The parsed `retryOn`.
    pub fn retry_on(&self) -> &RetryOn {
        &self.retry_on
    }

    /// `perTryTimeout`.
    pub fn per_try_timeout(&self) -> Option<Duration> {
        self.per_try_timeout
    }

    /// The backoff between tries.
    pub fn backoff(&self) -> Backoff {
        self.backoff
    }

    /// Whether retries avoid the endpoints already tried (`retryIgnorePreviousHosts`).
    pub fn ignore_previous_hosts(&self) -> bool {
        self.ignore_previous_hosts
    }

    /// `retryRemoteLocalities`.
    pub fn retry_remote_localities(&self) -> bool {
        self.retry_remote_localities
    }

    /// Whether any retry can happen.
    pub fn is_enabled(&self) -> bool {
        self.attempts > 0 && !self.retry_on.is_empty()
    }

    /// Whether a try that ended with `outcome` is retried (attempts left aside).
    pub fn should_retry(&self, outcome: Outcome<'_>) -> bool {
        self.attempts > 0 && self.retry_on.matches(outcome)
    }
}

// ---------------------------------------------------------------------------------------------
// Try context
// ---------------------------------------------------------------------------------------------

/// Given to each try by [`RetryService`], in the try's [`RouteDecision`]
/// ([`RouteDecision::try_context`]): which try this is, and the endpoints earlier tries of
/// the same request went to.
///
/// The balancer [`record`](TryContext::record)s the endpoint it picks; on a retry it asks
/// [`should_avoid`](TryContext::should_avoid) to prefer an endpoint not yet tried (Envoy's
/// `previous_hosts` retry predicate, on unless `retryIgnorePreviousHosts: false` or consistent
/// hashing). All tries of a request share the list.
#[derive(Clone)]
pub struct TryContext {
    attempt: u32,
    shared: Arc<TryShared>,
    avoid_previous: bool,
    remote_localities: bool,
}

/// What every try of a request shares (one allocation per request).
struct TryShared {
    tried: Mutex<Tried>,
    /// The request's head as it reached the retry layer: what retries are rebuilt from.
    head: Option<Head>,
    /// Whether the layers below may replay the head as it is ([`TryContext::replay_request`]):
    /// set by a [`RetryLayer`] whose inner service sends its requests unchanged to the pool.
    head_for_pool: bool,
}

impl fmt::Debug for TryContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TryContext")
            .field("attempt", &self.attempt)
            .field("tried", &self.tried())
            .field("avoid_previous", &self.avoid_previous)
            .finish()
    }
}

impl TryContext {
    /// The context of the first try of a request.
    pub fn new(policy: &RetryPolicy) -> Self {
        Self::with_head(policy, None, false)
    }

    /// The context of the first try of a request whose head is `head` (what retries are
    /// rebuilt from); `for_pool`: the pool may replay it too.
    fn with_head(policy: &RetryPolicy, head: Option<Head>, for_pool: bool) -> Self {
        TryContext {
            attempt: 1,
            shared: Arc::new(TryShared {
                tried: Mutex::default(),
                head,
                head_for_pool: for_pool,
            }),
            avoid_previous: policy.ignore_previous_hosts,
            remote_localities: policy.retry_remote_localities,
        }
    }

    /// The context of the first try of `req` (routed by `decision`), keeping a copy of its
    /// head for retries; `for_pool`: the pool may replay it too. (The copy is made in place
    /// in the shared allocation, not moved into it.)
    fn of_request<B>(
        policy: &RetryPolicy,
        req: &Request<B>,
        decision: &RouteDecision,
        for_pool: bool,
    ) -> Self {
        TryContext {
            attempt: 1,
            shared: Arc::new(TryShared {
                tried: Mutex::default(),
                head: Some(Head::of(req, decision)),
                head_for_pool: for_pool,
            }),
            avoid_previous: policy.ignore_previous_hosts,
            remote_localities: policy.retry_remote_localities,
        }
    }

    /// A copy of the request this try sends, without body and extensions, when the retry
    /// layer that made this context keeps one and sends its tries unchanged to the pool (the
    /// [`MeshClient`](crate::MeshClient)'s stack): what the pool replays on a fresh
    /// connection after a stale one, instead of copying the request head a second time.
    pub(crate) fn replay_request(&self) -> Option<Request<MeshBody>> {
        let head = self
            .shared
            .head
            .as_ref()
            .filter(|_| self.shared.head_for_pool)?;
        let mut req = Request::new(body::empty());
        *req.method_mut() = head.method.clone();
        *req.uri_mut() = head.uri.clone();
        *req.version_mut() = head.version;
        *req.headers_mut() = head.headers.to_map();
        Some(req)
    }

    /// Whether [`replay_request`](Self::replay_request) gives a request.
    pub(crate) fn can_replay(&self) -> bool {
        self.shared.head_for_pool && self.shared.head.is_some()
    }

    /// The same request's context for try number `attempt` (1 = the first try).
    pub fn for_attempt(&self, attempt: u32) -> Self {
        TryContext {
            attempt,
            ..self.clone()
        }
    }

    /// The try number: 1 for the first try, 2 for the first retry, ...
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Whether this try is a retry.
    pub fn is_retry(&self) -> bool {
        self.attempt > 1
    }

    fn with_tried<T>(&self, f: impl FnOnce(&mut Tried) -> T) -> T {
        f(&mut self
            .shared
            .tried
            .lock()
            .unwrap_or_else(PoisonError::into_inner))
    }

    /// Records the endpoint this try goes to (called by the balancer).
    pub fn record(&self, addr: SocketAddr) {
        self.with_tried(|t| t.push(addr));
    }

    /// The endpoint the latest try went to, if it got as far as choosing one.
    pub fn last_tried(&self) -> Option<SocketAddr> {
        self.with_tried(|t| t.iter().last())
    }

    /// The endpoints tried so far by this request, in order.
    pub fn tried(&self) -> Vec<SocketAddr> {
        self.with_tried(|t| t.iter().collect())
    }

    /// Whether an earlier try went to `addr`.
    pub fn was_tried(&self, addr: &SocketAddr) -> bool {
        self.with_tried(|t| t.iter().any(|a| a == *addr))
    }

    /// Whether the balancer should avoid `addr` for this try: a retry, with previous-host
    /// avoidance on, to an endpoint already tried. (If every endpoint is avoided the balancer
    /// ignores the preference, as Envoy does after its host-selection attempts.)
    pub fn should_avoid(&self, addr: &SocketAddr) -> bool {
        self.is_retry() && self.avoid_previous && self.was_tried(addr)
    }

    /// Whether retries may go to other localities (`retryRemoteLocalities`).
    pub fn retry_remote_localities(&self) -> bool {
        self.remote_localities
    }
}

/// The endpoints a request's tries went to: the first few inline (Istio's default policy
/// makes at most three tries), so recording the first try allocates nothing.
#[derive(Default)]
struct Tried {
    inline: [Option<SocketAddr>; TRIED_INLINE],
    more: Vec<SocketAddr>,
}

const TRIED_INLINE: usize = 3;

impl Tried {
    fn push(&mut self, addr: SocketAddr) {
        match self.inline.iter_mut().find(|slot| slot.is_none()) {
            Some(slot) => *slot = Some(addr),
            None => self.more.push(addr),
        }
    }

    fn iter(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.inline
            .iter()
            .map_while(|slot| *slot)
            .chain(self.more.iter().copied())
    }
}

// ---------------------------------------------------------------------------------------------
// Gates
// ---------------------------------------------------------------------------------------------

/// Admission of tries and retries to a destination: where the retry budget (and, combined by
/// the caller, `connectionPool.http.maxRetries`) is enforced.
///
/// [`RetryService`] calls [`start_try`](RetryGate::start_try) around every try (the guard
/// counts it in flight) and [`admit_retry`](RetryGate::admit_retry) before every retry (the
/// guard counts the retry in flight through its backoff and its try). A refusal makes the
/// service return the try's own outcome.
pub trait RetryGate: Send + Sync + 'static {
    /// Held while a try is in flight.
    type TryGuard: Send + 'static;
    /// Held while an admitted retry is in flight.
    type RetryGuard: Send + 'static;

    /// A try to `cluster` starts (`retry`: whether it is a retry).
    fn start_try(&self, cluster: &Arc<Cluster>, retry: bool) -> Self::TryGuard;

    /// Asks for one more retry to `cluster`.
    fn admit_retry(&self, cluster: &Arc<Cluster>) -> Result<Self::RetryGuard, RetryRefused>;
}

/// Admits every retry (no budget).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoGate;

impl RetryGate for NoGate {
    type TryGuard = ();
    type RetryGuard = ();

    fn start_try(&self, _: &Arc<Cluster>, _: bool) {}

    fn admit_retry(&self, _: &Arc<Cluster>) -> Result<(), RetryRefused> {
        Ok(())
    }
}

/// How to reach a destination's [`RetryBudgetState`] inside its [`ClusterState`] (e.g.
/// `|s| &s.retry_budget`).
pub type BudgetAccess = fn(&ClusterState) -> &RetryBudgetState;

/// Enforces DestinationRule `trafficPolicy.retryBudget` with the destination's
/// [`RetryBudgetState`]; a destination without `retryBudget` admits every retry (its
/// `maxRetries` is the circuit breaker's to enforce).
#[derive(Clone, Copy)]
pub struct BudgetGate {
    access: BudgetAccess,
    /// A stand-in for the clock where the budget state does not read it.
    epoch: tokio::time::Instant,
}

impl fmt::Debug for BudgetGate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BudgetGate")
    }
}

impl BudgetGate {
    /// A gate reading each destination's budget state through `access`.
    pub fn new(access: BudgetAccess) -> Self {
        BudgetGate {
            access,
            epoch: tokio::time::Instant::now(),
        }
    }
}

/// A try or retry counted in a destination's [`RetryBudgetState`] until dropped.
pub struct BudgetGuard {
    cluster: Arc<Cluster>,
    access: BudgetAccess,
    retry: bool,
}

impl fmt::Debug for BudgetGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BudgetGuard")
            .field("cluster", self.cluster.key())
            .field("retry", &self.retry)
            .finish()
    }
}

impl Drop for BudgetGuard {
    fn drop(&mut self) {
        let state = (self.access)(self.cluster.state());
        if self.retry {
            state.end_retry();
        } else {
            state.end_try();
        }
    }
}

impl RetryGate for BudgetGate {
    type TryGuard = BudgetGuard;
    type RetryGuard = Option<BudgetGuard>;

    fn start_try(&self, cluster: &Arc<Cluster>, retry: bool) -> BudgetGuard {
        let budget = cluster.policy().retry_budget.as_ref();
        // The clock is read only when a budget interval counts this try.
        let now = if !retry && budget.is_some_and(|b| b.budget_interval.is_some()) {
            tokio::time::Instant::now()
        } else {
            self.epoch
        };
        (self.access)(cluster.state()).begin_try(budget, retry, now);
        BudgetGuard {
            cluster: cluster.clone(),
            access: self.access,
            retry: false,
        }
    }

    fn admit_retry(&self, cluster: &Arc<Cluster>) -> Result<Option<BudgetGuard>, RetryRefused> {
        let Some(budget) = cluster.policy().retry_budget.as_ref() else {
            return Ok(None);
        };
        (self.access)(cluster.state()).try_begin_retry(budget, tokio::time::Instant::now())?;
        Ok(Some(BudgetGuard {
            cluster: cluster.clone(),
            access: self.access,
            retry: true,
        }))
    }
}

/// What the retry layer reports, for the mesh to turn into `MeshEvent`s.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RetryEvent {
    /// A retry is being made (Envoy's `upstream_rq_retry`): the gate admitted it.
    Retried {
        /// The destination.
        cluster: ClusterKey,
        /// Which retry of the request (1 for the first).
        retry: u32,
    },
    /// A retry was not made: the [`RetryGate`] refused it (retry budget or `maxRetries`).
    RetryRefused {
        /// The destination.
        cluster: ClusterKey,
        /// The limit and counts.
        refused: RetryRefused,
    },
    /// A retriable outcome was not retried because the request body outgrew the replay cap.
    BodyNotReplayable {
        /// The destination.
        cluster: ClusterKey,
    },
    /// Outlier detection changed its mind about an endpoint after a try timed out.
    Outlier {
        /// The destination.
        cluster: ClusterKey,
        /// What happened (ejected, returned).
        event: crate::resilience::outlier::OutlierEvent,
    },
}

type EventSink = Arc<dyn Fn(RetryEvent) + Send + Sync>;

// ---------------------------------------------------------------------------------------------
// Layer and service
// ---------------------------------------------------------------------------------------------

/// Retries requests by their route's [`RetryPolicy`] ([module docs](self)).
///
/// Only requests routed to a cluster are retried (Istio's passthrough route has no retry
/// policy); a request without a [`RouteDecision`] passes through. A route without `retries`
/// gets Istio's default policy.
///
/// The first try is the request as it came, with all its extensions (its [`RouteDecision`]
/// given the try's [`TryContext`]); a retry is rebuilt from the request's method, URI,
/// version and headers, with the [`RouteDecision`] (carrying a fresh [`TryContext`]) as its
/// only extension.
#[derive(Clone)]
pub struct RetryLayer<G = NoGate> {
    gate: Arc<G>,
    replay_limit: usize,
    jitter: Arc<Jitter>,
    events: Option<EventSink>,
    head_for_pool: bool,
}

impl fmt::Debug for RetryLayer<NoGate> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryLayer")
            .field("replay_limit", &self.replay_limit)
            .finish_non_exhaustive()
    }
}

impl Default for RetryLayer<NoGate> {
    fn default() -> Self {
        RetryLayer {
            gate: Arc::new(NoGate),
            replay_limit: DEFAULT_REPLAY_LIMIT,
            jitter: Arc::new(Jitter::from_os()),
            events: None,
            head_for_pool: false,
        }
    }
}

impl RetryLayer<NoGate> {
    /// A layer with no retry gate, a 64 KiB replay cap and OS-seeded backoff jitter.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<G> RetryLayer<G> {
    /// The most request-body bytes kept for replay (default 64 KiB); a larger body is sent
    /// once and its request is not retried.
    pub fn replay_limit(mut self, bytes: usize) -> Self {
        self.replay_limit = bytes;
        self
    }

    /// Seeds the backoff jitter (reproducible tests).
    pub fn seed(mut self, seed: u64) -> Self {
        self.jitter = Arc::new(Jitter::seeded(seed));
        self
    }

    /// Admits retries through `gate` (e.g. a [`BudgetGate`]).
    pub fn gate<G2: RetryGate>(self, gate: G2) -> RetryLayer<G2> {
        RetryLayer {
            gate: Arc::new(gate),
            replay_limit: self.replay_limit,
            jitter: self.jitter,
            events: self.events,
            head_for_pool: self.head_for_pool,
        }
    }

    /// Calls `sink` with each [`RetryEvent`].
    pub fn on_event(mut self, sink: impl Fn(RetryEvent) + Send + Sync + 'static) -> Self {
        self.events = Some(Arc::new(sink));
        self
    }

    /// Lets the pool replay a try from the head copy this layer keeps for retries
    /// ([`TryContext::replay_request`]) instead of copying the head again. Only for an inner
    /// service that hands its requests to the pool unchanged but for their version (the
    /// [`MeshClient`](crate::MeshClient)'s fused upstream sender).
    pub(crate) fn share_head_with_pool(mut self) -> Self {
        self.head_for_pool = true;
        self
    }
}

impl<S, G> Layer<S> for RetryLayer<G> {
    type Service = RetryService<S, G>;

    fn layer(&self, inner: S) -> Self::Service {
        RetryService {
            inner,
            shared: Arc::new(RetryShared {
                gate: self.gate.clone(),
                replay_limit: self.replay_limit,
                jitter: self.jitter.clone(),
                events: self.events.clone(),
                head_for_pool: self.head_for_pool,
            }),
        }
    }
}

/// What every request of a [`RetryService`] shares: one `Arc` to clone per request.
struct RetryShared<G> {
    gate: Arc<G>,
    replay_limit: usize,
    jitter: Arc<Jitter>,
    events: Option<EventSink>,
    head_for_pool: bool,
}

/// The service of [`RetryLayer`].
pub struct RetryService<S, G = NoGate> {
    inner: S,
    shared: Arc<RetryShared<G>>,
}

impl<S: Clone, G> Clone for RetryService<S, G> {
    fn clone(&self) -> Self {
        RetryService {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: fmt::Debug, G> fmt::Debug for RetryService<S, G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryService")
            .field("inner", &self.inner)
            .field("replay_limit", &self.shared.replay_limit)
            .finish_non_exhaustive()
    }
}

/// The retry policy and destination of a request routed by `decision`, when it may be
/// retried or has a per-try timeout.
fn plan(decision: &RouteDecision) -> Option<(Arc<RetryPolicy>, Arc<Cluster>)> {
    let Target::Cluster(cluster) = decision.target() else {
        return None;
    };
    let consistent_hash = cluster
        .policy()
        .load_balancer
        .as_ref()
        .is_some_and(|lb| lb.consistent_hash().is_some());
    let policy = match decision.route() {
        Some(route) => route.retry_policy(consistent_hash),
        None => default_policy(consistent_hash),
    };
    (policy.is_enabled() || policy.per_try_timeout.is_some()).then(|| (policy, cluster.clone()))
}

/// Istio's default retry policy (no `retries` on the route, or no route), built once.
pub(crate) fn default_policy(consistent_hash: bool) -> Arc<RetryPolicy> {
    static DEFAULT: std::sync::OnceLock<[Arc<RetryPolicy>; 2]> = std::sync::OnceLock::new();
    let policies =
        DEFAULT.get_or_init(|| [false, true].map(|ch| Arc::new(RetryPolicy::from_route(None, ch))));
    policies[usize::from(consistent_hash)].clone()
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response<MeshBody>, Error>> + Send>>;

pin_project_lite::pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Direct { #[pin] fut: F },
        Retrying { fut: BoxFuture },
    }
}

pin_project_lite::pin_project! {
    /// The future of [`RetryService`]: the inner future itself for a request that is never
    /// retried, a boxed retry loop otherwise.
    pub struct RetryFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

impl<F> Future for RetryFuture<F>
where
    F: Future<Output = Result<Response<MeshBody>, Error>>,
{
    type Output = Result<Response<MeshBody>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Direct { fut } => fut.poll(cx),
            KindProj::Retrying { fut } => fut.as_mut().poll(cx),
        }
    }
}

impl<S, G> Service<Request<MeshBody>> for RetryService<S, G>
where
    S: Service<Request<MeshBody>, Response = Response<MeshBody>, Error = Error>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    G: RetryGate,
{
    type Response = Response<MeshBody>;
    type Error = Error;
    type Future = RetryFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<MeshBody>) -> Self::Future {
        let planned = req
            .extensions()
            .get::<RouteDecision>()
            .and_then(|decision| {
                let (policy, cluster) = plan(decision)?;
                // The first try takes the request as it came, extensions and all; retries are
                // rebuilt from a copy of its head and the routing decision (what the layers
                // below read), kept in the context all tries share.
                let ctx =
                    TryContext::of_request(&policy, &req, decision, self.shared.head_for_pool);
                Some((policy, cluster, ctx))
            });
        let Some((policy, cluster, ctx)) = planned else {
            return RetryFuture {
                kind: Kind::Direct {
                    fut: self.inner.call(req),
                },
            };
        };
        if let Some(decision) = req.extensions_mut().get_mut::<RouteDecision>() {
            decision.set_try_context(ctx.for_attempt(1));
        }
        // The ready service goes into the loop; this one is a fresh clone.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let run = RetryRun {
            policy,
            cluster,
            shared: self.shared.clone(),
        };
        RetryFuture {
            kind: Kind::Retrying {
                fut: Box::pin(run.run(inner, req, ctx)),
            },
        }
    }
}

/// How the request body is given to each try.
enum Replay {
    /// The body was empty: every try gets an empty body.
    Empty,
    /// Replayed from the kept chunks.
    Body(ReplayBody),
    /// Sent once (over the cap): no retry.
    Once,
}

struct RetryRun<G> {
    policy: Arc<RetryPolicy>,
    cluster: Arc<Cluster>,
    shared: Arc<RetryShared<G>>,
}

impl<G: RetryGate> RetryRun<G> {
    /// Starts the first try now and returns the loop over it and its retries. (Not an
    /// `async fn`: the request is split, copied for retries and handed to the first try
    /// before the future exists, so the future holds none of it twice.)
    fn run<S, F>(
        self,
        mut svc: S,
        req: Request<MeshBody>,
        ctx: TryContext,
    ) -> impl Future<Output = Result<Response<MeshBody>, Error>> + Send
    where
        S: Service<Request<MeshBody>, Response = Response<MeshBody>, Error = Error, Future = F>
            + Send,
        F: Future<Output = Result<Response<MeshBody>, Error>> + Send,
    {
        let mut req = req;
        // (The request stays whole: an empty body is given to every try as it is, a body is
        // swapped for its replaying reader in place.)
        let replay = if req.body().is_end_stream() {
            Replay::Empty
        } else {
            let body = std::mem::replace(req.body_mut(), body::empty());
            let original = ReplayBody::new(body, self.shared.replay_limit);
            match original.replay() {
                Some(first) => {
                    *req.body_mut() = body::boxed(first);
                    Replay::Body(original)
                }
                // Known to be over the cap: the original streams untouched, once.
                None => {
                    *req.body_mut() = body::boxed(original);
                    Replay::Once
                }
            }
        };
        let first_guard = self.shared.gate.start_try(&self.cluster, false);
        let first: F = svc.call(req);
        async move {
            let mut retries: u32 = 0;
            let mut retry_guard: Option<G::RetryGuard> = None;
            // Each pass awaits `fut`; a retry starts the next one at the end of the pass.
            let (mut fut, mut try_guard) = (first, first_guard);
            loop {
                let result = match self.policy.per_try_timeout {
                    // Boxed: the timer stays out of every request's future.
                    Some(limit) => match Box::pin(tokio::time::timeout(limit, fut)).await {
                        Ok(result) => result,
                        Err(_) => {
                            self.report_timeout(&ctx);
                            Err(Error::Timeout { timeout: limit })
                        }
                    },
                    None => fut.await,
                };
                drop(try_guard);
                drop(retry_guard.take());

                if !self.policy.should_retry(Outcome::of(&result)) {
                    return result;
                }
                if retries >= self.policy.attempts {
                    return exhausted(result, retries);
                }
                let body = match &replay {
                    Replay::Empty => body::empty(),
                    Replay::Body(original) => match original.replay() {
                        Some(again) => body::boxed(again),
                        None => {
                            self.emit(|cluster| RetryEvent::BodyNotReplayable { cluster });
                            return result;
                        }
                    },
                    Replay::Once => {
                        self.emit(|cluster| RetryEvent::BodyNotReplayable { cluster });
                        return result;
                    }
                };
                match self.shared.gate.admit_retry(&self.cluster) {
                    Ok(guard) => retry_guard = Some(guard),
                    Err(refused) => {
                        self.emit(|cluster| RetryEvent::RetryRefused { cluster, refused });
                        // Envoy marks a retry refused by a circuit breaker `UO`.
                        return result.map(|mut resp| {
                            ResponseFlags::record(
                                resp.extensions_mut(),
                                ResponseFlag::UpstreamOverflow,
                            );
                            resp
                        });
                    }
                }
                // Release the discarded response (and its connection) before waiting.
                drop(result);
                retries += 1;
                self.emit(|cluster| RetryEvent::Retried {
                    cluster,
                    retry: retries,
                });
                let wait = self.policy.backoff.delay(retries, &self.shared.jitter);
                if !wait.is_zero() {
                    // Boxed: the backoff timer stays out of every request's future.
                    Box::pin(tokio::time::sleep(wait)).await;
                }
                ServiceExt::<Request<MeshBody>>::ready(&mut svc).await?;
                let Some(head) = ctx.shared.head.as_ref() else {
                    // Not reached: this loop's context always keeps the head.
                    return Err(Error::Other("retry: the request head was not kept".into()));
                };
                let parts = head.parts(ctx.for_attempt(retries + 1));
                let req: Request<MeshBody> = Request::from_parts(parts, body);
                try_guard = self.shared.gate.start_try(&self.cluster, true);
                fut = svc.call(req);
            }
        }
    }

    /// A try that `perTryTimeout` abandoned counts against its endpoint in outlier
    /// detection, as Envoy counts an upstream timeout as a local-origin failure (the try's
    /// future is dropped, so the layers below never see its end).
    fn report_timeout(&self, ctx: &TryContext) {
        let Some(od) = &self.cluster.policy().outlier_detection else {
            return;
        };
        let Some(addr) = ctx.last_tried() else {
            return;
        };
        let endpoints = self.cluster.endpoints().load();
        let events = self.cluster.state().outlier.record(
            addr,
            crate::resilience::outlier::Outcome::LocalOrigin(
                crate::resilience::outlier::LocalFailure::Timeout,
            ),
            od,
            &endpoints,
            std::time::Instant::now(),
        );
        for event in events {
            self.emit(|cluster| RetryEvent::Outlier { cluster, event });
        }
    }

    fn emit(&self, event: impl FnOnce(ClusterKey) -> RetryEvent) {
        if let Some(sink) = &self.shared.events {
            sink(event(self.cluster.key().clone()));
        }
    }
}

/// The answer after the last allowed try was retriable too: the last upstream response as it
/// is, flagged `URX` (Envoy returns it); or [`Error::RetryLimitExceeded`] around the last
/// try's error.
fn exhausted(
    result: Result<Response<MeshBody>, Error>,
    retries: u32,
) -> Result<Response<MeshBody>, Error> {
    match result {
        Ok(mut resp) => {
            ResponseFlags::record(
                resp.extensions_mut(),
                ResponseFlag::UpstreamRetryLimitExceeded,
            );
            Ok(resp)
        }
        Err(err) if retries == 0 => Err(err),
        Err(err) => Err(Error::RetryLimitExceeded {
            retries,
            last_status: None,
            source: Some(Box::new(err)),
        }),
    }
}

/// A copy of a request's head (method, URI, version, headers) and of its [`RouteDecision`]
/// (without try context): what a retry is rebuilt from. Other extensions reach the first
/// try only (nothing below the retry layer reads them).
struct Head {
    method: http::Method,
    uri: http::Uri,
    version: http::Version,
    headers: HeaderList,
    decision: RouteDecision,
}

impl Head {
    fn of<B>(req: &Request<B>, decision: &RouteDecision) -> Self {
        Head {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            headers: HeaderList::of(req.headers()),
            decision: decision.without_tries(),
        }
    }

    /// The head of another try, whose context is `tries`: the routing decision (carrying
    /// `tries`) is its one extension.
    fn parts(&self, tries: TryContext) -> Parts {
        let mut req = Request::new(());
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.to_map();
        let mut decision = self.decision.without_tries();
        decision.set_try_context(tries);
        req.extensions_mut().insert(decision);
        req.into_parts().0
    }
}

/// A copy of a header map as one byte string: per header (in iteration order) the name's
/// length, the value's length and sensitivity, the name and the value. Every request that
/// may be retried pays for this copy, so it is one allocation and plain byte copies, with
/// nothing to release per header (a list of `(HeaderName, HeaderValue)` clones takes a
/// reference count per name and value to make, and as many to drop); only a retry (or a
/// stale-connection replay) turns it back into a map.
struct HeaderList {
    bytes: Vec<u8>,
    len: usize,
}

/// The most bytes [`put_len`] writes for one length.
const MAX_LEN_BYTES: usize = (usize::BITS as usize).div_ceil(7);

/// Appends `n` as a little-endian base-128 varint (at most [`MAX_LEN_BYTES`] bytes).
fn put_len(out: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        out.push((n & 0x7F) as u8 | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Reads a length written by [`put_len`] from the front of `bytes`.
fn take_len(bytes: &mut &[u8]) -> Option<usize> {
    let mut n: usize = 0;
    let mut shift = 0u32;
    loop {
        let (&b, rest) = bytes.split_first()?;
        *bytes = rest;
        n |= usize::from(b & 0x7F).checked_shl(shift)?;
        if b < 0x80 {
            return Some(n);
        }
        shift += 7;
    }
}

/// Splits `n` bytes off the front of `bytes`.
fn take_bytes<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    let (head, rest) = bytes.split_at_checked(n)?;
    *bytes = rest;
    Some(head)
}

impl HeaderList {
    fn of(headers: &http::HeaderMap) -> Self {
        // A guess that holds typical request headers without growing.
        let mut bytes = Vec::with_capacity(64 * headers.len());
        for (name, value) in headers {
            let name = name.as_str().as_bytes();
            let v = value.as_bytes();
            bytes.reserve(2 * MAX_LEN_BYTES + name.len() + v.len());
            put_len(&mut bytes, name.len());
            put_len(&mut bytes, v.len() << 1 | usize::from(value.is_sensitive()));
            bytes.extend_from_slice(name);
            bytes.extend_from_slice(v);
        }
        HeaderList {
            bytes,
            len: headers.len(),
        }
    }

    /// The map again: the same names, values (with their sensitivity) and order, several
    /// values of one name in their order. (Every name and value was valid in the map it was
    /// copied from; a value that safe code could not have made is left out.)
    fn to_map(&self) -> http::HeaderMap {
        let mut map = http::HeaderMap::with_capacity(self.len);
        let mut rest = &self.bytes[..];
        while !rest.is_empty() {
            let Some((name, value, sensitive)) = Self::next(&mut rest) else {
                break;
            };
            let (Ok(name), Ok(mut value)) = (
                http::HeaderName::from_bytes(name),
                http::HeaderValue::from_bytes(value),
            ) else {
                continue;
            };
            value.set_sensitive(sensitive);
            map.append(name, value);
        }
        map
    }

    /// The next (name, value, sensitive) from the front of `rest`.
    fn next<'a>(rest: &mut &'a [u8]) -> Option<(&'a [u8], &'a [u8], bool)> {
        let name_len = take_len(rest)?;
        let value_len = take_len(rest)?;
        let name = take_bytes(rest, name_len)?;
        let value = take_bytes(rest, value_len >> 1)?;
        Some((name, value, value_len & 1 == 1))
    }
}

#[cfg(test)]
mod head_tests {
    use super::*;
    use http::header::{HeaderName, HeaderValue};

    #[test]
    fn header_list_gives_back_the_same_map() {
        let mut map = http::HeaderMap::new();
        map.insert("host", HeaderValue::from_static("reviews:9080"));
        map.append("x-b", HeaderValue::from_static("1"));
        map.append("accept", HeaderValue::from_static("text/html"));
        map.append("x-b", HeaderValue::from_static("2"));
        let mut secret = HeaderValue::from_static("Bearer t");
        secret.set_sensitive(true);
        map.insert(http::header::AUTHORIZATION, secret);
        map.append(
            HeaderName::from_static("x-custom"),
            HeaderValue::from_bytes(b"opaque\xff").expect("a value"),
        );
        let back = HeaderList::of(&map).to_map();
        assert_eq!(back, map);
        let order = |m: &http::HeaderMap| {
            m.iter()
                .map(|(n, v)| (n.clone(), v.clone(), v.is_sensitive()))
                .collect::<Vec<_>>()
        };
        assert_eq!(order(&back), order(&map));
        assert!(
            back.get(http::header::AUTHORIZATION)
                .is_some_and(HeaderValue::is_sensitive)
        );
        let xb: Vec<_> = back.get_all("x-b").iter().collect();
        assert_eq!(xb, ["1", "2"]);
        assert!(HeaderList::of(&http::HeaderMap::new()).to_map().is_empty());
    }

    #[test]
    fn header_list_keeps_long_names_and_values_and_many_headers() {
        let mut map = http::HeaderMap::new();
        let long_name = HeaderName::from_bytes(&[b'n'; 300]).expect("a name");
        let long_value = HeaderValue::from_bytes(&[b'v'; 70_000]).expect("a value");
        map.insert(long_name.clone(), long_value.clone());
        for i in 0..100 {
            map.append(
                HeaderName::from_bytes(format!("x-{i}").as_bytes()).expect("a name"),
                HeaderValue::from(i),
            );
        }
        map.append("x-empty", HeaderValue::from_static(""));
        let back = HeaderList::of(&map).to_map();
        assert_eq!(back, map);
        assert_eq!(back.get(&long_name), Some(&long_value));
        assert_eq!(back.get("x-empty").map(HeaderValue::len), Some(0));
    }

    #[test]
    fn header_list_lengths_round_trip() {
        for n in [
            0,
            1,
            127,
            128,
            255,
            16_383,
            16_384,
            usize::MAX >> 1,
            usize::MAX,
        ] {
            let mut out = Vec::new();
            put_len(&mut out, n);
            assert!(out.len() <= MAX_LEN_BYTES);
            let mut rest = &out[..];
            assert_eq!(take_len(&mut rest), Some(n));
            assert!(rest.is_empty());
        }
        // Truncated input reads as nothing.
        assert_eq!(take_len(&mut &[0x80u8][..]), None);
    }
}
