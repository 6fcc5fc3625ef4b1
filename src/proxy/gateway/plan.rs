//! The listener plan: the served Gateways' servers grouped by port, with their TLS configs
//! loaded, rebuilt when the snapshot changes.
//!
//! What is supported, per `servers[]` entry, and what is refused (with an error naming the
//! Gateway and the field, never silently weaker):
//!
//! | `port.protocol` | `tls.mode` | listener |
//! |---|---|---|
//! | `HTTP`, `HTTP2`, `GRPC`, `GRPC-WEB` | none, or only `httpsRedirect` | plaintext HTTP/1.1 and h2c |
//! | `HTTPS` | `SIMPLE`, `MUTUAL`, `OPTIONAL_MUTUAL` | TLS terminated, HTTP/1.1 or HTTP/2 by ALPN |
//! | `HTTPS`, `TLS` | `PASSTHROUGH` (the default) | SNI read from the ClientHello, routed by the VirtualServices' `tls` routes |
//!
//! Refused: `credentialName`/`credentialNames`/`caCertCredentialName` (Kubernetes secrets:
//! there is no Kubernetes here; use `serverCertificate`/`privateKey`/`caCertificates` files),
//! `tlsCertificates`, `caCrl`, `subjectAltNames`, `verifyCertificateSpki`/`Hash`,
//! `insecureSkipVerify`, TLS 1.0/1.1, `ISTIO_MUTUAL`, `AUTO_PASSTHROUGH`, TLS termination on a
//! `TLS` port, servers of different kinds on one port, and terminating servers on one port
//! that disagree on client authentication or protocol versions (one rustls config serves a
//! port; certificates are chosen by SNI). Servers of other protocols (`TCP`, `MONGO`, …) are
//! skipped with a warning. `bind` is not used: the caller binds the listeners.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;

use crate::config::gateway::{Server, ServerTlsMode, ServerTlsSettings, TlsProtocol};
use crate::proxy::gateway::hosts::ServerHost;
use crate::snapshot::{ServedGateway, Snapshot};

/// A Gateway server that cannot be served as configured.
#[derive(Debug, Clone, thiserror::Error)]
#[error("Gateway {gateway} servers[{server}]{field}: {message}")]
pub struct GatewayError {
    /// The Gateway (`<namespace>/<name>`).
    pub gateway: Arc<str>,
    /// The index of the server in `servers`.
    pub server: usize,
    /// The field, as a path suffix (`.tls.credentialName`), or empty.
    pub field: &'static str,
    /// What is wrong and what to do.
    pub message: String,
}

/// How a port's connections are handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortKind {
    /// Plaintext HTTP (HTTP/1.1 and h2c).
    Http,
    /// TLS terminated here, then HTTP.
    Https,
    /// TLS passed through to a backend chosen by SNI.
    Passthrough,
}

/// One `servers[]` entry, ready to match requests.
#[derive(Debug, Clone)]
pub struct PlannedServer {
    /// The Gateway it belongs to (`<namespace>/<name>`).
    pub gateway: Arc<str>,
    /// Its `hosts`.
    pub hosts: Vec<ServerHost>,
    /// `tls.httpsRedirect`.
    pub https_redirect: bool,
}

impl PlannedServer {
    /// How specifically the server's hosts cover `name`: `None` when they do not, a larger
    /// value for a more specific match (an exact host beats any wildcard; a longer wildcard
    /// suffix beats a shorter one), as Envoy picks virtual hosts and filter chains.
    pub fn specificity(&self, name: &str) -> Option<usize> {
        specificity(&self.hosts, name)
    }
}

/// [`PlannedServer::specificity`] for a list of hosts.
fn specificity(hosts: &[ServerHost], name: &str) -> Option<usize> {
    hosts
        .iter()
        .filter(|h| h.matches_name(name))
        .map(|h| match h.host.strip_prefix('*') {
            Some(suffix) => suffix.len(),
            None => usize::MAX,
        })
        .max()
}

/// The servers of one port.
#[derive(Clone)]
pub struct PortPlan {
    /// How connections are handled.
    pub kind: PortKind,
    /// The servers, in config order.
    pub servers: Vec<PlannedServer>,
    /// The TLS config of an [`PortKind::Https`] port.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl fmt::Debug for PortPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PortPlan")
            .field("kind", &self.kind)
            .field("servers", &self.servers)
            .finish_non_exhaustive()
    }
}

impl PortPlan {
    /// The most specific server whose hosts cover `name` (first in config order on a tie).
    pub fn best_server(&self, name: &str) -> Option<&PlannedServer> {
        let mut best: Option<(usize, &PlannedServer)> = None;
        for s in &self.servers {
            if let Some(score) = s.specificity(name)
                && best.is_none_or(|(b, _)| score > b)
            {
                best = Some((score, s));
            }
        }
        best.map(|(_, s)| s)
    }
}

/// Every port of the served Gateways, for one snapshot version.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// The snapshot version it was built from.
    pub version: u64,
    /// The ports.
    pub ports: BTreeMap<u16, PortPlan>,
}

/// One terminating server's TLS settings, before they are merged per port.
struct Terminate {
    hosts: Vec<ServerHost>,
    key: Arc<CertifiedKey>,
    /// (mode, CA file, versions): must agree across a port's terminating servers.
    auth: (ServerTlsMode, Option<String>, Vec<u16>),
    server: usize,
    gateway: Arc<str>,
}

impl Plan {
    /// Builds the plan for `snapshot`'s served Gateways, reading certificate files
    /// (blocking). Every problem is returned, not only the first.
    pub fn build(snapshot: &Snapshot) -> Result<Plan, Vec<GatewayError>> {
        let mut errors = Vec::new();
        let mut ports: BTreeMap<u16, (PortKind, Vec<PlannedServer>, Vec<Terminate>)> =
            BTreeMap::new();
        for gw in snapshot.served_gateways() {
            for (i, server) in gw.spec.servers.iter().enumerate() {
                let err = |field: &'static str, message: String| GatewayError {
                    gateway: gw.name.clone(),
                    server: i,
                    field,
                    message,
                };
                let Some(port) = server.port.as_ref() else {
                    continue;
                };
                let Some(number) = port.number.and_then(|n| u16::try_from(n).ok()) else {
                    continue;
                };
                if number == 0 {
                    continue;
                }
                let kind = match classify(gw, i, server) {
                    Ok(Some(kind)) => kind,
                    Ok(None) => continue,
                    Err(e) => {
                        errors.push(e);
                        continue;
                    }
                };
                let planned = PlannedServer {
                    gateway: gw.name.clone(),
                    hosts: server.hosts.iter().map(|h| ServerHost::parse(h)).collect(),
                    https_redirect: server.tls.as_ref().is_some_and(|t| t.https_redirect),
                };
                let entry = ports
                    .entry(number)
                    .or_insert_with(|| (kind, Vec::new(), Vec::new()));
                if entry.0 != kind {
                    errors.push(err(
                        ".port",
                        format!(
                            "port {number} already serves {:?} for another server; servers of one port must all be plaintext HTTP, all TLS-terminating or all PASSTHROUGH",
                            entry.0
                        ),
                    ));
                    continue;
                }
                if kind == PortKind::Https
                    && let Some(tls) = &server.tls
                {
                    match load_terminate(tls) {
                        Ok((key, auth)) => entry.2.push(Terminate {
                            hosts: planned.hosts.clone(),
                            key,
                            auth,
                            server: i,
                            gateway: gw.name.clone(),
                        }),
                        Err((field, message)) => {
                            errors.push(err(field, message));
                            continue;
                        }
                    }
                }
                entry.1.push(planned);
            }
        }
        let mut plan = Plan {
            version: snapshot.version(),
            ports: BTreeMap::new(),
        };
        for (number, (kind, servers, terminate)) in ports {
            let tls = if kind == PortKind::Https {
                match port_tls(number, terminate) {
                    Ok(config) => Some(config),
                    Err(e) => {
                        errors.push(e);
                        continue;
                    }
                }
            } else {
                None
            };
            plan.ports.insert(number, PortPlan { kind, servers, tls });
        }
        if errors.is_empty() {
            Ok(plan)
        } else {
            Err(errors)
        }
    }
}

/// Whether `server` passes TLS through (protocol `TLS`, or `HTTPS` with mode `PASSTHROUGH`,
/// the default): its hosts bind VirtualService `tls` routes, not `http` routes.
pub fn passes_tls_through(server: &Server) -> bool {
    let protocol = server
        .port
        .as_ref()
        .map(|p| p.protocol.to_ascii_uppercase())
        .unwrap_or_default();
    let mode = server.tls.as_ref().map(ServerTlsSettings::effective_mode);
    match protocol.as_str() {
        "TLS" => true,
        "HTTPS" => mode == Some(ServerTlsMode::Passthrough),
        _ => false,
    }
}

/// The kind of listener `server` needs; `None` for a protocol a gateway here does not serve.
fn classify(
    gw: &ServedGateway,
    index: usize,
    server: &Server,
) -> Result<Option<PortKind>, GatewayError> {
    let err = |field: &'static str, message: &str| GatewayError {
        gateway: gw.name.clone(),
        server: index,
        field,
        message: message.to_string(),
    };
    let protocol = server
        .port
        .as_ref()
        .map(|p| p.protocol.to_ascii_uppercase())
        .unwrap_or_default();
    let mode = server.tls.as_ref().map(ServerTlsSettings::effective_mode);
    match protocol.as_str() {
        "HTTP" | "HTTP2" | "GRPC" | "GRPC-WEB" => Ok(Some(PortKind::Http)),
        "HTTPS" => match mode {
            Some(ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual) => {
                Ok(Some(PortKind::Https))
            }
            Some(ServerTlsMode::Passthrough) => Ok(Some(PortKind::Passthrough)),
            Some(ServerTlsMode::IstioMutual) => Err(err(
                ".tls.mode",
                "ISTIO_MUTUAL on a gateway server is not supported; use MUTUAL with caCertificates",
            )),
            Some(ServerTlsMode::AutoPassthrough) => Err(err(
                ".tls.mode",
                "AUTO_PASSTHROUGH is not supported; use PASSTHROUGH with VirtualService tls routes",
            )),
            None => Err(err(".tls", "an HTTPS server needs tls settings")),
        },
        "TLS" => match mode {
            Some(ServerTlsMode::Passthrough) => Ok(Some(PortKind::Passthrough)),
            _ => Err(err(
                ".tls.mode",
                "only PASSTHROUGH is supported on TLS (non-HTTP) servers: terminated TLS to TCP routes is not",
            )),
        },
        other => {
            tracing::warn!(
                gateway = %gw.name,
                server = index,
                protocol = other,
                "gateway server skipped: only HTTP, HTTP2, GRPC, GRPC-WEB, HTTPS and TLS servers are served"
            );
            Ok(None)
        }
    }
}

type Auth = (ServerTlsMode, Option<String>, Vec<u16>);

/// The certificate and client-auth settings of a terminating server, read from its files.
fn load_terminate(
    tls: &ServerTlsSettings,
) -> Result<(Arc<CertifiedKey>, Auth), (&'static str, String)> {
    let refuse = |field: &'static str, what: &str| Err((field, what.to_string()));
    if tls.credential_name.is_some() || !tls.credential_names().is_empty() {
        return refuse(
            ".tls.credentialName",
            "credentialName names a Kubernetes secret, which tower-mesh cannot read; give serverCertificate and privateKey (and caCertificates for MUTUAL) as files",
        );
    }
    if tls.ca_cert_credential_name.is_some() {
        return refuse(
            ".tls.caCertCredentialName",
            "caCertCredentialName names a Kubernetes secret, which tower-mesh cannot read; give caCertificates as a file",
        );
    }
    if !tls.tls_certificates().is_empty() {
        return refuse(
            ".tls.tlsCertificates",
            "tlsCertificates is not supported; use serverCertificate and privateKey",
        );
    }
    if tls.ca_crl.is_some() {
        return refuse(
            ".tls.caCrl",
            "certificate revocation lists are not supported",
        );
    }
    if !tls.subject_alt_names.is_empty()
        || !tls.verify_certificate_spki.is_empty()
        || !tls.verify_certificate_hash.is_empty()
    {
        return refuse(
            ".tls.subjectAltNames",
            "subjectAltNames / verifyCertificateSpki / verifyCertificateHash checks of client certificates are not supported (refused rather than accepting more clients than asked)",
        );
    }
    if tls.insecure_skip_verify == Some(true) {
        return refuse(
            ".tls.insecureSkipVerify",
            "insecureSkipVerify is not supported",
        );
    }
    if !tls.cipher_suites.is_empty() || !tls.ecdh_curves.is_empty() {
        tracing::warn!("gateway tls.cipherSuites / ecdhCurves are ignored: rustls' defaults apply");
    }
    let version = |v: Option<TlsProtocol>, default: u16| match v {
        None | Some(TlsProtocol::TlsAuto) => Ok(default),
        Some(TlsProtocol::TlsV1_2) => Ok(2),
        Some(TlsProtocol::TlsV1_3) => Ok(3),
        Some(_) => Err((
            ".tls.minProtocolVersion",
            "TLS 1.0 and 1.1 are not supported (rustls): use TLSV1_2 or TLSV1_3".to_string(),
        )),
    };
    let min = version(tls.min_protocol_version, 2)?;
    let max = version(tls.max_protocol_version, 3)?;
    let versions: Vec<u16> = (min..=max).collect();
    if versions.is_empty() {
        return refuse(
            ".tls.maxProtocolVersion",
            "maxProtocolVersion is below minProtocolVersion",
        );
    }
    let (Some(cert), Some(key)) = (&tls.server_certificate, &tls.private_key) else {
        return refuse(
            ".tls.serverCertificate",
            "SIMPLE and MUTUAL need serverCertificate and privateKey files",
        );
    };
    let mode = tls.effective_mode();
    if matches!(mode, ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual)
        && tls.ca_certificates.is_none()
    {
        return refuse(
            ".tls.caCertificates",
            "MUTUAL needs caCertificates (the CA bundle client certificates are verified against)",
        );
    }
    let read = |field: &'static str, path: &str| {
        std::fs::read(path).map_err(|e| (field, format!("cannot read {path}: {e}")))
    };
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&read(".tls.serverCertificate", cert)?)
            .collect::<Result<_, _>>()
            .map_err(|e| (".tls.serverCertificate", format!("{cert}: {e}")))?;
    if chain.is_empty() {
        return Err((
            ".tls.serverCertificate",
            format!("{cert}: no PEM certificate in the file"),
        ));
    }
    let pkey = PrivateKeyDer::from_pem_slice(&read(".tls.privateKey", key)?)
        .map_err(|e| (".tls.privateKey", format!("{key}: {e}")))?;
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(pkey)
        .map_err(|e| (".tls.privateKey", format!("{key}: {e}")))?;
    let certified = CertifiedKey::new(chain, signing);
    if let Err(e) = certified.keys_match() {
        // `Unknown` means the check is not possible for this key type: not a mismatch.
        if !matches!(
            e,
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)
        ) {
            return Err((
                ".tls.privateKey",
                format!("{key} does not match the certificate {cert}: {e}"),
            ));
        }
    }
    if let Some(ca) = &tls.ca_certificates {
        // Read now so that a missing file is reported here, not at the first handshake.
        read(".tls.caCertificates", ca)?;
    }
    Ok((
        Arc::new(certified),
        (mode, tls.ca_certificates.clone(), versions),
    ))
}

/// The rustls config of a terminating port: certificates by SNI, the client authentication
/// and versions all its servers agree on, ALPN `h2` and `http/1.1`.
fn port_tls(port: u16, servers: Vec<Terminate>) -> Result<Arc<rustls::ServerConfig>, GatewayError> {
    let first = servers.first().ok_or_else(|| GatewayError {
        gateway: Arc::from("?"),
        server: 0,
        field: "",
        message: format!("port {port} has no terminating server"),
    })?;
    let (mode, ca, versions) = first.auth.clone();
    if let Some(other) = servers.iter().find(|s| s.auth != first.auth) {
        return Err(GatewayError {
            gateway: other.gateway.clone(),
            server: other.server,
            field: ".tls",
            message: format!(
                "port {port}: TLS servers of one port must share mode, caCertificates and protocol versions (one TLS config per port, certificates chosen by SNI); put this server on another port"
            ),
        });
    }
    let err = |message: String| GatewayError {
        gateway: first.gateway.clone(),
        server: first.server,
        field: ".tls",
        message,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let protocol_versions: Vec<&'static rustls::SupportedProtocolVersion> = versions
        .iter()
        .filter_map(|v| match v {
            2 => Some(&rustls::version::TLS12),
            3 => Some(&rustls::version::TLS13),
            _ => None,
        })
        .collect();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&protocol_versions)
        .map_err(|e| err(e.to_string()))?;
    let builder = match (&mode, &ca) {
        (ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual, Some(ca)) => {
            let pem = std::fs::read(ca).map_err(|e| err(format!("cannot read {ca}: {e}")))?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| err(format!("{ca}: {e}")))?;
                roots.add(cert).map_err(|e| err(format!("{ca}: {e}")))?;
            }
            if roots.is_empty() {
                return Err(err(format!("{ca}: no PEM certificate in the file")));
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if mode == ServerTlsMode::OptionalMutual {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(verifier.build().map_err(|e| err(e.to_string()))?)
        }
        _ => builder.with_no_client_auth(),
    };
    let resolver = SniCerts {
        certs: servers.into_iter().map(|s| (s.hosts, s.key)).collect(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Chooses a terminating server's certificate by the client's SNI: the most specific
/// server whose hosts cover it; without SNI, the first server's. An SNI no server covers
/// fails the handshake (Envoy: no filter chain matches).
#[derive(Debug)]
struct SniCerts {
    certs: Vec<(Vec<ServerHost>, Arc<CertifiedKey>)>,
}

impl ResolvesServerCert for SniCerts {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(sni) = hello.server_name() else {
            return self.certs.first().map(|(_, k)| k.clone());
        };
        let mut best: Option<(usize, &Arc<CertifiedKey>)> = None;
        for (hosts, key) in &self.certs {
            if let Some(score) = specificity(hosts, sni)
                && best.is_none_or(|(b, _)| score > b)
            {
                best = Some((score, key));
            }
        }
        best.map(|(_, k)| k.clone())
    }
}
