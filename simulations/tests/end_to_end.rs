//! End to end without network: a 40-leaf batch at radix 2 and 4, its funding
//! transaction and chosen exits accepted by the embedded ledger.

// Helpers outside #[test] functions are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use cohort_common::params::TreeParams;
use cohort_sim::run::{run, Config};

fn config(radix: u8, exits: usize) -> Config {
    Config {
        // 30 users, every third asks for an extra leaf: 40 leaves.
        users: 30,
        tree: TreeParams { radix, max_depth: 8 },
        seed: u64::from(radix),
        max_batch_weight: 400_000,
        exits,
        export: None,
    }
}

#[test]
fn forty_leaves_radix_2_and_4_confirm_and_exit() {
    for (radix, depth) in [(2u8, 6u8), (4, 3)] {
        let report = run(&config(radix, 6)).expect("run");
        assert_eq!(report.funding_txids.len(), 1);
        assert_eq!(report.depth, depth, "ceil(log_{radix} 40)");
        assert_eq!(report.exits.len(), 6);
        // The first exit publishes its whole path; later ones share the nodes above them.
        assert_eq!(report.exits[0].1.nodes, usize::from(depth));
        assert!(report.funding_vbytes < report.baseline_vbytes);
    }
}

#[test]
fn export_writes_checkable_batch_json() {
    let dir = std::env::temp_dir().join(format!("cohort-export-{}", std::process::id()));
    let mut cfg = config(4, 3);
    cfg.export = Some(dir.clone());
    let report = run(&cfg).expect("run");
    let text = std::fs::read_to_string(dir.join("batch.json")).expect("batch.json");
    let json: serde_json::Value = serde_json::from_str(&text).expect("json");
    let nodes = json["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), report.nodes);
    assert_eq!(json["leaves"].as_array().map(Vec::len), Some(40));
    let tx_hex = json["funding"]["tx"].as_str().expect("funding tx");
    let tx: bitcoin::Transaction =
        bitcoin::consensus::encode::deserialize_hex(tx_hex).expect("funding tx decodes");
    assert_eq!(tx.compute_txid(), report.funding_txids[0]);
    assert!(tx.input.iter().all(|i| i.witness.len() == 1), "every deposit input is signed");
    let prevouts = json["funding"]["prevouts"].as_array().expect("prevouts");
    assert_eq!(prevouts.len(), tx.input.len());
    std::fs::remove_dir_all(dir).ok();
}
