//! Fuzzes `codec::decode::<ToParticipant>`: every frame a coordinator sends a participant
//! (`transport::framed`), so a hostile coordinator controls every byte.
//!
//! Asserts what [`crate::check_codec`] checks (heap within the limit, round trip,
//! framing). A decoded `Proposal`'s shared body is then decoded the way the
//! participant does ([`DecodedBody::decode`]), which must not panic either.

use cohort_common::messages::ToParticipant;
use cohort_participant::session::DecodedBody;

/// Runs one input.
pub fn run(data: &[u8]) {
    if let Some(ToParticipant::Proposal(proposal)) = crate::check_codec(data) {
        let _ = DecodedBody::decode(&proposal.body);
    }
}
