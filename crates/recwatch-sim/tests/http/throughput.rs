//! A measurement of the simulator's request rate, ignored by default.

use crate::harness::*;
use recwatch_sim::{SimOptions, job_id};
use std::time::Duration;
use tokio::time::Instant;

/// Requests per second with keep-alive reqwest clients. Run with
/// `cargo test --release -p recwatch-sim --test http throughput -- --ignored --nocapture`
/// (not on a machine where other builds share the disk: a release build is big).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn throughput() {
    for (name, scripted) in [("static", false), ("scripted", true)] {
        let sim = spawn(SimOptions {
            jobs: 100,
            scripted,
            ..SimOptions::default()
        })
        .await;
        for connections in [1, 4] {
            sim.reset_stats();
            let run_for = Duration::from_secs(3);
            let started = Instant::now();
            let mut tasks = Vec::new();
            for t in 0..connections {
                let c = client();
                let base = sim.url();
                tasks.push(tokio::spawn(async move {
                    let mut n = 0u64;
                    while started.elapsed() < run_for {
                        let url = format!(
                            "{base}{}",
                            job_path("demo-app", &job_id((n as usize * 7 + t) % 100))
                        );
                        let response = c.get(url).send().await.unwrap();
                        assert_eq!(response.status(), 200);
                        response.bytes().await.unwrap();
                        n += 1;
                    }
                    n
                }));
            }
            let mut total = 0;
            for task in tasks {
                total += task.await.unwrap();
            }
            let rate = total as f64 / started.elapsed().as_secs_f64();
            println!("{name} jobs, {connections} keep-alive connection(s): {rate:.0} requests/s");
            assert_eq!(sim.stats().requests, total);
        }
    }
}
