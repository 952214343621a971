//! The dispatcher: its handle, what it shares with the threads it runs, and its counters.
//!
//! The `Dispatcher` methods live one concern per file: [`builder`] starts the threads,
//! [`publish`] is the host's hot path, [`admin`] adds, removes, pauses and watches endpoints,
//! [`durable`] is the store's API (recovery, dead letters), and [`shutdown`] ends it all by a
//! deadline.
//!
//! `publish` runs on the host's thread and does only this: read the routing table (no lock),
//! compute the routing mask, apply the overflow policy of any endpoint that is full (one atomic
//! load when none is), claim a ring slot and write the event into it, and wake a worker only if
//! it sleeps and wants events. Everything else happens in the workers.

mod admin;
mod builder;
mod durable;
mod forget;
mod publish;
mod shutdown;

pub use builder::DispatcherBuilder;
use builder::PersisterHandle;
pub use shutdown::ShutdownReport;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwap;
use crossbeam_channel::Sender;
use parking_lot::Mutex;
use serde::Serialize;

use crate::stats::Counter;

use crate::engine::persist::Durable;
use crate::engine::ring::Ring;
use crate::engine::ring::sync::Arc as RingArc;
use crate::engine::routes::Routes;
use crate::engine::shared::Shared;
use crate::engine::source::Published;
use crate::engine::wake::Wake;
use crate::engine::worker::{CoarseClock, Command};

/// Identifies an endpoint within its [`Dispatcher`]. Ids are never reused by one dispatcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct EndpointId(pub(crate) u64);

impl fmt::Display for EndpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "endpoint#{}", self.0)
    }
}

/// Dispatcher-wide counters.
#[derive(Debug, Clone, Default, Serialize)]
#[non_exhaustive]
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
    /// Endpoints whose removal is under way (waiting for their worker, without this lock).
    removing: std::collections::BTreeSet<EndpointId>,
    /// Names of durable endpoints being forgotten (they cannot be added meanwhile).
    forgetting: std::collections::BTreeSet<String>,
}

struct Inner {
    ring: RingArc<Ring<Published>>,
    routes: ArcSwap<Routes>,
    /// Bits of endpoints whose worker-side backlog is at capacity (set and cleared by workers).
    full: Arc<AtomicU64>,
    /// At most the lowest `Shared::room_until` of the endpoints: while the ring's head is
    /// below it, no endpoint can be at its capacity without its bit in `full`, and `publish`
    /// looks no further (one load). Lowered when an endpoint is added, raised by `publish`.
    room_min: AtomicU64,
    /// The workers' coarse clock, for publish timestamps.
    clock: Arc<CoarseClock>,
    workers: Vec<WorkerHandle>,
    /// The durable log and its persistence thread, with a store.
    durable: Option<Arc<Durable>>,
    persister: Mutex<Option<PersisterHandle>>,
    /// The log reader thread (with a store), joined at shutdown after the workers.
    reader_thread: Mutex<Option<JoinHandle<()>>>,
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
impl Dispatcher {
    /// A builder with the defaults.
    pub fn builder() -> DispatcherBuilder {
        DispatcherBuilder::default()
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
}
