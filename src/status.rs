//! What `recwatch status` and `/api/v1/jobs` both show: each watched job (from the
//! configuration) with what the database knows of it. One row type below both, so the command
//! and the endpoint cannot drift apart. A single job's record (`/api/v1/jobs/{app_id}/{job_id}`)
//! adds the files it recorded.

use crate::config::{Config, JobConfig};
use crate::store::{JobRow, Store};
use serde::Serialize;

/// A watched job with what the database knows of it: a row of `status --json` and of
/// `/api/v1/jobs`.
#[derive(Debug, Clone, Serialize)]
pub struct StatusRow {
    pub app_id: String,
    pub job_id: String,
    pub name: Option<String>,
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
    pub fn new(j: &JobConfig, r: Option<&JobRow>) -> StatusRow {
        StatusRow {
            app_id: j.app_id.clone(),
            job_id: j.job_id.clone(),
            name: j.name.clone(),
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

/// Each watched job with what the database knows of it, in config order (`status`;
/// `/api/v1/jobs` serves the same rows a page at a time).
pub async fn status_rows(config: &Config, store: &Store) -> anyhow::Result<Vec<StatusRow>> {
    let rows = store.jobs().await?;
    Ok(config
        .jobs
        .iter()
        .map(|j| {
            StatusRow::new(
                j,
                rows.get(&crate::domain::JobKey::new(&j.app_id, &j.job_id)),
            )
        })
        .collect())
}
