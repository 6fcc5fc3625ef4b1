//! Outbound TLS: the typed origination policy ([`Originate`], DestinationRule `tls`) and the
//! pool connector that originates it ([`TlsConnector`]).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rustls::ClientConfig;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use super::config::{alpn_is_h2, origination_config};
use super::identity::TrustBundle;
use super::rotate::IdentityManager;
use super::spiffe::SpiffeId;
use super::verify::{ExpectedSan, describe_handshake_error};
use crate::config::destination_rule::{ClientTlsMode, ClientTlsSettings};
use crate::error::{BoxError, Error, ResetReason};
use crate::pool::{
    Connect, ConnectFuture, ConnectTarget, Connected, TcpConnector, TlsPolicy, UpstreamProtocol,
};

/// The TLS a connection originates: DestinationRule `trafficPolicy.tls` compiled for one
/// destination. Plain data (`Hash + Eq` by content): it is part of a pool key, so two
/// destinations reaching one endpoint with different TLS never share connections.
/// `tls.mode: DISABLE` is [`TlsPolicy::Plaintext`], not an `Originate`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Originate {
    /// `ISTIO_MUTUAL` (and auto mTLS to an endpoint labelled
    /// `security.istio.io/tlsMode: istio`): present our X.509-SVID from the
    /// [`IdentityManager`]; the server must present one of `expected` (`subjectAltNames`, else
    /// the endpoint's service account; any id of our trust domains when empty).
    IstioMutual {
        /// The acceptable server identities.
        expected: Arc<[ExpectedSan]>,
        /// `sni`: the SNI to send; `None` = the target's server name.
        sni: Option<Arc<str>>,
    },
    /// `MUTUAL`: present the certificate and key from `clientCertificate` / `privateKey`,
    /// verify the server against `caCertificates`.
    Mutual {
        /// `clientCertificate` (PEM chain).
        client_certificate: PathBuf,
        /// `privateKey` (PEM).
        private_key: PathBuf,
        /// `caCertificates` (PEM bundle); `None` = the system's root certificates.
        ca_certificates: Option<PathBuf>,
        /// `sni`; `None` = the target's server name.
        sni: Option<Arc<str>>,
        /// `subjectAltNames`: the server certificate must match one; empty = the SNI name.
        subject_alt_names: Arc<[ExpectedSan]>,
    },
    /// `SIMPLE`: TLS without a client certificate, the server verified against
    /// `caCertificates`, or the system's root certificates without them (as Istio does).
    Simple {
        /// `caCertificates` (PEM bundle); `None` = the system's root certificates.
        ca_certificates: Option<PathBuf>,
        /// `sni`; `None` = the target's server name.
        sni: Option<Arc<str>>,
        /// `subjectAltNames`: the server certificate must match one; empty = the SNI name.
        subject_alt_names: Arc<[ExpectedSan]>,
    },
}

/// Why a DestinationRule `tls` block cannot be originated by tower-mesh.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OriginateError {
    /// `MUTUAL` without `clientCertificate` or `privateKey`.
    #[error("tls.mode MUTUAL needs clientCertificate and privateKey")]
    NoClientCertificate,
    /// `credentialName` (a Kubernetes secret) is not available in-process.
    #[error("tls.credentialName {0:?} is not supported in-process: use the file fields")]
    CredentialName(String),
    /// `insecureSkipVerify: true` is refused (fail closed).
    #[error("tls.insecureSkipVerify is not supported: tower-mesh always verifies servers")]
    InsecureSkipVerify,
    /// `caCrl` is refused rather than silently ignored.
    #[error("tls.caCrl is not supported: revocation lists are not checked")]
    CaCrl,
}

fn opt(s: &str) -> Option<Arc<str>> {
    (!s.is_empty()).then(|| s.into())
}

impl Originate {
    /// `ISTIO_MUTUAL` expecting any of `expected`.
    pub fn istio_mutual(expected: impl IntoIterator<Item = ExpectedSan>) -> Originate {
        Originate::IstioMutual {
            expected: expected.into_iter().collect(),
            sni: None,
        }
    }

    /// The policy for a DestinationRule `tls` block: `Ok(None)` for `DISABLE` (or no mode);
    /// for `ISTIO_MUTUAL` the expected server identities are `subjectAltNames`, else
    /// `endpoint_identity` (the SPIFFE ID of the endpoint's service account), else any.
    pub fn from_settings(
        tls: &ClientTlsSettings,
        endpoint_identity: Option<&SpiffeId>,
    ) -> Result<Option<Originate>, OriginateError> {
        let mode = match tls.mode {
            None | Some(ClientTlsMode::Disable) => return Ok(None),
            Some(mode) => mode,
        };
        if tls.insecure_skip_verify == Some(true) {
            return Err(OriginateError::InsecureSkipVerify);
        }
        if !tls.ca_crl.is_empty() {
            return Err(OriginateError::CaCrl);
        }
        let sans: Arc<[ExpectedSan]> = tls
            .subject_alt_names
            .iter()
            .map(|s| ExpectedSan::parse(s))
            .collect();
        let sni = opt(&tls.sni);
        if mode == ClientTlsMode::IstioMutual {
            let expected = if sans.is_empty() {
                endpoint_identity
                    .map(|id| ExpectedSan::Spiffe(id.clone()))
                    .into_iter()
                    .collect()
            } else {
                sans
            };
            return Ok(Some(Originate::IstioMutual { expected, sni }));
        }
        if !tls.credential_name.is_empty() {
            return Err(OriginateError::CredentialName(tls.credential_name.clone()));
        }
        let ca_certificates =
            (!tls.ca_certificates.is_empty()).then(|| PathBuf::from(&tls.ca_certificates));
        if mode == ClientTlsMode::Mutual {
            if tls.client_certificate.is_empty() || tls.private_key.is_empty() {
                return Err(OriginateError::NoClientCertificate);
            }
            return Ok(Some(Originate::Mutual {
                client_certificate: tls.client_certificate.clone().into(),
                private_key: tls.private_key.clone().into(),
                ca_certificates,
                sni,
                subject_alt_names: sans,
            }));
        }
        Ok(Some(Originate::Simple {
            ca_certificates,
            sni,
            subject_alt_names: sans,
        }))
    }

    fn sni(&self) -> Option<&Arc<str>> {
        match self {
            Originate::IstioMutual { sni, .. }
            | Originate::Mutual { sni, .. }
            | Originate::Simple { sni, .. } => sni.as_ref(),
        }
    }
}

impl fmt::Display for Originate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = |sans: &[ExpectedSan]| {
            sans.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            Originate::IstioMutual { expected, .. } => {
                write!(f, "ISTIO_MUTUAL [{}]", names(expected))
            }
            Originate::Mutual {
                ca_certificates,
                subject_alt_names,
                ..
            } => write!(
                f,
                "MUTUAL (ca {}) [{}]",
                ca_name(ca_certificates.as_deref()),
                names(subject_alt_names)
            ),
            Originate::Simple {
                ca_certificates,
                subject_alt_names,
                ..
            } => write!(
                f,
                "SIMPLE (ca {}) [{}]",
                ca_name(ca_certificates.as_deref()),
                names(subject_alt_names)
            ),
        }
    }
}

/// How a CA bundle is named in messages.
fn ca_name(ca: Option<&Path>) -> String {
    ca.map_or_else(|| "system roots".to_string(), |p| p.display().to_string())
}

/// The operating system's root certificates (blocking: reads the system store). Certificates
/// the store holds but webpki cannot use are skipped; none at all is an error.
fn system_roots() -> Result<TrustBundle, String> {
    let found = rustls_native_certs::load_native_certs();
    if found.certs.is_empty() {
        let why: Vec<String> = found.errors.iter().map(|e| e.to_string()).collect();
        return Err(format!(
            "no system root certificates found ({}): set caCertificates to a PEM bundle",
            if why.is_empty() {
                "empty store".to_string()
            } else {
                why.join("; ")
            }
        ));
    }
    TrustBundle::new(found.certs).map_err(|e| format!("system root certificates: {e}"))
}

impl Originate {
    /// `SIMPLE` against the system's root certificates, the SNI and expected name being the
    /// target's host: what a request with an `https` URI gets when no DestinationRule says
    /// otherwise.
    pub fn https() -> Originate {
        Originate::Simple {
            ca_certificates: None,
            sni: None,
            subject_alt_names: Arc::from([]),
        }
    }
}

fn failure(detail: String) -> BoxError {
    Box::new(Error::UpstreamReset {
        reason: ResetReason::ConnectionFailure,
        transport_failure: Some(detail),
    })
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))
}

/// Builds the client configuration of a `SIMPLE`/`MUTUAL` policy from its files (blocking).
fn load_files(origin: &Originate, protocol: UpstreamProtocol) -> Result<Arc<ClientConfig>, String> {
    let (ca, client, sans) = match origin {
        Originate::IstioMutual { .. } => {
            return Err("ISTIO_MUTUAL has no files".into());
        }
        Originate::Simple {
            ca_certificates,
            subject_alt_names,
            ..
        } => (ca_certificates, None, subject_alt_names),
        Originate::Mutual {
            client_certificate,
            private_key,
            ca_certificates,
            subject_alt_names,
            ..
        } => (
            ca_certificates,
            Some((client_certificate, private_key)),
            subject_alt_names,
        ),
    };
    let bundle = match ca {
        Some(ca) => {
            TrustBundle::from_pem(&read(ca)?).map_err(|e| format!("{}: {e}", ca.display()))?
        }
        None => system_roots()?,
    };
    let client = match client {
        None => None,
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(&read(cert)?)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("{}: bad PEM: {e}", cert.display()))?;
            if chain.is_empty() {
                return Err(format!("{}: no certificate", cert.display()));
            }
            let pkey = PrivateKeyDer::from_pem_slice(&read(key)?)
                .map_err(|e| format!("{}: no usable private key: {e}", key.display()))?;
            let certified =
                CertifiedKey::from_der(chain, pkey, &super::provider()).map_err(|e| {
                    format!(
                        "{}: private key does not go with {}: {e}",
                        key.display(),
                        cert.display()
                    )
                })?;
            Some(Arc::new(certified))
        }
    };
    origination_config(bundle, sans, client, protocol).map_err(|e| e.to_string())
}

type FileKey = (Arc<Originate>, UpstreamProtocol);
type FileCache = Arc<Mutex<HashMap<FileKey, (Instant, Arc<ClientConfig>)>>>;

/// The pool connector for mesh traffic: plaintext for [`TlsPolicy::Plaintext`], TLS per the
/// [`Originate`] policy otherwise.
///
/// - `ISTIO_MUTUAL` presents the [`IdentityManager`]'s current certificate (rotations apply to
///   the next connection) and offers Istio's ALPN (`istio-http/1.1, istio, http/1.1` or
///   `istio-h2, istio, h2`); a connector built [`without_identity`](Self::without_identity)
///   refuses it.
/// - `SIMPLE` / `MUTUAL` read their PEM files on tokio's blocking pool and cache the result
///   for the file refresh period (default 30 s; a file that turns bad keeps the last good
///   configuration), and offer plain `http/1.1` / `h2`.
///
/// The SNI is the policy's `sni`, else the target's server name (none is sent for an IP).
/// [`Connected::alpn_h2`] is true when `h2` or `istio-h2` was negotiated. Failures are
/// `UpstreamReset { reason: ConnectionFailure }` whose transport failure reason is the TLS
/// error (`TLS error: invalid peer certificate: peer spiffe://… is not one of […]`), as
/// Envoy reports TLS failures in its `upstream connect error … transport failure reason`.
pub struct TlsConnector {
    identity: Option<IdentityManager>,
    tcp: TcpConnector,
    files: FileCache,
    file_refresh: Duration,
}

impl fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConnector")
            .field("identity", &self.identity)
            .field("file_refresh", &self.file_refresh)
            .finish_non_exhaustive()
    }
}

impl TlsConnector {
    /// A connector presenting `identity` for `ISTIO_MUTUAL`.
    pub fn new(identity: IdentityManager) -> TlsConnector {
        TlsConnector {
            identity: Some(identity),
            ..Self::without_identity()
        }
    }

    /// A connector with no workload identity: plaintext, `SIMPLE` and `MUTUAL` only.
    pub fn without_identity() -> TlsConnector {
        TlsConnector {
            identity: None,
            tcp: TcpConnector::new(),
            files: Arc::new(Mutex::new(HashMap::new())),
            file_refresh: Duration::from_secs(30),
        }
    }

    /// How long `SIMPLE`/`MUTUAL` files are cached before being read again.
    pub fn with_file_refresh(mut self, period: Duration) -> TlsConnector {
        self.file_refresh = period;
        self
    }

    fn cached_files(&self, key: &FileKey) -> Option<(bool, Arc<ClientConfig>)> {
        let files = self.files.lock().unwrap_or_else(PoisonError::into_inner);
        files
            .get(key)
            .map(|(at, config)| (at.elapsed() < self.file_refresh, config.clone()))
    }
}

impl Connect for TlsConnector {
    fn connect(&self, target: &ConnectTarget) -> ConnectFuture {
        let origin = match &target.tls {
            TlsPolicy::Plaintext => return self.tcp.connect(target),
            TlsPolicy::Tls(origin) => origin.clone(),
        };
        let protocol = target.protocol;
        // The configuration: synchronous for ISTIO_MUTUAL (cached by the manager), a cache hit
        // or a blocking-pool file read for SIMPLE/MUTUAL.
        enum Plan {
            Ready(Arc<ClientConfig>),
            Load {
                key: FileKey,
                stale: Option<Arc<ClientConfig>>,
            },
        }
        let plan = match &*origin {
            Originate::IstioMutual { expected, .. } => match &self.identity {
                None => {
                    let detail = format!(
                        "TLS policy {origin} needs a workload identity: build the TlsConnector \
                         with an IdentityManager"
                    );
                    return Box::pin(async move { Err(failure(detail)) });
                }
                Some(identity) => match identity.client_config(expected, protocol) {
                    Ok(config) => Plan::Ready(config),
                    Err(e) => {
                        let detail = format!("TLS error: {e}");
                        return Box::pin(async move { Err(failure(detail)) });
                    }
                },
            },
            _ => {
                let key = (origin.clone(), protocol);
                match self.cached_files(&key) {
                    Some((true, config)) => Plan::Ready(config),
                    Some((false, config)) => Plan::Load {
                        key,
                        stale: Some(config),
                    },
                    None => Plan::Load { key, stale: None },
                }
            }
        };
        let files = self.files.clone();
        let name: Arc<str> = origin
            .sni()
            .cloned()
            .unwrap_or_else(|| target.server_name.clone());
        let addr = target.addr;
        let tcp_target = ConnectTarget {
            tls: TlsPolicy::Plaintext,
            ..target.clone()
        };
        let tcp = self.tcp.connect(&tcp_target);
        let is_mesh = matches!(&*origin, Originate::IstioMutual { .. });
        Box::pin(async move {
            let config = match plan {
                Plan::Ready(config) => config,
                Plan::Load { key, stale } => {
                    let (origin, protocol) = (key.0.clone(), key.1);
                    let loaded = tokio::task::spawn_blocking(move || load_files(&origin, protocol))
                        .await
                        .map_err(|e| failure(format!("TLS configuration: {e}")))?;
                    match (loaded, stale) {
                        (Ok(config), _) => {
                            files
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .insert(key, (Instant::now(), config.clone()));
                            config
                        }
                        (Err(e), Some(stale)) => {
                            tracing::warn!(
                                target: "tower_mesh::tls", policy = %key.0, error = %e,
                                "TLS files could not be reloaded; using the last good ones"
                            );
                            stale
                        }
                        (Err(e), None) => return Err(failure(format!("TLS configuration: {e}"))),
                    }
                }
            };
            let server_name = match ServerName::try_from(name.to_string()) {
                Ok(n) => n,
                // SVIDs carry no DNS name: for ISTIO_MUTUAL the name is only SNI, so an
                // unusable one is replaced by the address (no SNI is sent).
                Err(_) if is_mesh => ServerName::IpAddress(addr.ip().into()),
                Err(_) => {
                    return Err(failure(format!(
                        "TLS error: {name:?} is not a valid server name to verify; set tls.sni"
                    )));
                }
            };
            let tcp = tcp.await?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(server_name, tcp.io)
                .await
                .map_err(|e| failure(format!("TLS error: {}", describe_handshake_error(&e))))?;
            let h2 = tls.get_ref().1.alpn_protocol().is_some_and(alpn_is_h2);
            Ok(Connected::new(tls, h2))
        })
    }
}
