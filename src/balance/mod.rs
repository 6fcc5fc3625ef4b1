//! Load balancing: DestinationRule `trafficPolicy.loadBalancer`, as Envoy does it.
//!
//! A [`Balancer`] is built from the current config of a destination (host, subset, port); its
//! state, [`LbState`], lives in the destination's cluster state and survives reloads. For each
//! request (and each retry) the caller asks [`Balancer::pick`] for an endpoint of the
//! destination's current endpoint set:
//!
//! | `loadBalancer` | behaviour (Envoy) |
//! |---|---|
//! | `simple: ROUND_ROBIN` | weighted round robin (EDF order over `weight`s) |
//! | `simple: LEAST_REQUEST`, `LEAST_CONN`, `UNSPECIFIED`, absent | power of two choices: two random endpoints (by weight), the one with fewer requests in flight per unit of weight |
//! | `simple: RANDOM` | a random endpoint, by weight |
//! | `simple: PASSTHROUGH` | [`Pick::Passthrough`]: no balancing, the original destination |
//! | `consistentHash` | a ring (`ringHash`, default, `minimumRingSize` 1024) or a Maglev table (`maglev`, `tableSize` 65537) over the hash of a request property; no property → random |
//! | `backendUtilization` | not implemented: LEAST_REQUEST |
//!
//! Every algorithm honours endpoint `weight` (WorkloadEntry `weight`). `warmup` /
//! `warmupDurationSecs` ramp up the weight of endpoints that joined the set less than the
//! window ago (ROUND_ROBIN and LEAST_REQUEST only, as Istio documents). `localityLbSetting`
//! applies when the caller's own locality is known: `distribute` reweights localities;
//! otherwise, when `outlierDetection` is set, endpoints get failover priorities (same
//! subzone, zone, region, `failover` region, the rest) and traffic spills to the next
//! priority as the healthy share of one drops (Envoy's 1.4 overprovisioning factor).
//!
//! Exclusions ([`PickContext`]): endpoints `ejected` by outlier detection are never picked
//! (unless the detector reports panic mode); endpoints to `avoid` (previous tries of a retry)
//! are picked only when nothing else is left.

mod hash;
mod locality;
mod state;
#[cfg(test)]
mod tests;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::HeaderValue;

use crate::config::destination_rule::{
    ConsistentHashLb, HashAlgorithm, HashKey, HttpCookie, LbPolicy, LoadBalancerSettings, SimpleLb,
};
use crate::registry::Endpoint;
use crate::snapshot::ClusterPolicy;

pub use hash::{DEFAULT_MAGLEV_TABLE_SIZE, DEFAULT_MIN_RING_SIZE};
use locality::LocalityPlan;
pub use state::{InFlightGuard, LbState};
use state::{Table, TableSpec, Topology, TopologyKey, golden};

/// Rejection-sampling attempts before falling back to scanning the candidates.
const FAST_TRIES: usize = 8;

/// The answer of [`Balancer::pick`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pick {
    /// Send to `endpoints[index]`.
    Endpoint {
        /// Index into the endpoint slice given to `pick`.
        index: usize,
        /// `consistentHash.httpCookie` with a `ttl`, when the request had no such cookie: the
        /// cookie the balancer generated and hashed; set it on the response (Envoy does).
        set_cookie: Option<SetCookie>,
    },
    /// No endpoint can take the request: the set is empty, or every endpoint is ejected and
    /// panic mode is off (Envoy: 503 `no healthy upstream`, flag UH).
    None,
    /// `simple: PASSTHROUGH`: no load balancing; forward to the request's original
    /// destination address.
    Passthrough,
}

impl Pick {
    /// The endpoint index, for [`Pick::Endpoint`].
    pub fn index(&self) -> Option<usize> {
        match self {
            Pick::Endpoint { index, .. } => Some(*index),
            _ => None,
        }
    }
}

/// A cookie to set on the response (`consistentHash.httpCookie` with `ttl`, absent from the
/// request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetCookie {
    /// The generated value (16 hex digits).
    pub value: String,
    /// The whole `set-cookie` header value, as Envoy writes it: `name="value"`, then
    /// `; Max-Age=<ttl secs>` unless the ttl is 0 (a session cookie), `; Path=<path>` when set,
    /// the `attributes`, and `; HttpOnly`.
    pub header: HeaderValue,
}

/// What a pick needs to know about the request and the destination's health.
#[derive(Clone, Copy)]
pub struct PickContext<'a> {
    /// Now, for `warmup` slow start.
    pub now: Instant,
    /// The request headers (`httpHeaderName`, `httpCookie`).
    pub headers: Option<&'a http::HeaderMap>,
    /// The request's raw query string, without `?` (`httpQueryParameterName`).
    pub query: Option<&'a str>,
    /// The caller's IP address (`useSourceIp`).
    pub source_ip: Option<IpAddr>,
    /// Endpoints to avoid when another will do: the endpoints previous tries went to
    /// (`retryIgnorePreviousHosts`).
    pub avoid: Option<&'a (dyn Fn(&SocketAddr) -> bool + Sync)>,
    /// Endpoints ejected by outlier detection: never picked unless `panic`.
    pub ejected: Option<&'a (dyn Fn(&SocketAddr) -> bool + Sync)>,
    /// Panic mode (healthy share below `outlierDetection.minHealthPercent`): every endpoint
    /// counts as healthy.
    pub panic: bool,
    /// For a retry with `retryRemoteLocalities: true`: the endpoints earlier tries went to.
    /// Their locality priority levels are left out of this pick (Envoy's
    /// `previous_priorities` retry predicate, which Istio configures for that field), so the
    /// retry goes to the next locality; when that leaves no level, all levels count again.
    pub tried_remote: Option<&'a (dyn Fn(&SocketAddr) -> bool + Sync)>,
}

impl std::fmt::Debug for PickContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PickContext")
            .field("now", &self.now)
            .field("query", &self.query)
            .field("source_ip", &self.source_ip)
            .field("avoid", &self.avoid.is_some())
            .field("ejected", &self.ejected.is_some())
            .field("panic", &self.panic)
            .field("tried_remote", &self.tried_remote.is_some())
            .finish_non_exhaustive()
    }
}

impl<'a> PickContext<'a> {
    /// A context with nothing but the time.
    pub fn new(now: Instant) -> Self {
        PickContext {
            now,
            headers: None,
            query: None,
            source_ip: None,
            avoid: None,
            ejected: None,
            panic: false,
            tried_remote: None,
        }
    }

    /// For a retry under `retryRemoteLocalities`: `tried` says which endpoints earlier tries
    /// went to; their locality levels are skipped when another level can serve.
    pub fn tried_remote(mut self, tried: &'a (dyn Fn(&SocketAddr) -> bool + Sync)) -> Self {
        self.tried_remote = Some(tried);
        self
    }

    /// With the request's headers and query (from its URI).
    pub fn request<B>(mut self, req: &'a http::Request<B>) -> Self {
        self.headers = Some(req.headers());
        self.query = req.uri().query();
        self
    }

    /// With these headers.
    pub fn headers(mut self, headers: &'a http::HeaderMap) -> Self {
        self.headers = Some(headers);
        self
    }

    /// With this raw query string.
    pub fn query(mut self, query: &'a str) -> Self {
        self.query = Some(query);
        self
    }

    /// With the caller's IP address.
    pub fn source_ip(mut self, ip: Option<IpAddr>) -> Self {
        self.source_ip = ip;
        self
    }

    /// Avoid these endpoints when others are available (previous tries).
    pub fn avoid(mut self, avoid: &'a (dyn Fn(&SocketAddr) -> bool + Sync)) -> Self {
        self.avoid = Some(avoid);
        self
    }

    /// Never pick these endpoints (ejected), unless `panic`.
    pub fn ejected(
        mut self,
        ejected: &'a (dyn Fn(&SocketAddr) -> bool + Sync),
        panic: bool,
    ) -> Self {
        self.ejected = Some(ejected);
        self.panic = panic;
        self
    }
}

/// The algorithm of a [`Balancer`].
#[derive(Debug, Clone, PartialEq)]
pub enum Algorithm {
    /// `simple: ROUND_ROBIN`.
    RoundRobin,
    /// `simple: LEAST_REQUEST` (and `LEAST_CONN`, `UNSPECIFIED`, absent: Istio's default):
    /// power of two choices.
    LeastRequest,
    /// `simple: RANDOM`.
    Random,
    /// `simple: PASSTHROUGH`.
    Passthrough,
    /// `consistentHash`.
    ConsistentHash(HashPolicy),
}

/// `consistentHash`: what to hash and which table to look it up in.
#[derive(Debug, Clone, PartialEq)]
pub struct HashPolicy {
    /// The `hash_key` oneof; `None` hashes nothing (every request picks at random).
    pub key: Option<HashKey>,
    /// The table: ring (`ringHash.minimumRingSize`, or the deprecated top-level
    /// `minimumRingSize`; default 1024) or Maglev (`maglev.tableSize`, default 65537).
    table: TableSpec,
    /// `httpHeaderName`, parsed once (`None`: not a valid header name, never present).
    header: Option<http::HeaderName>,
}

impl HashPolicy {
    fn new(c: &ConsistentHashLb) -> Self {
        let or = |v: u64, d: u64| if v == 0 { d } else { v };
        let table = match &c.hash_algorithm {
            Some(HashAlgorithm::Maglev(m)) => {
                TableSpec::Maglev(or(m.table_size, DEFAULT_MAGLEV_TABLE_SIZE))
            }
            Some(HashAlgorithm::RingHash(r)) => {
                TableSpec::Ring(or(r.minimum_ring_size, DEFAULT_MIN_RING_SIZE))
            }
            None => TableSpec::Ring(or(c.minimum_ring_size, DEFAULT_MIN_RING_SIZE)),
        };
        let header = match &c.hash_key {
            Some(HashKey::HttpHeaderName(name)) => http::HeaderName::try_from(name.as_str()).ok(),
            _ => None,
        };
        HashPolicy {
            key: c.hash_key.clone(),
            table,
            header,
        }
    }

    /// Whether the table is Maglev (otherwise a ring).
    pub fn is_maglev(&self) -> bool {
        matches!(self.table, TableSpec::Maglev(_))
    }

    /// The request's hash, and the cookie to set when one was generated.
    fn hash(&self, state: &LbState, ctx: &PickContext<'_>) -> (Option<u64>, Option<SetCookie>) {
        let h = |bytes: &[u8]| Some(hash::hash64(0, bytes));
        match &self.key {
            None | Some(HashKey::UseSourceIp(false)) => (None, None),
            Some(HashKey::HttpHeaderName(_)) => {
                let (Some(headers), Some(name)) = (ctx.headers, &self.header) else {
                    return (None, None);
                };
                let mut values = headers.get_all(name).iter();
                match (values.next(), values.next()) {
                    (None, _) => (None, None),
                    (Some(v), None) => (h(v.as_bytes()), None),
                    (Some(_), Some(_)) => {
                        // Several values: hash them sorted, joined (order-independent).
                        let mut all: Vec<&[u8]> = headers
                            .get_all(name.as_str())
                            .iter()
                            .map(|v| v.as_bytes())
                            .collect();
                        all.sort_unstable();
                        (h(&all.join(&b","[..])), None)
                    }
                }
            }
            Some(HashKey::HttpQueryParameterName(name)) => (
                ctx.query
                    .and_then(|q| hash::query_value(q, name))
                    .and_then(|v| h(v.as_bytes())),
                None,
            ),
            Some(HashKey::UseSourceIp(true)) => (
                ctx.source_ip.and_then(|ip| match ip {
                    IpAddr::V4(v4) => h(&v4.octets()),
                    IpAddr::V6(v6) => h(&v6.octets()),
                }),
                None,
            ),
            Some(HashKey::HttpCookie(cookie)) => {
                if let Some(v) = ctx
                    .headers
                    .and_then(|hs| hash::cookie_value(hs, &cookie.name))
                {
                    return (h(v.as_bytes()), None);
                }
                match cookie.ttl {
                    None => (None, None),
                    Some(ttl) => {
                        let value = format!("{:016x}", state.random());
                        let set = set_cookie(cookie, ttl, &value);
                        (h(value.as_bytes()), set)
                    }
                }
            }
        }
    }
}

/// The `set-cookie` of a generated hash cookie (Envoy's `makeSetCookieValue`).
fn set_cookie(cookie: &HttpCookie, ttl: Duration, value: &str) -> Option<SetCookie> {
    let mut s = format!("{}=\"{}\"", cookie.name, value);
    if !ttl.is_zero() {
        s.push_str(&format!("; Max-Age={}", ttl.as_secs()));
    }
    if !cookie.path.is_empty() {
        s.push_str(&format!("; Path={}", cookie.path));
    }
    for a in &cookie.attributes {
        if a.value.is_empty() {
            s.push_str(&format!("; {}", a.name));
        } else {
            s.push_str(&format!("; {}={}", a.name, a.value));
        }
    }
    s.push_str("; HttpOnly");
    // A name or path with characters a header cannot carry: no cookie (the pick still
    // happens, without affinity for the next request).
    let header = HeaderValue::from_str(&s).ok()?;
    Some(SetCookie {
        value: value.to_owned(),
        header,
    })
}

/// `warmup` (or the deprecated `warmupDurationSecs`): Envoy's slow start.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Warmup {
    window: Duration,
    /// `minimumPercent` / 100 (default 0.1).
    min: f64,
    /// `aggression` (default 1.0).
    aggression: f64,
}

impl Warmup {
    fn new(lb: &LoadBalancerSettings) -> Option<Warmup> {
        let (window, min, aggression) = match (&lb.warmup, lb.warmup_duration_secs) {
            (Some(w), _) => (w.duration?, w.minimum_percent, w.aggression),
            (None, Some(d)) => (d, None, None),
            (None, None) => return None,
        };
        if window.is_zero() {
            return None;
        }
        let aggression = aggression
            .filter(|a| *a > 0.0 && a.is_finite())
            .unwrap_or(1.0);
        let min = min.map_or(0.1, |p| (p / 100.0).clamp(0.0, 1.0));
        Some(Warmup {
            window,
            min,
            aggression,
        })
    }

    /// The weight factor of an endpoint that joined at `since`: Envoy's
    /// `max(min, (age / window)^(1 / aggression))` inside the window, 1 after it.
    fn factor(&self, since: Option<Instant>, now: Instant) -> f64 {
        let Some(since) = since else { return 1.0 };
        let age = now.saturating_duration_since(since);
        if age >= self.window {
            return 1.0;
        }
        let t = age.max(Duration::from_millis(1)).as_secs_f64() / self.window.as_secs_f64();
        let t = if self.aggression == 1.0 {
            t
        } else {
            t.powf(1.0 / self.aggression)
        };
        t.max(self.min)
    }
}

/// A load balancer for one destination under one config: built from the destination's
/// `loadBalancer` settings (plus `outlierDetection` presence and the caller's locality, for
/// locality failover), used with the destination's [`LbState`].
///
/// Cheap to keep per cluster in a snapshot; building one does no work proportional to the
/// endpoints (tables are built lazily by the state, once per endpoint set).
#[derive(Debug, Clone, PartialEq)]
pub struct Balancer {
    algorithm: Algorithm,
    warmup: Option<Warmup>,
    key: TopologyKey,
}

impl Default for Balancer {
    /// Istio's default: LEAST_REQUEST, no warmup, no locality.
    fn default() -> Self {
        Balancer::new(None)
    }
}

impl Balancer {
    /// The balancer of `loadBalancer` settings (`None`: Istio's default, LEAST_REQUEST),
    /// without locality awareness.
    pub fn new(lb: Option<&LoadBalancerSettings>) -> Self {
        let algorithm = match lb.and_then(|l| l.lb_policy.as_ref()) {
            Some(LbPolicy::Simple(SimpleLb::RoundRobin)) => Algorithm::RoundRobin,
            Some(LbPolicy::Simple(SimpleLb::Random)) => Algorithm::Random,
            Some(LbPolicy::Simple(SimpleLb::Passthrough)) => Algorithm::Passthrough,
            Some(LbPolicy::ConsistentHash(c)) => Algorithm::ConsistentHash(HashPolicy::new(c)),
            Some(LbPolicy::Simple(
                SimpleLb::LeastRequest | SimpleLb::LeastConn | SimpleLb::Unspecified,
            ))
            | Some(LbPolicy::BackendUtilization(_))
            | None => Algorithm::LeastRequest,
        };
        // Istio: slow start applies to ROUND_ROBIN and LEAST_REQUEST only.
        let warmup = match algorithm {
            Algorithm::RoundRobin | Algorithm::LeastRequest => lb.and_then(Warmup::new),
            _ => None,
        };
        let table = match &algorithm {
            Algorithm::ConsistentHash(h) => Some(h.table),
            _ => None,
        };
        Balancer {
            algorithm,
            warmup,
            key: TopologyKey {
                table,
                locality: None,
            },
        }
    }

    /// The balancer of a destination's merged policy, seen from a workload in locality
    /// `local` (`region/zone/subzone`; `None` = unknown, no locality load balancing).
    ///
    /// Locality: `localityLbSetting.distribute` applies when an entry's `from` matches
    /// `local`; otherwise failover priorities apply when `policy.outlier_detection` is set
    /// (Istio's mesh default `localityLbSetting: {enabled: true}` when the rule has none), with
    /// the rule's `failover` entries; `enabled: false` turns both off.
    pub fn for_policy(policy: &ClusterPolicy, local: Option<&str>) -> Self {
        let lb = policy.load_balancer.as_ref();
        let mut b = Balancer::new(lb);
        if !matches!(b.algorithm, Algorithm::Passthrough) {
            b.key.locality = LocalityPlan::new(
                lb.and_then(|l| l.locality_lb_setting.as_ref()),
                policy.outlier_detection.is_some(),
                local,
            )
            .map(Arc::new);
        }
        b
    }

    /// The algorithm.
    pub fn algorithm(&self) -> &Algorithm {
        &self.algorithm
    }

    /// Whether this is `consistentHash` (retries then keep the previous host by default:
    /// `retryIgnorePreviousHosts` defaults off).
    pub fn is_consistent_hash(&self) -> bool {
        matches!(self.algorithm, Algorithm::ConsistentHash(_))
    }

    /// Chooses an endpoint of `endpoints` (the destination's current set; pass the same `Arc`
    /// each time: the state's tables are rebuilt when it changes) for a request described by
    /// `ctx`. Never panics; O(1) expected for every algorithm when nothing is excluded, no
    /// endpoint is warming up and locality is off; O(n) otherwise.
    pub fn pick(
        &self,
        state: &LbState,
        endpoints: &Arc<[Endpoint]>,
        ctx: &PickContext<'_>,
    ) -> Pick {
        self.pick_in(state, endpoints, ctx, false).0
    }

    /// [`pick`](Self::pick), and for a [`Pick::Endpoint`] the request marked in flight to it
    /// ([`LbState::start`] at `ctx.now`) from the topology the pick used: one look-up of
    /// the state for both.
    pub(crate) fn pick_started(
        &self,
        state: &LbState,
        endpoints: &Arc<[Endpoint]>,
        ctx: &PickContext<'_>,
    ) -> (Pick, Option<InFlightGuard>) {
        self.pick_in(state, endpoints, ctx, true)
    }

    fn pick_in(
        &self,
        state: &LbState,
        endpoints: &Arc<[Endpoint]>,
        ctx: &PickContext<'_>,
        start: bool,
    ) -> (Pick, Option<InFlightGuard>) {
        if matches!(self.algorithm, Algorithm::Passthrough) {
            return (Pick::Passthrough, None);
        }
        if endpoints.is_empty() {
            return (Pick::None, None);
        }
        let topo_ref = state.topology(endpoints, &self.key, ctx.now);
        let Some(topo) = topo_ref.get() else {
            return (Pick::None, None);
        };
        let pick = self.pick_from(state, topo, ctx);
        let started = match (&pick, start) {
            (Pick::Endpoint { index, .. }, true) => topo
                .endpoints
                .get(*index)
                .map(|e| state::start_in(topo, e.addr, ctx.now)),
            _ => None,
        };
        (pick, started)
    }

    /// The pick among `topo`'s endpoints.
    fn pick_from(&self, state: &LbState, topo: &Topology, ctx: &PickContext<'_>) -> Pick {
        let (hash, set_cookie) = match &self.algorithm {
            Algorithm::ConsistentHash(h) => h.hash(state, ctx),
            _ => (None, None),
        };
        let addr = |i: usize| topo.endpoints.get(i).map(|e| &e.addr);
        let ejected = |i: usize| !ctx.panic && ctx.ejected.is_some_and(|f| addr(i).is_some_and(f));
        let level = match &topo.locality {
            None => None,
            Some(view) => {
                // retryRemoteLocalities: the levels earlier tries went to sit this pick out.
                let skipped: Vec<u8> = match ctx.tried_remote {
                    Some(tried) => topo
                        .endpoints
                        .iter()
                        .zip(view.priority.iter())
                        .filter(|(e, _)| tried(&e.addr))
                        .filter_map(|(_, p)| *p)
                        .collect(),
                    None => Vec::new(),
                };
                let roll = state.below(100);
                let elsewhere = (!skipped.is_empty())
                    .then(|| {
                        view.choose_level(
                            |i| {
                                !ejected(i)
                                    && view
                                        .priority
                                        .get(i)
                                        .copied()
                                        .flatten()
                                        .is_none_or(|p| !skipped.contains(&p))
                            },
                            roll,
                        )
                    })
                    .flatten();
                match elsewhere.or_else(|| view.choose_level(|i| !ejected(i), roll)) {
                    Some(l) => Some((view, l)),
                    None => return Pick::None,
                }
            }
        };
        // Nothing to exclude (the common case): the algorithm runs without asking about each
        // endpoint, with the same draws and the same answer as if every endpoint were let
        // through.
        if level.is_none() && (ctx.panic || ctx.ejected.is_none()) && ctx.avoid.is_none() {
            if hash.is_none() && topo.endpoints.len() == 1 {
                // One endpoint: it, after the draws the algorithm would make (so that the
                // choices that follow stay those of the general path).
                match self.algorithm {
                    Algorithm::RoundRobin => {
                        state.next_slot();
                    }
                    Algorithm::LeastRequest => {
                        state.random();
                        state.random();
                    }
                    Algorithm::Random | Algorithm::ConsistentHash(_) => {
                        state.random();
                    }
                    Algorithm::Passthrough => return Pick::Passthrough,
                }
                return Pick::Endpoint {
                    index: 0,
                    set_cookie,
                };
            }
            return match self.choose(state, topo, ctx, hash, None) {
                Some(index) => Pick::Endpoint { index, set_cookie },
                None => Pick::None,
            };
        }
        let allowed = |i: usize| {
            !ejected(i)
                && level.is_none_or(|(view, l)| view.priority.get(i).copied().flatten() == Some(l))
        };
        let fresh = |i: usize| allowed(i) && !ctx.avoid.is_some_and(|f| addr(i).is_some_and(f));
        let choice = self
            .choose(state, topo, ctx, hash, Some(&fresh))
            .or_else(|| {
                ctx.avoid
                    .is_some()
                    .then(|| self.choose(state, topo, ctx, hash, Some(&allowed)))
                    .flatten()
            });
        match choice {
            Some(index) => Pick::Endpoint { index, set_cookie },
            None => Pick::None,
        }
    }

    /// The endpoint the algorithm chooses among those `accept` lets through (`None`: all of
    /// them).
    fn choose(
        &self,
        state: &LbState,
        topo: &Topology,
        ctx: &PickContext<'_>,
        hash: Option<u64>,
        accept: Option<&dyn Fn(usize) -> bool>,
    ) -> Option<usize> {
        let all = |_: usize| true;
        let accept_all: &dyn Fn(usize) -> bool = &all;
        if let Some(h) = hash {
            let accept = accept.unwrap_or(accept_all);
            return match &topo.table {
                Some(Table::Ring(r)) => r.find(h, accept),
                Some(Table::Maglev(m)) => m.find(h, accept),
                None => None,
            };
        }
        let warming = self.warmup.is_some_and(|w| {
            topo.newest
                .is_some_and(|t| ctx.now.saturating_duration_since(t) < w.window)
        });
        let reweighted = warming || topo.locality.as_ref().is_some_and(|v| v.weighted);
        let weight = |i: usize| -> f64 {
            let base = topo.endpoints.get(i).map_or(1, |e| e.weight.max(1));
            let mut w = f64::from(base);
            if let Some(v) = &topo.locality {
                w *= v.scale.get(i).copied().unwrap_or(0.0);
            }
            if warming && let Some(wu) = &self.warmup {
                w *= wu.factor(topo.first_seen.get(i).copied().flatten(), ctx.now);
            }
            w
        };
        match self.algorithm {
            Algorithm::RoundRobin => {
                if !reweighted {
                    let Some(accept) = accept else {
                        return Some(topo.rr_slot(state.next_slot()));
                    };
                    for _ in 0..FAST_TRIES {
                        let i = topo.rr_slot(state.next_slot());
                        if accept(i) {
                            return Some(i);
                        }
                    }
                }
                let c = Candidates::collect(topo, accept.unwrap_or(accept_all), &weight);
                c.round_robin(state.next_slot())
            }
            Algorithm::LeastRequest => {
                let (a, b) = if reweighted {
                    let c = Candidates::collect(topo, accept.unwrap_or(accept_all), &weight);
                    (c.random(state)?, c.random(state)?)
                } else {
                    match (
                        fast_random(state, topo, accept),
                        fast_random(state, topo, accept),
                    ) {
                        (Some(a), Some(b)) => (a, b),
                        _ => {
                            let c =
                                Candidates::collect(topo, accept.unwrap_or(accept_all), &weight);
                            (c.random(state)?, c.random(state)?)
                        }
                    }
                };
                if a == b {
                    return Some(a);
                }
                // Fewer requests in flight per unit of weight; ties to the first.
                let cost = |i: usize| f64::from(topo.load(i)) / weight(i).max(f64::MIN_POSITIVE);
                Some(if cost(b) < cost(a) { b } else { a })
            }
            Algorithm::Random | Algorithm::ConsistentHash(_) => {
                if !reweighted && let Some(i) = fast_random(state, topo, accept) {
                    return Some(i);
                }
                Candidates::collect(topo, accept.unwrap_or(accept_all), &weight).random(state)
            }
            Algorithm::Passthrough => None,
        }
    }
}

/// A weighted random endpoint of the whole set (static weights), retried while `accept`
/// refuses it, up to [`FAST_TRIES`] times (`None`: every endpoint is accepted).
fn fast_random(
    state: &LbState,
    topo: &Topology,
    accept: Option<&dyn Fn(usize) -> bool>,
) -> Option<usize> {
    let n = topo.endpoints.len() as u64;
    let draw = || {
        if topo.uniform {
            state.below(n) as usize
        } else {
            topo.at_weight(state.below(topo.total_weight()))
        }
    };
    let Some(accept) = accept else {
        return Some(draw());
    };
    for _ in 0..FAST_TRIES {
        let i = draw();
        if accept(i) {
            return Some(i);
        }
    }
    None
}

/// The acceptable endpoints with their effective weights (the slow path).
struct Candidates {
    idx: Vec<usize>,
    cumulative: Vec<f64>,
    uniform: bool,
}

impl Candidates {
    fn collect(
        topo: &Topology,
        accept: &dyn Fn(usize) -> bool,
        weight: &dyn Fn(usize) -> f64,
    ) -> Self {
        let mut idx = Vec::new();
        let mut cumulative = Vec::new();
        let mut sum = 0.0;
        let mut first = None;
        let mut uniform = true;
        for i in 0..topo.endpoints.len() {
            if !accept(i) {
                continue;
            }
            let w = weight(i);
            if w <= 0.0 || !w.is_finite() {
                continue;
            }
            match first {
                None => first = Some(w),
                Some(f) => uniform &= f == w,
            }
            sum += w;
            idx.push(i);
            cumulative.push(sum);
        }
        Candidates {
            idx,
            cumulative,
            uniform,
        }
    }

    /// The candidate at fraction `x` (`0..1`) of the cumulative weight.
    fn at(&self, x: f64) -> Option<usize> {
        let total = *self.cumulative.last()?;
        let r = x * total;
        let k = self.cumulative.partition_point(|c| *c <= r);
        self.idx.get(k.min(self.idx.len() - 1)).copied()
    }

    fn random(&self, state: &LbState) -> Option<usize> {
        if self.uniform {
            return self
                .idx
                .get(state.below(self.idx.len() as u64) as usize)
                .copied();
        }
        self.at((state.random() >> 11) as f64 / (1u64 << 53) as f64)
    }

    fn round_robin(&self, slot: u64) -> Option<usize> {
        if self.uniform {
            let n = self.idx.len() as u64;
            return self.idx.get((slot % n.max(1)) as usize).copied();
        }
        self.at(golden(slot, 1 << 53) as f64 / (1u64 << 53) as f64)
    }
}
