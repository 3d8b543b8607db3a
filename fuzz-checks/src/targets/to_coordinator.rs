//! Fuzzes `codec::decode::<ToCoordinator>`: every frame a participant sends the
//! coordinator after its first (`transport::server`), so any peer controls every byte.
//!
//! Asserts what [`crate::check_codec`] checks: decoding stays within the decode
//! limit's heap, decode → encode → decode round-trips to the same value, and the body
//! survives framing. A decoded `Register` also
//! hashes (its digest is what the ownership signatures sign).

use cohort_common::messages::ToCoordinator;

/// Runs one input.
pub fn run(data: &[u8]) {
    if let Some(ToCoordinator::Register(register)) = crate::check_codec(data) {
        let digest = register.body.digest().expect("a decoded registration hashes");
        assert_eq!(register.body.digest().ok(), Some(digest), "the digest is not stable");
    }
}
