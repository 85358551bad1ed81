//! The `forwards` table (migration 0008): verified callback events to relay to an app's
//! `forward_to`, as a queue. Written with the event (`Store::insert_callback_event`); the
//! relay worker (`deliver::forward`) takes what is due, and records each attempt's outcome.
//! A forward is `sent` only after the receiver accepted it, and `dead` rows stay.

use super::{Store, StoreError};
use serde::Serialize;

/// A forward due for an attempt.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct DueForward {
    /// The stable id the receiver can deduplicate on.
    pub id: i64,
    pub app_id: String,
    pub job_id: Option<String>,
    pub event_type: String,
    /// The event's body, byte for byte as RTC sent it.
    pub body: Vec<u8>,
    pub attempts: i64,
    pub created_at: String,
}

/// What became of one attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ForwardOutcome {
    Sent,
    Retry { next: String, error: String },
    Dead { error: String },
}

/// A forward as `recwatch forwards` shows it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, sqlx::FromRow)]
pub struct ForwardView {
    pub id: i64,
    pub app_id: String,
    pub job_id: Option<String>,
    pub event_type: String,
    pub state: String,
    pub attempts: i64,
    pub created_at: String,
    pub next_attempt_at: String,
    pub last_attempt_at: Option<String>,
    pub last_error: Option<String>,
    pub sent_at: Option<String>,
}

impl Store {
    /// Pending forwards due by `now`, oldest first (so a receiver gets events in order), at
    /// most `limit`.
    pub async fn due_forwards(&self, now: &str, limit: i64) -> Result<Vec<DueForward>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT f.id, f.app_id, e.job_id, e.event_type, f.body, f.attempts, f.created_at
             FROM forwards f JOIN callback_events e ON e.id = f.event_id
             WHERE f.state = 'pending' AND f.next_attempt_at <= ?
             ORDER BY f.next_attempt_at, f.id LIMIT ?",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&self.read)
        .await?)
    }

    /// When the next pending forward falls due, if any.
    pub async fn next_forward_at(&self) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT next_attempt_at FROM forwards WHERE state = 'pending'
             ORDER BY next_attempt_at, id LIMIT 1",
        )
        .fetch_optional(&self.read)
        .await?)
    }

    /// How many forwards are still pending.
    pub async fn pending_forwards(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM forwards WHERE state = 'pending'")
                .fetch_one(&self.read)
                .await?,
        )
    }

    /// Records attempt number `attempts` of forward `id`, made at `at`.
    pub async fn record_forward(
        &self,
        id: i64,
        attempts: i64,
        at: &str,
        outcome: &ForwardOutcome,
    ) -> Result<(), StoreError> {
        let (state, next, error, sent) = match outcome {
            ForwardOutcome::Sent => ("sent", None, None, Some(at)),
            ForwardOutcome::Retry { next, error } => {
                ("pending", Some(next.as_str()), Some(error.as_str()), None)
            }
            ForwardOutcome::Dead { error } => ("dead", None, Some(error.as_str()), None),
        };
        sqlx::query(
            "UPDATE forwards SET state = ?, attempts = ?, last_attempt_at = ?,
                 next_attempt_at = COALESCE(?, next_attempt_at),
                 last_error = COALESCE(?, last_error), sent_at = ?
             WHERE id = ? AND state = 'pending'",
        )
        .bind(state)
        .bind(attempts)
        .bind(at)
        .bind(next)
        .bind(error)
        .bind(sent)
        .bind(id)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// Forwards newest first (`pending_only`: those still pending), at most `limit`.
    pub async fn forwards(
        &self,
        pending_only: bool,
        limit: i64,
    ) -> Result<Vec<ForwardView>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT f.id, f.app_id, e.job_id, e.event_type, f.state, f.attempts, f.created_at,
                    f.next_attempt_at, f.last_attempt_at, f.last_error, f.sent_at
             FROM forwards f JOIN callback_events e ON e.id = f.event_id
             WHERE (? = 0 OR f.state = 'pending')
             ORDER BY f.id DESC LIMIT ?",
        )
        .bind(pending_only)
        .bind(limit)
        .fetch_all(&self.read)
        .await?)
    }
}
