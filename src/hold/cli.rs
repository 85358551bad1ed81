//! `recwatch silence add | list | expire`: silences written straight into the database, so
//! they work with or without a daemon running; a running daemon's delivery lanes read them
//! before each send, so a new silence holds the very next notification it matches.
//! Also `recwatch check`'s lines for `[[maintenance]]`.

use crate::cli::{complain, emit, open_existing, out, parse_duration_arg, print_table};
use crate::config::Config;
use crate::domain::{Rule, timestamp};
use crate::hold::domain::{Matchers, NewSilence, SilenceEnd, silence_id};
use crate::store::{Expired, Store};
use chrono::{DateTime, Utc};
use clap::{ArgGroup, Args, Subcommand};
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct SilenceArgs {
    #[command(subcommand)]
    pub command: SilenceCommand,
}

#[derive(Subcommand, Debug)]
pub enum SilenceCommand {
    /// Hold back the notifications of the alerts that match, for a while; prints the new
    /// silence's id. The alerts are still recorded (`recwatch alerts` shows them silenced).
    #[command(group(ArgGroup::new("matcher").required(true).multiple(true).args(["app", "job", "rule"])))]
    #[command(group(ArgGroup::new("end").required(true).args(["for_", "until"])))]
    Add {
        /// Only alerts of this app.
        #[arg(long, value_name = "APP_ID")]
        app: Option<String>,
        /// Only alerts of this job.
        #[arg(long, value_name = "JOB_ID")]
        job: Option<String>,
        /// Only alerts of this rule (stopped_unexpectedly, idle_timeout, stopped_by_tenant,
        /// stuck_init, job_not_found, api_unhealthy, poll_failing).
        #[arg(long, value_name = "RULE", value_parser = parse_rule)]
        rule: Option<Rule>,
        /// How long, from now, e.g. 2h, 30m.
        #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration_arg)]
        for_: Option<std::time::Duration>,
        /// Until this time (RFC 3339, e.g. 2026-05-01T08:00:00Z or with an offset).
        #[arg(long, value_name = "RFC3339", value_parser = parse_time)]
        until: Option<DateTime<Utc>>,
        /// Why: whoever finds the silence should know.
        #[arg(long, value_name = "TEXT")]
        comment: String,
        /// Who added it (default: $USER).
        #[arg(long, value_name = "NAME")]
        author: Option<String>,
    },
    /// Silences that are active or pending (with --all, expired ones too).
    List {
        /// Expired silences too.
        #[arg(long)]
        all: bool,
        /// Print JSON (an array of silences) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// End a silence now: what it held back and is still true is sent at once.
    Expire {
        /// The silence's id, as `silence add` printed it.
        id: String,
    },
}

fn parse_rule(s: &str) -> Result<Rule, String> {
    Rule::parse(s).filter(|r| *r != Rule::Test).ok_or_else(|| {
        let names: Vec<&str> = Rule::ALL.iter().map(|r| r.as_str()).collect();
        format!("{s:?} is not a rule; use one of {}", names.join(", "))
    })
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    crate::domain::read_rfc3339(s.trim()).map_err(|e| {
            format!("{s:?} is not an RFC 3339 time ({e}); write e.g. 2026-05-01T08:00:00Z or 2026-05-01T16:00:00+08:00")
        })
}

/// Runs a `silence` command; bad input exits 2, like the command line's own errors.
pub(crate) async fn silence(config: &Config, args: SilenceArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        SilenceCommand::Add {
            app,
            job,
            rule,
            for_,
            until,
            comment,
            author,
        } => {
            let end = match (for_, until) {
                (Some(d), _) => SilenceEnd::For(d),
                (None, Some(t)) => SilenceEnd::Until(t),
                (None, None) => unreachable!("clap requires --for or --until"),
            };
            let author = author.or_else(|| std::env::var("USER").ok());
            let matchers = Matchers {
                app_id: app,
                job_id: job,
                rule,
            };
            let now = Utc::now();
            let new = match NewSilence::new(matchers, None, end, &comment, author.as_deref(), now) {
                Ok(n) => n,
                Err(e) => {
                    complain(&format!("silence add: {e}"));
                    return Ok(ExitCode::from(2));
                }
            };
            let store = Store::open_config(&config.storage).await?;
            let s = store.silences().add(&silence_id(), &new, now).await?;
            let runtime = store.watchlist().all().await?;
            store.close().await;
            out!("{}", s.id)?;
            let watched = config.jobs.iter().map(|j| (j.app_id(), j.job_id())).chain(
                runtime
                    .iter()
                    .map(|r| (r.key.app_id.as_str(), r.key.job_id.as_str())),
            );
            if let Some(w) = s.matchers.unwatched(watched) {
                complain(&format!("warning: {w}"));
            }
            Ok(ExitCode::SUCCESS)
        }
        SilenceCommand::List { all, json } => {
            list(config, all, json).await?;
            Ok(ExitCode::SUCCESS)
        }
        SilenceCommand::Expire { id } => {
            let store = open_existing(config).await?;
            let result = store.silences().expire(&id, Utc::now()).await?;
            store.close().await;
            match result {
                Expired::Now(s) => {
                    out!("{} expired at {}", s.id, timestamp(s.ends_at))?;
                    Ok(ExitCode::SUCCESS)
                }
                Expired::Already(s) => {
                    out!("{} had already ended at {}", s.id, timestamp(s.ends_at))?;
                    Ok(ExitCode::SUCCESS)
                }
                Expired::NotFound => {
                    complain(&format!(
                        "silence expire: no silence {id:?}; `recwatch silence list --all` shows every one"
                    ));
                    Ok(ExitCode::from(1))
                }
            }
        }
    }
}

async fn list(config: &Config, all: bool, json: bool) -> anyhow::Result<()> {
    let store = open_existing(config).await?;
    let now = Utc::now();
    let silences = store.silences().list(all, now).await?;
    store.close().await;
    let views: Vec<_> = silences.into_iter().map(|s| s.view(now)).collect();
    if json {
        out!("{}", serde_json::to_string_pretty(&views)?)?;
        return Ok(());
    }
    let mut rows = vec![
        [
            "ID",
            "STATUS",
            "MATCHES",
            "STARTS_AT",
            "ENDS_AT",
            "AUTHOR",
            "COMMENT",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for v in views {
        let m = &v.silence.matchers;
        let matches = [
            m.app_id.as_ref().map(|a| format!("app={a}")),
            m.job_id.as_ref().map(|j| format!("job={j}")),
            m.rule.map(|r| format!("rule={r}")),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(",");
        rows.push(vec![
            v.silence.id.clone(),
            v.status.as_str().to_string(),
            matches,
            timestamp(v.silence.starts_at),
            timestamp(v.silence.ends_at),
            v.silence.author.clone().unwrap_or_else(|| "-".into()),
            v.silence.comment.clone(),
        ]);
    }
    print_table(&rows)?;
    Ok(())
}

/// `recwatch check`'s lines for `[[maintenance]]`: each window, and whether it is active now
/// or when it next starts.
pub(crate) fn print_check(c: &Config) -> std::io::Result<()> {
    let now = chrono::Utc::now();
    let list = |l: &[String]| match l.is_empty() {
        true => "all".to_string(),
        false => l.join(", "),
    };
    for w in &c.maintenance {
        let when = match (w.active_until(now), w.next_start(now)) {
            (Some(until), _) => format!("active now, until {}", crate::domain::timestamp(until)),
            (None, Some(next)) => format!("next at {}", crate::domain::timestamp(next)),
            (None, None) => "never starts".to_string(),
        };
        out!(
            "  maintenance {:?}: {:?} {} for {} (apps {}, jobs {}); {when}",
            w.name,
            w.schedule.as_str(),
            w.timezone,
            crate::config::format_duration(w.duration),
            list(&w.apps),
            list(&w.jobs)
        )?;
    }
    Ok(())
}
