#![no_main]
//! `cargo +nightly fuzz run client_key`: see fuzz/README.md.
libfuzzer_sys::fuzz_target!(|data: &[u8]| spillway_proxy::fuzz::client_key(data));
