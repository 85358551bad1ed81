//! The `deliveries` table as a queue, and the states a delivery goes through:
//!
//! ```text
//! pending --accepted--> sent
//!    |  ^
//!    |  '--failed, retry later (next_attempt_at, last_error)
//!    '----failed at notify.max_age, or never retryable, or channel removed--> dead
//!    '----held by a silence or maintenance window at send time--> silenced
//!                (back to pending when the hold ends and it is still true: `silences`)
//! ```
//!
//! Every statement about deliveries that the delivery worker (`deliver`) runs is here, next
//! to the tests that drive a real SQLite file through those states.

use super::{Dialect, Store, StoreError};
use crate::domain::Timestamp;
use crate::domain::timestamp;
use chrono::{DateTime, Utc};
use std::sync::Arc;

/// The `deliveries` queue and the lanes' group releases: `store.deliveries()`, a view borrowing the
/// [`Store`].
#[derive(Clone, Copy)]
pub struct Deliveries<'s> {
    pub(super) store: &'s Store,
}

/// Which deliveries a lane works on: one channel's, and optionally only those of some alerts
/// (`poll-once` delivers only the alerts it raised).
#[derive(Clone, Debug)]
pub struct Filter {
    pub channel: String,
    /// A JSON array of alert ids, read as a table (`Dialect::json_texts`).
    pub only: Option<Arc<str>>,
}

impl Filter {
    pub fn channel(name: &str) -> Filter {
        Filter {
            channel: name.to_string(),
            only: None,
        }
    }
}

/// A delivery that is due, with what it takes to attempt it.
#[derive(Clone, Debug)]
pub struct Due {
    pub alert_id: String,
    pub channel: String,
    /// For log lines: "-" for api-wide alerts.
    pub app_id: String,
    pub job_id: String,
    /// Attempts made before this one.
    pub attempts: u32,
    pub created_at: DateTime<Utc>,
    pub payload: String,
}

/// The rows a lane may take: pending, on its channel, and not held back by an earlier notice
/// of the same episode still pending on the same channel (`alerts.rowid` is the order in
/// which the outbox made them). Without that, a retried firing could land after its
/// resolved notice.
fn takeable(d: Dialect) -> String {
    format!(
        "
    FROM deliveries d JOIN alerts a ON a.id = d.alert_id
    WHERE d.channel = $1 AND d.state = 'pending'
      AND ($2 IS NULL OR d.alert_id IN (SELECT value FROM {}))
      AND NOT EXISTS (
          SELECT 1 FROM alerts e JOIN deliveries ed ON ed.alert_id = e.id
          WHERE a.episode_id IS NOT NULL AND e.episode_id = a.episode_id
            AND e.rowid < a.rowid AND ed.channel = d.channel AND ed.state = 'pending')",
        d.json_texts("$2")
    )
}

/// A due delivery as read, before its times are parsed.
#[derive(sqlx::FromRow)]
struct DueRow {
    alert_id: String,
    channel: String,
    attempts: i64,
    created_at: Timestamp,
    payload: String,
    app_id: String,
    job_id: String,
}

/// A delivery and when it is next tried (or, for `pending_created`, when it was made).
#[derive(sqlx::FromRow)]
struct WhenRow {
    alert_id: String,
    at: Timestamp,
}

/// Pending deliveries of one channel.
#[derive(sqlx::FromRow)]
struct ChannelCount {
    channel: String,
    n: i64,
}

impl Deliveries<'_> {
    /// Up to `limit` deliveries due at `now`, the longest-waiting first.
    pub async fn due(
        self,
        filter: &Filter,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Due>, StoreError> {
        let rows = on_read!(self.store, |db, d| sqlx::query_as::<_, DueRow>(
            sqlx::AssertSqlSafe(format!(
                "SELECT d.alert_id, d.channel, d.attempts, d.created_at, a.payload,
                    COALESCE(a.app_id, '-') AS app_id, COALESCE(a.job_id, '-') AS job_id{}
                  AND d.next_attempt_at <= $3 ORDER BY d.next_attempt_at, a.rowid LIMIT $4",
                takeable(d)
            ))
        )
        .bind(&filter.channel)
        .bind(filter.only.as_deref())
        .bind(timestamp(now))
        .bind(limit.min(i64::MAX as usize) as i64)
        .fetch_all(db)
        .await)?;
        Ok(rows
            .into_iter()
            .map(|r| Due {
                alert_id: r.alert_id,
                channel: r.channel,
                attempts: r.attempts.clamp(0, u32::MAX as i64) as u32,
                created_at: r.created_at.to_datetime(),
                payload: r.payload,
                app_id: r.app_id,
                job_id: r.job_id,
            })
            .collect())
    }

    /// The next `limit` takeable deliveries by due time, due or not: (alert id, next attempt).
    /// The caller skips the ones it is already attempting.
    pub async fn next_due(
        self,
        filter: &Filter,
        limit: usize,
    ) -> Result<Vec<(String, DateTime<Utc>)>, StoreError> {
        let rows = on_read!(self.store, |db, d| {
            sqlx::query_as::<_, WhenRow>(sqlx::AssertSqlSafe(format!(
                "SELECT d.alert_id, d.next_attempt_at AS at{} ORDER BY d.next_attempt_at LIMIT $3",
                takeable(d)
            )))
            .bind(&filter.channel)
            .bind(filter.only.as_deref())
            .bind(limit.min(i64::MAX as usize) as i64)
            .fetch_all(db)
            .await
        })?;
        Ok(parsed(rows))
    }

    /// Writes an attempt's outcome. A retry or a death only changes a delivery that is still
    /// pending (a removed channel's deliveries may have been marked dead meanwhile); a success is
    /// always written, because it is the truth.
    pub async fn record(
        self,
        alert_id: &str,
        channel: &str,
        attempts: u32,
        outcome: &Outcome,
    ) -> Result<(), StoreError> {
        // In a write transaction: on the active instance's store, fenced (see `lease`).
        let mut tx = self.store.begin_write().await?;
        on_tx!(tx, |c| {
            let q = match outcome {
                Outcome::Sent { at } => sqlx::query(
                    "UPDATE deliveries SET state = 'sent', attempts = $1, sent_at = $2, last_error = NULL
                     WHERE alert_id = $3 AND channel = $4",
                )
                .bind(attempts as i64)
                .bind(timestamp(*at)),
                Outcome::Retry { next, error } => sqlx::query(
                    "UPDATE deliveries SET attempts = $1, next_attempt_at = $2, last_error = $3
                     WHERE alert_id = $4 AND channel = $5 AND state = 'pending'",
                )
                .bind(attempts as i64)
                .bind(timestamp(*next))
                .bind(error),
                Outcome::Dead { error } => sqlx::query(
                    "UPDATE deliveries SET state = 'dead', attempts = $1, last_error = $2
                     WHERE alert_id = $3 AND channel = $4 AND state = 'pending'",
                )
                .bind(attempts as i64)
                .bind(error),
            };
            q.bind(alert_id).bind(channel).execute(&mut *c).await?;
            Ok::<(), StoreError>(())
        })?;
        tx.commit().await?;
        Ok(())
    }

    /// Claims `due` for this instance just before they are sent: each still pending one is
    /// marked with the epoch of the store's fence, in one write transaction that the fence checks
    /// (on the active instance's store, refused once another instance leads, so an old leader
    /// claims and therefore sends nothing). Returns the claimed ones; a delivery no longer
    /// pending (marked silenced or dead meanwhile) is left out. A claim by an older epoch is no
    /// bar: after a failover that delivery may have been sent, and goes again with the same id.
    pub async fn claim(self, due: Vec<Due>) -> Result<Vec<Due>, StoreError> {
        if due.is_empty() {
            return Ok(due);
        }
        let epoch = self.store.fence().map(super::Fence::epoch);
        let mut tx = self.store.begin_write().await?;
        let mut claimed = Vec::with_capacity(due.len());
        for d in due {
            let done = on_tx!(tx, |c| sqlx::query(
                "UPDATE deliveries SET claimed_epoch = $1
                 WHERE alert_id = $2 AND channel = $3 AND state = 'pending'",
            )
            .bind(epoch)
            .bind(&d.alert_id)
            .bind(&d.channel)
            .execute(&mut *c)
            .await
            .map(|done| done.rows_affected()))?;
            if done == 1 {
                claimed.push(d);
            }
        }
        tx.commit().await?;
        Ok(claimed)
    }

    /// (alert id, created at) of every pending delivery on `channel`: a lane anchors their ages
    /// when it starts.
    pub async fn pending_created(
        self,
        channel: &str,
    ) -> Result<Vec<(String, DateTime<Utc>)>, StoreError> {
        let rows = on_read!(self.store, |db| {
            sqlx::query_as::<_, WhenRow>(
            "SELECT alert_id, created_at AS at FROM deliveries WHERE channel = $1 AND state = 'pending'",
        )
        .bind(channel)
        .fetch_all(db)
        .await
        })?;
        Ok(parsed(rows))
    }

    /// Brings every next attempt on `channel` later than `latest` forward to it. No schedule we
    /// write lies beyond now + max_backoff, so a later one was written under a clock that has
    /// since gone back.
    pub async fn cap_next_attempts(
        self,
        channel: &str,
        latest: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let mut tx = self.store.begin_write().await?;
        let done = on_tx!(tx, |c| sqlx::query(
            "UPDATE deliveries SET next_attempt_at = $2
             WHERE channel = $1 AND state = 'pending' AND next_attempt_at > $2",
        )
        .bind(channel)
        .bind(timestamp(latest))
        .execute(&mut *c)
        .await
        .map(|done| done.rows_affected()))?;
        tx.commit().await?;
        Ok(done)
    }

    /// Moves the next attempts on `channel` that lie after `now` by `by` (the clock's jump), so a
    /// retry keeps the wait it was given instead of the jump's length.
    pub async fn shift_next_attempts(
        self,
        channel: &str,
        by: chrono::Duration,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let mut tx = self.store.begin_write().await?;
        let rows = on_tx!(tx, |c| sqlx::query_as::<_, WhenRow>(
            "SELECT alert_id, next_attempt_at AS at FROM deliveries
             WHERE channel = $1 AND state = 'pending' AND next_attempt_at > $2",
        )
        .bind(channel)
        .bind(timestamp(now))
        .fetch_all(c)
        .await)?;
        let mut n = 0;
        for (id, at) in parsed(rows) {
            let moved = at.checked_add_signed(by).unwrap_or(now);
            on_tx!(tx, |c| sqlx::query(
                "UPDATE deliveries SET next_attempt_at = $1 WHERE alert_id = $2 AND channel = $3"
            )
            .bind(timestamp(moved))
            .bind(&id)
            .bind(channel)
            .execute(c)
            .await
            .map(|_| ()))?;
            n += 1;
        }
        tx.commit().await?;
        Ok(n)
    }

    /// Marks dead, with the reason, the pending deliveries to channels that are no longer
    /// configured; returns (channel, how many). They stay in the database, visible in
    /// `recwatch alerts`.
    pub async fn bury_orphans(self, configured: &[&str]) -> Result<Vec<(String, u64)>, StoreError> {
        let names = serde_json::to_string(configured)?;
        let mut tx = self.store.begin_write().await?;
        let rows = on_tx!(tx, |c, d| {
            let rows = sqlx::query_as::<_, ChannelCount>(sqlx::AssertSqlSafe(format!(
                "SELECT channel, COUNT(*) AS n FROM deliveries
                 WHERE state = 'pending' AND channel NOT IN (SELECT value FROM {})
                 GROUP BY channel",
                d.json_texts("$1")
            )))
            .bind(&names)
            .fetch_all(&mut *c)
            .await?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE deliveries SET state = 'dead',
                     last_error = 'channel \"' || channel || '\" is no longer configured; nothing was sent after it was removed'
                 WHERE state = 'pending' AND channel NOT IN (SELECT value FROM {})",
                d.json_texts("$1")
            )))
            .bind(&names)
            .execute(&mut *c)
            .await?;
            Ok::<_, sqlx::Error>(rows)
        })?;
        tx.commit().await?;
        Ok(rows
            .into_iter()
            .map(|r| (r.channel, r.n.max(0) as u64))
            .collect())
    }

    /// How many deliveries of the alerts in `only` (a JSON array of ids) are still pending.
    pub async fn count_pending(self, only: &str) -> Result<i64, StoreError> {
        Ok(on_read!(self.store, |db, d| sqlx::query_scalar::<_, i64>(
            sqlx::AssertSqlSafe(format!(
                "SELECT COUNT(*) FROM deliveries
                 WHERE state = 'pending' AND alert_id IN (SELECT value FROM {})",
                d.json_texts("$1")
            ))
        )
        .bind(only)
        .fetch_one(db)
        .await)?)
    }
}

/// (alert id, time) of each row.
fn parsed(rows: Vec<WhenRow>) -> Vec<(String, DateTime<Utc>)> {
    rows.into_iter()
        .map(|r| (r.alert_id, r.at.to_datetime()))
        .collect()
}

/// How an attempt ended, as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Sent { at: DateTime<Utc> },
    Retry { next: DateTime<Utc>, error: String },
    Dead { error: String },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Alert, Status};
    use crate::store::test_support::both_backends;

    fn t(s: i64) -> DateTime<Utc> {
        "2026-01-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap() + chrono::Duration::seconds(s)
    }

    async fn episode(store: &Store) -> i64 {
        on_write!(store, |db| sqlx::query_scalar::<_, i64>(
            "INSERT INTO episodes (rule, app_id, job_id, opened_at, last_notified_at)
             VALUES ('job_not_found', 'app', 'job', $1, $1) RETURNING id",
        )
        .bind(timestamp(t(0)))
        .fetch_one(db)
        .await)
        .unwrap()
    }

    /// Makes an alert with one pending delivery per channel, as the outbox does, at `at`.
    async fn alert(
        store: &Store,
        key: &str,
        status: Status,
        episode: Option<i64>,
        channels: &[&str],
        at: DateTime<Utc>,
    ) -> String {
        let a = Alert {
            status,
            ..crate::domain::test_alert()
        };
        let mut tx = store.begin_write().await.unwrap();
        let done = tx
            .alerts()
            .insert(
                &a,
                key,
                None,
                episode,
                channels.iter().map(|c| c.to_string()).collect(),
                at,
            )
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert!(done);
        a.id.into_string()
    }

    async fn state(
        store: &Store,
        id: &str,
        channel: &str,
    ) -> (String, i64, String, Option<String>) {
        on_read!(store, |db| sqlx::query_as::<
            _,
            (String, i64, String, Option<String>),
        >(
            "SELECT state, attempts, next_attempt_at, last_error FROM deliveries
             WHERE alert_id = $1 AND channel = $2",
        )
        .bind(id)
        .bind(channel)
        .fetch_one(db)
        .await)
        .unwrap()
    }

    fn ids(due: &[Due]) -> Vec<&str> {
        due.iter().map(|d| d.alert_id.as_str()).collect()
    }

    both_backends! {
        /// A claim marks the pending deliveries with the fence's epoch and leaves out one no
        /// longer pending; through the fence of an instance that lost the lease, it is refused
        /// and marks nothing (so that instance sends nothing).
        async fn a_claim_marks_the_epoch_and_an_old_leaders_claim_is_refused(store: Store) {
            let s = &store;
            let a = alert(s, "c:1", Status::Firing, None, &["hook"], t(0)).await;
            let b = alert(s, "c:2", Status::Firing, None, &["hook"], t(0)).await;
            let hook = Filter::channel("hook");
            let due = s.deliveries().due(&hook, t(1), 10).await.unwrap();
            assert_eq!(due.len(), 2);
            s.deliveries().record(&b, "hook", 1, &Outcome::Dead { error: "x".into() }).await.unwrap();

            let me = crate::store::Claimant::this_process();
            let ttl = std::time::Duration::from_secs(60);
            let epoch = s.lease().acquire(&me, ttl, false).await.unwrap().unwrap();
            let (_until_tx, until) =
                tokio::sync::watch::channel(tokio::time::Instant::now() + ttl);
            let (refused, _r) = tokio::sync::mpsc::unbounded_channel();
            let fenced = s.fenced(crate::store::Fence::new(epoch, until, refused));
            let claimed = fenced.deliveries().claim(due.clone()).await.unwrap();
            assert_eq!(claimed.iter().map(|d| d.alert_id.as_str()).collect::<Vec<_>>(), [a.as_str()]);
            let claimed_by = || async {
                on_read!(s, |db| sqlx::query_scalar::<_, Option<i64>>(
                    "SELECT claimed_epoch FROM deliveries WHERE alert_id = $1"
                )
                .bind(&a)
                .fetch_one(db)
                .await)
                .unwrap()
            };
            assert_eq!(claimed_by().await, Some(epoch));

            // Another instance takes the lease: the old leader's claim is refused.
            let other = crate::store::Claimant::this_process();
            let next = s.lease().acquire(&other, ttl, true).await.unwrap().unwrap();
            let e = fenced.deliveries().claim(due).await.unwrap_err();
            assert!(e.is_fenced(), "{e:?}");
            assert_eq!(claimed_by().await, Some(epoch), "nothing marked by the refused claim");
            assert_eq!(next, epoch + 1);
        }
    }

    both_backends! {
        async fn due_is_per_channel_oldest_first_and_holds_back_later_notices_of_an_episode(store: Store) {
            let s = &store;
            let ep = episode(s).await;
            let firing = alert(
                s,
                "e:1:firing",
                Status::Firing,
                Some(ep),
                &["hook", "mail"],
                t(0),
            )
            .await;
            let transition = alert(s, "t:1", Status::Firing, None, &["hook"], t(1)).await;
            let resolved = alert(
                s,
                "e:1:resolved",
                Status::Resolved,
                Some(ep),
                &["hook", "mail"],
                t(2),
            )
            .await;
            let hook = Filter::channel("hook");
            let mail = Filter::channel("mail");

            // The resolved notice waits behind its firing on each channel; the transition's alert,
            // of no episode, does not.
            assert_eq!(
                ids(&s.deliveries().due(&hook, t(10), 10).await.unwrap()),
                [&firing, &transition]
            );
            assert_eq!(ids(&s.deliveries().due(&mail, t(10), 10).await.unwrap()), [&firing]);
            // Nothing is due before it was made; the limit holds.
            assert!(s.deliveries().due(&hook, t(-1), 10).await.unwrap().is_empty());
            assert_eq!(ids(&s.deliveries().due(&hook, t(10), 1).await.unwrap()), [&firing]);

            // Firing retried on the hook (still pending there), sent by mail: the resolved notice
            // goes by mail, and still waits on the hook.
            let retry = Outcome::Retry {
                next: t(20),
                error: "webhook answered HTTP 503".into(),
            };
            s.deliveries().record(&firing, "hook", 1, &retry).await.unwrap();
            s.deliveries().record(&firing, "mail", 1, &Outcome::Sent { at: t(10) })
                .await
                .unwrap();
            assert_eq!(ids(&s.deliveries().due(&mail, t(11), 10).await.unwrap()), [&resolved]);
            assert_eq!(ids(&s.deliveries().due(&hook, t(11), 10).await.unwrap()), [&transition]);
            // next_due sees the retry's time, and never the held-back notice.
            let next: Vec<String> = s.deliveries().next_due(&hook, 10)
                .await
                .unwrap()
                .into_iter()
                .map(|(id, _)| id)
                .collect();
            assert_eq!(next, [transition.clone(), firing.clone()]);

            // Once the firing is through on the hook, its resolved notice follows.
            s.deliveries().record(&firing, "hook", 2, &Outcome::Sent { at: t(20) })
                .await
                .unwrap();
            assert_eq!(
                ids(&s.deliveries().due(&hook, t(21), 10).await.unwrap()),
                [&transition, &resolved]
            );
            // A dead predecessor holds nothing back either.
            let ep2 = episode_closed_then_new(s).await;
            let f2 = alert(s, "e:2:firing", Status::Firing, Some(ep2), &["hook"], t(30)).await;
            let r2 = alert(
                s,
                "e:2:resolved",
                Status::Resolved,
                Some(ep2),
                &["hook"],
                t(31),
            )
            .await;
            s.deliveries().record(
                &f2,
                "hook",
                9,
                &Outcome::Dead {
                    error: "HTTP 410".into(),
                },
            )
            .await
            .unwrap();
            assert!(ids(&s.deliveries().due(&hook, t(40), 10).await.unwrap()).contains(&r2.as_str()));

            // poll-once's filter: only the listed alerts.
            let only = Filter {
                channel: "hook".into(),
                only: Some(serde_json::to_string(&[&resolved]).unwrap().into()),
            };
            assert_eq!(ids(&s.deliveries().due(&only, t(40), 10).await.unwrap()), [&resolved]);
            // Pending on both channels.
            assert_eq!(
                s.deliveries().count_pending(only.only.as_deref().unwrap())
                    .await
                    .unwrap(),
                2
            );
        }
    }

    async fn episode_closed_then_new(store: &Store) -> i64 {
        on_write!(store, |db| sqlx::query(
            "UPDATE episodes SET resolved_at = $1"
        )
        .bind(timestamp(t(25)))
        .execute(db)
        .await
        .map(|_| ()))
        .unwrap();
        episode(store).await
    }

    both_backends! {
        async fn outcomes_move_a_delivery_through_its_states(store: Store) {
            let s = &store;
            let a = alert(s, "t:1", Status::Firing, None, &["hook"], t(0)).await;
            let b = alert(s, "t:2", Status::Firing, None, &["hook"], t(0)).await;
            let at = |x| timestamp(t(x));

            // pending -> retry: attempts, next attempt and the reason are kept.
            let retry = |next, e: &str| Outcome::Retry {
                next: t(next),
                error: e.into(),
            };
            s.deliveries().record(&a, "hook", 1, &retry(5, "HTTP 410 Gone: gone"))
                .await
                .unwrap();
            assert_eq!(
                state(s, &a, "hook").await,
                (
                    "pending".into(),
                    1,
                    at(5),
                    Some("HTTP 410 Gone: gone".into())
                )
            );
            // pending -> sent: the error is cleared.
            s.deliveries().record(&a, "hook", 2, &Outcome::Sent { at: t(6) })
                .await
                .unwrap();
            assert_eq!(state(s, &a, "hook").await, ("sent".into(), 2, at(5), None));
            // A late retry or death (another attempt racing) never reopens a sent delivery.
            s.deliveries().record(&a, "hook", 3, &retry(9, "x")).await.unwrap();
            s.deliveries().record(&a, "hook", 3, &Outcome::Dead { error: "x".into() })
                .await
                .unwrap();
            assert_eq!(state(s, &a, "hook").await.0, "sent");

            // pending -> dead, with the last real error.
            s.deliveries().record(
                &b,
                "hook",
                7,
                &Outcome::Dead {
                    error: "HTTP 404 Not Found: no such hook".into(),
                },
            )
            .await
            .unwrap();
            assert_eq!(
                state(s, &b, "hook").await,
                (
                    "dead".into(),
                    7,
                    at(0),
                    Some("HTTP 404 Not Found: no such hook".into())
                )
            );
            s.deliveries().record(&b, "hook", 8, &retry(9, "x")).await.unwrap();
            assert_eq!(
                state(s, &b, "hook").await.0,
                "dead",
                "a dead delivery is not revived by a retry"
            );
            assert!(
                s.deliveries().due(&Filter::channel("hook"), t(100), 10)
                    .await
                    .unwrap()
                    .is_empty()
            );
        }
    }

    both_backends! {
        async fn clock_repairs_cap_and_shift_next_attempts(store: Store) {
            let s = &store;
            let near = alert(s, "t:1", Status::Firing, None, &["hook"], t(0)).await;
            let far = alert(s, "t:2", Status::Firing, None, &["hook", "mail"], t(0)).await;
            let due_now = alert(s, "t:3", Status::Firing, None, &["hook"], t(0)).await;
            let retry = |next| Outcome::Retry {
                next: t(next),
                error: "503".into(),
            };
            s.deliveries().record(&near, "hook", 1, &retry(3605)).await.unwrap();
            s.deliveries().record(&far, "hook", 1, &retry(86400 * 2)).await.unwrap();
            s.deliveries().record(&far, "mail", 1, &retry(86400 * 2)).await.unwrap();

            // The clock went back an hour at t(5): what lay ahead moves back by an hour; what was
            // already due stays.
            let n = s.deliveries().shift_next_attempts("hook", chrono::Duration::hours(-1), t(5))
                .await
                .unwrap();
            assert_eq!(n, 2);
            assert_eq!(state(s, &near, "hook").await.2, timestamp(t(5)));
            assert_eq!(state(s, &due_now, "hook").await.2, timestamp(t(0)));
            // Nothing lies beyond now + max_backoff after a cap; other channels are their own.
            let n = s.deliveries().cap_next_attempts("hook", t(605)).await.unwrap();
            assert_eq!(n, 1);
            assert_eq!(state(s, &far, "hook").await.2, timestamp(t(605)));
            assert_eq!(state(s, &far, "mail").await.2, timestamp(t(86400 * 2)));
            assert_eq!(
                ids(&s.deliveries().due(&Filter::channel("hook"), t(5), 10).await.unwrap()),
                [&due_now, &near]
            );
        }
    }

    both_backends! {
        async fn deliveries_to_a_removed_channel_are_buried_with_the_reason(store: Store) {
            let s = &store;
            let a = alert(s, "t:1", Status::Firing, None, &["hook", "old-mail"], t(0)).await;
            let buried = s.deliveries().bury_orphans(&["hook"]).await.unwrap();
            assert_eq!(buried, [("old-mail".to_string(), 1)]);
            let (st, _, _, err) = state(s, &a, "old-mail").await;
            assert_eq!(st, "dead");
            assert!(
                err.unwrap()
                    .contains("\"old-mail\" is no longer configured")
            );
            assert_eq!(state(s, &a, "hook").await.0, "pending");
            assert!(s.deliveries().bury_orphans(&["hook"]).await.unwrap().is_empty());
        }
    }
}
