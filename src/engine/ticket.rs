//! Tickets: how a producer learns that its event is in the durable log.
//!
//! The persistence thread completes a [`TicketCell`] after the group commit that made its
//! event durable (or fails it); a [`Ticket`] waits on the commit generation's condition
//! variable, so many tickets wait on one commit without a thread each.
//!
//! A program that must not block on a ticket (an event loop, such as `hookwire serve`'s
//! HTTP server) registers a callback with [`Ticket::on_complete`] instead: the persistence
//! thread runs it once the outcome is known, and the callback wakes the loop (a
//! `mio::Waker`), which then reads the outcome with [`Ticket::try_get`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::Error;

use super::persist::Durable;

const WAITING: u64 = 0;
const FAILED: u64 = u64::MAX;

/// A callback run once a ticket's outcome is known; see [`Ticket::on_complete`].
pub type OnComplete = Arc<dyn Fn() + Send + Sync>;

/// Where a ticket's outcome lands.
#[derive(Default)]
pub(crate) struct TicketCell {
    /// `WAITING`, `FAILED`, or the event's sequence number.
    state: AtomicU64,
    error: OnceLock<Error>,
    /// Run once when the outcome is known (registered by the ticket's holder).
    notify: OnceLock<OnComplete>,
    /// Whether `notify` ran (so it runs once, whichever side sees the other first).
    notified: AtomicBool,
}

impl std::fmt::Debug for TicketCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TicketCell")
            .field("state", &self.state)
            .field("error", &self.error)
            .field("notify", &self.notify.get().is_some())
            .finish()
    }
}

impl TicketCell {
    pub(super) fn succeed(&self, seq: u64) {
        self.state.store(seq, Ordering::Release);
        self.fire();
    }

    pub(super) fn fail(&self, e: Error) {
        let _ = self.error.set(e);
        self.state.store(FAILED, Ordering::Release);
        self.fire();
    }

    /// Runs the callback if one is registered and it has not run. The SeqCst fence pairs with
    /// the one in `register` (Dekker): either this side sees the callback, or `register` sees
    /// the outcome, or both (then `notified` lets only one of them run it).
    fn fire(&self) {
        fence(Ordering::SeqCst);
        if let Some(f) = self.notify.get()
            && !self.notified.swap(true, Ordering::AcqRel)
        {
            f();
        }
    }

    /// Registers `f` (the first registration wins) and runs it at once if the outcome is
    /// already known.
    fn register(&self, f: OnComplete) {
        let _ = self.notify.set(f);
        fence(Ordering::SeqCst);
        if self.state.load(Ordering::Acquire) != WAITING {
            self.fire();
        }
    }

    fn get(&self) -> Option<Result<u64, Error>> {
        match self.state.load(Ordering::Acquire) {
            WAITING => None,
            FAILED => Some(Err(self.error.get().cloned().unwrap_or(Error::Closed))),
            seq => Some(Ok(seq)),
        }
    }
}

/// A claim on a published event's durability, from
/// [`Dispatcher::publish_with_ticket`](super::Dispatcher::publish_with_ticket).
///
/// Its outcome is `Ok(Some(seq))` once the event is in the durable log (it survives a crash
/// from then on), `Ok(None)` when no durable endpoint wanted the event (nothing to persist),
/// or an error ([`Error::Quota`], [`Error::Storage`], [`Error::Closed`]) if it was not
/// persisted. Tickets are cheap to hold; many can wait on one group commit.
#[derive(Debug)]
#[must_use = "a ticket says whether the event became durable: wait on it or drop it knowingly"]
pub struct Ticket {
    pub(crate) cell: Option<Arc<TicketCell>>,
    pub(crate) durable: Option<Arc<Durable>>,
}

impl Ticket {
    /// The outcome, if there is one yet (never blocks).
    pub fn try_get(&self) -> Option<Result<Option<u64>, Error>> {
        match &self.cell {
            None => Some(Ok(None)),
            Some(c) => c.get().map(|r| r.map(Some)),
        }
    }

    /// Runs `f` once, as soon as the outcome is known: on the persistence thread right after
    /// the group commit (or failure) that decided it, or at once on this thread if it is
    /// already known. `f` must be quick and must not block (it holds up the commit's other
    /// tickets): wake a loop and read [`try_get`](Self::try_get) there. Only the first
    /// callback registered on a ticket is kept.
    pub fn on_complete(&self, f: OnComplete) {
        match &self.cell {
            None => f(),
            Some(c) => c.register(f),
        }
    }

    /// Waits up to `timeout` for the outcome; [`Error::Timeout`] if it did not come.
    pub fn wait(&self, timeout: Duration) -> Result<Option<u64>, Error> {
        let (Some(cell), Some(d)) = (&self.cell, &self.durable) else {
            return Ok(None);
        };
        let deadline = Instant::now().checked_add(timeout);
        loop {
            if let Some(r) = cell.get() {
                return r.map(Some);
            }
            let mut generation = d.commits.lock();
            if let Some(r) = cell.get() {
                return r.map(Some);
            }
            match deadline {
                None => d.committed.wait(&mut generation),
                Some(t) => {
                    if d.committed.wait_until(&mut generation, t).timed_out() {
                        drop(generation);
                        return cell.get().map_or(
                            Err(Error::Timeout {
                                waiting_for: "the durable commit",
                                after: timeout,
                            }),
                            |r| r.map(Some),
                        );
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter() -> (Arc<AtomicU64>, OnComplete) {
        let n = Arc::new(AtomicU64::new(0));
        let m = n.clone();
        (
            n,
            Arc::new(move || {
                m.fetch_add(1, Ordering::SeqCst);
            }),
        )
    }

    fn ticket(cell: &Arc<TicketCell>) -> Ticket {
        Ticket {
            cell: Some(cell.clone()),
            durable: None,
        }
    }

    #[test]
    fn on_complete_runs_once_after_the_outcome() {
        let cell = Arc::new(TicketCell::default());
        let t = ticket(&cell);
        let (n, f) = counter();
        t.on_complete(f);
        assert_eq!(n.load(Ordering::SeqCst), 0, "not before the commit");
        assert!(t.try_get().is_none());
        cell.succeed(7);
        assert_eq!(n.load(Ordering::SeqCst), 1);
        assert!(matches!(t.try_get(), Some(Ok(Some(7)))));
        cell.succeed(7); // a second completion does not run it again
        assert_eq!(n.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn on_complete_runs_at_once_when_already_decided_or_not_durable() {
        let cell = Arc::new(TicketCell::default());
        cell.fail(Error::Closed);
        let (n, f) = counter();
        ticket(&cell).on_complete(f);
        assert_eq!(n.load(Ordering::SeqCst), 1);
        let (n, f) = counter();
        Ticket {
            cell: None,
            durable: None,
        }
        .on_complete(f);
        assert_eq!(n.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn on_complete_is_never_lost_in_a_race() {
        for _ in 0..200 {
            let cell = Arc::new(TicketCell::default());
            let (n, f) = counter();
            let c = cell.clone();
            let committer = std::thread::spawn(move || c.succeed(1));
            ticket(&cell).on_complete(f);
            committer.join().unwrap();
            assert_eq!(n.load(Ordering::SeqCst), 1);
        }
    }
}
