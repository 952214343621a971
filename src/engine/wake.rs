//! The wake protocol between producers and a sleeping worker.
//!
//! A worker that runs out of work sleeps in `mio::Poll::poll`; a producer that publishes an
//! event the worker must handle wakes it through the worker's one `mio::Waker`. A busy worker
//! must not be woken per event (a wake-up is a syscall), and a worker going to sleep must never
//! miss an event published meanwhile. The protocol is the classic store-then-check on both sides,
//! ordered by `SeqCst` fences:
//!
//! - **Worker**, before sleeping: [`Wake::prepare_sleep`] (`sleeping = true`, then a `SeqCst`
//!   fence), then it re-checks for work (a consumer's `get(position)`). If there is work it calls
//!   [`Wake::cancel_sleep`] and goes on; otherwise it polls (with its next timer as the timeout)
//!   and then calls [`Wake::woke`].
//! - **Producer**, after publishing: [`Wake::notify`] (a `SeqCst` fence, then a relaxed read of
//!   `sleeping`; only if it is set, `swap(false)`, and the one producer that swapped it wakes).
//!
//! The two fences are ordered one way or the other: either the producer's fence comes first, and
//! the worker's re-check sees the event, or the worker's comes first, and the producer sees
//! `sleeping`. A wake that races a cancelled sleep is harmless: the waker stays signalled and the
//! worker's next poll returns at once. The loom models in `ring.rs`'s tests check both
//! properties: no event is stranded, and a worker that is not sleeping is not woken.

use std::io;

use crossbeam_utils::CachePadded;

use super::ring::sync::{AtomicBool, AtomicU64, Ordering, fence};

/// Something that wakes a worker out of its poll: `mio::Waker`, or a counting stand-in in tests
/// and loom models.
pub(crate) trait Wakes {
    /// Makes the worker's current or next poll return.
    fn wake(&self) -> io::Result<()>;
}

impl Wakes for mio::Waker {
    fn wake(&self) -> io::Result<()> {
        mio::Waker::wake(self)
    }
}

/// One worker's sleep flag, its waker, and a count of the wake-ups producers sent it.
pub(crate) struct Wake<W: Wakes = mio::Waker> {
    /// True from `prepare_sleep` until the worker cancels, wakes, or a producer claims the
    /// wake-up.
    sleeping: CachePadded<AtomicBool>,
    /// Wake-ups sent (producers that swapped `sleeping` from true to false).
    wakes: AtomicU64,
    /// The routing bits of the endpoints that would take an event now, as of the last sleep:
    /// a producer whose event is for none of them does not wake the worker (an endpoint
    /// waiting on a response, say, lets its events wait in the ring).
    wants: AtomicU64,
    /// The worker's waker.
    waker: W,
}

impl<W: Wakes> Wake<W> {
    /// A worker that is awake, with its waker.
    pub fn new(waker: W) -> Self {
        Wake {
            sleeping: CachePadded::new(AtomicBool::new(false)),
            wakes: AtomicU64::new(0),
            wants: AtomicU64::new(u64::MAX),
            waker,
        }
    }

    /// Producer side, after publishing an event the worker must handle: wakes the worker if it
    /// is going to sleep or asleep. Returns whether this call woke it.
    ///
    /// Costs a fence and a shared read when the worker is awake; only one of the producers that
    /// race on a sleeping worker wakes it.
    pub fn notify(&self) -> Result<bool, crate::Error> {
        fence(Ordering::SeqCst);
        if !self.sleeping.load(Ordering::Relaxed) || !self.sleeping.swap(false, Ordering::AcqRel) {
            return Ok(false);
        }
        self.wakes.fetch_add(1, Ordering::Relaxed);
        self.waker.wake()?;
        Ok(true)
    }

    /// Worker side, before sleeping: announces the sleep. The worker must then re-check for work
    /// and call [`cancel_sleep`](Wake::cancel_sleep) if it finds any, or poll and then call
    /// [`woke`](Wake::woke).
    pub fn prepare_sleep(&self) {
        self.sleeping.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
    }

    /// Producer side: [`notify`](Wake::notify), but only if the event (routed to `mask`) is for
    /// an endpoint that wants events. The caller has published and issued a `SeqCst` fence.
    pub fn notify_if_wants(&self, mask: u64) {
        if self.wants.load(Ordering::SeqCst) & mask != 0 {
            self.wake();
        }
    }

    /// [`notify`](Wake::notify), logging a failed wake-up (the worker's poll times out on its
    /// next timer anyway, so nothing is lost, only late).
    pub fn wake(&self) {
        if let Err(e) = self.notify() {
            log::error!("hookwire: waking a worker failed: {e}");
        }
    }

    /// Worker side, before sleeping: which endpoints want events (their routing bits), then
    /// [`prepare_sleep`](Wake::prepare_sleep).
    pub fn prepare_sleep_wanting(&self, wants: u64) {
        self.wants.store(wants, Ordering::SeqCst);
        self.prepare_sleep();
    }

    /// Worker side: the re-check found work, so it will not sleep after all.
    pub fn cancel_sleep(&self) {
        self.sleeping.store(false, Ordering::Relaxed);
    }

    /// Worker side, after its poll returned (woken, timed out, or I/O ready): it is awake.
    pub fn woke(&self) {
        self.sleeping.store(false, Ordering::Relaxed);
    }

    /// Whether the worker has announced a sleep that no producer has claimed yet.
    #[allow(dead_code)] // used by tests
    pub fn is_sleeping(&self) -> bool {
        self.sleeping.load(Ordering::Relaxed)
    }

    /// Wake-ups sent so far; with the number of events, this gives wake-ups per event.
    pub fn wakes(&self) -> u64 {
        self.wakes.load(Ordering::Relaxed)
    }

    /// The waker.
    #[allow(dead_code)] // used by tests
    pub fn waker(&self) -> &W {
        &self.waker
    }
}
