//! The `transitions` table: one row per change of (state, stop_reason), written once, in the
//! transaction of the poll that showed it; read back by `history`.

use super::{Store, StoreError, WriteTx};
use crate::domain::Phase;
use crate::domain::PollRecord;
use crate::domain::Timestamp;
use crate::domain::timestamp;
use chrono::{DateTime, Utc};
use recwatch_rtc::model::JobSnapshot;
use serde::Serialize;

/// A transition as stored.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, sqlx::FromRow)]
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
    pub observed_at: Timestamp,
    /// The X-request-Id of the answer that showed this transition.
    pub request_id: Option<String>,
    /// The job this one was created to replace (`[remediate]`), on its first transition.
    /// Filled by [`super::Remediations::link_replacements`].
    #[sqlx(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
    /// The job that replaced this one, on the death it was re-created after.
    #[sqlx(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaced_by: Option<String>,
}

impl TransitionRow {
    /// Whether this transition is a job's end (to STOPPED): the death a remediation follows.
    pub fn is_stop(&self) -> bool {
        crate::domain::State::parse(&self.to_state) == crate::domain::State::Stopped
    }
}

/// What a new transition row is made of.
pub(super) struct NewTransition<'a> {
    pub record: &'a PollRecord,
    pub job: &'a JobSnapshot,
    pub raw: &'a str,
    pub request_id: Option<&'a str>,
    pub from: Option<&'a Phase>,
    pub to: &'a Phase,
    /// The poll's time, as stored.
    pub at: &'a str,
}

/// The `transitions` table, every change of phase seen: `store.transitions()`, a view borrowing the
/// [`Store`].
#[derive(Clone, Copy)]
pub struct Transitions<'s> {
    pub(super) store: &'s Store,
}

/// The `transitions` table, every change of phase seen, inside a write transaction:
/// `tx.transitions()`.
pub struct TransitionsTx<'t> {
    pub(super) tx: &'t mut WriteTx,
}

/// A new transition's row (shared with SQLite's path in one go, `record.rs`: its parameters
/// appear in order).
pub(super) const INSERT: &str =
    "INSERT INTO transitions (app_id, job_id, name, from_state, from_stop_reason, to_state,
     stop_reason, description, create_time, start_time, stop_time, update_time,
     observed_at, snapshot, request_id)
 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
 RETURNING id";

impl TransitionsTx<'_> {
    pub(super) async fn insert(&mut self, t: &NewTransition<'_>) -> Result<i64, StoreError> {
        Ok(on_tx!(self.tx, |c| sqlx::query_scalar::<_, i64>(INSERT)
            .bind(&t.record.app_id)
            .bind(&t.record.job_id)
            .bind(&t.record.name)
            .bind(t.from.map(|p| p.state.as_str()))
            .bind(t.from.and_then(Phase::stop_reason_str))
            .bind(t.to.state.as_str())
            .bind(t.to.stop_reason_str())
            .bind(&t.job.description)
            .bind(&t.job.create_time)
            .bind(&t.job.start_time)
            .bind(&t.job.stop_time)
            .bind(&t.job.update_time)
            .bind(t.at)
            .bind(t.raw)
            .bind(t.request_id)
            .fetch_one(c)
            .await)?)
    }
}

impl Transitions<'_> {
    /// Transitions, newest first, optionally for one job id and since a time.
    pub async fn history(
        self,
        job_id: Option<&str>,
        since: Option<DateTime<Utc>>,
        limit: i64,
    ) -> Result<Vec<TransitionRow>, StoreError> {
        let since = since.map(timestamp);
        // Two statements, not `($1 IS NULL OR job_id = $1)`: SQLite plans before it sees the
        // parameter, so the OR form walks the time index over every job (300 ms on a million
        // rows) instead of seeking transitions_by_job (under a millisecond).
        let query = if job_id.is_some() {
            "SELECT id, app_id, job_id, name, from_state, to_state, stop_reason, description,
                    create_time, start_time, stop_time, update_time, observed_at, request_id
             FROM transitions
             WHERE job_id = $1 AND ($2 IS NULL OR observed_at >= $2)
             ORDER BY observed_at DESC, id DESC
             LIMIT $3"
        } else {
            "SELECT id, app_id, job_id, name, from_state, to_state, stop_reason, description,
                    create_time, start_time, stop_time, update_time, observed_at, request_id
             FROM transitions
             WHERE $1 IS NULL AND ($2 IS NULL OR observed_at >= $2)
             ORDER BY observed_at DESC, id DESC
             LIMIT $3"
        };
        Ok(on_read!(self.store, |db| {
            sqlx::query_as::<_, TransitionRow>(query)
                .bind(job_id)
                .bind(&since)
                .bind(limit)
                .fetch_all(db)
                .await
        })?)
    }
}

#[cfg(test)]
mod tests {
    use super::super::PRUNE_BATCH;
    use super::super::test_support::record;
    use super::*;
    use crate::store::test_support::both_backends;
    use tokio::sync::watch;

    both_backends! {
        async fn writes_once_filters_history_and_prunes(store: Store) {
            let old = Utc::now() - chrono::Duration::days(100);
            let now = Utc::now();
            let ids = store
                .jobs().record(&[
                    record("j1", old, None, "INIT"),
                    record("j1", now, Some("INIT"), "RUNNING"),
                    record("j2", now, None, "INIT"),
                ])
                .await
                .unwrap();
            assert!(ids.iter().all(Option::is_some));
            // The same transition again (a second writer, a replay): the guard refuses it.
            let again = store
                .jobs().record(&[record("j1", now, Some("INIT"), "RUNNING")])
                .await
                .unwrap();
            assert_eq!(again, vec![None]);
            assert_eq!(store.transitions().history(None, None, 100).await.unwrap().len(), 3);
            let j1 = store.transitions().history(Some("j1"), None, 100).await.unwrap();
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
                .transitions().history(None, Some(now - chrono::Duration::hours(1)), 100)
                .await
                .unwrap();
            assert_eq!(recent.len(), 2);
            let (_, never) = watch::channel(false);
            let pruned = store
                .db().prune(now - chrono::Duration::days(90), PRUNE_BATCH, &never)
                .await
                .unwrap();
            assert_eq!(pruned.transitions, 1);
            assert_eq!(store.transitions().history(None, None, 100).await.unwrap().len(), 2);
            let jobs = store.jobs().all().await.unwrap();
            assert_eq!(
                jobs[&crate::domain::JobKey::new("app", "j1")]
                    .state
                    .as_deref(),
                Some("RUNNING")
            );
        }
    }
}
