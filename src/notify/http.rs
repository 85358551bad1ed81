//! The one HTTP delivery path: a webhook, a chat vendor, PagerDuty and the callback relay
//! (`deliver/forward.rs`) all send a request they prepared (URL, headers, body, signature)
//! through a [`Sender`] and read its [`Answer`] the same way: the status, `Retry-After`, and
//! at most [`BODY_BYTES`] of the body with every secret scrubbed out.
//!
//! What an answer means is classified here once: [`Sender::status_error`] for the HTTP status
//! (every receiver), [`code_verdict`] for the vendors that answer 200 with an error
//! code in the body. Each caller keeps only what is its own: its format, its signing, its
//! vendor's codes (the shape of Alertmanager's `notify.Retrier` beside each notifier).

use super::{DeliveryError, Retry, chain, redact, snippet};
use crate::secret::Secret;
use reqwest::StatusCode;
use reqwest::header::{DATE, HeaderValue, RETRY_AFTER};
use std::time::Duration;

/// How much of an answer's body is read at most, for every receiver.
pub const BODY_BYTES: usize = 8192;
/// How much of an answer goes into an error, in characters.
pub const SNIPPET_CHARS: usize = 300;

/// How errors name the receiver: `"{request} request failed: ..."` when no answer came,
/// `"{answer} answered HTTP ..."` when one did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Label {
    pub request: &'static str,
    pub answer: &'static str,
}

impl Label {
    /// One name for both: "webhook", "Feishu"...
    pub const fn same(name: &'static str) -> Label {
        Label {
            request: name,
            answer: name,
        }
    }
}

/// One client (no redirects: a signed or keyed request goes only where it was configured to
/// go), the texts to scrub from errors, the timeout and how errors name the receiver.
pub struct Sender {
    client: reqwest::Client,
    secrets: Vec<Secret>,
    timeout: Duration,
    label: Label,
}

/// What the receiver answered.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: StatusCode,
    /// `Retry-After`, parsed.
    pub retry_after: Option<Duration>,
    /// The body's start (at most [`BODY_BYTES`]), secrets scrubbed.
    pub body: String,
}

impl Sender {
    /// A sender whose whole exchange (connection included) takes at most `timeout`. The error
    /// is the reason the client could not be built, for the caller's `ConfigError`.
    pub fn new(timeout: Duration, secrets: Vec<Secret>, label: Label) -> Result<Sender, String> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("recwatch/", env!("CARGO_PKG_VERSION")))
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {}", chain(&e.without_url())))?;
        Ok(Sender {
            client,
            secrets,
            timeout,
            label,
        })
    }

    /// A POST to `url`, to prepare (headers, body) and hand to [`Sender::send`].
    pub fn post(&self, url: url::Url) -> reqwest::RequestBuilder {
        self.client.post(url)
    }

    /// Sends `request` and reads the answer; a transport failure (no connection, a timeout)
    /// is an error that may pass.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Result<Answer, DeliveryError> {
        let response = self.exchange(request).await?;
        Ok(self.read(response).await)
    }

    /// Sends `request` and accepts any 2xx without reading its body, for receivers whose
    /// answer carries no verdict of its own (webhooks, Slack, Teams, the relay); anything else
    /// is read by [`Sender::status_error`] with `throttled`.
    pub async fn send_for_status(
        &self,
        request: reqwest::RequestBuilder,
        throttled: Option<Duration>,
    ) -> Result<(), DeliveryError> {
        let response = self.exchange(request).await?;
        if response.status().is_success() {
            return Ok(());
        }
        Err(self.status_error(&self.read(response).await, throttled))
    }

    /// The answer's status, `Retry-After` and body start; a body that fails half-way is read
    /// as far as it came (it is only for the operator).
    async fn read(&self, mut response: reqwest::Response) -> Answer {
        let (status, retry_after) = head(&response);
        let mut buf = Vec::new();
        while buf.len() < BODY_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => buf.extend_from_slice(&chunk),
                Ok(None) | Err(_) => break,
            }
        }
        buf.truncate(BODY_BYTES);
        Answer {
            status,
            retry_after,
            body: self.scrub(&String::from_utf8_lossy(&buf)),
        }
    }

    async fn exchange(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, DeliveryError> {
        request.send().await.map_err(|e| {
            let cause = if e.is_timeout() {
                format!(
                    "no answer within {}",
                    humantime::format_duration(self.timeout)
                )
            } else {
                // without_url: a receiver's URL often carries a token in its path or query.
                chain(&e.without_url())
            };
            DeliveryError::transient(
                self.scrub(&format!("{} request failed: {cause}", self.label.request)),
            )
        })
    }

    /// What a non-2xx answer means: 429 waits (`Retry-After`, else `throttled`; `None` leaves
    /// the wait to the delivery policy's back-off), 5xx and 408 back off, anything else (3xx,
    /// 4xx) is a refusal someone has to fix (retried every `notify.max_backoff`).
    pub fn status_error(&self, answer: &Answer, throttled: Option<Duration>) -> DeliveryError {
        status_error(self.label.answer, answer, throttled)
    }

    fn scrub(&self, text: &str) -> String {
        redact(text, &self.secrets)
    }
}

/// The status and the parsed `Retry-After` (measured against the answer's own `Date`).
fn head(response: &reqwest::Response) -> (StatusCode, Option<Duration>) {
    let header = |name| {
        response
            .headers()
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let wait = header(RETRY_AFTER).and_then(|v| retry_after(v, header(DATE), chrono::Utc::now()));
    (response.status(), wait)
}

/// See [`Sender::status_error`]; `who` names the receiver.
pub fn status_error(who: &str, answer: &Answer, throttled: Option<Duration>) -> DeliveryError {
    let status = answer.status;
    let retry = if status == StatusCode::TOO_MANY_REQUESTS {
        Retry::After(answer.retry_after.or(throttled))
    } else if status == StatusCode::REQUEST_TIMEOUT || status.is_server_error() {
        Retry::Backoff
    } else {
        Retry::Refused
    };
    let mut message = format!("{who} answered HTTP {status}");
    if status.is_redirection() {
        message.push_str(" (redirects are not followed; configure the final URL)");
    }
    let text = snippet(&answer.body, SNIPPET_CHARS);
    if !text.is_empty() {
        message.push_str(": ");
        message.push_str(&text);
    }
    DeliveryError { retry, message }
}

/// Where a vendor's 200 answer keeps its verdict, and what each code means.
pub struct Codes {
    /// The keys the result code may be under, tried in order.
    pub code: &'static [&'static str],
    /// The keys the vendor's message may be under.
    pub message: &'static [&'static str],
    /// How to retry a non-zero code.
    pub classify: fn(i64) -> Retry,
}

/// The verdict of a vendor that answers 200 with `{code, msg}` in the body (Feishu,
/// DingTalk, WeCom): code 0 is a success; `codes.classify` says how to retry any other code.
/// The error names the code and the vendor's message, e.g. `19021 sign match fail`; `who`
/// names the vendor.
pub fn code_verdict(who: &str, answer: &Answer, codes: &Codes) -> Result<(), DeliveryError> {
    if !answer.status.is_success() {
        return Err(status_error(who, answer, Some(Duration::from_secs(60))));
    }
    let json: Option<serde_json::Value> = serde_json::from_str(&answer.body).ok();
    let field = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| json.as_ref().and_then(|j| j.get(*k)).cloned())
    };
    let Some(code) = field(codes.code).and_then(|c| c.as_i64()) else {
        // Not the vendor's answer (a proxy's page?): it may not have been delivered.
        return Err(DeliveryError::transient(format!(
            "{who} answered HTTP {} without a result code: {}",
            answer.status,
            snippet(&answer.body, SNIPPET_CHARS)
        )));
    };
    if code == 0 {
        return Ok(());
    }
    let msg = field(codes.message)
        .and_then(|m| m.as_str().map(str::to_string))
        .unwrap_or_default();
    let retry = (codes.classify)(code);
    let what = match retry {
        Retry::After(_) => "is throttling this robot",
        Retry::Backoff => "could not take the message now",
        _ => "refused the message",
    };
    Err(DeliveryError {
        retry,
        message: format!(
            "{who} {what}: {}",
            snippet(&format!("{code} {msg}"), SNIPPET_CHARS)
        ),
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, after: Option<Duration>, body: &str) -> Answer {
        Answer {
            status: StatusCode::from_u16(status).unwrap(),
            retry_after: after,
            body: body.into(),
        }
    }

    /// (name, status, Retry-After, retry with no throttle default, retry with 30 s)
    #[test]
    fn statuses_are_classified() {
        let s = Duration::from_secs;
        let later = Some(s(7));
        let cases: &[(&str, u16, Option<Duration>, Retry, Retry)] = &[
            ("moved", 301, None, Retry::Refused, Retry::Refused),
            (
                "temporary redirect",
                307,
                None,
                Retry::Refused,
                Retry::Refused,
            ),
            ("bad request", 400, None, Retry::Refused, Retry::Refused),
            ("unauthorized", 401, None, Retry::Refused, Retry::Refused),
            ("forbidden", 403, None, Retry::Refused, Retry::Refused),
            ("not found", 404, None, Retry::Refused, Retry::Refused),
            ("gone", 410, None, Retry::Refused, Retry::Refused),
            (
                "payload too large",
                413,
                None,
                Retry::Refused,
                Retry::Refused,
            ),
            ("unprocessable", 422, None, Retry::Refused, Retry::Refused),
            ("request timeout", 408, None, Retry::Backoff, Retry::Backoff),
            (
                "too many requests",
                429,
                None,
                Retry::After(None),
                Retry::After(Some(s(30))),
            ),
            (
                "too many requests, told when",
                429,
                later,
                Retry::After(later),
                Retry::After(later),
            ),
            ("internal error", 500, None, Retry::Backoff, Retry::Backoff),
            ("bad gateway", 502, None, Retry::Backoff, Retry::Backoff),
            ("unavailable", 503, later, Retry::Backoff, Retry::Backoff),
            ("gateway timeout", 504, None, Retry::Backoff, Retry::Backoff),
        ];
        for (name, code, after, bare, defaulted) in cases {
            let a = answer(*code, *after, "why");
            let e = status_error("webhook", &a, None);
            assert_eq!(e.retry, *bare, "{name}");
            assert_eq!(status_error("Slack", &a, Some(s(30))).retry, *defaulted);
            assert!(
                e.message
                    .starts_with(&format!("webhook answered HTTP {code}")),
                "{name}: {}",
                e.message
            );
            assert!(e.message.ends_with(": why"), "{name}: {}", e.message);
        }
        let e = status_error("webhook", &answer(302, None, ""), None);
        assert_eq!(
            e.message,
            "webhook answered HTTP 302 Found (redirects are not followed; configure the final URL)"
        );
    }

    #[test]
    fn code_verdicts_table() {
        fn classify(code: i64) -> Retry {
            if code == 130101 {
                Retry::After(Some(Duration::from_secs(600)))
            } else {
                Retry::Refused
            }
        }
        let codes = Codes {
            code: &["errcode", "StatusCode"],
            message: &["errmsg"],
            classify,
        };
        let ok = |status: u16, body: &str| answer(status, None, body);
        // (name, answer, retry or None for success, words of the message)
        let cases: Vec<(&str, Answer, Option<Retry>, &str)> = vec![
            ("ok", ok(200, r#"{"errcode":0,"errmsg":"ok"}"#), None, ""),
            (
                "200 with an error",
                ok(200, r#"{"errcode":310000,"errmsg":"sign not match"}"#),
                Some(Retry::Refused),
                "refused the message: 310000 sign not match",
            ),
            (
                "throttled",
                ok(200, r#"{"errcode":130101,"errmsg":"send too fast"}"#),
                Some(Retry::After(Some(Duration::from_secs(600)))),
                "throttling this robot: 130101 send too fast",
            ),
            (
                "the second code key",
                ok(200, r#"{"StatusCode":0}"#),
                None,
                "",
            ),
            (
                "no code: maybe not delivered",
                ok(200, "<html>proxy</html>"),
                Some(Retry::Backoff),
                "without a result code",
            ),
            (
                "HTTP 502",
                ok(502, "bad gateway"),
                Some(Retry::Backoff),
                "HTTP 502 Bad Gateway: bad gateway",
            ),
            (
                "HTTP 429 without Retry-After waits a minute",
                ok(429, ""),
                Some(Retry::After(Some(Duration::from_secs(60)))),
                "HTTP 429",
            ),
            ("HTTP 404", ok(404, ""), Some(Retry::Refused), "HTTP 404"),
        ];
        for (name, a, want, words) in cases {
            match (code_verdict("DingTalk", &a, &codes), want) {
                (Ok(()), None) => {}
                (Err(e), Some(retry)) => {
                    assert_eq!(e.retry, retry, "{name}");
                    assert!(e.message.contains(words), "{name}: {}", e.message);
                    assert!(e.message.starts_with("DingTalk"), "{name}: {}", e.message);
                }
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
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
}
