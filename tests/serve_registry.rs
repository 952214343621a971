//! A real docker registry (Debian's `docker-registry`, distribution 2.8.2) posting its
//! notifications to `hookwire serve /v1/registry`, which relays them to two downstream
//! receivers, signed, across a `kill -9` and restart of hookwire in the middle (issue 11).
//!
//! Without the registry package the test says SKIPPED and why (`.ci/run` installs it and sets
//! `HOOKWIRE_REQUIRE_REGISTRY=1`, so there it cannot skip).

mod common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::TempDir;
use common::registry::{self, Registry};
use hookwire::testkit::{Receiver, ReceiverConfig};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// `hookwire serve` as a child process; killed (SIGKILL) when dropped.
struct Serve(Child, SocketAddr);

impl Serve {
    fn start(listen: &str, dir: &TempDir, a: &Receiver, b: &Receiver) -> Serve {
        let (url_a, url_b) = (a.url(), b.url());
        let mut child = Command::new(env!("CARGO_BIN_EXE_hookwire"))
            .args(["serve", "--listen", listen, "--data-dir", dir.arg()])
            .args(["--endpoint", &url_a, "--name", "audit"])
            .args(["--endpoint", &url_b, "--name", "mirror"])
            .args(["--secret", SECRET, "--allow-private"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start hookwire serve");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        let addr = v["listening"].as_str().expect("listening").parse().unwrap();
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut out, &mut std::io::sink());
        });
        Serve(child, addr)
    }

    fn kill_9(mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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
    let serve = Serve::start("127.0.0.1:0", &dir, &a, &b);
    let addr = serve.1;
    let reg = Registry::start(&format!("http://{addr}/v1/registry"));

    // First life: an image pushed (two blobs and a manifest: three events).
    let first = reg.push("library/alpine", "3.20");
    wait_for(&a, 3);
    wait_for(&b, 3);

    // kill -9 hookwire; the registry keeps what it could not send in its own queue and retries.
    serve.kill_9();
    let second = reg.push("library/busybox", "1.36");
    // Second life on the same port and data directory.
    let deadline = Instant::now() + Duration::from_secs(10);
    let serve = loop {
        if TcpStream::connect(addr).is_err() {
            break Serve::start(&addr.to_string(), &dir, &a, &b);
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
    drop(serve);
}
