//! [`ReplayBody`]: a request body that can be sent again by a retry.
//!
//! The first try streams the caller's body as it arrives; every chunk it forwards is also kept
//! (a cheap `Bytes` clone) while the total stays within a cap (64 KiB by default,
//! [`RetryLayer::replay_limit`](super::RetryLayer::replay_limit)). A retry gets a
//! [`replay`](ReplayBody::replay): it sends the kept chunks again, then — when the earlier
//! try stopped before the end, e.g. a connect failure before any byte was read — goes on with
//! the unread rest of the caller's body, which the earlier try's body hands back when it is
//! dropped. So each try sends the whole body, exactly once.
//!
//! When the body outgrows the cap mid-stream (or announces a larger exact size), buffering
//! stops and the kept chunks are released: the try in progress goes on streaming untouched,
//! and [`replay`](ReplayBody::replay) answers `None` from then on: the request is not retried.
//! Never fails the request, never sends a body twice in part. `replay` also answers `None`
//! while an earlier try still holds the unread rest of the body (its connection is still
//! sending it), rather than waiting for it.

use std::mem;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

use crate::body::MeshBody;
use crate::error::BoxError;

/// The default replay cap: 64 KiB.
pub const DEFAULT_REPLAY_LIMIT: usize = 64 * 1024;

#[derive(Default)]
struct Shared {
    /// The chunks read so far (while within the cap).
    chunks: Vec<Bytes>,
    /// Their total length.
    len: usize,
    /// The caller's body, while no try holds it; `None` while a try streams it, and once it
    /// ended.
    rest: Option<MeshBody>,
    /// The caller's body ended (all chunks are in `chunks`, the trailers in `trailers`).
    ended: bool,
    trailers: Option<HeaderMap>,
    /// The body outgrew the cap: nothing is kept and nothing can be replayed.
    capped: bool,
    /// The body failed mid-stream: not replayable either.
    failed: bool,
}

/// A request body that keeps what it forwards, up to a cap, so a retry can send it again
/// ([module docs](self)).
pub struct ReplayBody {
    shared: Arc<Mutex<Shared>>,
    cap: usize,
    /// How many kept chunks this try has sent.
    pos: usize,
    /// The caller's body, while this try streams it.
    own: Option<MeshBody>,
    /// Trailers sent (or none to send) and the end reached.
    done: bool,
}

impl std::fmt::Debug for ReplayBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayBody")
            .field("cap", &self.cap)
            .field("pos", &self.pos)
            .field("streaming", &self.own.is_some())
            .finish()
    }
}

impl ReplayBody {
    /// Wraps `body`, keeping up to `cap` bytes for replays. A body whose exact size is known
    /// to exceed `cap` is not kept at all (pure pass-through, never replayable).
    pub fn new(body: MeshBody, cap: usize) -> Self {
        let hint = body.size_hint();
        let capped = hint
            .exact()
            .is_some_and(|n| usize::try_from(n).map_or(true, |n| n > cap));
        let shared = Shared {
            rest: Some(body),
            capped,
            ..Shared::default()
        };
        ReplayBody {
            shared: Arc::new(Mutex::new(shared)),
            cap,
            pos: 0,
            own: None,
            done: false,
        }
    }

    /// A body for another try, sending the whole body again; `None` when the body outgrew
    /// the cap, failed, or an earlier try still holds its unread rest.
    pub fn replay(&self) -> Option<ReplayBody> {
        let shared = lock(&self.shared);
        let whole = !shared.capped && !shared.failed && (shared.ended || shared.rest.is_some());
        whole.then(|| ReplayBody {
            shared: self.shared.clone(),
            cap: self.cap,
            pos: 0,
            own: None,
            done: false,
        })
    }

    /// Whether the body outgrew the cap (then it is never replayed).
    pub fn is_capped(&self) -> bool {
        lock(&self.shared).capped
    }

    /// Bytes kept for replay so far.
    pub fn buffered(&self) -> usize {
        lock(&self.shared).len
    }
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Drop for ReplayBody {
    fn drop(&mut self) {
        // Hand the unread rest back for the next try.
        if let Some(rest) = self.own.take() {
            lock(&self.shared).rest = Some(rest);
        }
    }
}

impl Body for ReplayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if this.own.is_none() {
            let mut shared = lock(&this.shared);
            // First the chunks kept by earlier tries.
            if let Some(chunk) = shared.chunks.get(this.pos) {
                let chunk = chunk.clone();
                this.pos += 1;
                return Poll::Ready(Some(Ok(Frame::data(chunk))));
            }
            if shared.ended {
                this.done = true;
                return Poll::Ready(shared.trailers.clone().map(|t| Ok(Frame::trailers(t))));
            }
            if this.pos < shared.chunks.len() || (shared.capped && this.pos > 0) {
                // Unreachable by construction (a capped body is never replayed).
                return Poll::Ready(Some(Err("request body is no longer replayable".into())));
            }
            match shared.rest.take() {
                Some(rest) => this.own = Some(rest),
                None => {
                    return Poll::Ready(Some(Err("request body is held by another try".into())));
                }
            }
        }
        let Some(own) = this.own.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(own).poll_frame(cx);
        match polled {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(frame))) => {
                let mut shared = lock(&this.shared);
                if let Some(data) = frame.data_ref() {
                    if !shared.capped {
                        if shared.len.saturating_add(data.len()) <= this.cap {
                            shared.len += data.len();
                            shared.chunks.push(data.clone());
                            this.pos = shared.chunks.len();
                        } else {
                            shared.capped = true;
                            shared.len = 0;
                            drop(mem::take(&mut shared.chunks));
                        }
                    }
                } else if let Some(trailers) = frame.trailers_ref() {
                    shared.trailers = Some(trailers.clone());
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => {
                lock(&this.shared).failed = true;
                this.own = None;
                this.done = true;
                Poll::Ready(Some(Err(err)))
            }
            Poll::Ready(None) => {
                lock(&this.shared).ended = true;
                this.own = None;
                this.done = true;
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        if self.done {
            return true;
        }
        match &self.own {
            Some(own) => own.is_end_stream(),
            None => {
                let shared = lock(&self.shared);
                shared.ended && self.pos >= shared.chunks.len() && shared.trailers.is_none()
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        if self.done {
            return SizeHint::with_exact(0);
        }
        let shared = lock(&self.shared);
        let replayed: usize = shared.chunks.iter().skip(self.pos).map(Bytes::len).sum();
        let replayed = replayed as u64;
        let rest = match (&self.own, &shared.rest) {
            (Some(body), _) | (None, Some(body)) => body.size_hint(),
            (None, None) => SizeHint::with_exact(0),
        };
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower().saturating_add(replayed));
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper.saturating_add(replayed));
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body;
    use http_body_util::{BodyExt, StreamBody};
    use std::convert::Infallible;

    /// A body of `chunks` streamed one frame at a time, with no size hint.
    fn stream(chunks: &[&'static str], trailers: Option<HeaderMap>) -> MeshBody {
        let mut frames: Vec<Result<Frame<Bytes>, Infallible>> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes()))))
            .collect();
        if let Some(t) = trailers {
            frames.push(Ok(Frame::trailers(t)));
        }
        body::boxed(StreamBody::new(futures_iter(frames)))
    }

    fn futures_iter<T: Unpin>(items: Vec<T>) -> impl futures_core::Stream<Item = T> + Unpin {
        struct Iter<T>(std::vec::IntoIter<T>);
        impl<T: Unpin> futures_core::Stream for Iter<T> {
            type Item = T;
            fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<T>> {
                Poll::Ready(self.0.next())
            }
        }
        Iter(items.into_iter())
    }

    async fn collect(body: ReplayBody) -> (Vec<u8>, Option<HeaderMap>) {
        let collected = body.collect().await.expect("body collects");
        let trailers = collected.trailers().cloned();
        (collected.to_bytes().to_vec(), trailers)
    }

    #[tokio::test]
    async fn a_body_under_the_cap_replays_whole_with_its_trailers() {
        let mut t = HeaderMap::new();
        t.insert("x-checksum", "abc".parse().expect("valid"));
        let first = ReplayBody::new(stream(&["he", "llo", " world"], Some(t.clone())), 64);
        let handle = first.replay().expect("replayable before it is read");
        drop(handle);
        let (bytes, trailers) = collect(first.replay().expect("replayable")).await;
        assert_eq!(bytes, b"hello world");
        assert_eq!(trailers.as_ref(), Some(&t));
        for _ in 0..3 {
            let again = first.replay().expect("still replayable");
            assert_eq!(again.size_hint().exact(), Some(11));
            let (bytes, trailers) = collect(again).await;
            assert_eq!(bytes, b"hello world");
            assert_eq!(trailers.as_ref(), Some(&t));
        }
        assert_eq!(first.buffered(), 11);
    }

    #[tokio::test]
    async fn a_try_that_stopped_midway_hands_the_rest_to_the_next() {
        let original = ReplayBody::new(stream(&["a", "b", "c", "d"], None), 64);
        let mut first = original.replay().expect("replayable");
        // The first try reads two chunks, then fails and is dropped.
        for want in ["a", "b"] {
            let frame = first.frame().await.expect("a frame").expect("ok");
            assert_eq!(frame.into_data().ok().as_deref(), Some(want.as_bytes()));
        }
        assert!(
            original.replay().is_none(),
            "the first try still holds the rest"
        );
        drop(first);
        let (bytes, _) = collect(original.replay().expect("rest handed back")).await;
        assert_eq!(bytes, b"abcd", "each byte exactly once");
        let (bytes, _) = collect(original.replay().expect("complete now")).await;
        assert_eq!(bytes, b"abcd");
    }

    #[tokio::test]
    async fn a_body_over_the_cap_streams_once_untouched_and_is_not_replayable() {
        let original = ReplayBody::new(stream(&["0123", "4567", "89"], None), 6);
        let first = original.replay().expect("not yet over the cap");
        let (bytes, _) = collect(first).await;
        assert_eq!(bytes, b"0123456789", "the first try gets the whole body");
        assert!(original.is_capped());
        assert_eq!(original.buffered(), 0, "kept chunks are released");
        assert!(original.replay().is_none());
    }

    #[tokio::test]
    async fn a_body_capped_mid_stream_is_not_replayable_even_if_the_try_stops() {
        let original = ReplayBody::new(stream(&["0123", "4567", "89"], None), 6);
        let mut first = original.replay().expect("replayable");
        let _a = first.frame().await;
        let _b = first.frame().await; // over the cap
        drop(first);
        assert!(original.replay().is_none(), "never sent twice in part");
    }

    #[tokio::test]
    async fn a_known_size_over_the_cap_is_never_buffered() {
        let original = ReplayBody::new(body::full(vec![7u8; 100]), 64);
        assert!(original.is_capped());
        assert!(original.replay().is_none());
        // The original itself still streams.
        let (bytes, _) = collect(original).await;
        assert_eq!(bytes.len(), 100);
    }

    #[tokio::test]
    async fn an_empty_body_replays_empty() {
        let original = ReplayBody::new(body::empty(), 64);
        let (bytes, t) = collect(original.replay().expect("replayable")).await;
        assert!(bytes.is_empty() && t.is_none());
        let again = original.replay().expect("replayable");
        assert!(again.is_end_stream());
        let (bytes, _) = collect(again).await;
        assert!(bytes.is_empty());
    }

    #[tokio::test]
    async fn a_failed_body_is_not_replayed() {
        let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = vec![
            Ok(Frame::data(Bytes::from_static(b"x"))),
            Err(std::io::Error::other("client went away")),
        ];
        let original = ReplayBody::new(body::boxed(StreamBody::new(futures_iter(frames))), 64);
        let first = original.replay().expect("replayable");
        assert!(first.collect().await.is_err());
        assert!(original.replay().is_none());
    }
}
