//! [`MirrorLayer`]: VirtualService `mirror` / `mirrorPercentage` and `mirrors[]` (Istio's
//! `HTTPMirrorPolicy`), as Envoy's request mirroring (shadowing) does it.
//!
//! For each mirror of the matched route (read from the [`RouteDecision`]), with its
//! percentage (absent = 100%, an explicit 0 = off; sampled in parts per million with a
//! seedable dice, one roll per mirror with a non-zero percentage), the layer sends a copy of
//! the request to the mirror destination, fire-and-forget:
//!
//! - **Authority**: `-shadow` is appended to the host of the copy's authority, before any port
//!   (`my-app:8080` → `my-app-shadow:8080`), as Envoy's `shadowAppendedHost` does; the URI's
//!   authority and the `Host` header (when present) both carry it. See [`shadow_authority`].
//! - **Destination**: the copy carries a [`MirrorTarget`] extension (the mirror's host, subset
//!   and port, the [`Target`] resolved in the request's snapshot, and the original decision);
//!   its [`RouteDecision`] is removed so that no layer below can send it to the primary
//!   destination by mistake. The mirror sender is expected to route on the `MirrorTarget`
//!   (Envoy sends the shadow to the mirror *cluster*; the rewritten authority is only a
//!   header). A mirror whose destination resolves to no cluster in the snapshot is skipped
//!   and counted (`unresolved`).
//! - **Body**: a copy is sent only once the original body has been read to its end within the
//!   layer's cap (64 KiB by default), the chunks being kept while they stream to the primary
//!   untouched; a body over the cap (by `content-length` up front, or mid-stream) is not
//!   mirrored (`body_over_cap`), and neither is a body that fails or is dropped before its end
//!   (`body_incomplete`). A request with an empty body is mirrored at once.
//! - **Fire and forget**: the copy is spawned on the tokio runtime of the caller, bounded by
//!   the route `timeout` (else the layer's, 15 s by default, Envoy's route default) including
//!   the time to read and discard its response body. Its outcome never reaches the caller's
//!   response and never delays it. At most `max_in_flight` copies (64 by default) are in
//!   flight per layer, counting those still waiting for the original body; more are skipped
//!   and counted (`skipped_in_flight`). So the memory held for mirroring is at most
//!   `max_in_flight × cap`.
//!
//! Counters are in [`MirrorStats`] ([`MirrorLayer::stats`]). In the outbound stack the layer
//! sits below the fault layer (an aborted request is not mirrored, as in Envoy where the
//! fault filter answers before the router) and above timeout and retries (one copy per
//! request, not per try).

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::header::{CONTENT_LENGTH, HOST};
use http::uri::Authority;
use http::{HeaderMap, HeaderValue, Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::runtime::Handle;
use tower::{Layer, Service, ServiceExt};

use crate::body::{self, MeshBody};
use crate::dice::{Dice, os_seed};
use crate::error::{BoxError, Error};
use crate::route::RouteDecision;
use crate::snapshot::Target;

/// The default cap on a mirrored request body: 64 KiB.
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;
/// The default bound on mirror copies in flight per layer.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 64;
/// The default bound on a mirror copy's duration when the route has no `timeout`: 15 s,
/// Envoy's default route timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

const MILLION: u64 = 1_000_000;

// ---------------------------------------------------------------------------------------------
// Authority
// ---------------------------------------------------------------------------------------------

/// `authority` with `-shadow` appended to its host, before any port, as Envoy's
/// `Utility::shadowAppendedHost`: `my-app:8080` → `my-app-shadow:8080`, `my-app` →
/// `my-app-shadow`, `[::1]:8080` → `[::1]-shadow:8080` (Envoy's form for an IPv6 literal too).
pub fn shadow_authority(authority: &str) -> String {
    let port_start = match authority.rfind(']') {
        // IPv6 literal: a port only right after the bracket.
        Some(end) => authority
            .get(end + 1..)
            .filter(|rest| rest.starts_with(':'))
            .map(|_| end + 1),
        None => authority.rfind(':'),
    };
    match port_start.and_then(|i| Some((authority.get(..i)?, authority.get(i..)?))) {
        Some((host, port)) => format!("{host}-shadow{port}"),
        None => format!("{authority}-shadow"),
    }
}

// ---------------------------------------------------------------------------------------------
// Target extension and stats
// ---------------------------------------------------------------------------------------------

/// Where a mirror copy goes: an extension of every copy the [`MirrorLayer`] sends (which
/// carries no [`RouteDecision`]). The mirror sender routes on it.
#[derive(Debug, Clone)]
pub struct MirrorTarget {
    /// The mirror `destination.host` (FQDN).
    pub host: Arc<str>,
    /// The mirror `destination.subset`.
    pub subset: Option<Arc<str>>,
    /// The mirror `destination.port.number`, when set.
    pub port: Option<u16>,
    /// The destination resolved in the original request's snapshot.
    pub target: Target,
    /// The decision that routed the original request (its snapshot, route, ...).
    pub parent: RouteDecision,
}

/// Counters of a [`MirrorLayer`], shared by its services.
#[derive(Debug, Default)]
pub struct MirrorStats {
    sent: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
    skipped_in_flight: AtomicU64,
    body_over_cap: AtomicU64,
    body_incomplete: AtomicU64,
    unresolved: AtomicU64,
    no_runtime: AtomicU64,
}

/// A reading of [`MirrorStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MirrorCounts {
    /// Copies handed to the mirror sender.
    pub sent: u64,
    /// Copies whose response came back (any status) and was read to its end in time.
    pub completed: u64,
    /// Copies that failed: an error from the sender, a response body error, or the timeout.
    pub failed: u64,
    /// Copies not made: `max_in_flight` copies were in flight.
    pub skipped_in_flight: u64,
    /// Copies not sent: the request body was over the cap.
    pub body_over_cap: u64,
    /// Copies not sent: the request body failed or was dropped before its end.
    pub body_incomplete: u64,
    /// Copies not made: the mirror destination resolves to no cluster in the snapshot.
    pub unresolved: u64,
    /// Copies not made: the request was not sent from within a tokio runtime.
    pub no_runtime: u64,
}

impl MirrorStats {
    /// The counters now.
    pub fn counts(&self) -> MirrorCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MirrorCounts {
            sent: get(&self.sent),
            completed: get(&self.completed),
            failed: get(&self.failed),
            skipped_in_flight: get(&self.skipped_in_flight),
            body_over_cap: get(&self.body_over_cap),
            body_incomplete: get(&self.body_incomplete),
            unresolved: get(&self.unresolved),
            no_runtime: get(&self.no_runtime),
        }
    }
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

// ---------------------------------------------------------------------------------------------
// Layer
// ---------------------------------------------------------------------------------------------

struct Shared {
    seed: u64,
    dice: Dice,
    body_limit: usize,
    max_in_flight: usize,
    timeout: Duration,
    in_flight: AtomicUsize,
    stats: Arc<MirrorStats>,
}

/// A slot among the layer's `max_in_flight`, released on drop.
struct Slot(Arc<Shared>);

impl Slot {
    fn acquire(shared: &Arc<Shared>) -> Option<Slot> {
        shared
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < shared.max_in_flight).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(Arc::clone(shared)))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Mirrors requests per the route's `mirror` / `mirrors` ([module docs](self)), sending the
/// copies with `M` (a clone per copy).
#[derive(Clone)]
pub struct MirrorLayer<M> {
    sender: M,
    shared: Arc<Shared>,
}

impl<M> fmt::Debug for MirrorLayer<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MirrorLayer")
            .field("body_limit", &self.shared.body_limit)
            .field("max_in_flight", &self.shared.max_in_flight)
            .field("timeout", &self.shared.timeout)
            .finish_non_exhaustive()
    }
}

impl<M> MirrorLayer<M> {
    /// A layer sending copies with `sender`, sampling with dice seeded by `seed` (the OS's
    /// when `None`); body cap [`DEFAULT_BODY_LIMIT`], [`DEFAULT_MAX_IN_FLIGHT`] copies in
    /// flight, [`DEFAULT_TIMEOUT`] without a route timeout.
    pub fn new(sender: M, seed: Option<u64>) -> Self {
        Self::build(
            sender,
            seed.unwrap_or_else(os_seed),
            DEFAULT_BODY_LIMIT,
            DEFAULT_MAX_IN_FLIGHT,
            DEFAULT_TIMEOUT,
        )
    }

    fn build(sender: M, seed: u64, body_limit: usize, max: usize, timeout: Duration) -> Self {
        MirrorLayer {
            sender,
            shared: Arc::new(Shared {
                seed,
                dice: Dice::new(seed),
                body_limit,
                max_in_flight: max,
                timeout,
                in_flight: AtomicUsize::new(0),
                stats: Arc::default(),
            }),
        }
    }

    fn rebuild(self, f: impl FnOnce(&mut (usize, usize, Duration))) -> Self {
        let s = &self.shared;
        let mut knobs = (s.body_limit, s.max_in_flight, s.timeout);
        f(&mut knobs);
        MirrorLayer {
            sender: self.sender,
            shared: Arc::new(Shared {
                seed: s.seed,
                dice: Dice::new(s.seed),
                body_limit: knobs.0,
                max_in_flight: knobs.1,
                timeout: knobs.2,
                in_flight: AtomicUsize::new(0),
                stats: Arc::clone(&s.stats),
            }),
        }
    }

    /// The largest request body mirrored, in bytes (default 64 KiB).
    pub fn body_limit(self, bytes: usize) -> Self {
        self.rebuild(|k| k.0 = bytes)
    }

    /// The most copies in flight at once for this layer (default 64); more are skipped.
    pub fn max_in_flight(self, n: usize) -> Self {
        self.rebuild(|k| k.1 = n)
    }

    /// The bound on a copy's duration when the route has no `timeout` (default 15 s).
    pub fn timeout(self, timeout: Duration) -> Self {
        self.rebuild(|k| k.2 = timeout)
    }

    /// The layer's counters (shared by every service it made).
    pub fn stats(&self) -> Arc<MirrorStats> {
        Arc::clone(&self.shared.stats)
    }

    /// How many copies are in flight now (including those waiting for the original body).
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::Acquire)
    }
}

impl<S, M: Clone> Layer<S> for MirrorLayer<M> {
    type Service = MirrorService<S, M>;

    fn layer(&self, inner: S) -> Self::Service {
        MirrorService {
            inner,
            sender: self.sender.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The service of [`MirrorLayer`].
#[derive(Clone)]
pub struct MirrorService<S, M> {
    inner: S,
    sender: M,
    shared: Arc<Shared>,
}

impl<S: fmt::Debug, M> fmt::Debug for MirrorService<S, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MirrorService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// A copy waiting for the original body: everything but its body.
struct Shadow {
    parts: http::request::Parts,
    slot: Slot,
}

/// The copies of one request, sent when its body is complete.
struct Pending<M> {
    copies: Vec<Shadow>,
    sender: M,
    handle: Handle,
    timeout: Duration,
    stats: Arc<MirrorStats>,
}

impl<M> Pending<M>
where
    M: Service<Request<MeshBody>, Response = Response<MeshBody>> + Clone + Send + 'static,
    M::Future: Send + 'static,
{
    fn send(self, frames: &VecDeque<Frame<Bytes>>) {
        for copy in self.copies {
            let body = body::boxed(Frames(frames.iter().map(clone_frame).collect()));
            let req = Request::from_parts(copy.parts, body);
            let fut: CopyFuture<M::Error> = Box::pin(self.sender.clone().oneshot(req));
            let stats = Arc::clone(&self.stats);
            let slot = copy.slot;
            let timeout = self.timeout;
            bump(&self.stats.sent, 1);
            self.handle.spawn(run_copy(fut, stats, slot, timeout));
        }
    }
}

/// A copy's call to the mirror sender, boxed before it enters the spawned task.
type CopyFuture<E> = Pin<Box<dyn Future<Output = Result<Response<MeshBody>, E>> + Send>>;

async fn run_copy<E>(fut: CopyFuture<E>, stats: Arc<MirrorStats>, slot: Slot, timeout: Duration) {
    let done = tokio::time::timeout(timeout, async move {
        let mut body = fut.await.ok()?.into_body();
        while let Some(frame) = body.frame().await {
            frame.ok()?;
        }
        Some(())
    })
    .await;
    match done {
        Ok(Some(())) => bump(&stats.completed, 1),
        _ => bump(&stats.failed, 1),
    }
    drop(slot);
}

fn clone_frame(f: &Frame<Bytes>) -> Frame<Bytes> {
    match f.data_ref() {
        Some(d) => Frame::data(d.clone()),
        None => Frame::trailers(f.trailers_ref().cloned().unwrap_or_default()),
    }
}

impl<S, M> MirrorService<S, M>
where
    M: Service<Request<MeshBody>, Response = Response<MeshBody>> + Clone + Send + 'static,
    M::Future: Send + 'static,
{
    /// The copies `req` gets, before its body; counts the ones skipped.
    fn copies(&self, req: &Request<MeshBody>) -> Vec<Shadow> {
        let Some(decision) = req.extensions().get::<RouteDecision>() else {
            return Vec::new();
        };
        let Some(route) = decision.route() else {
            return Vec::new();
        };
        let mirrors = route.mirrors();
        if mirrors.is_empty() {
            return Vec::new();
        }
        let stats = &self.shared.stats;
        let request_port = req
            .uri()
            .port_u16()
            .unwrap_or(match req.uri().scheme_str() {
                Some("https") => 443,
                _ => 80,
            });
        let mut out = Vec::new();
        for m in mirrors {
            let pm = u64::from(m.percentage().per_million()).min(MILLION);
            if pm == 0 || self.shared.dice.roll(MILLION) >= pm {
                continue;
            }
            let Ok(target) =
                decision
                    .snapshot()
                    .target(m.host(), m.subset(), m.port(), request_port)
            else {
                bump(&stats.unresolved, 1);
                continue;
            };
            let Some(slot) = Slot::acquire(&self.shared) else {
                bump(&stats.skipped_in_flight, 1);
                continue;
            };
            let mut parts = copy_parts(req);
            parts.extensions.remove::<RouteDecision>();
            parts.extensions.insert(MirrorTarget {
                host: m.host().clone(),
                subset: m.subset().cloned(),
                port: m.port(),
                target,
                parent: decision.clone(),
            });
            out.push(Shadow { parts, slot });
        }
        out
    }
}

/// The head of a copy of `req`: method, URI and `Host` with the shadow authority, version,
/// headers, extensions.
fn copy_parts(req: &Request<MeshBody>) -> http::request::Parts {
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = req.method().clone();
    parts.version = req.version();
    parts.headers = req.headers().clone();
    parts.extensions = req.extensions().clone();
    parts.uri = req.uri().clone();
    let authority = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            req.headers()
                .get(HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        });
    if let Some(authority) = authority {
        let shadow = shadow_authority(&authority);
        set_authority(&mut parts.uri, &mut parts.headers, &shadow);
    }
    parts
}

fn set_authority(uri: &mut Uri, headers: &mut HeaderMap, shadow: &str) {
    if uri.authority().is_some()
        && let Ok(a) = Authority::try_from(shadow)
    {
        let mut p = uri.clone().into_parts();
        p.authority = Some(a);
        if let Ok(u) = Uri::from_parts(p) {
            *uri = u;
        }
    }
    if (headers.contains_key(HOST) || uri.authority().is_none())
        && let Ok(v) = HeaderValue::from_str(shadow)
    {
        headers.insert(HOST, v);
    }
}

impl<S, M> Service<Request<MeshBody>> for MirrorService<S, M>
where
    S: Service<Request<MeshBody>, Response = Response<MeshBody>, Error = Error>,
    M: Service<Request<MeshBody>, Response = Response<MeshBody>> + Clone + Send + 'static,
    M::Future: Send + 'static,
{
    type Response = Response<MeshBody>;
    type Error = Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<MeshBody>) -> Self::Future {
        let copies = self.copies(&req);
        if copies.is_empty() {
            return self.inner.call(req);
        }
        let stats = &self.shared.stats;
        let n = copies.len() as u64;
        let Ok(handle) = Handle::try_current() else {
            bump(&stats.no_runtime, n);
            return self.inner.call(req);
        };
        let limit = self.shared.body_limit;
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > limit as u64)
            || req.body().size_hint().lower() > limit as u64
        {
            bump(&stats.body_over_cap, n);
            return self.inner.call(req);
        }
        let timeout = req
            .extensions()
            .get::<RouteDecision>()
            .and_then(|d| d.route().and_then(|r| r.timeout()))
            .unwrap_or(self.shared.timeout);
        let pending = Pending {
            copies,
            sender: self.sender.clone(),
            handle,
            timeout,
            stats: Arc::clone(stats),
        };
        if req.body().is_end_stream() {
            pending.send(&VecDeque::new());
            return self.inner.call(req);
        }
        let req = req.map(|b| {
            body::boxed(TeeBody {
                inner: b,
                frames: VecDeque::new(),
                len: 0,
                limit,
                pending: Some(Box::new(pending)),
            })
        });
        self.inner.call(req)
    }
}

// ---------------------------------------------------------------------------------------------
// Bodies
// ---------------------------------------------------------------------------------------------

/// Forwards the original body untouched while keeping its frames for the copies, up to the
/// cap; sends the copies at its end.
struct TeeBody<M> {
    inner: MeshBody,
    frames: VecDeque<Frame<Bytes>>,
    len: usize,
    limit: usize,
    /// `None` once sent or abandoned.
    pending: Option<Box<Pending<M>>>,
}

impl<M> TeeBody<M>
where
    M: Service<Request<MeshBody>, Response = Response<MeshBody>> + Clone + Send + 'static,
    M::Future: Send + 'static,
{
    fn abandon(&mut self, over_cap: bool) {
        if let Some(p) = self.pending.take() {
            let n = p.copies.len() as u64;
            let c = if over_cap {
                &p.stats.body_over_cap
            } else {
                &p.stats.body_incomplete
            };
            bump(c, n);
        }
        self.frames.clear();
    }

    fn finish(&mut self) {
        if let Some(p) = self.pending.take() {
            p.send(&self.frames);
        }
        self.frames.clear();
    }
}

impl<M> Body for TeeBody<M>
where
    M: Service<Request<MeshBody>, Response = Response<MeshBody>> + Clone + Send + 'static,
    M::Future: Send + 'static,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Pending => {}
            Poll::Ready(None) => this.finish(),
            Poll::Ready(Some(Err(_))) => this.abandon(false),
            Poll::Ready(Some(Ok(frame))) => {
                if this.pending.is_some() {
                    let size = frame.data_ref().map_or(0, Buf::remaining);
                    this.len = this.len.saturating_add(size);
                    if this.len > this.limit {
                        this.abandon(true);
                    } else {
                        this.frames.push_back(clone_frame(frame));
                        if this.inner.is_end_stream() {
                            this.finish();
                        }
                    }
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<M> Drop for TeeBody<M> {
    fn drop(&mut self) {
        if let Some(p) = self.pending.take() {
            bump(&p.stats.body_incomplete, p.copies.len() as u64);
        }
    }
}

/// A body replaying kept frames.
struct Frames(VecDeque<Frame<Bytes>>);

impl Body for Frames {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.get_mut().0.pop_front().map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        let len: usize = self
            .0
            .iter()
            .filter_map(|f| f.data_ref().map(Buf::remaining))
            .sum();
        if self.0.iter().all(Frame::is_data) {
            SizeHint::with_exact(len as u64)
        } else {
            let mut h = SizeHint::new();
            h.set_lower(len as u64);
            h
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::Mesh;
    use crate::route::RouteLayer;
    use std::convert::Infallible;
    use tokio::sync::mpsc;

    const SES: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: my-app, namespace: default}
spec:
  hosts: [my-app.default.svc.cluster.local]
  resolution: STATIC
  ports: [{number: 8080, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: my-app-v2, namespace: default}
spec:
  hosts: [my-app-v2.default.svc.cluster.local]
  resolution: STATIC
  ports: [{number: 8080, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.2}]
"#;

    fn mesh(mirror: &str) -> Mesh {
        let vs = format!(
            r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: my-app, namespace: default}}
spec:
  hosts: [my-app.default.svc.cluster.local]
  http:
  - route:
    - destination: {{host: my-app.default.svc.cluster.local}}
{mirror}
"#
        );
        match Mesh::builder()
            .config_str("se.yaml", SES)
            .config_str("vs.yaml", vs)
            .build()
        {
            Ok(mesh) => mesh,
            Err(e) => panic!("config refused: {e:?}"),
        }
    }

    const ONE_MIRROR: &str = "    mirror: {host: my-app-v2.default.svc.cluster.local}";

    /// What the mirror sender saw of one copy.
    #[derive(Debug)]
    struct Seen {
        uri: String,
        host: Option<String>,
        target: Option<Arc<str>>,
        has_decision: bool,
        body: Bytes,
    }

    /// A mirror sender reporting each copy on a channel, after `delay`.
    fn recording_sender(
        delay: Duration,
    ) -> (
        impl Service<
            Request<MeshBody>,
            Response = Response<MeshBody>,
            Error = Error,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static,
        mpsc::UnboundedReceiver<Seen>,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        let svc = tower::service_fn(move |req: Request<MeshBody>| {
            let tx = tx.clone();
            async move {
                tokio::time::sleep(delay).await;
                let (parts, body) = req.into_parts();
                let body = body
                    .collect()
                    .await
                    .map(|c| c.to_bytes())
                    .unwrap_or_default();
                let _ = tx.send(Seen {
                    uri: parts.uri.to_string(),
                    host: parts
                        .headers
                        .get(HOST)
                        .and_then(|h| h.to_str().ok())
                        .map(str::to_owned),
                    target: parts
                        .extensions
                        .get::<MirrorTarget>()
                        .map(|m| m.host.clone()),
                    has_decision: parts.extensions.get::<RouteDecision>().is_some(),
                    body,
                });
                Ok::<_, Error>(Response::new(body::full("mirror says hi")))
            }
        });
        (svc, rx)
    }

    /// The primary: reads the whole body and answers with its length.
    fn primary() -> impl Service<
        Request<MeshBody>,
        Response = Response<MeshBody>,
        Error = Error,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static {
        tower::service_fn(|req: Request<MeshBody>| async move {
            let body = req
                .into_body()
                .collect()
                .await
                .map(|c| c.to_bytes())
                .map_err(Error::Other)?;
            Ok::<_, Error>(Response::new(body::full(body.len().to_string())))
        })
    }

    fn stack<M>(
        mesh: &Mesh,
        layer: &MirrorLayer<M>,
    ) -> impl Service<Request<MeshBody>, Response = Response<MeshBody>, Error = Infallible>
    where
        M: Service<Request<MeshBody>, Response = Response<MeshBody>> + Clone + Send + 'static,
        M::Future: Send + 'static,
    {
        RouteLayer::new(mesh.clone()).layer(layer.layer(primary()))
    }

    fn get() -> Request<MeshBody> {
        let req = Request::get("http://my-app:8080/x?y=1")
            .header(HOST, "my-app:8080")
            .body(body::empty());
        req.unwrap_or_else(|e| panic!("{e}"))
    }

    /// A body of `chunks` without a size hint or content-length.
    struct Chunks(VecDeque<Bytes>);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.get_mut().0.pop_front().map(|b| Ok(Frame::data(b))))
        }
    }

    fn post(chunks: &[&'static str]) -> Request<MeshBody> {
        let body = body::boxed(Chunks(
            chunks
                .iter()
                .map(|c| Bytes::from_static(c.as_bytes()))
                .collect(),
        ));
        let req = Request::post("http://my-app:8080/upload").body(body);
        req.unwrap_or_else(|e| panic!("{e}"))
    }

    async fn send<S>(svc: &mut S, req: Request<MeshBody>) -> String
    where
        S: Service<Request<MeshBody>, Response = Response<MeshBody>, Error = Infallible>,
    {
        let Ok(ready) = svc.ready().await;
        let Ok(resp) = ready.call(req).await;
        let body = resp.into_body().collect().await.map(|c| c.to_bytes());
        String::from_utf8_lossy(&body.unwrap_or_default()).into_owned()
    }

    #[test]
    fn shadow_is_appended_to_the_host_before_the_port() {
        let cases = [
            ("my-app:8080", "my-app-shadow:8080"),
            ("my-app", "my-app-shadow"),
            (
                "my-app.default.svc.cluster.local",
                "my-app.default.svc.cluster.local-shadow",
            ),
            ("10.0.0.1:80", "10.0.0.1-shadow:80"),
            ("[::1]:8080", "[::1]-shadow:8080"),
            ("[fe80::1]", "[fe80::1]-shadow"),
        ];
        for (from, to) in cases {
            assert_eq!(shadow_authority(from), to, "{from}");
        }
    }

    #[tokio::test]
    async fn the_copy_goes_to_the_mirror_with_a_shadow_authority() {
        let mesh = mesh(ONE_MIRROR);
        let (sender, mut seen) = recording_sender(Duration::ZERO);
        let layer = MirrorLayer::new(sender, Some(1));
        let mut svc = stack(&mesh, &layer);
        assert_eq!(send(&mut svc, get()).await, "0");
        let Some(copy) = seen.recv().await else {
            panic!("no copy")
        };
        assert_eq!(copy.uri, "http://my-app-shadow:8080/x?y=1");
        assert_eq!(copy.host.as_deref(), Some("my-app-shadow:8080"));
        assert_eq!(
            copy.target.as_deref(),
            Some("my-app-v2.default.svc.cluster.local")
        );
        assert!(
            !copy.has_decision,
            "the copy cannot be routed to the primary"
        );
        assert!(copy.body.is_empty());

        // A streamed body within the cap: the copy carries all of it, once the primary read it.
        assert_eq!(
            send(&mut svc, post(&["hello ", "mirror ", "world"])).await,
            "18"
        );
        let Some(copy) = seen.recv().await else {
            panic!("no copy")
        };
        assert_eq!(copy.uri, "http://my-app-shadow:8080/upload");
        assert_eq!(copy.host, None, "no Host header was sent, none is added");
        assert_eq!(&copy.body[..], b"hello mirror world");
        for _ in 0..100 {
            if layer.stats().counts().completed == 2 {
                break;
            }
            tokio::task::yield_now().await;
        }
        let counts = layer.stats().counts();
        assert_eq!(counts.sent, 2);
        assert_eq!(counts.completed, 2);
    }

    #[test]
    fn ipv6_authority_rewrite_keeps_a_valid_uri() {
        let req = Request::get("http://[::1]:8080/")
            .header(HOST, "[::1]:8080")
            .body(body::empty())
            .unwrap_or_else(|e| panic!("{e}"));
        let parts = copy_parts(&req);
        assert_eq!(
            parts.uri.authority().map(|a| a.as_str()),
            Some("[::1]-shadow:8080")
        );
        assert_eq!(
            parts.headers.get(HOST).map(|h| h.as_bytes()),
            Some(&b"[::1]-shadow:8080"[..])
        );
    }

    #[tokio::test]
    async fn mirror_percentage_samples_each_mirror_with_its_own_share() {
        let n = 4_000;
        for (mirror, lo, hi) in [
            (format!("{ONE_MIRROR}\n    mirrorPercentage: {{value: 25}}"), 900, 1_100),
            (format!("{ONE_MIRROR}\n    mirrorPercentage: {{value: 0}}"), 0, 0),
            (ONE_MIRROR.to_owned(), n, n),
            (
                "    mirrors:\n    - destination: {host: my-app-v2.default.svc.cluster.local}\n      \
                 percentage: {value: 50}\n    - destination: {host: my-app.default.svc.cluster.local}\n"
                    .to_owned(),
                2_000 + 4_000 - 150,
                2_000 + 4_000 + 150,
            ),
        ] {
            let mesh = mesh(&mirror);
            let (sender, mut seen) = recording_sender(Duration::ZERO);
            let layer = MirrorLayer::new(sender, Some(5)).max_in_flight(usize::MAX);
            let mut svc = stack(&mesh, &layer);
            for _ in 0..n {
                send(&mut svc, get()).await;
            }
            let sent = layer.stats().counts().sent as usize;
            assert!((lo..=hi).contains(&sent), "{mirror}: {sent}");
            let mut received = 0;
            while received < sent {
                if seen.recv().await.is_none() {
                    break;
                }
                received += 1;
            }
            assert_eq!(received, sent);
        }
    }

    #[tokio::test]
    async fn a_body_over_the_cap_is_forwarded_once_and_not_mirrored() {
        let mesh = mesh(ONE_MIRROR);
        let (sender, mut seen) = recording_sender(Duration::ZERO);
        let layer = MirrorLayer::new(sender, Some(1)).body_limit(16);
        let mut svc = stack(&mesh, &layer);
        // Over the cap mid-stream: the primary still gets every byte, exactly once.
        assert_eq!(
            send(&mut svc, post(&["0123456789", "0123456789", "x"])).await,
            "21"
        );
        // Declared over the cap: not buffered at all.
        let req = Request::post("http://my-app:8080/")
            .header(CONTENT_LENGTH, "17")
            .body(body::full("01234567890123456"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(send(&mut svc, req).await, "17");
        // At the cap exactly: mirrored.
        assert_eq!(send(&mut svc, post(&["0123456789", "012345"])).await, "16");
        let Some(copy) = seen.recv().await else {
            panic!("no copy")
        };
        assert_eq!(&copy.body[..], b"0123456789012345");
        let counts = layer.stats().counts();
        assert_eq!(counts.body_over_cap, 2);
        assert_eq!(counts.sent, 1);
        assert_eq!(layer.in_flight(), 0, "over-cap requests release their slot");
    }

    #[tokio::test]
    async fn a_body_the_primary_never_reads_is_not_mirrored() {
        let mesh = mesh(ONE_MIRROR);
        let (sender, _seen) = recording_sender(Duration::ZERO);
        let layer = MirrorLayer::new(sender, Some(1));
        let inner = tower::service_fn(|_req: Request<MeshBody>| async {
            Ok::<_, Error>(Response::new(body::empty()))
        });
        let mut svc = RouteLayer::new(mesh.clone()).layer(layer.layer(inner));
        send(&mut svc, post(&["abc"])).await;
        let counts = layer.stats().counts();
        assert_eq!(counts.body_incomplete, 1);
        assert_eq!(counts.sent, 0);
        assert_eq!(layer.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_mirror_does_not_delay_the_caller_and_in_flight_is_bounded() {
        let mesh = mesh(ONE_MIRROR);
        // The mirror takes an hour; the layer gives a copy 10 minutes.
        let (sender, _seen) = recording_sender(Duration::from_secs(3_600));
        let layer = MirrorLayer::new(sender, Some(1))
            .max_in_flight(2)
            .timeout(Duration::from_secs(600));
        let mut svc = stack(&mesh, &layer);
        let start = tokio::time::Instant::now();
        for _ in 0..5 {
            assert_eq!(send(&mut svc, post(&["abc"])).await, "3");
        }
        assert_eq!(start.elapsed(), Duration::ZERO, "the caller never waits");
        let counts = layer.stats().counts();
        assert_eq!((counts.sent, counts.skipped_in_flight), (2, 3));
        assert_eq!(layer.in_flight(), 2);
        // The copies time out, release their slots, and mirroring resumes.
        tokio::time::sleep(Duration::from_secs(601)).await;
        assert_eq!(layer.in_flight(), 0);
        assert_eq!(layer.stats().counts().failed, 2);
        send(&mut svc, get()).await;
        assert_eq!(layer.stats().counts().sent, 3);
    }

    #[tokio::test]
    async fn a_failing_mirror_changes_nothing_for_the_caller() {
        let mesh = mesh(ONE_MIRROR);
        let sender = tower::service_fn(|_req: Request<MeshBody>| async {
            Err::<Response<MeshBody>, _>(Error::Other("mirror down".into()))
        });
        let layer = MirrorLayer::new(sender, Some(1));
        let mut svc = stack(&mesh, &layer);
        assert_eq!(send(&mut svc, post(&["abcd"])).await, "4");
        for _ in 0..100 {
            if layer.stats().counts().failed == 1 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(layer.stats().counts().failed, 1);
    }

    #[tokio::test]
    async fn an_unknown_mirror_host_is_skipped_and_counted() {
        let mesh = mesh("    mirror: {host: my-app-v2.default.svc.cluster.local, subset: nope}");
        let (sender, _seen) = recording_sender(Duration::ZERO);
        let layer = MirrorLayer::new(sender, Some(1));
        let mut svc = stack(&mesh, &layer);
        assert_eq!(send(&mut svc, get()).await, "0");
        let counts = layer.stats().counts();
        assert_eq!((counts.unresolved, counts.sent), (1, 0));
    }
}
