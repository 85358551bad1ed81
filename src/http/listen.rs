//! Binding `http.listen`: for `run`, which must not start without its endpoint, and for
//! `check`, which tries the address and lets go at once. A failure carries the exit code it
//! means: 69 for an address someone else holds (a restart may cure it), 78 for one recwatch
//! may never use.

use crate::exit::{EXIT_CONFIG, EXIT_UNAVAILABLE, StartError};
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// Binds `http.listen` for `run`: a failure stops the start, because a monitor whose
/// `/readyz` and `/metrics` silently vanished is not being watched itself.
pub async fn bind_http(addr: SocketAddr) -> Result<tokio::net::TcpListener, StartError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| bind_error(addr, &e))
}

/// The exit code and fix for an address that cannot be bound.
pub fn bind_error(addr: SocketAddr, e: &io::Error) -> StartError {
    match e.kind() {
        io::ErrorKind::AddrInUse => StartError {
            exit: EXIT_UNAVAILABLE,
            message: format!(
                "http.listen {addr} is in use by another process: stop it, or set http.listen to a free port (\"\" turns the endpoint off)"
            ),
        },
        io::ErrorKind::PermissionDenied => StartError {
            exit: EXIT_CONFIG,
            message: format!(
                "http.listen {addr}: {e}; ports below 1024 need privileges recwatch does not have, use a port above 1023"
            ),
        },
        io::ErrorKind::AddrNotAvailable => StartError {
            exit: EXIT_CONFIG,
            message: format!(
                "http.listen {addr} is not an address of this machine: {e}; use 127.0.0.1 or one of its addresses"
            ),
        },
        _ => StartError {
            exit: EXIT_UNAVAILABLE,
            message: format!("cannot listen on http.listen {addr}: {e}"),
        },
    }
}

/// What `check` found about `http.listen`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenProbe {
    Free,
    /// Taken by a process whose `/healthz` answers like recwatch's: most likely the daemon
    /// this configuration belongs to, already running.
    HeldByRecwatch,
}

/// Tries to bind `addr` (and lets go at once). A taken address is asked for `/healthz`, so
/// `check` next to a running daemon does not cry wolf.
pub fn probe_listen(addr: SocketAddr) -> Result<ListenProbe, StartError> {
    match std::net::TcpListener::bind(addr) {
        Ok(_) => Ok(ListenProbe::Free),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse && answers_like_recwatch(addr) => {
            Ok(ListenProbe::HeldByRecwatch)
        }
        Err(e) => Err(bind_error(addr, &e)),
    }
}

fn answers_like_recwatch(addr: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let timeout = Duration::from_secs(2);
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, timeout) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(timeout));
    let _ = s.set_write_timeout(Some(timeout));
    if s.write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = Vec::new();
    let _ = s.take(4096).read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    answer.starts_with("HTTP/1.") && answer.contains(" 200 ") && answer.ends_with("\r\n\r\nok\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_address_is_69_and_a_free_one_binds() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap();
        let e = probe_listen(addr).unwrap_err();
        assert_eq!(e.exit, EXIT_UNAVAILABLE);
        assert!(e.message.contains("in use"), "{e}");
        drop(held);
        let free = SocketAddr::from(([127, 0, 0, 1], 0));
        assert_eq!(probe_listen(free).unwrap(), ListenProbe::Free);
    }
}
