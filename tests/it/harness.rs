//! Spawns the real `recwatch` binary against the simulator on 127.0.0.1:0, with its own
//! temporary directory, config file and SQLite database, and reads what it wrote.

use recwatch_rtc::model::{JobSnapshot, State, StopReason};
use recwatch_sim::{self as simulate, SimOptions, SimStats, Simulator};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{Row, SqlitePool};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tempfile::TempDir;

pub const BIN: &str = env!("CARGO_BIN_EXE_recwatch");
pub const AK: &str = "TESTACCESSKEY0000001";
pub const SK: &str = "test-secret-key";
/// The project the simulator expects in X-Project-Id (mandatory with AK/SK).
pub const PROJECT: &str = "test-project";

/// Checks the requests the simulator saw since its stats were last reset against a daemon
/// budget of `rate` per second: never more than `rate` in any sliding second where they
/// arrive (issue 23). The daemon holds each request in its window from its send until a second
/// after its answer, and the simulator counts a request between the two, so scheduling noise on
/// a loaded machine is no excuse for one more (`poller::budget`, `BudgetState::in_use`). Over
/// the whole run that allows at most `rate` in each started second.
pub fn assert_within_budget(stats: &SimStats, rate: u64, what: &str) {
    assert!(
        stats.max_per_sliding_second <= rate,
        "{what}: {} requests within one second at the simulator, budget {rate}/s (per second: {:?})",
        stats.max_per_sliding_second,
        stats.per_second
    );
    let since = stats.since.expect("the simulator sets since");
    let secs = (chrono::Utc::now() - since).num_milliseconds() as f64 / 1000.0;
    let allowed = rate as f64 * (secs + 1.0);
    assert!(
        stats.requests as f64 <= allowed,
        "{what}: {} requests in {secs:.1}s, budget {rate}/s",
        stats.requests
    );
}

/// `/api/v1/jobs` items cut down to the fields of `recwatch status --json`'s rows: the API
/// adds fields beside them (label, tone, timeline, ...), the shared ones must be equal.
pub fn status_fields(
    api: &[serde_json::Value],
    cli: &[serde_json::Value],
) -> Vec<serde_json::Value> {
    api.iter()
        .zip(cli)
        .map(|(a, c)| {
            let keys = c.as_object().expect("a status row is an object");
            let a = a.as_object().expect("an item is an object");
            let cut: serde_json::Map<String, serde_json::Value> = keys
                .keys()
                .map(|k| {
                    (
                        k.clone(),
                        a.get(k).cloned().unwrap_or(serde_json::Value::Null),
                    )
                })
                .collect();
            serde_json::Value::Object(cut)
        })
        .collect()
}

/// The one deadline and the one wait of every test (`src/testing.rs`, shared with the unit
/// tests and the simulator's).
pub use crate::testing::{T, wait_for};

/// How many requests the simulator had for `job` of demo-app (0 before the first).
pub fn polls_of(sim: &Simulator, job: &str) -> u64 {
    sim.stats()
        .by_job
        .get("demo-app")
        .and_then(|j| j.get(job))
        .copied()
        .unwrap_or(0)
}

pub async fn start_sim(opts: SimOptions) -> Simulator {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    simulate::start(listener, opts).await.unwrap()
}

/// Simulator options with AK/SK checking on, so every test also proves the signatures.
pub fn signed_sim(jobs: usize) -> SimOptions {
    SimOptions {
        jobs,
        auth: simulate::SimAuth::AkSk {
            access_key: AK.into(),
            secret_key: SK.into(),
        },
        project_id: Some(PROJECT.into()),
        ..SimOptions::default()
    }
}

/// A signed simulator whose jobs keep their state until a test sets it (`set_job`).
pub fn static_sim(jobs: usize) -> SimOptions {
    SimOptions {
        scripted: false,
        ..signed_sim(jobs)
    }
}

/// The webhook secret of the receivers [`notify_toml`] configures.
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The `[notify]` and `[rules]` sections most tests alert with: a webhook at `hook` (signed
/// with [`SECRET`]) and an e-mail channel on the SMTP server at `smtp`, each if given,
/// retried within 300 ms, and `rules` as the `[rules]` section's lines.
pub fn notify_toml(hook: Option<&str>, smtp: Option<SocketAddr>, rules: &str) -> String {
    // group_wait 0s: these tests count one mail per alert.
    let mut s =
        format!("\n[notify]\nmax_backoff = \"300ms\"\ngroup_wait = \"0s\"\n\n[rules]\n{rules}\n");
    if let Some(url) = hook {
        s.push_str(&format!("\n[[notify.webhook]]\nname = \"hook\"\nurl = \"{url}\"\nsecret = \"{SECRET}\"\ntimeout = \"2s\"\n"));
    }
    if let Some(addr) = smtp {
        s.push_str(&format!(
            "\n[[notify.email]]\nname = \"mail\"\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {}\ntls = \"none\"\nfrom = \"recwatch <recwatch@example.com>\"\nto = [\"oncall@example.com\", \"lead@example.com\"]\ntimeout = \"2s\"\n",
            addr.port()
        ));
    }
    s
}

/// A job's record as the API shows it, in `state` (with `reason` once stopped).
pub fn snap(job_id: &str, state: &str, reason: Option<&str>) -> JobSnapshot {
    JobSnapshot {
        job_id: Some(job_id.into()),
        app_id: Some("demo-app".into()),
        state: Some(State::parse(state)),
        stop_reason: reason.map(StopReason::parse),
        description: Some(format!("{state} by the test")),
        create_time: Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        max_idle_time: Some(30),
        ..Default::default()
    }
}

/// The simulator's `demo-app` job `job_id` shows `state` (and `reason`) from now on: how a
/// test makes a job start, stop or die.
pub fn set_state(sim: &Simulator, job_id: &str, state: &str, reason: Option<&str>) {
    sim.set_job("demo-app", job_id, snap(job_id, state, reason));
}

/// The config a test runs with; `extra` is appended verbatim (more sections, [[jobs]]...).
pub struct AppConfig {
    pub endpoint: String,
    pub interval: &'static str,
    pub rate_limit: u32,
    pub max_in_flight: u32,
    pub timeout: &'static str,
    pub secret_key: String,
    pub jobs: Vec<String>,
    /// Appended verbatim inside `[api]` (e.g. `auth_backoff = "1s"`).
    pub api_extra: String,
    pub extra: String,
    /// `http.listen`; "" turns the endpoint off.
    pub listen: String,
    /// `storage.url` (PostgreSQL) instead of the SQLite file under the test's directory.
    pub storage_url: Option<String>,
    /// Several `[[accounts]]` by these names instead of `[api]`, each with `[api]`'s settings
    /// (the one simulator, its keys and project: so they share one key's budget); job `i` is
    /// polled by account `i % n`.
    pub accounts: Vec<String>,
    /// `[[accounts]]` entries written verbatim instead of `[api]` ([`account_toml`]: each
    /// account its own endpoint and keys), for tests of accounts that differ.
    pub accounts_toml: Option<String>,
}

/// An `[[accounts]]` entry named `name` on `endpoint` with the simulator's project, the keys
/// `(access_key, secret_key)`, and `extra` lines (e.g. `auth_backoff`) inside the entry.
pub fn account_toml(name: &str, endpoint: &str, keys: (&str, &str), extra: &str) -> String {
    let (ak, sk) = keys;
    format!(
        "\n[[accounts]]\nname = \"{name}\"\nendpoint = \"{endpoint}\"\nproject_id = \"{PROJECT}\"\ntimeout = \"2s\"\n{extra}\n[accounts.auth]\naccess_key = \"{ak}\"\nsecret_key = \"{sk}\"\n"
    )
}

impl AppConfig {
    pub fn new(sim: &Simulator, jobs: usize) -> AppConfig {
        AppConfig {
            endpoint: sim.url(),
            interval: "100ms",
            rate_limit: 50,
            max_in_flight: 4,
            timeout: "2s",
            secret_key: SK.into(),
            jobs: (0..jobs).map(simulate::job_id).collect(),
            api_extra: String::new(),
            extra: String::new(),
            listen: String::new(),
            storage_url: None,
            accounts: Vec::new(),
            accounts_toml: None,
        }
    }

    fn render(&self, db: &std::path::Path) -> String {
        let mut s = match self.accounts.is_empty() {
            _ if self.accounts_toml.is_some() => self.accounts_toml.clone().unwrap_or_default(),
            true => self.account("[api]", "[api.auth]"),
            false => self
                .accounts
                .iter()
                .map(|name| {
                    let head = format!("[[accounts]]\nname = \"{name}\"");
                    self.account(&head, "[accounts.auth]")
                })
                .collect(),
        };
        s.push_str(&format!(
            r#"
[poll]
interval = "{}"

[storage]
{}

[http]
listen = "{}"
"#,
            self.interval,
            match &self.storage_url {
                Some(url) => format!("url = \"{url}\""),
                None => format!("path = \"{}\"", db.display()),
            },
            self.listen
        ));
        s.push_str(&self.extra);
        for (i, j) in self.jobs.iter().enumerate() {
            s.push_str(&format!(
                "\n[[jobs]]\napp_id = \"demo-app\"\njob_id = \"{j}\"\nname = \"cam-{i}\"\n"
            ));
            if !self.accounts.is_empty() {
                let account = &self.accounts[i % self.accounts.len()];
                s.push_str(&format!("account = \"{account}\"\n"));
            }
        }
        s
    }

    /// An account's section (`[api]`, or an `[[accounts]]` entry's head) with its keys.
    fn account(&self, head: &str, auth: &str) -> String {
        format!(
            r#"
{head}
endpoint = "{}"
timeout = "{}"
rate_limit = {}
max_in_flight = {}
project_id = "{PROJECT}"
{}
{auth}
access_key = "{AK}"
secret_key = "{}"
"#,
            self.endpoint,
            self.timeout,
            self.rate_limit,
            self.max_in_flight,
            self.api_extra,
            self.secret_key,
        )
    }
}

pub struct TestApp {
    pub dir: TempDir,
    pub config_path: PathBuf,
    pub db_path: PathBuf,
    child: Option<Child>,
    /// Everything the daemon wrote to stderr, for assertions and for failure output.
    pub log: Arc<Mutex<String>>,
    /// Set by [`TestApp::keep_on_failure`]: how to replay a failing run (its seed), said
    /// when the directory is kept.
    keep_on_failure: Option<String>,
}

impl TestApp {
    pub fn new(config: &AppConfig) -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        let db_path = dir.path().join("state").join("recwatch.db");
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, config.render(&db_path)).unwrap();
        TestApp {
            dir,
            config_path,
            db_path,
            child: None,
            log: Arc::new(Mutex::new(String::new())),
            keep_on_failure: None,
        }
    }

    /// On a failure (a panic while this app is alive), keeps its directory (config, database)
    /// instead of deleting it, writes the daemon's log there as `recwatch.log`, and prints
    /// both paths with `replay` (how to run the same case again, e.g. its seed). For tests
    /// whose rare failures under load cannot be reproduced from the assertion alone.
    pub fn keep_on_failure(&mut self, replay: impl Into<String>) {
        self.keep_on_failure = Some(replay.into());
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--config")
            .arg(&self.config_path)
            .args(args)
            .env_remove("RUST_LOG");
        c
    }

    /// Runs a one-shot command; returns (exit code, stdout, stderr). Async, so an in-process
    /// simulator keeps serving while it runs.
    pub async fn run_cmd(&self, args: &[&str]) -> (i32, String, String) {
        let out = tokio::process::Command::from(self.command(args))
            .output()
            .await
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn rewrite_config(&self, config: &AppConfig) {
        std::fs::write(&self.config_path, config.render(&self.db_path)).unwrap();
    }

    /// A daemon with `config`, started, once `running` of its jobs show RUNNING in its
    /// database: the start most tests make.
    pub async fn spawn(config: &AppConfig, running: i64) -> TestApp {
        let mut app = TestApp::new(config);
        app.start();
        app.wait_running(running).await;
        app
    }

    /// Deliveries still pending, on every channel.
    pub async fn pending_deliveries(&self) -> i64 {
        self.scalar("SELECT COUNT(*) FROM deliveries WHERE state = 'pending'")
            .await
    }

    /// Starts `recwatch run` in the background.
    pub fn start(&mut self) {
        self.start_with(&[]);
    }

    /// Starts `recwatch run` with extra environment variables.
    pub fn start_with(&mut self, env: &[(&str, &str)]) {
        let mut cmd = self.command(&["run"]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        self.launch(cmd);
    }

    /// Starts `recwatch run` with its open-files limit (soft and hard) set to `nofile`, as a
    /// host with a low limit would start it.
    pub fn start_with_nofile(&mut self, nofile: u64) {
        use std::os::unix::process::CommandExt;
        let mut cmd = self.command(&["run"]);
        let lim = libc::rlimit {
            rlim_cur: nofile as libc::rlim_t,
            rlim_max: nofile as libc::rlim_t,
        };
        // SAFETY: between fork and exec only setrlimit runs, which is async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        self.launch(cmd);
    }

    fn launch(&mut self, mut cmd: Command) {
        assert!(self.child.is_none(), "already running");
        let mut child = cmd
            .env("RUST_LOG", "info,recwatch=debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = self.log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = log.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        self.child = Some(child);
    }

    /// True while the daemon started by [`TestApp::start`] has not exited.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Sends SIGTERM and waits for the exit status.
    pub async fn stop(&mut self) -> ExitStatus {
        self.signal("TERM");
        self.wait_exit(Duration::from_secs(15)).await
    }

    /// SIGKILL: no chance to clean up.
    pub async fn kill(&mut self) -> ExitStatus {
        self.signal("KILL");
        self.wait_exit(Duration::from_secs(15)).await
    }

    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("running");
        let status = wait_for("the daemon to exit", timeout, || {
            let s = child.try_wait().unwrap();
            async move { s }
        })
        .await;
        self.child = None;
        status
    }

    /// The address of the daemon's HTTP endpoint, from its log. A test sets `http.listen` to
    /// port 0: the daemon binds a free port and keeps it, and says which ("find a free port,
    /// then let the daemon bind it" would race other processes for the port).
    pub async fn http_addr(&self) -> SocketAddr {
        self.logged_addr("HTTP endpoint").await
    }

    /// The address the callback receiver bound (`callback.listen = "127.0.0.1:0"`), from its
    /// log line, like [`TestApp::http_addr`].
    pub async fn callback_addr(&self) -> SocketAddr {
        self.logged_addr("callback receiver").await
    }

    /// The `address=` of the first log line that mentions `listener`.
    async fn logged_addr(&self, listener: &str) -> SocketAddr {
        let log = self.log.clone();
        wait_for(
            &format!("the {listener}'s address in the log"),
            Duration::from_secs(60),
            || {
                let addr = log
                    .lock()
                    .unwrap()
                    .lines()
                    .filter(|l| l.contains(listener))
                    .find_map(|l| {
                        l.split_whitespace()
                            .find_map(|w| w.strip_prefix("address="))
                            .and_then(|a| a.trim_matches('"').parse().ok())
                    });
                async move { addr }
            },
        )
        .await
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub async fn wait_log(&self, needle: &str, timeout: Duration) {
        let log = self.log.clone();
        wait_for(&format!("log line containing {needle:?}"), timeout, || {
            let found = log.lock().unwrap().contains(needle);
            async move { found.then_some(()) }
        })
        .await
    }

    /// A read-only connection to the daemon's database (None until it exists).
    pub async fn db(&self) -> Option<SqlitePool> {
        if !self.db_path.exists() {
            return None;
        }
        let opts = SqliteConnectOptions::new()
            .filename(&self.db_path)
            .read_only(true)
            .busy_timeout(Duration::from_secs(5));
        SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await
            .ok()
    }

    /// Every transition as (job_id, from_state, to_state, stop_reason), oldest first.
    pub async fn transitions(&self) -> Vec<(String, Option<String>, String, Option<String>)> {
        let Some(db) = self.db().await else {
            return Vec::new();
        };
        let rows = sqlx::query(
            "SELECT job_id, from_state, to_state, stop_reason FROM transitions ORDER BY id",
        )
        .fetch_all(&db)
        .await
        .unwrap_or_default();
        db.close().await;
        rows.into_iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect()
    }

    /// A job's row: (state, stop_reason, last_error_kind, consecutive_failures).
    pub async fn job_row(
        &self,
        job_id: &str,
    ) -> Option<(Option<String>, Option<String>, Option<String>, i64)> {
        let db = self.db().await?;
        let row = sqlx::query("SELECT state, stop_reason, last_error_kind, consecutive_failures FROM jobs WHERE job_id = ?")
            .bind(job_id)
            .fetch_optional(&db)
            .await
            .ok()
            .flatten();
        db.close().await;
        row.map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
    }

    /// Waits until `n` jobs show RUNNING in the database.
    pub async fn wait_running(&self, n: i64) {
        wait_for(
            &format!("{n} jobs RUNNING in the database"),
            Duration::from_secs(30),
            || async {
                (self
                    .scalar("SELECT COUNT(*) FROM jobs WHERE state = 'RUNNING'")
                    .await
                    == n)
                    .then_some(())
            },
        )
        .await
    }

    pub async fn scalar(&self, sql: &'static str) -> i64 {
        let Some(db) = self.db().await else { return 0 };
        let v: i64 = sqlx::query_scalar(sql).fetch_one(&db).await.unwrap_or(0);
        db.close().await;
        v
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- recwatch stderr ----\n{}", self.log_text());
            if let Some(replay) = &self.keep_on_failure {
                let log = self.dir.path().join("recwatch.log");
                let saved = std::fs::write(&log, self.log_text());
                self.dir.disable_cleanup(true);
                eprintln!(
                    "---- kept for a look: {replay}\n  daemon log: {} ({saved:?})\n  database: {}\n  config: {}",
                    log.display(),
                    self.db_path.display(),
                    self.config_path.display()
                );
            }
        }
    }
}
