//! The HTTP endpoint: `/healthz`, `/readyz`, `/metrics` (Prometheus text), `/api/v1/jobs`
//! (paginated) and `/api/v1/jobs/{app_id}/{job_id}` (one job, with its recorded files).
//! `POST /api/v1/jobs` and `DELETE /api/v1/jobs/{app_id}/{job_id}` change the run-time watch
//! list. Every endpoint that writes takes [`auth::WriteAccess`]: the bearer token of
//! `[http] token`, checked in that one place.
//!
//! Loopback by default, and built so that whoever can reach it cannot starve recwatch: every
//! connection must send a complete request header within [`limits::HEADER_READ_TIMEOUT`] (a new
//! connection, and a kept-alive one between requests, alike), and at most
//! [`Limits::max_connections`] are open at once — a quarter of the open-files limit at most,
//! so the RTC client, the webhooks, SMTP and SQLite always keep descriptors of their own. At
//! the cap a new connection makes room by closing the oldest one that is not in the middle of
//! a response, so a health check still gets through a flood of idle connections.
//!
//! The database's gauges (jobs by state, pending and dead deliveries, the oldest pending one)
//! come from indexed queries only, run at most once per [`GAUGE_MAX_AGE`] however many clients
//! scrape (concurrent scrapes share one refresh), so scrapers cannot turn into table scans;
//! they are right for work a previous run left behind too.

mod api;
pub mod auth;
mod health;
mod jobs;
// What a feature's endpoint (`hold/http.rs`) answers a refusal or an unreachable store with.
pub(crate) use jobs::{refuse, unavailable};
pub mod limits;
pub mod listen;
mod metrics;
mod page;
pub mod read_guard;
mod server;

pub use health::{LIVENESS_LIMIT_MS, readiness_problems};
pub use limits::{Limits, connection_cap, nofile_limit, raise_nofile_limit};
pub use listen::{ListenProbe, bind_error, bind_http, probe_listen};
pub use metrics::{GAUGE_MAX_AGE, metrics_handle, upkeep_until};
pub use page::job_path;
pub use server::{BodyTooSlow, Listener, serve, serve_on, serve_router};

use crate::config::Config;
use crate::outbox::Outbox;
use crate::poller::Budget;
use crate::store::Store;
use crate::vitals::Liveness;
use axum::routing::{delete, get, post};
use axum::{Extension, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;
use tokio::sync::watch;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    /// The configuration in force, replaced on reload.
    pub config: watch::Receiver<Arc<Config>>,
    pub liveness: Arc<Liveness>,
    /// What keeps the daemon from doing its job (see [`crate::vitals`]).
    pub vitals: Arc<crate::vitals::Vitals>,
    pub outbox: Outbox,
    pub budget: Arc<Budget>,
    pub metrics: PrometheusHandle,
    /// The run-time watch list: read by `/api/v1/jobs`, changed by its POST and DELETE.
    pub watchlist: crate::runtime_list::Watchlist,
}

pub fn router(state: AppState) -> Router {
    // What the status page and the read API show: behind `[http] read_token` when it is set.
    let reads = Router::new()
        .route("/api/v1/jobs", get(api::jobs))
        .route("/api/v1/jobs/{app_id}/{job_id}", get(api::job))
        .route("/api/v1/alerts", get(api::alerts))
        .route("/api/v1/silences", get(api::silences))
        .route("/", get(page::index))
        .route("/jobs/{app_id}/{job_id}", get(page::job))
        .route("/alerts", get(page::alerts))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            read_guard::read_guard,
        ));
    // What changes things: behind `[http] token` ([`auth::WriteAccess`], in each handler), not
    // behind the read guard, so a writer needs only the write token.
    let writes = Router::new()
        .route("/api/v1/jobs", post(jobs::add))
        .route("/api/v1/jobs/{app_id}/{job_id}", delete(jobs::remove))
        .route("/api/v1/silences", post(crate::hold::http::add))
        .route("/api/v1/silences/{id}", delete(crate::hold::http::expire));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::metrics))
        .route("/static/page.css", get(page::css))
        .route("/static/page.js", get(page::js))
        .merge(reads)
        .merge(writes)
        .layer(Extension(metrics::DbGaugesRead::default()))
        .layer(Extension(api::PageBuilders::new()))
        .with_state(state)
}
