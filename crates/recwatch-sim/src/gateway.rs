//! The API gateway in front of the job API: credentials (SDK-HMAC-SHA256 signatures checked
//! with the client's own signer, tokens, the mandatory `X-Project-Id`), the AK lockout after
//! repeated failures, and the rate limit over the trailing second. The checks' order is in the
//! crate docs ("Gateway checks, in order").

use crate::options::{SimAuth, SimOptions};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use chrono::{DateTime, Utc};
use recwatch_rtc::sign;
use std::collections::VecDeque;
use std::time::Duration;
// tokio's clock, not std's: a test on tokio's paused clock moves the lockout and the rate
// limit exactly as far as it advances time.
use tokio::time::Instant;

/// How far `X-Sdk-Date` may be from the server's clock.
const MAX_CLOCK_SKEW: Duration = Duration::from_secs(15 * 60);

/// Why the gateway refused a request's credentials, and how.
#[derive(Clone, Debug)]
pub(crate) struct Refusal {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
    /// A failed signature or token; counts towards the AK lockout.
    pub(crate) bad_key: bool,
}

impl Refusal {
    /// 401 APIG.0301, the gateway's answer to a wrong signature or token.
    pub(crate) fn bad_key(why: impl Into<String>) -> Refusal {
        Refusal {
            status: StatusCode::UNAUTHORIZED,
            code: "APIG.0301",
            message: format!("Incorrect IAM authentication information: {}", why.into()),
            bad_key: true,
        }
    }
}

/// What the gateway remembers between requests: failed attempts towards the AK lockout, the
/// lock, and the requests the rate limit let through. Kept under the simulator's one lock.
#[derive(Default)]
pub(crate) struct Gate {
    auth_failures: u32,
    locked_until: Option<Instant>,
    /// Requests the rate limit let through in the trailing second, oldest first.
    admitted: VecDeque<Instant>,
    /// The same for the apps group (record callbacks ...), over the trailing minute.
    admitted_app_group: VecDeque<Instant>,
}

impl Gate {
    /// `Err(refusal)` when the credentials (or the AK lockout) refuse the request.
    /// `credentials` is `Inner::check_credentials`' verdict, reached without the lock.
    pub(crate) fn authorize(
        &mut self,
        opts: &SimOptions,
        credentials: Result<(), Refusal>,
        now: Instant,
    ) -> Result<(), Refusal> {
        if !matches!(opts.auth, SimAuth::AkSk { .. }) {
            return credentials;
        }
        if let Some(until) = self.locked_until {
            if now < until {
                let left = until.duration_since(now).as_secs() + 1;
                return Err(Refusal::bad_key(format!(
                    "the access key is locked for {left} s after too many failed authentication attempts"
                )));
            }
            self.locked_until = None;
        }
        match credentials {
            Ok(()) => {
                self.auth_failures = 0;
                Ok(())
            }
            // The signature was right: no step towards the lockout.
            Err(refusal) if !refusal.bad_key => Err(refusal),
            Err(refusal) => {
                self.auth_failures += 1;
                if self.auth_failures > opts.lockout_after {
                    self.auth_failures = 0;
                    self.locked_until = Some(now + opts.lockout);
                }
                Err(refusal)
            }
        }
    }

    /// Whether the rate limit lets a request through at `now`. Only requests let through use
    /// up the budget, as at the real gateway.
    pub(crate) fn admit(&mut self, rate_limit: Option<u32>, now: Instant) -> bool {
        let Some(limit) = rate_limit else {
            return true;
        };
        while self
            .admitted
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
        {
            self.admitted.pop_front();
        }
        if self.admitted.len() >= limit as usize {
            return false;
        }
        self.admitted.push_back(now);
        true
    }
}

impl Gate {
    /// Whether the apps group's limit (60 in any trailing minute) lets a request through at
    /// `now`; only enforced when the simulator enforces limits at all (`limited`).
    pub(crate) fn admit_app_group(&mut self, limited: bool, now: Instant) -> bool {
        if !limited {
            return true;
        }
        let window = Duration::from_secs(60);
        while self
            .admitted_app_group
            .front()
            .is_some_and(|t| now.duration_since(*t) >= window)
        {
            self.admitted_app_group.pop_front();
        }
        if self.admitted_app_group.len() >= crate::registration::APP_GROUP_PER_MINUTE as usize {
            return false;
        }
        self.admitted_app_group.push_back(now);
        true
    }
}

/// The gateway's 429 message, quoting the limit (10, the API's, when none is set: a throttle
/// fault then reads like the real gateway's).
pub(crate) fn throttle_message(rate_limit: Option<u32>) -> String {
    format!(
        "The throttling threshold has been reached: policy user over ratelimit,limit:{},time:1 second",
        rate_limit.unwrap_or(10)
    )
}

impl crate::simulator::Inner {
    /// Checks the request's credentials without the lock: hashing is the costly part.
    pub(crate) fn check_credentials(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<(), Refusal> {
        let opts = &self.opts;
        match (&opts.auth, &self.signing_key) {
            (SimAuth::None, _) => Ok(()),
            (SimAuth::Token(token), _) => match headers.get("x-auth-token") {
                Some(v) if v.as_bytes() == token.as_bytes() => Ok(()),
                Some(_) => Err(Refusal::bad_key("decrypt token fail")),
                None => Err(Refusal::bad_key("token is missing")),
            },
            (SimAuth::AkSk { access_key, .. }, Some(key)) => {
                let now = sim_now(opts);
                verify_signature(access_key, key, method, uri, headers, body, now)
                    .map_err(Refusal::bad_key)?;
                check_project(opts.project_id.as_deref(), headers)
            }
            (SimAuth::AkSk { .. }, None) => {
                unreachable!("the signing key is made with the simulator from its AK/SK")
            }
        }
    }
}

/// With AK/SK, the secret key made ready for HMAC once: every request's signature is checked
/// with it.
pub(crate) fn signing_key(auth: &SimAuth) -> Option<sign::SigningKey> {
    match auth {
        SimAuth::AkSk { secret_key, .. } => Some(sign::SigningKey::new(secret_key.as_bytes())),
        SimAuth::None | SimAuth::Token(_) => None,
    }
}

/// The simulator's clock: the machine's, moved by `clock_offset`.
pub(crate) fn sim_now(opts: &SimOptions) -> DateTime<Utc> {
    Utc::now() + chrono::Duration::seconds(opts.clock_offset)
}

/// `X-Project-Id` is mandatory with AK/SK (the API document says so); when the simulator
/// knows the account's project, it must be that one.
fn check_project(expected: Option<&str>, headers: &HeaderMap) -> Result<(), Refusal> {
    let sent = headers
        .get("x-project-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|p| !p.is_empty());
    match (sent, expected) {
        (None, _) => Err(Refusal {
            status: StatusCode::BAD_REQUEST,
            code: "RTC.00001001",
            message: "OperationUnauthorized: the X-Project-Id header is required with AK/SK authentication".into(),
            bad_key: false,
        }),
        (Some(sent), Some(expected)) if sent != expected => Err(Refusal {
            status: StatusCode::FORBIDDEN,
            code: "APIG.0302",
            message: format!(
                "The IAM user is not authorized to access the API: project {sent:?} is not this account's"
            ),
            bad_key: false,
        }),
        _ => Ok(()),
    }
}

/// Rebuilds the canonical request from the headers the client says it signed, with the path
/// as received, and compares signatures.
fn verify_signature(
    access_key: &str,
    key: &sign::SigningKey,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<(), String> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or("Authorization header is missing")?
        .to_str()
        .map_err(|_| "Authorization header is not text")?;
    let auth =
        sign::parse_authorization(value).ok_or("Authorization header is not SDK-HMAC-SHA256")?;
    if auth.access_key != access_key {
        return Err("the access key does not exist".into());
    }
    let date = headers
        .get(sign::DATE_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or("X-Sdk-Date header is missing")?;
    let signed_at = sign::parse_sdk_date(date).ok_or("X-Sdk-Date is not YYYYMMDDTHHMMSSZ")?;
    if (now - signed_at).abs().to_std().unwrap_or(Duration::MAX) > MAX_CLOCK_SKEW {
        return Err("X-Sdk-Date is more than 15 minutes off".into());
    }
    let mut signed = Vec::new();
    for name in auth.signed_headers.split(';') {
        let value = headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| format!("signed header {name} is missing"))?;
        signed.push((name, value));
    }
    if !signed
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case(sign::DATE_HEADER))
    {
        return Err("X-Sdk-Date is not signed".into());
    }
    let query: Vec<(String, String)> = uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let canonical = sign::canonical_request(method.as_str(), uri.path(), &query, &signed, body);
    let expected = key.hmac_hex(sign::string_to_sign(date, &canonical).as_bytes());
    if expected != auth.signature {
        return Err("verify aksk signature fail".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aksk(lockout_after: u32, lockout: Duration) -> SimOptions {
        SimOptions {
            auth: SimAuth::AkSk {
                access_key: "ak".into(),
                secret_key: "sk".into(),
            },
            lockout_after,
            lockout,
            ..SimOptions::default()
        }
    }

    #[test]
    fn failures_in_a_row_lock_the_key_until_the_lockout_ends() {
        let lockout = Duration::from_secs(300);
        let opts = aksk(2, lockout);
        let mut gate = Gate::default();
        let t0 = Instant::now();
        let bad = || Err(Refusal::bad_key("verify aksk signature fail"));
        // A success in between starts the count again; a refusal of a right signature (the
        // project id) is no step towards the lock.
        let project = || {
            Err(Refusal {
                status: StatusCode::FORBIDDEN,
                code: "APIG.0302",
                message: "another project".into(),
                bad_key: false,
            })
        };
        for credentials in [bad(), bad(), Ok(()), bad(), project(), project(), bad()] {
            let want_ok = credentials.is_ok();
            assert_eq!(gate.authorize(&opts, credentials, t0).is_ok(), want_ok);
        }
        assert!(gate.authorize(&opts, Ok(()), t0).is_ok(), "not locked yet");
        for _ in 0..3 {
            assert!(gate.authorize(&opts, bad(), t0).is_err());
        }
        let locked = gate.authorize(&opts, Ok(()), t0).unwrap_err();
        assert!(
            locked.message.contains("locked for 301 s"),
            "{}",
            locked.message
        );
        let almost = t0 + lockout - Duration::from_millis(1);
        assert!(
            gate.authorize(&opts, Ok(()), almost).is_err(),
            "locked until the end"
        );
        assert!(
            gate.authorize(&opts, Ok(()), t0 + lockout).is_ok(),
            "the lock ended"
        );
    }

    #[test]
    fn tokens_and_no_auth_never_lock() {
        let opts = SimOptions {
            auth: SimAuth::Token("tok".into()),
            lockout_after: 0,
            ..SimOptions::default()
        };
        let mut gate = Gate::default();
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(
                gate.authorize(&opts, Err(Refusal::bad_key("x")), t0)
                    .is_err()
            );
        }
        assert!(gate.authorize(&opts, Ok(()), t0).is_ok());
    }

    #[test]
    fn the_rate_limit_admits_n_in_any_trailing_second() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        // (name, limit, arrivals in ms, admitted)
        type Case<'a> = (&'a str, Option<u32>, &'a [u64], &'a [bool]);
        let cases: [Case; 4] = [
            ("no limit", None, &[0, 0, 0], &[true, true, true]),
            (
                "beyond the limit",
                Some(2),
                &[0, 1, 2],
                &[true, true, false],
            ),
            (
                "refused requests use up nothing",
                Some(2),
                &[0, 500, 600, 999, 1000, 1499, 1500],
                &[true, true, false, false, true, false, true],
            ),
            (
                "a zero limit refuses all",
                Some(0),
                &[0, 5000],
                &[false, false],
            ),
        ];
        for (name, limit, arrivals, admitted) in cases {
            let mut gate = Gate::default();
            let got: Vec<bool> = arrivals
                .iter()
                .map(|a| gate.admit(limit, t0 + ms(*a)))
                .collect();
            assert_eq!(got, admitted, "{name}");
        }
    }

    #[test]
    fn x_project_id_table() {
        let headers = |project: Option<&str>| {
            let mut h = HeaderMap::new();
            if let Some(p) = project {
                h.insert("x-project-id", p.parse().unwrap());
            }
            h
        };
        // (name, expected project, sent project, refusal status)
        let cases = [
            ("required", None, None, Some(400)),
            ("blank is missing", None, Some("  "), Some(400)),
            ("any when none is set", None, Some("p1"), None),
            ("the account's", Some("p1"), Some("p1"), None),
            ("another's", Some("p1"), Some("p2"), Some(403)),
        ];
        for (name, expected, sent, status) in cases {
            let got = check_project(expected, &headers(sent));
            assert_eq!(
                got.as_ref().err().map(|r| r.status.as_u16()),
                status,
                "{name}"
            );
            assert!(
                got.is_ok() || !got.unwrap_err().bad_key,
                "{name}: no step to the lock"
            );
        }
    }
}
