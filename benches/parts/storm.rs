//! Part 23's tools for the callback storms (issue 23, item 5): a lean sender, the CPU each
//! process spends, and the daemon's instructions per callback under callgrind
//! (`callback_cost`). The storms themselves are `push::callback_storm`.
//!
//! The sender shares the machine's two cores with the daemon it measures (the issue's
//! "senders on the same machine"), so it is kept lean: every request is signed and written
//! out before the clock starts (RTC signs on its own machines), and sent on raw keep-alive
//! connections from one thread. The reqwest sender it replaced spent three times its CPU
//! per callback (91 against 26-30 us, BENCHMARKS.md part 23).

use super::push::{KEY, PUSH_JOBS, PUSH_RATE, storm_config};
use super::*;
/// Callbacks the cost part sends, and how many at once (like `tests/it/ingest.rs`'s sender).
const COST_CALLBACKS: u64 = 2_000;
const COST_IN_FLIGHT: usize = 48;
const COST_JOBS: usize = 1_000;

/// Part 23's count that no load moves: the instructions the daemon executes per callback
/// (all its threads, valgrind's callgrind), for [`COST_CALLBACKS`] signed callbacks sent
/// [`COST_IN_FLIGHT`] at a time as fast as they are answered. Counting is switched on
/// (`callgrind_control -i on`) once the daemon is up and off after the last answer, so start-up
/// is not counted; the poller runs beside at `rate_limit = 1`. Under callgrind the daemon is
/// some 50 times slower, so the groups a commit takes are not a storm's: the figure compares
/// builds, it does not predict a rate. With `pg_url`, on PostgreSQL (the server's own work is
/// not in the count).
pub async fn callback_cost(dir: &Path, pg_url: Option<&str>) -> anyhow::Result<Value> {
    println!(
        "\n23. callback cost: instructions per callback in the daemon (callgrind), {COST_CALLBACKS} callbacks {COST_IN_FLIGHT} at a time, on {}",
        if pg_url.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        }
    );
    let sim = Sim::spawn(&["--static", "--jobs", &COST_JOBS.to_string()])?;
    let (hook, _arrivals) = receiver().await?;
    let config = storm_config(dir, "cost", &sim, &hook, COST_JOBS, pg_url)?;
    let text = std::fs::read_to_string(&config)?
        .replace("[http]\nlisten = \"\"", "[http]\nlisten = \"127.0.0.1:0\"")
        .replace(&format!("rate_limit = {PUSH_RATE}\n"), "rate_limit = 1\n");
    std::fs::write(&config, text)?;
    let out = dir.join("callgrind.out");
    let child = Command::new("valgrind")
        .args(["--tool=callgrind", "--collect-atstart=no"])
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(super::bin())
        .args(["run", "--config"])
        .arg(&config)
        .env(
            "RUST_LOG",
            "warn,recwatch::callback=info,recwatch::http=info",
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting recwatch run under valgrind (is valgrind installed?)")?;
    let (daemon, log) = logged(child);
    // The two listeners' lines come in either order: one read of the log takes both.
    let mut lines = [None, None];
    let needles = ["callback receiver", "HTTP endpoint"];
    let started = Instant::now();
    while lines.iter().any(Option::is_none) {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(900),
            "the daemon under valgrind did not start its two listeners within 900 s"
        );
        match log.try_recv() {
            Ok((_, line)) => {
                for (slot, needle) in lines.iter_mut().zip(needles) {
                    if line.contains(needle) {
                        *slot = Some(line.clone());
                    }
                }
            }
            Err(std::sync::mpsc::TryRecvError::Empty) => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                bail!("the daemon under valgrind ended before its two listeners started")
            }
        }
    }
    let [Some(receiver_line), Some(endpoint_line)] = lines else {
        unreachable!("both lines were seen")
    };
    let addr: std::net::SocketAddr = log_field(&receiver_line, "address")
        .context("receiver")?
        .parse()?;
    let metrics = format!(
        "http://{}/metrics",
        log_field(&endpoint_line, "address").context("endpoint")?
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    let requests = storm_requests(
        &format!("http://{addr}/rtc/record-callback"),
        COST_CALLBACKS,
    )?;
    let pid = daemon.0.id().to_string();
    let commits_before = scrape_counter(&metrics, "recwatch_callback_commits_total").await?;
    callgrind_control(&["-i", "on", &pid])?;
    // Every request due at once: the connections keep COST_IN_FLIGHT in flight.
    let sent = tokio::task::spawn_blocking(move || {
        storm_sender(addr, requests, 1_000_000_000, COST_IN_FLIGHT)
    })
    .await??;
    callgrind_control(&["-i", "off", &pid])?;
    callgrind_control(&["--dump=callbacks", &pid])?;
    let commits =
        scrape_counter(&metrics, "recwatch_callback_commits_total").await? - commits_before;
    drop(daemon);
    let instructions = callgrind_total(dir, "callgrind.out")?;
    // BENCH_CALLGRIND_KEEP=<dir>: the dumps kept there, for callgrind_annotate.
    if let Ok(keep) = std::env::var("BENCH_CALLGRIND_KEEP") {
        std::fs::create_dir_all(&keep)?;
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let name = path.file_name().unwrap_or_default();
            if name.to_string_lossy().starts_with("callgrind.out") {
                std::fs::copy(&path, Path::new(&keep).join(name))?;
            }
        }
    }
    let ok = sent.by_status.get("200").copied().unwrap_or(0);
    let per = instructions as f64 / COST_CALLBACKS as f64;
    row(
        "answered 200",
        format!("{ok} / {COST_CALLBACKS}"),
        target(ok == COST_CALLBACKS, "all"),
    );
    row(
        "instructions in the daemon, all threads",
        format!("{instructions}"),
        "",
    );
    row("instructions per callback", format!("{per:.0}"), "");
    row(
        "commits / callbacks per commit",
        format!("{commits:.0} / {:.1}", COST_CALLBACKS as f64 / commits),
        "",
    );
    Ok(json!({
        "backend": if pg_url.is_some() { "postgres" } else { "sqlite" },
        "callbacks": COST_CALLBACKS,
        "in_flight": COST_IN_FLIGHT,
        "answered_200": ok,
        "instructions": instructions,
        "instructions_per_callback": per,
        "commits": commits,
    }))
}

/// A spawned daemon and its log lines, read on a thread (as `spawn_daemon_logged` does).
fn logged(mut child: Child) -> (Proc, std::sync::mpsc::Receiver<(Instant, String)>) {
    let stderr = child.stderr.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send((Instant::now(), line));
        }
    });
    (Proc(child), rx)
}

fn callgrind_control(args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new("callgrind_control")
        .args(args)
        .stdout(Stdio::null())
        .status()
        .context("callgrind_control")?;
    anyhow::ensure!(status.success(), "callgrind_control {args:?}: {status}");
    Ok(())
}

/// The instructions of the dump named `callbacks`: the `summary:` (or `totals:`) line of the
/// file under `dir` whose name starts with `prefix` and that holds that dump.
fn callgrind_total(dir: &Path, prefix: &str) -> anyhow::Result<u64> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        if !name.starts_with(prefix) {
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        if !text
            .lines()
            .any(|l| l.starts_with("desc: Trigger: Client Request: callbacks"))
        {
            continue;
        }
        let total = text
            .lines()
            .find_map(|l| {
                l.strip_prefix("summary:")
                    .or_else(|| l.strip_prefix("totals:"))
            })
            .context("no summary in the dump")?;
        return Ok(total
            .split_whitespace()
            .next()
            .context("empty summary")?
            .parse()?);
    }
    bail!("no callgrind dump named callbacks under {}", dir.display())
}

/// A counter's value on a Prometheus scrape (0 when absent).
/// A daemon under valgrind on a busy machine may close a scrape's connection before it
/// answers (its header-read timeout): tried a few times, then NaN (the count of commits is
/// context, the instructions are the figure).
async fn scrape_counter(url: &str, name: &str) -> anyhow::Result<f64> {
    for _ in 0..5 {
        let Ok(answer) = reqwest::get(url).await else {
            continue;
        };
        let Ok(text) = answer.text().await else {
            continue;
        };
        return Ok(text
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0));
    }
    Ok(f64::NAN)
}

/// The PostgreSQL server's processes (every one `pg_stat_activity` lists: the daemon's
/// backends and the server's own writers), but not this query's.
pub(super) async fn postgres_pids(url: &str) -> anyhow::Result<Vec<u32>> {
    let pool = sqlx::PgPool::connect(url).await?;
    let pids: Vec<i32> =
        sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE pid <> pg_backend_pid()")
            .fetch_all(&pool)
            .await?;
    pool.close().await;
    Ok(pids.into_iter().map(|p| p as u32).collect())
}

/// The CPU seconds `pids` used in all (one that ended counts no more).
pub(super) fn cpu_of(pids: &[u32]) -> f64 {
    pids.iter().filter_map(|p| proc_cpu_seconds(*p).ok()).sum()
}

/// `/proc/loadavg`'s three averages.
pub(super) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// CPU seconds (user and system) a process has used, from `/proc/<pid>/stat`.
pub(super) fn proc_cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // After the command's name, which may hold spaces, in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("odd stat")?
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    // SAFETY: sysconf only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks as f64 / hz)
}

/// CPU seconds the calling thread has used.
fn thread_cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// The storm's requests, each a complete HTTP/1.1 request signed with the app's key:
/// alternately `RECORD_NEW_FILE_START` / `RECORD_FILE_COMPLETE`, every body new.
pub(super) fn storm_requests(url: &str, total: u64) -> anyhow::Result<Vec<Vec<u8>>> {
    let key = Secret::new(KEY);
    let (host, path) = url
        .trim_start_matches("http://")
        .split_once('/')
        .context("the receiver's URL")?;
    let timestamp = chrono::Utc::now().timestamp().to_string();
    Ok((0..total)
        .map(|n| {
            let job = recwatch_sim::job_id(n as usize % PUSH_JOBS);
            let event = if n % 2 == 0 {
                "RECORD_NEW_FILE_START"
            } else {
                "RECORD_FILE_COMPLETE"
            };
            let body = format!(
                r#"{{"event_type":"{event}","app_id":"{APP}","job_id":"{job}","record_format":"MP4","detail_message":"storm {n}"}}"#
            );
            let rand = n.to_string();
            let signature = recwatch_rtc::callback::sign(&key, &rand, &timestamp, body.as_bytes());
            format!(
                "POST /{path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{}: {rand}\r\n{}: {timestamp}\r\n{}: {signature}\r\n\r\n{body}",
                body.len(),
                recwatch_rtc::callback::HEADER_RAND,
                recwatch_rtc::callback::HEADER_TIMESTAMP,
                recwatch_rtc::callback::HEADER_SIGNATURE,
            )
            .into_bytes()
        })
        .collect())
}

/// What the sender saw.
pub(super) struct Sent {
    /// From when each request was due to its answer, seconds, in no particular order.
    pub(super) latencies: Vec<f64>,
    /// Answers by status ("200", ...) or why none came.
    pub(super) by_status: std::collections::BTreeMap<String, u64>,
    /// From the first request due to the last sent.
    pub(super) sending: f64,
    /// CPU the sender's thread used.
    pub(super) sender_cpu_seconds: f64,
}

/// Sends `requests` at `rate` a second over `in_flight` keep-alive connections, on
/// one thread (a current-thread runtime): a sender with a pool of connections, as RTC's would
/// be, and lean, because it shares the two cores with the daemon it measures. Request `n` is
/// due at `n / rate` s; a connection takes the next request in order, waits until it is due,
/// writes it and reads the answer, so a request that finds every connection busy waits, and
/// its latency counts that wait. A connection the receiver closes is opened again.
pub(super) fn storm_sender(
    addr: std::net::SocketAddr,
    requests: Vec<Vec<u8>>,
    rate: u64,
    in_flight: usize,
) -> anyhow::Result<Sent> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let cpu_before = thread_cpu_seconds();
    let requests = Arc::new(requests);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (latencies, by_status, last_sent, start) = rt.block_on(async {
        // The pool is open before the first request is due.
        let mut streams = Vec::with_capacity(in_flight);
        for _ in 0..in_flight {
            let s = tokio::net::TcpStream::connect(addr).await?;
            s.set_nodelay(true)?;
            streams.push(s);
        }
        let start = tokio::time::Instant::now() + Duration::from_millis(50);
        let mut conns = tokio::task::JoinSet::new();
        for s in streams {
            let (requests, next) = (requests.clone(), next.clone());
            conns.spawn(storm_connection(addr, s, requests, next, start, rate));
        }
        let mut latencies = Vec::with_capacity(requests.len());
        let mut by_status = std::collections::BTreeMap::<String, u64>::new();
        let mut last_sent = start;
        while let Some(done) = conns.join_next().await {
            let (seen, last) = done?;
            last_sent = last_sent.max(last);
            for (status, latency) in seen {
                *by_status.entry(status).or_default() += 1;
                latencies.push(latency);
            }
        }
        anyhow::Ok((latencies, by_status, last_sent, start))
    })?;
    Ok(Sent {
        latencies,
        by_status,
        sending: (last_sent - start).as_secs_f64(),
        sender_cpu_seconds: thread_cpu_seconds() - cpu_before,
    })
}

/// The sender parts 9 and 16 used, kept to measure what it cost (`BENCH_STORM_SENDER=reqwest`):
/// a reqwest client, a task per request, each request signed when it is due; at most
/// `in_flight` at once, latency from when each was due. On its own current-thread runtime,
/// like [`storm_sender`], so its CPU is one thread's.
pub(super) fn reqwest_sender(
    url: String,
    total: u64,
    rate: u64,
    in_flight: usize,
) -> anyhow::Result<Sent> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let cpu_before = thread_cpu_seconds();
    let (latencies, by_status, sending) = rt.block_on(async move {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(256)
            .build()?;
        let key = Secret::new(KEY);
        let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let slots = Arc::new(tokio::sync::Semaphore::new(in_flight));
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for n in 0..total {
            let due = ticker.tick().await;
            let permit = slots.clone().acquire_owned().await?;
            let job = recwatch_sim::job_id(n as usize % PUSH_JOBS);
            let event = if n % 2 == 0 {
                "RECORD_NEW_FILE_START"
            } else {
                "RECORD_FILE_COMPLETE"
            };
            let body = format!(
                r#"{{"event_type":"{event}","app_id":"{APP}","job_id":"{job}","record_format":"MP4","detail_message":"storm {n}"}}"#
            );
            let rand = format!("{n}");
            let timestamp = chrono::Utc::now().timestamp().to_string();
            let signature = recwatch_rtc::callback::sign(&key, &rand, &timestamp, body.as_bytes());
            let request = http
                .post(&url)
                .header(recwatch_rtc::callback::HEADER_RAND, rand)
                .header(recwatch_rtc::callback::HEADER_TIMESTAMP, timestamp)
                .header(recwatch_rtc::callback::HEADER_SIGNATURE, signature)
                .body(body);
            tasks.spawn(async move {
                let _permit = permit;
                let status = match request.send().await {
                    Ok(r) => r.status().as_u16().to_string(),
                    Err(e) => format!("no answer ({e})"),
                };
                (status, due.elapsed().as_secs_f64())
            });
        }
        let sending = started.elapsed().as_secs_f64();
        let mut latencies = Vec::with_capacity(total as usize);
        let mut by_status = std::collections::BTreeMap::<String, u64>::new();
        while let Some(done) = tasks.join_next().await {
            let (status, latency) = done?;
            *by_status.entry(status).or_default() += 1;
            latencies.push(latency);
        }
        anyhow::Ok((latencies, by_status, sending))
    })?;
    Ok(Sent {
        latencies,
        by_status,
        sending,
        sender_cpu_seconds: thread_cpu_seconds() - cpu_before,
    })
}

/// One connection of [`storm_sender`]: (status, latency) of each request it sent, and when it
/// sent its last.
async fn storm_connection(
    addr: std::net::SocketAddr,
    stream: tokio::net::TcpStream,
    requests: Arc<Vec<Vec<u8>>>,
    next: Arc<std::sync::atomic::AtomicUsize>,
    start: tokio::time::Instant,
    rate: u64,
) -> (Vec<(String, f64)>, tokio::time::Instant) {
    use tokio::io::AsyncWriteExt;
    let mut seen = Vec::new();
    let mut stream = Some(stream);
    let mut buf = Vec::with_capacity(1024);
    let mut last = start;
    loop {
        let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let Some(request) = requests.get(n) else {
            return (seen, last);
        };
        let due = start + Duration::from_secs_f64(n as f64 / rate as f64);
        tokio::time::sleep_until(due).await;
        last = tokio::time::Instant::now();
        let answer = async {
            if stream.is_none() {
                let s = tokio::net::TcpStream::connect(addr).await?;
                s.set_nodelay(true)?;
                stream = Some(s);
            }
            let s = stream.as_mut().expect("connected above");
            s.write_all(request).await?;
            read_answer(s, &mut buf).await
        };
        let status = match tokio::time::timeout(Duration::from_secs(10), answer).await {
            Ok(Ok((status, close))) => {
                if close {
                    stream = None;
                }
                status.to_string()
            }
            Ok(Err(e)) => {
                stream = None;
                buf.clear();
                format!("no answer ({e})")
            }
            Err(_) => {
                stream = None;
                buf.clear();
                "no answer (timed out after 10 s)".to_string()
            }
        };
        seen.push((status, due.elapsed().as_secs_f64()));
    }
}

/// Reads one HTTP/1.1 answer from `s` (`buf` keeps what arrived beyond it): its status, and
/// whether the receiver closes the connection after it.
async fn read_answer(
    s: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
) -> std::io::Result<(u16, bool)> {
    use tokio::io::AsyncReadExt;
    let bad = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_string());
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end]).map_err(|_| bad("not text"))?;
            let status: u16 = head
                .get(9..12)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| bad("no status"))?;
            let mut length = 0usize;
            let mut close = false;
            for line in head.lines().skip(1) {
                let Some((name, value)) = line.split_once(':') else {
                    continue;
                };
                let value = value.trim();
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.parse().map_err(|_| bad("content-length"))?;
                } else if name.eq_ignore_ascii_case("connection") {
                    close = value.eq_ignore_ascii_case("close");
                }
            }
            let whole = end + 4 + length;
            while buf.len() < whole {
                if s.read_buf(buf).await? == 0 {
                    return Err(bad("closed within the body"));
                }
            }
            buf.drain(..whole);
            return Ok((status, close));
        }
        if s.read_buf(buf).await? == 0 {
            return Err(bad("closed before an answer"));
        }
    }
}
