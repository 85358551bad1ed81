//! The status page in HTML: `/`, `/jobs/{app_id}/{job_id}`, `/alerts` and the two files they
//! load (`/static/page.css`, `/static/page.js`, embedded in the binary). Each handler builds
//! its value with [`crate::view`] (as the JSON handlers in `api` do) and renders it with a
//! template from `templates/`, checked at compile time; askama escapes every value, so job
//! names, descriptions and errors from outside are shown as text.
//!
//! Every page answers with a Content-Security-Policy that allows only the page's own script
//! and style: a value that escaped escaping still could not run.

use super::AppState;
use super::api::{PageBuilders, view_error};
use crate::config::Config;
use crate::domain::{JobKey, JobSource, Timestamp};
use crate::view::ViewError;
use crate::view::{
    self, AlertsQuery, JobItem, JobPageQuery, JobsQuery, RawJobsQuery, Sources, Timeline, Tone,
};
use askama::Template;
use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Seconds between the script's live refreshes of the parts marked `data-live`.
pub const REFRESH_SECONDS: u32 = 10;
/// Seconds between whole-page reloads without JavaScript (`<noscript>` meta refresh).
pub const RELOAD_SECONDS: u32 = 30;

const CSS: &str = include_str!("../../static/page.css");
const JS: &str = include_str!("../../static/page.js");

/// Only the page's own files; no inline script or style, no other origin.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

pub use crate::domain::job_path;

/// `path?k=v&...`, encoded; just `path` without parameters.
fn with_query(path: &str, params: &[(&str, String)]) -> String {
    if params.is_empty() {
        return path.to_string();
    }
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        s.append_pair(k, v);
    }
    format!("{path}?{}", s.finish())
}

/// A stored time as the page shows it: the `datetime` attribute, and the UTC text that the
/// script replaces with local time (it stays without JavaScript, and on hover).
struct UtcTime {
    iso: String,
    text: String,
}

fn utc_time(t: impl Into<Timestamp>) -> UtcTime {
    let t = t.into().to_datetime();
    UtcTime {
        iso: t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        text: t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    }
}

fn utc_opt(stored: Option<Timestamp>) -> Option<UtcTime> {
    stored.map(utc_time)
}

/// A timeline as SVG rectangles, with a text that says the same for screen readers.
struct Bars {
    label: String,
    bars: Vec<Bar>,
}

struct Bar {
    tone: &'static str,
    x: String,
    w: String,
    title: String,
}

/// "3h 05m", "12m", "40s".
fn span_text(d: chrono::Duration) -> String {
    let s = d.num_seconds().max(0);
    match (s / 3600, (s % 3600) / 60) {
        (0, 0) => format!("{s}s"),
        (0, m) => format!("{m}m"),
        (h, m) => format!("{h}h {m:02}m"),
    }
}

fn bars(tl: &Timeline, window: &str) -> Bars {
    let mut totals: BTreeMap<Tone, chrono::Duration> = BTreeMap::new();
    let bars = tl
        .segments
        .iter()
        .zip(tl.drawn_spans())
        .map(|(s, (x, w))| {
            *totals.entry(s.tone).or_default() += s.end - s.start;
            Bar {
                tone: s.tone.as_str(),
                x: format!("{x:.1}"),
                // At least a sliver, so a brief stop stays visible on a long window.
                w: format!("{:.1}", w.max(1.0)),
                title: format!(
                    "{} from {} to {}",
                    s.describe(),
                    s.start.format("%Y-%m-%d %H:%M:%S UTC"),
                    s.end.format("%Y-%m-%d %H:%M:%S UTC")
                ),
            }
        })
        .collect();
    // Worst first: what a reader most needs to hear.
    let parts: Vec<String> = totals
        .iter()
        .rev()
        .map(|(tone, d)| format!("{} {}", view::label::tone_label(*tone), span_text(*d)))
        .collect();
    Bars {
        label: format!("{window}: {}", parts.join(", ")),
        bars,
    }
}

/// A job as a row of the list or the head of its page.
struct RowView {
    href: String,
    name: String,
    app_id: String,
    job_id: String,
    state: String,
    stop_reason: Option<String>,
    label: &'static str,
    tone: &'static str,
    failures: i64,
    since: Option<UtcTime>,
    polled: Option<UtcTime>,
    /// Where the job came from (`config`, `callback`, `api`, `cli`, `remediation`).
    source: String,
    /// The name of the account that polls the job.
    account: String,
    /// `individual` or `mix`.
    kind: &'static str,
    timeline: Bars,
}

fn row_view(j: &JobItem, window: &str) -> RowView {
    let r = &j.row;
    RowView {
        href: job_path(&r.app_id, &r.job_id),
        name: r.name.clone().unwrap_or_else(|| r.job_id.clone()),
        app_id: r.app_id.clone(),
        job_id: r.job_id.clone(),
        state: r.state.clone().unwrap_or_else(|| "–".into()),
        stop_reason: r.stop_reason.clone(),
        label: j.label,
        tone: j.tone.as_str(),
        failures: j.consecutive_failures,
        since: utc_opt(r.last_changed_at),
        polled: utc_opt(r.last_polled_at),
        source: r.source.to_string(),
        account: r.account.clone(),
        kind: r.kind.as_str(),
        timeline: bars(&j.timeline, window),
    }
}

#[derive(Template)]
#[template(path = "jobs.html")]
struct JobsTemplate {
    refresh: u32,
    reload: u32,
    generated: UtcTime,
    json_href: String,
    jobs: usize,
    states: Vec<CountView>,
    open_alerts: i64,
    pending: i64,
    dead: i64,
    api_healthy: bool,
    /// The accounts whose API is failing, named in the API-health line (empty while healthy).
    blind: String,
    /// Several accounts: each one's health in the header, an account filter and column.
    show_account: bool,
    accounts: Vec<view::AccountHealth>,
    /// The account filter's choices: (name, selected).
    account_options: Vec<(String, bool)>,
    budget: String,
    budget_paused: bool,
    state_options: Vec<(&'static str, bool)>,
    app: String,
    q: String,
    filtered: bool,
    matching: usize,
    first_page: bool,
    first_href: String,
    next_href: Option<String>,
    show_source: bool,
    rows: Vec<RowView>,
}

struct CountView {
    href: String,
    state: &'static str,
    label: &'static str,
    tone: &'static str,
    n: usize,
}

fn jobs_template(p: &view::JobsPage, s: &view::Summary) -> JobsTemplate {
    let q = &p.query;
    let filtered = q.state.is_some() || q.app.is_some() || q.account.is_some() || q.q.is_some();
    let stretch = |x: f64| match x {
        x if x <= 1.0 => "at their interval".to_string(),
        x => format!("{x:.1}x less often"),
    };
    let budget = format!(
        "{:.0}% of {}/s ({:.1} requests/s asked for; configured jobs {}, run-time jobs {})",
        s.budget.in_use_percent,
        s.budget.rate_limit,
        s.budget.demand_per_second,
        stretch(s.budget.configured_stretch),
        stretch(s.budget.runtime_stretch)
    );
    JobsTemplate {
        refresh: REFRESH_SECONDS,
        reload: RELOAD_SECONDS,
        generated: utc_time(s.generated_at),
        json_href: with_query(
            "/api/v1/jobs",
            &q.with_after(q.after.as_ref().map(view_cursor)),
        ),
        jobs: s.jobs,
        states: s
            .states
            .iter()
            .map(|c| CountView {
                href: with_query("/", &[("state", c.state.as_str().to_string())]),
                state: c.state.as_str(),
                label: c.label,
                tone: c.tone.as_str(),
                n: c.n,
            })
            .collect(),
        open_alerts: s.open_alerts,
        pending: s.deliveries_pending,
        dead: s.deliveries_dead,
        api_healthy: s.api_healthy,
        blind: blind_accounts(&s.accounts),
        show_account: s.accounts.len() > 1,
        accounts: s.accounts.clone(),
        account_options: s
            .accounts
            .iter()
            .map(|a| {
                (
                    a.name.clone(),
                    q.account.as_deref() == Some(a.name.as_str()),
                )
            })
            .collect(),
        budget,
        budget_paused: s.budget.paused,
        state_options: view::jobs::StateFilter::ALL
            .iter()
            .map(|f| (f.as_str(), q.state == Some(*f)))
            .collect(),
        app: q.app.clone().unwrap_or_default(),
        q: q.q.clone().unwrap_or_default(),
        filtered,
        matching: p.matching,
        first_page: q.after.is_none(),
        first_href: with_query("/", &q.with_after(None)),
        next_href: p
            .next_after
            .clone()
            .map(|c| with_query("/", &q.with_after(Some(c)))),
        show_source: true,
        rows: p
            .items
            .iter()
            .map(|j| row_view(j, "Last 24 hours"))
            .collect(),
    }
}

/// The accounts whose API is failing, as the API-health line names them ("" when none is).
fn blind_accounts(accounts: &[view::AccountHealth]) -> String {
    accounts
        .iter()
        .filter(|a| !a.healthy)
        .map(|a| a.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The cursor of the page being shown, as its link carries it.
fn view_cursor(after: &(String, String)) -> String {
    view::encode_cursor(after)
}

struct AlertRow {
    at: UtcTime,
    rule: crate::domain::Rule,
    severity: crate::domain::Severity,
    status: crate::domain::Status,
    job: String,
    job_href: Option<String>,
    summary: String,
    deliveries: Vec<crate::store::DeliveryView>,
}

fn alert_rows(alerts: &[crate::store::AlertView], config: &Config) -> Vec<AlertRow> {
    alerts
        .iter()
        .map(|a| {
            let job = match (&a.app_id, &a.job_id) {
                (Some(app), Some(job)) => Some((app, job)),
                _ => None,
            };
            let name = job.and_then(|(app, id)| {
                config
                    .jobs
                    .iter()
                    .find(|j| j.app_id() == app && j.job_id() == id)
                    .map(|j| j.label().to_string())
            });
            AlertRow {
                at: utc_time(a.created_at),
                rule: a.rule,
                severity: a.severity,
                status: a.status,
                job: match job {
                    Some((_, id)) => name.unwrap_or_else(|| id.clone()),
                    None => "(all jobs)".into(),
                },
                job_href: job.map(|(app, id)| job_path(app, id)),
                summary: a.summary.clone(),
                deliveries: a.deliveries.clone(),
            }
        })
        .collect()
}

#[derive(Template)]
#[template(path = "job.html")]
struct JobTemplate {
    refresh: u32,
    reload: u32,
    generated: UtcTime,
    json_href: String,
    r: RowView,
    show_source: bool,
    /// The job this one was re-created to replace, and the one that replaced it: (job id,
    /// its page).
    replaces: Option<(String, String)>,
    replaced_by: Option<(String, String)>,
    /// Who polls and delivers now, as `recwatch status` says it.
    active_instance: String,
    description: Option<String>,
    last_error: Option<String>,
    watched: bool,
    alerts: Vec<AlertRow>,
    silences: Vec<SilenceRow>,
    files: Vec<FileView>,
    transitions: Vec<TransitionView>,
    first_page: bool,
    first_href: String,
    next_href: Option<String>,
}

/// A silence that holds this job's notifications, as the job page lists it.
struct SilenceRow {
    id: String,
    status: &'static str,
    /// What it matches, e.g. `job job-0007, rule idle_timeout`.
    matches: String,
    starts: UtcTime,
    ends: UtcTime,
    comment: String,
    author: String,
}

struct FileView {
    received: UtcTime,
    format: String,
    duration: String,
    size: String,
    object: String,
    url: Option<String>,
}

struct TransitionView {
    at: UtcTime,
    from: Option<String>,
    to: String,
    tone: &'static str,
    reason: Option<String>,
    request_id: Option<String>,
}

/// The silences that hold a job's notifications, as its page lists them.
fn silence_rows(silences: &[crate::hold::domain::SilenceView]) -> Vec<SilenceRow> {
    silences
        .iter()
        .map(|v| {
            let m = &v.silence.matchers;
            let matches = [
                m.app_id.as_ref().map(|a| format!("app {a}")),
                m.job_id.as_ref().map(|j| format!("job {j}")),
                m.rule.map(|r| format!("rule {}", r.as_str())),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(", ");
            SilenceRow {
                id: v.silence.id.clone(),
                status: v.status.as_str(),
                matches,
                starts: utc_time(v.silence.starts_at),
                ends: utc_time(v.silence.ends_at),
                comment: v.silence.comment.clone(),
                author: v.silence.author.clone().unwrap_or_default(),
            }
        })
        .collect()
}

/// Only http(s) links become links: a `javascript:` URL from outside stays text.
fn safe_link(url: Option<&str>) -> Option<String> {
    let url = url?;
    let lower = url.trim_start().to_ascii_lowercase();
    (lower.starts_with("https://") || lower.starts_with("http://")).then(|| url.to_string())
}

fn job_template(
    p: &view::JobPage,
    config: &Config,
    now: DateTime<Utc>,
    before: bool,
) -> JobTemplate {
    let r = &p.job.row;
    let path = job_path(&r.app_id, &r.job_id);
    JobTemplate {
        refresh: REFRESH_SECONDS,
        reload: RELOAD_SECONDS,
        generated: utc_time(now),
        json_href: format!("/api/v1{path}"),
        r: row_view(&p.job, "Last 7 days"),
        show_source: true,
        replaces: p
            .replaces
            .as_ref()
            .map(|id| (id.clone(), job_path(&r.app_id, id))),
        replaced_by: p
            .replaced_by
            .as_ref()
            .map(|id| (id.clone(), job_path(&r.app_id, id))),
        active_instance: match &p.active_instance {
            Some(a) => format!("{} (pid {}), lease epoch {}", a.host, a.pid, a.epoch),
            None => "none: no instance holds the lease now".into(),
        },
        description: r.description.clone(),
        last_error: r.last_error.clone(),
        watched: p.watched,
        alerts: alert_rows(&p.alerts, config),
        silences: silence_rows(&p.silences),
        files: p
            .files
            .iter()
            .map(|f| FileView {
                received: utc_time(f.received_at),
                format: f.record_format.clone().unwrap_or_default(),
                duration: f
                    .record_duration
                    .map(|s| span_text(chrono::Duration::seconds(s)))
                    .unwrap_or_default(),
                size: f
                    .file_size
                    .map(|b| format!("{:.1} MB", b as f64 / 1e6))
                    .unwrap_or_default(),
                object: f
                    .obs_object
                    .clone()
                    .or_else(|| f.download_url.clone())
                    .unwrap_or_else(|| "(no name)".into()),
                url: safe_link(f.download_url.as_deref()),
            })
            .collect(),
        transitions: p
            .transitions
            .iter()
            .map(|t| {
                let phase = view::label::stored_phase(Some(&t.to_state), t.stop_reason.as_deref());
                TransitionView {
                    at: utc_time(t.observed_at),
                    from: t.from_state.clone(),
                    to: t.to_state.clone(),
                    tone: view::label::tone(phase.as_ref()).as_str(),
                    reason: t.stop_reason.clone(),
                    request_id: t.request_id.clone(),
                }
            })
            .collect(),
        first_page: !before,
        first_href: path.clone(),
        next_href: p
            .next_before
            .clone()
            .map(|c| with_query(&path, &[("before", c)])),
    }
}

#[derive(Template)]
#[template(path = "alerts.html")]
struct AlertsTemplate {
    refresh: u32,
    reload: u32,
    generated: UtcTime,
    json_href: String,
    alerts: Vec<AlertRow>,
    first_page: bool,
    next_href: Option<String>,
}

/// An HTML answer with the page's security headers.
fn html(rendered: Result<String, askama::Error>) -> Response {
    match rendered {
        Ok(body) => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CONTENT_SECURITY_POLICY, CSP),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                (header::REFERRER_POLICY, "no-referrer"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            body,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the page could not be rendered: {e}\n"),
        )
            .into_response(),
    }
}

/// The watch list for this request: the configuration in force with the run-time list merged
/// in, and where each run-time job came from.
pub(super) fn watched(s: &AppState) -> (Arc<Config>, HashMap<JobKey, JobSource>) {
    watched_of(&s.config.borrow().clone(), &s.watchlist.current())
}

/// [`watched`] of these values.
pub(super) fn watched_of(
    config: &Arc<Config>,
    runtime: &crate::runtime_list::RuntimeList,
) -> (Arc<Config>, HashMap<JobKey, JobSource>) {
    let config = Arc::clone(config);
    if runtime.jobs.is_empty() {
        // The configuration in force itself: a copy of its every job per request was tens of
        // milliseconds and megabytes at 100,000 jobs (issue 23, item 7).
        return (config, HashMap::new());
    }
    let (merged, sources) = crate::runtime_list::with_runtime_sources(&config, runtime);
    (Arc::new(merged), sources)
}

/// What a page is built from, for this request.
pub(super) fn sources<'a>(
    s: &'a AppState,
    config: &'a Arc<Config>,
    job_sources: &'a HashMap<JobKey, JobSource>,
) -> Sources<'a> {
    Sources {
        store: &s.store,
        config,
        sources: job_sources,
        api_unhealthy: s.outbox.api_unhealthy(),
        unhealthy_accounts: s.outbox.unhealthy_accounts(),
        budget_paused: s.budget.paused_until().is_some(),
        now: Utc::now(),
    }
}

pub(super) async fn index(
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
    let src = sources(&s, &list.config, &list.sources);
    match view::jobs::jobs_page(&src, q, true, &list.counts).await {
        Ok(p) => match &p.summary {
            Some(s) => html(jobs_template(&p, s).render()),
            None => view_error(ViewError::Internal("the header was not built".into())),
        },
        Err(e) => view_error(e),
    }
}

pub(super) async fn job(
    State(s): State<AppState>,
    Path((app_id, job_id)): Path<(String, String)>,
    Query(q): Query<JobPageQuery>,
) -> Response {
    let (config, job_sources) = watched(&s);
    let src = sources(&s, &config, &job_sources);
    match view::job::job_page(&src, &app_id, &job_id, &q).await {
        Ok(p) => {
            let before = q.before.as_deref().is_some_and(|b| !b.is_empty());
            html(job_template(&p, &config, src.now, before).render())
        }
        Err(e) => view_error(e),
    }
}

pub(super) async fn alerts(State(s): State<AppState>, Query(q): Query<AlertsQuery>) -> Response {
    let (config, job_sources) = watched(&s);
    let src = sources(&s, &config, &job_sources);
    match view::alerts::alerts_page(&src, &q).await {
        Ok(p) => {
            let first_page = q.before.as_deref().is_none_or(str::is_empty);
            let t = AlertsTemplate {
                refresh: REFRESH_SECONDS,
                reload: RELOAD_SECONDS,
                generated: utc_time(src.now),
                json_href: match &q.before {
                    Some(b) if !first_page => {
                        with_query("/api/v1/alerts", &[("before", b.clone())])
                    }
                    _ => "/api/v1/alerts".into(),
                },
                alerts: alert_rows(&p.items, &config),
                first_page,
                next_href: p
                    .next_before
                    .clone()
                    .map(|c| with_query("/alerts", &[("before", c)])),
            };
            html(t.render())
        }
        Err(e) => view_error(e),
    }
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("max-age=300"),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        body,
    )
        .into_response()
}

pub(super) async fn css() -> Response {
    asset("text/css; charset=utf-8", CSS)
}

pub(super) async fn js() -> Response {
    asset("text/javascript; charset=utf-8", JS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_web_links_become_links() {
        assert_eq!(
            safe_link(Some("https://obs.example.com/f.mp4")).as_deref(),
            Some("https://obs.example.com/f.mp4")
        );
        assert_eq!(safe_link(Some("javascript:alert(1)")), None);
        assert_eq!(safe_link(Some(" JavaScript:alert(1)")), None);
        assert_eq!(safe_link(Some("data:text/html,x")), None);
        assert_eq!(safe_link(None), None);
    }

    /// The list's header with these accounts' health (none failing: `api_healthy`).
    fn header_with(accounts: &[(&str, bool)]) -> String {
        let accounts: Vec<view::AccountHealth> = accounts
            .iter()
            .map(|(name, healthy)| view::AccountHealth {
                name: name.to_string(),
                healthy: *healthy,
            })
            .collect();
        let summary = view::Summary {
            generated_at: Timestamp::parse("2026-12-08T06:00:00.000Z").unwrap(),
            jobs: 0,
            states: Vec::new(),
            open_alerts: 0,
            open_conditions: 0,
            deliveries_pending: 0,
            deliveries_dead: 0,
            api_healthy: accounts.iter().all(|a| a.healthy),
            accounts,
            budget: view::jobs::BudgetUse {
                rate_limit: 10,
                demand_per_second: 1.0,
                in_use_percent: 10.0,
                paused: false,
                configured_stretch: 1.0,
                runtime_stretch: 1.0,
            },
        };
        let page = view::JobsPage {
            items: Vec::new(),
            next_after: None,
            matching: 0,
            summary: None,
            query: JobsQuery::default(),
        };
        let html = jobs_template(&page, &summary).render().unwrap();
        let header = html.split("<form").next().unwrap();
        header.split("id=\"summary\"").nth(1).unwrap().to_string()
    }

    #[test]
    fn the_header_names_each_accounts_health_and_the_blind_ones() {
        struct Case {
            name: &'static str,
            accounts: &'static [(&'static str, bool)],
            has: &'static [&'static str],
            lacks: &'static [&'static str],
        }
        let cases = [
            Case {
                name: "one account, healthy: as before accounts",
                accounts: &[("default", true)],
                has: &["healthy</li>"],
                lacks: &["accounts:", "default"],
            },
            Case {
                name: "one account, failing: as before accounts",
                accounts: &[("default", false)],
                has: &["<strong class=\"bad\">failing</strong></li>"],
                lacks: &["accounts:", "default"],
            },
            Case {
                name: "two, healthy",
                accounts: &[("north", true), ("south", true)],
                has: &["north healthy", "south healthy"],
                lacks: &["failing", "api_unhealthy"],
            },
            Case {
                name: "one of two blind",
                accounts: &[("north", true), ("south", false)],
                has: &[
                    "failing</strong> <strong class=\"bad\">for south</strong>",
                    "north healthy",
                    "south <strong class=\"bad\">api_unhealthy</strong>",
                ],
                lacks: &["for north", "south healthy"],
            },
            Case {
                name: "both blind",
                accounts: &[("north", false), ("south", false)],
                has: &["for north, south</strong>"],
                lacks: &["north healthy", "south healthy"],
            },
        ];
        for c in cases {
            let header = header_with(c.accounts);
            for want in c.has {
                assert!(header.contains(want), "{}: {want:?} in\n{header}", c.name);
            }
            for not in c.lacks {
                assert!(!header.contains(not), "{}: no {not:?} in\n{header}", c.name);
            }
        }
    }

    #[test]
    fn spans_read_as_hours_and_minutes() {
        let cases = [
            (40, "40s"),
            (720, "12m"),
            (3 * 3600 + 300, "3h 05m"),
            (-5, "0s"),
        ];
        for (secs, want) in cases {
            assert_eq!(span_text(chrono::Duration::seconds(secs)), want);
        }
    }
}
