//! (stub: filled in by its owner)

use std::time::{Duration, SystemTime};

/// Parses a `Retry-After` header value: delay-seconds or an HTTP-date (relative to `now`).
/// Returns `None` for a value that is neither. A date in the past gives `Duration::ZERO`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let _ = (value, now);
    todo!("owner implements")
}
