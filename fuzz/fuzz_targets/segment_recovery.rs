#![no_main]
//! Raw bytes as a segment file: see `check_raw` in fuzz/checks/segments.rs.

#[path = "../checks/scratch.rs"]
mod scratch;
#[path = "../checks/segments.rs"]
#[allow(dead_code)] // the other target uses the other half
mod segments;

libfuzzer_sys::fuzz_target!(|data: &[u8]| segments::check_raw(data));
