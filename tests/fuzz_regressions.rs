//! Saved fuzz inputs, replayed under plain `cargo test` (docs/fuzzing.md).
//!
//! Each test runs one fuzz target's check (fuzz/checks/TARGET.rs, included by path: the very
//! code the cargo-fuzz target runs) over every input that once crashed or hung that target
//! (`tests/fuzz-cases/TARGET/`) and over the target's committed seeds (`fuzz/seeds/TARGET/`).
//! A check panics when an invariant breaks; an input that runs for more than a minute (they
//! take milliseconds) counts as a hang and fails the test instead of stalling the suite.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;
use std::{fs, panic, thread};

#[path = "../fuzz/checks/envelope.rs"]
mod envelope;
#[path = "../fuzz/checks/http_response.rs"]
mod http_response;
#[path = "../fuzz/checks/raw_event.rs"]
mod raw_event;
#[path = "../fuzz/checks/record_codec.rs"]
mod record_codec;
#[path = "../fuzz/checks/retry_after.rs"]
mod retry_after;
#[path = "../fuzz/checks/scratch.rs"]
mod scratch;
#[path = "../fuzz/checks/segments.rs"]
mod segments;
#[path = "../fuzz/checks/serve_request.rs"]
mod serve_request;
#[path = "../fuzz/checks/store_meta.rs"]
mod store_meta;

// The CLI's parsers are the binary's own modules, compiled here from their files as the fuzz
// targets compile them (their unit tests come along and run here a second time).
#[cfg(feature = "cli")]
#[path = "../src/bin/hookwire/durable.rs"]
#[allow(dead_code)]
mod durable;
#[cfg(feature = "cli")]
#[path = "../src/bin/hookwire/duration.rs"]
#[allow(dead_code)]
mod duration;
#[path = "../src/bin/hookwire/input.rs"]
#[allow(dead_code)]
mod input;
#[cfg(feature = "cli")]
#[path = "../src/bin/hookwire/ndjson.rs"]
#[allow(dead_code)]
mod ndjson;
#[cfg(feature = "cli")]
#[path = "../fuzz/checks/ndjson.rs"]
mod ndjson_check;
#[cfg(feature = "cli")]
#[path = "../src/bin/hookwire/options.rs"]
#[allow(dead_code)]
mod options;
#[cfg(feature = "cli")]
#[path = "../src/bin/hookwire/progress.rs"]
#[allow(dead_code)]
mod progress;
#[cfg(feature = "cli")]
#[path = "../src/bin/hookwire/saved.rs"]
#[allow(dead_code)]
mod saved;
#[cfg(feature = "cli")]
#[path = "../src/bin/hookwire/secrets.rs"]
#[allow(dead_code)]
mod secrets;
#[cfg(feature = "cli")]
#[path = "../src/bin/hookwire/send.rs"]
#[allow(dead_code)]
mod send;
#[cfg(feature = "cli")]
#[path = "../fuzz/checks/send_config.rs"]
mod send_config;
#[cfg(feature = "cli")]
#[path = "../src/bin/hookwire/signals.rs"]
#[allow(dead_code)]
mod signals;
#[cfg(feature = "cli")]
#[path = "../src/bin/hookwire/summary.rs"]
#[allow(dead_code)]
mod summary;

/// How long one input may run before it counts as a hang.
const HANG: Duration = Duration::from_secs(60);

/// Runs `check` over every saved input of `target`; fails on the first that breaks it.
fn replay(target: &str, check: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dirs = [
        root.join("tests/fuzz-cases").join(target),
        root.join("fuzz/seeds").join(target),
    ];
    let mut inputs: Vec<PathBuf> = Vec::new();
    for dir in &dirs {
        if let Ok(entries) = fs::read_dir(dir) {
            let mut paths: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
            paths.sort();
            inputs.extend(paths);
        }
    }
    assert!(!inputs.is_empty(), "no saved inputs for {target}");
    for path in inputs {
        let data = fs::read(&path).unwrap();
        let name = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .display()
            .to_string();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let ok = panic::catch_unwind(|| check(&data)).is_ok();
            let _ = tx.send(ok);
        });
        match rx.recv_timeout(HANG) {
            Ok(true) => {}
            Ok(false) => panic!("{name}: the check failed (its panic is printed above)"),
            Err(_) => panic!("{name}: still running after {HANG:?}: a hang"),
        }
    }
}

#[test]
fn retry_after() {
    replay("retry_after", retry_after::check);
}

#[test]
fn envelope() {
    replay("envelope", envelope::check);
}

#[test]
fn http_response() {
    replay("http_response", http_response::check);
}

#[test]
fn serve_request() {
    replay("serve_request", serve_request::check);
}

#[test]
fn raw_event() {
    replay("raw_event", raw_event::check);
}

#[test]
fn record_codec() {
    replay("record_codec", record_codec::check);
}

#[test]
fn segment_recovery() {
    replay("segment_recovery", segments::check_raw);
}

#[test]
fn segment_records() {
    replay("segment_records", segments::check_structured);
}

#[test]
fn store_meta() {
    replay("store_meta", store_meta::check);
}

#[cfg(feature = "cli")]
#[test]
fn ndjson() {
    replay("ndjson", ndjson_check::check);
}

#[cfg(feature = "cli")]
#[test]
fn send_config() {
    replay("send_config", send_config::check);
}
