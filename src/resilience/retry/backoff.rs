//! Retry backoff: Envoy's `JitteredExponentialBackOffStrategy`.
//!
//! Before the `n`-th retry (1-based) the retry layer sleeps a uniformly random time in
//! `[0, min((2^n - 1) × base, max))`: full jitter over an exponentially growing ceiling.
//! `base` is VirtualService `retries.backoff` (Envoy's default 25 ms, Istio passes it as
//! `retry_back_off.base_interval`), `max` is Envoy's default of 10 × base.

use std::time::Duration;

use crate::dice::Dice;

/// Envoy's default base interval (25 ms).
pub const DEFAULT_BASE: Duration = Duration::from_millis(25);

/// An exponential backoff with full jitter ([module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Backoff {
    base: Duration,
    max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(DEFAULT_BASE)
    }
}

impl Backoff {
    /// A backoff with base interval `base` and Envoy's cap of 10 × base. A zero base means no
    /// wait at all.
    pub fn new(base: Duration) -> Self {
        Backoff {
            base,
            max: base.saturating_mul(10),
        }
    }

    /// The base interval.
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The cap (10 × base).
    pub fn max(&self) -> Duration {
        self.max
    }

    /// The exclusive upper bound of the wait before retry `retry` (1-based):
    /// `min((2^retry - 1) × base, max)`; zero for retry 0.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = if retry >= 32 {
            u32::MAX
        } else {
            (1u32 << retry) - 1
        };
        self.base.saturating_mul(factor).min(self.max)
    }

    /// The wait before retry `retry` (1-based), drawn from `jitter`.
    pub fn delay(&self, retry: u32, jitter: &Jitter) -> Duration {
        let ceiling = self.ceiling(retry);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(jitter.below(nanos))
    }
}

/// A lock-free source of jitter: the crate's seedable dice (a counter mixed by SplitMix64),
/// reproducible for a fixed seed and call order.
#[derive(Debug)]
pub struct Jitter {
    dice: Dice,
}

impl Jitter {
    /// A jitter source with a fixed seed (reproducible).
    pub fn seeded(seed: u64) -> Self {
        Jitter {
            dice: Dice::new(seed),
        }
    }

    /// A jitter source seeded from the operating system (or the clock, if the OS has no
    /// randomness to give).
    pub fn from_os() -> Self {
        Jitter {
            dice: Dice::from_os(),
        }
    }

    /// A uniformly distributed value in `0..n` (`0` when `n == 0`).
    pub fn below(&self, n: u64) -> u64 {
        self.dice.roll(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_grow_exponentially_up_to_ten_times_base() {
        let b = Backoff::default();
        let ms = |n| b.ceiling(n).as_millis();
        assert_eq!(
            [ms(0), ms(1), ms(2), ms(3), ms(4), ms(5), ms(40)],
            [0, 25, 75, 175, 250, 250, 250]
        );
        assert_eq!(b.max(), Duration::from_millis(250));
        let custom = Backoff::new(Duration::from_millis(100));
        assert_eq!(custom.ceiling(2), Duration::from_millis(300));
        assert_eq!(custom.ceiling(9), Duration::from_secs(1));
        assert_eq!(Backoff::new(Duration::ZERO).ceiling(3), Duration::ZERO);
    }

    #[test]
    fn delays_stay_below_their_ceiling_and_spread_over_it() {
        let b = Backoff::default();
        let j = Jitter::seeded(42);
        for retry in 1..=6 {
            let ceiling = b.ceiling(retry);
            let delays: Vec<_> = (0..2000).map(|_| b.delay(retry, &j)).collect();
            assert!(delays.iter().all(|d| *d < ceiling), "retry {retry}");
            // Full jitter: both halves of the range are used.
            let low = delays.iter().filter(|d| **d < ceiling / 2).count();
            assert!((800..1200).contains(&low), "retry {retry}: {low} low");
        }
        assert_eq!(b.delay(0, &j), Duration::ZERO);
    }

    #[test]
    fn seeded_jitter_is_reproducible() {
        let (a, b) = (Jitter::seeded(7), Jitter::seeded(7));
        let xs: Vec<_> = (0..50).map(|_| a.below(1000)).collect();
        let ys: Vec<_> = (0..50).map(|_| b.below(1000)).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, (0..50).map(|_| xs[0]).collect::<Vec<_>>());
        assert_eq!(a.below(0), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_backoff_sleep_lasts_its_delay() {
        let b = Backoff::default();
        let j = Jitter::seeded(3);
        let d = b.delay(3, &j);
        let start = tokio::time::Instant::now();
        tokio::time::sleep(d).await;
        let slept = start.elapsed();
        assert!(slept >= d && slept < b.ceiling(3) + Duration::from_millis(2));
    }
}
