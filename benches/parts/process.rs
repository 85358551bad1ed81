//! Part 24 (issue 23, item 6): `recwatch run` as a process with the budget lifted, measured
//! as the issue measured it, beside part 1's in-process engine, plain client and SDK loop on
//! the same simulator in the same run.
//!
//! The daemon is the release binary with a config file a user would write: AK/SK, the budget
//! lifted (`rate_limit = 100000`), `max_in_flight = 32`, 10,000 jobs at `interval = "100ms"`,
//! and the HTTP endpoint on (so `/metrics` and its recorder are in the path, as shipped).
//! After the first pass (one transition per job) the polls of the next 10 s are counted twice:
//! by the simulator (answered requests) and by the daemon's own `recwatch_polls_total`.

use super::*;

/// Polls per second of `recwatch run` against the simulator at `sim`.
pub async fn run_process(sim: &Sim, dir: &Path) -> anyhow::Result<Value> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let config = config_file(dir, "process", &sim.url, THROUGHPUT_JOBS, "");
    let text = std::fs::read_to_string(&config)?
        .replacen(
            "[api]\n",
            "[api]\nrate_limit = 100000\nmax_in_flight = 32\n",
            1,
        )
        .replacen(
            "[http]\nlisten = \"\"\n",
            &format!("[http]\nlisten = \"127.0.0.1:{port}\"\n[poll]\ninterval = \"100ms\"\n"),
            1,
        );
    std::fs::write(&config, text)?;
    sim.reset_stats().await?;
    let started = Instant::now();
    let daemon = spawn_daemon(&config)?;
    let pid = daemon.0.id();
    while sim.stats().await?.requests < THROUGHPUT_JOBS as u64 {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(300),
            "recwatch run made fewer than {THROUGHPUT_JOBS} requests in 5 minutes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first_pass = started.elapsed();
    let metrics_url = format!("http://127.0.0.1:{port}/metrics");
    let polls_before = polls_total(&sim.http, &metrics_url).await?;
    let ticks_before = proc_ticks(pid)?;
    sim.reset_stats().await?;
    let t0 = Instant::now();
    tokio::time::sleep(MEASURE).await;
    let stats = sim.stats().await?;
    let secs = t0.elapsed().as_secs_f64();
    let polls_after = polls_total(&sim.http, &metrics_url).await?;
    let cpu = (proc_ticks(pid)? - ticks_before) as f64 / clock_ticks() / secs;
    drop(daemon);
    let rate = stats.requests as f64 / secs;
    let by_metrics = (polls_after - polls_before) / secs;
    row(
        "recwatch run (process), 32 in flight, interval 100ms",
        format!("{rate:.0} polls/s (its /metrics: {by_metrics:.0}/s)"),
        "",
    );
    row(
        "  its CPU, cores",
        format!("{cpu:.2}; first pass {:.1} s", first_pass.as_secs_f64()),
        "",
    );
    Ok(json!({
        "polls_per_second": rate,
        "polls_per_second_by_metrics": by_metrics,
        "requests": stats.requests,
        "by_status": stats.by_status,
        "seconds": secs,
        "cpu_cores": cpu,
        "first_pass_seconds": first_pass.as_secs_f64(),
    }))
}

/// The sum of `recwatch_polls_total` over its outcomes, as the daemon's `/metrics` says.
async fn polls_total(http: &reqwest::Client, url: &str) -> anyhow::Result<f64> {
    let text = http
        .get(url)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("recwatch_polls_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}
