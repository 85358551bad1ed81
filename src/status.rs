//! What `recwatch status` and `/api/v1/jobs` both show: each watched job (from the
//! configuration or the run-time watch list, see [`crate::watchlist`]) with what the database
//! knows of it and where it came from (`source`). One row type below both, so the command and
//! the endpoint cannot drift apart. A single job's record (`/api/v1/jobs/{app_id}/{job_id}`)
//! adds the files it recorded.

use crate::config::{Config, JobConfig};
use crate::domain::JobSource;
use crate::store::{JobRow, Store};
use serde::Serialize;

/// A watched job with what the database knows of it: a row of `status --json` and of
/// `/api/v1/jobs`.
#[derive(Debug, Clone, Serialize)]
pub struct StatusRow {
    pub app_id: String,
    pub job_id: String,
    pub name: Option<String>,
    /// `individual` or `mix`.
    pub kind: crate::domain::JobKind,
    /// Where the job came from: `config`, `callback`, `api` or `cli`.
    pub source: JobSource,
    pub state: Option<String>,
    pub stop_reason: Option<String>,
    pub description: Option<String>,
    pub last_polled_at: Option<String>,
    pub last_changed_at: Option<String>,
    pub last_error: Option<String>,
    pub polled: bool,
}

impl StatusRow {
    /// `row` is the job's database row, None if it was never polled.
    pub fn new(j: &JobConfig, source: &JobSource, r: Option<&JobRow>) -> StatusRow {
        StatusRow {
            app_id: j.app_id.clone(),
            job_id: j.job_id.clone(),
            name: j.name.clone(),
            kind: j.kind,
            source: source.clone(),
            state: r.and_then(|r| r.state.clone()),
            stop_reason: r.and_then(|r| r.stop_reason.clone()),
            description: r.and_then(|r| r.description.clone()),
            last_polled_at: r.and_then(|r| r.last_polled_at.clone()),
            last_changed_at: r.and_then(|r| r.last_changed_at.clone()),
            last_error: r.and_then(|r| r.last_error.clone()),
            polled: r.is_some_and(|r| r.last_polled_at.is_some()),
        }
    }
}

/// Each watched job with what the database knows of it: the config file's in its order, then
/// the run-time list's in key order (`status`; `/api/v1/jobs` serves the same rows a page at a
/// time). The run-time list is read from the database, so this works without a daemon.
pub async fn status_rows(config: &Config, store: &Store) -> anyhow::Result<Vec<StatusRow>> {
    let rows = store.jobs().await?;
    let runtime = crate::watchlist::RuntimeList {
        version: None,
        jobs: store
            .watched_jobs()
            .await?
            .into_iter()
            .map(|j| (j.key.clone(), j))
            .collect(),
    };
    Ok(crate::watchlist::merged(config, &runtime)
        .iter()
        .map(|w| {
            StatusRow::new(
                &w.job,
                &w.source,
                rows.get(&crate::domain::JobKey::new(&w.job.app_id, &w.job.job_id)),
            )
        })
        .collect())
}
