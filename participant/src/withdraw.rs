//! Cooperative withdrawal, the participant's half: spend its own deposits to any address
//! with one MuSig2(U, C) key-path signature per input, without waiting for the deposits'
//! timeout.
//!
//! The wallet builds the transaction itself ([`plan`]: every input a deposit, one output
//! to the destination, RBF-signalling sequences) and computes every sighash from the
//! outputs it holds; it sends its nonces and ownership signatures, gets the coordinator's
//! nonce and partial signature per input, signs its own half only then, and checks the
//! result with Bitcoin Core's script interpreter before storing and publishing it. Nothing
//! the coordinator sends can change what is signed: a wrong answer is an error and no
//! transaction. Secret nonces live in memory for one exchange and are consumed by signing.
//!
//! A withdrawal that does not confirm is replaced at a higher fee ([`bump_plan`]): the same
//! deposits and destination, the fee raised by at least the relay increment (BIP-125
//! rules 3 and 4), co-signed again.

use std::time::Duration;

use bitcoin::absolute::LockTime;
use bitcoin::secp256k1::{Message, SECP256K1};
use bitcoin::transaction::Version;
use bitcoin::{Amount, FeeRate, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Witness};
use cohort_common::consensus::verify_tx;
use cohort_common::messages::{
    Goodbye, Reason, RefusalReason, ToCoordinator, ToParticipant, Withdraw, WithdrawBody,
    WithdrawInput,
};
use cohort_common::musig::{self, Contribution, MusigError};
use cohort_common::scripts::{key_spend_sighashes, key_spend_witness, DepositScript};
use cohort_common::standard::{key_path_signed_weight, money_sum, MAX_STANDARD_WEIGHT};
use cohort_transport::Client as Link;

use crate::wallet::Wallet;

/// The fee rate increment a replacement pays at least, per vbyte, over the one it
/// replaces (Bitcoin Core's `-incrementalrelayfee` was 1 sat/vB until version 29; paying
/// it keeps a replacement relayable by every node).
pub const INCREMENTAL_RELAY: FeeRate = FeeRate::from_sat_per_kwu(250);

/// Default cap on a withdrawal's fee rate, in sat/vB.
pub const DEFAULT_MAX_FEE_RATE_SAT_VB: u64 = 500;

/// How long the coordinator has to answer a withdrawal request.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// Errors of a cooperative withdrawal.
#[derive(Debug, thiserror::Error)]
pub enum WithdrawError {
    /// Nothing to withdraw.
    #[error("no deposit to withdraw (`cohort deposits` shows where each stands)")]
    NoDeposits,
    /// A named deposit cannot be withdrawn.
    #[error("deposit {outpoint} cannot be withdrawn: {why}")]
    NotWithdrawable {
        /// The deposit.
        outpoint: OutPoint,
        /// Why.
        why: &'static str,
    },
    /// The deposits do not cover the fee and a non-dust output.
    #[error(
        "deposits of {} sat cannot pay a fee of {} sat and an output of at least {} sat",
        deposited.to_sat(), fee.to_sat(), dust.to_sat()
    )]
    TooSmall {
        /// What the deposits hold.
        deposited: Amount,
        /// The fee at the chosen rate.
        fee: Amount,
        /// The destination's dust limit.
        dust: Amount,
    },
    /// The fee rate is above the cap the user set.
    #[error("a fee rate of {rate} sat/vB is above the cap of {cap} sat/vB (raise --max-fee-rate)")]
    FeeRateTooHigh {
        /// The rate it would pay, sat/vB (rounded up).
        rate: u64,
        /// The cap, sat/vB.
        cap: u64,
    },
    /// The transaction would not be standard.
    #[error("{0}")]
    Shape(String),
    /// No stored withdrawal has that txid.
    #[error("no stored withdrawal {0}")]
    UnknownWithdrawal(bitcoin::Txid),
    /// The withdrawal to replace is confirmed or replaced already.
    #[error("withdrawal {txid} cannot be replaced: {why}")]
    NotPending {
        /// The withdrawal.
        txid: bitcoin::Txid,
        /// Why.
        why: &'static str,
    },
    /// The coordinator refused to co-sign.
    #[error("the coordinator refused the withdrawal: {0}")]
    Refused(RefusalReason),
    /// The coordinator's answer is wrong: nothing was published.
    #[error("the coordinator's answer is wrong, nothing was signed into a transaction: {0}")]
    BadAnswer(String),
    /// The coordinator did not answer in time.
    #[error("the coordinator did not answer within {0:?}")]
    Timeout(Duration),
    /// The session ended before an answer.
    #[error("the coordinator ended the session: {0}")]
    Ended(String),
    /// The signed transaction fails Bitcoin Core's script checks (a bug: nothing published).
    #[error("the signed withdrawal fails the script checks: {0}")]
    Invalid(String),
    /// Signing failed.
    #[error("signing: {0}")]
    Sign(String),
}

impl From<MusigError> for WithdrawError {
    fn from(e: MusigError) -> Self {
        WithdrawError::Sign(e.to_string())
    }
}

/// An unsigned withdrawal and what it pays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The transaction, every witness empty.
    pub tx: Transaction,
    /// The deposits' outputs, in input order.
    pub prevouts: Vec<TxOut>,
    /// What the destination receives.
    pub amount: Amount,
    /// The mining fee.
    pub fee: Amount,
    /// Its virtual size once signed.
    pub vsize: u64,
}

/// A withdrawal of `deposits` (outpoint and the output it holds) to `destination` at
/// `rate`: version 2, no lock time, every input signalling replacement, one output.
pub fn plan(
    deposits: &[(OutPoint, TxOut)],
    destination: &ScriptBuf,
    rate: FeeRate,
) -> Result<Plan, WithdrawError> {
    let tx = unsigned(deposits, destination, Amount::ZERO);
    let vsize = key_path_signed_weight(&tx).to_vbytes_ceil();
    let fee = rate.fee_vb(vsize).ok_or(WithdrawError::Shape("fee overflow".into()))?;
    with_fee(deposits, destination, fee)
}

/// A replacement of `old` (spending `prevouts`) at `rate` or, if higher, the lowest fee
/// a node relays as its replacement: the old fee plus [`INCREMENTAL_RELAY`] on the new
/// size, and at least one sat more.
pub fn bump_plan(
    old: &Transaction,
    prevouts: &[TxOut],
    rate: FeeRate,
) -> Result<Plan, WithdrawError> {
    let [output] = &old.output[..] else {
        return Err(WithdrawError::Shape("a stored withdrawal has one output".into()));
    };
    let deposits: Vec<(OutPoint, TxOut)> =
        old.input.iter().map(|i| i.previous_output).zip(prevouts.iter().cloned()).collect();
    let spent = sum(prevouts.iter().map(|o| o.value))?;
    let old_fee = spent
        .checked_sub(output.value)
        .ok_or(WithdrawError::Shape("the stored withdrawal pays more than it spends".into()))?;
    let fresh = plan(&deposits, &output.script_pubkey, rate)?;
    let increment = INCREMENTAL_RELAY
        .fee_vb(fresh.vsize)
        .and_then(|i| old_fee.checked_add(i))
        .ok_or(WithdrawError::Shape("fee overflow".into()))?;
    let fee = fresh.fee.max(increment).max(old_fee + Amount::from_sat(1));
    with_fee(&deposits, &output.script_pubkey, fee)
}

/// The plan paying exactly `fee`.
fn with_fee(
    deposits: &[(OutPoint, TxOut)],
    destination: &ScriptBuf,
    fee: Amount,
) -> Result<Plan, WithdrawError> {
    if deposits.is_empty() {
        return Err(WithdrawError::NoDeposits);
    }
    let deposited = sum(deposits.iter().map(|(_, o)| o.value))?;
    let dust = destination.minimal_non_dust();
    let amount = deposited
        .checked_sub(fee)
        .filter(|a| *a >= dust)
        .ok_or(WithdrawError::TooSmall { deposited, fee, dust })?;
    let tx = unsigned(deposits, destination, amount);
    let weight = key_path_signed_weight(&tx);
    if weight > MAX_STANDARD_WEIGHT {
        return Err(WithdrawError::Shape(format!(
            "{} deposits make a transaction heavier than a standard one; withdraw fewer at once",
            deposits.len()
        )));
    }
    let prevouts = deposits.iter().map(|(_, o)| o.clone()).collect();
    Ok(Plan { tx, prevouts, amount, fee, vsize: weight.to_vbytes_ceil() })
}

fn unsigned(
    deposits: &[(OutPoint, TxOut)],
    destination: &ScriptBuf,
    amount: Amount,
) -> Transaction {
    Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: deposits
            .iter()
            .map(|(outpoint, _)| TxIn {
                previous_output: *outpoint,
                script_sig: ScriptBuf::new(),
                sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                witness: Witness::new(),
            })
            .collect(),
        output: vec![TxOut { value: amount, script_pubkey: destination.clone() }],
    }
}

fn sum(amounts: impl Iterator<Item = Amount>) -> Result<Amount, WithdrawError> {
    money_sum(amounts).map_err(|_| WithdrawError::Shape("amounts above 21,000,000 BTC".into()))
}

/// The fee rate `plan` pays, in sat/vB rounded up (for caps and reports).
pub fn rate_sat_vb(plan: &Plan) -> u64 {
    plan.fee.to_sat().div_ceil(plan.vsize.max(1))
}

/// Gets `plan` co-signed by the coordinator on `link` and signs the wallet's half: the
/// fully signed transaction, checked input by input with Bitcoin Core's interpreter.
pub async fn cosign(
    link: &Link,
    wallet: &Wallet,
    plan: &Plan,
) -> Result<Transaction, WithdrawError> {
    let key = wallet.deposit_key();
    let script: DepositScript =
        wallet.deposit_script().map_err(|e| WithdrawError::Sign(e.to_string()))?;
    let ctx = script.signing_context().map_err(|e| WithdrawError::Sign(e.to_string()))?;
    let secret = key.scalar();
    let sighashes = key_spend_sighashes(&plan.tx, &plan.prevouts)
        .map_err(|e| WithdrawError::Sign(e.to_string()))?;
    let secnonces: Vec<_> =
        sighashes.iter().map(|m| musig::new_secnonce(&key.point, Some(&secret), Some(m))).collect();
    let ours: Vec<_> = secnonces.iter().map(|n| n.public_nonce()).collect();
    let inputs = plan
        .tx
        .input
        .iter()
        .zip(&ours)
        .map(|(i, nonce)| WithdrawInput {
            outpoint: i.previous_output,
            user_key: key.public,
            deposit_csv: script.csv(),
            nonce: nonce.clone(),
        })
        .collect();
    let body = WithdrawBody { tx: plan.tx.clone(), inputs };
    let message = Message::from_digest(
        body.ownership_message().map_err(|e| WithdrawError::Sign(e.to_string()))?,
    );
    let keypair = bitcoin::secp256k1::Keypair::from_secret_key(SECP256K1, &key.secret);
    let ownership_sigs =
        plan.tx.input.iter().map(|_| SECP256K1.sign_schnorr(&message, &keypair)).collect();
    let answer = exchange(link, Withdraw { body, ownership_sigs }).await?;
    let txid = plan.tx.compute_txid();
    if answer.txid != txid {
        return Err(WithdrawError::BadAnswer(format!(
            "co-signed {} instead of {txid}",
            answer.txid
        )));
    }
    let count = plan.tx.input.len();
    if answer.nonces.len() != count || answer.partials.len() != count {
        return Err(WithdrawError::BadAnswer(format!(
            "{} nonces and {} partial signatures for {count} inputs",
            answer.nonces.len(),
            answer.partials.len()
        )));
    }
    let coordinator = cohort_common::keys::to_point(&wallet.coordinator().key);
    let mut tx = plan.tx.clone();
    let parts = secnonces.into_iter().zip(ours).zip(answer.nonces).zip(answer.partials);
    for (i, (((secnonce, ours), theirs), their_psig)) in parts.enumerate() {
        let m = &sighashes[i];
        let agg = musig::nonce_agg(&[ours.clone(), theirs.clone()])?;
        let psig = musig::sign_partial(&ctx, &secret, secnonce, &agg, m)?;
        let contributions = [
            Contribution { signer: key.point, pubnonce: ours, psig },
            Contribution { signer: coordinator, pubnonce: theirs, psig: their_psig },
        ];
        let sig = match musig::combine(&ctx, &agg, m, &contributions) {
            Ok(sig) => sig,
            Err(MusigError::InvalidPartials { .. }) => {
                return Err(WithdrawError::BadAnswer(format!(
                    "the partial signature of input {i} is invalid"
                )))
            }
            Err(e) => return Err(e.into()),
        };
        tx.input[i].witness = key_spend_witness(&sig);
    }
    verify_tx(&tx, &plan.prevouts).map_err(|e| WithdrawError::Invalid(e.to_string()))?;
    Ok(tx)
}

/// One withdrawal request on a session of its own: the answer, the session ended cleanly.
async fn exchange(
    link: &Link,
    request: Withdraw,
) -> Result<cohort_common::messages::WithdrawSigned, WithdrawError> {
    let ended = |e: cohort_transport::TransportError| WithdrawError::Ended(e.to_string());
    let (mut send, mut recv) = link.open_session().await.map_err(ended)?;
    send.send(&ToCoordinator::Withdraw(request)).await.map_err(ended)?;
    let answer = async {
        loop {
            match recv.recv().await {
                Ok(Some(ToParticipant::WithdrawSigned(signed))) => return Ok(signed),
                Ok(Some(ToParticipant::Refused(refused))) => {
                    return Err(WithdrawError::Refused(refused.reason))
                }
                Ok(Some(ToParticipant::Goodbye(bye))) => {
                    return Err(WithdrawError::Ended(bye.reason.to_string()))
                }
                // Round announcements and the like are for joins.
                Ok(Some(_)) => {}
                Ok(None) => return Err(WithdrawError::Ended("the session ended".into())),
                Err(e) => return Err(ended(e)),
            }
        }
    };
    let answer = match tokio::time::timeout(ANSWER_TIMEOUT, answer).await {
        Ok(answer) => answer,
        Err(_) => Err(WithdrawError::Timeout(ANSWER_TIMEOUT)),
    };
    let bye = ToCoordinator::Goodbye(Goodbye { reason: Reason::new("withdrawal done") });
    if send.send(&bye).await.is_ok() && send.finish().await.is_ok() {
        // Let the coordinator read the goodbye and close first, as a join's end does.
        let _ = tokio::time::timeout(crate::client::SESSION_LINGER, link.closed()).await;
    }
    answer
}
