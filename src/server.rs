//! The inbound side: accepting connections for this workload and serving them with the
//! user's service (an axum `Router` or any hyper-compatible tower service).
//!
//! [`serve`] (or [`Server`] for options) accepts TCP connections on a listener and, for each:
//!
//! 1. waits for a slot under the connection cap ([`Server::max_connections`]; the listener's
//!    backlog holds the rest: nothing is accepted beyond the cap);
//! 2. decides the transport by the PeerAuthentication mode in force for the local port
//!    ([`InboundTls`]): TLS, plaintext, or either by peeking at the first byte (a TLS record
//!    starts with `0x16`), as Istio's `PERMISSIVE` does;
//! 3. serves HTTP/1.1 or HTTP/2 (by ALPN on TLS, by the connection preface on plaintext) with
//!    limits: a header-read timeout against slow clients, a cap on header count and size;
//! 4. puts a [`ConnectionInfo`] (and, over mutual TLS, the peer's identity) in every request's
//!    extensions for the layers and the handler.
//!
//! [`Server::serve_with_shutdown`] stops accepting when its signal fires and gives the open
//! connections a grace period to finish their requests (HTTP/1.1 connections close after
//! the response in flight, HTTP/2 connections get a GOAWAY).

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tower::{Service, ServiceExt};

use crate::error::BoxError;
use crate::in_place::InPlace;
use crate::mesh::Mesh;

/// What the server knows about the connection a request came on: in every request's
/// extensions.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// The peer's address (the direct peer: a proxy's, when there is one in front).
    pub peer_addr: SocketAddr,
    /// The local address the connection was accepted on.
    pub local_addr: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The server name the client asked for (TLS SNI), if any.
    pub sni: Option<Arc<str>>,
}

/// How a connection's transport is chosen, from the PeerAuthentication mode for its port.
#[derive(Clone)]
pub enum InboundTls {
    /// Plaintext only (`DISABLE`, or no workload identity configured).
    Plaintext,
    /// TLS only, with the given config (`STRICT`: the config requires a client certificate).
    Tls(Arc<rustls::ServerConfig>),
    /// TLS or plaintext, chosen per connection by its first byte (`PERMISSIVE`).
    Permissive(Arc<rustls::ServerConfig>),
    /// No connection can be served (`STRICT` without a workload identity): each is closed
    /// at once, and the reason logged.
    Refuse(Arc<str>),
}

impl std::fmt::Debug for InboundTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            InboundTls::Plaintext => "Plaintext",
            InboundTls::Tls(_) => "Tls",
            InboundTls::Permissive(_) => "Permissive",
            InboundTls::Refuse(_) => "Refuse",
        })
    }
}

/// Chooses the transport of each accepted connection (by its local port): the
/// PeerAuthentication resolution of the mesh, or a fixed choice.
pub type TlsSelector = Arc<dyn Fn(SocketAddr) -> InboundTls + Send + Sync>;

/// hyper's own limit on HTTP/1.1 request headers when none is set.
const HYPER_DEFAULT_MAX_HEADERS: usize = 100;

/// Limits and options of the inbound server. Defaults follow Envoy's where it has one.
#[derive(Clone)]
pub struct Server {
    mesh: Option<Mesh>,
    tls: Option<TlsSelector>,
    max_connections: usize,
    header_read_timeout: Duration,
    max_headers: usize,
    max_header_bytes: usize,
    shutdown_grace: Duration,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("max_connections", &self.max_connections)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("max_headers", &self.max_headers)
            .field("max_header_bytes", &self.max_header_bytes)
            .field("shutdown_grace", &self.shutdown_grace)
            .finish_non_exhaustive()
    }
}

impl Default for Server {
    fn default() -> Self {
        Server {
            mesh: None,
            tls: None,
            max_connections: 10_000,
            header_read_timeout: Duration::from_secs(10),
            max_headers: 100,
            max_header_bytes: 60 * 1024,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// Serves `app` on `listener` for the workload `mesh` until the listener fails: see the
/// [module docs](self). Never returns on its own under normal operation; use
/// [`Server::serve_with_shutdown`] to stop.
pub async fn serve<S, B>(listener: TcpListener, app: S, mesh: &Mesh) -> io::Result<()>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    Server::new(mesh)
        .serve_with_shutdown(listener, app, std::future::pending())
        .await
}

impl Server {
    /// A server for the workload `mesh` (its PeerAuthentication decides the transport).
    pub fn new(mesh: &Mesh) -> Self {
        Server {
            mesh: Some(mesh.clone()),
            ..Server::default()
        }
    }

    /// A server outside any mesh: plaintext unless [`tls`](Self::tls) says otherwise.
    pub fn standalone() -> Self {
        Server::default()
    }

    /// Overrides how each connection's transport is chosen.
    pub fn tls(mut self, selector: TlsSelector) -> Self {
        self.tls = Some(selector);
        self
    }

    /// The most connections open at once (default 10,000); more wait in the listen backlog.
    pub fn max_connections(mut self, n: usize) -> Self {
        // At most u32::MAX: the drain at shutdown waits for every slot at once.
        self.max_connections = n.clamp(1, u32::MAX as usize);
        self
    }

    /// How long a client may take to send a request's headers (default 10 s), against
    /// slow-loris clients; also bounds the TLS handshake and the `PERMISSIVE` sniff.
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// The most request headers (default 100, Envoy's `max_headers_count`); one more is 431
    /// on HTTP/1.1, a stream reset on HTTP/2.
    pub fn max_headers(mut self, n: usize) -> Self {
        self.max_headers = n.max(1);
        self
    }

    /// The most bytes of request headers (default 60 KiB, Envoy's
    /// `max_request_headers_kb`); more is 431 on HTTP/1.1, a stream reset on HTTP/2.
    pub fn max_header_bytes(mut self, n: usize) -> Self {
        // hyper's smallest HTTP/1 read buffer is 8 KiB.
        self.max_header_bytes = n.max(8192);
        self
    }

    /// How long open connections get to finish after the shutdown signal (default 30 s).
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    fn selector(&self) -> TlsSelector {
        if let Some(selector) = &self.tls {
            return selector.clone();
        }
        match &self.mesh {
            Some(mesh) => {
                let mesh = mesh.clone();
                Arc::new(move |local: SocketAddr| mesh.inbound_tls(local.port()))
            }
            None => Arc::new(|_| InboundTls::Plaintext),
        }
    }

    fn builder(&self) -> auto::Builder<TokioExecutor> {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        let mut http1 = builder.http1();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout)
            .max_buf_size(self.max_header_bytes);
        // hyper parses into a stack array of its default size (100, ours too) unless a limit
        // is set, and then fills a heap vector of that size per request: set only another one.
        if self.max_headers != HYPER_DEFAULT_MAX_HEADERS {
            http1.max_headers(self.max_headers);
        }
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(self.max_header_bytes).unwrap_or(u32::MAX));
        builder
    }

    /// Serves `app` on `listener` until `signal` completes, then stops accepting and waits
    /// up to the [grace period](Self::shutdown_grace) for open connections to finish.
    /// Accept errors (out of file descriptors, a connection reset before accept) are logged
    /// and retried after a short pause; they never end the loop.
    pub async fn serve_with_shutdown<S, B, F>(
        self,
        listener: TcpListener,
        app: S,
        signal: F,
    ) -> io::Result<()>
    where
        S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
        F: Future<Output = ()>,
    {
        let selector = self.selector();
        let builder = Arc::new(self.builder());
        let slots = Arc::new(Semaphore::new(self.max_connections));
        let (stop, stopped) = watch::channel(false);
        let local = listener.local_addr()?;
        tracing::debug!(%local, "inbound server listening");
        tokio::pin!(signal);
        loop {
            let permit = tokio::select! {
                () = &mut signal => break,
                permit = slots.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let (stream, peer) = tokio::select! {
                () = &mut signal => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(%local, error = %e, "accept failed; retrying");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let local_addr = stream.local_addr().unwrap_or(local);
            let tls = selector(local_addr);
            let conn = Connection {
                builder: builder.clone(),
                app: app.clone(),
                stream,
                peer,
                local: local_addr,
                tls,
                handshake_timeout: self.header_read_timeout,
            };
            let stopped = stopped.clone();
            tokio::spawn(async move {
                let _permit = permit;
                if let Err(e) = conn.run(stopped).await {
                    tracing::debug!(%peer, error = %e, "inbound connection ended with an error");
                }
            });
        }
        drop(listener);
        tracing::debug!(%local, "inbound server draining");
        let _ = stop.send(true);
        // Every open connection holds a slot: all slots back = all connections closed.
        let all = u32::try_from(self.max_connections).unwrap_or(u32::MAX);
        if tokio::time::timeout(self.shutdown_grace, slots.acquire_many(all))
            .await
            .is_err()
        {
            tracing::warn!(%local, grace = ?self.shutdown_grace, "connections still open after the shutdown grace period; closing them");
        }
        Ok(())
    }
}

/// One accepted connection.
struct Connection<S> {
    builder: Arc<auto::Builder<TokioExecutor>>,
    app: S,
    stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    tls: InboundTls,
    handshake_timeout: Duration,
}

/// The first byte of a TLS record carrying a handshake message (ClientHello).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

impl<S, B> Connection<S>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    async fn run(self, shutdown: watch::Receiver<bool>) -> Result<(), BoxError> {
        let Connection {
            builder,
            app,
            stream,
            peer,
            local,
            tls,
            handshake_timeout,
        } = self;
        let (config, strict) = match tls {
            InboundTls::Refuse(reason) => {
                tracing::warn!(%peer, %local, "inbound connection refused: {reason}");
                return Err(reason.to_string().into());
            }
            InboundTls::Plaintext => (None, false),
            InboundTls::Tls(config) => (Some(config), true),
            InboundTls::Permissive(config) => (Some(config), false),
        };
        let mut info = ConnectionInfo {
            peer_addr: peer,
            local_addr: local,
            tls: false,
            sni: None,
        };
        let Some(config) = config else {
            return serve_io(&builder, stream, app, info, None::<()>, shutdown).await;
        };
        // Peek at the first byte: TLS or plaintext (PERMISSIVE serves both; STRICT refuses
        // plaintext with a log line that says why, rather than a TLS decode error).
        let mut first = [0u8; 1];
        let n = tokio::time::timeout(handshake_timeout, stream.peek(&mut first))
            .await
            .map_err(|_| "no bytes from the client before the header-read timeout")??;
        if n == 0 {
            return Ok(());
        }
        if first[0] != TLS_HANDSHAKE_RECORD {
            if strict {
                tracing::info!(%peer, %local, "plaintext connection refused: PeerAuthentication STRICT requires mutual TLS on this port");
                return Err(
                    "plaintext connection refused: PeerAuthentication STRICT requires mutual TLS"
                        .into(),
                );
            }
            return serve_io(&builder, stream, app, info, None::<()>, shutdown).await;
        }
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let tls_stream =
            match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::info!(%peer, %local, error = %e, "inbound TLS handshake failed");
                    return Err(e.into());
                }
                Err(_) => {
                    tracing::info!(%peer, %local, "inbound TLS handshake timed out");
                    return Err("TLS handshake timed out".into());
                }
            };
        let (_, server) = tls_stream.get_ref();
        info.tls = true;
        info.sni = server.server_name().map(Arc::from);
        let identity = crate::tls::PeerIdentity::from_tls(server);
        serve_io(&builder, tls_stream, app, info, identity, shutdown).await
    }
}

/// Room reserved in a request's extensions, for the layers' own: a marker inserted and removed
/// again ([`connection_extensions`]).
#[derive(Clone, Copy)]
struct Room<const N: u8>;

/// The extensions every request of a connection starts with: its `info` (and `extra`), in a
/// map with room for the ones the layers below add (the trace context, the client address,
/// the route decision, the retry's context). A map that grows while a request is handled
/// is rehashed, and a clone of this one keeps its size.
fn connection_extensions<X>(info: ConnectionInfo, extra: Option<X>) -> http::Extensions
where
    X: Clone + Send + Sync + 'static,
{
    let mut extensions = http::Extensions::new();
    // Four entries make the map grow to its next size (room for seven).
    extensions.insert(Room::<0>);
    extensions.insert(Room::<1>);
    extensions.insert(Room::<2>);
    extensions.insert(Room::<3>);
    extensions.remove::<Room<0>>();
    extensions.remove::<Room<1>>();
    extensions.remove::<Room<2>>();
    extensions.remove::<Room<3>>();
    extensions.insert(info);
    if let Some(x) = extra {
        extensions.insert(x);
    }
    extensions
}

/// Serves one connection (already past TLS, if any) with `app`, every request carrying
/// `info` (and `extra`, e.g. the peer identity) in its extensions, until it ends or
/// `shutdown` turns true (then gracefully: the request in flight finishes).
async fn serve_io<I, S, B, X>(
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    app: S,
    info: ConnectionInfo,
    extra: Option<X>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), BoxError>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    X: Clone + Send + Sync + 'static,
{
    let svc = ConnService::new(app, connection_extensions(info, extra));
    // The connection's own builder: its HTTP/1 header-read timer reuses one sleep.
    let mut builder = builder.clone();
    builder.http1().timer(ConnTimer::default());
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => return res,
        _ = shutdown.wait_for(|stop| *stop) => {}
    }
    conn.as_mut().graceful_shutdown();
    conn.await
}

/// The hyper service of one connection: `app` (the connection's clone) called in place when
/// it is ready right now, else a clone of it driven to readiness by the call's future (see
/// `crate::in_place`, which [`Forward`](crate::proxy::Forward) uses too). Every request gets
/// the connection's `extensions`.
struct ConnService<S> {
    app: RefCell<S>,
    /// Cloned for a call when `app` cannot be borrowed (never: hyper makes one call at a
    /// time and `app` does not call back here).
    spare: S,
    extensions: http::Extensions,
}

impl<S: Clone> ConnService<S> {
    fn new(app: S, extensions: http::Extensions) -> Self {
        ConnService {
            app: RefCell::new(app.clone()),
            spare: app,
            extensions,
        }
    }
}

impl<S, R> hyper::service::Service<Request<R>> for ConnService<S>
where
    S: Service<Request<R>> + Clone,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = InPlace<S::Future, tower::util::Oneshot<S, Request<R>>>;

    fn call(&self, mut req: Request<R>) -> Self::Future {
        req.extensions_mut().extend(self.extensions.clone());
        match self.app.try_borrow_mut() {
            Ok(mut app) => crate::in_place::call(&mut *app, req),
            Err(_) => InPlace::Readying {
                oneshot: Box::pin(self.spare.clone().oneshot(req)),
            },
        }
    }
}

/// A slot for the sleep of a [`ConnTimer`] while no [`ConnSleep`] holds it.
type SleepSlot = Arc<Mutex<Option<Pin<Box<tokio::time::Sleep>>>>>;

/// The HTTP/1 timer of one connection (hyper uses it for the header-read timeout only): one
/// tokio sleep for the connection's life, handed to each [`ConnSleep`], where a new sleep per
/// request would be registered with the timer wheel and removed again. The sleep is moved to
/// a later deadline only when it fires before it (then the connection is woken once, to no
/// effect, if no header read is waiting on it), not per request: a deadline is a field.
#[derive(Clone, Default)]
struct ConnTimer {
    slot: SleepSlot,
}

impl ConnTimer {
    fn start(&self, deadline: std::time::Instant) -> ConnSleep {
        let deadline = tokio::time::Instant::from_std(deadline);
        let spare = self.slot.lock().ok().and_then(|mut slot| slot.take());
        let sleep = match spare {
            Some(mut sleep) => {
                if sleep.deadline() > deadline {
                    sleep.as_mut().reset(deadline);
                }
                sleep
            }
            // The first of the connection (or a second one while the first is held).
            None => Box::pin(tokio::time::sleep_until(deadline)),
        };
        ConnSleep {
            sleep: Some(sleep),
            deadline,
            home: self.slot.clone(),
        }
    }
}

impl hyper::rt::Timer for ConnTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(std::time::Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: std::time::Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(self.start(deadline))
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: std::time::Instant) {
        match sleep.as_mut().downcast_mut_pin::<ConnSleep>() {
            Some(mut own) => {
                let deadline = tokio::time::Instant::from_std(new_deadline);
                own.deadline = deadline;
                if let Some(inner) = own.sleep.as_mut()
                    && inner.deadline() > deadline
                {
                    inner.as_mut().reset(deadline);
                }
            }
            None => *sleep = self.sleep_until(new_deadline),
        }
    }

    fn now(&self) -> std::time::Instant {
        tokio::time::Instant::now().into_std()
    }
}

/// A [`ConnTimer`]'s sleep while hyper holds it, until `deadline` (the tokio sleep's own
/// deadline may be earlier); dropped, it gives the sleep back.
struct ConnSleep {
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    deadline: tokio::time::Instant,
    home: SleepSlot,
}

impl Future for ConnSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = self.deadline;
        let Some(sleep) = self.sleep.as_mut() else {
            // Only `drop` takes it.
            return Poll::Ready(());
        };
        loop {
            std::task::ready!(sleep.as_mut().poll(cx));
            if sleep.deadline() >= deadline {
                return Poll::Ready(());
            }
            // Fired at an earlier request's deadline: on to this one's.
            sleep.as_mut().reset(deadline);
        }
    }
}

impl hyper::rt::Sleep for ConnSleep {}

impl Drop for ConnSleep {
    fn drop(&mut self) {
        if let (Some(sleep), Ok(mut slot)) = (self.sleep.take(), self.home.lock())
            && slot.is_none()
        {
            *slot = Some(sleep);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_get_the_connection_extensions_and_keep_their_own() {
        let info = ConnectionInfo {
            peer_addr: SocketAddr::from(([10, 0, 0, 1], 40000)),
            local_addr: SocketAddr::from(([10, 0, 0, 2], 8080)),
            tls: true,
            sni: Some(Arc::from("svc.local")),
        };
        let extensions = connection_extensions(info, Some(7u32));
        assert_eq!(extensions.len(), 2);
        let mut req = Request::new(());
        req.extensions_mut().insert("the request's own");
        req.extensions_mut().insert(1u32);
        req.extensions_mut().extend(extensions.clone());
        let ext = req.extensions();
        assert_eq!(ext.len(), 3);
        assert_eq!(ext.get::<&str>(), Some(&"the request's own"));
        // The connection's value replaces one of the same type, as an insert would.
        assert_eq!(ext.get::<u32>(), Some(&7));
        let got = ext.get::<ConnectionInfo>().expect("the connection info");
        assert_eq!(got.peer_addr.port(), 40000);
        assert_eq!(got.sni.as_deref(), Some("svc.local"));
        let plain = connection_extensions(got.clone(), None::<()>);
        assert_eq!(plain.len(), 1);
    }

    /// A service ready when `ready` is set, counting its clones and calls.
    #[derive(Default)]
    struct Gated {
        ready: Arc<std::sync::atomic::AtomicBool>,
        clones: Arc<std::sync::atomic::AtomicUsize>,
        calls: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl Clone for Gated {
        fn clone(&self) -> Self {
            self.clones
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Gated {
                ready: self.ready.clone(),
                clones: self.clones.clone(),
                calls: self.calls.clone(),
            }
        }
    }

    impl Service<Request<()>> for Gated {
        type Response = Option<ConnectionInfo>;
        type Error = std::convert::Infallible;
        type Future = std::future::Ready<Result<Option<ConnectionInfo>, std::convert::Infallible>>;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            if self.ready.load(std::sync::atomic::Ordering::SeqCst) {
                return Poll::Ready(Ok(()));
            }
            // Ready on the next look.
            self.ready.store(true, std::sync::atomic::Ordering::SeqCst);
            cx.waker().wake_by_ref();
            Poll::Pending
        }

        fn call(&mut self, req: Request<()>) -> Self::Future {
            self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::future::ready(Ok(req.extensions().get::<ConnectionInfo>().cloned()))
        }
    }

    #[tokio::test]
    async fn a_ready_app_is_called_in_place_and_a_busy_one_through_a_clone() {
        use hyper::service::Service as _;
        let gated = Gated::default();
        gated.ready.store(true, std::sync::atomic::Ordering::SeqCst);
        let (clones, calls, ready) = (
            gated.clones.clone(),
            gated.calls.clone(),
            gated.ready.clone(),
        );
        let info = ConnectionInfo {
            peer_addr: SocketAddr::from(([10, 0, 0, 1], 40000)),
            local_addr: SocketAddr::from(([10, 0, 0, 2], 8080)),
            tls: false,
            sni: None,
        };
        let svc = ConnService::new(gated, connection_extensions(info, None::<()>));
        for _ in 0..3 {
            let got = svc.call(Request::new(())).await.expect("infallible");
            assert_eq!(got.map(|i| i.peer_addr.port()), Some(40000));
        }
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);
        // The connection's two (its own and the spare), none per request.
        assert_eq!(clones.load(std::sync::atomic::Ordering::SeqCst), 1);
        ready.store(false, std::sync::atomic::Ordering::SeqCst);
        let got = svc.call(Request::new(())).await.expect("infallible");
        assert!(got.is_some());
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 4);
        assert_eq!(clones.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn the_connection_timer_reuses_its_sleep_and_keeps_every_deadline() {
        use hyper::rt::Timer;
        use tokio::time::Instant;
        let timer = ConnTimer::default();
        let ms = Duration::from_millis;
        let start = Instant::now();
        timer.sleep_until((start + ms(100)).into_std()).await;
        assert_eq!(start.elapsed(), ms(100));
        assert!(timer.slot.lock().is_ok_and(|s| s.is_some()), "given back");
        // Reused for a later deadline, and for an earlier one than it was left with.
        let at = Instant::now();
        drop(timer.sleep_until((at + ms(500)).into_std()));
        timer.sleep_until((at + ms(50)).into_std()).await;
        assert_eq!(at.elapsed(), ms(50));
        // A fired sleep waits for its new deadline.
        let at = Instant::now();
        timer.sleep_until((at + ms(200)).into_std()).await;
        assert_eq!(at.elapsed(), ms(200));
        // One left running with an earlier deadline does not cut a later one short.
        let at = Instant::now();
        let mut early = timer.sleep_until((at + ms(20)).into_std());
        assert!(crate::in_place::poll_once(&mut early).await.is_none());
        drop(early);
        tokio::time::sleep(ms(10)).await;
        timer.sleep_until((at + ms(70)).into_std()).await;
        assert_eq!(at.elapsed(), ms(70));
        // Two at once are two sleeps; `reset` moves one.
        let at = Instant::now();
        let first = timer.sleep_until((at + ms(30)).into_std());
        let mut second = timer.sleep_until((at + ms(10)).into_std());
        timer.reset(&mut second, (at + ms(40)).into_std());
        first.await;
        assert_eq!(at.elapsed(), ms(30));
        second.await;
        assert_eq!(at.elapsed(), ms(40));
        assert_eq!(timer.now(), Instant::now().into_std());
    }
}
