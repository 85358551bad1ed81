//! SIGINT and SIGTERM as a shutdown value, the way mini-redis passes one to every task: the
//! first signal asks for a clean stop, a second one means "now".

use tokio::sync::watch;
use tracing::{info, warn};

/// A watch channel that turns true on SIGINT or SIGTERM.
pub fn shutdown_on_signals() -> anyhow::Result<watch::Receiver<bool>> {
    shutdown_on_signals_then(|| {})
}

/// [`shutdown_on_signals`], running `on_abort` before the second signal exits at once (the
/// demo removes its temporary directory there: nothing else would).
pub fn shutdown_on_signals_then(
    on_abort: impl FnOnce() + Send + 'static,
) -> anyhow::Result<watch::Receiver<bool>> {
    use tokio::signal::unix::{SignalKind, signal};
    let (tx, rx) = watch::channel(false);
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    // Not one of `run`'s tracked tasks, and never waited for: it must outlive the clean stop
    // it asked for, to turn a second signal during that stop into an immediate exit.
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => info!("SIGTERM received"),
            _ = int.recv() => info!("SIGINT received"),
        }
        let _ = tx.send(true);
        // A second signal while stopping means "now".
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        warn!("second signal: exiting without waiting");
        on_abort();
        std::process::exit(130);
    });
    Ok(rx)
}
