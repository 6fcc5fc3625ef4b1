//! Certificate verifiers for SPIFFE mTLS (and for plain TLS origination with DNS names). The
//! steps are documented on [`SpiffeClientVerifier`] and [`SpiffeServerVerifier`], what each
//! side of a refused handshake sees on [`VerifyError`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::cert::{self, CertInfo, SvidError};
use super::identity::TrustBundle;
use super::spiffe::SpiffeId;

/// An identity a server must present: a DestinationRule `subjectAltNames` entry, or the
/// SPIFFE ID of the endpoint's service account.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ExpectedSan {
    /// A SPIFFE ID: the server's X.509-SVID must carry exactly this id.
    Spiffe(SpiffeId),
    /// Another URI: one of the certificate's URI SANs must be exactly this.
    Uri(Arc<str>),
    /// A DNS name: the certificate must be valid for it (its DNS SANs, wildcards included).
    Dns(Arc<str>),
}

impl ExpectedSan {
    /// A `subjectAltNames` entry: a valid `spiffe://` id, another URI (anything with `://`),
    /// or a DNS name.
    pub fn parse(s: &str) -> ExpectedSan {
        if let Ok(id) = SpiffeId::parse(s) {
            ExpectedSan::Spiffe(id)
        } else if s.contains("://") {
            ExpectedSan::Uri(s.into())
        } else {
            ExpectedSan::Dns(s.into())
        }
    }

    fn matches(
        &self,
        spiffe: Option<&SpiffeId>,
        info: &CertInfo,
        ee: &webpki::EndEntityCert<'_>,
    ) -> bool {
        match self {
            ExpectedSan::Spiffe(id) => spiffe == Some(id),
            ExpectedSan::Uri(uri) => info.uris.iter().any(|u| u == &**uri),
            ExpectedSan::Dns(name) => ServerName::try_from(&**name)
                .is_ok_and(|n| ee.verify_is_valid_for_subject_name(&n).is_ok()),
        }
    }
}

impl fmt::Display for ExpectedSan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedSan::Spiffe(id) => fmt::Display::fmt(id, f),
            ExpectedSan::Uri(s) | ExpectedSan::Dns(s) => f.write_str(s),
        }
    }
}

impl From<SpiffeId> for ExpectedSan {
    fn from(id: SpiffeId) -> Self {
        ExpectedSan::Spiffe(id)
    }
}

fn list<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why a peer certificate was rejected, in words a person can act on.
///
/// **What each side sees.** The side that rejects gets a `VerifyError` inside the rustls
/// error; [`VerifyError::of`] gets it back and [`describe_handshake_error`] turns a
/// handshake's `io::Error` into one line (`invalid peer certificate: certificate from another
/// CA: …`). The other side only gets a TLS alert: `CertificateExpired` for an expired or
/// not-yet-valid certificate (rustls' own context errors are used for those so that the alert
/// is the specific one; their text is rustls'), `CertificateRequired` when a client sent no
/// certificate to a server that requires one, and `HandshakeFailure` for an unknown CA and the
/// SPIFFE checks (rustls prints only that kind of error with our text intact).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The peer sent no certificate, or it is not parseable.
    #[error("bad peer certificate: {0}")]
    BadCertificate(String),
    /// The chain does not lead to any anchor of the bundle.
    #[error(
        "certificate from another CA: issuer `{issuer}` does not chain to the trust bundle [{}]{}",
        .roots.join("; "),
        if *.same_name { " (a CA of the same name but another key signed it)" } else { "" }
    )]
    OtherCa {
        /// The leaf's issuer.
        issuer: String,
        /// The bundle's roots.
        roots: Vec<String>,
        /// A bundle certificate has the issuer's name but not its key: two meshes' CAs with
        /// the same name (`O=cluster.local`), or a root that was regenerated.
        same_name: bool,
    },
    /// Past `notAfter`.
    #[error("certificate expired at {} ({} ago)", cert::fmt_time(*.not_after), fmt_ago(*.now, *.not_after))]
    Expired {
        /// `notAfter`, seconds since the epoch.
        not_after: i64,
        /// The verification time.
        now: i64,
    },
    /// Before `notBefore`.
    #[error(
        "certificate is not valid before {} ({} from now; is a clock wrong?)",
        cert::fmt_time(*.not_before), fmt_ago(*.not_before, *.now)
    )]
    NotYetValid {
        /// `notBefore`, seconds since the epoch.
        not_before: i64,
        /// The verification time.
        now: i64,
    },
    /// The extended key usage does not allow this direction.
    #[error("certificate is not for TLS {usage} authentication (its extended key usage): {detail}")]
    WrongUsage {
        /// `client` or `server`.
        usage: &'static str,
        /// webpki's words.
        detail: String,
    },
    /// Any other chain failure (webpki's words).
    #[error("certificate chain rejected: {0}")]
    Chain(String),
    /// The leaf is not an X.509-SVID.
    #[error("{0}")]
    Svid(SvidError),
    /// The SPIFFE ID's trust domain is not accepted.
    #[error(
        "peer {id} is from trust domain {}, not one of [{}] (MeshConfig trustDomainAliases adds more)",
        .id.trust_domain(), list(.allowed)
    )]
    ForeignTrustDomain {
        /// The peer's id.
        id: SpiffeId,
        /// The accepted trust domains.
        allowed: Vec<Arc<str>>,
    },
    /// The server is not one of the expected identities.
    #[error("peer {peer} is not one of [{}]", list(.expected))]
    Unexpected {
        /// The server's SPIFFE ID.
        peer: SpiffeId,
        /// What was expected.
        expected: Vec<ExpectedSan>,
    },
    /// A (non-SPIFFE) server certificate is not valid for any expected name.
    #[error(
        "server certificate (names [{}]) is not valid for any of [{}]",
        .presented.join(", "), list(.expected)
    )]
    NameMismatch {
        /// What was expected (the SNI when `subjectAltNames` is empty).
        expected: Vec<ExpectedSan>,
        /// The certificate's DNS and URI SANs.
        presented: Vec<String>,
    },
}

fn fmt_ago(later: i64, earlier: i64) -> String {
    cert::fmt_duration(Duration::from_secs(
        u64::try_from(later.saturating_sub(earlier)).unwrap_or(0),
    ))
}

impl VerifyError {
    /// The `VerifyError` inside a rustls error returned by a handshake these verifiers
    /// rejected, if that is what it is.
    pub fn of(err: &rustls::Error) -> Option<&VerifyError> {
        match err {
            rustls::Error::Other(OtherError(inner)) => inner.downcast_ref::<VerifyError>(),
            _ => None,
        }
    }

    fn into_rustls(self) -> rustls::Error {
        tracing::debug!(target: "tower_mesh::tls", error = %self, "peer certificate rejected");
        let secs =
            |s: i64| UnixTime::since_unix_epoch(Duration::from_secs(u64::try_from(s).unwrap_or(0)));
        let e = match self {
            VerifyError::Expired { not_after, now } => CertificateError::ExpiredContext {
                time: secs(now),
                not_after: secs(not_after),
            },
            VerifyError::NotYetValid { not_before, now } => CertificateError::NotValidYetContext {
                time: secs(now),
                not_before: secs(not_before),
            },
            // rustls prints a CertificateError::Other with `{:?}`; Error::Other is displayed.
            other => return rustls::Error::Other(OtherError(Arc::new(other))),
        };
        rustls::Error::InvalidCertificate(e)
    }
}

/// One line for a failed TLS handshake (or a read that received the peer's alert): the
/// [`VerifyError`] as `invalid peer certificate: …` when our verifier refused the peer (an
/// expired one reads `certificate expired at 2025-03-01T12:00:00Z (2h5m ago)`), rustls' or
/// the socket's words otherwise (`received fatal alert: CertificateRequired`).
pub fn describe_handshake_error(err: &std::io::Error) -> String {
    let rustls_err = err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    let secs = |t: &UnixTime| i64::try_from(t.as_secs()).unwrap_or(i64::MAX);
    let ours = match rustls_err {
        None => return err.to_string(),
        Some(rustls::Error::InvalidCertificate(CertificateError::ExpiredContext {
            time,
            not_after,
        })) => VerifyError::Expired {
            not_after: secs(not_after),
            now: secs(time),
        },
        Some(rustls::Error::InvalidCertificate(CertificateError::NotValidYetContext {
            time,
            not_before,
        })) => VerifyError::NotYetValid {
            not_before: secs(not_before),
            now: secs(time),
        },
        Some(e) => match VerifyError::of(e) {
            Some(v) => v.clone(),
            None => return e.to_string(),
        },
    };
    format!("invalid peer certificate: {ours}")
}

#[derive(Clone, Copy)]
enum Usage {
    Client,
    Server,
}

/// Step 1: the chain, with webpki.
fn verify_chain<'a>(
    bundle: &TrustBundle,
    algs: &WebPkiSupportedAlgorithms,
    end_entity: &'a CertificateDer<'a>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
    usage: Usage,
) -> Result<(webpki::EndEntityCert<'a>, CertInfo), VerifyError> {
    let info = cert::inspect(end_entity).map_err(|e| VerifyError::BadCertificate(e.to_string()))?;
    let ee = webpki::EndEntityCert::try_from(end_entity)
        .map_err(|e| VerifyError::BadCertificate(format!("{e:?}")))?;
    let (ku, name) = match usage {
        Usage::Client => (webpki::KeyUsage::client_auth(), "client"),
        Usage::Server => (webpki::KeyUsage::server_auth(), "server"),
    };
    let now_secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    match ee.verify_for_usage(
        algs.all,
        bundle.anchors(),
        intermediates,
        now,
        ku,
        None,
        None,
    ) {
        Ok(_) => Ok((ee, info)),
        Err(e) => Err(match e {
            webpki::Error::UnknownIssuer => VerifyError::OtherCa {
                issuer: info.issuer.clone(),
                roots: bundle.names().to_vec(),
                same_name: false,
            },
            webpki::Error::InvalidSignatureForPublicKey => VerifyError::OtherCa {
                issuer: info.issuer.clone(),
                roots: bundle.names().to_vec(),
                same_name: true,
            },
            webpki::Error::CertExpired { not_after, .. } => VerifyError::Expired {
                not_after: i64::try_from(not_after.as_secs()).unwrap_or(i64::MAX),
                now: now_secs,
            },
            webpki::Error::CertNotValidYet { not_before, .. } => VerifyError::NotYetValid {
                not_before: i64::try_from(not_before.as_secs()).unwrap_or(i64::MAX),
                now: now_secs,
            },
            webpki::Error::RequiredEkuNotFoundContext(_) => VerifyError::WrongUsage {
                usage: name,
                detail: format!("{e:?}"),
            },
            other => VerifyError::Chain(format!("{other:?}")),
        }),
    }
}

/// Steps 2 and 3: the SPIFFE ID and its trust domain.
fn verify_spiffe(info: &CertInfo, trust_domains: &[Arc<str>]) -> Result<SpiffeId, VerifyError> {
    let id = info.spiffe_id().map_err(VerifyError::Svid)?;
    if !trust_domains.iter().any(|td| **td == *id.trust_domain()) {
        return Err(VerifyError::ForeignTrustDomain {
            id,
            allowed: trust_domains.to_vec(),
        });
    }
    Ok(id)
}

fn verify_signature12(
    algs: &WebPkiSupportedAlgorithms,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    rustls::crypto::verify_tls12_signature(message, cert, dss, algs)
}

fn verify_signature13(
    algs: &WebPkiSupportedAlgorithms,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    rustls::crypto::verify_tls13_signature(message, cert, dss, algs)
}

/// Whether a server requires a client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ClientAuth {
    /// A client must present a valid X.509-SVID, or the handshake fails (alert
    /// `CertificateRequired`). Istio's mTLS always does this: PeerAuthentication `STRICT`,
    /// and the TLS side of `PERMISSIVE` (plaintext is PERMISSIVE's other side, not TLS without
    /// a client certificate).
    #[default]
    Required,
    /// A client may present no certificate (the connection then has no
    /// [`PeerIdentity`](super::PeerIdentity)); one it does present is verified as for
    /// `Required`. Not what an Istio sidecar does; for TLS listeners that also serve callers
    /// outside the mesh.
    Optional,
}

/// The server-side verifier of client X.509-SVIDs, for rustls' [`ClientCertVerifier`].
///
/// An X.509-SVID names its workload with one URI SAN and no DNS name, so rustls' WebPKI
/// verifiers cannot decide whether a peer is acceptable. This does what Envoy's SPIFFE
/// certificate validator does in an Istio sidecar's inbound listener:
///
/// 1. **Chain**: the leaf and the intermediates the client sent are checked with webpki
///    against the trust bundle's anchors, with *ring*'s signature algorithms, at the
///    handshake's time: validity of every certificate in the path, basic constraints, and the
///    extended key usage `clientAuth` when the leaf restricts it. Failures:
///    [`VerifyError::OtherCa`], `Expired`, `NotYetValid`, `WrongUsage`, `Chain`.
/// 2. **SPIFFE ID**: the leaf must have exactly one URI SAN, a valid [`SpiffeId`] with a path
///    (the X.509-SVID rule), read with x509-parser ([`VerifyError::Svid`]).
/// 3. **Trust domain**: the id's trust domain must be ours or one of the bundle's aliases
///    (MeshConfig `trustDomainAliases`), so a CA shared by two meshes does not let one mesh's
///    workloads pass for the other's ([`VerifyError::ForeignTrustDomain`]).
///
/// Who may call what is AuthorizationPolicy's business, not the handshake's: any workload of
/// an accepted trust domain gets in, with its [`PeerIdentity`](super::PeerIdentity).
/// Handshake signatures (`CertificateVerify`) are checked with *ring*'s algorithms. Without a
/// certificate the handshake fails when [`ClientAuth::Required`] (rustls' own check).
pub struct SpiffeClientVerifier {
    bundle: TrustBundle,
    trust_domains: Arc<[Arc<str>]>,
    algs: WebPkiSupportedAlgorithms,
    auth: ClientAuth,
}

impl SpiffeClientVerifier {
    /// Verifies clients against `bundle`, accepting ids of `trust_domains`.
    pub fn new(bundle: TrustBundle, trust_domains: Arc<[Arc<str>]>, auth: ClientAuth) -> Self {
        SpiffeClientVerifier {
            bundle,
            trust_domains,
            algs: super::provider().signature_verification_algorithms,
            auth,
        }
    }

    /// Steps 1–3 without rustls: the client's SPIFFE ID, or why it is rejected.
    pub fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<SpiffeId, VerifyError> {
        let (_, info) = verify_chain(
            &self.bundle,
            &self.algs,
            end_entity,
            intermediates,
            now,
            Usage::Client,
        )?;
        verify_spiffe(&info, &self.trust_domains)
    }
}

impl fmt::Debug for SpiffeClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpiffeClientVerifier")
            .field("bundle", &self.bundle)
            .field("trust_domains", &self.trust_domains)
            .field("auth", &self.auth)
            .finish()
    }
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.auth == ClientAuth::Required
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No hints: a workload has one certificate and sends it.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.verify(end_entity, intermediates, now)
            .map(|_| ClientCertVerified::assertion())
            .map_err(VerifyError::into_rustls)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_signature12(&self.algs, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_signature13(&self.algs, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// The client-side verifier of a server's X.509-SVID for `ISTIO_MUTUAL`, for rustls'
/// [`ServerCertVerifier`], as Envoy's SPIFFE validator does on an Istio sidecar's outbound
/// cluster:
///
/// 1. **Chain**: the leaf and the intermediates the server sent are checked with webpki
///    against the trust bundle's anchors, with *ring*'s signature algorithms, at the
///    handshake's time: validity, basic constraints, and the extended key usage `serverAuth`
///    when the leaf restricts it. Failures: [`VerifyError::OtherCa`], `Expired`,
///    `NotYetValid`, `WrongUsage`, `Chain`.
/// 2. **SPIFFE ID**: exactly one URI SAN, a valid [`SpiffeId`] with a path
///    ([`VerifyError::Svid`]).
/// 3. **Trust domain**: ours or an alias ([`VerifyError::ForeignTrustDomain`]).
/// 4. **Expected identity**: the id must be one of the expected identities (DestinationRule
///    `subjectAltNames`, else the SPIFFE ID of the endpoint's service account); a DNS entry
///    matches the certificate's DNS SANs ([`VerifyError::Unexpected`]). An empty list accepts
///    any server of an accepted trust domain, as Envoy does when Istio knows no SAN for a
///    destination.
///
/// The TLS server name (SNI) plays no part: SVIDs carry no DNS name. Handshake signatures are
/// checked with *ring*'s algorithms.
pub struct SpiffeServerVerifier {
    bundle: TrustBundle,
    trust_domains: Arc<[Arc<str>]>,
    expected: Arc<[ExpectedSan]>,
    algs: WebPkiSupportedAlgorithms,
}

impl SpiffeServerVerifier {
    /// Verifies servers against `bundle`, accepting ids of `trust_domains` that are one of
    /// `expected` (any, when `expected` is empty).
    pub fn new(
        bundle: TrustBundle,
        trust_domains: Arc<[Arc<str>]>,
        expected: Arc<[ExpectedSan]>,
    ) -> Self {
        SpiffeServerVerifier {
            bundle,
            trust_domains,
            expected,
            algs: super::provider().signature_verification_algorithms,
        }
    }

    /// Steps 1–4 without rustls: the server's SPIFFE ID, or why it is rejected.
    pub fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<SpiffeId, VerifyError> {
        let (ee, info) = verify_chain(
            &self.bundle,
            &self.algs,
            end_entity,
            intermediates,
            now,
            Usage::Server,
        )?;
        let id = verify_spiffe(&info, &self.trust_domains)?;
        if !self.expected.is_empty()
            && !self
                .expected
                .iter()
                .any(|e| e.matches(Some(&id), &info, &ee))
        {
            return Err(VerifyError::Unexpected {
                peer: id,
                expected: self.expected.to_vec(),
            });
        }
        Ok(id)
    }
}

impl fmt::Debug for SpiffeServerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpiffeServerVerifier")
            .field("bundle", &self.bundle)
            .field("trust_domains", &self.trust_domains)
            .field("expected", &self.expected)
            .finish()
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verify(end_entity, intermediates, now)
            .map(|_| ServerCertVerified::assertion())
            .map_err(VerifyError::into_rustls)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_signature12(&self.algs, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_signature13(&self.algs, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// The client-side verifier for DestinationRule `SIMPLE` and `MUTUAL` origination to servers
/// outside the mesh: step 1 against the `caCertificates` bundle, then the names, as Envoy
/// does with Istio's settings: the certificate must match one of `subjectAltNames` (DNS
/// names with wildcards, or exact URIs); with no `subjectAltNames`, the SNI name.
pub struct NamesServerVerifier {
    bundle: TrustBundle,
    sans: Arc<[ExpectedSan]>,
    algs: WebPkiSupportedAlgorithms,
}

impl NamesServerVerifier {
    /// Verifies servers against `bundle` and `sans` (the SNI when empty).
    pub fn new(bundle: TrustBundle, sans: Arc<[ExpectedSan]>) -> Self {
        NamesServerVerifier {
            bundle,
            sans,
            algs: super::provider().signature_verification_algorithms,
        }
    }
}

impl fmt::Debug for NamesServerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NamesServerVerifier")
            .field("bundle", &self.bundle)
            .field("sans", &self.sans)
            .finish()
    }
}

impl ServerCertVerifier for NamesServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let checked = (|| {
            let (ee, info) = verify_chain(
                &self.bundle,
                &self.algs,
                end_entity,
                intermediates,
                now,
                Usage::Server,
            )?;
            let ok = if self.sans.is_empty() {
                ee.verify_is_valid_for_subject_name(server_name).is_ok()
            } else {
                let id = info.spiffe_id().ok();
                self.sans
                    .iter()
                    .any(|san| san.matches(id.as_ref(), &info, &ee))
            };
            if ok {
                return Ok(());
            }
            let expected = if self.sans.is_empty() {
                vec![ExpectedSan::Dns(server_name.to_str().as_ref().into())]
            } else {
                self.sans.to_vec()
            };
            Err(VerifyError::NameMismatch {
                expected,
                presented: info.dns.iter().chain(&info.uris).cloned().collect(),
            })
        })();
        checked
            .map(|()| ServerCertVerified::assertion())
            .map_err(VerifyError::into_rustls)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_signature12(&self.algs, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_signature13(&self.algs, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}
