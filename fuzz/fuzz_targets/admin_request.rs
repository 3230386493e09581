#![no_main]
//! `cargo +nightly fuzz run admin_request`: see fuzz/README.md.
libfuzzer_sys::fuzz_target!(|data: &[u8]| spillway_proxy::fuzz::admin_request(data));
