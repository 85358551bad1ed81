//! The PostgreSQL backend's opening: its pools and its migrations. Every statement is shared
//! with SQLite (see the conventions in `store/mod.rs`); only connecting differs.

use super::{Backend, PG_MIGRATOR, Store, StoreHealth};
use crate::exit::{EXIT_UNAVAILABLE, StartError};
use crate::secret::{Secret, mask_url};
use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgPool};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone)]
pub(crate) struct PgBackend {
    /// One connection, as on SQLite: this process's writes queue here in the order made.
    pub(crate) write: PgPool,
    pub(crate) read: PgPool,
    options: Arc<PgConnectOptions>,
    /// The URL with its user name and password masked, for messages.
    pub(crate) location: String,
}

/// The URL as it may be shown: never its password (nor its user name, nor query values).
pub fn masked(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => mask_url(&u),
        Err(_) => "the PostgreSQL URL (storage.url)".to_string(),
    }
}

impl PgBackend {
    /// Connects the pools. Nothing in an error quotes the URL's password: sqlx's connection
    /// errors do not carry the URL, and the context says the masked form.
    async fn connect(url: &Secret) -> anyhow::Result<PgBackend> {
        let location = masked(url.expose());
        let options = PgConnectOptions::from_str(url.expose())
            .map_err(|e| anyhow::anyhow!("{}", scrub(&e.to_string(), url)))
            .with_context(|| format!("storage.url is not a valid PostgreSQL URL ({location})"))?
            .application_name("recwatch")
            // A process paused inside a write (SIGSTOP, a frozen VM) holds the leadership
            // lease's row lock (see `lease`): the server ends such a session after 5 s idle in
            // its transaction, so a standby's takeover is never blocked for longer.
            .options([("idle_in_transaction_session_timeout", "5s")]);
        // A connection waits at most CONNECT_TIMEOUT: with the server gone, a write fails
        // (and `/readyz` says why) in seconds rather than after SQLite's 30 s wait for its
        // one connection; this process's writes take milliseconds, so none waits that long
        // for another.
        let pool = |max: u32| {
            PgPoolOptions::new()
                .max_connections(max)
                .acquire_timeout(CONNECT_TIMEOUT)
        };
        // One connection first, to fail at once with what the server (or the network) said: a
        // pool would try again until its acquire timeout and then say only that it timed out.
        first_connection(&options, &location, url)
            .await?
            .close()
            .await
            .ok();
        let write = pool(1)
            .connect_with(options.clone())
            .await
            .map_err(|e| unreachable(&location, &e, url))?;
        let read = pool(4).connect_lazy_with(options.clone());
        Ok(PgBackend {
            write,
            read,
            options: Arc::new(options),
            location,
        })
    }

    /// Applies the migrations this binary knows that the database lacks. sqlx's PostgreSQL
    /// migrator takes `pg_advisory_lock` (a key derived from the database's name) before it
    /// even creates `_sqlx_migrations`, and releases it when done (sqlx-postgres 0.9.0,
    /// `migrate.rs`, `lock`/`unlock`, called by `Migrator::run_direct`): two instances starting
    /// at once run them one after the other, the second finding nothing to do. It runs on a
    /// pool of one connection of its own, closed afterwards, so a failed migration cannot
    /// leave the (session) lock held by a connection the store goes on using.
    pub(crate) async fn migrate(&self) -> anyhow::Result<()> {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with((*self.options).clone())
            .await
            .with_context(|| format!("cannot connect to {} to migrate it", self.location))?;
        let done = PG_MIGRATOR
            .run(&pool)
            .await
            .with_context(|| format!("cannot migrate the database {}", self.location));
        pool.close().await;
        done
    }

    /// The server's version, as `SHOW server_version` says it.
    pub(crate) async fn server_version(&self) -> Result<String, sqlx::Error> {
        sqlx::query_scalar("SHOW server_version")
            .fetch_one(&self.read)
            .await
    }
}

/// A server that cannot be reached or refuses us: `run` exits 69 (unavailable), naming the
/// masked URL and what to check.
fn unreachable(location: &str, e: &sqlx::Error, url: &Secret) -> StartError {
    StartError {
        exit: EXIT_UNAVAILABLE,
        message: format!(
            "cannot connect to the PostgreSQL database {location}: {}; check storage.url, that the server runs and accepts this user",
            scrub(&e.to_string(), url)
        ),
    }
}

/// One connection to the server, within [`CONNECT_TIMEOUT`]; a failure is `run`'s exit 69.
async fn first_connection(
    options: &PgConnectOptions,
    location: &str,
    url: &Secret,
) -> Result<sqlx::PgConnection, StartError> {
    tokio::time::timeout(CONNECT_TIMEOUT, sqlx::PgConnection::connect_with(options))
        .await
        .map_err(|_| StartError {
            exit: EXIT_UNAVAILABLE,
            message: format!(
                "cannot connect to the PostgreSQL database {location}: no answer within {} s; check storage.url and that the server runs",
                CONNECT_TIMEOUT.as_secs()
            ),
        })?
        .map_err(|e| unreachable(location, &e, url))
}

/// How long opening the database waits for the server's first answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What `recwatch check` says about a PostgreSQL database without changing it: one
/// connection, the server's version, and whether this binary's schema is applied.
pub async fn probe(url: &Secret) -> Result<Probe, StartError> {
    let location = masked(url.expose());
    let options = PgConnectOptions::from_str(url.expose()).map_err(|_| StartError {
        exit: crate::config::EXIT_CONFIG,
        message: format!("storage.url is not a valid PostgreSQL URL ({location})"),
    })?;
    let mut conn = first_connection(&options, &location, url).await?;
    let version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&mut conn)
        .await
        .map_err(|e| unreachable(&location, &e, url))?;
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(&mut conn)
            .await
            .unwrap_or_default();
    let _ = conn.close().await;
    let known: Vec<i64> = PG_MIGRATOR
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .map(|m| m.version)
        .collect();
    Ok(Probe {
        location,
        version,
        missing: known.iter().filter(|v| !applied.contains(v)).count(),
        migrations: known.len(),
    })
}

/// What [`probe`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// The URL, masked.
    pub location: String,
    pub version: String,
    /// Migrations of this binary not applied yet (`run` applies them), of `migrations`.
    pub missing: usize,
    pub migrations: usize,
}

/// `text` with the URL's password (if it has one) replaced by `***`, for errors that might
/// quote what they were given.
fn scrub(text: &str, url: &Secret) -> String {
    let password = url::Url::parse(url.expose())
        .ok()
        .and_then(|u| u.password().map(str::to_string))
        .filter(|p| !p.is_empty());
    let mut out = text.replace(url.expose(), &masked(url.expose()));
    if let Some(p) = password {
        out = out.replace(&p, crate::secret::MASK);
        if let Ok(decoded) = percent_encoding::percent_decode_str(&p).decode_utf8() {
            if !decoded.is_empty() {
                out = out.replace(decoded.as_ref(), crate::secret::MASK);
            }
        }
    }
    out
}

impl Store {
    /// Opens the PostgreSQL database at `url` and applies its migrations (under sqlx's
    /// advisory lock, see `PgBackend::migrate`). Any number of processes may do this at
    /// once; nothing here takes SQLite's owner lock.
    pub async fn open_postgres(url: &Secret) -> anyhow::Result<Store> {
        let backend = PgBackend::connect(url).await?;
        backend.migrate().await?;
        Ok(Store {
            backend: Backend::Postgres(backend),
            health: Arc::new(StoreHealth::default()),
            fence: None,
        })
    }
}

impl super::Database<'_> {
    /// The PostgreSQL server's version (`recwatch check`); None on SQLite.
    pub async fn server_version(self) -> Option<Result<String, super::StoreError>> {
        match &self.store.backend {
            Backend::Postgres(b) => Some(b.server_version().await.map_err(Into::into)),
            Backend::Sqlite(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_never_reaches_a_message() {
        let url = Secret::new("postgres://rec:s3cr%40t@db.internal:5432/recwatch");
        let m = masked(url.expose());
        assert!(!m.contains("s3cr"), "{m}");
        assert!(m.contains("db.internal:5432/recwatch"), "{m}");
        let said = scrub(
            "bad: postgres://rec:s3cr%40t@db.internal:5432/recwatch and s3cr@t and s3cr%40t",
            &url,
        );
        assert!(!said.contains("s3cr"), "{said}");
        assert_eq!(masked("not a url"), "the PostgreSQL URL (storage.url)");
    }
}
