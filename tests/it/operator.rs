//! What an operator meets at the command line (issue 22): tables that cannot be forged by an
//! API's text, a backup that is a database, `check` seeing what `run` needs (the callback
//! listener, the apps, the credentials online), misspelt environment variables named, a
//! silence on nothing warned, unknown names on the command line a usage error (64).

use crate::harness::*;
use crate::push::APP_KEY;
use crate::support::ClosedPort;

/// Tables in a SQLite file opened on its own (no `-wal` beside it), and the jobs rows in it.
async fn tables_and_jobs(path: &std::path::Path) -> (i64, i64) {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .immutable(true);
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .unwrap();
    let tables: i64 = sqlx::query_scalar("SELECT count(*) FROM sqlite_master WHERE type = 'table'")
        .fetch_one(&pool)
        .await
        .unwrap();
    let jobs: i64 = if tables > 0 {
        sqlx::query_scalar("SELECT count(*) FROM jobs")
            .fetch_one(&pool)
            .await
            .unwrap()
    } else {
        0
    };
    pool.close().await;
    (tables, jobs)
}

/// Item 8: an API description with LF, ESC and NUL is shown escaped by `history` and
/// `alerts`: one row stays one line, and nothing reaches the terminal raw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_from_the_api_are_escaped_in_every_table() {
    let sim = start_sim(static_sim(1)).await;
    let mut stopped = snap("job-0000", "STOPPED", Some("INTERNAL_ERROR"));
    stopped.description = Some("died\nFORGED ROW\u{1b}[2J\u{0}end".into());
    sim.set_job("demo-app", "job-0000", stopped);
    let app = TestApp::new(&AppConfig::new(&sim, 1));
    let (_, out, err) = app.run_cmd(&["poll-once"]).await;
    assert!(out.contains("STOPPED"), "{out}{err}");
    for cmd in ["history", "alerts", "status"] {
        let (code, out, err) = app.run_cmd(&[cmd]).await;
        assert_eq!(code, 0, "{cmd}: {err}");
        assert!(
            !out.contains('\u{1b}') && !out.contains('\u{0}'),
            "{cmd} wrote a raw control character: {out:?}"
        );
        assert!(
            !out.lines().any(|l| l.starts_with("FORGED ROW")),
            "{cmd}: a description forged a line: {out}"
        );
    }
    let (_, out, _) = app.run_cmd(&["history"]).await;
    assert!(
        out.contains("died\\nFORGED ROW\\u{1b}[2J\\0end"),
        "the description is shown, escaped: {out}"
    );
}

/// Item 14: after a clean stop the database file alone has every table (the WAL was
/// checkpointed), and `recwatch backup` beside a running daemon makes a file that opens with
/// every table and the rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_leaves_a_whole_file_and_backup_works_beside_run() {
    let sim = start_sim(static_sim(3)).await;
    let mut app = TestApp::new(&AppConfig::new(&sim, 3));
    app.start();
    app.wait_running(3).await;

    // A backup while `run` polls and writes.
    let backup = app.dir.path().join("backup.db");
    let (code, out, err) = app.run_cmd(&["backup", backup.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("quick_check ok"), "{out}");
    let (tables, jobs) = tables_and_jobs(&backup).await;
    assert!(tables >= 10, "the backup has every table: {tables}");
    assert_eq!(jobs, 3, "and the rows");
    // Never over an existing file.
    let (code, _, err) = app.run_cmd(&["backup", backup.to_str().unwrap()]).await;
    assert_eq!(code, 73, "{err}");
    assert!(err.contains("never overwrites"), "{err}");

    assert!(app.stop().await.success(), "{}", app.log_text());
    // The file alone, as `cp recwatch.db` would take it after the stop.
    let copy = app.dir.path().join("copy.db");
    std::fs::copy(&app.db_path, &copy).unwrap();
    let (tables, jobs) = tables_and_jobs(&copy).await;
    assert!(
        tables >= 10,
        "a copy after a clean stop has the tables: {tables}"
    );
    assert_eq!(jobs, 3);
}

/// Item 14, for `poll-once` too (it owns the database as `run` does): the file alone is the
/// whole database once it exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_once_leaves_a_whole_file() {
    let sim = start_sim(static_sim(2)).await;
    let app = TestApp::new(&AppConfig::new(&sim, 2));
    let (code, out, err) = app.run_cmd(&["poll-once"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let copy = app.dir.path().join("copy.db");
    std::fs::copy(&app.db_path, &copy).unwrap();
    let (tables, jobs) = tables_and_jobs(&copy).await;
    assert!(
        tables >= 10,
        "a copy after poll-once has the tables: {tables}"
    );
    assert_eq!(jobs, 2);
}

/// Item 14: on PostgreSQL `backup` points at pg_dump (usage, 64), nothing written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_on_postgresql_says_pg_dump() {
    let sim = start_sim(static_sim(1)).await;
    let mut cfg = AppConfig::new(&sim, 1);
    cfg.storage_url = Some("postgres://recwatch@127.0.0.1:1/recwatch".into());
    let app = TestApp::new(&cfg);
    let path = app.dir.path().join("b.db");
    let (code, _, err) = app.run_cmd(&["backup", path.to_str().unwrap()]).await;
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("pg_dump"), "{err}");
    assert!(!path.exists());
}

/// Item 16: `check` shows [callback], [[apps]], [remediate] and [heartbeat], tries to bind
/// callback.listen (69 when taken, as `run`), and never shows a key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_shows_what_run_needs_and_binds_the_callback_listener() {
    let sim = start_sim(static_sim(1)).await;
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap();
    let mut cfg = AppConfig::new(&sim, 1);
    cfg.extra = format!(
        "\n[callback]\nlisten = \"{addr}\"\n\n[[apps]]\napp_id = \"demo-app\"\nauth_key = \"{APP_KEY}\"\nname = \"studio\"\ndiscover = true\n\n[remediate]\nenabled = true\ndry_run = true\n\n[heartbeat]\nurl = \"https://hc.example/ping/secret-uuid\"\n"
    );
    let app = TestApp::new(&cfg);
    for cmd in ["check", "run"] {
        let (code, _, err) = app.run_cmd(&[cmd]).await;
        assert_eq!(code, 69, "{cmd}: {err}");
        assert!(
            err.contains(&format!("callback.listen {addr} is in use")),
            "{cmd}: {err}"
        );
    }
    drop(held);
    let (code, out, err) = app.run_cmd(&["check"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("callback   http://{addr}/rtc/record-callback")),
        "{out}"
    );
    assert!(out.contains("app        demo-app (\"studio\")"), "{out}");
    assert!(out.contains("discover on"), "{out}");
    assert!(out.contains("remediate  on (dry run"), "{out}");
    assert!(
        out.contains("heartbeat  GET https://hc.example/***"),
        "{out}"
    );
    for secret in [APP_KEY, "secret-uuid"] {
        assert!(
            !out.contains(secret) && !err.contains(secret),
            "{secret} shown: {out}"
        );
    }
}

/// Item 16: an auth_key RTC's console would not take (under 32 characters) is refused by
/// `check` and `run` (78), the key never shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_auth_key_is_refused_by_check_and_run() {
    let sim = start_sim(static_sim(1)).await;
    let mut cfg = AppConfig::new(&sim, 1);
    cfg.extra =
        "\n[callback]\nlisten = \"127.0.0.1:0\"\n\n[[apps]]\napp_id = \"demo-app\"\nauth_key = \"too-short-key\"\n"
            .into();
    let app = TestApp::new(&cfg);
    for cmd in ["check", "run"] {
        let (code, _, err) = app.run_cmd(&[cmd]).await;
        assert_eq!(code, 78, "{cmd}: {err}");
        assert!(
            err.contains("apps[0] (\"demo-app\").auth_key"),
            "{cmd}: {err}"
        );
        assert!(err.contains("32 to 64"), "{cmd}: {err}");
        assert!(!err.contains("too-short-key"), "{cmd}: {err}");
    }
}

/// Item 16: `check --online` makes one signed request and names what works or what is wrong:
/// good credentials, a wrong secret key, an HTML endpoint, a refused connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_online_names_what_is_wrong() {
    let sim = start_sim(static_sim(1)).await;
    let mut cfg = AppConfig::new(&sim, 1);
    let app = TestApp::new(&cfg);
    let (code, out, err) = app.run_cmd(&["check", "--online"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("endpoint and credentials work"), "{out}");
    assert!(sim.stats().requests >= 1, "a request was made");

    cfg.secret_key = "not-the-secret".into();
    app.rewrite_config(&cfg);
    let (code, out, err) = app.run_cmd(&["check", "--online"]).await;
    assert_eq!(code, 78, "{out}");
    assert!(out.contains("credentials refused"), "{out}");
    // `run` would start (and alert api_unhealthy): the problem is told as the API's.
    assert!(
        err.contains("the API check failed") && !err.contains("`run` would fail"),
        "{err}"
    );
    assert!(!out.contains("not-the-secret"), "{out}");

    // A web server that answers every path with a page.
    let html = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let html_addr = html.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = html.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let body = "<!DOCTYPE html><html><body>Welcome to nginx!</body></html>";
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(answer.as_bytes()).await;
            });
        }
    });
    cfg.secret_key = SK.into();
    cfg.endpoint = format!("http://{html_addr}");
    app.rewrite_config(&cfg);
    let (code, out, _) = app.run_cmd(&["check", "--online"]).await;
    assert_eq!(code, 78, "{out}");
    assert!(out.contains("answers with an HTML page"), "{out}");

    let closed = ClosedPort::new();
    cfg.endpoint = format!("http://{}", closed.addr());
    app.rewrite_config(&cfg);
    let (code, out, _) = app.run_cmd(&["check", "--online"]).await;
    assert_eq!(code, 69, "{out}");
    assert!(out.contains("cannot connect"), "{out}");
}

/// Items 11 and 15: `check` warns about `notify = []` and about RECWATCH_* variables that set
/// nothing, with the override they most likely meant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_warns_about_silent_lists_and_misspelt_variables() {
    let sim = start_sim(static_sim(1)).await;
    let mut cfg = AppConfig::new(&sim, 0);
    cfg.extra =
        "\n[[jobs]]\napp_id = \"demo-app\"\njob_id = \"job-0000\"\nname = \"porch\"\nnotify = []\n"
            .into();
    let app = TestApp::new(&cfg);
    let out = tokio::process::Command::from(app.command(&["check"]))
        .env("RECWATCH_POLL_INTERVAL", "10s")
        .env("RECWATCH_LOGLEVEL", "debug")
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains(
            "jobs[0] (\"porch\") has notify = []: its alerts are recorded but sent to no channel"
        ),
        "{text}"
    );
    for (var, meant) in [
        ("RECWATCH_POLL_INTERVAL", "RECWATCH_POLL__INTERVAL"),
        ("RECWATCH_LOGLEVEL", "RECWATCH_LOG__LEVEL"),
    ] {
        assert!(
            text.lines().any(|l| l.contains("WARNING")
                && l.contains(var)
                && l.ends_with(&format!("did you mean {meant}?"))),
            "{var}: {text}"
        );
    }
    assert!(
        !text.contains("10s") && !text.contains("debug"),
        "values never shown: {text}"
    );
}

/// Item 19: a silence on a job nobody watches is accepted with a warning, on the command line
/// and in the API's answer; an unknown channel on the command line is a usage error (64).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silence_on_nothing_watched_is_warned_and_unknown_names_are_usage_errors() {
    let sim = start_sim(static_sim(1)).await;
    let mut cfg = AppConfig::new(&sim, 1);
    cfg.listen = "127.0.0.1:0".into();
    // Inside [http], the harness's last section.
    cfg.extra = "token = \"write-token-0123456789\"\n".into();
    let mut app = TestApp::new(&cfg);
    let add = |job: &'static str| {
        [
            "silence",
            "add",
            "--job",
            job,
            "--for",
            "1h",
            "--comment",
            "test",
        ]
    };
    let (code, _, err) = app.run_cmd(&add("job-0000")).await;
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("warning"), "a watched job: {err}");
    let (code, _, err) = app.run_cmd(&add("job-typo")).await;
    assert_eq!(code, 0, "accepted: {err}");
    assert!(
        err.contains("warning: no watched job matches job \"job-typo\""),
        "{err}"
    );

    app.start();
    let http = app.http_addr().await;
    let answer: serde_json::Value = reqwest::Client::new()
        .post(format!("http://{http}/api/v1/silences"))
        .bearer_auth("write-token-0123456789")
        .json(&serde_json::json!({"job_id": "job-typo", "for": "1h", "comment": "x"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        answer["warning"]
            .as_str()
            .is_some_and(|w| w.starts_with("no watched job matches job \"job-typo\"")),
        "{answer}"
    );
    app.stop().await;

    let (code, _, err) = app.run_cmd(&["test-alert", "--channel", "nope"]).await;
    assert_eq!(code, 64, "{err}");
    let (code, _, err) = app
        .run_cmd(&["watch", "demo-app", "job-9", "--notify", "nope"])
        .await;
    assert_eq!(code, 64, "{err}");
}

/// Item 16: a `[callback]` section added by a reload is not served until a restart, and the
/// log says so (as it does for `http.listen`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_section_added_by_reload_says_it_needs_a_restart() {
    let sim = start_sim(static_sim(1)).await;
    let mut cfg = AppConfig::new(&sim, 1);
    let mut app = TestApp::spawn(&cfg, 1).await;
    cfg.extra = format!(
        "\n[callback]\nlisten = \"127.0.0.1:0\"\n\n[[apps]]\napp_id = \"demo-app\"\nauth_key = \"{APP_KEY}\"\n"
    );
    app.rewrite_config(&cfg);
    app.wait_log(
        "callback.listen changed: the record-callback receiver is bound at start, so this takes effect at the next restart",
        std::time::Duration::from_secs(60),
    )
    .await;
    assert!(app.stop().await.success(), "{}", app.log_text());
}
