//! SQLite participant store: one file (plus its `-wal`/`-shm`), mode 0600 because it holds
//! the seed, WAL journal with `synchronous=FULL` so a returned write survives power loss.

use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};

use bitcoin::consensus::{deserialize, serialize};
use bitcoin::hashes::Hash;
use bitcoin::{Amount, OutPoint, ScriptBuf, Transaction, TxOut, Txid};
use cohort_common::sqlite::{open_private, Durability};
use cohort_common::store::{corrupt, txid_from};
use rusqlite::types::Value;
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::{
    check_int, DepositRecord, DepositStatus, ExitChildRecord, ExitPathRecord, HistoryEvent,
    ParticipantStore, StoreError, WithdrawalRecord, MAX_HISTORY_READ,
};

/// Schema migrations, in order; after applying the first `n`, `user_version` is `n`.
/// Append only: a released entry is never edited.
pub(crate) const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE meta (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    seed BLOB,
    next_key_index INTEGER NOT NULL
);
INSERT INTO meta (id, seed, next_key_index) VALUES (0, NULL, 0);
CREATE TABLE deposits (
    txid BLOB NOT NULL,
    vout INTEGER NOT NULL,
    amount_sat INTEGER NOT NULL,
    script_pubkey BLOB NOT NULL,
    key_index INTEGER NOT NULL,
    deposit_csv INTEGER NOT NULL,
    status TEXT NOT NULL,
    status_arg,
    PRIMARY KEY (txid, vout)
) WITHOUT ROWID;
CREATE TABLE exit_paths (
    funding_txid BLOB NOT NULL,
    leaf INTEGER NOT NULL,
    round INTEGER NOT NULL,
    batch INTEGER NOT NULL,
    leaf_amount_sat INTEGER NOT NULL,
    leaf_script_pubkey BLOB NOT NULL,
    node INTEGER NOT NULL,
    vout INTEGER NOT NULL,
    path BLOB NOT NULL,
    leaf_key_index INTEGER,
    exit_csv INTEGER,
    exited INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (funding_txid, leaf)
) WITHOUT ROWID;
CREATE TABLE history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms INTEGER NOT NULL,
    round INTEGER,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL
);
"#,
    r#"
CREATE TABLE settings (
    key TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
) WITHOUT ROWID;
"#,
    // Signed cooperative withdrawals, to publish again or replace.
    r#"
CREATE TABLE withdrawals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    txid BLOB NOT NULL UNIQUE,
    tx BLOB NOT NULL,
    at_ms INTEGER NOT NULL
);
"#,
    // The CPFP child last published for each tree node, to replace it at a higher rate.
    r#"
CREATE TABLE exit_children (
    node_txid BLOB PRIMARY KEY NOT NULL,
    child BLOB NOT NULL,
    fee_input_sat INTEGER NOT NULL,
    height INTEGER NOT NULL
) WITHOUT ROWID;
"#,
];

/// A participant store in one SQLite file.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

impl SqliteStore {
    /// Opens the store at `path`, creating it (mode 0600 on unix) and migrating it to the
    /// current schema. A file from a newer version is refused with
    /// [`StoreError::NewerSchema`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path.as_ref(), MIGRATIONS)
    }

    pub(crate) fn open_with(path: &Path, migrations: &[&str]) -> Result<Self, StoreError> {
        let conn = open_private::<StoreError>(path, migrations, Durability::Power)?;
        Ok(Self { conn: Mutex::new(conn) })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock dropped any open SQLite transaction, which rolls
        // it back, so the connection is consistent.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Reads a column holding a stored `u64` (see [`check_int`]).
fn get_u64(row: &Row<'_>, idx: usize, what: &str) -> Result<u64, StoreError> {
    let v: i64 = row.get(idx)?;
    u64::try_from(v).map_err(|_| corrupt(format!("{what}: negative value {v}")))
}

fn get_opt_u64(row: &Row<'_>, idx: usize, what: &str) -> Result<Option<u64>, StoreError> {
    let v: Option<i64> = row.get(idx)?;
    v.map(|v| u64::try_from(v).map_err(|_| corrupt(format!("{what}: negative value {v}"))))
        .transpose()
}

fn amount_from(sat: i64, what: &str) -> Result<Amount, StoreError> {
    u64::try_from(sat)
        .map(Amount::from_sat)
        .map_err(|_| corrupt(format!("{what}: negative amount {sat}")))
}

fn status_to_sql(status: &DepositStatus) -> Result<(&'static str, Value), StoreError> {
    Ok(match status {
        DepositStatus::Unspent => ("unspent", Value::Null),
        DepositStatus::Registered { round } => {
            ("registered", Value::Integer(check_int("deposit round", *round)?))
        }
        DepositStatus::InBatch { funding_txids } => {
            if funding_txids.is_empty() {
                return Err(StoreError::Invalid("a deposit in a batch with no funding txid"));
            }
            (
                "in_batch",
                Value::Blob(funding_txids.iter().flat_map(|t| t.to_byte_array()).collect()),
            )
        }
        DepositStatus::Batched { funding_txid } => {
            ("batched", Value::Blob(funding_txid.to_byte_array().to_vec()))
        }
        DepositStatus::Spent => ("spent", Value::Null),
        DepositStatus::Reclaimed { txid } => {
            ("reclaimed", Value::Blob(txid.to_byte_array().to_vec()))
        }
        DepositStatus::Withdrawing { txids } => {
            if txids.is_empty() {
                return Err(StoreError::Invalid("a withdrawing deposit with no withdrawal"));
            }
            ("withdrawing", Value::Blob(txids.iter().flat_map(|t| t.to_byte_array()).collect()))
        }
        DepositStatus::Withdrawn { txid } => {
            ("withdrawn", Value::Blob(txid.to_byte_array().to_vec()))
        }
    })
}

fn status_from_sql(kind: &str, arg: Value) -> Result<DepositStatus, StoreError> {
    let what = "deposit status";
    Ok(match (kind, arg) {
        ("unspent", Value::Null) => DepositStatus::Unspent,
        ("registered", Value::Integer(round)) => DepositStatus::Registered {
            round: u64::try_from(round).map_err(|_| corrupt(format!("{what}: round {round}")))?,
        },
        // One or more txids, 32 bytes each (a single one before a deposit could be signed
        // into several attempts).
        ("in_batch", Value::Blob(b)) if !b.is_empty() && b.len() % 32 == 0 => {
            let funding_txids =
                b.chunks_exact(32).map(|t| txid_from(t, what)).collect::<Result<_, _>>()?;
            DepositStatus::InBatch { funding_txids }
        }
        ("batched", Value::Blob(b)) => {
            DepositStatus::Batched { funding_txid: txid_from(&b, what)? }
        }
        ("spent", Value::Null) => DepositStatus::Spent,
        ("reclaimed", Value::Blob(b)) => DepositStatus::Reclaimed { txid: txid_from(&b, what)? },
        ("withdrawing", Value::Blob(b)) if !b.is_empty() && b.len() % 32 == 0 => {
            let txids = b.chunks_exact(32).map(|t| txid_from(t, what)).collect::<Result<_, _>>()?;
            DepositStatus::Withdrawing { txids }
        }
        ("withdrawn", Value::Blob(b)) => DepositStatus::Withdrawn { txid: txid_from(&b, what)? },
        (kind, arg) => return Err(corrupt(format!("{what}: {kind} with {arg:?}"))),
    })
}

const DEPOSIT_COLUMNS: &str =
    "txid, vout, amount_sat, script_pubkey, key_index, deposit_csv, status, status_arg";

fn deposit_from_row(row: &Row<'_>) -> Result<DepositRecord, StoreError> {
    let txid: Vec<u8> = row.get(0)?;
    let kind: String = row.get(6)?;
    Ok(DepositRecord {
        outpoint: OutPoint { txid: txid_from(&txid, "deposit txid")?, vout: row.get(1)? },
        txout: TxOut {
            value: amount_from(row.get(2)?, "deposit")?,
            script_pubkey: ScriptBuf::from_bytes(row.get(3)?),
        },
        key_index: row.get(4)?,
        deposit_csv: row.get(5)?,
        status: status_from_sql(&kind, row.get(7)?)?,
    })
}

const PATH_COLUMNS: &str = "funding_txid, leaf, round, batch, leaf_amount_sat, \
    leaf_script_pubkey, node, vout, path, leaf_key_index, exit_csv";

fn path_from_row(row: &Row<'_>) -> Result<ExitPathRecord, StoreError> {
    let funding: Vec<u8> = row.get(0)?;
    let funding_txid = txid_from(&funding, "exit path funding txid")?;
    let leaf: u32 = row.get(1)?;
    let path_bytes: Vec<u8> = row.get(8)?;
    let path: Vec<Transaction> = deserialize(&path_bytes)
        .map_err(|e| corrupt(format!("exit path of leaf {leaf} in batch {funding_txid}: {e}")))?;
    Ok(ExitPathRecord {
        funding_txid,
        round: get_u64(row, 2, "exit path round")?,
        batch: row.get(3)?,
        leaf,
        leaf_output: TxOut {
            value: amount_from(row.get(4)?, "leaf output")?,
            script_pubkey: ScriptBuf::from_bytes(row.get(5)?),
        },
        node: row.get(6)?,
        vout: row.get(7)?,
        path,
        leaf_key_index: row.get(9)?,
        exit_csv: row.get(10)?,
    })
}

/// Reads `column` of the one `meta` row; the row is made by the first migration and never
/// deleted, so its absence means the file was edited: [`StoreError::Corrupt`].
fn meta_row<T>(
    conn: &Connection,
    column: &str,
    read: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<T, StoreError> {
    conn.query_row(&format!("SELECT {column} FROM meta WHERE id = 0"), [], read)
        .optional()?
        .ok_or_else(|| corrupt("the meta row holding the seed and key counter is missing"))
}

fn no_path(funding_txid: &Txid, leaf: u32) -> StoreError {
    StoreError::NotFound { what: format!("exit path of leaf {leaf} in batch {funding_txid}") }
}

impl SqliteStore {
    fn query_paths(&self, filter: &str) -> Result<Vec<ExitPathRecord>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT {PATH_COLUMNS} FROM exit_paths {filter} ORDER BY funding_txid, leaf"
        ))?;
        let mut rows = stmt.query([])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            out.push(path_from_row(row)?);
        }
        Ok(out)
    }
}

impl ParticipantStore for SqliteStore {
    fn init_seed(&self, seed: [u8; 32]) -> Result<(), StoreError> {
        let conn = self.lock();
        let changed =
            conn.execute("UPDATE meta SET seed = ?1 WHERE id = 0 AND seed IS NULL", params![seed])?;
        if changed == 0 {
            // Either a seed is there, or the row that holds it is gone.
            meta_row(&conn, "seed", |r| r.get::<_, Option<Vec<u8>>>(0))?;
            return Err(StoreError::SeedExists);
        }
        Ok(())
    }

    fn seed(&self) -> Result<Option<[u8; 32]>, StoreError> {
        let seed: Option<Vec<u8>> = meta_row(&self.lock(), "seed", |r| r.get(0))?;
        seed.map(|s| {
            <[u8; 32]>::try_from(s.as_slice())
                .map_err(|_| corrupt(format!("seed: {} bytes, not 32", s.len())))
        })
        .transpose()
    }

    fn next_key_index(&self) -> Result<u32, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let index: u32 = meta_row(&tx, "next_key_index", |r| r.get(0))?;
        let next = index.checked_add(1).ok_or(StoreError::KeyIndexExhausted(index))?;
        tx.execute("UPDATE meta SET next_key_index = ?1 WHERE id = 0", params![next])?;
        tx.commit()?;
        Ok(index)
    }

    fn put_deposit(&self, d: &DepositRecord) -> Result<(), StoreError> {
        let amount = check_int("deposit amount", d.txout.value.to_sat())?;
        let (kind, arg) = status_to_sql(&d.status)?;
        self.lock().execute(
            &format!("INSERT OR REPLACE INTO deposits ({DEPOSIT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"),
            params![
                d.outpoint.txid.to_byte_array(),
                d.outpoint.vout,
                amount,
                d.txout.script_pubkey.as_bytes(),
                d.key_index,
                d.deposit_csv,
                kind,
                arg
            ],
        )?;
        Ok(())
    }

    fn deposit(&self, outpoint: &OutPoint) -> Result<Option<DepositRecord>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT {DEPOSIT_COLUMNS} FROM deposits WHERE txid = ?1 AND vout = ?2"
        ))?;
        let mut rows = stmt.query(params![outpoint.txid.to_byte_array(), outpoint.vout])?;
        rows.next()?.map(deposit_from_row).transpose()
    }

    fn deposits(&self) -> Result<Vec<DepositRecord>, StoreError> {
        let conn = self.lock();
        let mut stmt =
            conn.prepare(&format!("SELECT {DEPOSIT_COLUMNS} FROM deposits ORDER BY txid, vout"))?;
        let mut rows = stmt.query([])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            out.push(deposit_from_row(row)?);
        }
        Ok(out)
    }

    fn set_deposit_status(
        &self,
        outpoint: &OutPoint,
        status: &DepositStatus,
    ) -> Result<(), StoreError> {
        let (kind, arg) = status_to_sql(status)?;
        let changed = self.lock().execute(
            "UPDATE deposits SET status = ?3, status_arg = ?4 WHERE txid = ?1 AND vout = ?2",
            params![outpoint.txid.to_byte_array(), outpoint.vout, kind, arg],
        )?;
        if changed == 0 {
            return Err(StoreError::NotFound { what: format!("deposit {outpoint}") });
        }
        Ok(())
    }

    fn store_exit_paths(&self, paths: &[ExitPathRecord]) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare(&format!(
                "INSERT INTO exit_paths ({PATH_COLUMNS}) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) \
                 ON CONFLICT (funding_txid, leaf) DO UPDATE SET round = excluded.round, \
                 batch = excluded.batch, leaf_amount_sat = excluded.leaf_amount_sat, \
                 leaf_script_pubkey = excluded.leaf_script_pubkey, node = excluded.node, \
                 vout = excluded.vout, path = excluded.path, \
                 leaf_key_index = excluded.leaf_key_index, exit_csv = excluded.exit_csv"
            ))?;
            for p in paths {
                stmt.execute(params![
                    p.funding_txid.to_byte_array(),
                    p.leaf,
                    check_int("exit path round", p.round)?,
                    p.batch,
                    check_int("leaf amount", p.leaf_output.value.to_sat())?,
                    p.leaf_output.script_pubkey.as_bytes(),
                    p.node,
                    p.vout,
                    serialize(&p.path),
                    p.leaf_key_index,
                    p.exit_csv,
                ])?;
            }
        }
        // With synchronous=FULL the commit is fsynced before it returns.
        tx.commit()?;
        Ok(())
    }

    fn exit_paths(&self) -> Result<Vec<ExitPathRecord>, StoreError> {
        self.query_paths("")
    }

    fn pending_exit_paths(&self) -> Result<Vec<ExitPathRecord>, StoreError> {
        self.query_paths("WHERE exited = 0")
    }

    fn exit_path(
        &self,
        funding_txid: &Txid,
        leaf: u32,
    ) -> Result<Option<ExitPathRecord>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT {PATH_COLUMNS} FROM exit_paths WHERE funding_txid = ?1 AND leaf = ?2"
        ))?;
        let mut rows = stmt.query(params![funding_txid.to_byte_array(), leaf])?;
        rows.next()?.map(path_from_row).transpose()
    }

    fn mark_exited(&self, funding_txid: &Txid, leaf: u32) -> Result<(), StoreError> {
        let changed = self.lock().execute(
            "UPDATE exit_paths SET exited = 1 WHERE funding_txid = ?1 AND leaf = ?2",
            params![funding_txid.to_byte_array(), leaf],
        )?;
        if changed == 0 {
            return Err(no_path(funding_txid, leaf));
        }
        Ok(())
    }

    fn is_exited(&self, funding_txid: &Txid, leaf: u32) -> Result<bool, StoreError> {
        let exited: Option<bool> = self
            .lock()
            .query_row(
                "SELECT exited FROM exit_paths WHERE funding_txid = ?1 AND leaf = ?2",
                params![funding_txid.to_byte_array(), leaf],
                |r| r.get(0),
            )
            .optional()?;
        exited.ok_or_else(|| no_path(funding_txid, leaf))
    }

    fn append_history(&self, event: &HistoryEvent) -> Result<(), StoreError> {
        let round = event.round.map(|r| check_int("history round", r)).transpose()?;
        self.lock().execute(
            "INSERT INTO history (at_ms, round, kind, detail) VALUES (?1, ?2, ?3, ?4)",
            params![check_int("history time", event.at_ms)?, round, event.kind, event.detail],
        )?;
        Ok(())
    }

    fn history(&self, limit: usize) -> Result<Vec<HistoryEvent>, StoreError> {
        let n = limit.min(MAX_HISTORY_READ);
        let conn = self.lock();
        let mut stmt = conn
            .prepare("SELECT at_ms, round, kind, detail FROM history ORDER BY id DESC LIMIT ?1")?;
        let mut rows = stmt.query(params![n as i64])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            out.push(HistoryEvent {
                at_ms: get_u64(row, 0, "history time")?,
                round: get_opt_u64(row, 1, "history round")?,
                kind: row.get(2)?,
                detail: row.get(3)?,
            });
        }
        Ok(out)
    }

    fn set_setting(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.lock().execute(
            "INSERT INTO settings (key, value) VALUES (?1, ?2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .lock()
            .query_row("SELECT value FROM settings WHERE key = ?1", params![key], |r| r.get(0))
            .optional()?)
    }

    fn put_withdrawal(&self, withdrawal: &WithdrawalRecord) -> Result<(), StoreError> {
        let txid = withdrawal.tx.compute_txid();
        self.lock().execute(
            "INSERT INTO withdrawals (txid, tx, at_ms) VALUES (?1, ?2, ?3) \
             ON CONFLICT (txid) DO NOTHING",
            params![
                txid.to_byte_array(),
                serialize(&withdrawal.tx),
                check_int("withdrawal time", withdrawal.at_ms)?
            ],
        )?;
        Ok(())
    }

    fn withdrawals(&self) -> Result<Vec<WithdrawalRecord>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare("SELECT txid, tx, at_ms FROM withdrawals ORDER BY id")?;
        let mut rows = stmt.query([])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let txid: Vec<u8> = row.get(0)?;
            let txid = txid_from(&txid, "withdrawal txid")?;
            let bytes: Vec<u8> = row.get(1)?;
            let tx = cohort_common::store::tx_from(&bytes, || format!("withdrawal {txid}"))?;
            if tx.compute_txid() != txid {
                return Err(corrupt(format!(
                    "withdrawal {txid}: the transaction has another txid"
                )));
            }
            let at_ms: i64 = row.get(2)?;
            let at_ms = u64::try_from(at_ms)
                .map_err(|_| corrupt(format!("withdrawal {txid}: time {at_ms}")))?;
            out.push(WithdrawalRecord { tx, at_ms });
        }
        Ok(out)
    }

    fn put_exit_child(&self, record: &ExitChildRecord) -> Result<(), StoreError> {
        record.check()?;
        self.lock().execute(
            "INSERT INTO exit_children (node_txid, child, fee_input_sat, height) \
             VALUES (?1, ?2, ?3, ?4) ON CONFLICT (node_txid) DO UPDATE SET \
             child = excluded.child, fee_input_sat = excluded.fee_input_sat, \
             height = excluded.height",
            params![
                record.node_txid.to_byte_array(),
                serialize(&record.child),
                check_int("exit child fee input", record.fee_input_value.to_sat())?,
                record.height
            ],
        )?;
        Ok(())
    }

    fn exit_child(&self, node_txid: &Txid) -> Result<Option<ExitChildRecord>, StoreError> {
        let conn = self.lock();
        let row = conn
            .query_row(
                "SELECT child, fee_input_sat, height FROM exit_children WHERE node_txid = ?1",
                params![node_txid.to_byte_array()],
                |row| Ok((row.get::<_, Vec<u8>>(0)?, row.get::<_, i64>(1)?, row.get::<_, i64>(2)?)),
            )
            .optional()?;
        let Some((bytes, fee_input, height)) = row else { return Ok(None) };
        let what = || format!("exit child of node {node_txid}");
        let child = cohort_common::store::tx_from(&bytes, what)?;
        let fee_input_value = amount_from(fee_input, "exit child fee input")?;
        let height =
            u32::try_from(height).map_err(|_| corrupt(format!("{}: height {height}", what())))?;
        let record = ExitChildRecord { node_txid: *node_txid, child, fee_input_value, height };
        record.check().map_err(|_| corrupt(format!("{}: not a CPFP child", what())))?;
        Ok(Some(record))
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::super::contract;
    use super::*;

    use cohort_common::sqlite::TempDir;

    fn raw(path: &Path) -> Connection {
        Connection::open(path).unwrap()
    }

    #[test]
    fn contract() {
        let dir = TempDir::new("participant-contract").unwrap();
        let n = Cell::new(0);
        contract::run_all(|| {
            n.set(n.get() + 1);
            SqliteStore::open(dir.file(&format!("{}.sqlite", n.get()))).unwrap()
        });
    }

    #[test]
    fn reopen_finds_everything_and_never_reuses_a_key_index() {
        let dir = TempDir::new("participant-reopen").unwrap();
        let path = dir.file("store.sqlite");
        contract::populate(&SqliteStore::open(&path).unwrap());
        let store = SqliteStore::open(&path).unwrap();
        contract::assert_populated(&store);
        let last = store.next_key_index().unwrap();
        drop(store);
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.next_key_index().unwrap(), last + 1);
    }

    #[test]
    fn connection_settings() {
        let dir = TempDir::new("participant-pragmas").unwrap();
        let store = SqliteStore::open(dir.file("s.sqlite")).unwrap();
        let conn = store.lock();
        let get = |pragma: &str| -> String {
            conn.query_row(&format!("PRAGMA {pragma}"), [], |r| {
                r.get::<_, Value>(0).map(|v| format!("{v:?}"))
            })
            .unwrap()
        };
        assert_eq!(get("journal_mode"), r#"Text("wal")"#);
        assert_eq!(get("synchronous"), "Integer(2)");
        assert_eq!(get("foreign_keys"), "Integer(1)");
        assert_eq!(get("busy_timeout"), "Integer(5000)");
    }

    #[cfg(unix)]
    #[test]
    fn files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new("participant-mode").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;

        let path = dir.file("new.sqlite");
        let store = SqliteStore::open(&path).unwrap();
        store.init_seed([1; 32]).unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.file("new.sqlite-wal")), 0o600);
        assert_eq!(mode(&dir.file("new.sqlite-shm")), 0o600);

        // A file someone left readable is tightened on open.
        let loose = dir.file("loose.sqlite");
        std::fs::write(&loose, b"").unwrap();
        std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
        SqliteStore::open(&loose).unwrap();
        assert_eq!(mode(&loose), 0o600);
    }

    #[test]
    fn empty_file_is_migrated_to_current() {
        let dir = TempDir::new("participant-empty").unwrap();
        let path = dir.file("empty.sqlite");
        std::fs::write(&path, b"").unwrap();
        SqliteStore::open(&path).unwrap();
        let version: i64 = raw(&path).query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
    }

    #[test]
    fn older_schema_is_migrated_keeping_data() {
        let dir = TempDir::new("participant-older").unwrap();
        let path = dir.file("s.sqlite");
        SqliteStore::open(&path).unwrap().init_seed([3; 32]).unwrap();

        let mut newer = MIGRATIONS.to_vec();
        newer.push("CREATE TABLE extra (x INTEGER NOT NULL); INSERT INTO extra VALUES (5);");
        let store = SqliteStore::open_with(&path, &newer).unwrap();
        assert_eq!(store.seed().unwrap(), Some([3; 32]));
        let conn = store.lock();
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(version, newer.len() as i64);
        let x: i64 = conn.query_row("SELECT x FROM extra", [], |r| r.get(0)).unwrap();
        assert_eq!(x, 5);
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = TempDir::new("participant-newer").unwrap();
        let path = dir.file("s.sqlite");
        drop(SqliteStore::open(&path).unwrap());
        raw(&path).pragma_update(None, "user_version", 7).unwrap();
        let supported = MIGRATIONS.len() as u32;
        assert!(matches!(
            SqliteStore::open(&path),
            Err(StoreError::NewerSchema { found: 7, supported: s }) if s == supported
        ));
    }

    #[test]
    fn failed_migration_leaves_the_old_version() {
        let dir = TempDir::new("participant-failed").unwrap();
        let path = dir.file("s.sqlite");
        drop(SqliteStore::open(&path).unwrap());
        let mut broken = MIGRATIONS.to_vec();
        broken.push("CREATE TABLE extra (x); THIS IS NOT SQL;");
        assert!(matches!(SqliteStore::open_with(&path, &broken), Err(StoreError::Sqlite(_))));
        let conn = raw(&path);
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
        let extra: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_master WHERE name = 'extra'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(extra, 0);
    }

    #[test]
    fn damaged_values_are_corrupt_not_panics() {
        let dir = TempDir::new("participant-corrupt").unwrap();
        let path = dir.file("s.sqlite");
        let store = SqliteStore::open(&path).unwrap();
        contract::populate(&store);
        let corrupt = |sql: &str, check: &dyn Fn(&SqliteStore) -> Result<(), StoreError>| {
            let conn = store.lock();
            conn.execute_batch(&format!("SAVEPOINT damage; {sql}")).unwrap();
            drop(conn);
            let result = check(&store);
            store.lock().execute_batch("ROLLBACK TO damage; RELEASE damage;").unwrap();
            assert!(matches!(result, Err(StoreError::Corrupt { .. })), "{sql}: {result:?}");
        };
        let paths = |s: &SqliteStore| s.exit_paths().map(drop);
        corrupt("UPDATE exit_paths SET path = x'0102ff'", &paths);
        corrupt("UPDATE exit_paths SET path = x''", &paths);
        corrupt("UPDATE exit_paths SET funding_txid = x'00'", &paths);
        corrupt("UPDATE exit_paths SET leaf_amount_sat = -1", &paths);
        corrupt("UPDATE exit_paths SET vout = 'text'", &paths);
        corrupt("UPDATE exit_paths SET exit_csv = 70000", &paths);
        let deposits = |s: &SqliteStore| s.deposits().map(drop);
        corrupt("UPDATE deposits SET status = 'gone'", &deposits);
        corrupt("UPDATE deposits SET status_arg = x'01'", &deposits);
        corrupt("UPDATE deposits SET status = 'registered', status_arg = -4", &deposits);
        corrupt("UPDATE deposits SET key_index = -1", &deposits);
        corrupt("UPDATE meta SET seed = x'0102'", &|s| s.seed().map(drop));
        // next_key_index opens its own transaction, so damage and repair by hand.
        store.lock().execute_batch("UPDATE meta SET next_key_index = -1").unwrap();
        assert!(matches!(store.next_key_index(), Err(StoreError::Corrupt { .. })));
        store.lock().execute_batch("UPDATE meta SET next_key_index = 2").unwrap();
        corrupt("UPDATE history SET round = -1", &|s| s.history(5).map(drop));
        // Found by the participant_store fuzz target: without its meta row the store
        // answered with a bare SQLite error, and init_seed claimed a seed existed.
        corrupt("DELETE FROM meta", &|s| s.seed().map(drop));
        corrupt("DELETE FROM meta", &|s| s.init_seed([1; 32]));
        // Found by the participant_store fuzz target: text that is not UTF-8.
        corrupt("UPDATE settings SET value = CAST(x'ff' AS TEXT)", &|s| {
            s.setting("coordinator").map(drop)
        });
        corrupt("UPDATE history SET kind = CAST(x'c5f6' AS TEXT)", &|s| s.history(5).map(drop));
        // next_key_index opens its own transaction: keep the row aside and put it back.
        store
            .lock()
            .execute_batch("CREATE TEMP TABLE kept AS SELECT * FROM meta; DELETE FROM meta")
            .unwrap();
        let result = store.next_key_index();
        store.lock().execute_batch("INSERT INTO meta SELECT * FROM kept; DROP TABLE kept").unwrap();
        assert!(matches!(result, Err(StoreError::Corrupt { .. })), "{result:?}");
        // Nothing was left damaged.
        contract::assert_populated(&store);
    }
}
