//! The value patterns of AuthorizationPolicy fields, compiled once: strings (exact, `abc*`,
//! `*abc`, `*`), path templates (`{*}`, `{**}`), namespace globs, service accounts, IP blocks.
//!
//! Each pattern mirrors the Envoy matcher Istio generates for it (pilot's
//! `security/authz/model/generator.go`), so a value matches here exactly when it would match
//! in a sidecar.

use std::net::IpAddr;

use ipnet::IpNet;

/// A string value of an AuthorizationPolicy (`principals`, `hosts`, `methods`, `paths`,
/// `when` values, ...), as Istio turns it into an Envoy `StringMatcher`: `*` alone is "any
/// non-empty value" (regex `.+`), a leading `*` a suffix match, a trailing `*` a prefix
/// match, anything else an exact match. A `*` anywhere else is a literal character.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StrPattern {
    /// `*`: any non-empty value.
    Present,
    /// No `*` at either end: the whole value.
    Exact(Box<str>),
    /// `abc*`: values starting with `abc`.
    Prefix(Box<str>),
    /// `*abc`: values ending with `abc`.
    Suffix(Box<str>),
}

impl StrPattern {
    /// Compiles a value as Istio's `matcher.StringMatcher` does (`*` is checked first, then a
    /// leading `*`, then a trailing one).
    pub(crate) fn parse(value: &str) -> Self {
        if value == "*" {
            StrPattern::Present
        } else if let Some(rest) = value.strip_prefix('*') {
            StrPattern::Suffix(rest.into())
        } else if let Some(rest) = value.strip_suffix('*') {
            StrPattern::Prefix(rest.into())
        } else {
            StrPattern::Exact(value.into())
        }
    }

    /// Whether `value` matches, byte for byte.
    pub(crate) fn matches(&self, value: &[u8]) -> bool {
        match self {
            StrPattern::Present => !value.is_empty(),
            StrPattern::Exact(e) => value == e.as_bytes(),
            StrPattern::Prefix(p) => value.starts_with(p.as_bytes()),
            StrPattern::Suffix(s) => value.ends_with(s.as_bytes()),
        }
    }

    /// Whether `value` matches ignoring ASCII case (Envoy's `ignore_case`, used for hosts).
    pub(crate) fn matches_ignore_case(&self, value: &[u8]) -> bool {
        match self {
            StrPattern::Present => !value.is_empty(),
            StrPattern::Exact(e) => value.eq_ignore_ascii_case(e.as_bytes()),
            StrPattern::Prefix(p) => value
                .get(..p.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(p.as_bytes())),
            StrPattern::Suffix(s) => value
                .len()
                .checked_sub(s.len())
                .and_then(|start| value.get(start..))
                .is_some_and(|tail| tail.eq_ignore_ascii_case(s.as_bytes())),
        }
    }

    /// The exact value, when this pattern is an exact match.
    pub(crate) fn exact(&self) -> Option<&str> {
        match self {
            StrPattern::Exact(e) => Some(e),
            _ => None,
        }
    }
}

/// The bytes Envoy's URI template operators match: RFC 3986 `pchar` without `*` (Envoy's
/// `kLiteral`: unreserved, `%`, sub-delims but `*`, `:`, `@`).
fn is_template_literal(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~%!$&'()+,;:@=".contains(&b)
}

/// One piece of a path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Token {
    /// Text that must appear as is (slashes included).
    Literal(Box<str>),
    /// `{*}`: one or more template-literal bytes, never `/` (Envoy `[kLiteral]+`).
    One,
    /// `{**}`: zero or more template-literal bytes or `/` (Envoy `[kLiteral/]*`).
    Rest,
}

/// A `paths` / `notPaths` value: a [`StrPattern`], or, when it contains `{*}` or `{**}`, an
/// Envoy URI template (`uri_template` path matcher) matched against the whole path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PathPattern {
    /// No template operator: exact / prefix / suffix / presence.
    Str(StrPattern),
    /// A URI template, as tokens.
    Template(Box<[Token]>),
}

impl PathPattern {
    /// Compiles a path value; `{*}` and `{**}` make it a template (Istio's
    /// `security.ContainsPathTemplate`), anything else a [`StrPattern`].
    pub(crate) fn parse(value: &str) -> Self {
        if !value.contains("{*}") && !value.contains("{**}") {
            return PathPattern::Str(StrPattern::parse(value));
        }
        let mut tokens = Vec::new();
        let mut rest = value;
        while !rest.is_empty() {
            let next = rest.find('{').and_then(|open| {
                let tail = rest.get(open..)?;
                if tail.starts_with("{**}") {
                    Some((open, Token::Rest, 4))
                } else if tail.starts_with("{*}") {
                    Some((open, Token::One, 3))
                } else {
                    None
                }
            });
            match next {
                Some((open, op, len)) => {
                    if let Some(lit) = rest.get(..open).filter(|l| !l.is_empty()) {
                        tokens.push(Token::Literal(lit.into()));
                    }
                    tokens.push(op);
                    rest = rest.get(open + len..).unwrap_or_default();
                }
                None => {
                    // A `{` that opens no operator is a literal (validation rejects it).
                    tokens.push(Token::Literal(rest.into()));
                    rest = "";
                }
            }
        }
        PathPattern::Template(tokens.into_boxed_slice())
    }

    /// A literal every matching path starts with (`""` when there is none), and whether it
    /// is the whole path: for indexing.
    pub(crate) fn literal(&self) -> (&str, bool) {
        match self {
            PathPattern::Str(StrPattern::Exact(e)) => (e, true),
            PathPattern::Str(StrPattern::Prefix(p)) => (p, false),
            PathPattern::Str(StrPattern::Suffix(_) | StrPattern::Present) => ("", false),
            PathPattern::Template(tokens) => match tokens.first() {
                Some(Token::Literal(l)) => (l, tokens.len() == 1),
                _ => ("", false),
            },
        }
    }

    /// Whether `path` (normalised, without the query) matches.
    pub(crate) fn matches(&self, path: &str) -> bool {
        match self {
            PathPattern::Str(p) => p.matches(path.as_bytes()),
            PathPattern::Template(tokens) => match_template(tokens, path.as_bytes()),
        }
    }
}

/// Matches `tokens` against all of `path`, as Envoy's RE2 full match of the template's regex
/// would (backtracking over where a `{*}` or `{**}` ends).
fn match_template(tokens: &[Token], path: &[u8]) -> bool {
    let Some((first, rest)) = tokens.split_first() else {
        return path.is_empty();
    };
    match first {
        Token::Literal(lit) => path
            .strip_prefix(lit.as_bytes())
            .is_some_and(|after| match_template(rest, after)),
        Token::One => {
            let run = path.iter().take_while(|b| is_template_literal(**b)).count();
            (1..=run).rev().any(|end| {
                path.get(end..)
                    .is_some_and(|after| match_template(rest, after))
            })
        }
        Token::Rest => {
            let run = path
                .iter()
                .take_while(|b| **b == b'/' || is_template_literal(**b))
                .count();
            (0..=run).rev().any(|end| {
                path.get(end..)
                    .is_some_and(|after| match_template(rest, after))
            })
        }
    }
}

/// A `namespaces` value: Istio matches it with the regex `.*/ns/<value>/.*` on the peer's
/// SPIFFE id, every `*` of the value turned into `.*`. Here the glob is matched against the
/// segment after an `ns` segment of the principal, which is the same for every principal of
/// Istio's form `<td>/ns/<ns>/sa/<sa>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NamespaceGlob {
    /// The value split at its `*`s: the first piece is a prefix, the last a suffix, the ones
    /// between must appear in order.
    pieces: Box<[Box<str>]>,
}

impl NamespaceGlob {
    /// Compiles a `namespaces` value.
    pub(crate) fn parse(value: &str) -> Self {
        NamespaceGlob {
            pieces: value.split('*').map(Into::into).collect(),
        }
    }

    /// Whether the namespace segment `ns` matches the glob.
    fn matches_segment(&self, ns: &str) -> bool {
        let (Some((first, rest)), Some(last)) = (self.pieces.split_first(), self.pieces.last())
        else {
            return false;
        };
        if rest.is_empty() {
            return ns == &**first;
        }
        let Some(mut tail) = ns.strip_prefix(&**first) else {
            return false;
        };
        let middle = rest.get(..rest.len() - 1).unwrap_or_default();
        for piece in middle {
            match tail.find(&**piece) {
                Some(at) => tail = tail.get(at + piece.len()..).unwrap_or_default(),
                None => return false,
            }
        }
        tail.ends_with(&**last)
    }

    /// Whether the principal (SPIFFE id without `spiffe://`) names a matching namespace: a
    /// segment `ns` (not the first) followed by a matching segment and a `/`.
    pub(crate) fn matches_principal(&self, principal: &str) -> bool {
        let mut rest = principal;
        while let Some(at) = rest.find("/ns/") {
            let after = rest.get(at + 4..).unwrap_or_default();
            if let Some(end) = after.find('/')
                && self.matches_segment(after.get(..end).unwrap_or_default())
            {
                return true;
            }
            rest = after;
        }
        false
    }
}

/// A `serviceAccounts` value (`sa`, or `ns/sa`; a bare `sa` is in the policy's namespace).
/// Istio matches it with the regex `spiffe://.+/ns/<ns>/(.+/|)sa/<sa>(/.+)?` on the peer's
/// SPIFFE id; this is that regex, written out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServiceAccount {
    /// `/ns/<ns>/`.
    ns_needle: Box<str>,
    /// `sa/<sa>`.
    sa_needle: Box<str>,
}

impl ServiceAccount {
    /// Compiles a value; `policy_namespace` completes a bare `sa`.
    pub(crate) fn parse(value: &str, policy_namespace: &str) -> Self {
        let (ns, sa) = value.split_once('/').unwrap_or((policy_namespace, value));
        ServiceAccount {
            ns_needle: format!("/ns/{ns}/").into(),
            sa_needle: format!("sa/{sa}").into(),
        }
    }

    /// Whether the principal (without `spiffe://`) is this service account's.
    pub(crate) fn matches_principal(&self, principal: &str) -> bool {
        // `.+` before `/ns/`: the needle may not start the principal.
        let mut search_from = 1;
        while let Some(found) = principal
            .get(search_from..)
            .and_then(|s| s.find(&*self.ns_needle))
        {
            let at = search_from + found;
            let after = principal
                .get(at + self.ns_needle.len()..)
                .unwrap_or_default();
            if self.matches_sa_tail(after) {
                return true;
            }
            search_from = at + 1;
        }
        false
    }

    /// `(.+/|)sa/<sa>(/.+)?` against what follows `/ns/<ns>/`.
    fn matches_sa_tail(&self, tail: &str) -> bool {
        let needle = &*self.sa_needle;
        let ends_well = |end: usize| {
            let rest = tail.get(end..).unwrap_or_default();
            rest.is_empty() || (rest.starts_with('/') && rest.len() > 1)
        };
        // `sa/<sa>` right away, or after some text ending in `/`.
        if tail.starts_with(needle) && ends_well(needle.len()) {
            return true;
        }
        tail.match_indices(needle).any(|(at, _)| {
            at >= 2 && tail.as_bytes().get(at - 1) == Some(&b'/') && ends_well(at + needle.len())
        })
    }
}

/// An `ipBlocks` / `remoteIpBlocks` / `source.ip` / `destination.ip` value: a CIDR block, or
/// a bare address meaning `/32` (IPv4) or `/128` (IPv6).
pub(crate) fn parse_ip_block(value: &str) -> Result<IpNet, String> {
    if value.contains('/') {
        value
            .parse::<IpNet>()
            .map_err(|_| format!("bad CIDR range ({value})"))
    } else {
        value
            .parse::<IpAddr>()
            .map(IpNet::from)
            .map_err(|_| format!("bad IP address ({value})"))
    }
}

/// A `ports` / `destination.port` value: a decimal port number.
pub(crate) fn parse_port(value: &str) -> Result<u16, String> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("bad port ({value}): must be a decimal number"));
    }
    value
        .parse::<u16>()
        .map_err(|_| format!("bad port ({value}): must be at most 65535"))
}

/// Splits a `request.headers[<name>]`-style key suffix `[<name>]` into its name, or the
/// nested `[a][b]` of `request.auth.claims` into its keys.
pub(crate) fn bracketed_names(rest: &str) -> Option<Vec<String>> {
    let mut names = Vec::new();
    let mut rest = rest;
    while !rest.is_empty() {
        let inner = rest.strip_prefix('[')?;
        let close = inner.find(']')?;
        let name = inner.get(..close)?;
        if name.is_empty() {
            return None;
        }
        names.push(name.to_string());
        rest = inner.get(close + 1..)?;
    }
    (!names.is_empty()).then_some(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_patterns_follow_istio_string_matcher() {
        let cases: &[(&str, &str, bool)] = &[
            ("*", "x", true),
            ("*", "", false),
            ("abc", "abc", true),
            ("abc", "abcd", false),
            ("abc*", "abcd", true),
            ("abc*", "ab", false),
            ("*abc", "xxabc", true),
            ("*abc", "abcx", false),
            // Only an end `*` is special; `**` is a suffix match on `*`.
            ("a*c", "abc", false),
            ("a*c", "a*c", true),
            ("**", "x*", true),
            ("**", "xy", false),
        ];
        for (pattern, value, want) in cases {
            let got = StrPattern::parse(pattern).matches(value.as_bytes());
            assert_eq!(got, *want, "{pattern:?} vs {value:?}");
        }
    }

    #[test]
    fn ignore_case_applies_to_every_kind() {
        assert!(StrPattern::parse("Example.COM").matches_ignore_case(b"example.com"));
        assert!(StrPattern::parse("*.Example.com").matches_ignore_case(b"API.EXAMPLE.COM"));
        assert!(StrPattern::parse("API.*").matches_ignore_case(b"api.example.com"));
        assert!(!StrPattern::parse("*.example.com").matches_ignore_case(b"com"));
        assert!(!StrPattern::parse("example.com").matches(b"EXAMPLE.com"));
    }

    #[test]
    fn path_templates_match_like_envoy_uri_templates() {
        let cases: &[(&str, &str, bool)] = &[
            ("/foo/{*}", "/foo/bar", true),
            ("/foo/{*}", "/foo/bar/baz", false),
            ("/foo/{*}", "/foo/", false),
            ("/foo/{*}/bar/{**}", "/foo/buzz/bar/", true),
            ("/foo/{*}/bar/{**}", "/foo/buzz/bar/baz", true),
            ("/foo/{*}/bar/{**}", "/foo/buzz/bar", false),
            ("/foo/{**}", "/foo/a/b/c", true),
            ("/foo/{**}", "/foo/", true),
            ("/foo/{**}", "/foo", false),
            ("/foo/{**}/", "/foo/bar/", true),
            ("/foo/{**}/", "/foo//", true),
            ("/foo/{**}/", "/foo/bar", false),
            // Envoy's regex for `{**}` is `[kLiteral/]*`: a trailing literal must still end
            // the path (Istio's docs list `/foo/bar/baz.txt` as a match: Envoy disagrees).
            ("/foo/{**}/", "/foo/bar/baz.txt", false),
            ("/{*}/admin", "/x/admin", true),
            ("/{*}/admin", "/x/y/admin", false),
            // `*` is not a template literal.
            ("/foo/{*}", "/foo/a*b", false),
            ("/api/{*}/items/{*}", "/api/v1/items/42", true),
        ];
        for (pattern, path, want) in cases {
            let got = PathPattern::parse(pattern).matches(path);
            assert_eq!(got, *want, "{pattern:?} vs {path:?}");
        }
    }

    #[test]
    fn plain_paths_are_string_patterns() {
        assert!(PathPattern::parse("/admin*").matches("/admin/users"));
        assert!(PathPattern::parse("*.png").matches("/img/a.png"));
        assert!(!PathPattern::parse("/admin").matches("/admin/"));
        assert!(PathPattern::parse("*").matches("/"));
    }

    #[test]
    fn namespace_globs_match_the_ns_segment() {
        let p = "cluster.local/ns/prod-eu/sa/web";
        assert!(NamespaceGlob::parse("prod-eu").matches_principal(p));
        assert!(NamespaceGlob::parse("prod*").matches_principal(p));
        assert!(NamespaceGlob::parse("*-eu").matches_principal(p));
        assert!(NamespaceGlob::parse("p*d*u").matches_principal(p));
        assert!(NamespaceGlob::parse("*").matches_principal(p));
        assert!(!NamespaceGlob::parse("prod").matches_principal(p));
        assert!(!NamespaceGlob::parse("web").matches_principal(p));
        assert!(!NamespaceGlob::parse("prod-eu").matches_principal("cluster.local/sa/prod-eu"));
    }

    #[test]
    fn service_accounts_follow_istios_regex() {
        let sa = ServiceAccount::parse("sleep", "foo");
        assert!(sa.matches_principal("cluster.local/ns/foo/sa/sleep"));
        assert!(sa.matches_principal("td.example/ns/foo/sa/sleep"));
        assert!(sa.matches_principal("cluster.local/ns/foo/x/y/sa/sleep"));
        assert!(sa.matches_principal("cluster.local/ns/foo/sa/sleep/extra"));
        assert!(!sa.matches_principal("cluster.local/ns/foo/sa/sleep-2"));
        assert!(!sa.matches_principal("cluster.local/ns/bar/sa/sleep"));
        assert!(!sa.matches_principal("cluster.local/ns/foo/sa/sleep/"));
        assert!(!sa.matches_principal("/ns/foo/sa/sleep"));
        let other = ServiceAccount::parse("bar/sleep", "foo");
        assert!(other.matches_principal("cluster.local/ns/bar/sa/sleep"));
        assert!(!other.matches_principal("cluster.local/ns/foo/sa/sleep"));
    }

    #[test]
    fn ip_blocks_and_ports_parse() {
        let net = parse_ip_block("10.1.2.3").expect("ip");
        assert_eq!(net.prefix_len(), 32);
        assert_eq!(parse_ip_block("::1").expect("ip6").prefix_len(), 128);
        let block = parse_ip_block("10.1.0.0/16").expect("cidr");
        assert!(block.contains(&"10.1.200.3".parse::<IpAddr>().expect("ip")));
        assert!(parse_ip_block("10.1.0.0/33").is_err());
        assert!(parse_ip_block("ten").is_err());
        assert_eq!(parse_port("8080"), Ok(8080));
        assert!(parse_port("65536").is_err());
        assert!(parse_port("-1").is_err());
        assert!(parse_port("").is_err());
    }

    #[test]
    fn bracketed_names_split_nested_keys() {
        assert_eq!(bracketed_names("[a]"), Some(vec!["a".to_string()]));
        assert_eq!(
            bracketed_names("[a][b.c]"),
            Some(vec!["a".to_string(), "b.c".to_string()])
        );
        assert_eq!(bracketed_names(""), None);
        assert_eq!(bracketed_names("[]"), None);
        assert_eq!(bracketed_names("[a]x"), None);
        assert_eq!(bracketed_names("a"), None);
    }
}
