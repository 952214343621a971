//! A sink that hands events to another thread through a `crossbeam_channel`.
//!
//! [`Channel`] is go-events' `Channel`: `write` sends into a bounded channel (capacity 0 is a
//! rendezvous) and **blocks** until the receiver has room, the receiver is gone, or the channel
//! is closed. It keeps the order of each writer. It never drops: an event is either in the
//! channel (the receiver's from then on) or refused with an error. `close` wakes every blocked
//! writer (they get [`Error::Closed`]), refuses later writes, and lets the receiver drain what
//! was sent before it sees the channel disconnected.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

use crate::Error;
use crate::sink::Sink;

/// A [`Sink`] that sends each event on a bounded channel.
///
/// Contract: `write` blocks until the event is in the channel (`Ok`), the receiver has been
/// dropped ([`Error::Closed`]) or `close` is called ([`Error::Closed`]). Nothing is dropped or
/// counted here; an event the receiver never reads is the receiver owner's to account for.
/// After `close`, the receiver gets every event sent before it, then a disconnection; a second
/// `close` returns `Error::Closed`.
///
/// ```
/// use hookwire::sink::{Channel, Sink};
/// let (ch, rx) = Channel::new(4);
/// ch.write("a").unwrap();
/// ch.close().unwrap();
/// assert_eq!(rx.recv().unwrap(), "a");
/// assert!(rx.recv().is_err()); // drained, then disconnected
/// ```
pub struct Channel<E> {
    /// `None` once closed. Writers clone the sender out of the lock so they never block while
    /// holding it; the receiver sees the disconnection once the last clone is gone.
    tx: Mutex<Option<Sender<E>>>,
    /// Dropped by `close`, which disconnects `done_rx` and wakes every writer in `select!`.
    done_tx: Mutex<Option<Sender<()>>>,
    done_rx: Receiver<()>,
    closed: AtomicBool,
    capacity: usize,
}

impl<E> Channel<E> {
    /// A channel holding up to `capacity` events (0: each `write` waits for a `recv`), and the
    /// receiving end.
    pub fn new(capacity: usize) -> (Self, Receiver<E>) {
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        let (done_tx, done_rx) = crossbeam_channel::bounded(0);
        let ch = Channel {
            tx: Mutex::new(Some(tx)),
            done_tx: Mutex::new(Some(done_tx)),
            done_rx,
            closed: AtomicBool::new(false),
            capacity,
        };
        (ch, rx)
    }

    /// How many events the channel holds before `write` blocks.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Whether `close` has been called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// A receiver that never yields a value and becomes disconnected when the channel is
    /// closed, to `select!` on beside the event receiver (go-events' `Done()`).
    pub fn done(&self) -> Receiver<()> {
        self.done_rx.clone()
    }
}

impl<E> fmt::Debug for Channel<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("capacity", &self.capacity)
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

impl<E: Send> Sink<E> for Channel<E> {
    fn write(&self, event: E) -> Result<(), Error> {
        let Some(tx) = self.tx.lock().clone() else {
            return Err(Error::Closed);
        };
        crossbeam_channel::select! {
            send(tx, event) -> sent => sent.map_err(|_| Error::Closed),
            recv(self.done_rx) -> _ => Err(Error::Closed),
        }
    }

    fn close(&self) -> Result<(), Error> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Err(Error::Closed);
        }
        // Refuse new writers first, then wake the blocked ones.
        drop(self.tx.lock().take());
        drop(self.done_tx.lock().take());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    const SAFETY_NET: Duration = Duration::from_secs(10);

    // go-events' TestChannel: many writers on a rendezvous channel, all received, then close
    // and every later write is refused.
    #[test]
    fn rendezvous_delivers_every_write_then_refuses() {
        let (ch, rx) = Channel::<u32>::new(0);
        let ch = Arc::new(ch);
        let writers: Vec<_> = (0..100)
            .map(|i| {
                let ch = ch.clone();
                std::thread::spawn(move || ch.write(i))
            })
            .collect();
        let mut got: Vec<u32> = (0..100)
            .map(|_| rx.recv_timeout(SAFETY_NET).unwrap())
            .collect();
        for w in writers {
            w.join().unwrap().unwrap();
        }
        got.sort_unstable();
        assert_eq!(got, (0..100).collect::<Vec<_>>());

        ch.close().unwrap();
        assert!(ch.is_closed());
        for i in 0..10 {
            assert!(matches!(ch.write(i), Err(Error::Closed)));
        }
        assert!(matches!(ch.close(), Err(Error::Closed)));
        assert!(rx.recv_timeout(SAFETY_NET).is_err(), "disconnected");
        assert!(
            ch.done().recv_timeout(SAFETY_NET).is_err(),
            "done is closed"
        );
    }

    #[test]
    fn close_unblocks_a_blocked_writer() {
        let (ch, rx) = Channel::<u32>::new(1);
        let ch = Arc::new(ch);
        ch.write(1).unwrap(); // fills it
        let (started_tx, started_rx) = crossbeam_channel::bounded(0);
        let w = {
            let ch = ch.clone();
            std::thread::spawn(move || {
                started_tx.send(()).unwrap();
                ch.write(2)
            })
        };
        started_rx.recv_timeout(SAFETY_NET).unwrap();
        // The writer may not be parked yet; either way it must end with Closed.
        ch.close().unwrap();
        assert!(matches!(w.join().unwrap(), Err(Error::Closed)));
        // What was sent before close is still there, then the channel is disconnected.
        assert_eq!(rx.recv_timeout(SAFETY_NET).unwrap(), 1);
        assert!(rx.recv_timeout(SAFETY_NET).is_err());
    }

    #[test]
    fn writer_blocks_until_room() {
        let (ch, rx) = Channel::<u32>::new(1);
        let ch = Arc::new(ch);
        ch.write(1).unwrap();
        let (done_tx, done_rx) = crossbeam_channel::bounded(1);
        let w = {
            let ch = ch.clone();
            std::thread::spawn(move || done_tx.send(ch.write(2)).unwrap())
        };
        // Still blocked: the channel is full and nobody reads.
        assert!(done_rx.recv_timeout(Duration::from_millis(50)).is_err());
        assert_eq!(rx.recv().unwrap(), 1);
        done_rx.recv_timeout(SAFETY_NET).unwrap().unwrap();
        assert_eq!(rx.recv_timeout(SAFETY_NET).unwrap(), 2);
        w.join().unwrap();
    }

    #[test]
    fn dropped_receiver_means_closed() {
        let (ch, rx) = Channel::<u32>::new(0);
        drop(rx);
        assert!(matches!(ch.write(1), Err(Error::Closed)));
        let (ch, rx) = Channel::<u32>::new(3);
        ch.write(1).unwrap();
        drop(rx);
        assert!(matches!(ch.write(2), Err(Error::Closed)));
        assert_eq!(ch.capacity(), 3);
    }
}
