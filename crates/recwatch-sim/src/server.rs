//! Serving the API: connections served with hyper directly (so a reset fault can drop one
//! unanswered), the routes, and each poll's way through the simulator: counted, then faults,
//! the gateway's checks, the job lookup (on its kind's path), and the answer. Creates and
//! stops are in `create`.

use crate::control;
use crate::create;
use crate::faults::{self, FaultKind, ResetConnection, echo_response, fault_response};
use crate::gateway::{Caller, Refusal, Verdict, sim_now, throttle_message};
use crate::response::{api_response, error_response};
use crate::script::{plus, scripted_job};
use crate::simulator::{Inner, Job, Shared, stopped};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State as AxState};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use axum::routing::{get, post};
use recwatch_rtc::Kind;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

/// What to answer, decided under the lock.
enum Outcome {
    Fault(FaultKind),
    Unauthorized(Refusal),
    /// 429, quoting the account's limit.
    Throttled(Option<u32>),
    NotFound,
    Scripted(usize),
    Fixed(Bytes),
}

impl Inner {
    /// With a clock offset, the `Date` header the simulator's clock gives; hyper writes the
    /// machine's own otherwise.
    pub(crate) fn date_header(&self, response: &mut Response) {
        if self.opts.clock_offset != 0 {
            let date = sim_now(&self.opts)
                .format("%a, %d %b %Y %H:%M:%S GMT")
                .to_string();
            if let Ok(v) = HeaderValue::from_str(&date) {
                response.headers_mut().insert(header::DATE, v);
            }
        }
    }

    /// The run's prefix and the next number, 16 hex digits each: written by hand, since every
    /// answer has one.
    pub(crate) fn request_id(&self) -> HeaderValue {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut id = [0u8; 32];
        for (i, digit) in id.iter_mut().enumerate() {
            let word = if i < 16 { self.id_prefix } else { n };
            *digit = DIGITS[((word >> (60 - 4 * (i % 16))) & 0xf) as usize];
        }
        HeaderValue::from_bytes(&id).expect("hex is a valid header value")
    }

    /// Everything about one API request that needs the shared state, under one lock.
    fn decide(
        &self,
        kind: Kind,
        app_id: &str,
        job_id: &str,
        caller: &Caller,
        now: Instant,
    ) -> (Outcome, Option<Duration>) {
        let elapsed = now.duration_since(self.epoch);
        let now_utc = plus(self.epoch_utc, elapsed);
        let unix_second = now_utc.timestamp();
        let mut guard = self.lock();
        let s = &mut *guard;
        s.apply_due(now, self.epoch);
        s.counters.arrival(now, unix_second, app_id, Some(job_id));
        s.account_arrival(self, caller, now);
        let mut stall = None;
        match faults::take(&mut s.faults, job_id, now_utc) {
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

        let outcome = match s.job_gate(self, caller, now) {
            Verdict::Refused(refusal) => Outcome::Unauthorized(refusal),
            Verdict::Throttled(limit) => Outcome::Throttled(limit),
            Verdict::Pass => find(s, kind, app_id, job_id),
        };
        let status = match &outcome {
            Outcome::Unauthorized(refusal) => {
                s.counters.refused_auth += 1;
                refusal.status
            }
            Outcome::Throttled(_) => {
                s.counters.throttled += 1;
                StatusCode::TOO_MANY_REQUESTS
            }
            Outcome::NotFound => StatusCode::NOT_FOUND,
            _ => StatusCode::OK,
        };
        s.counters.status(status);
        (outcome, stall)
    }
}

/// The job a request names, once the gateway let it through: a job of another kind is not
/// on this path.
fn find(s: &Shared, kind: Kind, app_id: &str, job_id: &str) -> Outcome {
    if s.kind_of(app_id, job_id) != kind {
        return Outcome::NotFound;
    }
    match s.apps.get(app_id).and_then(|jobs| jobs.get(job_id)) {
        Some(Job::Scripted(index)) => Outcome::Scripted(*index),
        Some(Job::Fixed { body, .. }) => Outcome::Fixed(body.clone()),
        None => Outcome::NotFound,
    }
}

/// The one API route, the control API, and the gateway's 404 for everything else.
pub(crate) fn router(inner: Arc<Inner>) -> Router {
    let router = Router::new()
        .route(
            "/v2/apps/{app_id}/individual-stream-jobs/{job_id}",
            get(api_get_job).delete(create::api_stop),
        )
        .route(
            "/v2/apps/{app_id}/mix-stream-jobs/{job_id}",
            get(api_get_job).delete(create::api_stop),
        )
        .route(
            "/v2/apps/{app_id}/individual-stream-jobs",
            post(create::api_create),
        )
        .route(
            "/v2/apps/{app_id}/mix-stream-jobs",
            post(create::api_create),
        )
        .route(
            "/v2/apps/{app_id}/record-callback",
            get(crate::registration::api_record_callback)
                .put(crate::registration::api_record_callback),
        )
        .merge(control::routes());
    // The ECS metadata stand-in's paths are none of the API's: one listener serves both.
    let router = if inner.metadata.is_some() {
        router.merge(crate::metadata::routes())
    } else {
        router
    };
    router.fallback(api_not_found).with_state(inner)
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

/// Which kind of job a request's path is about: both kinds share one handler per method
/// (`/v2/apps/{app_id}/mix-stream-jobs...` or `.../individual-stream-jobs...`).
pub(crate) fn kind_of(uri: &Uri) -> Kind {
    if uri.path().contains("/mix-stream-jobs") {
        Kind::Mix
    } else {
        Kind::Individual
    }
}

async fn api_get_job(
    AxState(inner): AxState<Arc<Inner>>,
    Path((app_id, job_id)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let kind = crate::server::kind_of(&uri);
    let now = Instant::now();
    let caller = inner.check_credentials(&method, &uri, &headers, b"");
    let (outcome, stall) = inner.decide(kind, &app_id, &job_id, &caller, now);
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
        Outcome::Throttled(limit) => error_response(
            StatusCode::TOO_MANY_REQUESTS,
            "APIG.0308",
            &throttle_message(limit),
            request_id,
        ),
        Outcome::Fault(kind) => {
            fault_response(inner.opts.rate_limit, kind, app_id, job_id, request_id)
        }
    }
}

/// Accepts connections until shutdown, each served on its own task.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
) {
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
