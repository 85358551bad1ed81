//! One owner per database: `recwatch run` (and `poll-once`, which polls and delivers like it)
//! holds a kernel `flock` on a file beside the database for as long as it lives.
//!
//! Two daemons on one SQLite file would each deliver every alert, so a second one refuses to
//! start and names the first. The lock is the kernel's, not a pid file: it dies with its
//! process however that ends (`kill -9` included), so a crash never leaves a stale lock
//! behind. What the file says (pid, host, command, start time) is only information for the
//! refusal message; the lock is what counts. The same lock serialises schema migrations, so
//! two processes starting on a new database at once never race to create its tables.

use anyhow::Context;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a second owner waits before refusing. Short: it covers another command that
/// holds the lock only while it migrates a new database, not a running daemon.
const OWNER_PATIENCE: Duration = Duration::from_secs(2);

/// The lock file for a database: beside it, named after it.
pub fn lock_path(db: &Path) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    db.with_file_name(name)
}

/// Another process owns the database.
#[derive(Debug, thiserror::Error)]
#[error(
    "another recwatch owns the database {db}: {holder} (it holds the lock {lock}). Only one \
     `recwatch run` or `poll-once` may use a database at a time; stop the other one first, or \
     give this one its own storage.path. status, history and alerts work beside it."
)]
pub struct DatabaseInUse {
    pub db: String,
    pub lock: String,
    /// What the lock file says about its holder, e.g. "recwatch run, pid 4242 on host-a,
    /// since 2026-01-01T00:00:00Z".
    pub holder: String,
}

/// The held lock; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct OwnerLock {
    /// Kept open: the lock lives as long as this descriptor.
    _file: File,
    path: PathBuf,
}

impl OwnerLock {
    /// Takes the lock for `command` ("run", "poll-once"), waiting briefly for a process that
    /// only migrates; refuses with [`DatabaseInUse`] if another owner holds it.
    pub async fn acquire(db: &Path, command: &str) -> anyhow::Result<OwnerLock> {
        let path = lock_path(db);
        // The private directory (and database file) first, as `Store::open` makes them.
        super::prepare_storage(db)?;
        let mut file = open_lock_file(&path)?;
        let start = Instant::now();
        loop {
            match try_flock(&file) {
                Ok(true) => break,
                Ok(false) if start.elapsed() < OWNER_PATIENCE => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok(false) => {
                    return Err(DatabaseInUse {
                        db: db.display().to_string(),
                        lock: path.display().to_string(),
                        holder: read_holder(&mut file),
                    }
                    .into());
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot lock {}", path.display()));
                }
            }
        }
        // Information for a second process's refusal; a failure to write it costs only that.
        let about = format!(
            "recwatch {command}, pid {} on {}, since {}\n",
            std::process::id(),
            crate::domain::hostname(),
            crate::domain::timestamp(chrono::Utc::now())
        );
        let _ = file
            .set_len(0)
            .and_then(|_| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(about.as_bytes()));
        Ok(OwnerLock { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn open_lock_file(path: &Path) -> anyhow::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            crate::exit::StartError::cantcreat(format!(
                "cannot create the lock file {} beside the database: {e}; the directory must be writable by recwatch",
                path.display()
            ))
            .into()
        })
}

fn read_holder(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file
        .seek(SeekFrom::Start(0))
        .and_then(|_| file.take(512).read_to_string(&mut text));
    match text.trim() {
        "" => "a process that is starting".to_string(),
        t => t.to_string(),
    }
}

/// Runs `migrate` under the lock unless `applied()` says there is nothing to do. For
/// processes that do not own the database (status, history ...): while a daemon holds the
/// lock it is the one migrating, so this waits until it has (or gives up after a while).
pub async fn migrate_under_lock<A, M>(
    db: &Path,
    mut applied: impl FnMut() -> A,
    migrate: impl FnOnce() -> M,
) -> anyhow::Result<()>
where
    A: std::future::Future<Output = anyhow::Result<bool>>,
    M: std::future::Future<Output = anyhow::Result<()>>,
{
    if applied().await? {
        return Ok(());
    }
    let path = lock_path(db);
    let file = open_lock_file(&path)?;
    let start = Instant::now();
    loop {
        match try_flock(&file) {
            Ok(true) => {
                // Whoever held it may have migrated meanwhile; the migrator skips what is done.
                // Closing `file` on return releases the lock.
                return migrate().await;
            }
            Ok(false) => {
                if applied().await? {
                    return Ok(());
                }
                if start.elapsed() > Duration::from_secs(30) {
                    let mut file = file;
                    anyhow::bail!(
                        "the database {} needs its schema migrated, but {} holds it and has not done so; stop that process and try again",
                        db.display(),
                        read_holder(&mut file)
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
    }
}

/// Takes an exclusive `flock` on `file` without waiting: `Ok(false)` when another open file
/// description holds it. The lock belongs to this descriptor and goes when it is closed or
/// the process ends, however it ends.
fn try_flock(file: &File) -> std::io::Result<bool> {
    loop {
        // SAFETY: the descriptor is valid for as long as `file` is borrowed.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(true);
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EWOULDBLOCK) => return Ok(false),
            Some(libc::EINTR) => continue,
            _ => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_owner_is_refused_and_named_and_the_lock_dies_with_its_holder() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state/recwatch.db");
        let first = OwnerLock::acquire(&db, "run").await.unwrap();
        assert_eq!(first.path(), dir.path().join("state/recwatch.db.lock"));
        let err = OwnerLock::acquire(&db, "run").await.unwrap_err();
        let in_use = err.downcast_ref::<DatabaseInUse>().expect("DatabaseInUse");
        assert!(
            in_use
                .holder
                .contains(&format!("recwatch run, pid {}", std::process::id())),
            "{}",
            in_use.holder
        );
        let text = err.to_string();
        assert!(text.contains("recwatch.db.lock"), "{text}");
        drop(first);
        let again = OwnerLock::acquire(&db, "poll-once").await.unwrap();
        let written = std::fs::read_to_string(again.path()).unwrap();
        assert!(written.starts_with("recwatch poll-once, pid"), "{written}");
        assert_eq!(
            written.lines().count(),
            1,
            "the old holder's text is replaced"
        );
    }

    #[tokio::test]
    async fn migration_waits_for_an_owner_then_skips_what_it_did() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("recwatch.db");
        let owner = OwnerLock::acquire(&db, "run").await.unwrap();
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let d = done.clone();
        let waiter = tokio::spawn({
            let db = db.clone();
            async move {
                migrate_under_lock(
                    &db,
                    || {
                        let d = d.clone();
                        async move { Ok(d.load(std::sync::atomic::Ordering::SeqCst)) }
                    },
                    || async { anyhow::bail!("must not migrate: the owner did") },
                )
                .await
            }
        });
        // The owner migrates while the other waits.
        tokio::time::sleep(Duration::from_millis(300)).await;
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        waiter.await.unwrap().unwrap();
        drop(owner);
        // Nobody holds it: the migration runs under the lock.
        let ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let r = ran.clone();
        migrate_under_lock(
            &db,
            || async { Ok(false) },
            || async move {
                r.store(true, std::sync::atomic::Ordering::SeqCst);
                Ok(())
            },
        )
        .await
        .unwrap();
        assert!(ran.load(std::sync::atomic::Ordering::SeqCst));
    }
}
