//! Every protocol message of Cohort (DESIGN sections 6 and 8) and the two frame-body enums.
//!
//! A frame body is a [`ToCoordinator`] or a [`ToParticipant`], encoded with
//! [`crate::codec`]. Field types:
//!
//! - `bitcoin` types (`OutPoint`, `Txid`, `ScriptBuf`, `TxOut`) use their own serde;
//!   a `Transaction` (and `Vec<TxOut>` of prevouts) travels as its consensus encoding in
//!   a byte string; amounts as satoshis.
//! - Deposit and coordinator keys are `secp256k1` 0.29 `PublicKey`s (33 bytes) and
//!   ownership signatures BIP-340 `schnorr::Signature`s (64 bytes).
//! - MuSig2 values are `musig2` types with their own serde (a byte string each:
//!   33-byte points, 66-byte nonces, 32-byte partial signatures), checked on decode
//!   (a point off the curve is a decode error).
//! - Free text is a [`Reason`], at most [`MAX_REASON_LEN`] bytes, checked on decode.
//!
//! Sequence lengths are bounded by the codec's byte limit only; semantic counts (nonces
//! per leaf, signatures per deposit) are checked by the engines against the round.

mod batch;
mod chain;
mod params_check;
mod round;
mod withdraw;

pub use batch::{
    Abort, AbortReason, Cancel, Confirmed, DepositPartial, DepositSigs, Finalized, LeafNonces,
    NodeNonce, NodePartial, NodeSignature, NonceRequest, Proposal, ProposalBody, Renonce,
    SignedTree, TreeLeaf, TreeSigs,
};
pub use chain::{ServerInfo, SideRequest, SideResponse, UtxoInfo};
pub use params_check::{ParamsError, ShapeError};
pub use round::{
    ownership_message, DepositRegistration, LeafRequest, RefusalReason, Refused, Register,
    RegisterBody, Registered, RemainderRequest, RoundAnnounce, RoundParams,
};
pub use withdraw::{Withdraw, WithdrawBody, WithdrawInput, WithdrawSigned, WITHDRAW_TAG};

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// Longest [`Reason`] in bytes.
pub const MAX_REASON_LEN: usize = 256;

/// BIP-340 tag of the hash a deposit's ownership signature signs.
pub const OWNERSHIP_TAG: &str = "cohort/ownership";

/// Errors building or checking message fields.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// A free-text reason is longer than allowed (a peer sending one is misbehaving).
    #[error("reason of {len} bytes exceeds the maximum of {max} bytes")]
    ReasonTooLong {
        /// Its length in bytes.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// The canonical encoding of a message could not be produced.
    #[error("cannot encode message for hashing: {0}")]
    Encode(#[from] crate::codec::CodecError),
}

/// Short free text (why a session ended, why a request was refused), at most
/// [`MAX_REASON_LEN`] bytes; longer text is refused on decode.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(transparent)]
pub struct Reason(String);

impl Reason {
    /// A reason from local text, cut at a character boundary to [`MAX_REASON_LEN`] bytes.
    pub fn new(text: impl Into<String>) -> Self {
        let mut text = text.into();
        if text.len() > MAX_REASON_LEN {
            let mut cut = MAX_REASON_LEN;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        Reason(text)
    }

    /// A reason from text that must already fit.
    pub fn try_new(text: impl Into<String>) -> Result<Self, MessageError> {
        let text = text.into();
        if text.len() > MAX_REASON_LEN {
            return Err(MessageError::ReasonTooLong { len: text.len(), max: MAX_REASON_LEN });
        }
        Ok(Reason(text))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Reason {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct StrVisitor;
        impl serde::de::Visitor<'_> for StrVisitor {
            type Value = Reason;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a string of at most {MAX_REASON_LEN} bytes")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Reason, E> {
                // Checked before copying, so an overlong reason is never allocated.
                Reason::try_new(v).map_err(E::custom)
            }
        }
        // `deserialize_str` borrows from the input in the codec's slice decoder.
        d.deserialize_str(StrVisitor)
    }
}

/// Every message a participant sends to the coordinator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)] // Messages are built once and moved into a frame.
pub enum ToCoordinator {
    /// First frame of a session: the protocol version spoken.
    Hello(Hello),
    /// Join the current round (phase 2).
    Register(Register),
    /// Partial signatures of the tree nodes on the participant's paths (phase 4).
    TreeSigs(TreeSigs),
    /// Partial signatures of the participant's deposit inputs (phase 6).
    DepositSigs(DepositSigs),
    /// Fresh cosigner keys and nonces for the next attempt, answering a [`NonceRequest`].
    Renonce(Renonce),
    /// Leave the batch before phase 6; the deposits stay where they were.
    Cancel(Cancel),
    /// Last frame of a session.
    Goodbye(Goodbye),
    /// Asks the coordinator to co-sign a cooperative withdrawal of deposits. Last, so
    /// that adding it kept every earlier variant's wire index.
    Withdraw(Withdraw),
}

/// Every message the coordinator sends to a participant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)] // Messages are built once and moved into a frame.
pub enum ToParticipant {
    /// First frame of a session: the protocol version spoken.
    Hello(Hello),
    /// A round (or a new attempt) is open for registration (phase 1).
    RoundAnnounce(RoundAnnounce),
    /// The registration was accepted.
    Registered(Registered),
    /// The registration was refused, and why.
    Refused(Refused),
    /// The batch to sign (phase 3).
    Proposal(Proposal),
    /// Final signatures of the nodes on the participant's paths (phase 5).
    SignedTree(SignedTree),
    /// The funding transaction was broadcast (phase 7).
    Finalized(Finalized),
    /// The funding transaction confirmed.
    Confirmed(Confirmed),
    /// The attempt failed; culprits are named.
    Abort(Abort),
    /// Asks for fresh nonces for the next attempt of a batch.
    NonceRequest(NonceRequest),
    /// Last frame of a session.
    Goodbye(Goodbye),
    /// The coordinator's half of a cooperative withdrawal's signatures (a refused one
    /// gets a `Refused`). Last, so that adding it kept every earlier variant's wire index.
    WithdrawSigned(WithdrawSigned),
}

/// First frame each way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Protocol version ([`crate::params::PROTOCOL_VERSION`]).
    pub version: u32,
}

/// Last frame of a session, with why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Goodbye {
    /// Why the session ends.
    pub reason: Reason,
}

/// BIP-340 tagged hash `SHA256(SHA256(tag) ‖ SHA256(tag) ‖ parts...)`.
pub fn tagged_hash(tag: &str, parts: &[&[u8]]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let tag_hash = Sha256::digest(tag.as_bytes());
    let mut engine = Sha256::new();
    engine.update(tag_hash);
    engine.update(tag_hash);
    for part in parts {
        engine.update(part);
    }
    engine.finalize().into()
}

/// Serde helper: a `bitcoin` consensus-encodable value as a byte string of its
/// consensus encoding (compact, and decoded by `bitcoin`'s bounded decoder).
pub mod consensus_bytes {
    use std::fmt;
    use std::marker::PhantomData;

    use bitcoin::consensus::encode::serialize as consensus_serialize;
    use bitcoin::consensus::Encodable;
    use serde::{Deserializer, Serializer};

    use crate::bounded::{self, Bounded};

    /// Serializes `value` as the byte string of its consensus encoding.
    pub fn serialize<T: Encodable, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&consensus_serialize(value))
    }

    /// Deserializes a byte string holding exactly one consensus-encoded value, every count
    /// in it checked against the bytes behind it first ([`bounded::decode`]).
    pub fn deserialize<'de, T: Bounded, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
        struct Visitor<T>(PhantomData<T>);
        impl<T: Bounded> serde::de::Visitor<'_> for Visitor<T> {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a consensus-encoded value as a byte string")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<T, E> {
                bounded::decode(v).map_err(E::custom)
            }
        }
        d.deserialize_bytes(Visitor(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_is_bounded() {
        let long = "é".repeat(200); // 400 bytes
        let r = Reason::new(long.clone());
        assert_eq!(r.as_str().len(), MAX_REASON_LEN);
        assert_eq!(
            Reason::try_new(long),
            Err(MessageError::ReasonTooLong { len: 400, max: MAX_REASON_LEN })
        );
        // A peer's overlong reason is a decode error.
        let bytes = crate::codec::encode(&"x".repeat(MAX_REASON_LEN + 1)).unwrap();
        let err = crate::codec::decode::<Reason>(&bytes, 4096).unwrap_err();
        assert!(err.to_string().contains("exceeds the maximum"), "{err}");
        let bytes = crate::codec::encode(&"x".repeat(MAX_REASON_LEN)).unwrap();
        assert_eq!(crate::codec::decode::<Reason>(&bytes, 4096).unwrap().as_str().len(), 256);
    }

    #[test]
    fn tagged_hash_matches_bitcoin_hashes() {
        use bitcoin::hashes::{sha256, Hash, HashEngine};
        let tag = sha256::Hash::hash(OWNERSHIP_TAG.as_bytes());
        let mut e = sha256::Hash::engine();
        e.input(tag.as_byte_array());
        e.input(tag.as_byte_array());
        e.input(&[1u8; 32]);
        e.input(&[2u8; 32]);
        let expected = sha256::Hash::from_engine(e).to_byte_array();
        assert_eq!(tagged_hash(OWNERSHIP_TAG, &[&[1u8; 32], &[2u8; 32]]), expected);
    }

    #[test]
    fn a_transaction_claiming_more_than_its_bytes_is_refused_inside_a_body() {
        // Found by the `proposal_body` fuzz target: a 238-byte body whose funding
        // transaction made rust-bitcoin's decoder hold 23 MiB. The count walk refuses it.
        let bytes = include_bytes!("../../../fuzz/regressions/proposal_body/238-bytes-held-23mib");
        let err = crate::codec::decode::<ProposalBody>(bytes, 1 << 23).unwrap_err();
        assert!(err.to_string().contains("claims"), "{err}");
    }
}
