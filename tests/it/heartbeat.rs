//! The dead man's switch against a real receiver on loopback: pings arrive while recwatch is
//! ready, stop while it is not (the API failing makes `/readyz` 503) and resume after; a
//! receiver that never answers costs polling nothing; the URL (the check's key) never
//! appears in the log.

use crate::harness::*;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::Method;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// The path's last segment stands for the check's key.
const KEY: &str = "hb-key-5b0c1f7e";

/// Each ping as (method, path, body).
type Pings = Arc<Mutex<Vec<(Method, String, String)>>>;

/// A ping receiver on 127.0.0.1: records each request's method, path and body.
struct PingReceiver {
    addr: SocketAddr,
    pings: Pings,
    count: watch::Receiver<usize>,
}

impl PingReceiver {
    async fn start() -> PingReceiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let pings = Arc::new(Mutex::new(Vec::new()));
        let (tx, count) = watch::channel(0usize);
        let state = (pings.clone(), Arc::new(tx));
        let app = axum::Router::new()
            .fallback(
                |State((pings, tx)): State<(Pings, Arc<watch::Sender<usize>>)>,
                 method: Method,
                 uri: axum::http::Uri,
                 body: Bytes| async move {
                    let n = {
                        let mut p = pings.lock().unwrap();
                        p.push((
                            method,
                            uri.path().to_string(),
                            String::from_utf8_lossy(&body).into_owned(),
                        ));
                        p.len()
                    };
                    tx.send_replace(n);
                    "OK"
                },
            )
            .with_state(state);
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        PingReceiver { addr, pings, count }
    }

    fn url(&self) -> String {
        format!("http://{}/ping/{KEY}", self.addr)
    }

    fn count(&self) -> usize {
        *self.count.borrow()
    }

    async fn wait_count(&self, n: usize) {
        let mut rx = self.count.clone();
        tokio::time::timeout(T, rx.wait_for(|c| *c >= n))
            .await
            .unwrap_or_else(|_| panic!("{n} pings did not arrive; got {}", self.count()))
            .unwrap();
    }
}

fn heartbeat_toml(url: &str, extra: &str) -> String {
    format!("\n[heartbeat]\nurl = \"{url}\"\ninterval = \"300ms\"\n{extra}\n")
}

async fn scrape(addr: SocketAddr) -> String {
    reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn readyz(addr: SocketAddr) -> u16 {
    reqwest::get(format!("http://{addr}/readyz"))
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_while_ready_stop_while_not_and_resume_after() {
    let sim = start_sim(static_sim(3)).await;
    let receiver = PingReceiver::start().await;
    let mut cfg = AppConfig::new(&sim, 3);
    cfg.listen = "127.0.0.1:0".into();
    cfg.extra = heartbeat_toml(&receiver.url(), "method = \"post\"");
    let mut app = TestApp::new(&cfg);
    app.start();
    let addr = app.http_addr().await;
    receiver.wait_count(3).await;
    {
        let pings = receiver.pings.lock().unwrap();
        let (method, path, body) = &pings[0];
        assert_eq!(method, Method::POST);
        assert_eq!(path, &format!("/ping/{KEY}"));
        assert!(
            body.starts_with("recwatch ") && body.ends_with(" ready"),
            "{body}"
        );
    }

    // The API fails: /readyz turns 503 and the pings stop.
    sim.set_fault(recwatch_sim::Fault::new(
        recwatch_sim::FaultKind::ServerError,
    ));
    wait_for("/readyz to turn 503", T, || async {
        (readyz(addr).await == 503).then_some(())
    })
    .await;
    app.wait_log("heartbeat: not ready, pings stop", T).await;
    // /metrics tells the same: not ready, because of the API, the database is fine.
    let metrics = scrape(addr).await;
    for (series, want) in [
        ("recwatch_ready", "0"),
        ("recwatch_api_unhealthy{account=\"default\"}", "1"),
        ("recwatch_database_writable", "1"),
    ] {
        assert!(
            metrics.lines().any(|l| l == format!("{series} {want}")),
            "{series} {want} in\n{metrics}"
        );
    }
    // Nothing is in flight once that is logged (a ping is awaited before the next check).
    let stopped_at = receiver.count();
    // Proof that time went by with the heartbeat looking: three more checks that found
    // recwatch not ready, each at least an interval apart.
    let skips = |log: &str| log.matches("heartbeat: not ready, no ping").count();
    let seen = skips(&app.log_text());
    wait_for("three more unready checks", T, || {
        let n = skips(&app.log_text());
        async move { (n >= seen + 3).then_some(()) }
    })
    .await;
    assert_eq!(receiver.count(), stopped_at, "no ping while not ready");

    // The API answers again: ready, and the pings resume.
    sim.clear_faults();
    wait_for("/readyz to turn 200", T, || async {
        (readyz(addr).await == 200).then_some(())
    })
    .await;
    receiver.wait_count(stopped_at + 2).await;
    let metrics = scrape(addr).await;
    assert!(
        metrics.contains("recwatch_heartbeat_pings_total{result=\"failed\"} 0"),
        "{metrics}"
    );
    assert!(app.stop().await.success());
    let log = app.log_text();
    assert!(!log.contains(KEY), "the ping URL is never logged:\n{log}");
}

/// A receiver that accepts connections and never answers: every ping times out, is logged
/// and counted, and polling goes on as before (a job's death is seen and alerted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_never_answers_does_not_hurt_polling() {
    let sim = start_sim(static_sim(2)).await;
    // Accepts, reads nothing, answers nothing; holds each connection until the test ends.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = silent.accept().await {
            keep.lock().unwrap().push(conn);
        }
    });
    let mut cfg = AppConfig::new(&sim, 2);
    cfg.listen = "127.0.0.1:0".into();
    cfg.extra = heartbeat_toml(
        &format!("http://{silent_addr}/ping/{KEY}"),
        "timeout = \"200ms\"",
    );
    let mut app = TestApp::new(&cfg);
    app.start();
    let addr = app.http_addr().await;
    app.wait_running(2).await;
    app.wait_log("heartbeat: ping failed", T).await;

    set_state(&sim, "job-0001", "STOPPED", Some("INTERNAL_ERROR"));
    wait_for("job-0001 seen STOPPED", T, || async {
        (app.job_row("job-0001").await?.0.as_deref() == Some("STOPPED")).then_some(())
    })
    .await;
    let metrics = scrape(addr).await;
    let failed = metrics
        .lines()
        .find_map(|l| l.strip_prefix("recwatch_heartbeat_pings_total{result=\"failed\"} "))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(failed >= 1.0, "{metrics}");
    assert_eq!(
        readyz(addr).await,
        200,
        "a failing heartbeat is not a readiness problem"
    );
    assert!(app.running(), "a failing heartbeat is never fatal");
    assert!(app.stop().await.success());
    let log = app.log_text();
    assert!(log.contains("no answer within heartbeat.timeout"), "{log}");
    assert!(!log.contains(KEY), "the ping URL is never logged:\n{log}");
    assert!(
        !held.lock().unwrap().is_empty(),
        "the pings reached the receiver"
    );
}
