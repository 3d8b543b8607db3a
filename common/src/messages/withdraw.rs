//! Messages of a cooperative withdrawal: a participant spends its own deposits to any
//! address with one MuSig2(U, C) key-path signature per input, the coordinator's half
//! given after its checks, with no timeout to wait for.
//!
//! One round trip on a session: the participant sends its unsigned transaction, one
//! public nonce per input and an ownership signature per input ([`Withdraw`]); the
//! coordinator answers with its own nonce and partial signature per input
//! ([`WithdrawSigned`], made after it saw the participant's nonce, as BIP-327 allows the
//! last signer to do) or a `Refused`. The participant then signs its half and publishes.

use bitcoin::secp256k1::{schnorr, PublicKey};
use bitcoin::{OutPoint, Transaction, Txid};
use musig2::{PartialSignature, PubNonce};
use serde::{Deserialize, Serialize};

use super::{tagged_hash, MessageError};

/// BIP-340 tag of the hash a withdrawal's ownership signatures sign.
pub const WITHDRAW_TAG: &str = "cohort/withdraw";

/// One deposit the withdrawal spends: input `i` of the transaction spends the `i`-th.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WithdrawInput {
    /// The deposit.
    pub outpoint: OutPoint,
    /// The participant's deposit key `U`.
    pub user_key: PublicKey,
    /// The deposit address's relative timeout (needed to rebuild its script).
    pub deposit_csv: u16,
    /// The participant's public nonce for this input's key-path signature.
    pub nonce: PubNonce,
}

/// What a withdrawal asks the coordinator to co-sign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WithdrawBody {
    /// The unsigned transaction: every input a deposit, empty `scriptSig`s and witnesses.
    #[serde(with = "super::consensus_bytes")]
    pub tx: Transaction,
    /// The deposits, in input order.
    pub inputs: Vec<WithdrawInput>,
}

impl WithdrawBody {
    /// The 32-byte message each ownership signature signs: BIP-340 tagged hash
    /// `"cohort/withdraw"` over SHA-256 of the body's canonical (codec) encoding. It
    /// commits to the whole transaction, so a replayed request gets the same
    /// transaction co-signed and nothing else.
    pub fn ownership_message(&self) -> Result<[u8; 32], MessageError> {
        use sha2::{Digest, Sha256};
        let digest: [u8; 32] = Sha256::digest(crate::codec::encode(self)?).into();
        Ok(tagged_hash(WITHDRAW_TAG, &[&digest]))
    }
}

/// A withdrawal request: the body and one BIP-340 signature per input by its `user_key`
/// (x-only, untweaked) over [`WithdrawBody::ownership_message`], so that nobody but the
/// owner can make the coordinator keep a deposit out of its rounds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Withdraw {
    /// What is asked.
    pub body: WithdrawBody,
    /// One per input, in order.
    pub ownership_sigs: Vec<schnorr::Signature>,
}

/// The coordinator's half of every input's signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WithdrawSigned {
    /// The transaction co-signed (its txid does not depend on witnesses).
    pub txid: Txid,
    /// The coordinator's public nonce per input.
    pub nonces: Vec<PubNonce>,
    /// The coordinator's partial signature per input.
    pub partials: Vec<PartialSignature>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::absolute::LockTime;
    use bitcoin::transaction::Version;

    #[test]
    fn the_ownership_message_commits_to_the_transaction() {
        let tx = |lock| Transaction {
            version: Version::TWO,
            lock_time: LockTime::from_consensus(lock),
            input: vec![],
            output: vec![],
        };
        let body = WithdrawBody { tx: tx(0), inputs: vec![] };
        let other = WithdrawBody { tx: tx(1), inputs: vec![] };
        let m = body.ownership_message().unwrap();
        assert_ne!(m, other.ownership_message().unwrap());
        assert_eq!(m, body.clone().ownership_message().unwrap());
    }
}
