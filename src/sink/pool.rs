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
//!   the run queue, puts it back still scheduled ([`requeue_if_busy`]): an active queue then
//!   stays on the run queue and its writers do not schedule it again at every write; a turn
//!   that finds it empty from the start lets it go.
//! - **Wake-ups.** Putting a queue on the run queue wakes a parked drainer only if no drainer
//!   is awake (draining, or looking for work): an awake one takes the task at the end of its
//!   current turn. A drainer that takes a task and leaves [`WAKE_BACKLOG`] or more waiting
//!   wakes a parked one itself, and the watchdog wakes one at each tick while tasks wait. So a
//!   writer pays a futex wake-up (and the context switch that often comes with it) only when
//!   the whole pool is asleep, not each time one drainer catches up while another sleeps. The
//!   cost: a task submitted while every awake drainer is inside a slow (not stuck) turn waits
//!   for that turn to end, or for the next tick, before a sleeping drainer is woken for it.
//! - **A blocking downstream does not stall the pool.** Each drainer publishes a sequence number
//!   that is odd while it is inside a downstream call. The watchdog looks every [`TICK`]; a
//!   drainer seen inside the *same* call at two looks in a row (stuck for at least one tick) is
//!   retired and a replacement drainer is started at once, so the pool keeps its size in live
//!   threads. The retired thread finishes its call, then keeps draining that one queue as its
//!   own thread while events are waiting (a persistently slow sink costs one thread, not one
//!   spawn per event), and exits when the queue is empty. A hanging sink therefore costs the
//!   other queues one tick of delay and nothing else.
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
/// How many events a turn delivers between two looks at the clock.
pub(crate) const TURN_CHECK: usize = 4;
/// How often the watchdog looks for drainers stuck in one downstream call. A call that lasts
/// longer than one to two ticks hands the drainer's place in the pool to a new thread.
pub(crate) const TICK: Duration = Duration::from_millis(10);
/// A drainer that takes a task and leaves at least this many waiting wakes a parked drainer.
pub(crate) const WAKE_BACKLOG: usize = 4;

/// A queue the pool can drain.
pub(crate) trait Drain: Send + Sync {
    /// Delivers a batch. The implementation reschedules itself (with [`submit`]) if it stops
    /// with events still waiting, and must call [`Slot::enter`]/[`Slot::leave`] around every
    /// downstream call.
    fn drain(self: Arc<Self>, slot: &Slot);
}

/// One drainer's view for the watchdog.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    /// Odd while inside a downstream call; bumped on entry and exit.
    seq: AtomicU64,
    /// The watchdog replaced this drainer: it exits once its current queue is empty.
    retired: AtomicBool,
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
    /// Drainers parked on `work` and not yet woken.
    sleeping: usize,
    /// Wake-ups given and not yet taken by a parked drainer (a drainer only leaves `wait` with
    /// one, so a spurious return from `wait` parks it again).
    tokens: usize,
}

impl RunQueue {
    /// Wakes one parked drainer, if there is one.
    fn wake_one(&mut self, work: &Condvar) {
        if self.sleeping > 0 {
            self.sleeping -= 1;
            self.awake += 1;
            self.tokens += 1;
            work.notify_one();
        }
    }
}

struct Pool {
    run: Mutex<RunQueue>,
    /// Idle drainers wait here for a scheduled queue.
    work: Condvar,
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
                sleeping: 0,
                tokens: 0,
            }),
            work: Condvar::new(),
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
        rq.wake_one(&p.work);
    }
}

/// Puts a queue that is still scheduled back at the end of the run queue, if other queues
/// are waiting there; hands it back otherwise. For a queue its drainer just emptied: while the
/// pool has other work, an active queue stays scheduled for one more turn, so its writers do
/// not have to schedule it again (a run-queue lock and a hand-off per write when a drainer
/// keeps up with many queues).
pub(crate) fn requeue_if_busy<T: Drain + 'static>(task: Arc<T>) -> Result<(), Arc<T>> {
    let mut rq = pool().run.lock();
    if rq.tasks.is_empty() {
        return Err(task);
    }
    rq.tasks.push_back(task);
    Ok(())
}

fn start_drainer(p: &Arc<Pool>) -> std::io::Result<()> {
    let slot = Arc::new(Slot::default());
    let (p2, s2) = (p.clone(), slot.clone());
    // Counted awake from now: it looks at the run queue before it first parks.
    p.run.lock().awake += 1;
    let spawned = std::thread::Builder::new()
        .name("hookwire-drain".into())
        .spawn(move || drainer(&p2, &s2));
    if let Err(e) = spawned {
        p.run.lock().awake -= 1;
        return Err(e);
    }
    p.slots.lock().push((slot, 0));
    Ok(())
}

fn drainer(p: &Pool, slot: &Arc<Slot>) {
    let mut rq = p.run.lock();
    loop {
        let task = loop {
            if let Some(t) = rq.tasks.pop_front() {
                rq.busy += 1;
                if rq.watchdog_parked {
                    rq.watchdog_parked = false;
                    p.watch.notify_one();
                }
                if rq.tasks.len() >= WAKE_BACKLOG {
                    rq.wake_one(&p.work);
                }
                break t;
            }
            rq.awake -= 1;
            rq.sleeping += 1;
            while rq.tokens == 0 {
                p.work.wait(&mut rq);
            }
            // The waker moved this drainer from `sleeping` to `awake`.
            rq.tokens -= 1;
        };
        drop(rq);
        // A queue contains its downstream's panics; this is for anything that escapes all the
        // same: the drainer lives on (a dead one would never be replaced: its slot looks live).
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| task.drain(slot)));
        rq = p.run.lock();
        rq.busy -= 1;
        if slot.retired() {
            rq.awake -= 1;
            drop(rq);
            p.slots.lock().retain(|(s, _)| !Arc::ptr_eq(s, slot));
            return;
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
                rq.wake_one(&p.work);
            }
        }
        // Drainers to start: one per drainer retired now, and any the pool is short of.
        let replace = {
            let mut slots = p.slots.lock();
            for (slot, seen) in slots.iter_mut() {
                let now = slot.seq.load(Ordering::Relaxed);
                if now & 1 == 1 && now == *seen && !slot.retired() {
                    slot.retired.store(true, Ordering::Relaxed);
                }
                *seen = now;
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

#[cfg(test)]
pub(crate) fn live_drainers() -> usize {
    pool()
        .slots
        .lock()
        .iter()
        .filter(|(s, _)| !s.retired())
        .count()
}
