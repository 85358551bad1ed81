//! The core issue: polling, transitions, the store, the budget, error handling, the CLI.

use crate::harness::*;
use recwatch_sim::{Fault, FaultKind, SimOptions};
use std::time::Duration;

/// Waits until every listed job shows `state` in the database.
pub async fn wait_states(app: &TestApp, jobs: &[String], state: &str) {
    wait_for(&format!("{jobs:?} to be {state}"), T, || async {
        for j in jobs {
            if app.job_row(j).await?.0.as_deref() != Some(state) {
                return None;
            }
        }
        Some(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_transition_is_recorded_once_and_a_restart_writes_none() {
    let sim = start_sim(static_sim(4)).await;
    let jobs: Vec<String> = (0..4).map(recwatch_sim::job_id).collect();
    for j in &jobs {
        set_state(&sim, j, "INIT", None);
    }
    let mut cfg = AppConfig::new(&sim, 4);
    cfg.extra = "[poll]\n".into(); // replaced below: keep stop_after_terminal default
    cfg.extra.clear();
    let mut app = TestApp::new(&cfg);
    app.start();
    wait_states(&app, &jobs, "INIT").await;
    for j in &jobs {
        set_state(&sim, j, "RUNNING", None);
    }
    wait_states(&app, &jobs, "RUNNING").await;
    let reasons = ["INTERNAL_ERROR", "EXCEED_MAX_IDLE_TIME", "TENANT_STOP"];
    for (i, j) in jobs.iter().take(3).enumerate() {
        set_state(&sim, j, "STOPPED", Some(reasons[i]));
    }
    wait_states(&app, &jobs[..3], "STOPPED").await;
    // Job 3 stays RUNNING: wait for several more polls of it, which must write nothing.
    let polled = sim.stats().by_job["demo-app"]["job-0003"];
    wait_for("more polls of the running job", T, || {
        let n = sim.stats().by_job["demo-app"]["job-0003"];
        async move { (n >= polled + 5).then_some(()) }
    })
    .await;
    assert!(app.stop().await.success(), "SIGTERM exits 0");

    let t = app.transitions().await;
    for (i, j) in jobs.iter().enumerate() {
        let mine: Vec<_> = t
            .iter()
            .filter(|r| &r.0 == j)
            .map(|r| (r.1.clone(), r.2.clone(), r.3.clone()))
            .collect();
        let mut want = vec![
            (None, "INIT".to_string(), None),
            (Some("INIT".into()), "RUNNING".into(), None),
        ];
        if i < 3 {
            want.push((
                Some("RUNNING".into()),
                "STOPPED".into(),
                Some(reasons[i].to_string()),
            ));
        }
        assert_eq!(mine, want, "{j}");
    }

    // A restart polls the running job again and writes nothing new.
    let before = app.transitions().await.len();
    let polled = sim.stats().by_job["demo-app"]["job-0003"];
    app.start();
    wait_for("the restarted daemon to poll", T, || {
        let n = sim.stats().by_job["demo-app"]["job-0003"];
        async move { (n >= polled + 3).then_some(()) }
    })
    .await;
    assert!(app.stop().await.success());
    assert_eq!(
        app.transitions().await.len(),
        before,
        "a restart wrote a transition"
    );
    // The stopped jobs were not polled at all after the restart (stop_after_terminal).
    assert!(
        app.log_text().contains("already STOPPED: not polled"),
        "restart skipped terminal jobs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminal_jobs_stop_being_polled() {
    let sim = start_sim(static_sim(2)).await;
    let mut app = TestApp::new(&AppConfig::new(&sim, 2));
    app.start();
    wait_states(
        &app,
        &["job-0000".to_string(), "job-0001".to_string()],
        "RUNNING",
    )
    .await;
    set_state(&sim, "job-0000", "STOPPED", Some("TENANT_STOP"));
    wait_states(&app, &["job-0000".to_string()], "STOPPED").await;
    app.wait_log("no longer polled", T).await;
    let stopped_polls = sim.stats().by_job["demo-app"]["job-0000"];
    let other = sim.stats().by_job["demo-app"]["job-0001"];
    // Ten more polls of the other job: the stopped one gets none.
    wait_for("more polls of the running job", T, || {
        let n = sim.stats().by_job["demo-app"]["job-0001"];
        async move { (n >= other + 10).then_some(()) }
    })
    .await;
    assert_eq!(sim.stats().by_job["demo-app"]["job-0000"], stopped_polls);
    assert!(app.stop().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_never_exceed_the_rate_limit_in_any_second() {
    // 40 jobs every 100 ms want 400 requests/s; the budget is 5.
    let sim = start_sim(static_sim(40)).await;
    let mut cfg = AppConfig::new(&sim, 40);
    cfg.rate_limit = 5;
    let mut app = TestApp::new(&cfg);
    app.start();
    wait_for("25 polls", T, || {
        let n = sim.stats().requests;
        async move { (n >= 25).then_some(()) }
    })
    .await;
    assert!(app.stop().await.success());
    let stats = sim.stats();
    assert_within_budget(&stats, 5, "40 jobs on a budget of 5");
    assert!(
        stats.max_per_sliding_second >= 4,
        "the budget is used, not wasted: {}",
        stats.max_per_sliding_second
    );
    assert!(
        app.log_text()
            .contains("needs more requests per second than api.rate_limit allows")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_hit_only_their_job_and_are_recorded_by_kind() {
    // job-0000: 404 (not in the simulator); job-0001: 500s; job-0002: unreadable bodies;
    // job-0003: stalls past the timeout; job-0004: truncated bodies; job-0005: resets;
    // job-0006: healthy, and changes during the episode; job-0007: healthy and unchanged.
    let sim = start_sim(static_sim(8)).await;
    sim.remove_job("demo-app", "job-0000");
    sim.set_fault(Fault::new(FaultKind::ServerError).for_job("job-0001"));
    sim.set_fault(Fault::new(FaultKind::Garbage).for_job("job-0002"));
    sim.set_fault(Fault::new(FaultKind::Stall(Duration::from_secs(3))).for_job("job-0003"));
    sim.set_fault(Fault::new(FaultKind::Truncated).for_job("job-0004"));
    sim.set_fault(Fault::new(FaultKind::Reset).for_job("job-0005"));
    let mut cfg = AppConfig::new(&sim, 8);
    cfg.timeout = "500ms";
    cfg.extra = "[rules]\napi_failure_threshold = 100\n".into();
    let mut app = TestApp::new(&cfg);
    app.start();
    let cases = [
        ("job-0000", "not_found"),
        ("job-0001", "server_error"),
        ("job-0002", "bad_response"),
        ("job-0003", "timeout"),
        ("job-0004", "bad_response"),
        ("job-0005", "connection"),
    ];
    for (job, kind) in cases {
        wait_for(&format!("{job} to record {kind}"), T, || async {
            (app.job_row(job).await?.2.as_deref() == Some(kind)).then_some(())
        })
        .await;
    }
    // The healthy job is recorded, and changes during the episode are seen.
    wait_states(&app, &["job-0006".to_string()], "RUNNING").await;
    set_state(&sim, "job-0006", "STOPPED", Some("INTERNAL_ERROR"));
    wait_states(&app, &["job-0006".to_string()], "STOPPED").await;
    // Failing jobs back off: far fewer polls than a healthy one over the same time.
    wait_for("40 polls of the healthy job", T, || {
        let n = polls_of(&sim, "job-0007");
        async move { (n >= 40).then_some(()) }
    })
    .await;
    let by_job = sim.stats().by_job["demo-app"].clone();
    for failing in ["job-0000", "job-0001", "job-0002", "job-0004", "job-0005"] {
        assert!(
            by_job[failing] * 3 < by_job["job-0007"],
            "{failing} did not back off: {by_job:?}"
        );
    }
    // When the faults clear, the job recovers and its state is recorded.
    sim.clear_faults();
    wait_states(&app, &["job-0001".to_string()], "RUNNING").await;
    assert!(app.stop().await.success());
    let log = app.log_text();
    assert!(
        log.contains("RTC.00001003"),
        "404 logged with its error code"
    );
    assert!(
        log.contains("request id"),
        "errors logged with the request id"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_storm_slows_the_whole_poller() {
    let sim = start_sim(static_sim(10)).await;
    let mut cfg = AppConfig::new(&sim, 10);
    cfg.rate_limit = 10;
    // One request at a time: the storm's first 429 is answered before another request can
    // go, so what the simulator sees depends on the pauses, not on the machine's speed
    // (with 4 in flight, a slow answer would let 4 through before the first 429 counted).
    cfg.max_in_flight = 1;
    let mut app = TestApp::new(&cfg);
    app.start();
    wait_for("normal polling", T, || {
        let n = sim.stats().requests;
        async move { (n >= 10).then_some(()) }
    })
    .await;
    sim.set_fault(Fault::new(FaultKind::Throttle));
    sim.reset_stats();
    wait_for("three throttled answers", T, || {
        let n = sim.stats().throttled;
        async move { (n >= 3).then_some(()) }
    })
    .await;
    let s = sim.stats();
    let secs = (chrono::Utc::now() - s.since.unwrap()).num_milliseconds() as f64 / 1000.0;
    assert!(
        s.max_per_sliding_second <= 2,
        "{} requests in one second during the storm",
        s.max_per_sliding_second
    );
    assert!(
        s.requests as f64 / secs < 1.5,
        "{} requests in {secs:.1}s",
        s.requests
    );
    sim.clear_faults();
    set_state(&sim, "job-0004", "STOPPED", None);
    wait_states(&app, &["job-0004".to_string()], "STOPPED").await;
    assert!(app.stop().await.success());
    assert!(app.log_text().contains("throttled by the API gateway"));
}

/// The requests' arrival seconds (one entry per request, oldest first).
pub fn arrival_seconds(s: &recwatch_sim::SimStats) -> Vec<i64> {
    s.per_second
        .iter()
        .flat_map(|(second, n)| std::iter::repeat_n(*second, *n as usize))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_costs_at_most_three_refused_requests() {
    let sim = start_sim(static_sim(8)).await;
    let mut cfg = AppConfig::new(&sim, 8);
    cfg.secret_key = "the-wrong-secret".into();
    // A short back-off, so the test waits for its end (a positive event) rather than watching
    // a while for requests that must not come.
    cfg.api_extra = "auth_backoff = \"3s\"\nallow_short_auth_backoff = true\n".into();
    let mut app = TestApp::new(&cfg);
    app.start();
    app.wait_log("refused the credentials 3 times in a row", T)
        .await;
    // When the back-off ends, one request probes the credentials, is refused, and the pause
    // doubles: 8 jobs due every 100 ms made no other request meanwhile.
    app.wait_log("refused the credentials 4 times in a row", T)
        .await;
    let s = sim.stats();
    assert_eq!((s.requests, s.refused_auth), (4, 4), "{s:?}");
    let at = arrival_seconds(&s);
    // 3 s after the third refusal at the earliest, so at least 2 calendar seconds later.
    assert!(at[3] - at[2] >= 2, "no back-off: {:?}", s.per_second);
    assert!(app.stop().await.success());
    let log = app.log_text();
    assert!(
        !log.contains("the-wrong-secret"),
        "the secret reached the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configs_exit_78_naming_the_key() {
    let sim = start_sim(static_sim(1)).await;
    let cfg = AppConfig::new(&sim, 1);
    let app = TestApp::new(&cfg);
    let good = std::fs::read_to_string(&app.config_path).unwrap();
    let sk = format!("secret_key = \"{SK}\"\n");
    // (case, the good file turned bad, what the message must name)
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "unknown key",
            good.replace("interval = ", "intervall = "),
            "poll.intervall",
        ),
        (
            "unknown section",
            format!("{good}\n[pol]\ninterval = \"5s\"\n"),
            "pol",
        ),
        (
            "bad duration",
            good.replace("[storage]\n", "[storage]\nretention = \"forever\"\n"),
            "storage.retention",
        ),
        (
            "bad cron",
            good.replace("[poll]\n", "[poll]\nschedule = \"*/5 * * * *\"\n"),
            "poll.schedule",
        ),
        (
            "rate limit zero",
            good.replace("rate_limit = 50", "rate_limit = 0"),
            "api.rate_limit",
        ),
        (
            "empty job id",
            format!("{good}\n[[jobs]]\napp_id = \"a\"\njob_id = \"\"\nname = \"porch\"\n"),
            "jobs[1] (\"porch\").job_id",
        ),
        (
            "duplicate job",
            format!("{good}\n[[jobs]]\napp_id = \"demo-app\"\njob_id = \"job-0000\"\n"),
            "already watched by jobs[0]",
        ),
        (
            "two auth methods",
            good.replace(&sk, &format!("{sk}token = \"t\"\n")),
            "two authentication methods",
        ),
        (
            "no auth",
            good.replace(&sk, "")
                .replace(&format!("access_key = \"{AK}\"\n"), ""),
            "no credentials",
        ),
        (
            "unreadable secret file",
            good.replace(&sk, "secret_key_file = \"/nonexistent/sk\"\n"),
            "api.auth.secret_key_file",
        ),
        ("not TOML", format!("{good}\n[[jobs]\n"), "TOML"),
    ];
    for (name, text, key) in cases {
        assert_ne!(text, good, "{name}: the case changed nothing");
        std::fs::write(&app.config_path, &text).unwrap();
        for cmd in ["check", "run", "status"] {
            let (code, _, err) = app.run_cmd(&[cmd]).await;
            assert_eq!(code, 78, "{name} ({cmd}): {err}");
            assert!(err.contains(key), "{name} ({cmd}): {err}");
            assert!(
                !err.contains(SK),
                "{name} ({cmd}): the secret leaked: {err}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_config_says_what_is_missing() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml");
    let out = std::process::Command::new(BIN)
        .args(["check", "--config", example])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(
        err.contains("api.auth") && err.contains("no credentials"),
        "{err}"
    );
    // With credentials from the environment it is a valid configuration.
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(BIN)
        .args(["check", "--config", example])
        .env("RECWATCH_API__AUTH__ACCESS_KEY", "AK")
        .env("RECWATCH_API__AUTH__SECRET_KEY", "super-secret-value")
        .env("RECWATCH_API__PROJECT_ID", PROJECT)
        // What `check` tries must not depend on this machine's /var/lib or port 9187.
        .env("RECWATCH_STORAGE__PATH", dir.path().join("recwatch.db"))
        .env("RECWATCH_HTTP__LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("lobby camera") && text.contains("every job is polled at its interval"),
        "{text}"
    );
    assert!(!text.contains("super-secret-value"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_the_effective_interval_over_budget() {
    let sim = start_sim(static_sim(1)).await;
    let mut cfg = AppConfig::new(&sim, 600);
    cfg.interval = "30s";
    cfg.rate_limit = 10;
    let app = TestApp::new(&cfg);
    let (code, out, err) = app.run_cmd(&["check"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("needs 20.0 requests/s but api.rate_limit is 10"),
        "{out}"
    );
    assert!(out.contains("every 1m instead of 30s"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_once_status_and_history() {
    let sim = start_sim(static_sim(3)).await;
    sim.remove_job("demo-app", "job-0002");
    set_state(&sim, "job-0001", "STOPPED", Some("EXCEED_MAX_IDLE_TIME"));
    let app = TestApp::new(&AppConfig::new(&sim, 3));
    let (code, out, err) = app.run_cmd(&["poll-once"]).await;
    assert_eq!(code, 1, "one poll failed, so poll-once fails: {out}{err}");
    assert!(
        out.contains("RUNNING")
            && out.contains("EXCEED_MAX_IDLE_TIME")
            && out.contains("RTC.00001003"),
        "{out}"
    );
    assert!(err.contains("1 of 3 polls failed"), "{err}");

    let (code, out, _) = app.run_cmd(&["status", "--json"]).await;
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 3);
    assert_eq!(v[0]["state"], "RUNNING");
    assert_eq!(v[1]["stop_reason"], "EXCEED_MAX_IDLE_TIME");
    assert!(v[2]["last_error"].as_str().unwrap().contains("not found"));

    // A second poll-once writes no new transition.
    app.run_cmd(&["poll-once"]).await;
    let (code, out, _) = app.run_cmd(&["history", "--json"]).await;
    assert_eq!(code, 0);
    let h: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rows = h.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{out}");
    for key in [
        "app_id",
        "job_id",
        "name",
        "from_state",
        "to_state",
        "stop_reason",
        "observed_at",
    ] {
        assert!(rows[0].get(key).is_some(), "{key}");
    }
    assert!(rows[0]["from_state"].is_null());
    let (_, out, _) = app
        .run_cmd(&["history", "--job", "job-0001", "--since", "1h", "--json"])
        .await;
    let h: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(h.as_array().unwrap().len(), 1);
    assert_eq!(h[0]["to_state"], "STOPPED");
    let (code, out, _) = app.run_cmd(&["history"]).await;
    assert_eq!(code, 0);
    assert!(
        out.starts_with("OBSERVED_AT") && out.contains("(first seen)"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_auth_sends_the_token() {
    let sim = start_sim(SimOptions {
        scripted: false,
        jobs: 1,
        auth: recwatch_sim::SimAuth::Token("tok-123".into()),
        ..SimOptions::default()
    })
    .await;
    let cfg = AppConfig::new(&sim, 1);
    let app = TestApp::new(&cfg);
    let text = std::fs::read_to_string(&app.config_path).unwrap();
    let text = text.replace(
        &format!("access_key = \"{AK}\"\nsecret_key = \"{SK}\"\n"),
        "token_file = \"token\"\n",
    );
    std::fs::write(&app.config_path, text).unwrap();
    std::fs::write(app.dir.path().join("token"), "tok-123\n").unwrap();
    let (code, out, err) = app.run_cmd(&["poll-once"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("RUNNING"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_shows_changes_alerts_and_verified_deliveries() {
    use tokio::io::AsyncBufReadExt;
    // Read live until everything the first two acts show has been shown (a positive
    // condition, with a generous deadline: a fixed `--for` lost the race on a loaded machine),
    // then Ctrl-C and read the closing count.
    let needles = [
        "(new) -> INIT",
        "INIT -> RUNNING",
        "RUNNING -> STOPPED  INTERNAL_ERROR",
        "ALERT CRITICAL stopped_unexpectedly",
        "ALERT WARNING idle_timeout",
        "ALERT WARNING stuck_init",
        "ALERT WARNING job_not_found",
        "signature verified",
        "no alert for TENANT_STOP: the application stopped the recording itself",
        "act 2: the scripted jobs have played out",
    ];
    let mut child = tokio::process::Command::new(BIN)
        .args(["demo", "--step", "1s", "--interval", "500ms"])
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut text = String::new();
    let seen_all = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            text.push_str(&line);
            text.push('\n');
            if needles.iter().all(|n| text.contains(n)) {
                return true;
            }
        }
        false
    })
    .await;
    let pid = child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let rest = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(line)) = lines.next_line().await {
            text.push_str(&line);
            text.push('\n');
        }
    })
    .await;
    assert!(rest.is_ok(), "the demo stops on Ctrl-C:\n{text}");
    let status = child.wait().await.unwrap();
    assert!(status.success(), "{text}");
    for needle in needles {
        assert!(
            text.contains(needle),
            "{needle:?} missing from the demo's output (seen all: {seen_all:?}):\n{text}"
        );
    }
    assert!(!text.contains("INVALID"), "{text}");
    // The closing count: the simulator saw the 10/s budget used, and never more than it in
    // any second (see assert_within_budget).
    let at_most: u64 = text
        .split("(at most ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no closing count in:\n{text}"));
    assert!(
        (1..=10).contains(&at_most),
        "{at_most} in a second:\n{text}"
    );
    // Plain text: no reason said twice, no "1 alerts".
    for line in text.lines() {
        for code in ["INTERNAL_ERROR", "EXCEED_MAX_IDLE_TIME", "RECORDER_CRASHED"] {
            assert!(line.matches(code).count() <= 1, "said twice: {line}");
        }
    }
    for odd in [" 1 alerts", " 1 transitions", " 1 API requests", "-0%"] {
        assert!(!text.contains(odd), "{odd:?} in:\n{text}");
    }
}

/// The demo's temporary directories under `tmp`.
fn demo_dirs(tmp: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(tmp)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("recwatch-demo-"))
        })
        .collect()
}

/// `recwatch demo | head` and Ctrl-C: the demo stops as it does at its end, and its temporary
/// directory (database and all) is removed. (A closed pipe used to exit on the spot and leave
/// it behind.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_removes_its_directory_when_its_reader_leaves_or_on_ctrl_c() {
    use tokio::io::AsyncBufReadExt;
    for how in ["closed pipe", "Ctrl-C"] {
        let tmp = tempfile::tempdir().unwrap();
        let mut child = tokio::process::Command::new(BIN)
            .args(["demo", "--step", "1s", "--interval", "500ms"])
            .env_remove("RUST_LOG")
            .env("TMPDIR", tmp.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        // The daemon is running once a job's state is shown.
        tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if line.contains("INIT") {
                    return;
                }
            }
            panic!("{how}: the demo ended before showing a job");
        })
        .await
        .unwrap_or_else(|_| panic!("{how}: no job shown within 60 s"));
        assert_eq!(
            demo_dirs(tmp.path()).len(),
            1,
            "{how}: the demo's directory"
        );
        match how {
            "closed pipe" => drop(lines),
            _ => {
                let pid = child.id().unwrap().to_string();
                let sent = std::process::Command::new("kill")
                    .args(["-INT", &pid])
                    .status()
                    .unwrap();
                assert!(sent.success());
            }
        }
        let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("{how}: the demo did not stop within 60 s"))
            .unwrap();
        assert!(
            out.status.success(),
            "{how}: {:?} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            demo_dirs(tmp.path()),
            Vec::<std::path::PathBuf>::new(),
            "{how}: the demo's directory is left behind"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cron_schedule_polls_every_job_on_each_tick() {
    let sim = start_sim(static_sim(3)).await;
    let mut cfg = AppConfig::new(&sim, 3);
    cfg.extra = String::new();
    let mut app = TestApp::new(&cfg);
    // The schedule instead of the interval (both at once is refused).
    let text = std::fs::read_to_string(&app.config_path).unwrap().replace(
        &format!("[poll]\ninterval = \"{}\"\n", cfg.interval),
        "[poll]\nschedule = \"* * * * * *\"\n",
    );
    std::fs::write(&app.config_path, text).unwrap();
    app.start();
    wait_for("three ticks of every job", T, || {
        let s = sim.stats();
        async move {
            (0..3)
                .all(|i| {
                    s.by_job
                        .get("demo-app")
                        .and_then(|m| m.get(&recwatch_sim::job_id(i)))
                        .copied()
                        .unwrap_or(0)
                        >= 3
                })
                .then_some(())
        }
    })
    .await;
    let since = sim.stats().since.unwrap();
    assert!(app.stop().await.success());
    let s = sim.stats();
    let secs = (chrono::Utc::now() - since).num_milliseconds() as f64 / 1000.0;
    // One poll per job per second (plus one tick of slack), not ten.
    assert!(
        (s.requests as f64) <= 3.0 * (secs + 1.5),
        "{} requests in {secs:.1}s",
        s.requests
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_that_change_nothing_still_advance_the_last_poll_time() {
    let sim = start_sim(static_sim(1)).await;
    let mut app = TestApp::new(&AppConfig::new(&sim, 1));
    app.start();
    wait_states(&app, &["job-0000".to_string()], "RUNNING").await;
    let polled_at = || async {
        let db = app.db().await?;
        let t: Option<String> =
            sqlx::query_scalar("SELECT last_polled_at FROM jobs WHERE job_id = 'job-0000'")
                .fetch_one(&db)
                .await
                .ok()?;
        db.close().await;
        t
    };
    let first = polled_at().await.unwrap();
    let later = wait_for("a later poll time in the database", T, || async {
        polled_at().await.filter(|t| *t > first)
    })
    .await;
    assert!(later > first);
    assert!(app.stop().await.success());
    assert_eq!(
        app.transitions().await.len(),
        1,
        "only the first sighting is a transition"
    );
}
