//! The inbound server (`tower_mesh::server`) over real loopback sockets: an axum router
//! served with limits, connection info in the request, graceful shutdown.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::Extension;
use axum::routing::get;
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tower_mesh::server::{ConnectionInfo, Server};

use crate::support::client::Client;

async fn who(Extension(info): Extension<ConnectionInfo>) -> String {
    format!("peer={} tls={}", info.peer_addr, info.tls)
}

async fn slow() -> &'static str {
    tokio::time::sleep(Duration::from_millis(300)).await;
    "slow done"
}

fn app() -> Router {
    Router::new()
        .route("/who", get(who))
        .route("/slow", get(slow))
}

/// Starts `server` with [`app`] on 127.0.0.1:0; returns its address, the shutdown trigger and
/// the serve task.
async fn start(
    server: Server,
) -> (
    SocketAddr,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.serve_with_shutdown(listener, app(), async move {
        let _ = stopped.await;
    }));
    (addr, stop, task)
}

/// Sends raw bytes and reads until the server closes or 2 s pass.
async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn serves_http1_and_http2_with_connection_info_in_the_request() {
    let (addr, stop, task) = start(Server::standalone()).await;
    let mut h1 = Client::http1(addr).await.expect("h1");
    let reply = h1.get("/who", &[]).await.expect("h1 reply");
    assert_eq!(reply.status, StatusCode::OK);
    let body = String::from_utf8_lossy(&reply.body).into_owned();
    assert!(
        body.starts_with("peer=127.0.0.1:") && body.ends_with("tls=false"),
        "{body}"
    );

    let mut h2 = Client::http2(addr).await.expect("h2 prior knowledge");
    let reply = h2.get("/who", &[]).await.expect("h2 reply");
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    let _ = stop.send(());
    task.await.expect("serve task").expect("serve");
}

#[tokio::test]
async fn the_default_header_count_limit_is_100() {
    let (addr, stop, task) = start(Server::standalone()).await;
    // host, connection and 98 more = 100 headers: served; one more: 431.
    for (extra, status) in [(98, "200"), (99, "431")] {
        let many: String = (0..extra).map(|i| format!("x-h{i}: v\r\n")).collect();
        let reply = raw(
            addr,
            format!("GET /who HTTP/1.1\r\nhost: a\r\nconnection: close\r\n{many}\r\n").as_bytes(),
        )
        .await;
        assert!(
            reply.starts_with(&format!("HTTP/1.1 {status}")),
            "{extra} extra headers: {reply:?}"
        );
    }
    let _ = stop.send(());
    task.await.expect("serve task").expect("serve");
}

#[tokio::test]
async fn too_many_headers_or_too_large_headers_are_refused_with_431() {
    let (addr, stop, task) =
        start(Server::standalone().max_headers(20).max_header_bytes(8192)).await;
    let many: String = (0..30).map(|i| format!("x-h{i}: v\r\n")).collect();
    let reply = raw(
        addr,
        format!("GET /who HTTP/1.1\r\nhost: a\r\n{many}\r\n").as_bytes(),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 431"), "30 headers: {reply:?}");
    let big = "x".repeat(20_000);
    let reply = raw(
        addr,
        format!("GET /who HTTP/1.1\r\nhost: a\r\nx-big: {big}\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 431"), "20 kB header: {reply:?}");
    // A normal request still works.
    let reply = raw(
        addr,
        b"GET /who HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply:?}");
    let _ = stop.send(());
    task.await.expect("serve task").expect("serve");
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_cut_off() {
    let (addr, stop, task) =
        start(Server::standalone().header_read_timeout(Duration::from_millis(200))).await;
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET /who HTTP/1.1\r\nhost: a\r\n")
        .await
        .expect("write");
    // No final CRLF: the server gives up after the header-read timeout and closes.
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    assert!(
        read.is_ok(),
        "the server kept a slow client's connection open"
    );
    let text = String::from_utf8_lossy(&out);
    assert!(!text.contains("200 OK"), "{text}");
    let _ = stop.send(());
    task.await.expect("serve task").expect("serve");
}

#[tokio::test]
async fn graceful_shutdown_lets_the_request_in_flight_finish_and_stops_accepting() {
    let (addr, stop, task) = start(Server::standalone()).await;
    let mut client = Client::http1(addr).await.expect("h1");
    let in_flight = tokio::spawn(async move { client.get("/slow", &[]).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = stop.send(());
    let reply = in_flight
        .await
        .expect("task")
        .expect("the in-flight request failed");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body.as_ref(), b"slow done");
    task.await.expect("serve task").expect("serve");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the listener still accepts after shutdown"
    );
}

#[tokio::test]
async fn the_connection_cap_holds_extra_connections_until_a_slot_frees() {
    let (addr, stop, task) = start(Server::standalone().max_connections(1)).await;
    let mut first = Client::http1(addr).await.expect("first");
    assert_eq!(
        first.get("/who", &[]).await.expect("first").status,
        StatusCode::OK
    );
    // The second connection is made (kernel backlog) but not served while the first is open.
    let mut second = Client::http1(addr).await.expect("second connects");
    let mut pending = tokio::spawn(async move { second.get("/who", &[]).await });
    let early = tokio::time::timeout(Duration::from_millis(300), &mut pending).await;
    assert!(
        early.is_err(),
        "a connection over the cap was served: {early:?}"
    );
    drop(first);
    let reply = tokio::time::timeout(Duration::from_secs(5), pending)
        .await
        .expect("the second connection was never served after the first closed")
        .expect("task")
        .expect("second reply");
    assert_eq!(reply.status, StatusCode::OK);
    let _ = stop.send(());
    task.await.expect("serve task").expect("serve");
}

#[tokio::test]
async fn absurd_limits_are_clamped_not_a_panic() {
    let server = Server::standalone()
        .max_connections(usize::MAX)
        .max_headers(0)
        .max_header_bytes(0);
    let (addr, stop, task) = start(server).await;
    let mut client = Client::http1(addr).await.expect("client");
    assert_eq!(
        client.get("/who", &[]).await.expect("reply").status,
        StatusCode::OK
    );
    let _ = stop.send(());
    task.await.expect("serve task").expect("serve");
}
