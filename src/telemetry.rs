//! Logging: one `tracing` subscriber writing to stderr, set up once at start.
//!
//! How it writes depends on where stderr goes. Under systemd, stderr is a stream socket into
//! journald, which stamps every line itself and shows escape codes literally, so we drop our
//! timestamp and colours and instead start each line with a `<N>` syslog priority prefix, which
//! journald strips and stores as the entry's priority (`journalctl -p warning` then works).
//! On a terminal we colour; into a file or pipe we do not. `--log-format json` writes one JSON
//! object per line for log shippers. The choice is made by [`decide`], a function of the
//! environment, so it is tested without touching the process's real environment.
//!
//! Log lines carry text from outside (an API's `error_code`, a receiver's answer). In the text
//! format every line passes through [`safe_line`]: control characters are written as escapes, so
//! a CRLF cannot forge a second line and a NUL cannot reach the journal, and a line is cut at
//! [`MAX_LINE_CHARS`]. JSON lines are escaped by the serializer already.

pub mod summary;

use std::borrow::Cow;
use std::fmt;
use std::io;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry};

/// tokio-cron-scheduler logs every tick at INFO, and sqlx each PostgreSQL notice (such as
/// "relation _sqlx_migrations already exists, skipping" on every command); keep them to
/// warnings unless `RUST_LOG` says otherwise.
const QUIET_CRATES: LogFilter =
    LogFilter::from_static("tokio_cron_scheduler=warn,sqlx::postgres::notice=warn");

/// A log filter (`EnvFilter` directives, e.g. `"info"` or `"recwatch=debug,warn"`) known to
/// parse: the config's `[log] level` is checked once at load, and the subscriber is built
/// from it without a second chance to fail. Kept as text because `EnvFilter` is neither
/// `Clone` nor comparable, and a reload compares the old level with the new.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogFilter(Cow<'static, str>);

/// Why a filter was refused.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct LogFilterError(#[from] tracing_subscriber::filter::ParseError);

impl LogFilter {
    pub fn parse(text: &str) -> Result<LogFilter, LogFilterError> {
        EnvFilter::try_new(text)?;
        Ok(LogFilter(Cow::Owned(text.to_string())))
    }

    /// A filter written in the code; checked by the tests that use it, not at run time.
    pub const fn from_static(text: &'static str) -> LogFilter {
        LogFilter(Cow::Borrowed(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `self` followed by `more`: two lists of directives that parse make one that does.
    fn then(&self, more: &LogFilter) -> LogFilter {
        if self.0.is_empty() {
            return more.clone();
        }
        LogFilter(Cow::Owned(format!("{},{}", self.0, more.0)))
    }

    fn env_filter(&self) -> EnvFilter {
        // `new` skips a directive it cannot parse; every one here parsed when made.
        EnvFilter::new(self.as_str())
    }
}

impl fmt::Display for LogFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The longest text log line; the rest is cut with a note of how much.
pub const MAX_LINE_CHARS: usize = 8 * 1024;

/// `text` with every control character written as an escape (`\r`, `\n`, `\0`, `\u{1b}`).
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    // Printable ASCII, the common text, eight bytes at a time (every cell of `status`'s table
    // at 100,000 jobs comes through here: a byte at a time it was ~80 M instructions).
    if crate::domain::words::printable(text.as_bytes()) || !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        push_escaped(&mut out, c);
    }
    Cow::Owned(out)
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\0' => out.push_str("\\0"),
        c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
        c => out.push(c),
    }
}

/// One formatted log line made safe to write: control characters escaped except the final
/// newline and, when `ansi`, our own colour codes (`ESC [ digits ; m`); longer than `max`
/// characters, cut with a note. Pure, so it is tested on its own.
pub fn safe_line(line: &str, ansi: bool, max: usize) -> String {
    let (body, newline) = match line.strip_suffix('\n') {
        Some(b) => (b, "\n"),
        None => (line, ""),
    };
    let mut out = String::with_capacity(body.len().min(max) + 16);
    let mut chars = body.char_indices().peekable();
    let mut shown = 0;
    while let Some((i, c)) = chars.next() {
        if shown >= max {
            out.push_str(&format!(" … ({} more bytes cut)", body.len() - i));
            if ansi {
                out.push_str("\x1b[0m");
            }
            break;
        }
        if c == '\x1b' && ansi {
            if let Some(len) = sgr_len(&body[i..]) {
                out.push_str(&body[i..i + len]);
                for _ in 1..len {
                    chars.next();
                }
                continue;
            }
        }
        push_escaped(&mut out, c);
        shown += 1;
    }
    out.push_str(newline);
    out
}

/// The length of an SGR colour sequence (`ESC [ 0-9; m`) at the start of `s`, if there is one.
fn sgr_len(s: &str) -> Option<usize> {
    let rest = s.strip_prefix("\x1b[")?;
    let params = rest
        .bytes()
        .take_while(|b| b.is_ascii_digit() || *b == b';')
        .count();
    (rest.as_bytes().get(params) == Some(&b'm')).then_some(2 + params + 1)
}

/// Wraps a writer so each formatted event goes through [`safe_line`]. The fmt layer formats a
/// whole event into a buffer and writes it with one `write_all`, so each `write` is one line.
struct SafeLines<M> {
    inner: M,
    ansi: bool,
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for SafeLines<M> {
    type Writer = SafeLine<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        SafeLine {
            inner: self.inner.make_writer(),
            ansi: self.ansi,
        }
    }
}

struct SafeLine<W> {
    inner: W,
    ansi: bool,
}

impl<W: io::Write> io::Write for SafeLine<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let line = safe_line(&String::from_utf8_lossy(buf), self.ansi, MAX_LINE_CHARS);
        self.inner.write_all(line.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The line format on stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// What [`decide`] looks at, read from the process by [`Environment::current`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Environment {
    /// `RUST_LOG`, if set.
    pub rust_log: Option<String>,
    /// `JOURNAL_STREAM` (`DEVICE:INODE` of the journald socket), if set.
    pub journal_stream: Option<String>,
    /// The device and inode number of stderr, if it could be stat'ed.
    pub stderr_id: Option<(u64, u64)>,
    pub stderr_is_terminal: bool,
    /// `NO_COLOR` is set to a non-empty value (<https://no-color.org>).
    pub no_color: bool,
}

impl Environment {
    pub fn current() -> Environment {
        use std::io::IsTerminal;
        let var = |name: &str| std::env::var(name).ok();
        Environment {
            rust_log: var("RUST_LOG"),
            journal_stream: var("JOURNAL_STREAM"),
            stderr_id: stderr_id(),
            stderr_is_terminal: std::io::stderr().is_terminal(),
            no_color: var("NO_COLOR").is_some_and(|v| !v.is_empty()),
        }
    }
}

fn stderr_id() -> Option<(u64, u64)> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let fd = std::io::stderr().as_fd().try_clone_to_owned().ok()?;
    let meta = std::fs::File::from(fd).metadata().ok()?;
    Some((meta.dev(), meta.ino()))
}

/// How the subscriber is built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub filter: LogFilter,
    pub format: LogFormat,
    pub ansi: bool,
    pub timestamps: bool,
    /// stderr is journald's stream: prefix lines with `<N>` priorities.
    pub journald: bool,
    /// A `RUST_LOG` that did not parse, to be reported once logging works.
    pub rejected_rust_log: Option<String>,
}

/// Chooses the settings. `level` is the config's `[log] level`.
pub fn decide(level: &LogFilter, format: LogFormat, env: &Environment) -> Settings {
    let rust_log = env
        .rust_log
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let (base, rejected_rust_log) = match rust_log.map(|r| (r, LogFilter::parse(r))) {
        Some((_, Ok(r))) => (r, None),
        Some((r, Err(_))) => (level.clone(), Some(r.to_string())),
        None => (level.clone(), None),
    };
    let filter = if base.as_str().contains("tokio_cron_scheduler") {
        base
    } else {
        base.then(&QUIET_CRATES)
    };
    // systemd.exec(5): compare JOURNAL_STREAM with stderr, because the variable is inherited
    // by anything the service starts and stays set when stderr is redirected.
    let journald = match (env.journal_stream.as_deref(), env.stderr_id) {
        (Some(js), Some(id)) => parse_journal_stream(js) == Some(id),
        _ => false,
    };
    Settings {
        filter,
        format,
        ansi: format == LogFormat::Text && !journald && env.stderr_is_terminal && !env.no_color,
        // A JSON object is a record on its own, wherever it ends up; it keeps its timestamp.
        timestamps: !journald || format == LogFormat::Json,
        journald,
        rejected_rust_log,
    }
}

fn parse_journal_stream(s: &str) -> Option<(u64, u64)> {
    let (dev, ino) = s.trim().split_once(':')?;
    Some((dev.parse().ok()?, ino.parse().ok()?))
}

/// Starts logging to stderr. `level` is used when `RUST_LOG` is not set. Calling it again
/// does nothing: the first subscriber stays.
pub fn init(level: &LogFilter, format: LogFormat) {
    let settings = decide(level, format, &Environment::current());
    if install(&settings) {
        if let Some(bad) = &settings.rejected_rust_log {
            tracing::warn!(rust_log = %bad, filter = %settings.filter, "RUST_LOG does not parse as a filter; using the configured level instead");
        }
    }
}

/// Installs the global subscriber; false if one was already there.
fn install(s: &Settings) -> bool {
    tracing_subscriber::registry()
        .with(layer(s, std::io::stderr))
        .try_init()
        .is_ok()
}

type BoxedLayer = Box<dyn tracing_subscriber::Layer<Registry> + Send + Sync>;

/// The filtered formatting layer; `writer` is stderr except in tests.
fn layer<W>(s: &Settings, writer: W) -> BoxedLayer
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::Layer as _;
    let filter = s.filter.env_filter();
    let journald = s.journald;
    let layer: BoxedLayer = match s.format {
        LogFormat::Text => {
            let base = tracing_subscriber::fmt::layer()
                .with_writer(SafeLines {
                    inner: writer,
                    ansi: s.ansi,
                })
                .with_ansi(s.ansi);
            if s.timestamps {
                let inner = tracing_subscriber::fmt::format();
                base.event_format(Prefixed { journald, inner }).boxed()
            } else {
                let inner = tracing_subscriber::fmt::format().without_time();
                base.event_format(Prefixed { journald, inner }).boxed()
            }
        }
        LogFormat::Json => {
            let inner = tracing_subscriber::fmt::format().json().flatten_event(true);
            tracing_subscriber::fmt::layer()
                .with_writer(writer)
                .with_ansi(false)
                .json()
                .event_format(Prefixed { journald, inner })
                .boxed()
        }
    };
    // A global filter, not a per-layer one (`with_filter`): a per-layer filter keeps its
    // verdict in a thread-local between `enabled` and the event, and a library that asks
    // `enabled` without logging after it (sqlx's query logger, on PostgreSQL's tokio threads)
    // left a stale verdict that silently dropped the next event on that thread.
    filter.and_then(layer).boxed()
}

/// Wraps an event format, adding the `<N>` priority prefix journald reads when `journald`.
struct Prefixed<F> {
    journald: bool,
    inner: F,
}

impl<S, N, F> FormatEvent<S, N> for Prefixed<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if self.journald {
            write!(writer, "<{}>", syslog_priority(*event.metadata().level()))?;
        }
        self.inner.format_event(ctx, writer, event)
    }
}

/// sd-daemon(3) priorities: err, warning, info, debug.
fn syslog_priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A log sink the tests read back.
    #[derive(Clone, Default)]
    struct Buf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    const STDERR: (u64, u64) = (64769, 1234);

    fn env() -> Environment {
        Environment {
            stderr_id: Some(STDERR),
            ..Environment::default()
        }
    }

    #[test]
    fn settings_follow_the_environment() {
        struct Case {
            name: &'static str,
            level: &'static str,
            format: LogFormat,
            env: Environment,
            filter: &'static str,
            ansi: bool,
            timestamps: bool,
            journald: bool,
        }
        let under_systemd = Environment {
            journal_stream: Some("64769:1234".into()),
            ..env()
        };
        let terminal = Environment {
            stderr_is_terminal: true,
            ..env()
        };
        let cases = [
            Case {
                name: "terminal: colours and timestamps",
                level: "info",
                format: LogFormat::Text,
                env: terminal.clone(),
                filter: "info,tokio_cron_scheduler=warn,sqlx::postgres::notice=warn",
                ansi: true,
                timestamps: true,
                journald: false,
            },
            Case {
                name: "pipe or file: no colours",
                level: "info",
                format: LogFormat::Text,
                env: env(),
                filter: "info,tokio_cron_scheduler=warn,sqlx::postgres::notice=warn",
                ansi: false,
                timestamps: true,
                journald: false,
            },
            Case {
                name: "NO_COLOR on a terminal",
                level: "info",
                format: LogFormat::Text,
                env: Environment {
                    no_color: true,
                    ..terminal.clone()
                },
                filter: "info,tokio_cron_scheduler=warn,sqlx::postgres::notice=warn",
                ansi: false,
                timestamps: true,
                journald: false,
            },
            Case {
                name: "journald: no colours, no timestamp, priority prefix",
                level: "debug",
                format: LogFormat::Text,
                env: under_systemd.clone(),
                filter: "debug,tokio_cron_scheduler=warn,sqlx::postgres::notice=warn",
                ansi: false,
                timestamps: false,
                journald: true,
            },
            Case {
                name: "JOURNAL_STREAM inherited but stderr redirected elsewhere",
                level: "info",
                format: LogFormat::Text,
                env: Environment {
                    stderr_id: Some((64769, 99)),
                    ..under_systemd.clone()
                },
                filter: "info,tokio_cron_scheduler=warn,sqlx::postgres::notice=warn",
                ansi: false,
                timestamps: true,
                journald: false,
            },
            Case {
                name: "JOURNAL_STREAM unparsable",
                level: "info",
                format: LogFormat::Text,
                env: Environment {
                    journal_stream: Some("garbage".into()),
                    ..env()
                },
                filter: "info,tokio_cron_scheduler=warn,sqlx::postgres::notice=warn",
                ansi: false,
                timestamps: true,
                journald: false,
            },
            Case {
                name: "json under journald keeps its timestamp field",
                level: "info",
                format: LogFormat::Json,
                env: under_systemd.clone(),
                filter: "info,tokio_cron_scheduler=warn,sqlx::postgres::notice=warn",
                ansi: false,
                timestamps: true,
                journald: true,
            },
            Case {
                name: "json on a terminal: never ANSI",
                level: "info",
                format: LogFormat::Json,
                env: terminal.clone(),
                filter: "info,tokio_cron_scheduler=warn,sqlx::postgres::notice=warn",
                ansi: false,
                timestamps: true,
                journald: false,
            },
            Case {
                name: "RUST_LOG wins over the level",
                level: "info",
                format: LogFormat::Text,
                env: Environment {
                    rust_log: Some("recwatch=trace".into()),
                    ..env()
                },
                filter: "recwatch=trace,tokio_cron_scheduler=warn,sqlx::postgres::notice=warn",
                ansi: false,
                timestamps: true,
                journald: false,
            },
            Case {
                name: "RUST_LOG naming the scheduler is left alone",
                level: "info",
                format: LogFormat::Text,
                env: Environment {
                    rust_log: Some("debug,tokio_cron_scheduler=debug".into()),
                    ..env()
                },
                filter: "debug,tokio_cron_scheduler=debug",
                ansi: false,
                timestamps: true,
                journald: false,
            },
            Case {
                name: "empty RUST_LOG counts as unset",
                level: "warn",
                format: LogFormat::Text,
                env: Environment {
                    rust_log: Some("  ".into()),
                    ..env()
                },
                filter: "warn,tokio_cron_scheduler=warn,sqlx::postgres::notice=warn",
                ansi: false,
                timestamps: true,
                journald: false,
            },
            Case {
                name: "bad RUST_LOG falls back to the level",
                level: "info",
                format: LogFormat::Text,
                env: Environment {
                    rust_log: Some("recwatch=[".into()),
                    ..env()
                },
                filter: "info,tokio_cron_scheduler=warn,sqlx::postgres::notice=warn",
                ansi: false,
                timestamps: true,
                journald: false,
            },
        ];
        for c in cases {
            let s = decide(&LogFilter::parse(c.level).unwrap(), c.format, &c.env);
            assert_eq!(s.filter.as_str(), c.filter, "{}: filter", c.name);
            assert_eq!(s.format, c.format, "{}: format", c.name);
            assert_eq!(s.ansi, c.ansi, "{}: ansi", c.name);
            assert_eq!(s.timestamps, c.timestamps, "{}: timestamps", c.name);
            assert_eq!(s.journald, c.journald, "{}: journald", c.name);
        }
    }

    #[test]
    fn a_rejected_rust_log_is_kept_for_the_warning() {
        let e = Environment {
            rust_log: Some("recwatch=[".into()),
            ..env()
        };
        assert_eq!(
            decide(&LogFilter::from_static("info"), LogFormat::Text, &e)
                .rejected_rust_log
                .as_deref(),
            Some("recwatch=[")
        );
        let e = Environment {
            rust_log: Some("debug".into()),
            ..env()
        };
        assert_eq!(
            decide(&LogFilter::from_static("info"), LogFormat::Text, &e).rejected_rust_log,
            None
        );
    }

    #[test]
    fn priorities_match_sd_daemon() {
        let got: Vec<u8> = [
            Level::ERROR,
            Level::WARN,
            Level::INFO,
            Level::DEBUG,
            Level::TRACE,
        ]
        .map(syslog_priority)
        .into();
        assert_eq!(got, [3, 4, 6, 7, 7]);
    }

    /// The filters written in the code parse (`from_static` does not check), and a filter
    /// that does not is refused when made, not when the subscriber is built.
    #[test]
    fn log_filters_table() {
        let quiet = QUIET_CRATES;
        let cases: &[(&str, &str, bool)] = &[
            ("the scheduler's quieting", quiet.as_str(), true),
            ("a level", "info", true),
            ("levels per target", "recwatch=debug,warn", true),
            ("the demo's", "error,recwatch::outbox=off", true),
            ("empty: everything at the default", "", true),
            ("an unclosed span filter", "recwatch=[", false),
            ("no such level", "==", false),
        ];
        for (name, text, ok) in cases {
            assert_eq!(LogFilter::parse(text).is_ok(), *ok, "{name}");
        }
    }

    #[test]
    fn init_twice_is_harmless() {
        // "error" keeps the other tests' log lines out of the test output.
        init(&LogFilter::from_static("error"), LogFormat::Text);
        init(&LogFilter::from_static("debug"), LogFormat::Json);
    }

    /// Formats one event per level with `settings` and returns the output.
    fn render(settings: &Settings) -> String {
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::registry().with(layer(settings, move || out.clone()));
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(job = "j1", "stopped");
            tracing::info!("polled");
            tracing::debug!("hidden at info");
            tracing::info!(target: "tokio_cron_scheduler", "tick");
        });
        String::from_utf8(buf.0.lock().unwrap().clone()).unwrap()
    }

    /// A library asking whether a level is enabled without logging after it (sqlx's query
    /// logger does, before every statement) must not cost the next event its line. With the
    /// filter per layer, the stale verdict dropped every event after such a question.
    #[test]
    fn asking_whether_a_disabled_target_is_enabled_loses_no_later_line() {
        let settings = decide(&LogFilter::from_static("info"), LogFormat::Text, &env());
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::registry().with(layer(&settings, move || out.clone()));
        tracing::subscriber::with_default(subscriber, || {
            // As the `log` bridge asks for sqlx's `log_enabled!`: the dispatcher directly.
            let span = tracing::debug_span!(target: "sqlx::query", "statement");
            let meta = span.metadata().expect("a disabled span keeps its metadata");
            for n in 0..3 {
                let _ = tracing::dispatcher::get_default(|d| d.enabled(meta));
                tracing::info!(n, "after the question");
            }
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.matches("after the question").count(), 3, "{text}");
    }

    #[test]
    fn journald_lines_carry_a_priority_and_no_timestamp() {
        let settings = decide(
            &LogFilter::from_static("info"),
            LogFormat::Text,
            &Environment {
                journal_stream: Some("64769:1234".into()),
                ..env()
            },
        );
        let out = render(&settings);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert!(lines[0].starts_with("<3>ERROR "), "{out}");
        assert!(lines[0].contains("job=\"j1\""), "{out}");
        assert!(lines[1].starts_with("<6> INFO "), "{out}");
        assert!(!out.contains('\x1b'), "no colours: {out}");
    }

    #[test]
    fn json_is_one_object_per_line() {
        let out = render(&decide(
            &LogFilter::from_static("info"),
            LogFormat::Json,
            &env(),
        ));
        let lines: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).expect(l))
            .collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert_eq!(lines[0]["level"], "ERROR");
        assert_eq!(lines[0]["message"], "stopped");
        assert_eq!(lines[0]["job"], "j1");
        assert!(lines[0]["timestamp"].is_string());
    }

    #[test]
    fn text_off_systemd_has_a_timestamp_and_no_prefix() {
        let out = render(&decide(
            &LogFilter::from_static("info"),
            LogFormat::Text,
            &env(),
        ));
        let first = out.lines().next().unwrap();
        assert!(
            first.as_bytes()[0].is_ascii_digit(),
            "starts with the time: {out}"
        );
        assert!(!out.contains("tick"), "the scheduler is filtered: {out}");
    }

    #[test]
    fn log_format_parses_from_the_command_line() {
        use clap::ValueEnum;
        assert_eq!(LogFormat::from_str("text", false), Ok(LogFormat::Text));
        assert_eq!(LogFormat::from_str("json", false), Ok(LogFormat::Json));
        assert!(LogFormat::from_str("yaml", false).is_err());
    }

    #[test]
    fn safe_line_table() {
        struct Case {
            name: &'static str,
            line: &'static str,
            ansi: bool,
            max: usize,
            want: &'static str,
        }
        let cases = [
            Case {
                name: "plain line kept, newline kept",
                line: "INFO polled\n",
                ansi: false,
                max: 100,
                want: "INFO polled\n",
            },
            Case {
                name: "CRLF cannot forge a second line",
                line: "WARN code=RTC.1\r\nERROR forged\n",
                ansi: false,
                max: 100,
                want: "WARN code=RTC.1\\r\\nERROR forged\n",
            },
            Case {
                name: "NUL and other controls escaped",
                line: "a\0b\x07c\x7f\n",
                ansi: false,
                max: 100,
                want: "a\\0b\\u{7}c\\u{7f}\n",
            },
            Case {
                name: "escape sequences escaped without colours",
                line: "\x1b[31mred\n",
                ansi: false,
                max: 100,
                want: "\\u{1b}[31mred\n",
            },
            Case {
                name: "our colour codes kept on a terminal",
                line: "\x1b[2m12:00\x1b[0m \x1b[32m INFO\x1b[0m ok\n",
                ansi: true,
                max: 100,
                want: "\x1b[2m12:00\x1b[0m \x1b[32m INFO\x1b[0m ok\n",
            },
            Case {
                name: "a cursor move is not a colour",
                line: "x\x1b[2Jy\n",
                ansi: true,
                max: 100,
                want: "x\\u{1b}[2Jy\n",
            },
            Case {
                name: "long line cut",
                line: "0123456789abcdef\n",
                ansi: false,
                max: 10,
                want: "0123456789 … (6 more bytes cut)\n",
            },
        ];
        for c in cases {
            assert_eq!(safe_line(c.line, c.ansi, c.max), c.want, "{}", c.name);
        }
        assert_eq!(escape_controls("ok"), "ok");
        assert_eq!(escape_controls("a\r\nb"), "a\\r\\nb");
    }

    #[test]
    fn outside_text_in_a_text_log_stays_on_one_bounded_line() {
        let buf = Buf::default();
        let out = buf.clone();
        let settings = decide(&LogFilter::from_static("info"), LogFormat::Text, &env());
        let subscriber = tracing_subscriber::registry().with(layer(&settings, move || out.clone()));
        let code = "RTC.1\r\nERROR forged line\0";
        let huge = "x".repeat(100_000);
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(code = %code, "poll failed: {code}");
            tracing::warn!("answer: {huge}");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].contains("RTC.1\\r\\nERROR forged line\\0"),
            "{text}"
        );
        assert!(!text.contains('\0'));
        assert!(lines[1].chars().count() < MAX_LINE_CHARS + 100, "capped");
        assert!(
            lines[1].ends_with("more bytes cut)"),
            "{}",
            &lines[1][..100]
        );
    }
}
