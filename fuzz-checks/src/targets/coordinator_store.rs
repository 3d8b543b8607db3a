//! Fuzzes the coordinator's SQLite store decoders (private helpers in
//! `coordinator/src/store/sqlite.rs`) through its public API: a real store file is filled
//! with valid rounds, registrations, batches, a signed tree and bans; each input is a list
//! of [`Damage`]s written into its columns through a second connection; then every read
//! method runs.
//!
//! Asserts: no read panics; a read fails only with `StoreError::Corrupt`; every record that
//! reads back is written again through the store and reads back equal (round, registration,
//! batch, bans).

use std::sync::{Mutex, OnceLock};

use crate::damage::{self, Damage, Schema, Snapshot, Table};
use crate::samples::{outpoint, tx, txid};
use arbitrary::{Arbitrary, Unstructured};
use cohort_common::bitcoin::OutPoint;
use cohort_coordinator::store::{
    BatchRecord, BatchStatus, CoordinatorStore, RegistrationRecord, RegistrationStatus,
    RoundRecord, RoundState, SqliteStore, StoreError, MAX_ROUNDS_READ,
};
use rusqlite::Connection;

/// The coordinator store's tables (`MIGRATIONS` in its `sqlite.rs`).
const SCHEMA: Schema = &[
    Table {
        name: "rounds",
        columns: &["round", "params", "started_at_ms", "state"],
        key: &["round"],
    },
    Table {
        name: "registrations",
        columns: &["round", "registration", "body", "status", "status_arg"],
        key: &["round", "registration"],
    },
    Table {
        name: "registration_deposits",
        columns: &["round", "registration", "idx", "txid", "vout"],
        key: &["round", "registration", "idx"],
    },
    Table {
        name: "batches",
        columns: &[
            "round",
            "batch",
            "attempt",
            "funding_tx",
            "status",
            "status_arg",
            "finished",
            "tree_nodes",
        ],
        key: &["round", "batch", "attempt"],
    },
    Table {
        name: "tree_nodes",
        columns: &["round", "batch", "attempt", "node", "tx"],
        key: &["round", "batch", "attempt", "node"],
    },
    Table {
        name: "bans",
        columns: &["txid", "vout", "until_ms", "reason"],
        key: &["txid", "vout"],
    },
];

/// Rounds the valid store holds.
const ROUNDS: [u64; 2] = [8, 9];

/// The store, a second connection to its file, and its valid rows.
struct Fixture {
    store: SqliteStore,
    raw: Connection,
    valid: Snapshot,
}

fn populate(store: &SqliteStore) -> Result<(), StoreError> {
    for (round, state) in [(8, RoundState::Signing), (9, RoundState::Registering)] {
        store.put_round(&RoundRecord {
            round,
            params: vec![1, 2, 3],
            started_at_ms: 1_000,
            state,
        })?;
    }
    let statuses = [RegistrationStatus::InBatch(0), RegistrationStatus::Accepted];
    for (id, status) in (1..).zip(statuses) {
        store.put_registration(&RegistrationRecord {
            round: 8,
            registration: id,
            body: vec![4; 40],
            deposits: vec![outpoint(id as u8), outpoint(10 + id as u8)],
            status,
        })?;
    }
    let statuses = [
        (0, 0, BatchStatus::Aborted { reason: "timeout".into() }),
        (0, 1, BatchStatus::Signing),
        (1, 0, BatchStatus::Finalized { txid: txid(9) }),
        (2, 0, BatchStatus::Confirmed { height: 812 }),
    ];
    for (batch, attempt, status) in statuses {
        let funding_tx = tx(batch as u8 + 1, 2);
        store.put_batch(&BatchRecord { round: 8, batch, attempt, funding_tx, status })?;
    }
    store.put_signed_tree(8, 0, 1, &[tx(20, 3), tx(21, 2), tx(22, 1)])?;
    store.ban(&outpoint(30), 5_000, 1, "invalid partial signature")?;
    store.ban(&outpoint(31), 9_000, 3, "timeout")?;
    Ok(())
}

fn fixture() -> &'static Mutex<Fixture> {
    static FIXTURE: OnceLock<Mutex<Fixture>> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let path = crate::scratch_file("coordinator-store");
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

fn rewrite_round(store: &SqliteStore, round: &RoundRecord) {
    store.put_round(round).expect("a round read back writes again");
    let again = store.round(round.round).expect("a rewritten round reads");
    assert_eq!(again.as_ref(), Some(round), "round changed on its way through the store");
}

fn rewrite_registration(store: &SqliteStore, reg: &RegistrationRecord) {
    match store.put_registration(reg) {
        Ok(()) => {}
        // Its round row may have been deleted (a registration left orphaned).
        Err(StoreError::NotFound { .. }) => return,
        Err(other) => panic!("a registration read back does not write again: {other:?}"),
    }
    let again = store.registration(reg.round, reg.registration).expect("it reads again");
    assert_eq!(again.as_ref(), Some(reg), "registration changed on its way through the store");
}

fn rewrite_batch(store: &SqliteStore, batch: &BatchRecord) {
    match store.put_batch(batch) {
        Ok(()) => {}
        Err(StoreError::NotFound { .. }) => return,
        Err(other) => panic!("a batch read back does not write again: {other:?}"),
    }
    if let Some(all) = clean(store.batches_of_round(batch.round), "batches_of_round") {
        assert!(all.contains(batch), "batch changed on its way through the store");
    }
}

fn read_everything(store: &SqliteStore) {
    let mut rounds: Vec<u64> = ROUNDS.to_vec();
    if let Some(recent) = clean(store.recent_rounds(MAX_ROUNDS_READ), "recent_rounds") {
        assert!(recent.windows(2).all(|w| w[0].round > w[1].round), "rounds out of order");
        rounds.extend(recent.iter().map(|r| r.round));
    }
    let _ = clean(store.latest_round(), "latest_round");
    rounds.sort_unstable();
    rounds.dedup();
    for round in rounds {
        if let Some(Some(record)) = clean(store.round(round), "round") {
            rewrite_round(store, &record);
        }
        for reg in
            clean(store.registrations_of_round(round), "registrations_of_round").unwrap_or_default()
        {
            rewrite_registration(store, &reg);
        }
        let _ = clean(store.registration(round, 1), "registration");
        for batch in clean(store.batches_of_round(round), "batches_of_round").unwrap_or_default() {
            rewrite_batch(store, &batch);
        }
        for batch in 0..3 {
            let _ = clean(store.signed_tree(round, batch), "signed_tree");
        }
    }
    for batch in clean(store.unfinished_batches(), "unfinished_batches").unwrap_or_default() {
        rewrite_batch(store, &batch);
    }
    let banned: [OutPoint; 2] = [outpoint(30), outpoint(31)];
    for op in &banned {
        let _ = clean(store.is_banned(op, 0), "is_banned");
    }
    if let Some(bans) = clean(store.bans(0), "bans") {
        for ban in &bans {
            store
                .ban(&ban.outpoint, ban.until_ms, ban.offences, &ban.reason)
                .expect("a ban read back writes");
        }
        let again = clean(store.bans(0), "bans");
        assert_eq!(again.as_ref(), Some(&bans), "bans changed on their way through the store");
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
