//! The persistence thread: group commit of durable events, then hand-off to the ring.
//!
//! `publish` queues an event for durable endpoints here (one short lock). The thread takes
//! everything queued at once, appends it to the store, makes it durable with one `fdatasync`
//! (group commit), completes the waiting [`Ticket`]s, and only then publishes the events into
//! the ring with their sequence numbers. The ring therefore only ever holds committed records:
//! it is the read-ahead tail of the log, and a durable endpoint that falls behind (or resumes
//! after a restart) reads the log itself and rejoins the ring where it caught up.
//!
//! The same thread writes dead letters the workers hand it, and saves the endpoints' cursors
//! (how far each has delivered) at most every [`CURSOR_INTERVAL`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, MappedMutexGuard, Mutex, MutexGuard};

use crate::stats::DropReason;
use crate::store::{DeadLetter, DeadLetterStore, Recovery, Store, unix_ms};
use crate::{Error, RawEvent};

use super::endpoint::LogMarks;
use super::shared::Shared;
use super::ticket::TicketCell;

/// The bits of `slots` still valid for an event routed with table `version`.
fn live_slots(slots: u64, version: u64, floors: &[u64; 64]) -> u64 {
    let mut out = slots;
    let mut bits = slots;
    while bits != 0 {
        let s = bits.trailing_zeros() as usize;
        bits &= bits - 1;
        if version < floors[s] {
            out &= !(1 << s);
        }
    }
    out
}

/// How often cursors are saved at most (each save is a write, an fsync and a rename). A crash
/// forgets at most this much of the acknowledgements, so those events are sent again.
pub(crate) const CURSOR_INTERVAL: Duration = Duration::from_millis(100);

/// Events queued for the persistence thread at most; `publish` waits for room beyond it.
const INTAKE_LIMIT: usize = 64 * 1024;

/// A durable event waiting to be committed.
pub(crate) struct Pending {
    /// The event.
    pub event: RawEvent,
    /// The store slots it is for.
    pub slots: u64,
    /// When it was published.
    pub at: Instant,
    /// The same, as wall-clock milliseconds (kept in the record).
    pub time_ms: u64,
    /// Completed once it is durable (or failed), if the publisher asked.
    pub ticket: Option<Arc<TicketCell>>,
    /// The routing table's version `slots` was worked out with (see [`Durable::floors`]).
    pub version: u64,
}

/// A committed event, ready for the ring.
pub(crate) struct Committed {
    /// The event.
    pub event: RawEvent,
    /// Its sequence number.
    pub seq: u64,
    /// The store slots it is for.
    pub slots: u64,
    /// When it was published.
    pub at: Instant,
}

#[derive(Default)]
struct Intake {
    queue: Vec<Pending>,
    /// Events ever queued.
    submitted: u64,
    /// No more events come; finish and stop once told to (`stop`).
    stop: bool,
}

/// A durable endpoint as the persistence thread sees it.
pub(crate) struct Member {
    /// Its counters (and `acked`).
    pub shared: Arc<Shared>,
    /// Its store slot.
    pub slot: u8,
}

/// What the dispatcher, its workers and the persistence thread share about durability.
pub(crate) struct Durable {
    /// The store (`None` once closed, which releases its directory). The persistence thread
    /// holds the lock while it appends and commits.
    store: Mutex<Option<Box<dyn Store>>>,
    /// How far the log has got (committed, and handed to the ring), for the endpoints.
    pub marks: Arc<LogMarks>,
    /// What opening the store found.
    pub recovery: Recovery,
    intake: Mutex<Intake>,
    work: Condvar,
    room: Condvar,
    /// Bumped after each commit; ticket waiters sleep on `committed`.
    pub(super) commits: Mutex<u64>,
    pub(super) committed: Condvar,
    /// Set when an append hit the quota; cleared when saved cursors free room.
    pub quota_full: AtomicBool,
    /// Set for good when the store failed: durability can no longer be promised.
    failed: OnceLock<Error>,
    /// Events queued and fully handled (committed and in the ring, or refused).
    settled: AtomicU64,
    /// The durable endpoints, for counting and for their cursors.
    members: Mutex<Vec<Member>>,
    /// Dead letters from the workers, written at the next turn.
    dead: Mutex<Vec<DeadLetter>>,
    /// The store's dead letters (written, listed and replayed without the store's lock).
    pub letters: Arc<dyn DeadLetterStore>,
    /// Removed endpoints, forgotten at the next turn once their cursors are saved.
    leaving: Mutex<Vec<Arc<Shared>>>,
    /// Per store slot, the oldest routing table version whose events may still carry its
    /// bit: 0 (all) until an endpoint is forgotten there (`Dispatcher::forget_endpoint`),
    /// then `u64::MAX` (none) until a new endpoint takes the slot, then the version it was
    /// routed in. An event worked out with an older table was for the forgotten endpoint:
    /// committing it clears that bit, so a reused slot never receives it. Read by the
    /// persistence thread with the store's lock held.
    pub floors: Mutex<[u64; 64]>,
    /// Failed dead-letter writes and cursor saves are retried every turn: said at most once
    /// per interval (a full disk would otherwise fill stderr).
    warn_io: Mutex<super::endpoint::warn::Throttle>,
    /// The store is shared with other processes ([`Store::shared`]): durable endpoints always
    /// read the log, and count what they read when they take it (not at commit: another
    /// node's endpoint may deliver what this one commits).
    pub shared: bool,
    /// A failed append or commit fails its group only ([`Store::retries_failures`]).
    retries: bool,
    /// The leases of a shared store's endpoints (`DispatcherBuilder::leases`).
    pub board: Option<Arc<super::lease::LeaseBoard>>,
}

impl std::fmt::Debug for Durable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Durable")
            .field(
                "durable_through",
                &self.marks.durable_through.load(Ordering::Relaxed),
            )
            .finish_non_exhaustive()
    }
}

impl Durable {
    /// Wraps an open store.
    pub fn new(store: Box<dyn Store>) -> Durable {
        let recovery = store.recovery().clone();
        let letters = store.dead_letters();
        let through = store.durable_through();
        let (shared, retries) = (store.shared(), store.retries_failures());
        Durable {
            shared,
            retries,
            board: None,
            store: Mutex::new(Some(store)),
            marks: Arc::new(LogMarks::at(through)),
            recovery,
            intake: Mutex::new(Intake::default()),
            work: Condvar::new(),
            room: Condvar::new(),
            commits: Mutex::new(0),
            committed: Condvar::new(),
            quota_full: AtomicBool::new(false),
            failed: OnceLock::new(),
            settled: AtomicU64::new(0),
            members: Mutex::new(Vec::new()),
            dead: Mutex::new(Vec::new()),
            letters,
            leaving: Mutex::new(Vec::new()),
            floors: Mutex::new([0; 64]),
            warn_io: Mutex::new(super::endpoint::warn::Throttle::new(
                super::endpoint::warn::WARN_EVERY,
            )),
        }
    }

    /// The open store, or [`Error::Closed`].
    pub fn store(&self) -> Result<MappedMutexGuard<'_, Box<dyn Store>>, Error> {
        MutexGuard::try_map(self.store.lock(), Option::as_mut).map_err(|_| Error::Closed)
    }

    /// Closes the store (after the persistence thread stopped): its files are synced and its
    /// directory lock released, so another dispatcher or process may open it.
    pub fn close(&self) {
        drop(self.store.lock().take());
    }

    /// Registers a durable endpoint called `name` and returns its slot, where it resumes
    /// (`acked`), and from which sequence number this run counts its events at commit (those
    /// below were accepted by an earlier run or while it was away, and are counted when it
    /// takes them).
    pub fn join(&self, shared: &Arc<Shared>) -> Result<(u8, u64, u64), Error> {
        let mut store = self.store()?;
        let state = store.endpoint(&shared.name)?;
        if state.slot >= 64 {
            return Err(Error::Storage {
                op: "join",
                path: shared.name.clone(),
                message: format!("the store gave slot {}, past the 64 there are", state.slot),
                source: None,
            });
        }
        // A shared store: every record is counted when taken (see `shared`).
        let counted_from = if self.shared {
            u64::MAX
        } else {
            store.next_seq()
        };
        let mut members = self.members.lock();
        // The same endpoint removed a moment ago (a reload that changed its settings) may have
        // delivered past the cursor saved last: its own cursor is final (its worker has let
        // go of it) and not saved yet. Resume from the further of the two, so nothing it
        // delivered is delivered again.
        let mut acked = state.acked;
        for old in members
            .iter()
            .filter(|m| m.slot == state.slot)
            .map(|m| &m.shared)
            .chain(self.leaving.lock().iter().filter(|l| l.name == shared.name))
        {
            acked = acked.max(old.acked.load(Ordering::Acquire));
        }
        members.retain(|m| m.slot != state.slot);
        members.push(Member {
            shared: shared.clone(),
            slot: state.slot,
        });
        Ok((state.slot, acked, counted_from))
    }

    /// Whether a durable endpoint called `name` is a member (added, or removed and not yet
    /// let go of).
    pub fn has_member(&self, name: &str) -> bool {
        self.members.lock().iter().any(|m| m.shared.name == name)
    }

    /// An endpoint that joined store slot `slot` is routed from table `version` on: if the
    /// slot was forgotten in this run, events worked out with older tables do not get its
    /// bit (see `floors`).
    pub fn routed(&self, slot: u8, version: u64) {
        let mut floors = self.floors.lock();
        if floors[usize::from(slot)] != 0 {
            floors[usize::from(slot)] = version;
        }
    }

    /// A removed endpoint leaves: at the persistence thread's next turn its dead letters
    /// (queued before this) are written, its cursor saved, and its counters forgotten (its
    /// slot and cursor stay in the store, so adding it again resumes it). Never blocks on
    /// the disk: workers call it.
    pub fn leave(&self, shared: &Arc<Shared>) {
        self.leaving.lock().push(shared.clone());
        self.work.notify_one();
    }

    /// The members that left since the last turn, taken out of `members` (call after their
    /// cursors were saved).
    fn forget_leavers(&self, leavers: &[Arc<Shared>]) {
        if leavers.is_empty() {
            return;
        }
        self.members
            .lock()
            .retain(|m| !leavers.iter().any(|l| Arc::ptr_eq(&m.shared, l)));
    }

    /// Writes the queued dead letters; on failure puts them back. Returns whether none is
    /// left unwritten: a cursor may only be saved past dead letters that are written.
    fn write_dead_letters(&self) -> bool {
        let dead = std::mem::take(&mut *self.dead.lock());
        if dead.is_empty() {
            return true;
        }
        match self.letters.append(&dead) {
            Ok(()) => true,
            Err(Error::DeadLettersFull { .. }) => self.keep_what_fits(dead),
            Err(e) => {
                if let Some(held) = self.warn_io.lock().check(Instant::now()) {
                    log::error!(
                        "hookwire: writing {} dead letter(s) failed: {e}{}",
                        dead.len(),
                        super::endpoint::warn::more(held)
                    );
                }
                self.dead.lock().splice(0..0, dead);
                false
            }
        }
    }

    /// The dead letters are full: writes those that fit, one by one; each that does not is
    /// counted in its endpoint's `dead_letter_errors` (it was given up either way: it stays
    /// counted in `dead_lettered`) and said once in the log. Returns whether none is left
    /// unwritten for another reason (then it and the rest are put back, as a failed write).
    fn keep_what_fits(&self, dead: Vec<DeadLetter>) -> bool {
        let mut refused = 0u64;
        let mut last = None;
        let mut rest = dead.into_iter();
        while let Some(letter) = rest.next() {
            match self.letters.append(std::slice::from_ref(&letter)) {
                Ok(()) => {}
                Err(e @ Error::DeadLettersFull { .. }) => {
                    refused += 1;
                    if let Some(m) = self
                        .members
                        .lock()
                        .iter()
                        .find(|m| m.shared.name == letter.endpoint)
                    {
                        m.shared.dead_letter_errors.inc();
                    }
                    last = Some(e);
                }
                Err(e) => {
                    if let Some(held) = self.warn_io.lock().check(Instant::now()) {
                        log::error!(
                            "hookwire: writing a dead letter failed: {e}{}",
                            super::endpoint::warn::more(held)
                        );
                    }
                    let mut back = vec![letter];
                    back.extend(rest);
                    self.dead.lock().splice(0..0, back);
                    return false;
                }
            }
        }
        if let Some(e) = last {
            log::error!(
                "hookwire: {refused} dead letter(s) could not be kept ({e}); they are counted \
                 in dead_letter_errors"
            );
        }
        true
    }

    /// Queues `event` for the slots in `slots`. Waits up to `timeout` for room. Errors:
    /// [`Error::Quota`] (the store is full), [`Error::Storage`] (it failed earlier),
    /// [`Error::Timeout`] (no room in time), [`Error::Closed`].
    pub fn submit(
        &self,
        event: RawEvent,
        slots: u64,
        version: u64,
        at: Instant,
        want_ticket: bool,
        timeout: Duration,
    ) -> Result<Option<Arc<TicketCell>>, Error> {
        if let Some(e) = self.failed.get() {
            return Err(e.clone());
        }
        if self.quota_full.load(Ordering::Acquire) {
            // Room may have come back (segments removed) without the flag being cleared yet.
            let store = self.store()?;
            let (quota, used) = (store.quota_bytes(), store.used_bytes());
            let need = event.json().len() as u64 + 128;
            if used.saturating_add(need) > quota {
                return Err(Error::Quota { quota, used });
            }
            self.quota_full.store(false, Ordering::Release);
        }
        let ticket = want_ticket.then(|| Arc::new(TicketCell::default()));
        let mut intake = self.intake.lock();
        if intake.queue.len() >= INTAKE_LIMIT {
            let deadline = Instant::now().checked_add(timeout);
            while intake.queue.len() >= INTAKE_LIMIT && !intake.stop {
                let timed_out = match deadline {
                    Some(t) => self.room.wait_until(&mut intake, t).timed_out(),
                    None => {
                        self.room.wait(&mut intake);
                        false
                    }
                };
                if timed_out && intake.queue.len() >= INTAKE_LIMIT {
                    return Err(Error::Timeout {
                        waiting_for: "room in the durable log's intake",
                        after: timeout,
                    });
                }
            }
        }
        if intake.stop {
            return Err(Error::Closed);
        }
        intake.queue.push(Pending {
            event,
            slots,
            at,
            time_ms: unix_ms(),
            ticket: ticket.clone(),
            version,
        });
        intake.submitted += 1;
        let first = intake.queue.len() == 1;
        drop(intake);
        if first {
            self.work.notify_one();
        }
        Ok(ticket)
    }

    /// A dead letter from a worker, written at the persistence thread's next turn, before
    /// the cursor that passes it is saved.
    pub fn dead_letter(&self, letters: impl IntoIterator<Item = DeadLetter>) {
        self.dead.lock().extend(letters);
        self.work.notify_one();
    }

    /// Events queued so far.
    pub fn submitted(&self) -> u64 {
        self.intake.lock().submitted
    }

    /// Whether every event queued before `submitted` was handled.
    pub fn settled_through(&self, submitted: u64) -> bool {
        self.settled.load(Ordering::Acquire) >= submitted
    }

    /// Tells the thread to finish what is queued, save the cursors once more, and stop.
    pub fn stop(&self) {
        self.intake.lock().stop = true;
        self.work.notify_all();
        self.room.notify_all();
    }

    fn members_by_slot(&self) -> [Option<Arc<Shared>>; 64] {
        let mut by_slot: [Option<Arc<Shared>>; 64] = std::array::from_fn(|_| None);
        for m in self.members.lock().iter() {
            by_slot[m.slot as usize] = Some(m.shared.clone());
        }
        by_slot
    }

    /// Runs `f` on the endpoint of every slot in `slots` that has one.
    fn count(by_slot: &[Option<Arc<Shared>>; 64], slots: u64, f: impl Fn(&Shared)) {
        let mut bits = slots;
        while bits != 0 {
            let s = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            if let Some(sh) = &by_slot[s] {
                f(sh);
            }
        }
    }

    /// Appends and commits one group; completes its tickets. Returns the committed events.
    fn commit_group(&self, group: Vec<Pending>) -> Vec<Committed> {
        if group.is_empty() {
            return Vec::new();
        }
        let by_slot = self.members_by_slot();
        let mut store = match self.store() {
            Ok(s) => s,
            Err(e) => {
                for p in group {
                    Self::refuse(&by_slot, p, e.clone(), DropReason::SinkError);
                }
                return Vec::new();
            }
        };
        let mut appended = Vec::with_capacity(group.len());
        let mut buf = Vec::with_capacity(1024);
        // With the store's lock held: see `floors`.
        let floors = *self.floors.lock();
        // A store that retries: an append that failed rolled the whole group back (as the
        // local log does), so the rest of the group fails with it and is not committed.
        let mut group_failed: Option<Error> = None;
        for mut p in group {
            p.slots = live_slots(p.slots, p.version, &floors);
            if p.slots == 0 {
                // Every endpoint it was for was forgotten since it was published.
                log::warn!(
                    "event {:?} not committed: every endpoint it was published to was \
                     forgotten before it was committed",
                    crate::Event::id(&p.event)
                );
                if let Some(t) = &p.ticket {
                    t.fail(Error::config(
                        "endpoint",
                        "every endpoint it was published to was forgotten before it was \
                         committed",
                    ));
                }
                continue;
            }
            if let Some(e) = self.failed.get().or(group_failed.as_ref()) {
                Self::refuse(&by_slot, p, e.clone(), DropReason::SinkError);
                continue;
            }
            buf.clear();
            p.event.encode_record(&mut buf);
            match store.append(p.slots, p.time_ms, &buf) {
                Ok(seq) => appended.push((p, seq)),
                Err(e @ Error::Quota { .. }) => {
                    self.quota_full.store(true, Ordering::Release);
                    Self::refuse(&by_slot, p, e, DropReason::Quota);
                }
                Err(e @ Error::Storage { .. }) => {
                    // The store failed (a write while rolling to a new segment, say): it
                    // rolled its log back to the last commit, so the events appended before
                    // this one in the group are gone too, and the commit below fails.
                    self.fail(&e);
                    if self.retries {
                        group_failed = Some(e.clone());
                    }
                    Self::refuse(&by_slot, p, e, DropReason::SinkError);
                }
                // This event only (too large for a record, say).
                Err(e) => Self::refuse(&by_slot, p, e, DropReason::SinkError),
            }
        }
        if let Some(e) = group_failed {
            drop(store);
            for (p, _) in appended {
                Self::refuse(&by_slot, p, e.clone(), DropReason::SinkError);
            }
            return Vec::new();
        }
        if appended.is_empty() {
            return Vec::new();
        }
        match store.commit() {
            Ok(through) => {
                drop(store);
                self.marks
                    .durable_through
                    .fetch_max(through, Ordering::AcqRel);
                let mut out = Vec::with_capacity(appended.len());
                for (p, seq) in appended {
                    // Accepted for each durable endpoint once committed (shared: when taken).
                    if !self.shared {
                        Self::count(&by_slot, p.slots, |s| s.taken.inc());
                    }
                    if let Some(t) = &p.ticket {
                        t.succeed(seq);
                    }
                    out.push(Committed {
                        event: p.event,
                        seq,
                        slots: p.slots,
                        at: p.at,
                    });
                }
                out
            }
            Err(e) => {
                drop(store);
                self.fail(&e);
                for (p, _) in appended {
                    Self::refuse(&by_slot, p, e.clone(), DropReason::SinkError);
                }
                Vec::new()
            }
        }
    }

    /// The store failed for good: every later durable publish fails with `e`. Said once.
    /// A store that retries its failures (a database) fails the group only: said at most
    /// once per interval.
    fn fail(&self, e: &Error) {
        if self.retries {
            if let Some(held) = self.warn_io.lock().check(Instant::now()) {
                log::error!(
                    "hookwire: a durable commit failed ({e}); its publishes failed, the next \
                     ones try again{}",
                    super::endpoint::warn::more(held)
                );
            }
            return;
        }
        if self.failed.set(e.clone()).is_ok() {
            log::error!(
                "hookwire: the durable store failed ({e}); durable publishes fail from now on"
            );
        }
    }

    /// An event that could not be persisted: its ticket fails, each endpoint counts a drop.
    /// A quota refusal is a refusal (`events` counts it through `dropped.quota`); any other
    /// failure is an accepted event lost to the store, so it counts as taken too.
    fn refuse(by_slot: &[Option<Arc<Shared>>; 64], p: Pending, e: Error, reason: DropReason) {
        Self::count(by_slot, p.slots, |s| {
            if reason != DropReason::Quota {
                s.taken.inc();
            }
            s.dropped.inc(reason);
        });
        if let Some(t) = &p.ticket {
            t.fail(e);
        }
    }

    /// Writes the queued dead letters, then saves the cursors if they moved (and enough time
    /// has passed, or `force`). The cursors are read before the dead letters are taken: a
    /// worker queues its dead letters before it moves its cursor past them.
    fn save(&self, last: &mut Vec<(u8, u64)>, last_at: &mut Instant, force: bool) {
        // Leavers first: their dead letters were queued before they left, so the dead letters
        // taken below include them; their cursors are read below, then they are forgotten.
        let leavers = std::mem::take(&mut *self.leaving.lock());
        let force = force || !leavers.is_empty();
        if !force && last_at.elapsed() < CURSOR_INTERVAL && self.dead.lock().is_empty() {
            return;
        }
        let cursors: Vec<(u8, u64)> = self
            .members
            .lock()
            .iter()
            .map(|m| (m.slot, m.shared.acked.load(Ordering::Acquire)))
            .collect();
        // Dead letters before the store's lock: they need none.
        let written = self.write_dead_letters();
        let Ok(mut store) = self.store() else {
            self.forget_leavers(&leavers);
            return;
        };
        let saved = written
            && (cursors == *last
                || !(force || last_at.elapsed() >= CURSOR_INTERVAL)
                || match store.save_cursors(&cursors) {
                    Ok(()) => {
                        *last = cursors;
                        *last_at = Instant::now();
                        if store.used_bytes() < store.quota_bytes() {
                            self.quota_full.store(false, Ordering::Release);
                        }
                        true
                    }
                    Err(e) => {
                        if let Some(held) = self.warn_io.lock().check(Instant::now()) {
                            log::error!(
                                "hookwire: saving cursors failed: {e}{}",
                                super::endpoint::warn::more(held)
                            );
                        }
                        false
                    }
                });
        drop(store);
        if saved {
            self.forget_leavers(&leavers);
        } else {
            // Tried again at the next turn.
            self.leaving.lock().extend(leavers);
        }
    }

    /// The persistence thread's loop. `publish` puts committed events into the ring (it
    /// returns when they are in, or `false` once the ring is sealed).
    pub fn run(&self, mut publish: impl FnMut(Vec<Committed>) -> bool) {
        let mut last = Vec::new();
        let mut last_at = Instant::now();
        loop {
            let (group, stop) = {
                let mut intake = self.intake.lock();
                if intake.queue.is_empty() && !intake.stop {
                    self.work.wait_for(&mut intake, CURSOR_INTERVAL);
                }
                let group = std::mem::take(&mut intake.queue);
                (group, intake.stop)
            };
            self.room.notify_all();
            let n = group.len() as u64;
            let committed = self.commit_group(group);
            if n > 0 {
                {
                    let mut g = self.commits.lock();
                    *g += 1;
                }
                self.committed.notify_all();
            }
            if let Some(last) = committed.last().map(|c| c.seq)
                && publish(committed)
            {
                self.marks.published_through.store(last, Ordering::Release);
            }
            self.settled.fetch_add(n, Ordering::AcqRel);
            let drained = stop && self.intake.lock().queue.is_empty();
            self.save(&mut last, &mut last_at, drained);
            if drained {
                return;
            }
        }
    }
}

#[cfg(test)]
#[path = "persist_faults.rs"]
mod faults;
