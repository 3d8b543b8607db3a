//! Acceptance rules of the ledger: structure, inputs, value, absolute and BIP-68
//! relative locks, TRUC (version 3) topology, dust, relay fees and 1-parent-1-child
//! packages. Script checks live in [`crate::consensus`]; the limits, dust and money
//! range are the shared rules of [`crate::standard`].

use bitcoin::relative;
use bitcoin::{Amount, OutPoint, Sequence, Transaction, TxOut, Txid};

use super::state::{median_time_past, Lookup, View};
use crate::chain::RejectReason;

use crate::standard::{dust_limit, is_anchor, is_dust, money_sum};
pub use crate::standard::{MAX_STANDARD_WEIGHT, P2A_SCRIPT, TRUC_CHILD_MAX_VSIZE, TRUC_MAX_VSIZE};

/// BIP-68: set in nSequence to disable the relative lock.
const SEQUENCE_DISABLE: u32 = 1 << 31;
/// BIP-68: set in nSequence for a time-based lock (512-second units).
const SEQUENCE_TYPE_TIME: u32 = 1 << 22;
/// BIP-68: the lock value bits.
const SEQUENCE_MASK: u32 = 0xffff;
/// Locktimes below this are heights, at or above it timestamps.
const LOCKTIME_THRESHOLD: u32 = 500_000_000;

/// What the contextual checks learned about an acceptable transaction.
#[derive(Debug, Clone)]
pub struct Checked {
    /// Outputs it spends, in input order.
    pub spent: Vec<TxOut>,
    /// Fee it pays.
    pub fee: Amount,
    /// Virtual size in vB.
    pub vsize: u64,
    /// Indices of its outputs below their dust threshold.
    pub dust: Vec<usize>,
}

/// Fee owed at the minimum relay fee rate of 1 sat/vB.
pub fn min_relay_fee(vsize: u64) -> Amount {
    Amount::from_sat(vsize)
}

/// Most transactions one replacement may evict (Bitcoin Core's rule 5).
const MAX_REPLACEMENT_EVICTIONS: usize = 100;

/// The unconfirmed transactions `tx` conflicts with (`direct`) and, with their
/// descendants, everything it would evict; both empty when it conflicts with none.
/// Version 3 transactions are replaced like any other, as Core does (a CPFP child paid
/// again at a higher rate); TRUC sibling eviction, where a new child that spends no
/// input of the old one still evicts it, is not modelled.
pub(super) fn replaced(
    s: &super::state::State,
    tx: &Transaction,
) -> (std::collections::HashSet<Txid>, std::collections::HashSet<Txid>) {
    let direct = s.conflicts(tx);
    if direct.is_empty() {
        return Default::default();
    }
    let all = s.with_descendants(&direct);
    (direct, all)
}

/// BIP-125 rules 3, 4, 5 and 6 for a replacement of `evicted` (conflicting directly
/// with `direct`), as Bitcoin Core applies them with an incremental relay fee of
/// 1 sat/vB.
pub(super) fn check_replacement(
    s: &super::state::State,
    checked: &Checked,
    direct: &std::collections::HashSet<Txid>,
    evicted: &std::collections::HashSet<Txid>,
) -> Result<(), RejectReason> {
    if evicted.is_empty() {
        return Ok(());
    }
    if evicted.len() > MAX_REPLACEMENT_EVICTIONS {
        return Err(RejectReason::ReplacementTooLarge(evicted.len()));
    }
    let mut replaced_fees = Amount::ZERO;
    for txid in evicted {
        let (fee, _) = s.fee_and_vsize(txid).ok_or(RejectReason::ValueOverflow)?;
        replaced_fees = replaced_fees.checked_add(fee).ok_or(RejectReason::ValueOverflow)?;
    }
    // Fee rates compared exactly, as fee × other's vsize.
    let mut replaced_rate = (Amount::ZERO, 1u64);
    for txid in direct {
        let (fee, vsize) = s.fee_and_vsize(txid).ok_or(RejectReason::ValueOverflow)?;
        if u128::from(fee.to_sat()) * u128::from(replaced_rate.1)
            > u128::from(replaced_rate.0.to_sat()) * u128::from(vsize)
        {
            replaced_rate = (fee, vsize.max(1));
        }
    }
    let needed = replaced_fees
        .checked_add(min_relay_fee(checked.vsize))
        .ok_or(RejectReason::ValueOverflow)?;
    let higher_rate = u128::from(checked.fee.to_sat()) * u128::from(replaced_rate.1)
        > u128::from(replaced_rate.0.to_sat()) * u128::from(checked.vsize.max(1));
    if checked.fee < needed || !higher_rate {
        return Err(RejectReason::ReplacementTooCheap {
            fee: checked.fee,
            needed,
            fee_rate_sat_vb: checked.fee.to_sat() / checked.vsize.max(1),
            replaced_rate_sat_vb: replaced_rate.0.to_sat() / replaced_rate.1,
        });
    }
    Ok(())
}

/// Checks that need no chain state.
pub fn check_sanity(tx: &Transaction) -> Result<(), RejectReason> {
    if tx.input.is_empty() {
        return Err(RejectReason::NoInputs);
    }
    if tx.output.is_empty() {
        return Err(RejectReason::NoOutputs);
    }
    let weight = tx.weight();
    if weight > MAX_STANDARD_WEIGHT {
        return Err(RejectReason::TooHeavy { weight, max: MAX_STANDARD_WEIGHT });
    }
    let mut seen = std::collections::HashSet::with_capacity(tx.input.len());
    for (input, txin) in tx.input.iter().enumerate() {
        let outpoint = txin.previous_output;
        if outpoint.is_null() {
            return Err(RejectReason::MissingInput { input, outpoint });
        }
        if !seen.insert(outpoint) {
            return Err(RejectReason::DuplicateInput { input, outpoint });
        }
    }
    sum_amounts(tx.output.iter().map(|o| o.value))?;
    Ok(())
}

/// The money-range sum the shared rules define, as the ledger reports it.
fn sum_amounts(amounts: impl Iterator<Item = Amount>) -> Result<Amount, RejectReason> {
    money_sum(amounts).map_err(|_| RejectReason::ValueOverflow)
}

/// Checks a transaction against the view: inputs, value, locks and TRUC topology.
pub fn check_context(
    view: View<'_>,
    tx: &Transaction,
    txid: Txid,
) -> Result<Checked, RejectReason> {
    if view.knows(&txid) {
        return Err(RejectReason::AlreadyKnown { txid });
    }
    let tip = view.state.tip;
    let next_height = tip.saturating_add(1);
    let mut spent = Vec::with_capacity(tx.input.len());
    let mut parents: Vec<(Txid, i32)> = Vec::new();
    for (input, txin) in tx.input.iter().enumerate() {
        let outpoint = txin.previous_output;
        let (utxo, parent) = match view.lookup(&outpoint) {
            Lookup::Unspent { utxo, unconfirmed_parent } => (utxo, unconfirmed_parent),
            Lookup::Spent { spender, confirmed } => {
                return Err(RejectReason::DoubleSpend { input, outpoint, spender, confirmed })
            }
            Lookup::Missing => return Err(RejectReason::MissingInput { input, outpoint }),
        };
        check_relative_lock(tx, input, txin.sequence, utxo.height, tip)?;
        if let Some(p) = parent {
            if !parents.contains(&p) {
                parents.push(p);
            }
        }
        spent.push(utxo.txout);
    }
    check_final(tx, next_height, median_time_past(tip))?;
    let input = sum_amounts(spent.iter().map(|o| o.value))?;
    let output = sum_amounts(tx.output.iter().map(|o| o.value))?;
    let fee = input.checked_sub(output).ok_or(RejectReason::ValueOutExceedsIn { input, output })?;
    let vsize = tx.vsize() as u64;
    check_truc(view, tx, vsize, &parents)?;
    let dust = tx.output.iter().enumerate().filter(|(_, o)| is_dust(o)).map(|(i, _)| i).collect();
    Ok(Checked { spent, fee, vsize, dust })
}

/// BIP-68 against the spent output's confirmation height (an unconfirmed output counts
/// as mined in the next block, as Bitcoin Core does). Time-based locks use median
/// time past: the coin's time is the MTP of the block before the one confirming it.
fn check_relative_lock(
    tx: &Transaction,
    input: usize,
    sequence: Sequence,
    conf_height: Option<u32>,
    tip: u32,
) -> Result<(), RejectReason> {
    let seq = sequence.to_consensus_u32();
    // Bitcoin Core compares the version as unsigned.
    if (tx.version.0 as u32) < 2 || seq & SEQUENCE_DISABLE != 0 {
        return Ok(());
    }
    let next_height = tip.saturating_add(1);
    let coin_height = conf_height.unwrap_or(next_height);
    let value = seq & SEQUENCE_MASK;
    let satisfied = if seq & SEQUENCE_TYPE_TIME != 0 {
        let coin_time = median_time_past(coin_height.saturating_sub(1));
        coin_time + u64::from(value) * 512 <= median_time_past(tip)
    } else {
        u64::from(coin_height) + u64::from(value) <= u64::from(next_height)
    };
    if satisfied {
        return Ok(());
    }
    let lock = sequence
        .to_relative_lock_time()
        .unwrap_or(relative::LockTime::from(relative::Height::from(value as u16)));
    Err(RejectReason::PrematureRelativeLock { input, lock, conf_height, next_height })
}

/// Absolute locktime finality for the next block (BIP-113: times against median time past).
fn check_final(tx: &Transaction, next_height: u32, median_time: u64) -> Result<(), RejectReason> {
    let lock = tx.lock_time.to_consensus_u32();
    let reached = lock == 0
        || if lock < LOCKTIME_THRESHOLD {
            lock < next_height
        } else {
            u64::from(lock) < median_time
        };
    if reached || tx.input.iter().all(|i| i.sequence == Sequence::MAX) {
        return Ok(());
    }
    Err(RejectReason::NonFinal {
        lock_time: tx.lock_time,
        next_height,
        median_time: u32::try_from(median_time).unwrap_or(u32::MAX),
    })
}

/// TRUC (BIP-431): a v3 transaction is at most 10,000 vB; with an unconfirmed parent
/// it is at most 1,000 vB, that parent is v3, is its only unconfirmed ancestor and
/// has no other unconfirmed child; v3 and non-v3 never mix unconfirmed.
fn check_truc(
    view: View<'_>,
    tx: &Transaction,
    vsize: u64,
    parents: &[(Txid, i32)],
) -> Result<(), RejectReason> {
    let version = tx.version.0;
    if version != 3 {
        for (input, txin) in tx.input.iter().enumerate() {
            if let Some((_, 3)) = parents.iter().find(|(p, _)| *p == txin.previous_output.txid) {
                return Err(RejectReason::TrucVersionMismatch {
                    input,
                    version,
                    parent_version: 3,
                });
            }
        }
        return Ok(());
    }
    if vsize > TRUC_MAX_VSIZE {
        return Err(RejectReason::TrucTooLarge { vsize, max: TRUC_MAX_VSIZE });
    }
    let [(parent, parent_version)] = parents else {
        return if parents.is_empty() { Ok(()) } else { Err(RejectReason::TrucTooManyAncestors) };
    };
    if *parent_version != 3 {
        let input = tx.input.iter().position(|i| i.previous_output.txid == *parent).unwrap_or(0);
        return Err(RejectReason::TrucVersionMismatch {
            input,
            version,
            parent_version: *parent_version,
        });
    }
    if !view.unconfirmed_parents_of(parent).is_empty() {
        return Err(RejectReason::TrucTooManyAncestors);
    }
    if let Some(child) = view.unconfirmed_child_of(parent) {
        return Err(RejectReason::TrucDescendantExists { parent: *parent, child });
    }
    if vsize > TRUC_CHILD_MAX_VSIZE {
        return Err(RejectReason::TrucTooLarge { vsize, max: TRUC_CHILD_MAX_VSIZE });
    }
    Ok(())
}

/// Dust is allowed only as one output of a zero-fee transaction (ephemeral dust,
/// which its package child must then spend).
fn check_dust(tx: &Transaction, checked: &Checked) -> Result<(), RejectReason> {
    let allowed = if checked.fee == Amount::ZERO { 1 } else { 0 };
    match checked.dust.get(allowed) {
        None => Ok(()),
        Some(&output) => {
            let out = &tx.output[output];
            Err(RejectReason::Dust {
                output,
                value: out.value,
                threshold: dust_limit(&out.script_pubkey),
            })
        }
    }
}

/// Rules for a transaction sent alone: it pays the minimum relay fee and has no dust.
pub fn check_alone(tx: &Transaction, checked: &Checked) -> Result<(), RejectReason> {
    let required = min_relay_fee(checked.vsize);
    if checked.fee < required {
        return Err(RejectReason::FeeBelowMinimum { fee: checked.fee, required });
    }
    check_dust(tx, checked)
}

/// Rules for a 1-parent-1-child package. A parent below the minimum relay fee must be
/// v3 with a P2A anchor that the child spends, and the package as a whole must pay
/// 1 sat/vB; a parent paying its own way leaves the child to pay its own way too.
pub fn check_package(
    parent: (&Transaction, Txid, &Checked),
    child: (&Transaction, &Checked),
) -> Result<(), RejectReason> {
    let (ptx, ptxid, pc) = parent;
    let (ctx, cc) = child;
    let spends = |vout: usize| {
        u32::try_from(vout)
            .is_ok_and(|v| ctx.input.iter().any(|i| i.previous_output == OutPoint::new(ptxid, v)))
    };
    if !ctx.input.iter().any(|i| i.previous_output.txid == ptxid) {
        return Err(RejectReason::NotParentAndChild { parent: ptxid });
    }
    check_dust(ptx, pc)?;
    check_dust(ctx, cc)?;
    if pc.fee < min_relay_fee(pc.vsize) {
        if ptx.version.0 != 3 {
            return Err(RejectReason::ParentNotTruc { fee: pc.fee, version: ptx.version.0 });
        }
        let anchor = ptx
            .output
            .iter()
            .position(|o| is_anchor(&o.script_pubkey))
            .ok_or(RejectReason::ParentWithoutAnchor { fee: pc.fee })?;
        if !spends(anchor) {
            let anchor = OutPoint::new(ptxid, u32::try_from(anchor).unwrap_or(u32::MAX));
            return Err(RejectReason::AnchorNotSpent { anchor });
        }
        let fee = pc.fee.checked_add(cc.fee).ok_or(RejectReason::ValueOverflow)?;
        let vsize = pc.vsize.saturating_add(cc.vsize);
        let required = min_relay_fee(vsize);
        if fee < required {
            return Err(RejectReason::PackageFeeTooLow { fee, vsize, required });
        }
    } else {
        check_alone(ctx, cc)?;
    }
    if let Some(&vout) = pc.dust.iter().find(|&&v| !spends(v)) {
        let outpoint = OutPoint::new(ptxid, u32::try_from(vout).unwrap_or(u32::MAX));
        return Err(RejectReason::EphemeralDustUnspent { outpoint });
    }
    Ok(())
}
