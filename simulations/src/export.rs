//! Writes a signed batch as `batch.json`, so anyone can check it with their own tools.
//!
//! Format: `{"funding": {"tx": hex, "prevouts": [{"script_pubkey": hex, "amount_sat": n}]},
//! "nodes": [{"tx": hex}], "leaves": [{"script_pubkey": hex, "amount_sat": n, "node": i,
//! "vout": j}]}` with fully signed transactions (witnesses included).

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use std::collections::HashSet;

use bitcoin::consensus::encode::serialize_hex;
use bitcoin::{OutPoint, Transaction, TxOut};
use serde::Serialize;

use cohort_common::ledger::Ledger;

use crate::local::SignedBatch;

#[derive(Serialize)]
struct Output {
    script_pubkey: String,
    amount_sat: u64,
}

#[derive(Serialize)]
struct Funding {
    tx: String,
    prevouts: Vec<Output>,
}

#[derive(Serialize)]
struct NodeTx {
    tx: String,
}

#[derive(Serialize)]
struct Leaf {
    script_pubkey: String,
    amount_sat: u64,
    node: usize,
    vout: u32,
}

#[derive(Serialize)]
struct BatchFile {
    funding: Funding,
    nodes: Vec<NodeTx>,
    leaves: Vec<Leaf>,
}

/// The JSON document of a batch.
pub fn batch_json(batch: &SignedBatch) -> Result<String> {
    batch_json_parts(&batch.funding, &batch.prevouts, &batch.signed_nodes())
}

/// The JSON document of a funding transaction, its prevouts and its signed node
/// transactions (pre-order, root first). Leaves are the nodes' outputs that no node
/// spends, anchors aside.
pub fn batch_json_parts(
    funding: &Transaction,
    prevouts: &[TxOut],
    nodes: &[Transaction],
) -> Result<String> {
    let funding = Funding {
        tx: serialize_hex(funding),
        prevouts: prevouts
            .iter()
            .map(|o| Output {
                script_pubkey: hex::encode(o.script_pubkey.as_bytes()),
                amount_sat: o.value.to_sat(),
            })
            .collect(),
    };
    if let Some(node) = nodes.iter().position(|t| t.output.is_empty()) {
        return Err(anyhow!("node {node} has no outputs"));
    }
    let leaves = leaf_outputs(nodes)
        .into_iter()
        .map(|(node, vout, out)| Leaf {
            script_pubkey: hex::encode(out.script_pubkey.as_bytes()),
            amount_sat: out.value.to_sat(),
            node,
            vout,
        })
        .collect();
    let nodes = nodes.iter().map(|tx| NodeTx { tx: serialize_hex(tx) }).collect();
    Ok(serde_json::to_string_pretty(&BatchFile { funding, nodes, leaves })?)
}

/// The leaves of a signed tree (nodes root first): every node output that no node
/// spends, each node's last output (its anchor) aside, as (node index, vout, output).
pub fn leaf_outputs(nodes: &[Transaction]) -> Vec<(usize, u32, &TxOut)> {
    let spent: HashSet<OutPoint> =
        nodes.iter().flat_map(|t| t.input.iter().map(|i| i.previous_output)).collect();
    let mut leaves = Vec::new();
    for (node, tx) in nodes.iter().enumerate() {
        let txid = tx.compute_txid();
        let anchor = tx.output.len().saturating_sub(1);
        for (vout, out) in tx.output.iter().enumerate().take(anchor) {
            if !spent.contains(&OutPoint { txid, vout: vout as u32 }) {
                leaves.push((node, vout as u32, out));
            }
        }
    }
    leaves
}

/// Writes every batch's document as `batch-K.json` under `dir` (creating it), and the
/// only one also as `batch.json` (the foundation's name) when there is one batch.
/// Every error names the path it failed on.
pub fn write_batches(dir: &Path, batches: &[(u32, String)]) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating the export directory {}", dir.display()))?;
    let write = |name: String, json: &str| {
        let path = dir.join(name);
        std::fs::write(&path, json).with_context(|| format!("writing {}", path.display()))
    };
    for (batch, json) in batches {
        write(format!("batch-{batch}.json"), json)?;
    }
    if let [(_, only)] = batches {
        write("batch.json".to_owned(), only)?;
    }
    Ok(())
}

/// The outputs `tx` spends, as the ledger holds them.
pub fn ledger_prevouts(ledger: &Ledger, tx: &Transaction) -> Result<Vec<TxOut>> {
    tx.input
        .iter()
        .map(|i| {
            ledger
                .transaction(&i.previous_output.txid)
                .and_then(|t| t.output.get(i.previous_output.vout as usize).cloned())
                .with_context(|| format!("prevout {} is not on the ledger", i.previous_output))
        })
        .collect()
}
