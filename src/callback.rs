//! The record-callback receiver (issue 11, first step): its own listener, because it faces the
//! internet while `/metrics` stays private. It takes POSTs on `callback.path` only, verifies
//! `X-Rtc-Signature` over the raw body with the configured apps' keys before reading anything
//! in it, and stores each verified event once (`store::callbacks`). Every refusal is counted
//! in `recwatch_callbacks_total{result}` and logged (no key, no body): the first, then a
//! summary at most every 10 s, because refusals are an outsider's to cause; nothing is stored
//! for it. The signature headers are checked before the body is read, and the body must
//! arrive within the serving loop's deadline (`http::limits::BODY_DEADLINE`, else 408 and the
//! connection closed). Two apps may share an `auth_key`: among the apps whose key verifies,
//! the event belongs to the one its body names ([`choose_app`]). Each new event that names a job is a poll hint for it: the poller reads it from the
//! database (`poller/feed.rs`, so an event any instance stored hints the one that polls), and
//! [`crate::poller::Hints::event_stored`] only makes it read at once; the 200 never waits
//! for the poller. For an app with `forward_to`, the
//! event's forward is written in the same transaction and sent by `deliver::forward`.
//! Discovery: a verified event for a job nobody watches, of an app with `discover = true`,
//! adds the job to the run-time watch list (source `callback`, named `<app name>/<job_id>`,
//! the app's `notify`), and the poller polls it at once ([`crate::runtime_list::Watchlist::add`]).
//! Only a new event discovers (a duplicate, such as a replay after a restart, does not), and
//! not a job an operator unwatched after the event was signed ([`may_rediscover`]).

pub mod commit;

use crate::config::{AppConfig, Config};
use crate::domain::{JobKind, RuntimeJob, timestamp};
use crate::poller::Hints;
use crate::runtime_list::Watchlist;
use crate::store::{Inserted, Store};
use crate::telemetry::summary::{LogSummary, Report};
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::{DateTime, Utc};
use commit::{Candidate, CommitQueue, Discovered, Pending};
use recwatch_rtc::callback::{
    EventType, RecordEvent, SignatureError, SignatureHeaders, verify_signature,
};
use sha2::{Digest, Sha256};
use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// The largest body accepted: RTC's events are a few hundred bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// A signature seen again within this long is a replay.
pub const REPLAY_WINDOW: Duration = Duration::from_secs(600);
/// At most this many signatures are remembered: memory stays bounded under a storm (the
/// oldest are forgotten first; the database's unique key still keeps an event once).
pub const REPLAY_CAPACITY: usize = 100_000;

/// What became of one request: the `result` label of `recwatch_callbacks_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Stored,
    Duplicate,
    Replay,
    Unsigned,
    Forged,
    UnknownApp,
    TooLarge,
    /// The body did not arrive within the body deadline (a slow-body attack, item 3).
    TooSlow,
    Malformed,
    Unavailable,
    NotFound,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Stored => "stored",
            Outcome::Duplicate => "duplicate",
            Outcome::Replay => "replay",
            Outcome::Unsigned => "unsigned",
            Outcome::Forged => "forged",
            Outcome::UnknownApp => "unknown_app",
            Outcome::TooLarge => "too_large",
            Outcome::TooSlow => "too_slow",
            Outcome::Malformed => "malformed",
            Outcome::Unavailable => "unavailable",
            Outcome::NotFound => "not_found",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Outcome::Stored | Outcome::Duplicate | Outcome::Replay => StatusCode::OK,
            Outcome::Unsigned | Outcome::Forged => StatusCode::UNAUTHORIZED,
            Outcome::UnknownApp | Outcome::NotFound => StatusCode::NOT_FOUND,
            Outcome::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Outcome::TooSlow => StatusCode::REQUEST_TIMEOUT,
            Outcome::Malformed => StatusCode::BAD_REQUEST,
            // RTC sends the event again later.
            Outcome::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// Signatures of stored events, remembered for [`REPLAY_WINDOW`], at most `capacity`.
///
/// Sixteen bytes a signature (issue 23, item 1): a storm of 90,000 discoveries is ~1.4 MB
/// here for the window, where a map and a deque of fingerprints and instants cost ~100 bytes a
/// callback (8-9 MB, BENCHMARKS.md part 25a) and 64 hex characters twice ~260 before that.
/// Signatures are kept in slices: the open one a set (each callback looks it up and adds to
/// it), closed after `SLICE` or once it holds a sixteenth of the capacity into a sorted
/// boxed slice, the only copy of each fingerprint; a slice is forgotten whole, when the last
/// signature in it is [`REPLAY_WINDOW`] old or when the cache is over its capacity. So a
/// signature is a replay for at least the window and at most `SLICE` longer (refusing a
/// little longer weakens nothing), and nothing of a storm is kept past its window. A look-up
/// is a hash probe and a binary search per closed slice, at most a few dozen.
pub struct ReplayCache {
    /// Closed slices, oldest first.
    closed: VecDeque<Slice>,
    /// How many fingerprints `closed` holds.
    closed_len: usize,
    /// The slice signatures are remembered into now.
    open: HashSet<Fingerprint>,
    /// When the open slice's first and last signatures were remembered.
    open_first: Instant,
    open_last: Instant,
    capacity: usize,
}

/// How long the open slice takes signatures before it is closed.
const SLICE: Duration = Duration::from_secs(10);

/// A closed slice: its fingerprints sorted, and when the last of them was remembered.
struct Slice {
    last: Instant,
    fingerprints: Box<[Fingerprint]>,
}

/// What the cache keeps of a signature: the first 16 bytes of its SHA-256. Two signatures
/// share one with a chance of about n² / 2¹²⁹ among n remembered: none at the cap.
type Fingerprint = u128;

fn fingerprint(signature: &str) -> Fingerprint {
    let digest = Sha256::digest(signature.as_bytes());
    let mut f = [0; 16];
    f.copy_from_slice(&digest[..16]);
    u128::from_le_bytes(f)
}

impl ReplayCache {
    pub fn new(capacity: usize) -> ReplayCache {
        let now = Instant::now();
        ReplayCache {
            closed: VecDeque::new(),
            closed_len: 0,
            open: HashSet::new(),
            open_first: now,
            open_last: now,
            capacity,
        }
    }

    /// The most signatures the open slice takes: the cache forgets a slice at a time, so a
    /// full cache still remembers at least fifteen sixteenths of its capacity.
    fn slice_len(&self) -> usize {
        (self.capacity / 16).max(1)
    }

    fn forget_old(&mut self, now: Instant) {
        while let Some(oldest) = self.closed.front() {
            let expired = now.duration_since(oldest.last) >= REPLAY_WINDOW;
            if !expired && self.closed_len + self.open.len() <= self.capacity {
                break;
            }
            let gone = self.closed.pop_front().expect("front exists");
            self.closed_len -= gone.fingerprints.len();
        }
        if !self.open.is_empty() && now.duration_since(self.open_last) >= REPLAY_WINDOW {
            // A new set, not `clear`: a cleared set keeps the storm's room.
            self.open = HashSet::new();
        }
    }

    /// Closes the open slice into its sorted copy; the set's room is given back.
    fn close(&mut self) {
        let mut fingerprints: Vec<Fingerprint> =
            std::mem::take(&mut self.open).into_iter().collect();
        fingerprints.sort_unstable();
        self.closed_len += fingerprints.len();
        self.closed.push_back(Slice {
            last: self.open_last,
            fingerprints: fingerprints.into_boxed_slice(),
        });
    }

    /// Whether `signature` was remembered within the window.
    pub fn seen(&mut self, signature: &str, now: Instant) -> bool {
        self.forget_old(now);
        let f = fingerprint(signature);
        self.open.contains(&f)
            || self
                .closed
                .iter()
                .any(|s| s.fingerprints.binary_search(&f).is_ok())
    }

    pub fn remember(&mut self, signature: &str, now: Instant) {
        self.forget_old(now);
        if !self.open.is_empty()
            && (self.open.len() >= self.slice_len() || now.duration_since(self.open_first) >= SLICE)
        {
            self.close();
        }
        if self.open.is_empty() {
            self.open_first = now;
        }
        self.open.insert(fingerprint(signature));
        self.open_last = now;
        self.forget_old(now);
    }

    /// How many signatures the cache has room for (what its memory follows).
    pub fn room(&self) -> usize {
        self.closed_len + self.open.capacity()
    }

    /// How many signatures are remembered (one remembered twice may count twice).
    pub fn len(&self) -> usize {
        self.closed_len + self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Binds `callback.listen` for `run`, before it reports ready: a taken port stops the start
/// like `http.listen`'s, with the same exit codes.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, crate::exit::StartError> {
    TcpListener::bind(addr).await.map_err(|e| {
        let mut err = crate::http::bind_error(addr, &e);
        err.message = err
            .message
            .replace("http.listen", "callback.listen")
            .replace("turns the endpoint off", "turns the receiver off");
        err
    })
}

#[derive(Clone)]
struct Receiver {
    config: watch::Receiver<Arc<Config>>,
    replays: Arc<Mutex<ReplayCache>>,
    hints: Arc<Hints>,
    /// Rung when an event with a forward is stored: the relay worker (`deliver::forward`)
    /// sends it; the 200 does not wait for it.
    forwards: Arc<Notify>,
    /// Where discovered jobs are checked against (they are added through `commits`).
    watchlist: Watchlist,
    /// Where each verified event is stored, sharing a commit with the others waiting (item 5
    /// of issue 23): the request's 200 waits for that commit.
    commits: CommitQueue,
    /// Refusals are an outsider's to cause (3,077 forged callbacks a second once wrote 17.5 MB
    /// of log in 20 s): the first is logged, then a summary at most every 10 s (item 4). The
    /// metric counts every one.
    refusals: Arc<Mutex<LogSummary>>,
}

/// Serves the receiver on a bound listener until `shutdown` turns true. The path is taken
/// from the configuration at start; the apps and keys are read per request, so a reload
/// changes them at once.
pub async fn serve(
    listener: TcpListener,
    config: watch::Receiver<Arc<Config>>,
    store: Store,
    hints: Arc<Hints>,
    forwards: Arc<Notify>,
    watchlist: Watchlist,
    shutdown: watch::Receiver<bool>,
) {
    let path = config.borrow().callback.path.clone();
    info!(
        address = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        path = %path,
        "callback receiver: POST record callbacks"
    );
    // The writer task ends by itself once the last request holding the queue is done; it is
    // not awaited: an event it commits after the process stops answering is a duplicate when
    // RTC resends it.
    let (commits, _writer) = CommitQueue::start(store, watchlist.clone(), config.clone());
    let receiver = Receiver {
        config,
        commits,
        replays: Arc::new(Mutex::new(ReplayCache::new(REPLAY_CAPACITY))),
        hints,
        forwards,
        watchlist,
        refusals: Arc::new(Mutex::new(LogSummary::default())),
    };
    // A burst of refusals that ends is summarised too, not only when the next one begins.
    tokio::spawn(flush_refusals(receiver.refusals.clone(), shutdown.clone()));
    let app = Router::new()
        .route(&path, post(receive))
        .fallback(not_found)
        .with_state(receiver);
    // The endpoint's own serving loop: the same connection cap (from the open-files limit)
    // and header-read timeout, because this listener is the one that faces the internet.
    crate::http::serve_router(
        listener,
        app,
        crate::http::Listener::Callback,
        crate::http::Limits::for_this_process(),
        shutdown,
    )
    .await;
}

fn count(outcome: Outcome) -> StatusCode {
    metrics::counter!("recwatch_callbacks_total", "result" => outcome.label()).increment(1);
    outcome.status()
}

/// Logs a refusal through the summary (see [`Receiver::refusals`]) and counts it.
fn refused(
    refusals: &Mutex<LogSummary>,
    peer: SocketAddr,
    outcome: Outcome,
    why: &str,
) -> StatusCode {
    let report = refusals
        .lock()
        .expect("refusal summary")
        .note(Instant::now(), why);
    let status = outcome.status().as_u16();
    match report {
        Some(Report::First) => {
            warn!(%peer, result = outcome.label(), status, "callback refused: {why}")
        }
        Some(Report::Summary { count, last_cause }) => warn!(
            %peer, result = outcome.label(), status,
            "callbacks refused: {count} in the last 10 s or more (recwatch_callbacks_total counts each by result); the latest: {last_cause}"
        ),
        None => {}
    }
    count(outcome)
}

async fn flush_refusals(refusals: Arc<Mutex<LogSummary>>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(crate::telemetry::summary::SUMMARY_EVERY) => {}
        }
        let report = refusals
            .lock()
            .expect("refusal summary")
            .flush(Instant::now());
        if let Some(Report::Summary { count, last_cause }) = report {
            warn!(
                "callbacks refused: {count} more in the last 10 s or more (recwatch_callbacks_total counts each by result); the latest: {last_cause}"
            );
        }
    }
}

async fn not_found(
    State(r): State<Receiver>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> StatusCode {
    let why = format!("not the callback path ({:?})", request.uri().path());
    refused(&r.refusals, peer, Outcome::NotFound, &why)
}

async fn receive(
    State(r): State<Receiver>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let outcome = handle(&r, &parts.headers, body).await;
    match outcome {
        Ok(outcome) => count(outcome).into_response(),
        // The rest of a slow body is not waited for: the connection is closed after the
        // answer, so its room goes to a new one.
        Err((Outcome::TooSlow, why)) => (
            refused(&r.refusals, peer, Outcome::TooSlow, &why),
            [(header::CONNECTION, "close")],
        )
            .into_response(),
        Err((outcome, why)) => refused(&r.refusals, peer, outcome, &why).into_response(),
    }
}

/// Whether an `X-Rtc-Signature` value can be a signature at all (64 hex characters): checked
/// with the other headers before the body is read, so a request that cannot be genuine costs
/// no more than its header.
fn well_formed_signature(signature: &str) -> bool {
    signature.len() == 64 && signature.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The body's declared length, if it says one over the limit: refused without being kept.
fn declared_too_large(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|n| *n > MAX_BODY_BYTES as u64)
}

/// The largest body declared too large that is still read (and discarded) before the 413.
const DRAIN_LIMIT: u64 = 1024 * 1024;

/// Reads the body within the serving loop's deadline and [`MAX_BODY_BYTES`].
async fn read_body(body: Body) -> Result<axum::body::Bytes, (Outcome, String)> {
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|e| {
            let e = e.into_inner();
            if crate::http::BodyTooSlow::caused(&*e) {
                (Outcome::TooSlow, format!("{e}; the connection is closed"))
            } else {
                (
                    Outcome::TooLarge,
                    format!("the body is over {MAX_BODY_BYTES} bytes (or was cut off)"),
                )
            }
        })
}

/// The app an event belongs to, among those whose key verified it (two apps may share an
/// `auth_key`, item 5): the one the body names, else the first. `Err` when the body names an
/// app none of the verifying keys belongs to. Pure.
pub fn choose_app<'a>(
    verified: &[&'a AppConfig],
    named: Option<&str>,
) -> Result<&'a AppConfig, String> {
    let first = *verified.first().ok_or("no key verified the event")?;
    let Some(named) = named else {
        return Ok(first);
    };
    verified
        .iter()
        .find(|a| a.app_id == named)
        .copied()
        .ok_or_else(|| {
            format!(
                "the body names app {named:?}, but the signature was made with the key of app {:?}; each app's callbacks must be signed with its own auth_key",
                first.app_id
            )
        })
}

/// Whether discovery may add a job the operator unwatched at `unwatched_at` (stored
/// RFC 3339, None: never unwatched) for an event RTC signed at `sent_at` (None: the timestamp
/// does not read as a time). Only an event signed after the unwatch may: an older one is a
/// replay or a resend of what the operator already dismissed (item 6). Nor may one dated
/// more than [`FUTURE_SKEW`] after `now`: the signature covers rand and timestamp with no
/// separator, so whoever holds a captured callback can move a digit from the end of the rand
/// to the front of the timestamp, which keeps the signature valid and dates the event
/// centuries ahead (the other way dates it in the past). Pure.
pub fn may_rediscover(
    unwatched_at: Option<&str>,
    sent_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> bool {
    let Some(unwatched) = unwatched_at else {
        return true;
    };
    sent_at.is_some_and(|sent| sent <= now + FUTURE_SKEW && timestamp(sent).as_str() > unwatched)
}

/// How far ahead of this machine's clock RTC's may be for [`may_rediscover`].
pub const FUTURE_SKEW: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// One request, in the order trust is earned: the signature headers and the declared size
/// (before the body is read), the body within its deadline, the signature (with every
/// configured app's key), replay, then the body's content. `Err` carries the refusal and why
/// (safe to log: never a key, never the body).
async fn handle(
    r: &Receiver,
    headers: &HeaderMap,
    body: Body,
) -> Result<Outcome, (Outcome, String)> {
    let signature = signature_headers(headers)?;
    let body = refuse_declared_too_large(headers, body).await?;
    let body = read_body(body).await?;
    let config = r.config.borrow().clone();
    let verified = verified_apps(&config, &signature, &body)?;
    // Compared as the hex case-folded text: the case of a signature carries no information.
    let sig_key = signature.signature.to_ascii_lowercase();
    if r.replays
        .lock()
        .expect("replay cache")
        .seen(&sig_key, Instant::now())
    {
        debug!(app_id = %verified[0].app_id, "callback replayed within the window: answered 200, ignored");
        return Ok(Outcome::Replay);
    }
    let event = RecordEvent::parse(&body).map_err(|e| (Outcome::Malformed, e.to_string()))?;
    let app =
        choose_app(&verified, event.app_id.as_deref()).map_err(|why| (Outcome::UnknownApp, why))?;
    let digest = hex::encode(Sha256::digest(&body));
    // Relayed byte for byte, as received; the key is not stored (signed at send time).
    let forward = app.forward_to.is_some().then(|| body.clone());
    let has_forward = forward.is_some();
    // What the log line says, kept: the event itself goes to the commit queue.
    let job_id = event.job_id.clone();
    let event_type = event.event_type.clone();
    let pending = Pending {
        app_id: app.app_id.clone(),
        discover: candidate(r, &config, app, &event, signature.sent_at()),
        event,
        digest,
        at: timestamp(chrono::Utc::now()),
        forward,
    };
    let committed = r.commits.commit(pending).await.map_err(|e| {
        (
            Outcome::Unavailable,
            format!("the database cannot take the event ({e}); answered 503 so RTC sends it again"),
        )
    })?;
    r.replays
        .lock()
        .expect("replay cache")
        .remember(&sig_key, Instant::now());
    Ok(stored(
        r,
        app,
        job_id.as_deref(),
        &event_type,
        has_forward,
        committed,
    ))
}

/// The signature's headers, present and well formed (before the body is read).
fn signature_headers(headers: &HeaderMap) -> Result<SignatureHeaders<'_>, (Outcome, String)> {
    let signature =
        SignatureHeaders::from_headers(headers).map_err(|e| (Outcome::Unsigned, e.to_string()))?;
    if !well_formed_signature(signature.signature) {
        return Err((
            Outcome::Forged,
            "the callback's X-Rtc-Signature header is malformed: it is not 64 hex characters (a hex HMAC-SHA256)".into(),
        ));
    }
    Ok(signature)
}

/// The body handed back unread, unless its declared size is over the limit: refused then.
async fn refuse_declared_too_large(
    headers: &HeaderMap,
    body: Body,
) -> Result<Body, (Outcome, String)> {
    if let Some(declared) = declared_too_large(headers) {
        // Read and thrown away (within the body deadline) when not absurdly large: closing
        // with the body unread makes the kernel reset the connection, and the sender would
        // see that reset instead of the 413 (RTC would resend a body that can never fit).
        if declared <= DRAIN_LIMIT {
            let _ = axum::body::to_bytes(body, DRAIN_LIMIT as usize).await;
        }
        return Err((
            Outcome::TooLarge,
            format!("the body is over {MAX_BODY_BYTES} bytes (Content-Length)"),
        ));
    }
    Ok(body)
}

/// The configured apps whose key verifies the signature (several may share a key); refused
/// as forged when none does.
fn verified_apps<'c>(
    config: &'c Config,
    signature: &SignatureHeaders<'_>,
    body: &[u8],
) -> Result<Vec<&'c AppConfig>, (Outcome, String)> {
    let verified: Vec<&AppConfig> = config
        .apps
        .iter()
        .filter(|a| verify_signature(&a.auth_key, signature, body).is_ok())
        .collect();
    if verified.is_empty() {
        return Err((Outcome::Forged, SignatureError::Mismatch.to_string()));
    }
    Ok(verified)
}

/// What follows an event's commit: its forward and its hint are woken (never awaited), the
/// log line, and what discovery did.
fn stored(
    r: &Receiver,
    app: &AppConfig,
    job_id: Option<&str>,
    event_type: &EventType,
    has_forward: bool,
    committed: commit::Committed,
) -> Outcome {
    let outcome = match committed.inserted {
        Inserted::New => Outcome::Stored,
        Inserted::Duplicate => Outcome::Duplicate,
    };
    if outcome == Outcome::Stored && has_forward {
        r.forwards.notify_one();
    }
    if outcome == Outcome::Stored && job_id.is_some() {
        // The hint comes through the database (`poller::feed`), as for an event another
        // instance stored; this only makes the feed read it now.
        r.hints.event_stored();
    }
    // Each event at DEBUG: the commit that stored it says so at INFO, once for its group
    // (`commit::tell_commit`).
    debug!(
        app_id = %app.app_id,
        job_id = job_id.unwrap_or(""),
        event_type = %event_type,
        result = outcome.label(),
        "callback received"
    );
    // A duplicate is an event seen before (RTC resending it, or a replay after a restart,
    // when the in-memory cache is empty): it discovered its job the first time, and must not
    // bring back a job the operator has unwatched since (item 6); the commit queue only
    // discovers for a new event.
    if let Some(discovered) = committed.discovered {
        tell_discovery(app, job_id.unwrap_or(""), discovered);
    }
    outcome
}

/// The kind of job a callback reveals, for discovery: its stream name says it (`m_...` a mix
/// job, `s_...` an individual one, as RTC names their streams); a name that says neither (or
/// none) is an individual job, the kind every job was before mix jobs were watched. Pure.
pub fn discovered_kind(event: &RecordEvent) -> JobKind {
    event
        .stream_name
        .as_deref()
        .and_then(JobKind::from_stream_name)
        .unwrap_or_default()
}

/// The name a discovered job gets: `<app name>/<job_id>`, or none (the job id is shown) when
/// the app has no `name`.
pub fn discovered_name(app: &AppConfig, job_id: &str) -> Option<String> {
    app.name.as_ref().map(|n| format!("{n}/{job_id}"))
}

/// The entry discovery would add for this event: `job_id` of `app` if the app discovers, nobody
/// watches the job yet, and the job can be watched. The commit queue decides the rest in the
/// commit that stores the event (an unwatch, the list's bounds). RTC is answered 200
/// whatever discovery does: a failure is logged (and the next event of the job tries again),
/// never a reason for RTC to resend.
fn candidate(
    r: &Receiver,
    config: &Config,
    app: &AppConfig,
    event: &RecordEvent,
    sent_at: Option<DateTime<Utc>>,
) -> Option<Candidate> {
    let (true, Some(job_id)) = (app.discover, event.job_id.as_deref()) else {
        return None;
    };
    let key = crate::domain::JobKey::new(&app.app_id, job_id);
    if r.watchlist.is_watched(config, &key) {
        return None;
    }
    let now = crate::domain::Timestamp::now();
    match crate::runtime_list::new_entry(
        config,
        key,
        discovered_name(app, job_id),
        app.notify.clone(),
        crate::domain::JobSource::Callback,
        now,
    ) {
        Ok(e) => Some(Candidate {
            entry: RuntimeJob {
                kind: discovered_kind(event),
                ..e
            },
            sent_at,
        }),
        Err(invalid) => {
            metrics::counter!("recwatch_discovered_total", "result" => "invalid").increment(1);
            warn!(app_id = %app.app_id, "callback names a job that cannot be watched: {invalid}; stored, not watched");
            None
        }
    }
}

/// Counts and logs what discovery did for one stored event.
fn tell_discovery(app: &AppConfig, job_id: &str, discovered: Discovered) {
    let result = match &discovered {
        Discovered::Watched(e) => {
            info!(app_id = %app.app_id, job_id, name = e.name.as_deref().unwrap_or(""), kind = %e.kind, "discovered by a callback: now watched (polled at once)");
            "watched"
        }
        Discovered::AlreadyWatched => return,
        Discovered::Unwatched { at } => {
            info!(app_id = %app.app_id, job_id, unwatched_at = at.as_deref().unwrap_or(""), "callback for a job an operator unwatched, signed before the unwatch: stored, not watched again");
            "unwatched"
        }
        // Said once by the watch list (and its gauge), not per refused callback.
        Discovered::Full(_) => "full",
        Discovered::Unavailable(e) => {
            warn!(app_id = %app.app_id, job_id, "cannot add the discovered job to the watch list: {e}; its next callback tries again");
            "unavailable"
        }
    };
    metrics::counter!("recwatch_discovered_total", "result" => result).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovered_kinds_table() {
        let cases = [
            (
                "a mix stream",
                r#""stream_name":"m_608196a2_room01","#,
                JobKind::Mix,
            ),
            (
                "an individual stream",
                r#""stream_name":"s_608196a2_room01_user-7","#,
                JobKind::Individual,
            ),
            ("no stream name", "", JobKind::Individual),
            (
                "a name that says neither",
                r#""stream_name":"mystream","#,
                JobKind::Individual,
            ),
            ("a number", r#""stream_name":17,"#, JobKind::Individual),
        ];
        for (name, field, want) in cases {
            let body = format!(
                r#"{{{field}"event_type":"RECORD_NEW_FILE_START","app_id":"a","job_id":"608196a2"}}"#
            );
            let event = RecordEvent::parse(body.as_bytes()).unwrap();
            assert_eq!(discovered_kind(&event), want, "{name}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_signature_is_a_replay_only_within_the_window() {
        let mut cache = ReplayCache::new(10);
        let t0 = Instant::now();
        assert!(!cache.seen("a", t0));
        cache.remember("a", t0);
        assert!(cache.seen("a", t0 + Duration::from_secs(599)));
        assert!(!cache.seen("a", t0 + REPLAY_WINDOW));
        assert!(cache.is_empty());
    }

    /// Issue 23, item 1: the room a storm of callbacks grew is given back once its signatures
    /// are forgotten, not kept for the process's life.
    #[tokio::test(start_paused = true)]
    async fn the_cache_gives_back_a_storms_room() {
        let mut cache = ReplayCache::new(REPLAY_CAPACITY);
        let t0 = Instant::now();
        for n in 0..20_000 {
            cache.remember(&format!("{n:064x}"), t0);
        }
        assert!(cache.seen(&format!("{:064x}", 19_999), t0));
        assert!(cache.room() >= 20_000);
        let later = t0 + REPLAY_WINDOW + Duration::from_secs(1);
        cache.remember("after the storm", later);
        assert_eq!(cache.len(), 1);
        assert!(
            cache.room() <= 2_048,
            "room for {} signatures kept for one",
            cache.room()
        );
        assert!(cache.seen("after the storm", later));
        assert!(!cache.seen(&format!("{:064x}", 19_999), later));
    }

    /// Issue 23, item 1: a storm's signatures cost sixteen bytes each while remembered (the
    /// room is the closed slices' exact length and the open slice's set), and every one of
    /// them is still a replay, across the slices, until the window has passed.
    #[tokio::test(start_paused = true)]
    async fn a_storm_is_remembered_in_its_own_room() {
        assert_eq!(
            std::mem::size_of::<Fingerprint>(),
            16,
            "what a signature costs"
        );
        let mut cache = ReplayCache::new(REPLAY_CAPACITY);
        let t0 = Instant::now();
        // 90,000 discoveries at 1,000 a second (part 25a's storm).
        let at = |n: u64| t0 + Duration::from_millis(n);
        for n in 0..90_000u64 {
            cache.remember(&format!("{n:064x}"), at(n));
        }
        let end = at(90_000);
        assert_eq!(cache.len(), 90_000);
        assert!(
            cache.room() <= 90_000 + 2 * cache.slice_len(),
            "room for {} signatures kept for 90,000",
            cache.room()
        );
        for n in (0..90_000u64).step_by(97).chain([89_999]) {
            assert!(cache.seen(&format!("{n:064x}"), end), "signature {n}");
        }
        assert!(!cache.seen(&format!("{:064x}", 90_000), end));
        // The first was remembered at t0: a replay until t0 + the window, and forgotten by
        // the window plus a slice.
        assert!(cache.seen(
            &format!("{:064x}", 0),
            t0 + REPLAY_WINDOW - Duration::from_secs(1)
        ));
        assert!(!cache.seen(&format!("{:064x}", 0), t0 + REPLAY_WINDOW + SLICE));
        assert!(cache.seen(&format!("{:064x}", 89_999), t0 + REPLAY_WINDOW + SLICE));
        assert!(!cache.seen(&format!("{:064x}", 89_999), end + REPLAY_WINDOW + SLICE));
        assert!(cache.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn the_cache_forgets_the_oldest_beyond_its_capacity() {
        let mut cache = ReplayCache::new(3);
        let t0 = Instant::now();
        for s in ["a", "b", "c", "d"] {
            cache.remember(s, t0);
        }
        assert_eq!(cache.len(), 3);
        assert!(!cache.seen("a", t0));
        assert!(cache.seen("d", t0));
    }

    fn app(id: &str) -> AppConfig {
        AppConfig {
            account: None,
            app_id: id.into(),
            auth_key: recwatch_rtc::secret::Secret::new("0123456789abcdef0123456789abcdef"),
            name: None,
            notify: None,
            forward_to: None,
            discover: false,
            max_discovered: crate::config::defaults::APP_MAX_DISCOVERED,
        }
    }

    #[test]
    fn the_app_an_event_belongs_to_table() {
        let (a, b) = (app("app-a"), app("app-b"));
        // (name, apps whose key verified, the app the body names, the app chosen)
        type Case<'a> = (
            &'a str,
            Vec<&'a AppConfig>,
            Option<&'a str>,
            Option<&'a str>,
        );
        let cases: [Case; 6] = [
            ("one key verified, no name", vec![&a], None, Some("app-a")),
            (
                "one key verified, its name",
                vec![&a],
                Some("app-a"),
                Some("app-a"),
            ),
            (
                "one key verified, another name",
                vec![&a],
                Some("app-b"),
                None,
            ),
            (
                "a shared key, the second named",
                vec![&a, &b],
                Some("app-b"),
                Some("app-b"),
            ),
            (
                "a shared key, no name: the first",
                vec![&a, &b],
                None,
                Some("app-a"),
            ),
            (
                "a shared key, neither named",
                vec![&a, &b],
                Some("app-z"),
                None,
            ),
        ];
        for (name, verified, named, want) in cases {
            let got = choose_app(&verified, named).ok().map(|a| a.app_id.as_str());
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn rediscovery_after_an_unwatch_table() {
        let at = |s: &str| Some(s.parse::<DateTime<Utc>>().unwrap());
        let unwatched = Some("2026-12-07T06:00:00.000Z");
        let cases = [
            ("never unwatched", None, None, true),
            (
                "never unwatched, dated",
                None,
                at("2020-01-01T00:00:00Z"),
                true,
            ),
            (
                "signed before the unwatch",
                unwatched,
                at("2026-12-07T05:59:00Z"),
                false,
            ),
            (
                "signed at the unwatch's millisecond",
                unwatched,
                at("2026-12-07T06:00:00Z"),
                false,
            ),
            (
                "signed after the unwatch",
                unwatched,
                at("2026-12-07T06:00:01Z"),
                true,
            ),
            (
                "unwatched, the timestamp unreadable",
                unwatched,
                None,
                false,
            ),
            (
                "signed after the unwatch, a little ahead of our clock",
                unwatched,
                at("2026-12-07T06:14:00Z"),
                true,
            ),
            (
                "dated centuries ahead (a digit moved from the rand)",
                unwatched,
                at("2657-08-12T00:00:00Z"),
                false,
            ),
            (
                "never unwatched, dated ahead: no unwatch to guard",
                None,
                at("2657-08-12T00:00:00Z"),
                true,
            ),
        ];
        let now = at("2026-12-07T06:10:00Z").unwrap();
        for (name, unwatched, sent, want) in cases {
            assert_eq!(may_rediscover(unwatched, sent, now), want, "{name}");
        }
    }

    #[test]
    fn signature_headers_that_cannot_be_a_signature_are_refused_before_the_body() {
        assert!(well_formed_signature(&"aB".repeat(32)));
        assert!(!well_formed_signature(&"a".repeat(63)));
        assert!(!well_formed_signature(&"g".repeat(64)));
        assert!(!well_formed_signature(""));
    }

    #[test]
    fn each_outcome_has_its_status() {
        let cases = [
            (Outcome::Stored, 200),
            (Outcome::Duplicate, 200),
            (Outcome::Replay, 200),
            (Outcome::Unsigned, 401),
            (Outcome::Forged, 401),
            (Outcome::UnknownApp, 404),
            (Outcome::TooLarge, 413),
            (Outcome::TooSlow, 408),
            (Outcome::Malformed, 400),
            (Outcome::Unavailable, 503),
        ];
        for (outcome, status) in cases {
            assert_eq!(outcome.status().as_u16(), status, "{outcome:?}");
        }
    }
}
