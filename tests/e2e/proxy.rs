//! Proxy mode end to end: `tower_mesh::proxy::Proxy` started in-process (and once the
//! `tower-mesh proxy` binary) on loopback ports, with the issue's example config — a
//! ServiceEntry for `my-app.default.svc.cluster.local` with STATIC endpoints `v1` and `v2`
//! (test backends on ephemeral ports), a DestinationRule with subsets `v1`/`v2` and the 80/20
//! VirtualService `my-app` — and requests sent as an application would (`Host: my-app`).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower_mesh::body::{self, MeshBody};
use tower_mesh::proxy::{BoundProxy, Mode, Proxy, ProxyHandle};
use tower_mesh::{ConfigSource, Mesh};

use crate::support::client::Client;
use crate::support::{Backend, Handler, Protocols};

const HOST: &str = "my-app.default.svc.cluster.local";

/// The issue's example: ServiceEntry (endpoints `v1` at `v1_port`, `v2` at `v2_port`),
/// DestinationRule with subsets, VirtualService `my-app` sending `v1_weight`% to v1.
fn config(v1_port: u16, v2_port: u16, v1_weight: u32) -> String {
    let v2_weight = 100 - v1_weight;
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: my-app, namespace: default}}
spec:
  hosts: [{HOST}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {{number: 80, name: http, protocol: HTTP}}
  endpoints:
  - {{address: 127.0.0.1, ports: {{http: {v1_port}}}, labels: {{version: v1}}}}
  - {{address: 127.0.0.1, ports: {{http: {v2_port}}}, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: my-app, namespace: default}}
spec:
  host: my-app
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: my-app, namespace: default}}
spec:
  hosts: [my-app]
  http:
  - route:
    - destination: {{host: my-app, subset: v1}}
      weight: {v1_weight}
    - destination: {{host: my-app, subset: v2}}
      weight: {v2_weight}
"#
    )
}

struct Setup {
    v1: Backend,
    v2: Backend,
    dir: tempfile::TempDir,
}

fn setup(v1_weight: u32) -> Setup {
    let v1 = Backend::start("v1", &[("version", "v1")]);
    let v2 = Backend::start("v2", &[("version", "v2")]);
    let dir = tempfile::tempdir().expect("a temp dir");
    write(
        dir.path(),
        "mesh.yaml",
        &config(v1.port(), v2.port(), v1_weight),
    );
    Setup { v1, v2, dir }
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).expect("write config");
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Binds `proxy` and serves it in a task; the task resolves when the proxy has drained.
async fn start(proxy: Proxy) -> (ProxyHandle, tokio::task::JoinHandle<()>) {
    let bound: BoundProxy = proxy.bind().await.expect("the proxy starts");
    let handle = bound.handle();
    let task = tokio::spawn(async move { bound.serve().await.expect("the proxy serves") });
    (handle, task)
}

async fn sidecar(s: &Setup) -> (ProxyHandle, tokio::task::JoinHandle<()>) {
    start(Proxy::new(s.dir.path()).listen(loopback())).await
}

fn addr(handle: &ProxyHandle) -> SocketAddr {
    *handle.local_addrs().first().expect("one listener")
}

async fn get(proxy: SocketAddr, headers: &[(&str, &str)]) -> crate::support::client::Reply {
    let mut c = Client::http1(proxy).await.expect("connect to the proxy");
    c.get("/p?q=1", headers).await.expect("a response")
}

#[tokio::test]
async fn host_my_app_splits_80_20_through_the_sidecar() {
    let s = setup(80);
    let (handle, _task) = sidecar(&s).await;
    let mut c = Client::http1(addr(&handle)).await.expect("connect");
    let (mut v1, mut v2) = (0, 0);
    for _ in 0..200 {
        let reply = c.get("/", &[("host", "my-app")]).await.expect("reply");
        assert_eq!(reply.status, 200);
        match reply.backend() {
            Some("v1") => v1 += 1,
            Some("v2") => v2 += 1,
            other => panic!("unexpected backend {other:?}"),
        }
    }
    // 160 expected; the bounds are ~5 standard deviations wide.
    assert!((130..=190).contains(&v1), "v1 {v1}, v2 {v2}");
    assert_eq!(v1 + v2, 200);
    assert_eq!(s.v1.hits() + s.v2.hits(), 200);
}

#[tokio::test]
async fn http2_prior_knowledge_and_http1_both_route_by_authority() {
    let s = setup(100);
    let (handle, _task) = sidecar(&s).await;
    let mut h2 = Client::http2(addr(&handle)).await.expect("connect h2c");
    let req = Request::get("http://my-app/h2")
        .body(body::empty())
        .expect("request");
    let reply = crate::support::client::read(h2.send(req).await.expect("response"))
        .await
        .expect("body");
    assert_eq!(reply.version, http::Version::HTTP_2);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.backend(), Some("v1"));
    assert_eq!(reply.echo().path, "/h2");
    let reply = get(addr(&handle), &[("host", "my-app")]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.backend(), Some("v1"));
    assert_eq!(reply.echo().version, "HTTP/1.1");
    // An authority outside the registry passes through (ALLOW_ANY); a closed port is 503.
    let reply = get(addr(&handle), &[("host", "127.0.0.1:1")]).await;
    assert_eq!(reply.status, 503);
}

/// A backend answering with hop-by-hop headers of its own.
fn hop_by_hop_backend() -> Backend {
    let handler: Handler = Arc::new(|_req: Request<Incoming>| {
        Box::pin(async move {
            Response::builder()
                .header("connection", "x-resp-secret")
                .header("x-resp-secret", "1")
                .header("keep-alive", "timeout=5")
                .header("proxy-connection", "keep-alive")
                .header("x-resp-kept", "yes")
                .body(body::full("ok"))
                .expect("response")
        })
    });
    Backend::start_with("hop", Protocols::Auto, handler)
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed_and_forwarded_headers_set() {
    let s = setup(100);
    let (handle, _task) = sidecar(&s).await;
    let reply = get(
        addr(&handle),
        &[
            ("host", "my-app"),
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "hidden"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("proxy-authorization", "Basic dXNlcjpwYXNz"),
            ("te", "trailers"),
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-proto", "https"),
            ("x-kept", "yes"),
        ],
    )
    .await;
    assert_eq!(reply.status, 200);
    let echo = reply.echo();
    for gone in [
        "x-secret",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "upgrade",
    ] {
        assert_eq!(echo.header(gone), None, "{gone} reached the upstream");
    }
    assert_eq!(echo.header("te"), Some("trailers"));
    assert_eq!(echo.header("x-kept"), Some("yes"));
    // Envoy appends the direct peer; with no trusted hops the scheme is the downstream's.
    assert_eq!(
        echo.header("x-forwarded-for"),
        Some("203.0.113.9,127.0.0.1")
    );
    assert_eq!(echo.header("x-forwarded-proto"), Some("http"));

    // The response side: an upstream's hop-by-hop headers stop at the proxy.
    let hop = hop_by_hop_backend();
    let mesh = Mesh::builder()
        .config(ConfigSource::yaml(
            "hop.yaml",
            config(hop.port(), hop.port(), 100),
        ))
        .build()
        .expect("mesh");
    let (handle, _task) = start(Proxy::with_mesh(mesh).listen(loopback())).await;
    let reply = get(addr(&handle), &[("host", "my-app")]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.headers.get("x-resp-kept").map(|v| v.as_bytes()),
        Some(&b"yes"[..])
    );
    for gone in ["x-resp-secret", "keep-alive", "proxy-connection"] {
        assert!(
            reply.headers.get(gone).is_none(),
            "{gone} reached the client"
        );
    }
}

const DENY_REMOTE: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-remote, namespace: default}
spec:
  action: DENY
  rules:
  - from: [{source: {remoteIpBlocks: [203.0.113.0/24]}}]
"#;

/// An inbound sidecar in front of backend `app`, with `DENY_REMOTE` and `trusted` hops.
async fn inbound(app: &Backend, trusted: u32) -> (ProxyHandle, tokio::task::JoinHandle<()>) {
    let mesh = Mesh::builder()
        .namespace("default")
        .labels([("app", "server")])
        .num_trusted_proxies(trusted)
        .config(ConfigSource::yaml("policy.yaml", DENY_REMOTE))
        .build()
        .expect("mesh");
    assert_eq!(mesh.num_trusted_proxies(), trusted);
    let proxy = Proxy::with_mesh(mesh)
        .listen(loopback())
        .mode(Mode::Inbound { app: app.addr() });
    start(proxy).await
}

#[tokio::test]
async fn num_trusted_proxies_decides_the_client_for_remote_ip_blocks() {
    let app = Backend::start("app", &[]);
    // One trusted hop: the rightmost x-forwarded-for entry is the client.
    let (one, _t1) = inbound(&app, 1).await;
    let denied = get(
        addr(&one),
        &[("x-forwarded-for", "198.51.100.1, 203.0.113.7")],
    )
    .await;
    assert_eq!(denied.status, 403);
    let allowed = get(
        addr(&one),
        &[("x-forwarded-for", "203.0.113.7, 198.51.100.1")],
    )
    .await;
    assert_eq!(allowed.status, 200);
    assert_eq!(allowed.backend(), Some("app"));
    assert_eq!(
        allowed.echo().header("x-forwarded-for"),
        Some("203.0.113.7, 198.51.100.1,127.0.0.1")
    );
    // Two trusted hops reach one further left.
    let (two, _t2) = inbound(&app, 2).await;
    let denied = get(
        addr(&two),
        &[("x-forwarded-for", "203.0.113.7, 198.51.100.1")],
    )
    .await;
    assert_eq!(denied.status, 403);
    // No trusted hop (the default): the direct peer, 127.0.0.1, whatever the header says.
    let (zero, _t0) = inbound(&app, 0).await;
    let allowed = get(addr(&zero), &[("x-forwarded-for", "203.0.113.7")]).await;
    assert_eq!(allowed.status, 200);
    assert_eq!(app.hits(), 2);
}

/// A server that accepts an HTTP/1.1 upgrade to `echo` and then echoes bytes back.
async fn upgrade_echo_backend() -> SocketAddr {
    let listener = TcpListener::bind(loopback()).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|mut req: Request<Incoming>| async move {
                    let wants = req
                        .headers()
                        .get("upgrade")
                        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
                    if !wants {
                        let resp = Response::builder()
                            .status(StatusCode::BAD_REQUEST)
                            .body(body::empty())
                            .expect("response");
                        return Ok::<Response<MeshBody>, hyper::Error>(resp);
                    }
                    let on = hyper::upgrade::on(&mut req);
                    tokio::spawn(async move {
                        if let Ok(upgraded) = on.await {
                            let mut io = TokioIo::new(upgraded);
                            let mut buf = [0u8; 1024];
                            while let Ok(n) = io.read(&mut buf).await {
                                if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        }
                    });
                    Ok(Response::builder()
                        .status(StatusCode::SWITCHING_PROTOCOLS)
                        .header("upgrade", "websocket")
                        .header("connection", "upgrade")
                        .body(body::empty())
                        .expect("response"))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

/// Reads an HTTP/1.1 response head from `tcp` (byte by byte: nothing after it is consumed).
async fn read_head(tcp: &mut TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let byte = tcp.read_u8().await.expect("a response head");
        head.push(byte);
        assert!(head.len() < 16 * 1024, "response head too long");
    }
    String::from_utf8(head).expect("ascii head")
}

#[tokio::test]
async fn websocket_upgrade_echoes_through_the_proxy() {
    let backend = upgrade_echo_backend().await;
    let mesh = Mesh::builder()
        .config(ConfigSource::yaml(
            "ws.yaml",
            config(backend.port(), backend.port(), 100),
        ))
        .build()
        .expect("mesh");
    let (handle, _task) = start(Proxy::with_mesh(mesh).listen(loopback())).await;
    let mut tcp = TcpStream::connect(addr(&handle)).await.expect("connect");
    tcp.write_all(
        b"GET /chat HTTP/1.1\r\nhost: my-app\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\r\n",
    )
    .await
    .expect("write");
    let head = read_head(&mut tcp).await.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    for msg in [&b"hello"[..], b"through the mesh"] {
        tcp.write_all(msg).await.expect("write");
        let mut got = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(10), tcp.read_exact(&mut got))
            .await
            .expect("echo in time")
            .expect("echo");
        assert_eq!(got, msg);
    }
    // A plain request to the same backend is not an upgrade and is answered normally.
    let reply = get(addr(&handle), &[("host", "my-app")]).await;
    assert_eq!(reply.status, 400);
}

#[tokio::test]
async fn shutdown_drains_in_flight_refuses_new_connections_and_resolves() {
    let s = setup(100);
    let (handle, task) = start(
        Proxy::new(s.dir.path())
            .listen(loopback())
            .drain_timeout(Duration::from_secs(20)),
    )
    .await;
    let proxy = addr(&handle);
    s.v1.set_stall(true);
    let in_flight = tokio::spawn(async move { get(proxy, &[("host", "my-app")]).await });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while s.v1.in_flight() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "request never arrived"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    handle.shutdown();
    // New connections are refused once the listener is closed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(proxy).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still accepting after shutdown"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !task.is_finished(),
        "resolved before the in-flight request finished"
    );
    s.v1.set_stall(false);
    let reply = in_flight.await.expect("the request task");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.backend(), Some("v1"));
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("serve resolves after the drain")
        .expect("serve task");
}

#[tokio::test]
async fn a_bad_reload_keeps_the_old_config_and_a_good_one_applies() {
    let s = setup(100);
    let (handle, _task) = start(
        Proxy::new(s.dir.path())
            .listen(loopback())
            .watch(Some(Duration::from_millis(50))),
    )
    .await;
    let proxy = addr(&handle);
    assert_eq!(
        get(proxy, &[("host", "my-app")]).await.backend(),
        Some("v1")
    );
    // A negative weight: validation rejects the whole directory.
    let bad = config(s.v1.port(), s.v2.port(), 0).replace("weight: 100", "weight: -100");
    write(s.dir.path(), "mesh.yaml", &bad);
    assert!(handle.mesh().reload().await.is_err());
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..10 {
        assert_eq!(
            get(proxy, &[("host", "my-app")]).await.backend(),
            Some("v1")
        );
    }
    // A valid change is picked up by the watcher on its own.
    write(
        s.dir.path(),
        "mesh.yaml",
        &config(s.v1.port(), s.v2.port(), 0),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if get(proxy, &[("host", "my-app")]).await.backend() == Some("v2") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the reload never applied"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_binary_serves_and_drains_on_sigterm() {
    use tokio::io::AsyncBufReadExt;

    let s = setup(100);
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tower-mesh"))
        .arg("proxy")
        .arg("--config")
        .arg(s.dir.path())
        .args(["--listen", "127.0.0.1:0", "--drain-seconds", "5"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run tower-mesh proxy");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("the proxy starts in time")
        .expect("read stdout")
        .expect("a listening line");
    let proxy: SocketAddr = line
        .rsplit(' ')
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    let reply = get(proxy, &[("host", "my-app")]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.backend(), Some("v1"));
    let pid = child.id().expect("a pid").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("run kill");
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("the proxy exits after SIGTERM")
        .expect("wait");
    assert!(status.success(), "exit status {status}");
}

/// A request body fed chunk by chunk from a channel (ends when the sender is dropped).
struct ChannelBody(tokio::sync::mpsc::Receiver<bytes::Bytes>);

impl http_body::Body for ChannelBody {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(http_body::Frame::data(c))))
    }
}

#[tokio::test]
async fn bodies_stream_both_ways_through_the_proxy() {
    use http_body_util::BodyExt;

    // The backend answers once the first request chunk arrived, with the rest of the request
    // body as its response body: a proxy that buffered either body would deadlock here.
    let handler: Handler = Arc::new(|req: Request<Incoming>| {
        Box::pin(async move {
            let mut body = req.into_body();
            let first = body.frame().await.and_then(Result::ok);
            let first = first.and_then(|f| f.into_data().ok()).unwrap_or_default();
            Response::builder()
                .header("x-first", String::from_utf8_lossy(&first).as_ref())
                .body(body::boxed(body))
                .expect("response")
        })
    });
    let backend = Backend::start_with("stream", Protocols::Auto, handler);
    let mesh = Mesh::builder()
        .config(ConfigSource::yaml(
            "stream.yaml",
            config(backend.port(), backend.port(), 100),
        ))
        .build()
        .expect("mesh");
    let (handle, _task) = start(Proxy::with_mesh(mesh).listen(loopback())).await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let req = Request::post("/upload")
        .header("host", "my-app")
        .body(body::boxed(ChannelBody(rx)))
        .expect("request");
    let mut c = Client::http1(addr(&handle)).await.expect("connect");
    tx.send(bytes::Bytes::from_static(b"one"))
        .await
        .expect("send");
    let within = Duration::from_secs(10);
    let resp = tokio::time::timeout(within, c.send(req))
        .await
        .expect("response headers before the request body ended")
        .expect("response");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers().get("x-first").map(|v| v.as_bytes()),
        Some(&b"one"[..])
    );
    let mut body = resp.into_body();
    for chunk in ["two", "three"] {
        tx.send(bytes::Bytes::from(chunk)).await.expect("send");
        let frame = tokio::time::timeout(within, body.frame())
            .await
            .expect("the chunk comes back before the body ends")
            .expect("a frame")
            .expect("a data frame");
        assert_eq!(frame.into_data().ok().as_deref(), Some(chunk.as_bytes()));
    }
    drop(tx);
    let rest = tokio::time::timeout(within, body.collect())
        .await
        .expect("the body ends")
        .expect("collect");
    assert!(rest.to_bytes().is_empty());
}

#[tokio::test]
async fn header_limits_apply_to_the_proxy_listener() {
    let s = setup(100);
    let (handle, _task) = start(
        Proxy::new(s.dir.path())
            .listen(loopback())
            .watch(None)
            .max_headers(10),
    )
    .await;
    let many: Vec<(String, &str)> = (0..20).map(|i| (format!("x-h{i}"), "v")).collect();
    let mut headers: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    headers.push(("host", "my-app"));
    let reply = get(addr(&handle), &headers).await;
    assert_eq!(reply.status, 431);
    assert_eq!(s.v1.hits(), 0);
    assert_eq!(get(addr(&handle), &[("host", "my-app")]).await.status, 200);
}

const STRICT_ALLOW_CLIENT: &str = r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict, namespace: default}
spec:
  mtls: {mode: STRICT}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-client, namespace: default}
spec:
  action: ALLOW
  rules:
  - from: [{source: {principals: [cluster.local/ns/default/sa/client]}}]
"#;

fn workload_identity(ca: &tower_mesh::tls::DevCa, sa: &str) -> tower_mesh::tls::IdentityManager {
    let id = tower_mesh::tls::SpiffeId::istio("cluster.local", "default", sa).expect("an id");
    let cert = ca.issue(&id, Duration::from_secs(3600)).expect("issue");
    tower_mesh::tls::IdentityManager::from_identity(cert.identity().expect("identity"))
        .expect("manager")
}

/// A client workload whose mesh knows `server` at the inbound proxy's address.
fn client_of(proxy: SocketAddr, identity: Option<tower_mesh::tls::IdentityManager>) -> Mesh {
    let se = format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: server, namespace: default}}\nspec:\n  hosts: [server.default.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  endpoints:\n  - address: 127.0.0.1\n    ports: {{http: {}}}\n    serviceAccount: server\n    labels: {{app: server, security.istio.io/tlsMode: istio}}\n",
        proxy.port()
    );
    let mut builder = Mesh::builder()
        .namespace("default")
        .labels([("app", "client")])
        .config(ConfigSource::yaml("client.yaml", se));
    if let Some(id) = identity {
        builder = builder.identity(id);
    }
    builder.build().expect("client mesh")
}

async fn call_server(client: &Mesh) -> (StatusCode, Option<crate::support::Echo>) {
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    let req = Request::get("http://server/who")
        .body(body::empty())
        .expect("request");
    let resp = tokio::time::timeout(Duration::from_secs(10), client.client().oneshot(req))
        .await
        .expect("the call hung")
        .expect("infallible");
    let status = resp.status();
    let from_app = resp.headers().contains_key("x-backend");
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (
        status,
        from_app.then(|| crate::support::Echo::parse(&bytes)),
    )
}

#[tokio::test]
async fn inbound_mode_terminates_mutual_tls_and_enforces_policy_before_the_app() {
    let ca = tower_mesh::tls::DevCa::new("cluster.local").expect("a CA");
    let app = Backend::start("app", &[]);
    let mesh = Mesh::builder()
        .namespace("default")
        .labels([("app", "server")])
        .identity(workload_identity(&ca, "server"))
        .config(ConfigSource::yaml("policy.yaml", STRICT_ALLOW_CLIENT))
        .build()
        .expect("server mesh");
    let (handle, _task) = start(
        Proxy::with_mesh(mesh)
            .listen(loopback())
            .mode(Mode::Inbound { app: app.addr() }),
    )
    .await;
    let proxy = addr(&handle);

    let client = client_of(proxy, Some(workload_identity(&ca, "client")));
    let (status, echo) = call_server(&client).await;
    assert_eq!(status, 200);
    let echo = echo.expect("the app answered");
    assert_eq!(echo.path, "/who");
    assert_eq!(echo.header("x-forwarded-proto"), Some("https"));
    assert_eq!(echo.header("x-forwarded-for"), Some("127.0.0.1"));

    // Another identity passes mutual TLS but not the AuthorizationPolicy.
    let other = client_of(proxy, Some(workload_identity(&ca, "other")));
    assert_eq!(call_server(&other).await, (StatusCode::FORBIDDEN, None));
    // No identity: STRICT refuses the plaintext connection.
    let anonymous = client_of(proxy, None);
    let (status, echo) = call_server(&anonymous).await;
    assert!(status.is_server_error(), "{status}");
    assert!(echo.is_none());
    assert_eq!(app.hits(), 1);
}

/// The issue's mesh plus a Gateway `edge` (selector `istio: ingressgateway`, port 8080,
/// hosts `*.example.com`) and a VirtualService bound to it sending `shop.example.com` to v1.
fn gateway_config(s: &Setup) -> String {
    format!(
        r#"{}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: edge, namespace: default}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 8080, name: http, protocol: HTTP}}
    hosts: ["*.example.com"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: shop, namespace: default}}
spec:
  hosts: [shop.example.com]
  gateways: [edge]
  http:
  - route:
    - destination: {{host: my-app, subset: v1}}
"#,
        config(s.v1.port(), s.v2.port(), 80)
    )
}

#[tokio::test]
async fn gateway_mode_serves_the_gateway_port_traced_with_the_admin_endpoint() {
    let s = setup(80);
    write(s.dir.path(), "mesh.yaml", &gateway_config(&s));
    let (handle, task) = start(
        Proxy::new(s.dir.path())
            .mode(Mode::Gateway)
            .labels([("istio", "ingressgateway")])
            .gateway_port(8080, loopback())
            .admin(loopback()),
    )
    .await;
    let gw = addr(&handle);

    // Bound to the gateway: the host its VirtualService names, traced on the way.
    let reply = get(gw, &[("host", "shop.example.com")]).await;
    assert_eq!(reply.status, 200);
    let echo = reply.echo();
    assert_eq!(echo.backend, "v1");
    let traceparent = echo
        .headers
        .get("traceparent")
        .expect("a trace was started");
    assert!(traceparent.starts_with("00-"), "{traceparent}");
    assert!(echo.headers.contains_key("x-request-id"));
    // A host of the server that no bound VirtualService claims: 404 NR, as Envoy.
    let miss = get(gw, &[("host", "other.example.com")]).await;
    assert_eq!(miss.status, 404);
    // The mesh's own host is not served by the gateway (no VirtualService binds it there).
    let mesh_host = get(gw, &[("host", "my-app")]).await;
    assert_eq!(mesh_host.status, 404);
    assert_eq!(s.v1.hits() + s.v2.hits(), 1);

    // The admin endpoint: ready, and a config dump naming the gateway's VirtualService.
    let admin = handle.admin_addr().expect("the admin endpoint is bound");
    let mut c = Client::http1(admin).await.expect("connect to admin");
    let ready = c.get("/ready", &[]).await.expect("ready");
    assert_eq!(ready.status, 200);
    let dump = c.get("/config_dump", &[]).await.expect("config_dump");
    assert_eq!(dump.status, 200);
    let text = String::from_utf8_lossy(&dump.body);
    assert!(text.contains("\"shop\""), "{text}");

    handle.shutdown();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the proxy drains")
        .expect("the serve task");
    // Every listener is closed, the admin port included.
    assert!(TcpStream::connect(gw).await.is_err());
    assert!(TcpStream::connect(admin).await.is_err());
}

#[tokio::test]
async fn gateway_mode_without_a_selected_gateway_is_a_clear_error() {
    let s = setup(80);
    write(s.dir.path(), "mesh.yaml", &gateway_config(&s));
    let err = Proxy::new(s.dir.path())
        .mode(Mode::Gateway)
        .labels([("istio", "eastwestgateway")])
        .gateway_port(8080, loopback())
        .bind()
        .await
        .expect_err("no Gateway selects these labels");
    assert!(
        matches!(err, tower_mesh::proxy::ProxyError::Gateway(_)),
        "{err}"
    );
}

/// Sums the `istio_requests_total` series of an OpenMetrics text whose labels include every
/// `key="value"` pair of `labels`.
fn requests_total(metrics: &str, labels: &[(&str, &str)]) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("istio_requests_total{"))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn proxy_metrics_equal_what_the_client_saw_through_an_abort_fault() {
    let s = setup(80);
    let faulty = config(s.v1.port(), s.v2.port(), 80).replace(
        "  - route:\n",
        "  - fault:\n      abort: {httpStatus: 418, percentage: {value: 30}}\n    route:\n",
    );
    assert_ne!(
        faulty,
        config(s.v1.port(), s.v2.port(), 80),
        "the fault is in"
    );
    write(s.dir.path(), "mesh.yaml", &faulty);
    let (handle, _task) = start(
        Proxy::new(s.dir.path())
            .listen(loopback())
            .admin(loopback()),
    )
    .await;
    let mut c = Client::http1(addr(&handle)).await.expect("connect");
    let (mut ok, mut aborted) = (0u64, 0u64);
    for _ in 0..300 {
        let reply = c.get("/", &[("host", "my-app")]).await.expect("reply");
        match reply.status.as_u16() {
            200 => ok += 1,
            418 => aborted += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(ok > 0 && aborted > 0, "ok {ok}, aborted {aborted}");
    assert_eq!(
        s.v1.hits() + s.v2.hits(),
        ok as usize,
        "aborts never reach a backend"
    );

    let admin = handle.admin_addr().expect("admin");
    let mut a = Client::http1(admin).await.expect("connect to admin");
    let metrics = a.get("/metrics", &[]).await.expect("metrics");
    let text = String::from_utf8_lossy(&metrics.body);
    let source = ("reporter", "source");
    assert_eq!(
        requests_total(
            &text,
            &[source, ("response_code", "200"), ("response_flags", "-")]
        ),
        ok,
        "{text}"
    );
    assert_eq!(
        requests_total(
            &text,
            &[source, ("response_code", "418"), ("response_flags", "FI")]
        ),
        aborted,
        "{text}"
    );
    assert_eq!(requests_total(&text, &[source]), ok + aborted, "{text}");
}

#[tokio::test]
async fn the_proxy_continues_w3c_and_b3_traces_with_a_new_parent_span() {
    let s = setup(100);
    let (handle, _task) = sidecar(&s).await;
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let reply = get(
        addr(&handle),
        &[("host", "my-app"), ("traceparent", incoming)],
    )
    .await;
    let seen = reply.echo().headers["traceparent"].clone();
    let parts: Vec<&str> = seen.split('-').collect();
    assert_eq!(parts.len(), 4, "{seen}");
    assert_eq!(
        parts[1], "4bf92f3577b34da6a3ce929d0e0e4736",
        "same trace id"
    );
    assert_ne!(parts[2], "00f067aa0ba902b7", "a new parent span id");
    assert_eq!(parts[3], "01", "the sampling decision is kept");

    let b3 = "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1";
    let reply = get(addr(&handle), &[("host", "my-app"), ("b3", b3)]).await;
    let echo = reply.echo();
    assert!(!echo.headers.contains_key("traceparent"), "B3 in, B3 out");
    let seen = echo.headers["b3"].clone();
    let mut parts = seen.split('-');
    assert_eq!(parts.next(), Some("80f198ee56343ba864fe8b2a57d3eff7"));
    let span = parts.next().expect("a span id");
    assert_ne!(span, "e457b5a2e4d86bd1");
    assert_eq!(span.len(), 16);
    // Each request got an x-request-id.
    assert!(echo.headers.contains_key("x-request-id"));
}
