//! The read-only inspection commands: `status`, `history`, `alerts` and `forwards`. They open the
//! database without owning it, so they work beside a running daemon.

use super::{emit, print_table};
use crate::config::Config;
use crate::domain::DeliveryState;
use crate::store::Store;

pub(crate) async fn open_existing(config: &Config) -> anyhow::Result<Store> {
    if config.storage.url.is_none() && !config.storage.path.exists() {
        anyhow::bail!(
            "no database at {} yet: start `recwatch run` or `recwatch poll-once` first (or check storage.path)",
            config.storage.path.display()
        );
    }
    Store::open_config(&config.storage).await
}

/// `status`; `rows` are the jobs' rows if they were read ahead (see
/// [`crate::store::JobStatuses::read_ahead`]).
pub(super) async fn status(
    config: &Config,
    json: bool,
    rows: Option<crate::store::JobStatuses>,
) -> anyhow::Result<()> {
    let store = open_existing(config).await?;
    if json {
        let written = status_json(config, &store, rows).await;
        // Closing checkpoints the WAL, so the next command does not have to read it back.
        store.close().await;
        return written;
    }
    let lease = store.lease().read().await?;
    out!(
        "active instance: {}",
        crate::leader::describe(
            lease.as_ref(),
            crate::leader::Successor::on(&config.storage.database())
        )
    )?;
    let printed =
        crate::status::with_rows(config, &store, rows, |jobs| print_status(config, jobs)).await;
    store.close().await;
    printed??;
    Ok(())
}

/// `status`'s budget lines and its table, every cell borrowed from `jobs`, made each time it
/// is asked for (the widths, then the lines) rather than held.
fn print_status<'c>(config: &Config, jobs: &crate::status::Shown<'c>) -> std::io::Result<()> {
    print_budget(config, jobs)?;
    let header = [
        "NAME",
        "APP_ID",
        "JOB_ID",
        "SOURCE",
        "STATE",
        "STOP_REASON",
        "LAST_POLL",
        "LAST_CHANGE",
        "ERROR",
    ];
    let cells = |r: &crate::status::Sorted<'c>| {
        [
            shown(r.name),
            r.app_id,
            r.job_id,
            r.source.as_str(),
            shown(r.state),
            shown(r.stop_reason),
            shown(r.last_polled_at),
            shown(r.last_changed_at),
            shown(r.last_error),
        ]
    };
    if !config.several_accounts() {
        return super::print_table_split(jobs.len() + 1, |i| {
            i.checked_sub(1)
                .and_then(|i| jobs.get(i))
                .map_or(header, |r| cells(&r))
        });
    }
    // With several accounts, the account that polls each job after its job id.
    let with_account = |account: &'c str, row: [&'c str; 9]| {
        let [name, app, job, rest @ ..] = row;
        let [a, b, c, d, e, f] = rest;
        [name, app, job, account, a, b, c, d, e, f]
    };
    super::print_table_split(jobs.len() + 1, |i| {
        match i.checked_sub(1).and_then(|i| jobs.get(i)) {
            Some(r) => with_account(r.account, cells(&r)),
            None => with_account("ACCOUNT", header),
        }
    })
}

fn shown(v: Option<&str>) -> &str {
    v.unwrap_or("-")
}

/// `status --json`: one JSON array of every watched job, written row by row and flushed a page
/// at a time (see [`crate::status::write_json`]), never built whole: 100,000 jobs are 30 MB
/// of JSON.
async fn status_json(
    config: &Config,
    store: &Store,
    rows: Option<crate::store::JobStatuses>,
) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(std::io::stdout());
    crate::status::write_json(config, store, rows, crate::status::STATUS_PAGE, &mut out).await
}

/// How far each group of the watch list is stretched (configured jobs first), as the daemon
/// schedules them: one line per group.
/// With several accounts, each account's budget over its own jobs (one line per group, the
/// account named).
fn print_budget(config: &Config, jobs: &crate::status::Shown<'_>) -> std::io::Result<()> {
    use crate::config::JobGroup;
    if !config.several_accounts() {
        let b = config.budget(jobs.runtime());
        for g in JobGroup::ALL {
            out!("budget {}", b.describe(g))?;
        }
        return Ok(());
    }
    let mut runtime: std::collections::HashMap<&str, usize> = Default::default();
    for r in (0..jobs.len()).filter_map(|i| jobs.get(i)) {
        if *r.source != crate::domain::JobSource::Config {
            *runtime.entry(r.account).or_default() += 1;
        }
    }
    for a in config.all_accounts() {
        let Some(narrowed) = config.narrowed(&a.name) else {
            continue;
        };
        let b = narrowed.budget(runtime.get(&*a.name).copied().unwrap_or(0));
        for g in JobGroup::ALL {
            out!("budget {} {}", a.name, b.describe(g))?;
        }
    }
    Ok(())
}

/// What `history` shows: one job or all, since when, at most how many rows.
pub(super) struct HistoryOf {
    pub(super) job: Option<String>,
    pub(super) since: Option<std::time::Duration>,
    pub(super) limit: i64,
}

/// `history`: the transitions, then the files the jobs recorded; `files` shows only the files.
pub(super) async fn history(
    config: &Config,
    what: HistoryOf,
    files_only: bool,
    json: bool,
) -> anyhow::Result<()> {
    let store = open_existing(config).await?;
    let since = what.since.map(|d| {
        chrono::Utc::now() - chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
    });
    let job = what.job.as_deref();
    let mut rows = if files_only {
        Vec::new()
    } else {
        store.transitions().history(job, since, what.limit).await?
    };
    store.remediations().link_replacements(&mut rows).await?;
    let since_text = since.map(crate::domain::timestamp);
    let files = if files_only || !json {
        store
            .callbacks()
            .recorded_files(None, job, since_text.as_deref(), what.limit)
            .await?
    } else {
        Vec::new()
    };
    store.close().await;
    match (json, files_only) {
        (true, true) => out!("{}", serde_json::to_string_pretty(&files)?)?,
        (true, false) => out!("{}", serde_json::to_string_pretty(&rows)?)?,
        (false, true) => print_files(files)?,
        (false, false) => {
            print_transitions(rows)?;
            if !files.is_empty() {
                out!("\nrecorded files:")?;
                print_files(files)?;
            }
        }
    }
    Ok(())
}

fn print_transitions(rows: Vec<crate::store::TransitionRow>) -> anyhow::Result<()> {
    let mut table = vec![
        [
            "OBSERVED_AT",
            "NAME",
            "APP_ID",
            "JOB_ID",
            "FROM",
            "TO",
            "STOP_REASON",
            "DESCRIPTION",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for r in rows {
        table.push(vec![
            r.observed_at.to_string(),
            r.name.unwrap_or_else(|| "-".into()),
            r.app_id,
            r.job_id,
            r.from_state.unwrap_or_else(|| "(first seen)".into()),
            r.to_state,
            r.stop_reason.unwrap_or_else(|| "-".into()),
            // A remediation's link is part of what happened to the job.
            [
                r.description,
                r.replaced_by.map(|j| format!("replaced by {j}")),
                r.replaces.map(|j| format!("replaces {j}")),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join("; "),
        ]);
        if table.last().is_some_and(|row| row[7].is_empty()) {
            if let Some(row) = table.last_mut() {
                row[7] = "-".into();
            }
        }
    }
    Ok(print_table(&table)?)
}

/// The files table: the download URL whole (it is the user's own data, and a shortened one
/// cannot be used), the OBS object as bucket/object.
fn print_files(files: Vec<crate::store::RecordedFileRow>) -> anyhow::Result<()> {
    let shown = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let number = |v: Option<i64>| v.map_or_else(|| "-".into(), |n| n.to_string());
    let mut table = vec![
        [
            "RECEIVED_AT",
            "APP_ID",
            "JOB_ID",
            "FORMAT",
            "DURATION_S",
            "SIZE_BYTES",
            "OBS_OBJECT",
            "DOWNLOAD_URL",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for f in files {
        let object = match (f.obs_bucket, f.obs_object) {
            (Some(b), Some(o)) => format!("{b}/{o}"),
            (None, Some(o)) => o,
            _ => "-".into(),
        };
        table.push(vec![
            f.received_at.to_string(),
            f.app_id,
            f.job_id,
            shown(f.record_format),
            number(f.record_duration),
            number(f.file_size),
            object,
            shown(f.download_url),
        ]);
    }
    Ok(print_table(&table)?)
}

pub(super) async fn alerts(
    config: &Config,
    pending: bool,
    limit: i64,
    json: bool,
) -> anyhow::Result<()> {
    let store = open_existing(config).await?;
    let list = store.alerts().list(pending, limit).await?;
    store.close().await;
    if json {
        out!("{}", serde_json::to_string_pretty(&list)?)?;
        return Ok(());
    }
    let mut table = vec![
        [
            "CREATED_AT",
            "ID",
            "RULE",
            "SEVERITY",
            "STATUS",
            "JOB",
            "DELIVERIES",
            "SUMMARY",
        ]
        .map(String::from)
        .to_vec(),
    ];
    // Why a delivery is dead or still failing, under the table: the last error as the
    // receiver gave it (HTTP status and body, SMTP reply), too long for a column.
    let mut reasons = Vec::new();
    for a in list {
        for d in &a.deliveries {
            if let (Some(e), false) = (&d.last_error, d.state == DeliveryState::Sent) {
                reasons.push(format!("{} {} {}: {e}", a.id, d.channel, d.state));
            }
        }
        let deliveries = if a.deliveries.is_empty() {
            "(no channels)".to_string()
        } else {
            a.deliveries
                .iter()
                .map(|d| {
                    format!(
                        "{}:{}{}",
                        d.channel,
                        d.state,
                        if d.attempts > 1 {
                            format!("({}x)", d.attempts)
                        } else {
                            String::new()
                        }
                    )
                })
                .collect::<Vec<_>>()
                .join(" ")
        };
        table.push(vec![
            a.created_at.to_string(),
            a.id,
            a.rule.to_string(),
            a.severity.to_string(),
            a.status.to_string(),
            a.job_id.unwrap_or_else(|| "-".into()),
            deliveries,
            a.summary,
        ]);
    }
    print_table(&table)?;
    if !reasons.is_empty() {
        out!("\nlast errors:")?;
        for r in reasons {
            out!("  {}", super::shown(&r))?;
        }
    }
    Ok(())
}

/// `forwards`: the relays to `forward_to`, newest first, with why one is still pending or dead.
pub(super) async fn forwards(
    config: &Config,
    pending: bool,
    limit: i64,
    json: bool,
) -> anyhow::Result<()> {
    let store = open_existing(config).await?;
    let list = store.forwards().list(pending, limit).await?;
    store.close().await;
    if json {
        out!("{}", serde_json::to_string_pretty(&list)?)?;
        return Ok(());
    }
    let mut table = vec![
        [
            "CREATED_AT",
            "ID",
            "APP_ID",
            "JOB_ID",
            "EVENT",
            "STATE",
            "ATTEMPTS",
            "NEXT_ATTEMPT",
        ]
        .map(String::from)
        .to_vec(),
    ];
    let mut reasons = Vec::new();
    for f in list {
        if let (Some(e), false) = (&f.last_error, f.state == DeliveryState::Sent) {
            reasons.push(format!("{} {}: {e}", f.id, f.state));
        }
        let next = if f.state == DeliveryState::Pending {
            f.next_attempt_at.to_string()
        } else {
            "-".into()
        };
        table.push(vec![
            f.created_at.to_string(),
            f.id.to_string(),
            f.app_id,
            f.job_id.unwrap_or_else(|| "-".into()),
            f.event_type,
            f.state.to_string(),
            f.attempts.to_string(),
            next,
        ]);
    }
    print_table(&table)?;
    if !reasons.is_empty() {
        out!("\nlast errors:")?;
        for r in reasons {
            out!("  {}", super::shown(&r))?;
        }
    }
    Ok(())
}
