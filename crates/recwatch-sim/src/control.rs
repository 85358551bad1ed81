//! The control API (`/_sim/...`): the [`Simulator`] handle's methods over HTTP, for a
//! simulator running as its own process (`recwatch simulate`). Its requests are neither
//! counted, limited nor authenticated.
//!
//! Accounts: `GET /_sim/accounts` lists them ([`AccountState`], never a secret);
//! `POST /_sim/accounts/{name}/revoke` takes an account's key away ("a region loses its
//! key": its requests and its temporary keys' are refused 401 `APIG.0301`, the metadata
//! stand-in hands out none of its keys, every other account goes on) and
//! `POST /_sim/accounts/{name}/restore` gives it back; both answer 204, or 404 naming the
//! accounts there are. `POST /_sim/metadata/fail` with `{"times": N}` makes the metadata
//! stand-in's next N key requests answer 500.

use crate::accounts::AccountState;
use crate::callbacks::SentCallback;
use crate::create::{CreateFault, CreatedJob};
use crate::faults::Fault;
use crate::script::Change;
use crate::simulator::{Inner, Simulator};
use crate::stats::SimStats;
use axum::body::Bytes;
use axum::extract::{Path, State as AxState};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use recwatch_rtc::model::JobSnapshot;
use std::sync::Arc;

/// The control routes, merged into the simulator's router.
pub(crate) fn routes() -> Router<Arc<Inner>> {
    Router::new()
        .route("/_sim/stats", get(ctl_stats))
        .route("/_sim/reset-stats", post(ctl_reset_stats))
        .route("/_sim/faults", post(ctl_add_fault).delete(ctl_clear_faults))
        .route(
            "/_sim/jobs/{app_id}/{job_id}",
            put(ctl_put_job).delete(ctl_delete_job),
        )
        .route("/_sim/raw-jobs/{app_id}/{job_id}", put(ctl_put_raw_job))
        .route("/_sim/mix-jobs/{app_id}/{job_id}", put(ctl_put_mix_job))
        .route("/_sim/created", get(ctl_created))
        .route(
            "/_sim/create-faults",
            post(ctl_add_create_fault).delete(ctl_clear_create_faults),
        )
        .route("/_sim/changes", get(ctl_changes))
        .route("/_sim/callbacks", get(ctl_callbacks))
        .route("/_sim/accounts", get(ctl_accounts))
        .route("/_sim/accounts/{name}/revoke", post(ctl_revoke_key))
        .route("/_sim/accounts/{name}/restore", post(ctl_restore_key))
        .route("/_sim/metadata/fail", post(ctl_fail_metadata))
}

async fn ctl_accounts(AxState(inner): AxState<Arc<Inner>>) -> Json<Vec<AccountState>> {
    Json(Simulator { inner }.accounts())
}

/// 204, or 404 naming the accounts there are.
fn account_answer(inner: &Inner, found: bool, name: &str) -> (StatusCode, String) {
    if found {
        (StatusCode::NO_CONTENT, String::new())
    } else {
        (
            StatusCode::NOT_FOUND,
            format!(
                "no account is named {name:?}; the accounts are {}",
                crate::accounts::names(&inner.accounts)
            ),
        )
    }
}

async fn ctl_revoke_key(
    AxState(inner): AxState<Arc<Inner>>,
    Path(name): Path<String>,
) -> (StatusCode, String) {
    let found = Simulator {
        inner: inner.clone(),
    }
    .revoke_key(&name);
    account_answer(&inner, found, &name)
}

async fn ctl_restore_key(
    AxState(inner): AxState<Arc<Inner>>,
    Path(name): Path<String>,
) -> (StatusCode, String) {
    let found = Simulator {
        inner: inner.clone(),
    }
    .restore_key(&name);
    account_answer(&inner, found, &name)
}

/// `POST /_sim/metadata/fail` `{"times": N}`.
#[derive(serde::Deserialize)]
struct FailMetadata {
    times: u32,
}

async fn ctl_fail_metadata(
    AxState(inner): AxState<Arc<Inner>>,
    Json(fail): Json<FailMetadata>,
) -> (StatusCode, String) {
    if inner.metadata.is_none() {
        return (
            StatusCode::NOT_FOUND,
            "the metadata stand-in is not served: start the simulator with --metadata-account"
                .into(),
        );
    }
    Simulator { inner }.fail_metadata(fail.times);
    (StatusCode::NO_CONTENT, String::new())
}

async fn ctl_callbacks(AxState(inner): AxState<Arc<Inner>>) -> Json<Vec<SentCallback>> {
    Json(Simulator { inner }.sent_callbacks())
}

async fn ctl_stats(AxState(inner): AxState<Arc<Inner>>) -> Json<SimStats> {
    Json(Simulator { inner }.stats())
}

async fn ctl_reset_stats(AxState(inner): AxState<Arc<Inner>>) -> StatusCode {
    Simulator { inner }.reset_stats();
    StatusCode::NO_CONTENT
}

async fn ctl_add_fault(
    AxState(inner): AxState<Arc<Inner>>,
    Json(fault): Json<Fault>,
) -> StatusCode {
    Simulator { inner }.set_fault(fault);
    StatusCode::NO_CONTENT
}

async fn ctl_clear_faults(AxState(inner): AxState<Arc<Inner>>) -> StatusCode {
    Simulator { inner }.clear_faults();
    StatusCode::NO_CONTENT
}

async fn ctl_put_job(
    AxState(inner): AxState<Arc<Inner>>,
    Path((app_id, job_id)): Path<(String, String)>,
    Json(job): Json<JobSnapshot>,
) -> StatusCode {
    Simulator { inner }.set_job(&app_id, &job_id, job);
    StatusCode::NO_CONTENT
}

async fn ctl_put_mix_job(
    AxState(inner): AxState<Arc<Inner>>,
    Path((app_id, job_id)): Path<(String, String)>,
    Json(job): Json<JobSnapshot>,
) -> StatusCode {
    Simulator { inner }.set_mix_job(&app_id, &job_id, job);
    StatusCode::NO_CONTENT
}

async fn ctl_created(AxState(inner): AxState<Arc<Inner>>) -> Json<Vec<CreatedJob>> {
    Json(Simulator { inner }.created())
}

async fn ctl_add_create_fault(
    AxState(inner): AxState<Arc<Inner>>,
    Json(fault): Json<CreateFault>,
) -> StatusCode {
    Simulator { inner }.set_create_fault(fault);
    StatusCode::NO_CONTENT
}

async fn ctl_clear_create_faults(AxState(inner): AxState<Arc<Inner>>) -> StatusCode {
    Simulator { inner }.clear_create_faults();
    StatusCode::NO_CONTENT
}

async fn ctl_put_raw_job(
    AxState(inner): AxState<Arc<Inner>>,
    Path((app_id, job_id)): Path<(String, String)>,
    body: Bytes,
) -> StatusCode {
    Simulator { inner }.set_job_body(&app_id, &job_id, body);
    StatusCode::NO_CONTENT
}

async fn ctl_delete_job(
    AxState(inner): AxState<Arc<Inner>>,
    Path((app_id, job_id)): Path<(String, String)>,
) -> StatusCode {
    Simulator { inner }.remove_job(&app_id, &job_id);
    StatusCode::NO_CONTENT
}

async fn ctl_changes(AxState(inner): AxState<Arc<Inner>>) -> Json<Vec<Change>> {
    Json(Simulator { inner }.changes())
}
