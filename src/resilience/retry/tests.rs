//! The retry and timeout layers over a scripted inner service, behind a real `RouteLayer`
//! (no sockets; paused time).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use tokio::time::Instant;
use tower::util::BoxCloneService;
use tower::{Layer, Service, ServiceExt};

use super::*;
use crate::body::{self, MeshBody};
use crate::error::{Error, FLAG_HEADER, LAYER_HEADER, ResetReason, ResponseFlag, ResponseFlags};
use crate::mesh::Mesh;
use crate::route::RouteLayer;

const HOST: &str = "my-app.default.svc.cluster.local";

/// A mesh with one static service and a VirtualService whose route has `extra` (YAML lines
/// at the route's indentation), plus an optional DestinationRule `trafficPolicy`.
fn mesh(extra: &str, traffic_policy: Option<&str>) -> Mesh {
    let mut yaml = format!(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: my-app, namespace: default}}
spec:
  hosts: [{HOST}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1}}, {{address: 127.0.0.2}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: my-app, namespace: default}}
spec:
  hosts: [{HOST}]
  http:
  - route: [{{destination: {{host: {HOST}}}}}]
{extra}
"#
    );
    if let Some(tp) = traffic_policy {
        yaml.push_str(&format!(
            r#"---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: my-app, namespace: default}}
spec:
  host: {HOST}
  trafficPolicy: {tp}
"#
        ));
    }
    match Mesh::builder()
        .namespace("default")
        .config_str("mesh.yaml", &yaml)
        .build()
    {
        Ok(mesh) => mesh,
        Err(err) => panic!("config refused: {err}\n{yaml}"),
    }
}

/// What the scripted upstream does for one try.
#[derive(Clone)]
enum Step {
    /// Answer with this status and headers.
    Respond(u16, &'static [(&'static str, &'static str)]),
    /// Fail with a reset.
    Reset(ResetReason),
    /// Never answer.
    Stall,
}

/// What the upstream saw of one try.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    attempt: u32,
    body: Vec<u8>,
    avoided_first: bool,
}

#[derive(Clone)]
struct Script {
    steps: Arc<Mutex<VecDeque<Step>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    calls: Arc<AtomicUsize>,
}

impl Script {
    fn new(steps: &[Step]) -> Self {
        Script {
            steps: Arc::new(Mutex::new(steps.iter().cloned().collect())),
            seen: Arc::default(),
            calls: Arc::default(),
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// The inner service: reads the whole body, records the try, plays the next step.
    fn service(&self) -> Inner {
        let script = self.clone();
        let svc = tower::service_fn(move |req: Request<MeshBody>| {
            let script = script.clone();
            async move {
                script.calls.fetch_add(1, Ordering::SeqCst);
                let ctx = req
                    .extensions()
                    .get::<RouteDecision>()
                    .and_then(RouteDecision::try_context)
                    .cloned();
                let first: SocketAddr = ([127, 0, 0, 1], 80).into();
                let avoided_first = ctx.as_ref().is_some_and(|c| c.should_avoid(&first));
                if let Some(ctx) = &ctx {
                    // The balancer would pick an endpoint not yet tried.
                    let pick = if avoided_first {
                        ([127, 0, 0, 2], 80).into()
                    } else {
                        first
                    };
                    ctx.record(pick);
                }
                let body = match req.into_body().collect().await {
                    Ok(c) => c.to_bytes().to_vec(),
                    Err(_) => b"<body error>".to_vec(),
                };
                script.seen.lock().expect("lock").push(Seen {
                    attempt: ctx.as_ref().map_or(0, TryContext::attempt),
                    body,
                    avoided_first,
                });
                let step = script.steps.lock().expect("lock").pop_front();
                match step.unwrap_or(Step::Respond(200, &[])) {
                    Step::Respond(status, headers) => {
                        let mut resp = Response::new(body::full("upstream"));
                        *resp.status_mut() = StatusCode::from_u16(status).expect("status");
                        for (k, v) in headers {
                            resp.headers_mut().insert(*k, HeaderValue::from_static(v));
                        }
                        Ok(resp)
                    }
                    Step::Reset(reason) => Err(Error::UpstreamReset {
                        reason,
                        transport_failure: None,
                    }),
                    Step::Stall => std::future::pending().await,
                }
            }
        });
        BoxCloneService::new(svc)
    }
}

async fn send(svc: &mut Stack, req: Request<MeshBody>) -> Response<MeshBody> {
    match svc.ready().await {
        Ok(svc) => match svc.call(req).await {
            Ok(resp) => resp,
            Err(never) => match never {},
        },
        Err(never) => match never {},
    }
}

fn get() -> Request<MeshBody> {
    Request::builder()
        .uri(format!("http://{HOST}/"))
        .body(body::empty())
        .expect("valid request")
}

fn flags(resp: &Response<MeshBody>) -> String {
    resp.extensions()
        .get::<ResponseFlags>()
        .copied()
        .unwrap_or_default()
        .to_string()
}

fn header<'a>(resp: &'a Response<MeshBody>, name: &str) -> Option<&'a str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

type Inner = BoxCloneService<Request<MeshBody>, Response<MeshBody>, Error>;
type Stack = BoxCloneService<Request<MeshBody>, Response<MeshBody>, Infallible>;

fn stack<G: RetryGate>(mesh: &Mesh, retry: RetryLayer<G>, script: &Script) -> Stack {
    BoxCloneService::new(
        RouteLayer::new(mesh.clone())
            .layer(TimeoutLayer::new().layer(retry.layer(script.service()))),
    )
}

const FAIL_503: Step = Step::Respond(503, &[]);
const OK: Step = Step::Respond(200, &[]);

#[tokio::test(start_paused = true)]
async fn two_failures_of_three_end_in_success_after_three_tries() {
    let m = mesh("    retries: {attempts: 3, retryOn: 5xx}", None);
    let script = Script::new(&[FAIL_503, FAIL_503, OK]);
    let mut svc = stack(&m, RetryLayer::new().seed(1), &script);
    let resp = send(&mut svc, get()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(flags(&resp), "-");
    let attempts: Vec<_> = script.seen().iter().map(|s| s.attempt).collect();
    assert_eq!(attempts, [1, 2, 3]);
}

#[tokio::test(start_paused = true)]
async fn retries_avoid_previous_hosts_by_default() {
    let m = mesh("    retries: {attempts: 1, retryOn: 5xx}", None);
    let script = Script::new(&[FAIL_503, OK]);
    let mut svc = stack(&m, RetryLayer::new().seed(1), &script);
    assert_eq!(send(&mut svc, get()).await.status(), 200);
    let avoided: Vec<_> = script.seen().iter().map(|s| s.avoided_first).collect();
    assert_eq!(avoided, [false, true]);

    let m = mesh(
        "    retries: {attempts: 1, retryOn: 5xx, retryIgnorePreviousHosts: false}",
        None,
    );
    let script = Script::new(&[FAIL_503, OK]);
    let mut svc = stack(&m, RetryLayer::new().seed(1), &script);
    assert_eq!(send(&mut svc, get()).await.status(), 200);
    let avoided: Vec<_> = script.seen().iter().map(|s| s.avoided_first).collect();
    assert_eq!(avoided, [false, false]);
}

#[test]
fn previous_host_avoidance_is_off_by_default_under_consistent_hashing() {
    assert!(RetryPolicy::from_route(None, false).ignore_previous_hosts());
    assert!(!RetryPolicy::from_route(None, true).ignore_previous_hosts());
    let explicit = HttpRetry {
        attempts: Some(1),
        retry_ignore_previous_hosts: Some(true),
        ..HttpRetry::default()
    };
    assert!(RetryPolicy::from_route(Some(&explicit), true).ignore_previous_hosts());
    let implicit = HttpRetry {
        attempts: Some(1),
        ..HttpRetry::default()
    };
    assert!(!RetryPolicy::from_route(Some(&implicit), true).ignore_previous_hosts());
    assert!(RetryPolicy::from_route(Some(&implicit), false).ignore_previous_hosts());
}

#[test]
fn policy_from_route_fields_and_defaults() {
    let default = RetryPolicy::from_route(None, false);
    assert_eq!(default.attempts(), 2);
    assert_eq!(default.retry_on(), &RetryOn::istio_default());
    assert!(default.retry_on().status_codes().is_empty());
    assert_eq!(default.per_try_timeout(), None);
    assert_eq!(default.backoff().base(), Duration::from_millis(25));
    assert_eq!(default.backoff().max(), Duration::from_millis(250));
    assert!(!default.retry_remote_localities());

    let r = HttpRetry {
        attempts: Some(4),
        per_try_timeout: Some(Duration::from_millis(300)),
        retry_on: "gateway-error,429".into(),
        retry_remote_localities: Some(true),
        retry_ignore_previous_hosts: None,
        backoff: Some(Duration::from_millis(40)),
    };
    let p = RetryPolicy::from_route(Some(&r), false);
    assert_eq!(p.attempts(), 4);
    assert_eq!(p.per_try_timeout(), Some(Duration::from_millis(300)));
    assert_eq!(
        p.retry_on().to_string(),
        "gateway-error,retriable-status-codes,429"
    );
    assert_eq!(p.backoff().max(), Duration::from_millis(400));
    assert!(p.retry_remote_localities());
    assert_eq!(
        TryContext::new(&p).retry_remote_localities(),
        p.retry_remote_localities()
    );

    // Empty retryOn = the default list; attempts 0 or absent disables.
    let empty_on = HttpRetry {
        attempts: Some(1),
        ..HttpRetry::default()
    };
    assert_eq!(
        RetryPolicy::from_route(Some(&empty_on), false).retry_on(),
        &RetryOn::istio_default()
    );
    for attempts in [Some(0), None, Some(-1)] {
        let r = HttpRetry {
            attempts,
            retry_on: "5xx".into(),
            ..HttpRetry::default()
        };
        let p = RetryPolicy::from_route(Some(&r), false);
        assert!(!p.is_enabled(), "{attempts:?}");
        assert_eq!(p, RetryPolicy::disabled());
    }
}

#[tokio::test(start_paused = true)]
async fn exhausted_retries_return_the_last_upstream_response_flagged_urx() {
    let m = mesh("    retries: {attempts: 2, retryOn: 5xx}", None);
    let script = Script::new(&[FAIL_503, Step::Respond(502, &[]), Step::Respond(500, &[])]);
    let mut svc = stack(&m, RetryLayer::new().seed(1), &script);
    let resp = send(&mut svc, get()).await;
    assert_eq!(resp.status(), 500, "the last upstream response as it is");
    assert_eq!(flags(&resp), "URX");
    assert!(
        resp.headers().get(LAYER_HEADER).is_none(),
        "not a mesh answer"
    );
    assert_eq!(script.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn exhausted_retries_after_resets_are_retry_limit_exceeded() {
    let m = mesh("    retries: {attempts: 2, retryOn: reset}", None);
    let reset = Step::Reset(ResetReason::ConnectionTermination);
    let script = Script::new(&[reset.clone(), reset.clone(), reset]);
    let mut svc = stack(&m, RetryLayer::new().seed(1), &script);
    let resp = send(&mut svc, get()).await;
    assert_eq!(resp.status(), 503);
    assert_eq!(header(&resp, "x-tower-mesh-flag"), Some("UC,URX"));
    assert_eq!(header(&resp, "x-tower-mesh-layer"), Some("retry"));
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(
        &body[..],
        b"upstream connect error or disconnect/reset before headers. retried and the latest reset reason: connection termination"
    );
    assert_eq!(script.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_non_retriable_outcome_is_returned_at_once() {
    let m = mesh("    retries: {attempts: 3, retryOn: gateway-error}", None);
    let script = Script::new(&[Step::Respond(500, &[]), OK]);
    let mut svc = stack(&m, RetryLayer::new().seed(1), &script);
    let resp = send(&mut svc, get()).await;
    assert_eq!(resp.status(), 500);
    assert_eq!(flags(&resp), "-");
    assert_eq!(script.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn attempts_zero_disables_retries() {
    let m = mesh("    retries: {attempts: 0}", None);
    let script = Script::new(&[Step::Reset(ResetReason::ConnectionFailure), OK]);
    let mut svc = stack(&m, RetryLayer::new().seed(1), &script);
    let resp = send(&mut svc, get()).await;
    assert_eq!(resp.status(), 503);
    assert_eq!(header(&resp, "x-tower-mesh-flag"), Some("UF"));
    assert_eq!(script.calls(), 1);
    assert_eq!(
        script.seen()[0].attempt,
        0,
        "no retry context without retries"
    );
}

#[tokio::test(start_paused = true)]
async fn the_default_policy_retries_connect_failures_but_not_503() {
    let m = mesh("", None);
    let script = Script::new(&[Step::Reset(ResetReason::ConnectionFailure), OK]);
    let mut svc = stack(&m, RetryLayer::new().seed(1), &script);
    assert_eq!(send(&mut svc, get()).await.status(), 200);
    assert_eq!(script.calls(), 2);

    let script = Script::new(&[FAIL_503, OK]);
    let mut svc = stack(&m, RetryLayer::new().seed(1), &script);
    assert_eq!(send(&mut svc, get()).await.status(), 503);
    assert_eq!(script.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn grpc_unavailable_in_response_headers_is_retried() {
    let m = mesh("", None);
    let script = Script::new(&[
        Step::Respond(
            200,
            &[("grpc-status", "14"), ("content-type", "application/grpc")],
        ),
        Step::Respond(
            200,
            &[("grpc-status", "0"), ("content-type", "application/grpc")],
        ),
    ]);
    let mut svc = stack(&m, RetryLayer::new().seed(1), &script);
    let resp = send(&mut svc, get()).await;
    assert_eq!(header(&resp, "grpc-status"), Some("0"));
    assert_eq!(script.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_mesh_made_503_is_not_retried_by_status_code() {
    let m = mesh("    retries: {attempts: 2, retryOn: \"503\"}", None);
    let script = Script::new(&[
        Step::Respond(
            503,
            &[
                ("x-tower-mesh-layer", "cluster"),
                ("x-tower-mesh-flag", "UO"),
            ],
        ),
        OK,
    ]);
    let mut svc = stack(&m, RetryLayer::new().seed(1), &script);
    let resp = send(&mut svc, get()).await;
    assert_eq!(resp.status(), 503);
    assert_eq!(script.calls(), 1);
    // A real upstream 503 is.
    let script = Script::new(&[FAIL_503, OK]);
    let mut svc = stack(&m, RetryLayer::new().seed(1), &script);
    assert_eq!(send(&mut svc, get()).await.status(), 200);
    assert_eq!(script.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn per_try_timeout_abandons_a_stalled_try() {
    let m = mesh(
        "    retries: {attempts: 2, retryOn: 5xx, perTryTimeout: 100ms}",
        None,
    );
    let script = Script::new(&[Step::Stall, OK]);
    let mut svc = stack(&m, RetryLayer::new().seed(1), &script);
    let start = Instant::now();
    let resp = send(&mut svc, get()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(script.calls(), 2);
    let took = start.elapsed();
    // 100 ms for the stalled try, then a backoff under 25 ms.
    assert!(
        took >= Duration::from_millis(100) && took < Duration::from_millis(125),
        "{took:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_per_try_timeout_that_is_not_retried_is_a_504_ut() {
    let m = mesh(
        "    retries: {attempts: 2, retryOn: connect-failure, perTryTimeout: 100ms}",
        None,
    );
    let script = Script::new(&[Step::Stall, OK]);
    let mut svc = stack(&m, RetryLayer::new().seed(1), &script);
    let resp = send(&mut svc, get()).await;
    assert_eq!(resp.status(), 504);
    assert_eq!(header(&resp, "x-tower-mesh-flag"), Some("UT"));
    assert_eq!(script.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn per_try_timeouts_exhausted_are_504_ut_urx() {
    let m = mesh(
        "    retries: {attempts: 1, retryOn: 5xx, perTryTimeout: 100ms}",
        None,
    );
    let script = Script::new(&[Step::Stall, Step::Stall]);
    let mut svc = stack(&m, RetryLayer::new().seed(1), &script);
    let resp = send(&mut svc, get()).await;
    assert_eq!(resp.status(), 504);
    assert_eq!(header(&resp, "x-tower-mesh-flag"), Some("UT,URX"));
    assert_eq!(script.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_route_timeout_caps_the_sum_of_tries() {
    let m = mesh(
        "    timeout: 250ms\n    retries: {attempts: 10, retryOn: 5xx, perTryTimeout: 100ms}",
        None,
    );
    let script = Script::new(&[Step::Stall, Step::Stall, Step::Stall, Step::Stall]);
    let mut svc = stack(&m, RetryLayer::new().seed(1), &script);
    let start = Instant::now();
    let resp = send(&mut svc, get()).await;
    let took = start.elapsed();
    assert_eq!(resp.status(), 504);
    assert_eq!(header(&resp, "x-tower-mesh-flag"), Some("UT"));
    assert_eq!(header(&resp, "x-tower-mesh-layer"), Some("timeout"));
    assert_eq!(took, Duration::from_millis(250));
    assert!(
        (2..=3).contains(&script.calls()),
        "{} tries",
        script.calls()
    );
}

#[tokio::test(start_paused = true)]
async fn grpc_timeout_caps_a_grpc_request() {
    let m = mesh("    timeout: 10s", None);
    let script = Script::new(&[Step::Stall]);
    let mut svc = stack(&m, RetryLayer::new().seed(1), &script);
    let mut req = get();
    req.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/grpc"));
    req.headers_mut()
        .insert("grpc-timeout", HeaderValue::from_static("50m"));
    let start = Instant::now();
    let resp = send(&mut svc, req).await;
    assert_eq!(start.elapsed(), Duration::from_millis(50));
    assert_eq!(resp.status(), 200, "trailers-only gRPC answer");
    assert_eq!(header(&resp, "grpc-status"), Some("14"));
    assert_eq!(header(&resp, "x-tower-mesh-flag"), Some("UT"));

    // Not a gRPC request: the header is ignored and the route timeout applies.
    let script = Script::new(&[Step::Stall]);
    let mut svc = stack(&m, RetryLayer::new().seed(1), &script);
    let mut req = get();
    req.headers_mut()
        .insert("grpc-timeout", HeaderValue::from_static("50m"));
    let start = Instant::now();
    let resp = send(&mut svc, req).await;
    assert_eq!(start.elapsed(), Duration::from_secs(10));
    assert_eq!(resp.status(), 504);
}

#[tokio::test(start_paused = true)]
async fn no_route_timeout_means_none() {
    let m = mesh("", None);
    let script = Script::new(&[Step::Stall]);
    let mut svc = stack(&m, RetryLayer::new().seed(1), &script);
    let outcome = tokio::time::timeout(Duration::from_secs(3600), send(&mut svc, get())).await;
    assert!(outcome.is_err(), "still waiting after an hour");
}

#[tokio::test(start_paused = true)]
async fn backoff_waits_between_tries_within_envoys_bounds() {
    let m = mesh(
        "    retries: {attempts: 3, retryOn: 5xx, backoff: 100ms}",
        None,
    );
    let script = Script::new(&[FAIL_503, FAIL_503, FAIL_503, OK]);
    let mut svc = stack(&m, RetryLayer::new().seed(9), &script);
    let start = Instant::now();
    assert_eq!(send(&mut svc, get()).await.status(), 200);
    let took = start.elapsed();
    // Ceilings 100, 300, 700 ms; full jitter makes each wait anything below its ceiling.
    assert!(took < Duration::from_millis(1100), "{took:?}");
    assert!(took > Duration::ZERO, "the seeded jitter waited");
}

fn streamed(chunks: &[&'static str]) -> MeshBody {
    struct Iter(std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>);
    impl futures_core::Stream for Iter {
        type Item = Result<Frame<Bytes>, Infallible>;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            std::task::Poll::Ready(self.0.next())
        }
    }
    let frames: Vec<_> = chunks
        .iter()
        .map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes()))))
        .collect();
    body::boxed(StreamBody::new(Iter(frames.into_iter())))
}

fn post(body: MeshBody) -> Request<MeshBody> {
    Request::builder()
        .method("POST")
        .uri(format!("http://{HOST}/"))
        .body(body)
        .expect("valid request")
}

#[tokio::test(start_paused = true)]
async fn a_retried_post_sends_its_whole_body_once_per_try() {
    let m = mesh("    retries: {attempts: 2, retryOn: 5xx}", None);
    let script = Script::new(&[FAIL_503, FAIL_503, OK]);
    let mut svc = stack(&m, RetryLayer::new().seed(1), &script);
    let resp = send(&mut svc, post(streamed(&["hello", " ", "world"]))).await;
    assert_eq!(resp.status(), 200);
    let bodies: Vec<_> = script.seen().into_iter().map(|s| s.body).collect();
    assert_eq!(bodies, vec![b"hello world".to_vec(); 3]);
}

#[tokio::test(start_paused = true)]
async fn a_body_over_the_replay_limit_is_sent_once_and_not_retried() {
    let m = mesh("    retries: {attempts: 2, retryOn: 5xx}", None);
    let script = Script::new(&[FAIL_503, OK]);
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let layer = RetryLayer::new()
        .seed(1)
        .replay_limit(8)
        .on_event(move |e| sink.lock().expect("lock").push(e));
    let mut svc = stack(&m, layer, &script);
    let resp = send(&mut svc, post(streamed(&["0123", "4567", "89ab"]))).await;
    assert_eq!(resp.status(), 503, "the first try's answer");
    assert_eq!(script.calls(), 1);
    assert_eq!(script.seen()[0].body, b"0123456789ab");
    assert!(matches!(
        events.lock().expect("lock").as_slice(),
        [RetryEvent::BodyNotReplayable { .. }]
    ));
    // A body of known size over the limit is never buffered, and not retried either.
    let script = Script::new(&[FAIL_503, OK]);
    let mut svc = stack(&m, RetryLayer::new().seed(1).replay_limit(8), &script);
    let resp = send(&mut svc, post(body::full("0123456789ab"))).await;
    assert_eq!(resp.status(), 503);
    assert_eq!(script.seen()[0].body, b"0123456789ab");
}

static BUDGET: LazyLock<RetryBudgetState> = LazyLock::new(RetryBudgetState::default);

fn budget_of(_: &ClusterState) -> &RetryBudgetState {
    &BUDGET
}

#[tokio::test(start_paused = true)]
async fn a_retry_refused_by_the_budget_returns_the_original_response() {
    let m = mesh(
        "    retries: {attempts: 2, retryOn: 5xx}",
        Some("{retryBudget: {percent: 0, minRetryConcurrency: 0}}"),
    );
    let script = Script::new(&[FAIL_503, OK]);
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let layer = RetryLayer::new()
        .seed(1)
        .gate(BudgetGate::new(budget_of))
        .on_event(move |e| sink.lock().expect("lock").push(e));
    let mut svc = stack(&m, layer, &script);
    let resp = send(&mut svc, get()).await;
    assert_eq!(resp.status(), 503, "the original response");
    assert_eq!(flags(&resp), "UO");
    assert!(resp.headers().get(FLAG_HEADER).is_none());
    assert_eq!(script.calls(), 1);
    assert_eq!(BUDGET.refusals(), 1);
    let events = events.lock().expect("lock");
    let [RetryEvent::RetryRefused { cluster, refused }] = events.as_slice() else {
        panic!("expected one refusal, got {events:?}");
    };
    assert_eq!(&*cluster.host, HOST);
    assert_eq!(refused.max, 0);
    // Every try's count was released.
    assert_eq!(BUDGET.active(), 0);
    assert_eq!(BUDGET.retries_in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn retries_in_flight_stay_within_the_budget_under_sustained_failure() {
    // The budget state is this test's own (through a gate over a local static).
    static STATE: LazyLock<RetryBudgetState> = LazyLock::new(RetryBudgetState::default);
    fn state(_: &ClusterState) -> &RetryBudgetState {
        &STATE
    }
    let m = mesh(
        "    retries: {attempts: 3, retryOn: 5xx, perTryTimeout: 50ms}",
        Some("{retryBudget: {percent: 20, minRetryConcurrency: 2}}"),
    );
    // Every try stalls until its per-try timeout: many requests in flight at once.
    let script = Script::new(&vec![Step::Stall; 400]);
    let max_retries = Arc::new(AtomicUsize::new(0));
    let layer = RetryLayer::new().seed(3).gate(BudgetGate::new(state));
    let svc = stack(&m, layer, &script);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let mut svc = svc.clone();
        tasks.push(tokio::spawn(
            async move { send(&mut svc, get()).await.status() },
        ));
    }
    let watcher = {
        let max_retries = max_retries.clone();
        tokio::spawn(async move {
            for _ in 0..400 {
                let n = STATE.retries_in_flight() as usize;
                max_retries.fetch_max(n, Ordering::SeqCst);
                // Limit from the tries in flight right now (20 requests → 4).
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    for t in tasks {
        assert_eq!(t.await.expect("task"), 504);
    }
    watcher.abort();
    let max = max_retries.load(Ordering::SeqCst);
    assert!(max <= 4, "{max} retries in flight, budget 20% of 20");
    assert!(max >= 2, "retries did happen ({max})");
    assert!(STATE.refusals() > 0, "some retries were refused");
    assert_eq!(STATE.retries_in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn requests_without_a_route_decision_pass_straight_through() {
    let script = Script::new(&[FAIL_503, OK]);
    let mut svc = RetryLayer::new().layer(script.service());
    let resp = svc
        .ready()
        .await
        .expect("ready")
        .call(get())
        .await
        .expect("response");
    assert_eq!(resp.status(), 503);
    assert_eq!(script.calls(), 1);
    let _ = ResponseFlag::UpstreamRetryLimitExceeded;
}

#[tokio::test(start_paused = true)]
async fn the_route_timeout_covers_the_response_body() {
    let m = mesh("    timeout: 200ms\n    retries: {attempts: 0}", None);
    // An upstream that answers headers at once, then stalls its body.
    let inner = tower::service_fn(|_req: Request<MeshBody>| async {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
        let first = tx.send(Ok(Frame::data(Bytes::from_static(b"part")))).await;
        assert!(first.is_ok());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(tx);
        });
        let stream = ChannelStream(rx);
        Ok::<_, Error>(Response::new(body::boxed(StreamBody::new(stream))))
    });
    let mut svc: Stack = BoxCloneService::new(
        RouteLayer::new(m.clone())
            .layer(TimeoutLayer::new().layer(RetryLayer::new().layer(BoxCloneService::new(inner)))),
    );
    let start = Instant::now();
    let resp = send(&mut svc, get()).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let first = body.frame().await.expect("a frame").expect("data");
    assert_eq!(first.into_data().ok().as_deref(), Some(&b"part"[..]));
    let err = body
        .frame()
        .await
        .expect("an error frame")
        .expect_err("timed out");
    assert!(matches!(
        err.downcast_ref::<Error>(),
        Some(Error::Timeout { .. })
    ));
    assert_eq!(start.elapsed(), Duration::from_millis(200));
}

struct ChannelStream<T>(tokio::sync::mpsc::Receiver<T>);

impl<T> futures_core::Stream for ChannelStream<T> {
    type Item = T;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<T>> {
        self.0.poll_recv(cx)
    }
}

#[tokio::test(start_paused = true)]
async fn a_per_try_timeout_counts_against_its_endpoint_in_outlier_detection() {
    let m = mesh(
        "    retries: {attempts: 1, retryOn: 5xx, perTryTimeout: 100ms}",
        Some("{outlierDetection: {consecutiveGatewayErrors: 1, maxEjectionPercent: 100}}"),
    );
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let script = Script::new(&[Step::Stall, OK]);
    let retry = RetryLayer::new().seed(1).on_event(move |e| {
        sink.lock().expect("lock").push(e);
    });
    let mut svc = stack(&m, retry, &script);
    assert_eq!(send(&mut svc, get()).await.status(), 200);
    // The stalled try went to 127.0.0.1:80; its timeout (a gateway error, local origin not
    // split) ejected it.
    let first: SocketAddr = ([127, 0, 0, 1], 80).into();
    let ejected = events.lock().expect("lock").iter().any(|e| {
        matches!(e, RetryEvent::Outlier {
            event: crate::resilience::outlier::OutlierEvent::Ejected { addr, .. }, ..
        } if *addr == first)
    });
    assert!(ejected, "{:?}", events.lock().expect("lock"));
    let snap = m.snapshot();
    let cluster = snap.clusters().next().expect("a cluster");
    assert!(
        cluster
            .state()
            .outlier
            .is_ejected(&first, std::time::Instant::now())
    );
}

#[test]
fn try_context_keeps_every_tried_endpoint_in_order_past_the_inline_ones() {
    let ctx = TryContext::new(&RetryPolicy::from_route(None, false));
    assert_eq!(ctx.last_tried(), None);
    let addrs: Vec<SocketAddr> = (1..=5u16)
        .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
        .collect();
    for (i, a) in addrs.iter().enumerate() {
        ctx.record(*a);
        assert_eq!(ctx.last_tried(), Some(*a));
        assert_eq!(ctx.tried(), addrs[..=i].to_vec());
    }
    let retry = ctx.for_attempt(2);
    assert!(
        addrs
            .iter()
            .all(|a| retry.was_tried(a) && retry.should_avoid(a))
    );
    let other = SocketAddr::from(([127, 0, 0, 1], 9));
    assert!(!retry.was_tried(&other) && !retry.should_avoid(&other));
    assert!(!ctx.should_avoid(&addrs[0]), "a first try avoids nothing");
}
