//! The engine beside a hostile receiver (issue 9): a server that answers `200`, chunked,
//! then a chunk-size line that never ends must cost its own endpoint failed attempts, and
//! nothing to the endpoints that share its worker.

use std::time::{Duration, Instant};

use hookwire::endpoint::EndpointConfig;
use hookwire::engine::Dispatcher;
use hookwire::testkit::{Hostile, Receiver, ReceiverConfig};

mod common;

use common::event;

/// How long the healthy endpoint may take for its 2,000 events. Alone it takes well under a
/// second; on the code before the fix it had 1 of them after 15 s (the worker never came
/// back from reading the endless line). A liveness bound, not a speed claim.
const LIVENESS: Duration = Duration::from_secs(30);

#[test]
fn an_endless_chunk_size_line_does_not_stall_its_worker() {
    // One worker for both endpoints, with the defaults `hookwire send` uses.
    let d = Dispatcher::builder().workers(1).build().unwrap();
    // Declared after `d`, so dropped before it: if the worker is stuck reading (the defect),
    // shutting the server's sockets frees it, and the test fails instead of hanging.
    let hostile = Hostile::endless_chunk_size().unwrap();
    let rx = Receiver::start(ReceiverConfig::default()).unwrap();
    let bad = d
        .add_endpoint(EndpointConfig::new("hostile", hostile.url()))
        .unwrap();
    let good = d
        .add_endpoint(EndpointConfig::new("healthy", rx.url()))
        .unwrap();

    let n = 2_000;
    let started = Instant::now();
    for i in 0..n {
        d.publish_raw(event(i)).unwrap();
    }
    let all = rx.wait_for_distinct(n as u64, LIVENESS);
    let took = started.elapsed();
    let got = rx.stats();
    assert!(
        all,
        "the healthy endpoint received {} of {n} events in {took:?}",
        got.distinct
    );
    assert_eq!((got.distinct, got.duplicates), (n as u64, 0));

    // The hostile endpoint was tried, and every try failed (never a delivery).
    let m = d.endpoint_snapshot(bad).unwrap().metrics;
    assert!(hostile.stats().requests >= 1, "{:?}", hostile.stats());
    assert!(m.errors >= 1 && m.delivered == 0, "{m:?}");
    assert!(
        m.balanced(),
        "identity broken for the hostile endpoint: {m:?}"
    );
    let h = d.endpoint_snapshot(good).unwrap().metrics;
    assert!(
        h.balanced(),
        "identity broken for the healthy endpoint: {h:?}"
    );

    let report = d.shutdown(Duration::from_millis(200));
    for ep in &report.endpoints {
        let m = &ep.metrics;
        assert!(m.balanced(), "{}: {m:?}", ep.name);
        assert_eq!(m.events, n as u64, "{}: {m:?}", ep.name);
        assert_eq!((m.pending, m.queued, m.in_flight), (0, 0, 0), "{}", ep.name);
    }
    let delivered = |name: &str| {
        let ep = report.endpoints.iter().find(|e| e.name == name).unwrap();
        ep.metrics.delivered
    };
    assert_eq!((delivered("healthy"), delivered("hostile")), (n as u64, 0));
}

/// The other side of the drive budget: a request larger than one drive may move is written
/// over several loop turns, each resumed by the worker without a socket event (mio reports a
/// socket again only after `WouldBlock`).
#[test]
fn requests_larger_than_one_drive_are_resumed_by_the_worker() {
    let d = Dispatcher::builder().workers(1).build().unwrap();
    let rx = Receiver::start(ReceiverConfig::default()).unwrap();
    let mut cfg = EndpointConfig::new("large", rx.url());
    cfg.timeout = Duration::from_secs(5);
    d.add_endpoint(cfg).unwrap();
    let n = 8;
    let pad = "p".repeat(1 << 20); // 1 MiB per event, one event per request
    for i in 0..n {
        let json = format!(r#"{{"id":"e{i}","pad":"{pad}"}}"#);
        d.publish_raw(hookwire::RawEvent::parse(json).unwrap())
            .unwrap();
    }
    assert!(
        rx.wait_for_distinct(n, LIVENESS),
        "{:?} / {:?}",
        rx.stats(),
        d.snapshot()[0].metrics
    );
    let report = d.shutdown(Duration::from_secs(1));
    let m = &report.endpoints[0].metrics;
    assert!(m.balanced(), "{m:?}");
    assert_eq!((m.delivered, m.errors, m.retries), (n, 0, 0), "{m:?}");
}
