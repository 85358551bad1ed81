//! The email channel: one plain-text message per alert, to every configured recipient, over a
//! pooled SMTP connection (lettre, rustls).
//!
//! The subject says how loud, which rule, which job and whether it is firing or resolved; the
//! body carries every fact an operator needs without opening anything else. The Message-ID is
//! derived from the alert id, so a delivery repeated after a crash is recognisably the same
//! mail (and mail systems that de-duplicate by Message-ID drop it).

use super::{DeliveryError, Retry, redact, snippet};
use crate::config::{ConfigError, EmailConfig, Tls};
use crate::domain::{Alert, JobFacts, Status};
use crate::secret::Secret;
use futures_util::future::BoxFuture;
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::AsyncSmtpTransportBuilder;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls as LettreTls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How much of an SMTP error goes into the delivery error, in characters.
const ERROR_CHARS: usize = 300;

pub struct EmailChannel {
    name: String,
    /// Pooled: one alert burst reuses a connection instead of a handshake per mail. Building
    /// and dropping it needs a tokio runtime (the pool spawns its cleanup task). Behind a
    /// lock only so that a send cut off by our deadline can swap in a fresh pool: see
    /// [`EmailChannel::deliver`].
    transport: Mutex<Arc<AsyncSmtpTransport<Tokio1Executor>>>,
    /// Makes a fresh pool, with the credentials and TLS settings of the first.
    builder: AsyncSmtpTransportBuilder,
    /// The whole send's deadline: lettre itself only times out the TCP connect.
    timeout: Duration,
    from: Mailbox,
    to: Vec<Mailbox>,
    /// `host:port`, for error messages.
    server: String,
    /// The SMTP password, kept only to scrub it from any error text.
    secrets: Vec<Secret>,
}

impl EmailChannel {
    /// `index` is the channel's position in `[[notify.email]]`, for error locations. Call it
    /// inside a tokio runtime.
    pub fn new(cfg: &EmailConfig, index: usize) -> Result<EmailChannel, ConfigError> {
        let at = |key: &str| format!("notify.email[{index}] ({:?}).{key}", cfg.name);
        let tls = match cfg.tls {
            Tls::None => LettreTls::None,
            Tls::StartTls | Tls::Tls => {
                let params = TlsParameters::builder(cfg.smtp_host.clone())
                    .dangerous_accept_invalid_certs(cfg.accept_invalid_certs)
                    .build_rustls()
                    .map_err(|e| ConfigError {
                        location: at("tls"),
                        message: format!("cannot set up TLS: {e}"),
                    })?;
                if cfg.tls == Tls::Tls {
                    LettreTls::Wrapper(params)
                } else {
                    LettreTls::Required(params)
                }
            }
        };
        let mut builder =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(cfg.smtp_host.clone())
                .port(cfg.smtp_port)
                .tls(tls)
                .timeout(Some(cfg.timeout));
        if let Some(user) = &cfg.username {
            let password = cfg
                .password
                .as_ref()
                .map(|p| p.expose().to_string())
                .unwrap_or_default();
            builder = builder.credentials(Credentials::new(user.clone(), password));
        }
        Ok(EmailChannel {
            name: cfg.name.clone(),
            transport: Mutex::new(Arc::new(builder.clone().build())),
            builder,
            timeout: cfg.timeout,
            from: cfg.from.clone(),
            to: cfg.to.clone(),
            server: format!("{}:{}", cfg.smtp_host, cfg.smtp_port),
            secrets: cfg.password.iter().cloned().collect(),
        })
    }

    async fn deliver(&self, alerts: &[Alert]) -> Result<(), DeliveryError> {
        let (subject, body, message_id) = match alerts {
            [] => return Ok(()),
            [one] => (subject(one), body(one), message_id(one)),
            many => (
                group_subject(many),
                group_body(many),
                group_message_id(many),
            ),
        };
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(subject)
            .message_id(Some(message_id));
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        let message = builder
            .body(body)
            .map_err(|e| DeliveryError::refused(format!("cannot build the email: {e}")))?;
        let transport = self.transport.lock().expect("transport lock").clone();
        match tokio::time::timeout(self.timeout, transport.send(message)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(self.classify(&e)),
            Err(_) => {
                // Cut off mid-dialogue, the connection goes back to its pool unmarked, and
                // the next mail on it would read this one's late replies as its own (a
                // refusal taken for a success). Retire the whole pool instead.
                let fresh = Arc::new(self.builder.clone().build());
                let old =
                    std::mem::replace(&mut *self.transport.lock().expect("transport lock"), fresh);
                // Closing may wait on the same silent server; nobody needs to wait for it.
                tokio::spawn(async move { old.shutdown().await });
                Err(DeliveryError::transient(format!(
                    "SMTP {}: timed out: no complete answer within {}",
                    self.server,
                    humantime::format_duration(self.timeout)
                )))
            }
        }
    }

    /// 5xx answers and client-side refusals (no common auth mechanism, no 8BITMIME) will be
    /// the same until someone changes the server or our config, so they are retried slowly;
    /// 4xx answers, refused connections, TLS and timeouts may pass, so they back off.
    fn classify(&self, e: &lettre::transport::smtp::Error) -> DeliveryError {
        let cause = if e.is_timeout() {
            format!("timed out: {e}")
        } else {
            e.to_string()
        };
        let message = format!(
            "SMTP {}: {}",
            self.server,
            snippet(&redact(&cause, &self.secrets), ERROR_CHARS)
        );
        DeliveryError {
            retry: if e.is_permanent() || e.is_client() {
                Retry::Refused
            } else {
                Retry::Backoff
            },
            message,
        }
    }
}

/// `[recwatch] CRITICAL stopped_unexpectedly: lobby camera (job-0001)`; a resolved alert
/// starts with `RESOLVED` so it cannot be mistaken for a new problem in an inbox list.
pub fn subject(alert: &Alert) -> String {
    let severity = alert.severity.as_str().to_uppercase();
    let text = match alert.status {
        Status::Firing => format!(
            "[recwatch] {severity} {}: {}",
            alert.rule,
            alert.subject_label()
        ),
        Status::Resolved => format!(
            "[recwatch] RESOLVED {severity} {}: {}",
            alert.rule,
            alert.subject_label()
        ),
    };
    // Job names come from config and the API: no line breaks in a header.
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The plain-text body: what happened, every fact of the job, the transition, where and when
/// it was seen, what the rule means and the alert id.
pub fn body(alert: &Alert) -> String {
    let mut b = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(b, "{}", alert.summary);
    b.push('\n');
    let status = match alert.status {
        Status::Firing => "FIRING",
        Status::Resolved => "RESOLVED (the condition no longer holds)",
    };
    let _ = writeln!(b, "Status:    {status}");
    let _ = writeln!(b, "Rule:      {} ({})", alert.rule, alert.severity);
    let _ = writeln!(b, "About:     {}", alert.subject_label());
    // Always, unlike chat's: the e-mail is where every fact of the payload is written out.
    let _ = writeln!(b, "Account:   {}", alert.account);
    if let Some(url) = &alert.job_url {
        let _ = writeln!(b, "Job page:  {url}");
    }
    let _ = writeln!(
        b,
        "Seen at:   {} by recwatch on host {}",
        alert.fired_at, alert.host
    );
    b.push('\n');
    let _ = writeln!(b, "What this means:\n{}", alert.rule.meaning());
    b.push('\n');
    match &alert.transition {
        Some(t) => {
            let _ = writeln!(b, "Transition:");
            let _ = writeln!(
                b,
                "  from:        {}",
                t.from.as_deref().unwrap_or("(first seen)")
            );
            let _ = writeln!(b, "  to:          {}", t.to);
            let _ = writeln!(b, "  observed at: {}", t.observed_at);
            if let Some(id) = &t.request_id {
                // What the provider's support asks for.
                let _ = writeln!(b, "  request id:  {id}");
            }
        }
        None => {
            let _ = writeln!(
                b,
                "Transition: none (this alert is about a condition, not a state change)"
            );
        }
    }
    b.push('\n');
    match &alert.job {
        Some(job) => {
            let _ = writeln!(b, "Job:");
            for (key, value) in job_facts(job) {
                let _ = writeln!(
                    b,
                    "  {key:<14} {}",
                    value.unwrap_or_else(|| "(not reported)".into())
                );
            }
        }
        None => {
            let _ = writeln!(b, "Job: none (this alert is about the RTC API as a whole)");
        }
    }
    b.push('\n');
    let _ = writeln!(
        b,
        "Alert id: {} (the same on every delivery of this alert: use it to spot a repeat)",
        alert.id
    );
    b
}

/// A group's subject: how many, how many resolved, and the loudest severity among the firing.
pub fn group_subject(alerts: &[Alert]) -> String {
    let resolved = alerts
        .iter()
        .filter(|a| a.status == Status::Resolved)
        .count();
    let firing = alerts.len() - resolved;
    let loudest = alerts
        .iter()
        .filter(|a| a.status == Status::Firing)
        .map(|a| a.severity)
        .max();
    let mut s = format!("[recwatch] {} alerts", alerts.len());
    match (firing, resolved) {
        (_, 0) => {}
        (0, _) => s.push_str(", all RESOLVED"),
        (f, r) => s.push_str(&format!(" ({f} firing, {r} resolved)")),
    }
    if let Some(sev) = loudest {
        s.push_str(&format!(", loudest {}", sev.as_str().to_uppercase()));
    }
    s
}

/// A group's body: one line per alert (job name and id, rule, stop reason, status), then
/// each alert's full body.
pub fn group_body(alerts: &[Alert]) -> String {
    let mut b = String::new();
    let _ = writeln!(b, "{} alerts:\n", alerts.len());
    for a in alerts {
        let reason = a
            .job
            .as_ref()
            .and_then(|j| j.stop_reason.as_deref())
            .unwrap_or("-");
        let status = match a.status {
            Status::Firing => a.severity.as_str().to_uppercase(),
            Status::Resolved => "RESOLVED".to_string(),
        };
        let _ = writeln!(
            b,
            "  {status:<9} {:<22} {} ({reason})",
            a.rule.as_str(),
            a.subject_label()
        );
    }
    for a in alerts {
        b.push_str("\n----------------------------------------------------------------\n\n");
        b.push_str(&body(a));
    }
    b
}

/// The same group of alerts always gets the same Message-ID: a hash of their ids.
pub fn group_message_id(alerts: &[Alert]) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for a in alerts {
        h.update(a.id.as_str().as_bytes());
        h.update(b"\n");
    }
    format!(
        "<group-{}@recwatch.alert>",
        &hex::encode(h.finalize())[..32]
    )
}

/// Every field of [`JobFacts`], in its wire order and under its wire name.
fn job_facts(j: &JobFacts) -> [(&'static str, Option<String>); 14] {
    [
        ("app_id:", Some(j.app_id.clone())),
        ("job_id:", Some(j.job_id.clone())),
        ("name:", j.name.clone()),
        ("room_id:", j.room_id.clone()),
        ("user_id:", j.user_id.clone()),
        ("stream_name:", j.stream_name.clone()),
        ("state:", j.state.clone()),
        ("stop_reason:", j.stop_reason.clone()),
        ("description:", j.description.clone()),
        ("max_idle_time:", j.max_idle_time.map(|s| format!("{s} s"))),
        ("create_time:", j.create_time.clone()),
        ("start_time:", j.start_time.clone()),
        ("stop_time:", j.stop_time.clone()),
        ("update_time:", j.update_time.clone()),
    ]
}

/// `<{alert id}@recwatch.alert>`, with any character a msg-id may not hold replaced, so the
/// same alert always gets the same Message-ID.
pub fn message_id(alert: &Alert) -> String {
    let local: String = alert
        .id
        .as_str()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let local = local.trim_matches('.');
    format!(
        "<{}@recwatch.alert>",
        if local.is_empty() { "_" } else { local }
    )
}

impl super::Notifier for EmailChannel {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "email"
    }

    fn send<'a>(&'a self, alerts: &'a [Alert]) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(self.deliver(alerts))
    }

    /// People read mail: a storm is one mail listing every alert.
    fn groups(&self) -> bool {
        true
    }

    /// No size limit worth splitting for: one mail per group.
    fn split(&self, alerts: &[Alert]) -> Vec<usize> {
        if alerts.is_empty() {
            Vec::new()
        } else {
            vec![alerts.len()]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{PAYLOAD_VERSION, Rule, Severity, TransitionFacts};

    fn job() -> JobFacts {
        JobFacts {
            app_id: "app-1".into(),
            job_id: "job-0001".into(),
            name: Some("lobby camera".into()),
            room_id: Some("room-9".into()),
            user_id: Some("user-7".into()),
            stream_name: Some("main".into()),
            state: Some("STOPPED".into()),
            stop_reason: Some("INTERNAL_ERROR".into()),
            description: Some("recorder crashed".into()),
            max_idle_time: Some(30),
            create_time: Some("2025-01-01T00:00:00.000Z".into()),
            start_time: Some("2025-01-01T00:00:01.000Z".into()),
            stop_time: Some("2025-01-01T01:00:00.000Z".into()),
            update_time: Some("2025-01-01T01:00:00.500Z".into()),
        }
    }

    fn alert(rule: Rule, status: Status, severity: Severity, job: Option<JobFacts>) -> Alert {
        Alert {
            version: PAYLOAD_VERSION,
            id: "01J0ALERT".into(),
            status,
            rule,
            severity,
            summary: format!("summary of {rule}"),
            account: "cn-north-4".into(),
            job,
            transition: Some(TransitionFacts {
                from: Some("EXECUTING".into()),
                to: "STOPPED".into(),
                observed_at: "2025-01-01T01:00:02.000Z".parse().unwrap(),
                request_id: None,
            }),
            fired_at: "2025-01-01T01:00:02.123Z".parse().unwrap(),
            host: "watch-1".into(),
            job_url: None,
            remediation: None,
        }
    }

    /// A group's mail: its subject counts and says the loudest; its body lists every job
    /// (name, id, rule, stop reason) and then each alert in full; its Message-ID is stable.
    #[test]
    fn group_mail_table() {
        let mut other = job();
        other.job_id = "job-0009".into();
        other.name = Some("hall camera".into());
        other.stop_reason = Some("EXCEED_MAX_IDLE_TIME".into());
        let a = alert(
            Rule::StoppedUnexpectedly,
            Status::Firing,
            Severity::Critical,
            Some(job()),
        );
        let mut b = alert(
            Rule::IdleTimeout,
            Status::Firing,
            Severity::Warning,
            Some(other),
        );
        b.id = "01J0OTHER".into();
        let mut r = a.clone();
        r.status = Status::Resolved;
        r.id = "01J0RESOLVED".into();
        let cases: Vec<(&str, Vec<Alert>, &str)> = vec![
            (
                "two firing",
                vec![a.clone(), b.clone()],
                "[recwatch] 2 alerts, loudest CRITICAL",
            ),
            (
                "mixed",
                vec![b.clone(), r.clone()],
                "[recwatch] 2 alerts (1 firing, 1 resolved), loudest WARNING",
            ),
            (
                "all resolved",
                vec![r.clone(), r.clone()],
                "[recwatch] 2 alerts, all RESOLVED",
            ),
        ];
        for (name, alerts, want) in cases {
            assert_eq!(group_subject(&alerts), want, "{name}");
        }
        let body = group_body(&[a.clone(), b.clone()]);
        for w in [
            "CRITICAL  stopped_unexpectedly   lobby camera (job-0001) (INTERNAL_ERROR)",
            "WARNING   idle_timeout           hall camera (job-0009) (EXCEED_MAX_IDLE_TIME)",
            "Alert id: 01J0ALERT",
            "Alert id: 01J0OTHER",
        ] {
            assert!(body.contains(w), "{w:?} not in\n{body}");
        }
        let id = group_message_id(&[a.clone(), b.clone()]);
        assert_eq!(id, group_message_id(&[a.clone(), b.clone()]));
        assert_ne!(id, group_message_id(&[b, a]));
        assert!(
            id.starts_with("<group-") && id.ends_with("@recwatch.alert>"),
            "{id}"
        );
    }

    #[test]
    fn subjects() {
        let minimal = JobFacts {
            app_id: "a".into(),
            job_id: "job-0002".into(),
            ..Default::default()
        };
        let cases: Vec<(&str, Alert, &str)> = vec![
            (
                "firing critical with a named job",
                alert(
                    Rule::StoppedUnexpectedly,
                    Status::Firing,
                    Severity::Critical,
                    Some(job()),
                ),
                "[recwatch] CRITICAL stopped_unexpectedly: lobby camera (job-0001)",
            ),
            (
                "idle timeout warning",
                alert(
                    Rule::IdleTimeout,
                    Status::Firing,
                    Severity::Warning,
                    Some(job()),
                ),
                "[recwatch] WARNING idle_timeout: lobby camera (job-0001)",
            ),
            (
                "tenant stop info",
                alert(
                    Rule::StoppedByTenant,
                    Status::Firing,
                    Severity::Info,
                    Some(job()),
                ),
                "[recwatch] INFO stopped_by_tenant: lobby camera (job-0001)",
            ),
            (
                "resolved condition",
                alert(
                    Rule::StuckInit,
                    Status::Resolved,
                    Severity::Warning,
                    Some(job()),
                ),
                "[recwatch] RESOLVED WARNING stuck_init: lobby camera (job-0001)",
            ),
            (
                "unnamed job shows its id",
                alert(
                    Rule::JobNotFound,
                    Status::Firing,
                    Severity::Warning,
                    Some(minimal),
                ),
                "[recwatch] WARNING job_not_found: job-0002",
            ),
            (
                "api-wide alert has no job",
                alert(Rule::ApiUnhealthy, Status::Firing, Severity::Critical, None),
                "[recwatch] CRITICAL api_unhealthy: the RTC API",
            ),
            (
                "api-wide alert resolved",
                alert(
                    Rule::ApiUnhealthy,
                    Status::Resolved,
                    Severity::Critical,
                    None,
                ),
                "[recwatch] RESOLVED CRITICAL api_unhealthy: the RTC API",
            ),
            (
                "line breaks in a name cannot add a header",
                alert(
                    Rule::StoppedUnexpectedly,
                    Status::Firing,
                    Severity::Critical,
                    Some(JobFacts {
                        name: Some("cam\r\nBcc: x@y".into()),
                        ..job()
                    }),
                ),
                "[recwatch] CRITICAL stopped_unexpectedly: cam  Bcc: x@y (job-0001)",
            ),
        ];
        for (name, a, want) in cases {
            assert_eq!(subject(&a), want, "{name}");
        }
    }

    #[test]
    fn body_holds_every_fact() {
        for rule in Rule::ALL.into_iter().chain([Rule::Test]) {
            let a = alert(rule, Status::Firing, Severity::Critical, Some(job()));
            let b = body(&a);
            let want = [
                "summary of ",
                "Status:    FIRING",
                "Account:   cn-north-4",
                rule.as_str(),
                rule.meaning(),
                "from:        EXECUTING",
                "to:          STOPPED",
                "observed at: 2025-01-01T01:00:02.000Z",
                "2025-01-01T01:00:02.123Z by recwatch on host watch-1",
                "app_id:        app-1",
                "job_id:        job-0001",
                "name:          lobby camera",
                "room_id:       room-9",
                "user_id:       user-7",
                "stream_name:   main",
                "state:         STOPPED",
                "stop_reason:   INTERNAL_ERROR",
                "description:   recorder crashed",
                "max_idle_time: 30 s",
                "create_time:   2025-01-01T00:00:00.000Z",
                "start_time:    2025-01-01T00:00:01.000Z",
                "stop_time:     2025-01-01T01:00:00.000Z",
                "update_time:   2025-01-01T01:00:00.500Z",
                "Alert id: 01J0ALERT",
            ];
            for w in want {
                assert!(b.contains(w), "{rule}: missing {w:?} in\n{b}");
            }
            assert!(!b.contains("Job page:"), "no public_url, no link");
        }
        let linked = Alert {
            job_url: Some("https://recwatch.example.com/jobs/app-1/job-0001".into()),
            ..alert(
                Rule::StoppedUnexpectedly,
                Status::Firing,
                Severity::Critical,
                Some(job()),
            )
        };
        assert!(
            body(&linked).contains("Job page:  https://recwatch.example.com/jobs/app-1/job-0001\n"),
            "{}",
            body(&linked)
        );
    }

    #[test]
    fn body_with_missing_facts() {
        let cases: Vec<(&str, Alert, &[&str])> = vec![
            (
                "job with only ids",
                alert(
                    Rule::JobNotFound,
                    Status::Firing,
                    Severity::Warning,
                    Some(JobFacts {
                        app_id: "a".into(),
                        job_id: "j".into(),
                        ..Default::default()
                    }),
                ),
                &[
                    "job_id:        j",
                    "name:          (not reported)",
                    "stop_reason:   (not reported)",
                    "max_idle_time: (not reported)",
                ],
            ),
            (
                "no job, no transition",
                Alert {
                    transition: None,
                    ..alert(Rule::ApiUnhealthy, Status::Firing, Severity::Critical, None)
                },
                &[
                    "Job: none (this alert is about the RTC API as a whole)",
                    "Transition: none",
                    "About:     the RTC API",
                ],
            ),
            (
                "first sighting has no from state",
                Alert {
                    transition: Some(TransitionFacts {
                        from: None,
                        to: "STOPPED".into(),
                        observed_at: "2026-01-01T00:00:00.000Z".parse().unwrap(),
                        request_id: None,
                    }),
                    ..alert(
                        Rule::StoppedUnexpectedly,
                        Status::Firing,
                        Severity::Critical,
                        Some(job()),
                    )
                },
                &["from:        (first seen)"],
            ),
            (
                "resolved says so",
                alert(
                    Rule::StuckInit,
                    Status::Resolved,
                    Severity::Warning,
                    Some(job()),
                ),
                &["Status:    RESOLVED"],
            ),
        ];
        for (name, a, want) in cases {
            let b = body(&a);
            for w in want {
                assert!(b.contains(w), "{name}: missing {w:?} in\n{b}");
            }
        }
    }

    #[test]
    fn message_ids_are_stable_and_valid() {
        let cases: &[(&str, &str, &str)] = &[
            ("plain", "01J0ALERT", "<01J0ALERT@recwatch.alert>"),
            ("uuid", "5f0c-11aa", "<5f0c-11aa@recwatch.alert>"),
            ("specials replaced", "a b<c>@d", "<a_b_c__d@recwatch.alert>"),
            ("dots trimmed", ".x.", "<x@recwatch.alert>"),
            ("empty", "", "<_@recwatch.alert>"),
        ];
        for (name, id, want) in cases {
            let a = Alert {
                id: (*id).into(),
                ..alert(Rule::Test, Status::Firing, Severity::Info, None)
            };
            assert_eq!(message_id(&a), *want, "{name}");
            assert_eq!(message_id(&a), message_id(&a.clone()), "{name}");
        }
    }
}
