//! A whole-table read of text columns straight from SQLite's C API, for the one read that
//! goes over every row (`recwatch status` at 100,000 jobs, issue 23 item 7): through sqlx each
//! row's values were copied on its worker thread and sent over a channel to the task, ~1.6 G
//! instructions for 100,000 rows, most of the command. Here each row's text is read in place
//! on the task's thread. The raw handle is borrowed from sqlx (`lock_handle`), as the backup
//! does, which keeps sqlx's worker off it meanwhile; or, for `status`'s read ahead
//! ([`JobStatuses::read_ahead`], on a thread of its own while the configuration's jobs are
//! read), a read-only handle of its own.

use super::jobs::JobStatus;
use super::{SqliteBackend, StoreError};
use crate::domain::IdsHash;
use libsqlite3_sys as ffi;
use std::ffi::CStr;
use std::hash::BuildHasher;
use std::path::Path;

/// Runs `sql` (no parameters; `N` text columns) on a read connection and hands each row to
/// `each`, a column `None` for NULL. A column that is not UTF-8 fails the read, as sqlx's
/// decoding into `String` does.
pub(super) async fn each_text_row<const N: usize>(
    b: &SqliteBackend,
    sql: &CStr,
    each: impl FnMut([Option<&str>; N]),
) -> Result<(), StoreError> {
    let mut conn = b.read.acquire().await?;
    let mut handle = conn.lock_handle().await?;
    let db = handle.as_raw_handle().as_ptr();
    // SAFETY: `db` is locked away from sqlx's worker while `handle` lives (to the end of this
    // function).
    unsafe { each_row_on(db, sql, each) }
}

/// [`each_text_row`] on an open handle.
///
/// # Safety
/// `db` is an open handle only this thread uses until the function returns.
unsafe fn each_row_on<const N: usize>(
    db: *mut ffi::sqlite3,
    sql: &CStr,
    mut each: impl FnMut([Option<&str>; N]),
) -> Result<(), StoreError> {
    // SAFETY: as the function's contract says.
    unsafe {
        each_raw_row_on(db, sql, |raw: [Option<&[u8]>; N]| {
            let mut row = [None; N];
            for (cell, value) in row.iter_mut().zip(raw) {
                *cell = value.map(utf8).transpose()?;
            }
            each(row);
            Ok(())
        })
    }
}

/// [`each_row_on`] with each column's bytes as SQLite holds them, not yet checked as UTF-8
/// (`status`'s read ahead checks the copy of every row at once, [`JobStatuses::index`]);
/// `each` may end the read with an error.
///
/// # Safety
/// `db` is an open handle only this thread uses until the function returns.
unsafe fn each_raw_row_on<const N: usize>(
    db: *mut ffi::sqlite3,
    sql: &CStr,
    mut each: impl FnMut([Option<&[u8]>; N]) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    // SAFETY: as the function's contract says; the statement is prepared on `db` and finalized
    // by `Statement`'s drop before returning; each column's text is read before the next step,
    // which is when SQLite may free it.
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
                        *cell = bytes(stmt.0, i as i32);
                    }
                    each(row)?;
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

/// Column `i` of the current row as SQLite's text bytes, `None` for NULL.
///
/// # Safety
/// `stmt` has just stepped to a row; the text lives until the next step.
unsafe fn bytes<'r>(stmt: *mut ffi::sqlite3_stmt, i: i32) -> Option<&'r [u8]> {
    // SAFETY: as the function's contract says; the pointer and length are SQLite's for this
    // column, the length read after the text, as SQLite's documentation asks.
    unsafe {
        // `sqlite3_column_text`, not `_blob`: a blob gives no pointer for NULL and for an
        // empty value alike, and asking the type after it cost more than it saved (tried).
        let p = ffi::sqlite3_column_text(stmt, i);
        if p.is_null() {
            return None;
        }
        let n = ffi::sqlite3_column_bytes(stmt, i) as usize;
        Some(std::slice::from_raw_parts(p, n))
    }
}

/// A column's bytes as text: an error if they are not UTF-8, as sqlx's decoding into
/// `String` is.
fn utf8(bytes: &[u8]) -> Result<&str, StoreError> {
    if bytes.is_ascii() {
        // ASCII is UTF-8: the common value checked in one short loop.
        // SAFETY: ASCII bytes are valid UTF-8.
        return Ok(unsafe { std::str::from_utf8_unchecked(bytes) });
    }
    std::str::from_utf8(bytes).map_err(|e| StoreError::from(sqlx::Error::Decode(Box::new(e))))
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

/// Every job's row as `status` shows it ([`JobStatus`]), copied out of the table into one text
/// (a row's values are spans of it) and found by key: read ahead on a thread of its own while
/// the configuration's jobs are read (issue 23, item 7), or through the store after it.
#[derive(Default)]
pub struct JobStatuses {
    /// The rows' values as they are read, one after another; `text` once checked as UTF-8
    /// ([`JobStatuses::index`]): one check of the whole copy, not one per value on the thread
    /// that reads them.
    read: Vec<u8>,
    text: String,
    /// Per row, in the table's order: key, state, stop_reason, description, last_polled_at,
    /// last_changed_at, last_error, each the span of `text` it takes or [`ABSENT`] for NULL.
    rows: Vec<[(u32, u32); 8]>,
    /// Per row: every value of it is `domain::words::plain` (printable ASCII without `"` or
    /// `\`), so `status` writes them as they are, unescaped and counted by bytes. Asked once
    /// per row while reading (on the read-ahead thread), not per value while writing.
    plain: Vec<bool>,
    /// Open addressing by the rows' keys (a length a power of two, at least twice the rows;
    /// a row's index, [`EMPTY`] for none): a look-up is a hash of the borrowed key and, mostly,
    /// one comparison, with no key copied (a `HashMap` would borrow from `text`). Made by
    /// [`JobStatuses::index`], on the thread that reads the rows: a watch list in any order
    /// (real job ids are random) finds its rows by key.
    slots: Vec<u32>,
    /// A value did not fit the spans (over 4 GB of text).
    too_long: bool,
}

/// A NULL value's span.
const ABSENT: (u32, u32) = (u32::MAX, 0);

/// A slot of [`JobStatuses`]'s key table that holds no row (rows are fewer than `u32::MAX / 2`,
/// as `index` checks).
const EMPTY: u32 = u32::MAX;

/// A job's row found among [`JobStatuses`].
#[derive(Debug, Clone, Copy)]
pub struct FoundStatus<'a> {
    pub row: JobStatus<'a>,
    /// Every value of the row is printable ASCII without `"` or `\`
    /// (`domain::words::plain`): shown as it is, in JSON and in a terminal.
    pub plain: bool,
}

impl JobStatuses {
    /// Every job's row read straight from the SQLite database `storage` names, or `None`
    /// when it cannot be read that way (PostgreSQL, no file, a schema this build would
    /// migrate, any error at all): the caller then reads the rows through the store after it
    /// opened it, and that read says what is wrong. Read-only: nothing is created or written.
    pub fn read_ahead(storage: &crate::config::StorageConfig) -> Option<JobStatuses> {
        let crate::config::Database::Sqlite(path) = storage.database() else {
            return None;
        };
        read_sqlite(path).ok().flatten()
    }

    /// Row `row` appended (any order; [`JobStatuses::index`] after the last).
    pub fn push(&mut self, row: JobStatus<'_>) {
        fn b(v: Option<&str>) -> Option<&[u8]> {
            v.map(str::as_bytes)
        }
        self.push_values([
            Some(row.app_id.as_bytes()),
            Some(row.job_id.as_bytes()),
            b(row.state),
            b(row.stop_reason),
            b(row.description),
            b(row.last_polled_at),
            b(row.last_changed_at),
            b(row.last_error),
        ]);
    }

    /// A row's values, in [`JobStatus`]'s order, appended as bytes (UTF-8 is checked by
    /// [`JobStatuses::index`]).
    fn push_values(&mut self, values: [Option<&[u8]>; 8]) {
        let start = self.read.len();
        let mut spans = [ABSENT; 8];
        // The row's room and the spans' bounds once per row, not per value.
        let total: usize = values.iter().flatten().map(|v| v.len()).sum();
        if start + total >= u32::MAX as usize {
            self.too_long = true;
        } else {
            self.read.reserve(total);
            for (span, v) in spans.iter_mut().zip(values) {
                if let Some(v) = v {
                    *span = (self.read.len() as u32, v.len() as u32);
                    self.read.extend_from_slice(v);
                }
            }
        }
        self.plain
            .push(crate::domain::words::plain(&self.read[start..]));
        self.rows.push(spans);
    }

    /// Makes the rows findable: an error if they hold more text than the spans can, or a
    /// value that is not UTF-8 (as reading it as text through sqlx would be).
    pub fn index(&mut self) -> Result<(), StoreError> {
        if self.too_long || self.rows.len() >= u32::MAX as usize / 2 {
            return Err(StoreError::from(sqlx::Error::Protocol(
                "the jobs' rows hold over 4 GB of text".into(),
            )));
        }
        let decode = |e: std::str::Utf8Error| StoreError::from(sqlx::Error::Decode(Box::new(e)));
        let read = std::mem::take(&mut self.read);
        let text = String::from_utf8(read).map_err(|e| decode(e.utf8_error()))?;
        // The whole copy is UTF-8; a value is too when it starts and ends between two
        // characters. A plain row is ASCII: only the others are looked at.
        for (r, _) in self.rows.iter().zip(&self.plain).filter(|(_, p)| !**p) {
            for &(at, len) in r.iter().filter(|s| **s != ABSENT) {
                let (at, end) = (at as usize, at as usize + len as usize);
                if text.get(at..end).is_none() {
                    return Err(StoreError::from(sqlx::Error::Decode(
                        "a value that is not UTF-8".into(),
                    )));
                }
            }
        }
        self.text = text;
        let size = (self.rows.len() * 2).next_power_of_two().max(2);
        // Filled with `EMPTY`, not zeros: a zeroed allocation is the kernel's shared zero page
        // until written, so each slot's page was looked at, then written, and the write cost a
        // second fault that flushed the page's mapping on both cores (~10 % of the read-ahead
        // thread's time at 100,000 jobs, `perf`; issue 23, item 7).
        let mut slots = vec![EMPTY; size];
        for (i, r) in self.rows.iter().enumerate() {
            let key = (
                self.value(r[0]).unwrap_or(""),
                self.value(r[1]).unwrap_or(""),
            );
            let mut at = slot(key, size);
            while slots[at] != EMPTY {
                at = (at + 1) & (size - 1);
            }
            slots[at] = i as u32;
        }
        self.slots = slots;
        Ok(())
    }

    /// The row of job `(app_id, job_id)`, if it has one (after [`JobStatuses::index`]).
    pub fn find(&self, app_id: &str, job_id: &str) -> Option<JobStatus<'_>> {
        self.find_next(app_id, job_id, &mut 0).map(|f| f.row)
    }

    /// [`JobStatuses::find`], looking first at row `*next` and leaving `*next` after the row
    /// found: a caller that looks up jobs in the table's key order (the rows come in it,
    /// SQLite's `WITHOUT ROWID` table read in key order; the run-time list is in it) finds
    /// each with one comparison (issue 23, item 7: a hash and a probe per job were ~53 M
    /// instructions of `status` at 100,000 jobs). Any other order is found by key.
    pub fn find_next(
        &self,
        app_id: &str,
        job_id: &str,
        next: &mut usize,
    ) -> Option<FoundStatus<'_>> {
        self.at(self.position_next(app_id, job_id, next)?)
    }

    /// Where [`JobStatuses::find_next`] finds the row of job `(app_id, job_id)`: its place,
    /// for [`JobStatuses::at`] (a caller that goes over the rows twice looks each up once).
    pub fn position_next(&self, app_id: &str, job_id: &str, next: &mut usize) -> Option<usize> {
        let is = |i: usize| {
            let r = &self.rows[i];
            self.bytes(r[1]) == Some(job_id.as_bytes())
                && self.bytes(r[0]) == Some(app_id.as_bytes())
        };
        let i = if *next < self.rows.len() && is(*next) {
            *next
        } else {
            let size = self.slots.len();
            if size == 0 {
                return None;
            }
            let mut at = slot((app_id, job_id), size);
            loop {
                let i = self.slots[at];
                if i == EMPTY {
                    return None;
                }
                let i = i as usize;
                if is(i) {
                    break i;
                }
                at = (at + 1) & (size - 1);
            }
        };
        *next = i + 1;
        Some(i)
    }

    /// The row at place `i` ([`JobStatuses::position_next`]).
    pub fn at(&self, i: usize) -> Option<FoundStatus<'_>> {
        let r = self.rows.get(i)?;
        Some(FoundStatus {
            row: JobStatus {
                app_id: self.value(r[0])?,
                job_id: self.value(r[1])?,
                state: self.value(r[2]),
                stop_reason: self.value(r[3]),
                description: self.value(r[4]),
                last_polled_at: self.value(r[5]),
                last_changed_at: self.value(r[6]),
                last_error: self.value(r[7]),
            },
            plain: self.plain[i],
        })
    }

    /// A value's bytes, `None` for NULL.
    fn bytes(&self, (at, len): (u32, u32)) -> Option<&[u8]> {
        (at != u32::MAX).then(|| &self.text.as_bytes()[at as usize..at as usize + len as usize])
    }

    /// A value as text, `None` for NULL.
    fn value(&self, span: (u32, u32)) -> Option<&str> {
        // SAFETY: every span is UTF-8, as `index` checked (the whole text, and each value of
        // a row that is not plain; a plain row is ASCII); a slice of `text` checked again for
        // its ends was ~40 M instructions of `status` at 100,000 jobs.
        self.bytes(span)
            .map(|b| unsafe { std::str::from_utf8_unchecked(b) })
    }
}

/// The first slot of `key` in a table of `size` (a power of two): the hash's top bits, which
/// its last step (a multiplication) mixes best; its low bits alone put similar ids (`job-0001`,
/// `job-0002`, ...) in long runs of neighbouring slots.
fn slot(key: (&str, &str), size: usize) -> usize {
    let bits = size.trailing_zeros();
    (IdsHash.hash_one(key) >> (64 - bits)) as usize
}

/// [`JobStatuses::read_ahead`] of the file at `path`: `None` if its schema is not the one
/// this build migrates to (the store's open would migrate it first).
fn read_sqlite(path: &Path) -> Result<Option<JobStatuses>, StoreError> {
    let name = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|e| StoreError::from(sqlx::Error::Protocol(e.to_string())))?;
    let mut db = std::ptr::null_mut();
    // SAFETY: `name` is a C string; SQLite sets `db` (even on failure, then closed by
    // `Handle`'s drop); the handle is this thread's alone (NOMUTEX), closed before returning.
    unsafe {
        let rc = ffi::sqlite3_open_v2(
            name.as_ptr(),
            &mut db,
            ffi::SQLITE_OPEN_READONLY | ffi::SQLITE_OPEN_NOMUTEX,
            std::ptr::null(),
        );
        let handle = Handle(db);
        if rc != ffi::SQLITE_OK {
            return Err(failed(handle.0, rc));
        }
        ffi::sqlite3_busy_timeout(handle.0, super::BUSY_TIMEOUT.as_millis() as i32);
        // The versions this build knows, each applied (as `Backend::schema_current` asks).
        let known: Vec<String> = super::MIGRATOR
            .iter()
            .filter(|m| m.migration_type.is_up_migration())
            .map(|m| m.version.to_string())
            .collect();
        let sql = std::ffi::CString::new(format!(
            "SELECT count(*) FROM _sqlx_migrations WHERE success AND version IN ({})",
            known.join(", ")
        ))
        .expect("no NUL in numbers");
        let mut applied = None;
        each_row_on(handle.0, &sql, |[n]: [Option<&str>; 1]| {
            applied = n.and_then(|n| n.parse::<usize>().ok());
        })?;
        if applied != Some(known.len()) {
            return Ok(None);
        }
        let mut rows = JobStatuses::default();
        each_raw_row_on(
            handle.0,
            super::jobs::JOB_STATUS_SQL,
            |r: [Option<&[u8]>; 8]| {
                // A row without its key is none (NOT NULL in the schema), as `JobStatus::of` has it.
                if r[0].is_some() && r[1].is_some() {
                    rows.push_values(r);
                }
                Ok(())
            },
        )?;
        rows.index()?;
        Ok(Some(rows))
    }
}

/// A handle of our own, closed when dropped.
struct Handle(*mut ffi::sqlite3);

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: opened by `read_sqlite` and used by this thread only; every statement on it
        // was finalized (`Statement`'s drop) before this drop runs.
        unsafe { ffi::sqlite3_close(self.0) };
    }
}
