//! The service manager's side of recwatch: readiness, reload, stop and status messages and
//! the watchdog, sent over the `sd_notify` protocol (see sd_notify(3)).
//!
//! `NOTIFY_SOCKET` is read once, on first use; without it every call here does nothing, so
//! the same binary runs from a shell, in a test or under systemd. A failed notification is
//! never fatal: it is logged at debug and the service keeps working. The message formats come
//! from the `sd-notify` crate; the sending is ours because that crate only sends to the
//! socket named by the environment (tests would have to set process-wide variables, which
//! races other threads) and treats an abstract socket name (`@...`) as a file path.

use sd_notify::NotifyState;
use std::ffi::OsStr;
use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::OnceLock;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

/// Startup is finished: systemd moves a `Type=notify` unit to "active". Call it again after a
/// reload has finished.
pub fn ready() {
    send(&[NotifyState::Ready]);
}

/// Shutdown has begun.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// A reload (SIGHUP) has begun; call [`ready`] when it is done. systemd 253 and later want
/// the monotonic time with `RELOADING=1` (it is what `Type=notify-reload` checks).
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(e) => {
            tracing::debug!(error = %e, "cannot read the monotonic clock; sending RELOADING=1 alone");
            send(&[NotifyState::Reloading]);
        }
    }
}

/// A one-line status shown by `systemctl status`. Line breaks would end the message early,
/// so they become spaces.
pub fn status(msg: &str) {
    let line = one_line(msg);
    send(&[NotifyState::Status(&line)]);
}

/// How often to ping the watchdog: half of `WATCHDOG_USEC`, as sd_watchdog_enabled(3)
/// advises. `None` when the watchdog is off or there is nowhere to send pings.
pub fn watchdog_interval() -> Option<Duration> {
    notifier()?;
    sd_notify::watchdog_enabled().and_then(ping_period)
}

/// Tells systemd the service is still alive (`WATCHDOG=1`).
pub fn watchdog_ping() {
    send(&[NotifyState::Watchdog]);
}

/// Pings the watchdog every [`watchdog_interval`] while `alive()` is true, until `shutdown`
/// turns true or its sender is dropped. When `alive()` is false the pings stop, and systemd
/// kills and restarts the service once `WatchdogSec` passes without one. Returns at once when
/// the watchdog is off.
pub async fn watchdog_task(alive: impl Fn() -> bool, shutdown: watch::Receiver<bool>) {
    let (Some(notifier), Some(period)) = (notifier(), watchdog_interval()) else {
        return;
    };
    tracing::debug!(?period, "pinging the systemd watchdog");
    watchdog_loop(notifier.clone(), period, alive, shutdown).await;
}

async fn watchdog_loop(
    notifier: Notifier,
    period: Duration,
    alive: impl Fn() -> bool,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(period);
    // After a stall, one ping is enough; a burst of catch-up pings would say nothing more.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut was_alive = true;
    loop {
        if *shutdown.borrow_and_update() {
            return;
        }
        tokio::select! {
            _ = ticks.tick() => {}
            changed = shutdown.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        }
        let is_alive = alive();
        if is_alive {
            notifier.send_logged(&[NotifyState::Watchdog]);
        }
        if is_alive != was_alive {
            if is_alive {
                tracing::info!("the poll loop is making progress again; watchdog pings resumed");
            } else {
                tracing::warn!(
                    "the poll loop has made no progress recently; withholding watchdog pings, so systemd restarts recwatch if this lasts"
                );
            }
            was_alive = is_alive;
        }
    }
}

fn ping_period(watchdog: Duration) -> Option<Duration> {
    Some(watchdog / 2).filter(|p| !p.is_zero())
}

fn one_line(msg: &str) -> String {
    msg.replace(['\n', '\r'], " ")
}

fn send(states: &[NotifyState]) {
    if let Some(n) = notifier() {
        n.send_logged(states);
    }
}

/// The socket from `NOTIFY_SOCKET`, read on first use.
fn notifier() -> Option<&'static Notifier> {
    static NOTIFIER: OnceLock<Option<Notifier>> = OnceLock::new();
    NOTIFIER
        .get_or_init(|| {
            let value = std::env::var_os("NOTIFY_SOCKET")?;
            Notifier::new(&value)
                .inspect_err(|e| tracing::debug!(socket = ?value, error = %e, "NOTIFY_SOCKET is unusable; not notifying systemd"))
                .ok()
        })
        .as_ref()
}

/// Where notifications go.
#[derive(Clone, Debug)]
struct Notifier {
    addr: SocketAddr,
}

impl Notifier {
    /// `value` is a `NOTIFY_SOCKET`: a file system path, or `@name` for an abstract socket.
    fn new(value: &OsStr) -> io::Result<Notifier> {
        use std::os::unix::ffi::OsStrExt;
        let addr = match value.as_bytes() {
            [] => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "empty socket name",
                ));
            }
            [b'@', name @ ..] => abstract_addr(name)?,
            _ => SocketAddr::from_pathname(value)?,
        };
        Ok(Notifier { addr })
    }

    fn send(&self, states: &[NotifyState]) -> io::Result<()> {
        let msg: String = states.iter().map(|s| format!("{s}\n")).collect();
        let sock = UnixDatagram::unbound()?;
        let sent = sock.send_to_addr(msg.as_bytes(), &self.addr)?;
        if sent != msg.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "incomplete datagram",
            ));
        }
        Ok(())
    }

    fn send_logged(&self, states: &[NotifyState]) {
        if let Err(e) = self.send(states) {
            let states: Vec<String> = states.iter().map(ToString::to_string).collect();
            tracing::debug!(socket = ?self.addr, ?states, error = %e, "systemd notification failed");
        }
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn abstract_addr(name: &[u8]) -> io::Result<SocketAddr> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn abstract_addr(_name: &[u8]) -> io::Result<SocketAddr> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract sockets exist only on Linux",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A stand-in for systemd's notification socket.
    struct Manager {
        _dir: tempfile::TempDir,
        sock: UnixDatagram,
        notifier: Notifier,
    }

    impl Manager {
        fn new() -> Manager {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("notify");
            let sock = UnixDatagram::bind(&path).unwrap();
            sock.set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let notifier = Notifier::new(path.as_os_str()).unwrap();
            Manager {
                _dir: dir,
                sock,
                notifier,
            }
        }

        fn recv(&self) -> String {
            let mut buf = [0u8; 4096];
            let n = self
                .sock
                .recv(&mut buf)
                .expect("a notification within 10 s");
            String::from_utf8(buf[..n].to_vec()).unwrap()
        }

        fn pending(&self) -> Option<String> {
            self.sock.set_nonblocking(true).unwrap();
            let mut buf = [0u8; 4096];
            let got = self
                .sock
                .recv(&mut buf)
                .ok()
                .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned());
            self.sock.set_nonblocking(false).unwrap();
            got
        }
    }

    #[test]
    fn states_arrive_as_sd_notify_lines() {
        let m = Manager::new();
        for (state, line) in [
            (NotifyState::Ready, "READY=1\n"),
            (NotifyState::Watchdog, "WATCHDOG=1\n"),
            (NotifyState::Stopping, "STOPPING=1\n"),
            (
                NotifyState::Status("polling 3 jobs"),
                "STATUS=polling 3 jobs\n",
            ),
        ] {
            m.notifier.send(&[state]).unwrap();
            assert_eq!(m.recv(), line);
        }
    }

    #[test]
    fn several_states_go_in_one_datagram() {
        let m = Manager::new();
        m.notifier
            .send(&[NotifyState::Reloading, NotifyState::MonotonicUsec(42)])
            .unwrap();
        assert_eq!(m.recv(), "RELOADING=1\nMONOTONIC_USEC=42\n");
    }

    #[test]
    fn abstract_socket_names_are_understood() {
        let name = format!("recwatch-test-{}", std::process::id());
        let addr = abstract_addr(name.as_bytes()).unwrap();
        let sock = UnixDatagram::bind_addr(&addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Notifier::new(OsStr::new(&format!("@{name}")))
            .unwrap()
            .send(&[NotifyState::Ready])
            .unwrap();
        let mut buf = [0u8; 64];
        let n = sock.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\n");
    }

    #[test]
    fn a_missing_socket_is_an_error_not_a_panic() {
        let n = Notifier::new(Path::new("/nonexistent/notify").as_os_str()).unwrap();
        assert!(n.send(&[NotifyState::Ready]).is_err());
        n.send_logged(&[NotifyState::Ready]);
        assert!(Notifier::new(OsStr::new("")).is_err());
    }

    #[test]
    fn public_calls_without_notify_socket_do_nothing() {
        // The test runner has no NOTIFY_SOCKET (systemd would not start tests with one).
        if std::env::var_os("NOTIFY_SOCKET").is_some() {
            return;
        }
        ready();
        reloading();
        status("line one\nline two");
        watchdog_ping();
        stopping();
        assert_eq!(watchdog_interval(), None);
    }

    #[test]
    fn ping_period_is_half_the_watchdog() {
        let cases = [
            (
                "WatchdogSec=60",
                Duration::from_secs(60),
                Some(Duration::from_secs(30)),
            ),
            (
                "odd microseconds",
                Duration::from_micros(3),
                Some(Duration::from_nanos(1500)),
            ),
            ("zero is off", Duration::ZERO, None),
        ];
        for (name, watchdog, want) in cases {
            assert_eq!(ping_period(watchdog), want, "{name}");
        }
    }

    #[test]
    fn status_is_one_line() {
        assert_eq!(one_line("a\nb\r\nc"), "a b  c");
    }

    // Two workers: the test blocks one on the socket while the loop runs on the other.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn watchdog_pings_only_while_alive_and_stops_on_shutdown() {
        let m = Manager::new();
        let healthy = Arc::new(AtomicBool::new(true));
        // Every call to alive() is reported, so the test waits on calls, not on time.
        let (calls_tx, mut calls) = tokio::sync::mpsc::unbounded_channel();
        let alive = {
            let healthy = healthy.clone();
            move || {
                let h = healthy.load(Ordering::SeqCst);
                calls_tx.send(h).ok();
                h
            }
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        let period = Duration::from_millis(5);
        let task = tokio::spawn(watchdog_loop(m.notifier.clone(), period, alive, stop_rx));

        assert!(calls.recv().await.unwrap());
        assert_eq!(m.recv(), "WATCHDOG=1\n");

        healthy.store(false, Ordering::SeqCst);
        // A ping follows its check before the next check runs, so once a check has said "not
        // alive", every ping of the healthy checks before it is in the socket: drop those,
        // then nothing may arrive during further unhealthy checks.
        while calls.recv().await.unwrap() {}
        let _ = std::iter::from_fn(|| m.pending()).count();
        assert!(!calls.recv().await.unwrap());
        assert!(!calls.recv().await.unwrap());
        assert_eq!(m.pending(), None, "no ping while the poll loop is stuck");

        healthy.store(true, Ordering::SeqCst);
        while !calls.recv().await.unwrap() {}
        assert_eq!(m.recv(), "WATCHDOG=1\n");

        stop_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("stops on shutdown")
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn watchdog_stops_when_the_shutdown_sender_is_dropped() {
        let m = Manager::new();
        let (stop_tx, stop_rx) = watch::channel(false);
        let hour = Duration::from_secs(3600);
        let task = tokio::spawn(watchdog_loop(m.notifier.clone(), hour, || true, stop_rx));
        assert_eq!(m.recv(), "WATCHDOG=1\n", "the first tick is immediate");
        drop(stop_tx);
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("stops")
            .unwrap();
    }
}
