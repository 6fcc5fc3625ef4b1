//! The ingress gateway end to end: Istio `Gateway` + VirtualServices → `IngressGateway` on
//! loopback listeners → real backends. Clients speak plain HTTP/1.1, or TLS with rustls
//! (certificates from `DevCa`; the test client pins the certificate it expects to see, which
//! is how it tells the gateway's certificate from a passthrough backend's).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower_mesh::Mesh;
use tower_mesh::error::FLAG_HEADER;
use tower_mesh::proxy::gateway::IngressGateway;
use tower_mesh::tls::{DevCa, IssuedCert, SpiffeId};

use crate::support::{BACKEND_HEADER, Backend};

// ---- config ---------------------------------------------------------------------------------

/// ServiceEntries `shop.default.svc.cluster.local` and `api.prod.svc.cluster.local` (port 80)
/// on the two backends.
fn services(shop: u16, api: u16) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: shop, namespace: default}}
spec:
  hosts: [shop.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {shop}}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: api, namespace: prod}}
spec:
  hosts: [api.prod.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {api}}}}}]
"#
    )
}

/// A VirtualService `name` in `ns` for `hosts`, bound to `gateways`, routing to `dest`.
fn vs(name: &str, ns: &str, hosts: &str, gateways: &str, dest: &str) -> String {
    format!(
        r#"
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: {ns}}}
spec:
  hosts: {hosts}
  gateways: {gateways}
  http:
  - route:
    - destination: {{host: {dest}}}
"#
    )
}

fn gateway(name: &str, servers: &str) -> String {
    format!(
        r#"
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: {name}, namespace: default}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
{servers}
"#
    )
}

fn mesh(yaml: &str) -> Mesh {
    Mesh::builder()
        .config_str("gateway.yaml", yaml)
        .labels([("istio", "ingressgateway")])
        .build()
        .expect("mesh")
}

/// A running gateway: its listeners' addresses by Gateway port, and its shutdown.
struct Running {
    addrs: Vec<(u16, SocketAddr)>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Running {
    fn addr(&self, port: u16) -> SocketAddr {
        self.addrs
            .iter()
            .find(|(p, _)| *p == port)
            .map(|(_, a)| *a)
            .expect("a listener for the port")
    }

    async fn stop(mut self) {
        let _ = self.stop.take().map(|s| s.send(()));
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the gateway stops")
            .expect("join")
            .expect("serve");
    }
}

async fn start(mesh: &Mesh) -> Running {
    let gw = IngressGateway::new(mesh)
        .expect("gateway")
        .shutdown_grace(Duration::from_secs(2));
    let mut listeners = Vec::new();
    let mut addrs = Vec::new();
    for port in gw.ports() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        addrs.push((port, l.local_addr().expect("addr")));
        listeners.push((port, l));
    }
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(gw.serve(listeners, mesh.client(), async move {
        let _ = stopped.await;
    }));
    Running {
        addrs,
        stop: Some(stop),
        task,
    }
}

/// One HTTP/1.1 GET over `io` with `Host: host`: (status, x-backend, location, flags, body).
async fn get_over<I>(io: I, host: &str, path: &str) -> hyper::Result<Got>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", host)
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = send.send_request(req).await?;
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let got = Got {
        status: resp.status(),
        backend: header(BACKEND_HEADER.as_str()),
        location: header("location"),
        flags: header(FLAG_HEADER.as_str()),
        body: Bytes::new(),
    };
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(Got { body, ..got })
}

#[derive(Debug)]
struct Got {
    status: StatusCode,
    backend: Option<String>,
    location: Option<String>,
    flags: Option<String>,
    body: Bytes,
}

async fn get(addr: SocketAddr, host: &str, path: &str) -> Got {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    get_over(tcp, host, path).await.expect("response")
}

// ---- TLS helpers ----------------------------------------------------------------------------

fn issue(ca: &DevCa, sa: &str) -> IssuedCert {
    let id = SpiffeId::parse(&format!("spiffe://cluster.local/ns/default/sa/{sa}")).expect("id");
    ca.issue(&id, Duration::from_secs(3600)).expect("issue")
}

/// Writes `cert`'s chain and key (and the CA root) into `dir` as `<name>.crt`, `<name>.key`,
/// `<name>-ca.crt`; returns their paths.
fn write_files(dir: &std::path::Path, name: &str, cert: &IssuedCert) -> (String, String, String) {
    let path = |suffix: &str| dir.join(format!("{name}{suffix}")).display().to_string();
    let (c, k, ca) = (path(".crt"), path(".key"), path("-ca.crt"));
    std::fs::write(&c, &cert.chain_pem).expect("write cert");
    std::fs::write(&k, &cert.key_pem).expect("write key");
    std::fs::write(&ca, &cert.root_pem).expect("write ca");
    (c, k, ca)
}

/// Accepts exactly the server certificate `expected` (signatures checked with ring).
#[derive(Debug)]
struct Pinned {
    expected: CertificateDer<'static>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.expected.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("not the pinned certificate".into()))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A TLS client config pinning `expected`, presenting `client` when given.
fn client_config(
    expected: &CertificateDer<'static>,
    client: Option<&IssuedCert>,
) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned {
            expected: expected.clone(),
            provider,
        }));
    let config = match client {
        Some(c) => builder
            .with_client_auth_cert(c.chain.clone(), c.key.clone_key())
            .expect("client cert"),
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

async fn tls_connect(
    addr: SocketAddr,
    sni: &str,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(sni.to_string()).expect("server name");
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
}

fn leaf(cert: &IssuedCert) -> CertificateDer<'static> {
    cert.chain.first().expect("leaf").clone()
}

// ---- tests ----------------------------------------------------------------------------------

#[tokio::test]
async fn gateway_hosts_match_wildcards_and_namespaces_and_unknown_hosts_are_404() {
    let shop = Backend::start("shop", &[]);
    let api = Backend::start("api", &[]);
    let yaml = format!(
        "{}{}{}{}{}{}",
        services(shop.port(), api.port()),
        gateway(
            "edge",
            "  - port: {number: 8080, name: http, protocol: HTTP}\n    hosts: [\"*.example.com\", \"prod/api.example.org\"]"
        ),
        vs("shop", "default", "[shop.example.com]", "[edge]", "shop"),
        // A wildcard VirtualService host, bound from another namespace.
        vs(
            "wild",
            "prod",
            "[\"*.example.com\"]",
            "[default/edge]",
            "api"
        ),
        // `prod/api.example.org`: only prod's VirtualServices may bind it.
        // First in config order, so it would win if the server host let it bind.
        vs("thief", "default", "[api.example.org]", "[edge]", "shop"),
        vs("api", "prod", "[api.example.org]", "[default/edge]", "api"),
    );
    let mesh = mesh(&yaml);
    let gw = start(&mesh).await;
    let addr = gw.addr(8080);

    let got = get(addr, "shop.example.com", "/").await;
    assert_eq!(
        (got.status, got.backend.as_deref()),
        (StatusCode::OK, Some("shop"))
    );
    let got = get(addr, "other.example.com:8080", "/").await;
    assert_eq!(
        (got.status, got.backend.as_deref()),
        (StatusCode::OK, Some("api")),
        "{got:?}"
    );
    for _ in 0..5 {
        let got = get(addr, "api.example.org", "/").await;
        assert_eq!(
            got.backend.as_deref(),
            Some("api"),
            "only prod may bind api.example.org"
        );
    }
    // Hosts no server of the port has: 404 NR, nothing reaches a backend.
    let hits = shop.hits() + api.hits();
    for host in ["example.com", "a.example.net", "api.example.org.evil"] {
        let got = get(addr, host, "/").await;
        assert_eq!(got.status, StatusCode::NOT_FOUND, "{host}");
        assert_eq!(got.flags.as_deref(), Some("NR"), "{host}");
    }
    assert_eq!(shop.hits() + api.hits(), hits);
    // The mesh's own routes do not apply on the gateway: a service host is not a gateway host.
    let got = get(addr, "shop.default.svc.cluster.local", "/").await;
    assert_eq!(got.status, StatusCode::NOT_FOUND);
    gw.stop().await;
}

#[tokio::test]
async fn https_redirect_answers_301_to_https() {
    let shop = Backend::start("shop", &[]);
    let yaml = format!(
        "{}{}{}",
        services(shop.port(), shop.port()),
        gateway(
            "edge",
            "  - port: {number: 8080, name: http, protocol: HTTP}\n    hosts: [\"*.example.com\"]\n    tls: {httpsRedirect: true}\n  - port: {number: 8081, name: http-plain, protocol: HTTP}\n    hosts: [\"*.example.com\"]"
        ),
        vs("shop", "default", "[shop.example.com]", "[edge]", "shop"),
    );
    let mesh = mesh(&yaml);
    let gw = start(&mesh).await;
    let got = get(gw.addr(8080), "shop.example.com:8080", "/cart?id=7").await;
    assert_eq!(got.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(
        got.location.as_deref(),
        Some("https://shop.example.com/cart?id=7")
    );
    assert_eq!(shop.hits(), 0);
    // The same hosts on a port without httpsRedirect are served.
    let got = get(gw.addr(8081), "shop.example.com", "/").await;
    assert_eq!(
        (got.status, got.backend.as_deref()),
        (StatusCode::OK, Some("shop"))
    );
    gw.stop().await;
}

#[tokio::test]
async fn https_simple_terminates_tls_with_the_certificate_of_the_sni() {
    let shop = Backend::start("shop", &[]);
    let api = Backend::start("api", &[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = DevCa::new("cluster.local").expect("ca");
    let (shop_cert, api_cert) = (issue(&ca, "shop-gw"), issue(&ca, "api-gw"));
    let (sc, sk, _) = write_files(dir.path(), "shop", &shop_cert);
    let (ac, ak, _) = write_files(dir.path(), "api", &api_cert);
    let servers = format!(
        "  - port: {{number: 8443, name: https-shop, protocol: HTTPS}}\n    hosts: [shop.example.com]\n    tls: {{mode: SIMPLE, serverCertificate: {sc}, privateKey: {sk}}}\n  - port: {{number: 8443, name: https-api, protocol: HTTPS}}\n    hosts: [\"*.example.org\"]\n    tls: {{mode: SIMPLE, serverCertificate: {ac}, privateKey: {ak}}}"
    );
    let yaml = format!(
        "{}{}{}{}",
        services(shop.port(), api.port()),
        gateway("edge", &servers),
        vs("shop", "default", "[shop.example.com]", "[edge]", "shop"),
        vs("api", "prod", "[api.example.org]", "[default/edge]", "api"),
    );
    let mesh = mesh(&yaml);
    let gw = start(&mesh).await;
    let addr = gw.addr(8443);

    let tls = tls_connect(
        addr,
        "shop.example.com",
        client_config(&leaf(&shop_cert), None),
    )
    .await
    .expect("handshake with the shop certificate");
    let got = get_over(tls, "shop.example.com", "/")
        .await
        .expect("response");
    assert_eq!(
        (got.status, got.backend.as_deref()),
        (StatusCode::OK, Some("shop"))
    );

    let tls = tls_connect(
        addr,
        "api.example.org",
        client_config(&leaf(&api_cert), None),
    )
    .await
    .expect("handshake with the api certificate (wildcard server host)");
    let got = get_over(tls, "api.example.org", "/")
        .await
        .expect("response");
    assert_eq!(
        (got.status, got.backend.as_deref()),
        (StatusCode::OK, Some("api"))
    );

    // HTTP/2 by ALPN.
    let mut h2 = (*client_config(&leaf(&shop_cert), None)).clone();
    h2.alpn_protocols = vec![b"h2".to_vec()];
    let tls = tls_connect(addr, "shop.example.com", Arc::new(h2))
        .await
        .expect("h2 handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(tls),
    )
    .await
    .expect("h2");
    tokio::spawn(conn);
    let resp = send
        .send_request(
            Request::get("https://shop.example.com/h2")
                .body(Empty::<Bytes>::new())
                .expect("request"),
        )
        .await
        .expect("h2 response");
    assert_eq!(resp.status(), StatusCode::OK, "{resp:?}");
    assert_eq!(
        resp.headers()
            .get(BACKEND_HEADER.as_str())
            .and_then(|v| v.to_str().ok()),
        Some("shop")
    );

    // A client expecting the shop's certificate for api.example.org fails the handshake.
    let wrong = tls_connect(
        addr,
        "api.example.org",
        client_config(&leaf(&shop_cert), None),
    )
    .await;
    assert!(
        wrong.is_err(),
        "the api server must present the api certificate"
    );
    // An SNI no server has: no certificate, no handshake.
    let none = tls_connect(
        addr,
        "nope.example.net",
        client_config(&leaf(&shop_cert), None),
    )
    .await;
    assert!(none.is_err());
    // The Host must be one of the SNI's server's hosts.
    let tls = tls_connect(
        addr,
        "shop.example.com",
        client_config(&leaf(&shop_cert), None),
    )
    .await
    .expect("handshake");
    let got = get_over(tls, "api.example.org", "/")
        .await
        .expect("response");
    assert_eq!(got.status, StatusCode::NOT_FOUND);
    gw.stop().await;
}

#[tokio::test]
async fn https_mutual_requires_a_client_certificate_from_the_ca() {
    let shop = Backend::start("shop", &[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = DevCa::new("cluster.local").expect("ca");
    let server_cert = issue(&ca, "gw");
    let (c, k, ca_file) = write_files(dir.path(), "gw", &server_cert);
    let servers = format!(
        "  - port: {{number: 8443, name: https, protocol: HTTPS}}\n    hosts: [shop.example.com]\n    tls: {{mode: MUTUAL, serverCertificate: {c}, privateKey: {k}, caCertificates: {ca_file}}}"
    );
    let yaml = format!(
        "{}{}{}",
        services(shop.port(), shop.port()),
        gateway("edge", &servers),
        vs("shop", "default", "[shop.example.com]", "[edge]", "shop"),
    );
    let mesh = mesh(&yaml);
    let gw = start(&mesh).await;
    let addr = gw.addr(8443);
    let expected = leaf(&server_cert);

    let client = issue(&ca, "client");
    let tls = tls_connect(
        addr,
        "shop.example.com",
        client_config(&expected, Some(&client)),
    )
    .await
    .expect("handshake with a client certificate");
    let got = get_over(tls, "shop.example.com", "/")
        .await
        .expect("response");
    assert_eq!(
        (got.status, got.backend.as_deref()),
        (StatusCode::OK, Some("shop"))
    );

    // No client certificate, or one from another CA: refused (under TLS 1.3 the client
    // learns it at its first read, so the request fails either way).
    let other_ca = DevCa::new("cluster.local").expect("other ca");
    let stranger = issue(&other_ca, "client");
    for client in [None, Some(&stranger)] {
        let status =
            match tls_connect(addr, "shop.example.com", client_config(&expected, client)).await {
                Ok(tls) => get_over(tls, "shop.example.com", "/")
                    .await
                    .ok()
                    .map(|g| g.status),
                Err(_) => None,
            };
        assert_eq!(
            status, None,
            "a client without a certificate from the CA must not get through"
        );
    }
    assert_eq!(shop.hits(), 1);
    gw.stop().await;
}

/// A TLS server on loopback presenting `cert`, answering every connection with a fixed
/// HTTP/1.1 response naming itself.
async fn tls_backend(cert: &IssuedCert) -> SocketAddr {
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(cert.chain.clone(), PrivateKeyDer::clone_key(&cert.key))
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(
                        http::Response::builder()
                            .header("x-backend", "tls-backend")
                            .body(http_body_util::Full::new(Bytes::from_static(
                                b"passthrough",
                            )))
                            .expect("response"),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn passthrough_routes_by_sni_and_the_client_sees_the_backends_certificate() {
    let ca = DevCa::new("cluster.local").expect("ca");
    let backend_cert = issue(&ca, "backend");
    let backend = tls_backend(&backend_cert).await;
    let yaml = format!(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: secure, namespace: default}}
spec:
  hosts: [secure.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 443, name: tls, protocol: TLS}}]
  endpoints: [{{address: 127.0.0.1, ports: {{tls: {port}}}}}]
{gw}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: secure, namespace: default}}
spec:
  hosts: [secure.example.com]
  gateways: [edge]
  tls:
  - match:
    - sniHosts: [secure.example.com]
    route:
    - destination: {{host: secure, port: {{number: 443}}}}
"#,
        port = backend.port(),
        gw = gateway(
            "edge",
            "  - port: {number: 9443, name: tls, protocol: TLS}\n    hosts: [\"*.example.com\"]\n    tls: {mode: PASSTHROUGH}"
        ),
    );
    let mesh = mesh(&yaml);
    let gw = start(&mesh).await;
    let addr = gw.addr(9443);

    // The backend's certificate reaches the client: the gateway does not terminate.
    let tls = tls_connect(
        addr,
        "secure.example.com",
        client_config(&leaf(&backend_cert), None),
    )
    .await
    .expect("handshake with the backend's certificate");
    let got = get_over(tls, "secure.example.com", "/")
        .await
        .expect("response");
    assert_eq!(got.backend.as_deref(), Some("tls-backend"));
    assert_eq!(&got.body[..], b"passthrough");

    // An SNI the server admits but no tls route matches, one no server admits, and no TLS
    // at all: the connection is closed.
    for sni in ["other.example.com", "secure.example.org"] {
        let r = tls_connect(addr, sni, client_config(&leaf(&backend_cert), None)).await;
        assert!(r.is_err(), "{sni} must not reach the backend");
    }
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tcp.write_all(b"GET / HTTP/1.1\r\nhost: secure.example.com\r\n\r\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf))
        .await
        .expect("closed, not hanging")
        .unwrap_or(0);
    assert_eq!(n, 0, "plaintext gets no answer");
    gw.stop().await;
}

#[tokio::test]
async fn credential_name_is_refused_with_the_gateway_and_field_named() {
    let yaml = gateway(
        "edge",
        "  - port: {number: 8443, name: https, protocol: HTTPS}\n    hosts: [shop.example.com]\n    tls: {mode: SIMPLE, credentialName: shop-cert}",
    );
    let mesh = mesh(&yaml);
    let err = IngressGateway::new(&mesh).expect_err("credentialName cannot be served");
    let text = err.to_string();
    assert!(
        text.contains("credentialName") && text.contains("Kubernetes"),
        "{text}"
    );

    // A workload the selector does not pick has no gateway to serve.
    let other = Mesh::builder()
        .config_str("gateway.yaml", &yaml)
        .labels([("app", "web")])
        .build()
        .expect("mesh");
    let err = IngressGateway::new(&other).expect_err("no gateway selects it");
    assert!(err.to_string().contains("no Gateway selects"), "{err}");
}

#[tokio::test]
async fn the_gateway_follows_reloads_and_keeps_its_listener_plan_when_a_reload_cannot_be_served() {
    let shop = Backend::start("shop", &[]);
    let api = Backend::start("api", &[]);
    let config = |hosts: &str, tls: &str| {
        format!(
            "{}{}{}{}",
            services(shop.port(), api.port()),
            gateway(
                "edge",
                &format!(
                    "  - port: {{number: 8080, name: http, protocol: HTTP}}\n    hosts: {hosts}\n{tls}"
                )
            ),
            vs("shop", "default", "[shop.example.com]", "[edge]", "shop"),
            vs("api", "prod", "[api.example.org]", "[default/edge]", "api"),
        )
    };
    let mesh = mesh(&config("[shop.example.com]", ""));
    let gw = start(&mesh).await;
    let addr = gw.addr(8080);
    assert_eq!(
        get(addr, "api.example.org", "/").await.status,
        StatusCode::NOT_FOUND
    );

    // The reload adds a server host: the plan is rebuilt and the host is served.
    mesh.reload_from([tower_mesh::ConfigSource::yaml(
        "gateway.yaml",
        config("[shop.example.com, api.example.org]", ""),
    )])
    .await
    .expect("reload");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = get(addr, "api.example.org", "/").await;
        if got.backend.as_deref() == Some("api") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the reload never reached the gateway: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A reload the gateway cannot serve (a Kubernetes secret) is valid Istio, so the mesh
    // takes it; the gateway keeps its previous listener plan (no httpsRedirect from the new
    // config), while routes follow the snapshot (api.example.org is no longer a server host
    // in it, so no VirtualService binds it: 404).
    mesh.reload_from([tower_mesh::ConfigSource::yaml(
        "gateway.yaml",
        config(
            "[shop.example.com]",
            "    tls: {httpsRedirect: true}\n  - port: {number: 8443, name: https, protocol: HTTPS}\n    hosts: [shop.example.com]\n    tls: {mode: SIMPLE, credentialName: shop-cert}\n",
        ),
    )])
    .await
    .expect("the mesh accepts the config");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = get(addr, "shop.example.com", "/").await;
    assert_eq!(
        (got.status, got.backend.as_deref()),
        (StatusCode::OK, Some("shop")),
        "{got:?}"
    );
    let got = get(addr, "api.example.org", "/").await;
    assert_eq!(got.status, StatusCode::NOT_FOUND, "{got:?}");

    // A servable reload again: the redirect applies.
    mesh.reload_from([tower_mesh::ConfigSource::yaml(
        "gateway.yaml",
        config("[shop.example.com]", "    tls: {httpsRedirect: true}\n"),
    )])
    .await
    .expect("reload");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = get(addr, "shop.example.com", "/").await;
        if got.status == StatusCode::MOVED_PERMANENTLY {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no redirect after the reload: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gw.stop().await;
}

#[tokio::test]
async fn match_port_compares_the_gateway_port_the_request_came_in_on() {
    let shop = Backend::start("shop", &[]);
    let api = Backend::start("api", &[]);
    let yaml = format!(
        r#"{}{}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: by-port, namespace: default}}
spec:
  hosts: [shop.example.com]
  gateways: [edge]
  http:
  - match: [{{port: 8081}}]
    route:
    - destination: {{host: api.prod.svc.cluster.local}}
  - route:
    - destination: {{host: shop}}
"#,
        services(shop.port(), api.port()),
        gateway(
            "edge",
            "  - port: {number: 8080, name: http, protocol: HTTP}\n    hosts: [\"*.example.com\"]\n  - port: {number: 8081, name: http-alt, protocol: HTTP}\n    hosts: [\"*.example.com\"]"
        ),
    );
    let mesh = mesh(&yaml);
    let gw = start(&mesh).await;
    // The Host carries no port (and the listeners are on ephemeral ports): the Gateway port
    // decides.
    let got = get(gw.addr(8081), "shop.example.com", "/").await;
    assert_eq!(got.backend.as_deref(), Some("api"), "{got:?}");
    let got = get(gw.addr(8080), "shop.example.com", "/").await;
    assert_eq!(got.backend.as_deref(), Some("shop"), "{got:?}");
    gw.stop().await;
}

#[tokio::test]
async fn shutdown_lets_the_request_in_flight_finish_and_refuses_new_connections() {
    let shop = Backend::start("shop", &[]);
    let yaml = format!(
        "{}{}{}",
        services(shop.port(), shop.port()),
        gateway(
            "edge",
            "  - port: {number: 8080, name: http, protocol: HTTP}\n    hosts: [\"*.example.com\"]"
        ),
        vs("shop", "default", "[shop.example.com]", "[edge]", "shop"),
    );
    let mesh = mesh(&yaml);
    let gw = start(&mesh).await;
    let addr = gw.addr(8080);
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let slow = tokio::spawn(
        send.send_request(
            Request::get("/slow")
                .header("host", "shop.example.com")
                .header(crate::support::DELAY_CMD, "600")
                .body(Empty::<Bytes>::new())
                .expect("request"),
        ),
    );
    // Wait until the backend holds the request, then shut down.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while shop.in_flight() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the request never arrived"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    gw.stop().await;
    let resp = slow
        .await
        .expect("join")
        .expect("the in-flight request completes");
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the listener is closed after shutdown"
    );
}
