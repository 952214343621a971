//! Tickets: how a producer learns that its event is in the durable log.
//!
//! The persistence thread completes a [`TicketCell`] after the group commit that made its
//! event durable (or fails it); a [`Ticket`] waits on the commit generation's condition
//! variable, so many tickets wait on one commit without a thread each.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::Error;

use super::persist::Durable;

const WAITING: u64 = 0;
const FAILED: u64 = u64::MAX;

/// Where a ticket's outcome lands.
#[derive(Debug, Default)]
pub(crate) struct TicketCell {
    /// `WAITING`, `FAILED`, or the event's sequence number.
    state: AtomicU64,
    error: OnceLock<Error>,
}

impl TicketCell {
    pub(super) fn succeed(&self, seq: u64) {
        self.state.store(seq, Ordering::Release);
    }

    pub(super) fn fail(&self, e: Error) {
        let _ = self.error.set(e);
        self.state.store(FAILED, Ordering::Release);
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
