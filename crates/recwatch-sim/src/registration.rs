//! `GET` and `PUT /v2/apps/{app_id}/record-callback`: an app's one record-callback URL, as
//! the real API keeps it (rtc-api.md, "Record callbacks").
//!
//! The gateway checks these like the job API (the signature covers the PUT's body), but they
//! are in the API's other limit group, 60 requests per minute, so they neither use up nor
//! count towards the job group's budget (`SimStats::app_requests` counts them). Fault rules
//! do not apply to them. An app the simulator does not serve is 404 `RTC.00001003`; a PUT
//! whose body is not `{"url", "auth_key"?}` with an http(s) URL of at most 256 characters
//! and a key of 32 to 64 characters is 400 `RTC.00001002`. Both answer
//! `{app_id, record_callback: {url, auth_key, notify_event_subscription, update_time}}`.

use crate::callbacks::Registered;
use crate::gateway::{Refusal, Verdict, throttle_message};
use crate::response::{api_response, error_response};
use crate::script::{fmt_time, plus};
use crate::simulator::Inner;
use axum::body::Bytes;
use axum::extract::{Path, State as AxState};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use recwatch_rtc::Secret;
use recwatch_rtc::registration::{AUTH_KEY_CHARS, MAX_URL_CHARS};
use serde_json::{Value, json};
use std::sync::Arc;
use tokio::time::Instant;

/// The group's limit: requests in any trailing minute.
pub(crate) const APP_GROUP_PER_MINUTE: u32 = 60;

enum Outcome {
    Unauthorized(Refusal),
    Throttled,
    NoApp,
    BadBody(String),
    Registration(Value),
}

pub(crate) async fn api_record_callback(
    AxState(inner): AxState<Arc<Inner>>,
    Path(app_id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = Instant::now();
    let caller = inner.check_credentials(&method, &uri, &headers, &body);
    let update = (method == Method::PUT).then(|| read_update(&body));
    let outcome = {
        let mut guard = inner.lock();
        let s = &mut *guard;
        s.counters.app_requests += 1;
        match s
            .gate
            .check_app_group(&inner.accounts, &inner.opts, &caller, now)
        {
            Verdict::Refused(refusal) => Outcome::Unauthorized(refusal),
            Verdict::Throttled(_) => Outcome::Throttled,
            Verdict::Pass if !s.apps.contains_key(&app_id) => Outcome::NoApp,
            Verdict::Pass => match update {
                Some(Err(why)) => Outcome::BadBody(why),
                Some(Ok((url, auth_key))) => {
                    let update_time = plus(inner.epoch_utc, now.duration_since(inner.epoch));
                    let registered = Registered {
                        url,
                        auth_key,
                        update_time,
                    };
                    let answer = registration_body(&app_id, Some(&registered));
                    s.registrations.insert(app_id.clone(), registered);
                    Outcome::Registration(answer)
                }
                None => {
                    Outcome::Registration(registration_body(&app_id, s.registrations.get(&app_id)))
                }
            },
        }
    };
    if matches!(outcome, Outcome::Registration(_)) && method == Method::PUT {
        inner.registered.send_modify(|n| *n += 1);
    }
    let request_id = inner.request_id();
    let mut response = match outcome {
        Outcome::Registration(answer) => {
            api_response(StatusCode::OK, answer.to_string(), request_id)
        }
        Outcome::Unauthorized(refusal) => {
            error_response(refusal.status, refusal.code, &refusal.message, request_id)
        }
        Outcome::Throttled => error_response(
            StatusCode::TOO_MANY_REQUESTS,
            "APIG.0308",
            &throttle_message(Some(APP_GROUP_PER_MINUTE)).replace("time:1 second", "time:1 minute"),
            request_id,
        ),
        Outcome::NoApp => error_response(
            StatusCode::NOT_FOUND,
            "RTC.00001003",
            &format!("The app does not exist: app_id {app_id}"),
            request_id,
        ),
        Outcome::BadBody(why) => error_response(
            StatusCode::BAD_REQUEST,
            "RTC.00001002",
            &format!("Invalid request body: {why}"),
            request_id,
        ),
    };
    inner.date_header(&mut response);
    response
}

/// The PUT's body as the API checks it: the URL and the key, or why not.
fn read_update(body: &[u8]) -> Result<(String, Option<Secret>), String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|_| "the body is not JSON".to_string())?;
    let url = match value.get("url") {
        Some(Value::String(u)) => u.trim().to_string(),
        Some(_) => return Err("url must be a string".into()),
        None => return Err("url is missing".into()),
    };
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err("url must start with http:// or https://".into());
    }
    if url.chars().count() > MAX_URL_CHARS {
        return Err(format!("url is longer than {MAX_URL_CHARS} characters"));
    }
    let auth_key = match value.get("auth_key") {
        None | Some(Value::Null) => None,
        Some(Value::String(k)) if k.is_empty() => None,
        Some(Value::String(k)) if AUTH_KEY_CHARS.contains(&k.chars().count()) => {
            Some(Secret::new(k.clone()))
        }
        Some(Value::String(_)) => {
            return Err(format!(
                "auth_key must have {} to {} characters",
                AUTH_KEY_CHARS.start(),
                AUTH_KEY_CHARS.end()
            ));
        }
        Some(_) => return Err("auth_key must be a string".into()),
    };
    Ok((url, auth_key))
}

/// `{app_id, record_callback: {...}}`, as both `GET` and `PUT` answer; without a
/// registration, only the app id.
fn registration_body(app_id: &str, registered: Option<&Registered>) -> Value {
    match registered {
        None => json!({ "app_id": app_id }),
        Some(r) => json!({
            "app_id": app_id,
            "record_callback": {
                "url": r.url,
                "auth_key": r.auth_key.as_ref().map(|k| k.expose()).unwrap_or_default(),
                "notify_event_subscription": ["RECORD_NEW_FILE_START", "RECORD_FILE_COMPLETE"],
                "update_time": fmt_time(r.update_time),
            }
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_bodies_table() {
        let key = "k".repeat(32);
        let with_key = format!(r#"{{"url":"https://r.example/cb","auth_key":"{key}"}}"#);
        type Case<'a> = (&'a str, &'a str, Result<(&'a str, bool), &'a str>);
        let cases: &[Case] = &[
            ("url and key", &with_key, Ok(("https://r.example/cb", true))),
            (
                "url only",
                r#"{"url":"http://127.0.0.1:1/cb"}"#,
                Ok(("http://127.0.0.1:1/cb", false)),
            ),
            (
                "an empty key",
                r#"{"url":"http://x/","auth_key":""}"#,
                Ok(("http://x/", false)),
            ),
            ("not JSON", "url=x", Err("not JSON")),
            ("no url", r#"{"auth_key":"x"}"#, Err("url is missing")),
            ("a numeric url", r#"{"url":5}"#, Err("must be a string")),
            ("no scheme", r#"{"url":"r.example/cb"}"#, Err("http://")),
            (
                "a short key",
                r#"{"url":"http://x/","auth_key":"short"}"#,
                Err("32 to 64"),
            ),
        ];
        for (name, body, want) in cases {
            match (read_update(body.as_bytes()), want) {
                (Ok((url, key)), Ok((u, k))) => {
                    assert_eq!((url.as_str(), key.is_some()), (*u, *k), "{name}")
                }
                (Err(e), Err(w)) => assert!(e.contains(w), "{name}: {e}"),
                (got, want) => panic!("{name}: {got:?} / {want:?}"),
            }
        }
    }
}
