#![no_main]
//! See fuzz/checks/record_codec.rs for the input and the invariants.

#[path = "../checks/record_codec.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
