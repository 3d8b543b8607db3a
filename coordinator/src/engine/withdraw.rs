//! Cooperative withdrawal, the coordinator's half: the checks a [`Withdraw`] passes
//! before the coordinator co-signs it, the signing, and the record that keeps every
//! co-signed deposit out of later rounds.
//!
//! A co-signed withdrawal can be published by its owner at any time, so the deposit is
//! never put into a batch again (a batch spending it could be invalidated by it). Signing
//! again for the same deposits is allowed: that is how a withdrawal is fee-bumped, by a
//! replacement. The coordinator checks only what protects it and the other participants:
//! the deposit is the owner's (script and ownership signature), it is not in the running
//! round, and the transaction is one it can sign safely (every input a deposit of this
//! request, nothing else to sign, a standard weight, no value created).

use std::collections::{HashMap, HashSet};

use bitcoin::secp256k1::{Message, SECP256K1};
use bitcoin::transaction::Version;
use bitcoin::{OutPoint, TxOut};
use cohort_common::chain::{Chain, ChainError};
use cohort_common::messages::{Reason, RefusalReason, Withdraw, WithdrawSigned};
use cohort_common::musig;
use cohort_common::scripts::{key_spend_sighashes, DepositScript};
use cohort_common::standard::{key_path_signed_weight, money_sum, MAX_STANDARD_WEIGHT};

use super::register::DepositLookup;
use super::{ChainOutage, Coordinator, RoundPhase};

/// A withdrawal the coordinator co-signed: what the driver stores before it answers.
#[derive(Debug, Clone, PartialEq)]
pub struct Cosigned {
    /// The answer to send.
    pub answer: WithdrawSigned,
    /// The deposits spent and the outputs they hold, in input order.
    pub deposits: Vec<(OutPoint, TxOut)>,
}

/// Looks each deposit of `request` up on `chain` (nothing for a request with more than
/// `max_deposits` inputs: it is refused anyway).
pub fn lookup(
    chain: &dyn Chain,
    request: &Withdraw,
    max_deposits: usize,
) -> Result<Vec<DepositLookup>, ChainError> {
    if request.body.inputs.len() > max_deposits {
        return Ok(Vec::new());
    }
    request
        .body
        .inputs
        .iter()
        .map(|d| match chain.utxo(&d.outpoint)? {
            Some(utxo) => Ok(DepositLookup::Unspent(utxo)),
            None if chain.confirmations(&d.outpoint.txid)?.is_some() => Ok(DepositLookup::Spent),
            None => Ok(DepositLookup::Unknown),
        })
        .collect()
}

fn bad(text: impl Into<String>) -> RefusalReason {
    RefusalReason::BadWithdrawal(Reason::new(text))
}

impl Coordinator {
    /// Restores deposits with a co-signed withdrawal (from storage, at start-up).
    pub fn restore_withdrawal(&mut self, deposits: impl IntoIterator<Item = (OutPoint, TxOut)>) {
        self.withdrawing.extend(deposits);
    }

    /// Whether the coordinator co-signed a withdrawal of `outpoint`.
    pub fn is_withdrawing(&self, outpoint: &OutPoint) -> bool {
        self.withdrawing.contains_key(outpoint)
    }

    /// How many deposits have a co-signed withdrawal.
    pub fn withdrawals(&self) -> usize {
        self.withdrawing.len()
    }

    /// The checks of a withdrawal request that need no chain data: its shape, that no
    /// deposit is in the running round, each deposit's script and ownership signature.
    /// A driver calls it before looking the deposits up, so a request that is not from
    /// the deposits' owner costs no lookup; [`Coordinator::withdraw`] runs it again.
    pub fn precheck_withdrawal(
        &self,
        request: &Withdraw,
    ) -> Result<Vec<DepositScript>, RefusalReason> {
        let body = &request.body;
        let tx = &body.tx;
        let count = body.inputs.len();
        let max = self.max_deposits_per_registration();
        if count == 0 {
            return Err(RefusalReason::NoDeposits);
        }
        if count > max {
            return Err(RefusalReason::TooManyDeposits { count: sat(count), max: sat(max) });
        }
        if request.ownership_sigs.len() != count {
            return Err(RefusalReason::SignatureCount {
                deposits: sat(count),
                sigs: sat(request.ownership_sigs.len()),
            });
        }
        if tx.version != Version::TWO {
            return Err(bad("the transaction must be version 2"));
        }
        if tx.input.len() != count {
            return Err(bad(format!("{} inputs for {count} deposits", tx.input.len())));
        }
        if tx.output.is_empty() {
            return Err(bad("no output"));
        }
        if key_path_signed_weight(tx) > MAX_STANDARD_WEIGHT {
            return Err(bad("heavier than a standard transaction"));
        }
        let mut seen = HashSet::with_capacity(count);
        for (txin, input) in tx.input.iter().zip(&body.inputs) {
            let op = input.outpoint;
            if txin.previous_output != op {
                return Err(bad(format!("input spends {} instead of {op}", txin.previous_output)));
            }
            if !txin.script_sig.is_empty() || !txin.witness.is_empty() {
                return Err(bad("an input is already signed"));
            }
            if !seen.insert(op) {
                return Err(RefusalReason::DuplicateDeposit(op));
            }
            if self.in_running_round(&op) {
                return Err(RefusalReason::InRound(op));
            }
        }
        let message = Message::from_digest(
            body.ownership_message().map_err(|_| RefusalReason::Other(Reason::new("encoding")))?,
        );
        let mut scripts = Vec::with_capacity(count);
        for (i, (input, sig)) in body.inputs.iter().zip(&request.ownership_sigs).enumerate() {
            let script = DepositScript::new(input.user_key, self.key.public, input.deposit_csv)
                .map_err(|_| RefusalReason::NotDepositAddress(input.outpoint))?;
            let xonly = input.user_key.x_only_public_key().0;
            if SECP256K1.verify_schnorr(sig, &message, &xonly).is_err() {
                return Err(RefusalReason::BadOwnershipSignature { deposit: sat(i) });
            }
            scripts.push(script);
        }
        Ok(scripts)
    }

    /// Checks a withdrawal request ([`Coordinator::precheck_withdrawal`], then the chain
    /// data `lookups`, one per input from [`lookup`]) and co-signs it: the coordinator's
    /// nonce and partial signature for each input. From then on its deposits join no
    /// round. The driver stores [`Cosigned::deposits`] before it sends the answer.
    ///
    /// A deposit already co-signed may be co-signed again (a replacement that bumps the
    /// fee): the chain shows it spent by the first withdrawal, so the output recorded
    /// then is used.
    pub fn withdraw(
        &mut self,
        request: &Withdraw,
        lookups: Result<Vec<DepositLookup>, ChainOutage>,
    ) -> Result<Cosigned, RefusalReason> {
        let scripts = self.precheck_withdrawal(request)?;
        let body = &request.body;
        let tx = &body.tx;
        let count = body.inputs.len();
        // Chain data last: only a request from the deposits' owner costs a lookup's use.
        let lookups = match lookups {
            Ok(l) if l.len() == count => l,
            Ok(_) => return Err(RefusalReason::Other(Reason::new("chain data missing"))),
            Err(e) => return Err(RefusalReason::Other(Reason::new(format!("chain: {e}")))),
        };
        let mut prevouts = Vec::with_capacity(count);
        for ((input, script), found) in body.inputs.iter().zip(&scripts).zip(lookups) {
            let op = input.outpoint;
            let txout = match (found, self.withdrawing.get(&op)) {
                (DepositLookup::Unspent(utxo), _) => utxo.txout,
                (_, Some(recorded)) => recorded.clone(),
                (DepositLookup::Spent, None) => return Err(RefusalReason::Spent(op)),
                (DepositLookup::Unknown, None) => return Err(RefusalReason::UnknownDeposit(op)),
            };
            if txout.script_pubkey != script.script_pubkey() {
                return Err(RefusalReason::NotDepositAddress(op));
            }
            prevouts.push(txout);
        }
        let spent = money_sum(prevouts.iter().map(|o| o.value))
            .map_err(|_| RefusalReason::OutsideMoneyRange { deposits: true })?;
        let paid = money_sum(tx.output.iter().map(|o| o.value))
            .map_err(|_| bad("the outputs sum above 21,000,000 BTC"))?;
        if paid > spent {
            return Err(bad(format!(
                "outputs of {} sat exceed the deposits' {} sat",
                paid.to_sat(),
                spent.to_sat()
            )));
        }
        let sighashes = key_spend_sighashes(tx, &prevouts).map_err(|e| bad(e.to_string()))?;
        let mut nonces = Vec::with_capacity(count);
        let mut partials = Vec::with_capacity(count);
        let secret = self.key.scalar();
        for ((input, script), sighash) in body.inputs.iter().zip(&scripts).zip(&sighashes) {
            let ctx = script.signing_context().map_err(|e| bad(e.to_string()))?;
            // A fresh nonce per input and request, made after the participant's nonce is
            // known (BIP-327: the last signer may do so) and never kept.
            let secnonce = musig::new_secnonce(&self.key.point, Some(&secret), Some(sighash));
            let ours = secnonce.public_nonce();
            let agg = musig::nonce_agg(&[input.nonce.clone(), ours.clone()])
                .map_err(|e| bad(e.to_string()))?;
            let psig = musig::sign_partial(&ctx, &self.key, secnonce, &agg, sighash)
                .map_err(|e| bad(e.to_string()))?;
            nonces.push(ours);
            partials.push(psig);
        }
        let deposits: Vec<(OutPoint, TxOut)> =
            body.inputs.iter().map(|i| i.outpoint).zip(prevouts).collect();
        self.withdrawing.extend(deposits.iter().cloned());
        let answer = WithdrawSigned { txid: tx.compute_txid(), nonces, partials };
        Ok(Cosigned { answer, deposits })
    }

    /// Whether `outpoint` is registered in a round that is not over.
    fn in_running_round(&self, outpoint: &OutPoint) -> bool {
        self.round.as_ref().is_some_and(|r| {
            !matches!(r.phase, RoundPhase::Done) && r.taken.outpoints.contains(outpoint)
        })
    }
}

fn sat(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Deposits with a co-signed withdrawal and the outputs they hold.
pub(crate) type Withdrawing = HashMap<OutPoint, TxOut>;
