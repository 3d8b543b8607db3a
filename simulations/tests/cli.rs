//! The `cohort-sim` binary's options, end to end: every option given either does what it
//! says in every mode (`--json` and `--export` included) or is refused, naming itself.

// Helpers outside #[test] functions are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use bitcoin::consensus::encode::deserialize_hex;
use bitcoin::{Amount, ScriptBuf, Transaction, TxOut, Txid};
use cohort_common::consensus::verify_tx;

/// Runs `cohort-sim` with `args`.
fn sim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cohort-sim"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("cohort-sim runs")
}

/// Runs `cohort-sim` with `args` and returns its stdout; panics with its stderr if it fails.
fn sim_ok(args: &[&str]) -> String {
    let out = sim(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "cohort-sim {args:?} failed: {stderr}");
    String::from_utf8(out.stdout).expect("utf-8 report")
}

/// Runs `cohort-sim` with `args`, which must fail, and returns its stderr.
fn sim_refused(args: &[&str]) -> String {
    let out = sim(args);
    assert!(!out.status.success(), "cohort-sim {args:?} should be refused");
    String::from_utf8(out.stderr).expect("utf-8 error")
}

/// A fresh temporary path for this test.
fn temp(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("cohort-sim-cli-{}-{name}", std::process::id()));
    std::fs::remove_dir_all(&path).ok();
    std::fs::remove_file(&path).ok();
    path
}

/// Reads an exported `batch.json` and checks it the way an outsider would: the funding
/// transaction against the prevouts it lists, every node transaction against the output
/// it spends (in the funding transaction or an earlier node), all with libbitcoinkernel.
/// Returns the funding transaction, the node count and the leaf count.
fn check_export_file(path: &Path) -> (Transaction, usize, usize) {
    let text = std::fs::read_to_string(path).expect("batch file");
    let json: serde_json::Value = serde_json::from_str(&text).expect("json");
    let funding: Transaction =
        deserialize_hex(json["funding"]["tx"].as_str().expect("funding tx")).expect("decodes");
    let prevouts: Vec<TxOut> = json["funding"]["prevouts"]
        .as_array()
        .expect("prevouts")
        .iter()
        .map(|p| TxOut {
            script_pubkey: ScriptBuf::from_hex(p["script_pubkey"].as_str().expect("script"))
                .expect("hex script"),
            value: amount_sat(p),
        })
        .collect();
    verify_tx(&funding, &prevouts).expect("the funding transaction verifies");
    let mut known: HashMap<Txid, Transaction> = HashMap::new();
    known.insert(funding.compute_txid(), funding.clone());
    let nodes = json["nodes"].as_array().expect("nodes");
    for node in nodes {
        let tx: Transaction =
            deserialize_hex(node["tx"].as_str().expect("node tx")).expect("node decodes");
        let spent: Vec<TxOut> = tx
            .input
            .iter()
            .map(|i| known[&i.previous_output.txid].output[i.previous_output.vout as usize].clone())
            .collect();
        verify_tx(&tx, &spent).expect("every node transaction is signed and verifies");
        known.insert(tx.compute_txid(), tx);
    }
    let leaves = json["leaves"].as_array().expect("leaves").len();
    (funding, nodes.len(), leaves)
}

fn amount_sat(p: &serde_json::Value) -> Amount {
    Amount::from_sat(p["amount_sat"].as_u64().expect("amount"))
}

#[test]
fn quic_export_writes_every_signed_batch() {
    let dir = temp("quic-export");
    let report = sim_ok(&[
        "--transport",
        "quic",
        "--users",
        "9",
        "--exits",
        "1",
        "--export",
        dir.to_str().expect("utf-8 path"),
    ]);
    let (funding, nodes, leaves) = check_export_file(&dir.join("batch.json"));
    assert_eq!(
        std::fs::read(dir.join("batch-0.json")).expect("batch-0.json"),
        std::fs::read(dir.join("batch.json")).expect("batch.json")
    );
    assert_eq!(funding.input.len(), 9, "every user's deposit is in");
    assert!(funding.input.iter().all(|i| i.witness.len() == 1), "signed inputs");
    assert!(report.contains(&funding.compute_txid().to_string()), "{report}");
    assert!(report.contains(&format!("{nodes} node transactions")), "{report}");
    // Every third user asks for an extra leaf: 9 remainders and 3 extra leaves.
    assert_eq!(leaves, 12);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn quic_export_of_several_batches_writes_one_file_each() {
    let dir = temp("quic-export-batches");
    // The smallest weight limit holds a few deposit inputs: 10 users make several batches.
    sim_ok(&[
        "--transport",
        "quic",
        "--users",
        "10",
        "--exits",
        "0",
        "--max-batch-weight",
        "2000",
        "--export",
        dir.to_str().expect("utf-8 path"),
    ]);
    let (mut inputs, mut batches) = (0, 0);
    while dir.join(format!("batch-{batches}.json")).exists() {
        let (funding, _, _) = check_export_file(&dir.join(format!("batch-{batches}.json")));
        inputs += funding.input.len();
        batches += 1;
    }
    assert!(batches >= 2, "{batches} batches");
    assert_eq!(inputs, 10, "every deposit in exactly one exported batch");
    assert!(!dir.join("batch.json").exists(), "batch.json names the only batch of a round");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn local_json_writes_the_local_report() {
    let path = temp("local.json");
    let report = sim_ok(&[
        "--local",
        "--users",
        "6",
        "--exits",
        "2",
        "--json",
        path.to_str().expect("utf-8 path"),
    ]);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("json written")).expect("json");
    assert_eq!(json["users"], 6);
    let txids = json["funding_txids"].as_array().expect("funding txids");
    assert_eq!(txids.len(), 1);
    assert!(report.contains(txids[0].as_str().expect("txid")), "{report}");
    assert!(json["deposits_ms"].as_f64().is_some() && json["timings"]["build_ms"].is_f64());
    let exits = json["exits"].as_array().expect("exits");
    assert_eq!(exits.len(), 2);
    assert!(exits.iter().all(|e| e["vbytes"].as_u64() > Some(0) && e["user"].is_u64()));
    std::fs::remove_file(path).ok();
}

#[test]
fn exits_zero_executes_no_exit_in_every_mode() {
    for mode in [&["--local"][..], &["--transport", "mem"], &["--transport", "quic"]] {
        let report = sim_ok(&[mode, &["--users", "4", "--exits", "0"]].concat());
        assert!(!report.contains("exit user"), "{mode:?}: {report}");
    }
}

#[test]
fn options_that_would_do_nothing_are_refused_by_name() {
    let file = temp("a-file");
    std::fs::write(&file, "not a directory").expect("temp file");
    let file = file.to_str().expect("utf-8 path");
    for (args, expected) in [
        (&["--local", "--faults", "0.2"][..], "--faults cannot be used with --local"),
        (&["--local", "--loss", "0.1"], "--loss cannot be used with --local"),
        (&["--local", "--fault-kind", "drop"], "--fault-kind cannot be used with --local"),
        (&["--local", "--fault-phase", "tree"], "--fault-phase cannot be used with --local"),
        (&["--local", "--transport", "quic"], "--transport cannot be used with --local"),
        (&["--transport", "quic", "--loss", "0.1"], "--loss applies to the in-memory transport"),
        (&["--max-batch-weight", "0"], "the smallest allowed is 2000"),
        (&["--local", "--max-batch-weight", "100"], "the smallest allowed is 2000"),
        (&["--export", file], &format!("--export {file} is not a directory")),
        (&["--local", "--export", file], &format!("--export {file} is not a directory")),
    ] {
        let stderr = sim_refused(&[&["--users", "2"][..], args].concat());
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    std::fs::remove_file(file).ok();
}
