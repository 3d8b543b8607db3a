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

use bitcoin::secp256k1::{Message, SECP256K1};
use bitcoin::{Amount, FeeRate, OutPoint, ScriptBuf, Transaction, TxOut};
use cohort_common::consensus::verify_tx;
use cohort_common::messages::{
    Goodbye, Reason, RefusalReason, ToCoordinator, ToParticipant, Withdraw, WithdrawBody,
    WithdrawInput, WithdrawSigned,
};
use cohort_common::musig::{self, Contribution, MusigError};
use cohort_common::scripts::{key_spend_sighashes, key_spend_witness, DepositScript};
use cohort_common::standard::{key_path_signed_weight, money_sum, MAX_STANDARD_WEIGHT};
use cohort_transport::Client as Link;

use crate::send::unsigned;
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
    let tx =
        unsigned(deposits, vec![TxOut { value: Amount::ZERO, script_pubkey: destination.clone() }]);
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
    let tx = unsigned(deposits, vec![TxOut { value: amount, script_pubkey: destination.clone() }]);
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
    let (request, pending) = prepare(wallet, plan)?;
    let answer = exchange(link, request).await?;
    pending.finish(answer)
}

/// A request sent and the secrets to finish it with, in memory only: each secret nonce
/// is consumed by the one signature it makes.
pub struct Pending {
    plan: Plan,
    key: cohort_common::keys::Keypair,
    coordinator: musig2::secp::Point,
    ctx: musig::KeyAggContext,
    sighashes: Vec<[u8; 32]>,
    secnonces: Vec<musig2::SecNonce>,
    ours: Vec<musig2::PubNonce>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("txid", &self.plan.tx.compute_txid())
            .finish_non_exhaustive()
    }
}

/// The request for `plan` (a fresh nonce per input, an ownership signature per input)
/// and what [`Pending::finish`] needs once the coordinator answers.
pub fn prepare(wallet: &Wallet, plan: &Plan) -> Result<(Withdraw, Pending), WithdrawError> {
    let sign_err = |e: &dyn std::fmt::Display| WithdrawError::Sign(e.to_string());
    let key = wallet.deposit_key();
    let script: DepositScript = wallet.deposit_script().map_err(|e| sign_err(&e))?;
    let ctx = script.signing_context().map_err(|e| sign_err(&e))?;
    let secret = key.scalar();
    let sighashes = key_spend_sighashes(&plan.tx, &plan.prevouts).map_err(|e| sign_err(&e))?;
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
    let message = Message::from_digest(body.ownership_message().map_err(|e| sign_err(&e))?);
    let keypair = bitcoin::secp256k1::Keypair::from_secret_key(SECP256K1, &key.secret);
    let ownership_sigs =
        plan.tx.input.iter().map(|_| SECP256K1.sign_schnorr(&message, &keypair)).collect();
    let pending = Pending {
        plan: plan.clone(),
        key,
        coordinator: cohort_common::keys::to_point(&wallet.coordinator().key),
        ctx,
        sighashes,
        secnonces,
        ours,
    };
    Ok((Withdraw { body, ownership_sigs }, pending))
}

impl Pending {
    /// Checks the coordinator's answer, signs the wallet's half of every input and
    /// returns the signed transaction, checked with Bitcoin Core's interpreter. A wrong
    /// answer (another transaction, missing or invalid signatures) is an error, and the
    /// signatures made so far are dropped with the transaction: nothing leaves.
    pub fn finish(self, answer: WithdrawSigned) -> Result<Transaction, WithdrawError> {
        let Pending { plan, key, coordinator, ctx, sighashes, secnonces, ours } = self;
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
        let mut tx = plan.tx.clone();
        let parts = secnonces.into_iter().zip(ours).zip(answer.nonces).zip(answer.partials);
        for (i, (((secnonce, ours), theirs), their_psig)) in parts.enumerate() {
            let m = &sighashes[i];
            let agg = musig::nonce_agg(&[ours.clone(), theirs.clone()])?;
            // One session for our signature and the combination: its final nonce once.
            let session = musig::SigningSession::new(&ctx, &agg, m);
            let psig = session.sign(&ctx, &key, secnonce)?;
            let contributions = [
                Contribution { signer: key.point, pubnonce: ours, psig },
                Contribution { signer: coordinator, pubnonce: theirs, psig: their_psig },
            ];
            let sig = match session.combine(&ctx, &contributions) {
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
}

/// One withdrawal request on a session of its own: the answer, the session ended cleanly.
async fn exchange(link: &Link, request: Withdraw) -> Result<WithdrawSigned, WithdrawError> {
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

#[cfg(test)]
mod tests {
    use bitcoin::hashes::Hash;
    use bitcoin::secp256k1::SecretKey;
    use cohort_common::chain::Utxo;
    use cohort_common::exit::p2tr_single;
    use cohort_common::keys::Keypair;
    use cohort_coordinator::engine::{Coordinator, CoordinatorConfig, DepositLookup};

    use super::*;
    use crate::store::MemoryStore;
    use crate::wallet::CoordinatorInfo;

    /// A wallet of the coordinator `c`, and two of its deposits.
    fn setup(c: &Keypair) -> (Wallet, Vec<(OutPoint, TxOut)>) {
        let info = CoordinatorInfo {
            uri: "cohort://00@localhost:1".into(),
            key: c.public,
            network: bitcoin::Network::Regtest,
            deposit_csv: 100,
            exit_csv: 10,
            dev: false,
            dev_chain: None,
        };
        let wallet = Wallet::create_with_seed(&MemoryStore::new(), [3; 32], info).unwrap();
        let script = wallet.deposit_script().unwrap().script_pubkey();
        let deposits = (0..2)
            .map(|i| {
                let outpoint =
                    OutPoint { txid: bitcoin::Txid::from_byte_array([i + 1; 32]), vout: 0 };
                (outpoint, TxOut { value: Amount::from_sat(50_000), script_pubkey: script.clone() })
            })
            .collect();
        (wallet, deposits)
    }

    /// The real engine's answer to `request`, the deposits unspent on its chain.
    fn engine_answer(
        c: &Keypair,
        request: &Withdraw,
        deposits: &[(OutPoint, TxOut)],
    ) -> WithdrawSigned {
        let config = CoordinatorConfig::new(p2tr_single(&Keypair::random()));
        let mut engine = Coordinator::new(c.clone(), config).unwrap();
        let lookups = deposits
            .iter()
            .map(|(_, txout)| {
                DepositLookup::Unspent(Utxo { txout: txout.clone(), height: Some(1) })
            })
            .collect();
        engine.withdraw(request, Ok(lookups)).unwrap().answer
    }

    fn coordinator() -> Keypair {
        Keypair::from_secret(SecretKey::from_slice(&[9; 32]).unwrap())
    }

    #[test]
    fn a_plan_pays_the_destination_all_but_the_fee_and_signals_replacement() {
        let (_, deposits) = setup(&coordinator());
        let to = p2tr_single(&Keypair::random());
        let plan = plan(&deposits, &to, FeeRate::from_sat_per_kwu(750)).unwrap();
        // Two key-path inputs and one P2TR output: 674 WU once signed.
        assert_eq!(plan.vsize, 169);
        assert_eq!(plan.fee, Amount::from_sat(3 * 169));
        assert_eq!(plan.amount + plan.fee, Amount::from_sat(100_000));
        assert!(plan.tx.input.iter().all(|i| i.sequence.is_rbf()));
        assert_eq!(rate_sat_vb(&plan), 3);
        let small =
            [(deposits[0].0, TxOut { value: Amount::from_sat(400), ..deposits[0].1.clone() })];
        let r = super::plan(&small, &to, FeeRate::from_sat_per_kwu(750));
        assert!(matches!(r, Err(WithdrawError::TooSmall { .. })), "{r:?}");
        assert!(matches!(super::plan(&[], &to, FeeRate::ZERO), Err(WithdrawError::NoDeposits)));
    }

    #[test]
    fn a_bump_pays_at_least_the_old_fee_and_the_relay_increment() {
        let (_, deposits) = setup(&coordinator());
        let to = p2tr_single(&Keypair::random());
        let old = plan(&deposits, &to, FeeRate::from_sat_per_kwu(750)).unwrap();
        // At the same or a lower rate, the increment decides.
        let low = bump_plan(&old.tx, &old.prevouts, FeeRate::from_sat_per_kwu(250)).unwrap();
        assert_eq!(low.fee, old.fee + Amount::from_sat(old.vsize));
        assert_eq!(low.tx.input, old.tx.input);
        assert_eq!(low.tx.output[0].script_pubkey, to);
        // A higher rate is paid as asked.
        let high = bump_plan(&old.tx, &old.prevouts, FeeRate::from_sat_per_kwu(2_500)).unwrap();
        assert_eq!(high.fee, Amount::from_sat(10 * old.vsize));
    }

    #[test]
    fn the_coordinators_answer_completes_the_signature_and_a_wrong_one_signs_nothing() {
        let c = coordinator();
        let (wallet, deposits) = setup(&c);
        let to = p2tr_single(&Keypair::random());
        let plan = plan(&deposits, &to, FeeRate::from_sat_per_kwu(500)).unwrap();

        let (request, pending) = prepare(&wallet, &plan).unwrap();
        let answer = engine_answer(&c, &request, &deposits);
        let tx = pending.finish(answer).unwrap();
        assert_eq!(tx.compute_txid(), plan.tx.compute_txid());
        assert!(tx.input.iter().all(|i| i.witness.len() == 1));
        // The fee was priced on the size the signed transaction has.
        assert_eq!(tx.vsize() as u64, plan.vsize);

        type Tamper = fn(&mut WithdrawSigned);
        let tampered: [(&str, Tamper); 4] = [
            ("another txid", |a| a.txid = bitcoin::Txid::from_byte_array([7; 32])),
            ("a missing partial", |a| {
                a.partials.pop();
            }),
            ("swapped partials", |a| a.partials.swap(0, 1)),
            ("swapped nonces", |a| a.nonces.swap(0, 1)),
        ];
        for (what, tamper) in tampered {
            let (request, pending) = prepare(&wallet, &plan).unwrap();
            let mut answer = engine_answer(&c, &request, &deposits);
            tamper(&mut answer);
            let r = pending.finish(answer);
            assert!(matches!(r, Err(WithdrawError::BadAnswer(_))), "{what}: {r:?}");
        }
    }
}
