//! A job's condition episodes (stuck_init, poll_failing, job_not_found) and the API's: each
//! condition decided from the latest outcome, then its episode opened, reminded or resolved
//! (`rules`, pure, says which) in the poll's transaction, with the alert each step makes.

use super::{JobContext, Outbox, channels_for, job_facts};
use crate::config::{Config, JobConfig};
use crate::domain::{
    Alert, EpisodeStep, ErrorKind, JobFacts, OpenEpisode, Rule, Status, timestamp,
};
use crate::domain::{PollOutcome, PollRecord};
use crate::rules;
use crate::store::{StoreError, WriteTx};
use chrono::{DateTime, Utc};

/// A condition of a job's latest outcome (or the API's), decided before its episode is read,
/// so that one poll's conditions read their episodes in one statement.
pub(super) struct Condition<'a> {
    rule: Rule,
    job: Option<&'a JobConfig>,
    /// Whether the condition holds now.
    active: bool,
    summary: String,
    facts: Option<JobFacts>,
}

impl Outbox {
    /// stuck_init, poll_failing and job_not_found for one job, from its latest outcome: each
    /// episode, read with the outcomes' recording (`open`, the rules of [`rules::job_condition_rules`]),
    /// is opened, reminded or resolved in that order.
    pub(super) async fn job_conditions(
        &self,
        tx: &mut WriteTx,
        last: &PollRecord,
        ctx: &JobContext<'_>,
        config: &Config,
        mut open: Vec<(Rule, crate::store::OpenEpisode)>,
    ) -> Result<Vec<Alert>, StoreError> {
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
        let mut conditions = Vec::with_capacity(3);
        if let Some(active) = stuck {
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
            conditions.push(Condition {
                rule: Rule::StuckInit,
                job: Some(ctx.job),
                active,
                summary,
                facts: Some(facts.clone()),
            });
        }
        conditions.extend(self.poll_failing(tx, last, ctx, &facts, config).await?);
        if let Some(active) = not_found {
            // Held back while the whole API is unhealthy: the outage, not the job, is the news.
            if !(active && self.api_unhealthy_for(&config.api.name)) {
                let summary = format!(
                    "{} is not found: the RTC API answers 404 / RTC.00001003 for app {} job {}",
                    ctx.job.label(),
                    ctx.job.app_id(),
                    ctx.job.job_id()
                );
                conditions.push(Condition {
                    rule: Rule::JobNotFound,
                    job: Some(ctx.job),
                    active,
                    summary,
                    facts: Some(facts),
                });
            }
        }
        let mut made = Vec::new();
        for c in conditions {
            let episode = open
                .iter()
                .position(|(rule, _)| *rule == c.rule)
                .map(|i| open.swap_remove(i).1);
            made.extend(self.episode_step(tx, c, episode, config, now).await?);
        }
        Ok(made)
    }

    /// poll_failing for one job, from its latest outcome and the failures in a row its row
    /// counts ([`rules::poll_failing`] decides); `None` when it says nothing.
    async fn poll_failing<'a>(
        &self,
        tx: &mut WriteTx,
        last: &PollRecord,
        ctx: &JobContext<'a>,
        facts: &JobFacts,
        config: &Config,
    ) -> Result<Option<Condition<'a>>, StoreError> {
        // Off: no read for it either (every failed poll would pay one).
        if config.rules.poll_failing.is_none() {
            return Ok(None);
        }
        let streak = match &last.outcome {
            PollOutcome::Failed { .. } => {
                tx.jobs()
                    .consecutive_failures(&last.app_id, &last.job_id)
                    .await?
            }
            PollOutcome::Ok { .. } => 0,
        };
        let after = config.rules.poll_failing_after;
        let Some(active) = rules::poll_failing(
            &last.outcome,
            streak,
            after,
            self.api_unhealthy_for(&config.api.name),
        ) else {
            return Ok(None);
        };
        let error = match &last.outcome {
            PollOutcome::Failed { error, .. } => error.as_str(),
            PollOutcome::Ok { .. } => "",
        };
        let summary = format!(
            "{} cannot be read: its last {streak} polls failed while the RTC API answers other jobs; the last: {error}",
            ctx.job.label()
        );
        Ok(Some(Condition {
            rule: Rule::PollFailing,
            job: Some(ctx.job),
            active,
            summary,
            facts: Some(facts.clone()),
        }))
    }

    /// Opens, reminds or resolves the api_unhealthy episode of `config`'s account
    /// (`config.api`), read here. `active` says whether the condition holds now. An
    /// account-wide episode is keyed by the account's name (app_id '', job_id the name).
    pub(super) async fn account_condition(
        &self,
        tx: &mut WriteTx,
        active: bool,
        summary: &str,
        config: &Config,
        now: DateTime<Utc>,
    ) -> Result<Vec<Alert>, StoreError> {
        let rule = Rule::ApiUnhealthy;
        // Off: no read for it either.
        if rules::severity(&config.rules, rule).is_none() {
            return Ok(Vec::new());
        }
        let open = tx.episodes().find_open(rule, "", &config.api.name).await?;
        let c = Condition {
            rule,
            job: None,
            active,
            summary: summary.to_string(),
            facts: None,
        };
        self.episode_step(tx, c, open, config, now).await
    }

    /// The step of condition `c` whose episode the database holds `open` (read by the caller
    /// in this transaction): opens, reminds or resolves it, with its alert.
    async fn episode_step(
        &self,
        tx: &mut WriteTx,
        c: Condition<'_>,
        open: Option<crate::store::OpenEpisode>,
        config: &Config,
        now: DateTime<Utc>,
    ) -> Result<Vec<Alert>, StoreError> {
        let Condition {
            rule,
            job,
            active,
            summary,
            facts,
        } = c;
        let summary = summary.as_str();
        let Some(severity) = rules::severity(&config.rules, rule) else {
            return Ok(Vec::new());
        };
        // An account-wide condition's episode is the account's (see `account_condition`).
        let (app_id, job_id) = job
            .map(|j| (j.app_id(), j.job_id()))
            .unwrap_or(("", &*config.api.name));
        let open = open.map(|row| OpenEpisode {
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
                    .episodes()
                    .insert(rule, app_id, job_id, summary, &at)
                    .await?;
                Some((id, Status::Firing, summary.to_string()))
            }
            EpisodeStep::Remind { id, n } => {
                tx.episodes().remind(id, &at, n).await?;
                Some((id, Status::Firing, format!("still: {summary}")))
            }
            EpisodeStep::Resolve { id, notify } => {
                tx.episodes().resolve(id, &at).await?;
                notify.then_some((id, Status::Resolved, resolved(rule, job, config)))
            }
            EpisodeStep::Nothing => None,
        };
        let mut made = Vec::new();
        if let (Some((id, status, summary)), Some(step)) = (step, decided.key()) {
            let account = crate::outbox::account_of(config, job);
            let alert = self.alert(
                status, rule, severity, summary, account, facts, None, now, config,
            );
            let key = format!("e:{id}:{step}");
            if tx
                .alerts()
                .insert(&alert, &key, None, Some(id), channels, now)
                .await?
            {
                made.push(alert);
            }
        }
        Ok(made)
    }
}

/// What a resolved condition's notice says.
fn resolved(rule: Rule, job: Option<&JobConfig>, config: &Config) -> String {
    let label = job.map(|j| j.label()).unwrap_or("job");
    match rule {
        Rule::StuckInit => format!("{label} is no longer stuck in INIT"),
        Rule::JobNotFound => format!("{label} is found again"),
        Rule::PollFailing => format!("{label} is read again"),
        _ => format!(
            "the RTC API{} answers normally again",
            super::of_account(config)
        ),
    }
}
