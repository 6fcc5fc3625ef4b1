//! The compiled route table of one host: the `http[]` routes of every VirtualService that
//! claims it, in Istio's order, with delegates resolved and actions compiled.
//!
//! * VirtualServices are given oldest first; their routes are concatenated (Istio merges
//!   several VirtualServices for one host into one virtual host in creation order).
//! * [`RouteTable::select`] returns the first (route, match block) that matches (ISTIO.md
//!   §2.1) and allocates nothing.
//! * A match block is a small list of [`HttpMatcher`]s that must ALL match: one for an
//!   ordinary route, two for a delegated one (the root's block AND the delegate's, ISTIO.md
//!   §2.6). A route without `match` has one catch-all block.
//! * Istio stops emitting routes after a catch-all: a block whose gateways are all covered by
//!   an earlier catch-all block is dropped, and a route left without blocks is dropped with a
//!   [`RouteWarningKind::Unreachable`] warning.
//! * `delegate`: the delegate VirtualService's routes replace the delegating route, each
//!   inheriting the root's `rewrite`, `timeout`, `retries`, `fault`, mirrors, `corsPolicy`
//!   and `headers` when it has none of its own (Istio's `mergeHTTPRoute`), named
//!   `<root>-<delegate>`. A delegate that cannot be found, or that delegates again, drops
//!   the route with a warning.
//!
//! ```
//! use tower_mesh::config::{Loader, Spec};
//! use tower_mesh::route::{RegexCache, RequestView, RouteTable, VsRef};
//! use tower_mesh::snapshot::ClusterDomain;
//!
//! let set = Loader::new().load_str(r#"
//! apiVersion: networking.istio.io/v1
//! kind: VirtualService
//! metadata: {name: reviews, namespace: default}
//! spec:
//!   hosts: [reviews]
//!   http:
//!   - match: [{uri: {prefix: /v2}}]
//!     route: [{destination: {host: reviews, subset: v2}}]
//!   - route: [{destination: {host: reviews, subset: v1}}]
//! "#);
//! let res = &set.resources[0];
//! let Spec::VirtualService(spec) = &res.spec else { unreachable!() };
//! let (table, warnings) = RouteTable::compile(
//!     &[VsRef { resource: res, spec }],
//!     &|_, _| None,
//!     &mut RegexCache::new(),
//!     &ClusterDomain::default(),
//! );
//! assert!(warnings.is_empty());
//! let headers = http::HeaderMap::new();
//! let req = RequestView {
//!     method: &http::Method::GET, scheme: "http", authority: "reviews", path: "/v2/x",
//!     query: None, headers: &headers, port: 80, source: None, gateway: "mesh", claims: None,
//! };
//! let m = table.select(&req).expect("a route");
//! let tower_mesh::route::RouteAction::Forward(fwd) = m.route.action() else { unreachable!() };
//! assert_eq!(fwd.destinations().pick(0).subset().map(|s| &**s), Some("v2"));
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::config::Resource;
use crate::config::common::Percent;
use crate::config::virtual_service::{
    HttpFaultInjection, HttpMatchRequest, HttpRetry, HttpRoute, VirtualService,
};
use crate::resilience::retry::RetryPolicy;
use crate::route::action::{
    DirectResponse, Forward, Mirror, Redirect, Rewrite, RouteAction, RouteDestination,
    WeightedDestinations,
};
use crate::route::cors::Cors;
use crate::route::headers::HeaderOps;
use crate::route::matcher::{
    HttpMatcher, MatchError, MatchScope, RegexCache, RequestView, StringMatcher,
};
use crate::snapshot::hosts::ClusterDomain;
use crate::snapshot::policy::Provenance;

/// A VirtualService given to [`RouteTable::compile`]: the resource (namespace, name, source)
/// and its spec.
#[derive(Debug, Clone, Copy)]
pub struct VsRef<'a> {
    /// The resource (for its namespace and provenance).
    pub resource: &'a Resource,
    /// Its VirtualService spec.
    pub spec: &'a VirtualService,
}

/// Why part of a route was dropped while compiling.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteWarningKind {
    /// `delegate` names a VirtualService that does not exist (or is not visible): the route
    /// is dropped.
    #[error("delegate VirtualService {namespace}/{name} not found; route dropped")]
    DelegateNotFound {
        /// The delegate's namespace (defaulted to the root's).
        namespace: String,
        /// The delegate's name.
        name: String,
    },
    /// A route of a delegate VirtualService delegates again (Istio allows one level).
    #[error("a delegate VirtualService cannot delegate again; route dropped")]
    NestedDelegate,
    /// A match block could not be compiled (it is dropped; a route without blocks too).
    #[error("match dropped: {0}")]
    InvalidMatch(MatchError),
    /// A header operation with an invalid name or value, or one on a forbidden header.
    #[error("header operation on {name:?} dropped: {reason}")]
    InvalidHeader {
        /// The header name as written.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// `rewrite.uriRegexRewrite.match` is not a valid regex (the regex rewrite is dropped).
    #[error("uriRegexRewrite dropped: invalid regex {pattern:?}: {message}")]
    InvalidRegexRewrite {
        /// The pattern as written.
        pattern: String,
        /// The regex compiler's explanation.
        message: String,
    },
    /// `directResponse.body.bytes` is not base64 (the route is dropped).
    #[error("directResponse.body.bytes is not valid base64; route dropped")]
    InvalidBase64,
    /// A `directResponse.status` or `redirect.redirectCode` that cannot be used (the route
    /// is dropped).
    #[error("status {0} cannot be used; route dropped")]
    InvalidStatus(u32),
    /// An unusable `redirect` (the route is dropped).
    #[error("invalid redirect: {0}; route dropped")]
    InvalidRedirect(String),
    /// A destination without host or with an invalid port (the destination is dropped).
    #[error("destination dropped: {0}")]
    InvalidDestination(String),
    /// A route with no usable action (`route`, `redirect`, `directResponse`): dropped.
    #[error("route has no usable destination, redirect or directResponse; route dropped")]
    NoAction,
    /// Every match block of the route comes after a catch-all for the same gateways (Istio:
    /// "rule not used").
    #[error("route is unreachable after a catch-all route; dropped")]
    Unreachable,
}

/// A problem found while compiling a route table: where, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteWarning {
    /// The VirtualService the problem is in.
    pub source: Arc<Provenance>,
    /// The route: `http[2]`, or `http[2] → ns/name http[0]` inside a delegate.
    pub route: String,
    /// What was dropped and why.
    pub kind: RouteWarningKind,
}

impl fmt::Display for RouteWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.source, self.route, self.kind)
    }
}

/// One match block of a compiled route: matchers that must all match (one, or two for a
/// delegated route: the root's block and the delegate's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchBlock {
    name: Box<str>,
    matchers: Box<[HttpMatcher]>,
    /// A copy of a case-sensitive `exact` / `prefix` uri condition (`true` = exact), checked
    /// first: most blocks of a long table fail on the path, and this test is one pointer away.
    quick_uri: Option<(Box<[u8]>, bool)>,
}

impl MatchBlock {
    fn new(name: Box<str>, matchers: Box<[HttpMatcher]>) -> Self {
        let quick_uri = matchers.iter().find_map(|m| match m.uri()? {
            StringMatcher::Exact {
                value,
                ignore_case: false,
            } => Some((value.as_bytes().into(), true)),
            StringMatcher::Prefix {
                value,
                ignore_case: false,
            } => Some((value.as_bytes().into(), false)),
            _ => None,
        });
        MatchBlock {
            name,
            matchers,
            quick_uri,
        }
    }

    /// Whether every matcher accepts the request.
    pub fn matches(&self, req: &RequestView<'_>) -> bool {
        if let Some((uri, exact)) = &self.quick_uri {
            let path = req.path.as_bytes();
            let ok = if *exact {
                path == &**uri
            } else {
                path.starts_with(uri)
            };
            if !ok {
                return false;
            }
        }
        self.matchers.iter().all(|m| m.matches(req))
    }

    /// The block's `match[].name` (root and delegate names joined with `-`); empty if none.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The matchers, root first.
    pub fn matchers(&self) -> &[HttpMatcher] {
        &self.matchers
    }

    /// The uri condition that decides what "the matched prefix" is: the innermost
    /// (delegate's) one, else the root's (Istio merges the delegate's uri over the root's).
    fn uri(&self) -> Option<&StringMatcher> {
        self.matchers.iter().rev().find_map(HttpMatcher::uri)
    }

    fn is_catch_all(&self) -> bool {
        self.matchers.iter().all(HttpMatcher::is_catch_all)
    }

    /// The gateways on which every matcher applies.
    fn gateways(&self) -> Vec<&str> {
        let Some((first, rest)) = self.matchers.split_first() else {
            return Vec::new();
        };
        first
            .gateways()
            .iter()
            .filter(|g| rest.iter().all(|m| m.gateways().contains(g)))
            .map(String::as_str)
            .collect()
    }
}

/// A compiled `http[]` route.
///
/// A snapshot holds one per route (100,000 in a large mesh), so what most routes leave out
/// (delegation, CORS, timeout, retries, fault, mirrors) lives behind one optional box.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledRoute {
    name: Box<str>,
    blocks: Box<[MatchBlock]>,
    provenance: Arc<Provenance>,
    action: RouteAction,
    headers: HeaderOps,
    /// `None` when the route has none of these.
    extras: Option<Box<RouteExtras>>,
}

/// The parts of a route most routes leave out.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct RouteExtras {
    root: Option<Arc<Provenance>>,
    cors: Option<Cors>,
    timeout: Option<Duration>,
    retries: Option<HttpRetry>,
    fault: Option<HttpFaultInjection>,
    mirrors: Box<[Mirror]>,
    /// The retry policy derived from `retries`, computed on first use.
    retry_memo: RetryMemo,
}

/// The [`RetryPolicy`] of a route with `retries`, parsed once (on the first request) rather
/// than per request: one for destinations without consistent hashing, one with (it changes
/// the previous-host default). Ignored by equality and emptied by clone, as a cache.
#[derive(Default)]
struct RetryMemo(OnceLock<[Arc<RetryPolicy>; 2]>);

impl Clone for RetryMemo {
    fn clone(&self) -> Self {
        RetryMemo::default()
    }
}

impl PartialEq for RetryMemo {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for RetryMemo {}

impl fmt::Debug for RetryMemo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RetryMemo")
    }
}

impl RouteExtras {
    fn is_empty(&self) -> bool {
        self.root.is_none()
            && self.cors.is_none()
            && self.timeout.is_none()
            && self.retries.is_none()
            && self.fault.is_none()
            && self.mirrors.is_empty()
    }
}

impl CompiledRoute {
    /// The route's `name` (for a delegated route `<root>-<delegate>`, or whichever is set);
    /// empty when unnamed.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name of match block `i` (`match[i].name`); empty when unnamed or out of range.
    pub fn match_name(&self, i: usize) -> &str {
        self.blocks.get(i).map_or("", MatchBlock::name)
    }

    /// The match blocks, in order (OR-ed).
    pub fn blocks(&self) -> &[MatchBlock] {
        &self.blocks
    }

    /// The VirtualService that defined the route: for a delegated route, the delegate.
    pub fn provenance(&self) -> &Arc<Provenance> {
        &self.provenance
    }

    /// For a delegated route, the root VirtualService that delegated to it.
    pub fn root_provenance(&self) -> Option<&Arc<Provenance>> {
        self.extras.as_ref()?.root.as_ref()
    }

    /// What the route does.
    pub fn action(&self) -> &RouteAction {
        &self.action
    }

    /// The route-level `headers` (applied before the chosen destination's).
    pub fn headers(&self) -> &HeaderOps {
        &self.headers
    }

    /// `corsPolicy`; absent = no CORS handling.
    pub fn cors(&self) -> Option<&Cors> {
        self.extras.as_ref()?.cors.as_ref()
    }

    /// `timeout`; `None` = disabled (Istio's default).
    pub fn timeout(&self) -> Option<Duration> {
        self.extras.as_ref()?.timeout
    }

    /// `retries`; `None` = the mesh default retry policy (2 attempts, ISTIO.md §2.9).
    pub fn retries(&self) -> Option<&HttpRetry> {
        self.extras.as_ref()?.retries.as_ref()
    }

    /// The retry policy for this route, towards a destination that uses consistent hashing
    /// or not ([`RetryPolicy::from_route`]), computed once per route and shared.
    pub fn retry_policy(&self, consistent_hash: bool) -> Arc<RetryPolicy> {
        let index = usize::from(consistent_hash);
        let from = |retries: Option<&HttpRetry>| {
            [false, true].map(|ch| Arc::new(RetryPolicy::from_route(retries, ch)))
        };
        match self.extras.as_deref() {
            Some(extras) if extras.retries.is_some() => extras
                .retry_memo
                .0
                .get_or_init(|| from(extras.retries.as_ref()))[index]
                .clone(),
            _ => crate::resilience::retry::default_policy(consistent_hash),
        }
    }

    /// `fault`; `None` = no fault injection.
    pub fn fault(&self) -> Option<&HttpFaultInjection> {
        self.extras.as_ref()?.fault.as_ref()
    }

    /// `mirror` (+ `mirrorPercentage`, default 100%) or `mirrors[]`; empty = no mirroring.
    pub fn mirrors(&self) -> &[Mirror] {
        self.extras.as_ref().map_or(&[], |e| &e.mirrors)
    }

    fn first_match(&self, req: &RequestView<'_>) -> Option<usize> {
        self.blocks.iter().position(|b| b.matches(req))
    }
}

/// The route (and which of its match blocks) that a request selected.
#[derive(Debug, Clone, Copy)]
pub struct RouteMatch<'a> {
    /// The route (shared: a routing decision keeps it without looking it up again).
    pub route: &'a Arc<CompiledRoute>,
    /// The route's index in [`RouteTable::routes`].
    pub index: usize,
    /// The index of the match block that matched (see [`CompiledRoute::blocks`]).
    pub matcher: usize,
}

impl<'a> RouteMatch<'a> {
    /// The match block that matched.
    pub fn block(&self) -> Option<&'a MatchBlock> {
        self.route.blocks.get(self.matcher)
    }

    /// The uri condition of the matched block (what `rewrite.uri` / `prefixRewrite` replace).
    pub fn uri_matcher(&self) -> Option<&'a StringMatcher> {
        self.block().and_then(MatchBlock::uri)
    }
}

/// The ordered, compiled `http[]` routes of one host.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouteTable {
    routes: Box<[Arc<CompiledRoute>]>,
    index: Option<SegmentIndex>,
    /// The first `Host` a request addressed the table with, parsed for its URI.
    authority: AuthorityMemo,
}

/// The [`Authority`](http::uri::Authority) of the first `Host` header that needed one (see
/// [`RouteTable::authority_for`]): a cache, ignored by equality and emptied by clone.
#[derive(Default)]
struct AuthorityMemo(OnceLock<http::uri::Authority>);

impl Clone for AuthorityMemo {
    fn clone(&self) -> Self {
        AuthorityMemo::default()
    }
}

impl PartialEq for AuthorityMemo {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for AuthorityMemo {}

impl fmt::Debug for AuthorityMemo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthorityMemo")
    }
}

/// Tables with fewer match blocks than this are scanned linearly (the index's hash lookup
/// would cost more than it saves).
const INDEX_MIN_BLOCKS: usize = 16;

/// (route, block) positions, in first-match order.
type Positions = Box<[(u32, u32)]>;

/// Skips match blocks that cannot match by the first path segment, keeping first-match
/// order: a block whose uri is an `exact` path, or a `prefix` that covers a whole first
/// segment (`/api/...`), can only match paths with that first segment; every other block is
/// "unkeyed" and always tried. `select` merges the keyed list of the request's segment with
/// the unkeyed list in order.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SegmentIndex {
    keyed: foldhash::HashMap<Box<str>, Positions>,
    unkeyed: Positions,
}

/// The first segment of a path: `/api/v1` → `api`, `/api` → `api`; `None` without a leading
/// `/`.
fn first_segment(path: &str) -> Option<&str> {
    let rest = path.strip_prefix('/')?;
    Some(rest.split_once('/').map_or(rest, |(seg, _)| seg))
}

/// The first segment every path the uri condition accepts has, if it is fixed.
fn uri_key(uri: &StringMatcher) -> Option<&str> {
    match uri {
        StringMatcher::Exact {
            value,
            ignore_case: false,
        } => first_segment(value),
        StringMatcher::Prefix {
            value,
            ignore_case: false,
        } => value
            .strip_prefix('/')
            .and_then(|rest| rest.split_once('/'))
            .map(|(seg, _)| seg),
        _ => None,
    }
}

impl SegmentIndex {
    fn build(routes: &[Arc<CompiledRoute>]) -> Option<Self> {
        let blocks: usize = routes.iter().map(|r| r.blocks.len()).sum();
        if blocks < INDEX_MIN_BLOCKS {
            return None;
        }
        let mut keyed: HashMap<Box<str>, Vec<(u32, u32)>> = HashMap::new();
        let mut unkeyed = Vec::new();
        for (r, route) in routes.iter().enumerate() {
            for (b, block) in route.blocks.iter().enumerate() {
                let pos = (u32::try_from(r).ok()?, u32::try_from(b).ok()?);
                // In a delegated block every matcher must hold: any keyed one decides.
                match block
                    .matchers
                    .iter()
                    .find_map(|m| m.uri().and_then(uri_key))
                {
                    Some(key) => keyed.entry(key.into()).or_default().push(pos),
                    None => unkeyed.push(pos),
                }
            }
        }
        Some(SegmentIndex {
            keyed: keyed.into_iter().map(|(k, v)| (k, v.into())).collect(),
            unkeyed: unkeyed.into(),
        })
    }
}

impl RouteTable {
    /// Compiles the routes of the VirtualServices `vss` (all claiming one host, oldest
    /// first). `delegate(namespace, name)` finds a delegate VirtualService (the namespace is
    /// already defaulted to the root's). Regexes are shared through `cache`; destination
    /// hosts are expanded with each VirtualService's namespace and `domain`.
    ///
    /// Problems never fail the compile: the part concerned is dropped and reported.
    pub fn compile<'a>(
        vss: &[VsRef<'a>],
        delegate: &dyn Fn(&str, &str) -> Option<VsRef<'a>>,
        cache: &mut RegexCache,
        domain: &ClusterDomain,
    ) -> (RouteTable, Vec<RouteWarning>) {
        let mut cx = Compiler {
            cache,
            domain,
            warnings: Vec::new(),
            routes: Vec::new(),
            covered: Vec::new(),
        };
        for vs in vss {
            cx.virtual_service(vs, delegate);
        }
        let index = SegmentIndex::build(&cx.routes);
        (
            RouteTable {
                routes: cx.routes.into_boxed_slice(),
                index,
                authority: AuthorityMemo::default(),
            },
            cx.warnings,
        )
    }

    /// `host` (a `Host` header) as a URI authority; `None` when it is not a valid one. The
    /// first one parsed is kept, and a request with the same bytes gets a clone of it (its
    /// bytes shared, not copied): the clients of a host mostly spell it one way.
    pub(crate) fn authority_for(&self, host: &http::HeaderValue) -> Option<http::uri::Authority> {
        if let Some(a) = self.authority.0.get()
            && a.as_str().as_bytes() == host.as_bytes()
        {
            return Some(a.clone());
        }
        let authority = http::uri::Authority::try_from(host.as_bytes()).ok()?;
        if self.authority.0.get().is_none() {
            // Another request may have set it meanwhile: then this one is not kept.
            let _ = self.authority.0.set(authority.clone());
        }
        Some(authority)
    }

    /// The first route (and match block) that matches `req`, or `None` (Envoy's 404 "NR").
    /// Allocates nothing (but for the rare matcher cases named on [`StringMatcher`]).
    pub fn select(&self, req: &RequestView<'_>) -> Option<RouteMatch<'_>> {
        let Some(index) = &self.index else {
            return self.select_linear(req);
        };
        let keyed: &[(u32, u32)] = first_segment(req.path)
            .and_then(|seg| index.keyed.get(seg))
            .map_or(&[], |v| v);
        let (mut a, mut b) = (keyed.iter().peekable(), index.unkeyed.iter().peekable());
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) if x < y => a.next(),
                (Some(_), Some(_)) | (None, Some(_)) => b.next(),
                (Some(_), None) => a.next(),
                (None, None) => return None,
            };
            let &(r, i) = next?;
            let Some(route) = self.routes.get(r as usize) else {
                continue;
            };
            if route
                .blocks
                .get(i as usize)
                .is_some_and(|block| block.matches(req))
            {
                return Some(RouteMatch {
                    route,
                    index: r as usize,
                    matcher: i as usize,
                });
            }
        }
    }

    /// [`select`](Self::select) without the index: every route in order.
    fn select_linear(&self, req: &RequestView<'_>) -> Option<RouteMatch<'_>> {
        self.routes.iter().enumerate().find_map(|(index, route)| {
            route.first_match(req).map(|matcher| RouteMatch {
                route,
                index,
                matcher,
            })
        })
    }

    /// The routes, in match order.
    pub fn routes(&self) -> &[Arc<CompiledRoute>] {
        &self.routes
    }

    /// The number of routes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether there is no route (every request is a 404 "NR").
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

struct Compiler<'c> {
    cache: &'c mut RegexCache,
    domain: &'c ClusterDomain,
    warnings: Vec<RouteWarning>,
    routes: Vec<Arc<CompiledRoute>>,
    /// Gateways on which a catch-all block has been seen.
    covered: Vec<String>,
}

/// Where a route being compiled comes from, for warnings and provenance.
struct Origin<'o> {
    source: &'o Arc<Provenance>,
    root: Option<&'o Arc<Provenance>>,
    path: &'o str,
}

impl Compiler<'_> {
    fn warn(&mut self, source: &Arc<Provenance>, path: &str, kinds: Vec<RouteWarningKind>) {
        self.warnings
            .extend(kinds.into_iter().map(|kind| RouteWarning {
                source: Arc::clone(source),
                route: path.to_string(),
                kind,
            }));
    }

    fn virtual_service<'a>(
        &mut self,
        vs: &VsRef<'a>,
        delegate: &dyn Fn(&str, &str) -> Option<VsRef<'a>>,
    ) {
        let prov = Arc::new(Provenance::of(vs.resource));
        let ns = vs.resource.metadata.namespace.as_str();
        let scope = MatchScope::new(ns, &vs.spec.gateways);
        for (i, route) in vs.spec.http.iter().enumerate() {
            let path = format!("http[{i}]");
            let mut kinds = Vec::new();
            let root_blocks = self.blocks(&route.matches, scope, &mut kinds);
            self.warn(&prov, &path, std::mem::take(&mut kinds));
            if root_blocks.is_empty() {
                continue;
            }
            let Some(d) = &route.delegate else {
                let origin = Origin {
                    source: &prov,
                    root: None,
                    path: &path,
                };
                self.route(route, root_blocks, ns, &origin);
                continue;
            };
            let dns = if d.namespace.is_empty() {
                ns
            } else {
                d.namespace.as_str()
            };
            let Some(dvs) = delegate(dns, &d.name) else {
                self.warn(
                    &prov,
                    &path,
                    vec![RouteWarningKind::DelegateNotFound {
                        namespace: dns.to_string(),
                        name: d.name.clone(),
                    }],
                );
                continue;
            };
            let dprov = Arc::new(Provenance::of(dvs.resource));
            let d_ns = dvs.resource.metadata.namespace.as_str();
            for (j, droute) in dvs.spec.http.iter().enumerate() {
                let dpath = format!("{path} → {dns}/{} http[{j}]", d.name);
                if droute.delegate.is_some() {
                    self.warn(&dprov, &dpath, vec![RouteWarningKind::NestedDelegate]);
                    continue;
                }
                // The delegate's matches apply where the root's do: the root's scope.
                let dblocks = self.blocks(&droute.matches, scope, &mut kinds);
                self.warn(&dprov, &dpath, std::mem::take(&mut kinds));
                let blocks: Vec<MatchBlock> = root_blocks
                    .iter()
                    .flat_map(|r| dblocks.iter().map(move |d| and_blocks(r, d)))
                    .collect();
                if blocks.is_empty() {
                    continue;
                }
                let merged = merge_route(route, droute);
                let origin = Origin {
                    source: &dprov,
                    root: Some(&prov),
                    path: &dpath,
                };
                self.route(&merged, blocks, d_ns, &origin);
            }
        }
    }

    /// Compiles a route's `match` list: one block per entry (a catch-all when empty); a
    /// block that fails to compile is dropped with a warning.
    fn blocks(
        &mut self,
        matches: &[HttpMatchRequest],
        scope: MatchScope<'_>,
        kinds: &mut Vec<RouteWarningKind>,
    ) -> Vec<MatchBlock> {
        if matches.is_empty() {
            return vec![MatchBlock::new(
                "".into(),
                Box::new([HttpMatcher::catch_all_in(scope, self.cache)]),
            )];
        }
        matches
            .iter()
            .filter_map(|m| match HttpMatcher::compile(m, scope, self.cache) {
                Ok(matcher) => Some(MatchBlock::new(m.name.as_str().into(), Box::new([matcher]))),
                Err(e) => {
                    kinds.push(RouteWarningKind::InvalidMatch(e));
                    None
                }
            })
            .collect()
    }

    /// Compiles the rest of a route and appends it, after the catch-all cut-off.
    fn route(
        &mut self,
        route: &HttpRoute,
        mut blocks: Vec<MatchBlock>,
        namespace: &str,
        origin: &Origin<'_>,
    ) {
        // Blocks after a catch-all on all of their gateways are never reached.
        blocks.retain(|b| {
            let gws = b.gateways();
            gws.is_empty() || !gws.iter().all(|g| self.covered.iter().any(|c| c == g))
        });
        blocks.retain(|b| !b.gateways().is_empty());
        if blocks.is_empty() {
            self.warn(
                origin.source,
                origin.path,
                vec![RouteWarningKind::Unreachable],
            );
            return;
        }
        let mut kinds = Vec::new();
        let compiled = self.compile_route(route, blocks, namespace, origin, &mut kinds);
        self.warn(origin.source, origin.path, kinds);
        let Some(compiled) = compiled else {
            return;
        };
        for b in compiled.blocks.iter().filter(|b| b.is_catch_all()) {
            for g in b.gateways() {
                if !self.covered.iter().any(|c| c == g) {
                    self.covered.push(g.to_string());
                }
            }
        }
        self.routes.push(Arc::new(compiled));
    }

    fn compile_route(
        &mut self,
        route: &HttpRoute,
        blocks: Vec<MatchBlock>,
        namespace: &str,
        origin: &Origin<'_>,
        kinds: &mut Vec<RouteWarningKind>,
    ) -> Option<CompiledRoute> {
        // Istio's order of precedence when translating the action.
        let action = if let Some(r) = &route.redirect {
            RouteAction::Redirect(Redirect::compile(r, kinds)?)
        } else if let Some(d) = &route.direct_response {
            RouteAction::DirectResponse(DirectResponse::compile(d, kinds)?)
        } else {
            let dests = route
                .route
                .iter()
                .filter_map(|d| {
                    RouteDestination::compile_in(d, namespace, self.domain, self.cache, kinds)
                })
                .collect();
            let Some(dests) = WeightedDestinations::new(dests) else {
                kinds.push(RouteWarningKind::NoAction);
                return None;
            };
            let rewrite = route
                .rewrite
                .as_ref()
                .and_then(|r| Rewrite::compile(r, kinds));
            RouteAction::Forward(Forward::new(dests, rewrite))
        };
        let mut mirrors = Vec::new();
        if let Some(m) = &route.mirror {
            let pct = route
                .mirror_percentage
                .or_else(|| {
                    route
                        .mirror_percent
                        .and_then(|p| Percent::new(f64::from(p)))
                })
                .unwrap_or(Percent::HUNDRED);
            mirrors.extend(Mirror::compile(
                Some(m),
                pct,
                namespace,
                self.domain,
                self.cache,
                kinds,
            ));
        }
        for m in &route.mirrors {
            let pct = m.percentage.unwrap_or(Percent::HUNDRED);
            mirrors.extend(Mirror::compile(
                m.destination.as_ref(),
                pct,
                namespace,
                self.domain,
                self.cache,
                kinds,
            ));
        }
        let extras = RouteExtras {
            root: origin.root.cloned(),
            cors: route
                .cors_policy
                .as_ref()
                .map(|c| Cors::compile(c, self.cache, kinds)),
            timeout: route.timeout,
            retries: route.retries.clone(),
            fault: route.fault.clone(),
            mirrors: mirrors.into(),
            retry_memo: RetryMemo::default(),
        };
        Some(CompiledRoute {
            name: route.name.as_str().into(),
            blocks: blocks.into(),
            provenance: Arc::clone(origin.source),
            action,
            headers: HeaderOps::compile(route.headers.as_ref(), kinds),
            extras: (!extras.is_empty()).then(|| Box::new(extras)),
        })
    }
}

/// The root block AND the delegate block.
fn and_blocks(root: &MatchBlock, delegate: &MatchBlock) -> MatchBlock {
    let name = match (root.name.is_empty(), delegate.name.is_empty()) {
        (_, true) => root.name.clone(),
        (true, false) => delegate.name.clone(),
        (false, false) => format!("{}-{}", root.name, delegate.name).into(),
    };
    MatchBlock::new(
        name,
        root.matchers
            .iter()
            .chain(delegate.matchers.iter())
            .cloned()
            .collect(),
    )
}

/// Istio's `mergeHTTPRoute`: the delegate's route, with the root's name prefixed and the
/// root's properties where the delegate has none.
fn merge_route(root: &HttpRoute, delegate: &HttpRoute) -> HttpRoute {
    let mut out = delegate.clone();
    out.name = match (root.name.is_empty(), delegate.name.is_empty()) {
        (_, true) => root.name.clone(),
        (true, false) => delegate.name.clone(),
        (false, false) => format!("{}-{}", root.name, delegate.name),
    };
    if out.rewrite.is_none() {
        out.rewrite.clone_from(&root.rewrite);
    }
    if out.direct_response.is_none() {
        out.direct_response.clone_from(&root.direct_response);
    }
    if out.timeout.is_none() {
        out.timeout = root.timeout;
    }
    if out.retries.is_none() {
        out.retries.clone_from(&root.retries);
    }
    if out.fault.is_none() {
        out.fault.clone_from(&root.fault);
    }
    if out.mirror.is_none() {
        out.mirror.clone_from(&root.mirror);
    }
    if out.mirror_percent.is_none() {
        out.mirror_percent = root.mirror_percent;
    }
    if out.mirror_percentage.is_none() {
        out.mirror_percentage = root.mirror_percentage;
    }
    if out.cors_policy.is_none() {
        out.cors_policy.clone_from(&root.cors_policy);
    }
    if out.mirrors.is_empty() {
        out.mirrors.clone_from(&root.mirrors);
    }
    if out.headers.is_none() {
        out.headers.clone_from(&root.headers);
    }
    out
}

#[cfg(test)]
#[path = "table_tests.rs"]
mod tests;
