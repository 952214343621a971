//! Building a dispatcher: checking the settings, opening the store, starting the threads.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwap;
use crossbeam_channel::Sender;
use parking_lot::Mutex;

use crate::Error;
use crate::config::MAX_DURATION;
use crate::stats::Counter;
use crate::store::{LogStore, Store, StoreConfig};

use super::{Admin, Dispatcher, Inner};
use crate::engine::lease::LeaseBoard;
use crate::engine::persist::Durable;
use crate::engine::ring::Ring;
use crate::engine::ring::sync::Arc as RingArc;
use crate::engine::routes::Routes;
use crate::engine::task::Services;
use crate::engine::worker::{self, CoarseClock};
use crate::engine::{reader, resolver};

/// Builds a [`Dispatcher`].
#[derive(Default)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct DispatcherBuilder {
    workers: Option<usize>,
    ring_capacity: Option<usize>,
    publish_timeout: Option<Duration>,
    shutdown_timeout: Option<Duration>,
    store: Option<StoreChoice>,
    leases: bool,
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
            .field("leases", &self.leases)
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

    /// The deadline used by [`Sink::close`](crate::Sink::close) and by `Drop`. Default 5 s.
    pub fn shutdown_timeout(mut self, d: Duration) -> Self {
        self.shutdown_timeout = Some(d);
        self
    }

    /// Keeps durable endpoints' events in the embedded log in `dir` (64 MiB segments, a
    /// 1 GiB quota); see [`store`](crate::store). Needed for
    /// [`Durability::Durable`](crate::config::Durability::Durable) endpoints.
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

    /// With a store shared by several processes ([`Store::shared`], a PostgreSQL store): each
    /// durable endpoint delivers only while this process holds its lease, as granted on the
    /// [`LeaseBoard`](crate::engine::LeaseBoard) ([`Dispatcher::lease_board`]) by a lease
    /// manager (`hookwire::store::pg::LeaseManager`). Without it, every process that shares
    /// the store would deliver every endpoint. Default off.
    pub fn leases(mut self, on: bool) -> Self {
        self.leases = on;
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
            Some(StoreChoice::Open(s)) => Some(Durable::new(s)),
            Some(StoreChoice::Config(c)) => Some(Durable::new(Box::new(LogStore::open(c)?))),
        };
        if self.leases && durable.is_none() {
            return Err(Error::config(
                "leases",
                "leases need a store shared with other processes (DispatcherBuilder::store)",
            ));
        }
        let durable = durable.map(|mut d| {
            if self.leases {
                d.board = Some(Arc::new(LeaseBoard::new(d.marks.clone())));
            }
            Arc::new(d)
        });
        let ring = RingArc::new(Ring::new(ring_capacity));
        let full = Arc::new(AtomicU64::new(0));
        let clock = Arc::new(CoarseClock::new());
        let (reader, reader_thread) = match &durable {
            None => (None, None),
            Some(d) => {
                let (tx, thread) = reader::spawn(d.clone())?;
                (Some(tx), Some(thread))
            }
        };
        let services = Services {
            reader,
            resolver: Some(resolver::spawn()?),
            durable: durable.clone(),
        };
        let mut handles = Vec::with_capacity(workers);
        for index in 0..workers {
            handles.push(worker::spawn(
                index,
                ring.clone(),
                full.clone(),
                clock.clone(),
                services.clone(),
            )?);
        }
        if let Some(board) = durable.as_ref().and_then(|d| d.board.as_ref()) {
            board.set_wakes(handles.iter().map(|h| h.wake.clone()).collect());
        }
        // The workers hold the only senders: once they exit, the reader thread ends.
        drop(services);
        let persister = match &durable {
            None => None,
            Some(d) => Some(spawn_persister(d.clone())?),
        };
        let inner = Arc::new(Inner {
            ring,
            routes: ArcSwap::from_pointee(Routes::empty(workers)),
            full,
            room_min: std::sync::atomic::AtomicU64::new(u64::MAX),
            clock,
            workers: handles,
            durable,
            persister: Mutex::new(persister.as_ref().map(|p| p.0.clone())),
            reader_thread: Mutex::new(reader_thread),
            admin: Mutex::new(Admin {
                next_id: 1,
                free_bits: u64::MAX,
                endpoints: BTreeMap::new(),
                load: vec![0; workers],
                zombies: Vec::new(),
                removing: Default::default(),
                forgetting: Default::default(),
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

pub(super) type PersisterHandle = Arc<Mutex<Option<JoinHandle<()>>>>;

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
