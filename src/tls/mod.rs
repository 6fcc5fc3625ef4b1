//! Workload identity and mutual TLS: SPIFFE IDs, X.509-SVIDs, rotation, verifiers, rustls
//! configurations and the outbound TLS connector.
//!
//! Istio gives every workload an X.509 certificate whose only subject alternative name is its
//! SPIFFE ID (`spiffe://cluster.local/ns/<namespace>/sa/<service account>`), and sidecars
//! speak mutual TLS with them: both ends present a certificate, both verify the other's chain
//! against the mesh's root and read the peer's identity from its URI SAN. This module is that
//! machinery on rustls (with *ring*, always passed explicitly: no process-wide default
//! provider is installed or relied on):
//!
//! - [`SpiffeId`]: the identity type, parsed strictly;
//! - [`WorkloadIdentity`] and [`IdentitySource`] ([`PemFiles`], [`StaticIdentity`]): chain,
//!   key and trust bundle;
//! - [`IdentityManager`]: rotation without restart, expiry warnings ([`IdentityEvent`]);
//! - [`SpiffeClientVerifier`], [`SpiffeServerVerifier`], [`NamesServerVerifier`]: what rustls'
//!   WebPKI verifiers cannot do for URI-only certificates;
//! - [`server_config`] / [`client_config`] with Istio's ALPN values;
//! - [`PeerIdentity`]: who the peer is, for request extensions (and an axum extractor);
//! - [`Originate`] and [`TlsConnector`]: DestinationRule `tls` on the pools' connector slot;
//! - `DevCa` (feature `dev-ca`): a development CA for tests and examples.
//!
//! ```
//! # #[cfg(feature = "dev-ca")] {
//! use std::time::Duration;
//! use tower_mesh::tls::{client_config, server_config, ClientAuth, DevCa, ExpectedSan, SpiffeId, SERVER_ALPN};
//! use tower_mesh::pool::UpstreamProtocol;
//!
//! let ca = DevCa::new("cluster.local")?;
//! let day = Duration::from_secs(86_400);
//! let server_id = SpiffeId::istio("cluster.local", "default", "reviews")?;
//! let server = ca.issue(&server_id, day)?.identity()?;
//! let client = ca.issue(&SpiffeId::istio("cluster.local", "default", "productpage")?, day)?.identity()?;
//!
//! // The reviews server requires a client certificate; productpage expects reviews' identity.
//! let _accept = server_config(&server, ClientAuth::Required, SERVER_ALPN)?;
//! let _dial = client_config(&client, &[ExpectedSan::Spiffe(server_id)], UpstreamProtocol::Http1)?;
//! # }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

mod cert;
mod config;
mod connect;
#[cfg(feature = "dev-ca")]
mod dev_ca;
mod identity;
mod peer;
mod rotate;
mod spiffe;
#[cfg(all(test, feature = "dev-ca"))]
mod tests;
mod verify;

pub use cert::SvidError;
pub use config::{
    ISTIO_ALPN_ANY, ISTIO_ALPN_H2, ISTIO_ALPN_HTTP1, SERVER_ALPN, alpn_is_h2, client_config,
    is_tls_client_hello, istio_alpn, origination_config, plain_alpn, server_config,
};
pub use connect::{Originate, OriginateError, TlsConnector};
#[cfg(feature = "dev-ca")]
pub use dev_ca::{DevCa, DevCaError, IssuedCert};
pub use identity::{
    IdentityError, IdentitySource, PemFiles, Revision, StaticIdentity, TrustBundle,
    WorkloadIdentity,
};
pub use peer::{NoPeerIdentity, PeerIdentity};
pub use rotate::{ExpiryWarning, IdentityEvent, IdentityManager, IdentitySettings};
pub use spiffe::{MAX_SPIFFE_ID_LEN, MAX_TRUST_DOMAIN_LEN, SpiffeId, SpiffeIdError};
pub use verify::{
    ClientAuth, ExpectedSan, NamesServerVerifier, SpiffeClientVerifier, SpiffeServerVerifier,
    VerifyError, describe_handshake_error,
};

/// The *ring* crypto provider every configuration and verifier here uses (built once).
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}
