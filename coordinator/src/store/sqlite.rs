//! SQLite coordinator store: one file (plus its `-wal`/`-shm`, mode 0600 on unix since it
//! names participants' deposits), WAL journal with `synchronous=NORMAL`: a returned write
//! survives a crash of the process, and the last commits may be lost on power loss.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};

use bitcoin::consensus::serialize;
use bitcoin::hashes::Hash;
use bitcoin::{OutPoint, Transaction};
use cohort_common::sqlite::{open_private, Durability};
use rusqlite::types::Value;
use rusqlite::{params, Connection, OptionalExtension, Row, Transaction as SqlTx};

use super::{
    check_int, check_withdrawal, corrupt, tx_from, txid_from, BanRecord, BatchRecord, BatchStatus,
    CoordinatorStore, RegistrationRecord, RegistrationStatus, RoundRecord, RoundState, StoreError,
    WithdrawalRecord, MAX_ROUNDS_READ,
};

/// Schema migrations, in order; after applying the first `n`, `user_version` is `n`.
/// Append only: a released entry is never edited.
pub(crate) const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE rounds (
    round INTEGER PRIMARY KEY,
    params BLOB NOT NULL,
    started_at_ms INTEGER NOT NULL,
    state TEXT NOT NULL
);
CREATE TABLE registrations (
    round INTEGER NOT NULL REFERENCES rounds (round),
    registration INTEGER NOT NULL,
    body BLOB NOT NULL,
    status TEXT NOT NULL,
    status_arg,
    PRIMARY KEY (round, registration)
) WITHOUT ROWID;
CREATE TABLE registration_deposits (
    round INTEGER NOT NULL,
    registration INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    txid BLOB NOT NULL,
    vout INTEGER NOT NULL,
    PRIMARY KEY (round, registration, idx),
    FOREIGN KEY (round, registration)
        REFERENCES registrations (round, registration) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX registration_deposits_outpoint ON registration_deposits (txid, vout);
CREATE TABLE batches (
    round INTEGER NOT NULL REFERENCES rounds (round),
    batch INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    funding_tx BLOB NOT NULL,
    status TEXT NOT NULL,
    status_arg,
    finished INTEGER NOT NULL,
    tree_nodes INTEGER,
    PRIMARY KEY (round, batch, attempt)
) WITHOUT ROWID;
CREATE INDEX batches_unfinished ON batches (round, batch, attempt) WHERE finished = 0;
CREATE TABLE tree_nodes (
    round INTEGER NOT NULL,
    batch INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    node INTEGER NOT NULL,
    tx BLOB NOT NULL,
    PRIMARY KEY (round, batch, attempt, node),
    FOREIGN KEY (round, batch, attempt)
        REFERENCES batches (round, batch, attempt) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE TABLE bans (
    txid BLOB NOT NULL,
    vout INTEGER NOT NULL,
    until_ms INTEGER NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (txid, vout)
) WITHOUT ROWID;
"#,
    r#"
ALTER TABLE bans ADD COLUMN offences INTEGER NOT NULL DEFAULT 1;
"#,
    // A finalized attempt is watched until it confirms, across restarts.
    r#"
UPDATE batches SET finished = 0 WHERE status = 'finalized';
"#,
    // Co-signed cooperative withdrawals: their deposits join no round again.
    r#"
CREATE TABLE withdrawals (
    txid BLOB PRIMARY KEY NOT NULL,
    tx BLOB NOT NULL,
    prevouts BLOB NOT NULL,
    at_ms INTEGER NOT NULL
) WITHOUT ROWID;
"#,
];

/// A coordinator store in one SQLite file.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

impl SqliteStore {
    /// Opens the store at `path`, creating it and migrating it to the current schema. A
    /// file from a newer version is refused with [`StoreError::NewerSchema`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path.as_ref(), MIGRATIONS)
    }

    pub(crate) fn open_with(path: &Path, migrations: &[&str]) -> Result<Self, StoreError> {
        let conn = open_private::<StoreError>(path, migrations, Durability::Process)?;
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

fn round_state_to_sql(state: RoundState) -> &'static str {
    match state {
        RoundState::Registering => "registering",
        RoundState::Signing => "signing",
        RoundState::Finished => "finished",
        RoundState::Aborted => "aborted",
    }
}

fn round_state_from_sql(name: &str) -> Result<RoundState, StoreError> {
    Ok(match name {
        "registering" => RoundState::Registering,
        "signing" => RoundState::Signing,
        "finished" => RoundState::Finished,
        "aborted" => RoundState::Aborted,
        other => return Err(corrupt(format!("round state {other:?}"))),
    })
}

fn registration_status_to_sql(status: RegistrationStatus) -> (&'static str, Value) {
    match status {
        RegistrationStatus::Accepted => ("accepted", Value::Null),
        RegistrationStatus::InBatch(batch) => ("in_batch", Value::Integer(batch.into())),
        RegistrationStatus::Excluded => ("excluded", Value::Null),
        RegistrationStatus::Cancelled => ("cancelled", Value::Null),
        RegistrationStatus::Completed => ("completed", Value::Null),
    }
}

fn registration_status_from_sql(kind: &str, arg: Value) -> Result<RegistrationStatus, StoreError> {
    Ok(match (kind, arg) {
        ("accepted", Value::Null) => RegistrationStatus::Accepted,
        ("in_batch", Value::Integer(b)) => RegistrationStatus::InBatch(
            u32::try_from(b).map_err(|_| corrupt(format!("registration batch {b}")))?,
        ),
        ("excluded", Value::Null) => RegistrationStatus::Excluded,
        ("cancelled", Value::Null) => RegistrationStatus::Cancelled,
        ("completed", Value::Null) => RegistrationStatus::Completed,
        (kind, arg) => return Err(corrupt(format!("registration status {kind} with {arg:?}"))),
    })
}

fn batch_status_to_sql(status: &BatchStatus) -> (&'static str, Value) {
    match status {
        BatchStatus::Signing => ("signing", Value::Null),
        BatchStatus::TreeSigned => ("tree_signed", Value::Null),
        BatchStatus::Broadcasting => ("broadcasting", Value::Null),
        BatchStatus::Finalized { txid } => ("finalized", Value::Blob(txid.to_byte_array().into())),
        BatchStatus::Confirmed { height } => ("confirmed", Value::Integer((*height).into())),
        BatchStatus::Aborted { reason } => ("aborted", Value::Text(reason.clone())),
    }
}

fn batch_status_from_sql(kind: &str, arg: Value) -> Result<BatchStatus, StoreError> {
    Ok(match (kind, arg) {
        ("signing", Value::Null) => BatchStatus::Signing,
        ("tree_signed", Value::Null) => BatchStatus::TreeSigned,
        ("broadcasting", Value::Null) => BatchStatus::Broadcasting,
        ("finalized", Value::Blob(b)) => {
            BatchStatus::Finalized { txid: txid_from(&b, "finalized batch txid")? }
        }
        ("confirmed", Value::Integer(h)) => BatchStatus::Confirmed {
            height: u32::try_from(h).map_err(|_| corrupt(format!("confirmed height {h}")))?,
        },
        ("aborted", Value::Text(reason)) => BatchStatus::Aborted { reason },
        (kind, arg) => return Err(corrupt(format!("batch status {kind} with {arg:?}"))),
    })
}

const ROUND_COLUMNS: &str = "round, params, started_at_ms, state";

fn round_from_row(row: &Row<'_>) -> Result<RoundRecord, StoreError> {
    let state: String = row.get(3)?;
    Ok(RoundRecord {
        round: get_u64(row, 0, "round")?,
        params: row.get(1)?,
        started_at_ms: get_u64(row, 2, "round start")?,
        state: round_state_from_sql(&state)?,
    })
}

const BATCH_COLUMNS: &str = "round, batch, attempt, funding_tx, status, status_arg";

fn batch_from_row(row: &Row<'_>) -> Result<BatchRecord, StoreError> {
    let round = get_u64(row, 0, "batch round")?;
    let batch: u32 = row.get(1)?;
    let attempt: u32 = row.get(2)?;
    let funding: Vec<u8> = row.get(3)?;
    let kind: String = row.get(4)?;
    Ok(BatchRecord {
        round,
        batch,
        attempt,
        funding_tx: tx_from(&funding, || {
            format!("funding tx of batch {batch} attempt {attempt} of round {round}")
        })?,
        status: batch_status_from_sql(&kind, row.get(5)?)?,
    })
}

fn collect<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    f: impl Fn(&Row<'_>) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut stmt = conn.prepare(sql)?;
    let mut rows = stmt.query(params)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(f(row)?);
    }
    Ok(out)
}

fn round_exists(tx: &SqlTx<'_>, round: i64) -> Result<bool, StoreError> {
    Ok(tx
        .query_row("SELECT 1 FROM rounds WHERE round = ?1", params![round], |_| Ok(()))
        .optional()?
        .is_some())
}

fn no_batch(round: u64, batch: u32, attempt: u32) -> StoreError {
    StoreError::NotFound { what: format!("batch {batch} attempt {attempt} of round {round}") }
}

/// Reads the registrations of a round (or just one of them) with their deposits.
fn registrations(
    conn: &Connection,
    round: i64,
    registration: Option<i64>,
) -> Result<Vec<RegistrationRecord>, StoreError> {
    let filter = "round = ?1 AND (?2 IS NULL OR registration = ?2)";
    let mut regs = collect(
        conn,
        &format!(
            "SELECT round, registration, body, status, status_arg FROM registrations \
             WHERE {filter} ORDER BY registration"
        ),
        params![round, registration],
        |row| {
            let kind: String = row.get(3)?;
            Ok(RegistrationRecord {
                round: get_u64(row, 0, "registration round")?,
                registration: get_u64(row, 1, "registration")?,
                body: row.get(2)?,
                deposits: Vec::new(),
                status: registration_status_from_sql(&kind, row.get(4)?)?,
            })
        },
    )?;
    let index: BTreeMap<u64, usize> =
        regs.iter().enumerate().map(|(i, r)| (r.registration, i)).collect();
    let deposits = collect(
        conn,
        &format!(
            "SELECT registration, txid, vout FROM registration_deposits \
             WHERE {filter} ORDER BY registration, idx"
        ),
        params![round, registration],
        |row| {
            let txid: Vec<u8> = row.get(1)?;
            let outpoint =
                OutPoint { txid: txid_from(&txid, "registered deposit txid")?, vout: row.get(2)? };
            Ok((get_u64(row, 0, "registration")?, outpoint))
        },
    )?;
    for (registration, outpoint) in deposits {
        // The foreign key guarantees a parent; a missing one means the file was edited.
        let i = index.get(&registration).ok_or_else(|| {
            corrupt(format!("deposit of missing registration {registration} in round {round}"))
        })?;
        if let Some(r) = regs.get_mut(*i) {
            r.deposits.push(outpoint);
        }
    }
    Ok(regs)
}

impl CoordinatorStore for SqliteStore {
    fn put_round(&self, r: &RoundRecord) -> Result<(), StoreError> {
        self.lock().execute(
            &format!(
                "INSERT INTO rounds ({ROUND_COLUMNS}) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (round) DO UPDATE SET params = excluded.params, \
                 started_at_ms = excluded.started_at_ms, state = excluded.state"
            ),
            params![
                check_int("round", r.round)?,
                r.params,
                check_int("round start", r.started_at_ms)?,
                round_state_to_sql(r.state)
            ],
        )?;
        Ok(())
    }

    fn set_round_state(&self, round: u64, state: RoundState) -> Result<(), StoreError> {
        let changed = self.lock().execute(
            "UPDATE rounds SET state = ?2 WHERE round = ?1",
            params![check_int("round", round)?, round_state_to_sql(state)],
        )?;
        if changed == 0 {
            return Err(StoreError::NotFound { what: format!("round {round}") });
        }
        Ok(())
    }

    fn round(&self, round: u64) -> Result<Option<RoundRecord>, StoreError> {
        let round = check_int("round", round)?;
        let sql = format!("SELECT {ROUND_COLUMNS} FROM rounds WHERE round = ?1");
        Ok(collect(&self.lock(), &sql, params![round], round_from_row)?.pop())
    }

    fn recent_rounds(&self, limit: usize) -> Result<Vec<RoundRecord>, StoreError> {
        let n = limit.min(MAX_ROUNDS_READ) as i64;
        let sql = format!("SELECT {ROUND_COLUMNS} FROM rounds ORDER BY round DESC LIMIT ?1");
        collect(&self.lock(), &sql, params![n], round_from_row)
    }

    fn latest_round(&self) -> Result<Option<RoundRecord>, StoreError> {
        Ok(self.recent_rounds(1)?.pop())
    }

    fn put_registration(&self, r: &RegistrationRecord) -> Result<(), StoreError> {
        let round = check_int("round", r.round)?;
        let registration = check_int("registration", r.registration)?;
        let (kind, arg) = registration_status_to_sql(r.status);
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        if !round_exists(&tx, round)? {
            return Err(StoreError::NotFound { what: format!("round {}", r.round) });
        }
        tx.execute(
            "INSERT INTO registrations (round, registration, body, status, status_arg) \
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (round, registration) DO UPDATE SET \
             body = excluded.body, status = excluded.status, status_arg = excluded.status_arg",
            params![round, registration, r.body, kind, arg],
        )?;
        tx.execute(
            "DELETE FROM registration_deposits WHERE round = ?1 AND registration = ?2",
            params![round, registration],
        )?;
        {
            let mut stmt = tx.prepare(
                "INSERT INTO registration_deposits (round, registration, idx, txid, vout) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for (idx, d) in r.deposits.iter().enumerate() {
                let idx = i64::try_from(idx).map_err(|_| StoreError::OutOfRange {
                    what: "deposit count",
                    value: r.deposits.len() as u64,
                })?;
                stmt.execute(params![round, registration, idx, d.txid.to_byte_array(), d.vout])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn set_registration_status(
        &self,
        round: u64,
        registration: u64,
        status: RegistrationStatus,
    ) -> Result<(), StoreError> {
        let (kind, arg) = registration_status_to_sql(status);
        let changed = self.lock().execute(
            "UPDATE registrations SET status = ?3, status_arg = ?4 \
             WHERE round = ?1 AND registration = ?2",
            params![
                check_int("round", round)?,
                check_int("registration", registration)?,
                kind,
                arg
            ],
        )?;
        if changed == 0 {
            return Err(StoreError::NotFound {
                what: format!("registration {registration} of round {round}"),
            });
        }
        Ok(())
    }

    fn registration(
        &self,
        round: u64,
        registration: u64,
    ) -> Result<Option<RegistrationRecord>, StoreError> {
        let round = check_int("round", round)?;
        let registration = check_int("registration", registration)?;
        Ok(registrations(&self.lock(), round, Some(registration))?.pop())
    }

    fn registrations_of_round(&self, round: u64) -> Result<Vec<RegistrationRecord>, StoreError> {
        let round = check_int("round", round)?;
        registrations(&self.lock(), round, None)
    }

    fn registration_counts(
        &self,
        round: u64,
    ) -> Result<Vec<(RegistrationStatus, usize)>, StoreError> {
        let round = check_int("round", round)?;
        collect(
            &self.lock(),
            "SELECT status, status_arg, COUNT(*) FROM registrations WHERE round = ?1 \
             GROUP BY status, status_arg ORDER BY status, status_arg",
            params![round],
            |row| {
                let kind: String = row.get(0)?;
                let status = registration_status_from_sql(&kind, row.get(1)?)?;
                Ok((status, get_u64(row, 2, "registration count")? as usize))
            },
        )
    }

    fn put_batch(&self, b: &BatchRecord) -> Result<(), StoreError> {
        let round = check_int("round", b.round)?;
        let (kind, arg) = batch_status_to_sql(&b.status);
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        if !round_exists(&tx, round)? {
            return Err(StoreError::NotFound { what: format!("round {}", b.round) });
        }
        tx.execute(
            &format!(
                "INSERT INTO batches ({BATCH_COLUMNS}, finished) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
                 ON CONFLICT (round, batch, attempt) DO UPDATE SET \
                 funding_tx = excluded.funding_tx, status = excluded.status, \
                 status_arg = excluded.status_arg, finished = excluded.finished"
            ),
            params![
                round,
                b.batch,
                b.attempt,
                serialize(&b.funding_tx),
                kind,
                arg,
                b.status.is_finished()
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn set_batch_status(
        &self,
        round: u64,
        batch: u32,
        attempt: u32,
        status: &BatchStatus,
    ) -> Result<(), StoreError> {
        let (kind, arg) = batch_status_to_sql(status);
        let changed = self.lock().execute(
            "UPDATE batches SET status = ?4, status_arg = ?5, finished = ?6 \
             WHERE round = ?1 AND batch = ?2 AND attempt = ?3",
            params![check_int("round", round)?, batch, attempt, kind, arg, status.is_finished()],
        )?;
        if changed == 0 {
            return Err(no_batch(round, batch, attempt));
        }
        Ok(())
    }

    fn batches_of_round(&self, round: u64) -> Result<Vec<BatchRecord>, StoreError> {
        let round = check_int("round", round)?;
        let sql =
            format!("SELECT {BATCH_COLUMNS} FROM batches WHERE round = ?1 ORDER BY batch, attempt");
        collect(&self.lock(), &sql, params![round], batch_from_row)
    }

    fn unfinished_batches(&self) -> Result<Vec<BatchRecord>, StoreError> {
        let sql = format!(
            "SELECT {BATCH_COLUMNS} FROM batches WHERE finished = 0 \
             ORDER BY round, batch, attempt"
        );
        collect(&self.lock(), &sql, [], batch_from_row)
    }

    fn put_signed_tree(
        &self,
        round: u64,
        batch: u32,
        attempt: u32,
        nodes: &[Transaction],
    ) -> Result<(), StoreError> {
        let round_i = check_int("round", round)?;
        let count = u32::try_from(nodes.len()).map_err(|_| StoreError::OutOfRange {
            what: "tree nodes",
            value: nodes.len() as u64,
        })?;
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let changed = tx.execute(
            "UPDATE batches SET tree_nodes = ?4 WHERE round = ?1 AND batch = ?2 AND attempt = ?3",
            params![round_i, batch, attempt, count],
        )?;
        if changed == 0 {
            return Err(no_batch(round, batch, attempt));
        }
        tx.execute(
            "DELETE FROM tree_nodes WHERE round = ?1 AND batch = ?2 AND attempt = ?3",
            params![round_i, batch, attempt],
        )?;
        {
            let mut stmt = tx.prepare(
                "INSERT INTO tree_nodes (round, batch, attempt, node, tx) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for (node, t) in (0u32..).zip(nodes) {
                stmt.execute(params![round_i, batch, attempt, node, serialize(t)])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn signed_tree(&self, round: u64, batch: u32) -> Result<Option<Vec<Transaction>>, StoreError> {
        let round_i = check_int("round", round)?;
        let mut conn = self.lock();
        // One read transaction, so the count and the nodes agree.
        let tx = conn.transaction()?;
        let Some((attempt, count)): Option<(u32, u32)> = tx
            .query_row(
                "SELECT attempt, tree_nodes FROM batches WHERE round = ?1 AND batch = ?2 \
                 AND tree_nodes IS NOT NULL ORDER BY attempt DESC LIMIT 1",
                params![round_i, batch],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?
        else {
            return Ok(None);
        };
        let what =
            |node: u32| format!("node {node} of batch {batch} attempt {attempt} of round {round}");
        let nodes = collect(
            &tx,
            "SELECT node, tx FROM tree_nodes WHERE round = ?1 AND batch = ?2 AND attempt = ?3 \
             ORDER BY node",
            params![round_i, batch, attempt],
            |row| {
                let node: u32 = row.get(0)?;
                let bytes: Vec<u8> = row.get(1)?;
                Ok((node, tx_from(&bytes, || what(node))?))
            },
        )?;
        if nodes.len() != count as usize || nodes.iter().zip(0u32..).any(|((n, _), i)| *n != i) {
            return Err(corrupt(format!(
                "signed tree of batch {batch} attempt {attempt} of round {round}: \
                 {} nodes stored, {count} expected",
                nodes.len()
            )));
        }
        Ok(Some(nodes.into_iter().map(|(_, t)| t).collect()))
    }

    fn ban(
        &self,
        outpoint: &OutPoint,
        until_ms: u64,
        offences: u32,
        reason: &str,
    ) -> Result<(), StoreError> {
        self.lock().execute(
            "INSERT INTO bans (txid, vout, until_ms, reason, offences) \
             VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (txid, vout) DO UPDATE SET \
             until_ms = max(bans.until_ms, excluded.until_ms), \
             offences = max(bans.offences, excluded.offences), \
             reason = CASE WHEN excluded.until_ms > bans.until_ms \
                      THEN excluded.reason ELSE bans.reason END",
            params![
                outpoint.txid.to_byte_array(),
                outpoint.vout,
                check_int("ban end", until_ms)?,
                reason,
                offences
            ],
        )?;
        Ok(())
    }

    fn is_banned(&self, outpoint: &OutPoint, now_ms: u64) -> Result<bool, StoreError> {
        Ok(self
            .lock()
            .query_row(
                "SELECT 1 FROM bans WHERE txid = ?1 AND vout = ?2 AND until_ms > ?3",
                params![outpoint.txid.to_byte_array(), outpoint.vout, check_int("time", now_ms)?],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    fn bans(&self, now_ms: u64) -> Result<Vec<BanRecord>, StoreError> {
        collect(
            &self.lock(),
            "SELECT txid, vout, until_ms, reason, offences FROM bans WHERE until_ms > ?1 \
             ORDER BY txid, vout",
            params![check_int("time", now_ms)?],
            |row| {
                let txid: Vec<u8> = row.get(0)?;
                Ok(BanRecord {
                    outpoint: OutPoint { txid: txid_from(&txid, "ban txid")?, vout: row.get(1)? },
                    until_ms: get_u64(row, 2, "ban end")?,
                    offences: row.get(4)?,
                    reason: row.get(3)?,
                })
            },
        )
    }

    fn lift_ban(&self, outpoint: &OutPoint, now_ms: u64, reason: &str) -> Result<bool, StoreError> {
        let lifted = self.lock().execute(
            "UPDATE bans SET until_ms = ?3, reason = ?4 \
             WHERE txid = ?1 AND vout = ?2 AND until_ms > ?3",
            params![
                outpoint.txid.to_byte_array(),
                outpoint.vout,
                check_int("time", now_ms)?,
                reason
            ],
        )?;
        Ok(lifted > 0)
    }

    fn purge_expired_bans(&self, now_ms: u64) -> Result<usize, StoreError> {
        Ok(self.lock().execute(
            "DELETE FROM bans WHERE until_ms <= ?1",
            params![check_int("time", now_ms)?],
        )?)
    }

    fn put_withdrawal(&self, withdrawal: &WithdrawalRecord) -> Result<(), StoreError> {
        check_withdrawal(withdrawal)?;
        let txid = withdrawal.tx.compute_txid();
        self.lock().execute(
            "INSERT INTO withdrawals (txid, tx, prevouts, at_ms) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (txid) DO UPDATE SET prevouts = excluded.prevouts",
            params![
                txid.to_byte_array(),
                serialize(&withdrawal.tx),
                serialize(&withdrawal.prevouts),
                check_int("withdrawal time", withdrawal.at_ms)?
            ],
        )?;
        Ok(())
    }

    fn withdrawals(&self) -> Result<Vec<WithdrawalRecord>, StoreError> {
        collect(
            &self.lock(),
            "SELECT txid, tx, prevouts, at_ms FROM withdrawals ORDER BY at_ms, txid",
            [],
            |row| {
                let txid: Vec<u8> = row.get(0)?;
                let txid = txid_from(&txid, "withdrawal txid")?;
                let tx_bytes: Vec<u8> = row.get(1)?;
                let tx = tx_from(&tx_bytes, || format!("withdrawal {txid}"))?;
                let prevouts: Vec<u8> = row.get(2)?;
                let prevouts: Vec<bitcoin::TxOut> = cohort_common::bounded::decode(&prevouts)
                    .map_err(|e| corrupt(format!("withdrawal {txid} prevouts: {e}")))?;
                let record = WithdrawalRecord { tx, prevouts, at_ms: get_u64(row, 3, "at_ms")? };
                if record.tx.compute_txid() != txid || check_withdrawal(&record).is_err() {
                    return Err(corrupt(format!("withdrawal {txid}: record does not match")));
                }
                Ok(record)
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::super::contract;
    use super::*;

    use cohort_common::sqlite::TempDir;

    fn user_version(conn: &Connection) -> i64 {
        cohort_common::sqlite::user_version(conn).unwrap().into()
    }

    #[test]
    fn contract() {
        let dir = TempDir::new("coordinator-contract").unwrap();
        let n = Cell::new(0);
        contract::run_all(|| {
            n.set(n.get() + 1);
            SqliteStore::open(dir.file(&format!("{}.sqlite", n.get()))).unwrap()
        });
    }

    #[test]
    fn reopen_finds_everything() {
        let dir = TempDir::new("coordinator-reopen").unwrap();
        let path = dir.file("store.sqlite");
        contract::populate(&SqliteStore::open(&path).unwrap());
        contract::assert_populated(&SqliteStore::open(&path).unwrap());
    }

    #[test]
    fn connection_settings() {
        let dir = TempDir::new("coordinator-pragmas").unwrap();
        let store = SqliteStore::open(dir.file("s.sqlite")).unwrap();
        let conn = store.lock();
        let get = |pragma: &str| -> String {
            conn.query_row(&format!("PRAGMA {pragma}"), [], |r| {
                r.get::<_, Value>(0).map(|v| format!("{v:?}"))
            })
            .unwrap()
        };
        assert_eq!(get("journal_mode"), r#"Text("wal")"#);
        assert_eq!(get("synchronous"), "Integer(1)");
        assert_eq!(get("foreign_keys"), "Integer(1)");
        assert_eq!(get("busy_timeout"), "Integer(5000)");
    }

    #[cfg(unix)]
    #[test]
    fn new_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new("coordinator-mode").unwrap();
        let path = dir.file("s.sqlite");
        SqliteStore::open(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn empty_file_is_migrated_to_current() {
        let dir = TempDir::new("coordinator-empty").unwrap();
        let path = dir.file("empty.sqlite");
        std::fs::write(&path, b"").unwrap();
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(user_version(&store.lock()), MIGRATIONS.len() as i64);
    }

    #[test]
    fn older_schema_is_migrated_keeping_data() {
        let dir = TempDir::new("coordinator-older").unwrap();
        let path = dir.file("s.sqlite");
        contract::populate(&SqliteStore::open(&path).unwrap());
        let mut newer = MIGRATIONS.to_vec();
        newer.push("ALTER TABLE rounds ADD COLUMN note TEXT NOT NULL DEFAULT 'v2';");
        let store = SqliteStore::open_with(&path, &newer).unwrap();
        contract::assert_populated(&store);
        let conn = store.lock();
        assert_eq!(user_version(&conn), newer.len() as i64);
        let note: String = conn.query_row("SELECT note FROM rounds", [], |r| r.get(0)).unwrap();
        assert_eq!(note, "v2");
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = TempDir::new("coordinator-newer").unwrap();
        let path = dir.file("s.sqlite");
        drop(SqliteStore::open(&path).unwrap());
        Connection::open(&path).unwrap().pragma_update(None, "user_version", 9).unwrap();
        let supported = MIGRATIONS.len() as u32;
        assert!(matches!(
            SqliteStore::open(&path),
            Err(StoreError::NewerSchema { found: 9, supported: s }) if s == supported
        ));
    }

    #[test]
    fn damaged_values_are_corrupt_not_panics() {
        let dir = TempDir::new("coordinator-corrupt").unwrap();
        let n = Cell::new(0);
        // Each case damages its own freshly populated store.
        let check = |damage: &str, read: &dyn Fn(&SqliteStore) -> Result<(), StoreError>| {
            n.set(n.get() + 1);
            let store = SqliteStore::open(dir.file(&format!("{}.sqlite", n.get()))).unwrap();
            contract::populate(&store);
            store.lock().execute_batch(damage).unwrap();
            let result = read(&store);
            assert!(matches!(result, Err(StoreError::Corrupt { .. })), "{damage}: {result:?}");
        };
        check("UPDATE rounds SET state = 'paused'", &|s| s.latest_round().map(drop));
        check("UPDATE rounds SET started_at_ms = -5", &|s| s.round(8).map(drop));
        check("UPDATE registrations SET status_arg = 'x'", &|s| {
            s.registrations_of_round(8).map(drop)
        });
        check("UPDATE registration_deposits SET txid = x'00'", &|s| s.registration(8, 1).map(drop));
        check("UPDATE batches SET funding_tx = x'020000'", &|s| s.unfinished_batches().map(drop));
        check("UPDATE batches SET status = 'finalized', status_arg = 3", &|s| {
            s.batches_of_round(8).map(drop)
        });
        let tree = |s: &SqliteStore| s.signed_tree(8, 0).map(drop);
        check("UPDATE tree_nodes SET tx = x'ff' WHERE node = 2", &tree);
        check("UPDATE batches SET tree_nodes = 5", &tree);
        check("UPDATE tree_nodes SET node = 7 WHERE node = 3", &tree);
        check("UPDATE bans SET until_ms = 'soon'", &|s| s.bans(0).map(drop));
        // Found by the coordinator_store fuzz target: text that is not UTF-8.
        check("UPDATE registrations SET status = CAST(x'ff' AS TEXT)", &|s| {
            s.registrations_of_round(8).map(drop)
        });
        check("UPDATE bans SET reason = CAST(x'ff' AS TEXT)", &|s| s.bans(0).map(drop));
    }
}
