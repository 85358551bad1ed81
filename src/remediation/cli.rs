//! `recwatch remediations [--json]`: what `[remediate]` re-created (or decided not to), when,
//! from which job, with which result, newest first; and `recwatch check`'s `[remediate]` line.

use crate::cli::{emit, open_existing, out, print_table, shown};
use crate::config::Config;

pub(crate) async fn remediations(config: &Config, limit: i64, json: bool) -> anyhow::Result<()> {
    let store = open_existing(config).await?;
    let list = store.remediations().list(limit).await?;
    store.close().await;
    if json {
        out!("{}", serde_json::to_string_pretty(&list)?)?;
        return Ok(());
    }
    if list.is_empty() {
        out!("no remediations (see [remediate] in the configuration)")?;
        return Ok(());
    }
    let mut table = vec![
        [
            "CREATED_AT",
            "ID",
            "APP_ID",
            "JOB_ID",
            "STOP_REASON",
            "RESULT",
            "NEW_JOB_ID",
            "TRIES",
            "FINISHED_AT",
        ]
        .map(String::from)
        .to_vec(),
    ];
    let mut notes = Vec::new();
    let dash = |o: Option<String>| o.unwrap_or_else(|| "-".into());
    for r in list {
        if let Some(why) = r.error.as_ref().or(r.reason.as_ref()) {
            notes.push(format!("{} {}: {why}", r.id, r.state));
        }
        table.push(vec![
            r.created_at.to_string(),
            r.id.to_string(),
            r.app_id,
            r.old_job_id,
            dash(r.stop_reason),
            r.state.to_string(),
            dash(r.new_job_id),
            r.attempts.to_string(),
            dash(r.finished_at.map(|t| t.to_string())),
        ]);
    }
    print_table(&table)?;
    if !notes.is_empty() {
        out!("\nwhy:")?;
        for n in notes {
            out!("  {}", shown(&n))?;
        }
    }
    Ok(())
}

/// `recwatch check`'s line for `[remediate]`: off, or on which stop reasons, how often, and
/// the per-job and per-app overrides.
pub(crate) fn print_check(c: &Config) -> std::io::Result<()> {
    let r = &c.remediate;
    let on_for = |on: bool| if on { "on" } else { "off" };
    let overrides: Vec<String> = r
        .jobs
        .iter()
        .map(|(k, on)| format!("job {k} {}", on_for(*on)))
        .chain(
            r.apps
                .iter()
                .map(|(a, on)| format!("app {a} {}", on_for(*on))),
        )
        .collect();
    let overrides = match overrides.is_empty() {
        true => String::new(),
        false => format!("; overrides: {}", overrides.join(", ")),
    };
    if !r.enabled {
        return out!("  remediate  off{overrides}");
    }
    out!(
        "  remediate  on{}: re-creates a job stopped with {}, at most {} per lineage in {}{overrides}",
        if r.dry_run {
            " (dry run: says what it would do)"
        } else {
            ""
        },
        r.on.iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        r.max_restarts,
        crate::config::format_duration(r.window)
    )
}
