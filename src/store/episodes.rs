//! The `episodes` table: a condition that lasts (stuck_init, job_not_found, api_unhealthy),
//! from when it starts to when it clears. At most one open episode per rule and job (a
//! partial unique index): a restart finds it open and does not fire again. The outbox decides
//! when to open, remind and resolve; these are the statements it does that with.

use super::{Store, StoreError, WriteTx};
use crate::domain::Rule;
use crate::domain::Timestamp;

/// An episode still open.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct OpenEpisode {
    pub id: i64,
    /// When its last notice (firing or reminder) was made, RFC 3339.
    pub last_notified_at: Timestamp,
    pub reminders: i64,
}

/// A job's open episodes among three rules (shared with SQLite's path in one go,
/// `record.rs`: its parameters appear in order).
pub(super) const OPEN_OF_JOB: &str = "SELECT rule, id, last_notified_at, reminders FROM episodes
 WHERE rule IN ($1, $2, $3) AND app_id = $4 AND job_id = $5 AND resolved_at IS NULL";

/// An open episode with its rule, as [`EpisodesTx::open_episodes`](crate::store::episodes::EpisodesTx::open_episodes) reads it.
#[derive(sqlx::FromRow)]
struct OpenEpisodeOf {
    rule: Rule,
    id: i64,
    last_notified_at: Timestamp,
    reminders: i64,
}

/// Condition episodes (`episodes`): `store.episodes()`, a view borrowing the [`Store`].
#[derive(Clone, Copy)]
pub struct Episodes<'s> {
    pub(super) store: &'s Store,
}

/// Condition episodes (`episodes`), inside a write transaction: `tx.episodes()`.
pub struct EpisodesTx<'t> {
    pub(super) tx: &'t mut WriteTx,
}

impl Episodes<'_> {
    /// The accounts with an open account-wide episode of `rule` (app_id '', job_id the
    /// account's name: api_unhealthy).
    pub async fn open_accounts(self, rule: Rule) -> Result<Vec<String>, StoreError> {
        Ok(on_read!(self.store, |db| sqlx::query_scalar::<_, String>(
            "SELECT job_id FROM episodes WHERE rule = $1 AND app_id = '' AND resolved_at IS NULL"
        )
        .bind(rule.as_str())
        .fetch_all(db)
        .await)?)
    }
}

impl EpisodesTx<'_> {
    /// The open episode of `rule` for this job ("" and "" for an api-wide condition).
    pub async fn find_open(
        &mut self,
        rule: Rule,
        app_id: &str,
        job_id: &str,
    ) -> Result<Option<OpenEpisode>, StoreError> {
        Ok(on_tx!(self.tx, |c| sqlx::query_as::<_, OpenEpisode>(
            "SELECT id, last_notified_at, reminders FROM episodes
             WHERE rule = $1 AND app_id = $2 AND job_id = $3 AND resolved_at IS NULL",
        )
        .bind(rule.as_str())
        .bind(app_id)
        .bind(job_id)
        .fetch_optional(c)
        .await)?)
    }

    /// The open episodes of a job among `rules`, three rules to a statement: a poll asks for
    /// each of its conditions (stuck_init, poll_failing, job_not_found), and a statement
    /// apiece was three round trips to the database's worker thread for what is nearly always
    /// nothing. A rule given twice is read once.
    pub async fn open_episodes(
        &mut self,
        rules: &[Rule],
        app_id: &str,
        job_id: &str,
    ) -> Result<Vec<(Rule, OpenEpisode)>, StoreError> {
        let mut open = Vec::new();
        for three in rules.chunks(3) {
            // A fixed IN list, its empty places filled with the first rule: one statement
            // text (prepared once), each rule a seek of the partial index `episodes_open`.
            let rule = |i: usize| three.get(i).unwrap_or(&three[0]).as_str();
            let rows = on_tx!(self.tx, |c| sqlx::query_as::<_, OpenEpisodeOf>(OPEN_OF_JOB)
                .bind(rule(0))
                .bind(rule(1))
                .bind(rule(2))
                .bind(app_id)
                .bind(job_id)
                .fetch_all(c)
                .await)?;
            open.extend(rows.into_iter().map(|r| {
                let episode = OpenEpisode {
                    id: r.id,
                    last_notified_at: r.last_notified_at,
                    reminders: r.reminders,
                };
                (r.rule, episode)
            }));
        }
        Ok(open)
    }

    /// Opens an episode at `at` (its first notice is made then); returns its id.
    pub async fn insert(
        &mut self,
        rule: Rule,
        app_id: &str,
        job_id: &str,
        reason: &str,
        at: &str,
    ) -> Result<i64, StoreError> {
        Ok(on_tx!(self.tx, |c| sqlx::query_scalar::<_, i64>(
            "INSERT INTO episodes (rule, app_id, job_id, reason, opened_at, last_notified_at)
             VALUES ($1, $2, $3, $4, $5, $5) RETURNING id",
        )
        .bind(rule.as_str())
        .bind(app_id)
        .bind(job_id)
        .bind(reason)
        .bind(at)
        .fetch_one(c)
        .await)?)
    }

    /// Notes the episode's `reminders`-th reminder, made at `at`.
    pub async fn remind(&mut self, id: i64, at: &str, reminders: i64) -> Result<(), StoreError> {
        on_tx!(self.tx, |c| sqlx::query(
            "UPDATE episodes SET last_notified_at = $1, reminders = $2 WHERE id = $3"
        )
        .bind(at)
        .bind(reminders)
        .bind(id)
        .execute(c)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// Closes the episode at `at`.
    pub async fn resolve(&mut self, id: i64, at: &str) -> Result<(), StoreError> {
        on_tx!(self.tx, |c| sqlx::query(
            "UPDATE episodes SET resolved_at = $1 WHERE id = $2"
        )
        .bind(at)
        .bind(id)
        .execute(c)
        .await
        .map(|_| ()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::timestamp;
    use crate::store::test_support::both_backends;
    use chrono::Utc;

    both_backends! {
        async fn an_episode_opens_once_is_reminded_and_resolved(store: Store) {
            let at = timestamp(Utc::now());
            let mut tx = store.begin_write().await.unwrap();
            assert_eq!(
                tx.episodes().find_open(Rule::StuckInit, "app", "j").await.unwrap(),
                None
            );
            let id = tx
                .episodes().insert(Rule::StuckInit, "app", "j", "stuck", &at)
                .await
                .unwrap();
            tx.commit().await.unwrap();
            // The partial unique index: a second open episode of the same rule and job is
            // refused (in a transaction of its own: PostgreSQL aborts a transaction at its
            // first failed statement, and then refuses to commit it, see `WriteTx::commit`).
            let mut tx = store.begin_write().await.unwrap();
            let again = tx
                .episodes().insert(Rule::StuckInit, "app", "j", "stuck", &at)
                .await
                .unwrap_err();
            assert!(matches!(again, StoreError::Sql(_)), "{again:?}");
            if store.db().is_postgres() {
                let refused = tx.commit().await.unwrap_err();
                assert_eq!(refused.pg_state(), Some("25P02"), "{refused:?}");
            } else {
                drop(tx);
            }
            assert!(store.episodes().open_accounts(Rule::ApiUnhealthy).await.unwrap().is_empty());

            let later = timestamp(Utc::now() + chrono::Duration::hours(1));
            let mut tx = store.begin_write().await.unwrap();
            tx.episodes().remind(id, &later, 1).await.unwrap();
            assert_eq!(
                tx.episodes().find_open(Rule::StuckInit, "app", "j").await.unwrap(),
                Some(OpenEpisode {
                    id,
                    last_notified_at: later.parse().unwrap(),
                    reminders: 1,
                })
            );
            // Another job, or the api-wide condition, is another episode.
            assert_eq!(
                tx.episodes().find_open(Rule::StuckInit, "app", "other")
                    .await
                    .unwrap(),
                None
            );
            tx.episodes().resolve(id, &later).await.unwrap();
            assert_eq!(
                tx.episodes().find_open(Rule::StuckInit, "app", "j").await.unwrap(),
                None
            );
            // Closed, the same condition may open a new episode.
            let new = tx
                .episodes().insert(Rule::StuckInit, "app", "j", "stuck again", &later)
                .await
                .unwrap();
            assert_ne!(new, id);
            tx.commit().await.unwrap();
        }
    }
}
