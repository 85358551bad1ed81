//! A group's poll outcomes recorded, and each job's open condition episodes read, in one call:
//! on SQLite through SQLite's C API in one go, on PostgreSQL statement by statement.
//!
//! Through sqlx every statement is a command to the connection's worker thread and an answer
//! back, and at the default budget (10 polls a second, each a job's first sight at the start)
//! those hand-offs were most of the daemon's CPU: ~65 context switches a poll for ~11
//! statements, the rest scheduler and futex time (BENCHMARKS.md part 32i). Here the
//! statements are the ones `jobs.rs`, `transitions.rs` and `episodes.rs` run through sqlx
//! (the same texts), stepped on the handle sqlx lends out (`lock_handle`, as `touch.rs` does)
//! inside the caller's transaction: one hand-off for the whole group.

use super::codec::column_time;
use super::episodes::{OPEN_OF_JOB, OpenEpisode};
use super::jobs::{ANSWER, FAILED_COUNT, FAILED_ROW, SET_STATE};
use super::scan::{Statement, failed};
use super::touch::{bind, off_the_runtime};
use super::transitions::INSERT;
use super::{StoreError, Tx, WriteTx};
use crate::domain::{Phase, PollOutcome, PollRecord, Rule, timestamp};
use libsqlite3_sys as ffi;

/// One job's outcomes to record (oldest first) and the rules whose open episodes its
/// conditions will look at (at most three).
pub struct JobPolls<'a> {
    pub app_id: &'a str,
    pub job_id: &'a str,
    pub records: &'a [PollRecord],
    pub rules: &'a [Rule],
}

/// What recording one job's outcomes gave: per outcome, the id of the transition it wrote, if
/// any (as [`JobsTx::record_poll`](crate::store::jobs::JobsTx::record_poll) returns it); the job's open episodes among its rules (as
/// [`EpisodesTx::open_episodes`](crate::store::episodes::EpisodesTx::open_episodes) reads them, after the outcomes are recorded).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobRecorded {
    pub transitions: Vec<Option<i64>>,
    pub open: Vec<(Rule, OpenEpisode)>,
}

impl WriteTx {
    /// Records each job's outcomes and reads its open episodes, job after job: what
    /// [`JobsTx::record_poll`](crate::store::jobs::JobsTx::record_poll) for each outcome and then [`EpisodesTx::open_episodes`](crate::store::episodes::EpisodesTx::open_episodes) do, on
    /// SQLite in one go on its handle.
    pub async fn record_job_polls(
        &mut self,
        jobs: &[JobPolls<'_>],
    ) -> Result<Vec<JobRecorded>, StoreError> {
        if let Tx::Sqlite(c) = &mut self.tx {
            let mut handle = c.lock_handle().await?;
            let db = handle.as_raw_handle().as_ptr();
            // SAFETY: `db` is locked away from sqlx's worker while `handle` lives, which is
            // past the end of `Pass::run`; its statements are finalized inside it.
            return off_the_runtime(|| unsafe { Pass::new(db).run(jobs) });
        }
        let mut recorded = Vec::with_capacity(jobs.len());
        for j in jobs {
            let mut transitions = Vec::with_capacity(j.records.len());
            for r in j.records {
                transitions.push(self.jobs().record_poll(r).await?);
            }
            let open = self
                .episodes()
                .open_episodes(j.rules, j.app_id, j.job_id)
                .await?;
            recorded.push(JobRecorded { transitions, open });
        }
        Ok(recorded)
    }
}

/// The statements, prepared on first use and kept for the rest of the pass.
struct Pass {
    db: *mut ffi::sqlite3,
    prepared: [Option<Statement>; 6],
}

/// Which statement, by its place in [`Pass::prepared`].
#[derive(Clone, Copy)]
enum Sql {
    Answer = 0,
    Insert,
    SetState,
    FailedRow,
    FailedCount,
    OpenOfJob,
}

impl Sql {
    fn text(self) -> &'static str {
        match self {
            Sql::Answer => ANSWER,
            Sql::Insert => INSERT,
            Sql::SetState => SET_STATE,
            Sql::FailedRow => FAILED_ROW,
            Sql::FailedCount => FAILED_COUNT,
            Sql::OpenOfJob => OPEN_OF_JOB,
        }
    }
}

impl Pass {
    /// # Safety
    /// `db` is an open handle this thread holds until the pass is dropped.
    unsafe fn new(db: *mut ffi::sqlite3) -> Pass {
        Pass {
            db,
            prepared: Default::default(),
        }
    }

    /// # Safety
    /// As [`Pass::new`].
    unsafe fn run(mut self, jobs: &[JobPolls<'_>]) -> Result<Vec<JobRecorded>, StoreError> {
        let mut recorded = Vec::with_capacity(jobs.len());
        for j in jobs {
            let mut transitions = Vec::with_capacity(j.records.len());
            for r in j.records {
                // SAFETY: as this function's contract says.
                transitions.push(unsafe { self.record(r) }?);
            }
            let mut open = Vec::new();
            for three in j.rules.chunks(3) {
                // SAFETY: as above.
                unsafe { self.open_of_job(three, j, &mut open) }?;
            }
            recorded.push(JobRecorded { transitions, open });
        }
        Ok(recorded)
    }

    /// One outcome, as [`JobsTx::record_poll`](crate::store::jobs::JobsTx::record_poll) writes it.
    ///
    /// # Safety
    /// As [`Pass::new`].
    unsafe fn record(&mut self, r: &PollRecord) -> Result<Option<i64>, StoreError> {
        let at = timestamp(r.polled_at);
        let (job, raw, request_id, transition) = match &r.outcome {
            PollOutcome::Failed { kind, error } => {
                // SAFETY: as this function's contract says.
                unsafe { self.record_failure(r, &at, kind.as_str(), error) }?;
                return Ok(None);
            }
            PollOutcome::Ok {
                job,
                raw,
                request_id,
                transition,
            } => (job, raw, request_id, transition),
        };
        let answer = [
            Some(r.app_id.as_str()),
            Some(&r.job_id),
            r.name.as_deref(),
            Some(&at),
            job.description.as_deref(),
            Some(raw),
            Some(r.kind.as_str()),
        ];
        // SAFETY: as above; the row's texts are read before the statement is reset.
        let shown = unsafe {
            self.execute(Sql::Answer, &answer, |stmt| {
                let state = text(stmt, 0)?;
                let reason = text(stmt, 1)?;
                Ok(state.map(|s| Phase::parse(s, reason)))
            })
        }?
        .flatten();
        let Some((from, to)) = transition else {
            return Ok(None);
        };
        // The guard, as `record_poll`'s: only if the row still shows `from`.
        if shown != *from {
            return Ok(None);
        }
        let insert = [
            Some(r.app_id.as_str()),
            Some(&r.job_id),
            r.name.as_deref(),
            from.as_ref().map(|p| p.state.as_str()),
            from.as_ref().and_then(Phase::stop_reason_str),
            Some(to.state.as_str()),
            to.stop_reason_str(),
            job.description.as_deref(),
            job.create_time.as_deref(),
            job.start_time.as_deref(),
            job.stop_time.as_deref(),
            job.update_time.as_deref(),
            Some(&at),
            Some(raw),
            request_id.as_deref(),
        ];
        // SAFETY: as above.
        let id = unsafe {
            self.execute(Sql::Insert, &insert, |stmt| {
                Ok(ffi::sqlite3_column_int64(stmt, 0))
            })
        }?
        .ok_or_else(|| StoreError::from(sqlx::Error::RowNotFound))?;
        let set = [
            Some(to.state.as_str()),
            to.stop_reason_str(),
            Some(&at),
            Some(&r.app_id),
            Some(&r.job_id),
        ];
        // SAFETY: as above.
        unsafe { self.execute(Sql::SetState, &set, |_| Ok(())) }?;
        Ok(Some(id))
    }

    /// A failed poll, as `record_poll` writes it: the row keeps its last state and counts it.
    ///
    /// # Safety
    /// As [`Pass::new`].
    unsafe fn record_failure(
        &mut self,
        r: &PollRecord,
        at: &str,
        kind: &str,
        error: &str,
    ) -> Result<(), StoreError> {
        let row = [
            Some(r.app_id.as_str()),
            Some(&r.job_id),
            r.name.as_deref(),
            Some(at),
            Some(r.kind.as_str()),
        ];
        // SAFETY: as this function's contract says.
        unsafe { self.execute(Sql::FailedRow, &row, |_| Ok(())) }?;
        let count = [
            Some(at),
            Some(error),
            Some(kind),
            Some(&r.app_id),
            Some(&r.job_id),
        ];
        // SAFETY: as above.
        unsafe { self.execute(Sql::FailedCount, &count, |_| Ok(())) }?;
        Ok(())
    }

    /// The job's open episodes among `three` rules, as [`EpisodesTx::open_episodes`](crate::store::episodes::EpisodesTx::open_episodes) reads them.
    ///
    /// # Safety
    /// As [`Pass::new`].
    unsafe fn open_of_job(
        &mut self,
        three: &[Rule],
        j: &JobPolls<'_>,
        open: &mut Vec<(Rule, OpenEpisode)>,
    ) -> Result<(), StoreError> {
        let rule = |i: usize| Some(three.get(i).unwrap_or(&three[0]).as_str());
        let params = [rule(0), rule(1), rule(2), Some(j.app_id), Some(j.job_id)];
        // SAFETY: as this function's contract says.
        let stmt = unsafe { self.bound(Sql::OpenOfJob, &params) }?;
        let result = loop {
            // SAFETY: as above; each row's texts are read before the next step.
            let rc = unsafe { ffi::sqlite3_step(stmt) };
            if rc == ffi::SQLITE_DONE {
                break Ok(());
            }
            if rc != ffi::SQLITE_ROW {
                // SAFETY: as above.
                break Err(unsafe { failed(self.db, rc) });
            }
            // SAFETY: as above.
            match unsafe { open_episode(stmt) } {
                Ok(row) => open.push(row),
                Err(e) => break Err(e),
            }
        };
        // SAFETY: as above.
        unsafe { ffi::sqlite3_reset(stmt) };
        result
    }

    /// Runs `sql` with `params` to its end; `row` reads its first row, if it returns one.
    ///
    /// # Safety
    /// As [`Pass::new`]; `row` reads the columns of a statement that has just stepped to a row.
    unsafe fn execute<T>(
        &mut self,
        sql: Sql,
        params: &[Option<&str>],
        row: impl FnOnce(*mut ffi::sqlite3_stmt) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        // SAFETY: as this function's contract says.
        let stmt = unsafe { self.bound(sql, params) }?;
        let mut row = Some(row);
        let mut got = None;
        let result = loop {
            // SAFETY: as above; the bound texts live until the reset below.
            let rc = unsafe { ffi::sqlite3_step(stmt) };
            match rc {
                ffi::SQLITE_DONE => break Ok(()),
                ffi::SQLITE_ROW => {
                    if let Some(read) = row.take() {
                        match read(stmt) {
                            Ok(v) => got = Some(v),
                            Err(e) => break Err(e),
                        }
                    }
                }
                // SAFETY: as above.
                _ => break Err(unsafe { failed(self.db, rc) }),
            }
        };
        // SAFETY: as above.
        unsafe { ffi::sqlite3_reset(stmt) };
        result.map(|()| got)
    }

    /// `sql`'s statement (prepared the first time), `params` bound to its parameters 1, 2, ...
    ///
    /// # Safety
    /// As [`Pass::new`]; the texts of `params` live until the statement is reset.
    unsafe fn bound(
        &mut self,
        sql: Sql,
        params: &[Option<&str>],
    ) -> Result<*mut ffi::sqlite3_stmt, StoreError> {
        let slot = &mut self.prepared[sql as usize];
        let stmt = match slot {
            Some(s) => s,
            // SAFETY: as this function's contract says.
            None => slot.insert(unsafe { prepare(self.db, sql.text()) }?),
        };
        for (i, value) in params.iter().enumerate() {
            // SAFETY: as above; parameter N is the Nth to appear in each text (see `jobs.rs`).
            unsafe { bind(self.db, stmt, i as i32 + 1, *value) }?;
        }
        Ok(stmt.0)
    }
}

/// # Safety
/// `db` is an open handle this thread holds.
unsafe fn prepare(db: *mut ffi::sqlite3, sql: &str) -> Result<Statement, StoreError> {
    let mut stmt = std::ptr::null_mut();
    // SAFETY: as the function's contract says; SQLite reads `sql.len()` bytes of it.
    let rc = unsafe {
        ffi::sqlite3_prepare_v2(
            db,
            sql.as_ptr().cast(),
            sql.len() as i32,
            &mut stmt,
            std::ptr::null_mut(),
        )
    };
    if rc != ffi::SQLITE_OK {
        // SAFETY: as above.
        return Err(unsafe { failed(db, rc) });
    }
    Ok(Statement(stmt))
}

/// Column `i` of the row `stmt` has just stepped to, as text (`None` for NULL).
///
/// # Safety
/// `stmt` has just stepped to a row; the text lives until the next step or reset.
unsafe fn text<'r>(stmt: *mut ffi::sqlite3_stmt, i: i32) -> Result<Option<&'r str>, StoreError> {
    // SAFETY: as the function's contract says; the length is read after the text.
    let bytes = unsafe {
        let p = ffi::sqlite3_column_text(stmt, i);
        if p.is_null() {
            return Ok(None);
        }
        let n = ffi::sqlite3_column_bytes(stmt, i) as usize;
        std::slice::from_raw_parts(p, n)
    };
    std::str::from_utf8(bytes)
        .map(Some)
        .map_err(|e| StoreError::from(sqlx::Error::Decode(Box::new(e))))
}

/// An `OPEN_OF_JOB` row: a rule this build does not know, or a time that is not one, fails
/// the read naming the column, as sqlx's decoding of the same row does.
///
/// # Safety
/// `stmt` has just stepped to a row of `OPEN_OF_JOB`.
unsafe fn open_episode(stmt: *mut ffi::sqlite3_stmt) -> Result<(Rule, OpenEpisode), StoreError> {
    let decode = |column: &str, e: String| {
        StoreError::from(sqlx::Error::ColumnDecode {
            index: format!("{column:?}"),
            source: e.into(),
        })
    };
    // SAFETY: as the function's contract says.
    let (rule, notified, id, reminders) = unsafe {
        (
            text(stmt, 0)?,
            text(stmt, 2)?,
            ffi::sqlite3_column_int64(stmt, 1),
            ffi::sqlite3_column_int64(stmt, 3),
        )
    };
    let rule = rule.unwrap_or_default();
    let rule = Rule::parse(rule).ok_or_else(|| decode("rule", format!("no rule {rule:?}")))?;
    let notified = notified.ok_or_else(|| decode("last_notified_at", "NULL".into()))?;
    let episode = OpenEpisode {
        id,
        last_notified_at: column_time("last_notified_at", notified)?,
        reminders,
    };
    Ok((rule, episode))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{On, both_backends, fresh, record};
    use super::*;
    use crate::domain::ErrorKind;
    use crate::store::Store;
    use chrono::{Duration, Utc};

    /// Two passes of a group: first sights, a failure, an open episode of one job's; then a
    /// death with its reason, a replay the guard refuses, a second failure.
    fn passes(t0: chrono::DateTime<Utc>) -> Vec<Vec<Vec<PollRecord>>> {
        let mut failed = record("b", t0, None, "RUNNING");
        failed.name = Some("bee".into());
        failed.outcome = PollOutcome::Failed {
            kind: ErrorKind::Connection,
            error: "connection refused".into(),
        };
        let mut failed_again = failed.clone();
        failed_again.polled_at = t0 + Duration::seconds(2);
        let mut death = record("a", t0 + Duration::seconds(1), Some("RUNNING"), "STOPPED");
        if let PollOutcome::Ok {
            job, transition, ..
        } = &mut death.outcome
        {
            job.description = Some("stopped: INTERNAL_ERROR".into());
            job.stop_time = Some("2026-12-08T04:00:00Z".into());
            let to = Phase::parse("STOPPED", Some("INTERNAL_ERROR"));
            job.stop_reason = to.stop_reason.clone();
            *transition = Some((Some(Phase::parse("RUNNING", None)), to));
        }
        vec![
            vec![
                vec![
                    record("a", t0, None, "INIT"),
                    record("a", t0, Some("INIT"), "RUNNING"),
                ],
                vec![failed],
            ],
            vec![
                vec![death, record("a", t0, None, "RUNNING")],
                vec![failed_again],
            ],
        ]
    }

    /// Writes `passes` through `write`, then returns what the store shows: each pass's answers
    /// and every job row and transition.
    async fn outcome(
        store: &Store,
        one_go: bool,
    ) -> (
        Vec<Vec<JobRecorded>>,
        Vec<super::super::JobRow>,
        Vec<super::super::TransitionRow>,
    ) {
        let rules = [Rule::StuckInit, Rule::PollFailing, Rule::JobNotFound];
        let t0 = "2026-12-08T04:00:00.000Z".parse().unwrap();
        let at = timestamp(t0);
        let mut tx = store.begin_write().await.unwrap();
        let stuck = tx
            .episodes()
            .insert(Rule::StuckInit, "app", "a", "stuck", &at)
            .await
            .unwrap();
        tx.episodes()
            .insert(Rule::JobNotFound, "app", "other", "gone", &at)
            .await
            .unwrap();
        tx.episodes()
            .insert(Rule::ApiUnhealthy, "app", "a", "not asked", &at)
            .await
            .unwrap();
        assert_eq!(stuck, 1);
        tx.commit().await.unwrap();
        let mut answers = Vec::new();
        for pass in passes(t0) {
            let mut tx = store.begin_write().await.unwrap();
            let jobs: Vec<JobPolls<'_>> = pass
                .iter()
                .map(|records| JobPolls {
                    app_id: "app",
                    job_id: &records[0].job_id,
                    records,
                    rules: &rules,
                })
                .collect();
            let got = if one_go {
                tx.record_job_polls(&jobs).await.unwrap()
            } else {
                let mut got = Vec::new();
                for j in &jobs {
                    let mut transitions = Vec::new();
                    for r in j.records {
                        transitions.push(tx.jobs().record_poll(r).await.unwrap());
                    }
                    let open = tx
                        .episodes()
                        .open_episodes(j.rules, j.app_id, j.job_id)
                        .await
                        .unwrap();
                    got.push(JobRecorded { transitions, open });
                }
                got
            };
            tx.commit().await.unwrap();
            answers.push(got);
        }
        let mut jobs: Vec<_> = store.jobs().all().await.unwrap().into_values().collect();
        jobs.sort_by(|a, b| a.job_id.cmp(&b.job_id));
        (
            answers,
            jobs,
            store.transitions().history(None, None, 100).await.unwrap(),
        )
    }

    /// SQLite's pass on its handle writes and reads what the statements through sqlx do (the
    /// path PostgreSQL takes): the same answers, rows and transitions.
    #[tokio::test]
    async fn the_one_go_on_sqlites_handle_does_what_the_statements_through_sqlx_do() {
        let (by_handle, _a) = fresh(On::Sqlite).await;
        let (by_sqlx, _b) = fresh(On::Sqlite).await;
        let (answers, jobs, history) = outcome(&by_handle, true).await;
        assert_eq!(
            (answers.clone(), jobs.clone(), history.clone()),
            outcome(&by_sqlx, false).await
        );
        // And what that is: the transitions the guard let through, the failures counted,
        // the one open episode asked for.
        let ids = |pass: &Vec<JobRecorded>| {
            pass.iter()
                .map(|j| {
                    j.transitions
                        .iter()
                        .map(Option::is_some)
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&answers[0]), vec![vec![true, true], vec![false]]);
        assert_eq!(ids(&answers[1]), vec![vec![true, false], vec![false]]);
        for pass in &answers {
            assert_eq!(
                pass[0]
                    .open
                    .iter()
                    .map(|(r, e)| (*r, e.id))
                    .collect::<Vec<_>>(),
                vec![(Rule::StuckInit, 1)]
            );
            assert_eq!(pass[1].open, vec![]);
        }
        assert_eq!(jobs[0].state.as_deref(), Some("STOPPED"));
        assert_eq!(jobs[0].stop_reason.as_deref(), Some("INTERNAL_ERROR"));
        assert_eq!(jobs[1].consecutive_failures, 2);
        assert_eq!(jobs[1].last_error.as_deref(), Some("connection refused"));
        assert_eq!(jobs[1].name.as_deref(), Some("bee"));
        assert_eq!(history.len(), 3);
        assert_eq!(
            history[0].description.as_deref(),
            Some("stopped: INTERNAL_ERROR")
        );
    }

    both_backends! {
        async fn outcomes_are_recorded_and_open_episodes_read_on_either_backend(store: Store) {
            let (answers, jobs, history) = outcome(&store, true).await;
            assert_eq!(answers[1][0].transitions.iter().filter(|t| t.is_some()).count(), 1);
            assert_eq!(answers[1][0].open.len(), 1);
            assert_eq!(jobs[0].state.as_deref(), Some("STOPPED"));
            assert_eq!(jobs[1].consecutive_failures, 2);
            assert_eq!(history.len(), 3);
        }
    }
}
