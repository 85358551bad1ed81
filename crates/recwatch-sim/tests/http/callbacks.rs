//! Record callbacks: the registration endpoints through recwatch's own client, the callbacks
//! the simulator POSTs to a real receiver on 127.0.0.1 (their signature verified with
//! recwatch-rtc's `verify_signature`), the seeded drop fraction, and the lag between a stop's
//! callback and the API showing it.

use crate::harness::*;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use recwatch_rtc::callback::{self, EventType, RecordEvent, SignatureHeaders};
use recwatch_rtc::client::ErrorKind;
use recwatch_rtc::model::{JobSnapshot, State, StopReason};
use recwatch_rtc::registration::CallbackUpdate;
use recwatch_rtc::secret::Secret;
use recwatch_rtc::{Auth, ClientConfig, RtcClient};
use recwatch_sim::{SimOptions, Simulator};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const KEY: &str = "0123456789abcdef0123456789abcdef-sim";

/// What a receiver got: each request's headers and raw body.
type Got = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

/// A receiver on 127.0.0.1 port 0 that keeps every POST and answers `status`.
async fn receiver(status: StatusCode) -> (String, Got) {
    let got: Got = Arc::default();
    let keep = got.clone();
    let app = axum::Router::new().route(
        "/cb",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let keep = keep.clone();
            async move {
                keep.lock().unwrap().push((headers, body));
                status
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/cb", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

/// Every event the receiver got, each verified with `KEY` before it is parsed.
fn verified(got: &Got) -> Vec<RecordEvent> {
    got.lock()
        .unwrap()
        .iter()
        .map(|(headers, body)| {
            let sig = SignatureHeaders::from_headers(headers).expect("signature headers");
            callback::verify_signature(&Secret::new(KEY), &sig, body)
                .expect("the signature verifies with the app's key");
            RecordEvent::parse(body).expect("an event")
        })
        .collect()
}

fn rtc(sim: &Simulator) -> RtcClient {
    let mut c = ClientConfig::new(
        sim.url().parse().unwrap(),
        Auth::AkSk {
            access_key: AK.into(),
            secret_key: Secret::new(SK),
            security_token: None,
        },
    );
    c.project_id = Some("project-1".into());
    RtcClient::new(&c).unwrap()
}

fn with(state: State, reason: Option<StopReason>) -> JobSnapshot {
    JobSnapshot {
        state: Some(state),
        stop_reason: reason,
        start_time: Some("2026-11-28T06:00:00.000Z".into()),
        ..Default::default()
    }
}

#[tokio::test]
async fn registration_is_read_and_replaced_as_the_api_does() {
    let sim = spawn(SimOptions {
        rate_limit: Some(10),
        ..aksk_opts()
    })
    .await;
    let client = rtc(&sim);
    let none = client.get_record_callback("demo-app").await.unwrap();
    assert_eq!(none.url, None, "nothing registered yet");
    assert_eq!(none.app_id.as_deref(), Some("demo-app"));
    assert!(none.request_id.is_some());

    let update = CallbackUpdate::new("https://a.example/cb", Some(Secret::new(KEY))).unwrap();
    let put = client
        .put_record_callback("demo-app", &update)
        .await
        .unwrap();
    assert_eq!(put.url.as_deref(), Some("https://a.example/cb"));
    let got = client.get_record_callback("demo-app").await.unwrap();
    assert_eq!(got.url.as_deref(), Some("https://a.example/cb"));
    assert_eq!(got.auth_key.as_ref().map(|k| k.expose()), Some(KEY));
    assert_eq!(
        got.notify_event_subscription,
        ["RECORD_NEW_FILE_START", "RECORD_FILE_COMPLETE"]
    );
    assert!(got.update_time.is_some());

    // An app the simulator does not serve: the RTC service's 404.
    let missing = client.get_record_callback("no-such-app").await.unwrap_err();
    assert_eq!(missing.kind, ErrorKind::NotFound, "{missing}");
    assert_eq!(missing.error_code.as_deref(), Some("RTC.00001003"));

    // The signature covers the body: a wrong key is refused like any request.
    let mut wrong = ClientConfig::new(
        sim.url().parse().unwrap(),
        Auth::AkSk {
            access_key: AK.into(),
            secret_key: Secret::new("not-the-secret"),
            security_token: None,
        },
    );
    wrong.project_id = Some("project-1".into());
    let refused = RtcClient::new(&wrong)
        .unwrap()
        .put_record_callback("demo-app", &update)
        .await
        .unwrap_err();
    assert_eq!(refused.kind, ErrorKind::Unauthorized, "{refused}");
    assert_eq!(
        client
            .get_record_callback("demo-app")
            .await
            .unwrap()
            .url
            .as_deref(),
        Some("https://a.example/cb"),
        "a refused PUT changes nothing"
    );

    // The apps group is not the job group: none of this is in the job API's count.
    let stats = sim.stats();
    assert_eq!(stats.requests, 0);
    assert_eq!(stats.app_requests, 6);
}

#[tokio::test]
async fn a_put_with_a_bad_body_is_refused_and_the_body_is_signed() {
    let sim = spawn(aksk_opts()).await;
    let c = client();
    let path = "/v2/apps/demo-app/record-callback";
    let host = sim.addr().to_string();
    let date = chrono::Utc::now()
        .format(recwatch_rtc::sign::DATE_FORMAT)
        .to_string();
    let headers = [
        ("Content-Type", "application/json"),
        ("Host", host.as_str()),
        ("X-Project-Id", "project-1"),
        (recwatch_rtc::sign::DATE_HEADER, date.as_str()),
    ];
    let put = |signed_body: &'static [u8], sent_body: &'static [u8]| {
        let signed = recwatch_rtc::sign::sign(AK, SK, "PUT", path, &[], &headers, signed_body);
        let mut request = c.put(format!("{}{path}", sim.url()));
        for (name, value) in headers.iter().filter(|(n, _)| *n != "Host") {
            request = request.header(*name, *value);
        }
        request
            .header("Authorization", signed.authorization)
            .body(sent_body)
    };
    let short_key = br#"{"url":"https://a.example/cb","auth_key":"short"}"#;
    let (status, code, msg) = error_body(put(short_key, short_key).send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (400, "RTC.00001002"), "{msg}");
    assert!(msg.contains("32 to 64"), "{msg}");
    // Signed over one body, sent with another: the gateway refuses it.
    let good = br#"{"url":"https://a.example/cb"}"#;
    let other = br#"{"url":"https://evil.example/cb"}"#;
    let (status, code, _) = error_body(put(good, other).send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (401, "APIG.0301"));
    assert!(put(good, good).send().await.unwrap().status().is_success());
}

#[tokio::test]
async fn changes_are_posted_signed_with_the_apps_key() {
    let (url, got) = receiver(StatusCode::OK).await;
    let sim = spawn(SimOptions {
        callback_url: Some(url),
        callback_key: Some(Secret::new(KEY)),
        ..static_opts()
    })
    .await;
    // job-0000 starts RUNNING: it stops after recording, job-0001 stops, then starts again.
    sim.set_job(
        "demo-app",
        "job-0000",
        with(State::Stopped, Some(StopReason::InternalError)),
    );
    sim.set_job("demo-app", "job-0001", with(State::Init, None));
    sim.set_job("demo-app", "job-0001", with(State::Running, None));
    wait_for("three callbacks", T, || {
        let n = got.lock().unwrap().len();
        async move { (n >= 3).then_some(()) }
    })
    .await;
    let mut events: Vec<(String, EventType)> = verified(&got)
        .into_iter()
        .map(|e| (e.job_id.clone().unwrap(), e.event_type))
        .collect();
    events.sort_by_key(|(job, e)| (job.clone(), e.as_str().to_string()));
    assert_eq!(
        events,
        [
            ("job-0000".to_string(), EventType::CloudRecordServerOver),
            ("job-0000".to_string(), EventType::RecordFileComplete),
            ("job-0001".to_string(), EventType::RecordNewFileStart),
        ]
    );
    let file = verified(&got)
        .into_iter()
        .find(|e| e.event_type == EventType::RecordFileComplete)
        .unwrap();
    let file = file.file.expect("the file's fields");
    assert!(file.download_url.is_some() && file.obs_object.is_some());
    let stats = wait_for("the sends counted", T, || {
        let stats = sim.stats().callbacks;
        async move { (stats.sent == 3).then_some(stats) }
    })
    .await;
    assert_eq!((stats.queued, stats.failed, stats.dropped), (3, 0, 0));
    let sent = sim.sent_callbacks();
    assert_eq!(sent.len(), 3);
    assert!(sent.iter().all(|s| s.status == Some(200)));
}

#[tokio::test]
async fn a_receiver_that_refuses_is_counted_as_failed_and_the_api_still_answers() {
    let (url, got) = receiver(StatusCode::SERVICE_UNAVAILABLE).await;
    let sim = spawn(SimOptions {
        callback_url: Some(url),
        ..static_opts()
    })
    .await;
    sim.set_job("demo-app", "job-0002", with(State::Stopped, None));
    assert_eq!(
        get_job_with(&client(), &sim, "job-0002").await.state,
        Some(State::Stopped)
    );
    wait_for("two failed sends", T, || {
        let stats = sim.stats().callbacks;
        async move { (stats.failed == 2).then_some(()) }
    })
    .await;
    assert_eq!(sim.stats().callbacks.sent, 0);
    // Without a key nothing is signed, as RTC sends them.
    assert!(
        got.lock()
            .unwrap()
            .iter()
            .all(|(h, _)| h.get(callback::HEADER_SIGNATURE).is_none())
    );
}

#[tokio::test]
async fn scripted_changes_are_announced_when_they_happen() {
    let (url, got) = receiver(StatusCode::OK).await;
    let sim = spawn(SimOptions {
        jobs: 6,
        step: Duration::from_millis(200),
        callback_url: Some(url),
        callback_key: Some(Secret::new(KEY)),
        ..SimOptions::default()
    })
    .await;
    // Job 0 runs then stops (INTERNAL_ERROR); job 4 never leaves INIT.
    wait_for("job-0000's end", T, || {
        let done = verified(&got).iter().any(|e| {
            e.job_id.as_deref() == Some("job-0000")
                && e.event_type == EventType::CloudRecordServerOver
        });
        async move { done.then_some(()) }
    })
    .await;
    let events = verified(&got);
    let of = |job: &str| -> Vec<EventType> {
        events
            .iter()
            .filter(|e| e.job_id.as_deref() == Some(job))
            .map(|e| e.event_type.clone())
            .collect()
    };
    assert_eq!(
        of("job-0000"),
        [
            EventType::RecordNewFileStart,
            EventType::RecordFileComplete,
            EventType::CloudRecordServerOver
        ]
    );
    assert!(
        of("job-0004").is_empty(),
        "a job that never runs sends nothing"
    );
    // The API agrees with the callback: the job shows STOPPED.
    assert_eq!(
        get_job_with(&client(), &sim, "job-0000").await.state,
        Some(State::Stopped)
    );
}

/// Stops 20 jobs (40 events) with `drop` and `seed`; answers which jobs' events arrived and
/// the counts.
async fn drop_run(drop: f64, seed: u64) -> (Vec<String>, recwatch_sim::CallbackStats) {
    let (url, got) = receiver(StatusCode::OK).await;
    let sim = spawn(SimOptions {
        jobs: 20,
        scripted: false,
        seed,
        callback_drop: drop,
        callback_url: Some(url),
        callback_key: Some(Secret::new(KEY)),
        ..SimOptions::default()
    })
    .await;
    for i in 0..20 {
        sim.set_job(
            "demo-app",
            &recwatch_sim::job_id(i),
            with(State::Stopped, Some(StopReason::InternalError)),
        );
    }
    // Every event was either dropped or answered: nothing more can arrive.
    let stats = wait_for("every event decided", T, || {
        let s = sim.stats().callbacks;
        async move { (s.dropped + s.sent + s.failed == 40).then_some(s) }
    })
    .await;
    let mut arrived: Vec<String> = verified(&got)
        .into_iter()
        .map(|e| format!("{} {}", e.job_id.unwrap(), e.event_type))
        .collect();
    arrived.sort();
    (arrived, stats)
}

#[tokio::test]
async fn the_drop_fraction_is_seeded_and_counted() {
    let (arrived, stats) = drop_run(0.5, 7).await;
    assert_eq!(stats.queued, stats.sent);
    assert_eq!(arrived.len() as u64, stats.sent);
    assert!(
        (8..=32).contains(&stats.dropped),
        "about half of 40: {stats:?}"
    );
    // The same seed leaves out the same callbacks.
    let (again, again_stats) = drop_run(0.5, 7).await;
    assert_eq!((again, again_stats), (arrived, stats));

    let (none, all_dropped) = drop_run(1.0, 7).await;
    assert!(none.is_empty());
    assert_eq!((all_dropped.dropped, all_dropped.queued), (40, 0));
    let (all, kept) = drop_run(0.0, 7).await;
    assert_eq!((all.len(), kept.dropped), (40, 0));
}

#[tokio::test]
async fn with_a_lag_the_callback_comes_before_the_api_shows_the_stop() {
    let (url, got) = receiver(StatusCode::OK).await;
    let sim = spawn(SimOptions {
        // Far longer than the test: the API must still show RUNNING after the callback.
        callback_lag: Duration::from_secs(3600),
        callback_url: Some(url),
        callback_key: Some(Secret::new(KEY)),
        ..static_opts()
    })
    .await;
    sim.set_job(
        "demo-app",
        "job-0001",
        with(State::Stopped, Some(StopReason::InternalError)),
    );
    wait_for("the stop's callback", T, || {
        let over = verified(&got)
            .iter()
            .any(|e| e.event_type == EventType::CloudRecordServerOver);
        async move { over.then_some(()) }
    })
    .await;
    assert_eq!(
        get_job_with(&client(), &sim, "job-0001").await.state,
        Some(State::Running),
        "the API lags the event"
    );
    assert!(
        sim.changes().is_empty(),
        "the change is logged when it shows"
    );
}

#[tokio::test(start_paused = true)]
async fn a_lagging_stop_shows_once_due_and_a_newer_change_wins() {
    // No callback URL: nothing goes on the wire, so the paused clock moves only as told.
    let sim = spawn(SimOptions {
        callback_lag: Duration::from_secs(5),
        ..static_opts()
    })
    .await;
    let c = paused_client();
    sim.set_job(
        "demo-app",
        "job-0000",
        with(State::Stopped, Some(StopReason::InternalError)),
    );
    assert_eq!(
        get_job_with(&c, &sim, "job-0000").await.state,
        Some(State::Running)
    );
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(
        get_job_with(&c, &sim, "job-0000").await.state,
        Some(State::Stopped)
    );
    assert_eq!(sim.changes().len(), 1);

    // A stop still lagging is replaced by a newer change made meanwhile.
    sim.set_job("demo-app", "job-0001", with(State::Stopped, None));
    sim.set_job("demo-app", "job-0001", with(State::Init, None));
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(
        get_job_with(&c, &sim, "job-0001").await.state,
        Some(State::Init)
    );
}
