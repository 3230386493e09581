#![no_main]
//! `cargo +nightly fuzz run websocket_upgrade`: see fuzz/README.md.
libfuzzer_sys::fuzz_target!(|data: &[u8]| spillway_proxy::fuzz::websocket_upgrade(data));
