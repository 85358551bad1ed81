//! Running under systemd: sd_notify readiness and watchdog, live reload, the HTTP endpoint.

use crate::harness::*;
use tokio::net::UnixDatagram;

/// Collects sd_notify datagrams sent to a socket the test owns, read on tokio's reactor (a
/// blocking read would hold one of the runtime's two threads).
struct NotifySocket {
    path: std::path::PathBuf,
    sock: UnixDatagram,
    seen: Vec<String>,
}

impl NotifySocket {
    fn bind(dir: &std::path::Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        NotifySocket {
            path,
            sock,
            seen: Vec::new(),
        }
    }

    /// Reads datagrams until one contains `needle`; fails after `T`.
    async fn wait_message(&mut self, needle: &str) {
        let (sock, seen) = (&self.sock, &mut self.seen);
        let found = tokio::time::timeout(T, async {
            let mut buf = [0u8; 4096];
            while !seen.iter().any(|m| m.contains(needle)) {
                let n = sock.recv(&mut buf).await.unwrap();
                seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        })
        .await;
        assert!(
            found.is_ok(),
            "no {needle:?} on NOTIFY_SOCKET; got {:?}",
            self.seen
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_watchdog_and_stopping_arrive_on_notify_socket() {
    let sim = start_sim(static_sim(2)).await;
    let mut app = TestApp::new(&AppConfig::new(&sim, 2));
    let mut notify = NotifySocket::bind(app.dir.path());
    let socket = notify.path.to_str().unwrap().to_string();
    // A 1 s watchdog: pings every 0.5 s.
    app.start_with(&[("NOTIFY_SOCKET", &socket), ("WATCHDOG_USEC", "1000000")]);
    notify.wait_message("READY=1").await;
    // READY comes once the database exists and polling is armed.
    assert!(app.db_path.exists());
    notify.wait_message("WATCHDOG=1").await;
    let pings_before = notify
        .seen
        .iter()
        .filter(|m| m.contains("WATCHDOG=1"))
        .count();
    notify.seen.retain(|m| !m.contains("WATCHDOG=1"));
    notify.wait_message("WATCHDOG=1").await;
    assert!(pings_before >= 1);
    app.signal("HUP");
    notify.wait_message("RELOADING=1").await;
    app.signal("TERM");
    notify.wait_message("STOPPING=1").await;
    assert!(app.wait_exit(T).await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_a_new_job_polls_it_and_a_broken_file_keeps_the_old_config() {
    let sim = start_sim(static_sim(4)).await;
    let mut cfg = AppConfig::new(&sim, 2);
    cfg.interval = "500ms";
    let mut app = TestApp::new(&cfg);
    app.start();
    app.wait_log("recwatch running", T).await;
    assert_eq!(polls_of(&sim, "job-0002"), 0);
    assert_eq!(polls_of(&sim, "job-0003"), 0);

    // New jobs are polled at once, not after their interval: job-0003's is an hour, so
    // seeing it polled within the test's deadline proves it (however slow the machine).
    cfg.jobs.push("job-0002".into());
    cfg.extra = "\n[[jobs]]\napp_id = \"demo-app\"\njob_id = \"job-0003\"\nname = \"hourly\"\ninterval = \"1h\"\n".into();
    app.rewrite_config(&cfg);
    app.signal("HUP");
    app.wait_log("configuration reloaded", T).await;
    for job in ["job-0002", "job-0003"] {
        wait_for(&format!("the new {job} to be polled"), T, || async {
            app.job_row(job).await.and_then(|r| r.0).map(|_| ())
        })
        .await;
    }

    // A broken file: refused with the key named, and polling goes on with the old config.
    let good = std::fs::read_to_string(&app.config_path).unwrap();
    std::fs::write(
        &app.config_path,
        good.replace("rate_limit = 50", "rate_limit = 0"),
    )
    .unwrap();
    app.signal("HUP");
    app.wait_log("refused, keeping the previous configuration", T)
        .await;
    assert!(
        app.log_text().contains("api.rate_limit"),
        "the error names the key"
    );
    let n = sim.stats().requests;
    wait_for("polling to go on", T, || {
        let m = sim.stats().requests;
        async move { (m >= n + 6).then_some(()) }
    })
    .await;
    set_state(&sim, "job-0002", "STOPPED", Some("INTERNAL_ERROR"));
    wait_for("a change after the broken reload", T, || async {
        (app.job_row("job-0002").await?.0.as_deref() == Some("STOPPED")).then_some(())
    })
    .await;

    // A removed job stops being polled; its history stays.
    cfg.jobs.retain(|j| j != "job-0000");
    let removed_polls = {
        app.rewrite_config(&cfg);
        app.signal("HUP");
        app.wait_log("removed=1", T).await;
        sim.stats().by_job["demo-app"]["job-0000"]
    };
    let other = sim.stats().by_job["demo-app"]["job-0001"];
    wait_for("more polls of a kept job", T, || {
        let m = sim.stats().by_job["demo-app"]["job-0001"];
        async move { (m >= other + 4).then_some(()) }
    })
    .await;
    assert!(
        sim.stats().by_job["demo-app"]["job-0000"] <= removed_polls + 1,
        "a poll in flight may finish, no more"
    );
    assert!(
        app.transitions().await.iter().any(|t| t.0 == "job-0000"),
        "history stays"
    );
    assert!(app.stop().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_the_file_by_rename_reloads_it() {
    let sim = start_sim(static_sim(2)).await;
    let mut cfg = AppConfig::new(&sim, 1);
    cfg.interval = "500ms";
    let mut app = TestApp::new(&cfg);
    app.start();
    app.wait_log("recwatch running", T).await;
    // Like an editor: write a new file beside it, then rename it over the old one.
    let old_text = std::fs::read_to_string(&app.config_path).unwrap();
    cfg.jobs.push("job-0001".into());
    app.rewrite_config(&cfg);
    let new_text = std::fs::read_to_string(&app.config_path).unwrap();
    let tmp = app.dir.path().join(".config.toml.swp");
    std::fs::write(&tmp, &new_text).unwrap();
    // Put the old text back first (a no-op for recwatch: same content), then replace atomically.
    std::fs::write(&app.config_path, old_text).unwrap();
    std::fs::rename(&tmp, &app.config_path).unwrap();
    wait_for("the added job to be polled", T, || async {
        app.job_row("job-0001").await.and_then(|r| r.0).map(|_| ())
    })
    .await;
    assert!(app.log_text().contains("file changed"));
    assert!(app.stop().await.success());
}

/// The watch is on the file itself (and on names appearing in its directory), no longer on
/// every write in the directory: a file written in place is still seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_the_file_in_place_reloads_it() {
    let sim = start_sim(static_sim(2)).await;
    let mut cfg = AppConfig::new(&sim, 1);
    cfg.interval = "500ms";
    let mut app = TestApp::new(&cfg);
    app.start();
    app.wait_log("recwatch running", T).await;
    cfg.jobs.push("job-0001".into());
    // `rewrite_config` writes the same file (truncated and written), as `echo >` or an
    // editor that saves in place does.
    app.rewrite_config(&cfg);
    wait_for("the added job to be polled", T, || async {
        app.job_row("job-0001").await.and_then(|r| r.0).map(|_| ())
    })
    .await;
    assert!(app.log_text().contains("file changed"));
    assert!(app.stop().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_metrics_and_jobs_answer_with_real_values() {
    let sim = start_sim(static_sim(2)).await;
    let mut cfg = AppConfig::new(&sim, 2);
    cfg.listen = "127.0.0.1:0".into();
    let mut app = TestApp::new(&cfg);
    app.start();
    let addr = app.http_addr().await;
    app.wait_running(2).await;
    set_state(&sim, "job-0001", "STOPPED", Some("INTERNAL_ERROR"));
    wait_for("job-0001 stopped", T, || async {
        (app.job_row("job-0001").await?.0.as_deref() == Some("STOPPED")).then_some(())
    })
    .await;
    let http = reqwest::Client::new();
    let get = |path: &str| {
        let http = http.clone();
        let url = format!("http://{addr}{path}");
        async move {
            let r = http.get(url).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    assert_eq!(get("/healthz").await, (200, "ok\n".to_string()));
    let (code, body) = get("/readyz").await;
    assert_eq!((code, body.as_str()), (200, "ready\n"));
    let (code, metrics) = get("/metrics").await;
    assert_eq!(code, 200);
    for needle in [
        "recwatch_polls_total{account=\"default\",outcome=\"ok\"}",
        "recwatch_poll_duration_seconds_bucket",
        "recwatch_jobs{state=\"RUNNING\"} 1",
        "recwatch_jobs{state=\"STOPPED\"} 1",
        "recwatch_transitions_total",
        "recwatch_alerts_total{rule=\"stopped_unexpectedly\",severity=\"critical\"} 1",
        "recwatch_rate_budget_wait_seconds_sum",
        "recwatch_oldest_pending_delivery_age_seconds",
    ] {
        assert!(metrics.contains(needle), "{needle} missing from\n{metrics}");
    }
    let (code, jobs) = get("/api/v1/jobs").await;
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&jobs).unwrap();
    assert_eq!(v["next_after"], serde_json::Value::Null, "one page");
    let mut api = v["items"].clone();
    assert_eq!(api[1]["state"], "STOPPED");
    assert_eq!(api[1]["stop_reason"], "INTERNAL_ERROR");
    // The same rows as `recwatch status --json` (but the poll times, which move on); the
    // config lists the jobs in key order, the pages' order.
    let (_, out, _) = app.run_cmd(&["status", "--json"]).await;
    let mut cli: serde_json::Value = serde_json::from_str(&out).unwrap();
    for rows in [&mut cli, &mut api] {
        for row in rows.as_array_mut().unwrap() {
            row.as_object_mut().unwrap().remove("last_polled_at");
        }
    }
    let (cli, api) = (cli.as_array().unwrap(), api.as_array().unwrap());
    assert_eq!(cli.len(), api.len());
    assert_eq!(*cli, status_fields(api, cli));

    // The API failing makes /readyz say so.
    sim.set_fault(recwatch_sim::Fault::new(
        recwatch_sim::FaultKind::ServerError,
    ));
    wait_for("/readyz to turn 503", T, move || async move {
        let (code, body) = get("/readyz").await;
        (code == 503 && body.contains("api_unhealthy")).then_some(())
    })
    .await;
    assert!(app.stop().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_an_auth_back_off_the_watchdog_pings_and_fixed_credentials_apply_at_once() {
    let sim = start_sim(static_sim(2)).await;
    let mut cfg = AppConfig::new(&sim, 2);
    cfg.secret_key = "wrong".into();
    cfg.extra = String::new();
    let mut app = TestApp::new(&cfg);
    let text = std::fs::read_to_string(&app.config_path)
        .unwrap()
        .replace("[api]\n", "[api]\nauth_backoff = \"10m\"\n");
    std::fs::write(&app.config_path, &text).unwrap();
    let mut notify = NotifySocket::bind(app.dir.path());
    let socket = notify.path.to_str().unwrap().to_string();
    app.start_with(&[("NOTIFY_SOCKET", &socket), ("WATCHDOG_USEC", "1000000")]);
    app.wait_log("refused the credentials 3 times in a row", T)
        .await;
    // The poll loop is alive while it waits out the back-off: pings keep coming.
    for _ in 0..3 {
        notify.seen.retain(|m| !m.contains("WATCHDOG=1"));
        notify.wait_message("WATCHDOG=1").await;
    }
    assert_eq!(sim.stats().refused_auth, 3);
    // The operator fixes the key and reloads: polling resumes now, not in 10 minutes.
    std::fs::write(
        &app.config_path,
        text.replace("secret_key = \"wrong\"", &format!("secret_key = \"{SK}\"")),
    )
    .unwrap();
    app.signal("HUP");
    app.wait_running(2).await;
    assert!(app.stop().await.success());
    assert!(!app.log_text().contains("\"wrong\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_changes_channels_rules_and_limits() {
    use crate::support::receiver::Receiver;
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let sim = start_sim(static_sim(3)).await;
    let hook = Receiver::start(Some(SECRET)).await;
    let mut cfg = AppConfig::new(&sim, 3);
    let mut app = TestApp::spawn(&cfg, 3).await;
    // No channel and TENANT_STOP off: nothing is sent.
    set_state(&sim, "job-0000", "STOPPED", Some("TENANT_STOP"));
    wait_for("job-0000 stopped", T, || async {
        (app.job_row("job-0000").await?.0.as_deref() == Some("STOPPED")).then_some(())
    })
    .await;
    assert_eq!(app.scalar("SELECT COUNT(*) FROM alerts").await, 0);

    // Reload: a webhook, TENANT_STOP at warning, and a budget of 2 requests/s.
    cfg.rate_limit = 2;
    cfg.extra = format!(
        "\n[rules]\nstopped_by_tenant = \"warning\"\n\n[notify]\nmax_backoff = \"300ms\"\n\n[[notify.webhook]]\nname = \"hook\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\n",
        hook.url()
    );
    app.rewrite_config(&cfg);
    app.signal("HUP");
    app.wait_log("configuration reloaded", T).await;
    // Requests sent at the old rate may still arrive: count from the first ones at the new
    // rate (the budget holds those a second after the old ones, and at most 4 are in flight).
    sim.reset_stats();
    wait_for("requests at the new rate", T, || {
        let n = sim.stats().requests;
        async move { (n >= 5).then_some(()) }
    })
    .await;
    sim.reset_stats();
    set_state(&sim, "job-0001", "STOPPED", Some("TENANT_STOP"));
    let got = hook.wait_for(1, T).await;
    assert_eq!(got[0].alert.rule.as_str(), "stopped_by_tenant");
    assert_eq!(got[0].alert.severity.as_str(), "warning");
    assert_eq!(got[0].alert.job.as_ref().unwrap().job_id, "job-0001");
    // The new budget holds: a few seconds of polling at most 2 in any second.
    wait_for("six more requests", T, || {
        let n = sim.stats().requests;
        async move { (n >= 6).then_some(()) }
    })
    .await;
    assert!(app.stop().await.success());
    assert_within_budget(&sim.stats(), 2, "after the reload");
}
