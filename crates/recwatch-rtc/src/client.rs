//! The HTTP client for the job endpoints recwatch polls (creating and stopping jobs are in
//! `jobs`, the record-callback registration in `registration`: all go out through
//! `RtcClient::send`).
//!
//! It signs exactly the headers it sends (Host included, with the port when the endpoint has
//! one), and turns every answer into either a job snapshot or an [`RtcError`] whose kind the
//! poller acts on: a throttled answer slows every poll, refused credentials stop them, and a
//! broken job backs off on its own.
//!
//! An answer is only taken for the job's state when it is one: a 404 means "job not found"
//! only when the RTC service says so (an `RTC.*` code); a 404 from the gateway (`APIG.0101`,
//! no code, an HTML page) or a redirect means the endpoint is wrong, and a 200 about another
//! job is a bad answer, never that job's new state.

use crate::Auth;
use crate::credentials::{Credentials, Signing};
use crate::jobs::Kind;
use crate::model::{ErrorBody, JobSnapshot, State, parse_error_body, parse_job_fields, same_id};
use crate::secret::Redactor;
use crate::sign;
use crate::transport::{self, Transport, header};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, Scheme};
use std::fmt;
use std::time::{Duration, Instant};
use url::Url;

/// The longest error text kept from an answer (per field): enough for any real message, and
/// a bound on what one answer can put into a log line or `last_error`.
const MAX_ERROR_CHARS: usize = 512;

/// What kind of failure, because each is handled differently: a poller slows every request on
/// [`Throttled`](ErrorKind::Throttled), stops on [`Unauthorized`](ErrorKind::Unauthorized),
/// and backs one job off on [`NotFound`](ErrorKind::NotFound).
///
/// [`as_str`](ErrorKind::as_str) is a stable name for logs and metric labels;
/// [`hint`](ErrorKind::hint) says what to check.
///
/// ```
/// use recwatch_rtc::client::{ErrorKind, classify};
///
/// // The RTC service says the job does not exist ...
/// assert_eq!(classify(404, Some("RTC.00001003")), ErrorKind::NotFound);
/// // ... but a gateway's 404 means the request never reached it.
/// assert_eq!(classify(404, Some("APIG.0101")), ErrorKind::EndpointNotFound);
/// assert_eq!(classify(429, None), ErrorKind::Throttled);
/// assert_eq!(ErrorKind::Throttled.as_str(), "throttled");
/// assert_eq!(ErrorKind::EndpointNotFound.hint(), "check api.endpoint");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// RTC.00001003 (or a 404 with another RTC code): the RTC service says the app or job
    /// does not exist.
    NotFound,
    /// A 404 that is not the RTC service's (APIG.0101 "The API does not exist", another code,
    /// none): the endpoint is wrong, not the job.
    EndpointNotFound,
    /// A 3xx: recwatch never follows one (see [`RtcClient::new`]); an endpoint that redirects
    /// is the wrong endpoint (or a login page in the way).
    Redirect,
    /// 401/403, RTC.00001001, APIG.03xx: the gateway refused the credentials.
    Unauthorized,
    /// 429 / APIG.0308.
    Throttled,
    /// 5xx.
    Server,
    /// Any other 4xx (a malformed request, a deactivated app ...).
    Rejected,
    /// A 2xx whose body is not a job record, or a body cut short.
    BadResponse,
    /// A 2xx about another job (its job_id or app_id is not the one asked for).
    WrongJob,
    /// A 2xx without a `state`: an error body sent with 200, `{}`. See [`read_ok_body`].
    NoState,
    /// No answer within `api.timeout`.
    Timeout,
    /// The connection could not be made or broke before an answer.
    Connection,
    /// No usable keys to sign with: temporary credentials expired and their source (the ECS
    /// metadata service) did not renew them. Nothing was sent, so it is neither a refusal
    /// (no step toward the gateway's lock of the key, no `auth_backoff` pause: the next
    /// renewal may come at any moment) nor one job's failure: every request of the account
    /// fails so, which makes the API unhealthy.
    CredentialsUnavailable,
}

impl ErrorKind {
    /// A stable snake_case name, for logs, stored errors and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::EndpointNotFound => "endpoint_not_found",
            ErrorKind::Redirect => "redirect",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Throttled => "throttled",
            ErrorKind::Server => "server_error",
            ErrorKind::Rejected => "rejected",
            ErrorKind::BadResponse => "bad_response",
            ErrorKind::WrongJob => "wrong_job",
            ErrorKind::NoState => "no_state",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Connection => "connection",
            ErrorKind::CredentialsUnavailable => "credentials_unavailable",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "job or app not found",
            ErrorKind::EndpointNotFound => "no such API at this endpoint",
            ErrorKind::Redirect => "redirected",
            ErrorKind::Unauthorized => "credentials refused",
            ErrorKind::Throttled => "throttled by the API gateway",
            ErrorKind::Server => "RTC server error",
            ErrorKind::Rejected => "request rejected",
            ErrorKind::BadResponse => "unreadable response",
            ErrorKind::WrongJob => "answer about another job",
            ErrorKind::NoState => "answer without a job state",
            ErrorKind::Timeout => "timed out",
            ErrorKind::Connection => "connection failed",
            ErrorKind::CredentialsUnavailable => "no usable credentials",
        }
    }

    /// What to check when this failure is the API's, not one job's. The hints name the
    /// `api.*` keys of recwatch's configuration, where the endpoint and credentials come from.
    pub fn hint(self) -> &'static str {
        match self {
            ErrorKind::EndpointNotFound | ErrorKind::Redirect => "check api.endpoint",
            ErrorKind::Unauthorized => "check api.auth and api.project_id",
            ErrorKind::Rejected => "check api.endpoint, api.project_id and the watched ids",
            ErrorKind::Timeout | ErrorKind::Connection => "check the network and api.endpoint",
            ErrorKind::BadResponse | ErrorKind::WrongJob | ErrorKind::NoState => {
                "check api.endpoint (is a proxy answering instead of the RTC API?)"
            }
            ErrorKind::Server => "the RTC service is failing; see its status page",
            ErrorKind::Throttled => "another client may share the account's rate limit",
            ErrorKind::NotFound => "check the watched app_id and job_id",
            ErrorKind::CredentialsUnavailable => {
                "check api.auth's credential source (the ECS metadata service: is the instance's agency set?)"
            }
        }
    }
}

/// A failed poll, with everything the operator needs to take it up with the provider.
///
/// `Display` reads as one line: what happened, the status, the API's code and message, and
/// the request id to quote; [`cause`](RtcError::cause) adds what to check.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct RtcError {
    pub kind: ErrorKind,
    /// The HTTP status, when an answer came.
    pub status: Option<u16>,
    /// The API's `error_code` (`RTC.00001003`, `APIG.0308` ...), secrets redacted.
    pub error_code: Option<String>,
    /// The API's `error_msg`, secrets redacted and cut to a bounded length.
    pub error_msg: Option<String>,
    /// The `X-Request-Id` answer header: what the provider's support asks for.
    pub request_id: Option<String>,
    /// Extra detail for transport and parse failures, and where a redirect points.
    pub detail: Option<String>,
    /// For a refusal: minutes this machine's clock is ahead of (positive) or behind the API's
    /// `Date` header, when that is more than the 15 minutes the gateway tolerates in
    /// `X-Sdk-Date`. A skewed clock is refused like a bad key; this says which it is.
    pub clock_skew_minutes: Option<i64>,
    /// The request certainly never left this machine: the connection could not be made (or a
    /// header could not be written). What a failed create proves hangs on it
    /// ([`create_failure`](crate::jobs::create_failure)).
    pub not_sent: bool,
}

impl fmt::Display for RtcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.describe())?;
        if let Some(s) = self.status {
            write!(f, ": HTTP {s}")?;
        }
        if let Some(c) = &self.error_code {
            write!(f, " {c}")?;
        }
        if let Some(m) = &self.error_msg {
            write!(f, " {m:?}")?;
        }
        if let Some(d) = &self.detail {
            write!(f, " ({d})")?;
        }
        if let Some(r) = &self.request_id {
            write!(f, " [request id {r}]")?;
        }
        if let Some(m) = self.clock_skew_minutes {
            write!(f, "; {}", clock_message(m))?;
        }
        Ok(())
    }
}

/// What to tell the operator about a clock `minutes` off the API's (see
/// [`RtcError::clock_skew_minutes`]).
pub fn clock_message(minutes: i64) -> String {
    format!(
        "the system clock is {} minutes off the API's Date header ({} it): fix the system clock (NTP); the gateway refuses X-Sdk-Date more than 15 minutes off",
        minutes.unsigned_abs(),
        if minutes > 0 { "ahead of" } else { "behind" }
    )
}

/// The gateway's tolerance for `X-Sdk-Date`.
const MAX_SKEW: chrono::TimeDelta = chrono::TimeDelta::minutes(15);

/// Minutes `now` is off an HTTP `Date` header value, when more than the 15 minutes the gateway
/// tolerates; `None` when within it, absent or unreadable. Pure: the clock is an argument.
pub fn clock_skew(date: Option<&str>, now: chrono::DateTime<chrono::Utc>) -> Option<i64> {
    let date = chrono::DateTime::parse_from_rfc2822(date?.trim()).ok()?;
    let off = now.signed_duration_since(date);
    // Rounded: the header has whole seconds, so an hour off reads as 59:59.x.
    (off.abs() > MAX_SKEW).then(|| (off.num_milliseconds() as f64 / 60_000.0).round() as i64)
}

impl RtcError {
    pub(crate) fn transport(kind: ErrorKind, detail: String) -> RtcError {
        RtcError {
            kind,
            status: None,
            error_code: None,
            error_msg: None,
            request_id: None,
            detail: Some(detail),
            clock_skew_minutes: None,
            not_sent: false,
        }
    }

    /// What the API said about this failure, with the request id, and what to check: the
    /// reason an `api_unhealthy` alert gives.
    pub fn cause(&self) -> String {
        match self.clock_skew_minutes {
            // The clock is the fix, not the credentials.
            Some(_) => self.to_string(),
            None => format!("{self}; {}", self.kind.hint()),
        }
    }
}

/// Decides the kind of a non-2xx answer from its status and error code. Pure, so the whole
/// table is tested without a server.
pub fn classify(status: u16, error_code: Option<&str>) -> ErrorKind {
    let code = error_code.unwrap_or("").trim();
    // Some gateways spell their prefix APIGW.
    let code = match code.strip_prefix("APIGW.") {
        Some(rest) => std::borrow::Cow::Owned(format!("APIG.{rest}")),
        None => std::borrow::Cow::Borrowed(code),
    };
    let code = code.as_ref();
    if status == 429 || code == "APIG.0308" {
        ErrorKind::Throttled
    } else if code == "RTC.00001003" || (status == 404 && code.starts_with("RTC.")) {
        ErrorKind::NotFound
    } else if status == 404 {
        // Only the RTC service can say a job does not exist; the gateway's 404 (APIG.0101) or
        // a bare one means the request never reached it.
        ErrorKind::EndpointNotFound
    } else if (300..400).contains(&status) {
        ErrorKind::Redirect
    } else if status == 401
        || status == 403
        || code == "RTC.00001001"
        || (code.starts_with("APIG.03") && (400..500).contains(&status))
    {
        ErrorKind::Unauthorized
    } else if status >= 500 {
        ErrorKind::Server
    } else {
        ErrorKind::Rejected
    }
}

/// A successful poll.
#[derive(Clone, Debug)]
pub struct Fetched {
    /// The job record, checked to be about the job asked for and to carry a state.
    pub job: JobSnapshot,
    /// The body as the API sent it (secrets redacted), kept with each transition.
    pub raw: String,
    /// The `X-Request-Id` answer header.
    pub request_id: Option<String>,
    /// From sending the request to the answer's headers (the body read included).
    pub latency: Duration,
    /// Top-level fields of the record whose value could not be read and were left out (see
    /// [`crate::model::parse_job_fields`]); empty for a record that parsed whole.
    pub unread: Vec<String>,
}

/// The client for `GET /v2/apps/{app_id}/individual-stream-jobs/{job_id}`.
///
/// Cheap to clone (the connection pool is shared) and safe to use from many tasks at once.
/// It never retries and never follows a redirect: what to do about a failure is the caller's
/// decision, made from the [`ErrorKind`].
#[derive(Clone)]
pub struct RtcClient {
    http: Transport,
    endpoint: Url,
    /// The endpoint's scheme and authority, parsed once: every request's URI is made of them
    /// and its path.
    scheme: Scheme,
    authority: Authority,
    /// The Host header, as signed and as sent.
    host: String,
    /// Asked for the keys per request: a renewal changes them without a new client. The
    /// keys' secrets are removed from every answer's text (see [`RtcClient::get_job`]).
    credentials: Credentials,
    project_id: Option<String>,
}

/// What [`RtcClient::new`] needs: where the API is, who is asking, and how long to wait.
///
/// `Debug` is safe to log: the credentials' secrets print as `***`.
///
/// ```
/// use recwatch_rtc::{Auth, ClientConfig, Secret};
/// use std::time::Duration;
///
/// let mut config = ClientConfig::new(
///     "https://rtc-api.myhuaweicloud.com".parse().unwrap(),
///     Auth::AkSk {
///         access_key: "HPUAEXAMPLEAK0000001".into(),
///         secret_key: Secret::new("the secret key"),
///         security_token: None,
///     },
/// );
/// // The API documents X-Project-Id as mandatory with AK/SK.
/// config.project_id = Some("0a1b2c3d4e5f67890a1b2c3d4e5f6789".into());
/// config.timeout = Duration::from_secs(5);
/// assert!(!format!("{config:?}").contains("the secret key"));
/// ```
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The regional endpoint, e.g. `https://rtc-api.myhuaweicloud.com`; a path on it is kept
    /// as a prefix of every request (a proxy's) and left out of the signature (see
    /// [`RtcClient::gateway_path`]).
    pub endpoint: Url,
    /// Sent as `X-Project-Id` when set (IAM projects other than the region's default).
    pub project_id: Option<String>,
    /// Where the keys come from; the client asks it per request.
    pub auth: Credentials,
    /// For the whole request, answer included; connecting gets at most 10 s of it.
    pub timeout: Duration,
    /// Idle connections kept for reuse: the number of requests in flight at once.
    pub max_connections: usize,
}

impl ClientConfig {
    /// No project id, a 10 s timeout, 4 connections. `auth` is an [`Auth`]
    /// (static keys) or any [`Credentials`].
    pub fn new(endpoint: Url, auth: impl Into<Credentials>) -> ClientConfig {
        ClientConfig {
            endpoint,
            project_id: None,
            auth: auth.into(),
            timeout: Duration::from_secs(10),
            max_connections: 4,
        }
    }
}

/// The `User-Agent` the client sends (and signs).
pub const USER_AGENT: &str = concat!("recwatch/", env!("CARGO_PKG_VERSION"));

impl RtcClient {
    /// Builds the client: its connection pool, and the `Host` header it signs. Sends nothing.
    ///
    /// Fails when the endpoint has no host or the TLS backend cannot start.
    ///
    /// ```
    /// use recwatch_rtc::{Auth, ClientConfig, RtcClient, Secret};
    ///
    /// let config = ClientConfig::new(
    ///     "http://127.0.0.1:8080/proxy".parse().unwrap(),
    ///     Auth::Token { token: Secret::new("an IAM token") },
    /// );
    /// let client = RtcClient::new(&config).unwrap();
    /// assert_eq!(
    ///     client.job_path("app", "job/1"),
    ///     "/proxy/v2/apps/app/individual-stream-jobs/job%2F1"
    /// );
    /// ```
    pub fn new(api: &ClientConfig) -> anyhow::Result<RtcClient> {
        let host = match (api.endpoint.host_str(), api.endpoint.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => anyhow::bail!("api.endpoint has no host"),
        };
        let scheme: Scheme = api.endpoint.scheme().parse()?;
        let authority: Authority = host.parse()?;
        let origin = http::Uri::builder()
            .scheme(scheme.clone())
            .authority(authority.clone())
            .path_and_query("/")
            .build()?;
        let http = Transport::new(&origin, api.timeout, api.max_connections)?;
        Ok(RtcClient {
            http,
            endpoint: api.endpoint.clone(),
            scheme,
            authority,
            host,
            credentials: api.auth.clone(),
            project_id: api.project_id.clone(),
        })
    }

    /// The request path for a job, each id percent-encoded as a whole segment, under any base
    /// path the endpoint has (a proxy prefix).
    pub fn job_path(&self, app_id: &str, job_id: &str) -> String {
        self.job_path_of(Kind::Individual, app_id, job_id)
    }

    /// The endpoint's own path (a proxy's prefix), without a trailing `/`: every API path
    /// goes under it.
    pub(crate) fn base_path(&self) -> &str {
        self.endpoint.path().trim_end_matches('/')
    }

    /// The path the gateway sees and checks the signature over: `path` without the
    /// endpoint's own path. A proxy at `https://proxy.example/rtc` strips its prefix before it
    /// hands the request on, and the official SDK signs only the API's path (it ignores an
    /// endpoint's path entirely); a signature over the prefixed path would fail at the gateway,
    /// and every failure counts toward the 5-minute lock of the key.
    ///
    /// ```
    /// use recwatch_rtc::{Auth, ClientConfig, RtcClient, Secret};
    ///
    /// let config = ClientConfig::new(
    ///     "https://proxy.example/rtc/".parse().unwrap(),
    ///     Auth::Token { token: Secret::new("t") },
    /// );
    /// let client = RtcClient::new(&config).unwrap();
    /// let sent = client.job_path("app", "job");
    /// assert_eq!(sent, "/rtc/v2/apps/app/individual-stream-jobs/job");
    /// assert_eq!(client.gateway_path(&sent), "/v2/apps/app/individual-stream-jobs/job");
    /// ```
    pub fn gateway_path<'a>(&self, path: &'a str) -> &'a str {
        path.strip_prefix(self.base_path())
            .filter(|rest| rest.starts_with('/'))
            .unwrap_or(path)
    }

    /// The headers for one GET, signed when the credentials are AK/SK. Pure apart from the
    /// clock, which is an argument. Signed with the keys held now: temporary keys not fetched
    /// yet leave the request unsigned (requests themselves go through `send`, which asks).
    pub fn headers(
        &self,
        path: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Vec<(&'static str, String)> {
        self.headers_for("GET", path, b"", now)
    }

    /// The headers for one request with `method` and `body` (empty for none), signed over the
    /// body's SHA-256 when the credentials are AK/SK, as the SDK signs a create or an update.
    /// Pure apart from the clock, which is an argument; signed with the keys held now, as
    /// [`headers`](Self::headers).
    pub fn headers_for(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        now: chrono::DateTime<chrono::Utc>,
    ) -> Vec<(&'static str, String)> {
        match self.credentials.held() {
            Some(keys) => self.headers_with(&keys, method, path, body, now),
            None => self.unsigned_headers(),
        }
    }

    fn unsigned_headers(&self) -> Vec<(&'static str, String)> {
        vec![
            ("Accept", "application/json".into()),
            ("Content-Type", "application/json".into()),
            ("Host", self.host.clone()),
            ("User-Agent", USER_AGENT.into()),
        ]
    }

    /// The headers for one request signed with `keys` (see [`headers_for`](Self::headers_for)):
    /// `X-Security-Token` is added, and signed, when the keys are temporary.
    pub fn headers_with(
        &self,
        keys: &Signing,
        method: &str,
        path: &str,
        body: &[u8],
        now: chrono::DateTime<chrono::Utc>,
    ) -> Vec<(&'static str, String)> {
        let mut headers = self.unsigned_headers();
        match keys.auth() {
            Auth::Token { token } => headers.push(("X-Auth-Token", token.expose().to_string())),
            Auth::AkSk {
                access_key,
                secret_key,
                security_token,
            } => {
                let made;
                let key = match keys.signing_key() {
                    Some(key) => key,
                    None => {
                        made = sign::SigningKey::new(secret_key.expose().as_bytes());
                        &made
                    }
                };
                headers.push((sign::DATE_HEADER, sign::sdk_date(now)));
                if let Some(p) = &self.project_id {
                    headers.push(("X-Project-Id", p.clone()));
                }
                if let Some(t) = security_token {
                    headers.push(("X-Security-Token", t.expose().to_string()));
                }
                let pairs: Vec<(&str, &str)> =
                    headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
                let signed = sign::sign_with(access_key, key, method, path, &[], &pairs, body);
                headers.push(("Authorization", signed.authorization));
            }
        }
        headers
    }

    /// Polls one job. This is where the API's text enters recwatch: an answer that echoes
    /// `X-Auth-Token` or `X-Security-Token` in `error_msg` or `description` is redacted here,
    /// before anything logs or stores it, and error text is cut to a bounded length.
    ///
    /// A 200 is only `Ok` when it is this job's record with a state; every other answer (and
    /// no answer) is an [`RtcError`] whose [`kind`](RtcError::kind) says what to do.
    ///
    /// ```no_run
    /// # async fn poll() -> anyhow::Result<()> {
    /// use recwatch_rtc::{Auth, ClientConfig, ErrorKind, RtcClient, Secret, State};
    ///
    /// let client = RtcClient::new(&ClientConfig::new(
    ///     "https://rtc-api.myhuaweicloud.com".parse()?,
    ///     Auth::Token { token: Secret::new("an IAM token") },
    /// ))?;
    /// match client.get_job("5fcdf56512345676f835d0d4", "608196a2fa1234567515147f32ef463b").await {
    ///     Ok(fetched) if fetched.job.state == Some(State::Stopped) => {
    ///         println!("stopped: {:?}", fetched.job.stop_reason);
    ///     }
    ///     Ok(fetched) => println!("{:?}", fetched.job.state),
    ///     Err(e) if e.kind == ErrorKind::Throttled => { /* wait 2-5 s, as the provider advises */ }
    ///     Err(e) => eprintln!("{}", e.cause()),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get_job(&self, app_id: &str, job_id: &str) -> Result<Fetched, RtcError> {
        self.get_job_of(Kind::Individual, app_id, job_id).await
    }

    /// Polls one job of `kind` on its path (`.../individual-stream-jobs/{job_id}` or
    /// `.../mix-stream-jobs/{job_id}`), read and checked exactly as [`get_job`](Self::get_job)
    /// reads an individual job: the two kinds share states, stop reasons and errors.
    pub async fn get_job_of(
        &self,
        kind: Kind,
        app_id: &str,
        job_id: &str,
    ) -> Result<Fetched, RtcError> {
        let fetched = self.fetch_job(kind, app_id, job_id).await;
        // The keys held after the request: the ones it was signed with and their predecessor.
        let held = self.credentials.held();
        let r = redactor_of(held.as_deref());
        match fetched {
            Ok(mut f) => {
                f.raw = r.redact(&f.raw);
                f.job.description = f.job.description.map(|d| r.redact(&d));
                f.request_id = f.request_id.map(|id| r.clean(&id, MAX_ERROR_CHARS));
                Ok(f)
            }
            Err(e) => Err(self.clean_error(e)),
        }
    }

    /// The error with every configured secret removed from the text that came from outside,
    /// each field cut to a bounded length.
    pub(crate) fn clean_error(&self, mut e: RtcError) -> RtcError {
        let held = self.credentials.held();
        let r = redactor_of(held.as_deref());
        let clean = |t: Option<String>| t.map(|t| r.clean(&t, MAX_ERROR_CHARS));
        e.error_code = clean(e.error_code);
        e.error_msg = clean(e.error_msg);
        e.detail = clean(e.detail);
        e.request_id = clean(e.request_id);
        e
    }

    /// Removes every configured secret from text that came from outside.
    pub(crate) fn redact(&self, text: &str) -> String {
        let held = self.credentials.held();
        redactor_of(held.as_deref()).redact(text)
    }

    async fn fetch_job(&self, kind: Kind, app_id: &str, job_id: &str) -> Result<Fetched, RtcError> {
        let path = self.job_path_of(kind, app_id, job_id);
        let answer = self.send(http::Method::GET, &path, None).await?;
        if !answer.is_success() {
            return Err(answer.into_error());
        }
        let (job, unread) = read_ok_body(app_id, job_id, &answer.body).map_err(|bad| RtcError {
            kind: bad.kind,
            status: Some(answer.status),
            error_code: bad.error.error_code,
            error_msg: bad.error.error_msg,
            request_id: answer.request_id.clone(),
            detail: Some(bad.detail),
            clock_skew_minutes: None,
            not_sent: false,
        })?;
        Ok(Fetched {
            job,
            // Valid UTF-8 (every answer the API sends) is kept as it came, without a copy.
            raw: String::from_utf8(answer.body)
                .unwrap_or_else(|bad| String::from_utf8_lossy(bad.as_bytes()).into_owned()),
            request_id: answer.request_id,
            latency: answer.latency,
            unread,
        })
    }

    /// The one way every request goes out: `method` on `path` (under the endpoint, ids
    /// already encoded), with `body` when there is one, signed over exactly what is sent.
    /// Any answer that arrives whole is `Ok`, whatever its status: reading it is the caller's
    /// part ([`Answer::into_error`] for a refusal). Only a transport failure, a header HTTP
    /// cannot carry or a body too large or cut short is an error here.
    pub(crate) async fn send(
        &self,
        method: http::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, RtcError> {
        let uri = self.uri(path)?;
        // Before the request is made: temporary keys due for renewal are renewed here.
        let keys = self.credentials.current().await?;
        let mut map = HeaderMap::with_capacity(16);
        let signed_body = body.as_deref().unwrap_or_default();
        for (name, value) in self.headers_with(
            &keys,
            method.as_str(),
            self.gateway_path(path),
            signed_body,
            chrono::Utc::now(),
        ) {
            let value = HeaderValue::from_str(&value).map_err(|_| RtcError {
                not_sent: true,
                ..RtcError::transport(
                    ErrorKind::Rejected,
                    format!("header {name} has a character HTTP cannot carry"),
                )
            })?;
            map.insert(HeaderName::from_static(lower(name)), value);
        }
        let started = Instant::now();
        let raw = self.http.send(method, uri, map, body).await?;
        Ok(Answer {
            status: raw.status,
            request_id: transport::request_id(&raw.headers),
            location: header(&raw.headers, "location"),
            date: header(&raw.headers, "date"),
            body: raw.body,
            latency: started.elapsed(),
        })
    }

    /// The request's URI: the endpoint's scheme and authority, `path` (ids already encoded)
    /// and the endpoint's query if it has one.
    fn uri(&self, path: &str) -> Result<http::Uri, RtcError> {
        let path_and_query = match self.endpoint.query() {
            Some(q) => format!("{path}?{q}"),
            None => path.to_string(),
        };
        http::Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
            .map_err(|e| RtcError {
                not_sent: true,
                ..RtcError::transport(ErrorKind::Rejected, format!("path {path:?}: {e}"))
            })
    }
}

/// The redactor of the keys held (nothing to redact before any were fetched).
fn redactor_of(keys: Option<&Signing>) -> &Redactor {
    static NONE: std::sync::LazyLock<Redactor> = std::sync::LazyLock::new(Redactor::default);
    match keys {
        Some(keys) => keys.redactor(),
        None => &NONE,
    }
}

/// One answer, read whole but not yet interpreted (see [`RtcClient::send`]).
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
    /// The `X-Request-Id` answer header.
    pub(crate) request_id: Option<String>,
    location: Option<String>,
    date: Option<String>,
    /// From sending the request to the whole body.
    pub(crate) latency: Duration,
}

impl Answer {
    pub(crate) fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// A non-2xx answer as the typed error: its kind from the status and the API's code,
    /// where a redirect points, and how far off the clock is when credentials were refused.
    pub(crate) fn into_error(self) -> RtcError {
        // A non-JSON error body leaves the status as the only code, as the SDK does.
        let mut err = parse_error_body(&self.body);
        let kind = classify(self.status, err.error_code.as_deref());
        if kind == ErrorKind::Redirect && err.error_code.is_none() {
            // A redirect's page ("Moved", a login form) says less than its Location.
            err.error_msg = None;
        }
        let detail = match kind {
            ErrorKind::Redirect => Some(match self.location {
                Some(to) => format!("to {}", cap(&to, 200)),
                None => "with no Location".to_string(),
            }),
            _ => None,
        };
        let clock_skew_minutes = match kind {
            ErrorKind::Unauthorized => clock_skew(self.date.as_deref(), chrono::Utc::now()),
            _ => None,
        };
        RtcError {
            kind,
            status: Some(self.status),
            error_code: err.error_code,
            error_msg: err.error_msg,
            request_id: self.request_id,
            detail,
            clock_skew_minutes,
            not_sent: false,
        }
    }
}

/// Header names we send, as the static lower-case names `HeaderName::from_static` wants.
fn lower(name: &'static str) -> &'static str {
    match name {
        "Accept" => "accept",
        "Content-Type" => "content-type",
        "Host" => "host",
        "User-Agent" => "user-agent",
        "X-Auth-Token" => "x-auth-token",
        "X-Sdk-Date" => "x-sdk-date",
        "X-Project-Id" => "x-project-id",
        "X-Security-Token" => "x-security-token",
        "Authorization" => "authorization",
        other => unreachable!("header {other} is not one recwatch sends"),
    }
}

/// `Some(what the answer is about)` when a 200 names another job than the one asked for. An
/// answer without ids cannot be checked and is taken, as the SDK would.
pub fn about_another_job(app_id: &str, job_id: &str, job: &JobSnapshot) -> Option<String> {
    let job_differs = job.job_id.as_deref().is_some_and(|j| !same_id(job_id, j));
    let app_differs = job.app_id.as_deref().is_some_and(|a| !same_id(app_id, a));
    (job_differs || app_differs).then(|| {
        format!(
            "asked for app {:?} job {:?}, the answer is about app {:?} job {:?}",
            app_id,
            job_id,
            cap(job.app_id.as_deref().unwrap_or("-"), 80),
            cap(job.job_id.as_deref().unwrap_or("-"), 80)
        )
    })
}

/// Why a 2xx body is not the job's record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadOkBody {
    pub kind: ErrorKind,
    pub detail: String,
    /// An error code and message the body carries despite its status, kept for the operator.
    pub error: ErrorBody,
}

/// Reads a 2xx answer to "show job `job_id` of app `app_id`": the job's record, or why it is
/// not one. Pure, so the rules are tested with a table.
///
/// Not a record: a body that is not JSON (`bad_response`); one about another job
/// (`wrong_job`); one without a `state` (`no_state`), such as an error body sent with 200
/// (`{"error_code": "RTC.00002001", ...}`) or `{}`. The official SDK would not raise over the
/// last (it raises only for a status of 400 or more and leaves absent fields None), but it
/// reads no state from it either: the answer says nothing about the job. Taken as a record it
/// would count as the API answering (resolving `api_unhealthy`) and clear the job's last
/// error; as a failed poll of its own kind it counts toward the API's health like other bad
/// answers, makes no transition, and the job keeps being polled. A blank state
/// (whitespace or control characters only) is no state either. Every other field stays as
/// lenient as the SDK: only the state is required, and a field whose value cannot be read
/// (a number out of range) is left out and named in the second part of the answer.
pub fn read_ok_body(
    app_id: &str,
    job_id: &str,
    body: &[u8],
) -> Result<(JobSnapshot, Vec<String>), BadOkBody> {
    let (job, unread) = parse_job_fields(body).map_err(|e| BadOkBody {
        kind: ErrorKind::BadResponse,
        detail: format!(
            "body is not a job record: {e}; starts with {:?}",
            snippet(body)
        ),
        error: ErrorBody::default(),
    })?;
    if let Some(other) = about_another_job(app_id, job_id, &job) {
        return Err(BadOkBody {
            kind: ErrorKind::WrongJob,
            detail: other,
            error: ErrorBody::default(),
        });
    }
    let blank = |s: &State| super::model::enum_key(s.as_str()).is_empty();
    if job.state.as_ref().is_none_or(blank) {
        return Err(BadOkBody {
            kind: ErrorKind::NoState,
            detail: format!(
                "a 200 answer without the job's state; starts with {:?}",
                snippet(body)
            ),
            error: parse_error_body(body),
        });
    }
    Ok((job, unread))
}

/// At most `n` characters of outside text.
fn cap(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

fn snippet(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(60)]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    #[test]
    fn classification_table() {
        let cases = [
            ("404 RTC", 404, Some("RTC.00001003"), ErrorKind::NotFound),
            (
                "404 with another RTC code",
                404,
                Some("RTC.00001005"),
                ErrorKind::NotFound,
            ),
            ("bare 404", 404, None, ErrorKind::EndpointNotFound),
            (
                "gateway 404",
                404,
                Some("APIG.0101"),
                ErrorKind::EndpointNotFound,
            ),
            (
                "gateway 404, APIGW spelling",
                404,
                Some("APIGW.0101"),
                ErrorKind::EndpointNotFound,
            ),
            (
                "404 with a foreign code",
                404,
                Some("NoSuchKey"),
                ErrorKind::EndpointNotFound,
            ),
            ("302", 302, None, ErrorKind::Redirect),
            ("307 with a code", 307, Some("X"), ErrorKind::Redirect),
            (
                "APIGW refusal",
                401,
                Some("APIGW.0301"),
                ErrorKind::Unauthorized,
            ),
            (
                "APIGW throttle",
                403,
                Some("APIGW.0308"),
                ErrorKind::Throttled,
            ),
            ("405 from a proxy", 405, None, ErrorKind::Rejected),
            (
                "404 code on 400",
                400,
                Some("RTC.00001003"),
                ErrorKind::NotFound,
            ),
            (
                "bad aksk",
                400,
                Some("RTC.00001001"),
                ErrorKind::Unauthorized,
            ),
            (
                "gateway 401",
                401,
                Some("APIG.0301"),
                ErrorKind::Unauthorized,
            ),
            ("gateway 403", 403, None, ErrorKind::Unauthorized),
            (
                "gateway locked",
                400,
                Some("APIG.0302"),
                ErrorKind::Unauthorized,
            ),
            ("throttled", 429, Some("APIG.0308"), ErrorKind::Throttled),
            (
                "throttle code on 403",
                403,
                Some("APIG.0308"),
                ErrorKind::Throttled,
            ),
            ("throttled no body", 429, None, ErrorKind::Throttled),
            ("server", 500, Some("RTC.00002001"), ErrorKind::Server),
            ("bad gateway", 502, None, ErrorKind::Server),
            (
                "deactivated app",
                400,
                Some("RTC.00001016"),
                ErrorKind::Rejected,
            ),
        ];
        for (name, status, code, kind) in cases {
            assert_eq!(classify(status, code), kind, "{name}");
        }
    }

    /// How a 2xx body about ("app", "job") is read: (name, body, the kind it fails as, or
    /// None when it is the job's record, and the error code kept from it).
    #[test]
    fn ok_bodies_table() {
        use ErrorKind::*;
        let cases: &[(&str, &str, Option<ErrorKind>, Option<&str>)] = &[
            (
                "a record",
                r#"{"job_id":"job","state":"RUNNING"}"#,
                None,
                None,
            ),
            ("only a state", r#"{"state":"INIT"}"#, None, None),
            (
                "an unknown state is still a state",
                r#"{"state":"PAUSED"}"#,
                None,
                None,
            ),
            (
                "a record that also carries an error code",
                r#"{"state":"STOPPED","error_code":"RTC.00002001"}"#,
                None,
                None,
            ),
            ("empty object", "{}", Some(NoState), None),
            (
                "an error body sent with 200",
                r#"{"error_code":"RTC.00002001","error_msg":"internal error"}"#,
                Some(NoState),
                Some("RTC.00002001"),
            ),
            (
                "an error body in another spelling",
                r#"{"errorCode":"APIG.0101","errorMsg":"The API does not exist"}"#,
                Some(NoState),
                Some("APIG.0101"),
            ),
            (
                "a nested error body",
                r#"{"error":{"code":"RTC.00002001","message":"x"}}"#,
                Some(NoState),
                Some("RTC.00002001"),
            ),
            (
                "a record without a state",
                r#"{"job_id":"job","app_id":"app","description":"x"}"#,
                Some(NoState),
                None,
            ),
            ("a null state", r#"{"state":null}"#, Some(NoState), None),
            (
                "a blank state",
                "{\"state\":\" \\u0000\"}",
                Some(NoState),
                None,
            ),
            (
                "about another job, without a state",
                r#"{"job_id":"other"}"#,
                Some(WrongJob),
                None,
            ),
            ("not JSON", "<html>oops</html>", Some(BadResponse), None),
            ("an array", "[]", Some(BadResponse), None),
        ];
        for (name, body, kind, code) in cases {
            match (read_ok_body("app", "job", body.as_bytes()), kind) {
                (Ok((job, _)), None) => assert!(job.state.is_some(), "{name}"),
                (Ok((job, _)), Some(k)) => panic!("{name}: read as a record {job:?}, not {k:?}"),
                (Err(bad), None) => panic!("{name}: refused: {bad:?}"),
                (Err(bad), Some(k)) => {
                    assert_eq!(bad.kind, *k, "{name}: {bad:?}");
                    assert_eq!(bad.error.error_code.as_deref(), *code, "{name}");
                }
            }
        }
    }

    fn client(endpoint: &str, auth: Auth, project: Option<&str>) -> RtcClient {
        let mut c = ClientConfig::new(Url::parse(endpoint).unwrap(), auth);
        c.project_id = project.map(str::to_string);
        RtcClient::new(&c).unwrap()
    }

    fn aksk() -> Auth {
        Auth::AkSk {
            access_key: "AK".into(),
            secret_key: Secret::new("SK"),
            security_token: None,
        }
    }

    #[test]
    fn host_header_carries_the_port_only_when_the_endpoint_has_one() {
        let cases = [
            (
                "https://rtc-api.myhuaweicloud.com",
                "rtc-api.myhuaweicloud.com",
            ),
            (
                "https://rtc-api.myhuaweicloud.com:443",
                "rtc-api.myhuaweicloud.com",
            ),
            ("http://127.0.0.1:8086", "127.0.0.1:8086"),
            ("https://proxy.example:8443/rtc/", "proxy.example:8443"),
        ];
        for (endpoint, host) in cases {
            let c = client(endpoint, aksk(), None);
            let headers = c.headers("/x", chrono::Utc::now());
            assert!(
                headers.contains(&("Host", host.to_string())),
                "{endpoint}: {headers:?}"
            );
        }
    }

    #[test]
    fn signs_every_header_it_sends() {
        let c = client("http://127.0.0.1:8086", aksk(), Some("proj"));
        let path = c.job_path("app", "job");
        let headers = c.headers(&path, chrono::Utc::now());
        let auth = &headers
            .iter()
            .find(|(k, _)| *k == "Authorization")
            .unwrap()
            .1;
        let parsed = sign::parse_authorization(auth).unwrap();
        let mut sent: Vec<String> = headers
            .iter()
            .filter(|(k, _)| *k != "Authorization")
            .map(|(k, _)| k.to_ascii_lowercase())
            .collect();
        sent.sort();
        assert_eq!(parsed.signed_headers, sent.join(";"));
        assert!(parsed.signed_headers.contains("x-project-id"));
        // And the signature verifies against what was sent.
        let pairs: Vec<(&str, &str)> = headers
            .iter()
            .filter(|(k, _)| *k != "Authorization")
            .map(|(k, v)| (*k, v.as_str()))
            .collect();
        let again = sign::sign("AK", "SK", "GET", &path, &[], &pairs, b"");
        assert_eq!(&again.authorization, auth);
    }

    #[test]
    fn token_auth_sends_the_token_and_no_signature() {
        let c = client(
            "http://127.0.0.1:1",
            Auth::Token {
                token: Secret::new("tok"),
            },
            None,
        );
        let headers = c.headers("/x", chrono::Utc::now());
        assert!(headers.contains(&("X-Auth-Token", "tok".to_string())));
        assert!(
            !headers
                .iter()
                .any(|(k, _)| *k == "Authorization" || *k == "X-Sdk-Date")
        );
    }

    #[test]
    fn ids_are_encoded_as_whole_segments_under_the_base_path() {
        let c = client("https://proxy.example/rtc/", aksk(), None);
        assert_eq!(
            c.job_path("a/b", "j d"),
            "/rtc/v2/apps/a%2Fb/individual-stream-jobs/j%20d"
        );
        let c = client("https://rtc-api.myhuaweicloud.com", aksk(), None);
        assert_eq!(
            c.job_path("app", "job"),
            "/v2/apps/app/individual-stream-jobs/job"
        );
    }

    #[test]
    fn error_display_names_code_message_and_request_id() {
        let e = RtcError {
            kind: ErrorKind::NotFound,
            status: Some(404),
            error_code: Some("RTC.00001003".into()),
            error_msg: Some("job not found".into()),
            request_id: Some("req-1".into()),
            detail: None,
            clock_skew_minutes: None,
            not_sent: false,
        };
        assert_eq!(
            e.to_string(),
            "job or app not found: HTTP 404 RTC.00001003 \"job not found\" [request id req-1]"
        );
        let redirect = RtcError {
            kind: ErrorKind::Redirect,
            status: Some(302),
            error_code: None,
            error_msg: None,
            request_id: None,
            detail: Some("to https://login.example/".into()),
            clock_skew_minutes: None,
            not_sent: false,
        };
        assert_eq!(
            redirect.cause(),
            "redirected: HTTP 302 (to https://login.example/); check api.endpoint"
        );
        let skewed = RtcError {
            kind: ErrorKind::Unauthorized,
            status: Some(401),
            error_code: Some("APIG.0301".into()),
            error_msg: None,
            request_id: None,
            detail: None,
            clock_skew_minutes: Some(-62),
            not_sent: false,
        };
        let cause = skewed.cause();
        assert!(
            cause.contains("the system clock is 62 minutes off the API's Date header (behind it)"),
            "{cause}"
        );
        assert!(!cause.contains("check api.auth"), "{cause}");
    }

    #[test]
    fn clock_skew_table() {
        let now = chrono::DateTime::parse_from_rfc3339("2025-03-01T12:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let cases = [
            ("same time", Some("Sat, 01 Mar 2025 12:00:00 GMT"), None),
            (
                "14 minutes is tolerated",
                Some("Sat, 01 Mar 2025 11:46:00 GMT"),
                None,
            ),
            (
                "local clock an hour ahead",
                Some("Sat, 01 Mar 2025 11:00:00 GMT"),
                Some(60),
            ),
            (
                "local clock a day behind",
                Some("Sun, 02 Mar 2025 12:00:00 GMT"),
                Some(-1440),
            ),
            ("no header", None, None),
            ("unreadable", Some("yesterday"), None),
        ];
        for (name, date, want) in cases {
            assert_eq!(clock_skew(date, now), want, "{name}");
        }
    }

    #[test]
    fn answers_about_another_job_table() {
        let job = |app: Option<&str>, id: Option<&str>| JobSnapshot {
            app_id: app.map(str::to_string),
            job_id: id.map(str::to_string),
            ..Default::default()
        };
        let cases = [
            ("same job", job(Some("app"), Some("j1")), false),
            ("no ids", job(None, None), false),
            ("only the job id", job(None, Some("j1")), false),
            ("another job", job(Some("app"), Some("j2")), true),
            ("another app", job(Some("app2"), Some("j1")), true),
            ("another job, no app", job(None, Some("j2")), true),
        ];
        for (name, answer, want) in cases {
            let got = about_another_job("app", "j1", &answer);
            assert_eq!(got.is_some(), want, "{name}: {got:?}");
        }
        let numeric = job(Some("5678"), Some("1234"));
        assert!(about_another_job("5678", "1234", &numeric).is_none());
        assert_eq!(
            about_another_job("app", "j1", &job(Some("app"), Some("j2"))).unwrap(),
            r#"asked for app "app" job "j1", the answer is about app "app" job "j2""#
        );
    }
}
