//! [`FaultLayer`]: VirtualService `http[].fault` (Istio's `HTTPFaultInjection`), as Envoy's
//! HTTP fault filter applies it.
//!
//! For each request the layer reads the matched route's `fault` from the
//! [`RouteDecision`] and:
//!
//! - `delay` (`fixedDelay`, `percentage`): with that probability, sleeps `fixedDelay`, then
//!   calls the inner service and marks its response with [`ResponseFlag::DelayInjected`]
//!   (`DI`, via [`ResponseFlags::record`]);
//! - `abort` (`httpStatus` or `grpcStatus`, `percentage`): with that probability, answers at
//!   once with [`Error::FaultAbort`] (which the [`RouteLayer`](crate::route::RouteLayer) turns
//!   into the response, flag `FI`, body `fault filter abort`). The inner service, and so the
//!   retry layer below, never sees the request: an abort is never retried.
//!
//! Delay and abort each roll their own dice, as Envoy does; when both fire the request is
//! delayed, then aborted (Envoy's order). After an injected delay, an abort or an error of the
//! inner service is answered here as the mesh's response carrying `DI` too (`DI,FI`,
//! `UF,DI`): errors carry no flags of their own, and Envoy logs both. The layer sits above the timeout layer, so an
//! injected delay elapses before the route `timeout` starts, as with Envoy's fault filter,
//! which runs before the router.
//!
//! **A fault without a percentage never fires** (Istio: "If left unspecified, no request will
//! be delayed/aborted"; Istio sends Envoy no percentage, which Envoy reads as 0). For a delay
//! the deprecated integer `percent` counts when `percentage` is absent, as Istio translates
//! it. Percentages are sampled in parts per million, as Envoy's `FractionalPercent` with
//! Istio's `MILLION` denominator: a request fires when its roll in `0..1_000_000` is below
//! `percentage × 10_000`.
//!
//! ## Sampling
//!
//! Each dice is a counter mixed by SplitMix64 (lock-free): the `n`-th roll of a dice depends
//! only on its seed and `n`. A [`FaultLayer::new`] given a seed is therefore exactly
//! reproducible for a given order of requests; each request with a delay (abort) of non-zero
//! percentage takes exactly one roll of the delay (abort) dice, when it arrives at the layer.
//! Services made by one layer (and their clones) share its dice.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use tower::{Layer, Service};

use crate::body::MeshBody;
use crate::config::virtual_service::{Abort, Delay, HttpFaultInjection};
use crate::dice::{Dice, os_seed};
use crate::error::is_grpc_request;
use crate::error::{Error, GrpcStatus, ResponseFlag, ResponseFlags};
use crate::route::RouteDecision;

/// Parts per million in 100%: the denominator faults are sampled with.
pub const MILLION: u32 = 1_000_000;

/// Mixed into the seed of the abort dice so that delay and abort roll independently.
const ABORT_STREAM: u64 = 0xA5A5_5A5A_F00D_CAFE;

// ---------------------------------------------------------------------------------------------
// Policy
// ---------------------------------------------------------------------------------------------

/// What an injected abort answers with (`fault.abort.httpStatus` or `fault.abort.grpcStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortWith {
    /// `httpStatus`: answer with this HTTP status.
    Http(StatusCode),
    /// `grpcStatus`: answer a gRPC caller with this `grpc-status` (HTTP 200, as Envoy).
    Grpc(GrpcStatus),
}

impl AbortWith {
    /// The error the fault layer answers with: [`Error::FaultAbort`], `(status, None)` for an
    /// HTTP status and `(200, Some(code))` for a gRPC status, as Envoy pairs them.
    pub fn to_error(self) -> Error {
        match self {
            AbortWith::Http(status) => Error::FaultAbort {
                status,
                grpc_status: None,
            },
            AbortWith::Grpc(code) => Error::FaultAbort {
                status: StatusCode::OK,
                grpc_status: Some(code),
            },
        }
    }
}

/// A route's `fault`, reduced to what the layer samples: each part with its probability in
/// parts per million ([`MILLION`] = 100%).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FaultPolicy {
    /// `delay.fixedDelay` and its share (`delay.percentage`, else the deprecated `percent`;
    /// absent = 0). `None` when there is no delay or no `fixedDelay`.
    pub delay: Option<(Duration, u32)>,
    /// `abort.httpStatus` / `abort.grpcStatus` and its share (`abort.percentage`; absent = 0).
    /// `None` when there is no abort or its status is not one Istio accepts (validation
    /// rejects those: `httpStatus` outside 200..=599, an unknown `grpcStatus`, `http2Error`).
    pub abort: Option<(AbortWith, u32)>,
}

impl FaultPolicy {
    /// The policy of a route's `fault`.
    pub fn from_config(fault: &HttpFaultInjection) -> Self {
        FaultPolicy {
            delay: fault.delay.as_ref().and_then(delay_of),
            abort: fault.abort.as_ref().and_then(abort_of),
        }
    }

    /// Whether neither part can ever fire (no part, or both at 0%).
    pub fn is_inert(&self) -> bool {
        self.delay.is_none_or(|(_, p)| p == 0) && self.abort.is_none_or(|(_, p)| p == 0)
    }
}

fn delay_of(d: &Delay) -> Option<(Duration, u32)> {
    let fixed = d.fixed_delay?;
    let per_million = match (d.percentage, d.percent) {
        (Some(p), _) => p.per_million().min(MILLION),
        // Istio: `translateIntegerToFractionalPercent(percent)` (per hundred).
        (None, Some(p)) => u32::try_from(p.clamp(0, 100)).unwrap_or(0) * (MILLION / 100),
        (None, None) => 0,
    };
    Some((fixed, per_million))
}

fn abort_of(a: &Abort) -> Option<(AbortWith, u32)> {
    let with = match (&a.http_status, &a.grpc_status) {
        (Some(code), _) => {
            let code = u16::try_from(*code)
                .ok()
                .filter(|c| (200..=599).contains(c))?;
            AbortWith::Http(StatusCode::from_u16(code).ok()?)
        }
        (None, Some(name)) => AbortWith::Grpc(GrpcStatus::from_name(name)?),
        (None, None) => return None,
    };
    let per_million = a.percentage.map_or(0, |p| p.per_million().min(MILLION));
    Some((with, per_million))
}

// ---------------------------------------------------------------------------------------------
// Dice
// ---------------------------------------------------------------------------------------------

/// The two dice of a [`FaultLayer`].
struct FaultDice {
    delay: Dice,
    abort: Dice,
}

impl FaultDice {
    fn new(seed: u64) -> Self {
        FaultDice {
            delay: Dice::new(seed),
            abort: Dice::new(seed ^ ABORT_STREAM),
        }
    }

    /// Whether a part with `per_million` fires. A 0% part takes no roll; any other takes
    /// exactly one (100% too), so the sequence advances once per request for every non-zero
    /// share.
    fn fires(dice: &Dice, per_million: u32) -> bool {
        per_million != 0 && dice.roll(u64::from(MILLION)) < u64::from(per_million)
    }

    /// What happens to one request under `policy`.
    fn decide(&self, policy: &FaultPolicy) -> Decision {
        let delay = policy
            .delay
            .filter(|(_, p)| Self::fires(&self.delay, *p))
            .map(|(d, _)| d);
        let abort = policy
            .abort
            .filter(|(_, p)| Self::fires(&self.abort, *p))
            .map(|(a, _)| a);
        Decision { delay, abort }
    }
}

/// The faults drawn for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Decision {
    delay: Option<Duration>,
    abort: Option<AbortWith>,
}

// ---------------------------------------------------------------------------------------------
// Layer and service
// ---------------------------------------------------------------------------------------------

/// Injects the faults of VirtualService `http[].fault` ([module docs](self)).
#[derive(Clone)]
pub struct FaultLayer {
    dice: Arc<FaultDice>,
}

impl fmt::Debug for FaultLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultLayer").finish_non_exhaustive()
    }
}

impl FaultLayer {
    /// A layer sampling with dice seeded by `seed` (exactly reproducible for a given request
    /// order), or by the OS when `None`.
    pub fn new(seed: Option<u64>) -> Self {
        FaultLayer {
            dice: Arc::new(FaultDice::new(seed.unwrap_or_else(os_seed))),
        }
    }
}

impl Default for FaultLayer {
    /// A layer seeded by the OS.
    fn default() -> Self {
        Self::new(None)
    }
}

impl<S> Layer<S> for FaultLayer {
    type Service = FaultService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        FaultService {
            dice: Arc::clone(&self.dice),
            inner,
        }
    }
}

/// The service of [`FaultLayer`].
#[derive(Clone)]
pub struct FaultService<S> {
    dice: Arc<FaultDice>,
    inner: S,
}

impl<S: fmt::Debug> fmt::Debug for FaultService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

pin_project_lite::pin_project! {
    /// The future of [`FaultService`]: the inner service's future when no fault fires (no
    /// allocation), an immediate abort, or a delay followed by the inner call (or an abort).
    pub struct FaultFuture<S, F> {
        #[pin]
        state: State<S, F>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<S, F> {
        // No fault: the inner call.
        Inner { #[pin] fut: F },
        // An abort without delay (taken when polled).
        Abort { err: Option<Error> },
        // An injected delay, then readying a clone of the inner service (boxed: the rare path
        // keeps the common future, which every layer above moves, small).
        Delaying { delay: Pin<Box<Delaying<S>>> },
        // After the delay: the inner call, whose response gets the `DI` flag (`grpc`: how to
        // answer an error, which then carries `DI` too).
        Delayed { #[pin] fut: F, grpc: bool },
    }
}

pin_project_lite::pin_project! {
    /// Sleeping out an injected delay (`slept` once over), with a clone of the inner service,
    /// the request and the abort to answer after the delay when that fired too; then driving
    /// the clone to readiness.
    struct Delaying<S> {
        #[pin]
        sleep: tokio::time::Sleep,
        slept: bool,
        svc: Option<S>,
        req: Option<Request<MeshBody>>,
        abort: Option<AbortWith>,
    }
}

impl<S, F> fmt::Debug for FaultFuture<S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match &self.state {
            State::Inner { .. } => "Inner",
            State::Abort { .. } => "Abort",
            State::Delaying { delay } if !delay.slept => "Sleeping",
            State::Delaying { .. } => "Readying",
            State::Delayed { .. } => "Delayed",
        };
        f.debug_tuple("FaultFuture").field(&what).finish()
    }
}

/// The mesh's answer for `err` on a request that was delayed first: Envoy logs both flags
/// (`DI,FI` for a delay then an abort, `DI,UT`, ...), so the answer is made here, where the
/// delay is known, with `DI` added to its flags and its flag header.
fn delayed_answer(err: &Error, grpc: bool) -> Response<MeshBody> {
    let mut resp = crate::route::layer::answer(err, grpc);
    ResponseFlags::record(resp.extensions_mut(), ResponseFlag::DelayInjected);
    if let Some(flags) = resp.extensions().get::<ResponseFlags>().copied() {
        resp.headers_mut()
            .insert(crate::error::FLAG_HEADER, flags.header_value());
    }
    resp
}

/// The answer of a fault future polled again after it completed.
fn polled_after_completion() -> Error {
    Error::Other("fault future polled after completion".into())
}

impl<S> Future for FaultFuture<S, S::Future>
where
    S: Service<Request<MeshBody>, Response = Response<MeshBody>, Error = Error>,
{
    type Output = Result<Response<MeshBody>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Inner { fut } => return fut.poll(cx),
                StateProj::Abort { err } => {
                    return Poll::Ready(Err(err.take().unwrap_or_else(polled_after_completion)));
                }
                StateProj::Delaying { delay } => {
                    let d = delay.as_mut().project();
                    let grpc = d.req.as_ref().is_some_and(|r| is_grpc_request(r.headers()));
                    if !*d.slept {
                        if d.sleep.poll(cx).is_pending() {
                            return Poll::Pending;
                        }
                        *d.slept = true;
                        if let Some(abort) = d.abort.take() {
                            let err = abort.to_error();
                            state.set(State::Abort { err: None });
                            return Poll::Ready(Ok(delayed_answer(&err, grpc)));
                        }
                    }
                    let Some(inner) = d.svc.as_mut() else {
                        return Poll::Ready(Err(polled_after_completion()));
                    };
                    match inner.poll_ready(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Err(e)) => {
                            state.set(State::Abort { err: None });
                            return Poll::Ready(Ok(delayed_answer(&e, grpc)));
                        }
                        Poll::Ready(Ok(())) => {}
                    }
                    let (Some(mut inner), Some(req)) = (d.svc.take(), d.req.take()) else {
                        return Poll::Ready(Err(polled_after_completion()));
                    };
                    let fut = inner.call(req);
                    state.set(State::Delayed { fut, grpc });
                }
                StateProj::Delayed { fut, grpc } => {
                    let mut resp = match std::task::ready!(fut.poll(cx)) {
                        Ok(resp) => resp,
                        Err(err) => return Poll::Ready(Ok(delayed_answer(&err, *grpc))),
                    };
                    ResponseFlags::record(resp.extensions_mut(), ResponseFlag::DelayInjected);
                    return Poll::Ready(Ok(resp));
                }
            }
        }
    }
}

impl<S> Service<Request<MeshBody>> for FaultService<S>
where
    S: Service<Request<MeshBody>, Response = Response<MeshBody>, Error = Error> + Clone,
{
    type Response = Response<MeshBody>;
    type Error = Error;
    type Future = FaultFuture<S, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<MeshBody>) -> Self::Future {
        let decision = req
            .extensions()
            .get::<RouteDecision>()
            .and_then(RouteDecision::route)
            .and_then(|r| r.fault())
            .map(FaultPolicy::from_config)
            .filter(|p| !p.is_inert())
            .map(|p| self.dice.decide(&p));
        let state = match decision {
            None
            | Some(Decision {
                delay: None,
                abort: None,
            }) => State::Inner {
                fut: self.inner.call(req),
            },
            Some(Decision {
                delay: None,
                abort: Some(abort),
            }) => State::Abort {
                err: Some(abort.to_error()),
            },
            // The readied `self.inner` keeps its readiness for the next call; the delayed
            // request drives a clone to readiness after its sleep.
            Some(Decision {
                delay: Some(delay),
                abort,
            }) => State::Delaying {
                delay: Box::pin(Delaying {
                    sleep: tokio::time::sleep(delay),
                    slept: false,
                    svc: Some(self.inner.clone()),
                    req: Some(req),
                    abort,
                }),
            },
        };
        FaultFuture { state }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body;
    use crate::config::common::Percent;
    use crate::error::{FLAG_HEADER, LAYER_HEADER};
    use crate::mesh::Mesh;
    use crate::route::RouteLayer;
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tower::ServiceExt;

    const SE: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: my-app, namespace: default}
spec:
  hosts: [my-app.default.svc.cluster.local]
  resolution: STATIC
  ports: [{number: 8080, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.1}]
"#;

    fn mesh_with_fault(fault: &str) -> Mesh {
        let vs = format!(
            r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: my-app, namespace: default}}
spec:
  hosts: [my-app.default.svc.cluster.local]
  http:
  - fault: {fault}
    route:
    - destination: {{host: my-app.default.svc.cluster.local}}
"#
        );
        match Mesh::builder()
            .config_str("se.yaml", SE)
            .config_str("vs.yaml", vs)
            .build()
        {
            Ok(mesh) => mesh,
            Err(e) => panic!("config refused: {e:?}"),
        }
    }

    /// A route layer over the fault layer over an inner service answering 200 and counting
    /// its calls.
    fn stack(
        mesh: &Mesh,
        seed: u64,
        calls: Arc<AtomicUsize>,
    ) -> impl Service<Request<MeshBody>, Response = Response<MeshBody>, Error = Infallible> + Clone
    {
        let inner = tower::service_fn(move |_req: Request<MeshBody>| {
            calls.fetch_add(1, Ordering::Relaxed);
            async { Ok::<_, Error>(Response::new(body::full("ok"))) }
        });
        RouteLayer::new(mesh.clone()).layer(FaultLayer::new(Some(seed)).layer(inner))
    }

    fn request(grpc: bool) -> Request<MeshBody> {
        let mut b = Request::get("http://my-app:8080/x");
        if grpc {
            b = b.header("content-type", "application/grpc");
        }
        match b.body(body::empty()) {
            Ok(r) => r,
            Err(e) => panic!("bad request: {e}"),
        }
    }

    fn flag(resp: &Response<MeshBody>) -> Option<&str> {
        resp.headers()
            .get(FLAG_HEADER)
            .and_then(|v| v.to_str().ok())
    }

    fn flags(resp: &Response<MeshBody>) -> ResponseFlags {
        resp.extensions()
            .get::<ResponseFlags>()
            .copied()
            .unwrap_or_default()
    }

    fn pct(v: f64) -> Option<Percent> {
        Percent::new(v)
    }

    #[test]
    fn policy_reads_percentage_then_deprecated_percent_and_none_means_never() {
        let fault = HttpFaultInjection {
            delay: Some(Delay {
                fixed_delay: Some(Duration::from_secs(1)),
                percentage: pct(12.5),
                percent: Some(50),
                ..Delay::default()
            }),
            abort: Some(Abort {
                http_status: Some(503),
                percentage: pct(0.1),
                ..Abort::default()
            }),
        };
        let p = FaultPolicy::from_config(&fault);
        assert_eq!(p.delay, Some((Duration::from_secs(1), 125_000)));
        assert_eq!(
            p.abort,
            Some((AbortWith::Http(StatusCode::SERVICE_UNAVAILABLE), 1_000))
        );
        assert!(!p.is_inert());

        // The deprecated integer percent counts when percentage is absent.
        let deprecated = HttpFaultInjection {
            delay: Some(Delay {
                fixed_delay: Some(Duration::from_millis(5)),
                percent: Some(30),
                ..Delay::default()
            }),
            abort: None,
        };
        let p = FaultPolicy::from_config(&deprecated);
        assert_eq!(p.delay, Some((Duration::from_millis(5), 300_000)));

        // No percentage: the fault never fires.
        let never = HttpFaultInjection {
            delay: Some(Delay {
                fixed_delay: Some(Duration::from_millis(5)),
                ..Delay::default()
            }),
            abort: Some(Abort {
                grpc_status: Some("UNAVAILABLE".into()),
                ..Abort::default()
            }),
        };
        let p = FaultPolicy::from_config(&never);
        assert_eq!(p.delay, Some((Duration::from_millis(5), 0)));
        assert_eq!(p.abort, Some((AbortWith::Grpc(GrpcStatus::Unavailable), 0)));
        assert!(p.is_inert());

        // Statuses Istio refuses never abort.
        for bad in [Some(700), Some(99), Some(-1)] {
            let a = Abort {
                http_status: bad,
                percentage: pct(100.0),
                ..Abort::default()
            };
            assert_eq!(abort_of(&a), None, "{bad:?}");
        }
        let a = Abort {
            grpc_status: Some("unavailable".into()),
            percentage: pct(100.0),
            ..Abort::default()
        };
        assert_eq!(abort_of(&a), None);
    }

    /// An independent count of how many of `n` rolls of SplitMix64 over `seed` fall under
    /// `per_million`, written out here rather than calling `Dice`.
    fn reference_count(seed: u64, n: u64, per_million: u64) -> usize {
        (0..n)
            .filter(|i| {
                let mut z = seed.wrapping_add(i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^= z >> 31;
                ((u128::from(z) * 1_000_000) >> 64) < u128::from(per_million)
            })
            .count()
    }

    #[tokio::test]
    async fn seeded_aborts_give_exact_counts_over_10000_requests() {
        const SEED: u64 = 42;
        const N: usize = 10_000;
        for (value, pm) in [(0.0, 0u64), (12.5, 125_000), (100.0, 1_000_000)] {
            let mesh = mesh_with_fault(&format!(
                "{{abort: {{httpStatus: 418, percentage: {{value: {value}}}}}}}"
            ));
            let calls = Arc::new(AtomicUsize::new(0));
            let mut svc = stack(&mesh, SEED, calls.clone());
            let mut aborted = 0;
            for _ in 0..N {
                let Ok(ready) = svc.ready().await;
                let Ok(resp) = ready.call(request(false)).await;
                if resp.status() == StatusCode::IM_A_TEAPOT {
                    assert_eq!(flag(&resp), Some("FI"));
                    assert_eq!(
                        resp.headers().get(LAYER_HEADER).map(|v| v.as_bytes()),
                        Some(&b"fault"[..])
                    );
                    aborted += 1;
                } else {
                    assert_eq!(resp.status(), StatusCode::OK);
                    assert_eq!(flag(&resp), None, "an upstream response is not marked");
                }
            }
            let expected = reference_count(SEED ^ ABORT_STREAM, N as u64, pm);
            assert_eq!(aborted, expected, "{value}%");
            assert_eq!(
                calls.load(Ordering::Relaxed),
                N - aborted,
                "aborts skip inner"
            );
            match pm {
                0 => assert_eq!(aborted, 0),
                1_000_000 => assert_eq!(aborted, N),
                // 12.5% of 10,000 = 1250, sd ≈ 33.
                _ => assert!((1150..=1350).contains(&aborted), "{aborted}"),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn seeded_delays_give_exact_counts_and_roll_independently_of_aborts() {
        const SEED: u64 = 7;
        const N: usize = 10_000;
        let mesh = mesh_with_fault(
            "{delay: {fixedDelay: 1ms, percentage: {value: 12.5}}, \
             abort: {httpStatus: 503, percentage: {value: 12.5}}}",
        );
        let calls = Arc::new(AtomicUsize::new(0));
        let mut svc = stack(&mesh, SEED, calls.clone());
        let (mut delayed_only, mut aborted, mut plain) = (0usize, 0usize, 0usize);
        for _ in 0..N {
            let Ok(ready) = svc.ready().await;
            let Ok(resp) = ready.call(request(false)).await;
            match (resp.status().as_u16(), flags(&resp)) {
                (503, f) if f.contains(ResponseFlag::FaultInjected) => aborted += 1,
                (200, f) if f.contains(ResponseFlag::DelayInjected) => delayed_only += 1,
                (200, f) if f.is_empty() => plain += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        let expected_aborts = reference_count(SEED ^ ABORT_STREAM, N as u64, 125_000);
        let expected_delays = reference_count(SEED, N as u64, 125_000);
        assert_eq!(aborted, expected_aborts);
        assert_eq!(calls.load(Ordering::Relaxed), N - aborted);
        assert_eq!(delayed_only + aborted + plain, N);
        // Independent dice: about 12.5% of the delayed ones are also aborted, so the delayed
        // count seen on 200s is close to 87.5% of all delays (not 0, not all of them).
        assert!(delayed_only < expected_delays && delayed_only > expected_delays * 3 / 4);
    }

    #[tokio::test]
    async fn faults_without_percentage_never_fire() {
        let mesh = mesh_with_fault("{delay: {fixedDelay: 10s}, abort: {httpStatus: 500}}");
        let calls = Arc::new(AtomicUsize::new(0));
        let mut svc = stack(&mesh, 1, calls.clone());
        for _ in 0..200 {
            let Ok(ready) = svc.ready().await;
            let Ok(resp) = ready.call(request(false)).await;
            assert_eq!(resp.status(), StatusCode::OK);
            assert!(flags(&resp).is_empty());
        }
        assert_eq!(calls.load(Ordering::Relaxed), 200);
    }

    #[tokio::test]
    async fn grpc_abort_answers_the_grpc_status_with_fi() {
        let mesh =
            mesh_with_fault("{abort: {grpcStatus: RESOURCE_EXHAUSTED, percentage: {value: 100}}}");
        let calls = Arc::new(AtomicUsize::new(0));
        let mut svc = stack(&mesh, 3, calls.clone());
        let Ok(ready) = svc.ready().await;
        let Ok(resp) = ready.call(request(true)).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            resp.headers().get("grpc-status").map(|v| v.as_bytes()),
            Some(&b"8"[..])
        );
        assert_eq!(flag(&resp), Some("FI"));
        assert_eq!(calls.load(Ordering::Relaxed), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn delay_sleeps_then_calls_inner_and_marks_di() {
        let mesh = mesh_with_fault("{delay: {fixedDelay: 5s, percentage: {value: 100}}}");
        let calls = Arc::new(AtomicUsize::new(0));
        let mut svc = stack(&mesh, 9, calls.clone());
        let Ok(ready) = svc.ready().await;
        let start = tokio::time::Instant::now();
        let fut = ready.call(request(false));
        let mut fut = std::pin::pin!(fut);
        // Not answered, and inner not called, before the delay is up.
        tokio::time::sleep(Duration::from_millis(4_999)).await;
        assert!(futures_poll_once(fut.as_mut()).await.is_none());
        assert_eq!(calls.load(Ordering::Relaxed), 0);
        let Ok(resp) = fut.await;
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(flags(&resp).contains(ResponseFlag::DelayInjected));
        assert_eq!(calls.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_delayed_request_that_then_fails_keeps_di_in_its_flags() {
        let mesh = mesh_with_fault("{delay: {fixedDelay: 1s, percentage: {value: 100}}}");
        let inner = tower::service_fn(|_req: Request<MeshBody>| async {
            Err::<Response<MeshBody>, _>(Error::UpstreamReset {
                reason: crate::error::ResetReason::ConnectionFailure,
                transport_failure: None,
            })
        });
        let svc = RouteLayer::new(mesh.clone()).layer(FaultLayer::new(Some(3)).layer(inner));
        let Ok(resp) = svc.oneshot(request(false)).await;
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(flag(&resp), Some("UF,DI"));
        let Ok(resp) = RouteLayer::new(mesh.clone())
            .layer(FaultLayer::new(Some(3)).layer(inner))
            .oneshot(request(true))
            .await;
        // gRPC callers get the trailers-only answer, with both flags too.
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(resp.headers().contains_key("grpc-status"));
        assert_eq!(flag(&resp), Some("UF,DI"));
    }

    #[tokio::test(start_paused = true)]
    async fn delay_then_abort_when_both_fire() {
        let mesh = mesh_with_fault(
            "{delay: {fixedDelay: 2s, percentage: {value: 100}}, \
             abort: {httpStatus: 500, percentage: {value: 100}}}",
        );
        let calls = Arc::new(AtomicUsize::new(0));
        let mut svc = stack(&mesh, 9, calls.clone());
        let Ok(ready) = svc.ready().await;
        let start = tokio::time::Instant::now();
        let Ok(resp) = ready.call(request(false)).await;
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        // Envoy logs both: the delay happened, then the abort.
        assert_eq!(flag(&resp), Some("DI,FI"));
        assert_eq!(calls.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn requests_without_a_route_fault_pass_through() {
        let mesh = match Mesh::builder().config_str("se.yaml", SE).build() {
            Ok(m) => m,
            Err(e) => panic!("{e:?}"),
        };
        let calls = Arc::new(AtomicUsize::new(0));
        let mut svc = stack(&mesh, 0, calls.clone());
        let Ok(ready) = svc.ready().await;
        let Ok(resp) = ready.call(request(false)).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(calls.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn same_seed_same_decisions() {
        let policy = FaultPolicy {
            delay: Some((Duration::from_millis(1), 333_333)),
            abort: Some((AbortWith::Http(StatusCode::BAD_GATEWAY), 500_000)),
        };
        let a = FaultDice::new(11);
        let b = FaultDice::new(11);
        let c = FaultDice::new(12);
        let xs: Vec<_> = (0..1000).map(|_| a.decide(&policy)).collect();
        let ys: Vec<_> = (0..1000).map(|_| b.decide(&policy)).collect();
        let zs: Vec<_> = (0..1000).map(|_| c.decide(&policy)).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
    }

    /// Polls a future once: `Some(output)` if it is ready.
    async fn futures_poll_once<F: Future + Unpin>(fut: F) -> Option<F::Output> {
        let mut fut = fut;
        std::future::poll_fn(|cx| {
            Poll::Ready(match Pin::new(&mut fut).poll(cx) {
                Poll::Ready(v) => Some(v),
                Poll::Pending => None,
            })
        })
        .await
    }
}
