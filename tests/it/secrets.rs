//! An API that echoes our credentials back: the token must not reach the log, the database,
//! `status --json`, `history`, `alerts` or `/api/v1/jobs`.

use crate::harness::*;
use recwatch_sim::{Fault, FaultKind, SimAuth, SimOptions};

const TOKEN: &str = "MIIEXAYJKoZIhvcNAQcCoIIETTCCBEkCAQExDTALBglghkgBZQMEAgEw-test-iam-token";

/// Every byte of the database files, as text (the WAL included).
fn database_bytes(app: &TestApp) -> String {
    let mut all = Vec::new();
    for ext in ["db", "db-wal"] {
        if let Ok(b) = std::fs::read(app.db_path.with_extension(ext)) {
            all.extend(b);
        }
    }
    String::from_utf8_lossy(&all).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_echoed_token_is_redacted_everywhere() {
    let sim = start_sim(SimOptions {
        scripted: false,
        jobs: 2,
        auth: SimAuth::Token(TOKEN.into()),
        ..SimOptions::default()
    })
    .await;
    // job-0000's errors quote the token; job-0001 stops with the token in its description.
    sim.set_fault(Fault::new(FaultKind::EchoTokenInError).for_job("job-0000"));
    sim.set_fault(Fault::new(FaultKind::EchoTokenInDescription).for_job("job-0001"));
    let mut cfg = AppConfig::new(&sim, 2);
    // Port 0: the daemon logs the address it got.
    cfg.listen = "127.0.0.1:0".into();
    let mut app = TestApp::new(&cfg);
    let text = std::fs::read_to_string(&app.config_path).unwrap().replace(
        &format!("access_key = \"{AK}\"\nsecret_key = \"{SK}\"\n"),
        &format!("token = \"{TOKEN}\"\n"),
    );
    std::fs::write(&app.config_path, text).unwrap();
    app.start();

    wait_for("job-0001 STOPPED and job-0000 failing", T, || async {
        let stopped = app.job_row("job-0001").await?.0? == "STOPPED";
        let failing = app.job_row("job-0000").await?.3 > 0;
        let alerted = app
            .scalar("SELECT COUNT(*) FROM alerts WHERE rule = 'stopped_unexpectedly'")
            .await
            > 0;
        (stopped && failing && alerted).then_some(())
    })
    .await;
    let addr = app.http_addr().await;
    let api = reqwest::get(format!("http://{addr}/api/v1/jobs"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let (_, status, _) = app.run_cmd(&["status", "--json"]).await;
    let (_, status_table, _) = app.run_cmd(&["status"]).await;
    let (_, history, _) = app.run_cmd(&["history", "--json"]).await;
    let (_, history_table, _) = app.run_cmd(&["history"]).await;
    let (_, alerts, _) = app.run_cmd(&["alerts", "--json"]).await;
    assert!(app.stop().await.success());
    let log = app.log_text();
    let db = database_bytes(&app);

    // The echo arrived (so the test can fail) and was redacted where it landed.
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    let error = v[0]["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("X-Auth-Token: ***"), "{status}");
    let description = v[1]["description"].as_str().unwrap_or_default();
    assert!(description.contains("X-Auth-Token: ***"), "{status}");
    assert!(log.contains("X-Auth-Token: ***"), "{log}");
    assert!(history.contains("X-Auth-Token: ***"), "{history}");

    for (place, text) in [
        ("log", &log),
        ("database", &db),
        ("status --json", &status),
        ("status", &status_table),
        ("history --json", &history),
        ("history", &history_table),
        ("alerts --json", &alerts),
        ("/api/v1/jobs", &api),
    ] {
        // Also the beginning alone: an answer may cut a long token short.
        assert!(
            !text.contains(&TOKEN[..24]),
            "the token reached the {place}:\n{text}"
        );
    }
}
