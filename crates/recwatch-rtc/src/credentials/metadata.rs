//! Temporary credentials from an ECS instance's metadata service, as the SDK's
//! `MetadataAccessor` gets them (`huaweicloudsdkcore/auth/internal.py`): `PUT
//! /meta-data/latest/api/token` with `X-Metadata-Token-Ttl-Seconds` for a session token (a
//! 404, 405 or 503 means the service has none: go on without), then `GET
//! /openstack/latest/securitykey` with `X-Metadata-Token`; a 401 that is not "configure an
//! agency" means the session token expired: one new token, one more try.
//!
//! Renewal rides on the requests: the request that finds the keys due (see
//! [`super::renew`]) renews them before it is signed, and signs with the old keys, still valid,
//! if the renewal fails; requests meanwhile sign with the old keys and never wait. Only when
//! no usable keys are held does a request wait, for the one renewal in flight. A failed
//! renewal is retried with back-off; expired keys that could not be renewed fail requests
//! as [`ErrorKind::CredentialsUnavailable`] without a word to the gateway.

use super::Signing;
use super::renew::{self, Step, Window};
use crate::Auth;
use crate::client::{ErrorKind, RtcError};
use crate::secret::{Secret, cap};
use crate::transport::Transport;
use chrono::{DateTime, TimeDelta, Utc};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use url::Url;

/// The SDK's address of the metadata service.
pub const DEFAULT_METADATA_URL: &str = "http://169.254.169.254";
const TOKEN_PATH: &str = "/meta-data/latest/api/token";
const SECURITY_KEY_PATH: &str = "/openstack/latest/securitykey";
const TTL_HEADER: &str = "x-metadata-token-ttl-seconds";
const TOKEN_HEADER: &str = "x-metadata-token";
/// The SDK's session token lifetime (6 h).
const TOKEN_TTL: Duration = Duration::from_secs(6 * 60 * 60);
/// A session token is asked for again this long before its TTL ends.
const TOKEN_MARGIN: TimeDelta = TimeDelta::minutes(5);
/// What a 401 says when the instance has no agency: no new session token will help.
const NO_AGENCY: &str = "Please configure Cloud Service Agency first";
/// The SDK waits 3 s to connect and 3 s to read; the metadata service is on the instance's
/// own link.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Where the metadata service is and when its credentials are renewed (`[api.auth]`'s
/// `metadata_url` and `renew_before`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetadataConfig {
    /// The service's base address; the SDK's paths are appended to its path.
    pub url: Url,
    /// Renew when less than this remains (shortened for credentials living shorter, see
    /// [`renew::window`]).
    pub renew_before: Duration,
    /// Sent as `X-Metadata-Token-Ttl-Seconds`.
    pub token_ttl: Duration,
}

impl MetadataConfig {
    /// The service at `url`, the SDK's 40 minutes and its 6-hour session tokens.
    pub fn new(url: Url) -> MetadataConfig {
        MetadataConfig {
            url,
            renew_before: renew::DEFAULT_RENEW_BEFORE,
            token_ttl: TOKEN_TTL,
        }
    }

    fn uri(&self, path: &str) -> Result<http::Uri, RtcError> {
        let base = self.url.as_str().trim_end_matches('/');
        format!("{base}{path}").parse().map_err(|e| RtcError {
            not_sent: true,
            ..RtcError::transport(
                ErrorKind::CredentialsUnavailable,
                format!("metadata_url {base}: {e}"),
            )
        })
    }
}

/// The wall clock, replaced in tests: `expires_at` is a wall-clock time.
pub(crate) type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// Keys held, with when to renew them.
type Held = (Arc<Signing>, Window);

/// The keys held and what is known about renewing them; read by every request, under a lock
/// held for no await.
#[derive(Default)]
struct State {
    held: Option<Held>,
    /// Failed renewals in a row.
    failures: u32,
    /// No renewal is tried before this (a back-off after a failure).
    retry_at: Option<DateTime<Utc>>,
    /// Why the last renewal failed, for the error of a request left without keys.
    last_error: Option<String>,
}

/// What only the renewal in flight touches: the metadata session and the HTTP client.
#[derive(Default)]
struct Session {
    token: Option<Secret>,
    /// When a session token was last asked for (whether one came or not).
    asked_at: Option<DateTime<Utc>>,
    /// Made at the first renewal, not when the configuration is read.
    http: Option<Transport>,
}

pub(crate) struct Provider {
    pub(crate) config: MetadataConfig,
    clock: Clock,
    state: Mutex<State>,
    /// One renewal in flight, however many requests find the keys due: the holder renews,
    /// the others sign with the keys still valid or wait here for the renewal's outcome.
    session: tokio::sync::Mutex<Session>,
}

/// The credential in the service's answer.
struct Fetched {
    access: String,
    secret: Secret,
    security_token: Secret,
    expires_at: DateTime<Utc>,
}

impl Provider {
    pub(crate) fn new(config: MetadataConfig, clock: Clock) -> Provider {
        Provider {
            config,
            clock,
            state: Mutex::new(State::default()),
            session: tokio::sync::Mutex::new(Session::default()),
        }
    }

    /// The keys held now, if any, whatever their age (for redaction and `describe`).
    pub(crate) fn held(&self) -> Option<Arc<Signing>> {
        let state = self.state.lock().expect("no panic under the lock");
        state.held.as_ref().map(|(s, _)| s.clone())
    }

    fn look(&self) -> (Option<Held>, Option<DateTime<Utc>>) {
        let state = self.state.lock().expect("no panic under the lock");
        (state.held.clone(), state.retry_at)
    }

    /// The keys to sign one request with, renewed first when due (see the module's text).
    pub(crate) async fn current(&self) -> Result<Arc<Signing>, RtcError> {
        let (held, retry_at) = self.look();
        let now = (self.clock)();
        match renew::step(now, held.as_ref().map(|(_, w)| *w), retry_at) {
            Step::Use => Ok(held.expect("Use has keys").0),
            Step::UseAndRenew => {
                let held = held.expect("UseAndRenew has keys").0;
                // A renewal already in flight: these keys are still valid, so do not wait.
                let Ok(mut session) = self.session.try_lock() else {
                    return Ok(held);
                };
                // It may have ended between the look and the lock.
                let (_, retry_at) = self.look();
                if self.held().is_some_and(|h| !Arc::ptr_eq(&h, &held))
                    || retry_at.is_some_and(|at| (self.clock)() < at)
                {
                    return Ok(self.held().unwrap_or(held));
                }
                Ok(self.renew(&mut session).await.unwrap_or(held))
            }
            Step::Renew => {
                let mut session = self.session.lock().await;
                // The renewal waited for may have brought keys, or failed just now.
                let (held, retry_at) = self.look();
                let now = (self.clock)();
                match renew::step(now, held.as_ref().map(|(_, w)| *w), retry_at) {
                    Step::Use | Step::UseAndRenew => Ok(held.expect("has keys").0),
                    Step::Fail => Err(self.unavailable(now)),
                    Step::Renew => match self.renew(&mut session).await {
                        Some(keys) => Ok(keys),
                        None => Err(self.unavailable((self.clock)())),
                    },
                }
            }
            Step::Fail => Err(self.unavailable(now)),
        }
    }

    /// One renewal: the new keys, or `None` with the failure recorded and the back-off set.
    async fn renew(&self, session: &mut Session) -> Option<Arc<Signing>> {
        let asked = (self.clock)();
        let outcome = self.fetch(session).await;
        let now = (self.clock)();
        let mut state = self.state.lock().expect("no panic under the lock");
        let outcome = outcome.and_then(|f| match f.expires_at > now {
            true => Ok(f),
            false => Err(format!(
                "the service gave credentials that expired at {}",
                f.expires_at.format("%Y-%m-%dT%H:%M:%SZ")
            )),
        });
        match outcome {
            Ok(f) => {
                let previous = state.held.as_ref().map(|(s, _)| s.clone());
                let window = renew::window(asked, f.expires_at, self.config.renew_before);
                let keys = Arc::new(Signing::temporary(
                    Auth::AkSk {
                        access_key: f.access,
                        secret_key: f.secret,
                        security_token: Some(f.security_token),
                    },
                    f.expires_at,
                    previous.as_deref(),
                ));
                // Still due (the service handed out the same keys again): ask later, not at
                // the next request.
                if now >= window.renew_at {
                    state.failures = state.failures.saturating_add(1);
                    state.retry_at = Some(now + renew::backoff(state.failures));
                } else {
                    state.failures = 0;
                    state.retry_at = None;
                }
                state.last_error = None;
                state.held = Some((keys.clone(), window));
                tracing::info!(
                    credentials = %keys.describe_keys(),
                    "renewed temporary credentials from the ECS metadata service"
                );
                Some(keys)
            }
            Err(e) => {
                state.failures = state.failures.saturating_add(1);
                let retry_in = renew::backoff(state.failures);
                state.retry_at = Some(now + retry_in);
                tracing::warn!(
                    url = %self.config.url,
                    failures = state.failures,
                    retry_in_s = retry_in.num_seconds(),
                    "cannot renew temporary credentials from the ECS metadata service: {e}"
                );
                state.last_error = Some(e);
                None
            }
        }
    }

    /// The error of a request left without usable keys.
    fn unavailable(&self, now: DateTime<Utc>) -> RtcError {
        let state = self.state.lock().expect("no panic under the lock");
        let had = match &state.held {
            Some((keys, _)) => match keys.expires_at() {
                Some(at) => format!(
                    "the temporary credentials expire at {}",
                    at.format("%Y-%m-%dT%H:%M:%SZ")
                ),
                None => "no usable credentials".into(),
            },
            None => "no credentials fetched yet".into(),
        };
        let why = state.last_error.as_deref().unwrap_or("no answer yet");
        let next = state
            .retry_at
            .filter(|at| *at > now)
            .map(|at| format!("; next try in {} s", (at - now).num_seconds().max(1)))
            .unwrap_or_default();
        RtcError {
            // Nothing reached the gateway: not a refusal, and no step toward the key's lock.
            not_sent: true,
            ..RtcError::transport(
                ErrorKind::CredentialsUnavailable,
                format!(
                    "{had} and the ECS metadata service at {} did not renew them: {why}{next}",
                    self.config.url.as_str().trim_end_matches('/')
                ),
            )
        }
    }

    /// Asks the service for credentials: a session token when the last is old, then the key.
    /// Errors are text for the log and the request's error: never a body that carries keys.
    async fn fetch(&self, session: &mut Session) -> Result<Fetched, String> {
        if session.http.is_none() {
            let origin = self.config.uri("/").map_err(|e| e.to_string())?;
            session.http = Some(
                Transport::new(&origin, TIMEOUT, 1)
                    .map_err(|e| format!("cannot make an HTTP client: {e:#}"))?,
            );
        }
        let now = (self.clock)();
        let token_ttl = TimeDelta::from_std(self.config.token_ttl).unwrap_or(TimeDelta::MAX);
        if session
            .asked_at
            .is_none_or(|at| now - at >= token_ttl - TOKEN_MARGIN)
        {
            self.new_session(session, false).await?;
        }
        let mut answer = self.get_key(session).await?;
        if answer.status == 401 && !String::from_utf8_lossy(&answer.body).contains(NO_AGENCY) {
            self.new_session(session, true).await?;
            answer = self.get_key(session).await?;
        }
        if answer.status != 200 {
            return Err(format!(
                "GET {SECURITY_KEY_PATH}: HTTP {}{}",
                answer.status,
                body_hint(answer.status, &answer.body)
            ));
        }
        read_credential(&answer.body)
    }

    /// `PUT` for a session token. Without token support (404, 405, 503) the service is asked
    /// without one, unless `must` (a 401 said the token is needed).
    async fn new_session(&self, session: &mut Session, must: bool) -> Result<(), String> {
        session.asked_at = Some((self.clock)());
        session.token = None;
        let mut headers = HeaderMap::new();
        headers.insert(
            HeaderName::from_static(TTL_HEADER),
            HeaderValue::from(self.config.token_ttl.as_secs()),
        );
        let answer = self
            .send(session, http::Method::PUT, TOKEN_PATH, headers)
            .await?;
        match answer.status {
            200 => {
                let token = String::from_utf8_lossy(&answer.body).trim().to_string();
                session.token = (!token.is_empty()).then(|| Secret::new(token));
                Ok(())
            }
            404 | 405 | 503 if !must => Ok(()),
            s => Err(format!(
                "PUT {TOKEN_PATH}: HTTP {s}{}",
                body_hint(s, &answer.body)
            )),
        }
    }

    async fn get_key(&self, session: &Session) -> Result<crate::transport::Raw, String> {
        let mut headers = HeaderMap::new();
        if let Some(token) = &session.token {
            let value = HeaderValue::from_str(token.expose())
                .map_err(|_| "the session token is not a header value".to_string())?;
            headers.insert(HeaderName::from_static(TOKEN_HEADER), value);
        }
        self.send(session, http::Method::GET, SECURITY_KEY_PATH, headers)
            .await
    }

    async fn send(
        &self,
        session: &Session,
        method: http::Method,
        path: &str,
        headers: HeaderMap,
    ) -> Result<crate::transport::Raw, String> {
        let http = session.http.as_ref().expect("made before any request");
        let uri = self.config.uri(path).map_err(|e| e.to_string())?;
        let body = (method == http::Method::PUT).then(Vec::new);
        http.send(method, uri, headers, body)
            .await
            .map_err(|e| e.detail.clone().unwrap_or_else(|| e.to_string()))
    }
}

/// A short piece of an error answer, for the log: error answers carry no keys, but the text
/// is cut and left out of 2xx answers all the same.
fn body_hint(status: u16, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if (200..300).contains(&status) || text.is_empty() {
        return String::new();
    }
    format!(" {:?}", cap(text, 120))
}

/// The credential in a `securitykey` answer, read as the SDK's `_process_credential` reads it
/// (`credential` or `credentials`; `access`/`accessKeyId`, `secret`/`secretAccessKey`,
/// `securitytoken`/`securityToken`, `expires_at`/`expiration`). The error names the missing
/// field, never a value: the body holds the secret key.
fn read_credential(body: &[u8]) -> Result<Fetched, String> {
    let root: serde_json::Value = serde_json::from_slice(body)
        .map_err(|_| "the securitykey answer is not JSON".to_string())?;
    let c = root
        .get("credential")
        .or_else(|| root.get("credentials"))
        .unwrap_or(&root);
    let field = |names: [&str; 2]| -> Result<String, String> {
        names
            .iter()
            .find_map(|n| c.get(*n).and_then(|v| v.as_str()))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
            .ok_or_else(|| format!("the securitykey answer has no credential.{}", names[0]))
    };
    let expires = field(["expires_at", "expiration"])?;
    Ok(Fetched {
        access: field(["access", "accessKeyId"])?,
        secret: Secret::new(field(["secret", "secretAccessKey"])?),
        security_token: Secret::new(field(["securitytoken", "securityToken"])?),
        expires_at: renew::parse_expires_at(&expires).ok_or_else(|| {
            format!("credential.expires_at {expires:?} is not %Y-%m-%dT%H:%M:%S.%fZ")
        })?,
    })
}

/// [`read_credential`]'s access key or error, for the answers' table test.
#[cfg(test)]
pub(crate) fn read_credential_for_test(body: &[u8]) -> Result<String, String> {
    read_credential(body).map(|f| f.access)
}
