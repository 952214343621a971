#![no_main]
//! See fuzz/checks/envelope.rs for the input and the invariants.

#[path = "../checks/envelope.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
