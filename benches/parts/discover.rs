//! Part 17 (issue 23, item 4, the discovery half): classes start together. 10,000 jobs in the
//! config file, `rate_limit` 100, and 5,000 new jobs announced by signed
//! `RECORD_NEW_FILE_START` callbacks of a discovering app within a minute
//! (`BENCH_DISCOVER_SECONDS`, default 60; 0 sends them as fast as 200 in flight allow). Measured:
//! when the last is on the watch list (each 200 waits for the commit that wrote its entry),
//! the callbacks' answer latency, the daemon's CPU and RSS over the burst, and how many of
//! the 5,000 the simulator has seen polled once by the end of the burst and then over time
//! (the poller's pace: at most `rate_limit` requests a second, shared with the round).
//! `BENCH_DISCOVER_JOBS` discovers another number (part 21: 50,000), `BENCH_DISCOVER_WAIT`
//! shortens the wait for first polls; RSS is read again at its end.

use super::*;
use push::KEY;

const CONFIGURED: usize = 10_000;
const RATE: u32 = 100;
const IN_FLIGHT: usize = 200;

/// How many jobs are discovered: `BENCH_DISCOVER_JOBS`, 5,000 unless set (part 21 also
/// measured 50,000).
fn discovered() -> usize {
    env_number("BENCH_DISCOVER_JOBS", 5_000) as usize
}

/// How long after the burst the first polls of the discovered jobs are watched for
/// (`BENCH_DISCOVER_WAIT` seconds, 240 unless set).
fn poll_wait() -> Duration {
    Duration::from_secs(env_number("BENCH_DISCOVER_WAIT", 240))
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

fn spread() -> Duration {
    Duration::from_secs(env_number("BENCH_DISCOVER_SECONDS", 60))
}

/// How many of the discovered jobs the simulator has had a request for.
async fn polled(sim: &Sim, discovered: usize) -> anyhow::Result<usize> {
    let stats = sim.stats().await?;
    let by_job = stats.by_job.get(APP);
    Ok((CONFIGURED..CONFIGURED + discovered)
        .filter(|i| {
            by_job
                .and_then(|j| j.get(&recwatch_sim::job_id(*i)))
                .is_some_and(|n| *n > 0)
        })
        .count())
}

pub async fn discovery_storm(dir: &Path) -> anyhow::Result<Value> {
    let spread = spread();
    let (discovered, poll_wait) = (discovered(), poll_wait());
    println!(
        "\n17. discovery storm: {discovered} new jobs announced within {} s beside {CONFIGURED} configured, rate_limit {RATE}",
        spread.as_secs()
    );
    let sim = Sim::spawn(&[
        "--static",
        "--jobs",
        &(CONFIGURED + discovered).to_string(),
        "--rate-limit",
        &RATE.to_string(),
    ])?;
    let (hook, _arrivals) = receiver().await?;
    let config = config_file(
        dir,
        "discover",
        &sim.url,
        CONFIGURED,
        &format!(
            r#"[poll]
interval = "10s"
[callback]
listen = "127.0.0.1:0"
[[apps]]
app_id = "{APP}"
auth_key = "{KEY}"
discover = true
max_discovered = 100000
[[notify.webhook]]
name = "bench"
url = "{hook}"
"#
        ),
    );
    api_rate(&config, RATE)?;
    let (daemon, _log, url) = push::registered_daemon(&config, &sim).await?;
    let pid = daemon.0.id();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss_before = proc_status_kb(pid, "VmRSS")?;
    let ticks_before = proc_ticks(pid)?;
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(IN_FLIGHT)
        .build()?;
    let key = Secret::new(KEY);
    let slots = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..discovered {
        let due = started + spread.mul_f64(n as f64 / discovered as f64);
        tokio::time::sleep_until(due.into()).await;
        let permit = slots.clone().acquire_owned().await?;
        let job = recwatch_sim::job_id(CONFIGURED + n);
        let body = format!(
            r#"{{"event_type":"RECORD_NEW_FILE_START","app_id":"{APP}","job_id":"{job}","record_format":"MP4"}}"#
        );
        let rand = format!("d{n}");
        let timestamp = chrono::Utc::now().timestamp().to_string();
        let signature = recwatch_rtc::callback::sign(&key, &rand, &timestamp, body.as_bytes());
        let request = http
            .post(&url)
            .header(recwatch_rtc::callback::HEADER_RAND, rand)
            .header(recwatch_rtc::callback::HEADER_TIMESTAMP, timestamp)
            .header(recwatch_rtc::callback::HEADER_SIGNATURE, signature)
            .body(body);
        tasks.spawn(async move {
            let _permit = permit;
            let ok = request
                .send()
                .await
                .is_ok_and(|r| r.status().as_u16() == 200);
            (ok, due.elapsed().as_secs_f64())
        });
    }
    let mut latencies = Vec::new();
    let mut ok = 0;
    while let Some(done) = tasks.join_next().await {
        let (answered, latency) = done?;
        ok += usize::from(answered);
        latencies.push(latency);
    }
    let all_watched = started.elapsed().as_secs_f64();
    let cpu = (proc_ticks(pid)? - ticks_before) as f64 / clock_ticks() / all_watched;
    let rss_after = proc_status_kb(pid, "VmRSS")?;
    let polled_at_end = polled(&sim, discovered).await?;
    let watched: i64 = {
        let db = dir.join("discover.db");
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", db.display())).await?;
        sqlx::query_scalar("SELECT COUNT(*) FROM watchlist")
            .fetch_one(&pool)
            .await?
    };
    // Then the poller's pace: the first poll of each, at most RATE requests a second shared
    // with the configured round.
    let mut all_polled = None;
    let wait_from = Instant::now();
    let mut last = polled_at_end;
    while wait_from.elapsed() < poll_wait {
        last = polled(&sim, discovered).await?;
        if last == discovered {
            all_polled = Some(started.elapsed().as_secs_f64());
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let hwm_kb = proc_status_kb(pid, "VmHWM").unwrap_or(0);
    let rss_end = proc_status_kb(pid, "VmRSS").unwrap_or(0);
    drop(daemon);
    latencies.sort_by(f64::total_cmp);
    let p50 = percentile(&latencies, 50.0) * 1000.0;
    let p99 = percentile(&latencies, 99.0) * 1000.0;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    row(
        "discoveries answered 200 / on the watch list",
        format!("{ok} / {watched}"),
        target(ok == discovered && watched == discovered as i64, "all"),
    );
    row(
        "the last on the list after",
        format!("{all_watched:.1} s"),
        &format!("spread over {} s", spread.as_secs()),
    );
    row(
        "answer latency p50 / p99",
        format!("{p50:.1} / {p99:.1} ms"),
        "",
    );
    row(
        "daemon CPU over the burst",
        format!("{:.0} %", cpu * 100.0),
        "",
    );
    row(
        "daemon RSS before / after / at the end / VmHWM",
        format!(
            "{:.1} / {:.1} / {:.1} / {:.1} MiB",
            rss_before as f64 / 1024.0,
            rss_after as f64 / 1024.0,
            rss_end as f64 / 1024.0,
            hwm_kb as f64 / 1024.0
        ),
        "",
    );
    row(
        "discovered jobs polled once: at the burst's end / finally",
        format!("{polled_at_end} / {last}"),
        &match all_polled {
            Some(t) => format!("all {t:.0} s after the first"),
            None => format!("not all within {} s", poll_wait.as_secs()),
        },
    );
    row(
        "load average (1/5/15 min) after",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        "",
    );
    Ok(json!({
        "answered_200": ok,
        "watched": watched,
        "last_watched_s": all_watched,
        "p50_ms": p50,
        "p99_ms": p99,
        "cpu": cpu,
        "rss_before_kib": rss_before,
        "rss_after_kib": rss_after,
        "rss_end_kib": rss_end,
        "vm_hwm_kib": hwm_kb,
        "polled_at_end": polled_at_end,
        "polled_finally": last,
        "all_polled_s": all_polled,
        "loadavg": load.trim(),
    }))
}
