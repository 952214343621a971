//! A sink that retries: go-events' `RetryingSink`, redone over the pure policy core.
//!
//! Contract:
//! - **`write` blocks** the calling thread until the event is delivered to the inner sink or
//!   given up on. One event is in flight at a time (concurrent writers take turns), so the order
//!   of a single writer is preserved.
//! - **Nothing is dropped silently.** An event that is given up (permanent 4xx, attempts or
//!   age exhausted, schedule over, endpoint disabled) goes to the dead-letter sink if one is
//!   set, is counted in [`RetryStats::dead_lettered`] either way, and `write` returns `Ok`: the
//!   event has been dealt with. Errors from the dead-letter sink are counted, not returned.
//! - **Disabling.** A 410, or a [`CircuitBreaker`] that has failed for too long, disables the
//!   sink: from then on every event is dead-lettered at once (reason `disabled`) until
//!   [`enable`](RetryingSink::enable).
//! - **`close`** cuts any backoff wait short (the waiting `write` returns `Err(Closed)`, so its
//!   writer, usually a queue, counts the event as a shutdown drop), closes the inner sink (not
//!   the dead-letter sink, which may be shared), and makes later writes return `Err(Closed)`.
//!   When the inner sink answers `Closed`, `write` returns `Err(Closed)` too.
//!
//! Waiting goes through an injected [`Clock`], so tests run a day of backoff in microseconds.
//! What to do after each attempt is a [`RetryStrategy`]; the four here are thin wrappers over
//! [`RetryPolicy`] and [`Breaker`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use parking_lot::Mutex;

use crate::policy::{Attempt, Clock, GiveUpReason, RetryStrategy, SystemClock, Verdict, Wakeup};
use crate::stats::Counter;
use crate::{Error, Sink};

/// An event that a [`RetryingSink`] gave up on, with why and how hard it was tried: what its
/// dead-letter sink receives. (The engine's dead letters, kept by durable endpoints, are
/// [`store::DeadLetter`](crate::store::DeadLetter): they carry a sequence number and the
/// endpoint's name, and are read back from disk.)
#[derive(Debug, Clone)]
pub struct GivenUp<E> {
    /// The event.
    pub event: E,
    /// Why it was given up.
    pub reason: GiveUpReason,
    /// The error of the last attempt (`Disabled` for events refused by a disabled sink).
    pub last_error: Option<Error>,
    /// How many attempts were made (0 when the sink was already disabled).
    pub attempts: u32,
    /// When the first attempt began (or when the event was refused, if never attempted).
    pub first_attempt: Instant,
}

/// What a [`RetryingSink`] did. Every event it accepted is delivered, dead-lettered, or handed
/// back to its writer with `Err(Closed)` (counted in `interrupted` here, and as a drop by the
/// writer).
#[derive(Debug, Default)]
pub struct RetryStats {
    /// Writes to the inner sink.
    pub attempts: Counter,
    /// Attempts after the first for an event.
    pub retries: Counter,
    /// Events the inner sink took.
    pub delivered: Counter,
    /// Events given up on, for any reason (whether or not a dead-letter sink is set).
    pub dead_lettered: Counter,
    /// Of those, refused by the endpoint for good (a permanent 4xx or an unsendable event).
    pub permanent: Counter,
    /// Of those, out of attempts, age or schedule.
    pub exhausted: Counter,
    /// Of those, given up because the endpoint is (or just became) disabled.
    pub disabled_events: Counter,
    /// Times the sink was disabled.
    pub disables: Counter,
    /// Dead letters the dead-letter sink failed to take (the event is lost; logged).
    pub dead_letter_errors: Counter,
    /// Events handed back with `Err(Closed)` because the sink closed mid-retry.
    pub interrupted: Counter,
}

/// Retries each event on the inner sink as its [`RetryStrategy`] says. See the module docs for
/// the contract.
pub struct RetryingSink<E, S> {
    inner: S,
    /// Held for the whole of a write: one event in flight, in order.
    strategy: Mutex<Box<dyn RetryStrategy<E>>>,
    dead_letter: Option<Arc<dyn Sink<GivenUp<E>>>>,
    clock: Arc<dyn Clock>,
    wakeup: Wakeup,
    closed: AtomicBool,
    /// Why the sink is disabled, while it is. Its own lock so `is_disabled` never waits on a
    /// write that is backing off.
    disabled: Mutex<Option<String>>,
    /// `enable` was called; the strategy hears of it at the next write (it is locked by then).
    enable_pending: AtomicBool,
    stats: Arc<RetryStats>,
}

impl<E, S> std::fmt::Debug for RetryingSink<E, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryingSink")
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .field("disabled", &*self.disabled.lock())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<E: Clone + Send + 'static, S: Sink<E>> RetryingSink<E, S> {
    /// Retries writes to `inner` as `strategy` says, on the system clock, with no dead-letter
    /// sink (given-up events are then only counted and logged).
    pub fn new(inner: S, strategy: impl RetryStrategy<E> + 'static) -> Self {
        RetryingSink {
            inner,
            strategy: Mutex::new(Box::new(strategy)),
            dead_letter: None,
            clock: Arc::new(SystemClock),
            wakeup: Wakeup::new(),
            closed: AtomicBool::new(false),
            disabled: Mutex::new(None),
            enable_pending: AtomicBool::new(false),
            stats: Arc::default(),
        }
    }

    /// Sends given-up events to `sink`.
    pub fn dead_letter(mut self, sink: Arc<dyn Sink<GivenUp<E>>>) -> Self {
        self.dead_letter = Some(sink);
        self
    }

    /// Waits and reads time through `clock` (a [`ManualClock`](crate::policy::ManualClock) in
    /// tests).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The sink's counters.
    pub fn stats(&self) -> Arc<RetryStats> {
        Arc::clone(&self.stats)
    }

    /// Whether the sink is disabled (every event is dead-lettered at once).
    pub fn is_disabled(&self) -> bool {
        self.disabled.lock().is_some()
    }

    /// Why the sink is disabled, while it is.
    pub fn disabled_reason(&self) -> Option<String> {
        self.disabled.lock().clone()
    }

    /// Disables the sink by hand.
    pub fn disable(&self, reason: impl Into<String>) {
        *self.disabled.lock() = Some(reason.into());
        self.stats.disables.inc();
    }

    /// Enables a disabled sink. Its strategy starts afresh (a circuit breaker with a probe).
    pub fn enable(&self) {
        // Under the lock, and before clearing: a write that sees "not disabled" must also see
        // that its strategy has to be re-enabled first.
        let mut disabled = self.disabled.lock();
        if disabled.is_some() {
            self.enable_pending.store(true, Ordering::Release);
            *disabled = None;
        }
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn interrupted(&self) -> Result<(), Error> {
        self.stats.interrupted.inc();
        Err(Error::Closed)
    }

    fn give_up(
        &self,
        event: E,
        reason: GiveUpReason,
        last_error: Error,
        attempt: Attempt,
        tries: u32,
    ) {
        self.stats.dead_lettered.inc();
        match reason {
            GiveUpReason::Permanent { .. } => self.stats.permanent.inc(),
            GiveUpReason::Disabled { .. } => self.stats.disabled_events.inc(),
            _ => self.stats.exhausted.inc(),
        }
        log::debug!(
            "giving up on an event after {tries} attempts: {reason} (last error: {last_error})"
        );
        let Some(sink) = &self.dead_letter else {
            return;
        };
        let letter = GivenUp {
            event,
            reason,
            last_error: Some(last_error),
            attempts: tries,
            first_attempt: attempt.first_at,
        };
        if let Err(e) = sink.write(letter) {
            self.stats.dead_letter_errors.inc();
            log::warn!("dead-letter sink refused an event, which is now lost: {e}");
        }
    }
}

impl<E: Clone + Send + 'static, S: Sink<E>> Sink<E> for RetryingSink<E, S> {
    fn write(&self, event: E) -> Result<(), Error> {
        if self.is_closed() {
            return Err(Error::Closed);
        }
        let mut strategy = self.strategy.lock();
        if self.is_closed() {
            return Err(Error::Closed);
        }
        let mut attempt = Attempt::first(self.clock.now());
        if self.enable_pending.swap(false, Ordering::AcqRel) {
            strategy.enable(attempt.first_at);
        }
        if let Some(reason) = self.disabled_reason() {
            let err = Error::Disabled {
                reason: reason.clone(),
            };
            self.give_up(event, GiveUpReason::Disabled { reason }, err, attempt, 0);
            return Ok(());
        }
        loop {
            loop {
                let wait = strategy.proceed(&event, &attempt, self.clock.now());
                if wait.is_zero() {
                    break;
                }
                if self.clock.wait(wait, &self.wakeup) || self.is_closed() {
                    return self.interrupted();
                }
            }
            if self.is_closed() {
                return self.interrupted();
            }
            self.stats.attempts.inc();
            if attempt.number > 1 {
                self.stats.retries.inc();
            }
            let err = match self.inner.write(event.clone()) {
                Ok(()) => {
                    strategy.success(&event, self.clock.now());
                    self.stats.delivered.inc();
                    return Ok(());
                }
                Err(Error::Closed) => return self.interrupted(),
                Err(err) => err,
            };
            match strategy.failure(&event, &attempt, &err, self.clock.now()) {
                Verdict::Retry => attempt = attempt.next(),
                Verdict::GiveUp(reason) => {
                    self.give_up(event, reason, err, attempt, attempt.number);
                    return Ok(());
                }
                Verdict::Disable(reason) => {
                    let why = match &reason {
                        GiveUpReason::Disabled { reason } => reason.clone(),
                        other => other.to_string(),
                    };
                    log::warn!("disabling the endpoint: {why}");
                    self.disable(why);
                    self.give_up(event, reason, err, attempt, attempt.number);
                    return Ok(());
                }
            }
        }
    }

    fn close(&self) -> Result<(), Error> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Err(Error::Closed);
        }
        self.wakeup.set();
        self.inner.close()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{
        Backoff, BreakerConfig, CircuitBreaker, ConsecutiveFailures, ExponentialBackoff, Jitter,
        ManualClock, Schedule,
    };
    use std::collections::VecDeque;
    use std::sync::mpsc;
    use std::time::Duration;

    const S: Duration = Duration::from_secs(1);

    fn status(code: u16) -> Error {
        Error::Status {
            code,
            retry_after: None,
        }
    }

    /// An inner sink that answers from a script (then `Ok` once it runs out), and notes what it
    /// took and when each attempt came (as an offset on the manual clock).
    struct Script {
        clock: ManualClock,
        t0: Instant,
        answers: Mutex<VecDeque<Result<(), Error>>>,
        delivered: Mutex<Vec<u32>>,
        attempts_at: Mutex<Vec<Duration>>,
        closed: AtomicBool,
        notify: Mutex<Option<mpsc::Sender<()>>>,
    }

    impl Script {
        fn new(
            clock: &ManualClock,
            answers: impl IntoIterator<Item = Result<(), Error>>,
        ) -> Arc<Self> {
            Arc::new(Script {
                clock: clock.clone(),
                t0: clock.now(),
                answers: Mutex::new(answers.into_iter().collect()),
                delivered: Mutex::default(),
                attempts_at: Mutex::default(),
                closed: AtomicBool::new(false),
                notify: Mutex::default(),
            })
        }

        fn failing(clock: &ManualClock, n: usize, err: Error) -> Arc<Self> {
            Self::new(clock, std::iter::repeat_n(Err(err), n))
        }

        fn gaps(&self) -> Vec<Duration> {
            let at = self.attempts_at.lock();
            at.windows(2).map(|w| w[1] - w[0]).collect()
        }
    }

    impl Sink<u32> for Script {
        fn write(&self, event: u32) -> Result<(), Error> {
            self.attempts_at.lock().push(self.clock.now() - self.t0);
            if let Some(tx) = &*self.notify.lock() {
                let _ = tx.send(());
            }
            let answer = self.answers.lock().pop_front().unwrap_or(Ok(()));
            if answer.is_ok() {
                self.delivered.lock().push(event);
            }
            answer
        }
        fn close(&self) -> Result<(), Error> {
            self.closed.store(true, Ordering::SeqCst);
            Ok(())
        }
    }

    #[derive(Default)]
    struct Letters(Mutex<Vec<GivenUp<u32>>>, bool);

    impl Sink<GivenUp<u32>> for Letters {
        fn write(&self, letter: GivenUp<u32>) -> Result<(), Error> {
            if self.1 {
                return Err(Error::Closed);
            }
            self.0.lock().push(letter);
            Ok(())
        }
        fn close(&self) -> Result<(), Error> {
            Ok(())
        }
    }

    type Fixture = (RetryingSink<u32, Arc<Script>>, Arc<Script>, Arc<Letters>);

    fn sink(
        clock: &ManualClock,
        inner: Arc<Script>,
        strategy: impl RetryStrategy<u32> + 'static,
    ) -> Fixture {
        let letters = Arc::new(Letters::default());
        let s = RetryingSink::new(inner.clone(), strategy)
            .clock(Arc::new(clock.clone()))
            .dead_letter(letters.clone());
        (s, inner, letters)
    }

    fn exponential(base: Duration, max: Duration) -> ExponentialBackoff {
        ExponentialBackoff::new(base, 2, max)
            .unwrap()
            .jitter(Jitter::None)
    }

    #[test]
    fn an_abandoned_probe_is_handed_out_again() {
        let cfg = BreakerConfig::consecutive(1, Duration::from_secs(10));
        let mut s = CircuitBreaker::new(cfg, Backoff::constant(Duration::ZERO)).unwrap();
        let t0 = Instant::now();
        let a = Attempt::first(t0);
        let proceed = |s: &mut CircuitBreaker, t| RetryStrategy::<u32>::proceed(s, &0, &a, t);
        assert_eq!(proceed(&mut s, t0), Duration::ZERO);
        let v = RetryStrategy::<u32>::failure(&mut s, &0, &a, &status(500), t0);
        assert_eq!(v, Verdict::Retry);
        let t1 = t0 + Duration::from_secs(11);
        assert_eq!(proceed(&mut s, t1), Duration::ZERO, "the probe");
        assert!(proceed(&mut s, t1) > Duration::ZERO, "one probe at a time");
        RetryStrategy::<u32>::abandon(&mut s, t1);
        assert_eq!(
            proceed(&mut s, t1),
            Duration::ZERO,
            "the probe, handed back"
        );
    }

    #[test]
    fn retries_until_success_with_each_strategy() {
        type Make = fn() -> Box<dyn RetryStrategy<u32>>;
        let strategies: [Make; 4] = [
            || Box::new(ConsecutiveFailures::new(2, S).unwrap()),
            || Box::new(ExponentialBackoff::new(S, 2, 60 * S).unwrap().seed(1)),
            || Box::new(Schedule::new([S, S, 5 * S, 5 * S]).unwrap()),
            || {
                let config = BreakerConfig::consecutive(2, S);
                Box::new(CircuitBreaker::new(config, Backoff::constant(S)).unwrap())
            },
        ];
        for (i, make) in strategies.iter().enumerate() {
            let clock = ManualClock::new();
            let (s, inner, letters) = sink(&clock, Script::failing(&clock, 3, status(500)), make());
            assert!(s.write(7).is_ok(), "strategy {i}");
            assert_eq!(*inner.delivered.lock(), [7], "strategy {i}");
            let st = s.stats();
            assert_eq!(
                (st.attempts.get(), st.retries.get(), st.delivered.get()),
                (4, 3, 1),
                "strategy {i}"
            );
            assert!(letters.0.lock().is_empty());
            assert_eq!(st.dead_lettered.get(), 0);
        }
    }

    #[test]
    fn consecutive_failures_back_off_after_threshold() {
        let clock = ManualClock::new();
        let strategy = ConsecutiveFailures::new(3, 10 * S).unwrap();
        let (s, inner, _) = sink(&clock, Script::failing(&clock, 5, status(503)), strategy);
        s.write(1).unwrap();
        // Three at once, then one every 10s after the last failure.
        assert_eq!(
            inner.gaps(),
            [Duration::ZERO, Duration::ZERO, 10 * S, 10 * S, 10 * S]
        );
        // After a success the next event goes at once.
        s.write(2).unwrap();
        assert_eq!(inner.gaps().last(), Some(&Duration::ZERO));
        assert_eq!(*inner.delivered.lock(), [1, 2]);
    }

    #[test]
    fn exponential_backoff_grows_and_is_capped() {
        let clock = ManualClock::new();
        let (s, inner, _) = sink(
            &clock,
            Script::failing(&clock, 6, status(500)),
            exponential(S, 8 * S),
        );
        s.write(1).unwrap();
        assert_eq!(inner.gaps(), [S, 2 * S, 4 * S, 8 * S, 8 * S, 8 * S]);
        // Full jitter stays under the same curve.
        let clock = ManualClock::new();
        let strategy = ExponentialBackoff::new(S, 2, 8 * S).unwrap().seed(5);
        let (s, inner, _) = sink(&clock, Script::failing(&clock, 6, status(500)), strategy);
        s.write(1).unwrap();
        let caps = [S, 2 * S, 4 * S, 8 * S, 8 * S, 8 * S];
        assert!(
            inner.gaps().iter().zip(caps).all(|(g, c)| *g <= c),
            "{:?}",
            inner.gaps()
        );
    }

    #[test]
    fn gives_up_by_attempts_age_and_schedule() {
        let clock = ManualClock::new();
        let strategy = exponential(S, S).max_attempts(3).unwrap();
        let (s, inner, letters) = sink(&clock, Script::failing(&clock, 99, status(500)), strategy);
        assert!(s.write(1).is_ok(), "a given-up event has been dealt with");
        let l = &letters.0.lock()[0];
        assert_eq!(
            (l.event, l.attempts, &l.reason),
            (1, 3, &GiveUpReason::Attempts { attempts: 3 })
        );
        assert!(matches!(
            l.last_error,
            Some(Error::Status { code: 500, .. })
        ));
        assert_eq!(inner.attempts_at.lock().len(), 3);

        let clock = ManualClock::new();
        let strategy = ExponentialBackoff::new(10 * S, 1, 10 * S)
            .unwrap()
            .jitter(Jitter::None);
        let strategy = strategy.max_age(25 * S).unwrap();
        let (s, inner, letters) = sink(&clock, Script::failing(&clock, 99, status(500)), strategy);
        s.write(1).unwrap();
        assert_eq!(
            letters.0.lock()[0].reason,
            GiveUpReason::Age { age: 20 * S }
        );
        assert_eq!(
            inner.attempts_at.lock().len(),
            3,
            "at 0, 10 and 20s; 30s would be too old"
        );

        let clock = ManualClock::new();
        let (s, inner, letters) = sink(
            &clock,
            Script::failing(&clock, 99, status(500)),
            Schedule::new([S, 5 * S]).unwrap(),
        );
        s.write(1).unwrap();
        assert_eq!(letters.0.lock()[0].reason, GiveUpReason::ScheduleExhausted);
        assert_eq!(inner.gaps(), [S, 5 * S]);
        let st = s.stats();
        assert_eq!(
            (
                st.dead_lettered.get(),
                st.exhausted.get(),
                st.delivered.get()
            ),
            (1, 1, 0)
        );
    }

    #[test]
    fn permanent_4xx_is_dead_lettered_at_once() {
        let clock = ManualClock::new();
        let (s, inner, letters) = sink(
            &clock,
            Script::failing(&clock, 1, status(422)),
            exponential(S, S),
        );
        assert!(s.write(9).is_ok());
        let l = &letters.0.lock()[0];
        assert_eq!(
            (l.attempts, &l.reason),
            (1, &GiveUpReason::Permanent { status: 422 })
        );
        assert!(matches!(
            l.last_error,
            Some(Error::Status { code: 422, .. })
        ));
        assert_eq!(inner.attempts_at.lock().len(), 1);
        assert_eq!(s.stats().permanent.get(), 1);
        assert!(!s.is_disabled());
    }

    #[test]
    fn gone_disables_until_enabled() {
        let clock = ManualClock::new();
        let strategy =
            CircuitBreaker::new(BreakerConfig::consecutive(3, S), Backoff::constant(S)).unwrap();
        let (s, inner, letters) = sink(&clock, Script::failing(&clock, 1, status(410)), strategy);
        s.write(1).unwrap();
        assert!(s.is_disabled());
        assert!(s.disabled_reason().unwrap().contains("410"));
        s.write(2).unwrap();
        s.write(3).unwrap();
        assert_eq!(
            inner.attempts_at.lock().len(),
            1,
            "a disabled sink does not call the endpoint"
        );
        {
            let l = letters.0.lock();
            assert_eq!(
                l.iter().map(|l| (l.event, l.attempts)).collect::<Vec<_>>(),
                [(1, 1), (2, 0), (3, 0)]
            );
            assert!(
                l.iter()
                    .all(|l| matches!(l.reason, GiveUpReason::Disabled { .. }))
            );
            assert!(matches!(l[1].last_error, Some(Error::Disabled { .. })));
        }
        let st = s.stats();
        assert_eq!(
            (
                st.disables.get(),
                st.disabled_events.get(),
                st.dead_lettered.get()
            ),
            (1, 3, 3)
        );
        s.enable();
        assert!(!s.is_disabled());
        s.write(4).unwrap();
        assert_eq!(*inner.delivered.lock(), [4]);
    }

    #[test]
    fn breaker_disables_after_failing_too_long() {
        let clock = ManualClock::new();
        let config = BreakerConfig {
            disable_after: Some(60 * S),
            ..BreakerConfig::consecutive(2, 10 * S)
        };
        let strategy = CircuitBreaker::new(config, Backoff::constant(S)).unwrap();
        let (s, _inner, letters) = sink(&clock, Script::failing(&clock, 99, status(500)), strategy);
        s.write(1).unwrap();
        assert!(s.is_disabled());
        assert!(matches!(
            letters.0.lock()[0].reason,
            GiveUpReason::Disabled { .. }
        ));
        assert!(clock.now() - letters.0.lock()[0].first_attempt >= 60 * S);
    }

    #[test]
    fn retry_after_is_waited_and_capped() {
        let ra = |secs| Error::Status {
            code: 503,
            retry_after: Some(secs * S),
        };
        let clock = ManualClock::new();
        let inner = Script::new(&clock, [Err(ra(30)), Err(ra(7200))]);
        let (s, inner, _) = sink(&clock, inner, exponential(S, S));
        s.write(1).unwrap();
        assert_eq!(
            inner.gaps(),
            [30 * S, 3600 * S],
            "the default cap is an hour"
        );

        let clock = ManualClock::new();
        let inner = Script::new(&clock, [Err(ra(30))]);
        let strategy = exponential(S, S).retry_after_cap(10 * S).unwrap();
        let (s, inner, _) = sink(&clock, inner, strategy);
        s.write(1).unwrap();
        assert_eq!(inner.gaps(), [10 * S]);
    }

    #[test]
    fn close_cuts_a_long_backoff_short() {
        let (tx, rx) = mpsc::channel();
        let clock = ManualClock::new();
        let inner = Script::failing(&clock, 99, status(500));
        *inner.notify.lock() = Some(tx);
        let strategy = ExponentialBackoff::new(3600 * S, 1, 3600 * S)
            .unwrap()
            .jitter(Jitter::None);
        let s = Arc::new(RetryingSink::new(inner.clone(), strategy));
        let writer = {
            let s = s.clone();
            let (done_tx, done_rx) = mpsc::channel();
            std::thread::spawn(move || done_tx.send(s.write(1)).unwrap());
            done_rx
        };
        rx.recv_timeout(Duration::from_secs(5))
            .expect("first attempt");
        // The writer is now in (or about to enter) its hour-long wait.
        s.close().unwrap();
        let result = writer
            .recv_timeout(Duration::from_secs(5))
            .expect("write returned promptly");
        assert!(matches!(result, Err(Error::Closed)));
        assert!(inner.closed.load(Ordering::SeqCst));
        assert!(matches!(s.write(2), Err(Error::Closed)));
        assert!(matches!(s.close(), Err(Error::Closed)));
        assert_eq!(s.stats().interrupted.get(), 1);
    }

    #[test]
    fn inner_closed_is_handed_back() {
        let clock = ManualClock::new();
        let (s, _, letters) = sink(
            &clock,
            Script::failing(&clock, 1, Error::Closed),
            exponential(S, S),
        );
        assert!(matches!(s.write(1), Err(Error::Closed)));
        assert!(letters.0.lock().is_empty());
        assert_eq!(s.stats().dead_lettered.get(), 0);
    }

    #[test]
    fn order_is_preserved() {
        let clock = ManualClock::new();
        let answers = [
            Err(status(500)),
            Ok(()),
            Err(status(502)),
            Err(status(503)),
            Ok(()),
            Err(status(500)),
        ];
        let (s, inner, _) = sink(&clock, Script::new(&clock, answers), exponential(S, 4 * S));
        for e in 0..10 {
            s.write(e).unwrap();
        }
        assert_eq!(*inner.delivered.lock(), (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn dead_letter_errors_are_counted_not_returned() {
        let clock = ManualClock::new();
        let inner = Script::failing(&clock, 1, status(400));
        let s = RetryingSink::new(inner, exponential(S, S))
            .clock(Arc::new(clock.clone()))
            .dead_letter(Arc::new(Letters(Mutex::default(), true)));
        assert!(s.write(1).is_ok());
        assert_eq!(s.stats().dead_letter_errors.get(), 1);
        assert_eq!(s.stats().dead_lettered.get(), 1);
    }

    #[test]
    fn bad_config_is_rejected() {
        let year = 366 * 24 * 3600 * S;
        let errors = [
            ConsecutiveFailures::new(0, S).err(),
            ConsecutiveFailures::new(3, Duration::ZERO).err(),
            ExponentialBackoff::new(Duration::ZERO, 2, S).err(),
            ExponentialBackoff::new(S, 0, S).err(),
            ExponentialBackoff::new(S, 2, year).err(),
            Schedule::new([]).err(),
            exponential(S, S).max_attempts(0).err(),
            exponential(S, S).max_age(Duration::ZERO).err(),
            exponential(S, S).retry_after_cap(year).err(),
            CircuitBreaker::new(BreakerConfig::consecutive(0, S), Backoff::constant(S)).err(),
        ];
        for (i, e) in errors.into_iter().enumerate() {
            assert!(matches!(e, Some(Error::Config { .. })), "case {i}: {e:?}");
        }
    }
}
