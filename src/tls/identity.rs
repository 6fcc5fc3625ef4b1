//! The workload's identity material — certificate chain, private key, trust bundle — and
//! where it comes from ([`IdentitySource`]: [`PemFiles`] on disk, [`StaticIdentity`] in
//! memory).
//!
//! Istio's sidecar gets the same three things from istio-agent over SDS (`default` = chain and
//! key, `ROOTCA` = bundle); with file-mounted certificates they are
//! `/etc/certs/{cert-chain.pem,key.pem,root-cert.pem}`, the names [`PemFiles::in_dir`] uses.

use std::collections::hash_map::DefaultHasher;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, TrustAnchor, UnixTime};

use super::cert::{self, CertInfo, SvidError};
use super::spiffe::SpiffeId;

/// Why identity material could not be loaded or is unusable.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The error concerns this file.
    #[error("{}: {error}", .path.display())]
    InFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        error: Box<IdentityError>,
    },
    /// A file could not be read.
    #[error("cannot read: {0}")]
    Read(#[source] Arc<io::Error>),
    /// Malformed PEM.
    #[error("bad PEM: {0}")]
    Pem(String),
    /// No `CERTIFICATE` block.
    #[error("no certificate (no `-----BEGIN CERTIFICATE-----` block)")]
    NoCertificate,
    /// No private key block.
    #[error("no private key (no PKCS#8, PKCS#1 or SEC1 `PRIVATE KEY` block)")]
    NoKey,
    /// The key could not be used (unsupported algorithm, malformed).
    #[error("unusable private key: {0}")]
    BadKey(String),
    /// The private key is not the leaf certificate's.
    #[error("the private key does not match the leaf certificate ({leaf})")]
    KeyMismatch {
        /// The leaf (its SPIFFE ID or subject), for the message.
        leaf: String,
    },
    /// The leaf certificate is not an X.509-SVID.
    #[error("{0}")]
    Svid(#[from] SvidError),
    /// The trust bundle has no certificate or a certificate that cannot be a trust anchor.
    #[error("bad trust bundle: {0}")]
    Bundle(String),
    /// The leaf does not chain to the trust bundle.
    #[error("the certificate for {id} does not chain to the trust bundle: {detail}")]
    NotIssuedByBundle {
        /// The leaf's SPIFFE ID.
        id: SpiffeId,
        /// The leaf's issuer, the bundle's roots and webpki's reason.
        detail: String,
    },
    /// The certificate is past its `notAfter`.
    #[error("the certificate for {id} expired at {not_after}")]
    Expired {
        /// Its SPIFFE ID.
        id: SpiffeId,
        /// When it expired (RFC 3339).
        not_after: String,
    },
    /// A custom [`IdentitySource`]'s error.
    #[error("{0}")]
    Source(Arc<dyn std::error::Error + Send + Sync>),
}

impl IdentityError {
    fn in_file(self, path: &Path) -> IdentityError {
        IdentityError::InFile {
            path: path.to_owned(),
            error: Box::new(self),
        }
    }
}

fn pem_error(e: rustls_pki_types::pem::Error) -> IdentityError {
    IdentityError::Pem(e.to_string())
}

/// The CA certificates a workload trusts for peer certificates (Istio's `ROOTCA`), and the
/// trust domains it accepts besides its own (MeshConfig `trustDomainAliases`).
///
/// Cloning is cheap.
#[derive(Clone)]
pub struct TrustBundle {
    roots: Arc<[CertificateDer<'static>]>,
    anchors: Arc<[TrustAnchor<'static>]>,
    names: Arc<[String]>,
    aliases: Arc<[Arc<str>]>,
}

impl TrustBundle {
    /// A bundle of these root (or intermediate) CA certificates: each becomes a webpki trust
    /// anchor. Errors when there are none or one is not a certificate.
    pub fn new(roots: Vec<CertificateDer<'static>>) -> Result<TrustBundle, IdentityError> {
        if roots.is_empty() {
            return Err(IdentityError::Bundle("no CA certificate".into()));
        }
        let mut anchors = Vec::with_capacity(roots.len());
        let mut names = Vec::with_capacity(roots.len());
        for (i, root) in roots.iter().enumerate() {
            let anchor = webpki::anchor_from_trusted_cert(root).map_err(|e| {
                IdentityError::Bundle(format!(
                    "certificate #{} is not a CA certificate: {e}",
                    i + 1
                ))
            })?;
            anchors.push(anchor.to_owned());
            names.push(
                cert::inspect(root)
                    .map(|info| info.subject)
                    .unwrap_or_else(|_| format!("certificate #{}", i + 1)),
            );
        }
        Ok(TrustBundle {
            roots: roots.into(),
            anchors: anchors.into(),
            names: names.into(),
            aliases: Arc::new([]),
        })
    }

    /// Every `CERTIFICATE` block of a PEM text.
    pub fn from_pem(pem: &[u8]) -> Result<TrustBundle, IdentityError> {
        let roots = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(pem_error)?;
        if roots.is_empty() {
            return Err(IdentityError::NoCertificate);
        }
        Self::new(roots)
    }

    /// Also accept peers of these trust domains (Istio MeshConfig `trustDomainAliases`: a
    /// trust-domain migration keeps the old name trusted). The workload's own trust domain is
    /// always accepted.
    pub fn with_trust_domain_aliases<I, S>(mut self, aliases: I) -> TrustBundle
    where
        I: IntoIterator<Item = S>,
        S: Into<Arc<str>>,
    {
        self.aliases = aliases.into_iter().map(Into::into).collect();
        self
    }

    /// The CA certificates.
    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    /// The extra trust domains accepted.
    pub fn trust_domain_aliases(&self) -> &[Arc<str>] {
        &self.aliases
    }

    pub(crate) fn anchors(&self) -> &[TrustAnchor<'static>] {
        &self.anchors
    }

    /// The roots' subjects, for error messages.
    pub(crate) fn names(&self) -> &[String] {
        &self.names
    }
}

impl fmt::Debug for TrustBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustBundle")
            .field("roots", &self.names)
            .field("trust_domain_aliases", &self.aliases)
            .finish()
    }
}

/// A workload's identity: its X.509-SVID chain and key, the trust bundle it verifies peers
/// with, and what the leaf says (SPIFFE ID, validity, serial).
///
/// [`WorkloadIdentity::new`] checks the material is coherent: a chain whose leaf is an
/// X.509-SVID (exactly one URI SAN, a SPIFFE ID with a path), a private key that matches
/// the leaf, a leaf that chains to the bundle and allows both TLS client and server
/// authentication (Istio uses one certificate for both directions). It does **not** reject an
/// expired or not-yet-valid certificate (tests need those to present); the
/// [`IdentityManager`](super::IdentityManager) refuses expired ones.
pub struct WorkloadIdentity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    certified: Arc<CertifiedKey>,
    bundle: TrustBundle,
    trust_domains: Arc<[Arc<str>]>,
    spiffe_id: SpiffeId,
    not_before: SystemTime,
    not_after: SystemTime,
    serial: Arc<str>,
}

impl WorkloadIdentity {
    /// Checks and assembles identity material (see the type's documentation).
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        bundle: TrustBundle,
    ) -> Result<WorkloadIdentity, IdentityError> {
        let leaf = chain.first().ok_or(IdentityError::NoCertificate)?;
        let info = cert::inspect(leaf)?;
        let spiffe_id = info.spiffe_id()?;
        let provider = super::provider();
        let certified = CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider).map_err(
            |e| match e {
                rustls::Error::InconsistentKeys(_) => IdentityError::KeyMismatch {
                    leaf: spiffe_id.to_string(),
                },
                other => IdentityError::BadKey(other.to_string()),
            },
        )?;
        check_chain(&chain, &bundle, &info, &spiffe_id)?;
        let mut trust_domains: Vec<Arc<str>> = vec![spiffe_id.trust_domain().into()];
        for alias in bundle.trust_domain_aliases() {
            if !trust_domains.contains(alias) {
                trust_domains.push(alias.clone());
            }
        }
        Ok(WorkloadIdentity {
            certified: Arc::new(certified),
            trust_domains: trust_domains.into(),
            not_before: cert::system_time(info.not_before),
            not_after: cert::system_time(info.not_after),
            serial: info.serial.into(),
            chain,
            key,
            bundle,
            spiffe_id,
        })
    }

    /// From PEM texts: the chain (leaf first), the key, the bundle.
    pub fn from_pem(
        chain_pem: &[u8],
        key_pem: &[u8],
        bundle_pem: &[u8],
    ) -> Result<WorkloadIdentity, IdentityError> {
        let chain = parse_chain(chain_pem)?;
        let key = parse_key(key_pem)?;
        let bundle = TrustBundle::from_pem(bundle_pem)?;
        Self::new(chain, key, bundle)
    }

    /// The chain this workload presents, leaf first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// The private key.
    pub fn key(&self) -> &PrivateKeyDer<'static> {
        &self.key
    }

    /// The trust bundle peers are verified with.
    pub fn bundle(&self) -> &TrustBundle {
        &self.bundle
    }

    /// The leaf's SPIFFE ID.
    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.spiffe_id
    }

    /// The trust domains whose peers are accepted: this identity's own, then the bundle's
    /// aliases.
    pub fn trust_domains(&self) -> &[Arc<str>] {
        &self.trust_domains
    }

    /// The leaf's `notBefore`.
    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    /// The leaf's `notAfter`.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// The leaf's serial number, lowercase hex.
    pub fn serial(&self) -> &str {
        &self.serial
    }

    /// `notAfter - notBefore`.
    pub fn lifetime(&self) -> Duration {
        self.not_after
            .duration_since(self.not_before)
            .unwrap_or_default()
    }

    /// The time left before `notAfter` at `now` (zero once expired).
    pub fn remaining(&self, now: SystemTime) -> Duration {
        self.not_after.duration_since(now).unwrap_or_default()
    }

    pub(crate) fn certified_key(&self) -> Arc<CertifiedKey> {
        self.certified.clone()
    }
}

impl Clone for WorkloadIdentity {
    fn clone(&self) -> Self {
        WorkloadIdentity {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            certified: self.certified.clone(),
            bundle: self.bundle.clone(),
            trust_domains: self.trust_domains.clone(),
            spiffe_id: self.spiffe_id.clone(),
            not_before: self.not_before,
            not_after: self.not_after,
            serial: self.serial.clone(),
        }
    }
}

impl fmt::Debug for WorkloadIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkloadIdentity")
            .field("spiffe_id", &self.spiffe_id)
            .field("serial", &self.serial)
            .field(
                "not_before",
                &cert::fmt_time(cert::unix_secs(self.not_before)),
            )
            .field(
                "not_after",
                &cert::fmt_time(cert::unix_secs(self.not_after)),
            )
            .field("chain_len", &self.chain.len())
            .field("bundle", &self.bundle)
            .finish_non_exhaustive()
    }
}

/// The leaf must chain to the bundle (at a time inside its own validity: expiry is checked
/// elsewhere) and allow both client and server authentication.
fn check_chain(
    chain: &[CertificateDer<'static>],
    bundle: &TrustBundle,
    info: &CertInfo,
    id: &SpiffeId,
) -> Result<(), IdentityError> {
    let Some(leaf) = chain.first() else {
        return Err(IdentityError::NoCertificate);
    };
    let ee = webpki::EndEntityCert::try_from(leaf)
        .map_err(|e| IdentityError::Svid(SvidError::BadCertificate(format!("{e:?}"))))?;
    let mid = info.not_before / 2 + info.not_after / 2;
    let at = UnixTime::since_unix_epoch(Duration::from_secs(u64::try_from(mid).unwrap_or(0)));
    let intermediates = chain.get(1..).unwrap_or_default();
    let algs = super::provider().signature_verification_algorithms.all;
    for usage in [
        webpki::KeyUsage::server_auth(),
        webpki::KeyUsage::client_auth(),
    ] {
        match ee.verify_for_usage(algs, bundle.anchors(), intermediates, at, usage, None, None) {
            Ok(_) => {}
            Err(e @ webpki::Error::RequiredEkuNotFoundContext(_)) => {
                return Err(IdentityError::Svid(SvidError::BadCertificate(format!(
                    "the certificate for {id} must allow both TLS server and client \
                     authentication (extended key usage): {e:?}"
                ))));
            }
            Err(e) => {
                return Err(IdentityError::NotIssuedByBundle {
                    id: id.clone(),
                    detail: format!(
                        "issuer `{}` is not signed by any of [{}] ({e:?})",
                        info.issuer,
                        bundle.names().join("; ")
                    ),
                });
            }
        }
    }
    Ok(())
}

fn parse_chain(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, IdentityError> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error)?;
    if chain.is_empty() {
        return Err(IdentityError::NoCertificate);
    }
    Ok(chain)
}

fn parse_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, IdentityError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => IdentityError::NoKey,
        other => pem_error(other),
    })
}

/// A changing number that tells an [`IdentitySource`]'s content may have changed: the
/// [`IdentityManager`](super::IdentityManager) reloads only when it differs from the last.
pub type Revision = u64;

/// Where a workload's identity comes from.
///
/// Both methods may block (file I/O): the [`IdentityManager`](super::IdentityManager) calls
/// them on tokio's blocking pool (or at construction), never on the runtime's threads.
pub trait IdentitySource: Send + Sync + 'static {
    /// A cheap fingerprint of the source's current content ([`PemFiles`]: the files'
    /// modification times and sizes). Polled every refresh period.
    fn revision(&self) -> Result<Revision, IdentityError>;

    /// Reads and checks the identity.
    fn load(&self) -> Result<WorkloadIdentity, IdentityError>;

    /// What the source is, for log lines (`PEM files /etc/certs/cert-chain.pem, …`).
    fn describe(&self) -> String;
}

/// An identity in three PEM files: the chain (leaf first, then intermediates), the private
/// key (PKCS#8, PKCS#1 or SEC1), and the trust bundle (root certificates).
///
/// [`revision`](IdentitySource::revision) is the files' modification times and sizes, so a
/// rewrite or an atomic rename (Kubernetes secret volumes swap a symlink) is seen; errors
/// name the file and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PemFiles {
    /// The certificate chain (Istio: `cert-chain.pem`).
    pub cert: PathBuf,
    /// The private key (Istio: `key.pem`).
    pub key: PathBuf,
    /// The trust bundle (Istio: `root-cert.pem`).
    pub bundle: PathBuf,
    /// Extra trust domains accepted (MeshConfig `trustDomainAliases`).
    pub trust_domain_aliases: Vec<String>,
}

impl PemFiles {
    /// The three files.
    pub fn new(
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
        bundle: impl Into<PathBuf>,
    ) -> PemFiles {
        PemFiles {
            cert: cert.into(),
            key: key.into(),
            bundle: bundle.into(),
            trust_domain_aliases: Vec::new(),
        }
    }

    /// Istio's file names in `dir`: `cert-chain.pem`, `key.pem`, `root-cert.pem` (as mounted
    /// at `/etc/certs` for file-based certificates).
    pub fn in_dir(dir: impl AsRef<Path>) -> PemFiles {
        let dir = dir.as_ref();
        Self::new(
            dir.join("cert-chain.pem"),
            dir.join("key.pem"),
            dir.join("root-cert.pem"),
        )
    }

    /// Also accept peers of these trust domains (MeshConfig `trustDomainAliases`).
    pub fn with_trust_domain_aliases(mut self, aliases: Vec<String>) -> PemFiles {
        self.trust_domain_aliases = aliases;
        self
    }
}

fn read(path: &Path) -> Result<Vec<u8>, IdentityError> {
    std::fs::read(path).map_err(|e| IdentityError::Read(Arc::new(e)).in_file(path))
}

impl IdentitySource for PemFiles {
    fn revision(&self) -> Result<Revision, IdentityError> {
        let mut h = DefaultHasher::new();
        for path in [&self.cert, &self.key, &self.bundle] {
            let meta = std::fs::metadata(path)
                .map_err(|e| IdentityError::Read(Arc::new(e)).in_file(path))?;
            meta.modified().ok().hash(&mut h);
            meta.len().hash(&mut h);
        }
        Ok(h.finish())
    }

    fn load(&self) -> Result<WorkloadIdentity, IdentityError> {
        let chain = parse_chain(&read(&self.cert)?).map_err(|e| e.in_file(&self.cert))?;
        let key = parse_key(&read(&self.key)?).map_err(|e| e.in_file(&self.key))?;
        let bundle = TrustBundle::from_pem(&read(&self.bundle)?)
            .map_err(|e| e.in_file(&self.bundle))?
            .with_trust_domain_aliases(self.trust_domain_aliases.iter().map(String::as_str));
        WorkloadIdentity::new(chain, key, bundle).map_err(|e| match e {
            IdentityError::KeyMismatch { .. } => IdentityError::KeyMismatch {
                leaf: format!("the leaf certificate in {}", self.cert.display()),
            }
            .in_file(&self.key),
            IdentityError::NotIssuedByBundle { .. } => e.in_file(&self.bundle),
            IdentityError::BadKey(_) => e.in_file(&self.key),
            other => other.in_file(&self.cert),
        })
    }

    fn describe(&self) -> String {
        format!(
            "PEM files {}, {}, {}",
            self.cert.display(),
            self.key.display(),
            self.bundle.display()
        )
    }
}

/// An identity held in memory; [`replace`](StaticIdentity::replace) swaps it (the manager
/// picks the new one up at its next refresh).
#[derive(Debug)]
pub struct StaticIdentity {
    state: Mutex<(Revision, WorkloadIdentity)>,
}

impl StaticIdentity {
    /// Serves `identity`.
    pub fn new(identity: WorkloadIdentity) -> StaticIdentity {
        StaticIdentity {
            state: Mutex::new((0, identity)),
        }
    }

    /// Serves `identity` from now on.
    pub fn replace(&self, identity: WorkloadIdentity) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        *state = (state.0.wrapping_add(1), identity);
    }
}

impl IdentitySource for StaticIdentity {
    fn revision(&self) -> Result<Revision, IdentityError> {
        Ok(self.state.lock().unwrap_or_else(PoisonError::into_inner).0)
    }

    fn load(&self) -> Result<WorkloadIdentity, IdentityError> {
        Ok(self
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .1
            .clone())
    }

    fn describe(&self) -> String {
        "an in-memory identity".into()
    }
}

impl<S: IdentitySource> IdentitySource for Arc<S> {
    fn revision(&self) -> Result<Revision, IdentityError> {
        (**self).revision()
    }

    fn load(&self) -> Result<WorkloadIdentity, IdentityError> {
        (**self).load()
    }

    fn describe(&self) -> String {
        (**self).describe()
    }
}
