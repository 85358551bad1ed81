//! What an alert is: the rule that fired, how loud, about which job and transition, and the
//! JSON payload (version 1) that every channel renders from.
//!
//! An alert is created once, in the same SQLite transaction as the transition or condition
//! that caused it, and keeps its id for life: the id is the webhook-id and the email's
//! Message-ID seed, so a receiver can de-duplicate a delivery that a crash made us repeat.

use super::rule::{Rule, Severity, Status};
use super::time::{Timestamp, timestamp};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The payload's schema version; bump it on any incompatible change. A field added is not one
/// (receivers read the fields they know: `account` came within version 1).
pub const PAYLOAD_VERSION: u32 = 1;

/// The account `[api]` is (issue 25), and so the account of every alert made before alerts
/// named theirs: a daemon of that time had one account, and it is this one.
pub const DEFAULT_ACCOUNT: &str = "default";

fn default_account() -> String {
    DEFAULT_ACCOUNT.to_string()
}

/// An alert's id: the webhook-id and the seed of the email's Message-ID. Made once, random
/// (`rw_` and 24 hex digits) so two recwatch instances never reuse one, and stored, so it never
/// changes once made; an id read back (from the database or a payload) is kept as it is.
/// Stored and sent as its bare text (`serde` and `sqlx` transparent).
#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type,
)]
#[serde(transparent)]
#[sqlx(transparent)]
pub struct AlertId(String);

impl AlertId {
    /// A new, random id.
    pub fn generate() -> AlertId {
        let bytes: [u8; 12] = rand::rng().random();
        AlertId(format!("rw_{}", hex::encode(bytes)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for AlertId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for AlertId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<String> for AlertId {
    fn from(s: String) -> AlertId {
        AlertId(s)
    }
}

impl From<&str> for AlertId {
    fn from(s: &str) -> AlertId {
        AlertId(s.to_string())
    }
}

impl From<AlertId> for String {
    fn from(id: AlertId) -> String {
        id.0
    }
}

// Comparisons with text: ids arrive as text from the database and from receivers' headers.
impl PartialEq<str> for AlertId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for AlertId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<String> for AlertId {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

impl PartialEq<AlertId> for String {
    fn eq(&self, other: &AlertId) -> bool {
        *self == other.0
    }
}

impl PartialEq<AlertId> for &str {
    fn eq(&self, other: &AlertId) -> bool {
        *self == other.0
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
    pub observed_at: Timestamp,
    /// The X-request-Id of the API answer that showed the change: what the provider's support
    /// asks for. Null when the API sent none (and in payloads stored before it was kept).
    #[serde(default)]
    pub request_id: Option<String>,
}

/// The webhook body, and the facts every other channel renders. Field order is the wire order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    pub version: u32,
    pub id: AlertId,
    pub status: Status,
    pub rule: Rule,
    pub severity: Severity,
    pub summary: String,
    /// The name of the account (`[[accounts]] name`, `default` for `[api]`) whose job or API
    /// the alert is about: always there, so a receiver can route by it whether one account is
    /// configured or several. A payload stored before it existed reads as `default`.
    #[serde(default = "default_account")]
    pub account: String,
    /// Absent for api-wide alerts (api_unhealthy).
    pub job: Option<JobFacts>,
    pub transition: Option<TransitionFacts>,
    pub fired_at: Timestamp,
    /// The host whose recwatch saw it.
    pub host: String,
    /// The job's page on the status page, `{public_url}/jobs/{app_id}/{job_id}`, when
    /// `[http] public_url` is set (absent otherwise, and in payloads made before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_url: Option<String>,
    /// What `[remediate]` did about this death (or, for a remediation notice, the outcome it
    /// tells); absent when remediation was not asked to act.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remediation: Option<RemediationFacts>,
}

/// What remediation did about a dead job, as the payload says it:
/// `{"action": "recreated", "new_job_id": "..."}`, `{"action": "skipped", "reason": "dry_run"}`,
/// `{"action": "failed", "error": "..."}`, `{"action": "unknown", "error": "..."}` (a
/// billable job may exist: a human must check), or `{"action": "pending"}` (no outcome within
/// the wait; a follow-up notice tells it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemediationFacts {
    pub action: RemediationAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_job_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RemediationAction {
    Recreated,
    Skipped,
    Failed,
    Unknown,
    Pending,
}

impl RemediationFacts {
    /// One line for chat and e-mail text: "re-created as 123", "not re-created (dry_run)"...
    pub fn sentence(&self) -> String {
        let or = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
        match self.action {
            RemediationAction::Recreated => format!("re-created as {}", or(&self.new_job_id)),
            RemediationAction::Skipped => format!("not re-created ({})", or(&self.reason)),
            RemediationAction::Failed => {
                format!("re-creation failed: {}", or(&self.error))
            }
            RemediationAction::Unknown => format!(
                "re-creation outcome unknown ({}): a billable job may exist, check the app's jobs before starting one",
                or(&self.error)
            ),
            RemediationAction::Pending => "re-creation under way".into(),
        }
    }
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
        id: AlertId::generate(),
        status: Status::Firing,
        rule: Rule::Test,
        severity: Severity::Info,
        summary: "recwatch test notification: if you can read this, the channel works".into(),
        account: DEFAULT_ACCOUNT.into(),
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
            observed_at: Timestamp::from(now),
            request_id: Some("test-request-id".into()),
        }),
        fired_at: Timestamp::from(now),
        host: hostname(),
        job_url: Some("https://recwatch.example.com/jobs/test-app/test-job".into()),
        remediation: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_has_the_documented_shape() {
        let a = Alert {
            version: PAYLOAD_VERSION,
            id: "a1".into(),
            status: Status::Firing,
            rule: Rule::IdleTimeout,
            severity: Severity::Warning,
            summary: "s".into(),
            account: "cn-north-4".into(),
            job: Some(JobFacts {
                app_id: "app".into(),
                job_id: "job".into(),
                ..Default::default()
            }),
            transition: Some(TransitionFacts {
                from: None,
                to: "STOPPED".into(),
                observed_at: "2026-01-01T00:00:00.000Z".parse().unwrap(),
                request_id: Some("req-1".into()),
            }),
            fired_at: "2026-01-01T00:00:00.000Z".parse().unwrap(),
            host: "h".into(),
            job_url: None,
            remediation: None,
        };
        let v = serde_json::to_value(&a).unwrap();
        for key in [
            "version",
            "id",
            "status",
            "rule",
            "severity",
            "summary",
            "account",
            "job",
            "transition",
            "fired_at",
        ] {
            assert!(v.get(key).is_some(), "{key}");
        }
        assert_eq!(v["status"], "firing");
        assert_eq!(v["rule"], "idle_timeout");
        assert_eq!(v["severity"], "warning");
        assert_eq!(v["account"], "cn-north-4");
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
        // And one frozen before accounts: its daemon had the one account, `default`.
        old.as_object_mut().unwrap().remove("account");
        let back: Alert = serde_json::from_value(old).unwrap();
        assert_eq!(back.transition.unwrap().request_id, None);
        assert_eq!(back.account, DEFAULT_ACCOUNT);
    }

    #[test]
    fn alert_id_table() {
        let made = AlertId::generate();
        let cases: [(&str, bool); 4] = [
            ("starts with rw_", made.as_str().starts_with("rw_")),
            ("24 hex digits after it", {
                let hex = &made.as_str()[3..];
                hex.len() == 24 && hex.chars().all(|c| c.is_ascii_hexdigit())
            }),
            ("two ids differ", AlertId::generate() != made),
            (
                "serialises as the bare text",
                serde_json::to_value(&made).unwrap() == made.as_str(),
            ),
        ];
        for (name, holds) in cases {
            assert!(holds, "{name}: {made}");
        }
        let read: AlertId = serde_json::from_str("\"alert-0001\"").unwrap();
        assert_eq!(read, "alert-0001", "an id read back is kept as it is");
    }
}
