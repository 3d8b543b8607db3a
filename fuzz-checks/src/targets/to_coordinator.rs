//! Fuzzes `codec::decode::<ToCoordinator>`: every frame a participant sends the
//! coordinator after its first (`transport::server`), so any peer controls every byte.
//!
//! Asserts what [`cohort_fuzz::check_codec`] checks: decoding stays within the decode
//! limit's heap, decode → encode → decode round-trips to the same value, and the body
//! survives framing. A decoded `Register` also
//! hashes (its digest is what the ownership signatures sign).

#![no_main]

use cohort_common::messages::ToCoordinator;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(ToCoordinator::Register(register)) = cohort_fuzz::check_codec(data) {
        let digest = register.body.digest().expect("a decoded registration hashes");
        assert_eq!(register.body.digest().ok(), Some(digest), "the digest is not stable");
    }
});
