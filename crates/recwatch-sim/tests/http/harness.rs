//! What every HTTP test of the simulator shares: starting one, clients (one for tokio's paused
//! clock), requests signed as the SDK signs them, and reading the API's error body.

use chrono::{DateTime, Utc};
use recwatch_rtc::model::JobSnapshot;
use recwatch_rtc::sign;
use recwatch_sim::{SimAuth, SimOptions, Simulator, start};
use std::time::Duration;
use tokio::net::TcpListener;

pub async fn spawn(opts: SimOptions) -> Simulator {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    start(listener, opts).await.unwrap()
}

pub fn static_opts() -> SimOptions {
    SimOptions {
        jobs: 3,
        scripted: false,
        ..SimOptions::default()
    }
}

pub fn client() -> reqwest::Client {
    // no_proxy: a proxy from the environment must not see loopback traffic.
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// A client for tests on tokio's paused clock. The paused clock jumps to the next timer
/// whenever the runtime would otherwise sleep, so a client timeout or a pool's idle timer
/// could move the simulator's time while a request is on the wire; this client sets no
/// timer at all (no timeout, no pooled connections), so time moves only when the test
/// advances it.
pub fn paused_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

pub fn job_path(app_id: &str, job_id: &str) -> String {
    format!(
        "/v2/apps/{}/individual-stream-jobs/{}",
        sign::encode(app_id),
        sign::encode(job_id)
    )
}

pub async fn get(sim: &Simulator, job_id: &str) -> reqwest::Result<reqwest::Response> {
    get_with(&client(), sim, job_id).await
}

pub async fn get_with(
    c: &reqwest::Client,
    sim: &Simulator,
    job_id: &str,
) -> reqwest::Result<reqwest::Response> {
    c.get(format!("{}{}", sim.url(), job_path("demo-app", job_id)))
        .send()
        .await
}

pub async fn get_job_with(c: &reqwest::Client, sim: &Simulator, job_id: &str) -> JobSnapshot {
    let response = get_with(c, sim, job_id).await.unwrap();
    assert_eq!(response.status(), 200, "{job_id}");
    response.json().await.unwrap()
}

pub async fn error_body(response: reqwest::Response) -> (u16, String, String) {
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.unwrap();
    (
        status,
        body["error_code"].as_str().unwrap().into(),
        body["error_msg"].as_str().unwrap().into(),
    )
}

/// The one deadline and the one wait of every test (the daemon's `src/testing.rs`).
pub use crate::testing::{T, wait_for};

pub const AK: &str = "AKTESTKEY";
pub const SK: &str = "sk-test-secret";

pub async fn signed_get(
    c: &reqwest::Client,
    sim: &Simulator,
    job_id: &str,
    secret: &str,
    signed_at: DateTime<Utc>,
) -> reqwest::Response {
    let path = job_path("demo-app", job_id);
    let host = sim.addr().to_string();
    let date = signed_at.format(sign::DATE_FORMAT).to_string();
    // What a client sends and signs; reqwest adds Host from the URL, which is the same.
    let headers = [
        ("Content-Type", "application/json"),
        ("Host", host.as_str()),
        ("X-Project-Id", "project-1"),
        (sign::DATE_HEADER, date.as_str()),
    ];
    let signed = sign::sign(AK, secret, "GET", &path, &[], &headers, b"");
    let mut request = c.get(format!("{}{path}", sim.url()));
    for (name, value) in headers.iter().filter(|(n, _)| *n != "Host") {
        request = request.header(*name, *value);
    }
    request
        .header("Authorization", signed.authorization)
        .send()
        .await
        .unwrap()
}

pub fn aksk_opts() -> SimOptions {
    SimOptions {
        auth: SimAuth::AkSk {
            access_key: AK.into(),
            secret_key: SK.into(),
        },
        ..static_opts()
    }
}

/// A time as the API writes it (`2006-01-02T15:04:05.075Z`), to compare a change's time with
/// the record's.
pub fn fmt_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Credentials a client signs with: an account's key, or a temporary one with its security
/// token.
pub struct Key<'a> {
    pub access_key: &'a str,
    pub secret_key: &'a str,
    pub project: &'a str,
    /// Sent in `X-Security-Token`, signed like every header sent.
    pub security_token: Option<&'a str>,
}

/// A poll of `job_id` signed with `key` as the SDK signs it; `unsigned` headers are sent
/// beside it without being signed.
pub async fn get_as(
    c: &reqwest::Client,
    sim: &Simulator,
    job_id: &str,
    key: &Key<'_>,
    unsigned: &[(&str, &str)],
) -> reqwest::Response {
    let path = job_path("demo-app", job_id);
    let host = sim.addr().to_string();
    let date = Utc::now().format(sign::DATE_FORMAT).to_string();
    let mut headers = vec![
        ("Content-Type", "application/json"),
        ("Host", host.as_str()),
        ("X-Project-Id", key.project),
        (sign::DATE_HEADER, date.as_str()),
    ];
    if let Some(token) = key.security_token {
        headers.push(("X-Security-Token", token));
    }
    let signed = sign::sign(
        key.access_key,
        key.secret_key,
        "GET",
        &path,
        &[],
        &headers,
        b"",
    );
    let mut request = c.get(format!("{}{path}", sim.url()));
    for (name, value) in headers.iter().chain(unsigned).filter(|(n, _)| *n != "Host") {
        request = request.header(*name, *value);
    }
    request
        .header("Authorization", signed.authorization)
        .send()
        .await
        .unwrap()
}
