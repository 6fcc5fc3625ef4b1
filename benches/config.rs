//! Parse + validate of 10,000 generated Istio resources, against a baseline of YAML parsing
//! alone measured in the same run.
//!
//! Run: `cargo bench --bench config`.

use std::fmt::Write;
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tower_mesh::config::Loader;
use tower_mesh::validate::validate;
use tower_mesh::yaml::{Limits, parse_stream};

/// 10,000 resources: for each of 2,000 services a VirtualService (80/20 split with retries),
/// a DestinationRule (two subsets, pool limits, outlier detection), a ServiceEntry, an
/// AuthorizationPolicy and a PeerAuthentication.
fn generate(services: usize) -> String {
    let mut s = String::new();
    for i in 0..services {
        let ns = format!("ns{}", i % 50);
        let _ = write!(
            s,
            "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: svc{i}, namespace: {ns}}}
spec:
  hosts: [svc{i}]
  http:
  - name: api
    match:
    - uri: {{prefix: /api/v1}}
      headers: {{x-user: {{regex: \"user-[0-9]+\"}}}}
    route:
    - destination: {{host: svc{i}, subset: v1}}
      weight: 80
    - destination: {{host: svc{i}, subset: v2}}
      weight: 20
    timeout: 2s
    retries: {{attempts: 3, perTryTimeout: 500ms, retryOn: \"5xx,connect-failure\"}}
  - route:
    - destination: {{host: svc{i}, subset: v1}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: svc{i}, namespace: {ns}}}
spec:
  host: svc{i}
  trafficPolicy:
    connectionPool:
      tcp: {{maxConnections: 100, connectTimeout: 1s}}
      http: {{http1MaxPendingRequests: 64, http2MaxRequests: 256}}
    outlierDetection: {{consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 30s}}
  subsets:
  - name: v1
    labels: {{version: v1}}
  - name: v2
    labels: {{version: v2}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: svc{i}, namespace: {ns}}}
spec:
  hosts: [svc{i}.{ns}.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints:
  - {{address: 10.0.{a}.{b}, labels: {{version: v1}}}}
  - {{address: 10.1.{a}.{b}, labels: {{version: v2}}}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: svc{i}, namespace: {ns}}}
spec:
  selector: {{matchLabels: {{app: svc{i}}}}}
  rules:
  - from: [{{source: {{principals: [cluster.local/ns/{ns}/sa/frontend]}}}}]
    to: [{{operation: {{methods: [GET], paths: [/api/*]}}}}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: svc{i}, namespace: {ns}}}
spec:
  selector: {{matchLabels: {{app: svc{i}}}}}
  mtls: {{mode: STRICT}}
---
",
            a = i / 250,
            b = i % 250 + 1,
        );
    }
    s
}

fn bench(c: &mut Criterion) {
    let text = generate(2_000);
    let set = Loader::new().load_str(&text);
    assert_eq!(set.resources.len(), 10_000);
    let report = validate(&set);
    assert!(!report.has_errors(), "{:?}", report.errors().next());

    let mut g = c.benchmark_group("config_10k_resources");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    g.throughput(Throughput::Elements(10_000));
    g.bench_function("baseline_yaml_parse_only", |b| {
        b.iter(|| parse_stream(black_box(&text), &Limits::default()))
    });
    g.bench_function("load_and_validate", |b| {
        b.iter(|| validate(&Loader::new().load_str(black_box(&text))))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
