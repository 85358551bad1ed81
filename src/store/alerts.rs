//! The `alerts` table: an alert is created once, in the transaction of the transition or
//! condition that caused it, with one pending delivery per channel; its `dedup_key` makes a
//! second one impossible and its payload is frozen, so every retry sends the same bytes with
//! the same id. Read back for `recwatch alerts`.

use super::{Store, StoreError, WriteTx};
use crate::domain::Timestamp;
use crate::domain::{Alert, DeliveryState, Rule, Severity, Status, timestamp};
use chrono::{DateTime, Utc};

/// An alert with its delivery state per channel, for `recwatch alerts`.
#[derive(Clone, Debug, serde::Serialize, sqlx::FromRow)]
pub struct AlertView {
    pub id: String,
    pub rule: Rule,
    pub severity: Severity,
    pub status: Status,
    pub app_id: Option<String>,
    pub job_id: Option<String>,
    pub summary: String,
    pub created_at: Timestamp,
    /// The silence id or maintenance window name that first held a notification of this
    /// alert back; null if none did.
    pub silenced_by: Option<String>,
    #[sqlx(skip)]
    pub deliveries: Vec<DeliveryView>,
}

#[derive(Clone, Debug, serde::Serialize, sqlx::FromRow)]
pub struct DeliveryView {
    pub channel: String,
    pub state: DeliveryState,
    pub attempts: i64,
    /// Only while the delivery is pending.
    pub next_attempt_at: Option<Timestamp>,
    pub sent_at: Option<Timestamp>,
    pub last_error: Option<String>,
}

/// The `alerts` table: `store.alerts()`, a view borrowing the [`Store`].
#[derive(Clone, Copy)]
pub struct Alerts<'s> {
    pub(super) store: &'s Store,
}

/// The `alerts` table, inside a write transaction: `tx.alerts()`.
pub struct AlertsTx<'t> {
    pub(super) tx: &'t mut WriteTx,
}

impl AlertsTx<'_> {
    /// Inserts an alert and one pending delivery per channel. Returns false if an alert with
    /// this dedup key already exists (nothing is written then).
    pub async fn insert(
        &mut self,
        alert: &Alert,
        dedup_key: &str,
        transition_id: Option<i64>,
        episode_id: Option<i64>,
        channels: Vec<String>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let at = timestamp(now);
        let payload = serde_json::to_string(alert)?;
        let inserted = on_tx!(self.tx, |c| {
            sqlx::query(
            "INSERT INTO alerts (id, dedup_key, rule, severity, status, app_id, job_id, transition_id, episode_id,
                                 summary, payload, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
             ON CONFLICT (dedup_key) DO NOTHING",
        )
        .bind(&alert.id)
        .bind(dedup_key)
        .bind(alert.rule.as_str())
        .bind(alert.severity.as_str())
        .bind(alert.status.as_str())
        .bind(alert.job.as_ref().map(|j| &j.app_id))
        .bind(alert.job.as_ref().map(|j| &j.job_id))
        .bind(transition_id)
        .bind(episode_id)
        .bind(&alert.summary)
        .bind(&payload)
        .bind(&at)
        .execute(c)
        .await
        .map(|done| done.rows_affected())
        })?;
        if inserted == 0 {
            return Ok(false);
        }
        for channel in channels {
            on_tx!(self.tx, |c| {
                sqlx::query(
                "INSERT INTO deliveries (alert_id, channel, next_attempt_at, created_at) VALUES ($1, $2, $3, $3)",
            )
            .bind(&alert.id)
            .bind(&channel)
            .bind(&at)
            .execute(c)
            .await
            .map(|_| ())
            })?;
        }
        Ok(true)
    }
}

impl Alerts<'_> {
    /// Alerts newest first, optionally only those with a delivery still pending.
    pub async fn list(self, pending_only: bool, limit: i64) -> Result<Vec<AlertView>, StoreError> {
        let mut alerts = on_read!(self.store, |db| {
            sqlx::query_as::<_, AlertView>(
            "SELECT id, rule, severity, status, app_id, job_id, summary, created_at, silenced_by FROM alerts a
             WHERE ($1 = 0 OR EXISTS (SELECT 1 FROM deliveries d WHERE d.alert_id = a.id AND d.state = 'pending'))
             ORDER BY created_at DESC, rowid DESC LIMIT $2",
        )
        .bind(pending_only as i64)
        .bind(limit)
        .fetch_all(db)
        .await
        })?;
        for a in &mut alerts {
            a.deliveries = on_read!(self.store, |db| sqlx::query_as::<_, DeliveryView>(
                "SELECT channel, state, attempts,
                        CASE WHEN state = 'pending' THEN next_attempt_at END AS next_attempt_at,
                        sent_at, last_error
                 FROM deliveries WHERE alert_id = $1 ORDER BY channel",
            )
            .bind(&a.id)
            .fetch_all(db)
            .await)?;
        }
        Ok(alerts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::test_alert;
    use crate::store::deliveries::Outcome;
    use crate::store::test_support::both_backends;

    both_backends! {
        async fn an_alert_is_made_once_per_dedup_key_and_listed_with_its_deliveries(store: Store) {
            let t0 = Utc::now() - chrono::Duration::minutes(5);
            let (first, second) = (test_alert(), test_alert());
            let mut tx = store.begin_write().await.unwrap();
            let channels = || vec!["hook".to_string(), "mail".to_string()];
            assert!(
                tx.alerts().insert(&first, "t:1:test", None, None, channels(), t0)
                    .await
                    .unwrap()
            );
            // Same cause, new id: refused, and none of its deliveries written.
            assert!(
                !tx.alerts().insert(&second, "t:1:test", None, None, channels(), t0)
                    .await
                    .unwrap()
            );
            let newer = test_alert();
            assert!(
                tx.alerts().insert(
                    &newer,
                    "t:2:test",
                    None,
                    None,
                    vec!["hook".into()],
                    Utc::now()
                )
                .await
                .unwrap()
            );
            tx.commit().await.unwrap();

            // The first goes out by mail; the hook is retried later.
            let next = Utc::now() + chrono::Duration::minutes(1);
            store.deliveries().record(first.id.as_str(),
                "mail",
                1,
                &Outcome::Sent { at: t0 },
            )
            .await
            .unwrap();
            let retry = Outcome::Retry {
                next,
                error: "HTTP 503".into(),
            };
            store.deliveries().record(first.id.as_str(), "hook", 1, &retry)
                .await
                .unwrap();
            store.deliveries().record(newer.id.as_str(),
                "hook",
                1,
                &Outcome::Sent { at: t0 },
            )
            .await
            .unwrap();

            let all = store.alerts().list(false, 10).await.unwrap();
            let ids: Vec<&str> = all.iter().map(|a| a.id.as_str()).collect();
            assert_eq!(ids, [newer.id.as_str(), first.id.as_str()], "newest first");
            let first_view = &all[1];
            assert_eq!(first_view.summary, first.summary);
            assert_eq!(first_view.app_id.as_deref(), Some("test-app"));
            let d: Vec<_> = first_view
                .deliveries
                .iter()
                .map(|d| {
                    (
                        d.channel.as_str(),
                        d.state,
                        d.attempts,
                        d.next_attempt_at,
                        d.last_error.as_deref(),
                    )
                })
                .collect();
            assert_eq!(
                d,
                [
                    (
                        "hook",
                        DeliveryState::Pending,
                        1,
                        Some(Timestamp::from(next)),
                        Some("HTTP 503")
                    ),
                    // A next attempt is shown only while one is due.
                    ("mail", DeliveryState::Sent, 1, None, None),
                ]
            );
            assert_eq!(first_view.deliveries[1].sent_at, Some(Timestamp::from(t0)));

            // Only alerts with a delivery still pending; and the limit holds.
            let pending = store.alerts().list(true, 10).await.unwrap();
            assert_eq!(pending.len(), 1);
            assert_eq!(pending[0].id, first.id);
            assert_eq!(store.alerts().list(false, 1).await.unwrap().len(), 1);
        }
    }

    both_backends! {
        /// Issue 24: a stored value this build cannot read (a rule it does not know, a time
        /// that is not one) fails the read and names the column and the value; it used to be
        /// handed on as text.
        async fn an_unreadable_stored_value_is_an_error_naming_column_and_value(store: Store) {
            let mut tx = store.begin_write().await.unwrap();
            let alert = test_alert();
            tx.alerts().insert(&alert, "t:1", None, None, vec!["hook".into()], Utc::now())
                .await
                .unwrap();
            tx.commit().await.unwrap();
            assert_eq!(store.alerts().list(false, 10).await.unwrap().len(), 1);
            let set = |sql: &'static str| {
                let store = store.clone();
                async move {
                    on_write!(store, |db| sqlx::query(sql).execute(db).await.map(|_| ())).unwrap();
                }
            };
            set("UPDATE alerts SET rule = 'stopped_sideways'").await;
            let e = store.alerts().list(false, 10).await.unwrap_err().to_string();
            assert!(e.contains("\"rule\"") && e.contains("stopped_sideways"), "{e}");
            set("UPDATE alerts SET rule = 'test', created_at = 'yesterday'").await;
            let e = store.alerts().list(false, 10).await.unwrap_err().to_string();
            assert!(e.contains("\"created_at\"") && e.contains("`yesterday`"), "{e}");
        }
    }
}
