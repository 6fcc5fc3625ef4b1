//! [`RouteLayer`]: Istio's HTTP routing as a Tower layer.
//!
//! For each request the layer loads the mesh's current [`Snapshot`] once and:
//!
//! 1. normalises the path (the mesh's [`PathNormalization`](crate::route::PathNormalization);
//!    the normalised path is also what goes upstream, as with Envoy), answering 400 for a path
//!    Envoy rejects;
//! 2. finds the virtual host of the request's authority (URI authority, else `Host`), as
//!    Istio's virtual-host domains do for this workload's namespace. An unknown host goes
//!    straight to the authority under `ALLOW_ANY` (Envoy's passthrough) or is answered 502
//!    under `REGISTRY_ONLY`;
//! 3. on a host with VirtualServices, takes the first matching route (none: 404, flag `NR`);
//!    answers a CORS preflight, a `redirect` or a `directResponse` itself; otherwise picks a
//!    weighted destination, applies `rewrite` and the request `headers` operations (route
//!    level, then the destination's), and resolves the destination to a cluster (unknown host
//!    or subset: 503, flag `NC`). A host without VirtualService goes to its own service;
//! 4. puts the [`RouteDecision`] into the request's extensions and calls the inner service,
//!    then applies the response `headers` operations and the CORS response headers.
//!
//! Mesh-made answers are responses, as Envoy's are: they carry [`FLAG_HEADER`] and
//! [`LAYER_HEADER`], and for gRPC callers a trailers-only `grpc-status`. An error of the inner
//! service is converted the same way ([`Error::to_response`]), so the layer's own error type
//! is [`Infallible`].
//!
//! [`FLAG_HEADER`]: crate::error::FLAG_HEADER
//! [`LAYER_HEADER`]: crate::error::LAYER_HEADER

use std::borrow::Cow;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{HOST, ORIGIN};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, Uri};
use tower::{Layer, Service};

use crate::body::{self, MeshBody};
use crate::error::{BoxError, Error, is_grpc_request};
use crate::mesh::{Mesh, OutboundPolicy};
use crate::resilience::retry::TryContext;
use crate::resilience::retry::timeout::RouteTimeoutExpiry;
use crate::route::action::RouteAction;
use crate::route::matcher::RequestView;
use crate::route::normalize::try_normalize_path;
use crate::route::table::CompiledRoute;
use crate::snapshot::hosts::split_host_port;
use crate::snapshot::{Provenance, Snapshot, Target};

/// Where the router sent a request: inserted into the request's extensions for the layers
/// below it (and readable by users' inner services).
#[derive(Clone)]
pub struct RouteDecision {
    snapshot: Arc<Snapshot>,
    vhost: Option<Arc<str>>,
    route: Option<(usize, usize)>,
    /// The route `route` points at, kept so the layers below read it without a lookup.
    compiled: Option<Arc<CompiledRoute>>,
    destination: Arc<str>,
    subset: Option<Arc<str>>,
    target: Target,
    /// Whether the request is a gRPC request as routed (its `content-type` after the
    /// route's header operations): read by the layers below instead of the headers.
    grpc: bool,
    /// This try's context, set by the retry layer (carried here rather than as an
    /// extension of its own: one extension insert less per request).
    tries: Option<TryContext>,
    /// Set by the timeout layer when the call has a deadline.
    expiry: Option<RouteTimeoutExpiry>,
}

impl fmt::Debug for RouteDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteDecision")
            .field("version", &self.snapshot.version())
            .field("vhost", &self.vhost)
            .field("route", &self.route_name())
            .field("destination", &self.destination)
            .field("subset", &self.subset)
            .field("target", &self.target)
            .field("attempt", &self.tries.as_ref().map(TryContext::attempt))
            .finish()
    }
}

impl RouteDecision {
    /// The decision for a mirror copy: the original request's snapshot and route, the
    /// mirror's destination.
    pub(crate) fn for_mirror(t: &crate::resilience::mirror::MirrorTarget) -> RouteDecision {
        RouteDecision {
            snapshot: t.parent.snapshot.clone(),
            vhost: t.parent.vhost.clone(),
            route: t.parent.route,
            compiled: t.parent.compiled.clone(),
            destination: t.host.clone(),
            subset: t.subset.clone(),
            target: t.target.clone(),
            grpc: t.parent.grpc,
            tries: None,
            expiry: None,
        }
    }

    /// A copy of this decision without its try context (what the retry layer keeps to
    /// rebuild retries from; each try gets its own context).
    pub(crate) fn without_tries(&self) -> RouteDecision {
        RouteDecision {
            snapshot: self.snapshot.clone(),
            vhost: self.vhost.clone(),
            route: self.route,
            compiled: self.compiled.clone(),
            destination: self.destination.clone(),
            subset: self.subset.clone(),
            target: self.target.clone(),
            grpc: self.grpc,
            tries: None,
            expiry: self.expiry.clone(),
        }
    }

    /// Whether the request is a gRPC request (`content-type: application/grpc...`) as it
    /// was routed, after the route's request header operations.
    pub fn is_grpc(&self) -> bool {
        self.grpc
    }

    /// The retry layer's context of this try ([`TryContext`]): which try this is and the
    /// endpoints earlier tries went to. `None` when no
    /// [`RetryLayer`](crate::resilience::retry::RetryLayer) handled the request.
    pub fn try_context(&self) -> Option<&TryContext> {
        self.tries.as_ref()
    }

    /// Sets this try's context (the retry layer).
    pub(crate) fn set_try_context(&mut self, ctx: TryContext) {
        self.tries = Some(ctx);
    }

    /// The route timeout's expiry mark, when the call has a deadline.
    pub(crate) fn timeout_expiry(&self) -> Option<&RouteTimeoutExpiry> {
        self.expiry.as_ref()
    }

    /// Sets the route timeout's expiry mark (the timeout layer).
    pub(crate) fn set_timeout_expiry(&mut self, expiry: RouteTimeoutExpiry) {
        self.expiry = Some(expiry);
    }

    /// The snapshot the request was routed with (every layer of this request uses it).
    pub fn snapshot(&self) -> &Arc<Snapshot> {
        &self.snapshot
    }

    /// The virtual host (service or VirtualService host pattern) the authority resolved to;
    /// `None` for passthrough to an unknown host.
    pub fn virtual_host(&self) -> Option<&str> {
        self.vhost.as_deref()
    }

    /// The route that matched, when a VirtualService routed the request (`None` for a
    /// host's default route and for passthrough).
    pub fn route(&self) -> Option<&CompiledRoute> {
        self.compiled.as_deref()
    }

    /// The index of the match block that matched within [`route`](Self::route).
    pub fn match_index(&self) -> Option<usize> {
        self.route.map(|(_, m)| m)
    }

    /// The route's name (`""` for an unnamed route; `None` without a route).
    pub fn route_name(&self) -> Option<&str> {
        self.route().map(CompiledRoute::name)
    }

    /// The VirtualService that defined the route.
    pub fn provenance(&self) -> Option<&Arc<Provenance>> {
        self.route().map(CompiledRoute::provenance)
    }

    /// The destination host (FQDN) the request goes to.
    pub fn destination(&self) -> &Arc<str> {
        &self.destination
    }

    /// The destination subset, if the route named one.
    pub fn subset(&self) -> Option<&Arc<str>> {
        self.subset.as_ref()
    }

    /// The cluster, or the passthrough address.
    pub fn target(&self) -> &Target {
        &self.target
    }
}

/// The Gateway (`<namespace>/<name>`) whose server accepted a request, put in the request's
/// extensions by the ingress gateway ([`IngressGateway`](crate::proxy::gateway::IngressGateway)).
/// With it, [`RouteLayer`] routes by the VirtualServices bound to that Gateway
/// ([`Snapshot::resolve_for_gateway`]) and matches `gateways` against it; an authority no
/// bound VirtualService claims is answered 404 (`NR`), as Envoy's gateway does. Without it,
/// the workload's gateway (`MeshSettings::gateway`, `mesh` by default) applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayName {
    /// The Gateway, `<namespace>/<name>`.
    pub gateway: Arc<str>,
    /// The Gateway server port the request came in on: what `match.port` compares on a
    /// gateway (Envoy's listener port), whatever the `Host` header says.
    pub port: u16,
}

/// Routes requests by the mesh's VirtualServices ([module docs](self)).
#[derive(Clone, Debug)]
pub struct RouteLayer {
    mesh: Mesh,
}

impl RouteLayer {
    /// A layer routing with `mesh`'s current snapshot.
    pub fn new(mesh: Mesh) -> Self {
        RouteLayer { mesh }
    }
}

impl<S> Layer<S> for RouteLayer {
    type Service = RouteService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RouteService {
            mesh: self.mesh.clone(),
            inner,
            not_ready: None,
        }
    }
}

/// The service of [`RouteLayer`].
#[derive(Debug)]
pub struct RouteService<S> {
    mesh: Mesh,
    inner: S,
    /// The inner service's `poll_ready` error, answered to the next call (which then does
    /// not reach the inner service).
    not_ready: Option<Error>,
}

impl<S: Clone> Clone for RouteService<S> {
    fn clone(&self) -> Self {
        RouteService {
            mesh: self.mesh.clone(),
            inner: self.inner.clone(),
            not_ready: None,
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`RouteService`] over an inner future `F`: the router's own answer, or
    /// the inner call followed by the route's response-side work (header operations, CORS
    /// headers; an inner error answered as Envoy would). Not boxed: the caller's future holds
    /// it in place.
    pub struct RouteFuture<F> {
        #[pin]
        state: RouteState<F>,
    }
}

pin_project_lite::pin_project! {
    #[project = RouteStateProj]
    enum RouteState<F> {
        // Answered by the router (taken when polled).
        Answer { resp: Option<Response<MeshBody>> },
        // Sent on: the inner call, then the route's response work when it has any.
        Inner {
            #[pin]
            fut: F,
            grpc: bool,
            route: Option<(Arc<CompiledRoute>, AfterResponse)>,
        },
    }
}

impl<F> RouteFuture<F> {
    fn answer(resp: Response<MeshBody>) -> Self {
        RouteFuture {
            state: RouteState::Answer { resp: Some(resp) },
        }
    }
}

impl<F> fmt::Debug for RouteFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.state {
            RouteState::Answer { .. } => "Answer",
            RouteState::Inner { .. } => "Inner",
        };
        f.debug_tuple("RouteFuture").field(&what).finish()
    }
}

impl<F, E> Future for RouteFuture<F>
where
    F: Future<Output = Result<Response<MeshBody>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<MeshBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            RouteStateProj::Answer { resp } => Poll::Ready(Ok(resp.take().unwrap_or_else(|| {
                // Polled again after its answer (a contract breach): an error answer.
                answer(
                    &Error::Other("route future polled after completion".into()),
                    false,
                )
            }))),
            RouteStateProj::Inner { fut, grpc, route } => {
                let mut resp = match std::task::ready!(fut.poll(cx)) {
                    Ok(resp) => resp,
                    Err(err) => answer(&Error::from(err.into()), *grpc),
                };
                if let Some((route, after)) = route.as_ref() {
                    finish_response(route, after, &mut resp);
                }
                Poll::Ready(Ok(resp))
            }
        }
    }
}

/// What the router does with one request.
enum Outcome {
    /// Answer it here.
    Answer(Response<MeshBody>),
    /// Send it on, then apply `after` to the response.
    Forward(RouteDecision, AfterResponse),
}

/// Response-side work of a forwarded request.
struct AfterResponse {
    /// The index of the chosen destination, whose response header operations apply after
    /// the route's; `None` when no route forwarded the request.
    ops: Option<usize>,
    origin: Option<HeaderValue>,
}

impl<S, B> Service<Request<B>> for RouteService<S>
where
    S: Service<Request<B>, Response = Response<MeshBody>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<MeshBody>;
    type Error = Infallible;
    type Future = RouteFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // An inner error is answered as a response to the next request (this service's
        // errors are responses), which then does not reach the inner service.
        match self.inner.poll_ready(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Ready(Err(e)) => {
                self.not_ready = Some(Error::from(e.into()));
                Poll::Ready(Ok(()))
            }
        }
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let (parts, body) = req.into_parts();
        self.call_parts(parts, body)
    }
}

impl<S> RouteService<S> {
    /// [`call`](Service::call) with the request in its parts (what the
    /// [`MeshClient`](crate::MeshClient) has after giving the body its type: no request to
    /// put together only to take apart again).
    pub(crate) fn call_parts<B>(
        &mut self,
        mut parts: http::request::Parts,
        body: B,
    ) -> RouteFuture<S::Future>
    where
        S: Service<Request<B>, Response = Response<MeshBody>>,
        S::Error: Into<BoxError>,
    {
        let grpc = is_grpc_request(&parts.headers);
        if let Some(err) = self.not_ready.take() {
            return RouteFuture::answer(answer(&err, grpc));
        }
        let snapshot = self.mesh.inner.snapshot.load_full();
        match decide(&self.mesh, &snapshot, &mut parts, grpc) {
            Err(err) => RouteFuture::answer(answer(&err, grpc)),
            Ok(Outcome::Answer(resp)) => RouteFuture::answer(resp),
            Ok(Outcome::Forward(decision, after)) => {
                // The response side needs only the route, and only when it has work to do.
                let route = after
                    .ops
                    .and_then(|_| decision.compiled.clone())
                    .map(|route| (route, after));
                parts.extensions.insert(decision);
                RouteFuture {
                    state: RouteState::Inner {
                        fut: self.inner.call(Request::from_parts(parts, body)),
                        grpc,
                        route,
                    },
                }
            }
        }
    }
}

/// A mesh-made answer for `err`.
pub(crate) fn answer(err: &Error, grpc: bool) -> Response<MeshBody> {
    err.to_response(grpc).map(body::boxed)
}

/// Applies the response header operations of the route and the chosen destination, and the
/// route's CORS response headers.
fn finish_response(route: &CompiledRoute, after: &AfterResponse, resp: &mut Response<MeshBody>) {
    let Some(dest) = after.ops else {
        return;
    };
    route.headers().apply_response(resp.headers_mut());
    if let RouteAction::Forward(fwd) = route.action()
        && let Some(d) = fwd.destinations().get(dest)
    {
        d.headers().apply_response(resp.headers_mut());
    }
    if let Some(cors) = route.cors() {
        cors.apply_response(after.origin.as_ref(), resp.headers_mut());
    }
}

/// The request's authority: the URI's, else the `Host` header.
pub(crate) fn authority_of(parts: &http::request::Parts) -> Option<Cow<'_, str>> {
    if let Some(a) = parts.uri.authority() {
        return Some(Cow::Borrowed(a.as_str()));
    }
    parts
        .headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty())
        .map(Cow::Borrowed)
}

/// What [`decide`] found, before `parts` is changed.
struct Plan<'s> {
    decision: RouteDecision,
    /// The route (from the snapshot) and the chosen destination's index, for header ops.
    route: Option<(&'s CompiledRoute, usize)>,
    /// A new authority (rewrite or header op), a valid string.
    authority: Option<HeaderValue>,
    /// The `Host` header as the URI's authority, when the URI has none (`None` also when it
    /// is not a valid authority).
    host: Option<Authority>,
    /// A new path-and-query (rewrite), or the normalised path when it differs.
    path_and_query: Option<String>,
    origin: Option<HeaderValue>,
    /// Whether the response needs header operations or CORS headers.
    after_response: bool,
}

/// Decides what happens to a request; may rewrite `parts` (path, authority, headers).
///
/// Matching borrows the request as it is (the only allocation on the way is a normalised
/// path when normalisation changes it); the request is changed afterwards, and its URI is
/// rebuilt only when something in it changes or it is not absolute yet. The rebuilt URI
/// keeps the parts that do not change (scheme, authority, path) as they are, without copying
/// them; an authority taken from the `Host` header is the one copy.
///
/// `grpc`: whether the request as it came is a gRPC request; the decision records it as it
/// is after the route's header operations.
fn decide(
    mesh: &Mesh,
    snap: &Arc<Snapshot>,
    parts: &mut http::request::Parts,
    grpc: bool,
) -> Result<Outcome, Error> {
    let mut plan = match plan(mesh, snap, parts, grpc)? {
        Ok(plan) => plan,
        Err(answer) => return Ok(Outcome::Answer(answer)),
    };
    if let Some((route, dest)) = plan.route {
        let mut changed = !route.headers().is_empty();
        route.headers().apply_request(&mut parts.headers);
        if let RouteAction::Forward(fwd) = route.action()
            && let Some(d) = fwd.destinations().get(dest)
        {
            changed |= !d.headers().is_empty();
            d.headers().apply_request(&mut parts.headers);
        }
        if changed {
            // The operations may have set or removed `content-type`.
            plan.decision.grpc = is_grpc_request(&parts.headers);
        }
    }
    let absolute = parts.uri.scheme().is_some() && parts.uri.authority().is_some();
    if plan.authority.is_some() || plan.path_and_query.is_some() || !absolute {
        set_uri(
            parts,
            plan.authority.as_ref(),
            plan.host,
            plan.path_and_query,
        )?;
        if let Some(authority) = plan.authority
            && parts.headers.contains_key(HOST)
        {
            parts.headers.insert(HOST, authority);
        }
    }
    let ops = plan
        .route
        .filter(|_| plan.after_response)
        .map(|(_, dest)| dest);
    Ok(Outcome::Forward(
        plan.decision,
        AfterResponse {
            ops,
            origin: plan.origin,
        },
    ))
}

/// The routing decision for `parts`, or the answer the router gives itself.
#[allow(clippy::type_complexity)]
fn plan<'s>(
    mesh: &Mesh,
    snap: &'s Arc<Snapshot>,
    parts: &http::request::Parts,
    grpc: bool,
) -> Result<Result<Plan<'s>, Response<MeshBody>>, Error> {
    let settings = snap.settings();
    // The authority as `authority_of` finds it; the `Host` header is kept for the URI.
    let host = match parts.uri.authority() {
        Some(_) => None,
        None => parts.headers.get(HOST),
    };
    let authority = match parts.uri.authority() {
        Some(a) => Some(a.as_str()),
        None => host.and_then(|h| h.to_str().ok()).filter(|h| !h.is_empty()),
    }
    .ok_or_else(|| Error::BadRequest {
        reason: "the request has no authority (no URI authority and no Host header)".into(),
    })?;
    let scheme = parts.uri.scheme_str().unwrap_or("http");
    let (host_part, port) = split_host_port(authority);
    let port = port.unwrap_or(if scheme == "https" { 443 } else { 80 });
    let query = parts.uri.query();
    let path = try_normalize_path(parts.uri.path(), settings.path_normalization).map_err(|e| {
        Error::BadRequest {
            reason: e.to_string().into(),
        }
    })?;
    let normalized = match &path {
        Cow::Owned(p) => Some(match query {
            Some(q) => format!("{p}?{q}"),
            None => p.clone(),
        }),
        Cow::Borrowed(_) => None,
    };
    let forward = |decision: RouteDecision| Plan {
        decision,
        route: None,
        authority: None,
        host: host.and_then(|h| Authority::try_from(h.as_bytes()).ok()),
        path_and_query: normalized.clone(),
        origin: None,
        after_response: false,
    };

    let gateway = parts.extensions.get::<GatewayName>();
    let resolved = match gateway {
        None => snap.resolve(authority),
        Some(g) => match snap.resolve_for_gateway(&g.gateway, authority) {
            Some(r) => Some(r),
            None => {
                return Err(Error::NoRoute {
                    host: Arc::from(host_part),
                });
            }
        },
    };
    let Some(resolved) = resolved else {
        return match settings.outbound_policy {
            OutboundPolicy::RegistryOnly => Err(Error::RegistryOnly {
                host: Arc::from(host_part),
            }),
            OutboundPolicy::AllowAny => {
                let host: Arc<str> = Arc::from(host_part);
                Ok(Ok(forward(RouteDecision {
                    snapshot: snap.clone(),
                    vhost: None,
                    route: None,
                    compiled: None,
                    destination: host.clone(),
                    subset: None,
                    target: Target::Passthrough { host, port },
                    grpc,
                    tries: None,
                    expiry: None,
                })))
            }
        };
    };
    let vhost = resolved.value;
    let vhost_name = vhost.host().clone();

    let Some(table) = vhost.routes() else {
        // Istio's default route: the host's own service.
        let destination: Arc<str> = if vhost_name.starts_with('*') {
            Arc::from(host_part.to_ascii_lowercase())
        } else {
            vhost_name.clone()
        };
        let target = snap.target(&destination, None, None, port)?;
        return Ok(Ok(forward(RouteDecision {
            snapshot: snap.clone(),
            vhost: Some(vhost_name),
            route: None,
            compiled: None,
            destination,
            subset: None,
            target,
            grpc,
            tries: None,
            expiry: None,
        })));
    };

    let view = RequestView {
        method: &parts.method,
        scheme,
        authority,
        path: &path,
        query,
        headers: &parts.headers,
        port: gateway.map_or(port, |g| g.port),
        source: Some(&settings.source),
        gateway: gateway.map_or(settings.gateway.as_str(), |g| &g.gateway),
        claims: None,
    };
    let Some(m) = table.select(&view) else {
        return Err(Error::NoRoute { host: vhost_name });
    };
    let route = m.route;
    let route_index = m.index;
    // Only CORS reads the origin.
    let origin = route
        .cors()
        .and_then(|_| parts.headers.get(ORIGIN).cloned());

    if let Some(cors) = route.cors()
        && let Some(mut resp) = cors.preflight(parts)
    {
        route.headers().apply_response(resp.headers_mut());
        return Ok(Err(resp));
    }
    let fwd = match route.action() {
        RouteAction::Redirect(r) => {
            let mut resp = r.response(&m, parts, port);
            route.headers().apply_response(resp.headers_mut());
            return Ok(Err(resp));
        }
        RouteAction::DirectResponse(d) => {
            let mut resp = d.response();
            route.headers().apply_response(resp.headers_mut());
            if let Some(cors) = route.cors() {
                cors.apply_response(origin.as_ref(), resp.headers_mut());
            }
            return Ok(Err(resp));
        }
        RouteAction::Forward(fwd) => fwd,
    };

    let dests = fwd.destinations();
    let roll = mesh.inner.dice.roll(dests.total());
    let (dest_index, dest) = dests.pick_indexed(roll);
    let target = snap.target_cached(
        fwd.target_cache(dest_index),
        dest.host(),
        dest.subset(),
        dest.port(),
        port,
    )?;

    // Authority: a route rewrite beats a destination header, which beats a route header.
    let new_authority = fwd
        .rewrite()
        .and_then(|r| r.authority())
        .or_else(|| dest.headers().authority())
        .or_else(|| route.headers().authority())
        .filter(|v| v.to_str().is_ok())
        .cloned();
    let new_pq = fwd
        .rewrite()
        .and_then(|r| r.apply_path(&m, &path, query))
        .or(normalized);

    Ok(Ok(Plan {
        decision: RouteDecision {
            snapshot: snap.clone(),
            vhost: Some(vhost_name),
            route: Some((route_index, m.matcher)),
            compiled: Some(route.clone()),
            destination: dest.host().clone(),
            subset: dest.subset().cloned(),
            target,
            grpc,
            tries: None,
            expiry: None,
        },
        route: Some((route, dest_index)),
        authority: new_authority,
        host: host.and_then(|h| table.authority_for(h)),
        path_and_query: new_pq,
        origin,
        after_response: !route.headers().is_empty()
            || !dest.headers().is_empty()
            || route.cors().is_some(),
    }))
}

/// Makes the request's URI absolute, `scheme://authority` + path-and-query (the connection
/// layer derives what each HTTP version needs): the scheme is the URI's (`http` when it has
/// none), the authority `authority` (a new one) when given, else the URI's, else `host` (the
/// `Host` header's); the path-and-query `path_and_query` when given (`/` when empty), else
/// the URI's (`/` when it has none). Errors (400) when a new path or the new authority is not
/// valid in a URI, or there is no authority.
fn set_uri(
    parts: &mut http::request::Parts,
    authority: Option<&HeaderValue>,
    host: Option<Authority>,
    path_and_query: Option<String>,
) -> Result<(), Error> {
    let bad = |what: &str| Error::BadRequest {
        reason: format!("cannot build the upstream URI: invalid {what}").into(),
    };
    let mut uri = std::mem::take(&mut parts.uri).into_parts();
    let pq = match path_and_query {
        Some(pq) if pq.is_empty() => PathAndQuery::from_static("/"),
        Some(pq) => PathAndQuery::from_maybe_shared(Bytes::from(pq)).map_err(|_| bad("path"))?,
        None => uri
            .path_and_query
            .take()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
    };
    let authority = match (authority, uri.authority.take()) {
        (Some(new), _) => Authority::try_from(new.as_bytes()).map_err(|_| bad("authority"))?,
        (None, Some(old)) => old,
        (None, None) => host.ok_or_else(|| bad("authority"))?,
    };
    uri.scheme = Some(uri.scheme.take().unwrap_or(Scheme::HTTP));
    uri.authority = Some(authority);
    uri.path_and_query = Some(pq);
    parts.uri = Uri::from_parts(uri).map_err(|_| bad("URI"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::table::RouteTable;

    fn parts(uri: &str, host: Option<&str>) -> http::request::Parts {
        let mut req = Request::builder().uri(uri);
        if let Some(h) = host {
            req = req.header(HOST, h);
        }
        let Ok(req) = req.body(()) else {
            panic!("bad test request");
        };
        req.into_parts().0
    }

    fn host(parts: &http::request::Parts) -> Option<HeaderValue> {
        parts.headers.get(HOST).cloned()
    }

    fn authority(s: &'static str) -> Option<Authority> {
        Some(Authority::from_static(s))
    }

    #[test]
    fn origin_form_gets_the_host_as_authority_and_keeps_its_path() {
        let mut p = parts("/a/b?x=1", Some("my-app:8080"));
        let h = host(&p);
        assert!(set_uri(&mut p, None, authority("my-app:8080"), None).is_ok());
        assert_eq!(p.uri.to_string(), "http://my-app:8080/a/b?x=1");
        assert_eq!(host(&p), h, "the Host header is left alone");
    }

    #[test]
    fn absolute_uris_keep_their_scheme_and_authority_unless_rewritten() {
        let mut p = parts("https://a.example/p", Some("ignored"));
        assert!(set_uri(&mut p, None, authority("b"), Some("/q?y".into())).is_ok());
        assert_eq!(p.uri.to_string(), "https://a.example/q?y");
        let new = HeaderValue::from_static("b.example:81");
        assert!(set_uri(&mut p, Some(&new), None, Some(String::new())).is_ok());
        assert_eq!(p.uri.to_string(), "https://b.example:81/");
    }

    #[test]
    fn route_tables_parse_a_host_once_and_share_it() {
        let table = RouteTable::default();
        let a = HeaderValue::from_static("my-app:80");
        let first = table.authority_for(&a);
        let again = table.authority_for(&a);
        assert_eq!(first.as_ref().map(Authority::as_str), Some("my-app:80"));
        assert_eq!(again, first);
        // Another spelling is parsed on its own (and not kept); an invalid one is `None`.
        let b = HeaderValue::from_static("MY-APP");
        assert_eq!(
            table.authority_for(&b).map(|a| a.to_string()),
            Some("MY-APP".into())
        );
        assert_eq!(table.authority_for(&a), first);
        assert_eq!(table.authority_for(&HeaderValue::from_static("a b")), None);
    }

    /// What the inner service sees of the decision's gRPC flag for a request with
    /// `content_type`, routed by a route whose request header operations are `ops`.
    async fn routed_grpc(ops: &str, content_type: Option<&'static str>) -> Option<bool> {
        let yaml = format!(
            r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: my-app, namespace: default}}
spec:
  hosts: [my-app.default.svc.cluster.local]
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: my-app, namespace: default}}
spec:
  hosts: [my-app.default.svc.cluster.local]
  http:
  - route: [{{destination: {{host: my-app.default.svc.cluster.local}}}}]
    {ops}
"#
        );
        let mesh = match Mesh::builder()
            .namespace("default")
            .config_str("mesh.yaml", &yaml)
            .build()
        {
            Ok(mesh) => mesh,
            Err(err) => panic!("config refused: {err}"),
        };
        let seen = Arc::new(std::sync::Mutex::new(None));
        let record = seen.clone();
        let inner = tower::service_fn(move |req: Request<MeshBody>| {
            let grpc = req.extensions().get::<RouteDecision>().map(|d| d.is_grpc());
            *record
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = grpc;
            async { Ok::<_, Error>(Response::new(body::empty())) }
        });
        let mut svc = RouteLayer::new(mesh).layer(inner);
        let mut req = Request::builder().uri("http://my-app.default.svc.cluster.local/");
        if let Some(ct) = content_type {
            req = req.header(http::header::CONTENT_TYPE, ct);
        }
        let Ok(req) = req.body(body::empty()) else {
            panic!("bad test request");
        };
        let _ = svc.call(req).await;
        *seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    #[tokio::test]
    async fn the_decision_knows_a_grpc_request_as_routed() {
        let grpc = Some("application/grpc");
        assert_eq!(routed_grpc("", grpc).await, Some(true));
        assert_eq!(routed_grpc("", Some("text/plain")).await, Some(false));
        assert_eq!(routed_grpc("", None).await, Some(false));
        // The route's header operations come first.
        let set = "headers: {request: {set: {content-type: application/grpc+proto}}}";
        assert_eq!(routed_grpc(set, None).await, Some(true));
        let remove = "headers: {request: {remove: [content-type]}}";
        assert_eq!(routed_grpc(remove, grpc).await, Some(false));
        let other = "headers: {request: {set: {x-a: b}}}";
        assert_eq!(routed_grpc(other, grpc).await, Some(true));
    }

    #[test]
    fn authority_form_goes_to_the_root_path() {
        let mut p = parts("my-app:80", None);
        assert!(set_uri(&mut p, None, None, None).is_ok());
        assert_eq!(p.uri.to_string(), "http://my-app:80/");
    }

    #[test]
    fn no_or_bad_authority_and_bad_paths_are_400() {
        let bad = |r: Result<(), Error>| matches!(r, Err(Error::BadRequest { .. }));
        assert!(bad(set_uri(&mut parts("/", None), None, None, None)));
        let space = HeaderValue::from_static("a b");
        assert!(bad(set_uri(
            &mut parts("/", None),
            Some(&space),
            None,
            None
        )));
        let ok = HeaderValue::from_static("a");
        assert!(bad(set_uri(
            &mut parts("/", None),
            Some(&ok),
            None,
            Some("/a b".into())
        )));
    }
}
