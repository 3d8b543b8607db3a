//! The ledger's in-memory chain state: transactions, unspent outputs with their
//! confirmation heights, spends, the script index, the mempool and mining.

use std::collections::{HashMap, HashSet};

use bitcoin::{Amount, FeeRate, OutPoint, Script, ScriptBuf, Transaction, TxOut, Txid};

use crate::chain::Utxo;

/// Timestamp of block 0 (regtest genesis); later blocks follow every 600 s.
pub const GENESIS_TIME: u64 = 1_296_688_602;
/// Seconds between two blocks.
pub const BLOCK_INTERVAL: u64 = 600;
/// Blocks in the median-time-past window.
const MTP_WINDOW: u32 = 11;

/// Timestamp of the block at `height`.
pub(super) fn block_time(height: u32) -> u64 {
    GENESIS_TIME + BLOCK_INTERVAL * u64::from(height)
}

/// Median time past of the block at `height` (median of it and its 10 ancestors).
/// Timestamps strictly increase, so the median is the middle block of the window.
pub(super) fn median_time_past(height: u32) -> u64 {
    let count = MTP_WINDOW.min(height.saturating_add(1));
    // The window is blocks height - (count - 1) ..= height; its middle is index count / 2.
    block_time(height - (count - 1 - count / 2))
}

/// A known transaction and where it stands.
#[derive(Debug, Clone)]
pub(super) struct TxEntry {
    /// The transaction.
    pub tx: Transaction,
    /// Height of its block; `None` in the mempool.
    pub height: Option<u32>,
}

/// What a view knows about an outpoint.
#[derive(Debug, Clone)]
pub(super) enum Lookup {
    /// Unspent. `parent_version` is set when the creating transaction is unconfirmed.
    Unspent { utxo: Utxo, unconfirmed_parent: Option<(Txid, i32)> },
    /// Spent by `spender`, confirmed or not.
    Spent { spender: Txid, confirmed: bool },
    /// Never existed.
    Missing,
}

/// Chain state behind the ledger's lock.
#[derive(Debug)]
pub(super) struct State {
    /// Height of the best block.
    pub tip: u32,
    /// Rate returned by `fee_rate()`.
    pub fee_rate: FeeRate,
    /// Every transaction ever accepted or mined.
    pub txs: HashMap<Txid, TxEntry>,
    /// Outputs no confirmed transaction spends (confirmed or created in the mempool).
    pub unspent: HashMap<OutPoint, Utxo>,
    /// Spender of every spent output, confirmed or in the mempool.
    pub spent: HashMap<OutPoint, Txid>,
    /// Outpoints of `unspent`, by script.
    pub by_script: HashMap<ScriptBuf, HashSet<OutPoint>>,
    /// Mempool transactions in acceptance order (parents before children).
    pub mempool: Vec<Txid>,
    /// Counter that makes every faucet transaction unique.
    pub faucet_nonce: u64,
    /// Everything the faucet has paid out (at most 21 M BTC).
    pub minted: Amount,
}

impl State {
    pub fn new(fee_rate: FeeRate) -> Self {
        State {
            tip: 0,
            fee_rate,
            txs: HashMap::new(),
            unspent: HashMap::new(),
            spent: HashMap::new(),
            by_script: HashMap::new(),
            mempool: Vec::new(),
            faucet_nonce: 0,
            minted: Amount::ZERO,
        }
    }

    /// An unspent output not spent by the mempool.
    pub fn utxo(&self, outpoint: &OutPoint) -> Option<Utxo> {
        if self.spent.contains_key(outpoint) {
            return None;
        }
        self.unspent.get(outpoint).cloned()
    }

    /// Unspent outputs of a script, not spent by the mempool, in outpoint order.
    pub fn script_utxos(&self, script: &Script) -> Vec<(OutPoint, Utxo)> {
        let Some(outpoints) = self.by_script.get(script) else {
            return Vec::new();
        };
        let mut found: Vec<(OutPoint, Utxo)> =
            outpoints.iter().filter_map(|op| self.utxo(op).map(|u| (*op, u))).collect();
        found.sort_by_key(|(op, _)| *op);
        found
    }

    /// Confirmations of a transaction: `None` unknown, `Some(0)` in the mempool.
    pub fn confirmations(&self, txid: &Txid) -> Option<u32> {
        let entry = self.txs.get(txid)?;
        Some(match entry.height {
            Some(h) => self.tip.saturating_sub(h).saturating_add(1),
            None => 0,
        })
    }

    /// Adds a transaction the checks accepted to the mempool.
    pub fn insert_mempool(&mut self, txid: Txid, tx: &Transaction) {
        for input in &tx.input {
            self.spent.insert(input.previous_output, txid);
        }
        self.add_outputs(txid, tx, None);
        self.txs.insert(txid, TxEntry { tx: tx.clone(), height: None });
        self.mempool.push(txid);
    }

    fn add_outputs(&mut self, txid: Txid, tx: &Transaction, height: Option<u32>) {
        for (vout, txout) in (0u32..).zip(&tx.output) {
            let outpoint = OutPoint::new(txid, vout);
            self.by_script.entry(txout.script_pubkey.clone()).or_default().insert(outpoint);
            self.unspent.insert(outpoint, Utxo { txout: txout.clone(), height });
        }
    }

    /// Removes a now confirmed-spent output from the unspent set and script index.
    fn remove_unspent(&mut self, outpoint: &OutPoint) {
        if let Some(utxo) = self.unspent.remove(outpoint) {
            if let Some(set) = self.by_script.get_mut(&utxo.txout.script_pubkey) {
                set.remove(outpoint);
                if set.is_empty() {
                    self.by_script.remove(&utxo.txout.script_pubkey);
                }
            }
        }
    }

    /// The unconfirmed transactions spending `tx`'s inputs (what it would replace).
    pub fn conflicts(&self, tx: &Transaction) -> HashSet<Txid> {
        tx.input
            .iter()
            .filter_map(|i| self.spent.get(&i.previous_output))
            .filter(|t| self.txs.get(*t).is_some_and(|e| e.height.is_none()))
            .copied()
            .collect()
    }

    /// `txids` and every mempool transaction spending their outputs, recursively.
    pub fn with_descendants(&self, txids: &HashSet<Txid>) -> HashSet<Txid> {
        let mut all = txids.clone();
        let mut todo: Vec<Txid> = txids.iter().copied().collect();
        while let Some(txid) = todo.pop() {
            let outputs = self.txs.get(&txid).map_or(0, |e| e.tx.output.len());
            for vout in (0u32..).take(outputs) {
                if let Some(child) = self.spent.get(&OutPoint::new(txid, vout)) {
                    if all.insert(*child) {
                        todo.push(*child);
                    }
                }
            }
        }
        all
    }

    /// The fee and virtual size of a mempool transaction.
    pub fn fee_and_vsize(&self, txid: &Txid) -> Option<(Amount, u64)> {
        let tx = &self.txs.get(txid)?.tx;
        let mut input = Amount::ZERO;
        for i in &tx.input {
            let prev = &self.txs.get(&i.previous_output.txid)?.tx;
            let txout = prev.output.get(usize::try_from(i.previous_output.vout).ok()?)?;
            input = input.checked_add(txout.value)?;
        }
        let output = tx.output.iter().try_fold(Amount::ZERO, |a, o| a.checked_add(o.value))?;
        Some((input.checked_sub(output)?, tx.vsize() as u64))
    }

    /// Removes mempool transactions (a replacement's conflicts and their descendants):
    /// their spends are undone and their outputs forgotten.
    pub fn evict(&mut self, txids: &HashSet<Txid>) {
        for txid in txids {
            let Some(entry) = self.txs.remove(txid) else { continue };
            for input in &entry.tx.input {
                if self.spent.get(&input.previous_output) == Some(txid) {
                    self.spent.remove(&input.previous_output);
                }
            }
            for vout in (0u32..).take(entry.tx.output.len()) {
                self.remove_unspent(&OutPoint::new(*txid, vout));
            }
        }
        self.mempool.retain(|t| !txids.contains(t));
    }

    /// Mines one block at `tip + 1` holding the whole mempool; returns the new tip.
    pub fn mine_one(&mut self) -> u32 {
        let height = self.tip.saturating_add(1);
        for txid in std::mem::take(&mut self.mempool) {
            let Some(entry) = self.txs.get_mut(&txid) else {
                continue;
            };
            entry.height = Some(height);
            let inputs: Vec<OutPoint> = entry.tx.input.iter().map(|i| i.previous_output).collect();
            let outputs = entry.tx.output.len();
            for outpoint in inputs {
                self.remove_unspent(&outpoint);
            }
            for vout in (0u32..).take(outputs) {
                if let Some(utxo) = self.unspent.get_mut(&OutPoint::new(txid, vout)) {
                    utxo.height = Some(height);
                }
            }
        }
        self.tip = height;
        height
    }

    /// Mines `blocks` blocks (the first holds the mempool); returns the new tip.
    pub fn mine(&mut self, blocks: u32) -> u32 {
        if blocks == 0 {
            return self.tip;
        }
        self.mine_one();
        // Empty blocks only move the tip: block times follow from heights.
        self.tip = self.tip.saturating_add(blocks - 1);
        self.tip
    }

    /// Adds confirmed faucet transactions paying `outputs` at `height` (the block being
    /// mined); at most `per_tx` outputs per transaction. Returns the outpoints in order.
    pub fn add_faucet(
        &mut self,
        outputs: &[(ScriptBuf, Amount)],
        height: u32,
        per_tx: usize,
    ) -> Vec<OutPoint> {
        let mut outpoints = Vec::with_capacity(outputs.len());
        for chunk in outputs.chunks(per_tx.max(1)) {
            self.faucet_nonce += 1;
            let tx = faucet_tx(chunk, height, self.faucet_nonce);
            let txid = tx.compute_txid();
            self.add_outputs(txid, &tx, Some(height));
            outpoints.extend((0u32..).take(chunk.len()).map(|vout| OutPoint::new(txid, vout)));
            self.txs.insert(txid, TxEntry { tx, height: Some(height) });
        }
        outpoints
    }
}

/// A coinbase-shaped transaction (null prevout, height and nonce in the scriptSig).
fn faucet_tx(outputs: &[(ScriptBuf, Amount)], height: u32, nonce: u64) -> Transaction {
    use bitcoin::blockdata::script::Builder;
    let script_sig =
        Builder::new().push_int(i64::from(height)).push_slice(nonce.to_le_bytes()).into_script();
    Transaction {
        version: bitcoin::transaction::Version::TWO,
        lock_time: bitcoin::absolute::LockTime::ZERO,
        input: vec![bitcoin::TxIn {
            previous_output: OutPoint::null(),
            script_sig,
            sequence: bitcoin::Sequence::MAX,
            witness: bitcoin::Witness::new(),
        }],
        output: outputs
            .iter()
            .map(|(script, amount)| TxOut { value: *amount, script_pubkey: script.clone() })
            .collect(),
    }
}

/// The state as seen by a transaction being checked: the ledger plus, for a package
/// child, the package parent that is not in the mempool yet.
#[derive(Debug, Clone, Copy)]
pub(super) struct View<'a> {
    /// The ledger state.
    pub state: &'a State,
    /// The package parent, if checking a child.
    pub pending: Option<(Txid, &'a Transaction)>,
    /// Mempool transactions a replacement would evict: seen as never accepted.
    pub evicted: Option<&'a HashSet<Txid>>,
}

impl View<'_> {
    /// What is known about `outpoint`.
    pub fn lookup(&self, outpoint: &OutPoint) -> Lookup {
        if let Some((ptxid, ptx)) = self.pending {
            if ptx.input.iter().any(|i| i.previous_output == *outpoint) {
                return Lookup::Spent { spender: ptxid, confirmed: false };
            }
            if outpoint.txid == ptxid {
                return match usize::try_from(outpoint.vout).ok().and_then(|v| ptx.output.get(v)) {
                    Some(txout) => Lookup::Unspent {
                        utxo: Utxo { txout: txout.clone(), height: None },
                        unconfirmed_parent: Some((ptxid, ptx.version.0)),
                    },
                    None => Lookup::Missing,
                };
            }
        }
        let s = self.state;
        let evicted = |t: &Txid| self.evicted.is_some_and(|e| e.contains(t));
        if evicted(&outpoint.txid) {
            return Lookup::Missing;
        }
        if let Some(spender) = s.spent.get(outpoint).filter(|t| !evicted(t)) {
            let confirmed = s.txs.get(spender).is_some_and(|e| e.height.is_some());
            return Lookup::Spent { spender: *spender, confirmed };
        }
        match s.unspent.get(outpoint) {
            Some(utxo) => {
                let unconfirmed_parent = match utxo.height {
                    Some(_) => None,
                    None => s.txs.get(&outpoint.txid).map(|e| (outpoint.txid, e.tx.version.0)),
                };
                Lookup::Unspent { utxo: utxo.clone(), unconfirmed_parent }
            }
            None => Lookup::Missing,
        }
    }

    /// Whether `txid` is known (chain, mempool or pending parent).
    pub fn knows(&self, txid: &Txid) -> bool {
        self.pending.is_some_and(|(p, _)| p == *txid) || self.state.txs.contains_key(txid)
    }

    /// Unconfirmed transactions `txid` spends (its unconfirmed parents).
    pub fn unconfirmed_parents_of(&self, txid: &Txid) -> Vec<Txid> {
        let tx = match self.pending {
            Some((p, ptx)) if p == *txid => ptx,
            _ => match self.state.txs.get(txid) {
                Some(e) if e.height.is_none() => &e.tx,
                _ => return Vec::new(),
            },
        };
        let mut parents: Vec<Txid> = tx
            .input
            .iter()
            .map(|i| i.previous_output.txid)
            .filter(|t| self.state.txs.get(t).is_some_and(|e| e.height.is_none()))
            .collect();
        parents.sort();
        parents.dedup();
        parents
    }

    /// An unconfirmed transaction already spending an output of `parent`, if any.
    pub fn unconfirmed_child_of(&self, parent: &Txid) -> Option<Txid> {
        let outputs = match self.pending {
            Some((p, ptx)) if p == *parent => ptx.output.len(),
            _ => self.state.txs.get(parent)?.tx.output.len(),
        };
        (0u32..).take(outputs).find_map(|vout| {
            let spender = self.state.spent.get(&OutPoint::new(*parent, vout))?;
            if self.evicted.is_some_and(|e| e.contains(spender)) {
                return None;
            }
            self.state.txs.get(spender).filter(|e| e.height.is_none()).map(|_| *spender)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_time_past_is_the_middle_of_eleven_blocks() {
        assert_eq!(median_time_past(0), GENESIS_TIME);
        assert_eq!(median_time_past(1), block_time(1));
        assert_eq!(median_time_past(4), block_time(2));
        assert_eq!(median_time_past(10), block_time(5));
        assert_eq!(median_time_past(100), block_time(95));
        assert_eq!(median_time_past(u32::MAX), block_time(u32::MAX - 5));
    }
}
