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
    let url = std::env::var("BENCH_PG_URL")
        .context("set BENCH_PG_URL=postgres://user@127.0.0.1:port/db (see BENCHMARKS.md, part 10)")?;
    let sqlite = write_rate(dir, "writes-full-10", false).await?;
    let store = Store::open_postgres(&Secret::new(url)).await?;
    let fsync: String = sqlx::query_scalar("SHOW fsync")
        .fetch_one(store.pg_pool().expect("PostgreSQL"))
        .await?;
    let sync_commit: String = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(store.pg_pool().expect("PostgreSQL"))
        .await?;
    let version = store.server_version().await.expect("PostgreSQL")?;
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
