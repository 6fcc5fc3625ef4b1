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
//! - **ingress gateway**: [`gateway`]. Not selectable here yet (a `TODO(lead)` in
//!   [`BoundProxy::serve`] says how it joins).
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
mod forward;
pub mod gateway;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::Layer;

pub use app::{LocalApp, LocalAppFuture};
pub use forward::{
    ClientAddr, ClientAddrLayer, ClientAddrService, Forward, ForwardFuture, X_FORWARDED_FOR,
    X_FORWARDED_PROTO, remove_hop_by_hop, trusted_client_addr,
};

use crate::mesh::{Mesh, MeshBuilder};
use crate::server::Server;

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
        }
    }

    /// A proxy for an already built `mesh` (the namespace, trusted hops and
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
        for addr in addrs {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| ProxyError::Bind { addr, source })?;
            listeners.push(listener);
        }
        let local_addrs = listeners
            .iter()
            .map(TcpListener::local_addr)
            .collect::<Result<Vec<_>, _>>()?;
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
            },
            listeners,
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
}

impl ProxyHandle {
    /// Starts the graceful shutdown: every listener closes at once (new connections are
    /// refused), in-flight requests get the drain deadline to finish (HTTP/1.1 connections
    /// close after their response, HTTP/2 ones get a GOAWAY), then
    /// [`BoundProxy::serve`] resolves. Calling it again does nothing more.
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// The bound addresses, in the order they were given.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
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
            mode,
            limits,
            drain,
            #[cfg(feature = "watch")]
            _watch,
        } = self;
        let mesh = handle.mesh.clone();
        let mut tasks = JoinSet::new();
        for listener in listeners {
            let stopped = stopped(handle.shutdown.subscribe());
            match mode {
                Mode::Sidecar => {
                    // The application speaks plaintext to its sidecar.
                    let server = limits.apply(Server::standalone(), drain);
                    let stack = Forward::new(&mesh);
                    tasks.spawn(server.serve_with_shutdown(listener, stack, stopped));
                }
                Mode::Inbound { app } => {
                    let server = limits.apply(Server::new(&mesh), drain);
                    let forward =
                        Forward::with_service(LocalApp::new(app), mesh.num_trusted_proxies());
                    let stack = ClientAddrLayer::new(mesh.num_trusted_proxies())
                        .layer(mesh.inbound().layer(forward));
                    tasks.spawn(server.serve_with_shutdown(listener, stack, stopped));
                }
            }
        }
        // TODO(lead): a `Mode::Gateway` arm, once `gateway::IngressGateway` (wt-gateway) is
        // merged. `bind` would then, for that mode, build the gateway before binding and bind
        // one listener per Gateway server port on each listen address's IP:
        //     let gw = gateway::IngressGateway::new(&mesh).map_err(ProxyError::Mesh)?
        //         .server(limits.apply(Server::standalone(), drain))
        //         .shutdown_grace(drain);
        //     for port in gw.ports() { /* TcpListener::bind((ip, port)) → (port, listener) */ }
        // and `serve` spawns, with `Forward::new(&mesh)` as the HTTP forwarder (it decides the
        // `ClientAddr` and x-forwarded-* as Envoy's `use_remote_address: true` edge does):
        //     tasks.spawn(gw.serve(port_listeners, Forward::new(&mesh), stopped(rx)));
        // The binary then maps `--mode gateway` to it (and needs `--labels` for the
        // Gateways' `selector`).
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
