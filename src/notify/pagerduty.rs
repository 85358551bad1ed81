//! PagerDuty Events API v2: one event per alert (machines consume them, so they are never
//! grouped). A firing alert is a `trigger`, a resolved one a `resolve` with the same
//! `dedup_key`: the key is made from the job and the rule, so every notice of one episode
//! (its reminders too) lands on one incident, and its resolve closes it.
//!
//! PagerDuty answers 202; 400 is an invalid event, 429 its rate limit (about 120 events a
//! minute per key), 5xx may pass.

#[cfg(test)]
use super::Retry;
use super::chat::{ChatChannel, ChatVendor, Style, rule_title};
use super::http::{Answer, SNIPPET_CHARS, status_error};
use super::{DeliveryError, Window, snippet};
use crate::config::{ChatConfig, ConfigError};
use crate::domain::{Alert, Rule, Severity, Status};
use crate::secret::Secret;
use serde_json::json;
use std::time::Duration;
use url::Url;

/// `payload.summary` is at most 1,024 characters.
const SUMMARY_CHARS: usize = 1024;

/// About 120 events a minute per integration key, with margin for network delays.
const PACE: &[Window] = &[Window::new(120, Duration::from_secs(62))];

const THROTTLE_WINDOW: Duration = Duration::from_secs(60);

/// A PagerDuty integration: its routing key and how its events are written.
pub struct PagerDuty {
    routing_key: Secret,
    style: Style,
}

pub type PagerDutyChannel = ChatChannel<PagerDuty>;

impl ChatVendor for PagerDuty {
    const KIND: &'static str = "pagerduty";
    const NAME: &'static str = "PagerDuty";
    const PACE: &'static [Window] = PACE;
    /// Machines consume the events: one per alert.
    const GROUPS: bool = false;
    const THROTTLED: Duration = THROTTLE_WINDOW;

    fn new(cfg: &ChatConfig, index: usize, style: Style) -> Result<PagerDuty, ConfigError> {
        let routing_key = cfg.routing_key.clone().ok_or_else(|| ConfigError {
            location: format!("notify.pagerduty[{index}] ({:?}).routing_key", cfg.name),
            message: "missing".into(),
        })?;
        Ok(PagerDuty { routing_key, style })
    }

    fn requests(&self, url: &Url, alerts: &[Alert]) -> Vec<(Url, Vec<u8>)> {
        let mut events = Vec::with_capacity(alerts.len());
        for alert in alerts {
            let action = match alert.status {
                Status::Firing => Action::Trigger,
                Status::Resolved => Action::Resolve,
            };
            events.push((alert, action));
            // `recwatch test-alert`: show that the key works without leaving an incident open.
            if alert.rule == Rule::Test && alert.status == Status::Firing {
                events.push((alert, Action::Resolve));
            }
        }
        let key = self.routing_key.expose();
        events
            .into_iter()
            .map(|(alert, action)| (url.clone(), render(alert, action, key, &self.style)))
            .collect()
    }

    fn verdict(&self, answer: &Answer) -> Result<(), DeliveryError> {
        verdict(Self::NAME, answer)
    }
}

/// Whether PagerDuty took the event. Events API v2 answers 202 with
/// `{"status": "success", "message": ..., "dedup_key": ...}`; a 2xx without that JSON (an
/// HTML 200 from a proxy or a captive portal) is not PagerDuty's answer, so the event may not
/// have reached it and is tried again. A non-2xx is read as every chat vendor's.
pub fn verdict(vendor: &str, answer: &Answer) -> Result<(), DeliveryError> {
    if !answer.status.is_success() {
        return Err(status_error(vendor, answer, Some(THROTTLE_WINDOW)));
    }
    let json: Option<serde_json::Value> = serde_json::from_str(&answer.body).ok();
    let status = json.as_ref().and_then(|j| j.get("status")?.as_str());
    if status == Some("success") {
        return Ok(());
    }
    let what = match status {
        Some(other) => format!("with status {other:?}"),
        None => "without its JSON answer (is a proxy answering instead?)".into(),
    };
    Err(DeliveryError::transient(format!(
        "{vendor} answered HTTP {} {what}: {}",
        answer.status,
        snippet(&answer.body, SNIPPET_CHARS)
    )))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Trigger,
    Resolve,
}

/// The episode's key: the rule and the job (the API as a whole for api-wide alerts), so the
/// firing notice, its reminders and its resolved notice share it, and a restart or a second
/// delivery of the same notice lands on the same incident.
pub fn dedup_key(alert: &Alert) -> String {
    match &alert.job {
        Some(j) => format!("recwatch/{}/{}/{}", alert.rule, j.app_id, j.job_id),
        None => format!("recwatch/{}", alert.rule),
    }
}

/// The event's JSON: a `trigger` carries the payload PagerDuty shows; a `resolve` only the key.
pub fn render(alert: &Alert, action: Action, routing_key: &str, style: &Style) -> Vec<u8> {
    let key = dedup_key(alert);
    let v = match action {
        Action::Resolve => json!({
            "routing_key": routing_key,
            "event_action": "resolve",
            "dedup_key": key,
        }),
        Action::Trigger => {
            let summary: String = format!(
                "{}: {} — {}",
                rule_title(alert.rule, style.language),
                alert.subject_label(),
                alert.summary
            )
            .chars()
            .take(SUMMARY_CHARS)
            .collect();
            let severity = match alert.severity {
                Severity::Critical => "critical",
                Severity::Warning => "warning",
                Severity::Info => "info",
            };
            let mut v = json!({
                "routing_key": routing_key,
                "event_action": "trigger",
                "dedup_key": key,
                "client": "recwatch",
                "payload": {
                    "summary": summary,
                    "source": alert.host,
                    "severity": severity,
                    "timestamp": alert.fired_at,
                    "component": alert.subject_label(),
                    "group": alert.job.as_ref().map(|j| j.app_id.as_str()).unwrap_or("-"),
                    "class": alert.rule.as_str(),
                    "custom_details": {
                        "alert_id": alert.id.as_str(),
                        "rule": alert.rule.as_str(),
                        "job": alert.job,
                        "transition": alert.transition,
                    },
                },
            });
            let link = alert.job.as_ref().and_then(|j| {
                crate::config::HttpConfig {
                    listen: None,
                    read_token: None,
                    token: None,
                    public_url: style.public_url.clone(),
                }
                .job_link(&j.app_id, &j.job_id)
            });
            if let Some(url) = link {
                v["client_url"] = json!(url);
                v["links"] = json!([{"href": url, "text": "recwatch job page"}]);
            }
            v
        }
    };
    serde_json::to_vec(&v).expect("JSON values serialize")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Language;
    use crate::notify::chat::tests::alert;

    #[test]
    fn trigger_and_resolve_share_the_key() {
        let style = Style::new(
            Language::En,
            Some(&"https://rw.example.com".parse().unwrap()),
            None,
        );
        let firing = alert(5, Status::Firing, Severity::Warning);
        let mut resolved = firing.clone();
        resolved.status = Status::Resolved;
        resolved.id = "rw_other".into();
        let t: serde_json::Value =
            serde_json::from_slice(&render(&firing, Action::Trigger, "K", &style)).unwrap();
        let r: serde_json::Value =
            serde_json::from_slice(&render(&resolved, Action::Resolve, "K", &style)).unwrap();
        assert_eq!(t["event_action"], "trigger");
        assert_eq!(r["event_action"], "resolve");
        assert_eq!(
            t["dedup_key"],
            "recwatch/stopped_unexpectedly/app-1/job-0005"
        );
        assert_eq!(t["dedup_key"], r["dedup_key"]);
        assert_eq!(t["routing_key"], "K");
        assert_eq!(t["payload"]["severity"], "warning");
        assert_eq!(t["payload"]["source"], "watch-1");
        assert_eq!(t["payload"]["custom_details"]["alert_id"], "rw_0005");
        assert_eq!(
            t["links"][0]["href"],
            "https://rw.example.com/jobs/app-1/job-0005"
        );
        assert!(r.get("payload").is_none());
    }

    #[test]
    fn dedup_keys_table() {
        let a = alert(1, Status::Firing, Severity::Critical);
        let mut other_rule = a.clone();
        other_rule.rule = Rule::IdleTimeout;
        let mut api = a.clone();
        api.rule = Rule::ApiUnhealthy;
        api.job = None;
        let cases = [
            (
                "job and rule",
                &a,
                "recwatch/stopped_unexpectedly/app-1/job-0001",
            ),
            (
                "another rule, another incident",
                &other_rule,
                "recwatch/idle_timeout/app-1/job-0001",
            ),
            ("api-wide", &api, "recwatch/api_unhealthy"),
        ];
        for (name, alert, want) in cases {
            assert_eq!(dedup_key(alert), want, "{name}");
        }
    }

    #[test]
    fn verdict_table() {
        use reqwest::StatusCode;
        let answer = |status: u16, body: &str| Answer {
            status: StatusCode::from_u16(status).unwrap(),
            retry_after: None,
            body: body.into(),
        };
        let success = r#"{"status":"success","message":"Event processed","dedup_key":"k"}"#;
        // (name, answer, delivered, retry when not)
        let cases = [
            ("202 with success", answer(202, success), None),
            ("200 with success", answer(200, success), None),
            (
                "an HTML 200 from a proxy",
                answer(200, "<html><body>Welcome</body></html>"),
                Some(Retry::Backoff),
            ),
            ("an empty 202", answer(202, ""), Some(Retry::Backoff)),
            (
                "JSON without a status",
                answer(202, r#"{"ok":true}"#),
                Some(Retry::Backoff),
            ),
            (
                "a status that is not success",
                answer(202, r#"{"status":"invalid event"}"#),
                Some(Retry::Backoff),
            ),
            (
                "400 invalid event",
                answer(
                    400,
                    r#"{"status":"invalid event","message":"Event object is invalid"}"#,
                ),
                Some(Retry::Refused),
            ),
            (
                "429",
                answer(429, ""),
                Some(Retry::After(Some(THROTTLE_WINDOW))),
            ),
            ("503", answer(503, ""), Some(Retry::Backoff)),
        ];
        for (name, answer, want) in cases {
            match (verdict("PagerDuty", &answer), want) {
                (Ok(()), None) => {}
                (Err(e), Some(retry)) => assert_eq!(e.retry, retry, "{name}: {e:?}"),
                (got, want) => panic!("{name}: {got:?}, wanted {want:?}"),
            }
        }
        let e = verdict("PagerDuty", &answer(200, "<html>portal</html>")).unwrap_err();
        assert!(
            e.message.contains("without its JSON answer"),
            "{}",
            e.message
        );
        assert!(e.message.contains("<html>portal"), "{}", e.message);
    }

    #[test]
    fn summary_is_capped() {
        let mut a = alert(1, Status::Firing, Severity::Critical);
        a.summary = "x".repeat(5000);
        let v: serde_json::Value =
            serde_json::from_slice(&render(&a, Action::Trigger, "K", &Style::default())).unwrap();
        assert_eq!(
            v["payload"]["summary"].as_str().unwrap().chars().count(),
            SUMMARY_CHARS
        );
    }
}
