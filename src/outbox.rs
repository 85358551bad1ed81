//! The outbox: alerts and their pending deliveries, written in the same SQLite transaction as
//! the poll outcome (transition or condition) that caused them.
//!
//! Nothing here sends; the delivery worker (`deliver`) works from the `deliveries` table. A
//! `dedup_key` per alert (the transition id and rule, or the condition episode and its step)
//! makes a second alert for the same cause impossible, whatever restarts or re-polls happen.
//!
//! The poller hands it each job's outcomes through its group writer (`poller::writer`), which
//! groups them into [`Outbox::write_group`]; the outbox never imports the poller. The
//! [`Event`]s both publish are defined here for that reason.

use crate::config::{Config, JobConfig};
use crate::domain::{
    Alert, AlertId, JobFacts, PAYLOAD_VERSION, Rule, Severity, Status, TransitionFacts, hostname,
};
use crate::domain::{Phase, Timestamp};
use crate::domain::{PollOutcome, PollRecord};
use crate::rules;
use crate::store::{JobPolls, JobRecorded, Store, StoreError, WriteTx};
use chrono::{DateTime, Utc};
use recwatch_rtc::client::RtcError;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::{Notify, broadcast};
use tracing::{error, info, warn};

mod condition;
pub(crate) mod transition;
use transition::Recorded;

/// Something the demo (and logs) want to see as it happens: the poller sends transitions and
/// failed polls, the outbox the alerts it commits. Defined here, below the poller, so the
/// outbox never imports the poller.
#[derive(Clone, Debug)]
pub enum Event {
    Transition {
        job: JobConfig,
        from: Option<Phase>,
        to: Phase,
        description: Option<String>,
    },
    PollFailed {
        job: JobConfig,
        error: RtcError,
    },
    Alert {
        summary: String,
        rule: Rule,
        severity: Severity,
        status: Status,
    },
}

/// A change in the API's health, decided by the poller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiHealthChange {
    Unhealthy { reason: String },
    Recovered,
}

/// Changes of the API's health the database has not taken yet, kept until it does (a
/// health change is never given up: a lost "recovered" would leave the api_unhealthy episode
/// open for ever, a lost "unhealthy" would lose its alert). Memory stays bounded however long
/// the database refuses writes: only the first change owed and the latest are kept.
///
/// Why those two suffice: the database's episode is the record of what was alerted, and the
/// changes alternate (unhealthy, recovered, unhealthy...). The first owed change is what the
/// database is behind on: after a recorded (so alerted) firing it is "recovered", which must
/// be written, resolved notice included, even if the API failed again since; while nothing
/// is open it is "unhealthy", an outage that must be alerted even if it is over by the time
/// the database takes it (the firing and resolved notices then go out together, in order).
/// The latest change is where the API stands now. What lay between folds into one episode:
/// a flapping API under a refusing database is one outage, not many, told late.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OwedHealth {
    first: Option<ApiHealthChange>,
    latest: Option<ApiHealthChange>,
}

impl OwedHealth {
    pub fn push(&mut self, change: ApiHealthChange) {
        if self.first.is_none() {
            self.first = Some(change);
        } else {
            self.latest = Some(change);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    pub fn clear(&mut self) {
        *self = OwedHealth::default();
    }

    /// What to write, in order: the first change owed, then the latest when it goes the other
    /// way (two changes the same way are one: the episode already says so).
    pub fn changes(&self) -> Vec<&ApiHealthChange> {
        let same_way = |a: &ApiHealthChange, b: &ApiHealthChange| {
            std::mem::discriminant(a) == std::mem::discriminant(b)
        };
        match (&self.first, &self.latest) {
            (Some(first), Some(latest)) if !same_way(first, latest) => vec![first, latest],
            (Some(first), _) => vec![first],
            (None, _) => Vec::new(),
        }
    }
}

/// Which accounts' APIs are unhealthy (issue 25: one blind account is its own alert, and holds
/// back only its own jobs' per-job alerts). `any` answers the hot path (every poll's
/// conditions ask) without the lock while every account is healthy.
#[derive(Debug, Default)]
struct AccountsHealth {
    any: AtomicBool,
    state: std::sync::Mutex<HealthState>,
}

#[derive(Debug, Default)]
struct HealthState {
    unhealthy: std::collections::BTreeSet<String>,
    polled: Vec<String>,
}

impl AccountsHealth {
    fn lock(&self) -> std::sync::MutexGuard<'_, HealthState> {
        // A panic elsewhere while holding it leaves a set that is still a set.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, account: &str, unhealthy: bool) {
        let mut h = self.lock();
        match unhealthy {
            true => h.unhealthy.insert(account.to_string()),
            false => h.unhealthy.remove(account),
        };
        self.any.store(!h.unhealthy.is_empty(), Ordering::Relaxed);
    }
}

/// " of account NAME" where several accounts are configured (with one, the account goes
/// unnamed, as before accounts).
fn of_account(config: &Config) -> String {
    match config.several_accounts() {
        true => format!(" of account {}", config.api.name),
        false => String::new(),
    }
}

/// The account an alert is about: `job`'s ([`Config::account_of`]: its own, its app's, else
/// the first), or, for an api-wide alert, the configuration's own: a poller writes with its
/// account's narrowed configuration, whose `api` is that account. Alerts written outside a
/// poller (remediation, with the whole configuration) always have their job.
pub(crate) fn account_of<'a>(config: &'a Config, job: Option<&JobConfig>) -> &'a str {
    match job {
        Some(j) => &config.account_of(j).name,
        None => &config.api.name,
    }
}

/// What the outbox needs to know about the job whose polls it writes.
pub struct JobContext<'a> {
    pub job: &'a JobConfig,
    /// How long the job has been in INIT by the poller's monotonic clock (`None`: not in
    /// INIT as far as it knows), for stuck_init.
    pub in_init: Option<std::time::Duration>,
    pub now: DateTime<Utc>,
}

#[derive(Clone)]
pub struct Outbox {
    host: Arc<str>,
    /// Wakes the delivery worker when new deliveries are committed.
    wake: Arc<Notify>,
    /// While an account's API is unhealthy, per-job conditions that the same outage causes
    /// are held back: one alert, not one per job.
    health: Arc<AccountsHealth>,
    events: Option<broadcast::Sender<Event>>,
    /// The ids of the alerts this outbox made, when asked to keep them (`poll-once` delivers
    /// exactly those before it exits).
    made: Option<Arc<std::sync::Mutex<Vec<AlertId>>>>,
}

impl Default for Outbox {
    fn default() -> Self {
        Outbox::new()
    }
}

impl Outbox {
    pub fn new() -> Outbox {
        Outbox {
            host: hostname().into(),
            wake: Arc::new(Notify::new()),
            health: Arc::default(),
            events: None,
            made: None,
        }
    }

    /// Keeps the id of every alert this outbox (and its clones) makes, for [`Outbox::made`].
    pub fn keeping_ids(mut self) -> Outbox {
        self.made = Some(Arc::default());
        self
    }

    /// The ids of the alerts made so far, oldest first (empty unless [`Outbox::keeping_ids`]).
    pub fn made(&self) -> Vec<AlertId> {
        self.made
            .as_ref()
            .map(|m| m.lock().expect("made lock").clone())
            .unwrap_or_default()
    }

    pub fn with_events(mut self, events: broadcast::Sender<Event>) -> Outbox {
        self.events = Some(events);
        self
    }

    pub fn wake_handle(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Sets `account`'s flag at once; the episode itself is written by `api_health`.
    pub fn set_api_unhealthy(&self, account: &str, unhealthy: bool) {
        self.health.set(account, unhealthy);
    }

    /// Whether any account's API is unhealthy.
    pub fn api_unhealthy(&self) -> bool {
        self.health.any.load(Ordering::Relaxed)
    }

    /// Whether `account`'s API is unhealthy.
    pub fn api_unhealthy_for(&self, account: &str) -> bool {
        self.api_unhealthy() && self.health.lock().unhealthy.contains(account)
    }

    /// The accounts whose API is unhealthy, by name.
    pub fn unhealthy_accounts(&self) -> Vec<String> {
        self.health.lock().unhealthy.iter().cloned().collect()
    }

    /// Whether every polled account's API is unhealthy: only then is the daemon blind (one
    /// blind account is an alert, not a dead daemon). Before any account is polled, whether
    /// any is.
    pub fn every_account_unhealthy(&self) -> bool {
        if !self.api_unhealthy() {
            return false;
        }
        let h = self.health.lock();
        h.polled.is_empty() || h.polled.iter().all(|a| h.unhealthy.contains(a))
    }

    /// Restores the accounts' api_unhealthy flags from episodes left open by a previous run,
    /// and takes the accounts about to be polled (`polled`, for
    /// [`Outbox::every_account_unhealthy`]).
    pub async fn restore(&self, store: &Store, polled: &[Arc<str>]) -> anyhow::Result<()> {
        let open = store.episodes().open_accounts(Rule::ApiUnhealthy).await?;
        let mut h = self.health.lock();
        h.unhealthy = open.into_iter().collect();
        h.polled = polled.iter().map(|n| n.to_string()).collect();
        self.health
            .any
            .store(!h.unhealthy.is_empty(), Ordering::Relaxed);
        Ok(())
    }

    /// Writes one job's poll outcomes (oldest first) and every alert they cause, atomically.
    pub async fn write_job_polls(
        &self,
        store: &Store,
        records: &[PollRecord],
        ctx: &JobContext<'_>,
        config: &Config,
    ) -> Result<(), StoreError> {
        let mut tx = store.begin_write().await?;
        let made = self
            .write_jobs_in(&mut tx, &[(records, ctx, config)])
            .await?;
        tx.commit().await?;
        self.announce(&made);
        Ok(())
    }

    /// The body of [`Outbox::write_job_polls`] for each job, inside the caller's transaction;
    /// returns the alerts made, to announce once committed. The jobs' outcomes are recorded
    /// and their open episodes read in one call (`WriteTx::record_job_polls`: on SQLite one
    /// hand-off to the database's thread, not one a statement); then each job's transitions
    /// get their alert and remediation (`transition.rs`), and its conditions are written from
    /// its latest outcome. A job's episodes read up front stay true because nothing else in
    /// the pass writes that job's episodes: a job that comes twice (it never does, each poll
    /// waits for its write) starts a new pass, so it is read after its first write.
    async fn write_jobs_in(
        &self,
        tx: &mut WriteTx,
        jobs: &[(&[PollRecord], &JobContext<'_>, &Config)],
    ) -> Result<Vec<Alert>, StoreError> {
        let mut made = Vec::new();
        let mut rest = jobs;
        while !rest.is_empty() {
            let mut seen = std::collections::HashSet::new();
            let n = rest
                .iter()
                .take_while(|(_, ctx, _)| seen.insert((ctx.job.app_id(), ctx.job.job_id())))
                .count();
            let (pass, after) = rest.split_at(n);
            rest = after;
            let rules: Vec<Vec<Rule>> = pass
                .iter()
                .map(|(_, _, config)| rules::job_condition_rules(&config.rules))
                .collect();
            let polls: Vec<JobPolls<'_>> = pass
                .iter()
                .zip(&rules)
                .map(|((records, ctx, _), rules)| JobPolls {
                    app_id: ctx.job.app_id(),
                    job_id: ctx.job.job_id(),
                    records,
                    rules,
                })
                .collect();
            let recorded = tx.record_job_polls(&polls).await?;
            for ((records, ctx, config), recorded) in pass.iter().zip(recorded) {
                made.extend(
                    self.write_job_rest(tx, records, ctx, config, recorded)
                        .await?,
                );
            }
        }
        Ok(made)
    }

    /// One job's writes after its outcomes are recorded: each transition's alert and
    /// remediation, then its conditions from its latest outcome.
    async fn write_job_rest(
        &self,
        tx: &mut WriteTx,
        records: &[PollRecord],
        ctx: &JobContext<'_>,
        config: &Config,
        recorded: JobRecorded,
    ) -> Result<Vec<Alert>, StoreError> {
        let mut made = Vec::new();
        for (r, transition_id) in records.iter().zip(recorded.transitions) {
            if let (
                Some(tid),
                PollOutcome::Ok {
                    job,
                    request_id,
                    transition: Some((from, to)),
                    raw,
                },
            ) = (transition_id, &r.outcome)
            {
                let recorded = Recorded {
                    transition_id: tid,
                    job: ctx.job,
                    snapshot: job,
                    raw,
                    request_id,
                    from,
                    to,
                    at: r.polled_at,
                };
                made.extend(self.write_transition(tx, &recorded, config).await?);
            }
        }
        if let Some(last) = records.last() {
            made.extend(
                self.job_conditions(tx, last, ctx, config, recorded.open)
                    .await?,
            );
        }
        Ok(made)
    }

    /// Says at once that the API's health changed (the log and the flag that holds per-job
    /// alerts back); the episode itself is written by [`Outbox::write_api_health`], which
    /// may have to wait for the database.
    pub fn note_api_health(&self, account: &str, change: &ApiHealthChange) {
        match change {
            ApiHealthChange::Unhealthy { reason } => {
                error!(
                    account,
                    "the RTC API is unhealthy: {reason}; per-job not-found alerts are held back until it recovers"
                );
                self.health.set(account, true);
            }
            ApiHealthChange::Recovered => {
                info!(account, "the RTC API answers normally again");
                self.health.set(account, false);
            }
        }
    }

    /// Notes one change and writes it, once: for callers that keep nothing owed (tests,
    /// tools); the poller keeps what the database refuses (see `poller::health::write_api_health`).
    pub async fn api_health(
        &self,
        store: &Store,
        change: ApiHealthChange,
        config: &Config,
    ) -> anyhow::Result<()> {
        self.note_api_health(&config.api.name, &change);
        let mut owed = OwedHealth::default();
        owed.push(change);
        self.write_api_health(store, &owed, config).await
    }

    /// Writes the owed changes of the API's health of `config`'s account (`config.api`: opens
    /// or resolves its api_unhealthy episode, with their alerts) in one transaction: all of
    /// them or, on an error, none, so the caller keeps them owed and tries again.
    pub async fn write_api_health(
        &self,
        store: &Store,
        owed: &OwedHealth,
        config: &Config,
    ) -> anyhow::Result<()> {
        let now = Utc::now();
        let mut tx = store.begin_write().await?;
        let mut made = Vec::new();
        for change in owed.changes() {
            let (active, summary) = match change {
                ApiHealthChange::Unhealthy { reason } => (
                    true,
                    format!("the RTC API{} is unhealthy: {reason}", of_account(config)),
                ),
                ApiHealthChange::Recovered => (false, String::new()),
            };
            made.extend(
                self.account_condition(&mut tx, active, &summary, config, now)
                    .await?,
            );
        }
        tx.commit().await?;
        self.announce(&made);
        Ok(())
    }

    /// While the API stays down, sends a reminder when one is due. One try: the next failed
    /// poll asks again.
    pub async fn api_still_unhealthy(&self, store: &Store, config: &Config) -> anyhow::Result<()> {
        if !self.api_unhealthy_for(&config.api.name) {
            return Ok(());
        }
        let mut tx = store.begin_write().await?;
        let summary = format!("the RTC API{} is still unhealthy", of_account(config));
        let made = self
            .account_condition(&mut tx, true, &summary, config, Utc::now())
            .await?;
        tx.commit().await?;
        self.announce(&made);
        Ok(())
    }

    /// An alert about `job` (or the API, when `None`) of account `account` (see
    /// [`account_of`]), made `now`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn alert(
        &self,
        status: Status,
        rule: Rule,
        severity: Severity,
        summary: String,
        account: &str,
        job: Option<JobFacts>,
        transition: Option<TransitionFacts>,
        now: DateTime<Utc>,
        config: &Config,
    ) -> Alert {
        // Frozen with the payload, like every other fact: a later change of public_url does
        // not rewrite what an alert already says.
        let job_url = job
            .as_ref()
            .and_then(|j| config.http.job_link(&j.app_id, &j.job_id));
        Alert {
            version: PAYLOAD_VERSION,
            id: AlertId::generate(),
            status,
            rule,
            severity,
            summary,
            account: account.to_string(),
            job,
            transition,
            fired_at: Timestamp::from(now),
            host: self.host.to_string(),
            job_url,
            remediation: None,
        }
    }

    /// Logs, counts and wakes the delivery worker for alerts committed outside the poll path.
    /// It wakes the worker even when no alert was made: an outcome that completed the death's
    /// held alert made its deliveries due now, and a lane asleep until the hold's end would
    /// send it only then (issue 22: 5 s for an outcome known after 0.12 s).
    pub fn announce_committed(&self, made: &[Alert]) {
        self.announce(made);
        self.wake.notify_one();
    }

    fn announce(&self, made: &[Alert]) {
        if made.is_empty() {
            return;
        }
        if let Some(ids) = &self.made {
            ids.lock()
                .expect("made lock")
                .extend(made.iter().map(|a| a.id.clone()));
        }
        for a in made {
            metrics::counter!("recwatch_alerts_total", "rule" => a.rule.as_str(), "severity" => a.severity.as_str()).increment(1);
            info!(
                alert_id = %a.id,
                rule = a.rule.as_str(),
                severity = a.severity.as_str(),
                status = a.status.as_str(),
                app_id = a.job.as_ref().map(|j| j.app_id.as_str()).unwrap_or("-"),
                job_id = a.job.as_ref().map(|j| j.job_id.as_str()).unwrap_or("-"),
                "alert: {}",
                a.summary
            );
            if let Some(events) = &self.events {
                let _ = events.send(Event::Alert {
                    summary: a.summary.clone(),
                    rule: a.rule,
                    severity: a.severity,
                    status: a.status,
                });
            }
        }
        self.wake.notify_one();
    }
}

/// Where an alert goes: the job's `notify` list, or every channel (also for api-wide alerts).
pub fn channels_for(job: Option<&JobConfig>, config: &Config) -> Vec<String> {
    match job.and_then(|j| j.notify.as_ref()) {
        Some(list) => list.clone(),
        None => config
            .notify
            .channel_names()
            .into_iter()
            .map(str::to_string)
            .collect(),
    }
}

/// The API's free-text `description`, unless it only repeats the state and stop reason shown
/// beside it (answers like "stopped: INTERNAL_ERROR" would print the reason twice).
pub fn informative_description<'a>(
    description: Option<&'a str>,
    state: &str,
    reason: Option<&str>,
) -> Option<&'a str> {
    let d = description.map(str::trim).filter(|d| !d.is_empty())?;
    let mut rest = d.to_ascii_lowercase();
    for known in std::iter::once(state).chain(reason) {
        rest = rest.replace(&known.to_ascii_lowercase(), " ");
    }
    rest.chars().any(char::is_alphanumeric).then_some(d)
}

pub fn job_facts(job: &JobConfig, snapshot: Option<&recwatch_rtc::model::JobSnapshot>) -> JobFacts {
    let mut f = JobFacts {
        app_id: job.app_id().to_owned(),
        job_id: job.job_id().to_owned(),
        name: job.name.clone(),
        ..Default::default()
    };
    if let Some(s) = snapshot {
        f.room_id = s.room_id.clone();
        f.user_id = s.user_id.clone();
        f.stream_name = s.stream_name.clone();
        f.state = s.state.as_ref().map(|x| x.as_str().to_string());
        f.stop_reason = s.stop_reason.as_ref().map(|x| x.as_str().to_string());
        f.description = s.description.clone();
        f.max_idle_time = s.max_idle_time;
        f.create_time = s.create_time.clone();
        f.start_time = s.start_time.clone();
        f.stop_time = s.stop_time.clone();
        f.update_time = s.update_time.clone();
    }
    f
}

/// One job's outcomes, owned, as the group writer hands them over: written like
/// [`Outbox::write_job_polls`], in a group with other jobs' when they wait together.
pub struct JobWrite {
    pub records: Vec<PollRecord>,
    pub job: JobConfig,
    /// See [`JobContext::in_init`].
    pub in_init: Option<std::time::Duration>,
    pub now: DateTime<Utc>,
    pub config: Arc<Config>,
}

/// Why one job's outcomes were not written, as the poller branches on it: try again
/// shortly ([`WriteError::is_locked`]), start the job over ([`WriteError::Panicked`]), or keep
/// the outcomes for the job's next write (anything else).
#[derive(Clone, Debug, thiserror::Error)]
pub enum WriteError {
    /// The database refused: the job's own error, or its group's, shared by every job of the
    /// group (a lock or a full disk refuses them all alike). Displays what it means for
    /// people (`describe_write_error`).
    #[error("{}", crate::store::describe_write_error(.0))]
    Store(Arc<StoreError>),
    /// Writing this job's outcomes panicked: they cannot be written as they are.
    #[error("writing this job's outcomes panicked: {0}")]
    Panicked(String),
    /// The group writer is gone (the poller is stopping).
    #[error("the database writer has stopped")]
    Stopped,
}

impl WriteError {
    /// Another process held the database's lock: worth trying again shortly, for a job
    /// written alone or in a group alike.
    pub fn is_locked(&self) -> bool {
        matches!(self, WriteError::Store(e) if matches!(**e, StoreError::Locked(_)))
    }
}

impl From<StoreError> for WriteError {
    fn from(e: StoreError) -> WriteError {
        WriteError::Store(Arc::new(e))
    }
}

impl Outbox {
    /// Writes a group in one transaction. If any part of it fails (a lock held by another
    /// process, a bad row), nothing of it is kept and each job is written on its own, so each
    /// gets its own answer.
    pub async fn write_group(
        &self,
        store: &Store,
        group: &[JobWrite],
    ) -> Vec<Result<(), WriteError>> {
        if group.len() > 1 {
            match crate::vitals::contain(self.try_group(store, group)).await {
                Ok(Ok((results, made))) => {
                    store.health().write_ok();
                    self.announce(&made);
                    return results;
                }
                // Locked by another process: each job on its own would wait out the busy
                // timeout again, one after the other. Every job is told the group's error
                // instead (a lock: its poll tries again shortly, as a job alone would), and
                // keeps its outcomes. The database itself refusing (full, read-only ...):
                // job by job would fail the same way.
                Ok(Err(e)) if e.is_database_wide() => {
                    store.health().write_failed(&e);
                    let shared = Arc::new(e);
                    return group
                        .iter()
                        .map(|_| Err(WriteError::Store(shared.clone())))
                        .collect();
                }
                Ok(Err(e)) => {
                    warn!("a grouped write failed, writing each job on its own: {e:#}");
                }
                Err(why) => {
                    error!(
                        jobs = group.len(),
                        "a grouped write panicked ({why}); writing each job on its own"
                    );
                }
            }
        }
        let mut results = Vec::with_capacity(group.len());
        for u in group {
            let ctx = JobContext {
                job: &u.job,
                in_init: u.in_init,
                now: u.now,
            };
            let write = self.write_job_polls(store, &u.records, &ctx, &u.config);
            let result = match crate::vitals::contain(write).await {
                Ok(Ok(())) => {
                    store.health().write_ok();
                    Ok(())
                }
                Ok(Err(e)) => {
                    if e.is_database_wide() {
                        store.health().write_failed(&e);
                    } else {
                        warn!(app_id = %u.job.app_id(), job_id = %u.job.job_id(), "cannot write the poll outcome: {e:#}");
                    }
                    Err(e.into())
                }
                Err(why) => {
                    error!(app_id = %u.job.app_id(), job_id = %u.job.job_id(), name = u.job.label(), "writing this job's poll outcome panicked: {why}");
                    metrics::counter!("recwatch_task_panics_total", "task" => "writer")
                        .increment(1);
                    // It may have panicked after its commit, before announcing the alerts:
                    // let the delivery worker look now, not at its next periodic check.
                    self.wake.notify_one();
                    Err(WriteError::Panicked(why))
                }
            };
            results.push(result);
        }
        results
    }

    async fn try_group(
        &self,
        store: &Store,
        group: &[JobWrite],
    ) -> Result<(Vec<Result<(), WriteError>>, Vec<Alert>), StoreError> {
        // No savepoint per job: any error rolls the whole group back (dropping `tx`) and the
        // caller writes each job on its own, which gives each its own outcome. Errors are rare;
        // two statements fewer per poll are not.
        let mut tx = store.begin_write().await?;
        let contexts: Vec<JobContext<'_>> = group
            .iter()
            .map(|u| JobContext {
                job: &u.job,
                in_init: u.in_init,
                now: u.now,
            })
            .collect();
        let jobs: Vec<(&[PollRecord], &JobContext<'_>, &Config)> = group
            .iter()
            .zip(&contexts)
            .map(|(u, ctx)| (u.records.as_slice(), ctx, &*u.config))
            .collect();
        let made = self.write_jobs_in(&mut tx, &jobs).await?;
        let results = group.iter().map(|_| Ok(())).collect();
        tx.commit().await?;
        Ok((results, made))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn down(reason: &str) -> ApiHealthChange {
        ApiHealthChange::Unhealthy {
            reason: reason.into(),
        }
    }

    #[test]
    fn owed_health_keeps_what_was_not_told_and_where_the_api_stands_table() {
        let up = ApiHealthChange::Recovered;
        let cases: Vec<(&str, Vec<ApiHealthChange>, Vec<ApiHealthChange>)> = vec![
            ("nothing owed", vec![], vec![]),
            ("an outage", vec![down("a")], vec![down("a")]),
            (
                "the recovery of an alerted outage",
                vec![up.clone()],
                vec![up.clone()],
            ),
            (
                "an outage over before the database took it is still told, then resolved",
                vec![down("a"), up.clone()],
                vec![down("a"), up.clone()],
            ),
            (
                "an alerted outage recovered and failed again: resolved, then a new episode",
                vec![up.clone(), down("b")],
                vec![up.clone(), down("b")],
            ),
            (
                "a flapping API folds into one outage that is still on",
                vec![down("a"), up.clone(), down("b"), up.clone(), down("c")],
                vec![down("a")],
            ),
            (
                "a flapping API folds into one outage, over",
                vec![down("a"), up.clone(), down("b"), up.clone()],
                vec![down("a"), up.clone()],
            ),
            (
                "a flapping recovery ends recovered: one resolution",
                vec![up.clone(), down("b"), up.clone()],
                vec![up.clone()],
            ),
            (
                "a flapping recovery ends down: resolved, then the newest outage",
                vec![up.clone(), down("b"), up.clone(), down("c")],
                vec![up.clone(), down("c")],
            ),
        ];
        for (name, pushed, want) in cases {
            let mut owed = OwedHealth::default();
            for c in pushed.clone() {
                owed.push(c);
            }
            let got: Vec<ApiHealthChange> = owed.changes().into_iter().cloned().collect();
            assert_eq!(got, want, "{name}");
            assert_eq!(owed.is_empty(), pushed.is_empty(), "{name}");
            owed.clear();
            assert!(owed.changes().is_empty(), "{name}: cleared");
        }
    }

    #[test]
    fn description_that_only_repeats_the_state_and_reason_is_left_out() {
        let cases = [
            (
                "state and reason",
                Some("stopped: INTERNAL_ERROR"),
                "STOPPED",
                Some("INTERNAL_ERROR"),
                None,
            ),
            ("state alone", Some("Stopped."), "STOPPED", None, None),
            ("empty", Some("  "), "STOPPED", None, None),
            ("none", None, "STOPPED", None, None),
            (
                "more than the reason",
                Some("stopped: INTERNAL_ERROR in the mixer"),
                "STOPPED",
                Some("INTERNAL_ERROR"),
                Some("stopped: INTERNAL_ERROR in the mixer"),
            ),
            (
                "another reason than the code",
                Some("stopped: disk full"),
                "STOPPED",
                Some("INTERNAL_ERROR"),
                Some("stopped: disk full"),
            ),
            (
                "a word for the state is information",
                Some("recording"),
                "RUNNING",
                None,
                Some("recording"),
            ),
        ];
        for (name, description, state, reason, want) in cases {
            assert_eq!(
                informative_description(description, state, reason),
                want,
                "{name}"
            );
        }
    }
}

#[cfg(test)]
mod state_machine_tests;
