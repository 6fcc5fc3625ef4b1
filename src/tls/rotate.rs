//! Rotation without restart and expiry warnings: [`IdentityManager`].

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::{ClientConfig, ServerConfig};
use tokio::sync::broadcast;

use super::cert;
use super::config::{SERVER_ALPN, client_config};
use super::identity::{IdentityError, IdentitySource, Revision, StaticIdentity, WorkloadIdentity};
use super::spiffe::SpiffeId;
use super::verify::{ClientAuth, ExpectedSan};
use crate::pool::UpstreamProtocol;

/// How an [`IdentityManager`] refreshes and warns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentitySettings {
    /// How often the source is checked for a new identity (default 30 s; tests use less).
    pub refresh: Duration,
    /// Warn when the certificate has less than this left. `None` (the default): a fifth of
    /// the certificate's lifetime, at most 24 h.
    pub expiry_warning: Option<Duration>,
}

impl Default for IdentitySettings {
    fn default() -> Self {
        IdentitySettings {
            refresh: Duration::from_secs(30),
            expiry_warning: None,
        }
    }
}

/// A certificate close to (or past) its `notAfter`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiryWarning {
    /// The identity.
    pub spiffe_id: SpiffeId,
    /// The certificate's serial number (hex).
    pub serial: Arc<str>,
    /// Its `notAfter`.
    pub not_after: SystemTime,
    /// Time left (zero when expired).
    pub remaining: Duration,
}

/// What an [`IdentityManager`] reports (forwarded to `MeshEvent` by the mesh).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum IdentityEvent {
    /// A new certificate is in use for new handshakes.
    Rotated {
        /// The identity.
        spiffe_id: SpiffeId,
        /// The new certificate's serial (hex).
        serial: Arc<str>,
        /// Its `notAfter`.
        not_after: SystemTime,
        /// The manager's generation (1 for the identity it started with, +1 per rotation).
        generation: u64,
    },
    /// The source changed but the new identity was refused; the previous one keeps serving.
    ReloadFailed {
        /// The source ([`IdentitySource::describe`]).
        source: Arc<str>,
        /// Why.
        error: IdentityError,
    },
    /// The current certificate expires soon, or has expired (`remaining` zero).
    Expiring(ExpiryWarning),
}

struct Published {
    identity: Arc<WorkloadIdentity>,
    generation: u64,
    revision: Revision,
    server_required: Arc<ServerConfig>,
    server_optional: Arc<ServerConfig>,
}

type ClientKey = (Arc<[ExpectedSan]>, UpstreamProtocol);

struct Shared {
    source: Arc<dyn IdentitySource>,
    settings: IdentitySettings,
    current: ArcSwap<Published>,
    clients: Mutex<HashMap<ClientKey, (u64, Arc<ClientConfig>)>>,
    events: broadcast::Sender<IdentityEvent>,
    /// The revision last refused, so one bad file is loaded and reported once.
    last_failed: Mutex<Option<Revision>>,
    /// The last error reported, so a persistent one (a missing file) is reported once.
    last_reported: Mutex<Option<String>>,
    /// (generation, 0 = nothing said, 1 = expiring said, 2 = expired said).
    warned: Mutex<(u64, u8)>,
    /// One refresh at a time.
    refreshing: tokio::sync::Mutex<()>,
}

/// Rotation without restart: the manager polls an [`IdentitySource`], publishes rustls
/// configurations for the newest identity, and warns before the certificate expires.
///
/// Istio's istio-agent rotates workload certificates at half their lifetime (24 h by
/// default) and pushes them to Envoy over SDS; Envoy uses the new certificate for new
/// handshakes while established connections keep the one they negotiated. The manager does
/// the same for a process: every refresh period (default 30 s) it asks the source for its
/// [`Revision`] (for [`PemFiles`](super::PemFiles): modification times and sizes) and, when it
/// changed, loads and checks the new material on tokio's blocking pool. A good identity is
/// published atomically (arc-swap): [`server_config`](IdentityManager::server_config) and
/// [`client_config`](IdentityManager::client_config) return configurations built for it, so
/// the next handshake presents the new certificate; connections already established are
/// untouched. A bad one (half-written files, a key that does not match, an expired
/// certificate) is reported once ([`IdentityEvent::ReloadFailed`] and a `tracing` warning)
/// and the old identity keeps serving.
///
/// **Expiry warning**: when the current certificate has less than
/// [`IdentitySettings::expiry_warning`] left (default: a fifth of its lifetime, at most 24 h;
/// so 4.8 h for Istio's 24 h certificates, 24 h for a one-year certificate), the manager logs
/// `tracing::warn!` (target `tower_mesh::tls`) and sends [`IdentityEvent::Expiring`], once per
/// certificate, and once more when it has expired.
///
/// ```no_run
/// # async fn demo() -> Result<(), tower_mesh::tls::IdentityError> {
/// use tower_mesh::tls::{ClientAuth, IdentityManager, IdentitySettings, PemFiles};
///
/// let manager = IdentityManager::new(PemFiles::in_dir("/etc/certs"), IdentitySettings::default())?;
/// let _task = manager.spawn_refresh();
/// let mut events = manager.subscribe();
/// let acceptor = tokio_rustls::TlsAcceptor::from(manager.server_config(ClientAuth::Required));
/// # let _ = (acceptor, events.recv().await); Ok(()) }
/// ```
///
/// Cloning is cheap and clones share everything.
#[derive(Clone)]
pub struct IdentityManager {
    shared: Arc<Shared>,
}

impl fmt::Debug for IdentityManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let current = self.shared.current.load();
        f.debug_struct("IdentityManager")
            .field("source", &self.shared.source.describe())
            .field("identity", &current.identity)
            .field("generation", &current.generation)
            .finish()
    }
}

fn tls_error(e: rustls::Error) -> IdentityError {
    IdentityError::Source(Arc::new(e))
}

fn publish(
    identity: WorkloadIdentity,
    generation: u64,
    revision: Revision,
) -> Result<Published, IdentityError> {
    let now = SystemTime::now();
    if identity.not_after() <= now {
        return Err(IdentityError::Expired {
            id: identity.spiffe_id().clone(),
            not_after: cert::fmt_time(cert::unix_secs(identity.not_after())),
        });
    }
    let server_required =
        super::server_config(&identity, ClientAuth::Required, SERVER_ALPN).map_err(tls_error)?;
    let server_optional =
        super::server_config(&identity, ClientAuth::Optional, SERVER_ALPN).map_err(tls_error)?;
    Ok(Published {
        identity: Arc::new(identity),
        generation,
        revision,
        server_required,
        server_optional,
    })
}

fn same_material(a: &WorkloadIdentity, b: &WorkloadIdentity) -> bool {
    a.chain() == b.chain()
        && a.key().secret_der() == b.key().secret_der()
        && a.bundle().roots() == b.bundle().roots()
        && a.trust_domains() == b.trust_domains()
}

impl IdentityManager {
    /// Loads the identity from `source` now, on the calling thread (it may block on file
    /// I/O: call it at start-up or inside `spawn_blocking`). Fails when the source fails or
    /// the certificate has expired. Call [`spawn_refresh`](Self::spawn_refresh) to follow
    /// rotations.
    pub fn new(
        source: impl IdentitySource,
        settings: IdentitySettings,
    ) -> Result<IdentityManager, IdentityError> {
        let source: Arc<dyn IdentitySource> = Arc::new(source);
        let revision = source.revision()?;
        let published = publish(source.load()?, 1, revision)?;
        tracing::info!(
            target: "tower_mesh::tls",
            spiffe_id = %published.identity.spiffe_id(),
            serial = %published.identity.serial(),
            not_after = %cert::fmt_time(cert::unix_secs(published.identity.not_after())),
            source = %source.describe(),
            "workload identity loaded"
        );
        let (events, _) = broadcast::channel(16);
        Ok(IdentityManager {
            shared: Arc::new(Shared {
                source,
                settings,
                current: ArcSwap::from_pointee(published),
                clients: Mutex::new(HashMap::new()),
                events,
                last_failed: Mutex::new(None),
                last_reported: Mutex::new(None),
                warned: Mutex::new((0, 0)),
                refreshing: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// A manager for a fixed in-memory identity ([`StaticIdentity`]); refreshing only
    /// re-checks expiry.
    pub fn from_identity(identity: WorkloadIdentity) -> Result<IdentityManager, IdentityError> {
        Self::new(StaticIdentity::new(identity), IdentitySettings::default())
    }

    /// Starts polling the source every [`IdentitySettings::refresh`] (the first check runs
    /// at once, so an already-close expiry is reported). The task ends by itself when the
    /// last clone of the manager is dropped. Needs a tokio runtime.
    pub fn spawn_refresh(&self) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Shared> = Arc::downgrade(&self.shared);
        let period = self.shared.settings.refresh.max(Duration::from_millis(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(shared) = weak.upgrade() else { break };
                // Errors are reported through events and logs.
                let _ = IdentityManager { shared }.refresh().await;
            }
        })
    }

    /// Checks the source now: reloads and publishes when its revision changed, then checks
    /// expiry. `Ok(true)` when a new certificate was published; an error when the new
    /// material was refused or the source could not be read (the previous identity keeps
    /// serving). Each bad revision is loaded and reported once, and an error that persists
    /// (a missing file) is reported once, not at every refresh.
    pub async fn refresh(&self) -> Result<bool, IdentityError> {
        let _one = self.shared.refreshing.lock().await;
        let result = self.reload().await;
        let text = result.as_ref().err().map(ToString::to_string);
        let repeated = {
            let mut last = self
                .shared
                .last_reported
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let repeated = text.is_some() && *last == text;
            *last = text;
            repeated
        };
        if let Err(error) = &result
            && !repeated
        {
            let source: Arc<str> = self.shared.source.describe().into();
            tracing::warn!(
                target: "tower_mesh::tls",
                %error, %source,
                "new workload identity refused; the previous one keeps serving"
            );
            let _ = self.shared.events.send(IdentityEvent::ReloadFailed {
                source,
                error: error.clone(),
            });
        }
        self.check_expiry(SystemTime::now());
        result
    }

    async fn reload(&self) -> Result<bool, IdentityError> {
        let source = self.shared.source.clone();
        let revision = tokio::task::spawn_blocking(move || source.revision())
            .await
            .map_err(|e| IdentityError::Source(Arc::new(e)))??;
        let current = self.shared.current.load_full();
        if revision == current.revision {
            return Ok(false);
        }
        {
            let last = self
                .shared
                .last_failed
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if *last == Some(revision) {
                return Ok(false);
            }
        }
        let source = self.shared.source.clone();
        let generation = current.generation + 1;
        let loaded = tokio::task::spawn_blocking(move || {
            source
                .load()
                .and_then(|identity| publish(identity, generation, revision))
        })
        .await
        .map_err(|e| IdentityError::Source(Arc::new(e)))?;
        let published = match loaded {
            Ok(p) => p,
            Err(e) => {
                *self
                    .shared
                    .last_failed
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(revision);
                return Err(e);
            }
        };
        *self
            .shared
            .last_failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
        if same_material(&published.identity, &current.identity) {
            // Touched, not changed: keep the configurations (and their session caches).
            self.shared.current.store(Arc::new(Published {
                identity: current.identity.clone(),
                generation: current.generation,
                revision,
                server_required: current.server_required.clone(),
                server_optional: current.server_optional.clone(),
            }));
            return Ok(false);
        }
        let id = published.identity.clone();
        self.shared.current.store(Arc::new(published));
        self.shared
            .clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        tracing::info!(
            target: "tower_mesh::tls",
            spiffe_id = %id.spiffe_id(),
            serial = %id.serial(),
            not_after = %cert::fmt_time(cert::unix_secs(id.not_after())),
            generation,
            "workload identity rotated; new handshakes use the new certificate"
        );
        let _ = self.shared.events.send(IdentityEvent::Rotated {
            spiffe_id: id.spiffe_id().clone(),
            serial: id.serial().into(),
            not_after: id.not_after(),
            generation,
        });
        Ok(true)
    }

    /// The warning threshold for `identity`.
    fn threshold(&self, identity: &WorkloadIdentity) -> Duration {
        self.shared
            .settings
            .expiry_warning
            .unwrap_or_else(|| (identity.lifetime() / 5).min(Duration::from_secs(24 * 3600)))
    }

    /// Warns (log and event) when the current certificate is within the warning threshold
    /// of `now`, or past it; once per certificate for each. Returns the warning when one was
    /// sent.
    pub fn check_expiry(&self, now: SystemTime) -> Option<ExpiryWarning> {
        let current = self.shared.current.load();
        let identity = &current.identity;
        let remaining = identity.remaining(now);
        let level = if remaining.is_zero() {
            2
        } else if remaining <= self.threshold(identity) {
            1
        } else {
            return None;
        };
        {
            let mut warned = self
                .shared
                .warned
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if warned.0 == current.generation && warned.1 >= level {
                return None;
            }
            *warned = (current.generation, level);
        }
        let not_after = cert::fmt_time(cert::unix_secs(identity.not_after()));
        if level == 2 {
            tracing::warn!(
                target: "tower_mesh::tls",
                spiffe_id = %identity.spiffe_id(), serial = %identity.serial(), %not_after,
                "workload certificate has EXPIRED; peers will refuse handshakes until it is rotated"
            );
        } else {
            tracing::warn!(
                target: "tower_mesh::tls",
                spiffe_id = %identity.spiffe_id(), serial = %identity.serial(), %not_after,
                remaining = %cert::fmt_duration(remaining),
                "workload certificate expires soon and has not been rotated"
            );
        }
        let warning = ExpiryWarning {
            spiffe_id: identity.spiffe_id().clone(),
            serial: identity.serial().into(),
            not_after: identity.not_after(),
            remaining,
        };
        let _ = self
            .shared
            .events
            .send(IdentityEvent::Expiring(warning.clone()));
        Some(warning)
    }

    /// Events from now on (rotations, refused reloads, expiry warnings).
    pub fn subscribe(&self) -> broadcast::Receiver<IdentityEvent> {
        self.shared.events.subscribe()
    }

    /// The current identity.
    pub fn current(&self) -> Arc<WorkloadIdentity> {
        self.shared.current.load().identity.clone()
    }

    /// 1 for the identity the manager started with, +1 per rotation.
    pub fn generation(&self) -> u64 {
        self.shared.current.load().generation
    }

    /// The server configuration for the current identity ([`server_config`](super::server_config)
    /// with [`SERVER_ALPN`]). Take a fresh one per accepted connection (it is an `Arc`
    /// load): after a rotation it is a new configuration.
    pub fn server_config(&self, client_auth: ClientAuth) -> Arc<ServerConfig> {
        let current = self.shared.current.load();
        match client_auth {
            ClientAuth::Required => current.server_required.clone(),
            ClientAuth::Optional => current.server_optional.clone(),
        }
    }

    /// The `ISTIO_MUTUAL` client configuration for the current identity, `expected` server
    /// identities and `protocol` ([`client_config`](super::client_config)), cached until the
    /// next rotation.
    pub fn client_config(
        &self,
        expected: &[ExpectedSan],
        protocol: UpstreamProtocol,
    ) -> Result<Arc<ClientConfig>, rustls::Error> {
        let current = self.shared.current.load();
        let key: ClientKey = (expected.into(), protocol);
        let mut clients = self
            .shared
            .clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((generation, config)) = clients.get(&key)
            && *generation == current.generation
        {
            return Ok(config.clone());
        }
        let config = client_config(&current.identity, expected, protocol)?;
        clients.insert(key, (current.generation, config.clone()));
        Ok(config)
    }
}
