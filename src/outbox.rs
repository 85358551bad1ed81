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
    Alert, AlertId, EpisodeStep, ErrorKind, JobFacts, OpenEpisode, PAYLOAD_VERSION, Rule, Severity,
    Status, TransitionFacts, hostname, timestamp,
};
use crate::domain::{Phase, Timestamp};
use crate::domain::{PollOutcome, PollRecord};
use crate::rules;
use crate::store::{Store, StoreError, WriteTx};
use chrono::{DateTime, Utc};
use recwatch_rtc::client::RtcError;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::{Notify, broadcast};
use tracing::{error, info, warn};

pub mod remediation;
mod transition;
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
    /// While the API is unhealthy, per-job conditions that the same outage causes are held
    /// back: one alert, not one per job.
    api_unhealthy: Arc<AtomicBool>,
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
            api_unhealthy: Arc::new(AtomicBool::new(false)),
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

    /// Sets the flag at once; the episode itself is written by `api_health`.
    pub fn set_api_unhealthy(&self, unhealthy: bool) {
        self.api_unhealthy.store(unhealthy, Ordering::Relaxed);
    }

    pub fn api_unhealthy(&self) -> bool {
        self.api_unhealthy.load(Ordering::Relaxed)
    }

    /// Restores the api_unhealthy flag from an episode left open by a previous run.
    pub async fn restore(&self, store: &Store) -> anyhow::Result<()> {
        let open = store.episode_open(Rule::ApiUnhealthy).await?;
        self.api_unhealthy.store(open, Ordering::Relaxed);
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
            .write_job_polls_in(&mut tx, records, ctx, config)
            .await?;
        tx.commit().await?;
        self.announce(&made);
        Ok(())
    }

    /// The body of [`Outbox::write_job_polls`] inside the caller's transaction; returns the
    /// alerts made, to announce once committed. Each transition's alert and remediation are
    /// written with it (`transition.rs`), the job's conditions from its latest outcome.
    async fn write_job_polls_in(
        &self,
        tx: &mut WriteTx,
        records: &[PollRecord],
        ctx: &JobContext<'_>,
        config: &Config,
    ) -> Result<Vec<Alert>, StoreError> {
        let mut made = Vec::new();
        for r in records {
            let transition_id = tx.record_poll(r).await?;
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
            made.extend(self.job_conditions(tx, last, ctx, config).await?);
        }
        Ok(made)
    }

    /// stuck_init and job_not_found for one job, from its latest outcome.
    async fn job_conditions(
        &self,
        tx: &mut WriteTx,
        last: &PollRecord,
        ctx: &JobContext<'_>,
        config: &Config,
    ) -> Result<Vec<Alert>, StoreError> {
        let mut made = Vec::new();
        let now = last.polled_at;
        let (stuck, not_found, snapshot) = match &last.outcome {
            PollOutcome::Ok { job, .. } => {
                let stuck = rules::snapshot_stuck_init(job, ctx.in_init, config.rules.init_grace);
                (stuck, Some(false), Some(job.as_ref()))
            }
            PollOutcome::Failed {
                kind: ErrorKind::NotFound,
                ..
            } => (None, Some(true), None),
            PollOutcome::Failed { .. } => (None, None, None),
        };
        let facts = job_facts(ctx.job, snapshot);
        if let Some(open) = stuck {
            let summary = format!(
                "{} has been in INIT for longer than its max_idle_time ({}) plus {} grace: the recorder never started",
                ctx.job.label(),
                crate::config::format_duration(std::time::Duration::from_secs(
                    snapshot
                        .and_then(|j| j.max_idle_time)
                        .unwrap_or(rules::DEFAULT_MAX_IDLE_TIME)
                )),
                crate::config::format_duration(config.rules.init_grace)
            );
            made.extend(
                self.condition(
                    tx,
                    Rule::StuckInit,
                    Some(ctx.job),
                    open,
                    &summary,
                    Some(facts.clone()),
                    config,
                    now,
                )
                .await?,
            );
        }
        made.extend(self.poll_failing(tx, last, ctx, &facts, config).await?);
        if let Some(open) = not_found {
            // Held back while the whole API is unhealthy: the outage, not the job, is the news.
            if !(open && self.api_unhealthy()) {
                let summary = format!(
                    "{} is not found: the RTC API answers 404 / RTC.00001003 for app {} job {}",
                    ctx.job.label(),
                    ctx.job.app_id(),
                    ctx.job.job_id()
                );
                made.extend(
                    self.condition(
                        tx,
                        Rule::JobNotFound,
                        Some(ctx.job),
                        open,
                        &summary,
                        Some(facts),
                        config,
                        now,
                    )
                    .await?,
                );
            }
        }
        Ok(made)
    }

    /// poll_failing for one job, from its latest outcome and the failures in a row its row
    /// counts ([`rules::poll_failing`] decides).
    async fn poll_failing(
        &self,
        tx: &mut WriteTx,
        last: &PollRecord,
        ctx: &JobContext<'_>,
        facts: &JobFacts,
        config: &Config,
    ) -> Result<Vec<Alert>, StoreError> {
        // Off: no read for it either (every failed poll would pay one).
        if config.rules.poll_failing.is_none() {
            return Ok(Vec::new());
        }
        let streak = match &last.outcome {
            PollOutcome::Failed { .. } => {
                tx.consecutive_failures(&last.app_id, &last.job_id).await?
            }
            PollOutcome::Ok { .. } => 0,
        };
        let after = config.rules.poll_failing_after;
        let Some(active) = rules::poll_failing(&last.outcome, streak, after, self.api_unhealthy())
        else {
            return Ok(Vec::new());
        };
        let error = match &last.outcome {
            PollOutcome::Failed { error, .. } => error.as_str(),
            PollOutcome::Ok { .. } => "",
        };
        let summary = format!(
            "{} cannot be read: its last {streak} polls failed while the RTC API answers other jobs; the last: {error}",
            ctx.job.label()
        );
        self.condition(
            tx,
            Rule::PollFailing,
            Some(ctx.job),
            active,
            &summary,
            Some(facts.clone()),
            config,
            last.polled_at,
        )
        .await
    }

    /// Opens, reminds or resolves a condition episode. `active` says whether the condition
    /// holds now.
    #[allow(clippy::too_many_arguments)]
    async fn condition(
        &self,
        tx: &mut WriteTx,
        rule: Rule,
        job: Option<&JobConfig>,
        active: bool,
        summary: &str,
        facts: Option<JobFacts>,
        config: &Config,
        now: DateTime<Utc>,
    ) -> Result<Vec<Alert>, StoreError> {
        let Some(severity) = rules::severity(&config.rules, rule) else {
            return Ok(Vec::new());
        };
        let (app_id, job_id) = job.map(|j| (j.app_id(), j.job_id())).unwrap_or(("", ""));
        let open = tx
            .open_episode(rule, app_id, job_id)
            .await?
            .map(|row| OpenEpisode {
                id: row.id,
                last_notified: row.last_notified_at.to_datetime(),
                reminders: row.reminders,
            });
        let channels = channels_for(job, config);
        let at = timestamp(now);
        let decided = rules::episode_step(
            open.as_ref(),
            active,
            config.rules.repeat_interval,
            config.rules.send_resolved,
            now,
        );
        // Write the step, and say which alert it makes, if any: (episode id, status, summary).
        let step = match decided {
            EpisodeStep::Open => {
                let id = tx
                    .insert_episode(rule, app_id, job_id, summary, &at)
                    .await?;
                Some((id, Status::Firing, summary.to_string()))
            }
            EpisodeStep::Remind { id, n } => {
                tx.remind_episode(id, &at, n).await?;
                Some((id, Status::Firing, format!("still: {summary}")))
            }
            EpisodeStep::Resolve { id, notify } => {
                tx.resolve_episode(id, &at).await?;
                let label = job.map(|j| j.label()).unwrap_or("job");
                let resolved = match rule {
                    Rule::StuckInit => format!("{label} is no longer stuck in INIT"),
                    Rule::JobNotFound => format!("{label} is found again"),
                    Rule::PollFailing => format!("{label} is read again"),
                    _ => "the RTC API answers normally again".to_string(),
                };
                notify.then_some((id, Status::Resolved, resolved))
            }
            EpisodeStep::Nothing => None,
        };
        let mut made = Vec::new();
        if let (Some((id, status, summary)), Some(step)) = (step, decided.key()) {
            let alert = self.alert(status, rule, severity, summary, facts, None, now, config);
            let key = format!("e:{id}:{step}");
            if tx
                .insert_alert(&alert, &key, None, Some(id), channels, now)
                .await?
            {
                made.push(alert);
            }
        }
        Ok(made)
    }

    /// Says at once that the API's health changed (the log and the flag that holds per-job
    /// alerts back); the episode itself is written by [`Outbox::write_api_health`], which
    /// may have to wait for the database.
    pub fn note_api_health(&self, change: &ApiHealthChange) {
        match change {
            ApiHealthChange::Unhealthy { reason } => {
                error!(
                    "the RTC API is unhealthy: {reason}; per-job not-found alerts are held back until it recovers"
                );
                self.api_unhealthy.store(true, Ordering::Relaxed);
            }
            ApiHealthChange::Recovered => {
                info!("the RTC API answers normally again");
                self.api_unhealthy.store(false, Ordering::Relaxed);
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
        self.note_api_health(&change);
        let mut owed = OwedHealth::default();
        owed.push(change);
        self.write_api_health(store, &owed, config).await
    }

    /// Writes the owed changes of the API's health (opens or resolves the api_unhealthy
    /// episode, with their alerts) in one transaction: all of them or, on an error, none, so
    /// the caller keeps them owed and tries again.
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
                ApiHealthChange::Unhealthy { reason } => {
                    (true, format!("the RTC API is unhealthy: {reason}"))
                }
                ApiHealthChange::Recovered => (false, String::new()),
            };
            made.extend(
                self.condition(
                    &mut tx,
                    Rule::ApiUnhealthy,
                    None,
                    active,
                    &summary,
                    None,
                    config,
                    now,
                )
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
        if !self.api_unhealthy() {
            return Ok(());
        }
        let mut tx = store.begin_write().await?;
        let made = self
            .condition(
                &mut tx,
                Rule::ApiUnhealthy,
                None,
                true,
                "the RTC API is still unhealthy",
                None,
                config,
                Utc::now(),
            )
            .await?;
        tx.commit().await?;
        self.announce(&made);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn alert(
        &self,
        status: Status,
        rule: Rule,
        severity: Severity,
        summary: String,
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
            job,
            transition,
            fired_at: Timestamp::from(now),
            host: self.host.to_string(),
            job_url,
            remediation: None,
        }
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
        let mut made = Vec::new();
        for u in group {
            let ctx = JobContext {
                job: &u.job,
                in_init: u.in_init,
                now: u.now,
            };
            made.extend(
                self.write_job_polls_in(&mut tx, &u.records, &ctx, &u.config)
                    .await?,
            );
        }
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
