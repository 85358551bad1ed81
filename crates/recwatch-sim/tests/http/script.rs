//! Scripted jobs as the API serves them, jobs set by hand, and a missing job.

use crate::harness::*;
use recwatch_rtc::model::{JobSnapshot, State, StopReason};
use recwatch_sim::{Change, SimOptions};
use std::time::Duration;

// On the paused clock the simulator's time moves only when the test advances it, so each
// request sees exactly the moment of the script the test chose, however slow the machine.
#[tokio::test(start_paused = true)]
async fn scripted_jobs_walk_their_script_and_log_changes() {
    let step = Duration::from_secs(10);
    let ms = Duration::from_millis;
    let sim = spawn(SimOptions {
        jobs: 6,
        step,
        ..SimOptions::default()
    })
    .await;
    let c = paused_client();
    let first = get_job_with(&c, &sim, "job-0000").await;
    assert_eq!(first.state, Some(State::Init));
    assert_eq!(first.job_id.as_deref(), Some("job-0000"));
    assert_eq!(first.app_id.as_deref(), Some("demo-app"));
    assert_eq!(first.start_time, None);

    // job-0000 (no stagger) runs from one step to three steps after the start.
    tokio::time::advance(step - ms(1)).await;
    assert_eq!(
        get_job_with(&c, &sim, "job-0000").await.state,
        Some(State::Init),
        "still INIT just before its step"
    );
    tokio::time::advance(ms(1)).await;
    let running = get_job_with(&c, &sim, "job-0000").await;
    assert_eq!(running.state, Some(State::Running));
    assert!(running.start_time.is_some() && running.stop_time.is_none());
    tokio::time::advance(step * 2).await;
    let stopped = get_job_with(&c, &sim, "job-0000").await;
    assert_eq!(stopped.state, Some(State::Stopped));
    assert_eq!(stopped.stop_reason, Some(StopReason::InternalError));
    let (create, start, stop) = (
        stopped.create_time.unwrap(),
        stopped.start_time.unwrap(),
        stopped.stop_time.unwrap(),
    );
    assert!(
        create < start && start < stop,
        "{create} < {start} < {stop}"
    );
    assert_eq!(Some(start.as_str()), running.start_time.as_deref());
    assert_eq!(stopped.update_time.as_deref(), Some(stop.as_str()));
    assert_eq!(create.len(), "2006-01-02T15:04:05.075Z".len(), "{create}");

    let idle = get_job_with(&c, &sim, "job-0004").await;
    assert_eq!(
        (idle.state, idle.max_idle_time),
        (Some(State::Init), Some(5))
    );

    let changes: Vec<Change> = sim
        .changes()
        .into_iter()
        .filter(|c| c.job_id == "job-0000")
        .collect();
    let seen: Vec<_> = changes
        .iter()
        .map(|c| (c.state.as_str(), c.stop_reason.as_deref()))
        .collect();
    assert_eq!(
        seen,
        [("RUNNING", None), ("STOPPED", Some("INTERNAL_ERROR"))]
    );
    assert_eq!(fmt_time(changes[0].at), start);
    assert_eq!(fmt_time(changes[1].at), stop);
    let all = sim.changes();
    assert!(
        all.windows(2).all(|w| w[0].at <= w[1].at),
        "changes are in time order"
    );
    assert!(
        all.iter().all(|c| c.job_id != "job-0004"),
        "the INIT-forever job never changes: {all:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn set_job_overrides_the_script_and_is_logged() {
    let step = Duration::from_secs(10);
    let sim = spawn(SimOptions {
        jobs: 2,
        step,
        ..SimOptions::default()
    })
    .await;
    let c = paused_client();
    let job = JobSnapshot {
        job_id: Some("job-0000".into()),
        state: Some(State::Stopped),
        stop_reason: Some(StopReason::TenantStop),
        ..JobSnapshot::default()
    };
    // Set before job-0000's script reached RUNNING: its script logs nothing after this.
    sim.set_job("demo-app", "job-0000", job.clone());
    // Past the end of job-0001's script (it stops 3.1 steps in).
    tokio::time::advance(step * 4).await;
    assert_eq!(
        get_job_with(&c, &sim, "job-0001").await.state,
        Some(State::Stopped)
    );
    assert_eq!(
        get_job_with(&c, &sim, "job-0000").await,
        job,
        "served exactly as set, script overridden"
    );
    let changes: Vec<_> = sim
        .changes()
        .into_iter()
        .filter(|c| c.job_id == "job-0000")
        .collect();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(
        (changes[0].state.as_str(), changes[0].stop_reason.as_deref()),
        ("STOPPED", Some("TENANT_STOP"))
    );

    sim.remove_job("demo-app", "job-0001");
    assert_eq!(get_with(&c, &sim, "job-0001").await.unwrap().status(), 404);
}

#[tokio::test]
async fn unknown_job_is_404_with_the_rtc_error_body() {
    let sim = spawn(static_opts()).await;
    let response = get(&sim, "nope").await.unwrap();
    let id = response
        .headers()
        .get("x-request-id")
        .expect("request id on errors too")
        .clone();
    assert_eq!(id.len(), 32);
    let (status, code, message) = error_body(response).await;
    assert_eq!((status, code.as_str()), (404, "RTC.00001003"));
    assert!(message.contains("nope"), "{message}");
    let other = get(&sim, "job-0000").await.unwrap();
    assert_ne!(
        other.headers().get("x-request-id"),
        Some(&id),
        "request ids differ"
    );
    let static_job = other.json::<JobSnapshot>().await.unwrap();
    assert_eq!(static_job.state, Some(State::Running));
}
