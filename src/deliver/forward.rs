//! The relay of record callbacks to the user's own receiver (`[[apps]] forward_to`), so
//! recwatch can sit in front of an existing consumer of RTC's one callback URL.
//!
//! The queue is the `forwards` table: a row is written in the same transaction as the event
//! it relays (`Callbacks::insert`), so a crash loses nothing, and a resent event
//! (already stored) writes none, so it is relayed once. This worker sends what is due, oldest
//! first, one at a time (a receiver gets events in the order RTC sent them): the body byte for
//! byte, re-signed at send time with the app's `auth_key` from the configuration in force
//! (`X-Rtc-Rand`, `X-Rtc-Timestamp`, `X-Rtc-Signature` as RTC sends them; the key is never
//! stored), and `X-Recwatch-Forward-Id`, a stable id the receiver can deduplicate on. A
//! forward is `sent` only after a 2xx; failures are retried with the alerts' policy
//! (`policy::after_failure`, `notify.max_backoff` and `notify.max_age`); one still failing at
//! `max_age` is `dead` and stays in the table (`recwatch forwards`). A crash or stop between a
//! send and its mark sends it again, with the same id: at-least-once.

use super::policy::{AfterFailure, Policy, after_failure};
use crate::config::{AppConfig, Config};
use crate::domain::timestamp;
use crate::notify::http::{Label, Sender};
use crate::notify::{DeliveryError, Retry};
use crate::store::{DueForward, ForwardOutcome, Store};
use chrono::{DateTime, Utc};
use rand::Rng;
use recwatch_rtc::callback::{HEADER_RAND, HEADER_SIGNATURE, HEADER_TIMESTAMP, sign};
use reqwest::header::CONTENT_TYPE;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tracing::{error, info, warn};

/// The stable id of a forward, for the receiver to deduplicate on.
pub const HEADER_FORWARD_ID: &str = "x-recwatch-forward-id";

/// How long one send may take, connection included.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// Forwards read from the queue per step.
const BATCH: i64 = 32;

/// The longest the worker sleeps without looking at the queue again.
const IDLE: Duration = Duration::from_secs(60);

/// `recwatch_forwards_total{outcome}`.
pub const OUTCOMES: [&str; 3] = ["sent", "retry", "dead"];

pub struct Forwarder {
    store: Store,
    config: watch::Receiver<Arc<Config>>,
    /// Rung by the callback receiver when it stores an event with a forward.
    wake: Arc<Notify>,
    /// The one HTTP path; errors name the receiver "the forward_to receiver".
    http: Sender,
}

/// `forward_to request failed: ...`, `the forward_to receiver answered HTTP ...`.
const LABEL: Label = Label {
    request: "forward_to",
    answer: "the forward_to receiver",
};

impl Forwarder {
    pub fn new(
        store: Store,
        config: watch::Receiver<Arc<Config>>,
        wake: Arc<Notify>,
    ) -> anyhow::Result<Forwarder> {
        // The receiver's URL is not scrubbed from errors: no error carries it (`without_url`).
        let http = Sender::new(FORWARD_TIMEOUT, Vec::new(), LABEL).map_err(anyhow::Error::msg)?;
        Ok(Forwarder {
            store,
            config,
            wake,
            http,
        })
    }

    /// Attempts every forward due now, one after the other; returns how many. Tests drive
    /// the worker with it.
    pub async fn step(&mut self) -> anyhow::Result<usize> {
        let due = self
            .store
            .forwards()
            .due(&timestamp(Utc::now()), BATCH)
            .await?;
        let n = due.len();
        let config = self.config.borrow().clone();
        for f in due {
            if self.store.fence().is_some_and(|fence| !fence.is_valid()) {
                // This instance stepped down: the next leader relays what is left.
                break;
            }
            let result = self.send(&config, &f).await;
            self.settle(&config, f, result).await;
        }
        Ok(n)
    }

    /// Runs until `shutdown`: pending forwards at once on start (a previous run's too), then
    /// whenever the receiver stores one or a retry falls due. A stop in the middle of a send
    /// leaves it pending, to go again (same id) on the next start.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        loop {
            if *shutdown.borrow() {
                break;
            }
            let stepped = tokio::select! {
                _ = shutdown.wait_for(|s| *s) => break,
                r = self.step() => r,
            };
            let full = match stepped {
                Ok(n) => n as i64 == BATCH,
                Err(e) => {
                    warn!("cannot read the forwards queue: {e:#}");
                    false
                }
            };
            self.set_pending_gauge().await;
            if full {
                continue;
            }
            let wait = self.next_wait().await;
            tokio::select! {
                _ = shutdown.wait_for(|s| *s) => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn set_pending_gauge(&self) {
        if let Ok(n) = self.store.forwards().pending().await {
            metrics::gauge!("recwatch_forwards_pending").set(n as f64);
        }
    }

    async fn next_wait(&self) -> Duration {
        match self.store.forwards().next_at().await {
            Ok(Some(at)) => (at.to_datetime() - Utc::now())
                .to_std()
                .unwrap_or(Duration::ZERO)
                // A floor, so a row due now that the queue cannot hand out does not spin.
                .max(Duration::from_millis(10))
                .min(IDLE),
            Ok(None) => IDLE,
            Err(e) => {
                warn!("cannot read the forwards queue: {e:#}");
                Duration::from_secs(1)
            }
        }
    }

    /// One attempt: the body as received, signed now with the app's key.
    async fn send(&self, config: &Config, f: &DueForward) -> Result<(), DeliveryError> {
        let app = forward_target(config, &f.app_id)?;
        let url = app.forward_to.clone().expect("forward_target checked it");
        let rand = hex::encode(rand::rng().random::<[u8; 16]>());
        let at = Utc::now().timestamp().to_string();
        let signature = sign(&app.auth_key, &rand, &at, &f.body);
        let request = self
            .http
            .post(url)
            .header(CONTENT_TYPE, "application/json")
            .header(HEADER_RAND, rand)
            .header(HEADER_TIMESTAMP, at)
            .header(HEADER_SIGNATURE, signature)
            .header(HEADER_FORWARD_ID, f.id.to_string())
            .body(f.body.clone());
        // A 429 without Retry-After leaves the wait to the policy's back-off.
        self.http.send_for_status(request, None).await
    }

    /// Decides and records an attempt's outcome, and says so in the log and the metrics.
    async fn settle(&self, config: &Config, f: DueForward, result: Result<(), DeliveryError>) {
        let now = Utc::now();
        let attempts = f.attempts.saturating_add(1);
        let job_id = f.job_id.as_deref().unwrap_or("-");
        let outcome = match result {
            Ok(()) => {
                info!(forward_id = f.id, app_id = %f.app_id, job_id, event_type = %f.event_type, attempts, "callback forwarded");
                ForwardOutcome::Sent
            }
            Err(e) => {
                let age = (now - f.created_at.to_datetime())
                    .to_std()
                    .unwrap_or_default();
                let policy = Policy::from_config(&config.notify);
                let jitter = rand::rng().random::<f64>();
                let tries = u32::try_from(attempts).unwrap_or(u32::MAX);
                match after_failure(e.retry, tries, age, &policy, jitter) {
                    AfterFailure::RetryIn(delay) => {
                        let next = crate::rules::checked_after(now, delay)
                            .unwrap_or(DateTime::<Utc>::MAX_UTC);
                        warn!(forward_id = f.id, app_id = %f.app_id, job_id, attempts, next_attempt = %timestamp(next),
                            "callback forward failed: {}; next attempt in {}", e.message, humantime::format_duration(Duration::from_secs(delay.as_secs().max(1))));
                        ForwardOutcome::Retry {
                            next: timestamp(next),
                            error: e.message,
                        }
                    }
                    AfterFailure::Dead(_) => {
                        error!(forward_id = f.id, app_id = %f.app_id, job_id, attempts,
                            "callback forward dead: {}; still failing after {attempts} attempts (notify.max_age is {}). It stays in the database (recwatch forwards)",
                            e.message, humantime::format_duration(policy.max_age));
                        ForwardOutcome::Dead { error: e.message }
                    }
                }
            }
        };
        let label = OUTCOMES[match &outcome {
            ForwardOutcome::Sent => 0,
            ForwardOutcome::Retry { .. } => 1,
            ForwardOutcome::Dead { .. } => 2,
        }];
        metrics::counter!("recwatch_forwards_total", "outcome" => label).increment(1);
        if let Err(e) = self
            .store
            .forwards()
            .record(f.id, attempts, &timestamp(now), &outcome)
            .await
        {
            // Still pending in the table: it goes again (same id), at-least-once.
            warn!(
                forward_id = f.id,
                "cannot record the forward's outcome: {e:#}; it will be attempted again"
            );
        }
    }
}

/// The app a forward goes to, if it still has a `forward_to`. A forward whose app lost it is
/// retried slowly (every `notify.max_backoff`) until `notify.max_age` like a refusal, so a
/// configuration fixed in time still relays it.
fn forward_target<'a>(config: &'a Config, app_id: &str) -> Result<&'a AppConfig, DeliveryError> {
    match config.apps.iter().find(|a| a.app_id == app_id) {
        Some(app) if app.forward_to.is_some() => Ok(app),
        Some(_) => Err(DeliveryError {
            retry: Retry::Refused,
            message: format!(
                "app {app_id:?} has no forward_to in the configuration any more; add it back to relay this event"
            ),
        }),
        None => Err(DeliveryError {
            retry: Retry::Refused,
            message: format!(
                "app {app_id:?} is no longer in [[apps]]; add it back (with forward_to) to relay this event"
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_labels_are_the_catalogues() {
        assert_eq!(&OUTCOMES[..], crate::metric_catalogue::FORWARD_OUTCOMES);
    }
}
