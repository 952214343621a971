//! What every thread may read of an endpoint: its identity and its counters.
//!
//! The worker that owns the endpoint writes almost all of these; host threads write only the
//! drops they decide at `publish` (`newest`, `rejected`, `block_timeout`) and `filtered`.
//! `snapshot` reads fates before arrivals, so `pending` is never negative (see
//! [`crate::stats`]).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::config::{EndpointConfig, Overflow};
use crate::stats::{
    ConfigView, Counter, DropCounts, DropReason, EndpointSnapshot, LatencyHistogram, Metrics,
    StatusCounts,
};

use super::EndpointId;

/// One endpoint's shared half.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The endpoint's id.
    pub id: EndpointId,
    /// Its bit in the ring's routing mask (0..64).
    pub bit: u32,
    /// The worker that owns it.
    pub worker: usize,
    /// Its name.
    pub name: String,
    /// Its URL as dumps show it (credentials redacted); `local:NAME` for in-process consumers.
    pub url: String,
    /// Its configuration as dumps show it.
    pub view: ConfigView,
    /// What `publish` does when the endpoint is full.
    pub overflow: Overflow,
    /// Events the worker took from the ring for this endpoint (for a durable endpoint: events
    /// committed to the log for it, plus those of earlier runs once it reads them).
    pub taken: Counter,
    /// Events delivered.
    pub delivered: Counter,
    /// Events given up on.
    pub dead_lettered: Counter,
    /// Dead letters the dead-letter hook refused.
    pub dead_letter_errors: Counter,
    /// Events dropped, by reason (host threads and the worker both count here).
    pub dropped: DropCounts,
    /// Events the filter did not want.
    pub filtered: Counter,
    /// Requests answered 2xx.
    pub successes: Counter,
    /// Requests answered otherwise.
    pub failures: Counter,
    /// Requests with no answer.
    pub errors: Counter,
    /// Attempts after the first.
    pub retries: Counter,
    /// Answers by status.
    pub statuses: StatusCounts,
    /// Events held by the worker waiting to be sent (backlog and formed batches).
    pub queued: AtomicU64,
    /// Events in requests on the wire.
    pub in_flight: AtomicU64,
    /// Whether delivery is paused (410, failing too long, or by hand).
    pub disabled: AtomicBool,
    /// Why it was disabled, if it is.
    pub disabled_reason: Mutex<Option<String>>,
    /// Why it failed for good (a caught panic), if it did.
    pub failed: Mutex<Option<String>>,
    /// Whether it failed (read by `publish`, so an atomic).
    failed_flag: AtomicBool,
    /// The last failed attempt's error.
    pub last_error: Mutex<Option<String>>,
    /// Durable endpoints: the store slot (set once, when it joins the store).
    pub slot: OnceLock<u8>,
    /// Durable endpoints: every record for it below this sequence number is finished (set
    /// by the worker, saved by the persistence thread).
    pub acked: AtomicU64,
    /// Durable endpoints: reading its backlog from the log rather than the ring (there may
    /// be events for it that are not counted yet).
    pub disk: AtomicBool,
    /// Set (after a SeqCst fence) once the routing table has it: from then on every event
    /// committed for it also enters the ring for it, so it may stop reading the log.
    pub routed: AtomicBool,
    /// Request round trips.
    pub rtt: LatencyHistogram,
    /// Publish to delivery.
    pub lag: LatencyHistogram,
    /// The retry strategy's breaker, for dumps: 0 none, 1 closed, 2 open, 3 half-open,
    /// 4 disabled (set by the worker after each decision).
    breaker: AtomicU8,
}

impl Shared {
    /// The shared half of an endpoint built from `config`.
    pub fn new(
        id: EndpointId,
        bit: u32,
        worker: usize,
        config: &EndpointConfig,
        url: String,
    ) -> Self {
        Shared {
            id,
            bit,
            worker,
            name: config.name.clone(),
            url,
            view: config.view(),
            overflow: config.overflow,
            taken: Counter::default(),
            delivered: Counter::default(),
            dead_lettered: Counter::default(),
            dead_letter_errors: Counter::default(),
            dropped: DropCounts::default(),
            filtered: Counter::default(),
            successes: Counter::default(),
            failures: Counter::default(),
            errors: Counter::default(),
            retries: Counter::default(),
            statuses: StatusCounts::default(),
            queued: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            disabled: AtomicBool::new(false),
            disabled_reason: Mutex::new(None),
            failed: Mutex::new(None),
            failed_flag: AtomicBool::new(false),
            last_error: Mutex::new(None),
            slot: OnceLock::new(),
            acked: AtomicU64::new(0),
            disk: AtomicBool::new(false),
            routed: AtomicBool::new(false),
            rtt: LatencyHistogram::default(),
            lag: LatencyHistogram::default(),
            breaker: AtomicU8::new(0),
        }
    }

    /// Events accepted: taken by the worker (for a durable endpoint: committed to the log),
    /// plus those refused at publish or by the store.
    fn events(&self) -> u64 {
        self.taken.get()
            + self.dropped.get(DropReason::Newest)
            + self.dropped.get(DropReason::Rejected)
            + self.dropped.get(DropReason::BlockTimeout)
            + self.dropped.get(DropReason::Quota)
            + self.dropped.get(DropReason::Failed)
    }

    /// Whether it is a durable endpoint.
    pub fn is_durable(&self) -> bool {
        self.slot.get().is_some()
    }

    /// Events accepted and not yet finished (delivered, dropped or dead-lettered).
    pub fn pending(&self) -> u64 {
        let finished = self.delivered.get() + self.dead_lettered.get() + self.dropped.total();
        self.events().saturating_sub(finished)
    }

    /// Marks the endpoint disabled (with a reason for dumps) or enabled (`None`).
    pub fn set_disabled(&self, reason: Option<String>) {
        self.disabled.store(reason.is_some(), Ordering::Release);
        *self.disabled_reason.lock() = reason;
    }

    /// Records where the strategy's breaker is (the worker, after each decision).
    pub fn set_breaker(&self, state: Option<crate::policy::BreakerState>) {
        use crate::policy::BreakerState as B;
        let code = match state {
            None => 0,
            Some(B::Closed) => 1,
            Some(B::Open { .. }) => 2,
            Some(B::HalfOpen { .. }) => 3,
            Some(_) => 4,
        };
        self.breaker.store(code, Ordering::Relaxed);
    }

    fn breaker_name(&self) -> Option<&'static str> {
        match self.breaker.load(Ordering::Relaxed) {
            1 => Some("closed"),
            2 => Some("open"),
            3 => Some("half_open"),
            4 => Some("disabled"),
            _ => None,
        }
    }

    /// Records the last failed attempt's error (failures only: not on the hot path).
    pub fn set_last_error(&self, e: &crate::Error) {
        *self.last_error.lock() = Some(e.to_string());
    }

    /// Marks the endpoint failed for good (a caught panic), with what happened.
    pub fn set_failed(&self, what: String) {
        *self.failed.lock() = Some(what);
        self.failed_flag.store(true, Ordering::Release);
    }

    /// Whether it failed for good.
    pub fn is_failed(&self) -> bool {
        self.failed_flag.load(Ordering::Acquire)
    }

    /// The endpoint's counters, now. `events = delivered + dropped + dead_lettered + pending`.
    /// `unread` is how far its ring cursor is behind the head.
    pub fn snapshot(&self, unread: u64) -> EndpointSnapshot {
        let metrics = Metrics {
            rtt: self.rtt.summary(),
            delivery_lag: self.lag.summary(),
            ..self.counts(unread)
        };
        EndpointSnapshot {
            name: self.name.clone(),
            url: self.url.clone(),
            config: self.view.clone(),
            metrics,
            health: crate::stats::Health {
                disabled: self.disabled_reason.lock().clone(),
                failed: self.failed.lock().clone(),
                last_error: self.last_error.lock().clone(),
                breaker: self.breaker_name(),
            },
        }
    }

    /// The counters without the latency summaries (cheap: no histogram is read).
    pub fn counts(&self, unread: u64) -> Metrics {
        // Fates first, arrivals last.
        let delivered = self.delivered.get();
        let dead_lettered = self.dead_lettered.get();
        let dropped: std::collections::BTreeMap<_, _> = self.dropped.iter().collect();
        let in_flight = self.in_flight.load(Ordering::Acquire);
        let queued = self.queued.load(Ordering::Acquire);
        let events = self.events();
        let finished = delivered + dead_lettered + dropped.values().sum::<u64>();
        Metrics {
            events,
            pending: events.saturating_sub(finished),
            queued,
            in_flight,
            unread,
            delivered,
            dropped,
            dead_lettered,
            dead_letter_errors: self.dead_letter_errors.get(),
            filtered: self.filtered.get(),
            successes: self.successes.get(),
            failures: self.failures.get(),
            errors: self.errors.get(),
            retries: self.retries.get(),
            statuses: self.statuses.iter().collect(),
            disabled: self.disabled.load(Ordering::Acquire),
            ..Metrics::default()
        }
    }
}
