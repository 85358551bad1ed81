//! The merged tree as it came from the file and the environment, read key by key: every key
//! is taken out as it is read, so whatever is left at the end is unknown, and every error is
//! located at its key's full path.

use super::ConfigError;
use super::duration::parse_duration;
use crate::secret::Secret;
use serde_json::{Map, Value};
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

/// Every key path the readers asked for or named as known (`api.rate_limit`, `api.auth.token`),
/// shared by a table and the tables read from it: the configuration's keys as the code knows
/// them, with no list to keep in step by hand. Entries of arrays of tables (`jobs[0].name`)
/// are left out: no environment variable can set one.
pub(super) type KnownKeys = Rc<RefCell<BTreeSet<String>>>;

/// One TOML table being read: keys are taken out as they are read, so whatever is left at
/// `finish` is unknown.
pub(crate) struct Table {
    pub(crate) path: String,
    map: Map<String, Value>,
    /// The keys read so far, to suggest one for a misspelt key.
    read: Vec<String>,
    known_keys: KnownKeys,
}

impl Table {
    pub(crate) fn new(path: impl Into<String>, map: Map<String, Value>) -> Table {
        Table {
            path: path.into(),
            map,
            read: Vec::new(),
            known_keys: KnownKeys::default(),
        }
    }

    /// A table read from this one: its keys are told to the same [`KnownKeys`].
    fn child(&self, path: String, map: Map<String, Value>) -> Table {
        Table {
            known_keys: self.known_keys.clone(),
            ..Table::new(path, map)
        }
    }

    /// The key paths this table and those read from it have asked for so far.
    pub(crate) fn known_keys(&self) -> KnownKeys {
        self.known_keys.clone()
    }

    fn note_known(&self, key: &str) {
        if !self.path.contains('[') {
            self.known_keys.borrow_mut().insert(self.key_path(key));
        }
    }

    pub(crate) fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    pub(crate) fn err(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::new(self.key_path(key), message)
    }

    pub(crate) fn finish(&self) -> Result<(), ConfigError> {
        let read: Vec<&str> = self.read.iter().map(String::as_str).collect();
        self.unknown(&read)
    }

    /// Refuses any key not in `keys`, before anything is read: a table whose required key is
    /// misspelt gets "unknown key appid", not "app_id missing".
    pub(crate) fn known(&self, keys: &[&str]) -> Result<(), ConfigError> {
        for k in keys {
            self.note_known(k);
        }
        self.unknown(keys)
    }

    /// An error for the first key left in the table that is not in `known`.
    fn unknown(&self, known: &[&str]) -> Result<(), ConfigError> {
        let Some(key) = self.map.keys().find(|k| !known.contains(&k.as_str())) else {
            return Ok(());
        };
        let what = if self.path.is_empty() {
            "section"
        } else {
            "key"
        };
        let hint = match suggest(key, known) {
            Some(s) => format!(" (did you mean {s}?)"),
            None => String::new(),
        };
        Err(self.err(
            key,
            format!("unknown {what} {key}{hint}; check the spelling against config.example.toml"),
        ))
    }

    /// The keys still in the table, in order.
    pub(crate) fn keys(&self) -> Vec<String> {
        self.map.keys().cloned().collect()
    }

    fn take(&mut self, key: &str) -> Option<Value> {
        self.note_known(key);
        self.read.push(key.to_string());
        self.map.remove(key)
    }

    pub(crate) fn table(&mut self, key: &str) -> Result<Table, ConfigError> {
        Ok(self
            .table_opt(key)?
            .unwrap_or_else(|| self.child(self.key_path(key), Map::new())))
    }

    pub(crate) fn table_opt(&mut self, key: &str) -> Result<Option<Table>, ConfigError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(self.child(self.key_path(key), m))),
            Some(_) => Err(self.err(key, format!("must be a table ([{}])", self.key_path(key)))),
        }
    }

    pub(crate) fn array_of_tables(&mut self, key: &str) -> Result<Vec<Table>, ConfigError> {
        match self.take(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::Object(m) => Ok(self.child(format!("{}[{i}]", self.key_path(key)), m)),
                    _ => Err(self.err(
                        key,
                        format!("entry {i} must be a table ([[{}]])", self.key_path(key)),
                    )),
                })
                .collect(),
            Some(_) => Err(self.err(
                key,
                format!("must be a list of tables ([[{}]])", self.key_path(key)),
            )),
        }
    }

    /// A string; numbers are accepted as their text, since ids are often numeric.
    pub(crate) fn string(&mut self, key: &str) -> Result<Option<String>, ConfigError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(_) => Err(self.err(key, "must be a string")),
        }
    }

    pub(crate) fn nonempty_string(&mut self, key: &str) -> Result<Option<String>, ConfigError> {
        match self.string(key)? {
            Some(s) if s.trim().is_empty() => {
                Err(self.err(key, "is empty; give a value or remove the key"))
            }
            other => Ok(other.map(|s| s.trim().to_string())),
        }
    }

    pub(crate) fn required_string(&mut self, key: &str) -> Result<String, ConfigError> {
        self.nonempty_string(key)?
            .ok_or_else(|| self.err(key, "missing; this key is required"))
    }

    pub(crate) fn string_list(&mut self, key: &str) -> Result<Option<Vec<String>>, ConfigError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) if !s.trim().is_empty() => Ok(s),
                    _ => Err(self.err(key, "must be a list of non-empty strings")),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            // From the environment a list arrives as one comma-separated string.
            Some(Value::String(s)) => Ok(Some(
                s.split(',')
                    .map(|p| p.trim().to_string())
                    .filter(|p| !p.is_empty())
                    .collect(),
            )),
            Some(_) => Err(self.err(key, "must be a list of strings")),
        }
    }

    pub(crate) fn integer(&mut self, key: &str) -> Result<Option<u64>, ConfigError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64()),
            Some(Value::String(s)) if s.trim().parse::<u64>().is_ok() => Ok(s.trim().parse().ok()),
            Some(v) => Err(self.err(key, format!("{v} is not a whole number 0 or above"))),
        }
    }

    pub(crate) fn boolean(&mut self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(Value::String(s)) if s == "true" || s == "false" => Ok(Some(s == "true")),
            Some(v) => Err(self.err(key, format!("{v} is not true or false"))),
        }
    }

    pub(crate) fn duration(&mut self, key: &str) -> Result<Option<Duration>, ConfigError> {
        match self.string(key)? {
            None => Ok(None),
            Some(s) => parse_duration(&s).map(Some).map_err(|m| self.err(key, m)),
        }
    }

    /// A secret given inline as `key` or read from the file named by `key_file` (trimmed, so
    /// systemd credentials and files ending in a newline work). Both at once is an error.
    pub(crate) fn secret(
        &mut self,
        key: &str,
        base: Option<&Path>,
    ) -> Result<Option<Secret>, ConfigError> {
        let file_key = format!("{key}_file");
        // Read the inline value by hand: its text must never appear in an error message.
        let inline = match self.take(key) {
            None => None,
            Some(Value::String(s)) => Some(s),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(_) => return Err(self.err(key, "must be a string")),
        };
        let file = self.nonempty_string(&file_key)?;
        match (inline, file) {
            (Some(_), Some(_)) => {
                Err(self.err(key, format!("set either {key} or {file_key}, not both")))
            }
            (Some(s), None) if s.trim().is_empty() => Err(self.err(key, "is empty")),
            (Some(s), None) => Ok(Some(Secret::new(s))),
            (None, Some(path)) => {
                let mut p = PathBuf::from(&path);
                // Relative to the config file, so a config and its secrets can move together.
                if p.is_relative() {
                    if let Some(b) = base {
                        p = b.join(p);
                    }
                }
                let text = std::fs::read_to_string(&p).map_err(|e| {
                    self.err(
                        &file_key,
                        format!(
                            "cannot read {}: {e}; check the path and that recwatch may read it",
                            p.display()
                        ),
                    )
                })?;
                let value = text.trim();
                if value.is_empty() {
                    return Err(self.err(&file_key, format!("{} is empty", p.display())));
                }
                Ok(Some(Secret::new(value)))
            }
            (None, None) => Ok(None),
        }
    }
}

/// The known key `key` was most likely meant to be: the same letters without `_`/`-` or
/// case, or at most two edits away.
pub(super) fn suggest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    let squash = |s: &str| -> String {
        s.chars()
            .filter(|c| *c != '_' && *c != '-')
            .map(|c| c.to_ascii_lowercase())
            .collect()
    };
    let k = squash(key);
    known
        .iter()
        .map(|c| (edit_distance(&k, &squash(c)), *c))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance, for [`suggest`] (keys are short).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(cur).min(row[j])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_table() {
        let known = ["app_id", "job_id", "name", "interval", "notify"];
        let cases = [
            ("appid", Some("app_id")),
            ("APP_ID", Some("app_id")),
            ("jobid", Some("job_id")),
            ("intervall", Some("interval")),
            ("nmae", Some("name")),
            ("colour", None),
        ];
        for (key, want) in cases {
            assert_eq!(suggest(key, &known), want, "{key}");
        }
    }
}
