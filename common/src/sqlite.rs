//! Opening a store's SQLite file the one way both stores do: created owner-only, WAL,
//! a busy timeout, foreign keys, and versioned migrations (feature `sqlite`).

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

/// Why a store file could not be opened, beyond SQLite's own errors.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Creating the file or setting its permissions failed.
    #[error("store file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// SQLite would not switch to the WAL journal.
    #[error("could not enable WAL journal, got {0}")]
    NoWal(String),
    /// More migrations than a schema version can count.
    #[error("too many migrations")]
    TooManyMigrations,
    /// The file was written by a newer version of this program.
    #[error("store schema version {found} is newer than the {supported} this build supports")]
    NewerSchema {
        /// The file's `user_version`.
        found: u32,
        /// The newest schema version this build knows.
        supported: u32,
    },
}

/// How durable a commit is once it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous = NORMAL`: survives a crash of the process; the last commits may be
    /// lost on power loss.
    Process,
    /// `synchronous = FULL`: survives power loss.
    Power,
}

/// Opens (creating it, mode 0600 on unix, and tightening an existing file to 0600) the
/// SQLite file at `path` with the WAL journal, a 5 s busy timeout, foreign keys and
/// `durability`, then brings its schema up to `migrations.len()`. SQLite's own errors
/// go through the caller's `From<rusqlite::Error>`.
pub fn open_private<E>(
    path: &Path,
    migrations: &[&str],
    durability: Durability,
) -> Result<Connection, E>
where
    E: From<rusqlite::Error> + From<OpenError>,
{
    create_private(path)?;
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(OpenError::NoWal(mode).into());
    }
    let synchronous = match durability {
        Durability::Process => "NORMAL",
        Durability::Power => "FULL",
    };
    conn.pragma_update(None, "synchronous", synchronous)?;
    conn.pragma_update(None, "foreign_keys", true)?;
    migrate::<E>(&mut conn, migrations)?;
    Ok(conn)
}

/// Creates the file with owner-only permissions if it is missing, and tightens them if it
/// exists. SQLite gives the `-wal` and `-shm` files the database file's permissions.
fn create_private(path: &Path) -> Result<(), OpenError> {
    let io = |source| OpenError::Io { path: path.display().to_string(), source };
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        options.open(path).map_err(io)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    }
    #[cfg(not(unix))]
    options.open(path).map_err(io)?;
    Ok(())
}

/// Brings the schema from the file's `user_version` up to `migrations.len()`, one
/// transaction per step.
fn migrate<E>(conn: &mut Connection, migrations: &[&str]) -> Result<(), E>
where
    E: From<rusqlite::Error> + From<OpenError>,
{
    let supported = u32::try_from(migrations.len()).map_err(|_| OpenError::TooManyMigrations)?;
    let found: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > supported {
        return Err(OpenError::NewerSchema { found, supported }.into());
    }
    for (version, sql) in (1..=supported).zip(migrations).skip(found as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", version)?;
        tx.commit()?;
    }
    Ok(())
}

/// The file's schema version (`PRAGMA user_version`).
pub fn user_version(conn: &Connection) -> Result<u32, rusqlite::Error> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
}

/// A fresh directory under the system temp dir, removed with everything in it on drop:
/// where the stores' tests (and other crates' tests) put their SQLite files.
#[derive(Debug)]
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    /// Creates `<tmp>/cohort-<name>-<pid>-<nanos>`.
    pub fn new(name: &str) -> std::io::Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir =
            std::env::temp_dir().join(format!("cohort-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A file in the directory.
    pub fn file(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_private_migrates_and_refuses_newer_files() {
        let dir = TempDir::new("sqlite-open").unwrap();
        let path = dir.file("s.sqlite");
        let migrations = ["CREATE TABLE a (x INTEGER);", "CREATE TABLE b (y INTEGER);"];
        let conn: Connection =
            open_private::<StoreErr>(&path, &migrations, Durability::Power).unwrap();
        assert_eq!(user_version(&conn).unwrap(), 2);
        drop(conn);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let older = &migrations[..1];
        let err = open_private::<StoreErr>(&path, older, Durability::Power).unwrap_err();
        assert!(matches!(err, StoreErr::Open(OpenError::NewerSchema { found: 2, supported: 1 })));
        let path = dir.path().join("s.sqlite");
        assert!(path.exists());
        drop(dir);
        assert!(!path.exists(), "the directory goes with the TempDir");
    }

    #[derive(Debug)]
    enum StoreErr {
        Open(OpenError),
        Sqlite,
    }

    impl From<OpenError> for StoreErr {
        fn from(e: OpenError) -> Self {
            StoreErr::Open(e)
        }
    }

    impl From<rusqlite::Error> for StoreErr {
        fn from(_: rusqlite::Error) -> Self {
            StoreErr::Sqlite
        }
    }
}
