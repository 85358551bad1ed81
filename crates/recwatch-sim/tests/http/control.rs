//! The control API and the statistics it serves, and shutting a simulator down.

use crate::harness::*;
use recwatch_rtc::model::{JobSnapshot, StopReason};
use recwatch_sim::{Change, SimStats};

#[tokio::test(start_paused = true)]
async fn stats_count_api_requests_only() {
    let sim = spawn(static_opts()).await;
    let c = paused_client();
    for job in [
        "job-0000", "job-0001", "job-0000", "job-0001", "job-0000", "job-0001", "job-0000",
    ] {
        get_with(&c, &sim, job).await.unwrap();
    }
    let stats: SimStats = c
        .get(format!("{}/_sim/stats", sim.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats, sim.stats(), "the HTTP view is the same");
    assert_eq!(stats.requests, 7);
    assert_eq!(stats.by_status, [(200, 7)].into());
    // On the paused clock all seven arrived in the same instant.
    assert_eq!(stats.max_per_sliding_second, 7);
    assert_eq!(stats.per_second.len(), 1);
    assert_eq!(stats.per_second.iter().map(|(_, n)| n).sum::<u64>(), 7);
    let jobs = &stats.by_job["demo-app"];
    assert_eq!((jobs["job-0000"], jobs["job-0001"]), (4, 3));
    assert!(
        !jobs.contains_key("job-0002"),
        "a job never polled is absent"
    );

    let reset = c
        .post(format!("{}/_sim/reset-stats", sim.url()))
        .send()
        .await
        .unwrap();
    assert!(reset.status().is_success());
    let stats = sim.stats();
    assert_eq!(
        (
            stats.requests,
            stats.max_per_sliding_second,
            stats.by_job.len()
        ),
        (0, 0, 0)
    );
}

#[tokio::test]
async fn control_endpoints() {
    let sim = spawn(static_opts()).await;
    let c = client();
    let base = sim.url();
    let put = c
        .put(format!("{base}/_sim/jobs/other-app/cam%2F7"))
        .json(&serde_json::json!({"job_id": "cam/7", "state": "STOPPED", "stop_reason": "QUOTA"}))
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{}", put.status());
    let url = format!("{base}{}", job_path("other-app", "cam/7"));
    let job: JobSnapshot = c.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(job.stop_reason, Some(StopReason::Other("QUOTA".into())));

    let changes: Vec<Change> = c
        .get(format!("{base}/_sim/changes"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(
        (
            changes[0].app_id.as_str(),
            changes[0].job_id.as_str(),
            changes[0].state.as_str()
        ),
        ("other-app", "cam/7", "STOPPED")
    );

    let fault = r#"{"kind": "server_error", "job_id": "cam/7", "remaining": 1}"#;
    let posted = c
        .post(format!("{base}/_sim/faults"))
        .header("content-type", "application/json")
        .body(fault);
    assert!(posted.send().await.unwrap().status().is_success());
    assert_eq!(c.get(&url).send().await.unwrap().status(), 500);
    assert_eq!(c.get(&url).send().await.unwrap().status(), 200);

    let stall = serde_json::json!({"kind": {"stall": "10s"}});
    assert!(
        c.post(format!("{base}/_sim/faults"))
            .json(&stall)
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
    );
    assert!(
        c.delete(format!("{base}/_sim/faults"))
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
    );
    assert_eq!(
        c.get(&url).send().await.unwrap().status(),
        200,
        "cleared, no stall"
    );

    assert!(
        c.delete(format!("{base}/_sim/jobs/other-app/cam%2F7"))
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
    );
    assert_eq!(c.get(&url).send().await.unwrap().status(), 404);
    assert_eq!(sim.stats().requests, 5, "control requests are not counted");
}

#[tokio::test]
async fn shutdown_stops_serving() {
    let sim = spawn(static_opts()).await;
    assert_eq!(get(&sim, "job-0000").await.unwrap().status(), 200);
    sim.shutdown();
    wait_for("connections to be refused", T, || async {
        get(&sim, "job-0000").await.is_err().then_some(())
    })
    .await;
}
