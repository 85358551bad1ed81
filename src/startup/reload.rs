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
        let _watcher = match watch_file(&self.path, tx.clone()) {
            Ok(w) => Some(w),
            Err(e) => {
                warn!(
                    "cannot watch {} for changes: {e:#}; reload with SIGHUP (systemctl reload recwatch)",
                    self.path.display()
                );
                None
            }
        };
        let mut last_text = std::fs::read(&self.path).ok();
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
            let text = std::fs::read(&self.path).ok();
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
            Ok(new) => match RtcClient::new(&new.api.client_config()) {
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

/// Watches the config file's directory, so an editor that writes a new file and renames it
/// over the old one is seen too.
fn watch_file(
    path: &Path,
    tx: mpsc::Sender<Trigger>,
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
