//! The delivery worker: sends what the outbox holds, retries with back-off, and never counts
//! a delivery as sent before the receiver accepted it.
//!
//! A crash between a send and its `sent` mark means the same alert, with the same id, goes
//! out again on the next start: at-least-once, and receivers de-duplicate on the id
//! (webhook-id, Message-ID). Nothing is deleted unsent: a delivery that keeps failing past
//! `notify.max_age` is marked dead with its last error.

use crate::alert::{Alert, timestamp};
use crate::config::Config;
use crate::notify::{Channel, DeliveryError};
use crate::store::Store;
use chrono::{DateTime, Utc};
use rand::Rng;
use sqlx::Row;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tracing::{error, info, warn};

/// How many due deliveries one step takes on.
const BATCH: i64 = 64;

/// Delay before the next attempt after `attempts` failures: 5 s (or the cap, if smaller)
/// doubling, capped, jittered +/-20% so a receiver that comes back is not hit by every retry
/// at once.
pub fn retry_delay(attempts: u32, cap: Duration, jitter: f64) -> Duration {
    let first = Duration::from_secs(5).min(cap);
    let base = first.saturating_mul(1u32 << attempts.saturating_sub(1).min(16));
    base.min(cap).mul_f64(0.8 + 0.4 * jitter.clamp(0.0, 1.0))
}

/// What to do with a delivery after a failed attempt. Pure, so it is tested with a table.
#[derive(Debug, PartialEq, Eq)]
pub enum AfterFailure {
    RetryAt(DateTime<Utc>),
    Dead,
}

pub fn after_failure(
    err: &DeliveryError,
    attempts: u32,
    created: DateTime<Utc>,
    now: DateTime<Utc>,
    max_age: Duration,
    cap: Duration,
    jitter: f64,
) -> AfterFailure {
    // A permanent refusal is not retried for a day: someone must change something first.
    let delay = if err.permanent {
        Duration::from_secs(86400)
    } else {
        retry_delay(attempts, cap, jitter)
    };
    let next = now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
    let deadline = created + chrono::Duration::from_std(max_age).unwrap_or(chrono::Duration::MAX);
    if next >= deadline {
        AfterFailure::Dead
    } else {
        AfterFailure::RetryAt(next)
    }
}

pub struct Worker {
    store: Store,
    channels: HashMap<String, Arc<Channel>>,
    wake: Arc<Notify>,
    max_age: Duration,
    max_backoff: Duration,
}

struct Due {
    alert_id: String,
    channel: String,
    /// For log lines: "-" for api-wide alerts.
    app_id: String,
    job_id: String,
    attempts: u32,
    created_at: DateTime<Utc>,
    payload: String,
}

impl Worker {
    pub fn new(store: Store, config: &Config, wake: Arc<Notify>) -> anyhow::Result<Worker> {
        let channels = Channel::from_config(&config.notify)?
            .into_iter()
            .map(|c| (c.name().to_string(), Arc::new(c)))
            .collect();
        Ok(Worker {
            store,
            channels,
            wake,
            max_age: config.notify.max_age,
            max_backoff: config.notify.max_backoff,
        })
    }

    /// Sends everything due now, concurrently across deliveries; returns how many were tried.
    pub async fn step(&self) -> anyhow::Result<usize> {
        let now = Utc::now();
        let rows = sqlx::query(
            "SELECT d.alert_id, d.channel, d.attempts, d.created_at, a.payload,
                    COALESCE(a.app_id, '-'), COALESCE(a.job_id, '-')
             FROM deliveries d JOIN alerts a ON a.id = d.alert_id
             WHERE d.state = 'pending' AND d.next_attempt_at <= ?
             ORDER BY d.next_attempt_at LIMIT ?",
        )
        .bind(timestamp(now))
        .bind(BATCH)
        .fetch_all(self.store.reader())
        .await?;
        let due: Vec<Due> = rows
            .iter()
            .map(|r| Due {
                alert_id: r.get(0),
                channel: r.get(1),
                attempts: r.get::<i64, _>(2) as u32,
                created_at: parse_time(&r.get::<String, _>(3)).unwrap_or(now),
                payload: r.get(4),
                app_id: r.get(5),
                job_id: r.get(6),
            })
            .collect();
        let n = due.len();
        let mut set = tokio::task::JoinSet::new();
        for d in due {
            let channel = self.channels.get(&d.channel).cloned();
            set.spawn(async move {
                let result = match (&channel, serde_json::from_str::<Alert>(&d.payload)) {
                    (None, _) => Err(DeliveryError::permanent(format!(
                        "channel {:?} is no longer configured; the alert stays in the database",
                        d.channel
                    ))),
                    (_, Err(e)) => Err(DeliveryError::permanent(format!(
                        "stored payload is unreadable: {e}"
                    ))),
                    (Some(c), Ok(alert)) => c.send(&alert).await,
                };
                (d, result)
            });
        }
        while let Some(joined) = set.join_next().await {
            let Ok((d, result)) = joined else { continue };
            self.settle(d, result).await;
        }
        Ok(n)
    }

    /// Writes the outcome of one attempt, retrying a locked database: a sent mark that is lost
    /// only means one more (de-duplicable) send, but it should not happen needlessly.
    async fn settle(&self, d: Due, result: Result<(), DeliveryError>) {
        let now = Utc::now();
        let attempts = d.attempts + 1;
        let (sql, state, next, err): (&'static str, &str, Option<DateTime<Utc>>, Option<String>) =
            match &result {
                Ok(()) => {
                    info!(alert_id = %d.alert_id, channel = %d.channel, app_id = %d.app_id, job_id = %d.job_id, attempts, "alert delivered");
                    metrics::counter!("recwatch_deliveries_total", "channel" => d.channel.clone(), "outcome" => "sent").increment(1);
                    (
                        "UPDATE deliveries SET state = ?, attempts = ?, sent_at = ?, last_error = NULL WHERE alert_id = ? AND channel = ?",
                        "sent",
                        None,
                        None,
                    )
                }
                Err(e) => {
                    let jitter = rand::rng().random::<f64>();
                    match after_failure(
                        e,
                        attempts,
                        d.created_at,
                        now,
                        self.max_age,
                        self.max_backoff,
                        jitter,
                    ) {
                        AfterFailure::RetryAt(at) => {
                            warn!(alert_id = %d.alert_id, channel = %d.channel, app_id = %d.app_id, job_id = %d.job_id, attempts, permanent = e.permanent, next_attempt = %timestamp(at), "delivery failed: {e}");
                            metrics::counter!("recwatch_deliveries_total", "channel" => d.channel.clone(), "outcome" => "retry").increment(1);
                            (
                                "UPDATE deliveries SET state = ?, attempts = ?, next_attempt_at = ?, last_error = ? WHERE alert_id = ? AND channel = ?",
                                "pending",
                                Some(at),
                                Some(e.message.clone()),
                            )
                        }
                        AfterFailure::Dead => {
                            error!(alert_id = %d.alert_id, channel = %d.channel, app_id = %d.app_id, job_id = %d.job_id, attempts, "delivery given up (dead) after notify.max_age: {e}");
                            metrics::counter!("recwatch_deliveries_total", "channel" => d.channel.clone(), "outcome" => "dead").increment(1);
                            (
                                "UPDATE deliveries SET state = ?, attempts = ?, sent_at = NULL, last_error = ? WHERE alert_id = ? AND channel = ?",
                                "dead",
                                None,
                                Some(e.message.clone()),
                            )
                        }
                    }
                }
            };
        let mut delay = Duration::from_millis(100);
        for attempt in 1..=8 {
            let q = sqlx::query(sql).bind(state).bind(attempts as i64);
            let q = match (state, next, &err) {
                ("sent", _, _) => q.bind(timestamp(now)),
                (_, Some(at), Some(e)) => q.bind(timestamp(at)).bind(e.clone()),
                (_, None, Some(e)) => q.bind(e.clone()),
                _ => q,
            };
            match q
                .bind(&d.alert_id)
                .bind(&d.channel)
                .execute(self.store.writer())
                .await
            {
                Ok(_) => return,
                Err(e) => {
                    warn!(alert_id = %d.alert_id, channel = %d.channel, app_id = %d.app_id, job_id = %d.job_id, attempt, "cannot record the delivery outcome: {e}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// When the next pending delivery falls due, if any.
    async fn next_due(&self) -> Option<DateTime<Utc>> {
        let next: Option<String> = sqlx::query_scalar(
            "SELECT MIN(next_attempt_at) FROM deliveries WHERE state = 'pending'",
        )
        .fetch_one(self.store.reader())
        .await
        .ok()
        .flatten();
        next.as_deref().and_then(parse_time)
    }

    /// Replaces the channels (a reload); deliveries to a channel that is gone are marked dead
    /// with that reason when they fall due, never deleted.
    pub fn set_channels(&mut self, config: &crate::config::NotifyConfig) -> anyhow::Result<()> {
        self.channels = Channel::from_config(config)?
            .into_iter()
            .map(|c| (c.name().to_string(), Arc::new(c)))
            .collect();
        self.max_age = config.max_age;
        self.max_backoff = config.max_backoff;
        Ok(())
    }

    fn apply(&mut self, config: &crate::config::NotifyConfig) {
        match self.set_channels(config) {
            Ok(()) => info!(channels = self.channels.len(), "delivery channels reloaded"),
            Err(e) => warn!("cannot rebuild the channels, keeping the old ones: {e}"),
        }
    }

    /// Runs until shutdown: pending deliveries are picked up at once on start, then whenever
    /// the outbox commits new ones, a retry falls due, or a reload changes the channels.
    pub async fn run(
        mut self,
        mut shutdown: watch::Receiver<bool>,
        mut reload: watch::Receiver<crate::config::NotifyConfig>,
    ) {
        loop {
            if *shutdown.borrow() {
                return;
            }
            // A reload that came while a step was running.
            if reload.has_changed().unwrap_or(false) {
                let cfg = reload.borrow_and_update().clone();
                self.apply(&cfg);
            }
            match self.step().await {
                Ok(n) if n as i64 == BATCH => continue,
                Ok(_) => {}
                Err(e) => warn!("delivery worker: cannot read the outbox: {e:#}"),
            }
            let wait = match self.next_due().await {
                Some(at) => (at - Utc::now())
                    .to_std()
                    .unwrap_or(Duration::ZERO)
                    .min(Duration::from_secs(60)),
                None => Duration::from_secs(60),
            };
            tokio::select! {
                _ = shutdown.changed() => return,
                // `changed` marks the value seen, so it is applied here, not at the top.
                Ok(()) = reload.changed() => {
                    let cfg = reload.borrow_and_update().clone();
                    self.apply(&cfg);
                }
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait.max(Duration::from_millis(50))) => {}
            }
        }
    }
}

/// An alert with its delivery state per channel, for `recwatch alerts`.
#[derive(Debug, serde::Serialize)]
pub struct AlertView {
    pub id: String,
    pub rule: String,
    pub severity: String,
    pub status: String,
    pub app_id: Option<String>,
    pub job_id: Option<String>,
    pub summary: String,
    pub created_at: String,
    pub deliveries: Vec<DeliveryView>,
}

#[derive(Debug, serde::Serialize)]
pub struct DeliveryView {
    pub channel: String,
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: Option<String>,
    pub sent_at: Option<String>,
    pub last_error: Option<String>,
}

/// Alerts newest first, optionally only those with a delivery still pending.
pub async fn list_alerts(
    store: &Store,
    pending_only: bool,
    limit: i64,
) -> anyhow::Result<Vec<AlertView>> {
    let rows = sqlx::query(
        "SELECT id, rule, severity, status, app_id, job_id, summary, created_at FROM alerts a
         WHERE (?1 = 0 OR EXISTS (SELECT 1 FROM deliveries d WHERE d.alert_id = a.id AND d.state = 'pending'))
         ORDER BY created_at DESC, rowid DESC LIMIT ?2",
    )
    .bind(pending_only as i64)
    .bind(limit)
    .fetch_all(store.reader())
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let id: String = r.get(0);
        let deliveries = sqlx::query(
            "SELECT channel, state, attempts, next_attempt_at, sent_at, last_error FROM deliveries
             WHERE alert_id = ? ORDER BY channel",
        )
        .bind(&id)
        .fetch_all(store.reader())
        .await?
        .into_iter()
        .map(|d| {
            let state: String = d.get(1);
            DeliveryView {
                channel: d.get(0),
                next_attempt_at: if state == "pending" { d.get(3) } else { None },
                state,
                attempts: d.get(2),
                sent_at: d.get(4),
                last_error: d.get(5),
            }
        })
        .collect();
        out.push(AlertView {
            id,
            rule: r.get(1),
            severity: r.get(2),
            status: r.get(3),
            app_id: r.get(4),
            job_id: r.get(5),
            summary: r.get(6),
            created_at: r.get(7),
            deliveries,
        });
    }
    Ok(out)
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_table() {
        let s = Duration::from_secs;
        let cap = s(600);
        let cases = [
            ("first", 1, s(5)),
            ("second", 2, s(10)),
            ("fifth", 5, s(80)),
            ("capped", 20, s(600)),
            ("huge", u32::MAX, s(600)),
        ];
        for (name, attempts, want) in cases {
            assert_eq!(retry_delay(attempts, cap, 0.5), want, "{name}");
        }
        let ms = Duration::from_millis;
        assert_eq!(
            retry_delay(1, ms(300), 0.5),
            ms(300),
            "a small cap is also the first delay"
        );
        assert_eq!(retry_delay(3, ms(300), 0.5), ms(300));
    }

    #[test]
    fn after_failure_table() {
        let t0: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        let day = Duration::from_secs(86400);
        let cap = Duration::from_secs(600);
        let transient = DeliveryError::transient("503");
        let permanent = DeliveryError::permanent("404");
        let h = |n| t0 + chrono::Duration::hours(n);
        let cases = [
            (
                "transient early: retry",
                &transient,
                t0,
                t0,
                AfterFailure::RetryAt(t0 + chrono::Duration::seconds(5)),
            ),
            (
                "transient past max age: dead",
                &transient,
                t0,
                h(24),
                AfterFailure::Dead,
            ),
            (
                "permanent: a day later is past max age",
                &permanent,
                t0,
                t0,
                AfterFailure::Dead,
            ),
        ];
        for (name, err, created, now, want) in cases {
            assert_eq!(
                after_failure(err, 1, created, now, day, cap, 0.5),
                want,
                "{name}"
            );
        }
        // With a longer max_age a permanent refusal waits a day.
        assert_eq!(
            after_failure(
                &permanent,
                1,
                t0,
                t0,
                Duration::from_secs(3 * 86400),
                cap,
                0.5
            ),
            AfterFailure::RetryAt(h(24))
        );
    }
}
