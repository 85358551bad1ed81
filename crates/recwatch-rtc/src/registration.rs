//! An app's record-callback registration: `GET` and `PUT /v2/apps/{app_id}/record-callback`.
//!
//! RTC keeps one callback URL per app (rtc-api.md, "Record callbacks"). `PUT` takes
//! `{"url", "auth_key"}` (`auth_key` optional, 32-64 characters: without one RTC signs
//! nothing); both calls answer `{app_id, record_callback: {url, auth_key,
//! notify_event_subscription, update_time}}`, as the SDK's `ShowRecordCallbackResponse` and
//! `UpdateRecordCallbackResponse` read it. These calls are in the API's 60 requests/min group,
//! not the job group's 10/s, and share the client's signing and typed errors
//! ([`ErrorKind`]).
//!
//! Reading the answer is a pure function ([`parse_registration`]), as lenient as the job
//! model: every field may be absent, ids may be numbers, and the key is a [`Secret`] from
//! the moment it is read.

use crate::client::{ErrorKind, RtcClient, RtcError};
use crate::secret::Secret;
use crate::sign;
use serde_json::Value;

/// The longest URL the API takes (`AppCallbackUrlReq`: 1 to 256 characters).
pub const MAX_URL_CHARS: usize = 256;
/// The `auth_key` the API takes: 32 to 64 characters.
pub const AUTH_KEY_CHARS: std::ops::RangeInclusive<usize> = 32..=64;

/// What an app has registered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Registration {
    /// The app the answer is about, when it says.
    pub app_id: Option<String>,
    /// The registered URL; `None` (or empty, read as `None`) when there is none.
    pub url: Option<String>,
    /// The key RTC signs callbacks with; `None` when callbacks go out unsigned.
    pub auth_key: Option<Secret>,
    /// The events the app is subscribed to (`RECORD_NEW_FILE_START`, ...), as sent.
    pub notify_event_subscription: Vec<String>,
    /// When the registration last changed, as the API writes it.
    pub update_time: Option<String>,
    /// The `X-Request-Id` answer header.
    pub request_id: Option<String>,
}

/// The body of `PUT /v2/apps/{app_id}/record-callback`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallbackUpdate {
    pub url: String,
    pub auth_key: Option<Secret>,
}

impl CallbackUpdate {
    /// Checks what the API checks before sending anything: a URL of 1 to 256 characters that
    /// starts with `http://` or `https://`, a key of 32 to 64 characters.
    pub fn new(url: &str, auth_key: Option<Secret>) -> Result<CallbackUpdate, String> {
        let url = url.trim();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!(
                "{url:?} is not an http:// or https:// URL; RTC POSTs callbacks only to those"
            ));
        }
        if url.chars().count() > MAX_URL_CHARS {
            return Err(format!(
                "the URL has {} characters; RTC takes at most {MAX_URL_CHARS}",
                url.chars().count()
            ));
        }
        if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(format!("{url:?} has a space or control character"));
        }
        if let Some(key) = &auth_key {
            let n = key.expose().chars().count();
            if !AUTH_KEY_CHARS.contains(&n) {
                return Err(format!(
                    "the auth_key has {n} characters; RTC takes {} to {} (set a longer one in the app's [[apps]] auth_key and in the RTC console)",
                    AUTH_KEY_CHARS.start(),
                    AUTH_KEY_CHARS.end()
                ));
            }
        }
        Ok(CallbackUpdate {
            url: url.to_string(),
            auth_key,
        })
    }

    /// The JSON body, exactly as sent and signed.
    pub fn body(&self) -> Vec<u8> {
        let mut body = serde_json::Map::new();
        body.insert("url".into(), Value::String(self.url.clone()));
        if let Some(key) = &self.auth_key {
            body.insert("auth_key".into(), Value::String(key.expose().to_string()));
        }
        serde_json::to_vec(&Value::Object(body)).expect("a JSON object always serializes")
    }
}

/// Reads a 2xx answer of either call. Pure. Fails only when the body is not a JSON object;
/// an object without `record_callback` is an app with nothing registered.
pub fn parse_registration(body: &[u8]) -> Result<Registration, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(top) = value else {
        return Err("not a JSON object".into());
    };
    let text = |v: Option<&Value>| match v {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let callback = top.get("record_callback").and_then(Value::as_object);
    let field = |name: &str| callback.and_then(|c| c.get(name));
    let notify_event_subscription = match field("notify_event_subscription") {
        Some(Value::Array(items)) => items.iter().filter_map(|v| text(Some(v))).collect(),
        // One event given as a string rather than a list.
        Some(v @ Value::String(_)) => text(Some(v)).into_iter().collect(),
        _ => Vec::new(),
    };
    Ok(Registration {
        app_id: text(top.get("app_id")),
        url: text(field("url")),
        auth_key: text(field("auth_key")).map(Secret::new),
        notify_event_subscription,
        update_time: text(field("update_time")),
        request_id: None,
    })
}

impl RtcClient {
    /// The path of an app's record-callback registration, the id encoded as a whole segment.
    pub fn record_callback_path(&self, app_id: &str) -> String {
        format!(
            "{}/v2/apps/{}/record-callback",
            self.base_path(),
            sign::encode(app_id)
        )
    }

    /// `GET /v2/apps/{app_id}/record-callback`: what the app has registered.
    pub async fn get_record_callback(&self, app_id: &str) -> Result<Registration, RtcError> {
        let path = self.record_callback_path(app_id);
        self.registration(reqwest::Method::GET, &path, None).await
    }

    /// `PUT /v2/apps/{app_id}/record-callback`: registers `update` (replacing whatever was
    /// there) and answers the registration as RTC now holds it.
    pub async fn put_record_callback(
        &self,
        app_id: &str,
        update: &CallbackUpdate,
    ) -> Result<Registration, RtcError> {
        let path = self.record_callback_path(app_id);
        self.registration(reqwest::Method::PUT, &path, Some(update.body()))
            .await
    }

    async fn registration(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Registration, RtcError> {
        let answer = self
            .send(method, path, body)
            .await
            .map_err(|e| self.clean_error(e))?;
        if !answer.is_success() {
            return Err(self.clean_error(answer.into_error()));
        }
        let mut registration = parse_registration(&answer.body).map_err(|why| {
            self.clean_error(RtcError {
                kind: ErrorKind::BadResponse,
                status: Some(answer.status),
                error_code: None,
                error_msg: None,
                request_id: answer.request_id.clone(),
                detail: Some(format!(
                    "the answer is not a record-callback registration: {why}"
                )),
                clock_skew_minutes: None,
                not_sent: false,
            })
        })?;
        registration.url = registration.url.map(|u| self.redact(&u));
        registration.request_id = answer.request_id.map(|id| self.redact(&id));
        Ok(registration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (name, body, url, has key, subscription, app id)
    type AnswerCase<'a> = (
        &'a str,
        &'a str,
        Option<&'a str>,
        bool,
        &'a [&'a str],
        Option<&'a str>,
    );

    #[test]
    fn answers_table() {
        let cases: &[AnswerCase] = &[
            (
                "the documented shape",
                r#"{"app_id":"5fcd","record_callback":{"url":"https://a.example/cb","auth_key":"0123456789abcdef0123456789abcdef","notify_event_subscription":["RECORD_NEW_FILE_START","RECORD_FILE_COMPLETE"],"update_time":"2026-11-28T06:00:00.000Z"}}"#,
                Some("https://a.example/cb"),
                true,
                &["RECORD_NEW_FILE_START", "RECORD_FILE_COMPLETE"],
                Some("5fcd"),
            ),
            (
                "nothing registered",
                r#"{"app_id":"5fcd"}"#,
                None,
                false,
                &[],
                Some("5fcd"),
            ),
            (
                "an empty url and key are none",
                r#"{"record_callback":{"url":"","auth_key":" "}}"#,
                None,
                false,
                &[],
                None,
            ),
            (
                "a numeric app id, one event as a string",
                r#"{"app_id":5678,"record_callback":{"url":"http://x/","notify_event_subscription":"RECORD_FILE_COMPLETE"}}"#,
                Some("http://x/"),
                false,
                &["RECORD_FILE_COMPLETE"],
                Some("5678"),
            ),
            ("an empty object", "{}", None, false, &[], None),
        ];
        for (name, body, url, key, events, app) in cases {
            let r = parse_registration(body.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(r.url.as_deref(), *url, "{name}");
            assert_eq!(r.auth_key.is_some(), *key, "{name}");
            assert_eq!(r.notify_event_subscription, *events, "{name}");
            assert_eq!(r.app_id.as_deref(), *app, "{name}");
        }
        for bad in ["", "[]", "<html>", "\"text\""] {
            assert!(parse_registration(bad.as_bytes()).is_err(), "{bad:?}");
        }
        // The key never prints.
        let r = parse_registration(cases[0].1.as_bytes()).unwrap();
        assert!(!format!("{r:?}").contains("0123456789abcdef"));
    }

    /// The PUT is signed over its body: the Authorization verifies against exactly the headers
    /// and bytes sent, and would not for another body.
    #[test]
    fn a_put_is_signed_over_its_body() {
        let config = crate::ClientConfig::new(
            "http://127.0.0.1:8086/proxy".parse().unwrap(),
            crate::Auth::AkSk {
                access_key: "AK".into(),
                secret_key: Secret::new("SK"),
                security_token: None,
            },
        );
        let client = RtcClient::new(&config).unwrap();
        let path = client.record_callback_path("app/1");
        assert_eq!(path, "/proxy/v2/apps/app%2F1/record-callback");
        let body = CallbackUpdate::new("https://r.example/cb", None)
            .unwrap()
            .body();
        let headers = client.headers_for("PUT", &path, &body, chrono::Utc::now());
        let auth = &headers
            .iter()
            .find(|(k, _)| *k == "Authorization")
            .unwrap()
            .1;
        let pairs: Vec<(&str, &str)> = headers
            .iter()
            .filter(|(k, _)| *k != "Authorization")
            .map(|(k, v)| (*k, v.as_str()))
            .collect();
        assert_eq!(
            &sign::sign("AK", "SK", "PUT", &path, &[], &pairs, &body).authorization,
            auth
        );
        assert_ne!(
            &sign::sign("AK", "SK", "PUT", &path, &[], &pairs, b"{}").authorization,
            auth
        );
        assert_ne!(
            &sign::sign("AK", "SK", "GET", &path, &[], &pairs, &body).authorization,
            auth
        );
    }

    #[test]
    fn updates_table() {
        let key32 = || Some(Secret::new("k".repeat(32)));
        let long = format!("https://x.example/{}", "a".repeat(240));
        let cases: &[(&str, &str, Option<Secret>, Option<&str>)] = &[
            ("https with a key", "https://r.example/cb", key32(), None),
            ("http without a key", "http://127.0.0.1:9188/cb", None, None),
            ("no scheme", "r.example/cb", None, Some("not an http")),
            ("ftp", "ftp://r.example/cb", None, Some("not an http")),
            ("too long", &long, None, Some("at most 256")),
            ("a space", "https://r.example/a b", None, Some("space")),
            (
                "a short key",
                "https://r.example/cb",
                Some(Secret::new("short")),
                Some("32 to 64"),
            ),
            (
                "a long key",
                "https://r.example/cb",
                Some(Secret::new("k".repeat(65))),
                Some("32 to 64"),
            ),
        ];
        for (name, url, key, err) in cases {
            match (CallbackUpdate::new(url, key.clone()), err) {
                (Ok(_), None) => {}
                (Err(e), Some(want)) => {
                    assert!(e.contains(want), "{name}: {e}");
                    assert!(!e.contains("kkkk"), "{name}: the key leaked: {e}");
                }
                (got, want) => panic!("{name}: {got:?}, wanted error {want:?}"),
            }
        }
        let body = CallbackUpdate::new("https://r.example/cb", key32())
            .unwrap()
            .body();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["url"], "https://r.example/cb");
        assert_eq!(v["auth_key"], "k".repeat(32));
        let bare = CallbackUpdate::new("https://r.example/cb", None)
            .unwrap()
            .body();
        assert_eq!(bare, br#"{"url":"https://r.example/cb"}"#);
    }
}
