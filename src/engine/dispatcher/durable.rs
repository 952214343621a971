//! The durable store's side of the API: what recovery found, dead letters and their replay.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::Error;
use crate::store::{DeadLetter, DeadLetterFilter, EndpointState, Recovery};

use super::Dispatcher;
use crate::engine::persist::Durable;
use crate::engine::ticket::Ticket;

impl Dispatcher {
    /// What opening the durable store found and repaired (`None` without a store).
    pub fn recovery(&self) -> Option<Recovery> {
        self.inner.durable.as_ref().map(|d| d.recovery.clone())
    }

    /// Every durable endpoint the store knows (added now or not), by name, with its slot and
    /// cursor: each holds one of the store's 64 slots until it is forgotten
    /// ([`crate::store::forget_endpoint`]). Fails with [`Error::Config`] without a store.
    pub fn durable_endpoints(&self) -> Result<Vec<(String, EndpointState)>, Error> {
        Ok(self.store()?.store()?.endpoints())
    }

    /// The dead letters of durable endpoints that `filter` selects, oldest first.
    pub fn dead_letters(&self, filter: &DeadLetterFilter) -> Result<Vec<DeadLetter>, Error> {
        self.store()?.letters.list(filter)
    }

    /// Hands `f` the dead letters of durable endpoints that `filter` selects, oldest first,
    /// one at a time (memory for one, however many there are); stops at `f`'s first error.
    /// Returns how many unreadable lines were skipped.
    pub fn scan_dead_letters(
        &self,
        filter: &DeadLetterFilter,
        f: &mut dyn FnMut(DeadLetter) -> Result<(), Error>,
    ) -> Result<u64, Error> {
        self.store()?.letters.scan(filter, f)
    }

    /// Re-queues the dead letters `filter` selects: each event is published again to its
    /// endpoint only (a new sequence number; the same event, so the same `webhook-id`),
    /// and removed from the dead letters once it is committed, a chunk at a time (memory for
    /// one chunk). A crash in between replays it twice, never loses it. Dead letters of
    /// endpoints the store does not know are left. Returns how many were re-queued.
    pub fn replay_dead_letters(&self, filter: &DeadLetterFilter) -> Result<u64, Error> {
        let d = self.store()?;
        // Before the slots are read: a slot forgotten and given to another endpoint after
        // this does not receive these letters (see `Durable::floors`).
        let version = self.inner.routes.load().version;
        let slots: std::collections::HashMap<String, u8> = d
            .store()?
            .endpoints()
            .into_iter()
            .map(|(name, st)| (name, st.slot))
            .collect();
        // Read and removed through the dead-letter handle, never under the store's lock.
        d.letters.take_each(
            &|l| filter.matches(l) && slots.contains_key(&l.endpoint),
            &mut |letters| {
                let mut tickets = Vec::with_capacity(letters.len());
                for l in letters {
                    let slot = slots.get(&l.endpoint).copied().unwrap_or(0);
                    let cell = d.submit(
                        l.event,
                        1 << slot,
                        version,
                        Instant::now(),
                        true,
                        self.inner.publish_timeout,
                    )?;
                    tickets.push(Ticket {
                        cell,
                        durable: Some(d.clone()),
                    });
                }
                for t in &tickets {
                    t.wait(self.inner.publish_timeout.max(Duration::from_secs(30)))?;
                }
                Ok(())
            },
        )
    }

    /// The leases of a shared store's endpoints, for the lease manager (`None` unless built
    /// with [`DispatcherBuilder::leases`](crate::engine::DispatcherBuilder::leases)).
    pub fn lease_board(&self) -> Option<Arc<crate::engine::LeaseBoard>> {
        self.inner.durable.as_ref()?.board.clone()
    }

    pub(super) fn store(&self) -> Result<&Arc<Durable>, Error> {
        self.inner.durable.as_ref().ok_or_else(|| {
            Error::config(
                "store",
                "this dispatcher has no store (DispatcherBuilder::data_dir)",
            )
        })
    }
}
