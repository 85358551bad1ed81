//! High availability (issue 13): leadership through a lease in the database. On SQLite one
//! `run` owns the database (its owner lock) and takes the lease whatever it says; the tests
//! with several instances on one database are PostgreSQL's (`ha_pg`).

use crate::core::wait_states;
use crate::harness::*;
use recwatch_sim::job_id;

/// A gauge's value in a scrape.
pub fn gauge(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

pub async fn scrape(addr: std::net::SocketAddr) -> String {
    reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// A lone instance leads at once, and says so in the log, `/metrics` and `recwatch status`;
/// a clean stop releases the lease; after a kill -9 the next start takes the lease at once
/// (the owner lock proves it the only one), with the next epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_instance_leads_says_so_and_a_restart_after_kill_9_leads_at_once() {
    let sim = start_sim(static_sim(1)).await;
    let mut cfg = AppConfig::new(&sim, 1);
    cfg.listen = "127.0.0.1:0".into();
    let mut app = TestApp::new(&cfg);
    app.start();
    app.wait_log("taking over as the active instance (lease epoch 1)", T)
        .await;
    wait_states(&app, &[job_id(0)], "RUNNING").await;
    let addr = app.http_addr().await;
    let text = scrape(addr).await;
    assert_eq!(gauge(&text, "recwatch_leader"), Some(1.0), "{text}");
    assert_eq!(gauge(&text, "recwatch_leader_epoch"), Some(1.0), "{text}");
    let (code, out, err) = app.run_cmd(&["status"]).await;
    assert_eq!(code, 0, "{err}");
    let pid = app.pid();
    let first = out.lines().next().unwrap_or_default().to_string();
    assert!(
        first.starts_with("active instance: ")
            && first.contains(&format!("(pid {pid}) (lease epoch 1, expires in")),
        "{out}"
    );
    assert!(app.stop().await.success());
    let (_, out, _) = app.run_cmd(&["status"]).await;
    assert!(
        out.contains(&format!(
            "active instance: none: the lease of {} (pid {pid}) (epoch 1) ended",
            recwatch::domain::hostname()
        )),
        "released on a clean stop: {out}"
    );

    app.start();
    app.wait_log("(lease epoch 2)", T).await;
    wait_for("the second run to poll", T, || async {
        let polled = polls_of(&sim, &job_id(0));
        (polled > 0).then_some(())
    })
    .await;
    app.kill().await;
    let (_, out, _) = app.run_cmd(&["status"]).await;
    assert!(
        out.contains("(lease epoch 2, expires in"),
        "kill -9 leaves it held: {out}"
    );
    app.start();
    app.wait_log("taking over as the active instance (lease epoch 3)", T)
        .await;
    let (_, out, _) = app.run_cmd(&["status"]).await;
    assert!(out.contains("(lease epoch 3, expires in"), "{out}");
    assert!(app.stop().await.success());
}
