//! `recwatch remediations [--json]`: what `[remediate]` re-created (or decided not to), when,
//! from which job, with which result, newest first.

use super::inspect::open_existing;
use super::{emit, print_table};
use crate::config::Config;

pub(super) async fn remediations(config: &Config, limit: i64, json: bool) -> anyhow::Result<()> {
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
            out!("  {}", super::shown(&n))?;
        }
    }
    Ok(())
}
