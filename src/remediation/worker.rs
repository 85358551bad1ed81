//! The remediation worker (issue 15): takes the intents the outbox wrote with each death
//! (`remediations` rows in `pending`) and re-creates the dead job, exactly once or not at all.
//!
//! Each attempt: the row is marked `posting` in its own commit BEFORE the POST; the POST
//! takes a slot of the same request budget as polling (`poller::Budget`); its answer is
//! recorded in one transaction with the new job's watch-list entry (source `remediation`)
//! and the death's alert completed, or a notice of its own (`Outbox::tell_remediation`).
//! What a failed create proves decides what follows (recwatch-rtc's `CreateFailure`): only
//! an answer that proves nothing was created (429 APIG.0308, a refused connection) is tried
//! again, with a bounded back-off; a 4xx is `failed`; a 5xx, a timeout or a lost connection
//! is `unknown` and a human is alerted. At start, a row still `posting` is a crash between a
//! POST and its answer: the API has no idempotency key, so it is never posted again: it
//! becomes `unknown`, with a critical alert saying what to check.
//!
//! The worker runs where the delivery worker runs (started beside it in `startup`), so only
//! the instance that polls re-creates; the intents live in the database, so a takeover
//! continues them.

use crate::config::{Config, JobConfig};
use crate::domain::{JobKey, JobSource, RuntimeJob, Timestamp, timestamp};
use crate::outbox::Outbox;
use crate::poller::{Budget, Budgets};
use crate::remediation::outbox::{Outcome, Told};
use crate::runtime_list::Watchlist;
use crate::store::{Finished, RemediationRow, Store};
use chrono::Utc;
use recwatch_rtc::client::{RtcClient, RtcError};
use recwatch_rtc::{CreateFailure, CreateRequest, Kind};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{error, info, warn};

/// How often the worker looks for due intents (the outbox writes them; the look is one
/// indexed read).
const TICK: Duration = Duration::from_millis(200);

/// Tries of a create whose answers prove nothing was created, before it is given up as
/// failed.
pub const MAX_TRIES: i64 = 5;

/// The create request rebuilt from the stored answer of the death, or why it cannot be.
fn rebuilt_request(row: &RemediationRow) -> Result<CreateRequest, String> {
    let snapshot = recwatch_rtc::model::parse_job(row.snapshot.as_bytes())
        .map_err(|e| anyhow::anyhow!("the stored answer cannot be read: {e}"));
    let kind: Kind = row.kind.parse().unwrap_or_default();
    snapshot
        .as_ref()
        .map_err(|e| e.to_string())
        .and_then(|s| CreateRequest::from_snapshot(kind, s).map_err(|e| e.to_string()))
}

/// The wait before try `tries + 1` after `tries` answers that proved nothing was created:
/// 1 s, doubling, at most 30 s. Pure.
pub fn retry_delay(tries: i64) -> Duration {
    let exp = tries.clamp(1, 6) - 1;
    Duration::from_secs(1u64 << exp).min(Duration::from_secs(30))
}

/// The account a create goes through: its client and budget, with the configuration in force.
struct Account {
    name: String,
    throttle_backoff: std::time::Duration,
    client: RtcClient,
    budget: Arc<Budget>,
}

pub struct Remediator {
    store: Store,
    outbox: Outbox,
    /// The pollers' budgets: a create is a request like any poll, in its account's budget.
    budgets: Budgets,
    watchlist: Watchlist,
    config: watch::Receiver<Arc<Config>>,
    /// Each account's client for the configuration in force, rebuilt when a reload
    /// replaces it.
    clients: Option<(Arc<Config>, HashMap<String, RtcClient>)>,
}

impl Remediator {
    pub fn new(
        store: Store,
        outbox: Outbox,
        budgets: Budgets,
        watchlist: Watchlist,
        config: watch::Receiver<Arc<Config>>,
    ) -> Remediator {
        Remediator {
            store,
            outbox,
            budgets,
            watchlist,
            config,
            clients: None,
        }
    }

    /// Rows a previous run left in `posting` become `unknown`, each with a critical alert.
    /// Returns how many.
    pub async fn recover(&mut self) -> anyhow::Result<usize> {
        let stranded = self.store.remediations().stranded().await?;
        for row in &stranded {
            error!(app_id = %row.app_id, job_id = %row.old_job_id, remediation = row.id, "a re-creation was being sent when recwatch stopped: its outcome is unknown and it is not sent again");
            let outcome = Outcome::Unknown {
                error: "recwatch stopped between sending the create and reading its answer".into(),
            };
            self.record(row, outcome, None, None).await?;
        }
        Ok(stranded.len())
    }

    /// One pass: attempts every due intent, one after the other; returns how many. Tests
    /// drive the worker with it.
    pub async fn step(&mut self) -> anyhow::Result<usize> {
        let due = self.store.remediations().due(Utc::now(), 16).await?;
        for row in &due {
            self.attempt(row).await?;
        }
        Ok(due.len())
    }

    /// Runs until `shutdown`: recovers what a previous run left, then attempts what falls
    /// due. A panic or an error in a pass is logged and the next pass goes on.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut recovered = false;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.wait_for(|s| *s) => return,
                _ = tick.tick() => {}
            }
            let pass = async {
                if !recovered {
                    self.recover().await?;
                    recovered = true;
                }
                self.step().await
            };
            match crate::vitals::contain(pass).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => warn!("remediation: {e:#}; trying again"),
                Err(why) => {
                    error!("the remediation worker panicked ({why}); it goes on");
                    metrics::counter!("recwatch_task_panics_total", "task" => "remediation")
                        .increment(1);
                }
            }
        }
    }

    /// The configuration in force, the account that re-creates `app_id`'s jobs (the app's,
    /// issue 25: the dead job's own `[[jobs]] account` first) with its client and its budget.
    fn client(&mut self, row: &RemediationRow) -> anyhow::Result<Account> {
        let config = self.config.borrow().clone();
        if !matches!(&self.clients, Some((c, _)) if Arc::ptr_eq(c, &config)) {
            self.clients = Some((config.clone(), HashMap::new()));
        }
        let own = config
            .jobs
            .iter()
            .find(|j| j.app_id() == row.app_id && j.job_id() == row.old_job_id);
        let api = match own {
            Some(j) => config.account_of(j),
            None => config.account_of_app(&row.app_id),
        }
        .clone();
        let clients = &mut self.clients.as_mut().expect("set above").1;
        let client = match clients.get(&*api.name) {
            Some(c) => c.clone(),
            None => {
                let c = RtcClient::new(&api.client_config())?;
                clients.insert(api.name.to_string(), c.clone());
                c
            }
        };
        let budget = self.budgets.of_name(&config, &api.name);
        Ok(Account {
            name: api.name.to_string(),
            throttle_backoff: api.throttle_backoff,
            client,
            budget,
        })
    }

    /// One try of one intent: marked `posting` (committed), a budget slot, the POST, the
    /// answer recorded.
    async fn attempt(&mut self, row: &RemediationRow) -> anyhow::Result<()> {
        let request = rebuilt_request(row);
        let account = self.client(row)?;
        let (client, budget) = (account.client.clone(), account.budget.clone());
        // The slot first: a budget paused for minutes must not leave the row `posting`
        // (a crash then would call unknown a create that was never sent). It is stamped sent
        // right before the POST, after the write, and counts until a second after the
        // answer: the budget as the gateway counts it (issue 23).
        let slot = match request {
            Ok(_) => Some(budget.reserve().await.0),
            Err(_) => None,
        };
        if !self
            .store
            .remediations()
            .mark_posting(row.id, Utc::now())
            .await?
        {
            return Ok(());
        }
        let request = match request {
            Ok(r) => r,
            Err(e) => {
                return self
                    .record(row, Outcome::Failed { error: e }, None, None)
                    .await;
            }
        };
        let sent = match slot {
            Some(slot) => Some(slot.send().await),
            None => None,
        };
        let answer = client.create_job(&row.app_id, &request).await;
        drop(sent);
        let attempts = row.attempts + 1;
        match answer {
            Ok(created) => {
                info!(app_id = %row.app_id, job_id = %row.old_job_id, new_job_id = %created.job_id, request_id = created.request_id.as_deref().unwrap_or("-"), "re-created {} as {}", row.old_job_id, created.job_id);
                let outcome = Outcome::Created {
                    new_job_id: created.job_id,
                };
                self.record(
                    row,
                    outcome,
                    created.request_id.as_deref(),
                    Some(&account.name),
                )
                .await
            }
            Err(e) => self.not_created(row, e, attempts, &account).await,
        }
    }

    /// A create that failed, after `attempts` tries: tried again later only when it proves
    /// nothing was created and tries are left; otherwise the outcome is recorded.
    async fn not_created(
        &mut self,
        row: &RemediationRow,
        e: RtcError,
        attempts: i64,
        account: &Account,
    ) -> anyhow::Result<()> {
        let error = e.to_string();
        match e.create_failure() {
            CreateFailure::NotCreated if attempts < MAX_TRIES => {
                if e.kind == recwatch_rtc::ErrorKind::Throttled {
                    // A 429 pauses every request, polls included (the budget's rule).
                    let until =
                        crate::poller::later(tokio::time::Instant::now(), account.throttle_backoff);
                    account.budget.pause_until(until);
                }
                let next = Utc::now() + crate::rules::chrono_saturating(retry_delay(attempts));
                warn!(app_id = %row.app_id, job_id = %row.old_job_id, "the create was not taken ({error}); nothing was created, trying again at {}", timestamp(next));
                metrics::counter!("recwatch_remediations_total", "result" => "retried")
                    .increment(1);
                self.store
                    .remediations()
                    .retry(row.id, next, &error)
                    .await?;
                Ok(())
            }
            CreateFailure::NotCreated => {
                let error = format!(
                    "given up after {attempts} tries that each proved nothing was created; last: {error}"
                );
                warn!(app_id = %row.app_id, job_id = %row.old_job_id, "the re-creation is given up: {error}");
                self.record(
                    row,
                    Outcome::Failed { error },
                    e.request_id.as_deref(),
                    None,
                )
                .await
            }
            CreateFailure::Refused => {
                // A refusal (a 4xx such as 400) is not tried again: the operator must
                // hear of it in the log too, not only in the alert.
                warn!(app_id = %row.app_id, job_id = %row.old_job_id, request_id = e.request_id.as_deref().unwrap_or("-"), "the re-creation was refused ({error}); nothing was created and it is not sent again");
                self.record(
                    row,
                    Outcome::Failed { error },
                    e.request_id.as_deref(),
                    None,
                )
                .await
            }
            CreateFailure::Unknown => {
                self.record(
                    row,
                    Outcome::Unknown { error },
                    e.request_id.as_deref(),
                    None,
                )
                .await
            }
        }
    }

    /// Records an outcome: the row, the new job watched, the outcome told, in one
    /// transaction; then the new job is published to the poller.
    async fn record(
        &mut self,
        row: &RemediationRow,
        outcome: Outcome,
        request_id: Option<&str>,
        account: Option<&str>,
    ) -> anyhow::Result<()> {
        let config = self.config.borrow().clone();
        let now = Utc::now();
        let notify = row
            .notify
            .as_deref()
            .and_then(|n| serde_json::from_str::<Vec<String>>(n).ok());
        let kind: Kind = row.kind.parse().unwrap_or_default();
        let job = JobConfig {
            account: None,
            key: crate::domain::JobKey::new(row.app_id.clone(), row.old_job_id.clone()),
            kind,
            name: row.name.clone(),
            interval: None,
            notify: notify.clone(),
        };
        let snapshot = recwatch_rtc::model::parse_job(row.snapshot.as_bytes()).unwrap_or_default();
        let error = match &outcome {
            Outcome::Failed { error } | Outcome::Unknown { error } => Some(error.as_str()),
            Outcome::Created { .. } => None,
        };
        let new_job_id = match &outcome {
            Outcome::Created { new_job_id } => Some(new_job_id.as_str()),
            _ => None,
        };
        let mut tx = self.store.begin_write().await?;
        let finished = Finished {
            state: outcome.state(),
            new_job_id,
            error,
            request_id,
            at: now,
        };
        if !tx.remediations().finish(row.id, &finished).await? {
            return Ok(());
        }
        if let Some(new) = new_job_id {
            tx.watchlist()
                .add(&RuntimeJob {
                    // Polled by the account that made it, whatever the app's is by then.
                    account: account.map(str::to_string),
                    key: JobKey::new(&row.app_id, new),
                    kind,
                    name: row.name.clone(),
                    notify,
                    source: JobSource::Remediation,
                    added_at: Timestamp::from(now),
                })
                .await?;
        }
        let told = Told {
            id: row.id,
            job: &job,
            snapshot: &snapshot,
            alert_id: row.alert_id.as_deref(),
        };
        let made = self
            .outbox
            .tell_remediation(&mut tx, &told, &outcome, &config, now)
            .await?;
        tx.commit().await?;
        let result = outcome.state().as_str();
        metrics::counter!("recwatch_remediations_total", "result" => result).increment(1);
        self.outbox.announce_committed(&made);
        if new_job_id.is_some() {
            // Publishes the new entry now: the poller polls the new job at once.
            self.watchlist.refresh().await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_table() {
        let cases = [
            ("after the first try", 1, 1),
            ("doubling", 2, 2),
            ("again", 3, 4),
            ("and again", 5, 16),
            ("capped at 30 s", 6, 30),
            ("still capped", 60, 30),
            ("nonsense counts as the first", 0, 1),
        ];
        for (name, tries, secs) in cases {
            assert_eq!(retry_delay(tries), Duration::from_secs(secs), "{name}");
        }
    }
}
