//! The manifest parser and package validation on arbitrary manifest bytes (`harness::manifest`).
#![no_main]

#[path = "../harness/mod.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::manifest(data));
