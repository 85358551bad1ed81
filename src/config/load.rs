//! Reading: where the file is, the file itself, the `RECWATCH_<SECTION>__<KEY>` overrides
//! merged over it, and the errors of that stage (syntax, a value from the environment) told
//! so that they name the line or the variable and never show a secret.

use super::defaults::DEFAULT_PATH;
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
    let display = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        let fix = if e.kind() == std::io::ErrorKind::NotFound {
            "not found; pass --config PATH, set RECWATCH_CONFIG, or start from config.example.toml"
                .to_string()
        } else {
            format!("cannot be read: {e}")
        };
        ConfigError::new(format!("config file {display}"), fix)
    })?;
    let mut config = parse_str(&text, env, path.parent()).map_err(|e| {
        // A value that came from the environment is not in the file: the location already
        // names the variable.
        if e.location.starts_with(ENV_PREFIX) {
            e
        } else {
            ConfigError::new(format!("{} in {display}", e.location), e.message)
        }
    })?;
    config.source = Some(path.to_path_buf());
    Ok(config)
}

/// Parses TOML text under the given environment. `base` resolves relative `*_file` paths.
pub fn parse_str(
    text: &str,
    env: impl IntoIterator<Item = (String, String)>,
    base: Option<&Path>,
) -> Result<Config, ConfigError> {
    // Only RECWATCH_<SECTION>__<KEY> variables are overrides; RECWATCH_CONFIG names the file.
    let overrides: config::Map<String, String> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX) && k[ENV_PREFIX.len()..].contains("__"))
        .collect();
    // Syntax first, with our own message: the parser's quotes the offending line, which may
    // be a half-typed `secret_key = "...` (the file watcher reloads on every save).
    if let Err(e) = toml::from_str::<toml::Table>(text) {
        return Err(syntax_error(text, &e));
    }
    let vars: Vec<String> = overrides.keys().cloned().collect();
    let merged = config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
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
    super::validate::from_tree(root, base).map_err(|e| name_the_variable(e, &vars))
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
