//! How the allocator keeps the process's memory (issue 23, item 1). Three things made RSS grow
//! well past what recwatch holds, all glibc malloc's defaults rather than anything of ours:
//! - **arenas**: a thread that allocates while another holds an arena gets one of its own, up
//!   to eight per core; tokio's workers and its blocking pool (SQLite's work) each came to
//!   own one, and memory freed in one arena serves no other. Two arenas keep the contention
//!   of two cores' worth of threads low and the spare memory shared.
//! - **freed memory kept mapped**: start-up's transient peak (the TOML parse of the watch list,
//!   about 2.4 KB a `[[jobs]]` entry, and the jobs' rows read once) is freed in the middle of
//!   the heap, where malloc does not give it back by itself. `malloc_trim` returns every whole
//!   free page, so after it RSS follows what is in use; it runs after start-up and then every
//!   [`TRIM_EVERY`], a few milliseconds of one thread each time.
//! - **large blocks from the heap**: malloc serves a block of 128 KiB or more from its own
//!   mapping, but raises that threshold (up to 32 MiB) each time such a block is freed, so
//!   after the first few the watch list's big transient tables (a merged configuration's
//!   `Vec` of every job, a `watched` map, a page's scan of the list: megabytes each at 100,000
//!   jobs, made again with each change of the list, four times a second in a storm of
//!   discoveries) came from the heap, and the small lasting allocations made meanwhile (a new
//!   job's key, configuration and state) landed in their holes: RSS stayed 10-20 MB above
//!   what is in use, and `malloc_trim` cannot return a page with anything live on it. The
//!   threshold is fixed at `MMAP_THRESHOLD`: such a block is mapped and unmapped whole.
//!
//! Elsewhere (musl, macOS) all three are no-ops. An operator's `MALLOC_ARENA_MAX` and
//! `MALLOC_MMAP_THRESHOLD_` win.

use std::time::Duration;

/// How often freed memory is handed back (see the module's text).
pub const TRIM_EVERY: Duration = Duration::from_secs(30);

/// The most malloc arenas, unless `MALLOC_ARENA_MAX` says otherwise.
const ARENAS: i32 = 2;

/// Blocks this large or larger get a mapping of their own (see the module's text): large
/// enough that only a few allocations a second are, at 100,000 jobs.
const MMAP_THRESHOLD: i32 = 256 * 1024;

/// Caps glibc's malloc arenas at two and fixes its mapping threshold (see the module's text).
/// Called first thing, before any thread starts.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
            // SAFETY: mallopt only sets a tunable; no other thread exists yet.
            unsafe {
                libc::mallopt(libc::M_ARENA_MAX, ARENAS);
            }
        }
        if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
            // SAFETY: as above.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
            }
        }
    }
}

/// Returns malloc's free pages to the system.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes malloc's own locks; it is safe from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// How often RSS is looked at between two regular trims (see [`due`]).
const LOOK_EVERY: Duration = Duration::from_secs(5);

/// RSS grown this much since the last trim is a burst (see [`due`]).
const BURST: u64 = 8 * 1024 * 1024;

/// Pure: whether to trim now, `since` the last trim, with RSS `at_trim` right after it,
/// `before` at the previous look and `now` at this one. Every [`TRIM_EVERY`], and once a burst
/// is over: RSS grew by [`BURST`] since the last trim and by less than an eighth of that since
/// the previous look. A storm of 90,000 discoveries left RSS ~13 MiB above what the next
/// trim gave back (115 against 103 MiB at 100,000 jobs, BENCHMARKS.md part 27a): the
/// requests' and commits' short-lived allocations, freed but not handed back by malloc
/// itself. Trimmed when the storm ends, not up to 30 s later; not on every look while it
/// lasts (a trim holds each arena's lock for its walk).
fn due(since: Duration, at_trim: u64, before: u64, now: u64) -> bool {
    since >= TRIM_EVERY
        || (now.saturating_sub(at_trim) >= BURST && now.saturating_sub(before) < BURST / 8)
}

/// The process's resident memory in bytes (0 where `/proc` does not say).
fn rss() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    #[cfg(unix)]
    // SAFETY: sysconf only reads a constant of the system.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(0) as u64;
    #[cfg(not(unix))]
    let page = 0;
    pages * page
}

/// Trims now, then every [`TRIM_EVERY`] and once a burst of allocations is over (`due`),
/// until `stop` turns true; on a blocking thread, so the walk over the heap never holds an
/// async worker.
pub async fn trim_until(mut stop: tokio::sync::watch::Receiver<bool>) {
    let trimmed = || async {
        let _ = tokio::task::spawn_blocking(trim).await;
        (tokio::time::Instant::now(), rss())
    };
    let (mut last, mut at_trim) = trimmed().await;
    let mut before = at_trim;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(LOOK_EVERY) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let now = rss();
        if due(last.elapsed(), at_trim, before, now) {
            (last, at_trim) = trimmed().await;
            before = at_trim;
        } else {
            before = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn when_to_trim_table() {
        const MIB: u64 = 1024 * 1024;
        let s = Duration::from_secs;
        // (name, since the last trim, RSS at it, at the previous look, now, trim?)
        let cases = [
            ("quiet", s(5), 100 * MIB, 100 * MIB, 100 * MIB, false),
            (
                "the regular time",
                s(30),
                100 * MIB,
                100 * MIB,
                100 * MIB,
                true,
            ),
            (
                "growing: a storm",
                s(10),
                100 * MIB,
                105 * MIB,
                112 * MIB,
                false,
            ),
            (
                "grown and steady: it ended",
                s(10),
                100 * MIB,
                112 * MIB,
                112 * MIB,
                true,
            ),
            (
                "steady but grown little",
                s(10),
                100 * MIB,
                104 * MIB,
                104 * MIB,
                false,
            ),
            ("shrunk", s(10), 100 * MIB, 90 * MIB, 90 * MIB, false),
            ("no /proc", s(10), 0, 0, 0, false),
        ];
        for (name, since, at_trim, before, now, want) in cases {
            assert_eq!(due(since, at_trim, before, now), want, "{name}");
        }
        assert!(rss() > 0 || !cfg!(target_os = "linux"), "RSS read on Linux");
    }
}
