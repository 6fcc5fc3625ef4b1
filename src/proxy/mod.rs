//! Proxy mode: a sidecar (outbound and inbound) or an ingress gateway built from the mesh's
//! public parts, as `tower-mesh proxy` runs it.
//!
//! [`Proxy`] is everything the binary does, as a library: it builds a [`Mesh`] from a config
//! directory, binds the listen addresses, serves them with the [`Server`]'s limits (header
//! size and count, header-read timeout, connection cap), follows changes to the directory
//! (`Mesh::watch`), and drains on [`ProxyHandle::shutdown`].
//!
//! The modes ([`Mode`]):
//!
//! - **sidecar outbound** ([`Mode::Sidecar`], Envoy's `15001` listener): the application
//!   sends plain HTTP to the proxy, which routes by authority (`Host`, or the URI's) through
//!   the mesh's client with every resilience layer: [`Forward`] over
//!   [`MeshClient`](crate::MeshClient).
//! - **inbound sidecar** ([`Mode::Inbound`], Envoy's `15006`): the proxy accepts the mesh's
//!   traffic with the workload's PeerAuthentication (mutual TLS, `PERMISSIVE`), applies
//!   RequestAuthentication and AuthorizationPolicy ([`Mesh::inbound`]) and forwards to the
//!   local application ([`LocalApp`]).
//! - **ingress gateway** ([`Mode::Gateway`]): the Gateway resources whose `selector` matches
//!   the proxy's [`labels`](Proxy::labels), one listener per server port, TLS termination,
//!   SNI passthrough and `httpsRedirect` ([`gateway::IngressGateway`]), HTTP routed by the
//!   VirtualServices bound to each Gateway.
//!
//! Every mode continues or starts a trace (W3C `traceparent` or B3) and sets `x-request-id`
//! ([`TraceLayer`]); [`access_log`](Proxy::access_log)
//! adds Envoy's access log; [`admin`](Proxy::admin) serves the admin endpoint (feature
//! `admin`) with the mesh's metrics.
//!
//! ```no_run
//! # async fn run() -> Result<(), tower_mesh::proxy::ProxyError> {
//! use tower_mesh::proxy::{Mode, Proxy};
//!
//! let proxy = Proxy::new("istio/")
//!     .listen("127.0.0.1:15001".parse().expect("an address"))
//!     .mode(Mode::Sidecar)
//!     .bind()
//!     .await?;
//! let handle = proxy.handle();
//! tokio::spawn(async move {
//!     let _ = tokio::signal::ctrl_c().await;
//!     handle.shutdown();
//! });
//! proxy.serve().await?; // resolves once in-flight requests have drained
//! # Ok(()) }
//! ```

mod app;
pub mod forward;
pub mod gateway;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::Layer;
use tower::util::option_layer;

pub use app::{LocalApp, LocalAppFuture};
pub use forward::{
    ClientAddr, ClientAddrLayer, ClientAddrService, Forward, ForwardFuture, X_FORWARDED_FOR,
    X_FORWARDED_PROTO, remove_hop_by_hop, trusted_client_addr,
};

use crate::mesh::{Mesh, MeshBuilder};
use crate::server::Server;
use crate::telemetry::access_log::{AccessLogFormat, AccessLogLayer};
use crate::telemetry::trace::TraceLayer;

/// What the proxy does with the traffic it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mode {
    /// Sidecar outbound: route by authority through the mesh's client (Envoy's outbound
    /// listener, `15001`). Plaintext from the application.
    Sidecar,
    /// Inbound sidecar in front of the application at `app`: PeerAuthentication decides the
    /// transport, then RequestAuthentication and AuthorizationPolicy (Envoy's inbound
    /// listener, `15006`).
    Inbound {
        /// The local application's address (`127.0.0.1:8080`).
        app: SocketAddr,
    },
    /// Ingress gateway: the Gateway resources selecting this proxy's labels, one listener
    /// per Gateway server port (on the IP of the first listen address, or where
    /// [`Proxy::gateway_port`] maps it).
    Gateway,
}

/// Why a proxy could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// The mesh could not be built (the config is invalid, a file unreadable).
    #[error("cannot build the mesh: {0}")]
    Mesh(#[source] crate::Error),
    /// A listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The config directory could not be watched for changes.
    #[error("cannot watch the config for changes: {0}")]
    Watch(#[source] crate::Error),
    /// The Gateway resources cannot be served (no Gateway selects the proxy's labels, a
    /// certificate file is unreadable, an unsupported TLS setting).
    #[error("cannot serve the gateway: {0}")]
    Gateway(#[source] crate::Error),
    /// Serving failed (a listener's address could not be read).
    #[error("proxy failed: {0}")]
    Io(#[from] std::io::Error),
}

type Configure = Box<dyn FnOnce(MeshBuilder) -> MeshBuilder + Send>;

/// Builds and runs a proxy ([module docs](self)).
pub struct Proxy {
    config: Vec<PathBuf>,
    mesh: Option<Mesh>,
    configure: Option<Configure>,
    listen: Vec<SocketAddr>,
    mode: Mode,
    namespace: Option<String>,
    num_trusted_proxies: Option<u32>,
    limits: Limits,
    drain: Duration,
    watch: Option<Duration>,
    labels: Option<Vec<(String, String)>>,
    gateway_ports: Vec<(u16, SocketAddr)>,
    access_log: Option<AccessLogFormat>,
    #[cfg(feature = "admin")]
    admin: Option<SocketAddr>,
    #[cfg(feature = "admin")]
    registry: Option<Arc<std::sync::Mutex<prometheus_client::registry::Registry>>>,
}

/// The server limits a proxy sets ([`Server`]'s defaults where `None`).
#[derive(Debug, Clone, Copy, Default)]
struct Limits {
    max_headers: Option<usize>,
    max_header_bytes: Option<usize>,
    header_read_timeout: Option<Duration>,
    max_connections: Option<usize>,
}

impl Limits {
    fn apply(self, mut server: Server, drain: Duration) -> Server {
        if let Some(n) = self.max_headers {
            server = server.max_headers(n);
        }
        if let Some(n) = self.max_header_bytes {
            server = server.max_header_bytes(n);
        }
        if let Some(t) = self.header_read_timeout {
            server = server.header_read_timeout(t);
        }
        if let Some(n) = self.max_connections {
            server = server.max_connections(n);
        }
        server.shutdown_grace(drain)
    }
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("config", &self.config)
            .field("listen", &self.listen)
            .field("mode", &self.mode)
            .field("namespace", &self.namespace)
            .field("num_trusted_proxies", &self.num_trusted_proxies)
            .field("limits", &self.limits)
            .field("drain", &self.drain)
            .field("watch", &self.watch)
            .finish_non_exhaustive()
    }
}

/// The default listen address: Istio's outbound capture port on the loopback interface.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 15001);

impl Proxy {
    /// A sidecar-outbound proxy for the Istio YAML in `config` (a file or a directory read
    /// recursively), listening on [`DEFAULT_LISTEN`] unless [`listen`](Self::listen) says
    /// otherwise; hot reload on, drain deadline 5 s.
    pub fn new(config: impl Into<PathBuf>) -> Self {
        Proxy {
            config: vec![config.into()],
            mesh: None,
            configure: None,
            listen: Vec::new(),
            mode: Mode::Sidecar,
            namespace: None,
            num_trusted_proxies: None,
            limits: Limits::default(),
            drain: Duration::from_secs(5),
            watch: Some(Duration::from_millis(200)),
            labels: None,
            gateway_ports: Vec::new(),
            access_log: None,
            #[cfg(feature = "admin")]
            admin: None,
            #[cfg(feature = "admin")]
            registry: None,
        }
    }

    /// A proxy for an already built `mesh` (the namespace, labels, trusted hops and
    /// [`configure`](Self::configure) options are then unused). Hot reload is off unless
    /// [`watch`](Self::watch) turns it on (the mesh must then have config paths).
    pub fn with_mesh(mesh: Mesh) -> Self {
        Proxy {
            config: Vec::new(),
            mesh: Some(mesh),
            watch: None,
            ..Proxy::new(PathBuf::new())
        }
    }

    /// Adds a listen address (repeatable; the first call replaces the default). Port 0 binds
    /// an ephemeral port: [`ProxyHandle::local_addrs`] says which.
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen.push(addr);
        self
    }

    /// The mode (default [`Mode::Sidecar`]).
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// This workload's namespace (default `default`): short names resolve in it.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// Proxies in front of this one to trust in `x-forwarded-for` (Istio's
    /// `numTrustedProxies`; default 0). See [`MeshBuilder::num_trusted_proxies`].
    pub fn num_trusted_proxies(mut self, n: u32) -> Self {
        self.num_trusted_proxies = Some(n);
        self
    }

    /// This workload's labels (`istio: ingressgateway` for a gateway: Gateways select the
    /// proxies they run on by `selector`; sidecar policies by `selector.matchLabels`).
    pub fn labels<K: Into<String>, V: Into<String>>(
        mut self,
        labels: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.labels = Some(
            labels
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        );
        self
    }

    /// In [`Mode::Gateway`], serve the Gateway server port `port` on `addr` instead of on
    /// the listen IP with the same port (ports below 1024 need privileges; tests bind port 0).
    pub fn gateway_port(mut self, port: u16, addr: SocketAddr) -> Self {
        self.gateway_ports.push((port, addr));
        self
    }

    /// Log every request in Envoy's default access-log format or as JSON, through `tracing`
    /// (target `tower_mesh::access_log`), when its response has ended. Off by default, as in
    /// Istio (`meshConfig.accessLogFile` unset).
    pub fn access_log(mut self, format: Option<AccessLogFormat>) -> Self {
        self.access_log = format;
        self
    }

    /// Serve the admin endpoint ([`crate::admin::router`]: `/metrics`, `/config_dump`,
    /// `/clusters`, `/ready`, `/healthz`, `POST /reload`) on `addr`. Its `/metrics` has the
    /// mesh's Istio metrics when the proxy builds the mesh; with [`with_mesh`](Self::with_mesh),
    /// give the registry that mesh was built with ([`registry`](Self::registry)).
    #[cfg(feature = "admin")]
    pub fn admin(mut self, addr: SocketAddr) -> Self {
        self.admin = Some(addr);
        self
    }

    /// The metrics registry the admin endpoint serves. When the proxy builds the mesh it
    /// registers the mesh's metrics in it (a new registry when none is given).
    #[cfg(feature = "admin")]
    pub fn registry(
        mut self,
        registry: Arc<std::sync::Mutex<prometheus_client::registry::Registry>>,
    ) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Further mesh options (labels, identity, metrics registry …) applied to the builder
    /// after the proxy's own.
    pub fn configure(
        mut self,
        f: impl FnOnce(MeshBuilder) -> MeshBuilder + Send + 'static,
    ) -> Self {
        self.configure = Some(Box::new(f));
        self
    }

    /// The most request headers ([`Server::max_headers`], default 100).
    pub fn max_headers(mut self, n: usize) -> Self {
        self.limits.max_headers = Some(n);
        self
    }

    /// The most bytes of request headers ([`Server::max_header_bytes`], default 60 KiB).
    pub fn max_header_bytes(mut self, n: usize) -> Self {
        self.limits.max_header_bytes = Some(n);
        self
    }

    /// How long a client may take to send its headers ([`Server::header_read_timeout`],
    /// default 10 s).
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.limits.header_read_timeout = Some(timeout);
        self
    }

    /// The most connections open at once per listener ([`Server::max_connections`]).
    pub fn max_connections(mut self, n: usize) -> Self {
        self.limits.max_connections = Some(n);
        self
    }

    /// How long in-flight requests get to finish after [`ProxyHandle::shutdown`] (default
    /// 5 s, Istio's `terminationDrainDuration`).
    pub fn drain_timeout(mut self, deadline: Duration) -> Self {
        self.drain = deadline;
        self
    }

    /// Reload when a config file changes, debounced by `debounce` (default 200 ms); `None`
    /// turns hot reload off. A reload that fails validation keeps the config in force.
    pub fn watch(mut self, debounce: Option<Duration>) -> Self {
        self.watch = debounce;
        self
    }

    /// Builds the mesh and binds every listen address; nothing is served until
    /// [`BoundProxy::serve`].
    pub async fn bind(self) -> Result<BoundProxy, ProxyError> {
        #[cfg(feature = "admin")]
        let registry = match (&self.registry, self.admin) {
            (Some(r), _) => Some(r.clone()),
            (None, Some(_)) => Some(Arc::default()),
            (None, None) => None,
        };
        let mesh = match self.mesh {
            Some(mesh) => mesh,
            None => {
                let mut builder = Mesh::builder();
                for path in self.config {
                    builder = builder.config_path(path);
                }
                if let Some(ns) = self.namespace {
                    builder = builder.namespace(ns);
                }
                if let Some(n) = self.num_trusted_proxies {
                    builder = builder.num_trusted_proxies(n);
                }
                if let Some(labels) = self.labels {
                    builder = builder.labels(labels);
                }
                #[cfg(feature = "admin")]
                if let Some(registry) = &registry {
                    let mut r = registry
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    builder = builder.metrics(&mut r);
                }
                if let Some(configure) = self.configure {
                    builder = configure(builder);
                }
                builder.build().map_err(ProxyError::Mesh)?
            }
        };
        let addrs = if self.listen.is_empty() {
            vec![DEFAULT_LISTEN]
        } else {
            self.listen
        };
        let mut listeners = Vec::with_capacity(addrs.len());
        let mut gateway = None;
        if self.mode == Mode::Gateway {
            // Reading the certificate files blocks: off the runtime's workers.
            let m = mesh.clone();
            let gw = tokio::task::spawn_blocking(move || gateway::IngressGateway::new(&m))
                .await
                .map_err(|e| ProxyError::Io(std::io::Error::other(e)))?
                .map_err(ProxyError::Gateway)?;
            let ip = addrs.first().map_or(DEFAULT_LISTEN.ip(), SocketAddr::ip);
            let mut bound = Vec::new();
            for port in gw.ports() {
                let addr = self
                    .gateway_ports
                    .iter()
                    .find(|(p, _)| *p == port)
                    .map_or(SocketAddr::new(ip, port), |(_, a)| *a);
                let listener = TcpListener::bind(addr)
                    .await
                    .map_err(|source| ProxyError::Bind { addr, source })?;
                bound.push((port, listener));
            }
            gateway = Some((gw, bound));
        } else {
            for addr in addrs {
                let listener = TcpListener::bind(addr)
                    .await
                    .map_err(|source| ProxyError::Bind { addr, source })?;
                listeners.push(listener);
            }
        }
        let mut local_addrs = listeners
            .iter()
            .map(TcpListener::local_addr)
            .collect::<Result<Vec<_>, _>>()?;
        if let Some((_, bound)) = &gateway {
            for (_, listener) in bound {
                local_addrs.push(listener.local_addr()?);
            }
        }
        #[cfg(feature = "admin")]
        let admin = match (self.admin, registry) {
            (Some(addr), Some(registry)) => {
                let listener = TcpListener::bind(addr)
                    .await
                    .map_err(|source| ProxyError::Bind { addr, source })?;
                Some((listener, registry))
            }
            _ => None,
        };
        #[cfg(feature = "admin")]
        let admin_addr = match &admin {
            Some((l, _)) => Some(l.local_addr()?),
            None => None,
        };
        #[cfg(feature = "watch")]
        let watch_guard = match self.watch {
            Some(debounce) => Some(mesh.watch(debounce).map_err(ProxyError::Watch)?),
            None => None,
        };
        let (shutdown, _) = watch::channel(false);
        Ok(BoundProxy {
            handle: ProxyHandle {
                mesh,
                local_addrs: local_addrs.into(),
                shutdown: Arc::new(shutdown),
                #[cfg(feature = "admin")]
                admin_addr,
            },
            listeners,
            gateway,
            access_log: self.access_log,
            #[cfg(feature = "admin")]
            admin,
            mode: self.mode,
            limits: self.limits,
            drain: self.drain,
            #[cfg(feature = "watch")]
            _watch: watch_guard,
        })
    }
}

/// Controls a running proxy: cheap to clone.
#[derive(Debug, Clone)]
pub struct ProxyHandle {
    mesh: Mesh,
    local_addrs: Arc<[SocketAddr]>,
    shutdown: Arc<watch::Sender<bool>>,
    #[cfg(feature = "admin")]
    admin_addr: Option<SocketAddr>,
}

impl ProxyHandle {
    /// Starts the graceful shutdown: every listener closes at once (new connections are
    /// refused), in-flight requests get the drain deadline to finish (HTTP/1.1 connections
    /// close after their response, HTTP/2 ones get a GOAWAY), then
    /// [`BoundProxy::serve`] resolves. Calling it again does nothing more.
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// The bound addresses, in the order they were given; in [`Mode::Gateway`], one per
    /// Gateway server port, in port order ([`gateway::IngressGateway::ports`]).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// The admin endpoint's bound address, when [`Proxy::admin`] asked for one.
    #[cfg(feature = "admin")]
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The mesh the proxy serves (for `reload`, `subscribe`, the admin router).
    pub fn mesh(&self) -> &Mesh {
        &self.mesh
    }
}

/// A proxy whose listeners are bound ([`Proxy::bind`]).
pub struct BoundProxy {
    handle: ProxyHandle,
    listeners: Vec<TcpListener>,
    gateway: Option<(gateway::IngressGateway, Vec<(u16, TcpListener)>)>,
    access_log: Option<AccessLogFormat>,
    #[cfg(feature = "admin")]
    admin: Option<(
        TcpListener,
        Arc<std::sync::Mutex<prometheus_client::registry::Registry>>,
    )>,
    mode: Mode,
    limits: Limits,
    drain: Duration,
    #[cfg(feature = "watch")]
    _watch: Option<crate::watch::WatchGuard>,
}

impl std::fmt::Debug for BoundProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundProxy")
            .field("handle", &self.handle)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl BoundProxy {
    /// A handle to shut the proxy down and reach its mesh.
    pub fn handle(&self) -> ProxyHandle {
        self.handle.clone()
    }

    /// Serves every listener until [`ProxyHandle::shutdown`], then drains: resolves when the
    /// in-flight requests are done or the drain deadline has passed.
    pub async fn serve(self) -> Result<(), ProxyError> {
        let BoundProxy {
            handle,
            listeners,
            gateway,
            access_log,
            #[cfg(feature = "admin")]
            admin,
            mode,
            limits,
            drain,
            #[cfg(feature = "watch")]
            _watch,
        } = self;
        let mesh = handle.mesh.clone();
        let mut tasks = JoinSet::new();
        let log = access_log.map(|f| AccessLogLayer::new().format(f));
        for listener in listeners {
            let stopped = stopped(handle.shutdown.subscribe());
            match mode {
                // (Gateway mode binds no listen addresses of its own: its ports are below.)
                Mode::Sidecar | Mode::Gateway => {
                    // The application speaks plaintext to its sidecar.
                    let server = limits.apply(Server::standalone(), drain);
                    let stack =
                        TraceLayer::new().layer(option_layer(log).layer(Forward::new(&mesh)));
                    tasks.spawn(server.serve_with_shutdown(listener, stack, stopped));
                }
                Mode::Inbound { app } => {
                    let server = limits.apply(Server::new(&mesh), drain);
                    let forward =
                        Forward::with_service(LocalApp::new(app), mesh.num_trusted_proxies());
                    let stack = TraceLayer::new().layer(
                        option_layer(log).layer(
                            ClientAddrLayer::new(mesh.num_trusted_proxies())
                                .layer(mesh.inbound().layer(forward)),
                        ),
                    );
                    tasks.spawn(server.serve_with_shutdown(listener, stack, stopped));
                }
            }
        }
        if let Some((gw, bound)) = gateway {
            let gw = gw
                .server(limits.apply(Server::standalone(), drain))
                .shutdown_grace(drain);
            // Forward decides the client address and x-forwarded-* as Envoy's edge
            // (`use_remote_address: true`) does.
            let stack = TraceLayer::new().layer(option_layer(log).layer(Forward::new(&mesh)));
            let stopped = stopped(handle.shutdown.subscribe());
            tasks.spawn(gw.serve(bound, stack, stopped));
        }
        #[cfg(feature = "admin")]
        if let Some((listener, registry)) = admin {
            let app = crate::admin::router(mesh.clone(), registry);
            let stopped = stopped(handle.shutdown.subscribe());
            // The admin port drains with the rest (a short grace: its answers are quick).
            let server = Server::standalone().shutdown_grace(Duration::from_secs(1));
            tasks.spawn(server.serve_with_shutdown(listener, app, stopped));
        }
        let mut result = Ok(());
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = Err(ProxyError::Io(e)),
                Err(e) => result = Err(ProxyError::Io(std::io::Error::other(e))),
            }
        }
        result
    }
}

/// Resolves once the shutdown flag is set (or its sender is gone).
async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}
