#![no_main]
//! See fuzz/checks/raw_event.rs for the input and the invariants.

#[path = "../checks/raw_event.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
