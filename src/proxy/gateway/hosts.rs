//! Gateway server hosts: `[namespace/]dnsName` entries of `servers[].hosts`, and how they
//! select requests (by `Host` / SNI) and VirtualServices (by namespace and host).
//!
//! As in Istio: the namespace part is `*` (any namespace, the default), `.` (the Gateway's
//! own namespace) or a namespace name, and restricts which namespaces' VirtualServices may
//! bind the host; the host part is an FQDN, a left wildcard (`*.example.com`) or `*`.

/// One entry of a server's `hosts`, split.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerHost {
    /// The namespace part: `*`, `.`, or a namespace (`*` when absent).
    pub namespace: String,
    /// The host part, lower-cased: an FQDN, `*.suffix` or `*`.
    pub host: String,
}

impl ServerHost {
    /// Splits `ns/host` (no `/` = `*/host`).
    pub fn parse(entry: &str) -> ServerHost {
        let (namespace, host) = entry.split_once('/').unwrap_or(("*", entry));
        ServerHost {
            namespace: namespace.to_string(),
            host: host.to_ascii_lowercase(),
        }
    }

    /// Whether a VirtualService in `vs_namespace` may bind this host of a Gateway in
    /// `gateway_namespace`.
    pub fn allows_namespace(&self, vs_namespace: &str, gateway_namespace: &str) -> bool {
        match self.namespace.as_str() {
            "*" => true,
            "." => vs_namespace == gateway_namespace,
            ns => ns == vs_namespace,
        }
    }

    /// Whether the concrete host `name` (no port) is one of this entry's hosts.
    pub fn matches_name(&self, name: &str) -> bool {
        host_matches(&self.host, name)
    }
}

/// Whether the pattern `pattern` (FQDN, `*.suffix`, `*`) covers the concrete `name`,
/// case-insensitively. A wildcard needs at least one more character: `*.foo.com` matches
/// `a.foo.com`, not `foo.com` (Istio's `host.Name.Matches`, Envoy's domain matching).
pub fn host_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some(suffix) => {
            name.len() > suffix.len()
                && name
                    .get(name.len() - suffix.len()..)
                    .is_some_and(|tail| tail.eq_ignore_ascii_case(suffix))
        }
        None => pattern.eq_ignore_ascii_case(name),
    }
}

/// Whether two host patterns have a host in common (Istio's `host.Name.Matches` both ways):
/// the VirtualService host `*.example.com` and the server host `a.example.com` intersect, as
/// do `*` and anything.
pub fn hosts_intersect(a: &str, b: &str) -> bool {
    match (a.strip_prefix('*'), b.strip_prefix('*')) {
        (None, None) => a.eq_ignore_ascii_case(b),
        (Some(_), None) => host_matches(a, b),
        (None, Some(_)) => host_matches(b, a),
        // Two wildcards intersect when one suffix ends with the other.
        (Some(sa), Some(sb)) => ends_with_ignore_case(sa, sb) || ends_with_ignore_case(sb, sa),
    }
}

fn ends_with_ignore_case(s: &str, suffix: &str) -> bool {
    s.len() >= suffix.len()
        && s.get(s.len() - suffix.len()..)
            .is_some_and(|tail| tail.eq_ignore_ascii_case(suffix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_split_into_namespace_and_host() {
        assert_eq!(
            ServerHost::parse("prod/API.example.com"),
            ServerHost {
                namespace: "prod".into(),
                host: "api.example.com".into()
            }
        );
        assert_eq!(ServerHost::parse("*.example.com").namespace, "*");
        let own = ServerHost::parse("./a.example.com");
        assert!(own.allows_namespace("edge", "edge"));
        assert!(!own.allows_namespace("prod", "edge"));
        let prod = ServerHost::parse("prod/a.example.com");
        assert!(prod.allows_namespace("prod", "edge"));
        assert!(!prod.allows_namespace("dev", "edge"));
        assert!(ServerHost::parse("*/a.example.com").allows_namespace("x", "y"));
    }

    #[test]
    fn wildcards_need_one_more_label_character() {
        assert!(host_matches("*.example.com", "a.example.com"));
        assert!(host_matches("*.example.com", "a.b.EXAMPLE.com"));
        assert!(!host_matches("*.example.com", "example.com"));
        assert!(!host_matches("*.example.com", ".example.com"));
        assert!(host_matches("*", "anything"));
        assert!(host_matches("A.example.com", "a.example.com"));
        assert!(!host_matches("a.example.com", "b.example.com"));
    }

    #[test]
    fn patterns_intersect_both_ways() {
        assert!(hosts_intersect("*.example.com", "a.example.com"));
        assert!(hosts_intersect("a.example.com", "*.example.com"));
        assert!(hosts_intersect("*", "a.example.com"));
        assert!(hosts_intersect("*.a.example.com", "*.example.com"));
        assert!(!hosts_intersect("*.example.org", "*.example.com"));
        assert!(!hosts_intersect("a.example.com", "b.example.com"));
        assert!(!hosts_intersect("*.example.com", "example.com"));
    }
}
