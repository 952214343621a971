#![no_main]
//! See fuzz/checks/store_meta.rs for the input and the invariants.

#[path = "../checks/store_meta.rs"]
mod check;
#[path = "../checks/scratch.rs"]
mod scratch;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
