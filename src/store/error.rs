//! What can go wrong with the database, as a type callers match on, and the one way to wait
//! out another process's lock.
//!
//! SQLite tells a lock held by another process (worth waiting for), a database that refuses
//! every write (full disk, read-only file system, I/O error, file gone: nothing written now
//! can succeed) and a statement that failed on its own apart. [`StoreError`] keeps that
//! difference so the writer and the poller decide with a `match`, not by searching an error
//! chain for sqlx's types.

use std::fmt;
use std::future::Future;
use std::time::Duration;

/// A failed database operation.
///
/// Every variant displays exactly as the error it wraps and has the same `source` chain, so
/// what people read in logs and `/readyz` is what SQLite said; `{:#}` prints the whole chain
/// on one line, as `anyhow` does.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds the database's lock (SQLITE_BUSY, SQLITE_LOCKED and their
    /// recovery/snapshot forms): worth trying again shortly, not a bug.
    #[error(transparent)]
    Locked(Cause),
    /// The database as a whole cannot be written: the disk is full (SQLITE_FULL), it or its
    /// file system is read-only (SQLITE_READONLY), an I/O error (SQLITE_IOERR), the file cannot
    /// be opened (SQLITE_CANTOPEN), or the connection itself is gone. Every other write fails
    /// the same way until the cause is fixed.
    #[error(transparent)]
    Unwritable(Cause),
    /// Any other failure of a statement.
    #[error(transparent)]
    Sql(Cause),
    /// A value could not be encoded for storage (an alert's frozen payload, a key list).
    #[error(transparent)]
    Encode(#[from] serde_json::Error),
    /// A write of the active instance refused because it no longer holds the leadership
    /// lease at `epoch` (see `lease`): it writes nothing more and steps down.
    #[error("refused: this instance no longer leads (lease epoch {epoch}): {why}")]
    Fenced { epoch: i64, why: String },
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> StoreError {
        if is_locked(&e) {
            StoreError::Locked(Cause(e))
        } else if is_unwritable(&e) {
            StoreError::Unwritable(Cause(e))
        } else {
            StoreError::Sql(Cause(e))
        }
    }
}

/// What sqlx said. Displays as sqlx's error, and with `{:#}` as that error and its causes
/// (`outer: inner`, as `anyhow` prints a chain), so a message that formats a [`StoreError`]
/// reads as it did when the error was an `anyhow::Error`; its `source` is sqlx's.
#[derive(Debug)]
pub struct Cause(pub sqlx::Error);

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        if f.alternate() {
            let mut cause = std::error::Error::source(&self.0);
            while let Some(c) = cause {
                write!(f, ": {c}")?;
                cause = c.source();
            }
        }
        Ok(())
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// SQLITE_BUSY (5), SQLITE_LOCKED (6), SQLITE_BUSY_RECOVERY (261), SQLITE_BUSY_SNAPSHOT (517);
/// on PostgreSQL a serialization failure (40001), a deadlock (40P01) or a lock not available
/// (55P03): another transaction was in the way, trying again may pass.
fn is_locked(e: &sqlx::Error) -> bool {
    if let Some(state) = pg_state(e) {
        return matches!(state, "40001" | "40P01" | "55P03");
    }
    match e {
        sqlx::Error::Database(d) => matches!(
            d.code().as_deref(),
            Some("5") | Some("6") | Some("517") | Some("261")
        ),
        _ => false,
    }
}

/// READONLY (8), IOERR (10), FULL (13), CANTOPEN (14) by their primary code, or the
/// connection's I/O or pool gone; on PostgreSQL the server out of resources (class 53: disk
/// full, out of memory, too many connections), read-only (25006: a standby), shutting down
/// or not accepting connections (class 57P), an I/O error (58030) or the connection lost
/// (class 08).
fn is_unwritable(e: &sqlx::Error) -> bool {
    if let Some(state) = pg_state(e) {
        return state.starts_with("53")
            || state.starts_with("08")
            || state.starts_with("57P")
            || matches!(state, "25006" | "58030");
    }
    match e {
        sqlx::Error::Database(_) => {
            matches!(primary_code(e), Some(8 | 10 | 13 | 14))
        }
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => true,
        _ => false,
    }
}

/// PostgreSQL's SQLSTATE of a failed statement (None for SQLite's errors and the others).
fn pg_state(e: &sqlx::Error) -> Option<&str> {
    match e {
        sqlx::Error::Database(d) => d
            .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
            .map(|p| p.code()),
        _ => None,
    }
}

/// SQLite's primary result code of a failed statement.
fn primary_code(e: &sqlx::Error) -> Option<i64> {
    match e {
        sqlx::Error::Database(d) if pg_state(e).is_none() => {
            d.code()?.parse::<i64>().ok().map(|c| c & 0xff)
        }
        _ => None,
    }
}

impl StoreError {
    /// Refused by the fence: this instance no longer leads (not a fault of the database).
    pub fn is_fenced(&self) -> bool {
        matches!(self, StoreError::Fenced { .. })
    }

    /// Another process holds the lock.
    pub fn is_locked(&self) -> bool {
        matches!(self, StoreError::Locked(_))
    }

    /// The database itself refuses (see [`StoreError::Unwritable`]) or is locked: every other
    /// write would fail the same way now.
    pub fn is_database_wide(&self) -> bool {
        matches!(self, StoreError::Locked(_) | StoreError::Unwritable(_))
    }

    fn sqlite_code(&self) -> Option<i64> {
        self.cause().and_then(|e| primary_code(&e.0))
    }

    fn cause(&self) -> Option<&Cause> {
        match self {
            StoreError::Locked(e) | StoreError::Unwritable(e) | StoreError::Sql(e) => Some(e),
            StoreError::Encode(_) | StoreError::Fenced { .. } => None,
        }
    }

    /// PostgreSQL's SQLSTATE, if PostgreSQL said this.
    pub fn pg_state(&self) -> Option<&str> {
        self.cause().and_then(|e| pg_state(&e.0))
    }
}

/// The cause of a failed write, for people: what SQLite (or PostgreSQL) said and what it means.
pub fn describe_write_error(e: &StoreError) -> String {
    if let Some(state) = e.pg_state() {
        let what = match state {
            "53100" => "the PostgreSQL server's disk is full (53100)",
            "25006" => {
                "the PostgreSQL server is read-only (25006: a standby, or default_transaction_read_only)"
            }
            s if s.starts_with("57P") => "the PostgreSQL server is shutting down or starting up",
            s if s.starts_with("53") => "the PostgreSQL server is out of resources",
            "40001" | "40P01" | "55P03" => "another transaction holds what this one needs",
            _ => return format!("{e:#}"),
        };
        return format!("{what}: {e:#}");
    }
    let what = match e.sqlite_code() {
        Some(13) => "the disk is full (SQLITE_FULL)",
        Some(8) => "the database or its file system is read-only (SQLITE_READONLY)",
        Some(10) => "an I/O error (SQLITE_IOERR)",
        Some(14) => "the database file cannot be opened (SQLITE_CANTOPEN)",
        Some(11) | Some(26) => "the database file is damaged (SQLITE_CORRUPT)",
        Some(5) | Some(6) => "database locked by another process (SQLITE_BUSY)",
        _ => return format!("{e:#}"),
    };
    format!("{what}: {e:#}")
}

/// How a write waits out another process's lock: `attempts` tries, the first pause `first`,
/// doubling. A lock held by another process usually clears quickly; a database that refuses
/// for any other reason (a full disk) does not recover in a second, so nothing else is
/// retried here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockRetry {
    pub attempts: u32,
    pub first: Duration,
}

/// The poller's: four tries, 200 ms, 400 ms and 800 ms apart.
pub const LOCK_RETRY: LockRetry = LockRetry {
    attempts: 4,
    first: Duration::from_millis(200),
};

/// What one try of [`retry_locked`] came to.
pub enum Attempt<T, E> {
    /// Done, well or badly: no further try.
    Done(Result<T, E>),
    /// Failed on another process's lock: try again after the pause, if tries are left.
    Locked(E),
}

/// Runs `attempt` (given the try's number, from 1) until it is [`Attempt::Done`] or the
/// tries run out; returns the last result. The one loop for "database locked, try again".
pub async fn retry_locked<T, E, F, Fut>(policy: LockRetry, mut attempt: F) -> Result<T, E>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Attempt<T, E>>,
{
    let mut delay = policy.first;
    let mut n = 1;
    loop {
        match attempt(n).await {
            Attempt::Done(result) => return result,
            Attempt::Locked(e) if n >= policy.attempts => return Err(e),
            Attempt::Locked(_) => {
                tokio::time::sleep(delay).await;
                delay *= 2;
                n += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_lock_is_tried_four_times_200_400_800_ms_apart_and_nothing_else_is_retried() {
        let start = tokio::time::Instant::now();
        let mut at = Vec::new();
        let r: Result<(), &str> = retry_locked(LOCK_RETRY, |n| {
            at.push((n, start.elapsed()));
            async { Attempt::Locked("locked") }
        })
        .await;
        assert_eq!(r, Err("locked"));
        let ms = Duration::from_millis;
        assert_eq!(at, [(1, ms(0)), (2, ms(200)), (3, ms(600)), (4, ms(1400))]);

        let mut tries = 0;
        let r: Result<(), &str> = retry_locked(LOCK_RETRY, |_| {
            tries += 1;
            async { Attempt::Done(Err("disk full")) }
        })
        .await;
        assert_eq!((r, tries), (Err("disk full"), 1));

        let r: Result<u32, &str> = retry_locked(LOCK_RETRY, |n| async move {
            if n < 3 {
                Attempt::Locked("locked")
            } else {
                Attempt::Done(Ok(n))
            }
        })
        .await;
        assert_eq!(r, Ok(3));
    }

    /// What a real SQLite file says in each case, and the variant and text it becomes.
    #[tokio::test]
    async fn what_sqlite_says_becomes_the_variant_callers_match_on() {
        use sqlx::Connection;
        use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode};
        let dir = tempfile::tempdir().unwrap();
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join("e.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal);
        let mut holder = SqliteConnection::connect_with(&options).await.unwrap();
        sqlx::query("CREATE TABLE t (x)")
            .execute(&mut holder)
            .await
            .unwrap();
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut holder)
            .await
            .unwrap();

        // Another connection that does not wait: the lock is another process's, as it were.
        let mut other =
            SqliteConnection::connect_with(&options.clone().busy_timeout(Duration::ZERO))
                .await
                .unwrap();
        let raw = sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut other)
            .await
            .unwrap_err();
        // As the error read when it reached callers as an `anyhow::Error`.
        let plain = raw.to_string();
        let anyhow_text = format!("{:#}", anyhow::Error::from(raw));
        let locked = StoreError::from(
            sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut other)
                .await
                .unwrap_err(),
        );
        assert!(matches!(locked, StoreError::Locked(_)), "{locked:?}");
        assert!(locked.is_locked() && locked.is_database_wide());
        assert_eq!(locked.to_string(), plain);
        assert_eq!(format!("{locked:#}"), anyhow_text, "prints as anyhow did");
        assert_ne!(plain, anyhow_text, "the chain has more than one link");
        let text = describe_write_error(&locked);
        assert_eq!(
            text,
            format!("database locked by another process (SQLITE_BUSY): {locked:#}")
        );
        assert_eq!(
            format!("{:#}", anyhow::Error::from(locked)),
            anyhow_text,
            "and so does the error carried on as an anyhow::Error"
        );

        let mut read_only = SqliteConnection::connect_with(&options.clone().read_only(true))
            .await
            .unwrap();
        let refused = StoreError::from(
            sqlx::query("INSERT INTO t VALUES (1)")
                .execute(&mut read_only)
                .await
                .unwrap_err(),
        );
        assert!(matches!(refused, StoreError::Unwritable(_)), "{refused:?}");
        assert!(!refused.is_locked() && refused.is_database_wide());
        assert!(
            describe_write_error(&refused)
                .starts_with("the database or its file system is read-only (SQLITE_READONLY): "),
            "{}",
            describe_write_error(&refused)
        );

        let own_fault = StoreError::from(
            sqlx::query("SELECT x FROM missing")
                .execute(&mut other)
                .await
                .unwrap_err(),
        );
        assert!(matches!(own_fault, StoreError::Sql(_)), "{own_fault:?}");
        assert!(!own_fault.is_database_wide());
        assert_eq!(
            describe_write_error(&own_fault),
            format!("{own_fault:#}"),
            "nothing to explain: what SQLite said"
        );
        assert!(format!("{own_fault:#}").contains("no such table: missing"));
    }
}
