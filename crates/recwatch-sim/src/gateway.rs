//! The API gateway in front of the job API: credentials (SDK-HMAC-SHA256 signatures checked
//! with the client's own signer, tokens, temporary keys with their security token, the
//! mandatory `X-Project-Id`), the account a request belongs to (found by the access key it is
//! signed with), and per account: the AK lockout after repeated failures, a revoked key, and
//! the rate limit over the trailing second. The checks' order is in the crate docs ("Gateway
//! checks, in order").

use crate::accounts::Account;
use crate::options::{SimAuth, SimOptions};
use crate::simulator::Inner;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use chrono::{DateTime, Utc};
use recwatch_rtc::sign;
use std::collections::VecDeque;
use std::time::Duration;
// tokio's clock, not std's: a test on tokio's paused clock moves the lockout, the rate limit
// and a temporary key's expiry exactly as far as it advances time.
use tokio::time::Instant;

/// How far `X-Sdk-Date` may be from the server's clock.
const MAX_CLOCK_SKEW: Duration = Duration::from_secs(15 * 60);

/// The header a temporary key's security token travels in (signed, like every header sent).
const SECURITY_TOKEN: &str = "x-security-token";

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

    /// The same answer for a key that is not (or no longer) there: no key to lock.
    pub(crate) fn no_key(why: impl Into<String>) -> Refusal {
        Refusal {
            bad_key: false,
            ..Refusal::bad_key(why)
        }
    }
}

/// Whose request this is, as far as its credentials tell (decided without the lock: hashing
/// is the costly part), and what they are worth.
#[derive(Clone, Debug)]
pub(crate) enum Caller {
    /// Signed with a key no account has: refused, and no account's lock moves.
    Unknown(Refusal),
    Account {
        /// Into `Inner::accounts`.
        index: usize,
        /// Signed with an access key (the account's own or a temporary one): a failure is a
        /// step towards that account's lock. Tokens and no auth never lock.
        signed: bool,
        /// A temporary key's end: refused from then on.
        expires: Option<Instant>,
        verdict: Result<(), Refusal>,
    },
}

impl Caller {
    /// The account the request is counted for, if its key is one's.
    pub(crate) fn account(&self) -> Option<usize> {
        match self {
            Caller::Unknown(_) => None,
            Caller::Account { index, .. } => Some(*index),
        }
    }

    /// Signed with a temporary key from the metadata stand-in.
    pub(crate) fn temporary(&self) -> bool {
        matches!(
            self,
            Caller::Account {
                expires: Some(_),
                ..
            }
        )
    }
}

/// The gateway's answer to one request of the job group, once faults had their turn.
#[derive(Debug)]
pub(crate) enum Verdict {
    Pass,
    Refused(Refusal),
    /// 429, quoting this limit.
    Throttled(Option<u32>),
}

/// What the gateway remembers between requests, per account: failed attempts towards the AK
/// lockout, the lock, a revoked key, and the requests the rate limits let through. Kept under
/// the simulator's one lock.
#[derive(Default)]
pub(crate) struct Gate {
    /// Indexed like `Inner::accounts`.
    keys: Vec<KeyGate>,
}

#[derive(Default)]
pub(crate) struct KeyGate {
    auth_failures: u32,
    locked_until: Option<Instant>,
    revoked: bool,
    /// Requests the rate limit let through in the trailing second, oldest first.
    admitted: VecDeque<Instant>,
    /// The same for the apps group (record callbacks ...), over the trailing minute.
    admitted_app_group: VecDeque<Instant>,
}

impl Gate {
    /// A gate for this many accounts, none revoked.
    pub(crate) fn new(accounts: usize) -> Gate {
        Gate {
            keys: (0..accounts).map(|_| KeyGate::default()).collect(),
        }
    }

    pub(crate) fn set_revoked(&mut self, account: usize, revoked: bool) {
        // Restored or revoked, the key starts afresh: the old failures were another key's.
        self.keys[account] = KeyGate {
            revoked,
            ..KeyGate::default()
        };
    }

    pub(crate) fn is_revoked(&self, account: usize) -> bool {
        self.keys[account].revoked
    }

    /// The job group's checks at `now`: the caller's credentials and its account's lock,
    /// then that account's rate limit.
    pub(crate) fn check(
        &mut self,
        accounts: &[Account],
        opts: &SimOptions,
        caller: &Caller,
        now: Instant,
    ) -> Verdict {
        match self.authorize(opts, caller, now) {
            Err(refusal) => Verdict::Refused(refusal),
            Ok(i) => {
                let limit = accounts[i].rate_limit;
                if self.keys[i].admit(limit, now) {
                    Verdict::Pass
                } else {
                    Verdict::Throttled(limit)
                }
            }
        }
    }

    /// The apps group's checks at `now`: credentials, then its limit (60 in any trailing
    /// minute), enforced for an account only when its job group is limited too.
    pub(crate) fn check_app_group(
        &mut self,
        accounts: &[Account],
        opts: &SimOptions,
        caller: &Caller,
        now: Instant,
    ) -> Verdict {
        match self.authorize(opts, caller, now) {
            Err(refusal) => Verdict::Refused(refusal),
            Ok(i) => {
                let limited = accounts[i].rate_limit.is_some();
                if self.keys[i].admit_app_group(limited, now) {
                    Verdict::Pass
                } else {
                    Verdict::Throttled(Some(crate::registration::APP_GROUP_PER_MINUTE))
                }
            }
        }
    }

    /// `Ok(account)` when the caller's credentials (its key revoked, expired or locked
    /// included) let the request through.
    pub(crate) fn authorize(
        &mut self,
        opts: &SimOptions,
        caller: &Caller,
        now: Instant,
    ) -> Result<usize, Refusal> {
        let (index, signed, expires, verdict) = match caller {
            Caller::Unknown(refusal) => return Err(refusal.clone()),
            Caller::Account {
                index,
                signed,
                expires,
                verdict,
            } => (*index, *signed, *expires, verdict),
        };
        let key = &mut self.keys[index];
        if key.revoked {
            return Err(Refusal::no_key("the access key does not exist"));
        }
        if expires.is_some_and(|end| now >= end) {
            return Err(Refusal::no_key("the temporary access key has expired"));
        }
        if !signed {
            return verdict.clone().map(|()| index);
        }
        key.authorize(opts, verdict.clone(), now).map(|()| index)
    }
}

impl KeyGate {
    /// The lockout of one access key: `credentials` is the signature's verdict.
    fn authorize(
        &mut self,
        opts: &SimOptions,
        credentials: Result<(), Refusal>,
        now: Instant,
    ) -> Result<(), Refusal> {
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

impl Inner {
    /// Finds the request's account by the access key it is signed with and checks its
    /// credentials, without the lock: hashing is the costly part. A request naming no
    /// account's key (none at all, or an unknown one) is account #0's, checked as its `auth`
    /// says: as before accounts, so a simulator without them behaves as it did.
    pub(crate) fn check_credentials(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Caller {
        let named = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(sign::parse_authorization)
            .map(|a| a.access_key);
        let now = sim_now(&self.opts);
        let request = Request {
            method,
            uri,
            headers,
            body,
            now,
        };
        if let Some(ak) = named {
            if let Some((index, account)) = self
                .accounts
                .iter()
                .enumerate()
                .find(|(_, a)| a.access_key() == Some(ak))
            {
                let key = account
                    .signing_key
                    .as_ref()
                    .expect("an account with an access key has its signing key");
                return Caller::Account {
                    index,
                    signed: true,
                    expires: None,
                    verdict: verify_signature(ak, key, &request)
                        .map_err(Refusal::bad_key)
                        .and_then(|()| check_project(account.project_id.as_deref(), headers)),
                };
            }
            if let Some(temporary) = self.metadata.as_ref().and_then(|m| m.key(ak)) {
                let account = &self.accounts[temporary.account];
                let verdict = verify_signature(ak, &temporary.signing_key, &request)
                    .and_then(|()| check_security_token(headers, temporary.security_token.expose()))
                    .map_err(Refusal::bad_key)
                    .and_then(|()| check_project(account.project_id.as_deref(), headers));
                return Caller::Account {
                    index: temporary.account,
                    signed: true,
                    expires: Some(temporary.expires),
                    verdict,
                };
            }
        }
        self.as_default(named, &request)
    }

    /// A request naming no account's key: account #0's, checked as its `auth` says.
    fn as_default(&self, named: Option<&str>, request: &Request<'_>) -> Caller {
        let default = &self.accounts[0];
        let headers = request.headers;
        let (signed, verdict) = match (&default.auth, &default.signing_key) {
            (SimAuth::None, _) => (false, Ok(())),
            (SimAuth::Token(token), _) => (
                false,
                match headers.get("x-auth-token") {
                    Some(v) if v.as_bytes() == token.as_bytes() => Ok(()),
                    Some(_) => Err(Refusal::bad_key("decrypt token fail")),
                    None => Err(Refusal::bad_key("token is missing")),
                },
            ),
            // A key no account has cannot be locked; the real gateway does not know it.
            (SimAuth::AkSk { .. }, _) if named.is_some() => {
                return Caller::Unknown(Refusal::no_key("the access key does not exist"));
            }
            (SimAuth::AkSk { access_key, .. }, Some(key)) => (
                true,
                verify_signature(access_key, key, request)
                    .map_err(Refusal::bad_key)
                    .and_then(|()| check_project(default.project_id.as_deref(), headers)),
            ),
            (SimAuth::AkSk { .. }, None) => {
                unreachable!("the signing key is made with the account from its AK/SK")
            }
        };
        Caller::Account {
            index: 0,
            signed,
            expires: None,
            verdict,
        }
    }
}

impl crate::simulator::Shared {
    /// Counts a job-group request for the account its key names, as it arrived (before
    /// faults and checks, like the totals).
    pub(crate) fn account_arrival(&mut self, inner: &Inner, caller: &Caller, now: Instant) {
        if let Some(i) = caller.account() {
            self.counters
                .account_arrival(&inner.accounts[i].name, now, caller.temporary());
        }
    }

    /// The gateway's checks of a job-group request, counted for the caller's account.
    pub(crate) fn job_gate(&mut self, inner: &Inner, caller: &Caller, now: Instant) -> Verdict {
        let verdict = self.gate.check(&inner.accounts, &inner.opts, caller, now);
        if let Some(i) = caller.account() {
            self.counters
                .account_verdict(&inner.accounts[i].name, &verdict);
        }
        verdict
    }
}

/// What a signature is checked over: the request as received, and the simulator's clock.
struct Request<'a> {
    method: &'a Method,
    uri: &'a Uri,
    headers: &'a HeaderMap,
    body: &'a [u8],
    now: DateTime<Utc>,
}

/// A temporary key's request must carry its security token, and sign it (the SDK adds it
/// before signing).
fn check_security_token(headers: &HeaderMap, expected: &str) -> Result<(), String> {
    let sent = headers
        .get(SECURITY_TOKEN)
        .ok_or("a temporary access key needs its X-Security-Token")?;
    let signed = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(sign::parse_authorization)
        .is_some_and(|a| {
            a.signed_headers
                .split(';')
                .any(|h| h.eq_ignore_ascii_case(SECURITY_TOKEN))
        });
    if !signed {
        return Err("X-Security-Token is not signed".into());
    }
    if sent.as_bytes() != expected.as_bytes() {
        return Err("the security token does not belong to the access key".into());
    }
    Ok(())
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
    request: &Request<'_>,
) -> Result<(), String> {
    let Request {
        method,
        uri,
        headers,
        body,
        now,
    } = *request;
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

    fn lockout_opts(lockout_after: u32, lockout: Duration) -> SimOptions {
        SimOptions {
            lockout_after,
            lockout,
            ..SimOptions::default()
        }
    }

    /// A request of account `index` signed with its key, its signature's verdict `verdict`.
    fn signed(index: usize, verdict: Result<(), Refusal>) -> Caller {
        Caller::Account {
            index,
            signed: true,
            expires: None,
            verdict,
        }
    }

    fn bad() -> Result<(), Refusal> {
        Err(Refusal::bad_key("verify aksk signature fail"))
    }

    #[test]
    fn failures_in_a_row_lock_the_key_until_the_lockout_ends() {
        let lockout = Duration::from_secs(300);
        let opts = lockout_opts(2, lockout);
        let mut gate = Gate::new(1);
        let t0 = Instant::now();
        let mut check = |verdict, at| gate.authorize(&opts, &signed(0, verdict), at);
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
            assert_eq!(check(credentials, t0).is_ok(), want_ok);
        }
        assert!(check(Ok(()), t0).is_ok(), "not locked yet");
        for _ in 0..3 {
            assert!(check(bad(), t0).is_err());
        }
        let locked = check(Ok(()), t0).unwrap_err();
        assert!(
            locked.message.contains("locked for 301 s"),
            "{}",
            locked.message
        );
        let almost = t0 + lockout - Duration::from_millis(1);
        assert!(check(Ok(()), almost).is_err(), "locked until the end");
        assert!(check(Ok(()), t0 + lockout).is_ok(), "the lock ended");
    }

    #[test]
    fn tokens_and_no_auth_never_lock() {
        let opts = lockout_opts(0, Duration::from_secs(300));
        let mut gate = Gate::new(1);
        let t0 = Instant::now();
        let unsigned = |verdict| Caller::Account {
            index: 0,
            signed: false,
            expires: None,
            verdict,
        };
        for _ in 0..5 {
            assert!(gate.authorize(&opts, &unsigned(bad()), t0).is_err());
        }
        assert_eq!(gate.authorize(&opts, &unsigned(Ok(())), t0).unwrap(), 0);
    }

    /// Each account's key, its revocation and its temporary keys' end, one request at a time
    /// on one gate of three accounts with `lockout_after` 1.
    #[test]
    fn accounts_are_refused_and_locked_one_by_one() {
        let opts = lockout_opts(1, Duration::from_secs(300));
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let temporary = |index, verdict| Caller::Account {
            index,
            signed: true,
            expires: Some(t0 + s(20)),
            verdict,
        };
        enum Step {
            Ask(Caller, u64, Result<usize, &'static str>),
            Revoke(usize, bool),
        }
        use Step::{Ask, Revoke};
        // (name, steps): each Ask is a request at t0 + seconds and the answer it gets.
        let cases: Vec<(&str, Vec<Step>)> = vec![
            (
                "a key no account has moves no lock",
                vec![
                    Ask(
                        Caller::Unknown(Refusal::no_key("the access key does not exist")),
                        0,
                        Err("does not exist"),
                    ),
                    Ask(
                        Caller::Unknown(Refusal::no_key("the access key does not exist")),
                        0,
                        Err("does not exist"),
                    ),
                    Ask(signed(0, Ok(())), 0, Ok(0)),
                ],
            ),
            (
                "one account locked, the others go on",
                vec![
                    Ask(signed(1, bad()), 0, Err("signature")),
                    Ask(signed(1, bad()), 0, Err("signature")),
                    Ask(signed(1, Ok(())), 0, Err("locked")),
                    Ask(signed(2, Ok(())), 0, Ok(2)),
                    Ask(signed(0, Ok(())), 0, Ok(0)),
                ],
            ),
            (
                "a temporary key's failures lock its account",
                vec![
                    Ask(temporary(2, bad()), 0, Err("signature")),
                    Ask(temporary(2, bad()), 0, Err("signature")),
                    Ask(signed(2, Ok(())), 0, Err("locked")),
                    Ask(signed(1, Ok(())), 0, Ok(1)),
                ],
            ),
            (
                "a temporary key until its end",
                vec![
                    Ask(temporary(1, Ok(())), 19, Ok(1)),
                    Ask(temporary(1, Ok(())), 20, Err("expired")),
                    Ask(temporary(1, Ok(())), 21, Err("expired")),
                    Ask(signed(1, Ok(())), 21, Ok(1)),
                ],
            ),
            (
                "a revoked key, then restored",
                vec![
                    Revoke(1, true),
                    Ask(signed(1, Ok(())), 0, Err("does not exist")),
                    Ask(temporary(1, Ok(())), 0, Err("does not exist")),
                    Ask(signed(1, Ok(())), 0, Err("does not exist")),
                    Ask(signed(2, Ok(())), 0, Ok(2)),
                    Revoke(1, false),
                    Ask(signed(1, Ok(())), 0, Ok(1)),
                ],
            ),
            (
                "restoring forgets the lock",
                vec![
                    Ask(signed(1, bad()), 0, Err("signature")),
                    Ask(signed(1, bad()), 0, Err("signature")),
                    Revoke(1, true),
                    Revoke(1, false),
                    Ask(signed(1, Ok(())), 0, Ok(1)),
                ],
            ),
        ];
        for (name, steps) in cases {
            let mut gate = Gate::new(3);
            for (i, step) in steps.into_iter().enumerate() {
                match step {
                    Revoke(account, revoked) => gate.set_revoked(account, revoked),
                    Ask(caller, at, want) => {
                        let got = gate.authorize(&opts, &caller, t0 + s(at));
                        match (got, want) {
                            (Ok(a), Ok(b)) => assert_eq!(a, b, "{name}, step {i}"),
                            (Err(r), Err(text)) => {
                                assert!(
                                    r.message.contains(text),
                                    "{name}, step {i}: {}",
                                    r.message
                                );
                                assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{name}, step {i}");
                            }
                            (got, want) => panic!("{name}, step {i}: {got:?}, want {want:?}"),
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn each_account_has_its_own_rate_limit() {
        let opts = SimOptions::default();
        let accounts = crate::accounts::accounts(&SimOptions {
            rate_limit: Some(2),
            accounts: vec![crate::options::SimAccount::new("b", "AKB", "sk", "p")],
            ..SimOptions::default()
        })
        .unwrap();
        let mut gate = Gate::new(2);
        let t0 = Instant::now();
        let mut verdicts = Vec::new();
        for account in [0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1] {
            let caller = signed(account, Ok(()));
            verdicts.push(match gate.check(&accounts, &opts, &caller, t0) {
                Verdict::Pass => "pass".to_string(),
                Verdict::Throttled(limit) => format!("429 {limit:?}"),
                Verdict::Refused(r) => r.message,
            });
        }
        let mut want = vec!["pass", "pass", "429 Some(2)"];
        want.extend(["pass"; 10]);
        want.push("429 Some(10)");
        assert_eq!(verdicts, want);
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
            let mut gate = KeyGate::default();
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
