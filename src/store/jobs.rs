//! The `jobs` table: per watched job, what it looked like when last polled, and the write of a
//! poll's outcome (the job's row and, through [`super::transitions`], the transition it shows).

use super::{Dialect, Store, StoreError, WriteTx, transitions};
use crate::domain::Timestamp;
use crate::domain::timestamp;
use crate::domain::{JobKey, JobKind, Phase, PollOutcome, PollRecord};
use chrono::{DateTime, Utc};
use recwatch_rtc::model::JobSnapshot;
use serde::Serialize;
use std::collections::HashMap;

/// A poll that changed nothing, batched: its time and the answer as the API sent it.
#[derive(Clone, Copy, Debug)]
pub struct JobTouch<'a> {
    pub app_id: &'a str,
    pub job_id: &'a str,
    pub polled_at: DateTime<Utc>,
    pub raw: &'a str,
    pub description: Option<&'a str>,
}

/// A job's row, as `status` shows it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, Default, sqlx::FromRow)]
pub struct JobRow {
    pub app_id: String,
    pub job_id: String,
    pub name: Option<String>,
    /// `individual` or `mix` (see [`JobRow::kind`]).
    pub kind: String,
    pub state: Option<String>,
    pub stop_reason: Option<String>,
    pub description: Option<String>,
    pub first_seen_at: Option<Timestamp>,
    pub last_polled_at: Option<Timestamp>,
    pub last_ok_at: Option<Timestamp>,
    pub last_changed_at: Option<Timestamp>,
    pub last_error: Option<String>,
    pub last_error_kind: Option<String>,
    pub consecutive_failures: i64,
}

impl JobRow {
    /// The job's kind; a value this build does not know (a newer recwatch wrote it to a shared
    /// database) reads as individual, the kind every job had before there were two.
    pub fn kind(&self) -> JobKind {
        self.kind.parse().unwrap_or_default()
    }

    pub fn phase(&self) -> Option<Phase> {
        Some(Phase::parse(
            self.state.as_deref()?,
            self.stop_reason.as_deref(),
        ))
    }
}

/// The phase a job's row shows (the transition guard reads it, as the answer's upsert returns it).
#[derive(sqlx::FromRow)]
struct PhaseRow {
    state: Option<String>,
    stop_reason: Option<String>,
}

/// What `status` shows of a job's row: the columns it prints and the key, borrowed while
/// [`Jobs::each_status`] reads the row.
#[derive(Debug, Clone, Copy)]
pub struct JobStatus<'r> {
    pub app_id: &'r str,
    pub job_id: &'r str,
    pub state: Option<&'r str>,
    pub stop_reason: Option<&'r str>,
    pub description: Option<&'r str>,
    pub last_polled_at: Option<&'r str>,
    pub last_changed_at: Option<&'r str>,
    pub last_error: Option<&'r str>,
}

/// What [`JobStatus`] shows of every job's row, in its fields' order.
pub(super) const JOB_STATUS_SQL: &std::ffi::CStr =
    c"SELECT app_id, job_id, state, stop_reason, description, last_polled_at,
        last_changed_at, last_error
     FROM jobs";

impl<'r> JobStatus<'r> {
    /// A row of [`JOB_STATUS_SQL`] read by its columns (`scan`), `None` without a key (NOT
    /// NULL in the schema).
    pub(super) fn of([a, j, st, sr, d, lp, lc, le]: [Option<&'r str>; 8]) -> Option<Self> {
        Some(JobStatus {
            app_id: a?,
            job_id: j?,
            state: st,
            stop_reason: sr,
            description: d,
            last_polled_at: lp,
            last_changed_at: lc,
            last_error: le,
        })
    }
}

/// What [`Jobs::each_seed`] reads of a job's row, borrowed while the row is read.
#[derive(Debug, Clone, Copy)]
pub struct JobSeed<'r> {
    pub app_id: &'r str,
    pub job_id: &'r str,
    pub state: Option<&'r str>,
    pub stop_reason: Option<&'r str>,
    pub first_seen_at: Option<Timestamp>,
}

/// [`JobSeed`] as sqlx reads it (PostgreSQL).
#[derive(sqlx::FromRow)]
struct JobSeedRow {
    app_id: String,
    job_id: String,
    state: Option<String>,
    stop_reason: Option<String>,
    first_seen_at: Option<Timestamp>,
}

/// [`JobStatus`] as sqlx reads it (PostgreSQL).
#[derive(sqlx::FromRow)]
struct JobStatusRow {
    app_id: String,
    job_id: String,
    state: Option<String>,
    stop_reason: Option<String>,
    description: Option<String>,
    last_polled_at: Option<String>,
    last_changed_at: Option<String>,
    last_error: Option<String>,
}

impl JobStatusRow {
    fn borrowed(&self) -> JobStatus<'_> {
        JobStatus {
            app_id: &self.app_id,
            job_id: &self.job_id,
            state: self.state.as_deref(),
            stop_reason: self.stop_reason.as_deref(),
            description: self.description.as_deref(),
            last_polled_at: self.last_polled_at.as_deref(),
            last_changed_at: self.last_changed_at.as_deref(),
            last_error: self.last_error.as_deref(),
        }
    }
}

pub(super) const JOB_COLUMNS: &str = "SELECT app_id, job_id, name, kind, state, stop_reason, description, first_seen_at,
        last_polled_at, last_ok_at, last_changed_at, last_error, last_error_kind, consecutive_failures
     FROM jobs";

/// The rows of the jobs given as a JSON array of `[app_id, job_id]` bound at `$1` (a
/// row-value IN: one primary-key look-up per key).
pub(super) fn jobs_by_key(d: Dialect) -> String {
    format!(
        "{JOB_COLUMNS} WHERE (app_id, job_id) IN (SELECT value ->> 0, value ->> 1 FROM {})",
        d.json_values("$1")
    )
}

fn keyed(rows: Vec<JobRow>) -> HashMap<JobKey, JobRow> {
    rows.into_iter()
        .map(|row| (JobKey::new(&row.app_id, &row.job_id), row))
        .collect()
}

/// The `jobs` table, each watched job's last poll and phase: `store.jobs()`, a view borrowing the
/// [`Store`].
#[derive(Clone, Copy)]
pub struct Jobs<'s> {
    pub(super) store: &'s Store,
}

/// The `jobs` table, each watched job's last poll and phase, inside a write transaction:
/// `tx.jobs()`.
pub struct JobsTx<'t> {
    pub(super) tx: &'t mut WriteTx,
}

impl Jobs<'_> {
    /// Writes a batch of poll outcomes in one transaction and returns the ids of the
    /// transitions written, in order (None where a poll made none).
    pub async fn record(self, records: &[PollRecord]) -> Result<Vec<Option<i64>>, StoreError> {
        let mut tx = self.store.begin_write().await?;
        let mut ids = Vec::with_capacity(records.len());
        for r in records {
            ids.push(tx.jobs().record_poll(r).await?);
        }
        tx.commit().await?;
        Ok(ids)
    }

    /// Records polls that changed nothing, in one transaction: the poll time and the last
    /// snapshot. A row already showing a later poll (written by a full write) is left alone.
    ///
    /// Each row is tried first by a statement that leaves `consecutive_failures` out of its
    /// `SET` and only matches a row whose count is 0 already: a column of the index
    /// `jobs_by_phase` in the `SET` makes SQLite rewrite the row's index entry even when the
    /// value does not change (a quarter of the batch's cost, BENCHMARKS.md part 25d). A row
    /// whose count is not 0 (a failure written since, another writer, a database from before
    /// a restart) is then written by the full statement, so the outcome is the same.
    pub async fn touch<'a>(
        self,
        touches: impl Iterator<Item = JobTouch<'a>>,
    ) -> Result<(), StoreError> {
        let mut tx = self.store.begin_write().await?;
        if let super::Tx::Sqlite(c) = &mut tx.tx {
            // The same statements in one go on SQLite's handle (`touch.rs`).
            super::touch::touch_rows(c, touches).await?;
            return tx.commit().await;
        }
        for t in touches {
            let at = timestamp(t.polled_at);
            for sql in [
                "UPDATE jobs SET description = $1, snapshot = $2, last_polled_at = $3, last_ok_at = $3,
                        last_error = NULL, last_error_kind = NULL
                 WHERE app_id = $4 AND job_id = $5 AND (last_polled_at IS NULL OR last_polled_at < $3)
                   AND consecutive_failures = 0",
                "UPDATE jobs SET description = $1, snapshot = $2, last_polled_at = $3, last_ok_at = $3,
                        last_error = NULL, last_error_kind = NULL, consecutive_failures = 0
                 WHERE app_id = $4 AND job_id = $5 AND (last_polled_at IS NULL OR last_polled_at < $3)",
            ] {
                let written = on_tx!(tx, |c| {
                    sqlx::query(sql)
                        .bind(t.description)
                        .bind(t.raw)
                        .bind(&at)
                        .bind(t.app_id)
                        .bind(t.job_id)
                        .execute(c)
                        .await
                        .map(|r| r.rows_affected())
                })?;
                if written > 0 {
                    break;
                }
            }
        }
        tx.commit().await
    }

    /// Every job row, keyed by (app_id, job_id).
    pub async fn all(self) -> Result<HashMap<JobKey, JobRow>, StoreError> {
        let rows = on_read!(self.store, |db| sqlx::query_as::<_, JobRow>(JOB_COLUMNS)
            .fetch_all(db)
            .await)?;
        Ok(keyed(rows))
    }

    /// Every job's row as [`JobStatus`], handed to `each` as it is read: one statement, one
    /// pass over the table in key order, nothing kept here (issue 23, item 7: a look-up by key
    /// a page at a time cost SQLite four times the scan at 100,000 jobs, BENCHMARKS.md part 22).
    /// On SQLite the row is read in place through its C API (`scan`: sqlx's copy of each
    /// value and its channel were most of `status` at 100,000 jobs, part 25b).
    pub async fn each_status(self, mut each: impl FnMut(JobStatus<'_>)) -> Result<(), StoreError> {
        use futures_util::TryStreamExt;
        if let Some(b) = self.store.backend.sqlite() {
            return super::scan::each_text_row(b, JOB_STATUS_SQL, |r| {
                if let Some(row) = JobStatus::of(r) {
                    each(row)
                }
            })
            .await;
        }
        on_read!(self.store, |db| {
            let sql = JOB_STATUS_SQL.to_str().expect("the statement is ASCII");
            let mut rows = sqlx::query_as::<_, JobStatusRow>(sql).fetch(db);
            loop {
                match rows.try_next().await {
                    Ok(Some(row)) => each(row.borrowed()),
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(e),
                }
            }
        })?;
        Ok(())
    }

    /// What the poller arms each job with from its row (its phase and when it was first
    /// seen), handed to `each` as it is read: one pass over the table, nothing kept here.
    /// Every row whole (`jobs`, fourteen columns each its own allocation) held at once at
    /// start was the daemon's peak at 100,000 stored rows, and what it freed among the jobs'
    /// states stayed in RSS as holes (issue 23, item 1, BENCHMARKS.md part 27a).
    pub async fn each_seed(self, mut each: impl FnMut(JobSeed<'_>)) -> Result<(), StoreError> {
        use futures_util::TryStreamExt;
        const SQL: &std::ffi::CStr =
            c"SELECT app_id, job_id, state, stop_reason, first_seen_at FROM jobs";
        if let Some(b) = self.store.backend.sqlite() {
            // The first time that is not a time fails the read, as sqlx's decoding would.
            let mut bad = None;
            super::scan::each_text_row(b, SQL, |[a, j, state, stop_reason, first]| {
                // The key is NOT NULL in the schema.
                let (Some(app_id), Some(job_id)) = (a, j) else {
                    return;
                };
                let first_seen_at = match first.map(|t| super::column_time("first_seen_at", t)) {
                    Some(Err(e)) => return bad = bad.take().or(Some(e)),
                    Some(Ok(t)) => Some(t),
                    None => None,
                };
                each(JobSeed {
                    app_id,
                    job_id,
                    state,
                    stop_reason,
                    first_seen_at,
                })
            })
            .await?;
            return bad.map_or(Ok(()), Err);
        }
        on_read!(self.store, |db| {
            let sql = SQL.to_str().expect("the statement is ASCII");
            let mut rows = sqlx::query_as::<_, JobSeedRow>(sql).fetch(db);
            loop {
                match rows.try_next().await {
                    Ok(Some(r)) => each(JobSeed {
                        app_id: &r.app_id,
                        job_id: &r.job_id,
                        state: r.state.as_deref(),
                        stop_reason: r.stop_reason.as_deref(),
                        first_seen_at: r.first_seen_at,
                    }),
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(e),
                }
            }
        })?;
        Ok(())
    }

    /// One job's row, if it has one.
    pub async fn get(self, app_id: &str, job_id: &str) -> Result<Option<JobRow>, StoreError> {
        let sql = format!("{JOB_COLUMNS} WHERE app_id = $1 AND job_id = $2");
        Ok(on_read!(self.store, |db| sqlx::query_as::<_, JobRow>(
            sqlx::AssertSqlSafe(sql.as_str())
        )
        .bind(app_id)
        .bind(job_id)
        .fetch_optional(db)
        .await)?)
    }

    /// The rows of these jobs only (one page of `/api/v1/jobs`), keyed by (app_id, job_id);
    /// a job never polled has none. One statement: the keys go in as a JSON array and each
    /// is a primary-key look-up, so the cost follows the page, not the table.
    pub async fn by_key(
        self,
        keys: &[(&str, &str)],
    ) -> Result<HashMap<JobKey, JobRow>, StoreError> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let keys = serde_json::to_string(keys)?;
        let rows = on_read!(self.store, |db, d| sqlx::query_as::<_, JobRow>(
            sqlx::AssertSqlSafe(jobs_by_key(d))
        )
        .bind(&keys)
        .fetch_all(db)
        .await)?;
        Ok(keyed(rows))
    }
}

// A poll's statements, shared with SQLite's path in one go (`record.rs`), which binds
// parameter N to the Nth placeholder to appear: each text names $1, $2, ... in that order.

/// An answer's upsert: the row's snapshot and poll times. It leaves `state` and `stop_reason`
/// as they are, so what it returns of them is what the row showed (the transition's guard).
pub(super) const ANSWER: &str =
    "INSERT INTO jobs (app_id, job_id, name, first_seen_at, description, snapshot,
                   last_polled_at, last_ok_at, kind)
 VALUES ($1, $2, $3, $4, $5, $6, $4, $4, $7)
 ON CONFLICT (app_id, job_id) DO UPDATE SET
     name = excluded.name, kind = excluded.kind, description = excluded.description,
     snapshot = excluded.snapshot, last_polled_at = excluded.last_polled_at,
     last_ok_at = excluded.last_ok_at, last_error = NULL,
     last_error_kind = NULL, consecutive_failures = 0
 RETURNING state, stop_reason";
/// A transition's change of the row's phase.
pub(super) const SET_STATE: &str = "UPDATE jobs SET state = $1, stop_reason = $2, last_changed_at = $3 WHERE app_id = $4 AND job_id = $5";
/// A failed poll's row, made if the job has none.
pub(super) const FAILED_ROW: &str =
    "INSERT INTO jobs (app_id, job_id, name, first_seen_at, kind) VALUES ($1, $2, $3, $4, $5)
 ON CONFLICT (app_id, job_id) DO UPDATE SET name = excluded.name, kind = excluded.kind";
/// A failed poll counted on its row, which keeps its last state.
pub(super) const FAILED_COUNT: &str =
    "UPDATE jobs SET last_polled_at = $1, last_error = $2, last_error_kind = $3,
        consecutive_failures = consecutive_failures + 1
 WHERE app_id = $4 AND job_id = $5";

impl JobsTx<'_> {
    /// One poll's writes: the job's row and, if the poll is a transition the row still
    /// agrees with, the transition. Returns the new transition's id.
    pub async fn record_poll(&mut self, r: &PollRecord) -> Result<Option<i64>, StoreError> {
        let at = timestamp(r.polled_at);
        match &r.outcome {
            PollOutcome::Failed { kind, error } => {
                self.record_failure(r, kind.as_str(), error, &at).await?;
                Ok(None)
            }
            PollOutcome::Ok {
                job,
                raw,
                request_id,
                transition,
            } => {
                let shown = self.record_answer(r, job, raw, &at).await?;
                let Some((from, to)) = transition else {
                    return Ok(None);
                };
                // Guard: write the transition only if the row still shows `from`. recwatch has
                // one writer, so this never skips in practice; it makes a duplicate impossible
                // even if a second daemon is pointed at the same file by mistake.
                if shown != *from {
                    return Ok(None);
                }
                let new = transitions::NewTransition {
                    record: r,
                    job,
                    raw,
                    request_id: request_id.as_deref(),
                    from: from.as_ref(),
                    to,
                    at: &at,
                };
                let id = self.tx.transitions().insert(&new).await?;
                on_tx!(self.tx, |c| {
                    sqlx::query(SET_STATE)
                        .bind(to.state.as_str())
                        .bind(to.stop_reason_str())
                        .bind(&at)
                        .bind(&r.app_id)
                        .bind(&r.job_id)
                        .execute(c)
                        .await
                        .map(|_| ())
                })?;
                Ok(Some(id))
            }
        }
    }

    /// How many of the job's polls in a row have failed, as its row counts them (inside this
    /// transaction, so the poll just recorded is counted); 0 for a job with no row.
    pub async fn consecutive_failures(
        &mut self,
        app_id: &str,
        job_id: &str,
    ) -> Result<i64, StoreError> {
        let n: Option<i64> = on_tx!(self.tx, |c| sqlx::query_scalar::<_, i64>(
            "SELECT consecutive_failures FROM jobs WHERE app_id = $1 AND job_id = $2",
        )
        .bind(app_id)
        .bind(job_id)
        .fetch_optional(c)
        .await)?;
        Ok(n.unwrap_or(0))
    }

    /// A failed poll: the row keeps its last state and counts the failure.
    async fn record_failure(
        &mut self,
        r: &PollRecord,
        kind: &str,
        error: &str,
        at: &str,
    ) -> Result<(), StoreError> {
        on_tx!(self.tx, |c| {
            sqlx::query(FAILED_ROW)
                .bind(&r.app_id)
                .bind(&r.job_id)
                .bind(&r.name)
                .bind(at)
                .bind(r.kind.as_str())
                .execute(&mut *c)
                .await?;
            sqlx::query(FAILED_COUNT)
                .bind(at)
                .bind(error)
                .bind(kind)
                .bind(&r.app_id)
                .bind(&r.job_id)
                .execute(&mut *c)
                .await?;
            Ok(())
        })
    }

    /// An answer: the row's snapshot and poll times; its state is the transition's to change.
    /// Returns the phase the row shows (None before its first answer), for the transition's
    /// guard: the statement leaves `state` and `stop_reason` as they are, so what it returns
    /// of them is what the row showed, read in the same statement rather than a second one.
    async fn record_answer(
        &mut self,
        r: &PollRecord,
        job: &JobSnapshot,
        raw: &str,
        at: &str,
    ) -> Result<Option<Phase>, StoreError> {
        // One statement for the common case (no change): every poll pays for it.
        let row = on_tx!(self.tx, |c| sqlx::query_as::<_, PhaseRow>(ANSWER)
            .bind(&r.app_id)
            .bind(&r.job_id)
            .bind(&r.name)
            .bind(at)
            .bind(&job.description)
            .bind(raw)
            .bind(r.kind.as_str())
            .fetch_one(c)
            .await)?;
        Ok(row
            .state
            .map(|state| Phase::parse(&state, row.stop_reason.as_deref())))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::record;
    use super::*;
    use crate::domain::ErrorKind;
    use crate::store::test_support::both_backends;

    both_backends! {
        async fn a_failed_poll_keeps_the_last_state_and_counts_failures(store: Store) {
            store
                .jobs().record(&[record("j", Utc::now(), None, "RUNNING")])
                .await
                .unwrap();
            let failed = PollRecord {
                app_id: "app".into(),
                job_id: "j".into(),
                name: None,
                kind: crate::domain::JobKind::Individual,
                polled_at: Utc::now(),
                outcome: PollOutcome::Failed {
                    kind: ErrorKind::Timeout,
                    error: "timed out".into(),
                },
            };
            store.jobs().record(&[failed.clone(), failed]).await.unwrap();
            let row = &store.jobs().all().await.unwrap()[&JobKey::new("app", "j")];
            assert_eq!(row.state.as_deref(), Some("RUNNING"));
            assert_eq!(row.consecutive_failures, 2);
            assert_eq!(row.last_error_kind.as_deref(), Some("timeout"));
        }
    }

    both_backends! {
        async fn a_touch_records_an_unchanged_poll_but_never_goes_back_in_time(store: Store) {
            let t0 = Utc::now();
            store
                .jobs().record(&[record("j", t0, None, "RUNNING")])
                .await
                .unwrap();
            let failed = PollRecord {
                app_id: "app".into(),
                job_id: "j".into(),
                name: None,
                kind: crate::domain::JobKind::Individual,
                polled_at: t0 + chrono::Duration::seconds(1),
                outcome: PollOutcome::Failed {
                    kind: ErrorKind::Timeout,
                    error: "timed out".into(),
                },
            };
            store.jobs().record(&[failed]).await.unwrap();
            let touch = |secs, description| JobTouch {
                app_id: "app",
                job_id: "j",
                polled_at: t0 + chrono::Duration::seconds(secs),
                raw: "{}",
                description,
            };
            store
                .jobs().touch([touch(5, Some("recording"))].into_iter())
                .await
                .unwrap();
            let row = store.jobs().get("app", "j").await.unwrap().unwrap();
            let at5 = Timestamp::from(t0 + chrono::Duration::seconds(5));
            assert_eq!(row.last_polled_at, Some(at5));
            assert_eq!(row.last_ok_at, Some(at5));
            assert_eq!(row.description.as_deref(), Some("recording"));
            assert_eq!((row.consecutive_failures, row.last_error), (0, None));
            assert_eq!(
                row.state.as_deref(),
                Some("RUNNING"),
                "a touch is no change"
            );

            // An older touch (overtaken by a full write) leaves the newer row alone; a job with
            // no row gets none from a touch.
            store
                .jobs().touch(
                    [
                        touch(3, Some("older")),
                        JobTouch {
                            job_id: "never",
                            ..touch(9, None)
                        },
                    ]
                    .into_iter(),
                )
                .await
                .unwrap();
            let row = store.jobs().get("app", "j").await.unwrap().unwrap();
            assert_eq!(row.last_polled_at, Some(at5));
            assert_eq!(row.description.as_deref(), Some("recording"));
            assert_eq!(store.jobs().get("app", "never").await.unwrap(), None);

            // A touch of a row whose count is 0 already (the statement without the indexed
            // column) writes the same.
            store
                .jobs().touch([touch(7, Some("still recording"))].into_iter())
                .await
                .unwrap();
            let row = store.jobs().get("app", "j").await.unwrap().unwrap();
            let at7 = Timestamp::from(t0 + chrono::Duration::seconds(7));
            assert_eq!(row.last_polled_at, Some(at7));
            assert_eq!(row.last_ok_at, Some(at7));
            assert_eq!(row.description.as_deref(), Some("still recording"));
            assert_eq!((row.consecutive_failures, row.last_error), (0, None));
        }
    }

    both_backends! {
        async fn a_seed_is_what_the_row_says(store: Store) {
            let t0 = Utc::now();
            store
                .jobs().record(&[
                    record("running", t0, None, "RUNNING"),
                    record("stopped", t0, Some("RUNNING"), "STOPPED"),
                ])
                .await
                .unwrap();
            let mut seen = Vec::new();
            store
                .jobs().each_seed(|s| {
                    seen.push((
                        s.job_id.to_string(),
                        s.state.map(str::to_string),
                        s.stop_reason.map(str::to_string),
                        s.first_seen_at,
                    ))
                })
                .await
                .unwrap();
            seen.sort();
            let rows = store.jobs().all().await.unwrap();
            let want: Vec<_> = ["running", "stopped"]
                .iter()
                .map(|j| {
                    let r = &rows[&JobKey::new("app", *j)];
                    (
                        j.to_string(),
                        r.state.clone(),
                        r.stop_reason.clone(),
                        r.first_seen_at,
                    )
                })
                .collect();
            assert_eq!(seen, want);
            assert!(seen.iter().all(|s| s.3.is_some()), "first_seen_at read");
        }
    }
}
