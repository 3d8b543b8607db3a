//! Fuzzes the proposal body (`ProposalBody`), which a participant decodes out of a
//! `Proposal`'s `Encoded` bytes with [`DecodedBody::decode`] (`participant::session`).
//!
//! Asserts what [`crate::check_codec`] checks (heap within the limit, round trip,
//! framing), and that the participant's own decoding agrees with it: same result,
//! the funding txid computed from the decoded transaction, the leaves moved out intact,
//! and a tree shape exactly when the body's leaf count and tree parameters allow one.

use cohort_common::codec::Encoded;
use cohort_common::messages::ProposalBody;
use cohort_common::tree::TreeShape;
use cohort_participant::session::DecodedBody;

/// Runs one input.
pub fn run(data: &[u8]) {
    let plain = crate::check_codec::<ProposalBody>(data);
    let decoded = DecodedBody::decode(&Encoded::from_bytes(data.to_vec()));
    match (plain, decoded) {
        (None, Err(_)) => {}
        (Some(body), Ok(d)) => {
            assert_eq!(d.funding_txid, body.funding_tx.compute_txid());
            assert_eq!(&d.leaves[..], &body.leaves[..]);
            assert!(d.body.leaves.is_empty(), "the leaves were not moved out");
            let shape = TreeShape::new(body.leaves.len(), body.tree);
            assert_eq!(d.memo.is_some(), shape.is_ok());
        }
        (plain, decoded) => panic!(
            "the participant's decoding disagrees: plain ok {}, participant ok {}",
            plain.is_some(),
            decoded.is_ok()
        ),
    }
}
