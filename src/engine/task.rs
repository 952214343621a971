//! One endpoint as its worker owns it, and the worker's side of driving it: the sockets of a
//! webhook endpoint, the actions its state machine asks for, and what happens when it panics.
//!
//! The state machine ([`Endpoint`]) decides; this file does. An [`Action::Send`] opens or
//! reuses a [`Conn`] and starts the request; socket events go to the `Conn`, and what they
//! lead to goes back to the endpoint (`handle_connected`, `handle_response`,
//! `handle_failure`, `handle_closed`). Log reads go to the log reader thread, lookups to the
//! resolver thread, dead letters to the persistence thread (durable endpoints) or the
//! endpoint's dead-letter hook; none of them blocks the worker.
//!
//! **Panics are contained here.** Every step of an endpoint runs under `catch_unwind`; one
//! that panics is marked failed (its snapshot says why), its events are accounted (a memory
//! endpoint's are dead-lettered and handed to its hook; a durable endpoint's stay in the log,
//! pending), its connections are closed, and from then on it only passes its ring entries
//! (counting them) while `publish` refuses events for it. Its neighbours are served on.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use crossbeam_channel::Sender;

use crate::http::conn::Conn;
use crate::stats::DropReason;
use crate::store::{DeadLetter, unix_ms};
use crate::{Error, RawEvent, Sink};

use super::driver::hand_to_hook;
use super::endpoint::{Endpoint, LogLink, LogRead, Prepared};
use super::persist::Durable;
use super::reader::ReadRequest;
use super::resolver::Lookup;
use super::ring::Consumer;
use super::shared::Shared;
use super::source::{Events, Published, Source};
use super::wake::Wake;
use super::worker::Command;

/// Where a dead-letter hook receives given-up events.
pub(crate) type DeadLetterHook = Arc<dyn Sink<DeadLetter>>;

/// What the workers hand work to.
#[derive(Clone, Default)]
pub(crate) struct Services {
    /// The log reader thread (with a store).
    pub reader: Option<Sender<ReadRequest>>,
    /// The resolver thread.
    pub resolver: Option<Sender<Lookup>>,
    /// The persistence thread's side (with a store).
    pub durable: Option<Arc<Durable>>,
}

/// What an endpoint may use of its worker while it runs.
pub(crate) struct Io<'a> {
    /// Registers sockets.
    pub registry: &'a mio::Registry,
    /// The time of this loop turn; the driver moves it forward when a request finishes during
    /// a connection's drive (see `driver.rs`), so round trips end when they ended.
    pub now: Instant,
    /// The endpoint's slot (its tokens are `slot << 8 | connection`).
    pub slot: usize,
    /// The threads work is handed to.
    pub services: &'a Services,
    /// The worker's own commands (where answers come back).
    pub reply: &'a Sender<Command>,
    /// The worker's wake-up.
    pub wake: &'a Arc<Wake>,
    /// The dispatcher's "full" bits (`publish` refuses events for endpoints in it, by policy).
    pub full: &'a Arc<AtomicU64>,
}

/// A webhook endpoint and its sockets (see `driver.rs`).
pub(super) struct Http {
    pub(super) ep: Endpoint,
    pub(super) conns: Vec<Option<Conn>>,
    pub(super) hook: Option<DeadLetterHook>,
}

enum Kind {
    Local(Box<dyn FnMut(&RawEvent) + Send>),
    Http(Box<Http>),
    /// Failed for good (a caught panic): passes its ring entries, counting them.
    Failed(Option<DeadLetterHook>, String),
}

/// One endpoint, as its worker owns it.
pub(crate) struct Task {
    /// Its shared half.
    pub shared: Arc<Shared>,
    /// Its cursor on the ring.
    pub src: Source,
    kind: Kind,
    /// The deadline a timer is set for, if any.
    pub armed: Option<Instant>,
    /// Being removed: answer `done` once idle or at the deadline.
    pub removing: Option<(Instant, Sender<()>)>,
}

/// How many ring entries one in-process consumer takes per loop turn, so one busy endpoint
/// cannot keep its neighbours waiting.
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

    /// A webhook endpoint; `log` links a durable one to the log, `hook` takes a memory
    /// endpoint's dead letters; `full_bits` are the dispatcher's "full" bits.
    pub fn http(
        shared: Arc<Shared>,
        consumer: Consumer<Published>,
        since: u64,
        prepared: Prepared,
        log: Option<LogLink>,
        hook: Option<DeadLetterHook>,
        full_bits: Arc<AtomicU64>,
    ) -> Task {
        let ep = Endpoint::new(
            prepared,
            shared.clone(),
            full_bits,
            log,
            hook.is_some(),
            SystemTime::now(),
            Instant::now(),
        );
        let http = Http {
            ep,
            conns: Vec::new(),
            hook,
        };
        Task::new(shared, consumer, since, Kind::Http(Box::new(http)))
    }

    fn new(shared: Arc<Shared>, consumer: Consumer<Published>, since: u64, kind: Kind) -> Task {
        Task {
            src: Source::new(consumer, shared.bit, since),
            shared,
            kind,
            armed: None,
            removing: None,
        }
    }

    /// Runs `f` on this task, then carries out what its endpoint asked for. A panic in
    /// either fails the endpoint for good (see the module docs). Returns what `f` returned
    /// (`true` if it panicked: something changed).
    pub fn step(
        &mut self,
        io: &mut Io<'_>,
        f: impl FnOnce(&mut Task, &mut Io<'_>) -> bool,
    ) -> bool {
        let result = catch_unwind(AssertUnwindSafe(|| {
            let progress = f(self, io);
            self.drive(io);
            progress
        }));
        match result {
            Ok(progress) => progress,
            Err(panic) => {
                self.fail(io, &panic);
                true
            }
        }
    }

    /// Takes events and starts requests. Returns whether anything moved.
    pub fn pump(&mut self, io: &mut Io<'_>) -> bool {
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
            Kind::Http(h) => {
                // A connection that stopped at its drive budget gets no new socket event
                // (edge-triggered): it is driven again here, every turn, until it is through.
                let mut progress = false;
                for conn in 0..h.conns.len() {
                    if h.conns[conn].as_ref().is_some_and(Conn::wants_drive) {
                        progress = true;
                        h.on_io(conn, io);
                    }
                }
                progress | h.ep.pump(&mut self.src, io.now)
            }
            Kind::Failed(hook, why) => {
                let (shared, hook, why) = (&self.shared, hook.as_ref(), why.as_str());
                if shared.is_durable() {
                    // Committed, counted at commit, and kept in the log for the next run.
                    self.src.skip_all();
                    return false;
                }
                let mut letters = Vec::new();
                let n = self.src.take(BUDGET, |p| {
                    if hook.is_some() {
                        letters.push(failed_letter(shared, p.event.clone(), p.at, 0, why, io.now));
                    }
                    true
                }) as u64;
                shared.taken.add(n);
                shared.dead_lettered.add(n);
                if let Some(hook) = hook {
                    hand_to_hook(shared, hook, letters);
                }
                n > 0
            }
        }
    }

    /// A socket event for connection `conn`.
    pub fn on_io(&mut self, conn: usize, io: &mut Io<'_>) -> bool {
        let Kind::Http(h) = &mut self.kind else {
            return false;
        };
        h.on_io(conn, io);
        true
    }

    /// A timer fired.
    pub fn on_timer(&mut self, io: &mut Io<'_>) -> bool {
        if let Kind::Http(h) = &mut self.kind {
            h.ep.handle_timeout(io.now);
        }
        true
    }

    /// The log reader's answer.
    pub fn on_log(&mut self, read: LogRead, io: &mut Io<'_>) -> bool {
        if let Kind::Http(h) = &mut self.kind {
            h.ep.handle_log(read, io.now);
        }
        true
    }

    /// The resolver's answer.
    pub fn on_resolved(
        &mut self,
        result: Result<Vec<std::net::SocketAddr>, Error>,
        io: &mut Io<'_>,
    ) -> bool {
        if let Kind::Http(h) = &mut self.kind {
            h.ep.handle_resolved(result, io.now);
        }
        true
    }

    /// Pauses or resumes delivery.
    pub fn set_disabled(&mut self, disabled: bool, io: &mut Io<'_>) -> bool {
        match &mut self.kind {
            Kind::Http(h) => h.ep.set_disabled(disabled, io.now),
            Kind::Local(_) if disabled => {
                log::warn!(
                    "{}: in-process consumers cannot be disabled",
                    self.shared.name
                );
            }
            _ => {}
        }
        true
    }

    /// Whether this endpoint would take an event now (so producers should wake the worker).
    pub fn wants_events(&self) -> bool {
        match &self.kind {
            Kind::Local(_) | Kind::Failed(..) => true,
            Kind::Http(h) => h.ep.wants_events(),
        }
    }

    /// Whether it holds nothing (and has taken everything the ring had for it).
    pub fn is_idle(&self) -> bool {
        let held = match &self.kind {
            Kind::Local(_) | Kind::Failed(..) => false,
            Kind::Http(h) => h.ep.holds_events(),
        };
        !held && !self.src.has_entry()
    }

    /// When the endpoint next needs a timer, or its removal's deadline.
    pub fn deadline(&self) -> Option<Instant> {
        let ep = match &self.kind {
            Kind::Http(h) => h.ep.poll_timeout(),
            _ => None,
        };
        match (ep, self.removing.as_ref().map(|r| r.0)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Counts everything it still holds, and everything the ring still has for it up to
    /// `end`, as dropped (`shutdown`), and closes its connections. A durable endpoint drops
    /// nothing: what it did not deliver stays in the log, and stays pending; it leaves the
    /// persistence thread's members (its cursor is saved there, not here).
    pub fn abandon(&mut self, io: &mut Io<'_>, end: u64) {
        let n = self.src.discard(end);
        if !self.shared.is_durable() {
            self.shared.taken.add(n);
            self.shared.dropped.add(DropReason::Shutdown, n);
        }
        if matches!(self.kind, Kind::Http(_)) {
            // A panic here is contained like any other step's.
            self.step(io, |t, _| {
                if let Kind::Http(h) = &mut t.kind {
                    h.ep.abandon();
                }
                false
            });
        }
        // Whatever `abandon` did not close (a failed endpoint's) goes now.
        if let Kind::Http(h) = &mut self.kind {
            for c in h.conns.iter_mut().filter_map(Option::take) {
                c.close(io.registry);
            }
        }
        if self.shared.is_durable()
            && let Some(d) = &io.services.durable
        {
            d.leave(&self.shared);
        }
    }

    /// Carries out what the endpoint asked for, until it asks for nothing more.
    fn drive(&mut self, io: &mut Io<'_>) {
        if let Kind::Http(h) = &mut self.kind {
            h.drive(&self.shared, io);
        }
    }

    /// A step panicked: the endpoint fails for good (see the module docs).
    fn fail(&mut self, io: &mut Io<'_>, panic: &Box<dyn Any + Send>) {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        let why = format!("panicked: {what}");
        let shared = self.shared.clone();
        log::error!(
            "{}: failed for good ({why}); it takes no more events, its neighbours go on",
            shared.name
        );
        shared.set_failed(why.clone());
        // `publish` reads the "full" bits and refuses failed endpoints' events.
        io.full.fetch_or(1 << shared.bit, Ordering::AcqRel);
        let old = std::mem::replace(&mut self.kind, Kind::Failed(None, why.clone()));
        let hook = match old {
            Kind::Http(mut h) => {
                for c in h.conns.iter_mut().filter_map(Option::take) {
                    c.close(io.registry);
                }
                // What it held, if its state can still be read.
                let held = catch_unwind(AssertUnwindSafe(|| h.ep.take_held())).unwrap_or_default();
                if !shared.is_durable() {
                    // Everything it had taken and not finished, by its counters.
                    let pending = shared.pending();
                    if let Some(hook) = &h.hook {
                        let letters = held
                            .into_iter()
                            .map(|x| failed_letter(&shared, x.event, x.at, x.seq, &why, io.now))
                            .collect();
                        hand_to_hook(&shared, hook, letters);
                    }
                    shared.dead_lettered.add(pending);
                }
                h.hook
            }
            _ => None,
        };
        shared.queued.store(0, Ordering::Release);
        shared.in_flight.store(0, Ordering::Release);
        self.kind = Kind::Failed(hook, why);
    }
}

/// A dead letter for an event a failed endpoint could not deliver.
fn failed_letter(
    shared: &Shared,
    event: RawEvent,
    at: Instant,
    seq: u64,
    why: &str,
    now: Instant,
) -> DeadLetter {
    let now_ms = unix_ms();
    DeadLetter {
        endpoint: shared.name.clone(),
        seq,
        published_ms: now_ms.saturating_sub(now.saturating_duration_since(at).as_millis() as u64),
        failed_ms: now_ms,
        status: None,
        error: format!("the endpoint failed: {why}"),
        attempts: 0,
        event,
    }
}

#[cfg(all(test, not(hookwire_loom)))]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use parking_lot::Mutex;

    use crate::config::EndpointConfig;
    use crate::engine::Dispatcher;
    use crate::engine::endpoint::tests::panic_next_pump;
    use crate::store::DeadLetter;
    use crate::testkit::{Receiver, ReceiverConfig};
    use crate::{Error, RawEvent};

    fn ev(i: u64) -> RawEvent {
        RawEvent::parse(format!(r#"{{"id":"e{i}"}}"#)).unwrap()
    }

    #[test]
    fn a_panicking_endpoint_fails_alone_and_its_events_are_accounted() {
        let hanging = Receiver::start(ReceiverConfig::default().hang()).unwrap();
        let good = Receiver::start(ReceiverConfig::default()).unwrap();
        let d = Dispatcher::builder().workers(1).build().unwrap();
        let letters: Arc<Mutex<Vec<DeadLetter>>> = Arc::default();
        let sink = {
            let letters = letters.clone();
            crate::sink::from_fn(move |l: DeadLetter| {
                letters.lock().push(l);
                Ok(())
            })
        };
        let mut bad = EndpointConfig::new("bad", hanging.url());
        bad.timeout = Duration::from_secs(30);
        let bad = d.add_endpoint_with_dead_letters(bad, sink).unwrap();
        d.add_endpoint(EndpointConfig::new("good", good.url()))
            .unwrap();
        for i in 0..10 {
            d.publish_raw(ev(i)).unwrap();
        }
        assert!(good.wait_for_distinct(10, Duration::from_secs(10)));
        // `bad` holds 10 events (one on the wire to a receiver that never answers).
        panic_next_pump("bad");
        d.publish_raw(ev(10)).unwrap(); // wakes the worker, which pumps `bad`
        let failed = || d.endpoint_snapshot(bad).unwrap().health.failed.is_some();
        let since = std::time::Instant::now();
        while !failed() {
            assert!(since.elapsed() < Duration::from_secs(10), "never failed");
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut refused = 0;
        for i in 11..21 {
            match d.publish_raw(ev(i)) {
                Err(Error::Broadcast {
                    failed: 1,
                    total: 2,
                    first,
                }) => {
                    assert!(matches!(*first, Error::Disabled { .. }), "{first}");
                    refused += 1;
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(
            good.wait_for_distinct(21, Duration::from_secs(10)),
            "neighbour served on"
        );
        let snap = d.endpoint_snapshot(bad).unwrap();
        let why = snap.health.failed.clone().expect("marked failed");
        assert!(why.contains("injected by a test"), "{why}");
        let m = &snap.metrics;
        assert!(m.balanced(), "{m:?}");
        assert_eq!(m.pending, 0, "nothing left unaccounted: {m:?}");
        assert_eq!(m.delivered, 0);
        // What it held, and what reached it before publish refused, went to the hook.
        assert_eq!((m.dead_lettered, refused), (11, 10));
        assert_eq!(m.dropped[&crate::stats::DropReason::Failed], refused);
        let got = letters.lock();
        assert_eq!(got.len() as u64, m.dead_lettered, "with their payloads");
        assert!(got.iter().all(|l| l.error.contains("failed")));
        drop(got);
        let report = d.shutdown(Duration::from_secs(5));
        assert!(report.endpoints.iter().all(|e| e.metrics.balanced()));
    }
}
