//! The peer's identity after an mTLS handshake, for request extensions and handlers.

use std::sync::Arc;
use std::time::SystemTime;

use super::cert;
use super::spiffe::SpiffeId;

/// Who is on the other end of an mTLS connection: the SPIFFE ID of the certificate it
/// presented (already verified by the handshake).
///
/// The inbound stack puts it in each request's extensions; AuthorizationPolicy `principals`
/// match [`SpiffeId::principal`]. With the `axum` feature it is an extractor (rejection: 401
/// `no peer identity`), and `Option<PeerIdentity>` extracts `None` for a plaintext or
/// certificate-less caller. Cloning is cheap.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerIdentity {
    /// The peer's SPIFFE ID (its certificate's URI SAN).
    pub spiffe_id: SpiffeId,
    /// The peer certificate's `notAfter`.
    pub not_after: SystemTime,
    /// The peer certificate's serial number, lowercase hex.
    pub serial: Arc<str>,
}

impl PeerIdentity {
    /// An identity for `spiffe_id` (tests and custom transports).
    pub fn new(spiffe_id: SpiffeId, not_after: SystemTime, serial: impl Into<Arc<str>>) -> Self {
        PeerIdentity {
            spiffe_id,
            not_after,
            serial: serial.into(),
        }
    }

    /// The identity of a handshaken connection's peer (`tokio_rustls` streams give the
    /// connection with `get_ref().1`; both client and server connections deref to
    /// `CommonState`). `None` when the peer sent no certificate or it is not an X.509-SVID.
    pub fn from_tls(conn: &rustls::CommonState) -> Option<PeerIdentity> {
        let leaf = conn.peer_certificates()?.first()?;
        let info = cert::inspect(leaf).ok()?;
        let spiffe_id = info.spiffe_id().ok()?;
        Some(PeerIdentity {
            spiffe_id,
            not_after: cert::system_time(info.not_after),
            serial: info.serial.into(),
        })
    }

    /// The id without `spiffe://`, as AuthorizationPolicy `principals` are written.
    pub fn principal(&self) -> &str {
        self.spiffe_id.principal()
    }
}

/// The rejection of the [`PeerIdentity`] extractor: the request did not come over mTLS with
/// a client certificate. A 401 with the text `no peer identity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no peer identity")]
pub struct NoPeerIdentity;

#[cfg(feature = "axum")]
mod axum_impls {
    use std::convert::Infallible;

    use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
    use axum_core::response::{IntoResponse, Response};
    use http::StatusCode;
    use http::request::Parts;

    use super::{NoPeerIdentity, PeerIdentity};

    impl IntoResponse for NoPeerIdentity {
        fn into_response(self) -> Response {
            (StatusCode::UNAUTHORIZED, "no peer identity").into_response()
        }
    }

    impl<S: Send + Sync> FromRequestParts<S> for PeerIdentity {
        type Rejection = NoPeerIdentity;

        async fn from_request_parts(
            parts: &mut Parts,
            _state: &S,
        ) -> Result<Self, Self::Rejection> {
            parts
                .extensions
                .get::<PeerIdentity>()
                .cloned()
                .ok_or(NoPeerIdentity)
        }
    }

    impl<S: Send + Sync> OptionalFromRequestParts<S> for PeerIdentity {
        type Rejection = Infallible;

        async fn from_request_parts(
            parts: &mut Parts,
            _state: &S,
        ) -> Result<Option<Self>, Self::Rejection> {
            Ok(parts.extensions.get::<PeerIdentity>().cloned())
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[tokio::test]
        async fn extractor_reads_extensions_and_rejects_with_401() {
            let (mut parts, ()) = http::Request::new(()).into_parts();
            let rejected =
                <PeerIdentity as FromRequestParts<()>>::from_request_parts(&mut parts, &())
                    .await
                    .expect_err("no identity yet");
            let resp = rejected.into_response();
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
            let none =
                <PeerIdentity as OptionalFromRequestParts<()>>::from_request_parts(&mut parts, &())
                    .await
                    .expect("infallible");
            assert_eq!(none, None);

            let id = PeerIdentity::new(
                "spiffe://td/ns/a/sa/b".parse().expect("valid"),
                std::time::SystemTime::UNIX_EPOCH,
                "01",
            );
            parts.extensions.insert(id.clone());
            let got = <PeerIdentity as FromRequestParts<()>>::from_request_parts(&mut parts, &())
                .await
                .expect("present");
            assert_eq!(got, id);
            assert_eq!(got.principal(), "td/ns/a/sa/b");
        }
    }
}
