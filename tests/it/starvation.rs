//! Issue 22, item 1: run-time jobs never starve the config file's. When the budget cannot
//! cover every job at its interval, configured jobs keep theirs and run-time jobs share what
//! is left, and every count, metric, `check` and `status` line covers both groups; the
//! run-time list is bounded (`[watchlist] max_jobs`, `[[apps]] max_discovered`: 507, said
//! once); a discovered id the API never finds is retired without a job_not_found alert.

use crate::harness::*;
use crate::push::metric;
use recwatch_rtc::callback::{HEADER_RAND, HEADER_SIGNATURE, HEADER_TIMESTAMP, sign};
use recwatch_rtc::secret::Secret;
use recwatch_sim::{SimOptions, Simulator, job_id};
use std::net::SocketAddr;
use std::time::Duration;

const TOKEN: &str = "test-api-token-0123456789";
/// 32 characters or more: what RTC takes as an auth_key.
const KEY: &str = "the-demo-app-callback-key-0123456789";

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
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

/// A signed `RECORD_NEW_FILE_START` for `job` of demo-app: the status RTC would get.
async fn callback(addr: SocketAddr, rand: &str, job: &str) -> u16 {
    let body =
        format!(r#"{{"event_type":"RECORD_NEW_FILE_START","app_id":"demo-app","job_id":"{job}"}}"#);
    let sig = sign(&Secret::new(KEY), rand, "1700000000", body.as_bytes());
    client()
        .post(format!("http://{addr}/rtc/record-callback"))
        .header(HEADER_RAND, rand)
        .header(HEADER_TIMESTAMP, "1700000000")
        .header(HEADER_SIGNATURE, sig)
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// `jobs` jobs RUNNING until told otherwise: a scripted job would stop and leave the rotation.
async fn steady_sim(jobs: usize) -> Simulator {
    start_sim(SimOptions {
        scripted: false,
        ..signed_sim(jobs)
    })
    .await
}

async fn scrape(addr: SocketAddr) -> String {
    crate::ha::scrape(addr).await
}

/// A daemon watching job 0 from its config file, the HTTP write API on (`TOKEN`), the
/// callback receiver on for demo-app (discovering), and `extra` appended.
async fn daemon(sim: &Simulator, tune: impl FnOnce(&mut AppConfig), extra: &str) -> TestApp {
    let mut config = AppConfig::new(sim, 1);
    config.listen = "127.0.0.1:0".into();
    config.extra = format!(
        "token = \"{TOKEN}\"\n\n[callback]\nlisten = \"127.0.0.1:0\"\n\n\
         [[apps]]\napp_id = \"demo-app\"\nauth_key = \"{KEY}\"\ndiscover = true\n{extra}"
    );
    tune(&mut config);
    let mut app = TestApp::new(&config);
    app.start();
    app
}

/// 300 run-time jobs at 1 s beside one configured job at 1 s, with 20 requests/s: the
/// configured job keeps its interval (counted at the simulator) while the run-time jobs are
/// stretched; metrics, `check`, `status` and the log say how far each group is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_jobs_keep_their_interval_while_run_time_jobs_share_what_is_left() {
    let sim = steady_sim(301).await;
    let mut app = daemon(
        &sim,
        |c| {
            c.interval = "1s";
            c.rate_limit = 20;
            c.max_in_flight = 8;
        },
        "",
    )
    .await;
    let http = app.http_addr().await;
    let configured = job_id(0);
    wait_for("the configured job polled", T, || async {
        (polls_of(&sim, &configured) > 0).then_some(())
    })
    .await;
    for i in 1..=300 {
        let (status, body) = add(http, &job_id(i)).await;
        assert_eq!(status, 201, "{body}");
    }
    // Every watched job counts, whatever its source.
    let text = wait_for("the gauges over all 301 jobs", T, || async {
        let text = scrape(http).await;
        (metric(&text, "recwatch_jobs_watched") == 301.0).then_some(text)
    })
    .await;
    let ratio = metric(
        &text,
        "recwatch_rate_budget_demand_ratio{account=\"default\"}",
    );
    assert!((ratio - 301.0 / 20.0).abs() < 0.01, "demand ratio {ratio}");
    assert_eq!(
        metric(
            &text,
            "recwatch_rate_budget_stretch{account=\"default\",group=\"configured\"}"
        ),
        1.0
    );
    let runtime = metric(
        &text,
        "recwatch_rate_budget_stretch{account=\"default\",group=\"runtime\"}",
    );
    assert!(
        (runtime - 300.0 / 19.0).abs() < 0.01,
        "runtime stretch {runtime}"
    );

    // Over the next 200 requests (10 s of the budget) the configured job is polled about once
    // a second. Before issue 22 it queued behind every run-time job: about once in 15 s.
    let (start, polled) = (sim.stats().requests, polls_of(&sim, &configured));
    wait_for("200 more requests", T, || async {
        (sim.stats().requests >= start + 200).then_some(())
    })
    .await;
    let got = polls_of(&sim, &configured) - polled;
    assert!(
        got >= 5,
        "the configured job was polled {got} times in 200 requests"
    );
    assert_within_budget(&sim.stats(), 20, "configured first");

    let (_, out, err) = app.run_cmd(&["check"]).await;
    for want in [
        "configured: 1 job, 1.00 requests/s asked, polled at their interval",
        "runtime: 300 jobs, 300.00 requests/s asked, polled 15.8x less often than configured",
        "demand     301.00 requests/s for 301 jobs",
    ] {
        assert!(out.contains(want), "check lacks {want:?}:\n{out}\n{err}");
    }
    let (code, out, err) = app.run_cmd(&["status"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("budget runtime: 300 jobs") && out.contains("budget configured: 1 job"),
        "{out}"
    );
    let log = app.log_text();
    assert!(log.contains("configured jobs come first"), "{log}");
    app.stop().await;
}

/// `[watchlist] max_jobs` and `max_discovered`: past either, discovery stops and the API
/// answers 507 with the reason; each bound is warned of once however many refusals follow,
/// and gauges say it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_time_list_is_bounded_507_said_once_and_discovery_stops() {
    let sim = steady_sim(8).await;
    let mut app = daemon(
        &sim,
        |_| {},
        "max_discovered = 1\n\n[watchlist]\nmax_jobs = 3\n",
    )
    .await;
    let http = app.http_addr().await;
    let cb = app.callback_addr().await;
    let watched = || async { app.scalar("SELECT COUNT(*) FROM watchlist").await };

    // The app's one discovery, then its bound.
    assert_eq!(callback(cb, "r1", &job_id(1)).await, 200);
    wait_for("the first discovery", T, || async {
        (watched().await == 1).then_some(())
    })
    .await;
    for (rand, job) in [("r2", job_id(2)), ("r3", job_id(3))] {
        assert_eq!(callback(cb, rand, &job).await, 200);
    }
    let text = wait_for("discovery full", T, || async {
        let text = scrape(http).await;
        (metric(&text, "recwatch_discovery_full{app_id=\"demo-app\"}") == 1.0).then_some(text)
    })
    .await;
    assert_eq!(
        metric(&text, "recwatch_discovered_total{result=\"full\"}"),
        2.0
    );
    assert_eq!(watched().await, 1, "discovery stopped for the app");

    // The API is not bound by the app's discoveries, only by max_jobs.
    for job in [job_id(4), job_id(5)] {
        assert_eq!(add(http, &job).await.0, 201);
    }
    for job in [job_id(6), job_id(7)] {
        let (status, body) = add(http, &job).await;
        assert_eq!(status, 507, "{body}");
        assert!(body.contains("watchlist.max_jobs"), "{body}");
    }
    let text = scrape(http).await;
    assert_eq!(metric(&text, "recwatch_watchlist_full"), 1.0);
    assert_eq!(
        metric(&text, "recwatch_api_writes_total{result=\"full\"}"),
        2.0
    );
    assert_eq!(watched().await, 3);

    let log = app.log_text();
    let warned = |what: &str| {
        log.lines()
            .filter(|l| l.contains("refusing new run-time jobs") && l.contains(what))
            .count()
    };
    assert_eq!(
        warned("watchlist.max_jobs"),
        1,
        "once, not per refusal:\n{log}"
    );
    assert_eq!(warned("max_discovered"), 1, "once, not per refusal:\n{log}");
    assert!(
        !log.contains("API write refused"),
        "a refusal by the bound is not logged each time:\n{log}"
    );
    app.stop().await;
}

/// A discovered id the API does not know is polled a few times, then retired: no
/// job_not_found alert (nobody asked for it), no longer watched, no longer polled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discovered_job_never_found_is_retired_without_an_alert() {
    let sim = steady_sim(2).await;
    let mut app = daemon(&sim, |c| c.interval = "200ms", "").await;
    let http = app.http_addr().await;
    let cb = app.callback_addr().await;
    assert_eq!(callback(cb, "g1", "ghost-job").await, 200);
    wait_for("the ghost retired", T, || async {
        let text = scrape(http).await;
        (metric(&text, "recwatch_discovered_total{result=\"retired\"}") == 1.0).then_some(())
    })
    .await;
    assert_eq!(
        polls_of(&sim, "ghost-job"),
        3,
        "retired after three answers"
    );
    wait_for("the list read back without it", T, || async {
        (app.scalar("SELECT COUNT(*) FROM watchlist").await == 0).then_some(())
    })
    .await;
    // The configured job goes on being polled; the ghost is not polled again.
    let polled = polls_of(&sim, &job_id(0));
    wait_for("more polls of the configured job", T, || async {
        (polls_of(&sim, &job_id(0)) >= polled + 10).then_some(())
    })
    .await;
    assert_eq!(polls_of(&sim, "ghost-job"), 3);
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM alerts WHERE rule = 'job_not_found'")
            .await,
        0,
        "never asked for: never alerted"
    );
    app.stop().await;
}

/// A measurement, not a check (BENCHMARKS.md part 12; `cargo test --test it
/// starvation::measure -- --ignored --nocapture`): issue 22's flood, 3,000 jobs discovered by
/// signed callbacks as fast as 32 connections send them, beside one configured job at 10 s
/// with the default budget (10 requests/s). Prints how often the configured job is polled in
/// the next 60 s and how long its death then takes to be alerted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn measure_a_flood_of_discoveries_beside_a_configured_job() {
    use recwatch_rtc::model::{JobSnapshot, State, StopReason};
    let sim = steady_sim(3001).await;
    let mut app = daemon(
        &sim,
        |c| {
            c.interval = "10s";
            c.rate_limit = 10;
        },
        "",
    )
    .await;
    let http = app.http_addr().await;
    let cb = app.callback_addr().await;
    let configured = job_id(0);
    wait_for("the configured job polled", T, || async {
        (polls_of(&sim, &configured) > 0).then_some(())
    })
    .await;
    let started = std::time::Instant::now();
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(32));
    let mut sends = tokio::task::JoinSet::new();
    for i in 1..=3000 {
        let permit = sem.clone().acquire_owned().await.unwrap();
        sends.spawn(async move {
            let status = callback(cb, &format!("f{i}"), &job_id(i)).await;
            drop(permit);
            status
        });
    }
    let mut ok = 0;
    while let Some(s) = sends.join_next().await {
        ok += usize::from(s.unwrap() == 200);
    }
    let sent_in = started.elapsed();
    wait_for("3,000 discovered", T, || async {
        (app.scalar("SELECT COUNT(*) FROM watchlist").await == 3000).then_some(())
    })
    .await;
    let listed_in = started.elapsed();
    let before = polls_of(&sim, &configured);
    let requests = sim.stats().requests;
    tokio::time::sleep(Duration::from_secs(60)).await;
    let polled = polls_of(&sim, &configured) - before;
    let requests = sim.stats().requests - requests;
    let text = scrape(http).await;
    let dead = std::time::Instant::now();
    sim.set_job(
        "demo-app",
        &configured,
        JobSnapshot {
            state: Some(State::Stopped),
            stop_reason: Some(StopReason::InternalError),
            ..Default::default()
        },
    );
    wait_for("the death alerted", T, || async {
        (app.scalar("SELECT COUNT(*) FROM alerts WHERE rule = 'stopped_unexpectedly'")
            .await
            > 0)
        .then_some(())
    })
    .await;
    println!(
        "flood: {ok} of 3000 callbacks answered 200 in {sent_in:.1?}, all listed after {listed_in:.1?}; \
         in the next 60 s: {polled} polls of the configured job (interval 10 s), {requests} requests in all; \
         stretch configured {} runtime {}; death alerted {:.1?} after it",
        metric(
            &text,
            "recwatch_rate_budget_stretch{account=\"default\",group=\"configured\"}"
        ),
        metric(
            &text,
            "recwatch_rate_budget_stretch{account=\"default\",group=\"runtime\"}"
        ),
        dead.elapsed()
    );
    app.stop().await;
}
