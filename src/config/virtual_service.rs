//! `networking.istio.io` VirtualService: how requests for a host are routed.
//!
//! The model follows the CRD schema field by field: `hosts`, `gateways`, the ordered route
//! lists `http[]` ([`HttpRoute`]), `tls[]` ([`TlsRoute`]) and `tcp[]` ([`TcpRoute`]), and
//! `exportTo`. Keys are Istio's camelCase names (the snake_case spelling is accepted too).
//!
//! The decoder enforces the schema: types, enum values, durations, percent ranges, unknown
//! fields, oneof groups (a problem recorded at the object), and the "may not be null" checks
//! of list entries Istio makes (an `http[]` entry, a `route[]` entry, a `mirrors[]` entry, a
//! `tls[].match[]` / `tcp[].match[]` entry, a `headers` match value). A `null` entry still yields a default value
//! so that later indices keep their position in paths.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::common::{Percent, PortSelector, StringMatch};
use crate::config::decode::{Cx, Decode, Fields};
use crate::path::FieldPath;
use crate::yaml::{Node, Value};

/// The `spec` of a VirtualService.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct VirtualService {
    /// `hosts`: the destination hosts these routes apply to (FQDN, wildcard, short name or IP).
    /// Empty for a delegate VirtualService.
    pub hosts: Vec<String>,
    /// `gateways`: gateways and sidecars that apply these routes (`<ns>/<name>`, `<name>`, or
    /// the reserved `mesh`). Empty = `mesh` only.
    pub gateways: Vec<String>,
    /// `http`: ordered HTTP routes; the first match wins.
    pub http: Vec<HttpRoute>,
    /// `tls`: ordered routes for unterminated TLS / HTTPS traffic (routing by SNI).
    pub tls: Vec<TlsRoute>,
    /// `tcp`: ordered routes for opaque TCP traffic.
    pub tcp: Vec<TcpRoute>,
    /// `exportTo`: namespaces this VirtualService is visible to; empty = all.
    pub export_to: Vec<String>,
}

/// An entry of `http[]` (Istio's `HTTPRoute`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HttpRoute {
    /// `name`: for logs and stats.
    pub name: String,
    /// `match`: the match blocks, OR-ed; empty = match everything.
    pub matches: Vec<HttpMatchRequest>,
    /// `route`: weighted destinations to forward to.
    pub route: Vec<HttpRouteDestination>,
    /// `redirect`: answer with a redirect instead of forwarding.
    pub redirect: Option<HttpRedirect>,
    /// `directResponse`: answer with a fixed response instead of forwarding.
    pub direct_response: Option<HttpDirectResponse>,
    /// `delegate`: hand the route over to another VirtualService.
    pub delegate: Option<Delegate>,
    /// `rewrite`: URI / authority rewrite before forwarding.
    pub rewrite: Option<HttpRewrite>,
    /// `timeout`: whole-request timeout including retries; absent = disabled.
    pub timeout: Option<Duration>,
    /// `retries`: retry policy; absent = the mesh default retry policy.
    pub retries: Option<HttpRetry>,
    /// `fault`: fault injection (delay and/or abort).
    pub fault: Option<HttpFaultInjection>,
    /// `mirror`: a single destination to mirror requests to.
    pub mirror: Option<Destination>,
    /// `mirrors`: several mirror destinations (exclusive with `mirror`).
    pub mirrors: Vec<HttpMirrorPolicy>,
    /// `mirrorPercentage`: share of requests mirrored to `mirror`; absent = 100%.
    pub mirror_percentage: Option<Percent>,
    /// `mirrorPercent` (also spelled `mirror_percent`; deprecated integer form of
    /// `mirrorPercentage`).
    pub mirror_percent: Option<u32>,
    /// `corsPolicy`: CORS settings.
    pub cors_policy: Option<CorsPolicy>,
    /// `headers`: header manipulation for requests and responses.
    pub headers: Option<Headers>,
}

/// An entry of `http[].match[]` (Istio's `HTTPMatchRequest`). Fields inside one match are
/// AND-ed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HttpMatchRequest {
    /// `name`: label for logs; appended to the route name.
    pub name: String,
    /// `uri`: match on the path (query string excluded). An empty prefix is allowed here.
    pub uri: Option<StringMatch>,
    /// `scheme`: match on `:scheme`.
    pub scheme: Option<StringMatch>,
    /// `method`: match on `:method`.
    pub method: Option<StringMatch>,
    /// `authority`: match on `:authority` / `Host`.
    pub authority: Option<StringMatch>,
    /// `headers`: header name → match (`{}` or `regex: "*"` = present).
    pub headers: BTreeMap<String, StringMatch>,
    /// `withoutHeaders`: header name → match that must NOT hold.
    pub without_headers: BTreeMap<String, StringMatch>,
    /// `queryParams`: query parameter name → match.
    pub query_params: BTreeMap<String, StringMatch>,
    /// `port`: the request's destination (listener) port; absent = any.
    pub port: Option<u32>,
    /// `sourceLabels`: only clients whose workload carries these labels.
    pub source_labels: BTreeMap<String, String>,
    /// `gateways`: overrides the top-level `gateways` for this match.
    pub gateways: Vec<String>,
    /// `ignoreUriCase`: case-insensitive `uri` exact/prefix match; default false.
    pub ignore_uri_case: bool,
    /// `sourceNamespace`: only clients in this namespace; empty = any.
    pub source_namespace: String,
    /// `statPrefix`: stats prefix for this route.
    pub stat_prefix: String,
}

/// `destination` of a route, `mirror`, or `mirrors[].destination` (Istio's `Destination`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Destination {
    /// `host` (required): a service name from the registry (short name, FQDN).
    pub host: String,
    /// `subset`: a subset name from a DestinationRule; empty = none.
    pub subset: String,
    /// `port`: the port of the host; needed only when the service has several ports.
    pub port: Option<PortSelector>,
}

/// An entry of `http[].route[]` (Istio's `HTTPRouteDestination`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HttpRouteDestination {
    /// `destination` (required).
    pub destination: Option<Destination>,
    /// `weight`: relative share of traffic; default 0 (a lone destination gets 100%).
    /// Kept signed so that negative weights can be reported.
    pub weight: i32,
    /// `headers`: header manipulation applied when this destination is picked.
    pub headers: Option<Headers>,
}

/// An entry of `tls[].route[]` / `tcp[].route[]` (Istio's `RouteDestination`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouteDestination {
    /// `destination` (required).
    pub destination: Option<Destination>,
    /// `weight`: relative share of traffic; default 0.
    pub weight: i32,
}

/// `http[].redirect` (Istio's `HTTPRedirect`). Empty strings mean "unset", as in Istio.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HttpRedirect {
    /// `uri`: replaces the whole path.
    pub uri: String,
    /// `authority`: replaces the authority.
    pub authority: String,
    /// `port`: replaces the port (oneof with `derivePort`).
    pub port: Option<u32>,
    /// `derivePort`: how to derive the port (oneof with `port`).
    pub derive_port: Option<RedirectPortSelection>,
    /// `scheme`: replaces the scheme (`http` / `https`); empty = keep the original.
    pub scheme: String,
    /// `redirectCode`: the redirect status; absent = 301.
    pub redirect_code: Option<u32>,
    /// `prefixRewrite`: replaces the matched prefix of the path.
    pub prefix_rewrite: String,
}

crate::istio_enum! {
    /// `redirect.derivePort`.
    pub enum RedirectPortSelection {
        /// Omit the port: 80 for http, 443 for https.
        FromProtocolDefault => "FROM_PROTOCOL_DEFAULT",
        /// Use the port of the request (the listener port).
        FromRequestPort => "FROM_REQUEST_PORT",
    }
}

/// `http[].directResponse` (Istio's `HTTPDirectResponse`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HttpDirectResponse {
    /// `status` (required): the HTTP status to answer with.
    pub status: Option<u32>,
    /// `body`: the response body; absent = empty.
    pub body: Option<HttpBody>,
}

/// `directResponse.body` (Istio's `HTTPBody`): a oneof of `string` and `bytes`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HttpBody {
    /// `string`: the body as text.
    pub string: Option<String>,
    /// `bytes`: the body as base64 text (as written in the YAML).
    pub bytes: Option<String>,
}

/// `http[].delegate` (Istio's `Delegate`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Delegate {
    /// `name`: the delegate VirtualService.
    pub name: String,
    /// `namespace`: its namespace; empty = the namespace of this VirtualService.
    pub namespace: String,
}

/// `http[].rewrite` (Istio's `HTTPRewrite`). Empty strings mean "unset", as in Istio.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HttpRewrite {
    /// `uri`: replaces the matched prefix (prefix match) or the whole path.
    pub uri: String,
    /// `authority`: replaces `Host` / `:authority`.
    pub authority: String,
    /// `uriRegexRewrite`: regex rewrite of the path (exclusive with `uri`).
    pub uri_regex_rewrite: Option<RegexRewrite>,
}

/// `rewrite.uriRegexRewrite` (Istio's `RegexRewrite`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RegexRewrite {
    /// `match`: the RE2 pattern applied to the path.
    pub pattern: String,
    /// `rewrite`: the replacement, with `\1`..`\9` capture references.
    pub rewrite: String,
}

/// `http[].retries` (Istio's `HTTPRetry`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HttpRetry {
    /// `attempts`: number of retries (not counting the first try); absent counts as 0 for
    /// validation (Istio's int32 default).
    pub attempts: Option<i32>,
    /// `perTryTimeout`: timeout per attempt; absent = bounded by the route timeout.
    pub per_try_timeout: Option<Duration>,
    /// `retryOn`: comma-separated retry policies and status codes; empty = Istio's default
    /// (`connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes`).
    pub retry_on: String,
    /// `retryRemoteLocalities`: whether retries may go to other localities; absent = false.
    pub retry_remote_localities: Option<bool>,
    /// `retryIgnorePreviousHosts`: avoid hosts already tried; absent = true.
    pub retry_ignore_previous_hosts: Option<bool>,
    /// `backoff`: base interval of exponential backoff; absent = 25ms.
    pub backoff: Option<Duration>,
}

/// `http[].fault` (Istio's `HTTPFaultInjection`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HttpFaultInjection {
    /// `delay`: delay injection.
    pub delay: Option<Delay>,
    /// `abort`: abort injection.
    pub abort: Option<Abort>,
}

/// `fault.delay` (Istio's `HTTPFaultInjection.Delay`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Delay {
    /// `fixedDelay`: the delay (oneof with `exponentialDelay`).
    pub fixed_delay: Option<Duration>,
    /// `exponentialDelay`: not supported by Istio (rejected by validation).
    pub exponential_delay: Option<Duration>,
    /// `percentage`: share of requests delayed; absent = the fault never fires.
    pub percentage: Option<Percent>,
    /// `percent` (deprecated integer percentage, 0–100).
    pub percent: Option<i32>,
}

/// `fault.abort` (Istio's `HTTPFaultInjection.Abort`): one of `httpStatus`, `grpcStatus`,
/// `http2Error`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Abort {
    /// `httpStatus`: the HTTP status to answer with.
    pub http_status: Option<i32>,
    /// `grpcStatus`: the gRPC status name (`UNAVAILABLE`, ...).
    pub grpc_status: Option<String>,
    /// `http2Error`: not supported by Istio (rejected by validation).
    pub http2_error: Option<String>,
    /// `percentage`: share of requests aborted; absent = the fault never fires.
    pub percentage: Option<Percent>,
}

/// An entry of `http[].mirrors[]` (Istio's `HTTPMirrorPolicy`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HttpMirrorPolicy {
    /// `destination` (required).
    pub destination: Option<Destination>,
    /// `percentage`: share of requests mirrored; absent = 100%.
    pub percentage: Option<Percent>,
}

/// `http[].corsPolicy` (Istio's `CorsPolicy`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CorsPolicy {
    /// `allowOrigins`: origins allowed (matched origin echoed back).
    pub allow_origins: Vec<StringMatch>,
    /// `allowOrigin` (deprecated): exact origins allowed.
    pub allow_origin: Vec<String>,
    /// `allowMethods`: `Access-Control-Allow-Methods`.
    pub allow_methods: Vec<String>,
    /// `allowHeaders`: `Access-Control-Allow-Headers`.
    pub allow_headers: Vec<String>,
    /// `exposeHeaders`: `Access-Control-Expose-Headers`.
    pub expose_headers: Vec<String>,
    /// `maxAge`: `Access-Control-Max-Age` (whole seconds).
    pub max_age: Option<Duration>,
    /// `allowCredentials`: `Access-Control-Allow-Credentials`; absent = not sent.
    pub allow_credentials: Option<bool>,
    /// `unmatchedPreflights`: what to do with preflights that match no origin; absent =
    /// `FORWARD`.
    pub unmatched_preflights: Option<UnmatchedPreflights>,
}

crate::istio_enum! {
    /// `corsPolicy.unmatchedPreflights`.
    pub enum UnmatchedPreflights {
        /// Default: `FORWARD`.
        Unspecified => "UNSPECIFIED",
        /// Forward preflights that match no origin to the upstream.
        Forward => "FORWARD",
        /// Answer them without CORS headers.
        Ignore => "IGNORE",
    }
}

/// `headers` of a route or a destination (Istio's `Headers`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Headers {
    /// `request`: operations on the request headers.
    pub request: Option<HeaderOperations>,
    /// `response`: operations on the response headers.
    pub response: Option<HeaderOperations>,
}

/// `headers.request` / `headers.response` (Istio's `Headers.HeaderOperations`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeaderOperations {
    /// `set`: overwrite these headers.
    pub set: BTreeMap<String, String>,
    /// `add`: append to these headers.
    pub add: BTreeMap<String, String>,
    /// `remove`: remove these headers.
    pub remove: Vec<String>,
}

/// An entry of `tls[]` (Istio's `TLSRoute`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsRoute {
    /// `match` (required): the match blocks, OR-ed.
    pub matches: Vec<TlsMatchAttributes>,
    /// `route`: weighted destinations.
    pub route: Vec<RouteDestination>,
}

/// An entry of `tls[].match[]` (Istio's `TLSMatchAttributes`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsMatchAttributes {
    /// `sniHosts` (required): SNI names to match; each must fall within the VS hosts.
    pub sni_hosts: Vec<String>,
    /// `destinationSubnets`: destination IPs / CIDRs.
    pub destination_subnets: Vec<String>,
    /// `port`: the destination port; absent = any.
    pub port: Option<u32>,
    /// `sourceLabels`: only clients whose workload carries these labels.
    pub source_labels: BTreeMap<String, String>,
    /// `gateways`: overrides the top-level `gateways` for this match.
    pub gateways: Vec<String>,
    /// `sourceNamespace`: only clients in this namespace.
    pub source_namespace: String,
}

/// An entry of `tcp[]` (Istio's `TCPRoute`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TcpRoute {
    /// `match`: the match blocks, OR-ed; empty = all traffic.
    pub matches: Vec<L4MatchAttributes>,
    /// `route`: weighted destinations.
    pub route: Vec<RouteDestination>,
}

/// An entry of `tcp[].match[]` (Istio's `L4MatchAttributes`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct L4MatchAttributes {
    /// `destinationSubnets`: destination IPs / CIDRs.
    pub destination_subnets: Vec<String>,
    /// `port`: the destination port; absent = any.
    pub port: Option<u32>,
    /// `sourceLabels`: only clients whose workload carries these labels.
    pub source_labels: BTreeMap<String, String>,
    /// `gateways`: overrides the top-level `gateways` for this match.
    pub gateways: Vec<String>,
    /// `sourceNamespace`: only clients in this namespace.
    pub source_namespace: String,
    /// `sourceSubnet` (deprecated, ignored by Istio): the client subnet.
    pub source_subnet: String,
}

// ---------------------------------------------------------------------------------------------
// Decoders

/// Records `message` when `node` is an explicit `null` list entry; returns whether it was.
fn null_entry(node: &Node, path: &FieldPath<'_>, cx: &mut Cx, message: &str) -> bool {
    if node.value == Value::Null {
        cx.error(path, node, message);
        true
    } else {
        false
    }
}

/// Records a oneof violation at the object when more than one of `set` is true.
fn oneof(node: &Node, path: &FieldPath<'_>, cx: &mut Cx, set: &[bool], names: &str) {
    if set.iter().filter(|b| **b).count() > 1 {
        cx.error(
            path,
            node,
            format!("only one of {names} may be set (they are a oneof)"),
        );
    }
}

/// Decodes a map of header / query-parameter matches. A `null` value is refused in `headers`
/// (rule 28: "header match X cannot be null"); elsewhere Istio treats it as "present".
fn match_map(
    f: &mut Fields<'_, '_>,
    name: &str,
    path: &FieldPath<'_>,
    cx: &mut Cx,
) -> BTreeMap<String, StringMatch> {
    let Some(node) = f.node(name) else {
        return BTreeMap::new();
    };
    let path = path.field(name);
    let Value::Map(entries) = &node.value else {
        cx.type_error(&path, node, "a map");
        return BTreeMap::new();
    };
    let mut out = BTreeMap::new();
    for (k, v) in entries {
        let p = path.key(k);
        if v.value == Value::Null {
            if name == "headers" {
                cx.error(&p, v, format!("header match {k} cannot be null"));
            } else {
                out.insert(k.clone(), StringMatch::Any);
            }
            continue;
        }
        if let Some(m) = StringMatch::decode(v, &p, cx) {
            out.insert(k.clone(), m);
        }
    }
    out
}

impl Decode for VirtualService {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let spec = VirtualService {
            hosts: f.list("hosts", cx),
            gateways: f.list("gateways", cx),
            http: f.list("http", cx),
            tls: f.list("tls", cx),
            tcp: f.list("tcp", cx),
            export_to: f.list("exportTo", cx),
        };
        f.finish(cx);
        Some(spec)
    }
}

impl Decode for HttpRoute {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        if null_entry(node, path, cx, "http route may not be null") {
            return Some(HttpRoute::default());
        }
        let mut f = Fields::new(node, path, cx)?;
        let r = HttpRoute {
            name: f.get("name", cx).unwrap_or_default(),
            matches: f.list("match", cx),
            route: f.list("route", cx),
            redirect: f.get("redirect", cx),
            direct_response: f.get("directResponse", cx),
            delegate: f.get("delegate", cx),
            rewrite: f.get("rewrite", cx),
            timeout: f.get("timeout", cx),
            retries: f.get("retries", cx),
            fault: f.get("fault", cx),
            mirror: f.get("mirror", cx),
            mirrors: f.list("mirrors", cx),
            mirror_percentage: f.get("mirrorPercentage", cx),
            // Also matches the `mirror_percent` spelling the CRD lists separately.
            mirror_percent: f.get("mirrorPercent", cx),
            cors_policy: f.get("corsPolicy", cx),
            headers: f.get("headers", cx),
        };
        f.finish(cx);
        Some(r)
    }
}

impl Decode for HttpMatchRequest {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let m = HttpMatchRequest {
            name: f.get("name", cx).unwrap_or_default(),
            uri: f.get("uri", cx),
            scheme: f.get("scheme", cx),
            method: f.get("method", cx),
            authority: f.get("authority", cx),
            headers: match_map(&mut f, "headers", path, cx),
            without_headers: match_map(&mut f, "withoutHeaders", path, cx),
            query_params: match_map(&mut f, "queryParams", path, cx),
            port: f.get("port", cx),
            source_labels: f.map("sourceLabels", cx),
            gateways: f.list("gateways", cx),
            ignore_uri_case: f.flag("ignoreUriCase", cx),
            source_namespace: f.get("sourceNamespace", cx).unwrap_or_default(),
            stat_prefix: f.get("statPrefix", cx).unwrap_or_default(),
        };
        f.finish(cx);
        Some(m)
    }
}

impl Decode for Destination {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let d = Destination {
            host: f.get("host", cx).unwrap_or_default(),
            subset: f.get("subset", cx).unwrap_or_default(),
            port: f.get("port", cx),
        };
        f.finish(cx);
        Some(d)
    }
}

impl Decode for HttpRouteDestination {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        if null_entry(node, path, cx, "weight may not be nil") {
            return Some(HttpRouteDestination::default());
        }
        let mut f = Fields::new(node, path, cx)?;
        let d = HttpRouteDestination {
            destination: f.get("destination", cx),
            weight: f.get("weight", cx).unwrap_or(0),
            headers: f.get("headers", cx),
        };
        f.finish(cx);
        Some(d)
    }
}

impl Decode for RouteDestination {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        if null_entry(node, path, cx, "weight may not be nil") {
            return Some(RouteDestination::default());
        }
        let mut f = Fields::new(node, path, cx)?;
        let d = RouteDestination {
            destination: f.get("destination", cx),
            weight: f.get("weight", cx).unwrap_or(0),
        };
        f.finish(cx);
        Some(d)
    }
}

impl Decode for HttpRedirect {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let r = HttpRedirect {
            uri: f.get("uri", cx).unwrap_or_default(),
            authority: f.get("authority", cx).unwrap_or_default(),
            port: f.get("port", cx),
            derive_port: f.get("derivePort", cx),
            scheme: f.get("scheme", cx).unwrap_or_default(),
            redirect_code: f.get("redirectCode", cx),
            prefix_rewrite: f.get("prefixRewrite", cx).unwrap_or_default(),
        };
        f.finish(cx);
        oneof(
            node,
            path,
            cx,
            &[r.port.is_some(), r.derive_port.is_some()],
            "port or derivePort",
        );
        Some(r)
    }
}

impl Decode for HttpDirectResponse {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let r = HttpDirectResponse {
            status: f.get("status", cx),
            body: f.get("body", cx),
        };
        f.finish(cx);
        Some(r)
    }
}

impl Decode for HttpBody {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let b = HttpBody {
            string: f.get("string", cx),
            bytes: f.get("bytes", cx),
        };
        f.finish(cx);
        oneof(
            node,
            path,
            cx,
            &[b.string.is_some(), b.bytes.is_some()],
            "string or bytes",
        );
        Some(b)
    }
}

impl Decode for Delegate {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let d = Delegate {
            name: f.get("name", cx).unwrap_or_default(),
            namespace: f.get("namespace", cx).unwrap_or_default(),
        };
        f.finish(cx);
        Some(d)
    }
}

impl Decode for HttpRewrite {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let r = HttpRewrite {
            uri: f.get("uri", cx).unwrap_or_default(),
            authority: f.get("authority", cx).unwrap_or_default(),
            uri_regex_rewrite: f.get("uriRegexRewrite", cx),
        };
        f.finish(cx);
        Some(r)
    }
}

impl Decode for RegexRewrite {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let r = RegexRewrite {
            pattern: f.get("match", cx).unwrap_or_default(),
            rewrite: f.get("rewrite", cx).unwrap_or_default(),
        };
        f.finish(cx);
        Some(r)
    }
}

impl Decode for HttpRetry {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let r = HttpRetry {
            attempts: f.get("attempts", cx),
            per_try_timeout: f.get("perTryTimeout", cx),
            retry_on: f.get("retryOn", cx).unwrap_or_default(),
            retry_remote_localities: f.get("retryRemoteLocalities", cx),
            retry_ignore_previous_hosts: f.get("retryIgnorePreviousHosts", cx),
            backoff: f.get("backoff", cx),
        };
        f.finish(cx);
        Some(r)
    }
}

impl Decode for HttpFaultInjection {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let r = HttpFaultInjection {
            delay: f.get("delay", cx),
            abort: f.get("abort", cx),
        };
        f.finish(cx);
        Some(r)
    }
}

impl Decode for Delay {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let d = Delay {
            fixed_delay: f.get("fixedDelay", cx),
            exponential_delay: f.get("exponentialDelay", cx),
            percentage: f.get("percentage", cx),
            percent: f.get("percent", cx),
        };
        f.finish(cx);
        oneof(
            node,
            path,
            cx,
            &[d.fixed_delay.is_some(), d.exponential_delay.is_some()],
            "fixedDelay or exponentialDelay",
        );
        Some(d)
    }
}

impl Decode for Abort {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let a = Abort {
            http_status: f.get("httpStatus", cx),
            grpc_status: f.get("grpcStatus", cx),
            http2_error: f.get("http2Error", cx),
            percentage: f.get("percentage", cx),
        };
        f.finish(cx);
        oneof(
            node,
            path,
            cx,
            &[
                a.http_status.is_some(),
                a.grpc_status.is_some(),
                a.http2_error.is_some(),
            ],
            "httpStatus, grpcStatus or http2Error",
        );
        Some(a)
    }
}

impl Decode for HttpMirrorPolicy {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        if null_entry(node, path, cx, "mirror cannot be null") {
            return Some(HttpMirrorPolicy::default());
        }
        let mut f = Fields::new(node, path, cx)?;
        let m = HttpMirrorPolicy {
            destination: f.get("destination", cx),
            percentage: f.get("percentage", cx),
        };
        f.finish(cx);
        Some(m)
    }
}

impl Decode for CorsPolicy {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let c = CorsPolicy {
            allow_origins: f.list("allowOrigins", cx),
            allow_origin: f.list("allowOrigin", cx),
            allow_methods: f.list("allowMethods", cx),
            allow_headers: f.list("allowHeaders", cx),
            expose_headers: f.list("exposeHeaders", cx),
            max_age: f.get("maxAge", cx),
            allow_credentials: f.get("allowCredentials", cx),
            unmatched_preflights: f.get("unmatchedPreflights", cx),
        };
        f.finish(cx);
        Some(c)
    }
}

impl Decode for Headers {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let h = Headers {
            request: f.get("request", cx),
            response: f.get("response", cx),
        };
        f.finish(cx);
        Some(h)
    }
}

impl Decode for HeaderOperations {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let h = HeaderOperations {
            set: f.map("set", cx),
            add: f.map("add", cx),
            remove: f.list("remove", cx),
        };
        f.finish(cx);
        Some(h)
    }
}

impl Decode for TlsRoute {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let r = TlsRoute {
            matches: f.list("match", cx),
            route: f.list("route", cx),
        };
        f.finish(cx);
        Some(r)
    }
}

impl Decode for TlsMatchAttributes {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        if null_entry(node, path, cx, "TLS match may not be null") {
            return Some(TlsMatchAttributes::default());
        }
        let mut f = Fields::new(node, path, cx)?;
        let m = TlsMatchAttributes {
            sni_hosts: f.list("sniHosts", cx),
            destination_subnets: f.list("destinationSubnets", cx),
            port: f.get("port", cx),
            source_labels: f.map("sourceLabels", cx),
            gateways: f.list("gateways", cx),
            source_namespace: f.get("sourceNamespace", cx).unwrap_or_default(),
        };
        f.finish(cx);
        Some(m)
    }
}

impl Decode for TcpRoute {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let r = TcpRoute {
            matches: f.list("match", cx),
            route: f.list("route", cx),
        };
        f.finish(cx);
        Some(r)
    }
}

impl Decode for L4MatchAttributes {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        if null_entry(node, path, cx, "tcp match may not be nil") {
            return Some(L4MatchAttributes::default());
        }
        let mut f = Fields::new(node, path, cx)?;
        let m = L4MatchAttributes {
            destination_subnets: f.list("destinationSubnets", cx),
            port: f.get("port", cx),
            source_labels: f.map("sourceLabels", cx),
            gateways: f.list("gateways", cx),
            source_namespace: f.get("sourceNamespace", cx).unwrap_or_default(),
            source_subnet: f.get("sourceSubnet", cx).unwrap_or_default(),
        };
        f.finish(cx);
        Some(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Loader, Spec};

    fn load(yaml: &str) -> (VirtualService, Vec<String>) {
        let set = Loader::new().load_str(yaml);
        let problems = set
            .problems
            .iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect();
        let spec = match set.resources.first().map(|r| &r.spec) {
            Some(Spec::VirtualService(vs)) => vs.clone(),
            other => panic!("expected a VirtualService, got {other:?} ({problems:?})"),
        };
        (spec, problems)
    }

    const FULL: &str = r#"
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews, "*.example.com"]
  gateways: [mesh, istio-system/gw]
  exportTo: [".", other]
  http:
  - name: main
    match:
    - name: m1
      uri: {prefix: /api}
      scheme: {exact: https}
      method: {regex: "GET|POST"}
      authority: {exact: reviews.example.com}
      headers: {x-user: {exact: jason}, x-any: {}}
      withoutHeaders: {x-debug: {regex: "*"}}
      queryParams: {v: {prefix: "2"}}
      port: 9080
      sourceLabels: {app: productpage}
      gateways: [mesh]
      ignoreUriCase: true
      sourceNamespace: bookinfo
      statPrefix: reviews-api
    route:
    - destination: {host: reviews, subset: v2, port: {number: 9080}}
      weight: 75
      headers:
        request: {set: {x-a: b}, add: {x-c: d}, remove: [x-e]}
        response: {set: {x-f: g}}
    - destination: {host: reviews, subset: v3}
      weight: 25
    rewrite:
      authority: reviews.internal
      uriRegexRewrite: {match: "^/api/(.*)", rewrite: "/\\1"}
    timeout: 1.5s
    retries:
      attempts: 3
      perTryTimeout: 500ms
      retryOn: 5xx,reset,503
      retryRemoteLocalities: true
      retryIgnorePreviousHosts: false
      backoff: 50ms
    fault:
      delay: {fixedDelay: 2s, percentage: {value: 10}, percent: 5}
      abort: {grpcStatus: UNAVAILABLE, percentage: {value: 0.5}}
    mirror: {host: reviews-shadow, port: {number: 80}}
    mirrorPercentage: {value: 20}
    mirrorPercent: 20
    corsPolicy:
      allowOrigins: [{exact: "https://a.example.com"}, {regex: ".*\\.b\\.com"}]
      allowOrigin: ["https://c.example.com"]
      allowMethods: [GET, POST]
      allowHeaders: [x-a]
      exposeHeaders: [x-b]
      maxAge: 24h
      allowCredentials: false
      unmatchedPreflights: IGNORE
    headers:
      request: {set: {x-route: main}}
  - name: other
    redirect: {uri: /new, authority: a.example.com, derivePort: FROM_REQUEST_PORT, scheme: https, redirectCode: 308}
    mirrors:
    - destination: {host: m1}
      percentage: {value: 5}
  - directResponse: {status: 503, body: {string: unavailable}}
  - delegate: {name: reviews-delegate, namespace: other}
  - redirect: {prefixRewrite: /v2, port: 8443}
    rewrite: {uri: /x}
    fault: {abort: {httpStatus: 500}, delay: {exponentialDelay: 1s}}
  tls:
  - match:
    - sniHosts: [a.example.com]
      destinationSubnets: [10.0.0.0/8]
      port: 443
      sourceLabels: {app: a}
      gateways: [mesh]
      sourceNamespace: ns
    route:
    - destination: {host: a.example.com}
      weight: 100
  tcp:
  - match:
    - destinationSubnets: [10.1.0.0/16]
      port: 3306
      sourceLabels: {app: b}
      gateways: [mesh]
      sourceNamespace: ns
      sourceSubnet: 10.2.0.0/16
    route:
    - destination: {host: mysql, port: {number: 3306}}
"#;

    #[test]
    fn full_virtual_service_decodes_every_field() {
        let (vs, problems) = load(FULL);
        assert!(problems.is_empty(), "{problems:#?}");
        assert_eq!(vs.hosts, ["reviews", "*.example.com"]);
        assert_eq!(vs.gateways, ["mesh", "istio-system/gw"]);
        assert_eq!(vs.export_to, [".", "other"]);
        assert_eq!(vs.http.len(), 5);
        let h = &vs.http[0];
        assert_eq!(h.name, "main");
        let m = &h.matches[0];
        assert_eq!(m.name, "m1");
        assert_eq!(m.uri, Some(StringMatch::Prefix("/api".into())));
        assert_eq!(m.scheme, Some(StringMatch::Exact("https".into())));
        assert_eq!(m.method, Some(StringMatch::Regex("GET|POST".into())));
        assert_eq!(m.headers["x-any"], StringMatch::Any);
        assert_eq!(m.without_headers["x-debug"], StringMatch::Regex("*".into()));
        assert_eq!(m.query_params["v"], StringMatch::Prefix("2".into()));
        assert_eq!(m.port, Some(9080));
        assert_eq!(m.source_labels["app"], "productpage");
        assert_eq!(m.gateways, ["mesh"]);
        assert!(m.ignore_uri_case);
        assert_eq!(m.source_namespace, "bookinfo");
        assert_eq!(m.stat_prefix, "reviews-api");
        let r0 = &h.route[0];
        assert_eq!(
            r0.destination,
            Some(Destination {
                host: "reviews".into(),
                subset: "v2".into(),
                port: Some(PortSelector { number: 9080 }),
            })
        );
        assert_eq!(r0.weight, 75);
        let ops = r0
            .headers
            .as_ref()
            .and_then(|h| h.request.as_ref())
            .expect("request ops");
        assert_eq!(ops.set["x-a"], "b");
        assert_eq!(ops.add["x-c"], "d");
        assert_eq!(ops.remove, ["x-e"]);
        let rw = h.rewrite.as_ref().expect("rewrite");
        assert_eq!(rw.authority, "reviews.internal");
        assert_eq!(
            rw.uri_regex_rewrite,
            Some(RegexRewrite {
                pattern: "^/api/(.*)".into(),
                rewrite: "/\\1".into()
            })
        );
        assert_eq!(h.timeout, Some(Duration::from_millis(1500)));
        let rt = h.retries.as_ref().expect("retries");
        assert_eq!(rt.attempts, Some(3));
        assert_eq!(rt.per_try_timeout, Some(Duration::from_millis(500)));
        assert_eq!(rt.retry_on, "5xx,reset,503");
        assert_eq!(rt.retry_remote_localities, Some(true));
        assert_eq!(rt.retry_ignore_previous_hosts, Some(false));
        assert_eq!(rt.backoff, Some(Duration::from_millis(50)));
        let fault = h.fault.as_ref().expect("fault");
        let delay = fault.delay.as_ref().expect("delay");
        assert_eq!(delay.fixed_delay, Some(Duration::from_secs(2)));
        assert_eq!(delay.percentage, Percent::new(10.0));
        assert_eq!(delay.percent, Some(5));
        let abort = fault.abort.as_ref().expect("abort");
        assert_eq!(abort.grpc_status.as_deref(), Some("UNAVAILABLE"));
        assert_eq!(abort.percentage, Percent::new(0.5));
        assert_eq!(
            h.mirror.as_ref().map(|d| d.host.as_str()),
            Some("reviews-shadow")
        );
        assert_eq!(h.mirror_percentage, Percent::new(20.0));
        assert_eq!(h.mirror_percent, Some(20));
        let cors = h.cors_policy.as_ref().expect("cors");
        assert_eq!(cors.allow_origins.len(), 2);
        assert_eq!(cors.allow_origin, ["https://c.example.com"]);
        assert_eq!(cors.allow_methods, ["GET", "POST"]);
        assert_eq!(cors.allow_headers, ["x-a"]);
        assert_eq!(cors.expose_headers, ["x-b"]);
        assert_eq!(cors.max_age, Some(Duration::from_secs(24 * 3600)));
        assert_eq!(cors.allow_credentials, Some(false));
        assert_eq!(cors.unmatched_preflights, Some(UnmatchedPreflights::Ignore));
        assert!(h.headers.as_ref().is_some_and(|h| h.request.is_some()));

        let redirect = vs.http[1].redirect.as_ref().expect("redirect");
        assert_eq!(redirect.uri, "/new");
        assert_eq!(redirect.authority, "a.example.com");
        assert_eq!(
            redirect.derive_port,
            Some(RedirectPortSelection::FromRequestPort)
        );
        assert_eq!(redirect.scheme, "https");
        assert_eq!(redirect.redirect_code, Some(308));
        assert_eq!(vs.http[1].mirrors[0].percentage, Percent::new(5.0));
        let dr = vs.http[2].direct_response.as_ref().expect("directResponse");
        assert_eq!(dr.status, Some(503));
        assert_eq!(
            dr.body.as_ref().and_then(|b| b.string.as_deref()),
            Some("unavailable")
        );
        assert_eq!(
            vs.http[3].delegate,
            Some(Delegate {
                name: "reviews-delegate".into(),
                namespace: "other".into()
            })
        );
        let r4 = &vs.http[4];
        assert_eq!(r4.redirect.as_ref().and_then(|r| r.port), Some(8443));
        assert_eq!(
            r4.redirect.as_ref().map(|r| r.prefix_rewrite.as_str()),
            Some("/v2")
        );
        let f4 = r4.fault.as_ref().expect("fault");
        assert_eq!(f4.abort.as_ref().and_then(|a| a.http_status), Some(500));
        assert_eq!(
            f4.delay.as_ref().and_then(|d| d.exponential_delay),
            Some(Duration::from_secs(1))
        );

        let tls = &vs.tls[0].matches[0];
        assert_eq!(tls.sni_hosts, ["a.example.com"]);
        assert_eq!(tls.destination_subnets, ["10.0.0.0/8"]);
        assert_eq!(tls.port, Some(443));
        assert_eq!(tls.source_namespace, "ns");
        assert_eq!(vs.tls[0].route[0].weight, 100);
        let tcp = &vs.tcp[0].matches[0];
        assert_eq!(tcp.port, Some(3306));
        assert_eq!(tcp.source_subnet, "10.2.0.0/16");
        assert_eq!(tcp.gateways, ["mesh"]);
        assert_eq!(
            vs.tcp[0].route[0].destination.as_ref().and_then(|d| d.port),
            Some(PortSelector { number: 3306 })
        );
    }

    #[test]
    fn snake_case_spellings_are_accepted() {
        let (vs, problems) = load(
            "apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: r}
spec:
  hosts: [reviews]
  export_to: [\"*\"]
  http:
  - match: [{ignore_uri_case: true, without_headers: {x: {exact: y}}, source_labels: {app: a}}]
    route:
    - destination: {host: reviews}
    mirror: {host: m}
    mirror_percent: 30
    retries: {attempts: 2, per_try_timeout: 1s, retry_on: 5xx}
    cors_policy: {allow_origins: [{prefix: \"https://\"}], max_age: 10s}
    rewrite: {uri_regex_rewrite: {match: a, rewrite: b}}
",
        );
        assert!(problems.is_empty(), "{problems:#?}");
        assert_eq!(vs.export_to, ["*"]);
        let h = &vs.http[0];
        assert!(h.matches[0].ignore_uri_case);
        assert_eq!(h.matches[0].source_labels["app"], "a");
        assert_eq!(h.mirror_percent, Some(30));
        let rt = h.retries.as_ref().expect("retries");
        assert_eq!(rt.per_try_timeout, Some(Duration::from_secs(1)));
        assert_eq!(rt.retry_on, "5xx");
        assert_eq!(
            h.cors_policy.as_ref().and_then(|c| c.max_age),
            Some(Duration::from_secs(10))
        );
        assert!(
            h.rewrite
                .as_ref()
                .is_some_and(|r| r.uri_regex_rewrite.is_some())
        );
    }

    #[test]
    fn schema_problems_are_reported_with_paths() {
        let (_, problems) = load(
            "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: r}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, bogus: 1}
      weight: 2147483648
    redirect: {port: 80, derivePort: FROM_PROTOCOL_DEFAULT}
    corsPolicy: {unmatchedPreflights: DROP}
    fault: {abort: {httpStatus: 500, grpcStatus: OK}}
    retries: {attempts: 1, retryRemoteLocalities: \"yes\"}
  tcp:
  - match: [null]
    route: [null]
",
        );
        let has = |needle: &str| problems.iter().any(|p| p.contains(needle));
        assert!(
            has("spec.http[0].route[0].destination.bogus: unknown field"),
            "{problems:#?}"
        );
        assert!(has(
            "spec.http[0].route[0].weight: 2147483648 is out of range"
        ));
        assert!(has("spec.http[0].redirect: only one of port or derivePort"));
        assert!(has(
            "spec.http[0].corsPolicy.unmatchedPreflights: Unsupported value: \"DROP\""
        ));
        assert!(has(
            "spec.http[0].fault.abort: only one of httpStatus, grpcStatus"
        ));
        assert!(has(
            "spec.http[0].retries.retryRemoteLocalities: expected a boolean"
        ));
        assert!(has("spec.tcp[0].match[0]: tcp match may not be nil"));
        assert!(has("spec.tcp[0].route[0]: weight may not be nil"));
    }
}
