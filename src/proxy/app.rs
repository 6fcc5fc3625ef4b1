//! The local application behind an inbound sidecar: Envoy's `inbound|<port>||` cluster, one
//! endpoint on the loopback interface.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response, Version};
use tower::Service;

use crate::body::MeshBody;
use crate::error::Error;
use crate::pool::{Pool, PoolKey, PoolSettings, TcpConnector, TlsPolicy, UpstreamProtocol};

/// Sends requests to the local application at one address, in plaintext, with the
/// downstream's protocol (Envoy's `USE_DOWNSTREAM_PROTOCOL`, as Istio's inbound clusters do):
/// HTTP/2 requests over an HTTP/2 (prior knowledge) connection, others over pooled HTTP/1.1
/// connections.
#[derive(Clone)]
pub struct LocalApp {
    addr: SocketAddr,
    http1: Arc<Pool>,
    http2: Arc<Pool>,
}

impl std::fmt::Debug for LocalApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalApp")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl LocalApp {
    /// The application listening on `addr` (usually `127.0.0.1:<port>`). Nothing connects
    /// until the first request.
    pub fn new(addr: SocketAddr) -> Self {
        let pool = |protocol| {
            let key = PoolKey {
                addr,
                tls: TlsPolicy::Plaintext,
                protocol,
                cluster: None,
            };
            Arc::new(Pool::new(
                key,
                PoolSettings::default(),
                Arc::new(TcpConnector::new()),
            ))
        };
        LocalApp {
            addr,
            http1: pool(UpstreamProtocol::Http1),
            http2: pool(UpstreamProtocol::Http2),
        }
    }

    /// The application's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// The future of [`LocalApp`].
pub type LocalAppFuture =
    Pin<Box<dyn Future<Output = Result<Response<MeshBody>, Error>> + Send + 'static>>;

impl Service<Request<MeshBody>> for LocalApp {
    type Response = Response<MeshBody>;
    type Error = Error;
    type Future = LocalAppFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<MeshBody>) -> Self::Future {
        let pool = if req.version() == Version::HTTP_2 {
            self.http2.clone()
        } else {
            self.http1.clone()
        };
        Box::pin(async move { pool.send(req).await })
    }
}
