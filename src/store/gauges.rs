//! What `/metrics` reads from the database: jobs by state and deliveries by channel and
//! state, from indexed queries only.

use super::{Database, StoreError};
use crate::domain::{DeliveryState, Timestamp};
use chrono::{DateTime, Utc};

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

/// Jobs in one state.
#[derive(sqlx::FromRow)]
struct StateCount {
    state: Option<String>,
    n: i64,
}

/// Deliveries of one channel in one state.
#[derive(sqlx::FromRow)]
struct ChannelStateCount {
    channel: String,
    state: DeliveryState,
    n: i64,
}

impl Database<'_> {
    /// What `/metrics` reports about the database, from indexed queries only: jobs by state
    /// (from `jobs_by_state`), pending and dead deliveries by channel and the oldest pending
    /// one (from `deliveries_due`, which holds the channel too). The HTTP endpoint runs this
    /// at most once a second, however many clients scrape.
    pub async fn gauges(self) -> Result<DbGauges, StoreError> {
        let jobs = on_read!(self.store, |db| sqlx::query_as::<_, StateCount>(
            "SELECT state, COUNT(*) AS n FROM jobs GROUP BY state"
        )
        .fetch_all(db)
        .await)?
        .into_iter()
        .map(|r| (r.state, r.n))
        .collect();
        let deliveries = on_read!(self.store, |db| sqlx::query_as::<_, ChannelStateCount>(
            "SELECT channel, state, COUNT(*) AS n FROM deliveries
             WHERE state IN ('pending', 'dead') GROUP BY channel, state",
        )
        .fetch_all(db)
        .await)?
        .into_iter()
        .map(|r| DeliveryCount {
            dead: r.state == DeliveryState::Dead,
            channel: r.channel,
            n: r.n,
        })
        .collect();
        let oldest: Option<Timestamp> =
            on_read!(self.store, |db| sqlx::query_scalar::<_, Option<Timestamp>>(
                "SELECT MIN(created_at) FROM deliveries WHERE state = 'pending'"
            )
            .fetch_one(db)
            .await)?;
        Ok(DbGauges {
            jobs_by_state: jobs,
            deliveries,
            oldest_pending: oldest.map(Timestamp::to_datetime),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::retention::{PRUNE_ALERTS, PRUNE_EPISODES, PRUNE_TRANSITIONS};
    use super::super::test_support::{alert, record};
    use super::*;
    use crate::domain::timestamp;
    use crate::store::Store;
    use crate::store::test_support::both_backends;
    use sqlx::Row;

    both_backends! {
        async fn gauges_and_pages_of_jobs_come_from_indexes(store: Store) {
            let now = Utc::now();
            store
                .jobs().record(&[
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
            let g = store.db().gauges().await.unwrap();
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
                .jobs().by_key(&[("app", "c"), ("app", "a"), ("app", "never")])
                .await
                .unwrap();
            let mut keys: Vec<_> = rows.keys().map(|k| k.job_id.as_str()).collect();
            keys.sort();
            assert_eq!(keys, ["a", "c"]);
            assert_eq!(
                rows[&crate::domain::JobKey::new("app", "c")]
                    .state
                    .as_deref(),
                Some("STOPPED")
            );
        }
    }

    /// SQLite's plans (EXPLAIN QUERY PLAN is SQLite's): no statement here reads a whole table
    /// (`SCAN t` without an index). PostgreSQL plans by its statistics, so these are not
    /// asserted there.
    #[tokio::test]
    async fn sqlite_plans_for_gauges_pages_and_prunes_use_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("recwatch.db")).await.unwrap();
        let jobs_by_key = super::super::jobs::jobs_by_key(crate::store::Dialect::Sqlite);
        let statements = [
            "SELECT state, COUNT(*) AS n FROM jobs GROUP BY state",
            "SELECT channel, state, COUNT(*) AS n FROM deliveries WHERE state IN ('pending', 'dead') GROUP BY channel, state",
            "SELECT MIN(created_at) FROM deliveries WHERE state = 'pending'",
            jobs_by_key.as_str(),
            super::super::page::JOB_PHASE_COUNTS,
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
                    .fetch_all(store.db().reader())
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
            if sql == super::super::page::JOB_PHASE_COUNTS {
                // The header's counts from the index alone, in its order: no row is read and
                // no temporary table is built (issue 23, item 7).
                assert!(
                    plan.iter()
                        .any(|l| l.contains("COVERING INDEX jobs_by_phase"))
                        && !plan.iter().any(|l| l.contains("TEMP B-TREE")),
                    "{sql}\n{plan:#?}"
                );
            }
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
