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

/// Writes `name` under `dir`, creating the directory.
pub fn write_batch(dir: &Path, name: &str, batch: &SignedBatch) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(name);
    std::fs::write(&path, batch_json(batch)?).with_context(|| format!("writing {}", path.display()))
}
