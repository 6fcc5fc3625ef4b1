//! rustls configurations for mesh mTLS, with Istio's ALPN values (see [`SERVER_ALPN`]).

use std::sync::Arc;

use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{ClientConfig, ServerConfig};

use super::identity::{TrustBundle, WorkloadIdentity};
use super::verify::{
    ClientAuth, ExpectedSan, NamesServerVerifier, SpiffeClientVerifier, SpiffeServerVerifier,
};
use crate::pool::UpstreamProtocol;

/// What a mesh server accepts, in preference order: `h2`, `http/1.1`, `istio-h2`,
/// `istio-http/1.1`, `istio`.
///
/// Istio marks in-mesh mTLS with ALPN: a sidecar's client offers `istio-http/1.1, istio,
/// http/1.1` for HTTP/1.1 and `istio-h2, istio, h2` for HTTP/2 (plus `istio-peer-exchange`
/// for TCP metadata exchange, which tower-mesh never offers: it has no TCP proxying and
/// peer-exchange frames would not be understood). The receiving sidecar negotiates plain
/// `h2` / `http/1.1`. [`server_config`] accepts all of them, preferring the plain names, so
/// both a real Istio sidecar and tower-mesh's own client negotiate; `istio-h2` and `h2` both
/// mean HTTP/2 ([`alpn_is_h2`]).
pub const SERVER_ALPN: &[&[u8]] = &[b"h2", b"http/1.1", b"istio-h2", b"istio-http/1.1", b"istio"];

/// What an Istio sidecar offers for HTTP/1.1 in the mesh: `istio-http/1.1, istio, http/1.1`.
pub const ISTIO_ALPN_HTTP1: &[&[u8]] = &[b"istio-http/1.1", b"istio", b"http/1.1"];

/// What an Istio sidecar offers for HTTP/2 in the mesh: `istio-h2, istio, h2`.
pub const ISTIO_ALPN_H2: &[&[u8]] = &[b"istio-h2", b"istio", b"h2"];

/// What tower-mesh offers when either protocol will do ([`UpstreamProtocol::Alpn`]):
/// `istio-h2, istio-http/1.1, istio, h2, http/1.1`.
pub const ISTIO_ALPN_ANY: &[&[u8]] =
    &[b"istio-h2", b"istio-http/1.1", b"istio", b"h2", b"http/1.1"];

/// The in-mesh ALPN list for a protocol.
pub fn istio_alpn(protocol: UpstreamProtocol) -> &'static [&'static [u8]] {
    match protocol {
        UpstreamProtocol::Http1 => ISTIO_ALPN_HTTP1,
        UpstreamProtocol::Http2 => ISTIO_ALPN_H2,
        UpstreamProtocol::Alpn => ISTIO_ALPN_ANY,
    }
}

/// The ALPN list for TLS to a server outside the mesh (`SIMPLE`/`MUTUAL`): `http/1.1`, `h2`,
/// or both (`h2` first).
pub fn plain_alpn(protocol: UpstreamProtocol) -> &'static [&'static [u8]] {
    match protocol {
        UpstreamProtocol::Http1 => &[b"http/1.1"],
        UpstreamProtocol::Http2 => &[b"h2"],
        UpstreamProtocol::Alpn => &[b"h2", b"http/1.1"],
    }
}

/// Whether a negotiated ALPN protocol is HTTP/2 (`h2` or `istio-h2`).
pub fn alpn_is_h2(protocol: &[u8]) -> bool {
    protocol == b"h2" || protocol == b"istio-h2"
}

fn alpn_vec(alpn: &[&[u8]]) -> Vec<Vec<u8>> {
    alpn.iter().map(|p| p.to_vec()).collect()
}

/// A server configuration presenting `identity`'s certificate and verifying clients with
/// [`SpiffeClientVerifier`] against its bundle and trust domains; TLS 1.2 and 1.3 on *ring*;
/// `alpn` offered in that order (usually [`SERVER_ALPN`]).
///
/// The [`IdentityManager`](super::IdentityManager) publishes these for the current identity;
/// this function is the building block (and what tests use with a fixed identity).
pub fn server_config(
    identity: &WorkloadIdentity,
    client_auth: ClientAuth,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let verifier = SpiffeClientVerifier::new(
        identity.bundle().clone(),
        identity.trust_domains().into(),
        client_auth,
    );
    let mut config = ServerConfig::builder_with_provider(super::provider())
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(identity.certified_key())));
    config.alpn_protocols = alpn_vec(alpn);
    Ok(Arc::new(config))
}

/// A client configuration for `ISTIO_MUTUAL`: presents `identity`'s certificate, verifies the
/// server with [`SpiffeServerVerifier`] (one of `expected`, any of our trust domains when
/// empty), offers Istio's ALPN for `protocol` ([`istio_alpn`]).
pub fn client_config(
    identity: &WorkloadIdentity,
    expected: &[ExpectedSan],
    protocol: UpstreamProtocol,
) -> Result<Arc<ClientConfig>, rustls::Error> {
    let verifier = SpiffeServerVerifier::new(
        identity.bundle().clone(),
        identity.trust_domains().into(),
        expected.into(),
    );
    let mut config = ClientConfig::builder_with_provider(super::provider())
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(identity.certified_key())));
    config.alpn_protocols = alpn_vec(istio_alpn(protocol));
    Ok(Arc::new(config))
}

/// A client configuration for `SIMPLE` (no `client`) or `MUTUAL` origination: verifies the
/// server with [`NamesServerVerifier`] against `ca` and `sans`, offers [`plain_alpn`].
pub fn origination_config(
    ca: TrustBundle,
    sans: &[ExpectedSan],
    client: Option<Arc<CertifiedKey>>,
    protocol: UpstreamProtocol,
) -> Result<Arc<ClientConfig>, rustls::Error> {
    let verifier = NamesServerVerifier::new(ca, sans.into());
    let builder = ClientConfig::builder_with_provider(super::provider())
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let mut config = match client {
        Some(key) => builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(key))),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn_vec(plain_alpn(protocol));
    Ok(Arc::new(config))
}
