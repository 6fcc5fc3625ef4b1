//! Calling a tower service in place: the hot-path alternative to `svc.clone().oneshot(req)`
//! used by the server (per connection) and by [`Forward`](crate::proxy::Forward).
//!
//! The service is asked for readiness once with a waker that does nothing. Ready (the mesh's
//! stacks always are), it is called where it is: no clone of it and no `Oneshot` per request.
//! Not ready (or failing readiness), a clone of it is driven to readiness by the call's
//! future, woken as a `oneshot` is, and that future is boxed so the common one stays small.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tower::Service;
use tower::util::{Oneshot, ServiceExt};

/// Calls `svc` with `req` in place when it is ready right now, else a clone of it through
/// `oneshot` (see the module docs).
pub(crate) fn call<S, R>(svc: &mut S, req: R) -> InPlace<S::Future, Oneshot<S, R>>
where
    S: Service<R> + Clone,
{
    match svc.poll_ready(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(Ok(())) => InPlace::Called { fut: svc.call(req) },
        // A readiness error reaches the caller through the clone's own `poll_ready`.
        Poll::Ready(Err(_)) | Poll::Pending => InPlace::Readying {
            oneshot: Box::pin(svc.clone().oneshot(req)),
        },
    }
}

pin_project_lite::pin_project! {
    /// The future of [`call`]: the service's own call when it was ready, else a clone of it
    /// driven to readiness first. (`O`: the `Oneshot` of a clone.)
    #[project = InPlaceProj]
    pub(crate) enum InPlace<F, O> {
        Called { #[pin] fut: F },
        Readying { oneshot: Pin<Box<O>> },
    }
}

impl<F, O> Future for InPlace<F, O>
where
    F: Future,
    O: Future<Output = F::Output>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            InPlaceProj::Called { fut } => fut.poll(cx),
            InPlaceProj::Readying { oneshot } => oneshot.as_mut().poll(cx),
        }
    }
}

/// Polls `fut` once (tests): its output if it was ready.
#[cfg(test)]
pub(crate) async fn poll_once<F: Future + Unpin>(fut: &mut F) -> Option<F::Output> {
    std::future::poll_fn(|cx| {
        Poll::Ready(match Pin::new(&mut *fut).poll(cx) {
            Poll::Ready(out) => Some(out),
            Poll::Pending => None,
        })
    })
    .await
}
