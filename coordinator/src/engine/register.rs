//! Registration checks: every request is validated against the chain view and the
//! round before it is accepted, and refused with a typed reason otherwise.

use std::collections::HashSet;

use bitcoin::secp256k1::{Message, SECP256K1};
use bitcoin::{Amount, OutPoint, TxOut};
use cohort_common::chain::Chain;
use cohort_common::fees::{service_fee, KEY_PATH_INPUT_WEIGHT};
use cohort_common::messages::{RefusalReason, Register, RoundParams};
use cohort_common::musig::Point;
use cohort_common::scripts::DepositScript;

/// A registration that passed every check.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The deposits' scripts, in request order.
    pub scripts: Vec<DepositScript>,
    /// The outputs the deposits hold.
    pub txouts: Vec<TxOut>,
}

/// What the round already holds, for duplicate checks.
#[derive(Debug, Default)]
pub struct Taken {
    /// Deposits already registered this round.
    pub outpoints: HashSet<OutPoint>,
    /// Cosigner keys already used this round (compressed encoding).
    pub cosigners: HashSet<[u8; 33]>,
}

/// A leaf script the coordinator will put in a tree: the rule both sides share.
pub use cohort_common::standard::is_standard_leaf;

/// Checks a registration against the round, the chain and the bans.
pub fn check(
    reg: &Register,
    params: &RoundParams,
    challenge: &[u8; 32],
    chain: &dyn Chain,
    taken: &Taken,
    banned: &dyn Fn(&OutPoint) -> bool,
) -> Result<Checked, RefusalReason> {
    let body = &reg.body;
    if body.round != params.round {
        return Err(RefusalReason::WrongRound { expected: params.round, got: body.round });
    }
    let deposits = body.deposits.len();
    if deposits == 0 {
        return Err(RefusalReason::NoDeposits);
    }
    if deposits > usize::from(params.max_deposits_per_registration) {
        return Err(RefusalReason::TooManyDeposits {
            count: count(deposits),
            max: u32::from(params.max_deposits_per_registration),
        });
    }
    let leaves = body.leaves.len() + 1;
    if leaves > usize::from(params.max_leaves_per_registration) {
        return Err(RefusalReason::TooManyLeaves {
            count: count(leaves),
            max: u32::from(params.max_leaves_per_registration),
        });
    }
    if reg.ownership_sigs.len() != deposits {
        return Err(RefusalReason::SignatureCount {
            deposits: count(deposits),
            sigs: count(reg.ownership_sigs.len()),
        });
    }
    let depth = usize::from(params.tree.max_depth);
    let nonce_counts =
        body.leaves.iter().map(|l| l.nonces.len()).chain([body.remainder.nonces.len()]);
    for got in nonce_counts {
        if got != depth {
            return Err(RefusalReason::BadNonceCount { expected: count(depth), got: count(got) });
        }
    }
    let mut cosigners = HashSet::with_capacity(leaves);
    let keys = body.leaves.iter().map(|l| &l.cosigner).chain([&body.remainder.cosigner]);
    for key in keys {
        let bytes = key.serialize();
        if !cosigners.insert(bytes)
            || taken.cosigners.contains(&bytes)
            || is_coordinator(key, params)
        {
            return Err(RefusalReason::DuplicateCosigner);
        }
    }
    for (i, leaf) in body.leaves.iter().enumerate() {
        if !is_standard_leaf(&leaf.output.script_pubkey) {
            return Err(RefusalReason::NonStandardScript { leaf: count(i) });
        }
        if leaf.output.amount < leaf.output.script_pubkey.minimal_non_dust() {
            return Err(RefusalReason::Dust { leaf: count(i) });
        }
    }
    if !is_standard_leaf(&body.remainder.script_pubkey) {
        return Err(RefusalReason::NonStandardScript { leaf: count(body.leaves.len()) });
    }

    let tip = chain.tip_height().map_err(chain_unavailable)?;
    let message = Message::from_digest(
        body.ownership_message(challenge).map_err(|_| RefusalReason::Other(reason("encoding")))?,
    );
    let mut seen = HashSet::with_capacity(deposits);
    let mut scripts = Vec::with_capacity(deposits);
    let mut txouts = Vec::with_capacity(deposits);
    for (i, (dep, sig)) in body.deposits.iter().zip(&reg.ownership_sigs).enumerate() {
        let op = dep.outpoint;
        if !seen.insert(op) || taken.outpoints.contains(&op) {
            return Err(RefusalReason::DuplicateDeposit(op));
        }
        if banned(&op) {
            return Err(RefusalReason::Banned(op));
        }
        if dep.deposit_csv > params.max_deposit_csv {
            return Err(RefusalReason::DepositCsvTooLarge {
                csv: dep.deposit_csv,
                max: params.max_deposit_csv,
            });
        }
        let script = DepositScript::new(dep.user_key, params.coordinator_key, dep.deposit_csv)
            .map_err(|_| RefusalReason::NotDepositAddress(op))?;
        let utxo = match chain.utxo(&op).map_err(chain_unavailable)? {
            Some(utxo) => utxo,
            None => {
                let known = chain.confirmations(&op.txid).map_err(chain_unavailable)?.is_some();
                return Err(if known {
                    RefusalReason::Spent(op)
                } else {
                    RefusalReason::UnknownDeposit(op)
                });
            }
        };
        if utxo.txout.script_pubkey != script.script_pubkey() {
            return Err(RefusalReason::NotDepositAddress(op));
        }
        let height = match utxo.height {
            Some(h) if tip.saturating_sub(h) + 1 >= params.min_confs => h,
            _ => return Err(RefusalReason::Unconfirmed(op)),
        };
        if height + u32::from(dep.deposit_csv) <= tip + params.safety_margin {
            return Err(RefusalReason::Expiring(op));
        }
        let xonly = dep.user_key.x_only_public_key().0;
        if SECP256K1.verify_schnorr(sig, &message, &xonly).is_err() {
            return Err(RefusalReason::BadOwnershipSignature { deposit: count(i) });
        }
        scripts.push(script);
        txouts.push(utxo.txout);
    }

    // A lower bound of the fee: its own inputs and the service fee.
    let deposited: Amount = txouts.iter().map(|o| o.value).sum();
    let inputs_weight = bitcoin::Weight::from_wu(deposits as u64 * KEY_PATH_INPUT_WEIGHT);
    let required = params
        .fees
        .fee_rate
        .fee_wu(inputs_weight)
        .zip(service_fee(&params.fees, deposited).ok())
        .and_then(|(a, b)| a.checked_add(b))
        .ok_or(RefusalReason::Other(reason("fee overflow")))?;
    if body.max_fee < required {
        return Err(RefusalReason::FeeTooLow { max_fee: body.max_fee, required });
    }
    let requested = body
        .leaves
        .iter()
        .try_fold(Amount::ZERO, |acc, l| acc.checked_add(l.output.amount))
        .ok_or(RefusalReason::Other(reason("amount overflow")))?;
    let needed = requested
        .checked_add(required)
        .and_then(|a| a.checked_add(body.remainder.script_pubkey.minimal_non_dust()))
        .ok_or(RefusalReason::Other(reason("amount overflow")))?;
    if deposited < needed {
        return Err(RefusalReason::InsufficientFunds { available: deposited, needed });
    }
    Ok(Checked { scripts, txouts })
}

fn is_coordinator(key: &Point, params: &RoundParams) -> bool {
    key.serialize() == params.coordinator_key.serialize()
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn reason(text: &str) -> cohort_common::messages::Reason {
    cohort_common::messages::Reason::new(text)
}

fn chain_unavailable(e: cohort_common::chain::ChainError) -> RefusalReason {
    RefusalReason::Other(reason(&format!("chain unavailable: {e}")))
}
