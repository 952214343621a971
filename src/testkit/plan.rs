//! The fault plan: how a test-kit [`Receiver`](crate::testkit::Receiver) misbehaves, and
//! what it checks.
//!
//! A [`ReceiverConfig`] is plain data, built with chained setters and validated when the
//! receiver starts (a status outside 100..=599, a `Retry-After` with control characters or a
//! zero slow-read chunk is refused with `InvalidInput`). The receiver applies it per request,
//! in this order: a hang or dropped connection if configured; else the next scripted
//! [`Reply`]; else the `fail_for` status while its window (from the first request) lasts;
//! else 200. `delay` is added before every answer. Before the plan, every request's body must
//! be a `{"events":[...]}` envelope (400), fully valid JSON only with
//! [`ReceiverConfig::strict_json`], and signed when secrets are set (401). A receiver given a certificate and key
//! ([`ReceiverConfig::tls`]) serves HTTPS instead of HTTP.

use std::io;
use std::time::Duration;

use crate::http::Secret;

/// One scripted answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The status to answer with (100..=599).
    pub status: u16,
    /// A `Retry-After` header to send, verbatim.
    pub retry_after: Option<String>,
    /// A `Location` header to send, verbatim (for a redirect).
    pub location: Option<String>,
    /// How long to wait before answering (on top of [`ReceiverConfig::delay`]).
    pub delay: Duration,
    /// Frame the answer with `Transfer-Encoding: chunked` (its body is
    /// [`ReceiverConfig::response_body`] bytes, in chunks of at most 4 KiB).
    pub chunked: bool,
    /// Answer with `Connection: close` and close the connection after the answer.
    pub close: bool,
}

impl Reply {
    /// Answer `status`, at once, without `Retry-After`.
    pub fn status(status: u16) -> Self {
        Reply {
            status,
            retry_after: None,
            location: None,
            delay: Duration::ZERO,
            chunked: false,
            close: false,
        }
    }

    /// Adds a `Retry-After` header (seconds or an HTTP-date, sent as given).
    pub fn retry_after(mut self, value: impl Into<String>) -> Self {
        self.retry_after = Some(value.into());
        self
    }

    /// Adds a `Location` header (a redirect's target, sent as given).
    pub fn location(mut self, value: impl Into<String>) -> Self {
        self.location = Some(value.into());
        self
    }

    /// Waits `d` before answering.
    pub fn delay(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }

    /// Sends the answer with `Transfer-Encoding: chunked`.
    pub fn chunked(mut self) -> Self {
        self.chunked = true;
        self
    }

    /// Sends `Connection: close` and closes the connection after answering.
    pub fn close(mut self) -> Self {
        self.close = true;
        self
    }
}

impl From<u16> for Reply {
    fn from(status: u16) -> Self {
        Reply::status(status)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fault {
    None,
    Hang,
    DropConnection,
}

/// What a [`Receiver`](crate::testkit::Receiver) checks and which faults it injects. The
/// default answers every valid request `200` at once.
#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    pub(super) secrets: Vec<Secret>,
    pub(super) tolerance: Duration,
    pub(super) script: Vec<Reply>,
    pub(super) fail_for: Option<(Duration, u16)>,
    pub(super) fault: Fault,
    pub(super) slow_read: Option<(usize, Duration)>,
    pub(super) delay: Duration,
    pub(super) max_body: usize,
    pub(super) response_body: usize,
    pub(super) strict_json: bool,
    /// PEM certificate chain and private key, when serving HTTPS.
    pub(super) tls: Option<(String, String)>,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        ReceiverConfig {
            secrets: Vec::new(),
            tolerance: Duration::from_secs(300),
            script: Vec::new(),
            fail_for: None,
            fault: Fault::None,
            slow_read: None,
            delay: Duration::ZERO,
            max_body: 16 << 20,
            response_body: 0,
            strict_json: false,
            tls: None,
        }
    }
}

impl ReceiverConfig {
    /// The default: verify nothing, answer 200.
    pub fn new() -> Self {
        Self::default()
    }

    /// Verifies Standard Webhooks signatures against these secrets: requests without a valid
    /// one are counted in `bad_signatures` and answered 401.
    pub fn secrets(mut self, secrets: Vec<Secret>) -> Self {
        self.secrets = secrets;
        self
    }

    /// How far `webhook-timestamp` may be from now (default 5 minutes, as the spec's
    /// reference libraries).
    pub fn tolerance(mut self, d: Duration) -> Self {
        self.tolerance = d;
        self
    }

    /// Answers the first requests with these replies, one per request, then 200.
    pub fn statuses(mut self, replies: Vec<Reply>) -> Self {
        self.script = replies;
        self
    }

    /// Answers `status` to every request that arrives within `d` of the first request.
    pub fn fail_for(mut self, d: Duration, status: u16) -> Self {
        self.fail_for = Some((d, status));
        self
    }

    /// Reads each request and never answers it (until shutdown).
    pub fn hang(mut self) -> Self {
        self.fault = Fault::Hang;
        self
    }

    /// Reads each request and closes the connection without answering.
    pub fn drop_connection(mut self) -> Self {
        self.fault = Fault::DropConnection;
        self
    }

    /// Reads at most `bytes_per_chunk` bytes at a time, pausing `pause` after each read.
    pub fn slow_read(mut self, bytes_per_chunk: usize, pause: Duration) -> Self {
        self.slow_read = Some((bytes_per_chunk, pause));
        self
    }

    /// Waits `d` before every answer.
    pub fn delay(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }

    /// Refuses request bodies longer than `n` bytes with 413 (default 16 MiB).
    pub fn max_body(mut self, n: usize) -> Self {
        self.max_body = n;
        self
    }

    /// Sends `n` filler bytes as the body of every answer (default none), to test senders'
    /// response-size bounds.
    pub fn response_body(mut self, n: usize) -> Self {
        self.response_body = n;
        self
    }

    /// Also parses every request body in full (serde_json), answering 400 to one that is
    /// not JSON. Off by default: the receiver then reads the envelope with a scan that checks
    /// its structure and decodes each event's id, but not the text of the numbers, literals
    /// and strings it skips (escapes, control characters, UTF-8). The scan costs a fraction
    /// of a full parse, so a benchmark measures the sender, not the receiver. Either way a
    /// body that is not a `{"events":[...]}` envelope is answered 400, and the ids are the
    /// same.
    pub fn strict_json(mut self, on: bool) -> Self {
        self.strict_json = on;
        self
    }

    /// Serves HTTPS with this PEM certificate chain (leaf first) and PEM private key (PKCS#8,
    /// PKCS#1 or SEC1); [`Receiver::url`](crate::testkit::Receiver::url) then says `https`.
    /// A chain or key that does not parse makes `start` fail with `InvalidInput`.
    pub fn tls(mut self, cert_chain_pem: impl Into<String>, key_pem: impl Into<String>) -> Self {
        self.tls = Some((cert_chain_pem.into(), key_pem.into()));
        self
    }

    pub(super) fn validate(&self) -> io::Result<()> {
        let bad = |what: String| Err(io::Error::new(io::ErrorKind::InvalidInput, what));
        let statuses = self
            .script
            .iter()
            .map(|r| r.status)
            .chain(self.fail_for.map(|(_, s)| s));
        for s in statuses {
            if !(100..=599).contains(&s) {
                return bad(format!("status {s} is not between 100 and 599"));
            }
        }
        for r in &self.script {
            if let Some(v) = &r.retry_after
                && v.bytes().any(|b| b.is_ascii_control())
            {
                return bad(format!("Retry-After {v:?} contains control characters"));
            }
            if let Some(v) = &r.location
                && v.bytes().any(|b| b.is_ascii_control())
            {
                return bad(format!("Location {v:?} contains control characters"));
            }
        }
        if self.slow_read.is_some_and(|(n, _)| n == 0) {
            return bad("slow_read needs at least one byte per chunk".into());
        }
        Ok(())
    }
}
