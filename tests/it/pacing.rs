//! Issue 23, the poller's items: the budget as the gateway counts it (never more than
//! `rate_limit` arrivals in any sliding second at the simulator, on a machine kept busy), jobs
//! added at run time polled ahead of the round, and storms of record callbacks: every stormed
//! job polled (no hint dropped), the round still going afterwards.

use crate::harness::*;
use crate::push::metric;
use recwatch_rtc::callback::{HEADER_RAND, HEADER_SIGNATURE, HEADER_TIMESTAMP, sign};
use recwatch_rtc::secret::Secret;
use recwatch_sim::{SimOptions, Simulator, job_id};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const T: Duration = Duration::from_secs(120);
const TOKEN: &str = "test-api-token-0123456789";
/// 32 characters or more: what RTC takes as an auth_key.
const KEY: &str = "the-demo-app-callback-key-0123456789";

/// Processes that burn a CPU each for as long as this lives (killed, by their own ids, when
/// dropped, a failed assertion included).
struct Burners(Vec<Child>);

impl Burners {
    fn start(n: usize) -> Burners {
        Burners(
            (0..n)
                .map(|_| {
                    Command::new("sh")
                        .args(["-c", "while :; do :; done"])
                        .stdout(Stdio::null())
                        .spawn()
                        .expect("sh runs")
                })
                .collect(),
        )
    }
}

impl Drop for Burners {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn steady_sim(jobs: usize) -> Simulator {
    start_sim(SimOptions {
        scripted: false,
        ..signed_sim(jobs)
    })
    .await
}

/// Item 2: with two processes burning the CPU beside the daemon and the simulator, and a
/// watch list that asks for more than the budget, no sliding second at the simulator ever
/// holds more than `rate_limit` (10) arrivals, over 40 s (about 400 requests); and the budget
/// is used (every job polled, more than once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arrivals_never_exceed_the_rate_in_any_sliding_second_on_a_busy_machine() {
    let sim = steady_sim(40).await;
    let mut config = AppConfig::new(&sim, 40);
    config.interval = "1s";
    config.rate_limit = 10;
    config.max_in_flight = 8;
    let mut app = TestApp::new(&config);
    app.start();
    wait_for("polling under way", T, || async {
        (sim.stats().requests >= 5).then_some(())
    })
    .await;
    let burners = Burners::start(2);
    sim.reset_stats();
    let start = std::time::Instant::now();
    wait_for("40 s of polling beside the burners", T, || async {
        (start.elapsed() >= Duration::from_secs(40)).then_some(())
    })
    .await;
    let stats = sim.stats();
    drop(burners);
    app.stop().await;
    assert!(
        stats.max_per_sliding_second <= 10,
        "{} arrivals within one sliding second at the simulator, rate_limit 10 (per second: {:?})",
        stats.max_per_sliding_second,
        stats.per_second
    );
    let polled = stats.by_job.get("demo-app").map_or(0, |j| j.len());
    assert_eq!(polled, 40, "every job polled: {:?}", stats.by_job);
    assert!(stats.requests >= 100, "{} requests", stats.requests);
}
