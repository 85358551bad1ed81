//! Wrong answers are not the truth: an endpoint that redirects or is the gateway's 404 raises
//! one api_unhealthy alert (saying why), never a job_not_found per job; an answer about another
//! job is a failed poll, not that job's new state; odd but readable answers make no false
//! transitions; every transition keeps the request id of the answer that showed it; a refusal
//! caused by a skewed clock says so.

use crate::core::wait_states;
use crate::harness::*;
use crate::support::receiver::Receiver;
use recwatch_sim::{Fault, FaultKind, SimOptions, Simulator, job_id};

fn accepted(hook: &Receiver, rule: &str, status: &str) -> usize {
    hook.received()
        .iter()
        .filter(|d| d.alert.rule.as_str() == rule && d.alert.status.as_str() == status)
        .count()
}

/// Waits for `more` faulty answers after this moment: the daemon went on polling through them.
async fn wait_more_faults(sim: &Simulator, more: u64) {
    let seen = sim.stats().faults_applied;
    wait_for(&format!("{more} more faulty answers"), T, || {
        let n = sim.stats().faults_applied;
        async move { (n >= seen + more).then_some(()) }
    })
    .await
}

/// One static job watched with a signed webhook, started and seen RUNNING.
async fn one_running_job() -> (Simulator, Receiver, TestApp, String) {
    let sim = start_sim(static_sim(1)).await;
    let hook = Receiver::start(Some(SECRET)).await;
    let mut cfg = AppConfig::new(&sim, 1);
    cfg.extra = notify_toml(Some(hook.url().as_str()), None, "");
    let mut app = TestApp::new(&cfg);
    app.start();
    let job = job_id(0);
    wait_states(&app, std::slice::from_ref(&job), "RUNNING").await;
    (sim, hook, app, job)
}

const API_UNHEALTHY: &str = "SELECT COUNT(*) FROM alerts WHERE rule = 'api_unhealthy'";
const JOB_NOT_FOUND: &str = "SELECT COUNT(*) FROM alerts WHERE rule = 'job_not_found'";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_constant_redirect_is_one_api_unhealthy_and_no_job_not_found() {
    let sim = start_sim(static_sim(3)).await;
    // Every answer, from the first, is a redirect to a login page.
    let login = format!("{}/login?next=rtc", sim.url());
    sim.set_fault(Fault::new(FaultKind::Redirect(login.clone())));
    let hook = Receiver::start(Some(SECRET)).await;
    let mut cfg = AppConfig::new(&sim, 3);
    cfg.extra = notify_toml(Some(hook.url().as_str()), None, "");
    let mut app = TestApp::new(&cfg);
    app.start();

    let got = hook.wait_for(1, T).await;
    let alert = &got[0].alert;
    assert_eq!(alert.rule.as_str(), "api_unhealthy");
    assert_eq!(alert.status.as_str(), "firing");
    assert!(alert.job.is_none());
    assert!(
        alert
            .summary
            .contains(&format!("redirected: HTTP 302 (to {login})"))
            && alert.summary.contains("check api.endpoint"),
        "says why: {}",
        alert.summary
    );
    // Every job is asked twice more after the alert, and still nothing else is raised.
    wait_more_faults(&sim, 6).await;
    for j in (0..3).map(job_id) {
        let (state, _, kind, failures) = app.job_row(&j).await.unwrap();
        assert_eq!(state, None, "{j}: no state was ever seen");
        assert_eq!(kind.as_deref(), Some("redirect"), "{j}");
        assert!(failures >= 2, "{j}: {failures}");
    }
    assert!(app.running());
    assert!(app.stop().await.success());
    assert_eq!(app.scalar(API_UNHEALTHY).await, 1);
    assert_eq!(app.scalar(JOB_NOT_FOUND).await, 0);
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM alerts").await,
        1,
        "nothing else"
    );
    assert_eq!(accepted(&hook, "api_unhealthy", "firing"), 1);
    assert!(app.transitions().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_constant_gateway_404_is_one_api_unhealthy_and_no_job_not_found() {
    let sim = start_sim(static_sim(3)).await;
    let hook = Receiver::start(Some(SECRET)).await;
    let mut cfg = AppConfig::new(&sim, 3);
    cfg.extra = notify_toml(Some(hook.url().as_str()), None, "");
    let mut app = TestApp::new(&cfg);
    app.start();
    let jobs: Vec<String> = (0..3).map(job_id).collect();
    wait_states(&app, &jobs, "RUNNING").await;

    // From now on the gateway says "The API does not exist" to every request.
    sim.set_fault(Fault::new(FaultKind::ApiNotFound));
    wait_for("the api_unhealthy alert", T, || {
        let n = accepted(&hook, "api_unhealthy", "firing");
        async move { (n >= 1).then_some(()) }
    })
    .await;
    wait_more_faults(&sim, 6).await;
    let firing = hook
        .received()
        .into_iter()
        .find(|d| d.alert.rule.as_str() == "api_unhealthy")
        .unwrap();
    assert!(
        firing.alert.summary.contains("HTTP 404 APIG.0101")
            && firing.alert.summary.contains("check api.endpoint"),
        "says why: {}",
        firing.alert.summary
    );
    for j in &jobs {
        let (state, _, kind, _) = app.job_row(j).await.unwrap();
        assert_eq!(
            state.as_deref(),
            Some("RUNNING"),
            "{j}: last known state kept"
        );
        assert_eq!(kind.as_deref(), Some("endpoint_not_found"), "{j}");
    }
    assert_eq!(accepted(&hook, "api_unhealthy", "firing"), 1);
    assert_eq!(accepted(&hook, "job_not_found", "firing"), 0);

    // The endpoint is fixed: the episode resolves, once, and the jobs carry on.
    sim.clear_faults();
    wait_for("the resolved notice", T, || {
        let n = accepted(&hook, "api_unhealthy", "resolved");
        async move { (n >= 1).then_some(()) }
    })
    .await;
    set_state(&sim, &jobs[0], "STOPPED", Some("TENANT_STOP"));
    wait_states(&app, &jobs[..1], "STOPPED").await;
    assert!(app.stop().await.success());
    assert_eq!(
        app.scalar(API_UNHEALTHY).await,
        2,
        "one firing, one resolved"
    );
    assert_eq!(app.scalar(JOB_NOT_FOUND).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_about_another_job_is_no_transition_and_the_job_keeps_being_polled() {
    let sim = start_sim(static_sim(3)).await;
    let hook = Receiver::start(Some(SECRET)).await;
    let mut cfg = AppConfig::new(&sim, 3);
    cfg.extra = notify_toml(Some(hook.url().as_str()), None, "");
    let mut app = TestApp::new(&cfg);
    app.start();
    let jobs: Vec<String> = (0..3).map(job_id).collect();
    wait_states(&app, &jobs, "RUNNING").await;

    // job-0001's answers are about job-0002, which has died: a critical alert if believed.
    let mut other = snap(&jobs[2], "STOPPED", Some("INTERNAL_ERROR"));
    other.app_id = Some("demo-app".into());
    sim.set_job("demo-app", &jobs[1], other);
    wait_for("job-0001's poll to fail as wrong_job", T, || async {
        let (_, _, kind, _) = app.job_row(&jobs[1]).await?;
        (kind.as_deref() == Some("wrong_job")).then_some(())
    })
    .await;
    // It keeps being polled (with back-off), and every answer is refused the same way.
    let polled = polls_of(&sim, &jobs[1]);
    wait_for("two more polls of job-0001", T, || async {
        (polls_of(&sim, &jobs[1]) >= polled + 2).then_some(())
    })
    .await;
    let (state, _, kind, failures) = app.job_row(&jobs[1]).await.unwrap();
    assert_eq!(
        state.as_deref(),
        Some("RUNNING"),
        "not the other job's state"
    );
    assert_eq!(kind.as_deref(), Some("wrong_job"));
    assert!(failures >= 2, "{failures}");
    let log = app.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("the answer is about app") && l.contains("job-0002")),
        "the log says what the answer was about"
    );
    // The real change, once the API answers about the right job, is seen at once.
    set_state(&sim, &jobs[1], "STOPPED", Some("EXCEED_MAX_IDLE_TIME"));
    wait_states(&app, &jobs[1..2], "STOPPED").await;
    assert!(app.stop().await.success());
    let mine: Vec<_> = app
        .transitions()
        .await
        .into_iter()
        .filter(|t| t.0 == jobs[1])
        .map(|t| (t.2, t.3))
        .collect();
    assert_eq!(
        mine,
        vec![
            ("RUNNING".to_string(), None),
            (
                "STOPPED".to_string(),
                Some("EXCEED_MAX_IDLE_TIME".to_string())
            )
        ]
    );
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM alerts WHERE rule = 'stopped_unexpectedly'")
            .await,
        0,
        "no false critical alert"
    );
    assert_eq!(app.scalar(API_UNHEALTHY).await, 0, "one job's trouble");
}

/// A 200 whose body has no state (an error body sent with 200, `{}`) is a failed poll of its
/// own kind (`no_state`), not a record of a job with no state: no transition, the job keeps
/// being polled, and when every job is answered so, that is one api_unhealthy alert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_without_a_state_is_a_failed_poll_that_counts_toward_api_health() {
    let sim = start_sim(static_sim(3)).await;
    let hook = Receiver::start(Some(SECRET)).await;
    let mut cfg = AppConfig::new(&sim, 3);
    cfg.extra = notify_toml(Some(hook.url().as_str()), None, "");
    let mut app = TestApp::new(&cfg);
    app.start();
    let jobs: Vec<String> = (0..3).map(job_id).collect();
    wait_states(&app, &jobs, "RUNNING").await;

    // One job is answered with an error body and status 200.
    sim.set_job_body(
        "demo-app",
        &jobs[1],
        r#"{"error_code":"RTC.00002001","error_msg":"internal error"}"#,
    );
    wait_for("job-0001's poll to fail as no_state", T, || async {
        let (_, _, kind, _) = app.job_row(&jobs[1]).await?;
        (kind.as_deref() == Some("no_state")).then_some(())
    })
    .await;
    let polled = polls_of(&sim, &jobs[1]);
    wait_for("two more polls of job-0001", T, || async {
        (polls_of(&sim, &jobs[1]) >= polled + 2).then_some(())
    })
    .await;
    let (state, _, kind, failures) = app.job_row(&jobs[1]).await.unwrap();
    assert_eq!(state.as_deref(), Some("RUNNING"), "the last known state");
    assert_eq!(kind.as_deref(), Some("no_state"));
    assert!(failures >= 2, "{failures}");
    assert!(
        app.log_text()
            .lines()
            .any(|l| l.contains("answer without a job state") && l.contains("RTC.00002001")),
        "the log names the failure and the code the body carried"
    );
    assert_eq!(app.scalar(API_UNHEALTHY).await, 0, "one job's trouble");

    // Every job is answered `{}`: the API is not answering.
    for j in &jobs {
        sim.set_job_body("demo-app", j, "{}");
    }
    wait_for("the api_unhealthy alert", T, || {
        let n = accepted(&hook, "api_unhealthy", "firing");
        async move { (n >= 1).then_some(()) }
    })
    .await;
    let firing = hook
        .received()
        .into_iter()
        .find(|d| d.alert.rule.as_str() == "api_unhealthy")
        .unwrap();
    assert!(
        firing.alert.summary.contains("answer without a job state"),
        "says why: {}",
        firing.alert.summary
    );

    // Records again: the outage resolves and the real change is seen.
    set_state(&sim, &jobs[0], "RUNNING", None);
    set_state(&sim, &jobs[2], "RUNNING", None);
    set_state(&sim, &jobs[1], "STOPPED", Some("TENANT_STOP"));
    wait_for("the resolved notice", T, || {
        let n = accepted(&hook, "api_unhealthy", "resolved");
        async move { (n >= 1).then_some(()) }
    })
    .await;
    wait_states(&app, &jobs[1..2], "STOPPED").await;
    assert!(app.stop().await.success());
    let steps: Vec<(String, String)> = app
        .transitions()
        .await
        .into_iter()
        .map(|t| (t.0, t.2))
        .collect();
    let want: Vec<(String, String)> = vec![
        (jobs[0].clone(), "RUNNING".into()),
        (jobs[1].clone(), "RUNNING".into()),
        (jobs[2].clone(), "RUNNING".into()),
        (jobs[1].clone(), "STOPPED".into()),
    ];
    let mut sorted_steps = steps.clone();
    sorted_steps.sort();
    let mut sorted_want = want.clone();
    sorted_want.sort();
    assert_eq!(
        sorted_steps, sorted_want,
        "no transition from a stateless answer"
    );
    assert_eq!(accepted(&hook, "api_unhealthy", "firing"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_id_of_each_transition_is_in_history_and_the_alert() {
    let (sim, hook, mut app, job) = one_running_job().await;
    set_state(&sim, &job, "STOPPED", Some("INTERNAL_ERROR"));
    let got = hook.wait_for(1, T).await;
    assert!(app.stop().await.success());

    let (code, out, err) = app.run_cmd(&["history", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(rows.len(), 2, "{out}");
    let ids: Vec<&str> = rows
        .iter()
        .map(|r| r["request_id"].as_str().unwrap_or_else(|| panic!("{r}")))
        .collect();
    for id in &ids {
        // The simulator's ids: 32 hex digits, unique per request.
        assert_eq!(id.len(), 32, "{id}");
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    }
    assert_ne!(ids[0], ids[1], "each transition's own answer");
    let alert = &got[0].alert;
    assert_eq!(alert.rule.as_str(), "stopped_unexpectedly");
    let transition = alert.transition.as_ref().unwrap();
    // Newest first: the STOPPED transition's answer is the alert's.
    assert_eq!(rows[0]["to_state"], "STOPPED");
    assert_eq!(transition.request_id.as_deref(), Some(ids[0]));
    let payload: serde_json::Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(payload["transition"]["request_id"], ids[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_but_readable_answers_are_read_and_make_no_false_transitions() {
    let (sim, hook, mut app, job) = one_running_job().await;

    // What the SDK would accept: numeric app id, record_param as a string, the state in
    // another case with padding and a NUL, invalid UTF-8 in the description.
    sim.set_job_body(
        "demo-app",
        &job,
        &b"{\"job_id\":\"job-0000\",\"app_id\":\"demo-app\",\"state\":\" running\\u0000\",\"record_param\":\"rule-1\",\"max_idle_time\":\"30\",\"description\":\"enregistrement \xe9\xe9\"}"[..],
    );
    let db_description = || async {
        let db = app.db().await?;
        let d: Option<String> =
            sqlx::query_scalar("SELECT description FROM jobs WHERE job_id = 'job-0000'")
                .fetch_one(&db)
                .await
                .ok()?;
        db.close().await;
        d
    };
    wait_for("the odd answer to be read", T, || async {
        db_description()
            .await
            .filter(|d| d.starts_with("enregistrement \u{FFFD}"))
    })
    .await;
    let polled = polls_of(&sim, &job);
    wait_for("more polls of the odd answer", T, || async {
        (polls_of(&sim, &job) >= polled + 5).then_some(())
    })
    .await;
    // A stop spelled in lower case is the real stop, with its documented reason.
    sim.set_job_body(
        "demo-app",
        &job,
        &br#"{"job_id":"job-0000","state":"stopped","stop_reason":"exceed_max_idle_time "}"#[..],
    );
    wait_states(&app, std::slice::from_ref(&job), "STOPPED").await;
    hook.wait_for(1, T).await;
    assert!(app.stop().await.success());
    let steps: Vec<_> = app
        .transitions()
        .await
        .into_iter()
        .map(|t| (t.2, t.3))
        .collect();
    assert_eq!(
        steps,
        vec![
            ("RUNNING".to_string(), None),
            (
                "STOPPED".to_string(),
                Some("EXCEED_MAX_IDLE_TIME".to_string())
            )
        ],
        "no transition from the spelling"
    );
    let (_, _, kind, failures) = app.job_row(&job).await.unwrap();
    assert_eq!((kind, failures), (None, 0), "no poll failed");
    assert_eq!(accepted(&hook, "idle_timeout", "firing"), 1);
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM alerts").await,
        1,
        "the stop's alert only"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_from_a_skewed_clock_names_the_clock() {
    // The API's clock is an hour ahead of this machine's: every X-Sdk-Date is refused.
    let sim = start_sim(SimOptions {
        clock_offset: 3600,
        ..static_sim(2)
    })
    .await;
    let hook = Receiver::start(Some(SECRET)).await;
    let mut cfg = AppConfig::new(&sim, 2);
    cfg.extra = notify_toml(Some(hook.url().as_str()), None, "");
    let mut app = TestApp::new(&cfg);
    app.start();
    app.wait_log("refused the credentials 3 times in a row", T)
        .await;
    let got = hook.wait_for(1, T).await;
    let summary = &got[0].alert.summary;
    assert_eq!(got[0].alert.rule.as_str(), "api_unhealthy");
    assert!(
        summary.contains("the system clock is 60 minutes off the API's Date header"),
        "{summary}"
    );
    assert!(!summary.contains("check api.auth"), "{summary}");
    let log = app.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("refused the credentials 3 times in a row"))
        .unwrap();
    assert!(
        line.contains("the system clock is 60 minutes off the API's Date header")
            && !line.contains("check api.auth"),
        "{line}"
    );
    assert!(app.stop().await.success());
}
