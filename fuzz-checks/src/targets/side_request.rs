//! Fuzzes `codec::decode::<SideRequest>`: the first frame of a side stream, which any
//! client that completed the QUIC handshake may send (`transport::server`).
//!
//! Asserts what [`cohort_fuzz::check_codec`] checks: decoding stays within the decode
//! limit's heap, decode → encode → decode round-trips to the same value, and the body
//! survives framing.

#![no_main]

use cohort_common::messages::SideRequest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = cohort_fuzz::check_codec::<SideRequest>(data);
});
