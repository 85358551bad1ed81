//! What one recorded transition writes in its poll's transaction: its alert (the rule and
//! severity from `rules`, pure) and, on a death, the remediation's intent or why not
//! (`remediation.rs`), the alert held for the outcome.

use super::{Outbox, channels_for, informative_description, job_facts};
use crate::config::{Config, JobConfig};
use crate::domain::{Alert, Phase, Rule, State, Status, Timestamp, TransitionFacts};
use crate::remediation::outbox::Decided;
use crate::rules;
use crate::store::{StoreError, WriteTx};
use chrono::{DateTime, Utc};
use recwatch_rtc::model::JobSnapshot;

/// A transition just recorded (`transition_id`), with what its alert and remediation are
/// written from: the job, the answer that showed the change (parsed and `raw`), and when.
#[derive(Clone, Copy)]
pub(crate) struct Recorded<'a> {
    pub(crate) transition_id: i64,
    pub(crate) job: &'a JobConfig,
    pub(crate) snapshot: &'a JobSnapshot,
    pub(crate) raw: &'a str,
    pub(crate) request_id: &'a Option<String>,
    pub(crate) from: &'a Option<Phase>,
    pub(crate) to: &'a Phase,
    pub(crate) at: DateTime<Utc>,
}

impl Outbox {
    /// The transition's alert and remediation; returns the alerts made. The remediation is
    /// decided first: the alert says what it will be.
    pub(super) async fn write_transition(
        &self,
        tx: &mut WriteTx,
        t: &Recorded<'_>,
        config: &Config,
    ) -> Result<Vec<Alert>, StoreError> {
        let remediation = self
            .decide_remediation(tx, t.job, t.snapshot, t.to, config, t.at)
            .await?;
        let mut made = Vec::new();
        let mut alert_id = None;
        if let Some(alert) = self
            .write_transition_alert(tx, t, remediation.as_ref(), config)
            .await?
        {
            alert_id = Some(alert.id.clone());
            made.push(alert);
        }
        if let Some(d) = remediation {
            made.extend(
                self.write_remediation(tx, d, t, alert_id.as_ref(), config)
                    .await?,
            );
        }
        Ok(made)
    }

    /// The alert of the transition's rule, if the rule has one and it is on; `None` too when
    /// a replay finds it written already (its dedup key).
    async fn write_transition_alert(
        &self,
        tx: &mut WriteTx,
        t: &Recorded<'_>,
        remediation: Option<&Decided>,
        config: &Config,
    ) -> Result<Option<Alert>, StoreError> {
        let Some(rule) = rules::transition_rule(t.to) else {
            return Ok(None);
        };
        let Some(severity) = rules::severity(&config.rules, rule) else {
            return Ok(None);
        };
        let facts = job_facts(t.job, Some(t.snapshot));
        let mut summary = transition_summary(
            rule,
            t.job,
            t.to.stop_reason_str(),
            t.snapshot.description.as_deref(),
        );
        let told = remediation.map(|d| d.facts());
        if let Some(told) = &told {
            summary = format!("{summary}; {}", told.sentence());
        }
        let mut alert = self.alert(
            Status::Firing,
            rule,
            severity,
            summary,
            crate::outbox::account_of(config, Some(t.job)),
            Some(facts),
            Some(TransitionFacts {
                from: t.from.as_ref().map(|p| p.state.as_str().to_string()),
                to: t.to.state.as_str().to_string(),
                observed_at: Timestamp::from(t.at),
                request_id: t.request_id.clone(),
            }),
            t.at,
            config,
        );
        alert.remediation = told;
        let key = format!("t:{}:{}", t.transition_id, rule.as_str());
        let inserted = tx
            .alerts()
            .insert(
                &alert,
                &key,
                Some(t.transition_id),
                None,
                channels_for(Some(t.job), config),
                t.at,
            )
            .await?;
        Ok(inserted.then_some(alert))
    }
}

fn transition_summary(
    rule: Rule,
    job: &JobConfig,
    reason: Option<&str>,
    description: Option<&str>,
) -> String {
    let what = match rule {
        Rule::StoppedUnexpectedly => format!(
            "stopped unexpectedly ({})",
            reason.unwrap_or("no stop reason")
        ),
        Rule::IdleTimeout => {
            "stopped: nobody published for max_idle_time (EXCEED_MAX_IDLE_TIME)".to_string()
        }
        Rule::StoppedByTenant => "was stopped by the tenant (TENANT_STOP)".to_string(),
        _ => "changed".to_string(),
    };
    match informative_description(description, State::Stopped.as_str(), reason) {
        Some(d) => format!("{} {what}: {d}", job.label()),
        None => format!("{} {what}", job.label()),
    }
}
