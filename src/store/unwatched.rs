//! The `unwatched` table (issue 22, item 6): when each job was last removed from the run-time
//! watch list by an operator, so that discovery can tell an old event (a replay, or RTC
//! resending one) from a genuinely new one. Written with the removal, in its transaction.

use super::{Conn, RuntimeList, RuntimeListTx, StoreError};
use crate::domain::JobKey;

impl RuntimeListTx<'_> {
    /// Remembers that `key` was unwatched at `at` (the latest unwatch wins).
    pub(super) async fn remember_unwatch(
        &mut self,
        key: &JobKey,
        at: &str,
    ) -> Result<(), StoreError> {
        on_tx!(self.tx, |c| sqlx::query(
            "INSERT INTO unwatched (app_id, job_id, unwatched_at) VALUES ($1, $2, $3)
             ON CONFLICT (app_id, job_id) DO UPDATE SET unwatched_at = excluded.unwatched_at"
        )
        .bind(&key.app_id)
        .bind(&key.job_id)
        .bind(at)
        .execute(c)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// `RuntimeList::unwatched_at` inside a transaction: discovery decides on it in the commit
    /// that watches the job, so an unwatch committed before cannot be missed.
    pub async fn unwatched_at(&mut self, key: &JobKey) -> Result<Option<String>, StoreError> {
        unwatched_at(self.tx.conn(), key).await
    }
}

impl RuntimeList<'_> {
    /// When `key` was last unwatched by an operator, as stored (RFC 3339, UTC); None if never.
    pub async fn unwatched_at(self, key: &JobKey) -> Result<Option<String>, StoreError> {
        let mut c = self.store.backend.read_conn().await?;
        unwatched_at(c.conn(), key).await
    }
}

/// When `key` was last unwatched, read on `c`: behind both `unwatched_at`s.
async fn unwatched_at(mut c: Conn<'_>, key: &JobKey) -> Result<Option<String>, StoreError> {
    Ok(on_tx!(c, |c| sqlx::query_scalar::<_, String>(
        "SELECT unwatched_at FROM unwatched WHERE app_id = $1 AND job_id = $2"
    )
    .bind(&key.app_id)
    .bind(&key.job_id)
    .fetch_optional(&mut *c)
    .await)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::both_backends;

    both_backends! {
    async fn an_unwatch_is_remembered_with_its_latest_time(store: Store) {
        let key = JobKey::new("app", "job-1");
        assert_eq!(store.watchlist().unwatched_at(&key).await.unwrap(), None);
        let job = crate::domain::RuntimeJob {
            account: None,
            key: key.clone(),
            name: None,
            kind: Default::default(),
            notify: None,
            source: crate::domain::JobSource::Api,
            added_at: "2026-12-01T00:00:00.000Z".parse().unwrap(),
        };
        assert!(store.watchlist().add(&job).await.unwrap());
        assert!(store.watchlist().remove(&key).await.unwrap());
        let first = store.watchlist().unwatched_at(&key).await.unwrap().expect("remembered");
        // Not watched: nothing removed, nothing remembered anew.
        assert!(!store.watchlist().remove(&key).await.unwrap());
        assert_eq!(store.watchlist().unwatched_at(&key).await.unwrap(), Some(first.clone()));
        assert!(store.watchlist().add(&job).await.unwrap());
        assert!(store.watchlist().remove(&key).await.unwrap());
        let second = store.watchlist().unwatched_at(&key).await.unwrap().unwrap();
        assert!(second >= first, "{second} before {first}");
    }
    }
}
