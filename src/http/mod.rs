//! The HTTP endpoint: `/healthz`, `/readyz`, `/metrics` (Prometheus text) and `/api/v1/jobs`
//! (paginated).
//!
//! Loopback by default, and built so that whoever can reach it cannot starve recwatch: every
//! connection must send a complete request header within [`HEADER_READ_TIMEOUT`] (a new
//! connection, and a kept-alive one between requests, alike), and at most
//! [`Limits::max_connections`] are open at once — a quarter of the open-files limit at most,
//! so the RTC client, the webhooks, SMTP and SQLite always keep descriptors of their own. At
//! the cap a new connection makes room by closing the oldest one that is not in the middle of
//! a response, so a health check still gets through a flood of idle connections.
//!
//! The database's gauges (jobs by state, pending and dead deliveries, the oldest pending one)
//! come from indexed queries only, run at most once per [`GAUGE_MAX_AGE`] however many clients
//! scrape (concurrent scrapes share one refresh), so scrapers cannot turn into table scans;
//! they are right for work a previous run left behind too.

use crate::cli::StatusRow;
use crate::config::{Config, JobConfig};
use crate::outbox::Outbox;
use crate::poll::{Budget, Liveness};
use crate::store::Store;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use hyper::body::Frame;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BinaryHeap};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::AbortHandle;
use tracing::{debug, error, info, warn};

/// The poll loop beats every second; this much silence means it is stuck for good, and the
/// systemd watchdog is no longer fed. (`/readyz` reports a stall sooner, see
/// [`crate::vitals::STALLED_AFTER_MS`].)
pub const LIVENESS_LIMIT_MS: u64 = 15_000;

/// A connection that has not sent a whole request header this long after it opened (or after
/// its last response) is closed. Scrapers and health checks send theirs at once.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The most connections served at once when the open-files limit allows it. The endpoint's
/// clients are a scraper, a health check and the odd `curl`: a few. This bounds what a
/// misbehaving client can hold, whatever the limit.
pub const MAX_CONNECTIONS: usize = 256;

/// A response still being written after this long (a client that stopped reading) no longer
/// protects its connection from being closed to make room.
pub const STUCK_RESPONSE: Duration = Duration::from_secs(60);

/// A scrape re-reads the database's gauges when they are older than this.
pub const GAUGE_MAX_AGE: Duration = Duration::from_secs(1);

/// `/api/v1/jobs` page size: the default, and the most one request may ask for.
pub const PAGE_DEFAULT: usize = 100;
pub const PAGE_MAX: usize = 1000;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub config: Arc<RwLock<Config>>,
    pub liveness: Arc<Liveness>,
    /// What keeps the daemon from doing its job (see [`crate::vitals`]).
    pub vitals: Arc<crate::vitals::Vitals>,
    pub outbox: Outbox,
    pub budget: Arc<Budget>,
    pub metrics: PrometheusHandle,
}

/// Installs the process-wide Prometheus recorder once and returns its handle.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("recwatch_poll_duration_seconds".into()),
                    &[
                        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    ],
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("recwatch_rate_budget_wait_seconds".into()),
                        &[0.001, 0.01, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0],
                    )
                })
                .expect("bucket lists are not empty");
            match builder.install_recorder() {
                Ok(h) => h,
                // Another recorder is installed (tests that run a daemon in-process twice):
                // render from a private one rather than fail.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}

/// The database's side of `/metrics` as last read: when, and when the oldest pending delivery
/// was created (its age is worked out at scrape time). A tokio mutex: a scrape that finds the
/// values stale holds it while it reads, and the scrapes behind it use what it read.
#[derive(Clone, Default)]
struct DbGaugesRead(Arc<tokio::sync::Mutex<Option<GaugesRead>>>);

#[derive(Clone, Copy)]
struct GaugesRead {
    at: Instant,
    oldest_pending: Option<DateTime<Utc>>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/jobs", get(jobs))
        .layer(Extension(DbGaugesRead::default()))
        .layer(Extension(PageBuilders(Arc::new(
            tokio::sync::Semaphore::new(PAGE_BUILDERS),
        ))))
        .with_state(state)
}

// ---------------------------------------------------------------------------------------------
// Descriptors and limits.

/// The soft and hard limits on open files, if this process may read them (the systemd unit's
/// seccomp filter refuses getrlimit with EPERM; its `LimitNOFILE=` sets both there).
#[allow(clippy::useless_conversion)] // rlim_t is u64 here, narrower on some 32-bit targets
pub fn nofile_limit() -> std::io::Result<(u64, u64)> {
    let lim = get_nofile()?;
    Ok((u64::from(lim.rlim_cur), u64::from(lim.rlim_max)))
}

fn get_nofile() -> std::io::Result<libc::rlimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given, which lives on this stack frame.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(lim)
}

/// Raises the soft limit on open files to the hard limit and returns (before, after). The
/// soft limit is often 1024, a default kept for programs that use select(); recwatch uses
/// epoll, and its HTTP connections, outbound requests, SMTP and SQLite all need descriptors.
/// Raising the soft limit up to the hard one needs no privilege.
#[allow(clippy::useless_conversion)] // as in nofile_limit
pub fn raise_nofile_limit() -> std::io::Result<(u64, u64)> {
    let mut lim = get_nofile()?;
    let before = u64::from(lim.rlim_cur);
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: setrlimit only reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok((before, u64::from(lim.rlim_cur)))
}

/// The endpoint's connection cap for a soft open-files limit (None: unknown). A quarter of
/// the limit at most, so three quarters stay for everything else recwatch opens: a flood of
/// connections fills the endpoint's share and never reaches the webhooks' or SQLite's.
pub fn connection_cap(nofile_soft: Option<u64>) -> usize {
    match nofile_soft {
        Some(n) => usize::try_from(n / 4)
            .unwrap_or(usize::MAX)
            .clamp(1, MAX_CONNECTIONS),
        None => MAX_CONNECTIONS,
    }
}

/// How the endpoint bounds its connections.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub stuck_response: Duration,
}

impl Limits {
    /// The limits for this process's open-files limit.
    pub fn for_this_process() -> Limits {
        Limits {
            max_connections: connection_cap(nofile_limit().ok().map(|(soft, _)| soft)),
            header_read_timeout: HEADER_READ_TIMEOUT,
            stuck_response: STUCK_RESPONSE,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Serving.

/// Serves on `listener` until shutdown. `run` binds it before it reports ready
/// ([`crate::startup::bind_http`]): an address that cannot be bound stops the start.
pub async fn serve(listener: TcpListener, state: AppState, shutdown: watch::Receiver<bool>) {
    serve_on(listener, state, Limits::for_this_process(), shutdown).await
}

/// Serves on a bound listener until shutdown.
pub async fn serve_on(
    listener: TcpListener,
    state: AppState,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) {
    info!(
        address = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        max_connections = limits.max_connections,
        header_read_timeout_s = limits.header_read_timeout.as_secs_f64(),
        "HTTP endpoint: /healthz /readyz /metrics /api/v1/jobs"
    );
    let app = router(state);
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let conns = Arc::new(Connections::new(limits.max_connections));
    let mut accept_errors = Throttle::default();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => break,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                accept_failed(&e, &mut accept_errors).await;
                continue;
            }
        };
        if !conns.make_room(limits.stuck_response) {
            // Every connection is in the middle of a response: refuse this one and accept no
            // more until one ends (new ones wait in the kernel's queue meanwhile).
            drop(stream);
            warn!(
                "HTTP endpoint: all {} connections are busy answering; closed a new one and stopped accepting until one ends",
                limits.max_connections
            );
            tokio::select! {
                _ = shutdown.wait_for(|s| *s) => break,
                _ = conns.freed.notified() => {}
                // Also re-checked now and then: a response can become stuck without ending.
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            continue;
        }
        conns.spawn(stream, app.clone(), http1.clone(), shutdown.clone());
    }
}

/// Accept failed. Running out of descriptors is loud (and throttled): it means something else
/// in this process holds them, and outbound deliveries are failing the same way.
async fn accept_failed(e: &std::io::Error, log: &mut Throttle) {
    use std::io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused
    ) {
        return;
    }
    if matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE)) {
        if let Some(missed) = log.due() {
            let limit = nofile_limit()
                .map(|(soft, _)| soft.to_string())
                .unwrap_or_else(|_| "unknown".into());
            error!(
                "HTTP endpoint cannot accept a connection: {e} (open-files limit {limit}, {missed} more such errors since the last report); webhook and e-mail deliveries fail the same way: raise LimitNOFILE"
            );
        }
    } else if let Some(missed) = log.due() {
        warn!("HTTP endpoint: accept failed: {e} ({missed} more since the last report)");
    }
    // Do not spin on an error that persists.
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// At most one report a minute; counts what it held back.
#[derive(Default)]
struct Throttle {
    last: Option<Instant>,
    missed: u64,
}

impl Throttle {
    /// Some(number held back since the last report) when a report is due.
    fn due(&mut self) -> Option<u64> {
        if self
            .last
            .is_some_and(|t| t.elapsed() < Duration::from_secs(60))
        {
            self.missed += 1;
            return None;
        }
        self.last = Some(Instant::now());
        Some(std::mem::take(&mut self.missed))
    }
}

/// Milliseconds on this process's monotonic clock, from 1 (0 means "not busy" below).
fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// The open connections, oldest first, so that at the cap the oldest idle one makes room.
struct Connections {
    cap: usize,
    open: Mutex<BTreeMap<u64, Open>>,
    next_id: AtomicU64,
    /// One permit per connection that ended, for an accept loop waiting for room.
    freed: Notify,
    /// Closing connections to make room is expected under a flood: said once a minute.
    evictions: Mutex<Throttle>,
}

struct Open {
    task: AbortHandle,
    busy: Arc<Busy>,
}

/// When the connection's current request arrived (`now_ms`), 0 between requests. HTTP/1
/// serves one request at a time per connection, so one value is enough.
#[derive(Default)]
struct Busy(AtomicU64);

impl Busy {
    fn evictable(&self, now: u64, stuck: Duration) -> bool {
        match self.0.load(Ordering::Relaxed) {
            0 => true,
            since => now.saturating_sub(since) > stuck.as_millis() as u64,
        }
    }
}

/// Marks a connection busy from its request's arrival until its response body is dropped
/// (written out, or the connection gone).
struct BusyGuard(Arc<Busy>);

impl BusyGuard {
    fn begin(busy: Arc<Busy>) -> BusyGuard {
        busy.0.store(now_ms(), Ordering::Relaxed);
        BusyGuard(busy)
    }
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.0.store(0, Ordering::Relaxed);
    }
}

/// A response body that keeps its connection marked busy while it is being written.
struct GuardedBody {
    body: Body,
    _busy: BusyGuard,
}

impl hyper::body::Body for GuardedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// Removes a connection from the table when its task ends, however it ends.
struct Registered {
    id: u64,
    conns: Arc<Connections>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.conns
            .open
            .lock()
            .expect("connections lock")
            .remove(&self.id);
        self.conns.freed.notify_one();
    }
}

impl Connections {
    fn new(cap: usize) -> Connections {
        Connections {
            cap: cap.max(1),
            open: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(0),
            freed: Notify::new(),
            evictions: Mutex::new(Throttle::default()),
        }
    }

    /// Makes room for one more connection: true if there is room (now). At the cap, closes
    /// the oldest connection that is between requests (or whose response is stuck); false
    /// if every one is busy answering.
    fn make_room(&self, stuck: Duration) -> bool {
        let mut open = self.open.lock().expect("connections lock");
        if open.len() < self.cap {
            return true;
        }
        let now = now_ms();
        let Some(id) = open
            .iter()
            .find(|(_, c)| c.busy.evictable(now, stuck))
            .map(|(id, _)| *id)
        else {
            return false;
        };
        // Dropping the task's future closes the socket.
        open.remove(&id).expect("found above").task.abort();
        drop(open);
        if let Some(missed) = self.evictions.lock().expect("throttle lock").due() {
            warn!(
                "HTTP endpoint at its cap of {} connections: closing the oldest idle ones to make room ({} more since the last report; a client opening many connections?)",
                self.cap, missed
            );
        }
        true
    }

    /// Serves one connection in its own task, registered until it ends.
    fn spawn(
        self: &Arc<Self>,
        stream: TcpStream,
        app: Router,
        http1: hyper::server::conn::http1::Builder,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let busy = Arc::new(Busy::default());
        // Held while spawning, so the task cannot end (and unregister) before it is registered.
        let mut open = self.open.lock().expect("connections lock");
        let registered = Registered {
            id,
            conns: self.clone(),
        };
        let tracked = busy.clone();
        let task = tokio::spawn(async move {
            let _registered = registered;
            let tower = hyper_util::service::TowerToHyperService::new(app);
            let service = hyper::service::service_fn(move |request| {
                let guard = BusyGuard::begin(tracked.clone());
                let call = hyper::service::Service::call(&tower, request);
                async move {
                    let response = call.await?;
                    Ok::<_, Infallible>(response.map(|body| GuardedBody { body, _busy: guard }))
                }
            });
            let conn = http1.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::pin!(conn);
            let stopping = shutdown.wait_for(|s| *s);
            tokio::pin!(stopping);
            let mut stopped = false;
            loop {
                tokio::select! {
                    r = conn.as_mut() => {
                        // Timeouts and clients that go away end up here; nothing to act on.
                        if let Err(e) = r {
                            debug!("HTTP connection closed: {e}");
                        }
                        break;
                    }
                    _ = &mut stopping, if !stopped => {
                        // Finish the request in progress, if any, then close.
                        conn.as_mut().graceful_shutdown();
                        stopped = true;
                    }
                }
            }
        });
        open.insert(
            id,
            Open {
                task: task.abort_handle(),
                busy,
            },
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Handlers.

/// 200 "ready", or 503 with every reason the daemon cannot do its job now: the database
/// cannot be read or written (full, read-only, deleted, replaced, locked), the poll loop is
/// stalled, a task it needs has stopped, or the RTC API is failing.
async fn readyz(State(s): State<AppState>) -> Response {
    let mut problems = Vec::new();
    if let Err(e) = s.store.ping().await {
        problems.push(format!("database unreachable: {e:#}"));
    }
    problems.extend(s.vitals.problems());
    if s.outbox.api_unhealthy() {
        problems.push("the RTC API is failing (api_unhealthy)".into());
    }
    if problems.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", problems.join("; ")),
        )
            .into_response()
    }
}

#[derive(Deserialize)]
struct PageQuery {
    limit: Option<String>,
    after: Option<String>,
}

/// One page of `/api/v1/jobs`.
#[derive(Serialize)]
struct JobsPage {
    items: Vec<StatusRow>,
    /// Pass as `?after=` for the next page; null on the last one.
    next_after: Option<String>,
}

/// A job's place in the (app_id, job_id) order the pages follow.
type JobKey = (String, String);

fn encode_cursor(job: &JobConfig) -> String {
    let json = serde_json::to_vec(&(&job.app_id, &job.job_id)).expect("strings serialize");
    URL_SAFE_NO_PAD.encode(json)
}

fn decode_cursor(s: &str) -> Option<JobKey> {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(s).ok()?).ok()
}

fn parse_limit(s: Option<&str>) -> Result<usize, String> {
    match s {
        None => Ok(PAGE_DEFAULT),
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=PAGE_MAX).contains(n))
            .ok_or_else(|| {
                format!(
                    "limit: {s:?} is not a whole number from 1 to {PAGE_MAX}; e.g. ?limit={PAGE_DEFAULT}"
                )
            }),
    }
}

/// The `limit` watched jobs that follow `after` in (app_id, job_id) order, and whether more
/// follow them. One pass over the watch list keeping the `limit + 1` smallest keys in a heap:
/// no copy or sort of the whole list per request, so memory follows the page size.
fn page<'a>(
    jobs: &'a [JobConfig],
    after: Option<&JobKey>,
    limit: usize,
) -> (Vec<&'a JobConfig>, bool) {
    let key = |j: &'a JobConfig| (j.app_id.as_str(), j.job_id.as_str());
    let after = after.map(|(a, j)| (a.as_str(), j.as_str()));
    let mut heap: BinaryHeap<((&str, &str), usize)> = BinaryHeap::with_capacity(limit + 2);
    for (i, j) in jobs.iter().enumerate() {
        let k = key(j);
        if after.is_some_and(|a| k <= a) {
            continue;
        }
        if heap.len() <= limit {
            heap.push((k, i));
        } else if heap.peek().is_some_and(|(top, _)| k < *top) {
            heap.pop();
            heap.push((k, i));
        }
    }
    let mut picked: Vec<&JobConfig> = heap
        .into_sorted_vec()
        .into_iter()
        .map(|(_, i)| &jobs[i])
        .collect();
    let more = picked.len() > limit;
    picked.truncate(limit);
    (picked, more)
}

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response()
}

/// Bounds the `/api/v1/jobs` pages being built at once, so many clients cost time, not memory
/// (or every core): each page is a scan of the watch list and up to `PAGE_MAX` rows.
#[derive(Clone)]
struct PageBuilders(Arc<tokio::sync::Semaphore>);

/// Pages built at once; others wait their turn.
const PAGE_BUILDERS: usize = 2;

async fn jobs(
    State(s): State<AppState>,
    Extension(builders): Extension<PageBuilders>,
    Query(q): Query<PageQuery>,
) -> Response {
    let limit = match parse_limit(q.limit.as_deref()) {
        Ok(n) => n,
        Err(message) => return bad_request(message),
    };
    let after = match q.after.as_deref().map(|c| decode_cursor(c).ok_or(c)) {
        None => None,
        Some(Ok(key)) => Some(key),
        Some(Err(c)) => {
            return bad_request(format!(
                "after: {c:?} is not a cursor from a previous page's next_after; start without ?after="
            ));
        }
    };
    let _turn = builders.0.acquire().await.expect("never closed");
    // Only the page's jobs are copied out of the shared config, not the whole watch list. The
    // scan takes milliseconds with 100,000 jobs: off the async workers, which run the poller.
    let config = s.config.clone();
    let scanned = tokio::task::spawn_blocking(move || {
        let config = config.read().expect("config lock");
        let (picked, more) = page(&config.jobs, after.as_ref(), limit);
        (picked.into_iter().cloned().collect::<Vec<_>>(), more)
    })
    .await;
    let Ok((picked, more)) = scanned else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "the page could not be built\n",
        )
            .into_response();
    };
    let keys: Vec<(&str, &str)> = picked
        .iter()
        .map(|j| (j.app_id.as_str(), j.job_id.as_str()))
        .collect();
    let rows = match s.store.jobs_by_key(&keys).await {
        Ok(rows) => rows,
        Err(e) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("database unreachable: {e:#}\n"),
            )
                .into_response();
        }
    };
    let next_after = if more {
        picked.last().map(encode_cursor)
    } else {
        None
    };
    let items = picked
        .iter()
        .map(|j| StatusRow::new(j, rows.get(&(j.app_id.clone(), j.job_id.clone()))))
        .collect();
    Json(JobsPage { items, next_after }).into_response()
}

async fn metrics(State(s): State<AppState>, Extension(read): Extension<DbGaugesRead>) -> Response {
    let oldest_pending = {
        let mut last = read.0.lock().await;
        match *last {
            Some(r) if r.at.elapsed() < GAUGE_MAX_AGE => r.oldest_pending,
            _ => match set_db_gauges(&s).await {
                Ok(oldest_pending) => {
                    *last = Some(GaugesRead {
                        at: Instant::now(),
                        oldest_pending,
                    });
                    oldest_pending
                }
                Err(e) => {
                    warn!(
                        "/metrics: cannot read the database (its gauges keep their last values): {e:#}"
                    );
                    last.and_then(|r| r.oldest_pending)
                }
            },
        }
    };
    set_live_gauges(&s, oldest_pending);
    s.metrics.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
}

/// Gauges read from memory at scrape time.
fn set_live_gauges(s: &AppState, oldest_pending: Option<DateTime<Utc>>) {
    let watched = s.config.read().expect("config lock").jobs.len();
    metrics::gauge!("recwatch_jobs_watched").set(watched as f64);
    let age = oldest_pending
        .map(|t| (Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0)
        .unwrap_or(0.0);
    metrics::gauge!("recwatch_oldest_pending_delivery_age_seconds").set(age);
    metrics::gauge!("recwatch_rate_budget_wait_seconds_total")
        .set(s.budget.total_wait().as_secs_f64());
    metrics::gauge!("recwatch_api_unhealthy").set(if s.outbox.api_unhealthy() { 1.0 } else { 0.0 });
    metrics::gauge!("recwatch_poll_loop_age_seconds")
        .set(s.liveness.age_ms().min(u64::MAX / 2) as f64 / 1000.0);
}

/// Reads the database's gauges ([`Store::gauges`], indexed queries) and sets them; returns
/// when the oldest pending delivery was created.
async fn set_db_gauges(s: &AppState) -> anyhow::Result<Option<DateTime<Utc>>> {
    let g = s.store.gauges().await?;
    let channels: Vec<String> = {
        let config = s.config.read().expect("config lock");
        config
            .notify
            .channel_names()
            .into_iter()
            .map(String::from)
            .collect()
    };
    // A state or channel with nothing in it shows 0, not a stale count. States the API
    // invents share the label `other`, so they cannot grow the series.
    let mut by_label: BTreeMap<&'static str, i64> =
        ["INIT", "RUNNING", "STOPPED", "other", "UNKNOWN"]
            .into_iter()
            .map(|l| (l, 0))
            .collect();
    for (state, n) in g.jobs_by_state {
        let label = state
            .as_deref()
            .map(recwatch_rtc::model::state_label)
            .unwrap_or("UNKNOWN");
        *by_label.entry(label).or_default() += n;
    }
    for (label, n) in by_label {
        metrics::gauge!("recwatch_jobs", "state" => label).set(n as f64);
    }
    for name in channels {
        metrics::gauge!("recwatch_deliveries_pending", "channel" => name.clone()).set(0.0);
        metrics::gauge!("recwatch_deliveries_dead", "channel" => name).set(0.0);
    }
    for d in g.deliveries {
        let name = if d.dead {
            "recwatch_deliveries_dead"
        } else {
            "recwatch_deliveries_pending"
        };
        metrics::gauge!(name, "channel" => d.channel).set(d.n as f64);
    }
    Ok(g.oldest_pending)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(app: &str, id: &str) -> JobConfig {
        JobConfig {
            app_id: app.into(),
            job_id: id.into(),
            name: None,
            interval: None,
            notify: None,
        }
    }

    fn ids(page: &[&JobConfig]) -> Vec<String> {
        page.iter()
            .map(|j| format!("{}/{}", j.app_id, j.job_id))
            .collect()
    }

    #[test]
    fn pages_follow_key_order_from_the_cursor() {
        // Config order is not key order; an app id sorts before its job ids.
        let jobs = vec![
            job("b", "1"),
            job("a", "3"),
            job("a", "1"),
            job("c", "0"),
            job("a", "2"),
        ];
        let key = |a: &str, j: &str| (a.to_string(), j.to_string());
        struct Case {
            name: &'static str,
            after: Option<JobKey>,
            limit: usize,
            page: &'static [&'static str],
            more: bool,
        }
        let cases = [
            Case {
                name: "first page",
                after: None,
                limit: 2,
                page: &["a/1", "a/2"],
                more: true,
            },
            Case {
                name: "from a cursor",
                after: Some(key("a", "2")),
                limit: 2,
                page: &["a/3", "b/1"],
                more: true,
            },
            Case {
                name: "exactly the rest: no more",
                after: Some(key("a", "3")),
                limit: 2,
                page: &["b/1", "c/0"],
                more: false,
            },
            Case {
                name: "fewer than the limit left",
                after: Some(key("b", "1")),
                limit: 10,
                page: &["c/0"],
                more: false,
            },
            Case {
                name: "after the last job",
                after: Some(key("c", "0")),
                limit: 2,
                page: &[],
                more: false,
            },
            Case {
                name: "a cursor whose job was removed goes on from its place",
                after: Some(key("a", "25")),
                limit: 1,
                page: &["a/3"],
                more: true,
            },
            Case {
                name: "everything in one page",
                after: None,
                limit: 5,
                page: &["a/1", "a/2", "a/3", "b/1", "c/0"],
                more: false,
            },
        ];
        for c in cases {
            let (page, more) = page(&jobs, c.after.as_ref(), c.limit);
            assert_eq!(ids(&page), c.page, "{}", c.name);
            assert_eq!(more, c.more, "{}", c.name);
        }
        assert_eq!(page(&[], None, 3), (vec![], false), "no jobs");
    }

    #[test]
    fn walking_pages_returns_every_job_once() {
        // Deterministic shuffle: job i at position i * 7919 mod n.
        let n = 1000;
        let jobs: Vec<JobConfig> = (0..n)
            .map(|i| {
                job(
                    &format!("app-{}", (i * 7919) % 7),
                    &format!("job-{:04}", (i * 7919) % n),
                )
            })
            .collect();
        for limit in [1, 3, 100, 999, 1000] {
            let mut seen = Vec::new();
            let mut after: Option<JobKey> = None;
            loop {
                let (page, more) = page(&jobs, after.as_ref(), limit);
                assert!(page.len() <= limit);
                seen.extend(ids(&page));
                if !more {
                    break;
                }
                let cursor = encode_cursor(page.last().unwrap());
                after = Some(decode_cursor(&cursor).unwrap());
            }
            let mut expected = ids(&jobs.iter().collect::<Vec<_>>());
            expected.sort();
            assert_eq!(seen, expected, "limit {limit}");
        }
    }

    #[test]
    fn cursors_round_trip_and_junk_is_refused() {
        let j = job("app/with \"odd\" chars", "job,1");
        let c = encode_cursor(&j);
        assert!(
            c.chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_'),
            "URL-safe: {c}"
        );
        assert_eq!(
            decode_cursor(&c),
            Some((j.app_id.clone(), j.job_id.clone()))
        );
        for junk in ["", "!!", "bm90IGpzb24", "WzFd"] {
            assert_eq!(decode_cursor(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn limit_is_checked() {
        struct Case {
            name: &'static str,
            input: Option<&'static str>,
            ok: Option<usize>,
        }
        let cases = [
            Case {
                name: "absent: the default",
                input: None,
                ok: Some(PAGE_DEFAULT),
            },
            Case {
                name: "one",
                input: Some("1"),
                ok: Some(1),
            },
            Case {
                name: "the most",
                input: Some("1000"),
                ok: Some(PAGE_MAX),
            },
            Case {
                name: "zero",
                input: Some("0"),
                ok: None,
            },
            Case {
                name: "above the most",
                input: Some("1001"),
                ok: None,
            },
            Case {
                name: "negative",
                input: Some("-5"),
                ok: None,
            },
            Case {
                name: "not a number",
                input: Some("ten"),
                ok: None,
            },
        ];
        for c in cases {
            match (parse_limit(c.input), c.ok) {
                (Ok(n), Some(want)) => assert_eq!(n, want, "{}", c.name),
                (Err(e), None) => assert!(
                    e.starts_with("limit:") && e.contains("1 to 1000"),
                    "{}: {e}",
                    c.name
                ),
                (got, want) => panic!("{}: got {got:?}, want {want:?}", c.name),
            }
        }
    }

    #[test]
    fn the_connection_cap_leaves_most_descriptors_to_the_rest() {
        let cases = [
            ("unknown limit: the fixed cap", None, MAX_CONNECTIONS),
            ("the usual soft limit", Some(1024), 256),
            ("a systemd LimitNOFILE", Some(65536), MAX_CONNECTIONS),
            ("a small limit: a quarter", Some(512), 128),
            ("a tiny limit", Some(100), 25),
            ("almost none", Some(2), 1),
            ("unlimited", Some(u64::MAX), MAX_CONNECTIONS),
        ];
        for (name, nofile, cap) in cases {
            assert_eq!(connection_cap(nofile), cap, "{name}");
        }
    }

    #[test]
    fn raising_the_open_files_limit_reaches_the_hard_limit() {
        let (_, hard) = nofile_limit().unwrap();
        let (before, after) = raise_nofile_limit().unwrap();
        assert!(before <= after);
        assert_eq!(after, hard);
        assert_eq!(nofile_limit().unwrap(), (hard, hard));
    }

    #[test]
    fn idle_and_stuck_connections_can_be_closed_busy_ones_not() {
        let stuck = Duration::from_secs(60);
        let busy = Busy::default();
        assert!(busy.evictable(1_000_000, stuck), "between requests");
        busy.0.store(1_000_000, Ordering::Relaxed);
        assert!(!busy.evictable(1_000_000 + 59_000, stuck), "answering");
        assert!(busy.evictable(1_000_000 + 61_000, stuck), "stuck answering");
    }
}
