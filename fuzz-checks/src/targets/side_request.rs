//! Fuzzes `codec::decode::<SideRequest>`: the first frame of a side stream, which any
//! client that completed the QUIC handshake may send (`transport::server`).
//!
//! Asserts what [`crate::check_codec`] checks: decoding stays within the decode
//! limit's heap, decode → encode → decode round-trips to the same value, and the body
//! survives framing.

use cohort_common::messages::SideRequest;

/// Runs one input.
pub fn run(data: &[u8]) {
    let _ = crate::check_codec::<SideRequest>(data);
}
