//! Part 10 (issue 13): SQLite and PostgreSQL.
//!
//! - `outbox_pg`: the outbox's sustained write rate (part 4's loop: one poll outcome per
//!   transaction, every other one with a firing alert) on PostgreSQL beside SQLite, on the
//!   same machine. The server is the one `BENCH_PG_URL` names (a database recwatch may
//!   create its tables in); a durable server is what makes the comparison fair (fsync on,
//!   synchronous_commit on: a committed alert survives a crash of the server's machine, as
//!   SQLite's `synchronous=FULL` does for ours).

use super::*;

pub async fn outbox_pg(dir: &Path) -> anyhow::Result<Value> {
    println!("\n10a. Outbox writes: SQLite beside PostgreSQL ({WRITE_RUN:?} each)");
    let url = std::env::var("BENCH_PG_URL").context(
        "set BENCH_PG_URL=postgres://user@127.0.0.1:port/db (see BENCHMARKS.md, part 10)",
    )?;
    let sqlite = write_rate(dir, "writes-full-10", false).await?;
    let store = Store::open_postgres(&Secret::new(url)).await?;
    let fsync: String = sqlx::query_scalar("SHOW fsync")
        .fetch_one(store.db().pg_pool().expect("PostgreSQL"))
        .await?;
    let sync_commit: String = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(store.db().pg_pool().expect("PostgreSQL"))
        .await?;
    let version = store.db().server_version().await.expect("PostgreSQL")?;
    let pg = write_rate_on(&store).await?;
    store.close().await;
    row(
        "transition writes through Outbox, SQLite synchronous=FULL",
        format!("{sqlite:.0} /s"),
        "",
    );
    row(
        &format!("… PostgreSQL {version} (fsync={fsync}, synchronous_commit={sync_commit})"),
        format!("{pg:.0} /s"),
        "",
    );
    Ok(json!({
        "sqlite_writes_per_second": sqlite,
        "postgres_writes_per_second": pg,
        "postgres_version": version,
        "postgres_fsync": fsync,
        "postgres_synchronous_commit": sync_commit,
    }))
}

/// A config for an instance on the PostgreSQL database at `url` (`[storage] url` in place of
/// part 1's `path`).
fn pg_config(dir: &Path, name: &str, endpoint: &str, jobs: usize, url: &str) -> PathBuf {
    let path = config_file(dir, name, endpoint, jobs, "");
    let text = std::fs::read_to_string(&path).expect("just written");
    let db = dir.join(format!("{name}.db"));
    let text = text.replace(
        &format!("path = \"{}\"", db.display()),
        &format!("url = \"{url}\""),
    );
    std::fs::write(&path, text).expect("write config");
    path
}

const TAKEOVER_RUNS: usize = 10;
const TAKEOVER_JOBS: usize = 100;
const TAKEOVER_LINE: &str = "taking over as the active instance";
const STANDBY_LINE: &str = "standby: ";

/// The first `name` instance on `url`: started, and waited for until it says its role.
async fn instance(
    config: &Path,
    role_line: &str,
) -> anyhow::Result<(Proc, std::sync::mpsc::Receiver<(Instant, String)>)> {
    let (proc, rx) = spawn_daemon_logged(config, "info")?;
    wait_line(&rx, role_line, Duration::from_secs(60)).await?;
    Ok((proc, rx))
}

/// `kill -9` of the active instance of a pair, and the time until the standby logs that it
/// took over (read from its stderr as it is written); then the killed one is started again
/// as the new standby and the roles swap, `TAKEOVER_RUNS` times.
pub async fn takeover(dir: &Path) -> anyhow::Result<Value> {
    println!(
        "\n10b. Takeover after kill -9 of the active instance ({TAKEOVER_RUNS} runs, {TAKEOVER_JOBS} jobs)"
    );
    let url = std::env::var("BENCH_PG_URL").context(
        "set BENCH_PG_URL=postgres://user@127.0.0.1:port/db (see BENCHMARKS.md, part 10)",
    )?;
    let sim = Sim::spawn(&[
        "--static",
        "--jobs",
        &TAKEOVER_JOBS.to_string(),
        "--rate-limit",
        "10",
    ])?;
    let configs = [
        pg_config(dir, "ha-a", &sim.url, TAKEOVER_JOBS, &url),
        pg_config(dir, "ha-b", &sim.url, TAKEOVER_JOBS, &url),
    ];
    let mut active = instance(&configs[0], TAKEOVER_LINE).await?;
    let mut standby = instance(&configs[1], STANDBY_LINE).await?;
    let mut next = 0;
    let mut times = Vec::new();
    for run in 0..TAKEOVER_RUNS {
        // Anywhere in the renewal cycle: the lease's age at the kill varies from run to run.
        tokio::time::sleep(Duration::from_millis(2_000 + 700 * run as u64)).await;
        let killed_at = Instant::now();
        unsafe { libc::kill(active.0.0.id() as i32, libc::SIGKILL) };
        let _ = active.0.0.wait();
        let (at, _) = wait_line(&standby.1, TAKEOVER_LINE, Duration::from_secs(120)).await?;
        let took = at.duration_since(killed_at).as_secs_f64();
        row(&format!("run {}", run + 1), format!("{took:.2} s"), "");
        times.push(took);
        next = (next + 1) % 2;
        let restarted = instance(&configs[next], STANDBY_LINE).await?;
        active = std::mem::replace(&mut standby, restarted);
    }
    drop(active);
    drop(standby);
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let (p50, max) = (percentile(&sorted, 50.0), sorted[sorted.len() - 1]);
    row("takeover p50", format!("{p50:.2} s"), "");
    row(
        "takeover max",
        format!("{max:.2} s"),
        target(max <= 15.0, "<= 15 s"),
    );
    Ok(json!({ "runs": times, "p50_seconds": p50, "max_seconds": max }))
}

const RSS_JOBS: usize = 10_000;
const RSS_WARMUP: Duration = Duration::from_secs(60);

/// RSS of an active and a standby instance watching `RSS_JOBS` jobs, after `RSS_WARMUP`.
pub async fn rss_pair(dir: &Path) -> anyhow::Result<Value> {
    println!(
        "\n10c. RSS of an active and a standby instance, {RSS_JOBS} jobs, after {}s",
        RSS_WARMUP.as_secs()
    );
    let url = std::env::var("BENCH_PG_URL").context(
        "set BENCH_PG_URL=postgres://user@127.0.0.1:port/db (see BENCHMARKS.md, part 10)",
    )?;
    let sim = Sim::spawn(&[
        "--static",
        "--jobs",
        &RSS_JOBS.to_string(),
        "--rate-limit",
        "10",
    ])?;
    let a = pg_config(dir, "rss-a", &sim.url, RSS_JOBS, &url);
    let b = pg_config(dir, "rss-b", &sim.url, RSS_JOBS, &url);
    let active = instance(&a, TAKEOVER_LINE).await?;
    let standby = instance(&b, STANDBY_LINE).await?;
    tokio::time::sleep(RSS_WARMUP).await;
    let mut out = serde_json::Map::new();
    for (role, p) in [("active", &active.0), ("standby", &standby.0)] {
        let pid = p.0.id();
        let (rss, hwm) = (proc_status_kb(pid, "VmRSS")?, proc_status_kb(pid, "VmHWM")?);
        row(
            &format!("{role}: RSS (peak)"),
            format!(
                "{:.1} MiB ({:.1})",
                rss as f64 / 1024.0,
                hwm as f64 / 1024.0
            ),
            "",
        );
        out.insert(role.into(), json!({ "vm_rss_kib": rss, "vm_hwm_kib": hwm }));
    }
    Ok(Value::Object(out))
}
