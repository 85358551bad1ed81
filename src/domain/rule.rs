//! The alert rules, how loud each is, and whether an alert says a problem fires or resolved.
//! Their text (`as_str`) is what the database, the JSON payload and the metric labels hold,
//! so it never changes.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Stored as its text (`sqlx::Type`): a text this build does not know fails the row's read,
/// naming the column and the value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "TEXT", rename_all = "snake_case")]
pub enum Rule {
    StoppedUnexpectedly,
    IdleTimeout,
    StoppedByTenant,
    StuckInit,
    JobNotFound,
    ApiUnhealthy,
    /// One job's own polls keep failing (`rules.poll_failing_after` in a row) while the API
    /// answers the others: that job is blind.
    PollFailing,
    /// A lineage was re-created `remediate.max_restarts` times within the window and died
    /// again: not re-created.
    RemediationExhausted,
    /// A re-creation was refused, or its outcome is unknown (a billable job may exist).
    RemediationFailed,
    /// A re-creation told on its own, after the death's alert had gone out.
    Remediated,
    /// Sent by `recwatch test-alert`; never created by polling.
    Test,
}

impl Rule {
    pub const ALL: [Rule; 10] = [
        Rule::StoppedUnexpectedly,
        Rule::IdleTimeout,
        Rule::StoppedByTenant,
        Rule::StuckInit,
        Rule::JobNotFound,
        Rule::ApiUnhealthy,
        Rule::PollFailing,
        Rule::RemediationExhausted,
        Rule::RemediationFailed,
        Rule::Remediated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Rule::StoppedUnexpectedly => "stopped_unexpectedly",
            Rule::IdleTimeout => "idle_timeout",
            Rule::StoppedByTenant => "stopped_by_tenant",
            Rule::StuckInit => "stuck_init",
            Rule::JobNotFound => "job_not_found",
            Rule::ApiUnhealthy => "api_unhealthy",
            Rule::PollFailing => "poll_failing",
            Rule::RemediationExhausted => "remediation_exhausted",
            Rule::RemediationFailed => "remediation_failed",
            Rule::Remediated => "remediated",
            Rule::Test => "test",
        }
    }

    pub fn parse(s: &str) -> Option<Rule> {
        Rule::ALL
            .into_iter()
            .chain([Rule::Test])
            .find(|r| r.as_str() == s)
    }

    /// What the rule means, for the operator reading an email at 3 a.m.
    pub fn meaning(self) -> &'static str {
        match self {
            Rule::StoppedUnexpectedly => {
                "The recording job stopped without the tenant asking it to (INTERNAL_ERROR, an unknown stop reason, or none). The stream is no longer being recorded: check the job's description, then start a new recording job if the stream is still live."
            }
            Rule::IdleTimeout => {
                "The recorder stopped because nobody published to the stream for max_idle_time seconds (EXCEED_MAX_IDLE_TIME). If the publisher was expected to be live, check it and start a new recording job."
            }
            Rule::StoppedByTenant => {
                "The recording job was stopped by the tenant's own stop call (TENANT_STOP). This is usually intended."
            }
            Rule::StuckInit => {
                "The recording job has stayed in INIT longer than its max_idle_time plus the configured grace period: the recorder never started. Check that the stream is published and the record rule is valid."
            }
            Rule::JobNotFound => {
                "The RTC service answers that this app or job does not exist (RTC.00001003). The job id on the watch list may be wrong, or the job was deleted."
            }
            Rule::ApiUnhealthy => {
                "recwatch cannot poll the RTC API: the credentials were refused, or every poll fails (the endpoint redirects or does not have the API, the service errs or cannot be reached). While this lasts, job changes are not seen. The summary says what the API answered and what to check: the credentials, the endpoint, the network or the system clock."
            }
            Rule::PollFailing => {
                "recwatch cannot read this job: its own polls have failed rules.poll_failing_after times in a row (a 500 for this job only, an answer that is not its record) while the RTC API answers the other jobs. Until it reads again, a change of this job (its death) is not seen: check the job in the RTC console and the error in the summary."
            }
            Rule::RemediationExhausted => {
                "recwatch re-created this recording remediate.max_restarts times within remediate.window and it died again, so it was not re-created this time. Something keeps killing it: check the app, the room and the record rule in the RTC console, then start a recording by hand if it is still wanted."
            }
            Rule::RemediationFailed => {
                "recwatch tried to re-create a dead recording and the API refused it (the app deactivated, the record rule gone...), or the outcome is unknown: recwatch stopped (or the API timed out or failed) between sending the create and reading its answer. A billable recording job may exist: check the app's recording jobs in the RTC console for the room before starting one by hand. recwatch never sends the create again by itself."
            }
            Rule::Remediated => {
                "recwatch re-created a dead recording (remediate); this notice came after the death's own alert. The new job is watched."
            }
            Rule::Test => "A test notification sent by `recwatch test-alert`. Nothing is wrong.",
        }
    }

    /// Conditions last a while and resolve; transitions happen once.
    pub fn is_condition(self) -> bool {
        matches!(
            self,
            Rule::StuckInit | Rule::JobNotFound | Rule::ApiUnhealthy | Rule::PollFailing
        )
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "TEXT", rename_all = "snake_case")]
pub enum Status {
    Firing,
    Resolved,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Firing => "firing",
            Status::Resolved => "resolved",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How loud a rule is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, sqlx::Type)]
#[sqlx(type_name = "TEXT", rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
    pub fn parse(s: &str) -> Option<Severity> {
        match s {
            "info" => Some(Severity::Info),
            "warning" => Some(Severity::Warning),
            "critical" => Some(Severity::Critical),
            _ => None,
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Severity {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Severity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Severity::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown severity {s:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_names_round_trip() {
        for r in Rule::ALL {
            assert_eq!(Rule::parse(r.as_str()), Some(r));
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
    }

    #[test]
    fn severity_and_status_text_table() {
        let severities = [
            ("info", Severity::Info),
            ("warning", Severity::Warning),
            ("critical", Severity::Critical),
        ];
        for (text, sev) in severities {
            assert_eq!(sev.as_str(), text, "{text}");
            assert_eq!(Severity::parse(text), Some(sev), "{text}");
            assert_eq!(serde_json::to_value(sev).unwrap(), text, "{text}");
            let back: Severity = serde_json::from_value(text.into()).unwrap();
            assert_eq!(back, sev, "{text}");
        }
        let bad = serde_json::from_value::<Severity>("loud".into()).unwrap_err();
        assert!(
            bad.to_string().contains("unknown severity \"loud\""),
            "{bad}"
        );
        assert_eq!(
            Severity::parse("Critical"),
            None,
            "config values are lower case"
        );
        assert!(Severity::Info < Severity::Warning && Severity::Warning < Severity::Critical);
        for (text, status) in [("firing", Status::Firing), ("resolved", Status::Resolved)] {
            assert_eq!(status.as_str(), text, "{text}");
            assert_eq!(serde_json::to_value(status).unwrap(), text, "{text}");
        }
    }
}
