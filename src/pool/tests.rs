//! Pool tests over real loopback servers (hyper servers on `127.0.0.1:0`, or raw TCP where a
//! misbehaving server is needed). Servers stop when dropped.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use super::*;
use crate::body::{MeshBody, empty, full};
use crate::error::{Error, ResetReason};

#[derive(Clone, Copy, PartialEq)]
enum Proto {
    H1 { keep_alive: bool },
    H2,
}

/// A loopback hyper server counting its connections. `GET /slow` answers after 30 ms;
/// every answer's body is `<uri> <host header>`.
struct Server {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
    max_open: Arc<AtomicUsize>,
    kill: watch::Sender<u64>,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    async fn start(proto: Proto) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let max_open = Arc::new(AtomicUsize::new(0));
        let (kill, kill_rx) = watch::channel(0u64);
        let (a, o, m) = (accepted.clone(), open.clone(), max_open.clone());
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                a.fetch_add(1, Ordering::SeqCst);
                let now = o.fetch_add(1, Ordering::SeqCst) + 1;
                m.fetch_max(now, Ordering::SeqCst);
                let o = o.clone();
                let mut kill_rx = kill_rx.clone();
                // Only kills after this connection was accepted close it.
                kill_rx.mark_unchanged();
                conns.spawn(async move {
                    let io = TokioIo::new(stream);
                    let svc = service_fn(handle);
                    let serve = async {
                        match proto {
                            Proto::H1 { keep_alive } => {
                                let _ = hyper::server::conn::http1::Builder::new()
                                    .keep_alive(keep_alive)
                                    .serve_connection(io, svc)
                                    .await;
                            }
                            Proto::H2 => {
                                let _ =
                                    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                                        .serve_connection(io, svc)
                                        .await;
                            }
                        }
                    };
                    tokio::select! {
                        () = serve => {}
                        _ = kill_rx.changed() => {}
                    }
                    o.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Server {
            addr,
            accepted,
            open,
            max_open,
            kill,
            task,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Closes every connection the server has open.
    fn kill_connections(&self) {
        self.kill.send_modify(|n| *n += 1);
    }
}

async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() == "/slow" {
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    let body = format!("{} {}", req.uri(), host);
    Ok(Response::new(Full::new(Bytes::from(body))))
}

fn key(addr: SocketAddr, protocol: UpstreamProtocol) -> PoolKey {
    PoolKey {
        addr,
        tls: TlsPolicy::Plaintext,
        protocol,
        cluster: None,
    }
}

fn pool(addr: SocketAddr, protocol: UpstreamProtocol, settings: PoolSettings) -> Pool {
    Pool::new(key(addr, protocol), settings, Arc::new(TcpConnector))
}

fn get(uri: &str) -> Request<MeshBody> {
    Request::get(uri).body(empty()).expect("request")
}

async fn text(resp: Response<MeshBody>) -> String {
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Waits (up to 10 s, polling) for `cond`; panics with `what` if it never holds.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never happened: {what}");
}

fn reset_of(err: &Error) -> (ResetReason, Option<&str>) {
    match err {
        Error::UpstreamReset {
            reason,
            transport_failure,
        } => (*reason, transport_failure.as_deref()),
        other => panic!("expected UpstreamReset, got {other:?}"),
    }
}

#[tokio::test]
async fn http1_reuses_one_connection_for_sequential_requests() {
    let server = Server::start(Proto::H1 { keep_alive: true }).await;
    let pool = pool(
        server.addr,
        UpstreamProtocol::Http1,
        PoolSettings::default(),
    );
    for i in 0..100 {
        let resp = pool
            .send(get(&format!("http://example.test/r{i}")))
            .await
            .expect("response");
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(text(resp).await, format!("/r{i} example.test"));
    }
    assert_eq!(server.accepted(), 1);
    let stats = pool.stats();
    assert_eq!((stats.connections, stats.idle, stats.in_flight), (1, 1, 0));
}

#[tokio::test]
async fn http1_request_goes_origin_form_with_host_from_the_authority() {
    let server = Server::start(Proto::H1 { keep_alive: true }).await;
    let pool = pool(
        server.addr,
        UpstreamProtocol::Http1,
        PoolSettings::default(),
    );
    let resp = pool
        .send(get("http://reviews.default:9080/a/b?x=1"))
        .await
        .expect("response");
    assert_eq!(text(resp).await, "/a/b?x=1 reviews.default:9080");
    // An explicit Host header is kept.
    let req = Request::get("/p")
        .header("host", "ratings")
        .body(empty())
        .expect("request");
    assert_eq!(
        text(pool.send(req).await.expect("response")).await,
        "/p ratings"
    );
}

#[tokio::test]
async fn http1_cap_limits_connections_and_every_request_succeeds() {
    let server = Server::start(Proto::H1 { keep_alive: true }).await;
    let settings = PoolSettings {
        max_http1_connections: Some(2),
        ..PoolSettings::default()
    };
    let pool = pool(server.addr, UpstreamProtocol::Http1, settings);
    let mut tasks = JoinSet::new();
    for _ in 0..12 {
        let pool = pool.clone();
        tasks.spawn(async move {
            let resp = pool.send(get("http://slow.test/slow")).await?;
            Ok::<_, Error>(text(resp).await)
        });
    }
    while let Some(done) = tasks.join_next().await {
        assert_eq!(done.expect("task").expect("response"), "/slow slow.test");
        assert!(pool.stats().connections <= 2);
    }
    assert!(server.accepted() <= 2, "accepted {}", server.accepted());
    assert!(server.max_open.load(Ordering::SeqCst) <= 2);
    assert_eq!(pool.stats().in_flight, 0);
}

#[tokio::test]
async fn http1_connection_with_an_unread_body_is_not_reused() {
    let server = Server::start(Proto::H1 { keep_alive: true }).await;
    let settings = PoolSettings {
        max_http1_connections: Some(1),
        ..PoolSettings::default()
    };
    let pool = pool(server.addr, UpstreamProtocol::Http1, settings);
    let held = pool
        .send(get("http://a.test/held"))
        .await
        .expect("response");
    assert_eq!(pool.stats().in_flight, 1);
    let second = tokio::spawn({
        let pool = pool.clone();
        async move {
            let resp = pool.send(get("http://a.test/second")).await?;
            Ok::<_, Error>(text(resp).await)
        }
    });
    eventually("the second request waits for the busy connection", || {
        pool.stats().pending == 1
    })
    .await;
    assert!(!second.is_finished());
    assert_eq!(server.accepted(), 1);
    // Reading the held body to its end frees the connection for the waiter.
    assert_eq!(text(held).await, "/held a.test");
    let got = second.await.expect("task").expect("response");
    assert_eq!(got, "/second a.test");
    assert_eq!(server.accepted(), 1);
}

#[tokio::test]
async fn http1_dropped_body_closes_its_connection() {
    let server = Server::start(Proto::H1 { keep_alive: true }).await;
    let pool = pool(
        server.addr,
        UpstreamProtocol::Http1,
        PoolSettings::default(),
    );
    let held = pool.send(get("http://a.test/one")).await.expect("response");
    // While the body is held, another request needs another connection.
    let resp = pool.send(get("http://a.test/two")).await.expect("response");
    assert_eq!(text(resp).await, "/two a.test");
    assert_eq!(server.accepted(), 2);
    drop(held);
    eventually("the dropped body's connection closes", || {
        server.open() == 1
    })
    .await;
    assert_eq!(pool.stats().connections, 1);
    assert_eq!(pool.stats().in_flight, 0);
}

#[tokio::test]
async fn http1_server_without_keep_alive_never_fails_a_request() {
    let server = Server::start(Proto::H1 { keep_alive: false }).await;
    let pool = pool(
        server.addr,
        UpstreamProtocol::Http1,
        PoolSettings::default(),
    );
    for i in 0..20 {
        let resp = pool
            .send(get(&format!("http://a.test/{i}")))
            .await
            .expect("no request may fail");
        assert_eq!(text(resp).await, format!("/{i} a.test"));
    }
    assert_eq!(server.accepted(), 20);
}

/// A raw HTTP/1.1 server that answers each connection's first request with a keep-alive
/// response (no `connection: close`), then closes the socket: when `at_next_request`, only
/// once the next request has arrived (the server's close crossing that request on the wire,
/// the stale-connection race), else right after the response.
async fn one_shot_server(at_next_request: bool) -> (SocketAddr, Arc<AtomicUsize>, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let task = tokio::spawn(async move {
        let mut conns = JoinSet::new();
        while let Ok((mut stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            conns.spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                if at_next_request {
                    let _ = stream.read(&mut chunk).await;
                }
                // Close without having said so.
            });
        }
    });
    (addr, accepted, task)
}

#[tokio::test]
async fn http1_server_closing_idle_connections_never_fails_a_request() {
    let (addr, accepted, task) = one_shot_server(false).await;
    let pool = pool(addr, UpstreamProtocol::Http1, PoolSettings::default());
    for _ in 0..30 {
        let resp = pool
            .send(get("http://a.test/"))
            .await
            .expect("no request may fail");
        assert_eq!(text(resp).await, "ok");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 30);
    task.abort();
}

#[tokio::test]
async fn http1_idempotent_request_crossing_a_server_close_is_replayed_once() {
    let (addr, accepted, task) = one_shot_server(true).await;
    let pool = pool(addr, UpstreamProtocol::Http1, PoolSettings::default());
    // Every request after the first meets a connection the server closes under it.
    for _ in 0..10 {
        let resp = pool
            .send(get("http://a.test/"))
            .await
            .expect("a GET is replayed on a fresh connection");
        assert_eq!(text(resp).await, "ok");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 10);
    // A POST with a body was sent and cannot be replayed: it fails as Envoy reports it.
    let post = Request::post("http://a.test/")
        .body(full("payload"))
        .expect("request");
    let err = pool.send(post).await.expect_err("not replayable");
    assert_eq!(reset_of(&err).0, ResetReason::ConnectionTermination);
    assert_eq!(err.flags().to_string(), "UC");
    task.abort();
}

#[tokio::test]
async fn cancelled_requests_free_their_connection_and_place_in_line() {
    let server = Server::start(Proto::H1 { keep_alive: true }).await;
    let settings = PoolSettings {
        max_http1_connections: Some(1),
        ..PoolSettings::default()
    };
    let pool = pool(server.addr, UpstreamProtocol::Http1, settings);
    let held = pool
        .send(get("http://a.test/held"))
        .await
        .expect("response");
    // Gives up while waiting in line for the only connection.
    let waited = tokio::time::timeout(Duration::from_millis(20), pool.send(get("http://a.test/")));
    assert!(
        waited.await.is_err(),
        "cannot finish while the connection is held"
    );
    assert_eq!(pool.stats().pending, 0);
    drop(held);
    // Gives up mid-response: hyper closes that connection, the slot is freed.
    let slow = tokio::time::timeout(
        Duration::from_millis(5),
        pool.send(get("http://a.test/slow")),
    );
    let _ = slow.await;
    let resp = pool
        .send(get("http://a.test/after"))
        .await
        .expect("response");
    assert_eq!(text(resp).await, "/after a.test");
    let stats = pool.stats();
    assert_eq!(
        (stats.connections, stats.in_flight, stats.pending),
        (1, 0, 0)
    );
}

#[tokio::test]
async fn dropping_the_pool_closes_its_connections() {
    for (proto, protocol) in [
        (Proto::H1 { keep_alive: true }, UpstreamProtocol::Http1),
        (Proto::H2, UpstreamProtocol::Http2),
    ] {
        let server = Server::start(proto).await;
        let pool = pool(server.addr, protocol, PoolSettings::default());
        let resp = pool.send(get("http://a.test/")).await.expect("response");
        text(resp).await;
        assert_eq!(server.open(), 1);
        drop(pool);
        eventually("the server sees the connection closed", || {
            server.open() == 0
        })
        .await;
    }
}

#[tokio::test]
async fn http1_max_requests_per_connection_retires_connections() {
    let server = Server::start(Proto::H1 { keep_alive: true }).await;
    let settings = PoolSettings {
        max_requests_per_connection: Some(2),
        ..PoolSettings::default()
    };
    let pool = pool(server.addr, UpstreamProtocol::Http1, settings);
    for _ in 0..6 {
        let resp = pool.send(get("http://a.test/")).await.expect("response");
        text(resp).await;
    }
    assert_eq!(server.accepted(), 3);
}

#[tokio::test]
async fn http1_idle_connections_expire() {
    let server = Server::start(Proto::H1 { keep_alive: true }).await;
    let settings = PoolSettings {
        idle_timeout: Duration::from_millis(50),
        ..PoolSettings::default()
    };
    let pool = pool(server.addr, UpstreamProtocol::Http1, settings);
    let resp = pool.send(get("http://a.test/")).await.expect("response");
    text(resp).await;
    assert_eq!(server.accepted(), 1);
    eventually("the idle connection expires", || {
        pool.stats().connections == 0
    })
    .await;
    eventually("the server sees it closed", || server.open() == 0).await;
    // The next request simply connects again.
    let resp = pool.send(get("http://a.test/")).await.expect("response");
    assert_eq!(text(resp).await, "/ a.test");
    assert_eq!(server.accepted(), 2);
}

#[tokio::test]
async fn connect_refused_is_an_upstream_connection_failure() {
    let addr = {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        listener.local_addr().expect("addr")
    };
    for protocol in [UpstreamProtocol::Http1, UpstreamProtocol::Http2] {
        let pool = pool(addr, protocol, PoolSettings::default());
        let err = pool.send(get("http://a.test/")).await.expect_err("refused");
        let (reason, detail) = reset_of(&err);
        assert_eq!(reason, ResetReason::ConnectionFailure);
        assert_eq!(detail, Some("delayed connect error: 111"));
        assert_eq!(err.flags().to_string(), "UF");
        assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE);
        let stats = pool.stats();
        assert_eq!((stats.connections, stats.in_flight), (0, 0));
    }
}

/// A connector whose connects never finish.
struct Hang;

impl Connect for Hang {
    fn connect(&self, _: &ConnectTarget) -> ConnectFuture {
        Box::pin(std::future::pending())
    }
}

#[tokio::test]
async fn connect_timeout_is_a_connection_timeout() {
    let settings = PoolSettings {
        connect_timeout: Duration::from_millis(20),
        ..PoolSettings::default()
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], 9));
    let pool = Pool::new(key(addr, UpstreamProtocol::Http1), settings, Arc::new(Hang));
    let err = pool.send(get("http://a.test/")).await.expect_err("timeout");
    assert_eq!(reset_of(&err).0, ResetReason::ConnectionTimeout);
    assert_eq!(err.flags().to_string(), "UF");
    assert_eq!(
        pool.stats().connections,
        0,
        "the failed connect frees its slot"
    );
}

/// A raw server answering anything with `answer` (then closing).
async fn raw_server(answer: &'static [u8]) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let mut conns = JoinSet::new();
        while let Ok((mut stream, _)) = listener.accept().await {
            conns.spawn(async move {
                let mut chunk = [0u8; 1024];
                let _ = stream.read(&mut chunk).await;
                let _ = stream.write_all(answer).await;
            });
        }
    });
    (addr, task)
}

#[tokio::test]
async fn malformed_response_is_a_protocol_error() {
    let (addr, task) = raw_server(b"SPDY/9 what\r\n\r\n").await;
    let pool = pool(addr, UpstreamProtocol::Http1, PoolSettings::default());
    let err = pool.send(get("http://a.test/")).await.expect_err("garbage");
    assert_eq!(reset_of(&err).0, ResetReason::ProtocolError);
    assert_eq!(err.flags().to_string(), "UPE");
    assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
    task.abort();
}

#[tokio::test]
async fn close_before_response_is_a_connection_termination() {
    let (addr, task) = raw_server(b"").await;
    let pool = pool(addr, UpstreamProtocol::Http1, PoolSettings::default());
    let err = pool.send(get("http://a.test/")).await.expect_err("closed");
    assert_eq!(reset_of(&err).0, ResetReason::ConnectionTermination);
    assert_eq!(err.flags().to_string(), "UC");
    task.abort();
}

#[tokio::test]
async fn h2_prior_knowledge_shares_one_connection() {
    let server = Server::start(Proto::H2).await;
    let pool = pool(
        server.addr,
        UpstreamProtocol::Http2,
        PoolSettings::default(),
    );
    let mut tasks = JoinSet::new();
    for i in 0..50 {
        let pool = pool.clone();
        tasks.spawn(async move {
            let resp = pool
                .send(get(&format!("/slow?i={i}")).with_host("grpc.test"))
                .await?;
            assert_eq!(resp.version(), http::Version::HTTP_2);
            Ok::<_, Error>((i, text(resp).await))
        });
    }
    while let Some(done) = tasks.join_next().await {
        let (i, body) = done.expect("task").expect("response");
        // The Host header became :authority of an absolute URI.
        assert_eq!(body, format!("http://grpc.test/slow?i={i} -"));
    }
    assert_eq!(server.accepted(), 1);
    assert_eq!(pool.stats().connections, 1);
    assert_eq!(pool.stats().in_flight, 0);
}

#[tokio::test]
async fn h2_closed_connection_is_replaced_on_the_next_request() {
    let server = Server::start(Proto::H2).await;
    let pool = pool(
        server.addr,
        UpstreamProtocol::Http2,
        PoolSettings::default(),
    );
    let resp = pool.send(get("http://a.test/")).await.expect("response");
    text(resp).await;
    server.kill_connections();
    eventually("the pool sees the connection closed", || {
        pool.stats().connections == 0
    })
    .await;
    let resp = pool
        .send(get("http://a.test/again"))
        .await
        .expect("response");
    assert_eq!(text(resp).await, "http://a.test/again -");
    assert_eq!(server.accepted(), 2);
}

/// Plain TCP that claims ALPN negotiated `h2`: an ALPN pool must then speak HTTP/2.
struct FakeAlpnH2;

impl Connect for FakeAlpnH2 {
    fn connect(&self, target: &ConnectTarget) -> ConnectFuture {
        let tcp = TcpConnector.connect(target);
        Box::pin(async move {
            let connected = tcp.await?;
            Ok(Connected {
                alpn_h2: true,
                ..connected
            })
        })
    }
}

#[tokio::test]
async fn alpn_pool_speaks_http1_on_plaintext_and_http2_when_negotiated() {
    let h1 = Server::start(Proto::H1 { keep_alive: true }).await;
    let pool1 = pool(h1.addr, UpstreamProtocol::Alpn, PoolSettings::default());
    let resp = pool1.send(get("http://a.test/x")).await.expect("response");
    assert_eq!(resp.version(), http::Version::HTTP_11);
    assert_eq!(text(resp).await, "/x a.test");

    let h2 = Server::start(Proto::H2).await;
    let pool2 = Pool::new(
        key(h2.addr, UpstreamProtocol::Alpn),
        PoolSettings::default(),
        Arc::new(FakeAlpnH2),
    );
    for _ in 0..3 {
        let resp = pool2.send(get("http://a.test/y")).await.expect("response");
        assert_eq!(resp.version(), http::Version::HTTP_2);
        assert_eq!(text(resp).await, "http://a.test/y -");
    }
    assert_eq!(h2.accepted(), 1);
    assert_eq!(pool2.stats().connections, 1);
}

#[tokio::test]
async fn pools_registry_shares_replaces_and_retains() {
    let pools = Pools::default();
    let a = key(
        SocketAddr::from(([127, 0, 0, 1], 1)),
        UpstreamProtocol::Http1,
    );
    let b = PoolKey {
        tls: TlsPolicy::Tls(Arc::new(crate::tls::Originate::istio_mutual([]))),
        ..a.clone()
    };
    let settings = PoolSettings::default();
    let p1 = pools.get(&a, &settings);
    assert!(Arc::ptr_eq(&p1, &pools.get(&a, &settings)));
    // Same address, other TLS policy: another pool.
    let p2 = pools.get(&b, &settings);
    assert!(!Arc::ptr_eq(&p1, &p2));
    assert_eq!(pools.len(), 2);
    // Changed settings replace the pool.
    let tighter = PoolSettings {
        max_http1_connections: Some(1),
        ..settings.clone()
    };
    let p3 = pools.get(&a, &tighter);
    assert!(!Arc::ptr_eq(&p1, &p3));
    assert_eq!(p3.settings(), &tighter);
    assert_eq!(pools.len(), 2);
    pools.retain(|k| k.tls == TlsPolicy::Plaintext);
    assert_eq!(pools.len(), 1);
    assert!(Arc::ptr_eq(&p3, &pools.get(&a, &tighter)));
}

#[test]
fn settings_come_from_a_destination_rule_connection_pool() {
    use crate::config::destination_rule::{ConnectionPoolSettings, HttpSettings, TcpSettings};
    assert_eq!(
        PoolSettings::from_connection_pool(None),
        PoolSettings::default()
    );
    let cp = ConnectionPoolSettings {
        tcp: Some(TcpSettings {
            max_connections: Some(3),
            connect_timeout: Some(Duration::from_millis(250)),
            idle_timeout: Some(Duration::from_secs(5)),
            ..TcpSettings::default()
        }),
        http: Some(HttpSettings {
            max_requests_per_connection: Some(0),
            idle_timeout: Some(Duration::from_secs(7)),
            ..HttpSettings::default()
        }),
    };
    let s = PoolSettings::from_connection_pool(Some(&cp));
    assert_eq!(s.max_http1_connections, Some(3));
    assert_eq!(s.connect_timeout, Duration::from_millis(250));
    assert_eq!(
        s.idle_timeout,
        Duration::from_secs(7),
        "http.idleTimeout wins"
    );
    assert_eq!(s.max_requests_per_connection, None, "0 is unlimited");
}

trait WithHost {
    fn with_host(self, host: &str) -> Self;
}

impl WithHost for Request<MeshBody> {
    fn with_host(mut self, host: &str) -> Self {
        self.headers_mut()
            .insert(http::header::HOST, host.parse().expect("host"));
        self
    }
}

fn budget(max_connections: u64, max_pending: u64) -> ConnectionLimit {
    ConnectionLimit {
        breaker: crate::resilience::circuit::CircuitBreaker::default(),
        limits: crate::resilience::circuit::CircuitLimits {
            max_connections,
            max_pending_requests: max_pending,
            ..Default::default()
        },
        cluster: crate::snapshot::ClusterKey::new("c.test", None, 80),
    }
}

#[tokio::test]
async fn cluster_connection_budget_is_shared_by_the_endpoints_pools() {
    // maxConnections 1 for the cluster: the first pool takes the one place; the second,
    // having no connection at all, may still open one (as Envoy lets it), and then both
    // queue on their single connection: 2 connections in all, every request served.
    let a = Server::start(Proto::H1 { keep_alive: true }).await;
    let b = Server::start(Proto::H1 { keep_alive: true }).await;
    let limit = budget(1, 1_000);
    let settings = PoolSettings {
        connection_limit: Some(limit.clone()),
        ..PoolSettings::default()
    };
    let pa = pool(a.addr, UpstreamProtocol::Http1, settings.clone());
    let pb = pool(b.addr, UpstreamProtocol::Http1, settings);
    let mut tasks = JoinSet::new();
    for i in 0..12 {
        let p = if i % 2 == 0 { pa.clone() } else { pb.clone() };
        tasks.spawn(async move {
            let resp = p.send(get("http://slow.test/slow")).await?;
            Ok::<_, Error>(text(resp).await)
        });
    }
    while let Some(done) = tasks.join_next().await {
        assert_eq!(done.expect("task").expect("response"), "/slow slow.test");
    }
    assert_eq!((a.accepted(), b.accepted()), (1, 1));
    assert!(limit.breaker.connections() <= 1);
    assert_eq!(limit.breaker.pending(), 0);
}

#[tokio::test]
async fn waiting_beyond_the_pending_limit_is_an_overflow() {
    // One connection, held by a response whose body is not read; one request may wait for
    // it (http1MaxPendingRequests 1); the next is refused at once with UO.
    let server = Server::start(Proto::H1 { keep_alive: true }).await;
    let limit = budget(1, 1);
    let settings = PoolSettings {
        connection_limit: Some(limit.clone()),
        ..PoolSettings::default()
    };
    let p = pool(server.addr, UpstreamProtocol::Http1, settings);
    let held = p.send(get("http://a.test/held")).await.expect("response");
    let waiting = tokio::spawn({
        let p = p.clone();
        async move { p.send(get("http://a.test/second")).await.map(|_| ()) }
    });
    eventually("the second request waits", || limit.breaker.pending() == 1).await;
    let refused = p.send(get("http://a.test/third")).await;
    assert!(
        matches!(&refused, Err(Error::Overflow { limit, .. }) if limit.contains("http1MaxPendingRequests")),
        "{refused:?}"
    );
    // Reading the held body to its end hands the connection to the waiting request.
    assert_eq!(text(held).await, "/held a.test");
    assert!(waiting.await.expect("task").is_ok());
    assert_eq!(server.accepted(), 1);
}

#[test]
fn the_pool_cache_follows_the_registry() {
    let pools = super::Pools::default();
    let cache = super::PoolCache::default();
    let cluster = crate::snapshot::ClusterKey::new("a.test", None, 80);
    let key = super::PoolKey {
        addr: SocketAddr::from(([127, 0, 0, 1], 9)),
        tls: super::TlsPolicy::Plaintext,
        protocol: super::UpstreamProtocol::Http1,
        cluster: Some(cluster.clone()),
    };
    let parts = || (key.addr, key.tls.clone(), key.protocol);
    let settings = super::PoolSettings::default();
    let first = pools.get_cached(&cache, parts(), &cluster, &settings);
    // A hit is the registry's pool.
    assert!(Arc::ptr_eq(&first, &pools.get(&key, &settings)));
    assert!(Arc::ptr_eq(
        &first,
        &pools.get_cached(&cache, parts(), &cluster, &settings)
    ));
    // New settings replace the pool in both.
    let other = super::PoolSettings {
        max_requests_per_connection: Some(3),
        ..super::PoolSettings::default()
    };
    let second = pools.get_cached(&cache, parts(), &cluster, &other);
    assert!(!Arc::ptr_eq(&first, &second));
    assert!(first.is_retired());
    assert!(Arc::ptr_eq(&second, &pools.get(&key, &other)));
    // A pool the registry dropped is not handed out, even while a request still holds it.
    pools.retain(|_| false);
    let third = pools.get_cached(&cache, parts(), &cluster, &other);
    assert!(!Arc::ptr_eq(&second, &third));
    assert_eq!(pools.len(), 1);
    // Another registry never gets this one's pools.
    let elsewhere = super::Pools::default();
    let fourth = elsewhere.get_cached(&cache, parts(), &cluster, &other);
    assert!(!Arc::ptr_eq(&third, &fourth));
    // Another cluster's pool for the same endpoint is not this cluster's.
    let subset = crate::snapshot::ClusterKey::new("a.test", Some("v1".into()), 80);
    let fifth = pools.get_cached(&cache, parts(), &subset, &other);
    assert!(!Arc::ptr_eq(&third, &fifth));
    assert_eq!(fifth.key().cluster.as_ref(), Some(&subset));
}
