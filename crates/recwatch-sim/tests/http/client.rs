//! The gateway's answers around the API (project id, the gateway's 404, redirects, a skewed
//! clock, raw bodies), checked through recwatch's own client so the client's reading of each
//! is proved too.

use crate::harness::spawn;
use recwatch_rtc::client::{ErrorKind, RtcClient, RtcError};
use recwatch_rtc::model::{JobSnapshot, State, StopReason};
use recwatch_rtc::secret::Secret;
use recwatch_rtc::{Auth, ClientConfig};
use recwatch_sim::{Fault, FaultKind, SimAuth, SimOptions, Simulator};

const AK: &str = "AKGATEWAY";
const SK: &str = "sk-gateway";
const PROJECT: &str = "project-7";

fn aksk(project_id: Option<&str>) -> SimOptions {
    SimOptions {
        jobs: 2,
        scripted: false,
        auth: SimAuth::AkSk {
            access_key: AK.into(),
            secret_key: SK.into(),
        },
        project_id: project_id.map(str::to_string),
        lockout_after: 1,
        ..SimOptions::default()
    }
}

/// recwatch's client for `sim`, sending `project` as X-Project-Id (none when `None`).
fn rtc(sim: &Simulator, base_path: &str, project: Option<&str>) -> RtcClient {
    let mut c = ClientConfig::new(
        format!("{}{base_path}", sim.url()).parse().unwrap(),
        Auth::AkSk {
            access_key: AK.into(),
            secret_key: Secret::new(SK),
            security_token: None,
        },
    );
    c.project_id = project.map(str::to_string);
    RtcClient::new(&c).unwrap()
}

async fn poll(client: &RtcClient, job: &str) -> Result<JobSnapshot, RtcError> {
    client.get_job("demo-app", job).await.map(|f| f.job)
}

#[tokio::test]
async fn x_project_id_is_mandatory_with_aksk_and_must_be_the_accounts() {
    let sim = spawn(aksk(Some(PROJECT))).await;
    let right = rtc(&sim, "", Some(PROJECT));
    assert!(poll(&right, "job-0000").await.is_ok());

    let cases = [
        ("missing", None, 400, "RTC.00001001"),
        ("another project", Some("project-8"), 403, "APIG.0302"),
    ];
    for (name, project, status, code) in cases {
        let client = rtc(&sim, "", project);
        // Three in a row: more than lockout_after (1), yet no lockout, because the
        // signature itself was right.
        for _ in 0..3 {
            let e = poll(&client, "job-0000").await.expect_err(name);
            assert_eq!(e.kind, ErrorKind::Unauthorized, "{name}: {e}");
            assert_eq!(e.status, Some(status), "{name}");
            assert_eq!(e.error_code.as_deref(), Some(code), "{name}");
            assert!(e.request_id.is_some(), "{name}");
        }
        assert!(poll(&right, "job-0000").await.is_ok(), "{name}: locked out");
    }
    let e = poll(&rtc(&sim, "", None), "job-0000").await.unwrap_err();
    assert!(
        e.to_string().contains("X-Project-Id header is required"),
        "{e}"
    );
    // Any project is accepted when the simulator is not told the account's, but one is
    // still required.
    let open = spawn(aksk(None)).await;
    assert!(poll(&rtc(&open, "", Some("any")), "job-0000").await.is_ok());
    let e = poll(&rtc(&open, "", None), "job-0000").await.unwrap_err();
    assert_eq!(e.error_code.as_deref(), Some("RTC.00001001"));
}

#[tokio::test]
async fn a_wrong_path_is_the_gateways_404_not_a_missing_job() {
    let sim = spawn(aksk(Some(PROJECT))).await;
    // An endpoint with a wrong base path: every request misses the API.
    let client = rtc(&sim, "/rtc-typo", Some(PROJECT));
    let e = poll(&client, "job-0000").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::EndpointNotFound, "{e}");
    assert_eq!(e.status, Some(404));
    assert_eq!(e.error_code.as_deref(), Some("APIG.0101"));
    // A missing job is the RTC service's own 404.
    let right = rtc(&sim, "", Some(PROJECT));
    let e = poll(&right, "no-such-job").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
    assert_eq!(e.error_code.as_deref(), Some("RTC.00001003"));
    // The gateway's 404 comes before credentials and is not counted as an API request.
    assert_eq!(sim.stats().requests, 1);
    assert_eq!(sim.stats().refused_auth, 0);
}

/// A reverse proxy on loopback that strips `prefix` from each request's path and hands the
/// request on to `upstream` with its headers (Host included) and body, as nginx's
/// `location /rtc/ { proxy_pass http://upstream/; proxy_set_header Host $http_host; }` does.
async fn stripping_proxy(upstream: String, prefix: &'static str) -> String {
    let client = crate::harness::client();
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let (client, upstream) = (client.clone(), upstream.clone());
        async move {
            let (parts, body) = req.into_parts();
            let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            let path = path.strip_prefix(prefix).unwrap_or(path).to_string();
            let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
            let answer = client
                .request(parts.method, format!("{upstream}{path}"))
                .headers(parts.headers)
                .body(body)
                .send()
                .await
                .unwrap();
            let status = answer.status();
            let mut headers = answer.headers().clone();
            headers.remove(reqwest::header::CONTENT_LENGTH);
            headers.remove(reqwest::header::TRANSFER_ENCODING);
            (status, headers, answer.bytes().await.unwrap())
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

#[tokio::test]
async fn a_prefix_a_proxy_strips_is_not_signed() {
    // lockout_after 1: a second bad signature would lock the key, as the real gateway does
    // after five.
    let sim = spawn(aksk(Some(PROJECT))).await;
    let proxy = stripping_proxy(sim.url(), "/rtc").await;
    let mut c = ClientConfig::new(
        format!("{proxy}/rtc").parse().unwrap(),
        Auth::AkSk {
            access_key: AK.into(),
            secret_key: Secret::new(SK),
            security_token: None,
        },
    );
    c.project_id = Some(PROJECT.into());
    let client = RtcClient::new(&c).unwrap();
    for _ in 0..3 {
        let job = poll(&client, "job-0000")
            .await
            .expect("the gateway checks the path it sees, without the proxy's prefix");
        assert!(job.state.is_some());
    }
    assert_eq!(sim.stats().refused_auth, 0);
}

#[tokio::test]
async fn redirect_and_gateway_404_faults() {
    let sim = spawn(aksk(Some(PROJECT))).await;
    let client = rtc(&sim, "", Some(PROJECT));
    let login = format!("{}/login", sim.url());
    sim.set_fault(Fault::new(FaultKind::Redirect(login.clone())).times(1));
    let e = poll(&client, "job-0000").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Redirect, "{e}");
    assert_eq!(e.status, Some(302));
    assert_eq!(e.detail.as_deref(), Some(format!("to {login}").as_str()));

    sim.set_fault(Fault::new(FaultKind::ApiNotFound).for_job("job-0001"));
    let e = poll(&client, "job-0001").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::EndpointNotFound, "{e}");
    assert_eq!(e.error_code.as_deref(), Some("APIG.0101"));
    assert!(poll(&client, "job-0000").await.is_ok(), "only job-0001's");
    let s = sim.stats();
    assert_eq!(s.by_status.get(&302), Some(&1));
    assert_eq!(s.by_status.get(&404), Some(&1));
    assert_eq!(s.faults_applied, 2);
    // As JSON, for a simulator run as its own process.
    let json: Fault = serde_json::from_str(r#"{"kind": {"redirect": "http://x/"}}"#).unwrap();
    assert_eq!(json.kind, FaultKind::Redirect("http://x/".into()));
    let json: Fault = serde_json::from_str(r#"{"kind": "api_not_found"}"#).unwrap();
    assert_eq!(json.kind, FaultKind::ApiNotFound);
}

#[tokio::test]
async fn a_skewed_clock_is_refused_and_named() {
    let sim = spawn(SimOptions {
        clock_offset: 3600,
        ..aksk(Some(PROJECT))
    })
    .await;
    let e = poll(&rtc(&sim, "", Some(PROJECT)), "job-0000")
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unauthorized, "{e}");
    assert_eq!(e.clock_skew_minutes, Some(-60), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("15 minutes off"),
        "the gateway's reason: {text}"
    );
    assert!(
        text.contains("the system clock is 60 minutes off the API's Date header"),
        "{text}"
    );
    // A refusal with the clock right says nothing about clocks.
    let sim = spawn(aksk(Some(PROJECT))).await;
    let e = poll(&rtc(&sim, "", None), "job-0000").await.unwrap_err();
    assert_eq!(e.clock_skew_minutes, None, "{e}");
}

#[tokio::test]
async fn raw_bodies_and_answers_about_another_job() {
    let sim = spawn(aksk(Some(PROJECT))).await;
    let client = rtc(&sim, "", Some(PROJECT));
    sim.set_job_body(
        "demo-app",
        "job-0000",
        &b"{\"job_id\":\"job-0000\",\"state\":\"running\",\"record_param\":\"r\",\"description\":\"caf\xe9\"}"[..],
    );
    let job = poll(&client, "job-0000").await.unwrap();
    assert_eq!(job.state, Some(State::Running));
    assert_eq!(job.description.as_deref(), Some("caf\u{FFFD}"));
    assert_eq!(sim.changes().last().unwrap().state, "RUNNING");

    sim.set_job(
        "demo-app",
        "job-0001",
        JobSnapshot {
            job_id: Some("job-0000".into()),
            app_id: Some("demo-app".into()),
            state: Some(State::Stopped),
            stop_reason: Some(StopReason::InternalError),
            ..JobSnapshot::default()
        },
    );
    let e = poll(&client, "job-0001").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::WrongJob, "{e}");
    assert!(e.request_id.is_some());
    assert!(e.to_string().contains(r#"job "job-0000""#), "{e}");
}
