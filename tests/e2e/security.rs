//! Security end to end: two workloads with SPIFFE certificates from a development CA, mutual
//! TLS per PeerAuthentication, auto mTLS from the MeshClient, AuthorizationPolicy and
//! RequestAuthentication through `mesh.inbound()`, rotation under traffic. Real TLS
//! handshakes on 127.0.0.1.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tower::{Layer, ServiceExt};
use tower_mesh::server::Server;
use tower_mesh::tls::{DevCa, IdentityManager, IdentitySettings, PeerIdentity, SpiffeId};
use tower_mesh::{ConfigSource, Mesh, MeshClient};

/// The server's handler: who called.
async fn whoami(peer: Option<PeerIdentity>) -> String {
    peer.map_or_else(|| "anonymous".to_string(), |p| p.principal().to_string())
}

fn app() -> Router {
    Router::new()
        .route("/whoami", get(whoami))
        .route("/public/{*rest}", get(whoami))
        .route("/admin", get(|| async { "admin" }))
        .route("/jwt", get(|| async { "jwt ok" }))
}

fn id(sa: &str) -> SpiffeId {
    SpiffeId::istio("cluster.local", "default", sa).expect("valid id")
}

fn identity(ca: &DevCa, sa: &str) -> IdentityManager {
    let cert = ca.issue(&id(sa), Duration::from_secs(3600)).expect("issue");
    IdentityManager::from_identity(cert.identity().expect("identity")).expect("manager")
}

/// A running inbound workload `server` (namespace default) with `policies` (YAML).
struct Workload {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    _mesh: Mesh,
}

impl Drop for Workload {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn start_server(identity: Option<IdentityManager>, policies: &str) -> Workload {
    let mut builder = Mesh::builder()
        .namespace("default")
        .labels([("app", "server")]);
    if !policies.is_empty() {
        builder = builder.config(ConfigSource::yaml("policies.yaml", policies.to_string()));
    }
    if let Some(id) = identity {
        builder = builder.identity(id);
    }
    let mesh = builder.build().expect("server mesh");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let svc = mesh.inbound().layer(app());
    tokio::spawn(
        Server::new(&mesh)
            .shutdown_grace(Duration::from_secs(1))
            .serve_with_shutdown(listener, svc, async move {
                let _ = stopped.await;
            }),
    );
    Workload {
        addr,
        stop: Some(stop),
        _mesh: mesh,
    }
}

/// A client workload whose mesh knows `server` at `addr` (service account `server`, labelled
/// for auto mTLS), plus `extra` YAML.
fn client_mesh(identity: Option<IdentityManager>, addr: SocketAddr, extra: &str) -> Mesh {
    let se = format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: server, namespace: default}}\nspec:\n  hosts: [server.default.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  endpoints:\n  - address: 127.0.0.1\n    ports: {{http: {}}}\n    serviceAccount: server\n    labels: {{app: server, security.istio.io/tlsMode: istio}}\n{extra}",
        addr.port()
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

async fn call(
    client: &MeshClient,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, String, Option<String>) {
    let mut req = Request::get(format!("http://server{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Empty::<Bytes>::new()).expect("request");
    let resp = tokio::time::timeout(Duration::from_secs(10), client.clone().oneshot(req))
        .await
        .expect("the call hung")
        .expect("infallible");
    let status = resp.status();
    let flag = resp
        .headers()
        .get(tower_mesh::error::FLAG_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    (status, String::from_utf8_lossy(&body).into_owned(), flag)
}

const STRICT: &str = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: default}\nspec:\n  mtls: {mode: STRICT}\n";
const PERMISSIVE: &str = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: default}\nspec:\n  mtls: {mode: PERMISSIVE}\n";

#[tokio::test]
async fn mutual_tls_between_two_workloads_and_the_handler_sees_the_callers_spiffe_id() {
    let ca = DevCa::new("cluster.local").expect("ca");
    let server = start_server(Some(identity(&ca, "server")), STRICT).await;
    let client = client_mesh(Some(identity(&ca, "client")), server.addr, "");
    let (status, body, _) = call(&client.client(), "/whoami", &[]).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "cluster.local/ns/default/sa/client")
    );
}

#[tokio::test]
async fn strict_refuses_plaintext_and_permissive_serves_both() {
    let ca = DevCa::new("cluster.local").expect("ca");
    // STRICT: a client without identity talks plaintext (no auto mTLS) and is refused.
    let strict = start_server(Some(identity(&ca, "server")), STRICT).await;
    let plain = client_mesh(None, strict.addr, "");
    let (status, _, flag) = call(&plain.client(), "/whoami", &[]).await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "plaintext to STRICT: {status}"
    );
    assert!(flag.is_some(), "no response flag on the refused call");

    // PERMISSIVE: the plaintext client is served (anonymous), the mTLS client with its id.
    let permissive = start_server(Some(identity(&ca, "server")), PERMISSIVE).await;
    let plain = client_mesh(None, permissive.addr, "");
    let (status, body, _) = call(&plain.client(), "/whoami", &[]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "anonymous"));
    let mtls = client_mesh(Some(identity(&ca, "client")), permissive.addr, "");
    let (status, body, _) = call(&mtls.client(), "/whoami", &[]).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "cluster.local/ns/default/sa/client")
    );
}

#[tokio::test]
async fn handshakes_fail_for_another_ca_another_trust_domain_expired_or_the_wrong_server_id() {
    let ca = DevCa::new("cluster.local").expect("ca");
    let server = start_server(Some(identity(&ca, "server")), STRICT).await;

    // A client certificate from another CA (same trust-domain name, other key).
    let other_ca = DevCa::new("cluster.local").expect("other ca");
    let client = client_mesh(Some(identity(&other_ca, "client")), server.addr, "");
    let (status, _, _) = call(&client.client(), "/whoami", &[]).await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "another CA was accepted"
    );

    // Another trust domain.
    let foreign = DevCa::new("example.org").expect("foreign ca");
    let cert = foreign
        .issue(
            &SpiffeId::istio("example.org", "default", "client").expect("id"),
            Duration::from_secs(3600),
        )
        .expect("issue");
    let manager = IdentityManager::from_identity(cert.identity().expect("identity")).expect("m");
    let client = client_mesh(Some(manager), server.addr, "");
    let (status, _, _) = call(&client.client(), "/whoami", &[]).await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "another trust domain was accepted"
    );

    // The server is not who the DestinationRule expects.
    let dr = "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: server, namespace: default}\nspec:\n  host: server.default.svc.cluster.local\n  trafficPolicy:\n    tls: {mode: ISTIO_MUTUAL, subjectAltNames: [\"spiffe://cluster.local/ns/default/sa/somebody-else\"]}\n";
    let client = client_mesh(Some(identity(&ca, "client")), server.addr, dr);
    let (status, body, flag) = call(&client.client(), "/whoami", &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        flag.as_deref().is_some_and(|f| f.contains("UF")),
        "{flag:?}: {body}"
    );
    assert!(
        body.contains("is not one of"),
        "the error does not say why: {body}"
    );

    // The right one passes with the same rule shape.
    let dr_ok = dr.replace("somebody-else", "server");
    let client = client_mesh(Some(identity(&ca, "client")), server.addr, &dr_ok);
    let (status, body, _) = call(&client.client(), "/whoami", &[]).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "cluster.local/ns/default/sa/client")
    );
}

#[tokio::test]
async fn an_expired_client_certificate_is_refused() {
    let ca = DevCa::new("cluster.local").expect("ca");
    let server = start_server(Some(identity(&ca, "server")), STRICT).await;
    let now = std::time::SystemTime::now();
    let expired = ca
        .issue_between(
            &id("client"),
            now - Duration::from_secs(7200),
            now - Duration::from_secs(3600),
        )
        .expect("issue");
    assert!(
        IdentityManager::from_identity(expired.identity().expect("identity")).is_err(),
        "an expired identity loads"
    );
    // A certificate valid for one more second: served now, refused once it has expired.
    let short = ca
        .issue_between(
            &id("client"),
            now - Duration::from_secs(60),
            now + Duration::from_secs(1),
        )
        .expect("issue");
    let manager = IdentityManager::from_identity(short.identity().expect("identity")).expect("m");
    let client = client_mesh(Some(manager.clone()), server.addr, "");
    assert_eq!(
        call(&client.client(), "/whoami", &[]).await.0,
        StatusCode::OK
    );
    // Certificate times have whole seconds: wait until `notAfter` has surely passed.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // A new client mesh opens a new connection, presenting the now expired certificate.
    let late = client_mesh(Some(manager), server.addr, "");
    let (status, body, _) = call(&late.client(), "/whoami", &[]).await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "an expired certificate was accepted: {body}"
    );
}

#[tokio::test]
async fn authorization_policy_allows_public_denies_admin_even_through_dot_dot() {
    let ca = DevCa::new("cluster.local").expect("ca");
    let policies = format!(
        "{STRICT}---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: allow-public, namespace: default}}\nspec:\n  selector: {{matchLabels: {{app: server}}}}\n  action: ALLOW\n  rules:\n  - from: [{{source: {{principals: [cluster.local/ns/default/sa/client]}}}}]\n    to: [{{operation: {{paths: [\"/public/*\", \"/whoami\"]}}}}]\n---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: deny-admin, namespace: default}}\nspec:\n  action: DENY\n  rules:\n  - to: [{{operation: {{paths: [\"/admin*\"]}}}}]\n"
    );
    let server = start_server(Some(identity(&ca, "server")), &policies).await;
    let client = client_mesh(Some(identity(&ca, "client")), server.addr, "").client();
    assert_eq!(call(&client, "/public/x", &[]).await.0, StatusCode::OK);
    let (status, body, _) = call(&client, "/admin", &[]).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::FORBIDDEN, "RBAC: access denied")
    );
    // The client normalises too, but send the raw form to the server directly as well.
    let (status, _, _) = call(&client, "/public/../admin", &[]).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "/public/../admin got through"
    );
    // Another caller is not allowed anywhere (ALLOW with no match denies).
    let other = client_mesh(Some(identity(&ca, "intruder")), server.addr, "").client();
    assert_eq!(
        call(&other, "/public/x", &[]).await.0,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn certificate_rotation_under_traffic_fails_no_request() {
    let ca = DevCa::new("cluster.local").expect("ca");
    let dir = tempfile::tempdir().expect("tempdir");
    let first = ca
        .issue(&id("server"), Duration::from_secs(3600))
        .expect("issue");
    let files = first.write_pem_files(dir.path()).expect("write");
    let manager = IdentityManager::new(
        files,
        IdentitySettings {
            refresh: Duration::from_millis(50),
            ..IdentitySettings::default()
        },
    )
    .expect("manager");
    let server = start_server(Some(manager.clone()), STRICT).await;
    let mut rotations = manager.subscribe();
    let client = client_mesh(Some(identity(&ca, "client")), server.addr, "").client();
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let driver = {
        let (client, stop, ok, failed) = (client.clone(), stop.clone(), ok.clone(), failed.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) && n < 20_000 {
                n += 1;
                let (status, _, _) = call(&client, "/whoami", &[]).await;
                if status == StatusCode::OK {
                    ok.fetch_add(1, Ordering::SeqCst);
                } else {
                    failed.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = ca
        .issue(&id("server"), Duration::from_secs(7200))
        .expect("issue");
    second.write_pem_files(dir.path()).expect("rewrite");
    let rotated = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(tower_mesh::tls::IdentityEvent::Rotated { serial, .. }) =
                rotations.recv().await
            {
                return serial;
            }
        }
    })
    .await
    .expect("no rotation within 10 s");
    // A fresh client (new handshake) now sees the new certificate; the old one keeps working.
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    driver.await.expect("driver");
    assert!(ok.load(Ordering::SeqCst) > 0);
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "requests failed during rotation"
    );
    assert_eq!(manager.current().serial(), rotated.as_ref());
    let fresh = client_mesh(Some(identity(&ca, "client")), server.addr, "").client();
    assert_eq!(call(&fresh, "/whoami", &[]).await.0, StatusCode::OK);
}

// ---- RequestAuthentication ------------------------------------------------------------------

struct Signer {
    key: jsonwebtoken::EncodingKey,
    jwk: serde_json::Value,
}

impl Signer {
    fn es256() -> Signer {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("keygen");
        let key = jsonwebtoken::EncodingKey::from_ec_der(&kp.serialize_der());
        let mut jwk =
            jsonwebtoken::jwk::Jwk::from_encoding_key(&key, jsonwebtoken::Algorithm::ES256)
                .expect("public JWK");
        jwk.common.key_id = Some("k1".into());
        Signer {
            key,
            jwk: serde_json::to_value(jwk).expect("JWK"),
        }
    }

    fn sign(&self, claims: serde_json::Value) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some("k1".into());
        jsonwebtoken::encode(&header, &claims, &self.key).expect("signs")
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
}

#[tokio::test]
async fn jwt_valid_expired_wrong_issuer_audience_signature_and_missing_tokens() {
    const ISS: &str = "https://issuer.example";
    let signer = Signer::es256();
    let jwks = serde_json::json!({"keys": [signer.jwk.clone()]}).to_string();
    let policies = |presence: &str| {
        format!(
            "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: jwt, namespace: default}}\nspec:\n  jwtRules:\n  - issuer: {ISS}\n    audiences: [server]\n    jwks: '{jwks}'\n    {presence}\n---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: require-jwt, namespace: default}}\nspec:\n  action: ALLOW\n  rules:\n  - to: [{{operation: {{paths: [/jwt]}}}}]\n    from: [{{source: {{requestPrincipals: [\"*\"]}}}}]\n  - to: [{{operation: {{paths: [/whoami]}}}}]\n"
        )
    };
    let server = start_server(None, &policies("")).await;
    let mut client = crate::support::client::Client::http1(server.addr)
        .await
        .expect("client");
    let token = |claims: serde_json::Value| format!("Bearer {}", signer.sign(claims));
    let good =
        serde_json::json!({"iss": ISS, "sub": "alice", "aud": "server", "exp": unix_now() + 600});
    let mut get = async |path: &str, auth: Option<String>| {
        let headers: Vec<(&str, &str)> = match &auth {
            Some(a) => vec![("authorization", a.as_str())],
            None => vec![],
        };
        let reply = client.get(path, &headers).await.expect("reply");
        (
            reply.status,
            String::from_utf8_lossy(&reply.body).into_owned(),
        )
    };

    assert_eq!(
        get("/jwt", Some(token(good.clone()))).await,
        (StatusCode::OK, "jwt ok".into())
    );
    let mut expired = good.clone();
    expired["exp"] = (unix_now() - 600).into();
    assert_eq!(
        get("/jwt", Some(token(expired))).await,
        (StatusCode::UNAUTHORIZED, "Jwt is expired".into())
    );
    let mut wrong_iss = good.clone();
    wrong_iss["iss"] = "https://other.example".into();
    assert_eq!(
        get("/jwt", Some(token(wrong_iss))).await.0,
        StatusCode::UNAUTHORIZED
    );
    let mut wrong_aud = good.clone();
    wrong_aud["aud"] = "somebody-else".into();
    assert_eq!(
        get("/jwt", Some(token(wrong_aud))).await,
        (
            StatusCode::UNAUTHORIZED,
            "Audiences in Jwt are not allowed".into()
        )
    );
    let forged = format!("Bearer {}", Signer::es256().sign(good.clone()));
    assert_eq!(
        get("/jwt", Some(forged)).await,
        (StatusCode::UNAUTHORIZED, "Jwt verification fails".into())
    );
    // Missing: accepted by RequestAuthentication; the AuthorizationPolicy requiring a request
    // principal denies /jwt, and /whoami (no requirement) is served.
    assert_eq!(
        get("/jwt", None).await,
        (StatusCode::FORBIDDEN, "RBAC: access denied".into())
    );
    assert_eq!(
        get("/whoami", None).await,
        (StatusCode::OK, "anonymous".into())
    );

    // With `presence: REQUIRED` a missing token is 401 everywhere.
    let required = start_server(None, &policies("presence: REQUIRED")).await;
    let mut client = crate::support::client::Client::http1(required.addr)
        .await
        .expect("client");
    let reply = client.get("/whoami", &[]).await.expect("reply");
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{reply:?}");
    let auth = token(good);
    let reply = client
        .get("/whoami", &[("authorization", auth.as_str())])
        .await
        .expect("reply");
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn jwks_uri_keys_are_fetched_through_the_mesh() {
    const ISS: &str = "https://issuer.example";
    let signer = Signer::es256();
    let jwks = serde_json::json!({"keys": [signer.jwk.clone()]}).to_string();
    let fetched = Arc::new(AtomicUsize::new(0));
    // The key server: an axum app on loopback, known to the mesh by a ServiceEntry.
    let keys_app = {
        let fetched = fetched.clone();
        Router::new().route(
            "/keys",
            get(move || {
                fetched.fetch_add(1, Ordering::SeqCst);
                let jwks = jwks.clone();
                async move { jwks }
            }),
        )
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let keys_addr = listener.local_addr().expect("addr");
    let (stop_keys, keys_stopped) = oneshot::channel::<()>();
    tokio::spawn(
        Server::standalone().serve_with_shutdown(listener, keys_app, async move {
            let _ = keys_stopped.await;
        }),
    );
    let policies = format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: keys, namespace: default}}\nspec:\n  hosts: [keys.example]\n  location: MESH_EXTERNAL\n  resolution: STATIC\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  endpoints: [{{address: 127.0.0.1, ports: {{http: {}}}}}]\n---\napiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: jwt, namespace: default}}\nspec:\n  jwtRules:\n  - issuer: {ISS}\n    jwksUri: http://keys.example/keys\n",
        keys_addr.port()
    );
    let server = start_server(None, &policies).await;
    let mut client = crate::support::client::Client::http1(server.addr)
        .await
        .expect("client");
    let good = serde_json::json!({"iss": ISS, "sub": "alice", "exp": unix_now() + 600});
    let auth = format!("Bearer {}", signer.sign(good));
    let mut status = StatusCode::INTERNAL_SERVER_ERROR;
    // The first token may arrive before the keys: then it fails with "Jwks remote fetch is
    // failed" until the fetch lands.
    for _ in 0..50 {
        let reply = client
            .get("/whoami", &[("authorization", auth.as_str())])
            .await
            .expect("reply");
        status = reply.status;
        if status == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        status,
        StatusCode::OK,
        "a token signed with the remote keys was refused"
    );
    assert!(
        fetched.load(Ordering::SeqCst) >= 1,
        "the key server was never asked"
    );
    let forged = format!(
        "Bearer {}",
        Signer::es256().sign(serde_json::json!({"iss": ISS, "sub": "x", "exp": unix_now() + 600}))
    );
    let reply = client
        .get("/whoami", &[("authorization", forged.as_str())])
        .await
        .expect("reply");
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let _ = stop_keys.send(());
}

// ---- telemetry ------------------------------------------------------------------------------

#[tokio::test]
async fn inbound_requests_and_denials_are_counted_with_istio_labels() {
    let ca = DevCa::new("cluster.local").expect("ca");
    let policy = format!(
        "{STRICT}---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: deny-admin, namespace: default}}\nspec:\n  action: DENY\n  rules:\n  - to: [{{operation: {{paths: [/admin]}}}}]\n"
    );
    let mut registry = prometheus_client::registry::Registry::default();
    let mesh = Mesh::builder()
        .namespace("default")
        .labels([("app", "server")])
        .identity(identity(&ca, "server"))
        .config(ConfigSource::yaml("p.yaml", policy))
        .metrics(&mut registry)
        .build()
        .expect("server mesh");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let svc = mesh.inbound().layer(app());
    tokio::spawn(
        Server::new(&mesh).serve_with_shutdown(listener, svc, async move {
            let _ = stopped.await;
        }),
    );
    let client = client_mesh(Some(identity(&ca, "client")), addr, "").client();
    for _ in 0..3 {
        assert_eq!(call(&client, "/whoami", &[]).await.0, StatusCode::OK);
    }
    assert_eq!(call(&client, "/admin", &[]).await.0, StatusCode::FORBIDDEN);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
    let line = |code: &str| {
        text.lines()
            .find(|l| {
                l.starts_with("istio_requests_total{")
                    && l.contains(&format!("response_code=\"{code}\""))
            })
            .map(str::to_string)
    };
    let ok = line("200").unwrap_or_else(|| panic!("no 200 series in:\n{text}"));
    assert!(ok.ends_with(" 3"), "{ok}");
    for label in [
        "reporter=\"destination\"",
        "source_principal=\"spiffe://cluster.local/ns/default/sa/client\"",
        "source_workload_namespace=\"default\"",
        "destination_service=\"server\"",
        "destination_workload=\"server\"",
        "destination_principal=\"spiffe://cluster.local/ns/default/sa/server\"",
        "connection_security_policy=\"mutual_tls\"",
        "request_protocol=\"http\"",
        "response_flags=\"-\"",
    ] {
        assert!(ok.contains(label), "{label} missing in {ok}");
    }
    let denied = line("403").unwrap_or_else(|| panic!("the 403 was not counted:\n{text}"));
    assert!(denied.ends_with(" 1"), "{denied}");
    assert!(
        text.contains("istio_request_duration_milliseconds_bucket{"),
        "no duration histogram:\n{text}"
    );
    let _ = stop.send(());
}

#[tokio::test]
async fn a_certificate_close_to_expiry_is_reported_as_a_mesh_event() {
    let ca = DevCa::new("cluster.local").expect("ca");
    let now = std::time::SystemTime::now();
    // 65 minutes of lifetime, 5 left: under the warning threshold (a fifth of the lifetime).
    let cert = ca
        .issue_between(
            &id("server"),
            now - Duration::from_secs(3600),
            now + Duration::from_secs(300),
        )
        .expect("issue");
    let manager = IdentityManager::from_identity(cert.identity().expect("identity")).expect("m");
    let mesh = Mesh::builder().identity(manager).build().expect("mesh");
    let mut events = mesh.subscribe();
    let event = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.recv().await {
                Ok(tower_mesh::MeshEvent::Identity(tower_mesh::tls::IdentityEvent::Expiring(
                    w,
                ))) => {
                    return w;
                }
                Ok(_) => {}
                Err(e) => panic!("event stream: {e}"),
            }
        }
    })
    .await
    .expect("no expiry warning within 10 s");
    assert_eq!(event.spiffe_id, id("server"));
    assert!(event.remaining <= Duration::from_secs(300), "{event:?}");
}

// ---- TLS origination to servers outside the mesh ---------------------------------------------

async fn get_uri(client: &MeshClient, uri: &str) -> (StatusCode, String) {
    let req = Request::get(uri)
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = tokio::time::timeout(Duration::from_secs(10), client.clone().oneshot(req))
        .await
        .expect("the call hung")
        .expect("infallible");
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn https_uris_and_destination_rule_simple_tls_are_originated_and_verified() {
    let ca = DevCa::new("cluster.local").expect("ca");
    let server_id = identity(&ca, "server");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let tls = server_id.server_config(tower_mesh::tls::ClientAuth::Optional);
    let selector: tower_mesh::server::TlsSelector =
        Arc::new(move |_| tower_mesh::server::InboundTls::Tls(tls.clone()));
    tokio::spawn(Server::standalone().tls(selector).serve_with_shutdown(
        listener,
        app(),
        async move {
            let _ = stopped.await;
        },
    ));

    // An https URI to an unknown host: TLS is originated and the server verified against the
    // system's root certificates, which do not hold the development CA.
    let plain_mesh = Mesh::builder().build().expect("mesh");
    let (status, body) = get_uri(
        &plain_mesh.client(),
        &format!("https://127.0.0.1:{}/whoami", addr.port()),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body.contains("TLS error") && body.contains("certificate"),
        "{body}"
    );

    // A DestinationRule SIMPLE with the CA as caCertificates and the server's URI SAN.
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.root_pem()).expect("write ca");
    let config = format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: secure, namespace: default}}\nspec:\n  hosts: [secure.example]\n  location: MESH_EXTERNAL\n  resolution: STATIC\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  endpoints: [{{address: 127.0.0.1, ports: {{http: {port}}}}}]\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: secure, namespace: default}}\nspec:\n  host: secure.example\n  trafficPolicy:\n    tls: {{mode: SIMPLE, caCertificates: {ca}, subjectAltNames: [\"spiffe://cluster.local/ns/default/sa/server\"]}}\n",
        port = addr.port(),
        ca = ca_file.display()
    );
    let mesh = Mesh::builder()
        .config(ConfigSource::yaml("secure.yaml", config))
        .build()
        .expect("mesh");
    let (status, body) = get_uri(&mesh.client(), "http://secure.example/whoami").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "anonymous"));
    let _ = stop.send(());
}
