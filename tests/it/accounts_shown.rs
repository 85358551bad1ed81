//! Several accounts (issue 25) as a receiver, an API client, the command line and Prometheus
//! see them: an alert names its job's account, a run-time job names the account that polls it
//! (an unknown one refused, naming those there are), and `/metrics` labels the per-account
//! series. The simulator takes one AK/SK, so both accounts carry the same keys and project:
//! two entries of one static key, sharing its budget.

use crate::harness::*;
use crate::support::receiver::Receiver;
use recwatch_sim::job_id;
use serde_json::Value;
use std::net::SocketAddr;

const TOKEN: &str = "test-api-token-0123456789";

/// Two accounts of the simulator's one key, `north` (the first: the account of jobs that name
/// none) and `south`, and the simulator's jobs 0 (naming none) and 1 (naming `south`) after
/// `extra`.
fn two_accounts(sim: &recwatch_sim::Simulator, extra: &str) -> AppConfig {
    let mut cfg = AppConfig::new(sim, 0);
    cfg.accounts_toml = Some(format!(
        "{}{}",
        account_toml("north", &sim.url(), (AK, SK), "rate_limit = 50"),
        account_toml("south", &sim.url(), (AK, SK), "rate_limit = 50"),
    ));
    cfg.extra = format!(
        "{extra}\n[[jobs]]\napp_id = \"demo-app\"\njob_id = \"{}\"\n\
         \n[[jobs]]\napp_id = \"demo-app\"\njob_id = \"{}\"\naccount = \"south\"\n",
        job_id(0),
        job_id(1)
    );
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_alert_names_its_jobs_account() {
    let sim = start_sim(static_sim(2)).await;
    let hook = Receiver::start(Some(SECRET)).await;
    let cfg = two_accounts(&sim, &notify_toml(Some(hook.url().as_str()), None, ""));
    let mut app = TestApp::spawn(&cfg, 2).await;
    set_state(&sim, &job_id(1), "STOPPED", Some("INTERNAL_ERROR"));
    let got = hook.wait_for(1, T).await;
    let a = &got[0].alert;
    assert_eq!(a.job.as_ref().unwrap().job_id, job_id(1));
    assert_eq!(a.account, "south", "the job's own account");
    // On the wire: a top-level string, beside the job.
    let body: Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(body["account"], "south");
    set_state(&sim, &job_id(0), "STOPPED", Some("INTERNAL_ERROR"));
    let got = hook.wait_for(2, T).await;
    let a = &got[1].alert;
    assert_eq!(a.job.as_ref().unwrap().job_id, job_id(0));
    assert_eq!(a.account, "north", "a job naming none: the first account");
    assert!(app.stop().await.success());
}

async fn post(addr: SocketAddr, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("http://{addr}/api/v1/jobs"))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

/// The value of the series `series` (its name and labels as the text writes them).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_time_job_names_its_account_and_metrics_carry_the_label() {
    let sim = start_sim(static_sim(4)).await;
    let mut cfg = two_accounts(&sim, &format!("token = \"{TOKEN}\"\n"));
    cfg.listen = "127.0.0.1:0".into();
    let mut app = TestApp::spawn(&cfg, 2).await;
    let addr = app.http_addr().await;

    // An unknown account: 400, naming the accounts there are; nothing added.
    let (status, body) = post(
        addr,
        serde_json::json!({"app_id": "demo-app", "job_id": job_id(2), "account": "west"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let said = body.as_str().unwrap();
    assert!(
        said.contains(r#"account "west" is not a configured account; use one of "north", "south""#),
        "{said}"
    );
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM watchlist").await,
        0,
        "nothing stored"
    );

    // A configured one: stored, answered, and the job polled.
    let (status, body) = post(
        addr,
        serde_json::json!({"app_id": "demo-app", "job_id": job_id(2), "account": "south"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["account"], "south");
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM watchlist WHERE account = 'south'")
            .await,
        1
    );
    app.wait_running(3).await;

    // The command line: the same refusal (usage, 64), and the account said when taken.
    let (code, _, err) = app
        .run_cmd(&["watch", "demo-app", &job_id(3), "--account", "west"])
        .await;
    assert_eq!(code, 64, "{err}");
    assert!(err.contains(r#"use one of "north", "south""#), "{err}");
    let (code, out, err) = app
        .run_cmd(&["watch", "demo-app", &job_id(3), "--account", "south"])
        .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("polled by account south"), "{out}");
    app.wait_running(4).await;

    // Each account's series, under its name; no series without one.
    let scrape = || async {
        reqwest::get(format!("http://{addr}/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()
    };
    let text = wait_for("polls of both accounts counted", T, || async {
        let text = scrape().await?;
        let polled = |a: &str| {
            value(
                &text,
                &format!("recwatch_polls_total{{account=\"{a}\",outcome=\"ok\"}}"),
            )
            .is_some_and(|v| v >= 1.0)
        };
        (polled("north") && polled("south")).then_some(text)
    })
    .await;
    for account in ["north", "south"] {
        for (series, want) in [
            (
                format!("recwatch_api_unhealthy{{account=\"{account}\"}}"),
                0.0,
            ),
            (
                format!("recwatch_api_rate_limit{{account=\"{account}\"}}"),
                50.0,
            ),
            (
                format!("recwatch_throttled_total{{account=\"{account}\"}}"),
                0.0,
            ),
        ] {
            assert_eq!(value(&text, &series), Some(want), "{series} in\n{text}");
        }
    }
    let unlabelled = |l: &&str| {
        l.starts_with("recwatch_api_unhealthy ") || l.starts_with("recwatch_polls_total{outcome")
    };
    assert_eq!(
        text.lines().find(unlabelled),
        None,
        "a series without its account"
    );
    // Each account's budget counts its own jobs: north job 0; south job 1 and both run-time.
    let demand = |a: &str| {
        value(
            &text,
            &format!("recwatch_rate_budget_demand_ratio{{account=\"{a}\"}}"),
        )
        .unwrap()
    };
    assert!(demand("south") > demand("north") * 2.5, "{text}");
    assert!(app.stop().await.success());
}
