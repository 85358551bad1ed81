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
use anyhow::Context;
use chrono::{DateTime, Utc};
use recwatch_rtc::model::JobSnapshot;
use serde::Serialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
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

/// Rows per prune transaction. Measured (BENCHMARKS.md, part 5) on 1,350,000 old rows while
/// polling at the budget: 5,000 held the write lock up to 235 ms and made polls up to 0.3 s
/// late; 1,000 holds it up to 140-330 ms (a WAL checkpoint, and a busy machine) and no poll
/// waits on it, for a prune of about a minute instead of 25 s. Pruning is never urgent.
pub const PRUNE_BATCH: usize = 1000;

/// Between two prune transactions: a little air for the poller's writes and the disk. (Longer
/// pauses only made the prune longer; see BENCHMARKS.md, part 5.)
const PRUNE_PAUSE: Duration = Duration::from_millis(20);

/// Alerts older than the cutoff whose deliveries are all finished (sent or dead) or that have
/// none. Used twice in one transaction (deliveries, then the alerts): nothing else writes in
/// between and the order is fixed, so both statements pick the same alerts. `+d.state` keeps
/// SQLite on the deliveries' primary key (this alert's few rows) rather than walking every
/// pending delivery in `deliveries_due` for each alert.
macro_rules! prunable_alerts {
    () => {
        "SELECT id FROM alerts a
         WHERE created_at < ?1
           AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.alert_id = a.id AND +d.state = 'pending')
         ORDER BY created_at LIMIT ?2"
    };
}

const PRUNE_ALERTS: &[&str] = &[
    concat!(
        "DELETE FROM deliveries WHERE alert_id IN (",
        prunable_alerts!(),
        ")"
    ),
    concat!("DELETE FROM alerts WHERE id IN (", prunable_alerts!(), ")"),
];
const PRUNE_EPISODES: &[&str] = &["DELETE FROM episodes WHERE id IN
     (SELECT id FROM episodes WHERE resolved_at < ?1 ORDER BY resolved_at LIMIT ?2)"];
const PRUNE_TRANSITIONS: &[&str] = &["DELETE FROM transitions WHERE id IN
     (SELECT id FROM transitions WHERE observed_at < ?1 ORDER BY observed_at LIMIT ?2)"];

#[derive(Clone, Copy)]
enum Table {
    Alerts,
    Episodes,
    Transitions,
}

/// What one prune removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub alerts: u64,
    pub deliveries: u64,
    pub episodes: u64,
    pub transitions: u64,
    /// Transactions it took.
    pub batches: u64,
    /// The longest any one of them held the write lock.
    pub longest_batch: Duration,
    /// Shutdown came first: the rest waits for the next run.
    pub stopped: bool,
}

impl Pruned {
    pub fn rows(&self) -> u64 {
        self.alerts + self.deliveries + self.episodes + self.transitions
    }
}

/// The database's side of `/metrics`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DbGauges {
    /// Jobs by state (None: never answered).
    pub jobs_by_state: Vec<(Option<String>, i64)>,
    pub deliveries: Vec<DeliveryCount>,
    pub oldest_pending: Option<DateTime<Utc>>,
}

/// Pending or dead deliveries of one channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryCount {
    pub channel: String,
    pub dead: bool,
    pub n: i64,
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

    /// The rows of these jobs only (one page of `/api/v1/jobs`), keyed by (app_id, job_id);
    /// a job never polled has none. One statement: the keys go in as a JSON array and each
    /// is a primary-key look-up, so the cost follows the page, not the table.
    pub async fn jobs_by_key(
        &self,
        keys: &[(&str, &str)],
    ) -> anyhow::Result<HashMap<(String, String), JobRow>> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let rows = sqlx::query(sqlx::AssertSqlSafe(JOBS_BY_KEY.as_str()))
            .bind(serde_json::to_string(keys)?)
            .fetch_all(&self.read)
            .await?;
        Ok(rows
            .iter()
            .map(job_from_row)
            .map(|row| ((row.app_id.clone(), row.job_id.clone()), row))
            .collect())
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

    /// Applies `storage.retention`: deletes what is older than `cutoff` — alerts with their
    /// deliveries (never an alert with a delivery still pending), closed condition episodes
    /// and transitions — in transactions of at most `batch` rows each, so the write lock is
    /// never held for long and the poller's writes get in between. Stops early (with
    /// `stopped` set) when `stop` turns true; the next run goes on where this one ended.
    pub async fn prune(
        &self,
        cutoff: DateTime<Utc>,
        batch: usize,
        stop: &watch::Receiver<bool>,
    ) -> anyhow::Result<Pruned> {
        let cutoff = timestamp(cutoff);
        let batch = batch.max(1) as i64;
        let mut done = Pruned::default();
        // Alerts first: deleting a transition or an episode updates the alerts that point at
        // it, so fewer alerts left means less to update. Also, an alert's dedup key names its
        // transition or episode id, and SQLite may hand out the id of a deleted newest row
        // again: the alert goes in the same run as (or before) what it names.
        for (table, statements) in [
            (Table::Alerts, PRUNE_ALERTS),
            (Table::Episodes, PRUNE_EPISODES),
            (Table::Transitions, PRUNE_TRANSITIONS),
        ] {
            loop {
                if *stop.borrow() {
                    done.stopped = true;
                    return Ok(done);
                }
                let (counts, held) = self.prune_batch(statements, &cutoff, batch).await?;
                done.batches += 1;
                done.longest_batch = done.longest_batch.max(held);
                let deleted = *counts.last().expect("a statement per batch");
                match table {
                    Table::Alerts => {
                        done.deliveries += counts[0];
                        done.alerts += deleted;
                    }
                    Table::Episodes => done.episodes += deleted,
                    Table::Transitions => done.transitions += deleted,
                }
                if deleted < batch as u64 {
                    break;
                }
                // The writer pool is fair (a waiting write gets the connection before this
                // task can take it back); the pause also leaves the disk to the poller.
                tokio::time::sleep(PRUNE_PAUSE).await;
            }
        }
        Ok(done)
    }

    /// One batch of a prune: its statements in one short `BEGIN IMMEDIATE` transaction.
    /// Returns the rows each statement deleted and how long the write lock was held.
    async fn prune_batch(
        &self,
        statements: &[&'static str],
        cutoff: &str,
        batch: i64,
    ) -> anyhow::Result<(Vec<u64>, Duration)> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await?;
        let locked = std::time::Instant::now();
        let mut counts = Vec::with_capacity(statements.len());
        for &sql in statements {
            let done = sqlx::query(sql)
                .bind(cutoff)
                .bind(batch)
                .execute(&mut *tx)
                .await
                .with_context(|| {
                    format!(
                        "pruning: {}",
                        sql.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
                    )
                })?;
            counts.push(done.rows_affected());
        }
        tx.commit().await?;
        Ok((counts, locked.elapsed()))
    }

    /// What `/metrics` reports about the database, from indexed queries only: jobs by state
    /// (from `jobs_by_state`), pending and dead deliveries by channel and the oldest pending
    /// one (from `deliveries_due`, which holds the channel too). The HTTP endpoint runs this
    /// at most once a second, however many clients scrape.
    pub async fn gauges(&self) -> anyhow::Result<DbGauges> {
        let jobs = sqlx::query("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")
            .fetch_all(&self.read)
            .await?
            .iter()
            .map(|r| (r.get::<Option<String>, _>("state"), r.get::<i64, _>("n")))
            .collect();
        let deliveries = sqlx::query(
            "SELECT channel, state, COUNT(*) AS n FROM deliveries
             WHERE state IN ('pending', 'dead') GROUP BY channel, state",
        )
        .fetch_all(&self.read)
        .await?
        .iter()
        .map(|r| DeliveryCount {
            channel: r.get("channel"),
            dead: r.get::<String, _>("state") == "dead",
            n: r.get("n"),
        })
        .collect();
        let oldest: Option<String> =
            sqlx::query_scalar("SELECT MIN(created_at) FROM deliveries WHERE state = 'pending'")
                .fetch_one(&self.read)
                .await?;
        Ok(DbGauges {
            jobs_by_state: jobs,
            deliveries,
            oldest_pending: oldest
                .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
                .map(|t| t.with_timezone(&Utc)),
        })
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

/// The rows of the jobs given as a JSON array of `[app_id, job_id]` (a row-value IN: one
/// primary-key look-up per key).
static JOBS_BY_KEY: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "{JOB_COLUMNS} WHERE (app_id, job_id) IN (SELECT value ->> 0, value ->> 1 FROM json_each(?))"
    )
});

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
    use recwatch_rtc::model::State;

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
        let (_, never) = watch::channel(false);
        let pruned = store
            .prune(now - chrono::Duration::days(90), PRUNE_BATCH, &never)
            .await
            .unwrap();
        assert_eq!(pruned.transitions, 1);
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

    /// An alert as the outbox writes it, with deliveries given as (channel, state).
    async fn alert(
        store: &Store,
        id: &str,
        at: DateTime<Utc>,
        transition: Option<i64>,
        episode: Option<i64>,
        deliveries: &[(&str, &str)],
    ) {
        let at = timestamp(at);
        sqlx::query(
            "INSERT INTO alerts (id, dedup_key, rule, severity, status, transition_id, episode_id,
                                 summary, payload, created_at)
             VALUES (?1, ?1, 'stopped_unexpectedly', 'critical', 'firing', ?2, ?3, 's', '{}', ?4)",
        )
        .bind(id)
        .bind(transition)
        .bind(episode)
        .bind(&at)
        .execute(store.writer())
        .await
        .unwrap();
        for (channel, state) in deliveries {
            sqlx::query(
                "INSERT INTO deliveries (alert_id, channel, state, next_attempt_at, created_at)
                 VALUES (?, ?, ?, ?, ?)",
            )
            .bind(id)
            .bind(channel)
            .bind(state)
            .bind(&at)
            .bind(&at)
            .execute(store.writer())
            .await
            .unwrap();
        }
    }

    async fn episode(
        store: &Store,
        job: &str,
        opened: DateTime<Utc>,
        resolved: Option<DateTime<Utc>>,
    ) -> i64 {
        sqlx::query(
            "INSERT INTO episodes (rule, app_id, job_id, opened_at, last_notified_at, resolved_at)
             VALUES ('stuck_init', 'app', ?, ?, ?, ?)",
        )
        .bind(job)
        .bind(timestamp(opened))
        .bind(timestamp(opened))
        .bind(resolved.map(timestamp))
        .execute(store.writer())
        .await
        .unwrap()
        .last_insert_rowid()
    }

    async fn count(store: &Store, sql: &'static str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(store.reader())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn prune_removes_old_alerts_deliveries_closed_episodes_and_transitions_in_batches() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("recwatch.db")).await.unwrap();
        let now = Utc::now();
        let old = now - chrono::Duration::days(100);
        let recent = now - chrono::Duration::days(1);
        let cutoff = now - chrono::Duration::days(90);

        // 7 old transitions (one job flipping), 2 recent ones.
        let mut t = Vec::new();
        let mut from: Option<&str> = None;
        for i in 0..9 {
            let to = if i % 2 == 0 { "RUNNING" } else { "STOPPED" };
            let at = if i < 7 {
                old + chrono::Duration::minutes(i)
            } else {
                recent
            };
            t.push(store.record(&[record("j", at, from, to)]).await.unwrap()[0].unwrap());
            from = Some(to);
        }
        // 5 episodes closed long ago, one still open since long ago, one closed recently.
        let mut closed = Vec::new();
        for i in 0..5 {
            closed.push(
                episode(
                    &store,
                    &format!("e{i}"),
                    old,
                    Some(old + chrono::Duration::hours(1)),
                )
                .await,
            );
        }
        let open = episode(&store, "open", old, None).await;
        let closed_recently = episode(&store, "recent", old, Some(recent)).await;

        // Old alerts whose deliveries are finished (sent or dead), or that had no channel.
        for i in 0..6 {
            let (tr, ep) = if i % 2 == 0 {
                (Some(t[i]), None)
            } else {
                (None, Some(closed[i % 5]))
            };
            alert(
                &store,
                &format!("done-{i}"),
                old,
                tr,
                ep,
                &[("hook", "sent"), ("mail", "dead")],
            )
            .await;
        }
        alert(&store, "no-channel", old, Some(t[6]), None, &[]).await;
        // Old alerts not yet delivered everywhere: kept, with all their deliveries.
        alert(
            &store,
            "pending-1",
            old,
            Some(t[0]),
            None,
            &[("hook", "pending"), ("mail", "sent")],
        )
        .await;
        alert(
            &store,
            "pending-2",
            old,
            None,
            Some(open),
            &[("mail", "pending")],
        )
        .await;
        // Recent ones: kept.
        alert(
            &store,
            "recent",
            recent,
            Some(t[8]),
            None,
            &[("hook", "sent")],
        )
        .await;

        let (_, never) = watch::channel(false);
        let pruned = store.prune(cutoff, 2, &never).await.unwrap();
        assert_eq!(
            (
                pruned.alerts,
                pruned.deliveries,
                pruned.episodes,
                pruned.transitions
            ),
            (7, 12, 5, 7),
            "{pruned:?}"
        );
        // Batches of 2: alerts 2+2+2+1, episodes 2+2+1, transitions 2+2+2+1.
        assert_eq!(pruned.batches, 4 + 3 + 4, "{pruned:?}");
        assert!(!pruned.stopped);
        assert_eq!(pruned.rows(), 31);

        let alerts: Vec<String> = sqlx::query_scalar("SELECT id FROM alerts ORDER BY id")
            .fetch_all(store.reader())
            .await
            .unwrap();
        assert_eq!(alerts, ["pending-1", "pending-2", "recent"]);
        assert_eq!(count(&store, "SELECT COUNT(*) FROM deliveries").await, 4);
        assert_eq!(
            count(
                &store,
                "SELECT COUNT(*) FROM deliveries WHERE state = 'pending'"
            )
            .await,
            2
        );
        let episodes: Vec<i64> = sqlx::query_scalar("SELECT id FROM episodes ORDER BY id")
            .fetch_all(store.reader())
            .await
            .unwrap();
        assert_eq!(episodes, [open, closed_recently]);
        assert_eq!(count(&store, "SELECT COUNT(*) FROM transitions").await, 2);
        // A kept alert whose transition was pruned keeps its frozen payload, the link is NULL.
        let link: Option<i64> =
            sqlx::query_scalar("SELECT transition_id FROM alerts WHERE id = 'pending-1'")
                .fetch_one(store.reader())
                .await
                .unwrap();
        assert_eq!(link, None);
        // The job's own row is not history: it stays.
        assert!(
            store
                .jobs()
                .await
                .unwrap()
                .contains_key(&("app".into(), "j".into()))
        );

        // Nothing left to do: one empty batch per table.
        let again = store.prune(cutoff, 2, &never).await.unwrap();
        assert_eq!((again.rows(), again.batches), (0, 3));

        // Once its last delivery is over, an old alert goes at the next prune.
        sqlx::query("UPDATE deliveries SET state = 'sent' WHERE alert_id = 'pending-2'")
            .execute(store.writer())
            .await
            .unwrap();
        let later = store.prune(cutoff, 2, &never).await.unwrap();
        assert_eq!((later.alerts, later.deliveries), (1, 1));
    }

    #[tokio::test]
    async fn a_prune_stops_between_batches_at_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("recwatch.db")).await.unwrap();
        let old = Utc::now() - chrono::Duration::days(100);
        store
            .record(&[record("j", old, None, "RUNNING")])
            .await
            .unwrap();
        let (stop, stopping) = watch::channel(false);
        stop.send(true).unwrap();
        let pruned = store.prune(Utc::now(), 2, &stopping).await.unwrap();
        assert!(pruned.stopped);
        assert_eq!((pruned.batches, pruned.rows()), (0, 0));
        assert_eq!(
            count(&store, "SELECT COUNT(*) FROM transitions").await,
            1,
            "left for the next run"
        );
    }

    #[tokio::test]
    async fn gauges_and_pages_of_jobs_come_from_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("recwatch.db")).await.unwrap();
        let now = Utc::now();
        store
            .record(&[
                record("a", now, None, "RUNNING"),
                record("b", now, None, "RUNNING"),
                record("c", now, None, "STOPPED"),
            ])
            .await
            .unwrap();
        let older = now - chrono::Duration::minutes(5);
        alert(
            &store,
            "x",
            older,
            None,
            None,
            &[("hook", "pending"), ("mail", "dead")],
        )
        .await;
        alert(
            &store,
            "y",
            now,
            None,
            None,
            &[("hook", "pending"), ("mail", "sent")],
        )
        .await;
        let g = store.gauges().await.unwrap();
        let mut jobs = g.jobs_by_state.clone();
        jobs.sort();
        assert_eq!(
            jobs,
            [(Some("RUNNING".into()), 2), (Some("STOPPED".into()), 1)]
        );
        let mut d: Vec<_> = g
            .deliveries
            .iter()
            .map(|d| (d.channel.as_str(), d.dead, d.n))
            .collect();
        d.sort();
        assert_eq!(d, [("hook", false, 2), ("mail", true, 1)]);
        assert_eq!(g.oldest_pending.map(timestamp), Some(timestamp(older)));

        // Only the asked-for jobs, and none for a job never polled.
        let rows = store
            .jobs_by_key(&[("app", "c"), ("app", "a"), ("app", "never")])
            .await
            .unwrap();
        let mut keys: Vec<_> = rows.keys().map(|(_, j)| j.as_str()).collect();
        keys.sort();
        assert_eq!(keys, ["a", "c"]);
        assert_eq!(
            rows[&("app".into(), "c".into())].state.as_deref(),
            Some("STOPPED")
        );

        // The plans: no statement here reads a whole table (`SCAN t` without an index).
        let statements = [
            "SELECT state, COUNT(*) AS n FROM jobs GROUP BY state",
            "SELECT channel, state, COUNT(*) AS n FROM deliveries WHERE state IN ('pending', 'dead') GROUP BY channel, state",
            "SELECT MIN(created_at) FROM deliveries WHERE state = 'pending'",
            JOBS_BY_KEY.as_str(),
            PRUNE_ALERTS[0],
            PRUNE_ALERTS[1],
            PRUNE_EPISODES[0],
            PRUNE_TRANSITIONS[0],
        ];
        for sql in statements {
            let plan: Vec<String> =
                sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
                    .bind("2000-01-01T00:00:00.000Z")
                    .bind(10)
                    .fetch_all(store.reader())
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| r.get::<String, _>("detail"))
                    .collect();
            let scans: Vec<&String> = plan
                .iter()
                .filter(|l| {
                    l.starts_with("SCAN") && !l.contains("INDEX") && !l.contains("json_each")
                })
                .collect();
            assert!(scans.is_empty(), "{sql}\n{plan:#?}");
            if PRUNE_ALERTS.contains(&sql) {
                // Per alert, its own deliveries, not every pending one.
                assert!(
                    plan.iter()
                        .any(|l| l.contains("SEARCH d USING PRIMARY KEY (alert_id=?)")),
                    "{sql}\n{plan:#?}"
                );
            }
        }
    }
}
