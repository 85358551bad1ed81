//! How a request leaves the machine: hyper's pooled client straight, or reqwest when the
//! environment names a proxy for the endpoint.
//!
//! reqwest sends every request through its redirect layer, which prints the request's URI and
//! parses it back as a `Url` (host, IDNA, path) even when redirects are never followed, and
//! builds a `Url` of its own per request: some 20,000 instructions a poll, a tenth of the
//! daemon's work per poll with the budget lifted (BENCHMARKS.md parts 25d and 27d). recwatch
//! follows no redirect, so the direct path is hyper-util's client with what reqwest gave it:
//! the same TLS (rustls with aws-lc-rs, the platform's verifier, ALPN h2 and http/1.1), the
//! same TCP settings (no Nagle, keep-alive probes), a pool of `max_connections` idle
//! connections, a connect timeout of at most 10 s that covers the TLS handshake too, and one
//! deadline for the whole request, answer's body included. Its failures are told apart the way
//! reqwest's were (a timeout; a connection that could not be made, so nothing was sent; any
//! other break), with the same text.
//!
//! reqwest also honours `HTTP_PROXY`/`HTTPS_PROXY`/`ALL_PROXY` (less `NO_PROXY`) from the
//! environment, which the direct path does not: when the environment sends the endpoint to a
//! proxy, requests keep going out through reqwest, so such a deployment sees no change.

use crate::client::{ErrorKind, RtcError};
use bytes::Bytes;
use http::header::HeaderMap;
use http::{Method, Uri};
use http_body_util::{BodyExt, Full};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;

/// Bigger answers than this are not a job record; refusing them bounds memory.
pub(crate) const MAX_BODY: usize = 1 << 20;

/// Idle connections are closed after this long (reqwest's default, kept).
const POOL_IDLE: Duration = Duration::from_secs(90);
/// TCP keep-alive probes on idle connections: reqwest's defaults, kept.
const KEEPALIVE: Duration = Duration::from_secs(15);
const KEEPALIVE_RETRIES: u32 = 3;

/// An answer read whole, before anything is made of it.
pub(crate) struct Raw {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
}

/// Where requests go out (see the module's text for why there are two).
#[derive(Clone)]
pub(crate) enum Transport {
    /// Shared: the client is cloned with every `RtcClient`, and hyper's client is large.
    Direct(Arc<Direct>),
    /// The environment names a proxy for the endpoint: reqwest speaks to it.
    Proxied(reqwest::Client),
}

pub(crate) struct Direct {
    client: Client<Bounded, Full<Bytes>>,
    /// For the whole request, answer included.
    timeout: Duration,
}

impl Transport {
    /// The transport for `endpoint`: reqwest when the environment's proxy settings take it
    /// (as reqwest reads them), hyper's client otherwise.
    pub(crate) fn new(
        endpoint: &Uri,
        timeout: Duration,
        max_connections: usize,
    ) -> anyhow::Result<Transport> {
        let connect_timeout = timeout.min(Duration::from_secs(10));
        let max_idle = max_connections.max(1);
        let proxy = hyper_util::client::proxy::matcher::Matcher::from_system();
        if proxy.intercept(endpoint).is_some() {
            let http = reqwest::Client::builder()
                .timeout(timeout)
                .connect_timeout(connect_timeout)
                .pool_max_idle_per_host(max_idle)
                // A monitor must not wander off to wherever a proxy or attacker points it.
                .redirect(reqwest::redirect::Policy::none())
                .build()?;
            return Ok(Transport::Proxied(http));
        }
        Ok(Transport::Direct(Arc::new(Direct {
            client: direct_client(connect_timeout, max_idle)?,
            timeout,
        })))
    }

    /// Sends `method` to `uri` with `headers` and `body`, and reads the answer whole (at most
    /// [`MAX_BODY`] bytes), all within the timeout.
    pub(crate) async fn send(
        &self,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Option<Vec<u8>>,
    ) -> Result<Raw, RtcError> {
        match self {
            Transport::Direct(direct) => direct.send(method, uri, headers, body).await,
            Transport::Proxied(http) => send_reqwest(http, method, uri, headers, body).await,
        }
    }
}

/// hyper-util's client as reqwest configured it for recwatch (see the module's text).
fn direct_client(
    connect_timeout: Duration,
    max_idle: usize,
) -> anyhow::Result<Client<Bounded, Full<Bytes>>> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = rustls_platform_verifier::Verifier::new(provider.clone())?;
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(rustls::ALL_VERSIONS)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    // The connector also takes https:// URIs; TLS is the wrapper's.
    http.enforce_http(false);
    // Small requests on keep-alive connections: Nagle would hold each until the last answer's
    // ACK.
    http.set_nodelay(true);
    http.set_keepalive(Some(KEEPALIVE));
    http.set_keepalive_interval(Some(KEEPALIVE));
    http.set_keepalive_retries(Some(KEEPALIVE_RETRIES));
    let https = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(http);
    let connector = Bounded {
        inner: https,
        limit: connect_timeout,
    };
    Ok(Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(max_idle)
        .pool_idle_timeout(POOL_IDLE)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(connector))
}

impl Direct {
    async fn send(
        &self,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Option<Vec<u8>>,
    ) -> Result<Raw, RtcError> {
        let deadline = Instant::now() + self.timeout;
        let mut request = http::Request::new(Full::new(Bytes::from(body.unwrap_or_default())));
        *request.method_mut() = method;
        *request.headers_mut() = headers;
        let sending = format!("error sending request for url ({uri})");
        *request.uri_mut() = uri;
        let response = match tokio::time::timeout_at(deadline, self.client.request(request)).await {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => {
                let kind = if timed_out(&e) {
                    ErrorKind::Timeout
                } else {
                    ErrorKind::Connection
                };
                return Err(RtcError {
                    // A failure to connect (refused, unreachable, a connect timeout, TLS)
                    // happens before a byte of the request is written; any other may come
                    // after the server read it.
                    not_sent: e.is_connect(),
                    ..RtcError::transport(kind, format!("{sending}: {}", chain(&e)))
                });
            }
            Err(_) => {
                return Err(RtcError::transport(
                    ErrorKind::Timeout,
                    format!("{sending}: operation timed out"),
                ));
            }
        };
        let (parts, mut incoming) = response.into_parts();
        let status = parts.status.as_u16();
        let mut body = Vec::new();
        loop {
            let frame = match tokio::time::timeout_at(deadline, incoming.frame()).await {
                Err(_) => return Err(answered(body_timeout(), status, &parts.headers)),
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    return Err(answered(cut_short(body.len(), &e), status, &parts.headers));
                }
                Ok(Some(Ok(frame))) => frame,
            };
            // Trailers carry nothing recwatch reads.
            if let Ok(chunk) = frame.into_data() {
                if body.len() + chunk.len() > MAX_BODY {
                    return Err(answered(too_large(), status, &parts.headers));
                }
                body.extend_from_slice(&chunk);
            }
        }
        Ok(Raw {
            status,
            headers: parts.headers,
            body,
        })
    }
}

/// A failure reading an answer's body, with what its head said: the status and the request
/// id to quote.
fn answered(mut e: RtcError, status: u16, headers: &HeaderMap) -> RtcError {
    e.status = Some(status);
    e.request_id = request_id(headers);
    e
}

/// The `X-Request-Id` answer header, when it is text.
pub(crate) fn request_id(headers: &HeaderMap) -> Option<String> {
    header(headers, "x-request-id")
}

/// An answer header's value, when it is text.
pub(crate) fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The connector with a limit on making a connection, TLS handshake included, as reqwest's
/// `connect_timeout` has: a connection that cannot be made in time fails as a connect error
/// (nothing was sent), not as the request's timeout.
#[derive(Clone)]
struct Bounded {
    inner: HttpsConnector<HttpConnector>,
    limit: Duration,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Uri> for Bounded {
    type Response = <HttpsConnector<HttpConnector> as tower_service::Service<Uri>>::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let limit = self.limit;
        Box::pin(async move {
            match tokio::time::timeout(limit, connecting).await {
                Ok(done) => done,
                Err(_) => Err(Box::new(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connect timed out",
                )) as BoxError),
            }
        })
    }
}

/// Whether a timeout is somewhere in the error's causes (reqwest's `is_timeout`).
fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        cause = c.source();
    }
    false
}

fn body_timeout() -> RtcError {
    RtcError::transport(
        ErrorKind::Timeout,
        "reading the body: error decoding response body: operation timed out".to_string(),
    )
}

fn cut_short(read: usize, e: &(dyn std::error::Error + 'static)) -> RtcError {
    RtcError::transport(
        ErrorKind::BadResponse,
        format!(
            "body cut short after {read} bytes: error decoding response body: {}",
            chain(e)
        ),
    )
}

fn too_large() -> RtcError {
    RtcError::transport(
        ErrorKind::BadResponse,
        format!("body is larger than {MAX_BODY} bytes"),
    )
}

/// Through reqwest, for an endpoint behind the environment's proxy.
async fn send_reqwest(
    http: &reqwest::Client,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Option<Vec<u8>>,
) -> Result<Raw, RtcError> {
    let mut request = http.request(method, uri.to_string()).headers(headers);
    if let Some(body) = body {
        request = request.body(body);
    }
    let mut response = request.send().await.map_err(|e| {
        let kind = if e.is_timeout() {
            ErrorKind::Timeout
        } else {
            ErrorKind::Connection
        };
        RtcError {
            not_sent: e.is_connect(),
            ..RtcError::transport(kind, chain(&e))
        }
    })?;
    let status = response.status().as_u16();
    let headers = std::mem::take(response.headers_mut());
    let mut body = Vec::new();
    loop {
        let failed = match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY {
                    too_large()
                } else {
                    body.extend_from_slice(&chunk);
                    continue;
                }
            }
            Ok(None) => break,
            Err(e) if e.is_timeout() => RtcError::transport(
                ErrorKind::Timeout,
                format!("reading the body: {}", chain(&e)),
            ),
            Err(e) => RtcError::transport(
                ErrorKind::BadResponse,
                format!("body cut short after {} bytes: {}", body.len(), chain(&e)),
            ),
        };
        return Err(answered(failed, status, &headers));
    }
    Ok(Raw {
        status,
        headers,
        body,
    })
}

/// The error with its causes, since the outer message is often just "client error (Connect)".
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
