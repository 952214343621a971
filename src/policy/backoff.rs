//! How long to wait before each retry.
//!
//! A [`Backoff`] is a pure function from the retry number to a delay: constant, exponential
//! (capped, with optional jitter so a crowd of clients that failed together do not retry
//! together), or an explicit schedule such as 5s, 5m, 30m, 2h. It never sleeps and never
//! panics: the arithmetic saturates at the cap, and [`Backoff::validate`] turns nonsense
//! (a zero base, a factor of zero, a cap below the base, delays over a year) into
//! [`Error::Config`] before anything runs.

use std::time::Duration;

use crate::Error;
use crate::policy::SplitMix64;

/// The longest delay, age or cooldown any policy accepts. Anything longer is almost certainly
/// a unit mistake (milliseconds given as seconds), and rejecting it keeps `Instant` arithmetic
/// far from overflow.
pub const MAX_POLICY_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Rejects durations over [`MAX_POLICY_DURATION`], and zero unless `allow_zero`.
pub(crate) fn check_duration(
    field: &'static str,
    d: Duration,
    allow_zero: bool,
) -> Result<(), Error> {
    if d.is_zero() && !allow_zero {
        return Err(Error::config(field, "must be greater than zero"));
    }
    if d > MAX_POLICY_DURATION {
        return Err(Error::config(
            field,
            format!("{d:?} is longer than the one-year limit"),
        ));
    }
    Ok(())
}

/// How an exponential delay is randomised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Jitter {
    /// No randomness: exactly the computed delay.
    None,
    /// Uniform in `[0, d]` ("full jitter"): spreads retries the most; the default.
    #[default]
    Full,
    /// `d/2` plus uniform in `[0, d/2]` ("equal jitter"): never retries sooner than half the delay.
    Equal,
}

impl Jitter {
    /// Applies the jitter to `d`; the result is always within `[0, d]`.
    pub fn apply(self, d: Duration, rng: &mut SplitMix64) -> Duration {
        match self {
            Jitter::None => d,
            Jitter::Full => rng.duration_up_to(d),
            Jitter::Equal => {
                let half = d / 2;
                // `d - half` rather than `half` so an odd nanosecond is not lost from the top.
                half + rng.duration_up_to(d - half)
            }
        }
    }
}

/// The delay before each retry.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backoff {
    /// The same delay before every retry (zero is allowed: retry at once).
    Constant(Duration),
    /// `base * factor^(retry - 1)`, capped at `max`, then jittered.
    Exponential {
        /// The delay before the first retry (before jitter). Must be greater than zero.
        base: Duration,
        /// The growth per retry; 1 makes it constant, 2 doubles. Must be at least 1.
        factor: u32,
        /// The cap (before jitter). Must be at least `base`.
        max: Duration,
        /// How the capped delay is randomised.
        jitter: Jitter,
    },
    /// Explicit delays, one per retry; when they run out the event is given up.
    Schedule(Vec<Duration>),
}

impl Backoff {
    /// Exponential backoff doubling from `base` up to `max`, with full jitter.
    pub fn exponential(base: Duration, max: Duration) -> Self {
        Backoff::Exponential {
            base,
            factor: 2,
            max,
            jitter: Jitter::Full,
        }
    }

    /// The same delay before every retry.
    pub fn constant(d: Duration) -> Self {
        Backoff::Constant(d)
    }

    /// Explicit delays, one per retry (for example 5s, 5m, 30m, 2h).
    pub fn schedule(delays: impl IntoIterator<Item = Duration>) -> Self {
        Backoff::Schedule(delays.into_iter().collect())
    }

    /// The delay before retry number `retry` (1 is the first retry, after the first failed
    /// attempt; 0 is treated as 1). `None` means a schedule has run out: give up.
    pub fn delay(&self, retry: u32, rng: &mut SplitMix64) -> Option<Duration> {
        let retry = retry.max(1);
        match self {
            Backoff::Constant(d) => Some(*d),
            Backoff::Exponential {
                base,
                factor,
                max,
                jitter,
            } => {
                let capped = grow(*base, *factor, retry - 1, *max);
                Some(jitter.apply(capped, rng))
            }
            Backoff::Schedule(delays) => delays.get(retry as usize - 1).copied(),
        }
    }

    /// The largest delay this backoff can ever return (the cap, or the longest scheduled delay).
    pub fn max_delay(&self) -> Duration {
        match self {
            Backoff::Constant(d) => *d,
            Backoff::Exponential { max, .. } => *max,
            Backoff::Schedule(delays) => delays.iter().copied().max().unwrap_or_default(),
        }
    }

    /// Checks the configuration: factor at least 1, base greater than zero and at most `max`,
    /// every duration at most a year, a schedule not empty.
    pub fn validate(&self) -> Result<(), Error> {
        match self {
            Backoff::Constant(d) => check_duration("backoff.delay", *d, true),
            Backoff::Exponential {
                base, factor, max, ..
            } => {
                if *factor == 0 {
                    return Err(Error::config(
                        "backoff.factor",
                        "must be at least 1 (1 keeps the delay constant, 2 doubles it)",
                    ));
                }
                check_duration("backoff.base", *base, false)?;
                check_duration("backoff.max", *max, false)?;
                if base > max {
                    return Err(Error::config(
                        "backoff.max",
                        format!("{max:?} is below the base delay {base:?}"),
                    ));
                }
                Ok(())
            }
            Backoff::Schedule(delays) => {
                if delays.is_empty() {
                    return Err(Error::config(
                        "backoff.schedule",
                        "needs at least one delay",
                    ));
                }
                delays
                    .iter()
                    .try_for_each(|d| check_duration("backoff.schedule", *d, true))
            }
        }
    }
}

/// `min(max, base * factor^exp)` without overflow. Works in nanoseconds as `u128`: if
/// `factor^exp` overflows even that, the product is beyond any `Duration`, so the cap wins.
pub(crate) fn grow(base: Duration, factor: u32, exp: u32, max: Duration) -> Duration {
    let grown = u128::from(factor)
        .checked_pow(exp)
        .and_then(|m| base.as_nanos().checked_mul(m));
    match grown {
        Some(n) if n < max.as_nanos() => {
            // `n < max` so it fits a Duration: split it rather than squeeze it into u64 nanos.
            let secs = (n / 1_000_000_000) as u64;
            Duration::new(secs, (n % 1_000_000_000) as u32)
        }
        _ => max,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: Duration = Duration::from_secs(1);

    fn exp(base: Duration, factor: u32, max: Duration, jitter: Jitter) -> Backoff {
        Backoff::Exponential {
            base,
            factor,
            max,
            jitter,
        }
    }

    #[test]
    fn exponential_grows_and_caps() {
        let b = exp(S, 2, 10 * S, Jitter::None);
        let mut rng = SplitMix64::new(1);
        let got: Vec<_> = (0..=6).map(|r| b.delay(r, &mut rng).unwrap()).collect();
        assert_eq!(got, [S, S, 2 * S, 4 * S, 8 * S, 10 * S, 10 * S]);
        assert_eq!(b.delay(u32::MAX, &mut rng), Some(10 * S));
        let b = exp(S, 1, 10 * S, Jitter::None);
        assert_eq!(b.delay(50, &mut rng), Some(S));
        // Huge base and factor: saturates instead of overflowing.
        let b = exp(
            MAX_POLICY_DURATION,
            u32::MAX,
            MAX_POLICY_DURATION,
            Jitter::None,
        );
        assert_eq!(b.delay(1000, &mut rng), Some(MAX_POLICY_DURATION));
        assert_eq!(grow(S, 2, 200, Duration::MAX), Duration::MAX);
        assert_eq!(
            grow(Duration::from_nanos(1), 2, 40, Duration::MAX),
            Duration::from_nanos(1 << 40)
        );
    }

    #[test]
    fn jitter_modes_stay_in_their_bands() {
        let mut rng = SplitMix64::new(9);
        let d = 8 * S;
        let full: Vec<_> = (0..200).map(|_| Jitter::Full.apply(d, &mut rng)).collect();
        assert!(full.iter().all(|x| *x <= d));
        assert!(
            full.iter().any(|x| *x < d / 4),
            "full jitter reaches low values"
        );
        let equal: Vec<_> = (0..200).map(|_| Jitter::Equal.apply(d, &mut rng)).collect();
        assert!(equal.iter().all(|x| *x >= d / 2 && *x <= d));
        assert_eq!(Jitter::None.apply(d, &mut rng), d);
        let odd = Duration::from_nanos(3);
        assert!((0..50).all(|_| Jitter::Equal.apply(odd, &mut rng) >= Duration::from_nanos(1)));
    }

    #[test]
    fn schedule_runs_out() {
        let b = Backoff::schedule([5 * S, 300 * S]);
        let mut rng = SplitMix64::new(1);
        assert_eq!(b.delay(1, &mut rng), Some(5 * S));
        assert_eq!(b.delay(2, &mut rng), Some(300 * S));
        assert_eq!(b.delay(3, &mut rng), None);
        assert_eq!(b.delay(u32::MAX, &mut rng), None);
        assert_eq!(b.max_delay(), 300 * S);
        assert_eq!(Backoff::constant(S).delay(99, &mut rng), Some(S));
    }

    #[test]
    fn validate_rejects_nonsense() {
        let year = MAX_POLICY_DURATION;
        let bad = [
            (exp(S, 0, 10 * S, Jitter::Full), "backoff.factor"),
            (exp(Duration::ZERO, 2, S, Jitter::Full), "backoff.base"),
            (exp(10 * S, 2, S, Jitter::Full), "backoff.max"),
            (exp(S, 2, year + S, Jitter::Full), "backoff.max"),
            (Backoff::Schedule(vec![]), "backoff.schedule"),
            (Backoff::schedule([S, year * 2]), "backoff.schedule"),
            (Backoff::constant(year + S), "backoff.delay"),
        ];
        for (b, field) in bad {
            match b.validate() {
                Err(Error::Config { field: f, .. }) => assert_eq!(f, field, "{b:?}"),
                other => panic!("{b:?} gave {other:?}"),
            }
        }
        let good = [
            Backoff::exponential(S, 60 * S),
            exp(S, 1, S, Jitter::Equal),
            Backoff::schedule([Duration::ZERO, year]),
            Backoff::constant(Duration::ZERO),
        ];
        for b in good {
            assert!(b.validate().is_ok(), "{b:?}");
        }
    }

    fn any_jitter() -> impl Strategy<Value = Jitter> {
        prop_oneof![Just(Jitter::None), Just(Jitter::Full), Just(Jitter::Equal)]
    }

    proptest! {
        #[test]
        fn backoff_never_exceeds_max(
            base_ms in 1u64..100_000,
            extra_ms in 0u64..10_000_000,
            factor in 1u32..=u32::MAX,
            retry in 0u32..=u32::MAX,
            jitter in any_jitter(),
            seed in any::<u64>(),
        ) {
            let base = Duration::from_millis(base_ms);
            let max = base + Duration::from_millis(extra_ms);
            let b = exp(base, factor, max, jitter);
            prop_assert!(b.validate().is_ok());
            let d = b.delay(retry, &mut SplitMix64::new(seed)).unwrap();
            prop_assert!(d <= max);
            if jitter == Jitter::None {
                prop_assert!(d >= base);
            }
        }

        #[test]
        fn jitter_stays_in_zero_to_d(nanos in any::<u64>(), jitter in any_jitter(), seed in any::<u64>()) {
            let d = Duration::from_nanos(nanos);
            let j = jitter.apply(d, &mut SplitMix64::new(seed));
            prop_assert!(j <= d);
            if jitter == Jitter::Equal {
                prop_assert!(j >= d / 2);
            }
        }
    }
}
