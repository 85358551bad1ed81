//! `recwatch simulate`: the simulator as its own process, its command-line arguments and the
//! line it prints once it listens.

use crate::create::CreateFault;
use crate::options::{SimAccount, SimAuth, SimMetadata, SimOptions};
use crate::simulator::start;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;

/// `recwatch simulate`: the simulator as its own process.
#[derive(Clone, Debug, clap::Args)]
pub struct SimulateArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8086")]
    pub listen: SocketAddr,
    /// Number of jobs, job-0000 upwards.
    #[arg(long, default_value_t = 12)]
    pub jobs: usize,
    #[arg(long, default_value = "demo-app")]
    pub app_id: String,
    /// Phase length of the script, e.g. "5s" or "500ms".
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub step: Duration,
    /// Jobs start RUNNING and stay so, instead of walking the script.
    #[arg(long = "static")]
    pub static_jobs: bool,
    /// Require requests signed with this access key (SDK-HMAC-SHA256).
    #[arg(long, requires = "secret_key", conflicts_with = "token")]
    pub access_key: Option<String>,
    #[arg(long, requires = "access_key")]
    pub secret_key: Option<String>,
    /// With --access-key: the only X-Project-Id accepted (any is accepted without it, but one
    /// is always required).
    #[arg(long, requires = "access_key")]
    pub project_id: Option<String>,
    /// Require `X-Auth-Token` equal to this.
    #[arg(long)]
    pub token: Option<String>,
    /// Answer 429 APIG.0308 beyond N requests in the trailing second.
    #[arg(long)]
    pub rate_limit: Option<u32>,
    /// Change this many random jobs per second.
    #[arg(long)]
    pub churn: Option<f64>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Register this record-callback URL for --app-id from the start (as a PUT
    /// /v2/apps/{app_id}/record-callback would); the jobs' changes are POSTed to it.
    #[arg(long, value_name = "URL")]
    pub callback_url: Option<String>,
    /// With --callback-url: sign the callbacks with this key (X-Rtc-Signature).
    #[arg(long, value_name = "KEY", requires = "callback_url")]
    pub callback_key: Option<String>,
    /// Leave out this fraction of record callbacks (0.0 to 1.0; chosen by an RNG seeded with
    /// --seed): polling must still catch what push misses.
    #[arg(long, default_value_t = 0.0, value_parser = parse_fraction)]
    pub callback_drop: f64,
    /// Show a stop in the API this long after its CLOUD_RECORD_SERVER_OVER callback, as the
    /// real API may lag its events, e.g. "2s".
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub callback_lag: Duration,
    /// Make creates fail: reject (400 RTC.00001016, app deactivated), throttle (429
    /// APIG.0308), server-error (the job is made, the answer is 500) or stall (the job is
    /// made, no answer for an hour); =N for the first N creates only. Repeat for several rules,
    /// applied in order.
    #[arg(long, value_name = "KIND[=N]", value_parser = CreateFault::parse_cli)]
    pub create_fault: Vec<CreateFault>,
    /// Serve one more account (repeat for several): its own access key and secret, its own
    /// project id (empty: any, but one must be sent), its own rate limit (default 10/s,
    /// "none" for no limit) and lockout. The gateway finds a request's account by the access
    /// key it is signed with; --access-key/--secret-key/--project-id/--rate-limit are the
    /// account named "default". Revoke a key and give it back with
    /// `POST /_sim/accounts/NAME/revoke` and `POST /_sim/accounts/NAME/restore` (list them:
    /// `GET /_sim/accounts`). No part may hold a ':'.
    #[arg(long, value_name = "NAME:AK:SK:PROJECT[:RATE]", value_parser = AccountParser)]
    pub account: Vec<SimAccount>,
    /// Serve a stand-in of the ECS metadata service on --listen's address (the client's
    /// metadata_url is http://ADDR): PUT /meta-data/latest/api/token, then GET
    /// /openstack/latest/securitykey hands out temporary keys of this account ("default" or an
    /// --account's NAME), accepted with their X-Security-Token until they expire.
    #[arg(long, value_name = "NAME")]
    pub metadata_account: Option<String>,
    /// With --metadata-account: how long each temporary key is accepted, e.g. "20s".
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration, requires = "metadata_account")]
    pub metadata_key_lifetime: Duration,
}

/// `--account`'s parser: clap's own wrapping of a parse error would quote the value, secret
/// key and all; this error names the flag and the form only.
#[derive(Clone)]
struct AccountParser;

impl clap::builder::TypedValueParser for AccountParser {
    type Value = SimAccount;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<SimAccount, clap::Error> {
        let invalid = |why: String| {
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("invalid --account: {why}\n"),
            )
            .with_cmd(cmd)
        };
        let text = value.to_str().ok_or_else(|| invalid("not UTF-8".into()))?;
        SimAccount::parse_cli(text).map_err(invalid)
    }
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err(format!("{s:?} is not a fraction from 0.0 to 1.0, e.g. 0.5")),
    }
}

impl SimulateArgs {
    /// The simulator's options these arguments ask for.
    pub fn options(&self) -> SimOptions {
        let auth = match (&self.access_key, &self.secret_key, &self.token) {
            (Some(ak), Some(sk), _) => SimAuth::AkSk {
                access_key: ak.clone(),
                secret_key: sk.clone(),
            },
            (_, _, Some(token)) => SimAuth::Token(token.clone()),
            _ => SimAuth::None,
        };
        SimOptions {
            app_id: self.app_id.clone(),
            jobs: self.jobs,
            step: self.step,
            scripted: !self.static_jobs,
            auth,
            rate_limit: self.rate_limit,
            churn: self.churn,
            seed: self.seed,
            project_id: self.project_id.clone(),
            callback_url: self.callback_url.clone(),
            callback_key: self.callback_key.clone().map(recwatch_rtc::Secret::new),
            callback_drop: self.callback_drop,
            callback_lag: self.callback_lag,
            create_faults: self.create_fault.clone(),
            accounts: self.account.clone(),
            metadata: self.metadata_account.as_ref().map(|account| SimMetadata {
                account: account.clone(),
                key_lifetime: self.metadata_key_lifetime,
            }),
            ..SimOptions::default()
        }
    }
}

/// The first line `run` prints; tests parse the address out of it.
fn listening_line(addr: SocketAddr, jobs: usize, app_id: &str) -> String {
    format!("recwatch simulator listening on http://{addr} ({jobs} jobs, app {app_id})")
}

/// Binds, prints the listening line, and serves until SIGINT or SIGTERM.
pub async fn run(args: SimulateArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::io::Write;
    let listener = TcpListener::bind(args.listen).await.with_context(|| {
        format!(
            "cannot listen on {}: is another simulator running there? try --listen 127.0.0.1:0",
            args.listen
        )
    })?;
    let sim = start(listener, args.options())
        .await
        .context("starting the simulator")?;
    let mut stdout = std::io::stdout().lock();
    writeln!(
        stdout,
        "{}",
        listening_line(sim.addr(), args.jobs, &args.app_id)
    )?;
    stdout.flush()?;
    drop(stdout);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("waiting for SIGINT")?,
        _ = terminate.recv() => {}
    }
    sim.shutdown();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::create::CreateFaultKind;

    #[test]
    fn cli_arguments() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: SimulateArgs,
        }
        let cli = Cli::try_parse_from([
            "x",
            "--listen",
            "127.0.0.1:0",
            "--step",
            "500ms",
            "--static",
            "--access-key",
            "a",
            "--secret-key",
            "b",
            "--rate-limit",
            "10",
            "--jobs",
            "3",
        ])
        .unwrap();
        let opts = cli.args.options();
        assert_eq!(opts.step, Duration::from_millis(500));
        assert!(!opts.scripted);
        assert_eq!(
            opts.auth,
            SimAuth::AkSk {
                access_key: "a".into(),
                secret_key: "b".into()
            }
        );
        assert_eq!(
            (opts.rate_limit, opts.jobs, opts.app_id.as_str()),
            (Some(10), 3, "demo-app")
        );
        assert!(
            Cli::try_parse_from(["x", "--access-key", "a"]).is_err(),
            "a key needs its secret"
        );
        assert!(
            format!("{:?}", opts.auth).contains("***")
                && !format!("{:?}", opts.auth).contains("\"b\"")
        );
        let cli = Cli::try_parse_from([
            "x",
            "--callback-url",
            "http://127.0.0.1:9188/rtc/record-callback",
            "--callback-key",
            "the-callback-key-of-the-demo-app",
            "--callback-drop",
            "0.5",
            "--callback-lag",
            "2s",
        ])
        .unwrap();
        let opts = cli.args.options();
        assert_eq!(
            opts.callback_url.as_deref(),
            Some("http://127.0.0.1:9188/rtc/record-callback")
        );
        assert_eq!(
            opts.callback_key.as_ref().map(|k| k.expose()),
            Some("the-callback-key-of-the-demo-app")
        );
        assert_eq!(
            (opts.callback_drop, opts.callback_lag),
            (0.5, Duration::from_secs(2))
        );
        assert!(!format!("{opts:?}").contains("the-callback-key"));
        for bad in ["1.5", "half", "NaN"] {
            let e = Cli::try_parse_from(["x", "--callback-drop", bad])
                .err()
                .unwrap()
                .to_string();
            assert!(e.contains("not a fraction from 0.0 to 1.0"), "{bad}: {e}");
        }
        assert!(
            Cli::try_parse_from(["x", "--callback-key", "k"]).is_err(),
            "a key needs a URL"
        );
        let cli = Cli::try_parse_from([
            "x",
            "--create-fault",
            "throttle=2",
            "--create-fault",
            "server-error",
        ])
        .unwrap();
        assert_eq!(
            cli.args.options().create_faults,
            [
                CreateFault::new(CreateFaultKind::Throttle).times(2),
                CreateFault::new(CreateFaultKind::ServerError)
            ]
        );
        let e = Cli::try_parse_from(["x", "--create-fault", "boom"])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("reject, throttle, server-error or stall"), "{e}");
        let cli = Cli::try_parse_from([
            "x",
            "--access-key",
            "AK0",
            "--secret-key",
            "sk0",
            "--account",
            "ap-southeast-1:AKAP:sk-ap-secret:project-ap",
            "--account",
            "eu:AKEU:sk-eu-secret::none",
            "--account",
            "cn:AKCN:sk-cn-secret:project-cn:3",
            "--metadata-account",
            "ap-southeast-1",
            "--metadata-key-lifetime",
            "20s",
        ])
        .unwrap();
        let opts = cli.args.options();
        let accounts: Vec<_> = opts
            .accounts
            .iter()
            .map(|a| {
                (
                    a.name.as_str(),
                    a.access_key.as_str(),
                    a.secret_key.expose(),
                    a.project_id.as_deref(),
                    a.rate_limit,
                )
            })
            .collect();
        assert_eq!(
            accounts,
            [
                (
                    "ap-southeast-1",
                    "AKAP",
                    "sk-ap-secret",
                    Some("project-ap"),
                    Some(10)
                ),
                ("eu", "AKEU", "sk-eu-secret", None, None),
                ("cn", "AKCN", "sk-cn-secret", Some("project-cn"), Some(3)),
            ]
        );
        assert_eq!(
            opts.metadata,
            Some(SimMetadata {
                account: "ap-southeast-1".into(),
                key_lifetime: Duration::from_secs(20)
            })
        );
        assert!(!format!("{opts:?}").contains("-secret"), "{opts:?}");
        for (bad, says) in [
            ("a:b:c", "3 parts"),
            ("a:b:c:d:e:f", "6 parts"),
            (":AK:sk-secret:p", "must not be empty"),
            (
                "a:AK:sk-secret:p:ten",
                "\"ten\" of account \"a\" is not a whole number",
            ),
        ] {
            let e = Cli::try_parse_from(["x", "--account", bad])
                .err()
                .unwrap()
                .to_string();
            assert!(e.contains(says), "{bad}: {e}");
            assert!(!e.contains("sk-secret"), "{bad}: the secret in {e}");
        }
        assert!(
            Cli::try_parse_from(["x", "--metadata-key-lifetime", "20s"]).is_err(),
            "a lifetime needs the metadata stand-in"
        );
        assert_eq!(
            listening_line("127.0.0.1:8086".parse().unwrap(), 12, "demo-app"),
            "recwatch simulator listening on http://127.0.0.1:8086 (12 jobs, app demo-app)"
        );
    }
}
