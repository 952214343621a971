//! Time, injected.
//!
//! Policy code never reads the system clock: it takes `now` as an argument. Code that has to
//! wait (the retrying sink's backoff) asks a [`Clock`] to wait, so tests drive it with a
//! [`ManualClock`] that jumps instead of sleeping, and `close` can cut any wait short through a
//! [`Wakeup`].

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::{Condvar, Mutex};

/// A source of time that can also wait.
pub trait Clock: Send + Sync + 'static {
    /// The current monotonic time.
    fn now(&self) -> Instant;

    /// The current wall-clock time (for `webhook-timestamp` and HTTP-date `Retry-After`).
    fn wall(&self) -> SystemTime;

    /// Waits until `d` has passed or `wakeup` is signalled, whichever is first. Returns `true`
    /// if it was woken early.
    fn wait(&self, d: Duration, wakeup: &Wakeup) -> bool;
}

/// The real clock: `Instant::now`, `SystemTime::now`, and a condition-variable wait.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
    fn wall(&self) -> SystemTime {
        SystemTime::now()
    }
    fn wait(&self, d: Duration, wakeup: &Wakeup) -> bool {
        wakeup.wait_for(d)
    }
}

/// A clock for tests: time moves only when told to, and `wait` advances it instead of sleeping.
///
/// It may be set backwards (`set`), so tests can check that policies survive a clock that
/// misbehaves (they must saturate, never panic).
#[derive(Debug, Clone)]
pub struct ManualClock {
    inner: Arc<Mutex<(Instant, SystemTime)>>,
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl ManualClock {
    /// A clock starting at the current instant and at 2021-02-23T00:00:00Z of wall time.
    pub fn new() -> Self {
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_614_038_400);
        ManualClock {
            inner: Arc::new(Mutex::new((Instant::now(), wall))),
        }
    }

    /// Moves both clocks forward by `d`.
    pub fn advance(&self, d: Duration) {
        let mut g = self.inner.lock();
        g.0 += d;
        g.1 += d;
    }

    /// Sets the monotonic clock to `t`, which may be earlier than now.
    pub fn set(&self, t: Instant) {
        self.inner.lock().0 = t;
    }

    /// Sets the wall clock to `t`.
    pub fn set_wall(&self, t: SystemTime) {
        self.inner.lock().1 = t;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.inner.lock().0
    }
    fn wall(&self) -> SystemTime {
        self.inner.lock().1
    }
    fn wait(&self, d: Duration, wakeup: &Wakeup) -> bool {
        if wakeup.is_set() {
            return true;
        }
        self.advance(d);
        false
    }
}

/// A one-way signal that cuts waits short: once set, every current and future
/// [`Clock::wait`] on it returns at once. Used by `close`.
#[derive(Debug, Default)]
pub struct Wakeup {
    set: Mutex<bool>,
    cv: Condvar,
}

impl Wakeup {
    /// A signal not yet set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the signal and wakes every waiter.
    pub fn set(&self) {
        *self.set.lock() = true;
        self.cv.notify_all();
    }

    /// Whether the signal is set.
    pub fn is_set(&self) -> bool {
        *self.set.lock()
    }

    /// Waits up to `d` for the signal; returns `true` if it is set.
    pub fn wait_for(&self, d: Duration) -> bool {
        let deadline = Instant::now().checked_add(d);
        let mut g = self.set.lock();
        while !*g {
            match deadline {
                Some(deadline) => {
                    if self.cv.wait_until(&mut g, deadline).timed_out() {
                        break;
                    }
                }
                None => self.cv.wait(&mut g),
            }
        }
        *g
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_waits_by_jumping() {
        let c = ManualClock::new();
        let t0 = c.now();
        let w = Wakeup::new();
        assert!(!c.wait(Duration::from_secs(3600), &w));
        assert_eq!(c.now() - t0, Duration::from_secs(3600));
        w.set();
        assert!(c.wait(Duration::from_secs(1), &w));
        assert_eq!(c.now() - t0, Duration::from_secs(3600));
    }

    #[test]
    fn wakeup_cuts_a_real_wait_short() {
        let w = Arc::new(Wakeup::new());
        let w2 = w.clone();
        let t = std::thread::spawn(move || SystemClock.wait(Duration::from_secs(600), &w2));
        w.set();
        assert!(t.join().unwrap());
    }
}
