//! Fuzzes `codec::decode::<SideResponse>`: the coordinator's answer on a side stream, read
//! by a participant (`transport::client`), so a hostile coordinator controls every byte.
//!
//! Asserts what [`cohort_fuzz::check_codec`] checks (heap within the limit, round trip,
//! framing).

#![no_main]

use cohort_common::messages::SideResponse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = cohort_fuzz::check_codec::<SideResponse>(data);
});
