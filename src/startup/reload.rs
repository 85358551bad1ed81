//! Reloading: the configuration file is re-read on SIGHUP and when it changes on disk. A
//! file that does not load (or whose client cannot be built) is refused and the previous
//! configuration stays; one that does is published on the daemon's one
//! `watch<Arc<Config>>`, which the HTTP endpoint and the delivery worker read, and handed to
//! the poller with its new client.

use crate::config::{self, Config};
use crate::systemd;
use recwatch_rtc::client::RtcClient;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::Signal;
use tokio::sync::{mpsc, watch};
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

/// Re-reads the configuration on SIGHUP and when the file changes.
pub(super) struct Reloader {
    pub path: PathBuf,
    /// The configuration in force: every component (the poller, the delivery worker, the HTTP
    /// endpoint) reads it from its receiver. Only a configuration that loads and whose RTC
    /// client can be built is published.
    pub config: watch::Sender<Arc<Config>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    Signal,
    FileChanged,
}

impl Reloader {
    pub(super) async fn run(
        self,
        tasks: TaskTracker,
        mut hangup: Signal,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let (tx, mut rx) = mpsc::channel::<Trigger>(16);
        let signals = tx.clone();
        let mut stop = shutdown.clone();
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    s = hangup.recv() => if s.is_none() { return },
                    _ = stop.wait_for(|s| *s) => return,
                }
                info!("SIGHUP received: re-reading the configuration");
                let _ = signals.send(Trigger::Signal).await;
            }
        });
        // Keep the watcher alive as long as this task.
        let _watcher = match watch_file(&self.path, tx.clone(), &tasks, shutdown.clone()) {
            Ok(w) => Some(w),
            Err(e) => {
                warn!(
                    "cannot watch {} for changes: {e:#}; reload with SIGHUP (systemctl reload recwatch)",
                    self.path.display()
                );
                None
            }
        };
        // The content's digest, not the text: at 100,000 `[[jobs]]` the file is ~5 MB, which
        // was held for the daemon's life only to be compared (issue 23, item 1).
        let mut last_text = content_digest(&self.path);
        loop {
            let trigger = tokio::select! {
                _ = shutdown.wait_for(|s| *s) => return,
                t = rx.recv() => match t { Some(t) => t, None => return },
            };
            // Editors write in several steps (truncate, write, rename): let them finish, and
            // fold the burst into one reload.
            let mut signal = trigger == Trigger::Signal;
            tokio::time::sleep(Duration::from_millis(250)).await;
            while let Ok(t) = rx.try_recv() {
                signal |= t == Trigger::Signal;
            }
            let text = content_digest(&self.path);
            if !signal && text == last_text {
                debug!("config file event without a change in content");
                continue;
            }
            last_text = text;
            self.reload(if signal { "SIGHUP" } else { "file changed" })
                .await;
        }
    }

    async fn reload(&self, why: &str) {
        systemd::reloading();
        match config::load(&self.path) {
            Err(e) => {
                error!("reload ({why}) refused, keeping the previous configuration: {e}");
            }
            // The client is built here only to refuse a configuration it cannot be built
            // from; the poller builds its own from what is published.
            Ok(new) => match {
                let built = new
                    .all_accounts()
                    .try_for_each(|a| RtcClient::new(&a.client_config()).map(drop));
                built
            } {
                Err(e) => error!(
                    "reload ({why}) refused, keeping the previous configuration: cannot build the HTTP client: {e:#}"
                ),
                Ok(_) => {
                    let old = self.config.borrow().clone();
                    warn_restart_only(&old, &new);
                    for w in new.warnings() {
                        warn!("{w}");
                    }
                    // Stored even while nobody listens: whoever reads next gets it.
                    info!(reason = why, jobs = new.jobs.len(), "configuration re-read");
                    self.config.send_replace(Arc::new(new));
                }
            },
        }
        systemd::ready();
    }
}

/// The SHA-256 of the file's content, or None when it cannot be read (what tells a change of
/// content from an event that changed nothing).
fn content_digest(path: &Path) -> Option<[u8; 32]> {
    use sha2::{Digest, Sha256};
    std::fs::read(path)
        .ok()
        .map(|text| Sha256::digest(&text).into())
}

/// Settings a running daemon cannot change: say so rather than ignore them silently.
fn warn_restart_only(old: &Config, new: &Config) {
    for w in restart_needed(old, new) {
        warn!("{w}");
    }
    if old.storage.retention != new.storage.retention {
        info!("storage.retention changed: used from the next daily pruning after a restart");
    }
}

/// What changed that only a restart applies, each as the warning that says so. Pure, so
/// the list is tested on its own. The receivers (`http.listen`, `[callback]`) are bound once
/// at start; a `[callback]` section added by a reload would otherwise be silently not served.
fn restart_needed(old: &Config, new: &Config) -> Vec<&'static str> {
    [
        (
            old.storage.path != new.storage.path,
            "storage.path changed: takes effect at the next restart",
        ),
        (
            old.storage.url != new.storage.url,
            "storage.url changed: takes effect at the next restart",
        ),
        (
            old.http.listen != new.http.listen,
            "http.listen changed: takes effect at the next restart",
        ),
        (
            old.callback.listen != new.callback.listen,
            "callback.listen changed: the record-callback receiver is bound at start, so this takes effect at the next restart",
        ),
        (
            old.callback.path != new.callback.path,
            "callback.path changed: takes effect at the next restart",
        ),
        (
            old.log.level != new.log.level,
            "log.level changed: takes effect at the next restart (or set RUST_LOG)",
        ),
    ]
    .into_iter()
    .filter_map(|(changed, warning)| changed.then_some(warning))
    .collect()
}

/// Watches the config file on Linux (see [`file_watch`]); its events are sent on `tx` by a
/// task of its own, which ends with the others at shutdown.
#[cfg(target_os = "linux")]
fn watch_file(
    path: &Path,
    tx: mpsc::Sender<Trigger>,
    tasks: &TaskTracker,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut watch = file_watch::FileWatch::new(path)?;
    tasks.spawn(async move {
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                changed = watch.changed() => match changed {
                    // A full channel already holds a trigger: the burst is one reload.
                    Ok(()) => { let _ = tx.try_send(Trigger::FileChanged); }
                    Err(e) => {
                        warn!("watching the config file failed: {e}; reload with SIGHUP (systemctl reload recwatch)");
                        return;
                    }
                },
            }
        }
    });
    Ok(())
}

/// Watches the config file's directory, so an editor that writes a new file and renames it
/// over the old one is seen too (where inotify is not: notify's watch takes every event of
/// the directory, see [`file_watch`] for what that costs).
#[cfg(not(target_os = "linux"))]
fn watch_file(
    path: &Path,
    tx: mpsc::Sender<Trigger>,
    _tasks: &TaskTracker,
    _stop: watch::Receiver<bool>,
) -> anyhow::Result<notify::RecommendedWatcher> {
    use notify::{RecursiveMode, Watcher};
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let name = path.file_name().map(|n| n.to_os_string());
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(event) = res {
            let ours = event
                .paths
                .iter()
                .any(|p| p.file_name().map(|n| n.to_os_string()) == name);
            if ours && !matches!(event.kind, notify::EventKind::Access(_)) {
                let _ = tx.try_send(Trigger::FileChanged);
            }
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

/// The config file's watch on Linux, an inotify watch with masks of its own: the file itself
/// (written in place, its mode changed, moved away or deleted) and, in its directory, only
/// names that appear (an editor's new file renamed over it, a file created anew). A watch of
/// the directory for every event (notify's fixed mask) also wakes on every write of every
/// other file there: a SQLite database beside the config writes its `-wal` and `-shm` at each
/// commit, and in a storm of callbacks those wake-ups were 7 % of the daemon's CPU
/// (BENCHMARKS.md part 23). The kernel filters now, so they never reach the process.
#[cfg(target_os = "linux")]
mod file_watch {
    use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};
    use std::ffi::OsString;
    use std::io;
    use std::path::{Path, PathBuf};
    use tokio::io::Interest;
    use tokio::io::unix::AsyncFd;

    /// The file's own events: any of them may change what it holds or which file the path
    /// names.
    const FILE_MASK: WatchMask = WatchMask::MODIFY
        .union(WatchMask::CLOSE_WRITE)
        .union(WatchMask::ATTRIB)
        .union(WatchMask::MOVE_SELF)
        .union(WatchMask::DELETE_SELF);
    /// The directory's: a name appearing (created, or moved in over the old file).
    const DIR_MASK: WatchMask = WatchMask::CREATE
        .union(WatchMask::MOVED_TO)
        .union(WatchMask::ONLYDIR);

    pub(super) struct FileWatch {
        /// Non-blocking (inotify_init1's IN_NONBLOCK), read when tokio says it is readable.
        inotify: AsyncFd<Inotify>,
        path: PathBuf,
        name: OsString,
        dir: WatchDescriptor,
        /// The watch of the file the path named when last armed; none while no file is there.
        file: Option<WatchDescriptor>,
        buffer: Vec<u8>,
        /// Events read that were not about the config file (what the masks keep out).
        #[cfg(test)]
        others: u64,
    }

    impl FileWatch {
        pub(super) fn new(path: &Path) -> io::Result<FileWatch> {
            let inotify = Inotify::init()?;
            let dir = path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let dir = inotify.watches().add(dir, DIR_MASK)?;
            // SAFETY: `Inotify` owns its descriptor (closed when the last handle of it goes,
            // which the `AsyncFd` holds) and `as_raw_fd` always returns that one.
            let inotify = unsafe { AsyncFd::register_with_interest(inotify, Interest::READABLE) }
                .map_err(io::Error::from)?;
            let mut watch = FileWatch {
                inotify,
                path: path.to_path_buf(),
                name: path.file_name().unwrap_or_default().to_os_string(),
                dir,
                file: None,
                buffer: vec![0; 4096],
                #[cfg(test)]
                others: 0,
            };
            watch.arm();
            Ok(watch)
        }

        /// Watches the file the path names now: after a rename over it that is another file.
        /// The previous file's watch goes (a moved-away file is no longer the config).
        fn arm(&mut self) {
            let mut watches = self.inotify.get_ref().watches();
            let new = watches.add(&self.path, FILE_MASK).ok();
            if let Some(old) = self.file.take() {
                if Some(&old) != new.as_ref() {
                    // Already gone when the file was deleted: nothing to undo then.
                    let _ = watches.remove(old);
                }
            }
            self.file = new;
        }

        /// Returns at the next event about the config file, the watch re-armed on whichever
        /// file the path names by then.
        pub(super) async fn changed(&mut self) -> io::Result<()> {
            loop {
                let mut ready = self.inotify.readable_mut().await?;
                let (dir, file, name) = (&self.dir, &self.file, &self.name);
                let buffer = &mut self.buffer;
                let read = ready.try_io(|inotify| {
                    let mut ours = false;
                    let mut others = 0u64;
                    for event in inotify.get_mut().read_events(buffer)? {
                        // A full queue lost events: one of them may have been ours.
                        let mine = event.mask.contains(EventMask::Q_OVERFLOW)
                            || Some(&event.wd) == file.as_ref()
                            || (&event.wd == dir && event.name == Some(name.as_os_str()));
                        ours |= mine;
                        others += u64::from(!mine);
                    }
                    Ok((ours, others))
                });
                drop(ready);
                let Ok(read) = read else {
                    // Woken with nothing to read: readiness is cleared, wait again.
                    continue;
                };
                let (ours, _others) = read?;
                #[cfg(test)]
                {
                    self.others += _others;
                }
                if ours {
                    self.arm();
                    return Ok(());
                }
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use std::io::Write;

        use crate::testing::T;

        async fn next(watch: &mut FileWatch) {
            tokio::time::timeout(T, watch.changed())
                .await
                .expect("an event about the config file")
                .unwrap();
        }

        #[tokio::test]
        async fn writes_beside_the_config_never_wake_the_watch_and_edits_do() {
            let dir = tempfile::tempdir().unwrap();
            let config = dir.path().join("config.toml");
            std::fs::write(&config, "a = 1\n").unwrap();
            // A database's WAL beside the config, open before the watch (as at start).
            let mut wal = std::fs::File::create(dir.path().join("recwatch.db-wal")).unwrap();
            let mut watch = FileWatch::new(&config).unwrap();
            for _ in 0..500 {
                wal.write_all(&[0; 64]).unwrap();
            }
            wal.sync_all().unwrap();

            // Written in place.
            std::fs::write(&config, "a = 2\n").unwrap();
            next(&mut watch).await;
            assert_eq!(watch.others, 0, "the WAL's writes reached the process");

            // An editor's rename over it: a new file, which the watch now follows.
            let first = watch.file.clone().expect("the file is watched");
            let tmp = dir.path().join(".config.toml.swp");
            std::fs::write(&tmp, "a = 3\n").unwrap();
            std::fs::rename(&tmp, &config).unwrap();
            next(&mut watch).await;
            let second = watch.file.clone().expect("the new file is watched");
            assert_ne!(first, second, "the watch follows the file renamed over");

            // Moved away and written anew (vim's default): the new file is watched.
            std::fs::rename(&config, dir.path().join("config.toml~")).unwrap();
            std::fs::write(&config, "a = 5\n").unwrap();
            next(&mut watch).await;
            wait_for_file(&mut watch, &second).await;
        }

        /// Reads the config's events until the watch is on another file than `old` (the
        /// move's event and the new file's may come in two reads).
        async fn wait_for_file(watch: &mut FileWatch, old: &WatchDescriptor) {
            while watch.file.as_ref().is_none_or(|f| f == old) {
                next(watch).await;
            }
        }
    }
}

/// Without a file to re-read, SIGHUP is only acknowledged: its default action would end the
/// process.
pub(super) async fn ignore_hangups(mut hangup: Signal, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            s = hangup.recv() => if s.is_none() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
        info!("SIGHUP ignored: this configuration was not read from a file");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_only_a_restart_applies_is_named() {
        let base = Config::defaults(crate::config::Auth::Token {
            token: crate::secret::Secret::new("t"),
        });
        let with = |f: fn(&mut Config)| {
            let mut c = base.clone();
            f(&mut c);
            c
        };
        let cases: [(&str, Config, &[&str]); 4] = [
            ("nothing changed", base.clone(), &[]),
            (
                "[callback] added",
                with(|c| c.callback.listen = Some("127.0.0.1:9188".parse().unwrap())),
                &["callback.listen changed"],
            ),
            (
                "callback.path changed",
                with(|c| c.callback.path = "/other".into()),
                &["callback.path changed"],
            ),
            (
                "http.listen changed",
                with(|c| c.http.listen = Some("127.0.0.1:9999".parse().unwrap())),
                &["http.listen changed"],
            ),
        ];
        for (name, new, want) in cases {
            let got = restart_needed(&base, &new);
            assert_eq!(got.len(), want.len(), "{name}: {got:?}");
            for (g, w) in got.iter().zip(want) {
                assert!(g.starts_with(w), "{name}: {got:?}");
            }
        }
    }
}
