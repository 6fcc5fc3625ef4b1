//! Route selection and route-table compilation.
//!
//! * `select/*`: routes of one uri prefix plus one exact header each; 1 route; 100 routes with
//!   the winner at index 50 (also with prefixes the segment index cannot use); 100 routes and
//!   a miss; 10,000 hosts × 10 routes (host lookup
//!   with `HostIndex::resolve_authority`, then `RouteTable::select`).
//! * `compile/10k_vs_10k_dr`: 10,000 VirtualServices (10 routes each, 10% with regex header
//!   matches from 36 patterns) and 10,000 DestinationRules, already loaded: grouping by host,
//!   `RouteTable::compile` per host into a `HostIndex`, and `DestinationRuleIndex::build`.
//!   Loading the YAML is not timed.
//!
//! Memory: before the benches, the bench prints what the compiled route tables of the 10k
//! config add over the loaded config, read from `/proc/self/status` (`VmRSS`, resident, and
//! `VmHWM`, peak) before and after building them: once for the first build (which includes
//! the compile's transient allocations and may reuse memory the loader freed), and once for
//! a second, identical set of tables built while the first is still alive (the steady-state
//! cost of one more copy). The crate forbids `unsafe`, so a counting `#[global_allocator]`
//! is not available; the resident-set increments are the measure. Peak memory (`VmHWM`) is
//! printed again after the compile benches.
//!
//! Run: `cargo bench --bench routing` (`-- --quick` for a short run).

use std::fmt::Write;
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method};
use tower_mesh::config::{ConfigSet, Loader, Resource, Spec};
use tower_mesh::route::{RegexCache, RequestView, RouteTable, VsRef};
use tower_mesh::snapshot::{ClusterDomain, DestinationRuleIndex, HostIndex, expand_host};

const HOSTS: usize = 10_000;
const ROUTES_PER_HOST: usize = 10;

/// One VirtualService for `svc{i}` in `ns{i % 50}` with `routes` routes: route `r` matches
/// uri prefix `/svc{r}/` and header `x-route: r{r}` (every 10th VS: a regex header instead).
fn write_vs(s: &mut String, i: usize, routes: usize) {
    write_vs_with(s, i, routes, "/");
}

/// [`write_vs`] with the uri prefixes ending in `end` (`/svc{r}{end}`): with `/` the table's
/// segment index can skip routes; with `-` (`/svc50-` also matches `/svc50-x`) it cannot.
fn write_vs_with(s: &mut String, i: usize, routes: usize, end: &str) {
    let ns = i % 50;
    let _ = write!(
        s,
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: svc{i}, namespace: ns{ns}}}
spec:
  hosts: [svc{i}]
  http:
"
    );
    for r in 0..routes {
        let header = if i.is_multiple_of(10) {
            // A few dozen distinct patterns across the whole config.
            format!("{{regex: \"r{r}-(v[0-9]+|p{})\"}}", (i / 10) % 36)
        } else {
            format!("{{exact: r{r}}}")
        };
        let _ = write!(
            s,
            "  - name: route{r}
    match:
    - uri: {{prefix: /svc{r}{end}}}
      headers: {{x-route: {header}}}
    route:
    - destination: {{host: svc{i}, subset: v1}}
      weight: 90
    - destination: {{host: svc{i}, subset: v2}}
      weight: 10
"
        );
    }
    s.push_str("---\n");
}

fn write_dr(s: &mut String, i: usize) {
    let ns = i % 50;
    let _ = write!(
        s,
        "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: svc{i}, namespace: ns{ns}}}
spec:
  host: svc{i}
  trafficPolicy:
    connectionPool: {{tcp: {{maxConnections: 100}}}}
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
"
    );
}

fn load(yaml: &str) -> ConfigSet {
    let set = Loader::new().load_str(yaml);
    assert!(!set.has_errors(), "generated config has errors");
    set
}

fn vs_refs(set: &ConfigSet) -> Vec<VsRef<'_>> {
    set.resources
        .iter()
        .filter_map(|res| match &res.spec {
            Spec::VirtualService(spec) => Some(VsRef {
                resource: res,
                spec,
            }),
            _ => None,
        })
        .collect()
}

/// Groups VirtualServices by expanded host (oldest first) and compiles one table per host.
fn compile_hosts(set: &ConfigSet, domain: &ClusterDomain) -> HostIndex<RouteTable> {
    let mut by_host: HostIndex<Vec<VsRef<'_>>> = HostIndex::new();
    for vs in vs_refs(set) {
        for host in &vs.spec.hosts {
            let fqdn = expand_host(host, &vs.resource.metadata.namespace, domain);
            by_host.get_or_insert_with(&fqdn, Vec::new).push(vs);
        }
    }
    let mut cache = RegexCache::new();
    let mut tables = HostIndex::new();
    for (pattern, vss) in by_host.iter() {
        let (table, _warnings) = RouteTable::compile(vss, &|_, _| None, &mut cache, domain);
        tables.insert(pattern, table);
    }
    tables
}

fn single_table(routes: usize, end: &str) -> RouteTable {
    let mut s = String::new();
    write_vs_with(&mut s, 1, routes, end);
    let set = load(&s);
    let refs = vs_refs(&set);
    let (table, warnings) = RouteTable::compile(
        &refs,
        &|_, _| None,
        &mut RegexCache::new(),
        &ClusterDomain::default(),
    );
    assert!(warnings.is_empty());
    assert_eq!(table.len(), routes);
    table
}

struct Req {
    path: String,
    headers: HeaderMap,
}

impl Req {
    fn new(path: &str, route: &str) -> Self {
        let mut headers = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(route) {
            headers.insert("x-route", v);
        }
        headers.insert("user-agent", HeaderValue::from_static("bench"));
        headers.insert("accept", HeaderValue::from_static("*/*"));
        Req {
            path: path.to_string(),
            headers,
        }
    }

    fn view<'a>(&'a self, authority: &'a str) -> RequestView<'a> {
        RequestView {
            method: &Method::GET,
            scheme: "http",
            authority,
            path: &self.path,
            query: None,
            headers: &self.headers,
            port: 80,
            source: None,
            gateway: "mesh",
            claims: None,
        }
    }
}

/// A `/proc/self/status` field in KiB (`VmRSS`, `VmHWM`); `None` off Linux.
fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn peak_memory() -> String {
    status_kib("VmHWM").map_or_else(|| "unknown".into(), |k| format!("{k} kB"))
}

/// Resident and peak memory now, in KiB.
#[derive(Clone, Copy)]
struct Mem {
    rss: Option<u64>,
    hwm: Option<u64>,
}

impl Mem {
    fn now() -> Self {
        Mem {
            rss: status_kib("VmRSS"),
            hwm: status_kib("VmHWM"),
        }
    }

    /// `rss +X MB (now Y MB), peak +X MB (now Y MB)` since `before`.
    fn since(self, before: Mem) -> String {
        let mb = |k: u64| k as f64 / 1024.0;
        let part = |name: &str, now: Option<u64>, then: Option<u64>| match (now, then) {
            (Some(n), Some(t)) => format!("{name} {:+.1} MB (now {:.1} MB)", mb(n) - mb(t), mb(n)),
            _ => format!("{name} unknown"),
        };
        format!(
            "{}, {}",
            part("VmRSS", self.rss, before.rss),
            part("VmHWM", self.hwm, before.hwm)
        )
    }
}

fn select(c: &mut Criterion) {
    let mut g = c.benchmark_group("select");
    let one = single_table(1, "/");
    let req = Req::new("/svc0/items", "r0");
    assert!(one.select(&req.view("svc1")).is_some());
    g.bench_function("1_route", |b| {
        b.iter(|| black_box(one.select(black_box(&req.view("svc1")))).map(|m| m.matcher))
    });

    let hundred = single_table(100, "/");
    let hit = Req::new("/svc50/items", "r50");
    let m = hundred.select(&hit.view("svc1"));
    assert_eq!(m.map(|m| m.route.name()), Some("route50"));
    g.bench_function("100_routes_winner_at_50", |b| {
        b.iter(|| black_box(hundred.select(black_box(&hit.view("svc1")))).map(|m| m.matcher))
    });
    let miss = Req::new("/nowhere/items", "r50");
    assert!(hundred.select(&miss.view("svc1")).is_none());
    g.bench_function("100_routes_miss", |b| {
        b.iter(|| black_box(hundred.select(black_box(&miss.view("svc1")))).map(|m| m.matcher))
    });

    // The same without the index's help: every route before the winner is tried.
    let linear = single_table(100, "-");
    let hit = Req::new("/svc50-items", "r50");
    let m = linear.select(&hit.view("svc1"));
    assert_eq!(m.map(|m| m.route.name()), Some("route50"));
    g.bench_function("100_routes_winner_at_50_unindexed", |b| {
        b.iter(|| black_box(linear.select(black_box(&hit.view("svc1")))).map(|m| m.matcher))
    });
    g.finish();
}

fn big(c: &mut Criterion) {
    let mut yaml = String::with_capacity(HOSTS * 2_000);
    for i in 0..HOSTS {
        write_vs(&mut yaml, i, ROUTES_PER_HOST);
        write_dr(&mut yaml, i);
    }
    let set = load(&yaml);
    drop(yaml);
    println!(
        "routing: {} resources loaded; peak memory (VmHWM) {}",
        set.resources.len(),
        peak_memory()
    );
    let domain = ClusterDomain::default();

    let loaded = Mem::now();
    let tables = compile_hosts(&set, &domain);
    let built = Mem::now();
    assert_eq!(tables.len(), HOSTS);
    println!(
        "routing: compiled tables ({HOSTS} hosts x {ROUTES_PER_HOST} routes), first build: {}",
        built.since(loaded)
    );
    let copy = compile_hosts(&set, &domain);
    println!(
        "routing: compiled tables, a second copy while the first is alive: {}",
        Mem::now().since(built)
    );
    assert_eq!(copy.len(), HOSTS);
    drop(copy);
    let req = Req::new("/svc5/items", "r5");
    let authority = "svc1234.ns34:80";
    let found = tables
        .resolve_authority(authority, "ns34", &domain)
        .and_then(|r| r.value.select(&req.view(authority)));
    assert_eq!(found.map(|m| m.route.name()), Some("route5"));
    c.bench_function("select/10k_hosts_x_10_routes", |b| {
        b.iter(|| {
            let r = tables.resolve_authority(black_box(authority), "ns34", &domain)?;
            r.value.select(&req.view(authority)).map(|m| m.matcher)
        })
    });
    println!(
        "routing: {} host tables built; peak memory (VmHWM) {}",
        tables.len(),
        peak_memory()
    );
    drop(tables);

    let mut g = c.benchmark_group("compile");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.bench_function("10k_vs_10k_dr", |b| {
        b.iter(|| {
            let tables = compile_hosts(&set, &domain);
            let drs = DestinationRuleIndex::build(set.resources.iter(), &domain);
            (tables.len(), drs.len())
        })
    });
    g.finish();
    println!(
        "routing: after compile benches, peak memory (VmHWM) {}",
        peak_memory()
    );
    let _: &[Resource] = &set.resources;
}

criterion_group!(benches, select, big);
criterion_main!(benches);
