//! The ECS metadata stand-in: its session-token flow, the temporary keys it hands out and
//! the gateway accepting them (with their security token, signed) until they expire, within
//! their account's budget.

use crate::harness::*;
use chrono::{DateTime, NaiveDateTime, Utc};
use recwatch_rtc::client::{ErrorKind, RtcClient};
use recwatch_rtc::secret::Secret;
use recwatch_rtc::{Auth, ClientConfig};
use recwatch_sim::{MetadataStats, SimAccount, SimAuth, SimMetadata, SimOptions, Simulator};
use std::time::Duration;

const AK_B: &str = "AKREGIONB";
const SK_B: &str = "sk-region-b";
const LIFETIME: Duration = Duration::from_secs(20);

/// `default` and `region-b`, the metadata stand-in handing out region b's keys.
fn with_metadata() -> SimOptions {
    SimOptions {
        auth: SimAuth::AkSk {
            access_key: AK.into(),
            secret_key: SK.into(),
        },
        rate_limit: Some(10),
        accounts: vec![SimAccount::new("region-b", AK_B, SK_B, "project-b")],
        metadata: Some(SimMetadata {
            account: "region-b".into(),
            key_lifetime: LIFETIME,
        }),
        ..static_opts()
    }
}

/// A temporary key as the stand-in answered it.
struct Temporary {
    access: String,
    secret: String,
    token: String,
    expires_at: DateTime<Utc>,
}

impl Temporary {
    fn key(&self) -> Key<'_> {
        Key {
            access_key: &self.access,
            secret_key: &self.secret,
            project: "project-b",
            security_token: Some(&self.token),
        }
    }
}

async fn session_token(
    c: &reqwest::Client,
    sim: &Simulator,
    ttl: Option<&str>,
) -> reqwest::Response {
    let base = sim.metadata_url().expect("the stand-in is served");
    let mut request = c.put(format!("{base}/meta-data/latest/api/token"));
    if let Some(ttl) = ttl {
        request = request.header("X-Metadata-Token-Ttl-Seconds", ttl);
    }
    request.send().await.unwrap()
}

async fn security_key(
    c: &reqwest::Client,
    sim: &Simulator,
    token: Option<&str>,
) -> reqwest::Response {
    let base = sim.metadata_url().unwrap();
    let mut request = c.get(format!("{base}/openstack/latest/securitykey"));
    if let Some(token) = token {
        request = request.header("X-Metadata-Token", token);
    }
    request.send().await.unwrap()
}

/// A session token, then a temporary key, as the SDK's `MetadataAccessor` asks for them.
async fn fetch(c: &reqwest::Client, sim: &Simulator) -> Temporary {
    let token = session_token(c, sim, Some("21600"))
        .await
        .text()
        .await
        .unwrap();
    let answer = security_key(c, sim, Some(&token)).await;
    assert_eq!(answer.status(), 200);
    let body: serde_json::Value = answer.json().await.unwrap();
    let credential = &body["credential"];
    let text = |field: &str| credential[field].as_str().unwrap().to_string();
    // The SDK's own format, `%Y-%m-%dT%H:%M:%S.%fZ`: six digits of fraction.
    let expires_at = NaiveDateTime::parse_from_str(&text("expires_at"), "%Y-%m-%dT%H:%M:%S%.6fZ")
        .unwrap()
        .and_utc();
    Temporary {
        access: text("access"),
        secret: text("secret"),
        token: text("securitytoken"),
        expires_at,
    }
}

// Paused clock: a session token ends exactly when the simulator's clock passes its TTL.
#[tokio::test(start_paused = true)]
async fn the_metadata_token_flow() {
    let sim = spawn(with_metadata()).await;
    let c = paused_client();
    for ttl in [None, Some("abc"), Some("0"), Some("21601")] {
        let answer = session_token(&c, &sim, ttl).await;
        assert_eq!(answer.status(), 400, "{ttl:?}");
        let text = answer.text().await.unwrap();
        assert!(text.contains("X-Metadata-Token-Ttl-Seconds"), "{text}");
    }
    let answer = session_token(&c, &sim, Some("60")).await;
    assert_eq!(answer.status(), 200);
    let token = answer.text().await.unwrap();
    assert!(!token.is_empty());

    // Without a live session token: 401, and not the no-agency text (the SDK then asks
    // for a new token and retries once).
    for sent in [None, Some("not-a-token")] {
        let answer = security_key(&c, &sim, sent).await;
        assert_eq!(answer.status(), 401, "{sent:?}");
        let text = answer.text().await.unwrap();
        assert!(text.contains("X-Metadata-Token"), "{text}");
        assert!(!text.contains("Cloud Service Agency"), "{text}");
    }
    let answer = security_key(&c, &sim, Some(&token)).await;
    assert_eq!(answer.status(), 200);
    let body: serde_json::Value = answer.json().await.unwrap();
    for field in ["access", "secret", "securitytoken", "expires_at"] {
        assert!(body["credential"][field].is_string(), "{field}: {body}");
    }

    tokio::time::advance(Duration::from_secs(60)).await;
    let answer = security_key(&c, &sim, Some(&token)).await;
    assert_eq!(answer.status(), 401);
    assert!(answer.text().await.unwrap().contains("expired"));

    assert_eq!(
        sim.stats().metadata,
        MetadataStats {
            token_requests: 5,
            key_requests: 4,
            keys_issued: 1,
            refused: 7,
        }
    );
    assert_eq!(sim.stats().requests, 0, "not the API's requests");
}

// Paused clock: the key is accepted up to the last instant of its lifetime and refused from
// it on, however long the requests take.
#[tokio::test(start_paused = true)]
async fn temporary_keys_are_accepted_until_they_expire() {
    let sim = spawn(with_metadata()).await;
    let c = paused_client();
    let key = fetch(&c, &sim).await;
    let now = sim.stats().since.unwrap() + chrono::Duration::from_std(LIFETIME).unwrap();
    assert!(
        (key.expires_at - now).num_milliseconds().abs() < 1000,
        "expires_at {} is the key's lifetime from now ({now})",
        key.expires_at
    );
    assert_eq!(
        get_as(&c, &sim, "job-0000", &key.key(), &[]).await.status(),
        200
    );

    // The security token is required, signed, and must be the key's own.
    let without = Key {
        security_token: None,
        ..key.key()
    };
    let unsigned = [("X-Security-Token", key.token.as_str())];
    let wrong = Key {
        security_token: Some("gQ-someone-elses"),
        ..key.key()
    };
    for (name, answer, says) in [
        (
            "missing",
            get_as(&c, &sim, "job-0000", &without, &[]).await,
            "needs its X-Security-Token",
        ),
        (
            "unsigned",
            get_as(&c, &sim, "job-0000", &without, &unsigned).await,
            "not signed",
        ),
        (
            "another's",
            get_as(&c, &sim, "job-0000", &wrong, &[]).await,
            "does not belong",
        ),
    ] {
        let (status, code, message) = error_body(answer).await;
        assert_eq!((status, code.as_str()), (401, "APIG.0301"), "{name}");
        assert!(message.contains(says), "{name}: {message}");
        assert!(
            !message.contains(&key.token),
            "{name}: the token in {message}"
        );
    }

    tokio::time::advance(LIFETIME - Duration::from_millis(1)).await;
    assert_eq!(
        get_as(&c, &sim, "job-0000", &key.key(), &[]).await.status(),
        200
    );
    tokio::time::advance(Duration::from_millis(1)).await;
    let (status, code, message) =
        error_body(get_as(&c, &sim, "job-0000", &key.key(), &[]).await).await;
    assert_eq!((status, code.as_str()), (401, "APIG.0301"));
    assert!(message.contains("expired"), "{message}");

    // A renewal: a fresh key, a later end, accepted at once.
    let renewed = fetch(&c, &sim).await;
    assert_ne!(renewed.access, key.access);
    assert!(renewed.expires_at > key.expires_at);
    assert_eq!(
        get_as(&c, &sim, "job-0000", &renewed.key(), &[])
            .await
            .status(),
        200
    );

    let stats = sim.stats();
    let b = &stats.by_account["region-b"];
    assert_eq!((b.requests, b.temporary, b.refused_auth), (7, 7, 4));
    assert_eq!(stats.metadata.keys_issued, 2);
    assert!(!stats.by_account.contains_key("default"));
}

// Paused clock: all 12 requests arrive in one instant.
#[tokio::test(start_paused = true)]
async fn temporary_keys_share_their_accounts_budget() {
    let sim = spawn(with_metadata()).await;
    let c = paused_client();
    let key = fetch(&c, &sim).await;
    let own = Key {
        access_key: AK_B,
        secret_key: SK_B,
        project: "project-b",
        security_token: None,
    };
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(
            get_as(&c, &sim, "job-0000", &own, &[])
                .await
                .status()
                .as_u16(),
        );
        statuses.push(
            get_as(&c, &sim, "job-0000", &key.key(), &[])
                .await
                .status()
                .as_u16(),
        );
    }
    let want: Vec<u16> = [[200; 10].as_slice(), &[429, 429]].concat();
    assert_eq!(statuses, want);
    let b = &sim.stats().by_account["region-b"];
    assert_eq!(
        (
            b.requests,
            b.temporary,
            b.max_per_sliding_second,
            b.throttled
        ),
        (12, 6, 12, 2)
    );
}

#[tokio::test]
async fn revoking_the_account_stops_its_temporary_keys_and_the_metadata_answers() {
    let sim = spawn(with_metadata()).await;
    let c = client();
    let key = fetch(&c, &sim).await;
    assert!(sim.revoke_key("region-b"));
    let (status, _, message) =
        error_body(get_as(&c, &sim, "job-0000", &key.key(), &[]).await).await;
    assert_eq!(status, 401);
    assert!(message.contains("does not exist"), "{message}");
    let token = session_token(&c, &sim, Some("60"))
        .await
        .text()
        .await
        .unwrap();
    let answer = security_key(&c, &sim, Some(&token)).await;
    assert_eq!(answer.status(), 401);
    assert!(
        answer
            .text()
            .await
            .unwrap()
            .contains("Please configure Cloud Service Agency first")
    );
    assert!(sim.restore_key("region-b"));
    assert_eq!(
        get_as(&c, &sim, "job-0000", &key.key(), &[]).await.status(),
        200
    );

    // A metadata service failing for a while, through the control API.
    let fail = c
        .post(format!("{}/_sim/metadata/fail", sim.url()))
        .json(&serde_json::json!({"times": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(fail.status(), 204);
    for _ in 0..2 {
        assert_eq!(security_key(&c, &sim, Some(&token)).await.status(), 500);
    }
    assert_eq!(security_key(&c, &sim, Some(&token)).await.status(), 200);
    let stats = sim.stats().metadata;
    assert_eq!(
        (stats.key_requests, stats.keys_issued, stats.refused),
        (5, 2, 3)
    );
}

/// recwatch's own client, given a temporary key as `Auth::AkSk` with its security token,
/// signs what the gateway wants; the same client after the key is revoked reads the refusal
/// as refused credentials.
#[tokio::test]
async fn recwatchs_client_polls_with_a_temporary_key() {
    let sim = spawn(SimOptions {
        metadata: Some(SimMetadata {
            account: "region-b".into(),
            key_lifetime: Duration::from_secs(3600),
        }),
        ..with_metadata()
    })
    .await;
    let key = fetch(&client(), &sim).await;
    let mut config = ClientConfig::new(
        sim.url().parse().unwrap(),
        Auth::AkSk {
            access_key: key.access.clone(),
            secret_key: Secret::new(key.secret.clone()),
            security_token: Some(Secret::new(key.token.clone())),
        },
    );
    config.project_id = Some("project-b".into());
    let rtc = RtcClient::new(&config).unwrap();
    assert!(rtc.get_job("demo-app", "job-0000").await.is_ok());
    sim.revoke_key("region-b");
    let e = rtc.get_job("demo-app", "job-0000").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unauthorized, "{e}");
    assert!(!e.to_string().contains(&key.token), "{e}");
    assert_eq!(sim.stats().by_account["region-b"].temporary, 2);
}

#[tokio::test]
async fn not_served_without_its_options() {
    let sim = spawn(static_opts()).await;
    assert_eq!(sim.metadata_url(), None);
    let answer = client()
        .put(format!("{}/meta-data/latest/api/token", sim.url()))
        .header("X-Metadata-Token-Ttl-Seconds", "60")
        .send()
        .await
        .unwrap();
    let (status, code, _) = error_body(answer).await;
    assert_eq!((status, code.as_str()), (404, "APIG.0101"));
}

/// recwatch's own client with `ecs-metadata` credentials (`recwatch_rtc::Credentials`): one
/// session token and one key for many polls, each signed with the key and its security token
/// and accepted by the gateway as region b's; the handle describes the key, never its secret.
#[tokio::test]
async fn recwatchs_client_polls_with_the_stand_ins_keys() {
    let sim = spawn(SimOptions {
        metadata: Some(SimMetadata {
            account: "region-b".into(),
            // Long enough that no renewal falls due while the test runs on the real clock.
            key_lifetime: Duration::from_secs(3600),
        }),
        ..with_metadata()
    })
    .await;
    let url = sim.metadata_url().unwrap().parse().unwrap();
    let creds = recwatch_rtc::Credentials::ecs_metadata(recwatch_rtc::MetadataConfig::new(url));
    let mut config = ClientConfig::new(sim.url().parse().unwrap(), creds.clone());
    config.project_id = Some("project-b".into());
    let client = RtcClient::new(&config).unwrap();
    for _ in 0..5 {
        client.get_job("demo-app", "job-0000").await.unwrap();
    }
    let stats = sim.stats();
    let m = &stats.metadata;
    assert_eq!((m.token_requests, m.key_requests, m.keys_issued), (1, 1, 1));
    let b = &stats.by_account["region-b"];
    assert_eq!((b.requests, b.temporary, b.refused_auth), (5, 5, 0));
    let described = creds.describe();
    assert!(
        described.contains("temporary AK/SK with security token"),
        "{described}"
    );
    let keys = creds.held().unwrap();
    let Auth::AkSk { secret_key, .. } = keys.auth() else {
        panic!("temporary keys are AK/SK")
    };
    assert!(!described.contains(secret_key.expose()), "{described}");
    assert!(!format!("{creds:?}").contains(secret_key.expose()));
}
