//! [`Pool`]: the connections to one endpoint, HTTP/1.1 or HTTP/2.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use crate::resilience::circuit::{ConnectionGuard, PendingGuard};
use http::header::HOST;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Method, Request, Response, Uri, Version};
use http_body::Body as _;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::{Notify, oneshot, watch};

use super::body::{InFlight, PooledBody};
use super::connect::{
    Connect, ConnectTarget, Connected, TlsPolicy, UpstreamProtocol, connect_error,
};
use super::reset::upstream_reset;
use super::{PoolKey, PoolSettings, PoolStats};
use crate::body::{BodyGuards, MeshBody};
use crate::error::{Error, ResetReason};
use crate::resilience::retry::TryContext;

/// The connections to one endpoint (one [`PoolKey`]): a set of HTTP/1.1 connections, or one
/// shared HTTP/2 connection.
///
/// **HTTP/1.1.** A request takes the most recently used idle connection, or opens one while
/// fewer than [`PoolSettings::max_http1_connections`] are open (Istio
/// `connectionPool.tcp.maxConnections`, default unlimited), or else waits in line (first
/// come, first served) for a connection to come free. A connection is busy until the response
/// body has been read to its end or dropped; it then goes back to the idle set (to the first
/// waiter, if any), unless it is closed or has served
/// [`PoolSettings::max_requests_per_connection`] requests. Idle connections close after
/// [`PoolSettings::idle_timeout`].
///
/// A stale keep-alive connection (the server closed it while it sat idle) never fails a
/// request: a request hyper hands back unsent is retried once on a fresh connection, and so
/// is a request without a body and with an idempotent method (GET, HEAD, OPTIONS, TRACE, PUT,
/// DELETE) that failed on a *reused* connection before any response byte (the race where the
/// server's close crosses the request on the wire; Go's `net/http` and browsers retry the same
/// cases).
///
/// **HTTP/2.** All requests share one connection (concurrent first requests share one
/// connect); a closed connection is replaced on the next request.
///
/// Connection tasks run on the tokio runtime of the request that opened them; they end when
/// the pool, and every response body still being read from it, are dropped.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("key", &self.inner.key)
            .field("settings", &self.inner.settings)
            .field("stats", &self.stats())
            .finish()
    }
}

pub(super) struct Inner {
    me: Weak<Inner>,
    key: PoolKey,
    settings: PoolSettings,
    connector: Arc<dyn Connect>,
    h1: Mutex<H1State>,
    h2: Mutex<H2State>,
    /// An [`UpstreamProtocol::Alpn`] pool whose connector negotiated `h2`: use the HTTP/2 path.
    alpn_h2: AtomicBool,
    h2_generation: AtomicU64,
    in_flight: AtomicUsize,
    /// Set when [`Pools`](super::Pools) no longer holds this pool (replaced or dropped).
    retired: AtomicBool,
    reaper_started: AtomicBool,
    shutdown: Arc<Notify>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Stops the idle reaper; a stored permit reaches it even if it is not waiting yet.
        self.shutdown.notify_one();
    }
}

#[derive(Default)]
struct H1State {
    idle: VecDeque<IdleConn>,
    /// Connections counted against the cap: connecting, busy and idle.
    open: usize,
    /// Requests waiting for a connection, oldest first.
    waiters: VecDeque<oneshot::Sender<Handoff>>,
}

struct IdleConn {
    conn: H1Conn,
    /// When it goes past `idle_timeout` (`None`: never), set as it goes idle: a check is
    /// one comparison.
    expires: Option<Instant>,
}

/// A place under the connection cap. Dropping an armed slot frees the place (to the first
/// waiter, if any).
struct Slot {
    pool: Weak<Inner>,
    armed: bool,
}

impl Slot {
    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.armed
            && let Some(inner) = self.pool.upgrade()
        {
            inner.slot_freed();
        }
    }
}

/// An HTTP/1.1 connection of the pool.
pub(super) struct H1Conn {
    tx: http1::SendRequest<MeshBody>,
    slot: Slot,
    served: u32,
    /// The connection's place in its cluster's `maxConnections` budget, if it has one.
    budget: Option<ConnectionGuard>,
}

/// What a waiting request is given: a connection that came free, or a freed slot to connect
/// with.
enum Handoff {
    Conn(H1Conn),
    Connect(Slot),
}

enum H2State {
    Idle,
    Connecting(watch::Receiver<Option<Result<H2Sender, SharedConnectError>>>),
    Ready(H2Sender),
}

#[derive(Clone)]
struct H2Sender {
    generation: u64,
    tx: http2::SendRequest<MeshBody>,
}

/// A connect failure shared by the requests that waited on one HTTP/2 connect.
#[derive(Clone, Debug)]
struct SharedConnectError {
    reason: ResetReason,
    transport_failure: Option<String>,
}

impl From<Error> for SharedConnectError {
    fn from(err: Error) -> Self {
        match err {
            Error::UpstreamReset {
                reason,
                transport_failure,
            } => SharedConnectError {
                reason,
                transport_failure,
            },
            other => SharedConnectError {
                reason: ResetReason::ConnectionFailure,
                transport_failure: Some(other.to_string()),
            },
        }
    }
}

impl From<SharedConnectError> for Error {
    fn from(err: SharedConnectError) -> Self {
        Error::UpstreamReset {
            reason: err.reason,
            transport_failure: err.transport_failure,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The state stays consistent between statements, so a panic elsewhere cannot poison it
    // in a way that matters.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A request ready for a connection, with what a connect needs to know about it.
struct Prepared {
    req: Request<MeshBody>,
    /// HTTP/2: the authority the request is for (URI, else `Host`), the connect's server
    /// name. HTTP/1.1: the authority taken out of an absolute URI; otherwise the URI's or
    /// the `Host` header's is read only when a connection is opened
    /// ([`authority_of`](Prepared::authority_of)).
    authority: Option<Authority>,
    /// Where a copy of the request is kept already (HTTP/1.1 replays only).
    replay: Option<TryContext>,
}

impl Prepared {
    /// Where a connect for this HTTP/1.1 request finds its server name.
    fn authority_of(&self) -> AuthorityOf<'_> {
        AuthorityOf::new(self.authority.as_ref(), &self.req)
    }
}

/// The authority an HTTP/1.1 request is for (URI, else `Host`), read only when a connection
/// is opened: most requests take an idle one.
#[derive(Clone, Copy)]
struct AuthorityOf<'a> {
    uri: Option<&'a Authority>,
    headers: &'a http::HeaderMap,
}

impl<'a> AuthorityOf<'a> {
    /// `taken` (the authority taken out of the request's absolute URI), else the URI's, else
    /// the `Host` header's.
    fn new(taken: Option<&'a Authority>, req: &'a Request<MeshBody>) -> Self {
        AuthorityOf {
            uri: taken.or_else(|| req.uri().authority()),
            headers: req.headers(),
        }
    }

    fn get(self) -> Option<Authority> {
        self.uri.cloned().or_else(|| host_authority(self.headers))
    }
}

/// A copy of a request head (no body, no extensions).
struct ReplayHead {
    method: Method,
    uri: Uri,
    version: Version,
    headers: http::HeaderMap,
}

/// A body-less idempotent request, to replay it on a fresh connection.
enum Replay {
    /// A copy made here (boxed: the send future stays small for the shared case).
    Copy(Box<ReplayHead>),
    /// The retry layer's copy, made before the request was prepared (prepared again to
    /// replay).
    Shared(TryContext),
}

impl Replay {
    /// What a failed send of `req` can be replayed from: `shared` if given, else a copy.
    fn capture(req: &Request<MeshBody>, shared: Option<TryContext>) -> Option<Replay> {
        let idempotent = matches!(
            *req.method(),
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::TRACE
                | Method::PUT
                | Method::DELETE
        );
        if !(idempotent && req.body().is_end_stream()) {
            return None;
        }
        Some(match shared {
            Some(ctx) => Replay::Shared(ctx),
            None => Replay::Copy(Box::new(ReplayHead {
                method: req.method().clone(),
                uri: req.uri().clone(),
                version: req.version(),
                headers: req.headers().clone(),
                // No extensions: only hyper reads the request past the pool, and of its
                // extensions only the extended-CONNECT protocol (HTTP/2, never replayed here).
            })),
        })
    }

    /// The request to send again (HTTP/1.1, prepared as the first send was).
    fn into_request(self) -> Option<Request<MeshBody>> {
        match self {
            Replay::Copy(head) => {
                let ReplayHead {
                    method,
                    uri,
                    version,
                    headers,
                } = *head;
                let mut req = Request::new(crate::body::empty());
                *req.method_mut() = method;
                *req.uri_mut() = uri;
                *req.version_mut() = version;
                *req.headers_mut() = headers;
                Some(req)
            }
            Replay::Shared(ctx) => ctx.replay_request().map(|req| prepare_h1(req).req),
        }
    }
}

/// hyper's errors on a reused connection that mean "the server closed it under us".
fn is_stale_connection_error(err: &hyper::Error) -> bool {
    if err.is_incomplete_message() || err.is_canceled() || err.is_closed() {
        return true;
    }
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::UnexpectedEof
            );
        }
        source = e.source();
    }
    false
}

impl Pool {
    /// A pool for `key` with `settings`, opening connections with `connector`.
    ///
    /// Nothing is connected until the first request.
    pub fn new(key: PoolKey, settings: PoolSettings, connector: Arc<dyn Connect>) -> Pool {
        let inner = Arc::new_cyclic(|me| Inner {
            me: me.clone(),
            key,
            settings,
            connector,
            h1: Mutex::new(H1State::default()),
            h2: Mutex::new(H2State::Idle),
            alpn_h2: AtomicBool::new(false),
            h2_generation: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            retired: AtomicBool::new(false),
            reaper_started: AtomicBool::new(false),
            shutdown: Arc::new(Notify::new()),
        });
        Pool { inner }
    }

    /// The endpoint, TLS policy and protocol of this pool.
    pub fn key(&self) -> &PoolKey {
        &self.inner.key
    }

    /// The settings this pool was made with.
    pub fn settings(&self) -> &PoolSettings {
        &self.inner.settings
    }

    /// Marks the pool as no longer held by its [`Pools`](super::Pools).
    pub(crate) fn retire(&self) {
        self.inner.retired.store(true, Ordering::Release);
    }

    /// Whether [`Pools`](super::Pools) dropped or replaced this pool.
    pub(crate) fn is_retired(&self) -> bool {
        self.inner.retired.load(Ordering::Acquire)
    }

    /// Sends `req` to the endpoint and returns its response (the body streams from the
    /// connection, which stays busy until the body ends or is dropped).
    ///
    /// The request's URI may be absolute (`http://reviews:9080/p?q`) or origin-form (`/p?q`)
    /// with a `Host` header. HTTP/1.1 gets origin-form and a `Host` header taken from the
    /// URI's authority when the request has none; HTTP/2 gets an absolute URI (scheme `http`,
    /// or `https` under a [`TlsPolicy::Tls`]) whose authority becomes `:authority`.
    ///
    /// Errors are [`Error::UpstreamReset`]: `ConnectionFailure` / `ConnectionTimeout` (`UF`)
    /// when the connection cannot be made within `connect_timeout`,
    /// `ConnectionTermination` (`UC`), `RemoteReset` (`UR`) or `ProtocolError` (`UPE`) when the
    /// request fails before the response headers.
    pub async fn send(&self, req: Request<MeshBody>) -> Result<Response<MeshBody>, Error> {
        self.send_guarded(req, BodyGuards::default(), None, Instant::now())
            .await
    }

    /// [`send`](Self::send), the response body also keeping `guards` until it ends or is
    /// dropped (an error, or a response whose body is already over, releases them at
    /// once): the one body wrapper of the mesh client's responses.
    ///
    /// The request is prepared and counted now; the future owns what it needs (no borrow of
    /// the pool) and holds the request once, not once per nested call.
    ///
    /// `replay`: the retry layer's context of this try when it keeps a copy of the request
    /// ([`TryContext::can_replay`]): a stale-connection replay is rebuilt from that copy
    /// rather than from one made here.
    ///
    /// `now`: the caller's clock reading for this request (idle connections past
    /// `idle_timeout` at that time are not used).
    pub(crate) fn send_guarded(
        &self,
        req: Request<MeshBody>,
        guards: BodyGuards,
        replay: Option<TryContext>,
        now: Instant,
    ) -> impl Future<Output = Result<Response<MeshBody>, Error>> + Send + 'static {
        let guard = InFlight::new(self.inner.clone(), guards);
        let use_h2 = match self.inner.key.protocol {
            UpstreamProtocol::Http1 => false,
            UpstreamProtocol::Http2 => true,
            UpstreamProtocol::Alpn => self.inner.alpn_h2.load(Ordering::Acquire),
        };
        if use_h2 {
            let prepared = prepare_h2(req, &self.inner.key.tls);
            OneOf::H2 {
                fut: self.inner.clone().send_h2(prepared, guard),
            }
        } else {
            let mut prepared = prepare_h1(req);
            prepared.replay = replay;
            OneOf::H1 {
                fut: self.inner.clone().send_h1(prepared, guard, now),
            }
        }
    }

    /// Connections, idle connections and requests of this pool right now.
    pub fn stats(&self) -> PoolStats {
        let (open, idle, pending) = {
            let st = lock(&self.inner.h1);
            (
                st.open,
                st.idle.len(),
                st.waiters.iter().filter(|w| !w.is_closed()).count(),
            )
        };
        let h2 = match &*lock(&self.inner.h2) {
            H2State::Ready(s) if !s.tx.is_closed() => 1,
            _ => 0,
        };
        PoolStats {
            connections: open + h2,
            idle,
            in_flight: self.inner.in_flight.load(Ordering::Acquire),
            pending,
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of an HTTP/1.1 or an HTTP/2 send, without boxing either.
    #[project = OneOfProj]
    enum OneOf<A, B> {
        H1 { #[pin] fut: A },
        H2 { #[pin] fut: B },
    }
}

impl<A, B, T> Future for OneOf<A, B>
where
    A: Future<Output = T>,
    B: Future<Output = T>,
{
    type Output = T;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<T> {
        match self.project() {
            OneOfProj::H1 { fut } => fut.poll(cx),
            OneOfProj::H2 { fut } => fut.poll(cx),
        }
    }
}

/// The request as HTTP/1.1 sends it, changed in place (an origin-form request with its
/// `Host` header, the common case, is left as it is but for its version).
fn prepare_h1(mut req: Request<MeshBody>) -> Prepared {
    let mut authority = None;
    if let Some(auth) = req.uri().authority() {
        if !req.headers().contains_key(HOST)
            && let Ok(value) = HeaderValue::from_str(auth.as_str())
        {
            req.headers_mut().insert(HOST, value);
        }
        // CONNECT keeps its authority-form; everything else goes origin-form (the URI's
        // parts moved, not copied).
        if req.method() != Method::CONNECT {
            let absolute = std::mem::take(req.uri_mut()).into_parts();
            let pq = absolute
                .path_and_query
                .unwrap_or_else(|| PathAndQuery::from_static("/"));
            *req.uri_mut() = Uri::from(pq);
            authority = absolute.authority;
        }
    }
    *req.version_mut() = Version::HTTP_11;
    Prepared {
        req,
        authority,
        replay: None,
    }
}

fn prepare_h2(req: Request<MeshBody>, tls: &TlsPolicy) -> Prepared {
    let (mut parts, body) = req.into_parts();
    let from_host = parts.uri.authority().is_none();
    let authority = parts
        .uri
        .authority()
        .cloned()
        .or_else(|| host_authority(&parts.headers));
    if parts.uri.scheme().is_none() || parts.uri.authority().is_none() {
        let scheme = match tls {
            TlsPolicy::Plaintext => Scheme::HTTP,
            TlsPolicy::Tls(_) => Scheme::HTTPS,
        };
        let pq = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        if let Some(auth) = &authority
            && let Ok(uri) = Uri::builder()
                .scheme(scheme)
                .authority(auth.clone())
                .path_and_query(pq)
                .build()
        {
            parts.uri = uri;
            if from_host {
                // The Host header became `:authority`; HTTP/2 wants it only there.
                parts.headers.remove(HOST);
            }
        }
    }
    parts.version = Version::HTTP_2;
    Prepared {
        req: Request::from_parts(parts, body),
        authority,
        replay: None,
    }
}

fn host_authority(headers: &http::HeaderMap) -> Option<Authority> {
    headers
        .get(HOST)
        .and_then(|h| Authority::try_from(h.as_bytes()).ok())
}

impl Inner {
    fn target(&self, authority: Option<&Authority>) -> ConnectTarget {
        let server_name: Arc<str> = match authority {
            Some(a) => a
                .host()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .into(),
            None => self.key.addr.ip().to_string().into(),
        };
        ConnectTarget {
            addr: self.key.addr,
            server_name,
            tls: self.key.tls.clone(),
            protocol: self.key.protocol,
        }
    }

    /// Runs the connector under `connect_timeout` (Istio `connectionPool.tcp.connectTimeout`).
    async fn connect_io(&self, authority: Option<&Authority>) -> Result<Connected, Error> {
        let target = self.target(authority);
        let timeout = self.settings.connect_timeout;
        match tokio::time::timeout(timeout, self.connector.connect(&target)).await {
            Ok(Ok(connected)) => Ok(connected),
            Ok(Err(err)) => Err(connect_error(err)),
            Err(_) => Err(Error::UpstreamReset {
                reason: ResetReason::ConnectionTimeout,
                transport_failure: None,
            }),
        }
    }

    // -----------------------------------------------------------------------------------------
    // HTTP/1.1
    // -----------------------------------------------------------------------------------------

    /// (A function returning an `async` block rather than an `async fn`, and fields used in
    /// place: an `async fn` keeps its arguments twice in its state.)
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn would keep its arguments twice in its state"
    )]
    fn send_h1(
        self: Arc<Self>,
        prepared: Prepared,
        guard: InFlight,
        now: Instant,
    ) -> impl Future<Output = Result<Response<MeshBody>, Error>> + Send + 'static {
        async move {
            // The common case here: an idle connection, ready. The rest of checking out
            // (connecting, waiting in line) is boxed, its future kept out of every request's.
            let checked = match self.idle_conn(now) {
                Some(mut conn) => {
                    if conn.tx.ready().await.is_ok() {
                        Checkout::H1(conn)
                    } else {
                        // Closed while idle: its slot (and budget place) opens a fresh
                        // connection.
                        let H1Conn {
                            tx, slot, budget, ..
                        } = conn;
                        drop(tx);
                        let authority = prepared.authority_of().get();
                        Box::pin(self.connect_h1(slot, budget, authority.as_ref())).await?
                    }
                }
                None => Box::pin(self.checkout(prepared.authority_of(), now)).await?,
            };
            let mut conn = match checked {
                Checkout::H1(conn) => conn,
                Checkout::H2 => {
                    // An ALPN pool just learnt that the endpoint speaks h2.
                    let h2 = prepare_h2(prepared.req, &self.key.tls);
                    return Box::pin(self.clone().send_h2(h2, guard)).await;
                }
            };
            let replay = if conn.served > 0 {
                Replay::capture(&prepared.req, prepared.replay)
            } else {
                None
            };
            conn.served = conn.served.saturating_add(1);
            let err = match conn.tx.try_send_request(prepared.req).await {
                Ok(resp) => return Ok(self.wrap_h1(resp, conn, guard)),
                Err(err) => err,
            };
            // Boxed: the rare path stays out of every request's future.
            Box::pin(self.recover_h1(err, replay, conn, prepared.authority, guard)).await
        }
    }

    /// A send of [`send_h1`](Self::send_h1) failed: the request goes again on a fresh
    /// connection if hyper gave it back unsent or `replay` has it and the connection was
    /// stale, else the failure is the answer.
    async fn recover_h1(
        self: &Arc<Self>,
        mut err: hyper::client::conn::TrySendError<Request<MeshBody>>,
        replay: Option<Replay>,
        conn: H1Conn,
        authority: Option<Authority>,
        guard: InFlight,
    ) -> Result<Response<MeshBody>, Error> {
        let retry = err.take_message().or_else(|| {
            replay
                .filter(|_| is_stale_connection_error(err.error()))
                .and_then(Replay::into_request)
        });
        let Some(req) = retry else {
            return Err(upstream_reset(err.error()));
        };
        // The request's own authority when none was taken out of its URI (the replayed
        // request is the one first sent, as prepared: the same `Host`).
        let authority = authority.or_else(|| AuthorityOf::new(None, &req).get());
        tracing::debug!(
            addr = %self.key.addr,
            error = %err.error(),
            "retrying a request that met a stale pooled connection on a fresh connection"
        );
        drop(err);
        self.resend_h1(req, conn, authority, guard).await
    }

    /// The second chance of [`send_h1`](Self::send_h1) on a fresh connection.
    async fn resend_h1(
        self: &Arc<Self>,
        req: Request<MeshBody>,
        stale: H1Conn,
        authority: Option<Authority>,
        guard: InFlight,
    ) -> Result<Response<MeshBody>, Error> {
        // The stale connection's slot goes to its replacement: no waiting in line again.
        let H1Conn { slot, budget, .. } = stale;
        let mut conn = match self.connect_h1(slot, budget, authority.as_ref()).await? {
            Checkout::H1(conn) => conn,
            Checkout::H2 => {
                return Box::pin(self.clone().send_h2(prepare_h2(req, &self.key.tls), guard)).await;
            }
        };
        conn.served = conn.served.saturating_add(1);
        match conn.tx.try_send_request(req).await {
            Ok(resp) => Ok(self.wrap_h1(resp, conn, guard)),
            Err(err) => Err(upstream_reset(err.error())),
        }
    }

    fn wrap_h1(
        self: &Arc<Self>,
        resp: Response<hyper::body::Incoming>,
        conn: H1Conn,
        guard: InFlight,
    ) -> Response<MeshBody> {
        let (parts, body) = resp.into_parts();
        // A connection that switched protocols (101) belongs to the upgrade, never reused.
        let conn = (parts.status != http::StatusCode::SWITCHING_PROTOCOLS).then_some(conn);
        let body = PooledBody::new(body, conn, guard);
        Response::from_parts(parts, MeshBody::new(body))
    }

    /// Takes a connection for one request: an idle one, a new one under the cap, or the
    /// first to come free. `now`: the clock at the start of the request.
    async fn checkout(
        self: &Arc<Self>,
        authority: AuthorityOf<'_>,
        now: Instant,
    ) -> Result<Checkout, Error> {
        let mut first = Some(now);
        loop {
            // The caller's reading the first time; a fresh one after waiting in line.
            let now = first.take().unwrap_or_else(Instant::now);
            let mut discard = Vec::new();
            let got = {
                let mut st = lock(&self.h1);
                match self.take_idle(&mut st, &mut discard, now) {
                    Some(idle) => Ok(Got::Idle(idle)),
                    None => self.reserve_or_wait(&mut st),
                }
            };
            drop(discard); // outside the lock: dropping a connection frees its slot
            let conn = match got? {
                Got::Idle(conn) => conn,
                Got::Connect(slot, budget) => {
                    return Box::pin(self.connect_h1(slot, budget, authority.get().as_ref())).await;
                }
                Got::Wait(rx, _pending) => match rx.await {
                    Ok(Handoff::Conn(conn)) => conn,
                    Ok(Handoff::Connect(slot)) => {
                        // A connection of this pool closed: its budget place is free again.
                        let budget = self
                            .settings
                            .connection_limit
                            .as_ref()
                            .and_then(|l| l.breaker.try_open_connection(&l.limits));
                        return Box::pin(self.connect_h1(slot, budget, authority.get().as_ref()))
                            .await;
                    }
                    Err(_) => continue,
                },
            };
            let H1Conn {
                mut tx,
                slot,
                served,
                budget,
            } = conn;
            if tx.ready().await.is_ok() {
                return Ok(Checkout::H1(H1Conn {
                    tx,
                    slot,
                    served,
                    budget,
                }));
            }
            // Closed while idle: its slot (and budget place) opens a fresh connection.
            drop(tx);
            return Box::pin(self.connect_h1(slot, budget, authority.get().as_ref())).await;
        }
    }

    /// The most recently used idle connection that is open and not past `idle_timeout` at
    /// `now`, if any (the others found on the way are closed).
    fn idle_conn(&self, now: Instant) -> Option<H1Conn> {
        let mut discard = Vec::new();
        let conn = {
            let mut st = lock(&self.h1);
            self.take_idle(&mut st, &mut discard, now)
        };
        drop(discard); // outside the lock: dropping a connection frees its slot
        conn
    }

    fn take_idle(
        &self,
        st: &mut H1State,
        discard: &mut Vec<H1Conn>,
        now: Instant,
    ) -> Option<H1Conn> {
        while let Some(idle) = st.idle.pop_back() {
            if idle.conn.tx.is_closed() || expired(idle.expires, now) {
                discard.push(idle.conn);
                continue;
            }
            return Some(idle.conn);
        }
        None
    }

    /// A new connection's slot when the pool's cap and the cluster's connection budget allow
    /// one, else a place in line for the next connection of this pool to come free (counted
    /// as a pending request against the cluster's `http1MaxPendingRequests`; over it: 503
    /// `UO`). As in Envoy, a pool with no connection at all may always open one, so a
    /// cluster whose budget is held by other endpoints' connections cannot starve it.
    fn reserve_or_wait(&self, st: &mut H1State) -> Result<Got, Error> {
        let under_cap = self
            .settings
            .max_http1_connections
            .is_none_or(|max| st.open < max.max(1));
        if under_cap {
            let budget = match &self.settings.connection_limit {
                None => Some(None),
                Some(limit) => match limit.breaker.try_open_connection(&limit.limits) {
                    Some(guard) => Some(Some(guard)),
                    None if st.open == 0 => Some(None),
                    None => None,
                },
            };
            if let Some(budget) = budget {
                st.open += 1;
                return Ok(Got::Connect(self.slot(), budget));
            }
        }
        let pending = match &self.settings.connection_limit {
            Some(limit) => Some(
                limit
                    .breaker
                    .try_pending(&limit.limits)
                    .map_err(|refused| refused.into_error(&limit.cluster))?,
            ),
            None => None,
        };
        // Requests that gave up waiting (timed out, cancelled) leave the line here.
        st.waiters.retain(|w| !w.is_closed());
        let (tx, rx) = oneshot::channel();
        st.waiters.push_back(tx);
        Ok(Got::Wait(rx, pending))
    }

    fn slot(&self) -> Slot {
        Slot {
            pool: self.me.clone(),
            armed: true,
        }
    }

    /// When a connection going idle at `since` expires (`None`: `idle_timeout` is zero, or
    /// beyond what an `Instant` can hold: never).
    fn expiry(&self, since: Instant) -> Option<Instant> {
        let timeout = self.settings.idle_timeout;
        if timeout.is_zero() {
            return None;
        }
        since.checked_add(timeout)
    }

    /// Opens an HTTP/1.1 connection in `slot` (or, for an ALPN pool whose connector
    /// negotiated `h2`, installs it as the shared HTTP/2 connection and frees the slot).
    async fn connect_h1(
        self: &Arc<Self>,
        slot: Slot,
        budget: Option<ConnectionGuard>,
        authority: Option<&Authority>,
    ) -> Result<Checkout, Error> {
        let connected = self.connect_io(authority).await?;
        if connected.alpn_h2 && self.key.protocol == UpstreamProtocol::Alpn {
            let sender = self.handshake_h2(connected).await?;
            *lock(&self.h2) = H2State::Ready(sender);
            self.alpn_h2.store(true, Ordering::Release);
            drop(slot);
            return Ok(Checkout::H2);
        }
        let io = TokioIo::new(connected.io);
        let (tx, conn) = http1::Builder::new()
            .handshake::<_, MeshBody>(io)
            .await
            .map_err(|e| upstream_reset(&e))?;
        let addr = self.key.addr;
        tokio::spawn(async move {
            // `with_upgrades`: a 101 answer hands the connection to `hyper::upgrade::on`.
            if let Err(err) = conn.with_upgrades().await {
                tracing::debug!(%addr, error = %err, "upstream HTTP/1.1 connection ended with an error");
            }
        });
        Ok(Checkout::H1(H1Conn {
            tx,
            slot,
            served: 0,
            budget,
        }))
    }

    /// A connection whose response body ended (at `now`): back to a waiter or the idle set,
    /// or closed.
    pub(super) fn release(self: &Arc<Self>, conn: H1Conn, now: Instant) {
        let retire = self
            .settings
            .max_requests_per_connection
            .is_some_and(|max| max > 0 && conn.served >= max);
        if retire || conn.tx.is_closed() {
            drop(conn);
            return;
        }
        let returned = {
            let mut st = lock(&self.h1);
            match offer(&mut st, Handoff::Conn(conn)) {
                None => None,
                Some(Handoff::Conn(conn)) => {
                    let expires = self.expiry(now);
                    st.idle.push_back(IdleConn { conn, expires });
                    None
                }
                Some(other) => Some(other),
            }
        };
        drop(returned);
        self.start_reaper();
    }

    /// A slot was freed: it goes to the first waiter, else the open count drops.
    fn slot_freed(&self) {
        let mut st = lock(&self.h1);
        match offer(&mut st, Handoff::Connect(self.slot())) {
            None => {}
            Some(Handoff::Connect(mut slot)) => {
                slot.disarm();
                st.open = st.open.saturating_sub(1);
            }
            Some(Handoff::Conn(conn)) => {
                // Not reachable (we offered a slot), but never drop a connection under the lock.
                let expires = self.expiry(Instant::now());
                st.idle.push_back(IdleConn { conn, expires });
            }
        }
    }

    /// Closes idle connections past `idle_timeout` (Istio `connectionPool.http.idleTimeout`,
    /// default 1 h; zero disables it) or already closed by the server.
    fn start_reaper(self: &Arc<Self>) {
        // A load first: once started (every release but the first), no write to the flag.
        if self.settings.idle_timeout.is_zero()
            || self.reaper_started.load(Ordering::Acquire)
            || self.reaper_started.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let tick = (self.settings.idle_timeout / 2)
            .clamp(Duration::from_millis(5), Duration::from_secs(30));
        let weak = self.me.clone();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(tick) => {}
                    () = shutdown.notified() => return,
                }
                let Some(inner) = weak.upgrade() else { return };
                let now = Instant::now();
                let discard: VecDeque<IdleConn> = {
                    let mut st = lock(&inner.h1);
                    let (gone, keep) = std::mem::take(&mut st.idle)
                        .into_iter()
                        .partition(|i| i.conn.tx.is_closed() || expired(i.expires, now));
                    st.idle = keep;
                    gone
                };
                drop(discard);
                drop(inner);
            }
        });
    }

    // -----------------------------------------------------------------------------------------
    // HTTP/2
    // -----------------------------------------------------------------------------------------

    /// (A function returning an `async` block: see [`send_h1`](Self::send_h1).)
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn would keep its arguments twice in its state"
    )]
    fn send_h2(
        self: Arc<Self>,
        prepared: Prepared,
        guard: InFlight,
    ) -> impl Future<Output = Result<Response<MeshBody>, Error>> + Send + 'static {
        async move {
            let authority = prepared.authority;
            let mut sender = self.h2_sender(authority.as_ref()).await?;
            let mut err = match sender.tx.try_send_request(prepared.req).await {
                Ok(resp) => return Ok(wrap_h2(resp, guard)),
                Err(err) => err,
            };
            let Some(req) = err.take_message() else {
                return Err(upstream_reset(err.error()));
            };
            // Not sent: the connection went away. Replace it and try once more (boxed: the rare
            // path stays out of every request's future).
            self.forget_h2(sender.generation);
            Box::pin(async move {
                let mut sender = self.h2_sender(authority.as_ref()).await?;
                match sender.tx.try_send_request(req).await {
                    Ok(resp) => Ok(wrap_h2(resp, guard)),
                    Err(err) => Err(upstream_reset(err.error())),
                }
            })
            .await
        }
    }

    fn forget_h2(&self, generation: u64) {
        let mut st = lock(&self.h2);
        if let H2State::Ready(s) = &*st
            && s.generation == generation
        {
            *st = H2State::Idle;
        }
    }

    /// The shared HTTP/2 connection, connecting (once, for all concurrent callers) if there
    /// is none or it closed.
    async fn h2_sender(self: &Arc<Self>, authority: Option<&Authority>) -> Result<H2Sender, Error> {
        loop {
            let mut rx = {
                let mut st = lock(&self.h2);
                match &*st {
                    H2State::Ready(s) if !s.tx.is_closed() => return Ok(s.clone()),
                    H2State::Connecting(rx) => rx.clone(),
                    _ => {
                        let (tx, rx) = watch::channel(None);
                        *st = H2State::Connecting(rx.clone());
                        let inner = self.clone();
                        let authority = authority.cloned();
                        tokio::spawn(async move {
                            let result = match inner.connect_io(authority.as_ref()).await {
                                Ok(connected) => inner.handshake_h2(connected).await,
                                Err(err) => Err(err),
                            };
                            let result = result.map_err(SharedConnectError::from);
                            {
                                let mut st = lock(&inner.h2);
                                *st = match &result {
                                    Ok(sender) => H2State::Ready(sender.clone()),
                                    Err(_) => H2State::Idle,
                                };
                            }
                            let _ = tx.send(Some(result));
                        });
                        rx
                    }
                }
            };
            let outcome = match rx.wait_for(Option::is_some).await {
                Ok(value) => value.clone(),
                Err(_) => None,
            };
            match outcome {
                Some(Ok(sender)) => return Ok(sender),
                Some(Err(err)) => return Err(err.into()),
                None => {
                    // The connect task vanished (runtime shutting down): start over.
                    let mut st = lock(&self.h2);
                    if let H2State::Connecting(current) = &*st
                        && current.same_channel(&rx)
                    {
                        *st = H2State::Idle;
                    }
                }
            }
        }
    }

    async fn handshake_h2(&self, connected: Connected) -> Result<H2Sender, Error> {
        let io = TokioIo::new(connected.io);
        let (tx, conn) = http2::Builder::new(TokioExecutor::new())
            .handshake::<_, MeshBody>(io)
            .await
            .map_err(|e| upstream_reset(&e))?;
        let addr = self.key.addr;
        tokio::spawn(async move {
            if let Err(err) = conn.await {
                tracing::debug!(%addr, error = %err, "upstream HTTP/2 connection ended with an error");
            }
        });
        let generation = self.h2_generation.fetch_add(1, Ordering::AcqRel);
        Ok(H2Sender { generation, tx })
    }
}

fn wrap_h2(resp: Response<hyper::body::Incoming>, guard: InFlight) -> Response<MeshBody> {
    let (parts, body) = resp.into_parts();
    Response::from_parts(parts, MeshBody::new(PooledBody::new(body, None, guard)))
}

/// Whether an idle connection that `expires` then is past its `idle_timeout` at `now`.
fn expired(expires: Option<Instant>, now: Instant) -> bool {
    expires.is_some_and(|at| now >= at)
}

/// Offers `handoff` to the waiters in order; gives it back if none took it.
fn offer(st: &mut H1State, mut handoff: Handoff) -> Option<Handoff> {
    while let Some(waiter) = st.waiters.pop_front() {
        match waiter.send(handoff) {
            Ok(()) => return None,
            Err(back) => handoff = back,
        }
    }
    Some(handoff)
}

enum Got {
    Idle(H1Conn),
    /// A slot to connect with, and the connection's place in the cluster budget (if any).
    Connect(Slot, Option<ConnectionGuard>),
    /// Wait for a connection of this pool; the guard counts the request as pending.
    Wait(oneshot::Receiver<Handoff>, Option<PendingGuard>),
}

enum Checkout {
    H1(H1Conn),
    /// The connection negotiated `h2` (ALPN pool): send on the HTTP/2 path.
    H2,
}

impl Inner {
    pub(super) fn in_flight(&self) -> &AtomicUsize {
        &self.in_flight
    }
}
