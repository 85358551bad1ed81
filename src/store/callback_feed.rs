//! Reading `callback_events` as a feed, by id: the poller turns each new event into a poll
//! hint (`poller/feed.rs`), whichever instance's receiver stored it.

use super::{Callbacks, StoreError};
use crate::domain::Timestamp;
use recwatch_rtc::callback::EventType;

/// What a poll hint needs of a stored event.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct EventHintRow {
    pub id: i64,
    pub app_id: String,
    pub job_id: Option<String>,
    /// Parsed as it is read, like the store's other enums (unknown types kept as
    /// `EventType::Other`, never refused).
    #[sqlx(try_from = "String")]
    pub event_type: EventType,
    pub received_at: Timestamp,
}

impl Callbacks<'_> {
    /// Events with an id above `after`, oldest first, at most `limit`.
    pub async fn hints_after(
        self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<EventHintRow>, StoreError> {
        Ok(on_read!(self.store, |db| {
            sqlx::query_as::<_, EventHintRow>(
                "SELECT id, app_id, job_id, event_type, received_at FROM callback_events
             WHERE id > $1 ORDER BY id LIMIT $2",
            )
            .bind(after)
            .bind(limit)
            .fetch_all(db)
            .await
        })?)
    }

    /// Events with an id strictly between `low` and `high`, oldest first, at most `limit`:
    /// where a feed looks again for an event committed after a newer one (ids are taken at
    /// insert, not at commit, on PostgreSQL).
    pub async fn hints_between(
        self,
        low: i64,
        high: i64,
        limit: i64,
    ) -> Result<Vec<EventHintRow>, StoreError> {
        Ok(on_read!(self.store, |db| {
            sqlx::query_as::<_, EventHintRow>(
                "SELECT id, app_id, job_id, event_type, received_at FROM callback_events
             WHERE id > $1 AND id < $2 ORDER BY id LIMIT $3",
            )
            .bind(low)
            .bind(high)
            .bind(limit)
            .fetch_all(db)
            .await
        })?)
    }

    /// The newest `limit` events, newest first: where a feed starts (those received
    /// recently are hinted again, a takeover's gap included).
    pub async fn latest_hints(self, limit: i64) -> Result<Vec<EventHintRow>, StoreError> {
        Ok(on_read!(self.store, |db| {
            sqlx::query_as::<_, EventHintRow>(
                "SELECT id, app_id, job_id, event_type, received_at FROM callback_events
             ORDER BY id DESC LIMIT $1",
            )
            .bind(limit)
            .fetch_all(db)
            .await
        })?)
    }

    /// The highest event id, if any event is stored.
    pub async fn max_event_id(self) -> Result<Option<i64>, StoreError> {
        Ok(on_read!(self.store, |db| sqlx::query_scalar::<
            _,
            Option<i64>,
        >(
            "SELECT MAX(id) FROM callback_events"
        )
        .fetch_one(db)
        .await)?)
    }
}

#[cfg(test)]
mod tests {
    use crate::store::Store;
    use crate::store::test_support::both_backends;
    use recwatch_rtc::callback::{EventType, RecordEvent};

    async fn store_event(store: &Store, job: Option<&str>, n: u32) {
        let body = match job {
            Some(j) => format!(
                r#"{{"event_type":"RECORD_NEW_FILE_START","job_id":"{j}","detail_message":"{n}"}}"#
            ),
            None => format!(r#"{{"event_type":"SOMETHING","detail_message":"{n}"}}"#),
        };
        let event = RecordEvent::parse(body.as_bytes()).unwrap();
        let at = format!("2026-11-28T10:00:{n:02}.000Z");
        store
            .callbacks()
            .insert("app", &event, &format!("sha-{n}"), &at, None)
            .await
            .unwrap();
    }

    both_backends! {
        async fn events_are_read_by_id_after_between_and_newest_first(store: Store) {
            assert_eq!(store.callbacks().max_event_id().await.unwrap(), None);
            assert!(store.callbacks().latest_hints(10).await.unwrap().is_empty());
            for n in 1..=4 {
                store_event(&store, (n != 3).then_some("j"), n).await;
            }
            let all = store.callbacks().hints_after(0, 100).await.unwrap();
            let ids: Vec<i64> = all.iter().map(|r| r.id).collect();
            assert_eq!(ids.len(), 4);
            assert!(ids.windows(2).all(|w| w[0] < w[1]), "oldest first: {ids:?}");
            assert_eq!(all[0].job_id.as_deref(), Some("j"));
            assert_eq!(all[2].job_id, None, "an event naming no job is read too");
            assert_eq!(all[0].event_type, EventType::RecordNewFileStart);
            assert_eq!(all[2].event_type, EventType::Other("SOMETHING".into()));
            assert_eq!(all[3].received_at.to_string(), "2026-11-28T10:00:04.000Z");
            assert_eq!(store.callbacks().max_event_id().await.unwrap(), Some(ids[3]));
            let after = store.callbacks().hints_after(ids[1], 1).await.unwrap();
            assert_eq!(after.iter().map(|r| r.id).collect::<Vec<_>>(), [ids[2]], "the limit holds");
            let between = store.callbacks().hints_between(ids[0], ids[3], 100).await.unwrap();
            assert_eq!(between.iter().map(|r| r.id).collect::<Vec<_>>(), [ids[1], ids[2]]);
            let newest = store.callbacks().latest_hints(2).await.unwrap();
            assert_eq!(newest.iter().map(|r| r.id).collect::<Vec<_>>(), [ids[3], ids[2]]);
        }
    }
}
