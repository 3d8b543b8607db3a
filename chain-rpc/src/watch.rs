//! Confirmations of transactions the node cannot look up by txid (no `-txindex`, all
//! outputs spent): each watched txid is searched for in the blocks since it was
//! broadcast (or since `watch_depth` blocks below the tip when first asked about), one
//! block at a time, and its block is re-checked against the active chain on each ask.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bitcoin::{BlockHash, Txid};
use serde_json::json;

use crate::client::RpcClient;
use crate::error::RpcError;
use crate::wire::BlockTxids;

/// Blocks whose txid lists are kept between searches.
const BLOCK_CACHE: usize = 256;
/// Blocks re-searched below a confirmation that a reorg undid.
const REORG_MARGIN: u32 = 6;

/// Where one watched transaction stands.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Next height to search.
    next: u32,
    /// The block that holds it, once found.
    found: Option<(u32, BlockHash)>,
}

/// The watched transactions and a cache of recent blocks' txids.
#[derive(Debug, Default)]
pub struct Watch {
    entries: HashMap<Txid, Entry>,
    blocks: HashMap<BlockHash, Arc<HashSet<Txid>>>,
}

impl Watch {
    /// Starts watching `txid` from height `from` (kept if already watched).
    pub fn add(&mut self, txid: Txid, from: u32) {
        self.entries.entry(txid).or_insert(Entry { next: from, found: None });
    }

    /// Confirmations of `txid` at tip `tip`, searching the blocks not yet searched;
    /// `None` when it is in none of them. Starts watching it from `tip - depth` first.
    pub fn confirmations(
        &mut self,
        rpc: &RpcClient,
        txid: Txid,
        tip: u32,
        depth: u32,
    ) -> Result<Option<u32>, RpcError> {
        self.add(txid, tip.saturating_sub(depth));
        let mut entry = self.entries[&txid];
        if let Some((height, hash)) = entry.found {
            if height <= tip && block_hash(rpc, height)? == hash {
                return Ok(Some(tip - height + 1));
            }
            entry = Entry { next: height.saturating_sub(REORG_MARGIN), found: None };
        }
        while entry.next <= tip {
            let height = entry.next;
            let hash = block_hash(rpc, height)?;
            if self.txids(rpc, hash)?.contains(&txid) {
                entry.found = Some((height, hash));
                break;
            }
            entry.next = height + 1;
        }
        self.entries.insert(txid, entry);
        Ok(entry.found.map(|(height, _)| tip - height + 1))
    }

    fn txids(&mut self, rpc: &RpcClient, hash: BlockHash) -> Result<Arc<HashSet<Txid>>, RpcError> {
        if let Some(set) = self.blocks.get(&hash) {
            return Ok(set.clone());
        }
        let block: BlockTxids = rpc.call("getblock", &[json!(hash.to_string()), json!(1)])?;
        let set: Arc<HashSet<Txid>> = Arc::new(block.tx.into_iter().collect());
        if self.blocks.len() >= BLOCK_CACHE {
            self.blocks.clear();
        }
        self.blocks.insert(hash, set.clone());
        Ok(set)
    }
}

/// The hash of the active chain's block at `height`.
pub fn block_hash(rpc: &RpcClient, height: u32) -> Result<BlockHash, RpcError> {
    rpc.call("getblockhash", &[json!(height)])
}
