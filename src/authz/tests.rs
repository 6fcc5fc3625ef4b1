//! The AuthorizationPolicy matrix: (policies, request) → decision, from Istio's documented
//! semantics (istio.io AuthorizationPolicy reference, "Authorization policy" concepts and
//! the security tasks), plus the decision's side results (CUSTOM, AUDIT, dry-run), the
//! compile warnings and the log events.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::HeaderMap;

use super::*;
use crate::config::Loader;
use crate::route::normalize::{PathNormalization, normalize_path};

/// The workload under test: namespace `foo`, labels `app: httpbin, version: v1`.
fn workload() -> SourceIdentity {
    SourceIdentity {
        namespace: "foo".to_string(),
        labels: BTreeMap::from([
            ("app".to_string(), "httpbin".to_string()),
            ("version".to_string(), "v1".to_string()),
        ]),
    }
}

/// One AuthorizationPolicy document; `spec` in YAML flow style.
fn ap(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {spec}\n---\n"
    )
}

/// One AuthorizationPolicy document with annotations (flow style).
fn ap_annotated(ns: &str, name: &str, annotations: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: {ns}, annotations: {annotations}}}\nspec: {spec}\n---\n"
    )
}

/// Compiles `yaml` for [`workload`] with trust domain `td`.
fn compile_td(yaml: &str, td: &str) -> (AuthzPolicies, Vec<ValidationError>) {
    let set = Loader::new().load_str(yaml);
    assert!(
        !set.has_errors(),
        "test policies must load: {:?}",
        set.problems
    );
    AuthzPolicies::compile(&set, &workload(), "istio-system", td)
}

/// Compiles `yaml` for [`workload`] in trust domain `cluster.local`.
fn compile(yaml: &str) -> AuthzPolicies {
    compile_td(yaml, "cluster.local").0
}

/// A request, built up in tests.
#[derive(Debug, Clone)]
struct R {
    method: &'static str,
    host: &'static str,
    path: String,
    port: u16,
    peer: Option<&'static str>,
    claims: Option<serde_json::Value>,
    peer_ip: Option<&'static str>,
    remote_ip: Option<&'static str>,
    dest_ip: Option<&'static str>,
    sni: Option<&'static str>,
    headers: Vec<(&'static str, &'static str)>,
    http: bool,
}

/// A plaintext `GET path` to `httpbin.foo` on port 8000.
fn get(path: &str) -> R {
    R {
        method: "GET",
        host: "httpbin.foo",
        path: path.to_string(),
        port: 8000,
        peer: None,
        claims: None,
        peer_ip: None,
        remote_ip: None,
        dest_ip: None,
        sni: None,
        headers: Vec::new(),
        http: true,
    }
}

/// A TCP connection to port `port`.
fn tcp(port: u16) -> R {
    R {
        method: "",
        host: "",
        path: String::new(),
        http: false,
        ..get("")
    }
    .port(port)
}

impl R {
    fn method(mut self, m: &'static str) -> Self {
        self.method = m;
        self
    }
    fn host(mut self, h: &'static str) -> Self {
        self.host = h;
        self
    }
    fn port(mut self, p: u16) -> Self {
        self.port = p;
        self
    }
    fn peer(mut self, p: &'static str) -> Self {
        self.peer = Some(p);
        self
    }
    fn jwt(mut self, claims: serde_json::Value) -> Self {
        self.claims = Some(claims);
        self
    }
    fn ip(mut self, ip: &'static str) -> Self {
        self.peer_ip = Some(ip);
        self
    }
    fn remote(mut self, ip: &'static str) -> Self {
        self.remote_ip = Some(ip);
        self
    }
    fn dest(mut self, ip: &'static str) -> Self {
        self.dest_ip = Some(ip);
        self
    }
    fn sni(mut self, sni: &'static str) -> Self {
        self.sni = Some(sni);
        self
    }
    fn header(mut self, k: &'static str, v: &'static str) -> Self {
        self.headers.push((k, v));
        self
    }

    /// Evaluates the request against `policies`.
    fn run(&self, policies: &AuthzPolicies) -> Decision {
        let mut headers = HeaderMap::new();
        for (k, v) in &self.headers {
            headers.append(
                http::HeaderName::from_static(k),
                http::HeaderValue::from_static(v),
            );
        }
        let ip = |s: Option<&str>| s.map(|s| s.parse().expect("test IP"));
        let req = AuthzRequest {
            peer_principal: self.peer,
            claims: self.claims.as_ref().map(|c| c as &dyn JwtClaims),
            peer_ip: ip(self.peer_ip),
            remote_ip: ip(self.remote_ip),
            destination_ip: ip(self.dest_ip),
            destination_port: self.port,
            sni: self.sni,
            host: self.host,
            method: self.method,
            path: &self.path,
            headers: &headers,
            is_http: self.http,
        };
        policies.evaluate(&req)
    }
}

use crate::route::matcher::JwtClaims;

/// The expected verdict.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// No ALLOW policy applies, nothing denied.
    NoPolicy,
    /// Allowed by `policy` rule `rule`.
    Allow(&'static str, usize),
    /// Denied by DENY `policy` rule `rule`.
    Deny(&'static str, usize),
    /// Denied: ALLOW policies exist, none matched.
    NoMatch,
}

impl Want {
    fn verdict(self) -> Verdict {
        let m = |p: &str, r| MatchedRule {
            policy: Arc::from(p),
            rule: r,
        };
        match self {
            Want::NoPolicy => Verdict::AllowedNoPolicy,
            Want::Allow(p, r) => Verdict::Allowed(m(p, r)),
            Want::Deny(p, r) => Verdict::Denied(m(p, r)),
            Want::NoMatch => Verdict::DeniedNoMatch,
        }
    }
}

/// A JWT payload with `iss` and `sub`, and `extra` fields.
fn jwt(iss: &str, sub: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut v = serde_json::json!({"iss": iss, "sub": sub});
    if let (Some(obj), serde_json::Value::Object(more)) = (v.as_object_mut(), extra) {
        obj.extend(more);
    }
    v
}

/// The matrix. Each row: what it shows, the policies, the request, the verdict.
fn matrix() -> Vec<(&'static str, String, R, Want)> {
    let allow_all = ap("foo", "allow-all", "{rules: [{}]}");
    let deny_admin = ap(
        "foo",
        "deny-admin",
        r#"{action: DENY, rules: [{to: [{operation: {paths: ["/admin*"]}}]}]}"#,
    );
    let allow_get = ap(
        "foo",
        "get-only",
        "{rules: [{to: [{operation: {methods: [GET, HEAD]}}]}]}",
    );
    let sleep = "cluster.local/ns/default/sa/sleep";
    let from_sleep = ap(
        "foo",
        "from-sleep",
        &format!(r#"{{rules: [{{from: [{{source: {{principals: ["{sleep}"]}}}}]}}]}}"#),
    );
    let one = |name: &str, rule: &str| ap("foo", name, &format!("{{rules: [{rule}]}}"));
    let deny =
        |name: &str, rule: &str| ap("foo", name, &format!("{{action: DENY, rules: [{rule}]}}"));

    vec![
        // --- Empty-policy and decision-order semantics ---
        ("no policy allows", String::new(), get("/"), Want::NoPolicy),
        (
            "ALLOW without rules allows nothing",
            ap("foo", "allow-nothing", "{}"),
            get("/"),
            Want::NoMatch,
        ),
        (
            "ALLOW with rules: [] allows nothing",
            ap("foo", "allow-nothing", "{rules: []}"),
            get("/"),
            Want::NoMatch,
        ),
        (
            "ALLOW with an empty rule allows all",
            allow_all.clone(),
            get("/anything").method("DELETE"),
            Want::Allow("foo/allow-all", 0),
        ),
        (
            "DENY with an empty rule denies all",
            ap("foo", "deny-all", "{action: DENY, rules: [{}]}"),
            get("/"),
            Want::Deny("foo/deny-all", 0),
        ),
        (
            "DENY beats ALLOW",
            format!("{allow_all}{deny_admin}"),
            get("/admin/users"),
            Want::Deny("foo/deny-admin", 0),
        ),
        (
            "DENY that does not match leaves ALLOW to decide",
            format!("{allow_all}{deny_admin}"),
            get("/public"),
            Want::Allow("foo/allow-all", 0),
        ),
        (
            "DENY alone: everything it does not match is allowed",
            deny_admin.clone(),
            get("/public"),
            Want::NoPolicy,
        ),
        (
            "ALLOW with no matching rule denies",
            allow_get.clone(),
            get("/").method("POST"),
            Want::NoMatch,
        ),
        (
            "ALLOW matching the method allows",
            allow_get.clone(),
            get("/").method("HEAD"),
            Want::Allow("foo/get-only", 0),
        ),
        (
            "methods are case-sensitive",
            allow_get.clone(),
            get("/").method("get"),
            Want::NoMatch,
        ),
        (
            "any matching ALLOW policy allows (the second one here)",
            format!(
                "{allow_get}{}",
                one(
                    "post-data",
                    r#"{to: [{operation: {methods: [POST], paths: ["/data"]}}]}"#
                )
            ),
            get("/data").method("POST"),
            Want::Allow("foo/post-data", 0),
        ),
        // --- from.source ---
        (
            "principals match the peer identity",
            from_sleep.clone(),
            get("/").peer(sleep),
            Want::Allow("foo/from-sleep", 0),
        ),
        (
            "principals: another identity is denied",
            from_sleep.clone(),
            get("/").peer("cluster.local/ns/default/sa/other"),
            Want::NoMatch,
        ),
        (
            "principals: plaintext has no principal",
            from_sleep.clone(),
            get("/"),
            Want::NoMatch,
        ),
        (
            "principals prefix",
            one(
                "ns-default",
                r#"{from: [{source: {principals: ["cluster.local/ns/default/*"]}}]}"#,
            ),
            get("/").peer(sleep),
            Want::Allow("foo/ns-default", 0),
        ),
        (
            "principals suffix",
            one(
                "any-sleep",
                r#"{from: [{source: {principals: ["*/sa/sleep"]}}]}"#,
            ),
            get("/").peer("other.td/ns/x/sa/sleep"),
            Want::Allow("foo/any-sleep", 0),
        ),
        (
            "notPrincipals [*] in DENY denies plaintext (require mTLS)",
            deny(
                "require-mtls",
                r#"{from: [{source: {notPrincipals: ["*"]}}]}"#,
            ),
            get("/"),
            Want::Deny("foo/require-mtls", 0),
        ),
        (
            "notPrincipals [*] in DENY lets mTLS through",
            deny(
                "require-mtls",
                r#"{from: [{source: {notPrincipals: ["*"]}}]}"#,
            ),
            get("/").peer(sleep),
            Want::NoPolicy,
        ),
        (
            "notPrincipals excludes one identity from an ALLOW",
            one(
                "not-sleep",
                &format!(r#"{{from: [{{source: {{notPrincipals: ["{sleep}"]}}}}]}}"#),
            ),
            get("/").peer(sleep),
            Want::NoMatch,
        ),
        (
            "namespaces match the peer's namespace",
            one("from-test", r#"{from: [{source: {namespaces: [test]}}]}"#),
            get("/").peer("cluster.local/ns/test/sa/client"),
            Want::Allow("foo/from-test", 0),
        ),
        (
            "namespaces: another namespace is denied",
            one("from-test", r#"{from: [{source: {namespaces: [test]}}]}"#),
            get("/").peer("cluster.local/ns/testing/sa/client"),
            Want::NoMatch,
        ),
        (
            "notNamespaces in DENY: outside callers are denied",
            deny("only-foo", r#"{from: [{source: {notNamespaces: [foo]}}]}"#),
            get("/").peer("cluster.local/ns/bar/sa/client"),
            Want::Deny("foo/only-foo", 0),
        ),
        (
            "notNamespaces in DENY: same-namespace callers pass",
            deny("only-foo", r#"{from: [{source: {notNamespaces: [foo]}}]}"#),
            get("/").peer("cluster.local/ns/foo/sa/client"),
            Want::NoPolicy,
        ),
        (
            "serviceAccounts: a bare name is in the policy's namespace",
            one("sa", r#"{from: [{source: {serviceAccounts: [client]}}]}"#),
            get("/").peer("cluster.local/ns/foo/sa/client"),
            Want::Allow("foo/sa", 0),
        ),
        (
            "serviceAccounts: same name in another namespace is denied",
            one("sa", r#"{from: [{source: {serviceAccounts: [client]}}]}"#),
            get("/").peer("cluster.local/ns/bar/sa/client"),
            Want::NoMatch,
        ),
        (
            "serviceAccounts: ns/sa",
            one(
                "sa",
                r#"{from: [{source: {serviceAccounts: [bar/client]}}]}"#,
            ),
            get("/").peer("cluster.local/ns/bar/sa/client"),
            Want::Allow("foo/sa", 0),
        ),
        (
            "trustDomains match the peer's trust domain",
            one(
                "td",
                r#"{from: [{source: {trustDomains: [partner.example]}}]}"#,
            ),
            get("/").peer("partner.example/ns/x/sa/y"),
            Want::Allow("foo/td", 0),
        ),
        (
            "trustDomains: our own trust domain is another one",
            one(
                "td",
                r#"{from: [{source: {trustDomains: [partner.example]}}]}"#,
            ),
            get("/").peer(sleep),
            Want::NoMatch,
        ),
        (
            "ipBlocks: CIDR",
            one("lan", r#"{from: [{source: {ipBlocks: ["10.0.0.0/8"]}}]}"#),
            get("/").ip("10.1.2.3"),
            Want::Allow("foo/lan", 0),
        ),
        (
            "ipBlocks: outside the block",
            one("lan", r#"{from: [{source: {ipBlocks: ["10.0.0.0/8"]}}]}"#),
            get("/").ip("192.168.1.1"),
            Want::NoMatch,
        ),
        (
            "ipBlocks: a bare IP is a /32",
            one("one-ip", r#"{from: [{source: {ipBlocks: ["10.1.2.3"]}}]}"#),
            get("/").ip("10.1.2.4"),
            Want::NoMatch,
        ),
        (
            "ipBlocks: an IPv4-mapped IPv6 peer is its IPv4 address",
            one("one-ip", r#"{from: [{source: {ipBlocks: ["10.1.2.3"]}}]}"#),
            get("/").ip("::ffff:10.1.2.3"),
            Want::Allow("foo/one-ip", 0),
        ),
        (
            "notIpBlocks in DENY",
            deny(
                "block",
                r#"{from: [{source: {notIpBlocks: ["10.0.0.0/8"]}}]}"#,
            ),
            get("/").ip("8.8.8.8"),
            Want::Deny("foo/block", 0),
        ),
        (
            "remoteIpBlocks look at the original client, not the proxy",
            one(
                "office",
                r#"{from: [{source: {remoteIpBlocks: ["203.0.113.0/24"]}}]}"#,
            ),
            get("/").ip("10.0.0.1").remote("203.0.113.7"),
            Want::Allow("foo/office", 0),
        ),
        (
            "remoteIpBlocks: without X-Forwarded-For the client is the peer",
            one(
                "office",
                r#"{from: [{source: {remoteIpBlocks: ["203.0.113.0/24"]}}]}"#,
            ),
            get("/").ip("10.0.0.1"),
            Want::NoMatch,
        ),
        (
            "fields of one source are ANDed",
            one(
                "both",
                &format!(
                    r#"{{from: [{{source: {{principals: ["{sleep}"], ipBlocks: ["10.0.0.0/8"]}}}}]}}"#
                ),
            ),
            get("/").peer(sleep).ip("192.168.0.1"),
            Want::NoMatch,
        ),
        (
            "from entries are ORed",
            one(
                "either",
                &format!(
                    r#"{{from: [{{source: {{principals: ["{sleep}"]}}}}, {{source: {{ipBlocks: ["10.0.0.0/8"]}}}}]}}"#
                ),
            ),
            get("/").ip("10.9.9.9"),
            Want::Allow("foo/either", 0),
        ),
        // --- to.operation ---
        (
            "hosts are matched without case",
            one("host", r#"{to: [{operation: {hosts: [Example.COM]}}]}"#),
            get("/").host("example.com"),
            Want::Allow("foo/host", 0),
        ),
        (
            "hosts: a Host with a port does not match the bare name (Envoy)",
            one("host", r#"{to: [{operation: {hosts: [example.com]}}]}"#),
            get("/").host("example.com:8080"),
            Want::NoMatch,
        ),
        (
            "hosts: name:* covers any port",
            one(
                "host",
                r#"{to: [{operation: {hosts: [example.com, "example.com:*"]}}]}"#,
            ),
            get("/").host("example.com:8080"),
            Want::Allow("foo/host", 0),
        ),
        (
            "hosts: suffix wildcard",
            one("host", r#"{to: [{operation: {hosts: ["*.example.com"]}}]}"#),
            get("/").host("api.example.com"),
            Want::Allow("foo/host", 0),
        ),
        (
            "ports match the destination port",
            one("port", r#"{to: [{operation: {ports: ["8000"]}}]}"#),
            get("/"),
            Want::Allow("foo/port", 0),
        ),
        (
            "ports: another port is denied",
            one("port", r#"{to: [{operation: {ports: ["8000"]}}]}"#),
            get("/").port(9000),
            Want::NoMatch,
        ),
        (
            "notPorts",
            one(
                "not-admin-port",
                r#"{to: [{operation: {notPorts: ["15000"]}}]}"#,
            ),
            get("/").port(15000),
            Want::NoMatch,
        ),
        (
            "paths prefix",
            one("api", r#"{to: [{operation: {paths: ["/api/*"]}}]}"#),
            get("/api/v1/users"),
            Want::Allow("foo/api", 0),
        ),
        (
            "paths prefix: /apix does not start with /api/",
            one("api", r#"{to: [{operation: {paths: ["/api/*"]}}]}"#),
            get("/apix"),
            Want::NoMatch,
        ),
        (
            "paths suffix",
            one("images", r#"{to: [{operation: {paths: ["*.png"]}}]}"#),
            get("/static/logo.png"),
            Want::Allow("foo/images", 0),
        ),
        (
            "paths exact ignore the query",
            one("exact", r#"{to: [{operation: {paths: ["/status"]}}]}"#),
            get("/status?verbose=1"),
            Want::Allow("foo/exact", 0),
        ),
        (
            "paths {*} matches one segment",
            one("items", r#"{to: [{operation: {paths: ["/items/{*}"]}}]}"#),
            get("/items/42"),
            Want::Allow("foo/items", 0),
        ),
        (
            "paths {*} does not match two segments",
            one("items", r#"{to: [{operation: {paths: ["/items/{*}"]}}]}"#),
            get("/items/42/reviews"),
            Want::NoMatch,
        ),
        (
            "paths {**} matches the rest",
            one(
                "files",
                r#"{to: [{operation: {paths: ["/files/{*}/{**}"]}}]}"#,
            ),
            get("/files/alice/a/b/c.txt"),
            Want::Allow("foo/files", 0),
        ),
        (
            "notPaths: everything but /admin",
            one(
                "not-admin",
                r#"{to: [{operation: {notPaths: ["/admin*"]}}]}"#,
            ),
            get("/public"),
            Want::Allow("foo/not-admin", 0),
        ),
        (
            "notPaths: /admin is not allowed",
            one(
                "not-admin",
                r#"{to: [{operation: {notPaths: ["/admin*"]}}]}"#,
            ),
            get("/admin"),
            Want::NoMatch,
        ),
        (
            "/public/../admin is normalised before matching a DENY on /admin*",
            format!("{allow_all}{deny_admin}"),
            get(&normalize_path("/public/../admin", PathNormalization::Base)),
            Want::Deny("foo/deny-admin", 0),
        ),
        (
            "to entries are ORed",
            one(
                "ops",
                r#"{to: [{operation: {methods: [GET], paths: ["/info*"]}}, {operation: {methods: [POST], paths: ["/data"]}}]}"#,
            ),
            get("/data").method("POST"),
            Want::Allow("foo/ops", 0),
        ),
        (
            "fields of one operation are ANDed",
            one(
                "ops",
                r#"{to: [{operation: {methods: [GET], paths: ["/info*"]}}, {operation: {methods: [POST], paths: ["/data"]}}]}"#,
            ),
            get("/info").method("POST"),
            Want::NoMatch,
        ),
        (
            "methods [*] needs a method (any)",
            one("any-method", r#"{to: [{operation: {methods: ["*"]}}]}"#),
            get("/").method("PURGE"),
            Want::Allow("foo/any-method", 0),
        ),
        // --- when ---
        (
            "when request.headers values",
            one(
                "hdr",
                "{when: [{key: \"request.headers[X-Version]\", values: [v1]}]}",
            ),
            get("/").header("x-version", "v1"),
            Want::Allow("foo/hdr", 0),
        ),
        (
            "when request.headers: a missing header does not match",
            one(
                "hdr",
                "{when: [{key: \"request.headers[X-Version]\", values: [v1]}]}",
            ),
            get("/"),
            Want::NoMatch,
        ),
        (
            "when request.headers: several values are joined with a comma",
            one(
                "hdr",
                "{when: [{key: \"request.headers[x-tags]\", values: [\"a,b\"]}]}",
            ),
            get("/").header("x-tags", "a").header("x-tags", "b"),
            Want::Allow("foo/hdr", 0),
        ),
        (
            "when notValues: a missing header is not excluded (DENY fires)",
            deny(
                "need-token",
                "{when: [{key: \"request.headers[x-token]\", notValues: [\"*\"]}]}",
            ),
            get("/"),
            Want::Deny("foo/need-token", 0),
        ),
        (
            "when notValues: a present header passes",
            deny(
                "need-token",
                "{when: [{key: \"request.headers[x-token]\", notValues: [\"*\"]}]}",
            ),
            get("/").header("x-token", "abc"),
            Want::NoPolicy,
        ),
        (
            "when request.auth.claims matches an item of a list claim",
            one(
                "admins",
                "{when: [{key: \"request.auth.claims[groups]\", values: [admin]}]}",
            ),
            get("/").jwt(jwt(
                "https://idp",
                "alice",
                serde_json::json!({"groups": ["dev", "admin"]}),
            )),
            Want::Allow("foo/admins", 0),
        ),
        (
            "when request.auth.claims nested",
            one(
                "nested",
                "{when: [{key: \"request.auth.claims[realm][role]\", values: [\"oper*\"]}]}",
            ),
            get("/").jwt(jwt(
                "https://idp",
                "alice",
                serde_json::json!({"realm": {"role": "operator"}}),
            )),
            Want::Allow("foo/nested", 0),
        ),
        (
            "when request.auth.claims without a JWT",
            one(
                "admins",
                "{when: [{key: \"request.auth.claims[groups]\", values: [admin]}]}",
            ),
            get("/"),
            Want::NoMatch,
        ),
        (
            "when request.auth.audiences and presenter",
            one(
                "aud",
                "{when: [{key: request.auth.audiences, values: [api]}, {key: request.auth.presenter, values: [web]}]}",
            ),
            get("/").jwt(jwt(
                "https://idp",
                "alice",
                serde_json::json!({"aud": ["api", "x"], "azp": "web"}),
            )),
            Want::Allow("foo/aud", 0),
        ),
        (
            "when source.ip",
            one(
                "src",
                "{when: [{key: source.ip, values: [\"10.0.0.0/8\"]}]}",
            ),
            get("/").ip("10.0.0.9"),
            Want::Allow("foo/src", 0),
        ),
        (
            "when remote.ip notValues",
            one(
                "remote",
                "{when: [{key: remote.ip, notValues: [\"203.0.113.7\"]}]}",
            ),
            get("/").ip("10.0.0.1").remote("203.0.113.7"),
            Want::NoMatch,
        ),
        (
            "when destination.port",
            one(
                "dport",
                "{when: [{key: destination.port, values: [\"8000\", \"8443\"]}]}",
            ),
            get("/").port(8443),
            Want::Allow("foo/dport", 0),
        ),
        (
            "when destination.ip",
            one(
                "dip",
                "{when: [{key: destination.ip, values: [\"10.0.0.0/8\"]}]}",
            ),
            get("/").dest("10.2.3.4"),
            Want::Allow("foo/dip", 0),
        ),
        (
            "when connection.sni",
            one(
                "sni",
                "{when: [{key: connection.sni, values: [\"*.foo.svc.cluster.local\"]}]}",
            ),
            get("/").sni("outbound_.8000_._.httpbin.foo.svc.cluster.local"),
            Want::Allow("foo/sni", 0),
        ),
        (
            "when source.namespace / source.principal",
            one(
                "src-ns",
                &format!(
                    "{{when: [{{key: source.namespace, values: [default]}}, {{key: source.principal, values: [\"{sleep}\"]}}]}}"
                ),
            ),
            get("/").peer(sleep),
            Want::Allow("foo/src-ns", 0),
        ),
        (
            "conditions are ANDed",
            one(
                "both",
                "{when: [{key: source.ip, values: [\"10.0.0.0/8\"]}, {key: destination.port, values: [\"9000\"]}]}",
            ),
            get("/").ip("10.0.0.9"),
            Want::NoMatch,
        ),
        (
            "experimental.envoy.filters values never match here",
            one(
                "meta",
                "{when: [{key: \"experimental.envoy.filters.network.mysql_proxy[db.table]\", values: [\"[update]\"]}]}",
            ),
            get("/"),
            Want::NoMatch,
        ),
        // --- requestPrincipals (JWT) ---
        (
            "requestPrincipals [*] requires a JWT",
            one("jwt", r#"{from: [{source: {requestPrincipals: ["*"]}}]}"#),
            get("/"),
            Want::NoMatch,
        ),
        (
            "requestPrincipals [*] with a JWT",
            one("jwt", r#"{from: [{source: {requestPrincipals: ["*"]}}]}"#),
            get("/").jwt(jwt("https://idp.example", "alice", serde_json::json!({}))),
            Want::Allow("foo/jwt", 0),
        ),
        (
            "requestPrincipals exact iss/sub (issuer with slashes)",
            one(
                "alice",
                r#"{from: [{source: {requestPrincipals: ["https://idp.example/realms/x/alice"]}}]}"#,
            ),
            get("/").jwt(jwt(
                "https://idp.example/realms/x",
                "alice",
                serde_json::json!({}),
            )),
            Want::Allow("foo/alice", 0),
        ),
        (
            "requestPrincipals: another subject",
            one(
                "alice",
                r#"{from: [{source: {requestPrincipals: ["https://idp.example/alice"]}}]}"#,
            ),
            get("/").jwt(jwt("https://idp.example", "bob", serde_json::json!({}))),
            Want::NoMatch,
        ),
        (
            "notRequestPrincipals [*] in DENY denies requests without a JWT",
            deny(
                "require-jwt",
                r#"{from: [{source: {notRequestPrincipals: ["*"]}}]}"#,
            ),
            get("/"),
            Want::Deny("foo/require-jwt", 0),
        ),
        // --- TCP (no HTTP attributes) ---
        (
            "TCP: an ALLOW rule with HTTP-only fields is dropped (allow-nothing)",
            one("http-only", r#"{to: [{operation: {methods: [GET]}}]}"#),
            tcp(8000),
            Want::NoMatch,
        ),
        (
            "TCP: the same ALLOW still works for HTTP",
            one("http-only", r#"{to: [{operation: {methods: [GET]}}]}"#),
            get("/"),
            Want::Allow("foo/http-only", 0),
        ),
        (
            "TCP: an ALLOW rule mixing ports and paths is dropped too",
            one(
                "mixed",
                r#"{to: [{operation: {ports: ["8000"], paths: ["/x"]}}]}"#,
            ),
            tcp(8000),
            Want::NoMatch,
        ),
        (
            "TCP: an ALLOW on ports and principals works",
            one(
                "tcp-ok",
                &format!(
                    r#"{{from: [{{source: {{principals: ["{sleep}"]}}}}], to: [{{operation: {{ports: ["8000"]}}}}]}}"#
                ),
            ),
            tcp(8000).peer(sleep),
            Want::Allow("foo/tcp-ok", 0),
        ),
        (
            "TCP: a DENY with only HTTP fields denies all TCP traffic",
            deny("deny-get", r#"{to: [{operation: {methods: [GET]}}]}"#),
            tcp(3306),
            Want::Deny("foo/deny-get", 0),
        ),
        (
            "TCP: a DENY with ports and paths keeps the port",
            deny(
                "deny-port",
                r#"{to: [{operation: {ports: ["8000"], paths: ["/admin"]}}]}"#,
            ),
            tcp(9000),
            Want::NoPolicy,
        ),
        (
            "TCP: a DENY with ports and paths denies the port",
            deny(
                "deny-port",
                r#"{to: [{operation: {ports: ["8000"], paths: ["/admin"]}}]}"#,
            ),
            tcp(8000),
            Want::Deny("foo/deny-port", 0),
        ),
        (
            "TCP: a later rule of the same ALLOW still counts",
            one(
                "two",
                r#"{to: [{operation: {paths: ["/x"]}}]}, {to: [{operation: {ports: ["5432"]}}]}"#,
            ),
            tcp(5432),
            Want::Allow("foo/two", 1),
        ),
        // --- Which policies apply ---
        (
            "root namespace policy applies mesh-wide",
            ap(
                "istio-system",
                "mesh-deny",
                r#"{action: DENY, rules: [{to: [{operation: {paths: ["/debug*"]}}]}]}"#,
            ),
            get("/debug/pprof"),
            Want::Deny("istio-system/mesh-deny", 0),
        ),
        (
            "root namespace selector picks workloads in every namespace",
            ap(
                "istio-system",
                "httpbins",
                "{selector: {matchLabels: {app: httpbin}}, action: DENY, rules: [{}]}",
            ),
            get("/"),
            Want::Deny("istio-system/httpbins", 0),
        ),
        (
            "another namespace's policy does not apply",
            ap("bar", "deny-all", "{action: DENY, rules: [{}]}"),
            get("/"),
            Want::NoPolicy,
        ),
        (
            "a selector that does not match leaves the workload alone",
            ap(
                "foo",
                "other-app",
                "{selector: {matchLabels: {app: other}}, action: DENY, rules: [{}]}",
            ),
            get("/"),
            Want::NoPolicy,
        ),
        (
            "a selector matching a subset of the labels applies",
            ap(
                "foo",
                "v1",
                "{selector: {matchLabels: {version: v1}}, action: DENY, rules: [{}]}",
            ),
            get("/"),
            Want::Deny("foo/v1", 0),
        ),
        (
            "a mesh-wide ALLOW and a namespace ALLOW: either allows",
            format!(
                "{}{}",
                ap(
                    "istio-system",
                    "health",
                    r#"{rules: [{to: [{operation: {paths: ["/healthz"]}}]}]}"#
                ),
                allow_get
            ),
            get("/healthz").method("POST"),
            Want::Allow("istio-system/health", 0),
        ),
        (
            "the rule index is reported",
            one(
                "second",
                r#"{to: [{operation: {paths: ["/a"]}}]}, {to: [{operation: {paths: ["/b"]}}]}"#,
            ),
            get("/b"),
            Want::Allow("foo/second", 1),
        ),
    ]
}

#[test]
fn authorization_matrix() {
    let cases = matrix();
    assert!(cases.len() >= 40, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for (what, yaml, req, want) in &cases {
        let policies = compile(yaml);
        let got = req.run(&policies);
        if got.verdict != want.verdict() {
            failures.push(format!(
                "{what}: want {:?}, got {:?}",
                want.verdict(),
                got.verdict
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn cluster_local_principals_stand_for_the_mesh_trust_domain() {
    let yaml = ap(
        "foo",
        "p",
        r#"{rules: [{from: [{source: {principals: ["cluster.local/ns/default/sa/sleep"]}}]}]}"#,
    );
    let (policies, _) = compile_td(&yaml, "example.org");
    assert!(
        get("/")
            .peer("example.org/ns/default/sa/sleep")
            .run(&policies)
            .is_allowed()
    );
    assert!(
        !get("/")
            .peer("cluster.local/ns/default/sa/sleep")
            .run(&policies)
            .is_allowed()
    );
}

#[test]
fn with_peer_strips_the_spiffe_scheme() {
    let policies = compile(&ap(
        "foo",
        "p",
        r#"{rules: [{from: [{source: {principals: ["cluster.local/ns/a/sa/b"]}}]}]}"#,
    ));
    let headers = HeaderMap::new();
    let req = AuthzRequest::http("GET", "h", "/", &headers, 80)
        .with_peer("spiffe://cluster.local/ns/a/sa/b");
    assert_eq!(req.peer_principal, Some("cluster.local/ns/a/sa/b"));
    assert!(policies.evaluate(&req).is_allowed());
    let tcp = AuthzRequest::tcp(80).with_peer("cluster.local/ns/a/sa/b");
    assert!(policies.evaluate(&tcp).is_allowed());
}

#[test]
fn dry_run_deny_is_reported_not_enforced() {
    let yaml = ap_annotated(
        "foo",
        "deny-all",
        r#"{istio.io/dry-run: "true"}"#,
        "{action: DENY, rules: [{}]}",
    );
    let policies = compile(&yaml);
    let d = get("/").run(&policies);
    assert_eq!(d.verdict, Verdict::AllowedNoPolicy);
    assert_eq!(
        d.dry_run_deny,
        Some(DryRun {
            allowed: false,
            matched: Some(MatchedRule {
                policy: "foo/deny-all".into(),
                rule: 0
            })
        })
    );
    assert_eq!(d.dry_run_allow, None);
}

#[test]
fn dry_run_allow_is_reported_beside_the_enforced_verdict() {
    let yaml = format!(
        "{}{}",
        ap_annotated(
            "foo",
            "try-get",
            r#"{istio.io/dry-run: "1"}"#,
            "{rules: [{to: [{operation: {methods: [GET]}}]}]}"
        ),
        ap(
            "foo",
            "deny-post",
            "{action: DENY, rules: [{to: [{operation: {methods: [POST]}}]}]}"
        )
    );
    let policies = compile(&yaml);
    // No enforced ALLOW: the dry-run ALLOW does not turn on deny-by-default.
    let post = get("/").method("PUT").run(&policies);
    assert_eq!(post.verdict, Verdict::AllowedNoPolicy);
    assert_eq!(
        post.dry_run_allow,
        Some(DryRun {
            allowed: false,
            matched: None
        })
    );
    let got = get("/").run(&policies);
    assert_eq!(got.dry_run_allow.as_ref().map(|d| d.allowed), Some(true));
    assert_eq!(post.dry_run_deny, None);
}

#[test]
fn dry_run_false_and_bad_values_are_enforced() {
    let off = ap_annotated(
        "foo",
        "d",
        r#"{istio.io/dry-run: "false"}"#,
        "{action: DENY, rules: [{}]}",
    );
    assert!(!get("/").run(&compile(&off)).is_allowed());
    let bad = ap_annotated(
        "foo",
        "d",
        r#"{istio.io/dry-run: "maybe"}"#,
        "{action: DENY, rules: [{}]}",
    );
    let (policies, warnings) = compile_td(&bad, "cluster.local");
    assert!(!get("/").run(&policies).is_allowed());
    assert!(
        warnings.iter().any(|w| w.message.contains("not a boolean")),
        "{warnings:?}"
    );
}

#[test]
fn audit_never_changes_the_decision() {
    let yaml = format!(
        "{}{}",
        ap(
            "foo",
            "audit-admin",
            r#"{action: AUDIT, rules: [{to: [{operation: {paths: ["/admin*"]}}]}]}"#
        ),
        ap("foo", "allow-nothing", "{}")
    );
    let policies = compile(&yaml);
    let d = get("/admin").run(&policies);
    assert_eq!(d.verdict, Verdict::DeniedNoMatch);
    assert_eq!(
        d.audit,
        Some(MatchedRule {
            policy: "foo/audit-admin".into(),
            rule: 0
        })
    );
    let alone = compile(&ap("foo", "audit-all", "{action: AUDIT, rules: [{}]}"));
    let d = get("/").run(&alone);
    assert_eq!(d.verdict, Verdict::AllowedNoPolicy);
    assert!(d.audit.is_some());
    assert_eq!(get("/x").run(&compile(&yaml)).audit, None);
}

#[test]
fn custom_policies_ask_their_provider_once() {
    let yaml = format!(
        "{}{}{}",
        ap(
            "foo",
            "ext-a",
            r#"{action: CUSTOM, provider: {name: opa}, rules: [{to: [{operation: {paths: ["/ext*"]}}]}]}"#
        ),
        ap(
            "foo",
            "ext-b",
            r#"{action: CUSTOM, provider: {name: opa}, rules: [{}]}"#
        ),
        ap(
            "istio-system",
            "ext-mesh",
            r#"{action: CUSTOM, provider: {name: oauth2}, rules: [{to: [{operation: {methods: [POST]}}]}]}"#
        )
    );
    let policies = compile(&yaml);
    assert_eq!(
        policies.custom_providers().collect::<Vec<_>>(),
        ["oauth2", "opa"]
    );
    let d = get("/ext/x").method("POST").run(&policies);
    let asked: Vec<(&str, &str, usize)> = d
        .custom
        .iter()
        .map(|c| (&*c.provider, &*c.matched.policy, c.matched.rule))
        .collect();
    assert_eq!(
        asked,
        [
            ("oauth2", "istio-system/ext-mesh", 0),
            ("opa", "foo/ext-a", 0)
        ]
    );
    // CUSTOM does not decide by itself: no ALLOW policy, nothing denied.
    assert_eq!(d.verdict, Verdict::AllowedNoPolicy);
    let d = get("/other").run(&policies);
    assert_eq!(d.custom.len(), 1);
    assert_eq!(&*d.custom[0].matched.policy, "foo/ext-b");
}

#[test]
fn custom_on_tcp_ignores_http_only_fields() {
    let yaml = ap(
        "foo",
        "ext",
        r#"{action: CUSTOM, provider: {name: opa}, rules: [{to: [{operation: {paths: ["/ext*"]}}]}]}"#,
    );
    let policies = compile(&yaml);
    assert_eq!(tcp(8000).run(&policies).custom.len(), 1);
}

#[test]
fn target_refs_policies_are_skipped_with_a_warning() {
    let yaml = ap(
        "foo",
        "gw",
        "{targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: gw}], action: DENY, rules: [{}]}",
    );
    let (policies, warnings) = compile_td(&yaml, "cluster.local");
    assert!(policies.is_empty());
    assert!(get("/").run(&policies).is_allowed());
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].severity, Severity::Warning);
    assert!(
        warnings[0]
            .to_string()
            .contains("AuthorizationPolicy foo/gw")
    );
}

#[test]
fn invalid_values_drop_an_allow_rule_and_are_ignored_in_a_deny() {
    // Validation rejects these; compile must still do what Istio's builder does.
    let allow = ap(
        "foo",
        "bad-allow",
        r#"{rules: [{from: [{source: {ipBlocks: ["10.0.0.0/8", "not-an-ip"]}}]}, {to: [{operation: {paths: ["/ok"]}}]}]}"#,
    );
    let (policies, warnings) = compile_td(&allow, "cluster.local");
    assert_eq!(
        get("/").ip("10.1.1.1").run(&policies).verdict,
        Verdict::DeniedNoMatch
    );
    assert!(get("/ok").run(&policies).is_allowed());
    assert!(
        warnings.iter().any(|w| w.path == "spec.rules[0]"
            && w.message
                .contains("spec.rules[0].from[0].source.ipBlocks[1]")
            && w.message.contains("bad IP address")),
        "{warnings:?}"
    );
    let deny = ap(
        "foo",
        "bad-deny",
        r#"{action: DENY, rules: [{from: [{source: {ipBlocks: ["10.0.0.0/8", "not-an-ip"]}}]}]}"#,
    );
    let (policies, warnings) = compile_td(&deny, "cluster.local");
    assert!(!get("/").ip("10.1.1.1").run(&policies).is_allowed());
    assert!(get("/").ip("11.1.1.1").run(&policies).is_allowed());
    assert!(
        warnings
            .iter()
            .any(|w| w.path == "spec.rules[0].from[0].source.ipBlocks[1]"
                && w.message.contains("ignored")),
        "{warnings:?}"
    );
}

#[test]
fn unknown_when_keys_skip_the_rule_whatever_the_action() {
    let yaml = ap(
        "foo",
        "bad",
        "{action: DENY, rules: [{when: [{key: \"destination.labels[app]\", values: [x]}]}]}",
    );
    let set = Loader::new().load_str(&yaml);
    let (policies, warnings) =
        AuthzPolicies::compile(&set, &workload(), "istio-system", "cluster.local");
    assert!(get("/").run(&policies).is_allowed());
    assert!(
        warnings.iter().any(|w| w
            .message
            .contains("unknown attribute destination.labels[app]")),
        "{warnings:?}"
    );
}

#[test]
fn experimental_keys_warn() {
    let yaml = ap(
        "foo",
        "meta",
        "{action: DENY, rules: [{when: [{key: \"experimental.envoy.filters.a.b[c]\", notValues: [x]}]}]}",
    );
    let (policies, warnings) = compile_td(&yaml, "cluster.local");
    // Absent attribute: notValues holds, the DENY fires.
    assert!(!get("/").run(&policies).is_allowed());
    assert!(
        warnings
            .iter()
            .any(|w| w.path == "spec.rules[0].when[0]" && w.message.contains("absent")),
        "{warnings:?}"
    );
}

#[test]
fn decision_error_is_rbac_access_denied_naming_the_deny_policy() {
    let policies = compile(&ap("foo", "deny-all", "{action: DENY, rules: [{}]}"));
    let d = get("/").run(&policies);
    let err = d.error().expect("denied");
    assert_eq!(err.to_string(), "RBAC: access denied (policy foo/deny-all)");
    assert!(matches!(err, Error::Denied { policy: Some(p) } if &*p == "foo/deny-all"));
    assert_eq!(
        d.matched().map(ToString::to_string).as_deref(),
        Some("foo/deny-all rules[0]")
    );
    let allowed = get("/").run(&AuthzPolicies::default());
    assert!(allowed.error().is_none());
    assert!(allowed.matched().is_none());
}

#[test]
fn policy_order_is_root_namespace_then_workload_namespace() {
    let yaml = format!(
        "{}{}{}",
        ap("foo", "b", "{rules: [{}]}"),
        ap("istio-system", "a", "{rules: [{}]}"),
        ap("foo", "c", "{}")
    );
    let policies = compile(&yaml);
    assert_eq!(
        policies.policy_names().collect::<Vec<_>>(),
        ["istio-system/a", "foo/b", "foo/c"]
    );
    assert_eq!(policies.len(), 3);
    assert_eq!(
        get("/").run(&policies).verdict,
        Want::Allow("istio-system/a", 0).verdict()
    );
}

/// A tracing subscriber that records every event's level, target and rendered fields.
#[derive(Default, Clone)]
struct Recorder(Arc<Mutex<Vec<(tracing::Level, String, String)>>>);

impl tracing::Subscriber for Recorder {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        struct Fields(String);
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.push_str(&format!("{}={:?} ", field.name(), value));
            }
            fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                self.0.push_str(&format!("{}={} ", field.name(), value));
            }
        }
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        let meta = event.metadata();
        if let Ok(mut events) = self.0.lock() {
            events.push((*meta.level(), meta.target().to_string(), fields.0));
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[test]
fn decisions_are_logged_with_the_deciding_policy_and_rule() {
    let yaml = format!(
        "{}{}",
        ap(
            "foo",
            "allow-get",
            "{rules: [{to: [{operation: {paths: [/x]}}]}, {to: [{operation: {methods: [GET]}}]}]}"
        ),
        ap(
            "foo",
            "deny-admin",
            r#"{action: DENY, rules: [{to: [{operation: {paths: ["/admin*"]}}]}]}"#
        )
    );
    let policies = compile(&yaml);
    // tracing caches per-callsite interest globally; a test thread that registers one of
    // these callsites while this subscriber is being installed can leave it "never" for a
    // moment. Rebuild the cache under the subscriber, and try again if an event went missing.
    let mut events = Vec::new();
    for _ in 0..5 {
        let recorder = Recorder::default();
        tracing::subscriber::with_default(recorder.clone(), || {
            tracing::callsite::rebuild_interest_cache();
            get("/admin").run(&policies);
            get("/").run(&policies);
            get("/").method("POST").run(&policies);
        });
        events = recorder.0.lock().map(|e| e.clone()).unwrap_or_default();
        if events.len() == 3 {
            break;
        }
    }
    let [deny, allow, no_match] = events.as_slice() else {
        panic!("expected three events, got {events:?}");
    };
    assert_eq!(deny.0, tracing::Level::INFO);
    assert_eq!(deny.1, "tower_mesh::authz");
    assert!(
        deny.2.contains("policy=foo/deny-admin") && deny.2.contains("rule=0"),
        "{deny:?}"
    );
    assert!(
        deny.2.contains("DENY policy foo/deny-admin rules[0]"),
        "{deny:?}"
    );
    assert_eq!(allow.0, tracing::Level::DEBUG);
    assert!(
        allow.2.contains("policy=foo/allow-get") && allow.2.contains("rule=1"),
        "{allow:?}"
    );
    assert_eq!(no_match.0, tracing::Level::INFO);
    assert!(
        no_match.2.contains("ALLOW policies [foo/allow-get]"),
        "{no_match:?}"
    );
    assert!(no_match.2.contains("method=POST"), "{no_match:?}");
}

#[test]
fn the_index_finds_the_same_first_rule_as_trying_every_rule() {
    // Enough rules of every shape (indexed by exact path, path prefix, template prefix,
    // principal; unindexed) that the index is built, several of which match one request.
    let mut yaml = String::new();
    let shapes = [
        r#"{to: [{operation: {paths: ["/a/b"]}}]}"#,
        r#"{to: [{operation: {paths: ["/a/*"]}}]}"#,
        r#"{to: [{operation: {paths: ["/a/{*}/c"]}}]}"#,
        r#"{to: [{operation: {paths: ["/a/b", "/x*"]}}, {operation: {paths: ["/y/{**}"]}}]}"#,
        r#"{from: [{source: {principals: ["cluster.local/ns/n/sa/s"]}}]}"#,
        r#"{from: [{source: {principals: ["cluster.local/ns/n/*"]}}]}"#,
        r#"{to: [{operation: {paths: ["*.png"]}}]}"#,
        r#"{to: [{operation: {notPaths: ["/a*"]}}]}"#,
        r#"{to: [{operation: {methods: [POST]}}]}"#,
        "{}",
    ];
    for round in 0..3 {
        for (i, shape) in shapes.iter().enumerate() {
            // Skip some so the order of shapes differs between rounds.
            if (i + round) % 4 == 3 {
                continue;
            }
            yaml.push_str(&ap(
                "foo",
                &format!("p{round}-{i}"),
                &format!("{{rules: [{shape}]}}"),
            ));
        }
    }
    let policies = compile(&yaml);
    assert!(policies.http.allow.rules().len() >= 20);
    let requests = [
        get("/a/b"),
        get("/a/b").peer("cluster.local/ns/n/sa/s"),
        get("/a/z/c"),
        get("/a/"),
        get("/x/1"),
        get("/y/"),
        get("/y"),
        get("/img/logo.png").method("POST"),
        get("/q").peer("cluster.local/ns/n/sa/other"),
        get("/q").peer("cluster.local/ns/n/sa/s"),
        get("/q"),
        get("/q").method("POST"),
        tcp(80).peer("cluster.local/ns/n/sa/s"),
    ];
    let mut positions = Vec::new();
    for r in requests {
        let mut headers = HeaderMap::new();
        headers.insert("x", http::HeaderValue::from_static("y"));
        let req = AuthzRequest {
            peer_principal: r.peer,
            is_http: r.http,
            method: r.method,
            ..AuthzRequest::http(r.method, r.host, &r.path, &headers, r.port)
        };
        let cx = rule::Cx::new(&req);
        let set = if r.http {
            &policies.http
        } else {
            &policies.tcp
        };
        let rules = set.allow.rules();
        let linear = rules.iter().position(|rule| rule.matches(&cx));
        let indexed = set
            .allow
            .first(&cx)
            .and_then(|found| rules.iter().position(|rule| std::ptr::eq(rule, found)));
        assert_eq!(indexed, linear, "{r:?}");
        positions.push(linear);
    }
    // The requests do reach different rules (the comparison above is not vacuous).
    positions.sort();
    positions.dedup();
    assert!(positions.len() >= 5, "{positions:?}");
}
