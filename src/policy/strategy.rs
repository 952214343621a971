//! Retry strategies: what to do before each attempt and after each failure.
//!
//! A [`RetryStrategy`] is the pure decision half of retrying, shared by both layers: layer 1's
//! [`RetryingSink`](crate::sink::RetryingSink) waits through a clock between attempts, and the
//! engine's endpoints arm a timer. The four strategies here are thin wrappers over
//! [`RetryPolicy`] and [`Breaker`]; none of them sleeps, spawns or does I/O, and every one
//! takes `now` as an argument.

use std::time::{Duration, Instant};

use super::{
    Attempt, Backoff, Breaker, BreakerConfig, BreakerState, Classifier, GiveUpReason, Jitter,
    Outcome, Permit, RetryDecision, RetryPolicy, SplitMix64,
};
use crate::Error;

/// Decides, for a retrying sink or an engine endpoint, when each attempt may go and what a
/// failure means.
///
/// The caller calls `proceed` before every attempt (again and again until it answers zero), then
/// `success` or `failure` with the attempt's result. `attempt.number` is 1 for the first
/// attempt of each event; `attempt.first_at` is when that event's first attempt began.
pub trait RetryStrategy<E>: Send {
    /// How long to wait before the next attempt (ZERO = go now).
    fn proceed(&mut self, event: &E, attempt: &Attempt, now: Instant) -> Duration;
    /// The attempt failed: retry, give up (-> dead letter), or disable the endpoint.
    fn failure(&mut self, event: &E, attempt: &Attempt, err: &Error, now: Instant) -> Verdict;
    /// The attempt succeeded.
    fn success(&mut self, event: &E, now: Instant);
    /// The sink was enabled again after a [`Verdict::Disable`]: forget what led there.
    fn enable(&mut self, now: Instant) {
        let _ = now;
    }
    /// The attempt `proceed` allowed was never made, or its result is unknown and it will be
    /// made again (the engine resends a request lost to a stale keep-alive connection): a
    /// breaker's half-open probe is handed back.
    fn abandon(&mut self, now: Instant) {
        let _ = now;
    }
    /// The state of the strategy's circuit breaker, for dumps; `None` if it has none.
    fn breaker(&self) -> Option<BreakerState> {
        None
    }
}

/// A boxed strategy is a strategy, so strategies can be chosen at run time.
impl<E, T: RetryStrategy<E> + ?Sized> RetryStrategy<E> for Box<T> {
    fn proceed(&mut self, event: &E, attempt: &Attempt, now: Instant) -> Duration {
        (**self).proceed(event, attempt, now)
    }
    fn failure(&mut self, event: &E, attempt: &Attempt, err: &Error, now: Instant) -> Verdict {
        (**self).failure(event, attempt, err, now)
    }
    fn success(&mut self, event: &E, now: Instant) {
        (**self).success(event, now)
    }
    fn enable(&mut self, now: Instant) {
        (**self).enable(now)
    }
    fn abandon(&mut self, now: Instant) {
        (**self).abandon(now)
    }
    fn breaker(&self) -> Option<BreakerState> {
        (**self).breaker()
    }
}

/// What a [`RetryStrategy`] makes of a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// Try again (after whatever `proceed` says).
    Retry,
    /// Give up on this event: dead-letter it.
    GiveUp(GiveUpReason),
    /// Give up on this event and disable the endpoint until it is enabled again.
    Disable(GiveUpReason),
}

/// The shared engine of the four strategies: a policy, an optional breaker, and when the
/// current event may be tried again.
#[derive(Debug, Clone)]
struct Core {
    policy: RetryPolicy,
    breaker: Option<Breaker>,
    rng: SplitMix64,
    not_before: Option<Instant>,
}

impl Core {
    fn new(policy: RetryPolicy, breaker: Option<BreakerConfig>) -> Result<Self, Error> {
        policy.validate()?;
        Ok(Core {
            policy,
            breaker: breaker.map(Breaker::new).transpose()?,
            rng: SplitMix64::from_entropy(),
            not_before: None,
        })
    }

    fn proceed(&mut self, now: Instant) -> Duration {
        // The backoff first: asking the breaker too early could take its one probe and then
        // sit on it.
        if let Some(t) = self.not_before {
            let d = t.saturating_duration_since(now);
            if !d.is_zero() {
                return d;
            }
        }
        match self.breaker.as_mut().map(|b| b.check(now)) {
            Some(Permit::Wait { until }) => until.saturating_duration_since(now),
            // A disabled breaker is reported through `failure`; here there is nothing to wait for.
            None | Some(Permit::Proceed | Permit::Probe | Permit::Disabled) => Duration::ZERO,
        }
    }

    fn failure(&mut self, attempt: &Attempt, err: &Error, now: Instant) -> Verdict {
        let mut outcome = self.policy.classifier.classify_error(err);
        if outcome == Outcome::Delivered {
            // An inner sink that fails with a 2xx status is broken; retrying it cannot help.
            outcome = Outcome::Permanent { status: 0 };
        }
        if let Some(b) = &mut self.breaker {
            match outcome {
                Outcome::Retry { .. } => {
                    b.on_failure(now);
                }
                // The endpoint answered: it is up, only this event is refused.
                Outcome::Permanent { status } if status != 0 => {
                    b.on_success(now);
                }
                // Nothing was learnt about the endpoint.
                Outcome::Permanent { .. } | Outcome::Delivered => b.abandon_probe(),
                Outcome::Gone => b.disable(now),
            }
            if b.state() == BreakerState::Disabled && outcome != Outcome::Gone {
                self.not_before = None;
                let after = b.config().disable_after.unwrap_or_default();
                return Verdict::Disable(GiveUpReason::Disabled {
                    reason: format!("failing without a success for {after:?} or more"),
                });
            }
        }
        let verdict = match self.policy.decide(attempt, &outcome, now, &mut self.rng) {
            RetryDecision::Retry { after } => {
                // A breaker that just tripped makes the wait longer; the age bound must allow it.
                let wait = match self.breaker.as_ref().map(Breaker::state) {
                    Some(BreakerState::Open { until }) => {
                        after.max(until.saturating_duration_since(now))
                    }
                    _ => after,
                };
                match self.policy.check_age(attempt, now, wait) {
                    Some(reason) => Verdict::GiveUp(reason),
                    None => {
                        self.not_before = now.checked_add(after);
                        return Verdict::Retry;
                    }
                }
            }
            RetryDecision::GiveUp(reason @ GiveUpReason::Disabled { .. }) => {
                Verdict::Disable(reason)
            }
            RetryDecision::GiveUp(reason) => Verdict::GiveUp(reason),
            RetryDecision::Delivered => Verdict::GiveUp(GiveUpReason::Permanent { status: 0 }),
        };
        self.not_before = None;
        verdict
    }

    fn success(&mut self, now: Instant) {
        self.not_before = None;
        if let Some(b) = &mut self.breaker {
            b.on_success(now);
        }
    }

    fn enable(&mut self, now: Instant) {
        self.not_before = None;
        if let Some(b) = &mut self.breaker {
            b.enable(now);
        }
    }

    fn abandon(&mut self) {
        if let Some(b) = &mut self.breaker {
            b.abandon_probe();
        }
    }

    fn set(mut self, change: impl FnOnce(&mut RetryPolicy)) -> Result<Self, Error> {
        change(&mut self.policy);
        self.policy.validate()?;
        Ok(self)
    }
}

/// The builder methods and the [`RetryStrategy`] impl every strategy shares.
macro_rules! strategy_common {
    ($t:ident) => {
        impl $t {
            /// Gives up once `n` attempts were made (the first included). Zero is rejected.
            pub fn max_attempts(self, n: u32) -> Result<Self, Error> {
                self.0.set(|p| p.max_attempts = Some(n)).map($t)
            }

            /// Gives up rather than retry an event past age `d` (at most a year, not zero).
            pub fn max_age(self, d: Duration) -> Result<Self, Error> {
                self.0.set(|p| p.max_age = Some(d)).map($t)
            }

            /// Decides which answers are retried.
            pub fn classifier(self, c: Classifier) -> Result<Self, Error> {
                self.0.set(|p| p.classifier = c).map($t)
            }

            /// Cuts `Retry-After` requests to at most `d` (at most a year; zero ignores them).
            pub fn retry_after_cap(self, d: Duration) -> Result<Self, Error> {
                self.0.set(|p| p.retry_after_cap = d).map($t)
            }

            /// Seeds the jitter, for reproducible runs (the default is seeded from entropy).
            pub fn seed(mut self, seed: u64) -> Self {
                self.0.rng = SplitMix64::new(seed);
                self
            }

            /// The retry policy in force.
            pub fn policy(&self) -> &RetryPolicy {
                &self.0.policy
            }
        }

        impl<E> RetryStrategy<E> for $t {
            fn proceed(&mut self, _event: &E, _attempt: &Attempt, now: Instant) -> Duration {
                self.0.proceed(now)
            }
            fn failure(
                &mut self,
                _event: &E,
                attempt: &Attempt,
                err: &Error,
                now: Instant,
            ) -> Verdict {
                self.0.failure(attempt, err, now)
            }
            fn success(&mut self, _event: &E, now: Instant) {
                self.0.success(now)
            }
            fn enable(&mut self, now: Instant) {
                self.0.enable(now)
            }
            fn abandon(&mut self, _now: Instant) {
                self.0.abandon()
            }
            fn breaker(&self) -> Option<BreakerState> {
                self.0.breaker.as_ref().map(Breaker::state)
            }
        }
    };
}

/// go-events' "Breaker": retry at once until `threshold` attempts in a row have failed, then
/// wait `backoff` after each further failure before trying again. The count spans events: an
/// event written while the endpoint is failing waits too. By default retries stop at the
/// one-day age limit.
#[derive(Debug, Clone)]
pub struct ConsecutiveFailures(Core);

impl ConsecutiveFailures {
    /// Waits `backoff` after `threshold` consecutive failures. Both must be non-zero.
    pub fn new(threshold: u32, backoff: Duration) -> Result<Self, Error> {
        let policy = RetryPolicy::new(Backoff::Constant(Duration::ZERO));
        Core::new(policy, Some(BreakerConfig::consecutive(threshold, backoff))).map(Self)
    }
}

strategy_common!(ConsecutiveFailures);

/// Exponential backoff with full jitter: before retry `n`, wait up to `min(max, base *
/// factor^(n-1))`. By default retries stop at the one-day age limit.
#[derive(Debug, Clone)]
pub struct ExponentialBackoff(Core);

impl ExponentialBackoff {
    /// `base` greater than zero and at most `max`, `factor` at least 1, both at most a year.
    pub fn new(base: Duration, factor: u32, max: Duration) -> Result<Self, Error> {
        let backoff = Backoff::Exponential {
            base,
            factor,
            max,
            jitter: Jitter::Full,
        };
        Core::new(RetryPolicy::new(backoff), None).map(Self)
    }

    /// Changes how the delay is randomised.
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        if let Backoff::Exponential { jitter: j, .. } = &mut self.0.policy.backoff {
            *j = jitter;
        }
        self
    }
}

strategy_common!(ExponentialBackoff);

/// Explicit delays, one per retry (for example 5s, 5m, 30m, 2h); when they run out the event
/// is given up (`schedule_exhausted`).
#[derive(Debug, Clone)]
pub struct Schedule(Core);

impl Schedule {
    /// At least one delay, each at most a year (zero allowed: retry at once).
    pub fn new(delays: impl IntoIterator<Item = Duration>) -> Result<Self, Error> {
        Core::new(RetryPolicy::new(Backoff::schedule(delays)), None).map(Self)
    }
}

strategy_common!(Schedule);

/// The full circuit breaker in front of a backoff: the breaker's cooldown (and its single
/// probe) apply across events; the backoff spaces retries of one event; a breaker that has
/// failed longer than `disable_after` disables the endpoint.
#[derive(Debug, Clone)]
pub struct CircuitBreaker(Core);

impl CircuitBreaker {
    /// Both parts are validated.
    pub fn new(config: BreakerConfig, backoff: Backoff) -> Result<Self, Error> {
        Core::new(RetryPolicy::new(backoff), Some(config)).map(Self)
    }

    /// The breaker's state.
    pub fn breaker_state(&self) -> Option<BreakerState> {
        self.0.breaker.as_ref().map(Breaker::state)
    }
}

strategy_common!(CircuitBreaker);

#[cfg(test)]
mod breaker_state_tests {
    use super::*;

    #[test]
    fn strategies_report_their_breaker_through_the_trait() {
        let now = Instant::now();
        let cfg = BreakerConfig::consecutive(1, Duration::from_secs(60));
        let mut cb: Box<dyn RetryStrategy<()>> =
            Box::new(CircuitBreaker::new(cfg, Backoff::Constant(Duration::ZERO)).unwrap());
        assert_eq!(cb.breaker(), Some(BreakerState::Closed));
        let attempt = Attempt::first(now);
        assert!(cb.proceed(&(), &attempt, now).is_zero());
        let err = Error::Status {
            code: 500,
            retry_after: None,
        };
        let _ = cb.failure(&(), &attempt, &err, now);
        assert!(matches!(cb.breaker(), Some(BreakerState::Open { .. })));
        let exp: Box<dyn RetryStrategy<()>> = Box::new(
            ExponentialBackoff::new(Duration::from_millis(1), 2, Duration::from_secs(1)).unwrap(),
        );
        assert_eq!(exp.breaker(), None);
    }
}
