#![no_main]
//! See fuzz/checks/ndjson.rs for the input and the invariants.

// The binary's own line reader, compiled here as it is (it uses only hookwire's public API).
#[path = "../../src/bin/hookwire/ndjson.rs"]
#[allow(dead_code)]
mod ndjson;

#[path = "../checks/ndjson.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
