//! Two axum services in one process that call each other over mutual TLS, with Istio's
//! security YAML: `cargo run --example axum_app`.
//!
//! * A development CA (`tower_mesh::tls::DevCa`) issues SPIFFE certificates for
//!   `spiffe://cluster.local/ns/default/sa/frontend` and `.../sa/backend`.
//! * **backend** requires mTLS (PeerAuthentication `STRICT`) and lets only the frontend's
//!   identity call `/hello` (AuthorizationPolicy `ALLOW`); everything else is 403.
//! * **frontend** serves `/call/{path}` and calls the backend through its `MeshClient`, which
//!   originates mTLS by itself (auto mTLS: the backend endpoint is labelled
//!   `security.istio.io/tlsMode: istio`).
//!
//! The example calls the frontend, prints what the backend saw and answered, shows a
//! plaintext call to the backend refused, and exits.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::get;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tower::{Layer, ServiceExt};
use tower_mesh::server::Server;
use tower_mesh::tls::{DevCa, IdentityManager, PeerIdentity, SpiffeId};
use tower_mesh::{ConfigSource, Mesh, MeshClient};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const BACKEND_POLICY: &str = r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec:
  mtls: {mode: STRICT}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: frontend-may-say-hello, namespace: default}
spec:
  selector: {matchLabels: {app: backend}}
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/default/sa/frontend"]}}]
    to: [{operation: {methods: [GET], paths: ["/hello"]}}]
"#;

fn frontend_config(backend: SocketAddr) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: backend, namespace: default}}
spec:
  hosts: [backend.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints:
  - address: 127.0.0.1
    ports: {{http: {port}}}
    serviceAccount: backend
    labels: {{app: backend, security.istio.io/tlsMode: istio}}
"#,
        port = backend.port()
    )
}

/// The backend's handler: says who called (the identity from the mTLS handshake).
async fn hello(peer: PeerIdentity) -> String {
    format!("hello, {}", peer.spiffe_id)
}

/// The frontend's handler: calls the backend's `/{path}` through the mesh.
async fn call(State(client): State<MeshClient>, Path(path): Path<String>) -> String {
    let req = Request::get(format!("http://backend/{path}"))
        .body(Empty::<Bytes>::new())
        .expect("a valid request");
    let resp = match client.oneshot(req).await {
        Ok(resp) => resp,
        Err(never) => match never {},
    };
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    format!("{} {}", status.as_u16(), String::from_utf8_lossy(&body))
}

/// Serves `app` behind `mesh.inbound()` on 127.0.0.1:0 until `stop` fires.
async fn start(mesh: &Mesh, app: Router) -> Result<(SocketAddr, oneshot::Sender<()>), BoxError> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let svc = mesh.inbound().layer(app);
    let server = Server::new(mesh).shutdown_grace(Duration::from_secs(2));
    tokio::spawn(server.serve_with_shutdown(listener, svc, async move {
        let _ = stopped.await;
    }));
    Ok((addr, stop))
}

/// A plaintext HTTP/1.1 GET (the example's own "user" outside the mesh).
async fn plain_get(addr: SocketAddr, path: &str) -> Result<String, BoxError> {
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = Request::get(path)
        .header(http::header::HOST, "frontend")
        .body(Empty::<Bytes>::new())?;
    let resp = sender.send_request(req).await?;
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

fn identity(ca: &DevCa, sa: &str) -> Result<IdentityManager, BoxError> {
    let id = SpiffeId::istio("cluster.local", "default", sa)?;
    let cert = ca.issue(&id, Duration::from_secs(3600))?;
    Ok(IdentityManager::from_identity(cert.identity()?)?)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let ca = DevCa::new("cluster.local")?;

    let backend_mesh = Mesh::builder()
        .namespace("default")
        .labels([("app", "backend")])
        .identity(identity(&ca, "backend")?)
        .config(ConfigSource::yaml("backend.yaml", BACKEND_POLICY))
        .build()?;
    let backend_app = Router::new()
        .route("/hello", get(hello))
        .route("/admin", get(|| async { "the admin page" }));
    let (backend, stop_backend) = start(&backend_mesh, backend_app).await?;

    let frontend_mesh = Mesh::builder()
        .namespace("default")
        .labels([("app", "frontend")])
        .identity(identity(&ca, "frontend")?)
        .config(ConfigSource::yaml(
            "frontend.yaml",
            frontend_config(backend),
        ))
        .build()?;
    let frontend_app = Router::new()
        .route("/call/{*path}", get(call))
        .with_state(frontend_mesh.client());
    let (frontend, stop_frontend) = start(&frontend_mesh, frontend_app).await?;

    println!("backend  on {backend}  (PeerAuthentication STRICT, ALLOW frontend -> GET /hello)");
    println!("frontend on {frontend} (PERMISSIVE by default; calls the backend over mTLS)\n");
    for path in ["hello", "admin"] {
        let answer = plain_get(frontend, &format!("/call/{path}")).await?;
        println!("frontend -> backend GET /{path:<6} => {answer}");
    }
    let direct = plain_get(backend, "/hello").await;
    match direct {
        Ok(body) => println!("plaintext straight to the backend      => served?! {body}"),
        Err(e) => println!("plaintext straight to the backend      => refused ({e})"),
    }

    let _ = stop_frontend.send(());
    let _ = stop_backend.send(());
    tokio::time::sleep(Duration::from_millis(50)).await;
    Ok(())
}
