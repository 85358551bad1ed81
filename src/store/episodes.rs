//! The `episodes` table: a condition that lasts (stuck_init, job_not_found, api_unhealthy),
//! from when it starts to when it clears. At most one open episode per rule and job (a
//! partial unique index): a restart finds it open and does not fire again. The outbox decides
//! when to open, remind and resolve; these are the statements it does that with.

use super::{Store, StoreError, WriteTx};
use crate::domain::Rule;

/// An episode still open.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct OpenEpisode {
    pub id: i64,
    /// When its last notice (firing or reminder) was made, RFC 3339.
    pub last_notified_at: String,
    pub reminders: i64,
}

impl Store {
    /// Whether an episode of `rule` is open for any job (or api-wide).
    pub async fn episode_open(&self, rule: Rule) -> Result<bool, StoreError> {
        let open: Option<i64> =
            sqlx::query_scalar("SELECT id FROM episodes WHERE rule = ? AND resolved_at IS NULL")
                .bind(rule.as_str())
                .fetch_optional(&self.read)
                .await?;
        Ok(open.is_some())
    }
}

impl WriteTx {
    /// The open episode of `rule` for this job ("" and "" for an api-wide condition).
    pub async fn open_episode(
        &mut self,
        rule: Rule,
        app_id: &str,
        job_id: &str,
    ) -> Result<Option<OpenEpisode>, StoreError> {
        Ok(sqlx::query_as::<_, OpenEpisode>(
            "SELECT id, last_notified_at, reminders FROM episodes
             WHERE rule = ? AND app_id = ? AND job_id = ? AND resolved_at IS NULL",
        )
        .bind(rule.as_str())
        .bind(app_id)
        .bind(job_id)
        .fetch_optional(self.conn())
        .await?)
    }

    /// Opens an episode at `at` (its first notice is made then); returns its id.
    pub async fn insert_episode(
        &mut self,
        rule: Rule,
        app_id: &str,
        job_id: &str,
        reason: &str,
        at: &str,
    ) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "INSERT INTO episodes (rule, app_id, job_id, reason, opened_at, last_notified_at)
             VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(rule.as_str())
        .bind(app_id)
        .bind(job_id)
        .bind(reason)
        .bind(at)
        .bind(at)
        .fetch_one(self.conn())
        .await?)
    }

    /// Notes the episode's `reminders`-th reminder, made at `at`.
    pub async fn remind_episode(
        &mut self,
        id: i64,
        at: &str,
        reminders: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE episodes SET last_notified_at = ?, reminders = ? WHERE id = ?")
            .bind(at)
            .bind(reminders)
            .bind(id)
            .execute(self.conn())
            .await?;
        Ok(())
    }

    /// Closes the episode at `at`.
    pub async fn resolve_episode(&mut self, id: i64, at: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE episodes SET resolved_at = ? WHERE id = ?")
            .bind(at)
            .bind(id)
            .execute(self.conn())
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::timestamp;
    use chrono::Utc;

    #[tokio::test]
    async fn an_episode_opens_once_is_reminded_and_resolved() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("e.db")).await.unwrap();
        let at = timestamp(Utc::now());
        let mut tx = store.begin_write().await.unwrap();
        assert_eq!(
            tx.open_episode(Rule::StuckInit, "app", "j").await.unwrap(),
            None
        );
        let id = tx
            .insert_episode(Rule::StuckInit, "app", "j", "stuck", &at)
            .await
            .unwrap();
        // The partial unique index: a second open episode of the same rule and job is refused.
        let again = tx
            .insert_episode(Rule::StuckInit, "app", "j", "stuck", &at)
            .await
            .unwrap_err();
        assert!(matches!(again, StoreError::Sql(_)), "{again:?}");
        tx.commit().await.unwrap();
        assert!(store.episode_open(Rule::StuckInit).await.unwrap());
        assert!(!store.episode_open(Rule::ApiUnhealthy).await.unwrap());

        let later = timestamp(Utc::now() + chrono::Duration::hours(1));
        let mut tx = store.begin_write().await.unwrap();
        tx.remind_episode(id, &later, 1).await.unwrap();
        assert_eq!(
            tx.open_episode(Rule::StuckInit, "app", "j").await.unwrap(),
            Some(OpenEpisode {
                id,
                last_notified_at: later.clone(),
                reminders: 1,
            })
        );
        // Another job, or the api-wide condition, is another episode.
        assert_eq!(
            tx.open_episode(Rule::StuckInit, "app", "other")
                .await
                .unwrap(),
            None
        );
        tx.resolve_episode(id, &later).await.unwrap();
        assert_eq!(
            tx.open_episode(Rule::StuckInit, "app", "j").await.unwrap(),
            None
        );
        // Closed, the same condition may open a new episode.
        let new = tx
            .insert_episode(Rule::StuckInit, "app", "j", "stuck again", &later)
            .await
            .unwrap();
        assert_ne!(new, id);
        tx.commit().await.unwrap();
    }
}
