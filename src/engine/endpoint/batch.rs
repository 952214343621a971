//! One request's worth of events, as the envelope that carries them.
//!
//! The envelope (`{"events":[...]}`) is written as events are added, straight from their
//! bytes, so a healthy endpoint copies each event once, into its request body. A batch keeps
//! the events themselves (one `Arc` clone each) only when someone may need them back: a
//! durable endpoint (dead letters name the log record) or an endpoint with a dead-letter hook.

use std::time::Instant;

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
pub(crate) const TAIL: &[u8] = b"]}";

/// One request's worth of events.
#[derive(Debug)]
pub(crate) struct Batch {
    /// The envelope, closed by [`seal`](Batch::seal).
    pub body: Vec<u8>,
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
}

impl Batch {
    /// An empty batch; `keep`: keep the events themselves.
    pub fn new(keep: bool) -> Batch {
        Batch {
            body: HEAD.to_vec(),
            first_id: String::new(),
            msg_id: String::new(),
            ats: Vec::new(),
            seqs: Vec::new(),
            events: Vec::new(),
            attempt: None,
            stale_retried: false,
            overflowed: false,
            keep,
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

    /// Whether an event of `n` bytes still fits under `max_bytes` (an empty batch takes
    /// anything: an oversized event goes alone).
    pub fn fits(&self, n: usize, max_bytes: usize) -> bool {
        self.ats.is_empty() || self.body.len() + n + 1 + TAIL.len() <= max_bytes
    }

    /// Adds an event; `seq` is its place in the log (durable endpoints; 0 otherwise).
    pub fn push(&mut self, event: &RawEvent, at: Instant, seq: u64) {
        if self.ats.is_empty() {
            self.first_id = event.id().into_owned();
        } else {
            self.body.push(b',');
        }
        self.body.extend_from_slice(event.json().as_bytes());
        self.ats.push(at);
        if seq != 0 {
            self.seqs.push(seq);
        }
        if self.keep {
            self.events.push(event.clone());
        }
    }

    /// Closes the envelope and names the message (`webhook-id`): the event's id, or
    /// `{first}+{n}` for a batch, stable across retries.
    pub fn seal(&mut self) {
        self.body.extend_from_slice(TAIL);
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

    #[test]
    fn an_envelope_with_a_stable_message_id() {
        let now = Instant::now();
        let mut one = Batch::new(false);
        one.push(&ev("a"), now, 0);
        one.seal();
        assert_eq!(one.body, br#"{"events":[{"id":"a"}]}"#);
        assert_eq!(one.msg_id, "a");
        assert!(one.events.is_empty(), "not kept unless asked");

        let mut two = Batch::new(true);
        two.push(&ev("a"), now, 7);
        two.push(&ev("b"), now, 8);
        two.seal();
        assert_eq!(two.body, br#"{"events":[{"id":"a"},{"id":"b"}]}"#);
        assert_eq!(two.msg_id, "a+2");
        assert_eq!((two.seqs.as_slice(), two.events.len()), (&[7, 8][..], 2));
    }

    #[test]
    fn an_oversized_event_goes_alone() {
        let b = Batch::new(false);
        assert!(b.fits(10_000, 1024), "an empty batch takes anything");
        let mut b = Batch::new(false);
        b.push(&ev("a"), Instant::now(), 0);
        assert!(!b.fits(10_000, 1024));
        assert!(b.fits(10, 1024));
    }
}
