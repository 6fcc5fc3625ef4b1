//! [`MeshClient`]: call other services through the mesh.
//!
//! `mesh.client()` is a cloneable `tower::Service<http::Request<B>>` for any body `B` of
//! [`Bytes`]: it routes each request by its authority with [`RouteLayer`] and sends it to an
//! endpoint of the chosen destination through [`Upstream`], over the mesh's per-endpoint
//! connection pools. Requests take absolute URIs (`http://reviews:9080/ratings`) or an
//! origin-form URI with a `Host` header.
//!
//! `poll_ready` is always ready: the destination is known only in `call`, so overload is
//! answered there (as a 503 with a response flag, like every mesh-made answer). The error
//! type is [`Infallible`]: what fails is an HTTP response, as Envoy's answers are, so a
//! caller handles one thing. It serves as the transport of a tonic client
//! (`tonic::client::Grpc::new(mesh.client())`), gRPC callers getting trailers-only
//! `grpc-status` answers from the mesh.
//!
//! ```no_run
//! # async fn demo(mesh: tower_mesh::Mesh) -> Result<(), Box<dyn std::error::Error>> {
//! use tower::ServiceExt;
//! let req = http::Request::get("http://my-app/hello").body(http_body_util::Empty::<bytes::Bytes>::new())?;
//! let resp = mesh.client().oneshot(req).await?;
//! println!("{}", resp.status());
//! # Ok(()) }
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tower::{Layer, Service};

use crate::body::{self, MeshBody};
use crate::error::{BoxError, Error, ResetReason};
use crate::mesh::Mesh;
use crate::pool::{PoolKey, PoolSettings, TlsPolicy, UpstreamProtocol};
use crate::route::layer::{RouteDecision, RouteFuture, RouteLayer, RouteService};
use crate::snapshot::{ClusterPolicy, Target};

/// The mesh's outbound client: [`RouteLayer`] over [`Upstream`] ([module docs](self)).
#[derive(Clone, Debug)]
pub struct MeshClient {
    inner: RouteService<Upstream>,
}

impl MeshClient {
    /// A client of `mesh` (same as [`Mesh::client`]).
    pub fn new(mesh: Mesh) -> Self {
        MeshClient {
            inner: RouteLayer::new(mesh.clone()).layer(Upstream::new(mesh)),
        }
    }
}

impl<B> Service<Request<B>> for MeshClient
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<MeshBody>;
    type Error = Infallible;
    type Future = RouteFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        self.inner.call(req.map(body::boxed))
    }
}

/// Sends a routed request to an endpoint of its destination: the innermost service of the
/// outbound stack.
///
/// It reads the [`RouteDecision`] the router left in the request's extensions; for a cluster
/// it chooses an endpoint of the subset (round-robin for now; DestinationRule
/// `loadBalancer` comes with the resilience layers) and sends over that endpoint's pool; for a
/// passthrough it resolves the host and sends there. Errors: [`Error::NoHealthyUpstream`]
/// (no endpoint), [`Error::UpstreamReset`] (connection or stream failures).
#[derive(Clone, Debug)]
pub struct Upstream {
    mesh: Mesh,
}

impl Upstream {
    /// The upstream sender of `mesh`.
    pub fn new(mesh: Mesh) -> Self {
        Upstream { mesh }
    }
}

/// The future of [`Upstream`].
pub type UpstreamFuture = Pin<Box<dyn Future<Output = Result<Response<MeshBody>, Error>> + Send>>;

impl Service<Request<MeshBody>> for Upstream {
    type Response = Response<MeshBody>;
    type Error = Error;
    type Future = UpstreamFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<MeshBody>) -> Self::Future {
        let Some(target) = req
            .extensions()
            .get::<RouteDecision>()
            .map(|d| d.target().clone())
        else {
            return Box::pin(async {
                Err(Error::Other(
                    "Upstream needs a RouteDecision in the request extensions: put RouteLayer in front of it"
                        .into(),
                ))
            });
        };
        let pools = self.mesh.pools().clone();
        match &target {
            Target::Cluster(cluster) => {
                let endpoints = cluster.endpoints().load();
                let n = endpoints.len();
                let Some(endpoint) = endpoints.get(cluster.state().next_index(n)) else {
                    let err = Error::NoHealthyUpstream {
                        host: cluster.key().host.clone(),
                        subset: cluster.key().subset.clone(),
                    };
                    return Box::pin(async move { Err(err) });
                };
                cluster.state().record_request();
                let protocol = cluster.protocol_for(req.version());
                set_version(&mut req, protocol);
                let key = PoolKey {
                    addr: endpoint.addr,
                    tls: TlsPolicy::Plaintext,
                    protocol,
                };
                let pool = pools.get(&key, &pool_settings(cluster.policy()));
                Box::pin(async move { pool.send(req).await })
            }
            Target::Passthrough { host, port } => {
                let (host, port) = (host.clone(), *port);
                let protocol = if req.version() == http::Version::HTTP_2 {
                    UpstreamProtocol::Http2
                } else {
                    UpstreamProtocol::Http1
                };
                set_version(&mut req, protocol);
                Box::pin(async move {
                    let name = host.trim_start_matches('[').trim_end_matches(']');
                    let addr = tokio::net::lookup_host((name, port))
                        .await
                        .ok()
                        .and_then(|mut addrs| addrs.next())
                        .ok_or_else(|| Error::UpstreamReset {
                            reason: ResetReason::ConnectionFailure,
                            transport_failure: Some(format!("cannot resolve {host}")),
                        })?;
                    let key = PoolKey {
                        addr,
                        tls: TlsPolicy::Plaintext,
                        protocol,
                    };
                    let pool = pools.get(&key, &PoolSettings::default());
                    pool.send(req).await
                })
            }
        }
    }
}

/// The HTTP version hyper must speak on the chosen connection.
fn set_version(req: &mut Request<MeshBody>, protocol: UpstreamProtocol) {
    match protocol {
        UpstreamProtocol::Http1 => *req.version_mut() = http::Version::HTTP_11,
        UpstreamProtocol::Http2 => *req.version_mut() = http::Version::HTTP_2,
        _ => {}
    }
}

/// Pool settings from DestinationRule `connectionPool`: `tcp.connectTimeout`,
/// `http.idleTimeout` (else `tcp.idleTimeout`), `http.maxRequestsPerConnection`. The
/// connection and request limits (`tcp.maxConnections`, `http1MaxPendingRequests`,
/// `http2MaxRequests`) are circuit breaking, enforced cluster-wide by the resilience layers.
fn pool_settings(policy: &ClusterPolicy) -> PoolSettings {
    let mut settings = PoolSettings::default();
    let Some(cp) = &policy.connection_pool else {
        return settings;
    };
    if let Some(tcp) = &cp.tcp {
        if let Some(t) = tcp.connect_timeout {
            settings.connect_timeout = t;
        }
        if let Some(t) = tcp.idle_timeout {
            settings.idle_timeout = t;
        }
    }
    if let Some(http) = &cp.http {
        if let Some(t) = http.idle_timeout {
            settings.idle_timeout = t;
        }
        if let Some(n) = http.max_requests_per_connection.filter(|n| *n > 0) {
            settings.max_requests_per_connection = u32::try_from(n).ok();
        }
    }
    settings
}
