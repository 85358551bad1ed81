//! A job's page (`/jobs/{app_id}/{job_id}` and `/api/v1/jobs/{app_id}/{job_id}`): the job as
//! the list shows it with a 7-day timeline, its transitions newest first a page at a time, the
//! files its callbacks said it recorded, and its alerts with each delivery's state.

use super::jobs::{JobItem, item};
use super::timeline::Change;
use super::{Sources, ViewError, cursor_param, encode_cursor, parse_limit};
use crate::config::JobConfig;
use crate::domain::{Phase, Timestamp, timestamp};
use crate::store::{AlertView, JobRow, LeaseRow, RecordedFileRow, TransitionRow};
use chrono::Duration;
use serde::{Deserialize, Serialize};

/// The window of a job page's timeline.
pub const JOB_WINDOW: Duration = Duration::days(7);
/// Transitions per page: the default and the most.
pub const TRANSITIONS_DEFAULT: usize = 200;
pub const TRANSITIONS_MAX: usize = 1000;
/// The newest alerts and files shown.
pub const ALERTS_SHOWN: i64 = 50;
pub const FILES_SHOWN: i64 = 100;

/// The job page's query parameters.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct JobPageQuery {
    pub limit: Option<String>,
    /// The cursor of the last transition shown.
    pub before: Option<String>,
}

/// Where the next page of a job's transitions starts: after the transition observed at
/// `observed_at` with row id `id` (newest first, by both). A link carries it as the JSON
/// array `[observed_at, id]` in base64url, the form it had as a pair, so a link made before
/// the cursor was typed still decodes, and one holding no time is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "(Timestamp, i64)", into = "(Timestamp, i64)")]
pub struct TransitionsCursor {
    pub observed_at: Timestamp,
    pub id: i64,
}

impl From<(Timestamp, i64)> for TransitionsCursor {
    fn from((observed_at, id): (Timestamp, i64)) -> TransitionsCursor {
        TransitionsCursor { observed_at, id }
    }
}

impl From<TransitionsCursor> for (Timestamp, i64) {
    fn from(c: TransitionsCursor) -> (Timestamp, i64) {
        (c.observed_at, c.id)
    }
}

/// A job's page.
/// The JSON keeps the shape `/api/v1/jobs/{app_id}/{job_id}` had before the page (the job's
/// status row and `files` at the top level) and adds beside them.
#[derive(Clone, Debug, Serialize)]
pub struct JobPage {
    #[serde(flatten)]
    pub job: JobItem,
    /// In the watch list now (a job no longer watched keeps its history until retention).
    pub watched: bool,
    /// The job this one was re-created to replace (`[remediate]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
    /// The job that re-created this one after it died.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaced_by: Option<String>,
    /// The instance that polls this job and sends its alerts now (the leadership lease's
    /// holder); null when none holds it.
    pub active_instance: Option<ActiveInstance>,
    /// Newest first.
    pub transitions: Vec<TransitionRow>,
    /// Pass as `?before=` for older transitions; null when these are the oldest.
    pub next_before: Option<String>,
    /// Files recorded, as `RECORD_FILE_COMPLETE` callbacks described them; newest first.
    pub files: Vec<RecordedFileRow>,
    /// The newest alerts, with their deliveries.
    pub alerts: Vec<AlertView>,
    /// The active and pending silences that hold this job's notifications (by its app, its
    /// id, or a rule alone).
    pub silences: Vec<crate::hold::domain::SilenceView>,
}

/// The instance holding the leadership lease, as `recwatch status` names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ActiveInstance {
    pub host: String,
    pub pid: i64,
    pub epoch: i64,
}

impl ActiveInstance {
    /// The lease's holder, if the lease is held now (an expired lease names nobody active).
    pub fn of(lease: Option<&LeaseRow>) -> Option<ActiveInstance> {
        lease.filter(|l| l.is_held()).map(|l| ActiveInstance {
            host: l.host.clone(),
            pid: l.pid,
            epoch: l.epoch,
        })
    }
}

/// The page of the job `app_id`/`job_id`; NotFound when it is neither watched nor known.
pub async fn job_page(
    src: &Sources<'_>,
    app_id: &str,
    job_id: &str,
    q: &JobPageQuery,
) -> Result<JobPage, ViewError> {
    let limit = parse_limit(q.limit.as_deref(), TRANSITIONS_DEFAULT, TRANSITIONS_MAX)?;
    let before: Option<TransitionsCursor> = cursor_param("before", q.before.as_deref())?;
    let watched = src
        .config
        .jobs
        .iter()
        .find(|j| j.app_id() == app_id && j.job_id() == job_id);
    let row = src.store.jobs().get(app_id, job_id).await?;
    let job = job_of(watched, row.as_ref(), app_id, job_id)?;
    let start = src.now - JOB_WINDOW;
    let changes = changes_since(src, app_id, job_id, start).await?;
    let job_item = item(
        &job,
        &src.config.account_of(&job).name,
        &src.source_of(&job),
        row.as_ref(),
        &changes,
        start,
        src.now,
    );
    let (transitions, next_before) = transitions_page(src, app_id, job_id, before, limit).await?;
    let (replaces, replaced_by) = src
        .store
        .remediations()
        .replacement_links(app_id, job_id)
        .await?;
    Ok(JobPage {
        job: job_item,
        watched: watched.is_some(),
        replaces,
        replaced_by,
        active_instance: ActiveInstance::of(src.store.lease().read().await?.as_ref()),
        transitions,
        next_before,
        files: src
            .store
            .callbacks()
            .recorded_files(Some(app_id), Some(job_id), None, FILES_SHOWN)
            .await?,
        alerts: src
            .store
            .page()
            .job_alerts(app_id, job_id, ALERTS_SHOWN)
            .await?,
        silences: job_silences(src, app_id, job_id).await?,
    })
}

/// The job's configuration: its `[[jobs]]` entry, or what its row says of a job no longer
/// watched; NotFound when it is neither.
fn job_of(
    watched: Option<&std::sync::Arc<JobConfig>>,
    row: Option<&JobRow>,
    app_id: &str,
    job_id: &str,
) -> Result<JobConfig, ViewError> {
    let job = match (watched, row) {
        (Some(j), _) => JobConfig::clone(j),
        (None, Some(r)) => JobConfig {
            account: None,
            kind: r.kind(),
            key: crate::domain::JobKey::new(r.app_id.clone(), r.job_id.clone()),
            name: r.name.clone(),
            interval: None,
            notify: None,
        },
        (None, None) => {
            return Err(ViewError::NotFound(format!(
                "no job {job_id} of app {app_id} is watched or known to the database"
            )));
        }
    };
    Ok(job)
}

/// The job's changes of phase since `start`, for its timeline.
async fn changes_since(
    src: &Sources<'_>,
    app_id: &str,
    job_id: &str,
    start: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<Change>, ViewError> {
    let changes: Vec<Change> = src
        .store
        .page()
        .phase_points(&[(app_id, job_id)], &timestamp(start))
        .await?
        .iter()
        .map(|p| Change {
            at: p.observed_at.to_datetime(),
            phase: Phase::parse(&p.to_state, p.stop_reason.as_deref()),
        })
        .collect();
    Ok(changes)
}

/// One page of the job's transitions, newest first, from the cursor `before`, each linked to
/// its replacement; with the cursor of the next page when there is one.
async fn transitions_page(
    src: &Sources<'_>,
    app_id: &str,
    job_id: &str,
    before: Option<TransitionsCursor>,
    limit: usize,
) -> Result<(Vec<TransitionRow>, Option<String>), ViewError> {
    // The store compares the stored text: the time goes in the form it is stored in.
    let at = before.map(|c| c.observed_at.to_string());
    let position = before.zip(at.as_deref()).map(|(c, at)| (at, c.id));
    let mut transitions = src
        .store
        .page()
        .job_transitions(app_id, job_id, position, limit as i64 + 1)
        .await?;
    let more = transitions.len() > limit;
    transitions.truncate(limit);
    src.store
        .remediations()
        .link_replacements(&mut transitions)
        .await?;
    let next_before = more
        .then(|| {
            transitions.last().map(|t| {
                encode_cursor(&TransitionsCursor {
                    observed_at: t.observed_at,
                    id: t.id,
                })
            })
        })
        .flatten();
    Ok((transitions, next_before))
}

/// The silences that would hold one of this job's notifications now or later: every active
/// or pending silence whose app and job matchers (where given) are this job's.
async fn job_silences(
    src: &Sources<'_>,
    app_id: &str,
    job_id: &str,
) -> Result<Vec<crate::hold::domain::SilenceView>, crate::store::StoreError> {
    let now = chrono::Utc::now();
    let fits = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
    Ok(src
        .store
        .silences()
        .list(false, now)
        .await?
        .into_iter()
        .filter(|s| fits(&s.matchers.app_id, app_id) && fits(&s.matchers.job_id, job_id))
        .map(|s| s.view(now))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str, expires_in_ms: i64) -> LeaseRow {
        LeaseRow {
            holder: holder.into(),
            host: "mon-1".into(),
            pid: 4242,
            epoch: 7,
            acquired_at: "2026-12-07T06:00:00.000Z".parse().ok(),
            expires_in_ms,
        }
    }

    #[test]
    fn the_active_instance_is_the_holder_of_a_lease_still_held() {
        struct Case {
            name: &'static str,
            lease: Option<LeaseRow>,
            want: Option<ActiveInstance>,
        }
        let cases = [
            Case {
                name: "held",
                lease: Some(lease("mon-1:4242:x", 8_000)),
                want: Some(ActiveInstance {
                    host: "mon-1".into(),
                    pid: 4242,
                    epoch: 7,
                }),
            },
            Case {
                name: "expired: nobody is active",
                lease: Some(lease("mon-1:4242:x", -1)),
                want: None,
            },
            Case {
                name: "never held",
                lease: Some(lease("", 0)),
                want: None,
            },
            Case {
                name: "no lease row",
                lease: None,
                want: None,
            },
        ];
        for c in cases {
            assert_eq!(ActiveInstance::of(c.lease.as_ref()), c.want, "{}", c.name);
        }
    }
}
