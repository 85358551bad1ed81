//! A fake Huawei Cloud RTC API: `GET /v2/apps/{app_id}/individual-stream-jobs/{job_id}` with
//! the gateway's behaviour around it (AK/SK or token checks, AK lockout, the 1 s rate limit),
//! scripted or controllable jobs, fault injection and request statistics. The demo, the
//! integration tests, the fault-injection tests and the benchmarks all run against it.
//!
//! # The script
//! With `scripted`, job `i` (id `job-{i:04}`, app `app_id`) is created when the simulator
//! starts and walks a fixed timeline, a pure function of `(i, elapsed, step)` ([`script_at`]):
//!
//! | `i % 6` | timeline |
//! |---|---|
//! | 0 | INIT -> RUNNING -> STOPPED `INTERNAL_ERROR` |
//! | 1 | INIT -> RUNNING -> STOPPED `EXCEED_MAX_IDLE_TIME` |
//! | 2 | INIT -> RUNNING -> STOPPED `TENANT_STOP` |
//! | 3 | INIT -> RUNNING, and stays RUNNING |
//! | 4 | INIT forever, with `max_idle_time` 5 (so a stuck-in-INIT rule can fire) |
//! | 5 | INIT -> RUNNING -> STOPPED with no `stop_reason` (`i / 6` even) or the unknown reason `RECORDER_CRASHED` (odd) |
//!
//! INIT lasts `step + offset`, RUNNING `2 * step`, where `offset = step * (i % 10) / 10`
//! staggers the jobs so their changes do not all land at once. `start_time` is when the job
//! went RUNNING, `stop_time` when it stopped, `update_time` the latest change. A job changed
//! through [`Simulator::set_job`] (or churn) or removed leaves its script at that moment.
//! Without `scripted` every job starts RUNNING and stays so until changed.
//!
//! [`Simulator::changes`] lists every state change with its time: the script's changes (the
//! initial INIT is the job's creation, not a change), every `set_job` and every churn step.
//!
//! # Faults
//! A [`Fault`] rule applies to the next matching API requests (one job or all, `remaining`
//! times or `until` a time, else for ever); the first matching rule wins. Faults come before
//! authentication and rate limiting, so a test gets exactly the answer it asked for.
//!
//! # Gateway checks, in order
//! The API lookup: any other path or method is 404 `APIG.0101` ("The API does not exist"), as
//! the real gateway answers before it looks at credentials. Then credentials: a wrong or
//! missing AK/SK signature (or an `X-Sdk-Date` more than 15 minutes off the simulator's
//! clock) or token is 401 `APIG.0301`, and with AK/SK more than `lockout_after` such failures
//! in a row lock the one configured key for `lockout`. With AK/SK, `X-Project-Id` is
//! mandatory, as the API document says: a correctly signed request without one is 400
//! `RTC.00001001`, and one naming another project than `project_id` (when set) is 403
//! `APIG.0302`; neither counts towards the lockout, since the signature was right. Then the
//! rate limit (at most `rate_limit` admitted requests in any trailing second; refused requests
//! do not use up the budget), then the job lookup (404 `RTC.00001003`).
//!
//! With a `clock_offset`, the simulator's clock (for `X-Sdk-Date` checks and the `Date`
//! header of every API answer) is that far from the machine's, like a gateway seen from a
//! host whose clock is wrong.
//!
//! # Control API
//! `GET /_sim/stats`, `POST /_sim/reset-stats`, `POST /_sim/faults` (a JSON [`Fault`]),
//! `DELETE /_sim/faults`, `PUT /_sim/jobs/{app_id}/{job_id}` (a JSON [`JobSnapshot`]),
//! `PUT /_sim/raw-jobs/{app_id}/{job_id}` (any bytes, served as they are),
//! `DELETE /_sim/jobs/{app_id}/{job_id}` and `GET /_sim/changes` mirror the [`Simulator`]
//! methods for a simulator running as its own process. They are neither counted, limited nor
//! authenticated.
//!
//! Connections are served with hyper directly rather than `axum::serve`, because
//! [`FaultKind::Reset`] must drop the connection without writing a response, which only the
//! code owning the connection can do.

use axum::body::{Body, Bytes};
use axum::extract::{Path, State as AxState};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use hyper::body::Frame;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use recwatch_rtc::model::{JobSnapshot, RecordParam, State, StopReason};
use recwatch_rtc::sign;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
// tokio's clock, not std's: the same outside tests, and a test on tokio's paused clock moves
// the script, the rate limit and the lockout exactly as far as it advances time.
use tokio::time::Instant;

/// How far `X-Sdk-Date` may be from the server's clock.
const MAX_CLOCK_SKEW: Duration = Duration::from_secs(15 * 60);
/// How long the per-second request counts are kept.
const PER_SECOND_KEPT: i64 = 600;
const JSON: &str = "application/json;charset=UTF-8";
const REQUEST_ID: &str = "X-request-Id";

/// What the simulator serves and how strict it is.
#[derive(Clone, Debug)]
pub struct SimOptions {
    pub app_id: String,
    /// Jobs `job-0000`, `job-0001`, ... created at start.
    pub jobs: usize,
    /// Phase length of the script (see the module docs).
    pub step: Duration,
    /// `true`: jobs walk the script; `false`: they start RUNNING and stay until changed.
    pub scripted: bool,
    pub auth: SimAuth,
    /// Like the gateway: a request beyond N accepted in the trailing second gets 429 APIG.0308.
    pub rate_limit: Option<u32>,
    /// More than this many failed AK/SK checks in a row lock the access key...
    pub lockout_after: u32,
    /// ...for this long; every request is refused with 401 APIG.0301 meanwhile.
    pub lockout: Duration,
    /// Benchmark mode: change this many random jobs per second, logging each change.
    pub churn: Option<f64>,
    pub seed: u64,
    /// With AK/SK, the only `X-Project-Id` accepted (403 otherwise); `None` accepts any, but
    /// one must be sent (400 `RTC.00001001` otherwise).
    pub project_id: Option<String>,
    /// Seconds the simulator's clock is ahead of this machine's (negative: behind).
    pub clock_offset: i64,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            app_id: "demo-app".into(),
            jobs: 12,
            step: Duration::from_secs(5),
            scripted: true,
            auth: SimAuth::None,
            rate_limit: None,
            lockout_after: 5,
            lockout: Duration::from_secs(5 * 60),
            churn: None,
            seed: 0,
            project_id: None,
            clock_offset: 0,
        }
    }
}

/// What an API request must carry.
#[derive(Clone, PartialEq, Eq)]
pub enum SimAuth {
    None,
    /// An SDK-HMAC-SHA256 signature made with this key pair.
    AkSk {
        access_key: String,
        secret_key: String,
    },
    /// `X-Auth-Token` equal to this.
    Token(String),
}

impl fmt::Debug for SimAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SimAuth::None => f.write_str("None"),
            SimAuth::AkSk { access_key, .. } => {
                write!(f, "AkSk {{ access_key: {access_key:?}, secret_key: *** }}")
            }
            SimAuth::Token(_) => f.write_str("Token(***)"),
        }
    }
}

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
    /// A rule for every request, for ever, until [`Simulator::clear_faults`].
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
}

/// Request statistics of the API endpoint (control requests are not counted).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimStats {
    /// When counting started: the start, or the last reset.
    pub since: Option<DateTime<Utc>>,
    pub requests: u64,
    /// Answers by status; connections reset by a fault are counted in `resets` instead.
    pub by_status: BTreeMap<u16, u64>,
    /// The most requests that arrived within any 1 s window.
    pub max_per_sliding_second: u64,
    /// `(unix second, requests)`, oldest first, the last 10 minutes with traffic.
    pub per_second: Vec<(i64, u64)>,
    /// Requests refused for their credentials (lockout and the RefuseAuth fault included).
    pub refused_auth: u64,
    /// Requests answered 429 by the rate limit or the Throttle fault.
    pub throttled: u64,
    pub resets: u64,
    /// Requests a fault rule applied to.
    pub faults_applied: u64,
    /// Requests per app id, then job id.
    pub by_job: BTreeMap<String, BTreeMap<String, u64>>,
}

/// One state change of one job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub app_id: String,
    pub job_id: String,
    pub state: String,
    pub stop_reason: Option<String>,
    pub at: DateTime<Utc>,
}

/// The id of scripted job `index`.
pub fn job_id(index: usize) -> String {
    format!("job-{index:04}")
}

/// Scripted job `index`'s whole life, as offsets from the simulator's start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timeline {
    pub running_at: Option<Duration>,
    pub stopped_at: Option<Duration>,
    pub stop_reason: Option<StopReason>,
    pub max_idle_time: u64,
}

pub fn timeline(index: usize, step: Duration) -> Timeline {
    let offset = step * (index % 10) as u32 / 10;
    let running_at = step + offset;
    let stopped_at = running_at + step * 2;
    let (running, stopped, reason) = match index % 6 {
        0 => (true, true, Some(StopReason::InternalError)),
        1 => (true, true, Some(StopReason::ExceedMaxIdleTime)),
        2 => (true, true, Some(StopReason::TenantStop)),
        3 => (true, false, None),
        4 => (false, false, None),
        _ if (index / 6).is_multiple_of(2) => (true, true, None),
        _ => (
            true,
            true,
            Some(StopReason::Other("RECORDER_CRASHED".into())),
        ),
    };
    Timeline {
        running_at: running.then_some(running_at),
        stopped_at: stopped.then_some(stopped_at),
        stop_reason: if stopped { reason } else { None },
        max_idle_time: if index % 6 == 4 { 5 } else { 30 },
    }
}

/// Scripted job `index`'s state and stop reason `elapsed` after the start.
pub fn script_at(index: usize, elapsed: Duration, step: Duration) -> (State, Option<StopReason>) {
    let t = timeline(index, step);
    if t.stopped_at.is_some_and(|at| at <= elapsed) {
        (State::Stopped, t.stop_reason)
    } else if t.running_at.is_some_and(|at| at <= elapsed) {
        (State::Running, None)
    } else {
        (State::Init, None)
    }
}

fn fmt_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

fn plus(epoch: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    epoch + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// The body of scripted job `index` at `elapsed` after `epoch`.
fn scripted_job(
    app_id: &str,
    index: usize,
    step: Duration,
    epoch: DateTime<Utc>,
    elapsed: Duration,
) -> JobSnapshot {
    let t = timeline(index, step);
    let (state, stop_reason) = script_at(index, elapsed, step);
    let happened = |at: Option<Duration>| at.filter(|at| *at <= elapsed);
    let (running_at, stopped_at) = (happened(t.running_at), happened(t.stopped_at));
    let updated = stopped_at.or(running_at).unwrap_or_default();
    let description = match (&state, &stop_reason) {
        (State::Init, _) => "initialising".to_string(),
        (State::Running, _) => "recording".to_string(),
        (_, Some(reason)) => format!("stopped: {reason}"),
        _ => "stopped".to_string(),
    };
    JobSnapshot {
        job_id: Some(job_id(index)),
        app_id: Some(app_id.to_string()),
        room_id: Some(format!("room-{}", index % 4)),
        user_id: Some(format!("user-{index}")),
        stream_name: Some(format!("stream-{index}")),
        is_record_audio: Some(true),
        video_type: Some("CAMERASTREAM".into()),
        select_stream_type: Some("HD".into()),
        max_idle_time: Some(t.max_idle_time),
        record_param: Some(RecordParam {
            record_rule_id: Some("rule-demo".into()),
        }),
        create_time: Some(fmt_time(epoch)),
        update_time: Some(fmt_time(plus(epoch, updated))),
        start_time: running_at.map(|d| fmt_time(plus(epoch, d))),
        stop_time: stopped_at.map(|d| fmt_time(plus(epoch, d))),
        state: Some(state),
        stop_reason,
        description: Some(description),
    }
}

/// Counts API requests; every method takes the arrival instant so tests can drive it.
#[derive(Default)]
struct Counters {
    since: Option<DateTime<Utc>>,
    requests: u64,
    by_status: BTreeMap<u16, u64>,
    /// Arrivals within the last second, oldest first.
    window: VecDeque<Instant>,
    max_per_sliding_second: u64,
    per_second: VecDeque<(i64, u64)>,
    refused_auth: u64,
    throttled: u64,
    resets: u64,
    faults_applied: u64,
    by_job: HashMap<String, HashMap<String, u64>>,
}

impl Counters {
    fn arrival(&mut self, now: Instant, unix_second: i64, app_id: &str, job_id: &str) {
        self.requests += 1;
        while self
            .window
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
        {
            self.window.pop_front();
        }
        self.window.push_back(now);
        self.max_per_sliding_second = self.max_per_sliding_second.max(self.window.len() as u64);
        match self.per_second.back_mut() {
            Some((s, n)) if *s == unix_second => *n += 1,
            _ => self.per_second.push_back((unix_second, 1)),
        }
        while self
            .per_second
            .front()
            .is_some_and(|(s, _)| *s <= unix_second - PER_SECOND_KEPT)
        {
            self.per_second.pop_front();
        }
        // get_mut first: the common case allocates nothing.
        let app = match self.by_job.get_mut(app_id) {
            Some(app) => app,
            None => self.by_job.entry(app_id.to_string()).or_default(),
        };
        match app.get_mut(job_id) {
            Some(n) => *n += 1,
            None => {
                app.insert(job_id.to_string(), 1);
            }
        }
    }

    fn status(&mut self, status: StatusCode) {
        *self.by_status.entry(status.as_u16()).or_default() += 1;
    }

    fn snapshot(&self) -> SimStats {
        SimStats {
            since: self.since,
            requests: self.requests,
            by_status: self.by_status.clone(),
            max_per_sliding_second: self.max_per_sliding_second,
            per_second: self.per_second.iter().copied().collect(),
            refused_auth: self.refused_auth,
            throttled: self.throttled,
            resets: self.resets,
            faults_applied: self.faults_applied,
            by_job: self
                .by_job
                .iter()
                .map(|(app, jobs)| {
                    (
                        app.clone(),
                        jobs.iter().map(|(j, n)| (j.clone(), *n)).collect(),
                    )
                })
                .collect(),
        }
    }
}

#[derive(Clone)]
enum Job {
    /// Walks the script of this index.
    Scripted(usize),
    /// Served as is; the body is serialized once, when set.
    Fixed {
        snapshot: Arc<JobSnapshot>,
        body: Bytes,
    },
}

/// Everything that changes, behind one lock held only for bookkeeping (never across I/O).
struct Shared {
    apps: HashMap<String, HashMap<String, Job>>,
    /// Per scripted index: when its script stopped governing it (set, churned or removed).
    script_cut: Vec<Option<Duration>>,
    /// Changes made by `set_job` and churn; scripted ones are computed from the timeline.
    changes: Vec<Change>,
    faults: Vec<Fault>,
    counters: Counters,
    auth_failures: u32,
    locked_until: Option<Instant>,
    /// Requests the rate limit let through in the trailing second, oldest first.
    admitted: VecDeque<Instant>,
}

struct Inner {
    opts: SimOptions,
    addr: SocketAddr,
    epoch: Instant,
    epoch_utc: DateTime<Utc>,
    /// Request ids: a per-run random prefix and a counter, so ids never repeat across runs.
    id_prefix: u64,
    next_id: AtomicU64,
    shared: Mutex<Shared>,
    shutdown: watch::Sender<bool>,
}

/// A handle to a running simulator; clones share it.
#[derive(Clone)]
pub struct Simulator {
    inner: Arc<Inner>,
}

/// Why the gateway refused a request's credentials, and how.
#[derive(Clone, Debug)]
struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// A failed signature or token; counts towards the AK lockout.
    bad_key: bool,
}

impl Refusal {
    /// 401 APIG.0301, the gateway's answer to a wrong signature or token.
    fn bad_key(why: impl Into<String>) -> Refusal {
        Refusal {
            status: StatusCode::UNAUTHORIZED,
            code: "APIG.0301",
            message: format!("Incorrect IAM authentication information: {}", why.into()),
            bad_key: true,
        }
    }
}

/// Marks a response whose connection must be dropped instead of answered.
#[derive(Clone, Copy)]
struct ResetConnection;

/// What to answer, decided under the lock.
enum Outcome {
    Fault(FaultKind),
    Unauthorized(Refusal),
    Throttled,
    NotFound,
    Scripted(usize),
    Fixed(Bytes),
}

/// Starts serving on `listener` until [`Simulator::shutdown`].
pub async fn start(listener: TcpListener, opts: SimOptions) -> std::io::Result<Simulator> {
    let addr = listener.local_addr()?;
    let epoch = Instant::now();
    let epoch_utc = Utc::now();
    let mut jobs = HashMap::new();
    for i in 0..opts.jobs {
        let job = if opts.scripted {
            Job::Scripted(i)
        } else {
            let mut snapshot = scripted_job(&opts.app_id, i, opts.step, epoch_utc, Duration::ZERO);
            snapshot.state = Some(State::Running);
            snapshot.start_time = snapshot.create_time.clone();
            snapshot.max_idle_time = Some(30);
            snapshot.description = Some("recording".into());
            fixed(snapshot)
        };
        jobs.insert(job_id(i), job);
    }
    let mut apps = HashMap::new();
    apps.insert(opts.app_id.clone(), jobs);
    let script_cut = vec![None; if opts.scripted { opts.jobs } else { 0 }];
    let (shutdown, _) = watch::channel(false);
    let inner = Arc::new(Inner {
        addr,
        epoch,
        epoch_utc,
        id_prefix: StdRng::seed_from_u64(opts.seed ^ epoch_utc.timestamp_micros() as u64).random(),
        next_id: AtomicU64::new(0),
        shared: Mutex::new(Shared {
            apps,
            script_cut,
            changes: Vec::new(),
            faults: Vec::new(),
            counters: Counters {
                since: Some(epoch_utc),
                ..Counters::default()
            },
            auth_failures: 0,
            locked_until: None,
            admitted: VecDeque::new(),
        }),
        shutdown,
        opts,
    });
    let router = router(inner.clone());
    tokio::spawn(accept_loop(listener, router, inner.shutdown.subscribe()));
    if let Some(per_second) = inner.opts.churn.filter(|r| r.is_finite() && *r > 0.0) {
        tokio::spawn(churn(inner.clone(), per_second, inner.shutdown.subscribe()));
    }
    tracing::info!(%addr, jobs = inner.opts.jobs, app_id = %inner.opts.app_id, "simulator started");
    Ok(Simulator { inner })
}

fn fixed(snapshot: JobSnapshot) -> Job {
    let body = Bytes::from(serde_json::to_vec(&snapshot).expect("a JobSnapshot always serializes"));
    Job::Fixed {
        snapshot: Arc::new(snapshot),
        body,
    }
}

impl Simulator {
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// Serves `job` for this app and job id from now on, overriding any script; logged as a
    /// change.
    pub fn set_job(&self, app_id: &str, job_id: &str, job: JobSnapshot) {
        let body = Bytes::from(serde_json::to_vec(&job).expect("a JobSnapshot always serializes"));
        self.set_served(app_id, job_id, job, body);
    }

    /// Serves `body` (any bytes: invalid UTF-8, odd types) for this app and job id from now
    /// on, overriding any script; logged as a change with the state a lenient parse finds.
    pub fn set_job_body(&self, app_id: &str, job_id: &str, body: impl Into<Bytes>) {
        let body = body.into();
        let snapshot = recwatch_rtc::model::parse_job(&body).unwrap_or_default();
        self.set_served(app_id, job_id, snapshot, body);
    }

    fn set_served(&self, app_id: &str, job_id: &str, job: JobSnapshot, body: Bytes) {
        let inner = &self.inner;
        let elapsed = inner.epoch.elapsed();
        let change = Change {
            app_id: app_id.to_string(),
            job_id: job_id.to_string(),
            state: job
                .state
                .as_ref()
                .map(|s| s.as_str().to_string())
                .unwrap_or_default(),
            stop_reason: job.stop_reason.as_ref().map(|r| r.as_str().to_string()),
            at: plus(inner.epoch_utc, elapsed),
        };
        let job = Job::Fixed {
            snapshot: Arc::new(job),
            body,
        };
        let mut shared = inner.lock();
        let previous = shared
            .apps
            .entry(app_id.to_string())
            .or_default()
            .insert(job_id.to_string(), job);
        shared.cut_script(previous, elapsed);
        shared.changes.push(change);
    }

    /// The job answers 404 from now on.
    pub fn remove_job(&self, app_id: &str, job_id: &str) {
        let elapsed = self.inner.epoch.elapsed();
        let mut shared = self.inner.lock();
        let previous = shared
            .apps
            .get_mut(app_id)
            .and_then(|jobs| jobs.remove(job_id));
        shared.cut_script(previous, elapsed);
    }

    pub fn set_fault(&self, fault: Fault) {
        self.inner.lock().faults.push(fault);
    }

    pub fn clear_faults(&self) {
        self.inner.lock().faults.clear();
    }

    pub fn stats(&self) -> SimStats {
        self.inner.lock().counters.snapshot()
    }

    pub fn reset_stats(&self) {
        let since = Some(plus(self.inner.epoch_utc, self.inner.epoch.elapsed()));
        self.inner.lock().counters = Counters {
            since,
            ..Counters::default()
        };
    }

    /// Every state change so far, oldest first.
    pub fn changes(&self) -> Vec<Change> {
        let inner = &self.inner;
        let elapsed = inner.epoch.elapsed();
        let shared = inner.lock();
        let mut out = shared.changes.clone();
        for (index, cut) in shared.script_cut.iter().enumerate() {
            let until = cut.unwrap_or(elapsed).min(elapsed);
            let t = timeline(index, inner.opts.step);
            let mut push = |at: Option<Duration>, state: State, reason: Option<&StopReason>| {
                if let Some(at) = at.filter(|at| *at <= until) {
                    out.push(Change {
                        app_id: inner.opts.app_id.clone(),
                        job_id: job_id(index),
                        state: state.as_str().to_string(),
                        stop_reason: reason.map(|r| r.as_str().to_string()),
                        at: plus(inner.epoch_utc, at),
                    });
                }
            };
            push(t.running_at, State::Running, None);
            push(t.stopped_at, State::Stopped, t.stop_reason.as_ref());
        }
        drop(shared);
        out.sort_by_key(|c| c.at);
        out
    }

    /// Stops accepting and closes every connection.
    pub fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
    }
}

impl Shared {
    fn cut_script(&mut self, previous: Option<Job>, elapsed: Duration) {
        if let Some(Job::Scripted(index)) = previous
            && let Some(cut) = self.script_cut.get_mut(index)
        {
            cut.get_or_insert(elapsed);
        }
    }

    /// The first live rule matching `job_id` at `now` (the simulator's clock), used up by one.
    fn take_fault(&mut self, job_id: &str, now: DateTime<Utc>) -> Option<FaultKind> {
        if self.faults.is_empty() {
            return None;
        }
        self.faults.retain(|f| !f.expired(now));
        let rule = self.faults.iter_mut().find(|f| f.matches(job_id))?;
        if let Some(n) = rule.remaining.as_mut() {
            *n -= 1;
        }
        Some(rule.kind.clone())
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        // A panic while holding the lock leaves plain counters behind: still usable.
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// With a clock offset, the `Date` header the simulator's clock gives; hyper writes the
    /// machine's own otherwise.
    fn date_header(&self, response: &mut Response) {
        if self.opts.clock_offset != 0 {
            let date = sim_now(&self.opts)
                .format("%a, %d %b %Y %H:%M:%S GMT")
                .to_string();
            if let Ok(v) = HeaderValue::from_str(&date) {
                response.headers_mut().insert(header::DATE, v);
            }
        }
    }

    fn request_id(&self) -> HeaderValue {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        HeaderValue::from_str(&format!("{:016x}{n:016x}", self.id_prefix))
            .expect("hex is a valid header value")
    }

    /// Everything about one API request that needs the shared state, under one lock.
    fn decide(
        &self,
        app_id: &str,
        job_id: &str,
        credentials: Result<(), Refusal>,
        now: Instant,
    ) -> (Outcome, Option<Duration>) {
        let elapsed = now.duration_since(self.epoch);
        let now_utc = plus(self.epoch_utc, elapsed);
        let unix_second = now_utc.timestamp();
        let mut guard = self.lock();
        let s = &mut *guard;
        s.counters.arrival(now, unix_second, app_id, job_id);
        let mut stall = None;
        match s.take_fault(job_id, now_utc) {
            Some(FaultKind::Stall(d)) => {
                s.counters.faults_applied += 1;
                stall = Some(d);
            }
            Some(kind) => {
                s.counters.faults_applied += 1;
                match kind {
                    FaultKind::Reset => s.counters.resets += 1,
                    FaultKind::ServerError => s.counters.status(StatusCode::INTERNAL_SERVER_ERROR),
                    FaultKind::Throttle => {
                        s.counters.throttled += 1;
                        s.counters.status(StatusCode::TOO_MANY_REQUESTS);
                    }
                    FaultKind::RefuseAuth => {
                        s.counters.refused_auth += 1;
                        s.counters.status(StatusCode::UNAUTHORIZED);
                    }
                    FaultKind::Redirect(_) => s.counters.status(StatusCode::FOUND),
                    FaultKind::ApiNotFound => s.counters.status(StatusCode::NOT_FOUND),
                    FaultKind::EchoTokenInError => s.counters.status(StatusCode::BAD_REQUEST),
                    _ => s.counters.status(StatusCode::OK),
                }
                return (Outcome::Fault(kind), None);
            }
            None => {}
        }

        let outcome = self
            .authorize(s, credentials, now)
            .unwrap_or_else(|| self.admit_and_find(s, app_id, job_id, now));
        let status = match &outcome {
            Outcome::Unauthorized(refusal) => {
                s.counters.refused_auth += 1;
                refusal.status
            }
            Outcome::Throttled => {
                s.counters.throttled += 1;
                StatusCode::TOO_MANY_REQUESTS
            }
            Outcome::NotFound => StatusCode::NOT_FOUND,
            _ => StatusCode::OK,
        };
        s.counters.status(status);
        (outcome, stall)
    }

    /// `Some(refusal)` when the credentials (or the AK lockout) refuse the request.
    fn authorize(
        &self,
        s: &mut Shared,
        credentials: Result<(), Refusal>,
        now: Instant,
    ) -> Option<Outcome> {
        if !matches!(self.opts.auth, SimAuth::AkSk { .. }) {
            return credentials.err().map(Outcome::Unauthorized);
        }
        if let Some(until) = s.locked_until {
            if now < until {
                let left = until.duration_since(now).as_secs() + 1;
                return Some(Outcome::Unauthorized(Refusal::bad_key(format!(
                    "the access key is locked for {left} s after too many failed authentication attempts"
                ))));
            }
            s.locked_until = None;
        }
        match credentials {
            Ok(()) => {
                s.auth_failures = 0;
                None
            }
            // The signature was right: no step towards the lockout.
            Err(refusal) if !refusal.bad_key => Some(Outcome::Unauthorized(refusal)),
            Err(refusal) => {
                s.auth_failures += 1;
                if s.auth_failures > self.opts.lockout_after {
                    s.auth_failures = 0;
                    s.locked_until = Some(now + self.opts.lockout);
                }
                Some(Outcome::Unauthorized(refusal))
            }
        }
    }

    fn admit_and_find(&self, s: &mut Shared, app_id: &str, job_id: &str, now: Instant) -> Outcome {
        if let Some(limit) = self.opts.rate_limit {
            while s
                .admitted
                .front()
                .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
            {
                s.admitted.pop_front();
            }
            if s.admitted.len() >= limit as usize {
                return Outcome::Throttled;
            }
            s.admitted.push_back(now);
        }
        match s.apps.get(app_id).and_then(|jobs| jobs.get(job_id)) {
            Some(Job::Scripted(index)) => Outcome::Scripted(*index),
            Some(Job::Fixed { body, .. }) => Outcome::Fixed(body.clone()),
            None => Outcome::NotFound,
        }
    }

    fn throttle_message(&self) -> String {
        format!(
            "The throttling threshold has been reached: policy user over ratelimit,limit:{},time:1 second",
            self.opts.rate_limit.unwrap_or(10)
        )
    }

    /// One churn step: flip a random scripted-id job between RUNNING and STOPPED.
    fn churn_one(&self, rng: &mut StdRng) {
        if self.opts.jobs == 0 {
            return;
        }
        let index = rng.random_range(0..self.opts.jobs);
        let id = job_id(index);
        let elapsed = self.epoch.elapsed();
        let now = fmt_time(plus(self.epoch_utc, elapsed));
        let mut guard = self.lock();
        let s = &mut *guard;
        let Some(jobs) = s.apps.get_mut(&self.opts.app_id) else {
            return;
        };
        let mut next = match jobs.get(&id) {
            Some(Job::Scripted(i)) => scripted_job(
                &self.opts.app_id,
                *i,
                self.opts.step,
                self.epoch_utc,
                elapsed,
            ),
            Some(Job::Fixed { snapshot, .. }) => (**snapshot).clone(),
            None => return,
        };
        if next.state == Some(State::Running) {
            next.state = Some(State::Stopped);
            next.stop_reason = Some(
                [
                    StopReason::InternalError,
                    StopReason::ExceedMaxIdleTime,
                    StopReason::TenantStop,
                ][rng.random_range(0..3)]
                .clone(),
            );
            next.stop_time = Some(now.clone());
            next.description = Some("stopped".into());
        } else {
            next.state = Some(State::Running);
            next.stop_reason = None;
            next.stop_time = None;
            next.start_time = Some(now.clone());
            next.description = Some("recording".into());
        }
        next.update_time = Some(now);
        let change = Change {
            app_id: self.opts.app_id.clone(),
            job_id: id.clone(),
            state: next
                .state
                .as_ref()
                .map(|st| st.as_str().to_string())
                .unwrap_or_default(),
            stop_reason: next.stop_reason.as_ref().map(|r| r.as_str().to_string()),
            at: plus(self.epoch_utc, elapsed),
        };
        let previous = jobs.insert(id, fixed(next));
        s.cut_script(previous, elapsed);
        s.changes.push(change);
    }
}

/// Checks the request's credentials without the lock: hashing is the costly part.
fn check_credentials(
    opts: &SimOptions,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<(), Refusal> {
    match &opts.auth {
        SimAuth::None => Ok(()),
        SimAuth::Token(token) => match headers.get("x-auth-token") {
            Some(v) if v.as_bytes() == token.as_bytes() => Ok(()),
            Some(_) => Err(Refusal::bad_key("decrypt token fail")),
            None => Err(Refusal::bad_key("token is missing")),
        },
        SimAuth::AkSk {
            access_key,
            secret_key,
        } => {
            let now = sim_now(opts);
            verify_signature(access_key, secret_key, method, uri, headers, now)
                .map_err(Refusal::bad_key)?;
            check_project(opts.project_id.as_deref(), headers)
        }
    }
}

/// The simulator's clock: the machine's, moved by `clock_offset`.
fn sim_now(opts: &SimOptions) -> DateTime<Utc> {
    Utc::now() + chrono::Duration::seconds(opts.clock_offset)
}

/// `X-Project-Id` is mandatory with AK/SK (the API document says so); when the simulator
/// knows the account's project, it must be that one.
fn check_project(expected: Option<&str>, headers: &HeaderMap) -> Result<(), Refusal> {
    let sent = headers
        .get("x-project-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|p| !p.is_empty());
    match (sent, expected) {
        (None, _) => Err(Refusal {
            status: StatusCode::BAD_REQUEST,
            code: "RTC.00001001",
            message: "OperationUnauthorized: the X-Project-Id header is required with AK/SK authentication".into(),
            bad_key: false,
        }),
        (Some(sent), Some(expected)) if sent != expected => Err(Refusal {
            status: StatusCode::FORBIDDEN,
            code: "APIG.0302",
            message: format!(
                "The IAM user is not authorized to access the API: project {sent:?} is not this account's"
            ),
            bad_key: false,
        }),
        _ => Ok(()),
    }
}

/// Rebuilds the canonical request from the headers the client says it signed, with the path
/// as received, and compares signatures.
fn verify_signature(
    access_key: &str,
    secret_key: &str,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    now: DateTime<Utc>,
) -> Result<(), String> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or("Authorization header is missing")?
        .to_str()
        .map_err(|_| "Authorization header is not text")?;
    let auth =
        sign::parse_authorization(value).ok_or("Authorization header is not SDK-HMAC-SHA256")?;
    if auth.access_key != access_key {
        return Err("the access key does not exist".into());
    }
    let date = headers
        .get(sign::DATE_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or("X-Sdk-Date header is missing")?;
    let signed_at = chrono::NaiveDateTime::parse_from_str(date, sign::DATE_FORMAT)
        .map_err(|_| "X-Sdk-Date is not YYYYMMDDTHHMMSSZ")?
        .and_utc();
    if (now - signed_at).abs().to_std().unwrap_or(Duration::MAX) > MAX_CLOCK_SKEW {
        return Err("X-Sdk-Date is more than 15 minutes off".into());
    }
    let mut signed = Vec::new();
    for name in auth.signed_headers.split(';') {
        let value = headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| format!("signed header {name} is missing"))?;
        signed.push((name, value));
    }
    if !signed
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case(sign::DATE_HEADER))
    {
        return Err("X-Sdk-Date is not signed".into());
    }
    let query: Vec<(String, String)> = uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let canonical = sign::canonical_request(method.as_str(), uri.path(), &query, &signed, b"");
    let expected = sign::hmac_hex(
        secret_key.as_bytes(),
        sign::string_to_sign(date, &canonical).as_bytes(),
    );
    if expected != auth.signature {
        return Err("verify aksk signature fail".into());
    }
    Ok(())
}

fn router(inner: Arc<Inner>) -> Router {
    Router::new()
        .route(
            "/v2/apps/{app_id}/individual-stream-jobs/{job_id}",
            get(api_get_job),
        )
        .route("/_sim/stats", get(ctl_stats))
        .route("/_sim/reset-stats", post(ctl_reset_stats))
        .route("/_sim/faults", post(ctl_add_fault).delete(ctl_clear_faults))
        .route(
            "/_sim/jobs/{app_id}/{job_id}",
            put(ctl_put_job).delete(ctl_delete_job),
        )
        .route("/_sim/raw-jobs/{app_id}/{job_id}", put(ctl_put_raw_job))
        .route("/_sim/changes", get(ctl_changes))
        .fallback(api_not_found)
        .with_state(inner)
}

/// What the gateway answers for a path (or method) it has no API for: before credentials,
/// limits or faults, and not counted as an API request.
async fn api_not_found(AxState(inner): AxState<Arc<Inner>>) -> Response {
    let mut response = error_response(
        StatusCode::NOT_FOUND,
        "APIG.0101",
        "The API does not exist or has not been published in the environment",
        inner.request_id(),
    );
    inner.date_header(&mut response);
    response
}

fn api_response(status: StatusCode, body: impl Into<Body>, request_id: HeaderValue) -> Response {
    let mut response = (status, body.into()).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
    headers.insert(REQUEST_ID, request_id);
    response
}

fn error_response(
    status: StatusCode,
    code: &str,
    message: &str,
    request_id: HeaderValue,
) -> Response {
    let body = serde_json::json!({ "error_code": code, "error_msg": message }).to_string();
    api_response(status, body, request_id)
}

async fn api_get_job(
    AxState(inner): AxState<Arc<Inner>>,
    Path((app_id, job_id)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let now = Instant::now();
    let credentials = check_credentials(&inner.opts, &method, &uri, &headers);
    let (outcome, stall) = inner.decide(&app_id, &job_id, credentials, now);
    let request_id = inner.request_id();
    tracing::debug!(%app_id, %job_id, request_id = ?request_id, "simulated request");
    if let Some(d) = stall {
        tokio::time::sleep(d).await;
    }
    let mut response = match outcome {
        Outcome::Fault(
            kind @ (FaultKind::EchoTokenInError | FaultKind::EchoTokenInDescription),
        ) => {
            let token = ["x-auth-token", "x-security-token"]
                .iter()
                .find_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()))
                .unwrap_or("-");
            echo_response(&kind, &app_id, &job_id, token, request_id)
        }
        outcome => answer(&inner, outcome, &app_id, &job_id, now, request_id),
    };
    inner.date_header(&mut response);
    response
}

fn answer(
    inner: &Inner,
    outcome: Outcome,
    app_id: &str,
    job_id: &str,
    now: Instant,
    request_id: HeaderValue,
) -> Response {
    match outcome {
        Outcome::Fixed(body) => api_response(StatusCode::OK, body, request_id),
        Outcome::Scripted(index) => {
            let elapsed = now.duration_since(inner.epoch);
            let job = scripted_job(
                &inner.opts.app_id,
                index,
                inner.opts.step,
                inner.epoch_utc,
                elapsed,
            );
            let body = serde_json::to_vec(&job).expect("a JobSnapshot always serializes");
            api_response(StatusCode::OK, body, request_id)
        }
        Outcome::NotFound => error_response(
            StatusCode::NOT_FOUND,
            "RTC.00001003",
            &format!("The app or job does not exist: app_id {app_id}, job_id {job_id}"),
            request_id,
        ),
        Outcome::Unauthorized(refusal) => {
            error_response(refusal.status, refusal.code, &refusal.message, request_id)
        }
        Outcome::Throttled => error_response(
            StatusCode::TOO_MANY_REQUESTS,
            "APIG.0308",
            &inner.throttle_message(),
            request_id,
        ),
        Outcome::Fault(kind) => fault_response(inner, kind, app_id, job_id, request_id),
    }
}

/// The answer of an echo fault: it quotes `token`, the request's credential header.
fn echo_response(
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

fn fault_response(
    inner: &Inner,
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
            &inner.throttle_message(),
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

async fn ctl_stats(AxState(inner): AxState<Arc<Inner>>) -> Json<SimStats> {
    Json(Simulator { inner }.stats())
}

async fn ctl_reset_stats(AxState(inner): AxState<Arc<Inner>>) -> StatusCode {
    Simulator { inner }.reset_stats();
    StatusCode::NO_CONTENT
}

async fn ctl_add_fault(
    AxState(inner): AxState<Arc<Inner>>,
    Json(fault): Json<Fault>,
) -> StatusCode {
    Simulator { inner }.set_fault(fault);
    StatusCode::NO_CONTENT
}

async fn ctl_clear_faults(AxState(inner): AxState<Arc<Inner>>) -> StatusCode {
    Simulator { inner }.clear_faults();
    StatusCode::NO_CONTENT
}

async fn ctl_put_job(
    AxState(inner): AxState<Arc<Inner>>,
    Path((app_id, job_id)): Path<(String, String)>,
    Json(job): Json<JobSnapshot>,
) -> StatusCode {
    Simulator { inner }.set_job(&app_id, &job_id, job);
    StatusCode::NO_CONTENT
}

async fn ctl_put_raw_job(
    AxState(inner): AxState<Arc<Inner>>,
    Path((app_id, job_id)): Path<(String, String)>,
    body: Bytes,
) -> StatusCode {
    Simulator { inner }.set_job_body(&app_id, &job_id, body);
    StatusCode::NO_CONTENT
}

async fn ctl_delete_job(
    AxState(inner): AxState<Arc<Inner>>,
    Path((app_id, job_id)): Path<(String, String)>,
) -> StatusCode {
    Simulator { inner }.remove_job(&app_id, &job_id);
    StatusCode::NO_CONTENT
}

async fn ctl_changes(AxState(inner): AxState<Arc<Inner>>) -> Json<Vec<Change>> {
    Json(Simulator { inner }.changes())
}

/// Resolves once shutdown was asked for (or can no longer be).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // The guard wait_for returns is not Send: drop it here, not in the caller's select.
    let _ = shutdown.wait_for(|stop| *stop).await;
}

async fn accept_loop(listener: TcpListener, router: Router, mut shutdown: watch::Receiver<bool>) {
    let for_connections = shutdown.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    // Small responses on keep-alive connections: don't let Nagle hold them.
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(serve_connection(stream, router.clone(), for_connections.clone()));
                }
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "simulator accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stopped(&mut shutdown) => break,
        }
    }
}

/// Serves one connection; a response marked [`ResetConnection`] drops it unanswered.
async fn serve_connection(
    stream: tokio::net::TcpStream,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
) {
    let kill = Arc::new(Notify::new());
    let service = hyper_util::service::TowerToHyperService::new(router);
    let killer = kill.clone();
    let service = hyper::service::service_fn(move |request| {
        let response = hyper::service::Service::call(&service, request);
        let kill = killer.clone();
        async move {
            let response = response.await?;
            if response.extensions().get::<ResetConnection>().is_some() {
                kill.notify_one();
                std::future::pending::<()>().await;
            }
            Ok::<_, Infallible>(response)
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    tokio::select! {
        result = connection => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "simulator connection ended");
            }
        }
        // Dropping the connection future closes the socket.
        _ = kill.notified() => {}
        _ = stopped(&mut shutdown) => {}
    }
}

async fn churn(inner: Arc<Inner>, per_second: f64, mut shutdown: watch::Receiver<bool>) {
    let period = Duration::from_secs_f64(1.0 / per_second).max(Duration::from_micros(1));
    let mut ticker = tokio::time::interval(period);
    // Burst: above 1000/s ticks come late, and catching up keeps the average rate.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut rng = StdRng::seed_from_u64(inner.opts.seed);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => inner.churn_one(&mut rng),
            _ = stopped(&mut shutdown) => break,
        }
    }
}

/// `recwatch simulate`: the simulator as its own process.
#[derive(Clone, Debug, clap::Args)]
pub struct SimulateArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8086")]
    pub listen: SocketAddr,
    /// Number of jobs, job-0000 upwards.
    #[arg(long, default_value_t = 12)]
    pub jobs: usize,
    #[arg(long, default_value = "demo-app")]
    pub app_id: String,
    /// Phase length of the script, e.g. "5s" or "500ms".
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub step: Duration,
    /// Jobs start RUNNING and stay so, instead of walking the script.
    #[arg(long = "static")]
    pub static_jobs: bool,
    /// Require requests signed with this access key (SDK-HMAC-SHA256).
    #[arg(long, requires = "secret_key", conflicts_with = "token")]
    pub access_key: Option<String>,
    #[arg(long, requires = "access_key")]
    pub secret_key: Option<String>,
    /// With --access-key: the only X-Project-Id accepted (any is accepted without it, but one
    /// is always required).
    #[arg(long, requires = "access_key")]
    pub project_id: Option<String>,
    /// Require `X-Auth-Token` equal to this.
    #[arg(long)]
    pub token: Option<String>,
    /// Answer 429 APIG.0308 beyond N requests in the trailing second.
    #[arg(long)]
    pub rate_limit: Option<u32>,
    /// Change this many random jobs per second.
    #[arg(long)]
    pub churn: Option<f64>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl SimulateArgs {
    pub fn options(&self) -> SimOptions {
        let auth = match (&self.access_key, &self.secret_key, &self.token) {
            (Some(ak), Some(sk), _) => SimAuth::AkSk {
                access_key: ak.clone(),
                secret_key: sk.clone(),
            },
            (_, _, Some(token)) => SimAuth::Token(token.clone()),
            _ => SimAuth::None,
        };
        SimOptions {
            app_id: self.app_id.clone(),
            jobs: self.jobs,
            step: self.step,
            scripted: !self.static_jobs,
            auth,
            rate_limit: self.rate_limit,
            churn: self.churn,
            seed: self.seed,
            project_id: self.project_id.clone(),
            ..SimOptions::default()
        }
    }
}

/// The first line `run` prints; tests parse the address out of it.
fn listening_line(addr: SocketAddr, jobs: usize, app_id: &str) -> String {
    format!("recwatch simulator listening on http://{addr} ({jobs} jobs, app {app_id})")
}

/// Binds, prints the listening line, and serves until SIGINT or SIGTERM.
pub async fn run(args: SimulateArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::io::Write;
    let listener = TcpListener::bind(args.listen).await.with_context(|| {
        format!(
            "cannot listen on {}: is another simulator running there? try --listen 127.0.0.1:0",
            args.listen
        )
    })?;
    let sim = start(listener, args.options())
        .await
        .context("starting the simulator")?;
    let mut stdout = std::io::stdout().lock();
    writeln!(
        stdout,
        "{}",
        listening_line(sim.addr(), args.jobs, &args.app_id)
    )?;
    stdout.flush()?;
    drop(stdout);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("waiting for SIGINT")?,
        _ = terminate.recv() => {}
    }
    sim.shutdown();
    Ok(())
}

/// The gateway's answers around the API (project id, the gateway's 404, redirects, a skewed
/// clock, raw bodies), checked through recwatch's own client so the client's reading of each
/// is proved too.
#[cfg(test)]
mod gateway_tests {
    use super::*;
    use recwatch_rtc::client::{ErrorKind, RtcClient, RtcError};
    use recwatch_rtc::secret::Secret;
    use recwatch_rtc::{Auth, ClientConfig};

    const AK: &str = "AKGATEWAY";
    const SK: &str = "sk-gateway";
    const PROJECT: &str = "project-7";

    async fn spawn(opts: SimOptions) -> Simulator {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        start(listener, opts).await.unwrap()
    }

    fn aksk(project_id: Option<&str>) -> SimOptions {
        SimOptions {
            jobs: 2,
            scripted: false,
            auth: SimAuth::AkSk {
                access_key: AK.into(),
                secret_key: SK.into(),
            },
            project_id: project_id.map(str::to_string),
            lockout_after: 1,
            ..SimOptions::default()
        }
    }

    /// recwatch's client for `sim`, sending `project` as X-Project-Id (none when `None`).
    fn rtc(sim: &Simulator, base_path: &str, project: Option<&str>) -> RtcClient {
        let mut c = ClientConfig::new(
            format!("{}{base_path}", sim.url()).parse().unwrap(),
            Auth::AkSk {
                access_key: AK.into(),
                secret_key: Secret::new(SK),
                security_token: None,
            },
        );
        c.project_id = project.map(str::to_string);
        RtcClient::new(&c).unwrap()
    }

    async fn poll(client: &RtcClient, job: &str) -> Result<JobSnapshot, RtcError> {
        client.get_job("demo-app", job).await.map(|f| f.job)
    }

    #[tokio::test]
    async fn x_project_id_is_mandatory_with_aksk_and_must_be_the_accounts() {
        let sim = spawn(aksk(Some(PROJECT))).await;
        let right = rtc(&sim, "", Some(PROJECT));
        assert!(poll(&right, "job-0000").await.is_ok());

        let cases = [
            ("missing", None, 400, "RTC.00001001"),
            ("another project", Some("project-8"), 403, "APIG.0302"),
        ];
        for (name, project, status, code) in cases {
            let client = rtc(&sim, "", project);
            // Three in a row: more than lockout_after (1), yet no lockout, because the
            // signature itself was right.
            for _ in 0..3 {
                let e = poll(&client, "job-0000").await.expect_err(name);
                assert_eq!(e.kind, ErrorKind::Unauthorized, "{name}: {e}");
                assert_eq!(e.status, Some(status), "{name}");
                assert_eq!(e.error_code.as_deref(), Some(code), "{name}");
                assert!(e.request_id.is_some(), "{name}");
            }
            assert!(poll(&right, "job-0000").await.is_ok(), "{name}: locked out");
        }
        let e = poll(&rtc(&sim, "", None), "job-0000").await.unwrap_err();
        assert!(
            e.to_string().contains("X-Project-Id header is required"),
            "{e}"
        );
        // Any project is accepted when the simulator is not told the account's, but one is
        // still required.
        let open = spawn(aksk(None)).await;
        assert!(poll(&rtc(&open, "", Some("any")), "job-0000").await.is_ok());
        let e = poll(&rtc(&open, "", None), "job-0000").await.unwrap_err();
        assert_eq!(e.error_code.as_deref(), Some("RTC.00001001"));
    }

    #[tokio::test]
    async fn a_wrong_path_is_the_gateways_404_not_a_missing_job() {
        let sim = spawn(aksk(Some(PROJECT))).await;
        // An endpoint with a wrong base path: every request misses the API.
        let client = rtc(&sim, "/rtc-typo", Some(PROJECT));
        let e = poll(&client, "job-0000").await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::EndpointNotFound, "{e}");
        assert_eq!(e.status, Some(404));
        assert_eq!(e.error_code.as_deref(), Some("APIG.0101"));
        // A missing job is the RTC service's own 404.
        let right = rtc(&sim, "", Some(PROJECT));
        let e = poll(&right, "no-such-job").await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
        assert_eq!(e.error_code.as_deref(), Some("RTC.00001003"));
        // The gateway's 404 comes before credentials and is not counted as an API request.
        assert_eq!(sim.stats().requests, 1);
        assert_eq!(sim.stats().refused_auth, 0);
    }

    #[tokio::test]
    async fn redirect_and_gateway_404_faults() {
        let sim = spawn(aksk(Some(PROJECT))).await;
        let client = rtc(&sim, "", Some(PROJECT));
        let login = format!("{}/login", sim.url());
        sim.set_fault(Fault::new(FaultKind::Redirect(login.clone())).times(1));
        let e = poll(&client, "job-0000").await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Redirect, "{e}");
        assert_eq!(e.status, Some(302));
        assert_eq!(e.detail.as_deref(), Some(format!("to {login}").as_str()));

        sim.set_fault(Fault::new(FaultKind::ApiNotFound).for_job("job-0001"));
        let e = poll(&client, "job-0001").await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::EndpointNotFound, "{e}");
        assert_eq!(e.error_code.as_deref(), Some("APIG.0101"));
        assert!(poll(&client, "job-0000").await.is_ok(), "only job-0001's");
        let s = sim.stats();
        assert_eq!(s.by_status.get(&302), Some(&1));
        assert_eq!(s.by_status.get(&404), Some(&1));
        assert_eq!(s.faults_applied, 2);
        // As JSON, for a simulator run as its own process.
        let json: Fault = serde_json::from_str(r#"{"kind": {"redirect": "http://x/"}}"#).unwrap();
        assert_eq!(json.kind, FaultKind::Redirect("http://x/".into()));
        let json: Fault = serde_json::from_str(r#"{"kind": "api_not_found"}"#).unwrap();
        assert_eq!(json.kind, FaultKind::ApiNotFound);
    }

    #[tokio::test]
    async fn a_skewed_clock_is_refused_and_named() {
        let sim = spawn(SimOptions {
            clock_offset: 3600,
            ..aksk(Some(PROJECT))
        })
        .await;
        let e = poll(&rtc(&sim, "", Some(PROJECT)), "job-0000")
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unauthorized, "{e}");
        assert_eq!(e.clock_skew_minutes, Some(-60), "{e}");
        let text = e.to_string();
        assert!(
            text.contains("15 minutes off"),
            "the gateway's reason: {text}"
        );
        assert!(
            text.contains("the system clock is 60 minutes off the API's Date header"),
            "{text}"
        );
        // A refusal with the clock right says nothing about clocks.
        let sim = spawn(aksk(Some(PROJECT))).await;
        let e = poll(&rtc(&sim, "", None), "job-0000").await.unwrap_err();
        assert_eq!(e.clock_skew_minutes, None, "{e}");
    }

    #[tokio::test]
    async fn raw_bodies_and_answers_about_another_job() {
        let sim = spawn(aksk(Some(PROJECT))).await;
        let client = rtc(&sim, "", Some(PROJECT));
        sim.set_job_body(
            "demo-app",
            "job-0000",
            &b"{\"job_id\":\"job-0000\",\"state\":\"running\",\"record_param\":\"r\",\"description\":\"caf\xe9\"}"[..],
        );
        let job = poll(&client, "job-0000").await.unwrap();
        assert_eq!(job.state, Some(State::Running));
        assert_eq!(job.description.as_deref(), Some("caf\u{FFFD}"));
        assert_eq!(sim.changes().last().unwrap().state, "RUNNING");

        sim.set_job(
            "demo-app",
            "job-0001",
            JobSnapshot {
                job_id: Some("job-0000".into()),
                app_id: Some("demo-app".into()),
                state: Some(State::Stopped),
                stop_reason: Some(StopReason::InternalError),
                ..JobSnapshot::default()
            },
        );
        let e = poll(&client, "job-0001").await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::WrongJob, "{e}");
        assert!(e.request_id.is_some());
        assert!(e.to_string().contains(r#"job "job-0000""#), "{e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn spawn(opts: SimOptions) -> Simulator {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        start(listener, opts).await.unwrap()
    }

    fn static_opts() -> SimOptions {
        SimOptions {
            jobs: 3,
            scripted: false,
            ..SimOptions::default()
        }
    }

    fn client() -> reqwest::Client {
        // no_proxy: a proxy from the environment must not see loopback traffic.
        reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }

    /// A client for tests on tokio's paused clock. The paused clock jumps to the next timer
    /// whenever the runtime would otherwise sleep, so a client timeout or a pool's idle timer
    /// could move the simulator's time while a request is on the wire; this client sets no
    /// timer at all (no timeout, no pooled connections), so time moves only when the test
    /// advances it.
    fn paused_client() -> reqwest::Client {
        reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap()
    }

    fn job_path(app_id: &str, job_id: &str) -> String {
        format!(
            "/v2/apps/{}/individual-stream-jobs/{}",
            sign::encode(app_id),
            sign::encode(job_id)
        )
    }

    async fn get(sim: &Simulator, job_id: &str) -> reqwest::Result<reqwest::Response> {
        get_with(&client(), sim, job_id).await
    }

    async fn get_with(
        c: &reqwest::Client,
        sim: &Simulator,
        job_id: &str,
    ) -> reqwest::Result<reqwest::Response> {
        c.get(format!("{}{}", sim.url(), job_path("demo-app", job_id)))
            .send()
            .await
    }

    async fn get_job_with(c: &reqwest::Client, sim: &Simulator, job_id: &str) -> JobSnapshot {
        let response = get_with(c, sim, job_id).await.unwrap();
        assert_eq!(response.status(), 200, "{job_id}");
        response.json().await.unwrap()
    }

    async fn error_body(response: reqwest::Response) -> (u16, String, String) {
        let status = response.status().as_u16();
        let body: serde_json::Value = response.json().await.unwrap();
        (
            status,
            body["error_code"].as_str().unwrap().into(),
            body["error_msg"].as_str().unwrap().into(),
        )
    }

    /// Polls `check` until it returns `Some`, failing after 10 s.
    async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(value) = check().await {
                return value;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[test]
    fn script_table() {
        let step = Duration::from_secs(10);
        let s = Duration::from_secs_f64;
        let cases = [
            ("kind 0 starts in INIT", 0, s(0.0), State::Init, None),
            (
                "kind 0 still INIT just before its step",
                0,
                s(9.999),
                State::Init,
                None,
            ),
            (
                "kind 0 RUNNING at the boundary",
                0,
                s(10.0),
                State::Running,
                None,
            ),
            (
                "kind 0 RUNNING for two steps",
                0,
                s(29.999),
                State::Running,
                None,
            ),
            (
                "kind 0 stops with INTERNAL_ERROR",
                0,
                s(30.0),
                State::Stopped,
                Some(StopReason::InternalError),
            ),
            (
                "kind 1 is staggered by a tenth of a step",
                1,
                s(10.5),
                State::Init,
                None,
            ),
            (
                "kind 1 stops idle",
                1,
                s(31.0),
                State::Stopped,
                Some(StopReason::ExceedMaxIdleTime),
            ),
            (
                "kind 2 still RUNNING before its stop",
                2,
                s(31.9),
                State::Running,
                None,
            ),
            (
                "kind 2 stops by the tenant",
                2,
                s(32.0),
                State::Stopped,
                Some(StopReason::TenantStop),
            ),
            ("kind 3 keeps RUNNING", 3, s(3600.0), State::Running, None),
            ("kind 4 never leaves INIT", 4, s(3600.0), State::Init, None),
            (
                "kind 5, even round: no reason",
                5,
                s(3600.0),
                State::Stopped,
                None,
            ),
            (
                "kind 5, odd round: an unknown reason",
                11,
                s(3600.0),
                State::Stopped,
                Some(StopReason::Other("RECORDER_CRASHED".into())),
            ),
            (
                "job 12 is kind 0 staggered by two tenths",
                12,
                s(11.9),
                State::Init,
                None,
            ),
            (
                "job 12 RUNNING after its stagger",
                12,
                s(12.0),
                State::Running,
                None,
            ),
        ];
        for (name, index, elapsed, state, reason) in cases {
            assert_eq!(script_at(index, elapsed, step), (state, reason), "{name}");
        }
    }

    #[test]
    fn script_staggers_changes_and_sets_idle_time() {
        let step = Duration::from_secs(5);
        let starts: std::collections::HashSet<_> = (0..10)
            .filter_map(|i| timeline(i, step).running_at)
            .collect();
        assert_eq!(
            starts.len(),
            9,
            "the 9 jobs that start RUNNING do so at different times"
        );
        assert_eq!(timeline(4, step).max_idle_time, 5);
        assert_eq!(timeline(3, step).max_idle_time, 30);
    }

    #[test]
    fn sliding_second_counts_table() {
        let ms = Duration::from_millis;
        let cases: [(&str, &[u64], u64); 5] = [
            ("one request", &[0], 1),
            ("spread over seconds", &[0, 1000, 2000, 3000], 1),
            ("a window is shorter than a second", &[0, 100, 900, 1000], 3),
            (
                "a burst straddling two calendar seconds",
                &[900, 950, 1000, 1050, 1100, 1899],
                6,
            ),
            (
                "the most crowded window wins",
                &[0, 10, 20, 1500, 1600, 1700, 1800, 2000, 2600],
                5,
            ),
        ];
        let t0 = Instant::now();
        for (name, arrivals, max) in cases {
            let mut c = Counters::default();
            for a in arrivals {
                c.arrival(t0 + ms(*a), (*a / 1000) as i64, "app", "job");
            }
            let stats = c.snapshot();
            assert_eq!(stats.max_per_sliding_second, max, "{name}");
            assert_eq!(stats.requests, arrivals.len() as u64, "{name}");
            assert_eq!(
                stats.per_second.iter().map(|(_, n)| n).sum::<u64>(),
                arrivals.len() as u64,
                "{name}"
            );
        }
    }

    #[test]
    fn per_second_keeps_ten_minutes() {
        let mut c = Counters::default();
        let t0 = Instant::now();
        c.arrival(t0, 1000, "a", "j");
        c.arrival(t0, 1599, "a", "j");
        assert_eq!(c.snapshot().per_second, vec![(1000, 1), (1599, 1)]);
        c.arrival(t0, 1600, "a", "j");
        assert_eq!(c.snapshot().per_second, vec![(1599, 1), (1600, 1)]);
    }

    // On the paused clock the simulator's time moves only when the test advances it, so each
    // request sees exactly the moment of the script the test chose, however slow the machine.
    #[tokio::test(start_paused = true)]
    async fn scripted_jobs_walk_their_script_and_log_changes() {
        let step = Duration::from_secs(10);
        let ms = Duration::from_millis;
        let sim = spawn(SimOptions {
            jobs: 6,
            step,
            ..SimOptions::default()
        })
        .await;
        let c = paused_client();
        let first = get_job_with(&c, &sim, "job-0000").await;
        assert_eq!(first.state, Some(State::Init));
        assert_eq!(first.job_id.as_deref(), Some("job-0000"));
        assert_eq!(first.app_id.as_deref(), Some("demo-app"));
        assert_eq!(first.start_time, None);

        // job-0000 (no stagger) runs from one step to three steps after the start.
        tokio::time::advance(step - ms(1)).await;
        assert_eq!(
            get_job_with(&c, &sim, "job-0000").await.state,
            Some(State::Init),
            "still INIT just before its step"
        );
        tokio::time::advance(ms(1)).await;
        let running = get_job_with(&c, &sim, "job-0000").await;
        assert_eq!(running.state, Some(State::Running));
        assert!(running.start_time.is_some() && running.stop_time.is_none());
        tokio::time::advance(step * 2).await;
        let stopped = get_job_with(&c, &sim, "job-0000").await;
        assert_eq!(stopped.state, Some(State::Stopped));
        assert_eq!(stopped.stop_reason, Some(StopReason::InternalError));
        let (create, start, stop) = (
            stopped.create_time.unwrap(),
            stopped.start_time.unwrap(),
            stopped.stop_time.unwrap(),
        );
        assert!(
            create < start && start < stop,
            "{create} < {start} < {stop}"
        );
        assert_eq!(Some(start.as_str()), running.start_time.as_deref());
        assert_eq!(stopped.update_time.as_deref(), Some(stop.as_str()));
        assert_eq!(create.len(), "2006-01-02T15:04:05.075Z".len(), "{create}");

        let idle = get_job_with(&c, &sim, "job-0004").await;
        assert_eq!(
            (idle.state, idle.max_idle_time),
            (Some(State::Init), Some(5))
        );

        let changes: Vec<Change> = sim
            .changes()
            .into_iter()
            .filter(|c| c.job_id == "job-0000")
            .collect();
        let seen: Vec<_> = changes
            .iter()
            .map(|c| (c.state.as_str(), c.stop_reason.as_deref()))
            .collect();
        assert_eq!(
            seen,
            [("RUNNING", None), ("STOPPED", Some("INTERNAL_ERROR"))]
        );
        assert_eq!(fmt_time(changes[0].at), start);
        assert_eq!(fmt_time(changes[1].at), stop);
        let all = sim.changes();
        assert!(
            all.windows(2).all(|w| w[0].at <= w[1].at),
            "changes are in time order"
        );
        assert!(
            all.iter().all(|c| c.job_id != "job-0004"),
            "the INIT-forever job never changes: {all:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn set_job_overrides_the_script_and_is_logged() {
        let step = Duration::from_secs(10);
        let sim = spawn(SimOptions {
            jobs: 2,
            step,
            ..SimOptions::default()
        })
        .await;
        let c = paused_client();
        let job = JobSnapshot {
            job_id: Some("job-0000".into()),
            state: Some(State::Stopped),
            stop_reason: Some(StopReason::TenantStop),
            ..JobSnapshot::default()
        };
        // Set before job-0000's script reached RUNNING: its script logs nothing after this.
        sim.set_job("demo-app", "job-0000", job.clone());
        // Past the end of job-0001's script (it stops 3.1 steps in).
        tokio::time::advance(step * 4).await;
        assert_eq!(
            get_job_with(&c, &sim, "job-0001").await.state,
            Some(State::Stopped)
        );
        assert_eq!(
            get_job_with(&c, &sim, "job-0000").await,
            job,
            "served exactly as set, script overridden"
        );
        let changes: Vec<_> = sim
            .changes()
            .into_iter()
            .filter(|c| c.job_id == "job-0000")
            .collect();
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(
            (changes[0].state.as_str(), changes[0].stop_reason.as_deref()),
            ("STOPPED", Some("TENANT_STOP"))
        );

        sim.remove_job("demo-app", "job-0001");
        assert_eq!(get_with(&c, &sim, "job-0001").await.unwrap().status(), 404);
    }

    #[tokio::test]
    async fn unknown_job_is_404_with_the_rtc_error_body() {
        let sim = spawn(static_opts()).await;
        let response = get(&sim, "nope").await.unwrap();
        let id = response
            .headers()
            .get("x-request-id")
            .expect("request id on errors too")
            .clone();
        assert_eq!(id.len(), 32);
        let (status, code, message) = error_body(response).await;
        assert_eq!((status, code.as_str()), (404, "RTC.00001003"));
        assert!(message.contains("nope"), "{message}");
        let other = get(&sim, "job-0000").await.unwrap();
        assert_ne!(
            other.headers().get("x-request-id"),
            Some(&id),
            "request ids differ"
        );
        let static_job = other.json::<JobSnapshot>().await.unwrap();
        assert_eq!(static_job.state, Some(State::Running));
    }

    #[tokio::test]
    async fn each_fault_kind_as_reqwest_sees_it() {
        let sim = spawn(static_opts()).await;
        let c = client();
        let url = format!("{}{}", sim.url(), job_path("demo-app", "job-0000"));

        sim.set_fault(Fault::new(FaultKind::ServerError).times(1));
        let (status, code, _) = error_body(c.get(&url).send().await.unwrap()).await;
        assert_eq!((status, code.as_str()), (500, "RTC.00002001"));

        sim.set_fault(Fault::new(FaultKind::Throttle).times(1));
        let (status, code, message) = error_body(c.get(&url).send().await.unwrap()).await;
        assert_eq!((status, code.as_str()), (429, "APIG.0308"));
        assert_eq!(
            message,
            "The throttling threshold has been reached: policy user over ratelimit,limit:10,time:1 second"
        );

        sim.set_fault(Fault::new(FaultKind::RefuseAuth).times(1));
        let (status, code, _) = error_body(c.get(&url).send().await.unwrap()).await;
        assert_eq!((status, code.as_str()), (401, "APIG.0301"));

        sim.set_fault(Fault::new(FaultKind::Garbage).times(1));
        let response = c.get(&url).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let err = response.json::<JobSnapshot>().await.unwrap_err();
        assert!(err.is_decode(), "{err:?}");

        sim.set_fault(Fault::new(FaultKind::Truncated).times(1));
        let response = c.get(&url).send().await.unwrap();
        assert_eq!(response.status(), 200, "headers arrive");
        let err = response.bytes().await.unwrap_err();
        // reqwest wraps the body error in a decode error; hyper saw the EOF short of the length.
        assert!(
            err.is_decode() && format!("{err:?}").contains("IncompleteBody"),
            "{err:?}"
        );

        sim.set_fault(Fault::new(FaultKind::Reset).times(1));
        let err = c.get(&url).send().await.unwrap_err();
        // Closed with nothing written: hyper's "connection closed before message completed".
        assert!(
            err.is_request()
                && !err.is_timeout()
                && format!("{err:?}").contains("IncompleteMessage"),
            "{err:?}"
        );

        sim.set_fault(Fault::new(FaultKind::Stall(Duration::from_millis(300))).times(1));
        let started = Instant::now();
        let response = c.get(&url).send().await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(
            response.json::<JobSnapshot>().await.unwrap().state,
            Some(State::Running)
        );

        // Every rule was used up: the same client gets normal answers again.
        assert_eq!(c.get(&url).send().await.unwrap().status(), 200);
        let stats = sim.stats();
        assert_eq!(
            (
                stats.faults_applied,
                stats.resets,
                stats.refused_auth,
                stats.throttled
            ),
            (7, 1, 1, 1)
        );
        assert_eq!(stats.requests, 8);
        let expected: BTreeMap<u16, u64> = [(200, 4), (401, 1), (429, 1), (500, 1)].into();
        assert_eq!(stats.by_status, expected);
    }

    // Paused clock: a fault "lasting" 200 ms ends when the simulator's clock passes it, not
    // when the machine gets round to the next request.
    #[tokio::test(start_paused = true)]
    async fn faults_scoped_to_a_job_a_count_and_a_duration() {
        let sim = spawn(static_opts()).await;
        let c = paused_client();
        let status = |job: &'static str| {
            let (c, sim) = (c.clone(), sim.clone());
            async move { get_with(&c, &sim, job).await.unwrap().status() }
        };
        sim.set_fault(
            Fault::new(FaultKind::ServerError)
                .for_job("job-0001")
                .times(2),
        );
        assert_eq!(status("job-0000").await, 200);
        assert_eq!(status("job-0001").await, 500);
        assert_eq!(status("job-0000").await, 200);
        assert_eq!(status("job-0001").await, 500);
        assert_eq!(status("job-0001").await, 200);
        assert_eq!(sim.stats().faults_applied, 2);

        sim.set_fault(Fault::new(FaultKind::ServerError).lasting(Duration::from_millis(200)));
        assert_eq!(status("job-0002").await, 500);
        assert_eq!(status("job-0002").await, 500, "still within its 200 ms");
        // `lasting` counts from the wall clock when the rule was made; the paused simulator
        // clock is behind it by the real time the test took so far, so go well past it.
        tokio::time::advance(Duration::from_secs(600)).await;
        assert_eq!(status("job-0002").await, 200, "the timed fault ended");

        sim.set_fault(Fault::new(FaultKind::ServerError));
        assert_eq!(status("job-0000").await, 500);
        sim.clear_faults();
        assert_eq!(status("job-0000").await, 200);
    }

    const AK: &str = "AKTESTKEY";
    const SK: &str = "sk-test-secret";

    async fn signed_get(
        c: &reqwest::Client,
        sim: &Simulator,
        job_id: &str,
        secret: &str,
        signed_at: DateTime<Utc>,
    ) -> reqwest::Response {
        let path = job_path("demo-app", job_id);
        let host = sim.addr().to_string();
        let date = signed_at.format(sign::DATE_FORMAT).to_string();
        // What a client sends and signs; reqwest adds Host from the URL, which is the same.
        let headers = [
            ("Content-Type", "application/json"),
            ("Host", host.as_str()),
            ("X-Project-Id", "project-1"),
            (sign::DATE_HEADER, date.as_str()),
        ];
        let signed = sign::sign(AK, secret, "GET", &path, &[], &headers, b"");
        let mut request = c.get(format!("{}{path}", sim.url()));
        for (name, value) in headers.iter().filter(|(n, _)| *n != "Host") {
            request = request.header(*name, *value);
        }
        request
            .header("Authorization", signed.authorization)
            .send()
            .await
            .unwrap()
    }

    fn aksk_opts() -> SimOptions {
        SimOptions {
            auth: SimAuth::AkSk {
                access_key: AK.into(),
                secret_key: SK.into(),
            },
            ..static_opts()
        }
    }

    #[tokio::test]
    async fn signatures_are_verified() {
        let sim = spawn(aksk_opts()).await;
        let c = client();
        let now = Utc::now();
        assert_eq!(
            signed_get(&c, &sim, "job-0000", SK, now).await.status(),
            200
        );

        let (status, code, message) =
            error_body(signed_get(&c, &sim, "job-0000", "wrong", now).await).await;
        assert_eq!((status, code.as_str()), (401, "APIG.0301"));
        assert!(message.contains("signature"), "{message}");

        let stale = now - chrono::Duration::minutes(20);
        let (status, _, message) =
            error_body(signed_get(&c, &sim, "job-0000", SK, stale).await).await;
        assert_eq!(status, 401);
        assert!(message.contains("15 minutes"), "{message}");
        assert_eq!(
            signed_get(
                &c,
                &sim,
                "job-0000",
                SK,
                now - chrono::Duration::minutes(10)
            )
            .await
            .status(),
            200
        );

        assert_eq!(
            get(&sim, "job-0000").await.unwrap().status(),
            401,
            "unsigned"
        );

        // A `/` inside an id travels as %2F, is signed as the SDK does and decoded for lookup.
        sim.set_job(
            "demo-app",
            "cam/1",
            JobSnapshot {
                job_id: Some("cam/1".into()),
                ..JobSnapshot::default()
            },
        );
        let response = signed_get(&c, &sim, "cam/1", SK, now).await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            response
                .json::<JobSnapshot>()
                .await
                .unwrap()
                .job_id
                .as_deref(),
            Some("cam/1")
        );
        assert_eq!(sim.stats().refused_auth, 3);
    }

    // Paused clock: the lock is still on however long the requests take, and ends exactly
    // when the simulator's clock passes it.
    #[tokio::test(start_paused = true)]
    async fn repeated_failures_lock_the_access_key() {
        let lockout = Duration::from_secs(5 * 60);
        let sim = spawn(SimOptions {
            lockout_after: 2,
            lockout,
            ..aksk_opts()
        })
        .await;
        let c = paused_client();
        let now = Utc::now;
        // Failures must come in a row: a success in between starts the count again.
        for secret in ["bad", "bad", SK, "bad", "bad", SK] {
            let expected = if secret == SK { 200 } else { 401 };
            assert_eq!(
                signed_get(&c, &sim, "job-0000", secret, now())
                    .await
                    .status(),
                expected,
                "{secret}"
            );
        }
        for _ in 0..3 {
            assert_eq!(
                signed_get(&c, &sim, "job-0000", "bad", now())
                    .await
                    .status(),
                401
            );
        }
        let (status, code, message) =
            error_body(signed_get(&c, &sim, "job-0000", SK, now()).await).await;
        assert_eq!((status, code.as_str()), (401, "APIG.0301"));
        assert!(message.contains("locked"), "{message}");
        tokio::time::advance(lockout - Duration::from_millis(1)).await;
        assert_eq!(
            signed_get(&c, &sim, "job-0000", SK, now()).await.status(),
            401,
            "locked until the end"
        );
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(
            signed_get(&c, &sim, "job-0000", SK, now()).await.status(),
            200,
            "the lock ended"
        );
    }

    #[tokio::test]
    async fn tokens_are_compared() {
        let sim = spawn(SimOptions {
            auth: SimAuth::Token("tok-1".into()),
            ..static_opts()
        })
        .await;
        let url = format!("{}{}", sim.url(), job_path("demo-app", "job-0000"));
        let with = |token: &'static str| client().get(&url).header("X-Auth-Token", token).send();
        assert_eq!(with("tok-1").await.unwrap().status(), 200);
        assert_eq!(with("tok-2").await.unwrap().status(), 401);
        assert_eq!(get(&sim, "job-0000").await.unwrap().status(), 401);
        assert_eq!(sim.stats().refused_auth, 2);
    }

    // Paused clock: the 8 requests fall in one second of the simulator's clock however slow
    // the machine, and the next second is reached by advancing it.
    #[tokio::test(start_paused = true)]
    async fn rate_limit_answers_429_beyond_n_per_second() {
        let sim = spawn(SimOptions {
            rate_limit: Some(5),
            ..static_opts()
        })
        .await;
        let c = paused_client();
        let mut statuses = Vec::new();
        let mut last = None;
        for _ in 0..8 {
            let response = get_with(&c, &sim, "job-0000").await.unwrap();
            statuses.push(response.status().as_u16());
            last = Some(response);
        }
        assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429]);
        let (_, code, message) = error_body(last.unwrap()).await;
        assert_eq!(code, "APIG.0308");
        assert_eq!(
            message,
            "The throttling threshold has been reached: policy user over ratelimit,limit:5,time:1 second"
        );
        let stats = sim.stats();
        assert_eq!((stats.throttled, stats.max_per_sliding_second), (3, 8));
        // Refused requests used up nothing: a second after the five, five more are let through.
        tokio::time::advance(Duration::from_millis(999)).await;
        assert_eq!(get_with(&c, &sim, "job-0000").await.unwrap().status(), 429);
        tokio::time::advance(Duration::from_millis(1)).await;
        for _ in 0..5 {
            assert_eq!(get_with(&c, &sim, "job-0000").await.unwrap().status(), 200);
        }
        assert_eq!(get_with(&c, &sim, "job-0000").await.unwrap().status(), 429);
    }

    #[tokio::test(start_paused = true)]
    async fn stats_count_api_requests_only() {
        let sim = spawn(static_opts()).await;
        let c = paused_client();
        for job in [
            "job-0000", "job-0001", "job-0000", "job-0001", "job-0000", "job-0001", "job-0000",
        ] {
            get_with(&c, &sim, job).await.unwrap();
        }
        let stats: SimStats = c
            .get(format!("{}/_sim/stats", sim.url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(stats, sim.stats(), "the HTTP view is the same");
        assert_eq!(stats.requests, 7);
        assert_eq!(stats.by_status, [(200, 7)].into());
        // On the paused clock all seven arrived in the same instant.
        assert_eq!(stats.max_per_sliding_second, 7);
        assert_eq!(stats.per_second.len(), 1);
        assert_eq!(stats.per_second.iter().map(|(_, n)| n).sum::<u64>(), 7);
        let jobs = &stats.by_job["demo-app"];
        assert_eq!((jobs["job-0000"], jobs["job-0001"]), (4, 3));
        assert!(
            !jobs.contains_key("job-0002"),
            "a job never polled is absent"
        );

        let reset = c
            .post(format!("{}/_sim/reset-stats", sim.url()))
            .send()
            .await
            .unwrap();
        assert!(reset.status().is_success());
        let stats = sim.stats();
        assert_eq!(
            (
                stats.requests,
                stats.max_per_sliding_second,
                stats.by_job.len()
            ),
            (0, 0, 0)
        );
    }

    #[tokio::test]
    async fn control_endpoints() {
        let sim = spawn(static_opts()).await;
        let c = client();
        let base = sim.url();
        let put = c
            .put(format!("{base}/_sim/jobs/other-app/cam%2F7"))
            .json(
                &serde_json::json!({"job_id": "cam/7", "state": "STOPPED", "stop_reason": "QUOTA"}),
            )
            .send()
            .await
            .unwrap();
        assert!(put.status().is_success(), "{}", put.status());
        let url = format!("{base}{}", job_path("other-app", "cam/7"));
        let job: JobSnapshot = c.get(&url).send().await.unwrap().json().await.unwrap();
        assert_eq!(job.stop_reason, Some(StopReason::Other("QUOTA".into())));

        let changes: Vec<Change> = c
            .get(format!("{base}/_sim/changes"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(changes.len(), 1);
        assert_eq!(
            (
                changes[0].app_id.as_str(),
                changes[0].job_id.as_str(),
                changes[0].state.as_str()
            ),
            ("other-app", "cam/7", "STOPPED")
        );

        let fault = r#"{"kind": "server_error", "job_id": "cam/7", "remaining": 1}"#;
        let posted = c
            .post(format!("{base}/_sim/faults"))
            .header("content-type", "application/json")
            .body(fault);
        assert!(posted.send().await.unwrap().status().is_success());
        assert_eq!(c.get(&url).send().await.unwrap().status(), 500);
        assert_eq!(c.get(&url).send().await.unwrap().status(), 200);

        let stall = serde_json::json!({"kind": {"stall": "10s"}});
        assert!(
            c.post(format!("{base}/_sim/faults"))
                .json(&stall)
                .send()
                .await
                .unwrap()
                .status()
                .is_success()
        );
        assert!(
            c.delete(format!("{base}/_sim/faults"))
                .send()
                .await
                .unwrap()
                .status()
                .is_success()
        );
        assert_eq!(
            c.get(&url).send().await.unwrap().status(),
            200,
            "cleared, no stall"
        );

        assert!(
            c.delete(format!("{base}/_sim/jobs/other-app/cam%2F7"))
                .send()
                .await
                .unwrap()
                .status()
                .is_success()
        );
        assert_eq!(c.get(&url).send().await.unwrap().status(), 404);
        assert_eq!(sim.stats().requests, 5, "control requests are not counted");
    }

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

    #[tokio::test]
    async fn churn_flips_jobs_and_logs_each_change() {
        let sim = spawn(SimOptions {
            churn: Some(200.0),
            seed: 7,
            ..static_opts()
        })
        .await;
        wait_for("10 churned changes", || async {
            (sim.changes().len() >= 10).then_some(())
        })
        .await;
        sim.shutdown();
        let changes = sim.changes();
        for job in ["job-0000", "job-0001", "job-0002"] {
            let states: Vec<&str> = changes
                .iter()
                .filter(|c| c.job_id == job)
                .map(|c| c.state.as_str())
                .collect();
            // Static jobs start RUNNING, so each job alternates starting with STOPPED.
            for (i, state) in states.iter().enumerate() {
                assert_eq!(
                    *state,
                    if i % 2 == 0 { "STOPPED" } else { "RUNNING" },
                    "{job}: {states:?}"
                );
            }
        }
        let stopped = changes.iter().filter(|c| c.state == "STOPPED");
        assert!(stopped.clone().all(|c| c.stop_reason.is_some()));
    }

    /// The test takes the churn steps itself (the churn task would change the job again at
    /// any moment, racing the request), then asks the API after each.
    #[tokio::test]
    async fn churned_state_is_what_the_api_serves() {
        let sim = spawn(static_opts()).await;
        let c = client();
        let mut rng = StdRng::seed_from_u64(11);
        let mut reasons = std::collections::HashSet::new();
        for step in 1..=20 {
            sim.inner.churn_one(&mut rng);
            let changes = sim.changes();
            assert_eq!(changes.len(), step, "one change per churn step");
            let last = changes.last().unwrap();
            let job = get_job_with(&c, &sim, &last.job_id).await;
            assert_eq!(
                (
                    job.state.as_ref().map(State::as_str),
                    job.stop_reason.as_ref().map(|r| r.as_str().to_string())
                ),
                (Some(last.state.as_str()), last.stop_reason.clone()),
                "step {step}"
            );
            assert_eq!(job.update_time, Some(fmt_time(last.at)), "step {step}");
            reasons.extend(last.stop_reason.clone());
        }
        assert!(reasons.len() > 1, "stop reasons vary: {reasons:?}");
    }

    #[tokio::test]
    async fn shutdown_stops_serving() {
        let sim = spawn(static_opts()).await;
        assert_eq!(get(&sim, "job-0000").await.unwrap().status(), 200);
        sim.shutdown();
        wait_for("connections to be refused", || async {
            get(&sim, "job-0000").await.is_err().then_some(())
        })
        .await;
    }

    #[test]
    fn cli_arguments() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: SimulateArgs,
        }
        let cli = Cli::try_parse_from([
            "x",
            "--listen",
            "127.0.0.1:0",
            "--step",
            "500ms",
            "--static",
            "--access-key",
            "a",
            "--secret-key",
            "b",
            "--rate-limit",
            "10",
            "--jobs",
            "3",
        ])
        .unwrap();
        let opts = cli.args.options();
        assert_eq!(opts.step, Duration::from_millis(500));
        assert!(!opts.scripted);
        assert_eq!(
            opts.auth,
            SimAuth::AkSk {
                access_key: "a".into(),
                secret_key: "b".into()
            }
        );
        assert_eq!(
            (opts.rate_limit, opts.jobs, opts.app_id.as_str()),
            (Some(10), 3, "demo-app")
        );
        assert!(
            Cli::try_parse_from(["x", "--access-key", "a"]).is_err(),
            "a key needs its secret"
        );
        assert!(
            format!("{:?}", opts.auth).contains("***")
                && !format!("{:?}", opts.auth).contains("\"b\"")
        );
        assert_eq!(
            listening_line("127.0.0.1:8086".parse().unwrap(), 12, "demo-app"),
            "recwatch simulator listening on http://127.0.0.1:8086 (12 jobs, app demo-app)"
        );
    }

    /// Requests per second with keep-alive reqwest clients. Run with
    /// `cargo test --release --lib simulate::tests::throughput -- --ignored --nocapture`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "a measurement, not a check"]
    async fn throughput() {
        for (name, scripted) in [("static", false), ("scripted", true)] {
            let sim = spawn(SimOptions {
                jobs: 100,
                scripted,
                ..SimOptions::default()
            })
            .await;
            for connections in [1, 4] {
                sim.reset_stats();
                let run_for = Duration::from_secs(3);
                let started = Instant::now();
                let mut tasks = Vec::new();
                for t in 0..connections {
                    let c = client();
                    let base = sim.url();
                    tasks.push(tokio::spawn(async move {
                        let mut n = 0u64;
                        while started.elapsed() < run_for {
                            let url = format!(
                                "{base}{}",
                                job_path("demo-app", &job_id((n as usize * 7 + t) % 100))
                            );
                            let response = c.get(url).send().await.unwrap();
                            assert_eq!(response.status(), 200);
                            response.bytes().await.unwrap();
                            n += 1;
                        }
                        n
                    }));
                }
                let mut total = 0;
                for task in tasks {
                    total += task.await.unwrap();
                }
                let rate = total as f64 / started.elapsed().as_secs_f64();
                println!(
                    "{name} jobs, {connections} keep-alive connection(s): {rate:.0} requests/s"
                );
                assert_eq!(sim.stats().requests, total);
            }
        }
    }
}
