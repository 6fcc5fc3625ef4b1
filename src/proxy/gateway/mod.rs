//! Ingress gateway: Istio `Gateway` servers as listeners, and the VirtualServices bound to
//! them, as Istio's ingress gateway (Envoy as a router) serves them.
//!
//! [`IngressGateway::new`] takes the Gateways whose `selector` matches the mesh workload's
//! labels (an empty selector matches every workload, as in Istio, where it selects every
//! gateway proxy; give the workload labels with `MeshBuilder::labels` to choose) and plans
//! one listener per server port ([`plan`] lists what is served and what is refused):
//!
//! - **HTTP** ports: each request's `Host` picks the most specific server of the port whose
//!   `hosts` cover it (exact before wildcard, `ns/host` restricting which namespaces'
//!   VirtualServices bind); none: 404 with flag `NR`, as Envoy answers a host no virtual
//!   host claims. `tls.httpsRedirect` answers 301 to `https://` the same host and path.
//!   Otherwise the request gets a [`GatewayName`] extension and goes to the forwarder, whose
//!   [`RouteLayer`](crate::RouteLayer) then routes it by the VirtualServices bound to that
//!   Gateway (`gateways: [ns/name]`, short names in the VirtualService's namespace).
//! - **HTTPS** ports (`SIMPLE`, `MUTUAL`, `OPTIONAL_MUTUAL`): TLS is terminated with the
//!   server's certificate files (chosen by SNI when the port has several servers), HTTP/2 or
//!   HTTP/1.1 by ALPN; the request's `Host` must then be a host of the server its SNI chose.
//! - **PASSTHROUGH** ports: see [`passthrough`](self#passthrough).
//!
//! HTTP ports are served by [`crate::server::Server`] (its limits, its drain, and the
//! [`ConnectionInfo`] in every request). The plan follows reloads: when the snapshot version
//! changes it is rebuilt (certificate files read again); a reload whose Gateways cannot be
//! served, or that needs a port without a listener, keeps the ports as they are and logs
//! that a restart is needed.
//!
//! # Passthrough
//!
//! The ClientHello is read (not terminated) and its SNI picks the server, then the first
//! VirtualService `tls` route bound to the Gateway whose `match` has the SNI among its
//! `sniHosts` (and the port, when it names one); the destination is resolved in the mesh
//! (ServiceEntry endpoints, subsets by DestinationRule), an endpoint is chosen at random (no
//! outlier ejection or load balancer policy on this path) and bytes are copied both ways.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use tower::ServiceExt;
//! use tower_mesh::Mesh;
//! use tower_mesh::proxy::gateway::IngressGateway;
//!
//! let mesh = Mesh::builder().config_path("config/").labels([("istio", "ingressgateway")]).build()?;
//! let gateway = IngressGateway::new(&mesh)?;
//! let mut listeners = Vec::new();
//! for port in gateway.ports() {
//!     listeners.push((port, tokio::net::TcpListener::bind(("0.0.0.0", port)).await?));
//! }
//! // The forwarder: here the mesh client, its body mapped to the mesh's body type.
//! let client = mesh.client();
//! let forward = tower::service_fn(move |req: http::Request<hyper::body::Incoming>| {
//!     client.clone().oneshot(req.map(tower_mesh::body::boxed))
//! });
//! gateway.serve(listeners, forward, std::future::pending()).await?;
//! # Ok(()) }
//! ```

pub mod hosts;
mod passthrough;
pub mod plan;
pub mod sni;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::header::{HOST, LOCATION};
use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::Service;

use crate::body::{self, MeshBody};
use crate::error::{BoxError, Error, is_grpc_request};
use crate::mesh::{Mesh, MeshEvent};
pub use crate::route::layer::GatewayName;
use crate::server::{ConnectionInfo, InboundTls, Server};
use crate::snapshot::hosts::split_host_port;
use crate::validate::{ResourceRef, Severity, ValidationError};
use plan::{GatewayError, Plan, PortKind, PortPlan};

/// An ingress gateway for the Gateways that select the mesh's workload ([module docs](self)).
pub struct IngressGateway {
    mesh: Mesh,
    plan: Arc<ArcSwap<Plan>>,
    server: Server,
    handshake_timeout: Duration,
    shutdown_grace: Duration,
}

impl std::fmt::Debug for IngressGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngressGateway")
            .field("plan", &self.plan.load())
            .finish_non_exhaustive()
    }
}

impl IngressGateway {
    /// Plans the listeners of the Gateways serving on `mesh`'s workload, reading their
    /// certificate files (blocking: call it at start-up, or on a blocking thread).
    ///
    /// Errors: [`Error::Config`] listing every server that cannot be served as configured
    /// (a `credentialName`, an unreadable certificate, …; see [`plan`]), or when no Gateway
    /// selects the workload.
    pub fn new(mesh: &Mesh) -> Result<IngressGateway, Error> {
        let snapshot = mesh.snapshot();
        if snapshot.served_gateways().is_empty() {
            return Err(Error::Config(vec![ValidationError {
                severity: Severity::Error,
                resource: None,
                path: String::new(),
                message: format!(
                    "no Gateway selects this workload (namespace {}, labels {:?}): a Gateway's selector must be a subset of the workload's labels",
                    mesh.settings().source.namespace,
                    mesh.settings().source.labels
                ),
                rule: None,
                source: Default::default(),
            }]));
        }
        let plan = Plan::build(&snapshot).map_err(|errors| config_errors(&snapshot, errors))?;
        Ok(IngressGateway {
            mesh: mesh.clone(),
            plan: Arc::new(ArcSwap::from_pointee(plan)),
            server: Server::standalone(),
            handshake_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(30),
        })
    }

    /// The server (limits: header size and count, header-read timeout, connection cap)
    /// HTTP and HTTPS ports are served with. Its TLS choice is replaced by the Gateway's.
    pub fn server(mut self, server: Server) -> Self {
        self.server = server;
        self
    }

    /// How long a PASSTHROUGH client may take to send its ClientHello, and the backend to
    /// accept the connection (default 10 s).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// How long open connections get to finish after the shutdown signal (default 30 s).
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self.server = self.server.shutdown_grace(grace);
        self
    }

    /// The server ports to listen on, ascending: one listener per port.
    pub fn ports(&self) -> Vec<u16> {
        self.plan.load().ports.keys().copied().collect()
    }

    /// Serves the Gateway ports on `listeners` (each the Gateway server port it serves, and a
    /// listener bound for it: the bound address need not have that port) until `shutdown`
    /// completes; then stops accepting and lets open connections finish within the grace
    /// period. HTTP requests go to `forward` (the proxy's forwarder: a
    /// [`RouteLayer`](crate::RouteLayer)-routed client that reads [`GatewayName`]).
    ///
    /// A listener for a port the plan does not have answers 404 to every request; a planned
    /// port without a listener is logged.
    pub async fn serve<S, F>(
        self,
        listeners: Vec<(u16, TcpListener)>,
        forward: S,
        shutdown: F,
    ) -> io::Result<()>
    where
        S: Service<Request<Incoming>, Response = Response<MeshBody>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        F: Future<Output = ()>,
    {
        let (stop, stopped) = watch::channel(false);
        let listening: Vec<u16> = listeners.iter().map(|(p, _)| *p).collect();
        for port in self.ports() {
            if !listening.contains(&port) {
                tracing::warn!(port, "gateway port has no listener: not served");
            }
        }
        let reload = tokio::spawn(follow_reloads(
            self.mesh.clone(),
            self.plan.clone(),
            listening,
            stopped.clone(),
        ));
        let mut tasks = tokio::task::JoinSet::new();
        for (port, listener) in listeners {
            let kind = self.plan.load().ports.get(&port).map(|p| p.kind);
            let mut stopped = stopped.clone();
            if kind == Some(PortKind::Passthrough) {
                tasks.spawn(passthrough::serve(
                    self.mesh.clone(),
                    self.plan.clone(),
                    port,
                    listener,
                    stopped,
                    self.handshake_timeout,
                    self.shutdown_grace,
                ));
                continue;
            }
            let plan = self.plan.clone();
            let selector = Arc::new(move |_| match plan.load().ports.get(&port) {
                Some(PortPlan {
                    kind: PortKind::Https,
                    tls: Some(config),
                    ..
                }) => InboundTls::Tls(config.clone()),
                Some(PortPlan {
                    kind: PortKind::Http,
                    ..
                })
                | None => InboundTls::Plaintext,
                Some(_) => InboundTls::Refuse(Arc::from(
                    "the port's servers changed kind in a reload: restart the gateway",
                )),
            });
            let app = GatewayService {
                plan: self.plan.clone(),
                port,
                forward: forward.clone(),
            };
            let server = self.server.clone().tls(selector);
            tasks.spawn(async move {
                let signal = async move {
                    let _ = stopped.wait_for(|s| *s).await;
                };
                if let Err(e) = server.serve_with_shutdown(listener, app, signal).await {
                    tracing::warn!(port, error = %e, "gateway listener failed");
                }
            });
        }
        shutdown.await;
        let _ = stop.send(true);
        while tasks.join_next().await.is_some() {}
        reload.abort();
        Ok(())
    }
}

/// Rebuilds the plan when a reload publishes a new snapshot, until `stop`.
async fn follow_reloads(
    mesh: Mesh,
    plan: Arc<ArcSwap<Plan>>,
    listening: Vec<u16>,
    mut stop: watch::Receiver<bool>,
) {
    let mut events = mesh.subscribe();
    loop {
        let event = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            e = events.recv() => e,
        };
        match event {
            Ok(MeshEvent::Reloaded { .. })
            | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Ok(_) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
        let snapshot = mesh.snapshot();
        if snapshot.version() == plan.load().version {
            continue;
        }
        let built = tokio::task::spawn_blocking(move || {
            let result = Plan::build(&snapshot);
            (snapshot, result)
        })
        .await;
        let Ok((snapshot, result)) = built else {
            continue;
        };
        match result {
            Ok(new) => {
                let old = plan.load();
                for (port, p) in &new.ports {
                    if !listening.contains(port) {
                        tracing::warn!(
                            port,
                            "a reload added gateway port {port}: restart the gateway to listen on it"
                        );
                    } else if old.ports.get(port).is_some_and(|o| o.kind != p.kind) {
                        tracing::warn!(
                            port,
                            "a reload changed how gateway port {port} is served ({:?}): restart the gateway",
                            p.kind
                        );
                    }
                }
                tracing::info!(version = new.version, ports = ?new.ports.keys().collect::<Vec<_>>(), "gateway plan rebuilt");
                plan.store(Arc::new(new));
            }
            Err(errors) => {
                let e = config_errors(&snapshot, errors);
                tracing::warn!(
                    version = snapshot.version(),
                    "gateway config of the reload cannot be served; the previous gateway plan stays: {e}"
                );
            }
        }
    }
}

/// Gateway problems as config errors on their Gateway resources.
fn config_errors(snapshot: &crate::snapshot::Snapshot, errors: Vec<GatewayError>) -> Error {
    Error::Config(
        errors
            .into_iter()
            .map(|e| {
                let gw = snapshot
                    .served_gateways()
                    .iter()
                    .find(|g| g.name == e.gateway);
                ValidationError {
                    severity: Severity::Error,
                    resource: gw.map(|g| ResourceRef {
                        kind: g.provenance.kind,
                        namespace: g.provenance.namespace.clone(),
                        name: g.provenance.name.clone(),
                    }),
                    path: format!("spec.servers[{}]{}", e.server, e.field),
                    message: e.message,
                    rule: None,
                    source: gw.map(|g| g.provenance.source.clone()).unwrap_or_default(),
                }
            })
            .collect(),
    )
}

/// The per-request side of an HTTP or HTTPS gateway port: server selection by `Host` (and
/// SNI), 404 for unknown hosts, `httpsRedirect`, the [`GatewayName`] extension.
#[derive(Clone)]
struct GatewayService<S> {
    plan: Arc<ArcSwap<Plan>>,
    port: u16,
    forward: S,
}

/// What the gateway does with one request.
#[derive(Debug, PartialEq, Eq)]
enum Admit {
    /// Forward it, routed by this Gateway's VirtualServices.
    Forward(Arc<str>),
    /// 301 to this location.
    Redirect(String),
    /// No server of the port serves the host: 404 `NR`.
    NotFound(String),
}

/// Decides [`Admit`] for a request to `authority` (+ `path_and_query`) on `port`, over TLS
/// with `sni` or plaintext.
fn admit(
    plan: &Plan,
    port: u16,
    authority: Option<&str>,
    path_and_query: &str,
    tls: Option<Option<&str>>,
) -> Admit {
    let (host, _) = split_host_port(authority.unwrap_or(""));
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let Some(port_plan) = plan.ports.get(&port) else {
        return Admit::NotFound(host);
    };
    let server = match tls {
        // Over TLS the SNI chose the server (and its certificate): the Host must be one of
        // that server's hosts.
        Some(Some(sni)) => port_plan
            .best_server(sni)
            .filter(|s| s.specificity(&host).is_some()),
        _ => port_plan.best_server(&host),
    };
    let Some(server) = server else {
        return Admit::NotFound(host);
    };
    if server.https_redirect && tls.is_none() {
        return Admit::Redirect(format!("https://{host}{path_and_query}"));
    }
    Admit::Forward(server.gateway.clone())
}

/// TLS ended here: what goes upstream is decided by the destination's DestinationRule, as
/// in Envoy, not by the client's `:scheme`. HTTP/2 clients send `https` absolute URIs, which
/// the mesh client would take as a request to originate TLS, so the scheme becomes `http`
/// (the authority and path stay). VirtualService `scheme` matches therefore see `http` on
/// terminated connections.
fn downstream_scheme_to_http<B>(req: &mut Request<B>) {
    if req.uri().scheme() != Some(&http::uri::Scheme::HTTPS) {
        return;
    }
    let mut parts = req.uri().clone().into_parts();
    parts.scheme = Some(http::uri::Scheme::HTTP);
    if let Ok(uri) = http::Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
}

impl<S> Service<Request<Incoming>> for GatewayService<S>
where
    S: Service<Request<Incoming>, Response = Response<MeshBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    type Response = Response<MeshBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<MeshBody>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Readiness is the forwarder's, checked in `call` (oneshot).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<Incoming>) -> Self::Future {
        let grpc = is_grpc_request(req.headers());
        let info = req.extensions().get::<ConnectionInfo>();
        let tls = info.filter(|i| i.tls).map(|i| i.sni.as_deref());
        let authority = req
            .uri()
            .authority()
            .map(|a| a.as_str())
            .or_else(|| req.headers().get(HOST).and_then(|h| h.to_str().ok()));
        let pq = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
        let decision = admit(&self.plan.load(), self.port, authority, pq, tls);
        match decision {
            Admit::Forward(gateway) => {
                let terminated = tls.is_some();
                req.extensions_mut().insert(GatewayName {
                    gateway,
                    port: self.port,
                });
                if terminated {
                    downstream_scheme_to_http(&mut req);
                }
                let forward = self.forward.clone();
                Box::pin(async move {
                    use tower::ServiceExt;
                    Ok(match forward.oneshot(req).await {
                        Ok(resp) => resp,
                        Err(e) => Error::from(e.into()).to_response(grpc).map(body::boxed),
                    })
                })
            }
            Admit::Redirect(location) => {
                let mut resp = Response::new(body::empty());
                *resp.status_mut() = StatusCode::MOVED_PERMANENTLY;
                if let Ok(v) = HeaderValue::from_str(&location) {
                    resp.headers_mut().insert(LOCATION, v);
                }
                Box::pin(async move { Ok(resp) })
            }
            Admit::NotFound(host) => {
                let resp = Error::NoRoute {
                    host: Arc::from(host),
                }
                .to_response(grpc)
                .map(body::boxed);
                Box::pin(async move { Ok(resp) })
            }
        }
    }
}

#[cfg(test)]
mod tests;
