//! The alerts issue: rules and severities, conditions that fire, remind and resolve, and
//! deliveries that survive receivers going down and the daemon being killed.

use crate::harness::*;
use crate::support::ClosedPort;
use crate::support::receiver::Receiver;
use crate::support::smtp::SmtpServer;
use recwatch_sim::{Fault, FaultKind};
use std::collections::HashSet;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_stop_reason_fires_its_rule_once_by_webhook_and_email() {
    let sim = start_sim(static_sim(4)).await;
    let hook = Receiver::start(Some(SECRET)).await;
    let smtp = SmtpServer::start();
    let mut cfg = AppConfig::new(&sim, 4);
    cfg.extra = notify_toml(Some(hook.url().as_str()), Some(smtp.addr()), "");
    let mut app = TestApp::spawn(&cfg, 4).await;
    let stops = [
        Some("INTERNAL_ERROR"),
        Some("EXCEED_MAX_IDLE_TIME"),
        Some("TENANT_STOP"),
        None,
    ];
    for (i, reason) in stops.iter().enumerate() {
        let j = recwatch_sim::job_id(i);
        set_state(&sim, &j, "STOPPED", *reason);
    }
    hook.wait_for(3, T).await;
    smtp.wait_for(3, T).await;
    wait_for("every delivery settled", T, || async {
        (app.pending_deliveries().await == 0).then_some(())
    })
    .await;
    assert_eq!(
        hook.summary(),
        vec![
            (
                "idle_timeout".into(),
                "warning".into(),
                "firing".into(),
                "job-0001".into()
            ),
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
                "job-0003".into()
            ),
        ],
        "TENANT_STOP is off by default"
    );
    // Every webhook carries its alert id as webhook-id, verified by the reference library.
    for d in hook.received() {
        assert_eq!(d.headers["webhook-id"].to_str().unwrap(), d.alert.id);
        assert_eq!(d.alert.version, 1);
        let t = d.alert.transition.as_ref().unwrap();
        assert_eq!(
            (t.from.as_deref(), t.to.as_str()),
            (Some("RUNNING"), "STOPPED")
        );
    }
    let mails = smtp.mails();
    assert_eq!(mails.len(), 3);
    let subjects: HashSet<String> = mails.iter().map(|m| m.header("Subject").unwrap()).collect();
    assert!(
        subjects.contains("[recwatch] CRITICAL stopped_unexpectedly: cam-0 (job-0000)"),
        "{subjects:?}"
    );
    assert!(
        subjects.contains("[recwatch] WARNING idle_timeout: cam-1 (job-0001)"),
        "{subjects:?}"
    );
    for m in &mails {
        assert_eq!(m.to.len(), 2, "both recipients");
        let body = m.body();
        assert!(
            body.contains("demo-app") && body.contains("STOPPED"),
            "{body}"
        );
    }
    assert_eq!(app.scalar("SELECT COUNT(*) FROM alerts").await, 3);

    // Restarts never re-alert old transitions, even when the stopped jobs are polled again.
    assert!(app.stop().await.success());
    let polled = sim.stats().by_job["demo-app"]["job-0000"];
    cfg.extra.push_str("");
    let text = std::fs::read_to_string(&app.config_path)
        .unwrap()
        .replace("[poll]\n", "[poll]\nstop_after_terminal = false\n");
    std::fs::write(&app.config_path, text).unwrap();
    app.start();
    wait_for("stopped jobs polled again", T, || {
        let n = sim.stats().by_job["demo-app"]["job-0000"];
        async move { (n >= polled + 5).then_some(()) }
    })
    .await;
    assert!(app.stop().await.success());
    assert_eq!(app.scalar("SELECT COUNT(*) FROM alerts").await, 3);
    assert_eq!(hook.received().len(), 3);
    assert_eq!(smtp.mails().len(), 3);

    // `recwatch alerts --json` shows each alert with its deliveries.
    let (code, out, _) = app.run_cmd(&["alerts", "--json"]).await;
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 3);
    for a in v.as_array().unwrap() {
        let states: Vec<&str> = a["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["state"].as_str().unwrap())
            .collect();
        assert_eq!(states, vec!["sent", "sent"], "{a}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditions_fire_remind_and_resolve() {
    let sim = start_sim(static_sim(3)).await;
    // job-0000: stuck in INIT (created 10 minutes ago, max_idle_time 30 s).
    let mut stuck = snap("job-0000", "INIT", None);
    stuck.create_time = Some(
        (chrono::Utc::now() - chrono::Duration::minutes(10))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    );
    sim.set_job("demo-app", "job-0000", stuck);
    // job-0001: not found.
    sim.remove_job("demo-app", "job-0001");
    let hook = Receiver::start(Some(SECRET)).await;
    let mut cfg = AppConfig::new(&sim, 3);
    cfg.extra = notify_toml(
        Some(hook.url().as_str()),
        None,
        "init_grace = \"1s\"\nrepeat_interval = \"1s\"\napi_failure_threshold = 3\n",
    );
    let mut app = TestApp::new(&cfg);
    app.start();

    // Both fire, then remind (repeat_interval 1 s).
    let count = |rule: &str, status: &str| {
        hook.received()
            .iter()
            .filter(|d| d.alert.rule.as_str() == rule && d.alert.status.as_str() == status)
            .count()
    };
    wait_for("stuck_init and job_not_found to fire and remind", T, || {
        let ok = count("stuck_init", "firing") >= 2 && count("job_not_found", "firing") >= 2;
        async move { ok.then_some(()) }
    })
    .await;
    // They clear: one resolved notice each.
    set_state(&sim, "job-0000", "RUNNING", None);
    set_state(&sim, "job-0001", "RUNNING", None);
    wait_for("both to resolve", T, || {
        let ok = count("stuck_init", "resolved") == 1 && count("job_not_found", "resolved") == 1;
        async move { ok.then_some(()) }
    })
    .await;

    // The whole API fails: one api_unhealthy alert, reminders, then resolved; per-job
    // not-found alerts of the same outage are held back.
    let per_job = || {
        hook.received()
            .iter()
            .filter(|d| d.alert.job.is_some())
            .count()
    };
    let per_job_before = per_job();
    sim.set_fault(Fault::new(FaultKind::ServerError));
    wait_for("api_unhealthy to fire and remind", T, || {
        let ok = count("api_unhealthy", "firing") >= 2;
        async move { ok.then_some(()) }
    })
    .await;
    let firing = hook
        .received()
        .into_iter()
        .find(|d| d.alert.rule.as_str() == "api_unhealthy")
        .unwrap();
    assert_eq!(firing.alert.severity.as_str(), "critical");
    assert!(firing.alert.job.is_none());
    sim.clear_faults();
    wait_for("api_unhealthy to resolve", T, || {
        let ok = count("api_unhealthy", "resolved") == 1;
        async move { ok.then_some(()) }
    })
    .await;
    assert!(app.stop().await.success());
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM episodes WHERE rule = 'api_unhealthy'")
            .await,
        1,
        "one episode"
    );
    assert_eq!(
        per_job(),
        per_job_before,
        "the outage raised no per-job alert, only api_unhealthy"
    );
    let ids: Vec<String> = hook
        .received()
        .iter()
        .map(|d| d.alert.id.to_string())
        .collect();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "no alert delivered twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_errors_are_retried_until_accepted_and_smtp_down_then_up_delivers_once() {
    let sim = start_sim(static_sim(1)).await;
    let hook = Receiver::start(Some(SECRET)).await;
    hook.fail_next(3, 503);
    let smtp_port = ClosedPort::new();
    let mut cfg = AppConfig::new(&sim, 1);
    cfg.extra = notify_toml(Some(hook.url().as_str()), Some(smtp_port.addr()), "");
    let mut app = TestApp::spawn(&cfg, 1).await;
    set_state(&sim, "job-0000", "STOPPED", Some("INTERNAL_ERROR"));
    // The webhook: three 503s, then accepted, once.
    let got = hook.wait_for(1, T).await;
    assert_eq!(
        hook.attempts().len(),
        4,
        "three refused attempts and the accepted one"
    );
    let ids: HashSet<String> = hook
        .attempts()
        .iter()
        .map(|a| a.headers["webhook-id"].to_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 1, "every retry carries the same webhook-id");
    assert_eq!(got[0].alert.rule.as_str(), "stopped_unexpectedly");
    // The mail: SMTP is down; the delivery waits, retried, and is not lost.
    wait_for("a failed mail attempt", T, || async {
        (app.scalar("SELECT attempts FROM deliveries WHERE channel = 'mail'")
            .await
            >= 2)
            .then_some(())
    })
    .await;
    let smtp = SmtpServer::start_on(smtp_port, None);
    let mails = smtp.wait_for(1, T).await;
    assert!(
        mails[0]
            .header("Subject")
            .unwrap()
            .contains("stopped_unexpectedly")
    );
    wait_for("every delivery settled", T, || async {
        (app.pending_deliveries().await == 0).then_some(())
    })
    .await;
    assert!(app.stop().await.success());
    assert_eq!(smtp.mails().len(), 1, "delivered once");
    assert_eq!(hook.received().len(), 1, "delivered once");
    let (_, out, _) = app.run_cmd(&["alerts"]).await;
    assert!(
        out.contains("hook:sent(4x)") && out.contains("mail:sent"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_a_transition_and_before_its_delivery_delivers_once_after_restart() {
    let sim = start_sim(static_sim(1)).await;
    // The receiver is down while the transition happens.
    let hook_port = ClosedPort::new();
    let mut cfg = AppConfig::new(&sim, 1);
    cfg.extra = notify_toml(Some(&format!("http://{}/hook", hook_port.addr())), None, "");
    let mut app = TestApp::spawn(&cfg, 1).await;
    set_state(&sim, "job-0000", "STOPPED", Some("INTERNAL_ERROR"));
    wait_for(
        "the alert to be committed with a pending delivery",
        T,
        || async { (app.pending_deliveries().await == 1).then_some(()) },
    )
    .await;
    let status = app.kill().await;
    assert!(!status.success(), "SIGKILL");
    let hook = Receiver::start_on(hook_port, Some(SECRET));
    app.start();
    let got = hook.wait_for(1, T).await;
    wait_for("delivery marked sent", T, || async {
        (app.pending_deliveries().await == 0).then_some(())
    })
    .await;
    assert!(app.stop().await.success());
    assert_eq!(hook.received().len(), 1);
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM alerts").await,
        1,
        "created once"
    );
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM transitions WHERE to_state = 'STOPPED'")
            .await,
        1
    );
    let db_id: String = {
        let db = app.db().await.unwrap();
        sqlx::query_scalar("SELECT id FROM alerts")
            .fetch_one(&db)
            .await
            .unwrap()
    };
    assert_eq!(got[0].alert.id, db_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_alert_reports_each_channel() {
    let sim = start_sim(static_sim(1)).await;
    let hook = Receiver::start(Some(SECRET)).await;
    let down = ClosedPort::new();
    let mut cfg = AppConfig::new(&sim, 1);
    cfg.extra = notify_toml(Some(hook.url().as_str()), Some(down.addr()), "");
    let app = TestApp::new(&cfg);
    let (code, out, err) = app.run_cmd(&["test-alert"]).await;
    assert_eq!(code, 1, "one channel failed: {out}{err}");
    assert!(out.contains("hook") && out.contains(" ok "), "{out}");
    assert!(out.contains("mail") && out.contains("FAILED"), "{out}");
    assert_eq!(hook.received()[0].alert.rule.as_str(), "test");
    let (code, out, _) = app.run_cmd(&["test-alert", "--channel", "hook"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("mail"));
    // A name on the command line the config does not know: a usage error, as everywhere.
    let (code, _, err) = app.run_cmd(&["test-alert", "--channel", "pager"]).await;
    assert_eq!(code, 64);
    assert!(err.contains("no channel is named \"pager\""), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_notify_list_routes_its_alerts() {
    let sim = start_sim(static_sim(2)).await;
    let a = Receiver::start(Some(SECRET)).await;
    let b = Receiver::start(Some(SECRET)).await;
    let mut cfg = AppConfig::new(&sim, 0);
    cfg.extra = format!(
        "\n[notify]\nmax_backoff = \"300ms\"\n\n[[notify.webhook]]\nname = \"team-a\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\n\n[[notify.webhook]]\nname = \"team-b\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\n\n[[jobs]]\napp_id = \"demo-app\"\njob_id = \"job-0000\"\nnotify = [\"team-a\"]\n\n[[jobs]]\napp_id = \"demo-app\"\njob_id = \"job-0001\"\n",
        a.url(),
        b.url()
    );
    let mut app = TestApp::spawn(&cfg, 2).await;
    set_state(&sim, "job-0000", "STOPPED", Some("INTERNAL_ERROR"));
    set_state(&sim, "job-0001", "STOPPED", Some("INTERNAL_ERROR"));
    a.wait_for(2, T).await;
    b.wait_for(1, T).await;
    wait_for("every delivery settled", T, || async {
        (app.pending_deliveries().await == 0).then_some(())
    })
    .await;
    assert!(app.stop().await.success());
    let jobs = |r: &Receiver| {
        let mut v: Vec<String> = r
            .received()
            .iter()
            .map(|d| d.alert.job.as_ref().unwrap().job_id.clone())
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        jobs(&a),
        vec!["job-0000", "job-0001"],
        "team-a gets its job and the default-routed one"
    );
    assert_eq!(
        jobs(&b),
        vec!["job-0001"],
        "team-b only gets the default-routed job"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_webhook_and_a_silent_smtp_server_never_delay_a_healthy_webhook() {
    let sim = start_sim(static_sim(2)).await;
    let healthy = Receiver::start(Some(SECRET)).await;
    let hung = Receiver::start(Some(SECRET)).await;
    // Every request to it hangs far beyond the test.
    hung.stall_next(100, Duration::from_secs(600));
    // Takes the connection (the kernel does) and never says a word.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut cfg = AppConfig::new(&sim, 2);
    cfg.extra = format!(
        "\n[notify]\nmax_backoff = \"300ms\"\n\n[[notify.webhook]]\nname = \"healthy\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\ntimeout = \"2s\"\n\n[[notify.webhook]]\nname = \"hung\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\ntimeout = \"100s\"\n\n[[notify.email]]\nname = \"silent\"\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {}\ntls = \"none\"\nfrom = \"recwatch@example.com\"\nto = [\"oncall@example.com\"]\ntimeout = \"100s\"\n",
        healthy.url(),
        hung.url(),
        silent.local_addr().unwrap().port()
    );
    let mut app = TestApp::spawn(&cfg, 2).await;

    // A first alert: the hung receiver has it and holds on to it.
    set_state(&sim, "job-0000", "STOPPED", Some("INTERNAL_ERROR"));
    hung.wait_arrived(1, T).await;
    healthy.wait_for(1, T).await;
    // A second alert while both slow channels are still stuck on the first: the healthy
    // channel delivers it all the same.
    set_state(&sim, "job-0001", "STOPPED", Some("INTERNAL_ERROR"));
    let got = healthy.wait_for(2, T).await;
    assert!(
        hung.attempts().is_empty(),
        "the hung receiver has not answered a single request yet"
    );
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM deliveries WHERE channel = 'silent' AND attempts > 0")
            .await,
        0,
        "no mail attempt has ended yet: the SMTP server never greeted"
    );
    let jobs: HashSet<String> = got
        .iter()
        .map(|d| d.alert.job.as_ref().unwrap().job_id.clone())
        .collect();
    assert_eq!(jobs, HashSet::from(["job-0000".into(), "job-0001".into()]));
    // Stopping does not wait out the hung sends: they stay pending for the next start.
    assert!(app.stop().await.success());
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM deliveries WHERE channel IN ('hung', 'silent') AND state = 'pending'")
            .await,
        4
    );
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_answering_410_twice_then_200_gets_the_alert() {
    let sim = start_sim(static_sim(1)).await;
    let hook = Receiver::start(Some(SECRET)).await;
    hook.fail_next_with(2, 410, "this hook was removed");
    let mut cfg = AppConfig::new(&sim, 1);
    cfg.extra = notify_toml(Some(hook.url().as_str()), None, "");
    let mut app = TestApp::spawn(&cfg, 1).await;
    set_state(&sim, "job-0000", "STOPPED", Some("INTERNAL_ERROR"));

    let got = hook.wait_for(1, T).await;
    assert_eq!(got[0].alert.rule.as_str(), "stopped_unexpectedly");
    assert_eq!(hook.attempts().len(), 3, "two refusals, then accepted");
    wait_for("the delivery to be marked sent", T, || async {
        (app.pending_deliveries().await == 0).then_some(())
    })
    .await;
    assert!(app.stop().await.success());
    let (_, out, _) = app.run_cmd(&["alerts"]).await;
    assert!(out.contains("hook:sent(3x)"), "{out}");
    let log = app.log_text();
    assert!(
        log.contains("HTTP 410 Gone: this hook was removed"),
        "the refusals are logged with the receiver's answer:\n{log}"
    );
    assert!(!log.contains("delivery dead"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_dies_only_at_max_age_and_says_the_real_reason() {
    let sim = start_sim(static_sim(1)).await;
    let hook = Receiver::start(Some(SECRET)).await;
    hook.fail_next_with(1000, 404, "no such hook here");
    let mut cfg = AppConfig::new(&sim, 1);
    cfg.listen = "127.0.0.1:0".into();
    cfg.extra = notify_toml(Some(hook.url().as_str()), None, "")
        .replace("[notify]\n", "[notify]\nmax_age = \"3s\"\n");
    let mut app = TestApp::new(&cfg);
    app.start();
    let addr = app.http_addr().await;
    app.wait_running(1).await;
    set_state(&sim, "job-0000", "STOPPED", Some("INTERNAL_ERROR"));

    wait_for("the delivery to die", T, || async {
        (app.scalar("SELECT COUNT(*) FROM deliveries WHERE state = 'dead'")
            .await
            == 1)
            .then_some(())
    })
    .await;
    let attempts = app.scalar("SELECT attempts FROM deliveries").await;
    assert!(
        attempts >= 3,
        "a 404 is retried (every max_backoff) until max_age, not buried at once: {attempts}"
    );
    // The log line is an error, and leads with what the receiver said.
    app.wait_log("delivery dead", T).await;
    let log = app.log_text();
    let line = log.lines().find(|l| l.contains("delivery dead")).unwrap();
    assert!(line.contains("ERROR"), "{line}");
    assert!(
        line.contains("HTTP 404 Not Found: no such hook here"),
        "{line}"
    );
    // Visible to the operator: a metric that rose, and a daemon that stays ready.
    let http = reqwest::Client::new();
    let metrics = http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("recwatch_deliveries_dead{channel=\"hook\"} 1"),
        "{metrics}"
    );
    let ready = http
        .get(format!("http://{addr}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        ready.status().as_u16(),
        200,
        "delivery trouble is no reason to restart"
    );
    assert!(app.stop().await.success());
    let (_, out, _) = app.run_cmd(&["alerts"]).await;
    assert!(out.contains("hook:dead"), "{out}");
    assert!(
        out.contains("hook dead: webhook answered HTTP 404 Not Found: no such hook here"),
        "{out}"
    );
    let (_, json, _) = app.run_cmd(&["alerts", "--json"]).await;
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        v[0]["deliveries"][0]["last_error"],
        "webhook answered HTTP 404 Not Found: no such hook here"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_once_delivers_the_alerts_it_raises_before_it_exits() {
    let sim = start_sim(static_sim(1)).await;
    let hook = Receiver::start(Some(SECRET)).await;
    let mut cfg = AppConfig::new(&sim, 1);
    cfg.extra = notify_toml(Some(hook.url().as_str()), None, "");
    let app = TestApp::new(&cfg);
    let (code, out, err) = app.run_cmd(&["poll-once"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(hook.received().is_empty(), "a running job raises nothing");

    set_state(&sim, "job-0000", "STOPPED", Some("INTERNAL_ERROR"));
    let (code, out, err) = app.run_cmd(&["poll-once"]).await;
    assert_eq!(code, 0, "{out}{err}");
    // Delivered by the time poll-once returned: nothing is left for a later `run`.
    let got = hook.received();
    assert_eq!(got.len(), 1, "{out}{err}");
    assert_eq!(got[0].alert.rule.as_str(), "stopped_unexpectedly");
    assert!(out.contains("1 alert raised and delivered"), "{out}");
    assert_eq!(app.pending_deliveries().await, 0);

    let (_, help, _) = app.run_cmd(&["poll-once", "--help"]).await;
    assert!(help.contains("deliver the alerts this raised"), "{help}");
}
