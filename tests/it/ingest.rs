//! Issue 23, item 5 and the discovery half of item 4: callbacks arrive in storms (classes start
//! and end together). Each verified event is still stored before its 200, now sharing a commit
//! with the others waiting: a 200 is never answered for an event the database does not hold,
//! not even across a `kill -9`; and a burst of discoveries is watched whole, up to the
//! watch list's bounds exactly.

use crate::harness::*;
use crate::push::metric;
use recwatch_rtc::callback::{HEADER_RAND, HEADER_SIGNATURE, HEADER_TIMESTAMP, sign};
use recwatch_rtc::secret::Secret;
use recwatch_sim::{SimOptions, Simulator, job_id};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

const TOKEN: &str = "test-api-token-0123456789";
const KEY: &str = "the-demo-app-callback-key-0123456789";
/// Requests in flight at most, like a sender's pool of keep-alive connections (below the
/// receiver's connection cap, so it never closes one to make room).
const IN_FLIGHT: usize = 48;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(IN_FLIGHT)
        .build()
        .unwrap()
}

/// A signed event of demo-app for `job`; the status, or None when no answer came.
async fn send(
    http: &reqwest::Client,
    addr: SocketAddr,
    rand: &str,
    event_type: &str,
    job: &str,
) -> Option<u16> {
    let body = format!(
        r#"{{"event_type":"{event_type}","app_id":"demo-app","job_id":"{job}","record_format":"MP4","download_url":"https://obs.example.com/{job}.mp4","file_size":"1024"}}"#
    );
    let sig = sign(&Secret::new(KEY), rand, "1700000000", body.as_bytes());
    http.post(format!("http://{addr}/rtc/record-callback"))
        .header(HEADER_RAND, rand)
        .header(HEADER_TIMESTAMP, "1700000000")
        .header(HEADER_SIGNATURE, sig)
        .body(body)
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

/// A daemon with the receiver on for demo-app (discovering when `discover`), the HTTP write
/// API on, and `extra` appended.
fn daemon(sim: &Simulator, discover: bool, extra: &str) -> TestApp {
    let mut config = AppConfig::new(sim, 1);
    config.listen = "127.0.0.1:0".into();
    config.rate_limit = 200;
    config.max_in_flight = 8;
    config.extra = format!(
        "token = \"{TOKEN}\"\n\n[callback]\nlisten = \"127.0.0.1:0\"\n\n\
         [[apps]]\napp_id = \"demo-app\"\nauth_key = \"{KEY}\"\ndiscover = {discover}\n{extra}"
    );
    let mut app = TestApp::new(&config);
    app.start();
    app
}

/// A storm of `RECORD_FILE_COMPLETE` callbacks, 48 in flight; the daemon is SIGKILLed as soon
/// as 1,500 have been answered 200, with the rest still arriving. Every event answered 200 is
/// in the database when its answer arrives (read at once, from another connection), and
/// after the kill `recwatch history --files --json` lists each of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_answered_200_is_stored_before_each_answer_and_survives_kill_9() {
    const SENT: usize = 2_400;
    const KILL_AFTER: usize = 1_500;
    let sim = start_sim(signed_sim(1)).await;
    let mut app = daemon(&sim, false, "");
    let cb = app.callback_addr().await;
    let db = wait_for("the database", T, || app.db()).await;
    let http = client();
    let slots = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..SENT {
        let (http, db, slots) = (http.clone(), db.clone(), slots.clone());
        tasks.spawn(async move {
            let _slot = slots.acquire_owned().await.unwrap();
            let job = format!("storm-{n}");
            let status = send(&http, cb, &format!("r{n}"), "RECORD_FILE_COMPLETE", &job).await;
            let stored_at_answer = match status {
                Some(200) => {
                    sqlx::query_scalar::<_, i64>(
                        "SELECT COUNT(*) FROM callback_events WHERE job_id = $1",
                    )
                    .bind(&job)
                    .fetch_one(&db)
                    .await
                    .unwrap()
                        == 1
                }
                _ => false,
            };
            (job, status, stored_at_answer)
        });
    }
    let mut answered = BTreeSet::new();
    let mut killed = false;
    let mut refused = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let (job, status, stored) = done.unwrap();
        match status {
            Some(200) => {
                assert!(stored, "{job} was answered 200 before it was stored");
                answered.insert(job);
            }
            // Only once the daemon is gone may a request go unanswered.
            None => assert!(killed, "{job} got no answer from a running daemon"),
            Some(other) => refused.push((job, other)),
        }
        if !killed && answered.len() >= KILL_AFTER {
            app.kill().await;
            killed = true;
        }
    }
    assert!(refused.is_empty(), "refused: {refused:?}");
    assert!(killed, "the storm ended before the kill");
    let (code, out, err) = app
        .run_cmd(&[
            "history",
            "--files",
            "--json",
            "--limit",
            &(SENT * 2).to_string(),
        ])
        .await;
    assert_eq!(code, 0, "{err}");
    let files: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let listed: BTreeSet<String> = files
        .iter()
        .map(|f| f["job_id"].as_str().unwrap().to_string())
        .collect();
    let lost: Vec<&String> = answered.difference(&listed).collect();
    assert!(
        lost.is_empty(),
        "{} of {} events answered 200 are gone after kill -9: {lost:?}",
        lost.len(),
        answered.len()
    );
}

/// 1,500 jobs discovered at once (48 callbacks in flight), beside `max_discovered = 1200`
/// and `[watchlist] max_jobs = 1300`: exactly 1,200 are watched, the rest refused by the
/// app's bound (said once), and each watched job is polled; the API may then add 100 more
/// and its 101st is refused with 507. Before issue 23 each discovery checked the bound before
/// its own write and published after it, so a burst could pass the bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_discoveries_is_watched_whole_up_to_the_bounds_exactly() {
    const BURST: usize = 1_500;
    let sim = start_sim(SimOptions {
        scripted: false,
        ..signed_sim(BURST + 200)
    })
    .await;
    let mut app = daemon(
        &sim,
        true,
        "max_discovered = 1200\n\n[watchlist]\nmax_jobs = 1300\n",
    );
    let cb = app.callback_addr().await;
    let http_addr = app.http_addr().await;
    let http = client();
    let slots = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let mut tasks = tokio::task::JoinSet::new();
    for n in 1..=BURST {
        let (http, slots) = (http.clone(), slots.clone());
        tasks.spawn(async move {
            let _slot = slots.acquire_owned().await.unwrap();
            send(
                &http,
                cb,
                &format!("d{n}"),
                "RECORD_NEW_FILE_START",
                &job_id(n),
            )
            .await
        });
    }
    while let Some(status) = tasks.join_next().await {
        assert_eq!(status.unwrap(), Some(200));
    }
    // Each discovery is written in the commit its 200 waited for: the count is final now.
    assert_eq!(app.scalar("SELECT COUNT(*) FROM watchlist").await, 1_200);
    let text = crate::ha::scrape(http_addr).await;
    assert_eq!(
        metric(&text, "recwatch_discovered_total{result=\"watched\"}"),
        1_200.0
    );
    assert_eq!(
        metric(&text, "recwatch_discovered_total{result=\"full\"}"),
        300.0
    );
    let log = app.log_text();
    let warned = log
        .lines()
        .filter(|l| l.contains("refusing new run-time jobs") && l.contains("max_discovered"))
        .count();
    assert_eq!(warned, 1, "said once, not per refusal");

    // Every watched job is polled (the API's static jobs answer RUNNING).
    let watched: Vec<String> = {
        let db = app.db().await.unwrap();
        sqlx::query_scalar("SELECT job_id FROM watchlist")
            .fetch_all(&db)
            .await
            .unwrap()
    };
    wait_for("every discovered job polled", T, || async {
        let stats = sim.stats();
        let polled = stats.by_job.get("demo-app");
        watched
            .iter()
            .all(|j| polled.and_then(|p| p.get(j)).is_some_and(|n| *n > 0))
            .then_some(())
    })
    .await;

    // max_jobs still counts every run-time entry exactly.
    for n in 0..100 {
        let (status, body) = add(http_addr, &job_id(BURST + 1 + n)).await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, body) = add(http_addr, &job_id(BURST + 150)).await;
    assert_eq!(status, 507, "{body}");
    assert!(body.contains("watchlist.max_jobs"), "{body}");
    assert_eq!(app.scalar("SELECT COUNT(*) FROM watchlist").await, 1_300);
    app.stop().await;
}

/// `POST /api/v1/jobs` for `job` of demo-app: (status, body).
async fn add(addr: SocketAddr, job: &str) -> (u16, String) {
    let r = client()
        .post(format!("http://{addr}/api/v1/jobs"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(format!(r#"{{"app_id": "demo-app", "job_id": "{job}"}}"#))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}
