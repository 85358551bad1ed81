//! Silences and maintenance windows (issue 12): notifications held back at send time and
//! recorded as silenced, matched by job, app and rule; a silence added while the daemon runs;
//! what a silence held back and is still true sent exactly once when it ends, what cleared
//! meanwhile never.

use crate::harness::*;
use crate::support::receiver::Receiver;
use sqlx::Row;

/// One delivery of one alert, as the database holds it.
#[derive(Debug, Clone)]
pub struct Held {
    pub alert_id: String,
    pub rule: String,
    pub status: String,
    pub state: String,
    pub held_by: Option<String>,
    pub last_error: Option<String>,
    pub silenced_by: Option<String>,
}

/// Every delivery of `job`'s alerts, oldest alert first.
pub async fn deliveries_of(app: &TestApp, job: &str) -> Vec<Held> {
    let Some(db) = app.db().await else {
        return Vec::new();
    };
    let rows = sqlx::query(
        "SELECT a.id, a.rule, a.status, d.state, d.held_by, d.last_error, a.silenced_by
         FROM alerts a JOIN deliveries d ON d.alert_id = a.id
         WHERE a.job_id = ? ORDER BY a.rowid",
    )
    .bind(job)
    .fetch_all(&db)
    .await
    .unwrap_or_default();
    db.close().await;
    rows.into_iter()
        .map(|r| Held {
            alert_id: r.get(0),
            rule: r.get(1),
            status: r.get(2),
            state: r.get(3),
            held_by: r.get(4),
            last_error: r.get(5),
            silenced_by: r.get(6),
        })
        .collect()
}

/// Waits until `job` has at least `n` deliveries and every one is silenced; returns them.
pub async fn wait_silenced(app: &TestApp, job: &str, n: usize) -> Vec<Held> {
    wait_for(&format!("{n} silenced deliveries of {job}"), T, || async {
        let d = deliveries_of(app, job).await;
        (d.len() >= n && d.iter().all(|h| h.state == "silenced")).then_some(d)
    })
    .await
}

/// Runs `recwatch silence add ARGS`; returns the new silence's id.
pub async fn add_silence(app: &TestApp, args: &[&str]) -> String {
    let mut all = vec!["silence", "add"];
    all.extend_from_slice(args);
    let (code, out, err) = app.run_cmd(&all).await;
    assert_eq!(code, 0, "silence add {args:?}: {err}");
    let id = out.trim().to_string();
    assert!(id.starts_with("sil_"), "{out}");
    id
}

/// The jobs of the accepted webhook deliveries, in arrival order.
pub fn received_jobs(hook: &Receiver) -> Vec<String> {
    hook.received()
        .iter()
        .map(|d| {
            d.alert
                .job
                .as_ref()
                .map(|j| j.job_id.clone())
                .unwrap_or_default()
        })
        .collect()
}

fn setup(sim: &recwatch_sim::Simulator, jobs: usize, hook: &Receiver, rules: &str) -> TestApp {
    let mut cfg = AppConfig::new(sim, jobs);
    cfg.extra = notify_toml(Some(hook.url().as_str()), None, rules);
    TestApp::new(&cfg)
}

fn stop(sim: &recwatch_sim::Simulator, job: &str, reason: &str) {
    set_state(sim, job, "STOPPED", Some(reason));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silence_by_job_holds_that_job_only_and_alerts_json_shows_it() {
    let sim = start_sim(static_sim(2)).await;
    let hook = Receiver::start(Some(SECRET)).await;
    let mut app = setup(&sim, 2, &hook, "");
    // Added before the daemon ever ran: the CLI makes the database.
    let id = add_silence(
        &app,
        &[
            "--job",
            "job-0000",
            "--for",
            "1h",
            "--comment",
            "re-cabling cam-0",
        ],
    )
    .await;
    app.start();
    app.wait_running(2).await;
    stop(&sim, "job-0000", "INTERNAL_ERROR");
    stop(&sim, "job-0001", "INTERNAL_ERROR");
    // The unmatched job alerts; the silenced one is recorded, held by the silence.
    hook.wait_for(1, T).await;
    let held = wait_silenced(&app, "job-0000", 1).await;
    assert_eq!(held[0].held_by.as_deref(), Some(id.as_str()));
    assert_eq!(held[0].silenced_by.as_deref(), Some(id.as_str()));
    assert_eq!(received_jobs(&hook), ["job-0001"]);
    // The receiver has it; the lane marks it sent just after.
    wait_for("job-0001's delivery marked sent", T, || async {
        let d = deliveries_of(&app, "job-0001").await;
        (d.len() == 1 && d[0].state == "sent").then_some(())
    })
    .await;

    let (code, out, _) = app.run_cmd(&["alerts", "--json"]).await;
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let alerts = v.as_array().unwrap();
    assert_eq!(alerts.len(), 2);
    for a in alerts {
        let mut keys: Vec<&str> = a.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "app_id",
                "created_at",
                "deliveries",
                "id",
                "job_id",
                "rule",
                "severity",
                "silenced_by",
                "status",
                "summary"
            ]
        );
        let d = &a["deliveries"][0];
        let mut dkeys: Vec<&str> = d.as_object().unwrap().keys().map(String::as_str).collect();
        dkeys.sort();
        assert_eq!(
            dkeys,
            [
                "attempts",
                "channel",
                "last_error",
                "next_attempt_at",
                "sent_at",
                "state"
            ]
        );
        let job = a["job_id"].as_str().unwrap();
        if job == "job-0000" {
            assert_eq!(a["silenced_by"], id.as_str(), "{a}");
            assert_eq!(d["state"], "silenced", "{a}");
            assert_eq!(d["sent_at"], serde_json::Value::Null, "{a}");
        } else {
            assert_eq!(a["silenced_by"], serde_json::Value::Null, "{a}");
            assert_eq!(d["state"], "sent", "{a}");
        }
    }
    // The table says it too.
    let (_, table, _) = app.run_cmd(&["alerts"]).await;
    assert!(table.contains("hook:silenced"), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silence_by_app_holds_every_job_of_that_app_and_no_other() {
    let sim = start_sim(static_sim(1)).await;
    let other = |state: &str, reason: Option<&str>| {
        let mut s = snap("rec-9", state, reason);
        s.app_id = Some("other-app".into());
        s
    };
    sim.set_job("other-app", "rec-9", other("RUNNING", None));
    let hook = Receiver::start(Some(SECRET)).await;
    let mut cfg = AppConfig::new(&sim, 1);
    cfg.extra = notify_toml(Some(hook.url().as_str()), None, "");
    cfg.extra
        .push_str("\n[[jobs]]\napp_id = \"other-app\"\njob_id = \"rec-9\"\nname = \"other\"\n");
    let mut app = TestApp::new(&cfg);
    let id = add_silence(
        &app,
        &[
            "--app",
            "demo-app",
            "--for",
            "1h",
            "--comment",
            "region drill",
        ],
    )
    .await;
    app.start();
    app.wait_running(2).await;
    stop(&sim, "job-0000", "INTERNAL_ERROR");
    sim.set_job(
        "other-app",
        "rec-9",
        other("STOPPED", Some("INTERNAL_ERROR")),
    );
    hook.wait_for(1, T).await;
    let held = wait_silenced(&app, "job-0000", 1).await;
    assert_eq!(held[0].silenced_by.as_deref(), Some(id.as_str()));
    assert_eq!(received_jobs(&hook), ["rec-9"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silence_by_rule_holds_that_rule_only() {
    let sim = start_sim(static_sim(2)).await;
    let hook = Receiver::start(Some(SECRET)).await;
    let mut app = setup(&sim, 2, &hook, "");
    let id = add_silence(
        &app,
        &[
            "--rule",
            "idle_timeout",
            "--for",
            "1h",
            "--comment",
            "idle stops are expected tonight",
        ],
    )
    .await;
    app.start();
    app.wait_running(2).await;
    stop(&sim, "job-0000", "EXCEED_MAX_IDLE_TIME");
    stop(&sim, "job-0001", "INTERNAL_ERROR");
    hook.wait_for(1, T).await;
    let held = wait_silenced(&app, "job-0000", 1).await;
    assert_eq!(held[0].rule, "idle_timeout");
    assert_eq!(held[0].silenced_by.as_deref(), Some(id.as_str()));
    let got = hook.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].alert.rule.as_str(), "stopped_unexpectedly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silence_added_while_the_daemon_runs_holds_the_next_notification() {
    let sim = start_sim(static_sim(2)).await;
    let hook = Receiver::start(Some(SECRET)).await;
    let mut cfg = AppConfig::new(&sim, 2);
    cfg.extra = notify_toml(Some(hook.url().as_str()), None, "");
    cfg.listen = "127.0.0.1:0".into();
    let app = TestApp::spawn(&cfg, 2).await;
    let id = add_silence(
        &app,
        &[
            "--job",
            "job-0000",
            "--for",
            "1h",
            "--comment",
            "swapping the camera",
        ],
    )
    .await;
    stop(&sim, "job-0000", "INTERNAL_ERROR");
    stop(&sim, "job-0001", "INTERNAL_ERROR");
    hook.wait_for(1, T).await;
    let held = wait_silenced(&app, "job-0000", 1).await;
    assert_eq!(held[0].silenced_by.as_deref(), Some(id.as_str()));
    assert_eq!(received_jobs(&hook), ["job-0001"]);
    // GET /api/v1/silences shows it, as the CLI does.
    let addr = app.http_addr().await;
    let api: serde_json::Value = reqwest::get(format!("http://{addr}/api/v1/silences"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(api[0]["id"], id.as_str(), "{api}");
    assert_eq!(api[0]["status"], "active", "{api}");
    // `silence list` shows it active, as JSON an array of silences.
    let (code, out, _) = app.run_cmd(&["silence", "list", "--json"]).await;
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["id"], id.as_str());
    assert_eq!(v[0]["job_id"], "job-0000");
    assert_eq!(v[0]["status"], "active");
    assert_eq!(v.as_array().unwrap().len(), 1);
}

/// A stopped job held by a silence, and a condition (job_not_found) whose firing notice and
/// reminders were held: when the silence ends, one notice each, at once, with the held
/// alert's own id; the reminders held with it are not sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silence_that_ends_while_its_job_is_still_dead_sends_exactly_one_notice_at_once() {
    let sim = start_sim(static_sim(3)).await;
    let hook = Receiver::start(Some(SECRET)).await;
    // Reminders every second while held, so several pile up behind the silence.
    let mut app = setup(&sim, 3, &hook, "repeat_interval = \"1s\"\n");
    let dead = add_silence(
        &app,
        &["--job", "job-0000", "--for", "1h", "--comment", "c"],
    )
    .await;
    let gone = add_silence(
        &app,
        &["--job", "job-0002", "--for", "1h", "--comment", "c"],
    )
    .await;
    app.start();
    app.wait_running(3).await;
    stop(&sim, "job-0000", "INTERNAL_ERROR");
    sim.remove_job("demo-app", "job-0002");
    let held_stop = wait_silenced(&app, "job-0000", 1).await;
    let held_gone = wait_silenced(&app, "job-0002", 3).await;
    assert!(held_gone.iter().all(|h| h.rule == "job_not_found"));
    assert_eq!(held_gone[0].status, "firing");

    // The transition's silence ends while the daemon runs: one notice, at once (a stopped
    // job has no reminder that could have brought it).
    let (code, out, err) = app.run_cmd(&["silence", "expire", &dead]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("expired"), "{out}");
    let got = hook.wait_for(1, T).await;
    assert_eq!(
        got[0].alert.id.as_str(),
        held_stop[0].alert_id,
        "the held alert's own id"
    );
    assert_eq!(
        got[0].headers["webhook-id"].to_str().unwrap(),
        held_stop[0].alert_id
    );

    // The condition's silence ends while the daemon is down, with reminders now an hour
    // apart: at the start, one notice (the first held, the firing one), not one per held
    // reminder and not at the next reminder.
    assert!(app.stop().await.success());
    let held_gone = deliveries_of(&app, "job-0002").await;
    assert!(held_gone.len() >= 3, "{held_gone:?}");
    let text = std::fs::read_to_string(&app.config_path)
        .unwrap()
        .replace("repeat_interval = \"1s\"", "repeat_interval = \"1h\"");
    std::fs::write(&app.config_path, text).unwrap();
    let (code, _, err) = app.run_cmd(&["silence", "expire", &gone]).await;
    assert_eq!(code, 0, "{err}");
    app.start();
    let got = hook.wait_for(2, T).await;
    assert_eq!(got[1].alert.id.as_str(), held_gone[0].alert_id);
    assert_eq!(got[1].alert.status.as_str(), "firing");

    // Exactly one each: a later alert arrives after them, and nothing else came between.
    stop(&sim, "job-0001", "INTERNAL_ERROR");
    let got = hook.wait_for(3, T).await;
    assert_eq!(received_jobs(&hook), ["job-0000", "job-0002", "job-0001"]);
    assert_eq!(got.len(), 3);
    let settled = deliveries_of(&app, "job-0002").await;
    assert_eq!(settled[0].state, "sent");
    for h in &settled[1..] {
        assert_eq!(h.state, "silenced", "{h:?}");
        assert_eq!(h.held_by, None, "{h:?}");
        let why = h.last_error.as_deref().unwrap_or_default();
        assert!(why.contains("an earlier held notice"), "{why}");
    }
}

/// What a silence held back and cleared before it ended is never sent: a stop followed by a
/// restart (with `stop_after_terminal = false`, so the stopped job is still polled), and a
/// condition (job_not_found) that began and cleared, firing and resolved notice both held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_alert_that_cleared_meanwhile_is_never_sent() {
    let sim = start_sim(static_sim(3)).await;
    let hook = Receiver::start(Some(SECRET)).await;
    let mut app = setup(&sim, 3, &hook, "");
    let text = std::fs::read_to_string(&app.config_path)
        .unwrap()
        .replace("[poll]\n", "[poll]\nstop_after_terminal = false\n");
    std::fs::write(&app.config_path, text).unwrap();
    let restarted = add_silence(
        &app,
        &["--job", "job-0000", "--for", "1h", "--comment", "c"],
    )
    .await;
    let found = add_silence(
        &app,
        &["--job", "job-0002", "--for", "1h", "--comment", "c"],
    )
    .await;
    app.start();
    app.wait_running(3).await;
    stop(&sim, "job-0000", "INTERNAL_ERROR");
    sim.remove_job("demo-app", "job-0002");
    wait_silenced(&app, "job-0000", 1).await;
    wait_silenced(&app, "job-0002", 1).await;
    // Both clear while held: job-0000 records again, job-0002 is found again (its resolved
    // notice is held too).
    set_state(&sim, "job-0000", "RUNNING", None);
    set_state(&sim, "job-0002", "RUNNING", None);
    wait_for("job-0000 RUNNING again", T, || async {
        (app.job_row("job-0000").await?.0.as_deref() == Some("RUNNING")).then_some(())
    })
    .await;
    wait_silenced(&app, "job-0002", 2).await;
    for id in [&restarted, &found] {
        let (code, _, err) = app.run_cmd(&["silence", "expire", id]).await;
        assert_eq!(code, 0, "{err}");
    }
    // The release decided: silenced for good, each with its reason.
    for (job, n, why) in [
        ("job-0000", 1, "the job changed while it was held"),
        ("job-0002", 2, "cleared while it was held"),
    ] {
        let settled = wait_for(&format!("{job}'s held deliveries settled"), T, || async {
            let d = deliveries_of(&app, job).await;
            (d.len() == n && d.iter().all(|h| h.held_by.is_none())).then_some(d)
        })
        .await;
        for h in &settled {
            assert_eq!(h.state, "silenced", "{h:?}");
            let e = h.last_error.as_deref().unwrap_or_default();
            assert!(e.contains(why) && e.starts_with("not sent:"), "{job}: {e}");
        }
    }
    // A later alert gets through, and the cleared ones never did.
    stop(&sim, "job-0001", "INTERNAL_ERROR");
    hook.wait_for(1, T).await;
    assert_eq!(received_jobs(&hook), ["job-0001"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maintenance_window_holds_notifications_while_polling_goes_on() {
    let sim = start_sim(static_sim(2)).await;
    let hook = Receiver::start(Some(SECRET)).await;
    let mut cfg = AppConfig::new(&sim, 2);
    cfg.extra = notify_toml(Some(hook.url().as_str()), None, "");
    // Every second starts a 1-hour window: active whenever asked, for job-0000 only.
    cfg.extra.push_str(
        "\n[[maintenance]]\nname = \"cam-0 rewiring\"\nschedule = \"* * * * * *\"\nduration = \"1h\"\ntimezone = \"Asia/Shanghai\"\njobs = [\"job-0000\"]\n",
    );
    let app = TestApp::spawn(&cfg, 2).await;
    stop(&sim, "job-0000", "INTERNAL_ERROR");
    stop(&sim, "job-0001", "INTERNAL_ERROR");
    hook.wait_for(1, T).await;
    let held = wait_silenced(&app, "job-0000", 1).await;
    assert_eq!(held[0].silenced_by.as_deref(), Some("cam-0 rewiring"));
    assert_eq!(received_jobs(&hook), ["job-0001"]);
    // Recording went on: the stop is in the history.
    assert!(
        app.transitions()
            .await
            .iter()
            .any(|t| t.0 == "job-0000" && t.2 == "STOPPED")
    );
    app.wait_log("maintenance window \"cam-0 rewiring\" began", T)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_commands_refuse_bad_input_with_the_fix() {
    let sim = start_sim(static_sim(1)).await;
    let hook = Receiver::start(Some(SECRET)).await;
    let app = setup(&sim, 1, &hook, "");
    let cases: &[(&str, &[&str], &str)] = &[
        (
            "no matcher",
            &["--for", "1h", "--comment", "c"],
            "--app <APP_ID>|--job <JOB_ID>|--rule <RULE>",
        ),
        ("no comment", &["--job", "j", "--for", "1h"], "--comment"),
        (
            "a blank comment",
            &["--job", "j", "--for", "1h", "--comment", " "],
            "comment: empty; say why",
        ),
        (
            "a bad duration",
            &["--job", "j", "--for", "2x", "--comment", "c"],
            "write e.g. \"30s\"",
        ),
        (
            "a bad time",
            &["--job", "j", "--until", "tomorrow", "--comment", "c"],
            "is not an RFC 3339 time",
        ),
        (
            "a time in the past",
            &[
                "--job",
                "j",
                "--until",
                "2020-01-01T00:00:00Z",
                "--comment",
                "c",
            ],
            "is not after the silence's start",
        ),
        (
            "an unknown rule",
            &["--rule", "stopped", "--for", "1h", "--comment", "c"],
            "use one of stopped_unexpectedly",
        ),
        (
            "no end",
            &["--job", "j", "--comment", "c"],
            "--for <DURATION>|--until <RFC3339>",
        ),
    ];
    for (name, args, want) in cases {
        let mut all = vec!["silence", "add"];
        all.extend_from_slice(args);
        let (code, out, err) = app.run_cmd(&all).await;
        assert_eq!(code, 2, "{name}: {err}");
        assert!(err.contains(want), "{name}: {err}");
        assert!(out.is_empty(), "{name}: {out}");
    }
    // Nothing was written by any of them.
    add_silence(&app, &["--job", "j", "--for", "1h", "--comment", "c"]).await;
    assert_eq!(app.scalar("SELECT COUNT(*) FROM silences").await, 1);
    let (code, _, err) = app.run_cmd(&["silence", "expire", "sil_nope"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("no silence \"sil_nope\""), "{err}");
}

/// `POST /api/v1/silences` and `DELETE /api/v1/silences/{id}`: behind the write token (401
/// without it, nothing added), a silence added over HTTP holds the next notification of the
/// running daemon, bad input is refused naming the fix, and expiring it over HTTP sends what
/// it held and is still true, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silences_over_the_api_need_the_token_hold_and_release() {
    const TOKEN: &str = "silence-api-token-0123456789";
    let sim = start_sim(static_sim(2)).await;
    let hook = Receiver::start(Some(SECRET)).await;
    let mut cfg = AppConfig::new(&sim, 2);
    cfg.listen = "127.0.0.1:0".into();
    cfg.extra = format!(
        "token = \"{TOKEN}\"\n{}",
        notify_toml(Some(hook.url().as_str()), None, "")
    );
    let app = TestApp::spawn(&cfg, 2).await;
    let addr = app.http_addr().await;
    let http = reqwest::Client::new();
    let post = |token: Option<&'static str>, body: serde_json::Value| {
        let mut req = http
            .post(format!("http://{addr}/api/v1/silences"))
            .json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let body = serde_json::json!({"job_id": "job-0000", "for": "1h", "comment": "camera swap", "author": "ops"});
    for token in [None, Some("wrong")] {
        let (code, text) = post(token, body.clone()).await;
        assert_eq!(code, 401, "{token:?}: {text}");
    }
    let (code, text) = post(
        Some(TOKEN),
        serde_json::json!({"for": "1h", "comment": "c"}),
    )
    .await;
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("no matcher"), "{text}");
    let (code, text) = post(
        Some(TOKEN),
        serde_json::json!({"job_id": "job-0000", "for": "1h"}),
    )
    .await;
    assert_eq!(code, 400, "{text}");
    let (code, out, _) = app.run_cmd(&["silence", "list", "--json"]).await;
    assert_eq!(code, 0);
    assert_eq!(out.trim(), "[]", "nothing was added by refused requests");

    let (code, text) = post(Some(TOKEN), body).await;
    assert_eq!(code, 201, "{text}");
    let created: serde_json::Value = serde_json::from_str(&text).unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["status"], "active", "{created}");
    assert_eq!(created["job_id"], "job-0000", "{created}");
    // The job's page and its JSON list the silence; another job's do not.
    let record: serde_json::Value = http
        .get(format!("http://{addr}/api/v1/jobs/demo-app/job-0000"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(record["silences"][0]["id"], id.as_str(), "{record}");
    let other: serde_json::Value = http
        .get(format!("http://{addr}/api/v1/jobs/demo-app/job-0001"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(other["silences"], serde_json::json!([]), "{other}");
    let page = http
        .get(format!("http://{addr}/jobs/demo-app/job-0000"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains(&id) && page.contains("camera swap"), "{page}");

    stop(&sim, "job-0000", "INTERNAL_ERROR");
    stop(&sim, "job-0001", "INTERNAL_ERROR");
    hook.wait_for(1, T).await;
    let held = wait_silenced(&app, "job-0000", 1).await;
    assert_eq!(held[0].silenced_by.as_deref(), Some(id.as_str()));

    let delete = |token: Option<&'static str>, id: String| {
        let mut req = http.delete(format!("http://{addr}/api/v1/silences/{id}"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(delete(None, id.clone()).await, 401);
    assert_eq!(delete(Some(TOKEN), "sil_nope".into()).await, 404);
    assert_eq!(delete(Some(TOKEN), id.clone()).await, 200);
    // Released once, at once: the held alert arrives, then a later alert proves nothing
    // else came between.
    let got = hook.wait_for(2, T).await;
    assert_eq!(got[1].alert.id.as_str(), held[0].alert_id);
    assert_eq!(received_jobs(&hook), ["job-0001", "job-0000"]);
    assert!(
        !app.log_text().contains(TOKEN),
        "the token never reaches the log"
    );
}
