//! Config that cannot work is refused by `check` (and by `run`, with the same exit code);
//! what `run` would fail on is found by `check`; secrets in a broken file stay masked; the
//! database is private; printing commands survive a closed pipe.

use crate::harness::*;
use std::io::BufRead;
use std::os::unix::fs::MetadataExt;
use std::process::Stdio;

/// The config file with `from` replaced by `to` (which must change something).
fn rewrite(app: &TestApp, from: &str, to: &str) {
    let text = std::fs::read_to_string(&app.config_path).unwrap();
    assert!(text.contains(from), "{from:?} is not in the config");
    std::fs::write(&app.config_path, text.replacen(from, to, 1)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dot_job_id_is_refused_with_78_before_any_request() {
    let sim = start_sim(static_sim(1)).await;
    let mut cfg = AppConfig::new(&sim, 1);
    cfg.extra = "\n[[jobs]]\napp_id = \"demo-app\"\njob_id = \".\"\nname = \"porch\"\n".into();
    let app = TestApp::new(&cfg);
    for cmd in ["check", "run", "poll-once"] {
        let (code, _, err) = app.run_cmd(&[cmd]).await;
        assert_eq!(code, 78, "{cmd}: {err}");
        assert!(err.contains("jobs[0] (\"porch\").job_id"), "{cmd}: {err}");
        assert!(err.contains("\".\" is not an id"), "{cmd}: {err}");
    }
    assert_eq!(sim.stats().requests, 0, "nothing was polled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misspelt_key_in_jobs_is_named_not_a_missing_one() {
    let sim = start_sim(static_sim(1)).await;
    let cfg = AppConfig::new(&sim, 1);
    let app = TestApp::new(&cfg);
    rewrite(&app, "app_id = \"demo-app\"", "appid = \"demo-app\"");
    let (code, _, err) = app.run_cmd(&["check"]).await;
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("unknown key appid"), "{err}");
    assert!(err.contains("did you mean app_id?"), "{err}");
    assert!(!err.contains("missing"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_environment_override_error_names_the_variable() {
    let sim = start_sim(static_sim(1)).await;
    let cfg = AppConfig::new(&sim, 1);
    let app = TestApp::new(&cfg);
    let out = tokio::process::Command::from(app.command(&["check"]))
        .env("RECWATCH_API__RATE_LIMIT", "lots")
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(
        err.contains("RECWATCH_API__RATE_LIMIT (overrides api.rate_limit)"),
        "{err}"
    );
    assert!(
        !err.contains(&app.config_path.display().to_string()),
        "the file is not where the value came from: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_syntax_error_on_a_secret_line_never_shows_the_secret() {
    let sim = start_sim(static_sim(1)).await;
    let cfg = AppConfig::new(&sim, 1);
    let mut app = TestApp::new(&cfg);
    let good = std::fs::read_to_string(&app.config_path).unwrap();
    // Half-typed, as an editor saves it mid-way: the closing quote is missing.
    let broken = good.replace(
        &format!("secret_key = \"{SK}\""),
        &format!("secret_key = \"{SK}"),
    );
    assert_ne!(broken, good);
    std::fs::write(&app.config_path, &broken).unwrap();
    for cmd in ["check", "run"] {
        let (code, out, err) = app.run_cmd(&[cmd]).await;
        assert_eq!(code, 78, "{cmd}: {err}");
        assert!(err.contains("TOML syntax at line"), "{cmd}: {err}");
        assert!(err.contains("secret_key = ***"), "{cmd}: {err}");
        assert!(!err.contains(SK) && !out.contains(SK), "{cmd}: {err}");
    }
    // The file watcher reloads on every save: the refused reload's log line is masked too.
    std::fs::write(&app.config_path, &good).unwrap();
    app.start();
    app.wait_running(1).await;
    std::fs::write(&app.config_path, &broken).unwrap();
    app.wait_log("refused, keeping the previous configuration", T)
        .await;
    let log = app.log_text();
    assert!(log.contains("secret_key = ***"), "{log}");
    assert!(!log.contains(SK), "the secret reached the log:\n{log}");
    assert!(app.stop().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_piped_into_head_ends_quietly() {
    let sim = start_sim(static_sim(1)).await;
    let mut cfg = AppConfig::new(&sim, 1);
    // Far more output than a pipe buffer holds, so check is still writing when head leaves.
    cfg.jobs = (0..4000).map(recwatch_sim::job_id).collect();
    let app = TestApp::new(&cfg);
    let mut child = app
        .command(&["check"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    {
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        stdout.read_line(&mut first).unwrap();
        // `head -1` exits here: the read end of the pipe closes.
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(first.starts_with("configuration OK"), "{first}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(0), "{err}");
}

/// Runs the binary with `args` under umask 022 (the usual default, which makes 0644 files).
fn under_umask_022(app: &TestApp, args: &[&str]) -> std::process::Command {
    let mut c = std::process::Command::new("sh");
    c.arg("-c")
        .arg("umask 022 && exec \"$@\"")
        .arg("sh")
        .arg(BIN)
        .arg("--config")
        .arg(&app.config_path)
        .args(args)
        .env_remove("RUST_LOG");
    c
}

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_is_private_whatever_the_umask() {
    let sim = start_sim(static_sim(1)).await;
    let cfg = AppConfig::new(&sim, 1);
    let app = TestApp::new(&cfg);
    let dir = app.db_path.parent().unwrap().to_path_buf();
    assert!(!dir.exists(), "recwatch creates the state directory");
    let parent_mode = mode(app.dir.path());
    let mut child = tokio::process::Command::from(under_umask_022(&app, &["run"]))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // While it runs, SQLite's -wal and -shm files exist beside the database.
    let wal = app.db_path.with_extension("db-wal");
    let shm = app.db_path.with_extension("db-shm");
    wait_for("the database and its WAL", T, || {
        let there = app.db_path.exists() && wal.exists() && shm.exists();
        async move { there.then_some(()) }
    })
    .await;
    app.wait_running(1).await;
    assert_eq!(mode(&dir), 0o700, "state directory");
    for f in [&app.db_path, &wal, &shm] {
        assert_eq!(mode(f), 0o600, "{}", f.display());
    }
    // The directory above existed before: its mode stays what it was.
    assert_eq!(mode(app.dir.path()), parent_mode);
    child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_tells_what_run_would_fail_on_with_its_exit_code() {
    let sim = start_sim(static_sim(1)).await;
    // Storage under a regular file: it can never be created (root ignores permission bits,
    // not this).
    let cfg = AppConfig::new(&sim, 1);
    let app = TestApp::new(&cfg);
    let file = app.dir.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    rewrite(
        &app,
        &format!("path = \"{}\"", app.db_path.display()),
        &format!("path = \"{}\"", file.join("recwatch.db").display()),
    );
    for cmd in ["check", "run"] {
        let (code, _, err) = app.run_cmd(&[cmd]).await;
        assert_eq!(code, 73, "{cmd}: {err}");
        assert!(err.contains("not a directory"), "{cmd}: {err}");
    }

    // http.listen held by another process (this test), not by a recwatch.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap();
    let mut cfg = AppConfig::new(&sim, 1);
    cfg.listen = addr.to_string();
    let app = TestApp::new(&cfg);
    for cmd in ["check", "run"] {
        let (code, _, err) = app.run_cmd(&[cmd]).await;
        assert_eq!(code, 69, "{cmd}: {err}");
        assert!(
            err.contains(&format!("http.listen {addr} is in use")),
            "{cmd}: {err}"
        );
    }
    drop(held);
    let (code, out, err) = app.run_cmd(&["check"]).await;
    assert_eq!(code, 0, "free again: {out}{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_warns_about_the_test_escape_hatch_and_a_public_listener() {
    let sim = start_sim(static_sim(1)).await;
    let mut cfg = AppConfig::new(&sim, 1);
    cfg.api_extra = "auth_backoff = \"1s\"\n".into();
    let app = TestApp::new(&cfg);
    let (code, _, err) = app.run_cmd(&["check"]).await;
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("api.auth_backoff"), "{err}");
    assert!(err.contains("allow_short_auth_backoff"), "{err}");

    cfg.api_extra = "auth_backoff = \"1s\"\nallow_short_auth_backoff = true\n".into();
    // An address of no interface here: nothing is bound, and `run` could not use it (78).
    cfg.listen = "192.0.2.1:9187".into();
    app.rewrite_config(&cfg);
    let (code, out, err) = app.run_cmd(&["check"]).await;
    assert_eq!(code, 78, "{out}{err}");
    assert!(err.contains("not an address of this machine"), "{err}");
    assert!(
        out.contains("WARNING    api.allow_short_auth_backoff is set"),
        "{out}"
    );
    assert!(
        out.contains("WARNING    http.listen 192.0.2.1:9187 is not a loopback address"),
        "{out}"
    );
}
