//! Several accounts, visible (issue 25): two `[[accounts]]` against the one simulator (its one
//! key and project, so they also share one key's budget), and what `check`, `check --online`,
//! `status`, `status --json`, `/api/v1/jobs` (`account`, `?account=`) and the status page say
//! of them.

use crate::harness::*;
use std::net::SocketAddr;
use std::time::Duration;

/// GET on the daemon's endpoint: (status, body).
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let r = http
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Four jobs, `job-0000` and `job-0002` polled by `north`, the others by `south`.
async fn two_accounts() -> (recwatch_sim::Simulator, TestApp, SocketAddr) {
    let sim = start_sim(static_sim(4)).await;
    let mut cfg = AppConfig::new(&sim, 4);
    cfg.accounts = vec!["north".into(), "south".into()];
    cfg.listen = "127.0.0.1:0".into();
    let mut app = TestApp::new(&cfg);
    app.start();
    let addr = app.http_addr().await;
    app.wait_running(4).await;
    (sim, app, addr)
}

/// The account of each job as `account` values of a JSON array of rows, by job id.
fn accounts_of(rows: &[serde_json::Value]) -> Vec<(String, String)> {
    let mut of: Vec<(String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["job_id"].as_str().unwrap().to_string(),
                r["account"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    of.sort();
    of
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(j, a)| (j.to_string(), a.to_string()))
        .collect()
}

#[tokio::test]
async fn check_lists_each_account_and_the_budget_they_share() {
    let (_sim, app, _addr) = two_accounts().await;
    let (code, out, err) = app.run_cmd(&["check", "--online"]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("  accounts   2: north, south"),
        "the accounts listed:\n{out}"
    );
    for name in ["north", "south"] {
        let head = out
            .lines()
            .find(|l| l.starts_with(&format!("  account    {name}: http://")))
            .unwrap_or_else(|| panic!("{name}'s line:\n{out}"));
        assert!(
            head.contains("AK/SK (SDK-HMAC-SHA256), access key TEST…"),
            "the credential source, the key's head only: {head}"
        );
        assert!(
            out.contains(&format!(
                "  online     account {name}: http://{}",
                head.split("http://")
                    .nth(1)
                    .unwrap()
                    .split(' ')
                    .next()
                    .unwrap()
            )),
            "{name} probed and named:\n{out}"
        );
    }
    assert_eq!(
        out.matches(&format!("project {PROJECT}")).count(),
        2,
        "{out}"
    );
    // Each account's demand: two jobs every 100 ms, 20 requests/s of the budget of 50.
    assert_eq!(
        out.matches("  demand     20.00 requests/s for 2 jobs (40% of the budget)")
            .count(),
        2,
        "{out}"
    );
    assert!(
        out.contains(
            "  shared     accounts north and south share access key TEST…'s budget of 50 requests/s (together 40.00 requests/s, 80% of it)"
        ),
        "the shared budget said plainly:\n{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains("job job-0001 every ") && l.ends_with(" (account south)")),
        "{out}"
    );
    assert!(!out.contains(SK) && !err.contains(SK), "no secret key");
}

#[tokio::test]
async fn status_the_api_and_the_page_name_each_jobs_account() {
    let (_sim, app, addr) = two_accounts().await;
    let want_all = pairs(&[
        ("job-0000", "north"),
        ("job-0001", "south"),
        ("job-0002", "north"),
        ("job-0003", "south"),
    ]);

    let (code, out, err) = app.run_cmd(&["status", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(accounts_of(&rows), want_all, "status --json");

    let (code, out, err) = app.run_cmd(&["status"]).await;
    assert_eq!(code, 0, "{err}");
    let header = out.lines().find(|l| l.starts_with("NAME")).expect(&out);
    let words = |l: &str| l.split_whitespace().map(String::from).collect::<Vec<_>>();
    assert_eq!(
        words(header)[..5],
        ["NAME", "APP_ID", "JOB_ID", "ACCOUNT", "SOURCE"],
        "{header}"
    );
    let row = out.lines().find(|l| l.contains("job-0001")).expect(&out);
    assert_eq!(
        words(row)[..5],
        ["cam-1", "demo-app", "job-0001", "south", "config"],
        "{row}"
    );

    let (code, body) = get(addr, "/api/v1/jobs").await;
    assert_eq!(code, 200, "{body}");
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        accounts_of(page["items"].as_array().unwrap()),
        want_all,
        "/api/v1/jobs"
    );
    assert_eq!(
        page["summary"]["accounts"],
        serde_json::json!([
            {"name": "north", "healthy": true},
            {"name": "south", "healthy": true}
        ])
    );
    let (code, body) = get(addr, "/api/v1/jobs?account=south").await;
    assert_eq!(code, 200, "{body}");
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        accounts_of(page["items"].as_array().unwrap()),
        pairs(&[("job-0001", "south"), ("job-0003", "south")]),
        "?account=south"
    );
    assert_eq!(page["matching"], 2);
    let (code, body) = get(addr, "/api/v1/jobs?account=west").await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("\"west\"") && body.contains("\"north\", \"south\""),
        "names the known accounts: {body}"
    );

    let (code, html) = get(addr, "/?account=north").await;
    assert_eq!(code, 200, "{html}");
    assert!(html.contains("<th scope=\"col\">Account</th>"), "{html}");
    assert!(
        html.contains("<td class=\"account\">north</td>")
            && !html.contains("<td class=\"account\">south</td>"),
        "the column, filtered:\n{html}"
    );
    assert!(
        html.contains("<option value=\"north\" selected>north</option>"),
        "the filter keeps its choice:\n{html}"
    );
    assert!(
        html.contains("north healthy") && html.contains("south healthy"),
        "each account's health in the header:\n{html}"
    );
}
