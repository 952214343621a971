#![no_main]
//! See fuzz/checks/http_response.rs for the input and the invariants.

#[path = "../checks/http_response.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
