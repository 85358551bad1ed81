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
//!   threshold is fixed at [`MMAP_THRESHOLD`]: such a block is mapped and unmapped whole.
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

/// Trims now and then every [`TRIM_EVERY`] until `stop` turns true; on a blocking thread, so
/// the walk over the heap never holds an async worker.
pub async fn trim_until(mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        let _ = tokio::task::spawn_blocking(trim).await;
        tokio::select! {
            _ = tokio::time::sleep(TRIM_EVERY) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
