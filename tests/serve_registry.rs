//! A real docker registry (Debian's `docker-registry`, distribution 2.8.2) posting its
//! notifications to `hookwire serve /v1/registry`, which relays them to two downstream
//! receivers, signed, across a `kill -9` and restart of hookwire in the middle (issue 11).
//!
//! Without the registry package the test says SKIPPED and why (`.ci/run` installs it and sets
//! `HOOKWIRE_REQUIRE_REGISTRY=1`, so there it cannot skip).

mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::TempDir;
use common::registry::{self, Registry};
use common::serve_child::ServeChild;
use hookwire::testkit::{Receiver, ReceiverConfig};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// `hookwire serve` relaying to `a` (as `audit`) and `b` (as `mirror`), signed.
fn serve(listen: &str, dir: &TempDir, a: &Receiver, b: &Receiver) -> ServeChild {
    let (url_a, url_b) = (a.url(), b.url());
    ServeChild::start(&[
        "--listen",
        listen,
        "--data-dir",
        dir.arg(),
        "--endpoint",
        &url_a,
        "--name",
        "audit",
        "--endpoint",
        &url_b,
        "--name",
        "mirror",
        "--secret",
        SECRET,
        "--allow-private",
    ])
}

fn signed_receiver() -> Receiver {
    Receiver::start(ReceiverConfig::new().secrets(vec![SECRET.parse().unwrap()])).unwrap()
}

/// Waits until `rx` has `n` distinct events (20 s at most: a safety net).
fn wait_for(rx: &Receiver, n: u64) {
    assert!(
        rx.wait_for_distinct(n, Duration::from_secs(30)),
        "got {:?}: {:?}",
        rx.stats(),
        rx.ids()
    );
}

/// The ids in first-arrival order, repeats removed.
fn first_arrivals(rx: &Receiver) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    rx.ids()
        .into_iter()
        .filter(|id| seen.insert(id.clone()))
        .collect()
}

#[test]
fn a_real_registry_relayed_to_two_receivers_across_a_kill_9() {
    if !registry::available() {
        return;
    }
    let dir = TempDir::new("serve-registry");
    let (a, b) = (signed_receiver(), signed_receiver());
    let first_life = serve("127.0.0.1:0", &dir, &a, &b);
    let addr = first_life.addr;
    let reg = Registry::start(&format!("http://{addr}/v1/registry"));

    // First life: an image pushed (two blobs and a manifest: three events).
    let first = reg.push("library/alpine", "3.20");
    wait_for(&a, 3);
    wait_for(&b, 3);

    // kill -9 hookwire; the registry keeps what it could not send in its own queue and retries.
    let mut first_life = first_life;
    first_life.child.kill().unwrap();
    first_life.child.wait().unwrap();
    let second = reg.push("library/busybox", "1.36");
    // Second life on the same port and data directory.
    let deadline = Instant::now() + Duration::from_secs(10);
    let second_life = loop {
        if TcpStream::connect(addr).is_err() {
            break serve(&addr.to_string(), &dir, &a, &b);
        }
        assert!(Instant::now() < deadline, "the old process still listens");
        std::thread::sleep(Duration::from_millis(20));
    };
    reg.delete("library/alpine", &first.manifest);

    // 3 + 3 pushes, and the manifest's and the tag's deletes.
    wait_for(&a, 8);
    wait_for(&b, 8);
    for rx in [&a, &b] {
        let st = rx.stats();
        assert_eq!(st.bad_signatures, 0, "every request signed: {st:?}");
        assert_eq!(st.distinct, 8, "{st:?}");
    }
    // Both downstreams saw the registry's events in the same order.
    assert_eq!(first_arrivals(&a), first_arrivals(&b));
    assert!(!second.manifest.is_empty());
    drop(second_life);
}
