//! Validation rules for VirtualService (rules 14–45 here; 46–76 in `http.rs`), plus the
//! cross-cutting rules as they apply to it: 4 (`http[].timeout`), 6 (match and destination
//! ports), 7–9 (`exportTo`) and 13 (`sourceLabels`).
//!
//! Helpers shared with `http.rs`: [`check_destination`] (rules 42–44 and the destination
//! port) and [`check_regex`] (rule 31).

mod http;

use std::collections::BTreeMap;

use crate::config::Resource;
use crate::config::common::StringMatch;
use crate::config::virtual_service::{
    Destination, HeaderOperations, Headers, HttpMatchRequest, HttpRoute, HttpRouteDestination,
    RouteDestination, VirtualService,
};
use crate::path::FieldPath;
use crate::validate::Findings;
use crate::validate::common::{
    check_duration, check_export_to, check_label_map, check_port, is_dns_label, is_ip,
    validate_fqdn, validate_wildcard_domain,
};

/// The reserved gateway name for all sidecars.
const MESH_GATEWAY: &str = "mesh";

/// Longest regex Istio accepts (rule 31).
const MAX_REGEX_LEN: usize = 1024;

/// HTTP/2 pseudo-headers allowed as match keys (rule 27).
const PSEUDO_HEADERS: [&str; 5] = [":method", ":scheme", ":authority", ":path", ":status"];

/// Checks every rule for a VirtualService.
pub(crate) fn check(
    res: &Resource,
    spec: &VirtualService,
    path: &FieldPath<'_>,
    out: &mut Findings<'_>,
) {
    let is_delegate = spec.hosts.is_empty();
    // Rule 14: a VirtualService without hosts is a delegate.
    if is_delegate {
        if !spec.gateways.is_empty() {
            out.error(
                14,
                &path.field("gateways"),
                "delegate virtual service must have no gateways specified",
            );
        }
        if !spec.tls.is_empty() {
            out.error(
                14,
                &path.field("tls"),
                "delegate virtual service must have no tls route specified",
            );
        }
        if !spec.tcp.is_empty() {
            out.error(
                14,
                &path.field("tcp"),
                "delegate virtual service must have no tcp route specified",
            );
        }
    }

    // Rule 19 on the top-level gateways; which proxies the VS applies to.
    let applies_to_gateway = applies_to_gateway(spec);
    let applies_to_mesh = !applies_to_gateway;
    if !spec.gateways.is_empty() {
        check_gateway_names(out, &path.field("gateways"), &spec.gateways);
    }

    check_hosts(out, path, spec, applies_to_gateway, applies_to_mesh);

    // Rule 18.
    if spec.http.is_empty() && spec.tcp.is_empty() && spec.tls.is_empty() {
        out.error(
            18,
            path,
            "http, tcp or tls must be provided in virtual service",
        );
    }

    let http_path = path.field("http");
    for (i, route) in spec.http.iter().enumerate() {
        let p = http_path.index(i);
        check_http_route(out, &p, route, is_delegate, applies_to_gateway);
    }

    let tls_path = path.field("tls");
    for (i, tls) in spec.tls.iter().enumerate() {
        let p = tls_path.index(i);
        let mp = p.field("match");
        for (j, m) in tls.matches.iter().enumerate() {
            let mp = mp.index(j);
            check_match_port(out, &mp, m.port);
            check_label_map(out, &mp.field("sourceLabels"), &m.source_labels);
            check_gateway_names(out, &mp.field("gateways"), &m.gateways);
        }
        check_route_destinations(out, &p.field("route"), &tls.route);
    }

    let tcp_path = path.field("tcp");
    for (i, tcp) in spec.tcp.iter().enumerate() {
        let p = tcp_path.index(i);
        let mp = p.field("match");
        for (j, m) in tcp.matches.iter().enumerate() {
            let mp = mp.index(j);
            check_match_port(out, &mp, m.port);
            check_label_map(out, &mp.field("sourceLabels"), &m.source_labels);
            check_gateway_names(out, &mp.field("gateways"), &m.gateways);
        }
        check_route_destinations(out, &p.field("route"), &tcp.route);
    }

    // Rules 7–9.
    check_export_to(
        out,
        &path.field("exportTo"),
        &spec.export_to,
        &res.metadata.namespace,
        false,
    );

    http::check(res, spec, path, out);
}

/// Whether the VirtualService is bound to gateways only: `gateways` is set and does not list
/// `mesh`. Otherwise it applies to the mesh (sidecars).
pub(super) fn applies_to_gateway(spec: &VirtualService) -> bool {
    !spec.gateways.is_empty() && !spec.gateways.iter().any(|g| g == MESH_GATEWAY)
}

/// Rules 15–17: the `hosts` list.
fn check_hosts(
    out: &mut Findings<'_>,
    path: &FieldPath<'_>,
    spec: &VirtualService,
    applies_to_gateway: bool,
    applies_to_mesh: bool,
) {
    let hosts_path = path.field("hosts");
    let sni = spec
        .tls
        .iter()
        .any(|t| t.matches.iter().any(|m| !m.sni_hosts.is_empty()));
    let mut all_valid = true;
    for (i, host) in spec.hosts.iter().enumerate() {
        let p = hosts_path.index(i);
        let result = if applies_to_gateway {
            validate_gateway_bound_domain(sni, host)
        } else {
            validate_wildcard_domain(host)
        };
        match result {
            Err(msg) => {
                if !is_ip(host) {
                    out.error(15, &p, msg);
                    all_valid = false;
                }
            }
            Ok(()) => {
                if applies_to_mesh && host == "*" {
                    out.error(
                        16,
                        &p,
                        "wildcard host * is not allowed for virtual services bound to the mesh gateway",
                    );
                    all_valid = false;
                }
            }
        }
    }
    // Rule 17: literal or wildcard duplicates, checked only when every host is valid.
    if all_valid {
        for (i, a) in spec.hosts.iter().enumerate() {
            for (j, b) in spec.hosts.iter().enumerate().skip(i + 1) {
                if host_matches(a, b) {
                    out.error(
                        17,
                        &hosts_path.index(j),
                        format!("duplicate hosts in virtual service: {a} & {b}"),
                    );
                }
            }
        }
    }
}

/// Istio's `ValidateWildcardDomainForVirtualServiceBoundToGateway`: a wildcard domain, or, for
/// a VirtualService with SNI matches, the auto-generated `outbound_.<port>_._.<host>` form.
fn validate_gateway_bound_domain(sni: bool, domain: &str) -> Result<(), String> {
    if sni && domain.starts_with("outbound_") && !domain.is_empty() && domain.len() <= 255 {
        let parts: Vec<&str> = domain.split('_').collect();
        if parts.len() < 4 {
            return Err(format!(
                "domain name {domain} invalid, should follow 'outbound_.<PORT>_._.<HOSTNAME>' format"
            ));
        }
        let port = parts[1].trim_matches('.');
        let hostname = parts[3].trim_matches('.');
        if !port.bytes().any(|c| c.is_ascii_digit()) {
            return Err(format!(
                "domain name {domain:?} invalid (label {port:?} invalid). should follow outbound_.<PORT>_._.<HOSTNAME> format"
            ));
        }
        if !hostname.bytes().any(|c| c.is_ascii_alphabetic()) {
            return Err(format!(
                "domain name {domain:?} invalid (label {hostname:?} invalid). should follow outbound_.<PORT>_._.<HOSTNAME> format"
            ));
        }
        return Ok(());
    }
    validate_wildcard_domain(domain)
}

/// Istio's `host.Name.Matches`: equal names, or one wildcard covering the other.
pub(super) fn host_matches(a: &str, b: &str) -> bool {
    match (a.strip_prefix('*'), b.strip_prefix('*')) {
        (Some(sa), Some(sb)) => {
            if a.len() < b.len() {
                sb.ends_with(sa)
            } else {
                sa.ends_with(sb)
            }
        }
        (Some(sa), None) => b.ends_with(sa),
        (None, Some(sb)) => a.ends_with(sb),
        (None, None) => a == b,
    }
}

/// Istio's `host.Name.SubsetOf`: every name `a` matches is also matched by `b` (for the
/// SNI-host rule 73 in `http.rs`).
pub(super) fn host_subset_of(a: &str, b: &str) -> bool {
    match (a.strip_prefix('*'), b.strip_prefix('*')) {
        (Some(sa), Some(sb)) => sa.ends_with(sb),
        (Some(_), None) => false,
        (None, Some(sb)) => a.ends_with(sb),
        (None, None) => a == b,
    }
}

/// Rule 19: gateway names, `<namespace>/<name>` or a bare (FQDN-valid) name.
fn check_gateway_names(out: &mut Findings<'_>, path: &FieldPath<'_>, names: &[String]) {
    for (i, name) in names.iter().enumerate() {
        let p = path.index(i);
        match name.split_once('/') {
            None => {
                if name.contains('.') {
                    let parts: Vec<&str> = name.split('.').collect();
                    let recommended = format!("{}/{}", parts[1], parts[0]);
                    out.warn(
                        19,
                        &p,
                        format!(
                            "using legacy gatewayName format {name:?}; prefer the <namespace>/<name> format: {recommended:?}"
                        ),
                    );
                }
                if let Err(msg) = validate_fqdn(name) {
                    out.error(19, &p, msg);
                }
                // Istio stops checking the list after the first bare name.
                return;
            }
            Some((ns, gw)) => {
                if ns.is_empty() || gw.is_empty() {
                    out.error(19, &p, "config namespace and gateway name cannot be empty");
                }
                if !is_dns_label(ns) {
                    out.error(19, &p, format!("invalid value for namespace: {ns:?}"));
                }
                if !is_dns_label(gw) {
                    out.error(19, &p, format!("invalid value for gateway name: {gw:?}"));
                }
            }
        }
    }
}

/// Rules 21–44 (and 4, 6, 13) for one `http[]` entry.
fn check_http_route(
    out: &mut Findings<'_>,
    path: &FieldPath<'_>,
    route: &HttpRoute,
    is_delegate_vs: bool,
    applies_to_gateway: bool,
) {
    check_route_conflicts(out, path, route, is_delegate_vs);

    let match_path = path.field("match");
    for (j, m) in route.matches.iter().enumerate() {
        check_match_request(out, &match_path.index(j), m, applies_to_gateway);
    }

    // Rules 35–38: route-level header operations.
    if let Some(h) = &route.headers {
        check_headers(out, &path.field("headers"), h);
    }
    check_authority_rewrite(out, path, route);

    check_http_route_destinations(out, &path.field("route"), &route.route);

    // Rule 4 (also listed as rule 61): the route timeout.
    if let Some(t) = route.timeout {
        check_duration(out, &path.field("timeout"), t);
    }
}

/// Rules 21–26: which actions a route may combine.
fn check_route_conflicts(
    out: &mut Findings<'_>,
    path: &FieldPath<'_>,
    route: &HttpRoute,
    is_delegate_vs: bool,
) {
    let name = &route.name;
    if !is_delegate_vs && route.delegate.is_some() {
        // Rule 24: a root route only delegates.
        if route.redirect.is_some() {
            out.error(
                24,
                &path.field("redirect"),
                format!("root HTTP route {name} must not specify redirect"),
            );
        }
        if !route.route.is_empty() {
            out.error(
                24,
                &path.field("route"),
                format!("root HTTP route {name} must not specify route"),
            );
        }
        return;
    }
    if is_delegate_vs && route.delegate.is_some() {
        out.error(
            25,
            &path.field("delegate"),
            "delegate HTTP route cannot contain delegate",
        );
    }
    let has_route = !route.route.is_empty();
    if route.redirect.is_some() {
        // Rule 22.
        if has_route {
            out.error(
                22,
                path,
                "HTTP route cannot contain both route and redirect",
            );
        }
        if route.fault.is_some() {
            out.error(
                22,
                path,
                "HTTP route cannot contain both fault and redirect",
            );
        }
        if route.rewrite.is_some() {
            out.error(
                22,
                path,
                "HTTP route rule cannot contain both rewrite and redirect",
            );
        }
        if route.direct_response.is_some() {
            out.error(
                22,
                path,
                "HTTP route rule cannot contain both direct_response and redirect",
            );
        }
    } else if route.direct_response.is_some() {
        // Rule 23.
        if has_route {
            out.error(
                23,
                path,
                "HTTP route cannot contain both route and direct_response",
            );
        }
        if route.fault.is_some() {
            out.error(
                23,
                path,
                "HTTP route cannot contain both fault and direct_response",
            );
        }
        if route.rewrite.is_some() {
            out.error(
                23,
                path,
                "HTTP route rule cannot contain both rewrite and direct_response",
            );
        }
    } else if !has_route {
        // Rule 21.
        out.error(
            21,
            path,
            "HTTP route, redirect or direct_response is required",
        );
    }
    // Rule 26.
    if route.mirror.is_some() && !route.mirrors.is_empty() {
        out.error(
            26,
            path,
            "HTTP route cannot contain both mirror and mirrors",
        );
    }
}

/// Rules 27–34 (and 6, 13, 19) for one match block.
fn check_match_request(
    out: &mut Findings<'_>,
    path: &FieldPath<'_>,
    m: &HttpMatchRequest,
    applies_to_gateway: bool,
) {
    check_header_matches(
        out,
        &path.field("headers"),
        &m.headers,
        "headers",
        applies_to_gateway,
    );
    check_header_matches(
        out,
        &path.field("withoutHeaders"),
        &m.without_headers,
        "withoutHeaders",
        applies_to_gateway,
    );
    // uri may have an empty prefix; its regex is still checked.
    if let Some(StringMatch::Regex(re)) = &m.uri {
        check_regex(out, &path.field("uri").field("regex"), "uri", re);
    }
    for (name, sm) in [
        ("scheme", &m.scheme),
        ("method", &m.method),
        ("authority", &m.authority),
    ] {
        if let Some(sm) = sm {
            check_string_match(out, &path.field(name), name, sm);
        }
    }
    let qp = path.field("queryParams");
    for (k, sm) in &m.query_params {
        check_string_match(out, &qp.key(k), "queryParams", sm);
    }

    check_match_port(out, path, m.port);
    // Rule 33 (rule 13 on a label map).
    check_label_map(out, &path.field("sourceLabels"), &m.source_labels);
    check_gateway_names(out, &path.field("gateways"), &m.gateways);
    // Rule 34.
    if !m.source_namespace.is_empty() && !is_dns_label(&m.source_namespace) {
        out.error(
            34,
            &path.field("sourceNamespace"),
            format!("sourceNamespace match {} is invalid", m.source_namespace),
        );
    }
}

/// Rule 32 (the Port rule, 6): `match.port` when non-zero.
fn check_match_port(out: &mut Findings<'_>, match_path: &FieldPath<'_>, port: Option<u32>) {
    if let Some(p) = port
        && p != 0
    {
        check_port(out, &match_path.field("port"), p);
    }
}

/// Rules 27, 29, 30, 31 for `headers` / `withoutHeaders` (rule 28 is enforced when decoding).
fn check_header_matches(
    out: &mut Findings<'_>,
    path: &FieldPath<'_>,
    map: &BTreeMap<String, StringMatch>,
    what: &str,
    applies_to_gateway: bool,
) {
    for (name, sm) in map {
        let p = path.key(name);
        let claim = is_jwt_claim_route(name);
        // Rule 27.
        if name.is_empty() {
            out.error(27, &p, "header name cannot be empty");
        } else if !claim && !PSEUDO_HEADERS.contains(&name.as_str()) && !is_header_token(name) {
            out.error(
                27,
                &p,
                format!("header name {name} is not a valid header name"),
            );
        }
        // Rule 29.
        if claim && !applies_to_gateway {
            out.error(
                29,
                &p,
                format!(
                    "JWT claim based routing (key: {name}) is only supported for gateway, found no gateways"
                ),
            );
        }
        // `regex: "*"` is not RE2: it means "present".
        if matches!(sm, StringMatch::Regex(r) if r == "*") {
            continue;
        }
        check_string_match(out, &p, what, sm);
    }
}

/// Istio's `jwt.ToRoutingClaim(..).Match`: `@request.auth.claims.<c>` or
/// `@request.auth.claims[<a>][<b>]` (prefix compared case-insensitively).
pub(super) fn is_jwt_claim_route(name: &str) -> bool {
    const PREFIX: &str = "@request.auth.claims";
    let Some(head) = name.get(..PREFIX.len()) else {
        return false;
    };
    if !head.eq_ignore_ascii_case(PREFIX) {
        return false;
    }
    let rest = &name[PREFIX.len()..];
    (rest.starts_with('.') && rest.len() > 1)
        || (rest.starts_with('[') && rest.ends_with(']') && rest.len() > 2)
}

/// An RFC 7230 token (`tchar`+): the characters a header name may use. Like Istio's
/// `validHeaderNameRegex`, whose `+-.` is a character range, it also accepts `,`.
pub(super) fn is_header_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(
                    c,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b','
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

/// Rules 30–31 for one StringMatch (`what` names the field in messages, as Istio does).
fn check_string_match(out: &mut Findings<'_>, path: &FieldPath<'_>, what: &str, sm: &StringMatch) {
    match sm {
        StringMatch::Prefix(p) if p.is_empty() => {
            out.error(
                30,
                &path.field("prefix"),
                format!("{what:?}: prefix string match should not be empty"),
            );
        }
        StringMatch::Regex(re) => check_regex(out, &path.field("regex"), what, re),
        _ => {}
    }
}

/// Rule 31: a regex is non-empty, at most 1024 characters and valid RE2. `path` is the
/// `regex` field, `what` the name Istio uses in its message (`uri`, `headers`, ...).
pub(super) fn check_regex(out: &mut Findings<'_>, path: &FieldPath<'_>, what: &str, re: &str) {
    if re.is_empty() {
        out.error(
            31,
            path,
            format!("{what:?}: regex string match should not be empty"),
        );
    } else if re.len() > MAX_REGEX_LEN {
        out.error(
            31,
            path,
            format!("{what:?}: regex is too large, max length allowed is {MAX_REGEX_LEN}"),
        );
    } else if let Err(e) = regex::Regex::new(re) {
        out.error(
            31,
            path,
            format!(
                "{what:?}: {}; Istio uses RE2 style regex-based match (https://github.com/google/re2/wiki/Syntax)",
                regex_error_summary(&e)
            ),
        );
    }
}

/// The one-line gist of a `regex` error (its Display spans several lines).
fn regex_error_summary(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("error: ").map(str::to_string))
        .unwrap_or_else(|| text.lines().next().unwrap_or("invalid regex").to_string())
}

/// Rules 35–37 for a `headers` block (route level or per destination).
fn check_headers(out: &mut Findings<'_>, path: &FieldPath<'_>, headers: &Headers) {
    if let Some(req) = &headers.request {
        check_header_ops(out, &path.field("request"), req, true);
    }
    if let Some(resp) = &headers.response {
        check_header_ops(out, &path.field("response"), resp, false);
    }
}

fn check_header_ops(
    out: &mut Findings<'_>,
    path: &FieldPath<'_>,
    ops: &HeaderOperations,
    request: bool,
) {
    for (field, map) in [("set", &ops.set), ("add", &ops.add)] {
        let fp = path.field(field);
        for (name, value) in map {
            let p = fp.key(name);
            if request {
                check_header_name_with_authority(out, &p, name);
            } else {
                check_header_operation_name(out, &p, name);
            }
            check_header_value(out, &p, value);
        }
    }
    let rp = path.field("remove");
    for (i, name) in ops.remove.iter().enumerate() {
        check_header_operation_name(out, &rp.index(i), name);
    }
}

fn is_internal_header(name: &str) -> bool {
    name.starts_with(':') || name.eq_ignore_ascii_case("host")
}

fn is_authority_header(name: &str) -> bool {
    name.eq_ignore_ascii_case(":authority") || name.eq_ignore_ascii_case("host")
}

/// Rule 35: a request `set`/`add` header name (`host` / `:authority` are authority rewrites).
fn check_header_name_with_authority(out: &mut Findings<'_>, path: &FieldPath<'_>, name: &str) {
    if name.is_empty() {
        out.error(35, path, "header name cannot be empty");
    } else if is_internal_header(name) && !is_authority_header(name) {
        out.error(
            35,
            path,
            format!("invalid header {name:?}: header cannot have \":\" prefix"),
        );
    }
}

/// Rule 36: a request `remove` or any response header name.
fn check_header_operation_name(out: &mut Findings<'_>, path: &FieldPath<'_>, name: &str) {
    if name.is_empty() {
        out.error(36, path, "header name cannot be empty");
    } else if name.eq_ignore_ascii_case("host") {
        out.error(
            36,
            path,
            format!("invalid header {name:?}: cannot set Host header"),
        );
    } else if is_internal_header(name) {
        out.error(
            36,
            path,
            format!("invalid header {name:?}: header cannot have \":\" prefix"),
        );
    }
}

/// Rule 37: a header value has no control characters (TAB allowed) and its `%` make valid
/// Envoy substitutions.
fn check_header_value(out: &mut Findings<'_>, path: &FieldPath<'_>, value: &str) {
    if value
        .chars()
        .any(|c| (c <= '\u{1f}' && c != '\t') || c == '\u{7f}')
    {
        out.error(
            37,
            path,
            format!("header value configuration {value} is invalid"),
        );
        return;
    }
    if let Err(e) = validate_envoy_header_format(value) {
        out.error(37, path, format!("header value configuration: {e}"));
    }
}

/// A port of Envoy's header formatter parser (Istio's `validateHeaderValue`): `%%` is a
/// literal `%`, `%VAR%` / `%VAR(args)%` are substitutions.
fn validate_envoy_header_format(value: &str) -> Result<(), String> {
    #[derive(PartialEq)]
    enum State {
        Literal,
        VariableName,
        ExpectArray,
        ExpectString,
        String,
        ExpectArrayDelimiterOrEnd,
        ExpectArgsEnd,
        ExpectVariableEnd,
    }
    let b = value.as_bytes();
    let mut pos = 0;
    let mut state = State::Literal;
    while pos < b.len() {
        let ch = b[pos];
        let has_next = pos + 1 < b.len();
        match state {
            State::Literal => {
                if ch == b'%' {
                    if !has_next {
                        return Err("invalid header configuration. Un-escaped %".into());
                    }
                    if b[pos + 1] == b'%' {
                        pos += 1;
                    } else {
                        state = State::VariableName;
                    }
                }
            }
            State::VariableName => {
                if ch == b'%' {
                    state = State::Literal;
                } else if ch == b'(' {
                    state = State::ExpectArray;
                }
            }
            State::ExpectArray => {
                if ch == b'[' {
                    state = State::ExpectString;
                } else if ch != b' ' {
                    state = State::String;
                }
            }
            State::ExpectArrayDelimiterOrEnd => {
                if ch == b',' {
                    state = State::ExpectString;
                } else if ch == b']' {
                    state = State::ExpectArgsEnd;
                } else if ch != b' ' {
                    return Err(
                        "invalid header configuration. Expecting ',', ']', or whitespace".into(),
                    );
                }
            }
            State::ExpectString => {
                if ch == b'"' {
                    state = State::String;
                } else if ch != b' ' {
                    return Err("invalid header configuration. Expecting '\"'".into());
                }
            }
            State::String => {
                if ch == b'\\' {
                    if !has_next {
                        return Err(
                            "invalid header configuration. Un-terminated backslash in JSON string"
                                .into(),
                        );
                    }
                    pos += 1;
                } else if ch == b')' {
                    state = State::ExpectVariableEnd;
                } else if ch == b'"' {
                    state = State::ExpectArrayDelimiterOrEnd;
                }
            }
            State::ExpectArgsEnd => {
                if ch == b')' {
                    state = State::ExpectVariableEnd;
                } else if ch != b' ' {
                    return Err(
                        "invalid header configuration. Expecting ')' or whitespace after arguments"
                            .into(),
                    );
                }
            }
            State::ExpectVariableEnd => {
                if ch == b'%' {
                    state = State::Literal;
                } else if ch != b' ' {
                    return Err(
                        "invalid header configuration. Expecting '%' or whitespace after".into(),
                    );
                }
            }
        }
        pos += 1;
    }
    if state != State::Literal {
        return Err(format!(
            "invalid header configuration. Un-terminated variable expression '{value}'"
        ));
    }
    Ok(())
}

/// Rule 38: the authority is rewritten in one place only (`rewrite.authority`, or a request
/// `set`/`add` of `host` / `:authority`).
fn check_authority_rewrite(out: &mut Findings<'_>, path: &FieldPath<'_>, route: &HttpRoute) {
    let mut current: &str = route
        .rewrite
        .as_ref()
        .map(|r| r.authority.as_str())
        .unwrap_or("");
    let Some(req) = route.headers.as_ref().and_then(|h| h.request.as_ref()) else {
        return;
    };
    let hp = path.field("headers");
    let rp = hp.field("request");
    for (field, map) in [("set", &req.set), ("add", &req.add)] {
        let fp = rp.field(field);
        for (k, v) in map {
            if !is_authority_header(k) {
                continue;
            }
            if !current.is_empty() {
                out.error(
                    38,
                    &fp.key(k),
                    format!(
                        "authority header cannot be set multiple times: have {current:?}, attempting to set {v:?}"
                    ),
                );
                return;
            }
            current = v;
        }
    }
}

/// Rules 39–44 (and 35–37) for the `route[]` of an HTTP route.
fn check_http_route_destinations(
    out: &mut Findings<'_>,
    path: &FieldPath<'_>,
    routes: &[HttpRouteDestination],
) {
    let mut total: i32 = 0;
    for (k, r) in routes.iter().enumerate() {
        let p = path.index(k);
        if let Some(h) = &r.headers {
            check_headers(out, &p.field("headers"), h);
        }
        check_weighted(out, &p, r.destination.as_ref(), r.weight);
        total = total.wrapping_add(r.weight);
    }
    check_total_weight(out, path, routes.len(), total);
}

/// Rules 39–44 for the `route[]` of a TLS or TCP route.
fn check_route_destinations(
    out: &mut Findings<'_>,
    path: &FieldPath<'_>,
    routes: &[RouteDestination],
) {
    let mut total: i32 = 0;
    for (k, r) in routes.iter().enumerate() {
        check_weighted(out, &path.index(k), r.destination.as_ref(), r.weight);
        total = total.wrapping_add(r.weight);
    }
    check_total_weight(out, path, routes.len(), total);
}

/// Rules 39, 40 and 42–44 for one weighted destination at `path`.
fn check_weighted(
    out: &mut Findings<'_>,
    path: &FieldPath<'_>,
    destination: Option<&Destination>,
    weight: i32,
) {
    let dp = path.field("destination");
    match destination {
        None => out.error(39, &dp, "destination is required"),
        Some(d) => check_destination(out, &dp, d),
    }
    if weight < 0 {
        out.error(40, &path.field("weight"), format!("weight {weight} < 0"));
    }
}

/// Rule 41: with several destinations, the weights may not sum to 0.
fn check_total_weight(out: &mut Findings<'_>, path: &FieldPath<'_>, count: usize, total: i32) {
    if count > 1 && total == 0 {
        out.error(41, path, "total destination weight = 0");
    }
}

/// Rules 42–44 for a `Destination` at `path` (route destinations, `mirror`,
/// `mirrors[].destination`): host not `*` and a wildcard domain, subset a DNS label, port in
/// 1..65535 (rule 6) when `port` is set.
pub(super) fn check_destination(out: &mut Findings<'_>, path: &FieldPath<'_>, dest: &Destination) {
    let hp = path.field("host");
    if dest.host == "*" {
        out.error(42, &hp, "invalid destination host *");
    } else if let Err(msg) = validate_wildcard_domain(&dest.host) {
        out.error(42, &hp, msg);
    }
    if !dest.subset.is_empty() && !is_dns_label(&dest.subset) {
        out.error(
            43,
            &path.field("subset"),
            format!("subset name is invalid: {}", dest.subset),
        );
    }
    if let Some(port) = dest.port {
        check_port(out, &path.field("port").field("number"), port.number);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::testing::*;

    /// A full VirtualService document with `spec` (indented by two spaces).
    fn vs(spec: &str) -> String {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: r, namespace: default}}\nspec:\n{spec}"
        )
    }

    /// A VirtualService for `reviews` with one HTTP route made of `route` (YAML lines of the
    /// route object, indented by four spaces; the first is prefixed with `- `).
    fn http(route: &str) -> String {
        vs(&format!(
            "  hosts: [reviews]\n  http:\n  - {}",
            route.trim_start()
        ))
    }

    const DEST: &str = "    route:\n    - destination: {host: reviews}\n";

    fn with_match(m: &str) -> String {
        http(&format!("    match:\n    - {m}\n{DEST}"))
    }

    #[test]
    fn rule_014_delegate_has_no_gateways_tls_tcp() {
        passes(&vs(&format!("  http:\n  - name: a\n{DEST}")));
        fails(
            &vs(&format!("  gateways: [gw]\n  http:\n  - name: a\n{DEST}")),
            "spec.gateways",
            "no gateways",
        );
        fails(
            &vs("  tcp:\n  - route:\n    - destination: {host: db}\n"),
            "spec.tcp",
            "no tcp route",
        );
        fails(
            &vs(
                "  tls:\n  - match: [{sniHosts: [a.example.com]}]\n    route:\n    - destination: {host: a}\n",
            ),
            "spec.tls",
            "no tls route",
        );
    }

    #[test]
    fn rule_015_hosts_are_wildcard_domains_or_ips() {
        passes(&vs(&format!(
            "  hosts: [reviews, \"*.example.com\", 10.1.2.3]\n  http:\n  - name: r\n{}",
            DEST
        )));
        fails(
            &vs(&format!(
                "  hosts: [\"foo..bar\"]\n  http:\n  - name: r\n{}",
                DEST
            )),
            "spec.hosts[0]",
            "invalid",
        );
        fails(
            &vs(&format!(
                "  hosts: [\"a.*.com\"]\n  http:\n  - name: r\n{}",
                DEST
            )),
            "spec.hosts[0]",
            "label",
        );
        // The auto-generated SNI form, for a gateway-bound VS with SNI matches.
        let sni = |host: &str| {
            vs(&format!(
                "  hosts: [\"{host}\"]\n  gateways: [gw]\n  tls:\n  - match: [{{sniHosts: [\"{host}\"]}}]\n    route:\n    - destination: {{host: a.example.com}}\n"
            ))
        };
        passes(&sni("outbound_.80_._.e2e.foobar.mesh"));
        fails(
            &sni("outbound_.x_._.e2e.foobar.mesh"),
            "spec.hosts[0]",
            "should follow",
        );
    }

    #[test]
    fn rule_016_wildcard_host_not_for_mesh() {
        passes(&vs(&format!(
            "  hosts: [\"*\"]\n  gateways: [gw]\n  http:\n  - name: r\n{}",
            DEST
        )));
        fails(
            &vs(&format!("  hosts: [\"*\"]\n  http:\n  - name: r\n{}", DEST)),
            "spec.hosts[0]",
            "not allowed for virtual services bound to the mesh gateway",
        );
        fails(
            &vs(&format!(
                "  hosts: [\"*\"]\n  gateways: [gw, mesh]\n  http:\n  - name: r\n{}",
                DEST
            )),
            "spec.hosts[0]",
            "mesh gateway",
        );
    }

    #[test]
    fn rule_017_no_overlapping_hosts() {
        passes(&vs(&format!(
            "  hosts: [a.foo.com, b.foo.com, \"*.bar.com\"]\n  http:\n  - name: r\n{}",
            DEST
        )));
        fails(
            &vs(&format!(
                "  hosts: [\"*.foo.com\", a.foo.com]\n  http:\n  - name: r\n{}",
                DEST
            )),
            "spec.hosts[1]",
            "duplicate hosts in virtual service",
        );
        fails(
            &vs(&format!(
                "  hosts: [a.com, a.com]\n  http:\n  - name: r\n{}",
                DEST
            )),
            "spec.hosts[1]",
            "duplicate hosts",
        );
    }

    #[test]
    fn rule_018_some_route_required() {
        passes(&http(DEST));
        fails(
            &vs("  hosts: [reviews]\n"),
            "spec",
            "http, tcp or tls must be provided",
        );
    }

    #[test]
    fn rule_019_gateway_names() {
        let gw = |g: &str| {
            vs(&format!(
                "  hosts: [reviews]\n  gateways: [{g}]\n  http:\n  - name: r\n{}",
                DEST
            ))
        };
        passes(&gw("ns/my-gw"));
        passes(&gw("my-gw"));
        fails(&gw("\"ns/\""), "spec.gateways[0]", "cannot be empty");
        fails(
            &gw("\"bad_ns/gw\""),
            "spec.gateways[0]",
            "invalid value for namespace",
        );
        fails(
            &gw("\"ns/bad_gw\""),
            "spec.gateways[0]",
            "invalid value for gateway name",
        );
        fails(&gw("\"bad_gw\""), "spec.gateways[0]", "invalid");
        warns(
            &gw("gw.ns"),
            "spec.gateways[0]",
            "legacy gatewayName format",
        );
        fails(
            &with_match("{gateways: [\"ns/\"]}"),
            "spec.http[0].match[0].gateways[0]",
            "cannot be empty",
        );
    }

    #[test]
    fn rule_020_http_route_not_null() {
        passes(&http(DEST));
        fails(
            &vs("  hosts: [reviews]\n  http:\n  - null\n"),
            "spec.http[0]",
            "http route may not be null",
        );
    }

    #[test]
    fn rule_021_route_redirect_or_direct_response_required() {
        passes(&http("    redirect: {uri: /v2}\n"));
        passes(&http("    directResponse: {status: 404}\n"));
        fails(
            &http("    name: nothing\n    timeout: 1s\n"),
            "spec.http[0]",
            "HTTP route, redirect or direct_response is required",
        );
    }

    #[test]
    fn rule_022_redirect_exclusive() {
        passes(&http("    redirect: {uri: /v2}\n"));
        fails(
            &http(&format!("    redirect: {{uri: /v2}}\n{DEST}")),
            "spec.http[0]",
            "both route and redirect",
        );
        fails(
            &http("    redirect: {uri: /v2}\n    rewrite: {uri: /v3}\n"),
            "spec.http[0]",
            "both rewrite and redirect",
        );
        fails(
            &http(
                "    redirect: {uri: /v2}\n    fault: {abort: {httpStatus: 500, percentage: {value: 1}}}\n",
            ),
            "spec.http[0]",
            "both fault and redirect",
        );
        fails(
            &http("    redirect: {uri: /v2}\n    directResponse: {status: 404}\n"),
            "spec.http[0]",
            "both direct_response and redirect",
        );
    }

    #[test]
    fn rule_023_direct_response_exclusive() {
        passes(&http(
            "    directResponse: {status: 503, body: {string: down}}\n",
        ));
        fails(
            &http(&format!("    directResponse: {{status: 404}}\n{DEST}")),
            "spec.http[0]",
            "both route and direct_response",
        );
        fails(
            &http("    directResponse: {status: 404}\n    rewrite: {uri: /v3}\n"),
            "spec.http[0]",
            "both rewrite and direct_response",
        );
        fails(
            &http(
                "    directResponse: {status: 404}\n    fault: {delay: {fixedDelay: 1s, percentage: {value: 1}}}\n",
            ),
            "spec.http[0]",
            "both fault and direct_response",
        );
    }

    #[test]
    fn rule_024_root_delegate_route_only_delegates() {
        passes(&http(
            "    delegate: {name: reviews-delegate, namespace: other}\n",
        ));
        fails(
            &http(&format!("    delegate: {{name: d}}\n{DEST}")),
            "spec.http[0].route",
            "must not specify route",
        );
        fails(
            &http("    delegate: {name: d}\n    redirect: {uri: /x}\n"),
            "spec.http[0].redirect",
            "must not specify redirect",
        );
    }

    #[test]
    fn rule_025_delegate_vs_cannot_delegate() {
        passes(&vs(&format!("  http:\n  - name: r\n{}", DEST)));
        fails(
            &vs(
                "  http:\n  - delegate: {name: d}\n    route:\n    - destination: {host: reviews}\n",
            ),
            "spec.http[0].delegate",
            "delegate HTTP route cannot contain delegate",
        );
    }

    #[test]
    fn rule_026_mirror_and_mirrors_exclusive() {
        passes(&http(&format!("    mirror: {{host: shadow}}\n{DEST}")));
        fails(
            &http(&format!(
                "    mirror: {{host: shadow}}\n    mirrors:\n    - destination: {{host: shadow2}}\n{DEST}"
            )),
            "spec.http[0]",
            "both mirror and mirrors",
        );
    }

    #[test]
    fn rule_027_match_header_names() {
        passes(&with_match(
            "headers: {x-user: {exact: a}, \":authority\": {exact: b}}",
        ));
        passes(&with_match("withoutHeaders: {x-user: {exact: a}}"));
        fails(
            &with_match("headers: {\"bad header\": {exact: a}}"),
            "spec.http[0].match[0].headers[bad header]",
            "is not a valid header name",
        );
        fails(
            &with_match("withoutHeaders: {\"x(y)\": {exact: a}}"),
            "spec.http[0].match[0].withoutHeaders[x(y)]",
            "is not a valid header name",
        );
        fails(
            &with_match("headers: {\"\": {exact: a}}"),
            "spec.http[0].match[0].headers[]",
            "header name cannot be empty",
        );
    }

    #[test]
    fn rule_028_header_match_not_null() {
        passes(&with_match("headers: {x-user: {}}"));
        passes(&with_match("withoutHeaders: {x-user: null}"));
        fails(
            &with_match("headers: {x-user: null}"),
            "spec.http[0].match[0].headers[x-user]",
            "header match x-user cannot be null",
        );
    }

    #[test]
    fn rule_029_jwt_claim_routing_only_on_gateways() {
        let doc = |gateways: &str| {
            vs(&format!(
                "  hosts: [reviews]\n  gateways: {gateways}\n  http:\n  - match:\n    - headers: {{\"@request.auth.claims.group\": {{exact: admin}}}}\n{DEST}"
            ))
        };
        passes(&doc("[gw]"));
        fails(
            &doc("[]"),
            "spec.http[0].match[0].headers[@request.auth.claims.group]",
            "only supported for gateway",
        );
        fails(
            &doc("[gw, mesh]"),
            "spec.http[0].match[0].headers[@request.auth.claims.group]",
            "only supported for gateway",
        );
        assert!(is_jwt_claim_route("@request.auth.claims[a][b]"));
        assert!(!is_jwt_claim_route("@request.auth.claims"));
    }

    #[test]
    fn rule_030_prefix_not_empty_except_uri() {
        passes(&with_match("uri: {prefix: \"\"}"));
        passes(&with_match("method: {exact: \"\"}"));
        fails(
            &with_match("scheme: {prefix: \"\"}"),
            "spec.http[0].match[0].scheme.prefix",
            "prefix string match should not be empty",
        );
        fails(
            &with_match("headers: {x-a: {prefix: \"\"}}"),
            "spec.http[0].match[0].headers[x-a].prefix",
            "should not be empty",
        );
        fails(
            &with_match("queryParams: {q: {prefix: \"\"}}"),
            "spec.http[0].match[0].queryParams[q].prefix",
            "should not be empty",
        );
        fails(
            &with_match("withoutHeaders: {x-a: {prefix: \"\"}}"),
            "spec.http[0].match[0].withoutHeaders[x-a].prefix",
            "should not be empty",
        );
    }

    #[test]
    fn rule_031_regex_is_valid_re2() {
        passes(&with_match("uri: {regex: \"/v[0-9]+/.*\"}"));
        passes(&with_match("headers: {x-a: {regex: \"*\"}}"));
        passes(&with_match("withoutHeaders: {x-a: {regex: \"*\"}}"));
        passes(&with_match("authority: {regex: \"(?i)foo\\\\.com\"}"));
        fails(
            &with_match("uri: {regex: \"/v[0-9\"}"),
            "spec.http[0].match[0].uri.regex",
            "Istio uses RE2 style regex",
        );
        fails(
            &with_match("method: {regex: \"\"}"),
            "spec.http[0].match[0].method.regex",
            "regex string match should not be empty",
        );
        fails(
            &with_match(&format!(
                "queryParams: {{q: {{regex: \"{}\"}}}}",
                "a".repeat(1025)
            )),
            "spec.http[0].match[0].queryParams[q].regex",
            "max length allowed is 1024",
        );
        fails(
            &with_match("headers: {x-a: {regex: \"(?<=a)b\"}}"),
            "spec.http[0].match[0].headers[x-a].regex",
            "RE2",
        );
    }

    #[test]
    fn rule_032_match_port() {
        passes(&with_match("port: 8080"));
        passes(&with_match("port: 0"));
        fails(
            &with_match("port: 70000"),
            "spec.http[0].match[0].port",
            "1..65535",
        );
        fails(
            &vs(
                "  hosts: [db]\n  tcp:\n  - match: [{port: 65536}]\n    route:\n    - destination: {host: db}\n",
            ),
            "spec.tcp[0].match[0].port",
            "1..65535",
        );
    }

    #[test]
    fn rule_033_match_source_labels() {
        passes(&with_match("sourceLabels: {app: sleep, version: v1}"));
        fails(
            &with_match("sourceLabels: {\"bad key!\": a}"),
            "spec.http[0].match[0].sourceLabels[bad key!]",
            "invalid tag key",
        );
        fails(
            &vs(
                "  hosts: [db]\n  tcp:\n  - match: [{sourceLabels: {app: \"a b\"}}]\n    route:\n    - destination: {host: db}\n",
            ),
            "spec.tcp[0].match[0].sourceLabels[app]",
            "invalid tag value",
        );
    }

    #[test]
    fn rule_034_match_source_namespace() {
        passes(&with_match("sourceNamespace: foo"));
        fails(
            &with_match("sourceNamespace: bad_ns"),
            "spec.http[0].match[0].sourceNamespace",
            "sourceNamespace match bad_ns is invalid",
        );
    }

    #[test]
    fn rule_035_request_set_add_header_names() {
        passes(&http(&format!(
            "    headers: {{request: {{set: {{x-a: b, host: h.example.com}}}}}}\n{DEST}"
        )));
        fails(
            &http(&format!(
                "    headers: {{request: {{set: {{\":path\": /x}}}}}}\n{DEST}"
            )),
            "spec.http[0].headers.request.set[:path]",
            "header cannot have \":\" prefix",
        );
        fails(
            &http(&format!(
                "    headers: {{request: {{add: {{\"\": x}}}}}}\n{DEST}"
            )),
            "spec.http[0].headers.request.add[]",
            "header name cannot be empty",
        );
        fails(
            &http(
                "    route:\n    - destination: {host: reviews}\n      headers: {request: {set: {\":method\": GET}}}\n",
            ),
            "spec.http[0].route[0].headers.request.set[:method]",
            "cannot have \":\" prefix",
        );
    }

    #[test]
    fn rule_036_remove_and_response_header_names() {
        passes(&http(&format!(
            "    headers: {{request: {{remove: [x-a]}}, response: {{set: {{x-b: c}}, remove: [x-c]}}}}\n{DEST}"
        )));
        fails(
            &http(&format!(
                "    headers: {{response: {{set: {{Host: x}}}}}}\n{DEST}"
            )),
            "spec.http[0].headers.response.set[Host]",
            "cannot set Host header",
        );
        fails(
            &http(&format!(
                "    headers: {{request: {{remove: [\":authority\"]}}}}\n{DEST}"
            )),
            "spec.http[0].headers.request.remove[0]",
            "header cannot have \":\" prefix",
        );
        fails(
            &http(&format!(
                "    headers: {{response: {{remove: [\"\"]}}}}\n{DEST}"
            )),
            "spec.http[0].headers.response.remove[0]",
            "header name cannot be empty",
        );
    }

    #[test]
    fn rule_037_header_values() {
        for ok in [
            "plain",
            "100%%",
            "%HOSTNAME%",
            "t=%START_TIME(%s.%3f)%",
            "a\tb",
        ] {
            passes(&http(&format!(
                "    headers: {{response: {{set: {{x-a: \"{ok}\"}}}}}}\n{DEST}"
            )));
        }
        fails(
            &http(&format!(
                "    headers: {{response: {{add: {{x-a: \"100%\"}}}}}}\n{DEST}"
            )),
            "spec.http[0].headers.response.add[x-a]",
            "Un-escaped %",
        );
        fails(
            &http(&format!(
                "    headers: {{request: {{set: {{x-a: \"abc%123\"}}}}}}\n{DEST}"
            )),
            "spec.http[0].headers.request.set[x-a]",
            "Un-terminated variable expression",
        );
        fails(
            &http(&format!(
                "    headers: {{request: {{set: {{x-a: \"a\\x01b\"}}}}}}\n{DEST}"
            )),
            "spec.http[0].headers.request.set[x-a]",
            "header value configuration",
        );
    }

    #[test]
    fn rule_038_authority_set_once() {
        passes(&http(&format!("    rewrite: {{authority: a.com}}\n{DEST}")));
        passes(&http(&format!(
            "    headers: {{request: {{set: {{host: a.com}}}}}}\n{DEST}"
        )));
        fails(
            &http(&format!(
                "    rewrite: {{authority: a.com}}\n    headers: {{request: {{set: {{host: b.com}}}}}}\n{DEST}"
            )),
            "spec.http[0].headers.request.set[host]",
            "authority header cannot be set multiple times",
        );
        fails(
            &http(&format!(
                "    headers: {{request: {{set: {{host: a.com}}, add: {{\":authority\": b.com}}}}}}\n{DEST}"
            )),
            "spec.http[0].headers.request.add[:authority]",
            "multiple times",
        );
    }

    #[test]
    fn rule_039_route_entries_and_destination_required() {
        passes(&http(DEST));
        fails(
            &http("    route:\n    - weight: 100\n"),
            "spec.http[0].route[0].destination",
            "destination is required",
        );
        fails(
            &http("    route:\n    - null\n"),
            "spec.http[0].route[0]",
            "weight may not be nil",
        );
        fails(
            &vs("  hosts: [db]\n  tcp:\n  - route:\n    - weight: 1\n"),
            "spec.tcp[0].route[0].destination",
            "destination is required",
        );
    }

    #[test]
    fn rule_040_weight_not_negative() {
        passes(&http(
            "    route:\n    - destination: {host: reviews}\n      weight: 0\n",
        ));
        fails(
            &http("    route:\n    - destination: {host: reviews}\n      weight: -1\n"),
            "spec.http[0].route[0].weight",
            "weight -1 < 0",
        );
        fails(
            &vs(
                "  hosts: [db]\n  tcp:\n  - route:\n    - destination: {host: db}\n      weight: -5\n",
            ),
            "spec.tcp[0].route[0].weight",
            "< 0",
        );
    }

    #[test]
    fn rule_041_total_weight_not_zero() {
        let two = |a: i32, b: i32| {
            http(&format!(
                "    route:\n    - destination: {{host: reviews, subset: v1}}\n      weight: {a}\n    - destination: {{host: reviews, subset: v2}}\n      weight: {b}\n"
            ))
        };
        passes(&two(0, 1));
        passes(&two(30, 30)); // the sum need not be 100
        fails(
            &two(0, 0),
            "spec.http[0].route",
            "total destination weight = 0",
        );
        // A single destination gets everything whatever its weight.
        passes(&http(
            "    route:\n    - destination: {host: reviews}\n      weight: 0\n",
        ));
    }

    #[test]
    fn rule_042_destination_host() {
        passes(&http(
            "    route:\n    - destination: {host: reviews.default.svc.cluster.local}\n",
        ));
        fails(
            &http("    route:\n    - destination: {host: \"*\"}\n"),
            "spec.http[0].route[0].destination.host",
            "invalid destination host *",
        );
        fails(
            &http("    route:\n    - destination: {host: \"bad..host\"}\n"),
            "spec.http[0].route[0].destination.host",
            "invalid",
        );
        fails(
            &vs("  hosts: [db]\n  tcp:\n  - route:\n    - destination: {host: \"\"}\n"),
            "spec.tcp[0].route[0].destination.host",
            "empty domain name",
        );
    }

    #[test]
    fn rule_043_destination_subset() {
        passes(&http(
            "    route:\n    - destination: {host: reviews, subset: v1}\n",
        ));
        fails(
            &http("    route:\n    - destination: {host: reviews, subset: v_1}\n"),
            "spec.http[0].route[0].destination.subset",
            "subset name is invalid",
        );
    }

    #[test]
    fn rule_044_destination_port() {
        passes(&http(
            "    route:\n    - destination: {host: reviews, port: {number: 9080}}\n",
        ));
        fails(
            &http("    route:\n    - destination: {host: reviews, port: {}}\n"),
            "spec.http[0].route[0].destination.port.number",
            "1..65535",
        );
        fails(
            &vs(
                "  hosts: [a.example.com]\n  gateways: [gw]\n  tls:\n  - match: [{sniHosts: [a.example.com]}]\n    route:\n    - destination: {host: a.example.com, port: {number: 0}}\n",
            ),
            "spec.tls[0].route[0].destination.port.number",
            "1..65535",
        );
    }

    #[test]
    fn rule_045_mirror_percentage_range() {
        passes(&http(&format!(
            "    mirror: {{host: shadow}}\n    mirrorPercentage: {{value: 50.5}}\n{DEST}"
        )));
        fails(
            &http(&format!(
                "    mirror: {{host: shadow}}\n    mirrorPercentage: {{value: 150}}\n{DEST}"
            )),
            "spec.http[0].mirrorPercentage.value",
            "not in range",
        );
        fails(
            &http(&format!(
                "    mirror: {{host: shadow}}\n    mirrorPercentage: {{value: -1}}\n{DEST}"
            )),
            "spec.http[0].mirrorPercentage.value",
            "not in range",
        );
    }

    #[test]
    fn host_matching_follows_istio() {
        assert!(host_matches("*.foo.com", "a.foo.com"));
        assert!(host_matches("a.foo.com", "*.foo.com"));
        assert!(host_matches("*.com", "*.foo.com"));
        assert!(!host_matches("foo.com", "*.foo.com"));
        assert!(host_subset_of("a.foo.com", "*.foo.com"));
        assert!(host_subset_of("*.a.foo.com", "*.foo.com"));
        assert!(!host_subset_of("*.foo.com", "a.foo.com"));
    }
}
