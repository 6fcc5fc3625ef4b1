//! [`MeshClient`]: call other services through the mesh.
//!
//! `mesh.client()` is a cloneable `tower::Service<http::Request<B>>` for any body `B` of
//! [`Bytes`]: the whole outbound stack, each part a public layer:
//!
//! ```text
//! RouteLayer → FaultLayer → MirrorLayer → TimeoutLayer → RetryLayer → CircuitBreakerLayer → Upstream
//! (match,      (delay /     (copies to    (route         (retryOn,    (connectionPool      (outlier view,
//!  weighted     abort)       -shadow)      timeout,       budget,      limits)              load balancer,
//!  pick)                                   grpc-timeout)  replay)                           pool send)
//! ```
//!
//! The last two are fused in the client: its [`Upstream`] admits each request under the
//! destination's `http2MaxRequests` itself, at the same point of the stack and with the same
//! answer as [`CircuitBreakerLayer`], and the pool's response body holds that count and the
//! endpoint's least-request mark until it ends: one body wrapper instead of three. The
//! public layers keep their own semantics when used alone.
//!
//! It routes each request by its authority and sends it to an endpoint of the chosen
//! destination over the mesh's per-endpoint connection pools. Requests take absolute URIs (`http://reviews:9080/ratings`) or an
//! origin-form URI with a `Host` header.
//!
//! `poll_ready` is always ready: the destination is known only in `call`, so overload is
//! answered there (as a 503 with a response flag, like every mesh-made answer). The error
//! type is [`Infallible`]: what fails is an HTTP response, as Envoy's answers are, so a
//! caller handles one thing. It serves as the transport of a tonic client
//! (`tonic::client::Grpc::new(mesh.client())`), gRPC callers getting trailers-only
//! `grpc-status` answers from the mesh.
//!
//! ```no_run
//! # async fn demo(mesh: tower_mesh::Mesh) -> Result<(), Box<dyn std::error::Error>> {
//! use tower::ServiceExt;
//! let req = http::Request::get("http://my-app/hello").body(http_body_util::Empty::<bytes::Bytes>::new())?;
//! let resp = mesh.client().oneshot(req).await?;
//! println!("{}", resp.status());
//! # Ok(()) }
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tokio::sync::broadcast;
use tower::{Layer, Service};

use crate::balance::{Pick, PickContext};
use crate::body::{self, BodyGuards, MeshBody};
use crate::error::{BoxError, Error, ResetReason};
use crate::mesh::{Mesh, MeshEvent};
use crate::pool::{ConnectionLimit, PoolKey, PoolSettings, Pools, TlsPolicy, UpstreamProtocol};
use crate::resilience::circuit::CircuitLimits;
#[cfg(doc)]
use crate::resilience::circuit::{CircuitBreakerLayer, CircuitBreakerService};
use crate::resilience::fault::{FaultLayer, FaultService};
use crate::resilience::mirror::{MirrorLayer, MirrorService, MirrorTarget};
use crate::resilience::outlier::{LocalFailure, Outcome, OutlierEvent};
use crate::resilience::retry::{
    BudgetGate, RetryEvent, RetryGate, RetryLayer, RetryRefused, RetryService, TimeoutLayer,
    TimeoutService, TryContext, timeout::RouteTimeoutExpiry,
};
use crate::route::layer::{RouteDecision, RouteFuture, RouteLayer, RouteService};
use crate::snapshot::{Cluster, ClusterKey, Target};

/// The stack below the router, shared by every client of a mesh (its dice and counters are
/// the mesh's, not per client).
pub(crate) type Stack =
    FaultService<MirrorService<TimeoutService<RetryService<ClusterStack, MeshGate>>, MirrorSend>>;

/// Circuit breaking and the upstream sender, fused ([`Upstream`] with its breaker on: the
/// same admission as [`CircuitBreakerService`] in front of it, one response-body wrapper).
type ClusterStack = Upstream;

/// Builds the stack below the router for a mesh with these parts.
pub(crate) fn build_stack(
    pools: Pools,
    events: broadcast::Sender<MeshEvent>,
    seed: u64,
    mtls: Option<Arc<str>>,
) -> Stack {
    let cluster = Upstream::with_parts(pools, events.clone(), mtls, true);
    let retry_events = events.clone();
    // The pool replays a try on a fresh connection (after a stale one) from the retry
    // layer's copy of the head: the upstream sender passes its requests on unchanged.
    let retry = RetryLayer::new()
        .share_head_with_pool()
        .seed(seed ^ 0x0052_4554_5259)
        .gate(MeshGate {
            budget: BudgetGate::new(|s| &s.retry_budget),
        })
        .on_event(move |event| match event {
            RetryEvent::RetryRefused { cluster, refused } => {
                let _ = retry_events.send(MeshEvent::RetryRefused {
                    cluster,
                    limit: refused.limit,
                });
            }
            RetryEvent::Retried { cluster, .. } => {
                let _ = retry_events.send(MeshEvent::Retried { cluster });
            }
            RetryEvent::Outlier { cluster, event } => {
                send_outlier_events(&retry_events, &cluster, vec![event]);
            }
            _ => {}
        })
        .layer(cluster.clone());
    let timeout = TimeoutLayer::new().layer(retry);
    let mirror = MirrorLayer::new(MirrorSend { inner: cluster }, Some(seed ^ 0x4D49_5252_0000))
        .layer(timeout);
    FaultLayer::new(Some(seed ^ 0x0046_4155_4C54)).layer(mirror)
}

/// What the router calls: Istio's outbound metrics (`reporter="source"`, feature `metrics`)
/// over the [`Stack`].
#[cfg(feature = "metrics")]
pub(crate) type Routed = crate::telemetry::OutboundMetrics<Stack>;
/// What the router calls: the [`Stack`] (no metrics without feature `metrics`).
#[cfg(not(feature = "metrics"))]
pub(crate) type Routed = Stack;

/// The mesh's outbound client: the full stack ([module docs](self)).
#[derive(Clone, Debug)]
pub struct MeshClient {
    inner: RouteService<Routed>,
}

impl MeshClient {
    /// A client of `mesh` (same as [`Mesh::client`]).
    pub fn new(mesh: Mesh) -> Self {
        let stack = mesh.inner.stack.clone();
        MeshClient {
            inner: RouteLayer::new(mesh).layer(stack),
        }
    }
}

impl<B> Service<Request<B>> for MeshClient
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<MeshBody>;
    type Error = Infallible;
    type Future = RouteFuture<<Routed as Service<Request<MeshBody>>>::Future>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The router takes the request in parts: the head is moved once, not put back
        // together around the new body and taken apart again.
        let (parts, body) = req.into_parts();
        self.inner.call_parts(parts, mesh_body(body))
    }
}

/// `req` with a [`MeshBody`] ([`mesh_body`]).
#[cfg(test)]
fn mesh_request<B>(req: Request<B>) -> Request<MeshBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let (parts, body) = req.into_parts();
    Request::from_parts(parts, mesh_body(body))
}

/// `body` as a [`MeshBody`]: as it is when it is one already (what [`Forward`] sends:
/// boxing it again would cost an allocation, and every read of the body a second dynamic
/// call), else boxed.
///
/// [`Forward`]: crate::proxy::Forward
fn mesh_body<B>(body: B) -> MeshBody
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let mut slot = Some(body);
    let any: &mut dyn std::any::Any = &mut slot;
    if let Some(same) = any.downcast_mut::<Option<MeshBody>>()
        && let Some(body) = same.take()
    {
        return body;
    }
    match slot {
        Some(body) => body::boxed(body),
        // Taken above only when `B` is `MeshBody`, which then returned.
        None => body::empty(),
    }
}

/// Admits retries by the destination's DestinationRule: its `retryBudget` when it has one
/// (which then replaces `http.maxRetries`, as in Envoy), else `connectionPool.http.maxRetries`
/// (concurrent retries, circuit-breaker counted).
#[derive(Debug, Clone)]
pub struct MeshGate {
    budget: BudgetGate,
}

impl RetryGate for MeshGate {
    type TryGuard = <BudgetGate as RetryGate>::TryGuard;
    type RetryGuard = (
        <BudgetGate as RetryGate>::RetryGuard,
        Option<crate::resilience::circuit::RetryGuard>,
    );

    fn start_try(&self, cluster: &Arc<Cluster>, retry: bool) -> Self::TryGuard {
        self.budget.start_try(cluster, retry)
    }

    fn admit_retry(&self, cluster: &Arc<Cluster>) -> Result<Self::RetryGuard, RetryRefused> {
        if cluster.policy().retry_budget.is_some() {
            return Ok((self.budget.admit_retry(cluster)?, None));
        }
        let limits = CircuitLimits::of(cluster);
        let breaker = &cluster.state().circuit_breaker;
        match breaker.try_retry(&limits) {
            Some(guard) => Ok((None, Some(guard))),
            None => Err(RetryRefused {
                limit: "connectionPool.http.maxRetries",
                in_flight: breaker.retries(),
                max: limits.max_retries,
            }),
        }
    }
}

/// Sends mirror copies ([`MirrorTarget`]) through the cluster stack: the copy is routed to
/// the mirror destination, never retried (Envoy's shadow requests are not).
#[derive(Clone, Debug)]
pub struct MirrorSend {
    inner: ClusterStack,
}

impl Service<Request<MeshBody>> for MirrorSend {
    type Response = Response<MeshBody>;
    type Error = Error;
    type Future = <ClusterStack as Service<Request<MeshBody>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<MeshBody>) -> Self::Future {
        if let Some(target) = req.extensions_mut().remove::<MirrorTarget>() {
            req.extensions_mut()
                .insert(RouteDecision::for_mirror(&target));
        }
        self.inner.call(req)
    }
}

/// Sends a routed request to an endpoint of its destination: the innermost service of the
/// outbound stack.
///
/// It reads the [`RouteDecision`] the router left in the request's extensions. For a cluster
/// it takes the endpoints of the subset, leaves out those outlier detection ejected (all of
/// them count in panic mode, `minHealthPercent`), lets the cluster's [`Balancer`](crate::balance::Balancer) pick one
/// (avoiding the endpoints earlier tries of the request went to, from the retry layer's
/// [`TryContext`]), sends over that endpoint's pool, and reports the outcome to outlier
/// detection; ejections and returns become [`MeshEvent`]s. For a passthrough it resolves the
/// host and sends there. The connection's TLS: the DestinationRule's `tls`, else TLS
/// verified against the system's root certificates for an `https` URI, else auto mTLS
/// towards mesh endpoints when the mesh has an identity, else plaintext. Errors: [`Error::NoHealthyUpstream`] (no endpoint to pick),
/// [`Error::UpstreamReset`] (connection or stream failures).
#[derive(Clone, Debug)]
pub struct Upstream {
    /// One `Arc` for both (a clone per request costs one shared count, not three).
    shared: Arc<UpstreamShared>,
}

#[derive(Debug)]
struct UpstreamShared {
    pools: Pools,
    events: broadcast::Sender<MeshEvent>,
    /// The trust domain, when the mesh has a workload identity (mTLS possible).
    mtls: Option<Arc<str>>,
    /// Whether this sender also admits requests under the destination's
    /// `http2MaxRequests` (the [`MeshClient`]'s fused [`CircuitBreakerLayer`]).
    breaker: bool,
}

impl Upstream {
    /// The upstream sender of `mesh`.
    pub fn new(mesh: &Mesh) -> Self {
        let mtls = mesh
            .inner
            .identity
            .as_ref()
            .map(|_| Arc::<str>::from(mesh.inner.settings.trust_domain.as_str()));
        Upstream::with_parts(mesh.pools().clone(), mesh.inner.events.clone(), mtls, false)
    }

    /// `breaker`: admit requests under `http2MaxRequests` too (503 `UO` over it, the count
    /// held until the response body ends), as a [`CircuitBreakerLayer`] in front would.
    pub(crate) fn with_parts(
        pools: Pools,
        events: broadcast::Sender<MeshEvent>,
        mtls: Option<Arc<str>>,
        breaker: bool,
    ) -> Self {
        Upstream {
            shared: Arc::new(UpstreamShared {
                pools,
                events,
                mtls,
                breaker,
            }),
        }
    }
}

/// The future of [`Upstream`].
pub type UpstreamFuture = Pin<Box<dyn Future<Output = Result<Response<MeshBody>, Error>> + Send>>;

impl Service<Request<MeshBody>> for Upstream {
    type Response = Response<MeshBody>;
    type Error = Error;
    type Future = UpstreamFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<MeshBody>) -> Self::Future {
        let Some((target, tries)) = req
            .extensions()
            .get::<RouteDecision>()
            .map(|d| (d.target().clone(), d.try_context().cloned()))
        else {
            return Box::pin(async {
                Err(Error::Other(
                    "Upstream needs a RouteDecision in the request extensions: put RouteLayer in front of it"
                        .into(),
                ))
            });
        };
        let pools = &self.shared.pools;
        match target {
            Target::Cluster(cluster) => {
                // The fused circuit breaker: admitted before anything else, as the layer in
                // front of this service would.
                let request = if self.shared.breaker {
                    match cluster
                        .state()
                        .circuit_breaker
                        .try_request(&CircuitLimits::of(&cluster))
                    {
                        Ok(guard) => Some(guard),
                        Err(refused) => {
                            let err = refused.into_error(cluster.key());
                            return Box::pin(async move { Err(err) });
                        }
                    }
                } else {
                    None
                };
                let now = Instant::now();
                let endpoints = cluster.endpoints().load();
                let policy = cluster.policy();
                // Outlier detection: who is ejected now (and who came back).
                let mut view = policy
                    .outlier_detection
                    .as_ref()
                    .map(|od| cluster.state().outlier.healthy_view(&endpoints, od, now));
                if let Some(v) = view.as_mut() {
                    self.outlier_events(cluster.key(), v.take_events());
                }
                let avoid = |a: &SocketAddr| tries.as_ref().is_some_and(|t| t.should_avoid(a));
                let ejected = |a: &SocketAddr| view.as_ref().is_some_and(|v| v.is_excluded(a));
                let panic = view.as_ref().is_some_and(|v| v.panic());
                let tried = |a: &SocketAddr| tries.as_ref().is_some_and(|t| t.was_tried(a));
                // Built in place (not through the builder: each step would copy it). Only a
                // retry avoids earlier endpoints, and only outlier detection ejects: a first
                // try without it lets the balancer skip asking about each endpoint.
                let retry = tries.as_ref().is_some_and(TryContext::is_retry);
                let ctx = PickContext {
                    now,
                    headers: Some(req.headers()),
                    query: req.uri().query(),
                    source_ip: None,
                    avoid: retry.then_some(&avoid as _),
                    ejected: view.is_some().then_some(&ejected as _),
                    panic,
                    tried_remote: (retry
                        && tries
                            .as_ref()
                            .is_some_and(TryContext::retry_remote_localities))
                    .then_some(&tried as _),
                };
                // The pick also marks the request in flight to its endpoint (least request)
                // until the response body ends.
                let (pick, in_flight) =
                    cluster
                        .balancer()
                        .pick_started(&cluster.state().lb, &endpoints, &ctx);
                let (index, set_cookie) = match pick {
                    Pick::Endpoint { index, set_cookie } => (index, set_cookie),
                    Pick::None => {
                        let err = Error::NoHealthyUpstream {
                            host: cluster.key().host.clone(),
                            subset: cluster.key().subset.clone(),
                        };
                        return Box::pin(async move { Err(err) });
                    }
                    Pick::Passthrough => {
                        let (host, port) = (cluster.key().host.clone(), cluster.key().port);
                        return Box::pin(passthrough(pools.clone(), req, host, port));
                    }
                };
                let Some(endpoint) = endpoints.get(index) else {
                    let err = Error::NoHealthyUpstream {
                        host: cluster.key().host.clone(),
                        subset: cluster.key().subset.clone(),
                    };
                    return Box::pin(async move { Err(err) });
                };
                let addr = endpoint.addr;
                if let Some(t) = &tries {
                    t.record(addr);
                }
                cluster.state().record_request();
                let protocol = cluster.protocol_for(req.version());
                set_version(&mut req, protocol);
                let https = req.uri().scheme() == Some(&http::uri::Scheme::HTTPS);
                let tls = match upstream_tls(&cluster, endpoint, self.shared.mtls.as_deref(), https)
                {
                    Ok(tls) => tls,
                    Err(err) => return Box::pin(async move { Err(err) }),
                };
                let settings = cluster.tls_cache.1.get_or_init(|| pool_settings(&cluster));
                let pool = pools.get_cached(
                    cluster.state().pool_cache(),
                    (addr, tls, protocol),
                    cluster.key(),
                    settings,
                );
                // Held by the pool's response body until it ends: one wrapper for all.
                let guards = BodyGuards { request, in_flight };
                // Only outlier detection reports events after the response.
                let events = policy
                    .outlier_detection
                    .is_some()
                    .then(|| self.shared.events.clone());
                // A try the route timeout abandons before its response headers counts as a
                // local-origin timeout for outlier detection (`AfterSend` sees it dropped).
                let abandon = events.as_ref().and_then(|_| {
                    req.extensions()
                        .get::<RouteDecision>()?
                        .timeout_expiry()
                        .cloned()
                });
                // What the pool replays a request from after a stale connection, if the retry
                // layer keeps a copy of it.
                let replay = tries.filter(TryContext::can_replay);
                // Made here, not in the future: the future then holds the send only, not the
                // request and the send.
                Box::pin(Sent {
                    send: pool.send_guarded(req, guards, replay, now),
                    after: Some(AfterSend {
                        abandon,
                        cluster,
                        events,
                        endpoints,
                        addr,
                        // Boxed: rare, and the future stays small without it.
                        set_cookie: set_cookie.map(Box::new),
                    }),
                })
            }
            Target::Passthrough { host, port } => {
                Box::pin(passthrough(pools.clone(), req, host, port))
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of an [`Upstream`] send to a cluster endpoint: the pool's send, then
    /// [`AfterSend`]. (Not an `async` block: one would hold the pool's future twice, as its
    /// capture and as what it awaits.)
    struct Sent<F> {
        #[pin]
        send: F,
        after: Option<AfterSend>,
    }
}

/// What an [`Upstream`] send does once the pool answered: report the outcome to outlier
/// detection, add the consistent-hash cookie.
///
/// Until then it is the try's abandon guard: dropped unanswered (the pool's send with it)
/// after the route timeout expired (the timeout layer drops the call), it reports a
/// local-origin timeout for the endpoint to outlier detection, as Envoy's router does.
/// Dropped unanswered for any other reason (the caller went away), it reports nothing.
struct AfterSend {
    /// The route timeout's expiry, while the try waits for its answer (outlier detection
    /// only).
    abandon: Option<RouteTimeoutExpiry>,
    cluster: Arc<Cluster>,
    /// The mesh's events, when the cluster has outlier detection.
    events: Option<broadcast::Sender<MeshEvent>>,
    endpoints: Arc<[crate::registry::Endpoint]>,
    addr: SocketAddr,
    set_cookie: Option<Box<crate::balance::SetCookie>>,
}

impl AfterSend {
    fn finish(
        &mut self,
        result: Result<Response<MeshBody>, Error>,
    ) -> Result<Response<MeshBody>, Error> {
        // Answered: nothing to report on drop.
        self.abandon = None;
        let cluster = &self.cluster;
        if let Some(od) = &cluster.policy().outlier_detection
            && let Some(events) = &self.events
            && let Some(outcome) = Outcome::of_result(&result)
        {
            let events_out = cluster.state().outlier.record(
                self.addr,
                outcome,
                od,
                &self.endpoints,
                Instant::now(),
            );
            send_outlier_events(events, cluster.key(), events_out);
        }
        let mut resp = result?;
        if let Some(cookie) = self.set_cookie.take() {
            resp.headers_mut()
                .append(http::header::SET_COOKIE, cookie.header);
        }
        Ok(resp)
    }
}

impl Drop for AfterSend {
    fn drop(&mut self) {
        let Some(expiry) = &self.abandon else { return };
        if !expiry.expired() {
            return;
        }
        let (Some(od), Some(events)) = (&self.cluster.policy().outlier_detection, &self.events)
        else {
            return;
        };
        let endpoints = self.cluster.endpoints().load();
        let reported = self.cluster.state().outlier.record(
            self.addr,
            Outcome::LocalOrigin(LocalFailure::Timeout),
            od,
            &endpoints,
            Instant::now(),
        );
        send_outlier_events(events, self.cluster.key(), reported);
    }
}

impl<F> Future for Sent<F>
where
    F: Future<Output = Result<Response<MeshBody>, Error>>,
{
    type Output = Result<Response<MeshBody>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.send.poll(cx));
        Poll::Ready(match this.after.take() {
            Some(mut after) => after.finish(result),
            // Polled again after its answer (a contract breach): the pool's answer as it is.
            None => result,
        })
    }
}

impl Upstream {
    fn outlier_events(&self, cluster: &ClusterKey, events: Vec<OutlierEvent>) {
        send_outlier_events(&self.shared.events, cluster, events);
    }
}

/// The label Istio puts on endpoints whose workload has a sidecar (auto mTLS reaches them with
/// `ISTIO_MUTUAL`).
const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";

/// The TLS towards `endpoint` of `cluster`: the DestinationRule's `tls` when it has one
/// (`DISABLE` = plaintext, even for an `https` URI), else for an `https` URI `SIMPLE` against
/// the system's root certificates, else auto mTLS: `ISTIO_MUTUAL` to endpoints labelled
/// `security.istio.io/tlsMode: istio` when the mesh has an identity (`mtls` is its trust
/// domain), plaintext otherwise. `ISTIO_MUTUAL` expects the SPIFFE ID of the endpoint's
/// service account (namespace from a `*.<ns>.svc.*` host), or any identity of the trust
/// domain when it has none; `subjectAltNames` override.
fn upstream_tls(
    cluster: &Cluster,
    endpoint: &crate::registry::Endpoint,
    mtls: Option<&str>,
    https: bool,
) -> Result<TlsPolicy, Error> {
    if cluster.policy().tls.is_none() && mtls.is_none() && !https {
        return Ok(TlsPolicy::Plaintext);
    }
    let auto = endpoint.labels.get(TLS_MODE_LABEL).map(String::as_str) == Some("istio");
    let cache = &cluster.tls_cache;
    if let Some(hit) = cache.0.load().iter().find(|e| {
        e.addr == endpoint.addr
            && e.auto == auto
            && e.https == https
            && e.service_account == endpoint.service_account
    }) {
        return hit.policy.clone().map_err(tls_refused);
    }
    let policy = compute_upstream_tls(cluster, endpoint, mtls, auto, https);
    let entry = TlsCacheEntry {
        addr: endpoint.addr,
        auto,
        https,
        service_account: endpoint.service_account.clone(),
        policy: policy.clone(),
    };
    cache.0.rcu(|old| {
        let mut next: Vec<TlsCacheEntry> = old
            .iter()
            .filter(|e| !(e.addr == entry.addr && e.https == entry.https))
            .take(TLS_CACHE_CAP - 1)
            .cloned()
            .collect();
        next.push(entry.clone());
        next
    });
    policy.map_err(tls_refused)
}

/// A DestinationRule `tls` block that cannot be honoured: the request fails as a connect
/// failure naming why (never silently in plaintext).
fn tls_refused(reason: Arc<str>) -> Error {
    Error::UpstreamReset {
        reason: ResetReason::ConnectionFailure,
        transport_failure: Some(format!("DestinationRule tls: {reason}")),
    }
}

/// The most endpoints a cluster remembers the TLS policy of (beyond, the oldest are
/// recomputed when met again).
const TLS_CACHE_CAP: usize = 256;

/// Per-cluster memo of [`upstream_tls`] (building an `ISTIO_MUTUAL` policy parses a SPIFFE ID
/// and allocates, which should not happen per request) and of the cluster's pool settings
/// (a cluster's policy never changes: a reload builds new clusters).
#[derive(Default)]
pub(crate) struct TlsCache(
    arc_swap::ArcSwap<Vec<TlsCacheEntry>>,
    std::sync::OnceLock<PoolSettings>,
);

#[derive(Clone)]
pub(crate) struct TlsCacheEntry {
    addr: SocketAddr,
    auto: bool,
    https: bool,
    service_account: Option<Arc<str>>,
    policy: Result<TlsPolicy, Arc<str>>,
}

fn compute_upstream_tls(
    cluster: &Cluster,
    endpoint: &crate::registry::Endpoint,
    mtls: Option<&str>,
    auto: bool,
    https: bool,
) -> Result<TlsPolicy, Arc<str>> {
    let identity = || {
        let td = mtls?;
        let sa = endpoint.service_account.as_deref()?;
        let ns = cluster.key().host.split('.').nth(1)?;
        crate::tls::SpiffeId::istio(td, ns, sa).ok()
    };
    let originate = match &cluster.policy().tls {
        Some(settings) => crate::tls::Originate::from_settings(settings, identity().as_ref())
            .map_err(|e| Arc::<str>::from(e.to_string()))?,
        // An `https` request carries its own TLS to the endpoint (SIMPLE, system roots).
        None if https => Some(crate::tls::Originate::https()),
        None if mtls.is_some() && auto => Some(crate::tls::Originate::istio_mutual(
            identity().map(crate::tls::ExpectedSan::Spiffe),
        )),
        None => None,
    };
    Ok(originate.map_or(TlsPolicy::Plaintext, |o| TlsPolicy::Tls(Arc::new(o))))
}

/// Logs outlier-detection events and sends them as [`MeshEvent`]s.
fn send_outlier_events(
    sink: &broadcast::Sender<MeshEvent>,
    cluster: &ClusterKey,
    events: Vec<OutlierEvent>,
) {
    for event in events {
        let event = match event {
            OutlierEvent::Ejected {
                addr,
                until,
                reason,
            } => {
                tracing::warn!(%cluster, %addr, reason = reason.as_str(), "outlier detection ejected an endpoint");
                MeshEvent::Ejected {
                    cluster: cluster.clone(),
                    addr,
                    until,
                    reason: reason.as_str(),
                }
            }
            OutlierEvent::Returned { addr } => {
                tracing::info!(%cluster, %addr, "ejected endpoint returned to service");
                MeshEvent::Returned {
                    cluster: cluster.clone(),
                    addr,
                }
            }
        };
        let _ = sink.send(event);
    }
}

/// Sends `req` straight to `host:port` (resolved with DNS): Istio's passthrough.
async fn passthrough(
    pools: Pools,
    mut req: Request<MeshBody>,
    host: Arc<str>,
    port: u16,
) -> Result<Response<MeshBody>, Error> {
    let protocol = if req.version() == http::Version::HTTP_2 {
        UpstreamProtocol::Http2
    } else {
        UpstreamProtocol::Http1
    };
    set_version(&mut req, protocol);
    let name = host.trim_start_matches('[').trim_end_matches(']');
    let addr = tokio::net::lookup_host((name, port))
        .await
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| Error::UpstreamReset {
            reason: ResetReason::ConnectionFailure,
            transport_failure: Some(format!("cannot resolve {host}")),
        })?;
    // An `https` URI is sent over TLS verified against the system's root certificates.
    let tls = if req.uri().scheme() == Some(&http::uri::Scheme::HTTPS) {
        TlsPolicy::Tls(Arc::new(crate::tls::Originate::https()))
    } else {
        TlsPolicy::Plaintext
    };
    let key = PoolKey {
        addr,
        tls,
        protocol,
        cluster: None,
    };
    let pool = pools.get(&key, &PoolSettings::default());
    pool.send(req).await
}

/// The HTTP version hyper must speak on the chosen connection.
fn set_version(req: &mut Request<MeshBody>, protocol: UpstreamProtocol) {
    match protocol {
        UpstreamProtocol::Http1 => *req.version_mut() = http::Version::HTTP_11,
        UpstreamProtocol::Http2 => *req.version_mut() = http::Version::HTTP_2,
        _ => {}
    }
}

/// Pool settings from the cluster's DestinationRule `connectionPool`: timeouts and requests
/// per connection per pool; `tcp.maxConnections` as the cluster-wide budget its endpoints'
/// pools share (Envoy's threshold), not a per-endpoint cap.
fn pool_settings(cluster: &Cluster) -> PoolSettings {
    let pool = cluster.policy().connection_pool.as_ref();
    let mut settings = PoolSettings::from_connection_pool(pool);
    settings.max_http1_connections = None;
    let limited = pool
        .and_then(|p| p.tcp.as_ref())
        .and_then(|t| t.max_connections)
        .is_some_and(|n| n > 0);
    if limited {
        settings.connection_limit = Some(ConnectionLimit {
            breaker: cluster.state().circuit_breaker.clone(),
            limits: CircuitLimits::of(cluster),
            cluster: cluster.key().clone(),
        });
    }
    settings
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::ConfigSource;

    /// A raw HTTP/1.1 server answering each connection's first request with a keep-alive
    /// response, then closing the connection once the next request has arrived (the
    /// stale-connection race). Returns its address, the connections accepted and every
    /// request head received.
    async fn closes_after_one() -> (SocketAddr, Arc<AtomicUsize>, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let (count, seen) = (accepted.clone(), heads.clone());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let seen = seen.clone();
                tokio::spawn(async move {
                    for answer in [true, false] {
                        let mut buf = Vec::new();
                        let mut chunk = [0u8; 1024];
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            match stream.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        seen.lock()
                            .expect("lock")
                            .push(String::from_utf8_lossy(&buf).into_owned());
                        if answer {
                            let _ = stream
                                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                                .await;
                        }
                    }
                    // Close without answering the second request.
                });
            }
        });
        (addr, accepted, heads)
    }

    fn mesh(addr: SocketAddr) -> Mesh {
        let services = format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: my-app, namespace: default}}\nspec:\n  hosts: [my-app.default.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports:\n  - {{number: 80, name: http, protocol: HTTP}}\n  endpoints:\n  - {{address: 127.0.0.1, ports: {{http: {}}}}}\n",
            addr.port()
        );
        let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: my-app, namespace: default}\nspec:\n  hosts: [my-app]\n  http:\n  - route: [{destination: {host: my-app}}]\n";
        Mesh::builder()
            .seed(7)
            .config(ConfigSource::yaml("services.yaml", services))
            .config(ConfigSource::yaml("vs.yaml", vs))
            .build()
            .expect("valid config")
    }

    /// The pool replays a body-less GET that met a stale connection from the retry layer's
    /// copy of the request: the same request again, on a fresh connection, not a retry.
    #[tokio::test]
    async fn stale_connection_replay_sends_the_same_request_and_is_not_a_retry() {
        let (addr, accepted, heads) = closes_after_one().await;
        let mesh = mesh(addr);
        let mut events = mesh.subscribe();
        let mut client = mesh.client();
        for i in 0..5 {
            let req = Request::get(format!("http://my-app/r{i}"))
                .header("x-test", format!("v{i}"))
                .body(body::empty())
                .expect("request");
            let resp = client.call(req).await.expect("infallible");
            assert_eq!(resp.status(), http::StatusCode::OK, "request {i}");
            let bytes = resp.into_body().collect().await.expect("body").to_bytes();
            assert_eq!(&bytes[..], b"ok");
        }
        // Requests 1..5 each met a connection closed under them and were replayed once.
        assert_eq!(accepted.load(Ordering::SeqCst), 5);
        let heads = heads.lock().expect("lock").clone();
        assert_eq!(heads.len(), 9, "{heads:?}");
        for pair in heads[1..].chunks(2) {
            assert_eq!(pair[0], pair[1], "the replay is the request as first sent");
            assert!(pair[0].starts_with("GET /r"), "{pair:?}");
            assert!(pair[0].contains("x-test: v"), "{pair:?}");
        }
        while let Ok(event) = events.try_recv() {
            assert!(
                !matches!(
                    event,
                    MeshEvent::Retried { .. } | MeshEvent::RetryRefused { .. }
                ),
                "a replay is not a retry: {event:?}"
            );
        }
    }

    #[tokio::test]
    async fn mesh_request_keeps_the_head_and_body_of_either_kind() {
        use http_body_util::BodyExt;
        let mesh_body = Request::post("http://my-app/a?b")
            .header("x-one", "1")
            .extension(7u32)
            .body(crate::body::full("boxed"))
            .expect("a request");
        let other = Request::post("http://my-app/a?b")
            .header("x-one", "1")
            .extension(7u32)
            .body(http_body_util::Full::new(Bytes::from_static(b"plain")))
            .expect("a request");
        for (req, want) in [
            (super::mesh_request(mesh_body), &b"boxed"[..]),
            (super::mesh_request(other), &b"plain"[..]),
        ] {
            assert_eq!(req.method(), http::Method::POST);
            assert_eq!(req.uri(), "http://my-app/a?b");
            assert_eq!(
                req.headers().get("x-one").map(|v| v.as_bytes()),
                Some(&b"1"[..])
            );
            assert_eq!(req.extensions().get::<u32>(), Some(&7));
            let got = req.into_body().collect().await.map(|c| c.to_bytes());
            assert_eq!(got.ok().as_deref(), Some(want));
        }
    }
}
