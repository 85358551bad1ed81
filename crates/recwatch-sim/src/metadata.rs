//! A stand-in of the ECS metadata service (what an instance with an IAM agency asks for
//! temporary keys, as the official SDK's `MetadataAccessor` does), served on the API's own
//! listener: its paths are the real service's, none of them the API's, so one address serves
//! both and a client's `metadata_url` is [`Simulator::metadata_url`].
//!
//! - `PUT /meta-data/latest/api/token` with `X-Metadata-Token-Ttl-Seconds` (1 to 21600)
//!   answers a session token as text, live for that many seconds; without the header, or with
//!   another value, 400.
//! - `GET /openstack/latest/securitykey` with `X-Metadata-Token` (a live session token)
//!   answers `{"credential": {"access", "secret", "securitytoken", "expires_at"}}`, a
//!   temporary key of the configured account, `expires_at` as `%Y-%m-%dT%H:%M:%S.%fZ` (UTC,
//!   microseconds) on the simulator's clock. A missing, unknown or expired session token is
//!   401 (the SDK then asks for a new one and retries once); the account's key revoked is 401
//!   "Please configure Cloud Service Agency first", the real service's answer without an
//!   agency (which the SDK does not retry); [`Simulator::fail_metadata`] makes the next
//!   answers 500.
//!
//! Every answered `securitykey` request issues a fresh key (the real service hands out the
//! same one until it nears its end; a fresh one each time is simpler and gives every renewal
//! a later `expires_at`, so a client that asks more often than renewals need shows up in
//! `SimStats::metadata` and nowhere else). The gateway accepts a temporary key, signed with
//! its secret and carrying its security token in a signed `X-Security-Token`, until
//! `SimMetadata::key_lifetime` after it was issued, then refuses it as expired; its requests
//! count towards its account's rate limit, lockout and stats.
//!
//! Locks: a handler holds the simulator's lock and, inside it, this stand-in's; the gateway's
//! key lookup takes only this one. Never the other way round.

use crate::script::plus;
use crate::simulator::{Inner, Simulator};
use axum::Router;
use axum::extract::State as AxState;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use recwatch_rtc::Secret;
use recwatch_rtc::sign::SigningKey;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::time::Instant;

pub(crate) const TOKEN_PATH: &str = "/meta-data/latest/api/token";
pub(crate) const SECURITY_KEY_PATH: &str = "/openstack/latest/securitykey";
/// The longest session token the service gives (the SDK asks for this, 6 h).
const MAX_TOKEN_TTL_SECONDS: u64 = 21_600;
/// The real service's answer on an instance without an agency; the SDK reads this text.
pub(crate) const NO_AGENCY: &str = "Please configure Cloud Service Agency first";
/// `expires_at`'s format, the SDK's `%Y-%m-%dT%H:%M:%S.%fZ` (`%f`: six digits).
const EXPIRES_AT_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.6fZ";

/// Requests to the metadata stand-in (not in `SimStats::requests`, which are the API's).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataStats {
    /// `PUT /meta-data/latest/api/token`, whatever the answer.
    pub token_requests: u64,
    /// `GET /openstack/latest/securitykey`, whatever the answer.
    pub key_requests: u64,
    /// Temporary keys handed out.
    pub keys_issued: u64,
    /// Requests of either kind answered with an error.
    pub refused: u64,
}

/// The stand-in's configuration and memory.
pub(crate) struct Metadata {
    /// Into `Inner::accounts`: whose temporary keys it hands out.
    pub(crate) account: usize,
    pub(crate) lifetime: Duration,
    state: Mutex<State>,
}

struct State {
    /// Session tokens and when each ends.
    sessions: HashMap<String, Instant>,
    /// Temporary keys by access key, kept a lifetime past their end so a late request is
    /// told "expired" rather than "does not exist".
    keys: HashMap<String, Arc<TemporaryKey>>,
    /// Seeded: keys and tokens differ per run of a seed only by the order of requests.
    rng: StdRng,
    /// The next key requests answered 500.
    failing: u32,
}

/// A temporary key as the gateway checks it.
pub(crate) struct TemporaryKey {
    pub(crate) account: usize,
    pub(crate) signing_key: SigningKey,
    pub(crate) security_token: Secret,
    pub(crate) expires: Instant,
}

/// What a session token is, at the moment a key is asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Session {
    Missing,
    Unknown,
    Expired,
    Live,
}

/// The answer to a key request, decided from the facts alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyAnswer {
    /// 401 that the SDK answers by asking for a new session token.
    NeedToken(&'static str),
    /// 500: an injected failure.
    Failed,
    /// 401 "Please configure Cloud Service Agency first".
    NoAgency,
    Issue,
}

/// The session token first (the real service checks it before anything), then an injected
/// failure, then whether the account still has its key.
fn key_answer(session: Session, failing: bool, revoked: bool) -> KeyAnswer {
    match session {
        Session::Missing => KeyAnswer::NeedToken("X-Metadata-Token is missing"),
        Session::Unknown => KeyAnswer::NeedToken("X-Metadata-Token is not a token of this service"),
        Session::Expired => KeyAnswer::NeedToken("X-Metadata-Token has expired"),
        Session::Live if failing => KeyAnswer::Failed,
        Session::Live if revoked => KeyAnswer::NoAgency,
        Session::Live => KeyAnswer::Issue,
    }
}

impl Metadata {
    pub(crate) fn new(account: usize, lifetime: Duration, seed: u64) -> Metadata {
        Metadata {
            account,
            lifetime,
            state: Mutex::new(State {
                sessions: HashMap::new(),
                keys: HashMap::new(),
                // Its own stream, apart from churn's and the callbacks'.
                rng: StdRng::seed_from_u64(seed ^ 0x0ec5_3e7a),
                failing: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Plain maps behind the lock: still usable after a panic elsewhere.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The temporary key with this access key, if one was handed out (expired ones too, for
    /// a while).
    pub(crate) fn key(&self, access_key: &str) -> Option<Arc<TemporaryKey>> {
        self.lock().keys.get(access_key).cloned()
    }
}

impl State {
    fn session(&self, token: Option<&str>, now: Instant) -> Session {
        match token.map(|t| self.sessions.get(t)) {
            None => Session::Missing,
            Some(None) => Session::Unknown,
            Some(Some(end)) if now >= *end => Session::Expired,
            Some(Some(_)) => Session::Live,
        }
    }

    fn hex(&mut self, bytes: usize) -> String {
        (0..bytes)
            .map(|_| format!("{:02x}", self.rng.random::<u8>()))
            .collect()
    }

    /// Forgets session tokens that ended and keys that ended a lifetime ago.
    fn prune(&mut self, now: Instant, lifetime: Duration) {
        self.sessions.retain(|_, end| *end > now);
        self.keys.retain(|_, k| k.expires + lifetime > now);
    }
}

/// The stand-in's routes, merged into the simulator's router when it is served.
pub(crate) fn routes() -> Router<Arc<Inner>> {
    Router::new()
        .route(TOKEN_PATH, put(put_token))
        .route(SECURITY_KEY_PATH, get(get_security_key))
}

fn text(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

async fn put_token(AxState(inner): AxState<Arc<Inner>>, headers: HeaderMap) -> Response {
    let now = Instant::now();
    let ttl = headers
        .get("x-metadata-token-ttl-seconds")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|t| (1..=MAX_TOKEN_TTL_SECONDS).contains(t));
    let metadata = inner
        .metadata
        .as_ref()
        .expect("the routes are served only with the stand-in");
    let mut shared = inner.lock();
    shared.counters.metadata.token_requests += 1;
    let Some(ttl) = ttl else {
        shared.counters.metadata.refused += 1;
        return text(
            StatusCode::BAD_REQUEST,
            format!(
                "X-Metadata-Token-Ttl-Seconds must be a whole number of seconds from 1 to {MAX_TOKEN_TTL_SECONDS}"
            ),
        );
    };
    let mut state = metadata.lock();
    state.prune(now, metadata.lifetime);
    let token = state.hex(32);
    state
        .sessions
        .insert(token.clone(), now + Duration::from_secs(ttl));
    text(StatusCode::OK, token)
}

async fn get_security_key(AxState(inner): AxState<Arc<Inner>>, headers: HeaderMap) -> Response {
    let now = Instant::now();
    let token = headers
        .get("x-metadata-token")
        .and_then(|v| v.to_str().ok());
    let metadata = inner
        .metadata
        .as_ref()
        .expect("the routes are served only with the stand-in");
    let mut shared = inner.lock();
    shared.counters.metadata.key_requests += 1;
    let revoked = shared.gate.is_revoked(metadata.account);
    let mut state = metadata.lock();
    let answer = key_answer(state.session(token, now), state.failing > 0, revoked);
    let (status, body) = match answer {
        KeyAnswer::NeedToken(why) => (StatusCode::UNAUTHORIZED, why.to_string()),
        KeyAnswer::Failed => {
            state.failing -= 1;
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the metadata service failed (injected)".to_string(),
            )
        }
        KeyAnswer::NoAgency => (StatusCode::UNAUTHORIZED, NO_AGENCY.to_string()),
        KeyAnswer::Issue => {
            shared.counters.metadata.keys_issued += 1;
            return issue(&inner, metadata, &mut state, now);
        }
    };
    shared.counters.metadata.refused += 1;
    text(status, body)
}

/// A fresh temporary key of the stand-in's account, remembered for the gateway, as the
/// real service's JSON.
fn issue(inner: &Inner, metadata: &Metadata, state: &mut State, now: Instant) -> Response {
    state.prune(now, metadata.lifetime);
    let access = format!("TMP{}", state.hex(8).to_uppercase());
    let secret = state.hex(20);
    let security_token = format!("gQ{}", state.hex(48));
    let expires = now + metadata.lifetime;
    // On the simulator's clock (X-Sdk-Date is checked against it too), from tokio's: a test
    // on the paused clock sees the end where the gateway puts it.
    let expires_at = plus(inner.epoch_utc, expires.duration_since(inner.epoch))
        + chrono::Duration::seconds(inner.opts.clock_offset);
    let body = serde_json::json!({
        "credential": {
            "access": access,
            "secret": secret,
            "securitytoken": security_token,
            "expires_at": expires_at.format(EXPIRES_AT_FORMAT).to_string(),
        }
    });
    state.keys.insert(
        access,
        Arc::new(TemporaryKey {
            account: metadata.account,
            signing_key: SigningKey::new(secret.as_bytes()),
            security_token: Secret::new(security_token),
            expires,
        }),
    );
    let mut response = (StatusCode::OK, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

impl Simulator {
    /// The metadata stand-in's base address (the real one's `http://169.254.169.254`), the
    /// API's own: `None` when it is not served.
    pub fn metadata_url(&self) -> Option<String> {
        self.inner.metadata.as_ref().map(|_| self.url())
    }

    /// The next `times` key requests with a live session token answer 500, as a metadata
    /// service that fails for a while (a failed renewal).
    pub fn fail_metadata(&self, times: u32) {
        if let Some(metadata) = &self.inner.metadata {
            metadata.lock().failing = times;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_answer_table() {
        use KeyAnswer::*;
        use Session::*;
        // (name, session, failing, revoked, answer)
        let cases = [
            ("a live session", Live, false, false, Issue),
            (
                "no session token",
                Missing,
                false,
                false,
                NeedToken("X-Metadata-Token is missing"),
            ),
            (
                "a token of nobody",
                Unknown,
                false,
                false,
                NeedToken("X-Metadata-Token is not a token of this service"),
            ),
            (
                "an ended session",
                Expired,
                true,
                true,
                NeedToken("X-Metadata-Token has expired"),
            ),
            ("an injected failure", Live, true, true, Failed),
            ("the key revoked", Live, false, true, NoAgency),
        ];
        for (name, session, failing, revoked, want) in cases {
            assert_eq!(key_answer(session, failing, revoked), want, "{name}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn sessions_end_and_keys_are_kept_a_lifetime_past_theirs() {
        let lifetime = Duration::from_secs(20);
        let metadata = Metadata::new(0, lifetime, 7);
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut state = metadata.lock();
        state.sessions.insert("tok".into(), t0 + s(10));
        assert_eq!(state.session(Some("tok"), t0 + s(9)), Session::Live);
        assert_eq!(state.session(Some("tok"), t0 + s(10)), Session::Expired);
        assert_eq!(state.session(Some("other"), t0), Session::Unknown);
        assert_eq!(state.session(None, t0), Session::Missing);
        state.keys.insert(
            "TMP1".into(),
            Arc::new(TemporaryKey {
                account: 0,
                signing_key: SigningKey::new(b"s"),
                security_token: Secret::new("t"),
                expires: t0 + lifetime,
            }),
        );
        state.prune(t0 + s(39), lifetime);
        assert!(state.keys.contains_key("TMP1"), "told expired for a while");
        assert!(state.sessions.is_empty(), "the ended session is gone");
        state.prune(t0 + s(40), lifetime);
        assert!(state.keys.is_empty());
    }
}
