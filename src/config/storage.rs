//! `[storage]`: where the database is — a SQLite file (`path`, the default) or a PostgreSQL
//! server (`url`, or `url_file`, or `RECWATCH_STORAGE__URL`), exactly one of the two — and
//! how long history is kept. The URL carries a password: it is a [`Secret`], masked in
//! `Debug`, and no error here quotes it.

use super::ConfigError;
use super::defaults;
use super::defaults::{MAX_RETENTION, MIN_RETENTION};
use super::raw::Table;
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

pub(super) fn read_storage(
    mut t: Table,
    base: Option<&Path>,
) -> Result<StorageConfig, ConfigError> {
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
            format!(
                "cannot be read as a PostgreSQL URL; check its port and options, e.g. {EXAMPLE}"
            )
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
            (
                "tls option",
                "postgres://rec:pw@db/recwatch?sslmode=verify-full",
                None,
            ),
            (
                "sqlite",
                "sqlite:///var/lib/recwatch.db",
                Some("is a sqlite: URL"),
            ),
            (
                "mysql",
                "mysql://rec:pw@db/recwatch",
                Some("is a mysql: URL"),
            ),
            (
                "not a url",
                "db.internal:5432",
                Some("is a db.internal: URL"),
            ),
            ("no scheme at all", "recwatch", Some("is not a URL")),
            (
                "no database",
                "postgres://rec:pw@db.internal:5432",
                Some("names no database"),
            ),
            (
                "bad sslmode",
                "postgres://rec:pw@db/recwatch?sslmode=sometimes",
                Some("cannot be read"),
            ),
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

    const BASE: &str = r#"
[api]
project_id = "0a1b2c3d4e5f67890a1b2c3d4e5f6789"
[api.auth]
access_key = "AK"
secret_key = "SK"
"#;
    const URL: &str = "postgres://rec:pw-s3cret@db.internal:5432/recwatch";
    /// Environment variables a case sets.
    type Env = &'static [(&'static str, &'static str)];

    fn parse(
        storage: &str,
        env: &[(&str, &str)],
        base: Option<&Path>,
    ) -> Result<super::super::Config, ConfigError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        super::super::parse_str(&format!("{BASE}\n[storage]\n{storage}\n"), env, base)
    }

    /// The three ways to give the URL, and that none of them lets the password out (Debug
    /// of the whole configuration included).
    #[test]
    fn url_url_file_or_the_environment_choose_postgresql() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("db-url"), format!("{URL}\n")).unwrap();
        let cases: &[(&str, &str, Env)] = &[
            (
                "url",
                "url = \"postgres://rec:pw-s3cret@db.internal:5432/recwatch\"",
                &[],
            ),
            (
                "url_file, relative to the config",
                "url_file = \"db-url\"",
                &[],
            ),
            ("the environment", "", &[("RECWATCH_STORAGE__URL", URL)]),
        ];
        for (name, storage, env) in cases {
            let c = parse(storage, env, Some(dir.path())).expect(name);
            assert!(
                matches!(c.storage.database(), Database::Postgres(u) if u.expose() == URL),
                "{name}"
            );
            let debug = format!("{c:?}");
            assert!(!debug.contains("pw-s3cret"), "{name}: {debug}");
        }
        let c = parse("", &[], None).unwrap();
        assert!(
            matches!(c.storage.database(), Database::Sqlite(p) if p == Path::new(defaults::STORAGE_PATH)),
            "SQLite at the default path when no url is given"
        );
    }

    /// Exactly one of path and url; a URL that is not PostgreSQL's names the key. Each is a
    /// config error (exit 78) that never quotes the password.
    #[test]
    fn path_and_url_together_or_a_url_of_another_kind_are_refused() {
        let cases: &[(&str, &str, Env, &str, &str)] = &[
            (
                "both in the file",
                "path = \"/var/lib/recwatch/recwatch.db\"\nurl = \"postgres://rec:pw-s3cret@db/recwatch\"",
                &[],
                "storage.url",
                "set either storage.path (a SQLite file) or storage.url",
            ),
            (
                "path in the file, url from the environment",
                "path = \"/var/lib/recwatch/recwatch.db\"",
                &[("RECWATCH_STORAGE__URL", URL)],
                "storage.url",
                "not both",
            ),
            (
                "url and url_file",
                "url = \"postgres://rec:pw-s3cret@db/recwatch\"\nurl_file = \"/x\"",
                &[],
                "storage.url",
                "set either url or url_file, not both",
            ),
            (
                "a MySQL URL",
                "url = \"mysql://rec:pw-s3cret@db/recwatch\"",
                &[],
                "storage.url",
                "is a mysql: URL",
            ),
            (
                "a SQLite URL from the environment",
                "",
                &[("RECWATCH_STORAGE__URL", "sqlite:///tmp/pw-s3cret.db")],
                "storage.url",
                "is a sqlite: URL",
            ),
        ];
        for (name, storage, env, location, says) in cases {
            let e = parse(storage, env, None).expect_err(name);
            assert!(e.location.contains(location), "{name}: {e}");
            assert!(e.message.contains(says), "{name}: {e}");
            assert!(!e.to_string().contains("pw-s3cret"), "{name}: {e}");
            let any = anyhow::Error::from(e);
            assert_eq!(
                crate::cli::exit_code(&any),
                Some(crate::config::EXIT_CONFIG),
                "{name}"
            );
        }
    }
}
