//! The body type of every request and response on the mesh's request path.
//!
//! Layers are generic over the caller's request body, but the parts below the router (pools,
//! retries, mesh-made answers) need one concrete type: [`MeshBody`], a boxed
//! `http_body::Body` of [`Bytes`] whose error is a [`BoxError`]. It is `Send` but not `Sync`,
//! as tonic's and axum's bodies are.

use bytes::Bytes;
use http_body::Body;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};

use crate::error::BoxError;

/// Counts a response holds until its body ends or is dropped, carried by the pool's own
/// response body ([`Pool::send_guarded`](crate::pool::Pool)), so the
/// [`MeshClient`](crate::MeshClient) wraps each response body once for all of them instead
/// of once per count: the destination's request in flight (`http2MaxRequests`, what
/// [`CircuitBreakerLayer`](crate::resilience::circuit::CircuitBreakerLayer) holds on its
/// own) and the endpoint's busy mark for `LEAST_REQUEST`.
#[derive(Default)]
#[expect(dead_code, reason = "the fields are held for their `Drop`, never read")]
pub(crate) struct BodyGuards {
    /// The destination's `http2MaxRequests` count.
    pub(crate) request: Option<crate::resilience::circuit::RequestGuard>,
    /// The endpoint's in-flight count (least request).
    pub(crate) in_flight: Option<crate::balance::InFlightGuard>,
}

/// A boxed body of [`Bytes`] chunks with a [`BoxError`] error.
pub type MeshBody = UnsyncBoxBody<Bytes, BoxError>;

/// Boxes any body whose error converts into a [`BoxError`].
pub fn boxed<B>(body: B) -> MeshBody
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// A body holding `bytes` in one chunk.
pub fn full(bytes: impl Into<Bytes>) -> MeshBody {
    boxed(Full::new(bytes.into()))
}

/// An empty body.
pub fn empty() -> MeshBody {
    boxed(Empty::<Bytes>::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn full_and_empty_collect_to_their_bytes() {
        let got = full("hello").collect().await.map(|c| c.to_bytes());
        assert_eq!(got.ok().as_deref(), Some(&b"hello"[..]));
        let got = empty().collect().await.map(|c| c.to_bytes());
        assert_eq!(got.ok().map(|b| b.len()), Some(0));
    }
}
