//! Relay rules written once for everyone: standard output types and dust, the P2A
//! anchor, TRUC (version 3) limits, standard weight, the money range, and what an
//! honest funding transaction and an exit path must look like to confirm.
//!
//! The coordinator uses these rules to refuse registrations it could not batch, the
//! participant to refuse proposals that would cost it its money or its exit, and the
//! embedded ledger to decide what its mempool accepts.
//!
//! Weights of unsigned transactions are computed as they will be once signed: every
//! input a Taproot key-path spend with a 64-byte signature (`SIGHASH_DEFAULT`), which
//! is exactly how every funding input and every tree node is signed.

use bitcoin::absolute::LockTime;
use bitcoin::transaction::Version;
use bitcoin::{Amount, FeeRate, OutPoint, Script, Sequence, Transaction, TxOut, Weight};

/// Largest standard transaction weight.
pub const MAX_STANDARD_WEIGHT: Weight = Weight::from_wu(400_000);
/// Largest TRUC transaction, in vB.
pub const TRUC_MAX_VSIZE: u64 = 10_000;
/// Largest TRUC transaction spending an unconfirmed TRUC parent, in vB.
pub const TRUC_CHILD_MAX_VSIZE: u64 = 1_000;
/// The P2A anchor script: `OP_1 <0x4e73>`.
pub const P2A_SCRIPT: [u8; 4] = [0x51, 0x02, 0x4e, 0x73];
/// Largest standard `OP_RETURN` output script (Bitcoin Core's `-datacarriersize` 83).
pub const MAX_OP_RETURN_SCRIPT: usize = 83;

/// Version of every funding transaction an honest coordinator builds.
pub const FUNDING_VERSION: Version = Version::TWO;
/// Locktime of every funding transaction: none, so it cannot be held back as an option.
pub const FUNDING_LOCK_TIME: LockTime = LockTime::ZERO;
/// nSequence of every funding input: replaceable, no relative lock.
pub const FUNDING_SEQUENCE: Sequence = Sequence::ENABLE_RBF_NO_LOCKTIME;
/// Version of every tree node (TRUC, so a zero-fee node relays with its CPFP child).
pub const NODE_VERSION: Version = Version(3);

/// Witness weight of a Taproot key-path input: item count, length, 64-byte signature.
pub const KEY_PATH_WITNESS_WEIGHT: u64 = 66;
/// Segwit marker and flag.
const SEGWIT_MARKER_WEIGHT: u64 = 2;
/// Weight of one input without its witness: outpoint, empty scriptSig, sequence.
const INPUT_BASE_WEIGHT: u64 = 41 * 4;

/// An amount, or a sum of amounts, outside `0..=21,000,000 BTC`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MoneyRangeError {
    /// One amount is above the money supply.
    #[error("amount {index} of {amount} is above 21,000,000 BTC")]
    Amount {
        /// Its position in the list checked.
        index: usize,
        /// The amount.
        amount: Amount,
    },
    /// The amounts together are above the money supply.
    #[error("amounts sum above 21,000,000 BTC")]
    Sum,
}

/// Sums amounts, refusing any amount or partial sum above [`Amount::MAX_MONEY`].
pub fn money_sum(amounts: impl IntoIterator<Item = Amount>) -> Result<Amount, MoneyRangeError> {
    let mut total = Amount::ZERO;
    for (index, amount) in amounts.into_iter().enumerate() {
        if amount > Amount::MAX_MONEY {
            return Err(MoneyRangeError::Amount { index, amount });
        }
        total = total
            .checked_add(amount)
            .filter(|t| *t <= Amount::MAX_MONEY)
            .ok_or(MoneyRangeError::Sum)?;
    }
    Ok(total)
}

/// A script a tree leaf may pay: P2TR, P2WPKH or P2WSH (what the coordinator accepts
/// in a registration and what a participant accepts next to its own leaves).
pub fn is_standard_leaf(script: &Script) -> bool {
    script.is_p2tr() || script.is_p2wpkh() || script.is_p2wsh()
}

/// The P2A anchor script.
pub fn is_anchor(script: &Script) -> bool {
    script.as_bytes() == P2A_SCRIPT
}

/// An output script Bitcoin Core relays: P2PKH, P2SH, any witness program (P2WPKH,
/// P2WSH, P2TR, P2A and future versions), or a small `OP_RETURN`. Bare multisig is
/// left out: nothing here creates it.
pub fn is_standard_output(script: &Script) -> bool {
    if script.is_op_return() {
        return script.len() <= MAX_OP_RETURN_SCRIPT;
    }
    script.is_p2pkh() || script.is_p2sh() || is_witness_output(script)
}

/// A standard witness program: v0 of 20 or 32 bytes, or a version 1 to 16 program.
fn is_witness_output(script: &Script) -> bool {
    match script.witness_version() {
        Some(bitcoin::WitnessVersion::V0) => script.is_p2wpkh() || script.is_p2wsh(),
        Some(_) => true,
        None => false,
    }
}

/// The smallest value an output of `script` may hold and still relay (3 sat/vB dust
/// relay fee, as Bitcoin Core).
pub fn dust_limit(script: &Script) -> Amount {
    script.minimal_non_dust()
}

/// Whether `output` holds less than its script's dust limit.
pub fn is_dust(output: &TxOut) -> bool {
    output.value < dust_limit(&output.script_pubkey)
}

/// Weight of `tx` once every input carries a Taproot key-path witness.
pub fn key_path_signed_weight(tx: &Transaction) -> Weight {
    let inputs = tx.input.len() as u64;
    let base = tx.base_size() as u64 * 4;
    Weight::from_wu(base + SEGWIT_MARKER_WEIGHT + inputs * KEY_PATH_WITNESS_WEIGHT)
}

/// Weight of the CPFP child [`crate::exit::cpfp_child`] builds: version 3, the
/// parent's anchor (empty witness) and one key-path fee input, one change output of
/// `change_script_len` bytes.
pub fn cpfp_child_weight(change_script_len: usize) -> Weight {
    let fixed = (4 + 1 + 1 + 4) * 4; // version, input count, output count, locktime
    let output = crate::fees::output_weight(change_script_len);
    let witness = SEGWIT_MARKER_WEIGHT + 1 + KEY_PATH_WITNESS_WEIGHT;
    Weight::from_wu(fixed + 2 * INPUT_BASE_WEIGHT + output + witness)
}

/// Virtual size of a CPFP child paying change to a P2TR script.
pub fn cpfp_child_vsize() -> u64 {
    cpfp_child_weight(34).to_vbytes_ceil()
}

/// Why a funding transaction is not what an honest coordinator builds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FundingRuleError {
    /// The prevouts do not number one per input.
    #[error("{prevouts} prevouts for {inputs} inputs")]
    PrevoutCount {
        /// Inputs.
        inputs: usize,
        /// Prevouts given.
        prevouts: usize,
    },
    /// Two inputs spend the same output.
    #[error("inputs {first} and {second} both spend {outpoint}")]
    DuplicateInput {
        /// The first input spending it.
        first: usize,
        /// The second.
        second: usize,
        /// The output.
        outpoint: OutPoint,
    },
    /// An input's declared prevout is not a witness program: its scriptSig could be
    /// filled in after signing, changing the txid every exit path spends.
    #[error("input {input} spends a non-witness output: the txid could change after signing")]
    NonWitnessInput {
        /// The input.
        input: usize,
    },
    /// An input carries a scriptSig: removing or changing it changes the txid.
    #[error("input {input} carries a scriptSig: the txid could change after signing")]
    ScriptSig {
        /// The input.
        input: usize,
    },
    /// The version is not [`FUNDING_VERSION`].
    #[error("version {got} is not {FUNDING_VERSION:?}")]
    Version {
        /// The version found.
        got: i32,
    },
    /// The locktime is not zero: a signed funding tx would be an option to publish later.
    #[error("locktime {got} is not zero")]
    LockTime {
        /// The locktime found.
        got: u32,
    },
    /// An input's nSequence is not [`FUNDING_SEQUENCE`] (relative locks, finality games).
    #[error("input {input} has nSequence {got:#x}, expected {FUNDING_SEQUENCE:#x}")]
    Sequence {
        /// The input.
        input: usize,
        /// The nSequence found.
        got: u32,
    },
    /// The signed transaction would be heavier than the standard limit.
    #[error("signed weight {weight} is above the standard {MAX_STANDARD_WEIGHT}")]
    TooHeavy {
        /// Its weight once signed.
        weight: Weight,
    },
    /// Prevout amounts are outside the money range.
    #[error("prevouts: {0}")]
    PrevoutMoneyRange(MoneyRangeError),
    /// Output amounts are outside the money range.
    #[error("outputs: {0}")]
    OutputMoneyRange(MoneyRangeError),
    /// An output would not relay.
    #[error("output {output} is not a standard script")]
    NonStandardOutput {
        /// The output.
        output: usize,
    },
    /// An output is below its dust limit.
    #[error("output {output} holds {value}, below its dust limit {limit}")]
    DustOutput {
        /// The output.
        output: usize,
        /// What it holds.
        value: Amount,
        /// Its dust limit.
        limit: Amount,
    },
    /// The outputs are worth more than the inputs.
    #[error("outputs {outputs} exceed inputs {inputs}")]
    OutputsExceedInputs {
        /// Sum of the prevouts.
        inputs: Amount,
        /// Sum of the outputs.
        outputs: Amount,
    },
    /// The fee is below the announced fee rate for the signed weight.
    #[error("fee {fee} is below {required} ({rate} at {weight})")]
    FeeRateTooLow {
        /// The fee paid.
        fee: Amount,
        /// What the announced rate asks for.
        required: Amount,
        /// The announced rate.
        rate: FeeRate,
        /// The signed weight.
        weight: Weight,
    },
}

/// Checks a funding transaction as a whole against what an honest coordinator builds:
/// a txid that cannot change once signed, fixed version, locktime and sequences,
/// standard weight and outputs, the money range, and a fee at least `min_rate` on the
/// signed weight. Returns the fee.
pub fn check_funding_tx(
    tx: &Transaction,
    prevouts: &[TxOut],
    min_rate: FeeRate,
) -> Result<Amount, FundingRuleError> {
    use FundingRuleError as E;
    if prevouts.len() != tx.input.len() {
        return Err(E::PrevoutCount { inputs: tx.input.len(), prevouts: prevouts.len() });
    }
    if tx.version != FUNDING_VERSION {
        return Err(E::Version { got: tx.version.0 });
    }
    if tx.lock_time != FUNDING_LOCK_TIME {
        return Err(E::LockTime { got: tx.lock_time.to_consensus_u32() });
    }
    let mut seen = std::collections::HashMap::with_capacity(tx.input.len());
    for (input, (txin, prevout)) in tx.input.iter().zip(prevouts).enumerate() {
        if let Some(first) = seen.insert(txin.previous_output, input) {
            let outpoint = txin.previous_output;
            return Err(E::DuplicateInput { first, second: input, outpoint });
        }
        if txin.sequence != FUNDING_SEQUENCE {
            return Err(E::Sequence { input, got: txin.sequence.to_consensus_u32() });
        }
        if !prevout.script_pubkey.is_witness_program() {
            return Err(E::NonWitnessInput { input });
        }
        if !txin.script_sig.is_empty() {
            return Err(E::ScriptSig { input });
        }
    }
    let weight = key_path_signed_weight(tx);
    if weight > MAX_STANDARD_WEIGHT {
        return Err(E::TooHeavy { weight });
    }
    let inputs = money_sum(prevouts.iter().map(|o| o.value)).map_err(E::PrevoutMoneyRange)?;
    let outputs = money_sum(tx.output.iter().map(|o| o.value)).map_err(E::OutputMoneyRange)?;
    for (output, out) in tx.output.iter().enumerate() {
        if !is_standard_output(&out.script_pubkey) {
            return Err(E::NonStandardOutput { output });
        }
        if is_dust(out) {
            let limit = dust_limit(&out.script_pubkey);
            return Err(E::DustOutput { output, value: out.value, limit });
        }
    }
    let fee = inputs.checked_sub(outputs).ok_or(E::OutputsExceedInputs { inputs, outputs })?;
    // Priced on whole virtual bytes, as the coordinator's fee plan and relay do.
    let vbytes = Weight::from_wu(weight.to_wu().div_ceil(4) * 4);
    let required = min_rate.checked_mul_by_weight(vbytes).unwrap_or(Amount::MAX);
    if fee < required {
        return Err(E::FeeRateTooLow { fee, required, rate: min_rate, weight });
    }
    Ok(fee)
}

/// Why a tree node would not relay (or its CPFP child could not be built) on today's
/// network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    /// The node is not version 3: a zero-fee node relays only as TRUC with its child.
    #[error("version {got} is not 3 (TRUC)")]
    NotTruc {
        /// The version found.
        got: i32,
    },
    /// An output is not a script the tree pays (P2TR, P2WPKH, P2WSH, or the anchor).
    #[error("output {output} is not a standard script")]
    NonStandardOutput {
        /// The output.
        output: usize,
    },
    /// An output other than the zero-fee node's anchor is below its dust limit.
    #[error("output {output} holds {value}, below its dust limit {limit}")]
    Dust {
        /// The output.
        output: usize,
        /// What it holds.
        value: Amount,
        /// Its dust limit.
        limit: Amount,
    },
    /// Not exactly one P2A anchor, or it is not the last output.
    #[error("{count} anchors, expected exactly one as the last output")]
    Anchor {
        /// Anchors found.
        count: usize,
    },
    /// The outputs are outside the money range or exceed the input.
    #[error("outputs: {0}")]
    MoneyRange(MoneyRangeError),
    /// The node pays out more than it spends.
    #[error("outputs {outputs} exceed the input {input}")]
    OutputsExceedInput {
        /// What it spends.
        input: Amount,
        /// What it pays.
        outputs: Amount,
    },
    /// The signed node is above the TRUC size limit.
    #[error("signed node of {vsize} vB is above the TRUC limit {TRUC_MAX_VSIZE}")]
    TooLarge {
        /// Its virtual size once signed.
        vsize: u64,
    },
    /// The CPFP child that bumps it is above the TRUC child limit.
    #[error("its CPFP child of {vsize} vB is above the TRUC child limit {TRUC_CHILD_MAX_VSIZE}")]
    ChildTooLarge {
        /// The child's virtual size.
        vsize: u64,
    },
}

/// What a relayable node costs to publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeCost {
    /// The signed node's virtual size.
    pub vsize: u64,
    /// Its CPFP child's virtual size.
    pub child_vsize: u64,
}

impl NodeCost {
    /// Node plus child, in vB: what publishing this node takes at a package fee rate.
    pub fn package_vsize(&self) -> u64 {
        self.vsize.saturating_add(self.child_vsize)
    }
}

/// Checks that a tree node (spending `prevout`) relays with the CPFP child that bumps
/// it: version 3, every output a standard leaf script or the anchor and not dust
/// (the anchor of a zero-fee node is its one allowed ephemeral dust), exactly one P2A
/// anchor as the last output, within the TRUC size limit once signed, and a child
/// within the TRUC child limit.
pub fn check_exit_node(tx: &Transaction, prevout: &TxOut) -> Result<NodeCost, RelayError> {
    if tx.version != NODE_VERSION {
        return Err(RelayError::NotTruc { got: tx.version.0 });
    }
    let count = tx.output.iter().filter(|o| is_anchor(&o.script_pubkey)).count();
    if count != 1 || !tx.output.last().is_some_and(|o| is_anchor(&o.script_pubkey)) {
        return Err(RelayError::Anchor { count });
    }
    let outputs = money_sum(tx.output.iter().map(|o| o.value)).map_err(RelayError::MoneyRange)?;
    let fee = prevout
        .value
        .checked_sub(outputs)
        .ok_or(RelayError::OutputsExceedInput { input: prevout.value, outputs })?;
    for (output, out) in tx.output.iter().enumerate() {
        let anchor = is_anchor(&out.script_pubkey);
        if !anchor && !is_standard_leaf(&out.script_pubkey) {
            return Err(RelayError::NonStandardOutput { output });
        }
        let ephemeral = anchor && fee == Amount::ZERO;
        if is_dust(out) && !ephemeral {
            let limit = dust_limit(&out.script_pubkey);
            return Err(RelayError::Dust { output, value: out.value, limit });
        }
    }
    let vsize = key_path_signed_weight(tx).to_vbytes_ceil();
    if vsize > TRUC_MAX_VSIZE {
        return Err(RelayError::TooLarge { vsize });
    }
    let child_vsize = cpfp_child_vsize();
    if child_vsize > TRUC_CHILD_MAX_VSIZE {
        return Err(RelayError::ChildTooLarge { vsize: child_vsize });
    }
    Ok(NodeCost { vsize, child_vsize })
}

/// What publishing nodes of these costs takes at `rate` (each with its CPFP child).
pub fn exit_cost(nodes: impl IntoIterator<Item = NodeCost>, rate: FeeRate) -> Amount {
    let vsize = nodes.into_iter().fold(0u64, |acc, n| acc.saturating_add(n.package_vsize()));
    rate.fee_vb(vsize).unwrap_or(Amount::MAX)
}

#[cfg(test)]
mod tests;
