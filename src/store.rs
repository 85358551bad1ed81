//! The SQLite store: per-job last snapshots, the transitions, and (see `outbox`) alerts with
//! their pending deliveries.
//!
//! Writes go through one connection and `BEGIN IMMEDIATE`, so recwatch never races itself for
//! the write lock; a poll's job update, its transition and the alerts it causes commit
//! together or not at all. Readers (`status`, `history`, the HTTP endpoint) use a separate
//! pool and, with WAL, never block the writer.
//!
//! When writes fail (a full disk, a read-only file system, a lock held by another process,
//! the file deleted under us), [`StoreHealth`] keeps the real cause for `/readyz` and logs it
//! once, not once per poll; the write connection is replaced if a failure left it inside a
//! transaction SQLite had already rolled back, so the writer recovers by itself when the
//! cause goes away.

use crate::alert::timestamp;
use crate::detect::Phase;
use crate::rtc::model::JobSnapshot;
use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tracing::{error, info, warn};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How long a statement waits for another process's write lock before failing.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Store {
    /// One connection: all of recwatch's writes queue here instead of fighting over the lock.
    write: SqlitePool,
    read: SqlitePool,
    path: PathBuf,
    /// The database file's (device, inode) when it was opened, to notice it being deleted or
    /// replaced while we still write to the old one.
    identity: Option<(u64, u64)>,
    health: Arc<StoreHealth>,
}

/// Whether the database can be written, and why not: fed by every write's outcome and by
/// [`Store::check_file`], read by `/readyz`.
#[derive(Default)]
pub struct StoreHealth {
    state: Mutex<HealthState>,
}

#[derive(Default)]
struct HealthState {
    failing: Option<Failing>,
    /// What the last file check found wrong (deleted, replaced, read-only).
    file_problem: Option<String>,
    /// When the writer began the write it is in; `None` while it is idle.
    writer_busy_since: Option<Instant>,
    /// Set when the writer's supervisor itself is gone: nothing restarts it.
    writer_dead: bool,
}

/// A run of failed writes.
struct Failing {
    since: Instant,
    cause: String,
    busy: bool,
    failures: u64,
    logged_at: Instant,
}

/// A failing database is re-logged this often, so the log says it still is without a line per
/// poll.
const REPEAT_LOG: Duration = Duration::from_secs(60);

/// A write taking longer than this means the writer is stuck, not slow (the busy timeout is 5 s).
pub const WRITER_STUCK_AFTER: Duration = Duration::from_secs(30);

impl StoreHealth {
    /// A write committed: the database is writable (again).
    pub fn write_ok(&self) {
        let mut s = self.lock();
        if let Some(f) = s.failing.take() {
            info!(
                failed_writes = f.failures,
                after_secs = f.since.elapsed().as_secs(),
                "the database accepts writes again (it failed with: {}); writing what was kept in memory",
                f.cause
            );
        }
    }

    /// A write failed. Logs the real cause the first time (and when it changes, and once a
    /// minute while it lasts), not once per poll.
    pub fn write_failed(&self, e: &anyhow::Error) {
        let cause = describe_write_error(e);
        let busy = is_busy(e);
        let now = Instant::now();
        let mut s = self.lock();
        match &mut s.failing {
            Some(f) if f.cause == cause => {
                f.failures += 1;
                if now.duration_since(f.logged_at) >= REPEAT_LOG {
                    f.logged_at = now;
                    warn!(
                        failed_writes = f.failures,
                        for_secs = f.since.elapsed().as_secs(),
                        "the database still cannot be written: {cause}"
                    );
                }
            }
            failing => {
                let since = failing.as_ref().map_or(now, |f| f.since);
                let failures = failing.as_ref().map_or(0, |f| f.failures) + 1;
                if busy {
                    warn!(
                        "cannot write to the database: {cause}; polling goes on and outcomes are kept in memory until it can"
                    );
                } else {
                    error!(
                        "cannot write to the database: {cause}; polling goes on, outcomes are kept in memory and written when it can be written again"
                    );
                }
                *failing = Some(Failing {
                    since,
                    cause,
                    busy,
                    failures,
                    logged_at: now,
                });
            }
        }
    }

    /// Whether the last write failed for a reason other than another process's lock.
    pub fn is_failing(&self) -> bool {
        self.lock().failing.as_ref().is_some_and(|f| !f.busy)
    }

    /// Records what [`Store::check_file`] found; logs a change.
    pub fn set_file_problem(&self, problem: Option<String>) {
        let mut s = self.lock();
        if s.file_problem == problem {
            return;
        }
        match &problem {
            Some(p) => error!("{p}"),
            None => info!("the database file is in place and writable again"),
        }
        s.file_problem = problem;
    }

    pub fn writer_busy(&self, busy: bool) {
        self.lock().writer_busy_since = busy.then(Instant::now);
    }

    pub fn set_writer_dead(&self) {
        self.lock().writer_dead = true;
    }

    pub fn writer_dead(&self) -> bool {
        self.lock().writer_dead
    }

    /// Why the database cannot be written now, for `/readyz`; empty when it can.
    pub fn problems(&self) -> Vec<String> {
        let s = self.lock();
        let mut out = Vec::new();
        if let Some(f) = &s.failing {
            out.push(format!(
                "the database cannot be written ({} failed writes in {} s): {}",
                f.failures,
                f.since.elapsed().as_secs(),
                f.cause
            ));
        }
        if let Some(p) = &s.file_problem {
            out.push(p.clone());
        }
        if s.writer_dead {
            out.push("the database writer has stopped".into());
        } else if let Some(t) = s
            .writer_busy_since
            .filter(|t| t.elapsed() > WRITER_STUCK_AFTER)
        {
            out.push(format!(
                "the database writer has been stuck in one write for {} s",
                t.elapsed().as_secs()
            ));
        }
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HealthState> {
        // Plain data: usable even if a panic interrupted an update.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// SQLite's primary result code of a failed statement, if that is what failed.
fn sqlite_code(e: &anyhow::Error) -> Option<i64> {
    e.chain()
        .find_map(|c| match c.downcast_ref::<sqlx::Error>()? {
            sqlx::Error::Database(d) => d.code()?.parse::<i64>().ok().map(|c| c & 0xff),
            _ => None,
        })
}

/// The cause of a failed write, for people: what SQLite said and what it means.
pub fn describe_write_error(e: &anyhow::Error) -> String {
    let what = match sqlite_code(e) {
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

/// The outcome of one poll, ready to be written.
#[derive(Clone, Debug)]
pub struct PollRecord {
    pub app_id: String,
    pub job_id: String,
    pub name: Option<String>,
    pub polled_at: DateTime<Utc>,
    pub outcome: PollOutcome,
}

#[derive(Clone, Debug)]
pub enum PollOutcome {
    Ok {
        job: Box<JobSnapshot>,
        raw: String,
        /// The answer's X-request-Id, kept with a transition.
        request_id: Option<String>,
        /// Set when this poll is a transition.
        transition: Option<(Option<Phase>, Phase)>,
    },
    Failed {
        kind: String,
        error: String,
    },
}

impl PollRecord {
    pub fn is_transition(&self) -> bool {
        matches!(
            self.outcome,
            PollOutcome::Ok {
                transition: Some(_),
                ..
            }
        )
    }
}

/// A transition as stored.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct TransitionRow {
    pub id: i64,
    pub app_id: String,
    pub job_id: String,
    pub name: Option<String>,
    pub from_state: Option<String>,
    pub to_state: String,
    pub stop_reason: Option<String>,
    pub description: Option<String>,
    pub create_time: Option<String>,
    pub start_time: Option<String>,
    pub stop_time: Option<String>,
    pub update_time: Option<String>,
    pub observed_at: String,
    /// The X-request-Id of the answer that showed this transition.
    pub request_id: Option<String>,
}

/// A job's row, as `status` shows it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, Default)]
pub struct JobRow {
    pub app_id: String,
    pub job_id: String,
    pub name: Option<String>,
    pub state: Option<String>,
    pub stop_reason: Option<String>,
    pub description: Option<String>,
    pub first_seen_at: Option<String>,
    pub last_polled_at: Option<String>,
    pub last_ok_at: Option<String>,
    pub last_changed_at: Option<String>,
    pub last_error: Option<String>,
    pub last_error_kind: Option<String>,
    pub consecutive_failures: i64,
}

impl JobRow {
    pub fn phase(&self) -> Option<Phase> {
        Some(Phase {
            state: self.state.clone()?,
            stop_reason: self.stop_reason.clone(),
        })
    }
}

/// (device, inode) of the file at `path`, if there is one.
fn file_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// True when the error is SQLite's "database is locked/busy": worth retrying, not a bug.
pub fn is_busy(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<sqlx::Error>().is_some_and(|s| match s {
            sqlx::Error::Database(d) => matches!(
                d.code().as_deref(),
                Some("5") | Some("6") | Some("517") | Some("261")
            ),
            _ => false,
        })
    })
}

impl Store {
    /// Opens (creating the file and its directories) and migrates the database if its schema
    /// is behind, under the database's lock (see [`crate::lock`]); for processes that do not
    /// own the database and may run beside a daemon.
    pub async fn open(path: &Path) -> anyhow::Result<Store> {
        let store = Store::connect(path).await?;
        crate::lock::migrate_under_lock(path, || store.schema_current(), || store.migrate())
            .await?;
        Ok(store)
    }

    /// Opens and migrates the database for the process holding its lock (`run`, `poll-once`).
    pub async fn open_owned(path: &Path, _owner: &crate::lock::OwnerLock) -> anyhow::Result<Store> {
        let store = Store::connect(path).await?;
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> anyhow::Result<()> {
        MIGRATOR
            .run(&self.write)
            .await
            .with_context(|| format!("cannot migrate the database {}", self.path.display()))
    }

    /// Whether every migration this binary knows is applied.
    async fn schema_current(&self) -> anyhow::Result<bool> {
        let applied: Vec<i64> =
            match sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&self.write)
                .await
            {
                Ok(v) => v,
                Err(sqlx::Error::Database(d)) if d.message().contains("no such table") => {
                    Vec::new()
                }
                Err(e) => return Err(e.into()),
            };
        Ok(MIGRATOR
            .iter()
            .filter(|m| m.migration_type.is_up_migration())
            .all(|m| applied.contains(&m.version)))
    }

    async fn connect(path: &Path) -> anyhow::Result<Store> {
        // The directory 0700 and the file 0600 whatever the umask; a failure exits 73.
        crate::startup::prepare_storage(path)?;
        // `prepare_storage` made the file; a connection opened later (after one was
        // discarded) must not silently create an empty database where the old one was deleted.
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(false)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a committed alert survives a power cut, not just a crash.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let identity = file_identity(path);
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            // The one write connection is kept for the life of the process: reconnecting would
            // open whatever file is at the path now, not the database recwatch started with.
            .max_lifetime(None)
            .idle_timeout(None)
            .after_release(|conn, _| {
                Box::pin(async move {
                    // After a failed statement SQLite may have rolled the transaction back by
                    // itself (a full disk does), and sqlx's own rollback then fails and leaves
                    // the connection believing it is still inside one: every later BEGIN would
                    // fail with "attempted to call begin_with at non-zero transaction depth".
                    // Such a connection is replaced, not reused. The ping lets a rollback
                    // still queued on the connection run first.
                    if sqlx::Connection::is_in_transaction(conn) {
                        sqlx::Connection::ping(conn).await?;
                        if sqlx::Connection::is_in_transaction(conn) {
                            warn!("the database write connection was left inside a failed transaction; opening a new one");
                            return Ok(false);
                        }
                    }
                    Ok(true)
                })
            })
            .connect_with(options.clone())
            .await
            .with_context(|| {
                format!(
                    "cannot open the database {}; check storage.path and its permissions",
                    path.display()
                )
            })?;
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await
            .with_context(|| format!("cannot open the database {} for reading", path.display()))?;
        Ok(Store {
            write,
            read,
            path: path.to_path_buf(),
            identity,
            health: Arc::new(StoreHealth::default()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn health(&self) -> &Arc<StoreHealth> {
        &self.health
    }

    /// Whether the file at the database's path is still the one opened, and writable. A
    /// deleted or replaced file is otherwise invisible: SQLite goes on writing to the file it
    /// has open, and all of it is lost at the next start. Never opens the database file itself
    /// (closing a second descriptor would drop SQLite's locks on it).
    pub fn check_file(&self) -> Option<String> {
        let path = self.path.display();
        match (self.identity, file_identity(&self.path)) {
            (Some(_), None) => {
                return Some(format!(
                    "the database file {path} was deleted while recwatch has it open: what it writes now is lost when it stops; restore the file or restart recwatch"
                ));
            }
            (Some(opened), Some(now)) if opened != now => {
                return Some(format!(
                    "the database file {path} was replaced by another file: recwatch still writes to the one it opened, which is lost when it stops; restart recwatch to use the new file"
                ));
            }
            _ => {}
        }
        if let Err(e) = crate::startup::writable(&self.path) {
            return Some(if e.raw_os_error() == Some(libc::EROFS) {
                format!(
                    "the file system holding the database {path} is read-only: nothing can be written; remount it read-write"
                )
            } else {
                format!("the database {path} cannot be written: {e}")
            });
        }
        None
    }

    pub fn writer(&self) -> &SqlitePool {
        &self.write
    }

    /// The write connection if it can be had within `within`; None while another write holds
    /// it (e.g. one waiting out another process's lock), so a caller with better things to do
    /// than queue behind that write can keep its work for later.
    pub async fn writer_within(
        &self,
        within: Duration,
    ) -> anyhow::Result<Option<sqlx::pool::PoolConnection<sqlx::Sqlite>>> {
        match tokio::time::timeout(within, self.write.acquire()).await {
            Ok(conn) => Ok(Some(conn?)),
            Err(_) => Ok(None),
        }
    }

    pub fn reader(&self) -> &SqlitePool {
        &self.read
    }

    /// Writes a batch of poll outcomes in one transaction and returns the ids of the
    /// transitions written, in order (None where a poll made none).
    pub async fn record(&self, records: &[PollRecord]) -> anyhow::Result<Vec<Option<i64>>> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await?;
        let mut ids = Vec::with_capacity(records.len());
        for r in records {
            ids.push(write_record(&mut tx, r).await?);
        }
        tx.commit().await?;
        Ok(ids)
    }

    /// Records polls that changed nothing, in one transaction: the poll time and the last
    /// snapshot. A row already showing a later poll (written by a full write) is left alone.
    pub async fn touch_jobs<'a>(
        &self,
        touches: impl Iterator<
            Item = (
                &'a String,
                &'a String,
                DateTime<Utc>,
                &'a str,
                Option<&'a str>,
            ),
        >,
    ) -> anyhow::Result<()> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await?;
        for (app_id, job_id, at, raw, description) in touches {
            let at = timestamp(at);
            sqlx::query(
                "UPDATE jobs SET description = ?, snapshot = ?, last_polled_at = ?, last_ok_at = ?,
                        last_error = NULL, last_error_kind = NULL, consecutive_failures = 0
                 WHERE app_id = ? AND job_id = ? AND (last_polled_at IS NULL OR last_polled_at < ?)",
            )
            .bind(description)
            .bind(raw)
            .bind(&at)
            .bind(&at)
            .bind(app_id)
            .bind(job_id)
            .bind(&at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Every job row, keyed by (app_id, job_id).
    pub async fn jobs(&self) -> anyhow::Result<HashMap<(String, String), JobRow>> {
        let rows = sqlx::query(JOB_COLUMNS).fetch_all(&self.read).await?;
        Ok(rows
            .iter()
            .map(job_from_row)
            .map(|row| ((row.app_id.clone(), row.job_id.clone()), row))
            .collect())
    }

    /// One job's row, if it has one.
    pub async fn job(&self, app_id: &str, job_id: &str) -> anyhow::Result<Option<JobRow>> {
        let sql = format!("{JOB_COLUMNS} WHERE app_id = ? AND job_id = ?");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(app_id)
            .bind(job_id)
            .fetch_optional(&self.read)
            .await?;
        Ok(row.as_ref().map(job_from_row))
    }

    /// Transitions, newest first, optionally for one job id and since a time.
    pub async fn history(
        &self,
        job_id: Option<&str>,
        since: Option<DateTime<Utc>>,
        limit: i64,
    ) -> anyhow::Result<Vec<TransitionRow>> {
        let since = since.map(timestamp);
        // Two statements, not `(?1 IS NULL OR job_id = ?1)`: SQLite plans before it sees the
        // parameter, so the OR form walks the time index over every job (300 ms on a million
        // rows) instead of seeking transitions_by_job (under a millisecond).
        let query = if job_id.is_some() {
            "SELECT id, app_id, job_id, name, from_state, to_state, stop_reason, description,
                    create_time, start_time, stop_time, update_time, observed_at, request_id
             FROM transitions
             WHERE job_id = ?1 AND (?2 IS NULL OR observed_at >= ?2)
             ORDER BY observed_at DESC, id DESC
             LIMIT ?3"
        } else {
            "SELECT id, app_id, job_id, name, from_state, to_state, stop_reason, description,
                    create_time, start_time, stop_time, update_time, observed_at, request_id
             FROM transitions
             WHERE ?1 IS NULL AND (?2 IS NULL OR observed_at >= ?2)
             ORDER BY observed_at DESC, id DESC
             LIMIT ?3"
        };
        let rows = sqlx::query(query)
            .bind(job_id)
            .bind(since)
            .bind(limit)
            .fetch_all(&self.read)
            .await?;
        Ok(rows.into_iter().map(|r| transition_from_row(&r)).collect())
    }

    /// Deletes transitions observed before `cutoff`; returns how many.
    pub async fn prune(&self, cutoff: DateTime<Utc>) -> anyhow::Result<u64> {
        let done = sqlx::query("DELETE FROM transitions WHERE observed_at < ?")
            .bind(timestamp(cutoff))
            .execute(&self.write)
            .await?;
        Ok(done.rows_affected())
    }

    pub async fn ping(&self) -> anyhow::Result<()> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
    }
}

const JOB_COLUMNS: &str = "SELECT app_id, job_id, name, state, stop_reason, description, first_seen_at,
        last_polled_at, last_ok_at, last_changed_at, last_error, last_error_kind, consecutive_failures
     FROM jobs";

fn job_from_row(r: &sqlx::sqlite::SqliteRow) -> JobRow {
    JobRow {
        app_id: r.get("app_id"),
        job_id: r.get("job_id"),
        name: r.get("name"),
        state: r.get("state"),
        stop_reason: r.get("stop_reason"),
        description: r.get("description"),
        first_seen_at: r.get("first_seen_at"),
        last_polled_at: r.get("last_polled_at"),
        last_ok_at: r.get("last_ok_at"),
        last_changed_at: r.get("last_changed_at"),
        last_error: r.get("last_error"),
        last_error_kind: r.get("last_error_kind"),
        consecutive_failures: r.get("consecutive_failures"),
    }
}

pub(crate) fn transition_from_row(r: &sqlx::sqlite::SqliteRow) -> TransitionRow {
    TransitionRow {
        id: r.get("id"),
        app_id: r.get("app_id"),
        job_id: r.get("job_id"),
        name: r.get("name"),
        from_state: r.get("from_state"),
        to_state: r.get("to_state"),
        stop_reason: r.get("stop_reason"),
        description: r.get("description"),
        create_time: r.get("create_time"),
        start_time: r.get("start_time"),
        stop_time: r.get("stop_time"),
        update_time: r.get("update_time"),
        observed_at: r.get("observed_at"),
        request_id: r.get("request_id"),
    }
}

/// One poll's writes inside the caller's transaction. Returns the new transition's id.
pub(crate) async fn write_record(
    tx: &mut sqlx::SqliteConnection,
    r: &PollRecord,
) -> anyhow::Result<Option<i64>> {
    let at = timestamp(r.polled_at);
    match &r.outcome {
        PollOutcome::Failed { kind, error } => {
            sqlx::query(
                "INSERT INTO jobs (app_id, job_id, name, first_seen_at) VALUES (?, ?, ?, ?)
                 ON CONFLICT (app_id, job_id) DO UPDATE SET name = excluded.name",
            )
            .bind(&r.app_id)
            .bind(&r.job_id)
            .bind(&r.name)
            .bind(&at)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE jobs SET last_polled_at = ?, last_error = ?, last_error_kind = ?,
                        consecutive_failures = consecutive_failures + 1
                 WHERE app_id = ? AND job_id = ?",
            )
            .bind(&at)
            .bind(error)
            .bind(kind)
            .bind(&r.app_id)
            .bind(&r.job_id)
            .execute(&mut *tx)
            .await?;
            Ok(None)
        }
        PollOutcome::Ok {
            job,
            raw,
            request_id,
            transition,
        } => {
            // One statement for the common case (no change): every poll pays for it, and
            // the guard below reads only `state`, which this does not touch.
            sqlx::query(
                "INSERT INTO jobs (app_id, job_id, name, first_seen_at, description, snapshot,
                                   last_polled_at, last_ok_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?4, ?4)
                 ON CONFLICT (app_id, job_id) DO UPDATE SET
                     name = excluded.name, description = excluded.description,
                     snapshot = excluded.snapshot, last_polled_at = excluded.last_polled_at,
                     last_ok_at = excluded.last_ok_at, last_error = NULL,
                     last_error_kind = NULL, consecutive_failures = 0",
            )
            .bind(&r.app_id)
            .bind(&r.job_id)
            .bind(&r.name)
            .bind(&at)
            .bind(&job.description)
            .bind(raw)
            .execute(&mut *tx)
            .await?;
            let mut id = None;
            if let Some((from, to)) = transition {
                // Guard: write the transition only if the row still shows `from`. recwatch has
                // one writer, so this never skips in practice; it makes a duplicate impossible
                // even if a second daemon is pointed at the same file by mistake.
                let current = sqlx::query(
                    "SELECT state, stop_reason FROM jobs WHERE app_id = ? AND job_id = ?",
                )
                .bind(&r.app_id)
                .bind(&r.job_id)
                .fetch_one(&mut *tx)
                .await?;
                let current = current.get::<Option<String>, _>(0).map(|state| Phase {
                    state,
                    stop_reason: current.get(1),
                });
                if current.as_ref() == from.as_ref() {
                    let done = sqlx::query(
                        "INSERT INTO transitions (app_id, job_id, name, from_state, from_stop_reason, to_state,
                             stop_reason, description, create_time, start_time, stop_time, update_time,
                             observed_at, snapshot, request_id)
                         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    )
                    .bind(&r.app_id)
                    .bind(&r.job_id)
                    .bind(&r.name)
                    .bind(from.as_ref().map(|p| &p.state))
                    .bind(from.as_ref().and_then(|p| p.stop_reason.as_ref()))
                    .bind(&to.state)
                    .bind(&to.stop_reason)
                    .bind(&job.description)
                    .bind(&job.create_time)
                    .bind(&job.start_time)
                    .bind(&job.stop_time)
                    .bind(&job.update_time)
                    .bind(&at)
                    .bind(raw)
                    .bind(request_id)
                    .execute(&mut *tx)
                    .await?;
                    id = Some(done.last_insert_rowid());
                    sqlx::query(
                        "UPDATE jobs SET state = ?, stop_reason = ?, last_changed_at = ? WHERE app_id = ? AND job_id = ?",
                    )
                    .bind(&to.state)
                    .bind(&to.stop_reason)
                    .bind(&at)
                    .bind(&r.app_id)
                    .bind(&r.job_id)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            Ok(id)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtc::model::State;

    fn record(job: &str, at: DateTime<Utc>, from: Option<&str>, to: &str) -> PollRecord {
        let phase = |s: &str| Phase {
            state: s.into(),
            stop_reason: None,
        };
        PollRecord {
            app_id: "app".into(),
            job_id: job.into(),
            name: None,
            polled_at: at,
            outcome: PollOutcome::Ok {
                job: Box::new(JobSnapshot {
                    state: Some(State::parse(to)),
                    ..Default::default()
                }),
                raw: "{}".into(),
                request_id: Some(format!("req-{job}-{to}")),
                transition: Some((from.map(phase), phase(to))),
            },
        }
    }

    #[tokio::test]
    async fn writes_once_filters_history_and_prunes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("a/b/recwatch.db"))
            .await
            .unwrap();
        let old = Utc::now() - chrono::Duration::days(100);
        let now = Utc::now();
        let ids = store
            .record(&[
                record("j1", old, None, "INIT"),
                record("j1", now, Some("INIT"), "RUNNING"),
                record("j2", now, None, "INIT"),
            ])
            .await
            .unwrap();
        assert!(ids.iter().all(Option::is_some));
        // The same transition again (a second writer, a replay): the guard refuses it.
        let again = store
            .record(&[record("j1", now, Some("INIT"), "RUNNING")])
            .await
            .unwrap();
        assert_eq!(again, vec![None]);
        assert_eq!(store.history(None, None, 100).await.unwrap().len(), 3);
        let j1 = store.history(Some("j1"), None, 100).await.unwrap();
        assert_eq!(
            j1.iter().map(|t| t.to_state.as_str()).collect::<Vec<_>>(),
            vec!["RUNNING", "INIT"],
            "newest first"
        );
        assert_eq!(
            j1[0].request_id.as_deref(),
            Some("req-j1-RUNNING"),
            "the request id of the answer that showed it"
        );
        let recent = store
            .history(None, Some(now - chrono::Duration::hours(1)), 100)
            .await
            .unwrap();
        assert_eq!(recent.len(), 2);
        assert_eq!(
            store.prune(now - chrono::Duration::days(90)).await.unwrap(),
            1
        );
        assert_eq!(store.history(None, None, 100).await.unwrap().len(), 2);
        let jobs = store.jobs().await.unwrap();
        assert_eq!(
            jobs[&("app".to_string(), "j1".to_string())]
                .state
                .as_deref(),
            Some("RUNNING")
        );
    }

    #[tokio::test]
    async fn a_failed_poll_keeps_the_last_state_and_counts_failures() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("recwatch.db")).await.unwrap();
        store
            .record(&[record("j", Utc::now(), None, "RUNNING")])
            .await
            .unwrap();
        let failed = PollRecord {
            app_id: "app".into(),
            job_id: "j".into(),
            name: None,
            polled_at: Utc::now(),
            outcome: PollOutcome::Failed {
                kind: "timeout".into(),
                error: "timed out".into(),
            },
        };
        store.record(&[failed.clone(), failed]).await.unwrap();
        let row = &store.jobs().await.unwrap()[&("app".to_string(), "j".to_string())];
        assert_eq!(row.state.as_deref(), Some("RUNNING"));
        assert_eq!(row.consecutive_failures, 2);
        assert_eq!(row.last_error_kind.as_deref(), Some("timeout"));
    }
    #[tokio::test]
    async fn a_deleted_or_replaced_file_is_noticed_and_one_row_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("recwatch.db");
        let store = Store::open(&path).await.unwrap();
        store
            .record(&[record("j", Utc::now(), None, "RUNNING")])
            .await
            .unwrap();
        let row = store.job("app", "j").await.unwrap().unwrap();
        assert_eq!(row.state.as_deref(), Some("RUNNING"));
        assert_eq!(store.job("app", "other").await.unwrap(), None);
        assert_eq!(store.check_file(), None);
        std::fs::remove_file(&path).unwrap();
        let deleted = store.check_file().unwrap();
        assert!(deleted.contains("was deleted"), "{deleted}");
        std::fs::write(&path, b"").unwrap();
        let replaced = store.check_file().unwrap();
        assert!(replaced.contains("was replaced"), "{replaced}");
    }

    #[test]
    fn health_keeps_the_cause_until_a_write_succeeds() {
        let h = StoreHealth::default();
        assert!(h.problems().is_empty());
        h.write_failed(&anyhow::anyhow!("disk on fire"));
        h.write_failed(&anyhow::anyhow!("disk on fire"));
        let p = h.problems();
        assert_eq!(p.len(), 1);
        assert!(
            p[0].contains("2 failed writes") && p[0].contains("disk on fire"),
            "{p:?}"
        );
        assert!(h.is_failing());
        h.write_ok();
        assert!(h.problems().is_empty());
        assert!(!h.is_failing());
        h.set_writer_dead();
        assert_eq!(h.problems(), vec!["the database writer has stopped"]);
    }
}
