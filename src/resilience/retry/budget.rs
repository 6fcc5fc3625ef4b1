//! Retry budgets: DestinationRule `trafficPolicy.retryBudget`, with Envoy's semantics
//! (`circuit_breakers.thresholds[].retry_budget`), not tower's `TpsBudget`.
//!
//! A fixed retry count (`retries.attempts`) multiplies load by up to `1 + attempts` exactly
//! when a destination is failing, which is when it can least take it. A budget ties retries
//! to the traffic instead: retries in flight to a destination may not exceed
//!
//! ```text
//! max(minRetryConcurrency, percent% × (active + pending requests))
//! ```
//!
//! (`percent` default 20, `minRetryConcurrency` default 3), so a failing destination sees at
//! most about 20% more requests, while a quiet one can still retry a few. With
//! `budgetInterval`, the base is the number of requests *started* over the last interval
//! instead of those in flight (a sliding window of two buckets). A retry over budget is not
//! made: the caller gets the try's own response or error, and the refusal is counted
//! ([`RetryBudgetState::refusals`]). When a retry budget is set it replaces
//! `connectionPool.http.maxRetries`, as in Envoy.
//!
//! [`RetryBudgetState`] is the per-destination state (in the
//! [`ClusterState`](crate::snapshot::ClusterState), surviving reloads); every method takes the
//! current [`RetryBudget`] config. Here "active + pending" is the tries in flight that the
//! retry layer has started to the destination (every try, first or retry, as Envoy counts
//! upstream requests), including those still waiting for a connection.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::destination_rule::RetryBudget;

/// Envoy's and Istio's default `retryBudget.percent`.
pub const DEFAULT_PERCENT: f64 = 20.0;
/// Envoy's and Istio's default `retryBudget.minRetryConcurrency`.
pub const DEFAULT_MIN_RETRY_CONCURRENCY: u32 = 3;

/// The per-destination state of a retry budget ([module docs](self)).
#[derive(Debug, Default)]
pub struct RetryBudgetState {
    active: AtomicU64,
    retries: AtomicU64,
    refusals: AtomicU64,
    window: Mutex<Window>,
}

#[derive(Debug, Default)]
struct Window {
    start: Option<Instant>,
    current: u64,
    previous: u64,
}

impl Window {
    /// Rolls the buckets forward to `now`.
    fn roll(&mut self, interval: Duration, now: Instant) {
        let Some(start) = self.start else {
            self.start = Some(now);
            return;
        };
        let elapsed = now.saturating_duration_since(start);
        if elapsed < interval {
            return;
        }
        if elapsed < interval.saturating_mul(2) {
            self.previous = self.current;
            self.start = start.checked_add(interval).or(Some(now));
        } else {
            self.previous = 0;
            self.start = Some(now);
        }
        self.current = 0;
    }

    /// Requests started over the last `interval`: the current bucket plus the previous one
    /// weighted by how much of it is still inside the window.
    fn estimate(&self, interval: Duration, now: Instant) -> f64 {
        let Some(start) = self.start else {
            return 0.0;
        };
        let elapsed = now.saturating_duration_since(start).as_secs_f64();
        let span = interval.as_secs_f64();
        let left = if span > 0.0 {
            (1.0 - elapsed / span).clamp(0.0, 1.0)
        } else {
            0.0
        };
        self.current as f64 + self.previous as f64 * left
    }
}

/// A retry the budget did not admit: what was in flight and the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryRefused {
    /// The Istio field whose limit was reached (`trafficPolicy.retryBudget`, or
    /// `connectionPool.http.maxRetries` when a gate combines both).
    pub limit: &'static str,
    /// Retries in flight when refused.
    pub in_flight: u64,
    /// The number of retries the budget allowed in flight.
    pub max: u64,
}

impl RetryBudgetState {
    /// Counts a try starting (`retry`: whether it is a retry); the returned guard counts it
    /// active until dropped. In `budgetInterval` mode a first try also counts as a request
    /// started in the interval.
    pub fn start_try(
        &self,
        budget: Option<&RetryBudget>,
        retry: bool,
        now: Instant,
    ) -> TryCount<'_> {
        self.active.fetch_add(1, Ordering::Relaxed);
        if !retry && let Some(interval) = budget.and_then(|b| b.budget_interval) {
            let mut w = self.window.lock().unwrap_or_else(PoisonError::into_inner);
            w.roll(interval, now);
            w.current = w.current.saturating_add(1);
        }
        TryCount { state: self }
    }

    /// Counts a try starting without a guard; pair with [`end_try`](Self::end_try). For
    /// callers whose guard must be `'static` (an `Arc` owner).
    pub fn begin_try(&self, budget: Option<&RetryBudget>, retry: bool, now: Instant) {
        std::mem::forget(self.start_try(budget, retry, now));
    }

    /// Ends a try counted by [`begin_try`](Self::begin_try).
    pub fn end_try(&self) {
        self.active.fetch_sub(1, Ordering::Relaxed);
    }

    /// Tries in flight (active + pending).
    pub fn active(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }

    /// Retries in flight.
    pub fn retries_in_flight(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// Retries refused since the state was created.
    pub fn refusals(&self) -> u64 {
        self.refusals.load(Ordering::Relaxed)
    }

    /// The number of retries `budget` allows in flight now, given `load` requests (active +
    /// pending, or started in the interval): `max(minRetryConcurrency, percent% × load)`.
    pub fn limit_for(budget: &RetryBudget, load: f64) -> u64 {
        let percent = budget.percent.unwrap_or(DEFAULT_PERCENT).clamp(0.0, 100.0);
        let min = u64::from(
            budget
                .min_retry_concurrency
                .unwrap_or(DEFAULT_MIN_RETRY_CONCURRENCY),
        );
        // Envoy computes the share as a double and truncates it.
        let share = (percent / 100.0 * load.max(0.0)).floor();
        let share = if share >= u64::MAX as f64 {
            u64::MAX
        } else {
            share as u64
        };
        share.max(min)
    }

    /// The number of retries `budget` allows in flight now, from this state's own counts.
    pub fn limit(&self, budget: &RetryBudget, now: Instant) -> u64 {
        let load = match budget.budget_interval {
            Some(interval) => {
                let mut w = self.window.lock().unwrap_or_else(PoisonError::into_inner);
                w.roll(interval, now);
                w.estimate(interval, now)
            }
            None => self.active() as f64,
        };
        Self::limit_for(budget, load)
    }

    /// Whether one more retry would be admitted now (no side effect).
    pub fn admits_retry(&self, budget: &RetryBudget, now: Instant) -> bool {
        self.retries_in_flight() < self.limit(budget, now)
    }

    /// Admits one more retry if the budget allows it: the guard counts it in flight until
    /// dropped. A refusal is counted and returned.
    pub fn try_start_retry(
        &self,
        budget: &RetryBudget,
        now: Instant,
    ) -> Result<RetryCount<'_>, RetryRefused> {
        self.try_begin_retry(budget, now)?;
        Ok(RetryCount { state: self })
    }

    /// [`try_start_retry`](Self::try_start_retry) without a guard; pair an `Ok` with
    /// [`end_retry`](Self::end_retry).
    pub fn try_begin_retry(&self, budget: &RetryBudget, now: Instant) -> Result<(), RetryRefused> {
        let max = self.limit(budget, now);
        // Compare-and-swap: the count never goes over `max`, even for an instant.
        let admitted = self
            .retries
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then(|| n + 1)
            });
        match admitted {
            Ok(_) => Ok(()),
            Err(in_flight) => {
                self.refusals.fetch_add(1, Ordering::Relaxed);
                Err(RetryRefused {
                    limit: "trafficPolicy.retryBudget",
                    in_flight,
                    max,
                })
            }
        }
    }

    /// Ends a retry admitted by [`try_begin_retry`](Self::try_begin_retry).
    pub fn end_retry(&self) {
        self.retries.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counts a try in flight until dropped ([`RetryBudgetState::start_try`]).
#[derive(Debug)]
#[must_use = "the try is counted until the guard drops"]
pub struct TryCount<'a> {
    state: &'a RetryBudgetState,
}

impl Drop for TryCount<'_> {
    fn drop(&mut self) {
        self.state.end_try();
    }
}

/// Counts a retry in flight until dropped ([`RetryBudgetState::try_start_retry`]).
#[derive(Debug)]
#[must_use = "the retry is counted until the guard drops"]
pub struct RetryCount<'a> {
    state: &'a RetryBudgetState,
}

impl Drop for RetryCount<'_> {
    fn drop(&mut self) {
        self.state.end_retry();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(percent: Option<f64>, min: Option<u32>, interval: Option<Duration>) -> RetryBudget {
        RetryBudget {
            percent,
            min_retry_concurrency: min,
            budget_interval: interval,
        }
    }

    #[test]
    fn limit_is_max_of_min_concurrency_and_share_of_load() {
        let defaults = budget(None, None, None);
        assert_eq!(RetryBudgetState::limit_for(&defaults, 0.0), 3);
        assert_eq!(RetryBudgetState::limit_for(&defaults, 10.0), 3);
        assert_eq!(RetryBudgetState::limit_for(&defaults, 19.0), 3);
        assert_eq!(RetryBudgetState::limit_for(&defaults, 20.0), 4);
        assert_eq!(RetryBudgetState::limit_for(&defaults, 100.0), 20);
        assert_eq!(RetryBudgetState::limit_for(&defaults, 104.0), 20);
        let b = budget(Some(50.0), Some(1), None);
        assert_eq!(RetryBudgetState::limit_for(&b, 0.0), 1);
        assert_eq!(RetryBudgetState::limit_for(&b, 7.0), 3);
        let none = budget(Some(0.0), Some(0), None);
        assert_eq!(RetryBudgetState::limit_for(&none, 1000.0), 0);
        let all = budget(Some(100.0), Some(0), None);
        assert_eq!(RetryBudgetState::limit_for(&all, 12.0), 12);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrency_mode_counts_tries_in_flight() {
        let s = RetryBudgetState::default();
        let b = budget(Some(20.0), Some(1), None);
        let now = Instant::now();
        let tries: Vec<_> = (0..10).map(|_| s.start_try(Some(&b), false, now)).collect();
        assert_eq!(s.active(), 10);
        assert_eq!(s.limit(&b, now), 2);
        let r1 = s.try_start_retry(&b, now).expect("first retry admitted");
        let r2 = s.try_start_retry(&b, now).expect("second retry admitted");
        assert!(!s.admits_retry(&b, now));
        let refused = s.try_start_retry(&b, now).expect_err("over budget");
        assert_eq!(
            refused,
            RetryRefused {
                limit: "trafficPolicy.retryBudget",
                in_flight: 2,
                max: 2
            }
        );
        assert_eq!(s.retries_in_flight(), 2);
        assert_eq!(s.refusals(), 1);
        drop(r1);
        assert!(s.admits_retry(&b, now));
        drop(r2);
        drop(tries);
        assert_eq!(s.active(), 0);
        assert_eq!(s.retries_in_flight(), 0);
        // With nothing in flight, minRetryConcurrency still allows one.
        assert_eq!(s.limit(&b, now), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn interval_mode_counts_requests_started_in_the_window() {
        let s = RetryBudgetState::default();
        let interval = Duration::from_secs(10);
        let b = budget(Some(10.0), Some(0), Some(interval));
        let t0 = Instant::now();
        // 100 requests start (and finish) in the first interval; retries do not count.
        for _ in 0..100 {
            drop(s.start_try(Some(&b), false, t0));
        }
        for _ in 0..50 {
            drop(s.start_try(Some(&b), true, t0));
        }
        assert_eq!(s.active(), 0);
        assert_eq!(s.limit(&b, t0), 10, "10% of 100 started, none in flight");
        let held: Vec<_> = (0..10)
            .map(|_| s.try_start_retry(&b, t0).expect("within budget"))
            .collect();
        assert!(s.try_start_retry(&b, t0).is_err());
        drop(held);
        // Half-way through the next interval, half of the previous bucket still counts.
        let t15 = t0 + Duration::from_secs(15);
        assert_eq!(s.limit(&b, t15), 5);
        for _ in 0..20 {
            drop(s.start_try(Some(&b), false, t15));
        }
        assert_eq!(s.limit(&b, t15), 7);
        // Two idle intervals later nothing counts.
        assert_eq!(s.limit(&b, t0 + Duration::from_secs(40)), 0);
    }

    #[tokio::test]
    async fn concurrent_admissions_never_exceed_the_limit() {
        use std::sync::Arc;
        let s = Arc::new(RetryBudgetState::default());
        let b = budget(Some(0.0), Some(4), None);
        let now = Instant::now();
        let mut handles = Vec::new();
        for _ in 0..8 {
            let s = s.clone();
            handles.push(std::thread::spawn(move || {
                let mut max_seen = 0;
                for _ in 0..2000 {
                    if let Ok(g) = s.try_start_retry(&b, now) {
                        max_seen = max_seen.max(s.retries_in_flight());
                        drop(g);
                    }
                }
                max_seen
            }));
        }
        for h in handles {
            let max_seen = h.join().expect("thread ran");
            assert!(max_seen <= 4, "{max_seen} retries in flight");
        }
        assert_eq!(s.retries_in_flight(), 0);
    }
}
