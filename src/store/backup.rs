//! A copy of the SQLite database that is safe to take while `recwatch run` writes it
//! (`recwatch backup PATH`), and the WAL checkpoint at a clean stop.
//!
//! Copying the file with `cp` is not a backup: committed data sits in `-wal` until a
//! checkpoint, and a copy made during a write is torn. SQLite's online backup API copies the
//! pages as one read transaction sees them, so the copy is a consistent database whatever the
//! daemon does meanwhile; `VACUUM INTO` would do too, but rebuilds every table and index
//! (slower, and the copy is not page for page). The raw handles are borrowed from sqlx
//! (`lock_handle`), which keeps its worker thread off them while they are used here.

use super::{Database, StoreError};
use crate::exit::StartError;
use anyhow::Context as _;
use libsqlite3_sys as ffi;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions as _, Connection as _};
use std::ffi::{CStr, CString};
use std::path::Path;
use std::time::Duration;

/// What a finished backup holds, read back from the copy itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupDone {
    /// The tables in the copy (migrations' bookkeeping included).
    pub tables: i64,
    /// The copy's size in bytes.
    pub bytes: u64,
}

/// How long a backup waits out a busy source (a WAL reset by the daemon's checkpoint) before
/// it gives up; a read in WAL mode is otherwise never blocked by the writer.
const BUSY_WAIT: Duration = Duration::from_secs(10);

impl Database<'_> {
    /// Writes every committed change from the WAL into the database file and empties the
    /// WAL (`wal_checkpoint(TRUNCATE)`), so the file alone is the whole database: a copy of it
    /// after a clean stop has every table and row. For the owner at its clean stop only: a
    /// truncating checkpoint waits for other connections' readers and writers. A no-op on
    /// PostgreSQL.
    pub async fn checkpoint(self) -> Result<(), StoreError> {
        let Some(b) = self.store.backend.sqlite() else {
            return Ok(());
        };
        // (busy, log frames, frames checkpointed): busy = 1 is a checkpoint that could not
        // finish because another connection was reading.
        let (busy, _, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(&b.write)
            .await?;
        if busy != 0 {
            tracing::warn!(
                "the WAL checkpoint at shutdown could not finish (another process was reading the database); the file needs its -wal beside it until the next start"
            );
        }
        Ok(())
    }

    /// Copies the SQLite database into a new file at `dest` with SQLite's online backup API,
    /// safe while `run` writes it; the copy is written beside `dest` and renamed into place
    /// only when complete, so `dest` is either the whole backup or absent. `dest` must not
    /// exist (73). SQLite only: the caller tells PostgreSQL's users to use `pg_dump`.
    pub async fn backup_to(self, dest: &Path) -> anyhow::Result<BackupDone> {
        let Some(b) = self.store.backend.sqlite() else {
            anyhow::bail!("the database is on PostgreSQL: back it up with pg_dump");
        };
        if dest.exists() {
            return Err(StartError::cantcreat(format!(
                "{} exists; a backup never overwrites a file: give a new path (or move the old backup away)",
                dest.display()
            ))
            .into());
        }
        let dir = match dest.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        };
        // Private like the database itself (0600), in the same directory so the rename is
        // atomic.
        let partial = tempfile::Builder::new()
            .prefix(".recwatch-backup-")
            .tempfile_in(&dir)
            .map_err(|e| {
                StartError::cantcreat(format!(
                    "cannot create a file in {}: {e}; check that the directory exists and is writable",
                    dir.display()
                ))
            })?
            .into_temp_path();
        let c_dest = CString::new(partial.as_os_str().as_encoded_bytes())
            .context("the backup path has a NUL byte")?;
        let mut source = b.read.acquire().await?;
        let mut handle = source.lock_handle().await?;
        // SAFETY: the source handle is locked away from sqlx's worker while `handle` lives,
        // and `copy` opens and closes the destination itself.
        unsafe { copy(handle.as_raw_handle().as_ptr(), &c_dest) }
            .map_err(|e| anyhow::anyhow!("the backup of {} failed: {e}", b.path.display()))?;
        drop(handle);
        drop(source);
        let done = verify(&partial).await?;
        partial.persist_noclobber(dest).map_err(|e| {
            StartError::cantcreat(format!(
                "cannot move the finished backup to {}: {}",
                dest.display(),
                e.error
            ))
        })?;
        Ok(done)
    }
}

/// Copies the database behind `source` into a new database at `dest`, in one step: one read
/// transaction on the source, so the copy is consistent and the daemon's writes go on
/// meanwhile (WAL: a reader never blocks the writer). Several small steps would release the
/// source between them, and the daemon's next commit would restart the copy from the start.
///
/// # Safety
/// `source` is an open connection nobody else uses until this returns.
unsafe fn copy(source: *mut ffi::sqlite3, dest: &CStr) -> Result<(), String> {
    let mut db: *mut ffi::sqlite3 = std::ptr::null_mut();
    let main = c"main";
    // SAFETY (all calls below): `db` is ours from open to close; `source` per the contract.
    unsafe {
        let rc = ffi::sqlite3_open_v2(
            dest.as_ptr(),
            &mut db,
            ffi::SQLITE_OPEN_READWRITE | ffi::SQLITE_OPEN_CREATE,
            std::ptr::null(),
        );
        if rc != ffi::SQLITE_OK {
            let e = message(db);
            ffi::sqlite3_close(db);
            return Err(format!("cannot open the new file: {e}"));
        }
        let backup = ffi::sqlite3_backup_init(db, main.as_ptr(), source, main.as_ptr());
        if backup.is_null() {
            let e = message(db);
            ffi::sqlite3_close(db);
            return Err(e);
        }
        let started = std::time::Instant::now();
        let rc = loop {
            match ffi::sqlite3_backup_step(backup, -1) {
                ffi::SQLITE_BUSY | ffi::SQLITE_LOCKED if started.elapsed() < BUSY_WAIT => {
                    // A blocking wait is fine here: the command does nothing else, and the
                    // handles must not be given back to sqlx mid-copy.
                    std::thread::sleep(Duration::from_millis(50));
                }
                rc => break rc,
            }
        };
        let finished = ffi::sqlite3_backup_finish(backup);
        let result = match (rc, finished) {
            (ffi::SQLITE_DONE, ffi::SQLITE_OK) => Ok(()),
            (ffi::SQLITE_BUSY | ffi::SQLITE_LOCKED, _) => Err(format!(
                "the database stayed busy for {} s; try again",
                BUSY_WAIT.as_secs()
            )),
            _ => Err(message(db)),
        };
        ffi::sqlite3_close(db);
        result
    }
}

/// SQLite's message for the last error on `db`.
///
/// # Safety
/// `db` is an open connection, or null.
unsafe fn message(db: *mut ffi::sqlite3) -> String {
    if db.is_null() {
        return "out of memory".into();
    }
    // SAFETY: errmsg returns a NUL-terminated string owned by the connection.
    unsafe { CStr::from_ptr(ffi::sqlite3_errmsg(db)) }
        .to_string_lossy()
        .into_owned()
}

/// Checks the finished copy (`quick_check`, the tables), so a backup that would not restore
/// is reported now rather than on the day it is needed; and leaves it a single file (rollback
/// journal, not WAL), which any sqlite3 opens read-only and `run` turns back to WAL.
async fn verify(path: &Path) -> anyhow::Result<BackupDone> {
    let mut conn = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(false)
        .connect()
        .await
        .context("cannot open the finished backup to check it")?;
    sqlx::query("PRAGMA journal_mode = DELETE")
        .execute(&mut conn)
        .await?;
    let check: String = sqlx::query_scalar("PRAGMA quick_check")
        .fetch_one(&mut conn)
        .await?;
    let tables: i64 = sqlx::query_scalar("SELECT count(*) FROM sqlite_master WHERE type = 'table'")
        .fetch_one(&mut conn)
        .await?;
    conn.close().await?;
    if check != "ok" {
        anyhow::bail!("the finished backup fails SQLite's quick_check: {check}");
    }
    let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    Ok(BackupDone { tables, bytes })
}
