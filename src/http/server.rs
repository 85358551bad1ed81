//! Serving connections: each in its own task, registered in a table ordered by age, so that
//! at the cap the oldest one that is not in the middle of a response makes room for a new
//! one; accept errors are reported (throttled) rather than spun on.
//!
//! A connection whose request body is still arriving counts as evictable too (issue 22, item
//! 3): 300 connections trickling a body byte every 5 s once filled the cap and silenced the
//! callback receiver (and, on the endpoint, `/healthz` behind the write API's slow bodies).
//! Whoever sends a body sends it at once; a body still arriving when the cap is reached gives
//! its room to a new connection, and every body must be complete within
//! [`Limits::body_deadline`] of its header ([`DeadlineBody`]). So only a response being
//! written (the one thing a client cannot stretch alone) keeps a connection's room.

use super::AppState;
use super::limits::{Limits, nofile_limit};
use crate::telemetry::summary::{LogSummary, Report};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use hyper::body::Frame;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::AbortHandle;
use tracing::{debug, error, info, warn};

/// Serves on `listener` until shutdown. `run` binds it before it reports ready
/// ([`super::bind_http`]): an address that cannot be bound stops the start.
pub async fn serve(listener: TcpListener, state: AppState, shutdown: watch::Receiver<bool>) {
    serve_on(listener, state, Limits::for_this_process(), shutdown).await
}

/// Serves on a bound listener until shutdown.
pub async fn serve_on(
    listener: TcpListener,
    state: AppState,
    limits: Limits,
    shutdown: watch::Receiver<bool>,
) {
    info!(
        address = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        max_connections = limits.max_connections,
        header_read_timeout_s = limits.header_read_timeout.as_secs_f64(),
        "HTTP endpoint: /healthz /readyz /metrics /api/v1/jobs"
    );
    serve_router(
        listener,
        super::router(state),
        Listener::Endpoint,
        limits,
        shutdown,
    )
    .await
}

/// Which of recwatch's two listeners a serving loop is: in its log lines and the `listener`
/// label of its metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    /// `http.listen`: health, metrics, the status page and the API.
    Endpoint,
    /// `callback.listen`: the record-callback receiver, facing the internet.
    Callback,
}

impl Listener {
    pub fn name(self) -> &'static str {
        match self {
            Listener::Endpoint => "HTTP endpoint",
            Listener::Callback => "callback receiver",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Listener::Endpoint => "http",
            Listener::Callback => "callback",
        }
    }
}

/// Serves `app` on a bound listener until shutdown, with the connection cap, the
/// header-read timeout and the body deadline of `limits`: the one serving loop of both
/// listeners (the endpoint, and the callback receiver that faces the internet). Each request
/// carries its peer's address as axum's `ConnectInfo<SocketAddr>`.
pub async fn serve_router(
    listener: TcpListener,
    app: Router,
    which: Listener,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) {
    let name = which.name();
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let conns = Arc::new(Connections::new(limits.max_connections, which));
    let mut accept_errors = Throttle::default();
    // Refusing at the cap is what a flood causes: one line, then a summary every 10 s.
    let mut refusals = LogSummary::default();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                accept_failed(name, &e, &mut accept_errors).await;
                continue;
            }
        };
        if !conns.make_room(limits.stuck_response) {
            // Every connection is in the middle of a response: refuse this one and accept no
            // more until one ends (new ones wait in the kernel's queue meanwhile).
            drop(stream);
            metrics::counter!("recwatch_http_connections_closed_total", "listener" => which.label(), "reason" => "refused").increment(1);
            match refusals.note(
                tokio::time::Instant::now(),
                "every connection busy answering",
            ) {
                Some(Report::First) => warn!(
                    "{name}: all {} connections are busy answering; closed a new one and stopped accepting until one ends",
                    limits.max_connections
                ),
                Some(Report::Summary { count, .. }) => warn!(
                    "{name}: closed {count} new connections in the last 10 s or more because all {} were busy answering",
                    limits.max_connections
                ),
                None => {}
            }
            tokio::select! {
                _ = shutdown.wait_for(|s| *s) => break,
                _ = conns.freed.notified() => {}
                // Also re-checked now and then: a response can become stuck without ending.
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            continue;
        }
        conns.spawn(
            stream,
            peer,
            app.clone(),
            http1.clone(),
            limits.body_deadline,
            shutdown.clone(),
        );
    }
}

/// Accept failed. Running out of descriptors is loud (and throttled): it means something else
/// in this process holds them, and outbound deliveries are failing the same way.
async fn accept_failed(name: &str, e: &std::io::Error, log: &mut Throttle) {
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
                "{name} cannot accept a connection: {e} (open-files limit {limit}, {missed} more such errors since the last report); webhook and e-mail deliveries fail the same way: raise LimitNOFILE"
            );
        }
    } else if let Some(missed) = log.due() {
        warn!("{name}: accept failed: {e} ({missed} more since the last report)");
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
    /// Which listener, for its log lines and metrics.
    which: Listener,
    cap: usize,
    open: Mutex<BTreeMap<u64, Open>>,
    next_id: AtomicU64,
    /// One permit per connection that ended, for an accept loop waiting for room.
    freed: Notify,
    /// Closing connections to make room is expected under a flood: said once, then summarised.
    evictions: Mutex<LogSummary>,
}

struct Open {
    task: AbortHandle,
    busy: Arc<Busy>,
}

/// Where a connection is in its current request. HTTP/1 serves one request at a time per
/// connection, so one value of each is enough.
#[derive(Default)]
struct Busy {
    /// When the current request's header arrived (`now_ms`), 0 between requests.
    since: AtomicU64,
    /// Its body is still arriving: the client holds the pace, so the connection does not
    /// keep its room at the cap (see the module's comment).
    reading_body: AtomicBool,
}

impl Busy {
    fn evictable(&self, now: u64, stuck: Duration) -> bool {
        match self.since.load(Ordering::Relaxed) {
            0 => true,
            _ if self.reading_body.load(Ordering::Relaxed) => true,
            since => now.saturating_sub(since) > stuck.as_millis() as u64,
        }
    }
}

/// Marks a connection busy from its request's arrival until its response body is dropped
/// (written out, or the connection gone).
struct BusyGuard(Arc<Busy>);

impl BusyGuard {
    fn begin(busy: Arc<Busy>, with_body: bool) -> BusyGuard {
        busy.reading_body.store(with_body, Ordering::Relaxed);
        busy.since.store(now_ms(), Ordering::Relaxed);
        BusyGuard(busy)
    }
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.reading_body.store(false, Ordering::Relaxed);
        self.0.since.store(0, Ordering::Relaxed);
    }
}

/// The error a request body gives when it is not complete within the body deadline: a
/// handler that reads the body sees it (the callback receiver answers 408; any other
/// extractor refuses the request).
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {} s of its header", .0.as_secs())]
pub struct BodyTooSlow(pub Duration);

impl BodyTooSlow {
    /// Whether `e` (or an error it wraps) is a [`BodyTooSlow`].
    pub fn caused(e: &(dyn std::error::Error + 'static)) -> bool {
        let mut cur = Some(e);
        while let Some(e) = cur {
            if e.is::<BodyTooSlow>() {
                return true;
            }
            cur = e.source();
        }
        false
    }
}

/// A request body with a deadline, which marks its connection as answering (no longer
/// reading) once it ended or was dropped.
struct DeadlineBody {
    inner: hyper::body::Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
    limit: Duration,
    busy: Arc<Busy>,
}

impl DeadlineBody {
    fn done_reading(&self) {
        self.busy.reading_body.store(false, Ordering::Relaxed);
    }
}

impl Drop for DeadlineBody {
    fn drop(&mut self) {
        self.done_reading();
    }
}

impl hyper::body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                self.done_reading();
                Poll::Ready(None)
            }
            Poll::Ready(Some(frame)) => Poll::Ready(Some(frame.map_err(Into::into))),
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(BodyTooSlow(self.limit).into()))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
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
    fn new(cap: usize, which: Listener) -> Connections {
        Connections {
            which,
            cap: cap.max(1),
            open: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(0),
            freed: Notify::new(),
            evictions: Mutex::new(LogSummary::default()),
        }
    }

    /// Makes room for one more connection: true if there is room (now). At the cap, closes
    /// the oldest connection that is between requests, still receiving a body, or whose
    /// response is stuck; false if every one is busy answering.
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
        metrics::counter!("recwatch_http_connections_closed_total", "listener" => self.which.label(), "reason" => "evicted").increment(1);
        let report = self
            .evictions
            .lock()
            .expect("summary lock")
            .note(tokio::time::Instant::now(), "at the cap");
        let (name, cap) = (self.which.name(), self.cap);
        match report {
            Some(Report::First) => warn!(
                "{name} at its cap of {cap} connections: closing the oldest idle (or slow-body) ones to make room (a client opening many connections?)"
            ),
            Some(Report::Summary { count, .. }) => warn!(
                "{name} at its cap of {cap} connections: closed {count} idle or slow-body connections to make room in the last 10 s or more"
            ),
            None => {}
        }
        true
    }

    /// Serves one connection in its own task, registered until it ends. Not one of `run`'s
    /// tracked tasks: at the stop it finishes the request in progress and closes, but a client
    /// that stopped reading must not be able to hold the daemon's shutdown.
    fn spawn(
        self: &Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        app: Router,
        http1: hyper::server::conn::http1::Builder,
        body_deadline: Duration,
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
            let service = hyper::service::service_fn(
                move |request: hyper::Request<hyper::body::Incoming>| {
                    let with_body = !hyper::body::Body::is_end_stream(request.body());
                    let guard = BusyGuard::begin(tracked.clone(), with_body);
                    let busy = tracked.clone();
                    let mut request = request.map(|inner| DeadlineBody {
                        inner,
                        deadline: Box::pin(tokio::time::sleep(body_deadline)),
                        limit: body_deadline,
                        busy,
                    });
                    request.extensions_mut().insert(ConnectInfo(peer));
                    let call = hyper::service::Service::call(&tower, request);
                    async move {
                        let response = call.await?;
                        Ok::<_, Infallible>(response.map(|body| GuardedBody { body, _busy: guard }))
                    }
                },
            );
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_and_stuck_connections_can_be_closed_busy_ones_not() {
        let stuck = Duration::from_secs(60);
        let busy = Busy::default();
        assert!(busy.evictable(1_000_000, stuck), "between requests");
        busy.since.store(1_000_000, Ordering::Relaxed);
        assert!(!busy.evictable(1_000_000 + 59_000, stuck), "answering");
        assert!(busy.evictable(1_000_000 + 61_000, stuck), "stuck answering");
        busy.reading_body.store(true, Ordering::Relaxed);
        assert!(
            busy.evictable(1_000_000 + 1, stuck),
            "a body still arriving"
        );
    }
}
