//! A development certificate authority (feature `dev-ca`): [`DevCa`].

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::identity::{IdentityError, PemFiles, TrustBundle, WorkloadIdentity};
use super::spiffe::{SpiffeId, SpiffeIdError};

/// What went wrong issuing a certificate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevCaError {
    /// rcgen refused the parameters or failed to sign.
    #[error("dev CA: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// The trust domain is not a valid SPIFFE trust domain.
    #[error("dev CA: bad trust domain: {0}")]
    TrustDomain(#[from] SpiffeIdError),
    /// `not_after` is not after `not_before`.
    #[error("dev CA: notAfter must be after notBefore")]
    EmptyValidity,
}

/// A self-signed root that signs SPIFFE workload certificates for one trust domain.
///
/// The root's subject is `O=<trust domain>, CN=tower-mesh dev CA` (Istio's self-signed root
/// is `O=cluster.local`); leaves carry one URI SAN (the SPIFFE ID), an empty subject (so the
/// SAN is critical), `digitalSignature, keyEncipherment`, and both `serverAuth` and
/// `clientAuth`, as Istio's workload certificates do. Keys are ECDSA P-256.
///
/// For examples, tests and local set-ups. Not for production: the CA key lives in memory and
/// is never persisted or protected.
///
/// ```
/// use std::time::Duration;
/// use tower_mesh::tls::{DevCa, SpiffeId};
///
/// let ca = DevCa::new("cluster.local")?;
/// let id = SpiffeId::istio("cluster.local", "default", "sleep")?;
/// let cert = ca.issue(&id, Duration::from_secs(24 * 3600))?;
/// let identity = cert.identity()?;
/// assert_eq!(identity.spiffe_id(), &id);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct DevCa {
    trust_domain: Arc<str>,
    issuer: Issuer<'static, KeyPair>,
    root: CertificateDer<'static>,
    root_pem: String,
}

impl fmt::Debug for DevCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevCa")
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}

/// Sets a certificate's validity from `SystemTime`s (rcgen takes the `time` crate's type,
/// which tower-mesh does not name: arithmetic on rcgen's own epoch value gets there).
fn set_validity(params: &mut CertificateParams, not_before: SystemTime, not_after: SystemTime) {
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let since = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap_or_default();
    params.not_before = epoch + since(not_before);
    params.not_after = epoch + since(not_after);
}

impl DevCa {
    /// A new root for `trust_domain` (valid from an hour ago for ten years).
    pub fn new(trust_domain: &str) -> Result<DevCa, DevCaError> {
        // Validates the trust domain with the SPIFFE rules.
        SpiffeId::parse(&format!("spiffe://{trust_domain}"))?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, trust_domain);
        dn.push(DnType::CommonName, "tower-mesh dev CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = SystemTime::now();
        set_validity(
            &mut params,
            now - Duration::from_secs(3600),
            now + Duration::from_secs(10 * 365 * 86_400),
        );
        let root = params.self_signed(&key)?;
        Ok(DevCa {
            trust_domain: trust_domain.into(),
            root_pem: root.pem(),
            root: root.der().clone(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The root certificate (DER).
    pub fn root_der(&self) -> &CertificateDer<'static> {
        &self.root
    }

    /// The root certificate (PEM): the `root-cert.pem` of every workload it issues for.
    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    /// A trust bundle holding this root.
    pub fn bundle(&self) -> Result<TrustBundle, IdentityError> {
        TrustBundle::new(vec![self.root.clone()])
    }

    /// A certificate for `id`, valid from a minute ago (clock skew, as Istio's CA backdates)
    /// for `validity`.
    pub fn issue(&self, id: &SpiffeId, validity: Duration) -> Result<IssuedCert, DevCaError> {
        let now = SystemTime::now();
        self.issue_between(id, now - Duration::from_secs(60), now + validity)
    }

    /// A certificate for `id` valid exactly from `not_before` to `not_after`: in the past for
    /// an expired certificate, in the future for a not-yet-valid one.
    pub fn issue_between(
        &self,
        id: &SpiffeId,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<IssuedCert, DevCaError> {
        if not_after <= not_before {
            return Err(DevCaError::EmptyValidity);
        }
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(id.as_str().try_into()?)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, not_before, not_after);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCert {
            id: id.clone(),
            chain: vec![cert.der().clone()],
            chain_pem: cert.pem(),
            key: PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
            key_pem: key.serialize_pem(),
            root: self.root.clone(),
            root_pem: self.root_pem.clone(),
        })
    }
}

/// A certificate the [`DevCa`] issued, with its key and the CA's root.
pub struct IssuedCert {
    /// The SPIFFE ID in its URI SAN.
    pub id: SpiffeId,
    /// The chain (just the leaf: the root is the trust anchor).
    pub chain: Vec<CertificateDer<'static>>,
    /// The chain as PEM.
    pub chain_pem: String,
    /// The private key (PKCS#8).
    pub key: PrivateKeyDer<'static>,
    /// The private key as PEM.
    pub key_pem: String,
    /// The CA's root (DER).
    pub root: CertificateDer<'static>,
    /// The CA's root (PEM).
    pub root_pem: String,
}

impl fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCert")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl IssuedCert {
    /// The certificate as a [`WorkloadIdentity`] trusting the issuing CA.
    pub fn identity(&self) -> Result<WorkloadIdentity, IdentityError> {
        WorkloadIdentity::new(
            self.chain.clone(),
            self.key.clone_key(),
            TrustBundle::new(vec![self.root.clone()])?,
        )
    }

    /// Writes Istio's three files into `dir` (`cert-chain.pem`, `key.pem`, `root-cert.pem`),
    /// each by a rename so that a reader never sees a half-written file, and returns them as a
    /// [`PemFiles`] source. Blocking.
    pub fn write_pem_files(&self, dir: impl AsRef<Path>) -> io::Result<PemFiles> {
        let files = PemFiles::in_dir(dir.as_ref());
        for (path, text) in [
            (&files.key, &self.key_pem),
            (&files.cert, &self.chain_pem),
            (&files.bundle, &self.root_pem),
        ] {
            let tmp = path.with_extension("pem.tmp");
            std::fs::write(&tmp, text)?;
            std::fs::rename(&tmp, path)?;
        }
        Ok(files)
    }
}
