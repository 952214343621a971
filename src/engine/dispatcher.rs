//! The dispatcher's public face: builder, handle, publish, endpoints, shutdown.
//!
//! `publish` runs on the host's thread and does only this: read the routing table (no lock),
//! compute the routing mask, apply the overflow policy of any endpoint that is full (one atomic
//! load when none is), claim a ring slot and write the event into it, and wake a worker only if
//! it sleeps and wants events. Everything else happens in the workers.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use crossbeam_channel::Sender;
use parking_lot::Mutex;
use serde::Serialize;

use crate::config::{Durability, EndpointConfig, MAX_DURATION, Overflow};
use crate::stats::{Counter, DropReason, EndpointSnapshot};
use crate::store::{DeadLetter, DeadLetterFilter, LogStore, Recovery, Store, StoreConfig};
use crate::{Error, Event, RawEvent, Sink};

use super::http_ep::DurableLink;
use super::persist::{Committed, Durable, Ticket, TicketCell};
use super::ring::sync::Arc as RingArc;
use super::ring::{Full, Ring};
use super::routes::{Ignore, Route, Routes};
use super::shared::Shared;
use super::wake::Wake;
use super::worker::{self, CoarseClock, Command, Published, Task};

/// Identifies an endpoint within its [`Dispatcher`]. Ids are never reused by one dispatcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct EndpointId(pub(crate) u64);

impl fmt::Display for EndpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "endpoint#{}", self.0)
    }
}

/// Builds a [`Dispatcher`].
#[derive(Default)]
pub struct DispatcherBuilder {
    workers: Option<usize>,
    ring_capacity: Option<usize>,
    publish_timeout: Option<Duration>,
    shutdown_timeout: Option<Duration>,
    store: Option<StoreChoice>,
}

enum StoreChoice {
    Config(StoreConfig),
    Open(Box<dyn Store>),
}

impl fmt::Debug for DispatcherBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DispatcherBuilder")
            .field("workers", &self.workers)
            .field("ring_capacity", &self.ring_capacity)
            .field("publish_timeout", &self.publish_timeout)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("store", &self.store.is_some())
            .finish()
    }
}

impl DispatcherBuilder {
    /// Worker threads (each one `mio` loop). Default: the available cores. 1 to 256.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n);
        self
    }

    /// Slots in the multicast ring (a power of two, 64 to 2^24). Default 4096.
    pub fn ring_capacity(mut self, n: usize) -> Self {
        self.ring_capacity = Some(n);
        self
    }

    /// How long `publish` may wait when the workers are behind by a whole ring (CPU
    /// back-pressure, not a slow endpoint). Default 1 s; then it returns [`Error::Timeout`].
    pub fn publish_timeout(mut self, d: Duration) -> Self {
        self.publish_timeout = Some(d);
        self
    }

    /// The deadline used by [`Sink::close`] and by `Drop`. Default 5 s.
    pub fn shutdown_timeout(mut self, d: Duration) -> Self {
        self.shutdown_timeout = Some(d);
        self
    }

    /// Keeps durable endpoints' events in the embedded log in `dir` (64 MiB segments, a
    /// 1 GiB quota); see [`store`](crate::store). Needed for
    /// [`Durability::Durable`] endpoints.
    pub fn data_dir(self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.store_config(StoreConfig::new(dir))
    }

    /// Like [`data_dir`](Self::data_dir), with every store setting.
    pub fn store_config(mut self, config: StoreConfig) -> Self {
        self.store = Some(StoreChoice::Config(config));
        self
    }

    /// Uses an open store (any [`Store`]) for durable endpoints.
    pub fn store(mut self, store: impl Store) -> Self {
        self.store = Some(StoreChoice::Open(Box::new(store)));
        self
    }

    /// Starts the workers (and, with a store, opens it, recovering what a crash left, and
    /// starts the persistence thread). Fails with [`Error::Config`] for a bad setting,
    /// [`Error::Storage`] if the store cannot be opened (or another process has it), or
    /// [`Error::Io`] if the OS refuses a thread or a poller.
    pub fn build(self) -> Result<Dispatcher, Error> {
        let workers = self
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let ring_capacity = self.ring_capacity.unwrap_or(4096);
        let publish_timeout = self.publish_timeout.unwrap_or(Duration::from_secs(1));
        let shutdown_timeout = self.shutdown_timeout.unwrap_or(Duration::from_secs(5));
        if !(1..=256).contains(&workers) {
            return Err(Error::config("workers", "must be 1 to 256"));
        }
        if !ring_capacity.is_power_of_two() || !(64..=1 << 24).contains(&ring_capacity) {
            return Err(Error::config(
                "ring_capacity",
                "must be a power of two from 64 to 16,777,216",
            ));
        }
        for (field, d) in [
            ("publish_timeout", publish_timeout),
            ("shutdown_timeout", shutdown_timeout),
        ] {
            if d > MAX_DURATION {
                return Err(Error::config(field, "is longer than a year"));
            }
        }
        let durable = match self.store {
            None => None,
            Some(StoreChoice::Open(s)) => Some(Arc::new(Durable::new(s))),
            Some(StoreChoice::Config(c)) => {
                Some(Arc::new(Durable::new(Box::new(LogStore::open(c)?))))
            }
        };
        let ring = RingArc::new(Ring::new(ring_capacity));
        let full = Arc::new(AtomicU64::new(0));
        let clock = Arc::new(CoarseClock::new());
        let mut handles = Vec::with_capacity(workers);
        for index in 0..workers {
            handles.push(worker::spawn(
                index,
                ring.clone(),
                full.clone(),
                clock.clone(),
            )?);
        }
        let persister = match &durable {
            None => None,
            Some(d) => Some(spawn_persister(d.clone())?),
        };
        let inner = Arc::new(Inner {
            ring,
            routes: ArcSwap::from_pointee(Routes::empty(workers)),
            full,
            clock,
            workers: handles,
            durable,
            persister: Mutex::new(persister.as_ref().map(|p| p.0.clone())),
            admin: Mutex::new(Admin {
                next_id: 1,
                free_bits: u64::MAX,
                endpoints: BTreeMap::new(),
                load: vec![0; workers],
                zombies: Vec::new(),
            }),
            closed: AtomicBool::new(false),
            report: Mutex::new(None),
            published: Counter::default(),
            unrouted: Counter::default(),
            ring_timeouts: Counter::default(),
            publish_timeout,
            shutdown_timeout,
        });
        if let Some((_, ready)) = persister {
            // The persistence thread publishes into the ring through a weak handle (the
            // dispatcher owns the thread, not the other way round).
            let _ = ready.send(Arc::downgrade(&inner));
        }
        Ok(Dispatcher { inner })
    }
}

type PersisterHandle = Arc<Mutex<Option<JoinHandle<()>>>>;

/// Starts the persistence thread; it waits for the dispatcher's weak handle on the channel.
fn spawn_persister(
    durable: Arc<Durable>,
) -> Result<(PersisterHandle, Sender<std::sync::Weak<Inner>>), Error> {
    let (tx, rx) = crossbeam_channel::bounded::<std::sync::Weak<Inner>>(1);
    let thread = std::thread::Builder::new()
        .name("hookwire-persist".into())
        .spawn(move || {
            let Ok(weak) = rx.recv() else {
                return;
            };
            durable.run(|committed| {
                weak.upgrade()
                    .is_some_and(|inner| inner.publish_committed(committed))
            });
        })?;
    Ok((Arc::new(Mutex::new(Some(thread))), tx))
}

/// Dispatcher-wide counters.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DispatcherStats {
    /// Events written into the ring (routed to at least one endpoint).
    pub published: u64,
    /// Events no endpoint wanted (no endpoint, or every filter said no).
    pub unrouted: u64,
    /// Publishes that timed out waiting for ring space.
    pub ring_timeouts: u64,
    /// Times a producer woke a sleeping worker.
    pub wakeups: u64,
}

/// What [`Dispatcher::shutdown`] did.
#[derive(Debug, Clone, Serialize)]
pub struct ShutdownReport {
    /// Whether everything accepted was delivered, dropped or dead-lettered before the deadline.
    pub drained: bool,
    /// Events that were still pending at the deadline (now counted as dropped, reason
    /// `shutdown`).
    pub undelivered: u64,
    /// Events of durable endpoints that were not delivered and stay in the log: the next
    /// dispatcher on the same data directory delivers them (they are not counted as dropped).
    /// A lower bound when an endpoint was stopped while reading its backlog from the log
    /// (records it had not read yet are not counted; `drained` is then false).
    pub kept: u64,
    /// Every endpoint's final snapshot.
    pub endpoints: Vec<EndpointSnapshot>,
}

/// A worker as the dispatcher sees it.
pub(crate) struct WorkerHandle {
    /// How producers wake it.
    pub wake: Arc<Wake>,
    /// Commands (add, remove, disable, shutdown).
    pub commands: Sender<Command>,
    /// The thread, until shutdown joins it.
    pub thread: Mutex<Option<JoinHandle<()>>>,
}

struct Admin {
    next_id: u64,
    /// Mask bits not in use.
    free_bits: u64,
    endpoints: BTreeMap<EndpointId, Arc<Shared>>,
    /// Endpoints per worker, to place new ones on the least loaded.
    load: Vec<usize>,
    /// Bits of removed endpoints whose worker had not let go by the removal's deadline, and
    /// how it will say it has.
    zombies: Vec<(u32, crossbeam_channel::Receiver<()>)>,
}

struct Inner {
    ring: RingArc<Ring<Published>>,
    routes: ArcSwap<Routes>,
    /// Bits of endpoints whose worker-side backlog is at capacity (set and cleared by workers).
    full: Arc<AtomicU64>,
    /// The workers' coarse clock, for publish timestamps.
    clock: Arc<CoarseClock>,
    workers: Vec<WorkerHandle>,
    /// The durable log and its persistence thread, with a store.
    durable: Option<Arc<Durable>>,
    persister: Mutex<Option<PersisterHandle>>,
    admin: Mutex<Admin>,
    closed: AtomicBool,
    report: Mutex<Option<ShutdownReport>>,
    published: Counter,
    unrouted: Counter,
    ring_timeouts: Counter,
    publish_timeout: Duration,
    shutdown_timeout: Duration,
}

/// Delivers events to webhook endpoints from per-core worker threads.
///
/// Cheap to share (`Arc<Dispatcher>` or `&Dispatcher`); every method takes `&self`. Dropping it
/// shuts it down with the builder's `shutdown_timeout`.
///
/// ```
/// use hookwire::engine::Dispatcher;
/// use hookwire::endpoint::EndpointConfig;
/// use hookwire::testkit::{Receiver, ReceiverConfig};
/// use hookwire::RawEvent;
/// use std::time::Duration;
///
/// # fn main() -> Result<(), hookwire::Error> {
/// let receiver = Receiver::start(ReceiverConfig::default()).expect("bind a loopback port");
/// let dispatcher = Dispatcher::builder().workers(1).build()?;
/// dispatcher.add_endpoint(EndpointConfig::new("audit", receiver.url()))?;
/// for i in 0..10 {
///     dispatcher.publish_raw(RawEvent::parse(format!(r#"{{"id":"e{i}"}}"#))?)?;
/// }
/// let report = dispatcher.shutdown(Duration::from_secs(5));
/// assert!(report.drained);
/// assert_eq!(report.endpoints[0].metrics.delivered, 10);
/// assert_eq!(receiver.stats().distinct, 10);
/// # Ok(()) }
/// ```
pub struct Dispatcher {
    inner: Arc<Inner>,
}

impl fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dispatcher")
            .field("workers", &self.inner.workers.len())
            .field("ring_capacity", &self.inner.ring.capacity())
            .field("stats", &self.stats())
            .finish()
    }
}

impl Inner {
    /// Writes `entry` into the ring for the endpoints in `mask` and wakes the workers that
    /// sleep and want it.
    fn enqueue(&self, entry: Published, mask: u64, routes: &Routes) -> Result<(), Error> {
        self.claim(entry, mask, routes)?;
        self.notify(routes, mask);
        Ok(())
    }

    /// Wakes the workers of the endpoints in `mask` that sleep and want events, after the
    /// entries for them are in the ring (Dekker with the workers' SeqCst stores).
    fn notify(&self, routes: &Routes, mask: u64) {
        if mask == 0 {
            return;
        }
        fence(Ordering::SeqCst);
        for (w, bits) in routes.worker_bits.iter().enumerate() {
            if bits & mask != 0 {
                self.workers[w].wake.notify_if_wants(mask);
            }
        }
    }

    /// The persistence thread's hand-off: committed events go into the ring for the durable
    /// endpoints added now, and their workers are woken once per group. It waits while the
    /// ring is full (the events are safe in the log); once the ring is sealed (shutdown), the
    /// rest stay in the log for the next start. Returns whether all of them were handled
    /// (false once sealed).
    fn publish_committed(&self, committed: Vec<Committed>) -> bool {
        // Pairs with the fence in `add`: see there. One table for the group is enough: the
        // protocol only needs it read after the commit point was stored.
        fence(Ordering::SeqCst);
        let routes = self.routes.load();
        let mut unannounced = 0u64;
        for c in committed {
            let mask = routes.bits_for(c.slots);
            if mask == 0 {
                continue;
            }
            let mut entry = Published {
                event: c.event,
                at: c.at,
                version: routes.version,
                seq: c.seq,
            };
            loop {
                match self.ring.try_publish(entry, mask) {
                    Ok(_) => break,
                    Err(Full { value, gating }) => {
                        if gating == super::ring::SEALED_GATING {
                            return false;
                        }
                        entry = value;
                        // Whoever waits for what is already in must not wait on the ring.
                        self.notify(&routes, std::mem::take(&mut unannounced));
                        if let Some(s) = routes.shared(gating as u32) {
                            self.workers[s.worker].wake.wake();
                        }
                        std::thread::sleep(Duration::from_micros(20));
                    }
                }
            }
            unannounced |= mask;
        }
        self.notify(&routes, unannounced);
        true
    }

    /// Writes `entry` into the ring, waiting (up to `publish_timeout`) while a worker is a
    /// whole ring behind; wakes that worker.
    fn claim(&self, mut entry: Published, mask: u64, routes: &Routes) -> Result<(), Error> {
        let inner = self;
        let mut deadline = None;
        let mut spins = 0u32;
        loop {
            match inner.ring.try_publish(entry, mask) {
                Ok(pos) => {
                    // Every eighth of a ring, look for an endpoint lagging more than half a
                    // ring behind and wake its worker, so it copies that backlog out before
                    // the ring fills up and producers have to wait.
                    let step = (inner.ring.capacity() as u64 / 8).max(1);
                    if pos.is_multiple_of(step) {
                        self.wake_laggard(routes, inner.ring.capacity() as u64 / 2);
                    }
                    return Ok(());
                }
                Err(Full { value, gating }) => {
                    if inner.closed.load(Ordering::Relaxed) {
                        return Err(Error::Closed);
                    }
                    entry = value;
                    if let Some(s) = routes.shared(gating as u32) {
                        inner.workers[s.worker].wake.wake();
                    } else {
                        for w in &inner.workers {
                            w.wake.wake();
                        }
                    }
                    let now = Instant::now();
                    let until = *deadline.get_or_insert(now + inner.publish_timeout);
                    if now >= until {
                        inner.ring_timeouts.inc();
                        return Err(Error::Timeout {
                            waiting_for: "ring space (the workers are behind)",
                            after: inner.publish_timeout,
                        });
                    }
                    spins += 1;
                    if spins < 64 {
                        std::hint::spin_loop();
                    } else if spins < 128 {
                        std::thread::yield_now();
                    } else {
                        std::thread::sleep(Duration::from_micros(20));
                    }
                }
            }
        }
    }

    fn wake_laggard(&self, routes: &Routes, limit: u64) {
        let inner = self;
        if let Some((pos, index)) = inner.ring.min_position()
            && inner.ring.head().saturating_sub(pos) > limit
            && let Some(s) = routes.shared(index as u32)
        {
            inner.workers[s.worker].wake.wake();
        }
    }
}

impl Dispatcher {
    /// A builder with the defaults.
    pub fn builder() -> DispatcherBuilder {
        DispatcherBuilder::default()
    }

    /// Adds a webhook endpoint; it receives events published from now on. Fails with
    /// [`Error::Config`] naming the bad field (the URL is parsed and its host resolved here,
    /// on the caller's thread), or [`Error::Full`] when 64 endpoints are already in use.
    pub fn add_endpoint(&self, config: EndpointConfig) -> Result<EndpointId, Error> {
        let secrets = config.validate()?;
        let prepared = super::http_ep::Prepared::new(&config, secrets)?;
        let url = crate::config::redact_url(&config.url);
        let ignore = Ignore {
            actions: config.ignored_actions.clone().into(),
            media_types: config.ignored_media_types.clone().into(),
        };
        self.add(config, url, ignore, |shared, consumer, since, link| {
            Task::http(shared, consumer, since, prepared, link)
        })
    }

    /// Adds an in-process consumer: `f` runs on the owning worker's thread for each event, in
    /// publish order, and must not block. The event is lent in place (no copy, no clone). A
    /// panic in `f` is caught and counted as a drop (`sink_error`).
    pub fn add_consumer<F>(&self, name: &str, f: F) -> Result<EndpointId, Error>
    where
        F: FnMut(&RawEvent) + Send + 'static,
    {
        let mut config = EndpointConfig::new(name, format!("local:{name}"));
        config.overflow = Overflow::Block { timeout: None };
        config.validate()?;
        let url = config.url.clone();
        let f: Box<dyn FnMut(&RawEvent) + Send> = Box::new(f);
        self.add(
            config,
            url,
            Ignore::default(),
            |shared, consumer, since, _| Task::local(shared, consumer, since, f),
        )
    }

    fn add(
        &self,
        config: EndpointConfig,
        url: String,
        ignore: Ignore,
        task: impl FnOnce(
            Arc<Shared>,
            super::ring::Consumer<Published>,
            u64,
            Option<DurableLink>,
        ) -> Task,
    ) -> Result<EndpointId, Error> {
        let inner = &self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let durable = match (config.durability, &inner.durable) {
            (Durability::Memory, _) => None,
            (Durability::Durable, Some(d)) => Some(d),
            (Durability::Durable, None) => {
                return Err(Error::config(
                    "durability",
                    "a durable endpoint needs a dispatcher with a store \
                     (DispatcherBuilder::data_dir)",
                ));
            }
        };
        let mut admin = inner.admin.lock();
        if admin.endpoints.values().any(|s| s.name == config.name) {
            return Err(Error::config(
                "name",
                format!("{:?} is already in use", config.name),
            ));
        }
        let admin = &mut *admin;
        let free_bits = &mut admin.free_bits;
        admin.zombies.retain(|(bit, done)| match done.try_recv() {
            Err(crossbeam_channel::TryRecvError::Empty) => true,
            _ => {
                *free_bits |= 1 << bit;
                false
            }
        });
        if admin.free_bits == 0 {
            return Err(Error::Full { capacity: 64 });
        }
        let bit = admin.free_bits.trailing_zeros();
        let worker = (0..admin.load.len())
            .min_by_key(|&w| admin.load[w])
            .unwrap_or(0);
        let id = EndpointId(admin.next_id);
        let shared = Arc::new(Shared::new(id, bit, worker, &config, url));
        let link = match durable {
            None => None,
            Some(d) => {
                let (slot, acked, counted_from) = d.join(&shared)?;
                let _ = shared.slot.set(slot);
                Some(DurableLink::new(d.clone(), slot, acked, counted_from))
            }
        };
        let leave = |e: Error| {
            if let Some(d) = durable {
                d.leave(&shared);
            }
            e
        };
        let consumer = Ring::register(&inner.ring, bit as usize).map_err(leave)?;
        let routes = inner.routes.load_full();
        let since = routes.version + 1;
        // The worker must own the endpoint before producers route to it.
        inner.workers[worker]
            .commands
            .send(Command::Add(Box::new(task(
                shared.clone(),
                consumer,
                since,
                link,
            ))))
            .map_err(|_| leave(Error::Closed))?;
        inner.workers[worker].wake.wake();
        inner.routes.store(Arc::new(routes.with(Route {
            shared: shared.clone(),
            ignore,
        })));
        // Pairs with the fence in `publish_committed`: either the persistence thread sees
        // this table (and puts what it commits into the ring for this endpoint), or the
        // endpoint, reading the log, sees what it committed before it stops reading.
        fence(Ordering::SeqCst);
        shared.routed.store(true, Ordering::Release);
        // A durable endpoint that looked before it was routed waits for this to stop reading
        // the log.
        inner.workers[worker].wake.wake();
        admin.next_id += 1;
        admin.free_bits &= !(1 << bit);
        admin.load[worker] += 1;
        admin.endpoints.insert(id, shared);
        Ok(id)
    }

    /// Removes an endpoint: it takes no new events, delivers what it holds within `timeout`
    /// (the rest is counted as dropped, `shutdown`), and returns its final snapshot. An event
    /// published while the endpoint is being removed may or may not reach it.
    pub fn remove_endpoint(
        &self,
        id: EndpointId,
        timeout: Duration,
    ) -> Result<EndpointSnapshot, Error> {
        let inner = &self.inner;
        let mut admin = inner.admin.lock();
        let shared = admin
            .endpoints
            .get(&id)
            .cloned()
            .ok_or_else(|| Error::config("id", format!("no {id} in this dispatcher")))?;
        let routes = inner.routes.load_full();
        inner.routes.store(Arc::new(routes.without(shared.bit)));
        inner.full.fetch_and(!(1 << shared.bit), Ordering::AcqRel);
        let (done, wait) = crossbeam_channel::bounded(1);
        let deadline = Instant::now() + timeout.min(MAX_DURATION);
        let w = &inner.workers[shared.worker];
        if w.commands
            .send(Command::Remove { id, deadline, done })
            .is_ok()
        {
            w.wake.wake();
            // The worker answers by the deadline (plus a margin for one loop turn).
            let margin = timeout
                .min(MAX_DURATION)
                .saturating_add(Duration::from_secs(1));
            if wait.recv_timeout(margin).is_err() {
                // Its worker still holds the cursor: the bit is freed once it lets go.
                admin.zombies.push((shared.bit, wait));
                admin.load[shared.worker] -= 1;
                admin.endpoints.remove(&id);
                return Ok(self.snap(&shared));
            }
        }
        admin.free_bits |= 1 << shared.bit;
        admin.load[shared.worker] -= 1;
        admin.endpoints.remove(&id);
        Ok(shared.snapshot(0))
    }

    /// Pauses delivery to an endpoint; events keep queueing (within its capacity).
    pub fn disable(&self, id: EndpointId) -> Result<(), Error> {
        self.set_disabled(id, true)
    }

    /// Resumes delivery to an endpoint (also after a 410 Gone, or after it was disabled for
    /// failing too long). The first request is a probe.
    pub fn enable(&self, id: EndpointId) -> Result<(), Error> {
        self.set_disabled(id, false)
    }

    fn set_disabled(&self, id: EndpointId, disabled: bool) -> Result<(), Error> {
        let admin = self.inner.admin.lock();
        let shared = admin
            .endpoints
            .get(&id)
            .ok_or_else(|| Error::config("id", format!("no {id} in this dispatcher")))?;
        let w = &self.inner.workers[shared.worker];
        w.commands
            .send(Command::SetDisabled { id, disabled })
            .map_err(|_| Error::Closed)?;
        w.wake.wake();
        Ok(())
    }

    /// Encodes `event` once (`serde_json`, on this thread) and publishes it. See
    /// [`publish_raw`](Self::publish_raw) for what can go wrong.
    pub fn publish<E: Event>(&self, event: &E) -> Result<(), Error> {
        self.publish_raw(RawEvent::encode(event)?)
    }

    /// Publishes an already-encoded event; its bytes are shared by every endpoint it reaches.
    /// For durable endpoints it is queued for the log's next group commit (and delivered once
    /// committed); this call does not wait for the commit (see
    /// [`publish_durable`](Self::publish_durable)).
    ///
    /// Errors: [`Error::Closed`] after shutdown; [`Error::Full`] when every endpoint that
    /// wanted it is full with policy `Reject`; [`Error::Timeout`] when the wait for a `Block`
    /// endpoint, for ring space, or for room in the log's intake ran out; [`Error::Quota`]
    /// when the durable store is full; [`Error::Broadcast`] when some endpoints took it and
    /// others refused. Each refusal is counted by its endpoint.
    pub fn publish_raw(&self, event: RawEvent) -> Result<(), Error> {
        self.publish_inner(event, false).map(|_| ())
    }

    /// Publishes like [`publish_raw`](Self::publish_raw) and returns a [`Ticket`] that
    /// completes once the event is in the durable log (at once if no durable endpoint wanted
    /// it). Holding many tickets and waiting on the last is how a producer gets group-commit
    /// throughput with a durability guarantee.
    pub fn publish_with_ticket(&self, event: RawEvent) -> Result<Ticket, Error> {
        let cell = self.publish_inner(event, true)?;
        Ok(Ticket {
            cell,
            durable: self.inner.durable.clone(),
        })
    }

    /// Publishes and waits until the event is in the durable log: once this returns
    /// `Ok(Some(seq))`, a crash no longer loses it. `Ok(None)` means no durable endpoint
    /// wanted it. Waits at most the publish timeout or 30 s, whichever is longer.
    pub fn publish_durable(&self, event: RawEvent) -> Result<Option<u64>, Error> {
        let ticket = self.publish_with_ticket(event)?;
        ticket.wait(self.inner.publish_timeout.max(Duration::from_secs(30)))
    }

    fn publish_inner(
        &self,
        event: RawEvent,
        want_ticket: bool,
    ) -> Result<Option<Arc<TicketCell>>, Error> {
        let inner = &*self.inner;
        if inner.closed.load(Ordering::Relaxed) {
            return Err(Error::Closed);
        }
        let routes = inner.routes.load();
        let mut mask = routes.mask_for(&event);
        if mask == 0 {
            inner.unrouted.inc();
            return Ok(None);
        }
        let wanted = mask;
        let mut first_refusal = None;
        let full = inner.full.load(Ordering::Acquire) & mask;
        if full != 0 {
            mask &= !self.overflow(&routes, full, &mut first_refusal);
        }
        let mut ticket = None;
        if mask != 0 {
            let at = self.timestamp(&routes, mask);
            let durable_bits = mask & routes.durable;
            let memory_bits = mask & !routes.durable;
            let mut event = Some(event);
            if durable_bits != 0
                && let Some(d) = &inner.durable
            {
                let ev = if memory_bits != 0 {
                    event.clone()
                } else {
                    event.take()
                };
                let slots = routes.slots_for(durable_bits);
                match ev.map(|ev| d.submit(ev, slots, at, want_ticket, inner.publish_timeout)) {
                    Some(Ok(t)) => ticket = t,
                    Some(Err(e)) => {
                        self.count_refusal(&routes, durable_bits, &e);
                        mask &= !durable_bits;
                        first_refusal.get_or_insert(e);
                    }
                    None => {}
                }
            }
            if memory_bits != 0
                && let Some(event) = event
            {
                let entry = Published {
                    event,
                    at,
                    version: routes.version,
                    seq: 0,
                };
                if let Err(e) = inner.enqueue(entry, memory_bits, &routes) {
                    if mask & routes.durable == 0 {
                        return Err(e);
                    }
                    // The durable endpoints have it: say so, rather than invite a retry.
                    mask &= !memory_bits;
                    first_refusal.get_or_insert(e);
                }
            }
            if mask != 0 {
                inner.published.inc();
            }
        }
        match first_refusal {
            None => Ok(ticket),
            Some(e) if mask == 0 => Err(e),
            Some(e) => Err(Error::Broadcast {
                failed: (wanted & !mask).count_ones() as usize,
                total: wanted.count_ones() as usize,
                first: Box::new(e),
            }),
        }
    }

    /// Counts a refusal by the durable log on each endpoint in `bits`.
    fn count_refusal(&self, routes: &Routes, bits: u64, e: &Error) {
        let mut b = bits;
        while b != 0 {
            let bit = b.trailing_zeros();
            b &= b - 1;
            let Some(s) = routes.shared(bit) else {
                continue;
            };
            match e {
                Error::Quota { .. } => s.dropped.inc(DropReason::Quota),
                Error::Timeout { .. } => s.dropped.inc(DropReason::BlockTimeout),
                Error::Closed => {}
                _ => {
                    // Accepted, then lost to a failed store.
                    s.taken.inc();
                    s.dropped.inc(DropReason::SinkError);
                }
            }
        }
    }

    /// When the event was published: the workers' coarse clock if every worker it goes to is
    /// awake (so the clock is fresh to within a loop turn), else the real clock.
    #[inline]
    fn timestamp(&self, routes: &Routes, mask: u64) -> Instant {
        let inner = &*self.inner;
        let awake = routes
            .worker_bits
            .iter()
            .zip(&inner.workers)
            .all(|(bits, w)| bits & mask == 0 || !w.wake.is_sleeping());
        if awake {
            inner.clock.now()
        } else {
            Instant::now()
        }
    }

    /// Applies the overflow policy of the full endpoints in `full`; returns the bits that
    /// refused the event (each counted by its endpoint).
    fn overflow(&self, routes: &Routes, full: u64, first: &mut Option<Error>) -> u64 {
        let mut refused = 0;
        let mut bits = full;
        while bits != 0 {
            let bit = bits.trailing_zeros();
            bits &= bits - 1;
            let Some(shared) = routes.shared(bit) else {
                continue;
            };
            let reason = match shared.overflow {
                // Durable endpoints never set their "full" bit: their backlog is on disk.
                Overflow::DropOldest | Overflow::Spill => continue,
                Overflow::DropNewest => DropReason::Newest,
                Overflow::Reject => {
                    first.get_or_insert(Error::Full {
                        capacity: shared.view.capacity,
                    });
                    DropReason::Rejected
                }
                Overflow::Block { timeout } => {
                    let limit = timeout.unwrap_or(self.inner.publish_timeout);
                    if self.wait_not_full(bit, limit) {
                        continue;
                    }
                    first.get_or_insert(Error::Timeout {
                        waiting_for: "room in a full endpoint",
                        after: limit,
                    });
                    DropReason::BlockTimeout
                }
            };
            shared.dropped.inc(reason);
            refused |= 1 << bit;
        }
        refused
    }

    fn wait_not_full(&self, bit: u32, limit: Duration) -> bool {
        let deadline = Instant::now().checked_add(limit);
        let mut spins = 0u32;
        while self.inner.full.load(Ordering::Acquire) & (1 << bit) != 0 {
            if self.inner.closed.load(Ordering::Relaxed)
                || deadline.is_some_and(|d| Instant::now() >= d)
            {
                return false;
            }
            spins += 1;
            if spins < 64 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
        true
    }

    /// A snapshot of every endpoint, in the order they were added.
    pub fn snapshot(&self) -> Vec<EndpointSnapshot> {
        let admin = self.inner.admin.lock();
        admin.endpoints.values().map(|s| self.snap(s)).collect()
    }

    /// A snapshot of one endpoint.
    pub fn endpoint_snapshot(&self, id: EndpointId) -> Option<EndpointSnapshot> {
        self.inner
            .admin
            .lock()
            .endpoints
            .get(&id)
            .map(|s| self.snap(s))
    }

    fn snap(&self, s: &Shared) -> EndpointSnapshot {
        let ring = &self.inner.ring;
        let unread = ring
            .position_of(s.bit as usize)
            .map_or(0, |p| ring.head().saturating_sub(p));
        s.snapshot(unread)
    }

    /// Dispatcher-wide counters.
    pub fn stats(&self) -> DispatcherStats {
        let inner = &self.inner;
        DispatcherStats {
            published: inner.published.get(),
            unrouted: inner.unrouted.get(),
            ring_timeouts: inner.ring_timeouts.get(),
            wakeups: inner.workers.iter().map(|w| w.wake.wakes()).sum(),
        }
    }

    /// Waits until every event published before the call has its fate (taken by its
    /// endpoints, and nothing pending anywhere; durable events committed, and durable
    /// endpoints done reading the log), or `timeout` passes. Returns whether it got there.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout.min(MAX_DURATION);
        let submitted = self.inner.durable.as_ref().map_or(0, |d| d.submitted());
        let head = self.inner.ring.head();
        let mut pause = Duration::from_micros(50);
        loop {
            if self.is_idle(head, submitted) {
                return true;
            }
            // A worker none of whose endpoints wanted the recent events sleeps with its
            // cursors behind; a turn of its loop moves them past what is not theirs.
            for w in &self.inner.workers {
                w.wake.wake();
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            std::thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(Duration::from_millis(5));
        }
    }

    fn is_idle(&self, head: u64, submitted: u64) -> bool {
        let persisted = self
            .inner
            .durable
            .as_ref()
            .is_none_or(|d| d.settled_through(submitted));
        // Committed events go into the ring after the commit, so look at the head again.
        let head = if self.inner.durable.is_some() {
            self.inner.ring.head().max(head)
        } else {
            head
        };
        let ring_done = self
            .inner
            .ring
            .min_position()
            .is_none_or(|(pos, _)| pos >= head);
        persisted
            && ring_done
            && self
                .inner
                .admin
                .lock()
                .endpoints
                .values()
                .all(|s| s.pending() == 0 && !s.disk.load(Ordering::Acquire))
    }

    /// What opening the durable store found and repaired (`None` without a store).
    pub fn recovery(&self) -> Option<Recovery> {
        self.inner.durable.as_ref().map(|d| d.recovery.clone())
    }

    /// The dead letters of durable endpoints that `filter` selects, oldest first.
    pub fn dead_letters(&self, filter: &DeadLetterFilter) -> Result<Vec<DeadLetter>, Error> {
        self.store()?.store()?.dead_letters(filter)
    }

    /// Re-queues the dead letters `filter` selects: each event is published again to its
    /// endpoint only (a new sequence number; the same event, so the same `webhook-id`),
    /// and removed from the dead letters once it is committed. A crash in between replays it
    /// twice, never loses it. Dead letters of endpoints the store does not know are left.
    /// Returns how many were re-queued.
    pub fn replay_dead_letters(&self, filter: &DeadLetterFilter) -> Result<u64, Error> {
        let d = self.store()?;
        let (letters, slots) = {
            let store = d.store()?;
            let slots: std::collections::HashMap<String, u8> = store
                .endpoints()
                .into_iter()
                .map(|(name, st)| (name, st.slot))
                .collect();
            (store.dead_letters(filter)?, slots)
        };
        let letters: Vec<DeadLetter> = letters
            .into_iter()
            .filter(|l| slots.contains_key(&l.endpoint))
            .collect();
        let mut tickets = Vec::with_capacity(letters.len());
        for l in &letters {
            let slot = slots.get(&l.endpoint).copied().unwrap_or(0);
            let cell = d.submit(
                l.event.clone(),
                1 << slot,
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
        d.store()?
            .take_dead_letters(&DeadLetterFilter::exactly(&letters))?;
        Ok(letters.len() as u64)
    }

    fn store(&self) -> Result<&Arc<Durable>, Error> {
        self.inner.durable.as_ref().ok_or_else(|| {
            Error::config(
                "store",
                "this dispatcher has no store (DispatcherBuilder::data_dir)",
            )
        })
    }

    /// Stops taking events, delivers what it can within `timeout`, then stops the workers.
    /// What is still pending at the deadline (requests on the wire included) is counted as
    /// dropped (`shutdown`) and reported, except for durable endpoints: their events stay in
    /// the log (`kept`) for the next start. Never hangs; idempotent (a second call returns
    /// the first call's report).
    pub fn shutdown(&self, timeout: Duration) -> ShutdownReport {
        let inner = &*self.inner;
        let mut report = inner.report.lock();
        if let Some(r) = report.as_ref() {
            return r.clone();
        }
        let timeout = timeout.min(MAX_DURATION);
        let deadline = Instant::now() + timeout;
        inner.closed.store(true, Ordering::SeqCst);
        // Durable events queued before the close are committed and put in the ring first.
        if let Some(d) = &inner.durable {
            let submitted = d.submitted();
            while !d.settled_through(submitted) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        // No claim succeeds after the seal, so the workers can drain the ring to its end.
        let end = inner.ring.seal();
        let before: u64 = self.shutdown_drops();
        let drained = self.wait_idle(deadline.saturating_duration_since(Instant::now()));
        for w in &inner.workers {
            if w.commands.send(Command::Shutdown { end }).is_ok() {
                w.wake.wake();
            }
        }
        for w in &inner.workers {
            if let Some(t) = w.thread.lock().take() {
                // A worker exits promptly after Shutdown (it only counts what is left); it
                // cannot block, so joining it cannot hang.
                let _ = t.join();
            }
        }
        // The persistence thread finishes what is queued, saves the cursors, and stops.
        if let Some(d) = &inner.durable {
            d.stop();
            if let Some(p) = inner.persister.lock().take()
                && let Some(t) = p.lock().take()
            {
                let _ = t.join();
            }
            d.close();
        }
        let endpoints = self.snapshot();
        let undelivered = self.shutdown_drops() - before;
        let kept = {
            let admin = inner.admin.lock();
            admin
                .endpoints
                .values()
                .filter(|s| s.is_durable())
                .map(|s| s.pending())
                .sum()
        };
        // A durable endpoint stopped while reading the log leaves records not counted in `kept`.
        let reading = inner
            .admin
            .lock()
            .endpoints
            .values()
            .any(|s| s.disk.load(Ordering::Acquire));
        let r = ShutdownReport {
            drained: drained && undelivered == 0 && kept == 0 && !reading,
            undelivered,
            kept,
            endpoints,
        };
        *report = Some(r.clone());
        r
    }

    fn shutdown_drops(&self) -> u64 {
        let admin = self.inner.admin.lock();
        admin
            .endpoints
            .values()
            .map(|s| s.dropped.get(DropReason::Shutdown))
            .sum()
    }
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        self.shutdown(self.inner.shutdown_timeout);
    }
}

impl<E: Event> Sink<E> for Dispatcher {
    fn write(&self, event: E) -> Result<(), Error> {
        self.publish(&event)
    }

    fn close(&self) -> Result<(), Error> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let report = self.shutdown(self.inner.shutdown_timeout);
        if report.undelivered == 0 {
            Ok(())
        } else {
            Err(Error::Undelivered {
                count: report.undelivered,
            })
        }
    }
}
