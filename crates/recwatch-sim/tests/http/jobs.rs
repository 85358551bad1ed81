//! Creating and stopping jobs, and mix-stream jobs, through recwatch's own client: a create
//! signed over its body makes a job that goes INIT then RUNNING; a stop ends one with
//! TENANT_STOP; mix jobs live on their own path; and each fault on create gives the answer
//! (and leaves the job, or none) that `create_failure` reads.

use crate::harness::*;
use recwatch_rtc::client::{ErrorKind, RtcClient};
use recwatch_rtc::model::{JobSnapshot, RecordParam, State, StopReason};
use recwatch_rtc::secret::Secret;
use recwatch_rtc::{Auth, ClientConfig, CreateFailure, CreateRequest, Kind, sign};
use recwatch_sim::{CreateFault, CreateFaultKind, CreatedJob, SimOptions, Simulator};
use std::time::Duration;

const PROJECT: &str = "project-1";

/// A simulator demanding AK/SK, whose created jobs stay INIT for 200 ms.
async fn sim() -> Simulator {
    spawn(SimOptions {
        step: Duration::from_millis(200),
        ..aksk_opts()
    })
    .await
}

fn rtc_with(sim: &Simulator, timeout: Duration) -> RtcClient {
    let mut c = ClientConfig::new(
        sim.url().parse().unwrap(),
        Auth::AkSk {
            access_key: AK.into(),
            secret_key: Secret::new(SK),
            security_token: None,
        },
    );
    c.project_id = Some(PROJECT.into());
    c.timeout = timeout;
    RtcClient::new(&c).unwrap()
}

fn rtc(sim: &Simulator) -> RtcClient {
    rtc_with(sim, Duration::from_secs(10))
}

/// A job as a Show answer reports it after it died: every parameter a create takes.
fn dead_individual() -> JobSnapshot {
    serde_json::from_value(serde_json::json!({
        "job_id": "job-dead", "app_id": "demo-app", "room_id": "room01", "user_id": "user-7",
        "stream_name": "s_job-dead_room01_user-7", "is_record_audio": false,
        "video_type": "SCREENSTREAM", "select_stream_type": "SD", "max_idle_time": 120,
        "record_param": {"record_rule_id": "rule-1"}, "state": "STOPPED",
        "stop_reason": "INTERNAL_ERROR"
    }))
    .unwrap()
}

fn dead_mix() -> JobSnapshot {
    serde_json::from_value(serde_json::json!({
        "job_id": "mix-dead", "app_id": "demo-app", "room_id": "room02",
        "stream_name": "m_mix-dead_room02",
        "mix_param": {"room_id": "room02", "encode_template": "1920x1080_30_4620",
            "max_idle_time": 60, "layout_template": "custom",
            "layout_panes": [{"user_id": "u1", "x": 0, "y": 0, "width": 0.5, "height": 1}]},
        "record_param": {"record_rule_id": "rule-2"}, "state": "STOPPED",
        "stop_reason": "INTERNAL_ERROR"
    }))
    .unwrap()
}

#[tokio::test]
async fn a_signed_create_makes_a_job_that_goes_init_then_running() {
    let sim = sim().await;
    let rtc = rtc(&sim);
    let request = CreateRequest::from_snapshot(Kind::Individual, &dead_individual()).unwrap();
    let created = rtc.create_job("demo-app", &request).await.unwrap();
    assert_eq!(created.job.state, Some(State::Init));
    assert!(created.request_id.is_some());
    assert_eq!(
        created.job.stream_name,
        Some(format!("s_{}_room01_user-7", created.job_id))
    );

    let running = wait_for("the created job to run", T, || async {
        let job = rtc.get_job("demo-app", &created.job_id).await.unwrap().job;
        (job.state == Some(State::Running)).then_some(job)
    })
    .await;
    assert!(running.start_time.is_some());
    // Re-created with identical parameters: the new job's Show answer rebuilds the request.
    assert_eq!(
        CreateRequest::from_snapshot(Kind::Individual, &running),
        Ok(request.clone())
    );

    // The control API lists the job with the body it was created from.
    let listed: Vec<CreatedJob> = client_get(&sim, "/_sim/created").await;
    assert_eq!(listed, sim.created());
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].kind, listed[0].job_id.as_str(), listed[0].status),
        (Kind::Individual, created.job_id.as_str(), 201)
    );
    assert_eq!(
        listed[0].request,
        serde_json::from_slice::<serde_json::Value>(&request.body()).unwrap()
    );
    let stats = sim.stats();
    assert_eq!((stats.creates, stats.created), (1, 1));
    assert_eq!(stats.by_status.get(&201), Some(&1));
    // The job's start is logged as a change, as a scripted job's is.
    assert!(
        sim.changes()
            .iter()
            .any(|c| c.job_id == created.job_id && c.state == "RUNNING")
    );
}

#[tokio::test]
async fn a_create_whose_body_is_not_the_signed_one_is_refused() {
    let sim = sim().await;
    let signed_body = String::from_utf8(
        CreateRequest::from_snapshot(Kind::Individual, &dead_individual())
            .unwrap()
            .body(),
    )
    .unwrap();
    let path = "/v2/apps/demo-app/individual-stream-jobs";
    let host = sim.addr().to_string();
    let date = chrono::Utc::now().format(sign::DATE_FORMAT).to_string();
    let headers = [
        ("Content-Type", "application/json"),
        ("Host", host.as_str()),
        ("X-Project-Id", PROJECT),
        (sign::DATE_HEADER, date.as_str()),
    ];
    let signed = sign::sign(AK, SK, "POST", path, &[], &headers, signed_body.as_bytes());
    let c = client();
    let send = |body: String| {
        let mut request = c.post(format!("{}{path}", sim.url())).body(body);
        for (name, value) in headers.iter().filter(|(n, _)| *n != "Host") {
            request = request.header(*name, *value);
        }
        request
            .header("Authorization", signed.authorization.clone())
            .send()
    };
    let tampered = signed_body.replace("user-7", "user-8");
    let (status, code, _) = error_body(send(tampered).await.unwrap()).await;
    assert_eq!((status, code.as_str()), (401, "APIG.0301"));
    assert!(sim.created().is_empty(), "nothing is created");

    let answer = send(signed_body).await.unwrap();
    assert_eq!(answer.status(), 201, "the body as signed is accepted");
    assert_eq!(sim.created().len(), 1);
}

#[tokio::test]
async fn bad_create_bodies_and_unknown_apps_are_refused_and_make_nothing() {
    let sim = sim().await;
    let rtc = rtc(&sim);
    let request = CreateRequest::from_snapshot(Kind::Individual, &dead_individual()).unwrap();
    let e = rtc.create_job("no-such-app", &request).await.unwrap_err();
    assert_eq!(
        (e.kind, e.error_code.as_deref()),
        (ErrorKind::NotFound, Some("RTC.00001003"))
    );
    assert_eq!(e.create_failure(), CreateFailure::Refused);

    // A mix body sent to the individual path lacks room_id and user_id.
    let mix = CreateRequest::from_snapshot(Kind::Mix, &dead_mix()).unwrap();
    let (status, code, message) = error_body(
        signed_post(
            &sim,
            "/v2/apps/demo-app/individual-stream-jobs",
            &mix.body(),
        )
        .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (400, "RTC.00001002"));
    assert!(message.contains("room_id"), "{message}");
    assert!(sim.created().is_empty());
    assert_eq!(sim.stats().creates, 2, "refused creates are counted");
}

#[tokio::test]
async fn a_stop_ends_the_job_with_tenant_stop() {
    let sim = sim().await;
    let rtc = rtc(&sim);
    rtc.stop_job(Kind::Individual, "demo-app", "job-0001")
        .await
        .unwrap();
    let job = rtc.get_job("demo-app", "job-0001").await.unwrap().job;
    assert_eq!(job.state, Some(State::Stopped));
    assert_eq!(job.stop_reason, Some(StopReason::TenantStop));
    assert!(job.stop_time.is_some());
    assert!(
        sim.changes()
            .iter()
            .any(|c| c.job_id == "job-0001" && c.stop_reason.as_deref() == Some("TENANT_STOP"))
    );

    let again = rtc
        .stop_job(Kind::Individual, "demo-app", "job-0001")
        .await
        .unwrap_err();
    assert_eq!((again.kind, again.status), (ErrorKind::Rejected, Some(400)));
    let unknown = rtc
        .stop_job(Kind::Individual, "demo-app", "job-9999")
        .await
        .unwrap_err();
    assert_eq!(unknown.kind, ErrorKind::NotFound);
    let wrong_kind = rtc
        .stop_job(Kind::Mix, "demo-app", "job-0002")
        .await
        .unwrap_err();
    assert_eq!(
        wrong_kind.kind,
        ErrorKind::NotFound,
        "an individual job is not on the mix path"
    );
    assert_eq!(sim.stats().stops, 4);
}

#[tokio::test]
async fn mix_jobs_are_polled_created_and_stopped_on_their_own_path() {
    let sim = sim().await;
    let rtc = rtc(&sim);
    let running = JobSnapshot {
        state: Some(State::Running),
        stop_reason: None,
        ..dead_mix()
    };
    // Set over the control API, as a test of the daemon does.
    let put = client()
        .put(format!("{}/_sim/mix-jobs/demo-app/mix-dead", sim.url()))
        .json(&running)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 204);
    let seen = rtc
        .get_job_of(Kind::Mix, "demo-app", "mix-dead")
        .await
        .unwrap()
        .job;
    assert_eq!(seen.mix_param, dead_mix().mix_param, "mix_param kept whole");
    assert_eq!(seen.state, Some(State::Running));
    let e = rtc.get_job("demo-app", "mix-dead").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound, "not on the individual path");
    let e = rtc
        .get_job_of(Kind::Mix, "demo-app", "job-0000")
        .await
        .unwrap_err();
    assert_eq!(
        e.kind,
        ErrorKind::NotFound,
        "an individual job is not a mix job"
    );

    // A change set on the control API keeps the job a mix job.
    sim.set_job("demo-app", "mix-dead", dead_mix());
    let dead = rtc
        .get_job_of(Kind::Mix, "demo-app", "mix-dead")
        .await
        .unwrap()
        .job;
    assert_eq!(dead.stop_reason, Some(StopReason::InternalError));

    let request = CreateRequest::from_snapshot(Kind::Mix, &dead).unwrap();
    let created = rtc.create_job("demo-app", &request).await.unwrap();
    assert_eq!(
        created.job.stream_name,
        Some(format!("m_{}_room02", created.job_id))
    );
    let fetched = rtc
        .get_job_of(Kind::Mix, "demo-app", &created.job_id)
        .await
        .unwrap()
        .job;
    assert_eq!(
        CreateRequest::from_snapshot(Kind::Mix, &fetched),
        Ok(request),
        "re-created with identical parameters"
    );
    assert_eq!(sim.created()[0].kind, Kind::Mix);
    rtc.stop_job(Kind::Mix, "demo-app", &created.job_id)
        .await
        .unwrap();
    let stopped = rtc
        .get_job_of(Kind::Mix, "demo-app", &created.job_id)
        .await
        .unwrap()
        .job;
    assert_eq!(stopped.stop_reason, Some(StopReason::TenantStop));
}

/// Each fault on create: what the client sees, what `create_failure` makes of it, and
/// whether a job exists afterwards.
#[tokio::test]
async fn faults_on_create_table() {
    let cases = [
        (
            "app deactivated",
            CreateFaultKind::Reject,
            ErrorKind::Rejected,
            Some("RTC.00001016"),
            CreateFailure::Refused,
            None,
        ),
        (
            "throttled",
            CreateFaultKind::Throttle,
            ErrorKind::Throttled,
            Some("APIG.0308"),
            CreateFailure::NotCreated,
            None,
        ),
        (
            "500 after creating",
            CreateFaultKind::ServerError,
            ErrorKind::Server,
            Some("RTC.00002001"),
            CreateFailure::Unknown,
            Some(500),
        ),
        (
            "no answer",
            CreateFaultKind::Stall(Duration::from_secs(60)),
            ErrorKind::Timeout,
            None,
            CreateFailure::Unknown,
            Some(201),
        ),
    ];
    let request = CreateRequest::from_snapshot(Kind::Individual, &dead_individual()).unwrap();
    for (name, fault, kind, code, failure, made) in cases {
        let sim = sim().await;
        let rtc = rtc_with(&sim, Duration::from_millis(1500));
        // Over the control API, for one create.
        let added = client()
            .post(format!("{}/_sim/create-faults", sim.url()))
            .json(&CreateFault::new(fault).times(1))
            .send()
            .await
            .unwrap();
        assert_eq!(added.status(), 204, "{name}");
        let e = rtc.create_job("demo-app", &request).await.unwrap_err();
        assert_eq!(e.kind, kind, "{name}: {e}");
        assert_eq!(e.error_code.as_deref(), code, "{name}");
        assert_eq!(e.create_failure(), failure, "{name}: {e}");
        let created = sim.created();
        assert_eq!(
            created.first().map(|c| c.status),
            made,
            "{name}: {created:?}"
        );
        if let Some(job) = created.first() {
            // A job exists though the caller saw an error.
            let shown = rtc.get_job("demo-app", &job.job_id).await.unwrap().job;
            assert_eq!(shown.room_id.as_deref(), Some("room01"), "{name}");
        }
        // The rule is used up: the next create succeeds.
        rtc.create_job("demo-app", &request).await.unwrap();
        assert_eq!(sim.stats().creates, 2, "{name}");
    }
}

#[tokio::test]
async fn a_create_to_a_closed_port_certainly_made_nothing() {
    let sim = sim().await;
    let rtc = rtc(&sim);
    sim.shutdown();
    let e = wait_for("the simulator to stop listening", T, || async {
        rtc.get_job("demo-app", "job-0000")
            .await
            .err()
            .filter(|e| e.kind == ErrorKind::Connection)
    })
    .await;
    assert!(e.not_sent, "{e}");
    let request = CreateRequest::from_snapshot(Kind::Individual, &dead_individual()).unwrap();
    let e = rtc.create_job("demo-app", &request).await.unwrap_err();
    assert_eq!(e.create_failure(), CreateFailure::NotCreated, "{e}");
    assert!(sim.created().is_empty());
}

#[tokio::test]
async fn create_faults_from_the_start_apply_in_order() {
    let sim = spawn(SimOptions {
        create_faults: vec![
            CreateFault::new(CreateFaultKind::Throttle).times(1),
            CreateFault::new(CreateFaultKind::Reject).times(1),
        ],
        ..aksk_opts()
    })
    .await;
    let rtc = rtc(&sim);
    let request = CreateRequest::Individual(recwatch_rtc::jobs::IndividualJobReq {
        room_id: "r".into(),
        user_id: "u".into(),
        is_record_audio: None,
        video_type: None,
        select_stream_type: None,
        max_idle_time: None,
        record_param: RecordParam {
            record_rule_id: Some("rule".into()),
            ..RecordParam::default()
        },
    });
    let kinds = [
        rtc.create_job("demo-app", &request).await.map(|_| ()),
        rtc.create_job("demo-app", &request).await.map(|_| ()),
    ]
    .map(|r| r.unwrap_err().kind);
    assert_eq!(kinds, [ErrorKind::Throttled, ErrorKind::Rejected]);
    rtc.create_job("demo-app", &request).await.unwrap();
    let stats = sim.stats();
    assert_eq!((stats.creates, stats.created, stats.throttled), (3, 1, 1));
    // Creates are in the job group's budget.
    assert_eq!(stats.requests, 3);
    // And cleared over the control API.
    sim.set_create_fault(CreateFault::new(CreateFaultKind::Reject));
    let cleared = client()
        .delete(format!("{}/_sim/create-faults", sim.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(cleared.status(), 204);
    rtc.create_job("demo-app", &request).await.unwrap();
}

async fn client_get<T: serde::de::DeserializeOwned>(sim: &Simulator, path: &str) -> T {
    client()
        .get(format!("{}{path}", sim.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// `body` POSTed to `path`, signed as the SDK signs it.
async fn signed_post(sim: &Simulator, path: &str, body: &[u8]) -> reqwest::Response {
    let host = sim.addr().to_string();
    let date = chrono::Utc::now().format(sign::DATE_FORMAT).to_string();
    let headers = [
        ("Content-Type", "application/json"),
        ("Host", host.as_str()),
        ("X-Project-Id", PROJECT),
        (sign::DATE_HEADER, date.as_str()),
    ];
    let signed = sign::sign(AK, SK, "POST", path, &[], &headers, body);
    let mut request = client()
        .post(format!("{}{path}", sim.url()))
        .body(body.to_vec());
    for (name, value) in headers.iter().filter(|(n, _)| *n != "Host") {
        request = request.header(*name, *value);
    }
    request
        .header("Authorization", signed.authorization)
        .send()
        .await
        .unwrap()
}
