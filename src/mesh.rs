//! [`Mesh`]: the handle that holds the compiled config, reloads it atomically, and hands out
//! clients.
//!
//! A `Mesh` is built once ([`Mesh::builder`]) from config sources (files, directories, YAML
//! strings) and settings that describe *this* workload (its namespace and labels, which
//! VirtualServices match through `sourceNamespace` / `sourceLabels` and which decide what
//! `exportTo` makes visible). It keeps the current [`Snapshot`] in an
//! [`ArcSwap`]: every request loads it once, without locking, and uses that one snapshot to
//! the end.
//!
//! **Reload.** [`Mesh::reload`] reads the sources again, validates and compiles them on a
//! blocking thread (off the runtime's workers), and publishes the new snapshot with one atomic
//! store. Requests already in flight finish on the snapshot they started with; new requests
//! see the new one; none is dropped. A config with errors is refused: the last good snapshot
//! keeps serving, and the errors come back as [`Error::Config`]. Every outcome is logged
//! (`tracing`) and sent as a [`MeshEvent`] to [`Mesh::subscribe`]rs. [`Mesh::watch`] (feature
//! `watch`) reloads when a config file changes.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_mesh::Error> {
//! use tower_mesh::Mesh;
//!
//! let mesh = Mesh::builder()
//!     .namespace("default")
//!     .config_str("my-app.yaml", r#"
//! apiVersion: networking.istio.io/v1
//! kind: ServiceEntry
//! metadata: {name: my-app}
//! spec:
//!   hosts: [my-app.default.svc.cluster.local]
//!   location: MESH_INTERNAL
//!   resolution: STATIC
//!   ports: [{number: 80, name: http, protocol: HTTP}]
//!   endpoints: [{address: 127.0.0.1, ports: {http: 8081}}]
//! "#)
//!     .build()?;
//! assert_eq!(mesh.snapshot().version(), 1);
//! let mut events = mesh.subscribe();
//! let summary = mesh.reload().await?;
//! assert_eq!(summary.version, 2);
//! assert!(matches!(events.recv().await, Ok(tower_mesh::MeshEvent::Reloaded { version: 2, .. })));
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::dice::Dice;
use tokio::sync::broadcast;

use crate::client::MeshClient;
use crate::config::{ConfigSet, Loader};
use crate::error::Error;
use crate::pool::{Connect, Pools};
use crate::registry::{Endpoint, EndpointRegistry};
use crate::route::PathNormalization;
use crate::route::matcher::{MESH_GATEWAY, SourceIdentity};
use crate::snapshot::hosts::ClusterDomain;
use crate::snapshot::state::{ClusterKey, StateRegistry};
use crate::snapshot::{Snapshot, UserService};
use crate::validate::ValidationError;

/// Istio's `meshConfig.outboundTrafficPolicy.mode`: what happens to a request whose authority
/// names no service in the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum OutboundPolicy {
    /// `ALLOW_ANY` (Istio's default): the request goes straight to the authority (Envoy's
    /// `PassthroughCluster`), resolved with DNS.
    #[default]
    AllowAny,
    /// `REGISTRY_ONLY`: the request is answered 502 (Envoy's `BlackHoleCluster`).
    RegistryOnly,
}

/// The settings a [`Snapshot`] is compiled with: who this workload is and how it routes.
#[derive(Debug, Clone)]
pub struct MeshSettings {
    /// This workload's namespace and labels: short names resolve in this namespace, and
    /// `sourceNamespace` / `sourceLabels` match against it. Default namespace `default`.
    pub source: SourceIdentity,
    /// The cluster DNS domain (`cluster.local`).
    pub cluster_domain: ClusterDomain,
    /// Istio's root namespace (`istio-system`): its DestinationRules apply mesh-wide, after the
    /// caller's and the service's own namespace.
    pub root_namespace: String,
    /// Path normalisation before matching (Istio's `meshConfig.pathNormalization`, default
    /// `BASE`).
    pub path_normalization: PathNormalization,
    /// What to do with an authority that names no known service.
    pub outbound_policy: OutboundPolicy,
    /// The gateway whose routes apply: [`MESH_GATEWAY`] (`mesh`) for sidecar and client
    /// traffic, `<namespace>/<name>` for an ingress gateway.
    pub gateway: String,
    /// The mesh's SPIFFE trust domain (`cluster.local`): AuthorizationPolicy principals
    /// written with `cluster.local` match it, and workload identities are in it.
    pub trust_domain: String,
    /// This workload's locality (`region/zone/subzone`), for DestinationRule
    /// `localityLbSetting`; `None`: locality-aware balancing is off.
    pub locality: Option<String>,
    /// How many proxies in front of this workload are trusted to append to
    /// `x-forwarded-for` (Istio's `meshConfig.defaultConfig.gatewayTopology.numTrustedProxies`,
    /// Envoy's `xff_num_trusted_hops`; default 0). It decides the client address that
    /// forwarding reports and AuthorizationPolicy `remoteIpBlocks` match: 0 is the direct
    /// peer, `n` the `n`th address from the right of the received `x-forwarded-for`.
    pub num_trusted_proxies: u32,
}

impl Default for MeshSettings {
    fn default() -> Self {
        MeshSettings {
            source: SourceIdentity {
                namespace: "default".to_string(),
                labels: BTreeMap::new(),
            },
            cluster_domain: ClusterDomain::default(),
            root_namespace: "istio-system".to_string(),
            path_normalization: PathNormalization::default(),
            outbound_policy: OutboundPolicy::default(),
            gateway: MESH_GATEWAY.to_string(),
            locality: None,
            trust_domain: "cluster.local".to_string(),
            num_trusted_proxies: 0,
        }
    }
}

/// Where configuration comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// A YAML/JSON file, or a directory read recursively (`.yaml`, `.yml`, `.json`).
    Path(PathBuf),
    /// YAML text; `name` appears in error messages as its file name.
    Str {
        /// The name errors give as the file.
        name: String,
        /// The YAML.
        text: String,
    },
}

impl ConfigSource {
    /// A path source.
    pub fn path(path: impl Into<PathBuf>) -> Self {
        ConfigSource::Path(path.into())
    }

    /// A YAML text source named `name`.
    pub fn yaml(name: impl Into<String>, text: impl Into<String>) -> Self {
        ConfigSource::Str {
            name: name.into(),
            text: text.into(),
        }
    }

    fn load(&self, loader: &Loader) -> ConfigSet {
        match self {
            ConfigSource::Path(p) => loader.load_path(p),
            ConfigSource::Str { name, text } => loader.load_named_str(text, Path::new(name)),
        }
    }
}

/// Something that happened to the mesh, for subscribers ([`Mesh::subscribe`]): telemetry,
/// logs, tests. Later layers add their own (ejections, budget refusals, certificate rotation).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum MeshEvent {
    /// A new snapshot is serving.
    Reloaded {
        /// Its version (1 for the config the mesh was built with, +1 per reload).
        version: u64,
        /// Resources compiled.
        resources: usize,
        /// Validation warnings (the config was accepted).
        warnings: usize,
        /// How long reading, validating and compiling took.
        took: Duration,
    },
    /// A reload was refused; the previous snapshot keeps serving.
    ReloadFailed {
        /// The version still serving.
        serving: u64,
        /// What was wrong: the errors (first ones), joined.
        message: Arc<str>,
        /// The errors, all of them.
        errors: Arc<[ValidationError]>,
    },
    /// The file watcher failed (the config is no longer watched for this path).
    WatchError {
        /// What failed.
        message: Arc<str>,
    },
    /// Outlier detection ejected an endpoint of a cluster.
    Ejected {
        /// The cluster.
        cluster: ClusterKey,
        /// The endpoint.
        addr: std::net::SocketAddr,
        /// Until when (it returns at the first sweep after that).
        until: std::time::Instant,
        /// Which detector fired: `CONSECUTIVE_5XX`, `CONSECUTIVE_GATEWAY_FAILURE`,
        /// `CONSECUTIVE_LOCAL_ORIGIN_FAILURE`.
        reason: &'static str,
    },
    /// An ejected endpoint is back in service.
    Returned {
        /// The cluster.
        cluster: ClusterKey,
        /// The endpoint.
        addr: std::net::SocketAddr,
    },
    /// A retry is being made to a cluster (Envoy's `upstream_rq_retry`).
    Retried {
        /// The cluster.
        cluster: ClusterKey,
    },
    /// A retry was not made: the retry budget or `http.maxRetries` refused it, and the
    /// previous try's outcome was returned.
    RetryRefused {
        /// The cluster.
        cluster: ClusterKey,
        /// What refused it: `trafficPolicy.retryBudget` or `connectionPool.http.maxRetries`.
        limit: &'static str,
    },
    /// The workload identity rotated, failed to reload, or is about to expire
    /// ([`MeshBuilder::identity`]).
    Identity(crate::tls::IdentityEvent),
}

/// What a successful reload did.
#[derive(Debug, Clone)]
pub struct ReloadSummary {
    /// The version now serving.
    pub version: u64,
    /// Resources compiled.
    pub resources: usize,
    /// Resources of kinds tower-mesh does not model (skipped, as the CLI reports).
    pub skipped: usize,
    /// Validation warnings.
    pub warnings: Vec<ValidationError>,
    /// Time spent reading, validating and compiling.
    pub took: Duration,
}

/// What the mesh is serving and how its last reload went ([`Mesh::reload_status`]): what an
/// admin endpoint shows, e.g. "serving version 1, last reload failed: …".
#[derive(Debug, Clone)]
pub struct ReloadStatus {
    /// The version of the snapshot serving.
    pub serving: u64,
    /// When that snapshot started serving (the build, or the reload that published it).
    pub serving_since: std::time::SystemTime,
    /// The last reload attempted, if any since the mesh was built.
    pub last: Option<LastReload>,
}

/// One reload attempt ([`ReloadStatus::last`]).
#[derive(Debug, Clone)]
pub struct LastReload {
    /// When it finished.
    pub at: std::time::SystemTime,
    /// What came of it.
    pub outcome: ReloadOutcome,
}

/// How a reload ended.
#[derive(Debug, Clone)]
pub enum ReloadOutcome {
    /// A new snapshot is serving.
    Ok {
        /// Its version.
        version: u64,
    },
    /// The config was refused; the previous snapshot keeps serving.
    Failed {
        /// The first errors, one per line.
        message: Arc<str>,
        /// Every error.
        errors: Arc<[ValidationError]>,
    },
}

pub(crate) struct MeshInner {
    /// The last reload's outcome (a short sync lock, never held across `.await`).
    reload_status: Mutex<ReloadStatus>,
    pub(crate) snapshot: ArcSwap<Snapshot>,
    pub(crate) settings: Arc<MeshSettings>,
    pub(crate) endpoints: EndpointRegistry,
    pub(crate) state: StateRegistry,
    pub(crate) pools: Pools,
    pub(crate) dice: Dice,
    pub(crate) stack: crate::client::Routed,
    user_services: Vec<UserService>,
    loader: Loader,
    /// The sources; the lock also serialises reloads (held only on a blocking thread).
    sources: Mutex<Vec<ConfigSource>>,
    pub(crate) events: broadcast::Sender<MeshEvent>,
    /// JWKS fetched for `jwksUri`s, kept across reloads.
    jwks: crate::authn::JwksCache,
    /// The workload identity, when mTLS is on.
    pub(crate) identity: Option<crate::tls::IdentityManager>,
    #[cfg(feature = "metrics")]
    pub(crate) metrics: Option<crate::metrics::MeshMetrics>,
}

/// The mesh: the current config snapshot, the registries that outlive reloads, and the
/// factory of [`MeshClient`]s. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct Mesh {
    pub(crate) inner: Arc<MeshInner>,
}

impl fmt::Debug for Mesh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mesh")
            .field("version", &self.inner.snapshot.load().version())
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

impl Mesh {
    /// A builder with Istio's defaults: namespace `default`, cluster domain `cluster.local`,
    /// `BASE` path normalisation, `ALLOW_ANY` outbound traffic, no config.
    pub fn builder() -> MeshBuilder {
        MeshBuilder::default()
    }

    /// The snapshot serving now. Hold it for the duration of one request at most: a reload
    /// publishes a new one.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.inner.snapshot.load_full()
    }

    /// The settings this mesh compiles with.
    pub fn settings(&self) -> &MeshSettings {
        &self.inner.settings
    }

    /// The trusted proxy hops in front of this workload
    /// ([`MeshSettings::num_trusted_proxies`], [`MeshBuilder::num_trusted_proxies`]).
    pub fn num_trusted_proxies(&self) -> u32 {
        self.inner.settings.num_trusted_proxies
    }

    /// A client that routes requests by their authority through this mesh
    /// ([`MeshClient`]). Clients are cheap; all of them share the mesh's pools and state.
    pub fn client(&self) -> MeshClient {
        MeshClient::new(self.clone())
    }

    /// The endpoint registry: add static endpoints or a `Discover` stream at run time.
    pub fn endpoints(&self) -> &EndpointRegistry {
        &self.inner.endpoints
    }

    /// The connection pools (one per endpoint and TLS policy).
    pub fn pools(&self) -> &Pools {
        &self.inner.pools
    }

    /// The registry of per-destination state that survives reloads.
    pub fn state(&self) -> &StateRegistry {
        &self.inner.state
    }

    /// Subscribes to [`MeshEvent`]s. A subscriber that falls more than 1,024 events behind
    /// loses the oldest (`RecvError::Lagged`).
    pub fn subscribe(&self) -> broadcast::Receiver<MeshEvent> {
        self.inner.events.subscribe()
    }

    /// The version serving and the outcome of the last reload (for admin endpoints).
    pub fn reload_status(&self) -> ReloadStatus {
        self.inner
            .reload_status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_reload_status(&self, outcome: ReloadOutcome) {
        let now = std::time::SystemTime::now();
        let mut status = self
            .inner
            .reload_status
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let ReloadOutcome::Ok { version } = outcome {
            status.serving = version;
            status.serving_since = now;
        }
        status.last = Some(LastReload { at: now, outcome });
    }

    /// Reads the config sources again and, if they are valid, publishes the new snapshot.
    ///
    /// Parsing, validation and compilation run on a blocking thread. On errors the current
    /// snapshot keeps serving and the errors are returned ([`Error::Config`], or
    /// [`Error::Io`] if the blocking thread could not run).
    pub async fn reload(&self) -> Result<ReloadSummary, Error> {
        let mesh = self.clone();
        run_blocking(move || mesh.reload_blocking()).await
    }

    /// Replaces the config sources with `sources` and reloads from them; on errors the
    /// current snapshot *and* the current sources stay.
    pub async fn reload_from(
        &self,
        sources: impl IntoIterator<Item = ConfigSource>,
    ) -> Result<ReloadSummary, Error> {
        let mesh = self.clone();
        let sources: Vec<ConfigSource> = sources.into_iter().collect();
        run_blocking(move || mesh.reload_from_blocking(sources)).await
    }

    /// [`reload`](Self::reload) on the calling thread. Blocks it for as long as reading and
    /// compiling take: call it from a blocking context, not from an async task.
    pub fn reload_blocking(&self) -> Result<ReloadSummary, Error> {
        let mut sources = self
            .inner
            .sources
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let current = sources.clone();
        self.apply(&current, &mut sources)
    }

    /// [`reload_from`](Self::reload_from) on the calling thread.
    pub fn reload_from_blocking(&self, new: Vec<ConfigSource>) -> Result<ReloadSummary, Error> {
        let mut sources = self
            .inner
            .sources
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.apply(&new, &mut sources)
    }

    /// Loads `new`, and on success publishes it and stores it as the sources.
    fn apply(
        &self,
        new: &[ConfigSource],
        sources: &mut Vec<ConfigSource>,
    ) -> Result<ReloadSummary, Error> {
        let started = std::time::Instant::now();
        let inner = &self.inner;
        let serving = inner.snapshot.load().version();
        let version = serving + 1;
        let cx = CompileCx {
            loader: &inner.loader,
            settings: &inner.settings,
            user_services: &inner.user_services,
            endpoints: &inner.endpoints,
            state: &inner.state,
            jwks: &inner.jwks,
        };
        match compile(new, &cx, version) {
            Ok((snapshot, set_info)) => {
                let live = snapshot.cluster_keys();
                let resources = snapshot.resources();
                inner.snapshot.store(Arc::new(snapshot));
                let dropped = inner.state.retain(&live);
                // Pools of clusters that no longer exist close their idle connections.
                inner
                    .pools
                    .retain(|k| k.cluster.as_ref().is_none_or(|c| live.contains(c)));
                *sources = new.to_vec();
                let took = started.elapsed();
                tracing::info!(
                    version,
                    resources,
                    warnings = set_info.warnings.len(),
                    dropped_state = dropped,
                    took_ms = took.as_secs_f64() * 1e3,
                    "tower-mesh config reloaded"
                );
                #[cfg(feature = "metrics")]
                if let Some(m) = &inner.metrics {
                    m.serving(version, resources);
                    m.reloaded(true);
                }
                self.set_reload_status(ReloadOutcome::Ok { version });
                let _ = inner.events.send(MeshEvent::Reloaded {
                    version,
                    resources,
                    warnings: set_info.warnings.len(),
                    took,
                });
                Ok(ReloadSummary {
                    version,
                    resources,
                    skipped: set_info.skipped,
                    warnings: set_info.warnings,
                    took,
                })
            }
            Err(errors) => {
                let message: Arc<str> = summarize(&errors).into();
                tracing::warn!(
                    serving,
                    errors = errors.len(),
                    "tower-mesh config reload refused, version {serving} keeps serving: {message}"
                );
                #[cfg(feature = "metrics")]
                if let Some(m) = &inner.metrics {
                    m.reloaded(false);
                }
                let errors_shared: Arc<[ValidationError]> = errors.clone().into();
                self.set_reload_status(ReloadOutcome::Failed {
                    message: message.clone(),
                    errors: errors_shared.clone(),
                });
                let _ = inner.events.send(MeshEvent::ReloadFailed {
                    serving,
                    message,
                    errors: errors_shared,
                });
                Err(Error::Config(errors))
            }
        }
    }

    /// Reloads whenever a file under a [`ConfigSource::Path`] changes (debounced: a burst of
    /// changes within `debounce` makes one reload). Returns a guard; dropping it stops
    /// watching. Must be called within a tokio runtime.
    ///
    /// Failed reloads keep the old snapshot, as [`reload`](Self::reload) does, and are
    /// reported as [`MeshEvent::ReloadFailed`].
    #[cfg(feature = "watch")]
    pub fn watch(&self, debounce: Duration) -> Result<crate::watch::WatchGuard, Error> {
        let paths: Vec<PathBuf> = self
            .inner
            .sources
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter_map(|s| match s {
                ConfigSource::Path(p) => Some(p.clone()),
                ConfigSource::Str { .. } => None,
            })
            .collect();
        crate::watch::watch(self.clone(), paths, debounce)
    }

    #[cfg_attr(not(feature = "watch"), allow(dead_code))]
    pub(crate) fn send_event(&self, event: MeshEvent) {
        let _ = self.inner.events.send(event);
    }
}

/// Runs `f` on tokio's blocking pool.
async fn run_blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(join) => Err(Error::Io(std::io::Error::other(format!(
            "config reload task failed: {join}"
        )))),
    }
}

/// The first few errors, one per line.
fn summarize(errors: &[ValidationError]) -> String {
    const SHOWN: usize = 5;
    let mut out: Vec<String> = errors.iter().take(SHOWN).map(ToString::to_string).collect();
    if errors.len() > SHOWN {
        out.push(format!("… and {} more", errors.len() - SHOWN));
    }
    out.join("\n")
}

struct SetInfo {
    skipped: usize,
    warnings: Vec<ValidationError>,
}

/// What a compile reads besides the sources: the mesh's settings and its long-lived
/// registries.
struct CompileCx<'a> {
    loader: &'a Loader,
    settings: &'a Arc<MeshSettings>,
    user_services: &'a [UserService],
    endpoints: &'a EndpointRegistry,
    state: &'a StateRegistry,
    jwks: &'a crate::authn::JwksCache,
}

/// Load, validate, compile. Errors: every validation error (decode problems included).
fn compile(
    sources: &[ConfigSource],
    cx: &CompileCx<'_>,
    version: u64,
) -> Result<(Snapshot, SetInfo), Vec<ValidationError>> {
    let CompileCx {
        loader,
        settings,
        user_services,
        endpoints,
        state,
        jwks,
    } = *cx;
    let mut set = ConfigSet::default();
    for source in sources {
        set.extend(source.load(loader));
    }
    let report = crate::validate::validate(&set);
    let (errors, mut warnings): (Vec<_>, Vec<_>) =
        report.problems.into_iter().partition(|p| p.is_error());
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut compiled = Snapshot::compile(&set, settings, user_services, endpoints, state, version);
    let (errors, compile_warnings): (Vec<_>, Vec<_>) =
        compiled.warnings.into_iter().partition(|p| p.is_error());
    if !errors.is_empty() {
        return Err(errors);
    }
    warnings.extend(compile_warnings);
    let (security, security_warnings) = compile_security(&set, settings, jwks);
    warnings.extend(security_warnings);
    compiled.snapshot.set_security(security);
    Ok((
        compiled.snapshot,
        SetInfo {
            skipped: set.skipped.len(),
            warnings,
        },
    ))
}

/// The inbound policies of the workload (PeerAuthentication, RequestAuthentication,
/// AuthorizationPolicy), with their compile warnings.
fn compile_security(
    set: &ConfigSet,
    settings: &MeshSettings,
    jwks: &crate::authn::JwksCache,
) -> (crate::inbound::Security, Vec<ValidationError>) {
    let workload = &settings.source;
    let root = settings.root_namespace.as_str();
    let peer = crate::authn::PeerAuthn::compile(set, workload, root);
    let (jwt, jwt_warnings) = crate::authn::JwtAuthn::compile_with(set, workload, root, Some(jwks));
    let (authz, mut warnings) =
        crate::authz::AuthzPolicies::compile(set, workload, root, &settings.trust_domain);
    for w in jwt_warnings {
        tracing::warn!(policy = %w.policy, rule = w.rule, "RequestAuthentication: {w}");
    }
    warnings.retain(|w| !w.is_error());
    (crate::inbound::Security { peer, jwt, authz }, warnings)
}

/// Fetches `jwksUri`s through the mesh's own client (so DestinationRules, timeouts and
/// retries apply), as a weak reference: the cache lives inside the mesh.
#[derive(Default)]
struct MeshJwksFetcher {
    mesh: std::sync::OnceLock<std::sync::Weak<MeshInner>>,
}

/// The most bytes of a JWKS document read.
const MAX_JWKS_BYTES: usize = 1 << 20;

impl crate::authn::JwksFetcher for MeshJwksFetcher {
    fn fetch(
        &self,
        uri: &str,
    ) -> futures_core::future::BoxFuture<'static, Result<bytes::Bytes, crate::error::BoxError>>
    {
        let mesh = self
            .mesh
            .get()
            .and_then(std::sync::Weak::upgrade)
            .map(|inner| Mesh { inner });
        Box::pin(fetch_jwks(mesh, uri.to_string()))
    }
}

/// GETs a JWKS document through `mesh`'s client, at most [`MAX_JWKS_BYTES`].
async fn fetch_jwks(
    mesh: Option<Mesh>,
    uri: String,
) -> Result<bytes::Bytes, crate::error::BoxError> {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let Some(mesh) = mesh else {
        return Err("the mesh that owns this JWKS cache is gone".into());
    };
    let req =
        match http::Request::get(uri.as_str()).body(http_body_util::Empty::<bytes::Bytes>::new()) {
            Ok(req) => req,
            Err(e) => return Err(format!("jwksUri {uri}: {e}").into()),
        };
    let resp = match mesh.client().oneshot(req).await {
        Ok(resp) => resp,
        Err(never) => match never {},
    };
    if !resp.status().is_success() {
        return Err(format!("GET {uri}: HTTP {}", resp.status()).into());
    }
    let mut body = resp.into_body();
    let mut out = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(e) => return Err(format!("GET {uri}: {e}").into()),
        };
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > MAX_JWKS_BYTES {
                return Err(format!("GET {uri}: over {MAX_JWKS_BYTES} bytes").into());
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out.freeze())
}

/// Builds a [`Mesh`] ([`Mesh::builder`]).
#[derive(Default)]
pub struct MeshBuilder {
    sources: Vec<ConfigSource>,
    settings: MeshSettings,
    loader: Option<Loader>,
    user_services: Vec<UserService>,
    seed: Option<u64>,
    connector: Option<Arc<dyn Connect>>,
    identity: Option<crate::tls::IdentityManager>,
    dns_refresh: Option<Duration>,
    discovers: Vec<DiscoverStart>,
    #[cfg(feature = "metrics")]
    metrics: Option<crate::metrics::MeshMetrics>,
    #[cfg(feature = "metrics")]
    event_counters: Option<crate::telemetry::events::EventCounters>,
}

/// Starts a `Discover` stream feeding the registry (deferred until `build`).
type DiscoverStart =
    Box<dyn FnOnce(&EndpointRegistry) -> Result<(), crate::registry::RegistryError> + Send>;

impl fmt::Debug for MeshBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeshBuilder")
            .field("sources", &self.sources.len())
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl MeshBuilder {
    /// Adds a config file or directory (read recursively).
    pub fn config_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.sources.push(ConfigSource::Path(path.into()));
        self
    }

    /// Adds YAML text; `name` is what error messages give as its file.
    pub fn config_str(mut self, name: impl Into<String>, yaml: impl Into<String>) -> Self {
        self.sources.push(ConfigSource::yaml(name, yaml));
        self
    }

    /// Adds a config source.
    pub fn config(mut self, source: ConfigSource) -> Self {
        self.sources.push(source);
        self
    }

    /// How many proxies in front of this workload to trust in `x-forwarded-for` (Istio's
    /// `numTrustedProxies`, Envoy's `xff_num_trusted_hops`; default 0: the direct peer is the
    /// client). See [`MeshSettings::num_trusted_proxies`].
    pub fn num_trusted_proxies(mut self, n: u32) -> Self {
        self.settings.num_trusted_proxies = n;
        self
    }

    /// This workload's namespace (default `default`).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.settings.source.namespace = namespace.into();
        self
    }

    /// This workload's labels (for `sourceLabels` matches and DestinationRule
    /// `workloadSelector`).
    pub fn labels<K: Into<String>, V: Into<String>>(
        mut self,
        labels: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.settings.source.labels = labels
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        self
    }

    /// The cluster DNS domain (default `cluster.local`).
    pub fn cluster_domain(mut self, domain: &str) -> Self {
        self.settings.cluster_domain = ClusterDomain::new(domain);
        self
    }

    /// The mesh's SPIFFE trust domain (default `cluster.local`, Istio's default).
    pub fn trust_domain(mut self, trust_domain: impl Into<String>) -> Self {
        self.settings.trust_domain = trust_domain.into();
        self
    }

    /// Istio's root namespace (default `istio-system`).
    pub fn root_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.settings.root_namespace = namespace.into();
        self
    }

    /// Path normalisation before matching (default `BASE`; Istio's stricter
    /// `MERGE_SLASHES` and `DECODE_AND_MERGE_SLASHES` are available).
    pub fn path_normalization(mut self, mode: PathNormalization) -> Self {
        self.settings.path_normalization = mode;
        self
    }

    /// What to do with requests to hosts outside the registry (default `ALLOW_ANY`).
    pub fn outbound_policy(mut self, policy: OutboundPolicy) -> Self {
        self.settings.outbound_policy = policy;
        self
    }

    /// The gateway whose routes apply (default `mesh`; an ingress uses `<ns>/<name>`).
    pub fn gateway(mut self, gateway: impl Into<String>) -> Self {
        self.settings.gateway = gateway.into();
        self
    }

    /// This workload's locality, `region/zone/subzone` (for `localityLbSetting`).
    pub fn locality(mut self, locality: impl Into<String>) -> Self {
        self.settings.locality = Some(locality.into());
        self
    }

    /// Limits for parsing config (sizes, depth, aliases).
    pub fn loader(mut self, loader: Loader) -> Self {
        self.loader = Some(loader);
        self
    }

    /// Declares a service `host` with an HTTP port `port` served by `endpoints` — for
    /// services that no ServiceEntry describes (a static map). Static endpoints take
    /// precedence over config endpoints for the same (host, port). An empty list declares
    /// the service without endpoints (its requests get 503 `UH` until some are set through
    /// [`Mesh::endpoints`]).
    pub fn endpoints(
        mut self,
        host: impl Into<String>,
        port: u16,
        endpoints: impl IntoIterator<Item = Endpoint>,
    ) -> Self {
        self.user_services.push(UserService {
            host: host.into(),
            port,
            endpoints: endpoints.into_iter().collect(),
        });
        self
    }

    /// Declares a service `host` with an HTTP port `port` whose endpoints come from a
    /// `tower::discover::Discover` stream of [`Endpoint`]s (inserts and removals apply as
    /// they arrive; a stream that ends keeps its last set). The stream is driven by a task:
    /// [`build`](Self::build) must then run inside a tokio runtime.
    pub fn discover<D>(mut self, host: impl Into<String>, port: u16, discover: D) -> Self
    where
        D: tower::discover::Discover<Service = Endpoint> + Send + 'static,
        D::Key: Eq + Send + 'static,
        D::Error: Into<crate::error::BoxError> + Send,
    {
        let host = host.into();
        self.user_services.push(UserService {
            host: host.clone(),
            port,
            endpoints: Vec::new(),
        });
        self.discovers
            .push(Box::new(move |registry: &EndpointRegistry| {
                registry.discover(&host, port, discover)
            }));
        self
    }

    /// Seeds the dice of weighted routing, so a sequence of requests is reproducible.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// This workload's identity (SPIFFE certificate, key and trust bundle, rotated by the
    /// manager): inbound connections are served with mutual TLS per PeerAuthentication, and
    /// upstream connections originate `ISTIO_MUTUAL` per DestinationRule `tls` and auto mTLS
    /// (endpoints labelled `security.istio.io/tlsMode: istio`). Unless a
    /// [`connector`](Self::connector) is set, the mesh connects with
    /// [`TlsConnector`](crate::tls::TlsConnector) over this identity. Rotation events and
    /// expiry warnings become [`MeshEvent::Identity`] (when built inside a tokio runtime, the
    /// manager's refresh task is started too).
    pub fn identity(mut self, identity: crate::tls::IdentityManager) -> Self {
        self.identity = Some(identity);
        self
    }

    /// The connector upstream connections are made with (default: plaintext TCP, or
    /// [`TlsConnector`](crate::tls::TlsConnector) with an [`identity`](Self::identity)).
    pub fn connector(mut self, connector: Arc<dyn Connect>) -> Self {
        self.connector = Some(connector);
        self
    }

    /// How often ServiceEntry `resolution: DNS` hosts are resolved again (default 30 s).
    pub fn dns_refresh(mut self, every: Duration) -> Self {
        self.dns_refresh = Some(every);
        self
    }

    /// Registers the mesh's metrics in a prometheus-client `registry` (feature `metrics`):
    /// `tower_mesh_config_reloads_total{outcome}`, `tower_mesh_config_version`,
    /// `tower_mesh_config_resources`, and Istio's standard request metrics
    /// (`istio_requests_total`, `istio_request_duration_milliseconds`, `istio_request_bytes`,
    /// `istio_response_bytes`), reported by [`Mesh::inbound`] with `reporter="destination"`
    /// (see [`crate::telemetry`]; the outbound `reporter="source"` side is recorded by
    /// [`OutboundMetricsLayer`](crate::telemetry::OutboundMetricsLayer)), and counters fed by
    /// the [`MeshEvent`] stream: `tower_mesh_retries_total{cluster}`,
    /// `tower_mesh_retries_refused_total{cluster,limit}`,
    /// `tower_mesh_outlier_ejections_total{cluster,reason}`,
    /// `tower_mesh_outlier_returns_total{cluster}`, `tower_mesh_identity_rotations_total`,
    /// `tower_mesh_identity_reload_failures_total`, `tower_mesh_identity_expiry_warnings_total`,
    /// `tower_mesh_config_watch_errors_total` and `tower_mesh_events_missed_total`. Those are
    /// counted by a task that [`build`](Self::build) spawns, so build the mesh within a tokio
    /// runtime for them to count.
    #[cfg(feature = "metrics")]
    pub fn metrics(mut self, registry: &mut prometheus_client::registry::Registry) -> Self {
        self.metrics = Some(crate::metrics::MeshMetrics::register(registry));
        self.event_counters = Some(crate::telemetry::events::EventCounters::register(registry));
        self
    }

    /// Loads, validates and compiles the config, and returns the mesh serving version 1.
    ///
    /// Errors: the config's validation errors ([`Error::Config`]). Needs a tokio runtime only
    /// when the config has `resolution: DNS` ServiceEntries (their resolvers are tasks).
    pub fn build(self) -> Result<Mesh, Error> {
        let settings = Arc::new(self.settings);
        let loader = self.loader.unwrap_or_default();
        let mut endpoints = EndpointRegistry::new();
        if let Some(every) = self.dns_refresh {
            endpoints = endpoints.with_dns_refresh(every);
        }
        for svc in &self.user_services {
            if !svc.endpoints.is_empty() {
                endpoints.set_static(&svc.host, svc.port, svc.endpoints.clone());
            }
        }
        for start in self.discovers {
            start(&endpoints).map_err(|e| Error::Io(std::io::Error::other(e.to_string())))?;
        }
        let state = StateRegistry::new();
        let fetcher = Arc::new(MeshJwksFetcher::default());
        let jwks = crate::authn::JwksCache::new(fetcher.clone());
        let cx = CompileCx {
            loader: &loader,
            settings: &settings,
            user_services: &self.user_services,
            endpoints: &endpoints,
            state: &state,
            jwks: &jwks,
        };
        let (snapshot, _) = compile(&self.sources, &cx, 1).map_err(Error::Config)?;
        let seed = self.seed.unwrap_or_else(crate::dice::os_seed);
        let pools = match (self.connector, &self.identity) {
            (Some(c), _) => Pools::new(c),
            (None, Some(id)) => Pools::new(Arc::new(crate::tls::TlsConnector::new(id.clone()))),
            // Plaintext, and TLS where a DestinationRule or an `https` URI asks for it.
            (None, None) => Pools::new(Arc::new(crate::tls::TlsConnector::without_identity())),
        };
        let (events, _) = broadcast::channel(1024);
        let mtls = self
            .identity
            .as_ref()
            .map(|_| Arc::<str>::from(settings.trust_domain.as_str()));
        let stack = crate::client::build_stack(pools.clone(), events.clone(), seed, mtls);
        // Below the router: the outbound metrics, one label cache per mesh.
        #[cfg(feature = "metrics")]
        let stack = tower::Layer::layer(
            &crate::telemetry::OutboundMetricsLayer::from_parts(
                self.metrics.as_ref(),
                &settings,
                self.identity.as_ref(),
            ),
            stack,
        );
        if let (Some(id), Ok(rt)) = (&self.identity, tokio::runtime::Handle::try_current()) {
            let mut rx = id.subscribe();
            let sink = events.clone();
            rt.spawn(async move {
                loop {
                    match rx.recv().await {
                        Ok(event) => {
                            let _ = sink.send(MeshEvent::Identity(event));
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => break,
                    }
                }
            });
            // The refresh task ends by itself when the last manager clone is dropped.
            drop(id.spawn_refresh());
        }
        #[cfg(feature = "metrics")]
        if let Some(m) = &self.metrics {
            m.serving(1, snapshot.resources());
        }
        #[cfg(feature = "metrics")]
        if let Some(counters) = self.event_counters {
            counters.spawn(events.subscribe());
        }
        let mesh = Mesh {
            inner: Arc::new(MeshInner {
                reload_status: Mutex::new(ReloadStatus {
                    serving: 1,
                    serving_since: std::time::SystemTime::now(),
                    last: None,
                }),
                snapshot: ArcSwap::from_pointee(snapshot),
                settings,
                endpoints,
                state,
                pools,
                dice: Dice::new(seed),
                stack,
                user_services: self.user_services,
                loader,
                sources: Mutex::new(self.sources),
                events,
                jwks,
                identity: self.identity,
                #[cfg(feature = "metrics")]
                metrics: self.metrics,
            }),
        };
        let _ = fetcher.mesh.set(Arc::downgrade(&mesh.inner));
        Ok(mesh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SE: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: my-app}
spec:
  hosts: [my-app.default.svc.cluster.local]
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.1}]
"#;

    #[cfg(feature = "metrics")]
    #[tokio::test]
    async fn reloads_are_counted_in_the_registry() {
        let mut registry = prometheus_client::registry::Registry::default();
        let mesh = Mesh::builder()
            .config_str("se.yaml", SE)
            .metrics(&mut registry)
            .build();
        let Ok(mesh) = mesh else {
            panic!("valid config refused")
        };
        assert!(mesh.reload().await.is_ok());
        let bad = mesh
            .reload_from([ConfigSource::yaml("bad.yaml", "kind: [")])
            .await;
        assert!(matches!(bad, Err(Error::Config(_))));
        assert_eq!(mesh.snapshot().version(), 2);
        let mut text = String::new();
        assert!(prometheus_client::encoding::text::encode(&mut text, &registry).is_ok());
        for line in [
            "tower_mesh_config_version 2",
            "tower_mesh_config_reloads_total{outcome=\"ok\"} 1",
            "tower_mesh_config_reloads_total{outcome=\"failed\"} 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn an_invalid_first_config_is_refused_with_its_errors() {
        let err = Mesh::builder()
            .config_str("bad.yaml", "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: x}\nspec: {hosts: [x], http: [{route: [{destination: {host: x}, weight: -1}]}]}\n")
            .build();
        let Err(Error::Config(errors)) = err else {
            panic!("accepted an invalid config: {err:?}")
        };
        assert!(
            errors.iter().any(|e| e.path.contains("weight")),
            "{errors:?}"
        );
    }
}
