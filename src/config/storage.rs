//! `[storage]`: where the database is — a SQLite file (`path`, the default) or a PostgreSQL
//! server (`url`, or `url_file`, or `RECWATCH_STORAGE__URL`), exactly one of the two — and
//! how long history is kept. The URL carries a password: it is a [`Secret`], masked in
//! `Debug`, and no error here quotes it.

use super::defaults;
use super::raw::Table;
use super::ConfigError;
use super::defaults::{MAX_RETENTION, MIN_RETENTION};
use crate::secret::Secret;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct StorageConfig {
    /// SQLite's file: the database unless `url` is set (then unused).
    pub path: PathBuf,
    /// PostgreSQL's URL (`postgres://user:password@host:5432/database`), instead of `path`.
    pub url: Option<Secret>,
    pub retention: Duration,
}

/// Which database the configuration names.
#[derive(Clone, Copy, Debug)]
pub enum Database<'a> {
    Sqlite(&'a Path),
    Postgres(&'a Secret),
}

impl StorageConfig {
    pub fn database(&self) -> Database<'_> {
        match &self.url {
            Some(url) => Database::Postgres(url),
            None => Database::Sqlite(&self.path),
        }
    }
}

impl Default for StorageConfig {
    fn default() -> StorageConfig {
        StorageConfig {
            path: PathBuf::from(defaults::STORAGE_PATH),
            url: None,
            retention: defaults::RETENTION,
        }
    }
}

pub(super) fn read_storage(mut t: Table, base: Option<&Path>) -> Result<StorageConfig, ConfigError> {
    let path = t.nonempty_string("path")?;
    let url = t.secret("url", base)?;
    if path.is_some() && url.is_some() {
        return Err(t.err(
            "url",
            "set either storage.path (a SQLite file) or storage.url (PostgreSQL; also url_file or RECWATCH_STORAGE__URL), not both",
        ));
    }
    if let Some(url) = &url {
        check_url(url.expose()).map_err(|m| t.err("url", m))?;
    }
    let retention = t.duration("retention")?.unwrap_or(defaults::RETENTION);
    if retention < MIN_RETENTION {
        return Err(t.err("retention", "must be at least 1h, e.g. \"90d\""));
    }
    if retention > MAX_RETENTION {
        return Err(t.err(
            "retention",
            "must be at most 36500d (100 years), e.g. \"90d\"",
        ));
    }
    t.finish()?;
    Ok(StorageConfig {
        path: path
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(defaults::STORAGE_PATH)),
        url,
        retention,
    })
}

/// What is wrong with `url` as a PostgreSQL URL, said without quoting it (it holds a password).
pub fn check_url(url: &str) -> Result<(), String> {
    const EXAMPLE: &str = "postgres://user:password@host:5432/database";
    let parsed = url::Url::parse(url.trim())
        .map_err(|e| format!("is not a URL ({e}); give one like {EXAMPLE}"))?;
    match parsed.scheme() {
        "postgres" | "postgresql" => {}
        other => {
            return Err(format!(
                "is a {other}: URL; recwatch stores in PostgreSQL (a URL like {EXAMPLE}) or, with storage.path instead, in a SQLite file"
            ));
        }
    }
    let database = parsed.path().trim_start_matches('/');
    if database.is_empty() || database.contains('/') {
        return Err(format!(
            "names no database (the path after the host); give one like {EXAMPLE}"
        ));
    }
    // What sqlx itself would refuse (a bad port, an unknown sslmode), in its words, which
    // name the option and never the URL.
    use std::str::FromStr;
    sqlx::postgres::PgConnectOptions::from_str(url.trim())
        .map(|_| ())
        .map_err(|_| {
            format!("cannot be read as a PostgreSQL URL; check its port and options, e.g. {EXAMPLE}")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Named cases: what is accepted, and what each refusal says (never the password).
    #[test]
    fn a_postgres_url_is_checked_without_quoting_it() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("plain", "postgres://rec:pw@db.internal:5432/recwatch", None),
            ("long scheme", "postgresql://rec:pw@db/recwatch", None),
            ("no port", "postgres://rec@db.internal/recwatch", None),
            ("tls option", "postgres://rec:pw@db/recwatch?sslmode=verify-full", None),
            ("sqlite", "sqlite:///var/lib/recwatch.db", Some("is a sqlite: URL")),
            ("mysql", "mysql://rec:pw@db/recwatch", Some("is a mysql: URL")),
            ("not a url", "db.internal:5432", Some("is a db.internal: URL")),
            ("no scheme at all", "recwatch", Some("is not a URL")),
            ("no database", "postgres://rec:pw@db.internal:5432", Some("names no database")),
            ("bad sslmode", "postgres://rec:pw@db/recwatch?sslmode=sometimes", Some("cannot be read")),
        ];
        for (name, url, want) in cases {
            let got = check_url(url);
            match want {
                None => assert_eq!(got, Ok(()), "{name}"),
                Some(w) => {
                    let m = got.expect_err(name);
                    assert!(m.contains(w), "{name}: {m}");
                    assert!(!m.contains("pw"), "{name} quotes the password: {m}");
                }
            }
        }
    }
}
