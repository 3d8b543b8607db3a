//! Fuzzes the participant's SQLite store decoders (private helpers in
//! `participant/src/store/sqlite.rs`) through its public API, and the wallet loaded from
//! it: a real store file is filled with a seed, deposits in every status (`Withdrawing`
//! and `Withdrawn` too), exit paths, signed withdrawals, an exit's CPFP child, history and
//! the wallet's coordinator setting; each input is a list of [`Damage`]s
//! written into its columns through a second connection; then every read method runs.
//!
//! Asserts: no read panics; a read fails only with `StoreError::Corrupt` (or the error its
//! contract names: `NotFound` for a missing exit path, `KeyIndexExhausted`); loading the
//! wallet fails only with a store or setting error; every deposit and exit path that reads
//! back is written again through the store and reads back equal, and so is every
//! withdrawal and the exit child.

use std::sync::{Mutex, OnceLock};

use crate::damage::{self, Damage, Schema, Snapshot, Table};
use crate::samples::{key, outpoint, p2tr, tx, txid};
use arbitrary::{Arbitrary, Unstructured};
use cohort_common::bitcoin::{Amount, Network, Transaction, TxOut};
use cohort_participant::store::{
    DepositRecord, DepositStatus, ExitChildRecord, ExitPathRecord, HistoryEvent, ParticipantStore,
    SqliteStore, StoreError, WithdrawalRecord, MAX_HISTORY_READ,
};
use cohort_participant::wallet::{CoordinatorInfo, Wallet, WalletError};
use rusqlite::Connection;

/// The participant store's tables (`MIGRATIONS` in its `sqlite.rs`).
const SCHEMA: Schema = &[
    Table { name: "meta", columns: &["id", "seed", "next_key_index"], key: &["id"] },
    Table {
        name: "deposits",
        columns: &[
            "txid",
            "vout",
            "amount_sat",
            "script_pubkey",
            "key_index",
            "deposit_csv",
            "status",
            "status_arg",
        ],
        key: &["txid", "vout"],
    },
    Table {
        name: "exit_paths",
        columns: &[
            "funding_txid",
            "leaf",
            "round",
            "batch",
            "leaf_amount_sat",
            "leaf_script_pubkey",
            "node",
            "vout",
            "path",
            "leaf_key_index",
            "exit_csv",
            "exited",
        ],
        key: &["funding_txid", "leaf"],
    },
    Table { name: "history", columns: &["id", "at_ms", "round", "kind", "detail"], key: &["id"] },
    Table { name: "settings", columns: &["key", "value"], key: &["key"] },
    Table { name: "withdrawals", columns: &["id", "txid", "tx", "at_ms"], key: &["id"] },
    Table {
        name: "exit_children",
        columns: &["node_txid", "child", "fee_input_sat", "height"],
        key: &["node_txid"],
    },
];

/// The tree node whose CPFP child the store holds.
const CHILD_NODE: u8 = 80;

/// A CPFP child of node `txid(CHILD_NODE)` as the exit tool builds one: its anchor, a fee
/// input, one change output.
fn exit_child() -> ExitChildRecord {
    let mut child: Transaction = tx(CHILD_NODE, 1);
    child.input[0].previous_output.txid = txid(CHILD_NODE);
    let mut fee_input = child.input[0].clone();
    fee_input.previous_output = outpoint(CHILD_NODE + 1);
    child.input.push(fee_input);
    ExitChildRecord {
        node_txid: txid(CHILD_NODE),
        child,
        fee_input_value: Amount::from_sat(15_000),
        height: 120,
    }
}

/// The store, a second connection to its file, and its valid rows.
struct Fixture {
    store: SqliteStore,
    raw: Connection,
    valid: Snapshot,
}

fn deposit(n: u8, status: DepositStatus) -> DepositRecord {
    DepositRecord {
        outpoint: outpoint(n),
        txout: TxOut { value: Amount::from_sat(100_000 * u64::from(n)), script_pubkey: p2tr(n) },
        key_index: u32::from(n),
        deposit_csv: 1_008,
        status,
    }
}

fn exit_path(n: u8, leaf: u32) -> ExitPathRecord {
    ExitPathRecord {
        funding_txid: txid(n),
        round: 8,
        batch: 0,
        leaf,
        leaf_output: TxOut { value: Amount::from_sat(20_000), script_pubkey: p2tr(n) },
        node: 2,
        vout: 1,
        path: vec![tx(n, 2), tx(n + 1, 2)],
        leaf_key_index: Some(3),
        exit_csv: Some(144),
    }
}

fn populate(store: &SqliteStore) -> Result<(), WalletError> {
    let coordinator = CoordinatorInfo {
        uri: format!("cohort://{}@127.0.0.1:4433", "ab".repeat(32)),
        key: key(1).public,
        network: Network::Regtest,
        deposit_csv: 1_008,
        exit_csv: 144,
        dev: true,
        dev_chain: None,
    };
    Wallet::create_with_seed(store, [7; 32], coordinator)?;
    store.next_key_index()?;
    let statuses = [
        DepositStatus::Unspent,
        DepositStatus::Registered { round: 8 },
        DepositStatus::InBatch { funding_txids: vec![txid(50), txid(51)] },
        DepositStatus::Batched { funding_txid: txid(52) },
        DepositStatus::Spent,
        DepositStatus::Reclaimed { txid: txid(51) },
        DepositStatus::Withdrawing {
            txids: vec![tx(70, 1).compute_txid(), tx(71, 2).compute_txid()],
        },
        DepositStatus::Withdrawn { txid: tx(71, 2).compute_txid() },
    ];
    for (n, status) in (1..).zip(statuses) {
        store.put_deposit(&deposit(n, status))?;
    }
    store.store_exit_paths(&[exit_path(50, 0), exit_path(50, 1), exit_path(60, 0)])?;
    store.mark_exited(&txid(50), 1)?;
    store.put_withdrawal(&WithdrawalRecord { tx: tx(70, 1), at_ms: 3_000 })?;
    store.put_withdrawal(&WithdrawalRecord { tx: tx(71, 2), at_ms: 4_000 })?;
    store.put_exit_child(&exit_child())?;
    for (at_ms, round) in [(1_000, Some(8)), (2_000, None)] {
        let event = HistoryEvent { at_ms, round, kind: "registered".into(), detail: "ok".into() };
        store.append_history(&event)?;
    }
    Ok(())
}

fn fixture() -> &'static Mutex<Fixture> {
    static FIXTURE: OnceLock<Mutex<Fixture>> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let path = crate::scratch_file("participant-store");
        let store = SqliteStore::open(&path).expect("a new store opens");
        populate(&store).expect("a new store takes valid records");
        let raw = Connection::open(&path).expect("a second connection opens");
        raw.pragma_update(None, "synchronous", "OFF").expect("pragma");
        let valid = Snapshot::take(&raw, SCHEMA).expect("the valid rows read back");
        Mutex::new(Fixture { store, raw, valid })
    })
}

/// A read's value, or `None` when it reported the file as corrupt; any other error fails.
fn clean<T>(read: Result<T, StoreError>, what: &str) -> Option<T> {
    match read {
        Ok(value) => Some(value),
        Err(StoreError::Corrupt { .. }) => None,
        Err(other) => panic!("{what} on a damaged store failed with {other:?}, not as corrupt"),
    }
}

fn rewrite_deposit(store: &SqliteStore, d: &DepositRecord) {
    store.put_deposit(d).expect("a deposit read back writes again");
    let again = store.deposit(&d.outpoint).expect("a rewritten deposit reads");
    assert_eq!(again.as_ref(), Some(d), "deposit changed on its way through the store");
}

fn rewrite_path(store: &SqliteStore, p: &ExitPathRecord) {
    let exited = store.is_exited(&p.funding_txid, p.leaf).ok();
    store.store_exit_paths(std::slice::from_ref(p)).expect("a path read back writes again");
    let again = store.exit_path(&p.funding_txid, p.leaf).expect("a rewritten path reads");
    assert_eq!(again.as_ref(), Some(p), "exit path changed on its way through the store");
    if let Some(exited) = exited {
        assert_eq!(store.is_exited(&p.funding_txid, p.leaf).ok(), Some(exited), "lost its mark");
    }
}

fn rewrite_withdrawal(store: &SqliteStore, w: &WithdrawalRecord) {
    store.put_withdrawal(w).expect("a withdrawal read back writes again");
    let again = store.withdrawals().expect("the withdrawals read after a rewrite");
    assert!(again.contains(w), "withdrawal changed on its way through the store");
}

fn rewrite_exit_child(store: &SqliteStore, c: &ExitChildRecord) {
    store.put_exit_child(c).expect("an exit child read back writes again");
    let again = store.exit_child(&c.node_txid).expect("a rewritten exit child reads");
    assert_eq!(again.as_ref(), Some(c), "exit child changed on its way through the store");
}

fn read_everything(store: &SqliteStore) {
    let _ = clean(store.seed(), "seed");
    for n in 1..=8 {
        if let Some(Some(d)) = clean(store.deposit(&outpoint(n)), "deposit") {
            rewrite_deposit(store, &d);
        }
    }
    for d in clean(store.deposits(), "deposits").unwrap_or_default() {
        rewrite_deposit(store, &d);
    }
    let _ = clean(store.pending_exit_paths(), "pending_exit_paths");
    for p in clean(store.exit_paths(), "exit_paths").unwrap_or_default() {
        rewrite_path(store, &p);
    }
    for (n, leaf) in [(50, 0), (50, 1), (60, 0)] {
        match store.is_exited(&txid(n), leaf) {
            Ok(_) | Err(StoreError::Corrupt { .. } | StoreError::NotFound { .. }) => {}
            Err(other) => panic!("is_exited failed with {other:?}"),
        }
        let _ = clean(store.exit_path(&txid(n), leaf), "exit_path");
    }
    for w in clean(store.withdrawals(), "withdrawals").unwrap_or_default() {
        rewrite_withdrawal(store, &w);
    }
    if let Some(Some(c)) = clean(store.exit_child(&txid(CHILD_NODE)), "exit_child") {
        rewrite_exit_child(store, &c);
    }
    let _ = clean(store.history(MAX_HISTORY_READ), "history");
    let _ = clean(store.setting(cohort_participant::wallet::COORDINATOR_SETTING), "setting");
    match Wallet::load(store) {
        Ok(_)
        | Err(WalletError::NoSeed | WalletError::NoCoordinator | WalletError::BadSetting(_))
        | Err(WalletError::Store(StoreError::Corrupt { .. })) => {}
        Err(other) => panic!("loading the wallet failed with {other:?}"),
    }
    match store.next_key_index() {
        Ok(_) | Err(StoreError::Corrupt { .. } | StoreError::KeyIndexExhausted(_)) => {}
        Err(other) => panic!("next_key_index failed with {other:?}"),
    }
}

/// Runs one input: the bytes read as a list of damages, as libFuzzer's typed input does.
pub fn run(data: &[u8]) {
    let Ok(damages) = Vec::<Damage>::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let mut fixture = fixture().lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let Fixture { store, raw, valid } = &mut *fixture;
    valid.restore(raw).expect("the valid rows go back");
    damage::apply(raw, SCHEMA, &damages).expect("the damage commits");
    read_everything(store);
}
