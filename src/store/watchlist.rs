//! The run-time watch list (`watchlist`): jobs watched without being in the config file, and
//! the version number that moves with every change to it, so a running daemon (or several
//! sharing the database) notices a change another process made with one cheap read.

use super::{Conn, Store, StoreError, WriteTx};
use crate::domain::Timestamp;
use crate::domain::{JobKey, JobSource, RuntimeJob};

#[derive(sqlx::FromRow)]
struct WatchRow {
    app_id: String,
    job_id: String,
    name: Option<String>,
    kind: String,
    notify: Option<String>,
    source: String,
    added_at: Timestamp,
    account: Option<String>,
}

impl WatchRow {
    fn into_job(self) -> RuntimeJob {
        RuntimeJob {
            key: JobKey::new(self.app_id, self.job_id),
            name: self.name,
            // A kind this build does not know (a newer recwatch wrote it) reads as the
            // default rather than failing the read of the whole list.
            kind: self.kind.parse().unwrap_or_default(),
            // Written by `watch` as a JSON array; anything else (a hand edit) means every
            // channel rather than a failed read of the whole list.
            notify: self
                .notify
                .and_then(|n| serde_json::from_str::<Vec<String>>(&n).ok()),
            source: JobSource::parse(&self.source),
            added_at: self.added_at,
            account: self.account,
        }
    }
}

const COLUMNS: &str =
    "SELECT app_id, job_id, name, kind, notify, source, added_at, account FROM watchlist";

/// What a job's retirement is decided on: it has been STOPPED, or never seen at all, since
/// before the cutoff. A RUNNING (or INIT) job is never retired however old its entry.
pub(super) const RETIRE_WATCHED: &[&str] = &["DELETE FROM watchlist WHERE rowid IN
     (SELECT w.rowid FROM watchlist w LEFT JOIN jobs j ON j.app_id = w.app_id AND j.job_id = w.job_id
      WHERE w.added_at < $1
        AND (j.state IS NULL OR j.state = 'STOPPED')
        AND coalesce(j.last_changed_at, w.added_at) < $1
      LIMIT $2)"];

/// The run-time watch list and the unwatches remembered: `store.watchlist()`, a view
/// borrowing the [`Store`].
#[derive(Clone, Copy)]
pub struct RuntimeList<'s> {
    pub(super) store: &'s Store,
}

/// The run-time watch list and the unwatches remembered, inside a write transaction:
/// `tx.watchlist()`.
pub struct RuntimeListTx<'t> {
    pub(super) tx: &'t mut WriteTx,
}

/// Inserts a run-time entry on `c` (a transaction's connection or the write pool's): the
/// statement behind both `RuntimeList::add` and `RuntimeListTx::add`.
async fn insert(mut c: Conn<'_>, job: &RuntimeJob) -> Result<bool, StoreError> {
    let notify = job
        .notify
        .as_ref()
        .map(|n| serde_json::to_string(n).expect("strings serialize"));
    let done = on_tx!(c, |c| sqlx::query(
        "INSERT INTO watchlist (app_id, job_id, name, kind, notify, source, added_at, account)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (app_id, job_id) DO NOTHING"
    )
    .bind(&job.key.app_id)
    .bind(&job.key.job_id)
    .bind(&job.name)
    .bind(job.kind.as_str())
    .bind(&notify)
    .bind(job.source.as_str())
    .bind(job.added_at)
    .bind(&job.account)
    .execute(&mut *c)
    .await
    .map(|done| done.rows_affected()))?;
    Ok(done == 1)
}

/// The list's version read on `c`: behind `RuntimeList::version` and `RuntimeListTx::version`.
async fn version(mut c: Conn<'_>) -> Result<i64, StoreError> {
    Ok(on_tx!(c, |c| sqlx::query_scalar::<_, i64>(
        "SELECT version FROM watchlist_version WHERE id = 1"
    )
    .fetch_one(&mut *c)
    .await)?)
}

impl RuntimeListTx<'_> {
    /// `RuntimeList::add` inside a transaction: a re-created job is watched in the same commit
    /// that records its creation.
    pub async fn add(&mut self, job: &RuntimeJob) -> Result<bool, StoreError> {
        insert(self.tx.conn(), job).await
    }

    /// `RuntimeList::version` inside a transaction: read after this transaction's own changes,
    /// it says whether anyone else changed the list since a version read before them (each
    /// change moves it by one), so a process that made every change knows the list without
    /// reading it again.
    pub async fn version(&mut self) -> Result<i64, StoreError> {
        version(self.tx.conn()).await
    }
}

impl RuntimeList<'_> {
    /// Adds `job` to the run-time list; false (and nothing changed) when it is already there,
    /// whatever its source. A single statement on the write connection, outside a transaction.
    pub async fn add(self, job: &RuntimeJob) -> Result<bool, StoreError> {
        let mut c = self.store.backend.write_conn().await?;
        insert(c.conn(), job).await
    }

    /// Removes a job from the run-time list; false when it was not there. The unwatch is
    /// remembered (`unwatched`, in the same commit) so that discovery does not add the job
    /// again for an event signed before it (`RuntimeList::unwatched_at`).
    pub async fn remove(self, key: &JobKey) -> Result<bool, StoreError> {
        let now = crate::domain::timestamp(chrono::Utc::now());
        let mut tx = self.store.begin_write().await?;
        let done = on_tx!(tx, |c| sqlx::query(
            "DELETE FROM watchlist WHERE app_id = $1 AND job_id = $2"
        )
        .bind(&key.app_id)
        .bind(&key.job_id)
        .execute(c)
        .await
        .map(|done| done.rows_affected()))?;
        if done == 1 {
            tx.watchlist().remember_unwatch(key, &now).await?;
        }
        tx.commit().await?;
        Ok(done == 1)
    }

    /// The whole run-time list, in (app_id, job_id) order.
    pub async fn all(self) -> Result<Vec<RuntimeJob>, StoreError> {
        let sql = format!("{COLUMNS} ORDER BY app_id, job_id");
        let rows = on_read!(self.store, |db| sqlx::query_as::<_, WatchRow>(
            sqlx::AssertSqlSafe(sql.as_str())
        )
        .fetch_all(db)
        .await)?;
        Ok(rows.into_iter().map(WatchRow::into_job).collect())
    }

    /// One entry of the run-time list.
    pub async fn get(self, key: &JobKey) -> Result<Option<RuntimeJob>, StoreError> {
        let sql = format!("{COLUMNS} WHERE app_id = $1 AND job_id = $2");
        let row = on_read!(self.store, |db| sqlx::query_as::<_, WatchRow>(
            sqlx::AssertSqlSafe(sql.as_str())
        )
        .bind(&key.app_id)
        .bind(&key.job_id)
        .fetch_optional(db)
        .await)?;
        Ok(row.map(WatchRow::into_job))
    }

    /// A number that changes whenever the run-time list does, whoever changed it.
    pub async fn version(self) -> Result<i64, StoreError> {
        let mut c = self.store.backend.read_conn().await?;
        version(c.conn()).await
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::record;
    use super::*;
    use crate::store::test_support::both_backends;
    use chrono::Utc;

    fn job(id: &str, source: JobSource, added: chrono::DateTime<Utc>) -> RuntimeJob {
        RuntimeJob {
            account: None,
            key: JobKey::new("app", id),
            name: Some(format!("name {id}")),
            kind: crate::domain::JobKind::Individual,
            notify: Some(vec!["ops".into()]),
            source,
            added_at: Timestamp::from(added),
        }
    }

    both_backends! {
        async fn watch_unwatch_and_the_version_moves_with_every_change(store: Store) {
            let v0 = store.watchlist().version().await.unwrap();
            assert!(store.watchlist().all().await.unwrap().is_empty());

            let b = job("b", JobSource::Api, Utc::now());
            let mut a = job("a", JobSource::Cli, Utc::now());
            a.notify = None;
            assert!(store.watchlist().add(&b).await.unwrap(), "added");
            assert!(store.watchlist().add(&a).await.unwrap(), "added");
            let v1 = store.watchlist().version().await.unwrap();
            assert_ne!(v1, v0);
            assert_eq!(
                store.watchlist().all().await.unwrap(),
                vec![a.clone(), b.clone()],
                "in key order, read back as written (no notify list = every channel)"
            );

            // Already there, from another source: nothing changes, the first entry stays.
            let again = job("b", JobSource::Callback, Utc::now());
            assert!(!store.watchlist().add(&again).await.unwrap());
            assert_eq!(store.watchlist().version().await.unwrap(), v1);
            assert_eq!(store.watchlist().get(&b.key).await.unwrap(), Some(b.clone()));

            assert!(store.watchlist().remove(&b.key).await.unwrap());
            assert!(!store.watchlist().remove(&b.key).await.unwrap(), "already gone");
            assert_ne!(store.watchlist().version().await.unwrap(), v1);
            assert_eq!(store.watchlist().all().await.unwrap(), vec![a]);
            assert_eq!(store.watchlist().get(&b.key).await.unwrap(), None);
        }
    }

    both_backends! {
        async fn a_mix_job_keeps_its_kind_in_the_list_and_in_its_row(store: Store) {
            use crate::domain::JobKind;
            let mix = RuntimeJob {
                kind: JobKind::Mix,
                ..job("m", JobSource::Callback, Utc::now())
            };
            store.watchlist().add(&mix).await.unwrap();
            store
                .watchlist().add(&job("i", JobSource::Api, Utc::now()))
                .await
                .unwrap();
            let kinds: Vec<JobKind> = store
                .watchlist().all()
                .await
                .unwrap()
                .iter()
                .map(|j| j.kind)
                .collect();
            assert_eq!(kinds, [JobKind::Individual, JobKind::Mix]);
            assert_eq!(store.watchlist().get(&mix.key).await.unwrap(), Some(mix));

            // The job's row takes the kind its polls carry: a failed poll and an answer alike.
            let mut polled = crate::store::test_support::record("m", Utc::now(), None, "RUNNING");
            polled.kind = JobKind::Mix;
            store.jobs().record(&[polled]).await.unwrap();
            let row = store.jobs().get("app", "m").await.unwrap().unwrap();
            assert_eq!((row.kind.as_str(), row.kind()), ("mix", JobKind::Mix));
            let failed = crate::domain::PollRecord {
                job_id: "f".into(),
                kind: JobKind::Mix,
                outcome: crate::domain::PollOutcome::Failed {
                    kind: crate::domain::ErrorKind::Timeout,
                    error: "timed out".into(),
                },
                ..crate::store::test_support::record("f", Utc::now(), None, "RUNNING")
            };
            store.jobs().record(&[failed]).await.unwrap();
            assert_eq!(store.jobs().get("app", "f").await.unwrap().unwrap().kind(), JobKind::Mix);
        }
    }

    both_backends! {
        async fn an_unknown_source_is_kept(store: Store) {
            let j = job("r", JobSource::Other("from-a-later-build".into()), Utc::now());
            store.watchlist().add(&j).await.unwrap();
            assert_eq!(
                store.watchlist().all().await.unwrap()[0].source.as_str(),
                "from-a-later-build"
            );
        }
    }

    both_backends! {
        async fn retention_retires_stopped_and_never_seen_entries_only(store: Store) {
            let now = Utc::now();
            let old = now - chrono::Duration::days(100);
            let recent = now - chrono::Duration::days(1);
            let cutoff = now - chrono::Duration::days(90);
            for (id, added) in [
                ("stopped-long-ago", old),
                ("stopped-recently", old),
                ("running", old),
                ("never-seen", old),
                ("new", recent),
            ] {
                store
                    .watchlist().add(&job(id, JobSource::Api, added))
                    .await
                    .unwrap();
            }
            store
                .jobs().record(&[record("stopped-long-ago", old, None, "STOPPED")])
                .await
                .unwrap();
            store
                .jobs().record(&[record("stopped-recently", recent, None, "STOPPED")])
                .await
                .unwrap();
            store
                .jobs().record(&[record("running", old, None, "RUNNING")])
                .await
                .unwrap();
            let (_, stop) = tokio::sync::watch::channel(false);
            let pruned = store.db().prune(cutoff, 1, &stop).await.unwrap();
            assert_eq!(pruned.watched, 2, "{pruned:?}");
            let left: Vec<String> = store
                .watchlist().all()
                .await
                .unwrap()
                .into_iter()
                .map(|j| j.key.job_id.clone())
                .collect();
            assert_eq!(left, ["new", "running", "stopped-recently"]);
        }
    }
}
