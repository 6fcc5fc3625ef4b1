//! Telemetry end to end: Istio's outbound metrics match what the client saw, trace headers
//! reach the upstream continued, and the access log is written when a response ends. The
//! stacks are built by hand from the public layers, as the lead's client and proxy do:
//! `TraceLayer → AccessLogLayer → RouteLayer → OutboundMetricsLayer → FaultLayer → Upstream`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use tokio::task::JoinSet;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};
use tower_mesh::body::{self, MeshBody};
use tower_mesh::error::FLAG_HEADER;
use tower_mesh::resilience::fault::{FaultLayer, FaultService};
use tower_mesh::route::layer::RouteService;
use tower_mesh::telemetry::trace::{self, TraceContext};
use tower_mesh::telemetry::{
    AccessLogFormat, AccessLogLayer, AccessLogService, OutboundMetrics, OutboundMetricsLayer,
    TraceLayer, TraceService,
};
use tower_mesh::{ConfigSource, Mesh, RouteLayer, Upstream};

use crate::support::{Backend, Echo};

/// The stack, named (a boxed `dyn` service trips rustc's higher-ranked `Send` check in
/// spawned futures).
type Client = TraceService<AccessLogService<RouteService<OutboundMetrics<FaultService<Upstream>>>>>;

/// `my-app` over `b`, with a VirtualService route carrying `fault` (flow YAML, or none).
fn config(b: &Backend, fault: Option<&str>) -> Vec<ConfigSource> {
    let se = format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: my-app, namespace: default}}\nspec:\n  hosts: [my-app.default.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports:\n  - {{number: 80, name: http, protocol: HTTP}}\n  endpoints:\n  - {{address: 127.0.0.1, ports: {{http: {}}}}}\n",
        b.port()
    );
    let fault = fault
        .map(|f| format!("    fault: {f}\n"))
        .unwrap_or_default();
    let vs = format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: my-app, namespace: default}}\nspec:\n  hosts: [my-app]\n  http:\n  - name: main\n    route: [{{destination: {{host: my-app}}}}]\n{fault}"
    );
    vec![
        ConfigSource::yaml("se.yaml", se),
        ConfigSource::yaml("vs.yaml", vs),
    ]
}

fn mesh(sources: Vec<ConfigSource>, registry: &mut prometheus_client::registry::Registry) -> Mesh {
    sources
        .into_iter()
        .fold(
            Mesh::builder()
                .namespace("default")
                .labels([("app", "caller")])
                .seed(7),
            |b, s| b.config(s),
        )
        .metrics(registry)
        .build()
        .unwrap_or_else(|e| panic!("the test config is valid: {e}"))
}

/// The outbound stack with every telemetry layer in its documented place.
fn client(mesh: &Mesh) -> Client {
    let below_router = ServiceBuilder::new()
        .layer(OutboundMetricsLayer::new(mesh))
        .layer(FaultLayer::new(Some(11)))
        .service(Upstream::new(mesh));
    ServiceBuilder::new()
        .layer(TraceLayer::new())
        .layer(AccessLogLayer::new().format(AccessLogFormat::Envoy))
        .service(RouteLayer::new(mesh.clone()).layer(below_router))
}

fn get(path: &str, headers: &[(&str, &str)]) -> Request<MeshBody> {
    let mut b = Request::get(format!("http://my-app{path}"));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(body::empty()).expect("a valid request")
}

/// Sends and reads the whole response: (status, flags header, body).
async fn send(mut client: Client, req: Request<MeshBody>) -> (StatusCode, Option<String>, Bytes) {
    // Awaiting the concrete future (not tower's generic `oneshot`) keeps this future
    // provably `Send` for `spawn`, as routing.rs does.
    let ready =
        std::future::poll_fn(|cx| Service::<Request<MeshBody>>::poll_ready(&mut client, cx));
    let resp = match ready.await {
        Ok(()) => match client.call(req).await {
            Ok(resp) => resp,
            Err(never) => match never {},
        },
        Err(never) => match never {},
    };
    let flags = resp
        .headers()
        .get(FLAG_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let status = resp.status();
    let body = resp.into_body().collect().await.expect("a body").to_bytes();
    (status, flags, body)
}

/// `istio_requests_total` with `reporter="source"`, by (response_code, response_flags).
fn requests_by_code_and_flags(text: &str) -> BTreeMap<(String, String), u64> {
    let label = |line: &str, name: &str| {
        let start = line.find(&format!("{name}=\""))? + name.len() + 2;
        let rest = line.get(start..)?;
        Some(rest.get(..rest.find('"')?)?.to_string())
    };
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if !line.starts_with("istio_requests_total{") || !line.contains("reporter=\"source\"") {
            continue;
        }
        let code = label(line, "response_code").expect("a response_code label");
        let flags = label(line, "response_flags").expect("a response_flags label");
        let value: u64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .expect("a counter value");
        if value > 0 {
            *out.entry((code, flags)).or_default() += value;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_requests_total_by_code_and_flags_equals_what_the_client_saw() {
    let b = Backend::start("b", &[]);
    let mut registry = prometheus_client::registry::Registry::default();
    let mesh = mesh(
        config(
            &b,
            Some("{abort: {httpStatus: 503, percentage: {value: 30}}}"),
        ),
        &mut registry,
    );
    let client = client(&mesh);
    let mut set = JoinSet::new();
    for i in 0..400usize {
        let client = client.clone();
        // Every fifth request asks the backend itself for a 500 (no flags: the upstream's).
        let headers: &[(&str, &str)] = if i % 5 == 0 {
            &[("x-backend-status", "500")]
        } else {
            &[]
        };
        let req = get("/r", headers);
        set.spawn(send(client, req));
    }
    let mut seen: BTreeMap<(String, String), u64> = BTreeMap::new();
    while let Some(r) = set.join_next().await {
        let (status, flags, _) = r.expect("the task ran");
        let flags = flags.unwrap_or_else(|| "-".to_string());
        *seen
            .entry((status.as_u16().to_string(), flags))
            .or_default() += 1;
    }
    let aborted = seen
        .get(&("503".to_string(), "FI".to_string()))
        .copied()
        .unwrap_or(0);
    assert!(
        (60..=190).contains(&aborted),
        "about 30% of 400 aborted: {seen:?}"
    );
    assert!(
        seen.contains_key(&("200".to_string(), "-".to_string())),
        "{seen:?}"
    );
    assert!(
        seen.contains_key(&("500".to_string(), "-".to_string())),
        "{seen:?}"
    );

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
    assert_eq!(requests_by_code_and_flags(&text), seen, "\n{text}");
    // The labels a source reporter gives, resolved from the route's destination.
    let series = text
        .lines()
        .find(|l| l.starts_with("istio_requests_total{") && l.contains("response_flags=\"FI\""))
        .expect("an FI series");
    for label in [
        "reporter=\"source\"",
        "source_workload=\"caller\"",
        "source_workload_namespace=\"default\"",
        "destination_service=\"my-app.default.svc.cluster.local\"",
        "destination_service_name=\"my-app\"",
        "request_protocol=\"http\"",
        "response_code=\"503\"",
    ] {
        assert!(series.contains(label), "{label} missing in {series}");
    }
    // Durations and sizes are recorded once per request too.
    let total: u64 = seen.values().sum();
    assert!(
        text.contains(&format!(
            "istio_request_duration_milliseconds_count{{{}",
            "reporter=\"source\""
        )),
        "{text}"
    );
    let counts: u64 = text
        .lines()
        .filter(|l| {
            l.starts_with("istio_response_bytes_count{") && l.contains("reporter=\"source\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(counts, total);
}

/// The trace headers the backend saw.
async fn backend_headers(client: &Client, headers: &[(&str, &str)]) -> BTreeMap<String, String> {
    let (status, _, body) = send(client.clone(), get("/t", headers)).await;
    assert_eq!(status, StatusCode::OK);
    Echo::parse(&body).headers
}

#[tokio::test]
async fn an_incoming_traceparent_reaches_the_upstream_with_the_same_trace_and_a_new_parent() {
    let b = Backend::start("b", &[]);
    let mut registry = prometheus_client::registry::Registry::default();
    let client = client(&mesh(config(&b, None), &mut registry));
    let sent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let h = backend_headers(
        &client,
        &[("traceparent", sent), ("tracestate", "congo=t61rcWkgMzE")],
    )
    .await;
    let tp = h.get("traceparent").expect("traceparent forwarded");
    let got = trace::parse_traceparent(tp).expect("a valid traceparent");
    assert_eq!(got.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
    assert_ne!(got.span_id, 0x00f067aa0ba902b7, "a new parent span id");
    assert_eq!(got.sampled, Some(true));
    assert_eq!(
        h.get("tracestate").map(String::as_str),
        Some("congo=t61rcWkgMzE")
    );
    assert!(
        !h.contains_key("b3"),
        "forwarded in the format that came in"
    );
    let id = h.get("x-request-id").expect("x-request-id added");
    assert_eq!(id.len(), 36, "{id}");
}

#[tokio::test]
async fn b3_single_and_multi_reach_the_upstream_continued() {
    let b = Backend::start("b", &[]);
    let mut registry = prometheus_client::registry::Registry::default();
    let client = client(&mesh(config(&b, None), &mut registry));

    let h = backend_headers(
        &client,
        &[
            ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
            ("x-request-id", "mine"),
        ],
    )
    .await;
    let b3 = trace::parse_b3_single(h.get("b3").expect("b3 forwarded")).expect("valid b3");
    assert_eq!(b3.trace_id, 0x80f198ee56343ba864fe8b2a57d3eff7);
    assert_ne!(b3.span_id, 0xe457b5a2e4d86bd1);
    assert_eq!(b3.parent_span_id, Some(0xe457b5a2e4d86bd1));
    assert!(!h.contains_key("traceparent"));
    assert_eq!(h.get("x-request-id").map(String::as_str), Some("mine"));

    let h = backend_headers(
        &client,
        &[
            ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-sampled", "1"),
        ],
    )
    .await;
    assert_eq!(
        h.get("x-b3-traceid").map(String::as_str),
        Some("463ac35c9f6413ad48485a3953bb6124")
    );
    assert_eq!(
        h.get("x-b3-parentspanid").map(String::as_str),
        Some("a2fb4a1d1a96d312")
    );
    let span = h.get("x-b3-spanid").expect("x-b3-spanid");
    assert_ne!(span, "a2fb4a1d1a96d312");
    assert_eq!(span.len(), 16);

    // No context: a new W3C trace; a malformed one is ignored the same way.
    for headers in [&[][..], &[("traceparent", "00-zz-zz-01")][..]] {
        let h = backend_headers(&client, headers).await;
        let tp = h.get("traceparent").expect("a trace started");
        let ctx: TraceContext = trace::parse_traceparent(tp).expect("valid");
        assert_ne!(ctx.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
    }
}

// ---- access log -----------------------------------------------------------------------------

/// A `tracing` subscriber that keeps the messages of `tower_mesh::access_log` events.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<String>>>);

struct Message<'a>(&'a mut String);

impl tracing::field::Visit for Message<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            *self.0 = format!("{value:?}");
        }
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        if event.metadata().target() == tower_mesh::telemetry::access_log::TARGET {
            let mut line = String::new();
            event.record(&mut Message(&mut line));
            self.0.lock().expect("lock").push(line);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[tokio::test(flavor = "current_thread")]
async fn the_access_log_line_is_written_when_the_response_ends() {
    let capture = Capture::default();
    let _guard = tracing::subscriber::set_default(capture.clone());
    let b = Backend::start("b", &[]);
    let mut registry = prometheus_client::registry::Registry::default();
    let mesh = mesh(
        config(
            &b,
            Some("{abort: {httpStatus: 418, percentage: {value: 100}}}"),
        ),
        &mut registry,
    );
    let client = client(&mesh);
    // tracing caches each callsite's interest globally when the callsite is first hit; other
    // tests hit the access log's callsite on other threads without a subscriber, and a
    // registration racing with `set_default` can cache "never". One request registers the
    // callsite for sure; recomputing the interest now includes this thread's subscriber.
    let _ = send(client.clone(), get("/warm-up", &[])).await;
    tracing::callsite::rebuild_interest_cache();
    capture.0.lock().expect("lock").clear();
    let resp = client
        .clone()
        .oneshot(get(
            "/fault?x=1",
            &[("user-agent", "e2e"), ("x-request-id", "rid-1")],
        ))
        .await
        .expect("infallible");
    assert!(
        capture.0.lock().expect("lock").is_empty(),
        "logged before the body ended"
    );
    let body = resp.into_body().collect().await.expect("a body").to_bytes();
    let lines = capture.0.lock().expect("lock").clone();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = &lines[0];
    assert!(
        line.contains(&format!(
            "\"GET /fault?x=1 HTTP/1.1\" 418 FI 0 {} ",
            body.len()
        )),
        "{line}"
    );
    assert!(
        line.ends_with("\"-\" \"e2e\" \"rid-1\" \"my-app\" \"-\""),
        "{line}"
    );
    assert!(line.starts_with('['), "{line}");
}

// ---- event counters -------------------------------------------------------------------------

#[tokio::test]
async fn an_ejection_is_counted_from_the_mesh_event_stream() {
    let bad = Backend::start("bad", &[]);
    let good = Backend::start("good", &[]);
    bad.fail_pattern(1, 1, 503);
    let mut sources = config(&bad, None);
    sources[0] = ConfigSource::yaml(
        "se.yaml",
        format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: my-app, namespace: default}}\nspec:\n  hosts: [my-app.default.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports:\n  - {{number: 80, name: http, protocol: HTTP}}\n  endpoints:\n  - {{address: 127.0.0.1, ports: {{http: {}}}}}\n  - {{address: 127.0.0.1, ports: {{http: {}}}}}\n",
            bad.port(),
            good.port()
        ),
    );
    sources.push(ConfigSource::yaml(
        "dr.yaml",
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: my-app, namespace: default}\nspec:\n  host: my-app.default.svc.cluster.local\n  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}, outlierDetection: {consecutive5xxErrors: 1, interval: 10s, baseEjectionTime: 30s, maxEjectionPercent: 50}}\n",
    ));
    let mut registry = prometheus_client::registry::Registry::default();
    let mesh = mesh(sources, &mut registry);
    let client = client(&mesh);
    // Round robin reaches the failing endpoint within two requests; one 5xx ejects it.
    let mut saw_503 = false;
    for _ in 0..4 {
        let (status, _, _) = send(client.clone(), get("/e", &[])).await;
        saw_503 |= status == StatusCode::SERVICE_UNAVAILABLE;
    }
    assert!(saw_503, "the failing endpoint answered");
    let line = "tower_mesh_outlier_ejections_total{cluster=\"outbound|80||my-app.default.svc.cluster.local\",reason=\"CONSECUTIVE_5XX\"} 1";
    // The counter task runs beside the requests: wait for it (generously).
    let mut text = String::new();
    for _ in 0..200 {
        text.clear();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        if text.contains(line) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(text.contains(line), "missing {line:?} in\n{text}");
    assert!(text.contains("tower_mesh_events_missed_total 0"), "{text}");
}
