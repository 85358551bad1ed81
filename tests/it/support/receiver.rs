//! A real webhook receiver on 127.0.0.1: verifies Standard Webhooks signatures with the
//! reference `standardwebhooks` crate (not with our own code), records what it accepted, and
//! can be told to misbehave. Tests wait on its counters instead of sleeping.

use super::ClosedPort;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use recwatch::domain::Alert;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// A delivery the receiver accepted (answered 2xx): signature valid if a secret is set, body
/// parsed as an [`Alert`].
#[derive(Clone, Debug)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub alert: Alert,
}

/// Any request that reached the receiver, and what it answered.
#[derive(Clone, Debug)]
pub struct Attempt {
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// The status answered; for a stall, the status answered after the stall.
    pub status: u16,
    /// Why it was not accepted, if it was not: "told to fail", "stalled", a signature error.
    pub refused: Option<String>,
}

/// What to do with one coming request instead of accepting it.
#[derive(Clone, Debug)]
enum Misbehave {
    Fail {
        status: u16,
        body: String,
        /// Extra headers on the answer (e.g. Retry-After).
        headers: Vec<(String, String)>,
    },
    /// Hold the answer this long, then answer 200 without recording it as accepted: the
    /// sender gave up by then, so for the test it was never delivered.
    Stall(Duration),
}

struct Shared {
    webhook: Option<standardwebhooks::Webhook>,
    received: Mutex<Vec<Received>>,
    attempts: Mutex<Vec<Attempt>>,
    plan: Mutex<VecDeque<Misbehave>>,
    /// Counts (accepted, attempts): a test waits for a count, not for a time.
    counts: watch::Sender<(usize, usize)>,
    /// Requests that arrived, counted before any planned stall.
    arrived: watch::Sender<usize>,
}

pub struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Starts on a fresh 127.0.0.1 port. With `secret` (`whsec_...`), every request must
    /// carry a valid Standard Webhooks signature or it is answered 401 and not accepted.
    pub async fn start(secret: Option<&str>) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        Receiver::serve(listener, secret)
    }

    /// Starts on a port that refused connections until now: a receiver that was down comes
    /// up at the same URL.
    pub fn start_on(port: ClosedPort, secret: Option<&str>) -> Receiver {
        Receiver::serve(port.listen(), secret)
    }

    fn serve(listener: tokio::net::TcpListener, secret: Option<&str>) -> Receiver {
        let webhook =
            secret.map(|s| standardwebhooks::Webhook::new(s).expect("a valid whsec_ secret"));
        let shared = Arc::new(Shared {
            webhook,
            received: Mutex::new(Vec::new()),
            attempts: Mutex::new(Vec::new()),
            plan: Mutex::new(VecDeque::new()),
            counts: watch::channel((0, 0)).0,
            arrived: watch::channel(0).0,
        });
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("receiver serves");
        });
        Receiver { addr, shared, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/hook`.
    pub fn url(&self) -> url::Url {
        format!("http://{}/hook", self.addr).parse().unwrap()
    }

    /// Every accepted delivery so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// (rule, severity, status, job_id) of every accepted delivery, sorted: what the alerts
    /// tests compare whole.
    pub fn summary(&self) -> Vec<(String, String, String, String)> {
        let mut v: Vec<_> = self
            .received()
            .iter()
            .map(|d| {
                (
                    d.alert.rule.as_str().to_string(),
                    d.alert.severity.as_str().to_string(),
                    d.alert.status.as_str().to_string(),
                    d.alert
                        .job
                        .as_ref()
                        .map(|j| j.job_id.clone())
                        .unwrap_or_default(),
                )
            })
            .collect();
        v.sort();
        v
    }

    /// Every request so far, accepted or not, in arrival order.
    pub fn attempts(&self) -> Vec<Attempt> {
        self.shared.attempts.lock().unwrap().clone()
    }

    /// Answers the next `n` requests with `status` (e.g. 503, 404) and an empty body.
    pub fn fail_next(&self, n: usize, status: u16) {
        self.fail_next_with(n, status, "");
    }

    /// Answers the next `n` requests with `status` and `body`.
    pub fn fail_next_with(&self, n: usize, status: u16, body: &str) {
        let mut plan = self.shared.plan.lock().unwrap();
        plan.extend((0..n).map(|_| Misbehave::Fail {
            status,
            body: body.to_string(),
            headers: Vec::new(),
        }));
    }

    /// Answers the next `n` requests with `status`, an empty body and the header `name: value`.
    pub fn fail_next_with_header(&self, n: usize, status: u16, name: &str, value: &str) {
        let mut plan = self.shared.plan.lock().unwrap();
        plan.extend((0..n).map(|_| Misbehave::Fail {
            status,
            body: String::new(),
            headers: vec![(name.to_string(), value.to_string())],
        }));
    }

    /// Forgets every planned misbehaviour: the next requests are accepted again.
    pub fn behave(&self) {
        self.shared.plan.lock().unwrap().clear();
    }

    /// How many requests have arrived, including ones still being answered (a stall): a
    /// test can see that a request is hanging, not only that it ended.
    pub fn arrived(&self) -> usize {
        *self.shared.arrived.borrow()
    }

    /// Waits until at least `n` requests have arrived (answered or not).
    pub async fn wait_arrived(&self, n: usize, timeout: Duration) {
        let mut rx = self.shared.arrived.subscribe();
        if tokio::time::timeout(timeout, rx.wait_for(|a| *a >= n))
            .await
            .is_err()
        {
            panic!(
                "webhook receiver: waited {timeout:?} for {n} requests to arrive; {} did",
                self.arrived()
            );
        }
    }

    /// Holds the answer to the next `n` requests for `delay` (set it beyond the sender's
    /// timeout); those requests are not recorded as accepted.
    pub fn stall_next(&self, n: usize, delay: Duration) {
        self.shared
            .plan
            .lock()
            .unwrap()
            .extend((0..n).map(|_| Misbehave::Stall(delay)));
    }

    /// Waits until at least `n` deliveries were accepted and returns them all; panics after
    /// `timeout` with what did arrive.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        self.wait_until(
            timeout,
            |(accepted, _)| accepted >= n,
            &format!("{n} accepted deliveries"),
        )
        .await;
        self.received()
    }

    /// Waits until at least `n` requests arrived, accepted or not, and returns them all.
    pub async fn wait_for_attempts(&self, n: usize, timeout: Duration) -> Vec<Attempt> {
        self.wait_until(
            timeout,
            |(_, attempts)| attempts >= n,
            &format!("{n} requests"),
        )
        .await;
        self.attempts()
    }

    async fn wait_until(&self, timeout: Duration, ok: impl Fn((usize, usize)) -> bool, what: &str) {
        let mut rx = self.shared.counts.subscribe();
        let waited = tokio::time::timeout(timeout, rx.wait_for(|c| ok(*c))).await;
        if waited.is_err() {
            panic!(
                "webhook receiver: waited {timeout:?} for {what}; got {:?} (accepted, requests); refusals: {:?}",
                *self.shared.counts.borrow(),
                self.attempts()
                    .iter()
                    .filter_map(|a| a.refused.clone())
                    .collect::<Vec<_>>()
            );
        }
    }

    /// Stops listening; the port refuses connections afterwards.
    pub fn stop(self) {
        self.task.abort();
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    shared.arrived.send_modify(|n| *n += 1);
    let planned = shared.plan.lock().unwrap().pop_front();
    let mut extra = Vec::new();
    let (status, answer, refused, accepted) = match planned {
        Some(Misbehave::Fail {
            status,
            body,
            headers,
        }) => {
            extra = headers;
            (status, body, Some("told to fail".to_string()), None)
        }
        Some(Misbehave::Stall(delay)) => {
            tokio::time::sleep(delay).await;
            (200, String::new(), Some("stalled".to_string()), None)
        }
        None => match verify(&shared, &headers, &body) {
            Ok(alert) => (200, String::new(), None, Some(alert)),
            Err((status, why)) => (status, why.clone(), Some(why), None),
        },
    };
    let attempt = Attempt {
        headers: headers.clone(),
        body: body.to_vec(),
        status,
        refused,
    };
    shared.attempts.lock().unwrap().push(attempt);
    if let Some(alert) = accepted {
        shared.received.lock().unwrap().push(Received {
            headers,
            body: body.to_vec(),
            alert,
        });
    }
    // Bump the counts only after both lists hold the request, so a waiter sees it.
    let accepted_now = shared.received.lock().unwrap().len();
    let attempts_now = shared.attempts.lock().unwrap().len();
    shared.counts.send_replace((accepted_now, attempts_now));
    let mut response = (StatusCode::from_u16(status).unwrap(), answer).into_response();
    for (name, value) in extra {
        response.headers_mut().insert(
            axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    response
}

fn verify(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Result<Alert, (u16, String)> {
    if let Some(wh) = &shared.webhook {
        wh.verify(body, headers)
            .map_err(|e| (401, format!("signature: {e}")))?;
    }
    serde_json::from_slice(body).map_err(|e| (400, format!("not an alert: {e}")))
}
