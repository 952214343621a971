//! Leases: which durable endpoints of a shared store this process may deliver now.
//!
//! Several processes (nodes) may share one store (a PostgreSQL database). Each endpoint is
//! delivered by one node at a time, the holder of its lease; something outside the engine
//! (the PostgreSQL lease manager) decides who holds what and tells the engine through a
//! [`LeaseBoard`]. The engine keeps one [`Gate`] per durable endpoint. An endpoint whose gate is
//! shut starts no request and reads no record; when its gate shuts while it holds events
//! (the lease was lost, or lapsed because the database could not be reached to renew it), it
//! closes its connections at once and hands everything it held back to the log, counted as
//! `dropped.handed_over`: the next holder resumes from the cursor saved in the store.
//!
//! A gate is open until a local deadline (`until`) that the lease manager sets well before the
//! lease expires in the database, so a node that stops hearing from the database (or is
//! paused) stops delivering before another node may take the lease over.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use parking_lot::Mutex;

use super::endpoint::LogMarks;
use super::wake::Wake;

/// One endpoint's lease as its endpoint sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct GateState {
    /// The lease's epoch (0: not held).
    pub epoch: u64,
    /// The cursor to resume from when this epoch began (the store's saved cursor).
    pub resume: u64,
    /// Deliver only before this moment.
    pub until: Option<Instant>,
}

impl GateState {
    /// Whether delivery may go on at `now`.
    pub fn open(&self, now: Instant) -> bool {
        self.epoch != 0 && self.until.is_some_and(|u| now < u)
    }
}

/// One endpoint's lease, shared between the lease manager and the endpoint's worker.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    state: Mutex<GateState>,
}

impl Gate {
    /// The lease now.
    pub fn get(&self) -> GateState {
        *self.state.lock()
    }
}

/// The engine's side of the leases of a shared store: the lease manager grants, renews and
/// revokes them here, and tells the engine how far other nodes have written the log.
/// Obtained from [`Dispatcher::lease_board`](super::Dispatcher::lease_board) on a dispatcher
/// built with [`DispatcherBuilder::leases`](super::DispatcherBuilder::leases).
pub struct LeaseBoard {
    gates: Mutex<HashMap<String, Arc<Gate>>>,
    marks: Arc<LogMarks>,
    wakes: Mutex<Vec<Arc<Wake>>>,
}

impl std::fmt::Debug for LeaseBoard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseBoard")
            .field("gates", &*self.gates.lock())
            .field("through", &self.through())
            .finish_non_exhaustive()
    }
}

impl LeaseBoard {
    pub(crate) fn new(marks: Arc<LogMarks>) -> LeaseBoard {
        LeaseBoard {
            gates: Mutex::new(HashMap::new()),
            marks,
            wakes: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn set_wakes(&self, wakes: Vec<Arc<Wake>>) {
        *self.wakes.lock() = wakes;
    }

    /// The gate of the endpoint called `name` (created shut).
    pub(crate) fn gate(&self, name: &str) -> Arc<Gate> {
        self.gates
            .lock()
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    fn wake_all(&self) {
        for w in self.wakes.lock().iter() {
            w.wake();
        }
    }

    /// This node holds the lease on `endpoint` at `epoch` and may deliver it until `until`;
    /// `resume` is the cursor the store has now. An endpoint that starts delivering under
    /// this epoch (it was granted, or its gate had lapsed and the lease was renewed in time)
    /// resumes from it; one that is delivering under it already goes on from where it is.
    pub fn grant(&self, endpoint: &str, epoch: u64, resume: u64, until: Instant) {
        let gate = self.gate(endpoint);
        let mut st = gate.state.lock();
        let changed = st.epoch != epoch;
        st.resume = resume;
        st.epoch = epoch;
        st.until = Some(until);
        drop(st);
        if changed {
            self.wake_all();
        }
    }

    /// This node no longer holds the lease on `endpoint`: its worker hands back what it
    /// holds at its next turn.
    pub fn revoke(&self, endpoint: &str) {
        let gate = self.gate(endpoint);
        let was = std::mem::take(&mut *gate.state.lock());
        if was.epoch != 0 {
            self.wake_all();
        }
    }

    /// The epoch this node holds `endpoint` at, if its gate is open at `now`.
    pub fn held(&self, endpoint: &str, now: Instant) -> Option<u64> {
        let st = self.gates.lock().get(endpoint).map(|g| g.get())?;
        st.open(now).then_some(st.epoch)
    }

    /// Records up to `through` are committed in the store (by any node): endpoints that
    /// read the log may read that far. Wakes the workers if it moved.
    pub fn advance(&self, through: u64) {
        let before = self
            .marks
            .durable_through
            .fetch_max(through, Ordering::AcqRel);
        if through > before {
            self.wake_all();
        }
    }

    /// How far the log is known to be committed.
    pub fn through(&self) -> u64 {
        self.marks.durable_through.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_gate_is_open_only_while_held_and_before_its_deadline() {
        let board = LeaseBoard::new(Arc::new(LogMarks::at(0)));
        let now = Instant::now();
        assert_eq!(board.held("a", now), None, "shut until granted");
        board.grant("a", 3, 10, now + Duration::from_secs(5));
        assert_eq!(board.held("a", now), Some(3));
        assert_eq!(
            board.held("a", now + Duration::from_secs(5)),
            None,
            "lapsed"
        );
        let g = board.gate("a").get();
        assert_eq!((g.epoch, g.resume), (3, 10));
        // A renewal brings the store's cursor (used only by an endpoint that starts
        // delivering under the epoch: see log_link's test).
        board.grant("a", 3, 99, now + Duration::from_secs(9));
        assert_eq!(board.gate("a").get().resume, 99);
        // A new epoch takes its own.
        board.grant("a", 4, 40, now + Duration::from_secs(9));
        assert_eq!(board.gate("a").get().resume, 40);
        board.revoke("a");
        assert_eq!(board.held("a", now), None);
        assert_eq!(board.gate("a").get(), GateState::default());
    }

    #[test]
    fn the_log_mark_only_moves_forward() {
        let board = LeaseBoard::new(Arc::new(LogMarks::at(5)));
        board.advance(9);
        board.advance(7);
        assert_eq!(board.through(), 9);
    }
}
