//! The listeners under abuse (issue 22, items 3 to 7): slow bodies that once silenced the
//! callback receiver and `/healthz`, forged callbacks as a log flood, two apps sharing a key,
//! a replayed callback after a restart re-adding an unwatched job, and `/readyz` and
//! `/metrics` with PostgreSQL stopped. Every attack here is bounded in count and time and
//! stays on loopback.

use crate::harness::*;
use recwatch_rtc::callback::{HEADER_RAND, HEADER_SIGNATURE, HEADER_TIMESTAMP, sign};
use recwatch_rtc::secret::Secret;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

/// 32 characters and more, as RTC's console requires.
const KEY_A: &str = "abuse-test-key-of-app-a-0123456789";
const KEY_B: &str = "abuse-test-key-of-app-b-0123456789";
const TOKEN: &str = "abuse-test-write-token-0123456789";
const PATH: &str = "/rtc/record-callback";
/// The issue's figure: a valid callback must be answered 200 within this long.
const ANSWER_WITHIN: Duration = Duration::from_secs(2);

/// A daemon with the receiver on port 0, `[http]` on port 0 with a write token, and `apps`
/// (TOML) as its `[[apps]]`.
async fn daemon(apps: &str) -> (TestApp, recwatch_sim::Simulator) {
    let sim = start_sim(signed_sim(2)).await;
    let mut config = AppConfig::new(&sim, 1);
    config.listen = "127.0.0.1:0".into();
    config.extra = format!("token = \"{TOKEN}\"\n\n[callback]\nlisten = \"127.0.0.1:0\"\n\n{apps}");
    let mut app = TestApp::new(&config);
    app.start();
    (app, sim)
}

fn two_apps(key_b: &str) -> String {
    format!(
        "[[apps]]\napp_id = \"app-a\"\nauth_key = \"{KEY_A}\"\n\n[[apps]]\napp_id = \"app-b\"\nauth_key = \"{key_b}\"\n"
    )
}

fn event(app_id: &str, job_id: &str, event_type: &str) -> String {
    format!(r#"{{"event_type":"{event_type}","app_id":"{app_id}","job_id":"{job_id}"}}"#)
}

/// A client that opens a new connection per request (the hard case under a connection flood:
/// no kept-alive connection to reuse) and gives up after `timeout`.
fn fresh_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(timeout)
        .build()
        .unwrap()
}

/// POSTs `body` signed with `key` at `timestamp`; the status, or None when no answer came
/// within the client's timeout.
async fn post_signed(
    client: &reqwest::Client,
    addr: SocketAddr,
    key: &str,
    rand: &str,
    timestamp: &str,
    body: &str,
) -> Option<u16> {
    let sig = sign(&Secret::new(key), rand, timestamp, body.as_bytes());
    client
        .post(format!("http://{addr}{PATH}"))
        .header(HEADER_RAND, rand)
        .header(HEADER_TIMESTAMP, timestamp)
        .header(HEADER_SIGNATURE, sig)
        .body(body.to_string())
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

/// `connections` clients that each send `head` (a request header announcing a 1,000-byte
/// body) and then one body byte every 2 s, reconnecting when the server closes them, until
/// dropped. `connected` counts the connections opened.
struct Trickle {
    stop: Arc<AtomicBool>,
    connected: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Trickle {
    fn start(addr: SocketAddr, head: String, connections: usize) -> Trickle {
        let stop = Arc::new(AtomicBool::new(false));
        let connected = Arc::new(AtomicUsize::new(0));
        let tasks = (0..connections)
            .map(|_| {
                let (stop, connected, head) = (stop.clone(), connected.clone(), head.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            continue;
                        };
                        connected.fetch_add(1, Ordering::Relaxed);
                        if s.write_all(head.as_bytes()).await.is_err() {
                            continue;
                        }
                        for _ in 0..1000 {
                            if stop.load(Ordering::Relaxed) || s.write_all(b" ").await.is_err() {
                                break;
                            }
                            tokio::time::sleep(Duration::from_secs(2)).await;
                        }
                    }
                })
            })
            .collect();
        Trickle {
            stop,
            connected,
            tasks,
        }
    }

    /// Waits until every client has connected at least once.
    async fn established(&self) {
        let want = self.tasks.len();
        wait_for("the slow-body clients to connect", T, || {
            let n = self.connected.load(Ordering::Relaxed);
            async move { (n >= want).then_some(()) }
        })
        .await;
    }
}

impl Drop for Trickle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The test process needs a descriptor per slow client on top of its own.
fn enough_descriptors() {
    recwatch::http::raise_nofile_limit().expect("the open-files limit can be raised");
}

/// Item 3: 300 connections trickling a body (with well-formed, forged signature headers:
/// the worst case, since they pass the check made before the body) do not keep valid
/// callbacks out: at least 95 % of them are answered 200 within 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_do_not_keep_valid_callbacks_out() {
    enough_descriptors();
    let (mut app, _sim) = daemon(&two_apps(KEY_B)).await;
    let addr = app.callback_addr().await;
    let head = format!(
        "POST {PATH} HTTP/1.1\r\nHost: recwatch\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n{HEADER_RAND}: r\r\n{HEADER_TIMESTAMP}: 1700000000\r\n{HEADER_SIGNATURE}: {}\r\n\r\n{{",
        "0".repeat(64)
    );
    let attack = Trickle::start(addr, head, 300);
    attack.established().await;
    let client = fresh_client(ANSWER_WITHIN);
    let total = 25;
    let mut answered = 0;
    let mut took = Vec::new();
    for i in 0..total {
        let body = event("app-a", &format!("job-{i}"), "RECORD_NEW_FILE_START");
        let start = Instant::now();
        let status = post_signed(
            &client,
            addr,
            KEY_A,
            &format!("valid-{i}"),
            "1700000000",
            &body,
        )
        .await;
        let elapsed = start.elapsed();
        if status == Some(200) && elapsed <= ANSWER_WITHIN {
            answered += 1;
        }
        took.push(elapsed);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    took.sort();
    // For BENCHMARKS.md: the measured figures, with the test's output (--nocapture).
    println!(
        "valid callbacks under 300 slow-body connections: {answered}/{total} answered 200 within 2 s; p50 {:?}, max {:?}",
        took[took.len() / 2],
        took[took.len() - 1]
    );
    assert!(
        answered * 100 >= total * 95,
        "{answered} of {total} valid callbacks answered 200 within 2 s (times {took:?})"
    );
    drop(attack);
    let log = app.log_text();
    assert!(
        log.matches("callback refused").count() <= 5,
        "refusals are summarised, not logged one by one"
    );
    app.stop().await;
}

/// Item 3: slow bodies sent with the write token on `[http]` do not hold up `/healthz`,
/// `/readyz` or `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_metrics_answer_while_the_write_api_gets_slow_bodies() {
    enough_descriptors();
    let (mut app, _sim) = daemon(&two_apps(KEY_B)).await;
    let http = app.http_addr().await;
    let head = format!(
        "POST /api/v1/jobs HTTP/1.1\r\nHost: recwatch\r\nContent-Type: application/json\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 1000\r\n\r\n{{"
    );
    let attack = Trickle::start(http, head, 300);
    attack.established().await;
    // Generous against the machine's load, far below the 22 s /healthz once took.
    let client = fresh_client(Duration::from_secs(5));
    for i in 0..10 {
        for path in ["/healthz", "/metrics"] {
            let r = client.get(format!("http://{http}{path}")).send().await;
            let status = r.map(|r| r.status().as_u16()).ok();
            assert_eq!(status, Some(200), "{path}, try {i}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    drop(attack);
    let metrics = client
        .get(format!("http://{http}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            "recwatch_http_connections_closed_total{listener=\"http\",reason=\"evicted\"}"
        ),
        "{metrics}"
    );
    app.stop().await;
}

/// Item 4: a flood of forged callbacks is counted one by one but logged once, then summarised.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_forged_callbacks_is_counted_and_logged_in_summary() {
    let (mut app, _sim) = daemon(&two_apps(KEY_B)).await;
    let addr = app.callback_addr().await;
    let http = app.http_addr().await;
    let client = reqwest::Client::new();
    let body = event("app-a", "job-1", "RECORD_NEW_FILE_START");
    for i in 0..300 {
        let status = post_signed(
            &client,
            addr,
            "not-the-key-of-any-app-0123456789",
            &format!("f{i}"),
            "1700000000",
            &body,
        )
        .await;
        assert_eq!(status, Some(401));
    }
    let metrics = client
        .get(format!("http://{http}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("recwatch_callbacks_total{result=\"forged\"} 300"),
        "{metrics}"
    );
    // The first is logged as it is; the rest come as one summary once 10 s have passed.
    app.wait_log("callbacks refused:", T).await;
    let log = app.log_text();
    let lines = log.matches("callback refused").count() + log.matches("callbacks refused").count();
    assert!(lines <= 4, "{lines} lines for 300 forged callbacks");
    assert!(
        log.contains("does not match"),
        "the summary says the last cause"
    );
    app.stop().await;
}

/// Item 5: two apps that share an auth_key each get their own callbacks (the body says which),
/// and `check` warns about the shared key without printing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_apps_sharing_a_key_each_get_their_callbacks_and_check_warns() {
    let sim = start_sim(signed_sim(2)).await;
    let mut config = AppConfig::new(&sim, 1);
    config.listen = "127.0.0.1:0".into();
    config.extra = format!(
        "\n[callback]\nlisten = \"127.0.0.1:0\"\n\n{}",
        two_apps(KEY_A)
    );
    let mut app = TestApp::new(&config);
    let (_, out, err) = app.run_cmd(&["check"]).await;
    let said = format!("{out}{err}");
    assert!(said.contains("share one auth_key"), "{said}");
    assert!(!said.contains(KEY_A), "the key is not printed");
    app.start();
    let addr = app.callback_addr().await;
    let client = reqwest::Client::new();
    for (i, app_id) in ["app-a", "app-b"].iter().enumerate() {
        let body = event(app_id, "job-1", "RECORD_NEW_FILE_START");
        let status = post_signed(&client, addr, KEY_A, &format!("s{i}"), "1700000000", &body).await;
        assert_eq!(status, Some(200), "{app_id}");
    }
    let db = app.db().await.unwrap();
    let apps: Vec<String> = sqlx::query_scalar("SELECT app_id FROM callback_events ORDER BY id")
        .fetch_all(&db)
        .await
        .unwrap();
    assert_eq!(apps, ["app-a", "app-b"]);
    app.stop().await;
}

async fn watched(app: &TestApp, job: &str) -> bool {
    let db = app.db().await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM watchlist WHERE job_id = $1")
        .bind(job)
        .fetch_one(&db)
        .await
        .unwrap();
    n == 1
}

fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Item 6: a job an operator unwatched is not added again by a replay after a restart, nor by
/// an older event; a new event, signed after the unwatch, adds it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwatched_job_is_not_rediscovered_by_a_replay_after_a_restart() {
    let sim = start_sim(signed_sim(2)).await;
    // A fixed port: the log keeps the first run's address, and the second run binds it again.
    let cb = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut config = AppConfig::new(&sim, 1);
    config.listen = "127.0.0.1:0".into();
    config.extra = format!(
        "token = \"{TOKEN}\"\n\n[callback]\nlisten = \"{cb}\"\n\n[[apps]]\napp_id = \"demo-app\"\nauth_key = \"{KEY_A}\"\ndiscover = true\n"
    );
    let mut app = TestApp::new(&config);
    app.start();
    app.callback_addr().await;
    let job = recwatch_sim::job_id(1);
    let client = reqwest::Client::new();
    let first = event("demo-app", &job, "RECORD_NEW_FILE_START");
    let first_ts = (unix_now() - 120).to_string();
    let sig = sign(&Secret::new(KEY_A), "r1", &first_ts, first.as_bytes());
    let replay = |client: reqwest::Client, cb: SocketAddr| {
        let (first, first_ts, sig) = (first.clone(), first_ts.clone(), sig.clone());
        async move {
            client
                .post(format!("http://{cb}{PATH}"))
                .header(HEADER_RAND, "r1")
                .header(HEADER_TIMESTAMP, first_ts)
                .header(HEADER_SIGNATURE, sig)
                .body(first)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(replay(client.clone(), cb).await, 200);
    // Discovery is decided before the answer: once answered, it is settled.
    assert!(watched(&app, &job).await, "discovered");
    let http = app.http_addr().await;
    let r = client
        .delete(format!("http://{http}/api/v1/jobs/demo-app/{job}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert!(!watched(&app, &job).await, "unwatched");

    app.stop().await;
    app.start();
    wait_for("the receiver to listen again", T, || async move {
        tokio::net::TcpStream::connect(cb).await.ok().map(|_| ())
    })
    .await;
    // The very same request after the restart (the in-memory replay cache is empty).
    assert_eq!(replay(client.clone(), cb).await, 200);
    assert!(
        !watched(&app, &job).await,
        "a replay re-added the unwatched job"
    );
    // Another event, signed before the unwatch (RTC resending an old one).
    let older = event("demo-app", &job, "RECORD_FILE_COMPLETE");
    let status = post_signed(
        &client,
        cb,
        KEY_A,
        "r2",
        &(unix_now() - 60).to_string(),
        &older,
    )
    .await;
    assert_eq!(status, Some(200));
    assert!(
        !watched(&app, &job).await,
        "an old event re-added the unwatched job"
    );
    // A genuinely new event, signed after the unwatch: the job is watched again.
    let newer = event("demo-app", &job, "CLOUD_RECORD_SERVER_OVER");
    let status = post_signed(
        &client,
        cb,
        KEY_A,
        "r3",
        &(unix_now() + 2).to_string(),
        &newer,
    )
    .await;
    assert_eq!(status, Some(200));
    assert!(watched(&app, &job).await, "a new event adds it again");
    wait_for("the rediscovered job to be polled", T, || {
        let n = polls_of(&sim, &job);
        async move { (n > 0).then_some(()) }
    })
    .await;
    app.stop().await;
}

/// Item 7: with PostgreSQL stopped, `/readyz` and `/metrics` answer at once from what the
/// instance last knew, and `/readyz` says the database is the problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_and_metrics_answer_at_once_with_postgres_stopped() {
    let sim = start_sim(signed_sim(1)).await;
    let server = tokio::task::spawn_blocking(crate::test_pg::PgServer::start)
        .await
        .unwrap();
    let db = server.fresh_database().await;
    let mut config = AppConfig::new(&sim, 1);
    config.listen = "127.0.0.1:0".into();
    config.storage_url = Some(db);
    let mut app = TestApp::new(&config);
    app.start();
    let http = app.http_addr().await;
    let client = fresh_client(Duration::from_secs(30));
    wait_for("ready on PostgreSQL", T, || {
        let r = client.get(format!("http://{http}/readyz")).send();
        async move { (r.await.ok()?.status() == 200).then_some(()) }
    })
    .await;
    // Ready is not yet polling: the poll loop reads the stored jobs to arm itself, and a
    // database lost before that stops the daemon (for the service manager to restart), which
    // is not this test's subject. The first request at the simulator says it is armed.
    wait_for("the first poll", T, || {
        let polled = sim.stats().requests;
        async move { (polled > 0).then_some(()) }
    })
    .await;
    let server = tokio::task::spawn_blocking(move || {
        let mut server = server;
        server.stop();
        server
    })
    .await
    .unwrap();
    // Generous against the machine's load; before the fix they took 10 s and 20 s. Asked
    // back to back until `/readyz` names the database (its ping fails, or has gone 2 s
    // unanswered), and a few times more: all within the first seconds, while the instance
    // still runs (once the lease cannot be renewed it steps down, and today's poll loop then
    // stops the daemon for the service manager to restart, which is not this test's subject).
    let within = Duration::from_secs(4);
    let mut slowest = Duration::ZERO;
    let mut not_ready = 0;
    let mut asked = 0;
    while not_ready < 3 && asked < 30 {
        asked += 1;
        for path in ["/readyz", "/metrics"] {
            let start = Instant::now();
            let r = client
                .get(format!("http://{http}{path}"))
                .timeout(within)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{path} did not answer within {within:?}: {e}"));
            slowest = slowest.max(start.elapsed());
            if path == "/readyz" && r.status() == 503 {
                let text = r.text().await.unwrap();
                if text.contains("database") {
                    not_ready += 1;
                }
            }
        }
    }
    println!("with PostgreSQL stopped: slowest /readyz or /metrics answer {slowest:?}");
    assert!(not_ready > 0, "/readyz said the database is not answering");
    // A clean stop waits on the database it cannot reach (not this test's subject).
    app.kill().await;
    drop(server);
}
