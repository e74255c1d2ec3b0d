//! Bytes a client could send, through WebSocket frame decoding and JSON-RPC
//! dispatch into a hub; see `src/lib.rs` for the invariants checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| webrtc_p2p_server_fuzz::run(data));
