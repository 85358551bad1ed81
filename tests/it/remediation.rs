//! Remediation (issue 15) against the simulator: a recording that dies with a listed stop
//! reason is re-created with identical parameters and watched; the bound, the opt-outs, dry
//! runs, a refused create and a crash between intent and answer each hold.

use crate::harness::*;
use recwatch_rtc::model::{JobSnapshot, RecordParam, State, StopReason};
use recwatch_sim::{CreateFault, CreateFaultKind, Simulator};
use sqlx::Row;
use std::time::Duration;

/// A job as the API shows it, with every field a create takes.
pub(crate) fn full(job_id: &str, state: &str, reason: Option<&str>) -> JobSnapshot {
    JobSnapshot {
        job_id: Some(job_id.into()),
        app_id: Some("demo-app".into()),
        room_id: Some(format!("room-of-{job_id}")),
        user_id: Some(format!("user-of-{job_id}")),
        stream_name: Some(format!("s_{job_id}_room_user")),
        is_record_audio: Some(false),
        video_type: Some("SCREENSTREAM".into()),
        select_stream_type: Some("SD".into()),
        max_idle_time: Some(120),
        record_param: Some(RecordParam {
            record_rule_id: Some(format!("rule-of-{job_id}")),
            ..RecordParam::default()
        }),
        state: Some(State::parse(state)),
        stop_reason: reason.map(StopReason::parse),
        description: Some(format!("{state} by the test")),
        ..Default::default()
    }
}

pub(crate) fn sim_opts(jobs: usize) -> recwatch_sim::SimOptions {
    recwatch_sim::SimOptions {
        scripted: false,
        step: Duration::from_millis(300),
        ..signed_sim(jobs)
    }
}

/// A daemon watching `jobs` simulated jobs (all RUNNING with full parameters), with
/// `[remediate]` given as `remediate` (TOML lines) and `job_extra` appended to job 0's entry.
async fn start(jobs: usize, remediate: &str) -> (Simulator, AppConfig, TestApp) {
    let sim = start_sim(sim_opts(jobs)).await;
    for i in 0..jobs {
        let j = recwatch_sim::job_id(i);
        sim.set_job("demo-app", &j, full(&j, "RUNNING", None));
    }
    let mut cfg = AppConfig::new(&sim, jobs);
    cfg.extra = format!("\n[remediate]\n{remediate}\n");
    let app = TestApp::new(&cfg);
    (sim, cfg, app)
}

/// (old_job_id, state, new_job_id, reason, error, attempts) of every remediation, oldest first.
type RemRow = (
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    i64,
);

async fn remediations(app: &TestApp) -> Vec<RemRow> {
    let Some(db) = app.db().await else {
        return Vec::new();
    };
    let rows = sqlx::query(
        "SELECT old_job_id, state, new_job_id, reason, error, attempts FROM remediations ORDER BY id",
    )
    .fetch_all(&db)
    .await
    .unwrap_or_default();
    db.close().await;
    rows.into_iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
        .collect()
}

/// (rule, summary, payload) of every alert, oldest first.
async fn alerts(app: &TestApp) -> Vec<(String, String, serde_json::Value)> {
    let Some(db) = app.db().await else {
        return Vec::new();
    };
    let rows = sqlx::query("SELECT rule, summary, payload FROM alerts ORDER BY rowid")
        .fetch_all(&db)
        .await
        .unwrap_or_default();
    db.close().await;
    rows.into_iter()
        .map(|r| {
            let payload: String = r.get(2);
            (r.get(0), r.get(1), serde_json::from_str(&payload).unwrap())
        })
        .collect()
}

async fn wait_remediation(
    app: &TestApp,
    what: &str,
    check: impl Fn(&[RemRow]) -> bool,
) -> Vec<RemRow> {
    wait_for(what, T, || async {
        let rows = remediations(app).await;
        check(&rows).then_some(rows)
    })
    .await
}

async fn wait_alert(app: &TestApp, rule: &str) -> (String, serde_json::Value) {
    wait_for(&format!("a {rule} alert"), T, || async {
        alerts(app)
            .await
            .into_iter()
            .find(|a| a.0 == rule)
            .map(|a| (a.1, a.2))
    })
    .await
}

async fn wait_state(app: &TestApp, job: &str, state: &str) {
    wait_for(&format!("{job} {state} in the database"), T, || async {
        let row = app.job_row(job).await;
        (row.and_then(|r| r.0).as_deref() == Some(state)).then_some(())
    })
    .await
}

pub(crate) fn kill(sim: &Simulator, job: &str, reason: &str) {
    let mut dead = full(job, "STOPPED", Some(reason));
    // A re-created job's Show answer has its own id but the parameters it was created with.
    if job.starts_with("created-") {
        let made = sim
            .created()
            .into_iter()
            .find(|c| c.job_id == job)
            .expect("the job was created");
        let r = &made.request;
        dead.room_id = r["room_id"].as_str().map(String::from);
        dead.user_id = r["user_id"].as_str().map(String::from);
        dead.is_record_audio = r["is_record_audio"].as_bool();
        dead.video_type = r["video_type"].as_str().map(String::from);
        dead.select_stream_type = r["select_stream_type"].as_str().map(String::from);
        dead.max_idle_time = r["max_idle_time"].as_u64();
        dead.record_param = Some(RecordParam {
            record_rule_id: r["record_param"]["record_rule_id"]
                .as_str()
                .map(String::from),
            ..RecordParam::default()
        });
    }
    sim.set_job("demo-app", job, dead);
}

#[tokio::test]
async fn a_dead_recording_is_recreated_with_identical_parameters_watched_and_told() {
    let (sim, mut cfg, mut app) = start(1, "enabled = true").await;
    cfg.listen = "127.0.0.1:0".into();
    app.rewrite_config(&cfg);
    app.start();
    wait_state(&app, "job-0000", "RUNNING").await;
    kill(&sim, "job-0000", "INTERNAL_ERROR");

    let rows = wait_remediation(&app, "job-0000 re-created", |r| {
        r.first().is_some_and(|r| r.1 == "recreated")
    })
    .await;
    let new_job = rows[0].2.clone().expect("the new job's id");
    let created = sim.created();
    assert_eq!(created.len(), 1, "{created:?}");
    assert_eq!(created[0].job_id, new_job);
    assert_eq!(
        created[0].request,
        serde_json::json!({
            "room_id": "room-of-job-0000",
            "user_id": "user-of-job-0000",
            "is_record_audio": false,
            "video_type": "SCREENSTREAM",
            "select_stream_type": "SD",
            "max_idle_time": 120,
            "record_param": {"record_rule_id": "rule-of-job-0000"}
        }),
        "the create carries the dead job's parameters as polling saw them"
    );

    // Watched at once, as a remediation, and polled to RUNNING.
    wait_state(&app, &new_job, "RUNNING").await;
    let (code, out, err) = app.run_cmd(&["status", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&new_job) && out.contains("\"remediation\""),
        "{out}"
    );

    // The death's alert waited for the outcome and says it (on a machine so loaded that the
    // create took longer than the 5 s wait, a follow-up notice says it instead).
    let (summary, payload) = wait_alert(&app, "stopped_unexpectedly").await;
    let (summary, payload) = if payload["remediation"]["action"] == "pending" {
        wait_alert(&app, "remediated").await
    } else {
        (summary, payload)
    };
    assert_eq!(payload["remediation"]["action"], "recreated", "{payload}");
    assert_eq!(payload["remediation"]["new_job_id"], new_job.as_str());
    assert!(
        summary.contains(&format!("re-created as {new_job}")),
        "{summary}"
    );

    // Listed, and linked in the history.
    let (code, out, err) = app.run_cmd(&["remediations", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed[0]["old_job_id"], "job-0000");
    assert_eq!(listed[0]["new_job_id"], new_job.as_str());
    assert_eq!(listed[0]["state"], "recreated");
    let (code, out, _) = app.run_cmd(&["remediations"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("recreated") && out.contains(&new_job), "{out}");
    let (code, out, err) = app.run_cmd(&["history", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let history: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let death = history
        .iter()
        .find(|t| t["job_id"] == "job-0000" && t["to_state"] == "STOPPED")
        .expect("the death in the history");
    assert_eq!(death["replaced_by"], new_job.as_str(), "{death}");
    let first = history
        .iter()
        .find(|t| t["job_id"] == new_job.as_str() && t["from_state"].is_null())
        .expect("the new job's first transition");
    assert_eq!(first["replaces"], "job-0000", "{first}");

    // The status page links the two jobs both ways, and says the new one is a remediation.
    let addr = app.http_addr().await;
    let page = |job: String| async move {
        let r = reqwest::get(format!("http://{addr}/jobs/demo-app/{job}"))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    };
    let old = page("job-0000".into()).await;
    assert!(
        old.contains(&format!(
            "<a href=\"/jobs/demo-app/{new_job}\" class=\"replaced-by\"><code>{new_job}</code></a>"
        )),
        "{old}"
    );
    let new = page(new_job.clone()).await;
    assert!(
        new.contains(
            "<a href=\"/jobs/demo-app/job-0000\" class=\"replaces\"><code>job-0000</code></a>"
        ),
        "{new}"
    );
    assert!(new.contains("<dt>Source</dt><dd>remediation</dd>"), "{new}");
    app.stop().await;
}

#[tokio::test]
async fn restarts_are_bounded_per_lineage_then_remediation_exhausted() {
    let (sim, _cfg, mut app) = start(1, "enabled = true\nmax_restarts = 2").await;
    app.start();
    wait_state(&app, "job-0000", "RUNNING").await;
    let mut current = "job-0000".to_string();
    for n in 1..=2 {
        kill(&sim, &current, "INTERNAL_ERROR");
        let rows = wait_remediation(&app, &format!("re-creation {n}"), |r| {
            r.len() == n && r[n - 1].1 == "recreated"
        })
        .await;
        current = rows[n - 1].2.clone().unwrap();
        wait_state(&app, &current, "RUNNING").await;
    }
    // The third death of the lineage within the window: not re-created.
    kill(&sim, &current, "INTERNAL_ERROR");
    let (summary, payload) = wait_alert(&app, "remediation_exhausted").await;
    assert!(summary.contains("max_restarts"), "{summary}");
    assert_eq!(payload["severity"], "critical");
    let rows = remediations(&app).await;
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(rows[2].1, "skipped");
    assert_eq!(rows[2].3.as_deref(), Some("exhausted"));
    assert_eq!(sim.created().len(), 2, "no third create");
    assert_eq!(sim.stats().creates, 2);
    app.stop().await;
}

#[tokio::test]
async fn an_opted_out_job_and_an_unlisted_reason_are_left_alone() {
    let (sim, mut cfg, mut app) = start(3, "enabled = true").await;
    // job-0000 opts out; job-0001 dies for a reason not in `on`; job-0002 is re-created.
    cfg.jobs.clear();
    cfg.extra.push_str(
        "\n[[jobs]]\napp_id = \"demo-app\"\njob_id = \"job-0000\"\nremediate = false\n\
         \n[[jobs]]\napp_id = \"demo-app\"\njob_id = \"job-0001\"\n\
         \n[[jobs]]\napp_id = \"demo-app\"\njob_id = \"job-0002\"\n",
    );
    app.rewrite_config(&cfg);
    app.start();
    app.wait_running(3).await;
    kill(&sim, "job-0000", "INTERNAL_ERROR");
    kill(&sim, "job-0001", "EXCEED_MAX_IDLE_TIME");
    wait_state(&app, "job-0000", "STOPPED").await;
    wait_state(&app, "job-0001", "STOPPED").await;
    kill(&sim, "job-0002", "INTERNAL_ERROR");
    // The intent is written with the transition: once job-0002's re-creation is done, the
    // two earlier deaths (already written) have shown whether they had one.
    let rows = wait_remediation(&app, "job-0002 re-created", |r| {
        r.iter().any(|r| r.0 == "job-0002" && r.1 == "recreated")
    })
    .await;
    assert_eq!(rows.len(), 1, "only job-0002: {rows:?}");
    assert_eq!(sim.created().len(), 1);
    let said: Vec<_> = alerts(&app).await;
    for (rule, _, payload) in &said {
        if payload["job"]["job_id"] != "job-0002" {
            assert!(
                payload.get("remediation").is_none(),
                "{rule}: nothing said about remediation for a job left alone: {payload}"
            );
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn a_refused_create_is_failed_and_never_sent_again() {
    let (sim, _cfg, mut app) = start(2, "enabled = true").await;
    sim.set_create_fault(CreateFault::new(CreateFaultKind::Reject));
    app.start();
    app.wait_running(2).await;
    kill(&sim, "job-0000", "INTERNAL_ERROR");
    let rows = wait_remediation(&app, "the create refused", |r| {
        r.first().is_some_and(|r| r.1 == "failed")
    })
    .await;
    assert_eq!(rows[0].5, 1, "one try: {rows:?}");
    assert!(
        rows[0].4.as_deref().unwrap_or("").contains("400"),
        "{rows:?}"
    );
    let (summary, payload) = wait_alert(&app, "stopped_unexpectedly").await;
    let (summary, payload) = if payload["remediation"]["action"] == "pending" {
        wait_alert(&app, "remediation_failed").await
    } else {
        (summary, payload)
    };
    assert_eq!(payload["remediation"]["action"], "failed", "{payload}");
    assert!(summary.contains("re-creation failed"), "{summary}");
    // Issue 22: the refusal is in the log at WARN, not only in the alert.
    let log = app.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("the re-creation was refused")),
        "{log}"
    );
    // Past the point: the worker goes on to the next death (the API takes creates again),
    // and job-0000's create was sent once.
    sim.clear_create_faults();
    kill(&sim, "job-0001", "INTERNAL_ERROR");
    wait_remediation(&app, "job-0001 re-created", |r| {
        r.iter().any(|r| r.0 == "job-0001" && r.1 == "recreated")
    })
    .await;
    assert_eq!(sim.stats().creates, 2, "a 4xx is not retried");
    assert_eq!(sim.created().len(), 1);
    assert_eq!(remediations(&app).await[0].1, "failed");
    app.stop().await;
}

#[tokio::test]
async fn a_throttled_create_is_retried_and_then_made_once() {
    let (sim, _cfg, mut app) = start(1, "enabled = true").await;
    sim.set_create_fault(CreateFault {
        kind: CreateFaultKind::Throttle,
        remaining: Some(1),
    });
    app.start();
    wait_state(&app, "job-0000", "RUNNING").await;
    kill(&sim, "job-0000", "INTERNAL_ERROR");
    let rows = wait_remediation(&app, "re-created after a 429", |r| {
        r.first().is_some_and(|r| r.1 == "recreated")
    })
    .await;
    assert_eq!(
        rows[0].5, 2,
        "a 429 proves nothing was made: tried again: {rows:?}"
    );
    assert_eq!(sim.created().len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn an_outcome_later_than_the_wait_is_a_follow_up_notice_about_the_same_job() {
    let (sim, _cfg, mut app) = start(1, "enabled = true").await;
    // Three 429s: tried again after 1, 2 and 4 s, past the death's alert's 5 s wait.
    sim.set_create_fault(CreateFault {
        kind: CreateFaultKind::Throttle,
        remaining: Some(3),
    });
    app.start();
    wait_state(&app, "job-0000", "RUNNING").await;
    kill(&sim, "job-0000", "INTERNAL_ERROR");
    let (notice, payload) = wait_alert(&app, "remediated").await;
    assert_eq!(payload["job"]["job_id"], "job-0000", "{payload}");
    assert_eq!(payload["remediation"]["action"], "recreated");
    let rows = remediations(&app).await;
    let new_job = rows[0].2.clone().unwrap();
    assert!(
        notice.contains(&format!("re-created as {new_job}")),
        "{notice}"
    );
    assert_eq!(rows[0].5, 4, "{rows:?}");
    // The death's alert went out at its 5 s with the re-creation under way.
    let (summary, payload) = wait_alert(&app, "stopped_unexpectedly").await;
    assert_eq!(payload["remediation"]["action"], "pending", "{payload}");
    assert!(summary.contains("re-creation under way"), "{summary}");
    assert_eq!(sim.created().len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_dry_run_says_what_it_would_do_and_creates_nothing() {
    let (sim, _cfg, mut app) = start(2, "enabled = true\ndry_run = true").await;
    app.start();
    app.wait_running(2).await;
    kill(&sim, "job-0000", "INTERNAL_ERROR");
    let rows = wait_remediation(&app, "the dry run's row", |r| !r.is_empty()).await;
    assert_eq!(rows[0].1, "skipped");
    assert_eq!(rows[0].3.as_deref(), Some("dry_run"));
    let (summary, payload) = wait_alert(&app, "stopped_unexpectedly").await;
    assert_eq!(payload["remediation"]["action"], "skipped", "{payload}");
    assert_eq!(payload["remediation"]["reason"], "dry_run");
    assert!(summary.contains("not re-created (dry_run)"), "{summary}");
    app.wait_log("dry run", T).await;
    // The skip is written with the death (never a pending intent); the daemon polls on.
    let polls = polls_of(&sim, "job-0001");
    wait_for("two more polls of job-0001", T, || {
        let n = polls_of(&sim, "job-0001");
        async move { (n >= polls + 2).then_some(()) }
    })
    .await;
    assert_eq!(sim.stats().creates, 0, "a dry run sends nothing");
    app.stop().await;
}

#[tokio::test]
async fn a_crash_between_intent_and_answer_never_creates_twice_and_alerts_a_human() {
    let (sim, mut cfg, mut app) = start(2, "enabled = true").await;
    // Long enough that the daemon is killed while the create still hangs.
    cfg.timeout = "60s";
    app.rewrite_config(&cfg);
    sim.set_create_fault(CreateFault::new(CreateFaultKind::Stall(
        Duration::from_secs(3600),
    )));
    app.start();
    app.wait_running(2).await;
    kill(&sim, "job-0000", "INTERNAL_ERROR");
    // The create reached the API (which made a job) and hangs; the row says posting.
    wait_for("the create received", T, || {
        let n = sim.stats().creates;
        async move { (n == 1).then_some(()) }
    })
    .await;
    wait_remediation(&app, "posting", |r| {
        r.first().is_some_and(|r| r.1 == "posting")
    })
    .await;
    app.kill().await;

    sim.clear_create_faults();
    app.start();
    let (summary, payload) = wait_alert(&app, "remediation_failed").await;
    assert_eq!(payload["severity"], "critical");
    assert_eq!(payload["remediation"]["action"], "unknown", "{payload}");
    for what in ["billable", "demo-app", "room-of-job-0000", "job-0000"] {
        assert!(summary.contains(what), "{what} in {summary}");
    }
    let rows = remediations(&app).await;
    assert_eq!(rows[0].1, "unknown", "{rows:?}");
    // Past the point: the restarted worker re-creates the next death, and job-0000's
    // create was never sent again.
    kill(&sim, "job-0001", "INTERNAL_ERROR");
    wait_remediation(&app, "job-0001 re-created", |r| {
        r.iter().any(|r| r.0 == "job-0001" && r.1 == "recreated")
    })
    .await;
    assert_eq!(
        sim.stats().creates,
        2,
        "job-0000's create was never posted again"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_dead_mix_job_is_recreated_as_a_mix_job_with_its_layout_and_rule() {
    let sim = start_sim(sim_opts(0)).await;
    let mix = |state: &str, reason: Option<&str>| -> JobSnapshot {
        serde_json::from_value(serde_json::json!({
            "job_id": "mix-0001", "app_id": "demo-app", "room_id": "room02",
            "stream_name": "m_mix-0001_room02",
            "mix_param": {"room_id": "room02", "encode_template": "1920x1080_30_4620",
                "max_idle_time": 60, "layout_template": "nine_grids_view",
                "layout_panes": [{"user_id": "u1", "x": 0}]},
            "record_param": {"record_rule_id": "rule-2"},
            "state": state, "stop_reason": reason
        }))
        .unwrap()
    };
    sim.set_mix_job("demo-app", "mix-0001", mix("RUNNING", None));
    let mut cfg = AppConfig::new(&sim, 0);
    cfg.extra = "\n[remediate]\nenabled = true\n\n[[jobs]]\napp_id = \"demo-app\"\njob_id = \"mix-0001\"\nname = \"hall\"\nkind = \"mix\"\n".into();
    let mut app = TestApp::new(&cfg);
    app.start();
    wait_state(&app, "mix-0001", "RUNNING").await;
    sim.set_mix_job(
        "demo-app",
        "mix-0001",
        mix("STOPPED", Some("INTERNAL_ERROR")),
    );
    let rows = wait_remediation(&app, "the mix job re-created", |r| {
        r.first().is_some_and(|r| r.1 == "recreated")
    })
    .await;
    let new_job = rows[0].2.clone().unwrap();
    let created = sim.created();
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].kind, recwatch_rtc::Kind::Mix);
    assert_eq!(
        created[0].request,
        serde_json::json!({
            "mix_param": {"room_id": "room02", "encode_template": "1920x1080_30_4620",
                "max_idle_time": 60, "layout_template": "nine_grids_view",
                "layout_panes": [{"user_id": "u1", "x": 0}]},
            "record_param": {"record_rule_id": "rule-2"}
        })
    );
    // Watched as a mix job: polled on the mix path, where the simulator serves it.
    wait_state(&app, &new_job, "RUNNING").await;
    app.stop().await;
}
