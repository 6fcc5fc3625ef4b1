//! [`LbState`]: the per-destination load-balancing state that survives reloads.

use std::collections::BinaryHeap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use arc_swap::ArcSwapOption;

use super::hash::{Maglev, Ring};
use super::locality::{LocalityPlan, LocalityView};
use crate::dice::Dice;
use crate::registry::Endpoint;

/// Which consistent-hash table a balancer needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TableSpec {
    /// A ring of at least this many entries.
    Ring(u64),
    /// A Maglev table of this many slots.
    Maglev(u64),
}

/// What the cached [`Topology`] depends on besides the endpoint set.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TopologyKey {
    pub(crate) table: Option<TableSpec>,
    pub(crate) locality: Option<Arc<LocalityPlan>>,
}

impl TopologyKey {
    fn same(&self, other: &TopologyKey) -> bool {
        self.table == other.table
            && match (&self.locality, &other.locality) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
                _ => false,
            }
    }
}

/// A consistent-hash table.
#[derive(Debug)]
pub(crate) enum Table {
    Ring(Ring),
    Maglev(Maglev),
}

/// The round-robin schedule of one endpoint set with its static weights.
#[derive(Debug)]
pub(crate) enum Schedule {
    /// Equal weights: slot `c` is endpoint `c mod n`.
    Uniform,
    /// One cycle of Envoy-style EDF over the weights (each endpoint appears `weight` times,
    /// interleaved), when the weights sum to at most 2^16.
    Sequence(Vec<u32>),
    /// Large weight sums: slot `c` is the endpoint at the golden-ratio point of the cumulative
    /// weights (well spread, weighted, deterministic).
    Spread,
}

/// Everything derived from one endpoint set (and the balancer's table and locality), cached in
/// [`LbState`] and rebuilt only when the `Arc<[Endpoint]>` or those settings change.
#[derive(Debug)]
pub(crate) struct Topology {
    pub(crate) endpoints: Arc<[Endpoint]>,
    pub(crate) key: TopologyKey,
    pub(crate) index: foldhash::HashMap<SocketAddr, usize>,
    pub(crate) in_flight: Vec<Arc<EndpointLoad>>,
    /// When each endpoint joined; `None` for endpoints of the first set the state saw (they
    /// were there before us: no slow start).
    pub(crate) first_seen: Vec<Option<Instant>>,
    /// The latest of `first_seen`.
    pub(crate) newest: Option<Instant>,
    /// Cumulative weights (`cumulative[i]` = sum of weights of endpoints `0..=i`).
    pub(crate) cumulative: Vec<u64>,
    pub(crate) uniform: bool,
    pub(crate) schedule: Schedule,
    pub(crate) table: Option<Table>,
    pub(crate) locality: Option<LocalityView>,
}

const MAX_SEQUENCE: u64 = 1 << 16;

/// Up to this many endpoints, [`Topology::position`] compares addresses instead of hashing.
const SCAN_MAX: usize = 8;

impl Topology {
    fn build(
        endpoints: &Arc<[Endpoint]>,
        key: TopologyKey,
        prev: Option<&Topology>,
        now: Instant,
    ) -> Topology {
        let n = endpoints.len();
        let mut index =
            foldhash::HashMap::with_capacity_and_hasher(n, foldhash::fast::RandomState::default());
        let mut in_flight = Vec::with_capacity(n);
        let mut first_seen = Vec::with_capacity(n);
        for (i, ep) in endpoints.iter().enumerate() {
            index.entry(ep.addr).or_insert(i);
            let old = prev.and_then(|p| p.index.get(&ep.addr).map(|j| (p, *j)));
            in_flight.push(
                old.and_then(|(p, j)| p.in_flight.get(j).cloned())
                    .unwrap_or_default(),
            );
            first_seen.push(match (prev, old) {
                (None, _) => None,
                (Some(_), Some((p, j))) => p.first_seen.get(j).copied().flatten(),
                (Some(_), None) => Some(now),
            });
        }
        let newest = first_seen.iter().flatten().max().copied();
        let mut cumulative = Vec::with_capacity(n);
        let mut sum = 0u64;
        for ep in endpoints.iter() {
            sum += u64::from(ep.weight.max(1));
            cumulative.push(sum);
        }
        let first_w = endpoints.first().map(|e| e.weight.max(1));
        let uniform = endpoints.iter().all(|e| Some(e.weight.max(1)) == first_w);
        let schedule = if uniform {
            Schedule::Uniform
        } else if sum <= MAX_SEQUENCE {
            Schedule::Sequence(edf_sequence(endpoints))
        } else {
            Schedule::Spread
        };
        let table = key.table.map(|t| match t {
            TableSpec::Ring(min) => Table::Ring(Ring::build(endpoints, min)),
            TableSpec::Maglev(size) => Table::Maglev(Maglev::build(endpoints, size)),
        });
        let locality = key.locality.as_ref().map(|plan| plan.view(endpoints));
        Topology {
            endpoints: endpoints.clone(),
            key,
            index,
            in_flight,
            first_seen,
            newest,
            cumulative,
            uniform,
            schedule,
            table,
            locality,
        }
    }

    /// Total static weight.
    pub(crate) fn total_weight(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(0)
    }

    /// The endpoint at cumulative-weight point `r` (`0..total_weight`).
    pub(crate) fn at_weight(&self, r: u64) -> usize {
        self.cumulative.partition_point(|c| *c <= r)
    }

    /// The endpoint of round-robin slot `c`.
    pub(crate) fn rr_slot(&self, c: u64) -> usize {
        let n = self.endpoints.len() as u64;
        match &self.schedule {
            Schedule::Uniform => (c % n.max(1)) as usize,
            Schedule::Sequence(seq) => seq
                .get((c % (seq.len() as u64).max(1)) as usize)
                .map_or(0, |i| *i as usize),
            Schedule::Spread => self.at_weight(golden(c, self.total_weight())),
        }
    }

    /// The index of `addr` (its first endpoint): a scan of a small set, a hash lookup of a
    /// larger one.
    pub(crate) fn position(&self, addr: &SocketAddr) -> Option<usize> {
        if self.endpoints.len() <= SCAN_MAX {
            self.endpoints.iter().position(|e| e.addr == *addr)
        } else {
            self.index.get(addr).copied()
        }
    }

    /// In-flight requests of endpoint `i`.
    pub(crate) fn load(&self, i: usize) -> u32 {
        self.in_flight
            .get(i)
            .map_or(0, |c| c.in_flight.load(Ordering::Relaxed))
    }
}

/// [`LbState::start_at`] with the state's topology at hand.
pub(crate) fn start_in(topo: &Topology, addr: SocketAddr, now: Instant) -> InFlightGuard {
    let counter = topo
        .position(&addr)
        .and_then(|i| topo.in_flight.get(i).cloned())
        .map(|c| {
            c.in_flight.fetch_add(1, Ordering::Relaxed);
            (c, now)
        });
    InFlightGuard { counter }
}

/// The golden-ratio point of slot `c` in `0..total` (a low-discrepancy sequence).
pub(crate) fn golden(c: u64, total: u64) -> u64 {
    let frac = c.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((u128::from(frac) * u128::from(total)) >> 64) as u64
}

/// One cycle of earliest-deadline-first over the weights: endpoint `i`'s `k`-th turn has
/// deadline `k / w_i`; the `sum(w)` earliest deadlines (exactly those `≤ 1`) in order, ties to
/// the lower index.
fn edf_sequence(endpoints: &[Endpoint]) -> Vec<u32> {
    #[derive(PartialEq, Eq)]
    struct Turn {
        k: u64,
        w: u64,
        i: u32,
    }
    impl Ord for Turn {
        fn cmp(&self, o: &Self) -> std::cmp::Ordering {
            // Min-heap on k/w, then index: reverse the natural order.
            (u128::from(o.k) * u128::from(self.w))
                .cmp(&(u128::from(self.k) * u128::from(o.w)))
                .then(o.i.cmp(&self.i))
        }
    }
    impl PartialOrd for Turn {
        fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
            Some(self.cmp(o))
        }
    }
    let mut heap: BinaryHeap<Turn> = endpoints
        .iter()
        .enumerate()
        .map(|(i, e)| Turn {
            k: 1,
            w: u64::from(e.weight.max(1)),
            i: i as u32,
        })
        .collect();
    let mut seq = Vec::new();
    while let Some(t) = heap.pop() {
        seq.push(t.i);
        if t.k < t.w {
            heap.push(Turn { k: t.k + 1, ..t });
        }
    }
    seq
}

/// The load-balancing state of one destination (host, subset, port): the round-robin cursor,
/// per-endpoint in-flight counters (keyed by address, kept across endpoint-set changes), the
/// time each endpoint joined (for `warmup` slow start), and the ring / Maglev tables, cached
/// and rebuilt only when the endpoint set (`Arc::ptr_eq`) or the table settings change.
///
/// Lock-free: the cache is an `ArcSwap`, counters are atomics. Config is not stored here; the
/// [`Balancer`](super::Balancer) built from the current config is passed to each pick, so the
/// state survives reloads.
pub struct LbState {
    topology: ArcSwapOption<Topology>,
    cursor: AtomicU64,
    dice: Dice,
}

impl fmt::Debug for LbState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LbState")
            .field("cursor", &self.cursor.load(Ordering::Relaxed))
            .field(
                "endpoints",
                &self.topology.load().as_ref().map(|t| t.endpoints.len()),
            )
            .finish_non_exhaustive()
    }
}

impl Default for LbState {
    /// A state with a random seed from the OS.
    fn default() -> Self {
        LbState::with_seed(crate::dice::os_seed())
    }
}

impl LbState {
    /// A state whose random choices (RANDOM, LEAST_REQUEST's two candidates, generated
    /// cookies, locality levels) follow `seed`: tests get exact, repeatable picks.
    pub fn with_seed(seed: u64) -> Self {
        LbState {
            topology: ArcSwapOption::empty(),
            cursor: AtomicU64::new(0),
            dice: Dice::new(seed),
        }
    }

    /// Marks one request in flight to `addr` (LEAST_REQUEST compares these) until the guard is
    /// dropped. Hold it until the response body ends. An address the state does not know (no
    /// pick made on its endpoint set yet) gets a guard that counts nothing.
    pub fn start(&self, addr: SocketAddr) -> InFlightGuard {
        self.start_at(addr, Instant::now())
    }

    /// [`start`](Self::start) for a request picked at `now` (the clock read once per request).
    pub(crate) fn start_at(&self, addr: SocketAddr, now: Instant) -> InFlightGuard {
        match self.topology.load().as_ref() {
            Some(t) => start_in(t, addr, now),
            None => InFlightGuard { counter: None },
        }
    }

    /// The latency estimate of `addr`: an exponentially weighted moving average (α = 1/8, as
    /// TCP's smoothed RTT) of the lifetimes of its [`InFlightGuard`]s, i.e. from the pick to
    /// the end of the response body. `None` before the first response or for an address the
    /// state does not know. Carried across endpoint-set changes by address, like the
    /// in-flight counters.
    pub fn latency_ewma(&self, addr: SocketAddr) -> Option<std::time::Duration> {
        let t = self.topology.load();
        let i = t.as_ref()?.position(&addr)?;
        let nanos = t
            .as_ref()?
            .in_flight
            .get(i)?
            .ewma_nanos
            .load(Ordering::Relaxed);
        (nanos > 0).then(|| std::time::Duration::from_nanos(nanos))
    }

    /// Requests in flight to `addr` (guards alive).
    pub fn in_flight(&self, addr: SocketAddr) -> u32 {
        self.topology
            .load()
            .as_ref()
            .map_or(0, |t| t.position(&addr).map_or(0, |i| t.load(i)))
    }

    /// The next round-robin slot.
    pub(crate) fn next_slot(&self) -> u64 {
        self.cursor.fetch_add(1, Ordering::Relaxed)
    }

    /// A uniformly distributed `u64`.
    pub(crate) fn random(&self) -> u64 {
        self.dice.next_u64()
    }

    /// A uniformly distributed value in `0..n` (0 when `n == 0`).
    pub(crate) fn below(&self, n: u64) -> u64 {
        ((u128::from(self.random()) * u128::from(n)) >> 64) as u64
    }

    /// The topology of `endpoints` under `key`: the cached one (borrowed through an
    /// `arc-swap` guard, no reference-count traffic), or a new one built from it (carrying
    /// in-flight counters and join times over by address) and cached.
    pub(crate) fn topology(
        &self,
        endpoints: &Arc<[Endpoint]>,
        key: &TopologyKey,
        now: Instant,
    ) -> TopologyRef {
        let cur = self.topology.load();
        if cur
            .as_ref()
            .is_some_and(|t| Arc::ptr_eq(&t.endpoints, endpoints) && t.key.same(key))
        {
            return TopologyRef::Cached(cur);
        }
        let built = Arc::new(Topology::build(endpoints, key.clone(), cur.as_deref(), now));
        self.topology.store(Some(built.clone()));
        TopologyRef::Built(built)
    }
}

/// A [`Topology`] in use by a pick.
pub(crate) enum TopologyRef {
    /// The cached one (always `Some`: checked by [`LbState::topology`]).
    Cached(arc_swap::Guard<Option<Arc<Topology>>>),
    /// One just built.
    Built(Arc<Topology>),
}

impl TopologyRef {
    /// The topology.
    pub(crate) fn get(&self) -> Option<&Topology> {
        match self {
            TopologyRef::Cached(g) => g.as_deref(),
            TopologyRef::Built(t) => Some(t),
        }
    }
}

/// A request in flight to one endpoint, counted in its [`LbState`] until dropped.
#[derive(Debug)]
#[must_use = "the request counts as in flight only while the guard lives"]
pub struct InFlightGuard {
    /// The endpoint's counters and when the request started.
    counter: Option<(Arc<EndpointLoad>, Instant)>,
}

impl InFlightGuard {
    /// Ends the request at `now` (what dropping the guard does, with the caller's clock
    /// reading).
    pub(crate) fn end_at(mut self, now: Instant) {
        if let Some((c, started)) = self.counter.take() {
            c.in_flight.fetch_sub(1, Ordering::Relaxed);
            c.record_latency(now.saturating_duration_since(started));
        }
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if let Some((c, started)) = &self.counter {
            c.in_flight.fetch_sub(1, Ordering::Relaxed);
            c.record_latency(started.elapsed());
        }
    }
}

/// One endpoint's live load: requests in flight (LEAST_REQUEST compares them) and a latency
/// estimate (for admin views, [`LbState::latency_ewma`]).
#[derive(Debug, Default)]
pub(crate) struct EndpointLoad {
    pub(crate) in_flight: AtomicU32,
    /// EWMA of request lifetimes in nanoseconds; 0 = no sample yet.
    ewma_nanos: AtomicU64,
}

impl EndpointLoad {
    /// Folds one sample into the EWMA (α = 1/8; the first sample is taken as is). Racing
    /// updates may lose a sample, never corrupt the value: an estimate, not an account.
    fn record_latency(&self, sample: std::time::Duration) {
        let sample = u64::try_from(sample.as_nanos()).unwrap_or(u64::MAX).max(1);
        let old = self.ewma_nanos.load(Ordering::Relaxed);
        let new = if old == 0 {
            sample
        } else {
            // old + (sample - old) / 8, in signed arithmetic.
            let delta = (i128::from(sample) - i128::from(old)) / 8;
            u64::try_from(i128::from(old) + delta).unwrap_or(old).max(1)
        };
        self.ewma_nanos.store(new, Ordering::Relaxed);
    }
}
