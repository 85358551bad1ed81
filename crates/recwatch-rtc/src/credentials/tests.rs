//! The sources read from their tables, and `ecs-metadata` against a loopback stand-in of the
//! metadata service (with a stand-in of the API beside it that accepts a request only when it
//! is signed with keys that are valid at the test's clock): renewal ahead of expiry, one round
//! trip per renewal, back-off, expiry, the session token's headers, and no secret in any text.

use super::*;
use crate::client::{ClientConfig, ErrorKind};
use crate::{RtcClient, sign};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, put};
use chrono::TimeDelta;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::watch;
use url::Url;

/// The tests' deadline, the workspace's one (`src/testing.rs`).
#[path = "../../../../src/testing.rs"]
#[allow(dead_code)]
mod testing;
use testing::T;

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

/// Environment variables as a test writes them.
type Vars<'a> = &'a [(&'a str, &'a str)];

/// What the stand-in handed out: secret key, security token and expiry, by access key.
type Issued = HashMap<String, (String, String, DateTime<Utc>)>;

fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
    move |name| {
        pairs
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }
}

#[test]
fn env_table() {
    // (name, variables, Ok(describe, project id) or Err(start of the message))
    type Want = Result<(&'static str, Option<&'static str>), &'static str>;
    let cases: &[(&str, Vars, Want)] = &[
        (
            "keys and project",
            &[
                (ENV_AK, "HPUAENVAK"),
                (ENV_SK, "env-secret"),
                (ENV_PROJECT_ID, "proj-1"),
            ],
            Ok((
                "env: AK/SK (SDK-HMAC-SHA256), access key HPUA…",
                Some("proj-1"),
            )),
        ),
        (
            "temporary keys",
            &[
                (ENV_AK, "TMPAK"),
                (ENV_SK, "env-secret"),
                (ENV_SECURITY_TOKEN, "env-token"),
            ],
            Ok((
                "env: temporary AK/SK with security token (SDK-HMAC-SHA256), access key TMPA…",
                None,
            )),
        ),
        (
            "an empty project id is none",
            &[(ENV_AK, "AKAK"), (ENV_SK, "s"), (ENV_PROJECT_ID, " ")],
            Ok(("env: AK/SK (SDK-HMAC-SHA256), access key AKAK…", None)),
        ),
        (
            "no secret key",
            &[(ENV_AK, "AKAK")],
            Err("HUAWEICLOUD_SDK_SK not set"),
        ),
        (
            "an empty access key counts as unset",
            &[(ENV_AK, ""), (ENV_SK, "s")],
            Err("HUAWEICLOUD_SDK_AK not set"),
        ),
        (
            "nothing",
            &[],
            Err("HUAWEICLOUD_SDK_AK and HUAWEICLOUD_SDK_SK not set"),
        ),
    ];
    for (name, pairs, want) in cases {
        match (Credentials::from_env(vars(pairs)), want) {
            (Ok(c), Ok((describe, project))) => {
                assert_eq!(c.describe(), *describe, "{name}");
                assert_eq!(c.project_id(), *project, "{name}");
                assert_eq!(c.source(), SourceKind::Env, "{name}");
                assert!(c.signs(), "{name}");
            }
            (Err(e), Err(want)) => assert!(e.0.starts_with(want), "{name}: {e}"),
            (got, want) => panic!("{name}: {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn profile_table() {
    let path = Path::new("/home/rw/.huaweicloud/credentials");
    type Want = Result<(&'static str, Option<&'static str>), &'static str>;
    let cases: &[(&str, &str, Want)] = &[
        (
            "basic with a project",
            "[basic]\nak = HPUAPROFILE\nsk = profile-secret\nproject_id = p-9\n",
            Ok((
                "profile /home/rw/.huaweicloud/credentials [basic]: AK/SK (SDK-HMAC-SHA256), access key HPUA…",
                Some("p-9"),
            )),
        ),
        (
            "with a security token, beside a global section",
            "[global]\nak = G\nsk = g\n[basic]\nak = TMPK\nsk = s\nsecurity_token = t\n",
            Ok((
                "profile /home/rw/.huaweicloud/credentials [basic]: temporary AK/SK with security token (SDK-HMAC-SHA256), access key TMPK…",
                None,
            )),
        ),
        (
            "only a global section",
            "[global]\nak = G\nsk = g\n",
            Err("/home/rw/.huaweicloud/credentials has no [basic] section"),
        ),
        (
            "no sk",
            "[basic]\nak = A\nsk =\n",
            Err("/home/rw/.huaweicloud/credentials [basic] needs both ak and sk"),
        ),
        (
            "not INI",
            "ak = A\n",
            Err("/home/rw/.huaweicloud/credentials: line 1"),
        ),
    ];
    for (name, text, want) in cases {
        match (Credentials::from_profile_text(path, text), want) {
            (Ok(c), Ok((describe, project))) => {
                assert_eq!(c.describe(), *describe, "{name}");
                assert_eq!(c.project_id(), *project, "{name}");
                assert_eq!(c.source(), SourceKind::Profile, "{name}");
            }
            (Err(e), Err(want)) => assert!(e.0.starts_with(want), "{name}: {e}"),
            (got, want) => panic!("{name}: {got:?}, want {want:?}"),
        }
    }
    let missing = Credentials::from_profile(Path::new("/nonexistent/credentials")).unwrap_err();
    assert!(
        missing
            .0
            .starts_with("cannot read the credentials file /nonexistent/credentials"),
        "{missing}"
    );
}

#[test]
fn profile_path_table() {
    let cases: &[(&str, Vars, Option<&str>)] = &[
        (
            "the variable wins",
            &[
                (ENV_CREDENTIALS_FILE, "/etc/rw/creds"),
                ("HOME", "/home/rw"),
            ],
            Some("/etc/rw/creds"),
        ),
        (
            "the home directory's",
            &[("HOME", "/home/rw")],
            Some("/home/rw/.huaweicloud/credentials"),
        ),
        ("no home", &[], None),
    ];
    for (name, pairs, want) in cases {
        assert_eq!(
            Credentials::profile_path(vars(pairs)),
            want.map(PathBuf::from),
            "{name}"
        );
    }
}

#[test]
fn budget_identity_and_equality() {
    let aksk = |ak: &str| Auth::AkSk {
        access_key: ak.into(),
        secret_key: Secret::new("s"),
        security_token: None,
    };
    let a = Credentials::from(aksk("AK1"));
    assert_eq!(a.budget_identity(), Some("AK1"));
    assert_eq!(a, Credentials::from(aksk("AK1")));
    assert_ne!(a, Credentials::from(aksk("AK2")));
    let env = Credentials::from_env(vars(&[(ENV_AK, "AK1"), (ENV_SK, "s")])).unwrap();
    assert_eq!(env.budget_identity(), Some("AK1"));
    assert_ne!(a, env, "another source is another configuration");
    let temporary = Credentials::from(Auth::AkSk {
        access_key: "AK1".into(),
        secret_key: Secret::new("s"),
        security_token: Some(Secret::new("t")),
    });
    assert_eq!(
        temporary.budget_identity(),
        None,
        "temporary keys, written or not"
    );
    let token = Credentials::from(Auth::Token {
        token: Secret::new("tok"),
    });
    assert_eq!(token.budget_identity(), None);
    assert!(!token.signs());
    let url: Url = "http://127.0.0.1:1".parse().unwrap();
    let md = Credentials::ecs_metadata(MetadataConfig::new(url.clone()));
    assert_eq!(
        md.budget_identity(),
        None,
        "a budget never follows a temporary key"
    );
    assert!(md.signs());
    assert_eq!(md, Credentials::ecs_metadata(MetadataConfig::new(url)));
    assert_eq!(
        md.describe(),
        "ecs-metadata http://127.0.0.1:1 (renewed 40m before expiry): none fetched yet"
    );
}

/// The loopback stand-in: the metadata service and an API that checks signatures.
struct StandIn {
    clock: Arc<Mutex<DateTime<Utc>>>,
    /// How long each credential handed out lives.
    lifetime: Mutex<TimeDelta>,
    /// The status the next `securitykey` GETs answer when not 200 (a failing service).
    failing: Mutex<Option<StatusCode>>,
    /// The token PUT answers 404 (a service without session tokens).
    no_tokens: bool,
    /// GETs answered 401 ("token expired") before the first with a token from a second PUT.
    expire_first_token: Mutex<bool>,
    puts: AtomicUsize,
    gets: AtomicUsize,
    /// `X-Metadata-Token-Ttl-Seconds` of each PUT and `X-Metadata-Token` of each GET.
    ttls: Mutex<Vec<String>>,
    tokens: Mutex<Vec<Option<String>>>,
    /// Each generation's secret key and expiry, by access key.
    issued: Mutex<Issued>,
    /// GETs wait until this is true.
    gate: watch::Sender<bool>,
    /// GETs received, for a test to await.
    arrived: watch::Sender<usize>,
    /// API requests answered 200, and refused.
    api_ok: AtomicUsize,
    api_refused: AtomicUsize,
}

impl StandIn {
    fn new(now: DateTime<Utc>, lifetime: TimeDelta) -> StandIn {
        StandIn {
            clock: Arc::new(Mutex::new(now)),
            lifetime: Mutex::new(lifetime),
            failing: Mutex::new(None),
            no_tokens: false,
            expire_first_token: Mutex::new(false),
            puts: AtomicUsize::new(0),
            gets: AtomicUsize::new(0),
            ttls: Mutex::new(Vec::new()),
            tokens: Mutex::new(Vec::new()),
            issued: Mutex::new(HashMap::new()),
            gate: watch::channel(true).0,
            arrived: watch::channel(0).0,
            api_ok: AtomicUsize::new(0),
            api_refused: AtomicUsize::new(0),
        }
    }

    fn now(&self) -> DateTime<Utc> {
        *self.clock.lock().unwrap()
    }

    fn advance(&self, by: TimeDelta) {
        *self.clock.lock().unwrap() += by;
    }

    fn fail(&self, status: Option<StatusCode>) {
        *self.failing.lock().unwrap() = status;
    }

    fn gets(&self) -> usize {
        self.gets.load(Ordering::SeqCst)
    }

    fn puts(&self) -> usize {
        self.puts.load(Ordering::SeqCst)
    }

    /// Every secret this stand-in handed out.
    fn secrets(&self) -> Vec<String> {
        let issued = self.issued.lock().unwrap();
        let mut all: Vec<String> = issued
            .values()
            .flat_map(|(sk, token, _)| [sk.clone(), token.clone()])
            .collect();
        all.push("session-token-".into());
        all
    }
}

async fn put_token(State(s): State<Arc<StandIn>>, headers: HeaderMap) -> (StatusCode, String) {
    let n = s.puts.fetch_add(1, Ordering::SeqCst) + 1;
    let ttl = headers
        .get("x-metadata-token-ttl-seconds")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    s.ttls.lock().unwrap().push(ttl);
    if s.no_tokens {
        return (StatusCode::NOT_FOUND, "not found".into());
    }
    (StatusCode::OK, format!("session-token-{n}"))
}

async fn get_key(State(s): State<Arc<StandIn>>, headers: HeaderMap) -> (StatusCode, String) {
    let token = headers
        .get("x-metadata-token")
        .map(|v| v.to_str().unwrap().to_string());
    s.tokens.lock().unwrap().push(token.clone());
    let n = s.gets.fetch_add(1, Ordering::SeqCst) + 1;
    s.arrived.send_replace(n);
    s.gate.subscribe().wait_for(|open| *open).await.unwrap();
    {
        let mut expire = s.expire_first_token.lock().unwrap();
        if *expire && token.as_deref() == Some("session-token-1") {
            *expire = false;
            return (StatusCode::UNAUTHORIZED, "token expired".into());
        }
    }
    if let Some(status) = *s.failing.lock().unwrap() {
        return (status, "metadata service unavailable".into());
    }
    let expires = s.now() + *s.lifetime.lock().unwrap();
    let (ak, sk, st) = (
        format!("TEMPAK{n:04}"),
        format!("temp-secret-{n}-0123456789"),
        format!("temp-security-token-{n}-abcdefghij"),
    );
    s.issued
        .lock()
        .unwrap()
        .insert(ak.clone(), (sk.clone(), st.clone(), expires));
    let body = serde_json::json!({"credential": {
        "access": ak,
        "secret": sk,
        "securitytoken": st,
        "expires_at": expires.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
    }});
    (StatusCode::OK, body.to_string())
}

/// The API: 200 only for a request signed, over what was sent, with a key the stand-in
/// issued, its security token, and before that key's expiry at the test's clock.
async fn api(
    State(s): State<Arc<StandIn>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> (StatusCode, String) {
    let ok = (|| {
        let auth = headers.get("authorization")?.to_str().ok()?;
        let parsed = sign::parse_authorization(auth)?;
        let issued = s.issued.lock().unwrap();
        let (sk, st, expires) = issued.get(parsed.access_key)?;
        let sent_token = headers.get("x-security-token")?.to_str().ok()?;
        // The token is signed, as the SDK signs it.
        parsed
            .signed_headers
            .split(';')
            .find(|h| *h == "x-security-token")?;
        let pairs: Vec<(&str, &str)> = parsed
            .signed_headers
            .split(';')
            .map(|name| Some((name, headers.get(name)?.to_str().ok()?)))
            .collect::<Option<_>>()?;
        let again = sign::sign(parsed.access_key, sk, "GET", uri.path(), &[], &pairs, b"");
        (again.authorization == auth && sent_token == st && s.now() < *expires).then_some(())
    })();
    match ok {
        Some(()) => {
            s.api_ok.fetch_add(1, Ordering::SeqCst);
            (StatusCode::OK, r#"{"state":"RUNNING"}"#.into())
        }
        None => {
            s.api_refused.fetch_add(1, Ordering::SeqCst);
            (
                StatusCode::UNAUTHORIZED,
                r#"{"error_code":"APIG.0301","error_msg":"Incorrect IAM authentication information"}"#
                    .into(),
            )
        }
    }
}

/// Starts `s` on 127.0.0.1 port 0 (the listener kept by the server task); its base URL.
async fn serve(s: Arc<StandIn>) -> Url {
    let app = Router::new()
        .route("/meta-data/latest/api/token", put(put_token))
        .route("/openstack/latest/securitykey", get(get_key))
        .route("/v2/apps/{app}/individual-stream-jobs/{job}", get(api))
        .with_state(s);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url.parse().unwrap()
}

const DAY: TimeDelta = TimeDelta::hours(24);

/// A stand-in handing out keys that live `lifetime`, and credentials reading it on the
/// stand-in's clock.
async fn start(
    lifetime: TimeDelta,
    tune: impl FnOnce(&mut StandIn),
) -> (Arc<StandIn>, Credentials) {
    let mut s = StandIn::new(at("2026-12-08T00:00:00Z"), lifetime);
    tune(&mut s);
    let s = Arc::new(s);
    let url = serve(s.clone()).await;
    let clock = s.clock.clone();
    let creds = Credentials::ecs_metadata_with_clock(
        MetadataConfig::new(url),
        Arc::new(move || *clock.lock().unwrap()),
    );
    (s, creds)
}

fn access_key(keys: &Signing) -> &str {
    match keys.auth() {
        Auth::AkSk { access_key, .. } => access_key,
        Auth::Token { .. } => panic!("temporary keys are AK/SK"),
    }
}

/// Requests through the client all along a day's keys' life and past their renewal: every
/// one is answered 200 by an API that checks the keys against the clock, and the keys change
/// at the renewal, fetched once.
#[tokio::test]
async fn renews_before_expiry_without_a_failed_request() {
    let (s, creds) = start(DAY, |_| {}).await;
    let endpoint = serve(s.clone()).await;
    let mut config = ClientConfig::new(endpoint, creds.clone());
    config.project_id = Some("proj".into());
    let client = RtcClient::new(&config).unwrap();
    let mut seen = Vec::new();
    // Every 10 minutes for 26 hours: the first keys expire at 24 h.
    for _ in 0..(26 * 6) {
        client
            .get_job("app", "job")
            .await
            .expect("every request is answered");
        seen.push(access_key(&creds.held().unwrap()).to_string());
        s.advance(TimeDelta::minutes(10));
    }
    assert_eq!(s.api_refused.load(Ordering::SeqCst), 0);
    assert_eq!(s.api_ok.load(Ordering::SeqCst), 26 * 6);
    seen.dedup();
    assert_eq!(
        seen,
        ["TEMPAK0001", "TEMPAK0002"],
        "renewed once, at 23h20m"
    );
    assert_eq!(
        (s.puts(), s.gets()),
        (2, 2),
        "a session token and a key per renewal"
    );
    // The second keys were fetched within their renewal window, not at the first request
    // past the old keys' expiry.
    let issued = s.issued.lock().unwrap();
    let first = issued["TEMPAK0001"].2;
    let second = issued["TEMPAK0002"].2;
    assert!(
        second - DAY < first - TimeDelta::minutes(30),
        "{first} {second}"
    );
}

/// Many requests at once, with no keys yet and then with keys due: one GET each time. While a
/// renewal is held up, requests with still-valid keys are not held up with it.
#[tokio::test]
async fn one_round_trip_per_renewal_however_many_ask() {
    let (s, creds) = start(DAY, |_| {}).await;
    s.gate.send_replace(false);
    let mut arrived = s.arrived.subscribe();
    let first: Vec<_> = (0..50)
        .map(|_| {
            let c = creds.clone();
            tokio::spawn(async move { c.current().await })
        })
        .collect();
    tokio::time::timeout(T, arrived.wait_for(|n| *n == 1))
        .await
        .unwrap()
        .unwrap();
    s.gate.send_replace(true);
    for task in first {
        let keys = task.await.unwrap().unwrap();
        assert_eq!(access_key(&keys), "TEMPAK0001");
    }
    assert_eq!(s.gets(), 1);

    // Due: one request renews (held at the gate), the others sign with the old keys now.
    s.advance(TimeDelta::hours(23) + TimeDelta::minutes(30));
    s.gate.send_replace(false);
    let renewing = {
        let c = creds.clone();
        tokio::spawn(async move { c.current().await })
    };
    tokio::time::timeout(T, arrived.wait_for(|n| *n == 2))
        .await
        .unwrap()
        .unwrap();
    for _ in 0..50 {
        let keys = tokio::time::timeout(T, creds.current())
            .await
            .expect("a request with valid keys does not wait for the renewal")
            .unwrap();
        assert_eq!(access_key(&keys), "TEMPAK0001");
    }
    s.gate.send_replace(true);
    let renewed = renewing.await.unwrap().unwrap();
    assert_eq!(access_key(&renewed), "TEMPAK0002");
    assert_eq!(access_key(&creds.current().await.unwrap()), "TEMPAK0002");
    assert_eq!(s.gets(), 2);
}

/// A failing service while the old keys are valid: the requests go on with them, a renewal
/// is tried 1 s, 2 s, 4 s ... apart (never at each request), and succeeds once it can.
#[tokio::test]
async fn failed_renewal_retried_with_backoff_while_old_keys_serve() {
    let (s, creds) = start(DAY, |_| {}).await;
    creds.current().await.unwrap();
    s.fail(Some(StatusCode::SERVICE_UNAVAILABLE));
    s.advance(TimeDelta::hours(23) + TimeDelta::minutes(30));
    let ms = TimeDelta::milliseconds;
    // (advance before the request, GETs after it)
    let steps = [
        (ms(0), 2),
        (ms(0), 2),
        (ms(999), 2),
        (ms(1), 3),
        (ms(1999), 3),
        (ms(1), 4),
        (ms(3999), 4),
        (ms(1), 5),
    ];
    for (i, (by, gets)) in steps.into_iter().enumerate() {
        s.advance(by);
        let keys = creds.current().await.expect("the old keys are still valid");
        assert_eq!(access_key(&keys), "TEMPAK0001", "step {i}");
        assert_eq!(s.gets(), gets, "step {i}");
    }
    s.fail(None);
    s.advance(ms(8000));
    assert_eq!(access_key(&creds.current().await.unwrap()), "TEMPAK0006");
    // Renewed: no back-off left, nothing due.
    s.advance(TimeDelta::hours(1));
    creds.current().await.unwrap();
    assert_eq!(s.gets(), 6);
}

/// Past the keys' expiry with the service down: the request fails as
/// `credentials_unavailable` and never reaches the API; the next one within the back-off does
/// not ask the service again. Once it answers, the next request gets new keys.
#[tokio::test]
async fn expiry_without_renewal_is_credentials_unavailable() {
    let (s, creds) = start(TimeDelta::hours(1), |_| {}).await;
    let endpoint = serve(s.clone()).await;
    let mut config = ClientConfig::new(endpoint, creds.clone());
    config.project_id = Some("proj".into());
    let client = RtcClient::new(&config).unwrap();
    client.get_job("app", "job").await.unwrap();
    s.fail(Some(StatusCode::INTERNAL_SERVER_ERROR));
    s.advance(TimeDelta::minutes(59) + TimeDelta::seconds(45));
    let e = client.get_job("app", "job").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::CredentialsUnavailable, "{e}");
    assert!(e.not_sent);
    let text = e.cause();
    assert!(
        text.contains("the temporary credentials expire at 2026-12-08T01:00:00Z"),
        "{text}"
    );
    assert!(text.contains("HTTP 500"), "{text}");
    assert_eq!(s.api_ok.load(Ordering::SeqCst), 1);
    assert_eq!(
        s.api_refused.load(Ordering::SeqCst),
        0,
        "nothing unsigned went out"
    );
    let gets = s.gets();
    let again = creds.current().await.unwrap_err();
    assert_eq!(again.kind, ErrorKind::CredentialsUnavailable);
    assert_eq!(
        s.gets(),
        gets,
        "within the back-off the service is not asked"
    );
    s.fail(None);
    s.advance(TimeDelta::seconds(2));
    client.get_job("app", "job").await.unwrap();
    for secret in s.secrets() {
        assert!(!text.contains(&secret), "{text}");
    }
}

/// The session token: asked for with the SDK's TTL header and sent with the key's GET; a
/// service without tokens (404) is asked without one; a 401 gets a new token and one retry.
#[tokio::test]
async fn session_token_headers_table() {
    // (name, tune, PUTs, the GETs' X-Metadata-Token)
    type Tune = fn(&mut StandIn);
    let cases: [(&str, Tune, usize, Vec<Option<&str>>); 3] = [
        ("a token", |_| {}, 1, vec![Some("session-token-1")]),
        ("no tokens", |s| s.no_tokens = true, 1, vec![None]),
        (
            "the token expired",
            |s| *s.expire_first_token.get_mut().unwrap() = true,
            2,
            vec![Some("session-token-1"), Some("session-token-2")],
        ),
    ];
    for (name, tune, puts, tokens) in cases {
        let (s, creds) = start(DAY, tune).await;
        let keys = creds
            .current()
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            access_key(&keys),
            format!("TEMPAK{:04}", tokens.len()),
            "{name}"
        );
        assert_eq!(s.puts(), puts, "{name}");
        assert!(
            s.ttls.lock().unwrap().iter().all(|t| t == "21600"),
            "{name}: {:?}",
            s.ttls
        );
        let sent = s.tokens.lock().unwrap().clone();
        let want: Vec<Option<String>> = tokens.iter().map(|t| t.map(String::from)).collect();
        assert_eq!(sent, want, "{name}");
        // The session token is kept: the next renewal within its TTL asks no new one.
        s.advance(DAY - TimeDelta::minutes(30));
        creds.current().await.unwrap();
        assert_eq!(
            s.puts(),
            puts + 1,
            "{name}: 23h30m is past the 6-hour token"
        );
    }
}

/// No secret in `Debug`, `describe`, a renewal's log fields or a failure's text.
#[tokio::test]
async fn secrets_stay_out_of_every_text() {
    let (s, creds) = start(DAY, |_| {}).await;
    let keys = creds.current().await.unwrap();
    s.fail(Some(StatusCode::BAD_GATEWAY));
    s.advance(DAY);
    let err = creds.current().await.unwrap_err();
    let texts = [
        format!("{creds:?}"),
        creds.describe(),
        format!("{keys:?}"),
        keys.describe_keys(),
        format!("{err:?}"),
        err.to_string(),
        err.cause(),
    ];
    let secrets = s.secrets();
    assert!(secrets.len() >= 3);
    for text in &texts {
        for secret in &secrets {
            assert!(!text.contains(secret.as_str()), "{secret} in {text}");
        }
    }
    assert!(texts[1].contains("access key TEMP…"), "{}", texts[1]);
    assert!(
        texts[1].contains("expires 2026-12-09T00:00:00Z"),
        "{}",
        texts[1]
    );
    // The redactor knows the keys, so an answer echoing them is cleaned.
    let Auth::AkSk { secret_key, .. } = keys.auth() else {
        unreachable!()
    };
    let echoed = format!("bad key {}", secret_key.expose());
    assert_eq!(keys.redactor().redact(&echoed), "bad key ***");
    for (name, text) in [
        (
            "static",
            format!(
                "{:?}",
                Credentials::from(Auth::AkSk {
                    access_key: "AK".into(),
                    secret_key: Secret::new("static-secret"),
                    security_token: Some(Secret::new("static-token")),
                })
            ),
        ),
        (
            "env",
            format!(
                "{:?}",
                Credentials::from_env(vars(&[(ENV_AK, "AK"), (ENV_SK, "static-secret")]))
            ),
        ),
        (
            "profile",
            format!(
                "{:?}",
                Credentials::from_profile_text(
                    Path::new("/c"),
                    "[basic]\nak = AK\nsk = static-secret\n"
                )
            ),
        ),
    ] {
        assert!(!text.contains("static-"), "{name}: {text}");
    }
}

/// A service answer that is not a credential fails the renewal with a message naming the
/// field, never a value.
#[test]
fn securitykey_answers_table() {
    let cases: &[(&str, &str, Result<&str, &str>)] = &[
        (
            "the SDK's shape",
            r#"{"credential":{"access":"A1","secret":"s1","securitytoken":"t1","expires_at":"2026-12-09T00:00:00.000000Z"}}"#,
            Ok("A1"),
        ),
        (
            "the other spelling",
            r#"{"credentials":{"accessKeyId":"A2","secretAccessKey":"s2","securityToken":"t2","expiration":"2026-12-09T00:00:00Z"}}"#,
            Ok("A2"),
        ),
        (
            "no secret",
            r#"{"credential":{"access":"A1","securitytoken":"t1","expires_at":"2026-12-09T00:00:00Z"}}"#,
            Err("the securitykey answer has no credential.secret"),
        ),
        (
            "a bad expiry",
            r#"{"credential":{"access":"A1","secret":"hush","securitytoken":"t1","expires_at":"tomorrow"}}"#,
            Err("credential.expires_at \"tomorrow\" is not"),
        ),
        (
            "not JSON",
            "hush",
            Err("the securitykey answer is not JSON"),
        ),
    ];
    for (name, body, want) in cases {
        match (metadata::read_credential_for_test(body.as_bytes()), want) {
            (Ok(ak), Ok(want)) => assert_eq!(ak, *want, "{name}"),
            (Err(e), Err(want)) => {
                assert!(e.starts_with(want), "{name}: {e}");
                assert!(!e.contains("hush"), "{name}: {e}");
            }
            (got, want) => panic!("{name}: {got:?}, want {want:?}"),
        }
    }
}
