//! [`TimeoutLayer`]: VirtualService `http[].timeout`, the bound on the whole call.
//!
//! The route's `timeout` (Envoy's route `timeout`; Istio's default for HTTP routes is
//! *disabled*) covers the call from the moment this layer receives it until the response has
//! ended (its body included, as Envoy's route timeout does), retries and their backoff
//! included: the layer sits above the [`RetryLayer`](super::RetryLayer). Before the response
//! headers, expiry is an error; after them, the response body fails with the same error. A gRPC request's `grpc-timeout` header caps it too
//! (Istio sets Envoy's `max_stream_duration.grpc_timeout_header_max` to the route timeout, so
//! the header is honoured up to the route timeout, and alone when the route has none). On
//! expiry the call is dropped (which cancels the try in flight) and the answer is
//! [`Error::Timeout`] (504, flag `UT`). A response that is complete in its headers (an empty
//! body) is returned as is, without a timer.
//!
//! A request without a [`RouteDecision`], or whose route has no timeout and no
//! `grpc-timeout`, passes through with no timer at all.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderMap, HeaderName, Request, Response};
use tokio::time::Sleep;
use tower::{Layer, Service};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::body::{self, MeshBody};
use crate::error::{BoxError, Error, is_grpc_request};
use crate::route::RouteDecision;

/// Put in a request's [`RouteDecision`] by [`TimeoutService`] when the call has a deadline; set when
/// the deadline passes, just before the call is dropped. The upstream sender reads it when
/// its try is dropped before the response headers: a try abandoned by the route timeout
/// counts against its endpoint in outlier detection (a try dropped because the caller went
/// away does not).
#[derive(Debug, Clone, Default)]
pub(crate) struct RouteTimeoutExpiry(Arc<AtomicBool>);

impl RouteTimeoutExpiry {
    /// Whether the route timeout has expired.
    pub(crate) fn expired(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// Applies the route's `timeout` (and `grpc-timeout`) to the whole call ([module docs](self)).
#[derive(Debug, Clone, Default)]
pub struct TimeoutLayer {
    _priv: (),
}

impl TimeoutLayer {
    /// The layer.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = TimeoutService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TimeoutService { inner }
    }
}

/// The service of [`TimeoutLayer`].
#[derive(Debug, Clone)]
pub struct TimeoutService<S> {
    inner: S,
}

/// The timeout that applies to `req`: the route's `timeout` capped by a gRPC request's
/// `grpc-timeout`; `None` when neither is set. Whether the request is a gRPC request is its
/// [`RouteDecision`]'s [`is_grpc`](RouteDecision::is_grpc) when it has one (as routed), else
/// read from its headers.
pub fn effective_timeout<B>(req: &Request<B>) -> Option<Duration> {
    let decision = req.extensions().get::<RouteDecision>();
    let route = decision
        .and_then(|d| d.route())
        .and_then(|r| r.timeout())
        .filter(|t| !t.is_zero());
    let is_grpc = match decision {
        Some(d) => d.is_grpc(),
        None => is_grpc_request(req.headers()),
    };
    let grpc = if is_grpc {
        // `grpc-timeout: 0` means no deadline, as in Envoy.
        grpc_timeout(req.headers()).filter(|t| !t.is_zero())
    } else {
        None
    };
    match (route, grpc) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Parses a `grpc-timeout` header: 1 to 8 ASCII digits and a unit (`H`, `M`, `S`, `m`, `u`,
/// `n`), as the gRPC HTTP/2 spec defines it. `None` when absent or malformed (ignored, as
/// Envoy does).
pub fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(GRPC_TIMEOUT)?.as_bytes();
    let (unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n.checked_mul(3600)?),
        b'M' => Duration::from_secs(n.checked_mul(60)?),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

impl<S> Service<Request<MeshBody>> for TimeoutService<S>
where
    S: Service<Request<MeshBody>, Response = Response<MeshBody>, Error = Error>,
{
    type Response = Response<MeshBody>;
    type Error = Error;
    type Future = TimeoutFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<MeshBody>) -> Self::Future {
        let timeout = effective_timeout(&req);
        // The mark rides in the routing decision (what the upstream sender reads), not as
        // an extension of its own. (Without a decision nothing below reads it.)
        let expiry = timeout.map(|_| {
            let expiry = RouteTimeoutExpiry::default();
            if let Some(d) = req.extensions_mut().get_mut::<RouteDecision>() {
                d.set_timeout_expiry(expiry.clone());
            }
            expiry
        });
        TimeoutFuture {
            inner: Some(self.inner.call(req)),
            sleep: timeout.map(|t| Box::pin(tokio::time::sleep(t))),
            timeout: timeout.unwrap_or_default(),
            expiry,
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`TimeoutService`]. Its one timer (boxed, so it can move) goes on to
    /// the response body when the headers come first: one timer per call, not two.
    pub struct TimeoutFuture<F> {
        #[pin]
        inner: Option<F>,
        sleep: Option<Pin<Box<Sleep>>>,
        timeout: Duration,
        expiry: Option<RouteTimeoutExpiry>,
    }
}

impl<F> Future for TimeoutFuture<F>
where
    F: Future<Output = Result<Response<MeshBody>, Error>>,
{
    type Output = Result<Response<MeshBody>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let Some(inner) = this.inner.as_mut().as_pin_mut() else {
            // Expired before: the error was returned; polled again, it stays an error.
            return Poll::Ready(Err(Error::Timeout {
                timeout: *this.timeout,
            }));
        };
        if let Poll::Ready(out) = inner.poll(cx) {
            // The deadline goes on over the response body, as Envoy's route timeout covers
            // the response until it is complete.
            return Poll::Ready(match out {
                Ok(resp) if !resp.body().is_end_stream() && this.sleep.is_some() => {
                    let timeout = *this.timeout;
                    match this.sleep.take() {
                        Some(sleep) => Ok(resp.map(|body| {
                            body::boxed(DeadlineBody {
                                inner: body,
                                sleep,
                                timeout,
                            })
                        })),
                        None => Ok(resp),
                    }
                }
                out => out,
            });
        }
        match this.sleep.as_mut() {
            Some(sleep) => match sleep.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    // Mark the call abandoned by the route timeout, then drop it now: the
                    // upstream try in flight sees the mark as it is dropped and counts a
                    // timeout against its endpoint in outlier detection (Envoy's router
                    // reports `LocalOriginTimeout` for requests still awaiting headers).
                    if let Some(expiry) = this.expiry.as_ref() {
                        expiry.0.store(true, Ordering::Release);
                    }
                    this.inner.set(None);
                    Poll::Ready(Err(Error::Timeout {
                        timeout: *this.timeout,
                    }))
                }
                Poll::Pending => Poll::Pending,
            },
            None => Poll::Pending,
        }
    }
}

/// A response body that fails with [`Error::Timeout`] if it has not ended by the deadline.
struct DeadlineBody {
    inner: MeshBody,
    sleep: Pin<Box<Sleep>>,
    timeout: Duration,
}

impl Body for DeadlineBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(Error::Timeout {
                timeout: self.timeout,
            })))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(v: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(GRPC_TIMEOUT, HeaderValue::from_static(v));
        h
    }

    #[test]
    fn grpc_timeout_units_and_malformed_values() {
        let cases = [
            ("100m", Some(Duration::from_millis(100))),
            ("2S", Some(Duration::from_secs(2))),
            ("1H", Some(Duration::from_secs(3600))),
            ("3M", Some(Duration::from_secs(180))),
            ("250u", Some(Duration::from_micros(250))),
            ("99999999n", Some(Duration::from_nanos(99_999_999))),
            ("0m", Some(Duration::ZERO)),
            ("123456789m", None),
            ("m", None),
            ("10", None),
            ("10x", None),
            ("-1S", None),
            ("1.5S", None),
        ];
        for (v, want) in cases {
            assert_eq!(grpc_timeout(&headers(v)), want, "{v}");
        }
        assert_eq!(grpc_timeout(&HeaderMap::new()), None);
    }
}
