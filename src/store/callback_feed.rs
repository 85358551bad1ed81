//! Reading `callback_events` as a feed, by id: the poller turns each new event into a poll
//! hint (`poller/feed.rs`), whichever instance's receiver stored it.

use super::{Store, StoreError};

/// What a poll hint needs of a stored event.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct EventHintRow {
    pub id: i64,
    pub app_id: String,
    pub job_id: Option<String>,
    pub event_type: String,
    pub received_at: String,
}

impl Store {
    /// Events with an id above `after`, oldest first, at most `limit`.
    pub async fn callback_hints_after(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<EventHintRow>, StoreError> {
        Ok(on_read!(self, |db| sqlx::query_as::<_, EventHintRow>(
            "SELECT id, app_id, job_id, event_type, received_at FROM callback_events
             WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(db)
        .await)?)
    }

    /// Events with an id strictly between `low` and `high`, oldest first, at most `limit`:
    /// where a feed looks again for an event committed after a newer one (ids are taken at
    /// insert, not at commit, on PostgreSQL).
    pub async fn callback_hints_between(
        &self,
        low: i64,
        high: i64,
        limit: i64,
    ) -> Result<Vec<EventHintRow>, StoreError> {
        Ok(on_read!(self, |db| sqlx::query_as::<_, EventHintRow>(
            "SELECT id, app_id, job_id, event_type, received_at FROM callback_events
             WHERE id > $1 AND id < $2 ORDER BY id LIMIT $3",
        )
        .bind(low)
        .bind(high)
        .bind(limit)
        .fetch_all(db)
        .await)?)
    }

    /// The newest `limit` events, newest first: where a feed starts (those received
    /// recently are hinted again, a takeover's gap included).
    pub async fn latest_callback_hints(&self, limit: i64) -> Result<Vec<EventHintRow>, StoreError> {
        Ok(on_read!(self, |db| sqlx::query_as::<_, EventHintRow>(
            "SELECT id, app_id, job_id, event_type, received_at FROM callback_events
             ORDER BY id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(db)
        .await)?)
    }

    /// The highest event id, if any event is stored.
    pub async fn max_callback_event_id(&self) -> Result<Option<i64>, StoreError> {
        Ok(on_read!(self, |db| sqlx::query_scalar::<_, Option<i64>>(
            "SELECT MAX(id) FROM callback_events"
        )
        .fetch_one(db)
        .await)?)
    }
}
