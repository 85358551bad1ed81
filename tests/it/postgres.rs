//! The tests' own PostgreSQL (src/store/test_pg.rs, shared with the store's unit tests): a
//! server a test stops and starts again under a store that stays open, as the HA tests need
//! ("the database restarted under a running pair").

use crate::harness::{T, wait_for};
use crate::test_pg::PgServer;
use recwatch::domain::{JobSource, RuntimeJob};
use recwatch::secret::Secret;
use recwatch::store::{Store, StoreError};

fn job(id: &str) -> RuntimeJob {
    RuntimeJob {
        account: None,
        key: recwatch::domain::JobKey::new("app", id),
        name: None,
        kind: Default::default(),
        notify: None,
        source: JobSource::parse("cli"),
        added_at: "2026-01-01T00:00:00.000Z".parse().unwrap(),
    }
}

/// A write while the server is down fails as the database refusing (not a statement's own
/// fault), and once it is back the same store writes again, with nothing lost from before.
#[tokio::test]
async fn a_store_outlives_its_server_being_stopped_and_started_again() {
    let mut server = tokio::task::spawn_blocking(PgServer::start).await.unwrap();
    let url = server.fresh_database().await;
    let store = Store::open_postgres(&Secret::new(url)).await.unwrap();
    assert!(store.watchlist().add(&job("before")).await.unwrap());
    let version = store.watchlist().version().await.unwrap();

    let mut server = tokio::task::spawn_blocking(move || {
        server.stop();
        server
    })
    .await
    .unwrap();
    let refused = store.watchlist().add(&job("while-down")).await.unwrap_err();
    assert!(
        matches!(refused, StoreError::Unwritable(_)),
        "a server gone is the database refusing: {refused:?}"
    );

    let server = tokio::task::spawn_blocking(move || {
        server.restart();
        server
    })
    .await
    .unwrap();
    // The pools reconnect by themselves; the first attempts may still meet dead connections.
    let added = wait_for("the store to write again after the restart", T, || async {
        match store.watchlist().add(&job("after")).await {
            Ok(added) => Some(added),
            Err(e) => {
                assert!(e.is_database_wide(), "{e:?}");
                None
            }
        }
    })
    .await;
    assert!(added);
    let keys: Vec<String> = store
        .watchlist()
        .all()
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.key.job_id.clone())
        .collect();
    assert_eq!(keys, ["after", "before"]);
    assert_eq!(store.watchlist().version().await.unwrap(), version + 1);
    drop(server);
}

/// Two processes starting on a new database at once: sqlx's migrator takes an advisory lock,
/// so both open it, the schema is made once, and each sees it whole.
#[tokio::test]
async fn two_stores_migrating_one_new_database_at_once_both_open_it() {
    let url = crate::test_pg::fresh_database().await;
    let url = Secret::new(url);
    let (a, b) = tokio::join!(Store::open_postgres(&url), Store::open_postgres(&url));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a.watchlist().add(&job("x")).await.unwrap());
    assert!(
        !b.watchlist().add(&job("x")).await.unwrap(),
        "one table, seen by both"
    );
    let version = b.db().server_version().await.unwrap().unwrap();
    assert!(version.starts_with(char::is_numeric), "{version}");
}

/// The real daemon on PostgreSQL: a job dies on the simulator, its alert reaches the webhook
/// receiver, and `status`, `history` and `alerts` (other processes) read it from the same
/// database. No SQLite file is made, and the URL's password is in no output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_on_postgres_alerts_a_death_and_the_cli_reads_it_there() {
    use crate::harness::*;
    use crate::support::receiver::Receiver;
    const PASSWORD: &str = "pg-s3cret-in-url";

    // The tests' server trusts loopback, so any password is accepted: one is given to prove
    // it never shows.
    let url = crate::test_pg::fresh_database().await.replacen(
        "postgres://postgres@",
        &format!("postgres://postgres:{PASSWORD}@"),
        1,
    );
    assert!(url.contains(PASSWORD), "{url}");
    let sim = start_sim(recwatch_sim::SimOptions {
        scripted: false,
        ..signed_sim(2)
    })
    .await;
    let hook = Receiver::start(Some(SECRET)).await;
    let mut cfg = AppConfig::new(&sim, 2);
    cfg.storage_url = Some(url.clone());
    cfg.extra = notify_toml(Some(hook.url().as_str()), None, "");
    let mut app = TestApp::new(&cfg);

    let (code, out, err) = app.run_cmd(&["check"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("storage    PostgreSQL postgres://***:***@127.0.0.1:")
            && out.contains("server version ")
            && out.contains("empty: `run` creates the schema"),
        "{out}"
    );

    app.start();
    let status = |app: &TestApp| {
        let cmd = app.command(&["status", "--json"]);
        async move {
            let out = tokio::process::Command::from(cmd).output().await.unwrap();
            serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).ok()
        }
    };
    wait_for("both jobs RUNNING in `status`", T, || async {
        let rows = status(&app).await?;
        (rows.len() == 2 && rows.iter().all(|r| r["state"] == "RUNNING")).then_some(())
    })
    .await;

    let dead = recwatch_sim::job_id(1);
    set_state(&sim, &dead, "STOPPED", Some("INTERNAL_ERROR"));
    let got = hook.wait_for(1, T).await;
    assert_eq!(got[0].alert.rule.as_str(), "stopped_unexpectedly");
    assert_eq!(
        got[0].headers["webhook-id"].to_str().unwrap(),
        got[0].alert.id
    );

    let rows = status(&app).await.unwrap();
    let row = rows.iter().find(|r| r["job_id"] == dead.as_str()).unwrap();
    assert_eq!(
        (row["state"].as_str(), row["stop_reason"].as_str()),
        (Some("STOPPED"), Some("INTERNAL_ERROR")),
        "{row}"
    );
    let (code, out, err) = app.run_cmd(&["history", "--job", &dead, "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let history: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let states: Vec<&str> = history
        .iter()
        .filter_map(|t| t["to_state"].as_str())
        .collect();
    assert_eq!(states, ["STOPPED", "RUNNING"], "{out}");
    let id = got[0].alert.id.clone();
    wait_for("the delivery shown sent in `alerts`", T, || async {
        let (_, out, _) = app.run_cmd(&["alerts", "--json"]).await;
        let alerts: Vec<serde_json::Value> = serde_json::from_str(&out).ok()?;
        alerts
            .iter()
            .any(|a| a["id"] == id.as_str() && a["deliveries"][0]["state"] == "sent")
            .then_some(())
    })
    .await;

    let (code, out, err) = app.run_cmd(&["check"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("schema up to date"), "{out}");
    app.stop().await;
    assert!(!app.db_path.exists(), "no SQLite file beside PostgreSQL");
    let log = app.log_text();
    assert!(log.contains("recwatch running"), "{log}");
    for text in [&log, &out, &err] {
        assert!(!text.contains(PASSWORD), "the password shows: {text}");
    }
}
