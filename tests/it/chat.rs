//! The chat channels (Feishu, DingTalk, WeCom, Slack, Teams) and PagerDuty against loopback
//! receivers that check each vendor's signature and format and answer as the vendor does;
//! grouping of a storm through a DingTalk-like robot that allows 20 messages a minute.

use crate::harness::*;
use crate::support::chat::{ChatReceiver, Vendor};
use recwatch::config::Config;
use recwatch::deliver::Worker;
use recwatch::domain::{Alert, JobFacts, PAYLOAD_VERSION, Rule, Severity, Status};
use recwatch::notify::{Channel, Retry};
use recwatch::outbox::{ApiHealthChange, Outbox};
use recwatch::store::Store;
use std::time::Duration;

const ALL: [Vendor; 6] = [
    Vendor::Feishu,
    Vendor::DingTalk,
    Vendor::WeCom,
    Vendor::Slack,
    Vendor::Teams,
    Vendor::PagerDuty,
];

fn alert(id: &str, status: Status) -> Alert {
    Alert {
        version: PAYLOAD_VERSION,
        id: id.into(),
        status,
        rule: Rule::StoppedUnexpectedly,
        severity: Severity::Critical,
        summary: "lobby camera stopped recording: INTERNAL_ERROR".into(),
        account: "default".into(),
        job: Some(JobFacts {
            app_id: "app-1".into(),
            job_id: "job-0001".into(),
            name: Some("lobby camera".into()),
            state: Some("STOPPED".into()),
            stop_reason: Some("INTERNAL_ERROR".into()),
            ..Default::default()
        }),
        transition: None,
        fired_at: "2025-01-01T01:00:02.123Z".parse().unwrap(),
        host: "watch-1".into(),
        job_url: None,
        remediation: None,
    }
}

fn config(text: &str) -> Config {
    let text = format!(
        "[api.auth]\ntoken = \"t\"\n[http]\npublic_url = \"https://rw.example.com\"\n{text}"
    );
    recwatch::config::parse_str(&text, Vec::<(String, String)>::new(), None).expect("config loads")
}

fn channel(r: &ChatReceiver, extra: &str) -> Channel {
    let c = config(&r.toml("chat", extra));
    let mut channels =
        Channel::with_links(&c.notify, c.http.public_url.as_ref()).expect("channels build");
    assert_eq!(channels.len(), 1);
    channels.remove(0)
}

/// Every vendor's receiver checks its signature or key and its format, and accepts ours; the
/// message says what happened, to which job, and links its page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_vendor_accepts_our_format_and_signature() {
    for vendor in ALL {
        let r = ChatReceiver::start(vendor).await;
        let ch = channel(&r, "");
        ch.send(&alert("rw_0001", Status::Firing))
            .await
            .unwrap_or_else(|e| panic!("{vendor:?}: {e}"));
        let got = r.accepted();
        assert_eq!(got.len(), 1, "{vendor:?}");
        let text = &got[0].text;
        match vendor {
            Vendor::PagerDuty => {
                assert!(
                    text.starts_with("trigger recwatch/stopped_unexpectedly/app-1/job-0001 "),
                    "{text}"
                );
                assert_eq!(
                    got[0].body["links"][0]["href"],
                    "https://rw.example.com/jobs/app-1/job-0001"
                );
            }
            _ => {
                for w in [
                    "[CRITICAL]",
                    "lobby camera (job-0001)",
                    "INTERNAL_ERROR",
                    "STOPPED",
                    "2025-01-01T01:00:02.123Z",
                    "https://rw.example.com/jobs/app-1/job-0001",
                ] {
                    assert!(text.contains(w), "{vendor:?} lacks {w:?}: {text}");
                }
            }
        }
        // A resolved notice looks resolved (PagerDuty: a resolve with the same key).
        ch.send(&alert("rw_0002", Status::Resolved)).await.unwrap();
        let text = &r.accepted()[1].text;
        match vendor {
            Vendor::PagerDuty => assert!(
                text.starts_with("resolve recwatch/stopped_unexpectedly/app-1/job-0001"),
                "{text}"
            ),
            _ => assert!(text.contains("✅ [RESOLVED]"), "{vendor:?}: {text}"),
        }
    }
}

/// A wrong signing secret: the vendor's own check refuses it with HTTP 200 and a code, which
/// is a refusal (retried every max_backoff), with the code and message in the error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_signature_is_a_refusal_with_the_vendors_code() {
    let r = ChatReceiver::start(Vendor::Feishu).await;
    let text = r
        .toml("chat", "")
        .replace(crate::support::chat::FEISHU_SECRET, "not-the-secret");
    let c = config(&text);
    let ch = Channel::from_config(&c.notify).unwrap().remove(0);
    let e = ch
        .send(&alert("rw_1", Status::Firing))
        .await
        .expect_err("refused");
    assert_eq!(e.retry, Retry::Refused);
    assert!(e.message.contains("19021 sign match fail"), "{}", e.message);
    assert!(!e.message.contains("not-the-secret"), "{}", e.message);
    assert!(r.accepted().is_empty());

    let r = ChatReceiver::start(Vendor::DingTalk).await;
    let text = r
        .toml("chat", "")
        .replace(crate::support::chat::DINGTALK_SECRET, "SECwrong");
    let ch = Channel::from_config(&config(&text).notify)
        .unwrap()
        .remove(0);
    let e = ch.send(&alert("rw_1", Status::Firing)).await.unwrap_err();
    assert_eq!(e.retry, Retry::Refused);
    assert!(e.message.contains("310000 sign not match"), "{}", e.message);
}

/// The vendors' answers, as they give them: 200 with an error code is a failure naming the
/// code; rate limits wait for the vendor's window; and once the vendor accepts, it is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vendor_answers_are_read() {
    let s = Duration::from_secs;
    // (vendor, status, body, headers, retry, words of the error)
    type Case<'a> = (
        Vendor,
        u16,
        &'a str,
        Vec<(&'a str, &'a str)>,
        Retry,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            Vendor::Feishu,
            200,
            r#"{"code":19024,"msg":"Key Words Not Found"}"#,
            vec![],
            Retry::Refused,
            "19024 Key Words Not Found",
        ),
        (
            Vendor::Feishu,
            200,
            r#"{"code":11232,"msg":"frequency limited psm"}"#,
            vec![],
            Retry::After(Some(s(60))),
            "11232 frequency limited",
        ),
        (
            Vendor::DingTalk,
            200,
            r#"{"errcode":130101,"errmsg":"send too fast, exceed 20 times per minute"}"#,
            vec![],
            Retry::After(Some(s(600))),
            "130101 send too fast",
        ),
        (
            Vendor::DingTalk,
            200,
            r#"{"errcode":310000,"errmsg":"keywords not in content"}"#,
            vec![],
            Retry::Refused,
            "310000 keywords not in content",
        ),
        (
            Vendor::WeCom,
            200,
            r#"{"errcode":45009,"errmsg":"api freq out of limit"}"#,
            vec![],
            Retry::After(Some(s(60))),
            "45009 api freq out of limit",
        ),
        (
            Vendor::WeCom,
            200,
            r#"{"errcode":93000,"errmsg":"invalid webhook url"}"#,
            vec![],
            Retry::Refused,
            "93000 invalid webhook url",
        ),
        (
            Vendor::Slack,
            429,
            "rate_limited",
            vec![("retry-after", "7")],
            Retry::After(Some(s(7))),
            "HTTP 429",
        ),
        (
            Vendor::Slack,
            404,
            "channel_not_found",
            vec![],
            Retry::Refused,
            "channel_not_found",
        ),
        (
            Vendor::Teams,
            502,
            "bad gateway",
            vec![],
            Retry::Backoff,
            "HTTP 502",
        ),
        (
            Vendor::PagerDuty,
            429,
            "",
            vec![],
            Retry::After(Some(s(60))),
            "HTTP 429",
        ),
        (
            Vendor::PagerDuty,
            400,
            r#"{"status":"invalid event"}"#,
            vec![],
            Retry::Refused,
            "invalid event",
        ),
    ];
    for (vendor, status, body, headers, retry, words) in cases {
        let r = ChatReceiver::start(vendor).await;
        r.answer_next(1, status, body, &headers);
        let ch = channel(&r, "");
        let e = ch
            .send(&alert("rw_1", Status::Firing))
            .await
            .expect_err("failed");
        assert_eq!(e.retry, retry, "{vendor:?} {body}");
        assert!(e.message.contains(words), "{vendor:?}: {}", e.message);
        // The plan is spent: the vendor accepts the same message now.
        ch.send(&alert("rw_1", Status::Firing))
            .await
            .unwrap_or_else(|e| panic!("{vendor:?}: {e}"));
        assert_eq!(r.accepted().len(), 1);
    }
}

/// The robot's keyword is in every message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_keyword_is_in_every_message() {
    for vendor in [Vendor::Feishu, Vendor::DingTalk] {
        let r = ChatReceiver::start(vendor).await;
        let ch = channel(&r, "keyword = \"录制告警\"");
        ch.send(&alert("rw_1", Status::Firing)).await.unwrap();
        assert!(r.accepted()[0].text.contains("录制告警"), "{vendor:?}");
    }
}

/// PagerDuty through the delivery worker: a condition's firing notice is a trigger and its
/// resolved notice a resolve with the same dedup_key, in that order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagerduty_triggers_then_resolves_the_same_incident() {
    let r = ChatReceiver::start(Vendor::PagerDuty).await;
    let dir = tempfile::tempdir().unwrap();
    let c = config(&format!(
        "[storage]\npath = \"{}\"\n[notify]\nmax_backoff = \"300ms\"\n{}",
        dir.path().join("recwatch.db").display(),
        r.toml("pd", "")
    ));
    let store = Store::open(&c.storage.path).await.unwrap();
    let outbox = Outbox::new();
    let down = ApiHealthChange::Unhealthy {
        reason: "connection refused".into(),
    };
    outbox.api_health(&store, down, &c).await.unwrap();
    outbox
        .api_health(&store, ApiHealthChange::Recovered, &c)
        .await
        .unwrap();
    let worker = Worker::new(store.clone(), &c, outbox.wake_handle()).unwrap();
    let worker = tokio::sync::Mutex::new(worker);
    wait_for("both notices sent", T, || async {
        if r.accepted().len() >= 2 {
            return Some(());
        }
        worker.lock().await.step().await.unwrap();
        None
    })
    .await;
    let got = r.accepted();
    assert_eq!(got[0].body["event_action"], "trigger");
    assert_eq!(got[1].body["event_action"], "resolve");
    assert_eq!(got[0].body["dedup_key"], "recwatch/api_unhealthy");
    assert_eq!(got[0].body["dedup_key"], got[1].body["dedup_key"]);
}

/// `recwatch test-alert` through one channel of every kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_alert_reaches_every_kind() {
    let sim = start_sim(static_sim(1)).await;
    let mut receivers = Vec::new();
    let mut cfg = AppConfig::new(&sim, 1);
    for (i, vendor) in ALL.into_iter().enumerate() {
        let r = ChatReceiver::start(vendor).await;
        cfg.extra.push_str(&r.toml(&format!("chat-{i}"), ""));
        receivers.push(r);
    }
    let app = TestApp::new(&cfg);
    let (code, out, err) = app.run_cmd(&["test-alert"]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    for kind in ["feishu", "dingtalk", "wecom", "slack", "teams", "pagerduty"] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(kind) && l.contains(" ok ")),
            "{kind}: {out}"
        );
    }
    for (r, vendor) in receivers.iter().zip(ALL) {
        let got = r.accepted();
        match vendor {
            // A test incident is opened and closed at once.
            Vendor::PagerDuty => {
                assert_eq!(got.len(), 2);
                assert_eq!(got[1].body["event_action"], "resolve");
            }
            _ => {
                assert_eq!(got.len(), 1, "{vendor:?}");
                assert!(got[0].text.contains("Test notification"), "{vendor:?}");
            }
        }
    }
}

/// A robot that refuses (200 with 310000): `recwatch alerts` and the log show the code and
/// message; once the robot is fixed, the alert goes out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_is_shown_in_alerts_and_the_alert_goes_out_once_fixed() {
    let sim = start_sim(static_sim(1)).await;
    let r = ChatReceiver::start(Vendor::DingTalk).await;
    r.answer_next(
        10_000,
        200,
        r#"{"errcode":310000,"errmsg":"keywords not in content"}"#,
        &[],
    );
    let mut cfg = AppConfig::new(&sim, 1);
    cfg.extra = format!(
        "\n[notify]\nmax_backoff = \"300ms\"\n{}",
        r.toml("robot", "")
    );
    let app = TestApp::spawn(&cfg, 1).await;
    set_state(&sim, "job-0000", "STOPPED", Some("INTERNAL_ERROR"));
    let shown = wait_for("the refusal in recwatch alerts", T, || async {
        let (_, out, _) = app.run_cmd(&["alerts", "--json"]).await;
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        let d = v.get(0)?["deliveries"].get(0)?.clone();
        let err = d["last_error"].as_str()?.to_string();
        err.contains("310000").then_some((d, err))
    })
    .await;
    assert_eq!(shown.0["state"], "pending");
    assert!(
        shown
            .1
            .contains("DingTalk refused the message: 310000 keywords not in content"),
        "{}",
        shown.1
    );
    app.wait_log("310000 keywords not in content", T).await;
    assert!(!shown.1.contains(crate::support::chat::DINGTALK_TOKEN));
    assert!(
        !app.log_text()
            .contains(crate::support::chat::DINGTALK_TOKEN)
    );

    r.behave();
    r.wait_until("the alert", T, |m| {
        m.iter().any(|m| m.text.contains("cam-0"))
    })
    .await;
    wait_for("the delivery marked sent", T, || async {
        (app.scalar("SELECT COUNT(*) FROM deliveries WHERE state = 'sent'")
            .await
            == 1)
            .then_some(())
    })
    .await;
}

/// 40 recordings die at once; the robot allows 20 messages a minute (and would throttle the
/// 21st). Every job is named in what the robot accepted, nothing was throttled, and the storm
/// took fewer messages than jobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_40_deaths_reaches_a_20_a_minute_robot_unthrottled() {
    const JOBS: usize = 40;
    let sim = start_sim(static_sim(JOBS)).await;
    let r = ChatReceiver::start(Vendor::DingTalk).await;
    r.limit(20, Duration::from_secs(60));
    let mut cfg = AppConfig::new(&sim, JOBS);
    cfg.extra = r.toml("robot", "");
    let app = TestApp::spawn(&cfg, JOBS as i64).await;
    for i in 0..JOBS {
        let j = recwatch_sim::job_id(i);
        set_state(&sim, &j, "STOPPED", Some("INTERNAL_ERROR"));
    }
    let ids: Vec<String> = (0..JOBS).map(recwatch_sim::job_id).collect();
    let got = r
        .wait_until("every job named", Duration::from_secs(120), |m| {
            ids.iter()
                .all(|id| m.iter().any(|m| m.text.contains(id.as_str())))
        })
        .await;
    assert_eq!(r.throttled(), 0, "the robot throttled us");
    assert!(
        r.attempts().iter().all(|a| a.accepted),
        "{:?}",
        r.attempts()
    );
    assert!(got.len() < JOBS, "{} messages for {JOBS} alerts", got.len());
    // Every delivery is marked sent once its group message was accepted.
    wait_for("all deliveries sent", T, || async {
        (app.scalar("SELECT COUNT(*) FROM deliveries WHERE state = 'sent'")
            .await
            == JOBS as i64)
            .then_some(())
    })
    .await;
    // Each job is in one message: nothing went out twice.
    for id in &ids {
        let n = got.iter().filter(|m| m.text.contains(id.as_str())).count();
        assert_eq!(n, 1, "{id} in {n} messages");
    }
}

/// The first alert after a quiet spell goes out at once; the ones after it wait for the
/// group window in the outbox. A daemon killed while holding them sends them together in one
/// message when it is back, and no sooner than the window the first release opened allows:
/// the release time is in the database (`group_releases`), so the window goes on across the
/// restart (as across a takeover) instead of starting over or being forgotten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_alerts_survive_a_restart_and_the_group_window_goes_on() {
    const WAIT_S: i64 = 30;
    let sim = start_sim(static_sim(3)).await;
    let r = ChatReceiver::start(Vendor::Slack).await;
    let mut cfg = AppConfig::new(&sim, 3);
    cfg.extra = format!(
        "\n[notify]\ngroup_wait = \"{WAIT_S}s\"\n{}",
        r.toml("slack", "")
    );
    let mut app = TestApp::spawn(&cfg, 3).await;
    let stop = |j: &str| set_state(&sim, j, "STOPPED", Some("INTERNAL_ERROR"));
    stop("job-0000");
    let first = r.wait_until("the first alert", T, |m| !m.is_empty()).await;
    assert!(first[0].text.contains("job-0000"), "{}", first[0].text);
    wait_for("the first delivery marked sent", T, || async {
        (app.scalar("SELECT COUNT(*) FROM deliveries WHERE state = 'sent'")
            .await
            == 1)
            .then_some(())
    })
    .await;
    let released = text(
        &app,
        "SELECT released_at FROM group_releases WHERE channel = 'slack'",
    )
    .await;
    stop("job-0001");
    stop("job-0002");
    wait_for("the next two alerts pending in the outbox", T, || async {
        (app.scalar("SELECT COUNT(*) FROM deliveries WHERE state = 'pending'")
            .await
            == 2)
            .then_some(())
    })
    .await;
    app.kill().await;
    assert_eq!(
        r.accepted().len(),
        1,
        "held alerts went out inside the window"
    );

    app.start();
    let got = r
        .wait_until("the held alerts", T * 2, |m| m.len() >= 2)
        .await;
    assert_eq!(got.len(), 2, "{got:?}");
    for j in ["job-0001", "job-0002"] {
        assert!(got[1].text.contains(j), "{j} not in {}", got[1].text);
    }
    assert!(
        got[1].text.contains("2 recording alerts"),
        "{}",
        got[1].text
    );
    wait_for("every delivery sent", T, || async {
        (app.scalar("SELECT COUNT(*) FROM deliveries WHERE state = 'sent'")
            .await
            == 3)
            .then_some(())
    })
    .await;
    // Sent at the end of the window opened before the restart, not at once after it.
    let sent = text(
        &app,
        "SELECT MIN(sent_at) FROM deliveries d JOIN alerts a ON a.id = d.alert_id
         WHERE a.job_id <> 'job-0000'",
    )
    .await;
    let at = |t: &str| chrono::DateTime::parse_from_rfc3339(t).expect(t);
    let waited = at(&sent) - at(&released);
    assert!(
        waited >= chrono::Duration::seconds(WAIT_S),
        "released at {released}, the held group sent at {sent}: the window did not go on across the restart"
    );
}

/// One text value from the daemon's database.
async fn text(app: &TestApp, sql: &'static str) -> String {
    let db = app.db().await.expect("the database exists");
    let v: String = sqlx::query_scalar(sql).fetch_one(&db).await.expect(sql);
    db.close().await;
    v
}

/// E-mail groups too: the first death is a mail of its own at once, the two after it within
/// the window (15 s: long enough that a slow machine still polls both inside it) are one
/// mail listing both jobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_groups_a_burst_into_one_mail() {
    let sim = start_sim(static_sim(3)).await;
    let smtp = crate::support::smtp::SmtpServer::start();
    let mut cfg = AppConfig::new(&sim, 3);
    cfg.extra = format!(
        "\n[notify]\ngroup_wait = \"15s\"\n\n[[notify.email]]\nname = \"mail\"\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {}\ntls = \"none\"\nfrom = \"recwatch <recwatch@example.com>\"\nto = [\"oncall@example.com\"]\ntimeout = \"5s\"\n",
        smtp.port()
    );
    let app = TestApp::spawn(&cfg, 3).await;
    let stop = |j: &str| set_state(&sim, j, "STOPPED", Some("INTERNAL_ERROR"));
    stop("job-0000");
    let first = smtp.wait_for(1, T).await;
    assert!(first[0].text().contains("job-0000"));
    stop("job-0001");
    stop("job-0002");
    let mails = smtp.wait_for(2, T).await;
    wait_for("every delivery sent", T, || async {
        (app.scalar("SELECT COUNT(*) FROM deliveries WHERE state = 'sent'")
            .await
            == 3)
            .then_some(())
    })
    .await;
    let mails = if smtp.mails().len() > mails.len() {
        smtp.mails()
    } else {
        mails
    };
    assert_eq!(mails.len(), 2, "one mail for the first, one for the burst");
    let subject = mails[1].header("Subject").unwrap_or_default();
    assert!(subject.starts_with("[recwatch] 2 alerts"), "{subject}");
    let body = mails[1].body();
    for j in ["job-0001", "job-0002"] {
        assert!(body.contains(j), "{j} not in {body}");
    }
}

/// A storm of 200 deaths through each grouping vendor: split only where its size limit
/// forces it, every message taken by a receiver that enforces the limit (WeCom 4,096 bytes,
/// Slack 3,000 characters), every job named exactly once, and a handful of messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_200_splits_only_at_each_vendors_limit() {
    let alerts: Vec<Alert> = (0..200)
        .map(|i| {
            let mut a = alert(&format!("rw_{i:04}"), Status::Firing);
            let job = a.job.as_mut().unwrap();
            job.job_id = format!("storm-{i:04}");
            job.name = Some(format!("camera {i}"));
            a
        })
        .collect();
    for vendor in ALL {
        let r = ChatReceiver::start(vendor).await;
        let ch = channel(&r, "");
        if vendor == Vendor::PagerDuty {
            assert!(!ch.groups(), "PagerDuty is one event per alert");
            continue;
        }
        assert!(ch.groups(), "{vendor:?}");
        let sizes = ch.split(&alerts);
        assert_eq!(sizes.iter().sum::<usize>(), 200, "{vendor:?}");
        assert!(sizes.len() <= 10, "{vendor:?}: {} messages", sizes.len());
        let mut start = 0;
        for n in &sizes {
            ch.send_all(&alerts[start..start + n])
                .await
                .unwrap_or_else(|e| panic!("{vendor:?}: {e}"));
            start += n;
        }
        let got = r.accepted();
        assert_eq!(got.len(), sizes.len(), "{vendor:?}");
        for i in 0..200 {
            let id = format!("storm-{i:04}");
            let n = got.iter().filter(|m| m.text.contains(&id)).count();
            assert_eq!(n, 1, "{vendor:?}: {id} in {n} messages");
        }
    }
}

/// PagerDuty's answer is read, not only its status: an HTML 200 from a proxy in the way is not
/// a delivery (tried again with back-off), PagerDuty's own 202 `{"status":"success"}` is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pagerduty_200_that_is_not_its_answer_is_not_delivered() {
    let r = ChatReceiver::start(Vendor::PagerDuty).await;
    let ch = channel(&r, "");
    r.answer_next(
        1,
        200,
        "<html><body>Welcome to the proxy</body></html>",
        &[],
    );
    let e = ch
        .send(&alert("rw_1", Status::Firing))
        .await
        .expect_err("an HTML page is not PagerDuty's answer");
    assert_eq!(e.retry, Retry::Backoff, "{e}");
    assert!(e.message.contains("without its JSON answer"), "{e}");
    ch.send(&alert("rw_1", Status::Firing))
        .await
        .expect("PagerDuty's own answer");
}
