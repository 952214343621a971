//! A worker: one thread, one `mio::Poll`, and the endpoints it owns outright.
//!
//! It is the only driver of its endpoints' state machines (see `endpoint/` and `task.rs`):
//! it owns their sockets, their timers and the clock, and hands their log reads, lookups and
//! dead letters to the threads that do those. Each turn of the loop: apply commands (add,
//! remove, disable, answers from the log reader and the resolver, shutdown), let every
//! endpoint take what it can from the ring and start requests, handle due timers, then poll.
//! The poll does not wait while there is work; before it waits, the worker tells producers it
//! sleeps (and which endpoints want events), then looks at the ring once more, so an event
//! published meanwhile is either seen or wakes it (see `wake.rs`).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mio::{Events as MioEvents, Poll, Token};
use parking_lot::Mutex;

use crate::Error;

use super::EndpointId;
use super::dispatcher::WorkerHandle;
use super::endpoint::LogRead;
use super::ring::Ring;
use super::ring::sync::Arc as RingArc;
use super::source::{Events, Published};
use super::task::{Io, Services, Task};
use super::wake::Wake;

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

/// What the dispatcher, and the threads workers hand work to, ask of a worker.
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
    /// The log reader's answer to an endpoint's read.
    LogRead {
        /// Which endpoint asked.
        id: EndpointId,
        /// What was read.
        read: LogRead,
    },
    /// The resolver's answer to an endpoint's lookup.
    Resolved {
        /// Which endpoint asked.
        id: EndpointId,
        /// Its host's addresses, or why not.
        result: Result<Vec<SocketAddr>, Error>,
    },
    /// Count everything still held as dropped (`shutdown`) and exit. The ring is sealed at
    /// `end`: no event will ever be published past it.
    Shutdown {
        /// The sealed ring's head.
        end: u64,
    },
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
    services: Services,
    /// Its own commands, for the answers of the threads it hands work to.
    reply: Sender<Command>,
}

/// Starts worker `index`.
pub(crate) fn spawn(
    index: usize,
    ring: RingArc<Ring<Published>>,
    full: Arc<AtomicU64>,
    clock: Arc<CoarseClock>,
    services: Services,
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
        services,
        reply: tx.clone(),
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
        let mut events = MioEvents::with_capacity(256);
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
                self.with_task(slot, now, |t, io| t.on_io(conn, io));
            }
        }
    }

    /// Runs `f` on the task in `slot` (if any) as one step (panics contained, its actions
    /// carried out; see `task.rs`) and re-arms its timer.
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
            services: &self.services,
            reply: &self.reply,
            wake: &self.wake,
            full: &self.full,
        };
        let progress = task.step(&mut io, f);
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
            self.with_task(slot, now, |t, io| t.on_timer(io));
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
                        self.with_task(slot, now, |t, io| t.set_disabled(disabled, io));
                    }
                }
                Command::LogRead { id, read } => {
                    // An endpoint removed meanwhile does not need it.
                    if let Some(slot) = self.slot_of(id) {
                        self.with_task(slot, now, |t, io| t.on_log(read, io));
                    }
                }
                Command::Resolved { id, result } => {
                    if let Some(slot) = self.slot_of(id) {
                        self.with_task(slot, now, |t, io| t.on_resolved(result, io));
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
            services: &self.services,
            reply: &self.reply,
            wake: &self.wake,
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
                wants |= t.src.bit();
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
