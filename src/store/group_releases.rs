//! The `group_releases` table: each grouping lane's last release (migration 0016), so the
//! group window survives a restart or a takeover.

use super::{Deliveries, StoreError};
use crate::domain::Timestamp;

impl Deliveries<'_> {
    /// When `channel`'s lane last released a group, if it ever did.
    pub async fn group_release(self, channel: &str) -> Result<Option<Timestamp>, StoreError> {
        Ok(on_read!(self.store, |db| {
            sqlx::query_scalar::<_, Timestamp>(
                "SELECT released_at FROM group_releases WHERE channel = $1",
            )
            .bind(channel)
            .fetch_optional(db)
            .await
        })?)
    }

    /// Notes that `channel`'s lane released a group at `at`. In a write transaction, so that
    /// through the active instance's fenced store an old leader cannot move the new leader's
    /// group window ([`StoreError::Fenced`] instead), as every other active write.
    pub async fn set_group_release(self, channel: &str, at: &str) -> Result<(), StoreError> {
        let mut tx = self.store.begin_write().await?;
        on_tx!(tx, |c| sqlx::query(
            "INSERT INTO group_releases (channel, released_at) VALUES ($1, $2)
             ON CONFLICT (channel) DO UPDATE SET released_at = excluded.released_at",
        )
        .bind(channel)
        .bind(at)
        .execute(&mut *c)
        .await
        .map(|_| ()))?;
        tx.commit().await
    }
}

#[cfg(test)]
mod tests {
    use crate::store::test_support::both_backends;
    use crate::store::{Fence, StoreError};
    use std::time::Duration;
    use tokio::sync::{mpsc, watch};
    use tokio::time::Instant;

    /// A fence whose local deadline has already passed: the old leader's.
    fn lapsed_fence(epoch: i64) -> Fence {
        let (_tx, until) = watch::channel(Instant::now() - Duration::from_secs(1));
        let (refused, _rx) = mpsc::unbounded_channel();
        Fence::new(epoch, until, refused)
    }

    both_backends! {
        async fn a_release_is_kept_per_channel_and_replaced(store: Store) {
            assert_eq!(store.deliveries().group_release("chat").await.unwrap(), None);
            store.deliveries().set_group_release("chat", "2026-11-28T10:00:00.000Z").await.unwrap();
            store.deliveries().set_group_release("mail", "2026-11-28T10:00:01.000Z").await.unwrap();
            store.deliveries().set_group_release("chat", "2026-11-28T10:00:10.000Z").await.unwrap();
            assert_eq!(
                store.deliveries().group_release("chat").await.unwrap().map(|t| t.to_string()).as_deref(),
                Some("2026-11-28T10:00:10.000Z")
            );
            assert_eq!(
                store.deliveries().group_release("mail").await.unwrap().map(|t| t.to_string()).as_deref(),
                Some("2026-11-28T10:00:01.000Z")
            );
        }
    }

    both_backends! {
        async fn a_release_through_a_lapsed_fence_is_refused_and_not_written(store: Store) {
            store.deliveries().set_group_release("chat", "2026-11-28T10:00:00.000Z").await.unwrap();
            let old_leader = store.fenced(lapsed_fence(1));
            let e = old_leader
                .deliveries().set_group_release("chat", "2026-11-28T10:05:00.000Z")
                .await
                .unwrap_err();
            assert!(matches!(e, StoreError::Fenced { epoch: 1, .. }), "{e:?}");
            assert_eq!(
                store.deliveries().group_release("chat").await.unwrap().map(|t| t.to_string()).as_deref(),
                Some("2026-11-28T10:00:00.000Z"),
                "the new leader's window is kept"
            );
        }
    }
}
