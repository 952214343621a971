//! What an answer (or a failure to get one) means for the event.
//!
//! The [`Classifier`] turns an HTTP status or an [`Error`] into an [`Outcome`]: delivered,
//! retry (possibly throttled, with the server's `Retry-After`), permanent failure (dead-letter
//! it), or gone (disable the endpoint). It is pure data with no clock and no I/O, so the
//! blocking sinks and the engine classify identically. The default follows common webhook
//! practice: 2xx delivered; 408, 429 and every 5xx retried; 429 and 503 throttled; 410 gone;
//! every other status permanent. [`parse_retry_after`] reads the header the throttled answers
//! carry.

use std::time::{Duration, SystemTime};

use crate::Error;

/// Parses a `Retry-After` header value (RFC 9110 §10.2.3): either delay-seconds or an
/// HTTP-date, taken relative to `now`. Returns `None` for a value that is neither. A date in
/// the past gives `Duration::ZERO`; an absurd number of seconds saturates rather than overflows
/// (callers cap it).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        let secs = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// What one delivery attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The endpoint took the event (2xx).
    Delivered,
    /// A transient failure: try again later.
    Retry {
        /// How long the server asked us to wait (`Retry-After`), if it did.
        retry_after: Option<Duration>,
        /// The server said it is overloaded or rate-limiting us (429, 503): slow down.
        throttled: bool,
    },
    /// The endpoint refused this event and will refuse it again: give up on it (dead-letter).
    /// `status` is 0 when the failure was not an HTTP answer (the event could not be encoded).
    Permanent {
        /// The HTTP status, or 0.
        status: u16,
    },
    /// The endpoint is gone (410) or disabled: stop sending to it at all.
    Gone,
}

/// The status code the default classifier treats as "this endpoint no longer exists".
pub const GONE: u16 = 410;

/// Statuses whose answers mean "slow down" and whose `Retry-After` is expected.
const THROTTLED: [u16; 2] = [429, 503];

/// Which answers are retried. Cheap to clone (80 bytes) and to consult (a bit test).
///
/// `Classifier::default()` retries 408, 429 and every 5xx. The set can be changed with
/// [`with_retryable`](Classifier::with_retryable), [`retry_also`](Classifier::retry_also) and
/// [`never_retry`](Classifier::never_retry); each rejects codes outside 100..=599 and 2xx codes
/// (which always mean delivered) with [`Error::Config`]. A code in the retryable set is
/// retried even if it is 410, so `retry_also(410)` turns "gone" into an ordinary retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classifier {
    /// Bit `code` is set when `code` is retried; 640 bits cover 0..=599.
    retryable: [u64; 10],
}

impl Default for Classifier {
    fn default() -> Self {
        let mut c = Classifier { retryable: [0; 10] };
        c.set(408, true);
        c.set(429, true);
        for code in 500..=599 {
            c.set(code, true);
        }
        c
    }
}

impl Classifier {
    /// A classifier that retries exactly `codes` (and nothing else that is not a transport error).
    pub fn with_retryable(codes: impl IntoIterator<Item = u16>) -> Result<Self, Error> {
        let mut c = Classifier { retryable: [0; 10] };
        for code in codes {
            check_code(code)?;
            c.set(code, true);
        }
        Ok(c)
    }

    /// Also retries `code`.
    pub fn retry_also(mut self, code: u16) -> Result<Self, Error> {
        check_code(code)?;
        self.set(code, true);
        Ok(self)
    }

    /// Never retries `code`: it becomes a permanent failure (or, for 410, gone).
    pub fn never_retry(mut self, code: u16) -> Result<Self, Error> {
        check_code(code)?;
        self.set(code, false);
        Ok(self)
    }

    /// Whether an answer with `code` is retried. 600..=999 is no HTTP status, and RFC 9110
    /// (section 15) has a client treat it as a 5xx: it is retried if 500 is. Past 999 never.
    pub fn is_retryable(&self, code: u16) -> bool {
        let code = match code {
            600..=999 => 500,
            1000.. => return false,
            _ => code,
        };
        self.retryable[usize::from(code / 64)] & (1 << (code % 64)) != 0
    }

    fn set(&mut self, code: u16, on: bool) {
        let (word, bit) = (usize::from(code / 64), 1u64 << (code % 64));
        if on {
            self.retryable[word] |= bit;
        } else {
            self.retryable[word] &= !bit;
        }
    }

    /// Classifies an HTTP answer. `retry_after` is kept for every retried answer (a server may
    /// send it with any of them); `throttled` is set for 429 and 503. A status outside
    /// 600..=999 is handled as a 5xx (RFC 9110, section 15); anything else outside
    /// 100..=599 counts as permanent.
    pub fn classify_status(&self, status: u16, retry_after: Option<Duration>) -> Outcome {
        if (200..=299).contains(&status) {
            Outcome::Delivered
        } else if self.is_retryable(status) {
            Outcome::Retry {
                retry_after,
                throttled: THROTTLED.contains(&status),
            }
        } else if status == GONE {
            Outcome::Gone
        } else {
            Outcome::Permanent { status }
        }
    }

    /// Classifies a failed write.
    ///
    /// - `Status` goes by its code, as [`classify_status`](Self::classify_status).
    /// - `Io`, `Timeout` (no answer: the network or the endpoint may recover), `Full` and
    ///   `Quota` or `DeadLettersFull` (a downstream buffer or store is momentarily full),
    ///   `Storage` (a disk error
    ///   downstream) and `Other` (a user sink's error, assumed transient) are retried.
    /// - `Disabled` is gone.
    /// - `Encode`, `Config` and `TooManyEndpoints` are permanent with status 0: sending the
    ///   same bytes again cannot help.
    /// - `Closed` is permanent with status 0: a closed sink never reopens, so retrying only
    ///   burns attempts. Drivers that can hand the event back instead (the retrying sink
    ///   returns `Err(Closed)` to its writer, which counts the drop as shutdown) check
    ///   [`Error::is_closed`] before classifying.
    /// - `Panicked` is permanent with status 0: the same event would panic again.
    /// - `Undelivered` and `Broadcast` are permanent with status 0: some or all of the work
    ///   happened elsewhere, and retrying would duplicate it.
    pub fn classify_error(&self, err: &Error) -> Outcome {
        match err {
            Error::Status { code, retry_after } => self.classify_status(*code, *retry_after),
            Error::Io { .. }
            | Error::Timeout { .. }
            | Error::Full { .. }
            | Error::Quota { .. }
            | Error::DeadLettersFull { .. }
            | Error::Storage { .. }
            | Error::Other(_) => Outcome::Retry {
                retry_after: None,
                throttled: false,
            },
            Error::Disabled { .. } => Outcome::Gone,
            Error::Encode { .. }
            | Error::Config { .. }
            | Error::TooManyEndpoints { .. }
            | Error::Closed
            | Error::Undelivered { .. }
            | Error::Panicked { .. }
            | Error::Broadcast { .. } => Outcome::Permanent { status: 0 },
        }
    }
}

fn check_code(code: u16) -> Result<(), Error> {
    if !(100..=599).contains(&code) {
        return Err(Error::config(
            "classifier.status",
            format!("{code} is not an HTTP status (100..=599)"),
        ));
    }
    if (200..=299).contains(&code) {
        return Err(Error::config(
            "classifier.status",
            format!("{code} is a success and is never retried"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod retry_after_tests {
    use super::*;

    #[test]
    fn seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(Duration::from_secs(u64::MAX))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:37 GMT", now),
            Some(Duration::from_secs(60))
        );
        // The two obsolete formats recipients must accept.
        assert_eq!(
            parse_retry_after("Sunday, 06-Nov-94 08:49:47 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Sun Nov  6 08:49:57 1994", now),
            Some(Duration::from_secs(20))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("1.5", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("", now), None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    const fn retry(retry_after: Option<Duration>, throttled: bool) -> Outcome {
        Outcome::Retry {
            retry_after,
            throttled,
        }
    }

    #[test]
    fn default_status_table() {
        let c = Classifier::default();
        let ra = Some(Duration::from_secs(7));
        let table = [
            (200, None, Outcome::Delivered),
            (204, ra, Outcome::Delivered),
            (299, None, Outcome::Delivered),
            (408, None, retry(None, false)),
            (429, ra, retry(ra, true)),
            (429, None, retry(None, true)),
            (500, ra, retry(ra, false)),
            (502, None, retry(None, false)),
            (503, ra, retry(ra, true)),
            (599, None, retry(None, false)),
            (410, ra, Outcome::Gone),
            (400, None, Outcome::Permanent { status: 400 }),
            (401, None, Outcome::Permanent { status: 401 }),
            (404, ra, Outcome::Permanent { status: 404 }),
            (413, None, Outcome::Permanent { status: 413 }),
            (301, None, Outcome::Permanent { status: 301 }),
            (100, None, Outcome::Permanent { status: 100 }),
            (0, None, Outcome::Permanent { status: 0 }),
            // No HTTP status, but three digits: handled as a 5xx (RFC 9110, section 15).
            (600, None, retry(None, false)),
            (858, ra, retry(ra, false)),
            (1000, None, Outcome::Permanent { status: 1000 }),
            (u16::MAX, None, Outcome::Permanent { status: u16::MAX }),
        ];
        for (status, retry_after, want) in table {
            assert_eq!(c.classify_status(status, retry_after), want, "{status}");
        }
    }

    #[test]
    fn retryable_set_is_configurable() {
        let c = Classifier::default()
            .retry_also(409)
            .unwrap()
            .never_retry(503)
            .unwrap()
            .retry_also(410)
            .unwrap();
        assert_eq!(c.classify_status(409, None), retry(None, false));
        assert_eq!(
            c.classify_status(503, None),
            Outcome::Permanent { status: 503 }
        );
        assert_eq!(c.classify_status(410, None), retry(None, false));
        assert_eq!(
            c.clone()
                .never_retry(410)
                .unwrap()
                .classify_status(410, None),
            Outcome::Gone
        );
        let only = Classifier::with_retryable([429]).unwrap();
        assert_eq!(only.classify_status(429, None), retry(None, true));
        assert_eq!(
            only.classify_status(500, None),
            Outcome::Permanent { status: 500 }
        );
        assert!(!only.is_retryable(599) && only.is_retryable(429) && !only.is_retryable(9999));
    }

    #[test]
    fn bad_codes_are_config_errors() {
        for code in [0, 99, 200, 204, 600, u16::MAX] {
            assert!(
                matches!(
                    Classifier::default().retry_also(code),
                    Err(Error::Config {
                        field: "classifier.status",
                        ..
                    })
                ),
                "{code}"
            );
            assert!(Classifier::default().never_retry(code).is_err(), "{code}");
        }
        assert!(Classifier::with_retryable([500, 42]).is_err());
    }

    #[test]
    fn errors_table() {
        let c = Classifier::default();
        let table = [
            (
                Error::Status {
                    code: 503,
                    retry_after: Some(Duration::from_secs(1)),
                },
                retry(Some(Duration::from_secs(1)), true),
            ),
            (
                Error::Status {
                    code: 422,
                    retry_after: None,
                },
                Outcome::Permanent { status: 422 },
            ),
            (
                Error::Status {
                    code: 410,
                    retry_after: None,
                },
                Outcome::Gone,
            ),
            (
                io::Error::new(io::ErrorKind::ConnectionRefused, "no").into(),
                retry(None, false),
            ),
            (
                Error::Timeout {
                    waiting_for: "request",
                    after: Duration::from_secs(30),
                },
                retry(None, false),
            ),
            (Error::Full { capacity: 1 }, retry(None, false)),
            (Error::other(io::Error::other("user")), retry(None, false)),
            (
                Error::Disabled {
                    reason: "by hand".into(),
                },
                Outcome::Gone,
            ),
            (
                Error::Encode {
                    message: "bad".into(),
                },
                Outcome::Permanent { status: 0 },
            ),
            (Error::config("x", "y"), Outcome::Permanent { status: 0 }),
            (Error::Closed, Outcome::Permanent { status: 0 }),
            (
                Error::Undelivered { count: 3 },
                Outcome::Permanent { status: 0 },
            ),
            (
                Error::Broadcast {
                    failed: 1,
                    total: 2,
                    first: Box::new(Error::Closed),
                },
                Outcome::Permanent { status: 0 },
            ),
        ];
        for (err, want) in table {
            assert_eq!(c.classify_error(&err), want, "{err:?}");
        }
    }
}
