#![no_main]
//! See fuzz/checks/serve_request.rs for the input and the invariants.

#[path = "../checks/serve_request.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
