#![no_main]
//! See fuzz/checks/send_config.rs for the input and the invariants.

// `saved.rs` takes the CLI's `SendArgs`, and `send.rs` brings the modules it uses: the
// binary's `send` path is compiled here as it is, from its own files (nothing copied).
#[path = "../../src/bin/hookwire/durable.rs"]
#[allow(dead_code)]
mod durable;
#[path = "../../src/bin/hookwire/duration.rs"]
#[allow(dead_code)]
mod duration;
#[path = "../../src/bin/hookwire/input.rs"]
#[allow(dead_code)]
mod input;
#[path = "../../src/bin/hookwire/ndjson.rs"]
#[allow(dead_code)]
mod ndjson;
#[path = "../../src/bin/hookwire/options.rs"]
#[allow(dead_code)]
mod options;
#[path = "../../src/bin/hookwire/progress.rs"]
#[allow(dead_code)]
mod progress;
#[path = "../../src/bin/hookwire/saved.rs"]
#[allow(dead_code)]
mod saved;
#[path = "../../src/bin/hookwire/secrets.rs"]
#[allow(dead_code)]
mod secrets;
#[path = "../../src/bin/hookwire/send.rs"]
#[allow(dead_code)]
mod send;
#[path = "../../src/bin/hookwire/signals.rs"]
#[allow(dead_code)]
mod signals;
#[path = "../../src/bin/hookwire/summary.rs"]
#[allow(dead_code)]
mod summary;

#[path = "../checks/send_config.rs"]
mod check;
#[path = "../checks/scratch.rs"]
mod scratch;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
