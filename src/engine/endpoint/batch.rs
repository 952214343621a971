//! One request's worth of events, as the envelope that carries them.
//!
//! The envelope (`{"events":[...]}`) is written as events are added, straight from their
//! bytes, so a healthy endpoint copies each event once, into its request body; sealing turns
//! it into a shared [`Body`] that every attempt sends as it is (no copy per attempt). The
//! buffer is sized when the first event arrives, for as many events like it as the batch may
//! take (within `max_bytes`, and at most [`RESERVE_MAX`] unless that first event alone is
//! larger), so filling does not reallocate as it grows. A batch keeps the events themselves (one `Arc` clone each) only when someone
//! may need them back: a durable endpoint (dead letters name the log record) or an endpoint
//! with a dead-letter hook.

use std::time::Instant;

use crate::config::BatchConfig;
use crate::http::Body;
use crate::policy::Attempt;
use crate::{Event, RawEvent};

/// An event copied out of the ring, or read from the log, waiting in the backlog.
#[derive(Debug, Clone)]
pub(crate) struct Held {
    /// The event.
    pub event: RawEvent,
    /// When it was published.
    pub at: Instant,
    /// Its sequence number in the durable log (0: a memory-only event).
    pub seq: u64,
}

const HEAD: &[u8] = br#"{"events":["#;
/// The envelope's closing bytes.
const TAIL: &[u8] = b"]}";
/// The most a batch reserves up front for its envelope; past it the buffer grows by
/// doubling, which costs at most one more copy of what it holds.
const RESERVE_MAX: usize = 1 << 20;

/// One request's worth of events.
#[derive(Debug)]
pub(crate) struct Batch {
    /// The envelope while it is filled (empty until the first event); moved into `body` by
    /// [`seal`](Batch::seal).
    envelope: Vec<u8>,
    /// The closed envelope, shared with every attempt; set by [`seal`](Batch::seal).
    pub body: Body,
    first_id: String,
    /// The `webhook-id`: the event's id, or `{first}+{n}`; set by `seal`.
    pub msg_id: String,
    /// When each event was published (for the lag histogram).
    pub ats: Vec<Instant>,
    /// Each event's sequence number (durable endpoints).
    pub seqs: Vec<u64>,
    /// The events, when they are kept (see the module docs).
    pub events: Vec<RawEvent>,
    /// The attempt last made (None before the first).
    pub attempt: Option<Attempt>,
    /// Whether it was already resent once after a stale keep-alive connection failed.
    pub stale_retried: bool,
    /// The next event did not fit: send it now, whatever the linger says.
    pub overflowed: bool,
    keep: bool,
    limits: BatchConfig,
}

impl Batch {
    /// An empty batch that takes up to `limits` (`max_events`, `max_bytes`); `keep`: keep the
    /// events themselves.
    pub fn new(keep: bool, limits: BatchConfig) -> Batch {
        Batch {
            envelope: Vec::new(),
            body: Body::default(),
            first_id: String::new(),
            msg_id: String::new(),
            ats: Vec::new(),
            seqs: Vec::new(),
            events: Vec::new(),
            attempt: None,
            stale_retried: false,
            overflowed: false,
            keep,
            limits,
        }
    }

    /// How many events it holds.
    pub fn len(&self) -> u64 {
        self.ats.len() as u64
    }

    /// Whether it holds no event.
    pub fn is_empty(&self) -> bool {
        self.ats.is_empty()
    }

    /// Whether it is due by size: full of events, or its envelope at `max_bytes`.
    pub fn is_full(&self) -> bool {
        self.ats.len() >= self.limits.max_events
            || self.envelope.len() + TAIL.len() >= self.limits.max_bytes
    }

    /// Whether an event of `n` bytes still fits under `max_bytes` (an empty batch takes
    /// anything: an oversized event goes alone).
    pub fn fits(&self, n: usize) -> bool {
        self.ats.is_empty() || self.envelope.len() + n + 1 + TAIL.len() <= self.limits.max_bytes
    }

    /// Adds an event; `seq` is its place in the log (durable endpoints; 0 otherwise).
    pub fn push(&mut self, event: &RawEvent, at: Instant, seq: u64) {
        let json = event.json().as_bytes();
        if self.ats.is_empty() {
            self.first_id = event.id().into_owned();
            self.reserve(json.len(), seq != 0);
            self.envelope.extend_from_slice(HEAD);
        } else {
            self.envelope.push(b',');
        }
        self.envelope.extend_from_slice(json);
        self.ats.push(at);
        if seq != 0 {
            self.seqs.push(seq);
        }
        if self.keep {
            self.events.push(event.clone());
        }
    }

    /// Sizes the buffers for as many events of `n` bytes as the limits let in, at least one
    /// (the first event's size stands for the rest: a guess, bounded by `max_bytes` and
    /// [`RESERVE_MAX`]).
    fn reserve(&mut self, n: usize, durable: bool) {
        let each = n + 1;
        let room = self.limits.max_bytes.min(RESERVE_MAX);
        let events = (room.saturating_sub(HEAD.len() + TAIL.len()) / each)
            .min(self.limits.max_events)
            .max(1);
        self.envelope
            .reserve_exact(HEAD.len() + events * each + TAIL.len());
        self.ats.reserve_exact(events);
        if durable {
            self.seqs.reserve_exact(events);
        }
        if self.keep {
            self.events.reserve_exact(events);
        }
    }

    /// Closes the envelope, makes it the shared [`body`](Batch::body), and names the message
    /// (`webhook-id`): the event's id, or `{first}+{n}` for a batch, stable across retries.
    pub fn seal(&mut self) {
        if self.envelope.is_empty() {
            self.envelope.extend_from_slice(HEAD);
        }
        self.envelope.extend_from_slice(TAIL);
        self.body = Body::from(std::mem::take(&mut self.envelope));
        self.msg_id = if self.ats.len() == 1 {
            std::mem::take(&mut self.first_id)
        } else {
            format!("{}+{}", self.first_id, self.ats.len())
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: &str) -> RawEvent {
        RawEvent::parse(format!(r#"{{"id":"{id}"}}"#)).unwrap()
    }

    fn limits(max_events: usize, max_bytes: usize) -> BatchConfig {
        BatchConfig {
            max_events,
            max_bytes,
            ..BatchConfig::default()
        }
    }

    #[test]
    fn an_envelope_with_a_stable_message_id() {
        let now = Instant::now();
        let mut one = Batch::new(false, limits(1, 1 << 20));
        one.push(&ev("a"), now, 0);
        one.seal();
        assert_eq!(one.body, *br#"{"events":[{"id":"a"}]}"#);
        assert_eq!(one.msg_id, "a");
        assert!(one.events.is_empty(), "not kept unless asked");

        let mut two = Batch::new(true, limits(10, 1 << 20));
        two.push(&ev("a"), now, 7);
        two.push(&ev("b"), now, 8);
        two.seal();
        assert_eq!(two.body, *br#"{"events":[{"id":"a"},{"id":"b"}]}"#);
        assert_eq!(two.msg_id, "a+2");
        assert_eq!((two.seqs.as_slice(), two.events.len()), (&[7, 8][..], 2));
    }

    #[test]
    fn an_oversized_event_goes_alone() {
        let b = Batch::new(false, limits(10, 1024));
        assert!(b.fits(10_000), "an empty batch takes anything");
        let mut b = Batch::new(false, limits(10, 1024));
        b.push(&ev("a"), Instant::now(), 0);
        assert!(!b.fits(10_000));
        assert!(b.fits(10));
        let mut big = Batch::new(false, limits(10, 1024));
        let e = ev(&"x".repeat(5000));
        big.push(&e, Instant::now(), 0);
        assert!(big.is_full(), "past max_bytes alone");
        big.seal();
        assert_eq!(big.body.len(), HEAD.len() + e.json().len() + TAIL.len());
    }

    #[test]
    fn full_by_events_or_by_bytes() {
        let now = Instant::now();
        let mut b = Batch::new(false, limits(2, 1 << 20));
        b.push(&ev("a"), now, 0);
        assert!(!b.is_full());
        b.push(&ev("b"), now, 0);
        assert!(b.is_full(), "max_events");
        // `{"events":[` + `{"id":"a"}` + `]}`: 23 bytes.
        let mut b = Batch::new(false, limits(10, 24));
        b.push(&ev("a"), now, 0);
        assert!(!b.is_full());
        let mut b = Batch::new(false, limits(10, 23));
        b.push(&ev("a"), now, 0);
        assert!(b.is_full(), "max_bytes");
    }

    #[test]
    fn filling_up_to_the_limits_does_not_reallocate() {
        let now = Instant::now();
        for (max_events, max_bytes) in [(100, 1 << 20), (1, 1 << 20), (1000, 4096), (7, 200)] {
            let mut b = Batch::new(true, limits(max_events, max_bytes));
            let mut at = None;
            let mut i = 0;
            loop {
                let e = ev(&format!("{i:03}"));
                if b.is_full() || !b.fits(e.json().len()) {
                    break;
                }
                b.push(&e, now, i + 1);
                let ptrs = (
                    b.envelope.as_ptr(),
                    b.ats.as_ptr(),
                    b.seqs.as_ptr(),
                    b.events.as_ptr(),
                );
                assert_eq!(
                    *at.get_or_insert(ptrs),
                    ptrs,
                    "event {i} of {max_events}/{max_bytes}"
                );
                i += 1;
            }
            let envelope = b.envelope.as_ptr();
            b.seal();
            assert_eq!(
                b.body.as_ptr(),
                envelope,
                "sealing moves the buffer, it does not copy it"
            );
            assert_eq!(b.len(), i);
        }
    }

    #[test]
    fn the_reservation_is_bounded() {
        let mut b = Batch::new(false, limits(10_000, 1 << 30));
        b.push(&ev("a"), Instant::now(), 0);
        assert!(
            b.envelope.capacity() <= RESERVE_MAX,
            "{}",
            b.envelope.capacity()
        );
        assert!(b.ats.capacity() <= RESERVE_MAX / 11, "{}", b.ats.capacity());
    }
}
