//! The database's place on disk, made before SQLite opens it: a private directory (0700) and
//! file (0600) whatever the umask, the probe `check` uses to tell whether `run` could make
//! them, and the owner lock ([`lock`]) that keeps a second daemon off the same file.
//!
//! It sits below [`crate::store`], which calls [`prepare_storage`] on every open, so the store
//! never creates a database with the umask's modes. A failure here is
//! [`crate::exit::EXIT_CANTCREAT`] (73): a fault a restart may cure (a directory that cannot be
//! created yet), not a broken configuration.

pub mod lock;

use crate::exit::StartError;
use std::fs::{self, DirBuilder, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The database file's mode: it holds job history, raw answers and alert payloads.
const DB_MODE: u32 = 0o600;
/// The mode of each directory recwatch creates for the database.
const DIR_MODE: u32 = 0o700;

/// Makes the database's directory (each missing level 0700) and, when it does not exist yet,
/// the database file (0600), whatever the umask; an existing directory or file keeps its mode.
/// SQLite gives its `-wal` and `-shm` files the database file's mode.
///
/// An existing database file is never opened here, only asked about ([`writable`]): this
/// process may already have SQLite connections on it (the demo, the benchmark, a daemon run
/// inside tests), and closing any descriptor of a file drops every POSIX lock the process
/// holds on it, SQLite's included, which lets another process write under them.
pub fn prepare_storage(db: &Path) -> Result<(), StartError> {
    if let Some(dir) = parent_dir(db) {
        create_private_dirs(dir).map_err(|e| {
            StartError::cantcreat(format!(
                "cannot create the database directory {}: {e}; create it (writable by the user recwatch runs as) or set storage.path",
                dir.display()
            ))
        })?;
    }
    let created = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(DB_MODE)
        .open(db);
    match created {
        // The umask may have taken bits away from 0600 (never added any): set it exactly.
        // A file that did not exist a moment ago holds no lock of this process's.
        Ok(file) => file.set_permissions(Permissions::from_mode(DB_MODE)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => existing_database(db),
        Err(e) => Err(e),
    }
    .map_err(|e| {
        StartError::cantcreat(format!(
            "cannot create or write the database {}: {e}; check storage.path and that recwatch may write there",
            db.display()
        ))
    })
}

/// An existing database must be a regular file this process may write, asked without
/// opening it.
fn existing_database(db: &Path) -> io::Result<()> {
    if !fs::metadata(db)?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "it is not a regular file",
        ));
    }
    writable(db)
}

/// Whether this process may write `path`, by `access(W_OK)`: never opens the file (see
/// [`prepare_storage`] for why that matters). Root passes whatever the mode bits say, but not
/// on a read-only file system (`EROFS`).
pub fn writable(path: &Path) -> io::Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn parent_dir(db: &Path) -> Option<&Path> {
    db.parent().filter(|d| !d.as_os_str().is_empty())
}

/// Creates `dir` and every missing parent with mode 0700; leaves existing ones alone.
fn create_private_dirs(dir: &Path) -> io::Result<()> {
    let mut missing: Vec<&Path> = Vec::new();
    let mut at = dir;
    loop {
        match fs::metadata(at) {
            Ok(m) if m.is_dir() => break,
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::NotADirectory,
                    format!("{} is not a directory", at.display()),
                ));
            }
            // ENOTDIR: a level above is a file; walking up names it.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                missing.push(at);
                match parent_dir(at) {
                    Some(p) => at = p,
                    None => break,
                }
            }
            Err(e) => return Err(e),
        }
    }
    for d in missing.into_iter().rev() {
        match DirBuilder::new().mode(DIR_MODE).create(d) {
            Ok(()) => fs::set_permissions(d, Permissions::from_mode(DIR_MODE))?,
            // Made by someone else meanwhile: theirs, so its mode stays.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && d.is_dir() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// What `check` found about the storage path, without creating anything it keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageProbe {
    /// The database exists and can be written.
    Exists,
    /// It will be created; `dir` is the existing directory it will be created under.
    WillCreate { dir: PathBuf },
}

/// Tells whether `run` could create and write the database, the way it will try: the file
/// asked with `access(W_OK)` if it exists, else a temporary file made (and removed at once) in the
/// nearest existing directory. Root ignores permission bits but not a read-only mount, so
/// only trying tells the truth.
pub fn probe_storage(db: &Path) -> Result<StorageProbe, StartError> {
    let cannot = |what: String| StartError::cantcreat(format!("{what}; `run` would fail"));
    let mut dir = parent_dir(db).unwrap_or(Path::new("."));
    loop {
        match fs::metadata(dir) {
            Ok(m) if m.is_dir() => break,
            Ok(_) => {
                return Err(cannot(format!(
                    "storage.path {}: {} is not a directory",
                    db.display(),
                    dir.display()
                )));
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                dir = parent_dir(dir).unwrap_or(Path::new("."));
            }
            Err(e) => {
                return Err(cannot(format!(
                    "storage.path {}: cannot look at {}: {e}",
                    db.display(),
                    dir.display()
                )));
            }
        }
    }
    // SQLite writes its -wal and -shm files beside the database, so the directory must be
    // writable even when the file exists.
    tempfile::Builder::new()
        .prefix(".recwatch-check-")
        .tempfile_in(dir)
        .map_err(|e| {
            cannot(format!(
                "storage.path {}: cannot write in {}: {e}",
                db.display(),
                dir.display()
            ))
        })?;
    if db.exists() {
        existing_database(db).map_err(|e| {
            cannot(format!(
                "storage.path {}: cannot write it: {e}",
                db.display()
            ))
        })?;
        Ok(StorageProbe::Exists)
    } else {
        Ok(StorageProbe::WillCreate {
            dir: dir.to_path_buf(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::EXIT_CANTCREAT;
    use std::os::unix::fs::MetadataExt;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().mode() & 0o777
    }

    #[test]
    fn storage_is_private_whatever_the_umask_and_existing_modes_stay() {
        let tmp = tempfile::tempdir().unwrap();
        let existing = tmp.path().join("existing");
        fs::create_dir(&existing).unwrap();
        fs::set_permissions(&existing, Permissions::from_mode(0o755)).unwrap();
        let db = existing.join("a").join("b").join("recwatch.db");
        prepare_storage(&db).unwrap();
        assert_eq!(mode(&db), 0o600);
        assert_eq!(mode(&existing.join("a")), 0o700);
        assert_eq!(mode(&existing.join("a/b")), 0o700);
        assert_eq!(
            mode(&existing),
            0o755,
            "an existing directory keeps its mode"
        );
        // A second start changes nothing, and an operator's chosen mode stays.
        fs::set_permissions(&db, Permissions::from_mode(0o640)).unwrap();
        prepare_storage(&db).unwrap();
        assert_eq!(mode(&db), 0o640);
    }

    #[test]
    fn an_existing_path_that_is_not_a_file_is_73() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("recwatch.db");
        fs::create_dir(&db).unwrap();
        let e = prepare_storage(&db).unwrap_err();
        assert_eq!(e.exit, EXIT_CANTCREAT);
        assert!(e.message.contains("not a regular file"), "{e}");
        let e = probe_storage(&db).unwrap_err();
        assert!(e.message.contains("not a regular file"), "{e}");
    }

    #[test]
    fn a_path_under_a_regular_file_is_73() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("file");
        fs::write(&file, "x").unwrap();
        let db = file.join("sub").join("recwatch.db");
        let e = prepare_storage(&db).unwrap_err();
        assert_eq!(e.exit, EXIT_CANTCREAT);
        assert!(e.message.contains("not a directory"), "{e}");
        let e = probe_storage(&db).unwrap_err();
        assert_eq!(e.exit, EXIT_CANTCREAT);
        assert!(e.message.contains("not a directory"), "{e}");
        assert!(!db.exists());
    }

    #[test]
    fn probe_creates_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("new").join("recwatch.db");
        assert_eq!(
            probe_storage(&db).unwrap(),
            StorageProbe::WillCreate {
                dir: tmp.path().to_path_buf()
            }
        );
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 0);
        prepare_storage(&db).unwrap();
        assert_eq!(probe_storage(&db).unwrap(), StorageProbe::Exists);
    }
}
