//! The command line: parse, dispatch, print; one file per command family. Every command
//! returns an exit code: config errors are 78 (EX_CONFIG) so systemd's
//! `RestartPreventExitStatus=78` stops a restart loop, and start-up failures carry their
//! sysexits code ([`crate::exit`], found in the error chain by [`exit_code`]).
//!
//! Output goes through [`emit`], never `println!`: a reader that goes away
//! (`recwatch check | head -1`) ends the command quietly instead of panicking.

use crate::config::{self, Config, ConfigError};
use crate::exit::{EXIT_CONFIG, EXIT_IN_USE, StartError};
use clap::{Parser, Subcommand};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

/// Writes one formatted line to stdout; an error (a closed pipe) is for the caller's `?`.
macro_rules! out {
    ($($arg:tt)*) => { emit(&format!("{}\n", format_args!($($arg)*))) };
}
// A feature's command (`remediation/cli.rs`, `hold/cli.rs`) prints with it too.
pub(crate) use out;

mod callback;
mod check;
#[cfg(feature = "demo")]
pub mod demo;
mod inspect;
// A feature's command reads the database the way every command does.
pub(crate) use inspect::open_existing;
mod online;
mod poll_once;
mod run;
mod storage;
mod test_alert;
mod watch;

/// Writes `text` to stdout.
pub fn emit(text: &str) -> std::io::Result<()> {
    std::io::stdout().lock().write_all(text.as_bytes())
}

/// A message on stderr that cannot panic, even when stderr is closed.
pub(crate) fn complain(message: &str) {
    let _ = writeln!(std::io::stderr(), "recwatch: {message}");
}

/// True when the error is stdout's reader having gone away.
fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[derive(Parser, Debug)]
#[command(
    name = "recwatch",
    version,
    about = "Watches Huawei Cloud RTC individual stream recording jobs, records every state change in SQLite, and alerts when a recording stops unexpectedly.",
    after_help = "Configuration: --config PATH, else $RECWATCH_CONFIG, else /etc/recwatch/config.toml.\nAny key can be overridden as RECWATCH_<SECTION>__<KEY>, e.g. RECWATCH_API__AUTH__SECRET_KEY.\nTry it with no setup at all: recwatch demo"
)]
pub struct Cli {
    /// Configuration file (TOML).
    #[arg(long, short, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = crate::telemetry::LogFormat::Text)]
    pub log_format: crate::telemetry::LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the daemon: poll every watched job, record changes, send alerts.
    Run,
    /// Validate the configuration and print what it means; exit 0, or 78 with the error.
    Check {
        /// Also make one signed request with the `[api]` account and say whether the endpoint
        /// and the credentials work (78 refused or not the RTC API, 69 unreachable).
        #[arg(long)]
        online: bool,
    },
    /// Poll every job once, record transitions, print a table, deliver the alerts this raised
    /// (waiting up to 30 s), and exit.
    ///
    /// Alerts it cannot deliver within the wait stay in the outbox: `recwatch alerts --pending`
    /// lists them and `recwatch run` sends them when it next starts. Exit 1 if a poll failed or
    /// an alert is still undelivered. Refused (exit 75) while `recwatch run` owns the
    /// database: the daemon is already polling and delivering.
    PollOnce,
    /// Each watched job with its last state, stop reason, last poll and last change.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Recorded transitions, newest first, then the files the jobs recorded (from
    /// RECORD_FILE_COMPLETE callbacks).
    History {
        /// Only this job id.
        #[arg(long, value_name = "JOB_ID")]
        job: Option<String>,
        /// Only transitions observed within this long ago, e.g. 1h, 7d.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
        since: Option<std::time::Duration>,
        /// At most this many rows.
        #[arg(long, default_value_t = 1000)]
        limit: i64,
        /// Only the recorded files (with --json: a JSON array of files instead of transitions).
        #[arg(long)]
        files: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Alerts with their delivery state per channel, newest first.
    Alerts {
        /// Only alerts with a delivery still pending.
        #[arg(long)]
        pending: bool,
        /// At most this many alerts.
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Record callbacks relayed to an app's forward_to, newest first: sent, pending (with the
    /// last error and the next attempt) and dead.
    Forwards {
        /// Only forwards still pending.
        #[arg(long)]
        pending: bool,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// What `[remediate]` re-created (or decided not to), newest first: when, from which job,
    /// with which result and new job id.
    Remediations {
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Silences: hold back the notifications of matching alerts for a while (`silence add`,
    /// `silence list`, `silence expire`). Written to the database, so a running daemon
    /// honours them at its next send.
    Silence(crate::hold::cli::SilenceArgs),
    /// Watch a job from now on (the run-time watch list in the database, source `cli`).
    ///
    /// Works whether or not `recwatch run` is running: a running daemon polls the job within
    /// 2 s, otherwise the next start does. A job the config file has is already watched.
    Watch {
        /// The RTC app's id.
        app_id: String,
        /// The recording job's id.
        job_id: String,
        /// The name alerts and output show (default: the job id).
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// `individual` (the default) or `mix`: a mix-stream job, polled on its own path.
        #[arg(long, value_name = "KIND")]
        kind: Option<String>,
        /// A channel for its alerts (repeat for more; default: every channel).
        #[arg(long, value_name = "CHANNEL")]
        notify: Vec<String>,
        /// The account that polls it, by its `[[accounts]] name` (default: the app's).
        #[arg(long, value_name = "NAME")]
        account: Option<String>,
    },
    /// Stop watching a job added at run time (`watch`, the API or discovery).
    ///
    /// A job of the config file is refused: edit the file. A running daemon stops polling the
    /// job within 2 s.
    Unwatch {
        /// The RTC app's id.
        app_id: String,
        /// The recording job's id.
        job_id: String,
    },
    /// Send a test notification through each channel and report each result.
    TestAlert {
        /// Only this channel.
        #[arg(long, value_name = "NAME")]
        channel: Option<String>,
    },
    /// An app's record-callback URL at RTC: `show` it, or `set` it to recwatch's receiver.
    Callback {
        #[command(subcommand)]
        command: callback::CallbackCommand,
    },
    /// Copy the SQLite database to PATH, safe while `recwatch run` is running (SQLite's online
    /// backup: a consistent copy, the daemon goes on writing). PATH must not exist. On
    /// PostgreSQL, use pg_dump.
    Backup {
        /// The new file (never overwritten).
        path: PathBuf,
    },
    /// Move a recwatch database between SQLite and PostgreSQL (`storage copy`).
    Storage {
        #[command(subcommand)]
        command: storage::StorageCommand,
    },
    /// Run a fake RTC API (for the demo, tests and benchmarks).
    #[cfg(feature = "demo")]
    Simulate(Box<recwatch_sim::SimulateArgs>),
    /// Start the simulator and the daemon against it and show changes and alerts live.
    #[cfg(feature = "demo")]
    Demo(demo::DemoArgs),
}

pub(crate) fn parse_duration_arg(s: &str) -> Result<std::time::Duration, String> {
    config::parse_duration(s)
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    crate::memory::limit_arenas();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            complain(&format!("cannot start the async runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(dispatch(cli))
}

fn load(cli: &Cli) -> Result<Config, ExitCode> {
    let path = config::resolve_path(cli.config.as_deref());
    config::load(&path).map_err(|e| config_error(&e))
}

/// [`load`], with `beside` run while the file's jobs are read (see [`config::load_beside`]).
fn load_beside<T: Send>(
    cli: &Cli,
    beside: impl FnOnce(&config::StorageConfig) -> T + Send,
) -> Result<(Config, Option<T>), ExitCode> {
    let path = config::resolve_path(cli.config.as_deref());
    config::load_beside(&path, beside).map_err(|e| config_error(&e))
}

pub(crate) fn config_error(e: &ConfigError) -> ExitCode {
    complain(&format!("configuration error: {e}"));
    ExitCode::from(EXIT_CONFIG)
}

/// The error chain on stderr, and the exit code it means (1 unless a start-up or config
/// error in the chain says otherwise).
fn fail(e: anyhow::Error) -> ExitCode {
    if broken_pipe(&e) {
        return ExitCode::SUCCESS;
    }
    complain(&format!("error: {e:#}"));
    ExitCode::from(exit_code(&e).unwrap_or(1))
}

/// The exit code an error chain means, if any link of it is a start-up or config error.
pub fn exit_code(e: &anyhow::Error) -> Option<u8> {
    e.chain().find_map(|c| {
        if let Some(s) = c.downcast_ref::<StartError>() {
            Some(s.exit)
        } else if c.downcast_ref::<ConfigError>().is_some() {
            Some(EXIT_CONFIG)
        } else if c
            .downcast_ref::<crate::dbfile::lock::DatabaseInUse>()
            .is_some()
        {
            Some(EXIT_IN_USE)
        } else {
            None
        }
    })
}

async fn dispatch(cli: Cli) -> ExitCode {
    let cli = match without_config(cli).await {
        Ok(code) => return code,
        Err(cli) => cli,
    };
    // `status` reads the jobs' rows while the configuration's jobs are read (issue 23, item 7:
    // at 100,000 jobs each was a third of the command, one after the other).
    let loaded = match cli.command {
        Command::Status { .. } => load_beside(&cli, crate::store::JobStatuses::read_ahead),
        _ => load(&cli).map(|c| (c, None)),
    };
    let (config, rows_ahead) = match loaded {
        Ok(c) => c,
        Err(code) => return code,
    };
    crate::telemetry::init(&config.log.level, cli.log_format);
    on_config(cli.command, config, rows_ahead).await
}

/// The commands that read no configuration file (the simulator, the demo, `storage`): run
/// here, their exit code returned; any other command is handed back.
async fn without_config(cli: Cli) -> Result<ExitCode, Cli> {
    match &cli.command {
        #[cfg(feature = "demo")]
        Command::Simulate(args) => {
            crate::telemetry::init(
                &crate::telemetry::LogFilter::from_static("info"),
                cli.log_format,
            );
            return Ok(recwatch_sim::run((**args).clone())
                .await
                .map(|_| ExitCode::SUCCESS)
                .unwrap_or_else(fail));
        }
        #[cfg(feature = "demo")]
        Command::Demo(args) => {
            return Ok(demo::run(args.clone())
                .await
                .map(|_| ExitCode::SUCCESS)
                .unwrap_or_else(fail));
        }
        Command::Storage { .. } => {
            crate::telemetry::init(
                &crate::telemetry::LogFilter::from_static("warn"),
                cli.log_format,
            );
            let Command::Storage { command } = cli.command else {
                unreachable!("matched above")
            };
            return Ok(storage::storage(command).await.unwrap_or_else(fail));
        }
        _ => {}
    }
    Err(cli)
}

/// A command on the loaded configuration, one arm per command, each a call into its file
/// (`rows_ahead`: `status`'s rows, read beside the configuration).
async fn on_config(
    command: Command,
    config: Config,
    rows_ahead: Option<Option<crate::store::JobStatuses>>,
) -> ExitCode {
    let result = match command {
        Command::Run => run::run(config).await,
        Command::Check { online } => {
            return check::check(&config, online).await.unwrap_or_else(fail);
        }
        Command::PollOnce => poll_once::poll_once(&config).await,
        Command::Status { json } => {
            let shown = inspect::status(&config, json, rows_ahead.flatten()).await;
            // The process ends here: freeing 100,000 jobs' configuration one allocation at a
            // time was ~45 M instructions of `status` (issue 23, item 7). Nothing in it has
            // a destructor that matters (no file, no lock, no secret wiped on drop).
            std::mem::forget(config);
            shown
        }
        Command::History {
            job,
            since,
            limit,
            files,
            json,
        } => {
            let what = inspect::HistoryOf { job, since, limit };
            inspect::history(&config, what, files, json).await
        }
        Command::Alerts {
            pending,
            limit,
            json,
        } => inspect::alerts(&config, pending, limit, json).await,
        Command::Forwards {
            pending,
            limit,
            json,
        } => inspect::forwards(&config, pending, limit, json).await,
        Command::Remediations { limit, json } => {
            crate::remediation::cli::remediations(&config, limit, json).await
        }
        Command::Callback { command } => callback::callback(&config, command).await,
        Command::Backup { path } => storage::backup(&config, &path).await,
        Command::Silence(args) => {
            return crate::hold::cli::silence(&config, args)
                .await
                .unwrap_or_else(fail);
        }
        Command::Watch {
            app_id,
            job_id,
            name,
            kind,
            notify,
            account,
        } => {
            let entry = watch::Entry {
                name,
                kind,
                notify,
                account,
            };
            watch::watch(&config, crate::domain::JobKey::new(app_id, job_id), entry).await
        }
        Command::Unwatch { app_id, job_id } => watch::unwatch(&config, app_id, job_id).await,
        Command::TestAlert { channel } => {
            return test_alert::test_alert(&config, channel.as_deref())
                .await
                .unwrap_or_else(fail);
        }
        Command::Storage { .. } => unreachable!("handled above"),
        #[cfg(feature = "demo")]
        Command::Simulate(_) | Command::Demo(_) => unreachable!("handled above"),
    };
    result.map(|_| ExitCode::SUCCESS).unwrap_or_else(fail)
}

/// Prints rows as left-aligned columns; the last column is not padded. Every cell passes
/// [`shown`] first: a cell holds text from outside (an API description, a receiver's error),
/// and a raw LF, ESC or NUL in it would forge rows or drive the terminal.
pub fn print_table<S: AsRef<str>>(rows: &[impl AsRef<[S]>]) -> std::io::Result<()> {
    table_twice(|| rows.iter().map(|r| r.as_ref().iter().map(AsRef::as_ref)))
}

/// [`print_table`] of the rows `rows` makes, asked for twice (every cell's width, then the
/// lines) rather than held in a list of cells. So `rows` must make the same rows each time.
fn table_twice<'c, R>(rows: impl Fn() -> R) -> std::io::Result<()>
where
    R: Iterator,
    R::Item: IntoIterator<Item = &'c str>,
{
    let mut widths: Vec<usize> = Vec::new();
    for r in rows() {
        for (i, c) in r.into_iter().enumerate() {
            let w = cell(c).1;
            if i == widths.len() {
                widths.push(0);
            }
            widths[i] = widths[i].max(w);
        }
    }
    const SPACES: &str = "                                ";
    // One buffered writer: stdout alone is line-buffered, a write per row.
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut line = String::new();
    for r in rows() {
        line.clear();
        // The padding after a cell is pushed before the next one: the last is not padded.
        let mut pad = 0;
        for (i, c) in r.into_iter().enumerate() {
            while pad > 0 {
                let n = pad.min(SPACES.len());
                line.push_str(&SPACES[..n]);
                pad -= n;
            }
            let (c, w) = cell(c);
            line.push_str(&c);
            // Left-aligned in its column (as `{:<w$}`, by characters), two spaces after.
            pad = widths[i].saturating_sub(w) + 2;
        }
        out.write_all(line.trim_end().as_bytes())?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// [`print_table`] of `n` rows, row `i` made by `row(i)` (the same row each time it is
/// asked for), none of them held: the widths counted over two halves and the lines made a
/// page at a time, each on two threads at once (`status` at 100,000 jobs: its table was
/// ~145 M instructions on one thread while the other core waited, and held 900,000 cells,
/// ~58 MB the kernel handed over a page at a time; issue 23, item 7).
pub fn print_table_split<'c, const N: usize>(
    n: usize,
    row: impl Fn(usize) -> [&'c str; N] + Sync,
) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    table_split_to(&mut out, n, row)?;
    out.flush()
}

/// [`print_table_split`] into `out`.
fn table_split_to<'c, const N: usize>(
    out: &mut impl std::io::Write,
    n: usize,
    row: impl Fn(usize) -> [&'c str; N] + Sync,
) -> std::io::Result<()> {
    let widths_of = |range: std::ops::Range<usize>| {
        let mut widths = [0usize; N];
        for i in range {
            for (w, c) in widths.iter_mut().zip(row(i)) {
                *w = (*w).max(cell(c).1);
            }
        }
        widths
    };
    let widths = std::thread::scope(|s| {
        let second = s.spawn(|| widths_of(n / 2..n));
        let mut widths = widths_of(0..n / 2);
        let second = second
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        for (w, o) in widths.iter_mut().zip(second) {
            *w = (*w).max(o);
        }
        widths
    });
    const PAGE: usize = 1000;
    const SPACES: &[u8] = b"                                ";
    let page = |p: usize, text: &mut Vec<u8>| -> std::io::Result<()> {
        for i in p * PAGE..((p + 1) * PAGE).min(n) {
            let start = text.len();
            // The padding after a cell is pushed before the next one: the last is not padded.
            let mut pad = 0;
            for (c, w) in row(i).into_iter().zip(widths) {
                while pad > 0 {
                    let k = pad.min(SPACES.len());
                    text.extend_from_slice(&SPACES[..k]);
                    pad -= k;
                }
                let (c, cw) = cell(c);
                text.extend_from_slice(c.as_bytes());
                // Left-aligned in its column (as `{:<w$}`, by characters), two spaces after.
                pad = w.saturating_sub(cw) + 2;
            }
            // The line without what it ends with that is white space, as `print_table`.
            let line = std::str::from_utf8(&text[start..]).map_err(std::io::Error::other)?;
            let kept = line.trim_end().len();
            text.truncate(start + kept);
            text.push(b'\n');
        }
        Ok(())
    };
    crate::status::write_pages(n.div_ceil(PAGE), page, out)
}

/// A cell as [`print_table`] shows it ([`shown`]) and its width in characters: printable
/// ASCII (most cells) as it is, a character a byte, without a look at each character (issue
/// 23, item 7).
fn cell(c: &str) -> (std::borrow::Cow<'_, str>, usize) {
    if crate::domain::words::printable(c.as_bytes()) {
        return (std::borrow::Cow::Borrowed(c), c.len());
    }
    let c = shown(c);
    let w = if c.is_ascii() {
        c.len()
    } else {
        c.chars().count()
    };
    (c, w)
}

/// Text from outside as a terminal may show it: control characters escaped visibly (`\n`,
/// `\0`, `\u{1b}` for ESC), so one value stays one cell on one line. The one escaping
/// function the logs use too.
pub fn shown(text: &str) -> std::borrow::Cow<'_, str> {
    crate::telemetry::escape_controls(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::EXIT_CANTCREAT;

    /// Issue 23, item 7: a table made a page at a time on two threads, its widths counted
    /// over two halves, is the table as one thread lays it out: each cell shown escaped,
    /// padded by characters to its column's widest, two spaces between columns, each line's
    /// end trimmed, the pages in order.
    #[test]
    fn a_table_split_over_two_threads_is_the_table_one_thread_makes() {
        // Three pages and a part (the second thread makes the second and the fourth); the
        // widest cells in the second half, one wider than the padding's slice; cells that
        // are escaped, not ASCII, empty or end in a space.
        let rows: Vec<[String; 4]> = (0..3_345)
            .map(|i| {
                [
                    if i == 0 {
                        "NAME".into()
                    } else {
                        format!("job {i}")
                    },
                    match i {
                        2_001 => "x".repeat(70),
                        1_500 => "雪 é".into(),
                        7 => "a\nb\u{1b}[2J".into(),
                        _ => "-".into(),
                    },
                    if i % 5 == 0 {
                        String::new()
                    } else {
                        "mid ".into()
                    },
                    match i % 3 {
                        0 => String::new(),
                        1 => "end ".into(),
                        _ => format!("end {i}"),
                    },
                ]
            })
            .collect();
        let mut got = Vec::new();
        table_split_to(&mut got, rows.len(), |i| {
            let r = &rows[i];
            [&*r[0], &*r[1], &*r[2], &*r[3]]
        })
        .unwrap();

        let cells: Vec<Vec<String>> = rows
            .iter()
            .map(|r| r.iter().map(|c| shown(c).into_owned()).collect())
            .collect();
        let widths: Vec<usize> = (0..4)
            .map(|j| cells.iter().map(|r| r[j].chars().count()).max().unwrap())
            .collect();
        let mut want = String::new();
        for r in &cells {
            let mut line = String::new();
            for (j, c) in r.iter().enumerate() {
                if j + 1 < r.len() {
                    line += &format!("{c:<w$}  ", w = widths[j]);
                } else {
                    line += c;
                }
            }
            want += line.trim_end();
            want.push('\n');
        }
        assert_eq!(widths[1], 70);
        assert_eq!(String::from_utf8(got).unwrap(), want);
    }

    #[test]
    fn a_cell_shows_control_characters_escaped() {
        let cases = [
            ("plain text", "plain", "plain"),
            ("a line feed", "a\nb", "a\\nb"),
            ("an escape sequence", "\u{1b}[31mred", "\\u{1b}[31mred"),
            ("a nul", "a\0b", "a\\0b"),
            ("a carriage return", "ok\rFAKE", "ok\\rFAKE"),
            (
                "non-ASCII stays",
                "enregistrement \u{e9}",
                "enregistrement \u{e9}",
            ),
        ];
        for (name, input, want) in cases {
            assert_eq!(shown(input), want, "{name}");
        }
    }

    #[test]
    fn exit_codes_are_found_in_the_chain() {
        let e = anyhow::Error::new(StartError::cantcreat("x".into())).context("opening");
        assert_eq!(exit_code(&e), Some(EXIT_CANTCREAT));
        let e = anyhow::Error::new(crate::config::ConfigError {
            location: "a".into(),
            message: "b".into(),
        });
        assert_eq!(exit_code(&e), Some(EXIT_CONFIG));
        assert_eq!(exit_code(&anyhow::anyhow!("other")), None);
    }
}
