//! `recwatch storage copy --from <path or url> --to <path or url>`: moves a recwatch database
//! to the other backend (SQLite to PostgreSQL, or back), table by table through
//! `store::copy`, and prints what it did per table. Idempotent: run again, it copies only
//! what is new and changes nothing else.
//!
//! A SQLite end is locked as `recwatch run` locks it (the owner lock beside the file): the copy
//! refuses while a daemon owns the source (it would go on writing behind the copy) or the
//! target, and no daemon can start on either while it runs. A PostgreSQL end has no such
//! lock: instances running on a PostgreSQL source go on writing, and the copy says so (what
//! they write after a table was read is copied by running the command again).

use super::{complain, emit, print_table};
use crate::dbfile::lock::OwnerLock;
use crate::exit::EXIT_USAGE;
use crate::secret::Secret;
use crate::store::Store;
use crate::store::copy::{Copied, TABLES};
use anyhow::Context;
use clap::Subcommand;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum StorageCommand {
    /// Copy every table (history: jobs, transitions and episodes; alerts and their
    /// deliveries; silences; the run-time watch list; record callbacks and their forwards)
    /// from one database to another, SQLite to PostgreSQL or back. Rows the target already
    /// has are left as they are, so a second run copies only what is new. Ids are kept.
    Copy {
        /// The database to copy from: a SQLite file's path (no `recwatch run` may own it) or
        /// a postgres:// URL.
        #[arg(long, value_name = "PATH|URL")]
        from: String,
        /// The database to copy into (made and migrated if new): a SQLite file's path or a
        /// postgres:// URL.
        #[arg(long, value_name = "PATH|URL")]
        to: String,
    },
}

/// Where a database is, as given on the command line.
#[derive(Debug)]
pub enum Place {
    Sqlite(PathBuf),
    Postgres(Secret),
}

impl Place {
    /// A `postgres://` or `postgresql://` URL is PostgreSQL; anything else a SQLite path.
    pub fn parse(arg: &str) -> Place {
        let lower = arg.trim_start().to_ascii_lowercase();
        if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            Place::Postgres(Secret::new(arg.trim()))
        } else {
            Place::Sqlite(PathBuf::from(arg))
        }
    }

    /// Whether both name the same database (the same file, or the same URL).
    fn same_as(&self, other: &Place) -> bool {
        match (self, other) {
            (Place::Sqlite(a), Place::Sqlite(b)) => {
                let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
                canon(a) == canon(b)
            }
            (Place::Postgres(a), Place::Postgres(b)) => a.expose() == b.expose(),
            _ => false,
        }
    }
}

/// An open end of the copy, with the owner lock of a SQLite file held until it is dropped.
struct End {
    store: Store,
    _lock: Option<OwnerLock>,
}

async fn open(place: &Place, source: bool) -> anyhow::Result<End> {
    let role = if source { "--from" } else { "--to" };
    match place {
        Place::Sqlite(path) => {
            if source && !path.is_file() {
                anyhow::bail!(
                    "{role}: there is no database at {}; give the storage.path of the recwatch whose data to copy",
                    path.display()
                );
            }
            let lock = OwnerLock::acquire(path, "storage copy")
                .await
                .with_context(|| format!("{role}: the copy needs {} to itself: stop the `recwatch run` that owns it, copy, then start it on its new storage", path.display()))?;
            let store = Store::open_owned(path, &lock).await?;
            Ok(End {
                store,
                _lock: Some(lock),
            })
        }
        Place::Postgres(url) => {
            let store = Store::open_postgres(url).await.context(role)?;
            Ok(End { store, _lock: None })
        }
    }
}

pub async fn storage(command: StorageCommand) -> anyhow::Result<ExitCode> {
    let StorageCommand::Copy { from, to } = command;
    let (from, to) = (Place::parse(&from), Place::parse(&to));
    if from.same_as(&to) {
        complain(
            "storage copy: --from and --to are the same database; give the database to copy into as --to",
        );
        return Ok(ExitCode::from(EXIT_USAGE));
    }
    let source = open(&from, true).await?;
    let target = open(&to, false).await?;
    if matches!(from, Place::Postgres(_)) {
        complain(&format!(
            "storage copy: warning: recwatch instances running on {} go on writing while this copies; what they write after a table was read is copied by running the command again (nothing is copied twice)",
            source.store.location()
        ));
    }
    let mut rows = vec![vec![
        "TABLE".to_string(),
        "READ".into(),
        "COPIED".into(),
        "ALREADY THERE".into(),
    ]];
    let mut total = 0;
    for table in TABLES {
        let done: Copied = source
            .store
            .db().copy_table_to(&target.store, table, |_| {})
            .await
            .with_context(|| {
                format!(
                    "cannot copy the table {} into {}; rows copied before stay (run the command again to go on); if the target had rows of its own that conflict with the source's, copy into an empty database",
                    table.name,
                    target.store.location()
                )
            })?;
        total += done.written;
        rows.push(vec![
            done.table.to_string(),
            done.read.to_string(),
            done.written.to_string(),
            done.already_there().to_string(),
        ]);
    }
    print_table(&rows)?;
    out!(
        "copied {total} rows from {} to {}",
        source.store.location(),
        target.store.location()
    )?;
    source.store.close().await;
    target.store.close().await;
    Ok(ExitCode::SUCCESS)
}

/// `recwatch backup PATH`: the SQLite database copied with SQLite's online backup, beside a
/// running daemon or not; on PostgreSQL, a pointer to `pg_dump` (64: not a command for it).
pub(super) async fn backup(
    config: &crate::config::Config,
    dest: &std::path::Path,
) -> anyhow::Result<()> {
    if config.storage.url.is_some() {
        return Err(crate::exit::StartError::usage(
            "the database is on PostgreSQL (storage.url): back it up with PostgreSQL's own tools, e.g. `pg_dump --format=custom --file=recwatch.dump URL`, and restore with pg_restore (see the README)".into(),
        )
        .into());
    }
    let store = super::inspect::open_existing(config).await?;
    let done = store.db().backup_to(dest).await;
    store.close().await;
    let done = done?;
    out!(
        "backed up {} to {} ({} tables, {} bytes, quick_check ok)",
        config.storage.path.display(),
        dest.display(),
        done.tables,
        done.bytes
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_is_postgres_and_anything_else_a_path() {
        let cases = [
            ("postgres://u:p@h/db", true),
            ("postgresql://h/db", true),
            ("POSTGRES://h/db", true),
            ("/var/lib/recwatch/recwatch.db", false),
            ("recwatch.db", false),
            ("postgres.db", false),
        ];
        for (arg, pg) in cases {
            assert_eq!(matches!(Place::parse(arg), Place::Postgres(_)), pg, "{arg}");
        }
    }
}
