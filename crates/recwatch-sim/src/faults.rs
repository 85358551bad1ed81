//! Fault injection: [`Fault`] rules (one job or all, a count or a time), the answer each
//! [`FaultKind`] gives, and the connection reset and cut-short body that only the code owning
//! the connection can produce.

use crate::gateway::throttle_message;
use crate::response::{api_response, error_response};
use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use hyper::body::Frame;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

/// A fault rule: answer matching API requests with `kind` instead of normally.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    pub kind: FaultKind,
    /// Only requests for this job id (any app); all requests when absent.
    #[serde(default)]
    pub job_id: Option<String>,
    /// Only the next n matching requests.
    #[serde(default)]
    pub remaining: Option<u64>,
    /// Only until this time.
    #[serde(default)]
    pub until: Option<DateTime<Utc>>,
}

impl Fault {
    /// A rule for every request, for ever, until [`Simulator::clear_faults`](crate::Simulator::clear_faults).
    pub fn new(kind: FaultKind) -> Fault {
        Fault {
            kind,
            job_id: None,
            remaining: None,
            until: None,
        }
    }

    pub fn for_job(self, job_id: impl Into<String>) -> Fault {
        Fault {
            job_id: Some(job_id.into()),
            ..self
        }
    }

    pub fn times(self, n: u64) -> Fault {
        Fault {
            remaining: Some(n),
            ..self
        }
    }

    /// For `d` from now.
    pub fn lasting(self, d: Duration) -> Fault {
        let until = Utc::now() + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
        Fault {
            until: Some(until),
            ..self
        }
    }

    fn matches(&self, job_id: &str) -> bool {
        self.job_id.as_deref().is_none_or(|j| j == job_id)
    }

    fn expired(&self, now: DateTime<Utc>) -> bool {
        self.remaining == Some(0) || self.until.is_some_and(|u| u <= now)
    }
}

/// How a faulty request is answered. JSON: `"server_error"`, `{"stall": "2s"}`, ...
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// 500 `RTC.00002001`.
    ServerError,
    /// 429 `APIG.0308` with the gateway's message.
    Throttle,
    /// 200 with a body that is not JSON.
    Garbage,
    /// 200 whose `Content-Length` promises more bytes than are sent before the close.
    Truncated,
    /// The connection is closed without any response.
    Reset,
    /// The normal answer, after this long.
    Stall(#[serde(with = "humantime_serde")] Duration),
    /// 401 `APIG.0301`, whatever the credentials.
    RefuseAuth,
    /// 302 to this URL with an HTML body, like a captive portal or a login page in front of
    /// the API. JSON: `{"redirect": "https://..."}`.
    Redirect(String),
    /// 404 `APIG.0101` "The API does not exist", as the gateway answers a wrong path.
    ApiNotFound,
    /// 400 `RTC.00001002` whose `error_msg` quotes the request's `X-Auth-Token` (or
    /// `X-Security-Token`), as a careless service might: recwatch must redact it.
    EchoTokenInError,
    /// 200: the job STOPPED with INTERNAL_ERROR, its `description` quoting the token.
    EchoTokenInDescription,
    /// 200 with exactly this body, as the API might send it: a record with a value no JSON
    /// number type holds (`"max_idle_time": 1e309`), a field of an unexpected shape.
    /// JSON: `{"raw_body": "{...}"}`.
    RawBody(String),
}

/// The first live rule in `faults` matching `job_id` at `now` (the simulator's clock), used up
/// by one; expired rules are dropped on the way.
pub(crate) fn take(faults: &mut Vec<Fault>, job_id: &str, now: DateTime<Utc>) -> Option<FaultKind> {
    if faults.is_empty() {
        return None;
    }
    faults.retain(|f| !f.expired(now));
    let rule = faults.iter_mut().find(|f| f.matches(job_id))?;
    if let Some(n) = rule.remaining.as_mut() {
        *n -= 1;
    }
    Some(rule.kind.clone())
}

/// Marks a response whose connection must be dropped instead of answered.
#[derive(Clone, Copy)]
pub(crate) struct ResetConnection;

/// The answer of an echo fault: it quotes `token`, the request's credential header.
pub(crate) fn echo_response(
    kind: &FaultKind,
    app_id: &str,
    job_id: &str,
    token: &str,
    request_id: HeaderValue,
) -> Response {
    if *kind == FaultKind::EchoTokenInError {
        return error_response(
            StatusCode::BAD_REQUEST,
            "RTC.00001002",
            &format!("Invalid request header X-Auth-Token: {token}"),
            request_id,
        );
    }
    let body = serde_json::json!({
        "job_id": job_id,
        "app_id": app_id,
        "state": "STOPPED",
        "stop_reason": "INTERNAL_ERROR",
        "description": format!("recorder lost its session (X-Auth-Token: {token})"),
    });
    api_response(StatusCode::OK, body.to_string(), request_id)
}

/// The answer of every fault but a stall; `rate_limit` is the one a throttle quotes.
pub(crate) fn fault_response(
    rate_limit: Option<u32>,
    kind: FaultKind,
    app_id: &str,
    job_id: &str,
    request_id: HeaderValue,
) -> Response {
    match kind {
        // Answered in api_get_job, which has the request's headers.
        FaultKind::EchoTokenInError | FaultKind::EchoTokenInDescription => {
            echo_response(&kind, app_id, job_id, "-", request_id)
        }
        FaultKind::ServerError => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "RTC.00002001",
            "Internal error",
            request_id,
        ),
        FaultKind::Throttle => error_response(
            StatusCode::TOO_MANY_REQUESTS,
            "APIG.0308",
            &throttle_message(rate_limit),
            request_id,
        ),
        FaultKind::RefuseAuth => error_response(
            StatusCode::UNAUTHORIZED,
            "APIG.0301",
            "Incorrect IAM authentication information: verify aksk signature fail",
            request_id,
        ),
        FaultKind::Garbage => api_response(
            StatusCode::OK,
            "<html><body>upstream busy</body></html>",
            request_id,
        ),
        FaultKind::Truncated => {
            let partial = format!(r#"{{"job_id":"{job_id}","app_id":"{app_id}","state":"RUNN"#);
            let promised = partial.len() + 64;
            let body = TruncatedBody {
                partial: Some(Bytes::from(partial)),
                pause: Box::pin(tokio::time::sleep(Duration::from_millis(20))),
            };
            let mut response = api_response(StatusCode::OK, Body::new(body), request_id);
            // The body's size is unknown to hyper, so it sends this header as is.
            response
                .headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(promised));
            response
        }
        FaultKind::Reset => {
            let mut response = StatusCode::INTERNAL_SERVER_ERROR.into_response();
            response.extensions_mut().insert(ResetConnection);
            response
        }
        FaultKind::Redirect(to) => {
            let mut response = api_response(
                StatusCode::FOUND,
                "<html><body>Moved: sign in first</body></html>",
                request_id,
            );
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
            if let Ok(to) = HeaderValue::from_str(&to) {
                headers.insert(header::LOCATION, to);
            }
            response
        }
        FaultKind::ApiNotFound => error_response(
            StatusCode::NOT_FOUND,
            "APIG.0101",
            "The API does not exist or has not been published in the environment",
            request_id,
        ),
        FaultKind::RawBody(body) => api_response(StatusCode::OK, body, request_id),
        // Stall is applied before answering normally; it never gets here.
        FaultKind::Stall(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Sends `partial`, pauses so hyper flushes it, then fails: hyper closes the connection short
/// of the promised Content-Length. (Ending the body early instead would let hyper drop the
/// unflushed bytes with the connection.)
struct TruncatedBody {
    partial: Option<Bytes>,
    pause: Pin<Box<tokio::time::Sleep>>,
}

impl hyper::body::Body for TruncatedBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(partial) = self.partial.take() {
            return Poll::Ready(Some(Ok(Frame::data(partial))));
        }
        ready!(self.pause.as_mut().poll(cx));
        Poll::Ready(Some(Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "truncated on purpose",
        ))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_json_shapes() {
        let fault: Fault = serde_json::from_str(r#"{"kind": {"stall": "1s 500ms"}}"#).unwrap();
        assert_eq!(
            fault,
            Fault::new(FaultKind::Stall(Duration::from_millis(1500)))
        );
        let json =
            serde_json::to_value(Fault::new(FaultKind::Reset).for_job("j").times(2)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"kind": "reset", "job_id": "j", "remaining": 2, "until": null})
        );
    }

    #[test]
    fn the_first_live_matching_rule_applies_and_is_used_up() {
        let now = Utc::now();
        let expired = Fault {
            until: Some(now - chrono::Duration::seconds(1)),
            ..Fault::new(FaultKind::Reset)
        };
        let mut rules = vec![
            expired,
            Fault::new(FaultKind::ServerError).for_job("j1").times(1),
            Fault::new(FaultKind::Throttle),
        ];
        assert_eq!(
            take(&mut rules, "j2", now),
            Some(FaultKind::Throttle),
            "the expired rule and another job's are passed over"
        );
        assert_eq!(rules.len(), 2, "the expired rule is dropped");
        assert_eq!(take(&mut rules, "j1", now), Some(FaultKind::ServerError));
        assert_eq!(
            take(&mut rules, "j1", now),
            Some(FaultKind::Throttle),
            "used up: the next matching rule applies"
        );
        assert_eq!(rules.len(), 1);
        assert_eq!(take(&mut Vec::new(), "j1", now), None);
    }
}
