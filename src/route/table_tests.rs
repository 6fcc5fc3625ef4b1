//! Tests of route-table compilation, selection and the route actions.

use super::*;
use crate::config::{ConfigSet, Loader, Spec};
use http::{HeaderMap, Method, StatusCode};
use http_body_util::BodyExt;

fn load(yaml: &str) -> ConfigSet {
    let set = Loader::new().load_str(yaml);
    assert!(!set.has_errors(), "{:?}", set.problems);
    set
}

fn vs_ref<'a>(res: &'a Resource) -> Option<VsRef<'a>> {
    match &res.spec {
        Spec::VirtualService(spec) => Some(VsRef {
            resource: res,
            spec,
        }),
        _ => None,
    }
}

/// Compiles the VirtualServices with `hosts` (in load order); the others are delegates.
fn compile(set: &ConfigSet) -> (RouteTable, Vec<RouteWarning>) {
    let roots: Vec<VsRef<'_>> = set
        .resources
        .iter()
        .filter_map(vs_ref)
        .filter(|v| !v.spec.hosts.is_empty())
        .collect();
    let find = |ns: &str, name: &str| {
        set.resources
            .iter()
            .filter(|r| r.metadata.namespace == ns && r.metadata.name == name)
            .find_map(vs_ref)
    };
    RouteTable::compile(
        &roots,
        &find,
        &mut RegexCache::new(),
        &ClusterDomain::default(),
    )
}

struct Req {
    method: Method,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    gateway: String,
}

impl Req {
    fn get(path: &str) -> Self {
        let (path, query) = match path.split_once('?') {
            Some((p, q)) => (p.to_string(), Some(q.to_string())),
            None => (path.to_string(), None),
        };
        Req {
            method: Method::GET,
            path,
            query,
            headers: HeaderMap::new(),
            gateway: "mesh".into(),
        }
    }
    fn header(mut self, name: &'static str, value: &'static str) -> Self {
        self.headers
            .insert(name, http::HeaderValue::from_static(value));
        self
    }
    fn view(&self) -> RequestView<'_> {
        RequestView {
            method: &self.method,
            scheme: "http",
            authority: "reviews:9080",
            path: &self.path,
            query: self.query.as_deref(),
            headers: &self.headers,
            port: 9080,
            source: None,
            gateway: &self.gateway,
            claims: None,
        }
    }
}

fn forward<'a>(m: &RouteMatch<'a>) -> &'a Forward {
    match m.route.action() {
        RouteAction::Forward(f) => f,
        other => panic!("expected a forward, got {other:?}"),
    }
}

/// The (route name, block index) selected for `req`.
fn selected(table: &RouteTable, req: &Req) -> Option<(String, usize)> {
    table
        .select(&req.view())
        .map(|m| (m.route.name().to_string(), m.matcher))
}

const TWO_VS: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: old, namespace: default}
spec:
  hosts: [reviews]
  http:
  - name: old-api
    match: [{uri: {prefix: /api}}, {headers: {x-old: {exact: "1"}}}]
    route: [{destination: {host: reviews, subset: v1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: new, namespace: default}
spec:
  hosts: [reviews]
  http:
  - name: new-api
    match: [{uri: {prefix: /api/v2}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - name: rest
    route: [{destination: {host: other.prod, port: {number: 8080}}}]
"#;

#[test]
fn first_match_wins_across_two_virtual_services_oldest_first() {
    let set = load(TWO_VS);
    let (table, warnings) = compile(&set);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(table.len(), 3);
    // /api/v2 also matches the older VS's /api prefix, which comes first.
    assert_eq!(
        selected(&table, &Req::get("/api/v2/x")),
        Some(("old-api".into(), 0))
    );
    assert_eq!(
        selected(&table, &Req::get("/x").header("x-old", "1")),
        Some(("old-api".into(), 1))
    );
    assert_eq!(selected(&table, &Req::get("/x")), Some(("rest".into(), 0)));
    let m = table.select(&Req::get("/x").view());
    let Some(m) = m else { panic!("no match") };
    let d = forward(&m).destinations().pick(0);
    assert_eq!(&**d.host(), "other.prod");
    assert_eq!(d.port(), Some(8080));
    assert_eq!(m.route.provenance().name, "new");
    let m = table.select(&Req::get("/api").view());
    let Some(m) = m else { panic!("no match") };
    let d = forward(&m).destinations().pick(0);
    assert_eq!(&**d.host(), "reviews.default.svc.cluster.local");
    assert_eq!(d.subset().map(|s| &**s), Some("v1"));
}

#[test]
fn routes_after_a_catch_all_are_dropped() {
    let set = load(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: r, namespace: default}
spec:
  hosts: [reviews]
  gateways: [mesh, edge]
  http:
  - name: mesh-only
    match: [{uri: {prefix: /a}, gateways: [mesh]}]
    route: [{destination: {host: a}}]
  - name: all-mesh
    match: [{gateways: [mesh]}]
    route: [{destination: {host: b}}]
  - name: both
    match: [{uri: {prefix: /c}}]
    route: [{destination: {host: c}}]
  - name: catch
    route: [{destination: {host: d}}]
  - name: dead
    match: [{uri: {prefix: /e}}]
    route: [{destination: {host: e}}]
"#,
    );
    let (table, warnings) = compile(&set);
    let names: Vec<&str> = table.routes().iter().map(|r| r.name()).collect();
    // `both` and `catch` survive for the `edge` gateway only; `dead` is never reached.
    assert_eq!(names, ["mesh-only", "all-mesh", "both", "catch"]);
    assert_eq!(warnings.len(), 1);
    assert_eq!(warnings[0].kind, RouteWarningKind::Unreachable);
    assert_eq!(warnings[0].route, "http[4]");
    assert_eq!(
        selected(&table, &Req::get("/c")),
        Some(("all-mesh".into(), 0))
    );
    let mut edge = Req::get("/c");
    edge.gateway = "default/edge".into();
    assert_eq!(selected(&table, &edge), Some(("both".into(), 0)));
    edge.path = "/e".into();
    assert_eq!(selected(&table, &edge), Some(("catch".into(), 0)));
}

const DELEGATE: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: root, namespace: default}
spec:
  hosts: [reviews]
  http:
  - name: prod
    match: [{uri: {prefix: /prod}, headers: {x-env: {exact: prod}}}]
    delegate: {name: prod-routes, namespace: team}
    timeout: 3s
    rewrite: {uri: /inner}
  - name: gone
    match: [{uri: {prefix: /missing}}]
    delegate: {name: nope}
  - name: fallback
    route: [{destination: {host: fallback}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: prod-routes, namespace: team}
spec:
  http:
  - name: v2
    match: [{uri: {prefix: /prod/v2}, name: v2m}]
    route: [{destination: {host: reviews, subset: v2}}]
    timeout: 1s
  - name: rest
    route: [{destination: {host: reviews, subset: v1}}]
"#;

#[test]
fn delegate_matches_are_anded_with_the_root_match() {
    let set = load(DELEGATE);
    let (table, warnings) = compile(&set);
    let names: Vec<&str> = table.routes().iter().map(|r| r.name()).collect();
    assert_eq!(names, ["prod-v2", "prod-rest", "fallback"]);
    // Root header AND delegate uri.
    let hit = Req::get("/prod/v2/x").header("x-env", "prod");
    assert_eq!(selected(&table, &hit), Some(("prod-v2".into(), 0)));
    assert_eq!(
        selected(&table, &Req::get("/prod/v2/x")),
        Some(("fallback".into(), 0))
    );
    let rest = Req::get("/prod/other").header("x-env", "prod");
    assert_eq!(selected(&table, &rest), Some(("prod-rest".into(), 0)));
    // The delegate's own destinations are expanded in ITS namespace; provenance of both.
    let m = table.select(&hit.view());
    let Some(m) = m else { panic!("no match") };
    assert_eq!(
        &**forward(&m).destinations().pick(0).host(),
        "reviews.team.svc.cluster.local"
    );
    assert_eq!(m.route.provenance().name, "prod-routes");
    assert_eq!(
        m.route.root_provenance().map(|p| p.name.as_str()),
        Some("root")
    );
    assert_eq!(m.route.match_name(0), "v2m");
    // Own timeout kept; the root's timeout and rewrite inherited where the delegate has none.
    assert_eq!(m.route.timeout(), Some(Duration::from_secs(1)));
    assert_eq!(table.routes()[1].timeout(), Some(Duration::from_secs(3)));
    // The rewrite replaces the innermost matched prefix (the delegate's `/prod/v2`).
    let rw = forward(&m).rewrite();
    let Some(rw) = rw else {
        panic!("rewrite inherited")
    };
    assert_eq!(
        rw.apply_path(&m, "/prod/v2/x", None).as_deref(),
        Some("/inner/x")
    );
    // The missing delegate drops its route, with a warning.
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(
        warnings[0].kind,
        RouteWarningKind::DelegateNotFound {
            namespace: "default".into(),
            name: "nope".into()
        }
    );
    assert_eq!(
        selected(&table, &Req::get("/missing")),
        Some(("fallback".into(), 0))
    );
}

#[test]
fn a_delegate_that_delegates_again_is_refused() {
    let set = load(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: root, namespace: default}
spec:
  hosts: [reviews]
  http:
  - delegate: {name: d1}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: d1, namespace: default}
spec:
  http:
  - delegate: {name: d2}
  - name: ok
    route: [{destination: {host: x}}]
"#,
    );
    let (table, warnings) = compile(&set);
    assert_eq!(table.len(), 1);
    assert_eq!(table.routes()[0].name(), "ok");
    assert_eq!(warnings.len(), 1);
    assert_eq!(warnings[0].kind, RouteWarningKind::NestedDelegate);
    assert_eq!(warnings[0].source.name, "d1");
}

fn one_route(yaml_route: &str) -> (RouteTable, Vec<RouteWarning>) {
    let yaml = format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: r, namespace: default}}
spec:
  hosts: [reviews]
  http:
{yaml_route}"
    );
    let set = Loader::new().load_str(&yaml);
    assert!(!set.has_errors(), "{:?}", set.problems);
    compile(&set)
}

#[test]
fn weights_zero_single_and_relative_with_exact_roll_boundaries() {
    let (t, _) = one_route(
        "  - route:
    - {destination: {host: a}, weight: 10}
    - {destination: {host: zero}, weight: 0}
    - {destination: {host: b}, weight: 30}
    - {destination: {host: c}, weight: 60}
",
    );
    let Some(RouteAction::Forward(f)) = t.routes().first().map(|r| r.action()) else {
        panic!("forward route");
    };
    let w = f.destinations();
    assert_eq!(w.len(), 3);
    assert_eq!(w.total(), 100);
    let host = |roll| {
        w.pick(roll)
            .host()
            .split('.')
            .next()
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(host(0), "a");
    assert_eq!(host(9), "a");
    assert_eq!(host(10), "b");
    assert_eq!(host(39), "b");
    assert_eq!(host(40), "c");
    assert_eq!(host(99), "c");
    assert_eq!(host(u64::MAX), "c");
    let mut rng = <rand::rngs::SmallRng as rand::SeedableRng>::seed_from_u64(7);
    let mut counts = [0usize; 3];
    for _ in 0..1000 {
        match w.pick_with(&mut rng).weight() {
            10 => counts[0] += 1,
            30 => counts[1] += 1,
            60 => counts[2] += 1,
            other => panic!("picked weight {other}"),
        }
    }
    assert!(counts.iter().all(|c| *c > 0), "{counts:?}");

    // A single destination gets everything whatever its weight.
    let (t, _) = one_route("  - route: [{destination: {host: only}, weight: 5}]\n");
    let Some(RouteAction::Forward(f)) = t.routes().first().map(|r| r.action()) else {
        panic!("forward route");
    };
    assert_eq!(f.destinations().total(), 1);
    assert_eq!(f.destinations().pick(123).weight(), 5);
}

#[test]
fn all_zero_weights_share_equally_without_panicking() {
    let mk = |h: &str| {
        let mut w = Vec::new();
        RouteDestination::compile(
            &crate::config::virtual_service::HttpRouteDestination {
                destination: Some(crate::config::virtual_service::Destination {
                    host: h.into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            "ns",
            &ClusterDomain::default(),
            &mut w,
        )
    };
    let dests: Vec<_> = ["a", "b"].into_iter().filter_map(mk).collect();
    let Some(w) = WeightedDestinations::new(dests) else {
        panic!("two destinations");
    };
    assert_eq!(w.total(), 2);
    assert_eq!(&**w.pick(0).host(), "a.ns.svc.cluster.local");
    assert_eq!(&**w.pick(1).host(), "b.ns.svc.cluster.local");
    assert!(WeightedDestinations::new(Vec::new()).is_none());
}

fn forward_rewrite(route: &str, req: &Req) -> Option<String> {
    let (t, w) = one_route(route);
    assert!(w.is_empty(), "{w:?}");
    let m = t.select(&req.view())?;
    forward(&m)
        .rewrite()?
        .apply_path(&m, &req.path, req.query.as_deref())
}

#[test]
fn rewrite_prefix_replaces_only_the_matched_prefix_and_keeps_the_query() {
    let r = "  - match: [{uri: {prefix: /api/v1}}]
    rewrite: {uri: /v2}
    route: [{destination: {host: a}}]
";
    assert_eq!(
        forward_rewrite(r, &Req::get("/api/v1/users?id=3")).as_deref(),
        Some("/v2/users?id=3")
    );
    // Unchanged path: None.
    let r = "  - match: [{uri: {prefix: /same}}]
    rewrite: {uri: /same}
    route: [{destination: {host: a}}]
";
    assert_eq!(forward_rewrite(r, &Req::get("/same/x")), None);
}

#[test]
fn rewrite_exact_and_regex_matches_replace_the_whole_path() {
    let r = "  - match: [{uri: {exact: /old}}, {uri: {regex: '/r/[0-9]+'}}]
    rewrite: {uri: /new}
    route: [{destination: {host: a}}]
";
    assert_eq!(
        forward_rewrite(r, &Req::get("/old?q")).as_deref(),
        Some("/new?q")
    );
    assert_eq!(
        forward_rewrite(r, &Req::get("/r/42")).as_deref(),
        Some("/new")
    );
    // No uri condition: Istio's `prefix: /`, so only the leading `/` is replaced.
    let r = "  - rewrite: {uri: /base/}
    route: [{destination: {host: a}}]
";
    assert_eq!(
        forward_rewrite(r, &Req::get("/x")).as_deref(),
        Some("/base/x")
    );
}

#[test]
fn uri_regex_rewrite_replaces_every_match_with_captures() {
    let r = r"  - rewrite:
      uriRegexRewrite: {match: '/(\w+)/(\d+)', rewrite: '/\2/\1'}
      authority: new.example
    route: [{destination: {host: a}}]
";
    assert_eq!(
        forward_rewrite(r, &Req::get("/ab/12/cd/34?k=v")).as_deref(),
        Some("/12/ab/34/cd?k=v")
    );
    let (t, _) = one_route(r);
    let m = t.select(&Req::get("/").view());
    let Some(m) = m else { panic!("no match") };
    let a = forward(&m).rewrite().and_then(Rewrite::authority);
    assert_eq!(a.map(|v| v.as_bytes()), Some(&b"new.example"[..]));
}

fn redirect_location(route: &str, uri: &str, host: Option<&str>, listener: u16) -> (u16, String) {
    let (t, w) = one_route(route);
    assert!(w.is_empty(), "{w:?}");
    let mut b = http::Request::builder().uri(uri);
    if let Some(h) = host {
        b = b.header("host", h);
    }
    let Ok(req) = b.body(()) else {
        panic!("bad request")
    };
    let (parts, ()) = req.into_parts();
    let r = Req::get(parts.uri.path());
    let m = t.select(&r.view());
    let Some(m) = m else { panic!("no match") };
    let RouteAction::Redirect(rd) = m.route.action() else {
        panic!("redirect expected")
    };
    let resp = rd.response(&m, &parts, listener);
    let loc = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (resp.status().as_u16(), loc)
}

#[test]
fn redirect_uri_authority_scheme_port_and_code() {
    let r = "  - redirect: {uri: /new, authority: other.example, scheme: https, port: 8443, redirectCode: 308}\n";
    assert_eq!(
        redirect_location(r, "/old?x=1", Some("reviews:9080"), 80),
        (308, "https://other.example:8443/new?x=1".into())
    );
    // Defaults: 301, request scheme (http), host and port kept, path kept.
    let r = "  - redirect: {authority: b.example}\n";
    assert_eq!(
        redirect_location(r, "http://a.example:8080/p?q", None, 80),
        (301, "http://b.example/p?q".into())
    );
    let r = "  - redirect: {uri: /x}\n";
    assert_eq!(
        redirect_location(r, "/p", Some("a.example:8080"), 80),
        (301, "http://a.example:8080/x".into())
    );
}

#[test]
fn redirect_prefix_rewrite_and_derive_port() {
    let r = "  - match: [{uri: {prefix: /v1}}]
    redirect: {prefixRewrite: /v2, derivePort: FROM_REQUEST_PORT, redirectCode: 302}
";
    assert_eq!(
        redirect_location(r, "/v1/items?a=b", Some("a.example"), 9090),
        (302, "http://a.example:9090/v2/items?a=b".into())
    );
    let r = "  - redirect: {derivePort: FROM_PROTOCOL_DEFAULT, scheme: https}\n";
    assert_eq!(
        redirect_location(r, "/p", Some("a.example:8080"), 8080),
        (301, "https://a.example/p".into())
    );
    // Default ports are stripped.
    let r = "  - redirect: {port: 443, scheme: https}\n";
    assert_eq!(
        redirect_location(r, "/p", Some("a.example"), 80),
        (301, "https://a.example/p".into())
    );
    let r = "  - redirect: {port: 80}\n";
    assert_eq!(
        redirect_location(r, "/p", Some("a.example:9"), 80),
        (301, "http://a.example/p".into())
    );
}

#[test]
fn unsupported_redirect_code_drops_the_route() {
    let (t, w) = one_route("  - redirect: {uri: /x, redirectCode: 300}\n");
    assert!(t.is_empty());
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].kind, RouteWarningKind::InvalidStatus(300));
}

async fn direct(route: &str) -> (StatusCode, Option<String>, Vec<u8>) {
    let (t, w) = one_route(route);
    assert!(w.is_empty(), "{w:?}");
    let m = t.select(&Req::get("/").view());
    let Some(m) = m else { panic!("no match") };
    let RouteAction::DirectResponse(d) = m.route.action() else {
        panic!("direct response expected")
    };
    let resp = d.response();
    let status = resp.status();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes().to_vec())
        .unwrap_or_default();
    (status, ct, body)
}

#[tokio::test]
async fn direct_response_string_base64_and_empty() {
    assert_eq!(
        direct("  - directResponse: {status: 503, body: {string: unavailable}}\n").await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Some("text/plain".into()),
            b"unavailable".to_vec()
        )
    );
    assert_eq!(
        direct("  - directResponse: {status: 200, body: {bytes: 'AAH/aGk='}}\n").await,
        (
            StatusCode::OK,
            Some("text/plain".into()),
            vec![0, 1, 255, b'h', b'i']
        )
    );
    assert_eq!(
        direct("  - directResponse: {status: 404}\n").await,
        (StatusCode::NOT_FOUND, None, Vec::new())
    );
}

#[test]
fn invalid_base64_drops_the_route() {
    let (t, w) = one_route("  - directResponse: {status: 200, body: {bytes: 'no!'}}\n");
    assert!(t.is_empty());
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].kind, RouteWarningKind::InvalidBase64);
}

#[test]
fn route_and_destination_header_ops_are_compiled_and_ordered() {
    let (t, w) = one_route(
        "  - headers:
      request: {add: {x-v: route}, set: {host: route.example}}
      response: {set: {x-resp: r}}
    route:
    - destination: {host: a}
      headers: {request: {set: {x-v: dest, ':authority': dest.example}}}
",
    );
    assert!(w.is_empty(), "{w:?}");
    let r = &t.routes()[0];
    let RouteAction::Forward(f) = r.action() else {
        panic!("forward")
    };
    let d = f.destinations().pick(0);
    let mut h = HeaderMap::new();
    r.headers().apply_request(&mut h);
    d.headers().apply_request(&mut h);
    assert_eq!(h.get_all("x-v").iter().count(), 1);
    assert_eq!(h.get("x-v").map(|v| v.as_bytes()), Some(&b"dest"[..]));
    assert!(h.get("host").is_none());
    assert_eq!(
        r.headers().authority().map(|v| v.as_bytes()),
        Some(&b"route.example"[..])
    );
    assert_eq!(
        d.headers().authority().map(|v| v.as_bytes()),
        Some(&b"dest.example"[..])
    );
}

#[test]
fn route_data_timeout_retries_fault_mirrors_cors() {
    let (t, w) = one_route(
        "  - timeout: 2s
    retries: {attempts: 3, retryOn: 5xx}
    fault: {abort: {httpStatus: 503, percentage: {value: 10}}}
    mirror: {host: shadow}
    mirrorPercentage: {value: 5}
    corsPolicy: {allowOrigins: [{exact: 'https://a.example'}]}
    route: [{destination: {host: a}}]
",
    );
    assert!(w.is_empty(), "{w:?}");
    let r = &t.routes()[0];
    assert_eq!(r.timeout(), Some(Duration::from_secs(2)));
    assert_eq!(r.retries().and_then(|x| x.attempts), Some(3));
    assert!(r.fault().and_then(|f| f.abort.as_ref()).is_some());
    assert_eq!(r.mirrors().len(), 1);
    assert_eq!(&**r.mirrors()[0].host(), "shadow.default.svc.cluster.local");
    assert_eq!(r.mirrors()[0].percentage().value(), 5.0);
    assert!(r.cors().is_some());
}

#[test]
fn no_route_gives_none() {
    let (t, _) = one_route(
        "  - match: [{uri: {exact: /only}}]
    route: [{destination: {host: a}}]
",
    );
    assert!(t.select(&Req::get("/other").view()).is_none());
    assert!(t.select(&Req::get("/only").view()).is_some());
}

#[test]
fn segment_index_keeps_first_match_order() {
    let mut routes = String::new();
    let uris = [
        "{prefix: /a/}",
        "{prefix: /a}",
        "{exact: /b}",
        "{exact: /a/x}",
        "{regex: '/a/.*'}",
        "{prefix: /B/, }",
        "{prefix: /b/}",
        "{prefix: ''}",
    ];
    for i in 0..24 {
        let uri = uris[i % uris.len()];
        let extra = if i % 3 == 0 {
            ", ignoreUriCase: true"
        } else {
            ""
        };
        let header = if i % 2 == 0 { "x-a" } else { "x-b" };
        let _ = std::fmt::Write::write_fmt(
            &mut routes,
            format_args!(
                "  - name: r{i}
    match: [{{uri: {uri}{extra}, headers: {{{header}: {{exact: '{}'}}}}}}, {{headers: {{x-any: {{exact: '{}'}}}}}}]
    route: [{{destination: {{host: a}}}}]
",
                i % 4,
                i % 5
            ),
        );
    }
    let (t, w) = one_route(&routes);
    assert!(w.is_empty(), "{w:?}");
    assert!(t.index.is_some());
    let paths = [
        "/a/", "/a", "/ax", "/a/x", "/b", "/b/", "/B/q", "/c", "", "*",
    ];
    let mut checked = 0;
    for path in paths {
        for i in 0..6 {
            for (name, v) in [("x-a", i), ("x-b", i), ("x-any", i)] {
                let mut r = Req::get("/");
                r.path = path.to_string();
                let value = v.to_string();
                if let Ok(v) = http::HeaderValue::from_str(&value)
                    && let Ok(n) = http::HeaderName::from_bytes(name.as_bytes())
                {
                    r.headers.insert(n, v);
                }
                let got = t.select(&r.view()).map(|m| (m.route.name(), m.matcher));
                let want = t
                    .select_linear(&r.view())
                    .map(|m| (m.route.name(), m.matcher));
                assert_eq!(got, want, "path {path:?} {name}: {value}");
                checked += usize::from(want.is_some());
            }
        }
    }
    assert!(checked > 40, "{checked}");
}

/// A large mesh holds one `CompiledRoute`, `MatchBlock` and `HttpMatcher` per route and one
/// `RouteDestination` per destination: keep them small (the empty `HeaderOps` of most
/// routes and destinations is a null pointer).
#[test]
#[cfg(target_pointer_width = "64")]
fn per_route_types_stay_small() {
    use std::mem::size_of;
    assert!(
        size_of::<CompiledRoute>() <= 144,
        "{}",
        size_of::<CompiledRoute>()
    );
    assert!(size_of::<MatchBlock>() <= 56, "{}", size_of::<MatchBlock>());
    assert!(
        size_of::<HttpMatcher>() <= 96,
        "{}",
        size_of::<HttpMatcher>()
    );
    assert!(
        size_of::<RouteDestination>() <= 48,
        "{}",
        size_of::<RouteDestination>()
    );
    assert_eq!(size_of::<HeaderOps>(), size_of::<usize>());
}

/// Hosts, subsets and gateway lists are shared through the compile cache: within a table
/// and across the tables of one snapshot.
#[test]
fn hosts_subsets_and_gateways_are_shared_through_the_cache() {
    let set = load(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: a, namespace: default}
spec:
  hosts: [a]
  http:
  - match: [{uri: {prefix: /x}}]
    route: [{destination: {host: reviews, subset: v1}}]
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 50}
    - {destination: {host: REVIEWS.default.svc.cluster.local, subset: v2}, weight: 50}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: b, namespace: default}
spec:
  hosts: [b]
  http:
  - route: [{destination: {host: reviews, subset: v1}}]
",
    );
    let vss: Vec<VsRef<'_>> = set.resources.iter().filter_map(vs_ref).collect();
    let mut cache = RegexCache::new();
    let domain = ClusterDomain::default();
    let mut tables = Vec::new();
    for vs in &vss {
        let (table, w) = RouteTable::compile(&[*vs], &|_, _| None, &mut cache, &domain);
        assert!(w.is_empty(), "{w:?}");
        tables.push(table);
    }
    let dests: Vec<&RouteDestination> = tables
        .iter()
        .flat_map(|t| t.routes())
        .flat_map(|r| match r.action() {
            RouteAction::Forward(f) => f.destinations().iter().collect::<Vec<_>>(),
            _ => Vec::new(),
        })
        .collect();
    assert_eq!(dests.len(), 4);
    let host = dests[0].host();
    assert_eq!(&**host, "reviews.default.svc.cluster.local");
    for d in &dests {
        assert!(Arc::ptr_eq(d.host(), host), "{d:?}");
        assert!(d.headers().is_empty());
    }
    let v1 = dests[0].subset().expect("v1");
    assert!(Arc::ptr_eq(dests[1].subset().expect("v1"), v1));
    assert!(Arc::ptr_eq(dests[3].subset().expect("v1"), v1));
    assert_eq!(dests[2].subset().map(|s| &**s), Some("v2"));

    let matchers: Vec<&HttpMatcher> = tables
        .iter()
        .flat_map(|t| t.routes())
        .flat_map(|r| r.blocks())
        .flat_map(|b| b.matchers())
        .collect();
    assert_eq!(matchers.len(), 3);
    for m in &matchers {
        assert_eq!(m.gateways(), ["mesh"]);
        assert!(std::ptr::eq(m.gateways(), matchers[0].gateways()));
    }
    // Regexes are what `len` counts; interned strings are not.
    assert!(cache.is_empty());
}
