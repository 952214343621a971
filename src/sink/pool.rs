//! The shared pool of drainer threads behind pooled [`Queue`](super::Queue)s.
//!
//! One pool per process, started on first use: `available_parallelism()` drainer threads
//! (named `hookwire-drain`) and one watchdog thread (`hookwire-drain-watchdog`).
//!
//! - A queue that has events and is not already *scheduled* is put on the run queue once (an
//!   atomic flag in the queue). A drainer takes a scheduled queue, delivers up to [`BATCH`]
//!   events in order, then puts it back at the end of the run queue if more is waiting, or
//!   clears the flag. Only the drainer holding a queue delivers for it, so each queue stays
//!   FIFO. A turn that delivered events and found the queue empty, while other queues wait on
//!   the run queue, puts it back still scheduled ([`Next::Linger`]): an active queue then
//!   stays on the run queue and its writers do not schedule it again at every write; a turn
//!   that finds it empty from the start lets it go.
//! - **Rounds.** A drainer takes its share of the waiting queues at once (the waiting ones
//!   divided by the awake drainers, at most [`TAKE`]), gives each a turn, and puts back what
//!   is still scheduled, under one lock at each end: not two lock round trips per queue and
//!   turn. A round whose turns delivered fewer than two events each, with queues still
//!   scheduled, means the drainer keeps pace with its writers one event at a time: every event
//!   then carries its queue's cache lines (ring slot and indices, the event's own count) from
//!   the writer's core to the drainer's and back, which measured 4x slower than batches at 16
//!   queues. The drainer then waits [`LAG`] (10 us, spinning without touching shared memory)
//!   before its next round, so that the round finds batches. This costs a queue at most that
//!   much latency, and only while the pool is busy with events arriving one by one.
//! - **Wake-ups.** Putting a queue on the run queue wakes a parked drainer only if no drainer
//!   is awake (draining, or looking for work): an awake one takes the task at the end of its
//!   current turn. A drainer that takes a task and leaves [`WAKE_BACKLOG`] or more waiting
//!   wakes a parked one itself, and the watchdog wakes one at each tick while tasks wait. So a
//!   writer pays a futex wake-up (and the context switch that often comes with it) only when
//!   the whole pool is asleep, not each time one drainer catches up while another sleeps. The
//!   cost: a task submitted while every awake drainer is inside a slow (not stuck) turn waits
//!   for that turn to end, or for the next tick, before a sleeping drainer is woken for it.
//!   The drainer woken is the one parked last ([`RunQueue::parked`]).
//! - **A blocking downstream does not stall the pool.** Each drainer publishes a sequence number
//!   that is odd while it is inside a downstream call. The watchdog looks every [`TICK`]; a
//!   drainer seen inside the *same* call at two looks in a row (stuck for at least one tick) is
//!   retired and a replacement drainer is started at once, so the pool keeps its size in live
//!   threads. The retired thread finishes its call, then keeps draining that one queue as its
//!   own thread while events are waiting (a persistently slow sink costs one thread, not one
//!   spawn per event), and exits when the queue is empty. The queues it had taken for its
//!   round and not yet started go back to the run queue when it is retired, and it is no
//!   longer counted awake (writers wake a parked drainer rather than wait for it). The
//!   watchdog retires under the run queue's lock, where drainers end their rounds and park:
//!   a drainer it sees inside a call is still in that round, and once retired it ends the
//!   round and exits, never taking another (the review that found this: a drainer retired
//!   just after its call returned could take a new round and exit with it, stranding those
//!   queues). A hanging sink therefore costs the other queues one tick of delay and nothing else.
//! - The watchdog only ticks while some drainer is busy; an idle pool is all parked threads.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

/// Events a drainer delivers from one queue before giving the others a turn.
pub(crate) const BATCH: usize = 128;
/// The longest a turn goes on once it has delivered one event (see `Shared::drain`).
pub(crate) const TURN: Duration = Duration::from_millis(1);
/// The event of a turn at which it first looks at the clock; it looks again at each doubling.
pub(crate) const TURN_CHECK: usize = 4;
/// How often the watchdog looks for drainers stuck in one downstream call. A call that lasts
/// longer than one to two ticks hands the drainer's place in the pool to a new thread.
pub(crate) const TICK: Duration = Duration::from_millis(10);
/// A drainer that takes tasks and leaves at least this many waiting wakes a parked drainer.
pub(crate) const WAKE_BACKLOG: usize = 4;
/// The most queues a drainer takes from the run queue at once (its fair share, if smaller).
pub(crate) const TAKE: usize = 8;
/// How long a drainer that keeps pace with its writers one event at a time waits before its
/// next round (see `drainer`).
pub(crate) const LAG: Duration = Duration::from_micros(10);

/// A queue the pool can drain.
pub(crate) trait Drain: Send + Sync {
    /// Delivers a turn's events and says what the queue needs next. Must call
    /// [`Slot::enter`]/[`Slot::leave`] around every downstream call.
    fn drain(self: Arc<Self>, slot: &Slot) -> Next;
    /// Clears the queue's *scheduled* flag (it was handed back by [`Next::Linger`] and the
    /// pool has nothing else to do). Returns the queue if an event or a close slipped in
    /// meanwhile and this call scheduled it again: the caller then drains it again.
    fn let_go(self: Arc<Self>, slot: &Slot) -> Option<Arc<dyn Drain>>;
}

/// What a queue needs after a turn ([`Drain::drain`]).
pub(crate) enum Next {
    /// Nothing: the queue let itself go (its flag is clear) or is finished.
    Done,
    /// Still scheduled, with events waiting: back to the end of the run queue.
    Again(Arc<dyn Drain>),
    /// Still scheduled; its turn delivered events and emptied it. While other queues wait it
    /// goes back to the end of the run queue for one more turn (so that its writers need not
    /// schedule it again at every write); otherwise it is let go ([`Drain::let_go`]).
    Linger(Arc<dyn Drain>),
}

/// One drainer's view for the watchdog.
#[derive(Default)]
pub(crate) struct Slot {
    /// Odd while inside a downstream call; bumped on entry and exit.
    seq: AtomicU64,
    /// The watchdog replaced this drainer: it exits once its current queue is empty.
    retired: AtomicBool,
    /// The queues of this drainer's round (see `drainer`). The watchdog moves them all to the
    /// run queue when it retires the drainer, so that a stuck downstream holds up only its
    /// own queue.
    round: Mutex<Round>,
    /// This drainer is on [`RunQueue::parked`] (read and written under the run queue's lock).
    parked: AtomicBool,
    /// This drainer waits here, with the run queue's lock, while parked.
    wake: Condvar,
}

/// The queues a drainer holds for one round, every one of them still scheduled.
#[derive(Default)]
struct Round {
    /// Taken from the run queue, turn not started yet.
    todo: VecDeque<Arc<dyn Drain>>,
    /// Had their turn and have events waiting ([`Next::Again`]).
    again: Vec<Arc<dyn Drain>>,
    /// Had their turn and were emptied by it ([`Next::Linger`]).
    linger: Vec<Arc<dyn Drain>>,
}

impl Round {
    fn all(&mut self) -> impl Iterator<Item = Arc<dyn Drain>> + '_ {
        self.todo
            .drain(..)
            .chain(self.again.drain(..))
            .chain(self.linger.drain(..))
    }
}

impl Slot {
    /// Marks the start of a downstream call.
    #[inline]
    pub(crate) fn enter(&self) {
        // Only this drainer writes `seq`: a load and a store, no read-modify-write.
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s | 1, Ordering::Relaxed);
    }

    /// Marks the end of a downstream call.
    #[inline]
    pub(crate) fn leave(&self) {
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store((s | 1) + 1, Ordering::Relaxed);
    }

    /// Whether the watchdog has replaced this drainer (it should stay with its queue).
    #[inline]
    pub(crate) fn retired(&self) -> bool {
        self.retired.load(Ordering::Relaxed)
    }
}

struct RunQueue {
    tasks: VecDeque<Arc<dyn Drain>>,
    /// Drainers inside `drain` (the watchdog sleeps while this is 0).
    busy: usize,
    watchdog_parked: bool,
    /// Drainers not parked: draining, looking for work, or woken and on their way (the waker
    /// counts them awake at once, so that two writers do not wake two drainers for one task).
    awake: usize,
    /// Parked drainers not yet woken, the most recently parked last. A wake-up takes the
    /// last: the drainer whose core and caches are warmest, and, while one drainer is enough
    /// for the load, always the same one, the others staying parked. (A condvar wakes the
    /// longest parked: at N=1 that spread one queue's turns over both drainers, a third of a
    /// core each.)
    parked: Vec<Arc<Slot>>,
}

impl RunQueue {
    /// Wakes one parked drainer, the most recently parked, if there is one.
    fn wake_one(&mut self) {
        if let Some(slot) = self.parked.pop() {
            slot.parked.store(false, Ordering::Relaxed);
            self.awake += 1;
            slot.wake.notify_one();
        }
    }
}

struct Pool {
    run: Mutex<RunQueue>,
    /// The watchdog waits here while no drainer is busy.
    watch: Condvar,
    /// The live and retired-but-busy drainers, with what the watchdog last saw of each.
    slots: Mutex<Vec<(Arc<Slot>, u64)>>,
}

static POOL: OnceLock<Arc<Pool>> = OnceLock::new();

fn pool() -> &'static Arc<Pool> {
    POOL.get_or_init(|| {
        let p = Arc::new(Pool {
            run: Mutex::new(RunQueue {
                tasks: VecDeque::with_capacity(1024),
                busy: 0,
                watchdog_parked: false,
                awake: 0,
                parked: Vec::new(),
            }),
            watch: Condvar::new(),
            slots: Mutex::new(Vec::new()),
        });
        for _ in 0..size() {
            // Without even one drainer no pooled queue would ever deliver: the pool retries
            // at each watchdog tick (see `watchdog`), and queues fall back to their own
            // thread if this first spawn fails (`available`).
            let _ = start_drainer(&p);
        }
        let w = p.clone();
        let _ = std::thread::Builder::new()
            .name("hookwire-drain-watchdog".into())
            .spawn(move || watchdog(&w));
        p
    })
}

/// How many drainers the pool keeps live: one per core.
fn size() -> usize {
    static SIZE: OnceLock<usize> = OnceLock::new();
    *SIZE.get_or_init(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
}

/// Whether the pool has at least one drainer (starting it if needed). A queue built when the
/// system cannot start threads uses its own thread, or fails to build, as before.
pub(crate) fn available() -> bool {
    !pool().slots.lock().is_empty()
}

/// Puts a scheduled queue at the end of the run queue. Wakes a parked drainer only if none is
/// awake: an awake one takes the task when it is done with its current queue (a turn is short:
/// see `BATCH`, `TURN`), and wakes a second one itself if tasks pile up (`WAKE_BACKLOG`); the
/// watchdog wakes one too if tasks wait through a tick. The writer thus pays for a futex
/// wake-up (and the context switch it often brings) only when the whole pool is asleep.
pub(crate) fn submit(task: Arc<dyn Drain>) {
    let p = pool();
    let mut rq = p.run.lock();
    rq.tasks.push_back(task);
    if rq.awake == 0 {
        rq.wake_one();
    }
}

fn start_drainer(p: &Arc<Pool>) -> std::io::Result<()> {
    let slot = Arc::new(Slot::default());
    let (p2, s2) = (p.clone(), slot.clone());
    // Under both locks, so that `awake + parked` always equals the live drainers (the new one
    // waits for the run queue's lock before it looks for work).
    let mut rq = p.run.lock();
    let mut slots = p.slots.lock();
    std::thread::Builder::new()
        .name("hookwire-drain".into())
        .spawn(move || drainer(&p2, &s2))?;
    // Counted awake from now: it looks at the run queue before it first parks.
    rq.awake += 1;
    slots.push((slot, 0));
    Ok(())
}

fn drainer(p: &Pool, slot: &Arc<Slot>) {
    // What a round's turns handed back, requeued under one lock at its end.
    let mut again: Vec<Arc<dyn Drain>> = Vec::with_capacity(TAKE);
    let mut linger: Vec<Arc<dyn Drain>> = Vec::with_capacity(TAKE);
    let mut rq = p.run.lock();
    loop {
        // Take this drainer's share of the waiting queues (at most TAKE) under one lock: a
        // pool keeping up with many queues would otherwise take the run queue's lock twice per
        // queue and turn, one or two events each, against the other drainers and the writers.
        loop {
            let waiting = rq.tasks.len();
            if waiting > 0 {
                let share = waiting.div_ceil(rq.awake.max(1)).clamp(1, TAKE);
                slot.round.lock().todo.extend(rq.tasks.drain(..share));
                rq.busy += 1;
                if rq.watchdog_parked {
                    rq.watchdog_parked = false;
                    p.watch.notify_one();
                }
                if rq.tasks.len() >= WAKE_BACKLOG {
                    rq.wake_one();
                }
                break;
            }
            rq.awake -= 1;
            slot.parked.store(true, Ordering::Relaxed);
            rq.parked.push(slot.clone());
            // Only a waker clears the flag (under the lock, taking this drainer off `parked`
            // and counting it awake): a spurious return from `wait` parks it again.
            while slot.parked.load(Ordering::Relaxed) {
                slot.wake.wait(&mut rq);
            }
        }
        drop(rq);
        let calls_before = slot.seq.load(Ordering::Relaxed);
        let mut turns = 0usize;
        // One turn for each queue of the round, in order; what each turn hands back stays in
        // the round (where the watchdog finds it) until the round ends. A retired drainer
        // stops: the watchdog moved the round to the run queue.
        let mut handed: Option<Next> = None;
        loop {
            let task = {
                let mut round = slot.round.lock();
                match handed.take() {
                    Some(Next::Again(t)) => round.again.push(t),
                    Some(Next::Linger(t)) => round.linger.push(t),
                    Some(Next::Done) | None => {}
                }
                if slot.retired() {
                    break;
                }
                match round.todo.pop_front() {
                    Some(t) => t,
                    None => break,
                }
            };
            turns += 1;
            // A queue contains its downstream's panics; this is for anything that escapes all
            // the same: the drainer lives on (a dead one would never be replaced: its slot
            // looks live).
            handed = Some(
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| task.drain(slot)))
                    .unwrap_or(Next::Done),
            );
        }
        {
            let mut round = slot.round.lock();
            again.append(&mut round.again);
            linger.append(&mut round.linger);
        }
        // A round whose turns found their queues all but empty (fewer than two downstream
        // calls per turn) while the queues stay scheduled: this drainer keeps pace with the
        // writers one event at a time, and then every event moves its queue's lines (the
        // ring's slot and indices, the event itself) from one core to the other and back. It
        // waits LAG, touching no shared memory, so that the next round finds batches.
        let calls = (slot.seq.load(Ordering::Relaxed) - calls_before) / 2;
        if (calls as usize) < 2 * turns && !(again.is_empty() && linger.is_empty()) {
            lag();
        }
        rq = p.run.lock();
        rq.tasks.extend(again.drain(..));
        if !linger.is_empty() {
            if !rq.tasks.is_empty() || linger.len() > 1 {
                // Other queues wait: the emptied ones stay scheduled for one more turn.
                rq.tasks.extend(linger.drain(..));
            } else {
                drop(rq);
                for task in linger.drain(..) {
                    if let Some(task) = task.let_go(slot) {
                        again.push(task);
                    }
                }
                rq = p.run.lock();
                rq.tasks.extend(again.drain(..));
            }
        }
        rq.busy -= 1;
        if slot.retired() {
            // The watchdog stopped counting it awake when it retired it. What it just put
            // back must not wait for a tick.
            if !rq.tasks.is_empty() && rq.awake == 0 {
                rq.wake_one();
            }
            drop(rq);
            p.slots.lock().retain(|(s, _)| !Arc::ptr_eq(s, slot));
            return;
        }
    }
}

/// Waits [`LAG`] without a system call and without touching memory another core writes.
fn lag() {
    let start = std::time::Instant::now();
    while start.elapsed() < LAG {
        for _ in 0..32 {
            std::hint::spin_loop();
        }
    }
}

fn watchdog(p: &Arc<Pool>) {
    loop {
        {
            let mut rq = p.run.lock();
            while rq.busy == 0 {
                rq.watchdog_parked = true;
                p.watch.wait(&mut rq);
            }
        }
        std::thread::sleep(TICK);
        {
            // Tasks that waited through a tick while the awake drainers were busy.
            let mut rq = p.run.lock();
            if !rq.tasks.is_empty() {
                rq.wake_one();
            }
        }
        // Drainers to start: one per drainer retired now, and any the pool is short of.
        let replace = {
            // Under the run queue's lock: a drainer that ends its round (or parks) does so
            // under it too, so one seen inside a call here has not ended its round since, and
            // is counted awake (a parked drainer is outside any call). Retiring it also stops
            // counting it awake: writers then wake a parked drainer for new work, where they
            // would otherwise count on a thread that is stuck.
            let mut rq = p.run.lock();
            let mut slots = p.slots.lock();
            let mut freed = false;
            for (slot, seen) in slots.iter_mut() {
                let now = slot.seq.load(Ordering::Relaxed);
                if now & 1 == 1 && now == *seen && !slot.retired() {
                    slot.retired.store(true, Ordering::Relaxed);
                    rq.awake -= 1;
                    // Its round's other queues, started or not, go to the others.
                    let mut round = slot.round.lock();
                    rq.tasks.extend(round.all());
                    freed = true;
                }
                *seen = now;
            }
            if freed && !rq.tasks.is_empty() {
                rq.wake_one();
            }
            let live = slots.iter().filter(|(s, _)| !s.retired()).count();
            size().saturating_sub(live)
        };
        for _ in 0..replace {
            if let Err(e) = start_drainer(p) {
                log::warn!("queue pool: cannot start a drainer thread (will retry): {e}");
                break;
            }
        }
    }
}

/// Whether the run queue's counts agree with the drainers: every live (not retired) drainer
/// is either counted awake or parked. Checked under both locks, where they always agree.
#[cfg(test)]
pub(crate) fn counts_agree() -> Result<(), String> {
    let rq = pool().run.lock();
    let slots = pool().slots.lock();
    let live = slots.iter().filter(|(s, _)| !s.retired()).count();
    if rq.awake + rq.parked.len() == live {
        Ok(())
    } else {
        Err(format!(
            "{} awake + {} parked, {live} live drainers",
            rq.awake,
            rq.parked.len()
        ))
    }
}

/// Drainers listed in the pool, retired ones (stuck in, or finishing, their queue) or live.
#[cfg(test)]
fn drainers(retired: bool) -> usize {
    pool()
        .slots
        .lock()
        .iter()
        .filter(|(s, _)| s.retired() == retired)
        .count()
}

/// Retired drainers still running.
#[cfg(test)]
pub(crate) fn retired_drainers() -> usize {
    drainers(true)
}

/// Drainers the pool counts as its own (not retired).
#[cfg(test)]
pub(crate) fn live_drainers() -> usize {
    drainers(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_queue() -> RunQueue {
        RunQueue {
            tasks: VecDeque::new(),
            busy: 0,
            watchdog_parked: false,
            awake: 0,
            parked: Vec::new(),
        }
    }

    fn park(rq: &mut RunQueue, slot: &Arc<Slot>) {
        slot.parked.store(true, Ordering::Relaxed);
        rq.parked.push(slot.clone());
    }

    /// A wake-up goes to the drainer parked last (the warm one), not the one parked first; each
    /// is counted awake once, and waking with nobody parked changes nothing.
    #[test]
    fn the_most_recently_parked_drainer_is_woken_first() {
        let mut rq = run_queue();
        let (first, last) = (Arc::new(Slot::default()), Arc::new(Slot::default()));
        park(&mut rq, &first);
        park(&mut rq, &last);
        rq.wake_one();
        assert!(
            !last.parked.load(Ordering::Relaxed),
            "the last parked is woken"
        );
        assert!(
            first.parked.load(Ordering::Relaxed),
            "the first parked sleeps on"
        );
        assert_eq!((rq.awake, rq.parked.len()), (1, 1));
        // It parks again: it is again the one woken.
        park(&mut rq, &last);
        rq.wake_one();
        assert!(!last.parked.load(Ordering::Relaxed));
        assert!(first.parked.load(Ordering::Relaxed));
        rq.wake_one();
        assert!(!first.parked.load(Ordering::Relaxed));
        assert_eq!((rq.awake, rq.parked.len()), (3, 0));
        rq.wake_one();
        assert_eq!(rq.awake, 3);
    }
}
