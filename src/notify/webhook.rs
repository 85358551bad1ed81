//! The webhook channel: the alert's version 1 JSON POSTed to one URL, signed per Standard
//! Webhooks (<https://www.standardwebhooks.com>) when a secret is configured.
//!
//! The alert id is the `webhook-id`, so a receiver can drop a delivery that a crash or a lost
//! answer made us repeat. Redirects are not followed: a signed alert goes only where it was
//! configured to go.

use super::{DeliveryError, Retry, chain, redact, snippet};
use crate::config::{ConfigError, WebhookConfig};
use crate::domain::Alert;
use crate::secret::Secret;
use base64::Engine;
use futures_util::future::BoxFuture;
use recwatch_rtc::sign::hmac_raw;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, DATE, HeaderMap, HeaderValue, RETRY_AFTER};
use std::time::Duration;

pub const HEADER_ID: &str = "webhook-id";
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
pub const HEADER_SIGNATURE: &str = "webhook-signature";

/// How much of a refusing receiver's answer goes into the error, in characters.
const SNIPPET_CHARS: usize = 200;
/// How much of the answer we read at most to make that snippet.
const SNIPPET_READ_BYTES: usize = 4096;

pub struct WebhookChannel {
    name: String,
    url: url::Url,
    client: reqwest::Client,
    /// Configured extra headers, marked sensitive so they stay out of reqwest's Debug output.
    headers: HeaderMap,
    /// The HMAC key: the secret's base64 decoded, `None` when deliveries are unsigned.
    key: Option<Vec<u8>>,
    /// Everything that must never appear in an error message.
    secrets: Vec<Secret>,
    timeout: Duration,
}

impl WebhookChannel {
    /// `index` is the channel's position in `[[notify.webhook]]`, for error locations.
    pub fn new(cfg: &WebhookConfig, index: usize) -> Result<WebhookChannel, ConfigError> {
        let at = |key: &str| format!("notify.webhook[{index}] ({:?}).{key}", cfg.name);
        let key = cfg.secret.as_ref().map(|s| s.key().to_vec());
        let mut headers = HeaderMap::new();
        let mut secrets: Vec<Secret> = cfg.secret.iter().map(|s| s.text().clone()).collect();
        for (name, value) in &cfg.headers {
            headers.append(name.clone(), value.clone());
            // Checked at load to be visible ASCII, so the text is the bytes as they were written.
            secrets.push(Secret::new(String::from_utf8_lossy(value.as_bytes())));
        }
        let client = reqwest::Client::builder()
            .user_agent(concat!("recwatch/", env!("CARGO_PKG_VERSION")))
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ConfigError {
                location: at("url"),
                message: format!("cannot build the HTTP client: {}", chain(&e.without_url())),
            })?;
        Ok(WebhookChannel {
            name: cfg.name.clone(),
            url: cfg.url.clone(),
            client,
            headers,
            key,
            secrets,
            timeout: cfg.timeout,
        })
    }

    pub fn is_signed(&self) -> bool {
        self.key.is_some()
    }

    async fn deliver(&self, alert: &Alert) -> Result<(), DeliveryError> {
        let body = render(alert);
        let mut request = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .header(CONTENT_TYPE, "application/json");
        if let Some(key) = &self.key {
            let timestamp = chrono::Utc::now().timestamp();
            request = request
                .header(HEADER_ID, alert.id.as_str())
                .header(HEADER_TIMESTAMP, timestamp.to_string())
                .header(
                    HEADER_SIGNATURE,
                    signature(key, alert.id.as_str(), timestamp, &body),
                );
        }
        let response = request
            .body(body)
            .send()
            .await
            .map_err(|e| self.transport_error(e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
                .map(str::to_string)
        };
        let wait = header(RETRY_AFTER)
            .and_then(|v| retry_after(&v, header(DATE).as_deref(), chrono::Utc::now()));
        let text = redact(&read_snippet(response).await, &self.secrets);
        Err(status_error(status, wait, &text))
    }

    /// Connect errors and timeouts: the receiver may be back later.
    fn transport_error(&self, e: reqwest::Error) -> DeliveryError {
        let cause = if e.is_timeout() {
            format!(
                "no answer within {}",
                humantime::format_duration(self.timeout)
            )
        } else {
            // without_url: a webhook URL often carries a token in its path or query.
            chain(&e.without_url())
        };
        DeliveryError::transient(redact(
            &format!("webhook request failed: {cause}"),
            &self.secrets,
        ))
    }
}

/// The request body: the alert serialized as it is, version field included.
pub fn render(alert: &Alert) -> Vec<u8> {
    serde_json::to_vec(alert)
        .expect("an Alert always serializes: it has only strings, numbers and string-keyed structs")
}

/// The Standard Webhooks `webhook-signature` value: `v1,` and the base64 of
/// HMAC-SHA256(key, "{id}.{timestamp}.{body}").
pub fn signature(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut signed = Vec::with_capacity(id.len() + body.len() + 24);
    signed.extend_from_slice(id.as_bytes());
    signed.extend_from_slice(format!(".{timestamp}.").as_bytes());
    signed.extend_from_slice(body);
    let mac = hmac_raw(key, &signed);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac)
    )
}

/// What a non-2xx answer means. 5xx and 408 may pass by themselves; 429 asks us to slow
/// down (`retry_after` is its `Retry-After`, already parsed); any other answer (3xx, 4xx) is a
/// refusal that needs someone to fix the receiver or our config, so it is retried slowly.
pub fn status_error(
    status: StatusCode,
    retry_after: Option<Duration>,
    body_snippet: &str,
) -> DeliveryError {
    let retry = if status == StatusCode::TOO_MANY_REQUESTS {
        Retry::After(retry_after)
    } else if status == StatusCode::REQUEST_TIMEOUT || status.is_server_error() {
        Retry::Backoff
    } else {
        Retry::Refused
    };
    let mut message = format!("webhook answered HTTP {status}");
    if status.is_redirection() {
        message.push_str(" (redirects are not followed; configure the final URL)");
    }
    if !body_snippet.is_empty() {
        message.push_str(": ");
        message.push_str(body_snippet);
    }
    DeliveryError { retry, message }
}

/// How long a `Retry-After` value asks us to wait: delta-seconds, or an HTTP date. A date is
/// measured against the answer's own `Date` header when it has one, so a skewed clock on
/// either side does not stretch or erase the wait; otherwise against `now`. `None` for a
/// value that is neither (the caller falls back to its own back-off).
pub fn retry_after(
    value: &str,
    date: Option<&str>,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    // IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT") is RFC 2822's syntax with "GMT".
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let base = date
        .and_then(|d| chrono::DateTime::parse_from_rfc2822(d.trim()).ok())
        .map(|d| d.with_timezone(&chrono::Utc))
        .unwrap_or(now);
    // A date in the past means "now".
    Some(
        (at.with_timezone(&chrono::Utc) - base)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

/// The start of the answer's body, for the operator; a failure to read it is not the error.
pub async fn read_snippet(mut response: reqwest::Response) -> String {
    let mut buf = Vec::new();
    while buf.len() < SNIPPET_READ_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    buf.truncate(SNIPPET_READ_BYTES);
    snippet(&String::from_utf8_lossy(&buf), SNIPPET_CHARS)
}

impl super::Notifier for WebhookChannel {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "webhook"
    }

    /// One event per alert, in order: machines consume them.
    fn send<'a>(&'a self, alerts: &'a [Alert]) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            for alert in alerts {
                self.deliver(alert).await?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::decode_webhook_secret;
    use crate::domain::{JobFacts, PAYLOAD_VERSION, Rule, Severity, Status, TransitionFacts};

    fn alert() -> Alert {
        Alert {
            version: PAYLOAD_VERSION,
            id: "alert-0001".into(),
            status: Status::Firing,
            rule: Rule::StoppedUnexpectedly,
            severity: Severity::Critical,
            summary: "lobby camera stopped: INTERNAL_ERROR".into(),
            job: Some(JobFacts {
                app_id: "app".into(),
                job_id: "job-0001".into(),
                name: Some("lobby camera".into()),
                ..Default::default()
            }),
            transition: Some(TransitionFacts {
                from: Some("EXECUTING".into()),
                to: "STOPPED".into(),
                observed_at: "2025-01-01T00:00:00.000Z".into(),
                request_id: None,
            }),
            fired_at: "2025-01-01T00:00:00.000Z".into(),
            host: "h1".into(),
            job_url: None,
            remediation: None,
        }
    }

    /// The example in the Standard Webhooks specification (spec/standard-webhooks.md).
    #[test]
    fn signature_matches_the_spec_example() {
        let key = decode_webhook_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = signature(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    /// The vector in the reference Rust library's own tests.
    #[test]
    fn signature_matches_the_reference_library_vector() {
        let key = decode_webhook_secret("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        let body = br#"{"email":"test@example.com","username":"test_user"}"#;
        assert_eq!(
            signature(&key, "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk", 1649367553, body),
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
    }

    #[test]
    fn the_reference_library_verifies_our_signature() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let key = decode_webhook_secret(secret).unwrap();
        let a = alert();
        let body = render(&a);
        let now = chrono::Utc::now().timestamp();
        let mut headers = http_headers(
            a.id.as_str(),
            now,
            &signature(&key, a.id.as_str(), now, &body),
        );
        let wh = standardwebhooks::Webhook::new(secret).unwrap();
        wh.verify(&body, &headers).expect("our signature verifies");
        // And it is checking something: a changed body or id fails.
        assert!(wh.verify(&[&body[..], b" "].concat(), &headers).is_err());
        headers.insert(HEADER_ID, "alert-0002".parse().unwrap());
        assert!(wh.verify(&body, &headers).is_err());
    }

    fn http_headers(id: &str, ts: i64, sig: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(HEADER_ID, id.parse().unwrap());
        h.insert(HEADER_TIMESTAMP, ts.to_string().parse().unwrap());
        h.insert(HEADER_SIGNATURE, sig.parse().unwrap());
        h
    }

    #[test]
    fn render_is_the_version_1_payload() {
        let a = alert();
        let v: serde_json::Value = serde_json::from_slice(&render(&a)).unwrap();
        assert_eq!(v["version"], 1);
        assert_eq!(v["id"], "alert-0001");
        assert_eq!(v["rule"], "stopped_unexpectedly");
        assert_eq!(v["job"]["name"], "lobby camera");
        let back: Alert = serde_json::from_value(v).unwrap();
        assert_eq!(back, a);
    }

    #[test]
    fn statuses_are_classified() {
        let later = Some(Duration::from_secs(7));
        // (name, status, Retry-After, retry)
        let cases: &[(&str, u16, Option<Duration>, Retry)] = &[
            ("moved", 301, None, Retry::Refused),
            ("temporary redirect", 307, None, Retry::Refused),
            ("bad request", 400, None, Retry::Refused),
            ("unauthorized", 401, None, Retry::Refused),
            ("forbidden", 403, None, Retry::Refused),
            ("not found", 404, None, Retry::Refused),
            ("gone", 410, None, Retry::Refused),
            ("payload too large", 413, None, Retry::Refused),
            ("unprocessable", 422, None, Retry::Refused),
            ("request timeout", 408, None, Retry::Backoff),
            ("too many requests", 429, None, Retry::After(None)),
            (
                "too many requests, told when",
                429,
                later,
                Retry::After(later),
            ),
            ("internal error", 500, None, Retry::Backoff),
            ("bad gateway", 502, None, Retry::Backoff),
            ("unavailable", 503, later, Retry::Backoff),
            ("gateway timeout", 504, None, Retry::Backoff),
        ];
        for (name, code, after, retry) in cases {
            let e = status_error(StatusCode::from_u16(*code).unwrap(), *after, "why");
            assert_eq!(e.retry, *retry, "{name}");
            assert!(
                e.message.contains(&code.to_string()),
                "{name}: {}",
                e.message
            );
            assert!(e.message.ends_with(": why"), "{name}: {}", e.message);
        }
    }

    #[test]
    fn retry_after_table() {
        let now: chrono::DateTime<chrono::Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        let s = Duration::from_secs;
        let cases: &[(&str, &str, Option<&str>, Option<Duration>)] = &[
            ("seconds", "120", None, Some(s(120))),
            ("seconds with spaces", " 5 ", None, Some(s(5))),
            ("zero", "0", None, Some(s(0))),
            (
                "date against now",
                "Thu, 01 Jan 2026 00:01:00 GMT",
                None,
                Some(s(60)),
            ),
            (
                "date against the answer's Date, not our clock",
                "Wed, 01 Jan 2025 00:00:30 GMT",
                Some("Wed, 01 Jan 2025 00:00:00 GMT"),
                Some(s(30)),
            ),
            (
                "date in the past",
                "Wed, 31 Dec 2025 23:00:00 GMT",
                None,
                Some(s(0)),
            ),
            (
                "unreadable Date header falls back to now",
                "Thu, 01 Jan 2026 00:00:10 GMT",
                Some("yesterday"),
                Some(s(10)),
            ),
            ("negative", "-5", None, None),
            ("garbage", "soon", None, None),
            ("empty", "", None, None),
        ];
        for (name, value, date, want) in cases {
            assert_eq!(retry_after(value, *date, now), *want, "{name}");
        }
    }

    /// The config refuses a configured header that this channel sets itself (a second
    /// Content-Type or signature would let a receiver read the wrong one): its list must
    /// cover every header set here.
    #[test]
    fn the_headers_set_here_are_reserved_in_the_config() {
        for name in [
            CONTENT_TYPE.as_str(),
            HEADER_ID,
            HEADER_TIMESTAMP,
            HEADER_SIGNATURE,
        ] {
            assert!(
                crate::config::RESERVED_HEADERS.contains(&name),
                "{name} is not in RESERVED_HEADERS"
            );
        }
    }
}
