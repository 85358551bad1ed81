//! The `remediations` table (issue 15): a re-creation's intent, written in the transaction of
//! the death that caused it, and its life (`domain::RemediationState`): marked `posting` in
//! its own commit before the POST, its answer recorded with the new job's watch-list entry
//! and the death's alert completed (or a follow-up) in one transaction. Lineage (a job and the
//! jobs that replaced it) is the `lineage` column: the first job of the chain.
//!
//! Portable SQL only ($N placeholders, ON CONFLICT, RETURNING; times as RFC 3339 text bound
//! from Rust), so the PostgreSQL store runs the same statements.

use super::{Store, StoreError, WriteTx};
use crate::domain::Timestamp;
use crate::domain::timestamp;
use crate::remediation::domain::RemediationState;
use chrono::{DateTime, Utc};

/// A remediation as [`Remediations::link_replacements`] reads it: found by its death's transition
/// (`first` 0) or by the job it made, whose first transition is shown (`first` 1).
#[derive(sqlx::FromRow)]
struct LinkRow {
    first: i64,
    transition_id: Option<i64>,
    app_id: String,
    old_job_id: String,
    new_job_id: Option<String>,
}

/// A remediation as stored.
#[derive(Clone, Debug, serde::Serialize, sqlx::FromRow)]
pub struct RemediationRow {
    pub id: i64,
    pub app_id: String,
    /// The dead job.
    pub old_job_id: String,
    /// The first job of the chain of replacements this one belongs to.
    pub lineage: String,
    /// `individual` or `mix`.
    pub kind: String,
    #[serde(skip)]
    pub transition_id: Option<i64>,
    /// The death's alert, completed with the outcome while it is still held.
    pub alert_id: Option<String>,
    pub stop_reason: Option<String>,
    pub state: RemediationState,
    /// Why it was skipped (`dry_run`, `exhausted`, `cannot_rebuild: ...`).
    pub reason: Option<String>,
    /// The dead job's last Show answer: what the create is built from.
    #[serde(skip)]
    pub snapshot: String,
    /// The dead job's name and channels, given to its replacement.
    pub name: Option<String>,
    #[serde(skip)]
    pub notify: Option<String>,
    pub new_job_id: Option<String>,
    pub error: Option<String>,
    /// The create answer's X-Request-Id.
    pub request_id: Option<String>,
    pub attempts: i64,
    #[serde(skip)]
    pub next_attempt_at: Timestamp,
    pub created_at: Timestamp,
    pub posted_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
}

/// An intent (or a skip) as the outbox writes it with the death.
#[derive(Clone, Debug)]
pub struct NewRemediation<'a> {
    pub app_id: &'a str,
    pub old_job_id: &'a str,
    pub lineage: &'a str,
    pub kind: &'a str,
    pub transition_id: i64,
    pub alert_id: Option<&'a str>,
    pub stop_reason: Option<&'a str>,
    pub state: RemediationState,
    pub reason: Option<&'a str>,
    pub snapshot: &'a str,
    pub name: Option<&'a str>,
    /// JSON array of channel names; None: every channel.
    pub notify: Option<String>,
    pub now: DateTime<Utc>,
}

/// How a POST ended, as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finished<'a> {
    pub state: RemediationState,
    pub new_job_id: Option<&'a str>,
    pub error: Option<&'a str>,
    pub request_id: Option<&'a str>,
    pub at: DateTime<Utc>,
}

const COLUMNS: &str = "SELECT id, app_id, old_job_id, lineage, kind, transition_id, alert_id,
    stop_reason, state, reason, snapshot, name, notify, new_job_id, error, request_id, attempts,
    next_attempt_at, created_at, posted_at, finished_at FROM remediations";

/// Remediation intents, their outcomes and lineages: `store.remediations()`, a view borrowing the
/// [`Store`].
#[derive(Clone, Copy)]
pub struct Remediations<'s> {
    pub(super) store: &'s Store,
}

/// Remediation intents, their outcomes and lineages, inside a write transaction:
/// `tx.remediations()`.
pub struct RemediationsTx<'t> {
    pub(super) tx: &'t mut WriteTx,
}

impl RemediationsTx<'_> {
    /// The lineage `job_id` belongs to: the lineage of the remediation that created it, or
    /// itself.
    pub async fn lineage(&mut self, app_id: &str, job_id: &str) -> Result<String, StoreError> {
        let lineage: Option<String> = on_tx!(self.tx, |c| sqlx::query_scalar(
            "SELECT lineage FROM remediations WHERE app_id = $1 AND new_job_id = $2 LIMIT 1",
        )
        .bind(app_id)
        .bind(job_id)
        .fetch_optional(&mut *c)
        .await)?;
        Ok(lineage.unwrap_or_else(|| job_id.to_string()))
    }

    /// How many re-creations a lineage had since `since` (attempted ones count: a 4xx or an
    /// unknown outcome used a try; a skip did not).
    pub async fn lineage_restarts(
        &mut self,
        app_id: &str,
        lineage: &str,
        since: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        Ok(on_tx!(self.tx, |c| sqlx::query_scalar(
            "SELECT COUNT(*) FROM remediations
             WHERE app_id = $1 AND lineage = $2 AND created_at >= $3 AND state <> 'skipped'",
        )
        .bind(app_id)
        .bind(lineage)
        .bind(timestamp(since))
        .fetch_one(&mut *c)
        .await)?)
    }

    /// Writes an intent (or a skip); `None` when this death already has one (a replayed
    /// transition never acts twice).
    pub async fn insert(&mut self, r: &NewRemediation<'_>) -> Result<Option<i64>, StoreError> {
        let at = timestamp(r.now);
        Ok(on_tx!(self.tx, |c| sqlx::query_scalar(
            "INSERT INTO remediations (app_id, old_job_id, lineage, kind, transition_id, alert_id,
                 stop_reason, state, reason, snapshot, name, notify, next_attempt_at, created_at,
                 finished_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13,
                 CASE WHEN $8 = 'skipped' THEN $13 END)
             ON CONFLICT (transition_id) DO NOTHING RETURNING id",
        )
        .bind(r.app_id)
        .bind(r.old_job_id)
        .bind(r.lineage)
        .bind(r.kind)
        .bind(r.transition_id)
        .bind(r.alert_id)
        .bind(r.stop_reason)
        .bind(r.state.as_str())
        .bind(r.reason)
        .bind(r.snapshot)
        .bind(r.name)
        .bind(&r.notify)
        .bind(&at)
        .fetch_optional(&mut *c)
        .await)?)
    }

    /// Holds an alert's pending deliveries until `until` (the death's alert waits for the
    /// remediation's outcome).
    pub async fn hold_deliveries(
        &mut self,
        alert_id: &str,
        until: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        on_tx!(self.tx, |c| sqlx::query(
            "UPDATE deliveries SET next_attempt_at = $2
             WHERE alert_id = $1 AND state = 'pending' AND attempts = 0",
        )
        .bind(alert_id)
        .bind(timestamp(until))
        .execute(&mut *c)
        .await
        .map(|d| d.rows_affected()))?;
        Ok(())
    }

    /// The payload of alert `alert_id` while it is still held: made after `made_after` (its
    /// wait is not over, also when it has no delivery at all) and every delivery still
    /// pending, never attempted, and held past `cutoff`. `None` when one may be on its way
    /// (the outcome then goes out as a follow-up).
    pub async fn held_alert_payload(
        &mut self,
        alert_id: &str,
        made_after: DateTime<Utc>,
        cutoff: DateTime<Utc>,
    ) -> Result<Option<String>, StoreError> {
        Ok(on_tx!(self.tx, |c| sqlx::query_scalar(
            "SELECT payload FROM alerts a WHERE id = $1 AND created_at > $3 AND NOT EXISTS (
                 SELECT 1 FROM deliveries d WHERE d.alert_id = a.id
                   AND (d.state <> 'pending' OR d.attempts > 0 OR d.next_attempt_at <= $2))",
        )
        .bind(alert_id)
        .bind(timestamp(cutoff))
        .bind(timestamp(made_after))
        .fetch_optional(&mut *c)
        .await)?)
    }

    /// Rewrites a held alert's payload and summary and releases its deliveries at `release`.
    pub async fn complete_held_alert(
        &mut self,
        alert_id: &str,
        payload: &str,
        summary: &str,
        release: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        on_tx!(self.tx, |c| sqlx::query(
            "UPDATE alerts SET payload = $2, summary = $3 WHERE id = $1"
        )
        .bind(alert_id)
        .bind(payload)
        .bind(summary)
        .execute(&mut *c)
        .await
        .map(|d| d.rows_affected()))?;
        // Released by the statement that held them: a hold is a next attempt moved.
        self.hold_deliveries(alert_id, release).await
    }

    /// Records how a POST ended; false (nothing written) unless the row was `posting`.
    pub async fn finish(&mut self, id: i64, f: &Finished<'_>) -> Result<bool, StoreError> {
        let done = on_tx!(self.tx, |c| sqlx::query(
            "UPDATE remediations SET state = $2, new_job_id = $3, error = $4, request_id = $5,
                 finished_at = $6
             WHERE id = $1 AND state = 'posting'",
        )
        .bind(id)
        .bind(f.state.as_str())
        .bind(f.new_job_id)
        .bind(f.error)
        .bind(f.request_id)
        .bind(timestamp(f.at))
        .execute(&mut *c)
        .await
        .map(|d| d.rows_affected()))?;
        Ok(done == 1)
    }
}

impl Remediations<'_> {
    /// Pending intents due at `now`, oldest first.
    pub async fn due(
        self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<RemediationRow>, StoreError> {
        Ok(on_read!(self.store, |db| sqlx::query_as::<
            _,
            RemediationRow,
        >(sqlx::AssertSqlSafe(
            format!(
                "{COLUMNS} WHERE state = 'pending' AND next_attempt_at <= $1 ORDER BY id LIMIT $2"
            )
        ))
        .bind(timestamp(now))
        .bind(limit)
        .fetch_all(db)
        .await)?)
    }

    /// When the next pending intent falls due, if any.
    pub async fn next_at(self) -> Result<Option<String>, StoreError> {
        Ok(on_read!(self.store, |db| sqlx::query_scalar(
            "SELECT MIN(next_attempt_at) FROM remediations WHERE state = 'pending'",
        )
        .fetch_one(db)
        .await)?)
    }

    /// Rows left in `posting`: a previous run died between a POST and its answer.
    pub async fn stranded(self) -> Result<Vec<RemediationRow>, StoreError> {
        Ok(on_read!(self.store, |db| sqlx::query_as::<
            _,
            RemediationRow,
        >(sqlx::AssertSqlSafe(
            format!("{COLUMNS} WHERE state = 'posting' ORDER BY id")
        ))
        .fetch_all(db)
        .await)?)
    }

    /// Marks a pending intent `posting`, committed before the POST goes; false when it is not
    /// pending any more (another instance took it, or it was finished).
    pub async fn mark_posting(self, id: i64, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let done = on_write!(self.store, |db| sqlx::query(
            "UPDATE remediations SET state = 'posting', attempts = attempts + 1, posted_at = $2
             WHERE id = $1 AND state = 'pending'",
        )
        .bind(id)
        .bind(timestamp(now))
        .execute(db)
        .await
        .map(|d| d.rows_affected()))?;
        Ok(done == 1)
    }

    /// Back to pending after an answer that proves nothing was created (429, a refused
    /// connection), to be tried at `next`.
    pub async fn retry(self, id: i64, next: DateTime<Utc>, error: &str) -> Result<(), StoreError> {
        on_write!(self.store, |db| sqlx::query(
            "UPDATE remediations SET state = 'pending', next_attempt_at = $2, error = $3
             WHERE id = $1 AND state = 'posting'",
        )
        .bind(id)
        .bind(timestamp(next))
        .bind(error)
        .execute(db)
        .await
        .map(|d| d.rows_affected()))?;
        Ok(())
    }

    /// Remediations newest first, for `recwatch remediations`.
    pub async fn list(self, limit: i64) -> Result<Vec<RemediationRow>, StoreError> {
        Ok(on_read!(self.store, |db| sqlx::query_as::<
            _,
            RemediationRow,
        >(sqlx::AssertSqlSafe(
            format!("{COLUMNS} ORDER BY id DESC LIMIT $1")
        ))
        .bind(limit)
        .fetch_all(db)
        .await)?)
    }

    /// Fills `replaces` (on a job's first transition) and `replaced_by` (on the death it was
    /// re-created after) of transitions read for `history` or a job's page: one query for the
    /// page (it was up to two per transition), the deaths by their transition ids and the
    /// first transitions by their jobs' keys, each part on its own index.
    pub async fn link_replacements(
        self,
        rows: &mut [super::TransitionRow],
    ) -> Result<(), StoreError> {
        let deaths: Vec<i64> = rows.iter().filter(|t| t.is_stop()).map(|t| t.id).collect();
        let firsts: Vec<(&str, &str)> = rows
            .iter()
            .filter(|t| t.from_state.is_none())
            .map(|t| (t.app_id.as_str(), t.job_id.as_str()))
            .collect();
        if deaths.is_empty() && firsts.is_empty() {
            return Ok(());
        }
        let (deaths, firsts) = (
            serde_json::to_string(&deaths)?,
            serde_json::to_string(&firsts)?,
        );
        let links = on_read!(self.store, |db, d| sqlx::query_as::<_, LinkRow>(
            sqlx::AssertSqlSafe(format!(
                "SELECT CAST(0 AS BIGINT) AS first, transition_id, app_id, old_job_id, new_job_id
                 FROM remediations
                 WHERE transition_id IN (SELECT CAST(value AS BIGINT) FROM {})
                 UNION ALL
                 SELECT CAST(1 AS BIGINT), r.transition_id, r.app_id, r.old_job_id, r.new_job_id
                 FROM (SELECT value ->> 0 AS app_id, value ->> 1 AS job_id FROM {}) k
                 JOIN remediations r ON r.app_id = k.app_id AND r.new_job_id = k.job_id",
                d.json_texts("$1"),
                d.json_values("$2"),
            ))
        )
        .bind(&deaths)
        .bind(&firsts)
        .fetch_all(db)
        .await)?;
        let mut replaced_by = std::collections::HashMap::new();
        let mut replaces = std::collections::HashMap::new();
        for l in links {
            match (l.first, l.transition_id, l.new_job_id) {
                (0, Some(id), new) => {
                    replaced_by.insert(id, new);
                }
                (_, _, Some(new)) => {
                    // As `LIMIT 1` did: one of the rows that name the job, whichever.
                    replaces.entry((l.app_id, new)).or_insert(l.old_job_id);
                }
                _ => {}
            }
        }
        for t in rows.iter_mut() {
            if t.is_stop() {
                t.replaced_by = replaced_by.get(&t.id).cloned().flatten();
            }
            if t.from_state.is_none() {
                t.replaces = replaces.get(&(t.app_id.clone(), t.job_id.clone())).cloned();
            }
        }
        Ok(())
    }

    /// The jobs a job replaced and was replaced by: (`replaces`, `replaced_by`), for
    /// `recwatch history` and a job's JSON.
    pub async fn replacement_links(
        self,
        app_id: &str,
        job_id: &str,
    ) -> Result<(Option<String>, Option<String>), StoreError> {
        let replaces: Option<String> = on_read!(self.store, |db| sqlx::query_scalar(
            "SELECT old_job_id FROM remediations WHERE app_id = $1 AND new_job_id = $2 LIMIT 1",
        )
        .bind(app_id)
        .bind(job_id)
        .fetch_optional(db)
        .await)?;
        let replaced_by: Option<String> = on_read!(self.store, |db| sqlx::query_scalar(
            "SELECT new_job_id FROM remediations
             WHERE app_id = $1 AND old_job_id = $2 AND new_job_id IS NOT NULL
             ORDER BY id DESC LIMIT 1",
        )
        .bind(app_id)
        .bind(job_id)
        .fetch_optional(db)
        .await)?;
        Ok((replaces, replaced_by))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{self, record};
    use super::*;
    use crate::domain::{JobKey, JobKind, JobSource, RuntimeJob};
    use crate::store::test_support::both_backends;
    use chrono::Duration;

    fn intent<'a>(
        tid: i64,
        state: RemediationState,
        alert: Option<&'a str>,
        now: DateTime<Utc>,
    ) -> NewRemediation<'a> {
        NewRemediation {
            app_id: "app",
            old_job_id: "old",
            lineage: "old",
            kind: "individual",
            transition_id: tid,
            alert_id: alert,
            stop_reason: Some("INTERNAL_ERROR"),
            state,
            reason: None,
            snapshot: "{}",
            name: Some("lobby"),
            notify: None,
            now,
        }
    }

    both_backends! {
        async fn an_intent_goes_pending_posting_recreated_once_and_links_the_jobs(store: Store) {
            let t0 = Utc::now();
            let at = |s: i64| t0 + Duration::seconds(s);
            let tids = store.jobs().record(&[record("old", t0, None, "STOPPED")]).await.unwrap();
            let tid = tids[0].unwrap();
            test_support::alert(&store, "a1", t0, Some(tid), None, &[("hook", "pending")]).await;

            let mut tx = store.begin_write().await.unwrap();
            assert_eq!(tx.remediations().lineage("app", "old").await.unwrap(), "old");
            let id = tx
                .remediations().insert(&intent(tid, RemediationState::Pending, Some("a1"), t0))
                .await
                .unwrap()
                .expect("written");
            assert_eq!(
                tx.remediations().insert(&intent(tid, RemediationState::Pending, None, t0))
                    .await
                    .unwrap(),
                None,
                "one intent per death"
            );
            tx.remediations().hold_deliveries("a1", at(5)).await.unwrap();
            tx.commit().await.unwrap();

            assert_eq!(store.remediations().due(at(1), 10).await.unwrap().len(), 1);
            assert_eq!(store.remediations().next_at().await.unwrap(), Some(timestamp(t0)));
            assert!(store.remediations().mark_posting(id, at(1)).await.unwrap());
            assert!(!store.remediations().mark_posting(id, at(1)).await.unwrap(), "taken once");
            assert_eq!(store.remediations().stranded().await.unwrap().len(), 1);
            // A 429: back to pending, due later.
            store.remediations().retry(id, at(3), "429").await.unwrap();
            assert!(store.remediations().due(at(2), 10).await.unwrap().is_empty());
            assert_eq!(store.remediations().due(at(3), 10).await.unwrap().len(), 1);
            assert!(store.remediations().mark_posting(id, at(3)).await.unwrap());

            let mut tx = store.begin_write().await.unwrap();
            // Held: made within the wait, its delivery untouched and due after the cutoff.
            let held = |made_after: i64, cutoff: i64| (at(made_after), at(cutoff));
            let (m, c) = held(-1, 4);
            assert_eq!(tx.remediations().held_alert_payload("a1", m, c).await.unwrap().as_deref(), Some("{}"));
            let (m, c) = held(-1, 6);
            assert_eq!(tx.remediations().held_alert_payload("a1", m, c).await.unwrap(), None, "due before the cutoff");
            let (m, c) = held(1, 4);
            assert_eq!(tx.remediations().held_alert_payload("a1", m, c).await.unwrap(), None, "its wait is over");
            tx.remediations().complete_held_alert("a1", "{\"done\":1}", "s; re-created as new", at(4)).await.unwrap();
            let done = Finished {
                state: RemediationState::Recreated,
                new_job_id: Some("new"),
                error: None,
                request_id: Some("req-1"),
                at: at(4),
            };
            assert!(tx.remediations().finish(id, &done).await.unwrap());
            assert!(!tx.remediations().finish(id, &done).await.unwrap(), "only from posting");
            let new = RuntimeJob {
                account: None,
                key: JobKey::new("app", "new"),
                name: Some("lobby".into()),
                kind: JobKind::Individual,
                notify: None,
                source: JobSource::Remediation,
                added_at: Timestamp::from(at(4)),
            };
            assert!(tx.watchlist().add(&new).await.unwrap());
            assert_eq!(tx.remediations().lineage("app", "new").await.unwrap(), "old");
            assert_eq!(tx.remediations().lineage_restarts("app", "old", t0).await.unwrap(), 1);
            assert_eq!(tx.remediations().lineage_restarts("app", "old", at(1)).await.unwrap(), 0);
            tx.commit().await.unwrap();

            assert_eq!(
                test_support::column::<String>(&store, "SELECT payload FROM alerts").await,
                vec!["{\"done\":1}".to_string()]
            );
            assert_eq!(
                test_support::column::<String>(&store, "SELECT next_attempt_at FROM deliveries").await,
                vec![timestamp(at(4))],
                "released at once"
            );
            let listed = store.remediations().list(10).await.unwrap();
            assert_eq!(listed[0].state, RemediationState::Recreated);
            assert_eq!(listed[0].new_job_id.as_deref(), Some("new"));
            assert_eq!(listed[0].attempts, 2);
            assert!(store.remediations().stranded().await.unwrap().is_empty());
            assert_eq!(store.watchlist().get(&new.key).await.unwrap().unwrap().source, JobSource::Remediation);
            assert_eq!(
                store.remediations().replacement_links("app", "old").await.unwrap(),
                (None, Some("new".into()))
            );
            assert_eq!(
                store.remediations().replacement_links("app", "new").await.unwrap(),
                (Some("old".into()), None)
            );

            // History links: the death says who replaced it, the new job's first transition
            // whom it replaces.
            store.jobs().record(&[record("new", at(5), None, "RUNNING")]).await.unwrap();
            let mut rows = store.transitions().history(None, None, 10).await.unwrap();
            store.remediations().link_replacements(&mut rows).await.unwrap();
            let link = |job: &str| {
                let r = rows.iter().find(|r| r.job_id == job).unwrap();
                (r.replaces.clone(), r.replaced_by.clone())
            };
            assert_eq!(link("old"), (None, Some("new".into())));
            assert_eq!(link("new"), (Some("old".into()), None));

            // A skip is listed and never counts as a restart.
            let tids = store.jobs().record(&[record("other", t0, None, "STOPPED")]).await.unwrap();
            let mut tx = store.begin_write().await.unwrap();
            let skipped = tx
                .remediations().insert(&NewRemediation {
                    reason: Some("dry_run"),
                    ..intent(tids[0].unwrap(), RemediationState::Skipped, None, t0)
                })
                .await
                .unwrap();
            assert!(skipped.is_some());
            assert_eq!(tx.remediations().lineage_restarts("app", "old", t0).await.unwrap(), 1);
            tx.commit().await.unwrap();
            let listed = store.remediations().list(10).await.unwrap();
            assert_eq!(listed[0].state, RemediationState::Skipped);
            assert!(listed[0].finished_at.is_some(), "a skip is finished when written");
            assert!(store.remediations().due(at(60), 10).await.unwrap().is_empty());
        }
    }
}
