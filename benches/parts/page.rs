//! Part 7, the status page at 10,000 jobs: server time and bytes of `/` (first page,
//! filtered, a later page) and its JSON, and of a job page whose job has 10,000 transitions,
//! from the real `recwatch run` over loopback HTTP, with a database seeded as after a day of
//! watching.

use super::*;

const PAGE_JOBS: usize = 10_000;
/// Transitions per job in the last 24 hours (so every list timeline has stretches to draw).
const PER_JOB: i64 = 4;
/// The heavy job's transitions, over the last 7 days.
const HEAVY: i64 = 10_000;
/// Requests per measured address.
const ROUNDS: usize = 30;

/// (median, p95, max) of `samples`, in ms.
fn spread(mut samples: Vec<f64>) -> (f64, f64, f64) {
    samples.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.95), *samples.last().unwrap())
}

/// Seeds every job's row (a tenth stopped, a seventh initialising), four transitions per job
/// in the last day, 10,000 for job-0000 over the week, and 2,000 alerts with deliveries.
async fn seed(db: &Path) -> anyhow::Result<()> {
    let store = Store::open(db).await?;
    let snapshot = serde_json::to_string(&snapshot_for(0, false))?;
    let w = store.db().writer();
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ?1 - 1)
         INSERT INTO jobs (app_id, job_id, state, stop_reason, description, snapshot, first_seen_at,
             last_polled_at, last_ok_at, last_changed_at)
         SELECT 'demo-app', printf('job-%04d', i),
             CASE WHEN i % 10 = 3 THEN 'STOPPED' WHEN i % 7 = 2 THEN 'INIT' ELSE 'RUNNING' END,
             CASE WHEN i % 10 = 3 THEN 'INTERNAL_ERROR' END,
             'bench', ?2,
             strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-2 days'),
             strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), strftime('%Y-%m-%dT%H:%M:%fZ', 'now'),
             strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-1 hours')
         FROM n",
    )
    .bind(PAGE_JOBS as i64)
    .bind(&snapshot)
    .execute(w)
    .await?;
    // Per job: INIT -> RUNNING -> INIT -> RUNNING over the last 24 hours.
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ?1 * ?2 - 1)
         INSERT INTO transitions (app_id, job_id, from_state, to_state, observed_at, snapshot, request_id)
         SELECT 'demo-app', printf('job-%04d', i / ?2),
             CASE WHEN i % ?2 = 0 THEN NULL WHEN i % 2 = 1 THEN 'INIT' ELSE 'RUNNING' END,
             CASE WHEN i % 2 = 0 THEN 'INIT' ELSE 'RUNNING' END,
             strftime('%Y-%m-%dT%H:%M:%fZ', 'now', printf('-%d minutes', 1380 - (i % ?2) * 300)),
             '{}', printf('req-%d', i)
         FROM n",
    )
    .bind(PAGE_JOBS as i64)
    .bind(PER_JOB)
    .execute(w)
    .await?;
    // The heavy job: 10,000 more over the last week, a stop among them.
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ?1 - 1)
         INSERT INTO transitions (app_id, job_id, from_state, to_state, stop_reason, observed_at, snapshot, request_id)
         SELECT 'demo-app', 'job-0000',
             CASE WHEN i % 2 = 1 THEN 'INIT' ELSE 'RUNNING' END,
             CASE WHEN i = 5000 THEN 'STOPPED' WHEN i % 2 = 0 THEN 'INIT' ELSE 'RUNNING' END,
             CASE WHEN i = 5000 THEN 'INTERNAL_ERROR' END,
             strftime('%Y-%m-%dT%H:%M:%fZ', 'now', printf('-%d seconds', 604000 - i * 60)),
             '{}', printf('heavy-%d', i)
         FROM n",
    )
    .bind(HEAVY)
    .execute(w)
    .await?;
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 1999)
         INSERT INTO alerts (id, dedup_key, rule, severity, status, app_id, job_id, summary, payload, created_at)
         SELECT printf('rw_bench%06d', i), printf('bench:%d', i), 'stopped_unexpectedly', 'critical',
             'firing', 'demo-app', printf('job-%04d', (i * 10 + 3) % ?1),
             'a job stopped unexpectedly (INTERNAL_ERROR)', '{}',
             strftime('%Y-%m-%dT%H:%M:%fZ', 'now', printf('-%d minutes', i))
         FROM n",
    )
    .bind(PAGE_JOBS as i64)
    .execute(w)
    .await?;
    sqlx::query(
        "INSERT INTO deliveries (alert_id, channel, state, attempts, next_attempt_at, sent_at, created_at)
         SELECT id, 'hook', 'sent', 1, created_at, created_at, created_at FROM alerts",
    )
    .execute(w)
    .await?;
    store.close().await;
    Ok(())
}

/// GETs `url` ROUNDS times; (median, p95, max) ms and the bytes of the last answer.
async fn measure(http: &reqwest::Client, url: &str) -> anyhow::Result<((f64, f64, f64), usize)> {
    let mut times = Vec::with_capacity(ROUNDS);
    let mut bytes = 0;
    for _ in 0..ROUNDS {
        let t = Instant::now();
        let body = http
            .get(url)
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        bytes = body.len();
    }
    Ok((spread(times), bytes))
}

pub(super) async fn status_page(dir: &Path) -> anyhow::Result<Value> {
    println!(
        "\n7. The status page with {PAGE_JOBS} jobs ({PER_JOB} transitions each in 24 h) and a job with {HEAVY} transitions: {ROUNDS} requests each, over loopback"
    );
    let sim = Sim::spawn(&["--static", "--jobs", &PAGE_JOBS.to_string()])?;
    let config = config_file(dir, "page", &sim.url, PAGE_JOBS, "");
    let text = std::fs::read_to_string(&config)?
        .replace("[http]\nlisten = \"\"", "[http]\nlisten = \"127.0.0.1:0\"");
    std::fs::write(&config, text)?;
    seed(&dir.join("page.db")).await?;
    let (daemon, log) = spawn_daemon_logged(&config, "warn,recwatch=info")?;
    let (_, line) = wait_line(&log, "HTTP endpoint:", Duration::from_secs(300)).await?;
    let addr = log_field(&line, "address").context("address in the endpoint's log line")?;
    let base = format!("http://{addr}");
    wait_line(&log, "recwatch running", Duration::from_secs(300)).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let http = reqwest::Client::new();
    // A later page: the cursor after job-4999, from the API's own walk.
    let mid: Value = http
        .get(format!("{base}/api/v1/jobs?limit=1000"))
        .send()
        .await?
        .json()
        .await?;
    let mut after = mid["next_after"]
        .as_str()
        .context("a next page")?
        .to_string();
    for _ in 0..4 {
        let next: Value = http
            .get(format!("{base}/api/v1/jobs?limit=1000&after={after}"))
            .send()
            .await?
            .json()
            .await?;
        after = next["next_after"]
            .as_str()
            .context("a next page")?
            .to_string();
    }
    let cases = [
        (
            "/ (first page: 100 jobs, header, 24 h timelines)",
            format!("{base}/"),
        ),
        (
            "/?state=STOPPED (a filter over every job)",
            format!("{base}/?state=STOPPED"),
        ),
        ("/?q=job-07 (text search)", format!("{base}/?q=job-07")),
        (
            "/?after=... (page 51 of 100)",
            format!("{base}/?after={after}"),
        ),
        (
            "/?limit=1000 (the largest page)",
            format!("{base}/?limit=1000"),
        ),
        (
            "/api/v1/jobs (first page, JSON)",
            format!("{base}/api/v1/jobs"),
        ),
        (
            "/jobs/demo-app/job-0000 (10,004 transitions: 200 shown, 7 d)",
            format!("{base}/jobs/demo-app/job-0000"),
        ),
        (
            "/api/v1/jobs/demo-app/job-0000 (JSON)",
            format!("{base}/api/v1/jobs/demo-app/job-0000"),
        ),
        (
            "/jobs/demo-app/job-0000?limit=1000 (most per page)",
            format!("{base}/jobs/demo-app/job-0000?limit=1000"),
        ),
        ("/alerts (100 of 2,000)", format!("{base}/alerts")),
    ];
    let mut out = serde_json::Map::new();
    for (name, url) in cases {
        let ((p50, p95, max), bytes) = measure(&http, &url).await?;
        row(
            name,
            format!("{p50:.1} ms"),
            &format!(
                "p95 {p95:.1} ms, max {max:.1} ms; {:.0} KB",
                bytes as f64 / 1e3
            ),
        );
        out.insert(
            name.into(),
            json!({"p50_ms": p50, "p95_ms": p95, "max_ms": max, "bytes": bytes}),
        );
    }
    drop(daemon);
    Ok(Value::Object(out))
}
