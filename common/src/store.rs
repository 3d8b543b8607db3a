//! What both stores share: one [`StoreError`], the rule for storable integers, and the
//! decoders of stored txids and transactions. Each store keeps its own schema.

use bitcoin::hashes::Hash;
use bitcoin::{Transaction, Txid};

/// Largest integer a store keeps in a 64-bit field (SQLite integers are signed).
pub const MAX_STORED_INT: u64 = i64::MAX as u64;

/// Errors from a coordinator or participant store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite reported an error (I/O, locking, constraint); the message is SQLite's.
    #[error("sqlite: {0}")]
    Sqlite(String),
    /// A stored value does not decode: the file was damaged or edited.
    #[error("corrupt store: {what}")]
    Corrupt {
        /// Which value, and what is wrong with it.
        what: String,
    },
    /// The file was written by a newer version of this program; refuse rather than guess.
    #[error("store schema version {found} is newer than the {supported} this build supports")]
    NewerSchema {
        /// The file's `user_version`.
        found: u32,
        /// The newest schema version this build knows.
        supported: u32,
    },
    /// The record to update, or the parent of the record to insert, does not exist.
    #[error("not found: {what}")]
    NotFound {
        /// Which record.
        what: String,
    },
    /// Creating or securing the store file failed.
    #[error("store file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// An integer is above [`MAX_STORED_INT`] and cannot be stored or looked up.
    #[error("{what} = {value} is above the storable maximum {MAX_STORED_INT}")]
    OutOfRange {
        /// Which field.
        what: &'static str,
        /// The value given.
        value: u64,
    },
    /// `init_seed` was called on a store that already holds a seed; it is never
    /// overwritten (participant stores).
    #[error("a seed is already stored; refusing to overwrite it")]
    SeedExists,
    /// Every key index has been handed out (participant stores).
    #[error("key index counter exhausted at {0}")]
    KeyIndexExhausted(u32),
    /// The caller asked to store a value the schema cannot hold (for example an empty
    /// list where one entry is the least).
    #[error("cannot store {0}")]
    Invalid(&'static str),
}

#[cfg(feature = "sqlite")]
impl From<crate::sqlite::OpenError> for StoreError {
    fn from(e: crate::sqlite::OpenError) -> Self {
        use crate::sqlite::OpenError;
        match e {
            OpenError::Io { path, source } => StoreError::Io { path, source },
            OpenError::NewerSchema { found, supported } => {
                StoreError::NewerSchema { found, supported }
            }
            other @ (OpenError::NoWal(_) | OpenError::TooManyMigrations) => {
                StoreError::Sqlite(other.to_string())
            }
        }
    }
}

#[cfg(feature = "sqlite")]
impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match e {
            // A column holding the wrong type, an out-of-range integer or text that is not
            // UTF-8 means the file was not written by us.
            rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::IntegralValueOutOfRange(..)
            | rusqlite::Error::Utf8Error(..) => StoreError::Corrupt { what: e.to_string() },
            other => StoreError::Sqlite(other.to_string()),
        }
    }
}

/// Checks that `value` fits a stored 64-bit integer; every backend applies the same rule.
pub fn check_int(what: &'static str, value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::OutOfRange { what, value })
}

/// A [`StoreError::Corrupt`] for `what`.
pub fn corrupt(what: impl Into<String>) -> StoreError {
    StoreError::Corrupt { what: what.into() }
}

/// Decodes a stored txid; `what` names it in the error.
pub fn txid_from(bytes: &[u8], what: &str) -> Result<Txid, StoreError> {
    let array: [u8; 32] =
        bytes.try_into().map_err(|_| corrupt(format!("{what}: {} bytes, not 32", bytes.len())))?;
    Ok(Txid::from_byte_array(array))
}

/// Decodes a stored consensus-encoded transaction; `what` names it in the error.
pub fn tx_from(bytes: &[u8], what: impl FnOnce() -> String) -> Result<Transaction, StoreError> {
    crate::bounded::decode(bytes).map_err(|e| corrupt(format!("{}: {e}", what())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storable_integers_stop_at_i64_max() {
        assert_eq!(check_int("x", MAX_STORED_INT).unwrap(), i64::MAX);
        assert!(matches!(
            check_int("x", MAX_STORED_INT + 1),
            Err(StoreError::OutOfRange { what: "x", .. })
        ));
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn text_that_is_not_utf8_is_corrupt() {
        // Found by both store fuzz targets: such text read as a `String` was a bare
        // SQLite error instead of a damaged-file report.
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let read = conn.query_row("SELECT CAST(x'ff' AS TEXT)", [], |r| r.get::<_, String>(0));
        let err = StoreError::from(read.unwrap_err());
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    }

    #[test]
    fn short_txids_and_garbage_transactions_are_corrupt() {
        assert!(matches!(txid_from(&[0; 31], "t"), Err(StoreError::Corrupt { .. })));
        assert!(txid_from(&[0; 32], "t").is_ok());
        let err = tx_from(&[1, 2, 3], || "funding".into()).unwrap_err();
        assert!(err.to_string().contains("funding"), "{err}");
    }
}
