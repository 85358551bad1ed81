//! Fault injection: recwatch holds up when what is around it fails. The API answers 5xx,
//! 429, garbage or half a body, resets, stalls or refuses the credentials; SMTP servers and
//! webhook receivers are down, slow or refusing; another process holds the SQLite write lock
//! past the busy timeout; the daemon is SIGKILLed at random moments. Each test checks that
//! the daemon keeps running and that every change is recorded, and every alert created and
//! delivered, exactly as often as it should be.

use crate::core::{arrival_seconds, wait_states};
use crate::harness::*;
use crate::support::ClosedPort;
use crate::support::receiver::Receiver;
use crate::support::smtp::{SmtpServer, Stage};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use recwatch_sim::{Fault, FaultKind, Simulator, job_id};
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// (from_state, to_state, stop_reason) of one job's transitions, oldest first.
type Steps = Vec<(Option<String>, String, Option<String>)>;

async fn steps_of(app: &TestApp, job: &str) -> Steps {
    app.transitions()
        .await
        .into_iter()
        .filter(|t| t.0 == job)
        .map(|t| (t.1, t.2, t.3))
        .collect()
}

/// The steps of a job first seen RUNNING that then stopped for `reason`.
fn ran_then_stopped(reason: Option<&str>) -> Steps {
    vec![
        (None, "RUNNING".into(), None),
        (
            Some("RUNNING".into()),
            "STOPPED".into(),
            reason.map(String::from),
        ),
    ]
}

async fn wait_polls(sim: &Simulator, job: &str, at_least: u64) {
    wait_for(&format!("{at_least} polls of {job}"), T, || {
        let n = polls_of(sim, job);
        async move { (n >= at_least).then_some(()) }
    })
    .await
}

async fn wait_faults_applied(sim: &Simulator, at_least: u64) {
    wait_for(&format!("{at_least} faulty answers"), T, || {
        let n = sim.stats().faults_applied;
        async move { (n >= at_least).then_some(()) }
    })
    .await
}

/// Where a fault hits: single jobs (the others must go on), or the gateway (every request).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Scope {
    Jobs,
    Gateway,
}

/// One API fault episode against a running daemon with four RUNNING jobs:
/// - the fault hits job-0000 and job-0001 (`Scope::Jobs`) or every request (`Scope::Gateway`);
/// - during it, job-0001 (faulty) and job-0002 stop; with per-job faults the healthy jobs
///   must go on being polled, and job-0002's change recorded, while it lasts;
/// - after it, job-0003 stops;
/// - the daemon never exits, every change is recorded exactly once, and the faulty jobs
///   come back (their error cleared).
async fn survives_episode(kind: FaultKind, scope: Scope, api_extra: &str) {
    let name = format!("{kind:?}");
    let sim = start_sim(static_sim(4)).await;
    let mut cfg = AppConfig::new(&sim, 4);
    cfg.timeout = "500ms";
    cfg.api_extra = api_extra.into();
    let mut app = TestApp::new(&cfg);
    app.start();
    let jobs: Vec<String> = (0..4).map(job_id).collect();
    wait_states(&app, &jobs, "RUNNING").await;

    match scope {
        Scope::Jobs => {
            for j in &jobs[..2] {
                sim.set_fault(Fault::new(kind.clone()).for_job(j));
            }
        }
        Scope::Gateway => sim.set_fault(Fault::new(kind.clone())),
    }
    wait_faults_applied(&sim, 3).await;
    set_state(&sim, "job-0001", "STOPPED", Some("INTERNAL_ERROR"));
    set_state(&sim, "job-0002", "STOPPED", Some("EXCEED_MAX_IDLE_TIME"));
    if scope == Scope::Jobs {
        // Healthy jobs are polled and their changes recorded while the others fail.
        wait_states(&app, &jobs[2..3], "STOPPED").await;
        let n = polls_of(&sim, "job-0003");
        wait_polls(&sim, "job-0003", n + 5).await;
    }
    // The faulty side is asked again after the change, and still fails.
    let more = if scope == Scope::Jobs { 2 } else { 1 };
    wait_faults_applied(&sim, sim.stats().faults_applied + more).await;
    let (state, _, error, _) = app.job_row("job-0001").await.unwrap();
    assert_eq!(
        state.as_deref(),
        Some("RUNNING"),
        "{name}: a change behind a fault cannot have been seen"
    );
    if scope == Scope::Jobs {
        assert!(error.is_some(), "{name}: the failure is recorded");
    }
    assert!(app.running(), "{name}: the daemon died during the episode");

    sim.clear_faults();
    set_state(&sim, "job-0003", "STOPPED", Some("TENANT_STOP"));
    wait_states(&app, &jobs[1..], "STOPPED").await;
    wait_for(&format!("{name}: job-0000 to recover"), T, || async {
        let (state, _, error, failures) = app.job_row("job-0000").await?;
        (state.as_deref() == Some("RUNNING") && error.is_none() && failures == 0).then_some(())
    })
    .await;
    assert!(app.running(), "{name}: the daemon died after the episode");
    assert!(app.stop().await.success(), "{name}: SIGTERM exits 0");

    let want = [
        ("job-0000", vec![(None, "RUNNING".to_string(), None)]),
        ("job-0001", ran_then_stopped(Some("INTERNAL_ERROR"))),
        ("job-0002", ran_then_stopped(Some("EXCEED_MAX_IDLE_TIME"))),
        ("job-0003", ran_then_stopped(Some("TENANT_STOP"))),
    ];
    for (job, steps) in want {
        assert_eq!(steps_of(&app, job).await, steps, "{name}: {job}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_a_burst_of_500s() {
    survives_episode(FaultKind::ServerError, Scope::Jobs, "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_unreadable_bodies() {
    survives_episode(FaultKind::Garbage, Scope::Jobs, "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_truncated_bodies() {
    survives_episode(FaultKind::Truncated, Scope::Jobs, "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_connection_resets() {
    survives_episode(FaultKind::Reset, Scope::Jobs, "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_stalls_past_the_timeout() {
    // The client gives up after 500 ms; the simulator answers after 2 s.
    survives_episode(FaultKind::Stall(Duration::from_secs(2)), Scope::Jobs, "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_a_429_storm() {
    // The whole poller pauses (100 ms, doubling) while it lasts, then goes on.
    survives_episode(
        FaultKind::Throttle,
        Scope::Gateway,
        "throttle_backoff = \"100ms\"\n",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_refused_credentials_for_a_while() {
    // After 3 refusals every poll stops for auth_backoff (1 s, doubling); then it goes on.
    survives_episode(
        FaultKind::RefuseAuth,
        Scope::Gateway,
        "auth_backoff = \"1s\"\nallow_short_auth_backoff = true\n",
    )
    .await;
}

/// Another process holding the SQLite write lock until [`LockHolder::release`].
pub(crate) struct LockHolder {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
}

impl LockHolder {
    /// Takes the write lock of `db` from another process; returns once it is held.
    pub(crate) async fn take(db: &std::path::Path) -> LockHolder {
        use tokio::io::AsyncBufReadExt;
        // Holds the lock until told to let go (a line on stdin), not for a fixed time, so the
        // test decides when the lock ends whatever the machine's speed.
        let script = "import sqlite3, sys\n\
                      c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=10)\n\
                      c.execute('BEGIN IMMEDIATE')\n\
                      print('locked', flush=True)\n\
                      sys.stdin.readline()\n\
                      c.execute('COMMIT')\n";
        let mut child = tokio::process::Command::new("python3")
            .args(["-c", script])
            .arg(db)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 with its sqlite3 module");
        let stdin = child.stdin.take().unwrap();
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(T, lines.next_line()).await;
        assert!(
            matches!(&first, Ok(Ok(Some(l))) if l == "locked"),
            "the lock holder did not start: {first:?}"
        );
        LockHolder { child, stdin }
    }

    /// Commits, ending the lock, and waits for the holder to exit.
    pub(crate) async fn release(mut self) {
        use tokio::io::AsyncWriteExt;
        self.stdin.write_all(b"release\n").await.unwrap();
        self.stdin.flush().await.unwrap();
        let status = tokio::time::timeout(T, self.child.wait())
            .await
            .expect("the lock holder exits")
            .unwrap();
        assert!(status.success(), "the lock holder failed: {status}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_lock_held_past_the_busy_timeout_loses_nothing_and_polling_goes_on() {
    let sim = start_sim(static_sim(4)).await;
    let mut app = TestApp::new(&AppConfig::new(&sim, 4));
    app.start();
    let jobs: Vec<String> = (0..4).map(job_id).collect();
    wait_states(&app, &jobs, "RUNNING").await;

    let holder = LockHolder::take(&app.db_path).await;
    let requests = sim.stats().requests;
    // Three jobs stop while the lock is held, one after the other, each seen by a poll.
    let stops = [
        ("job-0000", Some("INTERNAL_ERROR")),
        ("job-0001", Some("EXCEED_MAX_IDLE_TIME")),
        ("job-0002", None),
    ];
    for (job, reason) in stops {
        let n = polls_of(&sim, job);
        set_state(&sim, job, "STOPPED", reason);
        wait_polls(&sim, job, n + 1).await;
    }
    // Polling goes on: 4 jobs every 100 ms, far more than one round of them.
    wait_for("polling to go on under the lock", T, || {
        let n = sim.stats().requests;
        async move { (n >= requests + 20).then_some(()) }
    })
    .await;
    // The failed writes are logged as such; the lock is held past the 5 s busy timeout.
    app.wait_log("database locked by another process", T).await;
    // Nothing could be written meanwhile.
    assert_eq!(
        app.job_row("job-0000").await.unwrap().0.as_deref(),
        Some("RUNNING")
    );
    holder.release().await;

    // What was seen under the lock is written once it clears (within wait_states' deadline).
    wait_states(&app, &jobs[..3], "STOPPED").await;
    assert!(app.running(), "the daemon died under the lock");
    assert!(app.stop().await.success());
    for (job, reason) in stops {
        assert_eq!(steps_of(&app, job).await, ran_then_stopped(reason), "{job}");
    }
    assert_eq!(
        steps_of(&app, "job-0003").await,
        vec![(None, "RUNNING".to_string(), None)]
    );
}

/// Accepted webhook deliveries of `rule` with `status`.
fn accepted(hook: &Receiver, rule: &str, status: &str) -> usize {
    hook.received()
        .iter()
        .filter(|d| d.alert.rule.as_str() == rule && d.alert.status.as_str() == status)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_storm_slows_the_poller_and_raises_one_alert_per_episode() {
    let sim = start_sim(static_sim(6)).await;
    let hook = Receiver::start(Some(SECRET)).await;
    let mut cfg = AppConfig::new(&sim, 6);
    cfg.rate_limit = 10;
    // One request at a time: the storm's first 429 is answered before another request can
    // go, so what the simulator sees depends on the pauses, not on the machine's speed.
    cfg.max_in_flight = 1;
    // 1 s, doubling: three throttled answers in about 3 s.
    cfg.api_extra = "throttle_backoff = \"1s\"\n".into();
    cfg.extra = notify_toml(
        Some(hook.url().as_str()),
        None,
        "api_failure_threshold = 3\n",
    );
    let mut app = TestApp::new(&cfg);
    app.start();
    let jobs: Vec<String> = (0..6).map(job_id).collect();
    wait_states(&app, &jobs, "RUNNING").await;

    for episode in 1..=2 {
        sim.set_fault(Fault::new(FaultKind::Throttle));
        sim.reset_stats();
        wait_for("three throttled answers", T, || {
            let n = sim.stats().throttled;
            async move { (n >= 3).then_some(()) }
        })
        .await;
        // A job stops during the storm; it is recorded once the storm is over.
        let job = job_id(episode);
        set_state(&sim, &job, "STOPPED", Some("TENANT_STOP"));
        wait_for("the api_unhealthy alert", T, || {
            let n = accepted(&hook, "api_unhealthy", "firing");
            async move { (n >= episode).then_some(()) }
        })
        .await;
        // One more throttled answer after the alert: it raises no second one.
        let throttled = sim.stats().throttled;
        wait_for("another throttled answer", T, || {
            let n = sim.stats().throttled;
            async move { (n > throttled).then_some(()) }
        })
        .await;
        let s = sim.stats();
        let secs = (chrono::Utc::now() - s.since.unwrap()).num_milliseconds() as f64 / 1000.0;
        assert!(
            s.max_per_sliding_second <= 2,
            "episode {episode}: {} requests within one second of the storm",
            s.max_per_sliding_second
        );
        assert!(
            s.requests as f64 / secs <= 2.0,
            "episode {episode}: {} requests in {secs:.1}s of storm",
            s.requests
        );
        sim.clear_faults();
        wait_states(&app, std::slice::from_ref(&job), "STOPPED").await;
        wait_for("the resolved notice", T, || {
            let n = accepted(&hook, "api_unhealthy", "resolved");
            async move { (n >= episode).then_some(()) }
        })
        .await;
        assert_eq!(
            accepted(&hook, "api_unhealthy", "firing"),
            episode,
            "one api_unhealthy alert per episode"
        );
    }
    wait_for("every delivery settled", T, || async {
        (app.pending_deliveries().await == 0).then_some(())
    })
    .await;
    assert!(app.stop().await.success());
    assert_eq!(accepted(&hook, "api_unhealthy", "firing"), 2);
    assert_eq!(accepted(&hook, "api_unhealthy", "resolved"), 2);
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM alerts WHERE rule = 'api_unhealthy'")
            .await,
        4,
        "two episodes, each one firing and one resolved alert"
    );
    assert_eq!(
        app.scalar(
            "SELECT COUNT(*) FROM episodes WHERE rule = 'api_unhealthy' AND resolved_at IS NOT NULL"
        )
        .await,
        2
    );
    for episode in 1..=2 {
        let job = job_id(episode);
        assert_eq!(
            steps_of(&app, &job).await,
            ran_then_stopped(Some("TENANT_STOP")),
            "{job}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_costs_three_requests_and_one_alert() {
    let sim = start_sim(static_sim(8)).await;
    let hook = Receiver::start(Some(SECRET)).await;
    let mut cfg = AppConfig::new(&sim, 8);
    cfg.secret_key = "the-wrong-secret".into();
    // A short back-off, so the test waits for its end rather than watching for absence.
    cfg.api_extra = "auth_backoff = \"3s\"\nallow_short_auth_backoff = true\n".into();
    cfg.extra = notify_toml(
        Some(hook.url().as_str()),
        None,
        "api_failure_threshold = 3\n",
    );
    let mut app = TestApp::new(&cfg);
    app.start();
    app.wait_log("refused the credentials 3 times in a row", T)
        .await;
    let got = hook.wait_for(1, T).await;
    assert_eq!(got[0].alert.rule.as_str(), "api_unhealthy");
    assert_eq!(got[0].alert.status.as_str(), "firing");
    assert!(
        got[0].alert.summary.contains("refused the credentials"),
        "{}",
        got[0].alert.summary
    );
    // The back-off ends with one probe, refused: 8 jobs due every 100 ms made no other
    // request meanwhile, and the episode's alert is not raised again.
    app.wait_log("refused the credentials 4 times in a row", T)
        .await;
    let s = sim.stats();
    assert_eq!(
        (s.requests, s.refused_auth),
        (4, 4),
        "only refused requests: {s:?}"
    );
    let at = arrival_seconds(&s);
    assert!(at[3] - at[2] >= 2, "no back-off: {:?}", s.per_second);
    wait_for("the delivery marked sent", T, || async {
        (app.pending_deliveries().await == 0).then_some(())
    })
    .await;
    assert!(app.running());
    assert!(app.stop().await.success());
    assert_eq!(hook.received().len(), 1, "exactly one alert delivered");
    assert_eq!(hook.attempts().len(), 1, "and sent once");
    assert_eq!(app.scalar("SELECT COUNT(*) FROM alerts").await, 1);
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM deliveries WHERE state = 'sent'")
            .await,
        1
    );
    assert!(!app.log_text().contains("the-wrong-secret"));
}

fn webhook_toml(name: &str, url: &str) -> String {
    format!(
        "\n[[notify.webhook]]\nname = \"{name}\"\nurl = \"{url}\"\nsecret = \"{SECRET}\"\ntimeout = \"3s\"\n"
    )
}

fn email_toml(name: &str, addr: std::net::SocketAddr) -> String {
    format!(
        "\n[[notify.email]]\nname = \"{name}\"\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {}\ntls = \"none\"\nfrom = \"recwatch <recwatch@example.com>\"\nto = [\"oncall@example.com\"]\ntimeout = \"3s\"\n",
        addr.port()
    )
}

/// Every accepted webhook delivery's alert id, in arrival order.
fn hook_ids(hook: &Receiver) -> Vec<String> {
    hook.received()
        .iter()
        .map(|d| d.alert.id.to_string())
        .collect()
}

/// The alert id each accepted mail carries in its Message-ID, in arrival order.
fn mail_ids(smtp: &SmtpServer, ids: &HashSet<String>) -> Vec<String> {
    smtp.mails()
        .iter()
        .map(|m| {
            let mid = m.header("Message-ID").expect("a Message-ID");
            ids.iter()
                .find(|id| mid.contains(id.as_str()))
                .unwrap_or_else(|| panic!("{mid} names no alert"))
                .clone()
        })
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_alert_is_delivered_once_when_receivers_recover() {
    // Six channels, each failing its own way first (timeouts are 3 s, room for a normal
    // delivery on a loaded machine; stalls 8 s):
    let hook_5xx = Receiver::start(Some(SECRET)).await;
    hook_5xx.fail_next(4, 503);
    let hook_slow = Receiver::start(Some(SECRET)).await;
    hook_slow.stall_next(1, Duration::from_secs(8));
    let hook_down = ClosedPort::new();
    let mail_down = ClosedPort::new();
    let mail_slow = SmtpServer::start();
    mail_slow.stall_next(1, Duration::from_secs(8));
    let mail_4xx = SmtpServer::start();
    mail_4xx.refuse_next(2, Stage::MailFrom, 451);
    mail_4xx.refuse_next(1, Stage::RcptTo, 450);
    mail_4xx.refuse_next(1, Stage::DataEnd, 452);

    let sim = start_sim(static_sim(3)).await;
    let mut cfg = AppConfig::new(&sim, 3);
    cfg.extra = notify_toml(None, None, "");
    cfg.extra
        .push_str(&webhook_toml("hook-5xx", hook_5xx.url().as_str()));
    cfg.extra
        .push_str(&webhook_toml("hook-slow", hook_slow.url().as_str()));
    cfg.extra.push_str(&webhook_toml(
        "hook-down",
        &format!("http://{}/hook", hook_down.addr()),
    ));
    cfg.extra
        .push_str(&email_toml("mail-down", mail_down.addr()));
    cfg.extra
        .push_str(&email_toml("mail-slow", mail_slow.addr()));
    cfg.extra.push_str(&email_toml("mail-4xx", mail_4xx.addr()));
    let mut app = TestApp::new(&cfg);
    app.start();
    let jobs: Vec<String> = (0..3).map(job_id).collect();
    wait_states(&app, &jobs, "RUNNING").await;
    let reasons = [Some("INTERNAL_ERROR"), Some("EXCEED_MAX_IDLE_TIME"), None];
    for (j, reason) in jobs.iter().zip(reasons) {
        set_state(&sim, j, "STOPPED", reason);
    }
    // The channels that are down are tried (and fail) a few times, then come up on the
    // same address.
    for channel in ["hook-down", "mail-down"] {
        wait_for(&format!("{channel} to fail a few times"), T, || async {
            let tries: i64 = {
                let db = app.db().await?;
                let n = sqlx::query_scalar(
                    "SELECT COALESCE(MIN(attempts), 0) FROM deliveries WHERE channel = ?",
                )
                .bind(channel)
                .fetch_one(&db)
                .await
                .unwrap_or(0);
                db.close().await;
                n
            };
            (tries >= 2 && app.scalar("SELECT COUNT(*) FROM alerts").await == 3).then_some(())
        })
        .await;
    }
    let hook_down = Receiver::start_on(hook_down, Some(SECRET));
    let mail_down = SmtpServer::start_on(mail_down, None);

    wait_for("all 18 deliveries sent", T, || async {
        (app.scalar("SELECT COUNT(*) FROM deliveries WHERE state = 'sent'")
            .await
            == 18)
            .then_some(())
    })
    .await;
    assert!(app.running());
    assert!(app.stop().await.success());
    assert_eq!(app.scalar("SELECT COUNT(*) FROM deliveries").await, 18);
    assert_eq!(app.scalar("SELECT COUNT(*) FROM alerts").await, 3);
    let ids: Vec<String> = {
        let db = app.db().await.unwrap();
        sqlx::query_scalar("SELECT id FROM alerts ORDER BY id")
            .fetch_all(&db)
            .await
            .unwrap()
    };
    let id_set: HashSet<String> = ids.iter().cloned().collect();
    // Every channel had to try again at least once.
    for channel in [
        "hook-5xx",
        "hook-slow",
        "hook-down",
        "mail-down",
        "mail-slow",
        "mail-4xx",
    ] {
        let sql = format!(
            "SELECT SUM(attempts) FROM deliveries WHERE channel = '{channel}' AND state = 'sent'"
        );
        let db = app.db().await.unwrap();
        let attempts: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&db)
            .await
            .unwrap();
        assert!(attempts > 3, "{channel}: {attempts} attempts for 3 alerts");
    }
    // Receivers that never accepted a send the sender gave up on see each alert exactly once.
    for (name, hook) in [("hook-5xx", &hook_5xx), ("hook-down", &hook_down)] {
        assert_eq!(sorted(hook_ids(hook)), ids, "{name}");
    }
    for (name, smtp) in [("mail-down", &mail_down), ("mail-4xx", &mail_4xx)] {
        assert_eq!(sorted(mail_ids(smtp, &id_set)), ids, "{name}");
    }
    // A stalled webhook answer is not an acceptance: every alert accepted once, the stalled
    // one after the sender timed out and tried again (with the same webhook-id, by the above).
    assert_eq!(sorted(hook_ids(&hook_slow)), ids, "hook-slow");
    let log = app.log_text();
    let timed_out = |channel: &str, needle: &str| {
        log.lines().any(|l| {
            l.contains("delivery failed")
                && l.contains(&format!("channel={channel}"))
                && l.contains(needle)
        })
    };
    assert!(
        timed_out("hook-slow", "no answer within 3s"),
        "hook-slow timed out once"
    );
    assert!(
        timed_out("mail-slow", "timed out"),
        "mail-slow timed out once"
    );
    // A stalled SMTP server took the message in after the sender gave up: that one alert may
    // arrive twice (same Message-ID, for the mail client to fold), the others once.
    let got = mail_ids(&mail_slow, &id_set);
    let unique: HashSet<&String> = got.iter().collect();
    assert_eq!(unique.len(), 3, "mail-slow: every alert at least once");
    assert!(
        got.len() <= 4,
        "mail-slow: only the stalled one again: {got:?}"
    );
}

/// (to_state, stop_reason) of every change the simulator made to `job`, oldest first.
fn sim_changes(sim: &Simulator, job: &str) -> Vec<(String, Option<String>)> {
    sim.changes()
        .into_iter()
        .filter(|c| c.job_id == job)
        .map(|c| (c.state, c.stop_reason))
        .collect()
}

/// What `sigkill_at_random_moments...` leaves when it fails: a run that panics with the app
/// alive keeps its directory, with the daemon's log written beside the database, and says
/// where (and how to replay it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_run_keeps_the_daemons_log_and_its_database() {
    let sim = start_sim(static_sim(1)).await;
    let mut app = TestApp::new(&AppConfig::new(&sim, 1));
    let (dir, db) = (app.dir.path().to_path_buf(), app.db_path.clone());
    app.keep_on_failure("replay with RECWATCH_TEST_SEED=7");
    let failing = tokio::spawn(async move {
        app.start();
        app.wait_log("polling armed", T).await;
        panic!("a failure on purpose, with the daemon running");
    });
    assert!(failing.await.unwrap_err().is_panic());
    let log = std::fs::read_to_string(dir.join("recwatch.log")).expect("the log is kept");
    assert!(log.contains("polling armed"), "{log}");
    assert!(db.exists(), "the database is kept: {}", db.display());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_and_duplicates_nothing() {
    const JOBS: usize = 6;
    // At least this many rounds, and on until at least MIN_CHANGES changes were made (on a
    // slow machine the daemon records less before each kill, so fewer jobs may change).
    const ROUNDS: usize = 25;
    const MIN_CHANGES: usize = 10;
    const MAX_ROUNDS: usize = 200;
    let sim = start_sim(static_sim(JOBS)).await;
    let hook = Receiver::start(Some(SECRET)).await;
    let mut cfg = AppConfig::new(&sim, JOBS);
    cfg.extra = notify_toml(Some(hook.url().as_str()), None, "");
    let mut app = TestApp::new(&cfg);
    // Stopped jobs stay polled, so a job can stop and run again, round after round.
    let text = std::fs::read_to_string(&app.config_path)
        .unwrap()
        .replace("[poll]\n", "[poll]\nstop_after_terminal = false\n");
    std::fs::write(&app.config_path, text).unwrap();
    let jobs: Vec<String> = (0..JOBS).map(job_id).collect();
    // Both stop reasons raise an alert.
    let reasons = ["INTERNAL_ERROR", "EXCEED_MAX_IDLE_TIME"];
    // Seeded, so a failure can be replayed: RECWATCH_TEST_SEED=<the seed printed below>.
    let seed: u64 = std::env::var("RECWATCH_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20250101);
    eprintln!("sigkill_at_random_moments: seed {seed}");
    app.keep_on_failure(format!(
        "sigkill_at_random_moments seed {seed}: replay with RECWATCH_TEST_SEED={seed}"
    ));
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let mut kills = 0;
    let mut made = 0;
    let mut round = 0;
    while round < ROUNDS || made < MIN_CHANGES {
        assert!(
            round < MAX_ROUNDS,
            "only {made} changes in {round} rounds (seed {seed})"
        );
        round += 1;
        // Change only jobs whose last change is recorded: a job changed twice between two
        // polls would hide its middle state from any poller, and the check below wants every
        // change of the simulator to be in the database.
        if app.db_path.exists() {
            for j in &jobs {
                let recorded = app.job_row(j).await.and_then(|r| r.0);
                let live = sim_changes(&sim, j)
                    .last()
                    .map(|c| c.0.clone())
                    .unwrap_or_else(|| "RUNNING".into());
                if recorded.as_deref() == Some(live.as_str()) && rng.random_bool(0.5) {
                    let next = if live == "RUNNING" {
                        snap(j, "STOPPED", Some(reasons[rng.random_range(0..2)]))
                    } else {
                        snap(j, "RUNNING", None)
                    };
                    sim.set_job("demo-app", j, next);
                    made += 1;
                }
            }
        }
        app.start();
        let delay = Duration::from_millis(rng.random_range(50..=500));
        tokio::time::sleep(delay).await;
        if app.running() {
            let status = app.kill().await;
            assert!(!status.success(), "round {round}: SIGKILL");
            kills += 1;
        } else {
            panic!("round {round}: the daemon exited on its own");
        }
    }
    let killing = started.elapsed();

    // A last run catches up: every change recorded, every delivery sent.
    app.start();
    wait_for("every change recorded and delivered", T, || async {
        for j in &jobs {
            let live = sim_changes(&sim, j)
                .last()
                .map(|c| c.0.clone())
                .unwrap_or_else(|| "RUNNING".into());
            if app.job_row(j).await?.0.as_deref() != Some(live.as_str()) {
                return None;
            }
        }
        (app.pending_deliveries().await == 0).then_some(())
    })
    .await;
    assert!(app.stop().await.success());

    let db = app.db().await.unwrap();
    let integrity: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(integrity, "ok");
    // Every transition recorded once: per job, exactly the simulator's changes, in order.
    let mut changed = 0;
    for j in &jobs {
        let recorded: Vec<(String, Option<String>)> = steps_of(&app, j)
            .await
            .into_iter()
            .map(|(_, to, reason)| (to, reason))
            .collect();
        let mut want = vec![("RUNNING".to_string(), None)];
        want.extend(sim_changes(&sim, j));
        changed += want.len() - 1;
        assert_eq!(recorded, want, "{j}");
    }
    assert_eq!(
        changed, made,
        "every change the test made is in the simulator's log"
    );
    assert!(changed >= MIN_CHANGES);
    // Every alert created once: one per transition to STOPPED, and no other.
    let stops = app
        .scalar("SELECT COUNT(*) FROM transitions WHERE to_state = 'STOPPED'")
        .await;
    assert_eq!(app.scalar("SELECT COUNT(*) FROM alerts").await, stops);
    assert_eq!(
        app.scalar(
            "SELECT COUNT(*) FROM transitions t WHERE to_state = 'STOPPED'
             AND (SELECT COUNT(*) FROM alerts a WHERE a.transition_id = t.id) != 1"
        )
        .await,
        0,
        "a transition without exactly one alert"
    );
    // Every alert delivered at least once, and nothing delivered that is not in the database.
    let ids: HashSet<String> = sqlx::query_scalar("SELECT id FROM alerts")
        .fetch_all(&db)
        .await
        .unwrap()
        .into_iter()
        .collect();
    db.close().await;
    let got = hook_ids(&hook);
    let got_set: HashSet<String> = got.iter().cloned().collect();
    assert_eq!(got_set, ids, "delivered = created");
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM deliveries WHERE state != 'sent'")
            .await,
        0
    );
    eprintln!(
        "{kills} kills in {killing:?} (seed {seed}); {changed} changes, {} alerts, {} deliveries accepted ({} again after a kill)",
        ids.len(),
        got.len(),
        got.len() - ids.len()
    );
}
