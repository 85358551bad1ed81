//! `POST /api/v1/jobs` and `DELETE /api/v1/jobs/{app_id}/{job_id}`: the run-time watch list
//! changed over HTTP (bearer token, [`super::auth`]). A job added here is polled at once; the
//! config file's jobs cannot be removed here (409: edit the file). Every answer is counted in
//! `recwatch_api_writes_total{result}`, and every refusal is logged with the reason.

use super::AppState;
use super::auth::{WriteAccess, count_write};
use crate::config::Config;
use crate::domain::{JobKey, JobSource, RuntimeJob};
use crate::runtime_list::{Added, Removed, edit_the_file, new_entry, parse_account, parse_kind};
use axum::Json;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use tracing::{info, warn};

/// The largest body `POST /api/v1/jobs` reads: an entry is a few hundred bytes.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// The body of `POST /api/v1/jobs`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewJob {
    app_id: String,
    job_id: String,
    name: Option<String>,
    /// `"individual"` (the default) or `"mix"`.
    kind: Option<String>,
    notify: Option<Vec<String>>,
    /// A configured account's name; absent: the app's account.
    account: Option<String>,
}

/// What `POST` answers (and `DELETE` for the job it removed): the job as watched now.
#[derive(Serialize)]
struct JobView {
    app_id: String,
    job_id: String,
    name: Option<String>,
    kind: crate::domain::JobKind,
    /// `null`: every channel.
    notify: Option<Vec<String>>,
    source: JobSource,
    /// When it was added to the run-time list; `null` for a job of the config file.
    added_at: Option<crate::domain::Timestamp>,
    /// The name of the account that polls it (the one it names, else its app's).
    account: String,
}

pub(crate) fn refuse(
    peer: SocketAddr,
    status: StatusCode,
    result: &'static str,
    message: String,
) -> Response {
    warn!(%peer, status = status.as_u16(), "API write refused: {message}");
    count_write(result);
    (status, format!("{message}\n")).into_response()
}

pub(crate) fn unavailable(peer: SocketAddr, e: crate::store::StoreError) -> Response {
    refuse(
        peer,
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        format!("the database cannot take the change ({e}); nothing was changed, try again"),
    )
}

pub(super) async fn add(
    _: WriteAccess,
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Body,
) -> Response {
    let bad = |m: String| refuse(peer, StatusCode::BAD_REQUEST, "bad_request", m);
    let new = match read_new_job(peer, body).await {
        Ok(n) => n,
        Err(refused) => return refused,
    };
    let config = s.config.borrow().clone();
    let now = crate::domain::Timestamp::now();
    let kind = parse_kind(new.kind.as_deref());
    let account = parse_account(&config, new.account.as_deref());
    let entry = new_entry(
        &config,
        JobKey::new(new.app_id, new.job_id),
        new.name,
        new.notify,
        JobSource::Api,
        now,
    );
    let entry = match (entry, kind, account) {
        (Ok(e), Ok(kind), Ok(account)) => RuntimeJob { kind, account, ..e },
        (entry, kind, account) => {
            let problems = [
                entry.err().map(|e| e.to_string()),
                kind.err(),
                account.err(),
            ];
            let problems: Vec<String> = problems.into_iter().flatten().collect();
            return bad(format!("nothing was added: {}", problems.join("; ")));
        }
    };
    let key = entry.key.clone();
    match s.watchlist.add(&config, entry).await {
        Ok(added) => added_response(peer, &key, &config, added),
        Err(e) => unavailable(peer, e),
    }
}

/// The job a `POST /api/v1/jobs` asks for, or the refusal of a body too big or not a job.
async fn read_new_job(peer: SocketAddr, body: Body) -> Result<NewJob, Response> {
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        return Err(refuse(
            peer,
            StatusCode::PAYLOAD_TOO_LARGE,
            "bad_request",
            format!(
                "the body is over {MAX_BODY_BYTES} bytes; send {{\"app_id\", \"job_id\", \"name\"?, \"kind\"?, \"notify\"?, \"account\"?}}"
            ),
        ));
    };
    serde_json::from_slice(&body).map_err(|e| {
        refuse(
            peer,
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!(
                "the body is not a job: {e}; send JSON like {{\"app_id\": \"...\", \"job_id\": \"...\", \"name\": \"lobby\", \"notify\": [\"ops\"]}}"
            ),
        )
    })
}

/// The answer to a job the watch list took, or did not need to (already watched, at run
/// time or in the file), or had no room for.
fn added_response(peer: SocketAddr, key: &JobKey, config: &Config, added: Added) -> Response {
    match added {
        Added::New(e) => {
            info!(%peer, job = %key, "API: watching a new job (its first poll goes ahead of the round)");
            count_write("created");
            (StatusCode::CREATED, Json(view_runtime(e, config))).into_response()
        }
        // 507: the bound is the server's, not the request's fault. Not logged per refusal:
        // the watch list says it once (and sets recwatch_watchlist_full).
        Added::Full(full) => {
            count_write("full");
            (
                StatusCode::INSUFFICIENT_STORAGE,
                format!("nothing was added: {full}\n"),
            )
                .into_response()
        }
        Added::AlreadyWatched(e) => {
            count_write("exists");
            (StatusCode::OK, Json(view_runtime(e, config))).into_response()
        }
        Added::InConfig(_) => {
            count_write("exists");
            let job = config
                .jobs
                .iter()
                .find(|j| j.app_id() == key.app_id && j.job_id() == key.job_id)
                .expect("in the config");
            let view = JobView {
                app_id: job.app_id().to_owned(),
                job_id: job.job_id().to_owned(),
                name: job.name.clone(),
                kind: job.kind,
                notify: job.notify.clone(),
                source: JobSource::Config,
                added_at: None,
                account: config.account_of(job).name.to_string(),
            };
            (StatusCode::OK, Json(view)).into_response()
        }
    }
}

pub(super) async fn remove(
    _: WriteAccess,
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((app_id, job_id)): Path<(String, String)>,
) -> Response {
    for (field, id) in [("app_id", &app_id), ("job_id", &job_id)] {
        if let Err(m) = crate::domain::check_id(id) {
            return refuse(
                peer,
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("{field} {m}"),
            );
        }
    }
    let key = JobKey::new(app_id, job_id);
    let config = s.config.borrow().clone();
    match s.watchlist.remove(&config, &key).await {
        Ok(Removed::Removed(e)) => {
            info!(%peer, job = %key, "API: stopped watching a job");
            count_write("deleted");
            (StatusCode::OK, Json(view_runtime(e, &config))).into_response()
        }
        Ok(Removed::NotWatched) => refuse(
            peer,
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{key} is not watched"),
        ),
        Ok(Removed::InConfig(location)) => refuse(
            peer,
            StatusCode::CONFLICT,
            "conflict",
            edit_the_file(&key, &location, &config),
        ),
        Err(e) => unavailable(peer, e),
    }
}

fn view_runtime(e: crate::domain::RuntimeJob, config: &Config) -> JobView {
    // What polls it, as the poller decides it (a name no longer configured included).
    let account = config
        .account_of(&crate::runtime_list::Listed::new(e.clone()).job)
        .name
        .to_string();
    JobView {
        account,
        app_id: e.key.app_id.clone(),
        job_id: e.key.job_id.clone(),
        name: e.name,
        kind: e.kind,
        notify: e.notify,
        source: e.source,
        added_at: Some(e.added_at),
    }
}
