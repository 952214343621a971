//! The circuit breaker: stop hammering an endpoint that is down, and find out cheaply when it
//! is back.
//!
//! [`Breaker`] is a state machine with no clock of its own: the driver asks
//! [`check(now)`](Breaker::check) before each attempt and reports each result with
//! [`on_success`](Breaker::on_success) / [`on_failure`](Breaker::on_failure).
//!
//! - **Closed**: attempts proceed. N consecutive failures, or a failure rate at or above a
//!   threshold over a sliding window (with enough requests to mean something), trip it.
//! - **Open** until a cooldown passes: attempts wait.
//! - **Half-open**: exactly one probe goes out; every other caller waits until its result is
//!   reported. A successful probe closes the breaker, a failed one opens it again (with a
//!   cooldown that may grow, bounded, on repeated trips).
//! - **Disabled**: after failing with no success for longer than `disable_after` (or by hand),
//!   nothing goes out until [`enable`](Breaker::enable).
//!
//! Memory is bounded (a ring of ten time buckets) and time may jump far ahead or backwards
//! without a panic: a backwards step is counted in the newest bucket.

use std::time::{Duration, Instant};

use crate::Error;
use crate::policy::backoff::{check_duration, grow};

/// How many buckets the failure-rate window is cut into: the window slides in steps of a
/// tenth of its length.
const BUCKETS: usize = 10;

/// Trip the breaker when this share of recent requests failed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FailureRate {
    /// The failing share that trips the breaker, `0 < threshold <= 1` (at or above it trips).
    pub threshold: f64,
    /// How far back requests are counted (in steps of a tenth of it).
    pub window: Duration,
    /// No tripping on rate until the window holds at least this many requests (at least 1).
    pub min_requests: u32,
}

/// When the breaker trips, how long it stays open, and when it gives up on the endpoint.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// Trip after this many failures in a row.
    pub consecutive_failures: Option<u32>,
    /// Trip when the recent failure rate is too high.
    pub failure_rate: Option<FailureRate>,
    /// How long the breaker stays open after a trip before it lets a probe through.
    pub cooldown: Duration,
    /// When set, the cooldown doubles on each trip that follows a failed probe, up to this
    /// bound; a success resets it. `None` keeps it constant.
    pub max_cooldown: Option<Duration>,
    /// Disable the endpoint once it has failed, without a single success, for this long.
    pub disable_after: Option<Duration>,
}

impl Default for BreakerConfig {
    /// Five failures in a row open the breaker for 30 seconds; no failure-rate rule, no growth,
    /// no auto-disable.
    fn default() -> Self {
        BreakerConfig {
            consecutive_failures: Some(5),
            failure_rate: None,
            cooldown: Duration::from_secs(30),
            max_cooldown: None,
            disable_after: None,
        }
    }
}

impl BreakerConfig {
    /// Trips after `n` failures in a row and stays open for `cooldown`.
    pub fn consecutive(n: u32, cooldown: Duration) -> Self {
        BreakerConfig {
            consecutive_failures: Some(n),
            cooldown,
            ..Default::default()
        }
    }

    /// Checks every field; see [`Breaker::new`].
    pub fn validate(&self) -> Result<(), Error> {
        if self.consecutive_failures == Some(0) {
            return Err(Error::config(
                "breaker.consecutive_failures",
                "must be at least 1",
            ));
        }
        if let Some(rate) = &self.failure_rate {
            if !(rate.threshold > 0.0 && rate.threshold <= 1.0) {
                return Err(Error::config(
                    "breaker.failure_rate.threshold",
                    format!("{} is not in (0, 1]", rate.threshold),
                ));
            }
            check_duration("breaker.failure_rate.window", rate.window, false)?;
            if rate.min_requests == 0 {
                return Err(Error::config(
                    "breaker.failure_rate.min_requests",
                    "must be at least 1",
                ));
            }
        }
        check_duration("breaker.cooldown", self.cooldown, false)?;
        if let Some(max) = self.max_cooldown {
            check_duration("breaker.max_cooldown", max, false)?;
            if max < self.cooldown {
                return Err(Error::config(
                    "breaker.max_cooldown",
                    format!("{max:?} is below the cooldown {:?}", self.cooldown),
                ));
            }
        }
        if let Some(d) = self.disable_after {
            check_duration("breaker.disable_after", d, false)?;
        }
        if self.consecutive_failures.is_none()
            && self.failure_rate.is_none()
            && self.disable_after.is_none()
        {
            return Err(Error::config(
                "breaker.consecutive_failures",
                "the breaker would never act: set consecutive_failures, failure_rate or disable_after",
            ));
        }
        Ok(())
    }
}

/// Where the breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BreakerState {
    /// Healthy: everything proceeds.
    Closed,
    /// Tripped: nothing proceeds before `until`.
    Open {
        /// When the cooldown ends.
        until: Instant,
    },
    /// Cooled down: one probe may go (or is out, when `probing`).
    HalfOpen {
        /// Whether the probe is out and its result not yet reported.
        probing: bool,
    },
    /// Disabled: nothing proceeds until [`Breaker::enable`].
    Disabled,
}

impl BreakerState {
    /// The state's name, as dumps show it: `closed`, `open`, `half-open` or `disabled`.
    pub fn name(&self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open { .. } => "open",
            BreakerState::HalfOpen { .. } => "half-open",
            BreakerState::Disabled => "disabled",
        }
    }
}

/// The answer to [`Breaker::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Permit {
    /// Go ahead.
    Proceed,
    /// Go ahead as the one probe; report its result (or [`Breaker::abandon_probe`]).
    Probe,
    /// Do not send before `until`, then check again.
    Wait {
        /// When to check again.
        until: Instant,
    },
    /// The endpoint is disabled.
    Disabled,
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    index: u64,
    ok: u32,
    failed: u32,
}

/// A failure-rate window: `BUCKETS` slots, each a tenth of the window, reused round-robin.
#[derive(Debug, Clone)]
struct Window {
    width_nanos: u128,
    origin: Option<Instant>,
    /// The highest bucket index seen; time that steps backwards is counted here.
    latest: u64,
    buckets: [Bucket; BUCKETS],
}

impl Window {
    fn new(window: Duration) -> Self {
        Window {
            width_nanos: (window.as_nanos() / BUCKETS as u128).max(1),
            origin: None,
            latest: 0,
            buckets: [Bucket::default(); BUCKETS],
        }
    }

    fn index(&mut self, now: Instant) -> u64 {
        let origin = *self.origin.get_or_insert(now);
        let i = now.saturating_duration_since(origin).as_nanos() / self.width_nanos;
        self.latest = self.latest.max(u64::try_from(i).unwrap_or(u64::MAX));
        self.latest
    }

    fn record(&mut self, now: Instant, failed: bool) {
        let i = self.index(now);
        let b = &mut self.buckets[(i % BUCKETS as u64) as usize];
        if b.index != i {
            *b = Bucket {
                index: i,
                ..Bucket::default()
            };
        }
        if failed {
            b.failed = b.failed.saturating_add(1);
        } else {
            b.ok = b.ok.saturating_add(1);
        }
    }

    /// `(requests, failures)` in the buckets of the current window.
    fn totals(&mut self, now: Instant) -> (u64, u64) {
        let i = self.index(now);
        self.buckets
            .iter()
            .filter(|b| b.index <= i && i - b.index < BUCKETS as u64)
            .fold((0, 0), |(n, f), b| {
                (
                    n + u64::from(b.ok) + u64::from(b.failed),
                    f + u64::from(b.failed),
                )
            })
    }

    fn clear(&mut self) {
        self.origin = None;
        self.latest = 0;
        self.buckets = [Bucket::default(); BUCKETS];
    }
}

/// A circuit breaker for one endpoint. See the module docs for the states.
#[derive(Debug, Clone)]
pub struct Breaker {
    config: BreakerConfig,
    state: BreakerState,
    consecutive: u32,
    failing_since: Option<Instant>,
    /// Trips since the last success; drives the growing cooldown.
    trips: u32,
    window: Option<Window>,
    disabled_at: Option<Instant>,
}

impl Breaker {
    /// A closed breaker. Fails with [`Error::Config`] for a zero threshold or window, a
    /// threshold outside (0, 1], durations of zero or over a year, `max_cooldown` below
    /// `cooldown`, or a config under which the breaker would never act.
    pub fn new(config: BreakerConfig) -> Result<Self, Error> {
        config.validate()?;
        Ok(Breaker {
            config,
            state: BreakerState::Closed,
            consecutive: 0,
            failing_since: None,
            trips: 0,
            window: config.failure_rate.map(|r| Window::new(r.window)),
            disabled_at: None,
        })
    }

    /// The current state (as of the last call; an open breaker whose cooldown has passed
    /// becomes half-open at the next [`check`](Self::check)).
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// The configuration.
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// Failures in a row since the last success.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive
    }

    /// When the current run of failures began (`None` after a success).
    pub fn failing_since(&self) -> Option<Instant> {
        self.failing_since
    }

    /// When the breaker was disabled, while it is.
    pub fn disabled_since(&self) -> Option<Instant> {
        self.disabled_at
    }

    /// May an attempt go out at `now`? Never hands out a second probe while one is out.
    pub fn check(&mut self, now: Instant) -> Permit {
        match self.state {
            BreakerState::Closed => Permit::Proceed,
            BreakerState::Open { until } if now < until => Permit::Wait { until },
            BreakerState::Open { .. } | BreakerState::HalfOpen { probing: false } => {
                self.state = BreakerState::HalfOpen { probing: true };
                Permit::Probe
            }
            // The probe's answer decides; a cooldown is a fair guess of when to ask again.
            BreakerState::HalfOpen { probing: true } => Permit::Wait {
                until: now.checked_add(self.config.cooldown).unwrap_or(now),
            },
            BreakerState::Disabled => Permit::Disabled,
        }
    }

    /// The probe was never sent (the driver shut down): let the next check send one.
    pub fn abandon_probe(&mut self) {
        if self.state == (BreakerState::HalfOpen { probing: true }) {
            self.state = BreakerState::HalfOpen { probing: false };
        }
    }

    /// An attempt succeeded. Closes a half-open breaker and resets the failure counts. A late
    /// success while open (from a request sent before the trip) ends the failing run but
    /// leaves the breaker open: the probe decides when to close. Disabled stays disabled.
    pub fn on_success(&mut self, now: Instant) -> BreakerState {
        match self.state {
            BreakerState::Closed => {
                self.reset_counts();
                if let Some(w) = &mut self.window {
                    w.record(now, false);
                }
            }
            BreakerState::HalfOpen { .. } => {
                self.reset_counts();
                if let Some(w) = &mut self.window {
                    w.clear();
                }
                self.state = BreakerState::Closed;
            }
            BreakerState::Open { .. } => {
                self.consecutive = 0;
                self.failing_since = None;
            }
            BreakerState::Disabled => {}
        }
        self.state
    }

    /// An attempt failed. May trip a closed breaker, re-opens a half-open one, and disables
    /// the endpoint if it has failed with no success for `disable_after` or longer.
    pub fn on_failure(&mut self, now: Instant) -> BreakerState {
        if self.state == BreakerState::Disabled {
            return self.state;
        }
        let since = *self.failing_since.get_or_insert(now);
        self.consecutive = self.consecutive.saturating_add(1);
        if let Some(limit) = self.config.disable_after
            && now.saturating_duration_since(since) >= limit
        {
            self.disable(now);
            return self.state;
        }
        match self.state {
            BreakerState::Closed => {
                let by_count = self
                    .config
                    .consecutive_failures
                    .is_some_and(|n| self.consecutive >= n);
                let by_rate = match (&mut self.window, &self.config.failure_rate) {
                    (Some(w), Some(rate)) => {
                        w.record(now, true);
                        let (n, failed) = w.totals(now);
                        n >= u64::from(rate.min_requests)
                            && failed as f64 >= rate.threshold * n as f64
                    }
                    _ => false,
                };
                if by_count || by_rate {
                    self.trip(now);
                }
            }
            BreakerState::HalfOpen { .. } => self.trip(now),
            // A late failure from before the trip: the breaker is already open.
            BreakerState::Open { .. } | BreakerState::Disabled => {}
        }
        self.state
    }

    /// Disables the endpoint (by hand, or on a 410): every check answers `Disabled`.
    pub fn disable(&mut self, now: Instant) {
        self.state = BreakerState::Disabled;
        self.disabled_at = Some(now);
    }

    /// Re-enables the endpoint with a clean slate, half-open: the first attempt is a probe,
    /// so an endpoint that is still broken costs one request, not a burst.
    pub fn enable(&mut self, _now: Instant) {
        self.reset_counts();
        if let Some(w) = &mut self.window {
            w.clear();
        }
        self.disabled_at = None;
        self.state = BreakerState::HalfOpen { probing: false };
    }

    fn reset_counts(&mut self) {
        self.consecutive = 0;
        self.failing_since = None;
        self.trips = 0;
    }

    fn trip(&mut self, now: Instant) {
        self.trips = self.trips.saturating_add(1);
        let cooldown = match self.config.max_cooldown {
            Some(max) => grow(self.config.cooldown, 2, self.trips - 1, max),
            None => self.config.cooldown,
        };
        // Validation caps the cooldown at a year, so this only falls back on a broken clock.
        let until = now.checked_add(cooldown).unwrap_or(now);
        self.state = BreakerState::Open { until };
        if let Some(w) = &mut self.window {
            w.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: Duration = Duration::from_secs(1);

    fn breaker(config: BreakerConfig) -> Breaker {
        Breaker::new(config).unwrap()
    }

    /// One step of a scripted run: what the driver does at `t0 + secs`, and what it must see.
    #[derive(Debug, Clone, Copy)]
    enum Step {
        Check(u64, Permit),
        Ok(u64, BreakerState),
        Fail(u64, BreakerState),
    }

    /// Runs `steps`, with instants named as offsets from the fixed origin [`o`].
    fn run(config: BreakerConfig, steps: &[Step]) {
        let mut b = breaker(config);
        for (i, step) in steps.iter().enumerate() {
            match *step {
                Step::Check(t, want) => assert_eq!(b.check(o(t)), want, "step {i}"),
                Step::Ok(t, want) => assert_eq!(b.on_success(o(t)), want, "step {i}"),
                Step::Fail(t, want) => assert_eq!(b.on_failure(o(t)), want, "step {i}"),
            }
        }
    }

    thread_local! {
        /// A fixed origin so expectations can name instants as offsets (`o(30)`).
        static T_ZERO: Instant = Instant::now();
    }

    fn o(secs: u64) -> Instant {
        T_ZERO.with(|t| *t) + Duration::from_secs(secs)
    }

    use BreakerState::{Closed, Disabled, HalfOpen};
    use Step::{Check, Fail, Ok};

    fn open(secs: u64) -> BreakerState {
        BreakerState::Open { until: o(secs) }
    }

    fn wait(secs: u64) -> Permit {
        Permit::Wait { until: o(secs) }
    }

    #[test]
    fn consecutive_failures_table() {
        let cfg = BreakerConfig::consecutive(3, 10 * S);
        run(
            cfg,
            &[
                Check(0, Permit::Proceed),
                Fail(0, Closed),
                Fail(1, Closed),
                Ok(2, Closed), // a success resets the run
                Fail(3, Closed),
                Fail(4, Closed),
                Fail(5, open(15)), // third in a row trips
                Check(6, wait(15)),
                Check(14, wait(15)),
                Fail(14, open(15)), // a late failure does not extend the cooldown
                Check(15, Permit::Probe), // exactly at `until`: half-open, one probe
                Check(15, wait(25)), // never a second probe while it is out
                Check(20, wait(30)),
                Fail(21, open(31)), // failed probe: open again
                Check(31, Permit::Probe),
                Ok(32, Closed), // good probe closes
                Check(32, Permit::Proceed),
                Fail(33, Closed), // counts start again from zero
                Fail(34, Closed),
                Fail(35, open(45)),
            ],
        );
    }

    #[test]
    fn late_success_while_open_keeps_it_open() {
        let cfg = BreakerConfig::consecutive(1, 10 * S);
        let t = o(0);
        let mut b = breaker(cfg);
        assert_eq!(b.on_failure(t), BreakerState::Open { until: t + 10 * S });
        assert_eq!(
            b.on_success(t + S),
            BreakerState::Open { until: t + 10 * S }
        );
        assert_eq!(b.consecutive_failures(), 0);
        assert_eq!(b.failing_since(), None);
        assert_eq!(b.check(t + 10 * S), Permit::Probe);
        assert_eq!(b.state(), HalfOpen { probing: true });
        b.abandon_probe();
        assert_eq!(b.state(), HalfOpen { probing: false });
        assert_eq!(b.check(t + 10 * S), Permit::Probe);
    }

    #[test]
    fn growing_cooldown_is_bounded_and_resets() {
        let cfg = BreakerConfig {
            max_cooldown: Some(35 * S),
            ..BreakerConfig::consecutive(1, 10 * S)
        };
        run(
            cfg,
            &[
                Fail(0, open(10)),
                Check(10, Permit::Probe),
                Fail(10, open(30)), // 20s
                Check(30, Permit::Probe),
                Fail(30, open(65)), // 40s, capped at 35s
                Check(65, Permit::Probe),
                Fail(65, open(100)),
                Check(100, Permit::Probe),
                Ok(100, Closed),
                Fail(101, open(111)), // back to the base cooldown
            ],
        );
    }

    #[test]
    fn failure_rate_trips_over_the_window() {
        let cfg = BreakerConfig {
            consecutive_failures: None,
            failure_rate: Some(FailureRate {
                threshold: 0.5,
                window: 10 * S,
                min_requests: 4,
            }),
            ..BreakerConfig::consecutive(1, 60 * S)
        };
        run(
            cfg,
            &[
                Fail(0, Closed),
                Ok(1, Closed),
                Fail(2, Closed),   // 2 of 3 failed, but fewer than 4 requests
                Ok(3, Closed),     // 2 of 4: exactly at the threshold, but it was a success
                Fail(4, open(64)), // 3 of 5 >= 0.5
            ],
        );
        // Old failures slide out of the window.
        run(
            cfg,
            &[
                Fail(0, Closed),
                Fail(1, Closed),
                Fail(2, Closed),
                Ok(30, Closed), // far ahead: the three failures are gone
                Ok(31, Closed),
                Ok(32, Closed),
                Fail(33, Closed), // 1 of 4
            ],
        );
    }

    #[test]
    fn window_survives_time_jumps() {
        let mut w = Window::new(10 * S);
        let t = o(1_000);
        w.record(t, true);
        w.record(t + 3 * S, false);
        assert_eq!(w.totals(t + 3 * S), (2, 1));
        // Backwards: counted in the newest bucket, nothing lost, no panic.
        w.record(t - 500 * S, true);
        assert_eq!(w.totals(t - 900 * S), (3, 2));
        // Far ahead: everything has expired.
        assert_eq!(w.totals(t + 100_000_000 * S), (0, 0));
        w.record(t + 100_000_000 * S, true);
        assert_eq!(w.totals(t + 100_000_000 * S), (1, 1));
        // A bucket slot reused after exactly one lap holds only the new counts.
        let mut w = Window::new(10 * S);
        w.record(t, true);
        w.record(t + 10 * S, false);
        assert_eq!(w.totals(t + 10 * S), (1, 0));
    }

    #[test]
    fn auto_disable_after_failing_too_long() {
        let cfg = BreakerConfig {
            disable_after: Some(100 * S),
            ..BreakerConfig::consecutive(2, 10 * S)
        };
        run(
            cfg,
            &[
                Fail(0, Closed),
                Fail(1, open(11)),
                Check(11, Permit::Probe),
                Fail(11, open(21)),
                Check(50, Permit::Probe),
                Fail(99, open(109)), // 99s of failing: not yet
                Check(109, Permit::Probe),
                Fail(109, Disabled), // 109s >= 100s
                Check(110, Permit::Disabled),
                Ok(111, Disabled), // stays disabled
                Fail(112, Disabled),
            ],
        );
        // A success restarts the failing clock.
        run(
            cfg,
            &[
                Fail(0, Closed),
                Ok(90, Closed),
                Fail(150, Closed),
                Fail(151, open(161)),
            ],
        );
        // disable_after alone is a valid breaker.
        let only = BreakerConfig {
            consecutive_failures: None,
            ..cfg
        };
        run(
            only,
            &[Fail(0, Closed), Fail(99, Closed), Fail(100, Disabled)],
        );
    }

    #[test]
    fn disable_and_enable_by_hand() {
        let t = o(0);
        let mut b = breaker(BreakerConfig::consecutive(1, 10 * S));
        b.disable(t);
        assert_eq!(b.check(t), Permit::Disabled);
        assert_eq!(b.disabled_since(), Some(t));
        b.enable(t + S);
        assert_eq!(b.disabled_since(), None);
        assert_eq!(
            b.check(t + S),
            Permit::Probe,
            "re-enabled endpoints are probed first"
        );
        assert_eq!(b.check(t + S), Permit::Wait { until: t + 11 * S });
        assert_eq!(b.on_success(t + 2 * S), Closed);
        assert_eq!(b.check(t + 2 * S), Permit::Proceed);
    }

    #[test]
    fn config_validation() {
        let ok = BreakerConfig::default();
        assert!(Breaker::new(ok).is_ok());
        let rate = |threshold, window, min_requests| {
            Some(FailureRate {
                threshold,
                window,
                min_requests,
            })
        };
        let bad = [
            (
                BreakerConfig {
                    consecutive_failures: Some(0),
                    ..ok
                },
                "breaker.consecutive_failures",
            ),
            (
                BreakerConfig {
                    failure_rate: rate(0.0, S, 1),
                    ..ok
                },
                "breaker.failure_rate.threshold",
            ),
            (
                BreakerConfig {
                    failure_rate: rate(1.5, S, 1),
                    ..ok
                },
                "breaker.failure_rate.threshold",
            ),
            (
                BreakerConfig {
                    failure_rate: rate(f64::NAN, S, 1),
                    ..ok
                },
                "breaker.failure_rate.threshold",
            ),
            (
                BreakerConfig {
                    failure_rate: rate(0.5, Duration::ZERO, 1),
                    ..ok
                },
                "breaker.failure_rate.window",
            ),
            (
                BreakerConfig {
                    failure_rate: rate(0.5, S, 0),
                    ..ok
                },
                "breaker.failure_rate.min_requests",
            ),
            (
                BreakerConfig {
                    cooldown: Duration::ZERO,
                    ..ok
                },
                "breaker.cooldown",
            ),
            (
                BreakerConfig {
                    cooldown: Duration::MAX,
                    ..ok
                },
                "breaker.cooldown",
            ),
            (
                BreakerConfig {
                    max_cooldown: Some(S),
                    ..ok
                },
                "breaker.max_cooldown",
            ),
            (
                BreakerConfig {
                    disable_after: Some(Duration::ZERO),
                    ..ok
                },
                "breaker.disable_after",
            ),
            (
                BreakerConfig {
                    consecutive_failures: None,
                    ..ok
                },
                "breaker.consecutive_failures",
            ),
        ];
        for (cfg, field) in bad {
            match Breaker::new(cfg) {
                Err(Error::Config { field: f, .. }) => assert_eq!(f, field, "{cfg:?}"),
                other => panic!("{cfg:?}: {other:?}"),
            }
        }
        assert!(
            Breaker::new(BreakerConfig {
                failure_rate: rate(1.0, S, 1),
                ..ok
            })
            .is_ok()
        );
    }

    #[derive(Debug, Clone, Copy)]
    enum Op {
        Check,
        Success,
        Failure,
        Abandon,
        Advance(u64),
        Back(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => Just(Op::Check),
            2 => Just(Op::Success),
            3 => Just(Op::Failure),
            1 => Just(Op::Abandon),
            3 => (0u64..50_000).prop_map(Op::Advance),
            1 => (0u64..50_000).prop_map(Op::Back),
        ]
    }

    proptest! {
        #[test]
        fn never_two_probes_in_half_open(
            ops in proptest::collection::vec(op(), 1..200),
            n in 1u32..4,
            grow in any::<bool>(),
            use_rate in any::<bool>(),
        ) {
            let cfg = BreakerConfig {
                consecutive_failures: Some(n),
                failure_rate: use_rate.then_some(FailureRate { threshold: 0.5, window: 10 * S, min_requests: 2 }),
                cooldown: 10 * S,
                max_cooldown: grow.then_some(100 * S),
                disable_after: Some(3600 * S),
            };
            let mut b = breaker(cfg);
            let mut now = o(100_000);
            let mut probe_out = false;
            for op in ops {
                match op {
                    Op::Check => match b.check(now) {
                        Permit::Probe => {
                            prop_assert!(!probe_out, "second probe handed out");
                            probe_out = true;
                        }
                        Permit::Wait { .. } => {
                            let waiting = matches!(b.state(), BreakerState::Open { .. } | HalfOpen { probing: true });
                            prop_assert!(waiting, "told to wait in {:?}", b.state());
                        }
                        Permit::Proceed => prop_assert_eq!(b.state(), Closed),
                        Permit::Disabled => prop_assert_eq!(b.state(), Disabled),
                    },
                    Op::Success => { b.on_success(now); probe_out = false; }
                    Op::Failure => { b.on_failure(now); probe_out = false; }
                    Op::Abandon => { b.abandon_probe(); probe_out = false; }
                    Op::Advance(ms) => now += Duration::from_millis(ms),
                    Op::Back(ms) => now -= Duration::from_millis(ms),
                }
            }
        }
    }
}
