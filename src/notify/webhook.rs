//! The webhook channel: the alert's version 1 JSON (the account's name at its top level, for
//! routing) POSTed to one URL, signed per Standard Webhooks (<https://www.standardwebhooks.com>)
//! when a secret is configured.
//!
//! The alert id is the `webhook-id`, so a receiver can drop a delivery that a crash or a lost
//! answer made us repeat. Redirects are not followed: a signed alert goes only where it was
//! configured to go.

use super::DeliveryError;
use super::http::{Label, Sender};
use crate::config::{ConfigError, WebhookConfig};
use crate::domain::Alert;
use crate::secret::Secret;
use base64::Engine;
use futures_util::future::BoxFuture;
use recwatch_rtc::sign::hmac_raw;
use reqwest::header::{CONTENT_TYPE, HeaderMap};

pub const HEADER_ID: &str = "webhook-id";
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
pub const HEADER_SIGNATURE: &str = "webhook-signature";

pub struct WebhookChannel {
    name: String,
    url: url::Url,
    /// The one HTTP path, its errors scrubbed of the secret and the configured headers.
    http: Sender,
    /// Configured extra headers, marked sensitive so they stay out of reqwest's Debug output.
    headers: HeaderMap,
    /// The HMAC key: the secret's base64 decoded, `None` when deliveries are unsigned.
    key: Option<Vec<u8>>,
}

impl WebhookChannel {
    /// `index` is the channel's position in `[[notify.webhook]]`, for error locations.
    pub fn new(cfg: &WebhookConfig, index: usize) -> Result<WebhookChannel, ConfigError> {
        let key = cfg.secret.as_ref().map(|s| s.key().to_vec());
        let mut headers = HeaderMap::new();
        let mut secrets: Vec<Secret> = cfg.secret.iter().map(|s| s.text().clone()).collect();
        for (name, value) in &cfg.headers {
            headers.append(name.clone(), value.clone());
            // Checked at load to be visible ASCII, so the text is the bytes as they were written.
            secrets.push(Secret::new(String::from_utf8_lossy(value.as_bytes())));
        }
        let http =
            Sender::new(cfg.timeout, secrets, Label::same("webhook")).map_err(|message| {
                ConfigError {
                    location: format!("notify.webhook[{index}] ({:?}).url", cfg.name),
                    message,
                }
            })?;
        Ok(WebhookChannel {
            name: cfg.name.clone(),
            url: cfg.url.clone(),
            http,
            headers,
            key,
        })
    }

    pub fn is_signed(&self) -> bool {
        self.key.is_some()
    }

    async fn deliver(&self, alert: &Alert) -> Result<(), DeliveryError> {
        let body = render(alert);
        let mut request = self
            .http
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
        // A 429 without Retry-After leaves the wait to the delivery policy's back-off.
        self.http.send_for_status(request.body(body), None).await
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
            account: "default".into(),
            job: Some(JobFacts {
                app_id: "app".into(),
                job_id: "job-0001".into(),
                name: Some("lobby camera".into()),
                ..Default::default()
            }),
            transition: Some(TransitionFacts {
                from: Some("EXECUTING".into()),
                to: "STOPPED".into(),
                observed_at: "2025-01-01T00:00:00.000Z".parse().unwrap(),
                request_id: None,
            }),
            fired_at: "2025-01-01T00:00:00.000Z".parse().unwrap(),
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
        assert_eq!(v["account"], "default", "top level, with one account too");
        let back: Alert = serde_json::from_value(v).unwrap();
        assert_eq!(back, a);
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
