//! The channels against real receivers on loopback: a webhook receiver that checks signatures
//! with the reference library, and an SMTP server in the process.

use crate::support::ClosedPort;
use crate::support::receiver::Receiver;
use crate::support::smtp::{SmtpServer, Stage, TestCert};
use recwatch::config::{EmailConfig, NotifyConfig, Tls, WebhookConfig, WebhookSecret};
use recwatch::domain::{Alert, JobFacts, PAYLOAD_VERSION, Rule, Severity, Status, TransitionFacts};
use recwatch::notify::{Channel, Retry, email};
use recwatch::secret::Secret;
use reqwest::header::{HeaderName, HeaderValue};
use std::time::Duration;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const WAIT: Duration = Duration::from_secs(10);

fn alert(id: &str) -> Alert {
    Alert {
        version: PAYLOAD_VERSION,
        id: id.into(),
        status: Status::Firing,
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
        transition: Some(TransitionFacts {
            from: Some("EXECUTING".into()),
            to: "STOPPED".into(),
            observed_at: "2025-01-01T01:00:02.000Z".parse().unwrap(),
            request_id: None,
        }),
        fired_at: "2025-01-01T01:00:02.123Z".parse().unwrap(),
        host: "watch-1".into(),
        job_url: None,
        remediation: None,
    }
}

fn webhook_config(url: url::Url, secret: Option<&str>, timeout: Duration) -> WebhookConfig {
    WebhookConfig {
        name: "ops-hook".into(),
        url,
        secret: secret.map(|s| WebhookSecret::parse(Secret::new(s)).unwrap()),
        headers: vec![(
            HeaderName::from_static("authorization"),
            sensitive("Bearer tok-9f8e7d"),
        )],
        timeout,
    }
}

fn sensitive(value: &'static str) -> HeaderValue {
    let mut v = HeaderValue::from_static(value);
    v.set_sensitive(true);
    v
}

fn one_channel(cfg: NotifyConfig) -> Channel {
    let mut channels = Channel::from_config(&cfg).expect("channels build");
    assert_eq!(channels.len(), 1);
    channels.remove(0)
}

fn webhook(cfg: WebhookConfig) -> Channel {
    one_channel(NotifyConfig {
        webhooks: vec![cfg],
        ..Default::default()
    })
}

fn email_config(port: u16) -> EmailConfig {
    EmailConfig {
        name: "ops-mail".into(),
        smtp_host: "127.0.0.1".into(),
        smtp_port: port,
        tls: Tls::None,
        username: None,
        password: None,
        from: "recwatch <recwatch@example.com>".parse().unwrap(),
        to: vec![
            "oncall@example.com".parse().unwrap(),
            "Lead <lead@example.com>".parse().unwrap(),
        ],
        timeout: Duration::from_secs(5),
        accept_invalid_certs: false,
    }
}

fn mailer(cfg: EmailConfig) -> Channel {
    one_channel(NotifyConfig {
        emails: vec![cfg],
        ..Default::default()
    })
}

#[tokio::test]
async fn channels_are_built_in_config_order() {
    let cfg = NotifyConfig {
        webhooks: vec![webhook_config(
            "http://127.0.0.1:9/".parse().unwrap(),
            Some(SECRET),
            WAIT,
        )],
        emails: vec![email_config(25)],
        ..Default::default()
    };
    let channels = Channel::from_config(&cfg).unwrap();
    let got: Vec<_> = channels.iter().map(|c| (c.kind(), c.name())).collect();
    assert_eq!(got, [("webhook", "ops-hook"), ("email", "ops-mail")]);
    assert!(!format!("{channels:?}").contains("tok-9f8e7d"));
}

#[tokio::test]
async fn webhook_delivers_a_signed_alert() {
    let receiver = Receiver::start(Some(SECRET)).await;
    let channel = webhook(webhook_config(receiver.url(), Some(SECRET), WAIT));
    let a = alert("alert-0001");

    channel.send(&a).await.expect("delivered");

    let got = receiver.wait_for(1, WAIT).await;
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(r.alert, a);
    assert_eq!(r.body, recwatch::notify::webhook::render(&a));
    let header = |name: &str| r.headers.get(name).map(|v| v.to_str().unwrap().to_string());
    assert_eq!(header("webhook-id").as_deref(), Some("alert-0001"));
    assert!(header("webhook-signature").unwrap().starts_with("v1,"));
    let ts: i64 = header("webhook-timestamp").unwrap().parse().unwrap();
    assert!((chrono::Utc::now().timestamp() - ts).abs() < 60);
    assert_eq!(header("content-type").as_deref(), Some("application/json"));
    assert_eq!(
        header("user-agent"),
        Some(format!("recwatch/{}", env!("CARGO_PKG_VERSION")))
    );
    assert_eq!(
        header("authorization").as_deref(),
        Some("Bearer tok-9f8e7d")
    );
}

#[tokio::test]
async fn webhook_without_a_secret_is_unsigned() {
    let receiver = Receiver::start(None).await;
    let channel = webhook(webhook_config(receiver.url(), None, WAIT));
    channel.send(&alert("alert-0002")).await.expect("delivered");
    let got = receiver.wait_for(1, WAIT).await;
    assert!(got[0].headers.get("webhook-signature").is_none());
    assert_eq!(got[0].alert.id, "alert-0002");
}

#[tokio::test]
async fn webhook_signed_with_another_secret_is_a_refusal() {
    let receiver = Receiver::start(Some(SECRET)).await;
    let other = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    let channel = webhook(webhook_config(receiver.url(), Some(other), WAIT));

    let e = channel
        .send(&alert("alert-0003"))
        .await
        .expect_err("refused");

    assert_eq!(e.retry, Retry::Refused, "{e}");
    assert!(e.message.contains("401"), "{e}");
    assert_eq!(receiver.wait_for_attempts(1, WAIT).await.len(), 1);
    assert!(receiver.received().is_empty());
}

#[tokio::test]
async fn webhook_answers_are_classified() {
    // (name, status, retry)
    let cases: &[(&str, u16, Retry)] = &[
        ("unavailable", 503, Retry::Backoff),
        ("internal error", 500, Retry::Backoff),
        ("request timeout", 408, Retry::Backoff),
        ("throttled without Retry-After", 429, Retry::After(None)),
        ("not found", 404, Retry::Refused),
        ("gone", 410, Retry::Refused),
        ("bad request", 400, Retry::Refused),
        ("redirect", 302, Retry::Refused),
    ];
    let receiver = Receiver::start(Some(SECRET)).await;
    let channel = webhook(webhook_config(receiver.url(), Some(SECRET), WAIT));
    for (i, (name, status, retry)) in cases.iter().enumerate() {
        receiver.fail_next_with(1, *status, "the receiver says why");
        let e = channel
            .send(&alert(&format!("alert-{i}")))
            .await
            .expect_err(name);
        assert_eq!(e.retry, *retry, "{name}: {e}");
        assert!(e.message.contains(&status.to_string()), "{name}: {e}");
        assert!(e.message.contains("the receiver says why"), "{name}: {e}");
    }
    // 429 with Retry-After, in seconds and as an HTTP date: the wait it asks for.
    receiver.fail_next_with_header(1, 429, "Retry-After", "42");
    let e = channel
        .send(&alert("alert-429"))
        .await
        .expect_err("throttled");
    assert_eq!(e.retry, Retry::After(Some(Duration::from_secs(42))), "{e}");
    let in_a_minute = (chrono::Utc::now() + chrono::Duration::seconds(90))
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    receiver.fail_next_with_header(1, 429, "Retry-After", &in_a_minute);
    let e = channel
        .send(&alert("alert-429"))
        .await
        .expect_err("throttled");
    match e.retry {
        // Measured against the receiver's Date header (whole seconds): about 90 s.
        Retry::After(Some(d)) => assert!(
            d > Duration::from_secs(60) && d <= Duration::from_secs(91),
            "{d:?}"
        ),
        other => panic!("{other:?}: {e}"),
    }
    assert!(receiver.received().is_empty());
    // The same alert goes through once the receiver is well again.
    channel
        .send(&alert("alert-0"))
        .await
        .expect("delivered after the failures");
    assert_eq!(receiver.wait_for(1, WAIT).await[0].alert.id, "alert-0");
}

#[tokio::test]
async fn webhook_error_never_shows_a_header_value() {
    let receiver = Receiver::start(Some(SECRET)).await;
    let channel = webhook(webhook_config(receiver.url(), Some(SECRET), WAIT));
    receiver.fail_next_with(1, 401, "token Bearer tok-9f8e7d is not valid here");

    let e = channel
        .send(&alert("alert-0004"))
        .await
        .expect_err("refused");

    assert!(
        e.message.contains("401") && e.message.contains("***"),
        "{e}"
    );
    assert!(!e.message.contains("tok-9f8e7d"), "{e}");
}

#[tokio::test]
async fn webhook_timeout_is_transient() {
    let receiver = Receiver::start(Some(SECRET)).await;
    let channel = webhook(webhook_config(
        receiver.url(),
        Some(SECRET),
        Duration::from_millis(300),
    ));
    receiver.stall_next(1, Duration::from_secs(30));

    let e = channel
        .send(&alert("alert-0005"))
        .await
        .expect_err("timed out");

    assert_eq!(e.retry, Retry::Backoff, "{e}");
    assert!(e.message.contains("no answer within 300ms"), "{e}");
    assert!(receiver.received().is_empty());
}

#[tokio::test]
async fn webhook_down_is_transient_until_it_is_up() {
    let port = ClosedPort::new();
    let addr = port.addr();
    let url: url::Url = format!("http://{addr}/hook").parse().unwrap();
    let channel = webhook(webhook_config(url, Some(SECRET), WAIT));

    let e = channel
        .send(&alert("alert-0006"))
        .await
        .expect_err("nothing listens");
    assert_eq!(e.retry, Retry::Backoff, "{e}");
    assert!(e.message.to_lowercase().contains("connect"), "{e}");
    assert!(
        !e.message.contains(&addr.port().to_string()),
        "the URL stays out of the message: {e}"
    );

    let receiver = Receiver::start_on(port, Some(SECRET));
    channel
        .send(&alert("alert-0006"))
        .await
        .expect("delivered once up");
    assert_eq!(receiver.wait_for(1, WAIT).await[0].alert.id, "alert-0006");
}

#[tokio::test]
async fn email_reaches_every_recipient() {
    let server = SmtpServer::start();
    let channel = mailer(email_config(server.port()));
    let a = alert("alert-0101");

    channel.send(&a).await.expect("delivered");

    let mails = server.wait_for(1, WAIT).await;
    assert_eq!(mails.len(), 1);
    let m = &mails[0];
    assert_eq!(m.from, "recwatch@example.com");
    assert_eq!(m.to, ["oncall@example.com", "lead@example.com"]);
    assert_eq!(
        m.header("Subject").as_deref(),
        Some("[recwatch] CRITICAL stopped_unexpectedly: lobby camera (job-0001)")
    );
    assert_eq!(m.header("Subject"), Some(email::subject(&a)));
    assert_eq!(m.header("Message-ID"), Some(email::message_id(&a)));
    let to = m.header("To").unwrap();
    assert!(
        to.contains("oncall@example.com") && to.contains("lead@example.com"),
        "{to}"
    );
    assert_eq!(
        m.body().replace("\r\n", "\n").trim_end(),
        email::body(&a).trim_end()
    );
}

#[tokio::test]
async fn email_repeated_delivery_keeps_its_message_id() {
    let server = SmtpServer::start();
    let channel = mailer(email_config(server.port()));
    let a = alert("alert-0102");
    channel.send(&a).await.unwrap();
    channel.send(&a).await.unwrap();
    let mails = server.wait_for(2, WAIT).await;
    assert_eq!(mails[0].header("Message-ID"), mails[1].header("Message-ID"));
}

#[tokio::test]
async fn email_refusals_are_classified() {
    // (name, stage, code, retry)
    let cases: &[(&str, Stage, u16, Retry)] = &[
        ("sender greylisted", Stage::MailFrom, 451, Retry::Backoff),
        ("sender refused", Stage::MailFrom, 550, Retry::Refused),
        ("mailbox full", Stage::RcptTo, 452, Retry::Backoff),
        ("no such mailbox", Stage::RcptTo, 550, Retry::Refused),
        ("message refused", Stage::DataEnd, 554, Retry::Refused),
        ("message deferred", Stage::DataEnd, 451, Retry::Backoff),
    ];
    let server = SmtpServer::start();
    let channel = mailer(email_config(server.port()));
    for (name, stage, code, retry) in cases {
        server.refuse_next(1, *stage, *code);
        let e = channel.send(&alert("alert-0103")).await.expect_err(name);
        assert_eq!(e.retry, *retry, "{name}: {e}");
        assert!(e.message.contains(&code.to_string()), "{name}: {e}");
        assert!(
            e.message.contains("test server"),
            "{name}: the server's text: {e}"
        );
    }
    assert!(server.mails().is_empty());
    channel
        .send(&alert("alert-0103"))
        .await
        .expect("delivered once the server takes it");
    server.wait_for(1, WAIT).await;
}

#[tokio::test]
async fn email_server_down_is_transient_until_it_is_up() {
    let port = ClosedPort::new();
    let addr = port.addr();
    let channel = mailer(email_config(addr.port()));

    let e = channel
        .send(&alert("alert-0104"))
        .await
        .expect_err("nothing listens");
    assert_eq!(e.retry, Retry::Backoff, "{e}");
    assert!(
        e.message.contains(&format!("127.0.0.1:{}", addr.port())),
        "{e}"
    );
    assert!(e.message.to_lowercase().contains("refused"), "{e}");

    let server = SmtpServer::start_on(port, None);
    channel
        .send(&alert("alert-0104"))
        .await
        .expect("delivered once up");
    assert_eq!(server.wait_for(1, WAIT).await.len(), 1);
}

#[tokio::test]
async fn email_silent_server_times_out_transiently() {
    // Accepts the TCP connection (the kernel does) but never greets.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let cfg = EmailConfig {
        timeout: Duration::from_millis(300),
        ..email_config(silent.local_addr().unwrap().port())
    };
    let channel = mailer(cfg);

    let e = tokio::time::timeout(WAIT, channel.send(&alert("alert-0105")))
        .await
        .expect("the channel's own timeout fires first")
        .expect_err("no greeting");

    assert_eq!(e.retry, Retry::Backoff, "{e}");
    assert!(e.message.contains("timed out"), "{e}");
}

/// A send cut off by the deadline must not leave its connection for the next mail: that
/// mail would read the late replies meant for the first and could take a refusal for success.
#[tokio::test]
async fn email_after_a_timeout_reads_only_its_own_replies() {
    let server = SmtpServer::start();
    // Long enough for a whole SMTP exchange on a loaded machine: the held reply, not speed,
    // makes the first send time out.
    let cfg = EmailConfig {
        timeout: Duration::from_secs(3),
        ..email_config(server.port())
    };
    let channel = mailer(cfg);
    let release = server.hold_next();

    let e = channel
        .send(&alert("alert-0201"))
        .await
        .expect_err("held past the deadline");
    assert!(
        e.retry == Retry::Backoff && e.message.contains("timed out"),
        "{e}"
    );

    // The held mail is accepted in the end (the sender cannot know: hence the stable
    // Message-ID); the next one is refused and must be reported as refused.
    drop(release);
    server.wait_for(1, WAIT).await;
    server.refuse_next(1, Stage::DataEnd, 554);
    let e = channel
        .send(&alert("alert-0202"))
        .await
        .expect_err("refused");
    assert!(
        e.retry == Retry::Refused && e.message.contains("554"),
        "{e}"
    );

    channel.send(&alert("alert-0203")).await.expect("delivered");
    let ids: Vec<_> = server
        .wait_for(2, WAIT)
        .await
        .iter()
        .map(|m| m.header("Message-ID").unwrap())
        .collect();
    assert_eq!(
        ids,
        ["<alert-0201@recwatch.alert>", "<alert-0203@recwatch.alert>"]
    );
}

#[tokio::test]
async fn email_over_starttls() {
    let cert = TestCert::localhost();
    let server = SmtpServer::start_tls(&cert);
    let cfg = EmailConfig {
        smtp_host: "localhost".into(),
        tls: Tls::StartTls,
        accept_invalid_certs: true,
        ..email_config(server.port())
    };
    mailer(cfg.clone())
        .send(&alert("alert-0106"))
        .await
        .expect("delivered over STARTTLS");
    assert_eq!(
        server.wait_for(1, WAIT).await[0]
            .header("Message-ID")
            .as_deref(),
        Some("<alert-0106@recwatch.alert>")
    );

    // The same self-signed certificate without the test override: refused, nothing sent.
    let strict = EmailConfig {
        accept_invalid_certs: false,
        ..cfg
    };
    let e = mailer(strict)
        .send(&alert("alert-0107"))
        .await
        .expect_err("untrusted certificate");
    assert!(
        e.message.to_lowercase().contains("tls") || e.message.contains("certificate"),
        "{e}"
    );
    assert_eq!(server.mails().len(), 1);
}

#[tokio::test]
async fn email_authenticates_and_never_shows_the_password() {
    let cert = TestCert::localhost();
    let server = SmtpServer::start_tls_auth(&cert, "recwatch", "pa55-w0rd-x");
    let cfg = EmailConfig {
        smtp_host: "localhost".into(),
        tls: Tls::StartTls,
        accept_invalid_certs: true,
        username: Some("recwatch".into()),
        password: Some(Secret::new("pa55-w0rd-x")),
        ..email_config(server.port())
    };
    mailer(cfg.clone())
        .send(&alert("alert-0301"))
        .await
        .expect("right password: delivered");
    server.wait_for(1, WAIT).await;

    let wrong = EmailConfig {
        password: Some(Secret::new("wr0ng-pa55")),
        ..cfg
    };
    let e = mailer(wrong)
        .send(&alert("alert-0302"))
        .await
        .expect_err("wrong password");
    assert!(
        e.retry == Retry::Refused && e.message.contains("535"),
        "{e}"
    );
    assert!(
        !e.message.contains("wr0ng-pa55") && !e.message.contains("pa55-w0rd-x"),
        "{e}"
    );
    assert_eq!(server.mails().len(), 1);
}
