//! Reading: where the file is, the file itself, the `RECWATCH_<SECTION>__<KEY>` overrides
//! merged over it, and the errors of that stage (syntax, a value from the environment) told
//! so that they name the line or the variable and never show a secret.

use super::defaults::DEFAULT_PATH;
use super::split::Entries;
use super::{Config, ConfigError};
use crate::secret::Redactor;
use serde_json::Value;
use std::fmt;
use std::path::{Path, PathBuf};

const ENV_PREFIX: &str = "RECWATCH_";

/// Where the configuration file is: `--config`, else `$RECWATCH_CONFIG`, else the default.
pub fn resolve_path(flag: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    match std::env::var_os("RECWATCH_CONFIG") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(DEFAULT_PATH),
    }
}

/// Loads the file at `path` under the process environment.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_with_env(path, std::env::vars())
}

/// Loads the file at `path` under the given environment (tests pass their own).
pub fn load_with_env(
    path: &Path,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    let text = read_file(path)?;
    let mut config = parse_str(&text, env, path.parent()).map_err(|e| in_file(e, path))?;
    config.source = Some(path.to_path_buf());
    Ok(config)
}

/// [`load`], with `beside` run on a second thread from the moment the file's `[storage]` is
/// known until its `[[jobs]]` are read: `recwatch status` reads the jobs' rows while a long
/// watch list is read (issue 23, item 7: at 100,000 jobs each was ~0.3 G instructions, one
/// after the other). `beside`'s answer is given only when the configuration is the one it was
/// given the storage of: with a file the lean reader reads (see `lean`), which is where the
/// time is. Any other file is read as [`load`] reads it (`beside` does not run, or its answer
/// is dropped when the lean reader declined only the entries), and the caller does its work
/// after; what either way tells about a broken file is [`load`]'s.
pub fn load_beside<T: Send>(
    path: &Path,
    beside: impl FnOnce(&super::StorageConfig) -> T + Send,
) -> Result<(Config, Option<T>), ConfigError> {
    let text = read_file(path)?;
    let env = Env::of(std::env::vars());
    let base = path.parent();
    let (mut config, t) = match lean_beside(&text, &env, base, Some(beside)) {
        Some(read) => read,
        None => (
            general(&text, env, base).map_err(|e| in_file(e, path))?,
            None,
        ),
    };
    config.source = Some(path.to_path_buf());
    Ok((config, t))
}

/// The file's text, or why it cannot be had.
fn read_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| {
        let fix = if e.kind() == std::io::ErrorKind::NotFound {
            "not found; pass --config PATH, set RECWATCH_CONFIG, or start from config.example.toml"
                .to_string()
        } else {
            format!("cannot be read: {e}")
        };
        ConfigError::new(format!("config file {}", path.display()), fix)
    })
}

/// An error about the text as told about the file at `path`.
fn in_file(e: ConfigError, path: &Path) -> ConfigError {
    // A value that came from the environment is not in the file: the location already
    // names the variable.
    if e.location.starts_with(ENV_PREFIX) {
        e
    } else {
        ConfigError::new(format!("{} in {}", e.location, path.display()), e.message)
    }
}

/// Parses TOML text under the given environment. `base` resolves relative `*_file` paths.
pub fn parse_str(
    text: &str,
    env: impl IntoIterator<Item = (String, String)>,
    base: Option<&Path>,
) -> Result<Config, ConfigError> {
    parse_cut(text, env, base, Reading::Lean)
}

/// How [`parse_cut`] may read the file's `[[jobs]]`: each way falls back on the next on any
/// error or doubt, ending with the whole file as one tree, the path every error takes (tests
/// compare the three).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Reading {
    /// `lean`'s lines first, then `split`'s runs, then the whole file.
    Lean,
    /// `split`'s runs, then the whole file.
    #[cfg(test)]
    Split,
    /// The whole file as one tree.
    Whole,
}

/// The `RECWATCH_*` variables of an environment: the overrides (`RECWATCH_<SECTION>__<KEY>`)
/// and the names of the others, kept (never their values) to be warned about.
struct Env {
    overrides: config::Map<String, String>,
    others: Vec<String>,
}

impl Env {
    fn of(env: impl IntoIterator<Item = (String, String)>) -> Env {
        // Only RECWATCH_<SECTION>__<KEY> variables are overrides; RECWATCH_CONFIG names the
        // file.
        let (overrides, others): (Vec<_>, Vec<_>) = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .partition(|(k, _)| k[ENV_PREFIX.len()..].contains("__"));
        Env {
            overrides: overrides.into_iter().collect(),
            others: others.into_iter().map(|(k, _)| k).collect(),
        }
    }

    /// Whether an override reaches into `jobs`: then the entries are never cut out.
    fn touches_jobs(&self) -> bool {
        self.overrides.keys().any(|v| {
            let path = env_key_path(v);
            path == "jobs" || path.starts_with("jobs.")
        })
    }
}

/// [`parse_str`], reading the `[[jobs]]` as `reading` says.
pub(super) fn parse_cut(
    text: &str,
    env: impl IntoIterator<Item = (String, String)>,
    base: Option<&Path>,
    reading: Reading,
) -> Result<Config, ConfigError> {
    let env = Env::of(env);
    if reading == Reading::Lean {
        let none: Option<fn(&super::StorageConfig)> = None;
        if let Some((config, _)) = lean_beside(text, &env, base, none) {
            return Ok(config);
        }
    }
    if reading == Reading::Whole {
        return whole(text, env, base);
    }
    general(text, env, base)
}

/// The file read by `lean`'s lines, `beside` (if any) running on a second thread while the
/// entries are read, or `None` when the lean reader declines it (a line outside its shape, an
/// override reaching into `jobs`, any error at all: the general path says what is wrong).
fn lean_beside<T: Send>(
    text: &str,
    env: &Env,
    base: Option<&Path>,
    beside: Option<impl FnOnce(&super::StorageConfig) -> T + Send>,
) -> Option<(Config, Option<T>)> {
    if env.touches_jobs() {
        return None;
    }
    let lean = super::lean::cut(text)?;
    // Everything but the entries first, so the storage is known before they are read.
    let mut config = layered(
        &lean.rest,
        text,
        env.overrides.clone(),
        &env.others,
        base,
        Entries::Later,
    )
    .ok()?;
    let Some(beside) = beside else {
        config.jobs = lean.jobs(&config.notify, &config.poll, &mut config.remediate.jobs)?;
        return Some((config, None));
    };
    let (jobs, t) = std::thread::scope(|s| {
        let storage = &config.storage;
        let side = s.spawn(move || beside(storage));
        let jobs = lean.jobs(&config.notify, &config.poll, &mut config.remediate.jobs);
        let t = side
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (jobs, t)
    });
    config.jobs = jobs?;
    Some((config, Some(t)))
}

/// The general path: `split`'s runs, then, on any error or doubt, the whole file as one tree.
fn general(text: &str, env: Env, base: Option<&Path>) -> Result<Config, ConfigError> {
    // The file's `[[jobs]]` apart from the rest when they can be cut out (see `split`) and no
    // override reaches into them. On any error the whole text is read again as below, so what
    // is told about a broken file is what the whole file gives (its line, the first error).
    if !env.touches_jobs() {
        if let Some(split) = super::split::split(text) {
            let entries = Entries::Split(&split);
            if let Ok(config) = layered(
                &split.rest,
                text,
                env.overrides.clone(),
                &env.others,
                base,
                entries,
            ) {
                return Ok(config);
            }
        }
    }
    whole(text, env, base)
}

/// The whole file as one tree: the path every error takes.
fn whole(text: &str, env: Env, base: Option<&Path>) -> Result<Config, ConfigError> {
    // Syntax first, with our own message: the parser's quotes the offending line, which may
    // be a half-typed `secret_key = "...` (the file watcher reloads on every save).
    if let Err(e) = toml::from_str::<toml::Table>(text) {
        return Err(syntax_error(text, &e));
    }
    layered(
        text,
        text,
        env.overrides,
        &env.others,
        base,
        Entries::InTree,
    )
}

/// `doc` (the file `text`, or its text without the `[[jobs]]` in `entries`) layered under the
/// overrides by the `config` crate, then read section by section.
fn layered(
    doc: &str,
    text: &str,
    overrides: config::Map<String, String>,
    others: &[String],
    base: Option<&Path>,
    entries: Entries<'_, '_>,
) -> Result<Config, ConfigError> {
    let vars: Vec<String> = overrides.keys().cloned().collect();
    let merged = config::Config::builder()
        .add_source(config::File::from_str(doc, config::FileFormat::Toml))
        .add_source(
            config::Environment::with_prefix("RECWATCH")
                .prefix_separator("_")
                .separator("__")
                .source(Some(overrides)),
        )
        .build()
        .map_err(|e| ConfigError::new("TOML", format!("{}; check the syntax", masked(text, &e))))?;
    let tree: Value = merged
        .try_deserialize()
        .map_err(|e| ConfigError::new("TOML", masked(text, &e)))?;
    let Value::Object(root) = tree else {
        return Err(ConfigError::new(
            "TOML",
            "the file must be a table of sections",
        ));
    };
    if !matches!(entries, Entries::InTree) && root.contains_key("jobs") {
        // `jobs` in the rest as well as `[[jobs]]`: the whole file says what is wrong.
        return Err(ConfigError::new("jobs", "given twice"));
    }
    let (mut config, known) =
        super::validate::from_tree(root, base, entries).map_err(|e| name_the_variable(e, &vars))?;
    config.unknown_env = unknown_variables(others, &known);
    Ok(config)
}

/// `RECWATCH_*` variables that are not configuration but recwatch's own (the file's path, the
/// build's commit, the tests' switches): documented, so never warned about.
const OTHER_VARIABLES: &[&str] = &[
    "RECWATCH_CONFIG",
    "RECWATCH_COMMIT",
    "RECWATCH_TEST_PG_URL",
    "RECWATCH_TEST_SEED",
    "RECWATCH_SCREENSHOT",
    "RECWATCH_CHROMIUM",
];

/// A warning for each `RECWATCH_*` variable (without `__`) that sets nothing, with the
/// override it most likely meant (`RECWATCH_POLL_INTERVAL` -> `RECWATCH_POLL__INTERVAL`).
/// `known` is every key path the readers know; a path that has keys under it is a section,
/// not a value, and is never suggested. Pure.
fn unknown_variables(vars: &[String], known: &std::collections::BTreeSet<String>) -> Vec<String> {
    let leaves: Vec<String> = known
        .iter()
        .filter(|k| !known.iter().any(|o| o.starts_with(&format!("{k}."))))
        .map(|k| format!("{ENV_PREFIX}{}", k.to_ascii_uppercase().replace('.', "__")))
        .collect();
    let leaves: Vec<&str> = leaves.iter().map(String::as_str).collect();
    let mut vars: Vec<&String> = vars
        .iter()
        .filter(|v| !OTHER_VARIABLES.contains(&v.as_str()))
        .collect();
    vars.sort();
    vars.into_iter()
        .map(|v| {
            let hint = match super::raw::suggest(v, &leaves) {
                Some(s) => format!("did you mean {s}?"),
                None => "check the name against config.example.toml".to_string(),
            };
            format!(
                "the environment variable {} sets no configuration key and is ignored (an override is RECWATCH_<SECTION>__<KEY>, with two underscores before the key); {hint}",
                crate::telemetry::escape_controls(v)
            )
        })
        .collect()
}

/// The key path an override variable sets: `RECWATCH_API__RATE_LIMIT` -> `api.rate_limit`.
fn env_key_path(var: &str) -> String {
    var[ENV_PREFIX.len()..]
        .split("__")
        .map(str::to_ascii_lowercase)
        .collect::<Vec<_>>()
        .join(".")
}

/// An error about a value that came from the environment names the variable, not the file
/// (where the operator would look for it in vain).
fn name_the_variable(mut e: ConfigError, vars: &[String]) -> ConfigError {
    if let Some(var) = vars.iter().find(|v| env_key_path(v) == e.location) {
        e.location = format!("{var} (overrides {})", e.location);
        return e;
    }
    let inside: Vec<&str> = vars
        .iter()
        .filter(|v| env_key_path(v).starts_with(&format!("{}.", e.location)))
        .map(String::as_str)
        .collect();
    if !inside.is_empty() {
        e.message = format!("{} (the environment sets {})", e.message, inside.join(", "));
    }
    e
}

/// A syntax error as one line: where, what, and the line with any secret value masked.
fn syntax_error(text: &str, e: &toml::de::Error) -> ConfigError {
    let redactor = Redactor::new(&crate::secret::toml_secret_values(text));
    let what = redactor.redact(e.message().trim());
    let at = e
        .span()
        .map(|s| s.start.min(text.len()))
        .filter(|&i| text.is_char_boundary(i));
    let Some(at) = at else {
        return ConfigError::new("TOML syntax", format!("{what}; check the syntax"));
    };
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line_no = text[..at].matches('\n').count() + 1;
    let column = text[line_start..at].chars().count() + 1;
    let line = text[line_start..].lines().next().unwrap_or("");
    let shown = redactor.redact(&crate::secret::mask_toml_line(line));
    ConfigError::new(
        format!("TOML syntax at line {line_no}, column {column}"),
        format!(
            "{what}: `{}`; check the syntax",
            crate::telemetry::escape_controls(shown.trim())
        ),
    )
}

/// Another parser's message about the file, with every quoted line's secret values masked.
fn masked(text: &str, e: &dyn fmt::Display) -> String {
    let redactor = Redactor::new(&crate::secret::toml_secret_values(text));
    let lines: Vec<String> = e
        .to_string()
        .lines()
        .map(crate::secret::mask_toml_line)
        .collect();
    redactor.redact(&lines.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_variable_that_sets_nothing_is_named_with_what_it_meant() {
        let known: std::collections::BTreeSet<String> = [
            "poll",
            "poll.interval",
            "log",
            "log.level",
            "api",
            "api.auth",
            "api.auth.secret_key",
        ]
        .map(String::from)
        .into();
        let cases = [
            (
                "one underscore for two",
                "RECWATCH_POLL_INTERVAL",
                Some("RECWATCH_POLL__INTERVAL"),
            ),
            (
                "no underscore",
                "RECWATCH_LOGLEVEL",
                Some("RECWATCH_LOG__LEVEL"),
            ),
            (
                "nested",
                "RECWATCH_API_AUTH_SECRET_KEY",
                Some("RECWATCH_API__AUTH__SECRET_KEY"),
            ),
            (
                "a typo too",
                "RECWATCH_POLL_INTERVL",
                Some("RECWATCH_POLL__INTERVAL"),
            ),
            ("nothing near", "RECWATCH_COLOUR", None),
        ];
        for (name, var, meant) in cases {
            let w = unknown_variables(&[var.to_string()], &known);
            assert_eq!(w.len(), 1, "{name}: {w:?}");
            assert!(w[0].contains(var), "{name}: {w:?}");
            match meant {
                Some(m) => assert!(
                    w[0].ends_with(&format!("did you mean {m}?")),
                    "{name}: {w:?}"
                ),
                None => assert!(w[0].ends_with("config.example.toml"), "{name}: {w:?}"),
            }
        }
        // A section is never suggested, and recwatch's own variables are not warned about.
        assert!(
            !unknown_variables(&["RECWATCH_APIAUTH".into()], &known)[0].contains("did you mean")
        );
        let own: Vec<String> = OTHER_VARIABLES.iter().map(|v| v.to_string()).collect();
        assert!(unknown_variables(&own, &known).is_empty());
    }
}
