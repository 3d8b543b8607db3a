//! Writes a signed batch as `batch.json`, so anyone can check it with their own tools.
//!
//! Format: `{"funding": {"tx": hex, "prevouts": [{"script_pubkey": hex, "amount_sat": n}]},
//! "nodes": [{"tx": hex}], "leaves": [{"script_pubkey": hex, "amount_sat": n, "node": i,
//! "vout": j}]}` with fully signed transactions (witnesses included).

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use bitcoin::consensus::encode::serialize_hex;
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
    let funding = Funding {
        tx: serialize_hex(&batch.funding),
        prevouts: batch
            .prevouts
            .iter()
            .map(|o| Output {
                script_pubkey: hex::encode(o.script_pubkey.as_bytes()),
                amount_sat: o.value.to_sat(),
            })
            .collect(),
    };
    let nodes = batch.signed_nodes().iter().map(|tx| NodeTx { tx: serialize_hex(tx) }).collect();
    let leaves = batch
        .tree
        .leaves()
        .iter()
        .enumerate()
        .map(|(i, leaf)| {
            let (node, vout) = batch
                .tree
                .shape()
                .leaf_output(i)
                .ok_or_else(|| anyhow!("leaf {i} has no output"))?;
            Ok(Leaf {
                script_pubkey: hex::encode(leaf.output.script_pubkey.as_bytes()),
                amount_sat: leaf.output.amount.to_sat(),
                node,
                vout,
            })
        })
        .collect::<Result<_>>()?;
    Ok(serde_json::to_string_pretty(&BatchFile { funding, nodes, leaves })?)
}

/// Writes `name` under `dir`, creating the directory.
pub fn write_batch(dir: &Path, name: &str, batch: &SignedBatch) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(name);
    std::fs::write(&path, batch_json(batch)?).with_context(|| format!("writing {}", path.display()))
}
