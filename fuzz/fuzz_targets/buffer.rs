//! Caller buffers, sessions and clicks through the C ABI (`harness::buffer`).
#![no_main]

#[path = "../harness/mod.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::buffer(data));
