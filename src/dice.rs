//! Seedable, lock-free random numbers for the request path: weighted route picks, fault
//! sampling, retry jitter, load-balancer choices.
//!
//! A [`Dice`] mixes a seed and an atomic counter with SplitMix64, so concurrent requests draw
//! without a lock, and a fixed seed gives the same sequence for the same order of draws —
//! what tests need to be exact.

use std::sync::atomic::{AtomicU64, Ordering};

/// SplitMix64's increment (the golden ratio in 64 bits).
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's finaliser: a bijective mix of 64 bits.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A seed from the OS, or from the clock if the OS has none to give (never panics).
pub(crate) fn os_seed() -> u64 {
    use rand::{RngCore, SeedableRng, rngs::SmallRng};
    match SmallRng::try_from_os_rng() {
        Ok(mut rng) => rng.next_u64(),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x5EED),
    }
}

/// A counter mixed by SplitMix64: lock-free, and reproducible for a fixed seed and order of
/// draws.
#[derive(Debug)]
pub(crate) struct Dice {
    seed: u64,
    counter: AtomicU64,
}

impl Dice {
    /// Dice following `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        Dice {
            seed,
            counter: AtomicU64::new(0),
        }
    }

    /// Dice seeded from the OS.
    pub(crate) fn from_os() -> Self {
        Dice::new(os_seed())
    }

    /// A uniformly distributed `u64`.
    pub(crate) fn next_u64(&self) -> u64 {
        let i = self.counter.fetch_add(1, Ordering::Relaxed);
        mix64(self.seed.wrapping_add(i.wrapping_mul(GOLDEN)))
    }

    /// A uniformly distributed value in `0..n` (`0` when `n == 0`), by Lemire's
    /// multiply-shift (bias below `n / 2^64`).
    pub(crate) fn roll(&self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dice_are_reproducible_and_uniform_enough() {
        let a = Dice::new(7);
        let b = Dice::new(7);
        let xs: Vec<u64> = (0..100).map(|_| a.roll(100)).collect();
        let ys: Vec<u64> = (0..100).map(|_| b.roll(100)).collect();
        assert_eq!(xs, ys);
        assert!(xs.iter().all(|x| *x < 100));
        let d = Dice::new(1);
        let n = 100_000;
        let low = (0..n).filter(|_| d.roll(100) < 80).count();
        let share = low as f64 / n as f64;
        assert!((share - 0.8).abs() < 0.01, "share {share}");
        assert_eq!(d.roll(0), 0);
        assert_eq!(d.roll(1), 0);
    }
}
