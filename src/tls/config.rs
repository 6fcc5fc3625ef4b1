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
/// Session resumption is off (no session cache, no TLS 1.3 tickets): a resumed session skips
/// the client-certificate check, so a certificate that expired (or a CA removed from the
/// bundle by a rotation) would go on being accepted on new connections. Every connection
/// gets a full handshake and a fresh verification, at the cost of a few more handshake
/// round trips' worth of CPU.
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
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
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

/// Whether the first bytes of a connection are a TLS ClientHello, for PeerAuthentication
/// `PERMISSIVE` (one port serving mTLS and plaintext, as Envoy's `tls_inspector` decides):
/// a handshake record (`0x16`), a `3.x` record version, and handshake type `client_hello`
/// (`0x01`) in byte 6. `None` while fewer than 6 bytes have arrived and they could still be
/// one; `Some(false)` as soon as they cannot (an HTTP method, the HTTP/2 preface `PRI `).
pub fn is_tls_client_hello(prefix: &[u8]) -> Option<bool> {
    let checks: [fn(u8) -> bool; 6] = [
        |b| b == 0x16,
        |b| b == 0x03,
        |b| b <= 0x04,
        |_| true,
        |_| true,
        |b| b == 0x01,
    ];
    for (byte, ok) in prefix.iter().zip(checks) {
        if !ok(*byte) {
            return Some(false);
        }
    }
    (prefix.len() >= checks.len()).then_some(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_hello_is_told_from_plaintext_by_its_first_bytes() {
        assert_eq!(is_tls_client_hello(b""), None);
        assert_eq!(is_tls_client_hello(&[0x16, 0x03]), None);
        assert_eq!(
            is_tls_client_hello(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]),
            Some(true)
        );
        assert_eq!(
            is_tls_client_hello(&[0x16, 0x03, 0x03, 0x00, 0x10, 0x01, 0xff]),
            Some(true)
        );
        // A ServerHello, a TLS alert, SSLv2-looking bytes, HTTP/1.1 and the HTTP/2 preface.
        assert_eq!(
            is_tls_client_hello(&[0x16, 0x03, 0x03, 0x00, 0x10, 0x02]),
            Some(false)
        );
        assert_eq!(is_tls_client_hello(&[0x15, 0x03, 0x03]), Some(false));
        assert_eq!(is_tls_client_hello(&[0x16, 0x02]), Some(false));
        assert_eq!(is_tls_client_hello(b"GET / HTTP/1.1\r\n"), Some(false));
        assert_eq!(is_tls_client_hello(b"PRI * HTTP/2.0\r\n"), Some(false));
        assert_eq!(is_tls_client_hello(&[0x16, 0x03, 0x09]), Some(false));
    }
}
