//! A worker never waits on the disk, and no lock is held across a wait: each test stalls one
//! part on purpose (a log read, a cursor save, a dead-letter listing, a removal) and checks
//! that everything else goes on. The stalls are gates a test opens; the time bounds are
//! liveness checks (seconds, where the work takes milliseconds), not measurements.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use hookwire::config::EndpointConfig;
use hookwire::engine::Dispatcher;
use hookwire::sink::from_fn;
use hookwire::store::{
    DeadLetter, DeadLetterFilter, DeadLetterStore, EndpointState, LogStore, Record, Recovery,
    Store, StoreConfig, StoreReader,
};
use hookwire::testkit::{Receiver, ReceiverConfig, Reply};
use hookwire::{Error, RawEvent};
use parking_lot::{Condvar, Mutex};

use common::{TempDir, event};

/// A gate: closed until opened, and every wait on it gives up after 20 s so that a broken
/// build fails instead of hanging.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    changed: Condvar,
    waiting: Mutex<u32>,
}

impl Gate {
    fn wait(&self) {
        *self.waiting.lock() += 1;
        let mut open = self.open.lock();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !*open && Instant::now() < deadline {
            self.changed.wait_until(&mut open, deadline);
        }
    }
    fn open(&self) {
        *self.open.lock() = true;
        self.changed.notify_all();
    }
    fn has_waiter(&self) -> bool {
        *self.waiting.lock() > 0
    }
}

/// Which of a store's operations wait at the gate.
#[derive(Clone, Copy, Default)]
struct Stall {
    reads: bool,
    cursor_saves: bool,
    dead_letter_lists: bool,
}

/// A `LogStore` whose chosen operations wait at a gate.
struct GatedStore {
    inner: LogStore,
    gate: Arc<Gate>,
    stall: Arc<Mutex<Stall>>,
}

struct GatedReader {
    inner: Box<dyn StoreReader>,
    gate: Arc<Gate>,
    stall: Arc<Mutex<Stall>>,
}

impl StoreReader for GatedReader {
    fn read(
        &mut self,
        from: u64,
        until: u64,
        mask: u64,
        max: usize,
        f: &mut dyn FnMut(Record<'_>),
    ) -> Result<u64, Error> {
        if self.stall.lock().reads {
            self.gate.wait();
        }
        self.inner.read(from, until, mask, max, f)
    }
    fn damaged(&self) -> &[hookwire::store::Damage] {
        self.inner.damaged()
    }
}

#[derive(Debug)]
struct GatedLetters {
    inner: Arc<dyn DeadLetterStore>,
    gate: Arc<Gate>,
    stall: Arc<Mutex<Stall>>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gate")
    }
}

impl std::fmt::Debug for Stall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Stall")
    }
}

impl DeadLetterStore for GatedLetters {
    fn append(&self, letters: &[DeadLetter]) -> Result<(), Error> {
        self.inner.append(letters)
    }
    fn list(&self, filter: &DeadLetterFilter) -> Result<Vec<DeadLetter>, Error> {
        if self.stall.lock().dead_letter_lists {
            self.gate.wait();
        }
        self.inner.list(filter)
    }
    fn scan(
        &self,
        filter: &DeadLetterFilter,
        f: &mut dyn FnMut(DeadLetter) -> Result<(), Error>,
    ) -> Result<u64, Error> {
        self.inner.scan(filter, f)
    }
    fn take_each(
        &self,
        select: &dyn Fn(&DeadLetter) -> bool,
        each: &mut dyn FnMut(Vec<DeadLetter>) -> Result<(), Error>,
    ) -> Result<u64, Error> {
        self.inner.take_each(select, each)
    }
}

impl Store for GatedStore {
    fn append(&mut self, mask: u64, time_ms: u64, payload: &[u8]) -> Result<u64, Error> {
        self.inner.append(mask, time_ms, payload)
    }
    fn commit(&mut self) -> Result<u64, Error> {
        self.inner.commit()
    }
    fn durable_through(&self) -> u64 {
        self.inner.durable_through()
    }
    fn next_seq(&self) -> u64 {
        self.inner.next_seq()
    }
    fn first_seq(&self) -> u64 {
        self.inner.first_seq()
    }
    fn used_bytes(&self) -> u64 {
        self.inner.used_bytes()
    }
    fn quota_bytes(&self) -> u64 {
        self.inner.quota_bytes()
    }
    fn reader(&self) -> Result<Box<dyn StoreReader>, Error> {
        Ok(Box::new(GatedReader {
            inner: self.inner.reader()?,
            gate: self.gate.clone(),
            stall: self.stall.clone(),
        }))
    }
    fn endpoint(&mut self, name: &str) -> Result<EndpointState, Error> {
        self.inner.endpoint(name)
    }
    fn forget(&mut self, name: &str) -> Result<Option<EndpointState>, Error> {
        self.inner.forget(name)
    }
    fn endpoints(&self) -> Vec<(String, EndpointState)> {
        self.inner.endpoints()
    }
    fn save_cursors(&mut self, acked: &[(u8, u64)]) -> Result<(), Error> {
        if self.stall.lock().cursor_saves {
            self.gate.wait();
        }
        self.inner.save_cursors(acked)
    }
    fn dead_letters(&self) -> Arc<dyn DeadLetterStore> {
        Arc::new(GatedLetters {
            inner: self.inner.dead_letters(),
            gate: self.gate.clone(),
            stall: self.stall.clone(),
        })
    }
    fn recovery(&self) -> &Recovery {
        self.inner.recovery()
    }
}

struct Rig {
    _dir: TempDir,
    gate: Arc<Gate>,
    stall: Arc<Mutex<Stall>>,
    d: Dispatcher,
}

/// A one-worker dispatcher over a gated store, stalling `stall` from the start.
fn rig(name: &str, stall: Stall) -> Rig {
    rig_in(TempDir::new(name), stall)
}

fn rig_in(dir: TempDir, stall: Stall) -> Rig {
    let gate = Arc::new(Gate::default());
    let stall = Arc::new(Mutex::new(stall));
    let store = GatedStore {
        inner: LogStore::open(StoreConfig::new(dir.path())).unwrap(),
        gate: gate.clone(),
        stall: stall.clone(),
    };
    let d = Dispatcher::builder()
        .workers(1)
        .store(store)
        .build()
        .unwrap();
    Rig {
        _dir: dir,
        gate,
        stall,
        d,
    }
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A durable endpoint whose log read never returns does not hold up a memory endpoint on the
/// same worker (the read runs on the log reader thread).
#[test]
fn a_stuck_log_read_does_not_stall_the_worker() {
    // An earlier run leaves 100 events in the log, undelivered.
    let dir = TempDir::new("stuck-read");
    {
        let hanging = Receiver::start(ReceiverConfig::default().hang()).unwrap();
        let d = Dispatcher::builder()
            .workers(1)
            .data_dir(dir.path())
            .build()
            .unwrap();
        d.add_endpoint(EndpointConfig::new("durable", hanging.url()).durable())
            .unwrap();
        for i in 0..100 {
            d.publish_durable(event(i)).unwrap();
        }
        assert_eq!(d.shutdown(Duration::from_millis(100)).kept, 100);
    }
    let rig = rig_in(
        dir,
        Stall {
            reads: true,
            ..Stall::default()
        },
    );
    let slow = Receiver::start(ReceiverConfig::default()).unwrap();
    let fast = Receiver::start(ReceiverConfig::default()).unwrap();
    // A durable endpoint resumes by reading the log from its cursor.
    rig.d
        .add_endpoint(EndpointConfig::new("durable", slow.url()).durable())
        .unwrap();
    wait_for("the read to stall", Duration::from_secs(10), || {
        rig.gate.has_waiter()
    });
    rig.d
        .add_endpoint(EndpointConfig::new("memory", fast.url()))
        .unwrap();
    for i in 100..200 {
        rig.d.publish_raw(event(i)).unwrap();
    }
    assert!(
        fast.wait_for_distinct(100, Duration::from_secs(10)),
        "the neighbour got {} of 100 while a log read was stuck",
        fast.stats().distinct
    );
    rig.gate.open();
    assert!(slow.wait_for_distinct(200, Duration::from_secs(10)));
    let report = rig.d.shutdown(Duration::from_secs(5));
    assert!(report.drained, "{report:?}");
    for e in &report.endpoints {
        assert!(e.metrics.balanced(), "{:?}", e.metrics);
    }
}

/// Removing a durable endpoint saves its cursor on the persistence thread: a cursor save
/// that never returns does not hold up the worker.
#[test]
fn removing_a_durable_endpoint_does_no_disk_work_on_the_worker() {
    let rig = rig("stuck-leave", Stall::default());
    let slow = Receiver::start(ReceiverConfig::default()).unwrap();
    let fast = Receiver::start(ReceiverConfig::default()).unwrap();
    let durable = rig
        .d
        .add_endpoint(EndpointConfig::new("durable", slow.url()).durable())
        .unwrap();
    rig.d
        .add_endpoint(EndpointConfig::new("memory", fast.url()))
        .unwrap();
    for i in 0..10 {
        rig.d.publish_durable(event(i)).unwrap();
    }
    assert!(slow.wait_for_distinct(10, Duration::from_secs(10)));
    rig.stall.lock().cursor_saves = true;
    rig.d
        .remove_endpoint(durable, Duration::from_secs(5))
        .unwrap();
    for i in 10..110 {
        rig.d.publish_raw(event(i)).unwrap();
    }
    assert!(
        fast.wait_for_distinct(110, Duration::from_secs(10)),
        "the neighbour got {} of 110 while a cursor save was stuck",
        fast.stats().distinct
    );
    rig.gate.open();
    let _ = rig.d.shutdown(Duration::from_secs(5));
}

/// Listing dead letters does not hold the store's lock: durable publishes (group commits) go
/// on while a listing is stuck.
#[test]
fn a_stuck_dead_letter_listing_does_not_stall_durable_publishes() {
    let rig = rig("stuck-dlq", Stall::default());
    let rx = Receiver::start(ReceiverConfig::default()).unwrap();
    rig.d
        .add_endpoint(EndpointConfig::new("durable", rx.url()).durable())
        .unwrap();
    rig.stall.lock().dead_letter_lists = true;
    std::thread::scope(|s| {
        let lister = s.spawn(|| rig.d.dead_letters(&DeadLetterFilter::all()));
        wait_for("the listing to stall", Duration::from_secs(10), || {
            rig.gate.has_waiter()
        });
        let started = Instant::now();
        for i in 0..20 {
            rig.d.publish_durable(event(i)).unwrap();
        }
        let took = started.elapsed();
        rig.gate.open();
        lister.join().unwrap().unwrap();
        assert!(took < Duration::from_secs(10), "publishes waited {took:?}");
    });
    assert!(rx.wait_for_distinct(20, Duration::from_secs(10)));
}

/// `remove_endpoint` waits for the endpoint without holding the dispatcher's admin lock:
/// snapshots and other endpoints' changes go on meanwhile.
#[test]
fn a_slow_removal_does_not_block_snapshots_or_adds() {
    let hanging = Receiver::start(ReceiverConfig::default().hang()).unwrap();
    let other = Receiver::start(ReceiverConfig::default()).unwrap();
    let d = Dispatcher::builder().workers(1).build().unwrap();
    let mut config = EndpointConfig::new("hanging", hanging.url());
    config.timeout = Duration::from_secs(30);
    let id = d.add_endpoint(config).unwrap();
    for i in 0..5 {
        d.publish_raw(event(i)).unwrap();
    }
    std::thread::scope(|s| {
        let removal = s.spawn(|| d.remove_endpoint(id, Duration::from_secs(3)));
        // The removal waits (the endpoint holds events for a receiver that never answers).
        std::thread::sleep(Duration::from_millis(100));
        let started = Instant::now();
        let snaps = d.snapshot();
        let added = d.add_endpoint(EndpointConfig::new("other", other.url()));
        let took = started.elapsed();
        assert!(
            !removal.is_finished(),
            "the removal should still be waiting"
        );
        assert!(
            took < Duration::from_secs(1),
            "blocked for {took:?} behind a removal"
        );
        assert!(!snaps.is_empty());
        added.unwrap();
        let last = removal.join().unwrap().unwrap();
        assert!(last.metrics.balanced(), "{:?}", last.metrics);
    });
    d.publish_raw(event(99)).unwrap();
    assert!(other.wait_for_distinct(1, Duration::from_secs(10)));
}

/// A memory endpoint's given-up events reach its dead-letter sink, payload and all; what the
/// sink refuses is counted.
#[test]
fn a_memory_endpoint_hands_its_dead_letters_to_its_sink() {
    let rx = Receiver::start(ReceiverConfig::default().statuses(vec![
        Reply::status(400),
        Reply::status(400),
        Reply::status(200),
    ]))
    .unwrap();
    let d = Dispatcher::builder().workers(1).build().unwrap();
    let got: Arc<Mutex<Vec<DeadLetter>>> = Arc::default();
    let sink = {
        let got = got.clone();
        from_fn(move |l: DeadLetter| {
            let mut got = got.lock();
            got.push(l);
            if got.len() > 1 {
                return Err(Error::Closed); // refused: counted, not retried
            }
            Ok(())
        })
    };
    d.add_endpoint_with_dead_letters(EndpointConfig::new("ep", rx.url()), sink)
        .unwrap();
    let ev = |id: &str| RawEvent::parse(format!(r#"{{"id":"{id}","n":1}}"#)).unwrap();
    for id in ["a", "b", "c"] {
        d.publish_raw(ev(id)).unwrap();
    }
    assert!(d.wait_idle(Duration::from_secs(10)));
    let letters = got.lock().clone();
    let ids: Vec<String> = letters.iter().map(|l| l.event.json().to_string()).collect();
    assert_eq!(ids, [r#"{"id":"a","n":1}"#, r#"{"id":"b","n":1}"#]);
    assert_eq!(
        (letters[0].status, letters[0].endpoint.as_str()),
        (Some(400), "ep")
    );
    let m = &d.snapshot()[0].metrics;
    assert_eq!(
        (m.delivered, m.dead_lettered, m.dead_letter_errors),
        (1, 2, 1)
    );
    assert!(m.balanced());
    // A durable endpoint keeps its own.
    let e = d
        .add_endpoint_with_dead_letters(
            EndpointConfig::new("durable", rx.url()).durable(),
            from_fn(|_: DeadLetter| Ok(())),
        )
        .unwrap_err();
    assert!(matches!(e, Error::Config { .. }), "{e}");
}
