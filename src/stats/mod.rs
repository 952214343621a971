//! Counters and histograms that hot paths can bump without a lock, and what they render to.
//!
//! Every sink that can decide an event's fate owns a small stats struct built from these parts
//! (`QueueStats`, `RetryStats`, `HttpStats`); an endpoint's [`EndpointSnapshot`] reads them all.
//! Counters are monotonic `AtomicU64`s (release increments, acquire reads): a reader may see
//! a slightly stale value, never a torn one. Latency histograms are hdrhistogram behind an
//! uncontended mutex: each one has a single recording thread (the one delivering for its
//! endpoint), and readers take the lock only to copy it.
//!
//! Users read these (`get`, `iter`, `summary`); only hookwire bumps them, so a count always
//! means what hookwire did, never what a caller added:
//!
//! ```compile_fail
//! let stats = hookwire::sink::QueueStats::default();
//! stats.events.inc(); // error: `inc` is private to hookwire
//! ```
//!
//! Report structs grow: they are `#[non_exhaustive]`, so a program reads their fields but
//! builds one only from `Default` (tests), never with a struct literal that a new field
//! would break:
//!
//! ```compile_fail
//! let m = hookwire::stats::Metrics { events: 1, ..Default::default() }; // error: non-exhaustive
//! ```
//!
//! ```
//! let mut m = hookwire::stats::Metrics::default();
//! m.events = 1; // fields stay readable and writable
//! assert!(!m.balanced());
//! ```

mod page;
mod render;
mod snapshot;

pub use page::render_status_page;
pub use render::*;
pub use snapshot::*;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Serialize;

/// A monotonic event counter.
///
/// Increments are `Release` and reads `Acquire` (free on x86): a snapshot that reads an
/// event's fate counter and then the arrival counter sees the arrival too, because the arrival
/// happened before the fate. That is what keeps `pending` from going negative.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    #[inline]
    pub(crate) fn inc(&self) {
        self.0.fetch_add(1, Ordering::Release);
    }
    /// Adds one, for a counter that one thread at a time increments, each increment
    /// happening before the next (under a lock, or by the single holder of a queue): a load
    /// and a `Release` store instead of a read-modify-write, which on x86 is a locked
    /// instruction that drains the store buffer. Readers see the same values as with `inc`.
    #[inline]
    pub(crate) fn inc_serial(&self) {
        let n = self.0.load(Ordering::Relaxed);
        self.0.store(n + 1, Ordering::Release);
    }
    /// Adds `n`.
    #[inline]
    pub(crate) fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Release);
    }
    /// The current value.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

/// Why an accepted event was not delivered (dead letters are counted apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DropReason {
    /// The queue was full and its policy is `DropNewest`: the incoming event was discarded.
    Newest,
    /// The queue was full and its policy is `DropOldest`: the oldest queued event was evicted.
    Oldest,
    /// The queue was full and its policy is `Reject`: the writer got [`Error::Full`](crate::Error::Full).
    Rejected,
    /// The queue was full, its policy is `Block`, and the wait timed out: the writer got
    /// [`Error::Timeout`](crate::Error::Timeout).
    BlockTimeout,
    /// The sink was closed (or its close deadline passed) before the event was delivered.
    Shutdown,
    /// The downstream sink returned an error the queue could not hand back to anyone.
    SinkError,
    /// A durable endpoint's store was full (its disk quota): the event was not persisted.
    /// `publish` returned [`Error::Quota`](crate::Error::Quota) when it could tell at once.
    Quota,
    /// The endpoint had failed (a panic inside it was caught) and took no more events, or
    /// it was disabled and full with `Block` (no room comes until it is enabled, so the
    /// writer is not made to wait): `publish` returned
    /// [`Error::Disabled`](crate::Error::Disabled) for it.
    Failed,
    /// A durable endpoint's record was lost to damage in the log: the reader skipped a
    /// damaged range (its bytes are kept in the data directory's quarantine; see
    /// `docs/durable.md`). The record's mask was lost with it, so every durable endpoint
    /// that read past the range counts its records.
    Corrupt,
    /// A durable endpoint of a store shared by several nodes lost its lease (or could not
    /// renew it in time) while it held the event: it let go of it, and the node that takes
    /// the lease over delivers it from the store (the cluster loses nothing; counted here so
    /// that this node's identity holds).
    HandedOver,
}

impl DropReason {
    /// Every reason, in a fixed order.
    pub const ALL: [DropReason; 10] = [
        DropReason::Newest,
        DropReason::Oldest,
        DropReason::Rejected,
        DropReason::BlockTimeout,
        DropReason::Shutdown,
        DropReason::SinkError,
        DropReason::Quota,
        DropReason::Failed,
        DropReason::Corrupt,
        DropReason::HandedOver,
    ];

    /// The reason's name in JSON and Prometheus output.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Newest => "newest",
            DropReason::Oldest => "oldest",
            DropReason::Rejected => "rejected",
            DropReason::BlockTimeout => "block_timeout",
            DropReason::Shutdown => "shutdown",
            DropReason::SinkError => "sink_error",
            DropReason::Quota => "quota",
            DropReason::Failed => "failed",
            DropReason::Corrupt => "corrupt",
            DropReason::HandedOver => "handed_over",
        }
    }
}

/// One counter per [`DropReason`].
#[derive(Debug, Default)]
pub struct DropCounts([Counter; DropReason::ALL.len()]);

impl DropCounts {
    /// Counts one drop.
    #[inline]
    pub(crate) fn inc(&self, reason: DropReason) {
        self.0[reason as usize].inc();
    }
    /// Counts `n` drops.
    #[inline]
    pub(crate) fn add(&self, reason: DropReason, n: u64) {
        self.0[reason as usize].add(n);
    }
    /// Drops counted for `reason`.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.0[reason as usize].get()
    }
    /// Drops counted for every reason.
    pub fn total(&self) -> u64 {
        self.0.iter().map(Counter::get).sum()
    }
    /// `(reason, count)` for every reason, zeros included.
    pub fn iter(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL.into_iter().map(|r| (r, self.get(r)))
    }
}

/// How many responses came back with each HTTP status code (100..=999, each as itself;
/// anything else is counted as 0).
pub struct StatusCounts(Box<[Counter; 901]>);

impl Default for StatusCounts {
    fn default() -> Self {
        StatusCounts(Box::new(std::array::from_fn(|_| Counter::default())))
    }
}

impl std::fmt::Debug for StatusCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl StatusCounts {
    fn slot(code: u16) -> usize {
        if (100..=999).contains(&code) {
            usize::from(code) - 99
        } else {
            0
        }
    }
    /// Counts one response with `code`.
    #[inline]
    pub(crate) fn record(&self, code: u16) {
        self.0[Self::slot(code)].inc();
    }
    /// Responses counted with `code` (100..=999, each as itself: a receiver that answers 858
    /// is shown answering 858; anything else is counted as 0).
    pub fn get(&self, code: u16) -> u64 {
        self.0[Self::slot(code)].get()
    }
    /// `(code, count)` for every code seen at least once, in code order.
    pub fn iter(&self) -> impl Iterator<Item = (u16, u64)> + '_ {
        self.0.iter().enumerate().filter_map(|(i, c)| {
            let n = c.get();
            let code = if i == 0 { 0 } else { i as u16 + 99 };
            (n > 0).then_some((code, n))
        })
    }
}

/// A latency histogram in microseconds, 1 µs to 1 hour, 2 significant figures (1% error).
///
/// Values past an hour are clamped to an hour. About 26 KiB each.
pub struct LatencyHistogram(Mutex<Histogram<u64>>);

const HIST_MAX_US: u64 = 3_600_000_000;

impl Default for LatencyHistogram {
    fn default() -> Self {
        let h = Histogram::new_with_bounds(1, HIST_MAX_US, 2)
            .expect("static histogram bounds are valid");
        LatencyHistogram(Mutex::new(h))
    }
}

impl std::fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.summary().fmt(f)
    }
}

impl LatencyHistogram {
    /// Records one latency.
    pub(crate) fn record(&self, d: Duration) {
        let us = u64::try_from(d.as_micros())
            .unwrap_or(u64::MAX)
            .clamp(1, HIST_MAX_US);
        self.0.lock().saturating_record(us);
    }

    /// Records several latencies under one lock.
    pub(crate) fn record_all(&self, ds: impl IntoIterator<Item = Duration>) {
        let mut h = self.0.lock();
        for d in ds {
            let us = u64::try_from(d.as_micros())
                .unwrap_or(u64::MAX)
                .clamp(1, HIST_MAX_US);
            h.saturating_record(us);
        }
    }

    /// Count, mean and percentiles of what was recorded so far.
    pub fn summary(&self) -> LatencySummary {
        let h = self.0.lock();
        if h.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: h.len(),
            mean_us: h.mean().round() as u64,
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }
}

/// Percentiles of a [`LatencyHistogram`], in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct LatencySummary {
    /// How many values were recorded.
    pub count: u64,
    /// The mean.
    pub mean_us: u64,
    /// The median.
    pub p50_us: u64,
    /// The 90th percentile.
    pub p90_us: u64,
    /// The 99th percentile.
    pub p99_us: u64,
    /// The 99.9th percentile.
    pub p999_us: u64,
    /// The largest value.
    pub max_us: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_counts_by_reason() {
        let d = DropCounts::default();
        d.inc(DropReason::Oldest);
        d.add(DropReason::Shutdown, 3);
        assert_eq!(d.get(DropReason::Oldest), 1);
        assert_eq!(d.get(DropReason::Newest), 0);
        assert_eq!(d.total(), 4);
        assert_eq!(d.iter().count(), DropReason::ALL.len());
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "ALL must follow declaration order");
        }
    }

    #[test]
    fn status_counts_keep_codes_apart() {
        let s = StatusCounts::default();
        s.record(200);
        s.record(200);
        s.record(503);
        s.record(99);
        s.record(1000);
        s.record(858);
        assert_eq!(s.get(200), 2);
        assert_eq!(s.get(599), 0);
        assert_eq!(
            s.iter().collect::<Vec<_>>(),
            vec![(0, 2), (200, 2), (503, 1), (858, 1)],
            "an unknown status is kept as itself"
        );
        s.record(100);
        s.record(599);
        assert_eq!(s.get(100), 1);
        assert_eq!(s.get(599), 1);
    }

    #[test]
    fn latency_percentiles() {
        let h = LatencyHistogram::default();
        assert_eq!(h.summary().count, 0);
        for ms in 1..=100u64 {
            h.record(Duration::from_millis(ms));
        }
        h.record(Duration::from_secs(10 * 3600));
        let s = h.summary();
        assert_eq!(s.count, 101);
        assert!((49_000..=51_500).contains(&s.p50_us), "{s:?}");
        assert!(s.max_us >= 3_500_000_000, "clamped to an hour: {s:?}");
    }
}
