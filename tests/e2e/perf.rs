//! The MeshClient's fused hot path keeps every behaviour of the layers it folds together:
//! here, the destination's `http2MaxRequests` count lives until the response *body* ends
//! (the pool's response body carries it), not only until the headers.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Empty};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tower::ServiceExt;
use tower_mesh::Mesh;
use tower_mesh::body::MeshBody;

type BodySender = mpsc::Sender<Bytes>;

/// A response body fed chunk by chunk by the test; it ends when its sender is dropped.
struct Fed(mpsc::Receiver<Bytes>);

impl http_body::Body for Fed {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
    }
}

/// A server whose responses send their headers at once and their body when the test says:
/// each response's body sender goes out on `senders`.
async fn streaming_server(senders: mpsc::UnboundedSender<BodySender>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let senders = senders.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |_req| {
                    let (tx, rx) = mpsc::channel(1);
                    let _ = senders.send(tx);
                    async move { Ok::<_, Infallible>(Response::new(Fed(rx))) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

fn mesh(port: u16) -> Mesh {
    let yaml = format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: my-app, namespace: default}}
spec:
  hosts: [my-app.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {port}}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: my-app, namespace: default}}
spec:
  host: my-app
  trafficPolicy:
    connectionPool: {{http: {{http2MaxRequests: 1}}}}
"#
    );
    Mesh::builder()
        .namespace("default")
        .config_str("perf.yaml", yaml)
        .build()
        .expect("mesh")
}

async fn get(mesh: &Mesh) -> Response<MeshBody> {
    let req = Request::get("http://my-app/")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let call = mesh.client().oneshot(req);
    match tokio::time::timeout(Duration::from_secs(10), call).await {
        Ok(Ok(resp)) => resp,
        Ok(Err(never)) => match never {},
        Err(_) => panic!("no response headers within 10 s"),
    }
}

/// Ends a streaming response: one chunk, then the end.
async fn finish(tx: BodySender, resp: Response<MeshBody>) -> Bytes {
    tx.send(Bytes::from_static(b"done"))
        .await
        .expect("send the body");
    drop(tx);
    tokio::time::timeout(Duration::from_secs(10), resp.into_body().collect())
        .await
        .expect("the body within 10 s")
        .expect("the body")
        .to_bytes()
}

#[tokio::test]
async fn http2_max_requests_counts_a_request_until_its_response_body_ends() {
    let (tx, mut senders) = mpsc::unbounded_channel();
    let addr = streaming_server(tx).await;
    let mesh = mesh(addr.port());

    let first = get(&mesh).await;
    assert_eq!(first.status(), StatusCode::OK);
    let first_tx = senders.recv().await.expect("the first body's sender");

    // Headers are in, the body is not over: the request still counts.
    let second = get(&mesh).await;
    let flag = second
        .headers()
        .get(tower_mesh::error::FLAG_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    assert_eq!(
        (second.status(), flag.as_deref()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("UO")),
        "a second request while the first response's body streams"
    );

    // The body ends: the count is released.
    assert_eq!(&finish(first_tx, first).await[..], b"done");
    let third = get(&mesh).await;
    assert_eq!(third.status(), StatusCode::OK, "after the first body ended");
    let third_tx = senders.recv().await.expect("the third body's sender");
    assert_eq!(&finish(third_tx, third).await[..], b"done");
}
