//! A minimal sidecar proxy from tower-mesh's parts: a hyper server whose every request goes
//! through a `MeshClient`, so traffic follows the Istio config it was started with.
//!
//! ```text
//! cargo run --example sidecar -- --self-test           # start demo backends, send 200 requests, exit
//! cargo run --example sidecar -- [CONFIG] [--listen 127.0.0.1:15001]
//! curl -H 'Host: my-app' http://127.0.0.1:15001/
//! ```
//!
//! `CONFIG` defaults to `examples/mesh` (the 80/20 split of `my-app` to endpoints on
//! 127.0.0.1:18081 and :18082). `--self-test` starts those two endpoints itself, proxies 200
//! requests through the sidecar with a plain hyper client, prints the split and stops. The
//! full proxy (Gateways, TLS, telemetry, graceful shutdown) is `tower-mesh proxy`, in a later
//! release.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tower::ServiceExt;
use tower_mesh::Mesh;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = "examples/mesh".to_string();
    let mut listen: SocketAddr = "127.0.0.1:15001".parse()?;
    let mut self_test = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--self-test" => self_test = true,
            "--listen" => listen = args.next().ok_or("--listen needs an address")?.parse()?,
            "-h" | "--help" => {
                println!("usage: sidecar [CONFIG] [--listen ADDR] [--self-test]");
                return Ok(());
            }
            other => config = other.to_string(),
        }
    }
    if self_test {
        listen = "127.0.0.1:0".parse()?;
    }

    let mesh = Mesh::builder()
        .namespace("default")
        .config_path(&config)
        .build()?;
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    println!(
        "sidecar: routing with {config} (version {}), listening on {addr}",
        mesh.snapshot().version()
    );
    let proxy = tokio::spawn(serve(listener, mesh));

    if self_test {
        let backends = [
            start_backend("v1", 18081).await?,
            start_backend("v2", 18082).await?,
        ];
        let split = send_through(addr, 200).await?;
        println!("through the sidecar, Host: my-app (200 requests):");
        for (who, n) in &split {
            println!("  {who:<28} {n:>4}");
        }
        for b in backends {
            b.abort();
        }
        proxy.abort();
        return Ok(());
    }
    proxy.await?;
    Ok(())
}

/// Accepts connections and serves each request through the mesh client.
async fn serve(listener: TcpListener, mesh: Mesh) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let client = mesh.client();
        tokio::spawn(async move {
            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                client.clone().oneshot(req)
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// Sends `n` requests with `Host: my-app` to the sidecar and counts who answered.
async fn send_through(
    sidecar: SocketAddr,
    n: usize,
) -> Result<BTreeMap<String, usize>, Box<dyn std::error::Error>> {
    let stream = tokio::net::TcpStream::connect(sidecar).await?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut split = BTreeMap::new();
    for _ in 0..n {
        send.ready().await?;
        let req = hyper::Request::get("/")
            .header("host", "my-app")
            .body(Empty::<Bytes>::new())?;
        let resp = send.send_request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        let who = if status.is_success() {
            String::from_utf8_lossy(&body).into_owned()
        } else {
            format!("{status}: {}", String::from_utf8_lossy(&body))
        };
        *split.entry(who).or_insert(0) += 1;
    }
    Ok(split)
}

/// A backend on 127.0.0.1:`port` answering `name`.
async fn start_backend(
    name: &'static str,
    port: u16,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = service_fn(move |_req| async move {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                        name.as_bytes(),
                    ))))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    }))
}
