//! Checks shared by several kinds (Part two, section A of `ISTIO.md`), and the name grammars
//! Istio uses: DNS labels, FQDNs, wildcard domains, Kubernetes label keys and values.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use crate::config::Resource;
use crate::path::FieldPath;
use crate::validate::Findings;

/// The annotation that puts an AuthorizationPolicy in dry-run mode.
pub const DRY_RUN_ANNOTATION: &str = "istio.io/dry-run";

/// Annotations Istio reserves for itself (rule 3).
const INTERNAL_ANNOTATIONS: [&str; 3] = [
    "internal.istio.io/parents",
    "internal.istio.io/route-semantics",
    "istio.io/test-only-always-reject",
];

/// Rules 1–3: annotations on any kind.
pub fn check_metadata(res: &Resource, out: &mut Findings<'_>) {
    let meta = FieldPath::ROOT.field("metadata");
    let ann = meta.field("annotations");
    let is_authz = res.kind() == crate::config::Kind::AuthorizationPolicy;
    for (k, v) in &res.metadata.annotations {
        let p = ann.key(k);
        if k == DRY_RUN_ANNOTATION {
            if !is_authz {
                out.error(
                    1,
                    &p,
                    format!("unsupported annotation {k:?}, please remove: it applies to AuthorizationPolicy only"),
                );
            } else if parse_go_bool(v).is_none() {
                out.error(
                    2,
                    &p,
                    format!("invalid value {v:?} for annotation {k:?}: expected true or false"),
                );
            } else if let crate::config::Spec::AuthorizationPolicy(ap) = &res.spec {
                use crate::config::authorization_policy::Action;
                if !matches!(ap.action, Action::Allow | Action::Deny) {
                    out.error(
                        2,
                        &p,
                        format!(
                            "annotation {k:?} only supports action ALLOW and DENY, not {}",
                            ap.action
                        ),
                    );
                }
            }
        }
        if INTERNAL_ANNOTATIONS.contains(&k.as_str()) || k.starts_with("internal.istio.io/") {
            out.error(
                3,
                &p,
                format!("annotation {k:?} is internal to Istio and may not be set by users"),
            );
        }
    }
}

/// Go's `strconv.ParseBool`.
pub fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// A DNS-1123 label as Istio checks it: 1–63 characters, `[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?`
/// (upper case is accepted).
pub fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
}

/// A DNS-1123 label in lower case, as Kubernetes names namespaces.
pub fn is_lowercase_dns_label(s: &str) -> bool {
    is_dns_label(s) && !s.bytes().any(|c| c.is_ascii_uppercase())
}

/// A wildcard label: `*`, or `*`/`*-` followed by a DNS label, or a DNS label.
pub fn is_wildcard_dns_label(s: &str) -> bool {
    if s == "*" {
        return true;
    }
    if s.len() > 63 {
        return false;
    }
    let rest = s
        .strip_prefix("*-")
        .or_else(|| s.strip_prefix('*'))
        .unwrap_or(s);
    is_dns_label(rest)
}

/// A DNS-1123 subdomain: dot-separated lower-case labels, at most 253 characters.
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_lowercase_dns_label)
}

fn domain_preconditions(domain: &str) -> Result<(), String> {
    if domain.len() > 255 {
        return Err(format!("domain name {domain:?} too long (max 255)"));
    }
    if domain.is_empty() {
        return Err("empty domain name not allowed".into());
    }
    Ok(())
}

fn check_labels(whole: &str, rest: &str) -> Result<(), String> {
    let parts: Vec<&str> = rest.split('.').collect();
    let top = parts[parts.len() - 1];
    if !top.is_empty() && top.bytes().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "domain name {whole:?} invalid (top level domain {top:?} cannot be all-numeric)"
        ));
    }
    for (i, label) in parts.iter().enumerate() {
        if i == parts.len() - 1 && label.is_empty() && i > 0 {
            return Ok(()); // a trailing dot
        }
        if !is_dns_label(label) {
            return Err(format!(
                "domain name {whole:?} invalid (label {label:?} invalid)"
            ));
        }
    }
    Ok(())
}

/// A fully qualified domain name: dot-separated DNS labels, last not all-numeric, trailing
/// dot allowed, at most 255 characters. The message says what is wrong.
pub fn validate_fqdn(domain: &str) -> Result<(), String> {
    domain_preconditions(domain)?;
    check_labels(domain, domain)
}

/// A domain whose first label may be a wildcard (`*.example.com`, `*-foo.example.com`, `*`).
pub fn validate_wildcard_domain(domain: &str) -> Result<(), String> {
    domain_preconditions(domain)?;
    let (first, rest) = match domain.split_once('.') {
        Some((f, r)) => (f, Some(r)),
        None => (domain, None),
    };
    if !is_wildcard_dns_label(first) {
        return Err(format!(
            "domain name {domain:?} invalid (label {first:?} invalid)"
        ));
    }
    match rest {
        Some(r) => check_labels(domain, r),
        None => Ok(()),
    }
}

/// Whether `s` is an IP address (v4 or v6).
pub fn is_ip(s: &str) -> bool {
    s.parse::<IpAddr>().is_ok()
}

/// Whether `s` is a CIDR block (`10.0.0.0/8`, `2001:db8::/32`).
pub fn is_cidr(s: &str) -> bool {
    s.parse::<ipnet::IpNet>().is_ok()
}

/// An IP address or a CIDR block, with the message Istio gives.
pub fn validate_ip_or_cidr(s: &str) -> Result<(), String> {
    if s.contains('/') {
        if is_cidr(s) {
            Ok(())
        } else {
            Err(format!("{s:?} is not a valid CIDR block"))
        }
    } else if is_ip(s) {
        Ok(())
    } else {
        Err(format!("{s:?} is not a valid IP"))
    }
}

/// Rule 4: a duration field must be at least 1ms and a whole number of milliseconds.
pub fn check_duration(out: &mut Findings<'_>, path: &FieldPath<'_>, d: Duration) {
    if d < Duration::from_millis(1) {
        out.error(4, path, "duration must be greater than 1ms");
    } else if !d.subsec_nanos().is_multiple_of(1_000_000) {
        out.error(4, path, "only durations to ms precision are supported");
    }
}

/// Rule 6: a port number must be in 1..65535.
pub fn check_port(out: &mut Findings<'_>, path: &FieldPath<'_>, port: u32) {
    if !(1..=65535).contains(&port) {
        out.error(
            6,
            path,
            format!("port number {port} must be in the range 1..65535"),
        );
    }
}

/// Rules 7–10: `exportTo` of VirtualService, DestinationRule and ServiceEntry.
/// `allow_none` allows `~` (ServiceEntry only).
pub fn check_export_to(
    out: &mut Findings<'_>,
    path: &FieldPath<'_>,
    export_to: &[String],
    namespace: &str,
    allow_none: bool,
) {
    let mut seen: Vec<&str> = Vec::new();
    let (mut public, mut none) = (false, false);
    for (i, e) in export_to.iter().enumerate() {
        let p = path.index(i);
        let normalized = match e.as_str() {
            "." => namespace,
            "*" => {
                public = true;
                "*"
            }
            "~" => {
                if !allow_none {
                    out.error(7, &p, "exportTo ~ (none) is not allowed for this kind");
                    continue;
                }
                none = true;
                "~"
            }
            other => {
                if !is_lowercase_dns_label(other) {
                    out.error(
                        7,
                        &p,
                        format!("only .,*, or a valid DNS 1123 label is allowed as exportTo entry, found {other:?}"),
                    );
                    continue;
                }
                other
            }
        };
        if seen.contains(&normalized) {
            out.error(8, &p, format!("duplicate entries in exportTo: {e:?}"));
        }
        seen.push(normalized);
    }
    if public && export_to.len() > 1 {
        out.error(
            9,
            path,
            "cannot have both public (*) and non-public exportTo values for a resource",
        );
    }
    if none && export_to.len() > 1 {
        out.error(
            10,
            path,
            "cannot export service entry to no one (~) and someone",
        );
    }
}

/// Rules 11–12: the labels of a workload selector (security kinds, DestinationRule,
/// ServiceEntry, Sidecar). `selector_path` is the selector object's path, `labels_path` the
/// path of its label map.
pub fn check_selector(
    out: &mut Findings<'_>,
    selector_path: &FieldPath<'_>,
    labels_path: &FieldPath<'_>,
    labels: &BTreeMap<String, String>,
) {
    if labels.is_empty() {
        out.warn(
            12,
            selector_path,
            "workload selector specified without labels",
        );
    }
    for (k, v) in labels {
        let p = labels_path.key(k);
        if k.is_empty() {
            out.error(11, &p, "empty key is not supported in selector");
        }
        if k.contains('*') || v.contains('*') {
            out.error(11, &p, "wildcard is not supported in selector");
        }
        if v.len() > 63 {
            out.error(
                11,
                &p,
                format!("selector value {v:?} is longer than 63 characters"),
            );
        }
    }
}

/// Rule 13: a Kubernetes label map (subset labels, sourceLabels, endpoint labels).
pub fn check_label_map(
    out: &mut Findings<'_>,
    path: &FieldPath<'_>,
    labels: &BTreeMap<String, String>,
) {
    for (k, v) in labels {
        let p = path.key(k);
        if !is_label_key(k) {
            out.error(13, &p, format!("invalid tag key: {k:?}"));
        }
        if !is_label_value(v) {
            out.error(13, &p, format!("invalid tag value: {v:?}"));
        }
    }
}

/// A Kubernetes qualified name: `[prefix/]name`, name 1–63 of `[A-Za-z0-9][-A-Za-z0-9_.]*` ending
/// alphanumeric, prefix a DNS subdomain.
pub fn is_label_key(k: &str) -> bool {
    let (prefix, name) = match k.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if let Some(p) = prefix
        && !is_dns_subdomain(p)
    {
        return false;
    }
    !name.is_empty() && is_label_value(name)
}

/// A Kubernetes label value: empty, or 1–63 of `[A-Za-z0-9][-A-Za-z0-9_.]*` ending alphanumeric.
pub fn is_label_value(v: &str) -> bool {
    let b = v.as_bytes();
    if b.is_empty() {
        return true;
    }
    b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// A port protocol as Istio parses it (`protocol.Parse`, case-insensitive), shared by
/// Gateway servers, ServiceEntry ports and Sidecar listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `HTTP`.
    Http,
    /// `HTTP2`.
    Http2,
    /// `HTTP_PROXY`.
    HttpProxy,
    /// `HTTPS`.
    Https,
    /// `GRPC`.
    Grpc,
    /// `GRPC-WEB`.
    GrpcWeb,
    /// `TCP`.
    Tcp,
    /// `TLS`.
    Tls,
    /// `UDP`.
    Udp,
    /// `MONGO`.
    Mongo,
    /// `REDIS`.
    Redis,
    /// `MYSQL`.
    MySql,
}

impl Protocol {
    /// Parses a protocol name, ignoring case; `None` for a protocol Istio does not know.
    pub fn parse(s: &str) -> Option<Protocol> {
        Some(match s.to_ascii_lowercase().as_str() {
            "http" => Protocol::Http,
            "http2" => Protocol::Http2,
            "http_proxy" => Protocol::HttpProxy,
            "https" => Protocol::Https,
            "grpc" => Protocol::Grpc,
            "grpc-web" => Protocol::GrpcWeb,
            "tcp" => Protocol::Tcp,
            "tls" => Protocol::Tls,
            "udp" => Protocol::Udp,
            "mongo" => Protocol::Mongo,
            "redis" => Protocol::Redis,
            "mysql" => Protocol::MySql,
            _ => return None,
        })
    }

    /// HTTP family: HTTP, HTTP2, HTTP_PROXY, GRPC, GRPC-WEB.
    pub fn is_http(self) -> bool {
        matches!(
            self,
            Protocol::Http
                | Protocol::Http2
                | Protocol::HttpProxy
                | Protocol::Grpc
                | Protocol::GrpcWeb
        )
    }

    /// TLS family: HTTPS, TLS.
    pub fn is_tls(self) -> bool {
        matches!(self, Protocol::Https | Protocol::Tls)
    }
}

/// Whether `s` is empty (protocol sniffing) or a protocol Istio knows.
pub fn is_known_protocol(s: &str) -> bool {
    s.is_empty() || Protocol::parse(s).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::testing::*;

    #[test]
    fn name_grammars() {
        assert!(is_dns_label("reviews-v1"));
        assert!(is_dns_label("Reviews"));
        assert!(!is_dns_label("-a"));
        assert!(!is_dns_label(&"a".repeat(64)));
        assert!(validate_fqdn("reviews.default.svc.cluster.local").is_ok());
        assert!(validate_fqdn("example.com.").is_ok());
        assert!(validate_fqdn("a.123").is_err());
        assert!(validate_fqdn("").is_err());
        assert!(validate_wildcard_domain("*.example.com").is_ok());
        assert!(validate_wildcard_domain("*-foo.example.com").is_ok());
        assert!(validate_wildcard_domain("*").is_ok());
        assert!(validate_wildcard_domain("reviews").is_ok());
        assert!(validate_wildcard_domain("foo.*.com").is_err());
        assert!(validate_wildcard_domain("a..b").is_err());
        assert!(is_label_key("app.kubernetes.io/name"));
        assert!(!is_label_key("-bad"));
        assert!(is_label_value(""));
        assert!(!is_label_value("bad value"));
        assert!(validate_ip_or_cidr("10.0.0.0/8").is_ok());
        assert!(validate_ip_or_cidr("10.0.0.0/33").is_err());
        assert!(validate_ip_or_cidr("::1").is_ok());
    }

    const VS: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: r
  annotations: {ANN}
spec:
  hosts: [reviews]
  exportTo: EXPORT
  http:
  - route:
    - destination: {host: reviews}
";

    fn vs(ann: &str, export: &str) -> String {
        VS.replace("{ANN}", ann).replace("EXPORT", export)
    }

    #[test]
    fn rule_001_dry_run_annotation_only_on_authorization_policy() {
        passes(&vs("{}", "[]"));
        fails(
            &vs("{istio.io/dry-run: \"true\"}", "[]"),
            "metadata.annotations[istio.io/dry-run]",
            "unsupported annotation",
        );
    }

    #[test]
    fn rule_002_dry_run_value_is_a_bool() {
        let ap = |v: &str| {
            format!(
                "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: a
  annotations: {{istio.io/dry-run: \"{v}\"}}
spec:
  action: ALLOW
  rules: [{{}}]
"
            )
        };
        passes(&ap("true"));
        fails(
            &ap("maybe"),
            "metadata.annotations[istio.io/dry-run]",
            "invalid value",
        );
        let audit = ap("true").replace("action: ALLOW", "action: AUDIT");
        fails(
            &audit,
            "metadata.annotations[istio.io/dry-run]",
            "only supports action ALLOW and DENY",
        );
    }

    #[test]
    fn rule_003_internal_annotations_rejected() {
        passes(&vs("{team: a}", "[]"));
        fails(
            &vs("{internal.istio.io/parents: x}", "[]"),
            "metadata.annotations[internal.istio.io/parents]",
            "internal",
        );
    }

    #[test]
    fn rule_004_duration_at_least_1ms_in_ms_precision() {
        let with = |t: &str| {
            format!(
                "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: r}}
spec:
  hosts: [reviews]
  http:
  - timeout: {t}
    route:
    - destination: {{host: reviews}}
"
            )
        };
        passes(&with("1.5s"));
        fails(&with("500us"), "spec.http[0].timeout", "greater than 1ms");
        fails(&with("1.0005s"), "spec.http[0].timeout", "ms precision");
    }

    #[test]
    fn rule_006_port_range() {
        let with = |p: u32| {
            format!(
                "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: r}}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {{host: reviews, port: {{number: {p}}}}}
"
            )
        };
        passes(&with(9080));
        fails(
            &with(70000),
            "spec.http[0].route[0].destination.port.number",
            "1..65535",
        );
    }

    #[test]
    fn rule_007_export_to_values() {
        passes(&vs("{}", "[\".\", other-ns]"));
        fails(
            &vs("{}", "[\"Bad_NS\"]"),
            "spec.exportTo[0]",
            "DNS 1123 label",
        );
        fails(&vs("{}", "[\"~\"]"), "spec.exportTo[0]", "not allowed");
    }

    #[test]
    fn rule_008_export_to_no_duplicates() {
        passes(&vs("{}", "[\".\"]"));
        fails(
            &vs("{}", "[\".\", default]"),
            "spec.exportTo[1]",
            "duplicate",
        );
    }

    #[test]
    fn rule_009_export_to_public_alone() {
        passes(&vs("{}", "[\"*\"]"));
        fails(&vs("{}", "[\"*\", \".\"]"), "spec.exportTo", "public");
    }

    #[test]
    fn rule_010_service_entry_export_to_none_alone() {
        let se = |e: &str| {
            format!(
                "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: s}}
spec:
  hosts: [api.example.com]
  ports: [{{number: 443, name: https, protocol: TLS}}]
  resolution: DNS
  exportTo: {e}
"
            )
        };
        passes(&se("[\"~\"]"));
        fails(&se("[\"~\", \".\"]"), "spec.exportTo", "no one");
    }

    fn pa(selector: &str) -> String {
        format!(
            "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: p}}
spec:
  selector: {selector}
  mtls: {{mode: STRICT}}
"
        )
    }

    #[test]
    fn rule_011_selector_labels_no_wildcards_or_empty_keys() {
        passes(&pa("{matchLabels: {app: a}}"));
        fails(
            &pa("{matchLabels: {app: \"*\"}}"),
            "spec.selector.matchLabels[app]",
            "wildcard",
        );
        fails(
            &pa("{matchLabels: {\"\": a}}"),
            "spec.selector.matchLabels[]",
            "empty key",
        );
    }

    #[test]
    fn rule_012_selector_without_labels_warns() {
        no_finding(&pa("{matchLabels: {app: a}}"), "spec.selector");
        warns(&pa("{}"), "spec.selector", "without labels");
    }

    #[test]
    fn rule_013_label_maps_are_kubernetes_labels() {
        let dr = |labels: &str| {
            format!(
                "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: d}}
spec:
  host: reviews
  subsets:
  - name: v1
    labels: {labels}
"
            )
        };
        passes(&dr("{version: v1}"));
        fails(
            &dr("{\"bad key!\": v1}"),
            "spec.subsets[0].labels[bad key!]",
            "invalid tag key",
        );
        fails(
            &dr("{version: \"v 1\"}"),
            "spec.subsets[0].labels[version]",
            "invalid tag value",
        );
    }
}
