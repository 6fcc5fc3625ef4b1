//! Security benches.
//!
//! * `authz/decision/N`: one AuthorizationPolicy decision for a workload with N ALLOW
//!   policies (N = 1, 100, 1,000), each on its own path prefix and principal; the request
//!   matches the last one. `authz/decision_unindexed/100`: 100 policies with only suffix
//!   paths (`*.pngN`), which the index cannot narrow, the worst case.
//! * `tls/handshake`: one mutual-TLS handshake on loopback (SPIFFE certificates from the
//!   development CA, both sides verifying), a fresh TCP connection each time.
//! * `request/plaintext` vs `request/mtls`: one GET through a `MeshClient` to an axum app
//!   behind `mesh.inbound()` and `tower_mesh::server`, on a kept-alive connection, in
//!   plaintext and in mutual TLS (auto mTLS): the cost of encryption through the same stack.
//!
//! Run: `cargo bench --bench security` (`-- --quick` for a short run).

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Empty};
use tokio::net::{TcpListener, TcpStream};
use tower::{Layer, ServiceExt};
use tower_mesh::authz::{AuthzPolicies, AuthzRequest};
use tower_mesh::config::Loader;
use tower_mesh::route::matcher::SourceIdentity;
use tower_mesh::server::Server;
use tower_mesh::tls::{ClientAuth, DevCa, IdentityManager, SpiffeId};
use tower_mesh::{ConfigSource, Mesh, MeshClient};

fn policies(n: usize, unindexed: bool) -> AuthzPolicies {
    let yaml: String = (0..n)
        .map(|i| {
            let path = if unindexed {
                format!("\"*.png{i}\"")
            } else {
                format!("\"/svc{i}/*\"")
            };
            format!(
                "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: p{i}, namespace: default}}\nspec:\n  action: ALLOW\n  rules:\n  - from: [{{source: {{principals: [cluster.local/ns/default/sa/caller{i}]}}}}]\n    to: [{{operation: {{methods: [GET], paths: [{path}]}}}}]\n"
            )
        })
        .collect();
    let set = Loader::new().load_str(&yaml);
    assert!(!set.has_errors(), "{:?}", set.problems);
    let workload = SourceIdentity {
        namespace: "default".into(),
        labels: Default::default(),
    };
    let (p, _) = AuthzPolicies::compile(&set, &workload, "istio-system", "cluster.local");
    assert_eq!(p.len(), n);
    p
}

fn authz(c: &mut Criterion) {
    let headers = HeaderMap::new();
    let mut group = c.benchmark_group("authz");
    for n in [1usize, 100, 1_000] {
        let p = policies(n, false);
        let last = n - 1;
        let path = format!("/svc{last}/items/42");
        let principal = format!("cluster.local/ns/default/sa/caller{last}");
        let req = AuthzRequest::http("GET", "server", &path, &headers, 8080).with_peer(&principal);
        assert!(p.evaluate(&req).is_allowed());
        group.bench_function(format!("decision/{n}"), |b| {
            b.iter(|| black_box(p.evaluate(black_box(&req))))
        });
    }
    let p = policies(100, true);
    let principal = "cluster.local/ns/default/sa/caller99";
    let req =
        AuthzRequest::http("GET", "server", "/img/a.png99", &headers, 8080).with_peer(principal);
    assert!(p.evaluate(&req).is_allowed());
    group.bench_function("decision_unindexed/100", |b| {
        b.iter(|| black_box(p.evaluate(black_box(&req))))
    });
    group.finish();
}

fn manager(ca: &DevCa, sa: &str) -> IdentityManager {
    let id = SpiffeId::istio("cluster.local", "default", sa).expect("id");
    let cert = ca.issue(&id, Duration::from_secs(3600)).expect("issue");
    IdentityManager::from_identity(cert.identity().expect("identity")).expect("manager")
}

fn handshakes(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let ca = DevCa::new("cluster.local").expect("ca");
    let server = manager(&ca, "server");
    let client = manager(&ca, "client");
    let acceptor = tokio_rustls::TlsAcceptor::from(server.server_config(ClientAuth::Required));
    let expected = [tower_mesh::tls::ExpectedSan::Spiffe(
        SpiffeId::istio("cluster.local", "default", "server").expect("id"),
    )];
    let connector = tokio_rustls::TlsConnector::from(
        client
            .client_config(&expected, tower_mesh::pool::UpstreamProtocol::Http1)
            .expect("client config"),
    );
    let addr = rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(mut tls) = acceptor.accept(s).await {
                        use tokio::io::AsyncWriteExt;
                        let _ = tls.write_all(b"k").await;
                    }
                });
            }
        });
        addr
    });
    let name = rustls::pki_types::ServerName::try_from("server").expect("name");
    c.bench_function("tls/handshake", |b| {
        b.iter(|| {
            rt.block_on(async {
                use tokio::io::AsyncReadExt;
                let tcp = TcpStream::connect(addr).await.expect("connect");
                let mut tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .expect("handshake");
                let mut one = [0u8; 1];
                tls.read_exact(&mut one).await.expect("server byte");
            })
        })
    });
}

const POLICY: &str = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: allow, namespace: default}\nspec:\n  action: ALLOW\n  rules:\n  - to: [{operation: {methods: [GET], paths: [/hello]}}]\n";

/// An inbound workload (with or without identity) and a client mesh calling it.
async fn pair(ca: Option<&DevCa>) -> (MeshClient, Mesh) {
    let mut b = Mesh::builder()
        .namespace("default")
        .labels([("app", "server")])
        .config(ConfigSource::yaml("p.yaml", POLICY));
    if let Some(ca) = ca {
        b = b.identity(manager(ca, "server"));
    }
    let server = b.build().expect("server mesh");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    let app = server
        .inbound()
        .layer(Router::new().route("/hello", get(|| async { "hello" })));
    tokio::spawn(Server::new(&server).serve_with_shutdown(listener, app, std::future::pending()));
    let se = format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: server, namespace: default}}\nspec:\n  hosts: [server.default.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  endpoints:\n  - {{address: 127.0.0.1, ports: {{http: {}}}, serviceAccount: server, labels: {{security.istio.io/tlsMode: istio}}}}\n",
        addr.port()
    );
    let mut b = Mesh::builder()
        .namespace("default")
        .config(ConfigSource::yaml("se.yaml", se));
    if let Some(ca) = ca {
        b = b.identity(manager(ca, "client"));
    }
    (b.build().expect("client mesh").client(), server)
}

async fn hello(client: &MeshClient) {
    let req = Request::get("http://server/hello")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = client.clone().oneshot(req).await.expect("infallible");
    assert!(resp.status().is_success(), "{:?}", resp.status());
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(body.as_ref(), b"hello");
}

fn requests(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let ca = DevCa::new("cluster.local").expect("ca");
    let (plain, _p) = rt.block_on(pair(None));
    let (mtls, _m) = rt.block_on(pair(Some(&ca)));
    let plain = Arc::new(plain);
    let mtls = Arc::new(mtls);
    rt.block_on(hello(&plain));
    rt.block_on(hello(&mtls));
    let mut group = c.benchmark_group("request");
    group.bench_function("plaintext", |b| b.iter(|| rt.block_on(hello(&plain))));
    group.bench_function("mtls", |b| b.iter(|| rt.block_on(hello(&mtls))));
    group.finish();
}

criterion_group!(benches, authz, handshakes, requests);
criterion_main!(benches);
