//! Retention (`storage.retention`): old alerts with their deliveries, closed episodes and
//! transitions are deleted in small batches, so the write lock is never held for long. The
//! jobs' own rows are not history and stay. Run-time watch-list entries whose job has been
//! STOPPED (or never seen) for longer than the retention are retired with them, and record-callback
//! events with their finished forwards are deleted too, as are finished remediations whose
//! alert has gone and whose jobs have no open episode.

use super::Database;
use crate::config::defaults::MAX_REMEDIATE_WINDOW;
use crate::domain::timestamp;
use anyhow::Context;
use chrono::{DateTime, Utc};
use std::time::Duration;
use tokio::sync::watch;

/// Rows per prune transaction. Measured (BENCHMARKS.md, part 5) on 1,350,000 old rows while
/// polling at the budget: 5,000 held the write lock up to 235 ms and made polls up to 0.3 s
/// late; 1,000 holds it up to 140-330 ms (a WAL checkpoint, and a busy machine) and no poll
/// waits on it, for a prune of about a minute instead of 25 s. Pruning is never urgent.
pub const PRUNE_BATCH: usize = 1000;

/// Between two prune transactions: a little air for the poller's writes and the disk. (Longer
/// pauses only made the prune longer; see BENCHMARKS.md, part 5.)
const PRUNE_PAUSE: Duration = Duration::from_millis(20);

/// Alerts older than the cutoff whose deliveries are all finished (sent or dead) or that have
/// none. Used twice in one transaction (deliveries, then the alerts): nothing else writes in
/// between and the order is fixed, so both statements pick the same alerts. `d.state || ''`
/// (SQLite's other spelling of `+d.state`, which PostgreSQL also reads) keeps SQLite on the
/// deliveries' primary key (this alert's few rows) rather than walking every pending delivery
/// in `deliveries_due` for each alert.
macro_rules! prunable_alerts {
    () => {
        "SELECT id FROM alerts a
         WHERE created_at < $1
           AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.alert_id = a.id AND d.state || '' = 'pending')
         ORDER BY created_at LIMIT $2"
    };
}

pub(super) const PRUNE_ALERTS: &[&str] = &[
    concat!(
        "DELETE FROM deliveries WHERE alert_id IN (",
        prunable_alerts!(),
        ")"
    ),
    concat!("DELETE FROM alerts WHERE id IN (", prunable_alerts!(), ")"),
];
pub(super) const PRUNE_EPISODES: &[&str] = &["DELETE FROM episodes WHERE id IN
     (SELECT id FROM episodes WHERE resolved_at < $1 ORDER BY resolved_at LIMIT $2)"];
pub(super) const PRUNE_TRANSITIONS: &[&str] = &["DELETE FROM transitions WHERE id IN
     (SELECT id FROM transitions WHERE observed_at < $1 ORDER BY observed_at LIMIT $2)"];

/// Record-callback events with their relayed copies (`forwards`, which keep each body): a
/// forward still pending keeps its event. By id, not `received_at`: ids grow with time, so the
/// oldest rows are at the front of the primary key and no index on the time is needed.
pub(super) const PRUNE_CALLBACKS: &[&str] = &[
    "DELETE FROM forwards WHERE state != 'pending' AND event_id IN
     (SELECT id FROM callback_events WHERE received_at < $1 ORDER BY id LIMIT $2)",
    "DELETE FROM callback_events WHERE id IN
     (SELECT e.id FROM callback_events e WHERE e.received_at < $1
        AND NOT EXISTS (SELECT 1 FROM forwards f WHERE f.event_id = e.id)
      ORDER BY e.id LIMIT $2)",
];

/// Remediations decided before the cutoff (for them, at least 7 days back: see `prune`) that
/// are over: never one still `pending` or
/// `posting` (the worker, or the takeover that turns `posting` into `unknown`, still needs
/// it), nor one whose alert is still kept (held for its outcome, or not delivered yet: the
/// alerts go first in a prune, so an old alert still there has a delivery pending), nor one
/// whose old or new job has an open episode (the page links that job to the other).
/// Before the transitions: SQLite may hand a deleted newest transition's id out again, and
/// `remediations_once` is unique on `transition_id`.
pub(super) const PRUNE_REMEDIATIONS: &[&str] = &["DELETE FROM remediations WHERE id IN
     (SELECT r.id FROM remediations r
      WHERE r.created_at < $1 AND r.state NOT IN ('pending', 'posting')
        AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.id = r.alert_id)
        AND NOT EXISTS (SELECT 1 FROM episodes e WHERE e.resolved_at IS NULL
                          AND e.app_id = r.app_id
                          AND (e.job_id = r.old_job_id OR e.job_id = r.new_job_id))
      ORDER BY r.id LIMIT $2)"];

#[derive(Clone, Copy)]
enum Table {
    Alerts,
    Remediations,
    Episodes,
    Transitions,
    Watchlist,
    Callbacks,
}

/// What one prune removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub alerts: u64,
    pub deliveries: u64,
    pub episodes: u64,
    pub transitions: u64,
    /// Run-time watch-list entries retired.
    pub watched: u64,
    /// Finished remediations (see `PRUNE_REMEDIATIONS`).
    pub remediations: u64,
    /// Record-callback events (with their finished forwards).
    pub callback_events: u64,
    pub forwards: u64,
    /// Transactions it took.
    pub batches: u64,
    /// The longest any one of them held the write lock.
    pub longest_batch: Duration,
    /// Shutdown came first: the rest waits for the next run.
    pub stopped: bool,
}

impl Pruned {
    pub fn rows(&self) -> u64 {
        self.alerts
            + self.deliveries
            + self.episodes
            + self.transitions
            + self.watched
            + self.remediations
            + self.callback_events
            + self.forwards
    }
}

impl Database<'_> {
    /// Applies `storage.retention`: deletes what is older than `cutoff` — alerts with their
    /// deliveries (never an alert with a delivery still pending), finished remediations,
    /// closed condition episodes and transitions — in transactions of at most `batch` rows each, so the write lock is
    /// never held for long and the poller's writes get in between. Stops early (with
    /// `stopped` set) when `stop` turns true; the next run goes on where this one ended.
    pub async fn prune(
        self,
        cutoff: DateTime<Utc>,
        batch: usize,
        stop: &watch::Receiver<bool>,
    ) -> anyhow::Result<Pruned> {
        // A remediation counts toward `max_restarts` while it is within `remediate.window`:
        // pruned sooner (a retention shorter than the window), a crash-looping job would be
        // re-created past the bound. Kept at least the longest window there can be.
        let remediation_cutoff = timestamp(
            crate::rules::checked_before(Utc::now(), MAX_REMEDIATE_WINDOW)
                .map_or(cutoff, |w| cutoff.min(w)),
        );
        let cutoff = timestamp(cutoff);
        let batch = batch.max(1) as i64;
        let mut done = Pruned::default();
        // Alerts first: deleting a transition or an episode updates the alerts that point at
        // it, so fewer alerts left means less to update. Also, an alert's dedup key names its
        // transition or episode id, and SQLite may hand out the id of a deleted newest row
        // again: the alert goes in the same run as (or before) what it names.
        for (table, statements) in [
            (Table::Alerts, PRUNE_ALERTS),
            (Table::Remediations, PRUNE_REMEDIATIONS),
            (Table::Episodes, PRUNE_EPISODES),
            (Table::Transitions, PRUNE_TRANSITIONS),
            (Table::Watchlist, super::watchlist::RETIRE_WATCHED),
            (Table::Callbacks, PRUNE_CALLBACKS),
        ] {
            loop {
                if *stop.borrow() {
                    done.stopped = true;
                    return Ok(done);
                }
                let before = match table {
                    Table::Remediations => &remediation_cutoff,
                    _ => &cutoff,
                };
                let (counts, held) = self.prune_batch(statements, before, batch).await?;
                done.batches += 1;
                done.longest_batch = done.longest_batch.max(held);
                let deleted = *counts.last().expect("a statement per batch");
                match table {
                    Table::Alerts => {
                        done.deliveries += counts[0];
                        done.alerts += deleted;
                    }
                    Table::Remediations => done.remediations += deleted,
                    Table::Episodes => done.episodes += deleted,
                    Table::Transitions => done.transitions += deleted,
                    Table::Watchlist => done.watched += deleted,
                    Table::Callbacks => {
                        done.forwards += counts[0];
                        done.callback_events += deleted;
                    }
                }
                if deleted < batch as u64 {
                    break;
                }
                // The writer pool is fair (a waiting write gets the connection before this
                // task can take it back); the pause also leaves the disk to the poller.
                tokio::time::sleep(PRUNE_PAUSE).await;
            }
        }
        Ok(done)
    }

    /// One batch of a prune: its statements in one short write transaction (`BEGIN IMMEDIATE`
    /// on SQLite).
    /// Returns the rows each statement deleted and how long the write lock was held.
    async fn prune_batch(
        self,
        statements: &[&'static str],
        cutoff: &str,
        batch: i64,
    ) -> anyhow::Result<(Vec<u64>, Duration)> {
        let mut tx = self.store.begin_write().await?;
        let locked = std::time::Instant::now();
        let mut counts = Vec::with_capacity(statements.len());
        for &sql in statements {
            let done = on_tx!(tx, |c| sqlx::query(sql)
                .bind(cutoff)
                .bind(batch)
                .execute(c)
                .await
                .map(|done| done.rows_affected()))
            .with_context(|| {
                format!(
                    "pruning: {}",
                    sql.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
                )
            })?;
            counts.push(done);
        }
        tx.commit().await?;
        Ok((counts, locked.elapsed()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{alert, column, count, episode, exec, record};
    use super::*;
    use crate::store::Store;
    use crate::store::test_support::both_backends;

    both_backends! {
        async fn prune_removes_old_alerts_deliveries_closed_episodes_and_transitions_in_batches(store: Store) {
            let now = Utc::now();
            let old = now - chrono::Duration::days(100);
            let recent = now - chrono::Duration::days(1);
            let cutoff = now - chrono::Duration::days(90);

            // 7 old transitions (one job flipping), 2 recent ones.
            let mut t = Vec::new();
            let mut from: Option<&str> = None;
            for i in 0..9 {
                let to = if i % 2 == 0 { "RUNNING" } else { "STOPPED" };
                let at = if i < 7 {
                    old + chrono::Duration::minutes(i)
                } else {
                    recent
                };
                t.push(store.jobs().record(&[record("j", at, from, to)]).await.unwrap()[0].unwrap());
                from = Some(to);
            }
            // 5 episodes closed long ago, one still open since long ago, one closed recently.
            let mut closed = Vec::new();
            for i in 0..5 {
                closed.push(
                    episode(
                        &store,
                        &format!("e{i}"),
                        old,
                        Some(old + chrono::Duration::hours(1)),
                    )
                    .await,
                );
            }
            let open = episode(&store, "open", old, None).await;
            let closed_recently = episode(&store, "recent", old, Some(recent)).await;

            // Old alerts whose deliveries are finished (sent or dead), or that had no channel.
            for i in 0..6 {
                let (tr, ep) = if i % 2 == 0 {
                    (Some(t[i]), None)
                } else {
                    (None, Some(closed[i % 5]))
                };
                alert(
                    &store,
                    &format!("done-{i}"),
                    old,
                    tr,
                    ep,
                    &[("hook", "sent"), ("mail", "dead")],
                )
                .await;
            }
            alert(&store, "no-channel", old, Some(t[6]), None, &[]).await;
            // Old alerts not yet delivered everywhere: kept, with all their deliveries.
            alert(
                &store,
                "pending-1",
                old,
                Some(t[0]),
                None,
                &[("hook", "pending"), ("mail", "sent")],
            )
            .await;
            alert(
                &store,
                "pending-2",
                old,
                None,
                Some(open),
                &[("mail", "pending")],
            )
            .await;
            // Recent ones: kept.
            alert(
                &store,
                "recent",
                recent,
                Some(t[8]),
                None,
                &[("hook", "sent")],
            )
            .await;

            let (_, never) = watch::channel(false);
            let pruned = store.db().prune(cutoff, 2, &never).await.unwrap();
            assert_eq!(
                (
                    pruned.alerts,
                    pruned.deliveries,
                    pruned.episodes,
                    pruned.transitions
                ),
                (7, 12, 5, 7),
                "{pruned:?}"
            );
            // Batches of 2: alerts 2+2+2+1, episodes 2+2+1, transitions 2+2+2+1, and one that finds
            // no run-time watch-list entry to retire, one that finds no remediation and one that
            // finds no callback event.
            assert_eq!(pruned.batches, 4 + 1 + 3 + 4 + 1 + 1, "{pruned:?}");
            assert!(!pruned.stopped);
            assert_eq!(pruned.rows(), 31);

            let alerts: Vec<String> = column(&store, "SELECT id FROM alerts ORDER BY id").await;
            assert_eq!(alerts, ["pending-1", "pending-2", "recent"]);
            assert_eq!(count(&store, "SELECT COUNT(*) FROM deliveries").await, 4);
            assert_eq!(
                count(
                    &store,
                    "SELECT COUNT(*) FROM deliveries WHERE state = 'pending'"
                )
                .await,
                2
            );
            let episodes: Vec<i64> = column(&store, "SELECT id FROM episodes ORDER BY id").await;
            assert_eq!(episodes, [open, closed_recently]);
            assert_eq!(count(&store, "SELECT COUNT(*) FROM transitions").await, 2);
            // A kept alert whose transition was pruned keeps its frozen payload, the link is NULL.
            let link: Vec<Option<i64>> =
                column(&store, "SELECT transition_id FROM alerts WHERE id = 'pending-1'").await;
            assert_eq!(link, [None]);
            // The job's own row is not history: it stays.
            assert!(
                store
                    .jobs().all()
                    .await
                    .unwrap()
                    .contains_key(&crate::domain::JobKey::new("app", "j"))
            );

            // Nothing left to do: one empty batch per table.
            let again = store.db().prune(cutoff, 2, &never).await.unwrap();
            assert_eq!((again.rows(), again.batches), (0, 6));

            // Once its last delivery is over, an old alert goes at the next prune.
            exec(&store, "UPDATE deliveries SET state = 'sent' WHERE alert_id = 'pending-2'").await;
            let later = store.db().prune(cutoff, 2, &never).await.unwrap();
            assert_eq!((later.alerts, later.deliveries), (1, 1));
        }
    }

    both_backends! {
        async fn a_prune_stops_between_batches_at_shutdown(store: Store) {
            let old = Utc::now() - chrono::Duration::days(100);
            store
                .jobs().record(&[record("j", old, None, "RUNNING")])
                .await
                .unwrap();
            let (stop, stopping) = watch::channel(false);
            stop.send(true).unwrap();
            let pruned = store.db().prune(Utc::now(), 2, &stopping).await.unwrap();
            assert!(pruned.stopped);
            assert_eq!((pruned.batches, pruned.rows()), (0, 0));
            assert_eq!(
                count(&store, "SELECT COUNT(*) FROM transitions").await,
                1,
                "left for the next run"
            );
        }
    }

    both_backends! {
        /// Old callback events go with their finished forwards; an old event whose forward is
        /// still pending stays (the relay is not lost), and recent events stay.
        async fn prune_removes_old_callback_events_with_their_finished_forwards(store: Store) {
            use recwatch_rtc::callback::RecordEvent;
            let now = Utc::now();
            let old = timestamp(now - chrono::Duration::days(100));
            let recent = timestamp(now - chrono::Duration::days(1));
            let cutoff = now - chrono::Duration::days(90);
            // (job, received, forwarded, forward's state after)
            let rows = [
                ("old-plain", &old, false, None),
                ("old-sent", &old, true, Some("sent")),
                ("old-dead", &old, true, Some("dead")),
                ("old-pending", &old, true, Some("pending")),
                ("recent", &recent, true, Some("sent")),
            ];
            for (job, at, forward, _) in rows {
                let body = format!(r#"{{"event_type":"RECORD_NEW_FILE_START","job_id":"{job}"}}"#);
                let event = RecordEvent::parse(body.as_bytes()).unwrap();
                store
                    .callbacks().insert("app", &event, job, at, forward.then_some(body.as_bytes()))
                    .await
                    .unwrap();
            }
            for (job, _, _, state) in rows {
                if let Some(state) = state {
                    on_write!(store, |db| sqlx::query(
                        "UPDATE forwards SET state = $1 WHERE event_id =
                         (SELECT id FROM callback_events WHERE job_id = $2)",
                    )
                    .bind(state)
                    .bind(job)
                    .execute(db)
                    .await
                    .map(|_| ()))
                    .unwrap();
                }
            }
            let (_tx, never) = watch::channel(false);
            let p = store.db().prune(cutoff, 1, &never).await.unwrap();
            assert_eq!((p.callback_events, p.forwards), (3, 2), "{p:?}");
            let left: Vec<String> =
                column(&store, "SELECT job_id FROM callback_events ORDER BY job_id").await;
            assert_eq!(left, ["old-pending", "recent"]);
            let forwards = count(&store, "SELECT count(*) FROM forwards").await;
            assert_eq!(forwards, 2, "the pending one and the recent one");
        }
    }

    /// A remediation row as the outbox and the worker leave it.
    async fn remediation(
        store: &Store,
        (old, new, state): (&str, Option<&str>, &str),
        alert: Option<&str>,
        at: DateTime<Utc>,
    ) {
        let at = timestamp(at);
        on_write!(store, |db| sqlx::query(
            "INSERT INTO remediations (app_id, old_job_id, lineage, state, snapshot, new_job_id,
                                       alert_id, next_attempt_at, created_at)
             VALUES ('app', $1, $1, $2, '{}', $3, $4, $5, $5)",
        )
        .bind(old)
        .bind(state)
        .bind(new)
        .bind(alert)
        .bind(&at)
        .execute(db)
        .await
        .map(|_| ()))
        .unwrap();
    }

    both_backends! {
        /// Old finished remediations go; an unfinished intent, one whose alert is still held
        /// or undelivered, one whose job has an open episode, and recent ones stay.
        async fn prune_removes_finished_remediations_but_keeps_what_is_still_needed(store: Store) {
            let now = Utc::now();
            let old = now - chrono::Duration::days(100);
            let recent = now - chrono::Duration::days(1);
            let cutoff = now - chrono::Duration::days(90);
            alert(&store, "sent", old, None, None, &[("hook", "sent")]).await;
            alert(&store, "held", old, None, None, &[("hook", "pending")]).await;
            for (old_job, new_job, state, alert_id, at) in [
                ("recreated", Some("recreated-2"), "recreated", Some("sent"), old),
                ("failed", None, "failed", None, old),
                ("skipped", None, "skipped", None, old),
                ("unknown", None, "unknown", None, old),
                ("pending", None, "pending", None, old),
                ("posting", None, "posting", None, old),
                ("held", Some("held-2"), "recreated", Some("held"), old),
                ("episode", Some("episode-2"), "recreated", None, old),
                ("recent", Some("recent-2"), "recreated", None, recent),
            ] {
                remediation(&store, (old_job, new_job, state), alert_id, at).await;
            }
            // The replacement is stuck in INIT: its open episode keeps the link to its parent.
            let _open = episode(&store, "episode-2", old, None).await;

            let (_, never) = watch::channel(false);
            let p = store.db().prune(cutoff, 2, &never).await.unwrap();
            assert_eq!((p.alerts, p.remediations), (1, 4), "{p:?}");
            let left: Vec<String> =
                column(&store, "SELECT old_job_id FROM remediations ORDER BY old_job_id").await;
            assert_eq!(left, ["episode", "held", "pending", "posting", "recent"]);

            // A retention shorter than the longest remediate.window: a finished remediation
            // still inside it is kept (max_restarts counts it), one older than it goes.
            let within = now - chrono::Duration::days(3);
            let beyond = now - chrono::Duration::days(8);
            remediation(&store, ("within", None, "failed"), None, within).await;
            remediation(&store, ("beyond", None, "failed"), None, beyond).await;
            let short = now - chrono::Duration::days(2);
            let p = store.db().prune(short, 2, &never).await.unwrap();
            assert_eq!(p.remediations, 1, "{p:?}");
            let left: Vec<String> =
                column(&store, "SELECT old_job_id FROM remediations WHERE state = 'failed'").await;
            assert_eq!(left, ["within"]);
        }
    }
}
