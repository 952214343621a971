//! The endpoint state machine, driven by hand: a queue for a source, a clock that only moves
//! when told, and answers made up by the test. No socket, thread or sleep.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use super::*;
use crate::RawEvent;
use crate::config::EndpointConfig;
use crate::engine::EndpointId;
use crate::engine::source::{Events, Published};
use crate::http::conn::Response;

/// Endpoints whose next `pump` panics (a bug, injected): tests of panic containment.
static PANIC_IN: parking_lot::Mutex<Vec<String>> = parking_lot::Mutex::new(Vec::new());

/// Makes the next `pump` of the endpoint called `name` panic, once.
pub(crate) fn panic_next_pump(name: &str) {
    PANIC_IN.lock().push(name.to_string());
}

pub(super) fn maybe_panic(name: &str) {
    let mut names = PANIC_IN.lock();
    if let Some(i) = names.iter().position(|n| n == name) {
        names.remove(i);
        drop(names);
        panic!("injected by a test");
    }
}

/// A source over a plain queue.
#[derive(Default)]
pub(crate) struct Queue {
    pub items: VecDeque<Published>,
    pub min_seq: u64,
    pub relieve_above: u64,
    /// Entries passed.
    pub passed: u64,
}

impl Queue {
    pub fn push(&mut self, id: &str, at: Instant, seq: u64) {
        self.items.push_back(Published {
            event: RawEvent::parse(format!(r#"{{"id":"{id}"}}"#)).unwrap(),
            at,
            version: 0,
            seq,
        });
    }
}

impl Events for Queue {
    fn take(&mut self, max: usize, mut f: impl FnMut(&Published) -> bool) -> usize {
        let mut n = 0;
        while n < max {
            while self
                .items
                .front()
                .is_some_and(|p| p.seq < self.min_seq && p.seq != 0)
            {
                self.items.pop_front();
                self.passed += 1;
            }
            let Some(p) = self.items.front() else { break };
            if !f(p) {
                break;
            }
            self.items.pop_front();
            self.passed += 1;
            n += 1;
        }
        n
    }
    fn lag(&self) -> u64 {
        self.items.len() as u64
    }
    fn position(&self) -> u64 {
        self.passed
    }
    fn relieve_above(&self) -> u64 {
        if self.relieve_above == 0 {
            u64::MAX
        } else {
            self.relieve_above
        }
    }
    fn skip_all(&mut self) {
        self.items.clear();
    }
    fn skip_foreign(&mut self) {}
    fn has_entry(&self) -> bool {
        !self.items.is_empty()
    }
    fn set_min_seq(&mut self, seq: u64) {
        self.min_seq = seq;
    }
}

struct Fixture {
    ep: Endpoint,
    shared: Arc<Shared>,
    src: Queue,
    now: Instant,
}

fn fixture_with(config: EndpointConfig, keep: bool) -> Fixture {
    let secrets = config.validate().unwrap();
    let p = Prepared::new(&config, secrets).unwrap();
    let shared = Arc::new(Shared::new(
        EndpointId(1),
        0,
        0,
        &config,
        config.url.clone(),
    ));
    let now = Instant::now();
    let full = Arc::new(AtomicU64::new(0));
    let ep = Endpoint::new(p, shared.clone(), full, None, keep, SystemTime::now(), now);
    Fixture {
        ep,
        shared,
        src: Queue::default(),
        now,
    }
}

fn fixture() -> Fixture {
    fixture_with(EndpointConfig::new("ep", "http://127.0.0.1:9/hook"), false)
}

fn ok(status: u16) -> Response {
    Response {
        location: None,
        status,
        retry_after: None,
        keep_alive: true,
    }
}

impl Fixture {
    fn actions(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.ep.poll_action()).collect()
    }

    fn pump(&mut self) -> Vec<Action> {
        self.ep.pump(&mut self.src, self.now);
        self.actions()
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
    }

    fn metrics(&self) -> crate::stats::Metrics {
        self.shared.snapshot(self.src.items.len() as u64).metrics
    }
}

fn sends(actions: &[Action]) -> Vec<(ConnId, bool)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { conn, connect, .. } => Some((*conn, *connect)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_request_per_event_on_one_kept_alive_connection() {
    let mut f = fixture();
    f.src.push("a", f.now, 0);
    let a = f.pump();
    let [
        Action::Send {
            conn,
            connect,
            body,
            signed,
        },
    ] = a.as_slice()
    else {
        panic!("{a:?}")
    };
    assert_eq!((*conn, *connect, signed.is_none()), (0, true, true));
    assert_eq!(body, br#"{"events":[{"id":"a"}]}"#);
    assert!(!f.ep.wants_events(), "one request in flight");
    f.ep.handle_connected(0, f.now);
    f.advance(Duration::from_millis(3));
    f.ep.handle_response(0, ok(200), f.now);
    f.src.push("b", f.now, 0);
    assert_eq!(sends(&f.pump()), [(0, false)], "the connection is reused");
    f.ep.handle_response(0, ok(204), f.now);
    let m = f.metrics();
    assert_eq!(
        (m.events, m.delivered, m.pending, m.successes),
        (2, 2, 0, 2)
    );
    assert!(!f.ep.holds_events());
}

#[test]
fn a_request_that_never_answers_fails_at_its_deadline_and_is_retried() {
    let mut config = EndpointConfig::new("ep", "http://127.0.0.1:9/");
    config.timeout = Duration::from_millis(500);
    let mut f = fixture_with(config, false);
    f.src.push("a", f.now, 0);
    f.pump();
    f.ep.handle_connected(0, f.now);
    assert_eq!(
        f.ep.poll_timeout(),
        Some(f.now + Duration::from_millis(500))
    );
    f.advance(Duration::from_millis(499));
    f.ep.handle_timeout(f.now);
    assert!(f.actions().is_empty(), "not yet");
    f.advance(Duration::from_millis(1));
    f.ep.handle_timeout(f.now);
    let a = f.actions();
    assert!(matches!(a.as_slice(), [Action::Close { conn: 0 }]), "{a:?}");
    let m = f.metrics();
    assert_eq!((m.errors, m.pending), (1, 1));
    assert!(
        f.shared
            .last_error
            .lock()
            .as_deref()
            .unwrap()
            .contains("response")
    );
    // ConsecutiveFailures retries at once below its threshold, on a new connection.
    assert_eq!(sends(&f.pump()), [(0, true)]);
    assert_eq!(f.metrics().retries, 1);
}

#[test]
fn every_attempt_sends_the_same_bytes_without_copying_them() {
    let mut config = EndpointConfig::new("ep", "http://127.0.0.1:9/");
    config.batch = crate::config::BatchConfig::events(10);
    let mut f = fixture_with(config, false);
    for id in ["a", "b", "c"] {
        f.src.push(id, f.now, 0);
    }
    let body = |a: &[Action]| match a {
        [Action::Send { body, .. }] => body.clone(),
        other => panic!("{other:?}"),
    };
    let first = body(&f.pump());
    assert_eq!(first, *br#"{"events":[{"id":"a"},{"id":"b"},{"id":"c"}]}"#);
    f.ep.handle_connected(0, f.now);
    f.ep.handle_response(0, ok(500), f.now);
    let a = f.actions();
    assert!(matches!(a.as_slice(), [] | [Action::Close { .. }]), "{a:?}");
    let again = body(&f.pump());
    assert_eq!(
        again.as_ptr(),
        first.as_ptr(),
        "the same buffer, not a copy"
    );
    // The two kept here and the batch in flight: nothing else holds it.
    assert_eq!(again.holders(), 3);
    assert_eq!(f.metrics().retries, 1);
}

#[test]
fn a_connection_not_up_by_the_connect_timeout_fails_as_connect() {
    let mut config = EndpointConfig::new("ep", "http://127.0.0.1:9/");
    config.timeout = Duration::from_secs(5);
    config.connect_timeout = Some(Duration::from_millis(100));
    let mut f = fixture_with(config, false);
    f.src.push("a", f.now, 0);
    f.pump();
    assert_eq!(
        f.ep.poll_timeout(),
        Some(f.now + Duration::from_millis(100))
    );
    f.advance(Duration::from_millis(100));
    f.ep.handle_timeout(f.now);
    let last = f.shared.last_error.lock().clone().unwrap();
    assert!(last.contains("connect") && last.contains("100ms"), "{last}");
}

#[test]
fn an_idle_connection_is_closed_at_its_idle_deadline_without_a_failure() {
    let mut config = EndpointConfig::new("ep", "http://127.0.0.1:9/");
    config.timeout = Duration::from_millis(200);
    let mut f = fixture_with(config, false);
    let idle = f.ep.p.timeouts.idle;
    f.src.push("a", f.now, 0);
    f.pump();
    f.ep.handle_connected(0, f.now);
    f.ep.handle_response(0, ok(200), f.now);
    // Kept alive: its deadline is the idle timeout, from the answer.
    assert_eq!(f.ep.poll_timeout(), Some(f.now + idle));
    // A request on it replaces that with the request's deadline, from its start.
    f.advance(Duration::from_secs(1));
    f.src.push("b", f.now, 0);
    assert_eq!(sends(&f.pump()), [(0, false)]);
    assert_eq!(
        f.ep.poll_timeout(),
        Some(f.now + Duration::from_millis(200))
    );
    f.advance(Duration::from_millis(10));
    f.ep.handle_response(0, ok(200), f.now);
    let idle_until = f.now + idle;
    assert_eq!(f.ep.poll_timeout(), Some(idle_until));
    // Before the idle deadline nothing happens; at it, the connection is closed, and that
    // is no failure.
    f.now = idle_until - Duration::from_millis(1);
    f.ep.handle_timeout(f.now);
    assert!(f.actions().is_empty(), "not yet");
    f.now = idle_until;
    f.ep.handle_timeout(f.now);
    let a = f.actions();
    assert!(matches!(a.as_slice(), [Action::Close { conn: 0 }]), "{a:?}");
    assert_eq!(f.ep.poll_timeout(), None);
    assert_eq!(f.ep.sizes().3, 0, "no connection left");
    let m = f.metrics();
    assert_eq!((m.delivered, m.errors, m.failures, m.pending), (2, 0, 0, 0));
    assert!(f.shared.last_error.lock().is_none());
    // The next request opens a new connection.
    f.src.push("c", f.now, 0);
    assert_eq!(sends(&f.pump()), [(0, true)]);
}

#[test]
fn a_stale_keep_alive_connection_resends_once_as_the_same_attempt() {
    let mut f = fixture();
    f.src.push("a", f.now, 0);
    f.pump();
    f.ep.handle_connected(0, f.now);
    f.ep.handle_response(0, ok(200), f.now);
    f.src.push("b", f.now, 0);
    assert_eq!(sends(&f.pump()), [(0, false)]);
    let reset = || Error::Io {
        kind: std::io::ErrorKind::ConnectionReset,
        message: "reset".into(),
        source: None,
    };
    f.ep.handle_failure(0, reset(), true, f.now);
    assert_eq!(
        sends(&f.pump()),
        [(0, true)],
        "resent on a fresh connection"
    );
    assert_eq!(f.metrics().retries, 0, "as the same attempt");
    // A second stale failure is a real one.
    f.ep.handle_failure(0, reset(), true, f.now);
    f.pump();
    assert_eq!(f.metrics().retries, 1);
}

#[test]
fn gone_disables_and_keeps_the_batch_until_enabled() {
    let mut f = fixture();
    f.src.push("a", f.now, 0);
    f.pump();
    f.ep.handle_connected(0, f.now);
    f.ep.handle_response(0, ok(410), f.now);
    assert!(f.pump().is_empty(), "disabled: nothing goes out");
    let m = f.metrics();
    assert_eq!((m.pending, m.dead_lettered, m.disabled), (1, 0, true));
    f.ep.set_disabled(false, f.now);
    assert_eq!(sends(&f.pump()), [(0, false)], "the kept batch goes first");
    f.ep.handle_response(0, ok(200), f.now);
    assert_eq!(f.metrics().delivered, 1);
}

#[test]
fn retry_after_holds_the_endpoint_back() {
    let mut f = fixture();
    f.src.push("a", f.now, 0);
    f.pump();
    f.ep.handle_connected(0, f.now);
    let resp = Response {
        location: None,
        status: 503,
        retry_after: Some("7".into()),
        keep_alive: true,
    };
    f.ep.handle_response(0, resp, f.now);
    assert!(f.pump().is_empty());
    assert_eq!(f.ep.poll_timeout(), Some(f.now + Duration::from_secs(7)));
    f.advance(Duration::from_secs(7));
    assert_eq!(sends(&f.pump()), [(0, false)]);
}

#[test]
fn given_up_events_become_dead_letters_when_someone_takes_them() {
    for keep in [false, true] {
        let mut f = fixture_with(EndpointConfig::new("ep", "http://127.0.0.1:9/"), keep);
        f.src.push("a", f.now, 0);
        f.pump();
        f.ep.handle_response(0, ok(400), f.now);
        let letters: Vec<_> = f
            .actions()
            .into_iter()
            .filter_map(|a| match a {
                Action::DeadLetter(l) => Some(l),
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(f.metrics().dead_lettered, 1);
        if keep {
            assert_eq!(letters.len(), 1);
            assert_eq!(letters[0].event.json(), r#"{"id":"a"}"#);
            assert_eq!((letters[0].status, letters[0].seq), (Some(400), 0));
        } else {
            assert!(letters.is_empty(), "no payload kept without a taker");
        }
    }
}

#[test]
fn batches_fill_up_to_max_events_and_linger_waits() {
    let mut config = EndpointConfig::new("ep", "http://127.0.0.1:9/");
    config.batch = crate::config::BatchConfig {
        max_events: 3,
        max_bytes: 1 << 20,
        linger: Duration::from_millis(50),
    };
    let mut f = fixture_with(config, false);
    f.src.push("a", f.now, 0);
    f.src.push("b", f.now, 0);
    assert!(f.pump().is_empty(), "lingering for a third");
    assert_eq!(f.ep.poll_timeout(), Some(f.now + Duration::from_millis(50)));
    f.advance(Duration::from_millis(50));
    let a = f.pump();
    let [Action::Send { body, .. }] = a.as_slice() else {
        panic!("{a:?}")
    };
    assert_eq!(body, br#"{"events":[{"id":"a"},{"id":"b"}]}"#);
}

#[test]
fn a_host_name_is_resolved_again_after_connection_failures_at_most_every_interval() {
    let mut f = fixture_with(EndpointConfig::new("ep", "http://localhost:9/"), false);
    let refused = || Error::Io {
        kind: std::io::ErrorKind::ConnectionRefused,
        message: "refused".into(),
        source: None,
    };
    f.src.push("a", f.now, 0);
    f.pump();
    f.ep.handle_failure(0, refused(), false, f.now);
    let a = f.actions();
    assert!(
        !a.iter().any(|a| matches!(a, Action::Resolve)),
        "resolved when added, less than an interval ago"
    );
    f.advance(RESOLVE_EVERY);
    f.pump();
    f.ep.handle_failure(0, refused(), false, f.now);
    let asks = |a: &[Action]| a.iter().filter(|a| matches!(a, Action::Resolve)).count();
    assert_eq!(asks(&f.actions()), 1);
    f.pump();
    f.ep.handle_failure(0, refused(), false, f.now);
    assert_eq!(asks(&f.actions()), 0, "one lookup at a time");
    let new: Vec<std::net::SocketAddr> = vec!["127.0.0.1:10".parse().unwrap()];
    f.ep.handle_resolved(Ok(new.clone()), f.now);
    assert_eq!(f.ep.target().addrs, new);
    // A failed lookup keeps the addresses.
    f.advance(RESOLVE_EVERY);
    f.pump();
    f.ep.handle_failure(0, refused(), false, f.now);
    assert_eq!(asks(&f.actions()), 1);
    f.ep.handle_resolved(Err(Error::Closed), f.now);
    assert_eq!(f.ep.target().addrs, new);
}

#[test]
fn an_ip_address_is_never_looked_up() {
    let mut f = fixture();
    f.advance(RESOLVE_EVERY * 2);
    f.src.push("a", f.now, 0);
    f.pump();
    let refused = Error::Io {
        kind: std::io::ErrorKind::ConnectionRefused,
        message: "refused".into(),
        source: None,
    };
    f.ep.handle_failure(0, refused, false, f.now);
    assert!(!f.actions().iter().any(|a| matches!(a, Action::Resolve)));
}

#[test]
fn a_durable_endpoint_reads_the_log_one_request_at_a_time_then_joins_the_ring() {
    let config = EndpointConfig::new("ep", "http://127.0.0.1:9/").durable();
    let secrets = config.validate().unwrap();
    let p = Prepared::new(&config, secrets).unwrap();
    let shared = Arc::new(Shared::new(
        EndpointId(1),
        0,
        0,
        &config,
        config.url.clone(),
    ));
    let marks = Arc::new(LogMarks::at(10));
    let link = LogLink::new(marks.clone(), 0, 5, 11);
    let now = Instant::now();
    let full = Arc::new(AtomicU64::new(0));
    let mut ep = Endpoint::new(
        p,
        shared.clone(),
        full,
        Some(link),
        false,
        SystemTime::now(),
        now,
    );
    let mut src = Queue::default();
    ep.pump(&mut src, now);
    let a: Vec<_> = std::iter::from_fn(|| ep.poll_action()).collect();
    let [
        Action::ReadLog {
            from,
            through,
            mask,
            ..
        },
    ] = a.as_slice()
    else {
        panic!("{a:?}")
    };
    assert_eq!((*from, *through, *mask), (5, 10, 1));
    ep.pump(&mut src, now);
    assert!(ep.poll_action().is_none(), "one read at a time");
    let held = |seq| {
        Ok(Held {
            event: RawEvent::parse(format!(r#"{{"id":"e{seq}"}}"#)).unwrap(),
            at: now,
            seq,
        })
    };
    ep.handle_log(
        LogRead {
            records: vec![held(5), held(7)],
            next: 11,
            error: None,
        },
        now,
    );
    assert_eq!(
        shared.taken.get(),
        2,
        "records of an earlier run are counted when read"
    );
    shared.routed.store(true, Ordering::Release);
    ep.pump(&mut src, now);
    assert!(
        !shared.disk.load(Ordering::Acquire),
        "caught up and routed: back to the ring"
    );
    assert_eq!(shared.acked.load(Ordering::Acquire), 5, "the oldest held");
    assert_eq!(src.min_seq, 11);
}

#[test]
fn a_rate_limit_spaces_requests_by_their_events() {
    let mut config = EndpointConfig::new("ep", "http://127.0.0.1:9/");
    config.rate_limit = Some(crate::policy::RateLimit {
        per_second: 10.0,
        burst: 2.0,
    });
    let mut f = fixture_with(config, false);
    for id in ["a", "b", "c"] {
        f.src.push(id, f.now, 0);
    }
    for _ in 0..2 {
        let sent = sends(&f.pump());
        assert_eq!(sent.len(), 1, "the burst");
        f.ep.handle_connected(sent[0].0, f.now);
        f.ep.handle_response(sent[0].0, ok(200), f.now);
    }
    assert!(f.pump().is_empty(), "out of tokens");
    assert_eq!(
        f.ep.poll_timeout(),
        Some(f.now + Duration::from_millis(100))
    );
    assert!(
        !f.ep.wants_events(),
        "producers need not wake it while it waits"
    );
    f.advance(Duration::from_millis(100));
    assert_eq!(sends(&f.pump()).len(), 1);
}

#[test]
fn adaptive_concurrency_grows_with_answers_and_halves_on_pushback() {
    let mut config = EndpointConfig::new("ep", "http://127.0.0.1:9/");
    config.max_in_flight = 4;
    config.adaptive_concurrency = true;
    let mut f = fixture_with(config, false);
    for i in 0..100 {
        f.src.push(&format!("e{i}"), f.now, 0);
    }
    let mut in_flight: Vec<ConnId> = Vec::new();
    let mut seen = Vec::new();
    for _ in 0..12 {
        in_flight.extend(sends(&f.pump()).into_iter().map(|(c, _)| c));
        seen.push(in_flight.len());
        f.advance(Duration::from_millis(10));
        for c in in_flight.drain(..) {
            f.ep.handle_connected(c, f.now);
            f.ep.handle_response(c, ok(200), f.now);
        }
    }
    assert_eq!(&seen[..3], &[1, 2, 3], "one more per round trip");
    assert_eq!(*seen.last().unwrap(), 4, "up to max_in_flight: {seen:?}");
    assert_eq!(f.ep.in_flight_limit(), 4);
    in_flight.extend(sends(&f.pump()).into_iter().map(|(c, _)| c));
    let resp = Response {
        location: None,
        status: 503,
        retry_after: None,
        keep_alive: true,
    };
    f.ep.handle_response(in_flight[0], resp, f.now);
    assert_eq!(f.ep.in_flight_limit(), 2, "halved on 503");
}
