//! A throwaway PostgreSQL server for tests, owned by the tests (never a system service):
//! shared by the library's store tests (`store::test_pg`) and the integration tests
//! (`tests/it`, which include this file by path), so it uses nothing of recwatch's.
//!
//! - [`fresh_database`] gives each test an empty database (`CREATE DATABASE t_<unique>`) on
//!   one server per test process, started on first use: `initdb` into a directory of its own
//!   and `postgres` listening on 127.0.0.1 only (a port the OS picked, tried again if taken
//!   before the server bound it) with its socket in that directory, run as the `postgres`
//!   user when the tests run as root (the server refuses root).
//! - [`PgServer::start`] starts a separate server a test may stop, kill and start again (the
//!   database restarted under a running daemon).
//! - `RECWATCH_TEST_PG_URL=postgres://user:pw@host:port/db` makes the tests use that server
//!   instead (databases are created there, never dropped).
//!
//! Every server is killed when the test process ends, however it ends: it is spawned with
//! `PR_SET_PDEATHSIG` = SIGKILL from a thread that lives as long as the process (the signal
//! follows the thread that forked, not the process, so a test's own thread would not do).
//! Data directories are under `$TMPDIR/recwatch-test-pg/<pid>-<n>`; those of processes no
//! longer alive are removed when the next test process starts its first server.
//!
//! PostgreSQL missing is a failure, not a skip: the message says to run `bash .ci/test`,
//! which installs it.

#![allow(dead_code)]

use std::io::{self, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

/// How long a server may take to start on a loaded machine.
const START_DEADLINE: Duration = Duration::from_secs(90);

/// The directory holding PostgreSQL's programs (`initdb`, `postgres`): the newest of Debian's
/// `/usr/lib/postgresql/*/bin`, or wherever `initdb` is on the PATH.
fn bin_dir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    if let Some((_, bin)) = found.pop() {
        return bin;
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        if dir.join("initdb").is_file() && dir.join("postgres").is_file() {
            return dir;
        }
    }
    panic!(
        "the tests need PostgreSQL and none is installed (no /usr/lib/postgresql/*/bin/initdb, no initdb on the PATH): \
         run `bash .ci/test`, which installs Debian's postgresql package, or set RECWATCH_TEST_PG_URL to a server of yours"
    );
}

/// (uid, gid) of the `postgres` user when running as root (the server refuses root).
fn server_user() -> Option<(u32, u32)> {
    // SAFETY: plain calls; getpwnam's result is read at once, before any other call.
    unsafe {
        if libc::geteuid() != 0 {
            return None;
        }
        let pw = libc::getpwnam(c"postgres".as_ptr());
        assert!(
            !pw.is_null(),
            "running as root, the tests start PostgreSQL as the `postgres` user, and there is none: run `bash .ci/test`, which installs the postgresql package (it makes the user)"
        );
        Some(((*pw).pw_uid, (*pw).pw_gid))
    }
}

/// A command run as the server's user.
fn command(program: &str) -> Command {
    let mut cmd = Command::new(bin_dir().join(program));
    if let Some((uid, gid)) = server_user() {
        cmd.uid(uid).gid(gid);
    }
    cmd.env_remove("PGDATA").env("LC_ALL", "C");
    cmd
}

/// A request to the spawning thread: the command, and where to send the child back.
type Spawn = (Command, mpsc::Sender<io::Result<Child>>);

/// Spawns `cmd` from the one thread that lives as long as the process, with SIGKILL as its
/// parent-death signal (set after the user change, which would clear it).
fn spawn_tied(mut cmd: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Spawn>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Spawn>();
        std::thread::Builder::new()
            .name("test-pg-spawner".into())
            .spawn(move || {
                // The sender lives in a static: this loop (and the thread) never ends.
                for (mut cmd, back) in rx {
                    let _ = back.send(cmd.spawn());
                }
            })
            .expect("a thread to spawn PostgreSQL from");
        Mutex::new(tx)
    });
    // SAFETY: prctl and getppid are async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (back, child) = mpsc::channel();
    spawner
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((cmd, back))
        .expect("the spawning thread is alive");
    child.recv().expect("the spawning thread answers")
}

/// `$TMPDIR/recwatch-test-pg`, with the directories of dead test processes removed (once).
fn data_root() -> PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let root = std::env::temp_dir().join("recwatch-test-pg");
        std::fs::create_dir_all(&root).expect("the test PostgreSQL directory");
        for e in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid = name.split('-').next().and_then(|p| p.parse::<i32>().ok());
            // SAFETY: kill with signal 0 only asks whether the process exists.
            let alive = pid.is_some_and(|p| unsafe { libc::kill(p, 0) } == 0);
            if !alive {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        root
    })
    .clone()
}

fn unique() -> u64 {
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A PostgreSQL server of the tests' own, in a data directory of its own.
pub struct PgServer {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl PgServer {
    /// Makes a cluster (`initdb`) and starts it on a free loopback port.
    pub fn start() -> PgServer {
        let dir = data_root().join(format!("{}-{}", std::process::id(), unique()));
        std::fs::create_dir_all(&dir).unwrap();
        if let Some((uid, gid)) = server_user() {
            let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: a valid path string.
            assert_eq!(
                unsafe { libc::chown(c.as_ptr(), uid, gid) },
                0,
                "chown {dir:?}"
            );
        }
        let out = command("initdb")
            .args(["-D"])
            .arg(dir.join("data"))
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"])
            .args(["--no-sync"])
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run initdb: {e}; run `bash .ci/test`, which installs PostgreSQL")
            });
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut server = PgServer {
            dir,
            port: 0,
            child: None,
        };
        for _ in 0..10 {
            let port = {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                l.local_addr().unwrap().port()
            };
            match server.run_on(port) {
                Ok(()) => return server,
                Err(Taken) => continue,
            }
        }
        panic!("no loopback port for PostgreSQL after 10 tries");
    }

    /// Starts the server again after [`PgServer::stop`] or [`PgServer::kill`], on the same port
    /// (so URLs made before stay right). Panics if that port was taken meanwhile.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the server is running");
        if self.run_on(self.port).is_err() {
            panic!("port {} was taken while PostgreSQL was down", self.port);
        }
    }

    /// Starts `postgres` on `port` and waits until it accepts connections.
    fn run_on(&mut self, port: u16) -> Result<(), Taken> {
        let log_path = self.dir.join(format!("log-{port}-{}", unique()));
        let log = std::fs::File::create(&log_path).unwrap();
        let mut cmd = command("postgres");
        cmd.arg("-D")
            .arg(self.dir.join("data"))
            .args(["-p", &port.to_string(), "-k"])
            .arg(&self.dir)
            .args(["-c", "listen_addresses=127.0.0.1"])
            // A test server: speed over durability, and room for many pools at once.
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=500"])
            .args(["-c", "shared_buffers=32MB"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let mut child = spawn_tied(cmd).expect("cannot start postgres");
        let start = Instant::now();
        loop {
            let text = read(&log_path);
            if let Some(status) = child.try_wait().unwrap() {
                if text.contains("could not bind") || text.contains("already in use") {
                    return Err(Taken);
                }
                panic!("postgres exited ({status}) while starting:\n{text}");
            }
            if text.contains("ready to accept connections") {
                self.port = port;
                self.child = Some(child);
                return Ok(());
            }
            if start.elapsed() > START_DEADLINE {
                let _ = child.kill();
                panic!("postgres did not start within {START_DEADLINE:?}:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server as an operator would (fast shutdown: sessions are ended) and waits.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: a signal to our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            let _ = child.wait();
        }
    }

    /// Kills the server (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `db` on this server.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// A new, empty database on this server; its URL.
    pub async fn fresh_database(&self) -> String {
        create_database(&self.url("postgres"), |db| self.url(db)).await
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The port was taken before the server could bind it.
struct Taken;

fn read(path: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    s
}

/// The one server of this test process, started on first use (never stopped by a test).
pub fn shared() -> &'static PgServer {
    static SHARED: OnceLock<PgServer> = OnceLock::new();
    SHARED.get_or_init(PgServer::start)
}

/// The URL of a new, empty database for one test: on `RECWATCH_TEST_PG_URL`'s server when
/// that is set, else on this process's [`shared`] server.
pub async fn fresh_database() -> String {
    match std::env::var("RECWATCH_TEST_PG_URL") {
        Ok(admin) if !admin.is_empty() => {
            let base = admin
                .rsplit_once('/')
                .map(|(b, _)| b.to_string())
                .filter(|b| !b.ends_with('/'))
                .unwrap_or_else(|| admin.clone());
            create_database(&admin, |db| format!("{base}/{db}")).await
        }
        _ => {
            let server = tokio::task::spawn_blocking(shared).await.unwrap();
            server.fresh_database().await
        }
    }
}

/// Creates `t_<pid>_<time>_<n>` through `admin` and returns its URL as `url` makes it.
async fn create_database(admin: &str, url: impl Fn(&str) -> String) -> String {
    use sqlx::Connection;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let name = format!("t_{}_{nanos}_{}", std::process::id(), unique());
    let mut conn = sqlx::PgConnection::connect(admin)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test PostgreSQL server: {e}"));
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
    let _ = conn.close().await;
    url(&name)
}
