//! `POST /api/v1/silences` and `DELETE /api/v1/silences/{id}`: silences added and expired over
//! HTTP, behind the same bearer token as the watch list's writes (`crate::http::auth`). The input is
//! checked by the same [`NewSilence::new`] as `recwatch silence add`, so both refuse the same
//! things with the same words; the silence is written to the database, where the delivery
//! lanes read it before every send, so it holds the next notification of a running daemon.

use crate::domain::Rule;
use crate::hold::domain::{Matchers, NewSilence, SilenceEnd, silence_id};
use crate::http::AppState;
use crate::http::auth::{WriteAccess, count_write};
use crate::http::{refuse, unavailable};
use crate::store::Expired;
use axum::Json;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use std::net::SocketAddr;
use tracing::info;

/// The largest body `POST /api/v1/silences` reads: a silence is a few hundred bytes.
const MAX_BODY_BYTES: usize = 16 * 1024;

const SHAPE: &str = r#"send JSON like {"job_id": "...", "for": "2h", "comment": "re-deploying the recorder"} (matchers app_id, job_id, rule: at least one; "for" or "until" (RFC 3339); "comment"; "author" optional)"#;

/// The body of `POST /api/v1/silences`: the CLI's options by their names.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSilenceBody {
    app_id: Option<String>,
    job_id: Option<String>,
    rule: Option<String>,
    #[serde(rename = "for")]
    for_: Option<String>,
    until: Option<String>,
    comment: Option<String>,
    author: Option<String>,
}

/// Reads a body into a checked silence, or says what is wrong with it. Pure but for `now`.
fn checked(body: &[u8], now: DateTime<Utc>) -> Result<NewSilence, String> {
    let b: NewSilenceBody = serde_json::from_slice(body)
        .map_err(|e| format!("the body is not a silence: {e}; {SHAPE}"))?;
    let rule = match b.rule.as_deref() {
        None => None,
        Some(r) => Some(Rule::parse(r).filter(|r| *r != Rule::Test).ok_or_else(|| {
            let names: Vec<&str> = Rule::ALL.iter().map(|r| r.as_str()).collect();
            format!("rule {r:?} is not a rule; use one of {}", names.join(", "))
        })?),
    };
    let end = match (b.for_.as_deref(), b.until.as_deref()) {
        (Some(d), None) => SilenceEnd::For(
            crate::config::parse_duration(d).map_err(|e| format!("for {d:?}: {e}"))?,
        ),
        (None, Some(t)) => {
            SilenceEnd::Until(crate::domain::read_rfc3339(t.trim()).map_err(|e| {
                format!(
                    "until {t:?} is not an RFC 3339 time ({e}); write e.g. 2026-05-01T08:00:00Z"
                )
            })?)
        }
        _ => {
            return Err(format!(
                "give exactly one of \"for\" and \"until\"; {SHAPE}"
            ));
        }
    };
    let matchers = Matchers {
        app_id: b.app_id,
        job_id: b.job_id,
        rule,
    };
    let comment = b.comment.unwrap_or_default();
    NewSilence::new(matchers, None, end, &comment, b.author.as_deref(), now)
}

pub(crate) async fn add(
    _: WriteAccess,
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Body,
) -> Response {
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        return refuse(
            peer,
            StatusCode::PAYLOAD_TOO_LARGE,
            "bad_request",
            format!("the body is over {MAX_BODY_BYTES} bytes; {SHAPE}"),
        );
    };
    let now = Utc::now();
    let new = match checked(&body, now) {
        Ok(n) => n,
        Err(m) => {
            return refuse(
                peer,
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("no silence was added: {m}"),
            );
        }
    };
    match s.store.silences().add(&silence_id(), &new, now).await {
        Ok(silence) => {
            info!(%peer, id = %silence.id, "API: silence added");
            count_write("created");
            let config = s.config.borrow().clone();
            let runtime = s.watchlist.current();
            let entries = crate::runtime_list::entries(&config, &runtime);
            let warning = silence.matchers.unwatched(entries.iter().map(|e| e.key()));
            let mut answer = serde_json::to_value(silence.view(now)).unwrap_or_default();
            // Accepted either way (a job may be silenced just before it is watched), but the
            // caller is told, as the CLI tells its user.
            if let (Some(w), Some(o)) = (warning, answer.as_object_mut()) {
                o.insert("warning".into(), w.into());
            }
            (StatusCode::CREATED, Json(answer)).into_response()
        }
        Err(e) => unavailable(peer, e),
    }
}

pub(crate) async fn expire(
    _: WriteAccess,
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
) -> Response {
    let now = Utc::now();
    match s.store.silences().expire(&id, now).await {
        Ok(Expired::Now(silence)) => {
            info!(%peer, id = %silence.id, "API: silence expired");
            count_write("deleted");
            Json(silence.view(now)).into_response()
        }
        Ok(Expired::Already(silence)) => {
            count_write("exists");
            Json(silence.view(now)).into_response()
        }
        Ok(Expired::NotFound) => refuse(
            peer,
            StatusCode::NOT_FOUND,
            "not_found",
            "no such silence; GET /api/v1/silences?all=true lists every one".into(),
        ),
        Err(e) => unavailable(peer, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_table() {
        let now = Utc::now();
        let soon = (now + chrono::Duration::hours(3)).to_rfc3339();
        let until = format!(r#"{{"app_id":"a","until":"{soon}","comment":"x"}}"#);
        let cases: &[(&str, &str, Result<(), &str>)] = &[
            (
                "a job for two hours",
                r#"{"job_id":"j1","for":"2h","comment":"deploy"}"#,
                Ok(()),
            ),
            ("an app until a time", until.as_str(), Ok(())),
            (
                "a rule",
                r#"{"rule":"idle_timeout","for":"1h","comment":"x","author":"me"}"#,
                Ok(()),
            ),
            (
                "no matcher",
                r#"{"for":"1h","comment":"x"}"#,
                Err("no matcher"),
            ),
            ("no comment", r#"{"job_id":"j","for":"1h"}"#, Err("comment")),
            (
                "both ends",
                r#"{"job_id":"j","for":"1h","until":"2099-01-01T00:00:00Z","comment":"x"}"#,
                Err("exactly one"),
            ),
            (
                "no end",
                r#"{"job_id":"j","comment":"x"}"#,
                Err("exactly one"),
            ),
            (
                "bad duration",
                r#"{"job_id":"j","for":"soon","comment":"x"}"#,
                Err("for \"soon\""),
            ),
            (
                "bad time",
                r#"{"job_id":"j","until":"tomorrow","comment":"x"}"#,
                Err("RFC 3339"),
            ),
            (
                "unknown rule",
                r#"{"rule":"nope","for":"1h","comment":"x"}"#,
                Err("is not a rule"),
            ),
            (
                "unknown field",
                r#"{"job":"j","for":"1h","comment":"x"}"#,
                Err("unknown field"),
            ),
            ("not json", "job=j", Err("not a silence")),
            (
                "a bad id",
                r#"{"job_id":"..","for":"1h","comment":"x"}"#,
                Err("job_id"),
            ),
        ];
        for (name, body, want) in cases {
            let got = checked(body.as_bytes(), now);
            match (want, &got) {
                (Ok(()), Ok(_)) => {}
                (Err(needle), Err(m)) => {
                    assert!(m.contains(needle), "{name}: {m:?} lacks {needle:?}")
                }
                _ => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
    }
}
