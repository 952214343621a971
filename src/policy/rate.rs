//! How fast an endpoint may be sent to: a token bucket (a steady rate with a burst), and
//! adaptive concurrency (how many requests at once, learnt from the endpoint's answers).
//!
//! Both are pure state machines over `now`, like the rest of the core: they never sleep. The
//! engine's endpoint asks [`TokenBucket::take`] before each request (one bucket for events,
//! one for requests) and waits on a timer for the answer it gives; it asks
//! [`Adaptive::limit`] how many requests may be in flight and tells it how each one went.
//!
//! [`Adaptive`] is additive-increase / multiplicative-decrease, after Vector's adaptive
//! request concurrency: the limit grows by one request per round trip while round trips stay
//! near their usual length, and is cut by a factor when the endpoint pushes back (429, 503, a
//! timeout) or round trips grow well past their usual length, at most once per round trip.

use std::time::{Duration, Instant};

use crate::Error;

/// A steady rate with a burst: up to `burst` at once, refilled at `per_second`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// How many per second, on average (more than zero).
    pub per_second: f64,
    /// How many at once (at least 1, and at least the largest single take).
    pub burst: f64,
}

impl RateLimit {
    /// `per_second` on average, with a burst of one second's worth (at least 1).
    pub fn per_second(per_second: f64) -> Self {
        RateLimit {
            per_second,
            burst: per_second.max(1.0),
        }
    }

    /// Refuses a rate that is not a positive finite number, or a burst below 1.
    pub fn validate(&self, field: &'static str) -> Result<(), Error> {
        if !(self.per_second.is_finite() && self.per_second > 0.0) {
            return Err(Error::config(field, "the rate must be a positive number"));
        }
        if !(self.burst.is_finite() && self.burst >= 1.0) {
            return Err(Error::config(field, "the burst must be at least 1"));
        }
        Ok(())
    }
}

/// A token bucket (see [`RateLimit`]). Starts full.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    limit: RateLimit,
    tokens: f64,
    at: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket for `limit`.
    pub fn new(limit: RateLimit) -> Self {
        TokenBucket {
            limit,
            tokens: limit.burst,
            at: None,
        }
    }

    fn refill(&mut self, now: Instant) {
        if let Some(at) = self.at {
            let dt = now.saturating_duration_since(at).as_secs_f64();
            self.tokens = (self.tokens + dt * self.limit.per_second).min(self.limit.burst);
        }
        self.at = Some(now);
    }

    /// How long until `n` could be taken (zero: now). Takes nothing.
    pub fn wait(&mut self, n: f64, now: Instant) -> Duration {
        self.refill(now);
        // More than the burst can never be there at once: it waits for a full bucket, and the
        // take runs the bucket into debt.
        let need = n.min(self.limit.burst);
        if self.tokens >= need {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((need - self.tokens) / self.limit.per_second)
                .max(Duration::from_micros(1))
        }
    }

    /// Takes `n` now (call after [`wait`](Self::wait) said zero). A take larger than the
    /// burst leaves the bucket in debt, paid back before the next one.
    pub fn take(&mut self, n: f64, now: Instant) {
        self.refill(now);
        self.tokens -= n;
    }
}

/// How [`Adaptive`] moves its limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptiveConfig {
    /// The limit's ceiling (the endpoint's `max_in_flight`).
    pub max: usize,
    /// The factor a push-back multiplies the limit by (0 < f < 1). Default 0.5.
    pub decrease: f64,
    /// How far past its usual length (as a multiple of the mean deviation) a round trip may
    /// grow before it counts as push-back. Default 3.
    pub rtt_deviations: f64,
}

impl AdaptiveConfig {
    /// Up to `max` at once, halving on push-back.
    pub fn up_to(max: usize) -> Self {
        AdaptiveConfig {
            max,
            decrease: 0.5,
            rtt_deviations: 3.0,
        }
    }

    /// Refuses a ceiling of 0 or a factor outside (0, 1).
    pub fn validate(&self, field: &'static str) -> Result<(), Error> {
        if self.max == 0 {
            return Err(Error::config(field, "the ceiling must be at least 1"));
        }
        if !(self.decrease > 0.0 && self.decrease < 1.0) {
            return Err(Error::config(field, "the decrease must be between 0 and 1"));
        }
        if !(self.rtt_deviations.is_finite() && self.rtt_deviations > 0.0) {
            return Err(Error::config(field, "rtt_deviations must be positive"));
        }
        Ok(())
    }
}

/// Adaptive concurrency (see the module docs): how many requests may be in flight now.
#[derive(Debug, Clone)]
pub struct Adaptive {
    config: AdaptiveConfig,
    limit: usize,
    /// Answers since the limit last grew: it grows once a round trip's worth came.
    acks: usize,
    /// Round-trip mean and mean deviation (exponentially weighted), in seconds.
    rtt: Option<(f64, f64)>,
    /// No second cut before this (one per round trip).
    calm_until: Option<Instant>,
}

/// What became of one request, for [`Adaptive::on_result`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Pushback {
    /// Answered, not pushing back (any status but 429 and 503).
    None,
    /// 429, 503, or no answer in time: the endpoint asks for less.
    Yes,
}

impl Adaptive {
    /// Starts at one request in flight.
    pub fn new(config: AdaptiveConfig) -> Self {
        Adaptive {
            config,
            limit: 1,
            acks: 0,
            rtt: None,
            calm_until: None,
        }
    }

    /// Requests that may be in flight now (1 to the ceiling).
    pub fn limit(&self) -> usize {
        self.limit.clamp(1, self.config.max)
    }

    /// A request that took `rtt` ended at `now`, pushing back or not.
    pub fn on_result(&mut self, rtt: Duration, pushback: Pushback, now: Instant) {
        let secs = rtt.as_secs_f64();
        let slow = match self.rtt {
            Some((mean, dev)) => secs > mean + self.config.rtt_deviations * dev.max(mean * 0.1),
            None => false,
        };
        if pushback == Pushback::Yes || slow {
            if self.calm_until.is_none_or(|t| now >= t) {
                let cut = (self.limit as f64 * self.config.decrease).floor() as usize;
                self.limit = cut.max(1);
                self.acks = 0;
                self.calm_until = now.checked_add(rtt.max(Duration::from_millis(1)));
            }
        } else {
            // One more per round trip: once `limit` answers came since it last grew.
            self.acks += 1;
            if self.acks >= self.limit && self.limit < self.config.max {
                self.limit += 1;
                self.acks = 0;
            }
        }
        if pushback == Pushback::None {
            self.rtt = Some(match self.rtt {
                None => (secs, secs / 2.0),
                Some((mean, dev)) => {
                    let mean2 = mean + (secs - mean) / 8.0;
                    (mean2, dev + ((secs - mean).abs() - dev) / 4.0)
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_bucket_gives_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(RateLimit {
            per_second: 10.0,
            burst: 5.0,
        });
        for _ in 0..5 {
            assert_eq!(b.wait(1.0, t0), Duration::ZERO);
            b.take(1.0, t0);
        }
        assert_eq!(b.wait(1.0, t0), 100 * MS, "one token every 100 ms");
        assert_eq!(b.wait(1.0, t0 + 100 * MS), Duration::ZERO);
        // Idle time refills only up to the burst.
        let later = t0 + Duration::from_secs(60);
        assert_eq!(b.wait(5.0, later), Duration::ZERO);
        b.take(5.0, later);
        assert!(b.wait(1.0, later) > Duration::ZERO);
    }

    #[test]
    fn a_take_over_the_burst_waits_for_a_full_bucket_then_runs_into_debt() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(RateLimit {
            per_second: 100.0,
            burst: 10.0,
        });
        b.take(5.0, t0);
        assert_eq!(b.wait(50.0, t0), 50 * MS, "until full");
        let t1 = t0 + 50 * MS;
        b.take(50.0, t1);
        // 40 in debt, plus 1 for the next: 410 ms at 100/s.
        assert_eq!(b.wait(1.0, t1), 410 * MS);
    }

    #[test]
    fn bad_limits_are_config_errors() {
        for (rate, burst) in [(0.0, 1.0), (-1.0, 1.0), (f64::NAN, 1.0), (1.0, 0.5)] {
            let l = RateLimit {
                per_second: rate,
                burst,
            };
            assert!(matches!(l.validate("rate"), Err(Error::Config { .. })));
        }
        assert!(AdaptiveConfig::up_to(0).validate("adaptive").is_err());
        let mut c = AdaptiveConfig::up_to(4);
        c.decrease = 1.0;
        assert!(c.validate("adaptive").is_err());
    }

    #[test]
    fn concurrency_grows_by_one_per_round_trip_and_halves_on_pushback() {
        let mut t = Instant::now();
        let mut a = Adaptive::new(AdaptiveConfig::up_to(8));
        assert_eq!(a.limit(), 1);
        // Steady 10 ms round trips: after each "round trip" of `limit` answers, one more.
        for want in 2..=8 {
            let n = a.limit();
            for _ in 0..n {
                t += 10 * MS;
                a.on_result(10 * MS, Pushback::None, t);
            }
            assert_eq!(a.limit(), want);
        }
        for _ in 0..100 {
            t += 10 * MS;
            a.on_result(10 * MS, Pushback::None, t);
        }
        assert_eq!(a.limit(), 8, "never past the ceiling");
        t += 10 * MS;
        a.on_result(10 * MS, Pushback::Yes, t);
        assert_eq!(a.limit(), 4);
        // A second 429 within the same round trip does not cut again.
        a.on_result(10 * MS, Pushback::Yes, t + MS);
        assert_eq!(a.limit(), 4);
        a.on_result(10 * MS, Pushback::Yes, t + 20 * MS);
        assert_eq!(a.limit(), 2);
    }

    #[test]
    fn rising_round_trips_count_as_pushback() {
        let mut t = Instant::now();
        let mut a = Adaptive::new(AdaptiveConfig::up_to(16));
        for _ in 0..200 {
            t += 10 * MS;
            a.on_result(10 * MS, Pushback::None, t);
        }
        assert_eq!(a.limit(), 16);
        t += 10 * MS;
        a.on_result(200 * MS, Pushback::None, t);
        assert_eq!(a.limit(), 8, "twenty times the usual round trip");
        // Slightly slower than usual is no push-back.
        t += Duration::from_secs(1);
        let before = a.limit();
        a.on_result(11 * MS, Pushback::None, t);
        assert!(a.limit() >= before);
    }
}
