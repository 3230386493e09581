#![no_main]
//! `cargo +nightly fuzz run upstream_response`: see fuzz/README.md.
libfuzzer_sys::fuzz_target!(|data: &[u8]| spillway_proxy::fuzz::upstream_response(data));
