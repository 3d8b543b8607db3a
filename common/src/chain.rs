//! Chain access: the [`Chain`] trait every driver uses to read and write the chain,
//! and the reasons a transaction can be refused.
//!
//! The trait is synchronous (drivers call it from blocking threads), object safe and
//! `Send + Sync`, so one backend can be shared as `Arc<dyn Chain>`. The embedded
//! regtest [`crate::ledger::Ledger`] implements it; a `bitcoind` RPC backend can too.

use std::sync::Arc;

use bitcoin::absolute;
use bitcoin::relative;
use bitcoin::{Amount, FeeRate, OutPoint, Script, Transaction, TxOut, Txid, Weight};

/// An unspent output and where it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Utxo {
    /// The output itself.
    pub txout: TxOut,
    /// Height of the block that confirmed it; `None` while it sits in the mempool.
    pub height: Option<u32>,
}

/// Read and write access to a Bitcoin chain.
pub trait Chain: Send + Sync {
    /// Height of the best block.
    fn tip_height(&self) -> Result<u32, ChainError>;
    /// An unspent output (confirmed or in the mempool) that no mempool transaction spends.
    fn utxo(&self, outpoint: &OutPoint) -> Result<Option<Utxo>, ChainError>;
    /// Every unspent output paying `script` (confirmed or in the mempool, not spent by it).
    fn script_utxos(&self, script: &Script) -> Result<Vec<(OutPoint, Utxo)>, ChainError>;
    /// Submits one transaction that pays its own way.
    fn broadcast(&self, tx: &Transaction) -> Result<Txid, ChainError>;
    /// Submits a parent with one child that spends it (fee bumping by CPFP, package relay).
    fn broadcast_package(
        &self,
        parent: &Transaction,
        child: &Transaction,
    ) -> Result<(Txid, Txid), ChainError>;
    /// Fee rate a transaction should pay to confirm soon.
    fn fee_rate(&self) -> Result<FeeRate, ChainError>;
    /// Confirmations of a transaction: `None` unknown, `Some(0)` in the mempool.
    fn confirmations(&self, txid: &Txid) -> Result<Option<u32>, ChainError>;
}

impl<T: Chain + ?Sized> Chain for Arc<T> {
    fn tip_height(&self) -> Result<u32, ChainError> {
        (**self).tip_height()
    }
    fn utxo(&self, outpoint: &OutPoint) -> Result<Option<Utxo>, ChainError> {
        (**self).utxo(outpoint)
    }
    fn script_utxos(&self, script: &Script) -> Result<Vec<(OutPoint, Utxo)>, ChainError> {
        (**self).script_utxos(script)
    }
    fn broadcast(&self, tx: &Transaction) -> Result<Txid, ChainError> {
        (**self).broadcast(tx)
    }
    fn broadcast_package(
        &self,
        parent: &Transaction,
        child: &Transaction,
    ) -> Result<(Txid, Txid), ChainError> {
        (**self).broadcast_package(parent, child)
    }
    fn fee_rate(&self) -> Result<FeeRate, ChainError> {
        (**self).fee_rate()
    }
    fn confirmations(&self, txid: &Txid) -> Result<Option<u32>, ChainError> {
        (**self).confirmations(txid)
    }
}

/// Why a chain operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// The transaction (or package) was refused; nothing was added to the mempool.
    #[error("transaction rejected: {0}")]
    Rejected(RejectReason),
    /// A faucet request asked for more than can exist: the faucet's payouts so far plus
    /// this request would pass the 21 million bitcoin supply.
    #[error("faucet payouts would reach {requested}, past the 21 million bitcoin supply")]
    FaucetAmount {
        /// Everything paid out so far plus this request (saturating).
        requested: Amount,
    },
    /// A faucet output below its script's dust limit: it would not relay, nor be
    /// worth spending.
    #[error("faucet output {index} of {amount} is below its script's dust limit of {dust}")]
    FaucetDust {
        /// Its position in the request.
        index: usize,
        /// The amount asked for.
        amount: Amount,
        /// The smallest amount that script takes.
        dust: Amount,
    },
    /// The backend failed (RPC, I/O, protocol); the operation may be retried.
    #[error("chain backend failed: {0}")]
    Backend(String),
}

impl From<RejectReason> for ChainError {
    fn from(reason: RejectReason) -> Self {
        ChainError::Rejected(reason)
    }
}

/// Exactly why a transaction was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RejectReason {
    /// A `bitcoind` node refused it, for the reason its RPC gives (a node backend cannot
    /// always map Core's reject reasons onto the variants below).
    #[error("refused by the node: {reason}")]
    Node {
        /// Core's reject reason, e.g. `min relay fee not met` or `bad-txns-inputs-missingorspent`.
        reason: String,
    },
    /// The transaction has no inputs.
    #[error("transaction has no inputs")]
    NoInputs,
    /// The transaction has no outputs.
    #[error("transaction has no outputs")]
    NoOutputs,
    /// Two inputs of the transaction spend the same output.
    #[error("input {input} spends {outpoint} a second time within the transaction")]
    DuplicateInput {
        /// Index of the second input.
        input: usize,
        /// The outpoint spent twice.
        outpoint: OutPoint,
    },
    /// An input spends an output that never existed (or a null prevout).
    #[error("input {input} spends unknown output {outpoint}")]
    MissingInput {
        /// Index of the input.
        input: usize,
        /// The unknown outpoint.
        outpoint: OutPoint,
    },
    /// An input spends an output another transaction already spends.
    #[error(
        "input {input} double spends {outpoint}, already spent by {spender} ({})",
        if *confirmed { "confirmed" } else { "in mempool" }
    )]
    DoubleSpend {
        /// Index of the input.
        input: usize,
        /// The contested outpoint.
        outpoint: OutPoint,
        /// The transaction that spends it first.
        spender: Txid,
        /// Whether that transaction is confirmed.
        confirmed: bool,
    },
    /// The transaction is already known (mempool or chain).
    #[error("transaction {txid} is already known")]
    AlreadyKnown {
        /// Its id.
        txid: Txid,
    },
    /// An input's script failed under Bitcoin Core's interpreter (libbitcoinkernel).
    #[error("script verification failed at input {input}: {error}")]
    Script {
        /// Index of the input.
        input: usize,
        /// What libbitcoinkernel reported (`Invalid` for a plain script failure).
        error: crate::consensus::ScriptError,
    },
    /// The transaction could not be handed to libbitcoinkernel at all.
    #[error("transaction cannot be script-checked: {0}")]
    Unverifiable(crate::consensus::ConsensusError),
    /// The outputs spend more than the inputs bring.
    #[error("outputs total {output} but inputs only {input}")]
    ValueOutExceedsIn {
        /// Sum of the spent outputs.
        input: Amount,
        /// Sum of the new outputs.
        output: Amount,
    },
    /// A sum of amounts left the money range (21 million bitcoin).
    #[error("amounts of the transaction overflow the money range")]
    ValueOverflow,
    /// An input's BIP-68 relative lock is not yet satisfied for the next block.
    #[error(
        "input {input} relative lock {lock} not satisfied: spent output confirmed at {}, next block {next_height}",
        match conf_height { Some(h) => h.to_string(), None => "mempool".to_string() }
    )]
    PrematureRelativeLock {
        /// Index of the input.
        input: usize,
        /// The lock its nSequence asks for.
        lock: relative::LockTime,
        /// Confirmation height of the spent output (`None`: unconfirmed).
        conf_height: Option<u32>,
        /// Height the transaction would be mined at.
        next_height: u32,
    },
    /// The absolute locktime is not yet reached for the next block.
    #[error(
        "locktime {lock_time} not final at next height {next_height}, median time {median_time}"
    )]
    NonFinal {
        /// The transaction's locktime.
        lock_time: absolute::LockTime,
        /// Height the transaction would be mined at.
        next_height: u32,
        /// Median time past of the tip.
        median_time: u32,
    },
    /// The transaction is heavier than the standard limit.
    #[error("transaction weighs {weight}, above the limit of {max}")]
    TooHeavy {
        /// Its weight.
        weight: Weight,
        /// The limit.
        max: Weight,
    },
    /// The fee is below the minimum relay fee and the transaction was sent alone.
    #[error(
        "fee {fee} below the minimum relay fee {required}; a zero-fee (v3, P2A anchor) transaction needs broadcast_package with a fee-paying child spending its anchor"
    )]
    FeeBelowMinimum {
        /// Fee paid.
        fee: Amount,
        /// Fee required at 1 sat/vB.
        required: Amount,
    },
    /// A package parent below the minimum relay fee is not version 3 (TRUC).
    #[error("package parent pays {fee}, below the minimum relay fee, and is version {version}, not 3 (truc)")]
    ParentNotTruc {
        /// Fee the parent pays.
        fee: Amount,
        /// Its version.
        version: i32,
    },
    /// A package parent below the minimum relay fee has no P2A anchor output.
    #[error(
        "package parent pays {fee}, below the minimum relay fee, and has no p2a anchor output"
    )]
    ParentWithoutAnchor {
        /// Fee the parent pays.
        fee: Amount,
    },
    /// A package child does not spend the parent's P2A anchor.
    #[error("package child does not spend the parent's p2a anchor {anchor}")]
    AnchorNotSpent {
        /// The anchor outpoint.
        anchor: OutPoint,
    },
    /// A package child does not spend any output of the parent.
    #[error("package child does not spend any output of the parent {parent}")]
    NotParentAndChild {
        /// The parent's txid.
        parent: Txid,
    },
    /// The package as a whole pays less than the minimum relay fee.
    #[error("package pays {fee} for {vsize} vB, below the minimum relay fee {required}")]
    PackageFeeTooLow {
        /// Total fee of parent and child.
        fee: Amount,
        /// Total virtual size.
        vsize: u64,
        /// Fee required at 1 sat/vB.
        required: Amount,
    },
    /// An output is below its dust threshold outside the ephemeral dust rule.
    #[error(
        "output {output} of {value} is dust (threshold {threshold}); dust is only allowed as the single output of a zero-fee transaction spent by its package child"
    )]
    Dust {
        /// Index of the output.
        output: usize,
        /// Its value.
        value: Amount,
        /// The dust threshold of its script.
        threshold: Amount,
    },
    /// A package parent has a dust output that the child leaves unspent.
    #[error("package child leaves the parent's dust output {outpoint} unspent")]
    EphemeralDustUnspent {
        /// The dust outpoint.
        outpoint: OutPoint,
    },
    /// A version-3 transaction is larger than TRUC allows.
    #[error("version 3 transaction of {vsize} vB exceeds the truc limit of {max} vB")]
    TrucTooLarge {
        /// Its virtual size.
        vsize: u64,
        /// The limit (10,000 vB, or 1,000 vB with an unconfirmed parent).
        max: u64,
    },
    /// A TRUC transaction would get more than one unconfirmed ancestor.
    #[error("version 3 transaction would have more than one unconfirmed ancestor")]
    TrucTooManyAncestors,
    /// A TRUC transaction already has an unconfirmed child.
    #[error("unconfirmed version 3 parent {parent} already has an unconfirmed child {child}")]
    TrucDescendantExists {
        /// The unconfirmed parent.
        parent: Txid,
        /// Its existing child.
        child: Txid,
    },
    /// TRUC and non-TRUC transactions mixed in an unconfirmed parent-child pair.
    #[error("input {input}: version {version} transaction spends unconfirmed version {parent_version} output")]
    TrucVersionMismatch {
        /// Index of the input.
        input: usize,
        /// Version of the spending transaction.
        version: i32,
        /// Version of the unconfirmed parent.
        parent_version: i32,
    },
    /// A replacement of unconfirmed transactions pays too little (BIP-125 rules 3, 4 and
    /// 6: at least their fees plus 1 sat/vB of its own size, and a higher fee rate than
    /// each transaction it conflicts with).
    #[error("replacement pays {} sat at {fee_rate_sat_vb} sat/vB; it needs {} sat and more than {replaced_rate_sat_vb} sat/vB",
        fee.to_sat(), needed.to_sat())]
    ReplacementTooCheap {
        /// Its fee.
        fee: Amount,
        /// The least fee that replaces.
        needed: Amount,
        /// Its fee rate, sat/vB rounded down.
        fee_rate_sat_vb: u64,
        /// The highest fee rate among the transactions it conflicts with, sat/vB.
        replaced_rate_sat_vb: u64,
    },
    /// A replacement would evict more transactions than a node does (100).
    #[error("replacement would evict {0} transactions, more than 100")]
    ReplacementTooLarge(usize),
}
