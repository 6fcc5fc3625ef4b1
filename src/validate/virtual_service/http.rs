//! VirtualService rules 46–76: mirrors, redirect, directResponse, retries, rewrite, timeout,
//! fault, corsPolicy, TLS and TCP routes, unreachable rules.
//!
//! Also the Duration rule (4) for `retries.perTryTimeout`, `retries.backoff`,
//! `fault.delay.fixedDelay` / `exponentialDelay` and `corsPolicy.maxAge`, and the Port rule (6)
//! for `redirect.port`. (`http[].timeout` and the `match.port` of every route kind are checked in
//! `mod.rs`, whose `check_destination` also serves `mirror` and `mirrors[]` here.)

use std::collections::BTreeMap;

use crate::config::Resource;
use crate::config::common::{Percent, StringMatch};
use crate::config::virtual_service::{
    Abort, CorsPolicy, Delay, HttpDirectResponse, HttpFaultInjection, HttpMatchRequest,
    HttpRedirect, HttpRetry, HttpRewrite, HttpRoute, L4MatchAttributes, TcpRoute,
    TlsMatchAttributes, TlsRoute, VirtualService,
};
use crate::path::FieldPath;
use crate::validate::Findings;
use crate::validate::common::{
    check_duration, check_port, is_ip, validate_ip_or_cidr, validate_wildcard_domain,
};

use super::{check_destination, check_regex, host_subset_of};

/// Checks rules 46–76 over the whole spec (`path` is `spec`).
pub(super) fn check(
    res: &Resource,
    spec: &VirtualService,
    path: &FieldPath<'_>,
    out: &mut Findings<'_>,
) {
    let http = path.field("http");
    for (i, route) in spec.http.iter().enumerate() {
        check_http_route(route, &http.index(i), out);
    }
    let tls = path.field("tls");
    for (i, route) in spec.tls.iter().enumerate() {
        check_tls_route(spec, route, &tls.index(i), out);
    }
    let tcp = path.field("tcp");
    for (i, route) in spec.tcp.iter().enumerate() {
        check_tcp_route(route, &tcp.index(i), out);
    }
    unreachable_http(res, &spec.http, &http, out);
    unreachable_l4(
        res,
        &tls,
        out,
        spec.tls.iter().map(|r: &TlsRoute| &r.matches[..]),
    );
    unreachable_l4(
        res,
        &tcp,
        out,
        spec.tcp.iter().map(|r: &TcpRoute| &r.matches[..]),
    );
}

// ---------------------------------------------------------------------------------------------
// HTTP routes

fn check_http_route(route: &HttpRoute, p: &FieldPath<'_>, out: &mut Findings<'_>) {
    // Rule 46: the deprecated integer `mirrorPercent`.
    if let Some(v) = route.mirror_percent {
        let mp = p.field("mirrorPercent");
        if v > 100 {
            out.error(
                46,
                &mp,
                format!("mirror_percent must have a max value of 100 (it has {v})"),
            );
        }
        out.warn(
            46,
            &mp,
            "using deprecated setting \"mirrorPercent\", use \"mirrorPercentage\" instead",
        );
    }
    // Rules 42–44 for `mirror`, 47 for `mirrors[]`.
    if let Some(d) = &route.mirror {
        check_destination(out, &p.field("mirror"), d);
    }
    let mirrors = p.field("mirrors");
    for (j, m) in route.mirrors.iter().enumerate() {
        let mp = mirrors.index(j);
        match &m.destination {
            Some(d) => check_destination(out, &mp.field("destination"), d),
            None => out.error(47, &mp, "destination is required for mirrors"),
        }
        // The percentage range (0..100) is enforced when `Percent` is decoded.
    }
    if let Some(r) = &route.redirect {
        check_redirect(r, &route.matches, &p.field("redirect"), out);
    }
    if let Some(d) = &route.direct_response {
        check_direct_response(d, &p.field("directResponse"), out);
    }
    if let Some(r) = &route.retries {
        check_retries(r, &p.field("retries"), out);
    }
    if let Some(r) = &route.rewrite {
        check_rewrite(r, &p.field("rewrite"), out);
    }
    if let Some(f) = &route.fault {
        check_fault(f, &p.field("fault"), out);
    }
    if let Some(c) = &route.cors_policy {
        check_cors(c, &p.field("corsPolicy"), out);
    }
}

/// Rules 48–52 and 6 for `redirect`.
fn check_redirect(
    r: &HttpRedirect,
    matches: &[HttpMatchRequest],
    p: &FieldPath<'_>,
    out: &mut Findings<'_>,
) {
    if !r.uri.is_empty() && !r.prefix_rewrite.is_empty() {
        out.error(
            48,
            p,
            "redirect may only specify one of uri or prefixRewrite",
        );
    }
    if !r.prefix_rewrite.is_empty() {
        let all_prefix = matches
            .iter()
            .all(|m| matches!(m.uri, None | Some(StringMatch::Prefix(_))));
        if !all_prefix {
            out.error(
                49,
                &p.field("prefixRewrite"),
                "redirect.prefixRewrite requires all URI matches to use prefix match type",
            );
        }
    }
    let has_port = r.port.is_some() || r.derive_port.is_some();
    if r.uri.is_empty()
        && r.prefix_rewrite.is_empty()
        && r.authority.is_empty()
        && r.scheme.is_empty()
        && !has_port
    {
        out.error(
            50,
            p,
            "redirect must specify URI, prefixRewrite, authority, scheme, or port",
        );
    }
    if let Some(code) = r.redirect_code
        && code != 0
        && !(300..=399).contains(&code)
    {
        out.error(
            51,
            &p.field("redirectCode"),
            format!("{code} is not a valid redirect code, must be 3xx"),
        );
    }
    if !r.scheme.is_empty() && r.scheme != "http" && r.scheme != "https" {
        out.error(
            52,
            &p.field("scheme"),
            format!(
                "invalid redirect scheme {:?}, must be \"http\" or \"https\"",
                r.scheme
            ),
        );
    }
    if let Some(port) = r.port
        && port > 0
    {
        check_port(out, &p.field("port"), port);
    }
}

/// Istio accepts statuses 200..=600 although its message says 200-599 (rules 53, 64).
fn http_status_ok(status: i64) -> bool {
    (200..=600).contains(&status)
}

const KB: usize = 1024;
const MB: usize = 1024 * KB;

/// Rules 53–54 for `directResponse`.
fn check_direct_response(d: &HttpDirectResponse, p: &FieldPath<'_>, out: &mut Findings<'_>) {
    match d.status {
        None => out.error(53, p, "directResponse.status is required"),
        Some(s) if !http_status_ok(i64::from(s)) => out.error(
            53,
            &p.field("status"),
            format!("HTTP status {s} is not in range 200-599"),
        ),
        Some(_) => {}
    }
    let Some(body) = &d.body else { return };
    let bp = p.field("body");
    let sized = match (&body.string, &body.bytes) {
        (Some(s), _) => Some((s.len(), bp.field("string"))),
        (None, Some(b)) => Some((base64_decoded_len(b), bp.field("bytes"))),
        (None, None) => None,
    };
    if let Some((size, fp)) = sized {
        if size > MB {
            out.error(
                54,
                &fp,
                format!(
                    "large direct_responses may impact control plane performance, must be less than 1MB (body is {size} bytes)"
                ),
            );
        } else if size > 100 * KB {
            out.warn(
                54,
                &fp,
                format!(
                    "large direct_responses may impact control plane performance (body is {size} bytes)"
                ),
            );
        }
    }
}

/// The size of the data a base64 text decodes to (whitespace ignored, padding optional).
fn base64_decoded_len(text: &str) -> usize {
    let chars = text.bytes().filter(|b| !b.is_ascii_whitespace());
    let (mut n, mut pad) = (0usize, 0usize);
    for c in chars {
        n += 1;
        if c == b'=' {
            pad += 1;
        } else {
            pad = 0;
        }
    }
    (n - pad) * 3 / 4
}

/// Retry policies Envoy knows (`x-envoy-retry-on` and `x-envoy-retry-grpc-on`), as Istio
/// accepts them in `retries.retryOn`.
const RETRY_ON_POLICIES: [&str; 16] = [
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "envoy-ratelimited",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// The HTTP status codes Go's `http.StatusText` has a text for: Istio accepts exactly these
/// as numeric `retryOn` items.
const GO_STATUS_CODES: [i64; 62] = [
    100, 101, 102, 103, //
    200, 201, 202, 203, 204, 205, 206, 207, 208, 226, //
    300, 301, 302, 303, 304, 305, 307, 308, //
    400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415, 416, 417, 418,
    421, 422, 423, 424, 425, 426, 428, 429, 431, 451, //
    500, 501, 502, 503, 504, 505, 506, 507, 508, 510, 511,
];

/// Whether one `retryOn` item is accepted: a known policy, or an integer (as Go's
/// `strconv.Atoi` reads it: optional sign, decimal digits, no spaces) that is a known status.
fn retry_on_item_ok(item: &str) -> bool {
    RETRY_ON_POLICIES.contains(&item)
        || item
            .parse::<i64>()
            .is_ok_and(|code| GO_STATUS_CODES.contains(&code))
}

/// Rules 55–58 (and 4) for `retries`.
fn check_retries(r: &HttpRetry, p: &FieldPath<'_>, out: &mut Findings<'_>) {
    let attempts = r.attempts.unwrap_or(0);
    if attempts < 0 {
        out.error(55, &p.field("attempts"), "attempts cannot be negative");
    }
    if attempts == 0
        && (r.per_try_timeout.is_some()
            || !r.retry_on.is_empty()
            || r.retry_remote_localities.is_some())
    {
        out.error(
            56,
            p,
            "http retry policy configured when attempts are set to 0 (disabled)",
        );
    }
    // Rule 57 (the Duration rule, 4).
    if let Some(d) = r.per_try_timeout {
        check_duration(out, &p.field("perTryTimeout"), d);
    }
    if let Some(d) = r.backoff {
        check_duration(out, &p.field("backoff"), d);
    }
    // Rule 58: Istio splits on ',' and does not trim, so "5xx, reset" is refused.
    if !r.retry_on.is_empty() {
        let rp = p.field("retryOn");
        for item in r.retry_on.split(',') {
            if !retry_on_item_ok(item) {
                out.error(58, &rp, format!("{item:?} is not a valid retryOn policy"));
            }
        }
    }
}

/// Rules 59–60 for `rewrite`.
fn check_rewrite(r: &HttpRewrite, p: &FieldPath<'_>, out: &mut Findings<'_>) {
    if !r.uri.is_empty() && r.uri_regex_rewrite.is_some() {
        out.error(
            59,
            p,
            "rewrite may only contain one of URI or UriRegexRewrite",
        );
    }
    if r.uri.is_empty() && r.uri_regex_rewrite.is_none() && r.authority.is_empty() {
        out.error(
            59,
            p,
            "rewrite must specify at least one of URI, UriRegexRewrite, or authority. Only one of URI or UriRegexRewrite may be specified",
        );
    }
    if let Some(rr) = &r.uri_regex_rewrite {
        let rp = p.field("uriRegexRewrite");
        if rr.pattern.is_empty() || rr.rewrite.is_empty() {
            out.error(
                60,
                &rp,
                "UriRegexRewrite requires both Rewrite and Match fields to be specified",
            );
        }
        if !rr.pattern.is_empty()
            && let Some(e) = regex_problem(&rr.pattern)
        {
            out.error(60, &rp.field("match"), e);
        }
    }
}

/// Why `re` is not a regex Istio accepts (≤1024 characters, RE2 syntax), if it is not.
fn regex_problem(re: &str) -> Option<String> {
    if re.len() > 1024 {
        return Some("regex is too large, max length allowed is 1024".into());
    }
    let err = regex::Regex::new(re).err()?;
    let text = err.to_string();
    // The regex crate renders a multi-line diagram; keep its last "error: ..." line.
    let short = text
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .unwrap_or_else(|| text.trim());
    Some(format!(
        "invalid regex {re:?}: {short}; Istio uses RE2 style regex-based match (https://github.com/google/re2/wiki/Syntax)"
    ))
}

/// The 17 gRPC status names `fault.abort.grpcStatus` may use.
const GRPC_STATUSES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// Rules 62–67 (and 4) for `fault`.
fn check_fault(f: &HttpFaultInjection, p: &FieldPath<'_>, out: &mut Findings<'_>) {
    if f.abort.is_none() && f.delay.is_none() {
        out.error(
            62,
            p,
            "HTTP fault injection must have an abort and/or a delay",
        );
    }
    if let Some(a) = &f.abort {
        check_abort(a, &p.field("abort"), out);
    }
    if let Some(d) = &f.delay {
        check_delay(d, &p.field("delay"), out);
    }
}

/// Rule 63: a fault percentage is 0, or within [0.0001, 100].
fn check_fault_percentage(pct: Option<Percent>, p: &FieldPath<'_>, out: &mut Findings<'_>) {
    let Some(pct) = pct else { return };
    let v = pct.value();
    if !(v == 0.0 || (0.0001..=100.0).contains(&v)) {
        let pp = p.field("percentage");
        out.error(
            63,
            &pp.field("value"),
            format!("percentage {v} is neither 0.0, nor in range [0.0001, 100.0]"),
        );
    }
}

fn check_abort(a: &Abort, p: &FieldPath<'_>, out: &mut Findings<'_>) {
    check_fault_percentage(a.percentage, p, out);
    if let Some(s) = a.http_status {
        if !http_status_ok(i64::from(s)) {
            out.error(
                64,
                &p.field("httpStatus"),
                format!("HTTP status {s} is not in range 200-599"),
            );
        }
    } else if let Some(g) = &a.grpc_status {
        if !GRPC_STATUSES.contains(&g.as_str()) {
            out.error(
                65,
                &p.field("grpcStatus"),
                format!(
                    "gRPC status {g:?} is not supported. See https://github.com/grpc/grpc/blob/master/doc/statuscodes.md for a list of supported codes, for example 'NOT_FOUND'"
                ),
            );
        }
    } else if a.http2_error.is_some() {
        out.error(
            66,
            &p.field("http2Error"),
            "HTTP/2 abort fault injection not supported yet",
        );
    } else {
        out.warn(66, p, "abort configured, but error type not set");
    }
}

fn check_delay(d: &Delay, p: &FieldPath<'_>, out: &mut Findings<'_>) {
    check_fault_percentage(d.percentage, p, out);
    if let Some(fd) = d.fixed_delay {
        check_duration(out, &p.field("fixedDelay"), fd);
    }
    if let Some(ed) = d.exponential_delay {
        let ep = p.field("exponentialDelay");
        check_duration(out, &ep, ed);
        out.error(67, &ep, "exponentialDelay not supported yet");
    }
}

/// Methods `corsPolicy.allowMethods` may list (case-sensitive).
const CORS_METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE", "*",
];

/// An HTTP token (RFC 7230 `tchar`s), as header names must be.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c))
}

/// Rules 68–71 (and 4) for `corsPolicy`.
fn check_cors(c: &CorsPolicy, p: &FieldPath<'_>, out: &mut Findings<'_>) {
    let origins = p.field("allowOrigins");
    for (i, o) in c.allow_origins.iter().enumerate() {
        let op = origins.index(i);
        let value = match o {
            StringMatch::Exact(v) | StringMatch::Prefix(v) | StringMatch::Regex(v) => v.as_str(),
            StringMatch::Any => "",
        };
        if value.is_empty() {
            out.error(
                68,
                &op,
                "'' is not a valid match type for CORS allow origins",
            );
        } else if let StringMatch::Regex(re) = o {
            // Istio checks it as any StringMatch regex (rule 31).
            check_regex(out, &op.field("regex"), "corsPolicy.allowOrigins", re);
        }
    }
    let methods = p.field("allowMethods");
    for (i, m) in c.allow_methods.iter().enumerate() {
        if !CORS_METHODS.contains(&m.as_str()) {
            out.error(
                69,
                &methods.index(i),
                format!("{m:?} is not a supported HTTP method"),
            );
        }
    }
    for field in ["allowHeaders", "exposeHeaders"] {
        let names = if field == "allowHeaders" {
            &c.allow_headers
        } else {
            &c.expose_headers
        };
        let fp = p.field(field);
        for (i, name) in names.iter().enumerate() {
            if name.is_empty() {
                out.error(70, &fp.index(i), "header name cannot be empty");
            } else if name != "*" && !is_token(name) {
                out.error(
                    70,
                    &fp.index(i),
                    format!("header name {name:?} is not a valid header name"),
                );
            }
        }
    }
    if let Some(age) = c.max_age {
        let ap = p.field("maxAge");
        check_duration(out, &ap, age);
        if age.subsec_nanos() > 0 {
            out.error(
                71,
                &ap,
                "max_age duration is accurate only to seconds precision",
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// TLS and TCP routes

/// Rules 72–74 for a `tls[]` entry.
fn check_tls_route(
    spec: &VirtualService,
    route: &TlsRoute,
    p: &FieldPath<'_>,
    out: &mut Findings<'_>,
) {
    if route.matches.is_empty() {
        out.error(72, p, "TLS route must have at least one match condition");
    }
    let matches = p.field("match");
    for (j, m) in route.matches.iter().enumerate() {
        let mp = matches.index(j);
        if m.sni_hosts.is_empty() {
            out.error(72, &mp, "TLS match must have at least one SNI host");
        }
        let snis = mp.field("sniHosts");
        for (k, sni) in m.sni_hosts.iter().enumerate() {
            check_sni_host(spec, sni, &snis.index(k), out);
        }
        check_destination_subnets(&m.destination_subnets, &mp, out);
    }
    if route.route.is_empty() {
        out.error(72, p, "TLS route is required");
    }
}

/// Rule 73: an SNI host is a wildcard domain within one of the VirtualService hosts; an IP
/// address is accepted with a warning.
fn check_sni_host(spec: &VirtualService, sni: &str, p: &FieldPath<'_>, out: &mut Findings<'_>) {
    // Istio's isGateway(): true unless `mesh` is listed (so also when no gateway is listed).
    let gateway_bound = !spec.gateways.iter().any(|g| g == "mesh");
    if let Err(e) = validate_sni_domain(sni, gateway_bound) {
        if is_ip(sni) {
            out.warn(
                73,
                p,
                format!(
                    "using an IP address ({sni:?}) goes against SNI spec and most clients do not support this"
                ),
            );
        } else {
            out.error(73, p, e);
        }
        return;
    }
    if !spec.hosts.iter().any(|h| host_subset_of(sni, h)) {
        out.error(
            73,
            p,
            format!(
                "SNI host {sni:?} is not a compatible subset of any of the virtual service hosts: [{}]",
                spec.hosts.join(", ")
            ),
        );
    }
}

/// A wildcard domain; for a gateway-bound VirtualService also the `outbound_.<port>_._.<host>`
/// names Istio generates for AUTO_PASSTHROUGH.
fn validate_sni_domain(sni: &str, gateway_bound: bool) -> Result<(), String> {
    if !(gateway_bound && sni.starts_with("outbound_") && sni.len() <= 255) {
        return validate_wildcard_domain(sni);
    }
    const FORMAT: &str = "outbound_.<port>_._.<hostname>";
    let parts: Vec<&str> = sni.split('_').collect();
    if parts.len() < 4 {
        return Err(format!(
            "domain name {sni} invalid, should follow '{FORMAT}' format"
        ));
    }
    let port = parts[1].trim_matches('.');
    if !port.bytes().any(|c| c.is_ascii_digit()) {
        return Err(format!(
            "domain name {sni:?} invalid (label {port:?} invalid). should follow {FORMAT} format"
        ));
    }
    let host = parts[3].trim_matches('.');
    if !host.bytes().any(|c| c.is_ascii_alphabetic()) {
        return Err(format!(
            "domain name {sni:?} invalid (label {host:?} invalid). should follow {FORMAT} format"
        ));
    }
    Ok(())
}

/// Rule 74, shared by TLS and TCP matches. (Their `port`, rule 6, is checked in `mod.rs`
/// with the HTTP match ports.)
fn check_destination_subnets(subnets: &[String], p: &FieldPath<'_>, out: &mut Findings<'_>) {
    let sp = p.field("destinationSubnets");
    for (k, s) in subnets.iter().enumerate() {
        if let Err(e) = validate_ip_or_cidr(s) {
            out.error(74, &sp.index(k), e);
        }
    }
}

/// Rules 74–75 for a `tcp[]` entry. A `null` match is refused by the decoder.
fn check_tcp_route(route: &TcpRoute, p: &FieldPath<'_>, out: &mut Findings<'_>) {
    let matches = p.field("match");
    for (j, m) in route.matches.iter().enumerate() {
        check_destination_subnets(&m.destination_subnets, &matches.index(j), out);
    }
    if route.route.is_empty() {
        out.error(75, p, "TCP route is required");
    }
}

// ---------------------------------------------------------------------------------------------
// Rule 76: unreachable rules and ineffective matches

/// A match block for rule 76.
trait MatchBlock {
    /// `name` of the match (HTTP only).
    fn name(&self) -> &str {
        ""
    }
    /// Whether the block has no condition at all, so it matches every request.
    fn is_catch_all(&self) -> bool;
    /// Whether every request `later` matches is also matched by `self`: `self`'s conditions
    /// are a subset of `later`'s (conditions inside a block are AND-ed).
    fn covers(&self, later: &Self) -> bool;
}

/// `a` is unset, or the same as `b`.
fn opt_covers<T: PartialEq>(a: &Option<T>, b: &Option<T>) -> bool {
    a.is_none() || a == b
}

/// Every entry of `a` is in `b` (AND-ed conditions: more entries, fewer requests).
fn map_covers<V: PartialEq>(a: &BTreeMap<String, V>, b: &BTreeMap<String, V>) -> bool {
    a.iter().all(|(k, v)| b.get(k) == Some(v))
}

/// A list of alternatives (OR-ed): empty = anything; otherwise `b` is non-empty and each of
/// its items is one of `a`'s.
fn alternatives_cover(a: &[String], b: &[String]) -> bool {
    a.is_empty() || (!b.is_empty() && b.iter().all(|x| a.contains(x)))
}

fn port_covers(a: Option<u32>, b: Option<u32>) -> bool {
    match a.filter(|p| *p != 0) {
        None => true,
        Some(p) => b == Some(p),
    }
}

fn text_covers(a: &str, b: &str) -> bool {
    a.is_empty() || a == b
}

/// Whether `uri` match `a` (with its `ignoreUriCase`) covers `b`.
fn uri_covers(a: &Option<StringMatch>, a_ic: bool, b: &Option<StringMatch>, b_ic: bool) -> bool {
    let (Some(a), Some(b)) = (a, b) else {
        return a.is_none();
    };
    // A case-sensitive match never covers a case-insensitive one.
    if b_ic && !a_ic {
        return false;
    }
    let fold = |s: &str| {
        if a_ic {
            s.to_ascii_lowercase()
        } else {
            s.to_string()
        }
    };
    match (a, b) {
        (StringMatch::Prefix(pa), StringMatch::Prefix(pb) | StringMatch::Exact(pb)) => {
            fold(pb).starts_with(&fold(pa))
        }
        (StringMatch::Exact(ea), StringMatch::Exact(eb)) => fold(ea) == fold(eb),
        _ => a == b && a_ic == b_ic,
    }
}

impl MatchBlock for HttpMatchRequest {
    fn name(&self) -> &str {
        &self.name
    }

    fn is_catch_all(&self) -> bool {
        self.uri.is_none()
            && self.scheme.is_none()
            && self.method.is_none()
            && self.authority.is_none()
            && self.headers.is_empty()
            && self.without_headers.is_empty()
            && self.query_params.is_empty()
            && self.port.is_none_or(|p| p == 0)
            && self.source_labels.is_empty()
            && self.gateways.is_empty()
            && self.source_namespace.is_empty()
    }

    fn covers(&self, later: &Self) -> bool {
        uri_covers(
            &self.uri,
            self.ignore_uri_case,
            &later.uri,
            later.ignore_uri_case,
        ) && opt_covers(&self.scheme, &later.scheme)
            && opt_covers(&self.method, &later.method)
            && opt_covers(&self.authority, &later.authority)
            && map_covers(&self.headers, &later.headers)
            && map_covers(&self.without_headers, &later.without_headers)
            && map_covers(&self.query_params, &later.query_params)
            && port_covers(self.port, later.port)
            && map_covers(&self.source_labels, &later.source_labels)
            // Match gateways replace the top-level ones: only the same list is comparable.
            && self.gateways == later.gateways
            && text_covers(&self.source_namespace, &later.source_namespace)
    }
}

impl MatchBlock for TlsMatchAttributes {
    fn is_catch_all(&self) -> bool {
        self.sni_hosts.is_empty()
            && self.destination_subnets.is_empty()
            && self.port.is_none_or(|p| p == 0)
            && self.source_labels.is_empty()
            && self.gateways.is_empty()
            && self.source_namespace.is_empty()
    }

    fn covers(&self, later: &Self) -> bool {
        alternatives_cover(&self.sni_hosts, &later.sni_hosts)
            && alternatives_cover(&self.destination_subnets, &later.destination_subnets)
            && port_covers(self.port, later.port)
            && map_covers(&self.source_labels, &later.source_labels)
            && self.gateways == later.gateways
            && text_covers(&self.source_namespace, &later.source_namespace)
    }
}

impl MatchBlock for L4MatchAttributes {
    fn is_catch_all(&self) -> bool {
        self.destination_subnets.is_empty()
            && self.port.is_none_or(|p| p == 0)
            && self.source_labels.is_empty()
            && self.gateways.is_empty()
            && self.source_namespace.is_empty()
            && self.source_subnet.is_empty()
    }

    fn covers(&self, later: &Self) -> bool {
        alternatives_cover(&self.destination_subnets, &later.destination_subnets)
            && port_covers(self.port, later.port)
            && map_covers(&self.source_labels, &later.source_labels)
            && self.gateways == later.gateways
            && text_covers(&self.source_namespace, &later.source_namespace)
            && text_covers(&self.source_subnet, &later.source_subnet)
    }
}

/// Whether `path` itself failed to decode (a `null` entry): such an entry is skipped, as
/// Istio skips nil routes and matches.
fn failed(res: &Resource, path: &FieldPath<'_>) -> bool {
    let p = path.to_string();
    res.decode_errors.contains(&p)
}

/// How Istio names a rule or match in its messages: `"name"`, or `#index`.
fn label(name: &str, index: usize) -> String {
    if name.is_empty() {
        format!("#{index}")
    } else {
        format!("{name:?}")
    }
}

/// What makes the rest of the rules dead.
enum CatchAll {
    /// A rule with no `match`.
    Rule,
    /// A match block with no condition.
    Match(String, String),
}

/// Rule 76 over one route list: `routes` yields each rule's name and match blocks.
fn unreachable<'a, M: MatchBlock + 'a>(
    res: &Resource,
    list: &FieldPath<'_>,
    out: &mut Findings<'_>,
    routes: impl Iterator<Item = (&'a str, &'a [M])>,
) {
    let mut catch_all: Option<CatchAll> = None;
    // Earlier effective match blocks: (rule label, block).
    let mut seen: Vec<(String, &M)> = Vec::new();
    for (i, (name, matches)) in routes.enumerate() {
        let rp = list.index(i);
        if failed(res, &rp) {
            continue;
        }
        let rule = label(name, i);
        let mp = rp.field("match");
        let matches: Vec<(usize, &M)> = matches
            .iter()
            .enumerate()
            .filter(|(j, _)| !failed(res, &mp.index(*j)))
            .collect();
        if let Some(c) = &catch_all {
            let reason = match c {
                CatchAll::Rule if matches.is_empty() => {
                    "only the last rule can have no matches".to_string()
                }
                CatchAll::Rule => "route without matches defined before".to_string(),
                CatchAll::Match(r, m) => format!("rule {r} match {m} matches every request"),
            };
            out.warn(
                76,
                &rp,
                format!("virtualService rule {rule} not used ({reason})"),
            );
            continue;
        }
        if matches.is_empty() {
            catch_all = Some(CatchAll::Rule);
            continue;
        }
        let mut dead = 0;
        for &(j, m) in &matches {
            let earlier = seen.iter().find(|(_, e)| e.covers(m));
            if let Some((by, _)) = earlier {
                out.warn(
                    76,
                    &mp.index(j),
                    format!(
                        "virtualService rule {rule} match {} is not used (duplicate/overlapping match in rule {by})",
                        label(m.name(), j)
                    ),
                );
                dead += 1;
                continue;
            }
            seen.push((rule.clone(), m));
            if m.is_catch_all() && catch_all.is_none() {
                catch_all = Some(CatchAll::Match(rule.clone(), label(m.name(), j)));
            }
        }
        if dead == matches.len() {
            out.warn(
                76,
                &rp,
                format!("virtualService rule {rule} not used (all matches used by prior rules)"),
            );
        }
    }
}

fn unreachable_http(
    res: &Resource,
    routes: &[HttpRoute],
    list: &FieldPath<'_>,
    out: &mut Findings<'_>,
) {
    let it = routes.iter().map(|r| (r.name.as_str(), &r.matches[..]));
    unreachable(res, list, out, it);
}

fn unreachable_l4<'a, M: MatchBlock + 'a>(
    res: &Resource,
    list: &FieldPath<'_>,
    out: &mut Findings<'_>,
    matches: impl Iterator<Item = &'a [M]>,
) {
    unreachable(res, list, out, matches.map(|m| ("", m)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::testing::*;

    /// A VirtualService for host `reviews` whose `spec` continues with `rest` (indented by two).
    fn vs(rest: &str) -> String {
        format!(
            "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [reviews]
{rest}"
        )
    }

    /// One HTTP route forwarding to `reviews`, with `extra` (lines indented by four) added.
    fn route(extra: &str) -> String {
        vs(&format!(
            "  http:
  - route:
    - destination: {{host: reviews}}
{extra}"
        ))
    }

    #[test]
    fn rule_046_mirror_percent_deprecated() {
        let with = |v: u32| {
            route(&format!(
                "    mirror: {{host: reviews-v2}}\n    mirrorPercent: {v}\n"
            ))
        };
        no_finding(
            &route("    mirror: {host: reviews-v2}\n"),
            "spec.http[0].mirrorPercent",
        );
        warns(&with(50), "spec.http[0].mirrorPercent", "deprecated");
        fails(&with(150), "spec.http[0].mirrorPercent", "max value of 100");
        // The snake_case spelling the CRD also lists.
        let snake = route("    mirror: {host: reviews-v2}\n    mirror_percent: 150\n");
        fails(&snake, "spec.http[0].mirrorPercent", "max value of 100");
    }

    #[test]
    fn rule_047_mirrors() {
        passes(&route(
            "    mirrors:\n    - destination: {host: reviews-v2, subset: v2, port: {number: 9080}}\n      percentage: {value: 50}\n",
        ));
        fails(
            &route("    mirrors:\n    - percentage: {value: 50}\n"),
            "spec.http[0].mirrors[0]",
            "destination is required for mirrors",
        );
        fails(
            &route("    mirrors:\n    - ~\n"),
            "spec.http[0].mirrors[0]",
            "cannot be null",
        );
        fails(
            &route("    mirrors:\n    - destination: {host: \"*\"}\n"),
            "spec.http[0].mirrors[0].destination.host",
            "invalid destination host",
        );
        fails(
            &route("    mirrors:\n    - destination: {host: reviews, subset: bad_subset}\n"),
            "spec.http[0].mirrors[0].destination.subset",
            "subset name is invalid",
        );
        fails(
            &route("    mirrors:\n    - destination: {host: reviews, port: {number: 70000}}\n"),
            "spec.http[0].mirrors[0].destination.port.number",
            "1..65535",
        );
        fails(
            &route(
                "    mirrors:\n    - destination: {host: reviews}\n      percentage: {value: 150}\n",
            ),
            "spec.http[0].mirrors[0].percentage.value",
            "not in range",
        );
        // The single `mirror` gets the same destination checks.
        fails(
            &route("    mirror: {host: \"bad..host\"}\n"),
            "spec.http[0].mirror.host",
            "invalid",
        );
    }

    fn redirect(matches: &str, redirect: &str) -> String {
        vs(&format!("  http:\n  - {matches}redirect: {redirect}\n"))
    }

    #[test]
    fn rule_048_redirect_uri_or_prefix_rewrite() {
        passes(&redirect("", "{uri: /new}"));
        passes(&redirect(
            "match: [{uri: {prefix: /old}}]\n    ",
            "{prefixRewrite: /new}",
        ));
        fails(
            &redirect("", "{uri: /new, prefixRewrite: /new}"),
            "spec.http[0].redirect",
            "only specify one of uri or prefixRewrite",
        );
    }

    #[test]
    fn rule_049_prefix_rewrite_needs_prefix_matches() {
        passes(&redirect(
            "match: [{uri: {prefix: /a}}, {headers: {x: {exact: y}}}]\n    ",
            "{prefixRewrite: /b}",
        ));
        fails(
            &redirect(
                "match: [{uri: {prefix: /a}}, {uri: {exact: /c}}]\n    ",
                "{prefixRewrite: /b}",
            ),
            "spec.http[0].redirect.prefixRewrite",
            "requires all URI matches to use prefix match type",
        );
    }

    #[test]
    fn rule_050_redirect_needs_something() {
        passes(&redirect("", "{authority: example.com}"));
        passes(&redirect("", "{scheme: https}"));
        passes(&redirect("", "{derivePort: FROM_REQUEST_PORT}"));
        passes(&redirect("", "{port: 8443}"));
        fails(
            &redirect("", "{redirectCode: 302}"),
            "spec.http[0].redirect",
            "redirect must specify URI",
        );
    }

    #[test]
    fn rule_051_redirect_code_is_3xx() {
        passes(&redirect("", "{uri: /new, redirectCode: 308}"));
        fails(
            &redirect("", "{uri: /new, redirectCode: 200}"),
            "spec.http[0].redirect.redirectCode",
            "200 is not a valid redirect code, must be 3xx",
        );
    }

    #[test]
    fn rule_052_redirect_scheme() {
        passes(&redirect("", "{scheme: http}"));
        fails(
            &redirect("", "{scheme: ftp}"),
            "spec.http[0].redirect.scheme",
            "invalid redirect scheme",
        );
    }

    #[test]
    fn redirect_port_range() {
        fails(
            &redirect("", "{port: 70000}"),
            "spec.http[0].redirect.port",
            "1..65535",
        );
    }

    fn direct(dr: &str) -> String {
        vs(&format!("  http:\n  - directResponse: {dr}\n"))
    }

    #[test]
    fn rule_053_direct_response_status() {
        passes(&direct("{status: 503}"));
        // Istio's check lets 600 through despite its message.
        passes(&direct("{status: 600}"));
        fails(
            &direct("{status: 199}"),
            "spec.http[0].directResponse.status",
            "HTTP status 199 is not in range 200-599",
        );
        fails(
            &direct("{status: 601}"),
            "spec.http[0].directResponse.status",
            "not in range 200-599",
        );
        fails(
            &direct("{body: {string: hi}}"),
            "spec.http[0].directResponse",
            "status is required",
        );
    }

    #[test]
    fn rule_054_direct_response_body_size() {
        let small = direct("{status: 200, body: {string: hello}}");
        no_finding(&small, "spec.http[0].directResponse.body.string");
        let big = "x".repeat(200 * 1024);
        warns(
            &direct(&format!("{{status: 200, body: {{string: {big}}}}}")),
            "spec.http[0].directResponse.body.string",
            "large direct_responses",
        );
        let huge = "x".repeat(1024 * 1024 + 1);
        fails(
            &direct(&format!("{{status: 200, body: {{string: {huge}}}}}")),
            "spec.http[0].directResponse.body.string",
            "must be less than 1MB",
        );
        // Base64: 1.4M characters decode to ~1.05MB.
        let b64 = "QUJD".repeat(350 * 1024);
        fails(
            &direct(&format!("{{status: 200, body: {{bytes: {b64}}}}}")),
            "spec.http[0].directResponse.body.bytes",
            "must be less than 1MB",
        );
        // 1.3M characters decode to ~0.98MB: only a warning.
        let b64 = "QUJD".repeat(325 * 1024);
        warns(
            &direct(&format!("{{status: 200, body: {{bytes: {b64}}}}}")),
            "spec.http[0].directResponse.body.bytes",
            "large direct_responses",
        );
        assert_eq!(base64_decoded_len("QUJD"), 3);
        assert_eq!(base64_decoded_len("QUI="), 2);
        assert_eq!(base64_decoded_len("QQ=="), 1);
        assert_eq!(base64_decoded_len("QQ"), 1);
    }

    fn retries(r: &str) -> String {
        route(&format!("    retries: {r}\n"))
    }

    #[test]
    fn rule_055_attempts_not_negative() {
        passes(&retries("{attempts: 3}"));
        fails(
            &retries("{attempts: -1}"),
            "spec.http[0].retries.attempts",
            "attempts cannot be negative",
        );
    }

    #[test]
    fn rule_056_retry_policy_needs_attempts() {
        passes(&retries("{attempts: 0}"));
        passes(&retries(
            "{attempts: 2, perTryTimeout: 1s, retryRemoteLocalities: true}",
        ));
        fails(
            &retries("{attempts: 0, perTryTimeout: 1s}"),
            "spec.http[0].retries",
            "attempts are set to 0",
        );
        fails(
            &retries("{retryOn: 5xx}"),
            "spec.http[0].retries",
            "attempts are set to 0",
        );
        fails(
            &retries("{attempts: 0, retryRemoteLocalities: false}"),
            "spec.http[0].retries",
            "attempts are set to 0",
        );
    }

    #[test]
    fn rule_057_retry_durations() {
        passes(&retries("{attempts: 3, perTryTimeout: 2s, backoff: 25ms}"));
        fails(
            &retries("{attempts: 3, perTryTimeout: 100us}"),
            "spec.http[0].retries.perTryTimeout",
            "greater than 1ms",
        );
        fails(
            &retries("{attempts: 3, backoff: 1.0001s}"),
            "spec.http[0].retries.backoff",
            "ms precision",
        );
        fails(
            &retries("{attempts: 3, backoff: soon}"),
            "spec.http[0].retries.backoff",
            "",
        );
    }

    #[test]
    fn rule_058_retry_on_vocabulary() {
        passes(&retries(
            "{attempts: 3, retryOn: \"gateway-error,connect-failure,refused-stream,503,429,unavailable,cancelled,retriable-status-codes\"}",
        ));
        passes(&retries(
            "{attempts: 3, retryOn: \"reset-before-request,envoy-ratelimited,http3-post-connect-failure,retriable-headers\"}",
        ));
        fails(
            &retries("{attempts: 3, retryOn: flaky}"),
            "spec.http[0].retries.retryOn",
            "\"flaky\" is not a valid retryOn policy",
        );
        // No trimming: " reset" is not a policy.
        fails(
            &retries("{attempts: 3, retryOn: \"5xx, reset\"}"),
            "spec.http[0].retries.retryOn",
            "\" reset\" is not a valid retryOn policy",
        );
        // 599 and 306 have no Go status text; a trailing comma leaves an empty item.
        fails(
            &retries("{attempts: 3, retryOn: \"599\"}"),
            "spec.http[0].retries.retryOn",
            "\"599\" is not a valid",
        );
        fails(
            &retries("{attempts: 3, retryOn: \"5xx,\"}"),
            "spec.http[0].retries.retryOn",
            "\"\" is not a valid",
        );
        assert!(retry_on_item_ok("+503"));
        assert!(!retry_on_item_ok("306"));
        assert!(!retry_on_item_ok("5XX"));
    }

    fn rewrite(r: &str) -> String {
        route(&format!("    rewrite: {r}\n"))
    }

    #[test]
    fn rule_059_rewrite_uri_or_regex() {
        passes(&rewrite("{uri: /v2}"));
        passes(&rewrite("{authority: example.com}"));
        fails(
            &rewrite("{uri: /v2, uriRegexRewrite: {match: ^/a, rewrite: /b}}"),
            "spec.http[0].rewrite",
            "only contain one of URI or UriRegexRewrite",
        );
        fails(
            &rewrite("{}"),
            "spec.http[0].rewrite",
            "must specify at least one of",
        );
    }

    #[test]
    fn rule_060_uri_regex_rewrite() {
        passes(&rewrite(
            "{uriRegexRewrite: {match: \"^/service/([^/]+)(/.*)$\", rewrite: \"\\\\2/instance/\\\\1\"}}",
        ));
        fails(
            &rewrite("{uriRegexRewrite: {match: ^/a}}"),
            "spec.http[0].rewrite.uriRegexRewrite",
            "requires both Rewrite and Match",
        );
        fails(
            &rewrite("{uriRegexRewrite: {match: \"^/a(\", rewrite: /b}}"),
            "spec.http[0].rewrite.uriRegexRewrite.match",
            "RE2",
        );
        let long = "a".repeat(1025);
        fails(
            &rewrite(&format!(
                "{{uriRegexRewrite: {{match: {long}, rewrite: /b}}}}"
            )),
            "spec.http[0].rewrite.uriRegexRewrite.match",
            "max length allowed is 1024",
        );
    }

    #[test]
    fn rule_061_timeout_duration() {
        passes(&route("    timeout: 10s\n"));
        fails(
            &route("    timeout: 0.5ms\n"),
            "spec.http[0].timeout",
            "1ms",
        );
    }

    fn fault(f: &str) -> String {
        route(&format!("    fault: {f}\n"))
    }

    #[test]
    fn rule_062_fault_needs_abort_or_delay() {
        passes(&fault("{delay: {fixedDelay: 5s, percentage: {value: 10}}}"));
        fails(
            &fault("{}"),
            "spec.http[0].fault",
            "must have an abort and/or a delay",
        );
    }

    #[test]
    fn rule_063_fault_percentage() {
        passes(&fault("{abort: {httpStatus: 503, percentage: {value: 0}}}"));
        passes(&fault(
            "{abort: {httpStatus: 503, percentage: {value: 0.0001}}}",
        ));
        passes(&fault(
            "{delay: {fixedDelay: 1s, percentage: {value: 100}}}",
        ));
        fails(
            &fault("{abort: {httpStatus: 503, percentage: {value: 0.00001}}}"),
            "spec.http[0].fault.abort.percentage.value",
            "neither 0.0, nor in range [0.0001, 100.0]",
        );
        fails(
            &fault("{delay: {fixedDelay: 1s, percentage: {value: 0.00005}}}"),
            "spec.http[0].fault.delay.percentage.value",
            "neither 0.0",
        );
        // Above 100 is refused when the percent is decoded.
        fails(
            &fault("{delay: {fixedDelay: 1s, percentage: {value: 101}}}"),
            "spec.http[0].fault.delay.percentage.value",
            "not in range",
        );
    }

    #[test]
    fn rule_064_abort_http_status() {
        passes(&fault("{abort: {httpStatus: 200}}"));
        passes(&fault("{abort: {httpStatus: 600}}"));
        fails(
            &fault("{abort: {httpStatus: 100}}"),
            "spec.http[0].fault.abort.httpStatus",
            "HTTP status 100 is not in range 200-599",
        );
    }

    #[test]
    fn rule_065_abort_grpc_status() {
        passes(&fault("{abort: {grpcStatus: UNAVAILABLE}}"));
        fails(
            &fault("{abort: {grpcStatus: unavailable}}"),
            "spec.http[0].fault.abort.grpcStatus",
            "gRPC status \"unavailable\" is not supported",
        );
        fails(
            &fault("{abort: {grpcStatus: \"14\"}}"),
            "spec.http[0].fault.abort.grpcStatus",
            "is not supported",
        );
    }

    #[test]
    fn rule_066_abort_error_type() {
        no_finding(
            &fault("{abort: {httpStatus: 503, percentage: {value: 1}}}"),
            "spec.http[0].fault.abort",
        );
        fails(
            &fault("{abort: {http2Error: REFUSED_STREAM}}"),
            "spec.http[0].fault.abort.http2Error",
            "HTTP/2 abort fault injection not supported yet",
        );
        warns(
            &fault("{abort: {percentage: {value: 1}}}"),
            "spec.http[0].fault.abort",
            "error type not set",
        );
    }

    #[test]
    fn rule_067_fault_delay() {
        passes(&fault("{delay: {fixedDelay: 100ms}}"));
        fails(
            &fault("{delay: {fixedDelay: 10us}}"),
            "spec.http[0].fault.delay.fixedDelay",
            "greater than 1ms",
        );
        fails(
            &fault("{delay: {exponentialDelay: 1s}}"),
            "spec.http[0].fault.delay.exponentialDelay",
            "exponentialDelay not supported yet",
        );
    }

    fn cors(c: &str) -> String {
        route(&format!("    corsPolicy: {c}\n"))
    }

    #[test]
    fn rule_068_cors_allow_origins() {
        passes(&cors(
            "{allowOrigins: [{exact: \"https://a.com\"}, {prefix: \"https://b\"}, {regex: \"https://.*\\\\.c\\\\.com\"}]}",
        ));
        fails(
            &cors("{allowOrigins: [{exact: \"\"}]}"),
            "spec.http[0].corsPolicy.allowOrigins[0]",
            "is not a valid match type for CORS allow origins",
        );
        fails(
            &cors("{allowOrigins: [{}]}"),
            "spec.http[0].corsPolicy.allowOrigins[0]",
            "is not a valid match type",
        );
        fails(
            &cors("{allowOrigins: [{regex: \"*.example.com\"}]}"),
            "spec.http[0].corsPolicy.allowOrigins[0].regex",
            "RE2",
        );
    }

    #[test]
    fn rule_069_cors_allow_methods() {
        passes(&cors("{allowMethods: [GET, POST, OPTIONS, \"*\"]}"));
        fails(
            &cors("{allowMethods: [GET, get]}"),
            "spec.http[0].corsPolicy.allowMethods[1]",
            "\"get\" is not a supported HTTP method",
        );
    }

    #[test]
    fn rule_070_cors_header_names() {
        passes(&cors(
            "{allowHeaders: [x-custom, \"*\", Content-Type], exposeHeaders: [x-trace_id]}",
        ));
        fails(
            &cors("{allowHeaders: [\"bad header\"]}"),
            "spec.http[0].corsPolicy.allowHeaders[0]",
            "is not a valid header name",
        );
        fails(
            &cors("{exposeHeaders: [ok, \"\"]}"),
            "spec.http[0].corsPolicy.exposeHeaders[1]",
            "header name cannot be empty",
        );
    }

    #[test]
    fn rule_071_cors_max_age() {
        passes(&cors("{maxAge: 24h}"));
        fails(
            &cors("{maxAge: 1500ms}"),
            "spec.http[0].corsPolicy.maxAge",
            "seconds precision",
        );
        fails(
            &cors("{maxAge: 100us}"),
            "spec.http[0].corsPolicy.maxAge",
            "greater than 1ms",
        );
    }

    fn tls(route: &str) -> String {
        format!(
            "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: tls, namespace: default}}
spec:
  hosts: [\"*.example.com\", api.other.org]
  gateways: [mesh]
  tls:
{route}"
        )
    }

    const TLS_ROUTE: &str = "    route:\n    - destination: {host: backend}\n";

    #[test]
    fn rule_072_tls_route_shape() {
        passes(&tls(&format!(
            "  - match: [{{sniHosts: [a.example.com]}}]\n{TLS_ROUTE}"
        )));
        fails(
            &tls(TLS_ROUTE.replacen("    route", "  - route", 1).as_str()),
            "spec.tls[0]",
            "at least one match condition",
        );
        fails(
            &tls(&format!("  - match: [{{port: 443}}]\n{TLS_ROUTE}")),
            "spec.tls[0].match[0]",
            "at least one SNI host",
        );
        fails(
            &tls("  - match: [{sniHosts: [a.example.com]}]\n"),
            "spec.tls[0]",
            "TLS route is required",
        );
    }

    #[test]
    fn rule_073_sni_hosts_within_vs_hosts() {
        let with = |sni: &str| tls(&format!("  - match: [{{sniHosts: [{sni}]}}]\n{TLS_ROUTE}"));
        passes(&with("a.example.com"));
        passes(&with("\"*.b.example.com\""));
        passes(&with("api.other.org"));
        fails(
            &with("a.example.org"),
            "spec.tls[0].match[0].sniHosts[0]",
            "not a compatible subset of any of the virtual service hosts",
        );
        fails(
            &with("\"*.com\""),
            "spec.tls[0].match[0].sniHosts[0]",
            "not a compatible subset",
        );
        fails(
            &with("\"bad..name\""),
            "spec.tls[0].match[0].sniHosts[0]",
            "invalid",
        );
        warns(
            &with("10.0.0.1"),
            "spec.tls[0].match[0].sniHosts[0]",
            "IP address",
        );
        assert!(host_subset_of("*.a.com", "*"));
        assert!(!host_subset_of("*.com", "*.a.com"));
        // Gateway-bound: the AUTO_PASSTHROUGH SNI form.
        let gw = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: p, namespace: default}
spec:
  hosts: [outbound_.8080_._.svc.example.mesh]
  gateways: [ingress]
  tls:
  - match: [{sniHosts: [outbound_.8080_._.svc.example.mesh]}]
    route:
    - destination: {host: svc.example.mesh}
";
        passes(gw);
        assert!(validate_sni_domain("outbound_.x_._.svc", true).is_err());
        assert!(validate_sni_domain("outbound_.80_._.svc", false).is_err());
    }

    #[test]
    fn rule_074_destination_subnets() {
        let tcp = |subnet: &str| {
            vs(&format!(
                "  tcp:\n  - match: [{{destinationSubnets: [\"{subnet}\"], port: 3306}}]\n    route:\n    - destination: {{host: db}}\n"
            ))
        };
        passes(&tcp("10.0.0.0/8"));
        passes(&tcp("2001:db8::1"));
        fails(
            &tcp("10.0.0.0/33"),
            "spec.tcp[0].match[0].destinationSubnets[0]",
            "is not a valid CIDR block",
        );
        fails(
            &tcp("database"),
            "spec.tcp[0].match[0].destinationSubnets[0]",
            "is not a valid IP",
        );
        fails(
            &tls(&format!(
                "  - match: [{{sniHosts: [a.example.com], destinationSubnets: [\"1.2.3\"]}}]\n{TLS_ROUTE}"
            )),
            "spec.tls[0].match[0].destinationSubnets[0]",
            "is not a valid IP",
        );
    }

    #[test]
    fn l4_match_port_range() {
        fails(
            &vs("  tcp:\n  - match: [{port: 70000}]\n    route:\n    - destination: {host: db}\n"),
            "spec.tcp[0].match[0].port",
            "1..65535",
        );
        fails(
            &tls(&format!(
                "  - match: [{{sniHosts: [a.example.com], port: 65536}}]\n{TLS_ROUTE}"
            )),
            "spec.tls[0].match[0].port",
            "1..65535",
        );
    }

    #[test]
    fn rule_075_tcp_route_shape() {
        passes(&vs(
            "  tcp:\n  - match: [{port: 27017}]\n    route:\n    - destination: {host: mongo}\n",
        ));
        fails(
            &vs("  tcp:\n  - match: [{port: 27017}]\n"),
            "spec.tcp[0]",
            "TCP route is required",
        );
        fails(
            &vs("  tcp:\n  - match: [~]\n    route:\n    - destination: {host: mongo}\n"),
            "spec.tcp[0].match[0]",
            "tcp match may not be nil",
        );
    }

    fn http_routes(routes: &str) -> String {
        vs(&format!("  http:\n{routes}"))
    }

    const TO: &str = "    route: [{destination: {host: reviews}}]\n";

    #[test]
    fn rule_076_unreachable_rules() {
        // Specific first, catch-all last: nothing to say.
        let ok = http_routes(&format!(
            "  - match: [{{uri: {{prefix: /api}}}}]\n{TO}  - match: [{{uri: {{prefix: /}}, headers: {{x: {{exact: a}}}}}}]\n{TO}  -{}",
            &TO[3..]
        ));
        no_finding(&ok, "spec.http[1]");
        no_finding(&ok, "spec.http[2]");
        // A rule after a rule without match.
        let after = http_routes(&format!(
            "  -{}  - match: [{{uri: {{prefix: /api}}}}]\n{TO}",
            &TO[3..]
        ));
        warns(&after, "spec.http[1]", "virtualService rule #1 not used");
        // Two rules without match.
        let two = http_routes(&format!("  -{}  - name: last\n{TO}", &TO[3..]));
        warns(
            &two,
            "spec.http[1]",
            "rule \"last\" not used (only the last rule can have no matches)",
        );
        // A rule after a match block with no condition.
        let empty_block = http_routes(&format!(
            "  - match: [{{name: all}}]\n{TO}  - match: [{{uri: {{exact: /x}}}}]\n{TO}"
        ));
        warns(&empty_block, "spec.http[1]", "not used");
        // Duplicate match (the name does not count).
        let dup = http_routes(&format!(
            "  - match: [{{name: a, uri: {{exact: /x}}}}]\n{TO}  - match: [{{name: b, uri: {{exact: /x}}}}, {{uri: {{exact: /y}}}}]\n{TO}"
        ));
        warns(
            &dup,
            "spec.http[1].match[0]",
            "virtualService rule #1 match \"b\" is not used (duplicate/overlapping match in rule #0)",
        );
        no_finding(&dup, "spec.http[1]");
        // Every match shadowed: the rule is not used. A longer prefix is covered by a shorter
        // one with the same other conditions.
        let covered = http_routes(&format!(
            "  - match: [{{uri: {{prefix: /api}}, method: {{exact: GET}}}}]\n{TO}  - match: [{{uri: {{prefix: /api/v1}}, method: {{exact: GET}}, headers: {{x: {{exact: \"1\"}}}}}}]\n{TO}"
        ));
        warns(&covered, "spec.http[1].match[0]", "is not used");
        warns(&covered, "spec.http[1]", "all matches used by prior rules");
        // Not covered: the earlier match has a condition the later one lacks.
        let narrower = http_routes(&format!(
            "  - match: [{{uri: {{prefix: /api}}, headers: {{x: {{exact: \"1\"}}}}}}]\n{TO}  - match: [{{uri: {{prefix: /api/v1}}}}]\n{TO}"
        ));
        no_finding(&narrower, "spec.http[1].match[0]");
        no_finding(&narrower, "spec.http[1]");
        // TCP: a rule after a rule without match.
        let tcp = vs(
            "  tcp:\n  - route: [{destination: {host: a}}]\n  - match: [{port: 3306}]\n    route: [{destination: {host: b}}]\n",
        );
        warns(&tcp, "spec.tcp[1]", "virtualService rule #1 not used");
        // TLS: duplicate SNI match.
        let tls_dup = tls(&format!(
            "  - match: [{{sniHosts: [a.example.com, b.example.com]}}]\n{TLS_ROUTE}  - match: [{{sniHosts: [a.example.com]}}]\n{TLS_ROUTE}"
        ));
        warns(&tls_dup, "spec.tls[1].match[0]", "is not used");
    }
}
