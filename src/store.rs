//! The SQLite store: per-job last snapshots, the transitions, and (see `outbox`) alerts with
//! their pending deliveries.
//!
//! Writes go through one connection and `BEGIN IMMEDIATE`, so recwatch never races itself for
//! the write lock; a poll's job update, its transition and the alerts it causes commit
//! together or not at all. Readers (`status`, `history`, the HTTP endpoint) use a separate
//! pool and, with WAL, never block the writer.

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
use std::time::Duration;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How long a statement waits for another process's write lock before failing.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Store {
    /// One connection: all of recwatch's writes queue here instead of fighting over the lock.
    write: SqlitePool,
    read: SqlitePool,
    path: PathBuf,
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
    /// Opens (creating the file and its directories) and migrates the database.
    pub async fn open(path: &Path) -> anyhow::Result<Store> {
        // The directory 0700 and the file 0600 whatever the umask; a failure exits 73.
        crate::startup::prepare_storage(path)?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a committed alert survives a power cut, not just a crash.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone())
            .await
            .with_context(|| {
                format!(
                    "cannot open the database {}; check storage.path and its permissions",
                    path.display()
                )
            })?;
        MIGRATOR
            .run(&write)
            .await
            .with_context(|| format!("cannot migrate the database {}", path.display()))?;
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await
            .with_context(|| format!("cannot open the database {} for reading", path.display()))?;
        Ok(Store {
            write,
            read,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
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
        let rows = sqlx::query(
            "SELECT app_id, job_id, name, state, stop_reason, description, first_seen_at, last_polled_at,
                    last_ok_at, last_changed_at, last_error, last_error_kind, consecutive_failures FROM jobs",
        )
        .fetch_all(&self.read)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let row = JobRow {
                    app_id: r.get(0),
                    job_id: r.get(1),
                    name: r.get(2),
                    state: r.get(3),
                    stop_reason: r.get(4),
                    description: r.get(5),
                    first_seen_at: r.get(6),
                    last_polled_at: r.get(7),
                    last_ok_at: r.get(8),
                    last_changed_at: r.get(9),
                    last_error: r.get(10),
                    last_error_kind: r.get(11),
                    consecutive_failures: r.get(12),
                };
                ((row.app_id.clone(), row.job_id.clone()), row)
            })
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
}
