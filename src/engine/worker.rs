//! A worker: one thread, one `mio::Poll`, and the endpoints it owns outright.
//!
//! Each turn of the loop: apply commands (add, remove, disable, shutdown), let every endpoint
//! take what it can from the ring and start requests, handle due timers, then poll. The poll
//! does not wait while there is work; before it waits, the worker tells producers it sleeps
//! (and which endpoints want events), then looks at the ring once more, so an event published
//! meanwhile is either seen or wakes it (see `wake.rs`).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mio::{Events, Poll, Token};
use parking_lot::Mutex;

use crate::stats::DropReason;
use crate::{Error, RawEvent};

use super::EndpointId;
use super::dispatcher::WorkerHandle;
use super::http_ep::{DurableLink, HttpEp, Prepared};
use super::ring::sync::Arc as RingArc;
use super::ring::{Consumer, Ring};
use super::shared::Shared;
use super::wake::Wake;

/// What the ring holds: the event (shared bytes), when it was published, and the routing
/// table's version it was routed with.
#[derive(Debug)]
pub(crate) struct Published {
    /// The event.
    pub event: RawEvent,
    /// When `publish` took it (for the delivery-lag histogram).
    pub at: Instant,
    /// The routing table's version at publish time.
    pub version: u64,
    /// Its sequence number in the durable log (0: a memory-only event).
    pub seq: u64,
}

/// A clock producers can read with one load: the workers store the time at every turn of
/// their loops. `Instant::now()` costs over 100 ns on some virtual machines, more than the
/// rest of `publish`; an awake worker keeps this within one loop turn of the truth.
#[derive(Debug)]
pub(crate) struct CoarseClock {
    base: Instant,
    nanos: AtomicU64,
}

impl CoarseClock {
    /// A clock starting now.
    pub fn new() -> Self {
        CoarseClock {
            base: Instant::now(),
            nanos: AtomicU64::new(0),
        }
    }

    /// Records `now` (workers).
    pub fn tick(&self, now: Instant) {
        let n = now.saturating_duration_since(self.base).as_nanos();
        self.nanos
            .store(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// The time last recorded (producers).
    pub fn now(&self) -> Instant {
        self.base + Duration::from_nanos(self.nanos.load(Ordering::Relaxed))
    }
}

/// What the dispatcher asks of a worker.
pub(crate) enum Command {
    /// Take ownership of a new endpoint.
    Add(Box<Task>),
    /// Stop an endpoint: deliver what it holds until `deadline`, drop the rest, then answer.
    Remove {
        /// Which endpoint.
        id: EndpointId,
        /// When to give up on what it still holds.
        deadline: Instant,
        /// Answered (with `()`) once the endpoint is gone.
        done: Sender<()>,
    },
    /// Pause or resume delivery.
    SetDisabled {
        /// Which endpoint.
        id: EndpointId,
        /// Paused?
        disabled: bool,
    },
    /// Count everything still held as dropped (`shutdown`) and exit. The ring is sealed at
    /// `end`: no event will ever be published past it.
    Shutdown {
        /// The sealed ring's head.
        end: u64,
    },
}

/// Where an endpoint's events come from: its ring cursor.
pub(crate) struct Source {
    consumer: Consumer<Published>,
    bit: u64,
    since: u64,
    /// Durable endpoints: entries with a lower sequence number were already taken from the
    /// log, and are passed over.
    pub min_seq: u64,
}

impl Source {
    /// Hands the endpoint's events to `f`, in order, in place, until `f` returns false (that
    /// event stays), `max` were taken, or the ring has nothing more. Entries routed elsewhere
    /// are skipped. Returns how many `f` took.
    pub fn take(&mut self, max: usize, mut f: impl FnMut(&Published) -> bool) -> usize {
        let mut pos = self.consumer.position();
        let mut taken = 0;
        while taken < max {
            let Some(entry) = self.consumer.get(pos) else {
                break;
            };
            #[allow(clippy::needless_borrow)] // loom's read guard needs the borrow
            let value: &Published = &entry.value;
            if self.mine(entry.mask, value) {
                // `&*` turns loom's read guard into a plain reference (a no-op without loom).
                #[allow(clippy::borrow_deref_ref)]
                if !f(&*entry.value) {
                    break;
                }
                taken += 1;
            }
            pos += 1;
        }
        self.consumer.advance(pos);
        taken
    }

    /// Takes everything up to position `end` without looking at it, returning how many were
    /// this endpoint's (shutdown, removal). A producer that claimed a slot before `end`
    /// publishes it within moments; it is waited for, up to a second.
    pub fn discard(&mut self, end: u64) -> u64 {
        let started = Instant::now();
        let mut n = 0;
        loop {
            n += self.take(usize::MAX, |_| true) as u64;
            if self.consumer.position() >= end || started.elapsed() > Duration::from_secs(1) {
                return n;
            }
            std::thread::yield_now();
        }
    }

    /// Whether a ring entry is for this endpoint.
    #[inline]
    fn mine(&self, mask: u64, p: &Published) -> bool {
        mask & self.bit != 0 && p.version >= self.since && p.seq >= self.min_seq
    }

    /// Moves the cursor past the entries at its front that are not this endpoint's.
    pub fn skip_foreign(&mut self) {
        let mut pos = self.consumer.position();
        while let Some(entry) = self.consumer.get(pos) {
            #[allow(clippy::needless_borrow)] // loom's read guard needs the borrow
            let value: &Published = &entry.value;
            if self.mine(entry.mask, value) {
                break;
            }
            pos += 1;
        }
        self.consumer.advance(pos);
    }

    /// Moves the cursor past everything published (a durable endpoint reading the log: what
    /// the ring holds for it is committed, so the log has it too).
    pub fn skip_all(&mut self) {
        let mut pos = self.consumer.position();
        while self.consumer.get(pos).is_some() {
            pos += 1;
        }
        self.consumer.advance(pos);
    }

    /// Whether a published entry waits at the cursor (maybe not this endpoint's).
    pub fn has_entry(&self) -> bool {
        self.consumer.get(self.consumer.position()).is_some()
    }

    /// How far the cursor is behind the ring's head.
    pub fn lag(&self) -> u64 {
        self.consumer.lag()
    }
}

enum Kind {
    Local(Box<dyn FnMut(&RawEvent) + Send>),
    Http(Box<HttpEp>),
}

/// One endpoint, as its worker owns it.
pub(crate) struct Task {
    shared: Arc<Shared>,
    src: Source,
    kind: Kind,
    /// The deadline a timer is set for, if any.
    armed: Option<Instant>,
    /// Being removed: answer `done` once idle or at the deadline.
    removing: Option<(Instant, Sender<()>)>,
}

/// How many ring entries one endpoint takes per loop turn, so one busy endpoint cannot keep
/// its neighbours waiting.
const BUDGET: usize = 4096;

impl Task {
    /// An in-process consumer.
    pub fn local(
        shared: Arc<Shared>,
        consumer: Consumer<Published>,
        since: u64,
        f: Box<dyn FnMut(&RawEvent) + Send>,
    ) -> Task {
        Task::new(shared, consumer, since, Kind::Local(f))
    }

    /// A webhook endpoint.
    pub fn http(
        shared: Arc<Shared>,
        consumer: Consumer<Published>,
        since: u64,
        prepared: Prepared,
        durable: Option<DurableLink>,
    ) -> Task {
        let min_seq = durable.as_ref().map_or(0, DurableLink::resume_at);
        let ep = HttpEp::new(prepared, shared.clone(), durable);
        let mut task = Task::new(shared, consumer, since, Kind::Http(Box::new(ep)));
        task.src.min_seq = min_seq;
        task
    }

    fn new(shared: Arc<Shared>, consumer: Consumer<Published>, since: u64, kind: Kind) -> Task {
        Task {
            src: Source {
                consumer,
                bit: 1 << shared.bit,
                since,
                min_seq: 0,
            },
            shared,
            kind,
            armed: None,
            removing: None,
        }
    }

    /// Takes events and starts requests. Returns whether anything moved.
    fn pump(&mut self, io: &mut Io<'_>) -> bool {
        // Entries for other endpoints never wait at this cursor, so an endpoint that cannot
        // take its own events now does not look behind (`wait_idle`, removal).
        self.src.skip_foreign();
        match &mut self.kind {
            Kind::Local(f) => {
                let mut failed = 0u64;
                let n = self.src.take(BUDGET, |p| {
                    if catch_unwind(AssertUnwindSafe(|| f(&p.event))).is_err() {
                        failed += 1;
                    }
                    true
                }) as u64;
                if n > 0 {
                    self.shared.taken.add(n);
                    self.shared.delivered.add(n - failed);
                    if failed > 0 {
                        self.shared.dropped.add(DropReason::SinkError, failed);
                    }
                }
                n > 0
            }
            Kind::Http(ep) => ep.pump(&mut self.src, io),
        }
    }

    /// Whether this endpoint would take an event now (so producers should wake the worker).
    fn wants_events(&self) -> bool {
        match &self.kind {
            Kind::Local(_) => true,
            Kind::Http(ep) => ep.wants_events(),
        }
    }

    /// Whether it holds nothing (and has taken everything the ring had for it).
    fn is_idle(&self) -> bool {
        let held = match &self.kind {
            Kind::Local(_) => false,
            Kind::Http(ep) => ep.holds_events(),
        };
        !held && !self.src.has_entry()
    }

    fn deadline(&self) -> Option<Instant> {
        let ep = match &self.kind {
            Kind::Local(_) => None,
            Kind::Http(ep) => ep.deadline(),
        };
        match (ep, self.removing.as_ref().map(|r| r.0)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Counts everything it still holds, and everything the ring still has for it, as
    /// dropped (`shutdown`), and closes its connections. A durable endpoint drops nothing:
    /// what it did not deliver stays in the log, and stays pending.
    fn abandon(&mut self, io: &mut Io<'_>, end: u64) {
        let n = self.src.discard(end);
        if !self.shared.is_durable() {
            self.shared.taken.add(n);
            self.shared.dropped.add(DropReason::Shutdown, n);
        }
        if let Kind::Http(ep) = &mut self.kind {
            ep.abandon(io);
        }
    }
}

/// What an endpoint may use of its worker while it runs.
pub(crate) struct Io<'a> {
    /// Registers sockets.
    pub registry: &'a mio::Registry,
    /// The time of this loop turn.
    pub now: Instant,
    /// The endpoint's slot (its tokens are `slot << 8 | connection`).
    pub slot: usize,
    /// The ring's size: an endpoint lagging more than half of it copies its backlog out.
    pub ring_capacity: u64,
    /// The dispatcher's "full" bits.
    pub full: &'a AtomicU64,
}

/// How long an idle worker watches the ring before it sleeps.
const SPIN: Duration = Duration::from_micros(50);

/// The waker's token: no endpoint slot reaches it.
const WAKE: Token = Token(usize::MAX);

struct Worker {
    index: usize,
    poll: Poll,
    ring: RingArc<Ring<Published>>,
    wake: Arc<Wake>,
    commands: Receiver<Command>,
    tasks: Vec<Option<Task>>,
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    full: Arc<AtomicU64>,
    clock: Arc<CoarseClock>,
}

/// Starts worker `index`.
pub(crate) fn spawn(
    index: usize,
    ring: RingArc<Ring<Published>>,
    full: Arc<AtomicU64>,
    clock: Arc<CoarseClock>,
) -> Result<WorkerHandle, Error> {
    let poll = Poll::new()?;
    let waker = mio::Waker::new(poll.registry(), WAKE)?;
    let wake = Arc::new(Wake::new(waker));
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut worker = Worker {
        index,
        poll,
        ring,
        wake: wake.clone(),
        commands: rx,
        tasks: Vec::new(),
        timers: BinaryHeap::new(),
        full,
        clock,
    };
    let thread = std::thread::Builder::new()
        .name(format!("hookwire-worker-{index}"))
        .spawn(move || worker.run())?;
    Ok(WorkerHandle {
        wake,
        commands: tx,
        thread: Mutex::new(Some(thread)),
    })
}

impl Worker {
    fn run(&mut self) {
        let mut events = Events::with_capacity(256);
        loop {
            let now = Instant::now();
            self.clock.tick(now);
            if let Some(end) = self.commands(now) {
                self.shutdown(end, now);
                return;
            }
            let mut progress = false;
            for slot in 0..self.tasks.len() {
                progress |= self.with_task(slot, now, |t, io| t.pump(io));
            }
            self.finish_removals(now);
            progress |= self.timers(now);
            let timeout = if progress || self.spin(now) {
                Some(Duration::ZERO)
            } else {
                self.prepare_sleep(now)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout)
                && e.kind() != io::ErrorKind::Interrupted
            {
                log::error!("hookwire worker {}: poll failed: {e}", self.index);
            }
            self.wake.woke();
            let now = Instant::now();
            for event in events.iter() {
                let token = event.token();
                if token == WAKE {
                    continue;
                }
                let (slot, conn) = (token.0 >> 8, token.0 & 0xff);
                self.with_task(slot, now, |t, io| {
                    if let Kind::Http(ep) = &mut t.kind {
                        ep.on_io(conn, io);
                    }
                    true
                });
            }
        }
    }

    /// Runs `f` on the task in `slot` (if any) and re-arms its timer.
    fn with_task(
        &mut self,
        slot: usize,
        now: Instant,
        f: impl FnOnce(&mut Task, &mut Io<'_>) -> bool,
    ) -> bool {
        let Some(Some(task)) = self.tasks.get_mut(slot) else {
            return false;
        };
        let mut io = Io {
            registry: self.poll.registry(),
            now,
            slot,
            ring_capacity: self.ring.capacity() as u64,
            full: &self.full,
        };
        let progress = f(task, &mut io);
        if let Some(d) = task.deadline()
            && task.armed.is_none_or(|a| d < a)
        {
            task.armed = Some(d);
            self.timers.push(Reverse((d, slot)));
        }
        progress
    }

    /// Handles the timers that are due. Returns whether any was.
    fn timers(&mut self, now: Instant) -> bool {
        // Take what is due first: a handler may re-arm a deadline that is already past (it is
        // then handled next turn, after the endpoint has pumped), and must not loop here.
        let mut due = Vec::new();
        while let Some(&Reverse((at, slot))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            due.push((at, slot));
        }
        let mut fired = false;
        for (at, slot) in due {
            let Some(Some(task)) = self.tasks.get_mut(slot) else {
                continue;
            };
            if task.armed != Some(at) {
                continue; // superseded by an earlier deadline that already fired
            }
            task.armed = None;
            fired = true;
            self.with_task(slot, now, |t, io| {
                if let Kind::Http(ep) = &mut t.kind {
                    ep.on_timer(io);
                }
                true
            });
        }
        fired
    }

    /// Applies pending commands; returns the sealed end if told to shut down.
    fn commands(&mut self, now: Instant) -> Option<u64> {
        while let Ok(cmd) = self.commands.try_recv() {
            match cmd {
                Command::Add(task) => {
                    let slot = match self.tasks.iter().position(Option::is_none) {
                        Some(s) => s,
                        None => {
                            self.tasks.push(None);
                            self.tasks.len() - 1
                        }
                    };
                    self.tasks[slot] = Some(*task);
                }
                Command::Remove { id, deadline, done } => {
                    if let Some(t) = self.find(id) {
                        t.removing = Some((deadline, done));
                    } else {
                        let _ = done.send(());
                    }
                }
                Command::SetDisabled { id, disabled } => {
                    if let Some(slot) = self.slot_of(id) {
                        self.with_task(slot, now, |t, io| {
                            if let Kind::Http(ep) = &mut t.kind {
                                ep.set_disabled(disabled, io);
                            } else if disabled {
                                log::warn!(
                                    "{}: in-process consumers cannot be disabled",
                                    t.shared.name
                                );
                            }
                            true
                        });
                    }
                }
                Command::Shutdown { end } => return Some(end),
            }
        }
        None
    }

    fn find(&mut self, id: EndpointId) -> Option<&mut Task> {
        self.tasks.iter_mut().flatten().find(|t| t.shared.id == id)
    }

    fn slot_of(&self, id: EndpointId) -> Option<usize> {
        self.tasks
            .iter()
            .position(|t| t.as_ref().is_some_and(|t| t.shared.id == id))
    }

    /// Drops the endpoints being removed that are idle or out of time.
    fn finish_removals(&mut self, now: Instant) {
        for slot in 0..self.tasks.len() {
            let done = match &self.tasks[slot] {
                Some(t) => t
                    .removing
                    .as_ref()
                    .is_some_and(|(deadline, _)| now >= *deadline || t.is_idle()),
                None => false,
            };
            if done {
                let end = self.ring.head();
                self.retire(slot, end, now);
            }
        }
    }

    /// Takes the endpoint out of `slot`: what it still holds, and what the ring holds for it
    /// up to `end`, is counted as dropped (`shutdown`); a removal waiting on it is answered.
    fn retire(&mut self, slot: usize, end: u64, now: Instant) {
        let Some(mut task) = self.tasks[slot].take() else {
            return;
        };
        task.abandon(&mut self.io(slot, now), end);
        if let Some((_, done)) = task.removing.take() {
            let _ = done.send(());
        }
    }

    /// What an endpoint in `slot` may use of this worker during a loop turn at `now`.
    fn io(&self, slot: usize, now: Instant) -> Io<'_> {
        Io {
            registry: self.poll.registry(),
            now,
            slot,
            ring_capacity: self.ring.capacity() as u64,
            full: &self.full,
        }
    }

    /// Before sleeping, watches the ring for a short while: under a steady stream the next
    /// event comes within microseconds, and catching it here spares the producer a wake-up
    /// syscall and this thread a trip through the scheduler. Returns whether work came.
    fn spin(&self, now: Instant) -> bool {
        let until = now + SPIN;
        if self
            .timers
            .peek()
            .is_some_and(|Reverse((at, _))| *at <= until)
        {
            return false;
        }
        let mut i = 0u32;
        loop {
            for _ in 0..64 {
                if self.has_work() {
                    return true;
                }
                std::hint::spin_loop();
            }
            i += 1;
            if i.is_multiple_of(4) {
                // Let a producer sharing this core run.
                std::thread::yield_now();
            }
            let now = Instant::now();
            self.clock.tick(now);
            if now >= until {
                return false;
            }
        }
    }

    /// Whether an endpoint that wants events has one waiting, or a command came.
    fn has_work(&self) -> bool {
        !self.commands.is_empty()
            || self
                .tasks
                .iter()
                .flatten()
                .any(|t| t.wants_events() && t.src.has_entry())
    }

    /// Decides how long to sleep, after telling producers this worker sleeps.
    fn prepare_sleep(&mut self, now: Instant) -> Option<Duration> {
        let mut wants = 0u64;
        for t in self.tasks.iter().flatten() {
            if t.wants_events() {
                wants |= t.src.bit;
            }
        }
        self.wake.prepare_sleep_wanting(wants);
        if self.has_work() {
            self.wake.cancel_sleep();
            return Some(Duration::ZERO);
        }
        self.timers
            .peek()
            .map(|Reverse((at, _))| at.saturating_duration_since(now))
    }

    fn shutdown(&mut self, end: u64, now: Instant) {
        for slot in 0..self.tasks.len() {
            self.retire(slot, end, now);
        }
        self.full.store(0, Ordering::Release);
    }
}
