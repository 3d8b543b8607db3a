//! Messages of the registration phase: round announcement, registration, its answer.

use std::fmt;

use bitcoin::secp256k1::{schnorr, PublicKey};
use bitcoin::{Amount, OutPoint, ScriptBuf};
use musig2::secp::Point;
use musig2::PubNonce;
use serde::{Deserialize, Serialize};

use super::{tagged_hash, MessageError, Reason, OWNERSHIP_TAG};
use crate::params::{FeeSchedule, LeafOutput, TreeParams};

/// Everything a participant needs to know about a round before registering.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundParams {
    /// Round number.
    pub round: u64,
    /// Shape of every batch's tree.
    pub tree: TreeParams,
    /// Mining fee rate and service fee.
    pub fees: FeeSchedule,
    /// The coordinator's long-term key `C` (of every static deposit address).
    pub coordinator_key: PublicKey,
    /// Relative timeout of a virtual-deposit leaf, in blocks.
    pub exit_csv: u16,
    /// Largest `deposit_csv` accepted.
    pub max_deposit_csv: u16,
    /// Confirmations a deposit needs.
    pub min_confs: u32,
    /// Deposits whose timeout is this close (in blocks) are refused.
    pub safety_margin: u32,
    /// Largest number of leaves per registration, the remainder included.
    pub max_leaves_per_registration: u16,
    /// Largest number of deposits per registration.
    pub max_deposits_per_registration: u16,
    /// Largest funding transaction weight.
    pub max_batch_weight: u64,
    /// How long registration stays open after the announcement, in milliseconds (a
    /// window length, not a point in time: clocks of the two sides are never compared).
    pub registration_closes_ms: u64,
    /// Deadline of each signing phase, in milliseconds.
    pub phase_timeout_ms: u64,
    /// Largest number of attempts per batch.
    pub max_attempts: u8,
}

/// A round (or a new attempt of it) is open for registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundAnnounce {
    /// Round number.
    pub round: u64,
    /// Attempt number within the round.
    pub attempt: u32,
    /// The round's parameters.
    pub params: RoundParams,
    /// Fresh randomness the ownership signatures must cover (no replay across rounds).
    pub challenge: [u8; 32],
}

/// One deposit offered into the round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepositRegistration {
    /// The deposit UTXO.
    pub outpoint: OutPoint,
    /// The participant's deposit key `U`.
    pub user_key: PublicKey,
    /// The deposit address's relative timeout (needed to rebuild its script).
    pub deposit_csv: u16,
    /// The participant's public nonce for signing this deposit's input.
    pub nonce: PubNonce,
}

/// One output the participant asks the tree to pay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeafRequest {
    /// Script and amount.
    pub output: LeafOutput,
    /// Fresh cosigner key of this leaf for this attempt.
    pub cosigner: Point,
    /// One public nonce per tree level, root first (`max_depth` of them).
    pub nonces: Vec<PubNonce>,
}

/// The registration's remainder leaf; the proposal fixes its amount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemainderRequest {
    /// Where the remainder pays.
    pub script_pubkey: ScriptBuf,
    /// Fresh cosigner key of this leaf for this attempt.
    pub cosigner: Point,
    /// One public nonce per tree level, root first (`max_depth` of them).
    pub nonces: Vec<PubNonce>,
}

/// What a registration asks for; its digest is what ownership signatures commit to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterBody {
    /// Round number.
    pub round: u64,
    /// Deposits to spend into the batch.
    pub deposits: Vec<DepositRegistration>,
    /// Requested leaves, in order.
    pub leaves: Vec<LeafRequest>,
    /// The remainder leaf.
    pub remainder: RemainderRequest,
    /// Largest total fee (mining share plus service) the participant accepts.
    #[serde(with = "bitcoin::amount::serde::as_sat")]
    pub max_fee: Amount,
}

impl RegisterBody {
    /// SHA-256 of the body's canonical (codec) encoding.
    pub fn digest(&self) -> Result<[u8; 32], MessageError> {
        use sha2::{Digest, Sha256};
        Ok(Sha256::digest(crate::codec::encode(self)?).into())
    }

    /// The 32-byte message each deposit's ownership signature signs:
    /// BIP-340 tagged hash `"cohort/ownership"` over `challenge ‖ digest`.
    pub fn ownership_message(&self, challenge: &[u8; 32]) -> Result<[u8; 32], MessageError> {
        Ok(ownership_message(challenge, &self.digest()?))
    }
}

/// The ownership message from a challenge and a [`RegisterBody::digest`].
pub fn ownership_message(challenge: &[u8; 32], digest: &[u8; 32]) -> [u8; 32] {
    tagged_hash(OWNERSHIP_TAG, &[challenge, digest])
}

/// A registration: the body and one ownership signature per deposit, in the same order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Register {
    /// What is registered.
    pub body: RegisterBody,
    /// BIP-340 signature by each deposit's `user_key` over [`RegisterBody::ownership_message`].
    pub ownership_sigs: Vec<schnorr::Signature>,
}

/// The registration was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registered {
    /// Round number.
    pub round: u64,
    /// The coordinator's identifier of this registration (named in [`super::Abort`]).
    pub registration: u64,
}

/// The registration was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refused {
    /// Why.
    pub reason: RefusalReason,
}

/// Why a registration was refused. Indices count from 0 in the registration's lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefusalReason {
    /// The deposit does not exist on chain.
    UnknownDeposit(OutPoint),
    /// The deposit has fewer confirmations than `min_confs`.
    Unconfirmed(OutPoint),
    /// The deposit is already spent.
    Spent(OutPoint),
    /// The deposit's timeout is within `safety_margin` blocks.
    Expiring(OutPoint),
    /// The deposit is banned for a time (its owner failed an earlier attempt).
    Banned(OutPoint),
    /// The deposit's output is not the static address of `user_key` and `deposit_csv`.
    NotDepositAddress(OutPoint),
    /// The same deposit appears twice or is already registered in this round.
    DuplicateDeposit(OutPoint),
    /// The ownership signature of a deposit does not verify.
    BadOwnershipSignature {
        /// Index of the deposit.
        deposit: u32,
    },
    /// The number of ownership signatures differs from the number of deposits.
    SignatureCount {
        /// Deposits registered.
        deposits: u32,
        /// Signatures sent.
        sigs: u32,
    },
    /// A leaf's amount is below its script's dust limit.
    Dust {
        /// Index of the leaf.
        leaf: u32,
    },
    /// A leaf's script is not a standard output script.
    NonStandardScript {
        /// Index of the leaf.
        leaf: u32,
    },
    /// A leaf or the remainder has the wrong number of nonces.
    BadNonceCount {
        /// Nonces expected (`max_depth`).
        expected: u32,
        /// Nonces sent.
        got: u32,
    },
    /// Two leaves share a cosigner key.
    DuplicateCosigner,
    /// More leaves than `max_leaves_per_registration`.
    TooManyLeaves {
        /// Leaves requested.
        count: u32,
        /// The maximum.
        max: u32,
    },
    /// More deposits than `max_deposits_per_registration`.
    TooManyDeposits {
        /// Deposits offered.
        count: u32,
        /// The maximum.
        max: u32,
    },
    /// No deposit offered.
    NoDeposits,
    /// A deposit's `deposit_csv` is above `max_deposit_csv`.
    DepositCsvTooLarge {
        /// The deposit's timeout.
        csv: u16,
        /// The maximum.
        max: u16,
    },
    /// The fee the registration would pay is above its `max_fee`.
    FeeTooLow {
        /// The participant's `max_fee`.
        #[serde(with = "bitcoin::amount::serde::as_sat")]
        max_fee: Amount,
        /// The fee its inputs and leaves require.
        #[serde(with = "bitcoin::amount::serde::as_sat")]
        required: Amount,
    },
    /// The deposits do not cover the leaves plus the fees.
    InsufficientFunds {
        /// Total deposited.
        #[serde(with = "bitcoin::amount::serde::as_sat")]
        available: Amount,
        /// Total of the leaves plus the fee.
        #[serde(with = "bitcoin::amount::serde::as_sat")]
        needed: Amount,
    },
    /// The registration names another round.
    WrongRound {
        /// The open round.
        expected: u64,
        /// The round named.
        got: u64,
    },
    /// Registration is closed.
    RegistrationClosed,
    /// Anything else.
    Other(Reason),
    /// The deposits or the leaves sum above 21,000,000 BTC (or one is above it). Last, so
    /// that adding it kept every earlier variant's wire index.
    OutsideMoneyRange {
        /// `true` for the deposits, `false` for the leaves.
        deposits: bool,
    },
    /// The coordinator co-signed a withdrawal of this deposit: it joins no round again.
    Withdrawing(OutPoint),
    /// The deposit is in the running round: it cannot be withdrawn until the round is
    /// over for it.
    InRound(OutPoint),
    /// The withdrawal transaction is not one the coordinator co-signs, and why.
    BadWithdrawal(Reason),
}

impl fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use RefusalReason::*;
        match self {
            UnknownDeposit(o) => write!(f, "unknown deposit {o}"),
            Unconfirmed(o) => write!(f, "deposit {o} is not confirmed enough"),
            Spent(o) => write!(f, "deposit {o} is spent"),
            Expiring(o) => write!(f, "deposit {o} times out too soon"),
            Banned(o) => write!(f, "deposit {o} is banned for now"),
            NotDepositAddress(o) => {
                write!(f, "deposit {o} is not at the static address of its key and timeout")
            }
            DuplicateDeposit(o) => write!(f, "deposit {o} is registered twice"),
            BadOwnershipSignature { deposit } => {
                write!(f, "bad ownership signature for deposit {deposit}")
            }
            SignatureCount { deposits, sigs } => {
                write!(f, "{sigs} ownership signatures for {deposits} deposits")
            }
            Dust { leaf } => write!(f, "leaf {leaf} is below the dust limit"),
            NonStandardScript { leaf } => write!(f, "leaf {leaf} has a non-standard script"),
            BadNonceCount { expected, got } => {
                write!(f, "expected {expected} nonces per leaf, got {got}")
            }
            DuplicateCosigner => write!(f, "two leaves share a cosigner key"),
            TooManyLeaves { count, max } => write!(f, "{count} leaves exceed the maximum of {max}"),
            TooManyDeposits { count, max } => {
                write!(f, "{count} deposits exceed the maximum of {max}")
            }
            NoDeposits => write!(f, "no deposit offered"),
            DepositCsvTooLarge { csv, max } => {
                write!(f, "deposit timeout of {csv} blocks exceeds the maximum of {max}")
            }
            FeeTooLow { max_fee, required } => {
                write!(
                    f,
                    "fee of {} sat exceeds the maximum fee of {} sat",
                    required.to_sat(),
                    max_fee.to_sat()
                )
            }
            InsufficientFunds { available, needed } => {
                write!(
                    f,
                    "deposits of {} sat do not cover {} sat of leaves and fees",
                    available.to_sat(),
                    needed.to_sat()
                )
            }
            WrongRound { expected, got } => {
                write!(f, "round {got} is not the open round {expected}")
            }
            RegistrationClosed => write!(f, "registration is closed"),
            OutsideMoneyRange { deposits: true } => {
                write!(f, "the deposits sum above 21,000,000 BTC")
            }
            OutsideMoneyRange { deposits: false } => {
                write!(f, "the leaves sum above 21,000,000 BTC")
            }
            Withdrawing(o) => {
                write!(f, "deposit {o} has a co-signed withdrawal and joins no round")
            }
            InRound(o) => write!(f, "deposit {o} is in the running round"),
            BadWithdrawal(reason) => write!(f, "withdrawal refused: {reason}"),
            Other(reason) => write!(f, "{reason}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership_message_commits_to_challenge_and_body() {
        let body = RegisterBody {
            round: 3,
            deposits: vec![],
            leaves: vec![],
            remainder: RemainderRequest {
                script_pubkey: ScriptBuf::new(),
                cosigner: *musig2::secp::G,
                nonces: vec![],
            },
            max_fee: Amount::from_sat(1000),
        };
        let m1 = body.ownership_message(&[0; 32]).unwrap();
        assert_ne!(m1, body.ownership_message(&[1; 32]).unwrap());
        let mut other = body.clone();
        other.max_fee = Amount::from_sat(1001);
        assert_ne!(m1, other.ownership_message(&[0; 32]).unwrap());
        assert_eq!(m1, ownership_message(&[0; 32], &body.digest().unwrap()));
    }

    #[test]
    fn refusal_reasons_read_well() {
        let r = RefusalReason::FeeTooLow {
            max_fee: Amount::from_sat(100),
            required: Amount::from_sat(250),
        };
        assert_eq!(r.to_string(), "fee of 250 sat exceeds the maximum fee of 100 sat");
        assert_eq!(
            RefusalReason::TooManyLeaves { count: 9, max: 8 }.to_string(),
            "9 leaves exceed the maximum of 8"
        );
    }
}
