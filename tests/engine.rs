//! The engine (`Dispatcher`) against the loopback receiver, under faults. Every test ends by
//! checking the accounting identity against what the receiver itself counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hookwire::endpoint::{BatchConfig, EndpointConfig};
use hookwire::engine::Dispatcher;
use hookwire::sink::Overflow;
use hookwire::stats::DropReason;
use hookwire::testkit::{Receiver, ReceiverConfig, Reply};
mod common;

use common::{assert_quiet_and_balanced, event, eventually, ids, test_pki};
use hookwire::{Error, RawEvent, Sink};

/// Fast retries so fault tests finish quickly: back off 20 ms after 3 failures in a row.
fn quick(name: &str, url: String) -> EndpointConfig {
    let mut cfg = EndpointConfig::new(name, url);
    cfg.threshold = 3;
    cfg.backoff = Duration::from_millis(20);
    cfg.timeout = Duration::from_millis(500);
    cfg
}

#[test]
fn delivers_everything_in_order_over_keep_alive() {
    let rx = Receiver::start(ReceiverConfig::default()).unwrap();
    let d = Dispatcher::builder().workers(2).build().unwrap();
    d.add_endpoint(quick("a", rx.url())).unwrap();
    let n = 500;
    for i in 0..n {
        d.publish_raw(event(i)).unwrap();
    }
    assert!(d.wait_idle(Duration::from_secs(10)));
    let m = d.snapshot().remove(0).metrics;
    assert_eq!(m.delivered, n as u64);
    assert_eq!(rx.ids(), ids(n));
    assert_eq!(rx.stats().duplicates, 0);
    assert_eq!(rx.stats().connections, 1, "one keep-alive connection");
    assert_eq!(m.statuses.get(&200), Some(&(n as u64)));
    assert_eq!(m.delivery_lag.count, n as u64);
    assert_quiet_and_balanced(&m);
    let report = d.shutdown(Duration::from_secs(1));
    assert!(report.drained);
    assert_eq!(report.undelivered, 0);
}

#[test]
fn outage_of_500s_loses_nothing_duplicates_nothing_keeps_order() {
    let script: Vec<Reply> = (0..25).map(|_| Reply::status(500)).collect();
    let rx = Receiver::start(ReceiverConfig::default().statuses(script)).unwrap();
    let d = Dispatcher::builder().workers(1).build().unwrap();
    d.add_endpoint(quick("outage", rx.url())).unwrap();
    let n = 200;
    for i in 0..n {
        d.publish_raw(event(i)).unwrap();
        if i % 10 == 0 {
            let m = d.snapshot().remove(0).metrics;
            assert!(m.balanced(), "{m:?}");
            assert!(rx.stats().events >= m.delivered, "{m:?}");
        }
    }
    assert!(d.wait_idle(Duration::from_secs(10)));
    let m = d.snapshot().remove(0).metrics;
    let r = rx.stats();
    assert_eq!(r.distinct, n as u64);
    assert_eq!(r.duplicates, 0);
    assert_eq!(rx.ids(), ids(n), "delivered in order");
    assert_eq!(m.delivered, n as u64);
    assert_eq!(m.dropped_total() + m.dead_lettered, 0);
    assert_eq!(m.statuses.get(&500), Some(&25));
    assert_eq!((m.failures, m.retries), (25, 25));
    assert_quiet_and_balanced(&m);
}

#[test]
fn batches_carry_many_events_per_request() {
    let rx = Receiver::start(ReceiverConfig::default()).unwrap();
    let d = Dispatcher::builder().workers(1).build().unwrap();
    let mut cfg = quick("batch", rx.url());
    cfg.batch = BatchConfig::events(50);
    cfg.batch.linger = Duration::from_millis(20);
    d.add_endpoint(cfg).unwrap();
    let n = 1000;
    for i in 0..n {
        d.publish_raw(event(i)).unwrap();
    }
    assert!(d.wait_idle(Duration::from_secs(10)));
    let r = rx.stats();
    assert_eq!(rx.ids(), ids(n));
    assert!(r.requests <= 40, "{} requests for {n} events", r.requests);
    let m = d.snapshot().remove(0).metrics;
    assert_eq!(m.delivered, n as u64);
    assert_quiet_and_balanced(&m);
}

#[test]
fn a_hanging_neighbour_does_not_hold_up_a_healthy_endpoint() {
    let healthy = Receiver::start(ReceiverConfig::default()).unwrap();
    let hanging = Receiver::start(ReceiverConfig::default().hang()).unwrap();
    // One worker owns both: isolation must come from non-blocking I/O, not from threads.
    let d = Dispatcher::builder().workers(1).build().unwrap();
    let mut stuck = quick("stuck", hanging.url());
    stuck.timeout = Duration::from_secs(30);
    d.add_endpoint(stuck).unwrap();
    d.add_endpoint(quick("healthy", healthy.url())).unwrap();
    let n = 300;
    for i in 0..n {
        d.publish_raw(event(i)).unwrap();
    }
    assert!(healthy.wait_for_distinct(n as u64, Duration::from_secs(10)));
    assert_eq!(healthy.ids(), ids(n));
    // The receiver counts a request before the endpoint reads its answer.
    eventually("healthy delivered", || {
        d.snapshot()[1].metrics.delivered == n as u64
    });
    let snaps = d.snapshot();
    let (stuck, ok) = (&snaps[0].metrics, &snaps[1].metrics);
    assert_eq!(ok.delivered, n as u64);
    assert_eq!(stuck.delivered, 0);
    assert_eq!(stuck.in_flight, 1, "one request hangs, the rest wait");
    assert!(stuck.balanced() && ok.balanced());
    // Shutdown keeps its deadline although a request hangs, and counts what it gives up.
    let t = Instant::now();
    let report = d.shutdown(Duration::from_millis(200));
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "shutdown took {:?}",
        t.elapsed()
    );
    assert!(!report.drained);
    assert_eq!(report.undelivered, n as u64, "{report:?}");
    let stuck = &report.endpoints[0].metrics;
    assert_eq!(stuck.dropped[&DropReason::Shutdown], n as u64);
    assert_quiet_and_balanced(stuck);
    assert_eq!(stuck.pending, 0);
}

#[test]
fn gone_disables_the_endpoint_until_enabled_and_keeps_its_events() {
    let rx = Receiver::start(ReceiverConfig::default().statuses(vec![Reply::status(410)])).unwrap();
    let d = Dispatcher::builder().workers(1).build().unwrap();
    let id = d.add_endpoint(quick("gone", rx.url())).unwrap();
    for i in 0..5 {
        d.publish_raw(event(i)).unwrap();
    }
    eventually("disabled", || {
        d.endpoint_snapshot(id).unwrap().metrics.disabled
    });
    let m = d.endpoint_snapshot(id).unwrap().metrics;
    assert_eq!(m.delivered, 0);
    assert_eq!(m.pending + m.unread, 5, "kept, not dropped: {m:?}");
    assert_eq!(rx.stats().requests, 1, "nothing is sent while disabled");
    d.enable(id).unwrap();
    assert!(d.wait_idle(Duration::from_secs(10)));
    assert_eq!(rx.ids(), ids(5));
    let m = d.endpoint_snapshot(id).unwrap().metrics;
    assert!(!m.disabled);
    assert_eq!(m.delivered, 5);
    assert_quiet_and_balanced(&m);
}

#[test]
fn retry_after_is_respected() {
    let rx = Receiver::start(
        ReceiverConfig::default().statuses(vec![Reply::status(503).retry_after("1")]),
    )
    .unwrap();
    let d = Dispatcher::builder().workers(1).build().unwrap();
    let id = d.add_endpoint(quick("throttled", rx.url())).unwrap();
    let t = Instant::now();
    d.publish_raw(event(0)).unwrap();
    assert!(d.wait_idle(Duration::from_secs(10)));
    // The receiver asked for one second; the retry waited at least that (a lower bound, so
    // a slow machine cannot make this fail).
    assert!(t.elapsed() >= Duration::from_secs(1), "{:?}", t.elapsed());
    let m = d.endpoint_snapshot(id).unwrap().metrics;
    assert_eq!((m.delivered, m.retries, m.failures), (1, 1, 1));
    assert_eq!(m.statuses.get(&503), Some(&1));
    assert_quiet_and_balanced(&m);
}

#[test]
fn a_permanent_4xx_is_dead_lettered() {
    let rx = Receiver::start(ReceiverConfig::default().statuses(vec![Reply::status(400)])).unwrap();
    let d = Dispatcher::builder().workers(1).build().unwrap();
    let id = d.add_endpoint(quick("bad", rx.url())).unwrap();
    for i in 0..3 {
        d.publish_raw(event(i)).unwrap();
    }
    assert!(d.wait_idle(Duration::from_secs(10)));
    let m = d.endpoint_snapshot(id).unwrap().metrics;
    assert_eq!((m.dead_lettered, m.delivered), (1, 2));
    assert_eq!(rx.ids(), ["e1", "e2"]);
    assert_quiet_and_balanced(&m);
}

#[test]
fn overflow_policies_are_counted() {
    // A receiver that hangs keeps every event queued; a tiny ring makes the endpoints copy
    // their backlog out early, so capacity is reached quickly.
    let rx = Receiver::start(ReceiverConfig::default().hang()).unwrap();
    let d = Dispatcher::builder()
        .workers(1)
        .ring_capacity(64)
        .publish_timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    let policies = [
        ("reject", Overflow::Reject),
        ("newest", Overflow::DropNewest),
        ("oldest", Overflow::DropOldest),
        (
            "block",
            Overflow::Block {
                timeout: Some(Duration::from_millis(5)),
            },
        ),
    ];
    for (name, overflow) in policies {
        let mut cfg = quick(name, rx.url());
        cfg.timeout = Duration::from_secs(30);
        cfg.capacity = 100;
        cfg.overflow = overflow;
        d.add_endpoint(cfg).unwrap();
    }
    let n = 2000;
    let mut errors = 0;
    for i in 0..n {
        match d.publish_raw(event(i)) {
            Ok(()) => {}
            Err(Error::Broadcast { .. } | Error::Full { .. } | Error::Timeout { .. }) => {
                errors += 1
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(errors > 0);
    let snaps = d.snapshot();
    let by = |name: &str| {
        snaps
            .iter()
            .find(|s| s.name == name)
            .unwrap()
            .metrics
            .clone()
    };
    for (name, reason) in [
        ("reject", DropReason::Rejected),
        ("newest", DropReason::Newest),
        ("oldest", DropReason::Oldest),
        ("block", DropReason::BlockTimeout),
    ] {
        let m = by(name);
        assert!(m.dropped[&reason] > 0, "{name}: {m:?}");
        assert!(m.balanced(), "{name}: {m:?}");
        // Bounded: capacity plus at most one ring of events in flight to the worker.
        assert!(m.pending <= 100 + 64 + 1, "{name}: {m:?}");
        // Every publish is counted, or still unread in the ring.
        assert!(
            m.events <= n as u64 && m.events + m.unread >= n as u64,
            "{name}: {m:?}"
        );
    }
    let report = d.shutdown(Duration::from_millis(100));
    for s in &report.endpoints {
        assert_eq!(s.metrics.pending, 0, "{s:?}");
        assert!(s.metrics.balanced(), "{s:?}");
    }
}

/// Issue 10, item 19: `capacity` bounds everything an endpoint holds, taken or still in the
/// ring, not capacity plus a ring: with a receiver that never answers, exactly `capacity`
/// publishes succeed for a bounding policy, whatever the ring's size.
#[test]
fn capacity_bounds_what_an_endpoint_holds_ring_included() {
    let rx = Receiver::start(ReceiverConfig::default().hang()).unwrap();
    for (overflow, reason) in [
        (Overflow::Reject, DropReason::Rejected),
        (
            Overflow::Block {
                timeout: Some(Duration::from_millis(1)),
            },
            DropReason::BlockTimeout,
        ),
    ] {
        let d = Dispatcher::builder().workers(1).build().unwrap();
        let mut cfg = quick("bounded", rx.url());
        cfg.timeout = Duration::from_secs(30);
        cfg.capacity = 700;
        cfg.overflow = overflow;
        d.add_endpoint(cfg).unwrap();
        let ok = (0..3000)
            .filter(|&i| d.publish_raw(event(i)).is_ok())
            .count();
        assert_eq!(ok, 700, "{overflow:?}");
        // Held: taken by its worker (pending) or still in the ring for it (unread).
        let m = d.snapshot().remove(0).metrics;
        assert_eq!(m.pending + m.unread, 700, "{overflow:?}: {m:?}");
        assert_eq!(m.dropped[&reason], 2300, "{overflow:?}: {m:?}");
        assert!(m.balanced(), "{m:?}");
        let _ = d.shutdown(Duration::from_millis(100));
    }
}

#[test]
fn identity_holds_under_mixed_faults_and_many_producers() {
    let flaky =
        Receiver::start(ReceiverConfig::default().fail_for(Duration::from_millis(100), 500))
            .unwrap();
    let dropper = Receiver::start(ReceiverConfig::default().drop_connection()).unwrap();
    let fine = Receiver::start(ReceiverConfig::default()).unwrap();
    let d = Arc::new(Dispatcher::builder().workers(2).build().unwrap());
    d.add_endpoint(quick("flaky", flaky.url())).unwrap();
    let mut drop_cfg = quick("dropper", dropper.url());
    drop_cfg.max_attempts = Some(2);
    d.add_endpoint(drop_cfg).unwrap();
    let mut fine_cfg = quick("fine", fine.url());
    fine_cfg.batch = BatchConfig::events(10);
    d.add_endpoint(fine_cfg).unwrap();
    let next = Arc::new(AtomicU64::new(0));
    let producers: Vec<_> = (0..4)
        .map(|_| {
            let (d, next) = (d.clone(), next.clone());
            std::thread::spawn(move || {
                for _ in 0..100 {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    d.publish_raw(event(i)).unwrap();
                }
            })
        })
        .collect();
    for p in producers {
        p.join().unwrap();
    }
    assert!(d.wait_idle(Duration::from_secs(20)));
    for s in d.snapshot() {
        assert_eq!(s.metrics.events, 400, "{s:?}");
        assert_quiet_and_balanced(&s.metrics);
    }
    assert_eq!(fine.stats().distinct, 400);
    assert_eq!(flaky.stats().distinct, 400);
    assert_eq!(flaky.stats().duplicates, 0);
    let dropped = d.snapshot()[1].metrics.clone();
    assert_eq!(dropped.dead_lettered, 400, "{dropped:?}");
}

#[test]
fn in_process_consumers_see_every_event_in_order() {
    let d = Dispatcher::builder().workers(2).build().unwrap();
    let seen: Vec<Arc<parking_lot::Mutex<Vec<String>>>> =
        (0..3).map(|_| Default::default()).collect();
    for (k, s) in seen.iter().enumerate() {
        let s = s.clone();
        d.add_consumer(&format!("c{k}"), move |e| {
            s.lock().push(e.json().to_string())
        })
        .unwrap();
    }
    let n = 20_000;
    for i in 0..n {
        d.publish_raw(event(i)).unwrap();
    }
    assert!(d.wait_idle(Duration::from_secs(10)));
    for s in &seen {
        let got = s.lock();
        assert_eq!(got.len(), n);
        assert!(
            got.iter()
                .enumerate()
                .all(|(i, j)| j.contains(&format!("\"e{i}\"")))
        );
    }
    for s in d.snapshot() {
        assert_eq!(s.metrics.delivered, n as u64);
        assert_quiet_and_balanced(&s.metrics);
    }
}

#[test]
fn filters_route_on_the_host_and_count_what_they_skip() {
    let d = Dispatcher::builder().workers(1).build().unwrap();
    let rx = Receiver::start(ReceiverConfig::default()).unwrap();
    let mut cfg = quick("no-pulls", rx.url());
    cfg.ignored_actions = vec!["pull".into()];
    d.add_endpoint(cfg).unwrap();
    for i in 0..10 {
        let action = if i % 2 == 0 { "push" } else { "pull" };
        d.publish_raw(RawEvent::parse(format!(r#"{{"id":"e{i}","action":"{action}"}}"#)).unwrap())
            .unwrap();
    }
    assert!(d.wait_idle(Duration::from_secs(10)));
    assert_eq!(rx.ids(), ["e0", "e2", "e4", "e6", "e8"]);
    let m = d.snapshot().remove(0).metrics;
    assert_eq!((m.events, m.filtered), (5, 5));
    assert_quiet_and_balanced(&m);
}

#[test]
fn endpoints_come_and_go_at_run_time() {
    let d = Dispatcher::builder().workers(2).build().unwrap();
    let a = Receiver::start(ReceiverConfig::default()).unwrap();
    let b = Receiver::start(ReceiverConfig::default()).unwrap();
    let ida = d.add_endpoint(quick("a", a.url())).unwrap();
    d.publish_raw(event(0)).unwrap();
    let idb = d.add_endpoint(quick("b", b.url())).unwrap();
    d.publish_raw(event(1)).unwrap();
    let last = d.remove_endpoint(ida, Duration::from_secs(5)).unwrap();
    assert_eq!(last.metrics.delivered, 2);
    d.publish_raw(event(2)).unwrap();
    assert!(d.wait_idle(Duration::from_secs(10)));
    assert_eq!(a.ids(), ["e0", "e1"]);
    assert_eq!(b.ids(), ["e1", "e2"]);
    assert!(d.endpoint_snapshot(ida).is_none());
    assert_eq!(d.endpoint_snapshot(idb).unwrap().metrics.delivered, 2);
    // The name is free again, and the bit is reused without seeing old events.
    d.add_endpoint(quick("a", a.url())).unwrap();
    assert!(d.wait_idle(Duration::from_secs(1)));
    assert_eq!(a.ids(), ["e0", "e1"]);
}

#[test]
fn bad_config_and_closed_dispatcher_are_typed_errors() {
    let field = |r: Result<Dispatcher, Error>| match r {
        Err(Error::Config { field, .. }) => field,
        other => panic!("{other:?}"),
    };
    assert_eq!(field(Dispatcher::builder().workers(0).build()), "workers");
    assert_eq!(
        field(Dispatcher::builder().ring_capacity(1000).build()),
        "ring_capacity"
    );
    let d = Dispatcher::builder().workers(1).build().unwrap();
    let cfg_field = |cfg: EndpointConfig| match d.add_endpoint(cfg) {
        Err(Error::Config { field, .. }) => field,
        other => panic!("{other:?}"),
    };
    assert_eq!(cfg_field(EndpointConfig::new("x", "ftp://h/")), "url");
    let mut cfg = EndpointConfig::new("x", "http://127.0.0.1:1/");
    cfg.max_in_flight = 0;
    assert_eq!(cfg_field(cfg), "max_in_flight");
    let mut cfg = EndpointConfig::new("x", "http://127.0.0.1:1/");
    cfg.headers = vec![("Content-Length".into(), "1".into())];
    assert_eq!(cfg_field(cfg), "headers");
    d.add_endpoint(EndpointConfig::new("dup", "http://127.0.0.1:1/"))
        .unwrap();
    assert_eq!(
        cfg_field(EndpointConfig::new("dup", "http://127.0.0.1:1/")),
        "name"
    );
    Sink::<RawEvent>::close(&d).unwrap();
    assert!(matches!(d.publish_raw(event(0)), Err(Error::Closed)));
    assert!(matches!(
        d.add_endpoint(EndpointConfig::new("late", "http://127.0.0.1:1/")),
        Err(Error::Closed)
    ));
}

#[test]
fn https_with_a_generated_ca_is_delivered_and_without_it_is_not() {
    let (ca, chain, key) = test_pki();
    let rx = Receiver::start(ReceiverConfig::new().tls(chain, key)).unwrap();
    assert!(rx.url().starts_with("https://"));
    let d = Dispatcher::builder().workers(1).build().unwrap();
    let mut trusted = quick("trusted", rx.url());
    trusted.tls.ca_pem = Some(ca);
    trusted.batch = BatchConfig::events(7);
    let trusted = d.add_endpoint(trusted).unwrap();
    // Without the CA the handshake fails every time: retried, then given up.
    let mut untrusted = quick("untrusted", rx.url());
    untrusted.max_attempts = Some(2);
    let untrusted = d.add_endpoint(untrusted).unwrap();
    let n = 50;
    for i in 0..n {
        d.publish_raw(event(i)).unwrap();
    }
    assert!(d.wait_idle(Duration::from_secs(10)));
    let ok = d.endpoint_snapshot(trusted).unwrap().metrics;
    assert_eq!(ok.delivered, n as u64);
    assert_quiet_and_balanced(&ok);
    let bad = d.endpoint_snapshot(untrusted).unwrap().metrics;
    assert_eq!((bad.delivered, bad.dead_lettered), (0, n as u64));
    assert!(bad.errors > 0 && bad.successes == 0, "{bad:?}");
    assert_quiet_and_balanced(&bad);
    assert_eq!(rx.ids(), ids(n), "only the trusted endpoint got through");
    // The trusted endpoint kept one TLS connection; each untrusted attempt was a handshake.
    assert_eq!(rx.stats().connections, 1 + 2 * n as u64);
}

/// Regressions found in review: a past deadline re-armed in the timer loop froze the worker
/// (removal by deadline, a lingering batch of a disabled endpoint); a removed endpoint's bit
/// was freed while its worker still held it.
#[test]
fn removal_by_deadline_and_lingering_batches_never_freeze_a_worker() {
    let hanging = Receiver::start(ReceiverConfig::default().hang()).unwrap();
    let healthy = Receiver::start(ReceiverConfig::default()).unwrap();
    let d = Dispatcher::builder().workers(1).build().unwrap();
    let mut stuck = quick("stuck", hanging.url());
    stuck.timeout = Duration::from_secs(30);
    let stuck = d.add_endpoint(stuck).unwrap();
    let mut lingering = quick("lingering", healthy.url());
    lingering.batch = BatchConfig::events(10);
    lingering.batch.linger = Duration::from_millis(100);
    let lingering = d.add_endpoint(lingering).unwrap();
    d.publish_raw(event(0)).unwrap();
    eventually("stuck in flight", || {
        d.endpoint_snapshot(stuck).unwrap().metrics.in_flight == 1
    });
    let last = d
        .remove_endpoint(stuck, Duration::from_millis(100))
        .unwrap();
    assert_eq!(last.metrics.pending, 0, "{last:?}");
    assert_eq!(last.metrics.dropped[&DropReason::Shutdown], 1);
    // The worker still runs: the other endpoint delivers, and the name and bit are reusable.
    d.publish_raw(event(1)).unwrap();
    assert!(healthy.wait_for_distinct(2, Duration::from_secs(10)));
    let again = d.add_endpoint(quick("stuck", healthy.url())).unwrap();
    d.disable(lingering).unwrap();
    d.publish_raw(event(2)).unwrap();
    std::thread::sleep(Duration::from_millis(300)); // past the linger, while disabled
    assert!(
        healthy.wait_for_distinct(3, Duration::from_secs(10)),
        "e2 via the new endpoint"
    );
    let t = Instant::now();
    let report = d.shutdown(Duration::from_millis(200));
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "shutdown took {:?}",
        t.elapsed()
    );
    assert_eq!(
        report.undelivered, 1,
        "the disabled endpoint's e2: {report:?}"
    );
    assert!(report.endpoints.iter().all(|s| s.metrics.balanced()));
    let _ = again;
}

#[test]
fn an_endpoint_that_wants_nothing_does_not_hold_up_wait_idle() {
    let rx = Receiver::start(ReceiverConfig::default()).unwrap();
    let d = Dispatcher::builder().workers(2).build().unwrap();
    let mut picky = quick("picky", rx.url());
    picky.ignored_actions = vec!["push".into()];
    d.add_endpoint(picky).unwrap();
    d.add_endpoint(quick("all", rx.url())).unwrap();
    for i in 0..10 {
        d.publish_raw(event(i)).unwrap();
    }
    assert!(d.wait_idle(Duration::from_secs(5)));
    assert!(d.shutdown(Duration::from_secs(5)).drained);
}

#[test]
fn an_event_that_does_not_fit_sends_the_batch_at_once() {
    let rx = Receiver::start(ReceiverConfig::default()).unwrap();
    let d = Dispatcher::builder().workers(1).build().unwrap();
    let mut cfg = quick("small", rx.url());
    cfg.batch = BatchConfig::events(10);
    cfg.batch.max_bytes = 1024;
    cfg.batch.linger = Duration::from_secs(30);
    d.add_endpoint(cfg).unwrap();
    let pad = "x".repeat(600);
    for i in 0..2 {
        d.publish_raw(RawEvent::parse(format!(r#"{{"id":"e{i}","pad":"{pad}"}}"#)).unwrap())
            .unwrap();
    }
    // The first batch is full when the second event does not fit: it goes without waiting
    // for its linger. (The second lingers; it is delivered at shutdown's drain or dropped.)
    assert!(rx.wait_for_distinct(1, Duration::from_secs(10)));
    assert_eq!(rx.ids(), ["e0"]);
}

#[test]
fn extreme_durations_are_typed_errors_or_clamped_never_panics() {
    let d = Dispatcher::builder().workers(1).build().unwrap();
    let mut cfg = EndpointConfig::new("block", "http://127.0.0.1:1/");
    cfg.overflow = Overflow::Block {
        timeout: Some(Duration::MAX),
    };
    assert!(matches!(
        d.add_endpoint(cfg),
        Err(Error::Config {
            field: "overflow",
            ..
        })
    ));
    let id = d
        .add_endpoint(EndpointConfig::new("idle", "http://127.0.0.1:1/"))
        .unwrap();
    let last = d.remove_endpoint(id, Duration::MAX).unwrap();
    assert!(last.metrics.balanced());
}

#[test]
fn the_ssrf_guard_refuses_private_destinations_unless_allowed() {
    let rx = Receiver::start(ReceiverConfig::default()).unwrap();
    let port = rx.addr().port();
    let d = Dispatcher::builder().workers(1).build().unwrap();
    // An IP literal that is not public: refused when added, naming the setting.
    let mut literal = quick("literal", rx.url());
    literal.allow_private = false;
    match d.add_endpoint(literal) {
        Err(Error::Config {
            field: "url",
            reason,
        }) => {
            assert!(reason.contains("loopback"), "{reason}")
        }
        other => panic!("expected a config error, got {other:?}"),
    }
    // A name is checked on what it resolves to, at connect: nothing reaches the receiver,
    // and the endpoint says why.
    let mut guarded = quick("guarded", format!("http://localhost:{port}/"));
    guarded.allow_private = false;
    guarded.max_attempts = Some(2);
    d.add_endpoint(guarded).unwrap();
    d.publish_raw(event(0)).unwrap();
    eventually("the event is given up", || {
        d.snapshot()[0].metrics.dead_lettered == 1
    });
    let snap = d.snapshot().remove(0);
    let why = snap.health.last_error.clone().unwrap_or_default();
    assert!(
        why.contains("refused to connect") && why.contains("loopback"),
        "{why}"
    );
    assert_eq!(rx.stats().connections, 0);
    let m = &snap.metrics;
    assert_eq!(
        m.events,
        m.delivered + m.dead_lettered + m.pending + m.dropped.values().sum::<u64>()
    );
    // The same name with allow_private (the library's default) delivers.
    d.add_endpoint(quick("allowed", format!("http://localhost:{port}/")))
        .unwrap();
    d.publish_raw(event(1)).unwrap();
    assert!(d.wait_idle(Duration::from_secs(10)));
    assert_eq!(rx.ids(), ["e1"]);
    let _ = d.shutdown(Duration::from_secs(1));
}

#[test]
fn snapshots_show_the_breaker_state() {
    // Five 500s: the breaker (threshold 3) opens, then closes on the first 2xx.
    let script: Vec<Reply> = (0..5).map(|_| Reply::status(500)).collect();
    let rx = Receiver::start(ReceiverConfig::default().statuses(script)).unwrap();
    let d = Dispatcher::builder().workers(1).build().unwrap();
    let mut cfg = quick("b", rx.url());
    cfg.backoff = Duration::from_millis(300);
    d.add_endpoint(cfg).unwrap();
    let breaker = |d: &Dispatcher| d.snapshot()[0].health.breaker.clone();
    assert_eq!(breaker(&d).as_deref(), Some("closed"));
    d.publish_raw(event(0)).unwrap();
    eventually("the breaker opens", || {
        breaker(&d).as_deref() == Some("open")
    });
    assert!(d.wait_idle(Duration::from_secs(10)));
    assert_eq!(rx.ids(), ["e0"]);
    assert_eq!(breaker(&d).as_deref(), Some("closed"));
    let _ = d.shutdown(Duration::from_secs(1));
}

#[test]
fn an_endpoint_gets_only_the_repositories_its_globs_match() {
    let all = Receiver::start(ReceiverConfig::default()).unwrap();
    let library = Receiver::start(ReceiverConfig::default()).unwrap();
    let d = Dispatcher::builder().workers(1).build().unwrap();
    d.add_endpoint(quick("all", all.url())).unwrap();
    let mut cfg = quick("library", library.url());
    cfg.repositories = vec!["library/*".into(), "team/**".into()];
    d.add_endpoint(cfg).unwrap();
    let mut bad = quick("bad", all.url());
    bad.repositories = vec![" ".into()];
    assert!(matches!(
        d.add_endpoint(bad),
        Err(Error::Config {
            field: "repositories",
            ..
        })
    ));
    let repos = [
        "library/alpine",
        "library/a/b",
        "team/app/api",
        "other/app",
        "",
    ];
    for (i, repo) in repos.iter().enumerate() {
        let json = if repo.is_empty() {
            format!(r#"{{"id":"r{i}","action":"push"}}"#)
        } else {
            format!(r#"{{"id":"r{i}","action":"push","target":{{"repository":"{repo}"}}}}"#)
        };
        d.publish_raw(RawEvent::parse(json).unwrap()).unwrap();
    }
    assert!(d.wait_idle(Duration::from_secs(10)));
    assert_eq!(all.ids(), ["r0", "r1", "r2", "r3", "r4"]);
    assert_eq!(library.ids(), ["r0", "r2"], "only library/* and team/**");
    let filtered = d.snapshot()[1].metrics.filtered;
    assert_eq!(
        filtered, 3,
        "the three it does not want are counted as filtered"
    );
    let _ = d.shutdown(Duration::from_secs(1));
}
