//! `/api/v1/jobs`, `/api/v1/jobs/{app_id}/{job_id}` and `/api/v1/alerts`: the status page's
//! data as JSON, built by the same [`crate::view`] functions as the HTML pages. `/api/v1/jobs`
//! keeps its shape (`items` with the rows of `recwatch status --json`, `next_after`) and adds
//! fields beside them: each item's `label`, `tone`, `consecutive_failures` and 24-hour
//! `timeline`, and the page's `matching` and `summary`; filters `state`, `app` and `q` narrow
//! the list. Pages are built a few at a time, so many clients cost time, not memory.

use super::AppState;
use super::page::{sources, watched, watched_of};
use crate::config::Config;
use crate::domain::{JobKey, JobSource};
use crate::runtime_list::RuntimeList;
use crate::view::counts::CountsCache;
use crate::view::{self, AlertsQuery, JobPageQuery, JobsQuery, RawJobsQuery, ViewError};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;

/// Bounds the job lists being built at once (`/` and `/api/v1/jobs`), so many clients cost
/// time, not memory (or every core): each is the header's grouped counts, a scan of the watch
/// list and up to `PAGE_MAX` rows with their timelines. Keeps the watch list the lists last
/// read ([`WatchedList`]).
#[derive(Clone)]
pub(super) struct PageBuilders {
    turns: Arc<tokio::sync::Semaphore>,
    list: Arc<Mutex<Option<Arc<WatchedList>>>>,
}

/// The watch list as the job lists read it, kept while neither the configuration in force
/// nor the run-time list changes (issue 23, item 7): the merge of the two (a copy of every
/// job) and what the header's counts need of the list are made once per list, not per
/// request.
pub(super) struct WatchedList {
    in_force: Arc<Config>,
    runtime: Arc<RuntimeList>,
    pub(super) config: Arc<Config>,
    pub(super) sources: HashMap<JobKey, JobSource>,
    pub(super) counts: CountsCache,
}

impl PageBuilders {
    pub(super) fn new() -> PageBuilders {
        PageBuilders {
            turns: Arc::new(tokio::sync::Semaphore::new(PAGE_BUILDERS)),
            list: Arc::default(),
        }
    }

    /// Waits for a turn to build a page.
    pub(super) async fn turn(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.turns.acquire().await.expect("never closed")
    }

    /// The watch list now: the one kept if the configuration in force and the run-time list
    /// are the same values it was made of (the `Arc`s it holds cannot be reused for others).
    pub(super) fn watched(&self, s: &AppState) -> Arc<WatchedList> {
        let in_force = s.config.borrow().clone();
        let runtime = s.watchlist.current();
        let mut kept = self.list.lock().expect("not poisoned");
        if let Some(w) = kept.as_ref()
            && Arc::ptr_eq(&w.in_force, &in_force)
            && Arc::ptr_eq(&w.runtime, &runtime)
        {
            return Arc::clone(w);
        }
        let (config, sources) = watched_of(&in_force, &runtime);
        let list = Arc::new(WatchedList {
            in_force,
            runtime,
            config,
            sources,
            counts: CountsCache::default(),
        });
        *kept = Some(Arc::clone(&list));
        list
    }
}

/// Pages built at once; others wait their turn.
const PAGE_BUILDERS: usize = 2;

/// The answer for a page that cannot be built: 400 naming the parameter and the fix, 404, or
/// 503 when the database cannot be read.
pub(super) fn view_error(e: ViewError) -> Response {
    let status = match e {
        ViewError::BadRequest(_) => StatusCode::BAD_REQUEST,
        ViewError::NotFound(_) => StatusCode::NOT_FOUND,
        ViewError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        ViewError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (status, format!("{e:#}\n")).into_response()
}

pub(super) async fn jobs(
    State(s): State<AppState>,
    Extension(builders): Extension<PageBuilders>,
    Query(raw): Query<RawJobsQuery>,
) -> Response {
    let q = match JobsQuery::parse(&raw) {
        Ok(q) => q,
        Err(e) => return view_error(e),
    };
    let _turn = builders.turn().await;
    let list = builders.watched(&s);
    // The header's counts only on the first page: a client walking every page pays for its
    // pages, not for a count of the whole list on each.
    let with_summary = q.after.is_none();
    let src = sources(&s, &list.config, &list.sources);
    match view::jobs::jobs_page(&src, q, with_summary, &list.counts).await {
        Ok(p) => Json(p).into_response(),
        Err(e) => view_error(e),
    }
}

pub(super) async fn job(
    State(s): State<AppState>,
    Path((app_id, job_id)): Path<(String, String)>,
    Query(q): Query<JobPageQuery>,
) -> Response {
    let (config, job_sources) = watched(&s);
    match view::job::job_page(&sources(&s, &config, &job_sources), &app_id, &job_id, &q).await {
        Ok(p) => Json(p).into_response(),
        Err(e) => view_error(e),
    }
}

pub(super) async fn alerts(State(s): State<AppState>, Query(q): Query<AlertsQuery>) -> Response {
    let (config, job_sources) = watched(&s);
    match view::alerts::alerts_page(&sources(&s, &config, &job_sources), &q).await {
        Ok(p) => Json(p).into_response(),
        Err(e) => view_error(e),
    }
}

/// `GET /api/v1/silences`: the active and pending silences (`?all=true`: expired ones too),
/// as `recwatch silence list --json` prints them.
#[derive(serde::Deserialize)]
pub(super) struct SilencesQuery {
    #[serde(default)]
    all: bool,
}

pub(super) async fn silences(
    State(s): State<AppState>,
    Query(q): Query<SilencesQuery>,
) -> Response {
    let now = chrono::Utc::now();
    match s.store.silences().list(q.all, now).await {
        Ok(list) => {
            let views: Vec<_> = list.into_iter().map(|x| x.view(now)).collect();
            Json(views).into_response()
        }
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("database unreachable: {e:#}\n"),
        )
            .into_response(),
    }
}
