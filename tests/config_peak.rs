//! Issue 23, item 1: start-up's peak. Reading a configuration file of many `[[jobs]]` may hold
//! a run of entries' TOML trees at once, never the whole file's: the heap's peak while it is
//! read stays within a small amount per entry above what the configuration keeps (it was
//! 2.4 KB an entry when the file was one tree, layered into a second and copied into a third).
//! Item 7: the common shape of an entry is read without a TOML tree at all (`config/lean.rs`),
//! a few allocations an entry (the kept strings and their `Arc`). Its own test binary: the
//! allocator that counts is the whole process's.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// The system allocator, counting the bytes live and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    ALLOCATIONS.fetch_add(1, Relaxed);
    let now = LIVE.fetch_add(by, Relaxed) + by;
    PEAK.fetch_max(now, Relaxed);
}

// SAFETY: every call is passed to `System` unchanged; only the counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Relaxed);
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

#[test]
fn reading_many_jobs_holds_a_run_of_entries_not_the_file() {
    const JOBS: usize = 20_000;
    // What one entry may cost at the peak above what is kept: a run's tree spread over the
    // file's entries is ~150 bytes; the file as one tree cost over 2,400.
    const ABOVE_KEPT_PER_JOB: usize = 600;
    let mut text = String::from(
        "[api]\nproject_id = \"p\"\n[api.auth]\naccess_key = \"AK\"\nsecret_key = \"SK\"\n[http]\nlisten = \"\"\n",
    );
    for i in 0..JOBS {
        text.push_str(&format!(
            "[[jobs]]\napp_id = \"demo-app\"\njob_id = \"job-{i:05}\"\n"
        ));
    }
    let before = LIVE.load(Relaxed);
    PEAK.store(before, Relaxed);
    let allocations = ALLOCATIONS.load(Relaxed);
    let config = recwatch::config::parse_str(&text, Vec::<(String, String)>::new(), None)
        .expect("the file reads");
    let allocations = ALLOCATIONS.load(Relaxed) - allocations;
    let peak = PEAK.load(Relaxed) - before;
    let kept = LIVE.load(Relaxed).saturating_sub(before);
    assert_eq!(config.jobs.len(), JOBS);
    assert_eq!(
        config.jobs[JOBS - 1].job_id(),
        format!("job-{:05}", JOBS - 1)
    );
    // An entry keeps four allocations (its key's shared ids: the `Arc` and the two ids, which
    // the daemon's maps then share instead of holding copies; and the entry's `Arc`), and the
    // read makes well under one more an entry on the way; reading it through a TOML tree took
    // over 20 more (tokens, tables, keys, values, a path per key).
    const ALLOCATIONS_PER_JOB: usize = 5;
    assert!(
        allocations <= ALLOCATIONS_PER_JOB * JOBS,
        "reading the file allocated {allocations} times: {} an entry (at most {ALLOCATIONS_PER_JOB})",
        allocations / JOBS
    );
    let above = peak - kept;
    assert!(
        above <= ABOVE_KEPT_PER_JOB * JOBS,
        "the read peaked {above} bytes above the {kept} it kept: {} an entry (at most {ABOVE_KEPT_PER_JOB})",
        above / JOBS
    );
}
