//! Outlier detection: DestinationRule `trafficPolicy.outlierDetection`, passive only (as Envoy's
//! consecutive-error detectors; Istio configures no success-rate detection and no active
//! health checks).
//!
//! An [`OutlierDetector`] lives in a destination's state (per host, subset, port) and keeps,
//! per endpoint address, consecutive-error counters and the ejection state. Its caller (the
//! balance layer, after each try to one endpoint) reports what happened with
//! [`record`](OutlierDetector::record); the balancer asks
//! [`healthy_view`](OutlierDetector::healthy_view) which endpoints to leave out. Both take the
//! current config and `now`, so config can change on reload while the state stays; no
//! background task is needed: the `interval` sweeps are run lazily by whichever call comes
//! first after they fall due.
//!
//! # What counts as an error, and who counts it
//!
//! The caller records one [`Outcome`] per try, for the endpoint the try was sent to
//! ([`Outcome::of_result`] classifies a try's result):
//!
//! * [`Outcome::Response`]: the endpoint answered (a real upstream response, never one made by
//!   the mesh, which carries [`LAYER_HEADER`]). Any 5xx (or, when
//!   `outlierDetectionHttpErrorCodes` is set, a status in that list) adds to the
//!   `consecutive5xxErrors` count; 502, 503 and 504 also add to the `consecutiveGatewayErrors`
//!   count. Any other status resets both counts (a 5xx that is not a gateway error resets the
//!   gateway count). With `splitExternalLocalOriginErrors`, a response also resets the
//!   local-origin count (the connection worked).
//! * [`Outcome::LocalOrigin`]: the try failed in the mesh's own path to the endpoint: the
//!   connection could not be made or timed out (`UpstreamReset` `ConnectionFailure` /
//!   `ConnectionTimeout`), the stream was reset or the connection closed before the response,
//!   or the response broke the protocol (other `UpstreamReset` reasons), or the try timed out
//!   (`Timeout`: its `perTryTimeout`, counted by the retry layer, or the route `timeout`
//!   expiring before the response headers, counted by [`Upstream`](crate::client::Upstream)
//!   as the timeout layer drops the try; a try dropped because the caller went away counts
//!   nothing). Without `splitExternalLocalOriginErrors` these count as Envoy maps them: a
//!   connect failure or reset as a 503, a timeout as a 504 (both 5xx and gateway errors). With
//!   it, they count only toward `consecutiveLocalOriginFailures`.
//! * Anything else (a circuit-breaker overflow, no healthy upstream, a fault, a mesh-made
//!   answer): not the endpoint's doing, not recorded.
//!
//! When a count reaches its threshold the endpoint is ejected (if the `maxEjectionPercent` rule
//! allows) and that count starts again. Thresholds, as Istio configures Envoy:
//!
//! | Istio field | threshold | default |
//! |---|---|---|
//! | `consecutive5xxErrors` | 5xx in a row | 5; `0` disables. Disabled when only the deprecated `consecutiveErrors` is set |
//! | `consecutiveGatewayErrors` | 502/503/504 in a row | disabled (absent or `0`); the deprecated `consecutiveErrors` sets it |
//! | `consecutiveLocalOriginFailures` | local-origin failures in a row | 5, only with `splitExternalLocalOriginErrors` |
//! | `interval` | time between sweeps that return ejected endpoints | 10 s |
//! | `baseEjectionTime` | ejection time = base × times ejected, capped at Envoy's `max_ejection_time` (300 s, or base if larger) | 30 s |
//! | `maxEjectionPercent` | ejected share of the endpoints (an ejection that would exceed it is skipped, except that one ejection is always allowed when none is active) | 10 (absent or `0`, as Istio sets only a positive value) |
//! | `minHealthPercent` | below this share of healthy endpoints, panic mode: the balancer uses all endpoints | 0 (panic mode off: with every endpoint ejected, there is no healthy upstream) |
//!
//! An ejected endpoint returns at the first `interval` sweep at or after its ejection time is
//! up (so between base × n and base × n + interval after it was ejected, as in Envoy); its
//! counts restart. At each sweep, an endpoint that has stayed in service for a whole interval
//! since it returned has its ejection multiplier lowered by one, as Envoy does.
//!
//! [`LAYER_HEADER`]: crate::error::LAYER_HEADER

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::{Response, StatusCode};

use crate::config::destination_rule::OutlierDetection;
use crate::error::{Error, LAYER_HEADER, ResetReason};
use crate::registry::Endpoint;

/// Istio's default `consecutive5xxErrors` (Envoy's `consecutive_5xx`).
pub const DEFAULT_CONSECUTIVE_5XX: u32 = 5;
/// Envoy's default `consecutive_local_origin_failure`, used for Istio's
/// `consecutiveLocalOriginFailures` when absent.
pub const DEFAULT_CONSECUTIVE_LOCAL_ORIGIN: u32 = 5;
/// Default `interval` (Envoy's): 10 s.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// Default `baseEjectionTime` (Envoy's): 30 s.
pub const DEFAULT_BASE_EJECTION_TIME: Duration = Duration::from_secs(30);
/// Envoy's `max_ejection_time` (not an Istio field): 300 s.
pub const MAX_EJECTION_TIME: Duration = Duration::from_secs(300);
/// Default `maxEjectionPercent` (Envoy's): 10.
pub const DEFAULT_MAX_EJECTION_PERCENT: u32 = 10;

/// What one try to one endpoint came to, as outlier detection sees it ([module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The endpoint answered with this status (a real upstream response).
    Response(StatusCode),
    /// The try failed locally: no connection, a reset, a timeout.
    LocalOrigin(LocalFailure),
}

/// A failure in the mesh's own path to an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalFailure {
    /// The connection could not be made (refused, unreachable, connect timeout).
    ConnectFailed,
    /// The stream was reset or the connection closed before the response, or the response
    /// broke the protocol.
    Reset,
    /// The try timed out (the route's `timeout` or `retries.perTryTimeout`).
    Timeout,
}

impl Outcome {
    /// The outcome of a try's result, or `None` when it says nothing about the endpoint (a
    /// mesh-made response, an overflow, no healthy upstream, ...).
    pub fn of_result<B>(result: &Result<Response<B>, Error>) -> Option<Self> {
        match result {
            Ok(resp) if resp.headers().contains_key(LAYER_HEADER) => None,
            Ok(resp) => Some(Outcome::Response(resp.status())),
            Err(err) => Self::of_error(err),
        }
    }

    /// The outcome of a try that failed with `err`, or `None` when `err` is not the
    /// endpoint's doing.
    pub fn of_error(err: &Error) -> Option<Self> {
        match err {
            Error::UpstreamReset { reason, .. } => Some(Outcome::LocalOrigin(match reason {
                ResetReason::ConnectionFailure | ResetReason::ConnectionTimeout => {
                    LocalFailure::ConnectFailed
                }
                _ => LocalFailure::Reset,
            })),
            Error::Timeout { .. } => Some(Outcome::LocalOrigin(LocalFailure::Timeout)),
            _ => None,
        }
    }
}

/// Which detector ejected an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EjectionReason {
    /// `consecutive5xxErrors`.
    Consecutive5xx,
    /// `consecutiveGatewayErrors` (or the deprecated `consecutiveErrors`).
    ConsecutiveGatewayErrors,
    /// `consecutiveLocalOriginFailures`.
    ConsecutiveLocalOriginFailures,
}

impl EjectionReason {
    /// Envoy's name of the ejection type (`CONSECUTIVE_5XX`, ...), as in its event log.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Consecutive5xx => "CONSECUTIVE_5XX",
            Self::ConsecutiveGatewayErrors => "CONSECUTIVE_GATEWAY_FAILURE",
            Self::ConsecutiveLocalOriginFailures => "CONSECUTIVE_LOCAL_ORIGIN_FAILURE",
        }
    }
}

impl fmt::Display for EjectionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A change of an endpoint's ejection state, for the caller to publish (as a `MeshEvent`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutlierEvent {
    /// `addr` is ejected until `until` (the sweep at which it returns).
    Ejected {
        /// The endpoint.
        addr: SocketAddr,
        /// When it returns.
        until: Instant,
        /// Which detector ejected it.
        reason: EjectionReason,
    },
    /// `addr` is back in service.
    Returned {
        /// The endpoint.
        addr: SocketAddr,
    },
}

/// The thresholds of an `outlierDetection`, with Istio's and Envoy's defaults applied
/// ([module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierThresholds {
    /// `consecutive5xxErrors`; `None`: disabled.
    pub consecutive_5xx: Option<u32>,
    /// `consecutiveGatewayErrors`; `None`: disabled.
    pub consecutive_gateway: Option<u32>,
    /// `splitExternalLocalOriginErrors`.
    pub split_local_origin: bool,
    /// `consecutiveLocalOriginFailures` (with split only); `None`: disabled.
    pub consecutive_local_origin: Option<u32>,
    /// `interval`.
    pub interval: Duration,
    /// `baseEjectionTime`.
    pub base_ejection_time: Duration,
    /// `maxEjectionPercent` (0..=100).
    pub max_ejection_percent: u32,
    /// `minHealthPercent` (0..=100; 0: panic mode off).
    pub min_health_percent: u32,
}

impl OutlierThresholds {
    /// The thresholds of `od`, as Istio translates it for Envoy (`applyOutlierDetection`).
    pub fn of(od: &OutlierDetection) -> Self {
        let positive = |v: u32| (v > 0).then_some(v);
        // The deprecated `consecutiveErrors` sets the gateway detector and turns the 5xx one
        // off; the newer fields override it.
        let deprecated = od
            .consecutive_errors
            .filter(|n| *n > 0)
            .map(i32::unsigned_abs);
        let mut five_xx = if deprecated.is_some() {
            None
        } else {
            Some(DEFAULT_CONSECUTIVE_5XX)
        };
        let mut gateway = deprecated;
        if let Some(v) = od.consecutive_5xx_errors {
            five_xx = positive(v);
        }
        if let Some(v) = od.consecutive_gateway_errors {
            gateway = positive(v);
        }
        let local = if od.split_external_local_origin_errors {
            match od.consecutive_local_origin_failures {
                Some(v) => positive(v),
                None => Some(DEFAULT_CONSECUTIVE_LOCAL_ORIGIN),
            }
        } else {
            None
        };
        let nonzero = |d: Option<Duration>, default: Duration| match d {
            Some(d) if !d.is_zero() => d.min(LONGEST),
            _ => default,
        };
        let percent = |v: Option<i32>| v.map_or(0, |v| v.clamp(0, 100).unsigned_abs());
        let max_ejection_percent = match percent(od.max_ejection_percent) {
            0 => DEFAULT_MAX_EJECTION_PERCENT,
            v => v,
        };
        OutlierThresholds {
            consecutive_5xx: five_xx,
            consecutive_gateway: gateway,
            split_local_origin: od.split_external_local_origin_errors,
            consecutive_local_origin: local,
            interval: nonzero(od.interval, DEFAULT_INTERVAL),
            base_ejection_time: nonzero(od.base_ejection_time, DEFAULT_BASE_EJECTION_TIME),
            max_ejection_percent,
            min_health_percent: percent(od.min_health_percent),
        }
    }

    /// How long the `times`-th ejection lasts: base × times, capped at Envoy's
    /// `max_ejection_time` (300 s, or the base when that is larger).
    pub fn ejection_time(&self, times: u32) -> Duration {
        let cap = MAX_EJECTION_TIME.max(self.base_ejection_time);
        self.base_ejection_time
            .saturating_mul(times.max(1))
            .min(cap)
    }
}

/// Which endpoints the balancer should leave out, at one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthyView {
    ejected: Vec<SocketAddr>,
    panic: bool,
    events: Vec<OutlierEvent>,
}

impl HealthyView {
    /// Whether the balancer should leave `addr` out: it is ejected and the destination is not
    /// in panic mode.
    pub fn is_excluded(&self, addr: &SocketAddr) -> bool {
        !self.panic && self.ejected.contains(addr)
    }

    /// Panic mode: fewer than `minHealthPercent` of the endpoints are healthy, so the balancer
    /// uses all of them (Envoy's healthy panic threshold).
    pub fn panic(&self) -> bool {
        self.panic
    }

    /// The ejected endpoints among those asked about.
    pub fn ejected(&self) -> &[SocketAddr] {
        &self.ejected
    }

    /// Endpoints that returned during the sweeps this query ran (for the caller to publish).
    pub fn take_events(&mut self) -> Vec<OutlierEvent> {
        std::mem::take(&mut self.events)
    }
}

#[derive(Debug, Default)]
struct Host {
    c5xx: u32,
    gateway: u32,
    local: u32,
    /// When ejected: the sweep at which it returns.
    returns_at: Option<Instant>,
    /// Times ejected, lowered by one per interval spent in service (Envoy's backoff).
    multiplier: u32,
    last_return: Option<Instant>,
}

impl Host {
    fn reset_counts(&mut self) {
        self.c5xx = 0;
        self.gateway = 0;
        self.local = 0;
    }
}

#[derive(Debug, Default)]
struct State {
    hosts: HashMap<SocketAddr, Host>,
    /// The next sweep; `None` until the first call.
    next_sweep: Option<Instant>,
    /// The interval the sweep grid was laid with.
    interval: Duration,
}

/// Passive outlier detection for one destination ([module docs](self)).
///
/// `Default + Send + Sync`; every method takes the current config. A short sync lock guards
/// the per-endpoint state; [`healthy_view`](Self::healthy_view) takes no lock while nothing is
/// ejected.
#[derive(Debug, Default)]
pub struct OutlierDetector {
    state: Mutex<State>,
    /// Endpoints ejected now (a lock-free fast path for `healthy_view`).
    ejected: AtomicUsize,
    /// Ejections skipped by `maxEjectionPercent` (Envoy's `ejections_overflow`).
    overflow: AtomicUsize,
}

impl OutlierDetector {
    /// A detector with no history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the outcome of one try to `addr`, one of `endpoints` (the destination's current
    /// endpoints: they size `maxEjectionPercent`), under config `od`, at `now`. Returns the
    /// ejections and returns it caused (sweeps that fell due run first).
    pub fn record(
        &self,
        addr: SocketAddr,
        outcome: Outcome,
        od: &OutlierDetection,
        endpoints: &[Endpoint],
        now: Instant,
    ) -> Vec<OutlierEvent> {
        let t = OutlierThresholds::of(od);
        let mut state = self.lock();
        let mut events = self.sweep(&mut state, &t, endpoints, now);
        let host = state.hosts.entry(addr).or_default();
        let Some(reason) = count(host, &t, &od.outlier_detection_http_error_codes, outcome) else {
            return events;
        };
        // The count that fired starts again, whether or not the ejection happens.
        match reason {
            EjectionReason::Consecutive5xx => host.c5xx = 0,
            EjectionReason::ConsecutiveGatewayErrors => host.gateway = 0,
            EjectionReason::ConsecutiveLocalOriginFailures => host.local = 0,
        }
        // An endpoint already ejected is not ejected again.
        if host.returns_at.is_none()
            && let Some(event) = self.eject(&mut state, &t, endpoints, addr, reason, now)
        {
            events.push(event);
        }
        events
    }

    /// Which of `endpoints` to leave out at `now`, under config `od`, and whether the
    /// destination is in panic mode. Runs the sweeps that fell due (their `Returned` events
    /// are in the view).
    pub fn healthy_view(
        &self,
        endpoints: &[Endpoint],
        od: &OutlierDetection,
        now: Instant,
    ) -> HealthyView {
        if self.ejected.load(Ordering::Acquire) == 0 {
            // Nothing ejected: nothing to return either; later sweeps catch up on the rest.
            return HealthyView::default();
        }
        let t = OutlierThresholds::of(od);
        let mut state = self.lock();
        let events = self.sweep(&mut state, &t, endpoints, now);
        let ejected: Vec<SocketAddr> = endpoints
            .iter()
            .map(|e| e.addr)
            .filter(|a| {
                state
                    .hosts
                    .get(a)
                    .is_some_and(|h| h.returns_at.is_some_and(|r| now < r))
            })
            .collect();
        let total = endpoints.len() as u64;
        let healthy = total.saturating_sub(ejected.len() as u64);
        let panic = total > 0 && healthy * 100 < u64::from(t.min_health_percent) * total;
        HealthyView {
            ejected,
            panic,
            events,
        }
    }

    /// Whether `addr` is ejected at `now` (whatever panic mode says).
    pub fn is_ejected(&self, addr: &SocketAddr, now: Instant) -> bool {
        if self.ejected.load(Ordering::Acquire) == 0 {
            return false;
        }
        self.lock()
            .hosts
            .get(addr)
            .is_some_and(|h| h.returns_at.is_some_and(|r| now < r))
    }

    /// Until when `addr` is ejected, if it is at `now` (it returns at the first sweep after
    /// that instant). For admin views; takes the detector's short lock only when something
    /// is ejected.
    pub fn ejected_until(&self, addr: &SocketAddr, now: Instant) -> Option<Instant> {
        if self.ejected.load(Ordering::Acquire) == 0 {
            return None;
        }
        self.lock()
            .hosts
            .get(addr)
            .and_then(|h| h.returns_at)
            .filter(|r| now < *r)
    }

    /// How many times `addr` has been ejected, minus the intervals it has since spent in
    /// service (Envoy's ejection-time multiplier).
    pub fn ejection_multiplier(&self, addr: &SocketAddr) -> u32 {
        self.lock().hosts.get(addr).map_or(0, |h| h.multiplier)
    }

    /// Ejections skipped because of `maxEjectionPercent`.
    pub fn ejections_overflow(&self) -> usize {
        self.overflow.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Ejects `addr` if `maxEjectionPercent` allows.
    fn eject(
        &self,
        state: &mut State,
        t: &OutlierThresholds,
        endpoints: &[Endpoint],
        addr: SocketAddr,
        reason: EjectionReason,
        now: Instant,
    ) -> Option<OutlierEvent> {
        let active = state
            .hosts
            .values()
            .filter(|h| h.returns_at.is_some())
            .count() as u64;
        let total = (endpoints.len().max(state.hosts.len())).max(1) as u64;
        let allowed =
            active == 0 || 100 * (active + 1) <= u64::from(t.max_ejection_percent) * total;
        if !allowed {
            self.overflow.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let next_sweep = state.next_sweep.unwrap_or_else(|| later(now, t.interval));
        let host = state.hosts.get_mut(&addr)?;
        host.multiplier = host.multiplier.saturating_add(1);
        let due = later(now, t.ejection_time(host.multiplier));
        let until = first_sweep_at_or_after(next_sweep, t.interval, due);
        host.returns_at = Some(until);
        self.ejected.fetch_add(1, Ordering::AcqRel);
        Some(OutlierEvent::Ejected {
            addr,
            until,
            reason,
        })
    }

    /// Runs every sweep due by `now`: ejected endpoints whose time is up return; endpoints in
    /// service lower their multiplier; endpoints no longer in `endpoints` are forgotten.
    fn sweep(
        &self,
        state: &mut State,
        t: &OutlierThresholds,
        endpoints: &[Endpoint],
        now: Instant,
    ) -> Vec<OutlierEvent> {
        let mut events = Vec::new();
        let next = match state.next_sweep {
            // A new interval lays a new grid from now.
            Some(next) if state.interval == t.interval => next,
            _ => {
                state.interval = t.interval;
                state.next_sweep = Some(later(now, t.interval));
                return events;
            }
        };
        if now < next {
            return events;
        }
        let interval = t.interval;
        let ticks_after = |from: Instant, to: Instant| -> u64 {
            // Sweeps strictly after `from` (a sweep instant) up to `to`.
            let gap = to.saturating_duration_since(from).as_nanos();
            u64::try_from(gap / interval.as_nanos().max(1)).unwrap_or(u64::MAX)
        };
        let last = later(
            next,
            interval.saturating_mul(u32::try_from(ticks_after(next, now)).unwrap_or(u32::MAX)),
        );
        let live: HashSet<SocketAddr> = endpoints.iter().map(|e| e.addr).collect();
        let mut gone = 0;
        state.hosts.retain(|addr, h| {
            if !live.contains(addr) {
                if h.returns_at.is_some() {
                    gone += 1;
                }
                return false;
            }
            true
        });
        let mut returned = 0;
        for (addr, h) in &mut state.hosts {
            if let Some(r) = h.returns_at {
                if r > last {
                    continue;
                }
                h.returns_at = None;
                h.last_return = Some(r);
                h.reset_counts();
                returned += 1;
                events.push(OutlierEvent::Returned { addr: *addr });
                let later = u32::try_from(ticks_after(r, last)).unwrap_or(u32::MAX);
                h.multiplier = h.multiplier.saturating_sub(later);
            } else if h.multiplier > 0 {
                // Sweeps in [max(next, last_return + interval), last] lower the multiplier.
                let from = h
                    .last_return
                    .map_or(next, |lr| later(lr, interval).max(next));
                let first = first_sweep_at_or_after(next, interval, from);
                if first <= last {
                    let n = u32::try_from(ticks_after(first, last).saturating_add(1))
                        .unwrap_or(u32::MAX);
                    h.multiplier = h.multiplier.saturating_sub(n);
                }
            }
        }
        let _ = self
            .ejected
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(returned + gone))
            });
        state.next_sweep = Some(later(last, interval));
        events
    }
}

/// Adds `outcome` to `host`'s counts; the detector whose threshold it reached, if any.
fn count(
    host: &mut Host,
    t: &OutlierThresholds,
    codes: &[u32],
    outcome: Outcome,
) -> Option<EjectionReason> {
    let status = match outcome {
        Outcome::LocalOrigin(_) if t.split_local_origin => {
            host.local = host.local.saturating_add(1);
            return t
                .consecutive_local_origin
                .filter(|n| host.local >= *n)
                .map(|_| EjectionReason::ConsecutiveLocalOriginFailures);
        }
        // Envoy's mapping of local-origin results to HTTP codes when not split.
        Outcome::LocalOrigin(LocalFailure::Timeout) => StatusCode::GATEWAY_TIMEOUT,
        Outcome::LocalOrigin(_) => StatusCode::SERVICE_UNAVAILABLE,
        Outcome::Response(status) => {
            if t.split_local_origin {
                host.local = 0;
            }
            status
        }
    };
    count_status(host, t, codes, status)
}

/// `codes`: `outlierDetectionHttpErrorCodes`; when not empty, the statuses that count toward
/// `consecutive5xxErrors` instead of "any 5xx".
fn count_status(
    host: &mut Host,
    t: &OutlierThresholds,
    codes: &[u32],
    status: StatusCode,
) -> Option<EjectionReason> {
    let gateway_error = matches!(status.as_u16(), 502..=504);
    if gateway_error {
        host.gateway = host.gateway.saturating_add(1);
    } else {
        host.gateway = 0;
    }
    let error = if codes.is_empty() {
        status.is_server_error()
    } else {
        codes.contains(&u32::from(status.as_u16()))
    };
    if error {
        host.c5xx = host.c5xx.saturating_add(1);
    } else {
        host.c5xx = 0;
    }
    if t.consecutive_gateway.is_some_and(|n| host.gateway >= n) {
        return Some(EjectionReason::ConsecutiveGatewayErrors);
    }
    if t.consecutive_5xx.is_some_and(|n| host.c5xx >= n) {
        return Some(EjectionReason::Consecutive5xx);
    }
    None
}

/// The first sweep of the grid `next + k × interval` (k ≥ 0) at or after `at`.
fn first_sweep_at_or_after(next: Instant, interval: Duration, at: Instant) -> Instant {
    if at <= next {
        return next;
    }
    let step = interval.as_nanos().max(1);
    let gap = at.saturating_duration_since(next).as_nanos();
    let k = gap.div_ceil(step);
    let k = u32::try_from(k).unwrap_or(u32::MAX);
    later(next, interval.saturating_mul(k))
}

/// The longest duration configured values are taken up to: 10 years (an `Instant` that far
/// ahead is representable everywhere).
const LONGEST: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// `at + d`, saturating far in the future instead of overflowing.
fn later(at: Instant, d: Duration) -> Instant {
    at.checked_add(d.min(LONGEST))
        .or_else(|| at.checked_add(Duration::from_secs(24 * 3600)))
        .unwrap_or(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::body::{self, MeshBody};
    use crate::error::Layer as MeshLayer;

    fn eps(n: u8) -> Vec<Endpoint> {
        (1..=n)
            .map(|i| Endpoint::new(SocketAddr::from(([127, 0, 0, i], 80))))
            .collect()
    }

    fn addr(i: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, i], 80))
    }

    fn status(code: u16) -> Outcome {
        Outcome::Response(StatusCode::from_u16(code).expect("valid status"))
    }

    const CONNECT: Outcome = Outcome::LocalOrigin(LocalFailure::ConnectFailed);

    /// Records `outcome` `n` times at `now`; all the events.
    fn record_n(
        d: &OutlierDetector,
        a: SocketAddr,
        outcome: Outcome,
        n: usize,
        od: &OutlierDetection,
        endpoints: &[Endpoint],
        now: Instant,
    ) -> Vec<OutlierEvent> {
        (0..n)
            .flat_map(|_| d.record(a, outcome, od, endpoints, now))
            .collect()
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn thresholds_follow_istios_translation() {
        let t = OutlierThresholds::of(&OutlierDetection::default());
        assert_eq!(t.consecutive_5xx, Some(5));
        assert_eq!(t.consecutive_gateway, None);
        assert_eq!(t.consecutive_local_origin, None);
        assert_eq!(t.interval, secs(10));
        assert_eq!(t.base_ejection_time, secs(30));
        assert_eq!(t.max_ejection_percent, 10);
        assert_eq!(t.min_health_percent, 0);

        // The deprecated field: gateway errors only.
        let t = OutlierThresholds::of(&OutlierDetection {
            consecutive_errors: Some(3),
            ..OutlierDetection::default()
        });
        assert_eq!((t.consecutive_5xx, t.consecutive_gateway), (None, Some(3)));

        let t = OutlierThresholds::of(&OutlierDetection {
            consecutive_5xx_errors: Some(0),
            consecutive_gateway_errors: Some(2),
            split_external_local_origin_errors: true,
            max_ejection_percent: Some(0),
            min_health_percent: Some(150),
            ..OutlierDetection::default()
        });
        assert_eq!(t.consecutive_5xx, None, "0 disables");
        assert_eq!(t.consecutive_gateway, Some(2));
        assert_eq!(
            t.consecutive_local_origin,
            Some(5),
            "Envoy's default with split"
        );
        assert_eq!(t.max_ejection_percent, 10, "0 is Istio's 'unset'");
        assert_eq!(t.min_health_percent, 100);

        assert_eq!(t.ejection_time(1), secs(30));
        assert_eq!(t.ejection_time(3), secs(90));
        assert_eq!(
            t.ejection_time(100),
            secs(300),
            "capped at max_ejection_time"
        );
    }

    #[test]
    fn outcomes_of_results_count_only_the_endpoints_doing() {
        let upstream: Result<Response<MeshBody>, Error> = Ok(Response::builder()
            .status(503)
            .body(body::empty())
            .expect("valid"));
        assert_eq!(Outcome::of_result(&upstream), Some(status(503)));
        let mesh_made = Error::Overflow {
            host: "h".into(),
            subset: None,
            limit: "connectionPool.http.http2MaxRequests",
        };
        let answer: Result<Response<MeshBody>, Error> =
            Ok(mesh_made.to_response(false).map(body::boxed));
        assert_eq!(Outcome::of_result(&answer), None, "a mesh-made 503");
        assert_eq!(Outcome::of_error(&mesh_made), None);
        assert_eq!(MeshLayer::Cluster, mesh_made.layer());
        let reset = |reason| Error::UpstreamReset {
            reason,
            transport_failure: None,
        };
        assert_eq!(
            Outcome::of_error(&reset(ResetReason::ConnectionFailure)),
            Some(CONNECT)
        );
        assert_eq!(
            Outcome::of_error(&reset(ResetReason::ConnectionTimeout)),
            Some(CONNECT)
        );
        assert_eq!(
            Outcome::of_error(&reset(ResetReason::RemoteReset)),
            Some(Outcome::LocalOrigin(LocalFailure::Reset))
        );
        assert_eq!(
            Outcome::of_error(&Error::Timeout { timeout: secs(1) }),
            Some(Outcome::LocalOrigin(LocalFailure::Timeout))
        );
    }

    #[test]
    fn ejected_until_reports_the_return_time_only_while_ejected() {
        let d = OutlierDetector::new();
        let od = OutlierDetection::default();
        let e = eps(3);
        let t0 = Instant::now();
        let a = addr(1);
        assert_eq!(d.ejected_until(&a, t0), None);
        let at = t0 + secs(1);
        let _ = record_n(&d, a, status(500), 5, &od, &e, at);
        // Sweeps every 10 s from the first call (`at`): back at the first one after 30 s.
        let until = at + secs(30);
        assert_eq!(d.ejected_until(&a, at), Some(until));
        assert_eq!(d.ejected_until(&addr(2), at), None, "another endpoint");
        assert_eq!(d.ejected_until(&a, until), None, "returned");
    }

    #[test]
    fn consecutive_5xx_ejects_and_the_endpoint_returns_after_base_times_n() {
        let d = OutlierDetector::new();
        let od = OutlierDetection::default();
        let e = eps(3);
        let t0 = Instant::now();
        let a = addr(1);
        // Four 5xx then a success: the run is broken, no ejection.
        assert!(record_n(&d, a, status(500), 4, &od, &e, t0).is_empty());
        assert!(d.record(a, status(200), &od, &e, t0).is_empty());
        assert!(record_n(&d, a, status(500), 4, &od, &e, t0).is_empty());
        assert!(!d.is_ejected(&a, t0));
        // The fifth in a row ejects (sweeps every 10 s from t0: at t0 + 10, 20, 30, 40 ...).
        let at = t0 + secs(1);
        let events = d.record(a, status(500), &od, &e, at);
        let until = t0 + secs(40); // the first sweep at or after t0 + 1 + 30
        assert_eq!(
            events,
            [OutlierEvent::Ejected {
                addr: a,
                until,
                reason: EjectionReason::Consecutive5xx
            }]
        );
        assert!(d.is_ejected(&a, t0 + secs(39)));
        let view = d.healthy_view(&e, &od, t0 + secs(39));
        assert!(view.is_excluded(&a) && !view.is_excluded(&addr(2)) && !view.panic());
        // At the sweep it returns.
        let mut view = d.healthy_view(&e, &od, until);
        assert!(!view.is_excluded(&a));
        assert_eq!(view.take_events(), [OutlierEvent::Returned { addr: a }]);
        assert!(!d.is_ejected(&a, until));

        // Ejected again at once: twice the base time this time.
        let at = until + secs(1);
        let events = record_n(&d, a, status(503), 5, &od, &e, at);
        assert_eq!(
            events,
            [OutlierEvent::Ejected {
                addr: a,
                until: t0 + secs(110), // first sweep at or after t0 + 41 + 60
                reason: EjectionReason::Consecutive5xx
            }]
        );
        assert_eq!(d.ejection_multiplier(&a), 2);
        assert!(d.is_ejected(&a, t0 + secs(109)));
        assert!(!d.is_ejected(&a, t0 + secs(110)));
        // Each whole interval in service afterwards lowers the multiplier by one.
        let mut view = d.healthy_view(&e, &od, t0 + secs(110));
        assert_eq!(view.take_events(), [OutlierEvent::Returned { addr: a }]);
        let _ = d.record(addr(2), status(200), &od, &e, t0 + secs(125));
        assert_eq!(
            d.ejection_multiplier(&a),
            1,
            "one sweep (t0+120) a whole interval after its return"
        );
        let _ = d.record(addr(2), status(200), &od, &e, t0 + secs(200));
        assert_eq!(d.ejection_multiplier(&a), 0);
    }

    #[test]
    fn max_ejection_percent_allows_at_least_one() {
        let d = OutlierDetector::new();
        let od = OutlierDetection::default(); // 10%
        let e = eps(4);
        let t0 = Instant::now();
        let first = record_n(&d, addr(1), status(500), 5, &od, &e, t0);
        assert_eq!(
            first.len(),
            1,
            "10% of 4 is less than one, one is allowed anyway"
        );
        let second = record_n(&d, addr(2), status(500), 5, &od, &e, t0);
        assert!(second.is_empty());
        assert_eq!(d.ejections_overflow(), 1);
        assert!(!d.is_ejected(&addr(2), t0));

        // 50% of 4: two ejections, not three.
        let d = OutlierDetector::new();
        let od = OutlierDetection {
            max_ejection_percent: Some(50),
            ..OutlierDetection::default()
        };
        let ejected: usize = (1..=4)
            .map(|i| record_n(&d, addr(i), status(500), 5, &od, &e, t0).len())
            .sum();
        assert_eq!(ejected, 2);
        assert_eq!(d.healthy_view(&e, &od, t0).ejected(), [addr(1), addr(2)]);
    }

    #[test]
    fn panic_mode_below_min_health_percent_uses_all_endpoints() {
        let od = OutlierDetection {
            max_ejection_percent: Some(100),
            min_health_percent: Some(50),
            ..OutlierDetection::default()
        };
        let d = OutlierDetector::new();
        let e = eps(2);
        let t0 = Instant::now();
        record_n(&d, addr(1), CONNECT, 5, &od, &e, t0);
        let view = d.healthy_view(&e, &od, t0);
        assert!(!view.panic(), "50% healthy is not below 50%");
        assert!(view.is_excluded(&addr(1)));
        record_n(&d, addr(2), CONNECT, 5, &od, &e, t0);
        let view = d.healthy_view(&e, &od, t0);
        assert!(view.panic());
        assert_eq!(view.ejected().len(), 2);
        assert!(!view.is_excluded(&addr(1)) && !view.is_excluded(&addr(2)));

        // Istio's default 0: no panic, every endpoint left out.
        let od = OutlierDetection {
            max_ejection_percent: Some(100),
            ..OutlierDetection::default()
        };
        let d = OutlierDetector::new();
        record_n(&d, addr(1), CONNECT, 5, &od, &e, t0);
        record_n(&d, addr(2), CONNECT, 5, &od, &e, t0);
        let view = d.healthy_view(&e, &od, t0);
        assert!(!view.panic());
        assert!(view.is_excluded(&addr(1)) && view.is_excluded(&addr(2)));
    }

    #[test]
    fn local_origin_failures_count_as_5xx_unless_split() {
        let e = eps(2);
        let t0 = Instant::now();
        let od = OutlierDetection::default();
        let d = OutlierDetector::new();
        let events = record_n(&d, addr(1), CONNECT, 5, &od, &e, t0);
        assert!(matches!(
            events.as_slice(),
            [OutlierEvent::Ejected {
                reason: EjectionReason::Consecutive5xx,
                ..
            }]
        ));

        let split = OutlierDetection {
            split_external_local_origin_errors: true,
            consecutive_local_origin_failures: Some(3),
            ..OutlierDetection::default()
        };
        let d = OutlierDetector::new();
        // Local failures and 5xx count apart: 4 of each, interleaved, eject nothing ...
        for _ in 0..2 {
            assert!(record_n(&d, addr(1), CONNECT, 2, &split, &e, t0).is_empty());
            assert!(record_n(&d, addr(1), status(500), 2, &split, &e, t0).is_empty());
        }
        // ... because each response resets the local-origin run (the connection worked).
        assert!(record_n(&d, addr(1), CONNECT, 2, &split, &e, t0).is_empty());
        let events = d.record(
            addr(1),
            Outcome::LocalOrigin(LocalFailure::Timeout),
            &split,
            &e,
            t0,
        );
        assert!(matches!(
            events.as_slice(),
            [OutlierEvent::Ejected {
                reason: EjectionReason::ConsecutiveLocalOriginFailures,
                ..
            }]
        ));
    }

    #[test]
    fn gateway_errors_count_only_502_to_504() {
        let od = OutlierDetection {
            consecutive_5xx_errors: Some(0),
            consecutive_gateway_errors: Some(2),
            ..OutlierDetection::default()
        };
        let d = OutlierDetector::new();
        let e = eps(2);
        let t0 = Instant::now();
        assert!(record_n(&d, addr(1), status(500), 20, &od, &e, t0).is_empty());
        assert!(d.record(addr(1), status(502), &od, &e, t0).is_empty());
        assert!(
            d.record(addr(1), status(500), &od, &e, t0).is_empty(),
            "resets"
        );
        assert!(d.record(addr(1), status(504), &od, &e, t0).is_empty());
        let events = d.record(addr(1), status(503), &od, &e, t0);
        assert!(matches!(
            events.as_slice(),
            [OutlierEvent::Ejected {
                reason: EjectionReason::ConsecutiveGatewayErrors,
                ..
            }]
        ));
        // A local-origin failure is a gateway error (503 / 504) when not split.
        let d = OutlierDetector::new();
        let mixed = [CONNECT, Outcome::LocalOrigin(LocalFailure::Timeout)];
        let events: Vec<_> = mixed
            .into_iter()
            .flat_map(|o| d.record(addr(2), o, &od, &e, t0))
            .collect();
        assert_eq!(events.len(), 1);
    }

    #[test]
    fn http_error_codes_redefine_what_counts() {
        let od = OutlierDetection {
            consecutive_5xx_errors: Some(2),
            outlier_detection_http_error_codes: vec![429],
            ..OutlierDetection::default()
        };
        let d = OutlierDetector::new();
        let e = eps(2);
        let t0 = Instant::now();
        assert!(record_n(&d, addr(1), status(500), 5, &od, &e, t0).is_empty());
        assert_eq!(record_n(&d, addr(1), status(429), 2, &od, &e, t0).len(), 1);
    }

    #[test]
    fn removed_endpoints_are_forgotten_at_the_next_sweep() {
        let od = OutlierDetection::default();
        let d = OutlierDetector::new();
        let e = eps(3);
        let t0 = Instant::now();
        assert_eq!(record_n(&d, addr(1), status(500), 5, &od, &e, t0).len(), 1);
        // addr(1) leaves the destination; after a sweep, another endpoint may be ejected (the
        // "at least one" rule applies again) and nothing counts the departed one.
        let rest = eps(3).split_off(1);
        let _ = d.record(addr(2), status(200), &od, &rest, t0 + secs(10));
        assert_eq!(
            record_n(&d, addr(2), status(500), 5, &od, &rest, t0 + secs(11)).len(),
            1
        );
        assert_eq!(
            d.healthy_view(&rest, &od, t0 + secs(11)).ejected(),
            [addr(2)]
        );
    }

    #[test]
    fn nothing_ejected_takes_no_lock_and_excludes_nothing() {
        let d = OutlierDetector::new();
        let e = eps(2);
        let view = d.healthy_view(&e, &OutlierDetection::default(), Instant::now());
        assert_eq!(view, HealthyView::default());
        assert!(!view.is_excluded(&addr(1)));
        assert!(!d.is_ejected(&addr(1), Instant::now()));
    }

    #[test]
    fn huge_durations_do_not_overflow() {
        let od = OutlierDetection {
            interval: Some(Duration::MAX),
            base_ejection_time: Some(Duration::MAX),
            ..OutlierDetection::default()
        };
        let d = OutlierDetector::new();
        let e = eps(1);
        let t0 = Instant::now();
        let events = record_n(&d, addr(1), status(500), 5, &od, &e, t0);
        assert_eq!(events.len(), 1);
        assert!(d.is_ejected(&addr(1), t0 + secs(3600)));
    }
}
