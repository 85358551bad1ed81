//! A whole-table read of text columns straight from SQLite's C API, for the one read that
//! goes over every row (`recwatch status` at 100,000 jobs, issue 23 item 7): through sqlx each
//! row's values were copied on its worker thread and sent over a channel to the task, ~1.6 G
//! instructions for 100,000 rows, most of the command. Here each row's text is read in place
//! on the task's thread. The raw handle is borrowed from sqlx (`lock_handle`), as the backup
//! does, which keeps sqlx's worker off it meanwhile.

use super::{SqliteBackend, StoreError};
use libsqlite3_sys as ffi;
use std::ffi::CStr;

/// Runs `sql` (no parameters; `N` text columns) on a read connection and hands each row to
/// `each`, a column `None` for NULL. A column that is not UTF-8 fails the read, as sqlx's
/// decoding into `String` does.
pub(super) async fn each_text_row<const N: usize>(
    b: &SqliteBackend,
    sql: &CStr,
    mut each: impl FnMut([Option<&str>; N]),
) -> Result<(), StoreError> {
    let mut conn = b.read.acquire().await?;
    let mut handle = conn.lock_handle().await?;
    let db = handle.as_raw_handle().as_ptr();
    // SAFETY: `db` is locked away from sqlx's worker while `handle` lives (to the end of this
    // function); the statement is prepared on it and finalized by `Statement`'s drop before
    // then; each column's text is read before the next step, which is when SQLite may free it.
    unsafe {
        let mut stmt = std::ptr::null_mut();
        let rc = ffi::sqlite3_prepare_v2(db, sql.as_ptr(), -1, &mut stmt, std::ptr::null_mut());
        if rc != ffi::SQLITE_OK {
            return Err(failed(db, rc));
        }
        let stmt = Statement(stmt);
        loop {
            match ffi::sqlite3_step(stmt.0) {
                ffi::SQLITE_ROW => {
                    let mut row = [None; N];
                    for (i, cell) in row.iter_mut().enumerate() {
                        *cell = text(stmt.0, i as i32)?;
                    }
                    each(row);
                }
                ffi::SQLITE_DONE => return Ok(()),
                rc => return Err(failed(db, rc)),
            }
        }
    }
}

/// A prepared statement, finalized when dropped.
pub(super) struct Statement(pub(super) *mut ffi::sqlite3_stmt);

impl Drop for Statement {
    fn drop(&mut self) {
        // SAFETY: prepared on a handle still locked (`each_text_row`, `touch::write`);
        // finalized once.
        unsafe { ffi::sqlite3_finalize(self.0) };
    }
}

/// Column `i` of the current row as text, `None` for NULL.
///
/// # Safety
/// `stmt` has just stepped to a row; the text lives until the next step.
unsafe fn text<'r>(stmt: *mut ffi::sqlite3_stmt, i: i32) -> Result<Option<&'r str>, StoreError> {
    // SAFETY: as the function's contract says; the pointer and length are SQLite's for this
    // column, the length read after the text, as SQLite's documentation asks.
    unsafe {
        let p = ffi::sqlite3_column_text(stmt, i);
        if p.is_null() {
            return Ok(None);
        }
        let n = ffi::sqlite3_column_bytes(stmt, i) as usize;
        let bytes = std::slice::from_raw_parts(p, n);
        if bytes.is_ascii() {
            // ASCII is UTF-8: the common value checked in one short loop.
            return Ok(Some(std::str::from_utf8_unchecked(bytes)));
        }
        std::str::from_utf8(bytes)
            .map(Some)
            .map_err(|e| StoreError::from(sqlx::Error::Decode(Box::new(e))))
    }
}

/// SQLite's error on `db` as a [`StoreError`], classified as sqlx's errors are (a busy or
/// locked database is `Locked`).
///
/// # Safety
/// `db` is an open handle this thread holds.
pub(super) unsafe fn failed(db: *mut ffi::sqlite3, rc: i32) -> StoreError {
    // SAFETY: as the function's contract says; SQLite's message is a C string it owns.
    let message = unsafe { CStr::from_ptr(ffi::sqlite3_errmsg(db)) }
        .to_string_lossy()
        .into_owned();
    let cause = super::error::Cause(sqlx::Error::Protocol(format!("(code: {rc}) {message}")));
    match rc & 0xff {
        ffi::SQLITE_BUSY | ffi::SQLITE_LOCKED => StoreError::Locked(cause),
        _ => StoreError::Sql(cause),
    }
}
