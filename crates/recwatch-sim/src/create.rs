//! Creating and stopping jobs: `POST /v2/apps/{app_id}/{individual,mix}-stream-jobs` and
//! `DELETE .../{job_id}`, checked by the gateway like a poll (the create's signature covers
//! its body) and counted in the job group's budget.
//!
//! A create answers 201 with the new job's record (job `created-0001`, `created-0002`, ...):
//! INIT for `step`, then RUNNING until changed, as a scripted job starts. Every job a create
//! made is kept with the request it was made from ([`CreatedJob`], `GET /_sim/created`), so a
//! test can check that a re-created job got identical parameters. A stop answers 204 and the
//! job goes STOPPED with `TENANT_STOP`; stopping a stopped job is 400 `RTC.00001009` (the
//! simulator's choice of code from the documented range).
//!
//! [`CreateFault`] rules apply to creates only (the poll faults never do), after the gateway
//! and the body's checks, because that is where the real failures happen: the RTC service
//! refusing (the app deactivated), throttling, failing after it made the job (a job exists
//! though the caller saw an error), or never answering.

use crate::gateway::{Caller, Refusal, Verdict, throttle_message};
use crate::response::{api_response, error_response};
use crate::script::{fmt_time, plus};
use crate::simulator::{Inner, Job, Shared, stopped};
use axum::body::Bytes;
use axum::extract::{Path, State as AxState};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use chrono::{DateTime, Utc};
use recwatch_rtc::model::{JobSnapshot, State, StopReason};
use recwatch_rtc::{CreateRequest, Kind};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// A job a create made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedJob {
    pub kind: Kind,
    pub app_id: String,
    pub job_id: String,
    /// The create's body as received.
    pub request: serde_json::Value,
    pub at: DateTime<Utc>,
    /// What the caller was answered: 201, or 500 under a `server_error` fault (a stalled
    /// create is 201, sent late if anyone still listens).
    pub status: u16,
}

/// A fault rule for creates: the next matching creates (`remaining` of them, else all) meet
/// `kind`. JSON: `{"kind": "reject", "remaining": 1}`, `{"kind": {"stall": "1h"}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateFault {
    pub kind: CreateFaultKind,
    #[serde(default)]
    pub remaining: Option<u64>,
}

/// How a faulty create goes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CreateFaultKind {
    /// 400 `RTC.00001016`, the app is deactivated: nothing is created.
    Reject,
    /// 429 `APIG.0308`: nothing is created.
    Throttle,
    /// The job is created, then the answer is 500 `RTC.00002001`.
    ServerError,
    /// The job is created, and the answer withheld this long: the caller times out first and
    /// cannot know.
    Stall(#[serde(with = "humantime_serde")] Duration),
}

/// How long a stall from the command line withholds the answer: longer than any client waits.
pub const CLI_STALL: Duration = Duration::from_secs(3600);

impl CreateFault {
    /// A rule for every create, until cleared.
    pub fn new(kind: CreateFaultKind) -> CreateFault {
        CreateFault {
            kind,
            remaining: None,
        }
    }

    /// Only the next `n` creates.
    pub fn times(self, n: u64) -> CreateFault {
        CreateFault {
            remaining: Some(n),
            ..self
        }
    }

    /// `--create-fault KIND[=N]`: `reject`, `throttle`, `server-error` or `stall` (an hour),
    /// for the first N creates (every create without `=N`).
    pub fn parse_cli(s: &str) -> Result<CreateFault, String> {
        let (kind, count) = match s.split_once('=') {
            Some((kind, n)) => (kind, Some(n)),
            None => (s, None),
        };
        let kind = match kind.trim() {
            "reject" => CreateFaultKind::Reject,
            "throttle" => CreateFaultKind::Throttle,
            "server-error" => CreateFaultKind::ServerError,
            "stall" => CreateFaultKind::Stall(CLI_STALL),
            other => {
                return Err(format!(
                    "{other:?} is not a create fault: use reject, throttle, server-error or stall, optionally =N for the first N creates"
                ));
            }
        };
        let fault = CreateFault::new(kind);
        match count {
            None => Ok(fault),
            Some(n) => match n.trim().parse::<u64>() {
                Ok(n) if n > 0 => Ok(fault.times(n)),
                _ => Err(format!(
                    "{n:?} in {s:?} is not a count of creates: use e.g. {}=2",
                    s.split('=').next().unwrap_or(s)
                )),
            },
        }
    }
}

/// The first live rule, used up by one; used-up rules are dropped on the way.
fn take(faults: &mut Vec<CreateFault>) -> Option<CreateFaultKind> {
    faults.retain(|f| f.remaining != Some(0));
    let rule = faults.first_mut()?;
    if let Some(n) = rule.remaining.as_mut() {
        *n -= 1;
    }
    Some(rule.kind.clone())
}

/// The record a create makes: the request's parameters with the API's defaults filled in,
/// INIT, named as RTC names its streams. Pure.
pub(crate) fn created_snapshot(
    app_id: &str,
    job_id: &str,
    request: &CreateRequest,
    at: DateTime<Utc>,
) -> JobSnapshot {
    let time = Some(fmt_time(at));
    let base = JobSnapshot {
        job_id: Some(job_id.to_string()),
        app_id: Some(app_id.to_string()),
        create_time: time.clone(),
        update_time: time,
        state: Some(State::Init),
        description: Some("initialising".into()),
        ..JobSnapshot::default()
    };
    match request {
        CreateRequest::Individual(r) => JobSnapshot {
            stream_name: Some(format!("s_{job_id}_{}_{}", r.room_id, r.user_id)),
            room_id: Some(r.room_id.clone()),
            user_id: Some(r.user_id.clone()),
            is_record_audio: Some(r.is_record_audio.unwrap_or(true)),
            video_type: Some(r.video_type.clone().unwrap_or("CAMERASTREAM".into())),
            select_stream_type: Some(r.select_stream_type.clone().unwrap_or("FHD".into())),
            max_idle_time: Some(r.max_idle_time.unwrap_or(30)),
            record_param: Some(r.record_param.clone()),
            ..base
        },
        CreateRequest::Mix(r) => {
            let room = match r.mix_param.get("room_id") {
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(serde_json::Value::Number(n)) => Some(n.to_string()),
                _ => None,
            };
            JobSnapshot {
                stream_name: Some(format!("m_{job_id}_{}", room.as_deref().unwrap_or(""))),
                room_id: room,
                mix_param: Some(r.mix_param.clone()),
                record_param: Some(r.record_param.clone()),
                ..base
            }
        }
    }
}

enum CreateOutcome {
    Unauthorized(Refusal),
    /// 429, quoting the account's limit.
    Throttled(Option<u32>),
    NoApp,
    BadBody(String),
    /// A reject or throttle fault: nothing was created.
    Refused(CreateFaultKind),
    Created {
        job_id: String,
        init: Arc<JobSnapshot>,
        body: Bytes,
        fault: Option<CreateFaultKind>,
    },
}

impl Shared {
    /// Makes the job `request` asks for and records it; creation is not a change (the
    /// script's INIT is not one either).
    fn create_job(
        &mut self,
        app_id: &str,
        request: &CreateRequest,
        received: serde_json::Value,
        at: DateTime<Utc>,
        status: u16,
    ) -> (String, Arc<JobSnapshot>, Bytes) {
        let job_id = format!("created-{:04}", self.created.len() + 1);
        let snapshot = created_snapshot(app_id, &job_id, request, at);
        let body = Bytes::from(serde_json::to_vec(&snapshot).expect("a record serializes"));
        let snapshot = Arc::new(snapshot);
        self.apps.entry(app_id.to_string()).or_default().insert(
            job_id.clone(),
            Job::Fixed {
                snapshot: snapshot.clone(),
                body: body.clone(),
            },
        );
        if request.kind() == Kind::Mix {
            self.mix
                .entry(app_id.to_string())
                .or_default()
                .insert(job_id.clone());
        }
        self.created.push(CreatedJob {
            kind: request.kind(),
            app_id: app_id.to_string(),
            job_id: job_id.clone(),
            request: received,
            at,
            status,
        });
        self.counters.created += 1;
        (job_id, snapshot, body)
    }
}

impl Inner {
    /// Everything about one create that needs the shared state, under one lock.
    fn decide_create(
        &self,
        app_id: &str,
        caller: &Caller,
        request: Result<CreateRequest, String>,
        received: serde_json::Value,
        now: Instant,
    ) -> CreateOutcome {
        let at = plus(self.epoch_utc, now.duration_since(self.epoch));
        let mut guard = self.lock();
        let s = &mut *guard;
        s.apply_due(now, self.epoch);
        s.counters.arrival(now, at.timestamp(), app_id, None);
        s.account_arrival(self, caller, now);
        s.counters.creates += 1;
        let outcome = match s.job_gate(self, caller, now) {
            Verdict::Refused(refusal) => CreateOutcome::Unauthorized(refusal),
            Verdict::Throttled(limit) => CreateOutcome::Throttled(limit),
            Verdict::Pass if !s.apps.contains_key(app_id) => CreateOutcome::NoApp,
            Verdict::Pass => match request {
                Err(why) => CreateOutcome::BadBody(why),
                Ok(request) => match take(&mut s.create_faults) {
                    Some(kind @ (CreateFaultKind::Reject | CreateFaultKind::Throttle)) => {
                        CreateOutcome::Refused(kind)
                    }
                    fault => {
                        let status = match fault {
                            Some(CreateFaultKind::ServerError) => 500,
                            _ => 201,
                        };
                        let (job_id, init, body) =
                            s.create_job(app_id, &request, received, at, status);
                        CreateOutcome::Created {
                            job_id,
                            init,
                            body,
                            fault,
                        }
                    }
                },
            },
        };
        let status = match &outcome {
            CreateOutcome::Unauthorized(refusal) => {
                s.counters.refused_auth += 1;
                refusal.status
            }
            CreateOutcome::Throttled(_) | CreateOutcome::Refused(CreateFaultKind::Throttle) => {
                s.counters.throttled += 1;
                StatusCode::TOO_MANY_REQUESTS
            }
            CreateOutcome::NoApp => StatusCode::NOT_FOUND,
            CreateOutcome::BadBody(_) | CreateOutcome::Refused(_) => StatusCode::BAD_REQUEST,
            CreateOutcome::Created {
                fault: Some(CreateFaultKind::ServerError),
                ..
            } => StatusCode::INTERNAL_SERVER_ERROR,
            CreateOutcome::Created { .. } => StatusCode::CREATED,
        };
        if matches!(outcome, CreateOutcome::Refused(_)) {
            s.counters.faults_applied += 1;
        }
        if let CreateOutcome::Created { fault: Some(_), .. } = &outcome {
            s.counters.faults_applied += 1;
        }
        s.counters.status(status);
        outcome
    }
}

pub(crate) async fn api_create(
    AxState(inner): AxState<Arc<Inner>>,
    Path(app_id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let kind = crate::server::kind_of(&uri);
    let now = Instant::now();
    let caller = inner.check_credentials(&method, &uri, &headers, &body);
    let request = CreateRequest::parse(kind, &body);
    let received = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    let outcome = inner.decide_create(&app_id, &caller, request, received, now);
    let request_id = inner.request_id();
    let mut response = match outcome {
        CreateOutcome::Created {
            job_id,
            init,
            body,
            fault,
        } => {
            tracing::debug!(%app_id, %job_id, %kind, "simulated create");
            tokio::spawn(promote(inner.clone(), app_id.clone(), job_id, init));
            match fault {
                Some(CreateFaultKind::ServerError) => error_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "RTC.00002001",
                    "Internal error",
                    request_id,
                ),
                Some(CreateFaultKind::Stall(d)) => {
                    tokio::time::sleep(d).await;
                    api_response(StatusCode::CREATED, body, request_id)
                }
                _ => api_response(StatusCode::CREATED, body, request_id),
            }
        }
        CreateOutcome::Refused(CreateFaultKind::Throttle) => error_response(
            StatusCode::TOO_MANY_REQUESTS,
            "APIG.0308",
            &throttle_message(inner.opts.rate_limit),
            request_id,
        ),
        CreateOutcome::Throttled(limit) => error_response(
            StatusCode::TOO_MANY_REQUESTS,
            "APIG.0308",
            &throttle_message(limit),
            request_id,
        ),
        CreateOutcome::Refused(_) => error_response(
            StatusCode::BAD_REQUEST,
            "RTC.00001016",
            &format!("The app has been deactivated: app_id {app_id}"),
            request_id,
        ),
        CreateOutcome::Unauthorized(refusal) => {
            error_response(refusal.status, refusal.code, &refusal.message, request_id)
        }
        CreateOutcome::NoApp => error_response(
            StatusCode::NOT_FOUND,
            "RTC.00001003",
            &format!("The app does not exist: app_id {app_id}"),
            request_id,
        ),
        CreateOutcome::BadBody(why) => error_response(
            StatusCode::BAD_REQUEST,
            "RTC.00001002",
            &format!("Invalid request body: {why}"),
            request_id,
        ),
    };
    inner.date_header(&mut response);
    response
}

/// A created job goes RUNNING `step` after its creation, unless something changed it first.
async fn promote(inner: Arc<Inner>, app_id: String, job_id: String, init: Arc<JobSnapshot>) {
    let mut shutdown = inner.shutdown.subscribe();
    tokio::select! {
        _ = tokio::time::sleep(inner.opts.step) => {}
        _ = stopped(&mut shutdown) => return,
    }
    let now = Instant::now();
    let at = plus(inner.epoch_utc, now.duration_since(inner.epoch));
    let mut guard = inner.lock();
    let s = &mut *guard;
    s.apply_due(now, inner.epoch);
    let unchanged = matches!(
        s.apps.get(&app_id).and_then(|jobs| jobs.get(&job_id)),
        Some(Job::Fixed { snapshot, .. }) if Arc::ptr_eq(snapshot, &init)
    );
    if !unchanged {
        return;
    }
    let running = JobSnapshot {
        state: Some(State::Running),
        start_time: Some(fmt_time(at)),
        update_time: Some(fmt_time(at)),
        description: Some("recording".into()),
        ..(*init).clone()
    };
    let body = Bytes::from(serde_json::to_vec(&running).expect("a record serializes"));
    s.serve(&inner, &app_id, &job_id, running, body, now);
}

enum StopOutcome {
    Unauthorized(Refusal),
    /// 429, quoting the account's limit.
    Throttled(Option<u32>),
    NotFound,
    AlreadyStopped,
    Stopped,
}

impl Inner {
    /// Everything about one stop that needs the shared state, under one lock.
    fn decide_stop(
        &self,
        kind: Kind,
        app_id: &str,
        job_id: &str,
        caller: &Caller,
        now: Instant,
    ) -> StopOutcome {
        let elapsed = now.duration_since(self.epoch);
        let at = plus(self.epoch_utc, elapsed);
        let mut guard = self.lock();
        let s = &mut *guard;
        s.apply_due(now, self.epoch);
        s.counters
            .arrival(now, at.timestamp(), app_id, Some(job_id));
        s.account_arrival(self, caller, now);
        s.counters.stops += 1;
        let outcome = match s.job_gate(self, caller, now) {
            Verdict::Refused(refusal) => StopOutcome::Unauthorized(refusal),
            Verdict::Throttled(limit) => StopOutcome::Throttled(limit),
            Verdict::Pass if s.kind_of(app_id, job_id) != kind => StopOutcome::NotFound,
            Verdict::Pass => match s.served(self, app_id, job_id, elapsed) {
                None => StopOutcome::NotFound,
                Some(job) if job.state == Some(State::Stopped) => StopOutcome::AlreadyStopped,
                Some(job) => {
                    let stopped = JobSnapshot {
                        state: Some(State::Stopped),
                        stop_reason: Some(StopReason::TenantStop),
                        stop_time: Some(fmt_time(at)),
                        update_time: Some(fmt_time(at)),
                        description: Some("stopped by the tenant".into()),
                        ..job
                    };
                    let body =
                        Bytes::from(serde_json::to_vec(&stopped).expect("a record serializes"));
                    s.serve(self, app_id, job_id, stopped, body, now);
                    StopOutcome::Stopped
                }
            },
        };
        let status = match &outcome {
            StopOutcome::Unauthorized(refusal) => {
                s.counters.refused_auth += 1;
                refusal.status
            }
            StopOutcome::Throttled(_) => {
                s.counters.throttled += 1;
                StatusCode::TOO_MANY_REQUESTS
            }
            StopOutcome::NotFound => StatusCode::NOT_FOUND,
            StopOutcome::AlreadyStopped => StatusCode::BAD_REQUEST,
            StopOutcome::Stopped => StatusCode::NO_CONTENT,
        };
        s.counters.status(status);
        outcome
    }
}

pub(crate) async fn api_stop(
    AxState(inner): AxState<Arc<Inner>>,
    Path((app_id, job_id)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let kind = crate::server::kind_of(&uri);
    let now = Instant::now();
    let caller = inner.check_credentials(&method, &uri, &headers, b"");
    let outcome = inner.decide_stop(kind, &app_id, &job_id, &caller, now);
    let request_id = inner.request_id();
    let mut response = match outcome {
        StopOutcome::Stopped => api_response(StatusCode::NO_CONTENT, "", request_id),
        StopOutcome::Unauthorized(refusal) => {
            error_response(refusal.status, refusal.code, &refusal.message, request_id)
        }
        StopOutcome::Throttled(limit) => error_response(
            StatusCode::TOO_MANY_REQUESTS,
            "APIG.0308",
            &throttle_message(limit),
            request_id,
        ),
        StopOutcome::NotFound => error_response(
            StatusCode::NOT_FOUND,
            "RTC.00001003",
            &format!("The app or job does not exist: app_id {app_id}, job_id {job_id}"),
            request_id,
        ),
        StopOutcome::AlreadyStopped => error_response(
            StatusCode::BAD_REQUEST,
            "RTC.00001009",
            &format!("The job has already stopped: job_id {job_id}"),
            request_id,
        ),
    };
    inner.date_header(&mut response);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_fault_options_table() {
        let cases = [
            ("reject", Ok(CreateFault::new(CreateFaultKind::Reject))),
            (
                "throttle=2",
                Ok(CreateFault::new(CreateFaultKind::Throttle).times(2)),
            ),
            (
                "server-error=1",
                Ok(CreateFault::new(CreateFaultKind::ServerError).times(1)),
            ),
            (
                "stall",
                Ok(CreateFault::new(CreateFaultKind::Stall(CLI_STALL))),
            ),
            ("explode", Err("is not a create fault")),
            ("reject=0", Err("is not a count of creates")),
            ("reject=two", Err("is not a count of creates")),
        ];
        for (text, want) in cases {
            match (CreateFault::parse_cli(text), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{text}"),
                (Err(e), Err(says)) => assert!(e.contains(says), "{text}: {e}"),
                (got, want) => panic!("{text}: {got:?}, wanted {want:?}"),
            }
        }
        let json: CreateFault =
            serde_json::from_str(r#"{"kind": {"stall": "2s"}, "remaining": 1}"#).unwrap();
        assert_eq!(
            json,
            CreateFault::new(CreateFaultKind::Stall(Duration::from_secs(2))).times(1)
        );
    }

    #[test]
    fn rules_are_used_up_in_order() {
        let mut rules = vec![
            CreateFault::new(CreateFaultKind::Throttle).times(1),
            CreateFault::new(CreateFaultKind::Reject),
        ];
        assert_eq!(take(&mut rules), Some(CreateFaultKind::Throttle));
        assert_eq!(take(&mut rules), Some(CreateFaultKind::Reject));
        assert_eq!(rules.len(), 1, "the used-up rule is gone");
        assert_eq!(take(&mut Vec::new()), None);
    }

    #[test]
    fn created_records_table() {
        let at = "2026-11-28T10:00:00Z".parse::<DateTime<Utc>>().unwrap();
        let individual = CreateRequest::parse(
            Kind::Individual,
            br#"{"room_id":"room01","user_id":"u7","record_param":{"record_rule_id":"r"}}"#,
        )
        .unwrap();
        let job = created_snapshot("app", "created-0001", &individual, at);
        assert_eq!(job.stream_name.as_deref(), Some("s_created-0001_room01_u7"));
        assert_eq!(
            (
                job.is_record_audio,
                job.max_idle_time,
                job.select_stream_type.as_deref()
            ),
            (Some(true), Some(30), Some("FHD")),
            "the API's defaults"
        );
        assert_eq!(job.state, Some(State::Init));
        assert_eq!(job.create_time.as_deref(), Some("2026-11-28T10:00:00.000Z"));

        let mix = CreateRequest::parse(
            Kind::Mix,
            br#"{"mix_param":{"room_id":"room02","encode_template":"t"},"record_param":{"record_rule_id":"r"}}"#,
        )
        .unwrap();
        let job = created_snapshot("app", "created-0002", &mix, at);
        assert_eq!(job.stream_name.as_deref(), Some("m_created-0002_room02"));
        assert_eq!(job.room_id.as_deref(), Some("room02"));
        assert_eq!(job.user_id, None);
        assert_eq!(
            CreateRequest::from_snapshot(Kind::Mix, &job),
            Ok(mix),
            "a created mix job re-creates as it was made"
        );
    }
}
