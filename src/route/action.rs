//! What a matched route does: forward to weighted destinations (with an optional rewrite),
//! answer with a redirect, or answer directly (ISTIO.md §2.3, §2.4, §2.5, §2.7).
//!
//! Everything here is compiled once, when the route table is built; at request time the
//! actions read plain data.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use regex::Regex;

use crate::body::{self, MeshBody};
use crate::config::common::Percent;
use crate::config::virtual_service::{
    Destination, HttpDirectResponse, HttpRedirect, HttpRewrite, HttpRouteDestination,
    RedirectPortSelection,
};
use crate::route::headers::HeaderOps;
use crate::route::matcher::{RegexCache, StringMatcher};
use crate::route::table::{RouteMatch, RouteWarningKind};
use crate::snapshot::TargetCache;
use crate::snapshot::hosts::{ClusterDomain, expand_host, split_host_port};

/// The action of a route: Istio's oneof of `route` (forward), `redirect` and
/// `directResponse` (`delegate` is resolved when the table is compiled).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteAction {
    /// `route[]`: forward to one of the weighted destinations.
    Forward(Forward),
    /// `redirect`: answer with a 3xx.
    Redirect(Redirect),
    /// `directResponse`: answer with a fixed response.
    DirectResponse(DirectResponse),
}

/// Forwarding: the weighted `route[]` destinations and the route's `rewrite`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    destinations: WeightedDestinations,
    rewrite: Option<Box<Rewrite>>,
    /// Each destination's target, remembered on first use.
    targets: DestinationTargets,
}

impl Forward {
    /// A forward action.
    pub fn new(destinations: WeightedDestinations, rewrite: Option<Rewrite>) -> Self {
        Forward {
            targets: DestinationTargets::new(destinations.len()),
            destinations,
            rewrite: rewrite.map(Box::new),
        }
    }

    /// Where [`Snapshot::target_cached`](crate::snapshot::Snapshot::target_cached) keeps the
    /// target of destination `index` (as [`WeightedDestinations::get`] numbers them).
    pub(crate) fn target_cache(&self, index: usize) -> Option<&TargetCache> {
        let slots = &self.targets.0;
        match index.checked_sub(1) {
            None => Some(&slots.first),
            Some(j) => slots.rest.get(j),
        }
    }

    /// The weighted destinations (`route[]`).
    pub fn destinations(&self) -> &WeightedDestinations {
        &self.destinations
    }

    /// The route's `rewrite`, if any (absent = path and authority unchanged).
    pub fn rewrite(&self) -> Option<&Rewrite> {
        self.rewrite.as_deref()
    }
}

/// The targets of a forward action's destinations, by index: a cache filled by the
/// snapshot whose routes hold the action (each snapshot compiles its own routes), so it is
/// ignored by equality and a clone starts empty. One pointer in the route.
struct DestinationTargets(Box<TargetSlots>);

struct TargetSlots {
    first: TargetCache,
    rest: Box<[TargetCache]>,
}

impl DestinationTargets {
    /// Empty slots for `len` destinations (at least one).
    fn new(len: usize) -> Self {
        DestinationTargets(Box::new(TargetSlots {
            first: TargetCache::default(),
            rest: (1..len).map(|_| TargetCache::default()).collect(),
        }))
    }
}

impl Clone for DestinationTargets {
    fn clone(&self) -> Self {
        DestinationTargets::new(1 + self.0.rest.len())
    }
}

impl PartialEq for DestinationTargets {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for DestinationTargets {}

impl fmt::Debug for DestinationTargets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DestinationTargets")
    }
}

/// One destination of `route[]` (Istio's `HTTPRouteDestination`), compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteDestination {
    host: Arc<str>,
    subset: Option<Arc<str>>,
    port: Option<u16>,
    weight: u32,
    headers: HeaderOps,
}

impl RouteDestination {
    /// Compiles `d`: the host is expanded with the VirtualService's `namespace`
    /// ([`expand_host`]) and lower-cased; `weight` default 0 (negative counts as 0). `None`
    /// (with a warning) when the destination or its host is missing or the port is not a
    /// valid port number.
    pub fn compile(
        d: &HttpRouteDestination,
        namespace: &str,
        domain: &ClusterDomain,
        warnings: &mut Vec<RouteWarningKind>,
    ) -> Option<Self> {
        RouteDestination::compile_in(d, namespace, domain, &mut RegexCache::new(), warnings)
    }

    /// [`compile`](Self::compile) with the host and subset strings shared through `cache`
    /// (a snapshot holds each distinct host once, however many routes name it).
    pub fn compile_in(
        d: &HttpRouteDestination,
        namespace: &str,
        domain: &ClusterDomain,
        cache: &mut RegexCache,
        warnings: &mut Vec<RouteWarningKind>,
    ) -> Option<Self> {
        let (host, subset, port) =
            compile_destination(d.destination.as_ref(), namespace, domain, cache, warnings)?;
        Some(RouteDestination {
            host,
            subset,
            port,
            weight: u32::try_from(d.weight).unwrap_or(0),
            headers: HeaderOps::compile(d.headers.as_ref(), warnings),
        })
    }

    /// `destination.host` as an FQDN (short names expanded with the VirtualService's
    /// namespace), lower-case.
    pub fn host(&self) -> &Arc<str> {
        &self.host
    }

    /// `destination.subset`; `None` when empty (no subset).
    pub fn subset(&self) -> Option<&Arc<str>> {
        self.subset.as_ref()
    }

    /// `destination.port.number`; `None` = the service's only (or first) port.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// `weight` as configured (default 0; a lone destination gets all traffic anyway).
    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// The destination's `headers`, applied after the route's when it is picked.
    pub fn headers(&self) -> &HeaderOps {
        &self.headers
    }
}

/// Compiles a `Destination` (shared by `route[]` and mirrors).
#[allow(clippy::type_complexity)]
fn compile_destination(
    d: Option<&Destination>,
    namespace: &str,
    domain: &ClusterDomain,
    cache: &mut RegexCache,
    warnings: &mut Vec<RouteWarningKind>,
) -> Option<(Arc<str>, Option<Arc<str>>, Option<u16>)> {
    let Some(d) = d.filter(|d| !d.host.is_empty()) else {
        warnings.push(RouteWarningKind::InvalidDestination(
            "destination.host is required".into(),
        ));
        return None;
    };
    let port = match d.port.map(|p| p.number) {
        None | Some(0) => None,
        Some(n) => match u16::try_from(n) {
            Ok(p) => Some(p),
            Err(_) => {
                warnings.push(RouteWarningKind::InvalidDestination(format!(
                    "port {n} of {} is not a valid port",
                    d.host
                )));
                return None;
            }
        },
    };
    let mut host = expand_host(&d.host, namespace, domain);
    host.make_ascii_lowercase();
    Some((
        cache.intern(&host),
        Some(d.subset.as_str())
            .filter(|s| !s.is_empty())
            .map(|s| cache.intern(s)),
        port,
    ))
}

/// The destinations of a route with their relative weights (ISTIO.md §2.3), ready for a
/// weighted pick.
///
/// * One destination gets all traffic, whatever its weight.
/// * With several, each gets `weight / Σ weights`; 0-weight entries are removed.
/// * All weights 0 (Istio's validation rejects it) → every entry gets an equal share.
///
/// Never empty. A pick is a binary search over cumulative weights: O(log n).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightedDestinations {
    first: RouteDestination,
    /// The effective weight of `first` (its cumulative weight).
    first_cumulative: u64,
    /// The other entries, each with the sum of the effective weights up to and including it.
    rest: Box<[(u64, RouteDestination)]>,
}

impl WeightedDestinations {
    /// Builds the set from `dests` in order; `None` when `dests` is empty.
    pub fn new(dests: Vec<RouteDestination>) -> Option<Self> {
        let mut dests = dests;
        if dests.len() > 1 && dests.iter().any(|d| d.weight > 0) {
            dests.retain(|d| d.weight > 0);
        }
        let single = dests.len() == 1;
        let mut sum = 0u64;
        let mut cumulative = dests.into_iter().map(|d| {
            // A lone destination, or all-zero weights: equal shares.
            let w = if single || d.weight == 0 {
                1
            } else {
                u64::from(d.weight)
            };
            sum += w;
            (sum, d)
        });
        let (first_cumulative, first) = cumulative.next()?;
        Some(WeightedDestinations {
            first,
            first_cumulative,
            rest: cumulative.collect(),
        })
    }

    /// The sum of the effective weights: a pick takes a `roll` in `0..total()`.
    pub fn total(&self) -> u64 {
        self.rest
            .last()
            .map_or(self.first_cumulative, |(c, _)| *c)
            .max(1)
    }

    /// The destination for `roll`, uniform in `0..total()`: entry `i` owns the rolls from
    /// the sum of the weights before it up to (excluding) that sum plus its weight. A roll
    /// beyond the total picks the last entry.
    pub fn pick(&self, roll: u64) -> &RouteDestination {
        self.pick_indexed(roll).1
    }

    /// Like [`pick`](Self::pick), with the destination's index (as [`get`](Self::get) takes
    /// it).
    pub fn pick_indexed(&self, roll: u64) -> (usize, &RouteDestination) {
        let roll = roll.min(self.total() - 1);
        if roll < self.first_cumulative {
            return (0, &self.first);
        }
        let j = self.rest.partition_point(|(c, _)| *c <= roll);
        match self.rest.get(j).or_else(|| self.rest.last()) {
            None => (0, &self.first),
            Some((_, d)) => (1 + j.min(self.rest.len() - 1), d),
        }
    }

    /// The destination at `index` (config order, 0-weight ones removed).
    pub fn get(&self, index: usize) -> Option<&RouteDestination> {
        match index.checked_sub(1) {
            None => Some(&self.first),
            Some(j) => self.rest.get(j).map(|(_, d)| d),
        }
    }

    /// A weighted random pick.
    pub fn pick_with<R: rand::Rng + ?Sized>(&self, rng: &mut R) -> &RouteDestination {
        if self.rest.is_empty() {
            return &self.first;
        }
        self.pick(rng.random_range(0..self.total()))
    }

    /// The destinations, in config order (0-weight ones removed).
    pub fn iter(&self) -> impl Iterator<Item = &RouteDestination> {
        std::iter::once(&self.first).chain(self.rest.iter().map(|(_, d)| d))
    }

    /// The number of destinations (at least 1).
    pub fn len(&self) -> usize {
        1 + self.rest.len()
    }

    /// Always false: there is at least one destination.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// A mirror destination (`mirror` + `mirrorPercentage`, or an entry of `mirrors[]`): data
/// only for now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    host: Arc<str>,
    subset: Option<Arc<str>>,
    port: Option<u16>,
    percentage: Percent,
}

impl Mirror {
    pub(crate) fn compile(
        d: Option<&Destination>,
        percentage: Percent,
        namespace: &str,
        domain: &ClusterDomain,
        cache: &mut RegexCache,
        warnings: &mut Vec<RouteWarningKind>,
    ) -> Option<Self> {
        let (host, subset, port) = compile_destination(d, namespace, domain, cache, warnings)?;
        Some(Mirror {
            host,
            subset,
            port,
            percentage,
        })
    }

    /// The mirror `destination.host`, expanded to an FQDN.
    pub fn host(&self) -> &Arc<str> {
        &self.host
    }

    /// The mirror `destination.subset`.
    pub fn subset(&self) -> Option<&Arc<str>> {
        self.subset.as_ref()
    }

    /// The mirror `destination.port.number`.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// `mirrorPercentage` / `mirrors[].percentage` (the deprecated integer `mirrorPercent`
    /// too); absent = 100%.
    pub fn percentage(&self) -> Percent {
        self.percentage
    }
}

/// The part of the path a prefix match matched, for `rewrite.uri` and
/// `redirect.prefixRewrite`: the prefix of a `prefix` uri match; `None` (the whole path) for
/// exact and regex matches. A block without a uri condition is Istio's `prefix: "/"`.
fn matched_prefix_len(m: &RouteMatch<'_>) -> Option<usize> {
    match m.uri_matcher() {
        None | Some(StringMatcher::Present) => Some(1),
        Some(StringMatcher::Prefix { value, .. }) => Some(value.len()),
        Some(_) => None,
    }
}

/// Replaces the matched prefix (or the whole path) of `path` with `with`.
fn replace_matched(m: &RouteMatch<'_>, path: &str, with: &str) -> String {
    let rest = matched_prefix_len(m)
        .and_then(|n| path.get(n..))
        .unwrap_or("");
    let mut out = String::with_capacity(with.len() + rest.len());
    out.push_str(with);
    out.push_str(rest);
    out
}

fn join_query(mut path: String, query: Option<&str>) -> String {
    if let Some(q) = query {
        path.push('?');
        path.push_str(q);
    }
    path
}

/// A compiled `rewrite` (Istio's `HTTPRewrite`): `uri` or `uriRegexRewrite`, and
/// `authority`. Absent fields change nothing.
#[derive(Debug, Clone)]
pub struct Rewrite {
    uri: Option<Box<str>>,
    regex: Option<(Regex, Box<str>)>,
    authority: Option<HeaderValue>,
}

impl PartialEq for Rewrite {
    fn eq(&self, other: &Self) -> bool {
        self.uri == other.uri
            && self.authority == other.authority
            && self.regex.as_ref().map(|(r, s)| (r.as_str(), s))
                == other.regex.as_ref().map(|(r, s)| (r.as_str(), s))
    }
}

impl Eq for Rewrite {}

impl Rewrite {
    /// Compiles `r`; `None` when it rewrites nothing. An invalid regex or authority is
    /// pushed to `warnings` and that part left out. `uriRegexRewrite` replaces every match
    /// of its (unanchored) pattern; `\1`..`\9` in `rewrite` are capture references.
    pub fn compile(r: &HttpRewrite, warnings: &mut Vec<RouteWarningKind>) -> Option<Self> {
        let uri = Some(r.uri.as_str())
            .filter(|u| !u.is_empty())
            .map(Box::from);
        let regex = r
            .uri_regex_rewrite
            .as_ref()
            .and_then(|rr| match Regex::new(&rr.pattern) {
                Ok(re) => Some((re, translate_captures(&rr.rewrite).into_boxed_str())),
                Err(e) => {
                    warnings.push(RouteWarningKind::InvalidRegexRewrite {
                        pattern: rr.pattern.clone(),
                        message: e.to_string(),
                    });
                    None
                }
            });
        let authority = Some(r.authority.as_str())
            .filter(|a| !a.is_empty())
            .and_then(|a| match HeaderValue::from_str(a) {
                Ok(v) => Some(v),
                Err(_) => {
                    warnings.push(RouteWarningKind::InvalidHeader {
                        name: "rewrite.authority".into(),
                        reason: format!("{a:?} is not a valid authority"),
                    });
                    None
                }
            });
        (uri.is_some() || regex.is_some() || authority.is_some()).then_some(Rewrite {
            uri,
            regex,
            authority,
        })
    }

    /// The new path-and-query for a request with `path` and `query` (without `?`) that
    /// matched `m`; `None` when the path is unchanged. `rewrite.uri` replaces the matched
    /// prefix of a `prefix` match (Envoy's `prefix_rewrite`), the whole path of an exact or
    /// regex match; `uriRegexRewrite` replaces every match in the path. The query is kept.
    pub fn apply_path(
        &self,
        m: &RouteMatch<'_>,
        path: &str,
        query: Option<&str>,
    ) -> Option<String> {
        let new = if let Some(uri) = &self.uri {
            replace_matched(m, path, uri)
        } else if let Some((re, with)) = &self.regex {
            re.replace_all(path, &**with).into_owned()
        } else {
            return None;
        };
        (new != path).then(|| join_query(new, query))
    }

    /// `rewrite.authority`: the new `Host` / `:authority`. It beats a destination's
    /// `headers.request` authority.
    pub fn authority(&self) -> Option<&HeaderValue> {
        self.authority.as_ref()
    }
}

/// `\1`..`\9` (RE2 / Istio) → `${1}`..`${9}` (regex crate); a literal `$` is escaped.
fn translate_captures(rewrite: &str) -> String {
    let mut out = String::with_capacity(rewrite.len() + 8);
    let mut chars = rewrite.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.peek().copied() {
                Some(d @ '0'..='9') => {
                    chars.next();
                    out.push_str("${");
                    out.push(d);
                    out.push('}');
                }
                Some('\\') => {
                    chars.next();
                    out.push('\\');
                }
                _ => out.push('\\'),
            },
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out
}

/// A compiled `redirect` (Istio's `HTTPRedirect`, ISTIO.md §2.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    uri: Option<Box<str>>,
    prefix_rewrite: Option<Box<str>>,
    authority: Option<Box<str>>,
    port: RedirectPort,
    scheme: Option<Box<str>>,
    code: StatusCode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RedirectPort {
    /// Neither `port` nor `derivePort`: the request's (or the new authority's) port.
    Keep,
    /// `port`.
    Fixed(u16),
    /// `derivePort: FROM_PROTOCOL_DEFAULT`.
    ProtocolDefault,
    /// `derivePort: FROM_REQUEST_PORT`.
    RequestPort,
}

impl Redirect {
    /// Compiles `r`. `redirectCode` absent = 301; Istio supports 301, 302, 303, 307 and 308:
    /// any other code makes the route invalid (`None`, with a warning), as does a `port`
    /// beyond 65535.
    pub fn compile(r: &HttpRedirect, warnings: &mut Vec<RouteWarningKind>) -> Option<Self> {
        let code = match r.redirect_code.unwrap_or(301) {
            c @ (301 | 302 | 303 | 307 | 308) => StatusCode::from_u16(c as u16).ok(),
            _ => None,
        };
        let Some(code) = code else {
            warnings.push(RouteWarningKind::InvalidStatus(
                r.redirect_code.unwrap_or(0),
            ));
            return None;
        };
        let port = match (r.port, r.derive_port) {
            (Some(p), _) => match u16::try_from(p) {
                Ok(p) => RedirectPort::Fixed(p),
                Err(_) => {
                    warnings.push(RouteWarningKind::InvalidRedirect(format!(
                        "port {p} is not a valid port"
                    )));
                    return None;
                }
            },
            (None, Some(RedirectPortSelection::FromRequestPort)) => RedirectPort::RequestPort,
            (None, Some(RedirectPortSelection::FromProtocolDefault)) => {
                RedirectPort::ProtocolDefault
            }
            (None, None) => RedirectPort::Keep,
        };
        let non_empty = |s: &str| Some(s).filter(|s| !s.is_empty()).map(Box::from);
        Some(Redirect {
            uri: non_empty(&r.uri),
            prefix_rewrite: non_empty(&r.prefix_rewrite),
            authority: non_empty(&r.authority),
            port,
            scheme: non_empty(&r.scheme).map(|s: Box<str>| s.to_ascii_lowercase().into()),
            code,
        })
    }

    /// The `Location` target for a request: the scheme (`scheme`, else the request's, else
    /// `http`), the authority (`authority`, else the request's `:authority` / `Host`), the
    /// port (`port`; `derivePort: FROM_REQUEST_PORT` = `listener_port`;
    /// `FROM_PROTOCOL_DEFAULT` = none; neither: the port written in `authority`, else the
    /// request's), the path (`uri` replaces it, `prefixRewrite` replaces the matched prefix)
    /// and the request's query. `:80` with http and `:443` with https are left out.
    pub fn location(
        &self,
        m: &RouteMatch<'_>,
        parts: &http::request::Parts,
        listener_port: u16,
    ) -> String {
        let scheme = self
            .scheme
            .as_deref()
            .or(parts.uri.scheme_str())
            .unwrap_or("http");
        let req_authority = parts
            .uri
            .authority()
            .map(|a| a.as_str())
            .or_else(|| {
                parts
                    .headers
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
            })
            .unwrap_or("");
        let (req_host, req_port) = split_host_port(req_authority);
        let (host, written_port) = match &self.authority {
            Some(a) => split_host_port(a),
            None => (req_host, req_port),
        };
        let port = match self.port {
            RedirectPort::Keep => written_port,
            RedirectPort::Fixed(p) => Some(p),
            RedirectPort::ProtocolDefault => None,
            RedirectPort::RequestPort => Some(listener_port),
        }
        .filter(|p| !matches!((scheme, *p), ("http", 80) | ("https", 443)));
        let path = parts.uri.path();
        let new_path = if let Some(uri) = &self.uri {
            uri.to_string()
        } else if let Some(prefix) = &self.prefix_rewrite {
            replace_matched(m, path, prefix)
        } else {
            path.to_string()
        };
        let mut out = format!("{scheme}://{host}");
        if let Some(p) = port {
            out.push(':');
            out.push_str(&p.to_string());
        }
        if !new_path.starts_with('/') {
            out.push('/');
        }
        // A `uri` with its own query replaces the request's.
        if new_path.contains('?') {
            out.push_str(&new_path);
            out
        } else {
            join_query(out + &new_path, parts.uri.query())
        }
    }

    /// The redirect response: `redirectCode` (default 301) with `Location` as computed by
    /// [`location`](Self::location) and an empty body.
    pub fn response(
        &self,
        m: &RouteMatch<'_>,
        parts: &http::request::Parts,
        listener_port: u16,
    ) -> Response<MeshBody> {
        let mut resp = Response::new(body::empty());
        *resp.status_mut() = self.code;
        if let Ok(v) = HeaderValue::from_str(&self.location(m, parts, listener_port)) {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        resp
    }

    /// The status of the redirect (`redirectCode`, default 301).
    pub fn code(&self) -> StatusCode {
        self.code
    }
}

/// A compiled `directResponse` (Istio's `HTTPDirectResponse`, ISTIO.md §2.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectResponse {
    status: StatusCode,
    body: Option<Bytes>,
}

impl DirectResponse {
    /// Compiles `d`: `status` (required, a valid HTTP status), `body.string` or `body.bytes`
    /// (base64, standard or URL-safe alphabet, padding optional). `None` with a warning when
    /// the status or the base64 is invalid.
    pub fn compile(d: &HttpDirectResponse, warnings: &mut Vec<RouteWarningKind>) -> Option<Self> {
        let raw = d.status.unwrap_or(0);
        let Some(status) = u16::try_from(raw)
            .ok()
            .and_then(|s| StatusCode::from_u16(s).ok())
        else {
            warnings.push(RouteWarningKind::InvalidStatus(raw));
            return None;
        };
        let body = match &d.body {
            None => None,
            Some(b) => match (&b.string, &b.bytes) {
                (Some(s), _) => Some(Bytes::from(s.clone())),
                (None, Some(b64)) => match decode_base64(b64) {
                    Some(bytes) => Some(Bytes::from(bytes)),
                    None => {
                        warnings.push(RouteWarningKind::InvalidBase64);
                        return None;
                    }
                },
                (None, None) => None,
            },
        };
        Some(DirectResponse { status, body })
    }

    /// The response: `status`, the body, and `content-type: text/plain` when the body is
    /// not empty (as Envoy's direct responses carry).
    pub fn response(&self) -> Response<MeshBody> {
        let body = self.body.clone().filter(|b| !b.is_empty());
        let has_body = body.is_some();
        let mut resp = Response::new(body.map_or_else(body::empty, body::full));
        *resp.status_mut() = self.status;
        if has_body {
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        }
        resp
    }

    /// `status`.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The body bytes (`body.string`, or `body.bytes` decoded), if any.
    pub fn body(&self) -> Option<&Bytes> {
        self.body.as_ref()
    }
}

/// Decodes base64 as protobuf JSON `bytes` accept it: standard or URL-safe alphabet,
/// padding optional. `None` on any other character or an impossible length.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0u32;
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // 6 leftover bits means a lone trailing character: not valid base64.
    (bits < 6).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_standard_urlsafe_and_unpadded() {
        assert_eq!(decode_base64("aGVsbG8=").as_deref(), Some(&b"hello"[..]));
        assert_eq!(decode_base64("aGVsbG8").as_deref(), Some(&b"hello"[..]));
        assert_eq!(decode_base64("-_8=").as_deref(), Some(&[0xfb, 0xff][..]));
        assert_eq!(decode_base64("+/8=").as_deref(), Some(&[0xfb, 0xff][..]));
        assert_eq!(decode_base64("").as_deref(), Some(&b""[..]));
        assert_eq!(decode_base64("a"), None);
        assert_eq!(decode_base64("ab!c"), None);
    }

    #[test]
    fn capture_references_are_translated() {
        assert_eq!(translate_captures(r"/v2/\1/x\2"), "/v2/${1}/x${2}");
        assert_eq!(translate_captures("$5"), "$$5");
        assert_eq!(translate_captures(r"a\\b"), r"a\b");
    }
}
