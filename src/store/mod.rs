//! The store: the only place with SQL. Per-job last snapshots (`jobs`), the transitions
//! (`transitions`), condition episodes (`episodes`), alerts with their deliveries (`alerts`,
//! `deliveries`), silences and the deliveries they hold (`silences`), the run-time watch list
//! (`watchlist`), retention (`retention`) and what `/metrics` reads (`gauges`), each behind
//! typed functions and row types; nothing outside this folder sees a statement or a row.
//!
//! This is also the seam where a PostgreSQL store plugs in next: the rest of recwatch speaks
//! to [`Store`], [`WriteTx`] and the row types, never to SQLite.
//!
//! Writes go through one connection and `BEGIN IMMEDIATE`, so recwatch never races itself for
//! the write lock; a poll's job update, its transition and the alerts it causes commit
//! together or not at all (one [`WriteTx`]). Readers (`status`, `history`, the HTTP endpoint)
//! use a separate pool and, with WAL, never block the writer.
//!
//! When writes fail (a full disk, a read-only file system, a lock held by another process,
//! the file deleted under us), [`StoreHealth`] keeps the real cause for `/readyz` and logs it
//! once, not once per poll; the write connection is replaced if a failure left it inside a
//! transaction SQLite had already rolled back, so the writer recovers by itself when the
//! cause goes away. Failures come back as [`StoreError`], whose `Locked` variant is what a
//! caller waits out ([`retry_locked`]).

pub mod alerts;
mod callback_feed;
mod callbacks;
pub mod deliveries;
mod episodes;
mod error;
mod forwards;
mod gauges;
mod group_releases;
mod health;
mod jobs;
mod page;
mod retention;
mod silences;
mod transitions;
mod watchlist;

pub use alerts::{AlertView, DeliveryView};
pub use callback_feed::EventHintRow;
pub use callbacks::{CallbackEventRow, Inserted, RecordedFileRow};
pub use episodes::OpenEpisode;
pub use error::{
    Attempt, Cause, LOCK_RETRY, LockRetry, StoreError, describe_write_error, retry_locked,
};
pub use forwards::{DueForward, ForwardOutcome, ForwardView};
pub use gauges::{DbGauges, DeliveryCount};
pub use health::{StoreHealth, WRITER_STUCK_AFTER};
pub use jobs::{JobRow, JobTouch};
pub use page::{JobPhaseRow, PhasePoint};
pub use retention::{PRUNE_BATCH, Pruned};
pub use silences::{Expired, HeldRow};
pub use transitions::TransitionRow;

use anyhow::Context;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tracing::warn;

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

/// One write transaction (`BEGIN IMMEDIATE`) on the store's write connection: what is done
/// through it commits together or, dropped without [`WriteTx::commit`], not at all. The
/// outbox writes a poll's outcome, its episodes and its alerts through one.
pub struct WriteTx {
    tx: sqlx::Transaction<'static, Sqlite>,
}

impl WriteTx {
    pub async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await?;
        Ok(())
    }

    fn conn(&mut self) -> &mut sqlx::SqliteConnection {
        &mut self.tx
    }
}

/// (device, inode) of the file at `path`, if there is one.
fn file_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

// Opening returns `anyhow`, not `StoreError`: its failures carry storage's exit codes (73 for
// a directory or file that cannot be made) and name the path and the setting to fix.
impl Store {
    /// Opens (creating the file and its directories) and migrates the database if its schema
    /// is behind, under the database's lock (see [`crate::storage::lock`]); for processes that
    /// do not own the database and may run beside a daemon.
    pub async fn open(path: &Path) -> anyhow::Result<Store> {
        let store = Store::connect(path).await?;
        crate::storage::lock::migrate_under_lock(
            path,
            || store.schema_current(),
            || store.migrate(),
        )
        .await?;
        Ok(store)
    }

    /// Opens and migrates the database for the process holding its lock (`run`, `poll-once`).
    pub async fn open_owned(
        path: &Path,
        _owner: &crate::storage::lock::OwnerLock,
    ) -> anyhow::Result<Store> {
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
        crate::storage::prepare_storage(path)?;
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
        if let Err(e) = crate::storage::writable(&self.path) {
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

    /// Starts a write transaction; it waits its turn for the one write connection.
    pub async fn begin_write(&self) -> Result<WriteTx, StoreError> {
        let tx = self.write.begin_with("BEGIN IMMEDIATE").await?;
        Ok(WriteTx { tx })
    }

    /// The write pool itself, for tests and benchmarks that set up or inspect the file
    /// directly; recwatch's own code writes through the typed functions.
    pub fn writer(&self) -> &SqlitePool {
        &self.write
    }

    /// The read pool, for tests and benchmarks that inspect the file directly.
    pub fn reader(&self) -> &SqlitePool {
        &self.read
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
    }
}

/// What the store's tests share: rows written as recwatch writes them.
#[cfg(test)]
mod test_support {
    use super::*;
    use crate::domain::Phase;
    use crate::domain::timestamp;
    use crate::domain::{PollOutcome, PollRecord};
    use chrono::{DateTime, Utc};
    use recwatch_rtc::model::{JobSnapshot, State};

    pub(super) fn record(job: &str, at: DateTime<Utc>, from: Option<&str>, to: &str) -> PollRecord {
        let phase = |s: &str| Phase::parse(s, None);
        PollRecord {
            app_id: "app".into(),
            job_id: job.into(),
            name: None,
            kind: crate::domain::JobKind::Individual,
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

    /// An alert as the outbox writes it, with deliveries given as (channel, state).
    pub(super) async fn alert(
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

    pub(super) async fn episode(
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

    pub(super) async fn count(store: &Store, sql: &'static str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(store.reader())
            .await
            .unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::record;
    use super::*;
    use crate::storage::{StorageProbe, prepare_storage, probe_storage};
    use chrono::Utc;
    use std::{fs, io};

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

    /// Whether a lock on SQLite's lock bytes of the file `probe` has open conflicts with a
    /// write lock. Asked as an open file description lock: unlike a traditional one, it sees
    /// this process's own traditional locks (SQLite's).
    fn sqlite_lock_held(probe: &fs::File) -> bool {
        use std::os::fd::AsRawFd;
        // SAFETY: an all-zero `flock` is a valid value of that plain C struct.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = libc::F_WRLCK as _;
        fl.l_whence = libc::SEEK_SET as _;
        // SQLite's PENDING_BYTE; its lock bytes are the 512 from here.
        fl.l_start = 0x4000_0000;
        fl.l_len = 512;
        // SAFETY: a valid descriptor and a valid `flock` that outlives the call.
        let rc = unsafe { libc::fcntl(probe.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) };
        assert_eq!(rc, 0, "F_OFD_GETLK: {}", io::Error::last_os_error());
        fl.l_type != libc::F_UNLCK as libc::c_short
    }

    /// `storage`'s checks against a database the store holds a read transaction on (here,
    /// beside the store's other statements).
    #[tokio::test]
    async fn an_existing_database_is_never_opened_so_sqlites_locks_stay() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("recwatch.db");
        let store = Store::open(&db).await.unwrap();
        // Kept open to the end: closing it would itself drop the locks under test.
        let probe = fs::File::open(&db).unwrap();
        let mut tx = store.writer().begin().await.unwrap();
        let _: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert!(
            sqlite_lock_held(&probe),
            "SQLite holds a lock while reading"
        );
        prepare_storage(&db).unwrap();
        assert!(
            sqlite_lock_held(&probe),
            "prepare_storage dropped SQLite's locks on the database"
        );
        assert_eq!(probe_storage(&db).unwrap(), StorageProbe::Exists);
        assert!(
            sqlite_lock_held(&probe),
            "probe_storage dropped SQLite's locks on the database"
        );
        tx.rollback().await.unwrap();
    }
}
