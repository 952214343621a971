#![no_main]
//! Valid records, then damage: see `check_structured` in fuzz/checks/segments.rs.

#[path = "../checks/scratch.rs"]
mod scratch;
#[path = "../checks/segments.rs"]
#[allow(dead_code)] // the other target uses the other half
mod segments;

libfuzzer_sys::fuzz_target!(|data: &[u8]| segments::check_structured(data));
