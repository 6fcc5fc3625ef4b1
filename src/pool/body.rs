//! The response body of a pooled request: keeps its HTTP/1.1 connection busy until the body
//! ends (then returns it to the pool) or is dropped (then closes it).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::client::{H1Conn, Inner};
use crate::body::BodyGuards;

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

    /// The body is over: a clean end gives the connection back, an error closes it.
    fn finish(&mut self, clean: bool) {
        let guard = self.guard.take();
        if let Some(conn) = self.conn.take() {
            if clean && let Some(guard) = &guard {
                guard.inner.release(conn);
            } else {
                drop(conn);
            }
        }
        drop(guard);
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.finish(true),
            Poll::Ready(Some(Err(_))) => this.finish(false),
            Poll::Ready(Some(Ok(_))) if this.body.is_end_stream() => this.finish(true),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
