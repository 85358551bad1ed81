//! Never blind: one poisoned answer, a full disk, a deleted database, a second daemon or a
//! panic must not stop recwatch from seeing and alerting, and `/readyz` must say when it
//! cannot do its job. The disk tests mount a real small tmpfs, so they need root (CI runs as
//! root); without it they say so and return.

use crate::core::wait_states;
use crate::harness::*;
use crate::support::receiver::Receiver;
use recwatch_sim::job_id;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

async fn readyz(addr: SocketAddr) -> (u16, String) {
    let r = reqwest::get(format!("http://{addr}/readyz")).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Waits until `/readyz` answers `code` with a body containing `needle`; returns the body.
async fn wait_readyz(addr: SocketAddr, code: u16, needle: &str) -> String {
    let what = format!("/readyz to answer {code} with {needle:?}");
    wait_for(&what, T, || async {
        let (status, body) = readyz(addr).await;
        (status == code && body.contains(needle)).then_some(body)
    })
    .await
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A mount made by a test, lazily unmounted when dropped (even if the test fails).
struct Mount(PathBuf);

impl Mount {
    fn run(args: &[&str]) {
        let out = std::process::Command::new("mount")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mount {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A tmpfs of `size` (e.g. "4m") at `at`.
    fn tmpfs(at: &Path, size: &str) -> Mount {
        std::fs::create_dir_all(at).unwrap();
        Mount::run(&[
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size}"),
            "tmpfs",
            at.to_str().unwrap(),
        ]);
        Mount(at.to_path_buf())
    }

    /// `from` seen read-only at `at`.
    fn read_only_bind(from: &Path, at: &Path) -> Mount {
        std::fs::create_dir_all(at).unwrap();
        Mount::run(&["--bind", from.to_str().unwrap(), at.to_str().unwrap()]);
        let m = Mount(at.to_path_buf());
        Mount::run(&["-o", "remount,bind,ro", at.to_str().unwrap()]);
        m
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Fills the file system holding `dir` with one file until it is full; returns the file.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    loop {
        if let Err(e) = f.write_all(&chunk) {
            assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
            break;
        }
    }
    // The last pages, smaller than a chunk.
    while f.write_all(&[0u8; 512]).is_ok() {}
    let _ = f.sync_all();
    path
}

async fn alerts_for(hook: &Receiver, job: &str, rule: &str) -> usize {
    hook.received()
        .iter()
        .filter(|r| {
            r.alert.rule.as_str() == rule && r.alert.job.as_ref().is_some_and(|j| j.job_id == job)
        })
        .count()
}

async fn wait_alert(hook: &Receiver, job: &str, rule: &str) {
    wait_for(&format!("a {rule} alert for {job}"), T, || async {
        (alerts_for(hook, job, rule).await > 0).then_some(())
    })
    .await
}

/// 2^64-1 and 1e300 as `max_idle_time`, on jobs stuck in INIT (where the stuck_init rule adds
/// it to `init_grace`), used to panic the shared writer: nothing was written for any job
/// after that. A job dying beside them must still be recorded and alerted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poisoned_max_idle_time_beside_a_dying_job_still_alerts_the_death() {
    let sim = start_sim(static_sim(3)).await;
    let mut poisoned = snap("job-0000", "INIT", None);
    poisoned.max_idle_time = Some(u64::MAX);
    sim.set_job("demo-app", "job-0000", poisoned);
    sim.set_job_body(
        "demo-app",
        "job-0001",
        r#"{"app_id": "demo-app", "job_id": "job-0001", "state": "INIT",
            "create_time": "2026-01-01T00:00:00.000Z", "max_idle_time": 1e300}"#,
    );
    let hook = Receiver::start(Some(SECRET)).await;
    let mut cfg = AppConfig::new(&sim, 3);
    cfg.listen = "127.0.0.1:0".into();
    // The largest grace the config allows, so the sum overflows whatever the idle time.
    cfg.extra = notify_toml(Some(hook.url().as_str()), None, "init_grace = \"30d\"");
    let mut app = TestApp::new(&cfg);
    app.start();
    let addr = app.http_addr().await;
    wait_states(&app, &["job-0000".into(), "job-0001".into()], "INIT").await;
    wait_states(&app, &["job-0002".into()], "RUNNING").await;

    set_state(&sim, "job-0002", "STOPPED", Some("INTERNAL_ERROR"));
    wait_alert(&hook, "job-0002", "stopped_unexpectedly").await;
    // Every job's first sight, and the death: nothing was lost to the poisoned values.
    let mut got = app.transitions().await;
    got.sort();
    let t = |job: &str, from: Option<&str>, to: &str, reason: Option<&str>| {
        (
            job.to_string(),
            from.map(String::from),
            to.to_string(),
            reason.map(String::from),
        )
    };
    assert_eq!(
        got,
        vec![
            t("job-0000", None, "INIT", None),
            t("job-0001", None, "INIT", None),
            t("job-0002", None, "RUNNING", None),
            t(
                "job-0002",
                Some("RUNNING"),
                "STOPPED",
                Some("INTERNAL_ERROR")
            ),
        ]
    );
    // A job in INIT for a second is not stuck for 2^64-1 s: no stuck_init alert.
    assert_eq!(alerts_for(&hook, "job-0000", "stuck_init").await, 0);
    assert_eq!(alerts_for(&hook, "job-0001", "stuck_init").await, 0);
    // The poisoned jobs go on being polled and written.
    let polled = app
        .scalar("SELECT COUNT(*) FROM jobs WHERE job_id IN ('job-0000','job-0001') AND last_polled_at IS NOT NULL")
        .await;
    assert_eq!(polled, 2);
    assert_eq!(readyz(addr).await, (200, "ready\n".to_string()));
    assert!(app.running());
    assert!(app.stop().await.success());
    let log = app.log_text();
    assert!(!log.contains("panic"), "nothing panicked:\n{log}");
}

/// The disk fills while a job dies: recwatch logs SQLite's real error, keeps polling, says
/// so on /readyz, and once space is freed writes the transition and delivers its alert by
/// itself. (Before: the writer broke for good with "attempted to call begin_with at non-zero
/// transaction depth".)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_then_freed_delivers_the_owed_alert_and_readyz_says_why_meanwhile() {
    if !is_root() {
        eprintln!("skipped: mounting a small tmpfs needs root (CI runs as root)");
        return;
    }
    let sim = start_sim(static_sim(3)).await;
    let hook = Receiver::start(Some(SECRET)).await;
    let mut cfg = AppConfig::new(&sim, 3);
    cfg.listen = "127.0.0.1:0".into();
    cfg.extra = notify_toml(Some(hook.url().as_str()), None, "");
    let mut app = TestApp::new(&cfg);
    // The database directory is a 4 MiB file system of its own.
    let _mount = Mount::tmpfs(app.db_path.parent().unwrap(), "4m");
    app.start();
    let addr = app.http_addr().await;
    let jobs: Vec<String> = (0..3).map(job_id).collect();
    wait_states(&app, &jobs, "RUNNING").await;
    wait_readyz(addr, 200, "ready").await;

    let filler = fill(app.db_path.parent().unwrap());
    set_state(&sim, "job-0001", "STOPPED", Some("INTERNAL_ERROR"));
    let body = wait_readyz(addr, 503, "the disk is full (SQLITE_FULL)").await;
    assert!(body.contains("cannot be written"), "{body}");
    // Polling goes on while the disk is full: every job is asked again, more than once.
    let asked = sim.stats().requests;
    wait_for("polling to go on while the disk is full", T, || {
        let n = sim.stats().requests;
        async move { (n >= asked + 12).then_some(()) }
    })
    .await;
    assert_eq!(readyz(addr).await.0, 503, "still not ready while full");
    assert_eq!(
        app.job_row("job-0001").await.unwrap().0.as_deref(),
        Some("RUNNING"),
        "nothing could be written while the disk was full"
    );
    assert_eq!(
        alerts_for(&hook, "job-0001", "stopped_unexpectedly").await,
        0
    );

    std::fs::remove_file(&filler).unwrap();
    wait_alert(&hook, "job-0001", "stopped_unexpectedly").await;
    wait_readyz(addr, 200, "ready").await;
    assert!(app.running());
    assert!(app.stop().await.success());
    assert_eq!(
        alerts_for(&hook, "job-0001", "stopped_unexpectedly").await,
        1
    );
    assert_eq!(
        app.transitions()
            .await
            .into_iter()
            .filter(|t| t.0 == "job-0001")
            .map(|t| t.2)
            .collect::<Vec<_>>(),
        vec!["RUNNING", "STOPPED"]
    );
    let log = app.log_text();
    assert!(log.contains("SQLITE_FULL"), "the real cause is logged");
    assert!(log.contains("the database accepts writes again"), "{log}");
    assert!(
        !log.contains("non-zero transaction depth"),
        "the writer recovered its connection"
    );
}

/// `status` of every accepted api_unhealthy delivery, in the order they arrived.
fn api_notices(hook: &Receiver) -> Vec<String> {
    hook.received()
        .iter()
        .filter(|r| r.alert.rule.as_str() == "api_unhealthy")
        .map(|r| r.alert.status.as_str().to_string())
        .collect()
}

/// How many times the daemon has tried to write the API's health and been refused.
fn health_write_refusals(app: &TestApp) -> usize {
    app.log_text()
        .lines()
        .filter(|l| l.contains("cannot record the API's health"))
        .count()
}

async fn wait_health_write_refusals(app: &TestApp, at_least: usize) {
    wait_for(
        &format!("{at_least} refused writes of the API's health"),
        T,
        || {
            let n = health_write_refusals(app);
            async move { (n >= at_least).then_some(()) }
        },
    )
    .await
}

/// A change of the API's health that the database refuses is kept and written once it takes
/// writes again, however long that takes: an outage that began and ended while the disk was
/// full is still told, firing then resolved. (Before: given up after 5 tries, so this outage
/// was never told, and a lost "recovered" left an episode open for ever.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_health_changes_a_full_disk_refuses_are_kept_until_written() {
    use recwatch_sim::{Fault, FaultKind};
    if !is_root() {
        eprintln!("skipped: mounting a small tmpfs needs root (CI runs as root)");
        return;
    }
    let sim = start_sim(static_sim(1)).await;
    let hook = Receiver::start(Some(SECRET)).await;
    let mut cfg = AppConfig::new(&sim, 1);
    cfg.listen = "127.0.0.1:0".into();
    cfg.extra = notify_toml(Some(hook.url().as_str()), None, "");
    let mut app = TestApp::new(&cfg);
    let _mount = Mount::tmpfs(app.db_path.parent().unwrap(), "4m");
    app.start();
    let addr = app.http_addr().await;
    wait_states(&app, &[job_id(0)], "RUNNING").await;
    wait_readyz(addr, 200, "ready").await;

    let filler = fill(app.db_path.parent().unwrap());
    wait_readyz(addr, 503, "the disk is full (SQLITE_FULL)").await;
    sim.set_fault(Fault::new(FaultKind::ServerError));
    app.wait_log("the RTC API is unhealthy", T).await;
    // Still tried again past the point where it used to give up (5 tries).
    wait_health_write_refusals(&app, 7).await;
    // The outage ends while the disk is still full, and that is tried too.
    sim.clear_faults();
    app.wait_log("the RTC API answers normally again", T).await;
    let refused = health_write_refusals(&app);
    wait_health_write_refusals(&app, refused + 1).await;
    assert!(
        api_notices(&hook).is_empty(),
        "nothing could be written yet"
    );

    std::fs::remove_file(&filler).unwrap();
    wait_for("the outage's firing and resolved notices", T, || {
        let n = api_notices(&hook);
        async move { (n.len() >= 2).then_some(n) }
    })
    .await;
    wait_readyz(addr, 200, "ready").await;
    assert!(app.stop().await.success());
    assert_eq!(api_notices(&hook), vec!["firing", "resolved"]);
    let db = app.db().await.unwrap();
    let episodes: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT reason, resolved_at FROM episodes WHERE rule = 'api_unhealthy'")
            .fetch_all(&db)
            .await
            .unwrap();
    assert_eq!(episodes.len(), 1, "{episodes:?}");
    assert!(episodes[0].0.contains("HTTP 500"), "says why: {episodes:?}");
    assert!(episodes[0].1.is_some(), "resolved: {episodes:?}");
    assert!(
        app.log_text()
            .contains("the API's health is written at last")
    );
}

/// An api_unhealthy episode still open when the daemon stopped (the API was down, or its
/// recovery could not be written before the stop) is resolved by the next run's first
/// answer. (Before: the new run started out "healthy", so no recovery was ever seen and the
/// episode, and the hold on per-job not-found alerts, stayed for ever.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_left_open_by_the_last_run_is_resolved_by_the_next_runs_first_answer() {
    use recwatch_sim::{Fault, FaultKind};
    let sim = start_sim(static_sim(1)).await;
    let hook = Receiver::start(Some(SECRET)).await;
    let mut cfg = AppConfig::new(&sim, 1);
    cfg.extra = notify_toml(Some(hook.url().as_str()), None, "");
    let mut app = TestApp::new(&cfg);
    app.start();
    wait_states(&app, &[job_id(0)], "RUNNING").await;
    sim.set_fault(Fault::new(FaultKind::ServerError));
    wait_for("the api_unhealthy alert", T, || {
        let n = api_notices(&hook);
        async move { n.contains(&"firing".to_string()).then_some(()) }
    })
    .await;
    assert!(app.stop().await.success());
    assert_eq!(
        app.scalar(
            "SELECT COUNT(*) FROM episodes WHERE rule = 'api_unhealthy' AND resolved_at IS NULL"
        )
        .await,
        1
    );

    sim.clear_faults();
    app.start();
    wait_for("the resolved notice from the new run", T, || {
        let n = api_notices(&hook);
        async move { n.contains(&"resolved".to_string()).then_some(()) }
    })
    .await;
    assert!(app.stop().await.success());
    assert_eq!(
        app.scalar(
            "SELECT COUNT(*) FROM episodes WHERE rule = 'api_unhealthy' AND resolved_at IS NULL"
        )
        .await,
        0
    );
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM episodes WHERE rule = 'api_unhealthy'")
            .await,
        1
    );
}

/// The database file deleted, then replaced, under a running daemon: SQLite would go on
/// writing to the file it has open, and all of it would be lost at the next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_or_replaced_database_is_reported_not_ready() {
    let sim = start_sim(static_sim(2)).await;
    let mut cfg = AppConfig::new(&sim, 2);
    cfg.listen = "127.0.0.1:0".into();
    let mut app = TestApp::new(&cfg);
    app.start();
    let addr = app.http_addr().await;
    app.wait_running(2).await;
    wait_readyz(addr, 200, "ready").await;

    std::fs::remove_file(&app.db_path).unwrap();
    let body = wait_readyz(addr, 503, "was deleted").await;
    assert!(body.contains(app.db_path.to_str().unwrap()), "{body}");
    app.wait_log("was deleted while recwatch has it open", T)
        .await;

    std::fs::write(&app.db_path, b"").unwrap();
    wait_readyz(addr, 503, "was replaced by another file").await;
    assert!(app.running(), "an outside fault: reported, not a crash");
    assert!(app.stop().await.success());
}

/// A database on a read-only file system is refused at start, with the reason. (A file
/// system that turns read-only under a running daemon fails its writes, which /readyz
/// reports like a full disk; Linux cannot remount a mount read-only while a file on it is
/// open for writing, so that case is not staged here.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_storage_directory_is_refused_at_start() {
    if !is_root() {
        eprintln!("skipped: a read-only bind mount needs root (CI runs as root)");
        return;
    }
    let sim = start_sim(static_sim(1)).await;
    let app = TestApp::new(&AppConfig::new(&sim, 1));
    let source = app.dir.path().join("source");
    std::fs::create_dir_all(&source).unwrap();
    let _mount = Mount::read_only_bind(&source, app.db_path.parent().unwrap());
    let (code, _, err) = app.run_cmd(&["run"]).await;
    assert_eq!(code, 73, "EX_CANTCREAT: {err}");
    assert!(err.contains("Read-only file system"), "{err}");
    assert!(err.contains("recwatch.db"), "names the file: {err}");
}

/// Only one `run` may own a database; everything else may read it beside the daemon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_on_the_same_database_is_refused_and_names_the_first() {
    let sim = start_sim(static_sim(2)).await;
    let mut app = TestApp::new(&AppConfig::new(&sim, 2));
    app.start();
    app.wait_running(2).await;
    let first = app.pid();

    let (code, _, err) = app.run_cmd(&["run"]).await;
    assert_eq!(code, 75, "EX_TEMPFAIL: {err}");
    assert!(err.contains("another recwatch owns the database"), "{err}");
    assert!(
        err.contains(&format!("recwatch run, pid {first} on ")),
        "names the other: {err}"
    );
    let (code, _, err) = app.run_cmd(&["poll-once"]).await;
    assert_eq!(code, 75, "poll-once would poll the same jobs again: {err}");
    for args in [&["status"][..], &["history"], &["alerts"], &["check"]] {
        let (code, out, err) = app.run_cmd(args).await;
        assert_eq!(code, 0, "{args:?} beside the daemon: {out}{err}");
    }
    assert!(app.running());

    // The lock is the kernel's: it dies with a SIGKILLed process, leaving nothing stale.
    app.kill().await;
    let (code, out, err) = app.run_cmd(&["poll-once"]).await;
    assert_eq!(code, 0, "{out}{err}");
    app.start();
    let log = app.log.clone();
    wait_for("the new daemon to run", T, || {
        let n = log.lock().unwrap().matches("recwatch running").count();
        async move { (n == 2).then_some(()) }
    })
    .await;
    assert!(app.stop().await.success());
}

/// Two daemons started at the same moment on a new database: one runs, the other refuses;
/// neither fails on the other's half-made schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_started_at_once_on_a_new_database_one_runs() {
    let sim = start_sim(static_sim(2)).await;
    let app = TestApp::new(&AppConfig::new(&sim, 2));
    let spawn = || {
        let mut c = app.command(&["run"]);
        c.env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        tokio::process::Command::from(c)
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    };
    let (mut a, mut b) = (spawn(), spawn());
    let (loser, mut winner) = tokio::select! {
        out = a.wait() => (out.unwrap(), b),
        out = b.wait() => (out.unwrap(), a),
    };
    assert_eq!(
        loser.code(),
        Some(75),
        "the second refuses, for the lock only"
    );
    app.wait_running(2).await;
    assert!(winner.try_wait().unwrap().is_none(), "the first runs on");
    winner.start_kill().unwrap();
    winner.wait().await.unwrap();
}

/// Makes the code that logs a chosen event panic there, as a bug in that spot would: a
/// tracing layer on the daemon's own thread (the test runs it in-process on a current-thread
/// runtime, so every task of it logs through this layer). Records every event, too.
#[derive(Clone, Default)]
struct PanicOnEvent {
    rules: std::sync::Arc<std::sync::Mutex<Vec<PanicRule>>>,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

/// (text in the message, text in the fields, panics left)
type PanicRule = (&'static str, &'static str, usize);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for PanicOnEvent {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Text(String, String);
        impl tracing::field::Visit for Text {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.0 = format!("{value:?}");
                } else {
                    self.1.push_str(&format!(" {}={value:?}", field.name()));
                }
            }
        }
        let mut t = Text(String::new(), String::new());
        event.record(&mut t);
        self.log.lock().unwrap().push_str(&format!(
            "{} {}{}\n",
            event.metadata().level(),
            t.0,
            t.1
        ));
        let hit = {
            let mut rules = self.rules.lock().unwrap();
            rules
                .iter_mut()
                .find(|(m, f, left)| *left > 0 && t.0.contains(m) && t.1.contains(f))
                .map(|r| {
                    r.2 -= 1;
                    r.0
                })
        };
        if let Some(what) = hit {
            panic!("injected by the test at {what:?}");
        }
    }
}

/// A panic in a poll task, in the database writer and in the delivery worker: each is
/// reported with what it hit, the job is polled again, the writer and the worker go on (or
/// are restarted), every change is still recorded and alerted, and shutdown completes.
#[tokio::test]
async fn a_panic_in_a_poll_the_writer_or_the_delivery_worker_is_contained() {
    use tracing_subscriber::layer::SubscriberExt;
    let layer = PanicOnEvent::default();
    layer.rules.lock().unwrap().extend([
        // The poll task, as it records job-0001's first sight.
        ("state change", "job_id=job-0001", 1),
        // The writer, as it announces the alert it just committed for job-0002.
        ("alert: cam-2", "", 1),
        // The delivery worker, after the send and before marking it sent.
        ("alert delivered", "job_id=job-0002", 1),
    ]);
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(layer.clone()));

    let sim = start_sim(static_sim(3)).await;
    let hook = Receiver::start(Some(SECRET)).await;
    let mut cfg = AppConfig::new(&sim, 3);
    cfg.extra = notify_toml(Some(hook.url().as_str()), None, "");
    let app = TestApp::new(&cfg);
    let config = recwatch::config::load(&app.config_path).unwrap();
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let daemon = tokio::spawn(recwatch::startup::run(config, shutdown, |_| {}));
    let log = layer.log.clone();
    let logged = |needle: &'static str| {
        let log = log.clone();
        async move {
            let log = log.clone();
            wait_for(&format!("{needle:?} in the log"), T, move || {
                let found = log.lock().unwrap().contains(needle);
                async move { found.then_some(()) }
            })
            .await
        }
    };

    // The poll task's panic is reported, and the job is polled again and recorded.
    logged("the poll task failed (panicked: injected by the test").await;
    app.wait_running(3).await;

    // Writer and worker.
    set_state(&sim, "job-0002", "STOPPED", Some("INTERNAL_ERROR"));
    wait_alert(&hook, "job-0002", "stopped_unexpectedly").await;
    // Contained by the delivery lane (started again) or, failing that, the worker's supervisor.
    logged("panicked (injected by the test at \"alert delivered\")").await;
    {
        let log = log.lock().unwrap();
        assert!(
            log.contains("the database writer panicked")
                || log.contains("writing this job's poll outcome panicked"),
            "the writer's panic is reported"
        );
    }
    // Delivered at least once (the panic came between the send and its mark: at-least-once
    // means once more after the restart), and marked sent in the end.
    wait_for("the delivery marked sent", T, || async {
        (app.scalar("SELECT COUNT(*) FROM deliveries WHERE state = 'sent'")
            .await
            == 1)
            .then_some(())
    })
    .await;
    let ids: std::collections::HashSet<String> = hook
        .received()
        .iter()
        .map(|r| r.alert.id.to_string())
        .collect();
    assert_eq!(ids.len(), 1, "one alert, however often it was sent");

    // After all that, a change on another job is still recorded and alerted.
    set_state(&sim, "job-0000", "STOPPED", Some("EXCEED_MAX_IDLE_TIME"));
    wait_alert(&hook, "job-0000", "idle_timeout").await;
    assert!(!daemon.is_finished(), "the daemon runs on");

    stop.send(true).unwrap();
    let stopped = tokio::time::timeout(T, daemon).await;
    assert!(
        matches!(stopped, Ok(Ok(Ok(())))),
        "shutdown completes cleanly: {stopped:?}"
    );
    assert!(
        layer.rules.lock().unwrap().iter().all(|r| r.2 == 0),
        "every panic happened"
    );
    let mut steps: Vec<_> = app.transitions().await;
    steps.sort();
    assert_eq!(
        steps
            .iter()
            .map(|t| (t.0.as_str(), t.2.as_str()))
            .collect::<Vec<_>>(),
        vec![
            ("job-0000", "RUNNING"),
            ("job-0000", "STOPPED"),
            ("job-0001", "RUNNING"),
            ("job-0002", "RUNNING"),
            ("job-0002", "STOPPED"),
        ],
        "each change once"
    );
}

/// A reload while a job's poll is in flight reaches that job too: the poll used to put back
/// the job's old configuration (name, notify list, interval) when it finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_reaches_a_job_whose_poll_was_in_flight() {
    use recwatch_sim::{Fault, FaultKind};
    let sim = start_sim(static_sim(2)).await;
    let mut cfg = AppConfig::new(&sim, 2);
    // job-0001's next request stalls past this timeout: a long window for the reload.
    cfg.timeout = "10s";
    let mut app = TestApp::spawn(&cfg, 2).await;
    sim.set_fault(
        Fault::new(FaultKind::Stall(Duration::from_secs(20)))
            .for_job("job-0001")
            .times(1),
    );
    wait_for("job-0001's request to stall", T, || {
        let n = sim.stats().faults_applied;
        async move { (n >= 1).then_some(()) }
    })
    .await;
    let text = std::fs::read_to_string(&app.config_path).unwrap();
    std::fs::write(
        &app.config_path,
        text.replace("name = \"cam-1\"", "name = \"renamed\""),
    )
    .unwrap();
    app.signal("HUP");
    app.wait_log("configuration reloaded", T).await;
    // The stalled poll ends (timed out, under the name it started with) after the reload:
    // it was in flight during it.
    let stalled = "job_id=job-0001 name=\"cam-1\" kind=\"timeout\"";
    app.wait_log(stalled, T).await;
    let log = app.log_text();
    assert!(
        log.find("configuration reloaded").unwrap() < log.find(stalled).unwrap(),
        "the reload came while the poll was in flight"
    );

    set_state(&sim, "job-0001", "STOPPED", Some("INTERNAL_ERROR"));
    wait_states(&app, &["job-0001".into()], "STOPPED").await;
    assert!(app.stop().await.success());
    let db = app.db().await.unwrap();
    let names: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT to_state, name FROM transitions WHERE job_id = 'job-0001' ORDER BY id",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(
        names,
        vec![
            ("RUNNING".to_string(), Some("cam-1".to_string())),
            ("STOPPED".to_string(), Some("renamed".to_string())),
        ]
    );
}
