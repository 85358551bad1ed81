//! The HTTP client for the one endpoint recwatch polls.
//!
//! It signs exactly the headers it sends (Host included, with the port when the endpoint has
//! one), and turns every answer into either a job snapshot or an [`RtcError`] whose kind the
//! poller acts on: a throttled answer slows every poll, refused credentials stop them, and a
//! broken job backs off on its own.

use super::model::{ErrorBody, JobSnapshot};
use super::sign;
use crate::config::{ApiConfig, Auth};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use std::fmt;
use std::time::{Duration, Instant};
use url::Url;

/// Bigger answers than this are not a job record; refusing them bounds memory.
const MAX_BODY: usize = 1 << 20;

/// What kind of failure, because each is handled differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// 404 / RTC.00001003: the app or job does not exist.
    NotFound,
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
    /// No answer within `api.timeout`.
    Timeout,
    /// The connection could not be made or broke before an answer.
    Connection,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Throttled => "throttled",
            ErrorKind::Server => "server_error",
            ErrorKind::Rejected => "rejected",
            ErrorKind::BadResponse => "bad_response",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Connection => "connection",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "job or app not found",
            ErrorKind::Unauthorized => "credentials refused",
            ErrorKind::Throttled => "throttled by the API gateway",
            ErrorKind::Server => "RTC server error",
            ErrorKind::Rejected => "request rejected",
            ErrorKind::BadResponse => "unreadable response",
            ErrorKind::Timeout => "timed out",
            ErrorKind::Connection => "connection failed",
        }
    }
}

/// A failed poll, with everything the operator needs to take it up with the provider.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct RtcError {
    pub kind: ErrorKind,
    pub status: Option<u16>,
    pub error_code: Option<String>,
    pub error_msg: Option<String>,
    pub request_id: Option<String>,
    /// Extra detail for transport and parse failures.
    pub detail: Option<String>,
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
        Ok(())
    }
}

impl RtcError {
    fn transport(kind: ErrorKind, detail: String) -> RtcError {
        RtcError {
            kind,
            status: None,
            error_code: None,
            error_msg: None,
            request_id: None,
            detail: Some(detail),
        }
    }
}

/// Decides the kind of a non-2xx answer from its status and error code.
pub fn classify(status: u16, error_code: Option<&str>) -> ErrorKind {
    let code = error_code.unwrap_or("");
    if status == 429 || code == "APIG.0308" {
        ErrorKind::Throttled
    } else if status == 404 || code == "RTC.00001003" {
        ErrorKind::NotFound
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
    pub job: JobSnapshot,
    /// The body as the API sent it, kept with each transition.
    pub raw: String,
    pub request_id: Option<String>,
    pub latency: Duration,
}

#[derive(Clone)]
pub struct RtcClient {
    http: reqwest::Client,
    endpoint: Url,
    /// The Host header, as signed and as sent.
    host: String,
    auth: Auth,
    project_id: Option<String>,
}

pub const USER_AGENT: &str = concat!("recwatch/", env!("CARGO_PKG_VERSION"));

impl RtcClient {
    pub fn new(api: &ApiConfig) -> anyhow::Result<RtcClient> {
        let http = reqwest::Client::builder()
            .timeout(api.timeout)
            .connect_timeout(api.timeout.min(Duration::from_secs(10)))
            .pool_max_idle_per_host(api.max_in_flight.max(1))
            // A monitor must not wander off to wherever a proxy or attacker points it.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let host = match (api.endpoint.host_str(), api.endpoint.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => anyhow::bail!("api.endpoint has no host"),
        };
        Ok(RtcClient {
            http,
            endpoint: api.endpoint.clone(),
            host,
            auth: api.auth.clone(),
            project_id: api.project_id.clone(),
        })
    }

    /// The request path for a job, each id percent-encoded as a whole segment, under any base
    /// path the endpoint has (a proxy prefix).
    pub fn job_path(&self, app_id: &str, job_id: &str) -> String {
        format!(
            "{}/v2/apps/{}/individual-stream-jobs/{}",
            self.endpoint.path().trim_end_matches('/'),
            sign::encode(app_id),
            sign::encode(job_id)
        )
    }

    /// The headers for one request, signed when the credentials are AK/SK. Pure apart from the
    /// clock, which is an argument.
    pub fn headers(
        &self,
        path: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Vec<(&'static str, String)> {
        let mut headers: Vec<(&'static str, String)> = vec![
            ("Accept", "application/json".into()),
            ("Content-Type", "application/json".into()),
            ("Host", self.host.clone()),
            ("User-Agent", USER_AGENT.into()),
        ];
        match &self.auth {
            Auth::Token { token } => headers.push(("X-Auth-Token", token.expose().to_string())),
            Auth::AkSk {
                access_key,
                secret_key,
                security_token,
            } => {
                headers.push((sign::DATE_HEADER, now.format(sign::DATE_FORMAT).to_string()));
                if let Some(p) = &self.project_id {
                    headers.push(("X-Project-Id", p.clone()));
                }
                if let Some(t) = security_token {
                    headers.push(("X-Security-Token", t.expose().to_string()));
                }
                let pairs: Vec<(&str, &str)> =
                    headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
                let signed = sign::sign(
                    access_key,
                    secret_key.expose(),
                    "GET",
                    path,
                    &[],
                    &pairs,
                    b"",
                );
                headers.push(("Authorization", signed.authorization));
            }
        }
        headers
    }

    /// Polls one job.
    pub async fn get_job(&self, app_id: &str, job_id: &str) -> Result<Fetched, RtcError> {
        let path = self.job_path(app_id, job_id);
        let mut url = self.endpoint.clone();
        url.set_path(&path);
        let mut map = HeaderMap::new();
        for (name, value) in self.headers(&path, chrono::Utc::now()) {
            let value = HeaderValue::from_str(&value).map_err(|_| {
                RtcError::transport(
                    ErrorKind::Rejected,
                    format!("header {name} has a character HTTP cannot carry"),
                )
            })?;
            map.insert(HeaderName::from_static(lower(name)), value);
        }
        let started = Instant::now();
        let response = self
            .http
            .get(url)
            .headers(map)
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status().as_u16();
        let request_id = response
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = read_body(response).await.map_err(|mut e| {
            e.status = Some(status);
            e.request_id = request_id.clone();
            e
        })?;
        let latency = started.elapsed();
        if (200..300).contains(&status) {
            let job: JobSnapshot = serde_json::from_slice(&body).map_err(|e| RtcError {
                kind: ErrorKind::BadResponse,
                status: Some(status),
                error_code: None,
                error_msg: None,
                request_id: request_id.clone(),
                detail: Some(format!(
                    "body is not a job record: {e}; starts with {:?}",
                    snippet(&body)
                )),
            })?;
            return Ok(Fetched {
                job,
                raw: String::from_utf8_lossy(&body).into_owned(),
                request_id,
                latency,
            });
        }
        // A non-JSON error body leaves the status as the only code, as the SDK does.
        let err: ErrorBody = serde_json::from_slice(&body).unwrap_or_default();
        Err(RtcError {
            kind: classify(status, err.error_code.as_deref()),
            status: Some(status),
            error_code: err.error_code,
            error_msg: err.error_msg,
            request_id,
            detail: None,
        })
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

async fn read_body(mut response: reqwest::Response) -> Result<Vec<u8>, RtcError> {
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY {
                    return Err(RtcError::transport(
                        ErrorKind::BadResponse,
                        format!("body is larger than {MAX_BODY} bytes"),
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) if e.is_timeout() => {
                return Err(RtcError::transport(
                    ErrorKind::Timeout,
                    format!("reading the body: {}", chain(&e)),
                ));
            }
            Err(e) => {
                return Err(RtcError::transport(
                    ErrorKind::BadResponse,
                    format!("body cut short after {} bytes: {}", body.len(), chain(&e)),
                ));
            }
        }
    }
}

fn transport_error(e: reqwest::Error) -> RtcError {
    let kind = if e.is_timeout() {
        ErrorKind::Timeout
    } else {
        ErrorKind::Connection
    };
    RtcError::transport(kind, chain(&e))
}

/// The error with its causes, since reqwest's own message is often just "error sending request".
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn snippet(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(60)]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::secret::Secret;

    #[test]
    fn classification_table() {
        let cases = [
            ("404", 404, None, ErrorKind::NotFound),
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

    fn client(endpoint: &str, auth: Auth, project: Option<&str>) -> RtcClient {
        let mut c = Config::defaults(auth);
        c.api.endpoint = Url::parse(endpoint).unwrap();
        c.api.project_id = project.map(str::to_string);
        RtcClient::new(&c.api).unwrap()
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
        };
        assert_eq!(
            e.to_string(),
            "job or app not found: HTTP 404 RTC.00001003 \"job not found\" [request id req-1]"
        );
    }
}
