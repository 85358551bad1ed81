//! Each fault kind as a client sees it, and how rules are scoped.

use crate::harness::*;
use recwatch_rtc::model::{JobSnapshot, State};
use recwatch_sim::{Fault, FaultKind};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::Instant;

#[tokio::test]
async fn each_fault_kind_as_reqwest_sees_it() {
    let sim = spawn(static_opts()).await;
    let c = client();
    let url = format!("{}{}", sim.url(), job_path("demo-app", "job-0000"));

    sim.set_fault(Fault::new(FaultKind::ServerError).times(1));
    let (status, code, _) = error_body(c.get(&url).send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (500, "RTC.00002001"));

    sim.set_fault(Fault::new(FaultKind::Throttle).times(1));
    let (status, code, message) = error_body(c.get(&url).send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (429, "APIG.0308"));
    assert_eq!(
        message,
        "The throttling threshold has been reached: policy user over ratelimit,limit:10,time:1 second"
    );

    sim.set_fault(Fault::new(FaultKind::RefuseAuth).times(1));
    let (status, code, _) = error_body(c.get(&url).send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (401, "APIG.0301"));

    sim.set_fault(Fault::new(FaultKind::Garbage).times(1));
    let response = c.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let err = response.json::<JobSnapshot>().await.unwrap_err();
    assert!(err.is_decode(), "{err:?}");

    sim.set_fault(Fault::new(FaultKind::Truncated).times(1));
    let response = c.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 200, "headers arrive");
    let err = response.bytes().await.unwrap_err();
    // reqwest wraps the body error in a decode error; hyper saw the EOF short of the length.
    assert!(
        err.is_decode() && format!("{err:?}").contains("IncompleteBody"),
        "{err:?}"
    );

    sim.set_fault(Fault::new(FaultKind::Reset).times(1));
    let err = c.get(&url).send().await.unwrap_err();
    // Closed with nothing written: hyper's "connection closed before message completed".
    assert!(
        err.is_request() && !err.is_timeout() && format!("{err:?}").contains("IncompleteMessage"),
        "{err:?}"
    );

    sim.set_fault(Fault::new(FaultKind::Stall(Duration::from_millis(300))).times(1));
    let started = Instant::now();
    let response = c.get(&url).send().await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        response.json::<JobSnapshot>().await.unwrap().state,
        Some(State::Running)
    );

    // Every rule was used up: the same client gets normal answers again.
    assert_eq!(c.get(&url).send().await.unwrap().status(), 200);
    let stats = sim.stats();
    assert_eq!(
        (
            stats.faults_applied,
            stats.resets,
            stats.refused_auth,
            stats.throttled
        ),
        (7, 1, 1, 1)
    );
    assert_eq!(stats.requests, 8);
    let expected: BTreeMap<u16, u64> = [(200, 4), (401, 1), (429, 1), (500, 1)].into();
    assert_eq!(stats.by_status, expected);
}

// Paused clock: a fault "lasting" 200 ms ends when the simulator's clock passes it, not
// when the machine gets round to the next request.
#[tokio::test(start_paused = true)]
async fn faults_scoped_to_a_job_a_count_and_a_duration() {
    let sim = spawn(static_opts()).await;
    let c = paused_client();
    let status = |job: &'static str| {
        let (c, sim) = (c.clone(), sim.clone());
        async move { get_with(&c, &sim, job).await.unwrap().status() }
    };
    sim.set_fault(
        Fault::new(FaultKind::ServerError)
            .for_job("job-0001")
            .times(2),
    );
    assert_eq!(status("job-0000").await, 200);
    assert_eq!(status("job-0001").await, 500);
    assert_eq!(status("job-0000").await, 200);
    assert_eq!(status("job-0001").await, 500);
    assert_eq!(status("job-0001").await, 200);
    assert_eq!(sim.stats().faults_applied, 2);

    sim.set_fault(Fault::new(FaultKind::ServerError).lasting(Duration::from_millis(200)));
    assert_eq!(status("job-0002").await, 500);
    assert_eq!(status("job-0002").await, 500, "still within its 200 ms");
    // `lasting` counts from the wall clock when the rule was made; the paused simulator
    // clock is behind it by the real time the test took so far, so go well past it.
    tokio::time::advance(Duration::from_secs(600)).await;
    assert_eq!(status("job-0002").await, 200, "the timed fault ended");

    sim.set_fault(Fault::new(FaultKind::ServerError));
    assert_eq!(status("job-0000").await, 500);
    sim.clear_faults();
    assert_eq!(status("job-0000").await, 200);
}
