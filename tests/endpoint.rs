//! An `Endpoint` against the loopback receiver, under faults. Every test ends by checking the
//! accounting identity against what the receiver itself counted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hookwire::endpoint::{Endpoint, EndpointConfig, RetryConfig};
use hookwire::policy::ManualClock;
use hookwire::sink::{GivenUp, Overflow, from_fn};
use hookwire::stats::DropReason;
use hookwire::testkit::{Receiver, ReceiverConfig, Reply};
mod common;

use common::{assert_quiet_and_balanced, event, eventually, ids};
use hookwire::{Error, RawEvent, Sink};
use parking_lot::Mutex;

#[test]
fn outage_of_500s_loses_nothing_duplicates_nothing_keeps_order() {
    let script: Vec<Reply> = (0..25).map(|_| Reply::status(500)).collect();
    let rx = Receiver::start(ReceiverConfig::default().statuses(script)).unwrap();
    let clock = ManualClock::new();
    let ep = Endpoint::<RawEvent>::builder(EndpointConfig::new("outage", rx.url()))
        .clock(Arc::new(clock))
        .build()
        .unwrap();
    let n = 200;
    for i in 0..n {
        ep.write(event(i)).unwrap();
        if i % 10 == 0 {
            // Throughout delivery: the identity holds, and the endpoint never claims more
            // deliveries than the receiver saw.
            let m = ep.snapshot().metrics;
            assert!(m.balanced(), "{m:?}");
            assert!(rx.stats().events >= m.delivered, "{m:?}");
        }
    }
    ep.close().unwrap();
    let m = ep.snapshot().metrics;
    let r = rx.stats();
    assert_eq!(r.distinct, n as u64);
    assert_eq!(r.duplicates, 0);
    assert_eq!(rx.ids(), ids(n), "delivered in order");
    assert_eq!(m.delivered, n as u64);
    assert_eq!(m.pending, 0);
    assert_eq!(m.dropped_total() + m.dead_lettered, 0);
    assert_eq!(m.statuses.get(&500), Some(&25));
    assert_eq!(m.failures, 25);
    assert_eq!(m.retries, 25);
    assert_eq!(m.successes, n as u64);
    assert_quiet_and_balanced(&m);
}

#[test]
fn a_hanging_receiver_times_out_is_retried_and_close_keeps_its_deadline() {
    let rx = Receiver::start(ReceiverConfig::default().hang()).unwrap();
    let mut cfg = EndpointConfig::new("hang", rx.url());
    cfg.timeout = Duration::from_millis(150);
    cfg.max_attempts = Some(3);
    cfg.close_timeout = Duration::from_millis(200);
    let letters = Arc::new(Mutex::new(Vec::<GivenUp<RawEvent>>::new()));
    let l2 = letters.clone();
    let ep = Endpoint::<RawEvent>::builder(cfg)
        .clock(Arc::new(ManualClock::new()))
        .dead_letter(Arc::new(from_fn(move |d: GivenUp<RawEvent>| {
            l2.lock().push(d);
            Ok(())
        })))
        .build()
        .unwrap();
    ep.write(event(0)).unwrap();
    eventually("the first event is given up", || {
        ep.snapshot().metrics.dead_lettered == 1
    });
    let m = ep.snapshot().metrics;
    assert_eq!(m.errors, 3, "three attempts, each timed out: {m:?}");
    assert_eq!(m.retries, 2);
    {
        let letters = letters.lock();
        assert_eq!(letters[0].attempts, 3);
        assert!(matches!(letters[0].last_error, Some(Error::Timeout { .. })));
    }

    for i in 1..50 {
        ep.write(event(i)).unwrap();
    }
    let started = Instant::now();
    let res = ep.close();
    let took = started.elapsed();
    // close_timeout + one request timeout, with a wide margin for a loaded machine.
    assert!(took < Duration::from_secs(3), "close took {took:?}");
    assert!(matches!(res, Err(Error::Undelivered { .. })), "{res:?}");
    let m = ep.snapshot().metrics;
    assert!(m.balanced(), "{m:?}");
    assert_eq!(m.delivered, 0);
    assert!(m.dropped[&DropReason::Shutdown] >= 48, "{m:?}");
    assert!(matches!(ep.write(event(99)), Err(Error::Closed)));
    // The event that was in flight at the deadline is counted once its request ends.
    eventually("the in-flight event finishes", || {
        ep.snapshot().metrics.in_flight == 0
    });
    let m = ep.snapshot().metrics;
    assert_eq!(m.pending, 0, "{m:?}");
    assert!(m.balanced(), "{m:?}");
}

#[test]
fn an_event_delivered_after_the_close_deadline_is_counted_once() {
    let slow = Reply::status(200).delay(Duration::from_millis(300));
    let rx = Receiver::start(ReceiverConfig::default().statuses(vec![slow])).unwrap();
    let mut cfg = EndpointConfig::new("late", rx.url());
    cfg.close_timeout = Duration::from_millis(50);
    let ep = Endpoint::<RawEvent>::new(cfg).unwrap();
    ep.write(event(0)).unwrap();
    eventually("one event in flight", || {
        ep.snapshot().metrics.in_flight == 1
    });
    ep.write(event(1)).unwrap();
    ep.write(event(2)).unwrap();
    assert!(matches!(ep.close(), Err(Error::Undelivered { count: 2 })));
    assert!(rx.wait_for_distinct(1, Duration::from_secs(10)));
    eventually("the late delivery is counted", || {
        ep.snapshot().metrics.delivered == 1
    });
    let m = ep.snapshot().metrics;
    assert_eq!(m.dropped[&DropReason::Shutdown], 2, "{m:?}");
    assert_eq!((m.events, m.pending, m.in_flight), (3, 0, 0), "{m:?}");
    assert!(m.balanced(), "counted once: {m:?}");
}

/// An endpoint whose receiver hangs, so exactly one event is in flight and the queue fills.
fn stuck(overflow: Overflow) -> (Receiver, Endpoint<RawEvent>) {
    let rx = Receiver::start(ReceiverConfig::default().hang()).unwrap();
    let mut cfg = EndpointConfig::new("stuck", rx.url());
    cfg.capacity = 4;
    cfg.overflow = overflow;
    cfg.timeout = Duration::from_secs(30);
    cfg.close_timeout = Duration::from_millis(50);
    let ep = Endpoint::new(cfg).unwrap();
    ep.write(event(0)).unwrap();
    eventually("one event in flight", || {
        ep.snapshot().metrics.in_flight == 1
    });
    for i in 1..=4 {
        ep.write(event(i)).unwrap();
    }
    (rx, ep)
}

#[test]
fn overflow_drop_newest_is_counted() {
    let (_rx, ep) = stuck(Overflow::DropNewest);
    for i in 5..15 {
        ep.write(event(i)).unwrap();
    }
    let m = ep.snapshot().metrics;
    assert_eq!(m.events, 15);
    assert_eq!(m.dropped[&DropReason::Newest], 10);
    assert_eq!(m.queued, 4);
    assert_quiet_and_balanced(&m);
}

#[test]
fn overflow_drop_oldest_is_counted() {
    let (_rx, ep) = stuck(Overflow::DropOldest);
    for i in 5..12 {
        ep.write(event(i)).unwrap();
    }
    let m = ep.snapshot().metrics;
    assert_eq!(m.dropped[&DropReason::Oldest], 7);
    assert_eq!(m.queued, 4);
    assert_quiet_and_balanced(&m);
}

#[test]
fn overflow_reject_returns_full_to_the_caller() {
    let (_rx, ep) = stuck(Overflow::Reject);
    for i in 5..8 {
        assert!(matches!(
            ep.write(event(i)),
            Err(Error::Full { capacity: 4 })
        ));
    }
    let m = ep.snapshot().metrics;
    assert_eq!(m.dropped[&DropReason::Rejected], 3);
    assert_eq!(m.events, 8);
    assert_quiet_and_balanced(&m);
}

#[test]
fn overflow_block_times_out() {
    let (_rx, ep) = stuck(Overflow::Block {
        timeout: Some(Duration::from_millis(20)),
    });
    assert!(matches!(ep.write(event(5)), Err(Error::Timeout { .. })));
    let m = ep.snapshot().metrics;
    assert_eq!(m.dropped[&DropReason::BlockTimeout], 1);
    assert_quiet_and_balanced(&m);
}

#[test]
fn gone_disables_the_endpoint_until_enabled() {
    let rx = Receiver::start(ReceiverConfig::default().statuses(vec![Reply::status(410)])).unwrap();
    let mut cfg = EndpointConfig::new("gone", rx.url());
    cfg.ignored_actions = vec!["pull".into()];
    let ep = Endpoint::<RawEvent>::new(cfg).unwrap();
    ep.write(event(0)).unwrap();
    eventually("disabled, and the event dead-lettered", || {
        ep.is_disabled() && ep.snapshot().metrics.dead_lettered == 1
    });
    assert!(matches!(ep.write(event(1)), Err(Error::Disabled { .. })));
    assert!(ep.snapshot().metrics.disabled);
    // The filter still decides first: an ignored event is filtered, not refused.
    let pull = RawEvent::parse(r#"{"id":"p","action":"pull"}"#).unwrap();
    ep.write(pull).unwrap();
    assert_eq!(ep.snapshot().metrics.filtered, 1);
    ep.enable();
    ep.write(event(2)).unwrap();
    ep.close().unwrap();
    assert_eq!(rx.ids(), vec!["e2".to_string()]);
    assert_quiet_and_balanced(&ep.snapshot().metrics);
}

#[test]
fn permanent_4xx_goes_to_the_dead_letter_sink_at_once() {
    let rx = Receiver::start(ReceiverConfig::default().statuses(vec![Reply::status(400)])).unwrap();
    let letters = Arc::new(Mutex::new(Vec::<GivenUp<RawEvent>>::new()));
    let l2 = letters.clone();
    let ep = Endpoint::<RawEvent>::builder(EndpointConfig::new("bad", rx.url()))
        .dead_letter(Arc::new(from_fn(move |d: GivenUp<RawEvent>| {
            l2.lock().push(d);
            Ok(())
        })))
        .build()
        .unwrap();
    ep.write(event(0)).unwrap();
    ep.write(event(1)).unwrap();
    ep.close().unwrap();
    let letters = letters.lock();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].attempts, 1, "no retry for a permanent failure");
    assert!(matches!(
        letters[0].last_error,
        Some(Error::Status { code: 400, .. })
    ));
    assert_eq!(rx.ids(), vec!["e1".to_string()]);
    let m = ep.snapshot().metrics;
    assert_eq!((m.delivered, m.dead_lettered, m.retries), (1, 1, 0));
    assert_quiet_and_balanced(&m);
}

#[test]
fn signed_requests_verify_and_filters_skip_ignored_events() {
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let rx =
        Receiver::start(ReceiverConfig::default().secrets(vec![secret.parse().unwrap()])).unwrap();
    let mut cfg = EndpointConfig::new("signed", rx.url());
    cfg.secrets = vec![secret.into()];
    cfg.ignored_actions = vec!["pull".into()];
    cfg.retry = RetryConfig::Exponential {
        base: Duration::from_millis(10),
        factor: 2,
        max: Duration::from_secs(1),
    };
    let ep = Endpoint::<RawEvent>::new(cfg).unwrap();
    ep.write(event(0)).unwrap();
    ep.write(RawEvent::parse(r#"{"id":"p","action":"pull"}"#).unwrap())
        .unwrap();
    ep.write(event(1)).unwrap();
    ep.close().unwrap();
    assert_eq!(rx.stats().bad_signatures, 0);
    assert_eq!(rx.ids(), ids(2));
    let m = ep.snapshot().metrics;
    assert_eq!((m.events, m.filtered, m.delivered), (2, 1, 2));
    assert_eq!(m.delivery_lag.count, 2);
    assert_eq!(m.rtt.count, 2);
    assert_quiet_and_balanced(&m);
}

#[test]
fn bad_config_is_a_clear_error_at_construction() {
    let field = |cfg: EndpointConfig| match Endpoint::<RawEvent>::new(cfg) {
        Err(Error::Config { field, .. }) => field,
        Err(e) => panic!("expected a config error, got {e}"),
        Ok(_) => panic!("expected a config error, got an endpoint"),
    };
    let base = || EndpointConfig::new("x", "http://127.0.0.1:9/");
    assert_eq!(field(EndpointConfig::new("x", "not a url")), "url");
    assert_eq!(field(EndpointConfig::new("x", "ftp://host/")), "url");
    assert_eq!(
        field(EndpointConfig::new("", "http://127.0.0.1:9/")),
        "name"
    );
    let mut c = base();
    c.capacity = 0;
    assert_eq!(field(c), "capacity");
    let mut c = base();
    c.secrets = vec!["whsec_not base64!".into()];
    assert_eq!(field(c), "secret");
    let mut c = base();
    c.threshold = 0;
    assert_eq!(field(c), "threshold");
    let mut c = base();
    c.backoff = Duration::from_secs(10 * 366 * 24 * 3600);
    assert_eq!(field(c), "backoff");
    let mut c = base();
    c.timeout = Duration::ZERO;
    assert_eq!(field(c), "timeout");
    let mut c = base();
    c.max_attempts = Some(0);
    assert_eq!(field(c), "max_attempts");
    let mut c = base();
    c.retry = RetryConfig::Schedule(vec![]);
    let f = field(c);
    assert!(f.contains("schedule") || f.contains("backoff"), "{f}");
}

/// A layer-1 endpoint's `https://` trust: the webpki roots by default (a private CA's
/// certificate fails), a private CA beside them, or no verification when told.
#[test]
fn layer_1_https_trusts_a_private_ca_or_nothing_when_told() {
    let (ca, chain, key) = common::test_pki();
    let rx = Receiver::start(ReceiverConfig::new().tls(chain, key)).unwrap();
    let run = |name: &str, tls: hookwire::http::TlsOptions| {
        let mut cfg = EndpointConfig::new(name, rx.url());
        cfg.tls = tls;
        cfg.max_attempts = Some(1);
        let ep = Endpoint::<RawEvent>::new(cfg).unwrap();
        ep.write(RawEvent::parse(format!(r#"{{"id":"{name}"}}"#)).unwrap())
            .unwrap();
        ep.close().unwrap();
        ep.snapshot().metrics
    };
    let untrusted = run("default", Default::default());
    assert_eq!((untrusted.delivered, untrusted.dead_lettered), (0, 1));
    let with_ca = run(
        "private-ca",
        hookwire::http::TlsOptions {
            ca_pem: Some(ca),
            insecure: false,
            system_roots: false,
        },
    );
    assert_eq!(with_ca.delivered, 1, "{with_ca:?}");
    let insecure = run(
        "insecure",
        hookwire::http::TlsOptions {
            ca_pem: None,
            insecure: true,
            system_roots: false,
        },
    );
    assert_eq!(insecure.delivered, 1, "{insecure:?}");
    assert_eq!(rx.ids(), ["private-ca", "insecure"]);
    let mut bad = EndpointConfig::new("bad-ca", rx.url());
    bad.tls.ca_pem = Some("not a certificate".into());
    let e = Endpoint::<RawEvent>::new(bad).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Config {
                field: "tls.ca_pem",
                ..
            }
        ),
        "{e}"
    );
}

/// What only the engine does is refused by a layer-1 endpoint, never ignored.
#[test]
fn layer_1_refuses_engine_only_settings() {
    let base = || EndpointConfig::new("ep", "http://127.0.0.1:9/");
    let mut batched = base();
    batched.batch = hookwire::config::BatchConfig::events(10);
    let mut parallel = base();
    parallel.max_in_flight = 4;
    let durable = base().durable();
    let mut guarded = base();
    guarded.allow_private = false;
    for (cfg, field) in [
        (batched, "batch"),
        (parallel, "max_in_flight"),
        (durable, "durability"),
        (guarded, "allow_private"),
    ] {
        let e = Endpoint::<RawEvent>::new(cfg).unwrap_err();
        assert!(
            matches!(&e, Error::Config { field: f, .. } if *f == field),
            "{field}: {e}"
        );
    }
}
