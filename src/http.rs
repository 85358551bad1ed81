//! The HTTP endpoint: `/healthz`, `/readyz`, `/metrics` (Prometheus text) and `/api/v1/jobs`.
//!
//! Loopback by default. Gauges that describe the database (jobs by state, pending and dead
//! deliveries, the oldest pending delivery) are read from SQLite at scrape time, so they are
//! right even for work a previous run left behind.

use crate::config::Config;
use crate::outbox::Outbox;
use crate::poll::{Budget, Liveness};
use crate::store::Store;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sqlx::Row;
use std::sync::{Arc, OnceLock, RwLock};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

/// The poll loop beats every second; this much silence means it is stuck for good, and the
/// systemd watchdog is no longer fed. (`/readyz` reports a stall sooner, see
/// [`crate::vitals::STALLED_AFTER_MS`].)
pub const LIVENESS_LIMIT_MS: u64 = 15_000;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub config: Arc<RwLock<Config>>,
    pub liveness: Arc<Liveness>,
    /// What keeps the daemon from doing its job (see [`crate::vitals`]).
    pub vitals: Arc<crate::vitals::Vitals>,
    pub outbox: Outbox,
    pub budget: Arc<Budget>,
    pub metrics: PrometheusHandle,
}

/// Installs the process-wide Prometheus recorder once and returns its handle.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("recwatch_poll_duration_seconds".into()),
                    &[
                        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    ],
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("recwatch_rate_budget_wait_seconds".into()),
                        &[0.001, 0.01, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0],
                    )
                })
                .expect("bucket lists are not empty");
            match builder.install_recorder() {
                Ok(h) => h,
                // Another recorder is installed (tests that run a daemon in-process twice):
                // render from a private one rather than fail.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/jobs", get(jobs))
        .with_state(state)
}

/// Serves on `listener` until shutdown. `run` binds it before it reports ready
/// ([`crate::startup::bind_http`]): an address that cannot be bound stops the start.
pub async fn serve(listener: TcpListener, state: AppState, mut shutdown: watch::Receiver<bool>) {
    info!(address = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "HTTP endpoint: /healthz /readyz /metrics /api/v1/jobs");
    let app = router(state);
    let _ = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|s| *s).await;
        })
        .await;
}

/// 200 "ready", or 503 with every reason the daemon cannot do its job now: the database
/// cannot be read or written (full, read-only, deleted, replaced, locked), the poll loop is
/// stalled, a task it needs has stopped, or the RTC API is failing.
async fn readyz(State(s): State<AppState>) -> Response {
    let mut problems = Vec::new();
    if let Err(e) = s.store.ping().await {
        problems.push(format!("database unreachable: {e:#}"));
    }
    problems.extend(s.vitals.problems());
    if s.outbox.api_unhealthy() {
        problems.push("the RTC API is failing (api_unhealthy)".into());
    }
    if problems.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", problems.join("; ")),
        )
            .into_response()
    }
}

async fn jobs(State(s): State<AppState>) -> Response {
    let config = s.config.read().expect("config lock").clone();
    match crate::cli::status_rows(&config, &s.store).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("database unreachable: {e:#}\n"),
        )
            .into_response(),
    }
}

async fn metrics(State(s): State<AppState>) -> Response {
    if let Err(e) = refresh_gauges(&s).await {
        warn!("/metrics: cannot read the database: {e:#}");
    }
    s.metrics.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
}

/// Sets the gauges that describe the database and the budget.
async fn refresh_gauges(s: &AppState) -> anyhow::Result<()> {
    let watched = s.config.read().expect("config lock").jobs.len();
    metrics::gauge!("recwatch_jobs_watched").set(watched as f64);
    let rows = sqlx::query("SELECT state, COUNT(*) FROM jobs GROUP BY 1")
        .fetch_all(s.store.reader())
        .await?;
    // States the API invents share the label `other`, so they cannot grow the series.
    let mut by_label: std::collections::BTreeMap<&'static str, i64> =
        ["INIT", "RUNNING", "STOPPED", "other", "UNKNOWN"]
            .into_iter()
            .map(|l| (l, 0))
            .collect();
    for r in rows {
        let state: Option<String> = r.get(0);
        let n: i64 = r.get(1);
        let label = state
            .as_deref()
            .map(crate::rtc::model::state_label)
            .unwrap_or("UNKNOWN");
        *by_label.entry(label).or_default() += n;
    }
    for (label, n) in by_label {
        metrics::gauge!("recwatch_jobs", "state" => label).set(n as f64);
    }
    let config = s.config.read().expect("config lock").clone();
    for name in config.notify.channel_names() {
        metrics::gauge!("recwatch_deliveries_pending", "channel" => name.to_string()).set(0.0);
        metrics::gauge!("recwatch_deliveries_dead", "channel" => name.to_string()).set(0.0);
    }
    let rows = sqlx::query(
        "SELECT channel, state, COUNT(*) FROM deliveries WHERE state IN ('pending', 'dead') GROUP BY channel, state",
    )
    .fetch_all(s.store.reader())
    .await?;
    for r in rows {
        let channel: String = r.get(0);
        let state: String = r.get(1);
        let n: i64 = r.get(2);
        let name = if state == "pending" {
            "recwatch_deliveries_pending"
        } else {
            "recwatch_deliveries_dead"
        };
        metrics::gauge!(name, "channel" => channel).set(n as f64);
    }
    let oldest: Option<String> =
        sqlx::query_scalar("SELECT MIN(created_at) FROM deliveries WHERE state = 'pending'")
            .fetch_one(s.store.reader())
            .await?;
    let age = oldest
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| {
            (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
                .num_milliseconds()
                .max(0) as f64
                / 1000.0
        })
        .unwrap_or(0.0);
    metrics::gauge!("recwatch_oldest_pending_delivery_age_seconds").set(age);
    metrics::gauge!("recwatch_rate_budget_wait_seconds_total")
        .set(s.budget.total_wait().as_secs_f64());
    metrics::gauge!("recwatch_api_unhealthy").set(if s.outbox.api_unhealthy() { 1.0 } else { 0.0 });
    metrics::gauge!("recwatch_poll_loop_age_seconds")
        .set(s.liveness.age_ms().min(u64::MAX / 2) as f64 / 1000.0);
    Ok(())
}
