//! The `alerts` table: an alert is created once, in the transaction of the transition or
//! condition that caused it, with one pending delivery per channel; its `dedup_key` makes a
//! second one impossible and its payload is frozen, so every retry sends the same bytes with
//! the same id. Read back for `recwatch alerts`.

use super::{Store, StoreError, WriteTx};
use crate::alert::{Alert, timestamp};
use chrono::{DateTime, Utc};

/// An alert with its delivery state per channel, for `recwatch alerts`.
#[derive(Debug, serde::Serialize, sqlx::FromRow)]
pub struct AlertView {
    pub id: String,
    pub rule: String,
    pub severity: String,
    pub status: String,
    pub app_id: Option<String>,
    pub job_id: Option<String>,
    pub summary: String,
    pub created_at: String,
    #[sqlx(skip)]
    pub deliveries: Vec<DeliveryView>,
}

#[derive(Debug, serde::Serialize, sqlx::FromRow)]
pub struct DeliveryView {
    pub channel: String,
    pub state: String,
    pub attempts: i64,
    /// Only while the delivery is pending.
    pub next_attempt_at: Option<String>,
    pub sent_at: Option<String>,
    pub last_error: Option<String>,
}

impl WriteTx {
    /// Inserts an alert and one pending delivery per channel. Returns false if an alert with
    /// this dedup key already exists (nothing is written then).
    pub async fn insert_alert(
        &mut self,
        alert: &Alert,
        dedup_key: &str,
        transition_id: Option<i64>,
        episode_id: Option<i64>,
        channels: Vec<String>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let at = timestamp(now);
        let done = sqlx::query(
            "INSERT INTO alerts (id, dedup_key, rule, severity, status, app_id, job_id, transition_id, episode_id,
                                 summary, payload, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
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
        .bind(serde_json::to_string(alert)?)
        .bind(&at)
        .execute(self.conn())
        .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        for channel in channels {
            sqlx::query(
                "INSERT INTO deliveries (alert_id, channel, next_attempt_at, created_at) VALUES (?, ?, ?, ?)",
            )
            .bind(&alert.id)
            .bind(&channel)
            .bind(&at)
            .bind(&at)
            .execute(self.conn())
            .await?;
        }
        Ok(true)
    }
}

impl Store {
    /// Alerts newest first, optionally only those with a delivery still pending.
    pub async fn alerts(
        &self,
        pending_only: bool,
        limit: i64,
    ) -> Result<Vec<AlertView>, StoreError> {
        let mut alerts = sqlx::query_as::<_, AlertView>(
            "SELECT id, rule, severity, status, app_id, job_id, summary, created_at FROM alerts a
             WHERE (?1 = 0 OR EXISTS (SELECT 1 FROM deliveries d WHERE d.alert_id = a.id AND d.state = 'pending'))
             ORDER BY created_at DESC, rowid DESC LIMIT ?2",
        )
        .bind(pending_only as i64)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        for a in &mut alerts {
            a.deliveries = sqlx::query_as::<_, DeliveryView>(
                "SELECT channel, state, attempts,
                        CASE WHEN state = 'pending' THEN next_attempt_at END AS next_attempt_at,
                        sent_at, last_error
                 FROM deliveries WHERE alert_id = ? ORDER BY channel",
            )
            .bind(&a.id)
            .fetch_all(&self.read)
            .await?;
        }
        Ok(alerts)
    }
}
