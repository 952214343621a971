//! Where an endpoint's events come from: what the ring holds ([`Published`]), the endpoint's
//! cursor on it ([`Source`]), and the interface the endpoint state machine reads through
//! ([`Events`]), so that the simulator can feed it from a plain queue instead.

use std::time::{Duration, Instant};

use crate::RawEvent;

use super::ring::Consumer;

/// What the ring holds: the event (shared bytes), when it was published, and the routing
/// table's version it was routed with.
#[derive(Debug)]
pub(crate) struct Published {
    /// The event.
    pub event: RawEvent,
    /// When `publish` took it (for the delivery-lag histogram).
    pub at: Instant,
    /// The routing table's version at publish time.
    pub version: u64,
    /// Its sequence number in the durable log (0: a memory-only event).
    pub seq: u64,
}

/// An endpoint's view of its incoming events, in publish order. An event stays until taken.
pub(crate) trait Events {
    /// Hands the endpoint's events to `f`, in order, in place, until `f` returns false (that
    /// event stays), `max` were taken, or there is nothing more. Returns how many `f` took.
    fn take(&mut self, max: usize, f: impl FnMut(&Published) -> bool) -> usize;

    /// How far the cursor is behind (an upper bound on the events waiting for the endpoint).
    fn lag(&self) -> u64;

    /// The cursor's position: how many entries it has passed (taken or not its own).
    fn position(&self) -> u64;

    /// The lag past which the endpoint copies its oldest events out (or, durable, reads the
    /// log instead), so that it never holds producers back: half the ring.
    fn relieve_above(&self) -> u64;

    /// Passes everything published without taking it (a durable endpoint reading the log:
    /// what the ring holds for it is committed, so the log has it too).
    fn skip_all(&mut self);

    /// Passes the entries at the cursor that are not this endpoint's.
    fn skip_foreign(&mut self);

    /// Whether an entry (maybe not this endpoint's) waits at the cursor.
    fn has_entry(&self) -> bool;

    /// Durable endpoints: entries with a lower sequence number were taken from the log
    /// already, and are passed over.
    fn set_min_seq(&mut self, seq: u64);
}

/// An endpoint's cursor on the ring.
pub(crate) struct Source {
    consumer: Consumer<Published>,
    bit: u64,
    since: u64,
    min_seq: u64,
}

impl Source {
    /// The cursor `consumer`, for the endpoint with mask bit `bit`, which takes entries routed
    /// with table version `since` or later.
    pub fn new(consumer: Consumer<Published>, bit: u32, since: u64) -> Source {
        Source {
            consumer,
            bit: 1 << bit,
            since,
            min_seq: 0,
        }
    }

    /// The endpoint's mask bit.
    pub fn bit(&self) -> u64 {
        self.bit
    }

    /// Takes everything up to position `end` without looking at it, returning how many were
    /// this endpoint's (shutdown, removal). A producer that claimed a slot before `end`
    /// publishes it within moments; it is waited for, up to a second.
    pub fn discard(&mut self, end: u64) -> u64 {
        let started = Instant::now();
        let mut n = 0;
        loop {
            n += self.take(usize::MAX, |_| true) as u64;
            if self.consumer.position() >= end || started.elapsed() > Duration::from_secs(1) {
                return n;
            }
            std::thread::yield_now();
        }
    }

    /// Whether a ring entry is for this endpoint.
    #[inline]
    fn mine(&self, mask: u64, p: &Published) -> bool {
        mask & self.bit != 0 && p.version >= self.since && p.seq >= self.min_seq
    }
}

impl Events for Source {
    fn take(&mut self, max: usize, mut f: impl FnMut(&Published) -> bool) -> usize {
        let mut pos = self.consumer.position();
        let mut taken = 0;
        while taken < max {
            let Some(entry) = self.consumer.get(pos) else {
                break;
            };
            #[allow(clippy::needless_borrow)] // loom's read guard needs the borrow
            let value: &Published = &entry.value;
            if self.mine(entry.mask, value) {
                // `&*` turns loom's read guard into a plain reference (a no-op without loom).
                #[allow(clippy::borrow_deref_ref)]
                if !f(&*entry.value) {
                    break;
                }
                taken += 1;
            }
            pos += 1;
        }
        self.consumer.advance(pos);
        taken
    }

    fn lag(&self) -> u64 {
        self.consumer.lag()
    }

    fn position(&self) -> u64 {
        self.consumer.position()
    }

    fn relieve_above(&self) -> u64 {
        self.consumer.ring().capacity() as u64 / 2
    }

    fn skip_all(&mut self) {
        let mut pos = self.consumer.position();
        while self.consumer.get(pos).is_some() {
            pos += 1;
        }
        self.consumer.advance(pos);
    }

    fn skip_foreign(&mut self) {
        let mut pos = self.consumer.position();
        while let Some(entry) = self.consumer.get(pos) {
            #[allow(clippy::needless_borrow)] // loom's read guard needs the borrow
            let value: &Published = &entry.value;
            if self.mine(entry.mask, value) {
                break;
            }
            pos += 1;
        }
        self.consumer.advance(pos);
    }

    fn has_entry(&self) -> bool {
        self.consumer.get(self.consumer.position()).is_some()
    }

    fn set_min_seq(&mut self, seq: u64) {
        self.min_seq = seq;
    }
}
