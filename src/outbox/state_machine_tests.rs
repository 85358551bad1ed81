//! The outbox's state machine on a real SQLite file: what one poll's outcome writes (an alert
//! or none, by rule and severity), the open / remind / resolve steps of a condition episode,
//! the API's health, what a refused write leaves behind, and that the same transition or step
//! written twice makes one alert.
//!
//! Time is the polls' own (`polled_at`), so reminders are reached by polling "later", not by
//! waiting.

use super::*;
use crate::store::OpenEpisode;
use recwatch_rtc::model::{JobSnapshot, State, StopReason};

/// Two webhook channels (nothing is sent: no delivery worker runs here) and one job.
const CONFIG: &str = r#"
[api]
project_id = "0a1b2c3d4e5f67890a1b2c3d4e5f6789"

[api.auth]
access_key = "AK"
secret_key = "SK"

[rules]
RULES

[[notify.webhook]]
name = "hook-a"
url = "http://127.0.0.1:9/a"

[[notify.webhook]]
name = "hook-b"
url = "http://127.0.0.1:9/b"

[[jobs]]
app_id = "app"
job_id = "job"
name = "cam-1"
"#;

fn config(rules: &str) -> Config {
    crate::config::parse_str(
        &CONFIG.replace("RULES", rules),
        Vec::<(String, String)>::new(),
        None,
    )
    .expect("the test configuration is valid")
}

/// A real database in its own directory; the directory lives as long as the fixture.
struct Db {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    store: Store,
}

async fn db() -> Db {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("recwatch.db");
    let store = Store::open(&path).await.unwrap();
    Db {
        _dir: dir,
        path,
        store,
    }
}

fn phase(state: &str, reason: Option<&str>) -> Phase {
    Phase::parse(state, reason)
}

fn snapshot(state: &str, reason: Option<&str>) -> JobSnapshot {
    JobSnapshot {
        state: Some(State::parse(state)),
        stop_reason: reason.map(StopReason::parse),
        ..Default::default()
    }
}

/// An answer at `at` showing `to`; a transition from `from` when `changed`.
fn answer(
    job: &JobConfig,
    at: DateTime<Utc>,
    from: Option<Phase>,
    to: Phase,
    changed: bool,
) -> PollRecord {
    let snap = snapshot(to.state.as_str(), to.stop_reason_str());
    PollRecord {
        app_id: job.app_id().to_owned(),
        job_id: job.job_id().to_owned(),
        name: job.name.clone(),
        kind: crate::domain::JobKind::Individual,
        polled_at: at,
        outcome: PollOutcome::Ok {
            job: Box::new(snap),
            raw: "{}".into(),
            request_id: Some("req-1".into()),
            transition: changed.then_some((from, to)),
        },
    }
}

/// The RTC service says the job does not exist.
fn not_found(job: &JobConfig, at: DateTime<Utc>) -> PollRecord {
    PollRecord {
        app_id: job.app_id().to_owned(),
        job_id: job.job_id().to_owned(),
        name: job.name.clone(),
        kind: crate::domain::JobKind::Individual,
        polled_at: at,
        outcome: PollOutcome::Failed {
            kind: crate::domain::ErrorKind::NotFound,
            error: "RTC.00001003".into(),
        },
    }
}

async fn write(
    outbox: &Outbox,
    store: &Store,
    config: &Config,
    records: &[PollRecord],
    first_seen: DateTime<Utc>,
) -> Result<(), StoreError> {
    // The poller's monotonic clock, stood in for by the wall clock: these tests step no clock.
    let in_init = records.last().and_then(|r| match &r.outcome {
        PollOutcome::Ok { job, .. } if job.state == Some(crate::domain::State::Init) => Some(
            crate::rules::init_age(job.created(), first_seen, r.polled_at),
        ),
        _ => None,
    });
    let ctx = JobContext {
        job: &config.jobs[0],
        in_init,
        now: records.last().map(|r| r.polled_at).unwrap_or_else(Utc::now),
    };
    outbox.write_job_polls(store, records, &ctx, config).await
}

/// Every alert, oldest first: (rule, severity, status, summary, channels with a delivery).
async fn alerts(store: &Store) -> Vec<(String, String, String, String, Vec<String>)> {
    let mut all = store.alerts().list(false, 1000).await.unwrap();
    all.reverse();
    all.into_iter()
        .map(|a| {
            let channels = a.deliveries.iter().map(|d| d.channel.clone()).collect();
            (
                a.rule.to_string(),
                a.severity.to_string(),
                a.status.to_string(),
                a.summary,
                channels,
            )
        })
        .collect()
}

/// The open episode of `rule` for the job (`api_wide`: the API's own), read in a write
/// transaction that is rolled back.
/// An api-wide episode is the account's: job_id the account's name (`default` for `[api]`).
async fn open_episode(store: &Store, rule: Rule, api_wide: bool) -> Option<OpenEpisode> {
    let (app, job) = if api_wide {
        ("", "default")
    } else {
        ("app", "job")
    };
    let mut tx = store.begin_write().await.unwrap();
    tx.episodes().find_open(rule, app, job).await.unwrap()
}

fn both() -> Vec<String> {
    vec!["hook-a".to_string(), "hook-b".to_string()]
}

#[tokio::test]
async fn a_transition_alerts_by_its_rule_and_configured_severity_table() {
    // (name, [rules] lines, the state it stops in and why, the alert: rule and severity)
    type Case<'a> = (
        &'a str,
        &'a str,
        &'a str,
        Option<&'a str>,
        Option<(&'a str, &'a str)>,
    );
    let cases: [Case; 9] = [
        (
            "an internal error is unexpected",
            "",
            "STOPPED",
            Some("INTERNAL_ERROR"),
            Some(("stopped_unexpectedly", "critical")),
        ),
        (
            "no stop reason is unexpected",
            "",
            "STOPPED",
            None,
            Some(("stopped_unexpectedly", "critical")),
        ),
        (
            "a reason the API added later is unexpected",
            "",
            "STOPPED",
            Some("SOMETHING_NEW"),
            Some(("stopped_unexpectedly", "critical")),
        ),
        (
            "nobody published: idle_timeout",
            "",
            "STOPPED",
            Some("EXCEED_MAX_IDLE_TIME"),
            Some(("idle_timeout", "warning")),
        ),
        (
            "the tenant's own stop is off by default",
            "",
            "STOPPED",
            Some("TENANT_STOP"),
            None,
        ),
        (
            "the tenant's own stop when turned on",
            "stopped_by_tenant = \"info\"",
            "STOPPED",
            Some("TENANT_STOP"),
            Some(("stopped_by_tenant", "info")),
        ),
        (
            "a rule turned off",
            "stopped_unexpectedly = \"off\"",
            "STOPPED",
            Some("INTERNAL_ERROR"),
            None,
        ),
        (
            "a severity raised",
            "idle_timeout = \"critical\"",
            "STOPPED",
            Some("EXCEED_MAX_IDLE_TIME"),
            Some(("idle_timeout", "critical")),
        ),
        ("recording again is no alert", "", "RUNNING", None, None),
    ];
    for (name, rules, state, reason, want) in cases {
        let d = db().await;
        let config = config(rules);
        let outbox = Outbox::new();
        let job = &config.jobs[0];
        let t0 = Utc::now();
        let running = phase("RUNNING", None);
        let first = answer(job, t0, None, running.clone(), true);
        write(&outbox, &d.store, &config, &[first], t0)
            .await
            .unwrap();
        assert!(alerts(&d.store).await.is_empty(), "{name}: RUNNING alone");
        let to = phase(state, reason);
        let t1 = t0 + chrono::Duration::seconds(30);
        let stop = answer(job, t1, Some(running), to, true);
        write(&outbox, &d.store, &config, &[stop], t0)
            .await
            .unwrap();
        let history = d
            .store
            .transitions()
            .history(Some("job"), None, 10)
            .await
            .unwrap();
        assert_eq!(history.len(), 2, "{name}: both transitions are recorded");
        let got = alerts(&d.store).await;
        match want {
            None => assert!(got.is_empty(), "{name}: {got:?}"),
            Some((rule, severity)) => {
                assert_eq!(got.len(), 1, "{name}: {got:?}");
                let (r, s, status, summary, channels) = &got[0];
                assert_eq!((r.as_str(), s.as_str()), (rule, severity), "{name}");
                assert_eq!(status, "firing", "{name}");
                assert!(summary.starts_with("cam-1 "), "{name}: {summary}");
                assert_eq!(channels, &both(), "{name}: one delivery per channel");
            }
        }
    }
}

#[tokio::test]
async fn an_alert_goes_only_to_the_jobs_notify_list() {
    let d = db().await;
    let mut config = config("");
    Arc::make_mut(&mut config.jobs[0]).notify = Some(vec!["hook-b".to_string()]);
    let outbox = Outbox::new();
    let t0 = Utc::now();
    let job = config.jobs[0].clone();
    let records = [
        answer(&job, t0, None, phase("RUNNING", None), true),
        answer(
            &job,
            t0 + chrono::Duration::seconds(5),
            Some(phase("RUNNING", None)),
            phase("STOPPED", Some("INTERNAL_ERROR")),
            true,
        ),
    ];
    write(&outbox, &d.store, &config, &records, t0)
        .await
        .unwrap();
    let got = alerts(&d.store).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].4, vec!["hook-b".to_string()]);
}

#[tokio::test]
async fn the_same_transition_or_step_written_twice_makes_one_alert() {
    let d = db().await;
    let config = config("");
    // Kept ids: the second write must not even make (and announce) a second alert.
    let outbox = Outbox::new().keeping_ids();
    let job = config.jobs[0].clone();
    let t0 = Utc::now();
    let t1 = t0 + chrono::Duration::seconds(30);
    let running = answer(&job, t0, None, phase("RUNNING", None), true);
    let stopped = answer(
        &job,
        t1,
        Some(phase("RUNNING", None)),
        phase("STOPPED", None),
        true,
    );
    let batch = [running, stopped];
    write(&outbox, &d.store, &config, &batch, t0).await.unwrap();
    // A write given up on by its poll that landed anyway, sent again with the next poll.
    write(&outbox, &d.store, &config, &batch, t0).await.unwrap();
    assert_eq!(
        d.store
            .transitions()
            .history(Some("job"), None, 10)
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(alerts(&d.store).await.len(), 1);
    assert_eq!(outbox.made().len(), 1);

    // A condition's step at the same moment, twice: one episode, one firing.
    let gone = not_found(&job, t1 + chrono::Duration::seconds(30));
    write(&outbox, &d.store, &config, std::slice::from_ref(&gone), t0)
        .await
        .unwrap();
    write(&outbox, &d.store, &config, &[gone], t0)
        .await
        .unwrap();
    let got = alerts(&d.store).await;
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[1].0, "job_not_found");
    assert_eq!(outbox.made().len(), 2);

    // The alert insert itself refuses a second alert with the same dedup key.
    let alert = outbox.alert(
        Status::Firing,
        Rule::StoppedUnexpectedly,
        Severity::Critical,
        "again".into(),
        "default",
        None,
        None,
        t1,
        &config,
    );
    let mut tx = d.store.begin_write().await.unwrap();
    assert!(
        tx.alerts()
            .insert(&alert, "test:1", None, None, both(), t1)
            .await
            .unwrap()
    );
    let again = outbox.alert(
        Status::Firing,
        Rule::StoppedUnexpectedly,
        Severity::Critical,
        "again".into(),
        "default",
        None,
        None,
        t1,
        &config,
    );
    assert!(
        !tx.alerts()
            .insert(&again, "test:1", None, None, both(), t1)
            .await
            .unwrap()
    );
}

/// What one step of a condition episode wrote: `None` nothing, or the new alert's status
/// and the start of its summary.
type Step<'a> = (
    &'a str,
    i64,
    fn(&JobConfig, DateTime<Utc>) -> PollRecord,
    Option<(&'a str, &'a str)>,
);

#[tokio::test]
async fn a_job_not_found_episode_opens_reminds_and_resolves_table() {
    let d = db().await;
    let config = config("repeat_interval = \"4h\"");
    let outbox = Outbox::new();
    let job = config.jobs[0].clone();
    let t0 = Utc::now();
    fn found(j: &JobConfig, at: DateTime<Utc>) -> PollRecord {
        answer(j, at, None, phase("RUNNING", None), false)
    }
    // (name, hours after t0, the poll, what it writes)
    let steps: Vec<Step> = vec![
        (
            "not found: opens",
            0,
            not_found,
            Some(("firing", "cam-1 is not found")),
        ),
        ("an hour later: not due", 1, not_found, None),
        (
            "at repeat_interval: a reminder",
            4,
            not_found,
            Some(("firing", "still: cam-1 is not found")),
        ),
        ("just after: not due again", 5, not_found, None),
        (
            "another interval: the second reminder",
            8,
            not_found,
            Some(("firing", "still: cam-1")),
        ),
        (
            "found: resolved",
            9,
            found,
            Some(("resolved", "cam-1 is found again")),
        ),
        ("still found: nothing", 10, found, None),
        (
            "gone again: a new episode",
            11,
            not_found,
            Some(("firing", "cam-1 is not found")),
        ),
    ];
    let mut seen = 0;
    for (name, hours, poll, want) in steps {
        let at = t0 + chrono::Duration::hours(hours);
        write(&outbox, &d.store, &config, &[poll(&job, at)], t0)
            .await
            .unwrap();
        let got = alerts(&d.store).await;
        match want {
            None => assert_eq!(got.len(), seen, "{name}: {got:?}"),
            Some((status, summary)) => {
                assert_eq!(got.len(), seen + 1, "{name}: {got:?}");
                let (rule, severity, s, text, channels) = &got[seen];
                assert_eq!(
                    (rule.as_str(), severity.as_str()),
                    ("job_not_found", "warning"),
                    "{name}"
                );
                assert_eq!(s, status, "{name}");
                assert!(text.starts_with(summary), "{name}: {text}");
                assert_eq!(channels, &both(), "{name}");
                seen += 1;
            }
        }
    }
    let open = open_episode(&d.store, Rule::JobNotFound, false).await;
    assert_eq!(
        open.map(|e| e.reminders),
        Some(0),
        "the new episode is open"
    );
}

#[tokio::test]
async fn without_send_resolved_an_episode_closes_silently() {
    let d = db().await;
    let config = config("send_resolved = false");
    let outbox = Outbox::new();
    let job = config.jobs[0].clone();
    let t0 = Utc::now();
    write(&outbox, &d.store, &config, &[not_found(&job, t0)], t0)
        .await
        .unwrap();
    assert!(
        open_episode(&d.store, Rule::JobNotFound, false)
            .await
            .is_some()
    );
    let back = answer(&job, t0, None, phase("RUNNING", None), true);
    write(&outbox, &d.store, &config, &[back], t0)
        .await
        .unwrap();
    assert_eq!(open_episode(&d.store, Rule::JobNotFound, false).await, None);
    let got = alerts(&d.store).await;
    assert_eq!(got.len(), 1, "the firing only: {got:?}");
    assert_eq!(got[0].2, "firing");
}

#[tokio::test]
async fn not_found_is_held_back_while_the_api_is_unhealthy_but_still_resolves() {
    let d = db().await;
    let config = config("");
    let outbox = Outbox::new();
    let job = config.jobs[0].clone();
    let t0 = Utc::now();
    write(&outbox, &d.store, &config, &[not_found(&job, t0)], t0)
        .await
        .unwrap();
    assert_eq!(alerts(&d.store).await.len(), 1);
    // The whole API goes down: a job that is (still, or newly) not found is not the news.
    outbox.set_api_unhealthy("default", true);
    let t1 = t0 + chrono::Duration::hours(5);
    write(&outbox, &d.store, &config, &[not_found(&job, t1)], t0)
        .await
        .unwrap();
    assert_eq!(
        alerts(&d.store).await.len(),
        1,
        "no reminder while held back"
    );
    // Found while the API is still counted unhealthy: the episode resolves all the same.
    let back = answer(&job, t1, None, phase("RUNNING", None), true);
    write(&outbox, &d.store, &config, &[back], t0)
        .await
        .unwrap();
    let got = alerts(&d.store).await;
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[1].2, "resolved");
    // And a job newly not found during the outage opens nothing.
    let t2 = t1 + chrono::Duration::hours(1);
    write(&outbox, &d.store, &config, &[not_found(&job, t2)], t0)
        .await
        .unwrap();
    assert_eq!(alerts(&d.store).await.len(), 2);
    assert_eq!(open_episode(&d.store, Rule::JobNotFound, false).await, None);
}

#[tokio::test]
async fn a_job_stuck_in_init_fires_and_resolves_once_it_records() {
    let d = db().await;
    let config = config("init_grace = \"60s\"");
    let outbox = Outbox::new();
    let job = config.jobs[0].clone();
    let t0 = Utc::now();
    let mut init = snapshot("INIT", None);
    init.max_idle_time = Some(600);
    let poll = |at: DateTime<Utc>, snap: JobSnapshot, transition| PollRecord {
        app_id: "app".into(),
        job_id: "job".into(),
        name: job.name.clone(),
        kind: crate::domain::JobKind::Individual,
        polled_at: at,
        outcome: PollOutcome::Ok {
            job: Box::new(snap),
            raw: "{}".into(),
            request_id: None,
            transition,
        },
    };
    // In INIT for 10 minutes (max_idle_time) plus the 60 s grace: not yet stuck.
    let early = poll(
        t0 + chrono::Duration::seconds(600),
        init.clone(),
        Some((None, phase("INIT", None))),
    );
    write(&outbox, &d.store, &config, &[early], t0)
        .await
        .unwrap();
    assert!(alerts(&d.store).await.is_empty());
    let late = poll(t0 + chrono::Duration::seconds(661), init.clone(), None);
    write(&outbox, &d.store, &config, &[late], t0)
        .await
        .unwrap();
    let got = alerts(&d.store).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        (got[0].0.as_str(), got[0].2.as_str()),
        ("stuck_init", "firing")
    );
    assert!(
        got[0]
            .3
            .contains("has been in INIT for longer than its max_idle_time (10m)"),
        "{}",
        got[0].3
    );
    let started = poll(
        t0 + chrono::Duration::seconds(700),
        snapshot("RUNNING", None),
        Some((Some(phase("INIT", None)), phase("RUNNING", None))),
    );
    write(&outbox, &d.store, &config, &[started], t0)
        .await
        .unwrap();
    let got = alerts(&d.store).await;
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[1].2, "resolved");
    assert_eq!(got[1].3, "cam-1 is no longer stuck in INIT");
    assert_eq!(open_episode(&d.store, Rule::StuckInit, false).await, None);
}

#[tokio::test]
async fn the_api_health_episode_opens_reminds_resolves_and_survives_a_restart() {
    let d = db().await;
    let config = config("repeat_interval = \"4h\"");
    let outbox = Outbox::new();
    let down = ApiHealthChange::Unhealthy {
        reason: "3 polls failed".into(),
    };
    outbox.api_health(&d.store, down, &config).await.unwrap();
    assert!(outbox.api_unhealthy());
    let got = alerts(&d.store).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        (got[0].0.as_str(), got[0].1.as_str(), got[0].2.as_str()),
        ("api_unhealthy", "critical", "firing")
    );
    assert_eq!(got[0].3, "the RTC API is unhealthy: 3 polls failed");
    assert_eq!(got[0].4, both(), "api-wide alerts go to every channel");

    // A new run finds the episode open.
    let restarted = Outbox::new();
    assert!(!restarted.api_unhealthy());
    restarted
        .restore(&d.store, &config.account_names())
        .await
        .unwrap();
    assert!(restarted.api_unhealthy());

    // Still down right after: no reminder yet.
    outbox.api_still_unhealthy(&d.store, &config).await.unwrap();
    assert_eq!(alerts(&d.store).await.len(), 1);
    // The last notice 5 h ago (repeat_interval 4h): a reminder.
    let open = open_episode(&d.store, Rule::ApiUnhealthy, true)
        .await
        .unwrap();
    let mut tx = d.store.begin_write().await.unwrap();
    let long_ago = crate::domain::timestamp(Utc::now() - chrono::Duration::hours(5));
    tx.episodes()
        .remind(open.id, &long_ago, open.reminders)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    outbox.api_still_unhealthy(&d.store, &config).await.unwrap();
    let got = alerts(&d.store).await;
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[1].3, "still: the RTC API is still unhealthy");

    outbox
        .api_health(&d.store, ApiHealthChange::Recovered, &config)
        .await
        .unwrap();
    assert!(!outbox.api_unhealthy());
    let got = alerts(&d.store).await;
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(
        (got[2].2.as_str(), got[2].3.as_str()),
        ("resolved", "the RTC API answers normally again")
    );
    // Recovered: a reminder check writes nothing, and a new run starts healthy.
    outbox.api_still_unhealthy(&d.store, &config).await.unwrap();
    assert_eq!(alerts(&d.store).await.len(), 3);
    restarted
        .restore(&d.store, &config.account_names())
        .await
        .unwrap();
    assert!(!restarted.api_unhealthy());
}

/// Holds the database's write lock until dropped, through a second store on the same file:
/// another process, as far as SQLite can tell.
async fn lock(path: &std::path::Path) -> (Store, WriteTx) {
    let other = Store::open(path).await.unwrap();
    let held = other.begin_write().await.unwrap();
    (other, held)
}

#[tokio::test]
async fn a_refused_write_leaves_nothing_and_the_owed_outcomes_are_written_once_later() {
    let d = db().await;
    let config = config("");
    let outbox = Outbox::new().keeping_ids();
    let job = config.jobs[0].clone();
    // Polled an hour ago, before the API's health (written at its own now) changed.
    let t0 = Utc::now() - chrono::Duration::hours(1);
    let owed_polls = [
        answer(&job, t0, None, phase("RUNNING", None), true),
        answer(
            &job,
            t0 + chrono::Duration::seconds(30),
            Some(phase("RUNNING", None)),
            phase("STOPPED", Some("INTERNAL_ERROR")),
            true,
        ),
    ];
    let mut owed_health = OwedHealth::default();
    owed_health.push(ApiHealthChange::Unhealthy {
        reason: "every poll failed".into(),
    });
    owed_health.push(ApiHealthChange::Recovered);

    let locker = lock(&d.path).await;
    let refused = write(&outbox, &d.store, &config, &owed_polls, t0).await;
    assert!(
        matches!(refused, Err(StoreError::Locked(_))),
        "{:?}",
        refused.err()
    );
    let refused = outbox
        .write_api_health(&d.store, &owed_health, &config)
        .await;
    assert!(refused.is_err(), "the API's health is refused too");
    drop(locker);
    // Nothing of either write is in the database, and nothing was announced.
    assert!(
        d.store
            .transitions()
            .history(None, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(alerts(&d.store).await.is_empty());
    assert!(outbox.made().is_empty());
    assert_eq!(open_episode(&d.store, Rule::ApiUnhealthy, true).await, None);

    // The caller kept them; written again, everything lands once, in order.
    write(&outbox, &d.store, &config, &owed_polls, t0)
        .await
        .unwrap();
    outbox
        .write_api_health(&d.store, &owed_health, &config)
        .await
        .unwrap();
    assert_eq!(
        d.store
            .transitions()
            .history(None, None, 10)
            .await
            .unwrap()
            .len(),
        2
    );
    let got: Vec<(String, String)> = alerts(&d.store)
        .await
        .into_iter()
        .map(|a| (a.0, a.2))
        .collect();
    let want = [
        ("stopped_unexpectedly", "firing"),
        ("api_unhealthy", "firing"),
        ("api_unhealthy", "resolved"),
    ];
    assert_eq!(
        got,
        want.map(|(r, s)| (r.to_string(), s.to_string())).to_vec(),
        "an outage over before the database took it is still told, then resolved"
    );
    assert_eq!(outbox.made().len(), 3);
    assert_eq!(open_episode(&d.store, Rule::ApiUnhealthy, true).await, None);
}

#[tokio::test]
async fn a_group_of_jobs_commits_together_and_each_gets_its_answer() {
    let d = db().await;
    let mut config = config("");
    let mut second = JobConfig::clone(&config.jobs[0]);
    second.key = crate::domain::JobKey::new(second.app_id().to_owned(), "job-2");
    second.name = Some("cam-2".into());
    config.jobs.push(Arc::new(second));
    let config = Arc::new(config);
    let outbox = Outbox::new();
    let t0 = Utc::now();
    let unit = |job: &JobConfig| JobWrite {
        records: vec![answer(job, t0, None, phase("STOPPED", None), true)],
        job: job.clone(),
        in_init: None,
        now: t0,
        config: config.clone(),
    };
    let group = [unit(&config.jobs[0]), unit(&config.jobs[1])];
    let results = outbox.write_group(&d.store, &group).await;
    assert_eq!(results.len(), 2);
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let got = alerts(&d.store).await;
    let summaries: Vec<&str> = got.iter().map(|a| a.3.as_str()).collect();
    assert_eq!(summaries.len(), 2, "{summaries:?}");
    assert!(
        summaries.iter().any(|s| s.starts_with("cam-1 ")),
        "{summaries:?}"
    );
    assert!(
        summaries.iter().any(|s| s.starts_with("cam-2 ")),
        "{summaries:?}"
    );
    // Locked by another process: every job of the group is told, and nothing is written.
    let locker = lock(&d.path).await;
    let later = |job: &JobConfig| JobWrite {
        records: vec![answer(
            job,
            t0 + chrono::Duration::seconds(30),
            Some(phase("STOPPED", None)),
            phase("RUNNING", None),
            true,
        )],
        ..unit(job)
    };
    let results = outbox
        .write_group(&d.store, &[later(&config.jobs[0]), later(&config.jobs[1])])
        .await;
    drop(locker);
    assert_eq!(results.len(), 2);
    for r in &results {
        let e = r.as_ref().expect_err("locked");
        assert!(
            e.to_string().contains("database locked by another process"),
            "{e:#}"
        );
    }
    assert_eq!(
        d.store
            .transitions()
            .history(None, None, 10)
            .await
            .unwrap()
            .len(),
        2
    );
}
