//! The `forwards` table (migration 0008): verified callback events to relay to an app's
//! `forward_to`, as a queue. Written with the event (`Callbacks::insert`); the
//! relay worker (`deliver::forward`) takes what is due, and records each attempt's outcome.
//! A forward is `sent` only after the receiver accepted it, and `dead` rows stay.

use super::{Store, StoreError};
use crate::domain::{DeliveryState, Timestamp};
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
    pub created_at: Timestamp,
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
    /// Pending, sent or dead (a forward is never silenced).
    pub state: DeliveryState,
    pub attempts: i64,
    pub created_at: Timestamp,
    pub next_attempt_at: Timestamp,
    pub last_attempt_at: Option<Timestamp>,
    pub last_error: Option<String>,
    pub sent_at: Option<Timestamp>,
}

/// The relay of callbacks to `forward_to` (`forwards`): `store.forwards()`, a view borrowing the
/// [`Store`].
#[derive(Clone, Copy)]
pub struct Forwards<'s> {
    pub(super) store: &'s Store,
}

impl Forwards<'_> {
    /// Pending forwards due by `now`, oldest first (so a receiver gets events in order), at
    /// most `limit`.
    pub async fn due(self, now: &str, limit: i64) -> Result<Vec<DueForward>, StoreError> {
        Ok(on_read!(self.store, |db| sqlx::query_as::<_, DueForward>(
            "SELECT f.id, f.app_id, e.job_id, e.event_type, f.body, f.attempts, f.created_at
             FROM forwards f JOIN callback_events e ON e.id = f.event_id
             WHERE f.state = 'pending' AND f.next_attempt_at <= $1
             ORDER BY f.next_attempt_at, f.id LIMIT $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(db)
        .await)?)
    }

    /// When the next pending forward falls due, if any.
    pub async fn next_at(self) -> Result<Option<Timestamp>, StoreError> {
        Ok(on_read!(self.store, |db| {
            sqlx::query_scalar::<_, Timestamp>(
                "SELECT next_attempt_at FROM forwards WHERE state = 'pending'
             ORDER BY next_attempt_at, id LIMIT 1",
            )
            .fetch_optional(db)
            .await
        })?)
    }

    /// How many forwards are still pending.
    pub async fn pending(self) -> Result<i64, StoreError> {
        Ok(on_read!(self.store, |db| sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM forwards WHERE state = 'pending'"
        )
        .fetch_one(db)
        .await)?)
    }

    /// Records attempt number `attempts` of forward `id`, made at `at`.
    pub async fn record(
        self,
        id: i64,
        attempts: i64,
        at: &str,
        outcome: &ForwardOutcome,
    ) -> Result<(), StoreError> {
        let (state, next, error, sent) = match outcome {
            ForwardOutcome::Sent => (DeliveryState::Sent, None, None, Some(at)),
            ForwardOutcome::Retry { next, error } => (
                DeliveryState::Pending,
                Some(next.as_str()),
                Some(error.as_str()),
                None,
            ),
            ForwardOutcome::Dead { error } => {
                (DeliveryState::Dead, None, Some(error.as_str()), None)
            }
        };
        // In a write transaction: on the active instance's store, fenced (see `lease`).
        let mut tx = self.store.begin_write().await?;
        on_tx!(tx, |c| sqlx::query(
            "UPDATE forwards SET state = $1, attempts = $2, last_attempt_at = $3,
                 next_attempt_at = COALESCE($4, next_attempt_at),
                 last_error = COALESCE($5, last_error), sent_at = $6
             WHERE id = $7 AND state = 'pending'",
        )
        .bind(state)
        .bind(attempts)
        .bind(at)
        .bind(next)
        .bind(error)
        .bind(sent)
        .bind(id)
        .execute(&mut *c)
        .await
        .map(|_| ()))?;
        tx.commit().await?;
        Ok(())
    }

    /// Forwards newest first (`pending_only`: those still pending), at most `limit`.
    pub async fn list(
        self,
        pending_only: bool,
        limit: i64,
    ) -> Result<Vec<ForwardView>, StoreError> {
        Ok(on_read!(self.store, |db| {
            sqlx::query_as::<_, ForwardView>(
                "SELECT f.id, f.app_id, e.job_id, e.event_type, f.state, f.attempts, f.created_at,
                    f.next_attempt_at, f.last_attempt_at, f.last_error, f.sent_at
             FROM forwards f JOIN callback_events e ON e.id = f.event_id
             WHERE ($1 = 0 OR f.state = 'pending')
             ORDER BY f.id DESC LIMIT $2",
            )
            .bind(pending_only as i64)
            .bind(limit)
            .fetch_all(db)
            .await
        })?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Inserted;
    use crate::store::test_support::both_backends;
    use recwatch_rtc::callback::RecordEvent;

    const AT: &str = "2026-01-01T00:00:00.000Z";
    const LATER: &str = "2026-01-01T00:00:05.000Z";

    async fn insert(store: &Store, body: &str, forward: bool) -> Inserted {
        let event = RecordEvent::parse(body.as_bytes()).unwrap();
        let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(body.as_bytes()));
        store
            .callbacks()
            .insert(
                "app",
                &event,
                &digest,
                AT,
                forward.then_some(body.as_bytes()),
            )
            .await
            .unwrap()
    }

    both_backends! {
        async fn a_forward_is_written_with_its_event_once(store: Store) {
            let body = r#"{"event_type":"RECORD_NEW_FILE_START","job_id":"j1"}"#;
            assert_eq!(insert(&store, body, true).await, Inserted::New);
            // RTC resends the same body: neither the event nor its forward again.
            assert_eq!(insert(&store, body, true).await, Inserted::Duplicate);
            // An app without forward_to: the event only.
            let other = r#"{"event_type":"RECORD_NEW_FILE_START","job_id":"j2"}"#;
            assert_eq!(insert(&store, other, false).await, Inserted::New);
            let due = store.forwards().due(AT, 10).await.unwrap();
            assert_eq!(due.len(), 1);
            assert_eq!(due[0].body, body.as_bytes(), "byte for byte");
            assert_eq!(due[0].job_id.as_deref(), Some("j1"));
            assert_eq!(store.forwards().pending().await.unwrap(), 1);
        }
    }

    both_backends! {
        async fn outcomes_move_a_forward_along(store: Store) {
            insert(&store, r#"{"event_type":"X","job_id":"j1"}"#, true).await;
            let id = store.forwards().due(AT, 10).await.unwrap()[0].id;
            let retry = ForwardOutcome::Retry {
                next: LATER.into(),
                error: "refused".into(),
            };
            store.forwards().record(id, 1, AT, &retry).await.unwrap();
            assert!(
                store.forwards().due(AT, 10).await.unwrap().is_empty(),
                "not before its next attempt"
            );
            assert_eq!(
                store.forwards().next_at().await.unwrap().map(|t| t.to_string()).as_deref(),
                Some(LATER)
            );
            let due = store.forwards().due(LATER, 10).await.unwrap();
            assert_eq!((due[0].id, due[0].attempts), (id, 1));
            store
                .forwards().record(id, 2, LATER, &ForwardOutcome::Sent)
                .await
                .unwrap();
            assert_eq!(store.forwards().pending().await.unwrap(), 0);
            let shown = store.forwards().list(false, 10).await.unwrap();
            assert_eq!(shown[0].state, DeliveryState::Sent);
            assert_eq!(shown[0].attempts, 2);
            assert_eq!(
                shown[0].last_error.as_deref(),
                Some("refused"),
                "the last error stays"
            );
            assert_eq!(shown[0].sent_at.map(|t| t.to_string()).as_deref(), Some(LATER));
            // A sent forward is final: a late outcome does not reopen it.
            store
                .forwards().record(id, 3, LATER, &ForwardOutcome::Dead { error: "x".into() })
                .await
                .unwrap();
            assert_eq!(
                store.forwards().list(false, 10).await.unwrap()[0].state,
                DeliveryState::Sent
            );
            assert!(store.forwards().list(true, 10).await.unwrap().is_empty());
        }
    }
}
