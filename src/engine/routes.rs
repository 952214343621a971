//! The routing table host threads read on every publish: which endpoints want an event, which
//! worker owns each, and which of them are full.
//!
//! It is copy-on-write behind an `ArcSwap`: adding or removing an endpoint builds a new table,
//! and `publish` reads the current one without a lock. Each table has a `version`; an entry in
//! the ring carries the version it was routed with, and an endpoint ignores entries routed
//! before it was added, so a mask bit freed by a removed endpoint can be given to a new one.

use std::sync::Arc;

use crate::Event;

use super::shared::Shared;

/// distribution's ignore lists, checked on the host thread.
#[derive(Debug, Clone, Default)]
pub(crate) struct Ignore {
    /// Actions not sent.
    pub actions: Box<[String]>,
    /// Target media types not sent.
    pub media_types: Box<[String]>,
    /// If not empty: the repository globs of the only events sent.
    pub repositories: Box<[String]>,
}

impl Ignore {
    /// Whether there is nothing to ignore.
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty() && self.media_types.is_empty() && self.repositories.is_empty()
    }

    /// Whether `event` passes.
    pub fn passes<E: Event + ?Sized>(&self, event: &E) -> bool {
        let hit = |list: &[String], v: Option<&str>| v.is_some_and(|v| list.iter().any(|x| x == v));
        !hit(&self.actions, event.action())
            && !hit(&self.media_types, event.media_type())
            && (self.repositories.is_empty()
                || event.repository().is_some_and(|r| {
                    self.repositories
                        .iter()
                        .any(|g| crate::config::glob::glob_match(g, r))
                }))
    }
}

/// One endpoint as the router sees it.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    /// Its shared half (counters, overflow policy, bit, worker).
    pub shared: Arc<Shared>,
    /// What it does not want.
    pub ignore: Ignore,
}

/// A routing table.
#[derive(Debug)]
pub(crate) struct Routes {
    /// Bumped by every change.
    pub version: u64,
    /// Bits of the endpoints that take every event.
    pub unfiltered: u64,
    /// Endpoints with ignore lists.
    pub filtered: Vec<Route>,
    /// Every endpoint, by bit.
    pub by_bit: Vec<Option<Route>>,
    /// Per worker, the bits of the endpoints it owns.
    pub worker_bits: Vec<u64>,
    /// Bits of the durable endpoints (their events go through the log first).
    pub durable: u64,
    /// For each durable endpoint, its store slot's bit, by ring bit.
    pub slot_of_bit: [u64; 64],
    /// The reverse: each store slot's ring bit (0 when the endpoint is not added).
    pub bit_of_slot: [u64; 64],
}

impl Routes {
    /// An empty table for `workers` workers.
    pub fn empty(workers: usize) -> Self {
        Routes {
            version: 0,
            unfiltered: 0,
            filtered: Vec::new(),
            by_bit: vec![None; 64],
            worker_bits: vec![0; workers],
            durable: 0,
            slot_of_bit: [0; 64],
            bit_of_slot: [0; 64],
        }
    }

    /// A copy of this table with `route` added (its bit must be free).
    pub fn with(&self, route: Route) -> Self {
        let mut by_bit = self.by_bit.clone();
        let bit = route.shared.bit as usize;
        by_bit[bit] = Some(route);
        Self::from_bits(self.version + 1, by_bit, self.worker_bits.len())
    }

    /// A copy of this table without the endpoint at `bit`.
    pub fn without(&self, bit: u32) -> Self {
        let mut by_bit = self.by_bit.clone();
        by_bit[bit as usize] = None;
        Self::from_bits(self.version + 1, by_bit, self.worker_bits.len())
    }

    fn from_bits(version: u64, by_bit: Vec<Option<Route>>, workers: usize) -> Self {
        let mut unfiltered = 0;
        let mut filtered = Vec::new();
        let mut worker_bits = vec![0; workers];
        let mut durable = 0;
        let mut slot_of_bit = [0; 64];
        let mut bit_of_slot = [0; 64];
        for route in by_bit.iter().flatten() {
            let b = 1u64 << route.shared.bit;
            worker_bits[route.shared.worker] |= b;
            if let Some(&slot) = route.shared.slot.get() {
                durable |= b;
                slot_of_bit[route.shared.bit as usize] = 1 << slot;
                bit_of_slot[slot as usize] = b;
            }
            if route.ignore.is_empty() {
                unfiltered |= b;
            } else {
                filtered.push(route.clone());
            }
        }
        Routes {
            version,
            unfiltered,
            filtered,
            by_bit,
            worker_bits,
            durable,
            slot_of_bit,
            bit_of_slot,
        }
    }

    /// The store slots of the durable endpoints in `bits`.
    pub fn slots_for(&self, bits: u64) -> u64 {
        fold_bits(bits & self.durable, &self.slot_of_bit)
    }

    /// The ring bits of the endpoints added now for the store slots in `slots`.
    pub fn bits_for(&self, slots: u64) -> u64 {
        fold_bits(slots, &self.bit_of_slot)
    }

    /// The endpoints that want `event`; counts the filtered ones.
    #[inline]
    pub fn mask_for<E: Event + ?Sized>(&self, event: &E) -> u64 {
        let mut mask = self.unfiltered;
        for route in &self.filtered {
            if route.ignore.passes(event) {
                mask |= 1 << route.shared.bit;
            } else {
                route.shared.filtered.inc();
            }
        }
        mask
    }

    /// The endpoint at `bit`.
    pub fn shared(&self, bit: u32) -> Option<&Arc<Shared>> {
        self.by_bit[bit as usize].as_ref().map(|r| &r.shared)
    }
}

/// The union of `table[i]` for every bit `i` set in `bits`.
fn fold_bits(mut bits: u64, table: &[u64; 64]) -> u64 {
    let mut out = 0;
    while bits != 0 {
        out |= table[bits.trailing_zeros() as usize];
        bits &= bits - 1;
    }
    out
}
