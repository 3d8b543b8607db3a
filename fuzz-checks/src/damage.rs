//! Damage to a real SQLite store file, described by fuzz input: the store targets write
//! arbitrary values into a valid store's columns through a second connection, then read
//! everything back through the store's public API.
//!
//! A store's decoders are private, so this is how the fuzzer reaches them: a [`Schema`]
//! names each table's columns and primary key, a [`Snapshot`] puts the valid rows back
//! before every input, and each [`Damage`] sets, patches, deletes or copies one row.

use arbitrary::Arbitrary;
use rusqlite::types::Value;
use rusqlite::{params_from_iter, Connection};

/// One table as the damage sees it.
#[derive(Debug)]
pub struct Table {
    /// Its name.
    pub name: &'static str,
    /// Every column, in declaration order.
    pub columns: &'static [&'static str],
    /// The primary-key columns, which pick a row.
    pub key: &'static [&'static str],
}

/// The tables a store keeps.
pub type Schema = &'static [Table];

/// A value to write into a column, as SQLite stores it.
#[derive(Debug, Clone, Arbitrary)]
pub enum Cell {
    /// SQL `NULL`.
    Null,
    /// A 64-bit integer (SQLite's only integer type).
    Integer(i64),
    /// A double.
    Real(f64),
    /// Text (SQLite keeps any bytes; these are valid UTF-8).
    Text(String),
    /// Raw bytes.
    Blob(Vec<u8>),
    /// Text of arbitrary bytes, which may not be UTF-8.
    RawText(Vec<u8>),
}

/// One change to the store file.
#[derive(Debug, Clone, Arbitrary)]
pub enum Damage {
    /// Sets one column of one row (or of every row when `row` is 0).
    Set {
        /// Table and column, reduced modulo their counts.
        table: u8,
        /// Column index.
        column: u8,
        /// Row number in key order, from 1; 0 means every row.
        row: u8,
        /// The new value.
        value: Cell,
    },
    /// Overwrites bytes of a stored blob or text from `at` on, then cuts it to `len` bytes
    /// when `len` is set: small edits of a valid transaction reach deep into its decoder.
    Patch {
        /// Table index.
        table: u8,
        /// Column index.
        column: u8,
        /// Row number in key order, from 1.
        row: u8,
        /// Where the new bytes go, modulo the value's length plus one.
        at: u16,
        /// The bytes written there.
        bytes: Vec<u8>,
        /// Length to cut the result to.
        len: Option<u16>,
    },
    /// Deletes one row.
    Delete {
        /// Table index.
        table: u8,
        /// Row number in key order, from 1.
        row: u8,
    },
    /// Inserts a copy of one row with one column changed (a second record, an orphan).
    Copy {
        /// Table index.
        table: u8,
        /// Row number in key order, from 1.
        row: u8,
        /// The column changed in the copy.
        column: u8,
        /// Its value in the copy.
        value: Cell,
    },
}

/// Every row of every table of a valid store, to put back before each input.
#[derive(Debug)]
pub struct Snapshot {
    rows: Vec<(&'static Table, Vec<Vec<Value>>)>,
}

fn to_value(cell: &Cell) -> Value {
    match cell {
        Cell::Null => Value::Null,
        Cell::Integer(i) => Value::Integer(*i),
        Cell::Real(f) => Value::Real(*f),
        Cell::Text(s) => Value::Text(s.clone()),
        Cell::Blob(b) => Value::Blob(b.clone()),
        // rusqlite only binds `String` as text; the cast below keeps the bytes as they are.
        Cell::RawText(b) => Value::Blob(b.clone()),
    }
}

/// The SQL expression that binds `cell` as parameter `?1`.
fn placeholder(cell: &Cell) -> &'static str {
    match cell {
        Cell::RawText(_) => "CAST(?1 AS TEXT)",
        _ => "?1",
    }
}

fn pick<T>(items: &[T], index: u8) -> &T {
    &items[usize::from(index) % items.len()]
}

/// `WHERE` clause picking the `row`-th row (from 1) of `table` in key order.
fn nth_row(table: &Table, row: u8) -> String {
    let key = table.key.join(", ");
    format!(
        "({key}) IN (SELECT {key} FROM {name} ORDER BY {key} LIMIT 1 OFFSET {offset})",
        name = table.name,
        offset = u32::from(row).saturating_sub(1)
    )
}

impl Snapshot {
    /// Reads every row of `schema` from `conn`.
    pub fn take(conn: &Connection, schema: Schema) -> rusqlite::Result<Self> {
        let mut rows = Vec::new();
        for table in schema {
            let sql = format!("SELECT {} FROM {}", table.columns.join(", "), table.name);
            let mut stmt = conn.prepare(&sql)?;
            let width = table.columns.len();
            let table_rows = stmt
                .query_map([], |r| (0..width).map(|i| r.get::<_, Value>(i)).collect())?
                .collect::<rusqlite::Result<Vec<Vec<Value>>>>()?;
            rows.push((table, table_rows));
        }
        Ok(Snapshot { rows })
    }

    /// Empties every table and writes the snapshot's rows back, in one transaction.
    pub fn restore(&self, conn: &mut Connection) -> rusqlite::Result<()> {
        let tx = conn.transaction()?;
        for (table, _) in self.rows.iter().rev() {
            tx.execute(&format!("DELETE FROM {}", table.name), [])?;
        }
        for (table, rows) in &self.rows {
            let marks = vec!["?"; table.columns.len()].join(", ");
            let sql = format!(
                "INSERT INTO {} ({}) VALUES ({marks})",
                table.name,
                table.columns.join(", ")
            );
            let mut stmt = tx.prepare_cached(&sql)?;
            for row in rows {
                stmt.execute(params_from_iter(row.iter()))?;
            }
        }
        tx.commit()
    }
}

/// Applies each damage to `conn`, in one transaction. A change SQLite itself refuses (a
/// `NOT NULL` or key constraint) is skipped: the file can only hold what SQLite accepts.
pub fn apply(conn: &mut Connection, schema: Schema, damages: &[Damage]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    for damage in damages {
        let _refused = apply_one(&tx, schema, damage);
    }
    tx.commit()
}

fn apply_one(conn: &Connection, schema: Schema, damage: &Damage) -> rusqlite::Result<()> {
    match damage {
        Damage::Set { table, column, row, value } => {
            let table = pick(schema, *table);
            let column = pick(table.columns, *column);
            let filter = if *row == 0 { "1".to_owned() } else { nth_row(table, *row) };
            let sql = format!(
                "UPDATE {} SET {column} = {} WHERE {filter}",
                table.name,
                placeholder(value)
            );
            conn.execute(&sql, [to_value(value)]).map(drop)
        }
        Damage::Patch { table, column, row, at, bytes, len } => {
            let table = pick(schema, *table);
            let column = pick(table.columns, *column);
            let filter = nth_row(table, *row);
            let read = format!("SELECT {column} FROM {} WHERE {filter}", table.name);
            let old: Value = conn.query_row(&read, [], |r| r.get(0))?;
            let (mut data, text) = match old {
                Value::Blob(b) => (b, false),
                Value::Text(t) => (t.into_bytes(), true),
                _ => return Ok(()),
            };
            let at = usize::from(*at) % (data.len() + 1);
            let end = (at + bytes.len()).min(data.len());
            data.splice(at..end, bytes.iter().copied());
            if let Some(len) = len {
                data.truncate(usize::from(*len));
            }
            let cast = if text { "CAST(?1 AS TEXT)" } else { "?1" };
            let write = format!("UPDATE {} SET {column} = {cast} WHERE {filter}", table.name);
            conn.execute(&write, [Value::Blob(data)]).map(drop)
        }
        Damage::Delete { table, row } => {
            let table = pick(schema, *table);
            let sql = format!("DELETE FROM {} WHERE {}", table.name, nth_row(table, *row));
            conn.execute(&sql, []).map(drop)
        }
        Damage::Copy { table, row, column, value } => {
            let table = pick(schema, *table);
            let changed = pick(table.columns, *column);
            let select: Vec<&str> = table
                .columns
                .iter()
                .map(|c| if c == changed { placeholder(value) } else { c })
                .collect();
            let sql = format!(
                "INSERT INTO {name} ({columns}) SELECT {select} FROM {name} WHERE {filter}",
                name = table.name,
                columns = table.columns.join(", "),
                select = select.join(", "),
                filter = nth_row(table, *row)
            );
            conn.execute(&sql, [to_value(value)]).map(drop)
        }
    }
}
