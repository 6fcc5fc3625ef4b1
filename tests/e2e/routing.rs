//! Routing end to end: Istio YAML → `Mesh` → `MeshClient` → real loopback backends.
//!
//! Every test builds the same service, `my-app.default.svc.cluster.local` (ServiceEntry,
//! `resolution: STATIC`, ports 80 `http` and 8080 `http-alt`), with two endpoints — backend
//! `v1` and backend `v2`, labelled `version: v1` / `version: v2` — and a DestinationRule with
//! subsets `v1`, `v2` and `v3` (no endpoint carries `version: v3`). Then the VirtualService
//! under test. Routes name themselves in a response header (`x-route`), so a test reads
//! which route answered; the backend says who served it (`x-backend`) and what it received
//! (its JSON echo).
//!
//! The helpers here are shared by `reload.rs`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use tokio::task::JoinSet;
use tower::Service;
use tower_mesh::body::{self, MeshBody};
use tower_mesh::error::{FLAG_HEADER, LAYER_HEADER};
use tower_mesh::mesh::{MeshBuilder, OutboundPolicy};
use tower_mesh::{Mesh, MeshClient};

use crate::support::Backend;
use crate::support::client::Reply;

/// The service every test routes to.
pub(crate) const HOST: &str = "my-app.default.svc.cluster.local";

/// The response header each route sets to its own name.
pub(crate) const ROUTE_HEADER: &str = "x-route";

// ---- config ---------------------------------------------------------------------------------

/// The ServiceEntry of [`HOST`] (ports 80 and 8080, both served by each backend's one port)
/// with endpoints `v1` at `v1_port` and `v2` at `v2_port`, and its DestinationRule with
/// subsets `v1`, `v2` and `v3` (no endpoints) and `tls: DISABLE`: the backends are plaintext,
/// and the `scheme` match cases send `https://` URIs (without the rule the client would
/// originate TLS for them).
pub(crate) fn services_yaml(v1_port: u16, v2_port: u16) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: my-app, namespace: default}}
spec:
  hosts: [{HOST}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {{number: 80, name: http, protocol: HTTP}}
  - {{number: 8080, name: http-alt, protocol: HTTP}}
  endpoints:
  - {{address: 127.0.0.1, ports: {{http: {v1_port}, http-alt: {v1_port}}}, labels: {{version: v1}}}}
  - {{address: 127.0.0.1, ports: {{http: {v2_port}, http-alt: {v2_port}}}, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: my-app, namespace: default}}
spec:
  host: {HOST}
  trafficPolicy: {{tls: {{mode: DISABLE}}}}
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
  - {{name: v3, labels: {{version: v3}}}}
"#
    )
}

/// A VirtualService `name` in namespace `default` for host `my-app` with `routes` (each an
/// `http[]` entry as YAML, indented by two spaces; see [`route`]).
pub(crate) fn vs(name: &str, routes: &[String]) -> String {
    vs_with(name, "", routes)
}

/// [`vs`] with extra top-level spec lines (`extra`, e.g. `  gateways: [...]\n`).
pub(crate) fn vs_with(name: &str, extra: &str, routes: &[String]) -> String {
    format!(
        "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  hosts: [my-app]\n{extra}  http:\n{}",
        routes.concat()
    )
}

/// An `http[]` route `name` with the match list `matches` (flow YAML, e.g.
/// `[{uri: {exact: /a}}]`, or `""` for a catch-all), forwarding to subset `subset` and
/// setting `x-route: name` on the response.
pub(crate) fn route(name: &str, matches: &str, subset: &str) -> String {
    route_with(
        name,
        matches,
        &format!("route: [{{destination: {{host: my-app, subset: {subset}}}}}]"),
    )
}

/// An `http[]` route `name` with `matches` and the action/extra lines `body` (flow YAML, on
/// one line or several lines indented by four spaces).
pub(crate) fn route_with(name: &str, matches: &str, body: &str) -> String {
    let matches = if matches.is_empty() {
        String::new()
    } else {
        format!("    match: {matches}\n")
    };
    format!(
        "  - name: {name}\n{matches}    {body}\n    headers: {{response: {{set: {{{ROUTE_HEADER}: {name}}}}}}}\n"
    )
}

/// The catch-all: everything else goes to `v2` as route `fallback`.
pub(crate) fn fallback() -> String {
    route("fallback", "", "v2")
}

/// Two backends, a mesh over them, and its client.
pub(crate) struct Harness {
    pub v1: Backend,
    pub v2: Backend,
    pub mesh: Mesh,
    pub client: MeshClient,
}

impl Harness {
    /// Backends `v1` and `v2`, and a mesh (default settings) over the services and `vs`.
    pub(crate) fn start(vs: &str) -> Harness {
        Harness::start_with(vs, |b| b)
    }

    /// [`Harness::start`] with builder settings from `settings`.
    pub(crate) fn start_with(
        vs: &str,
        settings: impl FnOnce(MeshBuilder) -> MeshBuilder,
    ) -> Harness {
        let v1 = Backend::start("v1", &[("version", "v1")]);
        let v2 = Backend::start("v2", &[("version", "v2")]);
        let builder = Mesh::builder()
            .config_str("services.yaml", services_yaml(v1.port(), v2.port()))
            .config_str("vs.yaml", vs);
        let mesh = settings(builder)
            .build()
            .unwrap_or_else(|e| panic!("the test config is valid: {e}"));
        let client = mesh.client();
        Harness {
            v1,
            v2,
            mesh,
            client,
        }
    }

    /// `GET uri` through the mesh.
    pub(crate) async fn get(&self, uri: &str) -> Reply {
        self.call("GET", uri, &[]).await
    }

    /// `method uri` with `headers` through the mesh, read to the end.
    pub(crate) async fn call(&self, method: &str, uri: &str, headers: &[(&str, &str)]) -> Reply {
        send(&self.client, request(method, uri, headers))
            .await
            .unwrap_or_else(|e| panic!("{method} {uri}: response body failed: {e}"))
    }
}

/// A request with an empty body.
pub(crate) fn request(method: &str, uri: &str, headers: &[(&str, &str)]) -> Request<MeshBody> {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.body(body::empty())
        .unwrap_or_else(|e| panic!("a valid test request {method} {uri}: {e}"))
}

/// Sends `req` through `client` and reads the response to its end.
pub(crate) async fn send(
    client: &MeshClient,
    req: Request<MeshBody>,
) -> Result<Reply, tower_mesh::error::BoxError> {
    // The service's future is a concrete boxed future: awaiting it (rather than tower's
    // generic `oneshot`) keeps this function's future provably `Send` for `tokio::spawn`.
    let mut client = client.clone();
    let ready =
        std::future::poll_fn(|cx| Service::<Request<MeshBody>>::poll_ready(&mut client, cx));
    let resp = match ready.await {
        Ok(()) => match client.call(req).await {
            Ok(resp) => resp,
            Err(never) => match never {},
        },
        Err(never) => match never {},
    };
    let (parts, body) = resp.into_parts();
    let collected = body.collect().await?;
    let trailers = collected.trailers().cloned();
    Ok(Reply {
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        body: collected.to_bytes(),
        trailers,
    })
}

/// A response header as a string.
pub(crate) fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The route that answered (`x-route`).
pub(crate) fn route_of(reply: &Reply) -> Option<&str> {
    header(&reply.headers, ROUTE_HEADER)
}

/// The mesh's response flag (`x-tower-mesh-flag`).
pub(crate) fn flag_of(reply: &Reply) -> Option<&str> {
    reply.headers.get(FLAG_HEADER).and_then(|v| v.to_str().ok())
}

// ---- match kinds --------------------------------------------------------------------------------

/// One request and the route that must answer it.
struct Case {
    method: &'static str,
    uri: &'static str,
    headers: &'static [(&'static str, &'static str)],
    want: &'static str,
}

const fn case(method: &'static str, uri: &'static str, want: &'static str) -> Case {
    Case {
        method,
        uri,
        headers: &[],
        want,
    }
}

const fn with(
    uri: &'static str,
    headers: &'static [(&'static str, &'static str)],
    want: &'static str,
) -> Case {
    Case {
        method: "GET",
        uri,
        headers,
        want,
    }
}

/// Runs `cases` through `h`; every route but `fallback` forwards to `v1`, so the backend
/// must agree with the route. Collects every mismatch before failing.
async fn run_cases(h: &Harness, cases: &[Case]) {
    let mut wrong = Vec::new();
    for c in cases {
        let reply = h.call(c.method, c.uri, c.headers).await;
        let want_backend = if c.want == "fallback" { "v2" } else { "v1" };
        let got = (reply.status, route_of(&reply), reply.backend());
        if got != (StatusCode::OK, Some(c.want), Some(want_backend)) {
            wrong.push(format!(
                "{} {} {:?}: want route {} on {want_backend}, got {got:?} {}",
                c.method,
                c.uri,
                c.headers,
                c.want,
                String::from_utf8_lossy(&reply.body)
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} cases wrong:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
}

#[tokio::test]
async fn every_match_kind_routes_real_requests_positive_and_negative() {
    let config = vs(
        "matches",
        &[
            route("uri-exact", "[{uri: {exact: /exact}}]", "v1"),
            route("uri-prefix", "[{uri: {prefix: /prefix}}]", "v1"),
            route("uri-regex", r#"[{uri: {regex: "/re/[0-9]+"}}]"#, "v1"),
            route(
                "ignore-case-exact",
                "[{uri: {exact: /CaseLess}, ignoreUriCase: true}]",
                "v1",
            ),
            route(
                "ignore-case-prefix",
                "[{uri: {prefix: /CI/}, ignoreUriCase: true}]",
                "v1",
            ),
            route(
                "scheme",
                "[{uri: {prefix: /scheme/}, scheme: {exact: https}}]",
                "v1",
            ),
            route(
                "method",
                "[{uri: {prefix: /method/}, method: {exact: POST}}]",
                "v1",
            ),
            route(
                "method-regex",
                r#"[{uri: {prefix: /method/}, method: {regex: "PUT|PATCH"}}]"#,
                "v1",
            ),
            route(
                "authority",
                "[{uri: {prefix: /authority/}, authority: {prefix: my-app.default}}]",
                "v1",
            ),
            route(
                "header-exact",
                "[{uri: {prefix: /headers/}, headers: {x-exact: {exact: yes}}}]",
                "v1",
            ),
            route(
                "header-prefix",
                "[{uri: {prefix: /headers/}, headers: {x-prefix: {prefix: ab}}}]",
                "v1",
            ),
            route(
                "header-regex",
                r#"[{uri: {prefix: /headers/}, headers: {x-regex: {regex: "[0-9]{3}"}}}]"#,
                "v1",
            ),
            route(
                "header-present",
                "[{uri: {prefix: /headers/}, headers: {x-present: {}}}]",
                "v1",
            ),
            route(
                "without-headers",
                "[{uri: {prefix: /without/}, withoutHeaders: {x-block: {exact: yes}}}]",
                "v1",
            ),
            route(
                "query-exact",
                "[{uri: {prefix: /query/}, queryParams: {q: {exact: one}}}]",
                "v1",
            ),
            route(
                "query-regex",
                r#"[{uri: {prefix: /query/}, queryParams: {n: {regex: "[0-9]+"}}}]"#,
                "v1",
            ),
            route(
                "query-present",
                "[{uri: {prefix: /query/}, queryParams: {flag: {}}}]",
                "v1",
            ),
            route("port", "[{uri: {prefix: /port/}, port: 8080}]", "v1"),
            fallback(),
        ],
    );
    let h = Harness::start(&config);
    let cases = [
        // uri exact: case-sensitive, the whole path, query excluded.
        case("GET", "http://my-app/exact", "uri-exact"),
        case("GET", "http://my-app/exact?x=1", "uri-exact"),
        case("GET", "http://my-app/exact/more", "fallback"),
        case("GET", "http://my-app/Exact", "fallback"),
        // uri prefix: a raw string prefix.
        case("GET", "http://my-app/prefix", "uri-prefix"),
        case("GET", "http://my-app/prefix/a/b", "uri-prefix"),
        case("GET", "http://my-app/prefixed", "uri-prefix"),
        case("GET", "http://my-app/pre", "fallback"),
        // uri regex: a full match of the path.
        case("GET", "http://my-app/re/123", "uri-regex"),
        case("GET", "http://my-app/re/123?q=abc", "uri-regex"),
        case("GET", "http://my-app/re/12a", "fallback"),
        case("GET", "http://my-app/x/re/1", "fallback"),
        // ignoreUriCase: exact and prefix.
        case("GET", "http://my-app/caseless", "ignore-case-exact"),
        case("GET", "http://my-app/CASELESS", "ignore-case-exact"),
        case("GET", "http://my-app/caseles", "fallback"),
        case("GET", "http://my-app/ci/x", "ignore-case-prefix"),
        case("GET", "http://my-app/Ci/x", "ignore-case-prefix"),
        case("GET", "http://my-app/cix", "fallback"),
        // scheme.
        case("GET", "https://my-app:80/scheme/x", "scheme"),
        case("GET", "http://my-app/scheme/x", "fallback"),
        // method exact and regex.
        case("POST", "http://my-app/method/x", "method"),
        case("PUT", "http://my-app/method/x", "method-regex"),
        case("PATCH", "http://my-app/method/x", "method-regex"),
        case("GET", "http://my-app/method/x", "fallback"),
        case("DELETE", "http://my-app/method/x", "fallback"),
        // authority, as sent.
        case("GET", "http://my-app.default/authority/x", "authority"),
        case(
            "GET",
            "http://my-app.default.svc.cluster.local:80/authority/x",
            "authority",
        ),
        case("GET", "http://my-app/authority/x", "fallback"),
        // headers: exact, prefix, regex (full match), present (even when empty).
        with(
            "http://my-app/headers/",
            &[("x-exact", "yes")],
            "header-exact",
        ),
        with(
            "http://my-app/headers/",
            &[("X-Exact", "yes")],
            "header-exact",
        ),
        with("http://my-app/headers/", &[("x-exact", "yess")], "fallback"),
        with("http://my-app/headers/", &[("x-exact", "Yes")], "fallback"),
        with(
            "http://my-app/headers/",
            &[("x-prefix", "abc")],
            "header-prefix",
        ),
        with("http://my-app/headers/", &[("x-prefix", "xab")], "fallback"),
        with(
            "http://my-app/headers/",
            &[("x-regex", "123")],
            "header-regex",
        ),
        with("http://my-app/headers/", &[("x-regex", "1234")], "fallback"),
        with(
            "http://my-app/headers/",
            &[("x-present", "")],
            "header-present",
        ),
        with(
            "http://my-app/headers/",
            &[("x-present", "anything")],
            "header-present",
        ),
        with("http://my-app/headers/", &[("x-absent", "1")], "fallback"),
        case("GET", "http://my-app/headers/", "fallback"),
        // withoutHeaders: fails only when the header matches (absent counts as "").
        case("GET", "http://my-app/without/", "without-headers"),
        with(
            "http://my-app/without/",
            &[("x-block", "no")],
            "without-headers",
        ),
        with("http://my-app/without/", &[("x-block", "yes")], "fallback"),
        // queryParams: exact, regex (full match), present.
        case("GET", "http://my-app/query/?q=one", "query-exact"),
        case("GET", "http://my-app/query/?x=2&q=one", "query-exact"),
        case("GET", "http://my-app/query/?q=onex", "fallback"),
        case("GET", "http://my-app/query/?q=two", "fallback"),
        case("GET", "http://my-app/query/?n=42", "query-regex"),
        case("GET", "http://my-app/query/?n=42x", "fallback"),
        case("GET", "http://my-app/query/?flag", "query-present"),
        case("GET", "http://my-app/query/?flag=1", "query-present"),
        case("GET", "http://my-app/query/", "fallback"),
        case("GET", "http://my-app/query/?flags=1", "fallback"),
        // port: the request's destination port.
        case("GET", "http://my-app:8080/port/x", "port"),
        case("GET", "http://my-app/port/x", "fallback"),
        case("GET", "http://my-app:80/port/x", "fallback"),
    ];
    run_cases(&h, &cases).await;
    assert!(h.v1.hits() > 0 && h.v2.hits() > 0);
}

#[tokio::test]
async fn source_namespace_and_labels_match_the_builders_identity() {
    let config = vs(
        "sources",
        &[
            route(
                "ns-prod",
                "[{uri: {prefix: /ns/}, sourceNamespace: prod}]",
                "v1",
            ),
            route(
                "ns-default",
                "[{uri: {prefix: /ns/}, sourceNamespace: default}]",
                "v1",
            ),
            route(
                "labels-other",
                "[{uri: {prefix: /labels/}, sourceLabels: {app: other}}]",
                "v1",
            ),
            route(
                "labels-sleep",
                "[{uri: {prefix: /labels/}, sourceLabels: {app: sleep}}]",
                "v1",
            ),
            route(
                "labels-two",
                "[{uri: {prefix: /two/}, sourceLabels: {app: sleep, version: v9}}]",
                "v1",
            ),
            fallback(),
        ],
    );

    // This workload: namespace default, labels app=sleep, version=v1.
    let h = Harness::start_with(&config, |b| {
        b.namespace("default")
            .labels([("app", "sleep"), ("version", "v1")])
    });
    run_cases(
        &h,
        &[
            case("GET", "http://my-app/ns/x", "ns-default"),
            case("GET", "http://my-app/labels/x", "labels-sleep"),
            // Every label of sourceLabels must be on the workload.
            case("GET", "http://my-app/two/x", "fallback"),
        ],
    )
    .await;

    // A workload in namespace prod without labels: the prod route, no label routes. It
    // reaches the service only by a name that says the namespace.
    let h = Harness::start_with(&config, |b| {
        b.namespace("prod")
            .outbound_policy(OutboundPolicy::RegistryOnly)
    });
    run_cases(
        &h,
        &[
            case("GET", "http://my-app.default/ns/x", "ns-prod"),
            case("GET", "http://my-app.default/labels/x", "fallback"),
            case("GET", "http://my-app.default.svc/ns/x", "ns-prod"),
            case(
                "GET",
                "http://my-app.default.svc.cluster.local/ns/x",
                "ns-prod",
            ),
        ],
    )
    .await;
    // `my-app` from namespace prod is my-app.prod.svc.cluster.local: not a service.
    let reply = h.get("http://my-app/ns/x").await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{reply:?}");
    assert_eq!(reply.backend(), None);
}

#[tokio::test]
async fn a_gateway_bound_virtual_service_does_not_apply_to_mesh_traffic() {
    // Created first, so it would win for /gw/ if it applied.
    let gateway_vs = vs_with(
        "ingress-only",
        "  gateways: [istio-system/ingress]\n",
        &[route("gateway-route", "[{uri: {prefix: /gw/}}]", "v1")],
    );
    // A match block bound to the gateway inside a mesh VirtualService.
    let mesh_vs = vs_with(
        "mesh",
        "  gateways: [mesh, istio-system/ingress]\n",
        &[
            route(
                "match-gateway",
                "[{uri: {prefix: /gw-match/}, gateways: [istio-system/ingress]}]",
                "v1",
            ),
            route(
                "mesh-route",
                "[{uri: {prefix: /mesh/}, gateways: [mesh]}]",
                "v1",
            ),
            fallback(),
        ],
    );
    let config = format!("{gateway_vs}{mesh_vs}");

    let h = Harness::start(&config);
    run_cases(
        &h,
        &[
            case("GET", "http://my-app/gw/x", "fallback"),
            case("GET", "http://my-app/gw-match/x", "fallback"),
            case("GET", "http://my-app/mesh/x", "mesh-route"),
        ],
    )
    .await;

    // The same config for the ingress gateway: its routes apply, the mesh-only block does not.
    let h = Harness::start_with(&config, |b| b.gateway("istio-system/ingress"));
    run_cases(
        &h,
        &[
            case("GET", "http://my-app/gw/x", "gateway-route"),
            case("GET", "http://my-app/gw-match/x", "match-gateway"),
            case("GET", "http://my-app/mesh/x", "fallback"),
        ],
    )
    .await;
}

#[tokio::test]
async fn the_first_matching_route_and_match_block_wins() {
    let first_vs = vs(
        "first",
        &[
            route("broad", "[{uri: {prefix: /fm}}]", "v1"),
            // Never reached for /fm/x: `broad` comes first.
            route("narrow", "[{uri: {exact: /fm/x}}]", "v2"),
            route(
                "two-blocks",
                r#"[{name: by-header, headers: {x-pick: {exact: "1"}}}, {name: by-path, uri: {prefix: /blocks}}]"#,
                "v1",
            ),
        ],
    );
    // A second VirtualService for the same host: its routes come after the first's.
    let second_vs = vs(
        "second",
        &[
            route("second-vs", "[{uri: {prefix: /second}}]", "v1"),
            route("blocks-again", "[{uri: {prefix: /blocks}}]", "v2"),
            fallback(),
        ],
    );
    let h = Harness::start(&format!("{first_vs}{second_vs}"));
    run_cases(
        &h,
        &[
            case("GET", "http://my-app/fm/x", "broad"),
            case("GET", "http://my-app/fmx", "broad"),
            case("GET", "http://my-app/blocks/1", "two-blocks"),
            with("http://my-app/other", &[("x-pick", "1")], "two-blocks"),
            case("GET", "http://my-app/second", "second-vs"),
            case("GET", "http://my-app/other", "fallback"),
        ],
    )
    .await;
}

#[tokio::test]
async fn every_authority_alias_of_the_service_reaches_it() {
    // REGISTRY_ONLY: a name that is not an alias is answered 502 at once (no DNS lookup).
    let h = Harness::start_with(&vs("all", &[fallback()]), |b| {
        b.outbound_policy(OutboundPolicy::RegistryOnly)
    });
    let aliases = [
        "my-app",
        "my-app.default",
        "my-app.default.svc",
        "my-app.default.svc.cluster.local",
    ];
    for alias in aliases {
        for authority in [alias.to_string(), format!("{alias}:80")] {
            // Absolute form, and origin form with a Host header.
            let reply = h.get(&format!("http://{authority}/alias")).await;
            assert_eq!(
                (reply.status, route_of(&reply)),
                (StatusCode::OK, Some("fallback")),
                "{authority}: {reply:?}"
            );
            assert_eq!(reply.echo().path, "/alias");
            let reply = h.call("GET", "/alias", &[("host", &authority)]).await;
            assert_eq!(
                (reply.status, route_of(&reply)),
                (StatusCode::OK, Some("fallback")),
                "Host {authority}: {reply:?}"
            );
        }
    }
    assert_eq!(h.v2.hits(), 16);
    // Not aliases: another namespace, a partial domain, a namespace-less service name.
    for authority in ["my-app.prod", "my-app.default.svc.cluster", "my-app.svc"] {
        let reply = h.get(&format!("http://{authority}/alias")).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_GATEWAY,
            "{authority}: {reply:?}"
        );
    }
    assert_eq!(h.v2.hits(), 16);
}

#[tokio::test]
async fn the_path_is_normalised_before_matching_and_sent_normalised() {
    let config = vs(
        "admin",
        &[route("admin", "[{uri: {exact: /admin}}]", "v1"), fallback()],
    );
    let h = Harness::start(&config);
    for path in ["/public/../admin", "/./admin", "/public/./../admin?x=1"] {
        let reply = h.get(&format!("http://my-app{path}")).await;
        assert_eq!(
            (reply.status, route_of(&reply)),
            (StatusCode::OK, Some("admin")),
            "{path}: {reply:?}"
        );
        let echo = reply.echo();
        assert_eq!(echo.backend, "v1");
        let want = if path.ends_with("?x=1") {
            "/admin?x=1"
        } else {
            "/admin"
        };
        assert_eq!(echo.path, want, "{path}");
    }
    let reply = h.get("http://my-app/admin/../public").await;
    assert_eq!(route_of(&reply), Some("fallback"));
    assert_eq!(reply.echo().path, "/public");
}

// ---- actions ----------------------------------------------------------------------------------

#[tokio::test]
async fn redirect_answers_with_the_code_and_location() {
    let config = vs(
        "redirects",
        &[
            route_with(
                "moved",
                "[{uri: {exact: /old}}]",
                "redirect: {uri: /new, authority: elsewhere.example}",
            ),
            route_with(
                "prefix",
                "[{uri: {prefix: /legacy/}}]",
                "redirect: {prefixRewrite: /modern/, redirectCode: 308}",
            ),
            route_with(
                "https",
                "[{uri: {exact: /secure}}]",
                "redirect: {scheme: https, redirectCode: 302}",
            ),
            fallback(),
        ],
    );
    let h = Harness::start(&config);

    let reply = h.get("http://my-app/old?a=1").await;
    assert_eq!(reply.status, StatusCode::MOVED_PERMANENTLY, "{reply:?}");
    assert_eq!(
        header(&reply.headers, "location"),
        Some("http://elsewhere.example/new?a=1")
    );
    assert_eq!(route_of(&reply), Some("moved"));

    let reply = h.get("http://my-app/legacy/a/b").await;
    assert_eq!(reply.status, StatusCode::PERMANENT_REDIRECT, "{reply:?}");
    assert_eq!(
        header(&reply.headers, "location"),
        Some("http://my-app/modern/a/b")
    );

    let reply = h.get("http://my-app/secure").await;
    assert_eq!(reply.status, StatusCode::FOUND, "{reply:?}");
    assert_eq!(
        header(&reply.headers, "location"),
        Some("https://my-app/secure")
    );

    assert_eq!(
        h.v1.hits() + h.v2.hits(),
        0,
        "redirects are answered by the mesh"
    );
}

#[tokio::test]
async fn direct_response_answers_without_calling_a_backend() {
    let config = vs(
        "direct",
        &[
            route_with(
                "teapot",
                "[{uri: {exact: /tea}}]",
                "directResponse: {status: 418, body: {string: short and stout}}",
            ),
            route_with(
                "bytes",
                "[{uri: {exact: /bytes}}]",
                "directResponse: {status: 200, body: {bytes: aGVsbG8=}}",
            ),
            route_with(
                "empty",
                "[{uri: {exact: /empty}}]",
                "directResponse: {status: 503}",
            ),
            fallback(),
        ],
    );
    let h = Harness::start(&config);
    let reply = h.get("http://my-app/tea").await;
    assert_eq!(reply.status, StatusCode::IM_A_TEAPOT);
    assert_eq!(&reply.body[..], b"short and stout");
    assert_eq!(route_of(&reply), Some("teapot"));
    assert!(header(&reply.headers, "content-type").is_some_and(|c| c.starts_with("text/plain")));

    let reply = h.get("http://my-app/bytes").await;
    assert_eq!(
        (reply.status, &reply.body[..]),
        (StatusCode::OK, &b"hello"[..])
    );

    let reply = h.get("http://my-app/empty").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(reply.body.is_empty());
    assert_eq!(route_of(&reply), Some("empty"));
    // A configured answer, not a mesh failure.
    assert_eq!(flag_of(&reply), None);

    assert_eq!(h.v1.hits() + h.v2.hits(), 0);
}

#[tokio::test]
async fn rewrite_changes_the_prefix_and_authority_the_backend_sees() {
    let config = vs(
        "rewrite",
        &[
            route_with(
                "api",
                "[{uri: {prefix: /api/}}]",
                "route: [{destination: {host: my-app, subset: v1}}]\n    rewrite: {uri: /v2/}",
            ),
            route_with(
                "exact",
                "[{uri: {exact: /login}}]",
                "route: [{destination: {host: my-app, subset: v1}}]\n    rewrite: {uri: /auth/signin}",
            ),
            route_with(
                "authority",
                "[{uri: {prefix: /host/}}]",
                "route: [{destination: {host: my-app, subset: v1}}]\n    rewrite: {authority: rewritten.example}",
            ),
            route_with(
                "regex",
                "[{uri: {prefix: /users/}}]",
                r#"route: [{destination: {host: my-app, subset: v1}}]
    rewrite: {uriRegexRewrite: {match: "^/users/([0-9]+)/(.*)$", rewrite: '/u/\2/\1'}}"#,
            ),
            fallback(),
        ],
    );
    let h = Harness::start(&config);

    let reply = h.get("http://my-app/api/users?id=1").await;
    assert_eq!(
        (reply.status, route_of(&reply)),
        (StatusCode::OK, Some("api")),
        "{reply:?}"
    );
    let echo = reply.echo();
    assert_eq!(
        (echo.backend.as_str(), echo.path.as_str()),
        ("v1", "/v2/users?id=1")
    );
    assert_eq!(echo.authority, "my-app");

    let echo = h.get("http://my-app/login?next=/x").await.echo();
    assert_eq!(echo.path, "/auth/signin?next=/x");

    let echo = h.get("http://my-app/host/x").await.echo();
    assert_eq!(echo.authority, "rewritten.example");
    assert_eq!(echo.path, "/host/x");
    assert_eq!(
        echo.backend, "v1",
        "an authority rewrite does not change the destination"
    );

    let echo = h.get("http://my-app/users/42/profile").await.echo();
    assert_eq!(echo.path, "/u/profile/42");
}

#[tokio::test]
async fn header_operations_apply_to_the_request_and_the_response() {
    let config = vs(
        "headers",
        &[r#"  - name: ops
    route:
    - destination: {host: my-app, subset: v1}
      headers:
        request: {set: {x-dest: v1, x-set: from-dest}}
        response: {add: {x-dest-resp: d}}
    headers:
      request:
        set: {x-set: route, x-new: fresh}
        add: {x-add: added}
        remove: [x-remove]
      response:
        set: {x-route: ops}
        add: {x-resp-add: c}
        remove: [content-type]
"#
        .to_string()],
    );
    let h = Harness::start(&config);
    let reply = h
        .call(
            "GET",
            "http://my-app/h",
            &[
                ("x-set", "client"),
                ("x-add", "client"),
                ("x-remove", "gone"),
            ],
        )
        .await;
    assert_eq!(
        (reply.status, route_of(&reply)),
        (StatusCode::OK, Some("ops")),
        "{reply:?}"
    );
    let echo = reply.echo();
    // Route level first, then the destination's (its `set` overrides the route's).
    assert_eq!(echo.header("x-set"), Some("from-dest"));
    assert_eq!(echo.header("x-new"), Some("fresh"));
    assert_eq!(echo.header("x-add"), Some("client, added"));
    assert_eq!(echo.header("x-remove"), None);
    assert_eq!(echo.header("x-dest"), Some("v1"));
    // Response: the backend's content-type removed, additions made.
    assert_eq!(header(&reply.headers, "content-type"), None);
    assert_eq!(header(&reply.headers, "x-resp-add"), Some("c"));
    assert_eq!(header(&reply.headers, "x-dest-resp"), Some("d"));
    assert_eq!(reply.backend(), Some("v1"));
}

#[tokio::test]
async fn a_cors_preflight_is_answered_by_the_mesh() {
    let config = vs(
        "cors",
        &[route_with(
            "cors",
            "",
            r#"route: [{destination: {host: my-app, subset: v1}}]
    corsPolicy:
      allowOrigins: [{exact: "https://good.example"}, {regex: "https://.*\\.trusted\\.example"}]
      allowMethods: [GET, POST]
      allowHeaders: [x-custom]
      exposeHeaders: [x-exposed]
      maxAge: 24h
      allowCredentials: true"#,
        )],
    );
    let h = Harness::start(&config);
    async fn preflight(h: &Harness, origin: &str) -> Reply {
        h.call(
            "OPTIONS",
            "http://my-app/things",
            &[
                ("origin", origin),
                ("access-control-request-method", "POST"),
            ],
        )
        .await
    }

    let reply = preflight(&h, "https://good.example").await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    let hv = |name| header(&reply.headers, name);
    assert_eq!(
        hv("access-control-allow-origin"),
        Some("https://good.example")
    );
    assert!(
        hv("access-control-allow-methods").is_some_and(|m| m.contains("POST") && m.contains("GET"))
    );
    assert_eq!(hv("access-control-allow-headers"), Some("x-custom"));
    assert_eq!(hv("access-control-max-age"), Some("86400"));
    assert_eq!(hv("access-control-allow-credentials"), Some("true"));
    assert_eq!(reply.backend(), None);
    assert_eq!(h.v1.hits(), 0, "the preflight is answered by the mesh");

    let reply = preflight(&h, "https://a.trusted.example").await;
    assert_eq!(
        header(&reply.headers, "access-control-allow-origin"),
        Some("https://a.trusted.example")
    );
    assert_eq!(h.v1.hits(), 0);

    // An origin that is not allowed: forwarded (unmatchedPreflights FORWARD), no CORS headers.
    let reply = preflight(&h, "https://evil.example").await;
    assert_eq!(reply.backend(), Some("v1"));
    assert_eq!(header(&reply.headers, "access-control-allow-origin"), None);
    assert_eq!(h.v1.hits(), 1);

    // The actual request from an allowed origin: the origin echoed, exposed headers listed.
    let reply = h
        .call(
            "GET",
            "http://my-app/things",
            &[("origin", "https://good.example")],
        )
        .await;
    assert_eq!(reply.backend(), Some("v1"));
    assert_eq!(
        header(&reply.headers, "access-control-allow-origin"),
        Some("https://good.example")
    );
    assert_eq!(
        header(&reply.headers, "access-control-expose-headers"),
        Some("x-exposed")
    );
    let reply = h
        .call(
            "GET",
            "http://my-app/things",
            &[("origin", "https://evil.example")],
        )
        .await;
    assert_eq!(header(&reply.headers, "access-control-allow-origin"), None);
}

#[tokio::test]
async fn a_delegate_virtual_service_routes_under_the_roots_match() {
    let root = vs(
        "root",
        &[
            "  - name: shop\n    match: [{uri: {prefix: /shop}}]\n    delegate: {name: shop, namespace: default}\n".to_string(),
            fallback(),
        ],
    );
    let delegate = r#"---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop, namespace: default}
spec:
  http:
  - name: cart
    match: [{uri: {prefix: /shop/cart}}]
    route: [{destination: {host: my-app, subset: v1}}]
    headers: {response: {set: {x-route: cart}}}
  - name: outside
    match: [{uri: {prefix: /outside}}]
    route: [{destination: {host: my-app, subset: v1}}]
    headers: {response: {set: {x-route: outside}}}
  - name: shop-rest
    route: [{destination: {host: my-app, subset: v1}}]
    headers: {response: {set: {x-route: shop-rest}}}
"#;
    let h = Harness::start(&format!("{root}{delegate}"));
    run_cases(
        &h,
        &[
            case("GET", "http://my-app/shop/cart/1", "cart"),
            case("GET", "http://my-app/shop/items", "shop-rest"),
            case("GET", "http://my-app/shop", "shop-rest"),
            // The delegate's match is ANDed with the root's: /outside is not under /shop.
            case("GET", "http://my-app/outside", "fallback"),
            case("GET", "http://my-app/other", "fallback"),
        ],
    )
    .await;
}

// ---- mesh-made answers ---------------------------------------------------------------------------

#[tokio::test]
async fn no_matching_route_is_a_404_with_flag_nr() {
    let h = Harness::start(&vs(
        "only",
        &[route("only", "[{uri: {exact: /only}}]", "v1")],
    ));
    assert_eq!(h.get("http://my-app/only").await.status, StatusCode::OK);
    let reply = h.get("http://my-app/nope").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{reply:?}");
    assert_eq!(flag_of(&reply), Some("NR"));
    assert_eq!(header(&reply.headers, LAYER_HEADER.as_str()), Some("route"));
    assert_eq!(reply.backend(), None);
    assert_eq!(h.v1.hits() + h.v2.hits(), 1);
}

#[tokio::test]
async fn an_unknown_host_passes_through_under_allow_any_and_is_refused_under_registry_only() {
    let h = Harness::start(&vs("all", &[fallback()]));
    let outside = Backend::start("outside", &[]);
    let uri = format!("http://127.0.0.1:{}/direct?x=1", outside.port());

    let reply = h.get(&uri).await;
    assert_eq!(
        (reply.status, reply.backend()),
        (StatusCode::OK, Some("outside")),
        "{reply:?}"
    );
    let echo = reply.echo();
    assert_eq!(echo.path, "/direct?x=1");
    assert_eq!(echo.authority, format!("127.0.0.1:{}", outside.port()));
    assert_eq!(outside.hits(), 1);

    let h = Harness::start_with(&vs("all", &[fallback()]), |b| {
        b.outbound_policy(OutboundPolicy::RegistryOnly)
    });
    let reply = h.get(&uri).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{reply:?}");
    assert_eq!(reply.backend(), None);
    assert_eq!(header(&reply.headers, LAYER_HEADER.as_str()), Some("route"));
    assert_eq!(
        outside.hits(),
        1,
        "REGISTRY_ONLY must not reach the outside backend"
    );
    // Known services still work.
    assert_eq!(h.get("http://my-app/").await.backend(), Some("v2"));
}

#[tokio::test]
async fn an_undefined_subset_is_503_nc_and_an_empty_subset_is_503_uh() {
    let config = vs(
        "subsets",
        &[
            route("undefined", "[{uri: {prefix: /undefined}}]", "v9"),
            route("empty", "[{uri: {prefix: /empty}}]", "v3"),
            route_with(
                "unknown-host",
                "[{uri: {prefix: /nohost}}]",
                "route: [{destination: {host: nowhere.default.svc.cluster.local}}]",
            ),
            fallback(),
        ],
    );
    let h = Harness::start(&config);

    let reply = h.get("http://my-app/undefined").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
    assert_eq!(flag_of(&reply), Some("NC"));

    let reply = h.get("http://my-app/nohost").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
    assert_eq!(flag_of(&reply), Some("NC"));

    let reply = h.get("http://my-app/empty").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
    assert_eq!(flag_of(&reply), Some("UH"));
    assert_eq!(&reply.body[..], b"no healthy upstream");

    assert_eq!(h.v1.hits() + h.v2.hits(), 0);
    // The service itself is fine.
    assert_eq!(h.get("http://my-app/ok").await.backend(), Some("v2"));
}

// ---- weights ----------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_weighted_split_lands_within_one_and_a_half_points() {
    const TOTAL: usize = 20_000;
    const CONCURRENCY: usize = 32;
    let config = vs(
        "split",
        &[route_with(
            "split",
            "",
            "route:\n    - {destination: {host: my-app, subset: v1}, weight: 80}\n    - {destination: {host: my-app, subset: v2}, weight: 20}",
        )],
    );
    let h = Harness::start_with(&config, |b| b.seed(42));
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    for _ in 0..CONCURRENCY {
        let (client, next) = (h.client.clone(), next.clone());
        tasks.spawn(async move {
            let mut seen: BTreeMap<String, usize> = BTreeMap::new();
            while next.fetch_add(1, Ordering::Relaxed) < TOTAL {
                let reply = send(&client, request("GET", "http://my-app/split", &[])).await;
                let key = match &reply {
                    Ok(r) if r.status == StatusCode::OK => {
                        r.backend().unwrap_or("no x-backend").to_string()
                    }
                    Ok(r) => format!("status {}", r.status),
                    Err(e) => format!("body error {e}"),
                };
                *seen.entry(key).or_default() += 1;
            }
            seen
        });
    }
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    while let Some(part) = tasks.join_next().await {
        for (k, n) in part.expect("client task") {
            *seen.entry(k).or_default() += n;
        }
    }
    let v1 = seen.get("v1").copied().unwrap_or(0);
    let v2 = seen.get("v2").copied().unwrap_or(0);
    assert_eq!(
        v1 + v2,
        TOTAL,
        "every request answered by a backend: {seen:?}"
    );
    let share = v1 as f64 * 100.0 / TOTAL as f64;
    assert!((share - 80.0).abs() <= 1.5, "v1 got {share:.2}% ({seen:?})");
    assert_eq!((h.v1.hits(), h.v2.hits()), (v1, v2));
}
