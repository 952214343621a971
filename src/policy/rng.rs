//! A tiny seeded random number generator for jitter.
//!
//! Backoff jitter needs numbers that are cheap, spread out, and reproducible in tests; it does
//! not need cryptographic strength. [`SplitMix64`] is the generator of Steele, Lea and Flood,
//! "Fast Splittable Pseudorandom Number Generators" (OOPSLA 2014), with the output mix Vigna
//! published as the reference seeder for the xoshiro family. It owns no global state and never
//! blocks: each policy owner keeps its own, seeded with [`SplitMix64::new`] in tests and
//! [`SplitMix64::from_entropy`] in production.

use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// The golden-ratio increment of SplitMix64 (2^64 / phi, made odd).
const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// A small, fast, seeded pseudo-random generator (SplitMix64). Not for secrets.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator that yields the same sequence for the same `seed` (use this in tests).
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// A generator seeded from std's per-process random hasher keys, the time and a counter, so
    /// two generators made at the same instant (even in one thread) still differ.
    pub fn from_entropy() -> Self {
        // The counter keeps generators created in a tight loop apart even if the clock is coarse.
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut h = RandomState::new().build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        if let Ok(t) = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH) {
            h.write_u128(t.as_nanos());
        }
        SplitMix64::new(h.finish())
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GAMMA);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform number in `0..n`, without modulo bias (Lemire's multiply-and-reject, 2019).
    /// Returns 0 when `n` is 0, since the range is empty and there is nothing better to give.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        let mut m = u128::from(self.next_u64()) * u128::from(n);
        // Only the low word can show bias; values under `2^64 mod n` come from an uneven slice
        // and are drawn again (rare: fewer than n in 2^64).
        if (m as u64) < n {
            let threshold = n.wrapping_neg() % n;
            while (m as u64) < threshold {
                m = u128::from(self.next_u64()) * u128::from(n);
            }
        }
        (m >> 64) as u64
    }

    /// A uniform duration in `[0, max]`, both ends included, at nanosecond resolution.
    ///
    /// Durations longer than `u64::MAX` nanoseconds (about 584 years) are treated as that long;
    /// policies never get there because they reject anything over a year.
    pub fn duration_up_to(&mut self, max: Duration) -> Duration {
        let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
        let pick = match nanos.checked_add(1) {
            Some(n) => self.below(n),
            None => self.next_u64(),
        };
        Duration::from_nanos(pick)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_published_sequence() {
        // The first outputs of the reference algorithm for seed 1234567 (checked independently).
        let mut r = SplitMix64::new(1_234_567);
        assert_eq!(r.next_u64(), 6_457_827_717_110_365_317);
        assert_eq!(r.next_u64(), 3_203_168_211_198_807_973);
        assert_eq!(r.next_u64(), 9_817_491_932_198_370_423);
    }

    #[test]
    fn same_seed_same_sequence_and_entropy_differs() {
        let a: Vec<u64> = (0..4)
            .map({
                let mut r = SplitMix64::new(7);
                move |_| r.next_u64()
            })
            .collect();
        let mut r = SplitMix64::new(7);
        assert!(a.iter().all(|&x| x == r.next_u64()));
        let (mut x, mut y) = (SplitMix64::from_entropy(), SplitMix64::from_entropy());
        assert_ne!(x.next_u64(), y.next_u64());
    }

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut r = SplitMix64::new(42);
        assert_eq!(r.below(0), 0);
        assert_eq!(r.below(1), 0);
        let mut seen = [0u32; 6];
        for _ in 0..6000 {
            let v = r.below(6);
            assert!(v < 6);
            seen[v as usize] += 1;
        }
        // Each face of the die should come up roughly 1000 times.
        assert!(seen.iter().all(|&n| (800..1200).contains(&n)), "{seen:?}");
        let big = u64::MAX - 1;
        assert!((0..100).all(|_| r.below(big) < big));
    }

    #[test]
    fn duration_up_to_includes_both_ends() {
        let mut r = SplitMix64::new(3);
        assert_eq!(r.duration_up_to(Duration::ZERO), Duration::ZERO);
        let max = Duration::from_nanos(2);
        let mut seen = [false; 3];
        for _ in 0..200 {
            let d = r.duration_up_to(max);
            assert!(d <= max);
            seen[d.as_nanos() as usize] = true;
        }
        assert_eq!(seen, [true; 3]);
        let huge = r.duration_up_to(Duration::MAX);
        assert!(huge <= Duration::from_nanos(u64::MAX));
    }
}
