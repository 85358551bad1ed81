//! `recwatch storage copy` (issue 13): a daemon's SQLite database, with history, an alert and
//! its delivery, a record callback with its forward, a run-time job, a silence and a group
//! release, copied to the tests' real PostgreSQL and back into a new SQLite file, each twice:
//! the round trip loses and changes nothing, the second run copies nothing, and the copy
//! refuses a source a running daemon owns.

use crate::harness::*;
use crate::push::{APP_KEY, RelayReceiver, event};
use crate::support::receiver::Receiver;
use crate::support::smtp::SmtpServer;
use recwatch_rtc::callback::{HEADER_RAND, HEADER_SIGNATURE, HEADER_TIMESTAMP, sign};
use recwatch_rtc::secret::Secret;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use std::path::Path;

/// The tables the copy carries, with what they are compared on (the implicit rowid where it
/// is the outbox's order).
const COMPARED: &[(&str, &str)] = &[
    ("jobs", "*"),
    ("transitions", "*"),
    ("episodes", "*"),
    ("alerts", "rowid, *"),
    // Not `claimed_epoch`: a claim under the source's lease is left out (copied unclaimed).
    (
        "deliveries",
        "alert_id, channel, state, attempts, next_attempt_at, last_error, sent_at, created_at, held_by",
    ),
    ("callback_events", "*"),
    ("forwards", "*"),
    ("watchlist", "rowid, *"),
    ("silences", "*"),
    ("remediations", "*"),
    ("group_releases", "*"),
    ("unwatched", "*"),
];

/// Runs `recwatch storage copy`; returns (exit code, stdout, stderr).
async fn copy(app: &TestApp, from: &str, to: &str) -> (i32, String, String) {
    app.run_cmd(&["storage", "copy", "--from", from, "--to", to])
        .await
}

/// The COPIED column of each table's line.
fn copied(out: &str) -> Vec<(String, u64)> {
    out.lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols.len() == 4).then(|| (cols[0].to_string(), cols[2].parse().unwrap()))
        })
        .collect()
}

/// Rows of `table` in one SQLite file and not the other, both ways, and the row counts.
async fn differences(a: &Path, b: &Path, table: &str, columns: &str) -> (i64, i64, i64, i64) {
    let opts = SqliteConnectOptions::new().filename(a).read_only(true);
    let db = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ATTACH DATABASE '{}' AS other",
        b.display()
    )))
    .execute(&db)
    .await
    .unwrap();
    let count = |sql: String| {
        let db = db.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql))
                .fetch_one(&db)
                .await
                .unwrap()
        }
    };
    let only_a = count(format!(
        "SELECT COUNT(*) FROM (SELECT {columns} FROM main.{table} EXCEPT SELECT {columns} FROM other.{table})"
    ))
    .await;
    let only_b = count(format!(
        "SELECT COUNT(*) FROM (SELECT {columns} FROM other.{table} EXCEPT SELECT {columns} FROM main.{table})"
    ))
    .await;
    let n_a = count(format!("SELECT COUNT(*) FROM main.{table}")).await;
    let n_b = count(format!("SELECT COUNT(*) FROM other.{table}")).await;
    db.close().await;
    (only_a, only_b, n_a, n_b)
}

/// A daemon that has written into every table: a death alerted and delivered (by e-mail
/// too, which groups, so a release is noted) and decided on by a dry run of remediation, a callback stored with its forward, a job watched from the CLI and
/// a silence. Still running when this returns.
async fn daemon_with_history() -> (TestApp, Receiver, RelayReceiver, SmtpServer) {
    let sim = start_sim(static_sim(2)).await;
    let hook = Receiver::start(Some(SECRET)).await;
    // E-mail groups: its release is noted (group_releases).
    let smtp = crate::support::smtp::SmtpServer::start();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let forward_addr = listener.local_addr().unwrap();
    let forward = RelayReceiver::serve(listener);
    let mut cfg = AppConfig::new(&sim, 2);
    cfg.listen = "127.0.0.1:0".into();
    cfg.extra = format!(
        // A dry run of remediation: the death is decided on (a row), nothing is created.
        "{}\n[remediate]\nenabled = true\ndry_run = true\n\n[callback]\nlisten = \"127.0.0.1:0\"\n\n[[apps]]\napp_id = \"demo-app\"\nauth_key = \"{APP_KEY}\"\nforward_to = \"http://{forward_addr}/relay\"\n",
        notify_toml(Some(hook.url().as_str()), Some(smtp.addr()), "")
            .replace("group_wait = \"0s\"", "group_wait = \"1s\""),
    );
    let app = TestApp::spawn(&cfg, 2).await;
    set_state(&sim, "job-0000", "STOPPED", Some("INTERNAL_ERROR"));
    let addr = app.callback_addr().await;
    let body = event("job-0001", "RECORD_FILE_COMPLETE", "");
    let sig = sign(&Secret::new(APP_KEY), "r1", "1700000000", body.as_bytes());
    let status = reqwest::Client::new()
        .post(format!("http://{addr}/rtc/record-callback"))
        .header(HEADER_RAND, "r1")
        .header(HEADER_TIMESTAMP, "1700000000")
        .header(HEADER_SIGNATURE, sig)
        .body(body)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    let (code, _, err) = app.run_cmd(&["watch", "demo-app", "job-extra"]).await;
    assert_eq!(code, 0, "{err}");
    // Watched and unwatched again: the unwatch is remembered (unwatched).
    for cmd in ["watch", "unwatch"] {
        let (code, _, err) = app.run_cmd(&[cmd, "demo-app", "job-gone"]).await;
        assert_eq!(code, 0, "{cmd}: {err}");
    }
    let (code, _, err) = app
        .run_cmd(&[
            "silence",
            "add",
            "--job",
            "job-9",
            "--for",
            "1h",
            "--comment",
            "c",
        ])
        .await;
    assert_eq!(code, 0, "{err}");
    for (what, sql) in [
        (
            "the alert delivered",
            "SELECT COUNT(*) FROM deliveries WHERE state = 'sent'",
        ),
        (
            "the forward sent",
            "SELECT COUNT(*) FROM forwards WHERE state = 'sent'",
        ),
        (
            "the group release noted",
            "SELECT COUNT(*) FROM group_releases",
        ),
        (
            "the death's remediation decided",
            "SELECT COUNT(*) FROM remediations",
        ),
    ] {
        wait_for(what, T, || async {
            (app.scalar(sql).await >= 1).then_some(())
        })
        .await;
    }
    (app, hook, forward, smtp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_goes_to_postgres_and_back_whole_and_a_second_run_copies_nothing() {
    let (mut app, _hook, _forward, _smtp) = daemon_with_history().await;
    let source = app.db_path.display().to_string();
    let pg = crate::test_pg::fresh_database().await;

    // While the daemon owns the file: refused, naming it and the fix; nothing copied.
    let (code, out, err) = copy(&app, &source, &pg).await;
    assert_eq!(code, 75, "{out}{err}");
    assert!(err.contains("another recwatch owns the database"), "{err}");
    assert!(
        err.contains("stop the `recwatch run` that owns it"),
        "{err}"
    );
    assert!(
        !err.contains("postgres://postgres@"),
        "the URL is never printed whole: {err}"
    );
    app.stop().await;

    let (code, out, err) = copy(&app, &source, &pg).await;
    assert_eq!(code, 0, "{err}");
    let first = copied(&out);
    let names: Vec<&str> = first.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        names,
        COMPARED.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
        "{out}"
    );
    for (table, n) in &first {
        if table != "episodes" {
            assert!(*n >= 1, "{table} copied nothing: {out}");
        }
    }
    let total: u64 = first.iter().map(|(_, n)| n).sum();
    assert!(out.contains(&format!("copied {total} rows from ")), "{out}");

    let (code, out, err) = copy(&app, &source, &pg).await;
    assert_eq!(code, 0, "{err}");
    assert!(copied(&out).iter().all(|(_, n)| *n == 0), "{out}");
    assert!(out.contains("copied 0 rows"), "{out}");

    let back = app.dir.path().join("back").join("recwatch.db");
    let back_arg = back.display().to_string();
    for run in 0..2 {
        let (code, out, err) = copy(&app, &pg, &back_arg).await;
        assert_eq!(code, 0, "{err}");
        assert!(
            err.contains("go on writing while this copies"),
            "the risk is said: {err}"
        );
        if run == 1 {
            assert!(out.contains("copied 0 rows"), "{out}");
        }
    }
    for (table, columns) in COMPARED {
        let (only_a, only_b, n_a, n_b) = differences(&app.db_path, &back, table, columns).await;
        assert_eq!(
            (only_a, only_b),
            (0, 0),
            "{table}: rows differ after the round trip"
        );
        assert_eq!(n_a, n_b, "{table}");
    }
    let claimed_in = |path: std::path::PathBuf| async move {
        let opts = SqliteConnectOptions::new().filename(&path).read_only(true);
        let db = SqlitePoolOptions::new().connect_with(opts).await.unwrap();
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM deliveries WHERE claimed_epoch IS NOT NULL")
                .fetch_one(&db)
                .await
                .unwrap();
        db.close().await;
        n
    };
    assert!(
        claimed_in(app.db_path.clone()).await > 0,
        "the source's sends were claimed"
    );
    assert_eq!(
        claimed_in(back.clone()).await,
        0,
        "a copied delivery is unclaimed"
    );
    // The copy is a recwatch database: its alerts read as the original's.
    let (_, original, _) = app.run_cmd(&["alerts", "--json"]).await;
    let mut there = app.command(&["alerts", "--json"]);
    there.env("RECWATCH_STORAGE__PATH", &back);
    let there = tokio::process::Command::from(there).output().await.unwrap();
    assert!(there.status.success());
    assert_eq!(String::from_utf8_lossy(&there.stdout), original);
    assert!(original.contains("job-0000"), "{original}");
}

#[tokio::test]
async fn the_same_database_twice_or_a_missing_source_is_refused() {
    let sim = start_sim(static_sim(1)).await;
    let app = TestApp::new(&AppConfig::new(&sim, 1));
    let missing = app.dir.path().join("nothing.db").display().to_string();
    let (code, _, err) = copy(
        &app,
        &missing,
        &app.dir.path().join("to.db").display().to_string(),
    )
    .await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("there is no database at"), "{err}");
    assert!(
        !Path::new(&missing).exists(),
        "a missing source is not made"
    );
    let (code, _, err) = copy(
        &app,
        "postgres://u:pw@127.0.0.1:1/x",
        "postgres://u:pw@127.0.0.1:1/x",
    )
    .await;
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("the same database"), "{err}");
}
