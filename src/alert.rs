//! What an alert is: the rule that fired, how loud, about which job and transition, and the
//! JSON payload (version 1) that every channel renders from.
//!
//! An alert is created once, in the same SQLite transaction as the transition or condition
//! that caused it, and keeps its id for life: the id is the webhook-id and the email's
//! Message-ID seed, so a receiver can de-duplicate a delivery that a crash made us repeat.

use crate::config::Severity;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The payload's schema version; bump it on any incompatible change.
pub const PAYLOAD_VERSION: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    StoppedUnexpectedly,
    IdleTimeout,
    StoppedByTenant,
    StuckInit,
    JobNotFound,
    ApiUnhealthy,
    /// Sent by `recwatch test-alert`; never created by polling.
    Test,
}

impl Rule {
    pub const ALL: [Rule; 6] = [
        Rule::StoppedUnexpectedly,
        Rule::IdleTimeout,
        Rule::StoppedByTenant,
        Rule::StuckInit,
        Rule::JobNotFound,
        Rule::ApiUnhealthy,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Rule::StoppedUnexpectedly => "stopped_unexpectedly",
            Rule::IdleTimeout => "idle_timeout",
            Rule::StoppedByTenant => "stopped_by_tenant",
            Rule::StuckInit => "stuck_init",
            Rule::JobNotFound => "job_not_found",
            Rule::ApiUnhealthy => "api_unhealthy",
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
            Rule::Test => "A test notification sent by `recwatch test-alert`. Nothing is wrong.",
        }
    }

    /// Conditions last a while and resolve; transitions happen once.
    pub fn is_condition(self) -> bool {
        matches!(
            self,
            Rule::StuckInit | Rule::JobNotFound | Rule::ApiUnhealthy
        )
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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

/// Every fact about the job the alert is about, as the API last reported it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobFacts {
    pub app_id: String,
    pub job_id: String,
    pub name: Option<String>,
    pub room_id: Option<String>,
    pub user_id: Option<String>,
    pub stream_name: Option<String>,
    pub state: Option<String>,
    pub stop_reason: Option<String>,
    pub description: Option<String>,
    pub max_idle_time: Option<u64>,
    pub create_time: Option<String>,
    pub start_time: Option<String>,
    pub stop_time: Option<String>,
    pub update_time: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransitionFacts {
    pub from: Option<String>,
    pub to: String,
    pub observed_at: String,
    /// The X-request-Id of the API answer that showed the change: what the provider's support
    /// asks for. Null when the API sent none (and in payloads stored before it was kept).
    #[serde(default)]
    pub request_id: Option<String>,
}

/// The webhook body, and the facts every other channel renders. Field order is the wire order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    pub version: u32,
    pub id: String,
    pub status: Status,
    pub rule: Rule,
    pub severity: Severity,
    pub summary: String,
    /// Absent for api-wide alerts (api_unhealthy).
    pub job: Option<JobFacts>,
    pub transition: Option<TransitionFacts>,
    pub fired_at: String,
    /// The host whose recwatch saw it.
    pub host: String,
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

/// RFC 3339 in UTC with milliseconds, the format the API itself uses.
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// This machine's name for alerts; falls back to "unknown" rather than failing an alert.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

impl Alert {
    /// The job's label: its name, else its id; "the RTC API" for api-wide alerts.
    pub fn subject_label(&self) -> String {
        match &self.job {
            Some(j) => match &j.name {
                Some(n) => format!("{n} ({})", j.job_id),
                None => j.job_id.clone(),
            },
            None => "the RTC API".into(),
        }
    }
}

/// The alert `recwatch test-alert` sends: every field filled, so a receiver sees the shape.
pub fn test_alert() -> Alert {
    let now = chrono::Utc::now();
    Alert {
        version: PAYLOAD_VERSION,
        id: crate::outbox::new_alert_id(),
        status: Status::Firing,
        rule: Rule::Test,
        severity: Severity::Info,
        summary: "recwatch test notification: if you can read this, the channel works".into(),
        job: Some(JobFacts {
            app_id: "test-app".into(),
            job_id: "test-job".into(),
            name: Some("test notification".into()),
            room_id: Some("test-room".into()),
            user_id: Some("test-user".into()),
            stream_name: Some("test-stream".into()),
            state: Some("STOPPED".into()),
            stop_reason: Some("INTERNAL_ERROR".into()),
            description: Some("not a real job".into()),
            max_idle_time: Some(30),
            create_time: Some(timestamp(now)),
            start_time: Some(timestamp(now)),
            stop_time: Some(timestamp(now)),
            update_time: Some(timestamp(now)),
        }),
        transition: Some(TransitionFacts {
            from: Some("RUNNING".into()),
            to: "STOPPED".into(),
            observed_at: timestamp(now),
            request_id: Some("test-request-id".into()),
        }),
        fired_at: timestamp(now),
        host: hostname(),
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
    fn payload_has_the_documented_shape() {
        let a = Alert {
            version: PAYLOAD_VERSION,
            id: "a1".into(),
            status: Status::Firing,
            rule: Rule::IdleTimeout,
            severity: Severity::Warning,
            summary: "s".into(),
            job: Some(JobFacts {
                app_id: "app".into(),
                job_id: "job".into(),
                ..Default::default()
            }),
            transition: Some(TransitionFacts {
                from: None,
                to: "STOPPED".into(),
                observed_at: "t".into(),
                request_id: Some("req-1".into()),
            }),
            fired_at: "t".into(),
            host: "h".into(),
        };
        let v = serde_json::to_value(&a).unwrap();
        for key in [
            "version",
            "id",
            "status",
            "rule",
            "severity",
            "summary",
            "job",
            "transition",
            "fired_at",
        ] {
            assert!(v.get(key).is_some(), "{key}");
        }
        assert_eq!(v["status"], "firing");
        assert_eq!(v["rule"], "idle_timeout");
        assert_eq!(v["severity"], "warning");
        assert_eq!(v["transition"]["from"], serde_json::Value::Null);
        assert_eq!(v["transition"]["request_id"], "req-1");
        for key in [
            "app_id",
            "job_id",
            "name",
            "room_id",
            "user_id",
            "stream_name",
            "state",
            "stop_reason",
            "description",
            "max_idle_time",
            "create_time",
            "start_time",
            "stop_time",
            "update_time",
        ] {
            assert!(v["job"].get(key).is_some(), "job.{key}");
        }
        let back: Alert = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(back, a);
        // A payload frozen before request_id existed still reads.
        let mut old = v;
        old["transition"]
            .as_object_mut()
            .unwrap()
            .remove("request_id");
        let back: Alert = serde_json::from_value(old).unwrap();
        assert_eq!(back.transition.unwrap().request_id, None);
    }
}
