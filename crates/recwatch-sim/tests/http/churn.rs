//! Churn, the benchmark's random changes, as the change log records them.

use crate::harness::*;
use recwatch_sim::SimOptions;

#[tokio::test]
async fn churn_flips_jobs_and_logs_each_change() {
    let sim = spawn(SimOptions {
        churn: Some(200.0),
        seed: 7,
        ..static_opts()
    })
    .await;
    wait_for("10 churned changes", T, || async {
        (sim.changes().len() >= 10).then_some(())
    })
    .await;
    sim.shutdown();
    let changes = sim.changes();
    for job in ["job-0000", "job-0001", "job-0002"] {
        let states: Vec<&str> = changes
            .iter()
            .filter(|c| c.job_id == job)
            .map(|c| c.state.as_str())
            .collect();
        // Static jobs start RUNNING, so each job alternates starting with STOPPED.
        for (i, state) in states.iter().enumerate() {
            assert_eq!(
                *state,
                if i % 2 == 0 { "STOPPED" } else { "RUNNING" },
                "{job}: {states:?}"
            );
        }
    }
    let stopped = changes.iter().filter(|c| c.state == "STOPPED");
    assert!(stopped.clone().all(|c| c.stop_reason.is_some()));
}
