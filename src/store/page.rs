//! What the status page and its JSON read (through [`crate::view`]): a light projection of
//! every job's phase for counts and filters, the transitions that draw the timelines, a job's
//! transitions and alerts a page at a time, and recent alerts with their deliveries (a job's
//! recorded files come from `callbacks`). Every statement walks an index and stops at its page.

use super::alerts::{AlertView, DeliveryView};
use super::{Dialect, Store, StoreError, TransitionRow};
use crate::domain::Timestamp;
use std::collections::HashMap;

/// What the job list needs of every job to count and filter it: no description, error or
/// snapshot.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct JobPhaseRow {
    pub app_id: String,
    pub job_id: String,
    pub state: Option<String>,
    pub stop_reason: Option<String>,
    pub consecutive_failures: i64,
}

/// How many job rows are in one phase with one failure count: a group of
/// [`Page::job_phase_counts`].
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct PhaseCount {
    pub state: Option<String>,
    pub stop_reason: Option<String>,
    pub consecutive_failures: i64,
    pub n: i64,
}

/// The header's counts: every row grouped by the columns of the `jobs_by_phase` index, read
/// from the index alone in its order (no temporary table, no row read).
pub(super) const JOB_PHASE_COUNTS: &str =
    "SELECT state, stop_reason, consecutive_failures, COUNT(*) AS n FROM jobs
     GROUP BY state, stop_reason, consecutive_failures";

/// Every row's key, from the primary key.
pub(super) const JOB_KEYS: &str = "SELECT app_id, job_id FROM jobs";

/// One change a timeline is drawn from: when the job entered which phase.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct PhasePoint {
    pub app_id: String,
    pub job_id: String,
    pub observed_at: Timestamp,
    pub to_state: String,
    pub stop_reason: Option<String>,
}

/// The columns of [`TransitionRow`], newest first within one job.
const JOB_TRANSITIONS: &str =
    "SELECT id, app_id, job_id, name, from_state, to_state, stop_reason, description,
        create_time, start_time, stop_time, update_time, observed_at, request_id
     FROM transitions
     WHERE job_id = $1 AND app_id = $2
       AND ($3 IS NULL OR observed_at < $3 OR (observed_at = $3 AND id < $4))
     ORDER BY observed_at DESC, id DESC
     LIMIT $5";

/// For each job of the JSON array of `[app_id, job_id]` at `$1`: its last transition before
/// `$2` and every one from `$2` on.
fn phase_points(d: Dialect) -> String {
    format!(
        "WITH k(app_id, job_id) AS (SELECT value ->> 0, value ->> 1 FROM {})
         SELECT t.app_id, t.job_id, t.observed_at, t.to_state, t.stop_reason
         FROM k JOIN transitions t
           ON t.id = (SELECT id FROM transitions p
                      WHERE p.job_id = k.job_id AND p.app_id = k.app_id AND p.observed_at < $2
                      ORDER BY p.observed_at DESC, p.id DESC LIMIT 1)
         UNION ALL
         SELECT t.app_id, t.job_id, t.observed_at, t.to_state, t.stop_reason
         FROM k JOIN transitions t
           ON t.job_id = k.job_id AND t.app_id = k.app_id AND t.observed_at >= $2
         ORDER BY 1, 2, 3",
        d.json_values("$1")
    )
}

/// What the status page and `/api/v1` read, a page at a time: `store.page()`, a view borrowing the
/// [`Store`].
#[derive(Clone, Copy)]
pub struct Page<'s> {
    pub(super) store: &'s Store,
}

impl Page<'_> {
    /// Every job row's phase and failure count. Read from the table itself (each row holds a
    /// snapshot), a few milliseconds at 10,000 jobs; see BENCHMARKS.md.
    /// Job rows per (state, stop reason, failures in a row): a few groups whatever the
    /// number of jobs, so the header's counts cost a walk of one index, not a read of every
    /// row (issue 23, item 7). Rows of jobs no longer watched are in it too.
    pub async fn job_phase_counts(self) -> Result<Vec<PhaseCount>, StoreError> {
        Ok(on_read!(self.store, |db| sqlx::query_as::<_, PhaseCount>(
            JOB_PHASE_COUNTS
        )
        .fetch_all(db)
        .await)?)
    }

    /// Every job row's key: what is needed to find the rows of jobs no longer watched (read
    /// when the watch list changes, not per request).
    pub async fn job_keys(self) -> Result<Vec<(String, String)>, StoreError> {
        Ok(on_read!(self.store, |db| sqlx::query_as::<
            _,
            (String, String),
        >(JOB_KEYS)
        .fetch_all(db)
        .await)?)
    }

    pub async fn job_phases(self) -> Result<Vec<JobPhaseRow>, StoreError> {
        Ok(on_read!(self.store, |db| {
            sqlx::query_as::<_, JobPhaseRow>(
                "SELECT app_id, job_id, state, stop_reason, consecutive_failures FROM jobs",
            )
            .fetch_all(db)
            .await
        })?)
    }

    /// For each job given as (app_id, job_id): the phase it was in at `since` (its last
    /// transition before it) and every transition from `since` on, oldest first per job. One
    /// statement; each job is an index seek on `transitions_by_job`.
    pub async fn phase_points(
        self,
        keys: &[(&str, &str)],
        since: &str,
    ) -> Result<Vec<PhasePoint>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let keys = serde_json::to_string(keys)?;
        Ok(on_read!(self.store, |db, d| {
            sqlx::query_as::<_, PhasePoint>(sqlx::AssertSqlSafe(phase_points(d)))
                .bind(&keys)
                .bind(since)
                .fetch_all(db)
                .await
        })?)
    }

    /// One job's transitions, newest first: `limit` of them before the cursor
    /// `(observed_at, id)` of the last one shown (None: from the newest).
    pub async fn job_transitions(
        self,
        app_id: &str,
        job_id: &str,
        before: Option<(&str, i64)>,
        limit: i64,
    ) -> Result<Vec<TransitionRow>, StoreError> {
        Ok(on_read!(self.store, |db| {
            sqlx::query_as::<_, TransitionRow>(JOB_TRANSITIONS)
                .bind(job_id)
                .bind(app_id)
                .bind(before.map(|b| b.0))
                .bind(before.map(|b| b.1))
                .bind(limit)
                .fetch_all(db)
                .await
        })?)
    }

    /// One job's alerts, newest first, with their deliveries (`alerts_by_job`, migration 0012).
    pub async fn job_alerts(
        self,
        app_id: &str,
        job_id: &str,
        limit: i64,
    ) -> Result<Vec<AlertView>, StoreError> {
        let alerts = on_read!(self.store, |db| {
            sqlx::query_as::<_, AlertView>(
            "SELECT id, rule, severity, status, app_id, job_id, summary, created_at, silenced_by FROM alerts
             WHERE app_id = $1 AND job_id = $2
             ORDER BY created_at DESC, id DESC LIMIT $3",
        )
        .bind(app_id)
        .bind(job_id)
        .bind(limit)
        .fetch_all(db)
        .await
        })?;
        self.with_deliveries(alerts).await
    }

    /// Alerts newest first, `limit` of them after the cursor `(created_at, id)` of the last
    /// one shown, with their deliveries.
    pub async fn alerts(
        self,
        before: Option<(&str, &str)>,
        limit: i64,
    ) -> Result<Vec<AlertView>, StoreError> {
        let alerts = on_read!(self.store, |db| {
            sqlx::query_as::<_, AlertView>(
            "SELECT id, rule, severity, status, app_id, job_id, summary, created_at, silenced_by FROM alerts
             WHERE $1 IS NULL OR created_at < $1 OR (created_at = $1 AND id < $2)
             ORDER BY created_at DESC, id DESC LIMIT $3",
        )
        .bind(before.map(|b| b.0))
        .bind(before.map(|b| b.1))
        .bind(limit)
        .fetch_all(db)
        .await
        })?;
        self.with_deliveries(alerts).await
    }

    /// Fills in each alert's deliveries with one statement for all of them.
    async fn with_deliveries(
        self,
        mut alerts: Vec<AlertView>,
    ) -> Result<Vec<AlertView>, StoreError> {
        if alerts.is_empty() {
            return Ok(alerts);
        }
        #[derive(sqlx::FromRow)]
        struct Row {
            alert_id: String,
            #[sqlx(flatten)]
            d: DeliveryView,
        }
        let ids: Vec<&str> = alerts.iter().map(|a| a.id.as_str()).collect();
        let ids = serde_json::to_string(&ids)?;
        let rows = on_read!(self.store, |db, d| sqlx::query_as::<_, Row>(
            sqlx::AssertSqlSafe(format!(
                "SELECT alert_id, channel, state, attempts,
                        CASE WHEN state = 'pending' THEN next_attempt_at END AS next_attempt_at,
                        sent_at, last_error
                 FROM deliveries WHERE alert_id IN (SELECT value FROM {})
                 ORDER BY alert_id, channel",
                d.json_texts("$1")
            ))
        )
        .bind(&ids)
        .fetch_all(db)
        .await)?;
        let mut by_alert: HashMap<String, Vec<DeliveryView>> = HashMap::new();
        for r in rows {
            by_alert.entry(r.alert_id).or_default().push(r.d);
        }
        for a in &mut alerts {
            a.deliveries = by_alert.remove(&a.id).unwrap_or_default();
        }
        Ok(alerts)
    }

    /// Open condition episodes (stuck_init, job_not_found, api_unhealthy), from the partial
    /// index `episodes_open`.
    pub async fn open_episodes_count(self) -> Result<i64, StoreError> {
        Ok(on_read!(self.store, |db| sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM episodes WHERE resolved_at IS NULL"
        )
        .fetch_one(db)
        .await)?)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{alert, record};
    use crate::store::test_support::both_backends;
    use chrono::{Duration, TimeZone, Utc};

    both_backends! {
        async fn points_pages_and_alerts_read_back_in_order(store: Store) {
            let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
            let h = |n: i64| t0 + Duration::hours(n);
            let ids = store
                .jobs().record(&[
                    record("a", h(0), None, "INIT"),
                    record("a", h(1), Some("INIT"), "RUNNING"),
                    record("a", h(5), Some("RUNNING"), "STOPPED"),
                    record("b", h(2), None, "RUNNING"),
                ])
                .await
                .unwrap();
            let since = crate::domain::timestamp(h(3));
            let points = store
                .page().phase_points(&[("app", "a"), ("app", "b"), ("app", "none")], &since)
                .await
                .unwrap();
            let got: Vec<(&str, &str)> = points
                .iter()
                .map(|p| (p.job_id.as_str(), p.to_state.as_str()))
                .collect();
            // The phase at `since` (the last change before it), then every change after it.
            assert_eq!(got, [("a", "RUNNING"), ("a", "STOPPED"), ("b", "RUNNING")]);

            let phases = store.page().job_phases().await.unwrap();
            assert_eq!(phases.len(), 2);

            // Two at a time, newest first, following the cursor to the end.
            let first = store.page().job_transitions("app", "a", None, 2).await.unwrap();
            assert_eq!(
                first
                    .iter()
                    .map(|t| t.to_state.as_str())
                    .collect::<Vec<_>>(),
                ["STOPPED", "RUNNING"]
            );
            let last = first.last().unwrap();
            let rest = store
                .page().job_transitions("app", "a", Some((&last.observed_at.to_string(), last.id)), 2)
                .await
                .unwrap();
            assert_eq!(rest.len(), 1);
            assert_eq!(rest[0].to_state, "INIT");
            assert!(
                store
                    .page().job_transitions("other-app", "a", None, 10)
                    .await
                    .unwrap()
                    .is_empty(),
                "another app's job of the same id is another job"
            );

            // Alerts: newest first with their deliveries, page by page.
            alert(&store, "al-1", h(1), ids[1], None, &[("hook", "sent")]).await;
            alert(
                &store,
                "al-2",
                h(5),
                ids[2],
                None,
                &[("hook", "dead"), ("mail", "pending")],
            )
            .await;
            let page = store.page().alerts(None, 1).await.unwrap();
            assert_eq!(page[0].id, "al-2");
            let states: Vec<&str> = page[0]
                .deliveries
                .iter()
                .map(|d| d.state.as_str())
                .collect();
            assert_eq!(states, ["dead", "pending"]);
            let next = store
                .page().alerts(Some((&page[0].created_at.to_string(), &page[0].id)), 5)
                .await
                .unwrap();
            assert_eq!(next.len(), 1);
            assert_eq!(next[0].id, "al-1");
            assert_eq!(next[0].deliveries[0].channel, "hook");
            assert_eq!(store.page().open_episodes_count().await.unwrap(), 0);
        }
    }

    both_backends! {
        async fn phase_counts_are_what_listing_every_row_gives(store: Store) {
            use crate::domain::{PollOutcome, PollRecord};
            let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
            let mut records = Vec::new();
            for (i, state) in ["RUNNING", "RUNNING", "INIT", "STOPPED", "RUNNING", "STOPPED"]
                .into_iter()
                .enumerate()
            {
                records.push(record(&format!("j{i}"), t0, None, state));
            }
            let failed = |job: &str| PollRecord {
                app_id: "app".into(),
                job_id: job.into(),
                name: None,
                kind: crate::domain::JobKind::Individual,
                polled_at: t0 + Duration::minutes(1),
                outcome: PollOutcome::Failed {
                    kind: crate::domain::ErrorKind::Timeout,
                    error: "timed out".into(),
                },
            };
            // j1 fails once, j4 twice: their phase stays, their failure counts differ.
            records.extend([failed("j1"), failed("j4"), failed("j4")]);
            store.jobs().record(&records).await.unwrap();

            let mut counted: Vec<(Option<String>, Option<String>, i64, i64)> = store
                .page().job_phase_counts()
                .await
                .unwrap()
                .into_iter()
                .map(|c| (c.state, c.stop_reason, c.consecutive_failures, c.n))
                .collect();
            counted.sort();
            let mut listed: std::collections::BTreeMap<_, i64> = Default::default();
            for r in store.page().job_phases().await.unwrap() {
                *listed
                    .entry((r.state, r.stop_reason, r.consecutive_failures))
                    .or_default() += 1;
            }
            let listed: Vec<_> = listed.into_iter().map(|((a, b, c), n)| (a, b, c, n)).collect();
            assert_eq!(counted, listed);
            assert_eq!(counted.iter().map(|c| c.3).sum::<i64>(), 6);
            let mut keys = store.page().job_keys().await.unwrap();
            keys.sort();
            assert_eq!(keys.len(), 6);
            assert_eq!(keys[0], ("app".to_string(), "j0".to_string()));
        }
    }
}
