//! Test backends for end-to-end tests: real hyper servers on `127.0.0.1:0` that say who they
//! are and do what a request header tells them to.
//!
//! [`Backend::start`] serves HTTP/1.1 and HTTP/2 (h2c, prior knowledge) on one port through
//! `hyper_util::server::conn::auto`; [`Backend::start_h2_only`] serves HTTP/2 only, as a gRPC
//! server does. Every response carries `x-backend: <name>`; the echo handler answers with a
//! JSON [`Echo`] of the request it saw. Commands, as request headers:
//!
//! | header                    | effect                                                      |
//! |---------------------------|-------------------------------------------------------------|
//! | `x-backend-delay-ms: 50`  | sleep 50 ms before anything else (any handler)              |
//! | `x-backend-reset: 1`      | drop the whole connection without answering (any handler)   |
//! | `x-backend-reset: stream` | fail only this request: HTTP/2 `RST_STREAM(INTERNAL_ERROR)`; over HTTP/1.1 hyper closes the connection |
//! | `x-backend-status: 503`   | answer with that status (echo handler)                      |
//! | `x-backend-body-bytes: N` | answer with a body of N bytes `b'x'` instead of the JSON (echo handler) |
//!
//! Behaviour set on the backend itself (for retry, outlier and circuit-breaker tests):
//! [`Backend::fail_pattern`] (`fail` of every `every` requests answered with a status),
//! [`Backend::set_stall`] (requests hang until released), [`Backend::stop`] and
//! [`Backend::restart`] (the port refuses connections, then serves again).
//!
//! [`Backend::hits`] counts requests (counted on arrival, before any delay or reset),
//! [`Backend::connections`] accepted connections and [`Backend::max_in_flight`] the most
//! requests it held at once. A backend stops when dropped: its accept
//! task owns every connection task (a `JoinSet`) and is aborted, so nothing outlives a test.
//!
//! ```ignore
//! let a = Backend::start("a", &[("version", "v1")]);
//! let mut c = client::Client::http1(a.addr()).await;
//! let reply = c.get("/hello?x=1", &[("x-backend-status", "503")]).await?;
//! assert_eq!(reply.status, 503);
//! assert_eq!(reply.echo().path, "/hello?x=1");
//! ```

// Each test binary that includes this module uses only part of it.
#![allow(dead_code)]

pub mod client;
pub mod grpc;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};
use tower_mesh::body::{self, MeshBody};

/// The response header naming the backend that answered.
pub const BACKEND_HEADER: HeaderName = HeaderName::from_static("x-backend");
/// Request header: answer with this status (echo handler).
pub const STATUS_CMD: &str = "x-backend-status";
/// Request header: sleep this many milliseconds first (any handler).
pub const DELAY_CMD: &str = "x-backend-delay-ms";
/// Request header: `1` drops the connection, `stream` fails only this request (any handler).
pub const RESET_CMD: &str = "x-backend-reset";
/// Request header: answer with a body of this many bytes (echo handler).
pub const BODY_BYTES_CMD: &str = "x-backend-body-bytes";

/// The largest `x-backend-body-bytes` honoured, so a typo cannot exhaust memory.
const MAX_BODY_BYTES: usize = 64 << 20;

/// A boxed, `Send` future, as handlers return them.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What a backend does with a request once the common commands (delay, reset) are done.
/// The `x-backend` header is added to whatever it returns.
pub type Handler = Arc<dyn Fn(Request<Incoming>) -> BoxFuture<Response<MeshBody>> + Send + Sync>;

/// Which HTTP versions a backend accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocols {
    /// HTTP/1.1 and HTTP/2 prior knowledge on one port (`hyper_util` auto).
    Auto,
    /// HTTP/2 prior knowledge only (a gRPC-style server).
    H2Only,
}

#[derive(Default)]
struct Counters {
    hits: AtomicUsize,
    connections: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    /// `(fail, every, status)`: hit `i` (from when the pattern was set) fails when
    /// `i % every < fail`.
    fail: std::sync::Mutex<Option<(usize, usize, u16, usize)>>,
    stall: std::sync::atomic::AtomicBool,
    unstall: Notify,
}

/// Decrements the in-flight count when a request is done (or dropped).
struct InFlight(Arc<Counters>);

impl InFlight {
    fn enter(c: &Arc<Counters>) -> InFlight {
        let now = c.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        c.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(c.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A running test server; stops when dropped. See the module docs for its commands.
pub struct Backend {
    name: Arc<str>,
    labels: BTreeMap<String, String>,
    addr: SocketAddr,
    counters: Arc<Counters>,
    task: JoinHandle<()>,
    protocols: Protocols,
    handler: Handler,
}

impl Backend {
    /// Starts the echo backend `name` (HTTP/1.1 + h2c) on `127.0.0.1:0`. `labels` are the
    /// workload labels a test gives its endpoint (e.g. `version: v1` for a subset); they are
    /// echoed in the JSON body. Must be called inside a tokio runtime.
    pub fn start(name: &str, labels: &[(&str, &str)]) -> Backend {
        Self::start_echo(name, labels, Protocols::Auto)
    }

    /// [`Backend::start`], HTTP/2 prior knowledge only.
    pub fn start_h2_only(name: &str, labels: &[(&str, &str)]) -> Backend {
        Self::start_echo(name, labels, Protocols::H2Only)
    }

    fn start_echo(name: &str, labels: &[(&str, &str)], protocols: Protocols) -> Backend {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let name_: Arc<str> = Arc::from(name);
        let labels_ = Arc::new(labels.clone());
        let handler: Handler = Arc::new(move |req| {
            Box::pin(echo(name_.clone(), labels_.clone(), req)) as BoxFuture<_>
        });
        let mut backend = Self::start_with(name, protocols, handler);
        backend.labels = labels;
        backend
    }

    /// Starts a backend with a custom `handler` (the gRPC backends use this). The delay and
    /// reset commands and the `x-backend` header still apply.
    pub fn start_with(name: &str, protocols: Protocols, handler: Handler) -> Backend {
        let std_listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        std_listener
            .set_nonblocking(true)
            .expect("set the listener non-blocking");
        let addr = std_listener.local_addr().expect("listener address");
        let listener = tokio::net::TcpListener::from_std(std_listener)
            .expect("Backend::start must be called inside a tokio runtime");
        let name: Arc<str> = Arc::from(name);
        let counters = Arc::new(Counters::default());
        let task = tokio::spawn(accept_loop(
            listener,
            name.clone(),
            protocols,
            handler.clone(),
            counters.clone(),
        ));
        Backend {
            name,
            labels: BTreeMap::new(),
            addr,
            counters,
            task,
            protocols,
            handler,
        }
    }

    /// Kills the backend: the listener and every connection close, so connecting is refused
    /// until [`restart`](Self::restart).
    pub fn stop(&mut self) {
        self.task.abort();
    }

    /// Serves again on the same port after [`stop`](Self::stop). Retries the bind briefly
    /// (the aborted listener closes asynchronously).
    pub async fn restart(&mut self) {
        self.task.abort();
        let mut last = None;
        for _ in 0..200 {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(listener) => {
                    self.task = tokio::spawn(accept_loop(
                        listener,
                        self.name.clone(),
                        self.protocols,
                        self.handler.clone(),
                        self.counters.clone(),
                    ));
                    return;
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("cannot bind {} again: {last:?}", self.addr);
    }

    /// From now on, `fail` of every `every` requests (the first `fail` of each group) are
    /// answered `status` without reaching the handler. `every == 0` turns it off.
    pub fn fail_pattern(&self, fail: usize, every: usize, status: u16) {
        let mut slot = self.counters.fail.lock().unwrap_or_else(|e| e.into_inner());
        *slot = (every > 0).then(|| (fail, every, status, self.hits()));
    }

    /// With `true`, requests hang after arriving until `set_stall(false)`.
    pub fn set_stall(&self, stall: bool) {
        self.counters.stall.store(stall, Ordering::SeqCst);
        if !stall {
            self.counters.unstall.notify_waiters();
        }
    }

    /// The most requests the backend held at once.
    pub fn max_in_flight(&self) -> usize {
        self.counters.max_in_flight.load(Ordering::SeqCst)
    }

    /// Requests it holds now.
    pub fn in_flight(&self) -> usize {
        self.counters.in_flight.load(Ordering::SeqCst)
    }

    /// The backend's name, as sent in `x-backend` and the JSON body.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The labels given to [`Backend::start`].
    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.labels
    }

    /// The listening address (`127.0.0.1:<port>`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The listening port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests received so far (counted on arrival, including reset ones).
    pub fn hits(&self) -> usize {
        self.counters.hits.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.counters.connections.load(Ordering::SeqCst)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        // The accept task owns the connection tasks (JoinSet): aborting it ends them all.
        self.task.abort();
    }
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("name", &self.name)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    name: Arc<str>,
    protocols: Protocols,
    handler: Handler,
    counters: Arc<Counters>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    // Out of file descriptors, say: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                counters.connections.fetch_add(1, Ordering::SeqCst);
                conns.spawn(serve(stream, name.clone(), protocols, handler.clone(), counters.clone()));
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn serve(
    stream: tokio::net::TcpStream,
    name: Arc<str>,
    protocols: Protocols,
    handler: Handler,
    counters: Arc<Counters>,
) {
    // `x-backend-reset: 1` wakes this, and the connection is dropped unanswered.
    let reset = Arc::new(Notify::new());
    let service = {
        let reset = reset.clone();
        hyper::service::service_fn(move |req: Request<Incoming>| {
            let (name, handler, counters, reset) = (
                name.clone(),
                handler.clone(),
                counters.clone(),
                reset.clone(),
            );
            async move {
                let hit = counters.hits.fetch_add(1, Ordering::SeqCst);
                let _in_flight = InFlight::enter(&counters);
                let fail = *counters.fail.lock().unwrap_or_else(|e| e.into_inner());
                if let Some((fail, every, status, from)) = fail
                    && hit >= from
                    && (hit - from) % every < fail
                {
                    let mut resp = text(
                        StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
                        "failing by pattern",
                    );
                    if let Ok(v) = HeaderValue::from_str(&name) {
                        resp.headers_mut().insert(BACKEND_HEADER, v);
                    }
                    return Ok(resp);
                }
                if counters.stall.load(Ordering::SeqCst) {
                    let released = counters.unstall.notified();
                    if counters.stall.load(Ordering::SeqCst) {
                        released.await;
                    }
                }
                if let Some(ms) = header(&req, DELAY_CMD).and_then(|v| v.parse::<u64>().ok()) {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                match header(&req, RESET_CMD) {
                    Some("stream") => return Err(ResetStream),
                    Some("1") => {
                        reset.notify_one();
                        return std::future::pending().await;
                    }
                    _ => {}
                }
                let mut resp = handler(req).await;
                if let Ok(v) = HeaderValue::from_str(&name) {
                    resp.headers_mut().insert(BACKEND_HEADER, v);
                }
                Ok::<_, ResetStream>(resp)
            }
        })
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    if protocols == Protocols::H2Only {
        builder = builder.http2_only();
    }
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = reset.notified() => {}
    }
}

/// The error a handler returns for `x-backend-reset: stream`.
#[derive(Debug)]
struct ResetStream;

impl std::fmt::Display for ResetStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("x-backend-reset: stream")
    }
}

impl std::error::Error for ResetStream {}

fn header<'r, B>(req: &'r Request<B>, name: &str) -> Option<&'r str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

fn text(status: StatusCode, msg: impl Into<String>) -> Response<MeshBody> {
    let mut resp = Response::new(body::full(msg.into()));
    *resp.status_mut() = status;
    resp
}

/// The echo handler: the status and body-size commands, else the JSON [`Echo`].
async fn echo(
    name: Arc<str>,
    labels: Arc<BTreeMap<String, String>>,
    req: Request<Incoming>,
) -> Response<MeshBody> {
    let status = match header(&req, STATUS_CMD) {
        None => StatusCode::OK,
        Some(v) => match v
            .parse::<u16>()
            .ok()
            .and_then(|n| StatusCode::from_u16(n).ok())
        {
            Some(s) => s,
            None => return text(StatusCode::BAD_REQUEST, format!("bad {STATUS_CMD}: {v}")),
        },
    };
    let body_bytes = match header(&req, BODY_BYTES_CMD) {
        None => None,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n <= MAX_BODY_BYTES => Some(n),
            _ => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("bad {BODY_BYTES_CMD}: {v}"),
                );
            }
        },
    };

    let (parts, req_body) = req.into_parts();
    let received = match req_body.collect().await {
        Ok(c) => c.to_bytes().len(),
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("request body: {e}")),
    };

    let mut resp = if let Some(n) = body_bytes {
        Response::new(body::full(Bytes::from(vec![b'x'; n])))
    } else {
        let mut headers = serde_json::Map::new();
        for key in parts.headers.keys() {
            let values: Vec<&str> = parts
                .headers
                .get_all(key)
                .iter()
                .map(|v| v.to_str().unwrap_or("<non-ascii>"))
                .collect();
            headers.insert(key.as_str().to_owned(), values.join(", ").into());
        }
        let authority = parts
            .uri
            .authority()
            .map(|a| a.as_str())
            .or_else(|| {
                parts
                    .headers
                    .get(http::header::HOST)
                    .and_then(|v| v.to_str().ok())
            })
            .unwrap_or("");
        let json = serde_json::json!({
            "backend": &*name,
            "labels": &*labels,
            "method": parts.method.as_str(),
            "path": parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"),
            "authority": authority,
            "headers": headers,
            "version": format!("{:?}", parts.version),
            "body_bytes": received,
        });
        let mut resp = Response::new(body::full(json.to_string()));
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        resp
    };
    *resp.status_mut() = status;
    resp
}

/// The JSON body of the echo handler: the request as the backend received it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Echo {
    /// The backend's name.
    pub backend: String,
    /// The backend's labels.
    pub labels: BTreeMap<String, String>,
    /// The request method.
    pub method: String,
    /// The path and query as received (`/a/b?x=1`).
    pub path: String,
    /// The URI authority (HTTP/2 `:authority`), else the `Host` header, else empty.
    pub authority: String,
    /// Request headers; a repeated header's values are joined with `", "` (RFC 9110 §5.3).
    pub headers: BTreeMap<String, String>,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
    /// Bytes of request body received.
    pub body_bytes: usize,
}

impl Echo {
    /// Parses an echo body; panics (this is test support) when it is not one.
    pub fn parse(body: &[u8]) -> Echo {
        serde_json::from_slice(body)
            .unwrap_or_else(|e| panic!("not an echo body ({e}): {}", String::from_utf8_lossy(body)))
    }

    /// A request header's value(s), as [`Echo::headers`] holds them.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}
