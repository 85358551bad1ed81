//! Mix-stream jobs (issue 15): a `[[jobs]] kind = "mix"` entry is polled on
//! `.../mix-stream-jobs/{job_id}` (the simulator serves a mix job only there) with the same
//! states, rules and alerts as an individual job; run-time entries take a kind from the API
//! and the command line; discovery learns it from the stream name; an unknown kind is a
//! config error (78) naming the key.

use crate::harness::*;
use crate::support::receiver::Receiver;
use recwatch_rtc::model::{JobSnapshot, State, StopReason};
use recwatch_sim::Simulator;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;

const TOKEN: &str = "test-api-token-0123456789";

/// A mix job's record as the API shows it: its layout and rule, its `m_` stream name.
fn mix_job(job_id: &str, state: &str, reason: Option<&str>) -> JobSnapshot {
    serde_json::from_value(json!({
        "job_id": job_id, "app_id": "demo-app", "room_id": "room02",
        "stream_name": format!("m_{job_id}_room02"),
        "mix_param": {"room_id": "room02", "encode_template": "1920x1080_30_4620",
            "max_idle_time": 60, "layout_template": "nine_grids_view"},
        "record_param": {"record_rule_id": "rule-2"},
        "create_time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "state": state, "stop_reason": reason, "description": format!("{state} by the test")
    }))
    .unwrap()
}

fn mix_entry(job_id: &str, name: &str) -> String {
    format!(
        "\n[[jobs]]\napp_id = \"demo-app\"\njob_id = \"{job_id}\"\nname = \"{name}\"\nkind = \"mix\"\n"
    )
}

/// `status --json`'s row of `job`.
async fn status_row(app: &TestApp, job: &str) -> Option<Value> {
    let (code, out, err) = app.run_cmd(&["status", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let rows: Vec<Value> = serde_json::from_str(&out).unwrap();
    rows.into_iter().find(|r| r["job_id"] == job)
}

async fn kind_in_db(app: &TestApp, job: &str) -> Option<String> {
    let db = app.db().await?;
    let kind = sqlx::query_scalar("SELECT kind FROM jobs WHERE job_id = $1")
        .bind(job)
        .fetch_optional(&db)
        .await
        .ok()
        .flatten();
    db.close().await;
    kind
}

/// Waits until `job`'s row shows `state`, polled without an error.
async fn wait_state(app: &TestApp, job: &str, state: &str) {
    wait_for(&format!("{job} {state}"), T, || async {
        let (s, _, error, _) = app.job_row(job).await?;
        (s.as_deref() == Some(state) && error.is_none()).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mix_job_that_dies_with_internal_error_is_alerted_like_an_individual_one() {
    let sim = start_sim(static_sim(1)).await;
    sim.set_mix_job("demo-app", "mix-0001", mix_job("mix-0001", "RUNNING", None));
    let hook = Receiver::start(Some(SECRET)).await;
    let mut cfg = AppConfig::new(&sim, 1);
    cfg.extra = notify_toml(Some(hook.url().as_str()), None, "") + &mix_entry("mix-0001", "hall");
    let app = TestApp::spawn(&cfg, 2).await;
    assert_eq!(kind_in_db(&app, "mix-0001").await.as_deref(), Some("mix"));
    assert_eq!(
        kind_in_db(&app, "job-0000").await.as_deref(),
        Some("individual")
    );

    // Both die the same way; both are alerted the same way.
    sim.set_job(
        "demo-app",
        "mix-0001",
        mix_job("mix-0001", "STOPPED", Some("INTERNAL_ERROR")),
    );
    set_state(&sim, "job-0000", "STOPPED", Some("INTERNAL_ERROR"));
    hook.wait_for(2, T).await;
    assert_eq!(
        hook.summary(),
        vec![
            (
                "stopped_unexpectedly".into(),
                "critical".into(),
                "firing".into(),
                "job-0000".into()
            ),
            (
                "stopped_unexpectedly".into(),
                "critical".into(),
                "firing".into(),
                "mix-0001".into()
            ),
        ]
    );
    let mix_alert = hook
        .received()
        .into_iter()
        .find(|d| d.alert.job.as_ref().is_some_and(|j| j.job_id == "mix-0001"))
        .unwrap();
    let t = mix_alert.alert.transition.as_ref().unwrap();
    assert_eq!(
        (t.from.as_deref(), t.to.as_str()),
        (Some("RUNNING"), "STOPPED")
    );
    let transitions = app.transitions().await;
    assert!(
        transitions.contains(&(
            "mix-0001".into(),
            Some("RUNNING".into()),
            "STOPPED".into(),
            Some("INTERNAL_ERROR".into())
        )),
        "{transitions:?}"
    );
    // Polled on the mix path only: the individual path would have answered 404.
    let (_, reason, error, failures) = app.job_row("mix-0001").await.unwrap();
    assert_eq!(
        (reason.as_deref(), error, failures),
        (Some("INTERNAL_ERROR"), None, 0)
    );
    assert!(!sim.stats().by_status.contains_key(&404), "no poll missed");
    assert_eq!(status_row(&app, "mix-0001").await.unwrap()["kind"], "mix");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_kind_is_refused_with_78_naming_the_key() {
    let sim = start_sim(static_sim(1)).await;
    let mut cfg = AppConfig::new(&sim, 1);
    cfg.extra = "\n[[jobs]]\napp_id = \"demo-app\"\njob_id = \"mix-0001\"\nname = \"hall\"\nkind = \"mixed\"\n".into();
    let app = TestApp::new(&cfg);
    for cmd in ["check", "run"] {
        let (code, _, err) = app.run_cmd(&[cmd]).await;
        assert_eq!(code, 78, "{cmd}: {err}");
        assert!(err.contains("jobs[0] (\"hall\").kind"), "{cmd}: {err}");
        assert!(
            err.contains("use \"individual\" or \"mix\""),
            "{cmd}: {err}"
        );
    }
    assert_eq!(sim.stats().requests, 0, "nothing was polled");
}

/// A daemon with the HTTP endpoint (write token set) and a callback receiver for demo-app,
/// which discovers jobs.
async fn daemon(sim: &Simulator) -> (TestApp, SocketAddr, SocketAddr) {
    let mut cfg = AppConfig::new(sim, 1);
    cfg.listen = "127.0.0.1:0".into();
    cfg.extra = format!(
        "token = \"{TOKEN}\"\n\n[callback]\nlisten = \"127.0.0.1:0\"\n\n\
         [[apps]]\napp_id = \"demo-app\"\nauth_key = \"key-demo-0123456789abcdef01234567\"\nname = \"studio\"\ndiscover = true\n"
    );
    let mut app = TestApp::new(&cfg);
    app.start();
    let http = app.http_addr().await;
    let cb = app.callback_addr().await;
    (app, http, cb)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discovered_m_job_is_polled_on_the_mix_path() {
    let sim = start_sim(static_sim(1)).await;
    let (app, _http, cb) = daemon(&sim).await;
    // The simulator pushes every change of demo-app's jobs to the daemon, as RTC would.
    sim.register_callback(
        "demo-app",
        &format!("http://{cb}/rtc/record-callback"),
        Some("key-demo-0123456789abcdef01234567"),
    );
    // A mix job starts recording: RECORD_NEW_FILE_START with stream m_mix-0007_room02.
    sim.set_mix_job("demo-app", "mix-0007", mix_job("mix-0007", "RUNNING", None));
    wait_state(&app, "mix-0007", "RUNNING").await;
    let row = status_row(&app, "mix-0007").await.unwrap();
    assert_eq!(
        (row["source"].as_str(), row["kind"].as_str()),
        (Some("callback"), Some("mix"))
    );
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM watchlist WHERE kind = 'mix'")
            .await,
        1
    );
    // It dies, and the death is seen on the mix path.
    sim.set_job(
        "demo-app",
        "mix-0007",
        mix_job("mix-0007", "STOPPED", Some("INTERNAL_ERROR")),
    );
    wait_state(&app, "mix-0007", "STOPPED").await;
    let (_, reason, _, failures) = app.job_row("mix-0007").await.unwrap();
    assert_eq!((reason.as_deref(), failures), (Some("INTERNAL_ERROR"), 0));
    assert!(!sim.stats().by_status.contains_key(&404), "no poll missed");
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn post(addr: SocketAddr, body: Value) -> (u16, String) {
    let r = client()
        .post(format!("http://{addr}/api/v1/jobs"))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_jobs_take_their_kind_from_the_api_and_the_command_line() {
    let sim = start_sim(static_sim(1)).await;
    sim.set_mix_job("demo-app", "mix-0002", mix_job("mix-0002", "RUNNING", None));
    sim.set_mix_job("demo-app", "mix-0003", mix_job("mix-0003", "RUNNING", None));
    let (app, http, _) = daemon(&sim).await;

    let (code, text) = post(
        http,
        json!({"app_id": "demo-app", "job_id": "mix-0002", "kind": "mixed"}),
    )
    .await;
    assert_eq!(code, 400, "{text}");
    assert!(
        text.contains("nothing was added: kind \"mixed\" is not a job kind"),
        "{text}"
    );
    assert_eq!(app.scalar("SELECT COUNT(*) FROM watchlist").await, 0);

    let (code, text) = post(
        http,
        json!({"app_id": "demo-app", "job_id": "mix-0002", "kind": "mix"}),
    )
    .await;
    assert_eq!(code, 201, "{text}");
    let added: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(added["kind"], "mix");
    wait_state(&app, "mix-0002", "RUNNING").await;

    let (code, out, err) = app
        .run_cmd(&["watch", "demo-app", "mix-0003", "--kind", "mix"])
        .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("a mix-stream job"), "{out}");
    wait_state(&app, "mix-0003", "RUNNING").await;
    assert_eq!(status_row(&app, "mix-0003").await.unwrap()["kind"], "mix");

    let (code, _, err) = app
        .run_cmd(&["watch", "demo-app", "mix-0004", "--kind", "Mix"])
        .await;
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("--kind \"Mix\" is not a job kind"), "{err}");
    assert!(!sim.stats().by_status.contains_key(&404), "no poll missed");
    // And a mix job's snapshot keeps what a re-creation needs.
    let snapshot: String = {
        let db = app.db().await.unwrap();
        let s = sqlx::query_scalar("SELECT snapshot FROM jobs WHERE job_id = 'mix-0002'")
            .fetch_one(&db)
            .await
            .unwrap();
        db.close().await;
        s
    };
    let stored = recwatch_rtc::model::parse_job(snapshot.as_bytes()).unwrap();
    assert_eq!(
        stored.mix_param,
        mix_job("mix-0002", "RUNNING", None).mix_param
    );
    assert_eq!(stored.state, Some(State::Running));
    assert_eq!(stored.stop_reason, None::<StopReason>);
}
