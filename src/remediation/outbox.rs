//! The outbox's part of remediation (issue 15): on a death, decide (`remediation::rules`,
//! pure) and write the intent in the SAME transaction as the transition and its alert, so a
//! crash can neither lose it nor act on one death twice (`remediations.transition_id` is
//! unique). The POST itself is the remediation worker's (`crate::remediation`'s `worker.rs`).
//!
//! How the death's alert carries the outcome, durably: when an intent is written, the alert's
//! deliveries are held until +[`OUTCOME_WAIT`] (their `next_attempt_at`) and its payload says
//! `remediation: {action: "pending"}`. The worker, in the transaction that records the
//! outcome, rewrites the payload (and summary) and releases the deliveries at once, but only
//! while every delivery is still untouched and held past a margin
//! (`RemediationsTx::held_alert_payload`); otherwise the alert has gone (or is going) out as it was,
//! and the outcome becomes a follow-up alert of its own. Nothing lives in memory: a crash at
//! any point leaves either the held alert (sent at +5 s by any instance) or the outcome's own
//! alert in the database.

use crate::config::{Config, JobConfig};
use crate::domain::{
    Alert, AlertId, JobKey, Phase, RemediationAction, RemediationFacts, Rule, State, Status,
};
use crate::outbox::transition::Recorded;
use crate::outbox::{Outbox, account_of, channels_for, job_facts};
use crate::remediation::domain::RemediationState;
use crate::remediation::rules::{Remediation, RemediationInput, SkipReason, remediation};
use crate::rules::{self, chrono_saturating};
use crate::store::{NewRemediation, StoreError, WriteTx};
use chrono::{DateTime, Utc};
use recwatch_rtc::model::JobSnapshot;
use recwatch_rtc::{CreateRequest, Kind};
use std::time::Duration;
use tracing::{info, warn};

/// How long the death's alert waits for the remediation's outcome.
pub const OUTCOME_WAIT: Duration = Duration::from_secs(5);

/// What was decided about one death, before it is written.
pub(crate) struct Decided {
    decision: Remediation,
    lineage: String,
    kind: Kind,
}

impl Decided {
    /// What the death's alert says about it.
    pub(crate) fn facts(&self) -> RemediationFacts {
        let skipped = |reason: String| RemediationFacts {
            action: RemediationAction::Skipped,
            new_job_id: None,
            reason: Some(reason),
            error: None,
        };
        match &self.decision {
            Remediation::Recreate | Remediation::Leave => Decided::pending(),
            Remediation::Skip(why) => skipped(why.as_text()),
            Remediation::Exhausted => skipped("exhausted".into()),
        }
    }
}

impl Outbox {
    /// Whether and how to re-create `job`, which just changed to `to`; `None` when
    /// remediation leaves it alone (the common case costs no query).
    pub(crate) async fn decide_remediation(
        &self,
        tx: &mut WriteTx,
        job: &JobConfig,
        snapshot: &JobSnapshot,
        to: &Phase,
        config: &Config,
        now: DateTime<Utc>,
    ) -> Result<Option<Decided>, StoreError> {
        let r = &config.remediate;
        let listed = matches!(to.state, State::Stopped)
            && to.stop_reason.as_ref().is_some_and(|s| r.on.contains(s));
        let anyone = r.enabled || r.jobs.values().any(|on| *on) || r.apps.values().any(|on| *on);
        if !listed || !anyone {
            return Ok(None);
        }
        let lineage = tx
            .remediations()
            .lineage(job.app_id(), job.job_id())
            .await?;
        let key = JobKey::new(job.app_id(), job.job_id());
        let enabled = r.enabled_for(&key, &JobKey::new(job.app_id(), &lineage));
        let since = rules::checked_before(now, r.window).unwrap_or(DateTime::<Utc>::MIN_UTC);
        let restarts = tx
            .remediations()
            .lineage_restarts(job.app_id(), &lineage, since)
            .await?
            .clamp(0, u32::MAX as i64) as u32;
        // The kind the job is polled as (`[[jobs]] kind`, or learnt at discovery).
        let kind = job.kind;
        let rebuild = CreateRequest::from_snapshot(kind, snapshot)
            .map(|_| ())
            .map_err(|e| e.to_string());
        let decision = remediation(&RemediationInput {
            to,
            on: &r.on,
            enabled,
            dry_run: r.dry_run,
            restarts,
            max_restarts: r.max_restarts,
            rebuild,
        });
        Ok((decision != Remediation::Leave).then_some(Decided {
            decision,
            lineage,
            kind,
        }))
    }

    /// Writes what was decided about the death `t`: the intent (the death's alert,
    /// `alert_id`, held for its outcome), or the skip, with a `remediation_exhausted` alert
    /// when the bound was hit. Returns the alerts made.
    pub(crate) async fn write_remediation(
        &self,
        tx: &mut WriteTx,
        d: Decided,
        t: &Recorded<'_>,
        alert_id: Option<&AlertId>,
        config: &Config,
    ) -> Result<Vec<Alert>, StoreError> {
        let Some(id) = insert_intent(tx, &d, t, alert_id).await? else {
            // Written already: a replay of the same death.
            return Ok(Vec::new());
        };
        let Recorded { job, at: now, .. } = *t;
        let mut made = Vec::new();
        match &d.decision {
            Remediation::Recreate | Remediation::Leave => {
                if let Some(alert) = alert_id {
                    let until = rules::checked_after(now, OUTCOME_WAIT).unwrap_or(now);
                    tx.remediations()
                        .hold_deliveries(alert.as_str(), until)
                        .await?;
                }
                info!(app_id = %job.app_id(), job_id = %job.job_id(), remediation = id, "re-creating {} ({} job)", job.label(), d.kind);
            }
            Remediation::Skip(SkipReason::DryRun) => {
                info!(app_id = %job.app_id(), job_id = %job.job_id(), remediation = id, "dry run (remediate.dry_run): would re-create {} as a new {} job with its last parameters; nothing is sent", job.label(), d.kind);
                metrics::counter!("recwatch_remediations_total", "result" => "dry_run")
                    .increment(1);
            }
            Remediation::Skip(SkipReason::CannotRebuild(why)) => {
                warn!(app_id = %job.app_id(), job_id = %job.job_id(), remediation = id, "cannot re-create {}: {why}", job.label());
                metrics::counter!("recwatch_remediations_total", "result" => "cannot_rebuild")
                    .increment(1);
            }
            Remediation::Exhausted => {
                metrics::counter!("recwatch_remediations_total", "result" => "exhausted")
                    .increment(1);
                made.extend(self.write_exhausted(tx, &d, t, id, config).await?);
            }
        }
        Ok(made)
    }

    /// The `remediation_exhausted` alert of intent `id`, if the rule is on and the alert is
    /// not written already.
    async fn write_exhausted(
        &self,
        tx: &mut WriteTx,
        d: &Decided,
        t: &Recorded<'_>,
        id: i64,
        config: &Config,
    ) -> Result<Option<Alert>, StoreError> {
        let Recorded {
            transition_id,
            job,
            snapshot,
            at: now,
            ..
        } = *t;
        let Some(severity) = rules::severity(&config.rules, Rule::RemediationExhausted) else {
            return Ok(None);
        };
        let summary = format!(
            "{} died again after {} re-creations within {} (remediate.max_restarts): not re-created; check the app, the room and the record rule",
            job.label(),
            config.remediate.max_restarts,
            crate::config::format_duration(config.remediate.window)
        );
        let mut alert = self.alert(
            Status::Firing,
            Rule::RemediationExhausted,
            severity,
            summary,
            account_of(config, Some(job)),
            Some(job_facts(job, Some(snapshot))),
            None,
            now,
            config,
        );
        alert.remediation = Some(d.facts());
        let key = format!("r:{id}:exhausted");
        let inserted = tx
            .alerts()
            .insert(
                &alert,
                &key,
                Some(transition_id),
                None,
                channels_for(Some(job), config),
                now,
            )
            .await?;
        Ok(inserted.then_some(alert))
    }
}

/// The intent's row, in the state the decision puts it in; `None` when this death has one
/// already (`remediations.transition_id` is unique).
async fn insert_intent(
    tx: &mut WriteTx,
    d: &Decided,
    t: &Recorded<'_>,
    alert_id: Option<&AlertId>,
) -> Result<Option<i64>, StoreError> {
    let Recorded {
        transition_id,
        job,
        snapshot,
        raw,
        at: now,
        ..
    } = *t;
    let (state, reason) = match &d.decision {
        Remediation::Recreate | Remediation::Leave => (RemediationState::Pending, None),
        Remediation::Skip(why) => (RemediationState::Skipped, Some(why.as_text())),
        Remediation::Exhausted => (RemediationState::Skipped, Some("exhausted".to_string())),
    };
    tx.remediations()
        .insert(&NewRemediation {
            app_id: job.app_id(),
            old_job_id: job.job_id(),
            lineage: &d.lineage,
            kind: d.kind.as_str(),
            transition_id,
            alert_id: alert_id.map(AlertId::as_str),
            stop_reason: snapshot.stop_reason.as_ref().map(|s| s.as_str()),
            state,
            reason: reason.as_deref(),
            snapshot: raw,
            name: job.name.as_deref(),
            notify: job
                .notify
                .as_ref()
                .map(|n| serde_json::to_string(n).expect("strings serialize")),
            now,
        })
        .await
}

/// How a re-creation ended, as the worker learnt it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Created {
        new_job_id: String,
    },
    /// Refused (a 4xx), or retries that never got through: nothing was created.
    Failed {
        error: String,
    },
    /// A job may exist: a 5xx, a timeout, a connection lost after sending, a crash while
    /// posting.
    Unknown {
        error: String,
    },
}

impl Outcome {
    pub fn facts(&self) -> RemediationFacts {
        let (action, new_job_id, error) = match self {
            Outcome::Created { new_job_id } => {
                (RemediationAction::Recreated, Some(new_job_id.clone()), None)
            }
            Outcome::Failed { error } => (RemediationAction::Failed, None, Some(error.clone())),
            Outcome::Unknown { error } => (RemediationAction::Unknown, None, Some(error.clone())),
        };
        RemediationFacts {
            action,
            new_job_id,
            reason: None,
            error,
        }
    }

    pub fn state(&self) -> RemediationState {
        match self {
            Outcome::Created { .. } => RemediationState::Recreated,
            Outcome::Failed { .. } => RemediationState::Failed,
            Outcome::Unknown { .. } => RemediationState::Unknown,
        }
    }
}

/// A remediation whose outcome is being told: the dead job (as its intent kept it).
pub struct Told<'a> {
    pub id: i64,
    pub job: &'a JobConfig,
    pub snapshot: &'a JobSnapshot,
    /// The death's alert, completed while it is still held.
    pub alert_id: Option<&'a str>,
}

/// A delivery due within this margin may already be read by its lane: the outcome then goes
/// out as a follow-up rather than racing the send.
const HELD_MARGIN: chrono::Duration = chrono::Duration::seconds(1);

impl Outbox {
    /// Tells an outcome inside the caller's transaction (the one that records it): completes
    /// the death's alert while it is held, else (and always for an unknown outcome, which a
    /// human must act on) writes a notice of its own. Returns the alerts made.
    pub async fn tell_remediation(
        &self,
        tx: &mut WriteTx,
        told: &Told<'_>,
        outcome: &Outcome,
        config: &Config,
        now: DateTime<Utc>,
    ) -> Result<Vec<Alert>, StoreError> {
        let facts = outcome.facts();
        let completed = match told.alert_id {
            Some(alert_id) => complete_held(tx, alert_id, &facts, now).await?,
            None => false,
        };
        let rule = match outcome {
            Outcome::Unknown { .. } => Rule::RemediationFailed,
            _ if completed => return Ok(Vec::new()),
            Outcome::Created { .. } => Rule::Remediated,
            Outcome::Failed { .. } => Rule::RemediationFailed,
        };
        let Some(severity) = rules::severity(&config.rules, rule) else {
            return Ok(Vec::new());
        };
        let job = told.job;
        let summary = notice_summary(job, told.snapshot, outcome);
        let mut alert = self.alert(
            Status::Firing,
            rule,
            severity,
            summary,
            account_of(config, Some(job)),
            Some(job_facts(job, Some(told.snapshot))),
            None,
            now,
            config,
        );
        alert.remediation = Some(facts);
        let key = format!("r:{}:outcome", told.id);
        let mut made = Vec::new();
        if tx
            .alerts()
            .insert(
                &alert,
                &key,
                None,
                None,
                channels_for(Some(job), config),
                now,
            )
            .await?
        {
            made.push(alert);
        }
        Ok(made)
    }
}

/// The text of a remediation's own notice: what happened and, for an unknown outcome, what a
/// human must check.
fn notice_summary(job: &JobConfig, snapshot: &JobSnapshot, outcome: &Outcome) -> String {
    let room = snapshot.room_id.as_deref().unwrap_or("-");
    match outcome {
        Outcome::Created { new_job_id } => format!(
            "{} (job {}) was re-created as {new_job_id}; the new job is watched",
            job.label(),
            job.job_id()
        ),
        Outcome::Failed { error } => format!(
            "{} (job {}) died and its re-creation failed: {error}; nothing was created",
            job.label(),
            job.job_id()
        ),
        Outcome::Unknown { error } => format!(
            "{} (job {}) died and its re-creation's outcome is unknown ({error}): a billable recording job may exist. Check app {} room {room} in the RTC console for a job that replaced {} before starting one; recwatch will not send the create again",
            job.label(),
            job.job_id(),
            job.app_id(),
            job.job_id()
        ),
    }
}

/// Completes the death's alert with the outcome while it is still held (see the module's
/// doc); false when it may already be on its way.
async fn complete_held(
    tx: &mut WriteTx,
    alert_id: &str,
    facts: &RemediationFacts,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let cutoff = now + HELD_MARGIN;
    let made_after = cutoff - chrono_saturating(OUTCOME_WAIT);
    let Some(payload) = tx
        .remediations()
        .held_alert_payload(alert_id, made_after, cutoff)
        .await?
    else {
        return Ok(false);
    };
    let mut alert = match serde_json::from_str::<Alert>(&payload) {
        Ok(a) => a,
        Err(e) => {
            warn!(
                alert_id,
                "the death's alert cannot be read ({e}); the remediation's outcome goes out on its own"
            );
            return Ok(false);
        }
    };
    let pending = format!("; {}", Decided::pending().sentence());
    let base = alert
        .summary
        .strip_suffix(&pending)
        .unwrap_or(&alert.summary)
        .to_string();
    alert.summary = format!("{base}; {}", facts.sentence());
    alert.remediation = Some(facts.clone());
    tx.remediations()
        .complete_held_alert(
            alert_id,
            &serde_json::to_string(&alert)?,
            &alert.summary,
            now,
        )
        .await?;
    Ok(true)
}

impl Decided {
    fn pending() -> RemediationFacts {
        RemediationFacts {
            action: RemediationAction::Pending,
            new_job_id: None,
            reason: None,
            error: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{PollOutcome, PollRecord};
    use crate::outbox::JobContext;
    use crate::store::Store;

    fn config(remediate: &str) -> Config {
        let text = format!(
            r#"
[api.auth]
token = "t"

[[notify.webhook]]
name = "hook"
url = "http://127.0.0.1:9/hook"

[remediate]
{remediate}

[[jobs]]
app_id = "app"
job_id = "job"
name = "lobby"
"#
        );
        crate::config::parse_str(&text, Vec::<(String, String)>::new(), None).unwrap()
    }

    const RAW: &str = r#"{"job_id":"job","app_id":"app","state":"STOPPED","stop_reason":"INTERNAL_ERROR","room_id":"r1","user_id":"u1","record_param":{"record_rule_id":"rule"}}"#;

    /// The poll that shows `job` dead with INTERNAL_ERROR.
    fn death(at: DateTime<Utc>) -> PollRecord {
        let snapshot = recwatch_rtc::model::parse_job(RAW.as_bytes()).unwrap();
        PollRecord {
            app_id: "app".into(),
            job_id: "job".into(),
            name: Some("lobby".into()),
            kind: Kind::Individual,
            polled_at: at,
            outcome: PollOutcome::Ok {
                job: Box::new(snapshot),
                raw: RAW.into(),
                request_id: None,
                // First seen dead: the guarded write needs no earlier row.
                transition: Some((None, Phase::parse("STOPPED", Some("INTERNAL_ERROR")))),
            },
        }
    }

    async fn write_death(store: &Store, config: &Config, at: DateTime<Utc>) {
        let ctx = JobContext {
            job: &config.jobs[0],
            in_init: None,
            now: at,
        };
        Outbox::new()
            .write_job_polls(store, &[death(at)], &ctx, config)
            .await
            .unwrap();
    }

    async fn payloads(store: &Store) -> Vec<(String, Alert)> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT rule, payload FROM alerts ORDER BY rowid")
                .fetch_all(store.db().reader())
                .await
                .unwrap();
        rows.into_iter()
            .map(|(r, p)| (r, serde_json::from_str(&p).unwrap()))
            .collect()
    }

    async fn next_attempt(store: &Store) -> String {
        sqlx::query_scalar("SELECT next_attempt_at FROM deliveries")
            .fetch_one(store.db().reader())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn the_intent_is_written_with_the_death_and_the_outcome_completes_the_held_alert() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("r.db")).await.unwrap();
        let config = config("enabled = true");
        let t0 = Utc::now();
        write_death(&store, &config, t0).await;

        // One intent, pending, with the death's alert; the alert held 5 s and saying so.
        let due = store
            .remediations()
            .due(t0 + chrono::Duration::seconds(1), 10)
            .await
            .unwrap();
        assert_eq!(due.len(), 1);
        let row = &due[0];
        assert_eq!(
            (row.old_job_id.as_str(), row.lineage.as_str()),
            ("job", "job")
        );
        assert_eq!(row.state, RemediationState::Pending);
        assert_eq!(
            next_attempt(&store).await,
            crate::domain::timestamp(t0 + chrono::Duration::seconds(5))
        );
        let alerts = payloads(&store).await;
        assert_eq!(alerts.len(), 1);
        assert_eq!(
            alerts[0].1.remediation.as_ref().unwrap().action,
            RemediationAction::Pending
        );
        // A replay of the same death writes nothing more.
        write_death(&store, &config, t0).await;
        assert_eq!(store.remediations().list(10).await.unwrap().len(), 1);

        // The outcome within the wait: the alert says it and goes out now.
        assert!(store.remediations().mark_posting(row.id, t0).await.unwrap());
        let snapshot = recwatch_rtc::model::parse_job(RAW.as_bytes()).unwrap();
        let told = Told {
            id: row.id,
            job: &config.jobs[0],
            snapshot: &snapshot,
            alert_id: row.alert_id.as_deref(),
        };
        let outcome = Outcome::Created {
            new_job_id: "new-1".into(),
        };
        let now = t0 + chrono::Duration::seconds(2);
        let mut tx = store.begin_write().await.unwrap();
        let f = crate::store::Finished {
            state: outcome.state(),
            new_job_id: Some("new-1"),
            error: None,
            request_id: None,
            at: now,
        };
        assert!(tx.remediations().finish(row.id, &f).await.unwrap());
        let outbox = Outbox::new();
        let lanes = outbox.wake_handle();
        let made = outbox
            .tell_remediation(&mut tx, &told, &outcome, &config, now)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert!(
            made.is_empty(),
            "told in the death's alert, no notice of its own"
        );
        // The completed alert is due now: the lanes are woken, not left asleep until the
        // hold's end (a stored permit makes `notified` ready at its first poll).
        outbox.announce_committed(&made);
        assert!(
            tokio::time::timeout(std::time::Duration::ZERO, lanes.notified())
                .await
                .is_ok(),
            "the delivery lanes are woken"
        );
        let alerts = payloads(&store).await;
        let r = alerts[0].1.remediation.as_ref().unwrap();
        assert_eq!(r.action, RemediationAction::Recreated);
        assert_eq!(r.new_job_id.as_deref(), Some("new-1"));
        assert!(
            alerts[0].1.summary.ends_with("; re-created as new-1"),
            "{}",
            alerts[0].1.summary
        );
        assert_eq!(next_attempt(&store).await, crate::domain::timestamp(now));
        // The new job's lineage is the old one's.
        let mut tx = store.begin_write().await.unwrap();
        assert_eq!(
            tx.remediations().lineage("app", "new-1").await.unwrap(),
            "job"
        );
        assert_eq!(
            tx.remediations()
                .lineage_restarts("app", "job", t0)
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            tx.remediations()
                .lineage_restarts("app", "job", t0 + chrono::Duration::seconds(1))
                .await
                .unwrap(),
            0,
            "outside the window"
        );
        drop(tx);
        assert_eq!(
            store
                .remediations()
                .replacement_links("app", "job")
                .await
                .unwrap(),
            (None, Some("new-1".into()))
        );
    }

    #[tokio::test]
    async fn a_late_or_unknown_outcome_is_a_notice_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("r.db")).await.unwrap();
        let config = config("enabled = true");
        let t0 = Utc::now();
        write_death(&store, &config, t0).await;
        let row = store.remediations().list(1).await.unwrap().remove(0);
        let snapshot = recwatch_rtc::model::parse_job(RAW.as_bytes()).unwrap();
        let told = Told {
            id: row.id,
            job: &config.jobs[0],
            snapshot: &snapshot,
            alert_id: row.alert_id.as_deref(),
        };
        let cases = [
            (
                "late: the alert may be on its way",
                Outcome::Created {
                    new_job_id: "n".into(),
                },
                t0 + chrono::Duration::milliseconds(4500),
                Some(Rule::Remediated),
            ),
            (
                "unknown, even in time: a human must act",
                Outcome::Unknown {
                    error: "HTTP 500".into(),
                },
                t0,
                Some(Rule::RemediationFailed),
            ),
        ];
        for (name, outcome, now, want) in cases {
            let mut tx = store.begin_write().await.unwrap();
            let made = Outbox::new()
                .tell_remediation(&mut tx, &told, &outcome, &config, now)
                .await
                .unwrap();
            drop(tx);
            assert_eq!(made.first().map(|a| a.rule), want, "{name}");
            let a = &made[0];
            assert_eq!(a.remediation.as_ref().unwrap(), &outcome.facts(), "{name}");
            assert_eq!(
                a.job.as_ref().unwrap().job_id,
                "job",
                "{name}: about the same job"
            );
        }
    }

    #[tokio::test]
    async fn a_dry_run_is_said_at_once_never_pending_and_off_says_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("r.db")).await.unwrap();
        let dry = config("enabled = true\ndry_run = true");
        let t0 = Utc::now();
        write_death(&store, &dry, t0).await;
        let rows = store.remediations().list(10).await.unwrap();
        assert_eq!(rows[0].state, RemediationState::Skipped);
        assert_eq!(rows[0].reason.as_deref(), Some("dry_run"));
        assert!(
            store
                .remediations()
                .due(t0 + chrono::Duration::hours(1), 10)
                .await
                .unwrap()
                .is_empty()
        );
        let alerts = payloads(&store).await;
        assert_eq!(
            alerts[0].1.remediation.as_ref().unwrap().reason.as_deref(),
            Some("dry_run")
        );
        assert_eq!(
            next_attempt(&store).await,
            crate::domain::timestamp(t0),
            "not held"
        );

        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("r.db")).await.unwrap();
        let off = config("enabled = false");
        write_death(&store, &off, t0).await;
        assert!(
            store.remediations().list(10).await.unwrap().is_empty(),
            "off: nothing written"
        );
        assert!(
            payloads(&store).await[0].1.remediation.is_none(),
            "off: nothing said"
        );
    }
}
