//! The response body of a pooled request: keeps its HTTP/1.1 connection busy until the body
//! ends (then returns it to the pool) or is dropped (then closes it).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::client::{H1Conn, Inner};
use crate::body::BodyGuards;
use crate::error::BoxError;

/// Counts a request in [`PoolStats::in_flight`](super::PoolStats::in_flight) from `send`
/// until its response body ends or is dropped.
/// It also carries the caller's [`BodyGuards`], released with it.
pub(super) struct InFlight {
    inner: Arc<Inner>,
    _extra: BodyGuards,
}

impl InFlight {
    pub(super) fn new(inner: Arc<Inner>, extra: BodyGuards) -> Self {
        inner.in_flight().fetch_add(1, Ordering::AcqRel);
        InFlight {
            inner,
            _extra: extra,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.inner.in_flight().fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body from a pool connection.
pub(super) struct PooledBody {
    body: Incoming,
    /// The HTTP/1.1 connection, until the body ends (HTTP/2: `None`).
    conn: Option<H1Conn>,
    guard: Option<InFlight>,
}

impl PooledBody {
    pub(super) fn new(body: Incoming, conn: Option<H1Conn>, guard: InFlight) -> Self {
        let mut this = PooledBody {
            body,
            conn,
            guard: Some(guard),
        };
        // A body that is already over (HEAD, 204, `content-length: 0`) frees at once.
        if this.body.is_end_stream() {
            this.finish(true);
        }
        this
    }

    /// The body is over: a clean end gives the connection back, an error closes it. One
    /// clock reading serves the connection's idle mark and the endpoint's latency sample.
    fn finish(&mut self, clean: bool) {
        let mut guard = self.guard.take();
        let now = Instant::now();
        if let Some(conn) = self.conn.take() {
            if clean && let Some(guard) = &guard {
                guard.inner.release(conn, now);
            } else {
                drop(conn);
            }
        }
        if let Some(in_flight) = guard.as_mut().and_then(|g| g._extra.in_flight.take()) {
            in_flight.end_at(now);
        }
        drop(guard);
    }
}

/// The error is hyper's, boxed here (only when there is one): the body is boxed as a
/// [`MeshBody`](crate::body::MeshBody) without a `MapErr` layer in between.
impl Body for PooledBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(None) => {
                this.finish(true);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(err))) => {
                this.finish(false);
                Poll::Ready(Some(Err(err.into())))
            }
            Poll::Ready(Some(Ok(frame))) => {
                if this.body.is_end_stream() {
                    this.finish(true);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
