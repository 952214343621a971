//! A point-in-time copy of one endpoint's counters, for dumping.
//!
//! Every event an endpoint accepted has exactly one fate: delivered, dropped (by reason),
//! dead-lettered, or still pending. The snapshot reads the terminal counters *before* the
//! arrival counter, so an event that completes while the snapshot is taken is never counted
//! twice, and `pending` (arrivals minus fates) is never negative. `queued` and `in_flight` are
//! read from the parts that hold the events; once an endpoint is quiet,
//! `pending == queued + in_flight` — tests check that, so a lost event cannot hide in `pending`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::{DropReason, LatencySummary};

/// What one endpoint looks like at the moment of the snapshot.
#[derive(Debug, Clone, Default, Serialize)]
#[non_exhaustive]
pub struct EndpointSnapshot {
    /// The endpoint's name.
    pub name: String,
    /// Where it delivers.
    pub url: String,
    /// Its configuration, as far as it is safe to show (header values are redacted).
    pub config: ConfigView,
    /// Its counters.
    pub metrics: Metrics,
    /// Why it is not delivering, if it is not, and the last error it met.
    pub health: Health,
}

/// Why an endpoint is not delivering, in words for a person (the reasons are all `None` for a
/// healthy one), and where its breaker is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Health {
    /// Why delivery is paused (410 Gone, failing too long, or by the host).
    pub disabled: Option<String>,
    /// The endpoint failed for good (a panic inside it was caught): what happened. It takes no
    /// more events; remove it (and add it again) to start over.
    pub failed: Option<String>,
    /// The last failed attempt's error (a connection refused, a timeout, a status), kept
    /// after later successes.
    pub last_error: Option<String>,
    /// The circuit breaker's state (`closed`, `open`, `half-open`, `disabled`); `None` for a
    /// retry strategy without one, and for layer-1 endpoints.
    pub breaker: Option<String>,
}

/// The parts of an endpoint's configuration that a dump shows.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConfigView {
    /// Static header names (values are not shown: they often carry credentials).
    pub headers: Vec<String>,
    /// Total request timeout.
    #[serde(with = "duration_ms")]
    pub timeout: Duration,
    /// Consecutive failures before backing off (docker distribution's `threshold`).
    pub threshold: u32,
    /// Back-off after the threshold is reached (docker distribution's `backoff`).
    #[serde(with = "duration_ms")]
    pub backoff: Duration,
    /// Media types that are not sent.
    pub ignored_media_types: Vec<String>,
    /// Actions that are not sent.
    pub ignored_actions: Vec<String>,
    /// Queue capacity, in events.
    pub capacity: usize,
    /// The queue's overflow policy, by name.
    pub overflow: String,
    /// The retry strategy, described.
    pub retry: String,
    /// Whether requests are signed (Standard Webhooks).
    pub signed: bool,
}

/// An endpoint's counters. `events = delivered + dropped + dead_lettered + pending` always.
#[derive(Debug, Clone, Default, Serialize)]
#[non_exhaustive]
pub struct Metrics {
    /// Events accepted (passed the filter and reached the queue, rejected ones included).
    pub events: u64,
    /// Events accepted and not yet delivered, dropped or dead-lettered.
    pub pending: u64,
    /// Events waiting in the queue.
    pub queued: u64,
    /// Events taken from the queue and not yet finished (0 or 1 for layer 1).
    pub in_flight: u64,
    /// Engine only: ring positions this endpoint has not read yet. An upper bound on events
    /// published for it that it has not taken, and so not yet counted in `events` (they are
    /// counted once taken; `Dispatcher::wait_idle` and shutdown take them all). 0 for layer 1.
    pub unread: u64,
    /// Events delivered (answered 2xx).
    pub delivered: u64,
    /// Events dropped, by reason (every reason listed, zeros included).
    pub dropped: BTreeMap<DropReason, u64>,
    /// Events given up on and handed to the dead-letter sink (or counted, without one).
    pub dead_lettered: u64,
    /// Dead letters the dead-letter sink refused (an error or a panic). They are still
    /// counted in `dead_lettered`: the endpoint gave them up either way.
    pub dead_letter_errors: u64,
    /// Events the endpoint's filter did not want (not part of `events`).
    pub filtered: u64,
    /// Requests answered 2xx.
    pub successes: u64,
    /// Requests answered with another status.
    pub failures: u64,
    /// Requests that got no answer (I/O error, timeout).
    pub errors: u64,
    /// Attempts after the first.
    pub retries: u64,
    /// Responses by status code.
    pub statuses: BTreeMap<u16, u64>,
    /// Whether the endpoint is disabled (410 Gone, failing too long, or by hand).
    pub disabled: bool,
    /// Request round trip.
    pub rtt: LatencySummary,
    /// Time from acceptance to delivery.
    pub delivery_lag: LatencySummary,
}

impl Metrics {
    /// Dropped events, all reasons together.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.values().sum()
    }

    /// Whether `events == delivered + dropped + dead_lettered + pending`.
    pub fn balanced(&self) -> bool {
        self.events == self.delivered + self.dropped_total() + self.dead_lettered + self.pending
    }
}

mod duration_ms {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}
