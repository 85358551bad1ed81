//! The `silences` table, and the deliveries they (or maintenance windows) hold back.
//!
//! A held delivery is in state `silenced` with `held_by` naming its hold; the alert keeps the
//! first hold in `silenced_by`. When the hold ends, the release pass (`hold::deliver`) reads
//! the held rows with what decides whether each is still true ([`HeldRow`]) and settles them
//! ([`Silences::settle_held`]): back to `pending` with the same alert id, or left `silenced` with
//! the reason.

use super::{Store, StoreError};
use crate::domain::Timestamp;
use crate::domain::{Rule, Status, timestamp};
use crate::hold::domain::{
    AfterHold, HeldBy, HeldCause, HeldNotice, Matchers, NewSilence, Silence,
};
use chrono::{DateTime, Utc};

#[derive(sqlx::FromRow)]
struct SilenceRow {
    id: String,
    app_id: Option<String>,
    job_id: Option<String>,
    rule: Option<Rule>,
    starts_at: Timestamp,
    ends_at: Timestamp,
    comment: String,
    author: Option<String>,
    created_at: Timestamp,
}

impl SilenceRow {
    fn into_silence(self) -> Silence {
        Silence {
            matchers: Matchers {
                app_id: self.app_id,
                job_id: self.job_id,
                rule: self.rule,
            },
            starts_at: self.starts_at.to_datetime(),
            ends_at: self.ends_at.to_datetime(),
            created_at: self.created_at.to_datetime(),
            id: self.id,
            comment: self.comment,
            author: self.author,
        }
    }
}

/// The start of every SELECT of silences (a macro, so `concat!` keeps the SQL static).
macro_rules! select {
    () => {
        "SELECT id, app_id, job_id, rule, starts_at, ends_at, comment, author, created_at FROM silences"
    };
}

/// What `silence expire` found.
#[derive(Debug, PartialEq, Eq)]
pub enum Expired {
    /// Ended now (it was active or pending).
    Now(Silence),
    /// It had ended already; nothing changed.
    Already(Silence),
    NotFound,
}

/// A delivery held back, with what decides, once its hold ends, whether it is still true.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct HeldRow {
    pub alert_id: String,
    pub channel: String,
    pub held_by: String,
    pub app_id: Option<String>,
    pub job_id: Option<String>,
    pub rule: String,
    pub status: String,
    order: i64,
    transition_id: Option<i64>,
    /// The job's latest transition now.
    latest_transition: Option<i64>,
    episode_id: Option<i64>,
    /// 1 while the alert's episode is open.
    episode_open: Option<i64>,
    /// 1 if an earlier notice of the episode was sent on this channel.
    earlier_sent: i64,
}

impl HeldRow {
    pub fn rule(&self) -> Option<Rule> {
        Rule::parse(&self.rule)
    }

    /// The pure decision's input (`hold::rules::after_hold`).
    pub fn notice(&self) -> HeldNotice {
        let cause = match (self.transition_id, self.episode_id, self.episode_open) {
            (Some(t), _, _) => HeldCause::Transition {
                still_latest: self.latest_transition == Some(t),
            },
            (None, Some(id), Some(open)) => HeldCause::Episode {
                id,
                open: open != 0,
                earlier_sent: self.earlier_sent != 0,
            },
            _ => HeldCause::Unknown,
        };
        HeldNotice {
            alert_id: self.alert_id.clone(),
            channel: self.channel.clone(),
            order: self.order,
            status: if self.status == Status::Resolved.as_str() {
                Status::Resolved
            } else {
                Status::Firing
            },
            cause,
        }
    }
}

/// Silences and the deliveries they hold: `store.silences()`, a view borrowing the [`Store`].
#[derive(Clone, Copy)]
pub struct Silences<'s> {
    pub(super) store: &'s Store,
}

impl Silences<'_> {
    /// Adds a silence with the id given; returns it as stored.
    pub async fn add(
        self,
        id: &str,
        s: &NewSilence,
        now: DateTime<Utc>,
    ) -> Result<Silence, StoreError> {
        on_write!(self.store, |db| {
            sqlx::query(
            "INSERT INTO silences (id, app_id, job_id, rule, starts_at, ends_at, comment, author, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(id)
        .bind(&s.matchers.app_id)
        .bind(&s.matchers.job_id)
        .bind(s.matchers.rule.map(Rule::as_str))
        .bind(timestamp(s.starts_at))
        .bind(timestamp(s.ends_at))
        .bind(&s.comment)
        .bind(&s.author)
        .bind(timestamp(now))
        .execute(db)
        .await
        .map(|_| ())
        })?;
        Ok(self.get(id).await?.expect("the silence was just written"))
    }

    pub async fn get(self, id: &str) -> Result<Option<Silence>, StoreError> {
        let row = on_read!(self.store, |db| sqlx::query_as::<_, SilenceRow>(concat!(
            select!(),
            " WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(db)
        .await)?;
        Ok(row.map(SilenceRow::into_silence))
    }

    /// Silences that have not ended at `now` (active and pending), or with `all` every one;
    /// by start, then id.
    pub async fn list(self, all: bool, now: DateTime<Utc>) -> Result<Vec<Silence>, StoreError> {
        let rows = on_read!(self.store, |db| sqlx::query_as::<_, SilenceRow>(concat!(
            select!(),
            " WHERE $1 = 1 OR ends_at > $2 ORDER BY starts_at, id"
        ))
        .bind(all as i64)
        .bind(timestamp(now))
        .fetch_all(db)
        .await)?;
        Ok(rows.into_iter().map(SilenceRow::into_silence).collect())
    }

    /// Ends a silence at `now` (a pending one never starts). One already over is left as it
    /// is.
    pub async fn expire(self, id: &str, now: DateTime<Utc>) -> Result<Expired, StoreError> {
        let at = timestamp(now);
        let changed = on_write!(self.store, |db, d| sqlx::query(sqlx::AssertSqlSafe(
            format!(
                "UPDATE silences SET ends_at = $2, starts_at = {}(starts_at, $2)
             WHERE id = $1 AND ends_at > $2",
                d.least()
            )
        ))
        .bind(id)
        .bind(&at)
        .execute(db)
        .await
        .map(|done| done.rows_affected()))?;
        Ok(match self.get(id).await? {
            None => Expired::NotFound,
            Some(s) if changed == 1 => Expired::Now(s),
            Some(s) => Expired::Already(s),
        })
    }

    /// How many silences are active at `now`, for `/metrics`.
    pub async fn active(self, now: DateTime<Utc>) -> Result<i64, StoreError> {
        Ok(on_read!(self.store, |db| sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM silences WHERE ends_at > $1 AND starts_at <= $1",
        )
        .bind(timestamp(now))
        .fetch_one(db)
        .await)?)
    }

    /// Every delivery held back now, oldest alert first.
    pub async fn held(self) -> Result<Vec<HeldRow>, StoreError> {
        Ok(on_read!(self.store, |db| {
            sqlx::query_as::<_, HeldRow>(
            "SELECT d.alert_id, d.channel, d.held_by, a.app_id, a.job_id, a.rule, a.status,
                    a.rowid AS \"order\", a.transition_id, a.episode_id,
                    (SELECT MAX(t.id) FROM transitions t
                      WHERE t.job_id = a.job_id AND t.app_id = a.app_id) AS latest_transition,
                    (SELECT CAST(CASE WHEN e.resolved_at IS NULL THEN 1 ELSE 0 END AS BIGINT)
                       FROM episodes e WHERE e.id = a.episode_id) AS episode_open,
                    CAST(CASE WHEN EXISTS (SELECT 1 FROM alerts p JOIN deliveries pd ON pd.alert_id = p.id
                            WHERE a.episode_id IS NOT NULL AND p.episode_id = a.episode_id
                              AND p.rowid < a.rowid AND pd.channel = d.channel
                              AND pd.state = 'sent') THEN 1 ELSE 0 END AS BIGINT) AS earlier_sent
             FROM deliveries d JOIN alerts a ON a.id = d.alert_id
             WHERE d.held_by IS NOT NULL
             ORDER BY a.rowid, d.channel",
        )
        .fetch_all(db)
        .await
        })?)
    }

    /// Holds a pending delivery back: `silenced`, held by `by`. Returns true when this is
    /// the alert's first hold (its `silenced_by` was empty), for the metric.
    pub async fn hold(
        self,
        alert_id: &str,
        channel: &str,
        by: &HeldBy,
    ) -> Result<bool, StoreError> {
        let mut tx = self.store.begin_write().await?;
        let (held, first) = on_tx!(tx, |c| {
            let held = sqlx::query(
                "UPDATE deliveries SET state = 'silenced', held_by = $1
                 WHERE alert_id = $2 AND channel = $3 AND state = 'pending'",
            )
            .bind(by.as_str())
            .bind(alert_id)
            .bind(channel)
            .execute(&mut *c)
            .await?;
            let first = sqlx::query(
                "UPDATE alerts SET silenced_by = $1 WHERE id = $2 AND silenced_by IS NULL",
            )
            .bind(by.as_str())
            .bind(alert_id)
            .execute(&mut *c)
            .await?;
            Ok::<_, sqlx::Error>((held.rows_affected(), first.rows_affected()))
        })?;
        tx.commit().await?;
        Ok(held == 1 && first == 1)
    }

    /// Settles deliveries whose hold ended: `Send` puts one back in the queue, due at `now`,
    /// its age counted from now (its retries get their whole notify.max_age); `Drop` leaves
    /// it `silenced` for good, with the reason. One transaction. Returns (sent, dropped).
    pub async fn settle_held(
        self,
        settled: &[(&HeldRow, AfterHold)],
        now: DateTime<Utc>,
    ) -> Result<(u64, u64), StoreError> {
        let at = timestamp(now);
        let mut tx = self.store.begin_write().await?;
        let (mut sent, mut dropped) = (0, 0);
        for (row, what) in settled {
            match what {
                AfterHold::Send => sent += 1,
                AfterHold::Drop(_) => dropped += 1,
            }
            on_tx!(tx, |c| {
                let q = match what {
                    AfterHold::Send => sqlx::query(
                        "UPDATE deliveries SET state = 'pending', held_by = NULL, next_attempt_at = $1,
                                created_at = $1, last_error = NULL
                         WHERE alert_id = $2 AND channel = $3 AND held_by IS NOT NULL",
                    )
                    .bind(&at),
                    AfterHold::Drop(why) => sqlx::query(
                        "UPDATE deliveries SET held_by = NULL, last_error = $1
                         WHERE alert_id = $2 AND channel = $3 AND held_by IS NOT NULL",
                    )
                    .bind(format!("not sent: {why} (held by {})", row.held_by)),
                };
                q.bind(&row.alert_id)
                    .bind(&row.channel)
                    .execute(c)
                    .await
                    .map(|_| ())
            })?;
        }
        tx.commit().await?;
        Ok((sent, dropped))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hold::domain::{SilenceEnd, SilenceStatus};
    use crate::store::test_support::both_backends;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    both_backends! {
        async fn silences_are_added_listed_and_expired(store: Store) {
            let now = t("2026-01-01T10:00:00Z");
            let job = Matchers {
                job_id: Some("j1".into()),
                rule: Some(Rule::StoppedUnexpectedly),
                ..Default::default()
            };
            let two_hours = SilenceEnd::For(std::time::Duration::from_secs(7200));
            let new =
                NewSilence::new(job.clone(), None, two_hours, "deploy", Some("ann"), now).unwrap();
            let a = store.silences().add("sil_a", &new, now).await.unwrap();
            assert_eq!(a.matchers, job);
            assert_eq!(a.ends_at, t("2026-01-01T12:00:00Z"));
            assert_eq!(a.author.as_deref(), Some("ann"));
            let later = NewSilence::new(
                job.clone(),
                Some(t("2026-01-02T00:00:00Z")),
                two_hours,
                "tomorrow",
                None,
                now,
            )
            .unwrap();
            store.silences().add("sil_b", &later, now).await.unwrap();

            let ids = |v: Vec<Silence>| v.into_iter().map(|s| s.id).collect::<Vec<_>>();
            assert_eq!(
                ids(store.silences().list(false, now).await.unwrap()),
                ["sil_a", "sil_b"]
            );
            // After a's end only the pending one is listed, unless all are asked for.
            let after = t("2026-01-01T13:00:00Z");
            assert_eq!(ids(store.silences().list(false, after).await.unwrap()), ["sil_b"]);
            assert_eq!(
                ids(store.silences().list(true, after).await.unwrap()),
                ["sil_a", "sil_b"]
            );

            // Expiring a pending silence: it never starts.
            let soon = t("2026-01-01T11:00:00Z");
            let Expired::Now(b) = store.silences().expire("sil_b", soon).await.unwrap() else {
                panic!("sil_b was pending");
            };
            assert_eq!((b.starts_at, b.ends_at), (soon, soon));
            assert_eq!(b.status(soon), SilenceStatus::Expired);
            assert!(matches!(
                store.silences().expire("sil_b", soon).await.unwrap(),
                Expired::Already(_)
            ));
            assert_eq!(
                store.silences().expire("sil_nope", soon).await.unwrap(),
                Expired::NotFound
            );
            assert_eq!(ids(store.silences().list(false, soon).await.unwrap()), ["sil_a"]);
        }
    }
}
