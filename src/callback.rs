//! The record-callback receiver (issue 11, first step): its own listener, because it faces the
//! internet while `/metrics` stays private. It takes POSTs on `callback.path` only, verifies
//! `X-Rtc-Signature` over the raw body with the configured apps' keys before reading anything
//! in it, and stores each verified event once (`store::callbacks`). Every refusal is logged
//! (no key, no body) and counted in `recwatch_callbacks_total{result}`; nothing is stored for
//! it. Each new event that names a job is a poll hint for it: the poller reads it from the
//! database (`poller/feed.rs`, so an event any instance stored hints the one that polls), and
//! [`crate::poller::Hints::event_stored`] only makes it read at once; the 200 never waits
//! for the poller. For an app with `forward_to`, the
//! event's forward is written in the same transaction and sent by `deliver::forward`.
//! Discovery: a verified event for a job nobody watches, of an app with `discover = true`,
//! adds the job to the run-time watch list (source `callback`, named `<app name>/<job_id>`,
//! the app's `notify`), and the poller polls it at once ([`crate::watchlist::Watchlist::add`]).

use crate::config::{AppConfig, Config};
use crate::domain::{JobKind, RuntimeJob, timestamp};
use crate::poller::Hints;
use crate::store::{Inserted, Store};
use crate::watchlist::Watchlist;
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::routing::post;
use recwatch_rtc::callback::{RecordEvent, SignatureHeaders, verify_with_any};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
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
            Outcome::Malformed => StatusCode::BAD_REQUEST,
            // RTC sends the event again later.
            Outcome::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// Signatures of stored events, remembered for [`REPLAY_WINDOW`], at most `capacity`.
pub struct ReplayCache {
    seen: HashMap<String, Instant>,
    order: VecDeque<(Instant, String)>,
    capacity: usize,
}

impl ReplayCache {
    pub fn new(capacity: usize) -> ReplayCache {
        ReplayCache {
            seen: HashMap::new(),
            order: VecDeque::new(),
            capacity,
        }
    }

    fn forget_old(&mut self, now: Instant) {
        while let Some((at, _)) = self.order.front() {
            let expired = now.duration_since(*at) >= REPLAY_WINDOW;
            if !expired && self.order.len() <= self.capacity {
                break;
            }
            let (at, sig) = self.order.pop_front().expect("front exists");
            // Only if not remembered again since (then a newer entry is further back).
            if self.seen.get(&sig) == Some(&at) {
                self.seen.remove(&sig);
            }
        }
    }

    /// Whether `signature` was remembered within the window.
    pub fn seen(&mut self, signature: &str, now: Instant) -> bool {
        self.forget_old(now);
        self.seen.contains_key(signature)
    }

    pub fn remember(&mut self, signature: &str, now: Instant) {
        self.seen.insert(signature.to_string(), now);
        self.order.push_back((now, signature.to_string()));
        self.forget_old(now);
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
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
    store: Store,
    replays: Arc<Mutex<ReplayCache>>,
    hints: Arc<Hints>,
    /// Rung when an event with a forward is stored: the relay worker (`deliver::forward`)
    /// sends it; the 200 does not wait for it.
    forwards: Arc<Notify>,
    /// Where discovered jobs are added.
    watchlist: Watchlist,
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
    let receiver = Receiver {
        config,
        store,
        replays: Arc::new(Mutex::new(ReplayCache::new(REPLAY_CAPACITY))),
        hints,
        forwards,
        watchlist,
    };
    let app = Router::new()
        .route(&path, post(receive))
        .fallback(not_found)
        .with_state(receiver);
    // The endpoint's own serving loop: the same connection cap (from the open-files limit)
    // and header-read timeout, because this listener is the one that faces the internet.
    crate::http::serve_router(
        listener,
        app,
        "callback receiver",
        crate::http::Limits::for_this_process(),
        shutdown,
    )
    .await;
}

fn count(outcome: Outcome) -> StatusCode {
    metrics::counter!("recwatch_callbacks_total", "result" => outcome.label()).increment(1);
    outcome.status()
}

async fn not_found(ConnectInfo(peer): ConnectInfo<SocketAddr>, request: Request) -> StatusCode {
    warn!(%peer, path = %request.uri().path(), "callback refused: not the callback path (404)");
    count(Outcome::NotFound)
}

async fn receive(
    State(r): State<Receiver>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> StatusCode {
    let (parts, body) = request.into_parts();
    let outcome = handle(&r, &parts.headers, body).await;
    match outcome {
        Ok(outcome) => count(outcome),
        Err((outcome, why)) => {
            warn!(%peer, result = outcome.label(), status = outcome.status().as_u16(), "callback refused: {why}");
            count(outcome)
        }
    }
}

/// One request, in the order trust is earned: size, signature (with every configured app's
/// key), replay, then the body's content. `Err` carries the refusal and why (safe to log:
/// never a key, never the body).
async fn handle(
    r: &Receiver,
    headers: &axum::http::HeaderMap,
    body: Body,
) -> Result<Outcome, (Outcome, String)> {
    let body = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            (
                Outcome::TooLarge,
                format!("the body is over {MAX_BODY_BYTES} bytes (or was cut off)"),
            )
        })?;
    let signature =
        SignatureHeaders::from_headers(headers).map_err(|e| (Outcome::Unsigned, e.to_string()))?;
    let config = r.config.borrow().clone();
    let app = verify_with_any(
        config.apps.iter().map(|a| (a, &a.auth_key)),
        &signature,
        &body,
    )
    .map_err(|e| (Outcome::Forged, e.to_string()))?;
    // Compared as the hex case-folded text: the case of a signature carries no information.
    let sig_key = signature.signature.to_ascii_lowercase();
    if r.replays
        .lock()
        .expect("replay cache")
        .seen(&sig_key, Instant::now())
    {
        debug!(app_id = %app.app_id, "callback replayed within the window: answered 200, ignored");
        return Ok(Outcome::Replay);
    }
    let event = RecordEvent::parse(&body).map_err(|e| (Outcome::Malformed, e.to_string()))?;
    if let Some(named) = &event.app_id {
        if named != &app.app_id {
            return Err((
                Outcome::UnknownApp,
                format!(
                    "the body names app {named:?}, but the signature was made with the key of app {:?}; each app's callbacks must be signed with its own auth_key",
                    app.app_id
                ),
            ));
        }
    }
    let digest = hex::encode(Sha256::digest(&body));
    // Relayed byte for byte, as received; the key is not stored (signed at send time).
    let forward = app.forward_to.is_some().then_some(&body[..]);
    let now = timestamp(chrono::Utc::now());
    let inserted = r
        .store
        .insert_callback_event(&app.app_id, &event, &digest, &now, forward)
        .await
        .map_err(|e| {
            (
                Outcome::Unavailable,
                format!(
                    "the database cannot take the event ({e}); answered 503 so RTC sends it again"
                ),
            )
        })?;
    r.replays
        .lock()
        .expect("replay cache")
        .remember(&sig_key, Instant::now());
    let outcome = match inserted {
        Inserted::New => Outcome::Stored,
        Inserted::Duplicate => Outcome::Duplicate,
    };
    if outcome == Outcome::Stored && forward.is_some() {
        r.forwards.notify_one();
    }
    if outcome == Outcome::Stored && event.job_id.is_some() {
        // The hint comes through the database (`poller::feed`), as for an event another
        // instance stored; this only makes the feed read it now.
        r.hints.event_stored();
    }
    info!(
        app_id = %app.app_id,
        job_id = event.job_id.as_deref().unwrap_or(""),
        event_type = %event.event_type,
        result = outcome.label(),
        "callback received"
    );
    discover(r, &config, app, &event).await;
    Ok(outcome)
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

/// Starts watching `job_id` of `app` if the app discovers and nobody watches the job yet. The event is stored already, and RTC
/// is answered 200 whatever happens here: a failure is logged (and the next event of the job
/// tries again), never a reason for RTC to resend.
async fn discover(r: &Receiver, config: &Config, app: &AppConfig, event: &RecordEvent) {
    let (true, Some(job_id)) = (app.discover, event.job_id.as_deref()) else {
        return;
    };
    let key = crate::domain::JobKey::new(&app.app_id, job_id);
    if r.watchlist.is_watched(config, &key) {
        return;
    }
    let now = timestamp(chrono::Utc::now());
    let entry = match crate::watchlist::new_entry(
        config,
        key,
        discovered_name(app, job_id),
        app.notify.clone(),
        crate::domain::JobSource::Callback,
        &now,
    ) {
        Ok(e) => RuntimeJob {
            kind: discovered_kind(event),
            ..e
        },
        Err(invalid) => {
            metrics::counter!("recwatch_discovered_total", "result" => "invalid").increment(1);
            warn!(app_id = %app.app_id, "callback names a job that cannot be watched: {invalid}; stored, not watched");
            return;
        }
    };
    match r.watchlist.add(config, entry).await {
        Ok(crate::watchlist::Added::New(e)) => {
            metrics::counter!("recwatch_discovered_total", "result" => "watched").increment(1);
            info!(app_id = %app.app_id, job_id, name = e.name.as_deref().unwrap_or(""), kind = %e.kind, "discovered by a callback: now watched (polled at once)");
        }
        // Said once by the watch list (and its gauge), not per refused callback.
        Ok(crate::watchlist::Added::Full(_)) => {
            metrics::counter!("recwatch_discovered_total", "result" => "full").increment(1);
        }
        Ok(_) => {}
        Err(e) => {
            metrics::counter!("recwatch_discovered_total", "result" => "unavailable").increment(1);
            warn!(app_id = %app.app_id, job_id, "cannot add the discovered job to the watch list: {e}; its next callback tries again");
        }
    }
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
            (Outcome::Malformed, 400),
            (Outcome::Unavailable, 503),
        ];
        for (outcome, status) in cases {
            assert_eq!(outcome.status().as_u16(), status, "{outcome:?}");
        }
    }
}
