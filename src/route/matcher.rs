//! Compiled matchers for Istio's `HTTPMatchRequest` (a VirtualService's `http[].match[]`).
//!
//! A [`HttpMatchRequest`] from the config model is compiled once, when a snapshot is built,
//! into an [`HttpMatcher`]: header names lower-cased and parsed, regexes compiled (and shared
//! through a [`RegexCache`] when the same pattern appears twice), gateway names qualified.
//! At request time [`HttpMatcher::matches`] checks a [`RequestView`] — borrowed parts of the
//! request the caller already has — and allocates nothing (the two rare exceptions are named
//! on [`StringMatcher`]).
//!
//! Semantics are Istio's (Envoy's `RouteMatch` as Istio generates it):
//!
//! * Fields of one match block are AND-ed; a route's blocks are OR-ed and tried in order
//!   ([`first_match`]). A route with no `match` matches everything:
//!   [`HttpMatcher::compile_route`] gives it one explicit [`HttpMatcher::catch_all`].
//! * [`StringMatch`]: `exact` and `prefix` are case-sensitive byte comparisons (`prefix` is a
//!   raw string prefix: `/foo` matches `/foobar`); `regex` is RE2 matched against the WHOLE
//!   value; `{}` and `regex: "*"` mean "present".
//! * `uri` is matched against the normalised path without the query
//!   ([`crate::route::normalize`]); `ignoreUriCase` makes its `exact`/`prefix` ASCII
//!   case-insensitive.
//! * `headers`: names are case-insensitive, values case-sensitive; a missing header never
//!   matches; `exact: ""` matches a header that is present and empty. A header sent several
//!   times is matched as its values joined with `,` (Envoy's `getAllOfHeaderAsString`).
//! * `withoutHeaders`: the block fails when the header matches; a missing header counts as
//!   the empty string (Envoy's `treat_missing_header_as_empty`, as Istio sets it), and `{}`
//!   inverted means "absent".
//! * `queryParams`: matched against the raw value of the FIRST occurrence of the key, not
//!   percent-decoded (Envoy parses the query with `parseQueryString`, not
//!   `parseAndDecodeQueryString`); `?key` and `?key=` both have the value `""`.
//! * `port`, `sourceLabels`, `sourceNamespace` and `gateways`, which Istio resolves when it
//!   generates each proxy's config, are checked here against the request view, which gives
//!   the same answer: the source is the workload the request leaves from (the client proxy in
//!   Istio), the gateway is the gateway doing the routing, or `mesh` for sidecar/client
//!   traffic.
//!
//! ```
//! use http::{HeaderMap, Method};
//! use tower_mesh::config::StringMatch;
//! use tower_mesh::config::virtual_service::HttpMatchRequest;
//! use tower_mesh::route::matcher::{HttpMatcher, MatchScope, RegexCache, RequestView};
//!
//! let config = HttpMatchRequest {
//!     uri: Some(StringMatch::Prefix("/api".into())),
//!     headers: [("End-User".to_string(), StringMatch::Exact("jason".into()))].into(),
//!     ..Default::default()
//! };
//! let mut cache = RegexCache::new();
//! let matcher = HttpMatcher::compile(&config, MatchScope::new("default", &[]), &mut cache)?;
//!
//! let mut headers = HeaderMap::new();
//! headers.insert("end-user", "jason".parse()?);
//! let request = RequestView {
//!     method: &Method::GET,
//!     scheme: "http",
//!     authority: "reviews:9080",
//!     path: "/api/v1",
//!     query: None,
//!     headers: &headers,
//!     port: 9080,
//!     source: None,
//!     gateway: "mesh",
//!     claims: None,
//! };
//! assert!(matcher.matches(&request));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use http::header::{GetAll, HeaderValue};
use http::{HeaderMap, HeaderName, Method};
use regex::Regex;

use crate::config::common::StringMatch;
use crate::config::virtual_service::HttpMatchRequest;

/// The reserved gateway name for sidecar / in-process client traffic (Istio's `mesh`), the
/// default when neither the VirtualService nor the match lists `gateways`.
pub const MESH_GATEWAY: &str = "mesh";

/// The header key prefix that matches a verified JWT claim instead of a header.
const CLAIM_PREFIX: &str = "@request.auth.claims";

/// Why a match could not be compiled. Validation rejects these configs first; the compiler
/// reports rather than panics in case one slips through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatchError {
    /// A `regex` that the `regex` crate does not accept (or that exceeds its size limit).
    #[error("invalid regex {pattern:?}: {message}")]
    Regex {
        /// The pattern as written in the config.
        pattern: String,
        /// The regex compiler's explanation.
        message: String,
    },
    /// A `headers` / `withoutHeaders` key that is not a valid HTTP header name.
    #[error("{name:?} is not a valid header name")]
    HeaderName {
        /// The key as written in the config.
        name: String,
    },
}

/// What a snapshot compile shares between route tables: full-match regexes by pattern (the
/// same pattern anywhere in a snapshot is compiled once and every matcher holds the same
/// `Arc`), and interned strings (destination hosts and subsets) and gateway lists, so that
/// 100,000 routes to a few thousand hosts hold a few thousand host strings and one `[mesh]`.
///
/// Pass the same cache to every [`crate::route::RouteTable::compile`] of a snapshot; drop it
/// afterwards (the compiled tables keep only what they use).
#[derive(Debug, Clone, Default)]
pub struct RegexCache {
    compiled: HashMap<String, Arc<Regex>>,
    strings: HashSet<Arc<str>>,
    gateways: HashSet<Arc<[String]>>,
}

impl RegexCache {
    /// An empty cache.
    pub fn new() -> Self {
        RegexCache::default()
    }

    /// The regex for `pattern`, anchored as `^(?:pattern)$` so that it must match the whole
    /// value (Envoy's `safe_regex` semantics for Istio's `StringMatch.regex`). Compiled on
    /// first use, then shared.
    ///
    /// The `regex` crate is RE2's close cousin (same linear-time guarantee, nearly the same
    /// syntax); one difference: its `\d`, `\w`, `\s` and `\b` are Unicode-aware where RE2's
    /// are ASCII-only (identical on ASCII input; write `(?-u:\d)` for strict RE2 behaviour).
    pub fn full_match(&mut self, pattern: &str) -> Result<Arc<Regex>, MatchError> {
        if let Some(re) = self.compiled.get(pattern) {
            return Ok(Arc::clone(re));
        }
        let re = Regex::new(&format!("^(?:{pattern})$")).map_err(|e| MatchError::Regex {
            pattern: pattern.to_string(),
            message: e.to_string(),
        })?;
        let re = Arc::new(re);
        self.compiled.insert(pattern.to_string(), Arc::clone(&re));
        Ok(re)
    }

    /// The shared copy of `s`: equal strings interned through one cache are one allocation.
    pub fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(shared) = self.strings.get(s) {
            return Arc::clone(shared);
        }
        let shared: Arc<str> = Arc::from(s);
        self.strings.insert(Arc::clone(&shared));
        shared
    }

    /// The shared copy of a qualified gateway list (most matchers hold the same `[mesh]`).
    fn intern_gateways(&mut self, gateways: &[String]) -> Arc<[String]> {
        if let Some(shared) = self.gateways.get(gateways) {
            return Arc::clone(shared);
        }
        let shared: Arc<[String]> = Arc::from(gateways);
        self.gateways.insert(Arc::clone(&shared));
        shared
    }

    /// How many distinct regex patterns are compiled (interned strings are not counted).
    pub fn len(&self) -> usize {
        self.compiled.len()
    }

    /// Whether no regex pattern is compiled yet.
    pub fn is_empty(&self) -> bool {
        self.compiled.is_empty()
    }
}

/// A compiled, shared regex. Two are equal (and hash alike) when their patterns are, so the
/// matchers holding them stay plain data.
#[derive(Debug, Clone)]
pub struct SharedRegex(Arc<Regex>);

impl SharedRegex {
    /// The compiled regex (anchored: `^(?:pattern)$`).
    pub fn regex(&self) -> &Arc<Regex> {
        &self.0
    }
}

impl PartialEq for SharedRegex {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0.as_str() == other.0.as_str()
    }
}

impl Eq for SharedRegex {}

impl Hash for SharedRegex {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.as_str().hash(state);
    }
}

/// A compiled Istio `StringMatch`.
///
/// Matching never allocates, except in two rare cases where a regex needs one contiguous
/// string: a header sent several times (its values are joined with `,`) and a `:path` header
/// match on a request with a query (path and query are joined with `?`). `exact` and
/// `prefix` compare those pieces in place.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StringMatcher {
    /// `exact`: the whole value; ASCII case-insensitive when `ignore_case` (`ignoreUriCase`).
    Exact {
        /// The expected value.
        value: Box<str>,
        /// Compare ASCII letters case-insensitively.
        ignore_case: bool,
    },
    /// `prefix`: a raw string prefix; ASCII case-insensitive when `ignore_case`.
    Prefix {
        /// The expected prefix.
        value: Box<str>,
        /// Compare ASCII letters case-insensitively.
        ignore_case: bool,
    },
    /// `regex`: RE2 syntax, matched against the whole value.
    Regex(SharedRegex),
    /// `{}` or `regex: "*"`: any value (the header or parameter is present).
    Present,
}

impl StringMatcher {
    /// Compiles `m`. `ignore_case` applies to `exact` and `prefix` only (Istio's
    /// `ignoreUriCase`; a regex uses `(?i)` instead).
    pub fn compile(
        m: &StringMatch,
        ignore_case: bool,
        cache: &mut RegexCache,
    ) -> Result<Self, MatchError> {
        Ok(match m {
            StringMatch::Exact(value) => StringMatcher::Exact {
                value: value.as_str().into(),
                ignore_case,
            },
            StringMatch::Prefix(value) => StringMatcher::Prefix {
                value: value.as_str().into(),
                ignore_case,
            },
            StringMatch::Regex(pattern) if pattern == "*" => StringMatcher::Present,
            StringMatch::Regex(pattern) => {
                StringMatcher::Regex(SharedRegex(cache.full_match(pattern)?))
            }
            StringMatch::Any => StringMatcher::Present,
        })
    }

    /// Whether this matcher accepts any value (`{}` / `regex: "*"`).
    pub fn is_present(&self) -> bool {
        matches!(self, StringMatcher::Present)
    }

    /// Whether `value` matches.
    pub fn matches(&self, value: &str) -> bool {
        match self {
            StringMatcher::Regex(re) => re.0.is_match(value),
            _ => self.matches_bytes(value.as_bytes()),
        }
    }

    /// Whether `value` (a header value, possibly not UTF-8) matches. A value that is not
    /// UTF-8 never matches a regex.
    pub fn matches_bytes(&self, value: &[u8]) -> bool {
        match self {
            StringMatcher::Exact {
                value: want,
                ignore_case,
            } => bytes_eq(value, want.as_bytes(), *ignore_case),
            StringMatcher::Prefix {
                value: want,
                ignore_case,
            } => value
                .get(..want.len())
                .is_some_and(|head| bytes_eq(head, want.as_bytes(), *ignore_case)),
            StringMatcher::Regex(re) => std::str::from_utf8(value).is_ok_and(|s| re.0.is_match(s)),
            StringMatcher::Present => true,
        }
    }

    /// Whether the concatenation of `pieces` matches, without building it unless a regex
    /// needs it.
    fn matches_pieces<'v>(&self, pieces: impl Iterator<Item = &'v [u8]>) -> bool {
        match self {
            StringMatcher::Exact { value, ignore_case } => {
                pieces_cmp(pieces, value.as_bytes(), false, *ignore_case)
            }
            StringMatcher::Prefix { value, ignore_case } => {
                pieces_cmp(pieces, value.as_bytes(), true, *ignore_case)
            }
            StringMatcher::Regex(re) => {
                let joined: Vec<u8> = pieces.flat_map(|p| p.iter().copied()).collect();
                std::str::from_utf8(&joined).is_ok_and(|s| re.0.is_match(s))
            }
            StringMatcher::Present => true,
        }
    }
}

fn bytes_eq(a: &[u8], b: &[u8], ignore_case: bool) -> bool {
    if ignore_case {
        a.eq_ignore_ascii_case(b)
    } else {
        a == b
    }
}

/// Compares the concatenation of `pieces` with `want`: equal, or (`prefix`) starting with it.
fn pieces_cmp<'v>(
    pieces: impl Iterator<Item = &'v [u8]>,
    want: &[u8],
    prefix: bool,
    ignore_case: bool,
) -> bool {
    let mut rest = want;
    for piece in pieces {
        if piece.len() > rest.len() {
            // `want` ends inside this piece: only a prefix can still match.
            return prefix
                && piece
                    .get(..rest.len())
                    .is_some_and(|h| bytes_eq(h, rest, ignore_case));
        }
        let (head, tail) = rest.split_at(piece.len());
        if !bytes_eq(piece, head, ignore_case) {
            return false;
        }
        rest = tail;
        if prefix && rest.is_empty() {
            return true;
        }
    }
    rest.is_empty()
}

/// The identity of the workload a request leaves from: Istio matches `sourceNamespace` and
/// `sourceLabels` against the client proxy's namespace and pod labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct SourceIdentity {
    /// The workload's namespace.
    pub namespace: String,
    /// The workload's labels.
    pub labels: BTreeMap<String, String>,
}

/// Verified JWT claims, as the RequestAuthentication layer leaves them, for
/// `@request.auth.claims.*` header keys.
///
/// Istio matches a claim through Envoy's metadata matcher: a string claim matches when the
/// string does, a list claim when one of its string items does; other JSON types never match
/// a value (only `{}`, "present").
pub trait JwtClaims: fmt::Debug {
    /// Looks up the claim at `path` (nested object keys, outermost first). `None` when it is
    /// absent; otherwise `Some(true)` as soon as `f` accepts one of its string values (the
    /// claim itself or an item of a list), else `Some(false)`.
    fn visit_claim(&self, path: &[String], f: &mut dyn FnMut(&str) -> bool) -> Option<bool>;
}

impl JwtClaims for serde_json::Map<String, serde_json::Value> {
    fn visit_claim(&self, path: &[String], f: &mut dyn FnMut(&str) -> bool) -> Option<bool> {
        let (first, rest) = path.split_first()?;
        let mut value = self.get(first)?;
        for key in rest {
            value = value.as_object()?.get(key)?;
        }
        Some(match value {
            serde_json::Value::String(s) => f(s),
            serde_json::Value::Array(items) => {
                items.iter().filter_map(serde_json::Value::as_str).any(f)
            }
            _ => false,
        })
    }
}

impl JwtClaims for serde_json::Value {
    fn visit_claim(&self, path: &[String], f: &mut dyn FnMut(&str) -> bool) -> Option<bool> {
        self.as_object()?.visit_claim(path, f)
    }
}

/// The parts of a request that matching reads, borrowed from wherever the caller keeps them.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// `:method`.
    pub method: &'a Method,
    /// `:scheme` (`http` / `https`).
    pub scheme: &'a str,
    /// `:authority` (or `Host`) as sent, port included.
    pub authority: &'a str,
    /// The path, already normalised ([`crate::route::normalize::normalize_path`]), without
    /// the query.
    pub path: &'a str,
    /// The query string without its `?`; `None` when the target has no `?`.
    pub query: Option<&'a str>,
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// The destination port the request addresses (the service / listener port).
    pub port: u16,
    /// The workload the request leaves from; `None` when unknown (then `sourceLabels` and
    /// `sourceNamespace` never match).
    pub source: Option<&'a SourceIdentity>,
    /// The gateway routing the request, as `<namespace>/<name>`, or [`MESH_GATEWAY`] for
    /// sidecar and in-process client traffic.
    pub gateway: &'a str,
    /// Verified JWT claims; `None` when the request carries no verified token (then
    /// `@request.auth.claims` keys never match).
    pub claims: Option<&'a dyn JwtClaims>,
}

/// Where a VirtualService's matches apply: its namespace (to qualify bare gateway names) and
/// its top-level `gateways` (empty = `mesh`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MatchScope<'a> {
    /// The VirtualService's namespace.
    pub namespace: &'a str,
    /// The VirtualService's `gateways`, as written.
    pub gateways: &'a [String],
}

impl<'a> MatchScope<'a> {
    /// A scope for a VirtualService in `namespace` with top-level `gateways`.
    pub fn new(namespace: &'a str, gateways: &'a [String]) -> Self {
        MatchScope {
            namespace,
            gateways,
        }
    }
}

/// Qualifies a gateway reference from a VirtualService in `namespace` the way Istio does:
/// `mesh` stays, `ns/name` stays, `./name` and a bare `name` become `namespace/name`, and the
/// legacy FQDN form `name.ns.svc.cluster.local` becomes `ns/name`.
pub fn resolve_gateway_name(name: &str, namespace: &str) -> String {
    if name == MESH_GATEWAY {
        return name.to_string();
    }
    match name.split_once('/') {
        Some((".", gateway)) => format!("{namespace}/{gateway}"),
        Some(_) => name.to_string(),
        None => match name.split_once('.') {
            None => format!("{namespace}/{name}"),
            Some((gateway, rest)) => {
                let ns = rest.split_once('.').map_or(rest, |(ns, _)| ns);
                format!("{ns}/{gateway}")
            }
        },
    }
}

/// What a `headers` / `withoutHeaders` key looks at.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum HeaderTarget {
    /// A regular header.
    Header(HeaderName),
    /// `:method`.
    Method,
    /// `:scheme`.
    Scheme,
    /// `:authority` (also `host`: Envoy keeps the HTTP/1 Host header as `:authority`).
    Authority,
    /// `:path`: the normalised path plus `?query` when there is one.
    Path,
    /// A pseudo-header a request never has (`:status`, unknown `:x`).
    Absent,
    /// `@request.auth.claims.a.b` / `@request.auth.claims[a][b]`: a verified JWT claim.
    Claim(Box<[String]>),
}

/// One compiled `headers` or `withoutHeaders` entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct HeaderMatcher {
    target: HeaderTarget,
    matcher: StringMatcher,
    /// `withoutHeaders`.
    invert: bool,
}

impl HeaderMatcher {
    fn compile(
        key: &str,
        m: &StringMatch,
        invert: bool,
        cache: &mut RegexCache,
    ) -> Result<Option<Self>, MatchError> {
        let target = match claim_path(key) {
            Some(path) => HeaderTarget::Claim(path.into()),
            None => {
                let name = key.to_ascii_lowercase();
                match name.as_str() {
                    // Istio ignores these keys in `headers`: they are fields of the match.
                    "uri" | "scheme" | "method" | "authority" => return Ok(None),
                    ":method" => HeaderTarget::Method,
                    ":scheme" => HeaderTarget::Scheme,
                    ":authority" | "host" => HeaderTarget::Authority,
                    ":path" => HeaderTarget::Path,
                    n if n.starts_with(':') => HeaderTarget::Absent,
                    n => HeaderTarget::Header(HeaderName::from_bytes(n.as_bytes()).map_err(
                        |_| MatchError::HeaderName {
                            name: key.to_string(),
                        },
                    )?),
                }
            }
        };
        Ok(Some(HeaderMatcher {
            target,
            matcher: StringMatcher::compile(m, false, cache)?,
            invert,
        }))
    }

    fn matches(&self, req: &RequestView<'_>) -> bool {
        let m = &self.matcher;
        // None: absent; Some(hit): present, and whether the value matched.
        let outcome = match &self.target {
            HeaderTarget::Header(name) => header_outcome(m, req.headers.get_all(name)),
            HeaderTarget::Method => Some(m.matches(req.method.as_str())),
            HeaderTarget::Scheme => Some(m.matches(req.scheme)),
            HeaderTarget::Authority => Some(m.matches(req.authority)),
            HeaderTarget::Path => Some(match req.query {
                None => m.matches(req.path),
                Some(q) => m.matches_pieces(
                    [req.path.as_bytes(), b"?".as_slice(), q.as_bytes()].into_iter(),
                ),
            }),
            HeaderTarget::Absent => None,
            HeaderTarget::Claim(path) => {
                let visit = req
                    .claims
                    .and_then(|claims| claims.visit_claim(path, &mut |v| m.matches(v)));
                // `{}`: the claim exists, whatever its type. A claim is not a header:
                // Istio's metadata matcher has no "missing as empty", so an absent claim
                // simply does not match.
                let hit = if m.is_present() {
                    visit.is_some()
                } else {
                    visit == Some(true)
                };
                return hit != self.invert;
            }
        };
        match (self.invert, outcome) {
            (false, outcome) => outcome == Some(true),
            (true, _) if m.is_present() => outcome.is_none(),
            (true, None) => !m.matches(""),
            (true, Some(hit)) => !hit,
        }
    }
}

/// `@request.auth.claims.a.b` → `[a, b]`; `@request.auth.claims[a][b]` → `[a, b]` (Istio's
/// `jwt.ToRoutingClaim`; the prefix is case-insensitive, claim names are not).
fn claim_path(key: &str) -> Option<Vec<String>> {
    let head = key.get(..CLAIM_PREFIX.len())?;
    if !head.eq_ignore_ascii_case(CLAIM_PREFIX) {
        return None;
    }
    let rest = &key[CLAIM_PREFIX.len()..];
    if let Some(dotted) = rest.strip_prefix('.')
        && !dotted.is_empty()
    {
        return Some(dotted.split('.').map(str::to_string).collect());
    }
    if let Some(inner) = rest.strip_prefix('[').and_then(|r| r.strip_suffix(']'))
        && !inner.is_empty()
    {
        return Some(inner.split("][").map(str::to_string).collect());
    }
    None
}

/// Matches the values of a header: `None` when it is absent.
fn header_outcome(m: &StringMatcher, values: GetAll<'_, HeaderValue>) -> Option<bool> {
    let mut iter = values.iter();
    let first = iter.next()?;
    let Some(second) = iter.next() else {
        return Some(m.matches_bytes(first.as_bytes()));
    };
    // Sent several times: Envoy matches the values joined with ",".
    let comma = b",".as_slice();
    let pieces = [first.as_bytes(), comma, second.as_bytes()]
        .into_iter()
        .chain(iter.flat_map(|v| [comma, v.as_bytes()]));
    Some(m.matches_pieces(pieces))
}

/// One compiled `queryParams` entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct QueryParamMatcher {
    name: Box<str>,
    matcher: StringMatcher,
}

impl QueryParamMatcher {
    fn matches(&self, query: Option<&str>) -> bool {
        let Some(query) = query else {
            return false;
        };
        // Envoy keeps only the first value of a repeated key, raw (not percent-decoded).
        let first = query
            .split('&')
            .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
            .find(|(key, _)| **key == *self.name);
        first.is_some_and(|(_, value)| self.matcher.matches(value))
    }
}

/// A compiled `HTTPMatchRequest`: one match block of an HTTP route.
///
/// Kept small (a snapshot holds one per match block): the gateway list is shared through the
/// [`RegexCache`], and the conditions routes rarely use live behind one optional box.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HttpMatcher {
    name: Box<str>,
    /// Qualified gateway names (never empty), interned.
    gateways: Arc<[String]>,
    port: Option<u32>,
    uri: Option<StringMatcher>,
    headers: Box<[HeaderMatcher]>,
    /// `method`, `authority`, `scheme`, `sourceNamespace`, `sourceLabels`, `queryParams`;
    /// `None` when the block has none of them.
    rare: Option<Box<RareConditions>>,
}

/// The conditions of a match block that most routes leave out.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
struct RareConditions {
    method: Option<StringMatcher>,
    authority: Option<StringMatcher>,
    scheme: Option<StringMatcher>,
    source_namespace: Option<Box<str>>,
    source_labels: Box<[(Box<str>, Box<str>)]>,
    query_params: Box<[QueryParamMatcher]>,
}

impl RareConditions {
    fn is_empty(&self) -> bool {
        self.method.is_none()
            && self.authority.is_none()
            && self.scheme.is_none()
            && self.source_namespace.is_none()
            && self.source_labels.is_empty()
            && self.query_params.is_empty()
    }

    /// The conditions checked before the headers (cheap and selective).
    fn matches_request_line(&self, req: &RequestView<'_>) -> bool {
        self.method
            .as_ref()
            .is_none_or(|m| m.matches(req.method.as_str()))
            && self
                .authority
                .as_ref()
                .is_none_or(|m| m.matches(req.authority))
            && self.scheme.as_ref().is_none_or(|m| m.matches(req.scheme))
            && self.source_matches(req.source)
    }

    fn source_matches(&self, source: Option<&SourceIdentity>) -> bool {
        if self.source_namespace.is_none() && self.source_labels.is_empty() {
            return true;
        }
        let Some(source) = source else {
            return false;
        };
        self.source_namespace
            .as_ref()
            .is_none_or(|ns| **ns == *source.namespace)
            && self
                .source_labels
                .iter()
                .all(|(k, v)| source.labels.get(&**k).map(String::as_str) == Some(&**v))
    }
}

impl HttpMatcher {
    /// Compiles one `match` block of a VirtualService in `scope`.
    ///
    /// The block's `gateways` override the VirtualService's; with neither, the block applies
    /// to `mesh` only. `port: 0` and an empty `sourceNamespace` mean "any" (proto3 defaults).
    pub fn compile(
        m: &HttpMatchRequest,
        scope: MatchScope<'_>,
        cache: &mut RegexCache,
    ) -> Result<Self, MatchError> {
        let compile = |sm: &Option<StringMatch>, ignore_case: bool, cache: &mut RegexCache| {
            sm.as_ref()
                .map(|sm| StringMatcher::compile(sm, ignore_case, cache))
                .transpose()
        };
        let mut headers = Vec::with_capacity(m.headers.len() + m.without_headers.len());
        for (key, sm) in &m.headers {
            headers.extend(HeaderMatcher::compile(key, sm, false, cache)?);
        }
        for (key, sm) in &m.without_headers {
            headers.extend(HeaderMatcher::compile(key, sm, true, cache)?);
        }
        let query_params = m
            .query_params
            .iter()
            .map(|(name, sm)| {
                Ok(QueryParamMatcher {
                    name: name.as_str().into(),
                    matcher: StringMatcher::compile(sm, false, cache)?,
                })
            })
            .collect::<Result<_, MatchError>>()?;
        let gateways = if m.gateways.is_empty() {
            scope.gateways
        } else {
            &m.gateways
        };
        let rare = RareConditions {
            method: compile(&m.method, false, cache)?,
            authority: compile(&m.authority, false, cache)?,
            scheme: compile(&m.scheme, false, cache)?,
            source_namespace: Some(m.source_namespace.as_str())
                .filter(|ns| !ns.is_empty())
                .map(Box::from),
            source_labels: m
                .source_labels
                .iter()
                .map(|(k, v)| (k.as_str().into(), v.as_str().into()))
                .collect(),
            query_params,
        };
        Ok(HttpMatcher {
            name: m.name.as_str().into(),
            gateways: effective_gateways(gateways, scope.namespace, cache),
            port: m.port.filter(|p| *p != 0),
            uri: compile(&m.uri, m.ignore_uri_case, cache)?,
            headers: headers.into(),
            rare: (!rare.is_empty()).then(|| Box::new(rare)),
        })
    }

    /// The matcher of a route without `match` blocks: every request on the scope's gateways.
    pub fn catch_all(scope: MatchScope<'_>) -> Self {
        HttpMatcher::catch_all_in(scope, &mut RegexCache::new())
    }

    /// [`catch_all`](Self::catch_all) with the gateway list shared through `cache`.
    pub fn catch_all_in(scope: MatchScope<'_>, cache: &mut RegexCache) -> Self {
        HttpMatcher {
            name: "".into(),
            gateways: effective_gateways(scope.gateways, scope.namespace, cache),
            port: None,
            uri: None,
            headers: Box::new([]),
            rare: None,
        }
    }

    /// Compiles a route's `match` list: one matcher per block, or a single
    /// [`catch_all`](Self::catch_all) when the list is empty, so that [`first_match`] answers
    /// `Some(0)` for such a route.
    pub fn compile_route(
        matches: &[HttpMatchRequest],
        scope: MatchScope<'_>,
        cache: &mut RegexCache,
    ) -> Result<Vec<Self>, MatchError> {
        if matches.is_empty() {
            return Ok(vec![HttpMatcher::catch_all_in(scope, cache)]);
        }
        matches
            .iter()
            .map(|m| HttpMatcher::compile(m, scope, cache))
            .collect()
    }

    /// Whether the request satisfies every condition of this block. Allocates nothing, except
    /// in the rare cases named on [`StringMatcher`].
    pub fn matches(&self, req: &RequestView<'_>) -> bool {
        // Cheap, selective checks first.
        self.gateways.iter().any(|g| g == req.gateway)
            && self.port.is_none_or(|p| p == u32::from(req.port))
            && self.uri.as_ref().is_none_or(|m| m.matches(req.path))
            && self
                .rare
                .as_ref()
                .is_none_or(|r| r.matches_request_line(req))
            && self.headers.iter().all(|h| h.matches(req))
            && self
                .rare
                .as_ref()
                .is_none_or(|r| r.query_params.iter().all(|q| q.matches(req.query)))
    }

    /// The block's `name` (empty when unnamed, and for a catch-all).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The qualified gateways this block applies to (`mesh` and/or `<ns>/<name>`).
    pub fn gateways(&self) -> &[String] {
        &self.gateways
    }

    /// The compiled `uri` condition, for indexes that skip blocks which cannot match.
    pub fn uri(&self) -> Option<&StringMatcher> {
        self.uri.as_ref()
    }

    /// Whether the block has no condition beyond its gateways (it matches every request
    /// there): routes after it are never reached.
    pub fn is_catch_all(&self) -> bool {
        self.port.is_none()
            && self.uri.as_ref().is_none_or(|u| match u {
                StringMatcher::Present => true,
                StringMatcher::Prefix { value, .. } => value.is_empty(),
                _ => false,
            })
            && self.headers.is_empty()
            && self.rare.as_ref().is_none_or(|r| r.is_empty())
    }
}

/// `gateways` qualified, or `[mesh]` when empty; shared through `cache`.
fn effective_gateways(
    gateways: &[String],
    namespace: &str,
    cache: &mut RegexCache,
) -> Arc<[String]> {
    if gateways.is_empty() {
        return cache.intern_gateways(&[MESH_GATEWAY.to_string()]);
    }
    let mut out: Vec<String> = Vec::with_capacity(gateways.len());
    for g in gateways {
        let g = resolve_gateway_name(g, namespace);
        if !out.contains(&g) {
            out.push(g);
        }
    }
    cache.intern_gateways(&out)
}

/// The index of the first matcher that accepts the request (Istio: the first matching block
/// wins). `None` when none does — for a whole route table, Envoy's 404 "NR".
pub fn first_match(matchers: &[HttpMatcher], req: &RequestView<'_>) -> Option<usize> {
    matchers.iter().position(|m| m.matches(req))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn exact(s: &str) -> StringMatch {
        StringMatch::Exact(s.into())
    }
    fn prefix(s: &str) -> StringMatch {
        StringMatch::Prefix(s.into())
    }
    fn regex(s: &str) -> StringMatch {
        StringMatch::Regex(s.into())
    }
    fn map(entries: &[(&str, StringMatch)]) -> BTreeMap<String, StringMatch> {
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    /// An owned request to borrow a [`RequestView`] from.
    struct Req {
        method: Method,
        scheme: String,
        authority: String,
        path: String,
        query: Option<String>,
        headers: HeaderMap,
        port: u16,
        source: Option<SourceIdentity>,
        gateway: String,
        claims: Option<serde_json::Value>,
    }

    impl Req {
        fn get(target: &str) -> Self {
            let (path, query) = match target.split_once('?') {
                Some((p, q)) => (p, Some(q.to_string())),
                None => (target, None),
            };
            Req {
                method: Method::GET,
                scheme: "http".into(),
                authority: "reviews:9080".into(),
                path: path.into(),
                query,
                headers: HeaderMap::new(),
                port: 9080,
                source: None,
                gateway: MESH_GATEWAY.into(),
                claims: None,
            }
        }
        fn header(mut self, name: &'static str, value: &str) -> Self {
            let value = HeaderValue::from_str(value).expect("test header value");
            self.headers.append(name, value);
            self
        }
        fn view(&self) -> RequestView<'_> {
            RequestView {
                method: &self.method,
                scheme: &self.scheme,
                authority: &self.authority,
                path: &self.path,
                query: self.query.as_deref(),
                headers: &self.headers,
                port: self.port,
                source: self.source.as_ref(),
                gateway: &self.gateway,
                claims: self.claims.as_ref().map(|c| c as &dyn JwtClaims),
            }
        }
    }

    fn compile(m: HttpMatchRequest) -> HttpMatcher {
        HttpMatcher::compile(&m, MatchScope::new("default", &[]), &mut RegexCache::new())
            .expect("compiles")
    }

    fn uri(m: StringMatch) -> HttpMatcher {
        compile(HttpMatchRequest {
            uri: Some(m),
            ..Default::default()
        })
    }

    fn headers(entries: &[(&str, StringMatch)]) -> HttpMatcher {
        compile(HttpMatchRequest {
            headers: map(entries),
            ..Default::default()
        })
    }

    fn without_headers(entries: &[(&str, StringMatch)]) -> HttpMatcher {
        compile(HttpMatchRequest {
            without_headers: map(entries),
            ..Default::default()
        })
    }

    fn query(entries: &[(&str, StringMatch)]) -> HttpMatcher {
        compile(HttpMatchRequest {
            query_params: map(entries),
            ..Default::default()
        })
    }

    fn hits(m: &HttpMatcher, r: Req) -> bool {
        m.matches(&r.view())
    }

    #[test]
    fn uri_exact_matches_the_whole_path() {
        let m = uri(exact("/login"));
        assert!(hits(&m, Req::get("/login")));
        assert!(
            hits(&m, Req::get("/login?next=/x")),
            "the query is not part of the uri"
        );
        assert!(!hits(&m, Req::get("/login/")));
        assert!(!hits(&m, Req::get("/Login")), "exact is case-sensitive");
    }

    #[test]
    fn prefix_match_is_a_raw_string_prefix() {
        let m = uri(prefix("/foo"));
        assert!(hits(&m, Req::get("/foo")));
        assert!(hits(&m, Req::get("/foo/bar")));
        assert!(hits(&m, Req::get("/foobar")), "not segment-aware");
        assert!(!hits(&m, Req::get("/fo")));
        assert!(!hits(&m, Req::get("/FOO")));
        assert!(
            hits(&uri(prefix("")), Req::get("/anything")),
            "empty uri prefix matches all"
        );
    }

    #[test]
    fn regex_is_a_full_match() {
        let m = uri(regex("/a.*"));
        assert!(hits(&m, Req::get("/a")));
        assert!(hits(&m, Req::get("/abc/d")));
        assert!(!hits(&m, Req::get("x/a")), "anchored at the start");
        let m = uri(regex("/a|/b"));
        assert!(
            hits(&m, Req::get("/b")),
            "alternation is grouped before anchoring"
        );
        assert!(!hits(&m, Req::get("/bc")), "anchored at the end");
        assert!(
            hits(&uri(regex("(?i)/ABC")), Req::get("/abc")),
            "(?i) for case-insensitive"
        );
    }

    #[test]
    fn ignore_uri_case_applies_to_exact_and_prefix_only() {
        let ci = |sm| {
            compile(HttpMatchRequest {
                uri: Some(sm),
                ignore_uri_case: true,
                ..Default::default()
            })
        };
        assert!(hits(&ci(exact("/Login")), Req::get("/LOGIN")));
        assert!(!hits(&ci(exact("/Login")), Req::get("/LOGINS")));
        assert!(hits(&ci(prefix("/API")), Req::get("/api/v1")));
        assert!(
            !hits(&ci(regex("/api")), Req::get("/API")),
            "regex unaffected"
        );
        // ignoreUriCase does not leak into other fields.
        let m = compile(HttpMatchRequest {
            ignore_uri_case: true,
            headers: map(&[("x", exact("A"))]),
            ..Default::default()
        });
        assert!(!hits(&m, Req::get("/").header("x", "a")));
    }

    #[test]
    fn regex_star_and_empty_match_mean_present() {
        for sm in [regex("*"), StringMatch::Any] {
            let m = headers(&[("x-user", sm.clone())]);
            assert!(hits(&m, Req::get("/").header("x-user", "")));
            assert!(hits(&m, Req::get("/").header("x-user", "anything")));
            assert!(!hits(&m, Req::get("/")));
            assert!(hits(&uri(sm), Req::get("/whatever")));
        }
    }

    #[test]
    fn method_scheme_authority_match() {
        let m = compile(HttpMatchRequest {
            method: Some(exact("POST")),
            ..Default::default()
        });
        let mut post = Req::get("/");
        post.method = Method::POST;
        assert!(hits(&m, post));
        assert!(!hits(&m, Req::get("/")));

        let m = compile(HttpMatchRequest {
            scheme: Some(exact("https")),
            ..Default::default()
        });
        let mut tls = Req::get("/");
        tls.scheme = "https".into();
        assert!(hits(&m, tls));
        assert!(!hits(&m, Req::get("/")));

        let m = compile(HttpMatchRequest {
            authority: Some(exact("reviews:9080")),
            ..Default::default()
        });
        assert!(hits(&m, Req::get("/")));
        let mut no_port = Req::get("/");
        no_port.authority = "reviews".into();
        assert!(
            !hits(&m, no_port),
            "the port is part of the authority as sent"
        );
        let m = compile(HttpMatchRequest {
            authority: Some(prefix("reviews")),
            ..Default::default()
        });
        assert!(hits(&m, Req::get("/")));
    }

    #[test]
    fn header_names_are_case_insensitive_and_values_case_sensitive() {
        let m = headers(&[("End-User", exact("jason"))]);
        assert!(hits(&m, Req::get("/").header("end-user", "jason")));
        assert!(!hits(&m, Req::get("/").header("end-user", "Jason")));
        assert!(!hits(&m, Req::get("/").header("end-user", "jason2")));
    }

    #[test]
    fn missing_header_never_matches() {
        for sm in [exact(""), prefix(""), regex(".*"), StringMatch::Any] {
            assert!(!hits(&headers(&[("x", sm)]), Req::get("/")));
        }
    }

    #[test]
    fn exact_empty_matches_a_present_empty_header() {
        let m = headers(&[("x", exact(""))]);
        assert!(hits(&m, Req::get("/").header("x", "")));
        assert!(!hits(&m, Req::get("/").header("x", "v")));
        assert!(!hits(&m, Req::get("/")));
    }

    #[test]
    fn header_prefix_and_regex() {
        let m = headers(&[("user-agent", prefix("curl/"))]);
        assert!(hits(&m, Req::get("/").header("user-agent", "curl/8.0")));
        assert!(!hits(&m, Req::get("/").header("user-agent", "wget/curl/")));
        let m = headers(&[("authorization", regex("Bearer .+"))]);
        assert!(hits(
            &m,
            Req::get("/").header("authorization", "Bearer abc")
        ));
        assert!(!hits(
            &m,
            Req::get("/").header("authorization", "xBearer abc")
        ));
    }

    #[test]
    fn repeated_header_values_are_joined_with_commas() {
        let two = || Req::get("/").header("x", "a").header("x", "b");
        assert!(hits(&headers(&[("x", exact("a,b"))]), two()));
        assert!(!hits(&headers(&[("x", exact("a"))]), two()));
        assert!(!hits(&headers(&[("x", exact("a,b,"))]), two()));
        assert!(hits(&headers(&[("x", prefix("a,"))]), two()));
        assert!(hits(&headers(&[("x", regex("a,b"))]), two()));
        assert!(!hits(&headers(&[("x", regex("a"))]), two()));
        let three = Req::get("/")
            .header("x", "a")
            .header("x", "")
            .header("x", "c");
        assert!(hits(&headers(&[("x", exact("a,,c"))]), three));
    }

    #[test]
    fn reserved_header_keys_are_ignored() {
        let m = headers(&[
            ("uri", exact("/nope")),
            ("method", exact("NOPE")),
            ("scheme", exact("x")),
            ("authority", exact("x")),
        ]);
        assert!(m.is_catch_all());
        assert!(hits(&m, Req::get("/")));
    }

    #[test]
    fn pseudo_header_keys_map_to_request_parts() {
        assert!(hits(&headers(&[(":method", exact("GET"))]), Req::get("/")));
        assert!(!hits(
            &headers(&[(":method", exact("POST"))]),
            Req::get("/")
        ));
        assert!(hits(&headers(&[(":scheme", exact("http"))]), Req::get("/")));
        assert!(hits(
            &headers(&[(":authority", exact("reviews:9080"))]),
            Req::get("/")
        ));
        assert!(hits(
            &headers(&[("host", exact("reviews:9080"))]),
            Req::get("/")
        ));
        // `:path` is the path with its query, as Envoy's `:path` header.
        assert!(hits(
            &headers(&[(":path", exact("/a?b=1"))]),
            Req::get("/a?b=1")
        ));
        assert!(hits(
            &headers(&[(":path", regex("/a\\?b=.*"))]),
            Req::get("/a?b=1")
        ));
        assert!(hits(
            &headers(&[(":path", prefix("/a?"))]),
            Req::get("/a?b=1")
        ));
        assert!(!hits(
            &headers(&[(":path", exact("/a"))]),
            Req::get("/a?b=1")
        ));
        assert!(hits(&headers(&[(":path", exact("/a"))]), Req::get("/a")));
        // A request never has `:status`.
        assert!(!hits(
            &headers(&[(":status", StringMatch::Any)]),
            Req::get("/")
        ));
        assert!(hits(
            &without_headers(&[(":status", StringMatch::Any)]),
            Req::get("/")
        ));
    }

    #[test]
    fn without_headers_fails_when_the_header_matches() {
        let m = without_headers(&[("x", exact("foo"))]);
        assert!(!hits(&m, Req::get("/").header("x", "foo")));
        assert!(hits(&m, Req::get("/").header("x", "bar")));
        assert!(hits(&m, Req::get("/")), "a missing header is not `foo`");
    }

    #[test]
    fn without_headers_treats_a_missing_header_as_empty() {
        let m = without_headers(&[("x", exact(""))]);
        assert!(
            !hits(&m, Req::get("/")),
            "missing = \"\", which matches, so the block fails"
        );
        assert!(!hits(&m, Req::get("/").header("x", "")));
        assert!(hits(&m, Req::get("/").header("x", "v")));
        let m = without_headers(&[("x", regex(".*"))]);
        assert!(!hits(&m, Req::get("/")));
    }

    #[test]
    fn without_headers_present_means_absent() {
        for sm in [StringMatch::Any, regex("*")] {
            let m = without_headers(&[("x-debug", sm)]);
            assert!(hits(&m, Req::get("/")));
            assert!(!hits(&m, Req::get("/").header("x-debug", "")));
            assert!(!hits(&m, Req::get("/").header("x-debug", "1")));
        }
    }

    #[test]
    fn headers_and_without_headers_combine() {
        let m = compile(HttpMatchRequest {
            headers: map(&[("x-team", exact("a"))]),
            without_headers: map(&[("x-canary", StringMatch::Any)]),
            ..Default::default()
        });
        assert!(hits(&m, Req::get("/").header("x-team", "a")));
        assert!(!hits(
            &m,
            Req::get("/").header("x-team", "a").header("x-canary", "1")
        ));
        assert!(!hits(&m, Req::get("/").header("x-team", "b")));
    }

    #[test]
    fn query_param_exact_empty_matches_bare_key_and_empty_value() {
        let m = query(&[("a", exact(""))]);
        assert!(hits(&m, Req::get("/p?a")));
        assert!(hits(&m, Req::get("/p?a=")));
        assert!(!hits(&m, Req::get("/p?a=1")));
        assert!(!hits(&m, Req::get("/p?b")));
        assert!(!hits(&m, Req::get("/p")));
    }

    #[test]
    fn query_param_present_value_prefix_and_regex() {
        let present = query(&[("a", StringMatch::Any)]);
        for target in ["/p?a", "/p?a=", "/p?a=1", "/p?x=1&a=2"] {
            assert!(hits(&present, Req::get(target)), "{target}");
        }
        assert!(!hits(&present, Req::get("/p?ab=1")));
        assert!(!hits(&present, Req::get("/p?b=a")));
        let m = query(&[("a", exact("1"))]);
        assert!(hits(&m, Req::get("/p?a=1")));
        assert!(hits(&m, Req::get("/p?x=2&a=1&y")));
        assert!(!hits(&m, Req::get("/p?a=10")));
        assert!(!hits(&m, Req::get("/p?A=1")), "names are case-sensitive");
        assert!(hits(&query(&[("v", prefix("ab"))]), Req::get("/p?v=abc")));
        assert!(hits(
            &query(&[("v", regex("[0-9]+"))]),
            Req::get("/p?v=123")
        ));
        assert!(!hits(
            &query(&[("v", regex("[0-9]+"))]),
            Req::get("/p?v=12a")
        ));
        // A value may itself contain `=`.
        assert!(hits(&query(&[("t", exact("a=b"))]), Req::get("/p?t=a=b")));
    }

    #[test]
    fn query_param_uses_the_first_occurrence_and_raw_value() {
        let m = query(&[("a", exact("1"))]);
        assert!(hits(&m, Req::get("/p?a=1&a=2")));
        assert!(!hits(&m, Req::get("/p?a=2&a=1")));
        // Not percent-decoded, as Envoy's parseQueryString.
        assert!(hits(
            &query(&[("q", exact("a%20b"))]),
            Req::get("/p?q=a%20b")
        ));
        assert!(!hits(
            &query(&[("q", exact("a b"))]),
            Req::get("/p?q=a%20b")
        ));
        assert!(!hits(&query(&[("q", exact("a b"))]), Req::get("/p?q=a+b")));
    }

    #[test]
    fn port_matches_the_destination_port() {
        let m = compile(HttpMatchRequest {
            port: Some(9080),
            ..Default::default()
        });
        assert!(hits(&m, Req::get("/")));
        let mut other = Req::get("/");
        other.port = 8080;
        assert!(!hits(&m, other));
        // proto3: port 0 is unset.
        let m = compile(HttpMatchRequest {
            port: Some(0),
            ..Default::default()
        });
        assert!(m.is_catch_all());
    }

    fn with_source(ns: &str, labels: &[(&str, &str)]) -> Req {
        let mut r = Req::get("/");
        r.source = Some(SourceIdentity {
            namespace: ns.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        });
        r
    }

    #[test]
    fn source_labels_are_a_subset_of_the_callers_labels() {
        let m = compile(HttpMatchRequest {
            source_labels: [
                ("app".to_string(), "web".to_string()),
                ("version".to_string(), "v1".to_string()),
            ]
            .into(),
            ..Default::default()
        });
        assert!(hits(
            &m,
            with_source("default", &[("app", "web"), ("version", "v1")])
        ));
        assert!(hits(
            &m,
            with_source(
                "default",
                &[("app", "web"), ("version", "v1"), ("tier", "fe")]
            )
        ));
        assert!(!hits(&m, with_source("default", &[("app", "web")])));
        assert!(!hits(
            &m,
            with_source("default", &[("app", "web"), ("version", "v2")])
        ));
        assert!(!hits(&m, Req::get("/")), "unknown source never matches");
    }

    #[test]
    fn source_namespace_matches_the_callers_namespace() {
        let m = compile(HttpMatchRequest {
            source_namespace: "prod".into(),
            ..Default::default()
        });
        assert!(hits(&m, with_source("prod", &[])));
        assert!(!hits(&m, with_source("dev", &[])));
        assert!(!hits(&m, Req::get("/")));
        // Unset: any source, known or not.
        assert!(hits(&compile(HttpMatchRequest::default()), Req::get("/")));
    }

    fn at_gateway(gw: &str) -> Req {
        let mut r = Req::get("/");
        r.gateway = gw.into();
        r
    }

    #[test]
    fn gateways_default_to_mesh() {
        let m = compile(HttpMatchRequest::default());
        assert_eq!(m.gateways(), ["mesh"]);
        assert!(hits(&m, Req::get("/")));
        assert!(!hits(&m, at_gateway("istio-system/ingress")));
    }

    #[test]
    fn virtual_service_gateways_replace_mesh_and_match_gateways_override_them() {
        let vs = vec!["ingress".to_string()];
        let scope = MatchScope::new("default", &vs);
        let mut cache = RegexCache::new();
        let m = HttpMatcher::compile(&HttpMatchRequest::default(), scope, &mut cache).expect("ok");
        assert_eq!(m.gateways(), ["default/ingress"]);
        assert!(hits(&m, at_gateway("default/ingress")));
        assert!(!hits(&m, Req::get("/")), "listing a gateway removes mesh");

        let own = HttpMatchRequest {
            gateways: vec!["mesh".into(), "edge/gw".into()],
            ..Default::default()
        };
        let m = HttpMatcher::compile(&own, scope, &mut cache).expect("ok");
        assert_eq!(m.gateways(), ["mesh", "edge/gw"]);
        assert!(hits(&m, Req::get("/")));
        assert!(hits(&m, at_gateway("edge/gw")));
        assert!(!hits(&m, at_gateway("default/ingress")));

        let catch_all = HttpMatcher::catch_all(scope);
        assert!(hits(&catch_all, at_gateway("default/ingress")));
        assert!(!hits(&catch_all, Req::get("/")));
    }

    #[test]
    fn gateway_names_are_qualified_as_istio_does() {
        assert_eq!(resolve_gateway_name("mesh", "ns"), "mesh");
        assert_eq!(resolve_gateway_name("gw", "ns"), "ns/gw");
        assert_eq!(resolve_gateway_name("./gw", "ns"), "ns/gw");
        assert_eq!(resolve_gateway_name("other/gw", "ns"), "other/gw");
        assert_eq!(
            resolve_gateway_name("gw.other.svc.cluster.local", "ns"),
            "other/gw"
        );
        assert_eq!(resolve_gateway_name("gw.other", "ns"), "other/gw");
    }

    fn with_claims(claims: serde_json::Value) -> Req {
        let mut r = Req::get("/");
        r.claims = Some(claims);
        r
    }

    #[test]
    fn jwt_claim_keys_match_verified_claims() {
        let m = headers(&[("@request.auth.claims.group", exact("admin"))]);
        assert!(hits(&m, with_claims(json!({"group": "admin"}))));
        assert!(
            hits(&m, with_claims(json!({"group": ["dev", "admin"]}))),
            "any list item"
        );
        assert!(!hits(&m, with_claims(json!({"group": "dev"}))));
        assert!(!hits(&m, with_claims(json!({"other": "admin"}))));
        assert!(
            !hits(&m, with_claims(json!({"group": 1}))),
            "non-strings never match a value"
        );
        assert!(!hits(&m, Req::get("/")), "no verified token never matches");
        // Claim keys are not headers.
        assert!(!hits(&m, Req::get("/").header("group", "admin")));
    }

    #[test]
    fn nested_jwt_claims_in_dot_and_bracket_forms() {
        let claims = json!({"org": {"team": "core"}, "a.b": "dotted"});
        for key in [
            "@request.auth.claims.org.team",
            "@request.auth.claims[org][team]",
        ] {
            assert!(
                hits(
                    &headers(&[(key, exact("core"))]),
                    with_claims(claims.clone())
                ),
                "{key}"
            );
            assert!(
                !hits(
                    &headers(&[(key, exact("ops"))]),
                    with_claims(claims.clone())
                ),
                "{key}"
            );
        }
        assert!(hits(
            &headers(&[("@request.auth.claims[a.b]", exact("dotted"))]),
            with_claims(claims.clone())
        ));
        assert!(hits(
            &headers(&[("@request.auth.claims.org", StringMatch::Any)]),
            with_claims(claims)
        ));
    }

    #[test]
    fn without_headers_jwt_claim_is_inverted() {
        let m = without_headers(&[("@request.auth.claims.group", exact("admin"))]);
        assert!(!hits(&m, with_claims(json!({"group": "admin"}))));
        assert!(hits(&m, with_claims(json!({"group": "dev"}))));
        assert!(
            hits(&m, Req::get("/")),
            "no claims: the claim does not match, inverted"
        );
    }

    #[test]
    fn regexes_are_compiled_once_and_shared() {
        let mut cache = RegexCache::new();
        let scope = MatchScope::new("default", &[]);
        let a = HttpMatchRequest {
            uri: Some(regex("/v[0-9]+/.*")),
            ..Default::default()
        };
        let b = HttpMatchRequest {
            headers: map(&[("x", regex("/v[0-9]+/.*"))]),
            ..Default::default()
        };
        let ma = HttpMatcher::compile(&a, scope, &mut cache).expect("ok");
        let mb = HttpMatcher::compile(&b, scope, &mut cache).expect("ok");
        assert_eq!(cache.len(), 1);
        let Some(StringMatcher::Regex(ra)) = ma.uri() else {
            panic!("regex uri")
        };
        let StringMatcher::Regex(rb) = &mb.headers[0].matcher else {
            panic!("regex header")
        };
        assert!(Arc::ptr_eq(ra.regex(), rb.regex()));
        // A different pattern gets its own regex.
        let re = cache.full_match("/other").expect("ok");
        assert!(!Arc::ptr_eq(ra.regex(), &re));
        assert_eq!(cache.len(), 2);
        // `*` is "present", not a regex.
        let _ = HttpMatcher::compile(
            &HttpMatchRequest {
                uri: Some(regex("*")),
                ..Default::default()
            },
            scope,
            &mut cache,
        );
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn compile_errors_are_reported_not_panicked() {
        let mut cache = RegexCache::new();
        let scope = MatchScope::new("default", &[]);
        let bad_regex = HttpMatchRequest {
            uri: Some(regex("(unclosed")),
            ..Default::default()
        };
        assert!(matches!(
            HttpMatcher::compile(&bad_regex, scope, &mut cache),
            Err(MatchError::Regex { pattern, .. }) if pattern == "(unclosed"
        ));
        assert!(cache.is_empty());
        let bad_name = HttpMatchRequest {
            headers: map(&[("bad header", exact("x"))]),
            ..Default::default()
        };
        assert!(matches!(
            HttpMatcher::compile(&bad_name, scope, &mut cache),
            Err(MatchError::HeaderName { name }) if name == "bad header"
        ));
    }

    #[test]
    fn fields_of_one_block_are_and_ed() {
        let m = compile(HttpMatchRequest {
            uri: Some(prefix("/api")),
            method: Some(exact("GET")),
            headers: map(&[("x", exact("1"))]),
            query_params: map(&[("debug", StringMatch::Any)]),
            ..Default::default()
        });
        assert!(hits(&m, Req::get("/api/x?debug").header("x", "1")));
        assert!(!hits(&m, Req::get("/api/x").header("x", "1")));
        assert!(!hits(&m, Req::get("/api/x?debug")));
        assert!(!hits(&m, Req::get("/web?debug").header("x", "1")));
    }

    #[test]
    fn first_match_returns_the_first_matching_block() {
        let mut cache = RegexCache::new();
        let scope = MatchScope::new("default", &[]);
        let blocks = vec![
            HttpMatchRequest {
                uri: Some(exact("/a")),
                ..Default::default()
            },
            HttpMatchRequest {
                uri: Some(prefix("/")),
                ..Default::default()
            },
            HttpMatchRequest {
                uri: Some(prefix("/a")),
                ..Default::default()
            },
        ];
        let ms = HttpMatcher::compile_route(&blocks, scope, &mut cache).expect("ok");
        assert_eq!(first_match(&ms, &Req::get("/a").view()), Some(0));
        assert_eq!(
            first_match(&ms, &Req::get("/ab").view()),
            Some(1),
            "earlier block wins"
        );
        assert_eq!(first_match(&ms[..1], &Req::get("/b").view()), None);
        assert_eq!(first_match(&[], &Req::get("/").view()), None);
    }

    #[test]
    fn a_route_without_match_blocks_matches_everything() {
        let mut cache = RegexCache::new();
        let ms = HttpMatcher::compile_route(&[], MatchScope::new("default", &[]), &mut cache)
            .expect("ok");
        assert_eq!(ms.len(), 1);
        assert!(ms[0].is_catch_all());
        let mut r = Req::get("/anything?x").header("any", "thing");
        r.method = Method::DELETE;
        assert_eq!(first_match(&ms, &r.view()), Some(0));
        assert!(!uri(exact("/")).is_catch_all());
        assert!(uri(prefix("")).is_catch_all());
    }

    #[test]
    fn string_matcher_handles_non_utf8_header_values() {
        let mut cache = RegexCache::new();
        let re = StringMatcher::compile(&regex(".*"), false, &mut cache).expect("ok");
        assert!(
            !re.matches_bytes(b"\xff"),
            "a regex never matches non-UTF-8"
        );
        let ex = StringMatcher::compile(&exact("a\u{fffd}"), false, &mut cache).expect("ok");
        assert!(!ex.matches_bytes(b"a\xff"));
        let px = StringMatcher::compile(&prefix("a"), false, &mut cache).expect("ok");
        assert!(px.matches_bytes(b"a\xff"));
    }

    #[test]
    fn compiled_matchers_are_plain_data() {
        let a = uri(regex("/x.*"));
        let b = uri(regex("/x.*"));
        assert_eq!(a, b, "equal by pattern even when compiled separately");
        assert_ne!(a, uri(regex("/y.*")));
    }
}
