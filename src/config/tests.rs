//! The loader end to end: text and environment in, a `Config` or an error that names the key
//! and the fix out.

use super::*;
use crate::domain::JobKind;

const MINIMAL: &str = r#"
[api]
project_id = "0a1b2c3d4e5f67890a1b2c3d4e5f6789"

[api.auth]
access_key = "AK"
secret_key = "SK"

[[jobs]]
app_id = "app"
job_id = "job"
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    parse_str(text, Vec::<(String, String)>::new(), None)
}

#[test]
fn minimal_config_takes_every_default() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(
        c.api.endpoint.as_str(),
        "https://rtc-api.myhuaweicloud.com/"
    );
    assert_eq!(c.api.rate_limit, 10);
    assert_eq!(c.api.max_in_flight, 4);
    assert_eq!(c.poll.interval, Duration::from_secs(30));
    assert!(c.poll.stop_after_terminal);
    assert_eq!(c.storage.retention, Duration::from_secs(90 * 86400));
    assert_eq!(c.jobs.len(), 1);
    assert_eq!(c.rules.poll_failing, Some(crate::domain::Severity::Warning));
    assert_eq!(c.rules.poll_failing_after, 5);
    assert_eq!(c.rules, RulesConfig::default());
    assert_eq!(c.http.listen, Some("127.0.0.1:9187".parse().unwrap()));
}

#[test]
fn environment_overrides_the_file() {
    let env = vec![
        (
            "RECWATCH_API__AUTH__SECRET_KEY".to_string(),
            "from-env".to_string(),
        ),
        ("RECWATCH_API__RATE_LIMIT".to_string(), "5".to_string()),
        (
            "RECWATCH_POLL__STOP_AFTER_TERMINAL".to_string(),
            "false".to_string(),
        ),
        // Not an override: names the file.
        ("RECWATCH_CONFIG".to_string(), "/x.toml".to_string()),
    ];
    let c = parse_str(MINIMAL, env, None).unwrap();
    let Some(Auth::AkSk { secret_key, .. }) = c.api.auth.fixed_auth() else {
        panic!("aksk")
    };
    assert_eq!(secret_key.expose(), "from-env");
    assert_eq!(c.api.rate_limit, 5);
    assert!(!c.poll.stop_after_terminal);
}

#[test]
fn secret_file_is_read_and_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("sk"), "  s3cret\n").unwrap();
    let text = MINIMAL.replace("secret_key = \"SK\"", "secret_key_file = \"sk\"");
    let c = parse_str(&text, Vec::<(String, String)>::new(), Some(dir.path())).unwrap();
    let Some(Auth::AkSk { secret_key, .. }) = c.api.auth.fixed_auth() else {
        panic!("aksk")
    };
    assert_eq!(secret_key.expose(), "s3cret");
}

/// `[api.auth] source`: a profile's project id fills in for a missing `api.project_id` (and
/// `api.project_id` wins when both are set); temporary keys from the metadata service still
/// need one; a key of another source is refused naming the source.
#[test]
fn credential_sources_in_api_auth() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("credentials"),
        "[basic]\nak = PROFILEAK\nsk = hunter2-profile\nproject_id = from-profile\n",
    )
    .unwrap();
    let read = |text: &str| parse_str(text, Vec::<(String, String)>::new(), Some(dir.path()));
    let profile = "[api.auth]\nsource = \"profile\"\npath = \"credentials\"\n";
    let c = read(profile).unwrap();
    assert_eq!(c.api.project_id.as_deref(), Some("from-profile"));
    assert_eq!(c.api.auth.source(), recwatch_rtc::SourceKind::Profile);
    assert_eq!(c.api.auth.budget_identity(), Some("PROFILEAK"));
    assert!(!format!("{c:?}").contains("hunter2"));
    let c = read(&format!("[api]\nproject_id = \"mine\"\n{profile}")).unwrap();
    assert_eq!(c.api.project_id.as_deref(), Some("mine"));
    let e = read("[api.auth]\nsource = \"ecs-metadata\"\n").unwrap_err();
    assert_eq!(e.location, "api.project_id", "{e}");
    let c = read("[api]\nproject_id = \"p\"\n[api.auth]\nsource = \"ecs-metadata\"\nrenew_before = \"30m\"\n")
        .unwrap();
    assert_eq!(c.api.auth.budget_identity(), None);
    assert!(c.api.auth.describe().contains("renewed 30m before expiry"));
    let e = read(
        "[api]\nproject_id = \"p\"\n[api.auth]\nsource = \"ecs-metadata\"\naccess_key = \"AK\"\n",
    )
    .unwrap_err();
    assert_eq!(e.location, "api.auth.access_key", "{e}");
    assert!(e.message.contains("set source = \"static\""), "{e}");
}

/// Every bad-config case: the key the message must name, and a phrase of the fix.
#[test]
fn table_of_bad_configs() {
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "unknown section",
            "[apii]\nx = 1\n",
            "apii",
            "unknown section",
        ),
        (
            "unknown key",
            "[poll]\nintervall = \"3s\"\n",
            "poll.intervall",
            "unknown key",
        ),
        (
            "poll_failing_after below 2",
            "[rules]\npoll_failing_after = 1\n",
            "rules.poll_failing_after",
            "must be 2 or more",
        ),
        (
            "bad duration",
            "[poll]\ninterval = \"soon\"\n",
            "poll.interval",
            "not a duration",
        ),
        (
            "bad cron",
            "[poll]\nschedule = \"* * * * *\"\n",
            "poll.schedule",
            "6 or 7",
        ),
        (
            "bad cron field",
            "[poll]\nschedule = \"99 * * * * *\"\n",
            "poll.schedule",
            "not a valid cron",
        ),
        (
            "rate limit zero",
            "[api]\nrate_limit = 0\n",
            "api.rate_limit",
            "1 or more",
        ),
        (
            "bad endpoint",
            "[api]\nendpoint = \"ftp://x\"\n",
            "api.endpoint",
            "http",
        ),
        (
            "endpoint with a query: it would be sent unsigned",
            "[api]\nendpoint = \"https://rtc.example.com/?region=x\"\n",
            "api.endpoint",
            "query",
        ),
        (
            "endpoint with a password: it would be logged",
            "[api]\nendpoint = \"https://u:p@rtc.example.com\"\n",
            "api.endpoint",
            "password",
        ),
        (
            "auth_backoff inside the gateway's lock",
            "[api]\nauth_backoff = \"4m\"\n",
            "api.auth_backoff",
            "5 minutes",
        ),
        (
            "interval over 30 days",
            "[poll]\ninterval = \"31d\"\n",
            "poll.interval",
            "30 days",
        ),
        (
            "interval and schedule",
            "[poll]\ninterval = \"10s\"\nschedule = \"*/30 * * * * *\"\n",
            "poll.interval",
            "poll.schedule",
        ),
        (
            "webhook timeout over 120s",
            "[[notify.webhook]]\nname = \"h\"\nurl = \"http://127.0.0.1:1/\"\ntimeout = \"121s\"\n",
            "notify.webhook[0].timeout",
            "at most 120s",
        ),
        (
            "email timeout zero",
            "[[notify.email]]\nname = \"m\"\nsmtp_host = \"h\"\nfrom = \"a@b.c\"\nto = [\"a@b.c\"]\ntimeout = \"0s\"\n",
            "notify.email[0].timeout",
            "more than 0s",
        ),
        (
            "misspelt required key of a channel",
            "[[notify.webhook]]\nnmae = \"h\"\nurl = \"http://127.0.0.1:1/\"\n",
            "notify.webhook[0].nmae",
            "unknown key nmae (did you mean name?)",
        ),
        (
            "misspelt section",
            "[pol]\ninterval = \"5s\"\n",
            "pol",
            "unknown section pol (did you mean poll?)",
        ),
    ];
    for (name, extra, key, fix) in cases {
        let e = parse(&with(extra)).expect_err(name);
        assert!(e.location.contains(key), "{name}: {e}");
        assert!(e.message.contains(fix), "{name}: {e}");
    }
}

/// MINIMAL with `extra` added: a section MINIMAL already has gets the keys inserted
/// (TOML refuses a table defined twice); anything else goes in front.
fn with(extra: &str) -> String {
    match extra.split_once('\n') {
        Some((header, body))
            if header.starts_with('[') && MINIMAL.contains(&format!("\n{header}\n")) =>
        {
            MINIMAL.replacen(
                &format!("\n{header}\n"),
                &format!("\n{header}\n{body}\n"),
                1,
            )
        }
        _ => format!("{extra}\n{MINIMAL}"),
    }
}

#[test]
fn auth_errors() {
    let job = "[[jobs]]\napp_id = \"a\"\njob_id = \"j\"\n";
    let cases: &[(&str, &str, &str, &str)] = &[
        ("no auth", "", "api.auth", "no credentials"),
        (
            "two methods",
            "[api.auth]\naccess_key=\"a\"\nsecret_key=\"s\"\ntoken=\"t\"\n",
            "api.auth",
            "two authentication methods",
        ),
        (
            "ak without sk",
            "[api.auth]\naccess_key=\"a\"\n",
            "api.auth.secret_key",
            "missing",
        ),
        (
            "sk and sk file",
            "[api.auth]\naccess_key=\"a\"\nsecret_key=\"s\"\nsecret_key_file=\"/f\"\n",
            "api.auth.secret_key",
            "not both",
        ),
        (
            "unreadable secret file",
            "[api.auth]\naccess_key=\"a\"\nsecret_key_file=\"/nonexistent/sk\"\n",
            "api.auth.secret_key_file",
            "cannot read",
        ),
    ];
    for (name, auth, key, fix) in cases {
        let e = parse(&format!("{auth}{job}")).expect_err(name);
        assert!(e.location.contains(key), "{name}: {e}");
        assert!(e.message.contains(fix), "{name}: {e}");
        assert!(
            !e.to_string().contains("\"s\""),
            "{name}: secret leaked: {e}"
        );
    }
}

#[test]
fn job_kinds_default_to_individual() {
    let c = parse(
        "[api.auth]\ntoken = \"t\"\n[[jobs]]\napp_id=\"a\"\njob_id=\"j\"\n[[jobs]]\napp_id=\"a\"\njob_id=\"m\"\nkind=\"mix\"\n[[jobs]]\napp_id=\"a\"\njob_id=\"i\"\nkind=\"individual\"\n",
    )
    .unwrap();
    let kinds: Vec<_> = c.jobs.iter().map(|j| j.kind).collect();
    assert_eq!(
        kinds,
        [JobKind::Individual, JobKind::Mix, JobKind::Individual]
    );
}

#[test]
fn job_errors_name_the_job() {
    let auth = "[api.auth]\ntoken = \"t\"\n";
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "empty job id",
            "[[jobs]]\napp_id=\"a\"\njob_id=\"\"\nname=\"lobby\"\n",
            "jobs[0] (\"lobby\").job_id",
            "empty",
        ),
        (
            "missing app id",
            "[[jobs]]\njob_id=\"j\"\n",
            "jobs[0].app_id",
            "missing",
        ),
        (
            "duplicate",
            "[[jobs]]\napp_id=\"a\"\njob_id=\"j\"\n[[jobs]]\napp_id=\"a\"\njob_id=\"j\"\nname=\"dup\"\n",
            "jobs[1] (\"dup\")",
            "already watched by jobs[0]",
        ),
        (
            "unknown channel",
            "[[jobs]]\napp_id=\"a\"\njob_id=\"j\"\nnotify=[\"pager\"]\n",
            "jobs[0].notify",
            "no channel",
        ),
        (
            "dot job id: the URL drops it after signing",
            "[[jobs]]\napp_id=\"a\"\njob_id=\".\"\nname=\"lobby\"\n",
            "jobs[0] (\"lobby\").job_id",
            "not an id",
        ),
        (
            "dot-dot app id",
            "[[jobs]]\napp_id=\"..\"\njob_id=\"j\"\n",
            "jobs[0].app_id",
            "not an id",
        ),
        (
            "control character in a job id",
            "[[jobs]]\napp_id=\"a\"\njob_id=\"j\\u0007\"\nname=\"bell\"\n",
            "jobs[0] (\"bell\").job_id",
            "control character",
        ),
        (
            "control character in a name",
            "[[jobs]]\napp_id=\"a\"\njob_id=\"j\"\nname=\"x\\r\\ny\"\n",
            ".name",
            "control character",
        ),
        (
            "misspelt app_id",
            "[[jobs]]\nappid=\"a\"\njob_id=\"j\"\nname=\"cam\"\n",
            "jobs[0] (\"cam\").appid",
            "unknown key appid (did you mean app_id?)",
        ),
        (
            "job interval over 30 days",
            "[[jobs]]\napp_id=\"a\"\njob_id=\"j\"\ninterval=\"45d\"\n",
            "jobs[0].interval",
            "30 days",
        ),
        (
            "an unknown kind",
            "[[jobs]]\napp_id=\"a\"\njob_id=\"j\"\nname=\"hall\"\nkind=\"mixed\"\n",
            "jobs[0] (\"hall\").kind",
            "\"mixed\" is not a job kind: use \"individual\" or \"mix\"",
        ),
        (
            "a kind that is not a string",
            "[[jobs]]\napp_id=\"a\"\njob_id=\"j\"\nkind=true\n",
            "jobs[0].kind",
            "must be a string",
        ),
        (
            "job interval under a cron schedule",
            "[poll]\nschedule=\"*/30 * * * * *\"\n[[jobs]]\napp_id=\"a\"\njob_id=\"j\"\ninterval=\"10s\"\n",
            "jobs[0].interval",
            "poll.schedule",
        ),
    ];
    for (name, jobs, key, fix) in cases {
        let e = parse(&format!("{auth}{jobs}")).expect_err(name);
        assert!(e.location.contains(key), "{name}: {e}");
        assert!(e.message.contains(fix), "{name}: {e}");
    }
}

#[test]
fn secrets_do_not_show_in_debug() {
    let c = parse(MINIMAL).unwrap();
    let dump = format!("{c:?}");
    assert!(!dump.contains("\"SK\""), "{dump}");
    assert!(dump.contains("***"));
}

#[test]
fn an_empty_notify_list_is_warned() {
    let c = parse(&format!("{MINIMAL}notify = []\n")).unwrap();
    let w = c.warnings();
    assert!(
        w.iter().any(|w| w.starts_with(
            "jobs[0] (\"job\") has notify = []: its alerts are recorded but sent to no channel"
        )),
        "{w:?}"
    );
    // Without `notify` the job uses every channel: nothing to say.
    assert!(parse(MINIMAL).unwrap().warnings().is_empty());
}

#[test]
fn an_empty_watch_list_demands_zero_not_minus_zero() {
    let c = parse(&MINIMAL.replace("[[jobs]]\napp_id = \"app\"\njob_id = \"job\"\n", "")).unwrap();
    assert!(c.jobs.is_empty());
    let b = c.budget(0);
    let shown = format!(
        "{:.2} ({:.0}%)",
        b.demand,
        100.0 * b.demand / b.rate_limit as f64
    );
    assert_eq!(shown, "0.00 (0%)");
}

#[test]
fn budget_stretches_when_the_list_is_too_long() {
    let mut c = parse(MINIMAL).unwrap();
    let job = c.jobs[0].clone();
    c.jobs = (0..600)
        .map(|i| {
            std::sync::Arc::new(JobConfig {
                kind: crate::domain::JobKind::Individual,
                key: crate::domain::JobKey::new(job.app_id().to_owned(), format!("j{i}")),
                ..JobConfig::clone(&job)
            })
        })
        .collect();
    let b = c.budget(0);
    assert!((b.demand - 20.0).abs() < 1e-9);
    assert!(!b.fits());
    assert_eq!(
        b.effective(crate::config::JobGroup::Configured, Duration::from_secs(30)),
        Duration::from_secs(60)
    );
    c.jobs.truncate(300);
    assert!(c.budget(0).fits());
}

#[test]
fn project_id_is_required_with_aksk_only() {
    let aksk = MINIMAL.replace("project_id = \"0a1b2c3d4e5f67890a1b2c3d4e5f6789\"\n", "");
    let e = parse(&aksk).expect_err("AK/SK without a project id");
    assert_eq!(e.location, "api.project_id");
    assert!(e.message.contains("X-Project-Id"), "{e}");
    assert!(e.message.contains("My Credentials"), "{e}");
    let token = "[api.auth]\ntoken = \"t0ken\"\n[[jobs]]\napp_id = \"a\"\njob_id = \"j\"\n";
    assert!(
        parse(token).is_ok(),
        "an IAM token is project-scoped itself"
    );
    let spaced = MINIMAL.replace("0a1b2c3d4e5f67890a1b2c3d4e5f6789", "0a1b 2c3d");
    assert_eq!(parse(&spaced).unwrap_err().location, "api.project_id");
}

#[test]
fn the_escape_hatch_allows_a_short_auth_backoff_with_a_warning() {
    let c = parse(&with(
        "[api]\nauth_backoff = \"1s\"\nallow_short_auth_backoff = true\n",
    ))
    .unwrap();
    assert_eq!(c.api.auth_backoff, Duration::from_secs(1));
    let w = c.warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("allow_short_auth_backoff"), "{w:?}");
    assert!(parse(MINIMAL).unwrap().warnings().is_empty());
}

#[test]
fn listening_beyond_loopback_is_a_warning() {
    let cases = [
        ("127.0.0.1:9187", false),
        ("[::1]:9187", false),
        ("0.0.0.0:9187", true),
        ("192.0.2.7:9187", true),
    ];
    for (addr, warns) in cases {
        let c = parse(&with(&format!("[http]\nlisten = \"{addr}\"\n"))).unwrap();
        let w = c.warnings();
        assert_eq!(!w.is_empty(), warns, "{addr}: {w:?}");
        if warns {
            assert!(w[0].contains("anyone who can reach it"), "{w:?}");
        }
    }
}

#[test]
fn http_read_token_and_public_url() {
    let c = parse(&with(
        "[http]\nlisten = \"0.0.0.0:9187\"\nread_token = \"wall-screen-t0ken\"\npublic_url = \"https://recwatch.example.com/\"\n",
    ))
    .unwrap();
    assert_eq!(
        c.http.read_token.as_ref().unwrap().expose(),
        "wall-screen-t0ken"
    );
    assert!(
        c.warnings().is_empty(),
        "a read token answers the non-loopback warning: {:?}",
        c.warnings()
    );
    assert_eq!(
        c.http.job_link("app 1", "job/2").as_deref(),
        Some("https://recwatch.example.com/jobs/app%201/job%2F2"),
        "one slash between base and path; ids encoded"
    );
    assert!(
        !format!("{:?}", c.http).contains("wall-screen-t0ken"),
        "the token never prints"
    );
    // Under a path prefix (a reverse proxy's), the link keeps it.
    let c = parse(&with(
        "[http]\npublic_url = \"https://ops.example.com/recwatch\"\n",
    ))
    .unwrap();
    assert_eq!(
        c.http.job_link("a", "j").as_deref(),
        Some("https://ops.example.com/recwatch/jobs/a/j")
    );
    assert_eq!(parse(MINIMAL).unwrap().http.job_link("a", "j"), None);
    let cases = [
        (
            "not a URL",
            "public_url = \"recwatch.example.com\"",
            "http.public_url",
        ),
        (
            "not http",
            "public_url = \"ftp://x.example.com\"",
            "http.public_url",
        ),
        (
            "a query",
            "public_url = \"https://x.example.com/?a=1\"",
            "query or fragment",
        ),
        ("an empty token", "read_token = \" \"", "http.read_token"),
    ];
    for (name, line, says) in cases {
        let e = parse(&with(&format!("[http]\n{line}\n")))
            .unwrap_err()
            .to_string();
        assert!(e.contains(says), "{name}: {e}");
    }
}

#[test]
fn errors_from_the_environment_name_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, MINIMAL).unwrap();
    let env = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
    // (case, the variable and its value, where the error is, what it says)
    let cases: &[(&str, (&str, &str), &str, &str)] = &[
        (
            "bad value",
            ("RECWATCH_API__RATE_LIMIT", "lots"),
            "RECWATCH_API__RATE_LIMIT (overrides api.rate_limit)",
            "\"lots\" is not a whole number",
        ),
        (
            "unknown key",
            ("RECWATCH_POLL__INTERVALL", "5s"),
            "RECWATCH_POLL__INTERVALL (overrides poll.intervall)",
            "did you mean interval?",
        ),
        (
            "a conflict inside a table the variable sets a key of",
            ("RECWATCH_API__AUTH__TOKEN", "t0ken-value"),
            "api.auth in ",
            "the environment sets RECWATCH_API__AUTH__TOKEN",
        ),
    ];
    for (name, (var, value), location, fix) in cases {
        let e = load_with_env(&path, env(var, value)).expect_err(name);
        assert!(e.location.starts_with(location), "{name}: {e}");
        assert!(e.message.contains(fix), "{name}: {e}");
        assert!(!e.to_string().contains("t0ken-value"), "{name}: {e}");
    }
    let e = load_with_env(&path, env("RECWATCH_API__RATE_LIMIT", "0")).unwrap_err();
    assert!(
        !e.to_string().contains("config.toml"),
        "the value is not in the file: {e}"
    );
}

#[test]
fn a_syntax_error_never_shows_a_secret() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "half-typed secret key",
            "[api.auth]\naccess_key = \"AK\"\nsecret_key = \"hunter2-the-key\n",
            "line 3",
        ),
        (
            "unquoted password",
            "[[notify.email]]\npassword = hunter2-the-key\n",
            "line 2",
        ),
        (
            "header value in an unclosed inline table",
            "[[notify.webhook]]\nheaders = { Authorization = \"Bearer hunter2-the-key\" \n",
            "line 2",
        ),
        (
            "the secret is fine, the next line is not",
            "[api.auth]\nsecret_key = \"hunter2-the-key\"\nx = = 1\n",
            "line 3",
        ),
    ];
    for (name, text, line) in cases {
        let e = parse(text).expect_err(name);
        let shown = e.to_string();
        assert!(!shown.contains("hunter2"), "{name}: {shown}");
        assert!(e.location.contains(line), "{name}: {shown}");
        assert!(e.location.contains("TOML syntax"), "{name}: {shown}");
        assert!(!shown.contains('\n'), "{name}: one line: {shown}");
    }
    let e = parse("[api.auth]\nsecret_key = \"hunter2-the-key\n").unwrap_err();
    assert!(e.message.contains("`secret_key = ***`"), "{e}");
}

/// Every duration key has an upper bound (and, where zero would loop, a lower one): each
/// bound is refused just past it, with the key and the fix; the largest allowed passes.
#[test]
fn absurd_durations_are_refused_table() {
    // (name, config text, None if accepted or Some((key, phrase of the fix)))
    type Case<'a> = (&'a str, &'a str, Option<(&'a str, &'a str)>);
    let cases: &[Case] = &[
        (
            "grace at its bound",
            "[rules]\ninit_grace = \"30d\"\n",
            None,
        ),
        (
            "grace past its bound",
            "[rules]\ninit_grace = \"31d\"\n",
            Some(("rules.init_grace", "at most 30d")),
        ),
        (
            "grace of 2^64-1 seconds",
            "[rules]\ninit_grace = \"18446744073709551615s\"\n",
            Some(("rules.init_grace", "at most 30d")),
        ),
        (
            "repeat at its bound",
            "[rules]\nrepeat_interval = \"365d\"\n",
            None,
        ),
        (
            "repeat past its bound",
            "[rules]\nrepeat_interval = \"1000y\"\n",
            Some(("rules.repeat_interval", "at most 365d")),
        ),
        (
            "retention at its bound",
            "[storage]\nretention = \"36500d\"\n",
            None,
        ),
        (
            "retention past its bound",
            "[storage]\nretention = \"100000y\"\n",
            Some(("storage.retention", "at most 36500d")),
        ),
        (
            "api timeout at its bound",
            "[api]\ntimeout = \"5m\"\n",
            None,
        ),
        (
            "api timeout past its bound",
            "[api]\ntimeout = \"301s\"\n",
            Some(("api.timeout", "use at most 5m")),
        ),
        (
            "api timeout of zero",
            "[api]\ntimeout = \"0s\"\n",
            Some(("api.timeout", "longer than 0s")),
        ),
        (
            "throttle back-off at its bound",
            "[api]\nthrottle_backoff = \"1m\"\n",
            None,
        ),
        (
            "throttle back-off past its bound",
            "[api]\nthrottle_backoff = \"3h\"\n",
            Some(("api.throttle_backoff", "use at most 1m")),
        ),
        (
            "throttle back-off of zero",
            "[api]\nthrottle_backoff = \"0s\"\n",
            Some(("api.throttle_backoff", "longer than 0s")),
        ),
        (
            "auth back-off at its bound",
            "[api]\nauth_backoff = \"24h\"\n",
            None,
        ),
        (
            "auth back-off of 2^64-1 seconds",
            "[api]\nauth_backoff = \"18446744073709551615s\"\n",
            Some(("api.auth_backoff", "use at most 1d")),
        ),
        (
            "auth back-off of zero, even for the simulator",
            "[api]\nauth_backoff = \"0s\"\nallow_short_auth_backoff = true\n",
            Some(("api.auth_backoff", "longer than 0s")),
        ),
        (
            "max age at its bound",
            "[notify]\nmax_age = \"30d\"\n",
            None,
        ),
        (
            "max age past its bound",
            "[notify]\nmax_age = \"1y\"\n",
            Some(("notify.max_age", "use at most 30d")),
        ),
        (
            "max age of zero",
            "[notify]\nmax_age = \"0s\"\n",
            Some(("notify.max_age", "longer than 0s")),
        ),
        (
            "max back-off at its bound",
            "[notify]\nmax_backoff = \"24h\"\n",
            None,
        ),
        (
            "max back-off past its bound",
            "[notify]\nmax_backoff = \"1000y\"\n",
            Some(("notify.max_backoff", "use at most 1d")),
        ),
        (
            "max back-off of zero (a retry loop)",
            "[notify]\nmax_backoff = \"0s\"\n",
            Some(("notify.max_backoff", "longer than 0s")),
        ),
    ];
    for (name, extra, want) in cases {
        // Keys of [api] go into MINIMAL's own [api] table (a second one is a TOML error).
        let text = match extra.strip_prefix("[api]\n") {
            Some(keys) => MINIMAL.replacen("[api]\n", &format!("[api]\n{keys}"), 1),
            None => format!("{extra}\n{MINIMAL}"),
        };
        let got = parse(&text);
        match (want, got) {
            (None, Ok(_)) => {}
            (None, Err(e)) => panic!("{name}: refused: {e}"),
            (Some(_), Ok(_)) => panic!("{name}: accepted"),
            (Some((key, fix)), Err(e)) => {
                assert!(e.location.contains(key), "{name}: {e}");
                assert!(e.message.contains(fix), "{name}: {e}");
            }
        }
    }
}

/// The keys the environment warning knows (see `raw::KnownKeys`) are the keys the example
/// file documents: every `key =` of a single section, set or commented out, is among them.
#[test]
fn the_known_keys_cover_the_example_file() {
    let text = include_str!("../../config.example.toml");
    let tree: serde_json::Value = toml::from_str(
        "[api]\nproject_id = \"0a1b2c3d4e5f67890a1b2c3d4e5f6789\"\n[api.auth]\naccess_key = \"AK\"\nsecret_key = \"SK\"\n",
    )
    .unwrap();
    let serde_json::Value::Object(root) = tree else {
        panic!("a table")
    };
    let (_, known) = super::validate::from_tree(root, None, super::split::Entries::InTree).unwrap();
    let mut section: Option<String> = None;
    let mut missing = Vec::new();
    for line in text.lines() {
        let line = line.trim_start_matches('#').trim();
        if line.starts_with("[[") {
            section = None;
        } else if let Some(name) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
            // An `[[accounts]]` entry takes `[api]`'s keys, read by the same reader.
            section = Some(match name.strip_prefix("accounts") {
                Some(rest) => format!("api{rest}"),
                None => name.to_string(),
            });
        } else if let (Some(sec), Some((key, _))) = (&section, line.split_once('=')) {
            let key = key.trim();
            if !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                let path = format!("{sec}.{key}");
                if !known.contains(&path) {
                    missing.push(path);
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "keys the readers never ask for: {missing:?}"
    );
    assert!(
        known.contains("poll.interval") && known.contains("log.level"),
        "{known:?}"
    );
}

/// config.example.toml writes out every default: loading it must give what
/// `Config::defaults` (and so the loader) falls back to, so neither drifts from the other.
#[test]
fn the_example_file_shows_the_defaults() {
    let text = include_str!("../../config.example.toml");
    let env = vec![
        (
            "RECWATCH_API__AUTH__ACCESS_KEY".to_string(),
            "AK".to_string(),
        ),
        (
            "RECWATCH_API__AUTH__SECRET_KEY".to_string(),
            "SK".to_string(),
        ),
        (
            "RECWATCH_API__PROJECT_ID".to_string(),
            "0a1b2c3d4e5f67890a1b2c3d4e5f6789".to_string(),
        ),
    ];
    let example = parse_str(text, env, None).expect("the example loads with credentials");
    let d = Config::defaults(example.api.auth.clone());
    let (a, b) = (&example.api, &d.api);
    assert_eq!(a.endpoint, b.endpoint);
    assert_eq!(
        (a.timeout, a.rate_limit, a.max_in_flight),
        (b.timeout, b.rate_limit, b.max_in_flight)
    );
    assert_eq!(
        (
            a.throttle_backoff,
            a.auth_backoff,
            a.allow_short_auth_backoff
        ),
        (
            b.throttle_backoff,
            b.auth_backoff,
            b.allow_short_auth_backoff
        )
    );
    assert_eq!(example.poll.interval, d.poll.interval);
    assert_eq!(example.poll.schedule, d.poll.schedule);
    assert_eq!(example.poll.stop_after_terminal, d.poll.stop_after_terminal);
    assert_eq!(example.storage.path, d.storage.path);
    assert_eq!(example.storage.retention, d.storage.retention);
    assert_eq!(example.rules, d.rules);
    assert_eq!(example.notify.max_age, d.notify.max_age);
    assert_eq!(example.notify.max_backoff, d.notify.max_backoff);
    assert_eq!(example.notify.group_wait, d.notify.group_wait);
    assert_eq!(example.notify.language, d.notify.language);
    assert_eq!(example.http.listen, Some(defaults::HTTP_LISTEN));
    assert_eq!(example.log.level, d.log.level);
    assert_eq!(example.callback.listen, d.callback.listen);
    assert_eq!(example.callback.path, d.callback.path);
    assert!(example.apps.is_empty());
    assert_eq!(example.remediate, d.remediate);
}

#[test]
fn remediate_section_and_overrides_table() {
    let auth = "[api.auth]\ntoken = \"t\"\n";
    let app = "[[apps]]\napp_id=\"a\"\nauth_key=\"kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk\"\n";
    let ok = |text: &str| parse(&format!("{auth}{text}")).unwrap();
    let c = ok(
        "[remediate]\nenabled = true\non = [\"INTERNAL_ERROR\", \"EXCEED_MAX_IDLE_TIME\"]\nmax_restarts = 5\nwindow = \"2h\"\ndry_run = true\n",
    );
    let r = &c.remediate;
    assert!(r.enabled && r.dry_run);
    assert_eq!(r.max_restarts, 5);
    assert_eq!(r.window, std::time::Duration::from_secs(7200));
    assert_eq!(r.on.len(), 2);
    let c = ok(&format!(
        "{app}remediate = false\n[[jobs]]\napp_id=\"a\"\njob_id=\"j\"\nremediate = true\n"
    ));
    let key = crate::domain::JobKey::new("a", "j");
    assert_eq!(c.remediate.jobs.get(&key), Some(&true));
    assert_eq!(c.remediate.apps.get("a"), Some(&false));
    assert!(c.remediate.enabled_for(&key, &key));
    let other = crate::domain::JobKey::new("a", "x");
    assert!(!c.remediate.enabled_for(&other, &other));

    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "an unknown reason",
            "[remediate]\non = [\"DISK_FULL\"]\n",
            "remediate.on",
            "not a stop reason",
        ),
        (
            "the tenant's stop",
            "[remediate]\non = [\"TENANT_STOP\"]\n",
            "remediate.on",
            "never re-created",
        ),
        (
            "zero restarts",
            "[remediate]\nmax_restarts = 0\n",
            "remediate.max_restarts",
            "out of range",
        ),
        (
            "too many restarts",
            "[remediate]\nmax_restarts = 101\n",
            "remediate.max_restarts",
            "out of range",
        ),
        (
            "a window past its bound",
            "[remediate]\nwindow = \"30d\"\n",
            "remediate.window",
            "at most 7d",
        ),
        (
            "a zero window",
            "[remediate]\nwindow = \"0s\"\n",
            "remediate.window",
            "longer than 0s",
        ),
        (
            "enabled not a flag",
            "[remediate]\nenabled = \"yes\"\n",
            "remediate.enabled",
            "true or false",
        ),
        (
            "a misspelt key",
            "[remediate]\nmax_restart = 3\n",
            "remediate.max_restart",
            "max_restarts",
        ),
        (
            "a job's remediate not a flag",
            "[[jobs]]\napp_id=\"a\"\njob_id=\"j\"\nremediate = 1\n",
            "jobs[0].remediate",
            "true or false",
        ),
    ];
    for (name, text, location, message) in cases {
        let e = parse(&format!("{auth}{text}")).unwrap_err();
        assert_eq!(e.location, *location, "{name}: {e}");
        assert!(e.message.contains(message), "{name}: {e}");
    }
}

#[test]
fn callback_and_apps_errors_name_the_key() {
    let auth = "[api.auth]\ntoken = \"t\"\n";
    let app = "[[apps]]\napp_id=\"a\"\nauth_key=\"kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk\"\n";
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "listen not an address",
            "[callback]\nlisten=\"9188\"\n",
            "callback.listen",
            "IP:PORT",
        ),
        (
            "path without a slash",
            "[callback]\nlisten=\"127.0.0.1:0\"\npath=\"cb\"\n",
            "callback.path",
            "starts with /",
        ),
        (
            "listening without any app",
            "[callback]\nlisten=\"127.0.0.1:0\"\n",
            "callback.listen",
            "no [[apps]]",
        ),
        (
            "app without a key",
            "[[apps]]\napp_id=\"a\"\n",
            "apps[0] (\"a\").auth_key",
            "missing",
        ),
        (
            "a key RTC's console would refuse (under 32 characters)",
            "[[apps]]\napp_id=\"a\"\nauth_key=\"kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk\"\n",
            "apps[0] (\"a\").auth_key",
            "31 characters; RTC's console takes 32 to 64",
        ),
        (
            "a key over 64 characters",
            "[[apps]]\napp_id=\"a\"\nauth_key=\"kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk\"\n",
            "apps[0] (\"a\").auth_key",
            "65 characters; RTC's console takes 32 to 64",
        ),
        (
            "app without an id",
            "[[apps]]\nauth_key=\"kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk\"\n",
            "apps[0].app_id",
            "missing",
        ),
        (
            "dot-dot app id",
            "[[apps]]\napp_id=\"..\"\nauth_key=\"kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk\"\n",
            "apps[0].app_id",
            "not an id",
        ),
        (
            "key inline and from a file",
            "[[apps]]\napp_id=\"a\"\nauth_key=\"kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk\"\nauth_key_file=\"/k\"\n",
            "apps[0] (\"a\").auth_key",
            "not both",
        ),
        (
            "unknown channel",
            "[[apps]]\napp_id=\"a\"\nauth_key=\"kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk\"\nnotify=[\"pager\"]\n",
            "apps[0] (\"a\").notify",
            "no channel",
        ),
        (
            "an app twice",
            "[[apps]]\napp_id=\"a\"\nauth_key=\"kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk\"\n[[apps]]\napp_id=\"a\"\nauth_key=\"k2k2k2k2k2k2k2k2k2k2k2k2k2k2k2k2\"\n",
            "apps[1] (\"a\").app_id",
            "configured twice",
        ),
        (
            "forward_to that is not a URL",
            "[[apps]]\napp_id=\"a\"\nauth_key=\"kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk\"\nforward_to=\"my-app/rtc\"\n",
            "apps[0] (\"a\").forward_to",
            "your own callback receiver",
        ),
        (
            "forward_to that is not http(s)",
            "[[apps]]\napp_id=\"a\"\nauth_key=\"kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk\"\nforward_to=\"ftp://x.example/cb\"\n",
            "apps[0] (\"a\").forward_to",
            "http:// or https://",
        ),
        (
            "discover must be true or false",
            "[[apps]]\napp_id=\"a\"\nauth_key=\"kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk\"\ndiscover=\"yes\"\n",
            "apps[0] (\"a\").discover",
            "not true or false",
        ),
    ];
    for (name, extra, key, fix) in cases {
        let e = parse(&format!("{auth}{extra}")).expect_err(name);
        assert!(e.location.contains(key), "{name}: {e}");
        assert!(e.message.contains(fix), "{name}: {e}");
        assert!(
            !e.to_string().contains("kkkkkkkk"),
            "{name}: a key shows: {e}"
        );
    }
    let good = parse(&format!(
        "{auth}[callback]\nlisten=\"127.0.0.1:9188\"\n{app}name=\"studio\"\n"
    ))
    .unwrap();
    assert_eq!(
        good.callback.listen,
        Some("127.0.0.1:9188".parse().unwrap())
    );
    assert_eq!(good.callback.path, defaults::CALLBACK_PATH);
    assert_eq!(good.apps[0].app_id, "a");
    assert_eq!(good.apps[0].name.as_deref(), Some("studio"));
    assert_eq!(good.apps[0].forward_to, None);
    let relayed = parse(&format!(
        "{auth}{app}forward_to=\"https://my-app.example.com/rtc-callback\"\n"
    ))
    .unwrap();
    assert_eq!(
        relayed.apps[0].forward_to.as_ref().map(|u| u.as_str()),
        Some("https://my-app.example.com/rtc-callback")
    );
    assert!(!good.apps[0].discover, "off by default");
    assert!(!format!("{good:?}").contains("\"k\""));
    let discovering = parse(&format!("{auth}{app}discover=true\n")).unwrap();
    assert!(discovering.apps[0].discover);
    let off = parse(&format!("{auth}[callback]\nlisten=\"\"\n")).unwrap();
    assert_eq!(off.callback.listen, None);
}

/// `notify.group_wait` (0s turns grouping off), `http.public_url` and its job links.
#[test]
fn group_wait_and_public_url() {
    let load = |text: &str| {
        parse_str(
            &format!("[api.auth]\ntoken = \"t\"\n{text}"),
            Vec::<(String, String)>::new(),
            None,
        )
    };
    let c = load("").unwrap();
    assert_eq!(c.notify.group_wait, defaults::GROUP_WAIT);
    assert_eq!(c.http.job_link("a", "j"), None);
    let c = load("[notify]\ngroup_wait = \"0s\"").unwrap();
    assert_eq!(c.notify.group_wait, Duration::ZERO);
    let e = load("[notify]\ngroup_wait = \"1h\"").unwrap_err();
    assert_eq!(e.location, "notify.group_wait");
    let c = load("[http]\npublic_url = \"https://rw.example.com/base/\"").unwrap();
    assert_eq!(
        c.http.job_link("app 1", "job/2").as_deref(),
        Some("https://rw.example.com/base/jobs/app%201/job%2F2")
    );
    let e = load("[http]\npublic_url = \"rw.example.com\"").unwrap_err();
    assert_eq!(e.location, "http.public_url");
    let e = load("[http]\npublic_url = \"https://rw.example.com/?x=1\"").unwrap_err();
    assert!(e.message.contains("query"), "{e}");
}

#[test]
fn the_http_token_is_a_secret_inline_or_from_a_file() {
    let c = parse(&with("[http]\ntoken = \"tok-123\"\n")).unwrap();
    assert_eq!(c.http.token.as_ref().map(|t| t.expose()), Some("tok-123"));
    assert!(!format!("{c:?}").contains("tok-123"), "never in Debug");
    assert!(
        parse(MINIMAL).unwrap().http.token.is_none(),
        "off by default"
    );

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "tok-from-file\n").unwrap();
    let c = parse_str(
        &with("[http]\ntoken_file = \"token\"\n"),
        Vec::<(String, String)>::new(),
        Some(dir.path()),
    )
    .unwrap();
    assert_eq!(
        c.http.token.as_ref().map(|t| t.expose()),
        Some("tok-from-file")
    );

    let cases = [
        ("both", "token = \"a\"\ntoken_file = \"/t\"\n", "not both"),
        ("empty", "token = \"\"\n", "is empty"),
        ("a space", "token = \"two words\"\n", "space or control"),
        (
            "missing file",
            "token_file = \"/nonexistent/t\"\n",
            "cannot read",
        ),
    ];
    for (name, keys, want) in cases {
        let e = parse(&with(&format!("[http]\n{keys}"))).expect_err(name);
        assert!(e.location.starts_with("http.token"), "{name}: {e}");
        assert!(e.message.contains(want), "{name}: {e}");
        assert!(!e.to_string().contains("two words"), "{name}: {e}");
    }
}

/// Issue 23: a file's `[[jobs]]` cut out of its text and read a run at a time, or read by the
/// lean reader, give the configuration the whole file read as one tree gives, and every
/// error the same (the whole file is read again for it: its line, the first error by the
/// sections' order). The lean reader reads the common shape itself and declines the rest.
#[test]
fn jobs_cut_out_of_the_file_read_as_the_whole_file() {
    use super::load::{Reading, parse_cut};
    let head = "[api]\nproject_id = \"p\"\n[api.auth]\naccess_key = \"AK\"\nsecret_key = \"hunter2-the-key\"\n[[notify.webhook]]\nname = \"hook\"\nurl = \"http://127.0.0.1:1/\"\n";
    let job = |i: usize| format!("[[jobs]]\napp_id = \"a\"\njob_id = \"j{i}\"\n");
    let many: String = (0..2100).map(job).collect();
    let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    // (name, text, environment, whether `split` can cut the text)
    type Case = (&'static str, String, Vec<(String, String)>, bool);
    let cases: Vec<Case> = vec![
        ("minimal", MINIMAL.to_string(), env(&[]), true),
        (
            "every key of an entry in the common shape, comments, CRLF",
            format!(
                "{head}# the list\r\n[[jobs]] # one\r\nname = \" lobby \"\r\napp_id = 'a'\r\n\r\njob_id = \"j\" # c\r\nkind = \"mix\"\r\ninterval = \"1m\"\r\nnotify = [\"hook\",]\r\nremediate = false\r\n[[jobs]]\r\napp_id = \"b\"\r\njob_id = \"j\"\r\nnotify = []\r\n"
            ),
            env(&[("RECWATCH_POLL__INTERVAL", "20s")]),
            true,
        ),
        (
            "a header in a multi-line string of the rest",
            format!(
                "{head}[storage]\npath = \"\"\"\n[[jobs]]\napp_id = \"a\"\njob_id = \"x\"\n[log]\n\"\"\"\n{}",
                job(0)
            ),
            env(&[]),
            true,
        ),
        (
            "a header in a multi-line value of an entry",
            format!("{head}[[jobs]]\napp_id = \"a\"\njob_id = \"j\"\nnotify = [\n[[jobs]]\n]\n"),
            env(&[]),
            true,
        ),
        (
            "a channel no section names",
            format!("{head}[[jobs]]\napp_id = \"a\"\njob_id = \"j\"\nnotify = [\"mail\"]\n"),
            env(&[]),
            true,
        ),
        (
            "an id the API cannot take",
            format!("{head}{many}[[jobs]]\napp_id = \"a\"\njob_id = \"x/y\"\n"),
            env(&[]),
            true,
        ),
        (
            "every key of an entry, sections after the entries",
            format!(
                "{head}[[jobs]]\nname = \"lobby\"\napp_id = \"a\"\njob_id = 7\nkind = \"mix\"\ninterval = \"1m\"\nnotify = [\"hook\"]\nremediate = true\n[poll]\ninterval = \"10s\"\n[[jobs]]\napp_id = \"b\"\njob_id = \"j\"\n[log]\nlevel = \"debug\"\n"
            ),
            env(&[
                ("RECWATCH_POLL__INTERVAL", "20s"),
                ("RECWATCH_POLL_INTERVAL", "1s"),
            ]),
            true,
        ),
        (
            "more entries than a run",
            format!("{head}{many}"),
            env(&[]),
            true,
        ),
        (
            "an unknown key in an entry",
            format!("{head}{}[[jobs]]\nappid = \"a\"\njob_id = \"j\"\n", job(0)),
            env(&[]),
            true,
        ),
        (
            "the same job twice, far apart",
            format!("{head}{many}{}", job(3)),
            env(&[]),
            true,
        ),
        (
            "a syntax error in an entry: the whole file's line",
            format!("{head}{many}[[jobs]]\napp_id = \"a\"\njob_id = \"hunter2-the-key\n"),
            env(&[]),
            true,
        ),
        (
            "an entry's value a date-time",
            format!("{head}[[jobs]]\napp_id = \"a\"\njob_id = \"j\"\ninterval = 1979-05-27\n"),
            env(&[]),
            true,
        ),
        (
            "an error in a section and in an entry: the section's first",
            format!("{head}[[jobs]]\napp_id = \"a\"\n"),
            env(&[("RECWATCH_API__RATE_LIMIT", "0")]),
            true,
        ),
        (
            "an override makes an entry wrong",
            format!("{head}[[jobs]]\napp_id = \"a\"\njob_id = \"j\"\ninterval = \"1m\"\n"),
            env(&[("RECWATCH_POLL__SCHEDULE", "*/5 * * * * *")]),
            true,
        ),
        (
            "jobs as an inline array: left whole",
            format!("jobs = [{{ app_id = \"a\", job_id = \"j\" }}]\n{head}"),
            env(&[]),
            false,
        ),
        (
            "jobs in the rest and as entries",
            format!("jobs = []\n{head}{}", job(0)),
            env(&[]),
            true,
        ),
        (
            "an override reaching into jobs: left whole",
            format!("{head}{}", job(0)),
            env(&[("RECWATCH_JOBS__X", "1")]),
            true,
        ),
    ];
    let mut oks = Vec::new();
    let mut lean_reads = Vec::new();
    for (name, text, env, cuts) in cases {
        assert_eq!(super::split::split(&text).is_some(), cuts, "{name}: cut");
        let lean = parse_cut(&text, env.clone(), None, Reading::Lean);
        let split = parse_cut(&text, env.clone(), None, Reading::Split);
        let whole = parse_cut(&text, env, None, Reading::Whole);
        let shown = |c: &Result<super::Config, ConfigError>| {
            c.as_ref().map(|c| format!("{c:?}")).map_err(Clone::clone)
        };
        assert_eq!(shown(&split), shown(&whole), "{name}: split");
        assert_eq!(shown(&lean), shown(&whole), "{name}: lean");
        match &lean {
            Ok(c) => {
                oks.push(name);
                // Whether the lean reader read the entries itself (not declined), and read
                // them as the whole file's.
                let read = super::lean::cut(&text)
                    .and_then(|l| l.jobs(&c.notify, &c.poll, &mut Default::default()));
                if let Some(jobs) = read {
                    assert_eq!(format!("{jobs:?}"), format!("{:?}", c.jobs), "{name}");
                    lean_reads.push(name);
                }
            }
            Err(e) => assert!(!e.to_string().contains("hunter2"), "{name}: {e}"),
        }
    }
    assert_eq!(
        oks,
        [
            "minimal",
            "every key of an entry in the common shape, comments, CRLF",
            "a header in a multi-line string of the rest",
            "every key of an entry, sections after the entries",
            "more entries than a run",
            "jobs as an inline array: left whole",
        ]
    );
    assert_eq!(
        lean_reads,
        [
            "minimal",
            "every key of an entry in the common shape, comments, CRLF",
            "more entries than a run",
        ]
    );
}

/// Issue 23, item 7: `load_beside` gives what `load` gives, and runs its work on a thread of
/// its own with the storage the file names only when the lean reader reads the file (named
/// cases); a file it declines, or a broken one, is read (and told) as `load` reads it.
#[test]
fn load_beside_is_load_with_work_beside_the_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let main = std::thread::current().id();
    let storage = "[storage]\npath = \"/tmp/recwatch-beside.db\"\n";
    let cases = [
        ("the lean shape", format!("{MINIMAL}{storage}"), true),
        (
            "an entry outside the shape: declined",
            format!("{MINIMAL}name = \"caf\\u00e9\"\n{storage}"),
            false,
        ),
        (
            "a broken entry: load's error",
            format!("{MINIMAL}job_id = \"again\"\n{storage}"),
            false,
        ),
        (
            "a syntax error: load's error",
            format!("{MINIMAL}{storage}[log\n"),
            false,
        ),
    ];
    for (name, text, beside_runs) in cases {
        let path = dir.path().join("recwatch.toml");
        std::fs::write(&path, &text).unwrap();
        let want = load(&path).map(|c| format!("{c:?}"));
        let got = load_beside(&path, |s: &StorageConfig| {
            (std::thread::current().id(), s.path.clone())
        });
        let (config, beside) = match got {
            Ok((c, b)) => (Ok(format!("{c:?}")), b),
            Err(e) => (Err(e), None),
        };
        assert_eq!(config, want, "{name}");
        match beside {
            Some((thread, path)) => {
                assert!(beside_runs, "{name}: ran beside");
                assert_ne!(thread, main, "{name}: on a thread of its own");
                assert_eq!(
                    path,
                    std::path::Path::new("/tmp/recwatch-beside.db"),
                    "{name}"
                );
            }
            None => assert!(!beside_runs, "{name}: did not run beside"),
        }
    }
}

/// Issue 23, item 1: a watched job's configuration lives as long as the job is watched, one a
/// job (100,000 at the issue's scale, most of them discovered). Its ids are its key, one
/// pointer shared with the poller's maps; as two `String`s of their own it was 136 bytes
/// and two more allocations a job. Issue 25's `account` is a thin pointer (8 bytes; the
/// struct's alignment makes it 88).
#[test]
fn a_jobs_configuration_holds_its_ids_once() {
    let size = std::mem::size_of::<JobConfig>();
    assert!(size <= 88, "JobConfig is {size} bytes");
}
