//! The database as a whole, beside its tables: where it is and whether its file is still
//! the one opened, its pools for tests and benchmarks, and (in their own files) the gauges
//! `/metrics` reads (`gauges.rs`), retention (`retention.rs`), backup (`backup.rs`), the
//! copy to the other backend (`copy.rs`) and the PostgreSQL server's version.

use super::{Backend, Store, StoreError, file_identity};
use sqlx::{PgPool, SqlitePool};

/// The database as a whole: `store.db()`, a view borrowing the [`Store`].
#[derive(Clone, Copy)]
pub struct Database<'s> {
    pub(super) store: &'s Store,
}

impl<'s> Database<'s> {
    /// Whether the file at the database's path is still the one opened, and writable. A
    /// deleted or replaced file is otherwise invisible: SQLite goes on writing to the file it
    /// has open, and all of it is lost at the next start. Never opens the database file itself
    /// (closing a second descriptor would drop SQLite's locks on it). Always None on
    /// PostgreSQL, which has no file of ours.
    pub fn check_file(self) -> Option<String> {
        let b = self.store.backend.sqlite()?;
        let path = b.path.display();
        match (b.identity, file_identity(&b.path)) {
            (Some(_), None) => {
                return Some(format!(
                    "the database file {path} was deleted while recwatch has it open: what it writes now is lost when it stops; restore the file or restart recwatch"
                ));
            }
            (Some(opened), Some(now)) if opened != now => {
                return Some(format!(
                    "the database file {path} was replaced by another file: recwatch still writes to the one it opened, which is lost when it stops; restart recwatch to use the new file"
                ));
            }
            _ => {}
        }
        if let Err(e) = crate::dbfile::writable(&b.path) {
            return Some(if e.raw_os_error() == Some(libc::EROFS) {
                format!(
                    "the file system holding the database {path} is read-only: nothing can be written; remount it read-write"
                )
            } else {
                format!("the database {path} cannot be written: {e}")
            });
        }
        None
    }

    /// The SQLite write pool itself, for tests and benchmarks that set up or inspect the file
    /// directly; recwatch's own code writes through the typed functions.
    ///
    /// # Panics
    /// On PostgreSQL (see `Database::pg_pool`).
    pub fn writer(self) -> &'s SqlitePool {
        &self
            .store
            .backend
            .sqlite()
            .expect("Database::writer is SQLite's")
            .write
    }

    /// The SQLite read pool, for tests and benchmarks that inspect the file directly.
    ///
    /// # Panics
    /// On PostgreSQL (see `Database::pg_pool`).
    pub fn reader(self) -> &'s SqlitePool {
        &self
            .store
            .backend
            .sqlite()
            .expect("Database::reader is SQLite's")
            .read
    }

    /// The PostgreSQL read pool, for tests and benchmarks; None on SQLite.
    pub fn pg_pool(self) -> Option<&'s PgPool> {
        match &self.store.backend {
            Backend::Postgres(b) => Some(&b.read),
            Backend::Sqlite(_) => None,
        }
    }

    /// Whether this store is on PostgreSQL.
    pub fn is_postgres(self) -> bool {
        matches!(self.store.backend, Backend::Postgres(_))
    }

    /// One trivial statement on the read pool: whether the database answers.
    pub async fn ping(self) -> Result<(), StoreError> {
        on_read!(self.store, |db| sqlx::query("SELECT 1")
            .execute(db)
            .await
            .map(|_| ()))?;
        Ok(())
    }
}
