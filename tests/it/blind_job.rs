//! Issue 22, item 2: a job that cannot be read while the others are. Its own polls failing
//! (`poll_failing`), and a record with one value that does not fit (`1e309`) read without it.

use crate::harness::*;
use crate::support::receiver::Receiver;
use recwatch_sim::{Fault, FaultKind};

/// How many accepted webhook deliveries of `rule` with `status` are about `job_id`.
fn count(hook: &Receiver, rule: &str, status: &str, job_id: &str) -> usize {
    hook.received()
        .iter()
        .filter(|d| {
            d.alert.rule.as_str() == rule
                && d.alert.status.as_str() == status
                && d.alert.job.as_ref().is_some_and(|j| j.job_id == job_id)
        })
        .count()
}

/// One job answers 500 while the others answer: `poll_failing` fires once for it (not
/// `api_unhealthy`), and resolves once it reads again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_own_polls_fail_is_alerted_once_and_resolved() {
    let sim = start_sim(static_sim(3)).await;
    let hook = Receiver::start(Some(SECRET)).await;
    let mut cfg = AppConfig::new(&sim, 3);
    cfg.extra = notify_toml(Some(hook.url().as_str()), None, "");
    let mut app = TestApp::spawn(&cfg, 3).await;

    let failing = recwatch_sim::job_id(1);
    sim.set_fault(Fault::new(FaultKind::ServerError).for_job(failing.clone()));
    wait_for("poll_failing to fire for the failing job", T, || {
        let n = count(&hook, "poll_failing", "firing", &failing);
        async move { (n >= 1).then_some(()) }
    })
    .await;
    let alert = hook
        .received()
        .into_iter()
        .find(|d| d.alert.rule.as_str() == "poll_failing")
        .unwrap()
        .alert;
    assert_eq!(alert.severity.as_str(), "warning", "the default severity");
    assert!(
        alert
            .summary
            .contains("polls failed while the RTC API answers other jobs"),
        "{}",
        alert.summary
    );
    assert!(alert.summary.contains("RTC.00002001"), "{}", alert.summary);
    let (_, _, kind, failures) = app.job_row(&failing).await.unwrap();
    assert_eq!(kind.as_deref(), Some("server_error"));
    assert!(failures >= 5, "{failures}");

    // It reads again: one resolved notice.
    sim.clear_faults();
    wait_for("poll_failing to resolve", T, || {
        let n = count(&hook, "poll_failing", "resolved", &failing);
        async move { (n >= 1).then_some(()) }
    })
    .await;
    // A few more rounds of polls change nothing.
    let polled = polls_of(&sim, &failing);
    wait_for("more polls of the job", T, || {
        let n = polls_of(&sim, &failing);
        async move { (n >= polled + 5).then_some(()) }
    })
    .await;
    assert!(app.stop().await.success());
    assert_eq!(count(&hook, "poll_failing", "firing", &failing), 1);
    assert_eq!(count(&hook, "poll_failing", "resolved", &failing), 1);
    let others = hook
        .received()
        .iter()
        .filter(|d| {
            d.alert.rule.as_str() == "poll_failing"
                && d.alert.job.as_ref().is_some_and(|j| j.job_id != failing)
        })
        .count();
    assert_eq!(others, 0, "only the failing job");
    let api = hook
        .received()
        .iter()
        .filter(|d| d.alert.rule.as_str() == "api_unhealthy")
        .count();
    assert_eq!(api, 0, "the API answered the other jobs");
}

/// The whole API failing is `api_unhealthy`'s: no `poll_failing` per job beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_of_the_whole_api_is_not_poll_failing() {
    let sim = start_sim(static_sim(3)).await;
    let hook = Receiver::start(Some(SECRET)).await;
    let mut cfg = AppConfig::new(&sim, 3);
    cfg.extra = notify_toml(Some(hook.url().as_str()), None, "");
    let mut app = TestApp::spawn(&cfg, 3).await;
    sim.set_fault(Fault::new(FaultKind::ServerError));
    wait_for("api_unhealthy to fire", T, || {
        let n = hook
            .received()
            .iter()
            .filter(|d| d.alert.rule.as_str() == "api_unhealthy")
            .count();
        async move { (n >= 1).then_some(()) }
    })
    .await;
    // Every job fails more than poll_failing_after (5) times in a row while the API is
    // unhealthy.
    for j in 0..3 {
        let job = recwatch_sim::job_id(j);
        wait_for(&format!("{job} to fail 6 times in a row"), T, || async {
            (app.job_row(&job).await?.3 >= 6).then_some(())
        })
        .await;
    }
    assert!(app.stop().await.success());
    let per_job = hook
        .received()
        .iter()
        .filter(|d| d.alert.rule.as_str() == "poll_failing")
        .count();
    assert_eq!(
        per_job,
        0,
        "{:?}",
        hook.received()
            .iter()
            .map(|d| d.alert.summary.clone())
            .collect::<Vec<_>>()
    );
}

/// A record with `"max_idle_time": 1e309` (the SDK reads infinity; serde_json refuses it):
/// the field is dropped, the job's real STOPPED INTERNAL_ERROR is read and alerted, and the
/// log names the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_out_of_range_costs_that_field_not_the_record() {
    let sim = start_sim(static_sim(2)).await;
    let hook = Receiver::start(Some(SECRET)).await;
    let mut cfg = AppConfig::new(&sim, 2);
    cfg.extra = notify_toml(Some(hook.url().as_str()), None, "");
    let mut app = TestApp::spawn(&cfg, 2).await;

    let job = recwatch_sim::job_id(0);
    let body = format!(
        r#"{{"job_id":"{job}","app_id":"demo-app","state":"STOPPED","stop_reason":"INTERNAL_ERROR","max_idle_time":1e309,"description":"recorder crashed"}}"#
    );
    sim.set_fault(Fault::new(FaultKind::RawBody(body)).for_job(job.clone()));
    wait_for("stopped_unexpectedly for the job", T, || {
        let n = count(&hook, "stopped_unexpectedly", "firing", &job);
        async move { (n >= 1).then_some(()) }
    })
    .await;
    let (state, reason, _, failures) = app.job_row(&job).await.unwrap();
    assert_eq!(state.as_deref(), Some("STOPPED"));
    assert_eq!(reason.as_deref(), Some("INTERNAL_ERROR"));
    assert_eq!(failures, 0, "the record was read");
    app.wait_log("read without them", T).await;
    let log = app.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("read without them"))
        .unwrap();
    assert!(line.contains("max_idle_time"), "{line}");
    assert!(app.stop().await.success());
    assert_eq!(count(&hook, "poll_failing", "firing", &job), 0);
    // The other job was never touched.
    assert_eq!(
        app.job_row(&recwatch_sim::job_id(1))
            .await
            .unwrap()
            .0
            .as_deref(),
        Some("RUNNING")
    );
}

/// `rules.poll_failing_after` below 2 is a configuration error: 78, naming the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_failing_after_below_two_exits_78() {
    let sim = start_sim(static_sim(1)).await;
    let mut cfg = AppConfig::new(&sim, 1);
    cfg.extra = "\n[rules]\npoll_failing_after = 1\n".into();
    let app = TestApp::new(&cfg);
    for cmd in ["check", "run"] {
        let (code, _, err) = app.run_cmd(&[cmd]).await;
        assert_eq!(code, 78, "{cmd}: {err}");
        assert!(err.contains("rules.poll_failing_after"), "{cmd}: {err}");
    }
    cfg.extra = "\n[rules]\npoll_failing_after = 2\n".into();
    app.rewrite_config(&cfg);
    let (code, out, err) = app.run_cmd(&["check"]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("poll_failing=warning (after 2 failed polls in a row)"),
        "{out}"
    );
}
