//! Whether to retry a failed attempt, and when.
//!
//! [`RetryPolicy::decide`] is the one place that turns "attempt N of this event failed like
//! so, and it is now T" into "retry after D" or "give up, because R". It is a pure function:
//! it takes the time as an argument, never sleeps, and its arithmetic saturates, so an attempt
//! counter at `u32::MAX` or a clock that jumped backwards gives a sensible answer instead of a
//! panic. Retries are always bounded: by attempts, by age, or by the end of a schedule.

use std::fmt;
use std::time::{Duration, Instant};

use serde::{Serialize, Serializer};

use crate::Error;
use crate::policy::backoff::check_duration;
use crate::policy::{Backoff, Classifier, Outcome, SplitMix64};

/// How long events are retried when no other bound is set.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// The default ceiling on how long a `Retry-After` may make us wait.
pub const DEFAULT_RETRY_AFTER_CAP: Duration = Duration::from_secs(3600);

/// Where one event is in its delivery attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// The attempt's number, 1 for the first. When deciding after a failure it is the number of
    /// attempts made so far.
    pub number: u32,
    /// When the first attempt was made; the event's age is measured from here.
    pub first_at: Instant,
}

impl Attempt {
    /// The first attempt, made at `now`.
    pub fn first(now: Instant) -> Self {
        Attempt {
            number: 1,
            first_at: now,
        }
    }

    /// The attempt after this one (the counter saturates at `u32::MAX`).
    pub fn next(self) -> Self {
        Attempt {
            number: self.number.saturating_add(1),
            ..self
        }
    }

    /// How long ago the first attempt was; zero if the clock went backwards.
    pub fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.first_at)
    }
}

/// Why an event was given up on. Serialises as `{"kind": "<snake_case tag>", ...fields}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum GiveUpReason {
    /// The endpoint refused the event for good (a non-retryable 4xx, or status 0 when the
    /// event could not even be sent).
    Permanent {
        /// The HTTP status, or 0.
        status: u16,
    },
    /// The attempt limit was reached.
    Attempts {
        /// How many attempts were made.
        attempts: u32,
    },
    /// Retrying again would take the event past its maximum age.
    Age {
        /// How old the event was when it was given up (milliseconds in JSON).
        #[serde(rename = "age_ms", serialize_with = "as_millis")]
        age: Duration,
    },
    /// Every delay of the schedule has been used.
    ScheduleExhausted,
    /// The endpoint is disabled (gone, failing too long, or disabled by hand).
    Disabled {
        /// Why it is disabled.
        reason: String,
    },
}

fn as_millis<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl GiveUpReason {
    /// The reason's tag, as in JSON and metrics: `permanent`, `attempts`, `age`,
    /// `schedule_exhausted` or `disabled`.
    pub fn as_str(&self) -> &'static str {
        match self {
            GiveUpReason::Permanent { .. } => "permanent",
            GiveUpReason::Attempts { .. } => "attempts",
            GiveUpReason::Age { .. } => "age",
            GiveUpReason::ScheduleExhausted => "schedule_exhausted",
            GiveUpReason::Disabled { .. } => "disabled",
        }
    }
}

impl fmt::Display for GiveUpReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GiveUpReason::Permanent { status: 0 } => f.write_str("permanent failure"),
            GiveUpReason::Permanent { status } => {
                write!(f, "permanent failure (HTTP {status})")
            }
            GiveUpReason::Attempts { attempts } => write!(f, "gave up after {attempts} attempts"),
            GiveUpReason::Age { age } => write!(f, "gave up at age {age:?}"),
            GiveUpReason::ScheduleExhausted => f.write_str("retry schedule exhausted"),
            GiveUpReason::Disabled { reason } => write!(f, "endpoint disabled: {reason}"),
        }
    }
}

/// What to do after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RetryDecision {
    /// The attempt succeeded: nothing more to do. (Returned for [`Outcome::Delivered`], so a
    /// driver can feed every outcome through [`RetryPolicy::decide`].)
    Delivered,
    /// Try again once `after` has passed.
    Retry {
        /// How long to wait first.
        after: Duration,
    },
    /// Stop trying; dead-letter the event (and for `Disabled`, stop sending to the endpoint).
    GiveUp(GiveUpReason),
}

/// When to retry and when to give up.
///
/// Build one with [`RetryPolicy::new`] and adjust the public fields; [`validate`](Self::validate)
/// checks them. At least one bound must hold: `max_attempts`, `max_age` or a
/// [`Backoff::Schedule`] (which ends by itself).
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// The delay before each retry.
    pub backoff: Backoff,
    /// Give up once this many attempts were made (the first one included).
    pub max_attempts: Option<u32>,
    /// Give up rather than retry past this age (measured from the first attempt).
    pub max_age: Option<Duration>,
    /// The longest a `Retry-After` may make us wait (longer requests are cut to this).
    pub retry_after_cap: Duration,
    /// What counts as retryable.
    pub classifier: Classifier,
}

impl RetryPolicy {
    /// A policy with `backoff`, no attempt limit, a one-day age limit
    /// ([`DEFAULT_MAX_AGE`]; none for a schedule, which ends by itself), a one-hour
    /// `Retry-After` cap and the default classifier.
    pub fn new(backoff: Backoff) -> Self {
        let max_age = match backoff {
            Backoff::Schedule(_) => None,
            _ => Some(DEFAULT_MAX_AGE),
        };
        RetryPolicy {
            backoff,
            max_attempts: None,
            max_age,
            retry_after_cap: DEFAULT_RETRY_AFTER_CAP,
            classifier: Classifier::default(),
        }
    }

    /// Checks the backoff and the bounds: `max_attempts` at least 1, `max_age` greater than zero,
    /// every duration at most a year, and retries bounded one way or another.
    pub fn validate(&self) -> Result<(), Error> {
        self.backoff.validate()?;
        if self.max_attempts == Some(0) {
            return Err(Error::config(
                "retry.max_attempts",
                "must be at least 1 (the first attempt counts)",
            ));
        }
        if let Some(age) = self.max_age {
            check_duration("retry.max_age", age, false)?;
        }
        // Zero is allowed: it means "never wait longer than the backoff says".
        check_duration("retry.retry_after_cap", self.retry_after_cap, true)?;
        let schedule = matches!(self.backoff, Backoff::Schedule(_));
        if self.max_attempts.is_none() && self.max_age.is_none() && !schedule {
            return Err(Error::config(
                "retry.max_attempts",
                "retries must be bounded: set max_attempts or max_age, or use a schedule",
            ));
        }
        Ok(())
    }

    /// Decides what follows `attempt`, which ended in `outcome`, at `now`.
    ///
    /// - `Delivered` -> [`RetryDecision::Delivered`].
    /// - `Permanent` -> give up at once; `Gone` -> give up as `Disabled`.
    /// - `Retry` -> give up if `max_attempts` attempts were made, or if the backoff has no
    ///   delay left (schedule exhausted). Otherwise the delay is the backoff's, raised to the
    ///   server's `Retry-After` (cut to `retry_after_cap`) when one came. If waiting that long
    ///   would take the event past `max_age`, give up now instead of waiting for nothing.
    pub fn decide(
        &self,
        attempt: &Attempt,
        outcome: &Outcome,
        now: Instant,
        rng: &mut SplitMix64,
    ) -> RetryDecision {
        let retry_after = match *outcome {
            Outcome::Delivered => return RetryDecision::Delivered,
            Outcome::Permanent { status } => {
                return RetryDecision::GiveUp(GiveUpReason::Permanent { status });
            }
            Outcome::Gone => {
                return RetryDecision::GiveUp(GiveUpReason::Disabled {
                    reason: "endpoint answered 410 Gone".into(),
                });
            }
            Outcome::Retry { retry_after, .. } => retry_after,
        };
        if let Some(max) = self.max_attempts
            && attempt.number >= max
        {
            return RetryDecision::GiveUp(GiveUpReason::Attempts {
                attempts: attempt.number,
            });
        }
        let Some(backoff) = self.backoff.delay(attempt.number, rng) else {
            return RetryDecision::GiveUp(GiveUpReason::ScheduleExhausted);
        };
        let after = match retry_after {
            Some(asked) => backoff.max(asked.min(self.retry_after_cap)),
            None => backoff,
        };
        match self.check_age(attempt, now, after) {
            Some(reason) => RetryDecision::GiveUp(reason),
            None => RetryDecision::Retry { after },
        }
    }

    /// `Some(GiveUpReason::Age)` if retrying after `delay` would take the event past `max_age`.
    /// Drivers that add waits of their own (a breaker's cooldown) check the longer wait here.
    pub fn check_age(
        &self,
        attempt: &Attempt,
        now: Instant,
        delay: Duration,
    ) -> Option<GiveUpReason> {
        let max_age = self.max_age?;
        let age = attempt.age(now);
        (age.saturating_add(delay) > max_age).then_some(GiveUpReason::Age { age })
    }

    /// Classifies `err` with this policy's classifier, then [`decide`](Self::decide)s.
    pub fn decide_error(
        &self,
        attempt: &Attempt,
        err: &Error,
        now: Instant,
        rng: &mut SplitMix64,
    ) -> RetryDecision {
        self.decide(attempt, &self.classifier.classify_error(err), now, rng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Jitter, MAX_POLICY_DURATION};
    use proptest::prelude::*;

    const S: Duration = Duration::from_secs(1);

    fn retry(retry_after: Option<Duration>, throttled: bool) -> Outcome {
        Outcome::Retry {
            retry_after,
            throttled,
        }
    }

    fn constant(d: Duration) -> RetryPolicy {
        RetryPolicy::new(Backoff::constant(d))
    }

    fn at(number: u32, first_at: Instant) -> Attempt {
        Attempt { number, first_at }
    }

    #[test]
    fn decide_table() {
        let t0 = Instant::now();
        let mut rng = SplitMix64::new(1);
        let mut p = constant(10 * S);
        p.max_attempts = Some(3);
        p.max_age = Some(100 * S);
        p.retry_after_cap = 60 * S;
        let give_up = |r| RetryDecision::GiveUp(r);
        let table = [
            // (attempt number, seconds since first, outcome, decision)
            (1, 0, Outcome::Delivered, RetryDecision::Delivered),
            (
                1,
                0,
                retry(None, false),
                RetryDecision::Retry { after: 10 * S },
            ),
            (
                2,
                50,
                retry(None, false),
                RetryDecision::Retry { after: 10 * S },
            ),
            (
                3,
                50,
                retry(None, false),
                give_up(GiveUpReason::Attempts { attempts: 3 }),
            ),
            (
                9,
                50,
                retry(None, false),
                give_up(GiveUpReason::Attempts { attempts: 9 }),
            ),
            (
                1,
                0,
                Outcome::Permanent { status: 404 },
                give_up(GiveUpReason::Permanent { status: 404 }),
            ),
            // Retry-After above the backoff wins, below it the backoff wins, above the cap is cut.
            (
                1,
                0,
                retry(Some(30 * S), true),
                RetryDecision::Retry { after: 30 * S },
            ),
            (
                1,
                0,
                retry(Some(S), true),
                RetryDecision::Retry { after: 10 * S },
            ),
            (
                1,
                0,
                retry(Some(3600 * S), true),
                RetryDecision::Retry { after: 60 * S },
            ),
            (
                1,
                0,
                retry(Some(30 * S), false),
                RetryDecision::Retry { after: 30 * S },
            ),
            // Exactly reaching max_age is allowed; passing it gives up now, with the age now.
            (
                1,
                90,
                retry(None, false),
                RetryDecision::Retry { after: 10 * S },
            ),
            (
                1,
                91,
                retry(None, false),
                give_up(GiveUpReason::Age { age: 91 * S }),
            ),
            (
                1,
                50,
                retry(Some(60 * S), true),
                give_up(GiveUpReason::Age { age: 50 * S }),
            ),
        ];
        for (n, secs, outcome, want) in table {
            let got = p.decide(&at(n, t0), &outcome, t0 + secs * S, &mut rng);
            assert_eq!(got, want, "attempt {n} at {secs}s after {outcome:?}");
        }
        let gone = p.decide(&at(1, t0), &Outcome::Gone, t0, &mut rng);
        assert!(matches!(
            gone,
            RetryDecision::GiveUp(GiveUpReason::Disabled { .. })
        ));
    }

    #[test]
    fn schedule_ends_and_clock_backwards_is_age_zero() {
        let t0 = Instant::now() + 1000 * S;
        let mut rng = SplitMix64::new(1);
        let p = RetryPolicy::new(Backoff::schedule([5 * S, 300 * S]));
        assert_eq!(p.max_age, None, "a schedule bounds itself");
        let r = retry(None, false);
        assert_eq!(
            p.decide(&at(1, t0), &r, t0, &mut rng),
            RetryDecision::Retry { after: 5 * S }
        );
        assert_eq!(
            p.decide(&at(2, t0), &r, t0, &mut rng),
            RetryDecision::Retry { after: 300 * S }
        );
        assert_eq!(
            p.decide(&at(3, t0), &r, t0, &mut rng),
            RetryDecision::GiveUp(GiveUpReason::ScheduleExhausted)
        );
        let mut p = constant(S);
        p.max_age = Some(10 * S);
        let earlier = t0 - 500 * S;
        assert_eq!(at(1, t0).age(earlier), Duration::ZERO);
        assert_eq!(
            p.decide(&at(1, t0), &r, earlier, &mut rng),
            RetryDecision::Retry { after: S }
        );
    }

    #[test]
    fn decide_error_classifies_first() {
        let t0 = Instant::now();
        let mut rng = SplitMix64::new(1);
        let p = constant(S);
        let e = Error::Status {
            code: 400,
            retry_after: None,
        };
        assert_eq!(
            p.decide_error(&at(1, t0), &e, t0, &mut rng),
            RetryDecision::GiveUp(GiveUpReason::Permanent { status: 400 })
        );
        let e = Error::Status {
            code: 503,
            retry_after: Some(20 * S),
        };
        assert_eq!(
            p.decide_error(&at(1, t0), &e, t0, &mut rng),
            RetryDecision::Retry { after: 20 * S }
        );
    }

    #[test]
    fn validate_rejects_nonsense() {
        let ok = constant(S);
        assert!(ok.validate().is_ok());
        type Change = fn(&mut RetryPolicy);
        let cases: [(Change, &str); 6] = [
            (|p| p.max_attempts = Some(0), "retry.max_attempts"),
            (|p| p.max_age = Some(Duration::ZERO), "retry.max_age"),
            (
                |p| p.max_age = Some(Duration::from_secs(400 * 24 * 3600)),
                "retry.max_age",
            ),
            (
                |p| p.retry_after_cap = Duration::MAX,
                "retry.retry_after_cap",
            ),
            (|p| p.max_age = None, "retry.max_attempts"),
            (
                |p| p.backoff = Backoff::Schedule(vec![]),
                "backoff.schedule",
            ),
        ];
        for (change, field) in cases {
            let mut p = ok.clone();
            change(&mut p);
            match p.validate() {
                Err(Error::Config { field: f, .. }) => assert_eq!(f, field),
                other => panic!("expected {field}: {other:?}"),
            }
        }
        let mut p = ok.clone();
        p.max_age = None;
        p.max_attempts = Some(1);
        assert!(p.validate().is_ok());
    }

    #[test]
    fn reasons_display_and_serialize() {
        let cases = [
            (
                GiveUpReason::Permanent { status: 404 },
                r#"{"kind":"permanent","status":404}"#,
                "HTTP 404",
            ),
            (
                GiveUpReason::Attempts { attempts: 5 },
                r#"{"kind":"attempts","attempts":5}"#,
                "5 attempts",
            ),
            (
                GiveUpReason::Age {
                    age: Duration::from_millis(1500),
                },
                r#"{"kind":"age","age_ms":1500}"#,
                "1.5s",
            ),
            (
                GiveUpReason::ScheduleExhausted,
                r#"{"kind":"schedule_exhausted"}"#,
                "exhausted",
            ),
            (
                GiveUpReason::Disabled {
                    reason: "410".into(),
                },
                r#"{"kind":"disabled","reason":"410"}"#,
                "disabled: 410",
            ),
        ];
        for (r, json, text) in cases {
            assert_eq!(serde_json::to_string(&r).unwrap(), json);
            assert!(json.contains(r.as_str()));
            assert!(r.to_string().contains(text), "{r}");
        }
    }

    proptest! {
        #[test]
        fn decide_never_panics(
            number in any::<u32>(),
            first_off in 0u64..(400 * 24 * 3600),
            now_off in 0u64..(400 * 24 * 3600),
            retry_after in proptest::option::of(any::<u64>()),
            max_attempts in proptest::option::of(1u32..=u32::MAX),
            factor in 1u32..=u32::MAX,
            seed in any::<u64>(),
        ) {
            let base = Instant::now();
            let attempt = at(number, base + Duration::from_secs(first_off));
            let now = base + Duration::from_secs(now_off);
            let mut p = RetryPolicy::new(Backoff::Exponential {
                base: S, factor, max: MAX_POLICY_DURATION, jitter: Jitter::Equal,
            });
            p.max_attempts = max_attempts;
            let out = retry(retry_after.map(Duration::from_secs), true);
            match p.decide(&attempt, &out, now, &mut SplitMix64::new(seed)) {
                RetryDecision::Retry { after } => {
                    prop_assert!(after <= MAX_POLICY_DURATION.max(p.retry_after_cap));
                    prop_assert!(attempt.age(now).saturating_add(after) <= DEFAULT_MAX_AGE);
                    prop_assert!(max_attempts.is_none_or(|m| number < m));
                }
                RetryDecision::GiveUp(_) => {}
                RetryDecision::Delivered => prop_assert!(false, "a retry outcome is never delivered"),
            }
        }

        #[test]
        fn attempt_counters_saturate(start in (u32::MAX - 3)..=u32::MAX, steps in 0usize..10) {
            let mut a = Attempt::first(Instant::now());
            a.number = start;
            for _ in 0..steps {
                a = a.next();
            }
            prop_assert!(a.number >= start);
            prop_assert_eq!(a.number, start.saturating_add(steps as u32));
        }
    }
}
