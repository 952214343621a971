//! A bounded queue that decouples writers from a slow sink.
//!
//! [`Queue`] is go-events' `Queue` with a bound. `write` puts the event in a buffer of fixed
//! capacity and returns; a drainer takes events out in FIFO order and writes them to the
//! downstream sink. `write` never waits for the downstream. When the buffer
//! is full, the [`Overflow`] policy decides: wait for room (`Block`, with an optional timeout),
//! discard the incoming event (`DropNewest`), evict the oldest (`DropOldest`), or refuse
//! (`Reject`). Every event the queue lets go of is counted in [`QueueStats::dropped`] by
//! [`DropReason`], so once the queue is quiet
//! `events == forwarded + dropped.total() + len() + in_flight()` holds exactly.
//!
//! `close` stops accepting events, lets the worker drain until a deadline, drops what is left
//! (counted `Shutdown`), closes the downstream and returns. It never hangs: if the downstream's
//! `write` is stuck, that call is left behind (its thread is not waited for), the event stays
//! counted in flight, and [`CloseReport::worker_stuck`] says so; it is counted once, as
//! forwarded or dropped, when the call returns. That keeps
//! `events == forwarded + dropped + len + in_flight` true whenever the queue is quiet (the
//! counters are atomics read one by one: while events move, a reader may count one of them
//! in two places or in none for an instant).
//!
//! The buffer is a bounded lock-free ring (crossbeam's array channel), preallocated. Writers
//! push under the queue's lock (which serializes them and orders them with `close`); the
//! worker pops without any lock and counts with atomics, so a write and a delivery share no
//! lock and no cache line but the ring's slot. The lock's condition variables serve "has
//! events" (a queue with its own thread), "has room" (`Block` writers: the worker takes the
//! lock to wake one only when one waits) and "worker exited". The downstream is never called
//! with the lock held.
//!
//! # Who drains a queue
//!
//! By default every queue in the process is drained by one shared pool of drainer threads
//! (`hookwire-drain`, one per core), not by a thread of its own:
//!
//! - A write that finds its queue not *scheduled* (an atomic flag) sets the flag and puts the
//!   queue on the pool's run queue, waking a parked drainer only if none is awake; later
//!   writes only push into the buffer. A drainer takes a scheduled queue, delivers up to 128 events in order, then puts
//!   it back at the end of the run queue if more is waiting, or clears the flag. One hand-off
//!   per batch instead of a futex wake-up per event, and two threads for any number of queues
//!   on two cores. Only the drainer holding a queue delivers for it: FIFO per queue holds.
//! - **A downstream that blocks does not stall the pool.** A watchdog thread looks every 10 ms
//!   (only while some drainer is busy) and retires a drainer it sees inside the same
//!   downstream call twice in a row (so blocked for 10-20 ms), starting a replacement at once:
//!   the pool keeps its size in live drainers. The retired thread stays with its queue: it
//!   finishes the call, keeps draining that queue as its own thread while events are waiting,
//!   and exits when the queue is empty. A hanging sink thus costs the other queues one tick
//!   of delay, then nothing but the CPU it uses; a queue whose downstream is slow as a rule
//!   (a remote call per event) should be built with [`QueueBuilder::blocking`]`(true)`, or
//!   with a [`QueueBuilder::thread_name`], which give it a thread of its own as before.
//! - `close` and its deadline work the same either way: a queue stuck in its downstream is
//!   abandoned at the deadline, its drainer already replaced by the watchdog.
//!
//! Below, "the worker" is whichever thread is draining the queue: a pool drainer or its own.

use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering, fence};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use crossbeam_utils::CachePadded;
use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::Error;
use crate::config::{MAX_DURATION, Overflow};
use crate::sink::Sink;
use crate::sink::pool::{self, Drain, Next, Slot};
use crate::stats::{Counter, DropCounts, DropReason};

/// The largest capacity a queue accepts (the buffer is allocated up front).
pub const MAX_CAPACITY: usize = 1 << 24;
/// How long [`Sink::close`] lets a queue drain unless told otherwise.
pub const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Durations longer than this are taken for a mistake in the configuration.
/// Downstream failures are logged at most this often (with a count of the ones in between).
/// The longest `close_within` waits, whatever it is asked.
const MAX_WAIT: Duration = Duration::from_secs(366 * 24 * 3600);

const WARN_EVERY: Duration = Duration::from_secs(10);

/// A queue's counters. Shared: the `Arc` from [`Queue::stats`] outlives the queue.
///
/// Writers count `events` at every write and the worker counts `forwarded` at every delivery:
/// the two sit 128 bytes apart (a pair of cache lines, as the adjacent-line prefetcher
/// fetches them), so that a writer and the worker on two cores do not take one line from each
/// other per event.
#[derive(Default)]
#[repr(C, align(128))]
#[non_exhaustive]
pub struct QueueStats {
    /// Every write that reached the queue (not refused as closed), rejected ones included.
    pub events: Counter,
    /// Events the queue let go of, by reason.
    pub dropped: DropCounts,
    _apart: [u64; STATS_PAD],
    /// Events the downstream took (its `write` returned `Ok`).
    pub forwarded: Counter,
}

impl fmt::Debug for QueueStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueStats")
            .field("events", &self.events)
            .field("dropped", &self.dropped)
            .field("forwarded", &self.forwarded)
            .finish()
    }
}

/// Words between `QueueStats::dropped` and `QueueStats::forwarded`: `forwarded` starts 128
/// bytes after `events`.
const STATS_PAD: usize = 16 - 1 - DropReason::ALL.len();

/// What [`Queue::close_within`] did.
#[derive(Debug, Clone)]
#[must_use = "the report says what was not delivered"]
#[non_exhaustive]
pub struct CloseReport {
    /// Events the downstream took while the queue was closing.
    pub delivered: u64,
    /// Queued events dropped because the deadline passed (counted `Shutdown`).
    pub undelivered: u64,
    /// Whether the worker was still inside the downstream's `write` at the deadline. Its thread
    /// is left running, detached; that event stays in flight (pending) until the downstream
    /// returns, and is then counted by its outcome, once. The worker starts nothing after it.
    pub worker_stuck: bool,
    /// What closing the downstream returned, if it failed (`Closed` is not a failure).
    pub downstream_error: Option<Error>,
}

/// Configures a [`Queue`] beyond capacity and overflow policy.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct QueueBuilder {
    capacity: usize,
    overflow: Overflow,
    close_timeout: Duration,
    thread_name: String,
    own_thread: bool,
}

impl QueueBuilder {
    /// A builder for a queue of `capacity` events with the given overflow policy.
    pub fn new(capacity: usize, overflow: Overflow) -> Self {
        QueueBuilder {
            capacity,
            overflow,
            close_timeout: DEFAULT_CLOSE_TIMEOUT,
            thread_name: "hookwire-queue".into(),
            own_thread: false,
        }
    }

    /// How long [`Sink::close`] lets the queue drain (default 5 s; zero drops at once).
    pub fn close_timeout(mut self, d: Duration) -> Self {
        self.close_timeout = d;
        self
    }

    /// Gives the queue a thread of its own, named as [`thread_name`](Self::thread_name) says,
    /// instead of the shared drainer pool (see [`Queue`]). For a downstream
    /// that blocks for long as a rule (a remote call per event): the pool copes with such a
    /// sink too, but moves it to a thread of its own only after it has blocked a drainer for
    /// a watchdog tick (10-20 ms).
    pub fn blocking(mut self, yes: bool) -> Self {
        self.own_thread = yes;
        self
    }

    /// The worker thread's name (default `hookwire-queue`), as seen in debuggers and panics.
    /// Naming the thread gives the queue a thread of its own, as [`blocking`](Self::blocking)
    /// `(true)` does: pooled queues share the pool's `hookwire-drain` threads.
    pub fn thread_name(mut self, name: impl Into<String>) -> Self {
        self.thread_name = name.into();
        self.own_thread = true;
        self
    }

    /// Checks the configuration, allocates the buffer and joins the drainer pool (or starts
    /// the queue's own thread).
    pub fn build<E, S>(self, downstream: S) -> Result<Queue<E>, Error>
    where
        E: Send + 'static,
        S: Sink<E> + 'static,
    {
        if self.capacity == 0 {
            return Err(Error::config("capacity", "must be at least 1"));
        }
        if self.capacity > MAX_CAPACITY {
            return Err(Error::config(
                "capacity",
                format!("{} is more than the limit of {MAX_CAPACITY}", self.capacity),
            ));
        }
        if self.overflow == Overflow::Spill {
            return Err(Error::config(
                "overflow",
                "Spill needs a durable engine endpoint (an in-memory queue has no disk)",
            ));
        }
        if let Overflow::Block { timeout: Some(t) } = self.overflow {
            if t.is_zero() {
                return Err(Error::config(
                    "overflow",
                    "a Block timeout of zero never waits: use Reject",
                ));
            }
            if t > MAX_DURATION {
                return Err(Error::config(
                    "overflow",
                    format!("Block timeout {t:?} is longer than a year"),
                ));
            }
        }
        if self.close_timeout > MAX_DURATION {
            return Err(Error::config("close_timeout", "is longer than a year"));
        }
        if self.thread_name.contains('\0') {
            return Err(Error::config("thread_name", "contains a NUL byte"));
        }
        // The ring is allocated up front; a capacity the allocator refuses is a configuration
        // error, not an abort (crossbeam's `bounded` would abort), so ask for the same room
        // first, fallibly.
        let mut probe: Vec<(usize, E)> = Vec::new();
        probe
            .try_reserve_exact(self.capacity)
            .map_err(|e| Error::config("capacity", format!("cannot allocate the buffer: {e}")))?;
        drop(probe);
        let (tx, rx) = crossbeam_channel::bounded(self.capacity);
        let shared = Arc::new(Shared {
            state: CachePadded::new(Mutex::new(State {
                closing: false,
                worker_exited: false,
                orphaned: false,
                last_warn: None,
                unlogged_failures: 0,
            })),
            tx,
            rx,
            has_events: Condvar::new(),
            has_room: Condvar::new(),
            exited: Condvar::new(),
            room_waiters: AtomicUsize::new(0),
            closing: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            scheduled: CachePadded::new(AtomicBool::new(false)),
            in_flight: CachePadded::new(AtomicBool::new(false)),
            capacity: self.capacity,
            overflow: self.overflow,
            stats: Arc::default(),
            downstream: Box::new(downstream),
            pooled: !self.own_thread && pool::available(),
            submit: submit_to_pool::<E>,
        });
        let worker = if shared.pooled {
            None
        } else {
            let shared = shared.clone();
            Some(
                std::thread::Builder::new()
                    .name(self.thread_name)
                    .spawn(move || run_worker(&shared))?,
            )
        };
        Ok(Queue {
            shared,
            close_timeout: self.close_timeout,
            worker: Mutex::new(worker),
        })
    }
}

/// A bounded FIFO queue in front of a sink, drained by the shared drainer pool (or by its own
/// thread: [`QueueBuilder::blocking`]).
///
/// The pool: one `hookwire-drain` thread per core serves every queue in the process. A write
/// that finds its queue idle puts it on the pool's run queue; a drainer delivers up to 128 of
/// its events in order, then gives the other queues a turn. A downstream `write` that blocks
/// does not stall the pool: a watchdog replaces a drainer stuck in one call for 10-20 ms with a
/// new thread, and the stuck thread stays with its queue until that queue is empty. A queue
/// whose downstream blocks as a rule (a network call per event) is better built with
/// [`QueueBuilder::blocking`]`(true)`. Below, "the worker" is whichever thread drains the
/// queue.
///
/// Contract:
/// - `write` does not wait for the downstream. It waits only with [`Overflow::Block`], for
///   room in the queue, and is woken as soon as the worker takes an event out.
/// - Events reach the downstream in the order they entered the queue, one at a time.
/// - Drops are counted in [`QueueStats::dropped`]: overflow (`Newest`, `Oldest`, `Rejected`,
///   `BlockTimeout`), a downstream error (`SinkError`; `Shutdown` if it said `Closed`), and what
///   `close` could not deliver by its deadline (`Shutdown`). Downstream errors are logged with
///   `log::warn!` at most every ten seconds.
/// - `close` = [`close_within`](Queue::close_within)`(close_timeout)`; it returns
///   [`Error::Undelivered`] if anything was dropped, [`Error::Closed`] if already closed, and
///   otherwise the downstream's close error, if any.
/// - Dropping a queue without closing it stops it accepting events; the worker delivers what is
///   queued, closes the downstream and exits.
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use hookwire::sink::{Overflow, Queue, Sink, from_fn};
///
/// let delivered = Arc::new(AtomicUsize::new(0));
/// let d = delivered.clone();
/// let slow = from_fn(move |_: u64| { d.fetch_add(1, Ordering::Relaxed); Ok(()) });
/// let queue = Queue::new(slow, 1024, Overflow::DropOldest)?;
/// for i in 0..100 {
///     queue.write(i)?; // returns at once
/// }
/// queue.close()?; // drains (within 5 s), then closes `slow`
/// assert_eq!(delivered.load(Ordering::Relaxed), 100);
/// assert_eq!(queue.stats().forwarded.get(), 100);
/// # Ok::<(), hookwire::Error>(())
/// ```
pub struct Queue<E> {
    shared: Arc<Shared<E>>,
    close_timeout: Duration,
    worker: Mutex<Option<JoinHandle<()>>>,
}

struct Shared<E> {
    /// What writers, `close` and the worker agree on under a lock. Writers hold it to push
    /// (so they are serialized and none pushes once `closing` is set); the worker takes it
    /// only to finish, to log a failure, or to wake a `Block` writer, never per event. On a
    /// cache line of its own: the worker reads the fields below per event, and a writer's
    /// lock would otherwise take that line from it at every write.
    state: CachePadded<Mutex<State>>,
    /// The buffer: a bounded lock-free ring (crossbeam's array channel), pushed by writers
    /// under `state`, popped without it by the worker (and by `close` for its leftovers, and
    /// by a `DropOldest` writer evicting the front).
    tx: Sender<E>,
    rx: Receiver<E>,
    /// An own-thread worker waits here for events (or for the queue to close).
    has_events: Condvar,
    /// `Block` writers wait here for room (or for the queue to close).
    has_room: Condvar,
    /// `close` waits here for the worker to finish draining.
    exited: Condvar,
    /// `Block` writers waiting for room: the worker takes the lock to wake one only if some.
    room_waiters: AtomicUsize,
    /// `State::closing`, readable without the lock (set under it, never cleared).
    closing: AtomicBool,
    /// The deadline passed: the worker must not start another downstream write.
    stop: AtomicBool,
    /// Pooled: the queue is on the run queue or held by a drainer. Set while events are
    /// waiting or one is in flight; cleared only by its holder (see `Drain::drain`).
    scheduled: CachePadded<AtomicBool>,
    /// The worker is inside the downstream's `write` (set just before it takes an event, so
    /// that `len() + in_flight()` may count a moving event twice, never zero times).
    in_flight: CachePadded<AtomicBool>,
    capacity: usize,
    overflow: Overflow,
    stats: Arc<QueueStats>,
    downstream: Box<dyn Sink<E>>,
    /// Drained by the shared pool (else by a thread of its own, `run_worker`).
    pooled: bool,
    /// Puts this queue on the pool's run queue (a function pointer, so that code without
    /// `E: Send + 'static` in scope, such as `Drop`, can schedule it).
    submit: fn(Arc<Shared<E>>),
}

fn submit_to_pool<E: Send + 'static>(sh: Arc<Shared<E>>) {
    pool::submit(sh);
}

struct State {
    /// No more writes are accepted; the worker drains and exits.
    closing: bool,
    worker_exited: bool,
    /// The handle was dropped without `close`: the worker closes the downstream itself.
    orphaned: bool,
    /// When a downstream failure was last logged, and how many since.
    last_warn: Option<Instant>,
    unlogged_failures: u64,
}

impl<E> Shared<E> {
    /// After an event was pushed (writers' lock held): wakes whoever drains the queue.
    #[inline]
    fn wake_after_push(self: &Arc<Self>, st: MutexGuard<'_, State>) {
        if self.pooled {
            // Pairs with the fence in `Drain::drain`: either the drainer that is letting the
            // queue go sees this event, or this writer sees the flag cleared.
            fence(Ordering::SeqCst);
            if !self.scheduled.load(Ordering::Relaxed)
                && !self.scheduled.swap(true, Ordering::SeqCst)
            {
                drop(st);
                (self.submit)(self.clone());
            }
        } else {
            drop(st);
            self.has_events.notify_one();
        }
    }

    /// Marks the queue closing (writers' lock held). Pooled and held by no drainer, it is
    /// either done at once or handed to a drainer to finish.
    fn start_closing(self: &Arc<Self>, st: &mut State) {
        st.closing = true;
        self.closing.store(true, Ordering::SeqCst);
        if !self.pooled {
            self.has_events.notify_all();
            return;
        }
        // Pairs with the fence in `Drain::drain` (a drainer letting the queue go either sees
        // `closing`, or this sees the flag cleared).
        fence(Ordering::SeqCst);
        if !self.scheduled.swap(true, Ordering::SeqCst) {
            if self.rx.is_empty() && !st.orphaned {
                // No drainer holds it and nothing is waiting: it is done already.
                st.worker_exited = true;
            } else {
                // A drainer delivers what is left (or closes an orphan's downstream).
                (self.submit)(self.clone());
            }
        }
    }

    /// After the worker (or an evicting writer) took an event out: wakes a `Block` writer
    /// waiting for room, if there is one. Takes the writers' lock only then.
    #[inline]
    fn room_freed(&self) {
        if matches!(self.overflow, Overflow::Block { .. }) {
            // Pairs with the fence in `Queue::block`: either the writer sees this room, or
            // this sees the writer counted in `room_waiters` (and it waits under the lock).
            fence(Ordering::SeqCst);
            if self.room_waiters.load(Ordering::Relaxed) > 0 {
                let _st = self.state.lock();
                self.has_room.notify_one();
            }
        }
    }

    /// Counts a downstream call's outcome, logs a failure (at most every `WARN_EVERY`), and
    /// clears `in_flight`.
    fn record(&self, result: Result<(), Error>) {
        match result {
            // Only the queue's holder (its drainer, or its own thread) records, and the queue
            // changes hands only through the run queue's lock or the `scheduled` flag.
            Ok(()) => self.stats.forwarded.inc_serial(),
            Err(Error::Closed) => self.stats.dropped.inc(DropReason::Shutdown),
            Err(e) => {
                self.stats.dropped.inc(DropReason::SinkError);
                let mut st = self.state.lock();
                st.unlogged_failures += 1;
                if st.last_warn.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                    let msg = format!(
                        "queue: downstream refused an event, dropped ({} failure(s) since the \
                         last warning): {e}",
                        st.unlogged_failures
                    );
                    st.last_warn = Some(Instant::now());
                    st.unlogged_failures = 0;
                    drop(st);
                    log::warn!("{msg}");
                }
            }
        }
        self.in_flight.store(false, Ordering::Release);
    }

    /// One downstream call; a panic in it costs that event (counted), not the drainer.
    fn deliver(&self, event: E) -> Result<(), Error> {
        panic::catch_unwind(AssertUnwindSafe(|| self.downstream.write(event))).unwrap_or_else(
            |_| {
                Err(Error::Panicked {
                    what: "the queue's downstream sink",
                })
            },
        )
    }

    /// Takes the oldest event for delivery, marking it in flight; `None` if the queue is
    /// empty or stopped.
    #[inline]
    fn take(&self) -> Option<E> {
        if self.stop.load(Ordering::Acquire) {
            return None;
        }
        self.in_flight.store(true, Ordering::Relaxed);
        match self.rx.try_recv() {
            Ok(event) => {
                self.room_freed();
                Some(event)
            }
            Err(_) => {
                self.in_flight.store(false, Ordering::Release);
                None
            }
        }
    }
}

impl<E: Send + 'static> Drain for Shared<E> {
    /// Delivers up to [`pool::BATCH`] events in order (all that are waiting once the watchdog
    /// has retired this drainer), then hands the queue back to the pool still scheduled
    /// ([`Next::Again`], [`Next::Linger`]) or lets it go; finishes the queue if it is closing
    /// and empty.
    ///
    /// No lock per event: the worker pops the lock-free ring and counts with atomics.
    fn drain(self: Arc<Self>, slot: &Slot) -> Next {
        let mut me = self;
        let mut n = 0;
        // A turn is at most BATCH events and about TURN long, whichever comes first: a sink
        // slower than usual (but never stuck long enough for the watchdog) must not hold a
        // drainer for 128 of its calls while other queues wait. The clock starts after the
        // second event and is read at the TURN_CHECK-th and then at each doubling (8, 16, ...):
        // a turn of one event (common when the pool keeps up with its writers) reads it not at
        // all, a long turn of fast calls about log2(BATCH) times, and a slow sink hands over
        // after TURN_CHECK calls (or twice as many, if those took under TURN).
        let mut started: Option<Instant> = None;
        let mut turn_over = false;
        loop {
            if (n >= pool::BATCH || turn_over) && !slot.retired() {
                // Others' turn; still scheduled, so writers do not submit it again.
                return Next::Again(me);
            }
            if let Some(event) = me.take() {
                slot.enter();
                let result = me.deliver(event);
                slot.leave();
                me.record(result);
                n += 1;
                if n == 2 {
                    started = Some(Instant::now());
                } else if n >= pool::TURN_CHECK
                    && n.is_power_of_two()
                    && let Some(t) = started
                {
                    turn_over = t.elapsed() >= pool::TURN;
                }
                continue;
            }
            // Stopped, or nothing waiting.
            if me.closing.load(Ordering::Acquire) {
                let mut st = me.state.lock();
                if !me.stop.load(Ordering::Acquire) && !me.rx.is_empty() {
                    // Written before `close` took the lock: still to deliver.
                    continue;
                }
                // Closing and nothing more to deliver: this queue is done. `scheduled` stays
                // set, so nothing puts it on the run queue again.
                st.worker_exited = true;
                let orphaned = st.orphaned;
                drop(st);
                me.exited.notify_all();
                if orphaned {
                    slot.enter();
                    let _ = panic::catch_unwind(AssertUnwindSafe(|| me.downstream.close()));
                    slot.leave();
                }
                release(me, slot);
                return Next::Done;
            }
            // Emptied by this turn: the pool keeps it scheduled for one more turn if other
            // queues wait (so that its writers need not schedule it again); a turn that finds
            // it empty from the start lets it go.
            if n > 0 && !slot.retired() {
                return Next::Linger(me);
            }
            match me.unschedule(slot) {
                Some(again) => me = again,
                None => return Next::Done,
            }
        }
    }

    fn let_go(self: Arc<Self>, slot: &Slot) -> Option<Arc<dyn Drain>> {
        self.unschedule(slot).map(|me| me as Arc<dyn Drain>)
    }
}

impl<E> Shared<E> {
    /// Clears the *scheduled* flag of a queue its drainer found empty. Returns the queue,
    /// scheduled again, if an event or a close slipped in meanwhile; lets go of the drainer's
    /// reference otherwise.
    fn unschedule(self: Arc<Self>, slot: &Slot) -> Option<Arc<Self>> {
        self.scheduled.store(false, Ordering::SeqCst);
        // Pairs with the fences in `wake_after_push` and `start_closing`: an event pushed, or a
        // close begun, after the drainer's look is seen here, or its author sees the flag
        // cleared and schedules the queue itself.
        fence(Ordering::SeqCst);
        if (self.closing.load(Ordering::Relaxed) || !self.rx.is_empty())
            && !self.scheduled.swap(true, Ordering::SeqCst)
        {
            return Some(self);
        }
        release(self, slot);
        None
    }
}

/// Lets go of a drainer's reference to a queue. It may be the last one (the handle was
/// dropped, or closed, while the queue was on the run queue): then the downstream is dropped
/// here, on the drainer, so its `Drop` runs as a downstream call (the watchdog sees one that
/// blocks) and a panic in it is contained (it would otherwise kill the drainer for good).
fn release<T: ?Sized>(queue: Arc<T>, slot: &Slot) {
    slot.enter();
    let _ = panic::catch_unwind(AssertUnwindSafe(move || drop(queue)));
    slot.leave();
}

impl<E: Send + 'static> Queue<E> {
    /// A queue of `capacity` events in front of `downstream`, with a 5 s close timeout (use
    /// [`QueueBuilder`] to change it or the thread name). Fails with [`Error::Config`] for a
    /// zero or too large capacity or an absurd `Block` timeout.
    pub fn new<S: Sink<E> + 'static>(
        downstream: S,
        capacity: usize,
        overflow: Overflow,
    ) -> Result<Self, Error> {
        QueueBuilder::new(capacity, overflow).build(downstream)
    }
}

impl<E> Queue<E> {
    /// The queue's counters.
    pub fn stats(&self) -> Arc<QueueStats> {
        self.shared.stats.clone()
    }

    /// Events waiting in the queue (not counting one the worker is delivering).
    pub fn len(&self) -> usize {
        self.shared.rx.len()
    }

    /// Whether no events are waiting.
    pub fn is_empty(&self) -> bool {
        self.shared.rx.is_empty()
    }

    /// 1 while the worker is inside the downstream's `write`, else 0.
    pub fn in_flight(&self) -> u64 {
        u64::from(self.shared.in_flight.load(Ordering::Acquire))
    }

    /// `(len(), in_flight())`, read one after the other: an event moving from the buffer into
    /// the downstream at that moment may be counted in both, never in neither.
    pub fn depth(&self) -> (usize, u64) {
        let len = self.len();
        (len, self.in_flight())
    }

    /// How many events the queue holds.
    pub fn capacity(&self) -> usize {
        self.shared.capacity
    }

    /// Whether the queue has stopped accepting events (it is closing or closed).
    pub fn is_closed(&self) -> bool {
        self.shared.closing.load(Ordering::Acquire)
    }

    /// Stops accepting events, lets the worker deliver until `deadline` has passed, drops what
    /// is left (counted [`DropReason::Shutdown`]), closes the downstream and returns. Never
    /// waits much longer than `deadline`, even if the downstream hangs. Returns
    /// [`Error::Closed`] if the queue was already closing.
    pub fn close_within(&self, deadline: Duration) -> Result<CloseReport, Error> {
        let sh = &self.shared;
        // Clamped, so that even `Duration::MAX` is a deadline rather than "wait forever".
        let give_up = Instant::now().checked_add(deadline.min(MAX_WAIT));
        let mut st = sh.state.lock();
        if st.closing {
            return Err(Error::Closed);
        }
        let forwarded_before = sh.stats.forwarded.get();
        sh.start_closing(&mut st);
        sh.has_room.notify_all();
        while !st.worker_exited {
            match give_up {
                Some(t) => {
                    if sh.exited.wait_until(&mut st, t).timed_out() {
                        break;
                    }
                }
                None => sh.exited.wait(&mut st),
            }
        }
        let exited = st.worker_exited;
        let mut leftovers = Vec::new();
        let mut worker_stuck = false;
        if !exited {
            // The worker starts no downstream write after it sees this; what is waiting is
            // taken out here (the worker may still win one event it was already taking: that
            // one is in flight and counted by its outcome).
            sh.stop.store(true, Ordering::SeqCst);
            leftovers.extend(sh.rx.try_iter());
            sh.stats
                .dropped
                .add(DropReason::Shutdown, leftovers.len() as u64);
            // An event inside the downstream's `write` is not ours to count: the downstream
            // may still deliver it. The worker counts its outcome when it returns, then stops.
            worker_stuck = sh.in_flight.load(Ordering::SeqCst);
        }
        let undelivered = leftovers.len() as u64;
        let delivered = sh.stats.forwarded.get() - forwarded_before;
        drop(st);
        drop(leftovers);
        let downstream_error = match sh.downstream.close() {
            Ok(()) | Err(Error::Closed) => None,
            Err(e) => Some(e),
        };
        let handle = self.worker.lock().take();
        if let Some(h) = handle.filter(|_| exited) {
            // It has exited its loop; joining only waits for the thread to unwind.
            let _ = h.join();
        }
        Ok(CloseReport {
            delivered,
            undelivered,
            worker_stuck,
            downstream_error,
        })
    }
}

impl<E> Queue<E> {
    #[inline]
    fn block(
        &self,
        mut st: MutexGuard<'_, State>,
        mut event: E,
        timeout: Option<Duration>,
    ) -> Result<(), Error> {
        let sh = &self.shared;
        // Validated to be at most a year, so this cannot overflow in practice.
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            if st.closing {
                drop(st);
                sh.stats.dropped.inc(DropReason::Shutdown);
                return Err(Error::Closed);
            }
            // Room is checked before the clock, so a wake-up that races the timeout still wins.
            match sh.tx.try_send(event) {
                Ok(()) => {
                    sh.wake_after_push(st);
                    return Ok(());
                }
                Err(TrySendError::Full(e) | TrySendError::Disconnected(e)) => event = e,
            }
            if let (Some(d), Some(after)) = (deadline, timeout)
                && Instant::now() >= d
            {
                drop(st);
                sh.stats.dropped.inc(DropReason::BlockTimeout);
                return Err(Error::Timeout {
                    waiting_for: "queue space",
                    after,
                });
            }
            sh.room_waiters.fetch_add(1, Ordering::SeqCst);
            // Pairs with the fence in `Shared::room_freed`: either the worker sees this
            // writer waiting (and wakes it under the lock held here until `wait`), or this
            // sees the room it made.
            fence(Ordering::SeqCst);
            if sh.tx.is_full() {
                match deadline {
                    Some(d) => {
                        sh.has_room.wait_until(&mut st, d);
                    }
                    None => sh.has_room.wait(&mut st),
                }
            }
            sh.room_waiters.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl<E: Send + 'static> Sink<E> for Queue<E> {
    fn write(&self, event: E) -> Result<(), Error> {
        let sh = &self.shared;
        let st = sh.state.lock();
        if st.closing {
            return Err(Error::Closed);
        }
        // Writers are serialized by `st`, the only place `events` is counted.
        sh.stats.events.inc_serial();
        let event = match sh.tx.try_send(event) {
            Ok(()) => {
                sh.wake_after_push(st);
                return Ok(());
            }
            Err(TrySendError::Full(e) | TrySendError::Disconnected(e)) => e,
        };
        match sh.overflow {
            Overflow::DropNewest => {
                drop(st);
                sh.stats.dropped.inc(DropReason::Newest);
                drop(event);
                Ok(())
            }
            Overflow::DropOldest => {
                // Writers are serialized by `st` and only take-outs make room, so this ends
                // after one eviction at most (none if the worker just took one).
                let mut event = event;
                let mut evicted = Vec::new();
                loop {
                    match sh.tx.try_send(event) {
                        Ok(()) => break,
                        Err(TrySendError::Full(e) | TrySendError::Disconnected(e)) => event = e,
                    }
                    if let Ok(old) = sh.rx.try_recv() {
                        evicted.push(old);
                    }
                }
                sh.wake_after_push(st);
                sh.stats
                    .dropped
                    .add(DropReason::Oldest, evicted.len() as u64);
                drop(evicted); // outside the lock: dropping an event may be costly
                Ok(())
            }
            // `Spill` is refused by `QueueBuilder::build`; were it ever here, refusing is safe.
            Overflow::Reject | Overflow::Spill => {
                drop(st);
                sh.stats.dropped.inc(DropReason::Rejected);
                Err(Error::Full {
                    capacity: sh.capacity,
                })
            }
            Overflow::Block { timeout } => self.block(st, event, timeout),
        }
    }

    fn close(&self) -> Result<(), Error> {
        let report = self.close_within(self.close_timeout)?;
        if report.undelivered > 0 {
            return Err(Error::Undelivered {
                count: report.undelivered,
            });
        }
        report.downstream_error.map_or(Ok(()), Err)
    }
}

impl<E> Drop for Queue<E> {
    fn drop(&mut self) {
        let mut st = self.shared.state.lock();
        if !st.closing {
            // The worker finishes the queue: it closes the downstream (which may block).
            st.orphaned = true;
            self.shared.start_closing(&mut st);
        }
    }
}

impl<E> fmt::Debug for Queue<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("capacity", &self.shared.capacity)
            .field("overflow", &self.shared.overflow)
            .field("len", &self.len())
            .field("stats", &self.shared.stats)
            .finish_non_exhaustive()
    }
}

/// A queue's own thread: take the oldest event, deliver it without the lock, count the outcome.
fn run_worker<E>(sh: &Shared<E>) {
    loop {
        let event = {
            let mut st = sh.state.lock();
            loop {
                if sh.stop.load(Ordering::Acquire) {
                    break None;
                }
                sh.in_flight.store(true, Ordering::Relaxed);
                if let Ok(e) = sh.rx.try_recv() {
                    break Some(e);
                }
                sh.in_flight.store(false, Ordering::Release);
                if st.closing {
                    break None;
                }
                sh.has_events.wait(&mut st);
            }
        };
        let Some(event) = event else { break };
        sh.room_freed();
        let result = sh.deliver(event);
        sh.record(result);
    }
    let orphaned = {
        let mut st = sh.state.lock();
        st.worker_exited = true;
        st.orphaned
    };
    sh.exited.notify_all();
    if orphaned {
        let _ = sh.downstream.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossbeam_channel::{Receiver, Sender, bounded, unbounded};
    use std::sync::atomic::{AtomicBool, Ordering};

    const SAFETY_NET: Duration = Duration::from_secs(10);

    /// A downstream that records events, tells the test when a write starts, and optionally
    /// waits for a token (or the gate's disconnection) before finishing each write.
    struct Probe {
        got: Arc<Mutex<Vec<u32>>>,
        entered: Sender<u32>,
        gate: Option<Receiver<()>>,
        closed: Arc<AtomicBool>,
        fail_if: fn(u32) -> Option<Error>,
    }

    struct Handles {
        got: Arc<Mutex<Vec<u32>>>,
        entered: Receiver<u32>,
        gate: Option<Sender<()>>,
        closed: Arc<AtomicBool>,
    }

    fn probe(gated: bool, fail_if: fn(u32) -> Option<Error>) -> (Probe, Handles) {
        let got = Arc::new(Mutex::new(Vec::new()));
        let closed = Arc::new(AtomicBool::new(false));
        let (etx, erx) = unbounded();
        let (gtx, grx) = if gated {
            let (t, r) = unbounded();
            (Some(t), Some(r))
        } else {
            (None, None)
        };
        let p = Probe {
            got: got.clone(),
            entered: etx,
            gate: grx,
            closed: closed.clone(),
            fail_if,
        };
        let h = Handles {
            got,
            entered: erx,
            gate: gtx,
            closed,
        };
        (p, h)
    }

    fn never(_: u32) -> Option<Error> {
        None
    }

    impl Sink<u32> for Probe {
        fn write(&self, e: u32) -> Result<(), Error> {
            let _ = self.entered.send(e);
            if let Some(g) = &self.gate {
                let _ = g.recv();
            }
            if let Some(err) = (self.fail_if)(e) {
                return Err(err);
            }
            self.got.lock().push(e);
            Ok(())
        }
        fn close(&self) -> Result<(), Error> {
            if self.closed.swap(true, Ordering::SeqCst) {
                return Err(Error::Closed);
            }
            Ok(())
        }
    }

    impl Handles {
        /// Waits until the worker has started writing `e` to the downstream.
        fn wait_entered(&self, e: u32) {
            assert_eq!(self.entered.recv_timeout(SAFETY_NET).unwrap(), e);
        }
        fn release(&self, n: usize) {
            for _ in 0..n {
                self.gate.as_ref().unwrap().send(()).unwrap();
            }
        }
    }

    fn assert_accounted(q: &Queue<u32>) {
        let s = q.stats();
        assert_eq!(
            s.events.get(),
            s.forwarded.get() + s.dropped.total() + q.len() as u64 + q.in_flight(),
            "events == forwarded + dropped + queued + in flight: {q:?}"
        );
    }

    #[test]
    fn writers_and_the_worker_count_on_lines_of_their_own() {
        assert_eq!(std::mem::align_of::<QueueStats>(), 128);
        assert_eq!(std::mem::offset_of!(QueueStats, events), 0);
        assert!(std::mem::offset_of!(QueueStats, dropped) < 128);
        assert_eq!(std::mem::offset_of!(QueueStats, forwarded), 128);
        let q = Queue::new(crate::sink::from_fn(|_: u32| Ok(())), 4, Overflow::Reject).unwrap();
        let s = q.stats();
        assert_eq!(Arc::as_ptr(&s) as usize % 128, 0);
        q.close().unwrap();
        let shown = format!("{s:?}");
        assert!(!shown.contains("apart"), "{shown}");
    }

    // go-events' TestQueue: many concurrent writers, everything arrives, close closes the sink.
    #[test]
    fn delivers_everything_from_concurrent_writers_then_closes() {
        let (p, h) = probe(false, never);
        let q = Arc::new(Queue::new(p, 64, Overflow::Block { timeout: None }).unwrap());
        let writers: Vec<_> = (0..4u32)
            .map(|w| {
                let q = q.clone();
                std::thread::spawn(move || {
                    for i in 0..250 {
                        q.write(w * 1000 + i).unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        q.close().unwrap();
        assert!(h.closed.load(Ordering::SeqCst));
        let got = h.got.lock().clone();
        assert_eq!(got.len(), 1000);
        for w in 0..4u32 {
            let mine: Vec<u32> = got.iter().copied().filter(|e| e / 1000 == w).collect();
            assert_eq!(
                mine,
                (0..250).map(|i| w * 1000 + i).collect::<Vec<_>>(),
                "FIFO"
            );
        }
        assert_eq!(q.stats().forwarded.get(), 1000);
        assert_accounted(&q);
        assert!(matches!(q.write(1), Err(Error::Closed)));
        assert!(matches!(q.close(), Err(Error::Closed)));
        assert_eq!(
            q.stats().events.get(),
            1000,
            "refused writes are not counted"
        );
    }

    // go-events' TestBufferedChanneledQueue: a failing downstream sees every event once.
    #[test]
    fn downstream_errors_are_counted_not_returned() {
        let (p, h) = probe(false, |e| {
            (e % 10 == 9)
                .then(|| Error::config("x", "boom"))
                .or_else(|| (e % 10 == 8).then_some(Error::Closed))
        });
        let q = Queue::new(p, 100, Overflow::Reject).unwrap();
        for i in 0..100 {
            q.write(i).unwrap();
        }
        q.close().unwrap();
        let s = q.stats();
        assert_eq!(s.forwarded.get(), 80);
        assert_eq!(s.dropped.get(DropReason::SinkError), 10);
        assert_eq!(s.dropped.get(DropReason::Shutdown), 10);
        assert_eq!(h.entered.try_iter().count(), 100);
        assert_accounted(&q);
    }

    #[test]
    fn drop_newest_discards_the_incoming_event() {
        let (p, h) = probe(true, never);
        let q = Queue::new(p, 2, Overflow::DropNewest).unwrap();
        q.write(1).unwrap();
        h.wait_entered(1); // 1 is in flight, the buffer is empty
        for e in 2..=5 {
            q.write(e).unwrap();
        }
        assert_eq!((q.len(), q.in_flight()), (2, 1));
        assert_eq!(q.stats().dropped.get(DropReason::Newest), 2);
        assert_accounted(&q);
        h.release(3);
        q.close().unwrap();
        assert_eq!(*h.got.lock(), vec![1, 2, 3]);
        assert_accounted(&q);
    }

    #[test]
    fn drop_oldest_evicts_the_front() {
        let (p, h) = probe(true, never);
        let q = Queue::new(p, 2, Overflow::DropOldest).unwrap();
        q.write(1).unwrap();
        h.wait_entered(1);
        for e in 2..=6 {
            q.write(e).unwrap();
        }
        assert_eq!(q.stats().dropped.get(DropReason::Oldest), 3);
        assert_accounted(&q);
        h.release(3);
        q.close().unwrap();
        assert_eq!(*h.got.lock(), vec![1, 5, 6]);
    }

    #[test]
    fn reject_returns_full() {
        let (p, h) = probe(true, never);
        let q = Queue::new(p, 1, Overflow::Reject).unwrap();
        q.write(1).unwrap();
        h.wait_entered(1);
        q.write(2).unwrap();
        assert!(matches!(q.write(3), Err(Error::Full { capacity: 1 })));
        assert_eq!(q.stats().dropped.get(DropReason::Rejected), 1);
        assert_eq!(
            q.stats().events.get(),
            3,
            "rejected writes are counted as events"
        );
        assert_accounted(&q);
        h.release(2);
        q.close().unwrap();
        assert_eq!(*h.got.lock(), vec![1, 2]);
    }

    #[test]
    fn block_times_out() {
        let (p, h) = probe(true, never);
        let timeout = Duration::from_millis(20);
        let q = Queue::new(
            p,
            1,
            Overflow::Block {
                timeout: Some(timeout),
            },
        )
        .unwrap();
        q.write(1).unwrap();
        h.wait_entered(1);
        q.write(2).unwrap();
        match q.write(3) {
            Err(Error::Timeout { waiting_for, after }) => {
                assert_eq!((waiting_for, after), ("queue space", timeout));
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert_eq!(q.stats().dropped.get(DropReason::BlockTimeout), 1);
        assert_accounted(&q);
        h.release(2);
        q.close().unwrap();
        assert_eq!(*h.got.lock(), vec![1, 2]);
    }

    #[test]
    fn block_wakes_as_soon_as_there_is_room() {
        let (p, h) = probe(true, never);
        let q = Arc::new(Queue::new(p, 1, Overflow::Block { timeout: None }).unwrap());
        q.write(1).unwrap();
        h.wait_entered(1);
        q.write(2).unwrap(); // full now
        let (done_tx, done_rx) = bounded(1);
        let w = {
            let q = q.clone();
            std::thread::spawn(move || done_tx.send(q.write(3)).unwrap())
        };
        assert!(
            done_rx.recv_timeout(Duration::from_millis(30)).is_err(),
            "must wait"
        );
        h.release(1); // 1 done; the worker takes 2 out, which makes room for 3
        done_rx.recv_timeout(SAFETY_NET).unwrap().unwrap();
        w.join().unwrap();
        h.release(2);
        q.close().unwrap();
        assert_eq!(*h.got.lock(), vec![1, 2, 3]);
        assert_eq!(q.stats().dropped.total(), 0);
    }

    #[test]
    fn close_wakes_blocked_writers_with_closed() {
        let (p, h) = probe(true, never);
        let q = Arc::new(Queue::new(p, 1, Overflow::Block { timeout: None }).unwrap());
        q.write(1).unwrap();
        h.wait_entered(1);
        q.write(2).unwrap();
        let w = {
            let q = q.clone();
            std::thread::spawn(move || q.write(3))
        };
        // Wait until the writer has counted its event, i.e. it is in (or past) the wait.
        let t0 = Instant::now();
        while q.stats().events.get() < 3 {
            assert!(t0.elapsed() < SAFETY_NET);
            std::thread::yield_now();
        }
        let closer = {
            let q = q.clone();
            std::thread::spawn(move || q.close_within(SAFETY_NET))
        };
        assert!(matches!(w.join().unwrap(), Err(Error::Closed)));
        drop(h.gate); // let the downstream finish
        let report = closer.join().unwrap().unwrap();
        assert_eq!((report.delivered, report.undelivered), (2, 0));
        assert_eq!(q.stats().dropped.get(DropReason::Shutdown), 1);
        assert_accounted(&q);
    }

    #[test]
    fn close_counts_what_it_delivered() {
        let (p, h) = probe(true, never);
        let q = Arc::new(Queue::new(p, 8, Overflow::Reject).unwrap());
        for e in 1..=3 {
            q.write(e).unwrap();
        }
        h.wait_entered(1);
        let closer = {
            let q = q.clone();
            std::thread::spawn(move || q.close_within(SAFETY_NET))
        };
        let t0 = Instant::now();
        while !q.is_closed() {
            assert!(t0.elapsed() < SAFETY_NET);
            std::thread::yield_now();
        }
        drop(h.gate);
        let r = closer.join().unwrap().unwrap();
        assert_eq!((r.delivered, r.undelivered, r.worker_stuck), (3, 0, false));
        assert!(r.downstream_error.is_none());
        assert!(h.closed.load(Ordering::SeqCst));
    }

    #[test]
    fn close_never_hangs_on_a_stuck_downstream() {
        let (p, h) = probe(true, never);
        let q = QueueBuilder::new(4, Overflow::DropNewest)
            .close_timeout(Duration::from_millis(30))
            .build(p)
            .unwrap();
        for e in 1..=4 {
            q.write(e).unwrap();
        }
        h.wait_entered(1); // stuck on 1 until the gate opens, which it won't before close
        match q.close() {
            Err(Error::Undelivered { count }) => assert_eq!(count, 3),
            other => panic!("expected Undelivered, got {other:?}"),
        }
        let s = q.stats();
        assert_eq!(s.dropped.get(DropReason::Shutdown), 3, "the 3 queued");
        assert_eq!((q.len(), q.in_flight()), (0, 1), "1 is still in flight");
        assert_accounted(&q);
        assert!(h.closed.load(Ordering::SeqCst), "downstream closed anyway");
        assert!(matches!(q.write(9), Err(Error::Closed)));
        assert!(matches!(q.close(), Err(Error::Closed)));

        // The stuck write now succeeds: it must not be counted a second time.
        h.release(1);
        let t0 = Instant::now();
        while h.got.lock().is_empty() {
            assert!(t0.elapsed() < SAFETY_NET);
            std::thread::yield_now();
        }
        // The worker drops its handle on the shared state when it exits.
        let t0 = Instant::now();
        while Arc::strong_count(&q.shared) > 1 {
            assert!(
                t0.elapsed() < SAFETY_NET,
                "the abandoned worker never exited"
            );
            std::thread::yield_now();
        }
        // ...and it is counted once, by its outcome.
        assert_eq!(s.forwarded.get(), 1);
        assert_eq!(s.dropped.get(DropReason::Shutdown), 3);
        assert_eq!(q.in_flight(), 0);
        assert_accounted(&q);
        assert!(
            h.entered.try_recv().is_err(),
            "the worker started nothing after the deadline"
        );
    }

    #[test]
    fn close_within_reports_a_stuck_worker() {
        let (p, h) = probe(true, never);
        let q = Queue::new(p, 4, Overflow::Reject).unwrap();
        q.write(1).unwrap();
        h.wait_entered(1);
        let r = q.close_within(Duration::ZERO).unwrap();
        assert!(r.worker_stuck);
        assert_eq!((r.delivered, r.undelivered), (0, 0));
        assert_eq!(q.in_flight(), 1);
        drop(h.gate);
    }

    #[test]
    fn dropping_an_unclosed_queue_drains_and_closes_downstream() {
        let (p, h) = probe(false, never);
        let q = Queue::new(p, 16, Overflow::Reject).unwrap();
        let stats = q.stats();
        for e in 0..10 {
            q.write(e).unwrap();
        }
        drop(q);
        let t0 = Instant::now();
        while !h.closed.load(Ordering::SeqCst) {
            assert!(
                t0.elapsed() < SAFETY_NET,
                "worker never closed the downstream"
            );
            std::thread::yield_now();
        }
        assert_eq!(*h.got.lock(), (0..10).collect::<Vec<_>>());
        assert_eq!(stats.forwarded.get(), 10);
        // The thread exits: when it has, the probe (and its sender) is gone.
        assert_eq!(h.entered.try_iter().take(10).count(), 10);
        assert_eq!(
            h.entered.recv_timeout(SAFETY_NET),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected)
        );
    }

    #[test]
    fn a_panicking_downstream_costs_one_counted_event_not_the_worker() {
        let sink = crate::sink::from_fn(|e: u32| {
            assert!(e != 2, "downstream bug");
            Ok(())
        });
        let q = QueueBuilder::new(4, Overflow::Reject)
            .close_timeout(SAFETY_NET)
            .build(sink)
            .unwrap();
        for e in 1..=4 {
            q.write(e).unwrap(); // 2 panics in the downstream
        }
        q.close().unwrap();
        let s = q.stats();
        assert_eq!(
            s.forwarded.get(),
            3,
            "the worker survived and delivered 3 and 4"
        );
        assert_eq!(s.dropped.get(DropReason::SinkError), 1);
        assert_accounted(&q);
    }

    #[test]
    fn worker_thread_is_named() {
        let (tx, rx) = bounded(1);
        let sink = crate::sink::from_fn(move |_: u8| {
            let _ = tx.send(std::thread::current().name().map(str::to_owned));
            Ok(())
        });
        let q = QueueBuilder::new(1, Overflow::Reject)
            .thread_name("wh-7")
            .build(sink)
            .unwrap();
        q.write(0).unwrap();
        assert_eq!(
            rx.recv_timeout(SAFETY_NET).unwrap().as_deref(),
            Some("wh-7")
        );
        q.close().unwrap();
    }

    #[test]
    fn bad_config_is_an_error_not_a_panic() {
        let field = |r: Result<Queue<u8>, Error>| match r {
            Err(Error::Config { field, .. }) => field,
            other => panic!("expected a config error, got {other:?}"),
        };
        let ok = || crate::sink::from_fn(|_: u8| Ok(()));
        assert_eq!(field(Queue::new(ok(), 0, Overflow::Reject)), "capacity");
        assert_eq!(
            field(Queue::new(ok(), usize::MAX, Overflow::Reject)),
            "capacity"
        );
        let block = |t| Overflow::Block { timeout: Some(t) };
        assert_eq!(
            field(Queue::new(ok(), 1, block(Duration::ZERO))),
            "overflow"
        );
        assert_eq!(field(Queue::new(ok(), 1, block(Duration::MAX))), "overflow");
        let b = QueueBuilder::new(1, Overflow::Reject);
        assert_eq!(
            field(b.clone().close_timeout(Duration::MAX).build(ok())),
            "close_timeout"
        );
        assert_eq!(field(b.thread_name("a\0b").build(ok())), "thread_name");
        let q = Queue::new(ok(), MAX_CAPACITY.min(1024), block(Duration::from_secs(1))).unwrap();
        assert_eq!(q.capacity(), 1024);
        assert!(q.is_empty());
    }

    /// Every policy, four writers, a downstream that fails one event in five: once quiet, the
    /// books balance to the event.
    #[test]
    fn accounting_holds_under_concurrency_and_failures() {
        let policies = [
            Overflow::Block {
                timeout: Some(Duration::from_micros(50)),
            },
            Overflow::DropNewest,
            Overflow::DropOldest,
            Overflow::Reject,
        ];
        for overflow in policies {
            let (p, h) = probe(false, |e| (e % 5 == 0).then(|| Error::config("x", "flaky")));
            let q = Arc::new(Queue::new(p, 8, overflow).unwrap());
            let writers: Vec<_> = (0..4u32)
                .map(|w| {
                    let q = q.clone();
                    std::thread::spawn(move || {
                        for i in 0..500 {
                            let _ = q.write(w * 1000 + i);
                        }
                    })
                })
                .collect();
            for w in writers {
                w.join().unwrap();
            }
            let t0 = Instant::now();
            while q.len() + q.in_flight() as usize > 0 {
                assert!(t0.elapsed() < SAFETY_NET);
                std::thread::yield_now();
            }
            assert_accounted(&q);
            let s = q.stats();
            assert_eq!(s.events.get(), 2000, "{overflow:?}");
            assert_eq!(
                s.forwarded.get() as usize,
                h.got.lock().len(),
                "{overflow:?}: forwarded counts what the downstream took"
            );
            assert!(s.dropped.get(DropReason::SinkError) > 0, "{overflow:?}");
            q.close().unwrap();
            assert_accounted(&q);
        }
    }

    /// Sinks slower than usual but never stuck (2 ms a call, under the watchdog's bound) on
    /// every drainer: a healthy queue written after them is served once each had one short
    /// turn (about `pool::TURN`), not after 128 of their calls. (Found by review: each slow
    /// queue held its drainer for a whole batch, about a second at 8 ms a call.)
    #[test]
    fn slow_sinks_take_short_turns_on_the_pool() {
        use std::sync::atomic::{AtomicU64, Ordering};
        let slow_calls = Arc::new(AtomicU64::new(0));
        let mut slow = Vec::new();
        for _ in 0..pool::live_drainers().max(1) {
            let calls = slow_calls.clone();
            let q = QueueBuilder::new(1000, Overflow::Reject)
                .close_timeout(Duration::ZERO)
                .build(crate::sink::from_fn(move |_: u32| {
                    std::thread::sleep(Duration::from_millis(2));
                    calls.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                }))
                .unwrap();
            for e in 0..300 {
                q.write(e).unwrap();
            }
            slow.push(q);
        }
        let (tx, rx) = crossbeam_channel::bounded(1);
        let seen = slow_calls.clone();
        let healthy = Queue::new(
            crate::sink::from_fn(move |_: u32| {
                let _ = tx.try_send(seen.load(Ordering::SeqCst));
                Ok(())
            }),
            8,
            Overflow::Reject,
        )
        .unwrap();
        healthy.write(1).unwrap();
        let slow_calls_before = rx
            .recv_timeout(SAFETY_NET)
            .expect("the healthy queue is served");
        // Each slow queue had at most a couple of short turns (TURN_CHECK calls each) first,
        // not a batch of 128.
        let bound = 16 * slow.len() as u64;
        assert!(
            slow_calls_before < bound,
            "{slow_calls_before} slow calls before the healthy event (bound {bound})"
        );
        for q in slow {
            let _ = q.close_within(Duration::ZERO);
        }
    }

    /// A downstream whose `Drop` panics, dropped on a drainer (the queue's handle went away
    /// while a write was in progress): the drainer lives on. Twice as many times as there are
    /// drainers, then a healthy queue still delivers. (Found by review: each such drop killed
    /// a drainer the watchdog never replaced, and the pool died.)
    #[test]
    fn a_panicking_drop_on_a_drainer_does_not_kill_it() {
        /// Says so when dropped: as the panicking `Drop` above it unwinds.
        struct Unwound(crossbeam_channel::Sender<()>);
        impl Drop for Unwound {
            fn drop(&mut self) {
                let _ = self.0.send(());
            }
        }
        struct PanicsOnDrop {
            entered: crossbeam_channel::Sender<()>,
            gate: crossbeam_channel::Receiver<()>,
            _unwound: Unwound,
        }
        impl Sink<u32> for PanicsOnDrop {
            fn write(&self, _: u32) -> Result<(), Error> {
                let _ = self.entered.send(());
                let _ = self.gate.recv();
                Ok(())
            }
            fn close(&self) -> Result<(), Error> {
                Ok(())
            }
        }
        impl Drop for PanicsOnDrop {
            fn drop(&mut self) {
                panic!("a downstream's Drop panicked (on purpose)");
            }
        }
        for _ in 0..2 * pool::live_drainers().max(1) {
            let (entered_tx, entered) = crossbeam_channel::bounded(1);
            let (open, gate) = crossbeam_channel::bounded(1);
            let (unwound_tx, unwound) = crossbeam_channel::bounded(1);
            let q = Queue::new(
                PanicsOnDrop {
                    entered: entered_tx,
                    gate,
                    _unwound: Unwound(unwound_tx),
                },
                8,
                Overflow::Reject,
            )
            .unwrap();
            q.write(1).unwrap();
            entered.recv_timeout(SAFETY_NET).unwrap();
            drop(q); // the drainer now holds the last reference
            open.send(()).unwrap();
            // Its Drop ran on the drainer and panicked (the drainer is unwinding, and takes no
            // more work unless it survives).
            unwound.recv_timeout(SAFETY_NET).unwrap();
        }
        let (tx, rx) = crossbeam_channel::bounded(1);
        let healthy = Queue::new(
            crate::sink::from_fn(move |e: u32| {
                let _ = tx.try_send(e);
                Ok(())
            }),
            8,
            Overflow::Reject,
        )
        .unwrap();
        healthy.write(7).unwrap();
        assert_eq!(
            rx.recv_timeout(SAFETY_NET),
            Ok(7),
            "the pool still delivers"
        );
    }

    /// The pool stays live when downstreams hang: more hanging queues than the pool has
    /// drainers share it with healthy queues, and the healthy ones deliver everything, in
    /// order, on the pool's threads, while the others hang. Then the hung ones are let go and
    /// deliver what they held, in order too, and the books balance everywhere.
    #[test]
    fn hanging_downstreams_do_not_stall_healthy_queues_on_the_pool() {
        let stuck = pool::live_drainers() + 2;
        let mut hung = Vec::new();
        for _ in 0..stuck {
            let (p, h) = probe(true, never);
            let q = QueueBuilder::new(8, Overflow::Reject)
                .close_timeout(SAFETY_NET)
                .build(p)
                .unwrap();
            for e in 1..=3 {
                q.write(e).unwrap();
            }
            hung.push((q, h));
        }
        // Every hanging queue got a drainer: all of them are inside a write at once, so the
        // pool has replaced the drainers they hold.
        for (_, h) in &hung {
            h.wait_entered(1);
        }
        let healthy: Vec<_> = (0..4)
            .map(|_| {
                let got = Arc::new(Mutex::new(Vec::new()));
                let names = Arc::new(Mutex::new(Vec::new()));
                let (g, n) = (got.clone(), names.clone());
                let sink = crate::sink::from_fn(move |e: u32| {
                    g.lock().push(e);
                    let name = std::thread::current().name().map(str::to_owned);
                    if !n.lock().contains(&name) {
                        n.lock().push(name);
                    }
                    Ok(())
                });
                let q = Queue::new(sink, 64, Overflow::Block { timeout: None }).unwrap();
                (q, got, names)
            })
            .collect();
        for i in 0..1000 {
            for (q, _, _) in &healthy {
                q.write(i).unwrap(); // blocks while full: needs the pool to drain
            }
        }
        for (q, got, names) in &healthy {
            q.close().unwrap();
            assert_eq!(*got.lock(), (0..1000).collect::<Vec<_>>(), "FIFO");
            assert_eq!(*names.lock(), vec![Some("hookwire-drain".to_owned())]);
            assert_eq!(q.stats().forwarded.get(), 1000);
            assert_accounted(q);
        }
        for (q, _) in &hung {
            assert_eq!((q.len(), q.in_flight()), (2, 1));
            assert_accounted(q);
        }
        for (q, h) in hung {
            let Handles { got, gate, .. } = h;
            drop(gate);
            q.close().unwrap();
            assert_eq!(*got.lock(), vec![1, 2, 3]);
            assert_eq!(q.stats().forwarded.get(), 3);
            assert_accounted(&q);
        }
    }

    /// A drainer the watchdog retired while it hangs in a downstream call is no longer counted
    /// awake, so writers wake a parked drainer for new work rather than count on the stuck
    /// one. (Found by review: it stayed counted until it exited, so while a sink hung, each
    /// burst on an otherwise idle pool waited up to a watchdog tick to be drained.)
    #[test]
    fn a_retired_drainer_is_not_counted_awake() {
        let (p, h) = probe(true, never);
        let q = QueueBuilder::new(8, Overflow::Reject)
            .close_timeout(SAFETY_NET)
            .build(p)
            .unwrap();
        q.write(1).unwrap();
        h.wait_entered(1);
        let give_up = Instant::now() + SAFETY_NET;
        while pool::retired_drainers() == 0 {
            assert!(
                Instant::now() < give_up,
                "the hanging drainer was never retired"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        pool::counts_agree().unwrap();
        let Handles { got, gate, .. } = h;
        drop(gate);
        q.close().unwrap();
        assert_eq!(*got.lock(), vec![1]);
        pool::counts_agree().unwrap();
    }

    /// A drainer takes up to `pool::TAKE` queues from the run queue at once for a round. When
    /// one of them hangs, the watchdog hands the round's others to other drainers, those whose
    /// turn came before it (still scheduled, so their writers do not schedule them again) and
    /// those after it: none waits for the hanging call.
    #[test]
    fn queues_in_a_round_with_a_hanging_one_go_to_other_drainers() {
        let (p, h) = probe(true, never);
        let hanging = QueueBuilder::new(8, Overflow::Reject)
            .close_timeout(SAFETY_NET)
            .build(p)
            .unwrap();
        let (tx, rx) = unbounded();
        let healthy: Vec<Queue<u32>> = (0..2 * pool::TAKE as u32)
            .map(|i| {
                let tx = tx.clone();
                let sink = crate::sink::from_fn(move |e: u32| {
                    let _ = tx.send((i, e));
                    Ok(())
                });
                Queue::new(sink, 4, Overflow::Reject).unwrap()
            })
            .collect();
        let expect = |round: u32| {
            let mut got: Vec<(u32, u32)> = (0..healthy.len())
                .map(|_| {
                    rx.recv_timeout(SAFETY_NET)
                        .expect("every healthy queue delivers while another one hangs")
                })
                .collect();
            got.sort_unstable();
            let want: Vec<(u32, u32)> = (0..healthy.len() as u32).map(|i| (i, round)).collect();
            assert_eq!(got, want);
        };
        // Scheduled together, the hanging queue in the middle: a drainer is likely to take it
        // in one round with healthy ones before and after it.
        let (before, after) = healthy.split_at(pool::TAKE / 2);
        for q in before {
            q.write(0).unwrap();
        }
        hanging.write(1).unwrap();
        for q in after {
            q.write(0).unwrap();
        }
        h.wait_entered(1);
        expect(0);
        // Written while the other one still hangs: delivered too.
        for q in &healthy {
            q.write(1).unwrap();
        }
        expect(1);
        let Handles { gate, .. } = h;
        drop(gate);
        hanging.close().unwrap();
        for q in &healthy {
            q.close().unwrap();
            assert_eq!(q.stats().forwarded.get(), 2);
            assert_accounted(q);
        }
    }

    #[test]
    fn a_blocking_queue_has_its_own_thread() {
        let (tx, rx) = bounded(2);
        let sink = crate::sink::from_fn(move |_: u8| {
            let _ = tx.send(std::thread::current().name().map(str::to_owned));
            Ok(())
        });
        let q = QueueBuilder::new(1, Overflow::Block { timeout: None })
            .blocking(true)
            .build(sink)
            .unwrap();
        q.write(0).unwrap();
        q.write(1).unwrap();
        for _ in 0..2 {
            assert_eq!(
                rx.recv_timeout(SAFETY_NET).unwrap().as_deref(),
                Some("hookwire-queue")
            );
        }
        q.close().unwrap();
        assert!(q.worker.lock().is_none(), "joined by close");
    }

    /// Many pooled queues, written by several threads: each queue's events arrive in order and
    /// the pool never runs one queue on two drainers at once.
    #[test]
    fn the_pool_keeps_each_queue_fifo_and_serial() {
        use std::sync::atomic::AtomicUsize;
        let queues: Vec<_> = (0..16)
            .map(|_| {
                let got = Arc::new(Mutex::new(Vec::new()));
                let inside = Arc::new(AtomicUsize::new(0));
                let (g, ins) = (got.clone(), inside.clone());
                let sink = crate::sink::from_fn(move |e: u32| {
                    assert_eq!(
                        ins.fetch_add(1, Ordering::SeqCst),
                        0,
                        "two drainers at once"
                    );
                    g.lock().push(e);
                    ins.fetch_sub(1, Ordering::SeqCst);
                    Ok(())
                });
                let q = Queue::new(sink, 32, Overflow::Block { timeout: None }).unwrap();
                (Arc::new(q), got)
            })
            .collect();
        let writers: Vec<_> = (0..2u32)
            .map(|w| {
                let qs: Vec<_> = queues.iter().map(|(q, _)| q.clone()).collect();
                std::thread::spawn(move || {
                    for i in 0..2000 {
                        for q in &qs {
                            q.write(w * 10_000 + i).unwrap();
                        }
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        for (q, got) in &queues {
            q.close().unwrap();
            let got = got.lock();
            assert_eq!(got.len(), 4000);
            for w in 0..2u32 {
                let mine: Vec<u32> = got.iter().copied().filter(|e| e / 10_000 == w).collect();
                assert_eq!(mine, (0..2000).map(|i| w * 10_000 + i).collect::<Vec<_>>());
            }
            assert_eq!(
                q.stats().dropped.total(),
                0,
                "a panic in the sink would drop"
            );
            assert_accounted(q);
        }
    }
}
