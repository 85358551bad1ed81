//! How many connections the endpoint serves and how long it waits for them: bounded by the
//! process's open-files limit, which `run` raises to its hard limit first.

use std::time::Duration;

/// A connection that has not sent a whole request header this long after it opened (or after
/// its last response) is closed. Scrapers and health checks send theirs at once.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The most connections served at once when the open-files limit allows it. The endpoint's
/// clients are a scraper, a health check and the odd `curl`: a few. This bounds what a
/// misbehaving client can hold, whatever the limit.
pub const MAX_CONNECTIONS: usize = 256;

/// A request body must arrive whole within this long of its request's header (issue 22, item
/// 3): RTC's events and the write API's bodies are a few hundred bytes sent at once, so a
/// body still trickling in after this is an attack on the connection cap, and is refused.
/// Counted from the header rather than the body's first byte, so a client cannot stretch it
/// by waiting before that byte (the header-read timeout does not cover the wait).
pub const BODY_DEADLINE: Duration = Duration::from_secs(5);

/// A response still being written after this long (a client that stopped reading) no longer
/// protects its connection from being closed to make room.
pub const STUCK_RESPONSE: Duration = Duration::from_secs(60);

/// The soft and hard limits on open files, if this process may read them (the systemd unit's
/// seccomp filter refuses getrlimit with EPERM; its `LimitNOFILE=` sets both there).
#[allow(clippy::useless_conversion)] // rlim_t is u64 here, narrower on some 32-bit targets
pub fn nofile_limit() -> std::io::Result<(u64, u64)> {
    let lim = get_nofile()?;
    Ok((u64::from(lim.rlim_cur), u64::from(lim.rlim_max)))
}

fn get_nofile() -> std::io::Result<libc::rlimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given, which lives on this stack frame.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(lim)
}

/// Raises the soft limit on open files to the hard limit and returns (before, after). The
/// soft limit is often 1024, a default kept for programs that use select(); recwatch uses
/// epoll, and its HTTP connections, outbound requests, SMTP and SQLite all need descriptors.
/// Raising the soft limit up to the hard one needs no privilege.
#[allow(clippy::useless_conversion)] // as in nofile_limit
pub fn raise_nofile_limit() -> std::io::Result<(u64, u64)> {
    let mut lim = get_nofile()?;
    let before = u64::from(lim.rlim_cur);
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: setrlimit only reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok((before, u64::from(lim.rlim_cur)))
}

/// The endpoint's connection cap for a soft open-files limit (None: unknown). A quarter of
/// the limit at most, so three quarters stay for everything else recwatch opens: a flood of
/// connections fills the endpoint's share and never reaches the webhooks' or SQLite's.
pub fn connection_cap(nofile_soft: Option<u64>) -> usize {
    match nofile_soft {
        Some(n) => usize::try_from(n / 4)
            .unwrap_or(usize::MAX)
            .clamp(1, MAX_CONNECTIONS),
        None => MAX_CONNECTIONS,
    }
}

/// How the endpoint bounds its connections.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    /// See [`BODY_DEADLINE`].
    pub body_deadline: Duration,
    pub stuck_response: Duration,
}

impl Limits {
    /// The limits for this process's open-files limit.
    pub fn for_this_process() -> Limits {
        Limits {
            max_connections: connection_cap(nofile_limit().ok().map(|(soft, _)| soft)),
            header_read_timeout: HEADER_READ_TIMEOUT,
            body_deadline: BODY_DEADLINE,
            stuck_response: STUCK_RESPONSE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_cap_leaves_most_descriptors_to_the_rest() {
        let cases = [
            ("unknown limit: the fixed cap", None, MAX_CONNECTIONS),
            ("the usual soft limit", Some(1024), 256),
            ("a systemd LimitNOFILE", Some(65536), MAX_CONNECTIONS),
            ("a small limit: a quarter", Some(512), 128),
            ("a tiny limit", Some(100), 25),
            ("almost none", Some(2), 1),
            ("unlimited", Some(u64::MAX), MAX_CONNECTIONS),
        ];
        for (name, nofile, cap) in cases {
            assert_eq!(connection_cap(nofile), cap, "{name}");
        }
    }

    #[test]
    fn raising_the_open_files_limit_reaches_the_hard_limit() {
        let (_, hard) = nofile_limit().unwrap();
        let (before, after) = raise_nofile_limit().unwrap();
        assert!(before <= after);
        assert_eq!(after, hard);
        assert_eq!(nofile_limit().unwrap(), (hard, hard));
    }
}
