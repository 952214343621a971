#![no_main]
//! See fuzz/checks/retry_after.rs for the input and the invariants.

#[path = "../checks/retry_after.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
