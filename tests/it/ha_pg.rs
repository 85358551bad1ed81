//! High availability on PostgreSQL (issue 13): several `recwatch run` on one database, one
//! active. Each test starts two instances (each its own process, HTTP endpoint and webhook
//! receiver, one channel named `hook` in both) on one database of the tests' own server.
//! What counts is what reached the receivers, together: every death alerted, and never two
//! different alerts (two alert ids) for one death. The same alert id twice is allowed after a
//! failover: at-least-once, with the id the receiver deduplicates on.

use crate::ha::{gauge, scrape};
use crate::harness::*;
use crate::support::receiver::Receiver;
use crate::test_pg::PgServer;
use recwatch_sim::{Simulator, job_id};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// One instance: its process and its own receiver.
struct Instance {
    app: TestApp,
    hook: Receiver,
}

async fn instance(sim: &Simulator, jobs: usize, db_url: &str) -> Instance {
    let hook = Receiver::start(Some(SECRET)).await;
    let mut cfg = AppConfig::new(sim, jobs);
    cfg.listen = "127.0.0.1:0".into();
    cfg.storage_url = Some(db_url.to_string());
    cfg.extra = notify_toml(Some(hook.url().as_str()), None, "");
    Instance {
        app: TestApp::new(&cfg),
        hook,
    }
}

/// The death alerts (stopped_unexpectedly, firing) that reached `hooks`: job → alert ids.
fn deaths(hooks: &[&Receiver]) -> BTreeMap<String, BTreeSet<String>> {
    let mut by_job: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for hook in hooks {
        for d in hook.received() {
            if d.alert.rule.as_str() == "stopped_unexpectedly"
                && d.alert.status.as_str() == "firing"
            {
                let job = d
                    .alert
                    .job
                    .as_ref()
                    .map(|j| j.job_id.clone())
                    .unwrap_or_default();
                by_job
                    .entry(job)
                    .or_default()
                    .insert(d.alert.id.to_string());
            }
        }
    }
    by_job
}

/// Kills job `i` (STOPPED, INTERNAL_ERROR: a death).
fn kill_job(sim: &Simulator, i: usize) {
    let j = job_id(i);
    set_state(sim, &j, "STOPPED", Some("INTERNAL_ERROR"));
}

/// Waits until the deaths of `jobs` have reached the receivers.
async fn wait_deaths(hooks: &[&Receiver], jobs: &[usize]) {
    let want: Vec<String> = jobs.iter().map(|&i| job_id(i)).collect();
    wait_for(&format!("the deaths of {want:?} alerted"), T, || {
        let seen = deaths(hooks);
        let all = want.iter().all(|j| seen.contains_key(j));
        async move { all.then_some(()) }
    })
    .await;
}

/// Every death alerted under one alert id only.
fn assert_each_death_once(hooks: &[&Receiver], jobs: &[usize]) {
    let seen = deaths(hooks);
    for &i in jobs {
        let ids = seen.get(&job_id(i)).cloned().unwrap_or_default();
        assert_eq!(
            ids.len(),
            1,
            "{}: one alert for one death: {seen:?}",
            job_id(i)
        );
    }
    assert_eq!(
        seen.len(),
        jobs.len(),
        "no alert for a job that did not die: {seen:?}"
    );
}

/// Starts `a`, waits until it leads, starts `b`, waits until it stands by (its `/readyz` 200
/// and `recwatch_leader` 0) and says who leads.
async fn start_pair(a: &mut Instance, b: &mut Instance) {
    a.app.start();
    a.app
        .wait_log("taking over as the active instance", T)
        .await;
    b.app.start();
    b.app
        .wait_log("is the active instance (lease epoch", T)
        .await;
    let addr = b.app.http_addr().await;
    let ready = reqwest::get(format!("http://{addr}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200, "a healthy standby is ready");
    let text = scrape(addr).await;
    assert_eq!(gauge(&text, "recwatch_leader"), Some(0.0), "{text}");
    assert_eq!(gauge(&text, "recwatch_leader_epoch"), Some(1.0), "{text}");
    let (code, out, err) = b.app.run_cmd(&["status"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("(pid {}) (lease epoch 1,", a.app.pid())),
        "status names the active instance: {out}"
    );
    let (code, out, err) = b.app.run_cmd(&["check"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!(
            "  role       standby: {} (pid {}) (lease epoch 1",
            recwatch::domain::hostname(),
            a.app.pid()
        )),
        "check says this instance would stand by, and for whom: {out}"
    );
}

/// kill -9 of the active instance while jobs die before, during and after the takeover:
/// the standby takes over, and each death reaches the receivers under one alert id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_active_instance_loses_no_death_and_doubles_none() {
    let sim = start_sim(static_sim(4)).await;
    let db = crate::test_pg::fresh_database().await;
    let (mut a, mut b) = (instance(&sim, 4, &db).await, instance(&sim, 4, &db).await);
    start_pair(&mut a, &mut b).await;
    wait_for("every job RUNNING", T, || async {
        let n = a
            .app
            .run_cmd(&["status", "--json"])
            .await
            .1
            .matches("\"RUNNING\"")
            .count();
        (n == 4).then_some(())
    })
    .await;
    let hooks = [&a.hook, &b.hook];

    kill_job(&sim, 0);
    wait_deaths(&hooks, &[0]).await;
    a.app.kill().await;
    // During the takeover: the dead leader's lease has not expired yet.
    kill_job(&sim, 1);
    b.app
        .wait_log("taking over as the active instance (lease epoch 2)", T)
        .await;
    kill_job(&sim, 2);
    wait_deaths(&hooks, &[0, 1, 2]).await;
    // The last job's poll after the last death proves b is past every death's write.
    let polled = polls_of(&sim, &job_id(3));
    wait_for("another poll of the living job", T, || async {
        (polls_of(&sim, &job_id(3)) > polled + 2).then_some(())
    })
    .await;
    assert_each_death_once(&hooks, &[0, 1, 2]);
    assert!(b.app.stop().await.success());
}

/// A leader stopped (SIGSTOP) until the standby has taken over and alerted a death, then let
/// go (SIGCONT): it steps down and says why, and neither sends nor writes anything after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_that_wakes_after_the_takeover_sends_and_writes_nothing() {
    let sim = start_sim(static_sim(3)).await;
    let db = crate::test_pg::fresh_database().await;
    let (mut a, mut b) = (instance(&sim, 3, &db).await, instance(&sim, 3, &db).await);
    start_pair(&mut a, &mut b).await;
    let hooks = [&a.hook, &b.hook];
    kill_job(&sim, 0);
    wait_deaths(&hooks, &[0]).await;

    a.app.signal("STOP");
    b.app
        .wait_log("taking over as the active instance (lease epoch 2)", T)
        .await;
    kill_job(&sim, 1);
    wait_deaths(&hooks, &[0, 1]).await;
    let sent_by_a = a.hook.attempts().len();
    let (_, before, _) = b.app.run_cmd(&["alerts", "--json"]).await;
    let (_, history_before, _) = b.app.run_cmd(&["history", "--json"]).await;

    a.app.signal("CONT");
    a.app.wait_log("stepping down to standby", T).await;
    // Past the point: b alerts a later death, and the woken instance is a standby.
    kill_job(&sim, 2);
    wait_deaths(&hooks, &[0, 1, 2]).await;
    let addr = a.app.http_addr().await;
    wait_for("the woken instance to say it is a standby", T, || async {
        (gauge(&scrape(addr).await, "recwatch_leader") == Some(0.0)).then_some(())
    })
    .await;
    assert_eq!(
        a.hook.attempts().len(),
        sent_by_a,
        "the woken leader sent nothing"
    );
    let (_, after, _) = b.app.run_cmd(&["alerts", "--json"]).await;
    let count = |s: &str| s.matches("\"stopped_unexpectedly\"").count();
    assert_eq!(
        count(&after),
        count(&before) + 1,
        "only job 2's alert was added:\n{before}\n{after}"
    );
    let (_, history_after, _) = b.app.run_cmd(&["history", "--json"]).await;
    let rows = |s: &str| {
        serde_json::from_str::<Vec<serde_json::Value>>(s)
            .unwrap()
            .len()
    };
    assert_eq!(
        rows(&history_after),
        rows(&history_before) + 1,
        "only job 2's transition was added:\n{history_before}\n{history_after}"
    );
    assert_each_death_once(&hooks, &[0, 1, 2]);
    assert!(a.app.stop().await.success());
    assert!(b.app.stop().await.success());
}

/// The database restarted under a running pair: both ride it out, one of them leads after
/// it, and a death after the restart is alerted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_restarted_under_a_running_pair() {
    let sim = start_sim(static_sim(2)).await;
    let mut server = tokio::task::spawn_blocking(PgServer::start).await.unwrap();
    let db = server.fresh_database().await;
    let (mut a, mut b) = (instance(&sim, 2, &db).await, instance(&sim, 2, &db).await);
    start_pair(&mut a, &mut b).await;
    let hooks = [&a.hook, &b.hook];
    kill_job(&sim, 0);
    wait_deaths(&hooks, &[0]).await;

    let mut server = tokio::task::spawn_blocking(move || {
        server.stop();
        server
    })
    .await
    .unwrap();
    a.app.wait_log("stepping down to standby", T).await;
    let server = tokio::task::spawn_blocking(move || {
        server.restart();
        server
    })
    .await
    .unwrap();
    let epoch2 = "taking over as the active instance (lease epoch 2)";
    wait_for("one instance to lead again", T, || {
        let led = a.app.log_text().contains(epoch2) || b.app.log_text().contains(epoch2);
        async move { led.then_some(()) }
    })
    .await;
    kill_job(&sim, 1);
    wait_deaths(&hooks, &[0, 1]).await;
    assert_each_death_once(&hooks, &[0, 1]);
    assert!(a.app.stop().await.success());
    assert!(b.app.stop().await.success());
    drop(server);
}

/// `poll-once` beside a running instance would poll every job a second time, outside the
/// account's budget: it is refused (75) naming the active instance; once that instance has
/// stopped it polls, and gives the lease back so the next `run` leads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_once_beside_an_active_instance_is_refused_and_alone_it_polls() {
    let sim = start_sim(static_sim(2)).await;
    let db = crate::test_pg::fresh_database().await;
    let (mut a, mut b) = (instance(&sim, 2, &db).await, instance(&sim, 2, &db).await);
    a.app.start();
    a.app
        .wait_log("taking over as the active instance", T)
        .await;
    let (code, _out, err) = b.app.run_cmd(&["poll-once"]).await;
    assert_eq!(code, 75, "refused beside the active instance: {err}");
    assert!(
        err.contains(&format!("(pid {})", a.app.pid())),
        "names the active instance: {err}"
    );
    assert!(
        !err.contains("sqlx::postgres::notice"),
        "PostgreSQL's notices stay out of a command's output: {err}"
    );
    assert!(a.app.stop().await.success());
    let before = polls_of(&sim, &job_id(0));
    let (code, out, err) = b.app.run_cmd(&["poll-once"]).await;
    assert_eq!(code, 0, "alone, it polls: {out}{err}");
    assert!(polls_of(&sim, &job_id(0)) > before, "it polled: {out}");
    b.app.start();
    b.app
        .wait_log("taking over as the active instance", T)
        .await;
    assert!(b.app.stop().await.success());
}

/// The remediation states `b`'s `recwatch remediations --json` shows: (old job, state, new job).
async fn remediation_states(app: &TestApp) -> Vec<(String, String, Option<String>)> {
    let (code, out, err) = app.run_cmd(&["remediations", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    rows.iter()
        .map(|r| {
            (
                r["old_job_id"].as_str().unwrap_or_default().to_string(),
                r["state"].as_str().unwrap_or_default().to_string(),
                r["new_job_id"].as_str().map(String::from),
            )
        })
        .collect()
}

/// The ids of the `remediation_failed` alerts that reached `hooks`.
fn remediation_failures(hooks: &[&Receiver]) -> BTreeSet<String> {
    hooks
        .iter()
        .flat_map(|h| h.received())
        .filter(|d| d.alert.rule.as_str() == "remediation_failed")
        .map(|d| d.alert.id.to_string())
        .collect()
}

/// A leader killed (-9) while its re-creation's POST hangs leaves the intent `posting`: the
/// standby that takes over cannot know whether a job was made, so the intent becomes
/// `unknown` with one critical alert, and it is never posted again (the API has no
/// idempotency key); the new leader's own remediations work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_turns_the_old_leaders_posting_remediation_unknown_once_and_never_posts_it() {
    use crate::remediation::{full, kill, sim_opts};
    use recwatch_sim::{CreateFault, CreateFaultKind};
    let sim = start_sim(sim_opts(2)).await;
    for i in 0..2 {
        sim.set_job("demo-app", &job_id(i), full(&job_id(i), "RUNNING", None));
    }
    let db = crate::test_pg::fresh_database().await;
    let mut pair = Vec::new();
    for _ in 0..2 {
        let hook = Receiver::start(Some(SECRET)).await;
        let mut cfg = AppConfig::new(&sim, 2);
        cfg.listen = "127.0.0.1:0".into();
        cfg.storage_url = Some(db.clone());
        // Long enough that the leader is killed while the create still hangs.
        cfg.timeout = "60s";
        cfg.extra = format!(
            "{}\n[remediate]\nenabled = true\n",
            notify_toml(Some(hook.url().as_str()), None, "")
        );
        pair.push(Instance {
            app: TestApp::new(&cfg),
            hook,
        });
    }
    let (mut b, mut a) = (pair.pop().unwrap(), pair.pop().unwrap());
    start_pair(&mut a, &mut b).await;
    wait_for("both jobs RUNNING", T, || async {
        let (_, out, _) = a.app.run_cmd(&["status", "--json"]).await;
        (out.matches("\"RUNNING\"").count() == 2).then_some(())
    })
    .await;

    sim.set_create_fault(CreateFault::new(CreateFaultKind::Stall(
        Duration::from_secs(3600),
    )));
    kill(&sim, &job_id(0), "INTERNAL_ERROR");
    wait_for("the old leader's create received", T, || {
        let n = sim.stats().creates;
        async move { (n == 1).then_some(()) }
    })
    .await;
    wait_for("the intent marked posting", T, || async {
        let rows = remediation_states(&b.app).await;
        (rows.first().map(|r| r.1.as_str()) == Some("posting")).then_some(())
    })
    .await;
    a.app.kill().await;
    sim.clear_create_faults();

    b.app
        .wait_log("taking over as the active instance (lease epoch 2)", T)
        .await;
    let hooks = [&a.hook, &b.hook];
    wait_for(
        "the posting intent unknown and a human alerted",
        T,
        || async {
            let rows = remediation_states(&b.app).await;
            let unknown = rows.first().map(|r| r.1.as_str()) == Some("unknown");
            (unknown && !remediation_failures(&hooks).is_empty()).then_some(())
        },
    )
    .await;
    let (code, out, err) = b.app.run_cmd(&["alerts", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let alerts: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let failed: Vec<&serde_json::Value> = alerts
        .iter()
        .filter(|a| a["rule"] == "remediation_failed")
        .collect();
    assert_eq!(failed.len(), 1, "one alert for the one unknown: {out}");
    assert_eq!(failed[0]["severity"], "critical", "{out}");

    // Past the point: the new leader re-creates the next death, and job-0000's create was
    // never posted again.
    kill(&sim, &job_id(1), "INTERNAL_ERROR");
    wait_for("job-0001 re-created by the new leader", T, || async {
        let rows = remediation_states(&b.app).await;
        rows.iter()
            .any(|r| r.0 == job_id(1) && r.1 == "recreated")
            .then_some(())
    })
    .await;
    assert_eq!(
        sim.stats().creates,
        2,
        "job-0000's create was never posted again"
    );
    let rows = remediation_states(&b.app).await;
    assert_eq!(
        rows.iter().filter(|r| r.0 == job_id(0)).count(),
        1,
        "{rows:?}"
    );
    assert_eq!(
        remediation_failures(&hooks).len(),
        1,
        "one critical alert, not one per instance"
    );
    assert!(b.app.stop().await.success());
}
