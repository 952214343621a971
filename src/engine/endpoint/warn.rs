//! Warnings on hot paths, at most one line per interval.
//!
//! An endpoint that gives up on every batch of a dead receiver would otherwise write a log
//! line per batch: thousands a second, all alike. A [`Throttle`] lets the first through, holds
//! the rest back for an interval, and says how many it held back in the next line it lets
//! through. It takes `now` as an argument, like the rest of the endpoint.

use std::time::{Duration, Instant};

/// How often each kind of warning may be written, per endpoint.
pub(crate) const WARN_EVERY: Duration = Duration::from_secs(10);

/// Lets a kind of warning through at most once per interval.
#[derive(Debug, Clone)]
pub(crate) struct Throttle {
    every: Duration,
    last: Option<Instant>,
    held: u64,
}

impl Throttle {
    /// At most one line per `every`.
    pub fn new(every: Duration) -> Throttle {
        Throttle {
            every,
            last: None,
            held: 0,
        }
    }

    /// Whether to write the warning now: `Some(n)` with how many like it were held back since
    /// the last one written, or `None` (held back, and counted).
    pub fn check(&mut self, now: Instant) -> Option<u64> {
        let open = self
            .last
            .is_none_or(|t| now.saturating_duration_since(t) >= self.every);
        if open {
            self.last = Some(now);
            Some(std::mem::take(&mut self.held))
        } else {
            self.held += 1;
            None
        }
    }
}

/// " (and N more like it)" when `held` is not zero.
pub(crate) fn more(held: u64) -> String {
    if held == 0 {
        String::new()
    } else {
        format!(" (and {held} more like it since the last such line)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_counting_the_rest() {
        let t0 = Instant::now();
        let mut t = Throttle::new(Duration::from_secs(10));
        assert_eq!(t.check(t0), Some(0));
        for i in 1..=5 {
            assert_eq!(t.check(t0 + Duration::from_secs(i)), None);
        }
        assert_eq!(t.check(t0 + Duration::from_secs(10)), Some(5));
        assert_eq!(t.check(t0 + Duration::from_secs(11)), None);
        assert_eq!(t.check(t0 + Duration::from_secs(25)), Some(1));
        assert_eq!(more(0), "");
        assert!(more(3).contains("3 more"));
    }
}
