//! The embedded regtest ledger: an in-memory chain with a UTXO set, a mempool that
//! checks every transaction like a Bitcoin Core node would, a faucet and on-demand mining.
//!
//! Acceptance checks: structure and weight (at most 400,000 WU), inputs exist and are
//! unspent, no double spend against chain or mempool, every input's script through
//! Bitcoin Core's interpreter (libbitcoinkernel) with all spent outputs (Taproot
//! flags), value conservation, absolute locktime finality, BIP-68 relative locks (height-based against the spent
//! output's confirmation height, time-based against median time past), TRUC (v3)
//! topology, dust, and a 1 sat/vB minimum relay fee. A zero-fee transaction is only
//! accepted as a 1-parent-1-child package whose child spends its P2A anchor.
//!
//! Blocks are mined on demand: the first block of [`Ledger::mine`] holds the whole
//! mempool, empty blocks cost nothing, and block `h` is timestamped
//! `GENESIS_TIME + 600 * h`, so median time past is well defined. Faucet transactions
//! are coinbase-shaped but have no maturity delay. There are no reorgs. A transaction
//! conflicting with unconfirmed ones replaces them (and their descendants) as a Bitcoin
//! Core node with full RBF does, when it pays their fees plus 1 sat/vB of its own size
//! and a higher fee rate than each (version 3 too, as Core does; TRUC sibling eviction is
//! not modelled, and a package never replaces); otherwise it is rejected.
//!
//! Locking: one `RwLock`. Script checks run without it (between a read-locked
//! contextual check and a write-locked re-check), so lookups never wait on them.

mod policy;
mod state;

use std::collections::HashSet;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bitcoin::{Amount, FeeRate, OutPoint, Script, ScriptBuf, Transaction, Txid};

use crate::chain::{Chain, ChainError, RejectReason, Utxo};
use crate::consensus::{verify_tx, ConsensusError};
use policy::Checked;
pub use policy::{MAX_STANDARD_WEIGHT, P2A_SCRIPT, TRUC_CHILD_MAX_VSIZE, TRUC_MAX_VSIZE};
use state::{State, View};
pub use state::{BLOCK_INTERVAL, GENESIS_TIME};

/// Fee rate `fee_rate()` reports unless changed.
pub const DEFAULT_FEE_RATE: FeeRate = FeeRate::from_sat_per_kwu(500);
/// Outputs per faucet transaction (keeps each under the standard weight).
const FAUCET_OUTPUTS_PER_TX: usize = 1_000;

/// An in-memory regtest chain; share it as `Arc<Ledger>` (it implements [`Chain`]).
pub struct Ledger {
    state: RwLock<State>,
    /// Random per ledger: tells one embedded chain from another (see [`Ledger::id`]).
    id: [u8; 16],
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.read();
        f.debug_struct("Ledger")
            .field("tip", &s.tip)
            .field("mempool", &s.mempool.len())
            .field("unspent", &s.unspent.len())
            .finish()
    }
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger::new()
    }
}

impl Ledger {
    /// An empty chain at height 0 reporting [`DEFAULT_FEE_RATE`].
    pub fn new() -> Self {
        Ledger { state: RwLock::new(State::new(DEFAULT_FEE_RATE)), id: rand::random() }
    }

    /// This chain's identity: random, drawn when the ledger was made. A dev coordinator
    /// announces it, so a wallet can tell that the chain its coins were on is gone.
    pub fn id(&self) -> [u8; 16] {
        self.id
    }

    // The state is only mutated after every check passed and by code that does not
    // panic, so a poisoned lock still guards a consistent state.
    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets the rate `fee_rate()` reports.
    pub fn set_fee_rate(&self, rate: FeeRate) {
        self.write().fee_rate = rate;
    }

    /// Mines `blocks` blocks, the first holding the whole mempool; returns the new tip.
    pub fn mine(&self, blocks: u32) -> u32 {
        self.write().mine(blocks)
    }

    /// Pays `amount` to `script` in a new block (which also confirms the mempool).
    pub fn faucet(&self, script: &Script, amount: Amount) -> Result<OutPoint, ChainError> {
        let outpoints = self.faucet_many(&[(script.to_owned(), amount)])?;
        outpoints.first().copied().ok_or(ChainError::Backend("faucet created no output".into()))
    }

    /// Pays every `(script, amount)` in one new block (which also confirms the
    /// mempool); returns the outpoints in request order. Nothing is mined for an
    /// empty request.
    pub fn faucet_many(
        &self,
        outputs: &[(ScriptBuf, Amount)],
    ) -> Result<Vec<OutPoint>, ChainError> {
        let mut total = Amount::ZERO;
        for (_, amount) in outputs {
            total = total.checked_add(*amount).unwrap_or(Amount::MAX);
            if total > Amount::MAX_MONEY {
                return Err(ChainError::FaucetAmount { requested: total });
            }
        }
        for (index, (script, amount)) in outputs.iter().enumerate() {
            let dust = script.minimal_non_dust();
            if *amount < dust {
                return Err(ChainError::FaucetDust { index, amount: *amount, dust });
            }
        }
        if outputs.is_empty() {
            return Ok(Vec::new());
        }
        let mut s = self.write();
        // Like the real chain's, the dev chain's supply ends at 21 M BTC.
        let minted = s.minted.checked_add(total).unwrap_or(Amount::MAX);
        if minted > Amount::MAX_MONEY {
            return Err(ChainError::FaucetAmount { requested: minted });
        }
        s.minted = minted;
        let height = s.mine_one();
        Ok(s.add_faucet(outputs, height, FAUCET_OUTPUTS_PER_TX))
    }

    /// A known transaction, confirmed or in the mempool.
    pub fn transaction(&self, txid: &Txid) -> Option<Transaction> {
        self.read().txs.get(txid).map(|e| e.tx.clone())
    }

    /// Txids in the mempool, parents before children.
    pub fn mempool(&self) -> Vec<Txid> {
        self.read().mempool.clone()
    }

    /// Mines one block holding nothing (the mempool stays); returns the new tip. Like
    /// Core's `generateblock ADDRESS []`: what tests use to let a block pass without a
    /// transaction they sent.
    pub fn mine_empty(&self) -> u32 {
        let mut s = self.write();
        s.tip = s.tip.saturating_add(1);
        s.tip
    }

    /// A known transaction and its height (`None` in the mempool).
    pub fn transaction_at(&self, txid: &Txid) -> Option<(Transaction, Option<u32>)> {
        self.read().txs.get(txid).map(|e| (e.tx.clone(), e.height))
    }

    /// An output of the confirmed UTXO set, whatever the mempool does with it (Core's
    /// `gettxout` with `include_mempool = false`).
    pub fn confirmed_utxo(&self, outpoint: &OutPoint) -> Option<Utxo> {
        self.read().unspent.get(outpoint).filter(|u| u.height.is_some()).cloned()
    }

    /// The confirmed UTXO set's outputs paying `script`, in outpoint order (Core's
    /// `scantxoutset`: the mempool is not looked at).
    pub fn confirmed_script_utxos(&self, script: &Script) -> Vec<(OutPoint, Utxo)> {
        let s = self.read();
        let Some(outpoints) = s.by_script.get(script) else {
            return Vec::new();
        };
        let mut found: Vec<(OutPoint, Utxo)> = outpoints
            .iter()
            .filter_map(|op| {
                s.unspent.get(op).filter(|u| u.height.is_some()).map(|u| (*op, u.clone()))
            })
            .collect();
        found.sort_by_key(|(op, _)| *op);
        found
    }

    /// The txids confirmed in the block at `height` (in no particular order), `None` above
    /// the tip. A scan of every known transaction: for the dev endpoint, not hot paths.
    pub fn block_txids(&self, height: u32) -> Option<Vec<Txid>> {
        let s = self.read();
        if height > s.tip {
            return None;
        }
        Some(s.txs.iter().filter(|(_, e)| e.height == Some(height)).map(|(t, _)| *t).collect())
    }

    /// Median time past of the tip (what time-based locks are compared with).
    pub fn median_time_past(&self) -> u64 {
        state::median_time_past(self.read().tip)
    }

    /// The checks of one transaction, and the mempool transactions it replaces (empty when
    /// it conflicts with none).
    fn check_one(
        s: &State,
        tx: &Transaction,
        txid: Txid,
    ) -> Result<(Checked, HashSet<Txid>), RejectReason> {
        let (direct, evicted) = policy::replaced(s, tx);
        let view = View { state: s, pending: None, evicted: Some(&evicted) };
        let checked = policy::check_context(view, tx, txid)?;
        policy::check_alone(tx, &checked)?;
        policy::check_replacement(s, &checked, &direct, &evicted)?;
        Ok((checked, evicted))
    }

    fn check_pair(
        s: &State,
        parent: &Transaction,
        ptxid: Txid,
        child: &Transaction,
        ctxid: Txid,
    ) -> Result<(Checked, Checked), RejectReason> {
        let pc =
            policy::check_context(View { state: s, pending: None, evicted: None }, parent, ptxid)?;
        let view = View { state: s, pending: Some((ptxid, parent)), evicted: None };
        let cc = policy::check_context(view, child, ctxid)?;
        policy::check_package((parent, ptxid, &pc), (child, &cc))?;
        Ok((pc, cc))
    }
}

fn verify_scripts(tx: &Transaction, checked: &Checked) -> Result<(), RejectReason> {
    verify_tx(tx, &checked.spent).map_err(|e| match e {
        ConsensusError::Script { input, error } => RejectReason::Script { input, error },
        other => RejectReason::Unverifiable(other),
    })
}

impl Chain for Ledger {
    fn tip_height(&self) -> Result<u32, ChainError> {
        Ok(self.read().tip)
    }

    fn utxo(&self, outpoint: &OutPoint) -> Result<Option<Utxo>, ChainError> {
        Ok(self.read().utxo(outpoint))
    }

    fn script_utxos(&self, script: &Script) -> Result<Vec<(OutPoint, Utxo)>, ChainError> {
        Ok(self.read().script_utxos(script))
    }

    fn broadcast(&self, tx: &Transaction) -> Result<Txid, ChainError> {
        policy::check_sanity(tx)?;
        let txid = tx.compute_txid();
        let (checked, _) = Ledger::check_one(&self.read(), tx, txid)?;
        verify_scripts(tx, &checked)?;
        // The chain may have moved while scripts were checked: check again. Spent
        // outputs never change, so the script verdict still holds.
        let mut s = self.write();
        let (_, evicted) = Ledger::check_one(&s, tx, txid)?;
        s.evict(&evicted);
        s.insert_mempool(txid, tx);
        Ok(txid)
    }

    fn broadcast_package(
        &self,
        parent: &Transaction,
        child: &Transaction,
    ) -> Result<(Txid, Txid), ChainError> {
        policy::check_sanity(parent)?;
        policy::check_sanity(child)?;
        let (ptxid, ctxid) = (parent.compute_txid(), child.compute_txid());
        let (pc, cc) = Ledger::check_pair(&self.read(), parent, ptxid, child, ctxid)?;
        verify_scripts(parent, &pc)?;
        verify_scripts(child, &cc)?;
        let mut s = self.write();
        Ledger::check_pair(&s, parent, ptxid, child, ctxid)?;
        s.insert_mempool(ptxid, parent);
        s.insert_mempool(ctxid, child);
        Ok((ptxid, ctxid))
    }

    fn fee_rate(&self) -> Result<FeeRate, ChainError> {
        Ok(self.read().fee_rate)
    }

    fn confirmations(&self, txid: &Txid) -> Result<Option<u32>, ChainError> {
        Ok(self.read().confirmations(txid))
    }
}

#[cfg(test)]
mod tests;
