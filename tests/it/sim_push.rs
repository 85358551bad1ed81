//! Push end to end: `recwatch callback show/set` against the simulator's record-callback API,
//! and the simulator's signed callbacks reaching the daemon's receiver; with every callback
//! dropped, polling still finds the stop.

use crate::harness::*;
use recwatch_rtc::model::{JobSnapshot, State, StopReason};
use recwatch_sim::SimOptions;
use sqlx::Row;
use std::time::Duration;

/// 32 characters or more: what RTC takes as an auth_key.
const KEY: &str = "the-demo-app-callback-key-0123456789";
const THEIRS: &str = "https://my-app.example.com/rtc-callback";

fn push_config(sim: &recwatch_sim::Simulator, jobs: usize, listen: bool) -> AppConfig {
    let mut config = AppConfig::new(sim, jobs);
    let callback = if listen {
        "[callback]\nlisten = \"127.0.0.1:0\"\n"
    } else {
        ""
    };
    config.extra = format!("\n{callback}\n[[apps]]\napp_id = \"demo-app\"\nauth_key = \"{KEY}\"\n");
    config
}

fn stopped(reason: StopReason) -> JobSnapshot {
    JobSnapshot {
        state: Some(State::Stopped),
        stop_reason: Some(reason),
        start_time: Some("2026-11-28T06:00:00.000Z".into()),
        ..Default::default()
    }
}

#[tokio::test]
async fn callback_set_says_what_it_replaced_and_show_reads_it_back() {
    let sim = start_sim(SimOptions {
        scripted: false,
        ..signed_sim(1)
    })
    .await;
    // The app's own receiver holds the URL, with the app's own key.
    sim.register_callback(
        "demo-app",
        THEIRS,
        Some("someone-elses-key-0123456789abcdef"),
    );
    let app = TestApp::new(&push_config(&sim, 1, false));

    let (code, out, err) = app.run_cmd(&["callback", "show", "demo-app"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(THEIRS), "{out}");
    assert!(out.contains("not this app's [[apps]] auth_key"), "{out}");
    assert!(
        !out.contains("someone-elses-key"),
        "the key is never printed: {out}"
    );

    let ours = "http://127.0.0.1:9188/rtc/record-callback";
    let (code, out, err) = app.run_cmd(&["callback", "set", "demo-app", ours]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("now posts its record callbacks to {ours}")),
        "{out}"
    );
    assert!(out.contains(&format!("replaced {THEIRS}")), "{out}");
    assert!(
        out.contains(&format!("forward_to = \"{THEIRS}\"")),
        "suggests forward_to: {out}"
    );
    // This config receives no callbacks: said, not fatal.
    assert!(err.contains("callback.listen is not set"), "{err}");

    let (code, out, _) = app.run_cmd(&["callback", "show", "demo-app"]).await;
    assert_eq!(code, 0);
    assert!(out.contains(ours), "{out}");
    assert!(
        out.contains("the same as this app's [[apps]] auth_key"),
        "{out}"
    );
    assert!(!out.contains(KEY), "{out}");

    let (code, out, _) = app.run_cmd(&["callback", "set", "demo-app", ours]).await;
    assert_eq!(code, 0);
    assert!(out.contains("unchanged"), "{out}");
    assert!(!out.contains("forward_to ="), "{out}");
    // Six calls in the apps group, none in the job group's budget.
    assert_eq!(sim.stats().app_requests, 6);

    // Once the old receiver is in forward_to, replacing it is said to be safe.
    sim.register_callback("demo-app", THEIRS, Some(KEY));
    let mut forwarding = push_config(&sim, 1, false);
    forwarding
        .extra
        .push_str(&format!("forward_to = \"{THEIRS}\"\n"));
    app.rewrite_config(&forwarding);
    let (code, out, err) = app.run_cmd(&["callback", "set", "demo-app", ours]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!(
            "replaced {THEIRS}, which this app's forward_to keeps receiving"
        )),
        "{out}"
    );
    assert!(!out.contains("forward_to = "), "{out}");
}

#[tokio::test]
async fn callback_commands_refuse_with_a_clear_error_and_exit_code() {
    let sim = start_sim(SimOptions {
        scripted: false,
        ..signed_sim(1)
    })
    .await;
    let app = TestApp::new(&push_config(&sim, 1, false));
    let url = "http://127.0.0.1:9188/rtc/record-callback";

    // No [[apps]] entry for the app: a name on the command line the config does not know is
    // a usage error (64), as in every command.
    let (code, _, err) = app.run_cmd(&["callback", "set", "other-app", url]).await;
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains("no [[apps]] entry has app_id \"other-app\""),
        "{err}"
    );
    // A URL RTC would refuse: a usage error, nothing sent.
    let (code, _, err) = app
        .run_cmd(&["callback", "set", "demo-app", "ftp://x/cb"])
        .await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not an http:// or https:// URL"), "{err}");
    // An app RTC does not know.
    let (code, _, err) = app.run_cmd(&["callback", "show", "no-such-app"]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("RTC says the app does not exist"), "{err}");
    assert!(err.contains("RTC.00001003"), "{err}");
    assert_eq!(sim.stats().app_requests, 1, "only the show reached the API");

    // A key RTC would refuse (under 32 characters): a config error naming the key.
    let mut short = AppConfig::new(&sim, 1);
    short.extra = "\n[[apps]]\napp_id = \"demo-app\"\nauth_key = \"short-key\"\n".into();
    app.rewrite_config(&short);
    let (code, _, err) = app.run_cmd(&["callback", "set", "demo-app", url]).await;
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("apps[0] (\"demo-app\").auth_key"), "{err}");
    assert!(
        !err.contains("short-key"),
        "the key is never printed: {err}"
    );

    // Wrong credentials: the API refuses, and the error says what to check.
    let mut wrong = push_config(&sim, 1, false);
    wrong.secret_key = "not-the-secret".into();
    app.rewrite_config(&wrong);
    let (code, _, err) = app.run_cmd(&["callback", "show", "demo-app"]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("credentials refused"), "{err}");
    assert!(err.contains("check api.auth"), "{err}");
}

/// The daemon's receiver on port 0, registered at the simulator with `recwatch callback set`.
async fn registered_daemon(sim: &recwatch_sim::Simulator, jobs: usize) -> TestApp {
    let mut app = TestApp::new(&push_config(sim, jobs, true));
    app.start();
    let addr = app.callback_addr().await;
    let url = format!("http://{addr}/rtc/record-callback");
    let (code, out, err) = app.run_cmd(&["callback", "set", "demo-app", &url]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("no URL was registered before"), "{out}");
    app.wait_running(jobs as i64).await;
    app
}

#[tokio::test]
async fn the_simulators_callbacks_are_verified_and_stored_by_the_daemon() {
    let sim = start_sim(SimOptions {
        scripted: false,
        ..signed_sim(3)
    })
    .await;
    let mut app = registered_daemon(&sim, 3).await;
    sim.set_job("demo-app", "job-0001", stopped(StopReason::InternalError));
    let events = wait_for("both events of the stop stored", Duration::from_secs(60), || async {
        let db = app.db().await?;
        let rows = sqlx::query(
            "SELECT event_type, download_url, record_duration FROM callback_events WHERE job_id = 'job-0001' ORDER BY event_type",
        )
        .fetch_all(&db)
        .await
        .ok()?;
        db.close().await;
        (rows.len() == 2).then_some(rows)
    })
    .await;
    assert_eq!(events[0].get::<String, _>(0), "CLOUD_RECORD_SERVER_OVER");
    assert_eq!(events[1].get::<String, _>(0), "RECORD_FILE_COMPLETE");
    assert!(
        events[1].get::<Option<String>, _>(1).is_some(),
        "the file's URL"
    );
    assert!(events[1].get::<Option<i64>, _>(2).is_some(), "its duration");
    let stats = sim.stats().callbacks;
    assert_eq!((stats.sent, stats.failed, stats.dropped), (2, 0, 0));
    // And polling, the truth, agrees.
    wait_for("the stop polled", Duration::from_secs(60), || async {
        app.transitions()
            .await
            .iter()
            .any(|t| t.0 == "job-0001" && t.2 == "STOPPED")
            .then_some(())
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn with_every_callback_dropped_polling_still_detects_the_stop() {
    let sim = start_sim(SimOptions {
        scripted: false,
        callback_drop: 1.0,
        ..signed_sim(2)
    })
    .await;
    let mut app = registered_daemon(&sim, 2).await;
    sim.set_job(
        "demo-app",
        "job-0000",
        stopped(StopReason::ExceedMaxIdleTime),
    );
    wait_for("the stop polled", Duration::from_secs(60), || async {
        app.transitions()
            .await
            .iter()
            .any(|t| {
                t.0 == "job-0000"
                    && t.2 == "STOPPED"
                    && t.3.as_deref() == Some("EXCEED_MAX_IDLE_TIME")
            })
            .then_some(())
    })
    .await;
    // Both events were dropped by the simulator: none can still arrive.
    let stats = sim.stats().callbacks;
    assert_eq!((stats.dropped, stats.queued), (2, 0));
    assert_eq!(app.scalar("SELECT COUNT(*) FROM callback_events").await, 0);
    app.stop().await;
}

/// The demo's act 3: a job polled once an hour seen RUNNING and its death alerted, each after
/// the callback that announced it.
/// Read live until the last line of the act (a positive condition), then Ctrl-C.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_shows_a_job_started_and_killed_by_callbacks() {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(BIN)
        .args(["demo", "--step", "1s", "--interval", "500ms"])
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut text = String::new();
    let finished = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            text.push_str(&line);
            text.push('\n');
            if line.contains("pushed: the alert reached the webhook") {
                return true;
            }
        }
        false
    })
    .await;
    assert!(
        matches!(finished, Ok(true)),
        "act 3 did not finish:\n{text}"
    );
    let pid = child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("the demo stops on Ctrl-C")
        .unwrap();
    assert!(status.success(), "{text}");
    for needle in [
        "is registered as demo-app's record-callback URL",
        "act 3: push",
        "seen RUNNING",
        "s after RECORD_NEW_FILE_START was sent",
        "camera-push dies (INTERNAL_ERROR)",
        "RUNNING -> STOPPED  INTERNAL_ERROR",
        "s after CLOUD_RECORD_SERVER_OVER was sent",
    ] {
        assert!(text.contains(needle), "{needle:?} missing:\n{text}");
    }
    // Discovery: a job in no config, watched from its first callback and polled.
    let found: Vec<&str> = text.lines().filter(|l| l.contains("job-found")).collect();
    assert!(
        found
            .iter()
            .any(|l| l.contains("-> RUNNING") && !l.starts_with("--")),
        "the discovered job was polled: {found:?}\n{text}"
    );
    let push_lines: Vec<&str> = text.lines().filter(|l| l.contains("job-push")).collect();
    assert!(
        push_lines.iter().any(|l| l.contains("-> RUNNING")),
        "the callback's poll saw it start: {push_lines:?}"
    );
}
