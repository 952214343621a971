//! A durable endpoint's link to the log: where it is in it, and whether it reads the log
//! (after a restart, or once it lagged half a ring) or the ring (its read-ahead tail).
//!
//! The endpoint never touches a file. While it reads the log it asks for records with
//! [`Action::ReadLog`](super::Action::ReadLog), one request at a time; the worker hands the
//! request to the log reader thread, and the answer comes back as a [`LogRead`]. What it needs
//! to know of the log's progress it reads from [`LogMarks`], two counters the persistence
//! thread keeps.

use std::sync::atomic::{AtomicU64, Ordering, fence};
use std::time::{Duration, Instant};

use crate::Error;
use crate::engine::source::Events;
use crate::stats::DropReason;

use super::Action;
use super::batch::Held;
use super::warn;

/// How far the log has got, as the persistence thread publishes it.
#[derive(Debug, Default)]
pub(crate) struct LogMarks {
    /// The highest committed sequence number; stored before the records enter the ring.
    pub durable_through: AtomicU64,
    /// Every record up to here is in the ring for the durable endpoints routed when it was
    /// committed (or was for none): an endpoint that has read the ring to its head and holds
    /// nothing has finished everything up to here, even if none of it was its.
    pub published_through: AtomicU64,
}

impl LogMarks {
    /// Marks at `through` (what a store held when it was opened).
    pub fn at(through: u64) -> LogMarks {
        LogMarks {
            durable_through: AtomicU64::new(through),
            published_through: AtomicU64::new(through),
        }
    }
}

/// What the log reader found for one [`Action::ReadLog`](super::Action::ReadLog).
#[derive(Debug)]
pub(crate) struct LogRead {
    /// The records for the endpoint, in order, decoded; or, for a record that could not be
    /// decoded, its sequence number and why.
    pub records: Vec<Result<Held, (u64, Error)>>,
    /// The sequence number to read from next: one past the last record looked at (records
    /// of other endpoints included).
    pub next: u64,
    /// Reading stopped at this error (what came before it is in `records`).
    pub error: Option<Error>,
}

/// A durable endpoint's position in the log.
#[derive(Debug)]
pub(crate) struct LogLink {
    /// The log's progress.
    pub marks: std::sync::Arc<LogMarks>,
    /// Its slot's bit in record masks.
    pub slot_bit: u64,
    /// Records below this were accepted by an earlier run (or while the endpoint was away):
    /// they are counted when taken; the rest were counted when committed.
    pub counted_from: u64,
    /// The next sequence number it has not taken.
    pub next_seq: u64,
    /// Reading the log rather than the ring.
    pub disk: bool,
    /// A read was asked for and has not been answered.
    pub reading: bool,
    /// When a failed read may be tried again.
    pub retry_read: Option<Instant>,
}

impl LogLink {
    /// A link for the endpoint in `slot`, resuming at `acked`. It starts by reading the log
    /// (from `acked` to what is committed), then joins the ring.
    pub fn new(marks: std::sync::Arc<LogMarks>, slot: u8, acked: u64, counted_from: u64) -> Self {
        LogLink {
            marks,
            slot_bit: 1 << slot,
            counted_from,
            next_seq: acked,
            disk: true,
            reading: false,
            retry_read: None,
        }
    }
}

impl super::Endpoint {
    /// A durable endpoint reading the log (after a restart, or once it lagged half a ring):
    /// moves its ring cursor to the head (everything there is committed, so the log has it),
    /// then asks for its records, up to `capacity` held, one read at a time. Once it has read
    /// everything committed, it goes back to the ring, passing over the entries it already
    /// read. Returns whether it asked for a read.
    pub(super) fn read_log<S: Events>(&mut self, src: &mut S, now: Instant) -> bool {
        let Some(d) = &mut self.log else {
            return false;
        };
        src.set_min_seq(d.next_seq);
        if !d.disk {
            return false;
        }
        // Routed first (see `Shared::routed`), then the ring, then the commit point: whatever
        // was skipped in the ring is at or below it. The ring is skipped even while a read is
        // out or a failed one waits to be retried, so this endpoint never holds producers back.
        let routed = self.shared.routed.load(Ordering::Acquire);
        src.skip_all();
        fence(Ordering::SeqCst);
        let through = d.marks.durable_through.load(Ordering::Acquire);
        if d.reading || d.retry_read.is_some_and(|t| now < t) {
            return false;
        }
        d.retry_read = None;
        if d.next_seq > through {
            if routed {
                d.disk = false;
                self.shared.disk.store(false, Ordering::Release);
            }
            return false;
        }
        let room = self.p.capacity.saturating_sub(self.backlog.len());
        if room == 0 {
            return false;
        }
        d.reading = true;
        self.actions.push_back(Action::ReadLog {
            from: d.next_seq,
            through,
            mask: d.slot_bit,
            max: room,
        });
        true
    }

    /// Records read from the log (the answer to [`Action::ReadLog`]).
    pub fn handle_log(&mut self, read: LogRead, now: Instant) {
        let Some(d) = &mut self.log else {
            return;
        };
        d.reading = false;
        let (mut old, mut bad, mut last) = (0u64, 0u64, None);
        for r in read.records {
            let seq = match &r {
                Ok(h) => h.seq,
                Err((seq, _)) => *seq,
            };
            last = Some(seq);
            if seq < d.counted_from {
                old += 1;
            }
            match r {
                Ok(h) => self.backlog.push_back(h),
                Err((seq, e)) => {
                    bad += 1;
                    if let Some(held) = self.warn_log.check(now) {
                        log::error!(
                            "{}: record {seq} cannot be decoded, dropped: {e}{}",
                            self.shared.name,
                            warn::more(held)
                        );
                    }
                }
            }
        }
        self.shared.taken.add(old);
        self.shared.dropped.add(DropReason::SinkError, bad);
        match read.error {
            None => d.next_seq = d.next_seq.max(read.next),
            Some(e) => {
                // What was handed over before the failure is held: go on after it.
                if let Some(seq) = last {
                    d.next_seq = d.next_seq.max(seq + 1);
                }
                if let Some(held) = self.warn_log.check(now) {
                    log::error!(
                        "{}: reading the log at {} failed (retried every second): {e}{}",
                        self.shared.name,
                        d.next_seq,
                        warn::more(held)
                    );
                }
                d.retry_read = now.checked_add(Duration::from_secs(1));
            }
        }
        self.gauges();
    }

    /// A durable endpoint that holds nothing and has read the ring to its head has finished
    /// every record the persistence thread has put in the ring, its own or not: its cursor
    /// moves past them, so an endpoint that filters everything out does not pin the log.
    pub(super) fn pass_foreign<S: Events>(&mut self, src: &mut S) {
        if self.holds_events() {
            return;
        }
        let Some(d) = &mut self.log else {
            return;
        };
        // The mark first: every record up to it is in the ring before it is stored.
        let mark = d.marks.published_through.load(Ordering::Acquire);
        src.skip_foreign();
        if !src.has_entry() && mark >= d.next_seq {
            d.next_seq = mark + 1;
            src.set_min_seq(d.next_seq);
        }
    }
}
