//! Resilience end to end: retries, budgets, timeouts, outlier detection, connection-pool
//! limits, consistent hashing, mirroring, fault injection and body replay, through the real
//! `MeshClient` to real loopback backends.
//!
//! Every test declares `my-app.default.svc.cluster.local` (ServiceEntry, `resolution: STATIC`,
//! port 80, one endpoint per backend), a DestinationRule with the `trafficPolicy` under test
//! and a VirtualService with one route to it (plus the route fields under test). Durations are
//! short and real; every wait is a bounded loop, and no assertion is about elapsed time.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use hyper::body::Incoming;
use tokio::sync::broadcast;
use tokio::task::JoinSet;
use tower::Service;
use tower_mesh::body::{self, MeshBody};
use tower_mesh::error::{ResponseFlag, ResponseFlags};
use tower_mesh::{ConfigSource, Mesh, MeshClient, MeshEvent};

use crate::routing::{flag_of, request, send};
use crate::support::client::Reply;
use crate::support::{Backend, BoxFuture, DELAY_CMD, Handler, Protocols};

/// The URI every test calls (the VirtualService's host, short name).
const URI: &str = "http://my-app/r";

// ---- config ---------------------------------------------------------------------------------

/// A ServiceEntry for `<name>.default.svc.cluster.local` (port 80 `http`) with one endpoint
/// per backend.
fn service(name: &str, backends: &[&Backend]) -> String {
    let endpoints: String = backends
        .iter()
        .map(|b| {
            format!(
                "  - {{address: 127.0.0.1, ports: {{http: {}}}}}\n",
                b.port()
            )
        })
        .collect();
    format!(
        "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  hosts: [{name}.default.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports:\n  - {{number: 80, name: http, protocol: HTTP}}\n  endpoints:\n{endpoints}"
    )
}

/// A DestinationRule for `my-app` with `trafficPolicy: <policy>` (flow YAML).
fn dr(policy: &str) -> String {
    format!(
        "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: my-app, namespace: default}}\nspec:\n  host: my-app.default.svc.cluster.local\n  trafficPolicy: {policy}\n"
    )
}

/// A VirtualService for `my-app` with one route to it; `fields` are more fields of the route
/// (flow YAML lines such as `retries: {attempts: 3, retryOn: 5xx}`).
fn vs(fields: &[&str]) -> String {
    let extra: String = fields.iter().map(|f| format!("    {f}\n")).collect();
    format!(
        "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: my-app, namespace: default}}\nspec:\n  hosts: [my-app]\n  http:\n  - route: [{{destination: {{host: my-app}}}}]\n{extra}"
    )
}

/// The config sources: `my-app` over `backends`, its DestinationRule (none when `policy` is
/// `{}`: Istio rejects an empty traffic policy) and VirtualService.
fn sources(backends: &[&Backend], policy: &str, route: &[&str]) -> Vec<ConfigSource> {
    let mut out = vec![
        ConfigSource::yaml("services.yaml", service("my-app", backends)),
        ConfigSource::yaml("vs.yaml", vs(route)),
    ];
    if policy != "{}" {
        out.push(ConfigSource::yaml("dr.yaml", dr(policy)));
    }
    out
}

/// A mesh (seed 7) over [`sources`].
fn mesh(backends: &[&Backend], policy: &str, route: &[&str]) -> Mesh {
    build(sources(backends, policy, route), 7)
}

fn build(sources: Vec<ConfigSource>, seed: u64) -> Mesh {
    sources
        .into_iter()
        .fold(Mesh::builder().seed(seed), |b, s| b.config(s))
        .build()
        .unwrap_or_else(|e| panic!("the test config is valid: {e}"))
}

// ---- traffic --------------------------------------------------------------------------------

/// `GET URI` with `headers`; a body error is a test failure.
async fn get(client: &MeshClient, headers: &[(&str, &str)]) -> Reply {
    send(client, request("GET", URI, headers))
        .await
        .unwrap_or_else(|e| panic!("GET {URI}: response body failed: {e}"))
}

/// Sends requests `make(0..total)` with `workers` concurrent workers; `progress` counts the
/// requests started. Returns every outcome (a body error as `Err`).
async fn run(
    client: &MeshClient,
    total: usize,
    workers: usize,
    progress: Arc<AtomicUsize>,
    make: impl Fn(usize) -> Request<MeshBody> + Send + Sync + 'static,
) -> Vec<Result<Reply, String>> {
    let make = Arc::new(make);
    let mut set = JoinSet::new();
    for _ in 0..workers {
        let (client, progress, make) = (client.clone(), progress.clone(), make.clone());
        set.spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = progress.fetch_add(1, Ordering::SeqCst);
                if i >= total {
                    return out;
                }
                out.push(send(&client, make(i)).await.map_err(|e| e.to_string()));
            }
        });
    }
    let mut all = Vec::with_capacity(total);
    while let Some(done) = set.join_next().await {
        all.extend(done.expect("a worker panicked"));
    }
    all
}

/// Events received so far.
fn drain(rx: &mut broadcast::Receiver<MeshEvent>) -> Vec<MeshEvent> {
    let mut out = Vec::new();
    loop {
        match rx.try_recv() {
            Ok(e) => out.push(e),
            Err(broadcast::error::TryRecvError::Lagged(_)) => {}
            Err(_) => return out,
        }
    }
}

fn refused(events: &[MeshEvent], limit: &str) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, MeshEvent::RetryRefused { limit: l, .. } if *l == limit))
        .count()
}

/// Waits (≤ 10 s) until `done()`.
async fn until(what: &str, done: impl Fn() -> bool) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("still waiting, after 10 s, for {what}");
}

/// Awaits `fut`, failing the test if it takes more than 10 s (a hang guard, not a timing
/// assertion).
async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .unwrap_or_else(|_| panic!("{what} did not return within 10 s"))
}

fn statuses(replies: &[Result<Reply, String>]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in replies {
        let key = match r {
            Ok(r) => format!("{} {}", r.status.as_u16(), flag_of(r).unwrap_or("-")),
            Err(e) => format!("body error: {e}"),
        };
        *out.entry(key).or_insert(0) += 1;
    }
    out
}

// ---- retries --------------------------------------------------------------------------------

#[tokio::test]
async fn retries_on_5xx_make_every_call_of_a_two_in_three_failing_backend_succeed() {
    let b = Backend::start("b", &[]);
    b.fail_pattern(2, 3, 503);
    let mesh = mesh(&[&b], "{}", &["retries: {attempts: 3, retryOn: 5xx}"]);
    let mut events = mesh.subscribe();
    let client = mesh.client();
    for i in 0..60 {
        let reply = get(&client, &[]).await;
        assert_eq!(reply.status, StatusCode::OK, "call {i}: {reply:?}");
        assert_eq!(reply.backend(), Some("b"));
    }
    // Two failures then a success, each call: three tries.
    assert_eq!(b.hits(), 180);
    // Every retry made is reported (what tower_mesh_retries_total counts).
    let mut retried = 0;
    while let Ok(event) = events.try_recv() {
        if matches!(event, MeshEvent::Retried { .. }) {
            retried += 1;
        }
    }
    assert_eq!(retried, 120);
}

/// Counts, at the backend, the retries it holds: a request (named by `x-req-id`) seen
/// before is a retry.
#[derive(Default)]
struct RetryTracker {
    seen: Mutex<HashSet<String>>,
    now: AtomicUsize,
    max: AtomicUsize,
    total: AtomicUsize,
}

struct Holding(Arc<RetryTracker>);

impl Drop for Holding {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A backend that answers every request 503 after 20 ms, tracking retries in flight.
fn always_503(tracker: Arc<RetryTracker>) -> Backend {
    let handler: Handler = Arc::new(move |req: Request<Incoming>| {
        let t = tracker.clone();
        Box::pin(async move {
            let id = req
                .headers()
                .get("x-req-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let retry = !t.seen.lock().unwrap_or_else(|e| e.into_inner()).insert(id);
            let _holding = retry.then(|| {
                t.total.fetch_add(1, Ordering::SeqCst);
                let now = t.now.fetch_add(1, Ordering::SeqCst) + 1;
                t.max.fetch_max(now, Ordering::SeqCst);
                Holding(t.clone())
            });
            tokio::time::sleep(Duration::from_millis(20)).await;
            let mut resp = Response::new(body::full("busy"));
            *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            resp
        }) as BoxFuture<_>
    });
    Backend::start_with("flaky", Protocols::Auto, handler)
}

/// 48 requests, 16 at a time, to a backend that always fails, with `attempts: 5` on 5xx under
/// `policy`. Returns (the most retries the backend held at once, retries made, events).
async fn retry_pressure(policy: &str) -> (usize, usize, Vec<MeshEvent>) {
    let tracker = Arc::new(RetryTracker::default());
    let b = always_503(tracker.clone());
    let mesh = mesh(&[&b], policy, &["retries: {attempts: 5, retryOn: 5xx}"]);
    let mut events = mesh.subscribe();
    let replies = run(&mesh.client(), 48, 16, Arc::default(), |i| {
        request("GET", URI, &[("x-req-id", &i.to_string())])
    })
    .await;
    let statuses = statuses(&replies);
    // The caller gets the last try's own answer: the upstream 503, no mesh flag.
    assert_eq!(statuses, BTreeMap::from([("503 -".to_owned(), 48)]));
    (
        tracker.max.load(Ordering::SeqCst),
        tracker.total.load(Ordering::SeqCst),
        drain(&mut events),
    )
}

#[tokio::test]
async fn a_retry_budget_bounds_retries_in_flight_under_sustained_failure() {
    // Budget: max(2, 10% × at most 16 requests in flight) = 2 retries in flight.
    let (max, made, events) =
        retry_pressure("{retryBudget: {percent: 10, minRetryConcurrency: 2}}").await;
    let refusals = refused(&events, "trafficPolicy.retryBudget");
    assert!(made >= 1, "no retry was made at all");
    assert!(max <= 2, "{max} retries in flight at once, budget 2");
    assert!(refusals >= 1, "no retry was refused by the budget");
    // Without the budget, 48 requests × 5 retries would be made.
    assert!(made < 48 * 5, "{made} retries: the budget refused none");

    // The control: the same load with no limit holds more retries at once.
    let (max, made, events) = retry_pressure("{loadBalancer: {simple: ROUND_ROBIN}}").await;
    assert_eq!(
        (made, refused(&events, "trafficPolicy.retryBudget")),
        (48 * 5, 0)
    );
    assert!(
        max > 2,
        "only {max} retries in flight at once without a budget"
    );
}

#[tokio::test]
async fn max_retries_bounds_concurrent_retries_and_the_rest_are_not_made() {
    let (max, made, events) = retry_pressure("{connectionPool: {http: {maxRetries: 1}}}").await;
    assert!(made >= 1, "no retry was made at all");
    assert!(max <= 1, "{max} retries in flight at once, maxRetries 1");
    let refusals = refused(&events, "connectionPool.http.maxRetries");
    assert!(refusals >= 1, "no retry was refused by maxRetries");
    // Each refused retry is a try not made: with none refused, 48 × 5 retries.
    assert!(made + refusals <= 48 * 5, "made {made}, refused {refusals}");
    assert!(made < 48 * 5, "{made} retries made: none refused");
}

// ---- timeouts -------------------------------------------------------------------------------

#[tokio::test]
async fn a_stalled_try_is_abandoned_after_per_try_timeout_and_the_retry_succeeds() {
    let stalled = Backend::start("stalled", &[]);
    let healthy = Backend::start("healthy", &[]);
    stalled.set_stall(true);
    let mesh = mesh(
        &[&stalled, &healthy],
        "{loadBalancer: {simple: ROUND_ROBIN}}",
        &[
            "timeout: 5s",
            "retries: {attempts: 2, perTryTimeout: 100ms, retryOn: 5xx}",
        ],
    );
    let client = mesh.client();
    for i in 0..10 {
        let reply = bounded("a call", get(&client, &[])).await;
        assert_eq!(
            (reply.status, reply.backend()),
            (StatusCode::OK, Some("healthy")),
            "call {i}: {reply:?}"
        );
    }
    // Round robin sent tries to the stalled endpoint; each was abandoned at perTryTimeout and
    // retried on the healthy one (previous-host avoidance).
    assert!(
        stalled.hits() >= 1,
        "round robin never tried the stalled one"
    );
    assert_eq!(healthy.hits(), 10);
    stalled.set_stall(false);
}

#[tokio::test]
async fn the_route_timeout_caps_the_sum_of_tries() {
    let a = Backend::start("a", &[]);
    let b = Backend::start("b", &[]);
    a.set_stall(true);
    b.set_stall(true);
    let mesh = mesh(
        &[&a, &b],
        "{}",
        &[
            "timeout: 500ms",
            "retries: {attempts: 10, perTryTimeout: 200ms, retryOn: 5xx}",
        ],
    );
    let reply = bounded("the call", get(&mesh.client(), &[])).await;
    assert_eq!(
        (reply.status, flag_of(&reply)),
        (StatusCode::GATEWAY_TIMEOUT, Some("UT")),
        "{reply:?}"
    );
    // It returned while both backends are still stalled (never released), and the route
    // timeout cut the retries short: 11 tries were allowed, each lasting 200 ms.
    let tries = a.hits() + b.hits();
    assert!(
        (1..=5).contains(&tries),
        "{tries} tries within a 500 ms route timeout"
    );
    a.set_stall(false);
    b.set_stall(false);
}

#[tokio::test]
async fn a_try_abandoned_by_the_route_timeout_counts_for_outlier_detection() {
    // No retries: the route timeout, not a per-try timeout, abandons the stalled try. As in
    // Envoy, that is a local-origin timeout for the endpoint (a gateway error): with
    // consecutiveGatewayErrors 2, two such calls eject it.
    let stalled = Backend::start("stalled", &[]);
    let healthy = Backend::start("healthy", &[]);
    stalled.set_stall(true);
    let mesh = mesh(
        &[&stalled, &healthy],
        "{loadBalancer: {simple: ROUND_ROBIN}, outlierDetection: {consecutiveGatewayErrors: 2, interval: 10s, baseEjectionTime: 30s, maxEjectionPercent: 50}}",
        &["timeout: 100ms", "retries: {attempts: 0}"],
    );
    let mut events = mesh.subscribe();
    let client = mesh.client();
    let mut timeouts = 0;
    for _ in 0..20 {
        let reply = bounded("a call", get(&client, &[])).await;
        match (reply.status, reply.backend()) {
            (StatusCode::OK, Some("healthy")) => {}
            (StatusCode::GATEWAY_TIMEOUT, _) => {
                assert_eq!(flag_of(&reply), Some("UT"), "{reply:?}");
                timeouts += 1;
            }
            other => panic!("unexpected reply {other:?}: {reply:?}"),
        }
    }
    // Round robin sent calls 1, 3, ... to the stalled endpoint until it was ejected after its
    // second timeout; after that every call went to the healthy one.
    assert_eq!(
        timeouts, 2,
        "the stalled endpoint was not ejected after two route timeouts"
    );
    let ejected = drain(&mut events).into_iter().any(|e| {
        matches!(e, MeshEvent::Ejected { addr, reason, .. }
            if addr == stalled.addr() && reason.contains("GATEWAY"))
    });
    assert!(
        ejected,
        "no gateway-error Ejected event for {}",
        stalled.addr()
    );
    stalled.set_stall(false);
}

// ---- outlier detection ----------------------------------------------------------------------

#[tokio::test]
async fn killing_one_of_three_backends_mid_run_fails_no_request_and_it_is_ejected_then_returns() {
    let a = Backend::start("a", &[]);
    let b = Backend::start("b", &[]);
    let mut c = Backend::start("c", &[]);
    let mesh = mesh(
        &[&a, &b, &c],
        "{outlierDetection: {consecutive5xxErrors: 3, consecutiveGatewayErrors: 2, interval: 1s, baseEjectionTime: 1s, maxEjectionPercent: 50}}",
        &["retries: {attempts: 3, retryOn: \"connect-failure,reset\"}"],
    );
    let mut events = mesh.subscribe();
    let client = mesh.client();
    let progress = Arc::new(AtomicUsize::new(0));
    let runner = {
        let (client, progress) = (client.clone(), progress.clone());
        tokio::spawn(
            async move { run(&client, 3000, 8, progress, |_| request("GET", URI, &[])).await },
        )
    };
    until("1,000 requests", || progress.load(Ordering::SeqCst) >= 1000).await;
    let c_before_kill = c.hits();
    c.stop();
    let replies = bounded("the run", runner).await.expect("the run panicked");
    assert_eq!(replies.len(), 3000);
    let failed: Vec<String> = replies
        .iter()
        .filter_map(|r| match r {
            Ok(r) if r.status == StatusCode::OK => None,
            Ok(r) => Some(format!("{} {:?}", r.status, flag_of(r))),
            Err(e) => Some(e.clone()),
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} of 3000 requests failed: {:?}",
        failed.len(),
        statuses(&replies)
    );
    assert!(c_before_kill >= 1, "c served nothing before it was killed");

    let ejected = drain(&mut events)
        .into_iter()
        .any(|e| matches!(e, MeshEvent::Ejected { addr, .. } if addr == c.addr()));
    assert!(
        ejected,
        "no Ejected event for the dead endpoint {}",
        c.addr()
    );

    c.restart().await;
    let c_at_restart = c.hits();
    let mut returned = false;
    for _ in 0..750 {
        let reply = get(&client, &[]).await;
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        returned |= drain(&mut events)
            .iter()
            .any(|e| matches!(e, MeshEvent::Returned { addr, .. } if *addr == c.addr()));
        if returned && c.hits() > c_at_restart {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(returned, "no Returned event for {} within 15 s", c.addr());
    assert!(
        c.hits() > c_at_restart,
        "c never served again after it returned"
    );
}

// ---- connection pool ------------------------------------------------------------------------

#[tokio::test]
async fn http2_max_requests_answers_the_third_concurrent_request_503_uo_at_once() {
    let b = Backend::start("b", &[]);
    b.set_stall(true);
    let mesh = mesh(
        &[&b],
        "{connectionPool: {http: {http2MaxRequests: 2}}}",
        &[],
    );
    let client = mesh.client();
    let mut held = JoinSet::new();
    for _ in 0..2 {
        let client = client.clone();
        held.spawn(async move { get(&client, &[]).await });
    }
    until("two requests held by the backend", || b.in_flight() == 2).await;
    let third = bounded("the third request", get(&client, &[])).await;
    assert_eq!(
        (third.status, flag_of(&third)),
        (StatusCode::SERVICE_UNAVAILABLE, Some("UO")),
        "{third:?}"
    );
    // Answered while the other two are still held, and never sent.
    assert_eq!((b.in_flight(), b.hits()), (2, 2));
    b.set_stall(false);
    while let Some(r) = held.join_next().await {
        assert_eq!(r.expect("held request").status, StatusCode::OK);
    }
}

#[tokio::test]
async fn max_requests_per_connection_closes_connections_after_that_many_requests() {
    let b = Backend::start("b", &[]);
    let limited = mesh(
        &[&b],
        "{connectionPool: {http: {maxRequestsPerConnection: 2}}}",
        &[],
    );
    let client = limited.client();
    for _ in 0..20 {
        assert_eq!(get(&client, &[]).await.status, StatusCode::OK);
    }
    let (hits, conns) = (b.hits(), b.connections());
    assert_eq!(hits, 20);
    assert!(
        (10..=12).contains(&conns),
        "{conns} connections for {hits} sequential requests at 2 per connection"
    );

    // The control: without the limit, sequential requests share one connection.
    let free = Backend::start("free", &[]);
    let unlimited = mesh(&[&free], "{}", &[]);
    let client = unlimited.client();
    for _ in 0..20 {
        assert_eq!(get(&client, &[]).await.status, StatusCode::OK);
    }
    assert_eq!(free.connections(), 1);
}

// ---- consistent hashing ---------------------------------------------------------------------

/// The backend each of `users` reaches (header `x-user`).
async fn owners(client: &MeshClient, users: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(users);
    for u in 0..users {
        let reply = get(client, &[("x-user", &format!("user-{u}"))]).await;
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        out.push(reply.backend().expect("x-backend").to_owned());
    }
    out
}

#[tokio::test]
async fn consistent_hash_on_a_header_sends_each_user_to_one_endpoint() {
    let backends: Vec<Backend> = (0..3)
        .map(|i| Backend::start(&format!("e{i}"), &[]))
        .collect();
    let refs: Vec<&Backend> = backends.iter().collect();
    let mesh = mesh(
        &refs,
        "{loadBalancer: {consistentHash: {httpHeaderName: x-user}}}",
        &[],
    );
    let client = mesh.client();
    let first = owners(&client, 50).await;
    for round in 1..5 {
        assert_eq!(
            owners(&client, 50).await,
            first,
            "round {round} moved users"
        );
    }
    let used: HashSet<&String> = first.iter().collect();
    assert!(used.len() >= 2, "50 users all hashed to {used:?}");
}

/// Maps 400 users over 5 endpoints, reloads without endpoint `e2`, maps again: the users of
/// `e2` all move, and few others do.
async fn removing_an_endpoint_moves_about_its_share(hash: &str) {
    const USERS: usize = 400;
    const N: usize = 5;
    let backends: Vec<Backend> = (0..N)
        .map(|i| Backend::start(&format!("e{i}"), &[]))
        .collect();
    let all: Vec<&Backend> = backends.iter().collect();
    let policy =
        format!("{{loadBalancer: {{consistentHash: {{httpHeaderName: x-user, {hash}}}}}}}");
    let mesh = mesh(&all, &policy, &[]);
    let client = mesh.client();
    let before = owners(&client, USERS).await;

    let kept: Vec<&Backend> = all.iter().copied().filter(|b| b.name() != "e2").collect();
    mesh.reload_from(sources(&kept, &policy, &[]))
        .await
        .unwrap_or_else(|e| panic!("reload: {e}"));
    let removed_hits = backends[2].hits();
    let after = owners(&client, USERS).await;
    assert_eq!(backends[2].hits(), removed_hits, "{hash}: e2 still served");

    let on_removed = before.iter().filter(|o| *o == "e2").count();
    let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
    assert!(on_removed >= 1, "{hash}: no user was on e2");
    assert!(
        after.iter().all(|o| o != "e2"),
        "{hash}: a user still on e2"
    );
    assert!(
        moved >= on_removed,
        "{hash}: {moved} moved, {on_removed} were on e2"
    );
    // About 1/N of the keys: generous bound 2.5/N.
    assert!(
        moved * 2 * N < 5 * USERS,
        "{hash}: {moved} of {USERS} users moved removing 1 of {N} endpoints"
    );
}

#[tokio::test]
async fn ring_hash_removing_one_of_five_endpoints_moves_about_a_fifth_of_keys() {
    removing_an_endpoint_moves_about_its_share("ringHash: {minimumRingSize: 1024}").await;
}

#[tokio::test]
async fn maglev_removing_one_of_five_endpoints_moves_about_a_fifth_of_keys() {
    removing_an_endpoint_moves_about_its_share("maglev: {tableSize: 65537}").await;
}

// ---- mirroring ------------------------------------------------------------------------------

/// What the mirror backend received: (authority, body bytes) per request.
type Seen = Arc<Mutex<Vec<(String, usize)>>>;

fn mirror_backend(seen: Seen) -> Backend {
    let handler: Handler = Arc::new(move |req: Request<Incoming>| {
        let seen = seen.clone();
        Box::pin(async move {
            use http_body_util::BodyExt;
            let authority = req
                .uri()
                .authority()
                .map(|a| a.to_string())
                .or_else(|| {
                    req.headers()
                        .get(http::header::HOST)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                })
                .unwrap_or_default();
            let len = match req.into_body().collect().await {
                Ok(c) => c.to_bytes().len(),
                Err(_) => usize::MAX,
            };
            seen.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((authority, len));
            Response::new(body::full("mirror"))
        }) as BoxFuture<_>
    });
    Backend::start_with("mirror", Protocols::Auto, handler)
}

#[tokio::test]
async fn the_mirror_gets_a_copy_and_a_stalled_or_stopped_mirror_changes_nothing() {
    let primary = Backend::start("primary", &[]);
    let seen: Seen = Arc::default();
    let mut mirror = mirror_backend(seen.clone());
    let mut srcs = sources(&[&primary], "{}", &["mirror: {host: my-app-mirror}"]);
    srcs.push(ConfigSource::yaml(
        "mirror.yaml",
        service("my-app-mirror", &[&mirror]),
    ));
    let mesh = build(srcs, 7);
    let client = mesh.client();

    let mut req = request("POST", URI, &[]);
    *req.body_mut() = body::full(vec![b'm'; 1000]);
    let reply = send(&client, req).await.expect("mirrored POST");
    assert_eq!(
        (reply.status, reply.backend()),
        (StatusCode::OK, Some("primary"))
    );
    assert_eq!(reply.echo().body_bytes, 1000);
    until("the mirror's copy", || mirror.hits() >= 1).await;
    until("the mirror's copy read", || {
        !seen.lock().unwrap_or_else(|e| e.into_inner()).is_empty()
    })
    .await;
    let copies = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert_eq!(copies, vec![("my-app-shadow".to_owned(), 1000)]);

    // A stalled mirror: every caller is answered while the mirror holds the copies.
    mirror.set_stall(true);
    for i in 0..20 {
        let reply = bounded("a call with the mirror stalled", get(&client, &[])).await;
        assert_eq!(
            (reply.status, reply.backend()),
            (StatusCode::OK, Some("primary")),
            "call {i}"
        );
    }
    until("the mirror holding copies", || mirror.in_flight() >= 1).await;
    mirror.set_stall(false);

    // A stopped mirror: the same.
    mirror.stop();
    for i in 0..20 {
        let reply = bounded("a call with the mirror stopped", get(&client, &[])).await;
        assert_eq!(
            (reply.status, reply.backend()),
            (StatusCode::OK, Some("primary")),
            "call {i}"
        );
    }
    assert_eq!(primary.hits(), 41);
}

// ---- fault injection ------------------------------------------------------------------------

/// 2,000 requests (16 at a time) through a mesh seeded `seed` with a 25% abort (418) and
/// `retryOn` that would retry a real 418. Returns (aborted, backend hits).
async fn abort_run(seed: u64) -> (usize, usize) {
    let b = Backend::start("b", &[]);
    let mesh = build(
        sources(
            &[&b],
            "{}",
            &[
                "fault: {abort: {httpStatus: 418, percentage: {value: 25}}}",
                "retries: {attempts: 3, retryOn: \"5xx,418\"}",
            ],
        ),
        seed,
    );
    let replies = run(&mesh.client(), 2000, 16, Arc::default(), |_| {
        request("GET", URI, &[])
    })
    .await;
    let mut aborted = 0;
    for r in &replies {
        let r = r.as_ref().expect("a body");
        match r.status.as_u16() {
            418 => {
                assert_eq!(flag_of(r), Some("FI"), "{r:?}");
                aborted += 1;
            }
            200 => assert_eq!(flag_of(r), None),
            _ => panic!("unexpected {r:?}"),
        }
    }
    (aborted, b.hits())
}

#[tokio::test]
async fn a_seeded_abort_fault_fires_a_reproducible_quarter_and_is_never_retried() {
    let (aborted, hits) = abort_run(7).await;
    // 25% ± 3 points of 2,000.
    assert!(
        (440..=560).contains(&aborted),
        "{aborted} of 2000 aborted at 25%"
    );
    // Aborts never reach the backend, and are not retried.
    assert_eq!(hits, 2000 - aborted);
    // The same seed, the same count.
    assert_eq!(abort_run(7).await.0, aborted);
}

#[tokio::test]
async fn a_delay_fault_flags_the_upstream_response_di_in_its_extensions() {
    let b = Backend::start("b", &[]);
    let mesh = mesh(
        &[&b],
        "{}",
        &["fault: {delay: {fixedDelay: 50ms, percentage: {value: 100}}}"],
    );
    let mut client = mesh.client();
    for i in 0..5 {
        let resp = match client.call(request("GET", URI, &[])).await {
            Ok(resp) => resp,
            Err(never) => match never {},
        };
        assert_eq!(resp.status(), StatusCode::OK, "call {i}");
        let flags = resp.extensions().get::<ResponseFlags>().copied();
        assert!(
            flags.is_some_and(|f| f.contains(ResponseFlag::DelayInjected)),
            "call {i}: flags in extensions {flags:?}"
        );
        // The response is the upstream's: the flag is in its extensions (for telemetry), not
        // in `x-tower-mesh-flag`, which only mesh-made answers carry.
        assert_eq!(
            resp.headers()
                .get("x-backend")
                .and_then(|v| v.to_str().ok()),
            Some("b")
        );
    }
    assert_eq!(b.hits(), 5);
}

// ---- body replay ----------------------------------------------------------------------------

/// A request body sent in chunks, with no size known up front.
struct Chunks(VecDeque<Bytes>);

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
    }
}

fn chunked(total: usize, chunk: usize) -> MeshBody {
    let mut parts = VecDeque::new();
    let mut left = total;
    while left > 0 {
        let n = left.min(chunk);
        parts.push_back(Bytes::from(vec![b'c'; n]));
        left -= n;
    }
    body::boxed(Chunks(parts))
}

fn post(body: MeshBody) -> Request<MeshBody> {
    let mut req = request("POST", URI, &[]);
    *req.body_mut() = body;
    req
}

#[tokio::test]
async fn a_retried_post_carries_its_whole_body_on_each_try_and_one_over_the_cap_is_not_retried() {
    let b = Backend::start("b", &[]);
    let mesh = mesh(&[&b], "{}", &["retries: {attempts: 3, retryOn: 5xx}"]);
    let client = mesh.client();

    // Within the cap (known size, then streamed): the first try is answered 503, the retry
    // carries the whole body.
    for (what, body, size) in [
        ("full 1000 B", body::full(vec![b'p'; 1000]), 1000),
        ("streamed 40 KiB", chunked(40 << 10, 4 << 10), 40 << 10),
    ] {
        b.fail_pattern(1, 2, 503);
        let before = b.hits();
        let reply = send(&client, post(body)).await.expect("POST");
        assert_eq!(reply.status, StatusCode::OK, "{what}: {reply:?}");
        assert_eq!(reply.echo().body_bytes, size, "{what}");
        assert_eq!(b.hits() - before, 2, "{what}: one failed try, one retry");
    }

    // Over the 64 KiB cap (known size, then outgrowing it mid-stream): sent once, the 503
    // comes back.
    for (what, body) in [
        ("full 100 KiB", body::full(vec![b'p'; 100 << 10])),
        ("streamed 100 KiB", chunked(100 << 10, 10 << 10)),
    ] {
        b.fail_pattern(1, 2, 503);
        let before = b.hits();
        let reply = send(&client, post(body)).await.expect("POST");
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{what}: {reply:?}"
        );
        assert_eq!(b.hits() - before, 1, "{what}: retried");
    }
    // A delay header shows the backend still serves normally afterwards.
    b.fail_pattern(0, 0, 503);
    let reply = get(&client, &[(DELAY_CMD, "1")]).await;
    assert_eq!(reply.status, StatusCode::OK);
}
