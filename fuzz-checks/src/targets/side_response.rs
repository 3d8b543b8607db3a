//! Fuzzes `codec::decode::<SideResponse>`: the coordinator's answer on a side stream, read
//! by a participant (`transport::client`), so a hostile coordinator controls every byte.
//!
//! Asserts what [`crate::check_codec`] checks (heap within the limit, round trip,
//! framing).

use cohort_common::messages::SideResponse;

/// Runs one input.
pub fn run(data: &[u8]) {
    let _ = crate::check_codec::<SideResponse>(data);
}
