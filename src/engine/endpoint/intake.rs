//! Taking events: from the source into the open batch (the backlog first), copying the oldest
//! out of the ring when the endpoint lags half a ring (or, durable, reading the log instead),
//! and closing a batch when it is full or its linger is over.

use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::config::Overflow;
use crate::engine::source::Events;
use crate::stats::DropReason;

use super::batch::Batch;
use super::{Endpoint, Held};

impl Endpoint {
    /// Copies the oldest events out of its source once the endpoint lags half a ring, and
    /// applies the overflow policy to that backlog. A durable endpoint reads the log instead.
    pub(super) fn relieve<S: Events>(&mut self, src: &mut S) -> bool {
        let lag = src.lag();
        let above = src.relieve_above();
        if lag <= above {
            return false;
        }
        if let Some(d) = &mut self.log {
            // Spill: the log has everything the ring has; read it from there instead.
            if !d.disk {
                d.disk = true;
                self.shared.disk.store(true, Ordering::Release);
            }
            return false;
        }
        let want = (lag - above / 2) as usize;
        let backlog = &mut self.backlog;
        let n = src.take(want, |p| {
            backlog.push_back(Held {
                event: p.event.clone(),
                at: p.at,
                seq: 0,
            });
            true
        }) as u64;
        self.shared.taken.add(n);
        if self.p.overflow == Overflow::DropOldest {
            let over = self.backlog.len().saturating_sub(self.p.capacity);
            if over > 0 {
                self.backlog.drain(..over);
                self.shared.dropped.add(DropReason::Oldest, over as u64);
            }
        }
        n > 0
    }

    /// Adds events to the open batch: the backlog first (older), then the source.
    pub(super) fn fill<S: Events>(&mut self, src: &mut S) -> bool {
        let max_events = self.p.batch.max_events;
        let batch = self
            .open
            .get_or_insert_with(|| Batch::new(self.keep_events, self.p.batch));
        let before = batch.ats.len();
        while batch.ats.len() < max_events {
            let Some(h) = self.backlog.front() else {
                break;
            };
            if !batch.fits(h.event.json().len()) {
                batch.overflowed = true;
                return batch.ats.len() > before;
            }
            let h = self.backlog.pop_front().expect("checked above");
            batch.push(&h.event, h.at, h.seq);
        }
        let from_backlog = batch.ats.len() - before;
        let room = max_events - batch.ats.len();
        // In the log's read mode, the source is not read.
        let from_source = self.log.as_ref().is_none_or(|d| !d.disk);
        let counted_from = self.log.as_ref().map_or(u64::MAX, |d| d.counted_from);
        let (mut last_seq, mut old) = (0, 0u64);
        let n = if room > 0 && self.backlog.is_empty() && from_source {
            src.take(room, |p| {
                if batch.fits(p.event.json().len()) {
                    batch.push(&p.event, p.at, p.seq);
                    last_seq = p.seq;
                    if p.seq < counted_from {
                        old += 1;
                    }
                    true
                } else {
                    batch.overflowed = true;
                    false
                }
            })
        } else {
            0
        };
        match &mut self.log {
            // Memory endpoints count what they take; durable ones counted their events at
            // commit, except those from before (`counted_from`).
            None => self.shared.taken.add(n as u64),
            Some(d) => {
                self.shared.taken.add(old);
                if n > 0 {
                    d.next_seq = last_seq + 1;
                    src.set_min_seq(d.next_seq);
                }
            }
        }
        from_backlog + n > 0
    }

    /// Moves the open batch to `ready` if it is full or its linger is over. Returns whether a
    /// batch is ready.
    pub(super) fn close_open(&mut self, now: Instant) -> bool {
        let Some(b) = self.open.as_ref() else {
            return false;
        };
        if b.is_empty() {
            return false;
        }
        let cfg = self.p.batch;
        let due = b.is_full()
            || b.overflowed
            || cfg.linger.is_zero()
            || b.ats[0].checked_add(cfg.linger).is_none_or(|t| now >= t);
        if !due {
            return false;
        }
        let mut b = self.open.take().expect("checked above");
        b.seal();
        self.ready.push_back(b);
        true
    }
}
