//! The once-a-second batch of poll times on SQLite, written through SQLite's C API in one go.
//!
//! Through sqlx each row's `UPDATE` is a command to the connection's worker thread and an
//! answer back: with the budget lifted (thousands of touched rows a second) that hand-off was
//! two futex calls and more than one context switch per poll, most of the daemon's system
//! calls (BENCHMARKS.md part 27d), on cores the daemon shares with the API. Here the rows are
//! written by one prepared statement on the handle sqlx lends out (`lock_handle`, as `scan`
//! and the backup do), inside the caller's transaction, with the same statements and the
//! same outcome as the portable path in `jobs.rs` that PostgreSQL takes.

use super::StoreError;
use super::jobs::JobTouch;
use super::scan::{Statement, failed};
use crate::domain::timestamp;
use libsqlite3_sys as ffi;
use std::ffi::CStr;

/// The row's update when its failure count is 0 already: `consecutive_failures`, a column of
/// the index `jobs_by_phase`, stays out of the `SET` (see `Jobs::touch`).
const CLEAN: &CStr =
    c"UPDATE jobs SET description = ?1, snapshot = ?2, last_polled_at = ?3, last_ok_at = ?3,
        last_error = NULL, last_error_kind = NULL
 WHERE app_id = ?4 AND job_id = ?5 AND (last_polled_at IS NULL OR last_polled_at < ?3)
   AND consecutive_failures = 0";
/// The full update, for a row the first did not match.
const FULL: &CStr =
    c"UPDATE jobs SET description = ?1, snapshot = ?2, last_polled_at = ?3, last_ok_at = ?3,
        last_error = NULL, last_error_kind = NULL, consecutive_failures = 0
 WHERE app_id = ?4 AND job_id = ?5 AND (last_polled_at IS NULL OR last_polled_at < ?3)";

/// Writes `touches` on `c`, inside the transaction the caller holds on it.
pub(super) async fn touch_rows<'a>(
    c: &mut sqlx::SqliteConnection,
    touches: impl Iterator<Item = JobTouch<'a>>,
) -> Result<(), StoreError> {
    let touches: Vec<JobTouch<'a>> = touches.collect();
    let mut handle = c.lock_handle().await?;
    let db = handle.as_raw_handle().as_ptr();
    // SAFETY: `db` is locked away from sqlx's worker while `handle` lives, which is past the
    // end of `write`; the statements are prepared on it and finalized inside `write`.
    off_the_runtime(|| unsafe { write(db, &touches) })
}

/// Runs `f` where it may block: the batch is milliseconds of SQLite's work, which must not
/// hold up the tasks queued on this runtime thread (the dispatcher, the API's answers). On a
/// multi-threaded runtime the thread hands its tasks over first; a single-threaded one (tests)
/// has nobody to hand them to.
pub(super) fn off_the_runtime<R>(f: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// # Safety
/// `db` is an open handle this thread holds for the whole call.
unsafe fn write(db: *mut ffi::sqlite3, touches: &[JobTouch<'_>]) -> Result<(), StoreError> {
    // SAFETY: as the function's contract says; each bound text outlives the step that reads
    // it (bound as static, the statement reset before the next row's values).
    unsafe {
        let clean = prepare(db, CLEAN)?;
        let full = prepare(db, FULL)?;
        for t in touches {
            let at = timestamp(t.polled_at);
            for stmt in [&clean, &full] {
                bind(db, stmt, 1, t.description)?;
                bind(db, stmt, 2, Some(t.raw))?;
                bind(db, stmt, 3, Some(&at))?;
                bind(db, stmt, 4, Some(t.app_id))?;
                bind(db, stmt, 5, Some(t.job_id))?;
                let rc = ffi::sqlite3_step(stmt.0);
                ffi::sqlite3_reset(stmt.0);
                if rc != ffi::SQLITE_DONE {
                    return Err(failed(db, rc));
                }
                if ffi::sqlite3_changes(db) > 0 {
                    break;
                }
            }
        }
        Ok(())
    }
}

/// # Safety
/// `db` is an open handle this thread holds.
unsafe fn prepare(db: *mut ffi::sqlite3, sql: &CStr) -> Result<Statement, StoreError> {
    let mut stmt = std::ptr::null_mut();
    // SAFETY: as the function's contract says; `sql` is a C string.
    let rc =
        unsafe { ffi::sqlite3_prepare_v2(db, sql.as_ptr(), -1, &mut stmt, std::ptr::null_mut()) };
    if rc != ffi::SQLITE_OK {
        // SAFETY: as above.
        return Err(unsafe { failed(db, rc) });
    }
    Ok(Statement(stmt))
}

/// Binds `value` (NULL for `None`) as text to parameter `i`, without a copy.
///
/// # Safety
/// `stmt` was prepared on `db`; `value` lives until the statement is reset.
pub(super) unsafe fn bind(
    db: *mut ffi::sqlite3,
    stmt: &Statement,
    i: i32,
    value: Option<&str>,
) -> Result<(), StoreError> {
    // SAFETY: as the function's contract says.
    let rc = unsafe {
        match value {
            Some(v) => {
                let n = i32::try_from(v.len()).map_err(|_| {
                    StoreError::from(sqlx::Error::Protocol("a value over 2 GB".into()))
                })?;
                ffi::sqlite3_bind_text(stmt.0, i, v.as_ptr().cast(), n, ffi::SQLITE_STATIC())
            }
            None => ffi::sqlite3_bind_null(stmt.0, i),
        }
    };
    if rc != ffi::SQLITE_OK {
        // SAFETY: as above.
        return Err(unsafe { failed(db, rc) });
    }
    Ok(())
}
