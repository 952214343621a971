//! The engine beside a hostile receiver (issue 9): a server that answers `200`, chunked,
//! then a chunk-size line that never ends must cost its own endpoint failed attempts, and
//! nothing to the endpoints that share its worker. A server that hangs, trickles, or never
//! finishes a TLS handshake is failed at the endpoint's own deadlines (the connection under
//! it has no timer: the endpoint keeps every deadline).

use std::time::{Duration, Instant};

use hookwire::endpoint::EndpointConfig;
use hookwire::engine::Dispatcher;
use hookwire::http::TlsOptions;
use hookwire::stats::Metrics;
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

/// Sends one event to `cfg` (its own dispatcher, one worker) and waits for the endpoint's
/// first failed attempt: the error it recorded, how long after publishing it came, and the
/// metrics then. Waits at most 10 s (a safety net: each use expects well under 1 s).
fn first_failure(cfg: EndpointConfig) -> (String, Duration, Metrics) {
    let d = Dispatcher::builder().workers(1).build().unwrap();
    let id = d.add_endpoint(cfg).unwrap();
    let started = Instant::now();
    d.publish_raw(event(0)).unwrap();
    loop {
        let snap = d.endpoint_snapshot(id).unwrap();
        if snap.metrics.errors > 0 {
            let took = started.elapsed();
            let err = snap
                .health
                .last_error
                .expect("an error is recorded with its count");
            let _ = d.shutdown(Duration::from_millis(100));
            return (err, took, snap.metrics);
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no failure: {:?}",
            snap.metrics
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn a_hanging_server_fails_at_the_request_timeout() {
    // Reads the request, never answers.
    let h = Hostile::silent().unwrap();
    let mut cfg = EndpointConfig::new("hang", h.url());
    cfg.timeout = Duration::from_millis(300);
    let (err, took, m) = first_failure(cfg);
    assert!(
        err.contains("response") && err.contains("300ms"),
        "{err} ({m:?})"
    );
    assert!(
        took >= Duration::from_millis(300),
        "{took:?}: before its deadline"
    );
    assert_eq!(m.delivered, 0);
    assert!(m.balanced(), "{m:?}");
}

#[test]
fn a_trickle_fails_at_the_request_timeout() {
    // 40 bytes, one per 100 ms: the whole answer would take 4 s, and be a `200`.
    let h = Hostile::trickle(Duration::from_millis(100)).unwrap();
    let mut cfg = EndpointConfig::new("trickle", h.url());
    cfg.timeout = Duration::from_millis(500);
    let (err, took, m) = first_failure(cfg);
    assert!(
        err.contains("response") && err.contains("500ms"),
        "{err} ({m:?})"
    );
    // At the timeout, not when the bytes stop (4 s): the upper bound leaves 1.5 s for a
    // loaded machine.
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert_eq!(m.delivered, 0);
    assert!(h.stats().requests >= 1, "{:?}", h.stats());
}

#[test]
fn a_stalled_tls_handshake_fails_at_the_connect_timeout() {
    // Accepts, reads the `ClientHello`, never writes a byte.
    let h = Hostile::silent().unwrap();
    let mut cfg = EndpointConfig::new("stalled", format!("https://{}/hook", h.addr()));
    cfg.tls = TlsOptions {
        ca_pem: None,
        insecure: true,
        system_roots: false,
    };
    cfg.timeout = Duration::from_secs(5);
    cfg.connect_timeout = Some(Duration::from_millis(300));
    let (err, took, m) = first_failure(cfg);
    // The connect deadline, not the request's (that one would say 5s, or "response").
    assert!(
        err.contains("connect") && err.contains("300ms"),
        "{err} ({m:?})"
    );
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(5),
        "{took:?}"
    );
    // TCP connected; the handshake is what never finished, so no request was read.
    let st = h.stats();
    assert!(st.connections >= 1 && st.requests == 0, "{st:?}");
    assert_eq!(m.delivered, 0);
}
